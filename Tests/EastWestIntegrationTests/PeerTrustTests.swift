import Foundation
import MeshProxyCore
import Testing

/// Client chains built with openssl as an attacker holding a legitimately issued certificate
/// would build them, against a real gateway trusting an openssl-made root.
@Suite("Peer chain verification (RFC 5280 and SPIFFE, openssl-built chains)", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct PeerTrustTests {
    @Test("Every chain openssl verify rejects is refused with its own reason and a TLS alert; good clients are served before and after")
    func refusesInvalidChains() async throws {
        let mesh = try TestMesh("trust", clusters: [])
        defer { mesh.processes.stopAll() }
        let pki = try OpenSSLPKI(directory: "\(mesh.directory)/pki")
        let root = try await pki.root("root")
        let cluster = try await pki.issue("cluster-ca", by: root, extensions: OpenSSLPKI.ca(pathLength: 0))
        let client = "spiffe://cluster.local/ns/default/sa/client"
        let gatewayLeaf = try await pki.issue("gateway", by: cluster, extensions: OpenSSLPKI.leaf(
            uri: "spiffe://cluster.local/ns/istio-system/sa/eastwest-gateway-east", dns: ["echo.default.svc.cluster.local"]))
        let gatewayBundle = try await pki.bundle("gateway-bundle", chain: [gatewayLeaf, cluster], root: root)
        let good = try await pki.bundle("good", chain: [try await pki.issue("good", by: cluster, extensions: OpenSSLPKI.leaf(uri: client)), cluster], root: root)

        // One chain per refusal, and the reason the gateway must name.
        var cases: [(name: String, bundle: String, reason: String)] = []
        let subCA = try await pki.issue("sub-ca", by: cluster, extensions: OpenSSLPKI.ca())
        cases.append(("sub-CA under a pathlen:0 cluster CA", try await pki.bundle("pathlen", chain: [
            try await pki.issue("pathlen-leaf", by: subCA, extensions: OpenSSLPKI.leaf(uri: client)), subCA, cluster], root: root),
            "path length exceeded"))
        cases.append(("codeSigning-only extended key usage", try await pki.bundle("eku", chain: [
            try await pki.issue("eku-leaf", by: cluster, extensions: OpenSSLPKI.leaf(uri: client, extendedKeyUsage: "codeSigning")), cluster], root: root),
            "lacks clientAuth (has codeSigning)"))
        cases.append(("unknown critical extension", try await pki.bundle("critical", chain: [
            try await pki.issue("critical-leaf", by: cluster, extensions: OpenSSLPKI.leaf(uri: client, extra: ["1.3.6.1.4.1.99999.1=critical,ASN1:UTF8String:x"])), cluster], root: root),
            "unknown critical extension 1.3.6.1.4.1.99999.1"))
        cases.append(("leaf that is a CA", try await pki.bundle("ca-leaf", chain: [
            try await pki.issue("ca-leaf", by: cluster, extensions: ["basicConstraints=critical,CA:TRUE,pathlen:0", "keyUsage=critical,digitalSignature,keyCertSign",
                                                                     "subjectAltName=URI:\(client)"]), cluster], root: root),
            "is a CA; a workload certificate must not be"))
        let noSign = try await pki.issue("no-sign-ca", by: root, extensions: OpenSSLPKI.ca(pathLength: 0, keyUsage: "critical,digitalSignature"))
        cases.append(("issuer without keyCertSign", try await pki.bundle("no-sign", chain: [
            try await pki.issue("no-sign-leaf", by: noSign, extensions: OpenSSLPKI.leaf(uri: client)), noSign], root: root),
            "may not sign certificates (key usage lacks keyCertSign)"))
        cases.append(("expired leaf", try await pki.bundle("expired", chain: [
            try await pki.issue("expired-leaf", by: cluster, extensions: OpenSSLPKI.leaf(uri: client), validFrom: -7200, validUntil: -3600), cluster], root: root),
            "expired at"))
        cases.append(("leaf not yet valid", try await pki.bundle("future", chain: [
            try await pki.issue("future-leaf", by: cluster, extensions: OpenSSLPKI.leaf(uri: client), validFrom: 86_400, validUntil: 2 * 86_400), cluster], root: root),
            "is not valid before"))
        let expiredCA = try await pki.issue("expired-ca", by: root, extensions: OpenSSLPKI.ca(pathLength: 0), validFrom: -7200, validUntil: -3600)
        cases.append(("expired intermediate", try await pki.bundle("expired-ca", chain: [
            try await pki.issue("expired-ca-leaf", by: expiredCA, extensions: OpenSSLPKI.leaf(uri: client)), expiredCA], root: root),
            "certificate of CN=expired-ca expired at"))
        let otherRoot = try await pki.root("other-root")
        let otherCA = try await pki.issue("other-ca", by: otherRoot, extensions: OpenSSLPKI.ca(pathLength: 0))
        cases.append(("another root", try await pki.bundle("other", chain: [
            try await pki.issue("other-leaf", by: otherCA, extensions: OpenSSLPKI.leaf(uri: client)), otherCA], root: otherRoot),
            "does not lead to the mesh root"))
        cases.append(("no SPIFFE ID", try await pki.bundle("no-spiffe", chain: [
            try await pki.issue("no-spiffe-leaf", by: cluster, extensions: OpenSSLPKI.leaf(uri: nil, dns: ["client.example"])), cluster], root: root),
            "has no SPIFFE ID"))
        cases.append(("trust domain not allowed", try await pki.bundle("foreign", chain: [
            try await pki.issue("foreign-leaf", by: cluster, extensions: OpenSSLPKI.leaf(uri: "spiffe://evil.example/ns/default/sa/client")), cluster], root: root),
            "trust domain 'evil.example'"))

        // openssl agrees that the good chain is good and that the RFC 5280 cases are not. A CA
        // as a client leaf passes `openssl verify -purpose sslclient`; the SPIFFE X509-SVID
        // rules (§4.1) forbid it, and so do we.
        #expect(try await pki.verify(good, root: root).status == 0)
        for rfcCase in cases.prefix(8) where rfcCase.name != "leaf that is a CA" {
            #expect(try await pki.verify(rfcCase.bundle, root: root).status != 0, "openssl verify accepted '\(rfcCase.name)'")
        }

        try await mesh.startBackend("127.0.70.10:8080", cluster: "east")
        var config = mesh.gatewayConfig(name: "trust-gw", cluster: "east", ip: "127.0.70.1", services: [.echo("127.0.70.10:8080")])
        config.tls = mesh.tlsFiles(gatewayBundle)
        let gateway = try await mesh.startGateway(config)

        func curl(_ bundle: String) async throws -> CommandResult {
            try await runCommand("/usr/bin/curl", [
                "-sS", "--max-time", "10", "--cacert", root.certificate, "--cert", "\(bundle)/cert-chain.pem", "--key", "\(bundle)/key.pem",
                "--resolve", "echo.default.svc.cluster.local:15443:127.0.70.1", "https://echo.default.svc.cluster.local:15443/"])
        }
        #expect(mesh.answer(try await curl(good))?["endpoint"] == "127.0.70.10:8080")
        for refused in cases {
            let result = try await curl(refused.bundle)
            #expect(result.status != 0 && mesh.answer(result) == nil, "'\(refused.name)' was served")
            // curl reports the gateway's alert (TLS 1.3 delivers it after curl's handshake).
            #expect(result.stderr.contains("alert") || result.stderr.contains("SSL"), "'\(refused.name)': \(result.stderr)")
            #expect(await eventually { gateway.log.contains("client refused: ") && gateway.log.contains(refused.reason) },
                    "'\(refused.name)': no log line with '\(refused.reason)'")
        }
        #expect(mesh.answer(try await curl(good))?["endpoint"] == "127.0.70.10:8080")
    }
}
