import NIOCore

/// The decisions of one terminated downstream connection, from its TLS handshake until it is
/// glued to an upstream, as actions `GatewayConnectionHandler` carries out: what to dial, when
/// to try the next target (`RetryState`), what to hold while dialling, when to give up and with
/// which Envoy flags. The shape of async-http-client's `HTTP1ConnectionStateMachine`: every
/// event returns an action; no I/O, no clock, no shared state here.
package struct GatewayConnectionStateMachine {
    private enum State {
        case handshaking
        /// Dialling `retry.tried.last`.
        case connecting(targets: [PlannedTarget], retry: RetryState)
        case glued
        case closed
    }

    package enum Action: Equatable {
        case none
        /// Pass the event on down the pipeline.
        case forward
        /// Ask the route and the plan for targets, then call `planned`.
        case plan
        case dial(PlannedTarget)
        /// Close the client; the flags, the detail and the upstream last tried (when one was)
        /// go to the access log.
        case closeDownstream(flags: [ResponseFlag], detail: String, upstream: PlannedTarget? = nil)
        /// Join the client to the connected upstream, then replay what was held.
        case glue(PlannedTarget, replay: [ByteBuffer], inputEnded: Bool, readPending: Bool)
        /// The upstream connected after the client left: close it.
        case closeUpstream
    }

    private var state = State.handshaking
    /// Bytes the client sent before there was an upstream to write them to.
    private var held: [ByteBuffer] = []
    private var inputEnded = false
    /// A read asked for while dialling: backpressure until the upstream is there.
    private var readPending = false

    package init() {}

    package var isConnecting: Bool { if case .connecting = state { true } else { false } }

    package mutating func handshakeCompleted() -> Action {
        guard case .handshaking = state else { return .none }
        return .plan
    }

    /// The plan's targets for this connection (already cut to what may be tried).
    package mutating func planned(_ targets: [PlannedTarget], retry policy: RetryPolicy, noTarget detail: String) -> Action {
        guard case .handshaking = state else { return .none }
        guard let first = targets.first else {
            state = .closed
            return .closeDownstream(flags: [.noHealthyUpstream], detail: detail)
        }
        // Never more attempts than targets: a connect attempt goes to a target not tried yet.
        var limited = policy
        limited.maxAttempts = min(policy.maxAttempts, targets.count)
        var retry = RetryState(policy: limited)
        _ = retry.nextTarget(in: targets)
        state = .connecting(targets: targets, retry: retry)
        return .dial(first)
    }

    /// The connection may not go on (a limit); nothing was dialled.
    package mutating func refused(flags: [ResponseFlag], detail: String) -> Action {
        state = .closed
        return .closeDownstream(flags: flags, detail: detail)
    }

    package mutating func upstreamFailed(_ outcome: AttemptOutcome, reason: String) -> Action {
        guard case .connecting(let targets, var retry) = state, let failed = retry.tried.last else { return .none }
        let decision = retry.attemptFailed(outcome, reason: "\(failed.target) (\(reason))")
        if case .retry = decision, let next = retry.nextTarget(in: targets) {
            state = .connecting(targets: targets, retry: retry)
            return .dial(next)
        }
        state = .closed
        var flags: [ResponseFlag] = [.upstreamConnectionFailure]
        if decision == .giveUp(.exhausted), retry.policy.maxAttempts > 1 { flags.append(.upstreamRetryLimitExceeded) }
        let detail = "all \(retry.attempts) upstream attempt(s) failed: " + retry.failures.joined(separator: "; ")
        return .closeDownstream(flags: flags, detail: detail, upstream: failed)
    }

    /// The target being dialled answered.
    package mutating func upstreamConnected() -> Action {
        guard case .connecting(_, let retry) = state, let connected = retry.tried.last else { return .closeUpstream }
        state = .glued
        let replay = held
        held = []
        defer { readPending = false }
        return .glue(connected, replay: replay, inputEnded: inputEnded, readPending: readPending)
    }

    package mutating func channelRead(_ bytes: ByteBuffer) -> Action {
        switch state {
        case .handshaking, .connecting:
            held.append(bytes)
            return .none
        case .glued: return .forward
        case .closed: return .none
        }
    }

    package mutating func readRequested() -> Action {
        if case .connecting = state {
            readPending = true
            return .none
        }
        return .forward
    }

    package mutating func inputClosed() -> Action {
        if case .connecting = state {
            inputEnded = true
            return .none
        }
        return .forward
    }

    /// The client's connection is gone; the flags it adds to the access log.
    package mutating func channelInactive() -> [ResponseFlag] {
        defer { state = .closed }
        if case .connecting = state { return [.downstreamTermination] }
        return []
    }
}
