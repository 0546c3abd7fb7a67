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
}

extension GlueHandler: ChannelDuplexHandler {
    package typealias InboundIn = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    package func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
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
        if event is IdleStateHandler.IdleStateEvent {
            // No bytes either way for the idle timeout (Envoy TCP proxy `idle_timeout`).
            partner?.partnerCloseFull()
            context.close(promise: nil)
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
