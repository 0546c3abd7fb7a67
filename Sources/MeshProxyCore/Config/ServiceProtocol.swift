/// What a service port speaks, in Istio's protocol names (`protocol:` of a service entry, as a
/// port name prefix or `appProtocol` would give it in Kubernetes).
package enum ServiceProtocol: String, Codable, Sendable, CaseIterable {
    case http, http2, https, grpc, grpcWeb = "grpc-web", tcp, tls, mongo, mysql, redis

    /// Istio's selection from a port name (`http-web`, `grpc`, `tcp-db`) or an `appProtocol`:
    /// the part before the first `-`, case-insensitive; `grpc-web` whole. Nil when it names no
    /// protocol Istio knows (Istio then sniffs or treats the port as TCP).
    package init?(istioName name: String) {
        let lower = name.lowercased()
        if lower == "grpc-web" || lower.hasPrefix("grpc-web-") { self = .grpcWeb; return }
        let prefix = lower.split(separator: "-", maxSplits: 1).first.map(String.init) ?? lower
        guard let known = ServiceProtocol(rawValue: prefix) else { return nil }
        self = known
    }

    package init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = ServiceProtocol(istioName: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription:
                "'\(text)' is not a protocol Istio knows (\(Self.allCases.map(\.rawValue).joined(separator: ", ")))"))
        }
        self = value
    }

    /// Istio's HTTP protocols: the gateway's HTTP connection manager routes them per request.
    package var isHTTP: Bool {
        switch self {
        case .http, .http2, .grpc, .grpcWeb: true
        case .https, .tcp, .tls, .mongo, .mysql, .redis: false
        }
    }

    /// Whether endpoints are spoken to in HTTP/2 (prior knowledge, h2c), as Istio's `IsHTTP2`
    /// says: `http2`, `grpc` and `grpc-web`; `http` endpoints get HTTP/1.1.
    package var upstreamIsHTTP2: Bool {
        switch self {
        case .http2, .grpc, .grpcWeb: true
        case .http, .https, .tcp, .tls, .mongo, .mysql, .redis: false
        }
    }

    /// The ALPN values the gateway offers a client of this service on 15443, each with Istio's
    /// in-mesh spelling (`istio-h2`, `istio-http/1.1`, which Istio's ALPN override sends). An
    /// HTTP service is served by the gateway's HTTP connection manager, which speaks both
    /// HTTP/2 and HTTP/1.1 to the client whatever the endpoints speak; anything else gets none,
    /// so no client is told it can speak a protocol the backend cannot.
    package var applicationProtocols: [String] {
        isHTTP ? ["h2", "http/1.1", "istio-h2", "istio-http/1.1"] : []
    }
}
