import Foundation
@testable import EastWest
import MeshProxyCore
import Testing

@Suite("The eastwest command: CA, bad input, up", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct CommandLineTests {
    func eastwest(_ arguments: String...) async throws -> CommandResult {
        try await runCommand(PackagePaths.eastwest, arguments)
    }

    @Test("ca init/cluster/workload write Istio's file names, keys 0600, chains pass openssl verify, and inspect shows the SPIFFE ID")
    func certificateAuthority() async throws {
        let dir = try TemporaryDirectory("ca")
        defer { dir.cleanUp() }
        let ca = "\(dir.path)/ca"
        #expect(try await eastwest("ca", "init", "--dir", ca, "--trust-domain", "mesh.example").status == 0)
        #expect(try await eastwest("ca", "cluster", "--dir", ca, "--cluster", "east").status == 0)
        let workload = try await eastwest("ca", "workload", "--dir", ca, "--cluster", "east", "--spiffe", "spiffe://mesh.example/ns/shop/sa/cart",
                                    "--dns", "cart.shop.svc.cluster.local", "--out", "\(dir.path)/cart", "--validity", "2d")
        #expect(workload.status == 0, "\(workload.stderr)")
        for file in ["root-cert.pem", "root-key.pem", "east/ca-cert.pem", "east/ca-key.pem", "east/cert-chain.pem", "east/root-cert.pem"] {
            #expect(FileManager.default.fileExists(atPath: "\(ca)/\(file)"), "missing \(file)")
        }
        for key in ["\(ca)/root-key.pem", "\(ca)/east/ca-key.pem", "\(dir.path)/cart/key.pem"] {
            let mode = try FileManager.default.attributesOfItem(atPath: key)[.posixPermissions] as? Int
            #expect(mode == 0o600, "\(key) has mode \(String(mode ?? 0, radix: 8))")
        }
        let verify = try await runCommand("/usr/bin/openssl", ["verify", "-CAfile", "\(ca)/root-cert.pem", "-untrusted", "\(ca)/east/ca-cert.pem",
                                                         "\(dir.path)/cart/cert-chain.pem"])
        #expect(verify.status == 0 && verify.stdout.contains(": OK"), "\(verify.stdout)\(verify.stderr)")
        let intermediate = try await runCommand("/usr/bin/openssl", ["verify", "-CAfile", "\(ca)/root-cert.pem", "\(ca)/east/ca-cert.pem"])
        #expect(intermediate.status == 0, "\(intermediate.stderr)")

        let inspect = try await eastwest("ca", "inspect", "\(dir.path)/cart/cert-chain.pem")
        #expect(inspect.stdout.contains("SPIFFE ID:  spiffe://mesh.example/ns/shop/sa/cart"))
        #expect(inspect.stdout.contains("DNS:cart.shop.svc.cluster.local"))
        #expect(inspect.stdout.contains("issuer:     CN=EastWest Intermediate CA east,O=mesh.example"))
        #expect(inspect.stdout.contains("status:     valid"))

        // A gateway's identity names its cluster, in the root's trust domain.
        let gateway = try await eastwest("ca", "gateway", "--dir", ca, "--cluster", "east", "--dns", "cart.shop.svc.cluster.local", "--out", "\(dir.path)/gw")
        #expect(gateway.status == 0, "\(gateway.stderr)")
        let gatewayInspect = try await eastwest("ca", "inspect", "\(dir.path)/gw/cert-chain.pem")
        #expect(gatewayInspect.stdout.contains("SPIFFE ID:  spiffe://mesh.example/ns/istio-system/sa/eastwest-gateway-east"), "\(gatewayInspect.stdout)")
        let badCluster = try await eastwest("ca", "gateway", "--dir", ca, "--cluster", "east/1", "--out", "\(dir.path)/gw2")
        #expect(badCluster.status != 0 && badCluster.stderr.contains("part of the gateway's SPIFFE ID"), "\(badCluster.stderr)")

        let again = try await eastwest("ca", "init", "--dir", ca)
        #expect(again.status != 0)
        #expect(again.stderr.contains("\(ca)/root-key.pem: already exists; pass --force to replace it"))
        #expect(try await eastwest("ca", "init", "--dir", ca, "--force").status == 0)
        let badID = try await eastwest("ca", "workload", "--dir", ca, "--cluster", "east", "--spiffe", "spiffe://Bad/x", "--out", "\(dir.path)/bad")
        #expect(badID.status != 0)
        #expect(badID.stderr.contains("is not a SPIFFE ID"))
    }

    @Test("A malformed gateway config exits 2 with FILE:LINE:COLUMN; a missing key names its path; nothing is left running")
    func badInput() async throws {
        let dir = try TemporaryDirectory("bad")
        defer { dir.cleanUp() }
        let config = "\(dir.path)/gw.yaml"
        try """
            name: gw
            cluster: east
            listen: 127.0.37.1:99999
            tls: {certificateChain: a.pem, privateKey: k.pem, rootCertificate: r.pem}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let malformed = try await eastwest("gateway", "--config", config)
        #expect(malformed.status == 2)
        #expect(malformed.stderr.contains("\(config):3:1: error: listen: '127.0.37.1:99999' is not an address"))

        try """
            name: gw
            cluster: east
            listen: 127.0.37.1:15443
            tls: {certificateChain: \(dir.path)/missing/cert-chain.pem, privateKey: \(dir.path)/missing/key.pem, rootCertificate: \(dir.path)/missing/root-cert.pem}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let missing = try await eastwest("gateway", "--config", config)
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("\(dir.path)/missing/cert-chain.pem: no such file"))

        let topology = "\(dir.path)/topo.yaml"
        try "name: t\nclusters:\n- name: east\n  gateways: []\n  servics: []\n".write(toFile: topology, atomically: true, encoding: .utf8)
        let up = try await eastwest("up", topology, "--state-dir", "\(dir.path)/state")
        #expect(up.status == 2)
        #expect(up.stderr.contains("\(topology):5:3: error: clusters[0].servics: unknown field 'servics'"))
        #expect(up.stderr.contains("\(topology):4:3: error: clusters[0].gateways: cluster 'east' needs at least one gateway") == false,
                "meaning checks run only once the shape is right; one round of errors at a time")
        #expect(!FileManager.default.fileExists(atPath: "\(dir.path)/state"), "a rejected topology must not create state")
    }

    @Test("A listen address in use is an error naming the address, exit 1")
    func addressInUse() async throws {
        let mesh = try TestMesh("inuse", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let gateway = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.38.1", services: [.echo("127.0.38.10:8080")])
        try await mesh.startGateway(gateway)
        var second = gateway
        second.name = "east-gw-2"
        second.admin = HostPort(host: "127.0.38.1", port: 15001)
        let path = try mesh.writeConfig(second)
        let result = try await eastwest("gateway", "--config", path)
        #expect(result.status == 1)
        #expect(result.stderr.contains("gateway listener: cannot listen on 127.0.38.1:15443: address already in use"))
    }

    @Test("eastwest up: empty state dir to ready, a cross-cluster curl, then Ctrl-C leaves no process behind")
    func upAndDown() async throws {
        let dir = try TemporaryDirectory("up")
        defer { dir.cleanUp() }
        let topology = "\(dir.path)/topo.yaml"
        try """
            name: test-up
            clusters:
            - name: east
              gateways: [{name: up-east-gw, address: 127.0.39.1, locality: us-east1/us-east1-a}]
              services:
              - host: echo.default.svc.cluster.local
                port: 8080
                endpoints: [{address: 127.0.39.10:8080, locality: us-east1/us-east1-a}]
            - name: west
              gateways: [{name: up-west-gw, address: 127.0.40.1, locality: us-west1/us-west1-a}]
              services:
              - host: ratings.default.svc.cluster.local
                port: 9080
                endpoints: [{address: 127.0.40.20:9080, locality: us-west1/us-west1-a}]
            """.write(toFile: topology, atomically: true, encoding: .utf8)
        let (up, state) = try await startUp(topology, in: dir)
        defer { up.stop() }
        #expect(await eventually { up.log.contains("curl --cacert") })

        struct Ready: Decodable {
            struct Gateway: Decodable { var name: String; var pid: Int32; var admin: String }
            struct Backend: Decodable { var pid: Int32 }
            struct Client: Decodable { var certificateChain: String; var privateKey: String; var rootCertificate: String }
            var gateways: [Gateway]; var backends: [Backend]; var clients: [String: Client]
        }
        let info = try JSONDecoder().decode(Ready.self, from: Data(contentsOf: URL(fileURLWithPath: "\(state)/ready.json")))
        #expect(info.gateways.map(\.name).sorted() == ["up-east-gw", "up-west-gw"])
        let client = try #require(info.clients["east"])
        let curl = try await runCommand("/usr/bin/curl", ["-sS", "--max-time", "10", "--cacert", client.rootCertificate, "--cert", client.certificateChain,
                                                    "--key", client.privateKey, "--resolve", "ratings.default.svc.cluster.local:15443:127.0.39.1",
                                                    "https://ratings.default.svc.cluster.local:15443/"])
        #expect(curl.stdout.contains(#""cluster":"west""#), "\(curl.stderr)")

        up.signal(SIGINT)
        #expect(await up.waitForExit(timeout: .seconds(20)) == 0)
        let pids = info.gateways.map(\.pid) + info.backends.map(\.pid)
        #expect(pids.count == 4)
        for pid in pids {
            #expect(kill(pid, 0) != 0, "process \(pid) is still running")
        }
        #expect(up.log.contains("stopped; nothing left running"))
    }

    @Test("eastwest up names ServiceEntry hosts in every gateway's certificate, next to the topology's services")
    func serviceEntryHostsInGatewayCertificates() async throws {
        let dir = try TemporaryDirectory("up-se")
        defer { dir.cleanUp() }
        let entry = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: billing, namespace: shop}
            spec:
              hosts: [billing.shop.svc.cluster.local]
              ports: [{number: 8080, name: http, protocol: HTTP}]
              location: MESH_INTERNAL
              resolution: STATIC
              endpoints: [{address: 127.0.1.30, labels: {topology.istio.io/cluster: east}}]
            """
        try entry.write(toFile: "\(dir.path)/billing.yaml", atomically: true, encoding: .utf8)
        let topology = try String(contentsOfFile: "\(PackagePaths.root)/topologies/two-clusters.yaml", encoding: .utf8)
            .replacingOccurrences(of: "policies: [policies/echo-failover.yaml]", with: "policies: [\(dir.path)/billing.yaml]")
        try topology.write(toFile: "\(dir.path)/topology.yaml", atomically: true, encoding: .utf8)
        // What `up` prepares before it starts anything: certificates and gateway configs.
        _ = try LaunchPlan.prepare(topology: ConfigLoader.load(Topology.self, file: "\(dir.path)/topology.yaml"), stateDir: "\(dir.path)/state",
                                   gatewayLogLevel: "info")
        let chain = "\(dir.path)/state/certs/west/gateways/west-gw-1/cert-chain.pem"
        let inspect = try await eastwest("ca", "inspect", chain)
        #expect(inspect.stdout.contains("DNS:billing.shop.svc.cluster.local") && inspect.stdout.contains("DNS:ratings.default.svc.cluster.local"),
                "\(inspect.stdout)\(inspect.stderr)")
    }
}

@Suite("eastwest simulate")
struct SimulateCommandTests {
    @Test("The same seed gives the same report; a killed gateway is detected with no false positives")
    func deterministicReport() async throws {
        let first = try await runCommand(PackagePaths.eastwest, ["simulate", "--nodes", "20", "--seed", "4", "--duration", "15s", "--json"])
        let second = try await runCommand(PackagePaths.eastwest, ["simulate", "--nodes", "20", "--seed", "4", "--duration", "15s", "--json"])
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout == second.stdout)
        struct Report: Decodable {
            struct Detection: Decodable { var allSeconds: Double? }
            var convergenceSeconds: Double?; var falsePositives: Int; var detections: [Detection]; var catalogSpread100Seconds: Double?
        }
        let report = try JSONDecoder().decode(Report.self, from: Data(first.stdout.utf8))
        #expect(report.convergenceSeconds != nil)
        #expect(report.falsePositives == 0)
        #expect(report.detections.count == 1)
        #expect((report.detections.first?.allSeconds ?? 99) < 2)
        #expect(report.catalogSpread100Seconds != nil)
        let bad = try await runCommand(PackagePaths.eastwest, ["simulate", "--nodes", "1"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("--nodes must be at least 2"))
    }
}

@Suite("The shipped three-regions topology", .serialized, .timeLimit(.minutes(5)), .needsMachineAlone)
struct ThreeRegionsTopologyTests {
    @Test("eastwest up topologies/three-regions.yaml federates its four gateways; a client in us-east reaches ledger in eu-west")
    func threeRegions() async throws {
        let dir = try TemporaryDirectory("three")
        defer { dir.cleanUp() }
        let (up, state) = try await startUp("\(PackagePaths.root)/topologies/three-regions.yaml", in: dir)
        defer { up.stop() }
        let client = "\(state)/certs/us-east/client"
        let curl = try await runCommand("/usr/bin/curl", ["-sS", "--max-time", "10", "--cacert", "\(client)/root-cert.pem",
                                                    "--cert", "\(client)/cert-chain.pem", "--key", "\(client)/key.pem",
                                                    "--resolve", "ledger.default.svc.cluster.local:15443:127.0.1.1",
                                                    "https://ledger.default.svc.cluster.local:15443/"])
        #expect(curl.stdout.contains(#""cluster":"eu-west""#), "\(curl.stderr)")
        let members = try await runCommand(PackagePaths.eastwest, ["members", "--admin", "127.0.1.2:15000"])
        #expect(members.stdout.split(separator: "\n").filter { $0.contains("alive") }.count == 4, "\(members.stdout)")
        // The live plan of us-west's gateway under the shipped failover policy: its own zone,
        // then its region, then us-east1 (the failover target), eu-west1 last.
        let (plan, result) = try await PlanCommandTests().plan(["--admin", "127.0.2.1:15000", "--host", "echo.default.svc.cluster.local"])
        #expect(plan?.shares == ["us-west1/us-west1-a": 1], "\(result.stdout)\(result.stderr)")
        #expect(plan?.priorities.map { $0.localities.map(\.locality).sorted() } == [
            ["us-west1/us-west1-a"], ["us-west1/us-west1-b"], ["us-east1/us-east1-a", "us-east1/us-east1-b"], ["eu-west1/eu-west1-a", "eu-west1/eu-west1-b"]])
        up.signal(SIGINT)
        #expect(await up.waitForExit(timeout: .seconds(30)) == 0)
    }
}

@Suite("eastwest plan")
struct PlanCommandTests {
    struct Plan: Decodable {
        struct Level: Decodable { var priority: Int; var health: Int; var load: Int; var localities: [Locality] }
        struct Locality: Decodable { var locality: String; var healthy: Int; var total: Int; var share: Double }
        var panic: Bool
        var priorities: [Level]
        var shares: [String: Double]
    }

    func plan(_ arguments: [String]) async throws -> (Plan?, CommandResult) {
        let result = try await runCommand(PackagePaths.eastwest, ["plan"] + arguments + ["--json"])
        return (try? JSONDecoder().decode(Plan.self, from: Data(result.stdout.utf8)), result)
    }

    @Test("With the shipped failover policy, us-east1-a keeps its traffic; when its region is down us-west1 takes all of it, eu-west1 none")
    func shippedFailoverPolicy() async throws {
        let directory = try TemporaryDirectory("plan")
        defer { directory.cleanUp() }
        let policy = "\(PackagePaths.root)/topologies/policies/echo-failover.yaml"
        let endpoints = "\(PackagePaths.root)/topologies/endpoints/three-regions-echo.yaml"
        let (healthy, result) = try await plan(["--from", "us-east1/us-east1-a", "--endpoints", endpoints, "--policy", policy])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(healthy?.shares == ["us-east1/us-east1-a": 1])
        #expect(healthy?.priorities.count == 4)

        // us-east1 down: the failover rule sends everything to us-west1, split by its zones.
        let text = try String(contentsOfFile: endpoints, encoding: .utf8)
            .replacingOccurrences(of: "us-east1/us-east1-a, labels: {version: v1}, healthy: true", with: "us-east1/us-east1-a, labels: {version: v1}, healthy: false")
            .replacingOccurrences(of: "us-east1/us-east1-b, labels: {version: v1}, healthy: true", with: "us-east1/us-east1-b, labels: {version: v1}, healthy: false")
        let down = "\(directory.path)/down.yaml"
        try text.write(toFile: down, atomically: true, encoding: .utf8)
        let (failover, _) = try await plan(["--from", "us-east1/us-east1-a", "--endpoints", down, "--policy", policy])
        #expect(failover?.shares == ["us-west1/us-west1-a": 0.5, "us-west1/us-west1-b": 0.5])
        #expect(abs((failover?.shares.values.reduce(0, +) ?? 0) - 1) < 1e-9)
    }

    @Test("A ServiceEntry's endpoints are planned without an endpoints file: per-locality shares under its DestinationRule's failover, one port's endpoints counted once; no endpoint for the host exits 2 saying so")
    func serviceEntryEndpoints() async throws {
        let directory = try TemporaryDirectory("plan-se")
        defer { directory.cleanUp() }
        let policy = "\(directory.path)/payments.yaml"
        try """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: payments, namespace: default}
            spec:
              hosts: [payments.example.internal]
              location: MESH_INTERNAL
              resolution: STATIC
              ports: [{number: 443, name: https, protocol: TLS}, {number: 80, name: http, protocol: HTTP}]
              endpoints:
              - {address: 10.0.1.10, locality: us-east1/us-east1-a}
              - {address: 10.0.1.11, locality: us-east1/us-east1-a}
              - {address: 10.0.2.10, locality: us-west1/us-west1-a}
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: payments, namespace: default}
            spec:
              host: payments.example.internal
              trafficPolicy:
                loadBalancer:
                  localityLbSetting: {enabled: true, failover: [{from: us-east1, to: us-west1}]}
                outlierDetection: {consecutive5xxErrors: 5}
            """.write(toFile: policy, atomically: true, encoding: .utf8)
        let (planned, result) = try await plan(["--from", "us-east1/us-east1-a", "--policy", policy])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(planned?.shares == ["us-east1/us-east1-a": 1])
        #expect(planned?.priorities.first?.localities.first?.total == 2, "each endpoint once, not once per port")
        #expect(planned?.priorities.flatMap(\.localities).map(\.locality).contains("us-west1/us-west1-a") == true)

        let (_, missing) = try await plan(["--from", "us-east1/us-east1-a", "--policy", policy, "--host", "ledger.example.internal"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("no ServiceEntry") && missing.stderr.contains("ledger.example.internal"), "\(missing.stderr)")
    }

    @Test("A bad endpoints file exits 2 naming file, line and field")
    func badEndpoints() async throws {
        let directory = try TemporaryDirectory("plan-bad")
        defer { directory.cleanUp() }
        let file = "\(directory.path)/endpoints.yaml"
        try "endpoints:\n- {locality: us-east1/a, healthy: maybe}\n".write(toFile: file, atomically: true, encoding: .utf8)
        let (_, result) = try await plan(["--from", "us-east1/a", "--endpoints", file])
        #expect(result.status == 2)
        #expect(result.stderr.contains("endpoints.yaml:2:") && result.stderr.contains("endpoints[0].healthy"), "\(result.stderr)")
    }
}
