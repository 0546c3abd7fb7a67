import Foundation
import SwiftASN1
import X509

/// The on-disk layout of a mesh CA, using the file names of Istio's plugged-in CA
/// (`cacerts` secret) so certificates move between EastWest and Istio unchanged:
///
///     D/root-cert.pem, D/root-key.pem                  the mesh root
///     D/<cluster>/ca-cert.pem, ca-key.pem,             a cluster's intermediate,
///                 cert-chain.pem, root-cert.pem        its chain up to the root
///     O/cert-chain.pem, O/key.pem, O/root-cert.pem     a workload: leaf then intermediate
///
/// Key files are written with mode 0600, and an existing key is never overwritten unless the
/// caller passes `force`.
package struct CertificateDirectory: Sendable {
    package var path: String

    package init(path: String) { self.path = path }

    package var rootCertificatePath: String { "\(path)/root-cert.pem" }
    package var rootKeyPath: String { "\(path)/root-key.pem" }
    package func clusterPath(_ cluster: String) -> String { "\(path)/\(cluster)" }

    // MARK: - Root

    @discardableResult
    package func createRoot(trustDomain: String, validity: Duration = CertificateAuthority.defaultRootValidity,
                            force: Bool = false, now: Date = Date()) throws -> IssuedCertificate {
        try refuseToOverwrite(rootKeyPath, force: force)
        let root = try CertificateAuthority.makeRoot(trustDomain: trustDomain, validity: validity, now: now)
        try createDirectory(path)
        try write(certificates: [root.certificate], to: rootCertificatePath)
        try write(key: root.privateKey, to: rootKeyPath)
        return root
    }

    package func loadRoot() throws -> IssuedCertificate {
        IssuedCertificate(certificate: try PEMFiles.certificates(at: rootCertificatePath)[0],
                          privateKey: try PEMFiles.privateKey(at: rootKeyPath))
    }

    /// The trust domain the root was created for (its organisation name).
    package func rootTrustDomain() throws -> String? {
        let root = try PEMFiles.certificates(at: rootCertificatePath)[0]
        for rdn in root.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.organizationName {
                return attribute.value.description
            }
        }
        return nil
    }

    // MARK: - Cluster intermediates

    @discardableResult
    package func createCluster(_ cluster: String, validity: Duration = CertificateAuthority.defaultIntermediateValidity,
                               force: Bool = false, now: Date = Date()) throws -> IssuedCertificate {
        let dir = clusterPath(cluster)
        try refuseToOverwrite("\(dir)/ca-key.pem", force: force)
        let root = try loadRoot()
        let intermediate = try CertificateAuthority.makeIntermediate(
            cluster: cluster, trustDomain: try rootTrustDomain() ?? "cluster.local", issuer: root,
            validity: validity, now: now)
        try createDirectory(dir)
        try write(certificates: [intermediate.certificate], to: "\(dir)/ca-cert.pem")
        try write(key: intermediate.privateKey, to: "\(dir)/ca-key.pem")
        try write(certificates: [intermediate.certificate, root.certificate], to: "\(dir)/cert-chain.pem")
        try write(certificates: [root.certificate], to: "\(dir)/root-cert.pem")
        return intermediate
    }

    package func loadCluster(_ cluster: String) throws -> IssuedCertificate {
        let dir = clusterPath(cluster)
        return IssuedCertificate(certificate: try PEMFiles.certificates(at: "\(dir)/ca-cert.pem")[0],
                                 privateKey: try PEMFiles.privateKey(at: "\(dir)/ca-key.pem"))
    }

    // MARK: - Workloads

    @discardableResult
    package func createWorkload(cluster: String, spiffeID: SpiffeID, dnsNames: [String] = [], outputPath: String,
                                validity: Duration = CertificateAuthority.defaultWorkloadValidity,
                                force: Bool = false, now: Date = Date(), notBefore: Date? = nil) throws -> IssuedCertificate {
        try refuseToOverwrite("\(outputPath)/key.pem", force: force)
        let intermediate = try loadCluster(cluster)
        let root = try PEMFiles.certificates(at: rootCertificatePath)[0]
        let leaf = try CertificateAuthority.makeWorkload(
            spiffeID: spiffeID, dnsNames: dnsNames, issuer: intermediate, validity: validity, now: now,
            notBefore: notBefore)
        try createDirectory(outputPath)
        try write(certificates: [leaf.certificate, intermediate.certificate], to: "\(outputPath)/cert-chain.pem")
        try write(key: leaf.privateKey, to: "\(outputPath)/key.pem")
        try write(certificates: [root], to: "\(outputPath)/root-cert.pem")
        return leaf
    }

    // MARK: - Files

    private func refuseToOverwrite(_ keyPath: String, force: Bool) throws {
        if !force && FileManager.default.fileExists(atPath: keyPath) {
            throw CertificateFileError(path: keyPath, reason: "already exists; pass --force to replace it")
        }
    }

    private func createDirectory(_ dir: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw CertificateFileError(path: dir, reason: "cannot create directory: \(error.localizedDescription)")
        }
    }

    private func write(certificates: [Certificate], to file: String) throws {
        let pem = try certificates.map { try $0.serializeAsPEM().pemString + "\n" }.joined()
        try PEMFiles.write(pem, to: file, mode: 0o644)
    }

    private func write(key: Certificate.PrivateKey, to file: String) throws {
        try PEMFiles.write(try key.serializeAsPEM().pemString + "\n", to: file, mode: 0o600)
    }
}

/// A certificate or key file that is missing, unreadable or not what it should be.
package struct CertificateFileError: Error, Sendable, CustomStringConvertible {
    package var path: String
    package var reason: String
    package init(path: String, reason: String) { self.path = path; self.reason = reason }
    package var description: String { "\(path): \(reason)" }
}

/// Reads and writes PEM files, turning every failure into a `CertificateFileError` naming the path.
package enum PEMFiles {
    package static func read(_ path: String) throws -> String {
        guard FileManager.default.fileExists(atPath: path) else {
            throw CertificateFileError(path: path, reason: "no such file")
        }
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw CertificateFileError(path: path, reason: "cannot be read")
        }
        return text
    }

    package static func certificates(at path: String) throws -> [Certificate] {
        let text = try read(path)
        do {
            let documents = try PEMDocument.parseMultiple(pemString: text)
            let certificates = try documents.filter { $0.discriminator == "CERTIFICATE" }.map { try Certificate(pemDocument: $0) }
            guard !certificates.isEmpty else { throw CertificateFileError(path: path, reason: "holds no PEM certificate") }
            return certificates
        } catch let error as CertificateFileError {
            throw error
        } catch {
            throw CertificateFileError(path: path, reason: "is not a valid PEM certificate file: \(error)")
        }
    }

    package static func privateKey(at path: String) throws -> Certificate.PrivateKey {
        let text = try read(path)
        do {
            return try Certificate.PrivateKey(pemEncoded: text)
        } catch {
            throw CertificateFileError(path: path, reason: "is not a valid PEM private key: \(error)")
        }
    }

    package static func write(_ text: String, to path: String, mode: Int) throws {
        // Create with the final mode so a key is never readable by others, even briefly.
        _ = FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: mode])
        do {
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        } catch {
            throw CertificateFileError(path: path, reason: "cannot be written: \(error.localizedDescription)")
        }
    }
}
