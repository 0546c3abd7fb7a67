import Metrics
import Synchronization

/// Envoy's retry counters per upstream cluster (`cluster.<name>.upstream_rq_retry*`), as
/// Prometheus names them: `envoy_cluster_upstream_rq_retry{cluster_name="outbound|…"}` and its
/// `_success`, `_overflow` and `_limit_exceeded` siblings.
package enum RetryMetrics {
    package static let retry = "envoy_cluster_upstream_rq_retry"
    package static let success = "envoy_cluster_upstream_rq_retry_success"
    package static let overflow = "envoy_cluster_upstream_rq_retry_overflow"
    package static let limitExceeded = "envoy_cluster_upstream_rq_retry_limit_exceeded"

    private struct Handles: Sendable {
        let retry: Counter, success: Counter, overflow: Counter, limitExceeded: Counter
    }

    /// Made once per cluster: a counter's make validates its name and hashes its labels.
    private static let handles = Mutex<[String: Handles]>([:])

    private static func handles(_ cluster: String) -> Handles {
        handles.withLock { cache in
            if let known = cache[cluster] { return known }
            let labels = [("cluster_name", cluster)]
            let made = Handles(retry: Counter(label: retry, dimensions: labels), success: Counter(label: success, dimensions: labels),
                               overflow: Counter(label: overflow, dimensions: labels), limitExceeded: Counter(label: limitExceeded, dimensions: labels))
            cache[cluster] = made
            return made
        }
    }

    /// A retry started.
    static func retried(_ cluster: String) { handles(cluster).retry.increment() }
    /// A retried request got its answer from an upstream.
    static func succeeded(_ cluster: String) { handles(cluster).success.increment() }
    /// The retry budget (`maxRetries`) stopped a retry.
    static func overflowed(_ cluster: String) { handles(cluster).overflow.increment() }
    /// The retries ran out (`URX`).
    static func limitExceeded(_ cluster: String) { handles(cluster).limitExceeded.increment() }
}
