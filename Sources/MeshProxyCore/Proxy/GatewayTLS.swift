import Foundation
import NIOCore
import NIOSSL
import NIOConcurrencyHelpers
import X509

/// The TLS side of one gateway config: the server context for 15443, the client context for
/// dialling peer gateways, and the trust policies both sides check peers against.
/// Built once per config generation, off the event loop (it reads files), then shared.
package struct GatewayTLS: Sendable {
    /// The 15443 context for services that offer no ALPN (TCP, TLS, unknown).
    private let serverContext: NIOSSLContext
    /// The 15443 contexts by the ALPN a service's protocol offers; one per distinct list, made
    /// once, chosen by SNI before the handshake.
    private let serverContextsByALPN: [[String]: NIOSSLContext]
    /// For dialling peer gateways: no ALPN (bytes, as the service speaks them) or offering `h2`
    /// (the pooled, multiplexed HTTP/2 connections that carry HTTP services between gateways).
    private let clientContext: NIOSSLContext
    private let clientContextOfferingH2: NIOSSLContext
    /// Who may connect to this gateway: any mesh workload or gateway (role client).
    package let clients: PeerVerifier
    /// Gossip peers, both ways: any cluster's gateway identity; federation then holds each
    /// peer to the cluster its identity names.
    package let federationPeers: PeerVerifier
    /// Who we accept when we dial a cluster's gateway: that cluster's gateway identity (role
    /// server), one remembering verifier per cluster, made on first use.
    private let peerGatewaysByCluster: NIOLockedValueBox<[String: PeerVerifier]>
    private let rootCertificates: [Certificate]
    private let allowedTrustDomains: Set<String>
    private let peerGatewayRule: PeerGatewayRule
    /// Our own identity, from our certificate.
    package let identity: SpiffeID?
    private let serverConfiguration: TLSConfiguration
    private let clientConfiguration: TLSConfiguration

    package init(config: GatewayConfig) throws {
        let files = config.tls
        let chain = try Self.certificates(files.certificateChain)
        let roots = try Self.certificates(files.rootCertificate)
        let key: NIOSSLPrivateKey
        do {
            _ = try PEMFiles.read(files.privateKey)
            key = try NIOSSLPrivateKey(file: files.privateKey, format: .pem)
        } catch let error as CertificateFileError {
            throw error
        } catch {
            throw CertificateFileError(path: files.privateKey, reason: "is not a valid PEM private key: \(error)")
        }
        let rootCertificates = try PEMFiles.certificates(at: files.rootCertificate)
        let leaf = try PEMFiles.certificates(at: files.certificateChain)[0]
        guard leaf.publicKey == (try Certificate.PrivateKey(pemEncoded: try PEMFiles.read(files.privateKey))).publicKey else {
            throw CertificateFileError(path: files.privateKey, reason: "does not match the certificate in \(files.certificateChain)")
        }
        identity = try? leaf.spiffeID()

        let keyExchange = KeyExchange(config.compliancePolicy)
        var server = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        server.minimumTLSVersion = keyExchange.minimumTLSVersion
        server.curves = keyExchange.groups
        // Requires a client certificate; the chain and SPIFFE checks are ours (MeshTrustPolicy),
        // run from the per-connection verification callback.
        server.certificateVerification = .noHostnameVerification
        server.trustRoots = .certificates(roots)
        // After we send close_notify, wait this long for the peer's. With half-closure
        // allowed, a peer that just drops TCP would otherwise hold the connection for NIOSSL's
        // default 5 s and stall drains.
        server.shutdownTimeout = .seconds(1)
        serverContext = try NIOSSLContext(configuration: server)
        serverConfiguration = server
        // A TCP service selects `eastwest-peer` when an EastWest gateway offers it: the entry
        // gateway then knows this gateway reads its original-client preamble.
        var tcp = server
        tcp.applicationProtocols = [ClientHelloALPN.peerMarker]
        var byALPN: [[String]: NIOSSLContext] = [[]: try NIOSSLContext(configuration: tcp)]
        for alpn in Set(ServiceProtocol.allCases.map(\.applicationProtocols)) where byALPN[alpn] == nil {
            var offering = server
            offering.applicationProtocols = alpn
            byALPN[alpn] = try NIOSSLContext(configuration: offering)
        }
        serverContextsByALPN = byALPN

        var client = TLSConfiguration.makeClientConfiguration()
        client.minimumTLSVersion = keyExchange.minimumTLSVersion
        client.curves = keyExchange.groups
        client.certificateChain = chain.map { .certificate($0) }
        client.privateKey = .privateKey(key)
        client.trustRoots = .certificates(roots)
        client.certificateVerification = .noHostnameVerification
        client.shutdownTimeout = .seconds(1)
        // Every dial of a peer gateway offers `eastwest-peer`, which a peer reads before its
        // handshake: it tells an EastWest gateway (terminate, it speaks Istio mTLS to us) from
        // an Istio workload on an AUTO_PASSTHROUGH server (pass through). A TCP service selects
        // it, and the connection then starts with the original-client preamble.
        var offeringNothing = client
        offeringNothing.applicationProtocols = [ClientHelloALPN.peerMarker]
        clientContext = try NIOSSLContext(configuration: offeringNothing)
        var offeringH2 = client
        offeringH2.applicationProtocols = ["h2", ClientHelloALPN.peerMarker]
        clientContextOfferingH2 = try NIOSSLContext(configuration: offeringH2)
        clientConfiguration = client

        self.rootCertificates = rootCertificates
        let allowedTrustDomains = config.effectiveAllowedTrustDomains, rule = config.peerGatewayRule
        self.allowedTrustDomains = allowedTrustDomains
        peerGatewayRule = rule
        clients = PeerVerifier(policy: MeshTrustPolicy(roots: rootCertificates, allowedTrustDomains: allowedTrustDomains))
        federationPeers = PeerVerifier(policy: MeshTrustPolicy(
            roots: rootCertificates, allowedTrustDomains: allowedTrustDomains, admits: { rule.admits($0) }))
        peerGatewaysByCluster = NIOLockedValueBox([:])
    }

    /// The key exchange groups both sides of the gateway's mTLS offer, and the oldest TLS
    /// version. By default Envoy's (`DEFAULT_CURVES`, X25519 then P-256, the same for its
    /// listeners and clusters), not BoringSSL's, which adds X25519MLKEM768: an Istio gateway
    /// does not negotiate the post-quantum hybrid unless its compliance policy says `pqc`, and
    /// the hybrid costs a new connection's handshake an ML-KEM encapsulation and ~2 KB more.
    struct KeyExchange {
        var groups: [NIOTLSCurve]
        var minimumTLSVersion: TLSVersion

        init(_ policy: GatewayConfig.CompliancePolicy?) {
            switch policy {
            case nil: (groups, minimumTLSVersion) = ([.x25519, .secp256r1], .tlsv12)
            case .pqc: (groups, minimumTLSVersion) = ([.x25519_MLKEM768], .tlsv13)
            }
        }
    }

    /// The verifier for dialling `cluster`'s gateways.
    package func peerGateways(of cluster: String) -> PeerVerifier {
        peerGatewaysByCluster.withLockedValue { verifiers in
            if let verifier = verifiers[cluster] { return verifier }
            let rule = peerGatewayRule
            let verifier = PeerVerifier(policy: MeshTrustPolicy(
                roots: rootCertificates, allowedTrustDomains: allowedTrustDomains, role: .server,
                admits: { rule.admits($0, cluster: cluster) }))
            verifiers[cluster] = verifier
            return verifier
        }
    }

    /// The client context for dialling a peer gateway offering `applicationProtocols` (none or `h2`).
    package func clientContext(offering applicationProtocols: [String]) -> NIOSSLContext {
        applicationProtocols == ["h2"] ? clientContextOfferingH2 : clientContext
    }

    /// Whether a verified client identity is another gateway (its traffic is never forwarded again).
    package func isPeerGateway(_ id: SpiffeID) -> Bool { peerGatewayRule.admits(id) }

    /// The server context for a route: it offers the ALPN its service speaks.
    package func serverContext(for service: ServiceProtocol?) -> NIOSSLContext {
        serverContextsByALPN[service?.applicationProtocols ?? []] ?? serverContext
    }

    /// The same certificates and checks for a protocol of our own on the 15443 port (gossip
    /// between gateways), negotiated by ALPN so a peer speaking anything else is turned away.
    package func contexts(applicationProtocols: [String]) throws -> (server: NIOSSLContext, client: NIOSSLContext) {
        var server = serverConfiguration
        server.applicationProtocols = applicationProtocols
        var client = clientConfiguration
        client.applicationProtocols = applicationProtocols
        return (try NIOSSLContext(configuration: server), try NIOSSLContext(configuration: client))
    }

    private static func certificates(_ path: String) throws -> [NIOSSLCertificate] {
        _ = try PEMFiles.certificates(at: path)  // names the path in any error
        do {
            return try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw CertificateFileError(path: path, reason: "is not a valid PEM certificate file: \(error)")
        }
    }
}
