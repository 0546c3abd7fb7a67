import NIOCore
import Testing
@testable import MeshProxyCore

/// The lazily armed timer behind route and per-try timeouts: a keep-alive connection's requests
/// that end in time leave one armed timer alone, and the deadlines that did pass are found.
@Suite("Request deadlines")
struct RequestDeadlinesTests {
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)
    static func at(_ seconds: Int64) -> NIODeadline { t0 + .seconds(seconds) }

    @Test("requests that end in time arm the timer once")
    func steadyRequestsArmOnce() {
        var deadlines = RequestDeadlines()
        var armings: [NIODeadline] = []
        // Ten requests one second apart, each with a 30 s route and 10 s per-try timeout, each
        // answered within the second.
        for i in Int64(0)..<10 {
            if let at = deadlines.set(.route, at: Self.at(i + 30)) { armings.append(at) }
            if let at = deadlines.set(.perTry, at: Self.at(i + 10)) { armings.append(at) }
            deadlines.clear(.perTry)
            deadlines.clear(.route)
        }
        // The first route deadline, then the first per-try one (earlier): never again.
        #expect(armings == [Self.at(30), Self.at(10)])
        // The timer runs at 10 s and finds nothing pending: nothing passed, nothing to arm.
        let passed = deadlines.fired(now: Self.at(10))
        #expect(!passed.perTry && !passed.route)
        #expect(deadlines.armIfNeeded() == nil)
    }

    @Test("a timer that runs early for a later request is armed again for it")
    func rearmsForLaterDeadline() {
        var deadlines = RequestDeadlines()
        #expect(deadlines.set(.route, at: Self.at(30)) == Self.at(30))
        deadlines.clear(.route)
        // The next request starts at 5 s: its deadline is later than the armed timer.
        #expect(deadlines.set(.route, at: Self.at(35)) == nil)
        let passed = deadlines.fired(now: Self.at(30))
        #expect(!passed.route)
        #expect(deadlines.armIfNeeded() == Self.at(35))
        let then = deadlines.fired(now: Self.at(35))
        #expect(then.route && !then.perTry)
        #expect(deadlines.route == nil)
    }

    @Test("both passed: per-try first, and what was set while handling them is armed once")
    func bothPassed() {
        var deadlines = RequestDeadlines()
        _ = deadlines.set(.perTry, at: Self.at(2))
        _ = deadlines.set(.route, at: Self.at(2))
        let passed = deadlines.fired(now: Self.at(3))
        #expect(passed.perTry && passed.route)
        // A retry started while handling the per-try timeout sets its own and arms for it.
        #expect(deadlines.set(.perTry, at: Self.at(5)) == Self.at(5))
        #expect(deadlines.armIfNeeded() == nil)
    }

    @Test("an earlier deadline replaces a later armed timer")
    func earlierReplaces() {
        var deadlines = RequestDeadlines()
        #expect(deadlines.set(.route, at: Self.at(30)) == Self.at(30))
        #expect(deadlines.set(.perTry, at: Self.at(1)) == Self.at(1))
        #expect(deadlines.armedAt == Self.at(1))
        deadlines.reset()
        #expect(deadlines.armedAt == nil && !deadlines.isSet(.route) && !deadlines.isSet(.perTry))
    }
}
