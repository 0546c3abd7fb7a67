import NIOCore

/// Joins two channels on the same event loop and passes `ByteBuffer`s from one to the other
/// untouched, after swift-nio-examples' connect-proxy `GlueHandler`:
///
/// - backpressure: a side only reads while its partner is writable; a held `read()` is
///   replayed when the partner drains;
/// - half-close: end of input on one side becomes `close(mode: .output)` on the other (a TLS
///   close_notify or a TCP FIN), and a side closes fully once both directions are done;
/// - byte counts for telemetry are two integer additions per read.
///
/// Not `Sendable`: both halves live on one event loop.
package final class GlueHandler {
    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputClosed = false
    private var outputClosed = false
    /// Bytes this side read from its channel (and handed to the partner).
    package private(set) var bytesRead = 0
    /// What ended this side with an error (e.g. a reset), for outlier detection.
    package private(set) var failure: (any Error)?
    private var idleCheck: RepeatedTask?

    private init() {}

    /// Two handlers that know each other; add one to each channel's pipeline.
    package static func matchedPair() -> (GlueHandler, GlueHandler) {
        let first = GlueHandler(), second = GlueHandler()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    // MARK: - Called by the partner

    private func partnerWrite(_ data: NIOAny) {
        context?.write(data, promise: nil)
    }

    private func partnerFlush() {
        context?.flush()
    }

    private func partnerWriteEOF() {
        guard let context, !outputClosed else { return }
        outputClosed = true
        if inputClosed {
            context.close(promise: nil)
        } else {
            context.close(mode: .output, promise: nil)
        }
    }

    private func partnerCloseFull() {
        context?.close(promise: nil)
    }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    private var partnerIsWritable: Bool {
        context?.channel.isWritable ?? false
    }

    /// Closes the pair once no byte has moved either way for `timeout` (Envoy's TCP proxy
    /// `idle_timeout`). Checked a few times per period against the byte counts the pair keeps
    /// anyway, so the data path pays nothing per read or write (an `IdleStateHandler` hooks a
    /// promise onto every write).
    package func closeWhenIdle(for timeout: Duration) {
        guard let context, let partner else { return }
        let period = TimeAmount(timeout)
        let step = TimeAmount.nanoseconds(max(period.nanoseconds / 4, 1_000_000))
        var lastBytes = bytesRead &+ partner.bytesRead
        var lastChange = NIODeadline.now()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: step, delay: step) { task in
            let handler = bound.value
            guard let context = handler.context else { task.cancel(); return }
            let bytes = handler.bytesRead &+ (handler.partner?.bytesRead ?? 0)
            let now = NIODeadline.now()
            if bytes != lastBytes {
                lastBytes = bytes
                lastChange = now
            } else if now - lastChange >= period {
                task.cancel()
                handler.partner?.partnerCloseFull()
                context.close(promise: nil)
            }
        }
    }
}

extension GlueHandler: ChannelDuplexHandler {
    package typealias InboundIn = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        self.context = nil
        self.partner = nil
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        bytesRead &+= unwrapInboundIn(data).readableBytes
        partner?.partnerWrite(data)
    }

    package func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
    }

    package func channelInactive(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        partner?.partnerCloseFull()
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            inputClosed = true
            partner?.partnerFlush()
            partner?.partnerWriteEOF()
            if outputClosed { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failure = error
        // Either side failing ends the pair; the access log records the close.
        partner?.partnerCloseFull()
        context.close(promise: nil)
    }

    package func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            partner?.partnerBecameWritable()
        }
        context.fireChannelWritabilityChanged()
    }

    package func read(context: ChannelHandlerContext) {
        if let partner, partner.partnerIsWritable {
            context.read()
        } else {
            pendingRead = true
        }
    }
}
