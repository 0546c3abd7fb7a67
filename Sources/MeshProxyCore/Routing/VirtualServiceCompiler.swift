/// VirtualService → `HTTPRouteTable`s per host, as istiod builds a gateway's route configuration
/// (pilot/pkg/networking/core/route/route.go): each `http[]` rule × each `match[]` entry is one
/// route, in order; a rule without a match is a catch-all and ends its VirtualService's routes;
/// several VirtualServices for one host are merged in load order with catch-alls moved last.
enum VirtualServiceCompiler {
    /// Istio's short names: only a name without a dot becomes `<name>.<namespace>.svc.cluster.local`.
    static func fullName(_ host: String, namespace: String) -> String {
        let lower = host.lowercased()
        return lower.contains(".") || lower == "*" ? lower : "\(lower).\(namespace).svc.cluster.local"
    }

    /// - Parameter proxyLabels: the gateway's labels, which `sourceLabels` matches name: istiod
    ///   decides them when it builds a proxy's routes (`sourceMatchHTTP`), and at a gateway the
    ///   proxy is the gateway. A match whose labels it lacks is left out; a rule with no match
    ///   left is left out.
    static func compile(_ services: [VirtualService], origins: [[String]], proxyLabels: [String: String] = [:]) -> [String: HTTPRouteTable] {
        var rulesByHost: [String: [(rule: HTTPRouteRule, catchAll: Bool)]] = [:]
        for (serviceIndex, service) in services.enumerated() {
            let rules = routes(of: service, origins: serviceIndex < origins.count ? origins[serviceIndex] : [], proxyLabels: proxyLabels)
            for host in service.hosts ?? [] {
                rulesByHost[fullName(host, namespace: service.namespace), default: []] += rules
            }
        }
        return rulesByHost.mapValues { rules in
            HTTPRouteTable(rules: rules.filter { !$0.catchAll }.map(\.rule) + rules.filter(\.catchAll).map(\.rule))
        }
    }

    /// Whether VirtualService host `host` (a full name, `*.` wildcard or `*`) covers `name`.
    static func hostCovers(_ host: String, _ name: String) -> Bool {
        host == name || host == "*" || (host.hasPrefix("*.") && name.hasSuffix(host.dropFirst()))
    }

    /// The `tls:` and `tcp:` routes per host, in load order (first holding wins); a
    /// VirtualService's `tls:` rules come before its `tcp:` rules, each under the SNI hosts it
    /// names (the name the client connected with, which is the service's).
    static func compileTCP(_ services: [VirtualService], proxyLabels: [String: String] = [:]) -> [String: [TCPRouteRule]] {
        var result: [String: [TCPRouteRule]] = [:]
        for service in services {
            for (index, tls) in (service.tls ?? []).enumerated() {
                let matches = (tls.match ?? []).filter { ($0.sourceLabels ?? [:]).selects(proxyLabels) }
                let destinations = self.destinations(tls.route ?? [], namespace: service.namespace)
                var bySNI: [String: [TCPRouteRule.Match]] = [:]
                var order: [String] = []
                for match in matches {
                    for sni in match.sniHosts ?? [] {
                        let name = fullName(sni, namespace: service.namespace)
                        if bySNI[name] == nil { order.append(name) }
                        bySNI[name, default: []].append(.init(port: match.port, sourceNamespace: match.sourceNamespace))
                    }
                }
                for name in order {
                    result[name, default: []].append(TCPRouteRule(matches: bySNI[name]!, destinations: destinations,
                                                                 origin: "VirtualService \(service.namespace)/\(service.name) tls[\(index)]"))
                }
            }
            for (index, tcp) in (service.tcp ?? []).enumerated() {
                let matches = (tcp.match ?? []).filter { ($0.sourceLabels ?? [:]).selects(proxyLabels) }
                if matches.isEmpty, !(tcp.match ?? []).isEmpty { continue }
                let destinations = self.destinations(tcp.route ?? [], namespace: service.namespace)
                let rule = TCPRouteRule(matches: matches.map { .init(port: $0.port, sourceNamespace: $0.sourceNamespace) },
                                        destinations: destinations, origin: "VirtualService \(service.namespace)/\(service.name) tcp[\(index)]")
                for host in service.hosts ?? [] { result[fullName(host, namespace: service.namespace), default: []].append(rule) }
            }
        }
        return result
    }

    static func routes(of service: VirtualService, origins: [String], proxyLabels: [String: String] = [:]) -> [(rule: HTTPRouteRule, catchAll: Bool)] {
        var result: [(rule: HTTPRouteRule, catchAll: Bool)] = []
        for (index, http) in (service.http ?? []).enumerated() {
            let origin = "VirtualService \(service.namespace)/\(service.name) http[\(index)]" + (index < origins.count ? " (\(origins[index]))" : "")
            let destinations = self.destinations(http.route ?? [], namespace: service.namespace)
            let requestHeaders = operations(http.headers?.request), responseHeaders = operations(http.headers?.response)
            let action = self.action(of: http), rewrite = http.rewrite.flatMap(self.rewrite)
            let timeout = http.timeout.map(\.duration).flatMap { $0 > .zero ? $0 : nil }
            let retry = retryPolicy(http.retries), fault = http.fault.flatMap(FaultInjection.init)
            let mirrors = self.mirrors(of: http, namespace: service.namespace)
            let matches = (http.match ?? []).filter { ($0.sourceLabels ?? [:]).selects(proxyLabels) }
            if matches.isEmpty, !(http.match ?? []).isEmpty { continue }
            if matches.isEmpty {
                var rule = HTTPRouteRule(name: http.name ?? "", origin: origin, match: nil, destinations: destinations)
                rule.requestHeaders = requestHeaders; rule.responseHeaders = responseHeaders
                rule.action = action; rule.rewrite = rewrite; rule.timeout = timeout
                rule.retry = retry; rule.fault = fault; rule.mirrors = mirrors
                result.append((rule, true))
                break
            }
            var ended = false
            for match in matches {
                let compiled = compile(match)
                let name = [http.name, match.name].compactMap { $0 }.joined(separator: ".")
                var rule = HTTPRouteRule(name: name, origin: origin, match: compiled, destinations: destinations)
                rule.requestHeaders = requestHeaders; rule.responseHeaders = responseHeaders
                rule.action = action; rule.rewrite = rewrite; rule.timeout = timeout
                rule.retry = retry; rule.fault = fault; rule.mirrors = mirrors
                // Istio's isCatchAllMatch: sourceLabels make a match specific, though they were
                // decided here and not at request time.
                let catchAll = isCatchAll(compiled) && (match.sourceLabels ?? [:]).isEmpty
                result.append((rule, catchAll))
                if catchAll { ended = true; break }
            }
            if ended { break }
        }
        return result
    }

    /// istiod's `retry.ConvertPolicy`: no `retries`, the default policy; `attempts` 0 or less,
    /// none; else `attempts` retries on the `retryOn` given (bare codes become retriable status
    /// codes) or the default conditions.
    static func retryPolicy(_ retries: VirtualService.HTTPRetry?) -> RetryPolicy {
        guard let retries else { return .istioDefault }
        guard let attempts = retries.attempts, attempts > 0 else { return .none }
        var policy = RetryPolicy.istioDefault
        policy.maxAttempts = attempts + 1
        if let retryOn = retries.retryOn {
            policy.retryOn = []
            for token in retryOn.split(separator: ",") {
                if let code = Int(token) {
                    policy.retriableStatusCodes.insert(code)
                    policy.retryOn.insert(.retriableStatusCodes)
                } else if let condition = RetryCondition(rawValue: String(token)) {
                    policy.retryOn.insert(condition)
                }
            }
        }
        policy.perTryTimeout = retries.perTryTimeout.map(\.duration).flatMap { $0 > .zero ? $0 : nil }
        if let backoff = retries.backoff?.duration, backoff > .zero { policy.backoffBase = backoff }
        if retries.retryRemoteLocalities == true { policy.targets = .previousPriorities }
        if retries.retryIgnorePreviousHosts == false { policy.avoidPreviousHosts = false }
        return policy
    }

    /// istiod's `TranslateRequestMirrorPolicy`: `mirror` with `mirrorPercentage` (else the
    /// legacy `mirrorPercent`, else every request), or each of `mirrors`; a share of 0 is none.
    static func mirrors(of http: VirtualService.HTTPRoute, namespace: String) -> [RequestMirror] {
        func destination(_ d: VirtualService.Destination) -> HTTPDestination {
            HTTPDestination(host: fullName(d.host, namespace: namespace), port: d.port?.number, subset: d.subset, weight: 100)
        }
        var result: [RequestMirror] = []
        if let mirror = http.mirror {
            let share = http.mirrorPercentage != nil ? FaultInjection.perMillion(http.mirrorPercentage)
                : http.mirrorPercent.map { $0 * 10_000 } ?? 1_000_000
            result.append(RequestMirror(destination: destination(mirror), perMillion: share))
        }
        for mirror in http.mirrors ?? [] {
            result.append(RequestMirror(destination: destination(mirror.destination),
                                        perMillion: mirror.percentage != nil ? FaultInjection.perMillion(mirror.percentage) : 1_000_000))
        }
        return result.filter { $0.perMillion > 0 }
    }

    static func action(of http: VirtualService.HTTPRoute) -> HTTPRuleAction {
        if let redirect = http.redirect {
            var action = HTTPRedirectAction()
            action.path = redirect.uri
            action.authority = redirect.authority
            action.port = redirect.port
            action.portFromRequest = redirect.derivePort == "FROM_REQUEST_PORT"
            action.protocolDefaultPort = redirect.derivePort == "FROM_PROTOCOL_DEFAULT"
            action.scheme = redirect.scheme?.lowercased()
            // Istio's ApplyRedirect: 0 and 301 are 301; the loader warned about unsupported codes.
            if let code = redirect.redirectCode, [302, 303, 307, 308].contains(code) { action.code = code }
            return .redirect(action)
        }
        if let direct = http.directResponse { return .directResponse(status: direct.status, body: direct.bodyBytes) }
        return .route
    }

    static func rewrite(_ rewrite: VirtualService.HTTPRewrite) -> HTTPRewriteAction? {
        var action = HTTPRewriteAction()
        action.uri = rewrite.uri
        action.authority = rewrite.authority
        if let regex = rewrite.uriRegexRewrite, let match = regex.match {
            // The loader checked the pattern already.
            action.regex = try? HTTPRewriteAction.RegexRewrite(pattern: match, rewrite: regex.rewrite ?? "")
        }
        return action == HTTPRewriteAction() ? nil : action
    }

    /// A rule's destinations, HTTP or TCP: one destination's weight is ignored; with several,
    /// missing weights are 0 and weight-0 destinations are dropped (route.go
    /// applyHTTPRouteDestination). TCP destinations have no header operations.
    static func destinations(_ all: [VirtualService.HTTPRouteDestination], namespace: String) -> [HTTPDestination] {
        all.compactMap { route -> HTTPDestination? in
            let weight = all.count == 1 ? 100 : (route.weight ?? 0)
            guard weight > 0 else { return nil }
            var destination = HTTPDestination(host: fullName(route.destination.host, namespace: namespace),
                                              port: route.destination.port?.number, subset: route.destination.subset, weight: weight)
            destination.requestHeaders = operations(route.headers?.request)
            destination.responseHeaders = operations(route.headers?.response)
            return destination
        }
    }

    /// `IsCatchAllRoute`: prefix `/` (or regex `.*`) and no other condition.
    static func isCatchAll(_ match: RequestMatch) -> Bool {
        var rest = match
        rest.uri = nil; rest.name = nil
        guard rest == RequestMatch() else { return false }
        switch match.uri {
        case nil: return true
        case .prefix("/", _)?: return true
        case .regex(let regex)?: return regex.pattern == ".*"
        default: return false
        }
    }

    static func compile(_ match: VirtualService.HTTPMatchRequest) -> RequestMatch {
        var result = RequestMatch()
        result.name = match.name
        let ignoreCase = match.ignoreUriCase ?? false
        result.uri = match.uri.map { matcher($0, ignoreCase: ignoreCase) }
        result.scheme = match.scheme.map { matcher($0) }
        result.method = match.method.map { matcher($0) }
        result.authority = match.authority.map { matcher($0) }
        // Envoy lower-cases header names; values stay case-sensitive.
        result.headers = (match.headers ?? [:]).sorted { $0.key < $1.key }.map { ($0.key.lowercased(), matcher($0.value)) }
        result.withoutHeaders = (match.withoutHeaders ?? [:]).sorted { $0.key < $1.key }.map { ($0.key.lowercased(), matcher($0.value)) }
        result.queryParams = (match.queryParams ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, matcher($0.value)) }
        result.port = match.port
        result.sourceNamespace = match.sourceNamespace
        return result
    }

    static func matcher(_ match: VirtualService.StringMatch, ignoreCase: Bool = false) -> StringMatcher {
        if let exact = match.exact { return .exact(exact, ignoreCase: ignoreCase) }
        if let prefix = match.prefix { return .prefix(prefix, ignoreCase: ignoreCase) }
        // Istio: regex "*" means present; Envoy ignores ignoreUriCase for regex.
        if let regex = match.regex {
            if regex == "*" { return .present }
            // The loader has compiled it already (RE2Syntax); a pattern that failed never loads.
            if let compiled = try? FullMatchRegex(regex) { return .regex(compiled) }
        }
        return .present
    }

    static func operations(_ operations: VirtualService.Headers.Operations?) -> HeaderOperations {
        var result = HeaderOperations()
        guard let operations else { return result }
        result.set = (operations.set ?? [:]).sorted { $0.key < $1.key }.map { ($0.key.lowercased(), $0.value) }
        result.add = (operations.add ?? [:]).sorted { $0.key < $1.key }.map { ($0.key.lowercased(), $0.value) }
        result.remove = (operations.remove ?? []).map { $0.lowercased() }
        return result
    }
}
