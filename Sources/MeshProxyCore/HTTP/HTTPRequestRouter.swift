/// Decides, once per request at the gateway where it enters the mesh, where it goes: the
/// VirtualService rule for its host (or, without one, the service the client's server name
/// named), the destination by weight, the service port and subset. Pure: the connection manager
/// carries the decision out.
package enum HTTPRequestRouter {
    package struct Forward: Sendable, Equatable {
        /// The service port and subset; the cluster manager plans the cluster and endpoint.
        package var route: Route
        /// Envoy's route name (`%ROUTE_NAME%`); empty without a VirtualService.
        package var routeName: String
        /// The VirtualService rule that matched, `file:line`; nil when none applied.
        package var origin: String?
        package var requestHeaders: HeaderOperations
        package var responseHeaders: HeaderOperations
        /// Every destination of the rule with its weight (the chosen one is `route`).
        package var destinations: [HTTPDestination] = []
        /// The path upstream gets after the rule's `rewrite` (query kept); nil: unchanged.
        package var path: String?
        /// The authority upstream gets after `rewrite.authority`; nil: unchanged.
        package var authority: String?
        /// The rule's `timeout`; nil: none.
        package var timeout: Duration?
        /// The rule's `retries`, else Istio's default policy.
        package var retry = RetryPolicy.istioDefault
        package var fault: FaultInjection?
        package var mirrors: [RequestMirror] = []
    }

    package enum Decision: Sendable, Equatable {
        case forward(Forward)
        case reply(HTTPLocalReply)
    }

    /// - Parameters:
    ///   - connectionRoute: what the client's server name resolved to at the handshake.
    ///   - listenerPort: the port the request came in on (`match.port`).
    ///   - random: a fresh random number for the weighted pick.
    package static func decide(_ request: HTTPRequestFacts, connectionRoute: Route, routes: RouteConfiguration,
                               services: some ServiceDirectory, listenerPort: Int?, random: UInt64) -> Decision {
        // Istio matches virtual hosts on :authority; a request without one is for the name
        // the client connected with.
        let authority = request.authority.isEmpty ? connectionRoute.service.host : request.authority
        guard let table = routes.httpRoutes(for: authority) ?? routes.httpRoutes(for: connectionRoute.service.host) else {
            // No VirtualService: the service (and subset) the server name named, as a sidecar's
            // default route for a known service.
            return .forward(Forward(route: connectionRoute, routeName: "", origin: nil, requestHeaders: .init(), responseHeaders: .init()))
        }
        guard let decision = table.route(request, port: listenerPort, random: random) else {
            return .reply(.noRoute("no VirtualService route for \(request.method) \(authority)\(request.path)"))
        }
        switch decision.rule.action {
        case .redirect(let redirect):
            return .reply(.redirect(code: redirect.code, location: location(redirect, for: request, authority: authority, listenerPort: listenerPort),
                                    detail: "\(decision.rule.origin): redirect"))
        case .directResponse(let status, let body):
            return .reply(.directResponse(status: status, body: body, detail: "\(decision.rule.origin): direct response"))
        case .route:
            break
        }
        guard let destination = decision.destination else {
            return .reply(.noRoute("no VirtualService route for \(request.method) \(authority)\(request.path)"))
        }
        let route: Route
        switch resolve(destination, origin: decision.rule.origin, routes: routes, services: services) {
        case .success(let resolved): route = resolved
        case .failure(let missing): return .reply(.noCluster(missing.detail))
        }
        return .forward(Forward(route: route, routeName: decision.rule.name, origin: decision.rule.origin,
                                requestHeaders: decision.rule.requestHeaders.then(destination.requestHeaders),
                                responseHeaders: decision.rule.responseHeaders.then(destination.responseHeaders),
                                destinations: decision.rule.destinations,
                                path: decision.rule.rewrite?.rewrittenPath(request.path, matchedBy: decision.rule.match?.uri),
                                authority: decision.rule.rewrite?.authority, timeout: decision.rule.timeout,
                                retry: decision.rule.retry, fault: decision.rule.fault, mirrors: decision.rule.mirrors))
    }

    /// A destination's service port does not exist, or its subset is in no DestinationRule (NC).
    package struct NoCluster: Error, Sendable {
        package var detail: String
    }

    /// The service port and subset a route destination (HTTP or TCP) names, as istiod resolves
    /// it: the port given, else the service's only port; the subset's labels.
    package static func resolve(_ destination: HTTPDestination, origin: String, routes: RouteConfiguration,
                                services: some ServiceDirectory) -> Result<Route, NoCluster> {
        let ports = services.ports(of: destination.host)
        let port: Int
        if let wanted = destination.port {
            guard ports.contains(wanted) else { return .failure(NoCluster(detail: "\(origin): \(destination.host) has no port \(wanted) in the mesh")) }
            port = wanted
        } else {
            // Istio: the destination's only port; with several and none named, the listener port,
            // which is no service's (NC).
            guard ports.count == 1 else {
                return .failure(NoCluster(detail: ports.isEmpty
                    ? "\(origin): no service \(destination.host) in the mesh"
                    : "\(origin): \(destination.host) has several ports (\(ports.map(String.init).joined(separator: ", "))); name one in destination.port"))
            }
            port = ports[0]
        }
        var selector: [String: String] = [:]
        if let subset = destination.subset {
            guard let labels = routes.selector(host: destination.host, subset: subset) else {
                return .failure(NoCluster(detail: "\(origin): subset '\(subset)' of \(destination.host) is in no DestinationRule"))
            }
            selector = labels
        }
        let service = ServiceKey(host: destination.host, port: port)
        return .success(Route(service: service, subset: destination.subset, selector: selector, protocol: services.protocol(of: service)))
    }

    /// A redirect's `location`, as Envoy builds it (`RouteEntryImplBase::newUri`): each part
    /// the redirect names replaces the request's; a path without its own query keeps the
    /// request's; a port replaces the authority's, and the scheme's default port is dropped.
    static func location(_ redirect: HTTPRedirectAction, for request: HTTPRequestFacts, authority: String, listenerPort: Int?) -> String {
        let scheme = redirect.scheme ?? request.scheme
        var host = redirect.authority ?? authority
        var port: Int?
        if let colon = host.lastIndex(of: ":"), !host.hasSuffix("]"), let given = Int(host[host.index(after: colon)...]) {
            port = given
            host = String(host[..<colon])
        }
        if let wanted = redirect.port { port = wanted } else if redirect.portFromRequest { port = listenerPort }
        if redirect.protocolDefaultPort || (scheme == "https" && port == 443) || (scheme == "http" && port == 80) { port = nil }
        var path = redirect.path ?? request.path
        if redirect.path != nil, !path.contains("?"), let query = request.path.split(separator: "?", maxSplits: 1).dropFirst().first {
            path += "?" + query
        }
        return "\(scheme)://\(host)\(port.map { ":\($0)" } ?? "")\(path)"
    }
}
