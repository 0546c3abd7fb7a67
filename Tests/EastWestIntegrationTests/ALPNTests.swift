import Foundation
import MeshProxyCore
import Testing

/// The gateway chooses its TLS context by SNI and offers the ALPN the route's service speaks.
@Suite("ALPN on 15443", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct ALPNTests {
    static let hasTools = FileManager.default.isExecutableFile(atPath: "/usr/sbin/nghttpd")
        && ((try? runCommandBlocking("/usr/bin/env", ["python3", "-c", "import h2"]))?.status == 0)

    func startH2Backend(_ mesh: TestMesh, _ address: String) throws -> ChildProcess {
        let root = "\(mesh.directory)/h2root-\(address)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try "hello over h2\n".write(toFile: "\(root)/index.html", atomically: true, encoding: .utf8)
        let hostPort = HostPort(parsing: address)!
        return try ChildProcess(name: "nghttpd", arguments: ["/usr/sbin/nghttpd", "--no-tls", "-a", hostPort.host, "-d", root, "\(hostPort.port)"],
                                logPath: "\(mesh.directory)/nghttpd-\(address).log")
    }

    /// curl --http2 through `gateway`; returns the HTTP version curl used and the body.
    func curlHTTP2(_ mesh: TestMesh, _ gateway: GatewayConfig, host: String, path: String = "/") async throws -> (version: String, body: String) {
        let result = try await mesh.curl(gateway, host: host, path: path, extra: ["--http2", "-w", "\n%{http_version}"])
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
    }

    @Test("curl --http2 and Python's h2 (ALPN h2) reach an h2 backend; an HTTP/1.1 service is served over h2 by the gateway's HTTP connection manager; a TCP service offers no ALPN",
          .enabled(if: hasTools, "needs nghttpd (Debian nghttp2-server) and python3's h2 package; .ci/run installs both"))
    func oneGateway() async throws {
        let mesh = try TestMesh("alpn", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let backend = try startH2Backend(mesh, "127.0.78.10:8443")
        defer { backend.stop() }
        try await mesh.startBackend("127.0.78.11:8080", cluster: "east")
        try await mesh.startBackend("127.0.78.12:9000", service: "tcp-echo.default.svc.cluster.local", cluster: "east")
        var ratings = GatewayConfig.ServiceConfig.echo("127.0.78.10:8443", host: "ratings.default.svc.cluster.local", port: 8443)
        ratings.protocol = .http2
        var echo = GatewayConfig.ServiceConfig.echo("127.0.78.11:8080")
        echo.protocol = .http
        let tcp = GatewayConfig.ServiceConfig.echo("127.0.78.12:9000", host: "tcp-echo.default.svc.cluster.local", port: 9000)
        let gateway = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.78.1", services: [ratings, echo, tcp])
        try await mesh.startGateway(gateway)

        var h2 = (version: "", body: "")
        _ = await eventually(timeout: .seconds(5)) {
            h2 = (try? await curlHTTP2(mesh, gateway, host: "ratings.default.svc.cluster.local", path: "/index.html")) ?? h2
            return h2.version == "2"
        }
        #expect(h2.version == "2" && h2.body == "hello over h2\n", "\(h2)")
        // The gateway terminates HTTP for an `http` service: h2 to the client, HTTP/1.1 to the backend.
        let terminated = try await curlHTTP2(mesh, gateway, host: "echo.default.svc.cluster.local", path: "/over/h2")
        #expect(terminated.version == "2", "\(terminated)")
        let answer = mesh.answer(CommandResult(status: 0, stdout: terminated.body, stderr: ""))
        #expect(answer?["cluster"] == "east" && answer?["path"] == "/over/h2", "\(terminated)")
        let http1 = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local", extra: ["--http1.1", "-w", "\n%{http_version}"])
        #expect(http1.stdout.hasSuffix("\n1.1"), "\(http1.stdout)")

        let client = mesh.clientCertPath("east")
        let script = "\(PackagePaths.root)/Tests/EastWestIntegrationTests/Support/h2_prior_knowledge_client.py"
        let python = try await runCommand("/usr/bin/env", ["python3", script, "127.0.78.1", "15443", "ratings.default.svc.cluster.local",
                                                           "\(client)/cert-chain.pem", "\(client)/key.pem", mesh.certs.rootCertificatePath,
                                                           "/index.html", "h2,http/1.1"])
        #expect(python.stdout == "alpn=h2\n200\nhello over h2\n\n", "\(python.stdout) \(python.stderr)")

        let openssl = try await runCommand("/usr/bin/openssl", [
            "s_client", "-connect", "127.0.78.1:15443", "-servername", "tcp-echo.default.svc.cluster.local", "-alpn", "h2,http/1.1",
            "-cert", "\(client)/cert-chain.pem", "-key", "\(client)/key.pem", "-CAfile", mesh.certs.rootCertificatePath], stdin: Data(), timeout: 10)
        #expect(openssl.stdout.contains("No ALPN negotiated"), "\(openssl.stdout)")
    }

    @Test("Across two gateways: the protocol travels in the federation catalog and curl --http2 in c0 reaches c1's h2 (h2c) backend through c0's HTTP connection manager",
          .enabled(if: hasTools, "needs nghttpd (Debian nghttp2-server) and python3's h2 package; .ci/run installs both"))
    func twoGateways() async throws {
        let mesh = try TestMesh("alpn2", clusters: ["c0", "c1"])
        defer { mesh.processes.stopAll() }
        let backend = try startH2Backend(mesh, "127.0.80.10:8443")
        defer { backend.stop() }
        var ratings = GatewayConfig.ServiceConfig.echo("127.0.80.10:8443", host: "ratings.default.svc.cluster.local", port: 8443)
        ratings.protocol = .grpc
        var c0 = mesh.gatewayConfig(name: "gw-c0", cluster: "c0", ip: "127.0.79.1", services: [])
        var c1 = mesh.gatewayConfig(name: "gw-c1", cluster: "c1", ip: "127.0.80.1", services: [ratings])
        c0.federation = .init(seeds: [c1.listen])
        c1.federation = .init(seeds: [c0.listen])
        try await mesh.startGateway(c1)
        let c0Process = try await mesh.startGateway(c0)

        var h2 = (version: "", body: "")
        _ = await eventually(timeout: .seconds(10)) {
            h2 = (try? await curlHTTP2(mesh, c0, host: "ratings.default.svc.cluster.local", path: "/index.html")) ?? h2
            return h2.version == "2"
        }
        #expect(h2.version == "2" && h2.body == "hello over h2\n", "\(h2) \(c0Process.log.suffix(2000))")
        // c0's HTTP connection manager served it and sent it on to c1's gateway.
        #expect(await eventually { c0Process.log.contains("\"127.0.80.1:15443\" outbound|8443||ratings.default.svc.cluster.local") },
                "\(c0Process.log.suffix(1500))")
    }

    @Test("connectionPool.http: h2UpgradePolicy UPGRADE speaks HTTP/2 to an HTTP/1.1 service's endpoints (an h2c-only nghttpd answers curl --http1.1; without it, it cannot); useClientProtocol speaks what the client spoke, across two gateways (curl --http2 answered by c1's h2c endpoint, curl --http1.1 not)",
          .enabled(if: hasTools, "needs nghttpd (Debian nghttp2-server) and python3's h2 package; .ci/run installs both"))
    func upstreamProtocolChoice() async throws {
        let upgraded = "ratings.default.svc.cluster.local", plain = "plain.default.svc.cluster.local", details = "details.default.svc.cluster.local"
        let mesh = try TestMesh("alpn-upgrade", clusters: ["c0", "c1"], serviceHosts: [upgraded, plain, details])
        defer { mesh.processes.stopAll() }
        let local = try startH2Backend(mesh, "127.0.142.10:8443")
        defer { local.stop() }
        let remote = try startH2Backend(mesh, "127.0.143.10:8443")
        defer { remote.stop() }
        func http1(_ host: String, _ address: String) -> GatewayConfig.ServiceConfig {
            var service = GatewayConfig.ServiceConfig.echo(address, host: host, port: 8443)
            service.protocol = .http
            return service
        }
        let policy = "\(mesh.directory)/protocols.yaml"
        try """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: ratings}
            spec:
              host: ratings
              trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 10}}}
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: details}
            spec:
              host: details
              trafficPolicy: {connectionPool: {http: {useClientProtocol: true, h2UpgradePolicy: DO_NOT_UPGRADE}}}
            """.write(toFile: policy, atomically: true, encoding: .utf8)
        var c0 = mesh.gatewayConfig(name: "gw-c0", cluster: "c0", ip: "127.0.142.1",
                                    services: [http1(upgraded, "127.0.142.10:8443"), http1(plain, "127.0.142.10:8443")])
        var c1 = mesh.gatewayConfig(name: "gw-c1", cluster: "c1", ip: "127.0.143.1", services: [http1(details, "127.0.143.10:8443")])
        c0.policies = [policy]
        c1.policies = [policy]
        c0.federation = .init(seeds: [c1.listen])
        c1.federation = .init(seeds: [c0.listen])
        try await mesh.startGateway(c1)
        let c0Process = try await mesh.startGateway(c0)

        func get(_ host: String, _ version: String) async throws -> (code: String, body: String) {
            let result = try await mesh.curl(c0, host: host, path: "/index.html", extra: [version, "-w", "\n%{http_code}"])
            let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n") + result.stderr)
        }
        var answer = (code: "", body: "")
        _ = await eventually(timeout: .seconds(5)) {
            answer = (try? await get(upgraded, "--http1.1")) ?? answer
            return answer.code == "200"
        }
        #expect(answer == ("200", "hello over h2\n"), "UPGRADE: \(answer) \(c0Process.log.suffix(1500))")
        let notUpgraded = try await get(plain, "--http1.1")
        #expect(notUpgraded.code != "200", "an HTTP/1.1 request to the h2c-only backend cannot be answered: \(notUpgraded)")

        var h2 = (code: "", body: "")
        _ = await eventually(timeout: .seconds(10)) {
            h2 = (try? await get(details, "--http2")) ?? h2
            return h2.code == "200"
        }
        #expect(h2 == ("200", "hello over h2\n"), "useClientProtocol, an h2 client: \(h2) \(c0Process.log.suffix(1500))")
        let h1 = try await get(details, "--http1.1")
        #expect(h1.code != "200", "useClientProtocol, an HTTP/1.1 client: HTTP/1.1 to the h2c-only backend in c1: \(h1)")
    }
}
