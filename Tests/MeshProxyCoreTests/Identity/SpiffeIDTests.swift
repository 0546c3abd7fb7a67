import Testing
@testable import MeshProxyCore

@Suite("SPIFFE IDs")
struct SpiffeIDTests {
    @Test("Istio workload identities parse into trust domain, namespace and service account")
    func istioIdentity() throws {
        let id = try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/client")
        #expect(id.trustDomain == "cluster.local")
        #expect(id.namespace == "default")
        #expect(id.serviceAccount == "client")
        #expect(id.description == "spiffe://cluster.local/ns/default/sa/client")
    }

    @Test("A non-Istio path is still a SPIFFE ID, without namespace")
    func otherPath() throws {
        let id = try SpiffeID(parsing: "spiffe://example.org/payments/api")
        #expect(id.namespace == nil)
        #expect(id.path == "/payments/api")
    }

    @Test("Malformed IDs are refused with the reason", arguments: [
        ("https://cluster.local/ns/a/sa/b", "must start with 'spiffe://'"),
        ("spiffe:///ns/a/sa/b", "trust domain is empty"),
        ("spiffe://Cluster.Local/ns/a", "may only contain a-z"),
        ("spiffe://cluster.local:8443/ns/a", "may only contain a-z"),
        ("spiffe://user@cluster.local/ns/a", "may only contain a-z"),
        ("spiffe://cluster.local/ns//sa/b", "empty segment"),
        ("spiffe://cluster.local/ns/../sa/b", "is not allowed"),
        ("spiffe://cluster.local/ns/a?x=1", "query or fragment"),
        ("spiffe://cluster.local/ns/a b", "may only contain letters"),
    ])
    func refuses(text: String, reason: String) {
        #expect {
            try SpiffeID(parsing: text)
        } throws: { error in
            (error as? SpiffeIDError)?.description.contains(reason) == true
        }
    }
}
