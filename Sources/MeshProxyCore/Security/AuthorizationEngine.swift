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
        /// Its rules, compiled for matching (`AuthorizationRule`).
        package var rules: [AuthorizationRule]
        package var namespace: String
        /// Workload labels it selects; nil: every workload of its namespace (the mesh's from the root).
        package var selector: [String: String]?
        /// Its `targetRefs`, resolved; nil: the selector decides.
        package var targets: [PolicyTarget]?
        /// CUSTOM: the MeshConfig extension provider that decides what its rules match.
        package var provider: String?
        /// Applies because it selected the gateway (its labels, or its namespace): ports are the
        /// gateway's listener port. Set by `applicable`.
        package var atGateway = false
    }

    package var policies: [Policy]
    /// Istio's root namespace: a policy there without a selector applies to the whole mesh.
    package var rootNamespace: String

    package init(policies: [AuthorizationPolicy] = [], serviceEntries: [ServiceEntry] = [], rootNamespace: String = "istio-system") {
        self.rootNamespace = rootNamespace
        self.policies = policies.map { policy in
            Policy(name: "ns[\(policy.namespace)]-policy[\(policy.name)]", action: policy.action ?? .allow, dryRun: policy.dryRun,
                   rules: (policy.rules ?? []).map { AuthorizationRule($0, namespace: policy.namespace) }, namespace: policy.namespace, selector: policy.selector?.matchLabels.flatMap { $0.isEmpty ? nil : $0 },
                   targets: PolicyTarget.resolve(policy.targetRef, policy.targetRefs, namespace: policy.namespace, serviceEntries: serviceEntries),
                   provider: policy.action == .custom ? policy.provider?.name ?? "" : nil)
        }
    }

    package var isEmpty: Bool { policies.isEmpty }

    /// The policies for traffic through a gateway with `gatewayLabels` in `gatewayNamespace` to a
    /// service in `serviceNamespace` whose workloads carry `serviceLabels` (one set per endpoint).
    package func applicable(gatewayLabels: [String: String], gatewayNamespace: String, serviceNamespace: String?,
                            serviceLabels: [[String: String]], serviceHost: String? = nil) -> [Policy] {
        policies.compactMap { policy in
            var applying = policy
            let scope = policy.targets.map {
                PolicyTarget.match($0, policyNamespace: policy.namespace, gatewayLabels: gatewayLabels, gatewayNamespace: gatewayNamespace, serviceHost: serviceHost)
            } ?? PolicyScope.match(namespace: policy.namespace, selector: policy.selector, gatewayLabels: gatewayLabels, gatewayNamespace: gatewayNamespace,
                                   serviceNamespace: serviceNamespace, serviceLabels: serviceLabels, root: rootNamespace)
            switch scope {
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
        let anyDryRun = policies.contains { $0.dryRun }
        decision.deniedBy = verdict(request, anyDryRun ? policies.filter { !$0.dryRun } : policies)
        // By index, here and below: a policy is read in place, not copied (its name, rules and
        // selector retained and released) once per loop per request.
        for index in policies.indices where policies[index].action == .audit && !policies[index].dryRun {
            if let rule = matchedRule(policies[index], request) { decision.audited.append("\(policies[index].name)-rule[\(rule)]") }
        }
        if anyDryRun {
            let shadows = policies.filter(\.dryRun)
            let denied = verdict(request, shadows)
            decision.shadow = shadows.map { "\($0.name): \(denied == nil ? "allowed" : "denied")" }
        }
        return decision
    }

    /// Nil when allowed; else the denying policy's rule name (or `none`). CUSTOM is decided
    /// before, by `custom`.
    private static func verdict(_ request: AuthorizationRequest, _ policies: [Policy]) -> String? {
        for index in policies.indices where policies[index].action == .deny {
            if let rule = matchedRule(policies[index], request) { return "\(policies[index].name)-rule[\(rule)]" }
        }
        var anyAllow = false
        for index in policies.indices where policies[index].action == .allow {
            anyAllow = true
            if matchedRule(policies[index], request) != nil { return nil }
        }
        return anyAllow ? "none" : nil
    }

    /// What the CUSTOM policies say, first of all (Envoy's ext_authz filter runs before
    /// jwt_authn and RBAC: a CUSTOM rule never sees a token's principal).
    package enum CustomDecision: Sendable, Equatable {
        /// No CUSTOM rule matched (or none applies): go on.
        case pass
        /// A rule matched: ask this provider.
        case check(ExternalAuthorizer)
        /// A rule matched, but its provider cannot be asked (unknown, or several for one
        /// workload): istiod turns such rules into DENY rules.
        case refuse(rule: String, why: String)
    }

    /// Istio's CUSTOM (builder.go): the enforced CUSTOM policies' rules; one provider per
    /// workload (without PILOT_ENABLE_MULTIPLE_CUSTOM_AUTHZ_PROVIDERS). On TCP (`request.http`
    /// nil) an HTTP provider does nothing ("ignored CUSTOM action with HTTP provider on TCP
    /// filter chain"). Dry-run CUSTOM policies are not sent to the provider.
    ///
    /// `forwarded`: a peer gateway sent the request, and the entry gateway asked the provider
    /// for the policies of the destination service already (one check per request, as one
    /// sidecar makes it); only the policies that select this gateway itself are left.
    package static func custom(_ request: AuthorizationRequest, policies: [Policy], providers: ExternalAuthorizers,
                               forwarded: Bool = false) -> CustomDecision {
        var matched: (rule: String, provider: String)?
        var names = Set<String>()
        for policy in policies where policy.action == .custom && !policy.dryRun && (!forwarded || policy.atGateway) {
            names.insert(policy.provider ?? "")
            if matched == nil, let rule = matchedRule(policy, request) { matched = ("\(policy.name)-rule[\(rule)]", policy.provider ?? "") }
        }
        guard let matched else { return .pass }
        guard names.count == 1 else {
            return .refuse(rule: matched.rule, why: "several CUSTOM providers for one workload (\(names.sorted().joined(separator: ", ")))")
        }
        guard let authorizer = providers[matched.provider] else {
            return .refuse(rule: matched.rule, why: "extension provider '\(matched.provider)' is not in the mesh config")
        }
        switch authorizer.transport {
        case .http where request.http == nil: return .pass
        case .http: return .check(authorizer)
        // On TCP, Envoy's network ext_authz (gRPC only) checks the connection.
        case .grpc: return .check(authorizer)
        }
    }

    /// The index of the first rule of `policy` that holds for `request`.
    static func matchedRule(_ policy: borrowing Policy, _ request: borrowing AuthorizationRequest) -> Int? {
        let action = policy.action, atGateway = policy.atGateway
        for index in policy.rules.indices where policy.rules[index].holds(for: request, action: action, atGateway: atGateway) { return index }
        return nil
    }

    /// Istio's default path normalization (`BASE`: Envoy's `normalize_path`) as policies see
    /// the path: the query gone, `\` as `/`, `.` and `..` segments resolved, unreserved
    /// characters percent-decoded.
    package static func normalized(_ raw: String) -> String {
        // Mostly a plain path without a query: returned as it is, nothing allocated.
        let path = raw.pathWithoutQuery
        guard path.utf8.contains(where: { $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "%") }) else { return path }
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

extension RouteConfiguration {
    /// The AuthorizationPolicies for traffic through this gateway to `service` (its workloads'
    /// labels are its endpoints' anywhere in the mesh); empty when none applies.
    package func authorizationPolicies(for service: ServiceKey, endpoints: MeshEndpoints) -> [AuthorizationEngine.Policy] {
        guard !authorization.isEmpty else { return [] }
        let (namespace, labels) = Self.workloads(of: service, endpoints: endpoints)
        return authorization.applicable(gatewayLabels: gatewayLabels, gatewayNamespace: gatewayNamespace, serviceNamespace: namespace, serviceLabels: labels,
                                        serviceHost: service.host)
    }

    /// The JWT rules of the RequestAuthentications for traffic to `service`; nil when none applies.
    package func requestAuthenticator(for service: ServiceKey, endpoints: MeshEndpoints) -> JWTAuthenticator? {
        guard !requestAuthentications.isEmpty else { return nil }
        let (namespace, labels) = Self.workloads(of: service, endpoints: endpoints)
        let applying = requestAuthentications.filter { policy in
            if let targets = policy.targets {
                return PolicyTarget.match(targets, policyNamespace: policy.namespace, gatewayLabels: gatewayLabels, gatewayNamespace: gatewayNamespace,
                                          serviceHost: service.host) != nil
            }
            return PolicyScope.match(namespace: policy.namespace, selector: policy.selector?.matchLabels, gatewayLabels: gatewayLabels,
                                     gatewayNamespace: gatewayNamespace, serviceNamespace: namespace, serviceLabels: labels) != nil
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
