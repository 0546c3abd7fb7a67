import Federation
import Foundation
import MeshProxyCore
import NIOCore
import Prometheus
import Synchronization

/// Whether the gateway is serving: set once listening with certificates loaded, cleared on drain.
final class ReadyFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set(_ ready: Bool) { value.store(ready, ordering: .releasing) }
    var isReady: Bool { value.load(ordering: .acquiring) }
}

/// The admin listener (Envoy's port 15000 paths): readiness, Prometheus metrics, effective config.
struct AdminAPI: Sendable {
    let config: GatewayConfig
    let registry: PrometheusCollectorRegistry
    let ready: ReadyFlag
    let gossip: GossipService?

    func respond(_ request: PlainHTTPRequest, on eventLoop: any EventLoop) -> EventLoopFuture<PlainHTTPResponse> {
        eventLoop.makeSucceededFuture(response(to: request))
    }

    private func response(to request: PlainHTTPRequest) -> PlainHTTPResponse {
        if request.method == .PUT, request.path == "/v1/catalog/register" || request.path == "/v1/catalog/deregister" {
            return catalogChange(request)
        }
        guard request.method == .GET else { return PlainHTTPResponse(status: .methodNotAllowed, text: "only GET\n") }
        switch request.path {
        case "/healthz/ready":
            return ready.isReady ? PlainHTTPResponse(text: "LIVE\n") : PlainHTTPResponse(status: .serviceUnavailable, text: "NOT READY\n")
        case "/stats/prometheus":
            var bytes: [UInt8] = []
            registry.emit(into: &bytes)
            return PlainHTTPResponse(contentType: "text/plain; version=0.0.4", body: ByteBuffer(bytes: bytes))
        case "/config_dump":
            return json(EffectiveConfig(config))
        case "/v1/members":
            guard let view = gossip?.view else { return PlainHTTPResponse(status: .notFound, text: "federation is not configured\n") }
            return json(MembersBody(view, droppedMessages: gossip?.droppedMessages ?? [:]))
        case "/v1/services":
            guard let view = gossip?.view else { return PlainHTTPResponse(status: .notFound, text: "federation is not configured\n") }
            var services: [String: ServiceBody] = [:]
            for (cluster, byService) in view.endpointsByCluster {
                for (key, endpoints) in byService {
                    let name = "\(key.host):\(key.port)"
                    var body = services[name] ?? ServiceBody(host: key.host, port: key.port, clusters: [:])
                    body.clusters[cluster] = endpoints.count
                    services[name] = body
                }
            }
            return json(services.values.sorted { ($0.host, $0.port) < ($1.host, $1.port) })
        default:
            return PlainHTTPResponse(status: .notFound, text: "unknown admin path \(request.path); try /healthz/ready, /stats/prometheus, /config_dump, /v1/members, /v1/services\n")
        }
    }
}

extension AdminAPI {
    /// `GET /v1/members`, also what `eastwest members` and `eastwest up`'s readiness check read.
    struct MembersBody: Codable {
        struct Member: Codable {
            var name, cluster, address, state: String
            var incarnation: UInt64
            var lastChangeSecondsAgo: Double
        }
        var myself: Member
        var members: [Member]
        var droppedMessages: [String: Int]

        init(_ view: GossipService.View, droppedMessages: [String: Int]) {
            let now = ContinuousClock.now
            func member(_ m: GossipService.MemberView, age: Double) -> Member {
                Member(name: m.name, cluster: m.cluster, address: m.address, state: m.state, incarnation: m.incarnation,
                       lastChangeSecondsAgo: age)
            }
            myself = member(view.myself, age: 0)
            members = view.members.map { member($0, age: (now - $0.lastChange).seconds) }
            self.droppedMessages = droppedMessages
        }
    }

    struct ServiceBody: Encodable {
        var host: String
        var port: Int
        /// Endpoint count per cluster that serves it.
        var clusters: [String: Int]
    }

    /// `PUT /v1/catalog/register|deregister` with
    /// `{"host": "...", "port": 8080, "address": "10.0.0.1:8080", "locality": "r/z", "labels": {...}}`.
    func catalogChange(_ request: PlainHTTPRequest) -> PlainHTTPResponse {
        struct Body: Decodable { var host: String; var port: Int; var address: String; var locality: String?; var labels: [String: String]? }
        guard let gossip else { return PlainHTTPResponse(status: .notFound, text: "federation is not configured\n") }
        guard let body = try? JSONDecoder().decode(Body.self, from: Data(request.body.readableBytesView)) else {
            return PlainHTTPResponse(status: .badRequest, text: "body must be JSON {host, port, address, locality?, labels?}\n")
        }
        guard (try? ServerName(parsing: body.host)) != nil, (1...65_535).contains(body.port) else {
            return PlainHTTPResponse(status: .badRequest, text: "host must be a DNS name and port 1-65535\n")
        }
        guard let address = HostPort(parsing: body.address) else {
            return PlainHTTPResponse(status: .badRequest, text: "address '\(body.address)' is not host:port\n")
        }
        let key = CatalogKey(host: body.host.lowercased(), port: body.port, endpoint: address)
        if request.path.hasSuffix("/register") {
            gossip.register(key, CatalogRecord(locality: body.locality.flatMap(Locality.init(parsing:)), labels: body.labels ?? [:]))
        } else {
            gossip.deregister(key)
        }
        return PlainHTTPResponse(status: .accepted, text: "accepted; announced to every cluster\n")
    }

    func json(_ value: some Encodable) -> PlainHTTPResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let body = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return PlainHTTPResponse(contentType: "application/json", body: ByteBuffer(bytes: body))
    }
}

/// The config as the gateway runs it: every default filled in.
private struct EffectiveConfig: Encodable {
    var config: GatewayConfig
    var effective: Effective
    struct Effective: Encodable {
        var trustDomain: String
        var admin: String
        var allowedTrustDomains: [String]
        var peerGatewayIdentities: [String]
        var connectTimeout: String
        var idleTimeout: String
        var handshakeTimeout: String
        var drainTimeout: String
        var maxConnectAttempts: Int
        /// The failure detector's timing: the profile with every override applied.
        var federationTiming: FederationTiming?
    }

    init(_ config: GatewayConfig) {
        self.config = config
        effective = Effective(
            trustDomain: config.effectiveTrustDomain, admin: config.effectiveAdmin.description,
            allowedTrustDomains: config.effectiveAllowedTrustDomains.sorted(),
            peerGatewayIdentities: config.effectivePeerGatewayIdentities.map(\.description).sorted(),
            connectTimeout: ConfigDuration(config.connectTimeout).description, idleTimeout: ConfigDuration(config.idleTimeout).description,
            handshakeTimeout: ConfigDuration(config.handshakeTimeout).description, drainTimeout: ConfigDuration(config.drainTimeout).description,
            maxConnectAttempts: config.effectiveMaxConnectAttempts,
            federationTiming: config.federation.map { MembershipSettings($0).asTiming })
    }
}
