import Foundation
import MeshProxyCore
import Testing

/// WebSocket upgrades through the HTTP connection manager, with Python's websockets on both
/// ends: Istio turns upgrades on at gateways, and users run chat and live dashboards across
/// clusters like any HTTP service.
@Suite("WebSockets through the gateways (websockets on loopback)", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct WebSocketTests {
    static let chat = "chat.default.svc.cluster.local"
    static let hasWebSockets = (try? runCommandBlocking("/usr/bin/env", ["python3", "-c", "import websockets.sync.client"]))?.status == 0
    static let script = "\(PackagePaths.root)/Tests/EastWestIntegrationTests/Support/ws_echo.py"

    static let policies = TestFiles.versionSubsets("chat", ["v1", "v2"]) + """
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
        let setup = try await ScriptedBackends("websocket", host: Self.chat, port: 8080, protocol: .http, script: Self.script,
                                               blocks: (103, 104), policies: Self.policies)
        defer { setup.stop() }
        let (mesh, east, client) = (setup.mesh, setup.east, setup.client)
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
        #expect(local == expected("v1"), "\(local)\n\(setup.eastGateway.log.suffix(4000))")
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
