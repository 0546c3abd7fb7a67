import Foundation
import NIOHTTP1

/// "Why did my request go there": what the gateway would do with one request, without sending
/// it — the VirtualService rule that matches, its destinations and weights, the subset, the live
/// locality plan and the targets in the order they would be tried, or the local reply a client
/// would get. `GET /v1/route` and `eastwest route` print it.
package struct RouteExplanation: Encodable, Sendable {
    package struct Destination: Encodable, Sendable {
        package var host: String
        package var port: Int?
        package var subset: String?
        package var weight: Int
        /// The share of requests it gets, in percent.
        package var share: Double
    }

    package struct Target: Encodable, Sendable {
        package var address: String
        package var cluster: String
        package var locality: String
        package var priority: Int
        /// A peer gateway carries it on (`via` is the gateway's name).
        package var via: String?
    }

    package struct Reply: Encodable, Sendable {
        package var status: Int
        package var body: String
        package var flags: String
        package var detail: String
    }

    package var method: String
    package var host: String
    package var path: String
    /// The VirtualService rule, `VirtualService ns/name http[i] (file:line)`; nil: none applies.
    package var virtualService: String?
    package var routeName: String?
    /// The rule's `timeout` in milliseconds; nil: none.
    package var timeoutMilliseconds: Int?
    package var retries: Retries?
    package var fault: Fault?
    /// Where copies go (`mirror`, `mirrors`), each for `percent` of the requests.
    package var mirrors: [Mirror] = []

    package struct Mirror: Encodable, Sendable {
        package var host: String
        package var subset: String?
        package var percent: Double
    }

    /// The retry policy that applies: the rule's `retries`, or Istio's default.
    package struct Retries: Encodable, Sendable {
        /// Retries after the first try.
        package var retries: Int
        package var retryOn: [String]
        package var perTryTimeoutMilliseconds: Int?
        package var remoteLocalities: Bool
        /// No `retries` on the rule: Istio's default policy.
        package var istioDefault: Bool

        init(_ policy: RetryPolicy) {
            retries = policy.maxAttempts - 1
            retryOn = policy.retryOn.map(\.rawValue).sorted() + policy.retriableStatusCodes.sorted().map(String.init)
            perTryTimeoutMilliseconds = policy.perTryTimeout.map { Int($0.milliseconds) }
            remoteLocalities = policy.targets == .previousPriorities
            istioDefault = policy == .istioDefault
        }
    }

    /// The rule's `fault`, shares in percent.
    package struct Fault: Encodable, Sendable {
        package var delayMilliseconds: Int?
        package var delayPercent: Double?
        package var abortStatus: Int?
        package var abortGrpcStatus: Int?
        package var abortPercent: Double?

        init(_ fault: FaultInjection) {
            delayMilliseconds = fault.delay.map { Int($0.duration.milliseconds) }
            delayPercent = fault.delay.map { Double($0.perMillion) / 10_000 }
            abortStatus = fault.abort?.httpStatus
            abortGrpcStatus = fault.abort?.grpcStatus
            abortPercent = fault.abort.map { Double($0.perMillion) / 10_000 }
        }
    }
    package var destinations: [Destination] = []
    /// The destination this request drew (weights decide it per request).
    package var chosen: Destination?
    /// Envoy's cluster for it: `outbound|port|subset|host`.
    package var cluster: String?
    package var plan: LocalityPlan?
    /// In the order the gateway would try them (the first is the pick for this request).
    package var targets: [Target] = []
    /// What the client would get without reaching a backend; nil when it would be forwarded.
    package var localReply: Reply?

    /// Request headers given as `name: value` lines (`eastwest route -H`, `/v1/route?header=`).
    package static func headers(_ lines: [String]) -> HTTPHeaders {
        var headers = HTTPHeaders()
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.add(name: String(line[..<colon]).trimmingCharacters(in: .whitespaces),
                        value: line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        return headers
    }

    package static func explain(_ request: HTTPRequestFacts, routes: RouteConfiguration, clusters: ClusterManager,
                                random: UInt64) -> RouteExplanation {
        var explanation = RouteExplanation(method: request.method, host: request.authority, path: request.path)
        let picker = clusters.current
        let host = String(request.authority.split(separator: ":").first ?? "")
        // The server name a client would send for this host: the service and its lowest port.
        let connectionRoute: Route
        switch routes.resolve(ServerName(host: host, port: nil, subset: nil), in: picker) {
        case .route(let route): connectionRoute = route
        case .noRoute(let reason):
            guard routes.httpRoutes(for: request.authority) != nil else {
                explanation.localReply = Reply(status: 404, body: "", flags: "NR", detail: reason)
                return explanation
            }
            connectionRoute = Route(service: ServiceKey(host: host, port: 0), subset: nil, selector: [:])
        }
        switch HTTPRequestRouter.decide(request, connectionRoute: connectionRoute, routes: routes, services: picker,
                                        listenerPort: nil, random: random) {
        case .reply(let reply):
            explanation.localReply = Reply(reply)
        case .forward(let forward):
            explanation.virtualService = forward.origin
            explanation.routeName = forward.routeName.isEmpty ? nil : forward.routeName
            explanation.timeoutMilliseconds = forward.timeout.map { Int($0.milliseconds) }
            explanation.retries = Retries(forward.retry)
            explanation.fault = forward.fault.map(Fault.init)
            explanation.mirrors = forward.mirrors.map {
                Mirror(host: $0.destination.host, subset: $0.destination.subset, percent: Double($0.perMillion) / 10_000)
            }
            let total = Double(forward.destinations.reduce(0) { $0 + $1.weight })
            explanation.destinations = forward.destinations.map {
                Destination(host: $0.host, port: $0.port, subset: $0.subset, weight: $0.weight, share: total > 0 ? Double($0.weight) / total * 100 : 100)
            }
            let drawn = explanation.destinations.first { $0.subset == forward.route.subset && $0.host == forward.route.service.host }
            explanation.chosen = Destination(host: forward.route.service.host, port: forward.route.service.port, subset: forward.route.subset,
                                             weight: drawn?.weight ?? 100, share: drawn?.share ?? 100)
            explanation.cluster = forward.route.envoyClusterName
            explanation.plan = picker.plan(for: forward.route.service, subset: forward.route.subset)
            let cursor = Int(truncatingIfNeeded: random)
            let action = routes.action(for: forward.route, origin: .client)
            explanation.targets = picker.candidates(for: forward.route, origin: .client, cursor: cursor)
                .prefix(action.retry.maxAttempts).map { planned in
                    var via: String?
                    if case .peerGateway(_, let gateway, _) = planned.target { via = gateway.name }
                    return Target(address: planned.target.address.description, cluster: planned.target.cluster ?? routes.localCluster,
                                  locality: planned.locality, priority: planned.priority, via: via)
                }
            if explanation.targets.isEmpty {
                explanation.localReply = Reply(.noHealthyUpstream(for: forward.route))
            }
        }
        return explanation
    }
}

extension RouteExplanation.Reply {
    init(_ reply: HTTPLocalReply) {
        self.init(status: Int(reply.status.code), body: reply.body, flags: reply.flags.map(\.rawValue).sorted().joined(separator: ","),
                  detail: reply.detail)
    }
}
