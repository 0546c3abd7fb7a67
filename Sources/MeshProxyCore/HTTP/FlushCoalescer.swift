import NIOCore

/// Sits between an HTTP/2 connection's TLS (or socket) and its `NIOHTTP2Handler` and turns the
/// flushes of one event-loop tick into one. Each stream's response (or request, on a pooled
/// connection to a peer gateway) ends with a flush; its frames come from another connection's
/// read, so NIOHTTP2's own read-loop batching never sees them, and 100 streams answered in one
/// tick were 100 TLS records and 100 `write`s. Now their frames leave together when the tick's
/// I/O is done, microseconds later.
final class FlushCoalescer: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var flushScheduled = false
    private var removed = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(data, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (coalescer, context) = bound.value
            coalescer.flushScheduled = false
            if !coalescer.removed { context.flush() }
        }
    }

    /// A close in the same tick (after a GOAWAY, say) sends what was written first.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if flushScheduled {
            flushScheduled = false
            context.flush()
        }
        context.close(mode: mode, promise: promise)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // What a scheduled flush would have sent goes now, while the context is still valid.
        if flushScheduled { context.flush() }
        removed = true
    }
}
