import Foundation
import MeshProxyCore

/// A mesh PKI made with the `openssl` command alone, independent of our own CA, so chains
/// an attacker could build are built the way an attacker would. Every certificate is P-256,
/// signed by `openssl ca` (which can back-date and post-date validity).
struct OpenSSLPKI {
    let directory: String

    /// A certificate written as `NAME.pem` with its key `NAME.key`.
    struct Issued {
        var name: String
        var certificate: String
        var key: String
    }

    init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: "\(directory)/newcerts", withIntermediateDirectories: true)
        try "1000\n".write(toFile: "\(directory)/serial", atomically: true, encoding: .utf8)
        try "".write(toFile: "\(directory)/index.txt", atomically: true, encoding: .utf8)
        try """
            [ca]
            default_ca = mesh
            [mesh]
            database = \(directory)/index.txt
            new_certs_dir = \(directory)/newcerts
            serial = \(directory)/serial
            default_md = sha256
            policy = anything
            unique_subject = no
            email_in_dn = no
            [anything]
            commonName = optional
            organizationName = optional
            [req]
            distinguished_name = dn
            [dn]
            """.write(toFile: "\(directory)/openssl.cnf", atomically: true, encoding: .utf8)
    }

    /// Extensions of a CA; `pathLength` nil means unlimited, `keyUsage` nil means the usual.
    static func ca(pathLength: Int? = nil, keyUsage: String = "critical,keyCertSign,cRLSign") -> [String] {
        ["basicConstraints=critical,CA:TRUE" + (pathLength.map { ",pathlen:\($0)" } ?? ""),
         "keyUsage=\(keyUsage)", "subjectKeyIdentifier=hash", "authorityKeyIdentifier=keyid"]
    }

    /// Extensions of a workload leaf like Istio's, with `extra` lines appended.
    static func leaf(uri: String?, dns: [String] = [], extendedKeyUsage: String = "serverAuth,clientAuth", extra: [String] = []) -> [String] {
        let names = (uri.map { ["URI:\($0)"] } ?? []) + dns.map { "DNS:\($0)" }
        return ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                "extendedKeyUsage=\(extendedKeyUsage)", "authorityKeyIdentifier=keyid"]
            + (names.isEmpty ? [] : ["subjectAltName=\(names.joined(separator: ","))"]) + extra
    }

    func root(_ name: String, organization: String = "cluster.local") async throws -> Issued {
        let issued = Issued(name: name, certificate: "\(directory)/\(name).pem", key: "\(directory)/\(name).key")
        try await generateKey(issued.key)
        let extensions = Self.ca().filter { !$0.hasPrefix("authorityKeyIdentifier") }.flatMap { ["-addext", $0] }
        try await openssl(["req", "-x509", "-new", "-config", "\(directory)/openssl.cnf", "-key", issued.key,
                           "-subj", "/O=\(organization)/CN=\(name)", "-days", "3650", "-out", issued.certificate] + extensions)
        return issued
    }

    /// `validFrom`/`validUntil` as offsets from now in seconds (default: an hour ago, a year on).
    func issue(_ name: String, by issuer: Issued, extensions: [String],
               validFrom: TimeInterval = -3600, validUntil: TimeInterval = 365 * 86_400) async throws -> Issued {
        let issued = Issued(name: name, certificate: "\(directory)/\(name).pem", key: "\(directory)/\(name).key")
        try await generateKey(issued.key)
        let request = "\(directory)/\(name).csr"
        try await openssl(["req", "-new", "-config", "\(directory)/openssl.cnf", "-key", issued.key, "-subj", "/CN=\(name)", "-out", request])
        let file = try writeExtensions(name, extensions)
        try await openssl(["ca", "-batch", "-notext", "-config", "\(directory)/openssl.cnf", "-cert", issuer.certificate,
                     "-keyfile", issuer.key, "-in", request, "-out", issued.certificate, "-extfile", file, "-extensions", "v3",
                     "-startdate", Self.time(validFrom), "-enddate", Self.time(validUntil)])
        return issued
    }

    /// A directory holding `cert-chain.pem` (the chain, leaf first), `key.pem` and
    /// `root-cert.pem`, as the gateway and `TestMesh.curl` expect.
    func bundle(_ name: String, chain: [Issued], root: Issued) throws -> String {
        let dir = "\(directory)/\(name)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let pems = try chain.map { try String(contentsOfFile: $0.certificate, encoding: .utf8) }
        try pems.joined().write(toFile: "\(dir)/cert-chain.pem", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: chain[0].key, toPath: "\(dir)/key.pem")
        try FileManager.default.copyItem(atPath: root.certificate, toPath: "\(dir)/root-cert.pem")
        return dir
    }

    /// What `openssl verify` says of a bundle as a TLS client (exit status 0 means accepted).
    func verify(_ bundle: String, root: Issued) async throws -> CommandResult {
        // The leaf alone, the rest as untrusted intermediates.
        let chain = try String(contentsOfFile: "\(bundle)/cert-chain.pem", encoding: .utf8)
        let parts = chain.components(separatedBy: "-----END CERTIFICATE-----\n").filter { !$0.isEmpty }.map { $0 + "-----END CERTIFICATE-----\n" }
        try parts[0].write(toFile: "\(bundle)/leaf.pem", atomically: true, encoding: .utf8)
        try parts.dropFirst().joined().write(toFile: "\(bundle)/untrusted.pem", atomically: true, encoding: .utf8)
        var arguments = ["verify", "-purpose", "sslclient", "-CAfile", root.certificate]
        if parts.count > 1 { arguments += ["-untrusted", "\(bundle)/untrusted.pem"] }
        return try await runCommand("/usr/bin/openssl", arguments + ["\(bundle)/leaf.pem"])
    }

    private func generateKey(_ path: String) async throws {
        try await openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path])
    }

    private func writeExtensions(_ name: String, _ lines: [String]) throws -> String {
        let path = "\(directory)/\(name).ext"
        try (["[v3]"] + lines).joined(separator: "\n").appending("\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private func openssl(_ arguments: [String]) async throws {
        let result = try await runCommand("/usr/bin/openssl", arguments)
        guard result.status == 0 else { throw PKIError(command: arguments.joined(separator: " "), output: result.stderr) }
    }

    private static func time(_ offset: TimeInterval) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMddHHmmss'Z'"
        return formatter.string(from: Date(timeIntervalSinceNow: offset))
    }

    struct PKIError: Error, CustomStringConvertible {
        var command: String
        var output: String
        var description: String { "openssl \(command) failed: \(output)" }
    }
}
