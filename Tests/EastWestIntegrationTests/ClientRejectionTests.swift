import Foundation
import MeshProxyCore
import Testing

@Suite("Who the gateway lets in (mTLS rejection matrix)", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct ClientRejectionTests {
    @Test("No certificate, another root, expired, a foreign trust domain and TLS 1.1 are refused with a TLS alert and one log line naming the reason; everyone else is still served")
    func rejectionMatrix() async throws {
        let mesh = try TestMesh("reject", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let (gateway, process) = try await mesh.startEchoCluster(block: 31)

        // Clients the gateway must refuse.
        let other = CertificateDirectory(path: "\(mesh.directory)/other-ca")
        try other.createRoot(trustDomain: "cluster.local")
        try other.createCluster("east")
        try other.createWorkload(cluster: "east", spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/client"),
                                 outputPath: "\(mesh.directory)/other-root-client")
        try mesh.certs.createWorkload(cluster: "east", spiffeID: try SpiffeID(parsing: "spiffe://cluster.local/ns/default/sa/client"),
                                      outputPath: "\(mesh.directory)/expired-client", validity: .seconds(60),
                                      notBefore: Date().addingTimeInterval(-7200))
        try mesh.certs.createWorkload(cluster: "east", spiffeID: try SpiffeID(parsing: "spiffe://evil.example/ns/default/sa/client"),
                                      outputPath: "\(mesh.directory)/foreign-client")
        let cases: [(client: String, reason: String)] = [
            ("\(mesh.directory)/no-certificate", "no client certificate presented"),
            ("\(mesh.directory)/other-root-client", "certificate chain does not lead to the mesh root"),
            ("\(mesh.directory)/expired-client", "expired at"),
            ("\(mesh.directory)/foreign-client", "trust domain 'evil.example' of spiffe://evil.example/ns/default/sa/client is not allowed"),
        ]
        for (client, reason) in cases {
            let refused = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local", client: client)
            #expect(refused.status != 0, "\(client) was let in")
            #expect(refused.stderr.contains("alert") || refused.stderr.contains("SSL") || refused.stderr.contains("TLS"),
                    "curl did not report a TLS failure for \(client): \(refused.stderr)")
            #expect(await eventually { process.log.contains(reason) }, "no log line with '\(reason)'")
            // The gateway keeps serving mesh clients.
            let served = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local")
            #expect(mesh.answer(served)?["cluster"] == "east", "after \(client): \(served.stderr)")
        }
        // A client limited to TLS 1.1: refused, and the log says why (from BoringSSL's reason code).
        let old = try await runCommand("/usr/bin/openssl", ["s_client", "-connect", "\(gateway.listen)", "-servername", "echo.default.svc.cluster.local",
                                                            "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"], stdin: Data(), timeout: 10)
        #expect(old.stdout.contains("Cipher is (NONE)"), "the TLS 1.1 handshake completed: \(old.stdout)")
        #expect(await eventually { process.log.contains("client offered an unsupported TLS version (1.2 or 1.3 required)") },
                "no log line naming the TLS version")
        #expect(process.isRunning)
    }
}

@Suite("Connections that never finish a handshake", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct PreHandshakeTests {
    /// Sockets of the gateway's listen address that hold a file descriptor, as `ss` lists them:
    /// not the listener, and not TIME-WAIT (the kernel's memory of a close the gateway made).
    func gatewaySockets(_ listen: HostPort) async throws -> [String] {
        let result = try await runCommand("/usr/bin/ss", ["-Htan", "state", "all", "src", listen.host])
        return result.stdout.split(separator: "\n").map(String.init)
            .filter { $0.contains("\(listen.host):\(listen.port) ") && !$0.hasPrefix("LISTEN") && !$0.hasPrefix("TIME-WAIT") }
    }

    @Test("500 connections that close after one byte and 50 that send nothing leave no socket once the handshake timeout has passed; good clients are served throughout")
    func floodLeavesNothingBehind() async throws {
        let mesh = try TestMesh("flood", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        try await mesh.startBackend("127.0.71.10:8080", cluster: "east")
        let config = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.71.1", services: [.echo("127.0.71.10:8080")],
                                        timeouts: .init(handshake: ConfigDuration(.seconds(2))))
        let gateway = try await mesh.startGateway(config)
        let script = "\(PackagePaths.root)/Tests/EastWestIntegrationTests/Support/prehandshake_flood.py"

        async let flood = runCommand("/usr/bin/env", ["python3", script, "127.0.71.1", "15443", "500", "50", "8"], timeout: 60)
        // Served while the flood is on.
        var served = 0
        for _ in 0..<5 {
            if mesh.answer(try await mesh.curl(config, host: "echo.default.svc.cluster.local"))?["cluster"] == "east" { served += 1 }
        }
        let report = try await flood
        #expect(report.status == 0, "flood script failed: \(report.stderr)")
        let numbers = (try? JSONSerialization.jsonObject(with: Data(report.stdout.utf8))) as? [String: Any]
        #expect(numbers?["closed_by_server"] as? Int == 50, "silent connections not closed: \(report.stdout)")
        // Closed at the 2 s handshake timeout (the SNI phase included), not held open.
        #expect((numbers?["max_seconds"] as? Double ?? 99) < 4, "\(report.stdout)")
        #expect(served == 5)
        let drained = try await eventually(timeout: .seconds(5)) { try await gatewaySockets(config.listen).isEmpty }
        let left = try await gatewaySockets(config.listen)
        #expect(drained, "sockets left: \(left.count), e.g. \(left.prefix(3))")
        #expect(gateway.log.contains("client closed before sending a complete ClientHello"))
        #expect(gateway.log.contains("no complete ClientHello within the handshake timeout (2s)"))
        #expect(mesh.answer(try await mesh.curl(config, host: "echo.default.svc.cluster.local"))?["cluster"] == "east")
    }

    @Test("Beyond maxPendingHandshakes a new connection is closed at accept, and an oversized ClientHello record gets record_overflow; established traffic goes on")
    func pendingCapAndOversizedHello() async throws {
        let mesh = try TestMesh("pending", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        try await mesh.startBackend("127.0.72.10:8080", cluster: "east")
        var config = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.72.1", services: [.echo("127.0.72.10:8080")],
                                        timeouts: .init(handshake: ConfigDuration(.seconds(3))))
        config.maxPendingHandshakes = 10
        let gateway = try await mesh.startGateway(config)

        let script = "\(PackagePaths.root)/Tests/EastWestIntegrationTests/Support/prehandshake_flood.py"
        let client = mesh.clientCertPath("east")
        // An mTLS connection made first and used after 30 silent connections: 10 take the
        // slots, 20 are closed at accept (long before the 3 s timeout).
        let flood = try await runCommand("/usr/bin/env", [
            "python3", script, "127.0.72.1", "15443", "0", "30", "1.5",
            "\(client)/cert-chain.pem", "\(client)/key.pem", mesh.certs.rootCertificatePath, "echo.default.svc.cluster.local"], timeout: 60)
        let numbers = (try? JSONSerialization.jsonObject(with: Data(flood.stdout.utf8))) as? [String: Any]
        #expect(numbers?["closed_by_server"] as? Int == 20, "\(flood.stdout) \(flood.stderr)")
        #expect(gateway.log.contains("10 connections are already in their handshake (maxPendingHandshakes)"))
        let reply = numbers?["established_answer"] as? String ?? ""
        #expect(reply.hasPrefix("HTTP/1.1 200") && reply.contains("east"), "established connection: \(reply) \(flood.stderr)")

        // A record header that announces 60000 bytes: no ClientHello is that large.
        let oversized = try await runCommand("/usr/bin/env", ["python3", "-c", """
            import socket
            s = socket.create_connection(("127.0.72.1", 15443))
            s.sendall(bytes([22, 3, 1, 0xEA, 0x60]) + b"\\x01" * 100)
            s.settimeout(5)
            print(s.recv(16).hex())
            """])
        #expect(oversized.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "15030300020216", "alert: \(oversized.stdout) \(oversized.stderr)")
        #expect(await eventually { gateway.log.contains("ClientHello record of 60000 bytes is larger than TLS allows") })
        #expect(try await eventually { mesh.answer(try await mesh.curl(config, host: "echo.default.svc.cluster.local"))?["cluster"] == "east" })
    }
}
