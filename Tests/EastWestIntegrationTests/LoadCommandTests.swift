import Foundation
import MeshProxyCore
import Testing

/// `eastwest load` against a real gateway and backend: what it reports is what the backend saw.
@Suite("eastwest load: the mTLS load generator", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct LoadCommandTests {
    struct Summary: Decodable {
        var sent: Int
        var succeeded: Int
        var failed: [String: Int]
        var connectionFailures: [String: Int]
        var requestsPerSecond: Double
        var seconds: Double
        var mode: String
        var latencyMs: [String: Double]
    }

    func load(_ mesh: TestMesh, _ gateway: GatewayConfig, _ extra: [String]) async throws -> (CommandResult, Summary?) {
        let client = mesh.clientCertPath("east")
        let result = try await runCommand(PackagePaths.eastwest, ["load", "--target", gateway.listen.description, "--sni", "echo.default.svc.cluster.local",
                                                            "--cert", "\(client)/cert-chain.pem", "--key", "\(client)/key.pem",
                                                            "--ca", mesh.certs.rootCertificatePath, "--json"] + extra, timeout: 60)
        return (result, try? JSONDecoder().decode(Summary.self, from: Data(result.stdout.utf8)))
    }

    func backendCount() async throws -> Int {
        Int(try await runCommand("/usr/bin/curl", ["-s", "http://127.0.59.10:8080/count"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    @Test("Keep-alive, open-loop and idle-then-burst runs through a gateway: every answer it counts reached the backend")
    func throughGateway() async throws {
        let mesh = try TestMesh("load", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let (gateway, _) = try await mesh.startEchoCluster(block: 59)

        // Closed loop over kept-alive connections.
        var before = try await backendCount()
        let (keepAlive, summary) = try await load(mesh, gateway, ["--connections", "4", "--duration", "2s"])
        #expect(keepAlive.status == 0, "\(keepAlive.stderr)")
        let closed = try #require(summary, "\(keepAlive.stdout)")
        #expect(closed.succeeded > 100)
        #expect(closed.failed.isEmpty)
        #expect(closed.sent == closed.succeeded)
        #expect(abs(closed.requestsPerSecond - Double(closed.succeeded) / closed.seconds) < 1)
        let p50 = try #require(closed.latencyMs["p50"]), p99 = try #require(closed.latencyMs["p99"]), max = try #require(closed.latencyMs["max"])
        #expect(p50 > 0 && p50 <= p99 && p99 <= max)
        #expect(try await backendCount() - before == closed.succeeded)

        // Open loop, a new mTLS connection per request: exactly rate × duration are due.
        before = try await backendCount()
        let (open, openSummary) = try await load(mesh, gateway, ["--rate", "100", "--duration", "2s", "--new-connection-per-request"])
        #expect(open.status == 0, "\(open.stderr)")
        let opened = try #require(openSummary, "\(open.stdout)")
        #expect(opened.sent == 200)
        #expect(opened.succeeded == 200)
        #expect(opened.mode == "open loop, 100 req/s, new connection per request")
        #expect(try await backendCount() - before == 200)

        // Idle connections, then one request on each at once.
        before = try await backendCount()
        let (burst, burstSummary) = try await load(mesh, gateway, ["--idle-connections", "50", "--idle-for", "1s"])
        #expect(burst.status == 0, "\(burst.stderr)")
        #expect(burstSummary?.succeeded == 50)
        #expect(burstSummary?.mode == "idle-then-burst")
        #expect(try await backendCount() - before == 50)
    }

    @Test("Failures are counted by kind, and a run with no answer exits 1")
    func failures() async throws {
        let mesh = try TestMesh("loadfail", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let nobody = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.59.2", services: [.echo("127.0.59.10:8080")])
        let (refused, summary) = try await load(mesh, nobody, ["--rate", "50", "--duration", "1s", "--new-connection-per-request"])
        #expect(refused.status == 1)
        #expect(summary?.failed["connect"] == 50)
        #expect(summary?.succeeded == 0)

        // Kept-alive connections that never open send nothing; the summary says why.
        let (keptAlive, keptSummary) = try await load(mesh, nobody, ["--connections", "2", "--duration", "1s"])
        #expect(keptAlive.status == 1)
        #expect(keptSummary?.sent == 0)
        #expect((keptSummary?.connectionFailures["connect"] ?? 0) >= 2)

        let usage = try await runCommand(PackagePaths.eastwest, ["load", "--target", "127.0.59.1:15443", "--cert", "c.pem"])
        #expect(usage.status != 0)
        #expect(usage.stderr.contains("mTLS needs all of --cert, --key and --ca"))
    }
}
