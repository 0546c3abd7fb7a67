import NIOCore
import NIOPosix

/// Holds the flushes an event loop's proxied connections ask for while it handles one batch
/// of ready sockets, and performs them together after the batch.
///
/// Why: a flush is a `write()`, and a write to a socket whose reader sleeps on the same core
/// (the next gateway of a chain, a sidecar, a local backend) wakes that reader, which then
/// preempts this loop in the middle of its batch. Flushing per read made two chained gateways
/// on one core switch ~0.7 times per request, against HAProxy's ~0.26 (which also reads
/// everything a poll returned before it sends). Deferring to the end of the pass keeps the
/// reads together and the writes together; a flush never waits longer than the batch it
/// belongs to. (SwiftNIO runs tasks queued with `execute` only after every ready event of the
/// current `epoll_wait`.)
///
/// One per event loop, used only on it.
final class FlushCoalescer {
    private let eventLoop: any EventLoop
    private var pending: [GlueHandler] = []
    private var spare: [GlueHandler] = []
    private var armed = false

    private init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        pending.reserveCapacity(64)
        spare.reserveCapacity(64)
    }

    /// Flushes `side` once the loop has handled the current batch of ready sockets.
    func flushAfterBatch(_ side: GlueHandler) {
        if let last = pending.last, last === side { return }
        pending.append(side)
        guard !armed else { return }
        armed = true
        eventLoop.assumeIsolatedUnsafeUnchecked().execute { self.flushAll() }
    }

    private func flushAll() {
        armed = false
        // Swap so that flushes which trigger further reads-and-flushes queue a new batch.
        swap(&pending, &spare)
        for side in spare { side.flushNow() }
        spare.removeAll(keepingCapacity: true)
    }

    /// The coalescer of `eventLoop`, called on that loop; made on first use. Kept per thread
    /// (an event loop is one thread), so it goes away with its loop.
    static func of(_ eventLoop: any EventLoop) -> FlushCoalescer {
        eventLoop.preconditionInEventLoop()
        // A thread that ran another loop before (test threads do) gets a new coalescer.
        if let existing = perThread.currentValue, existing.eventLoop === eventLoop { return existing }
        let made = FlushCoalescer(eventLoop: eventLoop)
        perThread.currentValue = made
        return made
    }

    // Each thread sees only its own value, so nothing here is shared between threads.
    nonisolated(unsafe) private static let perThread = ThreadSpecificVariable<FlushCoalescer>()
}
