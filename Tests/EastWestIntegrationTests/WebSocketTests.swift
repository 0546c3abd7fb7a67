import Foundation
import MeshProxyCore
import Testing

/// WebSocket upgrades through the HTTP connection manager, with Python's websockets on both
/// ends: Istio turns upgrades on at gateways, and users run chat and live dashboards across
/// clusters like any HTTP service.
@Suite("WebSockets through the gateways (websockets on loopback)", .serialized, .timeLimit(.minutes(3)))
struct WebSocketTests {
    static let chat = "chat.default.svc.cluster.local"
    static let hasWebSockets = (try? runCommandBlocking("/usr/bin/env", ["python3", "-c", "import websockets.sync.client"]))?.status == 0
    static let script = "\(PackagePaths.root)/Tests/EastWestIntegrationTests/Support/ws_echo.py"

    static let policies = """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: chat}
        spec:
          host: chat
          subsets:
          - {name: v1, labels: {version: v1}}
          - {name: v2, labels: {version: v2}}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: chat}
        spec:
          hosts: [chat]
          http:
          - match: [{headers: {end-user: {exact: jason}}}]
            route: [{destination: {host: chat, subset: v2}}]
          - route: [{destination: {host: chat, subset: v1}}]
        """

    @Test("A WebSocket client in east: upgraded by the route its headers match, to v1 in east or v2 in west (through west's gateway); the server's first words, 20 messages and 1 MiB cross both ways; each upgrade counted as a 101 when it ends",
          .enabled(if: hasWebSockets, "needs python3's websockets (.ci/run installs it from PyPI)"))
    func webSocketAcrossClusters() async throws {
        let mesh = try TestMesh("websocket", clusters: ["east", "west"], serviceHosts: [Self.chat])
        defer { mesh.processes.stopAll() }
        var backends: [ChildProcess] = []
        defer { backends.forEach { $0.stop() } }
        for (address, version) in [("127.0.103.10:8080", "v1"), ("127.0.104.10:8080", "v2")] {
            let backend = try ChildProcess(name: "ws-\(version)", arguments: ["/usr/bin/env", "python3", Self.script, "serve", address, version],
                                           logPath: "\(mesh.directory)/ws-\(version).log")
            backends.append(backend)
            try #require(await eventually { backend.log.contains("ready") }, "WebSocket backend \(version) did not start: \(backend.log)")
        }
        func service(_ address: String, _ version: String) -> GatewayConfig.ServiceConfig {
            .init(host: Self.chat, port: 8080, endpoints: [Endpoint(address: HostPort(parsing: address)!, labels: ["version": version])], protocol: .http)
        }
        let policyPath = "\(mesh.directory)/chat.yaml"
        try Self.policies.write(toFile: policyPath, atomically: true, encoding: .utf8)
        let westService = service("127.0.104.10:8080", "v2")
        var east = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.103.1", services: [service("127.0.103.10:8080", "v1")],
                                      remotes: [.init(name: "west", gateways: [.init(name: "west-gw", address: HostPort(host: "127.0.104.1", port: 15443))],
                                                      services: [westService])])
        east.policies = [policyPath]
        var west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: "127.0.104.1", services: [westService])
        west.policies = [policyPath]
        try await mesh.startGateway(west)
        let eastGateway = try await mesh.startGateway(east)

        let client = mesh.clientCertPath("east")
        func talk(_ headers: [String] = []) async throws -> [String] {
            let result = try await runCommand("/usr/bin/env", ["python3", Self.script, "call", "127.0.103.1:15443", Self.chat,
                                                               "\(client)/cert-chain.pem", "\(client)/key.pem", mesh.certs.rootCertificatePath,
                                                               "20"] + headers)
            return result.stdout.split(separator: "\n").map(String.init) + (result.status == 0 ? [] : ["exit \(result.status): \(result.stderr.suffix(800))"])
        }
        func expected(_ version: String) -> [String] {
            ["hello from \(version)"] + (0..<20).map { "\(version):message \($0)" } + ["\(version):\(1 << 20)"]
        }
        let local = try await talk()
        #expect(local == expected("v1"), "\(local)\n\(eastGateway.log.suffix(4000))")
        let remote = try await talk(["end-user=jason"])
        #expect(remote == expected("v2"), "\(remote)")

        // Logged and counted when the upgraded connection ends, as Envoy does.
        let counted = await eventually {
            let metrics = (try? await mesh.admin(east, "/stats/prometheus")) ?? ""
            let lines = metrics.split(separator: "\n").filter { $0.hasPrefix("istio_requests_total{") && $0.contains("response_code=\"101\"") }
            return lines.contains { $0.contains("destination_cluster=\"east\"") && $0.hasSuffix(" 1") }
                && lines.contains { $0.contains("destination_cluster=\"west\"") && $0.hasSuffix(" 1") }
        }
        let metrics = try await mesh.admin(east, "/stats/prometheus")
        #expect(counted, "\(metrics.split(separator: "\n").filter { $0.hasPrefix("istio_requests_total{") })")
    }
}
