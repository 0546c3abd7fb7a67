import Foundation
import MeshProxyCore
import Testing
import Yams

/// The shipped three-regions topology with four echo endpoints in us-east1-a (so a zone can
/// lose health gradually), driven through us-east's gateway with thousands of real mTLS
/// connections, under a DestinationRule with failover and outlier detection. Part of the
/// three-regions suite: the suite runs its tests one at a time, and both use 127.0.1–3.x.
extension ThreeRegionsTopologyTests {
    @Test("Observed shares match the plan over 2000 connections; killing us-east1-a's backends one by one spills traffic gradually (100 → 100 → 70 → 35 → 0 %), a dead region fails over to us-west1, and restarted backends get their traffic back")
    func gradualSpillAndRegionFailover() async throws {
        let dir = try TemporaryDirectory("regional")
        defer { dir.cleanUp() }
        // topologies/three-regions.yaml, with us-east1-a grown to four endpoints.
        var topology = try ConfigLoader.load(Topology.self, file: "\(PackagePaths.root)/topologies/three-regions.yaml")
        let zoneA = Locality(region: "us-east1", zone: "us-east1-a")
        let echoIndex = try #require(topology.clusters[0].services?.firstIndex { $0.host == "echo.default.svc.cluster.local" })
        for last in [12, 13, 14] {
            topology.clusters[0].services![echoIndex].endpoints.append(
                Endpoint(address: HostPort(host: "127.0.1.\(last)", port: 8080), locality: zoneA, labels: ["version": "v1"]))
        }
        let zoneAAddresses = ["127.0.1.10", "127.0.1.12", "127.0.1.13", "127.0.1.14"].map { "\($0):8080" }
        topology.policies = [try TestFiles.writeDestinationRule(in: dir.path, trafficPolicy: """
            loadBalancer:
              localityLbSetting: {enabled: true, failover: [{from: us-east1, to: us-west1}]}
            outlierDetection: {consecutiveGatewayErrors: 1, interval: 1s, baseEjectionTime: 3s, maxEjectionPercent: 100}
            """)]
        topology.clusters[0].gateways = [topology.clusters[0].gateways[0]]  // one us-east gateway is enough here
        try YAMLEncoder().encode(topology).write(toFile: "\(dir.path)/topology.yaml", atomically: true, encoding: .utf8)

        let (up, state) = try await startUp("\(dir.path)/topology.yaml", in: dir)
        defer { up.stop() }
        struct Ready: Decodable { struct Backend: Decodable { var address: String; var pid: Int32 }; var backends: [Backend] }
        let backends = try JSONDecoder().decode(Ready.self, from: Data(contentsOf: URL(fileURLWithPath: "\(state)/ready.json"))).backends
        func kill(_ address: String) async {
            guard let pid = backends.first(where: { $0.address == address })?.pid else { Issue.record("no backend \(address)"); return }
            Foundation.kill(pid, SIGKILL)
            _ = await eventually(timeout: .seconds(5)) { (try? await runCommand("/usr/bin/curl", ["-s", "--max-time", "1", "http://\(address)/"]).status) != 0 }
        }

        let gateway = HostPort(host: "127.0.1.1", port: 15443)
        let client = "\(state)/certs/us-east/client"
        func load(_ count: Int) async throws -> [String: Int] {
            try await MeshLoad.run(count: count, gateway: gateway, host: "echo.default.svc.cluster.local",
                                   client: client, root: "\(client)/root-cert.pem")
        }
        struct Plan: Decodable { var shares: [String: Double] }
        func plan() async throws -> [String: Double] {
            let answer = try await runCommand("/usr/bin/curl", ["-s", "--max-time", "5", "http://127.0.1.1:15000/v1/plan?host=echo.default.svc.cluster.local"])
            return (try? JSONDecoder().decode(Plan.self, from: Data(answer.stdout.utf8)).shares) ?? [:]
        }
        func share(_ counts: [String: Int], _ locality: String) -> Double {
            Double(counts[locality, default: 0]) / Double(max(1, counts.values.reduce(0, +)))
        }
        /// Sends a few connections so outlier detection sees the dead endpoint and ejects it.
        func settle() async throws { _ = try await load(40) }

        // Healthy: everything stays in the client's own zone.
        #expect(try await load(200) == ["us-east1/us-east1-a": 200])

        // One of four down: 3/4 × 1.4 ≥ 1, still 100 % local (Envoy's overprovisioning).
        await kill(zoneAAddresses[0])
        try await settle()
        #expect(try await plan() == ["us-east1/us-east1-a": 1])
        #expect(share(try await load(200), "us-east1/us-east1-a") == 1)

        // Two of four down: health 70 → 70 % stays, 30 % spills to us-east1-b. 2000 connections
        // observed against the plan.
        await kill(zoneAAddresses[1])
        try await settle()
        let predicted = try await plan()
        #expect(predicted.mapValues { ($0 * 100).rounded() } == ["us-east1/us-east1-a": 70, "us-east1/us-east1-b": 30])
        let observed = try await load(2000)
        #expect(observed["failed", default: 0] == 0, "\(observed)")
        for (locality, expected) in predicted {
            #expect(abs(share(observed, locality) - expected) < 0.03, "\(locality): observed \(observed), planned \(predicted)")
        }

        // Three of four down: health 35 → 35 / 65.
        await kill(zoneAAddresses[2])
        try await settle()
        #expect(try await plan().mapValues { ($0 * 100).rounded() } == ["us-east1/us-east1-a": 35, "us-east1/us-east1-b": 65])
        #expect(abs(share(try await load(400), "us-east1/us-east1-a") - 0.35) < 0.05)

        // The whole region down: the failover rule sends everything to us-west1, none to eu-west1.
        await kill(zoneAAddresses[3])
        await kill("127.0.1.11:8080")
        try await settle()
        let failedOver = try await load(300)
        // Nothing goes to eu-west1; a connection or two racing the last ejection may fail on a
        // loaded machine.
        #expect(share(failedOver, "us-west1/us-west1-a") + share(failedOver, "us-west1/us-west1-b") >= 0.98, "\(failedOver)")
        #expect(failedOver.keys.allSatisfy { !$0.hasPrefix("eu-west1") && !$0.hasPrefix("us-east1") }, "\(failedOver)")

        // Bring us-east1-a back: once the ejections run out, its traffic returns.
        var restarted: [ChildProcess] = []
        defer { restarted.forEach { $0.stop() } }
        for address in zoneAAddresses {
            restarted.append(try ChildProcess(name: "backend-\(address)", arguments: [
                PackagePaths.eastwest, "demo-backend", "--listen", address, "--service", "echo.default.svc.cluster.local",
                "--cluster", "us-east", "--locality", "us-east1/us-east1-a"], logPath: "\(dir.path)/restart-\(address).log"))
        }
        let recovered = await eventually(timeout: .seconds(20)) { (try? await plan()) == ["us-east1/us-east1-a": 1] }
        let lastPlan = (try? await plan()) ?? [:]
        #expect(recovered, "\(lastPlan)")
        #expect(try await load(200) == ["us-east1/us-east1-a": 200])
        up.signal(SIGINT)
        #expect(await up.waitForExit(timeout: .seconds(30)) == 0)
    }

    @Test("distribute on the shipped three-regions topology: 2000 connections from us-east split 80/20 between us-east1 and us-west1 as eastwest plan predicts, none to eu-west1")
    func distributeAcrossRegions() async throws {
        let dir = try TemporaryDirectory("distribute")
        defer { dir.cleanUp() }
        var topology = try ConfigLoader.load(Topology.self, file: "\(PackagePaths.root)/topologies/three-regions.yaml")
        let policy = try TestFiles.writeDestinationRule(in: dir.path, trafficPolicy: """
            loadBalancer:
              localityLbSetting:
                distribute:
                - from: us-east1/*
                  to: {"us-east1/*": 80, "us-west1/*": 20}
            """)
        topology.policies = [policy]
        try YAMLEncoder().encode(topology).write(toFile: "\(dir.path)/topology.yaml", atomically: true, encoding: .utf8)
        let (up, state) = try await startUp("\(dir.path)/topology.yaml", in: dir)
        defer { up.stop() }

        // What eastwest plan predicts for a client in us-east1-a, from the same files.
        let endpoints = "\(dir.path)/endpoints.yaml"
        let echo = topology.clusters.flatMap { ($0.services ?? []).filter { $0.host == "echo.default.svc.cluster.local" }.flatMap(\.endpoints) }
        try ("endpoints:\n" + echo.map { "- {locality: \($0.locality!.description)}" }.joined(separator: "\n") + "\n")
            .write(toFile: endpoints, atomically: true, encoding: .utf8)
        let (predicted, planResult) = try await PlanCommandTests().plan(["--from", "us-east1/us-east1-a", "--endpoints", endpoints,
                                                                  "--policy", policy])
        let shares = try #require(predicted?.shares, "\(planResult.stderr)")
        let client = "\(state)/certs/us-east/client"
        let observed = try await MeshLoad.run(count: 2000, gateway: HostPort(host: "127.0.1.1", port: 15443), host: "echo.default.svc.cluster.local",
                                              client: client, root: "\(client)/root-cert.pem", field: "cluster")
        let total = Double(observed.values.reduce(0, +))
        let usEast = shares.filter { $0.key.hasPrefix("us-east1") }.values.reduce(0, +)
        let usWest = shares.filter { $0.key.hasPrefix("us-west1") }.values.reduce(0, +)
        #expect(abs(usEast - 0.8) < 0.01 && abs(usWest - 0.2) < 0.01, "\(shares)")
        #expect(abs(Double(observed["us-east", default: 0]) / total - usEast) < 0.03, "\(observed)")
        #expect(abs(Double(observed["us-west", default: 0]) / total - usWest) < 0.03, "\(observed)")
        #expect(observed["eu-west"] == nil && observed["failed"] == nil, "\(observed)")
        up.signal(SIGINT)
        #expect(await up.waitForExit(timeout: .seconds(30)) == 0)
    }
}
