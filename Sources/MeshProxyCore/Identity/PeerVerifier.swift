import Foundation
import NIOCore
import NIOSSL
import Synchronization
import X509

/// A trust policy as TLS handshakes run it: the one verification entry point for the listener,
/// the upstream connector and the federation transport, with a memory of accepted chains.
///
/// A workload presents the same chain on every connection until its certificate rotates, so an
/// accepted chain (byte for byte) is remembered until the earliest expiry on it and answered on
/// the event loop at once; BoringSSL still checks on every handshake that the peer holds the
/// leaf's private key. A chain not seen before goes through swift-certificates' `Verifier`,
/// which is async: the handshake waits for it (swift-nio-ssl lets the callback's promise
/// complete later) and `PreHandshakeGuard` holds a client's early end of input until then.
/// A new `GatewayTLS` (a changed root or policy) starts with an empty memory.
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

    /// Verifies the chain a TLS callback was handed and answers the handshake's `promise`;
    /// `outcome` runs first, on the promise's event loop, so the caller can record the identity
    /// or the reason before the handshake goes on.
    package func verify(_ certificates: [NIOSSLCertificate], answering promise: EventLoopPromise<NIOSSLVerificationResult>,
                        outcome: @escaping (Result<SpiffeID, PeerRejection>) -> Void) {
        let now = Date()
        func answer(_ result: Result<SpiffeID, PeerRejection>) {
            outcome(result)
            promise.succeed(result.isSuccess ? .certificateVerified : .failed)
        }
        switch lookup(certificates, now: now) {
        case .answered(let result):
            answer(result)
        case .unknown(let chain):
            promise.futureResult.eventLoop.makeFutureWithTask { await self.evaluate(chain, now: now) }
                .assumeIsolated()
                .whenSuccess(answer)
        }
    }

    /// The identity of a peer whose TLS session was resumed. BoringSSL does not call the
    /// verification callback then: the session (issued by this gateway's own ticket keys after
    /// a full, verified handshake) carries only the peer's leaf. The leaf must still be within
    /// its validity and hold one SPIFFE ID the policy admits; otherwise the peer has no identity
    /// and is treated as unauthenticated.
    package func identity(ofResumedSessionLeaf leaf: NIOSSLCertificate, now: Date) -> SpiffeID? {
        guard let der = try? leaf.toDERBytes(), let certificate = try? Certificate(derEncoded: der),
              certificate.notValidBefore <= now, now <= certificate.notValidAfter,
              let id = try? certificate.spiffeID(), policy.allowedTrustDomains.contains(id.trustDomain),
              policy.admits?(id) ?? true else { return nil }
        return id
    }

    /// Runs the policy on certificates as NIOSSL hands them over (remembered chains answer at once).
    package func evaluate(peerCertificates presented: [NIOSSLCertificate], now: Date) async -> Result<SpiffeID, PeerRejection> {
        switch lookup(presented, now: now) {
        case .answered(let result): result
        case .unknown(let chain): await evaluate(chain, now: now)
        }
    }

    /// A chain as presented: its DER and the memory's key for it.
    private struct PresentedChain: Sendable {
        var der: [[UInt8]]
        var key: [UInt8]
    }

    private enum Lookup {
        /// Unreadable, or remembered as accepted.
        case answered(Result<SpiffeID, PeerRejection>)
        /// Not seen before (or its memory ran out): the policy must run.
        case unknown(PresentedChain)
    }

    private func lookup(_ certificates: [NIOSSLCertificate], now: Date) -> Lookup {
        switch Self.der(certificates) {
        case .failure(let rejection): return .answered(.failure(rejection))
        case .success(let der):
            let chain = PresentedChain(der: der, key: Array(der.joined()))
            if let hit = accepted.withLock({ $0[chain.key] }), hit.notBefore <= now, now <= hit.notAfter {
                return .answered(.success(hit.identity))
            }
            return .unknown(chain)
        }
    }

    private func evaluate(_ presented: PresentedChain, now: Date) async -> Result<SpiffeID, PeerRejection> {
        let chain: [Certificate]
        do {
            chain = try presented.der.map { try Certificate(derEncoded: $0) }
        } catch {
            return .failure(.malformedSpiffeID("peer certificate cannot be parsed: \(error)"))
        }
        let result = await policy.evaluate(presented: chain, now: now)
        if case .success(let identity) = result {
            let certificates = chain + policy.roots
            let entry = Accepted(identity: identity, notBefore: certificates.map(\.notValidBefore).max() ?? now,
                                 notAfter: certificates.map(\.notValidAfter).min() ?? now)
            accepted.withLock { accepted in
                if accepted.count >= capacity { accepted.removeAll(keepingCapacity: true) }
                accepted[presented.key] = entry
            }
        }
        return result
    }

    private static func der(_ certificates: [NIOSSLCertificate]) -> Result<[[UInt8]], PeerRejection> {
        do {
            return .success(try certificates.map { try $0.toDERBytes() })
        } catch {
            return .failure(.malformedSpiffeID("peer certificate cannot be read: \(error)"))
        }
    }
}

extension Result {
    fileprivate var isSuccess: Bool { if case .success = self { true } else { false } }
}
