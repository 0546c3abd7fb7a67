import Testing
@testable import MeshProxyCore

@Suite("HTTP retries as Envoy's router decides them (RetryState)")
struct RetryStateTests {
    func target(_ address: String, priority: Int = 0) -> PlannedTarget {
        PlannedTarget(target: .local(Endpoint(address: HostPort(parsing: address)!)), locality: "r/z\(priority)", priority: priority)
    }

    func policy(_ retryOn: Set<RetryCondition>, attempts: Int = 3, codes: Set<Int> = [], targets: RetryPolicy.TargetRule = .priorityLoad) -> RetryPolicy {
        var policy = RetryPolicy(maxAttempts: attempts, retryOn: retryOn, targets: targets)
        policy.retriableStatusCodes = codes
        policy.backoffBase = RetryPolicy.envoyBackoffBase
        return policy
    }

    @Test("Each retryOn token covers the outcomes Envoy's retry state retries, and no others")
    func conditions() {
        let cases: [(Set<RetryCondition>, AttemptOutcome, Bool)] = [
            ([.serverError], .response(status: 500), true),
            ([.serverError], .response(status: 404), false),
            ([.serverError], .reset(requestSent: true), true),
            ([.serverError], .connectFailure, true),
            ([.serverError], .perTryTimeout, true),
            ([.gatewayError], .response(status: 502), true),
            ([.gatewayError], .response(status: 500), false),
            ([.gatewayError], .perTryTimeout, true),
            ([.reset], .reset(requestSent: true), true),
            ([.reset], .response(status: 503), false),
            ([.resetBeforeRequest], .reset(requestSent: false), true),
            ([.resetBeforeRequest], .reset(requestSent: true), false),
            ([.connectFailure], .connectFailure, true),
            ([.connectFailure], .reset(requestSent: true), false),
            ([.connectFailure], .perTryTimeout, false),
            ([.refusedStream], .refusedStream, true),
            ([.refusedStream], .reset(requestSent: true), false),
            ([.retriable4xx], .response(status: 409), true),
            ([.retriable4xx], .response(status: 429), false),
            ([.envoyRateLimited], .response(status: 429, rateLimited: true), true),
            ([.envoyRateLimited], .response(status: 429), false),
            ([.unavailable], .response(status: 200, grpcStatus: 14), true),
            ([.unavailable], .response(status: 200, grpcStatus: 13), false),
            ([.internal], .response(status: 200, grpcStatus: 13), true),
            ([.cancelled], .response(status: 200, grpcStatus: 1), true),
            ([.deadlineExceeded], .response(status: 200, grpcStatus: 4), true),
            ([.resourceExhausted], .response(status: 200, grpcStatus: 8), true),
            ([.retriableHeaders], .response(status: 503), false),
        ]
        for (retryOn, outcome, retried) in cases {
            #expect(policy(retryOn).retries(outcome) == retried, "\(retryOn) on \(outcome)")
        }
        #expect(policy([.retriableStatusCodes], codes: [418]).retries(.response(status: 418)))
        #expect(!policy([.retriableStatusCodes], codes: [418]).retries(.response(status: 503)))
    }

    @Test("Istio's default: 2 retries on connect-failure, refused-stream, unavailable, cancelled; a 503 or a reset is the answer")
    func istioDefault() {
        let policy = RetryPolicy.istioDefault
        #expect(policy.maxAttempts == 3)
        #expect(policy.retries(.connectFailure) && policy.retries(.refusedStream) && policy.retries(.response(status: 200, grpcStatus: 14)))
        #expect(!policy.retries(.response(status: 503)) && !policy.retries(.reset(requestSent: true)) && !policy.retries(.perTryTimeout))
    }

    @Test("Attempts stop at the policy's count: the last failure is 'exhausted' (URX)")
    func exhausted() {
        var state = RetryState(policy: policy([.serverError], attempts: 3))
        let targets = [target("10.0.0.1:80"), target("10.0.0.2:80"), target("10.0.0.3:80")]
        #expect(state.nextTarget(in: targets) == targets[0])
        guard case .retry = state.attemptFailed(.response(status: 503), reason: "a", random: 7) else { Issue.record("no retry"); return }
        #expect(state.nextTarget(in: targets) == targets[1])
        guard case .retry = state.attemptFailed(.response(status: 503), reason: "b", random: 7) else { Issue.record("no retry"); return }
        #expect(state.nextTarget(in: targets) == targets[2])
        #expect(state.attemptFailed(.response(status: 503), reason: "c") == .giveUp(.exhausted))
        #expect(state.failures == ["a", "b", "c"])
        #expect(state.attempts == 3)
    }

    @Test("A retry the budget (maxRetries) has no room for is an overflow; a request too large to keep is not retried")
    func budgetAndBody() {
        var state = RetryState(policy: policy([.serverError]))
        _ = state.nextTarget(in: [target("10.0.0.1:80")])
        #expect(state.attemptFailed(.response(status: 500), reason: "x", retryAllowed: false) == .giveUp(.overflow))
        var large = RetryState(policy: policy([.serverError]))
        _ = large.nextTarget(in: [target("10.0.0.1:80")])
        #expect(large.attemptFailed(.response(status: 500), reason: "x", requestKept: false) == .giveUp(.requestNotKept))
        var other = RetryState(policy: policy([.serverError]))
        _ = other.nextTarget(in: [target("10.0.0.1:80")])
        #expect(other.attemptFailed(.response(status: 404), reason: "x") == .giveUp(.notRetriable))
    }

    @Test("Back-off is Envoy's fully jittered exponential: [0, 25), [0, 75), [0, 175), then at most 250 ms")
    func backoff() {
        for random: UInt64 in [0, 1, 24, 1_000_003, .max] {
            var state = RetryState(policy: policy([.serverError], attempts: 6))
            var bounds: [Int64] = []
            for _ in 0..<5 {
                _ = state.nextTarget(in: [target("10.0.0.1:80")])
                guard case .retry(let after) = state.attemptFailed(.response(status: 500), reason: "", random: random) else { break }
                bounds.append(after.milliseconds)
            }
            #expect(bounds.count == 5)
            for (wait, ceiling) in zip(bounds, [25, 75, 175, 251, 251] as [Int64]) { #expect(wait >= 0 && wait < ceiling, "\(bounds)") }
        }
        var none = RetryState(policy: .connectAttempts(3))
        _ = none.nextTarget(in: [target("10.0.0.1:80"), target("10.0.0.2:80")])
        #expect(none.attemptFailed(.connectFailure, reason: "", random: 99) == .retry(after: .zero))
    }

    @Test("Retries avoid the hosts tried before, and stay in the priority the plan's load picks")
    func previousHostsAndPriorityLoad() {
        var state = RetryState(policy: policy([.serverError], attempts: 4))
        let plan = [target("10.0.0.1:80"), target("10.0.0.2:80"), target("10.0.1.1:80", priority: 1)]
        #expect(state.nextTarget(in: plan) == plan[0])
        _ = state.attemptFailed(.response(status: 503), reason: "")
        // The plan rotated (round robin): the tried host comes first again and is avoided.
        #expect(state.nextTarget(in: [plan[1], plan[0], plan[2]]) == plan[1])
        _ = state.attemptFailed(.response(status: 503), reason: "")
        // Both priority-0 hosts tried: Envoy takes its pick again rather than leave the priority.
        #expect(state.nextTarget(in: plan) == plan[0])
        _ = state.attemptFailed(.response(status: 503), reason: "")
        // Health moved the load (both ejected): the plan offers priority 1 first.
        #expect(state.nextTarget(in: [plan[2]]) == plan[2])
    }

    @Test("retryRemoteLocalities: tries 1-2 by the plan, 3-4 leave out the priorities of 1-2, and so on; none left resets")
    func previousPriorities() {
        var state = RetryState(policy: policy([.serverError], attempts: 6, targets: .previousPriorities))
        let east = target("127.0.1.1:15443"), west = target("127.0.2.1:15443", priority: 1), south = target("127.0.3.1:15443", priority: 2)
        let plan = [east, west, south]
        var chosen: [PlannedTarget] = []
        for _ in 0..<6 {
            guard let next = state.nextTarget(in: plan) else { break }
            chosen.append(next)
            _ = state.attemptFailed(.reset(requestSent: true), reason: "")
        }
        // 1 east; 2 east again (one gateway: previous hosts cannot help); 3-4 without priority 0:
        // west, then west again; 5-6 without 0 and 1: south.
        #expect(chosen == [east, east, west, west, south, south])
        var reset = RetryState(policy: policy([.serverError], attempts: 4, targets: .previousPriorities))
        _ = reset.nextTarget(in: [east])
        _ = reset.attemptFailed(.reset(requestSent: true), reason: "")
        _ = reset.nextTarget(in: [east])
        _ = reset.attemptFailed(.reset(requestSent: true), reason: "")
        // Only priority 0 exists: excluding it leaves nothing, so nothing is excluded.
        #expect(reset.nextTarget(in: [east]) == east)
    }

    @Test("The TCP proxy's connect attempts walk the plan, fallbacks in other priorities included")
    func walkPlan() {
        var state = RetryState(policy: .connectAttempts(3))
        let plan = [target("10.0.0.1:80"), target("10.0.1.1:80", priority: 1), target("10.0.2.1:80", priority: 2)]
        #expect(state.nextTarget(in: plan) == plan[0])
        _ = state.attemptFailed(.connectFailure, reason: "")
        #expect(state.nextTarget(in: plan) == plan[1])
        _ = state.attemptFailed(.connectFailure, reason: "")
        #expect(state.nextTarget(in: plan) == plan[2])
        #expect(state.attemptFailed(.connectFailure, reason: "") == .giveUp(.exhausted))
    }
}
