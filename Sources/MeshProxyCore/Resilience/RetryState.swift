/// What may be retried for a route, and how often. The TCP path retries connect failures only
/// (Envoy's TCP proxy `max_connect_attempts`, walking the plan's fallbacks in order); the HTTP
/// router carries out a VirtualService's `retries` as Envoy's router does (research note §4):
/// `retry_on` conditions, retriable status codes, per-try timeouts, jittered back-off, the
/// previous-hosts predicate and, with `retryRemoteLocalities`, the previous-priorities plugin.
package struct RetryPolicy: Sendable, Equatable {
    /// Attempts in all, the first included (Istio's `attempts` is retries: one less).
    package var maxAttempts: Int
    package var retryOn: Set<RetryCondition>
    /// `retriable-status-codes`: the bare codes of Istio's `retryOn`.
    package var retriableStatusCodes: Set<Int> = []
    /// Each attempt's own limit; nil: only the route's `timeout` bounds it.
    package var perTryTimeout: Duration?
    /// Envoy's `retry_back_off.base_interval` (25 ms unless set); zero: retry at once (TCP).
    package var backoffBase: Duration = .zero
    package var targets: TargetRule
    /// Envoy's `previous_hosts` predicate (Istio's default; `retryIgnorePreviousHosts: false`
    /// turns it off): a retry avoids the hosts tried before when it can.
    package var avoidPreviousHosts = true

    /// Where a retry may go, as a fresh look at the plan offers it.
    package enum TargetRule: Sendable, Equatable {
        /// The plan's pick, then its fallbacks in order (the TCP proxy's connect attempts).
        case walkPlan
        /// The priority the plan's load picks now, as Envoy with no retry priority plugin: a
        /// retry leaves the priority only when health moved the load (an ejection, a gateway
        /// found unreachable).
        case priorityLoad
        /// Envoy's `previous_priorities` with Istio's `update_frequency: 2`
        /// (`retryRemoteLocalities: true`): from the third attempt on, the priorities of the
        /// attempts so far are left out, every second attempt; when nothing is left, none is.
        case previousPriorities
    }

    package init(maxAttempts: Int, retryOn: Set<RetryCondition> = [.connectFailure], targets: TargetRule = .walkPlan) {
        self.maxAttempts = max(1, maxAttempts)
        self.retryOn = retryOn
        self.targets = targets
    }

    /// The TCP proxy's: connect failures, up to the gateway's `maxConnectAttempts`.
    package static func connectAttempts(_ attempts: Int) -> RetryPolicy { RetryPolicy(maxAttempts: attempts) }

    /// Istio's policy for an HTTP route whose VirtualService sets no `retries` (retry.go
    /// `DefaultPolicy`, since 1.24): 2 retries on connect-failure, refused-stream, unavailable,
    /// cancelled and (no) retriable status codes, avoiding previous hosts.
    package static let istioDefault: RetryPolicy = {
        var policy = RetryPolicy(maxAttempts: 3, retryOn: [.connectFailure, .refusedStream, .unavailable, .cancelled, .retriableStatusCodes],
                                 targets: .priorityLoad)
        policy.backoffBase = envoyBackoffBase
        return policy
    }()

    /// `upstream.base_retry_backoff_ms`.
    package static let envoyBackoffBase = Duration.milliseconds(25)

    /// No retries at all (`attempts: 0`).
    package static let none = RetryPolicy(maxAttempts: 1, retryOn: [], targets: .priorityLoad)

    /// Whether an attempt that ended so is retried under this policy (Envoy's
    /// `RetryStateImpl::wouldRetryFromHeaders` / `wouldRetryFromReset`).
    package func retries(_ outcome: AttemptOutcome) -> Bool {
        let anyReset = retryOn.contains(.serverError) || retryOn.contains(.gatewayError) || retryOn.contains(.reset)
        switch outcome {
        case .connectFailure:
            return anyReset || retryOn.contains(.connectFailure) || retryOn.contains(.resetBeforeRequest)
        case .refusedStream:
            return anyReset || retryOn.contains(.refusedStream) || retryOn.contains(.resetBeforeRequest)
        case .reset(let requestSent):
            return anyReset || (!requestSent && retryOn.contains(.resetBeforeRequest))
        case .perTryTimeout:
            // `onPerTryTimeoutCommon`: only the conditions that cover a reset retry it.
            return anyReset
        case .response(let status, let grpcStatus, let rateLimited):
            if retryOn.contains(.serverError), status >= 500 { return true }
            if retryOn.contains(.gatewayError), [502, 503, 504].contains(status) { return true }
            if retryOn.contains(.retriable4xx), status == 409 { return true }
            if retryOn.contains(.retriableStatusCodes), retriableStatusCodes.contains(status) { return true }
            if retryOn.contains(.envoyRateLimited), rateLimited { return true }
            if let grpcStatus, let condition = RetryCondition(grpcStatus: grpcStatus), retryOn.contains(condition) { return true }
            return false
        }
    }
}

/// Envoy's `retry_on` conditions, as Istio's `retryOn` spells them.
package enum RetryCondition: String, Hashable, Sendable, CaseIterable {
    /// Any 5xx, or no response (reset, disconnect, per-try timeout, connect failure).
    case serverError = "5xx"
    /// 502, 503, 504, or no response.
    case gatewayError = "gateway-error"
    /// No response: the upstream reset, disconnected or timed out.
    case reset
    /// A reset before any of the request was sent upstream.
    case resetBeforeRequest = "reset-before-request"
    /// The upstream connection could not be made (refused, timed out, TLS refused).
    case connectFailure = "connect-failure"
    /// 409.
    case retriable4xx = "retriable-4xx"
    /// An HTTP/2 upstream refused the stream (REFUSED_STREAM).
    case refusedStream = "refused-stream"
    /// The codes of `RetryPolicy.retriableStatusCodes`.
    case retriableStatusCodes = "retriable-status-codes"
    /// Response headers matching `retriable_headers`, which Istio cannot set: never holds.
    case retriableHeaders = "retriable-headers"
    /// A response carrying `x-envoy-ratelimited`.
    case envoyRateLimited = "envoy-ratelimited"
    /// HTTP/3 only: never holds here.
    case http3PostConnectFailure = "http3-post-connect-failure"
    // gRPC statuses in the response headers.
    case cancelled
    case deadlineExceeded = "deadline-exceeded"
    case `internal`
    case resourceExhausted = "resource-exhausted"
    case unavailable

    /// The gRPC token for a `grpc-status` Envoy retries on.
    init?(grpcStatus: Int) {
        switch grpcStatus {
        case 1: self = .cancelled
        case 4: self = .deadlineExceeded
        case 8: self = .resourceExhausted
        case 13: self = .internal
        case 14: self = .unavailable
        default: return nil
        }
    }
}

/// How one attempt ended, in the terms retry conditions are written in.
package enum AttemptOutcome: Sendable, Equatable {
    case connectFailure
    /// An HTTP/2 upstream answered the stream with REFUSED_STREAM.
    case refusedStream
    /// The upstream closed or reset before its response headers; `requestSent`: after any of
    /// the request went to it.
    case reset(requestSent: Bool)
    case perTryTimeout
    /// Response headers arrived; `grpcStatus` from them, `rateLimited`: `x-envoy-ratelimited`.
    case response(status: Int, grpcStatus: Int? = nil, rateLimited: Bool = false)
}

/// One request's (or connection's) retries, decided without I/O, as Envoy's `RetryStateImpl`
/// with its host predicate and priority plugin: each failed attempt is either retried (after a
/// back-off, at a target chosen from a fresh look at the plan) or the end, and why.
package struct RetryState: Sendable, Equatable {
    package let policy: RetryPolicy
    /// The targets tried, in order.
    package private(set) var tried: [PlannedTarget] = []
    package private(set) var failures: [String] = []
    /// The priorities `previousPriorities` leaves out, recomputed every second attempt.
    private var excludedPriorities: Set<Int> = []
    /// Envoy's back-off step (`JitteredExponentialBackOffStrategy::current_retry_`).
    private var backoffStep: UInt64 = 1

    package init(policy: RetryPolicy) {
        self.policy = policy
    }

    /// Attempts started so far.
    package var attempts: Int { tried.count }

    package enum Decision: Equatable, Sendable {
        /// Try again after this back-off, at `nextTarget(in:)`.
        case retry(after: Duration)
        case giveUp(GiveUp)
    }

    package enum GiveUp: Equatable, Sendable {
        /// The policy does not retry this outcome: it is the answer.
        case notRetriable
        /// Every allowed attempt was made (Envoy's `URX` when more than one).
        case exhausted
        /// `connectionPool.http.maxRetries` retries are running for the service: `UO`.
        case overflow
        /// The request was too large to keep for another attempt.
        case requestNotKept
    }

    /// The target of the first attempt, or of the retry `attemptFailed` just allowed, from
    /// `candidates` (the plan's pick first, then its fallbacks, as the cluster manager offers
    /// them now). Nil when there is none.
    package mutating func nextTarget(in candidates: [PlannedTarget]) -> PlannedTarget? {
        guard let pick = candidates.first else { return nil }
        guard !tried.isEmpty else {
            // Every rule gives the first attempt the plan's own pick (nothing tried or left out yet).
            tried.append(pick)
            return pick
        }
        var allowed = candidates
        switch policy.targets {
        case .walkPlan:
            break
        case .priorityLoad:
            allowed = candidates.filter { $0.priority == pick.priority }
        case .previousPriorities:
            if !tried.isEmpty, tried.count % 2 == 0 { excludedPriorities = Set(tried.map(\.priority)) }
            let remaining = candidates.filter { !excludedPriorities.contains($0.priority) }
            if remaining.isEmpty {
                excludedPriorities = []
            } else {
                // The load spreads over what is left, its first priority foremost.
                let first = remaining[0].priority
                allowed = remaining.filter { $0.priority == first }
            }
        }
        let chosen: PlannedTarget
        if policy.avoidPreviousHosts || policy.targets == .walkPlan {
            // Envoy re-selects up to 5 times to avoid a tried host, then takes its last pick.
            chosen = allowed.first { candidate in !tried.contains { $0.target == candidate.target } } ?? allowed.first ?? pick
        } else {
            chosen = allowed.first ?? pick
        }
        tried.append(chosen)
        return chosen
    }

    /// The attempt in flight ended with `outcome`; `reason` goes into the final detail.
    /// - Parameters:
    ///   - requestKept: the whole request so far is held for another attempt.
    ///   - retryAllowed: the service's retry budget (`maxRetries`) has room.
    ///   - random: a fresh random number for the back-off's jitter.
    package mutating func attemptFailed(_ outcome: AttemptOutcome, reason: String, requestKept: Bool = true,
                                        retryAllowed: Bool = true, random: UInt64 = 0) -> Decision {
        failures.append(reason)
        guard policy.retries(outcome) else { return .giveUp(.notRetriable) }
        guard tried.count < policy.maxAttempts else { return .giveUp(.exhausted) }
        guard requestKept else { return .giveUp(.requestNotKept) }
        guard retryAllowed else { return .giveUp(.overflow) }
        return .retry(after: nextBackoff(random: random))
    }

    /// Envoy's fully jittered exponential back-off: retry N waits a uniform time in
    /// [0, (2^N - 1) × base), at most 10 × base.
    private mutating func nextBackoff(random: UInt64) -> Duration {
        let base = UInt64(policy.backoffBase.milliseconds)
        guard base > 0 else { return .zero }
        let ceiling = base * 10
        let span = ((1 << backoffStep) - 1) * base
        if span <= ceiling { backoffStep += 1 }
        return .milliseconds(Int64(min(random % span, ceiling)))
    }
}
