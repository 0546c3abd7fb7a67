import Foundation
import MeshProxyCore
import Testing

/// gRPC through the gateways with Python's grpcio: ALPN h2 to the entry gateway, a VirtualService
/// choosing the subset by metadata, the pooled HTTP/2 connection to the peer gateway, h2c to the
/// backends, trailers back, and Envoy's gRPC local replies.
@Suite("gRPC through the gateways (grpcio on loopback)", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct GRPCTests {
    static let hasGRPC = (try? runCommandBlocking("/usr/bin/env", ["python3", "-c", "import grpc"]))?.status == 0
    static let ratings = "ratings.default.svc.cluster.local"
    static let script = "\(PackagePaths.root)/Tests/EastWestIntegrationTests/Support/grpc_echo.py"

    static let policies = TestFiles.versionSubsets("ratings", ["v1", "v2", "v4"]) + """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: ratings}
        spec:
          hosts: [ratings]
          http:
          - match: [{headers: {end-user: {exact: jason}}}]
            route: [{destination: {host: ratings, subset: v2}}]
          - match: [{headers: {end-user: {exact: nobody}}}]
            route: [{destination: {host: ratings, subset: v4}}]
          - route: [{destination: {host: ratings, subset: v1}}]
        """

    @Test("A grpcio client in east: end-user jason reaches v2 in west over the pooled connection, others v1 in east; responses, trailers and the client's identity arrive; an empty subset is UNAVAILABLE 'no healthy upstream'",
          .enabled(if: hasGRPC, "needs python3's grpcio (.ci/run installs it from PyPI)"))
    func grpcAcrossClusters() async throws {
        let setup = try await ScriptedBackends("grpc", host: Self.ratings, port: 50051, protocol: .grpc, script: Self.script,
                                               blocks: (91, 92), policies: Self.policies)
        defer { setup.stop() }
        let (mesh, east, client) = (setup.mesh, setup.east, setup.client)
        func call(_ count: Int, _ metadata: [String] = []) async throws -> [String] {
            let result = try await runCommand("/usr/bin/env", ["python3", Self.script, "call", "127.0.91.1:15443", Self.ratings,
                                                               "\(client)/cert-chain.pem", "\(client)/key.pem", mesh.certs.rootCertificatePath,
                                                               "hello", String(count)] + metadata)
            return result.stdout.split(separator: "\n").map(String.init) + (result.status == 0 ? [] : ["exit \(result.status): \(result.stderr)"])
        }
        let identity = "By=spiffe://cluster.local/ns/istio-system/sa/eastwest-gateway-east;URI=spiffe://cluster.local/ns/default/sa/client"
        let jason = try await call(20, ["end-user=jason"])
        #expect(jason == Array(repeating: "ok v2:hello:\(identity) v2", count: 20), "\(jason.prefix(3))")
        let others = try await call(5)
        #expect(others == Array(repeating: "ok v1:hello:\(identity) v1", count: 5), "\(others.prefix(3))")
        let empty = try await call(1, ["end-user=nobody"])
        #expect(empty == ["error UNAVAILABLE no healthy upstream"], "\(empty)")

        let metrics = try await mesh.admin(east, "/stats/prometheus")
        let lines = metrics.split(separator: "\n").filter { $0.hasPrefix("istio_requests_total{") && $0.contains("request_protocol=\"grpc\"") }
        #expect(lines.contains { $0.contains("destination_cluster=\"west\"") && $0.contains("grpc_response_status=\"0\"") && $0.hasSuffix(" 20") }, "\(lines)")
        #expect(lines.contains { $0.contains("response_flags=\"UH\"") && $0.contains("grpc_response_status=\"14\"") && $0.contains("response_code=\"200\"") }, "\(lines)")
    }
}
