import Testing
@testable import MeshProxyCore

@Suite("PeerAuthentication loading and precedence")
struct PeerAuthenticationTests {
    func policy(_ mode: PeerAuthentication.Mode, namespace: String, selector: [String: String]? = nil, name: String = "p") -> PeerAuthentication {
        var policy = PeerAuthentication(selector: selector.map { .init(matchLabels: $0) }, mtls: .init(mode: mode))
        policy.namespace = namespace
        policy.name = name
        return policy
    }

    @Test("istiod's precedence: PERMISSIVE by default, then mesh, namespace and workload, each unless UNSET; a root-namespace selector is ignored")
    func precedence() {
        let labels = ["app": "reviews"]
        #expect(PeerAuthentication.mode(for: labels, namespace: "default", policies: []) == .permissive)
        let mesh = policy(.strict, namespace: "istio-system")
        #expect(PeerAuthentication.mode(for: labels, namespace: "default", policies: [mesh]) == .strict)
        let namespace = policy(.permissive, namespace: "default")
        #expect(PeerAuthentication.mode(for: labels, namespace: "default", policies: [mesh, namespace]) == .permissive)
        let workload = policy(.disable, namespace: "default", selector: labels)
        #expect(PeerAuthentication.mode(for: labels, namespace: "default", policies: [mesh, namespace, workload]) == .disable)
        let unset = policy(.unset, namespace: "default", selector: labels)
        #expect(PeerAuthentication.mode(for: labels, namespace: "default", policies: [mesh, unset]) == .strict)
        let rootSelector = policy(.disable, namespace: "istio-system", selector: labels)
        #expect(PeerAuthentication.mode(for: labels, namespace: "default", policies: [mesh, rootSelector]) == .strict)
    }

    @Test("The design document's STRICT policy loads silently; PERMISSIVE is said aloud for the gateway; portLevelMtls without a selector is an error")
    func loading() throws {
        let loaded = try IstioPolicyLoader.load(yaml: """
            apiVersion: security.istio.io/v1beta1
            kind: PeerAuthentication
            metadata:
              name: mcp-mtls
            spec:
              mtls:
                mode: STRICT    # Enforce mTLS for all services
            ---
            apiVersion: security.istio.io/v1
            kind: PeerAuthentication
            metadata: {name: legacy, namespace: payments}
            spec: {mtls: {mode: PERMISSIVE}}
            """, file: "pa.yaml")
        #expect(loaded.warnings.isEmpty && loaded.skipped.isEmpty && loaded.peerAuthentications.count == 2)
        let said = PeerAuthentication.gatewayWarnings(loaded.peerAuthentications)
        #expect(said.count == 1 && said[0].contains("payments/legacy allows plaintext (PERMISSIVE)"), "\(said)")
        do {
            _ = try IstioPolicyLoader.load(yaml: """
                apiVersion: security.istio.io/v1
                kind: PeerAuthentication
                metadata: {name: ports}
                spec:
                  portLevelMtls: {8080: {mode: DISABLE}}
                """, file: "ports.yaml")
            Issue.record("loaded")
        } catch {
            #expect(error.description.contains("ports.yaml:5:") && error.description.contains("portLevelMtls needs a selector"), "\(error.description)")
        }
    }
}
