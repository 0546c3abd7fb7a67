import Crypto
import Foundation
import SwiftASN1
import X509

/// A certificate with the private key that goes with it.
package struct IssuedCertificate: Sendable {
    package var certificate: Certificate
    package var privateKey: Certificate.PrivateKey

    package init(certificate: Certificate, privateKey: Certificate.PrivateKey) {
        self.certificate = certificate
        self.privateKey = privateKey
    }
}

/// Issues the mesh's certificates the way Istio's plugged-in CA expects them: a self-signed root,
/// one intermediate per cluster (path length 0), and workload leaves whose only identity is the
/// SPIFFE ID in the URI SAN (plus optional DNS names). ECDSA P-256 throughout.
///
/// Pure: the caller passes `now`, so tests can mint certificates that are already expired.
package enum CertificateAuthority {
    /// How long certificates live unless the caller says otherwise. Istio's self-signed root
    /// lives 10 years, its workload certificates 24 hours; ours live longer because a laptop
    /// topology has no rotation yet.
    package static let defaultRootValidity: Duration = .seconds(10 * 365 * 86_400)
    package static let defaultIntermediateValidity: Duration = .seconds(5 * 365 * 86_400)
    package static let defaultWorkloadValidity: Duration = .seconds(365 * 86_400)
    /// Clock skew allowance: certificates start an hour in the past, as Istio's do.
    static let backdate: TimeInterval = 3600

    package static func makeRoot(
        trustDomain: String, validity: Duration = defaultRootValidity, now: Date
    ) throws -> IssuedCertificate {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        // Istio's root carries the trust domain as its organisation.
        let name = try DistinguishedName {
            OrganizationName(trustDomain)
            CommonName("EastWest Root CA")
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: key.publicKey,
            notValidBefore: now - backdate, notValidAfter: now + validity.timeInterval,
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: key.publicKey)
            },
            issuerPrivateKey: key)
        return IssuedCertificate(certificate: certificate, privateKey: key)
    }

    /// A cluster's signing CA, as Istio's `cacerts` secret holds it (`ca-cert.pem`).
    package static func makeIntermediate(
        cluster: String, trustDomain: String, issuer: IssuedCertificate,
        validity: Duration = defaultIntermediateValidity, now: Date
    ) throws -> IssuedCertificate {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        let subject = try DistinguishedName {
            OrganizationName(trustDomain)
            CommonName("EastWest Intermediate CA \(cluster)")
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: key.publicKey,
            notValidBefore: now - backdate, notValidAfter: now + validity.timeInterval,
            issuer: issuer.certificate.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: key.publicKey)
                AuthorityKeyIdentifier(keyIdentifier: try issuer.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
            },
            issuerPrivateKey: issuer.privateKey)
        return IssuedCertificate(certificate: certificate, privateKey: key)
    }

    /// A workload (or gateway) leaf usable as both TLS client and server, like Istio's.
    package static func makeWorkload(
        spiffeID: SpiffeID, dnsNames: [String] = [], issuer: IssuedCertificate,
        validity: Duration = defaultWorkloadValidity, now: Date,
        notBefore: Date? = nil
    ) throws -> IssuedCertificate {
        let key = Certificate.PrivateKey(P256.Signing.PrivateKey())
        var names: [GeneralName] = [.uniformResourceIdentifier(spiffeID.description)]
        names += dnsNames.map { .dnsName($0) }
        let start = notBefore ?? (now - backdate)
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: key.publicKey,
            notValidBefore: start, notValidAfter: start + backdate + validity.timeInterval,
            issuer: issuer.certificate.subject,
            subject: DistinguishedName(),  // Istio leaves the subject empty; the SAN is the identity
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                AuthorityKeyIdentifier(keyIdentifier: try issuer.certificate.extensions.subjectKeyIdentifier?.keyIdentifier)
                // RFC 5280 §4.2.1.6: the SAN must be critical when the subject is empty.
                Critical(SubjectAlternativeNames(names))
            },
            issuerPrivateKey: issuer.privateKey)
        return IssuedCertificate(certificate: certificate, privateKey: key)
    }
}

extension Duration {
    package var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }
}

extension Certificate {
    /// The SPIFFE ID in the URI SAN, nil when there is none. Throws when a `spiffe://` URI is
    /// present but malformed, so the caller can say so.
    package func spiffeID() throws -> SpiffeID? {
        guard let sans = try extensions.subjectAlternativeNames else { return nil }
        for name in sans {
            if case .uniformResourceIdentifier(let uri) = name, uri.hasPrefix("spiffe://") {
                return try SpiffeID(parsing: uri)
            }
        }
        return nil
    }

    package var dnsNames: [String] {
        guard let sans = try? extensions.subjectAlternativeNames else { return [] }
        return sans.compactMap { if case .dnsName(let n) = $0 { return n } else { return nil } }
    }
}
