import NIOConcurrencyHelpers
import NIOCore
import NIOTLS

/// What may happen to a connection between accept and a verified peer, decided without I/O.
///
/// - The handshake timeout runs from accept, so a client that sends nothing, or a ClientHello
///   a byte at a time, is closed when it expires, SNI reading included.
/// - End of input before a complete ClientHello closes the connection at once: nothing can
///   follow, and waiting would leave the socket in CLOSE-WAIT.
/// - A TLS record header announcing more than 2^14 bytes is refused (RFC 8446 §5.1,
///   `record_overflow`): no ClientHello is that large, and the SNI reader would buffer it.
/// - End of input after the ClientHello is held until the handshake completes. A TLS 1.3
///   client may send its last flight, its request, close_notify and FIN in one burst; the
///   peer's chain is verified asynchronously for a chain not seen before, and an end of input
///   seen by TLS before that answer kills a connection that did nothing wrong. Released, it
///   is an ordinary half-close.
package struct PreHandshakeStateMachine {
    /// RFC 8446 §5.1: a record's plaintext is at most 2^14 bytes.
    package static let maximumRecordLength = 16_384

    private enum State {
        /// Before the server name is read: the first bytes of the record header seen so far.
        case readingClientHello(header: [UInt8])
        case handshaking(heldEndOfInput: Bool)
        case finished
    }

    package enum Action: Equatable {
        case none
        /// Close the connection; `reason` goes to the access log.
        case close(reason: String)
        /// Send a fatal `record_overflow` alert, then close.
        case refuseOversizedRecord(reason: String)
        case holdEndOfInput
        /// Deliver the end of input held back during the handshake.
        case deliverEndOfInput
    }

    private var state = State.readingClientHello(header: [])
    package init() {}

    package mutating func bytesArrived(_ bytes: ByteBuffer) -> Action {
        guard case .readingClientHello(var header) = state, header.count < 5 else { return .none }
        header += bytes.getBytes(at: bytes.readerIndex, length: min(5 - header.count, bytes.readableBytes)) ?? []
        state = .readingClientHello(header: header)
        guard header.count == 5 else { return .none }
        let length = Int(header[3]) << 8 | Int(header[4])
        if header[0] == 22, length > Self.maximumRecordLength {
            state = .finished
            return .refuseOversizedRecord(reason: "ClientHello record of \(length) bytes is larger than TLS allows (\(Self.maximumRecordLength))")
        }
        return .none
    }

    package mutating func serverNameRead() {
        if case .readingClientHello = state { state = .handshaking(heldEndOfInput: false) }
    }

    package mutating func endOfInput() -> Action {
        switch state {
        case .readingClientHello:
            state = .finished
            return .close(reason: "client closed before sending a complete ClientHello")
        case .handshaking:
            state = .handshaking(heldEndOfInput: true)
            return .holdEndOfInput
        case .finished:
            return .none
        }
    }

    package mutating func timedOut(after timeout: Duration) -> Action {
        switch state {
        case .readingClientHello:
            state = .finished
            return .close(reason: "no complete ClientHello within the handshake timeout (\(ConfigDuration(timeout)))")
        case .handshaking:
            state = .finished
            return .close(reason: "TLS handshake did not complete within \(ConfigDuration(timeout))")
        case .finished:
            return .none
        }
    }

    /// The peer is verified and the handshake done: the guard leaves the pipeline.
    package mutating func handshakeCompleted() -> Action {
        defer { state = .finished }
        if case .handshaking(heldEndOfInput: true) = state { return .deliverEndOfInput }
        return .none
    }
}

/// Connections that have been accepted but have not completed their handshake, across the
/// listener. Capped so a flood of connections that never finish cannot take every file
/// descriptor and starve established traffic: beyond the cap a new connection is closed at
/// accept.
package final class PendingHandshakes: Sendable {
    package let limit: Int
    private let count = NIOLockedValueBox(0)

    package init(limit: Int) { self.limit = limit }

    package var current: Int { count.withLockedValue { $0 } }

    package func admit() -> Bool {
        count.withLockedValue { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    package func release() { count.withLockedValue { $0 -= 1 } }
}

/// Carries out `PreHandshakeStateMachine` at the front of a new connection's pipeline.
/// `HandshakeCompletionObserver`, behind the TLS handler, takes it out once the handshake
/// completes, so the data path never passes through it.
package final class PreHandshakeGuard: ChannelDuplexHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    private var machine = PreHandshakeStateMachine()
    private let timeout: Duration
    private let pending: PendingHandshakes?
    private let refused: (String) -> Void
    private var timer: Scheduled<Void>?
    private var admitted = false
    /// The first TLS record as it arrived, kept only when someone will ask what it offers.
    private var clientHello: ByteBuffer?

    /// `refused` records why the guard closed the connection (the access log's detail).
    /// `pending` has already admitted this connection; the guard gives the slot back.
    /// `keepsClientHello`: keep the first record, for `offeredApplicationProtocols`.
    package init(timeout: Duration, pending: PendingHandshakes?, keepsClientHello: Bool = false, refused: @escaping (String) -> Void) {
        self.timeout = timeout
        self.pending = pending
        self.refused = refused
        self.admitted = pending != nil
        if keepsClientHello { clientHello = ByteBuffer() }
    }

    /// The ALPN protocols the ClientHello offered, once it is whole (nil when not kept).
    package var offeredApplicationProtocols: [String]? { clientHello.flatMap(ClientHelloALPN.offered) }

    package func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            let (handler, context) = bound.value
            handler.run(handler.machine.timedOut(after: handler.timeout), context: context)
        }
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        releaseSlot()
    }

    package func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        releaseSlot()
        context.fireChannelInactive()
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        if var kept = clientHello, kept.readableBytes < 5 + PreHandshakeStateMachine.maximumRecordLength {
            clientHello = nil  // uniquely referenced while it grows
            kept.writeImmutableBuffer(bytes)
            clientHello = kept
        }
        let action = machine.bytesArrived(bytes)
        if action == .none { context.fireChannelRead(data) } else { run(action, context: context) }
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case .inputClosed? = event as? ChannelEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        run(machine.endOfInput(), context: context)
    }

    /// Called by the SNI router once the server name is read and TLS is in place.
    package func serverNameRead() { machine.serverNameRead() }

    /// Called once the TLS handshake has completed (the peer is verified).
    package func handshakeCompleted(context: ChannelHandlerContext) {
        timer?.cancel()
        releaseSlot()
        let action = machine.handshakeCompleted()
        let pipeline = context.pipeline
        pipeline.syncOperations.removeHandler(self, promise: nil)
        if action == .deliverEndOfInput {
            // Re-fired from the head on the next tick, once this handler is gone and the
            // handlers behind TLS have seen the handshake complete.
            context.eventLoop.assumeIsolated().execute {
                pipeline.syncOperations.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            }
        }
    }

    private func run(_ action: PreHandshakeStateMachine.Action, context: ChannelHandlerContext) {
        switch action {
        case .none, .holdEndOfInput:
            break
        case .deliverEndOfInput:
            // Only the handshake's completion delivers it, after this handler has left.
            assertionFailure("end of input delivered outside handshakeCompleted")
        case .close(let reason):
            refused(reason)
            context.close(promise: nil)
        case .refuseOversizedRecord(let reason):
            refused(reason)
            // A plaintext fatal alert: TLS 1.2 record framing, level 2 (fatal), record_overflow (22).
            var alert = context.channel.allocator.buffer(capacity: 7)
            alert.writeBytes([21, 3, 3, 0, 2, 2, 22])
            context.writeAndFlush(wrapOutboundOut(alert)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    private func releaseSlot() {
        guard admitted else { return }
        admitted = false
        pending?.release()
    }
}

/// Sits behind the TLS handler and tells the guard when the handshake has completed.
package final class HandshakeCompletionObserver: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = NIOAny
    private let guardHandler: PreHandshakeGuard

    package init(guard guardHandler: PreHandshakeGuard) { self.guardHandler = guardHandler }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted? = event as? TLSUserEvent {
            if let guardContext = try? context.pipeline.syncOperations.context(handler: guardHandler) {
                guardHandler.handshakeCompleted(context: guardContext)
            }
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
