/// What may be retried for a route, and how often. The TCP path retries connect failures only
/// (Envoy's TCP proxy `max_connect_attempts`); the HTTP router adds Envoy's `retry_on`
/// conditions, per-try timeouts and back-off on the same type.
package struct RetryPolicy: Sendable, Equatable {
    /// Attempts in all, the first included.
    package var maxAttempts: Int
    package var retryOn: Set<RetryCondition>

    package init(maxAttempts: Int, retryOn: Set<RetryCondition> = [.connectFailure]) {
        self.maxAttempts = max(1, maxAttempts)
        self.retryOn = retryOn
    }

    /// The TCP proxy's: connect failures, up to the gateway's `maxConnectAttempts`.
    package static func connectAttempts(_ attempts: Int) -> RetryPolicy { RetryPolicy(maxAttempts: attempts) }
}

/// Why an attempt failed, in Envoy's `retry_on` terms.
package enum RetryCondition: String, Hashable, Sendable {
    /// The upstream connection could not be made (refused, timed out, TLS refused).
    case connectFailure = "connect-failure"
    /// The upstream reset the connection or stream before a response began.
    case reset
    /// The upstream answered 502, 503 or 504.
    case gatewayError = "gateway-error"
    /// The upstream answered any 5xx.
    case serverError = "5xx"
    /// An HTTP/2 upstream refused the stream (REFUSED_STREAM).
    case refusedStream = "refused-stream"
}

/// One request's (or connection's) retries, decided without I/O, as Envoy's `RetryStateImpl`:
/// each failure either moves to the next planned target or ends with every reason gathered.
package struct RetryState: Sendable, Equatable {
    package let policy: RetryPolicy
    /// The targets the plan offers, in the order to try them.
    package let targets: Int
    package private(set) var attempt = 0
    package private(set) var failures: [String] = []

    package init(policy: RetryPolicy, targets: Int) {
        self.policy = policy
        self.targets = targets
    }

    /// How many attempts this state will make at most: the policy's, or fewer targets.
    package var plannedAttempts: Int { min(policy.maxAttempts, targets) }

    package enum Decision: Equatable, Sendable {
        /// Try the target at this index next.
        case retry(target: Int)
        /// Stop. `exhausted`: every allowed attempt was made (Envoy's `URX` when more than one).
        case giveUp(exhausted: Bool)
    }

    /// The attempt in flight failed for `condition`; `reason` goes into the final detail.
    package mutating func attemptFailed(_ condition: RetryCondition, reason: String) -> Decision {
        failures.append(reason)
        attempt += 1
        guard policy.retryOn.contains(condition) else { return .giveUp(exhausted: false) }
        guard attempt < plannedAttempts else { return .giveUp(exhausted: true) }
        return .retry(target: attempt)
    }
}
