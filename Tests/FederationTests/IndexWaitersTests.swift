@testable import Federation
import Testing

@Suite("Blocking-query waiters")
struct IndexWaitersTests {
    @Test("A waiter returns when the index passes the one it saw, or when its wait runs out")
    func releaseAndTimeout() async {
        let waiters = IndexWaiters()
        waiters.advance(to: 3)
        let clock = ContinuousClock()
        // Already newer: no wait at all.
        #expect(await clock.measure { await waiters.wait(beyond: 2, timeout: .seconds(10)) } < .seconds(1))
        // Current index: parks until advanced.
        async let parked: Void = waiters.wait(beyond: 3, timeout: .seconds(10))
        try? await Task.sleep(for: .milliseconds(50))
        let released = clock.now
        waiters.advance(to: 4)
        await parked
        #expect(clock.now - released < .seconds(1))
        // Nothing changes: the wait ends by itself.
        let elapsed = await clock.measure { await waiters.wait(beyond: 4, timeout: .milliseconds(100)) }
        #expect(elapsed >= .milliseconds(100) && elapsed < .seconds(2))
    }
}
