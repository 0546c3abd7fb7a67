import NIOCore
import NIOHTTP2

/// Envoy's HTTP connection manager `idle_timeout` on an HTTP/2 connection: once no stream has
/// been open for the period, the connection is told GOAWAY (NO_ERROR, naming the last stream it
/// took) and closed, as an HTTP/1 connection is closed between requests. A client holding an
/// idle h2 connection open for ever would otherwise keep its descriptors and TLS buffers here.
///
/// Sits after `NIOHTTP2Handler` on the connection's pipeline; the stream initializer tells it
/// of each stream (the inline multiplexer keeps its stream events to itself). Checked a few
/// times per period rather than re-armed per stream.
final class HTTP2IdleTimeout: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let period: TimeAmount
    private var openStreams = 0
    private var lastStream = HTTP2StreamID.rootStream
    private var idleSince = NIODeadline.now()
    private var check: RepeatedTask?

    init(period: Duration) {
        self.period = TimeAmount(period)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let step = TimeAmount.idleCheckStep(for: period)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        check = context.eventLoop.scheduleRepeatedTask(initialDelay: step, delay: step) { _ in
            let (handler, context) = bound.value
            handler.closeIfIdle(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
        context.fireChannelInactive()
    }

    /// A stream of the connection opened: the connection is busy until it closes.
    func streamOpened(_ stream: any Channel) {
        openStreams += 1
        if let id = try? stream.syncOptions?.getOption(HTTP2StreamChannelOptions.streamID), id > lastStream { lastStream = id }
        let bound = NIOLoopBound(self, eventLoop: stream.eventLoop)
        stream.closeFuture.whenComplete { _ in
            let handler = bound.value
            handler.openStreams -= 1
            if handler.openStreams == 0 { handler.idleSince = .now() }
        }
    }

    private func closeIfIdle(context: ChannelHandlerContext) {
        guard openStreams == 0, NIODeadline.now() - idleSince >= period else { return }
        check?.cancel()
        check = nil
        let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: lastStream, errorCode: .noError, opaqueData: nil))
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(goAway)).whenComplete { _ in channel.close(promise: nil) }
    }
}
