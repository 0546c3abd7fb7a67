import Synchronization

/// Blocking queries (Consul's `?index=N&wait=30s`): callers wait until the published index
/// passes the one they saw, or their wait runs out, whichever is first.
final class IndexWaiters: Sendable {
    private struct State {
        var index: UInt64 = 0
        var nextTicket: UInt64 = 0
        var waiting: [UInt64: (beyond: UInt64, continuation: CheckedContinuation<Void, Never>)] = [:]
    }
    private let state = Mutex(State())

    /// Callers parked right now.
    var waitingCount: Int { state.withLock { $0.waiting.count } }

    /// Publishes a new index and releases everyone waiting for something newer than they saw.
    func advance(to index: UInt64) {
        let released = state.withLock { state in
            state.index = index
            let ready = state.waiting.filter { $0.value.beyond < index }
            for ticket in ready.keys { state.waiting[ticket] = nil }
            return ready.values.map(\.continuation)
        }
        for continuation in released { continuation.resume() }
    }

    /// Returns once the index exceeds `beyond`, or after `timeout`.
    func wait(beyond: UInt64, timeout: Duration) async {
        let ticket = state.withLock { state in
            defer { state.nextTicket += 1 }
            return state.nextTicket
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            self.release(ticket)
        }
        await withCheckedContinuation { continuation in
            let immediate = state.withLock { state in
                guard state.index <= beyond else { return true }
                state.waiting[ticket] = (beyond, continuation)
                return false
            }
            if immediate { continuation.resume() }
        }
        timer.cancel()
    }

    private func release(_ ticket: UInt64) {
        let continuation = state.withLock { $0.waiting.removeValue(forKey: ticket)?.continuation }
        continuation?.resume()
    }
}
