import Foundation
import MeshProxyCore
import Testing

@Suite("The data plane follows the traffic plan", .serialized, .timeLimit(.minutes(3)), .sharesMachine)
struct TrafficPlanTests {
    /// Clusters east (us-east1/a) and west (us-west1/a), one echo endpoint and one gateway
    /// each on 127.0.<block>.x and 127.0.<block+1>.x; east's gateway knows west statically and
    /// runs `trafficPolicy` (YAML) for echo.
    struct TwoClusters {
        var mesh: TestMesh
        var east: GatewayConfig
        var eastBackend: ChildProcess
        var eastGateway: ChildProcess
    }

    func twoClusters(_ label: String, block: Int, trafficPolicy: String) async throws -> TwoClusters {
        let mesh = try TestMesh(label, clusters: ["east", "west"])
        let eastLocality = Locality(region: "us-east1", zone: "a"), westLocality = Locality(region: "us-west1", zone: "a")
        let eastEndpoint = Endpoint(address: HostPort(host: "127.0.\(block).10", port: 8080), locality: eastLocality)
        let westEndpoint = Endpoint(address: HostPort(host: "127.0.\(block + 1).10", port: 8080), locality: westLocality)
        let eastBackend = try await mesh.startBackend(eastEndpoint.address.description, cluster: "east")
        try await mesh.startBackend(westEndpoint.address.description, cluster: "west")
        let echo = "echo.default.svc.cluster.local"
        var west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: "127.0.\(block + 1).1",
                                      services: [.init(host: echo, port: 8080, endpoints: [westEndpoint])])
        west.locality = westLocality
        var east = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.\(block).1",
                                      services: [.init(host: echo, port: 8080, endpoints: [eastEndpoint])], remotes: [
            .init(name: "west", gateways: [.init(name: "west-gw", address: west.listen, locality: westLocality)],
                  services: [.init(host: echo, port: 8080, endpoints: [westEndpoint])])])
        east.locality = eastLocality
        east.policies = [try mesh.writeDestinationRule(trafficPolicy: trafficPolicy)]
        try await mesh.startGateway(west)
        let eastGateway = try await mesh.startGateway(east)
        return TwoClusters(mesh: mesh, east: east, eastBackend: eastBackend, eastGateway: eastGateway)
    }

    @Test("distribute 70/30 across two clusters: 20 curls land 14/6, per-locality counters show it, /v1/plan predicts it; with east's endpoint killed, connects fail over to west")
    func connectionsFollowDistribute() async throws {
        let set = try await twoClusters("plan", block: 53, trafficPolicy: """
            loadBalancer:
              localityLbSetting:
                distribute:
                - from: us-east1/*
                  to: {"us-east1/*": 70, "us-west1/*": 30}
            """)
        let mesh = set.mesh, eastConfig = set.east, eastBackend = set.eastBackend
        defer { mesh.processes.stopAll() }

        let plan = try await mesh.admin(eastConfig, "/v1/plan?host=echo.default.svc.cluster.local")
        #expect(plan.contains(#""us-east1/a" : 0.7"#) && plan.contains(#""us-west1/a" : 0.3"#), "\(plan)")
        var answers: [String: Int] = [:]
        for _ in 0..<20 {
            await answers[mesh.answer(try mesh.curl(eastConfig, host: "echo.default.svc.cluster.local"))?["cluster"] ?? "failed", default: 0] += 1
        }
        #expect(answers == ["east": 14, "west": 6])
        let metrics = try await mesh.admin(eastConfig, "/stats/prometheus")
        #expect(metrics.contains(#"eastwest_upstream_locality_connections_total{destination_service="echo.default.svc.cluster.local",locality="us-east1/a",priority="0"} 14"#), "\(metrics)")
        #expect(metrics.contains(#"eastwest_upstream_locality_connections_total{destination_service="echo.default.svc.cluster.local",locality="us-west1/a",priority="0"} 6"#))

        // East's only endpoint dies: connections whose turn is east fail their connect and move
        // on to west within the attempt limit, so every client is still served.
        eastBackend.signal(SIGKILL)
        _ = await eastBackend.waitForExit(timeout: .seconds(5))
        for _ in 0..<5 {
            #expect(mesh.answer(try await mesh.curl(eastConfig, host: "echo.default.svc.cluster.local"))?["cluster"] == "west")
        }
    }

    @Test("Locality failover with outlier detection: east's endpoint refuses, is ejected (plan and Envoy metrics show it), traffic goes to west; restarted, it returns after baseEjectionTime")
    func ejectionFailsOverAndBack() async throws {
        let set = try await twoClusters("eject", block: 55, trafficPolicy: """
            loadBalancer:
              localityLbSetting: {enabled: true, failover: [{from: us-east1, to: us-west1}]}
            outlierDetection: {consecutiveGatewayErrors: 1, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 100}
            """)
        let mesh = set.mesh, eastConfig = set.east, eastBackend = set.eastBackend
        defer { mesh.processes.stopAll() }
        func cluster() async throws -> String? { mesh.answer(try await mesh.curl(eastConfig, host: "echo.default.svc.cluster.local"))?["cluster"] }
        func plan() async -> String { (try? await mesh.admin(eastConfig, "/v1/plan?host=echo.default.svc.cluster.local")) ?? "" }

        #expect(try await cluster() == "east")
        eastBackend.signal(SIGKILL)
        _ = await eastBackend.waitForExit(timeout: .seconds(5))
        // The first connection after the kill is refused by east, retried on west, and ejects east.
        #expect(try await cluster() == "west")
        let ejectedPlan = await plan()
        #expect(ejectedPlan.contains(#""us-west1/a" : 1"#), "\(ejectedPlan)")
        let metrics = try await mesh.admin(eastConfig, "/stats/prometheus")
        #expect(metrics.contains(#"envoy_cluster_outlier_detection_ejections_active{cluster_name="outbound|8080||echo.default.svc.cluster.local"} 1"#), "\(metrics)")
        #expect(try await cluster() == "west")

        try await mesh.startBackend("127.0.55.10:8080", cluster: "east")
        let restored = await eventually(timeout: .seconds(10)) { await plan().contains(#""us-east1/a" : 1"#) }
        let restoredPlan = await plan()
        #expect(restored, "\(restoredPlan)")
        #expect(try await cluster() == "east")
    }

    @Test("connectionPool.tcp: maxConnections refuses the connection over the limit with Envoy's UO flag and counts it, a slot freed is usable again; tcpKeepalive is set on the upstream socket")
    func maxConnectionsOverflow() async throws {
        let mesh = try TestMesh("overflow", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        try await mesh.startBackend("127.0.57.10:8080", cluster: "east")
        var gateway = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.57.1", services: [.echo("127.0.57.10:8080")])
        gateway.policies = [try mesh.writeDestinationRule(trafficPolicy: """
            connectionPool: {tcp: {maxConnections: 1, connectTimeout: 2s, tcpKeepalive: {time: 7s, interval: 3s, probes: 2}}}
            """)]
        let process = try await mesh.startGateway(gateway)

        // One slow request holds the only connection slot for 3 s.
        let dir = mesh.clientCertPath("east")
        let slow = try ChildProcess(name: "slow-curl", arguments: [
            "/usr/bin/curl", "-sS", "--max-time", "20", "--cacert", mesh.certs.rootCertificatePath, "--cert", "\(dir)/cert-chain.pem",
            "--key", "\(dir)/key.pem", "--resolve", "echo.default.svc.cluster.local:15443:127.0.57.1",
            "https://echo.default.svc.cluster.local:15443/delay/3000"], logPath: "\(mesh.directory)/slow-curl.log")
        defer { slow.stop() }
        // Wait until the slow connection is glued to the backend (it holds the slot from then):
        // its upstream socket is established. (A metric's name can show before any connection.)
        var sockets = ""
        #expect(await eventually(timeout: .seconds(10)) {
            sockets = (try? await runCommand("/usr/bin/ss", ["-tno", "state", "established", "dst", "127.0.57.10"]).stdout) ?? ""
            return sockets.contains("127.0.57.10:8080")
        }, "the slow request never reached the backend")
        // The kernel shows the keepalive timer Istio's tcpKeepalive asked for (7 s idle).
        #expect(sockets.contains("timer:(keepalive,") && !sockets.contains("timer:(keepalive,2h"), "\(sockets)")
        let refused = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local")
        #expect(refused.status != 0)
        #expect(await eventually { process.log.contains(" UO ") && process.log.contains("connectionPool.tcp.maxConnections (1) reached") }, "\(process.log)")
        let metrics = try await mesh.admin(gateway, "/stats/prometheus")
        #expect(metrics.contains(#"envoy_cluster_upstream_cx_overflow{cluster_name="outbound|8080||echo.default.svc.cluster.local"} 1"#), "\(metrics)")

        #expect(await slow.waitForExit(timeout: .seconds(10)) == 0)
        #expect(mesh.answer(try await mesh.curl(gateway, host: "echo.default.svc.cluster.local"))?["cluster"] == "east")
    }

    @Test("An endpoint that resets established connections is ejected like one that refuses them")
    func resetCountsAsGatewayError() async throws {
        let mesh = try TestMesh("reset", clusters: ["east"])
        defer { mesh.processes.stopAll() }
        // Accepts, reads the first bytes, then closes with SO_LINGER 0: a TCP reset.
        let server = try ChildProcess(name: "resetting-server", arguments: ["/usr/bin/python3", "-c", """
            import socket, struct
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.58.10", 8080)); s.listen(16)
            while True:
                c, _ = s.accept(); c.recv(64)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); c.close()
            """], logPath: "\(mesh.directory)/resetting-server.log")
        defer { server.stop() }
        #expect(await eventually { (try? await runCommand("/usr/bin/curl", ["-s", "--max-time", "1", "http://127.0.58.10:8080/"]).status) != 7 })
        var gateway = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.58.1", services: [.echo("127.0.58.10:8080")])
        gateway.policies = [try mesh.writeDestinationRule(trafficPolicy: """
            outlierDetection: {consecutiveGatewayErrors: 2, maxEjectionPercent: 100}
            """)]
        try await mesh.startGateway(gateway)
        for _ in 0..<2 { _ = try await mesh.curl(gateway, host: "echo.default.svc.cluster.local") }
        #expect(await eventually(timeout: .seconds(5)) {
            ((try? await mesh.admin(gateway, "/stats/prometheus")) ?? "").contains(#"envoy_cluster_outlier_detection_ejections_active{cluster_name="outbound|8080||echo.default.svc.cluster.local"} 1"#)
        })
    }
}
