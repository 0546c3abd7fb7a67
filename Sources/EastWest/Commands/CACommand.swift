import ArgumentParser
import Foundation
import MeshProxyCore
import X509

struct CACommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "Mesh certificate authority with Istio's plugged-in CA file names.",
        subcommands: [Init.self, Cluster.self, Workload.self, Gateway.self, Operator.self, Inspect.self])

    struct Validity: ParsableArguments {
        @Option(help: "How long the certificate is valid, e.g. 365d, 8760h, 30m. Default depends on the kind.")
        var validity: String?

        func duration(default fallback: Duration) throws -> Duration {
            guard let validity else { return fallback }
            if validity.hasSuffix("d"), let days = Double(validity.dropLast()), days > 0 {
                return .seconds(days * 86_400)
            }
            guard let parsed = ConfigDuration(parsing: validity), parsed.duration > .zero else {
                throw ValidationError("--validity '\(validity)' is not a duration such as 365d, 24h or 30m")
            }
            return parsed.duration
        }
    }

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create the mesh root: D/root-cert.pem and D/root-key.pem.")
        @Option(help: "CA directory.") var dir: String
        @Option(help: "Trust domain the root is for.") var trustDomain = "cluster.local"
        @OptionGroup var validity: Validity
        @Flag(help: "Replace an existing root key.") var force = false

        func run() async throws {
            let root = try reportingFileErrors { try CertificateDirectory(path: dir).createRoot(
                trustDomain: trustDomain, validity: validity.duration(default: CertificateAuthority.defaultRootValidity), force: force) }
            print("created \(dir)/root-cert.pem and \(dir)/root-key.pem (trust domain \(trustDomain), valid until \(root.certificate.notValidAfter.formatted(.iso8601)))")
        }
    }

    struct Cluster: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a cluster intermediate in D/NAME/ (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem).")
        @Option(help: "CA directory.") var dir: String
        @Option(help: "Cluster name.") var cluster: String
        @OptionGroup var validity: Validity
        @Flag(help: "Replace an existing intermediate key.") var force = false

        func run() async throws {
            _ = try reportingFileErrors { try CertificateDirectory(path: dir).createCluster(
                cluster, validity: validity.duration(default: CertificateAuthority.defaultIntermediateValidity), force: force) }
            print("created \(dir)/\(cluster)/ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem")
        }
    }

    struct Workload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a workload certificate: O/cert-chain.pem (leaf, intermediate), O/key.pem, O/root-cert.pem.")
        @Option(help: "CA directory.") var dir: String
        @Option(help: "Cluster whose intermediate signs.") var cluster: String
        @Option(help: "SPIFFE ID, spiffe://TD/ns/NS/sa/SA.") var spiffe: String
        @Option(help: "DNS SAN (repeatable).") var dns: [String] = []
        @Option(help: "Output directory.") var out: String
        @OptionGroup var validity: Validity
        @Flag(help: "Replace an existing key.") var force = false

        func run() async throws {
            let id: SpiffeID
            do { id = try SpiffeID(parsing: spiffe) } catch { throw ValidationError("--spiffe: \(error)") }
            try issueLeaf(id, directory: CertificateDirectory(path: dir), cluster: cluster, dns: dns, out: out, validity: validity, force: force)
        }
    }

    struct Gateway: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a gateway certificate bound to its cluster (spiffe://TD/ns/istio-system/sa/eastwest-gateway-CLUSTER): O/cert-chain.pem, O/key.pem, O/root-cert.pem.")
        @Option(help: "CA directory.") var dir: String
        @Option(help: "Cluster whose intermediate signs; the identity names it.") var cluster: String
        @Option(help: "DNS SAN (repeatable): the service hosts clients verify the gateway by.") var dns: [String] = []
        @Option(help: "Output directory.") var out: String
        @OptionGroup var validity: Validity
        @Flag(help: "Replace an existing key.") var force = false

        func run() async throws {
            if let problem = GatewayIdentity.problem(withClusterName: cluster) { throw ValidationError("--cluster: \(problem)") }
            let directory = CertificateDirectory(path: dir)
            let trustDomain = try reportingFileErrors { try directory.rootTrustDomain() } ?? "cluster.local"
            let id = try GatewayIdentity.spiffeID(cluster: cluster, trustDomain: trustDomain)
            try issueLeaf(id, directory: directory, cluster: cluster, dns: dns, out: out, validity: validity, force: force)
        }
    }

    struct Operator: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue an operator certificate (spiffe://TD/ns/istio-system/sa/eastwest-operator, a gateway's default adminOperators): admin writes over TLS with it. O/cert-chain.pem, O/key.pem, O/root-cert.pem.")
        @Option(help: "CA directory.") var dir: String
        @Option(help: "Cluster whose intermediate signs.") var cluster: String
        @Option(help: "Service account of the identity (the default is what gateways accept unless adminOperators says otherwise).") var serviceAccount = GatewayIdentity.operatorServiceAccount
        @Option(help: "Output directory.") var out: String
        @OptionGroup var validity: Validity
        @Flag(help: "Replace an existing key.") var force = false

        func run() async throws {
            let directory = CertificateDirectory(path: dir)
            let trustDomain = try reportingFileErrors { try directory.rootTrustDomain() } ?? "cluster.local"
            let id: SpiffeID
            do { id = try GatewayIdentity.operatorID(trustDomain: trustDomain, serviceAccount: serviceAccount) } catch { throw ValidationError("--service-account: \(error)") }
            try issueLeaf(id, directory: directory, cluster: cluster, dns: [], out: out, validity: validity, force: force)
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print subject, SANs, SPIFFE ID, issuer and validity of each certificate in a PEM file.")
        @Argument(help: "PEM file.") var file: String

        func run() async throws {
            let certificates = try reportingFileErrors { try PEMFiles.certificates(at: file) }
            for (index, certificate) in certificates.enumerated() {
                if certificates.count > 1 { print("certificate \(index + 1) of \(certificates.count)") }
                print(CertificateSummary(certificate).text)
            }
        }
    }
}

/// Issues a leaf for `id`, signed by `cluster`'s intermediate, into `out`, and says so.
private func issueLeaf(_ id: SpiffeID, directory: CertificateDirectory, cluster: String, dns: [String], out: String,
                       validity: CACommand.Validity, force: Bool) throws {
    let leaf = try reportingFileErrors { try directory.createWorkload(
        cluster: cluster, spiffeID: id, dnsNames: dns, outputPath: out,
        validity: validity.duration(default: CertificateAuthority.defaultWorkloadValidity), force: force) }
    print("issued \(id) in \(out)/ (cert-chain.pem, key.pem, root-cert.pem), valid until \(leaf.certificate.notValidAfter.formatted(.iso8601))")
}

/// Runs a CA step, turning file problems into one clear line and exit code 1.
private func reportingFileErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as CertificateFileError {
        printError("error: \(error)")
        throw ExitCode(1)
    } catch let error as ValidationError {
        throw error
    } catch {
        printError("error: \(error)")
        throw ExitCode(1)
    }
}

/// The fields `eastwest ca inspect` prints.
struct CertificateSummary {
    var text: String

    init(_ certificate: Certificate) {
        var lines: [String] = []
        let subject = certificate.subject.description
        lines.append("  subject:    \(subject.isEmpty ? "(empty)" : subject)")
        lines.append("  issuer:     \(certificate.issuer.description)")
        var sans: [String] = []
        if let names = try? certificate.extensions.subjectAlternativeNames {
            for name in names {
                switch name {
                case .uniformResourceIdentifier(let uri): sans.append("URI:\(uri)")
                case .dnsName(let dns): sans.append("DNS:\(dns)")
                case .ipAddress(let ip): sans.append("IP:\(Array(ip.bytes))")
                default: sans.append("\(name)")
                }
            }
        }
        lines.append("  SANs:       \(sans.isEmpty ? "-" : sans.joined(separator: ", "))")
        lines.append("  SPIFFE ID:  \((try? certificate.spiffeID())??.description ?? "-")")
        var isCA = false
        if let constraints = try? certificate.extensions.basicConstraints, case .isCertificateAuthority = constraints { isCA = true }
        lines.append("  CA:         \(isCA ? "yes" : "no")")
        lines.append("  not before: \(certificate.notValidBefore.formatted(.iso8601))")
        lines.append("  not after:  \(certificate.notValidAfter.formatted(.iso8601))")
        let now = Date()
        let state = now > certificate.notValidAfter ? "EXPIRED" : (now < certificate.notValidBefore ? "NOT YET VALID" : "valid")
        lines.append("  status:     \(state)")
        lines.append("  key:        \(certificate.publicKey)")
        text = lines.joined(separator: "\n")
    }
}
