import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import MeshProxyCore

/// Binds a plain TCP server in the test process; each accepted connection (half-close allowed)
/// gets a fresh handler.
private func startTestServer(host: String, port: Int,
                             handler: @escaping @Sendable () -> some ChannelInboundHandler) async throws -> any Channel {
    try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
        .childChannelOption(.allowRemoteHalfClosure, value: true)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler()) }
        }
        .bind(host: host, port: port).get()
}

/// A plain TCP echo server in the test process: echoes every byte and closes its write side
/// once the client's side has ended, so a client sees EOF only if half-close crossed the
/// whole chain.
final class TCPEchoServer: Sendable {
    private let channel: any Channel
    private let halfClosed: NIOLockedValueBox<Bool>

    var sawHalfClose: Bool { halfClosed.withLockedValue { $0 } }

    private init(channel: any Channel, halfClosed: NIOLockedValueBox<Bool>) {
        self.channel = channel
        self.halfClosed = halfClosed
    }

    static func start(host: String, port: Int) async throws -> TCPEchoServer {
        let flag = NIOLockedValueBox(false)
        let channel = try await startTestServer(host: host, port: port) { Echo(flag: flag) }
        return TCPEchoServer(channel: channel, halfClosed: flag)
    }

    func stop() { channel.close(promise: nil) }

    private final class Echo: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let flag: NIOLockedValueBox<Bool>
        init(flag: NIOLockedValueBox<Bool>) { self.flag = flag }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.write(data, promise: nil) }
        func channelReadComplete(context: ChannelHandlerContext) { context.flush() }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case ChannelEvent.inputClosed = event {
                flag.withLockedValue { $0 = true }
                context.close(mode: .output, promise: nil)
            }
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }
}

/// A plain TCP server in the test process that answers every connection at once with `payload`
/// and then ends its side (FIN), whatever the client sends or doesn't: a backend that streams
/// a file and hangs up.
final class TCPFirehoseServer: Sendable {
    private let channel: any Channel

    private init(channel: any Channel) { self.channel = channel }

    static func start(host: String, port: Int, payload: [UInt8]) async throws -> TCPFirehoseServer {
        let bytes = ByteBuffer(bytes: payload)
        let channel = try await startTestServer(host: host, port: port) { Firehose(payload: bytes) }
        return TCPFirehoseServer(channel: channel)
    }

    func stop() { channel.close(promise: nil) }

    private final class Firehose: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let payload: ByteBuffer
        init(payload: ByteBuffer) { self.payload = payload }
        func channelActive(context: ChannelHandlerContext) {
            context.writeAndFlush(wrapOutboundOut(payload)).assumeIsolated().whenComplete { _ in
                context.close(mode: .output, promise: nil)
            }
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }
}

/// A mesh client written with NIO: mTLS with a workload certificate, a chosen SNI, and
/// control over half-close that curl does not give.
enum MeshTLSClient {
    /// Sends `payload`, ends the write side (TLS close_notify), reads until the server ends.
    static func sendAndHalfClose(_ payload: [UInt8], to address: HostPort, serverName: String,
                                 client: String, root: String) async throws -> [UInt8] {
        try await exchange(payload, to: address, serverName: serverName, client: client, root: root, halfClose: true)
    }

    /// Sends `payload` and reads until the gateway closes the connection.
    static func sendAndWaitForClose(_ payload: [UInt8], to address: HostPort, serverName: String,
                                    client: String, root: String) async throws -> [UInt8] {
        try await exchange(payload, to: address, serverName: serverName, client: client, root: root, halfClose: false)
    }

    /// A client context with a workload certificate, built once per test.
    static func context(client: String, root: String) throws -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateChain = try NIOSSLCertificate.fromPEMFile("\(client)/cert-chain.pem").map { .certificate($0) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: "\(client)/key.pem", format: .pem))
        tls.trustRoots = .file(root)
        // The gateway certificate names service hosts, not Istio-form SNI strings.
        tls.certificateVerification = .noHostnameVerification
        return try NIOSSLContext(configuration: tls)
    }

    private static func exchange(_ payload: [UInt8], to address: HostPort, serverName: String, client: String,
                                 root: String, halfClose: Bool) async throws -> [UInt8] {
        try await exchange(payload, to: address, serverName: serverName, context: try context(client: client, root: root), halfClose: halfClose)
    }

    /// Sends `payload` and reads the answer slowly through a small receive buffer, so the
    /// gateway's socket toward this client stays full and its writes queue up. Ends the write
    /// side (close_notify) once `halfCloseAfter` bytes of the answer arrived (0: right after
    /// sending). `endError`: what the channel saw instead of the gateway's close_notify (an
    /// unclean shutdown), nil after a clean TLS end.
    static func sendAndReadSlowly(_ payload: [UInt8], to address: HostPort, serverName: String, client: String,
                                  root: String, halfCloseAfter: Int) async throws -> (bytes: [UInt8], endError: (any Error)?) {
        let channelError = NIOLockedValueBox<(any Error)?>(nil)
        let bytes = try await exchange(payload, to: address, serverName: serverName, context: try context(client: client, root: root),
                                       halfClose: halfCloseAfter == 0, slowReader: true, halfCloseAfter: halfCloseAfter,
                                       channelError: channelError)
        return (bytes, channelError.withLockedValue { $0 })
    }

    static func exchange(_ payload: [UInt8], to address: HostPort, serverName: String, context: NIOSSLContext,
                         halfClose: Bool, slowReader: Bool = false, halfCloseAfter: Int = 0,
                         channelError: NIOLockedValueBox<(any Error)?> = .init(nil)) async throws -> [UInt8] {
        let done = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: [UInt8].self)
        let channel: any Channel
        do {
            var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelOption(.allowRemoteHalfClosure, value: true)
            if slowReader { bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: 16_384) }
            channel = try await bootstrap
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if slowReader { try channel.pipeline.syncOperations.addHandler(ReadThrottle()) }
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: serverName))
                        try channel.pipeline.syncOperations.addHandler(Collector(promise: done, halfCloseAfter: halfCloseAfter, error: channelError))
                    }
                }
                .connect(host: address.host, port: address.port).get()
        } catch {
            done.fail(error)
            throw error
        }
        do {
            try await channel.writeAndFlush(ByteBuffer(bytes: payload))
        } catch {
            // The write only says the channel was closed; the error that closed it is the story.
            throw ExchangeFailure(write: error, channel: channelError.withLockedValue { $0 })
        }
        if halfClose {
            do {
                try await channel.close(mode: .output)
            } catch ChannelError.alreadyClosed {
                // The whole answer arrived and the channel closed before this close's promise
                // completed. Whether the end reached the server is what the tests check
                // (`sawHalfClose`, the answer itself).
            }
        }
        return try await done.futureResult.get()
    }

    /// Holds every socket read back by a millisecond.
    private final class ReadThrottle: ChannelOutboundHandler {
        typealias OutboundIn = Never
        func read(context: ChannelHandlerContext) {
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(1)) { context.read() }
        }
    }

    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        private var bytes: [UInt8] = []
        private let promise: EventLoopPromise<[UInt8]>
        private var halfCloseAfter: Int
        private let error: NIOLockedValueBox<(any Error)?>
        init(promise: EventLoopPromise<[UInt8]>, halfCloseAfter: Int, error: NIOLockedValueBox<(any Error)?>) {
            self.promise = promise
            self.halfCloseAfter = halfCloseAfter
            self.error = error
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            bytes += buffer.readBytes(length: buffer.readableBytes) ?? []
            if halfCloseAfter > 0, bytes.count >= halfCloseAfter {
                halfCloseAfter = 0
                context.close(mode: .output, promise: nil)
            }
        }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case ChannelEvent.inputClosed = event {
                promise.succeed(bytes)
                context.close(promise: nil)
            }
        }
        func channelInactive(context: ChannelHandlerContext) { promise.succeed(bytes) }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            self.error.withLockedValue { first in if first == nil { first = error } }
            // An unclean TLS shutdown after all bytes arrived still counts as the end.
            promise.succeed(bytes)
            context.close(promise: nil)
        }
    }
}

/// The test client could not send: the write's error and the one the channel saw first.
struct ExchangeFailure: Error, CustomStringConvertible {
    var write: any Error
    var channel: (any Error)?
    var description: String { "send failed: \(write); the channel saw first: \(channel.map { "\($0)" } ?? "no error")" }
}

/// Many short mTLS connections through a gateway, each one HTTP/1.0 GET to a demo backend,
/// counted by what the backend says about itself (its locality, cluster, …).
enum MeshLoad {
    static func run(count: Int, concurrency: Int = 8, gateway: HostPort, host: String, client: String, root: String,
                    field: String = "locality") async throws -> [String: Int] {
        let context = try MeshTLSClient.context(client: client, root: root)
        let request = Array("GET / HTTP/1.0\r\nHost: \(host)\r\n\r\n".utf8)
        return try await withThrowingTaskGroup(of: [String: Int].self) { group in
            for worker in 0..<concurrency {
                group.addTask {
                    var counts: [String: Int] = [:]
                    for _ in stride(from: worker, to: count, by: concurrency) {
                        let reply = (try? await MeshTLSClient.exchange(request, to: gateway, serverName: host, context: context, halfClose: false)) ?? []
                        let text = String(decoding: reply, as: UTF8.self)
                        let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
                        let answer = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
                        counts[answer?[field] as? String ?? "failed", default: 0] += 1
                    }
                    return counts
                }
            }
            var total: [String: Int] = [:]
            for try await counts in group { total.merge(counts, uniquingKeysWith: +) }
            return total
        }
    }
}
