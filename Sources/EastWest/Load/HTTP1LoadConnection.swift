import Foundation
import MeshProxyCore
import NIOCore
import NIOSSL
import NIOTLS

/// One HTTP/1.1 (or raw TCP) connection of a load run: one request at a time, the response
/// found by `HTTP1ResponseScanner`. A one-shot connection carries a single request and closes.
final class HTTP1LoadConnection: ChannelInboundHandler, LoadLane {
    typealias InboundIn = ByteBuffer

    private let shard: LoadShard
    private let oneShot: Int?
    private var channel: (any Channel)?
    private var scanner: HTTP1ResponseScanner
    private var current: Int?
    private var ready = false
    private(set) var isOpen = true
    private var failure: String?
    /// Raw TCP: bytes the server sent back; the request ends when it closes.
    private var tcpBytes = 0

    private init(shard: LoadShard, oneShot: Int?) {
        self.shard = shard
        self.oneShot = oneShot
        self.scanner = HTTP1ResponseScanner(keepsBody: shard.profile.readsAnswers)
    }

    static func open(shard: LoadShard, oneShot: Int?) -> HTTP1LoadConnection {
        let connection = HTTP1LoadConnection(shard: shard, oneShot: oneShot)
        let handler = NIOLoopBound(connection, eventLoop: shard.loop)
        shard.connect(shard.bootstrap { channel in
            try channel.pipeline.syncOperations.addHandler(handler.value)
        }).whenComplete { result in
            let connection = handler.value, shard = connection.shard
            switch result {
            case .success(let channel):
                connection.channel = channel
                if shard.context == nil { connection.becameReady() }
            case .failure(let error):
                connection.isOpen = false
                let kind = LoadShard.connectFailureKind(error)
                if let id = oneShot {
                    shard.ended(id: id, outcome: .failure(kind), responseBytes: 0)
                } else {
                    shard.laneFailedToOpen(error: kind)
                }
            }
        }
        return connection
    }

    private func becameReady() {
        guard !ready, isOpen else { return }
        ready = true
        if let oneShot { send(id: oneShot) } else { shard.laneReady(self, slots: 1) }
    }

    func send(id: Int) {
        guard let channel else { return }
        current = id
        scanner.reset()
        if shard.profile.wireProtocol == .tcp && shard.profile.payload > 0 {
            // A raw payload has no end of its own: half-close so the server knows it is all.
            channel.writeAndFlush(shard.request).assumeIsolated().whenSuccess { _ in
                channel.close(mode: .output, promise: nil)
            }
        } else {
            channel.writeAndFlush(shard.request, promise: nil)
        }
    }

    func abandon(id: Int) {
        guard current == id else { return }
        current = nil
        close()
    }

    func close() {
        channel?.close(promise: nil)
    }

    // MARK: - ChannelInboundHandler

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { becameReady() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let id = current else { return }
        if shard.profile.wireProtocol == .tcp {
            tcpBytes += unwrapInboundIn(data).readableBytes
            return
        }
        switch scanner.consume(unwrapInboundIn(data)) {
        case .needMore: break
        case .complete(let status, let keepAlive): complete(id: id, status: status, keepAlive: keepAlive, context: context)
        case .malformed:
            current = nil
            shard.ended(id: id, outcome: .failure("protocol"), responseBytes: scanner.bytes)
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if failure == nil {
            failure = ready ? "reset" : (error is NIOSSLError || "\(error)".contains("SSL") ? "tls" : "connect")
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        isOpen = false
        if let id = current {
            current = nil
            if shard.profile.wireProtocol == .tcp {
                let outcome: LoadOutcome = tcpBytes > 0 && failure == nil ? .success(cluster: nil, locality: nil) : .failure(failure ?? "reset")
                shard.ended(id: id, outcome: outcome, responseBytes: tcpBytes)
            } else if case .complete(let status, _) = scanner.connectionEnded() {
                finish(id: id, status: status)
            } else {
                let kind = failure ?? (ready ? "reset" : "tls")
                shard.ended(id: id, outcome: .failure(kind), responseBytes: scanner.bytes)
            }
        } else if let oneShot, !ready {
            shard.ended(id: oneShot, outcome: .failure(failure ?? "tls"), responseBytes: 0)
        }
        shard.laneClosed(self)
        context.fireChannelInactive()
    }

    private func complete(id: Int, status: Int, keepAlive: Bool, context: ChannelHandlerContext) {
        current = nil
        finish(id: id, status: status)
        if oneShot != nil || !keepAlive {
            context.close(promise: nil)
        } else if isOpen {
            shard.laneReady(self, slots: 1)
        }
    }

    private func finish(id: Int, status: Int) {
        let outcome: LoadOutcome
        if (200..<400).contains(status) {
            outcome = shard.profile.readsAnswers ? Self.answer(scanner.body) : .success(cluster: nil, locality: nil)
        } else {
            outcome = .failure("status")
        }
        shard.ended(id: id, outcome: outcome, responseBytes: scanner.bytes)
    }

    /// The demo backend answers with JSON naming its cluster and locality.
    private static func answer(_ body: [UInt8]) -> LoadOutcome {
        let answer = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
        return .success(cluster: answer?["cluster"] as? String ?? "unknown", locality: answer?["locality"] as? String ?? "")
    }
}
