import Foundation
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
        let limit = try #require(LocalRateLimits.pick(inbound, routeName: ""))
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
                                     "\(name)")
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
}
