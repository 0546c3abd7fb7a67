import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOSSL
import NIOTLS

/// One HTTP/2 connection of a load run carrying up to `streamsPerConnection` requests at once
/// (prior knowledge; over TLS, ALPN offers h2). Streams are plain frames on the connection,
/// not child channels: a channel per request would make the generator the bottleneck.
final class HTTP2LoadConnection: ChannelInboundHandler, LoadLane {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private struct Stream {
        var request: Int
        var status = 0
        var bytes = 0
    }

    private let shard: LoadShard
    private var context: ChannelHandlerContext?
    private var nextStreamID = 1
    private var streams: [HTTP2StreamID: Stream] = [:]
    private var streamOfRequest: [Int: HTTP2StreamID] = [:]
    private var ready = false
    private(set) var isOpen = true
    private var flushScheduled = false
    private let headers: HPACKHeaders
    private static let largestWindow = Int(Int32.max)
    /// Response bytes taken from the connection window since it was last topped up.
    private var consumed = 0

    private init(shard: LoadShard) {
        self.shard = shard
        let profile = shard.profile
        headers = HPACKHeaders([(":method", profile.payload > 0 ? "POST" : "GET"), (":path", profile.path),
                                (":scheme", shard.context == nil ? "http" : "https"), (":authority", profile.serverName)]
                               + profile.headers.map { ($0.name.lowercased(), $0.value) })
    }

    static func open(shard: LoadShard) -> HTTP2LoadConnection {
        let connection = HTTP2LoadConnection(shard: shard)
        let bound = NIOLoopBound(connection, eventLoop: shard.loop)
        shard.connect(shard.bootstrap { channel in
            // Header validation is the server's business; the generator only needs :status.
            // Flow control is the receiver's job when streams are bare frames: every stream
            // starts with the largest window, and the connection window is kept topped up.
            var settings = nioDefaultSettings.filter { $0.parameter != .initialWindowSize }
            settings.append(HTTP2Setting(parameter: .initialWindowSize, value: Self.largestWindow))
            try channel.pipeline.syncOperations.addHandler(NIOHTTP2Handler(mode: .client, initialSettings: settings, headerBlockValidation: .disabled))
            try channel.pipeline.syncOperations.addHandler(bound.value)
        }).whenComplete { result in
            let connection = bound.value, shard = connection.shard
            switch result {
            case .success:
                break  // ready at channelActive (plaintext) or when TLS is up
            case .failure(let error):
                connection.isOpen = false
                shard.laneFailedToOpen(error: LoadShard.connectFailureKind(error))
            }
        }
        return connection
    }

    private func becameReady() {
        guard !ready, isOpen, let context else { return }
        ready = true
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: .rootStream,
                                                         payload: .windowUpdate(windowSizeIncrement: Self.largestWindow - 65_535))), promise: nil)
        shard.laneReady(self, slots: max(1, shard.profile.streamsPerConnection))
    }

    func send(id: Int) {
        guard let context else { return }
        let stream = HTTP2StreamID(nextStreamID)
        nextStreamID += 2
        streams[stream] = Stream(request: id)
        streamOfRequest[id] = stream
        let body = shard.payload
        context.write(wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .headers(.init(headers: headers, endStream: body == nil)))), promise: nil)
        if let body {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .data(.init(data: .byteBuffer(body), endStream: true)))), promise: nil)
        }
        // Requests issued in one pass over the event loop share one flush (and TLS record).
        if !flushScheduled {
            flushScheduled = true
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            context.eventLoop.execute {
                let connection = bound.value
                connection.flushScheduled = false
                connection.context?.flush()
            }
        }
    }

    func abandon(id: Int) {
        guard let stream = streamOfRequest.removeValue(forKey: id) else { return }
        streams[stream] = nil
        context?.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: stream, payload: .rstStream(.cancel))), promise: nil)
        if isOpen { shard.laneReady(self, slots: 1) }
    }

    func close() {
        context?.close(promise: nil)
    }

    // MARK: - ChannelInboundHandler

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelActive(context: ChannelHandlerContext) {
        // The HTTP/2 handler before this one has sent the preface by now.
        if shard.context == nil { becameReady() }
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { becameReady() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case .headers(let headers):
            guard streams[frame.streamID] != nil else { return }
            if let value = headers.headers.first(name: ":status"), let code = Int(value) { streams[frame.streamID]!.status = code }
            if headers.endStream { finish(frame.streamID, failure: nil) }
        case .data(let data):
            guard streams[frame.streamID] != nil else { return }
            streams[frame.streamID]!.bytes += data.data.readableBytes
            consumed += data.data.readableBytes + (data.paddingBytes ?? 0)
            if consumed > Self.largestWindow / 2 {
                context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: consumed))), promise: nil)
                consumed = 0
            }
            if data.endStream { finish(frame.streamID, failure: nil) }
        case .rstStream:
            finish(frame.streamID, failure: "reset")
        case .goAway:
            context.close(promise: nil)
        default:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        isOpen = false
        for stream in Array(streams.keys) { finish(stream, failure: ready ? "reset" : "tls") }
        shard.laneClosed(self)
        context.fireChannelInactive()
    }

    private func finish(_ streamID: HTTP2StreamID, failure: String?) {
        guard let stream = streams.removeValue(forKey: streamID) else { return }
        streamOfRequest[stream.request] = nil
        let outcome: LoadOutcome = failure.map { .failure($0) }
            ?? ((200..<400).contains(stream.status) ? .success(cluster: nil, locality: nil) : .failure("status"))
        shard.ended(id: stream.request, outcome: outcome, responseBytes: stream.bytes)
        if isOpen { shard.laneReady(self, slots: 1) }
    }
}
