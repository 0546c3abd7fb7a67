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
        abstract: "HTTP/1.1 echo service: any request gets JSON naming the cluster, version and what arrived (method, path, authority, headers); /status/<code>, /delay/<ms>, /bytes/<n>, POST /echo, /count; /_demo/requests lists what it received.",
        discussion: """
        Failure modes, by request header, so one backend serves many tests: with `x-demo-key: K`,
        `x-demo-fail: N` answers the first N requests carrying K with `x-demo-fail-code` (503 unless
        given); `x-demo-hang-first: N` with `x-demo-hang-ms: T` holds the first N for T ms first;
        `x-demo-reset-first: N` closes the connection on the first N instead of answering.
        `GET /_demo/attempts/K`, on the backend's own address, says how many requests carrying K
        arrived.
        """)

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
    /// What arrived, for `GET /_demo/requests` (the most recent 10 000).
    let received = ReceivedRequests()
    /// Requests per `x-demo-key`, for the failure modes and `GET /_demo/attempts/<key>`.
    let keyed = KeyedCounts()

    enum CodingKeys: String, CodingKey { case service, cluster, locality, endpoint, version }

    /// The answer: who answered, and what reached it.
    struct Answer: Encodable {
        var service, version, cluster, locality, endpoint: String
        var method, path, authority: String
        var headers: [String: String]
    }

    struct Received: Encodable, Sendable {
        var time: String
        var method, path, authority: String
        var headers: [String: String]
    }

    final class ReceivedRequests: Sendable {
        private let list = Mutex<[Received]>([])
        func add(_ request: Received) { list.withLock { $0.append(request); if $0.count > 10_000 { $0.removeFirst($0.count - 10_000) } } }
        func reset() { list.withLock { $0 = [] } }
        var all: [Received] { list.withLock { $0 } }
    }

    final class KeyedCounts: Sendable {
        private let counts = Mutex<[String: Int]>([:])
        /// Counts one more request carrying `key`; its number, from 1.
        func arrived(_ key: String) -> Int { counts.withLock { $0[key, default: 0] += 1; return $0[key]! } }
        func count(_ key: String) -> Int { counts.withLock { $0[key] ?? 0 } }
        func reset() { counts.withLock { $0 = [:] } }
    }

    final class AnsweredCount: Sendable {
        private let value = Atomic<Int>(0)
        func add() { value.add(1, ordering: .relaxed) }
        var current: Int { value.load(ordering: .relaxed) }
    }

    func respond(_ request: ControlHTTPRequest, on eventLoop: any EventLoop) -> EventLoopFuture<ControlHTTPResponse> {
        let parts = request.path.split(separator: "/").map(String.init)
        if parts == ["count"] { return eventLoop.makeSucceededFuture(ControlHTTPResponse(text: "\(answered.current)\n")) }
        if parts.first == "_demo" {
            // The backend's own view, on its own address only: a gateway adds x-forwarded-for.
            guard !request.headers.contains(name: "x-forwarded-for") else {
                return eventLoop.makeSucceededFuture(ControlHTTPResponse(status: .notFound, text: "/_demo is only served on the backend's own address\n"))
            }
            switch (request.method, parts.dropFirst().first) {
            case (.GET, "requests"): return eventLoop.makeSucceededFuture(encoded(received.all, status: .ok))
            case (.GET, "attempts") where parts.count == 3:
                return eventLoop.makeSucceededFuture(ControlHTTPResponse(text: "\(keyed.count(parts[2]))\n"))
            case (.POST, "reset"):
                received.reset()
                keyed.reset()
                return eventLoop.makeSucceededFuture(ControlHTTPResponse(text: "reset\n"))
            default: return eventLoop.makeSucceededFuture(ControlHTTPResponse(status: .notFound, text: "GET /_demo/requests, GET /_demo/attempts/<key> or POST /_demo/reset\n"))
            }
        }
        answered.add()
        // Milliseconds: tests read retry back-off from the gaps between arrivals.
        received.add(Received(time: Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)), method: request.method.rawValue, path: request.uri,
                              authority: request.headers.first(name: "host") ?? "", headers: Self.headers(of: request)))
        if let key = request.headers.first(name: "x-demo-key") {
            let number = keyed.arrived(key)
            func first(_ name: String) -> Bool { request.headers.first(name: name).flatMap(Int.init).map { number <= $0 } ?? false }
            if first("x-demo-reset-first") { return eventLoop.makeSucceededFuture(.connectionReset) }
            let failing = first("x-demo-fail")
            let code = request.headers.first(name: "x-demo-fail-code").flatMap(Int.init).flatMap { (100...599).contains($0) ? $0 : nil } ?? 503
            if first("x-demo-hang-first") {
                let wait = Int64(min(request.headers.first(name: "x-demo-hang-ms").flatMap(Int.init) ?? 0, 600_000))
                return eventLoop.scheduleTask(in: .milliseconds(wait)) {
                    json(status: failing ? HTTPResponseStatus(statusCode: code) : .ok, request)
                }.futureResult
            }
            if failing { return eventLoop.makeSucceededFuture(json(status: HTTPResponseStatus(statusCode: code), request)) }
        }
        switch (request.method, parts.first, parts.dropFirst().first.flatMap { Int($0) }) {
        case (.POST, "echo", _):
            return eventLoop.makeSucceededFuture(ControlHTTPResponse(contentType: "application/octet-stream", body: request.body))
        case (_, "status", let code?) where (100...599).contains(code):
            return eventLoop.makeSucceededFuture(json(status: HTTPResponseStatus(statusCode: code), request))
        case (_, "delay", let ms?) where ms >= 0:
            return eventLoop.scheduleTask(in: .milliseconds(Int64(min(ms, 600_000)))) { json(status: .ok, request) }.futureResult
        case (_, "bytes", let count?) where count >= 0 && count <= 1 << 30:
            // The pattern repeats every 256 bytes: written a period at a time, not a byte at a time.
            let period = (0..<256).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            var buffer = ByteBuffer()
            buffer.reserveCapacity(count)
            var left = count
            while left > 0 {
                buffer.writeBytes(period.prefix(left))
                left -= min(left, 256)
            }
            return eventLoop.makeSucceededFuture(ControlHTTPResponse(contentType: "application/octet-stream", body: buffer))
        default:
            // Any other method and path: an echo, as httpbin's /anything or Istio's echo server.
            return eventLoop.makeSucceededFuture(json(status: .ok, request))
        }
    }

    static func headers(of request: ControlHTTPRequest) -> [String: String] {
        var headers: [String: String] = [:]
        for header in request.headers {
            let name = header.name.lowercased()
            headers[name] = headers[name].map { "\($0), \(header.value)" } ?? header.value
        }
        return headers
    }

    private func json(status: HTTPResponseStatus, _ request: ControlHTTPRequest) -> ControlHTTPResponse {
        encoded(Answer(service: service, version: version, cluster: cluster, locality: locality, endpoint: endpoint,
                       method: request.method.rawValue, path: request.uri, authority: request.headers.first(name: "host") ?? "",
                       headers: Self.headers(of: request)), status: status)
    }

    private func encoded(_ value: some Encodable, status: HTTPResponseStatus) -> ControlHTTPResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var body = (try? encoder.encode(value)) ?? Data()
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
