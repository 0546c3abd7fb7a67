import Federation
import Foundation
import MeshProxyCore
import NIOCore
import NIOHTTP1
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
    /// The data plane as new connections see it; `/v1/plan` shows its traffic plan.
    let dataPlane: DataPlane
    /// Drill faults (`/v1/faults`).
    let blackholes: Blackholes
    /// The operator's bearer token for writes (`adminTokenFile`); nil: no token opens writes.
    var writeToken: String?
    /// The identities whose verified mesh certificate (TLS on the admin port) makes a write an
    /// operator's (`adminOperators`).
    var operators: Set<String> = []

    func respond(_ request: ControlHTTPRequest, on eventLoop: any EventLoop) -> EventLoopFuture<ControlHTTPResponse> {
        // A blocking query parks until the federation view passes the index the caller saw.
        if request.method == .GET, let gossip, Self.discoveryPaths.contains(request.path), let indexText = request.query["index"] {
            guard let index = UInt64(indexText) else {
                return eventLoop.makeSucceededFuture(ControlHTTPResponse(status: .badRequest, text: "index must be a whole number\n"))
            }
            var wait = Self.defaultWait
            if let text = request.query["wait"] {
                guard let parsed = ConfigDuration(parsing: text) else {
                    return eventLoop.makeSucceededFuture(ControlHTTPResponse(status: .badRequest, text: "wait '\(text)' is not a duration such as 30s\n"))
                }
                wait = min(parsed.duration, Self.maximumWait)
            }
            return eventLoop.makeFutureWithTask {
                _ = await gossip.view(after: index, timeout: wait)
                return self.response(to: request)
            }
        }
        return eventLoop.makeSucceededFuture(response(to: request))
    }

    /// Who may write: an operator identity over mutual TLS, or the operator token.
    enum Writer: Equatable {
        case identity(String)
        case token
        var description: String {
            switch self {
            case .identity(let id): id
            case .token: "operator token"
            }
        }
    }

    /// Reads are open on the admin address; a write needs an operator: a client certificate with
    /// an operator SPIFFE ID (TLS on the same port), or the operator's token: 401 without either,
    /// 403 with another identity or token (or when the gateway has no token configured), each
    /// with the reason and logged with the address it came from.
    private func writer(of request: ControlHTTPRequest) -> Result<Writer, Refusal> {
        if let id = request.peerIdentity?.description, operators.contains(id) { return .success(.identity(id)) }
        if let id = request.peerIdentity?.description, request.headers.first(name: "authorization") == nil {
            let reason = "\(id) is not an admin operator of this gateway (adminOperators: \(operators.sorted().joined(separator: ", ")))"
            dataPlane.logger.warning("admin write refused", metadata: ["path": "\(request.path)", "from": "\(request.remote)", "reason": "not an operator", "identity": "\(id)"])
            return .failure(Refusal(ControlHTTPResponse(status: .forbidden, text: reason + "\n")))
        }
        if let refusal = refusal(of: request) { return .failure(Refusal(refusal)) }
        return .success(.token)
    }

    struct Refusal: Error {
        var response: ControlHTTPResponse
        init(_ response: ControlHTTPResponse) { self.response = response }
    }

    private func refusal(of request: ControlHTTPRequest) -> ControlHTTPResponse? {
        let reason: String
        let status: HTTPResponseStatus
        if let token = writeToken {
            guard let given = request.headers.first(name: "authorization"), given.hasPrefix("Bearer ") else {
                var response = ControlHTTPResponse(status: .unauthorized, text: "admin writes need an operator: a client certificate with an operator SPIFFE ID over TLS on this port, or the operator token: Authorization: Bearer <the content of adminTokenFile>\n")
                response.headers.add(name: "www-authenticate", value: "Bearer realm=\"eastwest-admin\"")
                dataPlane.logger.warning("admin write refused", metadata: ["path": "\(request.path)", "from": "\(request.remote)", "reason": "no token"])
                return response
            }
            guard Self.constantTimeEqual(Array(given.dropFirst("Bearer ".count).utf8), Array(token.utf8)) else {
                status = .forbidden
                reason = "the bearer token is not this gateway's operator token"
                dataPlane.logger.warning("admin write refused", metadata: ["path": "\(request.path)", "from": "\(request.remote)", "reason": "wrong token"])
                return ControlHTTPResponse(status: status, text: reason + "\n")
            }
            return nil
        }
        status = .forbidden
        reason = "admin writes need an operator certificate (TLS on this port, adminOperators) or an operator token, and this gateway has no adminTokenFile (eastwest up sets one)"
        dataPlane.logger.warning("admin write refused", metadata: ["path": "\(request.path)", "from": "\(request.remote)", "reason": "no adminTokenFile"])
        return ControlHTTPResponse(status: status, text: reason + "\n")
    }

    /// Compares without stopping at the first difference, so the time says nothing about the token.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return zip(a, b).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// Consul's defaults for blocking queries.
    static let defaultWait: Duration = .seconds(300)
    static let maximumWait: Duration = .seconds(600)
    static let discoveryPaths: Set<String> = ["/v1/members", "/v1/services", "/v1/endpoints"]

    private func response(to request: ControlHTTPRequest) -> ControlHTTPResponse {
        let isWrite = request.method != .GET && (request.path.hasPrefix("/v1/catalog/") || request.path == "/v1/faults")
        if isWrite {
            switch writer(of: request) {
            case .failure(let refusal): return refusal.response
            case .success(let writer):
                dataPlane.logger.notice("admin write", metadata: ["method": "\(request.method.rawValue)", "path": "\(request.path)",
                                                                  "by": "\(writer.description)", "from": "\(request.remote)"])
            }
        }
        if request.method == .PUT, request.path == "/v1/catalog/register" || request.path == "/v1/catalog/deregister" {
            return catalogChange(request)
        }
        if request.path == "/v1/faults" { return faults(request) }
        guard request.method == .GET else { return ControlHTTPResponse(status: .methodNotAllowed, text: "only GET\n") }
        switch request.path {
        case "/healthz/ready":
            return ready.isReady ? ControlHTTPResponse(text: "LIVE\n") : ControlHTTPResponse(status: .serviceUnavailable, text: "NOT READY\n")
        case "/stats/prometheus":
            var bytes: [UInt8] = []
            registry.emit(into: &bytes)
            return ControlHTTPResponse(contentType: "text/plain; version=0.0.4", body: ByteBuffer(bytes: bytes))
        case "/config_dump":
            return json(EffectiveConfig(config))
        case "/v1/plan":
            return livePlan(request)
        case "/v1/route":
            return route(request)
        case let path where Self.discoveryPaths.contains(path):
            guard let view = gossip?.view else { return ControlHTTPResponse(status: .notFound, text: "federation is not configured\n") }
            var response = discovery(path, view: view, request: request)
            response.headers.replaceOrAdd(name: "X-EastWest-Index", value: String(view.index))
            return response
        default:
            return ControlHTTPResponse(status: .notFound, text: "unknown admin path \(request.path); try /healthz/ready, /stats/prometheus, /config_dump, /v1/members, /v1/services, /v1/endpoints?host=H\n")
        }
    }

    /// The discovery API, answered from one view so the body and its index agree.
    private func discovery(_ path: String, view: GossipService.View, request: ControlHTTPRequest) -> ControlHTTPResponse {
        switch path {
        case "/v1/members":
            return json(MembersBody(view, droppedMessages: gossip?.droppedMessages ?? [:]))
        case "/v1/services":
            var services: [ServiceKey: ServiceBody] = [:]
            for endpoint in view.endpoints {
                var body = services[endpoint.service] ?? ServiceBody(host: endpoint.service.host, port: endpoint.service.port, clusters: [:])
                body.clusters[endpoint.cluster, default: .init(healthy: 0, total: 0)].count(reachable: endpoint.reachable)
                services[endpoint.service] = body
            }
            return json(services.sorted { $0.key < $1.key }.map(\.value))
        default:
            guard let host = request.query["host"], !host.isEmpty else {
                return ControlHTTPResponse(status: .badRequest, text: "/v1/endpoints needs ?host=H (and optionally &port=P)\n")
            }
            let port = request.query["port"].flatMap(Int.init)
            let endpoints = view.endpoints.filter { $0.service.host == host.lowercased() && (port == nil || $0.service.port == port) }
            return json(endpoints.map(EndpointBody.init))
        }
    }
}

extension AdminAPI {
    /// `GET /v1/members`, also what `eastwest members` and `eastwest up`'s readiness check read.
    struct MembersBody: Codable {
        struct Member: Codable {
            var name, cluster: String
            var address: HostPort
            var state: MemberState
            var incarnation: UInt64
            /// When its state last changed, as this gateway saw it (RFC 3339, UTC).
            var lastChange: String
            var lastChangeSecondsAgo: Double
        }
        var myself: Member
        var members: [Member]
        var droppedMessages: [String: Int]

        init(_ view: GossipService.View, droppedMessages: [String: Int]) {
            let now = ContinuousClock.now
            let wallNow = Date()
            func member(_ m: GossipService.MemberView, age: Double) -> Member {
                Member(name: m.name, cluster: m.cluster, address: m.address, state: m.state, incarnation: m.incarnation,
                       lastChange: wallNow.addingTimeInterval(-age).formatted(.iso8601), lastChangeSecondsAgo: age)
            }
            myself = member(view.myself, age: 0)
            members = view.members.map { member($0, age: (now - $0.lastChange).seconds) }
            self.droppedMessages = droppedMessages
        }
    }

    /// `GET /v1/services`: each service port and, per cluster that serves it, its endpoints.
    struct ServiceBody: Codable {
        struct Count: Codable {
            /// Endpoints new connections can reach now.
            var healthy: Int
            var total: Int
            mutating func count(reachable: Bool) { total += 1; if reachable { healthy += 1 } }
        }
        var host: String
        var port: Int
        var clusters: [String: Count]
    }

    /// `GET /v1/endpoints?host=H`: one endpoint.
    struct EndpointBody: Codable {
        struct Announcement: Codable { var gateway: String; var version: UInt64 }
        var cluster: String
        var host: String
        var port: Int
        var address: String
        var locality: String?
        var labels: [String: String]
        /// Gateways of a remote cluster it is reached through; empty when dialled directly.
        var via: [String]
        var reachable: Bool
        var announcedBy: [Announcement]

        init(_ endpoint: GossipService.EndpointView) {
            cluster = endpoint.cluster; host = endpoint.service.host; port = endpoint.service.port
            address = endpoint.address.description; locality = endpoint.locality?.description; labels = endpoint.labels
            via = endpoint.via; reachable = endpoint.reachable
            announcedBy = endpoint.announcedBy.map { Announcement(gateway: $0.gateway, version: $0.version) }
        }
    }

    /// `PUT /v1/catalog/register|deregister` with
    /// `{"host": "...", "port": 8080, "address": "10.0.0.1:8080", "locality": "r/z", "labels": {...}}`.
    func catalogChange(_ request: ControlHTTPRequest) -> ControlHTTPResponse {
        guard let gossip else { return ControlHTTPResponse(status: .notFound, text: "federation is not configured\n") }
        let registration: CatalogRegistration
        do {
            registration = try CatalogRegistration(json: request.body.readableBytesView)
        } catch {
            return ControlHTTPResponse(status: .badRequest, text: "\(error)\n")
        }
        let key = registration.key
        if request.path.hasSuffix("/register") {
            gossip.register(key, registration.record)
        } else {
            gossip.deregister(key)
        }
        return ControlHTTPResponse(status: .accepted, text: "accepted; announced to every cluster\n")
    }

    func json(_ value: some Encodable) -> ControlHTTPResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let body = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return ControlHTTPResponse(contentType: "application/json", body: ByteBuffer(bytes: body))
    }
}

extension AdminAPI {
    /// `GET /v1/plan?host=H[&subset=S][&port=P]`: where this gateway sends its clients'
    /// requests for H now — the very plan the data path picks endpoints by, from this gateway's
    /// locality, under H's DestinationRule, with the current health (federation, ejections).
    func livePlan(_ request: ControlHTTPRequest) -> ControlHTTPResponse {
        guard let host = request.query["host"]?.lowercased(), !host.isEmpty else {
            return ControlHTTPResponse(status: .badRequest, text: "/v1/plan needs ?host=H (and optionally &subset=S, &port=P)\n")
        }
        let picker = dataPlane.clusters.current
        let port = request.query["port"].flatMap(Int.init)
        let subset = request.query["subset"]
        // Resolved as the listener resolves a server name (a plain host means its lowest port).
        switch dataPlane.routes.resolve(ServerName(host: host, port: port, subset: subset), in: picker) {
        case .noRoute(let reason):
            return ControlHTTPResponse(status: .notFound, text: "\(reason)\n")
        case .route(let route):
            guard let plan = picker.plan(for: route.service, subset: route.subset) else {
                return ControlHTTPResponse(status: .notFound, text: "no plan for \(route.service)\n")
            }
            return json(plan)
        }
    }
}

extension AdminAPI {
    /// `GET /v1/route?host=H[&path=P][&method=M][&header=name:value]…`: what this gateway would
    /// do with that request now — the VirtualService rule, destinations and weights, the subset,
    /// the live plan, the targets in order, or the local reply — without sending it.
    func route(_ request: ControlHTTPRequest) -> ControlHTTPResponse {
        guard let host = request.query["host"], !host.isEmpty else {
            return ControlHTTPResponse(status: .badRequest, text: "/v1/route needs ?host=H (and optionally &path=P, &method=M, &header=name:value)\n")
        }
        let headers = RouteExplanation.headers((request.uri.split(separator: "?", maxSplits: 1).dropFirst().first ?? "").split(separator: "&").compactMap { pair in
            let parts = pair.split(separator: "=", maxSplits: 1).map { $0.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0) }
            return parts.count == 2 && parts[0] == "header" ? parts[1] : nil
        })
        let facts = HTTPRequestFacts(method: (request.query["method"] ?? "GET").uppercased(), path: request.query["path"] ?? "/",
                                     authority: host, headers: headers)
        return json(RouteExplanation.explain(facts, routes: dataPlane.routes, clusters: dataPlane.clusters,
                                             random: UInt64.random(in: .min ... .max)))
    }
}

extension AdminAPI {
    /// `POST /v1/faults` with `{"blackhole": {"cluster"|"region"|"zone": …}, "duration": "30s"}`:
    /// this gateway treats those endpoints as unreachable for the duration (at most 1 h), then
    /// returns to normal by itself. `DELETE /v1/faults` ends them all; `GET` lists them.
    func faults(_ request: ControlHTTPRequest) -> ControlHTTPResponse {
        struct Listed: Encodable { var cluster, region, zone: String?; var secondsLeft: Double }
        switch request.method {
        case .GET:
            let now = ContinuousClock.now
            return json(blackholes.current.map { Listed(cluster: $0.target.cluster, region: $0.target.region, zone: $0.target.zone, secondsLeft: ($0.until - now).seconds) })
        case .DELETE:
            blackholes.clear()
            return ControlHTTPResponse(text: "every fault cleared\n")
        case .POST:
            let fault: (target: BlackholeTarget, duration: ConfigDuration)
            do {
                fault = try FaultRequest.validated(json: request.body.readableBytesView)
            } catch {
                return ControlHTTPResponse(status: .badRequest, text: "\(error)\n")
            }
            let blackhole = Blackhole(fault.target, until: .now + fault.duration.duration)
            blackholes.add(blackhole)
            return ControlHTTPResponse(status: .created, text: "blackhole \(blackhole.target.description) for \(fault.duration)\n")
        default:
            return ControlHTTPResponse(status: .methodNotAllowed, text: "GET, POST or DELETE\n")
        }
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
        var maxPendingHandshakes: Int
        /// This gateway's own identity, which binds it to its cluster.
        var gatewayIdentity: String?
        /// The failure detector's timing: the profile with every override applied.
        var federationTiming: FederationTiming?
    }

    init(_ config: GatewayConfig) {
        self.config = config
        effective = Effective(
            trustDomain: config.effectiveTrustDomain, admin: config.effectiveAdmin.description,
            allowedTrustDomains: config.effectiveAllowedTrustDomains.sorted(),
            peerGatewayIdentities: config.listedPeerGatewayIdentities.map { $0.map(\.description).sorted() }
                ?? ["spiffe://\(config.effectiveTrustDomain)/ns/\(GatewayIdentity.namespace)/sa/\(GatewayIdentity.serviceAccountPrefix)<cluster>"],
            connectTimeout: ConfigDuration(config.connectTimeout).description, idleTimeout: ConfigDuration(config.idleTimeout).description,
            handshakeTimeout: ConfigDuration(config.handshakeTimeout).description, drainTimeout: ConfigDuration(config.drainTimeout).description,
            maxConnectAttempts: config.effectiveMaxConnectAttempts,
            maxPendingHandshakes: config.effectiveMaxPendingHandshakes, gatewayIdentity: config.gatewayIdentity?.description,
            federationTiming: config.federation.map { MembershipSettings($0).asTiming })
    }
}
