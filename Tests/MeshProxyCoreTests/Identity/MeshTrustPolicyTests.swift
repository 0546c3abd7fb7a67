import Foundation
import Testing
import NIOSSL
import SwiftASN1
import X509
@testable import MeshProxyCore

@Suite("Mesh trust policy (who may connect)")
struct MeshTrustPolicyTests {
    let now = Date()
    let root: IssuedCertificate
    let intermediate: IssuedCertificate
    let client: IssuedCertificate

    init() throws {
        root = try CertificateAuthority.makeRoot(trustDomain: "cluster.local", now: now)
        intermediate = try CertificateAuthority.makeIntermediate(cluster: "east", trustDomain: "cluster.local", issuer: root, now: now)
        client = try CertificateAuthority.makeWorkload(
            spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/client"), issuer: intermediate, now: now)
    }

    var policy: MeshTrustPolicy { MeshTrustPolicy(roots: [root.certificate], allowedTrustDomains: ["cluster.local"]) }

    @Test("A leaf chained through the cluster intermediate to the mesh root is accepted with its SPIFFE ID")
    func acceptsMeshClient() async throws {
        let result = await policy.evaluate(presented: [client.certificate, intermediate.certificate], now: now)
        #expect(try result.get().description == "spiffe://cluster.local/ns/default/sa/client")
    }

    @Test("No certificate, another root, expired, missing intermediate and foreign trust domain are refused with the reason")
    func refusals() async throws {
        #expect(await policy.evaluate(presented: [], now: now) == .failure(.noCertificate))

        let otherRoot = try CertificateAuthority.makeRoot(trustDomain: "cluster.local", now: now)
        let otherIntermediate = try CertificateAuthority.makeIntermediate(cluster: "x", trustDomain: "cluster.local", issuer: otherRoot, now: now)
        let stranger = try CertificateAuthority.makeWorkload(
            spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/client"), issuer: otherIntermediate, now: now)
        guard case .failure(.untrustedIssuer) = await policy.evaluate(presented: [stranger.certificate, otherIntermediate.certificate], now: now) else {
            Issue.record("a certificate from another root was accepted"); return
        }
        guard case .failure(.untrustedIssuer) = await policy.evaluate(presented: [client.certificate], now: now) else {
            Issue.record("a chain without its intermediate was accepted"); return
        }

        let expired = try CertificateAuthority.makeWorkload(
            spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/client"), issuer: intermediate,
            validity: .seconds(60), now: now, notBefore: now - 7200)
        let expiredResult = await policy.evaluate(presented: [expired.certificate, intermediate.certificate], now: now)
        guard case .failure(let rejection) = expiredResult, case .expired = rejection else {
            Issue.record("an expired certificate was accepted: \(expiredResult)"); return
        }
        #expect(rejection.description.contains("expired at"))

        let foreign = try CertificateAuthority.makeWorkload(
            spiffeID: try SpiffeID(parsing: "spiffe://evil.example/ns/default/sa/client"), issuer: intermediate, now: now)
        let foreignResult = await policy.evaluate(presented: [foreign.certificate, intermediate.certificate], now: now)
        #expect(foreignResult == .failure(.trustDomainNotAllowed(try SpiffeID(parsing: "spiffe://evil.example/ns/default/sa/client"))))
        guard case .failure(let foreignRejection) = foreignResult else { return }
        #expect(foreignRejection.description == "trust domain 'evil.example' of spiffe://evil.example/ns/default/sa/client is not allowed")
    }

    @Test("A peer gateway must carry one of the expected identities")
    func peerGatewayIdentity() async throws {
        let gatewayID = try SpiffeID(parsing: "spiffe://cluster.local/ns/istio-system/sa/eastwest-gateway-east")
        let gateway = try CertificateAuthority.makeWorkload(spiffeID: gatewayID, issuer: intermediate, now: now)
        let peerPolicy = MeshTrustPolicy(roots: [root.certificate], allowedTrustDomains: ["cluster.local"], allowedIdentities: [gatewayID])
        #expect(try await peerPolicy.evaluate(presented: [gateway.certificate, intermediate.certificate], now: now).get() == gatewayID)
        let clientID = try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/client")
        #expect(await peerPolicy.evaluate(presented: [client.certificate, intermediate.certificate], now: now) == .failure(.identityNotAllowed(clientID)))
    }

    @Test("Workload certificates carry the SPIFFE URI SAN and DNS names, no subject, and are not CAs")
    func workloadShape() async throws {
        let leaf = try CertificateAuthority.makeWorkload(
            spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/istio-system/sa/eastwest-gateway-east"),
            dnsNames: ["echo.default.svc.cluster.local"], issuer: intermediate, now: now)
        #expect(try leaf.certificate.spiffeID()?.serviceAccount == "eastwest-gateway-east")
        #expect(leaf.certificate.dnsNames == ["echo.default.svc.cluster.local"])
        #expect(leaf.certificate.subject.isEmpty)
        #expect(try leaf.certificate.extensions.basicConstraints == .notCertificateAuthority)
        #expect(leaf.certificate.issuer == intermediate.certificate.subject)
    }
}

@Suite("Accepted chains remembered by the handshake verifier")
struct PeerVerifierTests {
    let now = Date()

    func nio(_ issued: IssuedCertificate...) throws -> [NIOSSLCertificate] {
        try issued.map { issued in
            var serializer = DER.Serializer()
            try serializer.serialize(issued.certificate)
            return try NIOSSLCertificate(bytes: serializer.serializedBytes, format: .der)
        }
    }

    @Test("A remembered chain answers the same identity until it expires; then the policy speaks again")
    func remembersUntilExpiry() async throws {
        let root = try CertificateAuthority.makeRoot(trustDomain: "cluster.local", now: now)
        let intermediate = try CertificateAuthority.makeIntermediate(cluster: "east", trustDomain: "cluster.local", issuer: root, now: now)
        let client = try CertificateAuthority.makeWorkload(
            spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/client"), issuer: intermediate,
            validity: .seconds(60), now: now)
        let verifier = PeerVerifier(policy: MeshTrustPolicy(roots: [root.certificate], allowedTrustDomains: ["cluster.local"]))
        let chain = try nio(client, intermediate)
        #expect(try await verifier.evaluate(peerCertificates: chain, now: now).get().description == "spiffe://cluster.local/ns/default/sa/client")
        #expect(try await verifier.evaluate(peerCertificates: chain, now: now + 30).get().description == "spiffe://cluster.local/ns/default/sa/client")
        guard case .failure(.expired) = await verifier.evaluate(peerCertificates: chain, now: now + 120) else {
            Issue.record("an expired chain was accepted from memory"); return
        }
    }

    @Test("A refused chain is refused every time, and another policy's memory is its own")
    func refusalsAreNotRemembered() async throws {
        let root = try CertificateAuthority.makeRoot(trustDomain: "cluster.local", now: now)
        let intermediate = try CertificateAuthority.makeIntermediate(cluster: "east", trustDomain: "cluster.local", issuer: root, now: now)
        let client = try CertificateAuthority.makeWorkload(
            spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/client"), issuer: intermediate, now: now)
        let chain = try nio(client, intermediate)
        let strict = PeerVerifier(policy: MeshTrustPolicy(roots: [root.certificate], allowedTrustDomains: ["cluster.local"],
                                                          allowedIdentities: [try SpiffeID(parsing: "spiffe://cluster.local/ns/istio-system/sa/eastwest-gateway-east")]))
        let open = PeerVerifier(policy: MeshTrustPolicy(roots: [root.certificate], allowedTrustDomains: ["cluster.local"]))
        #expect(try await open.evaluate(peerCertificates: chain, now: now).get().description == "spiffe://cluster.local/ns/default/sa/client")
        for _ in 0..<2 {
            guard case .failure(.identityNotAllowed) = await strict.evaluate(peerCertificates: chain, now: now) else {
                Issue.record("a client identity passed as a peer gateway"); return
            }
        }
    }
}
