import Foundation
import MeshProxyCore
import Testing

/// REFUSED_STREAM from an HTTP/2 backend (Python `h2`): Istio's default retry policy covers it,
/// a policy without `refused-stream` does not.
@Suite("HTTP/2 refused streams and retries (python h2 on loopback)", .serialized, .timeLimit(.minutes(2)), .sharesMachine)
struct RefusedStreamTests {
    static let hasH2 = (try? runCommandBlocking("/usr/bin/env", ["python3", "-c", "import h2"]))?.status == 0
    static let host = "stock.default.svc.cluster.local"
    static let script = "\(PackagePaths.root)/Tests/EastWestIntegrationTests/Support/h2_refusing_server.py"

    static let policies = TestFiles.versionSubsets("stock", ["v1", "v2"]) + """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: stock}
        spec:
          hosts: [stock]
          http:
          - match: [{uri: {prefix: /strict}}]
            retries: {attempts: 2, retryOn: 5xx}
            route: [{destination: {host: stock, subset: v1}}]
          - route: [{destination: {host: stock, subset: v1}}]
        """

    @Test("Two refused streams, then an answer: Istio's default policy retries them (the client sees 200 after 2 refusals); retryOn 5xx covers a refusal too; attempts: 2 with three refusals ends in 503",
          .enabled(if: hasH2, "needs python3's h2 (.ci/run installs it from PyPI)"))
    func refusedStreamsRetried() async throws {
        let setup = try await ScriptedBackends("h2-refuse", host: Self.host, port: 8090, protocol: .http2, script: Self.script,
                                               blocks: (123, 124), policies: Self.policies)
        defer { setup.stop() }
        func get(_ path: String, _ headers: [String]) async throws -> (code: String, body: String) {
            let result = try await setup.mesh.curl(setup.east, host: Self.host, path: path, client: setup.client,
                                                   extra: headers.flatMap { ["-H", $0] } + ["-w", "\n%{http_code}"])
            let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
        }
        let healed = try await get("/items", ["x-demo-key: a", "x-refuse-first: 2"])
        #expect(healed == ("200", "version=v1 refused=2\n"), "\(healed) \(setup.eastGateway.log.suffix(1500))")
        let strict = try await get("/strict", ["x-demo-key: b", "x-refuse-first: 1"])
        #expect(strict == ("200", "version=v1 refused=1\n"), "\(strict)")
        let out = try await get("/strict", ["x-demo-key: c", "x-refuse-first: 3"])
        #expect(out.code == "503", "\(out)")
    }
}
