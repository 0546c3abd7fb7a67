import Foundation
import Testing
@testable import MeshProxyCore

@Suite("Local rate limit from an EnvoyFilter (processes on loopback)", .serialized, .sharesMachine)
struct RateLimitTests {
    static let filter = "\n" + """
        ---
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: gateway-rate-limit, namespace: istio-system}
        spec:
          workloadSelector: {labels: {istio: eastwestgateway}}
          configPatches:
          - applyTo: HTTP_FILTER
            match: {context: GATEWAY}
            patch:
              operation: INSERT_BEFORE
              value:
                name: envoy.filters.http.local_ratelimit
                typed_config:
                  "@type": type.googleapis.com/udpa.type.v1.TypedStruct
                  type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                  value:
                    stat_prefix: http_local_rate_limiter
                    token_bucket: {max_tokens: 3, tokens_per_fill: 3, fill_interval: 60s}
                    enable_x_ratelimit_headers: DRAFT_VERSION_03
                    filter_enabled: {runtime_key: local_rate_limit_enabled, default_value: {numerator: 100, denominator: HUNDRED}}
                    filter_enforced: {runtime_key: local_rate_limit_enforced, default_value: {numerator: 100, denominator: HUNDRED}}
                    response_headers_to_add:
                    - append_action: OVERWRITE_IF_EXISTS_OR_ADD
                      header: {key: x-local-rate-limit, value: "true"}
        """

    @Test("Istio's rate-limit example at the gateway: a bucket of 3 lets 3 requests through, then 429 local_rate_limited with x-local-rate-limit and flag RL; Envoy's counters count them")
    func bucketRunsOut() async throws {
        let mesh = try await HTTPRoutingTests.start("ratelimit", block: 119, virtualService: HTTPRoutingTests.reviewsRoutes + """
              - route: [{destination: {host: reviews, subset: v1}}]
            """ + Self.filter)
        defer { mesh.mesh.processes.stopAll() }
        var codes: [String] = []
        var refused = ""
        var remaining: [String] = []
        for _ in 0..<5 {
            let result = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: "/reviews/1", extra: ["-i", "-w", "\n%{http_code}"])
            let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            codes.append(String(lines.last ?? ""))
            if lines.last == "429" { refused = result.stdout }
            // (Header lines end in CR LF, one Character in Swift: searched, not split.)
            remaining.append(result.stdout.lowercased().components(separatedBy: "x-ratelimit-remaining: ").dropFirst().first.map { String($0.prefix { $0.isNumber }) } ?? "none")
        }
        #expect(codes == ["200", "200", "200", "429", "429"], "\(codes)")
        // enable_x_ratelimit_headers: every answer says the limit, what is left and when the
        // next token comes (3 a minute: one every 20 s).
        #expect(remaining == ["2", "1", "0", "0", "0"], "\(remaining)")
        let lowered = refused.lowercased()
        // At most 20 s to the next token, less the time since the bucket ran out (seconds on a
        // loaded machine).
        let reset = lowered.components(separatedBy: "x-ratelimit-reset: ").dropFirst().first.flatMap { Int($0.prefix { $0.isNumber }) }
        #expect(lowered.contains("x-ratelimit-limit: 3") && reset.map { (0...20).contains($0) } == true, "\(refused)")
        #expect(refused.lowercased().contains("x-local-rate-limit: true") && refused.contains("local_rate_limited"), "\(refused)")
        let gateway = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        let logged = await eventually(timeout: .seconds(5)) { gateway.log.contains("\"GET /reviews/1 HTTP/2\" 429 RL") }
        #expect(logged, "\(gateway.log.suffix(2000))")
        let metrics = try await mesh.mesh.admin(mesh.east, "/stats/prometheus")
        for (name, count) in [("enabled", 5), ("ok", 3), ("rate_limited", 2), ("enforced", 2)] {
            #expect(metrics.contains("envoy_http_local_rate_limiter_http_local_rate_limit_\(name) \(count)"), "\(name): \(metrics.split(separator: "\n").filter { $0.contains("rate_limit") })")
        }
    }

    static let descriptorFilter = "\n" + """
        ---
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: batch-clients, namespace: istio-system}
        spec:
          workloadSelector: {labels: {istio: eastwestgateway}}
          configPatches:
          - applyTo: HTTP_FILTER
            match: {context: GATEWAY}
            patch:
              operation: INSERT_BEFORE
              value:
                name: envoy.filters.http.local_ratelimit
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                  stat_prefix: batch
                  token_bucket: {max_tokens: 100, tokens_per_fill: 100, fill_interval: 60s}
                  filter_enabled: {runtime_key: e, default_value: {numerator: 100, denominator: HUNDRED}}
                  filter_enforced: {runtime_key: f, default_value: {numerator: 100, denominator: HUNDRED}}
                  enable_x_ratelimit_headers: DRAFT_VERSION_03
                  local_rate_limit_per_downstream_connection: true
                  descriptors:
                  - entries: [{key: client, value: batch}]
                    token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 60s}
          - applyTo: HTTP_ROUTE
            match: {context: GATEWAY}
            patch:
              operation: MERGE
              value:
                route:
                  rate_limits:
                  - actions: [{request_headers: {header_name: x-client, descriptor_key: client}}]
        """

    @Test("Descriptors through a real gateway: the route's rate_limits turn x-client: batch into a descriptor with 2 requests a minute, per downstream connection (one curl, one connection: 200 200 429 429; a new connection starts again); other clients share the 100-token default")
    func descriptorsPerConnection() async throws {
        let mesh = try await HTTPRoutingTests.start("ratelimit-descriptors", block: 149, virtualService: HTTPRoutingTests.reviewsRoutes + """
              - route: [{destination: {host: reviews, subset: v1}}]
            """ + Self.descriptorFilter)
        defer { mesh.mesh.processes.stopAll() }
        let url = "https://\(HTTPRoutingTests.reviews):\(mesh.east.listen.port)/reviews/1"
        func codes(_ headers: [String], requests: Int) async throws -> (codes: [String], output: String) {
            // curl sends every URL of one invocation over the same connection.
            let result = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: "/reviews/1",
                                                  extra: headers.flatMap { ["-H", $0] } + ["-D", "-", "-w", "code=%{http_code} connects=%{num_connects}\n"]
                                                    + Array(repeating: url, count: requests - 1))
            return (result.stdout.components(separatedBy: "code=").dropFirst().map { String($0.prefix(3)) }, result.stdout)
        }
        let batch = try await codes(["x-client: batch"], requests: 4)
        #expect(batch.codes == ["200", "200", "429", "429"], "\(batch.output)")
        #expect(batch.output.components(separatedBy: "connects=1").count == 2, "one connection for the four requests: \(batch.output)")
        #expect(batch.output.lowercased().contains("x-ratelimit-limit: 2"), "the headers speak of the descriptor's bucket: \(batch.output)")
        let again = try await codes(["x-client: batch"], requests: 1)
        #expect(again.codes == ["200"], "a new connection has buckets of its own: \(again.output)")
        let others = try await codes([], requests: 4)
        #expect(others.codes == ["200", "200", "200", "200"], "\(others.output)")
        #expect(others.output.lowercased().contains("x-ratelimit-limit: 100"), "\(others.output)")
        let gateway = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        let logged = await eventually(timeout: .seconds(5)) { gateway.log.contains("\"GET /reviews/1 HTTP/2\" 429 RL") }
        #expect(logged, "\(gateway.log.suffix(2000))")
        let metrics = try await mesh.mesh.admin(mesh.east, "/stats/prometheus")
        #expect(metrics.contains("envoy_batch_http_local_rate_limit_enforced 2"), "\(metrics.split(separator: "\n").filter { $0.contains("rate_limit") })")
    }

    static let networkFilter = "\n" + """
        ---
        apiVersion: networking.istio.io/v1alpha3
        kind: EnvoyFilter
        metadata: {name: gateway-connection-limit, namespace: istio-system}
        spec:
          workloadSelector: {labels: {istio: eastwestgateway}}
          configPatches:
          - applyTo: NETWORK_FILTER
            match:
              context: GATEWAY
              listener:
                filterChain:
                  filter: {name: envoy.filters.network.http_connection_manager}
            patch:
              operation: INSERT_BEFORE
              value:
                name: envoy.filters.network.local_ratelimit
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit
                  stat_prefix: gateway_connections
                  token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 60s}
        """

    @Test("envoy.filters.network.local_ratelimit at the gateway: 2 new connections a minute on the HTTP chains go through, the third is closed before its handshake and counted; requests on a kept connection take no token")
    func connectionsRunOut() async throws {
        let mesh = try await HTTPRoutingTests.start("connlimit", block: 129, virtualService: HTTPRoutingTests.reviewsRoutes + """
              - route: [{destination: {host: reviews, subset: v1}}]
            """ + Self.networkFilter)
        defer { mesh.mesh.processes.stopAll() }
        // Three requests on one kept connection: one token.
        let url = "https://\(HTTPRoutingTests.reviews):15443/reviews/1"
        let kept = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: "/reviews/1",
                                            extra: ["-o", "/dev/null", "-w", "%{http_code}\n", url, "-o", "/dev/null", url, "-o", "/dev/null"])
        #expect(kept.stdout == "200\n200\n200\n", "\(kept)")
        var codes: [String] = []
        for _ in 0..<3 {
            let result = try await mesh.mesh.curl(mesh.east, host: HTTPRoutingTests.reviews, path: "/reviews/1", extra: ["-o", "/dev/null", "-w", "%{http_code}"])
            codes.append(result.stdout)
        }
        // The second connection takes the last token; the third finds none and is closed.
        #expect(codes == ["200", "000", "000"], "\(codes)")
        let metrics = try await mesh.mesh.admin(mesh.east, "/stats/prometheus")
        #expect(metrics.contains("envoy_local_rate_limit_gateway_connections_rate_limited 2"), "\(metrics.split(separator: "\n").filter { $0.contains("rate_limit") })")
        let gateway = try #require(mesh.mesh.processes.children.first { $0.name == "east-gw" })
        #expect(await eventually(timeout: .seconds(5)) { gateway.log.contains("local_ratelimit_close_over_limit") && gateway.log.contains(" URX ") },
                "\(gateway.log.suffix(1500))")
    }

    @Test("A SIDECAR_INBOUND envoy.filters.network.local_ratelimit for default's workloads: the gateway that delivers a TCP connection to them (here west, for east's clients) takes the token; 2 a minute go through, the third is closed after the handshake; east's own connections take none")
    func inboundConnections() async throws {
        let mesh = try TestMesh("inbound-connlimit", clusters: ["east", "west"])
        defer { mesh.processes.stopAll() }
        let ratingsHost = "ratings.default.svc.cluster.local"
        try await mesh.startBackend("127.0.155.20:9080", service: ratingsHost, cluster: "west")
        let ratings = GatewayConfig.ServiceConfig.echo("127.0.155.20:9080", host: ratingsHost, port: 9080)
        let policy = "\(mesh.directory)/inbound-limit.yaml"
        try """
            apiVersion: networking.istio.io/v1alpha3
            kind: EnvoyFilter
            metadata: {name: ratings-connections, namespace: default}
            spec:
              configPatches:
              - applyTo: NETWORK_FILTER
                match: {context: SIDECAR_INBOUND, listener: {portNumber: 9080, filterChain: {filter: {name: envoy.filters.network.tcp_proxy}}}}
                patch:
                  operation: INSERT_FIRST
                  value:
                    name: envoy.filters.network.local_ratelimit
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit
                      stat_prefix: ratings_inbound
                      token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 60s}
            """.write(toFile: policy, atomically: true, encoding: .utf8)
        var west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: "127.0.155.1", services: [ratings])
        var east = mesh.eastGateway(ip: "127.0.154.1", reaching: west)
        west.policies = [policy]
        east.policies = [policy]
        let validate = try await runCommand(PackagePaths.eastwest, ["validate", policy])
        #expect(validate.status == 0 && !validate.stderr.contains("warning"), "\(validate.stderr)")
        let westProcess = try await mesh.startGateway(west)
        let eastProcess = try await mesh.startGateway(east)
        var answers: [String] = []
        for _ in 0..<3 { answers.append(mesh.answer(try await mesh.curl(east, host: ratingsHost))?["cluster"] ?? "closed") }
        #expect(answers == ["west", "west", "closed"], "\(answers) \(westProcess.log.suffix(1500))")
        #expect(await eventually(timeout: .seconds(5)) { westProcess.log.contains("local_ratelimit_close_over_limit") }, "\(westProcess.log.suffix(1500))")
        let metrics = try await mesh.admin(west, "/stats/prometheus")
        #expect(metrics.contains("envoy_local_rate_limit_ratings_inbound_rate_limited 1"), "\(metrics.split(separator: "\n").filter { $0.contains("rate_limit") })")
        #expect(!eastProcess.log.contains("local_ratelimit_close_over_limit"), "east delivers nothing itself")
    }
}
