import Foundation
import Yams

/// An Istio RequestAuthentication (security.istio.io v1, v1beta1): which JWTs a workload
/// accepts. `JWTAuthenticator` verifies them at the gateway as Envoy's `jwt_authn` does.
package struct RequestAuthentication: Codable, Sendable, Equatable {
    package var selector: AuthorizationPolicy.WorkloadSelector?
    package var targetRef: AuthorizationPolicy.PolicyTargetReference?
    package var targetRefs: [AuthorizationPolicy.PolicyTargetReference]?
    package var jwtRules: [JWTRule]?
    /// `metadata`; set by the loader.
    package var namespace: String = "default"
    package var name: String = ""
    /// `targetRef`/`targetRefs` resolved against the loaded ServiceEntries when the
    /// configuration compiles (`PolicyTarget.attach`); nil: the selector decides.
    package var targets: [PolicyTarget]?

    enum CodingKeys: String, CodingKey { case selector, targetRef, targetRefs, jwtRules }

    package init(jwtRules: [JWTRule], selector: [String: String]? = nil, namespace: String = "default", name: String = "") {
        self.jwtRules = jwtRules; self.namespace = namespace; self.name = name
        self.selector = selector.map { AuthorizationPolicy.WorkloadSelector(matchLabels: $0) }
    }

    package struct JWTRule: Codable, Sendable, Equatable {
        package var issuer: String
        package var audiences: [String]?
        package var jwksUri: String?
        /// A JWKS document, inline.
        package var jwks: String?
        package var fromHeaders: [JWTHeader]?
        package var fromParams: [String]?
        package var fromCookies: [String]?
        package var outputPayloadToHeader: String?
        package var forwardOriginalToken: Bool?
        package var outputClaimToHeaders: [ClaimToHeader]?
        package var timeout: ConfigDuration?

        package init(issuer: String, jwks: String? = nil) { self.issuer = issuer; self.jwks = jwks }
    }

    package struct JWTHeader: Codable, Sendable, Equatable {
        package var name: String
        package var prefix: String?

        package init(name: String, prefix: String? = nil) { self.name = name; self.prefix = prefix }
    }

    package struct ClaimToHeader: Codable, Sendable, Equatable {
        package var header: String
        package var claim: String

        package init(header: String, claim: String) { self.header = header; self.claim = claim }
    }
}

extension RequestAuthentication: NamedIstioResource {}

extension IstioPolicyLoader {
    static func readRequestAuthentication(_ spec: Node, _ map: SourceMap, _ loaded: inout Loaded) -> [ConfigError] {
        let base = URL(fileURLWithPath: map.file).deletingLastPathComponent()
        return readNamed(RequestAuthentication.self, kind: "RequestAuthentication", notImplemented: [], spec: spec, map: map, loaded: &loaded,
                         check: { check($0, map: map, base: base) }) { policy, loaded in
            // A `file://` JWKS is read once, here, and carried inline from then on.
            var policy = policy
            for index in (policy.jwtRules ?? []).indices where policy.jwtRules?[index].jwksUri?.hasPrefix("file://") == true {
                let path = String(policy.jwtRules![index].jwksUri!.dropFirst("file://".count))
                let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path)
                policy.jwtRules?[index].jwks = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
                policy.jwtRules?[index].jwksUri = nil
            }
            loaded.requestAuthentications.append(policy)
        }
    }

    /// Istio's `ValidateRequestAuthentication`, each rule's keys read now (an unreadable JWKS is
    /// an error at its line, not a surprise at the first request).
    static func check(_ policy: RequestAuthentication, map: SourceMap, base: URL) -> (errors: [ConfigError], warnings: [ConfigError]) {
        var errors: [ConfigError] = []
        var warnings: [ConfigError] = []
        let spec = FieldPath().key("spec")
        let targets = checkTargets(policy.targetRef, policy.targetRefs, selected: policy.selector != nil, namespace: policy.namespace, map: map)
        errors += targets.errors
        warnings += targets.warnings
        for (i, rule) in (policy.jwtRules ?? []).enumerated() {
            let path = spec.key("jwtRules").index(i)
            if rule.issuer.isEmpty { errors.append(map.error(.missingField, at: path.key("issuer"), "issuer must not be empty")) }
            if rule.jwks != nil, rule.jwksUri != nil { errors.append(map.error(.invalidValue, at: path.key("jwks"), "jwks and jwksUri cannot both be set")) }
            for (j, header) in (rule.fromHeaders ?? []).enumerated() where header.name.isEmpty {
                errors.append(map.error(.missingField, at: path.key("fromHeaders").index(j).key("name"), "a header name must not be empty"))
            }
            switch JWKSet.source(of: rule, base: base) {
            case .success(let set):
                if set.keys.isEmpty { warnings.append(map.error(.istioDifference, at: path, "no usable key for \(rule.issuer): every token it signs is rejected").asWarning) }
            case .failure(let problem):
                if problem.fetchable {
                    // A network jwksUri is fetched by the running gateway; neither it nor jwks
                    // would be istiod's OpenID discovery, which is not done.
                    if rule.jwksUri == nil {
                        warnings.append(map.error(.notImplemented, at: path, "\(problem.message): tokens from \(rule.issuer) are rejected (fail closed). Add jwksUri or jwks").asWarning)
                    }
                } else {
                    errors.append(map.error(.invalidValue, at: path.key(rule.jwks != nil ? "jwks" : "jwksUri"), problem.message))
                }
            }
        }
        return (errors, warnings)
    }
}
