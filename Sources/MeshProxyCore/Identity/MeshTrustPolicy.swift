import Foundation
import X509

/// Decides whether a TLS peer is a member of the mesh: its chain must lead to a mesh root, every
/// certificate on the way must be valid at `now`, and the leaf's URI SAN must hold a SPIFFE ID in
/// an allowed trust domain (and, for peer gateways, be one of the expected identities).
///
/// Pure and synchronous so it runs inside NIOSSL's verification callback on the event loop and
/// names the exact reason a client was refused, which BoringSSL's "certificate verify failed"
/// does not.
package struct MeshTrustPolicy: Sendable {
    package var roots: [Certificate]
    package var allowedTrustDomains: Set<String>
    /// When set, only these identities pass (used when dialling a peer gateway).
    package var allowedIdentities: Set<SpiffeID>?
    /// Longest chain we follow (leaf, intermediates, root); Istio meshes use 2 or 3.
    package var maximumDepth = 5

    package init(roots: [Certificate], allowedTrustDomains: Set<String>, allowedIdentities: Set<SpiffeID>? = nil) {
        self.roots = roots
        self.allowedTrustDomains = allowedTrustDomains
        self.allowedIdentities = allowedIdentities
    }

    /// `presented` is the peer's chain as sent on the wire: leaf first.
    package func evaluate(presented: [Certificate], now: Date) -> Result<SpiffeID, PeerRejection> {
        guard let leaf = presented.first else { return .failure(.noCertificate) }
        var current = leaf
        var intermediates = Array(presented.dropFirst())
        var depth = 0
        while true {
            if let expiry = validityProblem(current, now: now) { return .failure(expiry) }
            if let root = roots.first(where: { $0.subject == current.issuer && $0.publicKey.isValidSignature(current.signature, for: current) }) {
                if let expiry = validityProblem(root, now: now) { return .failure(expiry) }
                break
            }
            depth += 1
            guard depth < maximumDepth,
                  let index = intermediates.firstIndex(where: { $0.subject == current.issuer && Self.isCA($0) && $0.publicKey.isValidSignature(current.signature, for: current) })
            else {
                return .failure(.untrustedIssuer(issuer: current.issuer.description))
            }
            current = intermediates.remove(at: index)
        }
        let spiffeID: SpiffeID
        do {
            guard let id = try leaf.spiffeID() else { return .failure(.noSpiffeID) }
            spiffeID = id
        } catch let error as SpiffeIDError {
            return .failure(.malformedSpiffeID(error.description))
        } catch {
            return .failure(.malformedSpiffeID("unreadable subject alternative names: \(error)"))
        }
        guard allowedTrustDomains.contains(spiffeID.trustDomain) else {
            return .failure(.trustDomainNotAllowed(spiffeID))
        }
        if let allowed = allowedIdentities, !allowed.contains(spiffeID) {
            return .failure(.identityNotAllowed(spiffeID))
        }
        return .success(spiffeID)
    }

    private func validityProblem(_ certificate: Certificate, now: Date) -> PeerRejection? {
        if now > certificate.notValidAfter {
            return .expired(subject: Self.name(certificate), notAfter: certificate.notValidAfter)
        }
        if now < certificate.notValidBefore {
            return .notYetValid(subject: Self.name(certificate), notBefore: certificate.notValidBefore)
        }
        return nil
    }

    private static func isCA(_ certificate: Certificate) -> Bool {
        guard let constraints = try? certificate.extensions.basicConstraints else { return false }
        if case .isCertificateAuthority = constraints { return true }
        return false
    }

    private static func name(_ certificate: Certificate) -> String {
        if let id = try? certificate.spiffeID() { return id.description }
        return certificate.subject.description
    }
}

/// Why a TLS peer was refused. `description` is the reason in the gateway's log line.
package enum PeerRejection: Error, Sendable, Equatable, CustomStringConvertible {
    case noCertificate
    case untrustedIssuer(issuer: String)
    case expired(subject: String, notAfter: Date)
    case notYetValid(subject: String, notBefore: Date)
    case noSpiffeID
    case malformedSpiffeID(String)
    case trustDomainNotAllowed(SpiffeID)
    case identityNotAllowed(SpiffeID)

    package var description: String {
        switch self {
        case .noCertificate: "no client certificate presented"
        case .untrustedIssuer(let issuer): "certificate chain does not lead to the mesh root (issuer \(issuer))"
        case .expired(let subject, let notAfter): "certificate of \(subject) expired at \(notAfter.formatted(.iso8601))"
        case .notYetValid(let subject, let notBefore): "certificate of \(subject) is not valid before \(notBefore.formatted(.iso8601))"
        case .noSpiffeID: "certificate has no SPIFFE ID in its URI SAN"
        case .malformedSpiffeID(let reason): reason
        case .trustDomainNotAllowed(let id): "trust domain '\(id.trustDomain)' of \(id) is not allowed"
        case .identityNotAllowed(let id): "identity \(id) is not an allowed peer"
        }
    }
}
