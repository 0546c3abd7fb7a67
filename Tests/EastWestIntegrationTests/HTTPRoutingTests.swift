import Foundation
import MeshProxyCore
import Testing

/// The HTTP path end to end: Istio's Bookinfo routing pasted into `policies:`, requests with curl
/// through the gateway where they enter the mesh, landing on subsets in both clusters.
@Suite("HTTP routing with VirtualServices (processes on loopback)", .serialized, .timeLimit(.minutes(4)), .sharesMachine)
struct HTTPRoutingTests {
    static let reviews = "reviews.default.svc.cluster.local"

    /// A VirtualService for reviews whose `http:` rules follow (indented two spaces).
    static let reviewsRoutes = """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: reviews}
        spec:
          hosts: [reviews]
          http:

        """

    /// Istio's Bookinfo routing files as users paste them (Tests/Fixtures/bookinfo).
    static func bookinfo(_ name: String) -> String {
        (try? String(contentsOfFile: "\(PackagePaths.root)/Tests/Fixtures/bookinfo/\(name).yaml", encoding: .utf8)) ?? ""
    }

    /// Bookinfo's reviews subsets plus a subset with no endpoint (v4), and the routes under test.
    /// The reviews DestinationRule (subsets v1-v4, with `trafficPolicy` when given: YAML
    /// indented for its place under `spec`) and the VirtualService.
    static func policies(_ virtualService: String, trafficPolicy: String? = nil) -> String {
        """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata:
          name: reviews
        spec:
          host: reviews
        \(trafficPolicy.map { "  trafficPolicy:\n" + $0 } ?? "")
          subsets:
          - name: v1
            labels:
              version: v1
          - name: v2
            labels:
              version: v2
          - name: v3
            labels:
              version: v3
          - name: v4
            labels:
              version: v4
        ---
        \(virtualService)
        """
    }

    /// east serves reviews v1; west serves v2 and v3. The client is in
    /// east and talks to east's gateway only.
    struct Mesh {
        let mesh: TestMesh
        let east: GatewayConfig
        let west: GatewayConfig
    }

    /// `block` and `block + 1` are the clusters' 127.0.x.0/24 (a test's own, so the previous
    /// test's draining gateways never hold its addresses).
    /// - Parameter westPolicies: more Istio documents that only west's gateway loads.
    static func start(_ label: String, block: Int, virtualService: String, trafficPolicy: String? = nil,
                      westPolicies: String? = nil, accessLogFormat: String? = nil) async throws -> Mesh {
        let e = "127.0.\(block)", w = "127.0.\(block + 1)"
        try #require(FileManager.default.fileExists(atPath: "/usr/bin/curl"), "curl is needed")
        let mesh = try TestMesh(label, clusters: ["east", "west"], serviceHosts: [reviews])
        func backend(_ address: String, cluster: String, version: String) async throws {
            _ = try mesh.processes.start("reviews-\(version)", ["demo-backend", "--listen", address, "--service", reviews,
                                                                "--cluster", cluster, "--version", version])
            let ready = await eventually { (try? await runCommand("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://\(address)/"]).stdout) == "200" }
            try #require(ready, "reviews \(version) did not start")
        }
        try await backend("\(e).10:9080", cluster: "east", version: "v1")
        try await backend("\(w).10:9080", cluster: "west", version: "v2")
        try await backend("\(w).11:9080", cluster: "west", version: "v3")
        func service(_ endpoints: [(String, String)]) -> GatewayConfig.ServiceConfig {
            .init(host: reviews, port: 9080, endpoints: endpoints.map { Endpoint(address: HostPort(parsing: $0.0)!, labels: ["version": $0.1]) },
                  protocol: .http)
        }
        let westService = service([("\(w).10:9080", "v2"), ("\(w).11:9080", "v3")])
        let policyPath = "\(mesh.directory)/reviews-policies.yaml"
        try policies(virtualService, trafficPolicy: trafficPolicy).write(toFile: policyPath, atomically: true, encoding: .utf8)
        var east = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "\(e).1", services: [service([("\(e).10:9080", "v1")])],
                                      remotes: [.init(name: "west", gateways: [.init(name: "west-gw", address: HostPort(host: "\(w).1", port: 15443))],
                                                      services: [westService])])
        east.policies = [policyPath]
        east.accessLogFormat = accessLogFormat
        var west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: "\(w).1", services: [westService])
        west.policies = [policyPath]
        if let westPolicies {
            let westOnly = "\(mesh.directory)/west-policies.yaml"
            try westPolicies.write(toFile: westOnly, atomically: true, encoding: .utf8)
            west.policies?.append(westOnly)
        }
        try await mesh.startGateway(east)
        try await mesh.startGateway(west)
        return Mesh(mesh: mesh, east: east, west: west)
    }

    /// `count` requests over one keep-alive connection; the version each answer names.
    static func versions(_ mesh: Mesh, count: Int, headers: [String] = [], http2: Bool = false) async throws -> [String: Int] {
        let url = "https://\(reviews):15443/reviews/0"
        let result = try await mesh.mesh.curl(mesh.east, host: reviews, path: "/reviews/0",
                                              extra: [http2 ? "--http2" : "--http1.1"] + headers.flatMap { ["-H", $0] }
                                                  + Array(repeating: url, count: count - 1) + ["-w", "\n"])
        var counts: [String: Int] = [:]
        for line in result.stdout.split(separator: "\n") where line.hasPrefix("{") {
            let answer = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
            counts[answer?["version"] as? String ?? "?", default: 0] += 1
        }
        return counts
    }

    @Test("Telemetry tagOverrides: the design document's Telemetry adds organization_id and user_id from request headers to istio_requests_total only; a mesh-wide CLIENT override removes request_protocol from every metric east reports")
    func telemetryTagOverrides() async throws {
        let telemetry = Self.reviewsRoutes + """
              - route:
                - destination: {host: reviews, subset: v1}
            ---
            apiVersion: telemetry.istio.io/v1
            kind: Telemetry
            metadata:
              name: mcp-custom-metrics
            spec:
              metrics:
              - overrides:
                - match:
                    metric: requests_total
                  tagOverrides:
                    organization_id:
                      value: "%{REQUEST_HEADERS['x-organization-id']}"
                    user_id:
                      value: "%{REQUEST_HEADERS['x-user-id']}"
            ---
            apiVersion: telemetry.istio.io/v1
            kind: Telemetry
            metadata: {name: mesh-default, namespace: istio-system}
            spec:
              metrics:
              - providers: [{name: prometheus}]
                overrides:
                - match: {metric: ALL_METRICS, mode: CLIENT}
                  tagOverrides:
                    request_protocol: {operation: REMOVE}
            """
        let mesh = try await Self.start("http-telemetry", block: 133, virtualService: telemetry)
        defer { mesh.mesh.processes.stopAll() }
        let counts = try await Self.versions(mesh, count: 3, headers: ["x-organization-id: acme", "x-user-id: u-7"])
        #expect(counts == ["v1": 3], "\(counts)")
        let metrics = try await mesh.mesh.admin(mesh.east, "/stats/prometheus")
        let requests = metrics.split(separator: "\n").filter { $0.hasPrefix("istio_requests_total{") && $0.contains("destination_service=\"\(Self.reviews)\"") }
        #expect(requests.count == 1 && requests.allSatisfy { $0.contains("organization_id=\"acme\"") && $0.contains("user_id=\"u-7\"") && $0.hasSuffix(" 3") },
                "\(requests)")
        #expect(requests.allSatisfy { !$0.contains("request_protocol=") }, "\(requests)")
        let durations = metrics.split(separator: "\n").filter { $0.hasPrefix("istio_request_duration_milliseconds_count{") && $0.contains(Self.reviews) }
        #expect(!durations.isEmpty && durations.allSatisfy { !$0.contains("organization_id") && !$0.contains("request_protocol=") }, "REQUEST_COUNT only: \(durations)")
    }

    @Test("Telemetry accessLogging: a mesh-wide filter `response.code >= 400` keeps only the failed requests' lines in east's access log; a namespace's disabled: true silences the destination side in west. A metrics override disabled: true drops REQUEST_DURATION from the CLIENT side only")
    func telemetryAccessLogging() async throws {
        let telemetry = Self.reviewsRoutes + """
              - route:
                - destination: {host: reviews, subset: v2}
            ---
            apiVersion: telemetry.istio.io/v1
            kind: Telemetry
            metadata: {name: mesh-default, namespace: istio-system}
            spec:
              accessLogging:
              - providers: [{name: envoy}]
                filter: {expression: "response.code >= 400"}
                match: {mode: CLIENT}
              metrics:
              - overrides:
                - match: {metric: REQUEST_DURATION, mode: CLIENT}
                  disabled: true
            ---
            apiVersion: telemetry.istio.io/v1
            kind: Telemetry
            metadata: {name: quiet, namespace: default}
            spec:
              accessLogging: [{disabled: true, match: {mode: SERVER}}]
            """
        let mesh = try await Self.start("http-access-logging", block: 145, virtualService: telemetry)
        defer { mesh.mesh.processes.stopAll() }
        for path in ["/reviews/ok", "/reviews/ok", "/status/404", "/reviews/ok", "/status/404"] {
            let answer = try await mesh.mesh.curl(mesh.east, host: Self.reviews, path: path, extra: ["-o", "/dev/null", "-w", "%{http_code}"])
            #expect(answer.stdout == (path == "/status/404" ? "404" : "200"), "\(path): \(answer.stdout) \(answer.stderr)")
        }
        let east = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        let west = try #require(mesh.mesh.processes.children.first { $0.name == "west-gw" })
        #expect(await eventually { east.log.components(separatedBy: "\"GET /status/404 HTTP/2\" 404").count - 1 == 2 }, "\(east.log.suffix(2000))")
        #expect(!east.log.contains("\"GET /reviews/ok "), "a 200 is filtered out: \(east.log.suffix(2000))")
        // west delivered all five (its metrics count them) and logged none.
        let westMetrics = try await mesh.mesh.admin(mesh.west, "/stats/prometheus")
        let delivered = westMetrics.split(separator: "\n").filter { $0.hasPrefix("istio_requests_total{") && $0.contains("reporter=\"destination\"") }
            .compactMap { Int($0.split(separator: " ").last ?? "") }.reduce(0, +)
        #expect(delivered == 5, "\(westMetrics.split(separator: "\n").filter { $0.hasPrefix("istio_requests_total") })")
        #expect(!west.log.contains("\"GET /status/404") && !west.log.contains("\"GET /reviews/ok"), "\(west.log.suffix(2000))")
        let eastMetrics = try await mesh.mesh.admin(mesh.east, "/stats/prometheus")
        #expect(eastMetrics.contains("istio_requests_total{") && !eastMetrics.contains("istio_request_duration_milliseconds"),
                "REQUEST_DURATION off on the client side: \(eastMetrics.split(separator: "\n").filter { $0.hasPrefix("istio_") }.prefix(10))")
        #expect(westMetrics.contains("istio_request_duration_milliseconds_count{"), "and still on the server side")
    }

    @Test("virtual-service-reviews-90-10: 1000 requests split 90/10 between v1 (east) and v2 (west), counted by istio_requests_total")
    func ninetyTen() async throws {
        let mesh = try await Self.start("http-90-10", block: 81, virtualService: Self.bookinfo("virtual-service-reviews-90-10"))
        defer { mesh.mesh.processes.stopAll() }
        let counts = try await Self.versions(mesh, count: 1000)
        #expect(counts["v1", default: 0] + counts["v2", default: 0] == 1000, "\(counts)")
        // One client connection: the gateway kept its upstream connections and reused them
        // (a connection per request would leave ~900 sockets in TIME-WAIT towards v1).
        let sockets = try await runCommand("/usr/bin/env", ["ss", "-tanH", "dst", "127.0.81.10:9080"])
        let towardsV1 = sockets.stdout.split(separator: "\n").count
        #expect(towardsV1 <= 5, "\(towardsV1) sockets towards v1: \(sockets.stdout.prefix(500))")
        // Binomial(1000, 0.1): within 4 standard deviations.
        #expect((62...138).contains(counts["v2", default: 0]), "\(counts)")
        let metrics = try await mesh.mesh.admin(mesh.east, "/stats/prometheus")
        let lines = metrics.split(separator: "\n").filter { $0.hasPrefix("istio_requests_total{") && $0.contains("destination_service=\"\(Self.reviews)\"") }
        let total = lines.compactMap { Int($0.split(separator: " ").last ?? "") }.reduce(0, +)
        #expect(total == 1000, "\(lines)")
        #expect(lines.contains { $0.contains("destination_cluster=\"west\"") && $0.contains("response_code=\"200\"") && $0.contains("reporter=\"source\"") })
        #expect(lines.contains { $0.contains("source_principal=\"spiffe://cluster.local/ns/default/sa/client\"") })
    }

    @Test("virtual-service-reviews-jason-v2-v3: end-user jason reaches v2, everyone else v3, both across clusters; the backend sees the client's identity")
    func headerRouting() async throws {
        let mesh = try await Self.start("http-jason", block: 83, virtualService: Self.bookinfo("virtual-service-reviews-jason-v2-v3"),
                                        accessLogFormat: "%REQ(:METHOD)% %REQ(END-USER)% %RESPONSE_CODE% %UPSTREAM_CLUSTER% %ROUTE_NAME%")
        defer { mesh.mesh.processes.stopAll() }
        #expect(try await Self.versions(mesh, count: 20, headers: ["end-user: jason"]) == ["v2": 20])
        #expect(try await Self.versions(mesh, count: 20) == ["v3": 20])
        // Over HTTP/2 (ALPN h2; 20 streams on one connection) the same routing holds.
        #expect(try await Self.versions(mesh, count: 20, headers: ["end-user: jason"], http2: true) == ["v2": 20])
        let answer = try await mesh.mesh.curl(mesh.east, host: Self.reviews, path: "/reviews/0?x=1", extra: ["-H", "x-forwarded-client-cert: URI=spiffe://forged"])
        let headers = try #require(mesh.mesh.receivedHeaders(answer), "\(answer.stdout)")
        #expect(mesh.mesh.answer(answer)?["path"] == "/reviews/0?x=1")
        #expect(headers["x-forwarded-client-cert"] == "By=spiffe://cluster.local/ns/istio-system/sa/eastwest-gateway-east;URI=spiffe://cluster.local/ns/default/sa/client")
        #expect(headers["x-forwarded-proto"] == "https")
        #expect(headers["x-request-id"]?.count == 36)

        // The access log in the gateway's own format.
        let gateway = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        #expect(await eventually(timeout: .seconds(5)) { gateway.log.contains("GET jason 200 outbound|9080|v2|\(Self.reviews); -") },
                "\(gateway.log.suffix(1500))")

        // Why did it go there: the rule, the subset in west, the target via west's gateway.
        let admin = mesh.east.effectiveAdmin.description
        let why = try await runCommand(PackagePaths.eastwest, ["route", "--admin", admin, "--host", "\(Self.reviews):9080",
                                                               "--path", "/reviews/0", "-H", "end-user: jason"])
        #expect(why.status == 0, "\(why.stderr)")
        #expect(why.stdout.contains("rule:         VirtualService default/reviews http[0]"), "\(why.stdout)")
        #expect(why.stdout.contains("cluster:      outbound|9080|v2|\(Self.reviews)"), "\(why.stdout)")
        #expect(why.stdout.contains("in west") && why.stdout.contains("via gateway west-gw"), "\(why.stdout)")
        // Offline, from east's config file alone (every endpoint healthy, as here): the same answer.
        let offline = try await runCommand(PackagePaths.eastwest, ["route", "--config", "\(mesh.mesh.directory)/east-gw.yaml", "--host", "\(Self.reviews):9080",
                                                                   "--path", "/reviews/0", "-H", "end-user: jason"])
        #expect(offline.status == 0 && offline.stdout == why.stdout, "\(offline.stdout)\(offline.stderr)")
        let other = try await runCommand(PackagePaths.eastwest, ["route", "--admin", admin, "--host", Self.reviews, "--json"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(other.stdout.utf8)) as? [String: Any], "\(other.stdout)")
        #expect(json["cluster"] as? String == "outbound|9080|v3|\(Self.reviews)")
        #expect((json["virtualService"] as? String)?.hasPrefix("VirtualService default/reviews http[1]") == true)
    }

    @Test("Envoy's local replies: no matching rule 404 NR, a subset in no DestinationRule 503 NC, an empty subset 503 UH, a dead endpoint 503 UF,URX after Istio's default retries, a route timeout 504 UT")
    func localReplies() async throws {
        let mesh = try await Self.start("http-replies", block: 85, virtualService: Self.reviewsRoutes + """
              - match: [{uri: {prefix: /nc}}]
                route: [{destination: {host: reviews, subset: v9}}]
              - match: [{uri: {prefix: /uh}}]
                route: [{destination: {host: reviews, subset: v4}}]
              - match: [{uri: {prefix: /uf}}]
                route: [{destination: {host: reviews, subset: v1}}]
              - match: [{uri: {prefix: /delay}}]
                timeout: 0.5s
                route: [{destination: {host: reviews, subset: v1}}]
              - match: [{uri: {prefix: /reviews}}]
                route: [{destination: {host: reviews, subset: v3}}]
            """)
        defer { mesh.mesh.processes.stopAll() }
        func status(_ path: String) async throws -> (code: String, body: String) {
            let result = try await mesh.mesh.curl(mesh.east, host: Self.reviews, path: path, extra: ["-w", "\n%{http_code}"])
            let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
        }
        #expect(try await status("/reviews/1").code == "200")
        #expect(try await status("/other") == ("404", ""))
        #expect(try await status("/nc") == ("503", ""))
        #expect(try await status("/uh") == ("503", "no healthy upstream"))
        // The route's timeout: a backend slower than it gets Envoy's 504, one faster answers.
        let started = ContinuousClock.now
        #expect(try await status("/delay/3000") == ("504", "upstream request timeout"))
        let waited = ContinuousClock.now - started
        #expect(waited >= .milliseconds(450) && waited < .seconds(2.5), "answered after \(waited)")
        #expect(try await status("/delay/10").code == "200")
        let why = try await runCommand(PackagePaths.eastwest, ["route", "--admin", mesh.east.effectiveAdmin.description, "--host", Self.reviews, "--path", "/delay/1"])
        #expect(why.stdout.contains("timeout:      500 ms (then 504 UT)"), "\(why.stdout)\(why.stderr)")
        let v1 = try #require(mesh.mesh.processes.children.first { $0.name == "reviews-v1" })
        v1.signal(SIGKILL)
        #expect(await v1.waitForExit(timeout: .seconds(5)) != nil)
        // Istio's default retry policy tries the dead endpoint three times (connect-failure; there
        // is no other v1 endpoint for the previous-hosts predicate to prefer).
        #expect(try await status("/uf") == ("503", "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure"))
        // The access-log line is written once the response is out: the client may be first.
        // curl negotiated h2 (the gateway offers it for http services).
        let gateway = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        let logged = await eventually(timeout: .seconds(5)) { gateway.log.contains("\"GET /uf HTTP/2\" 503 UF,URX") }
        #expect(logged, "\(gateway.log.suffix(2000))")
        #expect(gateway.log.contains("\"GET /other HTTP/2\" 404 NR"))
        #expect(gateway.log.contains("\"GET /nc HTTP/2\" 503 NC"))
    }

    @Test("A client that reads slowly holds the upstream back: 20 MB at 4 MB/s arrive whole while the gateway's memory stays flat")
    func backpressure() async throws {
        let mesh = try await Self.start("http-backpressure", block: 87, virtualService: Self.reviewsRoutes + """
              - route: [{destination: {host: reviews, subset: v1}}]
            """)
        defer { mesh.mesh.processes.stopAll() }
        let gateway = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        func rss() -> Int {
            let status = (try? String(contentsOfFile: "/proc/\(gateway.pid)/status", encoding: .utf8)) ?? ""
            return Int(status.split(separator: "\n").first { $0.hasPrefix("VmRSS") }?.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        _ = try await mesh.mesh.curl(mesh.east, host: Self.reviews, path: "/bytes/1000")
        let before = rss()
        async let download = mesh.mesh.curl(mesh.east, host: Self.reviews, path: "/bytes/20000000",
                                            extra: ["--limit-rate", "4M", "-o", "/dev/null", "-w", "%{size_download}"])
        var peak = 0
        for _ in 0..<20 {
            try await Task.sleep(for: .milliseconds(200))
            peak = max(peak, rss())
        }
        let result = try await download
        #expect(result.stdout == "20000000", "\(result.stdout) \(result.stderr)")
        #expect(peak - before < 16_000, "gateway RSS grew \((peak - before) / 1000) MB during a 20 MB download to a slow client")
    }

    @Test("An HTTP/2 client's request body many times its 64 KiB stream window crosses whole: the gateway opens the windows as it passes the bytes on; five at once on one connection")
    func http2UploadPastTheWindow() async throws {
        let mesh = try await Self.start("http2-upload", block: 156, virtualService: Self.reviewsRoutes + """
              - route: [{destination: {host: reviews, subset: v1}}]
            """)
        defer { mesh.mesh.processes.stopAll() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("eastwest-h2-upload-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var bytes = [UInt8](repeating: 0, count: 900_000)
        var generator = SystemRandomNumberGenerator()
        for index in bytes.indices { bytes[index] = generator.next() }
        let body = directory.appendingPathComponent("body").path
        try Data(bytes).write(to: URL(fileURLWithPath: body))
        // curl --parallel multiplexes the five uploads as streams of one HTTP/2 connection.
        var extra = ["--http2", "--parallel", "-w", "%{http_version} %{http_code} %{size_download} %{num_connects}\\n",
                     "--data-binary", "@\(body)"]
        for index in 0..<5 {
            // The helper appends the last URL.
            extra += ["-o", "\(directory.path)/out\(index)"]
            if index < 4 { extra += ["https://\(Self.reviews):\(mesh.east.listen.port)/echo"] }
        }
        let result = try await mesh.mesh.curl(mesh.east, host: Self.reviews, path: "/echo", extra: extra)
        let lines = result.stdout.split(separator: "\n").map { $0.split(separator: " ") }
        #expect(lines.map { $0.prefix(3).joined(separator: " ") } == Array(repeating: "2 200 900000", count: 5), "\(result.stdout) \(result.stderr)")
        #expect(lines.compactMap { $0.last.flatMap { Int($0) } }.reduce(0, +) == 1, "one connection for the five: \(result.stdout)")
        for index in 0..<5 {
            #expect(FileManager.default.contents(atPath: "\(directory.path)/out\(index)") == Data(bytes), "upload \(index) came back changed")
        }
    }

    @Test("Malformed HTTP/2: a header block without :path, or with an upper-case name, resets that stream (PROTOCOL_ERROR) while a request in flight on the same connection is answered; DATA on stream 0 ends its connection with GOAWAY; the gateway keeps serving",
          .enabled(if: HTTP2PriorKnowledgeTests.hasPython, "needs python3's h2 package; .ci/run installs it"))
    func malformedHTTP2() async throws {
        let mesh = try await Self.start("http2-malformed", block: 158, virtualService: Self.reviewsRoutes + """
              - route: [{destination: {host: reviews, subset: v1}}]
            """)
        defer { mesh.mesh.processes.stopAll() }
        let client = mesh.mesh.clientCertPath(mesh.east.cluster)
        let script = "\(PackagePaths.root)/Tests/EastWestIntegrationTests/Support/h2_malformed_client.py"
        let result = try await runCommand("/usr/bin/env", ["python3", script, mesh.east.listen.host, "\(mesh.east.listen.port)", Self.reviews,
                                                           "\(client)/cert-chain.pem", "\(client)/key.pem", mesh.mesh.certs.rootCertificatePath,
                                                           Self.reviews, "/delay/300"])
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 4, "\(result.stdout) \(result.stderr)")
        #expect(lines.first?.hasPrefix("1 200 ") == true, "\(result.stdout)")
        #expect(Array(lines.dropFirst().prefix(2)) == ["3 reset 1", "5 reset 1"], "\(result.stdout)")
        #expect(lines.last == "goaway 1", "\(result.stdout) \(result.stderr)")
        let after = try await mesh.mesh.curl(mesh.east, host: Self.reviews, path: "/", extra: ["--http2", "-o", "/dev/null", "-w", "%{http_code}"])
        #expect(after.stdout == "200", "\(after.stdout) \(after.stderr)")
    }

    @Test("Between gateways, requests share a pooled HTTP/2 connection: 100 client connections to west's v2 make at most one gateway connection per event loop; bodies cross both ways; west reports the original client")
    func pooledBetweenGateways() async throws {
        let mesh = try await Self.start("http-pool", block: 89, virtualService: Self.bookinfo("virtual-service-reviews-jason-v2-v3"))
        defer { mesh.mesh.processes.stopAll() }
        // A new client TLS connection per request (the gateway closes after each answer).
        let counts = try await Self.versions(mesh, count: 100, headers: ["end-user: jason", "connection: close"])
        #expect(counts == ["v2": 100], "\(counts)")
        let sockets = try await runCommand("/usr/bin/env", ["ss", "-tanH", "state", "established", "src", "127.0.89.1", "dst", "127.0.90.1:15443"])
        let towardsWest = sockets.stdout.split(separator: "\n").count
        let loops = ProcessInfo.processInfo.activeProcessorCount
        #expect((1...loops).contains(towardsWest), "\(towardsWest) connections from east's gateway to west's: \(sockets.stdout.prefix(600))")
        let eastMetrics = try await mesh.mesh.admin(mesh.east, "/stats/prometheus")
        let opened = eastMetrics.split(separator: "\n").filter { $0.hasPrefix("envoy_cluster_upstream_cx_http2_total{cluster_name=\"outbound|9080|v2|\(Self.reviews)\"}") }
            .compactMap { Int($0.split(separator: " ").last ?? "") }.reduce(0, +)
        #expect((1...loops).contains(opened), "\(opened) pooled connections opened")

        // A 200 kB request body (HTTP/1.1, curl's `Expect: 100-continue`) crosses the pooled
        // connection past its flow-control window, and a 3 MB answer comes back whole.
        let body = "\(mesh.mesh.directory)/body"
        try String(repeating: "x", count: 200_000).write(toFile: body, atomically: true, encoding: .utf8)
        let echo = try await mesh.mesh.curl(mesh.east, host: Self.reviews, path: "/echo", extra: ["--http1.1", "-H", "end-user: jason", "--data-binary", "@\(body)"])
        #expect(echo.stdout.count == 200_000, "\(echo.stdout.prefix(200)) \(echo.stderr)")
        let large = try await mesh.mesh.curl(mesh.east, host: Self.reviews, path: "/bytes/3000000",
                                             extra: ["-H", "end-user: jason", "-o", "/dev/null", "-w", "%{size_download}"])
        #expect(large.stdout == "3000000", "\(large.stdout) \(large.stderr)")

        // West delivers to its own endpoint and reports the client east verified, not east's gateway.
        let westMetrics = try await mesh.mesh.admin(mesh.west, "/stats/prometheus")
        let delivered = westMetrics.split(separator: "\n").filter {
            $0.hasPrefix("istio_requests_total{") && $0.contains("reporter=\"destination\"")
                && $0.contains("source_principal=\"spiffe://cluster.local/ns/default/sa/client\"") && $0.contains("response_code=\"200\"")
        }.compactMap { Int($0.split(separator: " ").last ?? "") }.reduce(0, +)
        #expect(delivered == 102, "\(westMetrics.split(separator: "\n").filter { $0.hasPrefix("istio_requests_total{") })")
        let answer = try await mesh.mesh.curl(mesh.east, host: Self.reviews, path: "/reviews/0", extra: ["-H", "end-user: jason"])
        #expect(mesh.mesh.receivedHeaders(answer)?["x-forwarded-client-cert"]
                == "By=spiffe://cluster.local/ns/istio-system/sa/eastwest-gateway-east;URI=spiffe://cluster.local/ns/default/sa/client")
    }

    @Test("rewrite, redirect and directResponse as curl sees them; the access log shows the path as the client sent it")
    func rewriteRedirectDirect() async throws {
        let mesh = try await Self.start("http-rewrite", block: 93, virtualService: Self.reviewsRoutes + """
              - match: [{uri: {prefix: /old/}}]
                rewrite: {uri: /new/}
                route: [{destination: {host: reviews, subset: v2}}]
              - match: [{uri: {prefix: /moved}}]
                redirect: {uri: /reviews/0, redirectCode: 302}
              - match: [{uri: {prefix: /teapot}}]
                directResponse: {status: 418, body: {string: "short and stout"}}
              - route: [{destination: {host: reviews, subset: v1}}]
            """)
        defer { mesh.mesh.processes.stopAll() }
        let rewritten = try await mesh.mesh.curl(mesh.east, host: Self.reviews, path: "/old/x?y=1")
        let answer = mesh.mesh.answer(rewritten)
        #expect(answer?["path"] == "/new/x?y=1" && answer?["version"] == "v2", "\(rewritten.stdout)")
        #expect(mesh.mesh.receivedHeaders(rewritten)?["x-envoy-original-path"] == "/old/x?y=1")
        let moved = try await mesh.mesh.curl(mesh.east, host: Self.reviews, path: "/moved/a?b=1", extra: ["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"])
        #expect(moved.stdout == "302 https://\(Self.reviews):15443/reviews/0?b=1", "\(moved.stdout)")
        let teapot = try await mesh.mesh.curl(mesh.east, host: Self.reviews, path: "/teapot", extra: ["-w", "\n%{http_code}"])
        #expect(teapot.stdout == "short and stout\n418", "\(teapot.stdout)")
        let gateway = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        #expect(await eventually(timeout: .seconds(5)) { gateway.log.contains("\"GET /teapot HTTP/2\" 418 - direct_response") }, "\(gateway.log.suffix(1500))")
        #expect(gateway.log.contains("\"GET /old/x?y=1 HTTP/2\" 200 - via_upstream"), "\(gateway.log.suffix(1500))")
        #expect(gateway.log.contains("\"GET /moved/a?b=1 HTTP/2\" 302 - direct_response"), "\(gateway.log.suffix(1500))")
    }

    @Test("Malformed HTTP/1 gets Envoy's 400 Bad Request, headers over 60 KiB its 431, each logged DPE; the gateway keeps serving; pipelined requests are answered in order")
    func malformedRequests() async throws {
        let mesh = try await Self.start("http-malformed", block: 100, virtualService: Self.reviewsRoutes + """
              - route: [{destination: {host: reviews, subset: v1}}]
            """)
        defer { mesh.mesh.processes.stopAll() }
        let client = mesh.mesh.clientCertPath("east")
        func raw(_ request: String) async throws -> String {
            let result = try await runCommand("/usr/bin/openssl", ["s_client", "-connect", "127.0.100.1:15443", "-servername", Self.reviews, "-alpn", "http/1.1",
                                                      "-cert", "\(client)/cert-chain.pem", "-cert_chain", "\(client)/cert-chain.pem", "-key", "\(client)/key.pem",
                                                      "-CAfile", mesh.mesh.certs.rootCertificatePath, "-quiet", "-ign_eof"],
                                 stdin: Data(request.utf8), timeout: 10)
            return result.stdout + (result.stdout.isEmpty ? "<no answer; stderr: \(result.stderr.suffix(400))>" : "")
        }
        let bad = try await raw("GET /x HTTP/1.1\r\nHost: \(Self.reviews)\r\nno colon here\r\n\r\n")
        let log = mesh.mesh.processes.children.first { $0.name == "east-gw" }?.log ?? ""
        #expect(bad.hasPrefix("HTTP/1.1 400 Bad Request") && bad.hasSuffix("\r\n\r\nBad Request"), "\(bad) \(log.suffix(1500))")
        #expect(bad.lowercased().contains("connection: close") && bad.lowercased().contains("server: istio-envoy"), "\(bad)")
        let large = try await raw("GET /x HTTP/1.1\r\nHost: \(Self.reviews)\r\nx-big: \(String(repeating: "a", count: 70_000))\r\n\r\n")
        #expect(large.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large"), "\(large.prefix(300))")
        let served = try await mesh.mesh.curl(mesh.east, host: Self.reviews, path: "/reviews/0", extra: ["-w", "\n%{http_code}"])
        #expect(served.stdout.hasSuffix("\n200"), "\(served.stdout)")
        // Pipelined: three requests in one write are answered in order, the body of the second
        // kept with it; the last asked to close, and the gateway closes after answering it.
        let host = "Host: \(Self.reviews)\r\n"
        let pipelined = try await raw("GET /p/1 HTTP/1.1\r\n\(host)\r\nPOST /echo HTTP/1.1\r\n\(host)Content-Length: 11\r\n\r\nhello there"
                                      + "GET /p/3 HTTP/1.1\r\n\(host)Connection: close\r\n\r\n")
        let unescaped = pipelined.replacingOccurrences(of: "\\/", with: "/")
        let order = ["\"path\":\"/p/1\"", "hello there", "\"path\":\"/p/3\""].map { unescaped.range(of: $0)?.lowerBound }
        #expect(pipelined.components(separatedBy: "HTTP/1.1 200 OK").count == 4, "\(pipelined)")
        #expect(order.allSatisfy { $0 != nil } && order[0]! < order[1]! && order[1]! < order[2]!, "\(pipelined)")
        let gateway = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        #expect(await eventually(timeout: .seconds(5)) { gateway.log.contains("400 DPE http1.codec_error") && gateway.log.contains("431 DPE http1.headers_too_large") },
                "\(gateway.log.suffix(1500))")
    }
}
