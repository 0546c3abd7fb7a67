import Synchronization

/// Open upstream connections, per service and per upstream address, shared by every event
/// loop. Per service it is Envoy's TCP circuit breaker (`connectionPool.tcp.maxConnections` →
/// `max_connections`: a connection over the limit is refused with `UO` instead of queueing
/// behind a struggling service); per address it is the load LEAST_REQUEST compares.
package final class UpstreamConnections: Sendable {
    private let byService = Mutex<[ServiceKey: Int]>([:])
    private let byAddress = Mutex<[HostPort: Int]>([:])

    package init() {}

    /// Takes one of the service's slots; false when `limit` are already open.
    package func acquire(_ service: ServiceKey, limit: Int) -> Bool {
        byService.withLock { open in
            let current = open[service, default: 0]
            guard current < limit else { return false }
            open[service] = current + 1
            return true
        }
    }

    package func release(_ service: ServiceKey) {
        byService.withLock { open in
            let current = open[service, default: 0]
            open[service] = current > 1 ? current - 1 : nil
        }
    }

    package func opened(_ address: HostPort) { byAddress.withLock { $0[address, default: 0] += 1 } }

    package func closed(_ address: HostPort) {
        byAddress.withLock { open in
            let current = open[address, default: 0]
            open[address] = current > 1 ? current - 1 : nil
        }
    }

    package func open(to address: HostPort) -> Int { byAddress.withLock { $0[address, default: 0] } }
}
