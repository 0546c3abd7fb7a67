import ArgumentParser
import Foundation
import MeshProxyCore

/// An mTLS load generator: the engine drills use, with every knob a benchmark needs.
struct LoadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "load",
        abstract: "Drive HTTP/1.1, HTTP/2 or TCP load (mTLS or plaintext) and report throughput and latency percentiles.",
        discussion: """
        Open loop with --rate (latency measured from the intended send time, so a stall is not \
        hidden); closed loop without it. --idle-connections N opens N connections, holds them \
        idle for --idle-for, then sends one request on each at once.
        """)

    @Option(help: "Address to connect to, HOST:PORT.") var target: String
    @Option(help: "Server name: SNI, certificate check and Host/:authority (default: the target host).") var sni: String?
    @Option(help: "Client certificate chain (PEM); with --key and --ca the load is mTLS.") var cert: String?
    @Option(help: "Client private key (PEM).") var key: String?
    @Option(help: "CA certificate the server is verified against (PEM).") var ca: String?
    @Flag(help: "Protocol (default HTTP/1.1).") var wireProtocol: LoadProfile.WireProtocol = .http1
    @Option(help: "Kept-alive connections, or requests in flight with --new-connection-per-request.") var connections = 32
    @Option(help: "HTTP/2 streams in flight per connection.") var streams = 1
    @Option(help: "Requests per second (open loop); omit for closed loop.") var rate: Int?
    @Option(help: "How long to send, e.g. 10s or 1m.") var duration = "10s"
    @Flag(help: "A new connection (and TLS handshake) for every request.") var newConnectionPerRequest = false
    @Option(help: "Request path.") var path = "/"
    @Option(name: .customLong("header"), help: "A request header, 'Name: value' (repeatable).") var headers: [String] = []
    @Option(help: "Request body bytes (POST), or bytes sent per --tcp connection.") var payload = 0
    @Option(help: "A request not answered this long after it was due is a timeout.") var timeout = "10s"
    @Option(help: "Event loops (threads) generating load.") var threads = 1
    @Option(help: "Open this many connections, hold them idle, then burst one request on each.") var idleConnections: Int?
    @Option(help: "How long --idle-connections are held before the burst.") var idleFor = "30s"
    @Flag(help: "Print the summary as JSON.") var json = false

    func run() async throws {
        guard let address = HostPort(parsing: target) else { throw ValidationError("--target '\(target)' must be HOST:PORT") }
        guard let duration = ConfigDuration(parsing: duration)?.duration, duration > .zero else {
            throw ValidationError("--duration '\(self.duration)' is not a duration such as 10s or 1m")
        }
        guard let timeout = ConfigDuration(parsing: timeout)?.duration, timeout > .zero else {
            throw ValidationError("--timeout '\(self.timeout)' is not a duration such as 2s")
        }
        guard let idleFor = ConfigDuration(parsing: idleFor)?.duration else {
            throw ValidationError("--idle-for '\(self.idleFor)' is not a duration such as 30s")
        }
        let files = [cert, key, ca].compactMap { $0 }
        guard files.isEmpty || files.count == 3 else { throw ValidationError("mTLS needs all of --cert, --key and --ca") }
        guard connections > 0, streams > 0, threads > 0, payload >= 0, (rate ?? 1) > 0 else {
            throw ValidationError("--connections, --streams, --threads and --rate must be positive")
        }
        if wireProtocol == .http2 && newConnectionPerRequest {
            throw ValidationError("--new-connection-per-request is an HTTP/1.1 or --tcp mode")
        }

        var profile = LoadProfile(target: address, serverName: sni ?? address.host)
        if let cert, let key, let ca { profile.tls = GatewayConfig.TLSFiles(certificateChain: cert, privateKey: key, rootCertificate: ca) }
        profile.wireProtocol = wireProtocol
        profile.connections = connections
        profile.streamsPerConnection = wireProtocol == .http2 ? streams : 1
        profile.rate = rate
        profile.duration = duration
        profile.newConnectionPerRequest = newConnectionPerRequest || wireProtocol == .tcp
        profile.path = path
        for header in headers {
            guard let colon = header.firstIndex(of: ":"), colon != header.startIndex else {
                throw ValidationError("--header '\(header)': expected 'Name: value'")
            }
            profile.headers.append((String(header[..<colon]), header[header.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        profile.payload = payload
        profile.timeout = timeout
        profile.threads = threads
        profile.idleConnections = idleConnections
        profile.idleFor = idleFor

        let engine: LoadEngine
        do {
            engine = try LoadEngine(profile: profile)
        } catch {
            printError("error: cannot load the client certificates: \(error)")
            throw ExitCode(2)
        }
        let start = ContinuousClock.now + .milliseconds(100)
        await engine.run(start: start)
        let elapsed = idleConnections == nil ? duration : ContinuousClock.now - start
        let summary = LoadSummary(profile: profile, totals: engine.recorder.total, elapsed: elapsed)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(summary), as: UTF8.self))
        } else {
            print(summary.text)
        }
        if summary.succeeded == 0 { throw ExitCode(1) }
    }
}

extension LoadProfile.WireProtocol: EnumerableFlag {
    package static func name(for value: Self) -> NameSpecification {
        switch value {
        case .http1: .customLong("http1")
        case .http2: .customLong("http2")
        case .tcp: .customLong("tcp")
        }
    }
}

/// What `eastwest load` prints: the numbers a benchmark table needs.
struct LoadSummary: Codable {
    var target: String
    var wireProtocol: String
    var mode: String
    var connections: Int
    var seconds: Double
    var sent: Int
    var succeeded: Int
    var failed: [String: Int]
    var connectionFailures: [String: Int]
    var requestsPerSecond: Double
    var bytesPerSecond: Double
    var latencyMs: [String: Double]

    init(profile: LoadProfile, totals: LoadRecorder.Totals, elapsed: Duration) {
        target = profile.target.description
        wireProtocol = profile.wireProtocol.rawValue
        mode = profile.idleConnections != nil ? "idle-then-burst"
            : (profile.rate.map { "open loop, \($0) req/s" } ?? "closed loop")
            + (profile.newConnectionPerRequest ? ", new connection per request" : "")
        connections = profile.idleConnections ?? profile.connections
        seconds = elapsed.seconds
        sent = totals.sent
        succeeded = totals.succeeded
        failed = totals.failed
        connectionFailures = totals.connectionFailures
        requestsPerSecond = seconds > 0 ? Double(succeeded) / seconds : 0
        bytesPerSecond = seconds > 0 ? Double(totals.responseBytes) / seconds : 0
        let histogram = totals.latencies
        func ms(_ value: UInt64) -> Double { (Double(value) / 1000 * 1000).rounded() / 1000 }
        latencyMs = histogram.totalCount == 0 ? [:] : [
            "p50": ms(histogram.valueAtPercentile(50)), "p90": ms(histogram.valueAtPercentile(90)),
            "p99": ms(histogram.valueAtPercentile(99)), "p99.9": ms(histogram.valueAtPercentile(99.9)),
            "max": ms(histogram.max),
        ]
    }

    var text: String {
        var lines = ["\(target) \(wireProtocol), \(mode), \(connections) connection(s), \(String(format: "%.1f", seconds)) s"]
        lines.append(String(format: "  requests/s %.0f   MB/s %.2f   sent %d   succeeded %d", requestsPerSecond, bytesPerSecond / 1e6, sent, succeeded))
        let errors = failed.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        lines.append("  errors: " + (errors.isEmpty ? "none" : errors))
        if !connectionFailures.isEmpty {
            lines.append("  connections that failed to open: " + connectionFailures.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        if !latencyMs.isEmpty {
            let order = ["p50", "p90", "p99", "p99.9", "max"]
            lines.append("  latency ms: " + order.compactMap { key in latencyMs[key].map { "\(key) \(String(format: "%.3f", $0))" } }.joined(separator: "  "))
        }
        return lines.joined(separator: "\n")
    }
}
