import Synchronization

/// Envoy's circuit breaker for TCP (`connectionPool.tcp.maxConnections` → `max_connections`):
/// open upstream connections per service, shared by every event loop. A connection over the
/// limit is refused with `UO` instead of queueing behind a struggling service.
package final class ConnectionBudget: Sendable {
    private let open = Mutex<[ServiceKey: Int]>([:])

    package init() {}

    /// Takes one slot; false when `limit` are already open.
    package func acquire(_ service: ServiceKey, limit: Int) -> Bool {
        open.withLock { open in
            let current = open[service, default: 0]
            guard current < limit else { return false }
            open[service] = current + 1
            return true
        }
    }

    package func release(_ service: ServiceKey) {
        open.withLock { open in
            let current = open[service, default: 0]
            open[service] = current > 1 ? current - 1 : nil
        }
    }

    package func openConnections(_ service: ServiceKey) -> Int { open.withLock { $0[service, default: 0] } }
}
