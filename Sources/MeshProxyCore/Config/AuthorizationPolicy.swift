/// An Istio AuthorizationPolicy (security.istio.io v1, v1beta1) as users write it. The loader
/// checks it as Istio's `ValidateAuthorizationPolicy` does; `AuthorizationEngine` compiles the
/// ones that apply to a gateway and decides requests and connections with them.
package struct AuthorizationPolicy: Codable, Sendable, Equatable {
    package var selector: WorkloadSelector?
    package var targetRef: PolicyTargetReference?
    package var targetRefs: [PolicyTargetReference]?
    package var action: Action?
    package var provider: Provider?
    package var rules: [Rule]?
    /// `metadata.namespace`; set by the loader, not decoded.
    package var namespace: String = "default"
    /// `metadata.name`; set by the loader.
    package var name: String = ""
    /// `metadata.annotations["istio.io/dry-run"] == "true"`: decided and logged, never enforced.
    package var dryRun = false

    enum CodingKeys: String, CodingKey { case selector, targetRef, targetRefs, action, provider, rules }

    package init(action: Action? = nil, rules: [Rule]? = nil, selector: [String: String]? = nil, namespace: String = "default", name: String = "") {
        self.action = action; self.rules = rules; self.namespace = namespace; self.name = name
        self.selector = selector.map { WorkloadSelector(matchLabels: $0) }
    }

    package enum Action: String, Codable, Sendable {
        case allow = "ALLOW", deny = "DENY", audit = "AUDIT", custom = "CUSTOM"
    }

    package struct WorkloadSelector: Codable, Sendable, Equatable {
        package var matchLabels: [String: String]?

        package init(matchLabels: [String: String]?) { self.matchLabels = matchLabels }
    }

    package struct PolicyTargetReference: Codable, Sendable, Equatable {
        package var group: String?
        package var kind: String?
        package var name: String?
        package var namespace: String?
    }

    package struct Provider: Codable, Sendable, Equatable {
        package var name: String?
    }

    /// OR over `from`, AND OR over `to`, AND every `when`; an absent part matches anything.
    package struct Rule: Codable, Sendable, Equatable {
        package var from: [From]?
        package var to: [To]?
        package var when: [Condition]?

        package init(from: [Source]? = nil, to: [Operation]? = nil, when: [Condition]? = nil) {
            self.from = from.map { $0.map { From(source: $0) } }
            self.to = to.map { $0.map { To(operation: $0) } }
            self.when = when
        }
    }

    package struct From: Codable, Sendable, Equatable {
        package var source: Source?
    }

    package struct To: Codable, Sendable, Equatable {
        package var operation: Operation?
    }

    package struct Source: Codable, Sendable, Equatable {
        package var principals: [String]?
        package var notPrincipals: [String]?
        package var requestPrincipals: [String]?
        package var notRequestPrincipals: [String]?
        package var namespaces: [String]?
        package var notNamespaces: [String]?
        package var serviceAccounts: [String]?
        package var notServiceAccounts: [String]?
        package var ipBlocks: [String]?
        package var notIpBlocks: [String]?
        package var remoteIpBlocks: [String]?
        package var notRemoteIpBlocks: [String]?

        package init(principals: [String]? = nil, notPrincipals: [String]? = nil, namespaces: [String]? = nil, ipBlocks: [String]? = nil) {
            self.principals = principals; self.notPrincipals = notPrincipals; self.namespaces = namespaces; self.ipBlocks = ipBlocks
        }
    }

    package struct Operation: Codable, Sendable, Equatable {
        package var hosts: [String]?
        package var notHosts: [String]?
        package var ports: [String]?
        package var notPorts: [String]?
        package var methods: [String]?
        package var notMethods: [String]?
        package var paths: [String]?
        package var notPaths: [String]?

        package init(hosts: [String]? = nil, ports: [String]? = nil, methods: [String]? = nil, paths: [String]? = nil, notPaths: [String]? = nil) {
            self.hosts = hosts; self.ports = ports; self.methods = methods; self.paths = paths; self.notPaths = notPaths
        }
    }

    package struct Condition: Codable, Sendable, Equatable {
        package var key: String
        package var values: [String]?
        package var notValues: [String]?

        package init(key: String, values: [String]? = nil, notValues: [String]? = nil) {
            self.key = key; self.values = values; self.notValues = notValues
        }
    }
}
