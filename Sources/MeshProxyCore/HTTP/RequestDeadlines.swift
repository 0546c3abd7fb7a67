import NIOCore

/// A request's two deadlines, the route's `timeout` and the retry policy's `perTryTimeout`, on
/// one loop timer that is armed lazily: a request that ends in time clears its deadline and
/// leaves the timer alone. When the timer fires it finds the deadlines of later requests on the
/// same keep-alive connection (later, as every request's timeout is the same length) and is
/// armed once more for the earliest. A connection's steady stream of requests then schedules
/// about one timer per timeout period instead of scheduling and cancelling two per request,
/// which is most of what a configured but unused timeout costs on the loop.
///
/// Pure: the manager arms the timer when `arm` says so and calls `fired(now:)` when it runs.
package struct RequestDeadlines: Sendable {
    package enum Kind: Sendable, Equatable { case route, perTry }

    package private(set) var route: NIODeadline?
    package private(set) var perTry: NIODeadline?
    /// When the armed timer runs (nil: none armed).
    package private(set) var armedAt: NIODeadline?

    package init() {}

    /// Sets a deadline. Returns when to arm the timer if the one armed (if any) runs too late
    /// for it; the caller arms it there, replacing the old one.
    package mutating func set(_ kind: Kind, at deadline: NIODeadline) -> NIODeadline? {
        switch kind {
        case .route: route = deadline
        case .perTry: perTry = deadline
        }
        return armIfNeeded()
    }

    /// The deadline no longer applies; the timer stays armed and finds nothing when it runs.
    package mutating func clear(_ kind: Kind) {
        switch kind {
        case .route: route = nil
        case .perTry: perTry = nil
        }
    }

    /// The timer ran at `now`: the deadlines that passed, cleared, the per-try one first (its
    /// timer would have run first). Once they are handled, `armIfNeeded` says when to run next.
    package mutating func fired(now: NIODeadline) -> (perTry: Bool, route: Bool) {
        armedAt = nil
        let perTryPassed = perTry.map { $0 <= now } ?? false, routePassed = route.map { $0 <= now } ?? false
        if perTryPassed { perTry = nil }
        if routePassed { route = nil }
        return (perTryPassed, routePassed)
    }

    /// When to arm the timer for the earliest deadline, if the armed one (if any) runs later.
    package mutating func armIfNeeded() -> NIODeadline? {
        let earliest: NIODeadline? = switch (perTry, route) {
        case let (a?, b?): min(a, b)
        case let (a?, nil): a
        case let (nil, b?): b
        case (nil, nil): nil
        }
        guard let earliest else { return nil }
        if let armedAt, armedAt <= earliest { return nil }
        armedAt = earliest
        return earliest
    }

    /// The connection is gone: nothing pending, the timer to be cancelled.
    package mutating func reset() {
        route = nil
        perTry = nil
        armedAt = nil
    }

    package func isSet(_ kind: Kind) -> Bool {
        switch kind {
        case .route: route != nil
        case .perTry: perTry != nil
        }
    }
}
