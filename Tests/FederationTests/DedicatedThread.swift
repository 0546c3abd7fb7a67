import Foundation

/// Runs a long CPU-bound simulation on its own thread, so it does not hold one of the few
/// Swift-concurrency threads that the socket and timing tests running alongside need.
func onDedicatedThread<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread { continuation.resume(returning: work()) }
        thread.stackSize = 8 << 20
        thread.start()
    }
}
