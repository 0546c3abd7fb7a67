import Foundation
import Yams

extension IstioPolicyLoader {
    /// Valid VirtualService fields (istio/api virtual_service.proto) EastWest does not carry out
    /// yet: they load with a warning naming them.
    static let virtualServiceNotImplemented: Set<String> = [
        "mirror_percent", "corsPolicy", "statPrefix",
    ]

    static func readVirtualService(_ spec: Node, _ map: SourceMap, _ loaded: inout Loaded) -> [ConfigError] {
        readNamed(VirtualService.self, kind: "VirtualService", notImplemented: virtualServiceNotImplemented, spec: spec, map: map, loaded: &loaded,
                  check: { check($0, map: map) }) { service, loaded in
            loaded.virtualServices.append(service)
            loaded.virtualServiceOrigins.append((service.http ?? []).indices.map { index in
                "\(map.file):\(map.mark(of: FieldPath().key("spec").key("http").index(index))?.line ?? 0)"
            })
        }
    }

    /// What Istio's validation (pkg/config/validation/virtualservice.go) rejects, and what it
    /// accepts but EastWest does not carry out.
    static func check(_ service: VirtualService, map: SourceMap) -> (errors: [ConfigError], warnings: [ConfigError]) {
        var errors: [ConfigError] = []
        var warnings: [ConfigError] = []
        let spec = FieldPath().key("spec")
        // Without hosts it is a delegate (istiod's validation): http rules only, none delegating again.
        let isDelegate = (service.hosts ?? []).isEmpty
        if isDelegate {
            if service.http == nil {
                errors.append(map.error(.missingField, at: spec.key("hosts"), "a VirtualService needs at least one host (one without hosts is a delegate, with 'http' rules)"))
            }
            if service.tcp != nil || service.tls != nil {
                errors.append(map.error(.invalidValue, at: spec.key(service.tcp != nil ? "tcp" : "tls"), "a delegate VirtualService (no hosts) has only 'http' rules"))
            }
            for (i, rule) in (service.http ?? []).enumerated() where rule.delegate != nil {
                errors.append(map.error(.invalidValue, at: spec.key("http").index(i).key("delegate"), "a delegate VirtualService cannot delegate again (Istio merges one level)"))
            }
        }
        for (i, host) in (service.hosts ?? []).enumerated() where host.isEmpty || (host.contains("*") && host != "*" && !host.hasPrefix("*.")) || host.dropFirst().contains("*") {
            errors.append(map.error(.invalidValue, at: spec.key("hosts").index(i), "'\(host)' is not a host name (a wildcard is only a leading '*.')"))
        }
        if service.gateways != nil {
            warnings.append(map.error(.notImplemented, at: spec.key("gateways"), "accepted; every EastWest gateway applies the rules (a Gateway resource does not select them yet)").asWarning)
        }
        for (i, rule) in (service.tcp ?? []).enumerated() {
            let rulePath = spec.key("tcp").index(i)
            errors += checkL4Destinations(rule.route ?? [], kind: "TCP", at: rulePath, map: map)
            for (j, match) in (rule.match ?? []).enumerated() {
                checkL4Match(port: match.port, destinationSubnets: match.destinationSubnets, gateways: match.gateways,
                             at: rulePath.key("match").index(j), map: map, errors: &errors, warnings: &warnings)
            }
        }
        let hosts = (service.hosts ?? []).map { VirtualServiceCompiler.fullName($0, namespace: service.namespace) }
        for (i, rule) in (service.tls ?? []).enumerated() {
            let rulePath = spec.key("tls").index(i)
            errors += checkL4Destinations(rule.route ?? [], kind: "TLS", at: rulePath, map: map)
            let matches = rule.match ?? []
            if matches.isEmpty { errors.append(map.error(.missingField, at: rulePath.key("match"), "a TLS route needs a 'match' with 'sniHosts'")) }
            for (j, match) in matches.enumerated() {
                let path = rulePath.key("match").index(j)
                let sniHosts = match.sniHosts ?? []
                if sniHosts.isEmpty { errors.append(map.error(.missingField, at: path.key("sniHosts"), "a TLS match needs 'sniHosts'")) }
                for (k, sni) in sniHosts.enumerated() where !hosts.contains(where: { VirtualServiceCompiler.hostCovers($0, VirtualServiceCompiler.fullName(sni, namespace: service.namespace)) }) {
                    // Istio's validateSniHost: an SNI host must be one of the VirtualService's hosts.
                    errors.append(map.error(.invalidValue, at: path.key("sniHosts").index(k), "'\(sni)' is not one of the VirtualService's hosts"))
                }
                checkL4Match(port: match.port, destinationSubnets: match.destinationSubnets, gateways: match.gateways,
                             at: path, map: map, errors: &errors, warnings: &warnings)
            }
        }
        for (i, rule) in (service.http ?? []).enumerated() {
            let rulePath = spec.key("http").index(i)
            let destinations = rule.route ?? []
            errors += checkActions(rule, at: rulePath, map: map, warnings: &warnings)
            errors += checkRetries(rule.retries, at: rulePath.key("retries"), map: map)
            errors += checkFault(rule.fault, at: rulePath.key("fault"), map: map)
            errors += checkMirrors(rule, at: rulePath, map: map)
            errors += checkDestinations(destinations, at: rulePath, map: map)
            for (j, match) in (rule.match ?? []).enumerated() {
                let path = rulePath.key("match").index(j)
                let strings: [(String, VirtualService.StringMatch?)] = [("uri", match.uri), ("scheme", match.scheme), ("method", match.method), ("authority", match.authority)]
                for (field, value) in strings {
                    if let value { errors += checkStringMatch(value, allowEmptyPrefix: field == "uri", at: path.key(field), map: map) }
                }
                for (field, table) in [("headers", match.headers), ("withoutHeaders", match.withoutHeaders), ("queryParams", match.queryParams)] {
                    for (name, value) in (table ?? [:]).sorted(by: { $0.key < $1.key }) {
                        if name.isEmpty { errors.append(map.error(.invalidValue, at: path.key(field), "a header name must not be empty")) }
                        errors += checkStringMatch(value, allowEmptyPrefix: false, at: path.key(field).key(name), map: map)
                    }
                }
                if match.gateways != nil {
                    warnings.append(map.error(.notImplemented, at: path.key("gateways"), "accepted; not used to select gateways yet").asWarning)
                }
            }
        }
        return (errors, warnings)
    }

    /// Istio's `validateHTTPRouteDestinations` (and its TCP twin): hosts, ports, weights.
    static func checkDestinations(_ destinations: [VirtualService.HTTPRouteDestination], at rulePath: FieldPath, map: SourceMap) -> [ConfigError] {
        var errors: [ConfigError] = []
        for (j, destination) in destinations.enumerated() {
            let path = rulePath.key("route").index(j)
            if destination.destination.host.isEmpty { errors.append(map.error(.missingField, at: path.key("destination").key("host"), "must not be empty")) }
            if let weight = destination.weight, weight < 0 { errors.append(map.error(.invalidValue, at: path.key("weight"), "weight must not be negative")) }
            if let port = destination.destination.port?.number, !(1...65_535).contains(port) {
                errors.append(map.error(.invalidValue, at: path.key("destination").key("port").key("number"), "port must be 1-65535"))
            }
            errors += checkHeaders(destination.headers, at: path.key("headers"), map: map)
        }
        if destinations.count > 1 {
            let weights = destinations.compactMap(\.weight)
            if weights.isEmpty {
                errors.append(map.error(.invalidValue, at: rulePath.key("route"), "several destinations need weights (Istio rejects them all missing)"))
            } else if weights.reduce(0, +) == 0 {
                errors.append(map.error(.invalidValue, at: rulePath.key("route"), "the weights of several destinations must not sum to 0"))
            }
        }
        return errors
    }

    /// A `tcp:` or `tls:` rule's destinations: at least one, valid, and no headers (Istio's L4
    /// RouteDestination has `destination` and `weight` only; istiod rejects the rest).
    static func checkL4Destinations(_ destinations: [VirtualService.HTTPRouteDestination], kind: String, at rulePath: FieldPath, map: SourceMap) -> [ConfigError] {
        var errors: [ConfigError] = []
        if destinations.isEmpty { errors.append(map.error(.missingField, at: rulePath.key("route"), "a \(kind) route needs a 'route'")) }
        errors += checkDestinations(destinations, at: rulePath, map: map)
        for (k, destination) in destinations.enumerated() where destination.headers != nil {
            errors.append(map.error(.invalidValue, at: rulePath.key("route").index(k).key("headers"), "a \(kind.lowercased()) route's destination has no 'headers' (bytes carry none)"))
        }
        return errors
    }

    static func checkL4Match(port: Int?, destinationSubnets: [String]?, gateways: [String]?, at path: FieldPath, map: SourceMap,
                             errors: inout [ConfigError], warnings: inout [ConfigError]) {
        if let port, !(1...65_535).contains(port) { errors.append(map.error(.invalidValue, at: path.key("port"), "port must be 1-65535")) }
        for field in [("destinationSubnets", destinationSubnets != nil), ("gateways", gateways != nil)] where field.1 {
            warnings.append(map.error(.notImplemented, at: path.key(field.0), "valid Istio field, not carried out by EastWest yet; the match ignores it").asWarning)
        }
    }

    /// Istio's ValidateHTTPHeaderName / value checks: names are tokens, values carry no line
    /// breaks or NULs. The gateway writes them as they are (it does not validate every header
    /// it sends), so nothing else may reach a request or response.
    static func checkHeaders(_ headers: VirtualService.Headers?, at path: FieldPath, map: SourceMap) -> [ConfigError] {
        var errors: [ConfigError] = []
        let token = Set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        for (side, operations) in [("request", headers?.request), ("response", headers?.response)] {
            guard let operations else { continue }
            let named = (operations.set ?? [:]).map { ("set", $0.key, $0.value) } + (operations.add ?? [:]).map { ("add", $0.key, $0.value) }
                + (operations.remove ?? []).map { ("remove", $0, "") }
            for (operation, name, value) in named.sorted(by: { ($0.0, $0.1) < ($1.0, $1.1) }) {
                let at = operation == "remove" ? path.key(side).key(operation) : path.key(side).key(operation).key(name)
                if name.isEmpty || !name.utf8.allSatisfy(token.contains) {
                    errors.append(map.error(.invalidValue, at: at, "'\(name)' is not a valid header name"))
                }
                if value.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0 }) {
                    errors.append(map.error(.invalidValue, at: at, "a header value must not contain a line break or NUL"))
                }
            }
        }
        return errors
    }

    /// Istio's `validateHTTPRetry`.
    static func checkRetries(_ retries: VirtualService.HTTPRetry?, at path: FieldPath, map: SourceMap) -> [ConfigError] {
        guard let retries else { return [] }
        var errors: [ConfigError] = []
        let attempts = retries.attempts ?? 0
        if attempts < 0 { errors.append(map.error(.invalidValue, at: path.key("attempts"), "attempts cannot be negative")) }
        if attempts == 0, retries.perTryTimeout != nil || retries.retryOn != nil || retries.retryRemoteLocalities != nil {
            errors.append(map.error(.invalidValue, at: path.key("attempts"),
                                    "perTryTimeout, retryOn and retryRemoteLocalities need attempts above 0 (0 turns retries off)"))
        }
        if let perTry = retries.perTryTimeout, perTry.duration < .milliseconds(1) {
            errors.append(map.error(.invalidValue, at: path.key("perTryTimeout"), "perTryTimeout must be at least 1ms"))
        }
        if let backoff = retries.backoff, backoff.duration < .milliseconds(1) {
            errors.append(map.error(.invalidValue, at: path.key("backoff"), "backoff must be at least 1ms"))
        }
        for token in (retries.retryOn ?? "").split(separator: ",", omittingEmptySubsequences: false) where retries.retryOn?.isEmpty == false {
            // Istio does not trim: "5xx, reset" names " reset", which is no condition.
            if RetryCondition(rawValue: String(token)) != nil { continue }
            if let code = Int(token), HTTPStatusText.known.contains(code) { continue }
            errors.append(map.error(.invalidValue, at: path.key("retryOn"),
                                    "'\(token)' is not a retry condition (one of \(RetryCondition.allCases.map(\.rawValue).joined(separator: ", ")), or an HTTP status code; no spaces)"))
        }
        return errors
    }

    /// Istio's mirror checks: `mirror` or `mirrors`, not both; shares within 0-100; a host each.
    static func checkMirrors(_ rule: VirtualService.HTTPRoute, at path: FieldPath, map: SourceMap) -> [ConfigError] {
        var errors: [ConfigError] = []
        if rule.mirror != nil, rule.mirrors != nil {
            errors.append(map.error(.invalidValue, at: path.key("mirrors"), "mirror and mirrors cannot both be set"))
        }
        if let value = rule.mirrorPercentage?.value, !(0...100).contains(value) {
            errors.append(map.error(.invalidValue, at: path.key("mirrorPercentage").key("value"), "percentage must be between 0 and 100"))
        }
        if let percent = rule.mirrorPercent, !(0...100).contains(percent) {
            errors.append(map.error(.invalidValue, at: path.key("mirrorPercent"), "mirrorPercent must be between 0 and 100"))
        }
        if rule.mirror?.host.isEmpty == true { errors.append(map.error(.missingField, at: path.key("mirror").key("host"), "must not be empty")) }
        for (i, mirror) in (rule.mirrors ?? []).enumerated() {
            if mirror.destination.host.isEmpty { errors.append(map.error(.missingField, at: path.key("mirrors").index(i).key("destination").key("host"), "must not be empty")) }
            if let value = mirror.percentage?.value, !(0...100).contains(value) {
                errors.append(map.error(.invalidValue, at: path.key("mirrors").index(i).key("percentage").key("value"), "percentage must be between 0 and 100"))
            }
        }
        return errors
    }

    /// Istio's `validateHTTPFaultInjection`.
    static func checkFault(_ fault: VirtualService.HTTPFaultInjection?, at path: FieldPath, map: SourceMap) -> [ConfigError] {
        guard let fault else { return [] }
        var errors: [ConfigError] = []
        func checkPercentage(_ percentage: VirtualService.Percent?, at path: FieldPath) {
            if let value = percentage?.value, !(0...100).contains(value) {
                errors.append(map.error(.invalidValue, at: path.key("percentage").key("value"), "percentage must be between 0 and 100"))
            }
        }
        if fault.delay == nil, fault.abort == nil {
            errors.append(map.error(.missingField, at: path, "a fault needs a delay and/or an abort"))
        }
        if let delay = fault.delay {
            let delayPath = path.key("delay")
            checkPercentage(delay.percentage, at: delayPath)
            if let percent = delay.percent, !(0...100).contains(percent) {
                errors.append(map.error(.invalidValue, at: delayPath.key("percent"), "percent must be between 0 and 100"))
            }
            if delay.exponentialDelay != nil {
                errors.append(map.error(.invalidValue, at: delayPath.key("exponentialDelay"), "exponentialDelay is not supported by Istio; use fixedDelay"))
            } else if let fixed = delay.fixedDelay {
                if fixed.duration < .milliseconds(1) { errors.append(map.error(.invalidValue, at: delayPath.key("fixedDelay"), "fixedDelay must be at least 1ms")) }
            } else {
                errors.append(map.error(.missingField, at: delayPath.key("fixedDelay"), "a delay needs fixedDelay"))
            }
        }
        if let abort = fault.abort {
            let abortPath = path.key("abort")
            checkPercentage(abort.percentage, at: abortPath)
            if abort.http2Error != nil {
                errors.append(map.error(.invalidValue, at: abortPath.key("http2Error"), "HTTP/2 abort fault injection is not supported by Istio"))
            } else if let status = abort.httpStatus {
                if !(200...600).contains(status) { errors.append(map.error(.invalidValue, at: abortPath.key("httpStatus"), "httpStatus \(status) is not in range 200-600")) }
            } else if let grpc = abort.grpcStatus {
                if FaultInjection.grpcStatusCodes[grpc] == nil {
                    errors.append(map.error(.invalidValue, at: abortPath.key("grpcStatus"), "'\(grpc)' is not a gRPC status name (such as UNAVAILABLE)"))
                }
            } else {
                errors.append(map.error(.missingField, at: abortPath, "an abort needs httpStatus or grpcStatus"))
            }
        }
        return errors
    }

    /// Istio's `validateHTTPRouteConflict` and the checks of rewrite, redirect and direct response.
    static func checkActions(_ rule: VirtualService.HTTPRoute, at rulePath: FieldPath, map: SourceMap, warnings: inout [ConfigError]) -> [ConfigError] {
        var errors: [ConfigError] = []
        errors += checkHeaders(rule.headers, at: rulePath.key("headers"), map: map)
        let hasRoute = !(rule.route ?? []).isEmpty
        if let delegate = rule.delegate {
            if hasRoute || rule.redirect != nil || rule.directResponse != nil {
                errors.append(map.error(.invalidValue, at: rulePath.key("delegate"), "a delegate cannot be combined with route, redirect or directResponse"))
            }
            if delegate.name.isEmpty { errors.append(map.error(.missingField, at: rulePath.key("delegate").key("name"), "must not be empty")) }
        } else if let redirect = rule.redirect {
            if hasRoute || rule.rewrite != nil || rule.directResponse != nil {
                errors.append(map.error(.invalidValue, at: rulePath.key("redirect"), "a redirect cannot be combined with route, rewrite or directResponse"))
            }
            if let code = redirect.redirectCode, code != 0 {
                if !(300...399).contains(code) {
                    errors.append(map.error(.invalidValue, at: rulePath.key("redirect").key("redirectCode"), "redirectCode must be a 3xx status"))
                } else if ![301, 302, 303, 307, 308].contains(code) {
                    warnings.append(map.error(.notImplemented, at: rulePath.key("redirect").key("redirectCode"),
                                              "\(code) is valid but Istio translates only 301, 302, 303, 307 and 308; EastWest answers 301").asWarning)
                }
            }
            if let scheme = redirect.scheme, !["http", "https"].contains(scheme.lowercased()) {
                errors.append(map.error(.invalidValue, at: rulePath.key("redirect").key("scheme"), "scheme must be http or https"))
            }
            if let port = redirect.port, !(1...65_535).contains(port) {
                errors.append(map.error(.invalidValue, at: rulePath.key("redirect").key("port"), "port must be 1-65535"))
            }
            if let derive = redirect.derivePort, !["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"].contains(derive) {
                errors.append(map.error(.invalidValue, at: rulePath.key("redirect").key("derivePort"), "derivePort must be FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT"))
            }
        } else if let direct = rule.directResponse {
            if hasRoute || rule.rewrite != nil {
                errors.append(map.error(.invalidValue, at: rulePath.key("directResponse"), "a directResponse cannot be combined with route or rewrite"))
            }
            if !(200...599).contains(direct.status) {
                errors.append(map.error(.invalidValue, at: rulePath.key("directResponse").key("status"), "status must be 200-599"))
            }
            if direct.body?.string != nil, direct.body?.bytes != nil {
                errors.append(map.error(.invalidValue, at: rulePath.key("directResponse").key("body"), "a body is a string or bytes, not both"))
            }
            if let bytes = direct.body?.bytes, Data(base64Encoded: bytes) == nil {
                errors.append(map.error(.invalidValue, at: rulePath.key("directResponse").key("body").key("bytes"), "bytes must be base64"))
            }
            if direct.bodyBytes.count > VirtualService.HTTPDirectResponse.bodyLimit {
                errors.append(map.error(.invalidValue, at: rulePath.key("directResponse").key("body"), "the body is over Istio's 1 MiB limit"))
            }
        } else if !hasRoute {
            errors.append(map.error(.missingField, at: rulePath.key("route"), "an HTTP route needs a 'route', a 'redirect' or a 'directResponse'"))
        }
        if let rewrite = rule.rewrite {
            if rewrite.uri != nil, rewrite.uriRegexRewrite != nil {
                errors.append(map.error(.invalidValue, at: rulePath.key("rewrite"), "rewrite takes uri or uriRegexRewrite, not both"))
            }
            if let regex = rewrite.uriRegexRewrite {
                let path = rulePath.key("rewrite").key("uriRegexRewrite")
                if let match = regex.match {
                    if let problem = RE2Syntax.problem(in: match) { errors.append(map.error(.invalidValue, at: path.key("match"), problem)) }
                } else {
                    errors.append(map.error(.missingField, at: path.key("match"), "uriRegexRewrite needs a match"))
                }
                if regex.rewrite == nil { errors.append(map.error(.missingField, at: path.key("rewrite"), "uriRegexRewrite needs a rewrite")) }
            }
        }
        return errors
    }

    static func checkStringMatch(_ match: VirtualService.StringMatch, allowEmptyPrefix: Bool, at path: FieldPath, map: SourceMap) -> [ConfigError] {
        let set = [match.exact, match.prefix, match.regex].compactMap { $0 }
        if set.count > 1 { return [map.error(.invalidValue, at: path, "a string match takes one of exact, prefix, regex")] }
        if let prefix = match.prefix, prefix.isEmpty, !allowEmptyPrefix {
            return [map.error(.invalidValue, at: path.key("prefix"), "prefix must not be empty")]
        }
        guard let regex = match.regex else { return [] }
        if let problem = RE2Syntax.problem(in: regex) { return [map.error(.invalidValue, at: path.key("regex"), problem)] }
        return []
    }
}

/// The status codes Go's `http.StatusText` names: what Istio accepts as a bare `retryOn` code.
enum HTTPStatusText {
    static let known: Set<Int> = Set([100, 101, 102, 103, 226, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 510, 511]
        + Array(200...208) + [300, 301, 302, 303, 304, 305, 307, 308] + Array(400...418) + Array(500...508))
}

/// What RE2 (Envoy's regex engine) rejects, checked where Istio checks it: at load. The data path
/// compiles the accepted pattern once, anchored to match the whole string as RE2's full match.
package enum RE2Syntax {
    package static func problem(in pattern: String) -> String? {
        if pattern.isEmpty { return "regex must not be empty" }
        if pattern.utf8.count > 1024 { return "regex is longer than 1024 characters" }
        for construct in ["(?=", "(?!", "(?<=", "(?<!"] where pattern.contains(construct) {
            return "'\(construct)' (lookaround) is not RE2 syntax; RE2 would reject '\(pattern)'"
        }
        var escaped = false
        for character in pattern {
            if escaped, character.isNumber, character != "0" { return "backreferences (\\\(character)) are not RE2 syntax; RE2 would reject '\(pattern)'" }
            escaped = !escaped && character == "\\"
        }
        do {
            _ = try FullMatchRegex(pattern)
        } catch {
            return "'\(pattern)' is not a valid regular expression"
        }
        return nil
    }
}
