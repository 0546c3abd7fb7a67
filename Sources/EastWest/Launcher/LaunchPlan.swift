import Foundation
import MeshProxyCore
import Yams

/// What `eastwest up` starts for a topology, with every file it needs already written:
/// certificates (reused when present), one gateway config per gateway.
struct LaunchPlan {
    struct Child {
        var name: String
        var kind: Kind
        var arguments: [String]
        /// What "ready" means for this child.
        var readiness: Readiness
        enum Kind: String { case gateway, backend }
    }

    enum Readiness {
        case httpOK(HostPort, path: String)
        case tcpAccepts(HostPort)
        /// The gateway's admin API lists these members as alive: federation has converged.
        case federated(HostPort, peers: [String])
    }

    var topology: Topology
    var stateDir: String
    var children: [Child]
    var gatewayConfigs: [GatewayConfig]
    var clientCertificates: [String: GatewayConfig.TLSFiles]
    /// The operator certificate for admin writes over TLS.
    var operatorCertificate: GatewayConfig.TLSFiles?

    static func prepare(topology: Topology, stateDir: String, gatewayLogLevel: String) throws -> LaunchPlan {
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(stateDir)/gateways", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(stateDir)/logs", withIntermediateDirectories: true)
        let certs = CertificateDirectory(path: "\(stateDir)/certs")
        let trustDomain = topology.effectiveTrustDomain
        if fm.fileExists(atPath: certs.rootKeyPath) {
            let existing = try certs.rootTrustDomain()
            guard existing == trustDomain else {
                throw CertificateFileError(path: certs.rootCertificatePath,
                    reason: "root is for trust domain '\(existing ?? "?")' but the topology says '\(trustDomain)'; remove \(stateDir)/certs to start over")
            }
        } else {
            try certs.createRoot(trustDomain: trustDomain)
        }
        let self_ = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let clientID = try SpiffeID(trustDomain: trustDomain, namespace: "default", serviceAccount: "client")
        var children: [Child] = []
        var configs: [GatewayConfig] = []
        // The operator's token for admin writes: one per deployment, readable by its owner only.
        let tokenFile = "\(stateDir)/admin-token"
        if !fm.fileExists(atPath: tokenFile) {
            let token = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            fm.createFile(atPath: tokenFile, contents: Data((token + "\n").utf8), attributes: [.posixPermissions: 0o600])
        }
        var clients: [String: GatewayConfig.TLSFiles] = [:]
        let parent = String(getpid())
        // The operator's certificate for admin writes over TLS (every gateway's default
        // adminOperators), signed by the first cluster's intermediate.
        var operatorCertificate: GatewayConfig.TLSFiles?

        let dnsNames = servedHosts(topology)
        for cluster in topology.clusters {
            if !fm.fileExists(atPath: "\(certs.clusterPath(cluster.name))/ca-key.pem") {
                try certs.createCluster(cluster.name)
            }
            let clientDir = "\(certs.clusterPath(cluster.name))/client"
            if !fm.fileExists(atPath: "\(clientDir)/key.pem") {
                try certs.createWorkload(cluster: cluster.name, spiffeID: clientID, outputPath: clientDir)
            }
            clients[cluster.name] = files(in: clientDir)
            if operatorCertificate == nil {
                let operatorDir = "\(stateDir)/certs/operator"
                if !fm.fileExists(atPath: "\(operatorDir)/key.pem") {
                    try certs.createWorkload(cluster: cluster.name, spiffeID: try GatewayIdentity.operatorID(trustDomain: trustDomain), outputPath: operatorDir)
                }
                operatorCertificate = files(in: operatorDir)
            }

            let gatewayID = try GatewayIdentity.spiffeID(cluster: cluster.name, trustDomain: trustDomain)
            for gateway in cluster.gateways {
                let gatewayDir = "\(certs.clusterPath(cluster.name))/gateways/\(gateway.name)"
                // Re-issued on every `up` so the DNS SANs follow the topology's services.
                try certs.createWorkload(cluster: cluster.name, spiffeID: gatewayID, dnsNames: dnsNames,
                                         outputPath: gatewayDir, force: true)
                var config = topology.gatewayConfig(cluster: cluster, gateway: gateway, tls: files(in: gatewayDir))
                config.adminTokenFile = tokenFile
                let path = "\(stateDir)/gateways/\(gateway.name).yaml"
                try YAMLEncoder().encode(config).write(toFile: path, atomically: true, encoding: .utf8)
                configs.append(config)
                children.append(Child(
                    name: gateway.name, kind: .gateway,
                    arguments: [self_, "gateway", "--config", path, "--log-level", gatewayLogLevel, "--parent-pid", parent],
                    readiness: .httpOK(config.effectiveAdmin, path: "/healthz/ready")))
            }
            for service in cluster.services ?? [] {
                for endpoint in service.endpoints {
                    children.append(Child(
                        name: backendName(service.host, endpoint.address), kind: .backend,
                        arguments: [self_, "demo-backend", "--listen", endpoint.address.description, "--service", service.host,
                                    "--cluster", cluster.name, "--locality", endpoint.locality?.description ?? "",
                                    "--version", endpoint.labels?["version"] ?? "", "--parent-pid", parent],
                        readiness: .tcpAccepts(endpoint.address)))
                }
            }
        }
        // Backends first, so a gateway's first connection finds them.
        children.sort { $0.kind == .backend && $1.kind == .gateway }
        // Ready means federated: every gateway sees every other one alive, so the curl we print
        // crosses clusters at once.
        for config in configs {
            children.append(Child(name: "\(config.name) (federation)", kind: .gateway, arguments: [],
                                  readiness: .federated(config.effectiveAdmin, peers: topology.gatewayNames.filter { $0 != config.name })))
        }
        return LaunchPlan(topology: topology, stateDir: stateDir, children: children, gatewayConfigs: configs, clientCertificates: clients,
                          operatorCertificate: operatorCertificate)
    }

    /// Every host a client may name at a gateway: the topology's services and the ServiceEntry
    /// hosts in the policies its gateways load (served and gossiped like the others), so a client
    /// verifying the gateway by a ServiceEntry's name finds it in the certificate. Policies that
    /// do not load are the gateway's to report when it starts.
    static func servedHosts(_ topology: Topology) -> [String] {
        var hosts = Set(topology.serviceHosts)
        for cluster in topology.clusters {
            for gateway in cluster.gateways {
                var config = topology.gatewayConfig(cluster: cluster, gateway: gateway, tls: files(in: "/"))
                if (try? GatewayNode.compileRoutes(&config, configPath: "/")) != nil {
                    hosts.formUnion((config.services ?? []).map(\.host))
                }
            }
        }
        return hosts.sorted()
    }

    private static func files(in dir: String) -> GatewayConfig.TLSFiles {
        let absolute = URL(fileURLWithPath: dir).standardizedFileURL.path
        return GatewayConfig.TLSFiles(certificateChain: "\(absolute)/cert-chain.pem", privateKey: "\(absolute)/key.pem",
                                      rootCertificate: "\(absolute)/root-cert.pem")
    }

    // MARK: - ready.json and the summary

    struct ReadyFile: Codable {
        struct Gateway: Codable { var name, cluster, address, admin: String; var locality: String?; var pid: Int32 }
        struct Backend: Codable { var service, cluster, address: String; var pid: Int32 }
        struct Client: Codable {
            var certificateChain, privateKey, rootCertificate, spiffeID: String

            init(_ files: GatewayConfig.TLSFiles, spiffeID: String) {
                certificateChain = files.certificateChain; privateKey = files.privateKey; rootCertificate = files.rootCertificate
                self.spiffeID = spiffeID
            }

            var files: GatewayConfig.TLSFiles {
                GatewayConfig.TLSFiles(certificateChain: certificateChain, privateKey: privateKey, rootCertificate: rootCertificate)
            }
        }
        var topology: String
        /// The operator token admin writes need (`adminTokenFile` of every gateway).
        var adminTokenFile: String?
        /// The operator certificate that admin writes over TLS on the admin port take.
        var operatorCertificate: Client?
        var trustDomain: String
        var gateways: [Gateway]
        var backends: [Backend]
        var clients: [String: Client]
    }

    func readyFile(pids: [String: Int32]) -> ReadyFile {
        let td = topology.effectiveTrustDomain
        return ReadyFile(
            topology: topology.name, adminTokenFile: gatewayConfigs.first?.adminTokenFile,
            operatorCertificate: operatorCertificate.map { .init($0, spiffeID: (try? GatewayIdentity.operatorID(trustDomain: td))?.description ?? "") },
            trustDomain: td,
            gateways: gatewayConfigs.map { .init(name: $0.name, cluster: $0.cluster, address: $0.listen.description,
                                                 admin: $0.effectiveAdmin.description, locality: $0.locality?.description,
                                                 pid: pids[$0.name] ?? 0) },
            backends: topology.clusters.flatMap { cluster in (cluster.services ?? []).flatMap { service in
                service.endpoints.map { e in
                    ReadyFile.Backend(service: service.host, cluster: cluster.name, address: e.address.description,
                                      pid: pids[backendName(service.host, e.address)] ?? 0)
                } } },
            clients: clientCertificates.mapValues { .init($0, spiffeID: "spiffe://\(td)/ns/default/sa/client") })
    }

    func writeReadyFile(pids: [String: Int32]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try encoder.encode(readyFile(pids: pids)).write(to: URL(fileURLWithPath: "\(stateDir)/ready.json"))
    }

    func summary(pids: [String: Int32]) -> String {
        var lines = ["", "EastWest topology '\(topology.name)' is up (trust domain \(topology.effectiveTrustDomain))", ""]
        lines.append("  GATEWAY".padding(toLength: 18, withPad: " ", startingAt: 0) + "CLUSTER".padding(toLength: 10, withPad: " ", startingAt: 0)
                     + "LISTEN".padding(toLength: 20, withPad: " ", startingAt: 0) + "ADMIN".padding(toLength: 20, withPad: " ", startingAt: 0) + "PID")
        for g in gatewayConfigs {
            lines.append("  " + g.name.padding(toLength: 16, withPad: " ", startingAt: 0) + g.cluster.padding(toLength: 10, withPad: " ", startingAt: 0)
                         + g.listen.description.padding(toLength: 20, withPad: " ", startingAt: 0)
                         + g.effectiveAdmin.description.padding(toLength: 20, withPad: " ", startingAt: 0) + "\(pids[g.name] ?? 0)")
        }
        lines.append("")
        for cluster in topology.clusters {
            for service in cluster.services ?? [] {
                lines.append("  \(cluster.name): \(service.host):\(service.port) -> \(service.endpoints.map(\.address.description).joined(separator: ", "))")
            }
        }
        if let first = topology.clusters.first, let gateway = gatewayConfigs.first(where: { $0.cluster == first.name }),
           let client = clientCertificates[first.name] {
            // Prefer a service the first cluster does not serve: that request crosses clusters.
            let local = Set((first.services ?? []).map(\.host))
            let host = topology.serviceHosts.first { !local.contains($0) } ?? topology.serviceHosts.first ?? "echo.default.svc.cluster.local"
            lines += ["", "Try it (client in \(first.name) -> \(gateway.name) -> the cluster serving \(host)):", "",
                      "  curl --cacert \(client.rootCertificate) \\",
                      "       --cert \(client.certificateChain) --key \(client.privateKey) \\",
                      "       --resolve \(host):\(gateway.listen.port):\(gateway.listen.host) https://\(host):\(gateway.listen.port)/"]
        }
        lines += ["", "State, configs and logs: \(stateDir) (ready.json lists every process). Ctrl-C stops everything.", ""]
        return lines.joined(separator: "\n")
    }
}

/// The process name of a demo backend (`echo@127.0.1.10:8080`): what the supervisor, the
/// launcher's ready file and a drill's fault injector call it.
func backendName(_ host: String, _ address: HostPort) -> String {
    "\(host.split(separator: ".").first ?? "svc")@\(address)"
}
