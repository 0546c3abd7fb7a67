import Foundation
import MeshProxyCore
import Testing

/// Real gateways on 127.0.x.x:15443, real certificates, real curl and openssl.
@Suite("Gateway routing (processes on loopback)", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct GatewayRoutingTests {
    @Test("A client in the cluster reaches a local endpoint; metrics and config dump show it")
    func localRoute() async throws {
        let mesh = try TestMesh("local", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let (gateway, _) = try await mesh.startEchoCluster(block: 21)

        let result = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local")
        #expect(result.status == 0, "curl failed: \(result.stderr)")
        #expect(mesh.answer(result)?["cluster"] == "east")
        #expect(mesh.answer(result)?["endpoint"] == "127.0.21.10:8080")

        let metrics = try await mesh.admin(gateway, "/stats/prometheus")
        #expect(metrics.contains(#"istio_tcp_connections_opened_total{reporter="destination",source_principal="spiffe://cluster.local/ns/default/sa/client",destination_service="echo.default.svc.cluster.local",destination_cluster="east""#))
        #expect(metrics.contains("istio_tcp_received_bytes_total"))
        let dump = try await mesh.admin(gateway, "/config_dump")
        #expect(dump.contains(#""maxConnectAttempts" : 3"#))
        #expect(dump.contains(#""cluster" : "east""#))
    }

    @Test("A client in east reaches a service that only west serves: east gateway -> west gateway (mTLS, Istio SNI) -> west backend")
    func crossClusterRoute() async throws {
        let mesh = try TestMesh("cross", clusters: ["east", "west"])
        defer { mesh.processes.stopAll() }
        try await mesh.startBackend("127.0.23.20:9080", service: "ratings.default.svc.cluster.local", cluster: "west")
        let ratings = GatewayConfig.ServiceConfig.echo("127.0.23.20:9080", host: "ratings.default.svc.cluster.local", port: 9080)
        let west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: "127.0.23.1", services: [ratings])
        let east = mesh.eastGateway(ip: "127.0.22.1", reaching: west)
        let westProcess = try await mesh.startGateway(west)
        let eastProcess = try await mesh.startGateway(east)

        let result = try await mesh.curl(east, host: "ratings.default.svc.cluster.local")
        #expect(result.status == 0, "curl failed: \(result.stderr)")
        #expect(mesh.answer(result)?["cluster"] == "west")
        // The west gateway saw the Istio-form SNI, and the client east's gateway vouched for in
        // its original-client preamble (not the gateway itself).
        #expect(await eventually { westProcess.log.contains("outbound_.9080_._.ratings.default.svc.cluster.local principal=spiffe://cluster.local/ns/default/sa/client") },
                "\(westProcess.log.suffix(1500))")
        #expect(await eventually { eastProcess.log.contains("upstream_cluster=west") })
        let metrics = try await mesh.admin(east, "/stats/prometheus")
        #expect(metrics.contains(#"destination_service="ratings.default.svc.cluster.local",destination_cluster="west""#))
    }

    @Test("Traffic from a peer gateway is never forwarded again (one hop, no loop)")
    func peerTrafficStaysLocal() async throws {
        let mesh = try TestMesh("hop", clusters: ["east", "west"])
        defer { mesh.processes.stopAll() }
        let ratings = GatewayConfig.ServiceConfig.echo("127.0.25.20:9080", host: "ratings.default.svc.cluster.local", port: 9080)
        // West believes east serves ratings, east believes west does: a loop waiting to happen.
        let west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: "127.0.25.1", services: [], remotes: [
            .init(name: "east", gateways: [.init(name: "east-gw", address: HostPort(host: "127.0.24.1", port: 15443))], services: [ratings])])
        let east = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.24.1", services: [], remotes: [
            .init(name: "west", gateways: [.init(name: "west-gw", address: west.listen)], services: [ratings])])
        let westProcess = try await mesh.startGateway(west)
        try await mesh.startGateway(east)
        let result = try await mesh.curl(east, host: "ratings.default.svc.cluster.local")
        #expect(result.status != 0)
        #expect(await eventually { westProcess.log.contains("UH") && westProcess.log.contains("traffic from a peer gateway is never forwarded again") })
    }

    @Test("openssl s_client with Istio's outbound_.8080_._.<host> SNI is routed")
    func istioFormSNI() async throws {
        let mesh = try TestMesh("sni", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let (gateway, _) = try await mesh.startEchoCluster(block: 26)
        let client = mesh.clientCertPath("east")
        let result = try await runCommand("/usr/bin/openssl", [
            "s_client", "-connect", "\(gateway.listen)", "-servername", "outbound_.8080_._.echo.default.svc.cluster.local",
            "-cert", "\(client)/cert-chain.pem", "-cert_chain", "\(mesh.certs.clusterPath("east"))/ca-cert.pem",
            "-key", "\(client)/key.pem", "-CAfile", mesh.certs.rootCertificatePath, "-verify_return_error", "-quiet", "-ign_eof",
        ], stdin: Data("GET / HTTP/1.0\r\nHost: echo\r\n\r\n".utf8))
        #expect(result.stdout.contains("HTTP/1.0 200 OK") || result.stdout.contains("HTTP/1.1 200 OK"), "openssl said: \(result.stderr)")
        #expect(result.stdout.contains(#""cluster":"east""#))
    }

    @Test("An unknown server name is refused and logged with Envoy's NR flag; the gateway keeps serving")
    func unknownServerName() async throws {
        let mesh = try TestMesh("nr", clusters: ["east"], serviceHosts: ["echo.default.svc.cluster.local", "unknown.default.svc.cluster.local"])
        defer { mesh.processes.stopAll() }
        let (gateway, process) = try await mesh.startEchoCluster(block: 27)
        let refused = try await mesh.curl(gateway, host: "unknown.default.svc.cluster.local")
        #expect(refused.status != 0)
        #expect(await eventually { process.log.contains(" NR ") && process.log.contains("no service 'unknown.default.svc.cluster.local' in the mesh") })
        let wrongPort = try await runCommand("/usr/bin/openssl", ["s_client", "-connect", "127.0.27.1:15443", "-servername",
                                                            "outbound_.9999_._.echo.default.svc.cluster.local", "-quiet"], stdin: Data())
        #expect(wrongPort.status != 0)
        #expect(await eventually { process.log.contains("has no port 9999") })
        #expect(mesh.answer(try await mesh.curl(gateway, host: "echo.default.svc.cluster.local"))?["cluster"] == "east")
    }

    @Test("A killed backend makes the next connections use the other endpoint")
    func killedBackend() async throws {
        let mesh = try TestMesh("failover", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let doomed = try await mesh.startBackend("127.0.28.10:8080", cluster: "east")
        try await mesh.startBackend("127.0.28.11:8080", cluster: "east")
        let gateway = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.28.1",
                                         services: [.echo("127.0.28.10:8080", "127.0.28.11:8080")])
        let process = try await mesh.startGateway(gateway)
        doomed.signal(SIGKILL)
        _ = await doomed.waitForExit(timeout: .seconds(5))
        for _ in 0..<4 {
            let result = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local")
            #expect(result.status == 0, "curl failed: \(result.stderr)")
            #expect(mesh.answer(result)?["endpoint"] == "127.0.28.11:8080")
        }
        #expect(process.log.contains("upstream attempt failed"))
    }

    @Test("When every endpoint is down the client is refused with UF,URX and the reason")
    func allEndpointsDown() async throws {
        let mesh = try TestMesh("down", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let gateway = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.29.1",
                                         services: [.echo("127.0.29.10:8080", "127.0.29.11:8080")])
        let process = try await mesh.startGateway(gateway)
        let result = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local")
        #expect(result.status != 0)
        #expect(await eventually { process.log.contains("UF,URX") && process.log.contains("all 2 upstream attempt(s) failed") })
    }
}

@Suite("Connect timeout against a black-holed endpoint (iptables)", .serialized, .timeLimit(.minutes(2)), .sharesMachine)
struct ConnectTimeoutTests {
    @Test("A silent endpoint costs the connect timeout, then the next endpoint serves",
          .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/sbin/iptables"), "needs root and iptables to drop packets on loopback"))
    func blackholedEndpoint() async throws {
        let mesh = try TestMesh("timeout", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        try await mesh.startBackend("127.0.41.11:8080", cluster: "east")
        // SYNs to 127.0.41.10:8080 vanish: a host that is down without saying so.
        let rule = ["-d", "127.0.41.10", "-p", "tcp", "--dport", "8080", "-j", "DROP"]
        let added = try await runCommand("/usr/sbin/iptables", ["-I", "OUTPUT"] + rule)
        try #require(added.status == 0, "iptables: \(added.stderr)")
        defer { _ = try? runCommandBlocking("/usr/sbin/iptables", ["-D", "OUTPUT"] + rule) }
        let gateway = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.41.1",
                                         services: [.echo("127.0.41.10:8080", "127.0.41.11:8080")],
                                         timeouts: .init(connect: ConfigDuration(parsing: "300ms")))
        let process = try await mesh.startGateway(gateway)
        // Round robin starts at the black-holed endpoint for the first connection.
        let start = ContinuousClock.now
        let result = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local")
        let elapsed = ContinuousClock.now - start
        #expect(mesh.answer(result)?["endpoint"] == "127.0.41.11:8080", "\(result.stderr)")
        #expect(elapsed >= .milliseconds(250) && elapsed < .seconds(3), "took \(elapsed)")
        #expect(await eventually { process.log.contains("connect timeout") })
    }
}

@Suite("Peer gateway identity", .serialized, .timeLimit(.minutes(2)), .sharesMachine)
struct PeerGatewayIdentityTests {
    @Test("A 'gateway' whose certificate is a workload identity is refused as a peer: the client gets no bytes, the log says why")
    func impostorGatewayRefused() async throws {
        let mesh = try TestMesh("impostor", clusters: ["east", "west"])
        defer { mesh.processes.stopAll() }
        try await mesh.startBackend("127.0.43.20:9080", service: "ratings.default.svc.cluster.local", cluster: "west")
        let ratings = GatewayConfig.ServiceConfig.echo("127.0.43.20:9080", host: "ratings.default.svc.cluster.local", port: 9080)
        // West runs with a client workload certificate instead of the gateway identity.
        var west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: "127.0.43.1", services: [ratings])
        west.tls = mesh.tlsFiles(mesh.clientCertPath("west"))
        let east = mesh.eastGateway(ip: "127.0.42.1", reaching: west)
        try await mesh.startGateway(west)
        let eastProcess = try await mesh.startGateway(east)
        let result = try await mesh.curl(east, host: "ratings.default.svc.cluster.local")
        #expect(result.status != 0)
        #expect(!result.stdout.contains("west"))
        #expect(await eventually {
            eastProcess.log.contains("UF") && eastProcess.log.contains("identity spiffe://cluster.local/ns/default/sa/client is not an allowed peer")
        })
    }
}

@Suite("Federation between gateway processes", .serialized, .timeLimit(.minutes(3)), .needsMachineAlone)
struct FederationIntegrationTests {
    func members(_ mesh: TestMesh, _ config: GatewayConfig) async -> [String: String] {
        struct Body: Decodable { struct Member: Decodable { var name: String; var state: String }; var members: [Member] }
        guard let text = try? await mesh.admin(config, "/v1/members"),
              let body = try? JSONDecoder().decode(Body.self, from: Data(text.utf8)) else { return [:] }
        return Dictionary(uniqueKeysWithValues: body.members.map { ($0.name, $0.state) })
    }

    /// Whether each observing gateway lists its member in `state`.
    func see(_ mesh: TestMesh, _ views: [(observer: GatewayConfig, member: String)], as state: String) async -> Bool {
        for view in views where await members(mesh, view.observer)[view.member] != state { return false }
        return true
    }

    struct Service: Decodable {
        struct Count: Decodable { var healthy: Int; var total: Int }
        var host: String
        var port: Int
        var clusters: [String: Count]
    }

    struct EndpointEntry: Decodable {
        var cluster: String
        var address: String
        var reachable: Bool
        var via: [String]
    }

    func listEndpoints(_ mesh: TestMesh, _ config: GatewayConfig, host: String) async -> [EndpointEntry] {
        (try? JSONDecoder().decode([EndpointEntry].self, from: Data(await mesh.admin(config, "/v1/endpoints?host=\(host)").utf8))) ?? []
    }

    /// The `X-EastWest-Index` a discovery path answers with.
    func adminIndex(_ config: GatewayConfig, _ path: String) async throws -> UInt64? {
        let headers = try await runCommand("/usr/bin/curl", ["-s", "-D", "-", "-o", "/dev/null", "--max-time", "5", "http://\(config.effectiveAdmin)\(path)"]).stdout
        let line = headers.split(whereSeparator: \.isNewline).first { $0.lowercased().hasPrefix("x-eastwest-index:") }
        return line.flatMap { UInt64($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }
    }

    @Test("Three gateways seeded in a ring learn each other and every cluster's services and route to them; kill -9 is noticed; a restart rejoins; a workload identity cannot join")
    func gossipOnLoopback() async throws {
        let mesh = try TestMesh("fed", clusters: ["c0", "c1", "c2"])
        defer { mesh.processes.stopAll() }
        var configs: [GatewayConfig] = []
        for i in 0..<3 {
            var config = mesh.gatewayConfig(name: "gw-\(i)", cluster: "c\(i)", ip: "127.0.4\(6 + i).1",
                                            services: [.echo("127.0.4\(6 + i).10:8080")])
            config.federation = .init(seeds: [HostPort(host: "127.0.4\(6 + (i + 1) % 3).1", port: 15443)])
            configs.append(config)
        }
        // ratings runs only in c1; gw-0 has no static route to it and must learn it.
        let ratings = GatewayConfig.ServiceConfig.echo("127.0.47.20:9080", host: "ratings.default.svc.cluster.local", port: 9080)
        configs[1].services?.append(ratings)
        try await mesh.startBackend("127.0.47.20:9080", service: "ratings.default.svc.cluster.local", cluster: "c1")
        var processes: [ChildProcess] = []
        for config in configs { processes.append(try await mesh.startGateway(config)) }
        func everyoneSeesTwoAlive() async -> Bool {
            for config in configs where await members(mesh, config).values.filter({ $0 == "alive" }).count != 2 { return false }
            return true
        }
        let converged = await eventually(timeout: .seconds(10)) { await everyoneSeesTwoAlive() }
        var tables: [[String: String]] = []
        for config in configs { tables.append(await members(mesh, config)) }
        #expect(converged, "members: \(tables)")
        // The data plane follows: a client of c0 reaches c1's ratings through gw-0 -> gw-1.
        var answer: [String: String]?
        _ = await eventually(timeout: .seconds(5)) {
            answer = mesh.answer((try? await mesh.curl(configs[0], host: "ratings.default.svc.cluster.local")) ?? CommandResult(status: 1, stdout: "", stderr: ""))
            return answer?["cluster"] == "c1"
        }
        #expect(answer?["cluster"] == "c1")
        let services = try await JSONDecoder().decode([Service].self, from: Data(mesh.admin(configs[0], "/v1/services").utf8))
        let echo = services.first { $0.host == "echo.default.svc.cluster.local" }
        #expect(echo?.clusters.mapValues(\.healthy) == ["c0": 1, "c1": 1, "c2": 1], "\(services)")

        // A blocking query (Consul-style) parks until the catalog changes, then answers at once.
        let inventoryPath = "/v1/endpoints?host=inventory.default.svc.cluster.local"
        let index = try #require(try await adminIndex(configs[0], inventoryPath))
        let blocking = try ChildProcess(name: "blocking-query", arguments: [
            "/usr/bin/curl", "-s", "-i", "--max-time", "30", "http://\(configs[0].effectiveAdmin)\(inventoryPath)&index=\(index)&wait=20s"],
            logPath: "\(mesh.processes.directory.path)/blocking-query.log")
        defer { blocking.stop() }
        // That it waited is shown by its answer below: it holds the endpoint registered after it
        // was sent, which an answer given at once could not.

        // An endpoint registered in one cluster appears in the others; deregistered, it goes.
        // Writes need the operator's token; without it, 401 and nothing changes.
        let anonymous = try await runCommand("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-X", "PUT", "--data",
            #"{"host": "inventory.default.svc.cluster.local", "port": 7070, "address": "127.0.48.31:7070"}"#,
            "http://\(configs[2].effectiveAdmin)/v1/catalog/register"])
        #expect(anonymous.stdout.hasSuffix("\n401") && anonymous.stdout.contains("operator token"), "\(anonymous.stdout)")
        let forged = try await runCommand("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "-H", "Authorization: Bearer guess",
            "--data", #"{"host": "inventory.default.svc.cluster.local", "port": 7070, "address": "127.0.48.31:7070"}"#,
            "http://\(configs[2].effectiveAdmin)/v1/catalog/register"])
        #expect(forged.stdout == "403")
        let register = try await runCommand("/usr/bin/curl", ["-s", "-X", "PUT", "-H", "Authorization: Bearer \(TestMesh.adminToken)", "--data",
            #"{"host": "inventory.default.svc.cluster.local", "port": 7070, "address": "127.0.48.30:7070", "locality": "r-c2/z1"}"#,
            "http://\(configs[2].effectiveAdmin)/v1/catalog/register"])
        #expect(register.stdout.contains("accepted"))
        let registered = ContinuousClock.now
        #expect(await blocking.waitForExit(timeout: .seconds(5)) == 0)
        #expect(ContinuousClock.now - registered < .seconds(5))
        #expect(blocking.log.contains("127.0.48.30:7070") && blocking.log.contains("X-EastWest-Index"), "\(blocking.log)")
        #expect(await eventually(timeout: .seconds(5)) {
            ((try? await mesh.admin(configs[0], "/v1/services")) ?? "").contains("inventory.default.svc.cluster.local")
        })
        let endpoints = try await runCommand(PackagePaths.eastwest, ["endpoints", "inventory.default.svc.cluster.local", "--admin", configs[1].effectiveAdmin.description])
        #expect(endpoints.stdout.contains("c2") && endpoints.stdout.contains("7070"), "\(endpoints.stdout)\(endpoints.stderr)")
        _ = try await runCommand("/usr/bin/curl", ["-s", "-X", "PUT", "-H", "Authorization: Bearer \(TestMesh.adminToken)", "--data",
            #"{"host": "inventory.default.svc.cluster.local", "port": 7070, "address": "127.0.48.30:7070"}"#,
            "http://\(configs[2].effectiveAdmin)/v1/catalog/deregister"])
        #expect(await eventually(timeout: .seconds(5)) {
            !((try? await mesh.admin(configs[0], "/v1/services")) ?? "inventory").contains("inventory.default.svc.cluster.local")
        })
        let table = try await runCommand(PackagePaths.eastwest, ["members", "--admin", configs[0].effectiveAdmin.description])
        #expect(table.stdout.contains("gw-1") && table.stdout.contains("alive"), "\(table.stdout)\(table.stderr)")

        // A process with a workload certificate tries to join: refused, never a member.
        var impostor = mesh.gatewayConfig(name: "impostor", cluster: "c0", ip: "127.0.49.1", services: [])
        impostor.tls = mesh.tlsFiles(mesh.clientCertPath("c0"))
        impostor.federation = .init(seeds: [configs[0].listen])
        try await mesh.startGateway(impostor)
        #expect(await eventually(timeout: .seconds(5)) { processes[0].log.contains("federation peer refused") })
        #expect(await members(mesh, configs[1])["impostor"] == nil)
        // A gateway identity that does not speak the federation protocol (ALPN) is closed too.
        _ = try await runCommand("/usr/bin/openssl", ["s_client", "-ign_eof", "-connect", configs[0].listen.description,
            "-servername", "federation.eastwest.internal", "-alpn", "h2", "-cert", configs[1].tls.certificateChain, "-cert_chain", configs[1].tls.certificateChain,
            "-key", configs[1].tls.privateKey, "-CAfile", configs[1].tls.rootCertificate], stdin: Data(), timeout: 10)
        #expect(await eventually(timeout: .seconds(5)) {
            guard processes[0].log.contains("expected 'eastwest-federation/2'") else { return false }
            return ((try? await mesh.admin(configs[0], "/v1/members")) ?? "").contains(#""wrong_protocol" : 1"#)
        }, "\(processes[0].log)")

        // kill -9 one gateway: the others mark it dead.
        processes[2].signal(SIGKILL)
        let killed = ContinuousClock.now
        #expect(await eventually(timeout: .seconds(10)) { await see(mesh, [(configs[0], "gw-2"), (configs[1], "gw-2")], as: "dead") })
        let detection = ContinuousClock.now - killed
        #expect(detection < .seconds(5), "took \(detection)")
        // Its cluster's endpoints stay listed but unreachable, so they return at once on heal.
        func c2Echo() async -> EndpointEntry? { await listEndpoints(mesh, configs[0], host: "echo.default.svc.cluster.local").first { $0.cluster == "c2" } }
        let listed = await c2Echo()
        #expect(listed?.reachable == false && listed?.address == "127.0.48.10:8080", "\(String(describing: listed))")
        // Restart: it rejoins.
        processes[2] = try await mesh.startGateway(configs[2])
        #expect(await eventually(timeout: .seconds(10)) { await see(mesh, [(configs[0], "gw-2"), (configs[1], "gw-2")], as: "alive") })
        #expect(await eventually(timeout: .seconds(5)) {
            let echo = await c2Echo()
            return echo?.reachable == true && echo?.via == ["gw-2"]
        })
    }

    @Test("A gateway of c0 configured as c1's, publishing c1's ratings at its own backend, changes nothing c1's gateway or others route to; its messages are dropped and counted")
    func gatewaySpeaksOnlyForItsCluster() async throws {
        let mesh = try TestMesh("binding", clusters: ["c0", "c1"])
        defer { mesh.processes.stopAll() }
        let ratings = GatewayConfig.ServiceConfig.echo("127.0.75.20:9080", host: "ratings.default.svc.cluster.local", port: 9080)
        try await mesh.startBackend("127.0.75.20:9080", service: "ratings.default.svc.cluster.local", cluster: "c1")
        try await mesh.startBackend("127.0.76.20:9080", service: "ratings.default.svc.cluster.local", cluster: "liar")
        var c0 = mesh.gatewayConfig(name: "gw-c0", cluster: "c0", ip: "127.0.74.1", services: [])
        var c1 = mesh.gatewayConfig(name: "gw-c1", cluster: "c1", ip: "127.0.75.1", services: [ratings])
        c0.federation = .init(seeds: [c1.listen])
        c1.federation = .init(seeds: [c0.listen])
        let c0Process = try await mesh.startGateway(c0)
        let c1Process = try await mesh.startGateway(c1)
        #expect(await eventually(timeout: .seconds(10)) { await see(mesh, [(c0, "gw-c1"), (c1, "gw-c0")], as: "alive") })

        // c0's legitimately issued gateway certificate, a config that says c1.
        var liar = mesh.gatewayConfig(name: "liar", cluster: "c1", ip: "127.0.76.1",
                                      services: [.echo("127.0.76.20:9080", host: "ratings.default.svc.cluster.local", port: 9080)])
        liar.tls = mesh.tlsFiles(mesh.gatewayCertPath("c0"))
        liar.federation = .init(seeds: [c0.listen, c1.listen])
        try await mesh.startGateway(liar)

        let warning = "federation peer speaks for a cluster its certificate does not name"
        #expect(await eventually(timeout: .seconds(10)) { c0Process.log.contains(warning) && c1Process.log.contains(warning) })
        for config in [c0, c1] {
            #expect(await eventually(timeout: .seconds(5)) {
                ((try? await mesh.admin(config, "/v1/members")) ?? "").contains(#""identity_mismatch" : "#)
            })
            #expect(await members(mesh, config)["liar"] == nil)
            let endpoints = await listEndpoints(mesh, config, host: "ratings.default.svc.cluster.local")
            #expect(endpoints.map(\.address) == ["127.0.75.20:9080"], "\(config.name): \(endpoints.map(\.address))")
        }
        // Logged once per sender, not once per message.
        #expect(c0Process.log.components(separatedBy: warning).count == 2, "\(c0Process.log)")
        for _ in 0..<5 {
            let answer = mesh.answer(try await mesh.curl(c0, host: "ratings.default.svc.cluster.local"))
            #expect(answer?["endpoint"] == "127.0.75.20:9080" && answer?["cluster"] == "c1", "\(String(describing: answer))")
        }
    }
}

@Suite("Federation across a partition (iptables)", .serialized, .timeLimit(.minutes(3)), .needsMachineAlone)
struct FederationPartitionTests {
    @Test("Cut one cluster's gateway off: both sides mark the other dead and keep serving local traffic; after heal everything converges",
          .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/sbin/iptables"), "needs root and iptables to drop packets between loopback addresses"))
    func partitionAndHeal() async throws {
        let mesh = try TestMesh("partition", clusters: ["c0", "c1"])
        defer { mesh.processes.stopAll() }
        try await mesh.startBackend("127.0.51.10:8080", cluster: "c0")
        var a = mesh.gatewayConfig(name: "part-a", cluster: "c0", ip: "127.0.51.1", services: [.echo("127.0.51.10:8080")])
        var b = mesh.gatewayConfig(name: "part-b", cluster: "c1", ip: "127.0.52.1", services: [])
        a.federation = .init(seeds: [b.listen])
        b.federation = .init(seeds: [a.listen])
        try await mesh.startGateway(a)
        try await mesh.startGateway(b)
        let federation = FederationIntegrationTests()
        #expect(await eventually(timeout: .seconds(10)) { await federation.see(mesh, [(a, "part-b"), (b, "part-a")], as: "alive") })

        let rules = [["-s", "127.0.51.1", "-d", "127.0.52.1", "-j", "DROP"], ["-s", "127.0.52.1", "-d", "127.0.51.1", "-j", "DROP"]]
        for rule in rules {
            let added = try await runCommand("/usr/sbin/iptables", ["-I", "OUTPUT"] + rule)
            try #require(added.status == 0, "iptables: \(added.stderr)")
        }
        var healed = false
        defer { if !healed { for rule in rules { _ = try? runCommandBlocking("/usr/sbin/iptables", ["-D", "OUTPUT"] + rule) } } }

        #expect(await eventually(timeout: .seconds(15)) { await federation.see(mesh, [(a, "part-b"), (b, "part-a")], as: "dead") })
        // The cut-off side still serves its own cluster's traffic.
        #expect(mesh.answer(try await mesh.curl(a, host: "echo.default.svc.cluster.local"))?["cluster"] == "c0")

        for rule in rules { _ = try await runCommand("/usr/sbin/iptables", ["-D", "OUTPUT"] + rule) }
        healed = true
        #expect(await eventually(timeout: .seconds(60)) { await federation.see(mesh, [(a, "part-b"), (b, "part-a")], as: "alive") })
    }
}

@Suite("Admin listener limits", .serialized, .timeLimit(.minutes(2)), .sharesMachine)
struct AdminLimitTests {
    @Test("Admin writes by an operator certificate: TLS on the admin port with `eastwest ca operator`'s certificate adds a fault, logged by its SPIFFE ID; a workload certificate is refused 403 naming it; no certificate fails the handshake; plaintext reads stay open and plaintext writes still need the token")
    func operatorCertificate() async throws {
        let mesh = try TestMesh("admin-operator", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let (gateway, process) = try await mesh.startEchoCluster(block: 144)
        let operatorDir = "\(mesh.directory)/operator"
        let issued = try await runCommand(PackagePaths.eastwest, ["ca", "operator", "--dir", mesh.certs.path, "--cluster", "east", "--out", operatorDir])
        #expect(issued.status == 0, "\(issued.stderr)")
        let inspect = try await runCommand(PackagePaths.eastwest, ["ca", "inspect", "\(operatorDir)/cert-chain.pem"])
        #expect(inspect.stdout.contains("spiffe://cluster.local/ns/istio-system/sa/eastwest-operator"), "\(inspect.stdout)")

        // The gateway's certificate names the service hosts: the admin address is reached by one.
        let host = "echo.default.svc.cluster.local", admin = gateway.effectiveAdmin
        func call(_ method: String, _ path: String, tls: String?, data: String? = nil) async throws -> (code: String, body: String, error: String) {
            var arguments = ["-sS", "--max-time", "10", "-w", "\n%{http_code}", "-X", method]
            if let data { arguments += ["--data", data] }
            if let tls {
                arguments += ["--cacert", mesh.certs.rootCertificatePath, "--resolve", "\(host):\(admin.port):\(admin.host)"]
                if !tls.isEmpty { arguments += ["--cert", "\(tls)/cert-chain.pem", "--key", "\(tls)/key.pem"] }
                arguments.append("https://\(host):\(admin.port)\(path)")
            } else {
                arguments.append("http://\(admin)\(path)")
            }
            let result = try await runCommand("/usr/bin/curl", arguments)
            let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"), result.stderr)
        }
        let fault = #"{"blackhole": {"cluster": "west"}, "duration": "300s"}"#
        let byOperator = try await call("POST", "/v1/faults", tls: operatorDir, data: fault)
        #expect(byOperator.code == "201" && byOperator.body.contains("blackhole"), "\(byOperator)")
        #expect(await eventually { process.log.contains("admin write") && process.log.contains("by=spiffe://cluster.local/ns/istio-system/sa/eastwest-operator") },
                "\(process.log.suffix(1500))")
        #expect(try await mesh.admin(gateway, "/v1/faults").contains("\"west\""))

        let byWorkload = try await call("DELETE", "/v1/faults", tls: mesh.clientCertPath("east"))
        #expect(byWorkload.code == "403" && byWorkload.body.contains("spiffe://cluster.local/ns/default/sa/client is not an admin operator"), "\(byWorkload)")
        let anonymousTLS = try await call("DELETE", "/v1/faults", tls: "")
        #expect(anonymousTLS.code == "000", "a TLS client without a certificate does not get through the handshake: \(anonymousTLS)")
        let plaintext = try await call("DELETE", "/v1/faults", tls: nil)
        #expect(plaintext.code == "401" && plaintext.body.contains("operator"), "\(plaintext)")
        #expect(try await call("GET", "/healthz/ready", tls: nil).code == "200")
        #expect(try await call("GET", "/healthz/ready", tls: operatorDir).code == "200")
        #expect(try await mesh.admin(gateway, "/v1/faults").contains("\"west\""), "refused writes changed nothing")
    }

    @Test("A request body over 1 MiB gets 413 without being buffered (declared length or chunked); the admin API keeps answering")
    func bodyCap() async throws {
        let mesh = try TestMesh("admin-cap", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        let (gateway, process) = try await mesh.startEchoCluster(block: 73)
        let file = "\(mesh.directory)/big-body"
        try Data(count: 64 << 20).write(to: URL(fileURLWithPath: file))
        let url = "http://\(gateway.effectiveAdmin)/v1/catalog/register"
        for extra in [[String](), ["-H", "Transfer-Encoding: chunked"]] {
            let result = try await runCommand("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                                                                "-X", "PUT", "--data-binary", "@\(file)", url] + extra)
            #expect(result.stdout == "413", "\(extra): \(result.stdout) \(result.stderr)")
        }
        let status = try String(contentsOfFile: "/proc/\(process.pid)/status", encoding: .utf8)
        let rssKiB = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
            .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) } ?? .max
        #expect(rssKiB < 64 << 10, "gateway RSS \(rssKiB) KiB after two 64 MiB bodies")
        #expect(try await mesh.adminStatus(gateway, "/healthz/ready") == "200")
    }
}
