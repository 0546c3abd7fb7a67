import Foundation
import NIOHTTP1

/// What an authorization decision is judged on: one HTTP request, or one TCP connection
/// (`http` nil). The principal is the *original* client's: at a peer gateway, the one the entry
/// gateway verified and carried in `x-forwarded-client-cert`.
package struct AuthorizationRequest: Sendable {
    /// `spiffe://…`; nil for a client without a certificate.
    package var principal: String?
    /// The connection's peer (Envoy's `direct_remote_ip`).
    package var sourceIP: String
    /// The original client (`remote_ip`: the first `x-forwarded-for` hop, else the peer).
    package var remoteIP: String
    package var destinationIP: String
    /// The port the gateway accepted on: `ports` and `destination.port` for a policy that
    /// selected the gateway, as at an Istio gateway.
    package var listenerPort: Int
    /// The destination service's port: the same for a policy that selected the service, as at
    /// the service's own sidecar.
    package var servicePort: Int
    package var serverName: String
    package var http: HTTP?
    /// What a verified JWT says (RequestAuthentication); nil: no token.
    package var requestPrincipal: RequestPrincipal?

    package struct HTTP: Sendable {
        /// `:authority`.
        package var host: String
        package var method: String
        /// The path as policies see it: normalized (Istio's default `BASE`), without the query.
        package var path: String
        package var headers: HTTPHeaders

        package init(host: String, method: String, path: String, headers: HTTPHeaders) {
            self.host = host; self.method = method; self.path = AuthorizationEngine.normalized(path); self.headers = headers
        }
    }

    package init(principal: String?, sourceIP: String, remoteIP: String? = nil, destinationIP: String, listenerPort: Int, servicePort: Int,
                 serverName: String, http: HTTP? = nil) {
        self.principal = principal; self.sourceIP = sourceIP; self.remoteIP = remoteIP ?? sourceIP
        self.destinationIP = destinationIP; self.listenerPort = listenerPort; self.servicePort = servicePort
        self.serverName = serverName; self.http = http
    }
}

/// Istio's authorization at one gateway (builder.go `build`, Envoy's RBAC filters): the
/// policies that apply — selecting this gateway by its labels, or the destination service by
/// its workloads' labels, or a whole namespace, or the mesh from the root namespace — decided in
/// Istio's order: CUSTOM, then DENY, then ALLOW (no ALLOW policy: allowed; else one ALLOW rule must
/// match); AUDIT only logs; `istio.io/dry-run` policies are decided and logged, never enforced.
/// Pure: compiled once per configuration, asked per request or connection.
package struct AuthorizationEngine: Sendable, Equatable {
    /// One policy, compiled.
    package struct Policy: Sendable, Equatable {
        /// Envoy's policy name, `ns[<ns>]-policy[<name>]-rule[<i>]` without the rule part.
        package var name: String
        package var action: AuthorizationPolicy.Action
        package var dryRun: Bool
        package var rules: [AuthorizationPolicy.Rule]
        package var namespace: String
        /// Workload labels it selects; nil: every workload of its namespace (the mesh's from the root).
        package var selector: [String: String]?
        /// Applies because it selected the gateway (its labels, or its namespace): ports are the
        /// gateway's listener port. Set by `applicable`.
        package var atGateway = false
    }

    package var policies: [Policy]
    /// Istio's root namespace: a policy there without a selector applies to the whole mesh.
    package var rootNamespace: String

    package init(policies: [AuthorizationPolicy] = [], rootNamespace: String = "istio-system") {
        self.rootNamespace = rootNamespace
        self.policies = policies.map { policy in
            Policy(name: "ns[\(policy.namespace)]-policy[\(policy.name)]", action: policy.action ?? .allow, dryRun: policy.dryRun,
                   rules: policy.rules ?? [], namespace: policy.namespace, selector: policy.selector?.matchLabels.flatMap { $0.isEmpty ? nil : $0 })
        }
    }

    package var isEmpty: Bool { policies.isEmpty }

    /// The policies for traffic through a gateway with `gatewayLabels` in `gatewayNamespace` to a
    /// service in `serviceNamespace` whose workloads carry `serviceLabels` (one set per endpoint).
    package func applicable(gatewayLabels: [String: String], gatewayNamespace: String, serviceNamespace: String?,
                            serviceLabels: [[String: String]]) -> [Policy] {
        policies.compactMap { policy in
            var applying = policy
            switch PolicyScope.match(namespace: policy.namespace, selector: policy.selector, gatewayLabels: gatewayLabels, gatewayNamespace: gatewayNamespace,
                                     serviceNamespace: serviceNamespace, serviceLabels: serviceLabels, root: rootNamespace) {
            case nil: return nil
            case .gateway: applying.atGateway = true
            case .service: applying.atGateway = false
            }
            return applying
        }
    }

    package struct Decision: Sendable, Equatable {
        /// Nil: allowed. Else the DENY (or CUSTOM) policy that matched, or `none` when no ALLOW did.
        package var deniedBy: String?
        /// AUDIT policies that matched.
        package var audited: [String] = []
        /// What the dry-run policies would have done: `name: allowed|denied`.
        package var shadow: [String] = []

        package var allowed: Bool { deniedBy == nil }

        /// Envoy's `%RESPONSE_CODE_DETAILS%` for a denial.
        package var responseDetails: String { "rbac_access_denied_matched_policy[\(deniedBy ?? "none")]" }
    }

    /// Decides `request` under `policies` (from `applicable`).
    package static func decide(_ request: AuthorizationRequest, policies: [Policy]) -> Decision {
        var decision = Decision()
        if policies.isEmpty { return decision }
        // Mostly no dry-run policy: the list as it is, no copy.
        let anyDryRun = policies.contains(where: \.dryRun)
        decision.deniedBy = verdict(request, anyDryRun ? policies.filter { !$0.dryRun } : policies)
        for policy in policies where policy.action == .audit && !policy.dryRun {
            if let rule = matchedRule(policy, request) { decision.audited.append("\(policy.name)-rule[\(rule)]") }
        }
        if anyDryRun {
            let shadows = policies.filter(\.dryRun)
            let denied = verdict(request, shadows)
            decision.shadow = shadows.map { "\($0.name): \(denied == nil ? "allowed" : "denied")" }
        }
        return decision
    }

    /// Nil when allowed; else the denying policy's rule name (or `none`).
    private static func verdict(_ request: AuthorizationRequest, _ policies: [Policy]) -> String? {
        // CUSTOM needs an ext-authz provider EastWest does not have: a matching request is
        // refused (closed, not open); the loader warned about it.
        for policy in policies where policy.action == .custom || policy.action == .deny {
            if let rule = matchedRule(policy, request) { return "\(policy.name)-rule[\(rule)]" }
        }
        var anyAllow = false
        for policy in policies where policy.action == .allow {
            anyAllow = true
            if matchedRule(policy, request) != nil { return nil }
        }
        return anyAllow ? "none" : nil
    }

    /// The index of the first rule of `policy` that holds for `request`.
    static func matchedRule(_ policy: Policy, _ request: AuthorizationRequest) -> Int? {
        policy.rules.indices.first { holds(policy.rules[$0], of: policy, request) }
    }

    /// One rule: any `from`, and any `to`, and every `when`. On a TCP connection an HTTP-only
    /// attribute drops an ALLOW rule (narrower) but only itself from a DENY or AUDIT rule
    /// (wider), as istiod's `checkError` does.
    static func holds(_ rule: AuthorizationPolicy.Rule, of policy: Policy, _ request: AuthorizationRequest) -> Bool {
        let tcp = request.http == nil
        if tcp, policy.action == .allow, usesHTTPOnly(rule) { return false }
        let port = policy.atGateway ? request.listenerPort : request.servicePort
        if let from = rule.from, !from.contains(where: { $0.source.map { matches($0, namespace: policy.namespace, request) } ?? true }) { return false }
        if let to = rule.to, !to.contains(where: { $0.operation.map { matches($0, port: port, request) } ?? true }) { return false }
        for condition in rule.when ?? [] where !matches(condition, port: port, request) { return false }
        return true
    }

    static func usesHTTPOnly(_ rule: AuthorizationPolicy.Rule) -> Bool {
        let sources = (rule.from ?? []).compactMap(\.source)
        let operations = (rule.to ?? []).compactMap(\.operation)
        return sources.contains { $0.requestPrincipals != nil || $0.notRequestPrincipals != nil }
            || operations.contains { $0.hosts != nil || $0.notHosts != nil || $0.methods != nil || $0.notMethods != nil || $0.paths != nil || $0.notPaths != nil }
            || (rule.when ?? []).contains { isHTTPOnly($0.key) }
    }

    static func isHTTPOnly(_ key: String) -> Bool { key.hasPrefix("request.headers[") || key.hasPrefix("request.auth.") }

    /// A field's `values` (any holds) and `notValues` (none holds); absent: no condition. On
    /// TCP an HTTP-only field is no condition (reached only for DENY and AUDIT rules).
    private static func check(_ values: [String]?, _ notValues: [String]?, httpOnly: Bool = false, _ request: AuthorizationRequest,
                              _ holds: (String) -> Bool) -> Bool {
        if httpOnly, request.http == nil { return true }
        if let values, !values.contains(where: holds) { return false }
        if let notValues, notValues.contains(where: holds) { return false }
        return true
    }

    static func matches(_ source: AuthorizationPolicy.Source, namespace: String, _ request: AuthorizationRequest) -> Bool {
        let principal = request.principal
        // A principal is written without `spiffe://` and matched with it (`*x`: any ID ending so).
        return check(source.principals, source.notPrincipals, request) { pattern in
            guard let principal else { return false }
            if pattern.hasPrefix("*") { return glob(pattern, principal) }
            return principal.hasPrefix("spiffe://") && glob(pattern, principal.dropFirst("spiffe://".count))
        }
            // `iss/sub`, split at the last `/`, each side matched on its own; `*` needs both.
            && check(source.requestPrincipals, source.notRequestPrincipals, httpOnly: true, request) { pattern in
                guard let token = request.requestPrincipal else { return false }
                if pattern == "*" { return !token.issuer.isEmpty && !token.subject.isEmpty }
                guard let slash = pattern.lastIndex(of: "/") else { return false }
                return glob(pattern[..<slash], token.issuer) && glob(pattern[pattern.index(after: slash)...], token.subject)
            }
            && check(source.namespaces, source.notNamespaces, request) { pattern in SpiffeParts(principal).map { glob(pattern, $0.namespace) } ?? false }
            && check(source.serviceAccounts, source.notServiceAccounts, request) { account in
                guard let parts = SpiffeParts(principal) else { return false }
                let split = account.split(separator: "/", maxSplits: 1).map(String.init)
                return split.count == 2 ? (parts.namespace == split[0] && parts.serviceAccount == split[1])
                    : (parts.namespace == namespace && parts.serviceAccount == account)
            }
            && check(source.ipBlocks, source.notIpBlocks, request) { IPBlock($0)?.contains(request.sourceIP) ?? false }
            && check(source.remoteIpBlocks, source.notRemoteIpBlocks, request) { IPBlock($0)?.contains(request.remoteIP) ?? false }
    }

    static func matches(_ operation: AuthorizationPolicy.Operation, port: Int, _ request: AuthorizationRequest) -> Bool {
        let http = request.http
        return check(operation.hosts, operation.notHosts, httpOnly: true, request) { glob($0.lowercased(), http?.host.lowercased() ?? "") }
            && check(operation.methods, operation.notMethods, httpOnly: true, request) { glob($0, http?.method ?? "") }
            && check(operation.paths, operation.notPaths, httpOnly: true, request) { pathMatches($0, http?.path ?? "") }
            && check(operation.ports, operation.notPorts, request) { $0 == String(port) }
    }

    static func matches(_ condition: AuthorizationPolicy.Condition, port: Int, _ request: AuthorizationRequest) -> Bool {
        let key = condition.key
        if request.http == nil, isHTTPOnly(key) { return true }
        let value: (String) -> Bool
        switch key {
        case "source.ip": value = { IPBlock($0)?.contains(request.sourceIP) ?? false }
        case "remote.ip": value = { IPBlock($0)?.contains(request.remoteIP) ?? false }
        case "destination.ip": value = { IPBlock($0)?.contains(request.destinationIP) ?? false }
        case "destination.port": value = { $0 == String(port) }
        case "connection.sni": value = { glob($0, request.serverName) }
        case "source.principal": value = { pattern in request.principal.map { glob(pattern, String($0.dropFirst("spiffe://".count))) } ?? false }
        case "source.namespace": value = { pattern in SpiffeParts(request.principal).map { glob(pattern, $0.namespace) } ?? false }
        case "source.serviceAccount":
            value = { pattern in SpiffeParts(request.principal).map { glob(pattern, "\($0.namespace)/\($0.serviceAccount)") } ?? false }
        case "source.trustDomain": value = { pattern in SpiffeParts(request.principal).map { glob(pattern, $0.trustDomain) } ?? false }
        case _ where key.hasPrefix("request.headers[") && key.hasSuffix("]"):
            let name = String(key.dropFirst("request.headers[".count).dropLast())
            let joined = request.http?.headers[name].joined(separator: ",")
            value = { pattern in joined.map { glob(pattern, $0) } ?? false }
        case "request.auth.principal": value = { pattern in request.requestPrincipal.map { glob(pattern, $0.principal) } ?? false }
        case "request.auth.audiences": value = { pattern in request.requestPrincipal?.claims["aud"]?.strings.contains { glob(pattern, $0) } ?? false }
        case "request.auth.presenter": value = { pattern in request.requestPrincipal?.claims["azp"]?.strings.contains { glob(pattern, $0) } ?? false }
        case _ where key.hasPrefix("request.auth.claims[") && key.hasSuffix("]"):
            // `[a][b]`: nested claims; a list claim holds when any of its strings does.
            let path = key.dropFirst("request.auth.claims[".count).dropLast().components(separatedBy: "][")
            let claim = request.requestPrincipal.flatMap { JWTAuthenticator.claim(path, in: $0.claims) }?.strings ?? []
            value = { pattern in claim.contains { glob(pattern, $0) } }
        default:
            // Filter metadata and keys EastWest does not know: nothing holds.
            value = { _ in false }
        }
        return check(condition.values, condition.notValues, request, value)
    }

    /// Istio's string match: `*` any non-empty value, `x*` a prefix, `*x` a suffix, else exact.
    static func glob(_ pattern: some StringProtocol, _ value: some StringProtocol) -> Bool {
        if pattern == "*" { return !value.isEmpty }
        if pattern.hasSuffix("*") { return value.hasPrefix(pattern.dropLast()) }
        if pattern.hasPrefix("*") { return value.hasSuffix(pattern.dropFirst()) }
        return pattern == value
    }

    /// `paths`: the string match, or an Envoy URI template when the pattern has `{*}` (one
    /// segment) or `{**}` (any number, last only).
    static func pathMatches(_ pattern: String, _ path: String) -> Bool {
        guard pattern.contains("{*") else { return glob(pattern, path) }
        let parts = pattern.split(separator: "/", omittingEmptySubsequences: false)
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        for (index, part) in parts.enumerated() {
            if part == "{**}" { return index == parts.count - 1 && segments.count >= index }
            guard index < segments.count else { return false }
            if part == "{*}" { if segments[index].isEmpty { return false }; continue }
            if part != segments[index] { return false }
        }
        return parts.count == segments.count
    }

    /// Istio's default path normalization (`BASE`: Envoy's `normalize_path`) as policies see
    /// the path: the query gone, `\` as `/`, `.` and `..` segments resolved, unreserved
    /// characters percent-decoded.
    package static func normalized(_ raw: String) -> String {
        let path = raw.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? raw
        guard path.contains(where: { $0 == "." || $0 == "\\" || $0 == "%" }) else { return path }
        var decoded = ""
        var bytes = Array(path.replacingOccurrences(of: "\\", with: "/").utf8)[...]
        while let byte = bytes.popFirst() {
            if byte == UInt8(ascii: "%"), bytes.count >= 2, let value = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16),
               (value >= 0x41 && value <= 0x5A) || (value >= 0x61 && value <= 0x7A) || (value >= 0x30 && value <= 0x39) || [0x2D, 0x2E, 0x5F, 0x7E].contains(value) {
                decoded.append(Character(UnicodeScalar(value)))
                bytes = bytes.dropFirst(2)
            } else {
                decoded.append(Character(UnicodeScalar(byte)))
            }
        }
        var output: [Substring] = []
        for segment in decoded.split(separator: "/", omittingEmptySubsequences: false).dropFirst() {
            switch segment {
            case ".": continue
            case "..": _ = output.popLast()
            default: output.append(segment)
            }
        }
        let last = decoded.split(separator: "/", omittingEmptySubsequences: false).last
        return "/" + output.joined(separator: "/") + (last == "." || last == ".." ? (output.isEmpty ? "" : "/") : "")
    }
}

/// The trust domain, namespace and service account of a SPIFFE ID `spiffe://td/ns/N/sa/S`.
struct SpiffeParts {
    var trustDomain: String
    var namespace: String
    var serviceAccount: String

    init?(_ principal: String?) {
        guard let principal, principal.hasPrefix("spiffe://") else { return nil }
        let parts = principal.dropFirst("spiffe://".count).split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 5, parts[1] == "ns", parts[3] == "sa" else { return nil }
        trustDomain = String(parts[0]); namespace = String(parts[2]); serviceAccount = String(parts[4])
    }
}

/// An `ipBlocks` entry: an address or a CIDR range, IPv4 or IPv6.
struct IPBlock {
    private var network: [UInt8]
    private var prefix: Int

    init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1)
        guard let address = parts.first.flatMap({ Self.bytes(String($0)) }) else { return nil }
        network = address
        prefix = parts.count == 2 ? (Int(parts[1]) ?? -1) : address.count * 8
        guard (0...(address.count * 8)).contains(prefix) else { return nil }
    }

    func contains(_ text: String) -> Bool {
        guard let address = Self.bytes(text), address.count == network.count else { return false }
        var bits = prefix
        for (a, b) in zip(address, network) where bits > 0 {
            let mask: UInt8 = bits >= 8 ? 0xFF : ~(0xFF >> UInt8(bits))
            if a & mask != b & mask { return false }
            bits -= 8
        }
        return true
    }

    static func bytes(_ text: String) -> [UInt8]? {
        if text.contains(":") {
            var storage = in6_addr()
            return inet_pton(AF_INET6, text, &storage) == 1 ? withUnsafeBytes(of: storage) { Array($0) } : nil
        }
        var storage = in_addr()
        return inet_pton(AF_INET, text, &storage) == 1 ? withUnsafeBytes(of: storage) { Array($0) } : nil
    }
}

extension RouteConfiguration {
    /// The AuthorizationPolicies for traffic through this gateway to `service` (its workloads'
    /// labels are its endpoints' anywhere in the mesh); empty when none applies.
    package func authorizationPolicies(for service: ServiceKey, endpoints: MeshEndpoints) -> [AuthorizationEngine.Policy] {
        guard !authorization.isEmpty else { return [] }
        let (namespace, labels) = Self.workloads(of: service, endpoints: endpoints)
        return authorization.applicable(gatewayLabels: gatewayLabels, gatewayNamespace: gatewayNamespace, serviceNamespace: namespace, serviceLabels: labels)
    }

    /// The JWT rules of the RequestAuthentications for traffic to `service`; nil when none applies.
    package func requestAuthenticator(for service: ServiceKey, endpoints: MeshEndpoints) -> JWTAuthenticator? {
        guard !requestAuthentications.isEmpty else { return nil }
        let (namespace, labels) = Self.workloads(of: service, endpoints: endpoints)
        let applying = requestAuthentications.filter { policy in
            PolicyScope.match(namespace: policy.namespace, selector: policy.selector?.matchLabels, gatewayLabels: gatewayLabels,
                              gatewayNamespace: gatewayNamespace, serviceNamespace: namespace, serviceLabels: labels) != nil
                && policy.targetRef == nil && policy.targetRefs == nil
        }
        let authenticator = JWTAuthenticator(applying, remote: remoteJWKS, verified: verifiedTokens)
        return authenticator.isEmpty ? nil : authenticator
    }

    /// A service's namespace (from its host name) and its endpoints' labels anywhere in the mesh.
    static func workloads(of service: ServiceKey, endpoints: MeshEndpoints) -> (namespace: String?, labels: [[String: String]]) {
        let labels = endpoints.clusters.values.flatMap { ($0.services[service] ?? []).map { $0.labels ?? [:] } }
        let parts = service.host.split(separator: ".")
        return (parts.count > 1 ? String(parts[1]) : nil, labels)
    }
}

/// Which workloads a security policy (AuthorizationPolicy, RequestAuthentication) covers, seen
/// from a gateway: its selector against the gateway's labels or the destination service's
/// workloads' labels, in the policy's namespace or from the root namespace; without a selector,
/// every workload of its namespace (the mesh's from the root).
package enum PolicyScope {
    package enum Match { case gateway, service }

    package static func match(namespace: String, selector: [String: String]?, gatewayLabels: [String: String], gatewayNamespace: String,
                              serviceNamespace: String?, serviceLabels: [[String: String]], root: String = "istio-system") -> Match? {
        let inScope = { (other: String?) in namespace == root || namespace == other }
        guard let selector, !selector.isEmpty else {
            if namespace == gatewayNamespace, namespace != root { return .gateway }
            return namespace == root || namespace == serviceNamespace ? .service : nil
        }
        if inScope(gatewayNamespace), selector.selects(gatewayLabels) { return .gateway }
        return inScope(serviceNamespace) && serviceLabels.contains { selector.selects($0) } ? .service : nil
    }
}
