import Metrics
import Synchronization

/// Envoy's default-priority circuit breakers of one upstream cluster (a service port and subset,
/// `outbound|port|subset|host`) for HTTP, as istiod fills them from `connectionPool.http`:
/// requests in flight (`max_requests` ← `http2MaxRequests`), requests waiting for a connection
/// (`max_pending_requests` ← `http1MaxPendingRequests`) and retries in flight (`max_retries` ←
/// `maxRetries`). Shared by every event loop; a slot is one atomic add. Only clusters whose
/// DestinationRule sets a limit have one, so the rest of the traffic pays nothing.
package final class CircuitBreakers: Sendable {
    package struct Limits: Sendable, Equatable {
        package var maxRequests: Int?
        package var maxPending: Int?
        package var maxRetries: Int?

        package init(maxRequests: Int? = nil, maxPending: Int? = nil, maxRetries: Int? = nil) {
            self.maxRequests = maxRequests; self.maxPending = maxPending; self.maxRetries = maxRetries
        }

        package var isEmpty: Bool { maxRequests == nil && maxPending == nil && maxRetries == nil }
    }

    package enum Resource: CaseIterable, Sendable {
        case requests, pending, retries
    }

    package let limits: Limits
    private let requests = Atomic<Int>(0), pending = Atomic<Int>(0), retries = Atomic<Int>(0)
    private let gauges: [Resource: Gauge]
    private let pendingActive: Gauge
    private let overflowCounter: Counter

    package init(cluster: String, limits: Limits) {
        self.limits = limits
        let labels = [("cluster_name", cluster)]
        gauges = [.requests: Gauge(label: "envoy_cluster_circuit_breakers_default_rq_open", dimensions: labels),
                  .pending: Gauge(label: "envoy_cluster_circuit_breakers_default_rq_pending_open", dimensions: labels),
                  .retries: Gauge(label: "envoy_cluster_circuit_breakers_default_rq_retry_open", dimensions: labels)]
        pendingActive = Gauge(label: "envoy_cluster_upstream_rq_pending_active", dimensions: labels)
        overflowCounter = Counter(label: "envoy_cluster_upstream_rq_pending_overflow", dimensions: labels)
        for gauge in gauges.values { gauge.record(0) }
        pendingActive.record(0)
    }

    private func limit(_ resource: Resource) -> Int? {
        switch resource {
        case .requests: limits.maxRequests
        case .pending: limits.maxPending
        case .retries: limits.maxRetries
        }
    }

    /// Adds `delta` to the resource's count; the new count.
    private func add(_ delta: Int, to resource: Resource) -> Int {
        switch resource {
        case .requests: requests.wrappingAdd(delta, ordering: .relaxed).newValue
        case .pending: pending.wrappingAdd(delta, ordering: .relaxed).newValue
        case .retries: retries.wrappingAdd(delta, ordering: .relaxed).newValue
        }
    }

    /// Takes a slot; false when the limit is reached (the breaker is open).
    package func acquire(_ resource: Resource) -> Bool {
        let limit = limit(resource)
        let now = add(1, to: resource)
        if let limit, now > limit {
            _ = add(-1, to: resource)
            return false
        }
        if let limit, now == limit { gauges[resource]?.record(1) }
        if resource == .pending { pendingActive.record(now) }
        return true
    }

    package func release(_ resource: Resource) {
        let limit = limit(resource)
        let now = add(-1, to: resource)
        if let limit, now == limit - 1 { gauges[resource]?.record(0) }
        if resource == .pending { pendingActive.record(now) }
    }

    /// A request refused by a full `requests` or `pending` breaker (Envoy counts both here).
    package func overflowed() { overflowCounter.increment() }

    package func inUse(_ resource: Resource) -> Int { add(0, to: resource) }
}
