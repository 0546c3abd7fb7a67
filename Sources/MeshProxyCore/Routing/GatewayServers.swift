/// One `hosts` entry of a Gateway server, `[namespace/]name`: a namespace (`*` any, `.` the
/// Gateway's own; absent: any) and a name (`*`, `*.suffix`, or exact).
package struct GatewayHost: Sendable, Equatable {
    /// Nil: any namespace.
    package var namespace: String?
    package var name: String

    package init?(parsing text: String, gatewayNamespace: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= 2, let name = parts.last?.lowercased(), !name.isEmpty else { return nil }
        if name.contains("*"), name != "*", !(name.hasPrefix("*.") && !name.dropFirst().contains("*")) { return nil }
        if parts.count == 2 {
            guard !parts[0].isEmpty else { return nil }
            namespace = parts[0] == "*" ? nil : parts[0] == "." ? gatewayNamespace : parts[0]
        }
        self.name = name
    }

    /// Whether the service `host` (an FQDN; its namespace is the second label of
    /// `name.namespace.svc.…`) is one of these.
    package func matches(_ host: String) -> Bool {
        let host = host.lowercased()
        if let namespace {
            let labels = host.split(separator: ".")
            guard labels.count >= 3, labels[2] == "svc", labels[1] == namespace else { return false }
        }
        if name == "*" { return true }
        if name.hasPrefix("*") { return host.hasSuffix(name.dropFirst()) }
        return host == name
    }
}

/// The servers of the Gateway resources that select this gateway (by its labels) on its
/// listener port, in load order: which hosts it exposes and whether their TLS is terminated or
/// passed through. Absent from the route configuration when no Gateway does: then every
/// service is served, terminated, as without Istio's Gateway.
package struct GatewayServers: Sendable, Equatable {
    package enum Mode: Sendable, Equatable {
        /// Terminate Istio mTLS here and route (what EastWest does without a Gateway).
        case istioMutual
        /// Pass the client's own TLS to a local endpoint of the service and subset its Istio
        /// SNI names; never terminated, so the endpoint verifies the client.
        case autoPassthrough
    }

    package struct Server: Sendable, Equatable {
        package var hosts: [GatewayHost]
        package var mode: Mode
        /// `Gateway namespace/name servers[i] (file:line)`.
        package var origin: String
    }

    package var servers: [Server]

    package enum Exposure: Sendable, Equatable {
        case terminate
        case passthrough
        /// No server exposes it: the connection is refused (`NR`), with why.
        case hidden(String)
    }

    /// What the first server exposing `host` says.
    package func exposure(of host: String) -> Exposure {
        for server in servers where server.hosts.contains(where: { $0.matches(host) }) {
            return server.mode == .autoPassthrough ? .passthrough : .terminate
        }
        return .hidden("no Gateway server on this port exposes \(host) (\(servers.map(\.origin).joined(separator: "; ")))")
    }

    package var passesThrough: Bool { servers.contains { $0.mode == .autoPassthrough } }

    /// The servers of Gateways selecting this gateway that it does not serve, each with why: it
    /// listens on `port` only, so a server on another port (Istio's 15021 status or 15012
    /// istiod ports in expose-istiod.yaml, say) does nothing here.
    package static func unserved(_ gateways: [IstioGateway], origins: [String], labels: [String: String], port: Int) -> [String] {
        var notes: [String] = []
        for (index, gateway) in gateways.enumerated() where (gateway.selector ?? [:]).selects(labels) {
            for (i, server) in (gateway.servers ?? []).enumerated() where server.port?.number != port {
                let origin = index < origins.count ? "\(origins[index]): " : ""
                notes.append("\(origin)warning: Gateway \(gateway.namespace)/\(gateway.name) servers[\(i)] is on port \(server.port?.number ?? 0); this gateway listens on \(port) only, so the server is not served")
            }
        }
        return notes
    }

    /// The servers on `port` of the Gateways whose selector `labels` satisfy (an empty
    /// selector selects every gateway); nil when there are none.
    package static func compile(_ gateways: [IstioGateway], origins: [String], labels: [String: String], port: Int) -> GatewayServers? {
        var servers: [Server] = []
        for (index, gateway) in gateways.enumerated() where (gateway.selector ?? [:]).selects(labels) {
            for (i, server) in (gateway.servers ?? []).enumerated() where server.port?.number == port {
                let hosts = (server.hosts ?? []).compactMap { GatewayHost(parsing: $0, gatewayNamespace: gateway.namespace) }
                let origin = "Gateway \(gateway.namespace)/\(gateway.name) servers[\(i)]" + (index < origins.count ? " (\(origins[index]))" : "")
                servers.append(Server(hosts: hosts, mode: server.tls?.mode == "AUTO_PASSTHROUGH" ? .autoPassthrough : .istioMutual, origin: origin))
            }
        }
        return servers.isEmpty ? nil : GatewayServers(servers: servers)
    }
}
