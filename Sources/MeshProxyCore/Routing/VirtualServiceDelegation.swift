/// VirtualService delegation as istiod merges it (pilot/pkg/model/virtualservice.go,
/// `mergeVirtualServicesIfNeeded`): a VirtualService without hosts is a delegate; a root's
/// `http` rule with `delegate: {name, namespace}` is replaced by the delegate's rules, each
/// with its matches merged into the root rule's (a delegate match must fit inside a root match,
/// else that pair is dropped) and the root rule's rewrite, timeout, retries, fault, mirror and
/// headers where the delegate rule sets none. Delegates are never routes of their own. One level
/// only, as in Istio.
package enum VirtualServiceDelegation {
    /// The VirtualServices as routes are compiled from them: roots merged, delegates gone,
    /// with each merged rule's origin naming the delegate rule it came from.
    static func merge(_ services: [VirtualService], origins: [[String]]) -> (services: [VirtualService], origins: [[String]]) {
        let result = resolve(services, origins: origins)
        return (result.services, result.origins)
    }

    /// What the merge leaves out, for `eastwest validate` and the gateway's log (Istio drops
    /// these silently, at debug level).
    package static func warnings(_ services: [VirtualService], origins: [[String]]) -> [String] {
        resolve(services, origins: origins).warnings
    }

    private static func resolve(_ services: [VirtualService], origins: [[String]]) -> (services: [VirtualService], origins: [[String]], warnings: [String]) {
        var delegates: [String: (service: VirtualService, origins: [String])] = [:]
        for (index, service) in services.enumerated() where (service.hosts ?? []).isEmpty {
            delegates["\(service.namespace)/\(service.name)"] = (service, index < origins.count ? origins[index] : [])
        }
        var merged: [VirtualService] = [], mergedOrigins: [[String]] = [], warnings: [String] = []
        for (index, root) in services.enumerated() where !(root.hosts ?? []).isEmpty {
            let rootOrigins = index < origins.count ? origins[index] : []
            guard (root.http ?? []).contains(where: { $0.delegate != nil }) else {
                merged.append(root)
                mergedOrigins.append(rootOrigins)
                continue
            }
            var rules: [VirtualService.HTTPRoute] = [], ruleOrigins: [String] = []
            for (i, rule) in (root.http ?? []).enumerated() {
                let here = "VirtualService \(root.namespace)/\(root.name) http[\(i)]" + (i < rootOrigins.count ? " (\(rootOrigins[i]))" : "")
                guard let delegate = rule.delegate else {
                    rules.append(rule)
                    ruleOrigins.append(i < rootOrigins.count ? rootOrigins[i] : "")
                    continue
                }
                let key = "\(delegate.namespace ?? root.namespace)/\(delegate.name)"
                guard let (leaf, leafOrigins) = delegates[key] else {
                    warnings.append("\(here): delegates to VirtualService \(key), which is not loaded (or has hosts): the rule is left out, as Istio does")
                    continue
                }
                guard visible(leaf, to: root.namespace) else {
                    warnings.append("\(here): delegate VirtualService \(key) is not exported to namespace \(root.namespace): the rule is left out, as Istio does")
                    continue
                }
                for (j, leafRule) in (leaf.http ?? []).enumerated() {
                    let from = "delegate \(key) http[\(j)]" + (j < leafOrigins.count ? ", \(leafOrigins[j])" : "")
                    guard let combined = mergeRule(root: rule, delegate: leafRule, delegateNamespace: leaf.namespace, rootNamespace: root.namespace) else {
                        warnings.append("\(here): \(from) matches nothing the root rule matches: left out, as Istio does")
                        continue
                    }
                    rules.append(combined)
                    ruleOrigins.append(from)
                }
            }
            var service = root
            service.http = rules
            merged.append(service)
            mergedOrigins.append(ruleOrigins)
        }
        return (merged, mergedOrigins, warnings)
    }

    /// Istio's exportTo for a delegate: unset or `*` is everywhere, `.` its own namespace.
    private static func visible(_ delegate: VirtualService, to namespace: String) -> Bool {
        guard let exportTo = delegate.exportTo, !exportTo.isEmpty else { return true }
        return exportTo.contains("*") || exportTo.contains(namespace) || (exportTo.contains(".") && delegate.namespace == namespace)
    }

    /// `mergeHTTPRoute`: nil when the delegate rule's matches conflict with the root's.
    static func mergeRule(root: VirtualService.HTTPRoute, delegate: VirtualService.HTTPRoute,
                          delegateNamespace: String, rootNamespace: String) -> VirtualService.HTTPRoute? {
        guard let matches = mergeMatches(root: root.match ?? [], delegate: delegate.match ?? []) else { return nil }
        var out = delegate
        out.match = matches.isEmpty ? nil : matches
        out.delegate = nil
        if let rootName = root.name, !rootName.isEmpty { out.name = (out.name ?? "").isEmpty ? rootName : "\(rootName)-\(out.name!)" }
        // The delegate's short hosts are its namespace's; the root's inherited mirror is the root's.
        out.route = out.route?.map { qualified($0, namespace: delegateNamespace) }
        if out.mirror == nil { out.mirror = root.mirror.map { qualified($0, namespace: rootNamespace) } } else { out.mirror = out.mirror.map { qualified($0, namespace: delegateNamespace) } }
        out.mirrors = out.mirrors?.map { var mirror = $0; mirror.destination = qualified(mirror.destination, namespace: delegateNamespace); return mirror }
        if out.rewrite == nil { out.rewrite = root.rewrite }
        if out.timeout == nil { out.timeout = root.timeout }
        if out.retries == nil { out.retries = root.retries }
        if out.fault == nil { out.fault = root.fault }
        if out.mirrorPercent == nil { out.mirrorPercent = root.mirrorPercent }
        if out.mirrorPercentage == nil { out.mirrorPercentage = root.mirrorPercentage }
        if out.headers == nil { out.headers = root.headers }
        return out
    }

    private static func qualified(_ destination: VirtualService.HTTPRouteDestination, namespace: String) -> VirtualService.HTTPRouteDestination {
        var destination = destination
        destination.destination = qualified(destination.destination, namespace: namespace)
        return destination
    }

    private static func qualified(_ destination: VirtualService.Destination, namespace: String) -> VirtualService.Destination {
        var destination = destination
        destination.host = VirtualServiceCompiler.fullName(destination.host, namespace: namespace)
        return destination
    }

    /// `mergeHTTPMatchRequests`: every delegate match must fit inside at least one root match;
    /// nil is a conflict.
    static func mergeMatches(root: [VirtualService.HTTPMatchRequest], delegate: [VirtualService.HTTPMatchRequest]) -> [VirtualService.HTTPMatchRequest]? {
        if root.isEmpty { return delegate }
        if delegate.isEmpty { return root }
        var out: [VirtualService.HTTPMatchRequest] = []
        for leaf in delegate {
            let fitting = root.filter { !conflict(root: $0, leaf: leaf) }
            guard !fitting.isEmpty else { return nil }
            out += fitting.map { mergeMatch(root: $0, leaf: leaf) }
        }
        return out.isEmpty ? nil : out
    }

    static func mergeMatch(root: VirtualService.HTTPMatchRequest, leaf: VirtualService.HTTPMatchRequest) -> VirtualService.HTTPMatchRequest {
        var out = leaf
        if let rootName = root.name, !rootName.isEmpty { out.name = (out.name ?? "").isEmpty ? rootName : "\(rootName)-\(out.name!)" }
        out.uri = leaf.uri ?? root.uri
        out.scheme = leaf.scheme ?? root.scheme
        out.method = leaf.method ?? root.method
        out.authority = leaf.authority ?? root.authority
        func union<Value>(_ root: [String: Value]?, _ leaf: [String: Value]?) -> [String: Value]? {
            guard root?.isEmpty == false || leaf?.isEmpty == false else { return leaf }
            return (root ?? [:]).merging(leaf ?? [:]) { _, leaf in leaf }
        }
        out.headers = union(root.headers, leaf.headers)
        out.withoutHeaders = union(root.withoutHeaders, leaf.withoutHeaders)
        out.queryParams = union(root.queryParams, leaf.queryParams)
        out.sourceLabels = union(root.sourceLabels, leaf.sourceLabels)
        if (out.port ?? 0) == 0 { out.port = root.port }
        if (out.sourceNamespace ?? "").isEmpty { out.sourceNamespace = root.sourceNamespace }
        if (out.gateways ?? []).isEmpty { out.gateways = root.gateways }
        return out
    }

    /// `hasConflict`: the leaf asks for something the root match excludes.
    static func conflict(root: VirtualService.HTTPMatchRequest, leaf: VirtualService.HTTPMatchRequest) -> Bool {
        if conflict(root.uri, leaf.uri) || conflict(root.scheme, leaf.scheme) || conflict(root.method, leaf.method) || conflict(root.authority, leaf.authority) {
            return true
        }
        for (table, rootTable) in [(leaf.headers, root.headers), (leaf.withoutHeaders, root.withoutHeaders), (leaf.queryParams, root.queryParams)] {
            for (name, value) in table ?? [:] where conflict(rootTable?[name], value) { return true }
        }
        if (root.ignoreUriCase ?? false) != (leaf.ignoreUriCase ?? false) { return true }
        if let rootPort = root.port, let leafPort = leaf.port, rootPort > 0, leafPort > 0, rootPort != leafPort { return true }
        if let namespace = root.sourceNamespace, !namespace.isEmpty, leaf.sourceNamespace != namespace { return true }
        for (key, value) in leaf.sourceLabels ?? [:] where root.sourceLabels?[key].map({ $0 != value }) ?? false { return true }
        if let rootGateways = root.gateways, let leafGateways = leaf.gateways, !rootGateways.isEmpty, !leafGateways.isEmpty {
            if rootGateways.count < leafGateways.count || !Set(leafGateways).isSubset(of: Set(rootGateways)) { return true }
        }
        return false
    }

    /// `stringMatchConflict`: a regex on either side allows nothing else on the other; an exact
    /// root takes only the same exact; a prefix root takes prefixes and exacts inside it; a root
    /// that is present-only (`{}`) takes nothing more specific.
    static func conflict(_ root: VirtualService.StringMatch?, _ leaf: VirtualService.StringMatch?) -> Bool {
        guard let root, let leaf else { return false }
        func set(_ value: String?) -> String? { value.flatMap { $0.isEmpty ? nil : $0 } }
        let (rootExact, rootPrefix, rootRegex) = (set(root.exact), set(root.prefix), set(root.regex))
        let (leafExact, leafPrefix, leafRegex) = (set(leaf.exact), set(leaf.prefix), set(leaf.regex))
        if rootRegex != nil, leafRegex != nil || leafPrefix != nil || leafExact != nil { return true }
        if leafRegex != nil, rootRegex != nil || rootPrefix != nil || rootExact != nil { return true }
        if let exact = rootExact { return leafPrefix != nil || leafExact != exact }
        if let prefix = rootPrefix {
            if let leafPrefix { return !leafPrefix.hasPrefix(prefix) }
            if let leafExact { return !leafExact.hasPrefix(prefix) }
        }
        return true
    }
}
