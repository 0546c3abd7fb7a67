import Foundation
@_spi(FixedExpiryValidationTime) import X509
import SwiftASN1

/// Which end of a TLS connection the peer is. It decides the extended key usage the peer's
/// leaf must allow, when it names any: `clientAuth` for a client, `serverAuth` for a server.
package enum PeerRole: Sendable {
    case client
    case server
}

/// Decides whether a TLS peer is a member of the mesh, as RFC 5280 and the SPIFFE X509-SVID
/// rules require: swift-certificates' `Verifier` builds the chain to a mesh root and runs
/// `RFC5280Policy` (version, validity, basic constraints and path length, name constraints)
/// behind `MeshIdentityPolicy` (issuers may sign certificates, the leaf is not a CA, the
/// extended key usage fits the role, one SPIFFE ID in an allowed trust domain, and for peer
/// gateways one of the expected identities).
///
/// Why our own policy first: both run on every candidate chain, and the first to refuse names
/// the reason. Ours gives a short, specific reason for the cases a user meets (expired, path
/// length, CA leaf, key usage); RFC5280Policy's reasons print whole certificates.
package struct MeshTrustPolicy: Sendable {
    package var roots: [Certificate] { didSet { rootStore = CertificateStore(roots) } }
    package var allowedTrustDomains: Set<String>
    /// When set, only identities it accepts pass (peer gateways: a gateway identity, of the
    /// cluster dialled when we dial).
    package var admits: (@Sendable (SpiffeID) -> Bool)?
    package var role: PeerRole
    private var rootStore: CertificateStore

    package init(roots: [Certificate], allowedTrustDomains: Set<String>, role: PeerRole = .client,
                 admits: (@Sendable (SpiffeID) -> Bool)? = nil) {
        self.roots = roots
        self.rootStore = CertificateStore(roots)
        self.allowedTrustDomains = allowedTrustDomains
        self.role = role
        self.admits = admits
    }

    /// Only the listed identities pass.
    package init(roots: [Certificate], allowedTrustDomains: Set<String>, allowedIdentities: Set<SpiffeID>, role: PeerRole = .client) {
        self.init(roots: roots, allowedTrustDomains: allowedTrustDomains, role: role, admits: { allowedIdentities.contains($0) })
    }

    /// `presented` is the peer's chain as sent on the wire: leaf first.
    package func evaluate(presented: [Certificate], now: Date) async -> Result<SpiffeID, PeerRejection> {
        guard let leaf = presented.first else { return .failure(.noCertificate) }
        // The Verifier refuses a leaf with an unknown critical extension without a reason, and
        // skips such an intermediate while building; say which extension it was.
        for certificate in presented {
            if let oid = certificate.extensions.first(where: { $0.critical && !Self.understoodCriticalExtensions.contains($0.oid) })?.oid {
                return .failure(.unknownCriticalExtension(subject: Self.name(certificate), oid: "\(oid)"))
            }
        }
        let identity = MeshIdentityPolicy(now: now, role: role, allowedTrustDomains: allowedTrustDomains, admits: admits)
        var verifier = Verifier(rootCertificates: rootStore) {
            identity
            RFC5280Policy(fixedExpiryValidationTime: now)
        }
        switch await verifier.validate(leaf: leaf, intermediates: CertificateStore(presented.dropFirst())) {
        case .validCertificate:
            // The identity policy accepted this leaf, so it holds a well-formed SPIFFE ID.
            guard let id = try? leaf.spiffeID() else { return .failure(.noSpiffeID) }
            return .success(id)
        case .couldNotValidate(let failures):
            guard let first = failures.first else {
                return .failure(.untrustedIssuer(issuer: leaf.issuer.description))
            }
            return .failure(identity.rejection(of: first.chain) ?? .chainRejected(first.policyFailureReason.description))
        }
    }

    /// Critical extensions some policy here enforces: the union the Verifier itself uses.
    static let understoodCriticalExtensions: Set<ASN1ObjectIdentifier> =
        Set(RFC5280Policy().verifyingCriticalExtensions).union(MeshIdentityPolicy.enforcedExtensions)

    static func name(_ certificate: Certificate) -> String {
        if let id = try? certificate.spiffeID() { return id.description }
        let subject = certificate.subject.description
        return subject.isEmpty ? "serial \(certificate.serialNumber)" : subject
    }
}

/// The mesh's rules over a chain the Verifier built (leaf first, root last), as a
/// `VerifierPolicy`, with the refusal as a typed `PeerRejection`.
struct MeshIdentityPolicy: VerifierPolicy {
    var now: Date
    var role: PeerRole
    var allowedTrustDomains: Set<String>
    var admits: (@Sendable (SpiffeID) -> Bool)?

    /// Extended key usage, the SAN (critical when the subject is empty, as in Istio's
    /// certificates) and key usage (keyCertSign on issuers, none on the leaf).
    static let enforcedExtensions: [ASN1ObjectIdentifier] =
        [.X509ExtensionID.extendedKeyUsage, .X509ExtensionID.subjectAlternativeName, .X509ExtensionID.keyUsage]

    var verifyingCriticalExtensions: [ASN1ObjectIdentifier] { Self.enforcedExtensions }

    func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) -> PolicyEvaluationResult {
        guard let rejection = rejection(of: chain) else { return .meetsPolicy }
        return .failsToMeetPolicy(reason: rejection.description)
    }

    func rejection(of chain: UnverifiedCertificateChain) -> PeerRejection? {
        let certificates = Array(chain)
        for certificate in certificates {
            if now > certificate.notValidAfter {
                return .expired(subject: MeshTrustPolicy.name(certificate), notAfter: certificate.notValidAfter)
            }
            if now < certificate.notValidBefore {
                return .notYetValid(subject: MeshTrustPolicy.name(certificate), notBefore: certificate.notValidBefore)
            }
        }
        // Issuers: each must be a CA allowed to sign certificates, and no more CAs may sit below
        // it than its path length allows (intermediates between it and the leaf).
        for (index, issuer) in certificates.enumerated().dropFirst() {
            let name = MeshTrustPolicy.name(issuer)
            guard case .isCertificateAuthority(let maxPathLength)? = try? issuer.extensions.basicConstraints else {
                return .issuerNotCA(subject: name)
            }
            if let usage = try? issuer.extensions.keyUsage, !usage.keyCertSign {
                return .issuerCannotSign(subject: name)
            }
            let caBelow = index - 1
            if let maxPathLength, caBelow > maxPathLength {
                return .pathLengthExceeded(subject: name, limit: maxPathLength, intermediates: caBelow)
            }
        }
        let leaf = certificates[0]
        if case .isCertificateAuthority? = try? leaf.extensions.basicConstraints {
            return .leafIsCA(subject: MeshTrustPolicy.name(leaf))
        }
        if let usage = try? leaf.extensions.keyUsage, usage.keyCertSign || usage.cRLSign {
            return .leafIsCA(subject: MeshTrustPolicy.name(leaf))
        }
        let needed: ExtendedKeyUsage.Usage = role == .client ? .clientAuth : .serverAuth
        do {
            if let usages = try leaf.extensions.extendedKeyUsage, !usages.contains(needed), !usages.contains(.any) {
                return .wrongKeyUsage(subject: MeshTrustPolicy.name(leaf), needed: role == .client ? "clientAuth" : "serverAuth",
                                      present: usages.map { Self.describe($0) })
            }
        } catch {
            return .wrongKeyUsage(subject: MeshTrustPolicy.name(leaf), needed: role == .client ? "clientAuth" : "serverAuth",
                                  present: ["unreadable: \(error)"])
        }
        let spiffeID: SpiffeID
        do {
            guard let id = try leaf.spiffeID() else { return .noSpiffeID }
            spiffeID = id
        } catch let error as SpiffeIDError {
            return .malformedSpiffeID(error.description)
        } catch {
            return .malformedSpiffeID("unreadable subject alternative names: \(error)")
        }
        guard allowedTrustDomains.contains(spiffeID.trustDomain) else { return .trustDomainNotAllowed(spiffeID) }
        if let admits, !admits(spiffeID) { return .identityNotAllowed(spiffeID) }
        return nil
    }

    private static func describe(_ usage: ExtendedKeyUsage.Usage) -> String {
        switch usage {
        case .serverAuth: "serverAuth"
        case .clientAuth: "clientAuth"
        case .codeSigning: "codeSigning"
        case .emailProtection: "emailProtection"
        case .timeStamping: "timeStamping"
        case .ocspSigning: "OCSPSigning"
        default: "\(usage)"
        }
    }
}

/// Why a TLS peer was refused. `description` is the reason in the gateway's log line.
package enum PeerRejection: Error, Sendable, Equatable, CustomStringConvertible {
    case noCertificate
    case untrustedIssuer(issuer: String)
    case expired(subject: String, notAfter: Date)
    case notYetValid(subject: String, notBefore: Date)
    case issuerNotCA(subject: String)
    case issuerCannotSign(subject: String)
    case pathLengthExceeded(subject: String, limit: Int, intermediates: Int)
    case leafIsCA(subject: String)
    case wrongKeyUsage(subject: String, needed: String, present: [String])
    case unknownCriticalExtension(subject: String, oid: String)
    case chainRejected(String)
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
        case .issuerNotCA(let subject): "issuer \(subject) is not a CA (basic constraints)"
        case .issuerCannotSign(let subject): "issuer \(subject) may not sign certificates (key usage lacks keyCertSign)"
        case .pathLengthExceeded(let subject, let limit, let intermediates):
            "path length exceeded: CA \(subject) allows \(limit) intermediate CA(s) below it, the chain has \(intermediates)"
        case .leafIsCA(let subject): "leaf certificate \(subject) is a CA; a workload certificate must not be"
        case .wrongKeyUsage(let subject, let needed, let present):
            "extended key usage of \(subject) lacks \(needed) (has \(present.joined(separator: ", ")))"
        case .unknownCriticalExtension(let subject, let oid): "certificate \(subject) has an unknown critical extension \(oid)"
        case .chainRejected(let reason): "certificate chain refused: \(reason)"
        case .noSpiffeID: "certificate has no SPIFFE ID in its URI SAN"
        case .malformedSpiffeID(let reason): reason
        case .trustDomainNotAllowed(let id): "trust domain '\(id.trustDomain)' of \(id) is not allowed"
        case .identityNotAllowed(let id): "identity \(id) is not an allowed peer"
        }
    }
}
