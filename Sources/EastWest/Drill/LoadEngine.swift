import Foundation
import Histogram
import MeshProxyCore
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// Open-loop load through a gateway, as a mesh client: request i is due at start + i / rate,
/// each one a new mTLS connection with the client identity and one HTTP/1.0 GET; at most
/// `concurrency` are in flight, and a request that waits for a slot is late by that wait —
/// latency is measured from when it was due, so a stall is not hidden (coordinated omission).
/// Results are counted in the second the request was due.
final class LoadEngine: Sendable {
    private let gateway: HostPort
    private let host: String
    private let context: NIOSSLContext
    private let rate: Int
    private let timeout: Duration
    private let slots: Slots
    private let seconds = Mutex<[Int: Accumulator]>([:])

    struct Accumulator {
        var second: DrillSecond
        /// Latency in microseconds, 3 significant digits, up to an hour.
        var latencies = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    }

    init(gateway: HostPort, host: String, client: GatewayConfig.TLSFiles, rate: Int, concurrency: Int, timeout: Duration) throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateChain = try NIOSSLCertificate.fromPEMFile(client.certificateChain).map { .certificate($0) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: client.privateKey, format: .pem))
        tls.trustRoots = .file(client.rootCertificate)
        self.context = try NIOSSLContext(configuration: tls)
        self.gateway = gateway
        self.host = host
        self.rate = rate
        self.timeout = timeout
        self.slots = Slots(concurrency)
    }

    /// Sends for `duration` from `start`; returns when every request has ended.
    func run(start: ContinuousClock.Instant, duration: Duration) async {
        let total = Int(Double(rate) * duration.seconds)
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<total {
                let due = start + .seconds(Double(i) / Double(rate))
                try? await Task.sleep(until: due, clock: .continuous)
                if Task.isCancelled { break }
                let second = Int((due - start).seconds)
                group.addTask { await self.request(due: due, second: second) }
            }
        }
    }

    /// The numbers of one second (nil until something was due in it).
    func snapshot(second: Int) -> DrillSecond? {
        seconds.withLock { seconds in
            guard var accumulator = seconds[second] else { return nil }
            let latencies = accumulator.latencies
            if latencies.totalCount > 0 {
                accumulator.second.latencyP50Ms = Double(latencies.valueAtPercentile(50)) / 1000
                accumulator.second.latencyP99Ms = Double(latencies.valueAtPercentile(99)) / 1000
                accumulator.second.latencyMaxMs = Double(latencies.max) / 1000
            }
            return accumulator.second
        }
    }

    private func record(second: Int, _ update: (inout Accumulator) -> Void) {
        seconds.withLock { seconds in
            var accumulator = seconds[second] ?? Accumulator(second: DrillSecond(second: second))
            update(&accumulator)
            seconds[second] = accumulator
        }
    }

    private func request(due: ContinuousClock.Instant, second: Int) async {
        record(second: second) { $0.second.sent += 1 }
        await slots.acquire()
        // A client gives up `timeout` after it meant to send, whether the time went waiting for
        // a connection slot or waiting for the answer.
        let left = timeout - (ContinuousClock.now - due)
        let outcome: Outcome = left <= .zero ? .failure("timeout") : await exchange(timeout: left)
        await slots.release()
        let latency = (ContinuousClock.now - due).seconds * 1000
        record(second: second) { accumulator in
            switch outcome {
            case .success(let cluster, let locality):
                accumulator.second.succeeded += 1
                accumulator.second.byCluster[cluster, default: 0] += 1
                accumulator.second.byLocality[locality.isEmpty ? "unknown" : locality, default: 0] += 1
                _ = accumulator.latencies.record(UInt64(max(0, latency * 1000)))
            case .failure(let kind):
                accumulator.second.failed[kind, default: 0] += 1
            }
        }
    }

    enum Outcome: Sendable { case success(cluster: String, locality: String), failure(String) }

    /// A promise that takes the first answer (the reader, the timeout and a failed connect race).
    final class Once: Sendable {
        let promise: EventLoopPromise<Outcome>
        private let completed = Atomic<Bool>(false)
        init(_ promise: EventLoopPromise<Outcome>) { self.promise = promise }
        func succeed(_ outcome: Outcome) {
            if completed.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged { promise.succeed(outcome) }
        }
        var futureResult: EventLoopFuture<Outcome> { promise.futureResult }
    }

    private func exchange(timeout: Duration) async -> Outcome {
        let done = Once(MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Outcome.self))
        let context = self.context, host = self.host
        let request = ByteBuffer(string: "GET / HTTP/1.0\r\nHost: \(host)\r\n\r\n")
        let timer = done.futureResult.eventLoop.scheduleTask(in: TimeAmount(timeout)) { done.succeed(.failure("timeout")) }
        ClientBootstrap(group: done.futureResult.eventLoop)
            .connectTimeout(TimeAmount(timeout))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // The gateway certificate names service hosts; verify it by the host we ask for.
                    try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: host))
                    try channel.pipeline.syncOperations.addHandler(ResponseReader(done: done))
                }
            }
            .connect(host: gateway.host, port: gateway.port)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    channel.writeAndFlush(request, promise: nil)
                    done.futureResult.whenComplete { _ in channel.close(promise: nil) }
                case .failure(let error):
                    done.succeed(.failure("\(error)".contains("imeout") ? "timeout" : "connect"))
                }
            }
        let outcome = (try? await done.futureResult.get()) ?? .failure("connect")
        timer.cancel()
        return outcome
    }

    /// Reads the whole HTTP/1.0 answer; the demo backend says which cluster and locality served.
    private final class ResponseReader: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        private var bytes: [UInt8] = []
        private let done: Once
        private var handshook = false
        init(done: Once) { self.done = done }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case TLSUserEvent.handshakeCompleted = event { handshook = true }
            context.fireUserInboundEventTriggered(event)
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            bytes += buffer.readBytes(length: buffer.readableBytes) ?? []
        }
        func channelInactive(context: ChannelHandlerContext) { finish() }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if !handshook, error is NIOSSLError || "\(error)".contains("SSL") { done.succeed(.failure("tls")) }
            finish()
            context.close(promise: nil)
        }
        private func finish() {
            guard !bytes.isEmpty else { done.succeed(.failure(handshook ? "reset" : "tls")); return }
            let text = String(decoding: bytes, as: UTF8.self)
            guard text.hasPrefix("HTTP/1.") && text.dropFirst(9).hasPrefix("200") else { done.succeed(.failure("status")); return }
            let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
            let answer = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: String]
            done.succeed(.success(cluster: answer?["cluster"] ?? "unknown", locality: answer?["locality"] ?? ""))
        }
    }
}

/// At most N at once; waiters are served in order.
actor Slots {
    private var free: Int
    private var waiters: [CheckedContinuation<Void, Never>] = []
    init(_ count: Int) { free = count }
    func acquire() async {
        if free > 0 { free -= 1; return }
        await withCheckedContinuation { waiters.append($0) }
    }
    func release() {
        if waiters.isEmpty { free += 1 } else { waiters.removeFirst().resume() }
    }
}
