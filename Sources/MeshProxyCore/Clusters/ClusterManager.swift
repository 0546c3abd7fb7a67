import Synchronization

/// The live state behind every service the gateway routes to — endpoints, their health, the
/// locality plans, round-robin positions and open-connection counts (later, connection pools) —
/// kept across swaps of the `RouteConfiguration`, so a reload loses no ejection, cursor or
/// circuit-breaker count. Envoy's cluster manager.
///
/// Accepting a connection takes one short lock to read the published plans; a change (federation
/// learned an endpoint, an ejection, a gateway unreachable, a drill fault, a reload) is planned
/// under the writers' lock only, for the services it touches, and then published whole.
package final class ClusterManager: Sendable {
    private let published: Mutex<EndpointPicker>
    /// The writers' copy: changes are applied and planned here, one at a time.
    private let pending: Mutex<EndpointPicker>
    package let cursors = RoundRobinCursors()
    /// Open upstream connections per service (maxConnections) and per address (LEAST_REQUEST).
    package let connections = UpstreamConnections()
    /// HTTP circuit breakers per upstream cluster, kept across reloads while their limits stay.
    private let breakers = Mutex<[String: CircuitBreakers]>([:])

    package init(routes: RouteConfiguration, endpoints: MeshEndpoints) {
        let picker = EndpointPicker(endpoints: endpoints, routes: routes)
        published = Mutex(picker)
        pending = Mutex(picker)
    }

    /// The plans new connections are routed by now.
    package var current: EndpointPicker { published.withLock { $0 } }

    /// Applies a change of inputs and publishes the result; services the change leaves alone
    /// keep their plans.
    package func update(_ change: (inout EndpointPicker.Inputs) -> Void) {
        pending.withLock { picker in
            let next = picker.replanned(change)
            picker = next
            published.withLock { $0 = next }
        }
    }

    /// The circuit breakers of `route`'s cluster under `limits`; nil when it has none. A reload
    /// that changes the limits starts them afresh.
    package func breakers(for route: Route, limits: CircuitBreakers.Limits) -> CircuitBreakers? {
        guard !limits.isEmpty else { return nil }
        let cluster = route.envoyClusterName
        return breakers.withLock { all in
            if let known = all[cluster], known.limits == limits { return known }
            let made = CircuitBreakers(cluster: cluster, limits: limits)
            all[cluster] = made
            return made
        }
    }

    /// Where a new connection (or request) for `route` goes: the plan's pick first, then its
    /// fallbacks. Advances the service's round-robin position.
    package func candidates(for route: Route, origin: TrafficOrigin) -> [PlannedTarget] {
        let picker = current
        let cursor = cursors.next(for: route.service)
        return picker.candidates(for: route, origin: origin, cursor: cursor, active: connections.open(to:))
    }
}

/// One round-robin position per service, shared by every event loop. One lock per accepted
/// connection; never held across I/O.
package final class RoundRobinCursors: Sendable {
    private let positions = Mutex<[ServiceKey: Int]>([:])

    package init() {}

    /// The position for this connection; the next caller gets the one after it.
    package func next(for service: ServiceKey) -> Int {
        positions.withLock { positions in
            let value = positions[service, default: 0]
            positions[service] = value &+ 1
            return value
        }
    }
}
