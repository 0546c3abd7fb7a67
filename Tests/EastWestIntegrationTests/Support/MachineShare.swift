import Testing

/// How an integration suite shares the machine with the others in one `swift test` run.
///
/// Suites run in parallel; on CI's two cores, a suite whose assertions are about time (a drill's
/// failover seconds, a drain's deadline, how fast a killed gateway is noticed) failed when other
/// suites' gateways took the cores, and passed alone. Such a suite takes the machine alone
/// (`.needsMachineAlone`); suites that start processes but assert no timing take a shared part
/// (`.sharesMachine`) and only wait while a timing suite runs. Suites with neither trait start
/// nothing heavy and run whenever the test runner likes.
struct MachineShare: SuiteTrait, TestScoping {
    let alone: Bool

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        await MachineLock.shared.acquire(alone: alone)
        do {
            try await function()
        } catch {
            await MachineLock.shared.release(alone: alone)
            throw error
        }
        await MachineLock.shared.release(alone: alone)
    }
}

extension Trait where Self == MachineShare {
    /// Starts gateways or backends, asserts no timing: runs beside other such suites.
    static var sharesMachine: Self { MachineShare(alone: false) }
    /// Asserts how long something took: runs with no other process-starting suite.
    static var needsMachineAlone: Self { MachineShare(alone: true) }
}

/// A readers-writer lock for suites: any number of sharing suites, or one suite alone. A waiting
/// timing suite goes before sharing suites that arrive after it, so it is not starved by them.
actor MachineLock {
    static let shared = MachineLock()

    private var sharing = 0
    private var alone = false
    private var waiting: [(alone: Bool, resume: CheckedContinuation<Void, Never>)] = []

    func acquire(alone wantsAlone: Bool) async {
        if waiting.isEmpty, canEnter(alone: wantsAlone) {
            enter(alone: wantsAlone)
            return
        }
        await withCheckedContinuation { waiting.append((wantsAlone, $0)) }
    }

    func release(alone wasAlone: Bool) {
        if wasAlone { alone = false } else { sharing -= 1 }
        // First come, first served: wake the queue's head, and every sharer behind it while they fit.
        while let next = waiting.first, canEnter(alone: next.alone) {
            waiting.removeFirst()
            enter(alone: next.alone)
            next.resume.resume()
        }
    }

    private func canEnter(alone wantsAlone: Bool) -> Bool {
        wantsAlone ? (!alone && sharing == 0) : !alone
    }

    private func enter(alone wantsAlone: Bool) {
        if wantsAlone { alone = true } else { sharing += 1 }
    }
}
