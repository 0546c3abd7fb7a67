import NIOCore

/// Joins two channels on the same event loop and passes `ByteBuffer`s from one to the other
/// untouched, after swift-nio-examples' connect-proxy `GlueHandler`:
///
/// - backpressure: a side only reads while its partner is writable; a held `read()` is
///   replayed when the partner drains;
/// - half-close: end of input on one side becomes `close(mode: .output)` on the other (a TLS
///   close_notify or a TCP FIN) once every byte forwarded before it is on the wire, and a side
///   closes fully once both directions are done. Waiting matters: SwiftNIO turns an output
///   close on a channel whose input already ended into a full close, and swift-nio-ssl does the
///   same when close_notify arrives after its own, and a full close drops the writes still
///   queued on the socket — a slow reader would lose the tail of the answer;
/// - byte counts for telemetry are two integer additions per read.
///
/// Not `Sendable`: both halves live on one event loop.
package final class GlueHandler {
    private var partner: GlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputClosed = false
    /// The partner's input ended, so this side's output is to end.
    private var outputClosing = false
    /// This side's output has ended: its queued writes went out and then its FIN/close_notify.
    private var outputClosed = false
    /// Bytes this side read from its channel (and handed to the partner).
    package private(set) var bytesRead = 0
    /// What ended this side with an error (e.g. a reset), for outlier detection.
    package private(set) var failure: (any Error)?
    private var idleCheck: RepeatedTask?
    /// Bytes read both ways at the last idle check, and when that count last changed.
    private var idleLastBytes = 0
    private var idleSince = NIODeadline.uptimeNanoseconds(0)

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
        guard let context, !outputClosing else { return }
        outputClosing = true
        // An empty write completes after every write queued before it, through TLS as well
        // (swift-nio-ssl orders a promise-carrying empty write behind the records before it).
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: written)
        written.futureResult.assumeIsolated().whenComplete { result in
            guard let context = self.context else { return }
            self.outputClosed = true
            if case .failure = result {
                context.close(promise: nil)
                return
            }
            // From here on the socket gets a close_notify (TLS) and, sooner or later, a full
            // close — ours, or swift-nio-ssl's when the peer's close_notify arrives. Either
            // waits until the socket has written what it holds.
            try? context.pipeline.syncOperations.addHandler(DelayedCloseHandler(), position: .first)
            if self.inputClosed {
                context.close(promise: nil)
            } else {
                context.close(mode: .output, promise: nil)
            }
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
        let step = TimeAmount.idleCheckStep(for: period)
        idleLastBytes = bytesRead &+ partner.bytesRead
        idleSince = NIODeadline.now()
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: step, delay: step) { task in
            let handler = bound.value
            guard let context = handler.context else { task.cancel(); return }
            let bytes = handler.bytesRead &+ (handler.partner?.bytesRead ?? 0)
            let now = NIODeadline.now()
            if bytes != handler.idleLastBytes {
                handler.idleLastBytes = bytes
                handler.idleSince = now
            } else if now - handler.idleSince >= period {
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
        if outputClosed {
            // Ended in order: this side's output ended first, then its input. SwiftNIO closes
            // such a channel without an `inputClosed` event, so end the partner's output here;
            // it writes what it still holds first and then closes itself.
            if !inputClosed {
                inputClosed = true
                partner?.partnerFlush()
                partner?.partnerWriteEOF()
            }
        } else {
            // A reset, a peer that vanished, a close on our side: the pair ends now.
            partner?.partnerCloseFull()
        }
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            inputClosed = true
            partner?.partnerFlush()
            partner?.partnerWriteEOF()
            // Otherwise the output's drain closes the channel when it completes.
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

extension TimeAmount {
    /// How often an idle timeout of `period` is checked: four times per period, so a
    /// connection closes at most a quarter late, and no timer is re-armed per read, write or
    /// request.
    static func idleCheckStep(for period: TimeAmount, atLeast floor: TimeAmount = .milliseconds(1)) -> TimeAmount {
        .nanoseconds(max(period.nanoseconds / 4, floor.nanoseconds))
    }
}
