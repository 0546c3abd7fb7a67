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
        /// Where it was written, for the log and `eastwest validate`.
        package var origin: String

        package static func == (a: Settings, b: Settings) -> Bool {
            a.statPrefix == b.statPrefix && a.maxTokens == b.maxTokens && a.tokensPerFill == b.tokensPerFill && a.fillInterval == b.fillInterval
                && a.enabledPerMillion == b.enabledPerMillion && a.enforcedPerMillion == b.enforcedPerMillion && a.status == b.status
                && a.responseHeaders.elementsEqual(b.responseHeaders, by: { $0 == $1 }) && a.origin == b.origin
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

    private static func sanitized(_ prefix: String) -> String {
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
        guard enabledRoll % 1_000_000 < UInt64(settings.enabledPerMillion) else { return .pass }
        let counters = handles
        counters.enabled.increment()
        if bucket.withLock({ $0.take(now: .now) }) {
            counters.ok.increment()
            return .pass
        }
        counters.rateLimited.increment()
        guard enforcedRoll % 1_000_000 < UInt64(settings.enforcedPerMillion) else { return .limitedNotEnforced }
        counters.enforced.increment()
        return .refuse
    }
}
