import Foundation
import NIOConcurrencyHelpers
import Testing

/// Where the package and its built `eastwest` binary are. `swift test` builds the executable
/// along with the tests; the integration tests run it as a real process.
enum PackagePaths {
    static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }  // Support/, EastWestIntegrationTests/, Tests/, root
        return url.path
    }()

    static var eastwest: String {
        let candidates = ["\(root)/.build/debug/eastwest", "\(root)/.build/x86_64-unknown-linux-gnu/debug/eastwest",
                          "\(root)/.build/aarch64-unknown-linux-gnu/debug/eastwest"]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }
}

/// A fresh temporary directory, removed by `cleanUp`.
struct TemporaryDirectory {
    let path: String
    init(_ label: String) throws {
        path = NSTemporaryDirectory() + "eastwest-\(label)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func cleanUp() { try? FileManager.default.removeItem(atPath: path) }
}

/// A process the test started; `stop` always reaps it.
final class ChildProcess: @unchecked Sendable {  // one test task; its reaper thread and the exit only read `process` and lock `stopping`
    let process = Process()
    let logPath: String
    let name: String
    private let stopping = NIOLockedValueBox(false)

    init(name: String, arguments: [String], logPath: String) throws {
        self.name = name
        self.logPath = logPath
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        try process.run()
        LiveChildren.shared.insert(self)
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func signal(_ number: Int32) { if process.isRunning { kill(pid, number) } }

    /// Waits for exit up to `timeout`; returns the exit status, or nil if still running.
    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// Sends SIGTERM and returns at once; a reaper thread waits up to 5 s, then SIGKILLs and
    /// reaps. Called from `defer`, which cannot await: waiting here would hold one of the test
    /// runner's cooperative threads (one per core, two on CI) while a gateway drains.
    func stop() {
        let alreadyStopping = stopping.withLockedValue { flag in
            defer { flag = true }
            return flag
        }
        guard process.isRunning, !alreadyStopping else { return }
        kill(pid, SIGTERM)
        Thread { [self] in
            let deadline = Date().addingTimeInterval(5)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(pid, SIGKILL) }
            process.waitUntilExit()
        }.start()
    }
}

/// Every child a test started. When the test process exits, whatever still runs is stopped
/// like in a test and the exit waits for it (bounded: `stop` SIGKILLs after 5 s) — a SIGKILL
/// of `eastwest up` straight away would orphan the gateways it stops on SIGTERM.
final class LiveChildren: @unchecked Sendable {  // guarded by lock
    static let shared: LiveChildren = {
        atexit { LiveChildren.shared.stopAllAndWait() }
        return LiveChildren()
    }()
    private let lock = NSLock()
    private var children: [ChildProcess] = []
    func insert(_ child: ChildProcess) { lock.lock(); children.append(child); lock.unlock() }
    private func stopAllAndWait() {
        lock.lock(); let all = children; lock.unlock()
        all.forEach { $0.stop() }
        let deadline = Date().addingTimeInterval(6)
        while all.contains(where: \.isRunning) && Date() < deadline { usleep(20_000) }
    }
}

/// Every process a test started, stopped together even when the test fails.
final class ProcessSet: @unchecked Sendable {  // used from one test task only
    private(set) var children: [ChildProcess] = []
    let directory: TemporaryDirectory

    init(_ label: String) throws { directory = try TemporaryDirectory(label) }

    @discardableResult
    func start(_ name: String, _ arguments: [String]) throws -> ChildProcess {
        let child = try ChildProcess(name: name, arguments: [PackagePaths.eastwest] + arguments,
                                     logPath: "\(directory.path)/\(name).log")
        children.append(child)
        return child
    }

    func stopAll() {
        children.reversed().forEach { $0.stop() }
    }

    deinit { stopAll(); directory.cleanUp() }
}

/// Runs a command to completion and captures its output.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a command to completion and captures its output. The wait happens on a thread of its
/// own: a test blocked in `eastwest drill` or `eastwest load` on a cooperative thread starved
/// every other test's NIO client of the thread its next `await` needed (CI, two cores: clients
/// finished their handshake and never sent, the gateway idled them out).
@discardableResult
func runCommand(_ executable: String, _ arguments: [String], stdin: Data? = nil, timeout: TimeInterval = 30) async throws -> CommandResult {
    try await withCheckedThrowingContinuation { continuation in
        Thread {
            continuation.resume(with: Result { try runCommandBlocking(executable, arguments, stdin: stdin, timeout: timeout) })
        }.start()
    }
}

/// `runCommand` for a `defer`, which cannot await; only for commands that end at once (iptables).
@discardableResult
func runCommandBlocking(_ executable: String, _ arguments: [String], stdin: Data? = nil, timeout: TimeInterval = 30) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe(), err = Pipe(), input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = stdin == nil ? FileHandle.nullDevice : input
    try process.run()
    if let stdin {
        input.fileHandleForWriting.write(stdin)
        try? input.fileHandleForWriting.close()
    }
    // Read both pipes fully before waiting, so a large output cannot block the child.
    let outData = LockedData(), errData = LockedData()
    let group = DispatchGroup()
    for (pipe, sink) in [(out, outData), (err, errData)] {
        group.enter()
        DispatchQueue.global().async { sink.set(pipe.fileHandleForReading.readDataToEndOfFile()); group.leave() }
    }
    if group.wait(timeout: .now() + timeout) == .timedOut {
        process.terminate()
    }
    process.waitUntilExit()
    return CommandResult(status: process.terminationStatus,
                         stdout: String(decoding: outData.get(), as: UTF8.self),
                         stderr: String(decoding: errData.get(), as: UTF8.self))
}

final class LockedData: @unchecked Sendable {  // guarded by lock
    private let lock = NSLock()
    private var data = Data()
    func set(_ value: Data) { lock.lock(); data = value; lock.unlock() }
    func get() -> Data { lock.lock(); defer { lock.unlock() }; return data }
}

/// Polls until `condition` holds or `timeout` passes.
func eventually(timeout: Duration = .seconds(15), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

let isRoot = getuid() == 0

/// `eastwest up TOPOLOGY --state-dir DIR/state` as a child process, returned once its ready.json
/// exists; the caller stops it.
func startUp(_ topology: String, in dir: TemporaryDirectory) async throws -> (up: ChildProcess, state: String) {
    let state = "\(dir.path)/state"
    let up = try ChildProcess(name: "up", arguments: [PackagePaths.eastwest, "up", topology, "--state-dir", state], logPath: "\(dir.path)/up.log")
    let ready = await eventually(timeout: .seconds(90)) { FileManager.default.fileExists(atPath: "\(state)/ready.json") }
    if !ready { up.stop() }
    try #require(ready, "eastwest up \(topology) did not become ready: \(up.log)")
    return (up, state)
}
