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
        /// `descriptors`: buckets of their own for requests whose rate-limit actions produce
        /// exactly these entries.
        package var descriptors: [Descriptor] = []
        /// The filter's own `rate_limits` (Envoy 1.33+): when set, they make the request's
        /// descriptors instead of the route's `rate_limits`.
        package var rateLimits: [RateLimitPolicyEntry] = []
        /// `stage`: only `rate_limits` entries of this stage make descriptors.
        package var stage = 0
        /// `always_consume_default_token_bucket` (default true): a request a descriptor matched
        /// takes a token from the default bucket too.
        package var alwaysConsumeDefaultTokenBucket = true
        /// `local_rate_limit_per_downstream_connection`: every downstream connection has buckets
        /// of its own.
        package var perDownstreamConnection = false
        /// `vh_rate_limits`: whether the virtual host's `rate_limits` make descriptors too.
        package var virtualHostRateLimits = VirtualHostRateLimits.override

        /// Envoy's `VhRateLimitsOptions`.
        package enum VirtualHostRateLimits: Sendable, Equatable {
            /// The virtual host's only when the route has none (the default).
            case override
            /// The route's, then the virtual host's.
            case include
            /// The route's only.
            case ignore
        }

        package static func == (a: Settings, b: Settings) -> Bool {
            a.statPrefix == b.statPrefix && a.maxTokens == b.maxTokens && a.tokensPerFill == b.tokensPerFill && a.fillInterval == b.fillInterval
                && a.enabledPerMillion == b.enabledPerMillion && a.enforcedPerMillion == b.enforcedPerMillion && a.status == b.status
                && a.responseHeaders.elementsEqual(b.responseHeaders, by: { $0 == $1 }) && a.origin == b.origin
                && a.xRateLimitHeaders == b.xRateLimitHeaders && a.descriptors == b.descriptors && a.rateLimits == b.rateLimits
                && a.stage == b.stage && a.alwaysConsumeDefaultTokenBucket == b.alwaysConsumeDefaultTokenBucket
                && a.perDownstreamConnection == b.perDownstreamConnection && a.virtualHostRateLimits == b.virtualHostRateLimits
        }
    }

    /// One `descriptors` entry: its entries and its token bucket.
    package struct Descriptor: Sendable, Equatable {
        package var descriptor: RateLimitDescriptor
        package var maxTokens: Int
        package var tokensPerFill: Int
        package var fillInterval: Duration

        package init(_ descriptor: RateLimitDescriptor, maxTokens: Int, tokensPerFill: Int, fillInterval: Duration) {
            self.descriptor = descriptor
            self.maxTokens = maxTokens
            self.tokensPerFill = tokensPerFill
            self.fillInterval = fillInterval
        }
    }

    /// A downstream connection's own buckets for one limit, which it holds so that no other
    /// limit (after a reload) can take its identifier while the connection lives.
    package struct ConnectionBuckets {
        let limit: LocalRateLimit
        var buckets: Buckets
        init(_ limit: LocalRateLimit, now: ContinuousClock.Instant) { self.limit = limit; buckets = Buckets(limit.settings, now: now) }
    }

    /// The buckets of one scope (the filter's, or one downstream connection's): the default
    /// bucket and one per descriptor, in `settings.descriptors` order.
    package struct Buckets: Sendable {
        var `default`: TokenBucket
        var descriptors: [TokenBucket]

        init(_ settings: Settings, now: ContinuousClock.Instant) {
            `default` = TokenBucket(maxTokens: settings.maxTokens, tokensPerFill: settings.tokensPerFill, fillInterval: settings.fillInterval, now: now)
            descriptors = settings.descriptors.map { TokenBucket(maxTokens: $0.maxTokens, tokensPerFill: $0.tokensPerFill, fillInterval: $0.fillInterval, now: now) }
        }

        /// Envoy's `requestAllowed`: the matched descriptors' buckets, slowest-filling first, each
        /// give a token (the first that has none refuses, and the tokens already taken stay
        /// taken); then the default bucket, unless a descriptor matched and
        /// `alwaysConsumeDefault` is off. Returns whether the request may go, and the bucket its
        /// `x-ratelimit-*` headers speak of (nil: the default).
        mutating func take(matched: [Int], alwaysConsumeDefault: Bool, now: ContinuousClock.Instant) -> (allowed: Bool, bucket: Int?) {
            for index in matched where !descriptors[index].take(now: now) { return (false, index) }
            if matched.isEmpty || alwaysConsumeDefault {
                if !`default`.take(now: now) { return (false, nil) }
            }
            return (true, matched.first)
        }

        func bucket(_ index: Int?) -> TokenBucket { index.map { descriptors[$0] } ?? `default` }
    }

    package let settings: Settings
    private let buckets: Mutex<Buckets>
    /// Where each configured descriptor is in `settings.descriptors`.
    private let descriptorIndex: [RateLimitDescriptor: Int]
    /// Made at the first request: the config is compiled before the metrics system starts.
    private let counters = Mutex<Counters?>(nil)

    private struct Counters {
        let enabled, ok, rateLimited, enforced: Counter
    }

    package init(_ settings: Settings) {
        self.settings = settings
        buckets = Mutex(Buckets(settings, now: .now))
        descriptorIndex = Dictionary(settings.descriptors.enumerated().map { ($1.descriptor, $0) }, uniquingKeysWith: { first, _ in first })
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
    package func check(enabledRoll: UInt64, enforcedRoll: UInt64, descriptors: [RateLimitDescriptor] = []) -> Verdict {
        consult(enabledRoll: enabledRoll, enforcedRoll: enforcedRoll, descriptors: descriptors)?.verdict ?? .pass
    }

    /// What the buckets said about one request, for its `x-ratelimit-*` headers: the bucket of
    /// the descriptor that refused it or matched it first, else the default.
    package struct Consulted: Sendable, Equatable {
        package var verdict: Verdict
        package var limit: Int
        package var remaining: Int
        package var resetSeconds: Int
    }

    /// Whether the request's descriptors are worth making: only configured descriptors can
    /// match them (Envoy populates none otherwise).
    package var usesDescriptors: Bool { !settings.descriptors.isEmpty }

    /// `check`, with the buckets' state after it; nil when the filter did not look at the
    /// request (`filter_enabled` said no). `connectionBuckets` holds a downstream connection's
    /// own buckets (`local_rate_limit_per_downstream_connection`), made at its first request.
    package func consult(enabledRoll: UInt64, enforcedRoll: UInt64, descriptors: [RateLimitDescriptor] = [],
                         connectionBuckets: inout [ObjectIdentifier: ConnectionBuckets], now: ContinuousClock.Instant = .now) -> Consulted? {
        guard enabledRoll % 1_000_000 < UInt64(settings.enabledPerMillion) else { return nil }
        let counters = handles
        counters.enabled.increment()
        var matched = descriptors.compactMap { descriptorIndex[$0] }
        if matched.count > 1 {
            // Slowest fill first, so a refusing descriptor rarely costs the others a token;
            // stable, so equal rates keep the request's order.
            matched = matched.enumerated().sorted { a, b in
                let (rateA, rateB) = (settings.descriptors[a.element].fillRate, settings.descriptors[b.element].fillRate)
                return rateA != rateB ? rateA < rateB : a.offset < b.offset
            }.map(\.element)
        }
        func take(_ buckets: inout Buckets) -> (Bool, Int, Int, Int) {
            let (allowed, index) = buckets.take(matched: matched, alwaysConsumeDefault: settings.alwaysConsumeDefaultTokenBucket, now: now)
            let bucket = buckets.bucket(index)
            return (allowed, index.map { settings.descriptors[$0].maxTokens } ?? settings.maxTokens, bucket.remaining, bucket.secondsToNextToken)
        }
        let (taken, limit, remaining, reset): (Bool, Int, Int, Int)
        if settings.perDownstreamConnection {
            (taken, limit, remaining, reset) = take(&connectionBuckets[ObjectIdentifier(self), default: ConnectionBuckets(self, now: now)].buckets)
        } else {
            (taken, limit, remaining, reset) = buckets.withLock { take(&$0) }
        }
        if taken {
            counters.ok.increment()
            return Consulted(verdict: .pass, limit: limit, remaining: remaining, resetSeconds: reset)
        }
        counters.rateLimited.increment()
        guard enforcedRoll % 1_000_000 < UInt64(settings.enforcedPerMillion) else {
            return Consulted(verdict: .limitedNotEnforced, limit: limit, remaining: remaining, resetSeconds: reset)
        }
        counters.enforced.increment()
        return Consulted(verdict: .refuse, limit: limit, remaining: remaining, resetSeconds: reset)
    }

    /// `consult` for a request on a connection of its own.
    package func consult(enabledRoll: UInt64, enforcedRoll: UInt64, descriptors: [RateLimitDescriptor] = [],
                         now: ContinuousClock.Instant = .now) -> Consulted? {
        var own: [ObjectIdentifier: ConnectionBuckets] = [:]
        return consult(enabledRoll: enabledRoll, enforcedRoll: enforcedRoll, descriptors: descriptors, connectionBuckets: &own, now: now)
    }

    /// The `x-ratelimit-*` headers for a request `consulted` says about; none unless enabled.
    package func headers(_ consulted: Consulted) -> [(name: String, value: String)] {
        guard settings.xRateLimitHeaders else { return [] }
        return [("x-ratelimit-limit", String(consulted.limit)), ("x-ratelimit-remaining", String(consulted.remaining)),
                ("x-ratelimit-reset", String(consulted.resetSeconds))]
    }
}

extension LocalRateLimit.Descriptor {
    /// Envoy's sort key for matched descriptors: tokens per second.
    var fillRate: Double { Double(tokensPerFill) / max(fillInterval.seconds, 0.05) }
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
        package var level: Level
        /// nil: a route patch that only adds `rate_limits`.
        package var settings: LocalRateLimit.Settings?
        /// A route patch's `route.rate_limits` (a virtual host patch's `rate_limits`): the
        /// actions that make the request's descriptors.
        package var rateLimits: [RateLimitPolicyEntry] = []
    }

    /// Where a limit was written, most specific last: Envoy uses the route's settings, else the
    /// virtual host's, else the filter's.
    package enum Level: Sendable, Equatable {
        case filter
        case virtualHost
        /// `include_vh_rate_limits`: the virtual host's `rate_limits` count for this route too.
        case route(includeVirtualHostRateLimits: Bool)

        var isRoute: Bool { if case .route = self { true } else { false } }
    }

    /// A limit that applies, and the route name it is for (nil: any route).
    package struct Applied: Sendable {
        package var routeName: String?
        package var level: Level
        /// nil: only the route's `rate_limits`.
        package var limit: LocalRateLimit?
        package var rateLimits: [RateLimitPolicyEntry] = []
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
        var inboundConnectionRules: [InboundConnectionRule] = []
        let patches = EnvoyFilter.rateLimitPatches(filters)
        // A route patch needs the filter in the same workloads' chain.
        let inserted = patches.compactMap { filter, reading -> (String, [String: String]?)? in
            if case .filter = reading { return (filter.namespace, filter.workloadSelector?.labels) }
            return nil
        }
        for (filter, reading) in patches {
            let selector = filter.workloadSelector?.labels
            let context: LocalRateLimitPatch.Context, settings: LocalRateLimit.Settings?, port: Int?, routeName: String?, level: Level
            var rateLimits: [RateLimitPolicyEntry] = []
            switch reading {
            case .filter(let s, let c, _):
                guard let s else { continue }
                (settings, context, port, routeName, level) = (s, c, nil, nil, .filter)
            case .route(let s, let limits, let c, let p, let r, let scope, _):
                guard inserted.contains(where: { $0.0 == filter.namespace && $0.1 == selector }) else { continue }
                switch scope {
                case .route(let include): level = .route(includeVirtualHostRateLimits: include)
                case .virtualHost: level = .virtualHost
                }
                (settings, context, port, routeName) = (s, c, p, r)
                rateLimits = limits
            case .connections(let limit, let c, let chain, let port, _):
                if c != .inbound, filter.applies(toLabels: gatewayLabels, namespace: gatewayNamespace, root: root) {
                    connectionLimits.append(ConnectionRateLimit(limit, chain: chain, port: port))
                }
                if c != .gateway {
                    inboundConnectionRules.append(InboundConnectionRule(namespace: filter.namespace, selector: selector, chain: chain, port: port, settings: limit))
                }
                continue
            case .notRateLimit, .invalid: continue
            }
            if context != .inbound, filter.applies(toLabels: gatewayLabels, namespace: gatewayNamespace, root: root) {
                rules.append(Rule(scope: .gateway, port: nil, routeName: routeName, level: level, settings: settings, rateLimits: rateLimits))
            }
            if context != .gateway {
                rules.append(Rule(scope: .workloads(namespace: filter.namespace, selector: selector), port: port, routeName: routeName,
                                  level: level, settings: settings, rateLimits: rateLimits))
            }
        }
        self.rules = rules
        self.connections = connectionLimits
        self.inboundConnectionRules = inboundConnectionRules
        gateway = rules.filter { $0.scope == .gateway }.map {
            Applied(routeName: $0.routeName, level: $0.level, limit: $0.settings.map(LocalRateLimit.init), rateLimits: $0.rateLimits)
        }
    }

    /// The gateway's `envoy.filters.network.local_ratelimit`s: every new connection on a chain
    /// they cover takes a token from each.
    package let connections: [ConnectionRateLimit]

    package var isEmpty: Bool { rules.isEmpty && connections.isEmpty && inboundConnectionRules.isEmpty }

    /// A `SIDECAR_INBOUND` (or `ANY`) `envoy.filters.network.local_ratelimit`: the selected
    /// workloads' own connections, which this gateway opens when it delivers a TCP connection
    /// to one of them itself — one bucket per service here, where Istio has one per pod.
    package struct InboundConnectionRule: Sendable, Equatable {
        package var namespace: String
        package var selector: [String: String]?
        package var chain: ConnectionRateLimit.Chain?
        /// The workload's port the listener match names (nil: any).
        package var port: Int?
        package var settings: ConnectionRateLimit.Settings
    }

    package let inboundConnectionRules: [InboundConnectionRule]
    private let inboundConnectionBuckets = Mutex<[Key: ConnectionRateLimit]>([:])

    /// Whether a TCP connection this gateway delivers to a workload of `service` (in
    /// `namespace`, its endpoints' labels) may be opened: a token from each inbound network rate
    /// limit covering it; false: the limit that refused it.
    package func admitInboundConnection(to route: Route, namespace: String?, labels: [[String: String]]) -> ConnectionRateLimit? {
        for (index, rule) in inboundConnectionRules.enumerated() {
            guard rule.settings.enabled, selects(namespace: rule.namespace, selector: rule.selector, port: rule.port,
                                                 service: route.service, serviceNamespace: namespace, labels: labels) else { continue }
            let limit = inboundConnectionBuckets.withLock { buckets in
                let key = Key(rule: index, service: route.service)
                if let made = buckets[key] { return made }
                let made = ConnectionRateLimit(rule.settings, chain: rule.chain, port: nil)
                buckets[key] = made
                return made
            }
            guard limit.covers(route, listenerPort: route.service.port) else { continue }
            if !limit.take() { return limit }
        }
        return nil
    }

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
        a.rules == b.rules && a.inboundConnectionRules == b.inboundConnectionRules
            && a.connections.elementsEqual(b.connections) { $0.settings == $1.settings && $0.chain == $1.chain && $0.port == $1.port }
    }

    /// Whether a workload-scoped filter (its namespace, or the root's for every namespace; its
    /// selector; the port its listener match names) covers `service`'s workloads.
    private func selects(namespace ruleNamespace: String, selector: [String: String]?, port: Int?, service: ServiceKey,
                         serviceNamespace: String?, labels: [[String: String]]) -> Bool {
        (ruleNamespace == root || ruleNamespace == serviceNamespace) && (port.map { $0 == service.port } ?? true)
            && (selector.map { selector in labels.contains { selector.selects($0) } } ?? true)
    }

    /// The inbound limits for requests to `service`, whose workloads are in `namespace` with
    /// these labels (its endpoints'), each with the bucket this gateway keeps for the service.
    package func inbound(for service: ServiceKey, namespace: String?, labels: [[String: String]]) -> [Applied] {
        var applied: [Applied] = []
        for (index, rule) in rules.enumerated() {
            guard case .workloads(let ruleNamespace, let selector) = rule.scope,
                  selects(namespace: ruleNamespace, selector: selector, port: rule.port, service: service, serviceNamespace: namespace, labels: labels)
            else { continue }
            let limit = rule.settings.map { settings in
                buckets.withLock { buckets in
                    if let made = buckets[Key(rule: index, service: service)] { return made }
                    let made = LocalRateLimit(settings)
                    buckets[Key(rule: index, service: service)] = made
                    return made
                }
            }
            applied.append(Applied(routeName: rule.routeName, level: rule.level, limit: limit, rateLimits: rule.rateLimits))
        }
        return applied
    }

    /// The limit a request runs into, and the `rate_limits` of its route and virtual host.
    package struct Picked {
        package var limit: LocalRateLimit
        package var routeRateLimits: [RateLimitPolicyEntry]
        package var virtualHostRateLimits: [RateLimitPolicyEntry] = []
        /// The route says `include_vh_rate_limits`.
        package var includeVirtualHost = false

        /// The request's descriptors (Envoy's order, the route's before the virtual host's):
        /// made only when the limit has descriptors to match them, by the filter's own
        /// `rate_limits` when it has them, else the route's and — as `vh_rate_limits` says —
        /// the virtual host's.
        package func descriptors(for request: @autoclosure () -> RateLimitRequest) -> [RateLimitDescriptor] {
            guard limit.usesDescriptors else { return [] }
            let entries: [RateLimitPolicyEntry]
            if !limit.settings.rateLimits.isEmpty {
                entries = limit.settings.rateLimits
            } else if includeVirtualHost {
                entries = routeRateLimits + virtualHostRateLimits
            } else {
                switch limit.settings.virtualHostRateLimits {
                case .include: entries = routeRateLimits + virtualHostRateLimits
                case .ignore: entries = routeRateLimits
                case .override: entries = routeRateLimits.isEmpty ? virtualHostRateLimits : routeRateLimits
                }
            }
            return entries.isEmpty ? [] : RateLimitPolicyEntry.descriptors(entries, stage: limit.settings.stage, for: request())
        }
    }

    /// Which of `applied` limits a request on the route named `routeName`: the first route
    /// patch with a bucket for it (by name, then any route), else the first virtual host patch
    /// with one, else the first filter-level bucket; with the `rate_limits` of every route and
    /// virtual host patch for it, in order (a MERGE appends repeated fields).
    package static func pick(_ applied: [Applied], routeName: String) -> Picked? {
        if applied.isEmpty { return nil }
        let forRoute = { (entry: Applied) in entry.level.isRoute && (entry.routeName == nil || entry.routeName == routeName) }
        guard let limit = applied.first(where: { $0.level.isRoute && $0.routeName == routeName && $0.limit != nil })?.limit
            ?? applied.first(where: { $0.level.isRoute && $0.routeName == nil && $0.limit != nil })?.limit
            ?? applied.first(where: { $0.level == .virtualHost && $0.limit != nil })?.limit
            ?? applied.first(where: { $0.level == .filter })?.limit else { return nil }
        var picked = Picked(limit: limit, routeRateLimits: [])
        // Nothing is gathered for the usual filter-only limit.
        guard applied.contains(where: { !$0.rateLimits.isEmpty }) else { return picked }
        for entry in applied {
            if forRoute(entry) {
                picked.routeRateLimits += entry.rateLimits
                if case .route(true) = entry.level { picked.includeVirtualHost = true }
            } else if entry.level == .virtualHost {
                picked.virtualHostRateLimits += entry.rateLimits
            }
        }
        return picked
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
