import Foundation
import NIOCore
import NIOSSL
import Synchronization
import X509

/// The TLS side of one gateway config: the server context for 15443, the client context for
/// dialling peer gateways, and the trust policies both sides check peers against.
/// Built once per config generation, off the event loop (it reads files), then shared.
package struct GatewayTLS: Sendable {
    package let serverContext: NIOSSLContext
    package let clientContext: NIOSSLContext
    /// Who may connect to this gateway.
    package let clientPolicy: MeshTrustPolicy
    /// Who we accept when we dial another cluster's gateway.
    package let peerGatewayPolicy: MeshTrustPolicy
    /// The two policies as handshakes run them (remembering accepted chains).
    package let clients: PeerVerifier
    package let peerGateways: PeerVerifier
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

        var server = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        server.minimumTLSVersion = .tlsv12
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

        var client = TLSConfiguration.makeClientConfiguration()
        client.minimumTLSVersion = .tlsv12
        client.certificateChain = chain.map { .certificate($0) }
        client.privateKey = .privateKey(key)
        client.trustRoots = .certificates(roots)
        client.certificateVerification = .noHostnameVerification
        client.shutdownTimeout = .seconds(1)
        clientContext = try NIOSSLContext(configuration: client)
        clientConfiguration = client

        clientPolicy = MeshTrustPolicy(roots: rootCertificates, allowedTrustDomains: config.effectiveAllowedTrustDomains)
        peerGatewayPolicy = MeshTrustPolicy(roots: rootCertificates, allowedTrustDomains: config.effectiveAllowedTrustDomains,
                                            allowedIdentities: config.effectivePeerGatewayIdentities)
        clients = PeerVerifier(policy: clientPolicy)
        peerGateways = PeerVerifier(policy: peerGatewayPolicy)
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

/// A trust policy as the TLS callbacks run it: with a memory of chains it already accepted.
///
/// The mesh check parses every certificate and verifies each signature up to the root; a
/// workload presents the same chain on every connection until its certificate rotates, so an
/// accepted chain (byte for byte) is remembered until the earliest expiry on it. BoringSSL
/// still checks on every handshake that the peer holds the leaf's private key. A reload builds
/// a new `GatewayTLS`, so a changed root or policy starts with an empty memory.
package final class PeerVerifier: Sendable {
    package let policy: MeshTrustPolicy
    private let accepted = Mutex<[[UInt8]: Accepted]>([:])
    /// Distinct chains remembered at most; beyond it the memory starts over.
    private let capacity = 10_000

    private struct Accepted {
        var identity: SpiffeID
        var notBefore: Date
        var notAfter: Date
    }

    package init(policy: MeshTrustPolicy) { self.policy = policy }

    /// Runs the policy on certificates as NIOSSL hands them to a verification callback.
    package func evaluate(peerCertificates presented: [NIOSSLCertificate], now: Date) -> Result<SpiffeID, PeerRejection> {
        let der: [[UInt8]]
        do {
            der = try presented.map { try $0.toDERBytes() }
        } catch {
            return .failure(.malformedSpiffeID("peer certificate cannot be read: \(error)"))
        }
        let key = Array(der.joined())
        if let hit = accepted.withLock({ $0[key] }), hit.notBefore <= now, now <= hit.notAfter {
            return .success(hit.identity)
        }
        let chain: [Certificate]
        do {
            chain = try der.map { try Certificate(derEncoded: $0) }
        } catch {
            return .failure(.malformedSpiffeID("peer certificate cannot be parsed: \(error)"))
        }
        let result = policy.evaluate(presented: chain, now: now)
        if case .success(let identity) = result {
            let certificates = chain + policy.roots
            let entry = Accepted(identity: identity, notBefore: certificates.map(\.notValidBefore).max() ?? now,
                                 notAfter: certificates.map(\.notValidAfter).min() ?? now)
            accepted.withLock { accepted in
                if accepted.count >= capacity { accepted.removeAll(keepingCapacity: true) }
                accepted[key] = entry
            }
        }
        return result
    }
}
