import NIOCore

/// Holds a full close of the socket until what is queued on it has been written, for at most
/// `timeout` — Envoy's `delayed_close_timeout` (1 s by default there too).
///
/// Why: when a connection ends in order after the client half-closed, swift-nio-ssl answers
/// with its close_notify and closes the socket in the same breath. If the client reads slowly
/// the socket still holds the tail of the answer's records or that close_notify, and a plain
/// close drops them: the client gets every byte but no close_notify, which OpenSSL-based
/// clients report as "unexpected eof". Sits first in the pipeline, next to the socket, and is
/// put there only at that close, so the data path never passes through it.
package final class DelayedCloseHandler: ChannelOutboundHandler, RemovableChannelHandler {
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    private let timeout: TimeAmount
    private var closing = false

    package init(timeout: TimeAmount = .seconds(1)) {
        self.timeout = timeout
    }

    package func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard case .all = mode, !closing else {
            context.close(mode: mode, promise: promise)
            return
        }
        closing = true
        var closed = false
        func closeNow() {
            guard !closed else { return }
            closed = true
            context.close(mode: .all, promise: promise)
        }
        let deadline = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { closeNow() }
        // Completes once everything queued before it is written (or fails if the socket died).
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in
            deadline.cancel()
            closeNow()
        }
    }
}
