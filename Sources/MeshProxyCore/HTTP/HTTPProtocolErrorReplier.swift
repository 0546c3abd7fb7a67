import NIOCore
import NIOHTTP1

/// Envoy's answer to a client that breaks HTTP/1: 400 `Bad Request`, or 431 past 60 KiB of
/// headers (Envoy's `max_request_headers_kb`), flag `DPE`, then the connection closes. Written
/// only when no response has started (otherwise the close is all the client can be told); logged
/// and counted like any request. Other connections and requests are untouched.
final class HTTPProtocolErrorReplier: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let dataPlane: DataPlane
    private let connection: ConnectionRecord
    private var responseOpen = false

    init(dataPlane: DataPlane, connection: ConnectionRecord) {
        self.dataPlane = dataPlane
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.fireChannelRead(data) }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200: responseOpen = true
        case .end: responseOpen = false
        case .head, .body: break
        }
        context.write(data, promise: promise)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else { return context.fireErrorCaught(error) }
        let detail = "malformed HTTP/1 from the client: \(parserError)"
        let reply = parserError == .headerOverflow ? HTTPLocalReply.headersTooLarge(detail) : .badRequest(detail)
        var record = HTTPRequestRecord()
        record.sourcePrincipal = connection.sourcePrincipal
        record.serverName = connection.serverName
        record.downstreamLocal = connection.downstreamLocal
        record.downstreamRemote = connection.downstreamRemote
        record.flags = reply.flags
        record.detail = detail
        record.directResponse = true
        if !responseOpen {
            record.responseCode = Int(reply.status.code)
            record.bytesSent = reply.payload.count
            context.write(wrapOutboundOut(.head(reply.head(closing: true))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: reply.payload)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
        record.finish(logger: dataPlane.logger, format: dataPlane.accessLog)
        context.close(promise: nil)
    }
}
