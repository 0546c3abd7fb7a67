import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// The server side of an HTTP/2 connection (a client's, or a peer gateway's pooled one): every
/// stream is an entry in this handler's table with its own `HTTPConnectionManager`, fed the
/// stream's frames as HTTP/1-style parts, and answering through the `Stream` it was given.
///
/// Not a child channel per stream with an HTTP/1 codec on its pipeline, as NIOHTTP2's
/// multiplexer would make: that was a `Channel`, a pipeline, two handler contexts and a codec
/// allocated per request, and a third of the gateway's time at 800 streams in flight (bench
/// l4). The work the multiplexer did is here instead: inbound flow control (windows topped up as
/// the manager takes the bytes, held while it pauses the client), per-stream writability from
/// the outbound window, the connection's idle timeout (Envoy's HCM `idle_timeout`: no stream
/// for the period, GOAWAY), and the header conversion `HTTP2FramePayloadToHTTP1ServerCodec` did.
///
/// Sits after `NIOHTTP2Handler` (without a multiplexer), which still owns the protocol: frame
/// parsing, HPACK, stream states, SETTINGS, PING, outbound flow control.
final class HTTP2ServerStreams: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// One stream, as its connection manager sees its client.
    final class Stream: HTTPDownstream {
        let id: HTTP2StreamID
        fileprivate let connection: HTTP2ServerStreams
        fileprivate var manager: HTTPConnectionManager?
        /// The last frame written, held so the response's end rides on it (END_STREAM on the
        /// last DATA or on a HEADERS without body) instead of a frame of its own.
        fileprivate var held: HTTP2Frame.FramePayload?
        fileprivate var responseEnded = false
        fileprivate var closed = false
        fileprivate var readsPaused = false
        /// The inbound window as NIOHTTP2 last reported it (nil: the client has ended its side).
        fileprivate var inboundWindow: Int?
        /// The outbound window: past it, NIOHTTP2 buffers what is written.
        fileprivate var outboundWindow = Int.max
        fileprivate var touched = false

        fileprivate init(id: HTTP2StreamID, connection: HTTP2ServerStreams) {
            self.id = id
            self.connection = connection
        }

        var eventLoop: any EventLoop { connection.eventLoop }
        var isWritable: Bool { outboundWindow > 0 && connection.channelWritable }
        var http1Context: ChannelHandlerContext? { nil }

        func write(_ part: HTTPServerResponsePart) {
            guard !closed, !responseEnded, let context = connection.context else { return }
            switch part {
            case .head(let head):
                emitHeld(context)
                held = .headers(.init(headers: HPACKHeaders(responseHead: head)))
            case .body(let body):
                emitHeld(context)
                held = .data(.init(data: body))
            case .end(let trailers):
                responseEnded = true
                if let trailers {
                    emitHeld(context)
                    emit(.headers(.init(headers: HPACKHeaders(regularHeaders: trailers), endStream: true)), context)
                } else {
                    switch held {
                    case .headers(var headers):
                        headers.endStream = true
                        held = nil
                        emit(.headers(headers), context)
                    case .data(var data):
                        data.endStream = true
                        held = nil
                        emit(.data(data), context)
                    default:
                        emit(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)), context)
                    }
                }
            }
        }

        func writeAndFlush(_ part: HTTPServerResponsePart) {
            write(part)
            flush()
        }

        func flush() {
            guard let context = connection.context else { return }
            emitHeld(context)
            context.flush()
        }

        func close() {
            guard !closed, let context = connection.context else { return }
            emitHeld(context)
            closed = true
            context.writeAndFlush(NIOAny(HTTP2Frame(streamID: id, payload: .rstStream(.cancel))), promise: nil)
        }

        func pauseReads(_ pause: Bool) {
            guard pause != readsPaused else { return }
            readsPaused = pause
            if !pause, let window = inboundWindow { connection.topUp(self, window: window) }
        }

        private func emitHeld(_ context: ChannelHandlerContext) {
            guard let frame = held else { return }
            held = nil
            emit(frame, context)
        }

        private func emit(_ payload: HTTP2Frame.FramePayload, _ context: ChannelHandlerContext) {
            context.write(NIOAny(HTTP2Frame(streamID: id, payload: payload)), promise: nil)
        }
    }

    /// Makes the connection manager of a new stream.
    private let makeManager: () -> HTTPConnectionManager
    private var streams: [HTTP2StreamID: Stream] = [:]
    /// Streams given request parts in the current read, told when it completes.
    private var touched: [Stream] = []
    fileprivate var context: ChannelHandlerContext?
    /// The connection's loop (the handler is added on it).
    fileprivate let eventLoop: any EventLoop
    fileprivate var channelWritable = true
    /// The window each stream and the connection start with (NIOHTTP2's default target), and
    /// are topped up to once below half of it, as NIOHTTP2's `InboundWindowManager` does.
    private static let targetWindow = 65_535

    private let idlePeriod: TimeAmount
    private var idleSince = NIODeadline.now()
    private var lastStream = HTTP2StreamID.rootStream
    private var idleCheck: RepeatedTask?

    init(eventLoop: any EventLoop, idleTimeout: Duration, makeManager: @escaping () -> HTTPConnectionManager) {
        self.eventLoop = eventLoop
        idlePeriod = TimeAmount(idleTimeout)
        self.makeManager = makeManager
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        channelWritable = context.channel.isWritable
        // Checked a few times per period rather than re-armed per stream.
        let step = TimeAmount.idleCheckStep(for: idlePeriod)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: step, delay: step) { _ in
            let (handler, context) = bound.value
            handler.closeIfIdle(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
        closeAllStreams()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        idleCheck = nil
        closeAllStreams()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case .headers(let headers):
            if let stream = streams[frame.streamID] {
                // A second header block is the request's trailers (END_STREAM, NIOHTTP2 checks).
                deliver(.end(HTTPHeaders(regularHeadersFrom: headers.headers)), to: stream)
            } else {
                open(frame.streamID, headers: headers, context: context)
            }
        case .data(let data):
            guard let stream = streams[frame.streamID], case .byteBuffer(let body) = data.data else { return }
            if body.readableBytes > 0 { deliver(.body(body), to: stream) }
            if data.endStream { deliver(.end(nil), to: stream) }
        default:
            // RST_STREAM arrives as StreamClosedEvent; the rest is NIOHTTP2's.
            break
        }
    }

    private func open(_ id: HTTP2StreamID, headers: HTTP2Frame.FramePayload.Headers, context: ChannelHandlerContext) {
        let head: HTTPRequestHead
        do {
            head = try HTTPRequestHead(http2Request: headers.headers, endStream: headers.endStream)
        } catch {
            // As NIOHTTP2's codec fails such a stream: reset, the connection untouched.
            context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.protocolError))), promise: nil)
            return
        }
        let stream = Stream(id: id, connection: self)
        let manager = makeManager()
        stream.manager = manager
        streams[id] = stream
        if id > lastStream { lastStream = id }
        manager.start(on: stream)
        deliver(.head(head), to: stream)
        if headers.endStream { deliver(.end(nil), to: stream) }
    }

    private func deliver(_ part: HTTPServerRequestPart, to stream: Stream) {
        guard let manager = stream.manager else { return }
        if !stream.touched {
            stream.touched = true
            touched.append(stream)
        }
        manager.received(part)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !touched.isEmpty {
            let streams = touched
            touched.removeAll(keepingCapacity: true)
            for stream in streams {
                stream.touched = false
                stream.manager?.readComplete()
            }
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let event as NIOHTTP2WindowUpdatedEvent:
            windowUpdated(event, context: context)
        case let event as StreamClosedEvent:
            guard let stream = streams.removeValue(forKey: event.streamID) else { return }
            streamClosed(stream)
        case let event as NIOHTTP2BulkStreamWindowChangeEvent:
            // The client's SETTINGS moved every stream's outbound window.
            for stream in streams.values where stream.outboundWindow != .max {
                let wasWritable = stream.isWritable
                stream.outboundWindow += event.delta
                if stream.isWritable != wasWritable { stream.manager?.downstreamWritabilityChanged() }
            }
        case is NIOHTTP2StreamCreatedEvent:
            break
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func windowUpdated(_ event: NIOHTTP2WindowUpdatedEvent, context: ChannelHandlerContext) {
        if event.streamID == .rootStream {
            // The connection's window is topped up whatever a stream does: each stream's own
            // window bounds what its client can send.
            if let window = event.inboundWindowSize, let increment = Self.windowIncrement(window: window) {
                context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
            }
            return
        }
        guard let stream = streams[event.streamID] else { return }
        stream.inboundWindow = event.inboundWindowSize
        if let window = event.inboundWindowSize, !stream.readsPaused { topUp(stream, window: window) }
        if let window = event.outboundWindowSize {
            let wasWritable = stream.isWritable
            stream.outboundWindow = window
            if stream.isWritable != wasWritable { stream.manager?.downstreamWritabilityChanged() }
        }
    }

    fileprivate func topUp(_ stream: Stream, window: Int) {
        guard !stream.closed, let context, let increment = Self.windowIncrement(window: window) else { return }
        stream.inboundWindow = window + increment
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: stream.id, payload: .windowUpdate(windowSizeIncrement: increment))), promise: nil)
    }

    /// NIOHTTP2's `InboundWindowManager`: back to the target once the window is below half of it.
    static func windowIncrement(window: Int) -> Int? {
        guard window < targetWindow else { return nil }
        if window < 0 { return min(targetWindow - window, Int(Int32.max)) }
        let increment = targetWindow - window
        return increment >= window ? increment : nil
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        channelWritable = context.channel.isWritable
        for stream in Array(streams.values) { stream.manager?.downstreamWritabilityChanged() }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A stream's error resets that stream (NIOHTTP2 has sent RST_STREAM; StreamClosedEvent
        // follows); the connection's own end it.
        if error is NIOHTTP2Errors.StreamError { return }
        context.fireErrorCaught(error)
    }

    private func streamClosed(_ stream: Stream) {
        stream.closed = true
        let manager = stream.manager
        stream.manager = nil
        manager?.downstreamClosed()
        if streams.isEmpty { idleSince = .now() }
    }

    private func closeAllStreams() {
        let open = streams.values
        streams.removeAll()
        for stream in open { streamClosed(stream) }
    }

    private func closeIfIdle(context: ChannelHandlerContext) {
        guard streams.isEmpty, NIODeadline.now() - idleSince >= idlePeriod else { return }
        idleCheck?.cancel()
        idleCheck = nil
        let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: lastStream, errorCode: .noError, opaqueData: nil))
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(goAway)).whenComplete { _ in channel.close(promise: nil) }
    }
}

extension HTTPRequestHead {
    /// An HTTP/2 request's header block as HTTP/1 parts see it, as NIOHTTP2's server codec
    /// makes it: `:authority` as `host` (first), `content-length: 0` or chunked framing for a
    /// body method without a length, the pseudo-headers gone.
    init(http2Request headers: HPACKHeaders, endStream: Bool) throws {
        var method: String?, path: String?, authority: String?, hasHost = false, hasLength = false
        for (name, value, _) in headers {
            guard name.utf8.first == UInt8(ascii: ":") else {
                if !hasHost, name == "host" { hasHost = true }
                if !hasLength, name == "content-length" { hasLength = true }
                continue
            }
            switch name {
            case ":method": method = value
            case ":path": path = value
            case ":authority": authority = value
            default: break
            }
        }
        guard let method, let path, authority != nil || hasHost else { throw HTTP2RequestHeadError() }
        let httpMethod = HTTPMethod(rawValue: method)
        var raw: [(String, String)] = []
        raw.reserveCapacity(headers.count)
        if !hasHost, let authority { raw.append(("host", authority)) }
        switch httpMethod {
        case .GET, .HEAD, .DELETE, .CONNECT, .TRACE: break
        default: if !hasLength { raw.append(endStream ? ("content-length", "0") : ("transfer-encoding", "chunked")) }
        }
        raw.appendRegularFields(of: headers)
        self.init(version: .init(major: 2, minor: 0), method: httpMethod, uri: path, headers: HTTPHeaders(raw))
    }
}

/// A request header block without `:method`, `:path`, or an authority.
struct HTTP2RequestHeadError: Error {}

extension HTTPHeaders {
    init(regularHeadersFrom headers: HPACKHeaders) {
        var raw: [(String, String)] = []
        raw.reserveCapacity(headers.count)
        raw.appendRegularFields(of: headers)
        self.init(raw)
    }
}

extension [(String, String)] {
    /// An HTTP/2 header block's fields, its pseudo-headers left out.
    fileprivate mutating func appendRegularFields(of headers: HPACKHeaders) {
        for (name, value, _) in headers where name.utf8.first != UInt8(ascii: ":") { append((name, value)) }
    }
}

extension HPACKHeaders {
    /// A response head as an HTTP/2 header block: `:status` first, names lower-cased, the
    /// connection-specific headers HTTP/2 forbids left out (RFC 9113 §8.2.2).
    init(responseHead head: HTTPResponseHead) {
        var raw: [(String, String)] = []
        raw.reserveCapacity(head.headers.count + 1)
        raw.append((":status", String(head.status.code)))
        Self.appendRegular(head.headers, to: &raw)
        self.init(raw)
    }

    init(regularHeaders headers: HTTPHeaders) {
        var raw: [(String, String)] = []
        raw.reserveCapacity(headers.count)
        Self.appendRegular(headers, to: &raw)
        self.init(raw)
    }

    private static func appendRegular(_ headers: HTTPHeaders, to raw: inout [(String, String)]) {
        for (name, value) in headers {
            let lowered = name.utf8.contains { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") } ? name.lowercased() : name
            switch lowered {
            case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade": continue
            default: raw.append((lowered, value))
            }
        }
    }
}
