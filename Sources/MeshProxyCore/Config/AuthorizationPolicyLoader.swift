import Yams

extension IstioPolicyLoader {
    static let securityAPIVersions: Set<String> = ["security.istio.io/v1", "security.istio.io/v1beta1"]

    /// The `when` keys Istio accepts (security/authz/model/model.go); any other is an error.
    static let authorizationKeys: Set<String> = [
        "source.ip", "remote.ip", "source.namespace", "source.principal", "source.serviceAccount", "source.trustDomain",
        "request.auth.principal", "request.auth.audiences", "request.auth.presenter", "destination.ip", "destination.port",
        "connection.sni",
    ]

    static func readAuthorizationPolicy(_ spec: Node, _ map: SourceMap, _ loaded: inout Loaded) -> [ConfigError] {
        readNamed(AuthorizationPolicy.self, kind: "AuthorizationPolicy", notImplemented: [], spec: spec, map: map, loaded: &loaded,
                  check: { check($0, map: map) }) { policy, loaded in
            var policy = policy
            let annotations = map.root?.mapping?["metadata"]?.mapping?["annotations"]?.mapping
            policy.dryRun = annotations?["istio.io/dry-run"]?.string == "true"
            loaded.authorizationPolicies.append(policy)
        }
    }

    /// Istio's `validatePolicyTargetReferences` for a security policy: not with a selector, the
    /// kinds Istio attaches them to, a name, no other namespace; a GatewayClass (waypoints) is
    /// said to attach to nothing here.
    static func checkTargets(_ single: AuthorizationPolicy.PolicyTargetReference?, _ list: [AuthorizationPolicy.PolicyTargetReference]?,
                             selected: Bool, namespace: String, map: SourceMap) -> (errors: [ConfigError], warnings: [ConfigError]) {
        var errors: [ConfigError] = []
        var warnings: [ConfigError] = []
        let spec = FieldPath().key("spec")
        if selected, single != nil || list != nil {
            errors.append(map.error(.invalidValue, at: spec.key(single != nil ? "targetRef" : "targetRefs"), "selector and targetRefs cannot both be set"))
        }
        let references = (single.map { [(spec.key("targetRef"), $0)] } ?? []) + (list ?? []).enumerated().map { (spec.key("targetRefs").index($0), $1) }
        for (path, reference) in references {
            let kind = "\(reference.group ?? "")/\(reference.kind ?? "")"
            switch (reference.group ?? "", reference.kind ?? "") {
            case ("gateway.networking.k8s.io", "Gateway"), ("", "Service"), ("core", "Service"), ("networking.istio.io", "ServiceEntry"):
                break
            case ("gateway.networking.k8s.io", "GatewayClass"):
                warnings.append(map.error(.istioDifference, at: path, "a GatewayClass target attaches the policy to Istio's waypoints, which an EastWest gateway is not: it applies to nothing here").asWarning)
            default:
                errors.append(map.error(.invalidValue, at: path.key("kind"), "targetRef must be to a Gateway (gateway.networking.k8s.io), GatewayClass, Service or ServiceEntry (networking.istio.io), not \(kind)"))
            }
            if (reference.name ?? "").isEmpty { errors.append(map.error(.missingField, at: path.key("name"), "a targetRef needs a name")) }
            if let other = reference.namespace, !other.isEmpty, other != namespace {
                errors.append(map.error(.invalidValue, at: path.key("namespace"), "cross namespace referencing is not currently supported (\(other), the policy is in \(namespace))"))
            }
        }
        return (errors, warnings)
    }

    /// Istio's `ValidateAuthorizationPolicy`, and what EastWest does differently.
    static func check(_ policy: AuthorizationPolicy, map: SourceMap) -> (errors: [ConfigError], warnings: [ConfigError]) {
        var errors: [ConfigError] = []
        var warnings: [ConfigError] = []
        let spec = FieldPath().key("spec")
        let targets = checkTargets(policy.targetRef, policy.targetRefs, selected: policy.selector != nil, namespace: policy.namespace, map: map)
        errors += targets.errors
        warnings += targets.warnings
        let action = policy.action ?? .allow
        if action == .deny || action == .custom, policy.rules == nil {
            errors.append(map.error(.missingField, at: spec.key("rules"), "a \(action.rawValue) policy needs rules (Istio rejects one without)"))
        }
        if action == .custom {
            if (policy.provider?.name ?? "").isEmpty {
                errors.append(map.error(.missingField, at: spec.key("provider"), "a CUSTOM policy needs provider.name (an extensionProviders entry of the mesh config)"))
            }
        } else if policy.provider != nil {
            errors.append(map.error(.invalidValue, at: spec.key("provider"), "provider is only for action CUSTOM"))
        }
        for (i, rule) in (policy.rules ?? []).enumerated() {
            let path = spec.key("rules").index(i)
            if let from = rule.from, from.isEmpty { errors.append(map.error(.invalidValue, at: path.key("from"), "'from' must not be empty")) }
            if let to = rule.to, to.isEmpty { errors.append(map.error(.invalidValue, at: path.key("to"), "'to' must not be empty")) }
            for (j, from) in (rule.from ?? []).enumerated() {
                let at = path.key("from").index(j).key("source")
                guard let source = from.source else {
                    errors.append(map.error(.missingField, at: path.key("from").index(j), "a 'from' needs a source"))
                    continue
                }
                let fields: [(String, [String]?)] = [
                    ("principals", source.principals), ("notPrincipals", source.notPrincipals), ("requestPrincipals", source.requestPrincipals),
                    ("notRequestPrincipals", source.notRequestPrincipals), ("namespaces", source.namespaces), ("notNamespaces", source.notNamespaces),
                    ("serviceAccounts", source.serviceAccounts), ("notServiceAccounts", source.notServiceAccounts), ("ipBlocks", source.ipBlocks),
                    ("notIpBlocks", source.notIpBlocks), ("remoteIpBlocks", source.remoteIpBlocks), ("notRemoteIpBlocks", source.notRemoteIpBlocks),
                ]
                errors += checkValues(fields, at: at, map: map, empty: "a source needs at least one field")
                if source.serviceAccounts != nil || source.notServiceAccounts != nil,
                   source.principals != nil || source.notPrincipals != nil || source.namespaces != nil || source.notNamespaces != nil {
                    errors.append(map.error(.invalidValue, at: at.key("serviceAccounts"), "serviceAccounts cannot be combined with principals or namespaces"))
                }
                for (field, blocks) in [("ipBlocks", source.ipBlocks), ("notIpBlocks", source.notIpBlocks), ("remoteIpBlocks", source.remoteIpBlocks),
                                        ("notRemoteIpBlocks", source.notRemoteIpBlocks)] {
                    for (k, block) in (blocks ?? []).enumerated() where IPBlock(block) == nil {
                        errors.append(map.error(.invalidValue, at: at.key(field).index(k), "'\(block)' is not an IP address or CIDR range"))
                    }
                }
            }
            for (j, to) in (rule.to ?? []).enumerated() {
                let at = path.key("to").index(j).key("operation")
                guard let operation = to.operation else {
                    errors.append(map.error(.missingField, at: path.key("to").index(j), "a 'to' needs an operation"))
                    continue
                }
                let fields: [(String, [String]?)] = [
                    ("hosts", operation.hosts), ("notHosts", operation.notHosts), ("ports", operation.ports), ("notPorts", operation.notPorts),
                    ("methods", operation.methods), ("notMethods", operation.notMethods), ("paths", operation.paths), ("notPaths", operation.notPaths),
                ]
                errors += checkValues(fields, at: at, map: map, empty: "an operation needs at least one field")
                for (field, ports) in [("ports", operation.ports), ("notPorts", operation.notPorts)] {
                    for (k, port) in (ports ?? []).enumerated() where !(Int(port).map { (0...65_535).contains($0) } ?? false) {
                        errors.append(map.error(.invalidValue, at: at.key(field).index(k), "'\(port)' is not a port number"))
                    }
                }
            }
            for (j, condition) in (rule.when ?? []).enumerated() {
                let at = path.key("when").index(j)
                let key = condition.key
                let known = authorizationKeys.contains(key) || (key.hasPrefix("request.headers[") && key.hasSuffix("]") && key.count > 17)
                    || (key.hasPrefix("request.auth.claims[") && key.hasSuffix("]")) || key.hasPrefix("experimental.envoy.filters.")
                if !known { errors.append(map.error(.invalidValue, at: at.key("key"), "'\(key)' is not an AuthorizationPolicy condition key")) }
                if (condition.values ?? []).isEmpty, (condition.notValues ?? []).isEmpty {
                    errors.append(map.error(.missingField, at: at, "a condition needs values or notValues"))
                }
                if key.hasPrefix("experimental.") {
                    warnings.append(map.error(.notImplemented, at: at.key("key"),
                                              "'\(key)' reads Envoy filter metadata, which EastWest does not have: it never holds").asWarning)
                }
            }
        }
        return (errors, warnings)
    }

    /// Each list field: no empty list, no empty string; at least one field set.
    private static func checkValues(_ fields: [(String, [String]?)], at path: FieldPath, map: SourceMap, empty: String) -> [ConfigError] {
        var errors: [ConfigError] = []
        if fields.allSatisfy({ $0.1 == nil }) { errors.append(map.error(.missingField, at: path, empty)) }
        for (field, values) in fields {
            guard let values else { continue }
            if values.isEmpty { errors.append(map.error(.invalidValue, at: path.key(field), "'\(field)' must not be empty")) }
            for (k, value) in values.enumerated() where value.isEmpty {
                errors.append(map.error(.invalidValue, at: path.key(field).index(k), "empty values are not allowed"))
            }
        }
        return errors
    }
}

extension AuthorizationPolicy: NamedIstioResource {}
