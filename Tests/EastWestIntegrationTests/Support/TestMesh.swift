import Foundation
import MeshProxyCore
import Testing
import Yams

/// Real certificates made at test time (nothing committed, nothing expires) plus helpers to
/// start gateways and demo backends as processes and talk to them with curl.
final class TestMesh: @unchecked Sendable {  // used from one test task only
    let processes: ProcessSet
    let certs: CertificateDirectory
    let trustDomain = "cluster.local"
    /// Every service host a gateway certificate names, so curl can verify by name.
    let serviceHosts: [String]

    init(_ label: String, clusters: [String], serviceHosts: [String] = ["echo.default.svc.cluster.local", "ratings.default.svc.cluster.local", "tcp-echo.default.svc.cluster.local"]) throws {
        processes = try ProcessSet(label)
        certs = CertificateDirectory(path: "\(processes.directory.path)/certs")
        self.serviceHosts = serviceHosts
        try certs.createRoot(trustDomain: trustDomain)
        for cluster in clusters {
            try certs.createCluster(cluster)
            try certs.createWorkload(cluster: cluster, spiffeID: try GatewayIdentity.spiffeID(cluster: cluster, trustDomain: trustDomain),
                                     dnsNames: serviceHosts, outputPath: gatewayCertPath(cluster))
            try certs.createWorkload(cluster: cluster, spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/client"),
                                     outputPath: clientCertPath(cluster))
        }
    }

    var directory: String { processes.directory.path }
    func gatewayCertPath(_ cluster: String) -> String { "\(certs.path)/\(cluster)/gateway" }
    func clientCertPath(_ cluster: String) -> String { "\(certs.path)/\(cluster)/client" }

    func tlsFiles(_ dir: String) -> GatewayConfig.TLSFiles {
        .init(certificateChain: "\(dir)/cert-chain.pem", privateKey: "\(dir)/key.pem", rootCertificate: "\(dir)/root-cert.pem")
    }

    // MARK: - Processes

    @discardableResult
    func startBackend(_ address: String, service: String = "echo.default.svc.cluster.local", cluster: String) async throws -> ChildProcess {
        let child = try processes.start("backend-\(address)", ["demo-backend", "--listen", address, "--service", service, "--cluster", cluster])
        let hostPort = HostPort(parsing: address)!
        let ready = await eventually { (try? await runCommand("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://\(hostPort)/"]).stdout) == "200" }
        try #require(ready, "demo backend on \(address) did not start: \(child.log)")
        return child
    }

    /// The most common set-up: cluster `east` with one echo backend at `127.0.<block>.10:8080`
    /// behind gateway `east-gw` on `127.0.<block>.1`.
    func startEchoCluster(block: Int) async throws -> (GatewayConfig, ChildProcess) {
        try await startBackend("127.0.\(block).10:8080", cluster: "east")
        let gateway = gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.\(block).1", services: [.echo("127.0.\(block).10:8080")])
        return (gateway, try await startGateway(gateway))
    }

    func writeConfig(_ config: GatewayConfig) throws -> String {
        let path = "\(directory)/\(config.name).yaml"
        try YAMLEncoder().encode(config).write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Writes a DestinationRule for `host` with `trafficPolicy` (YAML, unindented) and returns
    /// its path, for a gateway config's `policies:`.
    func writeDestinationRule(host: String = "echo.default.svc.cluster.local", trafficPolicy: String) throws -> String {
        try TestFiles.writeDestinationRule(in: directory, host: host, trafficPolicy: trafficPolicy)
    }

    @discardableResult
    func startGateway(_ config: GatewayConfig) async throws -> ChildProcess {
        let path = try writeConfig(config)
        let child = try processes.start(config.name, ["gateway", "--config", path, "--log-level", "debug"])
        let ready = await eventually { (try? await adminStatus(config, "/healthz/ready")) == "200" }
        try #require(ready, "gateway \(config.name) did not become ready: \(child.log)")
        return child
    }

    func gatewayConfig(name: String, cluster: String, ip: String, services: [GatewayConfig.ServiceConfig],
                       remotes: [GatewayConfig.RemoteCluster] = [], timeouts: GatewayConfig.Timeouts? = nil) -> GatewayConfig {
        var config = GatewayConfig(name: name, cluster: cluster, locality: Locality(region: "r-\(cluster)"), trustDomain: trustDomain,
                                   listen: HostPort(host: ip, port: 15443), admin: HostPort(host: ip, port: 15000),
                                   tls: tlsFiles(gatewayCertPath(cluster)), timeouts: timeouts, services: services, remoteClusters: remotes)
        config.adminTokenFile = adminTokenFile
        return config
    }

    /// Cluster `east`'s gateway `east-gw` on `ip`, serving nothing itself, which knows that
    /// `remote`'s gateway serves `remote`'s services: the client side of a cross-cluster test.
    func eastGateway(ip: String, reaching remote: GatewayConfig) -> GatewayConfig {
        gatewayConfig(name: "east-gw", cluster: "east", ip: ip, services: [], remotes: [
            .init(name: remote.cluster, gateways: [.init(name: remote.name, address: remote.listen)], services: remote.services),
        ])
    }

    /// The operator token every test gateway's admin writes need.
    static let adminToken = "test-operator-token"
    var adminTokenFile: String {
        let path = "\(directory)/admin-token"
        if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: Data(Self.adminToken.utf8)) }
        return path
    }

    func adminStatus(_ config: GatewayConfig, _ path: String) async throws -> String {
        try await runCommand("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", "http://\(config.effectiveAdmin)\(path)"]).stdout
    }

    func admin(_ config: GatewayConfig, _ path: String) async throws -> String {
        try await runCommand("/usr/bin/curl", ["-s", "--max-time", "5", "http://\(config.effectiveAdmin)\(path)"]).stdout
    }

    // MARK: - Clients

    /// curl through a gateway with mTLS, verifying the gateway by the service host name.
    func curl(_ gateway: GatewayConfig, host: String, path: String = "/", client: String? = nil, extra: [String] = []) async throws -> CommandResult {
        let dir = client ?? clientCertPath(gateway.cluster)
        var arguments = ["-sS", "--max-time", "10", "--cacert", "\(certs.rootCertificatePath)"]
        if FileManager.default.fileExists(atPath: "\(dir)/key.pem") {
            arguments += ["--cert", "\(dir)/cert-chain.pem", "--key", "\(dir)/key.pem"]
        }
        arguments += ["--resolve", "\(host):\(gateway.listen.port):\(gateway.listen.host)"] + extra
        arguments.append("https://\(host):\(gateway.listen.port)\(path)")
        return try await runCommand("/usr/bin/curl", arguments)
    }

    /// The JSON a demo backend answered with: its string fields (`cluster`, `version`, `path`, …).
    func answer(_ result: CommandResult) -> [String: String]? {
        ((try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any])?.compactMapValues { $0 as? String }
    }

    /// The headers a demo backend says it received.
    func receivedHeaders(_ result: CommandResult) -> [String: String]? {
        ((try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any])?["headers"] as? [String: String]
    }
}

extension GatewayConfig.ServiceConfig {
    static func echo(_ addresses: String..., host: String = "echo.default.svc.cluster.local", port: Int = 8080) -> Self {
        .init(host: host, port: port, endpoints: addresses.map { Endpoint(address: HostPort(parsing: $0)!) })
    }
}

/// Test fixtures written as files, the way users hand them to eastwest.
enum TestFiles {
    /// A DestinationRule for `host` (a short name) with one subset per version, selecting
    /// `version: <name>`, followed by a document separator: the head of a policy file whose
    /// VirtualService routes to those subsets.
    static func versionSubsets(_ host: String, _ versions: [String]) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: \(host)}
        spec:
          host: \(host)
          subsets:
        \(versions.map { "  - {name: \($0), labels: {version: \($0)}}" }.joined(separator: "\n"))
        ---

        """
    }

    /// A DestinationRule for `host` with `trafficPolicy` (YAML, unindented); returns its path.
    static func writeDestinationRule(in directory: String, host: String = "echo.default.svc.cluster.local",
                                     trafficPolicy: String) throws -> String {
        let path = "\(directory)/destination-rule-\(UUID().uuidString.prefix(8)).yaml"
        let indented = trafficPolicy.split(separator: "\n", omittingEmptySubsequences: false).map { "    " + $0 }.joined(separator: "\n")
        try """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: test}
            spec:
              host: \(host)
              trafficPolicy:
            \(indented)
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}
