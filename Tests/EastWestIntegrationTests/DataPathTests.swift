import Crypto
import Foundation
import MeshProxyCore
import NIOCore
import NIOPosix
import NIOSSL
import Testing

@Suite("Data path: bytes, half-close, drain", .serialized, .timeLimit(.minutes(3)), .needsMachineAlone)
struct DataPathTests {
    @Test("1 MiB up and 1 MiB back arrive intact (sha256) across two gateways, with half-close in both directions")
    func megabyteWithHalfClose() async throws {
        let mesh = try TestMesh("bytes", clusters: ["east", "west"])
        defer { mesh.processes.stopAll() }
        // A raw TCP echo server: echoes everything, then closes its side when the client's side ends.
        let echoServer = try await TCPEchoServer.start(host: "127.0.33.30", port: 7000)
        defer { echoServer.stop() }
        let tcpEcho = GatewayConfig.ServiceConfig.echo("127.0.33.30:7000", host: "tcp-echo.default.svc.cluster.local", port: 7000)
        let west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: "127.0.33.1", services: [tcpEcho])
        let east = mesh.eastGateway(ip: "127.0.32.1", reaching: west)
        try await mesh.startGateway(west)
        try await mesh.startGateway(east)

        var payload = [UInt8](repeating: 0, count: 1 << 20)
        var generator = SystemRandomNumberGenerator()
        for i in payload.indices { payload[i] = UInt8.random(in: 0...255, using: &generator) }
        let received = try await MeshTLSClient.sendAndHalfClose(
            payload, to: east.listen, serverName: "outbound_.7000_._.tcp-echo.default.svc.cluster.local",
            client: mesh.clientCertPath("east"), root: mesh.certs.rootCertificatePath)
        #expect(received.count == payload.count)
        #expect(SHA256.hash(data: received) == SHA256.hash(data: payload))
        #expect(echoServer.sawHalfClose)
    }

    @Test("A slow reader gets every byte of an answer the backend streams and hangs up on, whichever side ends first",
          arguments: [0, 3 << 20])
    func slowReaderGetsTheWholeAnswer(halfCloseAfter: Int) async throws {
        let mesh = try TestMesh("slow", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let answer = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 12) }
        let firehose = try await TCPFirehoseServer.start(host: "127.0.44.30", port: 7000, payload: answer)
        defer { firehose.stop() }
        let service = GatewayConfig.ServiceConfig.echo("127.0.44.30:7000", host: "firehose.default.svc.cluster.local", port: 7000)
        let gateway = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.44.1", services: [service])
        let process = try await mesh.startGateway(gateway)
        // 0: the client ends its side first; 3 MiB: the backend's end reaches the gateway first.
        let received: [UInt8], endError: (any Error)?
        do {
            (received, endError) = try await MeshTLSClient.sendAndReadSlowly(
                Array("GET /big\n".utf8), to: gateway.listen, serverName: "firehose.default.svc.cluster.local",
                client: mesh.clientCertPath("east"), root: mesh.certs.rootCertificatePath, halfCloseAfter: halfCloseAfter)
        } catch {
            try await Task.sleep(for: .milliseconds(200))  // the gateway logs the connection as it closes
            Issue.record("the exchange failed: \(error); gateway log: \(process.log)")
            return
        }
        #expect(received.count == answer.count, "lost \(answer.count - received.count) bytes at the end; gateway log: \(process.log)")
        #expect(SHA256.hash(data: received) == SHA256.hash(data: answer))
        #expect(endError == nil, "the gateway's close_notify did not arrive: \(String(describing: endError))")
    }

    @Test("1 MiB HTTP upload and download through curl are intact")
    func megabyteOverHTTP() async throws {
        let mesh = try TestMesh("http", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let (gateway, _) = try await mesh.startEchoCluster(block: 34)
        let file = "\(mesh.directory)/upload.bin"
        var bytes = Data(count: 1 << 20)
        for i in 0..<bytes.count { bytes[i] = UInt8(truncatingIfNeeded: i &* 7 &+ i >> 8) }
        try bytes.write(to: URL(fileURLWithPath: file))
        let upload = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local", path: "/echo",
                                   extra: ["--data-binary", "@\(file)", "-o", "\(mesh.directory)/echoed.bin"])
        #expect(upload.status == 0, "\(upload.stderr)")
        let echoed = try Data(contentsOf: URL(fileURLWithPath: "\(mesh.directory)/echoed.bin"))
        #expect(SHA256.hash(data: echoed) == SHA256.hash(data: bytes))
        let download = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local", path: "/bytes/1048576",
                                     extra: ["-o", "\(mesh.directory)/down.bin"])
        #expect(download.status == 0, "\(download.stderr)")
        let down = try Data(contentsOf: URL(fileURLWithPath: "\(mesh.directory)/down.bin"))
        let expected = Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        #expect(down == expected)
    }

    @Test("SIGTERM drains: an in-flight request finishes, new connections are refused, exit code 0")
    func gracefulDrain() async throws {
        let mesh = try TestMesh("drain", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let (gateway, process) = try await mesh.startEchoCluster(block: 35)
        let slow = Task.detached { try await mesh.curl(gateway, host: "echo.default.svc.cluster.local", path: "/delay/1500") }
        // In flight: the gateway holds a connection to the backend.
        let upstream = "127.0.35.10:8080"
        let inFlightSeen = await eventually(timeout: .seconds(5)) {
            ((try? await runCommand("/usr/bin/ss", ["-Htn", "state", "established", "dst", upstream]).stdout) ?? "").contains(upstream)
        }
        let sockets = (try? await runCommand("/usr/bin/ss", ["-Htan"]).stdout) ?? ""
        #expect(inFlightSeen, "\(sockets)")
        process.signal(SIGTERM)
        #expect(await eventually(timeout: .seconds(5)) { process.log.contains("draining") })
        let refused = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local")
        #expect(refused.status != 0, "a new connection was accepted while draining")
        let inFlight = try await slow.value
        #expect(inFlight.status == 0, "\(inFlight.stderr)")
        #expect(mesh.answer(inFlight)?["cluster"] == "east")
        #expect(await process.waitForExit(timeout: .seconds(10)) == 0)
        #expect(process.log.contains("drained; every connection finished"))
    }

    @Test("An idle connection is closed after the idle timeout: a TCP one, a keep-alive HTTP/1.1 one after its answer, an HTTP/2 one with GOAWAY NO_ERROR once its streams are done")
    func idleTimeout() async throws {
        let mesh = try TestMesh("idle", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let echoServer = try await TCPEchoServer.start(host: "127.0.36.30", port: 7000)
        defer { echoServer.stop() }
        let tcpEcho = GatewayConfig.ServiceConfig.echo("127.0.36.30:7000", host: "tcp-echo.default.svc.cluster.local", port: 7000)
        let web = "web.default.svc.cluster.local"
        _ = try mesh.processes.start("web", ["demo-backend", "--listen", "127.0.36.31:8080", "--service", web, "--cluster", "east"])
        try #require(await eventually { (try? await runCommand("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.36.31:8080/"]).stdout) == "200" })
        let http = GatewayConfig.ServiceConfig(host: web, port: 8080, endpoints: [Endpoint(address: HostPort(host: "127.0.36.31", port: 8080))], protocol: .http)
        let gateway = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.36.1", services: [tcpEcho, http],
                                         timeouts: .init(idle: ConfigDuration(parsing: "1s")))
        let process = try await mesh.startGateway(gateway)
        let start = ContinuousClock.now
        let received: [UInt8]
        do {
            // 1 s leaves a loaded 2-core CI machine time to send the first byte.
            received = try await MeshTLSClient.sendAndWaitForClose(
                [1, 2, 3], to: gateway.listen, serverName: "tcp-echo.default.svc.cluster.local",
                client: mesh.clientCertPath("east"), root: mesh.certs.rootCertificatePath)
        } catch {
            try await Task.sleep(for: .milliseconds(200))  // the gateway logs the connection as it closes
            Issue.record("the exchange failed after \(ContinuousClock.now - start): \(error); gateway log: \(process.log)")
            return
        }
        let elapsed = ContinuousClock.now - start
        #expect(received == [1, 2, 3])
        #expect(elapsed >= .milliseconds(950) && elapsed < .seconds(6), "closed after \(elapsed)")
        // HTTP/1.1 keep-alive: answered, then closed by the connection manager once idle.
        let httpStart = ContinuousClock.now
        let answer = try await MeshTLSClient.sendAndWaitForClose(Array("GET / HTTP/1.1\r\nHost: \(web)\r\n\r\n".utf8), to: gateway.listen, serverName: web,
                                                                 client: mesh.clientCertPath("east"), root: mesh.certs.rootCertificatePath)
        let httpElapsed = ContinuousClock.now - httpStart
        #expect(String(decoding: answer, as: UTF8.self).hasPrefix("HTTP/1.1 200 OK"), "\(String(decoding: answer, as: UTF8.self).prefix(200))")
        #expect(httpElapsed >= .milliseconds(950) && httpElapsed < .seconds(6), "closed after \(httpElapsed)")
        // HTTP/2 (ALPN h2): a stream longer than the timeout is answered (an open stream is not
        // idle), then GOAWAY with NO_ERROR and the close come a timeout after it ended.
        guard HTTP2PriorKnowledgeTests.hasPython else { return }
        let client = mesh.clientCertPath("east")
        let script = "\(PackagePaths.root)/Tests/EastWestIntegrationTests/Support/h2_prior_knowledge_client.py"
        let h2 = try await runCommand("/usr/bin/env", ["WAIT_FOR_GOAWAY=1", "python3", script, "127.0.36.1", "15443", web, "\(client)/cert-chain.pem",
                                                    "\(client)/key.pem", mesh.certs.rootCertificatePath, "/delay/1500", "h2"])
        let lines = h2.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == "alpn=h2" && lines.dropFirst().first == "200", "\(h2.stdout) \(h2.stderr)")
        let goaway = try #require(lines.last { $0.hasPrefix("goaway") || $0.hasPrefix("closed") }, "\(h2.stdout) \(h2.stderr)")
        #expect(goaway.hasPrefix("goaway 0 last=1 after "), "\(goaway)")
        let seconds = Double(goaway.split(separator: " ").last ?? "") ?? -1
        #expect(seconds >= 0.95 && seconds < 6, "\(goaway)")
    }
}

@Suite("HTTP/2 with prior knowledge through the gateway", .serialized, .timeLimit(.minutes(2)), .sharesMachine)
struct HTTP2PriorKnowledgeTests {
    static let hasPython = (try? runCommandBlocking("/usr/bin/env", ["python3", "-c", "import h2"]))?.status == 0
    static let hasTools = FileManager.default.isExecutableFile(atPath: "/usr/sbin/nghttpd") && hasPython

    @Test("An h2 client speaking prior knowledge over mTLS reaches an h2c backend (nghttpd) unchanged",
          .enabled(if: hasTools, "needs nghttpd (Debian nghttp2-server) and python3's h2 package; .ci/run installs both"))
    func h2PriorKnowledge() async throws {
        let mesh = try TestMesh("h2", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let root = "\(mesh.directory)/h2root"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try "hello over h2\n".write(toFile: "\(root)/index.html", atomically: true, encoding: .utf8)
        let backend = try ChildProcess(name: "nghttpd", arguments: ["/usr/sbin/nghttpd", "--no-tls", "-a", "127.0.45.10", "-d", root, "8443"],
                                       logPath: "\(mesh.directory)/nghttpd.log")
        defer { backend.stop() }
        let gateway = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.45.1",
                                         services: [.echo("127.0.45.10:8443", port: 8443)])
        try await mesh.startGateway(gateway)
        let client = mesh.clientCertPath("east")
        let script = "\(PackagePaths.root)/Tests/EastWestIntegrationTests/Support/h2_prior_knowledge_client.py"
        var result = CommandResult(status: -1, stdout: "", stderr: "")
        _ = await eventually(timeout: .seconds(5)) {
            result = (try? await runCommand("/usr/bin/env", ["python3", script, "127.0.45.1", "15443", "echo.default.svc.cluster.local",
                                                      "\(client)/cert-chain.pem", "\(client)/key.pem", mesh.certs.rootCertificatePath,
                                                      "/index.html"])) ?? result
            return result.stdout.hasPrefix("200")
        }
        #expect(result.stdout == "200\nhello over h2\n\n", "client said: \(result.stdout) \(result.stderr)")
    }
}
