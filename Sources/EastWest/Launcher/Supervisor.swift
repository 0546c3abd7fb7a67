import Foundation
import Federation
import MeshProxyCore
import NIOCore
import NIOPosix
import Synchronization
import UnixSignals

/// Starts and stops the processes of a launch plan. Each child logs to its own file; a child
/// that dies before it is ready stops the whole start-up with its last log lines, and stopping
/// sends SIGTERM, waits, then SIGKILL, so nothing is left running.
final class Supervisor: Sendable {
    private struct State {
        var processes: [(name: String, process: Process)] = []
        /// How each child was started, so a drill can start it again.
        var arguments: [String: [String]] = [:]
        var stopRequested = false
        var stopWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let logDirectory: String
    private let state = Mutex(State())

    init(logDirectory: String) { self.logDirectory = logDirectory }

    var pids: [String: Int32] {
        state.withLock { Dictionary($0.processes.map { ($0.name, $0.process.processIdentifier) }, uniquingKeysWith: { a, _ in a }) }
    }

    func start(_ plan: LaunchPlan, readyTimeout: Duration) async throws {
        for child in plan.children where !child.arguments.isEmpty {
            if state.withLock({ $0.stopRequested }) { throw StartError("interrupted") }
            try launch(child.name, child.arguments)
        }
        let deadline = ContinuousClock.now + readyTimeout
        for child in plan.children {
            while true {
                if let dead = state.withLock({ $0.processes.first { !$0.process.isRunning } }) {
                    let logPath = "\(logDirectory)/\(dead.name.replacingOccurrences(of: "/", with: "_")).log"
                    let tail = (try? String(contentsOfFile: logPath, encoding: .utf8))?.split(separator: "\n").suffix(5).joined(separator: "\n") ?? ""
                    throw StartError("\(dead.name) exited with status \(dead.process.terminationStatus) before the topology was ready:\n\(tail)\n(full log: \(logPath))")
                }
                if await ReadinessCheck.isReady(child.readiness) { break }
                if ContinuousClock.now > deadline { throw StartError("\(child.name) was not ready within \(readyTimeout)") }
                if state.withLock({ $0.stopRequested }) { throw StartError("interrupted") }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    private func launch(_ name: String, _ arguments: [String]) throws {
        let logPath = "\(logDirectory)/\(name.replacingOccurrences(of: "/", with: "_")).log"
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        state.withLock { state in
            state.processes.removeAll { $0.name == name && !$0.process.isRunning }
            state.processes.append((name, process))
            state.arguments[name] = arguments
        }
    }

    /// Sends `signal` to the named child (kill, stop, resume in a drill).
    func signal(_ name: String, _ signal: Int32) {
        for process in state.withLock({ $0.processes.filter { $0.name == name }.map(\.process) }) where process.isRunning {
            kill(process.processIdentifier, signal)
        }
    }

    /// Starts the named child again as it was first started (after it was killed); a child
    /// that is still running is resumed instead.
    func restart(_ name: String) throws {
        let (running, arguments) = state.withLock { state in
            (state.processes.first { $0.name == name && $0.process.isRunning }?.process, state.arguments[name])
        }
        if let running {
            kill(running.processIdentifier, SIGCONT)
            return
        }
        guard let arguments else { throw StartError("no process named \(name)") }
        try launch(name, arguments)
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

    /// SIGTERM to every child (gateways drain), then SIGKILL to whatever is left after 10 s.
    func stopAll() async {
        let processes = state.withLock { $0.processes.map(\.process) }
        // A stopped (SIGSTOP) child would never see the SIGTERM.
        for process in processes where process.isRunning { kill(process.processIdentifier, SIGCONT); kill(process.processIdentifier, SIGTERM) }
        let deadline = ContinuousClock.now + .seconds(10)
        while processes.contains(where: \.isRunning), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for process in processes { process.waitUntilExit() }
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
