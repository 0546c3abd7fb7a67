import Foundation
import Testing
@testable import MeshProxyCore

/// VirtualService `retries` and `fault` carried out by the entry gateway, against demo backends
/// whose failure modes are driven by request headers (`x-demo-key`, `x-demo-fail`, …), so each
/// case counts, on the backend itself, how many attempts reached it.
@Suite("HTTP retries and faults at the entry gateway", .serialized, .needsMachineAlone)
struct HTTPRetryTests {
    typealias Mesh = HTTPRoutingTests.Mesh

    /// One GET through east's gateway: status, body and the time it took.
    static func get(_ mesh: Mesh, _ path: String, headers: [String] = []) async throws -> (code: String, body: String, took: Duration) {
        let started = ContinuousClock.now
        let result = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: path,
                                              extra: headers.flatMap { ["-H", $0] } + ["-w", "\n%{http_code}"])
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"), ContinuousClock.now - started)
    }

    /// How many requests carrying `key` reached the backend at `address` (its own view).
    static func attempts(_ key: String, at address: String) async throws -> Int {
        let result = try await runCommand("/usr/bin/curl", ["-s", "http://\(address)/_demo/attempts/\(key)"])
        return Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    @Test("retries: a 503 is retried up to `attempts` under 5xx (the backend counts each attempt, x-envoy-attempt-count numbers them); Istio's default retries no 503; gateway-error leaves a 500 alone; URX when they run out")
    func statusRetries() async throws {
        let mesh = try await HTTPRoutingTests.start("http-retry-status", block: 105, virtualService: HTTPRoutingTests.reviewsRoutes + """
              - match: [{uri: {prefix: /five}}]
                retries: {attempts: 3, retryOn: 5xx}
                route: [{destination: {host: reviews, subset: v1}}]
              - match: [{uri: {prefix: /gateway}}]
                retries: {attempts: 3, retryOn: "gateway-error,409"}
                route: [{destination: {host: reviews, subset: v1}}]
              - match: [{uri: {prefix: /off}}]
                retries: {attempts: 0}
                route: [{destination: {host: reviews, subset: v1}}]
              - route: [{destination: {host: reviews, subset: v1}}]
            """)
        defer { mesh.mesh.processes.stopAll() }
        let v1 = "127.0.105.10:9080"
        // Two failures, then success: the client sees only the success, the third attempt.
        let healed = try await Self.get(mesh, "/five/a", headers: ["x-demo-key: a", "x-demo-fail: 2"])
        #expect(healed.code == "200", "\(healed)")
        #expect(healed.body.contains("\"x-envoy-attempt-count\":\"3\""), "\(healed.body)")
        #expect(try await Self.attempts("a", at: v1) == 3)
        // Failing more often than 1 + 3 attempts: the last 503 is the answer.
        let failing = try await Self.get(mesh, "/five/b", headers: ["x-demo-key: b", "x-demo-fail: 10"])
        #expect(failing.code == "503")
        #expect(try await Self.attempts("b", at: v1) == 4)
        // Istio's default policy (no `retries`) does not retry a 503 (since 1.24), nor does `attempts: 0`.
        #expect(try await Self.get(mesh, "/default", headers: ["x-demo-key: c", "x-demo-fail: 1"]).code == "503")
        #expect(try await Self.attempts("c", at: v1) == 1)
        #expect(try await Self.get(mesh, "/off", headers: ["x-demo-key: d", "x-demo-fail: 1"]).code == "503")
        #expect(try await Self.attempts("d", at: v1) == 1)
        // gateway-error covers 502/503/504 only; a bare code adds it to the retriable codes.
        #expect(try await Self.get(mesh, "/gateway", headers: ["x-demo-key: e", "x-demo-fail: 1", "x-demo-fail-code: 500"]).code == "500")
        #expect(try await Self.attempts("e", at: v1) == 1)
        #expect(try await Self.get(mesh, "/gateway", headers: ["x-demo-key: f", "x-demo-fail: 2", "x-demo-fail-code: 409"]).code == "200")
        #expect(try await Self.attempts("f", at: v1) == 3)

        // `eastwest route` says which policy applies.
        func route(_ path: String) async throws -> String {
            try await runCommand(PackagePaths.eastwest, ["route", "--admin", mesh.east.effectiveAdmin.description, "--host", HTTPRoutingTests.reviews, "--path", path]).stdout
        }
        #expect(try await route("/five/x").contains("retries:      3 on 5xx\n"))
        #expect(try await route("/default").contains("retries:      2 on cancelled,connect-failure,refused-stream,retriable-status-codes,unavailable (Istio's default)"))
        #expect(try await route("/off").contains("retries:      none"))
        let gateway = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        let logged = await eventually(timeout: .seconds(5)) { gateway.log.contains("\"GET /five/b HTTP/2\" 503 URX") }
        #expect(logged, "\(gateway.log.suffix(3000))")
        let metrics = try await mesh.mesh.admin(mesh.east, "/stats/prometheus")
        let cluster = "cluster_name=\"outbound|9080|v1|\(HTTPRoutingTests.reviews)\""
        func counter(_ name: String) -> Int? {
            metrics.split(separator: "\n").first { $0.hasPrefix("\(name){") && $0.contains(cluster) }
                .flatMap { $0.split(separator: " ").last }.flatMap { Int($0) }
        }
        // Retries started: 2 (a) + 3 (b) + 2 (f); two retried requests succeeded; one ran out.
        #expect(counter(RetryMetrics.retry) == 7, "\(metrics.split(separator: "\n").filter { $0.contains("retry") })")
        #expect(counter(RetryMetrics.success) == 2)
        #expect(counter(RetryMetrics.limitExceeded) == 1)
    }

    @Test("retries back off as Envoy does (25 ms base): retry N waits a jittered [0, (2^N - 1) x 25 ms), at most 250 ms; the backend's own arrival times of 10 requests x 6 attempts stay inside those bounds, and the later retries wait well above zero on average")
    func backoffTimes() async throws {
        let mesh = try await HTTPRoutingTests.start("http-backoff", block: 137, virtualService: HTTPRoutingTests.reviewsRoutes + """
              - route: [{destination: {host: reviews, subset: v1}}]
                retries: {attempts: 5, retryOn: 5xx}
            """)
        defer { mesh.mesh.processes.stopAll() }
        let keys = (0..<10).map { "backoff-\($0)" }
        for key in keys {
            let answer = try await Self.get(mesh, "/backoff", headers: ["x-demo-key: \(key)", "x-demo-fail: 5"])
            #expect(answer.code == "200", "\(answer)")
        }
        let listing = try await runCommand("/usr/bin/curl", ["-s", "http://127.0.137.10:9080/_demo/requests"])
        let received = (try? JSONSerialization.jsonObject(with: Data(listing.stdout.utf8))) as? [[String: Any]] ?? []
        let times = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        var laterGaps: [Double] = []
        for key in keys {
            let arrivals = received.filter { ($0["headers"] as? [String: String])?["x-demo-key"] == key }
                .compactMap { ($0["time"] as? String).flatMap { try? times.parse($0) } }.sorted()
            try #require(arrivals.count == 6, "\(key): \(arrivals.count) attempts arrived")
            let gaps = zip(arrivals.dropFirst(), arrivals).map { $0.timeIntervalSince($1) * 1000 }
            // Envoy's spans for retries 1-5, and 150 ms for the attempt itself on a loaded machine.
            for (n, (gap, bound)) in zip(gaps, [25.0, 75, 175, 250, 250]).enumerated() {
                #expect(gap < bound + 150, "\(key): retry \(n + 1) came \(gap) ms after the attempt before (bound \(bound) ms)")
            }
            laterGaps += gaps.suffix(2)
        }
        // Retries 4 and 5 wait min(U[0, 375), 250) ms: 167 ms on average.
        let mean = laterGaps.reduce(0, +) / Double(laterGaps.count)
        #expect(mean > 60, "retries 4 and 5 waited \(mean) ms on average: no back-off?")
    }

    @Test("retries: a reset is retried under `reset` (not by Istio's default, 503 UC); a per-try timeout is retried under 5xx and is a 504 UT otherwise; the route timeout bounds every try")
    func resetsAndTimeouts() async throws {
        let mesh = try await HTTPRoutingTests.start("http-retry-reset", block: 107, virtualService: HTTPRoutingTests.reviewsRoutes + """
              - match: [{uri: {prefix: /reset}}]
                retries: {attempts: 2, retryOn: "reset"}
                route: [{destination: {host: reviews, subset: v1}}]
              - match: [{uri: {prefix: /pertry}}]
                retries: {attempts: 2, perTryTimeout: 0.3s, retryOn: 5xx}
                route: [{destination: {host: reviews, subset: v1}}]
              - match: [{uri: {prefix: /connectonly}}]
                retries: {attempts: 2, perTryTimeout: 0.3s, retryOn: connect-failure}
                route: [{destination: {host: reviews, subset: v1}}]
              - match: [{uri: {prefix: /delay}}]
                timeout: 0.5s
                route: [{destination: {host: reviews, subset: v1}}]
              - match: [{uri: {prefix: /bounded}}]
                timeout: 0.5s
                retries: {attempts: 5, perTryTimeout: 0.3s, retryOn: 5xx}
                route: [{destination: {host: reviews, subset: v1}}]
              - route: [{destination: {host: reviews, subset: v1}}]
            """)
        defer { mesh.mesh.processes.stopAll() }
        let v1 = "127.0.107.10:9080"
        let reset = try await Self.get(mesh, "/reset", headers: ["x-demo-key: r1", "x-demo-reset-first: 1"])
        #expect(reset.code == "200", "\(reset) \(mesh.mesh.processes.children.first { $0.name == "east-gw" }?.log.suffix(3000) ?? "")")
        #expect(try await Self.attempts("r1", at: v1) == 2)
        let notRetried = try await Self.get(mesh, "/default", headers: ["x-demo-key: r2", "x-demo-reset-first: 1"])
        #expect(notRetried.code == "503")
        #expect(notRetried.body == "upstream connect error or disconnect/reset before headers. reset reason: connection termination")
        #expect(try await Self.attempts("r2", at: v1) == 1)

        // The first attempt hangs 3 s; the per-try timeout ends it at 0.3 s and the retry answers.
        let recovered = try await Self.get(mesh, "/pertry", headers: ["x-demo-key: t1", "x-demo-hang-first: 1", "x-demo-hang-ms: 3000"])
        #expect(recovered.code == "200")
        #expect(recovered.took < .seconds(2), "took \(recovered.took)")
        #expect(try await Self.attempts("t1", at: v1) == 2)
        // connect-failure does not cover a per-try timeout: Envoy's 504.
        let timedOut = try await Self.get(mesh, "/connectonly", headers: ["x-demo-key: t2", "x-demo-hang-first: 1", "x-demo-hang-ms: 3000"])
        #expect(timedOut.code == "504")
        #expect(timedOut.body == "upstream request timeout")
        #expect(timedOut.took < .seconds(2), "took \(timedOut.took)")
        #expect(try await Self.attempts("t2", at: v1) == 1)
        // Every try hangs: the route's 0.5 s ends them all, after the second try began.
        let bounded = try await Self.get(mesh, "/bounded", headers: ["x-demo-key: t3", "x-demo-hang-first: 9", "x-demo-hang-ms: 3000"])
        #expect(bounded.code == "504")
        #expect(bounded.took >= .milliseconds(450) && bounded.took < .seconds(2), "took \(bounded.took)")
        #expect(try await Self.attempts("t3", at: v1) == 2)

        // One keep-alive HTTP/1.1 connection: two quick answers, then one slower than the
        // route's 0.5 s. Each request's deadline is its own, though the first armed the timer.
        let url = "https://\(HTTPRoutingTests.reviews):15443"
        let started = ContinuousClock.now
        let sequence = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: "/delay/1500",
                                                extra: ["--http1.1", "-w", "%{http_code} %{num_connects}\n", "-o", "/dev/null", "\(url)/delay/0",
                                                        "-o", "/dev/null", "\(url)/delay/300", "-o", "/dev/null"])
        let took = ContinuousClock.now - started
        #expect(sequence.stdout.split(separator: "\n") == ["200 1", "200 0", "504 0"], "\(sequence)")
        #expect(took >= .milliseconds(750) && took < .milliseconds(1400), "took \(took)")
    }

    @Test("fault: an abort answers with its status, 'fault filter abort' and FI without reaching the backend; a delay holds the request (DI); percentages hold within binomial bounds")
    func faults() async throws {
        let mesh = try await HTTPRoutingTests.start("http-fault", block: 109, virtualService: HTTPRoutingTests.reviewsRoutes + """
              - match: [{uri: {prefix: /abort}}]
                fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
                route: [{destination: {host: reviews, subset: v1}}]
              - match: [{uri: {prefix: /delay}}]
                fault: {delay: {fixedDelay: 400ms, percentage: {value: 100.0}}}
                route: [{destination: {host: reviews, subset: v1}}]
              - match: [{uri: {prefix: /half}}]
                fault: {abort: {httpStatus: 503, percentage: {value: 50}}}
                route: [{destination: {host: reviews, subset: v1}}]
              - route: [{destination: {host: reviews, subset: v1}}]
            """)
        defer { mesh.mesh.processes.stopAll() }
        let v1 = "127.0.109.10:9080"
        let why = try await runCommand(PackagePaths.eastwest, ["route", "--admin", mesh.east.effectiveAdmin.description, "--host", HTTPRoutingTests.reviews, "--path", "/half"])
        #expect(why.stdout.contains("fault:        abort 503 for 50.0 % (FI)"), "\(why.stdout)")
        let aborted = try await Self.get(mesh, "/abort", headers: ["x-demo-key: a"])
        #expect(aborted.code == "418")
        #expect(aborted.body == "fault filter abort")
        #expect(try await Self.attempts("a", at: v1) == 0)
        let delayed = try await Self.get(mesh, "/delay", headers: ["x-demo-key: d"])
        #expect(delayed.code == "200")
        #expect(delayed.took >= .milliseconds(380), "took \(delayed.took)")
        #expect(try await Self.attempts("d", at: v1) == 1)
        // 400 requests at 50 %: within 4 standard deviations (±40).
        let url = "https://\(HTTPRoutingTests.reviews):15443/half"
        let many = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: "/half",
                                            extra: ["-w", "%{http_code}\n"] + Array(repeating: ["-o", "/dev/null", url], count: 399).flatMap { $0 } + ["-o", "/dev/null"])
        let codes = many.stdout.split(separator: "\n")
        #expect(codes.count == 400, "\(many.stderr)")
        let aborts = codes.filter { $0 == "503" }.count
        #expect((160...240).contains(aborts), "\(aborts) of 400 aborted")
        let gateway = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        let logged = await eventually(timeout: .seconds(5)) { gateway.log.contains("\"GET /abort HTTP/2\" 418 FI") && gateway.log.contains("\"GET /delay HTTP/2\" 200 DI") }
        #expect(logged, "\(gateway.log.suffix(3000))")
    }

    @Test("outlierDetection at L7: consecutive 5xx answers eject the endpoint (then 503 UH, no healthy upstream), and it returns after baseEjectionTime; faults never count")
    func fiveXXEjection() async throws {
        let mesh = try await HTTPRoutingTests.start("http-outlier", block: 111, virtualService: HTTPRoutingTests.reviewsRoutes + """
              - match: [{uri: {prefix: /aborted}}]
                fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
                route: [{destination: {host: reviews, subset: v1}}]
              - route: [{destination: {host: reviews, subset: v1}}]
            """, trafficPolicy: """
                outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 3s, maxEjectionPercent: 100}
            """)
        defer { mesh.mesh.processes.stopAll() }
        // Aborts are the gateway's own answers: any number of them ejects nothing.
        for _ in 0..<5 { #expect(try await Self.get(mesh, "/aborted").code == "503") }
        #expect(try await Self.get(mesh, "/reviews/1").code == "200")
        // Three 500s from the backend itself: the third ejects v1's only endpoint.
        for _ in 0..<3 { #expect(try await Self.get(mesh, "/status/500").code == "500") }
        let ejected = try await Self.get(mesh, "/reviews/1")
        #expect(ejected.code == "503" && ejected.body == "no healthy upstream", "\(ejected)")
        let started = ContinuousClock.now
        let back = await eventually(timeout: .seconds(10)) { (try? await Self.get(mesh, "/reviews/1").code) == "200" }
        #expect(back, "v1 did not return")
        #expect(ContinuousClock.now - started >= .seconds(1.5), "returned after \(ContinuousClock.now - started)")
        let metrics = try await mesh.mesh.admin(mesh.east, "/stats/prometheus")
        #expect(metrics.contains("envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx{cluster_name=\"outbound|9080||\(HTTPRoutingTests.reviews)\"} 1"),
                "\(metrics.split(separator: "\n").filter { $0.contains("outlier") })")
    }

    @Test("connectionPool.http: past http2MaxRequests in flight a request gets 503 UO with x-envoy-overloaded and Envoy's body, counted and gauged; maxRequestsPerConnection 1 closes each upstream connection after its answer")
    func circuitBreaking() async throws {
        let mesh = try await HTTPRoutingTests.start("http-breaker", block: 113, virtualService: HTTPRoutingTests.reviewsRoutes + """
              - route: [{destination: {host: reviews, subset: v1}}]
            """, trafficPolicy: """
                connectionPool: {http: {http2MaxRequests: 2, maxRequestsPerConnection: 1}}
            """)
        defer { mesh.mesh.processes.stopAll() }
        let url = "https://\(HTTPRoutingTests.reviews):15443/delay/1500"
        // Three at once on one HTTP/2 client connection: two are in flight, the third overflows.
        let parallel = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: "/delay/1500",
                                                extra: ["--parallel", "--parallel-immediate", "-w", "%{http_code}\n", "-o", "/dev/null", url, "-o", "/dev/null", url, "-o", "/dev/null"])
        let codes = parallel.stdout.split(separator: "\n").map(String.init).sorted()
        #expect(codes == ["200", "200", "503"], "\(parallel.stdout) \(parallel.stderr)")
        let gateway = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        let logged = await eventually(timeout: .seconds(5)) { gateway.log.contains("\"GET /delay/1500 HTTP/2\" 503 UO") }
        #expect(logged, "\(gateway.log.suffix(2000))")
        let metrics = try await mesh.mesh.admin(mesh.east, "/stats/prometheus")
        let cluster = "cluster_name=\"outbound|9080|v1|\(HTTPRoutingTests.reviews)\""
        #expect(metrics.contains("envoy_cluster_upstream_rq_pending_overflow{\(cluster)} 1"), "\(metrics.split(separator: "\n").filter { $0.contains("envoy_cluster") })")
        // Both answered: the breaker is closed again.
        #expect(metrics.contains("envoy_cluster_circuit_breakers_default_rq_open{\(cluster)} 0"))
        let overflowed = try await Self.get(mesh, "/reviews/1")
        #expect(overflowed.code == "200")
        // The overflow reply itself, as a client sees it.
        let headers = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: "/delay/1500",
                                               extra: ["--parallel", "--parallel-immediate", "-o", "/dev/null", url, "-o", "/dev/null", url, "-D", "-", "-o", "/dev/null"])
        #expect(headers.stdout.lowercased().contains("x-envoy-overloaded: true"), "\(headers.stdout)")
        // maxRequestsPerConnection 1: ten requests, ten upstream connections (each closed after its answer).
        func sockets() async throws -> Int {
            try await runCommand("/usr/bin/env", ["ss", "-tanH", "dst", "127.0.113.10:9080"]).stdout.split(separator: "\n").count
        }
        let before = try await sockets()
        for _ in 0..<10 { _ = try await Self.get(mesh, "/reviews/1") }
        let after = try await sockets()
        #expect(after - before >= 10, "\(before) sockets towards v1 before, \(after) after")
    }

    @Test("connectionPool.http.http1MaxPendingRequests: while one request waits for a connection to a silent endpoint, the next gets 503 UO with x-envoy-overloaded at once, counted; the first ends when the connect times out",
          .enabled(if: isRoot && FileManager.default.isExecutableFile(atPath: "/usr/sbin/iptables"), "needs root and iptables to make an endpoint silent on loopback"))
    func pendingOverflow() async throws {
        let mesh = try await HTTPRoutingTests.start("http-pending", block: 135, virtualService: HTTPRoutingTests.reviewsRoutes + """
              - route: [{destination: {host: reviews, subset: v1}}]
                retries: {attempts: 0}
            """, trafficPolicy: """
                connectionPool: {tcp: {connectTimeout: 1s}, http: {http1MaxPendingRequests: 1}}
            """)
        defer { mesh.mesh.processes.stopAll() }
        // SYNs to v1 vanish: a connection to it stays pending until the connect timeout.
        let rule = ["-d", "127.0.135.10", "-p", "tcp", "--dport", "9080", "-j", "DROP"]
        let added = try await runCommand("/usr/sbin/iptables", ["-I", "OUTPUT"] + rule)
        try #require(added.status == 0, "iptables: \(added.stderr)")
        defer { _ = try? runCommandBlocking("/usr/sbin/iptables", ["-D", "OUTPUT"] + rule) }
        let url = "https://\(HTTPRoutingTests.reviews):15443/reviews/1"
        let start = ContinuousClock.now
        let parallel = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: "/reviews/1",
                                                extra: ["--http2", "--parallel", "--parallel-immediate", "-D", "-", "-o", "/dev/null", url, "-D", "-", "-o", "/dev/null"])
        let elapsed = ContinuousClock.now - start
        let headers = parallel.stdout.lowercased()
        #expect(headers.components(separatedBy: "x-envoy-overloaded: true").count - 1 == 1, "one request overflowed: \(parallel.stdout) \(parallel.stderr)")
        #expect(headers.components(separatedBy: "http/2 503").count - 1 == 2, "the other failed to connect: \(parallel.stdout)")
        #expect(elapsed >= .milliseconds(900) && elapsed < .seconds(4), "the pending one waited for the 1 s connect timeout: \(elapsed)")
        let gateway = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        #expect(await eventually(timeout: .seconds(5)) { gateway.log.contains("\"GET /reviews/1 HTTP/2\" 503 UO") && gateway.log.contains("\"GET /reviews/1 HTTP/2\" 503 UF") },
                "\(gateway.log.suffix(2000))")
        let metrics = try await mesh.mesh.admin(mesh.east, "/stats/prometheus")
        let cluster = "cluster_name=\"outbound|9080|v1|\(HTTPRoutingTests.reviews)\""
        #expect(metrics.contains("envoy_cluster_upstream_rq_pending_overflow{\(cluster)} 1"), "\(metrics.split(separator: "\n").filter { $0.contains("envoy_cluster") })")
        #expect(metrics.contains("envoy_cluster_upstream_rq_pending_active{\(cluster)} 0") && metrics.contains("envoy_cluster_circuit_breakers_default_rq_pending_open{\(cluster)} 0"),
                "nothing pending once both ended: \(metrics.split(separator: "\n").filter { $0.contains("pending") })")
    }

    /// Established connections to `destination` (HOST:PORT), as `ss` lists them.
    static func established(to destination: String) async throws -> Int {
        let parts = destination.split(separator: ":")
        let listed = try await runCommand("/usr/bin/ss", ["-Htn", "state", "established", "dst", String(parts[0]), "dport", "=", ":\(parts[1])"])
        return listed.stdout.split(separator: "\n").count
    }

    @Test("connectionPool.http.idleTimeout: the kept HTTP/1.1 connection to a local endpoint, the pooled HTTP/2 connection to the peer gateway and the peer's own connection to its endpoint close once idle that long; the next requests open new ones")
    func upstreamIdleTimeout() async throws {
        let mesh = try await HTTPRoutingTests.start("http-upstream-idle", block: 140, virtualService: HTTPRoutingTests.reviewsRoutes + """
              - match: [{uri: {prefix: /remote}}]
                route: [{destination: {host: reviews, subset: v2}}]
              - route: [{destination: {host: reviews, subset: v1}}]
            """, trafficPolicy: """
                connectionPool: {http: {idleTimeout: 1s}}
            """)
        defer { mesh.mesh.processes.stopAll() }
        let upstreams = ["127.0.140.10:9080", "127.0.141.1:15443", "127.0.141.10:9080"]
        for round in 1...2 {
            for path in ["/local", "/remote"] {
                let answer = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: path)
                #expect(answer.stdout.contains(path == "/local" ? #""version":"v1""# : #""version":"v2""#), "round \(round) \(path): \(answer.stdout) \(answer.stderr)")
            }
            let answered = ContinuousClock.now
            for upstream in upstreams {
                #expect(try await Self.established(to: upstream) == 1, "round \(round): the connection to \(upstream) is kept after its answer")
            }
            let closed = await eventually(timeout: .seconds(6)) {
                var open = 0
                for upstream in upstreams { open += (try? await Self.established(to: upstream)) ?? 1 }
                return open == 0
            }
            let left = closed ? "" : try await runCommand("/usr/bin/ss", ["-Htn", "state", "established"]).stdout
            #expect(closed, "round \(round): connections still open: \(left)")
            #expect(ContinuousClock.now - answered >= .milliseconds(900), "closed only once idle for the timeout")
        }
    }

    @Test("mirror: a copy of each request reaches the mirror (in another cluster too) and its answer is dropped; mirrorPercentage holds within binomial bounds; a stopped or dead mirror changes nothing for the client")
    func mirroring() async throws {
        let mesh = try await HTTPRoutingTests.start("http-mirror", block: 115, virtualService: HTTPRoutingTests.reviewsRoutes + """
              - match: [{uri: {prefix: /mirrored}}]
                route: [{destination: {host: reviews, subset: v1}}]
                mirror: {host: reviews, subset: v2}
              - match: [{uri: {prefix: /half}}]
                route: [{destination: {host: reviews, subset: v1}}]
                mirrors: [{destination: {host: reviews, subset: v2}, percentage: {value: 50}}]
              - match: [{uri: {prefix: /stuck}}]
                route: [{destination: {host: reviews, subset: v1}}]
                mirror: {host: reviews, subset: v3}
                mirrorPercentage: {value: 100}
              - route: [{destination: {host: reviews, subset: v1}}]
            """)
        defer { mesh.mesh.processes.stopAll() }
        let v1 = "127.0.115.10:9080", v2 = "127.0.116.10:9080"
        let why = try await runCommand(PackagePaths.eastwest, ["route", "--admin", mesh.east.effectiveAdmin.description, "--host", HTTPRoutingTests.reviews, "--path", "/half"])
        #expect(why.stdout.contains("mirror:       \(HTTPRoutingTests.reviews) subset v2 for 50.0 % (copies; answers dropped)"), "\(why.stdout)")
        let answer = try await Self.get(mesh, "/mirrored", headers: ["x-demo-key: m1"])
        #expect(answer.code == "200" && answer.body.contains("\"version\":\"v1\""), "\(answer)")
        #expect(await eventually(timeout: .seconds(5)) { (try? await Self.attempts("m1", at: v2)) == 1 }, "the mirror got no copy")
        #expect(try await Self.attempts("m1", at: v1) == 1)
        // 200 requests at 50 %: within 4 standard deviations (±28).
        let url = "https://\(HTTPRoutingTests.reviews):15443/half"
        let many = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: "/half",
                                            extra: ["-H", "x-demo-key: m2", "-w", "%{http_code}\n"] + Array(repeating: ["-o", "/dev/null", url], count: 199).flatMap { $0 } + ["-o", "/dev/null"])
        #expect(many.stdout.split(separator: "\n").allSatisfy { $0 == "200" } && many.stdout.split(separator: "\n").count == 200, "\(many.stderr)")
        try await Task.sleep(for: .milliseconds(300))  // the last copies are fire and forget
        let copies = try await Self.attempts("m2", at: v2)
        #expect((72...128).contains(copies), "\(copies) of 200 mirrored")
        // A mirror that accepts and never answers (stopped), then one that is gone: the client
        // is answered as fast as without it.
        let v3 = try #require(mesh.mesh.processes.children.first { $0.name == "reviews-v3" })
        v3.signal(SIGSTOP)
        for _ in 0..<3 {
            let stuck = try await Self.get(mesh, "/stuck")
            #expect(stuck.code == "200" && stuck.took < .seconds(1), "\(stuck)")
        }
        v3.signal(SIGKILL)
        #expect(await v3.waitForExit(timeout: .seconds(5)) != nil)
        for _ in 0..<3 {
            let dead = try await Self.get(mesh, "/stuck")
            #expect(dead.code == "200" && dead.took < .seconds(1), "\(dead)")
        }
    }
}
