import ArgumentParser
import Foundation
import Synchronization
import MeshProxyCore
import NIOCore
import NIOHTTP1
import NIOPosix

/// A stand-in service instance that says who it is, so a user (and a drill) sees which
/// cluster and locality answered.
struct DemoBackendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-backend",
        abstract: "HTTP/1.1 demo service: GET / says which cluster answered; /status/<code>, /delay/<ms>, /bytes/<n>, POST /echo.")

    @Option(help: "Address to listen on, host:port.") var listen: String
    @Option(help: "Service host name it answers for.") var service: String
    @Option(help: "Cluster name it reports.") var cluster: String
    @Option(help: "Locality it reports, region/zone/subzone.") var locality: String = ""
    @Option(help: "Version label it reports.") var version: String = ""
    @Option(help: .hidden) var parentPid: Int32?

    func run() async throws {
        guard let address = HostPort(parsing: listen) else {
            throw ValidationError("--listen '\(listen)' is not host:port")
        }
        if let parentPid { ParentWatch.exitWhenGone(parentPid) }
        let identity = DemoIdentity(service: service, cluster: cluster, locality: locality, endpoint: address.description, version: version)
        let channel: any Channel
        do {
            channel = try await ControlHTTPServer.bind(host: address.host, port: address.port, role: "demo backend",
                                                     group: MultiThreadedEventLoopGroup.singleton, responder: identity.respond)
        } catch {
            printError("error: \(error)")
            throw ExitCode(1)
        }
        try await channel.closeFuture.get()
    }
}

struct DemoIdentity: Sendable, Encodable {
    var service: String
    var cluster: String
    var locality: String
    var endpoint: String
    var version: String
    /// Requests answered so far (`GET /count`, which is not counted): a count independent of
    /// any load generator or gateway.
    let answered = AnsweredCount()

    enum CodingKeys: String, CodingKey { case service, cluster, locality, endpoint, version }

    final class AnsweredCount: Sendable {
        private let value = Atomic<Int>(0)
        func add() { value.add(1, ordering: .relaxed) }
        var current: Int { value.load(ordering: .relaxed) }
    }

    func respond(_ request: ControlHTTPRequest, on eventLoop: any EventLoop) -> EventLoopFuture<ControlHTTPResponse> {
        let parts = request.path.split(separator: "/").map(String.init)
        if parts == ["count"] { return eventLoop.makeSucceededFuture(ControlHTTPResponse(text: "\(answered.current)\n")) }
        answered.add()
        switch (request.method, parts.first, parts.dropFirst().first.flatMap { Int($0) }) {
        case (.POST, "echo", _):
            return eventLoop.makeSucceededFuture(ControlHTTPResponse(contentType: "application/octet-stream", body: request.body))
        case (_, "status", let code?) where (100...599).contains(code):
            return eventLoop.makeSucceededFuture(json(status: HTTPResponseStatus(statusCode: code)))
        case (_, "delay", let ms?) where ms >= 0:
            return eventLoop.scheduleTask(in: .milliseconds(Int64(min(ms, 600_000)))) { json(status: .ok) }.futureResult
        case (_, "bytes", let count?) where count >= 0 && count <= 1 << 30:
            var buffer = ByteBuffer()
            buffer.reserveCapacity(count)
            for i in 0..<count { buffer.writeInteger(UInt8(truncatingIfNeeded: i &* 31 &+ 7)) }
            return eventLoop.makeSucceededFuture(ControlHTTPResponse(contentType: "application/octet-stream", body: buffer))
        case (_, nil, _):
            return eventLoop.makeSucceededFuture(json(status: .ok))
        default:
            return eventLoop.makeSucceededFuture(ControlHTTPResponse(status: .notFound, text: "try /, /status/<code>, /delay/<ms>, /bytes/<n>, POST /echo, /count\n"))
        }
    }

    private func json(status: HTTPResponseStatus) -> ControlHTTPResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var body = (try? encoder.encode(self)) ?? Data()
        body.append(0x0A)
        return ControlHTTPResponse(status: status, contentType: "application/json", body: ByteBuffer(bytes: body))
    }
}

/// Child processes of `eastwest up` exit when their parent is gone, so even a SIGKILLed `up`
/// leaves no orphan listening on the topology's addresses.
enum ParentWatch {
    static func exitWhenGone(_ parent: Int32) {
        Task.detached {
            while true {
                try? await Task.sleep(for: .seconds(1))
                if getppid() != parent { exit(0) }
            }
        }
    }
}
