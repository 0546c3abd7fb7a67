import Metrics
import Synchronization

/// Envoy's token bucket as `AtomicTokenBucket` refills it: continuously, `tokensPerFill` every
/// `fillInterval`, never above `maxTokens`, starting full. Pure: time comes in as `now`.
package struct TokenBucket: Sendable, Equatable {
    package let maxTokens: Double
    package let tokensPerSecond: Double
    private var tokens: Double
    private var last: ContinuousClock.Instant

    package init(maxTokens: Int, tokensPerFill: Int, fillInterval: Duration, now: ContinuousClock.Instant) {
        self.maxTokens = Double(maxTokens)
        tokensPerSecond = Double(tokensPerFill) / max(fillInterval.seconds, 0.05)
        tokens = Double(maxTokens)
        last = now
    }

    /// Takes a token if there is one.
    package mutating func take(now: ContinuousClock.Instant) -> Bool {
        tokens = min(maxTokens, tokens + (now - last).seconds * tokensPerSecond)
        last = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    /// Whole tokens left (`x-ratelimit-remaining`).
    package var remaining: Int { Int(tokens) }

    /// Whole seconds until the next token (`x-ratelimit-reset`): 0 while one is there. Envoy's
    /// `resetSeconds`, which divides whole milliseconds by 1000 before its ceil.
    package var secondsToNextToken: Int {
        guard tokens < 1 else { return 0 }
        return Int((1 - tokens) / tokensPerSecond * 1000) / 1000
    }
}

/// `envoy.filters.http.local_ratelimit` at a gateway, as an EnvoyFilter configures it: one
/// bucket shared by every event loop (Envoy's filter-level bucket), the `filter_enabled` and
/// `filter_enforced` fractions, the status (429 unless a 4xx-or-above is given), the response
/// headers added to a refused request, and Envoy's counters.
package final class LocalRateLimit: Sendable, Equatable {
    package struct Settings: Sendable, Equatable {
        package var statPrefix: String
        package var maxTokens: Int
        package var tokensPerFill: Int
        package var fillInterval: Duration
        /// Parts per million of requests the filter looks at (absent: none, as in Envoy).
        package var enabledPerMillion: Int
        /// Parts per million of limited requests actually refused (absent: none).
        package var enforcedPerMillion: Int
        package var status: Int = 429
        package var responseHeaders: [(name: String, value: String)] = []
        /// `enable_x_ratelimit_headers: DRAFT_VERSION_03`: every response to a request the
        /// filter looked at says `x-ratelimit-limit`, `-remaining` and `-reset`.
        package var xRateLimitHeaders = false
        /// Where it was written, for the log and `eastwest validate`.
        package var origin: String

        package static func == (a: Settings, b: Settings) -> Bool {
            a.statPrefix == b.statPrefix && a.maxTokens == b.maxTokens && a.tokensPerFill == b.tokensPerFill && a.fillInterval == b.fillInterval
                && a.enabledPerMillion == b.enabledPerMillion && a.enforcedPerMillion == b.enforcedPerMillion && a.status == b.status
                && a.responseHeaders.elementsEqual(b.responseHeaders, by: { $0 == $1 }) && a.origin == b.origin
                && a.xRateLimitHeaders == b.xRateLimitHeaders
        }
    }

    package let settings: Settings
    private let bucket: Mutex<TokenBucket>
    /// Made at the first request: the config is compiled before the metrics system starts.
    private let counters = Mutex<Counters?>(nil)

    private struct Counters {
        let enabled, ok, rateLimited, enforced: Counter
    }

    package init(_ settings: Settings) {
        self.settings = settings
        bucket = Mutex(TokenBucket(maxTokens: settings.maxTokens, tokensPerFill: settings.tokensPerFill, fillInterval: settings.fillInterval, now: .now))
    }

    private var handles: Counters {
        counters.withLock { made in
            if let made { return made }
            let prefix = "envoy_\(Self.sanitized(settings.statPrefix))_http_local_rate_limit_"
            let new = Counters(enabled: Counter(label: prefix + "enabled"), ok: Counter(label: prefix + "ok"),
                               rateLimited: Counter(label: prefix + "rate_limited"), enforced: Counter(label: prefix + "enforced"))
            made = new
            return new
        }
    }

    package static func == (a: LocalRateLimit, b: LocalRateLimit) -> Bool { a.settings == b.settings }

    /// A stat prefix as a Prometheus name part.
    static func sanitized(_ prefix: String) -> String {
        String(prefix.map { $0.isLetter || $0.isNumber ? $0 : "_" })
    }

    package enum Verdict: Sendable, Equatable {
        /// Not looked at, or a token was there.
        case pass
        /// Out of tokens, counted but not enforced (`filter_enforced` says no).
        case limitedNotEnforced
        /// Refused: the local reply.
        case refuse
    }

    /// One request: the `filter_enabled` roll, a token, the `filter_enforced` roll.
    package func check(enabledRoll: UInt64, enforcedRoll: UInt64) -> Verdict {
        consult(enabledRoll: enabledRoll, enforcedRoll: enforcedRoll)?.verdict ?? .pass
    }

    /// What the bucket said about one request, for its `x-ratelimit-*` headers.
    package struct Consulted: Sendable, Equatable {
        package var verdict: Verdict
        package var remaining: Int
        package var resetSeconds: Int
    }

    /// `check`, with the bucket's state after it; nil when the filter did not look at the
    /// request (`filter_enabled` said no).
    package func consult(enabledRoll: UInt64, enforcedRoll: UInt64, now: ContinuousClock.Instant = .now) -> Consulted? {
        guard enabledRoll % 1_000_000 < UInt64(settings.enabledPerMillion) else { return nil }
        let counters = handles
        counters.enabled.increment()
        let (taken, remaining, reset) = bucket.withLock { bucket in
            let taken = bucket.take(now: now)
            return (taken, bucket.remaining, bucket.secondsToNextToken)
        }
        if taken {
            counters.ok.increment()
            return Consulted(verdict: .pass, remaining: remaining, resetSeconds: reset)
        }
        counters.rateLimited.increment()
        guard enforcedRoll % 1_000_000 < UInt64(settings.enforcedPerMillion) else {
            return Consulted(verdict: .limitedNotEnforced, remaining: remaining, resetSeconds: reset)
        }
        counters.enforced.increment()
        return Consulted(verdict: .refuse, remaining: remaining, resetSeconds: reset)
    }

    /// The `x-ratelimit-*` headers for a request `consulted` says about; none unless enabled.
    package func headers(_ consulted: Consulted) -> [(name: String, value: String)] {
        guard settings.xRateLimitHeaders else { return [] }
        return [("x-ratelimit-limit", String(settings.maxTokens)), ("x-ratelimit-remaining", String(consulted.remaining)),
                ("x-ratelimit-reset", String(consulted.resetSeconds))]
    }
}

/// The local rate limits EnvoyFilters set up around this gateway, as Envoy would run them:
/// the gateway's own (filter-level bucket, or a route's), and the selected workloads' inbound
/// ones (an Istio sidecar's, with `SIDECAR_INBOUND` or `ANY`), which this gateway runs for the
/// requests it delivers to those workloads itself — one bucket per service here, where Istio has
/// one per pod. A route's settings replace the filter's for that route (Envoy's
/// `typed_per_filter_config`); a route patch without the filter inserted for the same
/// workloads does nothing, as in Envoy.
package final class LocalRateLimits: Sendable, Equatable {
    package struct Rule: Sendable, Equatable {
        package enum Scope: Sendable, Equatable {
            case gateway
            /// Workloads of `namespace` (every namespace from the root) that `selector` selects (nil: all).
            case workloads(namespace: String, selector: [String: String]?)
        }
        package var scope: Scope
        /// The inbound port a route patch's virtual host names; nil: any.
        package var port: Int?
        /// The route a route patch names; nil: any (or the filter-level bucket).
        package var routeName: String?
        package var perRoute: Bool
        package var settings: LocalRateLimit.Settings
    }

    /// A limit that applies, and the route name it is for (nil: any route).
    package struct Applied: Sendable {
        package var routeName: String?
        package var perRoute: Bool
        package var limit: LocalRateLimit
    }

    package let rules: [Rule]
    /// The gateway's own, made once.
    package let gateway: [Applied]
    private let root: String
    /// Workload buckets, made at the first request to each service.
    private let buckets = Mutex<[Key: LocalRateLimit]>([:])
    private struct Key: Hashable { var rule: Int, service: ServiceKey }

    package init(_ filters: [EnvoyFilter], gatewayLabels: [String: String], gatewayNamespace: String, root: String = "istio-system") {
        self.root = root
        var rules: [Rule] = []
        var connectionLimits: [ConnectionRateLimit] = []
        let patches = EnvoyFilter.rateLimitPatches(filters)
        // A route patch needs the filter in the same workloads' chain.
        let inserted = patches.compactMap { filter, reading -> (String, [String: String]?)? in
            if case .filter = reading { return (filter.namespace, filter.workloadSelector?.labels) }
            return nil
        }
        for (filter, reading) in patches {
            let selector = filter.workloadSelector?.labels
            let context: LocalRateLimitPatch.Context, settings: LocalRateLimit.Settings?, port: Int?, routeName: String?, perRoute: Bool
            switch reading {
            case .filter(let s, let c, _): (settings, context, port, routeName, perRoute) = (s, c, nil, nil, false)
            case .route(let s, let c, let p, let r, _):
                guard inserted.contains(where: { $0.0 == filter.namespace && $0.1 == selector }) else { continue }
                (settings, context, port, routeName, perRoute) = (s as LocalRateLimit.Settings?, c, p, r, true)
            case .connections(let limit, let c, let chain, let port, _):
                if c != .inbound, filter.applies(toLabels: gatewayLabels, namespace: gatewayNamespace, root: root) {
                    connectionLimits.append(ConnectionRateLimit(limit, chain: chain, port: port))
                }
                continue
            case .notRateLimit, .invalid: continue
            }
            guard let settings else { continue }
            if context != .inbound, filter.applies(toLabels: gatewayLabels, namespace: gatewayNamespace, root: root) {
                rules.append(Rule(scope: .gateway, port: nil, routeName: routeName, perRoute: perRoute, settings: settings))
            }
            if context != .gateway {
                rules.append(Rule(scope: .workloads(namespace: filter.namespace, selector: selector), port: port, routeName: routeName,
                                  perRoute: perRoute, settings: settings))
            }
        }
        self.rules = rules
        self.connections = connectionLimits
        gateway = rules.filter { $0.scope == .gateway }.map { Applied(routeName: $0.routeName, perRoute: $0.perRoute, limit: LocalRateLimit($0.settings)) }
    }

    /// The gateway's `envoy.filters.network.local_ratelimit`s: every new connection on a chain
    /// they cover takes a token from each.
    package let connections: [ConnectionRateLimit]

    package var isEmpty: Bool { rules.isEmpty && connections.isEmpty }

    /// Whether a new connection to `route` on the listener port may go on (a token from each
    /// network rate limit covering it); false: the limit that refused it.
    package func admitConnection(to route: Route, listenerPort: Int) -> ConnectionRateLimit? {
        for limit in connections where limit.covers(route, listenerPort: listenerPort) {
            if !limit.take() { return limit }
        }
        return nil
    }

    /// Same rules (their buckets are state, not configuration).
    package static func == (a: LocalRateLimits, b: LocalRateLimits) -> Bool {
        a.rules == b.rules && a.connections.elementsEqual(b.connections) { $0.settings == $1.settings && $0.chain == $1.chain && $0.port == $1.port }
    }

    /// The inbound limits for requests to `service`, whose workloads are in `namespace` with
    /// these labels (its endpoints'), each with the bucket this gateway keeps for the service.
    package func inbound(for service: ServiceKey, namespace: String?, labels: [[String: String]]) -> [Applied] {
        var applied: [Applied] = []
        for (index, rule) in rules.enumerated() {
            guard case .workloads(let ruleNamespace, let selector) = rule.scope,
                  ruleNamespace == root || ruleNamespace == namespace,
                  rule.port.map({ $0 == service.port }) ?? true,
                  selector.map({ selector in labels.contains { selector.selects($0) } }) ?? true else { continue }
            let limit = buckets.withLock { buckets in
                if let made = buckets[Key(rule: index, service: service)] { return made }
                let made = LocalRateLimit(rule.settings)
                buckets[Key(rule: index, service: service)] = made
                return made
            }
            applied.append(Applied(routeName: rule.routeName, perRoute: rule.perRoute, limit: limit))
        }
        return applied
    }

    /// Which of `applied` limits a request on the route named `routeName`: the first route
    /// patch for it (by name, then any route), else the first filter-level bucket.
    package static func pick(_ applied: [Applied], routeName: String) -> LocalRateLimit? {
        if applied.isEmpty { return nil }
        return applied.first { $0.perRoute && $0.routeName == routeName }?.limit
            ?? applied.first { $0.perRoute && $0.routeName == nil }?.limit
            ?? applied.first { !$0.perRoute }?.limit
    }
}

extension RouteConfiguration {
    /// The inbound rate limits of `service`'s workloads (its endpoints' labels anywhere in the
    /// mesh); empty when none applies.
    package func inboundRateLimits(for service: ServiceKey, endpoints: MeshEndpoints) -> [LocalRateLimits.Applied] {
        guard let localRateLimits else { return [] }
        let (namespace, labels) = Self.workloads(of: service, endpoints: endpoints)
        return localRateLimits.inbound(for: service, namespace: namespace, labels: labels)
    }
}

/// `envoy.filters.network.local_ratelimit` at the gateway: each new connection takes a token
/// when it is accepted, before its TLS handshake (Envoy's `onNewConnection`), and one that finds
/// none is closed at once (`local_ratelimit_close_over_limit`, flag `URX` as Envoy sets it);
/// counted as `envoy_local_rate_limit_<stat_prefix>_rate_limited`. One
/// bucket shared by the gateway's event loops. `runtime_enabled` false turns it off.
package final class ConnectionRateLimit: Sendable {
    package struct Settings: Sendable, Equatable {
        package var statPrefix: String
        package var maxTokens: Int
        package var tokensPerFill: Int
        package var fillInterval: Duration
        package var enabled = true
    }

    /// Which of Istio's filter chains a patch's `listener.filterChain.filter.name` picks.
    package enum Chain: Sendable, Equatable { case http, tcp }

    package let settings: Settings
    package let chain: Chain?
    package let port: Int?
    private let bucket: Mutex<TokenBucket>
    private let counter = Mutex<Counter?>(nil)

    package init(_ settings: Settings, chain: Chain? = nil, port: Int? = nil) {
        self.settings = settings
        self.chain = chain
        self.port = port
        bucket = Mutex(TokenBucket(maxTokens: settings.maxTokens, tokensPerFill: settings.tokensPerFill, fillInterval: settings.fillInterval, now: .now))
    }

    func covers(_ route: Route, listenerPort: Int) -> Bool {
        guard settings.enabled, port.map({ $0 == listenerPort }) ?? true else { return false }
        switch chain {
        case nil: return true
        case .http: return route.protocol?.isHTTP == true
        case .tcp: return route.protocol?.isHTTP != true
        }
    }

    /// A token for one new connection; false: none left (counted).
    package func take(now: ContinuousClock.Instant = .now) -> Bool {
        if bucket.withLock({ $0.take(now: now) }) { return true }
        counter.withLock { made in
            if made == nil {
                made = Counter(label: "envoy_local_rate_limit_\(LocalRateLimit.sanitized(settings.statPrefix))_rate_limited")
            }
            return made!
        }.increment()
        return false
    }
}
