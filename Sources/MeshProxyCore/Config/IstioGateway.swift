/// An Istio `Gateway` (networking.istio.io v1, v1beta1, v1alpha3): which of a gateway's ports
/// serve which hosts, and whether their TLS is terminated (`ISTIO_MUTUAL`) or passed through to
/// the endpoint the Istio SNI names (`AUTO_PASSTHROUGH`, how Istio's multi-network clusters use an
/// east-west gateway). It applies to the gateways whose `labels` its `selector` matches.
package struct IstioGateway: Codable, Sendable, Equatable {
    package var selector: [String: String]?
    package var servers: [Server]?
    /// `metadata.namespace`, for `./host` entries; set by the loader, not decoded.
    package var namespace: String = "default"
    /// `metadata.name`, for the log and `eastwest route`.
    package var name: String = ""

    enum CodingKeys: String, CodingKey { case selector, servers }

    package init(selector: [String: String], servers: [Server], namespace: String = "istio-system", name: String = "") {
        self.selector = selector; self.servers = servers; self.namespace = namespace; self.name = name
    }

    package struct Server: Codable, Sendable, Equatable {
        package var port: Port?
        package var hosts: [String]?
        package var tls: TLS?
        package var name: String?

        package init(port: Port, hosts: [String], tls: TLS? = nil) { self.port = port; self.hosts = hosts; self.tls = tls }
    }

    package struct Port: Codable, Sendable, Equatable {
        package var number: Int?
        package var name: String?
        package var `protocol`: String?

        package init(number: Int, name: String? = nil, protocol: String? = nil) { self.number = number; self.name = name; self.protocol = `protocol` }
    }

    package struct TLS: Codable, Sendable, Equatable {
        package var mode: String?

        package init(mode: String) { self.mode = mode }
    }

    /// Istio's TLS modes (`ServerTLSSettings.TLSmode`).
    package static let modes: Set<String> = ["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"]
    /// Istio's server port protocols.
    package static let protocols: Set<String> = ["HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS"]
}
