import Yams

/// An Istio PeerAuthentication (security.istio.io v1, v1beta1): which mTLS mode workloads
/// accept. EastWest's gateways terminate Istio mTLS and always require a client certificate
/// (STRICT); a policy that allows plaintext for the gateway is reported, since a plaintext
/// in-cluster listener does not exist yet.
package struct PeerAuthentication: Codable, Sendable, Equatable {
    package var selector: AuthorizationPolicy.WorkloadSelector?
    package var mtls: MutualTLS?
    package var portLevelMtls: [Int: MutualTLS]?
    /// `metadata.namespace`, `metadata.name`; set by the loader.
    package var namespace: String = "default"
    package var name: String = ""

    enum CodingKeys: String, CodingKey { case selector, mtls, portLevelMtls }

    package struct MutualTLS: Codable, Sendable, Equatable {
        package var mode: Mode?
    }

    package enum Mode: String, Codable, Sendable {
        case unset = "UNSET", disable = "DISABLE", permissive = "PERMISSIVE", strict = "STRICT"
    }

    /// istiod's `ComposePeerAuthentication` for one workload: PERMISSIVE to start, then the
    /// mesh policy (root namespace, no selector), the namespace's (no selector), the workload's
    /// (a selector its labels satisfy, not in the root namespace), each unless UNSET; the oldest
    /// of a scope wins, which for files read in order is the first.
    package static func mode(for labels: [String: String], namespace: String, rootNamespace: String = "istio-system",
                             policies: [PeerAuthentication]) -> Mode {
        func first(_ matching: (PeerAuthentication) -> Bool) -> Mode? {
            policies.first(where: matching)?.mtls?.mode.flatMap { $0 == .unset ? nil : $0 }
        }
        var mode = Mode.permissive
        if let mesh = first({ $0.namespace == rootNamespace && $0.selector?.matchLabels == nil }) { mode = mesh }
        if namespace != rootNamespace, let space = first({ $0.namespace == namespace && $0.selector?.matchLabels == nil }) { mode = space }
        if let workload = first({ policy in
            policy.namespace == namespace && policy.namespace != rootNamespace && (policy.selector?.matchLabels).map { $0.selects(labels) } == true
        }) { mode = workload }
        return mode
    }
}

extension PeerAuthentication {
    /// Policies that allow plaintext, said aloud: a gateway is not governed by PeerAuthentication
    /// (Istio's gateways follow their Gateway's `tls`), and EastWest's listener requires Istio
    /// mTLS, so plaintext such a policy lets a workload accept is refused at the gateway. STRICT
    /// is what the gateway does already.
    package static func gatewayWarnings(_ policies: [PeerAuthentication]) -> [String] {
        policies.compactMap { policy in
            let modes = [policy.mtls?.mode] + (policy.portLevelMtls ?? [:]).values.map(\.mode)
            guard let open = modes.compactMap({ $0 }).first(where: { $0 == .permissive || $0 == .disable }) else { return nil }
            return "warning: PeerAuthentication \(policy.namespace)/\(policy.name) allows plaintext (\(open.rawValue)); EastWest's gateways accept Istio mTLS only, "
                + "so clients without a mesh certificate are refused at the gateway (no plaintext listener yet)"
        }
    }
}

extension PeerAuthentication: NamedIstioResource {}

extension IstioPolicyLoader {
    static func readPeerAuthentication(_ spec: Node, _ map: SourceMap, _ loaded: inout Loaded) -> [ConfigError] {
        readNamed(PeerAuthentication.self, kind: "PeerAuthentication", notImplemented: [], spec: spec, map: map, loaded: &loaded,
                  check: { check($0, map: map) }) { policy, loaded in loaded.peerAuthentications.append(policy) }
    }

    /// Istio's `ValidatePeerAuthentication`, and what a root-namespace selector does.
    static func check(_ policy: PeerAuthentication, map: SourceMap) -> (errors: [ConfigError], warnings: [ConfigError]) {
        var errors: [ConfigError] = []
        var warnings: [ConfigError] = []
        let spec = FieldPath().key("spec")
        if let ports = policy.portLevelMtls {
            if policy.selector?.matchLabels == nil {
                errors.append(map.error(.invalidValue, at: spec.key("portLevelMtls"), "portLevelMtls needs a selector"))
            }
            for port in ports.keys.sorted() where !(1...65_535).contains(port) {
                errors.append(map.error(.invalidValue, at: spec.key("portLevelMtls").key(String(port)), "'\(port)' is not a port (1-65535)"))
            }
        }
        if policy.namespace == "istio-system", policy.selector?.matchLabels != nil {
            warnings.append(map.error(.istioDifference, at: spec.key("selector"),
                                      "a PeerAuthentication with a selector in the root namespace is ignored by Istio (and EastWest)").asWarning)
        }
        return (errors, warnings)
    }
}
