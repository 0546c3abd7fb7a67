import Foundation
import NIOHTTP1
import Testing
@testable import MeshProxyCore

@Suite("Local rate limits from EnvoyFilters")
struct LocalRateLimitTests {
    @Test("The token bucket starts full and refills continuously at tokens_per_fill per fill_interval, never past max_tokens")
    func bucket() {
        let t0 = ContinuousClock.now
        var bucket = TokenBucket(maxTokens: 2, tokensPerFill: 2, fillInterval: .seconds(1), now: t0)
        var taken: [Bool] = []
        for offset in [0, 0, 0, 400, 600, 700, 60_000, 60_000, 60_000] as [Int64] { taken.append(bucket.take(now: t0 + .milliseconds(offset))) }
        // Full (2), empty, 0.8 of a token at 400 ms, 1.2 at 600 ms, then full again and no more.
        #expect(taken == [true, true, false, false, true, false, true, true, false])
    }

    @Test("The design document's EnvoyFilter loads, and is said loudly to do nothing in Envoy (no filter_enabled), with the fix; so it refuses nothing")
    func designDocument() throws {
        let loaded = try IstioPolicyLoader.load(yaml: """
            apiVersion: networking.istio.io/v1beta1
            kind: EnvoyFilter
            metadata:
              name: mcp-rate-limit
            spec:
              configPatches:
              - applyTo: HTTP_FILTER
                patch:
                  operation: INSERT_BEFORE
                  value:
                    name: envoy.filters.http.local_ratelimit
                    typed_config:
                      token_bucket:
                        max_tokens: 1000
                        tokens_per_fill: 1000
                        fill_interval: 60s
              - applyTo: CLUSTER
                patch: {operation: MERGE, value: {connect_timeout: 1s}}
            """, file: "ef.yaml")
        let warnings = loaded.warnings.map(\.description)
        #expect(warnings.contains { $0.contains("ef.yaml:1:1") && $0.contains("v1alpha3 only") })
        #expect(warnings.contains { $0.contains("ef.yaml:10:") && $0.contains("Envoy does NOT run this rate limit") && $0.contains("filter_enabled: {runtime_key: local_rate_limit_enabled") })
        #expect(warnings.contains { $0.contains("no '@type'") })
        #expect(warnings.contains { $0.contains("ef.yaml:17:") && $0.contains("applyTo CLUSTER") })
        // Context ANY in namespace default: not the gateway's (istio-system), but the inbound
        // limit of every workload of default, which the gateway runs for what it delivers.
        let limits = LocalRateLimits(loaded.envoyFilters, gatewayLabels: ["istio": "eastwestgateway"], gatewayNamespace: "istio-system")
        #expect(limits.gateway.isEmpty)
        let echo = ServiceKey(host: "echo.default.svc.cluster.local", port: 8080)
        let inbound = limits.inbound(for: echo, namespace: "default", labels: [["app": "echo"]])
        #expect(inbound.count == 1)
        #expect(limits.inbound(for: ServiceKey(host: "a.other.svc.cluster.local", port: 80), namespace: "other", labels: []).isEmpty)
        let limit = try #require(LocalRateLimits.pick(inbound, routeName: "")).limit
        #expect(limit.settings.maxTokens == 1000 && limit.settings.fillInterval == .seconds(60) && limit.settings.enabledPerMillion == 0)
        #expect(limits.inbound(for: echo, namespace: "default", labels: [])[0].limit === limit, "one bucket per service, kept across requests")
        for _ in 0..<2000 { #expect(limit.check(enabledRoll: 0, enforcedRoll: 0) == .pass) }
    }

    /// Istio's local rate-limit task (tasks/policy-enforcement/rate-limit) as users paste it
    /// (Tests/Fixtures/istio-tasks): the filter with its bucket at productpage's inbound
    /// sidecar, then the same limit as a route's.
    static func task(_ name: String) throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try String(contentsOf: root.appendingPathComponent("Fixtures/istio-tasks/\(name).yaml"), encoding: .utf8)
    }

    @Test("Istio's local rate-limit task loads without a warning, as the filter's bucket or the route's: productpage's workloads get 4 requests a minute, other services none, the gateway none")
    func istioTask() throws {
        let productpage = ServiceKey(host: "productpage.default.svc.cluster.local", port: 9080)
        for (name, yaml) in [("filter level", try Self.task("local-rate-limit")), ("route level", try Self.task("local-rate-limit-per-route"))] {
            let loaded = try IstioPolicyLoader.load(yaml: yaml, file: "task.yaml")
            #expect(loaded.warnings.isEmpty, "\(name): \(loaded.warnings)")
            let limits = LocalRateLimits(loaded.envoyFilters, gatewayLabels: ["istio": "eastwestgateway"], gatewayNamespace: "istio-system")
            #expect(limits.gateway.isEmpty, "\(name)")
            #expect(limits.inbound(for: ServiceKey(host: "reviews.default.svc.cluster.local", port: 9080), namespace: "default", labels: [["app": "reviews"]]).isEmpty)
            let limit = try #require(LocalRateLimits.pick(limits.inbound(for: productpage, namespace: "default", labels: [["app": "productpage"]]), routeName: ""),
                                     "\(name)").limit
            let verdicts = (0..<5).map { _ in limit.check(enabledRoll: 0, enforcedRoll: 0) }
            #expect(verdicts == [.pass, .pass, .pass, .pass, .refuse], "\(name)")
            #expect(HTTPLocalReply.rateLimited(limit.settings).headers.contains { $0 == ("x-local-rate-limit", "true") })
        }
        // The route patch names port 9080: another port of productpage's workloads has none.
        let routed = try IstioPolicyLoader.load(yaml: try Self.task("local-rate-limit-per-route"), file: "task.yaml")
        let limits = LocalRateLimits(routed.envoyFilters, gatewayLabels: [:], gatewayNamespace: "istio-system")
        #expect(LocalRateLimits.pick(limits.inbound(for: ServiceKey(host: "productpage.default.svc.cluster.local", port: 9443), namespace: "default",
                                                    labels: [["app": "productpage"]]), routeName: "") == nil)
    }

    @Test("filter_enabled without filter_enforced counts and lets through; with both, refusals once the bucket is empty; a status below 400 becomes 429")
    func enforcement() {
        var settings = LocalRateLimit.Settings(statPrefix: "t", maxTokens: 1, tokensPerFill: 1, fillInterval: .seconds(60),
                                               enabledPerMillion: 1_000_000, enforcedPerMillion: 0, origin: "test")
        let counted = LocalRateLimit(settings)
        #expect(counted.check(enabledRoll: 0, enforcedRoll: 0) == .pass)
        #expect(counted.check(enabledRoll: 0, enforcedRoll: 0) == .limitedNotEnforced)
        settings.enforcedPerMillion = 1_000_000
        let enforced = LocalRateLimit(settings)
        #expect(enforced.check(enabledRoll: 0, enforcedRoll: 0) == .pass)
        #expect(enforced.check(enabledRoll: 0, enforcedRoll: 0) == .refuse)
        #expect(HTTPLocalReply.rateLimited(settings).status.code == 429 && HTTPLocalReply.rateLimited(settings).flags == [.rateLimited])
    }

    @Test("A NETWORK_FILTER envoy.filters.network.local_ratelimit: the chains it names (tcp_proxy: TCP routes only), its listener port, one token per new connection; runtime_enabled false turns it off")
    func connectionLimit() throws {
        func limits(_ chain: String, port: Int? = nil, enabled: Bool = true) throws -> LocalRateLimits {
            let loaded = try IstioPolicyLoader.load(yaml: """
                apiVersion: networking.istio.io/v1alpha3
                kind: EnvoyFilter
                metadata: {name: conn, namespace: istio-system}
                spec:
                  configPatches:
                  - applyTo: NETWORK_FILTER
                    match: {context: GATEWAY, listener: {\(port.map { "portNumber: \($0), " } ?? "")filterChain: {filter: {name: \(chain)}}}}
                    patch:
                      operation: INSERT_FIRST
                      value:
                        name: envoy.filters.network.local_ratelimit
                        typed_config:
                          "@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit
                          stat_prefix: conn
                          token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 60s}
                          runtime_enabled: {runtime_key: conn_enabled, default_value: \(enabled)}
                """, file: "conn.yaml")
            #expect(loaded.warnings.isEmpty, "\(loaded.warnings)")
            return LocalRateLimits(loaded.envoyFilters, gatewayLabels: [:], gatewayNamespace: "istio-system")
        }
        let tcp = Route(service: ServiceKey(host: "db.default.svc.cluster.local", port: 5432), selector: [:], protocol: .tcp)
        let http = Route(service: ServiceKey(host: "web.default.svc.cluster.local", port: 80), selector: [:], protocol: .http)
        let tcpOnly = try limits("envoy.filters.network.tcp_proxy")
        #expect((0..<5).map { _ in tcpOnly.admitConnection(to: http, listenerPort: 15443) == nil } == [true, true, true, true, true])
        #expect((0..<3).map { _ in tcpOnly.admitConnection(to: tcp, listenerPort: 15443) == nil } == [true, true, false])
        let otherPort = try limits("envoy.filters.network.tcp_proxy", port: 15021)
        #expect((0..<3).allSatisfy { _ in otherPort.admitConnection(to: tcp, listenerPort: 15443) == nil })
        let off = try limits("envoy.filters.network.tcp_proxy", enabled: false)
        #expect((0..<3).allSatisfy { _ in off.admitConnection(to: tcp, listenerPort: 15443) == nil })
        // Without a token bucket Envoy rejects the filter: an error at its line.
        #expect(throws: ConfigErrors.self) {
            try IstioPolicyLoader.load(yaml: """
                apiVersion: networking.istio.io/v1alpha3
                kind: EnvoyFilter
                metadata: {name: conn, namespace: istio-system}
                spec:
                  configPatches:
                  - applyTo: NETWORK_FILTER
                    patch: {operation: INSERT_FIRST, value: {name: envoy.filters.network.local_ratelimit, typed_config: {stat_prefix: c}}}
                """, file: "conn.yaml")
        }
    }

    /// A gateway filter with a 10-a-minute default bucket and descriptors, and a route patch
    /// whose `rate_limits` make the request's descriptors, as users write them.
    static func descriptorLimits(_ descriptors: String, actions: String, extra: String = "") throws -> (LocalRateLimits, [ConfigError]) {
        let loaded = try IstioPolicyLoader.load(yaml: """
            apiVersion: networking.istio.io/v1alpha3
            kind: EnvoyFilter
            metadata: {name: by-path, namespace: istio-system}
            spec:
              configPatches:
              - applyTo: HTTP_FILTER
                match: {context: GATEWAY}
                patch:
                  operation: INSERT_BEFORE
                  value:
                    name: envoy.filters.http.local_ratelimit
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                      stat_prefix: by_path
                      token_bucket: {max_tokens: 10, tokens_per_fill: 10, fill_interval: 60s}
                      filter_enabled: {runtime_key: e, default_value: {numerator: 100, denominator: HUNDRED}}
                      filter_enforced: {runtime_key: f, default_value: {numerator: 100, denominator: HUNDRED}}
                      enable_x_ratelimit_headers: DRAFT_VERSION_03
            \(extra)
                      descriptors:
            \(descriptors)
              - applyTo: HTTP_ROUTE
                match: {context: GATEWAY}
                patch:
                  operation: MERGE
                  value:
                    route:
                      rate_limits:
            \(actions)
            """, file: "limits.yaml")
        return (LocalRateLimits(loaded.envoyFilters, gatewayLabels: [:], gatewayNamespace: "istio-system"), loaded.warnings)
    }

    static func request(_ path: String, headers: [(String, String)] = [], from address: String = "10.1.2.3") -> RateLimitRequest {
        RateLimitRequest(facts: HTTPRequestFacts(method: "GET", path: path, authority: "web.bench.svc.cluster.local", headers: HTTPHeaders(headers)),
                         remoteAddress: address, sourceCluster: "gw.istio-system", destinationCluster: "outbound|80||web.bench.svc.cluster.local")
    }

    @Test("Descriptors from the route's rate_limits (request_headers :path): /slow has a bucket of 2 and also drains the default bucket; other paths only the default; x-ratelimit-* speak of the bucket that matched")
    func descriptorsFromRouteActions() throws {
        let (limits, warnings) = try Self.descriptorLimits("""
                      - entries: [{key: path, value: /slow}]
                        token_bucket: {max_tokens: 2, tokens_per_fill: 2, fill_interval: 120s}
            """, actions: """
                      - actions: [{request_headers: {header_name: ":path", descriptor_key: path}}]
            """)
        #expect(warnings.isEmpty, "\(warnings)")
        let picked = try #require(LocalRateLimits.pick(limits.gateway, routeName: ""))
        #expect(picked.descriptors(for: Self.request("/slow")) == [RateLimitDescriptor([.init(key: "path", value: "/slow")])])
        let slow = (0..<3).map { _ in picked.limit.consult(enabledRoll: 0, enforcedRoll: 0, descriptors: picked.descriptors(for: Self.request("/slow"))) }
        #expect(slow.map(\.?.verdict) == [.pass, .pass, .refuse])
        #expect(slow.map(\.?.limit) == [2, 2, 2] && slow.map(\.?.remaining) == [1, 0, 0])
        // The two /slow requests that went through took default tokens too (always_consume_default_token_bucket).
        let other = (0..<9).map { _ in picked.limit.consult(enabledRoll: 0, enforcedRoll: 0, descriptors: picked.descriptors(for: Self.request("/other"))) }
        #expect(other.map(\.?.verdict) == Array(repeating: .pass, count: 8) + [.refuse])
        #expect(other.first??.limit == 10 && other.first??.remaining == 7)
    }

    @Test("always_consume_default_token_bucket: false leaves the default bucket to requests no descriptor matched; matched descriptors drain slowest first, and a refusal leaves the faster one's tokens")
    func descriptorOrder() throws {
        let (limits, warnings) = try Self.descriptorLimits("""
                      - entries: [{key: generic_key, value: everyone}]
                        token_bucket: {max_tokens: 5, tokens_per_fill: 5, fill_interval: 60s}
                      - entries: [{key: client, value: batch}]
                        token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s}
            """, actions: """
                      - actions: [{generic_key: {descriptor_value: everyone}}]
                      - actions: [{request_headers: {header_name: x-client, descriptor_key: client}}]
            """, extra: "          always_consume_default_token_bucket: false")
        #expect(warnings.isEmpty, "\(warnings)")
        let picked = try #require(LocalRateLimits.pick(limits.gateway, routeName: ""))
        let batch = Self.request("/", headers: [("x-client", "batch")])
        #expect(picked.descriptors(for: batch).map(\.description) == ["generic_key=everyone", "client=batch"])
        // The batch descriptor (1 a minute) is the slower: the second batch request is refused
        // by it before it costs an `everyone` token.
        let verdicts = (0..<2).map { _ in picked.limit.check(enabledRoll: 0, enforcedRoll: 0, descriptors: picked.descriptors(for: batch)) }
        #expect(verdicts == [.pass, .refuse])
        let everyone = (0..<5).map { _ in picked.limit.check(enabledRoll: 0, enforcedRoll: 0, descriptors: picked.descriptors(for: Self.request("/"))) }
        #expect(everyone == [.pass, .pass, .pass, .pass, .refuse], "4 left after the one batch request took one")
        // Nothing took from the default bucket: a request without descriptors still has all 10.
        #expect(picked.limit.consult(enabledRoll: 0, enforcedRoll: 0)?.remaining == 9)
    }

    @Test("Every rate-limit action makes its entry as Envoy's: a missing header drops the descriptor unless skip_if_absent; header_value_match with expect_match; remote and masked addresses; clusters; query parameters")
    func actions() throws {
        func entry(_ actions: [RateLimitPolicyEntry.Action], _ request: RateLimitRequest = LocalRateLimitTests.request("/a?user=7")) -> String? {
            RateLimitPolicyEntry(actions: actions).descriptor(for: request)?.description
        }
        #expect(entry([.requestHeaders(header: "x-user", key: "user", skipIfAbsent: false), .genericKey(key: "generic_key", value: "g")]) == nil)
        #expect(entry([.requestHeaders(header: "x-user", key: "user", skipIfAbsent: true), .genericKey(key: "generic_key", value: "g")]) == "generic_key=g")
        #expect(entry([.requestHeaders(header: ":method", key: "m", skipIfAbsent: false), .remoteAddress]) == "m=GET, remote_address=10.1.2.3")
        #expect(entry([.maskedRemoteAddress(v4PrefixLength: 16, v6PrefixLength: 64)]) == "masked_remote_address=10.1.0.0/16")
        #expect(entry([.maskedRemoteAddress(v4PrefixLength: 32, v6PrefixLength: 64)], Self.request("/", from: "2001:db8:1:2:3::9")) == "masked_remote_address=2001:db8:1:2::/64")
        #expect(entry([.sourceCluster, .destinationCluster]) == "source_cluster=gw.istio-system, destination_cluster=outbound|80||web.bench.svc.cluster.local")
        #expect(entry([.queryParameters(parameter: "user", key: "u", skipIfAbsent: false)]) == "u=7")
        #expect(entry([.queryParameters(parameter: "team", key: "t", skipIfAbsent: false)]) == nil)
        let isAPI = HeaderMatcher(name: ":path", match: .prefix("/api/", ignoreCase: false))
        #expect(entry([.headerValueMatch(key: "header_match", value: "api", expectMatch: true, headers: [isAPI])], Self.request("/api/x")) == "header_match=api")
        #expect(entry([.headerValueMatch(key: "header_match", value: "api", expectMatch: true, headers: [isAPI])]) == nil)
        #expect(entry([.headerValueMatch(key: "anon", value: "yes", expectMatch: false, headers: [HeaderMatcher(name: "x-user-auth", match: nil)])]) == "anon=yes",
                "the question from users: limit requests without a header")
        // Envoy's HeaderMatcher on a missing header: only present_match false holds (inverted: true).
        let missing = Self.request("/")
        #expect(!HeaderMatcher(name: "x-a", match: .exact("", ignoreCase: false)).matches(missing))
        #expect(HeaderMatcher(name: "x-a", match: .exact("", ignoreCase: false), treatMissingAsEmpty: true).matches(missing))
        #expect(HeaderMatcher(name: "x-a", match: nil, present: false).matches(missing))
        #expect(HeaderMatcher(name: "x-a", match: nil, invert: true).matches(missing))
        #expect(!HeaderMatcher(name: "x-a", match: .suffix("z", ignoreCase: false), invert: true).matches(missing))
        #expect(HeaderMatcher(name: "x-a", match: .contains("MID", ignoreCase: true)).matches(Self.request("/", headers: [("x-a", "a-mid-b")])))
        #expect(HeaderMatcher(name: "x-a", match: .suffix("-b", ignoreCase: false)).matches(Self.request("/", headers: [("x-a", "a-mid-b")])))
    }

    @Test("What Envoy rejects is an error at its line: a descriptor interval that is not a multiple of the filter's, a duplicate descriptor, an action without its key; actions EastWest does not carry out warn")
    func descriptorErrors() throws {
        func problems(_ descriptors: String, actions: String) -> [String] {
            do {
                let (_, warnings) = try Self.descriptorLimits(descriptors, actions: actions)
                return warnings.map(\.description)
            } catch let errors as ConfigErrors { return errors.errors.map(\.description) } catch { return ["\(error)"] }
        }
        let good = "          - actions: [{remote_address: {}}]"
        #expect(problems("""
                      - entries: [{key: remote_address, value: 10.0.0.1}]
                        token_bucket: {max_tokens: 1, fill_interval: 90s}
            """, actions: good).contains { $0.contains("limits.yaml:") && $0.contains("not a multiple of token bucket fill timer") })
        #expect(problems("""
                      - entries: [{key: a, value: b}]
                        token_bucket: {max_tokens: 1, fill_interval: 60s}
                      - entries: [{key: a, value: b}]
                        token_bucket: {max_tokens: 2, fill_interval: 60s}
            """, actions: good).contains { $0.contains("duplicate descriptor in the local rate descriptor: a=b") })
        let descriptor = """
                      - entries: [{key: a, value: b}]
                        token_bucket: {max_tokens: 1, fill_interval: 60s}
            """
        let missingKey = problems(descriptor, actions: "          - actions: [{request_headers: {header_name: x-a}}]")
        #expect(missingKey.contains { $0.contains("limits.yaml:") && $0.contains("rate_limits[0].actions[0]: request_headers needs header_name and descriptor_key") }, "\(missingKey)")
        let metadata = problems(descriptor, actions: "          - actions: [{metadata: {descriptor_key: a, metadata_key: {key: k, path: [{key: p}]}}}]")
        #expect(metadata.contains { $0.contains("warning") && $0.contains("metadata action, which EastWest does not carry out") }, "\(metadata)")
    }

    @Test("local_rate_limit_per_downstream_connection: each connection has buckets of its own, kept across its requests")
    func perConnection() throws {
        let (limits, _) = try Self.descriptorLimits("""
                      - entries: [{key: a, value: b}]
                        token_bucket: {max_tokens: 1, fill_interval: 60s}
            """, actions: "          - actions: [{remote_address: {}}]", extra: "          local_rate_limit_per_downstream_connection: true")
        let limit = try #require(LocalRateLimits.pick(limits.gateway, routeName: "")).limit
        #expect(limit.settings.perDownstreamConnection)
        var first: [ObjectIdentifier: LocalRateLimit.ConnectionBuckets] = [:], second: [ObjectIdentifier: LocalRateLimit.ConnectionBuckets] = [:]
        let one = (0..<11).map { _ in limit.consult(enabledRoll: 0, enforcedRoll: 0, connectionBuckets: &first)?.verdict }
        #expect(one == Array(repeating: .pass, count: 10) + [.refuse])
        #expect(limit.consult(enabledRoll: 0, enforcedRoll: 0, connectionBuckets: &second)?.verdict == .pass, "another connection starts full")
    }

    @Test("A SIDECAR_INBOUND network rate limit: the selected workloads' connections, one bucket per service, its port and chain; the gateway's own connections take none")
    func inboundConnectionLimit() throws {
        let loaded = try IstioPolicyLoader.load(yaml: """
            apiVersion: networking.istio.io/v1alpha3
            kind: EnvoyFilter
            metadata: {name: db-connections, namespace: default}
            spec:
              workloadSelector: {labels: {app: db}}
              configPatches:
              - applyTo: NETWORK_FILTER
                match: {context: SIDECAR_INBOUND, listener: {portNumber: 5432}}
                patch:
                  operation: INSERT_FIRST
                  value:
                    name: envoy.filters.network.local_ratelimit
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit
                      stat_prefix: db
                      token_bucket: {max_tokens: 2, fill_interval: 60s}
            """, file: "db.yaml")
        #expect(loaded.warnings.isEmpty, "\(loaded.warnings)")
        let limits = LocalRateLimits(loaded.envoyFilters, gatewayLabels: [:], gatewayNamespace: "istio-system")
        let db = Route(service: ServiceKey(host: "db.default.svc.cluster.local", port: 5432), selector: [:], protocol: .tcp)
        let other = Route(service: ServiceKey(host: "cache.default.svc.cluster.local", port: 5432), selector: [:], protocol: .tcp)
        #expect((0..<3).map { _ in limits.admitInboundConnection(to: db, namespace: "default", labels: [["app": "db"]]) == nil } == [true, true, false])
        #expect(limits.admitInboundConnection(to: other, namespace: "default", labels: [["app": "cache"]]) == nil, "not selected")
        #expect(limits.admitInboundConnection(to: Route(service: ServiceKey(host: "db.default.svc.cluster.local", port: 80), selector: [:], protocol: .tcp),
                                              namespace: "default", labels: [["app": "db"]]) == nil, "another port")
        #expect(limits.admitConnection(to: db, listenerPort: 15443) == nil, "the gateway's own listener")
    }

    @Test("VIRTUAL_HOST patches: their rate_limits make descriptors when the route has none (vh_rate_limits OVERRIDE), with the route's under INCLUDE or include_vh_rate_limits, never under IGNORE; their bucket applies below a route's own")
    func virtualHost() throws {
        func limits(option: String? = nil, routeInclude: Bool = false, routeActions: Bool = true) throws -> LocalRateLimits {
            let loaded = try IstioPolicyLoader.load(yaml: """
                apiVersion: networking.istio.io/v1alpha3
                kind: EnvoyFilter
                metadata: {name: vh, namespace: istio-system}
                spec:
                  configPatches:
                  - applyTo: HTTP_FILTER
                    match: {context: GATEWAY}
                    patch:
                      operation: INSERT_BEFORE
                      value:
                        name: envoy.filters.http.local_ratelimit
                        typed_config:
                          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                          stat_prefix: vh
                          token_bucket: {max_tokens: 10, fill_interval: 60s}
                          filter_enabled: {runtime_key: e, default_value: {numerator: 100, denominator: HUNDRED}}
                          filter_enforced: {runtime_key: f, default_value: {numerator: 100, denominator: HUNDRED}}
                \(option.map { "          vh_rate_limits: \($0)" } ?? "")
                          descriptors:
                          - {entries: [{key: generic_key, value: host-wide}], token_bucket: {max_tokens: 1, fill_interval: 60s}}
                          - {entries: [{key: route, value: mine}], token_bucket: {max_tokens: 1, fill_interval: 60s}}
                  - applyTo: VIRTUAL_HOST
                    match: {context: GATEWAY, routeConfiguration: {vhost: {name: "web.bench.svc.cluster.local:80"}}}
                    patch:
                      operation: MERGE
                      value:
                        rate_limits: [{actions: [{generic_key: {descriptor_value: host-wide}}]}]
                  - applyTo: HTTP_ROUTE
                    match: {context: GATEWAY}
                    patch:
                      operation: MERGE
                      value:
                        route:
                \(routeInclude ? "          include_vh_rate_limits: true" : "")
                          rate_limits: [{actions: [{generic_key: {descriptor_key: route, descriptor_value: \(routeActions ? "mine" : "other")}}]}]
                """, file: "vh.yaml")
            #expect(loaded.warnings.isEmpty, "\(loaded.warnings)")
            return LocalRateLimits(loaded.envoyFilters, gatewayLabels: [:], gatewayNamespace: "istio-system")
        }
        func descriptors(_ limits: LocalRateLimits) throws -> [String] {
            try #require(LocalRateLimits.pick(limits.gateway, routeName: "")).descriptors(for: Self.request("/")).map(\.description)
        }
        #expect(try descriptors(limits()) == ["route=mine"], "OVERRIDE: the route has its own")
        #expect(try descriptors(limits(option: "INCLUDE")) == ["route=mine", "generic_key=host-wide"])
        #expect(try descriptors(limits(routeInclude: true)) == ["route=mine", "generic_key=host-wide"])
        #expect(try descriptors(limits(option: "IGNORE", routeInclude: false)) == ["route=mine"])
        #expect(throws: ConfigErrors.self) { try limits(option: "SOMETIMES") }
    }
}
