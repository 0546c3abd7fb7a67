import Foundation
import MeshProxyCore
import Testing

/// The key exchange groups 15443 negotiates: Envoy's defaults (X25519, P-256), or with Istio's
/// `pqc` compliance policy X25519MLKEM768 alone, on the client side of the hop between gateways
/// too. Seen with OpenSSL's own client (which has no ML-KEM here) and with `eastwest load`
/// (BoringSSL, which offers it).
@Suite("Key exchange on 15443", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct KeyExchangeTests {
    /// `openssl s_client` to `gateway` offering only `groups`: what it printed, both streams.
    func handshake(_ mesh: TestMesh, _ gateway: GatewayConfig, host: String = "echo.default.svc.cluster.local", groups: String) async throws -> String {
        let client = mesh.clientCertPath(gateway.cluster)
        let result = try await runCommand("/usr/bin/openssl", [
            "s_client", "-connect", gateway.listen.description, "-servername", host, "-groups", groups,
            "-cert", "\(client)/cert-chain.pem", "-key", "\(client)/key.pem", "-CAfile", mesh.certs.rootCertificatePath], stdin: Data(), timeout: 10)
        return result.stdout + result.stderr
    }

    @Test("By default a client offering X25519 or P-256 gets that group (Envoy's DEFAULT_CURVES); one offering only P-384 gets a handshake_failure alert")
    func envoyDefaults() async throws {
        let mesh = try TestMesh("kex", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let (gateway, _) = try await mesh.startEchoCluster(block: 160)

        let x25519 = try await handshake(mesh, gateway, groups: "X25519")
        #expect(x25519.contains("Server Temp Key: X25519"), "\(x25519)")
        let p256 = try await handshake(mesh, gateway, groups: "P-256")
        #expect(p256.contains("Server Temp Key: ECDH, prime256v1"), "\(p256)")
        let p384 = try await handshake(mesh, gateway, groups: "P-384")
        #expect(!p384.contains("Server Temp Key") && p384.contains("handshake failure"), "\(p384)")
    }

    @Test("compliancePolicy: pqc — a classical-only client is refused with handshake_failure; 20 new connections of `eastwest load` (ML-KEM offered) reach a service only west serves through east's gateway and the pooled HTTP/2 hop to west's, both pqc")
    func postQuantum() async throws {
        let mesh = try TestMesh("pqc", clusters: ["east", "west"])
        defer { mesh.processes.stopAll() }
        try await mesh.startBackend("127.0.161.20:9080", service: "ratings.default.svc.cluster.local", cluster: "west")
        var ratings = GatewayConfig.ServiceConfig.echo("127.0.161.20:9080", host: "ratings.default.svc.cluster.local", port: 9080)
        ratings.protocol = .http
        var west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: "127.0.161.1", services: [ratings])
        var east = mesh.eastGateway(ip: "127.0.160.1", reaching: west)
        west.compliancePolicy = .pqc
        east.compliancePolicy = .pqc
        try await mesh.startGateway(west)
        let eastProcess = try await mesh.startGateway(east)

        let classical = try await handshake(mesh, east, host: "ratings.default.svc.cluster.local", groups: "X25519:P-256")
        #expect(!classical.contains("Server Temp Key") && classical.contains("handshake failure"), "\(classical)")

        let client = mesh.clientCertPath("east")
        let load = try await runCommand(PackagePaths.eastwest, [
            "load", "--target", east.listen.description, "--sni", "ratings.default.svc.cluster.local",
            "--cert", "\(client)/cert-chain.pem", "--key", "\(client)/key.pem", "--ca", mesh.certs.rootCertificatePath,
            "--rate", "20", "--duration", "1s", "--new-connection-per-request", "--json"], timeout: 30)
        let summary = try JSONSerialization.jsonObject(with: Data(load.stdout.utf8)) as? [String: Any]
        #expect(summary?["succeeded"] as? Int == 20, "\(load.stdout) \(load.stderr)")
        // Served by west's backend over the pooled HTTP/2 connection, not refused at the hop.
        #expect(await eventually { eastProcess.log.contains("outbound|9080||ratings.default.svc.cluster.local") && eastProcess.log.contains(" 200 ") },
                "\(eastProcess.log.suffix(1500))")
    }
}
