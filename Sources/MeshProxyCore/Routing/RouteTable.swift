/// Where a connection goes once its server name is known: a service port and maybe a subset.
package struct Route: Hashable, Sendable {
    package var service: ServiceKey
    package var subset: String?
    /// The subset's label selector; empty when no subset was named.
    package var selector: [String: String]
    /// What the service port speaks, when known; it decides the ALPN offered to the client.
    package var `protocol`: ServiceProtocol? = nil

    /// The SNI a gateway sends when it carries this route to a peer gateway: always Istio's form,
    /// so the peer needs no knowledge of how the client spelled it.
    package var upstreamServerName: ServerName {
        .istio(host: service.host, port: service.port, subset: subset)
    }
}

/// Resolves server names against the mesh's services. Built once per catalog snapshot; a
/// lookup is a dictionary probe.
package struct RouteTable: Sendable {
    private let endpoints: MeshEndpoints
    /// Every port of a host served anywhere in the mesh, lowest first, computed once per table.
    private let portsByHost: [String: [Int]]

    package init(endpoints: MeshEndpoints) {
        self.endpoints = endpoints
        portsByHost = endpoints.portsByHost()
    }

    package enum Resolution: Equatable, Sendable {
        case route(Route)
        /// Envoy's `NR`: no filter chain for this name. `reason` goes in the log line.
        case noRoute(reason: String)
    }

    package func resolve(_ name: ServerName) -> Resolution {
        let ports = portsByHost[name.host] ?? []
        guard !ports.isEmpty else { return .noRoute(reason: "no service '\(name.host)' in the mesh") }
        let port: Int
        if let requested = name.port {
            guard ports.contains(requested) else {
                return .noRoute(reason: "service '\(name.host)' has no port \(requested) (ports: \(ports.map(String.init).joined(separator: ", ")))")
            }
            port = requested
        } else {
            // A plain host name means the service's port; with several, the lowest, so the
            // choice is stable. Clients that need another port use the Istio form.
            port = ports[0]
        }
        var selector: [String: String] = [:]
        if let subset = name.subset {
            guard let labels = endpoints.subsets[name.host]?[subset] else {
                return .noRoute(reason: "service '\(name.host)' has no subset '\(subset)'")
            }
            selector = labels
        }
        let service = ServiceKey(host: name.host, port: port)
        return .route(Route(service: service, subset: name.subset, selector: selector, protocol: endpoints.protocols[service]))
    }
}
