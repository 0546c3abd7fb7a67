import NIOCore
import NIOHTTP1

/// Where an `HTTPConnectionManager` answers its client: an HTTP/1 connection (the manager is a
/// handler on its pipeline) or one stream of an HTTP/2 connection, whose streams are frames in
/// the connection's `HTTP2ServerStreams` rather than a child channel each.
package protocol HTTPDownstream: AnyObject {
    var eventLoop: any EventLoop { get }
    /// Whether a response written now leaves without piling up (the socket, and for an HTTP/2
    /// stream its flow-control window).
    var isWritable: Bool { get }
    func write(_ part: HTTPServerResponsePart)
    func writeAndFlush(_ part: HTTPServerResponsePart)
    func flush()
    /// HTTP/1: the connection. HTTP/2: the stream (reset if it is still open).
    func close()
    /// Backpressure on the request: stop (or resume) taking the client's bytes.
    func pauseReads(_ pause: Bool)
    /// The HTTP/1 connection's handler context, for a WebSocket upgrade to glue bytes onto; nil
    /// for an HTTP/2 stream.
    var http1Context: ChannelHandlerContext? { get }
}

/// An HTTP/1 connection, through the manager's own handler context (until the manager leaves
/// the pipeline; then what it writes goes nowhere, as on a closed channel).
final class HTTP1Downstream: HTTPDownstream {
    private var context: ChannelHandlerContext?
    let eventLoop: any EventLoop

    init(_ context: ChannelHandlerContext) {
        self.context = context
        eventLoop = context.eventLoop
    }

    /// The context holds the manager, which holds this.
    func detach() {
        context = nil
    }

    var isWritable: Bool { context?.channel.isWritable ?? false }
    var http1Context: ChannelHandlerContext? { context }

    func write(_ part: HTTPServerResponsePart) {
        context?.write(NIOAny(part), promise: nil)
    }

    func writeAndFlush(_ part: HTTPServerResponsePart) {
        context?.writeAndFlush(NIOAny(part), promise: nil)
    }

    func flush() {
        context?.flush()
    }

    func close() {
        context?.close(promise: nil)
    }

    func pauseReads(_ pause: Bool) {
        guard let context else { return }
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.channel.setOption(ChannelOptions.autoRead, value: !pause).whenSuccess { if !pause { bound.value.read() } }
    }
}
