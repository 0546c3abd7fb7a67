import Foundation
import Subprocess
#if canImport(System)
import System
#else
import SystemPackage
#endif
import Federation
import MeshProxyCore
import NIOCore
import NIOPosix
import Synchronization
import UnixSignals

/// Starts and stops the processes of a launch plan. Each child logs to its own file; a child
/// that dies before it is ready stops the whole start-up with its last log lines, and stopping
/// sends SIGTERM, waits, then SIGKILL, so nothing is left running. Children run under
/// swift-subprocess, each in a task that ends when the child exits (nothing blocks waiting).
final class Supervisor: Sendable {
    private struct Child {
        var id: Int
        var name: String
        var pid: Int32?
        /// Set when the child has exited (and been reaped).
        var exit: TerminationStatus?
        var isRunning: Bool { pid != nil && exit == nil }
    }

    private struct State {
        var children: [Child] = []
        var nextID = 0
        /// Ends when the child with that id has exited.
        var lifetimes: [Int: Task<Void, Never>] = [:]
        /// How each child was started, so a drill can start it again.
        var arguments: [String: [String]] = [:]
        var stopRequested = false
        var stopWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let logDirectory: String
    private let state = Mutex(State())

    init(logDirectory: String) { self.logDirectory = logDirectory }

    var pids: [String: Int32] {
        state.withLock { state in
            Dictionary(state.children.compactMap { child in child.pid.map { (child.name, $0) } }, uniquingKeysWith: { _, latest in latest })
        }
    }

    func start(_ plan: LaunchPlan, readyTimeout: Duration) async throws {
        for child in plan.children where !child.arguments.isEmpty {
            if state.withLock({ $0.stopRequested }) { throw StartError("interrupted") }
            try await launch(child.name, child.arguments)
        }
        let deadline = ContinuousClock.now + readyTimeout
        for child in plan.children {
            while true {
                if let dead = state.withLock({ $0.children.first { $0.exit != nil } }) {
                    let logPath = self.logPath(dead.name)
                    let tail = (try? String(contentsOfFile: logPath, encoding: .utf8))?.split(separator: "\n").suffix(5).joined(separator: "\n") ?? ""
                    throw StartError("\(dead.name) \(Self.describe(dead.exit!)) before the topology was ready:\n\(tail)\n(full log: \(logPath))")
                }
                if await ReadinessCheck.isReady(child.readiness) { break }
                if ContinuousClock.now > deadline { throw StartError("\(child.name) was not ready within \(readyTimeout)") }
                if state.withLock({ $0.stopRequested }) { throw StartError("interrupted") }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    private func logPath(_ name: String) -> String { "\(logDirectory)/\(name.replacingOccurrences(of: "/", with: "_")).log" }

    static func describe(_ status: TerminationStatus) -> String {
        switch status {
        case .exited(let code): "exited with status \(code)"
        case .signaled(let signal): "was killed by signal \(signal)"
        }
    }

    /// Starts a child and returns once it runs (its pid known), or throws why it could not start.
    private func launch(_ name: String, _ arguments: [String]) async throws {
        let output = try FileDescriptor.open(FilePath(logPath(name)), .writeOnly, options: [.append, .create],
                                             permissions: [.ownerReadWrite, .groupRead, .otherRead])
        let errors = try output.duplicate()
        let id = state.withLock { state in
            state.children.removeAll { $0.name == name && !$0.isRunning }
            state.arguments[name] = arguments
            defer { state.nextID += 1 }
            state.children.append(Child(id: state.nextID, name: name))
            return state.nextID
        }
        let (started, starting) = AsyncThrowingStream<Int32, any Error>.makeStream()
        let lifetime = Task { [self] in
            do {
                let result = try await run(.path(FilePath(arguments[0])), arguments: Arguments(Array(arguments.dropFirst())),
                                           input: .none, output: .fileDescriptor(output, closeAfterSpawningProcess: true),
                                           error: .fileDescriptor(errors, closeAfterSpawningProcess: true)) { execution in
                    let pid = execution.processIdentifier.value
                    state.withLock { state in
                        if let index = state.children.firstIndex(where: { $0.id == id }) { state.children[index].pid = pid }
                    }
                    starting.yield(pid)
                    starting.finish()
                }
                state.withLock { state in
                    if let index = state.children.firstIndex(where: { $0.id == id }) { state.children[index].exit = result.terminationStatus }
                }
            } catch {
                state.withLock { $0.children.removeAll { $0.id == id } }
                starting.finish(throwing: error)
            }
        }
        state.withLock { $0.lifetimes[id] = lifetime }
        for try await _ in started { return }
    }

    /// Sends `signal` to the named child (kill, stop, resume in a drill). Only to a child that
    /// has not been reaped, so a recycled pid is never signalled.
    func signal(_ name: String, _ signal: Int32) {
        state.withLock { state in
            for child in state.children where child.name == name && child.isRunning { kill(child.pid!, signal) }
        }
    }

    /// Starts the named child again as it was first started (after it was killed); a child
    /// that is still running is resumed instead.
    func restart(_ name: String) async throws {
        let (running, arguments) = state.withLock { state in
            (state.children.first { $0.name == name && $0.isRunning }?.pid, state.arguments[name])
        }
        if let running {
            kill(running, SIGCONT)
            return
        }
        guard let arguments else { throw StartError("no process named \(name)") }
        try await launch(name, arguments)
    }

    func requestStop() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.stopRequested = true
            defer { state.stopWaiters = [] }
            return state.stopWaiters
        }
        waiters.forEach { $0.resume() }
    }

    func waitForStop() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state -> Bool in
                if state.stopRequested { return true }
                state.stopWaiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    /// SIGTERM to every child (gateways drain), then SIGKILL to whatever is left after 10 s;
    /// returns once every child has been reaped.
    func stopAll() async {
        // A stopped (SIGSTOP) child would never see the SIGTERM.
        signalAll(SIGCONT)
        signalAll(SIGTERM)
        let deadline = ContinuousClock.now + .seconds(10)
        while state.withLock({ $0.children.contains(where: \.isRunning) }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        signalAll(SIGKILL)
        for lifetime in state.withLock({ Array($0.lifetimes.values) }) { await lifetime.value }
    }

    private func signalAll(_ signal: Int32) {
        state.withLock { state in
            for child in state.children where child.isRunning { kill(child.pid!, signal) }
        }
    }

    struct StartError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}

/// Ctrl-C and SIGTERM become one call, instead of killing `up` before it stops its children
/// (ServiceLifecycle's signal sequence: the signals are ignored by default and delivered here).
enum SignalTrap {
    static func install(_ handler: @escaping @Sendable () -> Void) {
        Task {
            for await _ in await UnixSignalsSequence(trapping: .sigint, .sigterm) { handler() }
        }
    }
}

/// Readiness checks over real sockets.
enum ReadinessCheck {
    static func isReady(_ readiness: LaunchPlan.Readiness) async -> Bool {
        switch readiness {
        case .tcpAccepts(let address):
            guard let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.milliseconds(500)).connect(host: address.host, port: address.port).get() else { return false }
            try? await channel.close()
            return true
        case .httpOK(let address, let path):
            return (try? await AdminClient.send(.GET, address, path: path))?.status == 200
        case .federated(let address, let peers):
            guard let reply = try? await AdminClient.send(.GET, address, path: "/v1/members"), reply.status == 200 else { return false }
            guard let body = try? JSONDecoder().decode(AdminAPI.MembersBody.self, from: Data(reply.body.utf8)) else { return false }
            let alive = Set(body.members.filter { $0.state == .alive }.map(\.name))
            return Set(peers).isSubset(of: alive)
        }
    }
}
