/// Who opened the connection: it decides how far the gateway may forward it.
package enum TrafficOrigin: Sendable, Equatable {
    /// A workload in (or outside) the mesh: local endpoints first, then other clusters.
    case client
    /// Another cluster's gateway: local endpoints only, so traffic crosses at most one
    /// gateway-to-gateway hop and can never loop.
    case peerGateway
}

/// One place the gateway may try to connect a downstream connection to.
package enum UpstreamTarget: Hashable, Sendable, CustomStringConvertible {
    /// A local endpoint, dialled over plain TCP.
    case local(Endpoint)
    /// A gateway of another cluster, dialled with mTLS and Istio-form SNI.
    case peerGateway(cluster: String, gateway: GatewayAddress, serverName: ServerName)

    package var address: HostPort {
        switch self {
        case .local(let endpoint): endpoint.address
        case .peerGateway(_, let gateway, _): gateway.address
        }
    }

    package var cluster: String? {
        switch self {
        case .local: nil
        case .peerGateway(let cluster, _, _): cluster
        }
    }

    package var description: String {
        switch self {
        case .local(let endpoint): endpoint.address.description
        case .peerGateway(let cluster, let gateway, _): "\(gateway.address) (gateway \(gateway.name) of \(cluster))"
        }
    }
}

/// The seam every endpoint-choice policy sits behind: given what this gateway knows about every
/// cluster's endpoints, the ordered list of targets to try for one connection. The shell dials
/// the first and moves to the next when a connect fails, up to its attempt limit.
///
/// Today's policy: round robin over the local endpoints of the route (and subset), then the
/// gateways of remote clusters that serve it. The locality/failover planner replaces this body.
package struct EndpointPicker: Sendable {
    package var endpoints: MeshEndpoints

    package init(endpoints: MeshEndpoints) { self.endpoints = endpoints }

    /// - Parameter cursor: a per-service counter the shell increments on every connection; it
    ///   rotates where the round robin starts.
    package func candidates(for route: Route, origin: TrafficOrigin, cursor: Int) -> [UpstreamTarget] {
        var targets: [UpstreamTarget] = []
        let local = (endpoints.local?.services[route.service] ?? []).filter { $0.matches(route.selector) }
        targets += local.rotated(by: cursor).map(UpstreamTarget.local)
        guard origin == .client else { return targets }
        for cluster in endpoints.remoteClusters {
            let remote = (cluster.services[route.service] ?? []).filter { $0.matches(route.selector) }
            guard !remote.isEmpty else { continue }
            targets += cluster.gateways.rotated(by: cursor).map {
                .peerGateway(cluster: cluster.name, gateway: $0, serverName: route.upstreamServerName)
            }
        }
        return targets
    }
}

extension Array {
    func rotated(by offset: Int) -> [Element] {
        guard count > 1 else { return self }
        let start = ((offset % count) + count) % count
        return Array(self[start...] + self[..<start])
    }
}
