@testable import Federation
import Synchronization
import Testing

final class Released: Sendable { let value = Mutex(false) }

@Suite("Blocking-query waiters")
struct IndexWaitersTests {
    /// Ordering, not speed: the suite runs beside CPU-heavy simulations, so only lower bounds
    /// on time are asserted.
    @Test("A waiter returns at once when the index is already newer, parks until it passes, and ends by itself after its wait")
    func releaseAndTimeout() async throws {
        let waiters = IndexWaiters()
        waiters.advance(to: 3)
        // Already newer: returns without anyone advancing (a 10-minute wait would hang the test).
        await waiters.wait(beyond: 2, timeout: .seconds(600))

        // The current index: parks until advanced.
        let released = Released()
        let parked = Task {
            await waiters.wait(beyond: 3, timeout: .seconds(600))
            released.value.withLock { $0 = true }
        }
        // Parked (the waiter is in the table), and not released by anything but the advance.
        while waiters.waitingCount == 0 { await Task.yield() }
        let early = released.value.withLock { $0 }
        #expect(!early)
        waiters.advance(to: 4)
        await parked.value
        let late = released.value.withLock { $0 }
        #expect(late)

        // Nothing changes: the wait ends by itself, not before its time.
        let clock = ContinuousClock()
        let elapsed = await clock.measure { await waiters.wait(beyond: 4, timeout: .milliseconds(100)) }
        #expect(elapsed >= .milliseconds(100))
    }
}
