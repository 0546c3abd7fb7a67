/// An address as `host:port`, the way topologies and configs write them.
package struct HostPort: Hashable, Sendable, CustomStringConvertible, Codable {
    package var host: String
    package var port: Int

    package init(host: String, port: Int) { self.host = host; self.port = port }

    /// Accepts `1.2.3.4:80`, `[::1]:80` and `name:80`.
    package init?(parsing text: String) {
        var host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }
        }
        guard !host.isEmpty, let port = Int(portText), (1...65_535).contains(port) else { return nil }
        self.host = String(host)
        self.port = port
    }

    package var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    package init(from decoder: any Decoder) throws {
        self = try decoder.parsedString(HostPort.init(parsing:)) { "'\($0)' is not an address of the form host:port with a port from 1 to 65535" }
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Where an endpoint or gateway runs: `region/zone/subzone`, any part possibly empty, as in
/// Istio's `istio-locality` and Envoy's `Locality`.
package struct Locality: Hashable, Sendable, CustomStringConvertible, Codable {
    package var region: String
    package var zone: String
    package var subzone: String

    package init(region: String, zone: String = "", subzone: String = "") {
        self.region = region; self.zone = zone; self.subzone = subzone
    }

    /// Nil for text that names nothing (`""`, `"/"`): "no locality" is the absence of one, and the
    /// wire and the access log could not tell the two apart (found by fuzzing).
    package init?(parsing text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= 3, !text.contains(" "), parts.contains(where: { !$0.isEmpty }) else { return nil }
        self.init(region: parts[0], zone: parts.count > 1 ? parts[1] : "", subzone: parts.count > 2 ? parts[2] : "")
    }

    package var description: String {
        subzone.isEmpty ? (zone.isEmpty ? region : "\(region)/\(zone)") : "\(region)/\(zone)/\(subzone)"
    }

    package init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = Locality(parsing: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                debugDescription: "'\(text)' is not a locality of the form region/zone/subzone"))
        }
        self = value
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// One backend instance of a service.
package struct Endpoint: Hashable, Sendable, Codable {
    package var address: HostPort
    package var locality: Locality?
    package var labels: [String: String]?

    package init(address: HostPort, locality: Locality? = nil, labels: [String: String]? = nil) {
        self.address = address; self.locality = locality; self.labels = labels
    }

    /// Istio subset selection: every label of the subset must be on the endpoint.
    package func matches(_ selector: [String: String]) -> Bool { selector.selects(labels) }
}

extension Dictionary where Key == String, Value == String {
    /// Istio's label selection, wherever a selector names labels (subsets, a ServiceEntry's
    /// workloadSelector, a Gateway's selector, sourceLabels): every label of this selector is on
    /// `labels` with the same value. An empty selector selects everything.
    package func selects(_ labels: [String: String]?) -> Bool {
        allSatisfy { labels?[$0.key] == $0.value }
    }
}

/// A service port, the unit a route and an Envoy cluster refer to.
package struct ServiceKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    package var host: String
    package var port: Int
    package init(host: String, port: Int) { self.host = host; self.port = port }
    package var description: String { "\(host):\(port)" }
    package static func < (a: ServiceKey, b: ServiceKey) -> Bool { (a.host, a.port) < (b.host, b.port) }
}

/// A gateway of some cluster as the data plane dials it.
package struct GatewayAddress: Hashable, Sendable {
    package var name: String
    package var address: HostPort
    package var locality: Locality?
    package init(name: String, address: HostPort, locality: Locality? = nil) {
        self.name = name; self.address = address; self.locality = locality
    }
}

/// What one cluster serves and how to reach it.
package struct ClusterEndpoints: Sendable, Equatable {
    package var name: String
    package var network: String?
    package var gateways: [GatewayAddress]
    /// Endpoints per service port, in the order they were configured.
    package var services: [ServiceKey: [Endpoint]]

    package init(name: String, network: String? = nil, gateways: [GatewayAddress], services: [ServiceKey: [Endpoint]]) {
        self.name = name; self.network = network; self.gateways = gateways; self.services = services
    }
}

/// What this gateway knows about every cluster's endpoints: an immutable snapshot the data path
/// reads once per connection. Today it is built from static config; federation replaces the
/// remote part as it learns.
package struct MeshEndpoints: Sendable, Equatable {
    package var localCluster: String
    /// Every cluster including the local one, keyed by name.
    package var clusters: [String: ClusterEndpoints]
    /// What each service port speaks, where a config or a peer's catalog said so.
    package var protocols: [ServiceKey: ServiceProtocol]

    package init(localCluster: String, clusters: [String: ClusterEndpoints], protocols: [ServiceKey: ServiceProtocol] = [:]) {
        self.localCluster = localCluster; self.clusters = clusters; self.protocols = protocols
    }

    package var local: ClusterEndpoints? { clusters[localCluster] }

    /// Remote clusters in a stable order (by name), so retries are predictable.
    package var remoteClusters: [ClusterEndpoints] {
        clusters.values.filter { $0.name != localCluster }.sorted { $0.name < $1.name }
    }

    /// Every port of `host` served anywhere in the mesh, lowest first.
    package func ports(of host: String) -> [Int] { portsByHost()[host] ?? [] }

    /// Every host's ports served anywhere in the mesh, lowest first (one pass over the mesh;
    /// `EndpointPicker` keeps it for route resolution).
    package func portsByHost() -> [String: [Int]] {
        var ports: [String: Set<Int>] = [:]
        for cluster in clusters.values {
            for service in cluster.services.keys { ports[service.host, default: []].insert(service.port) }
        }
        return ports.mapValues { $0.sorted() }
    }
}
