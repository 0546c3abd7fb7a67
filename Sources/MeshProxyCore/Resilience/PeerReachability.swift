/// Which peer gateways this gateway cannot connect to right now, decided without I/O.
///
/// SWIM may still call a peer alive (another gateway reaches it for us), but new connections
/// from here would only time out. After `failuresToMark` connect failures in a row (one lost
/// SYN is not an outage) the plan treats the peer as unreachable from here until its wait runs
/// out, then tries it again: 5 s, doubling on each new mark, at most 60 s. Failures of
/// connections already in flight when it was marked add nothing; one success clears it.
package struct PeerReachability: Sendable {
    package static let failuresToMark = 3
    package static let firstWait: Duration = .seconds(5)
    package static let longestWait: Duration = .seconds(60)

    private var failures: [String: Int] = [:]
    private var marked: [String: (until: ContinuousClock.Instant, strikes: Int)] = [:]

    package init() {}

    /// A connect to `gateway` failed at `now`; the wait when this failure marked it.
    package mutating func failed(_ gateway: String, now: ContinuousClock.Instant) -> Duration? {
        failures[gateway, default: 0] += 1
        guard failures[gateway]! >= Self.failuresToMark else { return nil }
        if let current = marked[gateway], current.until > now { return nil }
        let strikes = (marked[gateway]?.strikes ?? 0) + 1
        let wait = min(Self.longestWait, Self.firstWait * (1 << min(strikes - 1, 4)))
        marked[gateway] = (now + wait, strikes)
        return wait
    }

    /// A connection to `gateway` got through; whether that changed what is unreachable.
    package mutating func succeeded(_ gateway: String) -> Bool {
        failures[gateway] = nil
        return marked.removeValue(forKey: gateway) != nil
    }

    package func unreachable(at now: ContinuousClock.Instant) -> Set<String> {
        Set(marked.filter { $0.value.until > now }.keys)
    }
}
