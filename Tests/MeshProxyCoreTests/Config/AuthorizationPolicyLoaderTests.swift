import Testing
@testable import MeshProxyCore

@Suite("AuthorizationPolicy loading")
struct AuthorizationPolicyLoaderTests {
    @Test("The design document's policy loads as written, with its namespace, selector and rule; the dry-run annotation is read")
    func designDocument() throws {
        let loaded = try IstioPolicyLoader.load(yaml: """
            apiVersion: security.istio.io/v1beta1
            kind: AuthorizationPolicy
            metadata:
              name: mcp-organization-authz
            spec:
              selector:
                matchLabels:
                  app: mcp-organization
              rules:
              - from:
                - source:
                    principals: ["cluster.local/ns/mcp-system/sa/mcp-controller"]
                to:
                - operation:
                    methods: ["GET", "POST"]
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: trial, namespace: prod, annotations: {istio.io/dry-run: "true"}}
            spec: {action: DENY, rules: [{}]}
            """, file: "authz.yaml")
        #expect(loaded.warnings.isEmpty && loaded.skipped.isEmpty, "\(loaded.warnings) \(loaded.skipped)")
        let policy = try #require(loaded.authorizationPolicies.first)
        #expect(policy.name == "mcp-organization-authz" && policy.namespace == "default" && policy.selector?.matchLabels == ["app": "mcp-organization"])
        #expect(policy.rules?.first?.to?.first?.operation?.methods == ["GET", "POST"])
        #expect(loaded.authorizationPolicies[1].dryRun && loaded.authorizationPolicies[1].action == .deny)
    }

    @Test("What Istio rejects is an error at its line: DENY without rules, empty from, an empty source, serviceAccounts with principals, a bad CIDR, an unknown when key, a condition without values")
    func rejections() {
        do {
            _ = try IstioPolicyLoader.load(yaml: """
                apiVersion: security.istio.io/v1
                kind: AuthorizationPolicy
                metadata: {name: bad}
                spec:
                  action: DENY
                ---
                apiVersion: security.istio.io/v1
                kind: AuthorizationPolicy
                metadata: {name: worse}
                spec:
                  rules:
                  - from: []
                  - from: [{source: {}}]
                  - from: [{source: {principals: [a], serviceAccounts: [b]}}]
                  - from: [{source: {ipBlocks: [10.0.0.0/33]}}]
                  - when: [{key: request.colour, values: [red]}]
                  - when: [{key: source.ip}]
                """, file: "bad.yaml")
            Issue.record("loaded")
        } catch {
            let text = error.description
            for expected in ["bad.yaml:4:", "needs rules", "bad.yaml:12:", "'from' must not be empty", "bad.yaml:13:", "at least one field",
                             "bad.yaml:14:", "serviceAccounts cannot be combined", "bad.yaml:15:", "not an IP address or CIDR",
                             "bad.yaml:16:", "'request.colour' is not an AuthorizationPolicy condition key", "bad.yaml:17:", "needs values or notValues"] {
                #expect(text.contains(expected), "\(expected) in \(text)")
            }
        }
    }
}
