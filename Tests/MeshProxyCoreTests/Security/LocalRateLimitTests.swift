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
        // Scoped to namespace default: not the gateway's (istio-system), which is said too.
        #expect(EnvoyFilter.localRateLimit(loaded.envoyFilters, labels: ["istio": "eastwestgateway"], namespace: "istio-system") == nil)
        #expect(EnvoyFilter.gatewayWarnings(loaded.envoyFilters, labels: ["istio": "eastwestgateway"], namespace: "istio-system").first?.contains("not this gateway") == true)
        let settings = try #require(EnvoyFilter.localRateLimit(loaded.envoyFilters, labels: [:], namespace: "default"))
        #expect(settings.maxTokens == 1000 && settings.fillInterval == .seconds(60) && settings.enabledPerMillion == 0)
        let limit = LocalRateLimit(settings)
        for _ in 0..<2000 { #expect(limit.check(enabledRoll: 0, enforcedRoll: 0) == .pass) }
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
}
