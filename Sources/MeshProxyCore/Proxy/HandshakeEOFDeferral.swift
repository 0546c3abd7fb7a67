import NIOCore

/// Sits in front of the server's TLS handler until the handshake completes and holds a TCP
/// end-of-input back by one event-loop tick.
///
/// Why: a TLS 1.3 client may send its last handshake flight, its request, close_notify and
/// FIN in one burst (`printf … | openssl s_client`, a client that half-closes after
/// writing). The mesh policy checks the client certificate in swift-nio-ssl's verification
/// callback, whose answer swift-nio-ssl applies on the next tick; an end-of-input seen before
/// that tick counts as "EOF during handshake" and kills a connection that did nothing wrong.
/// Delivered one tick later, the handshake has finished, the request and close_notify are
/// decoded, and the end is an ordinary half-close. `GatewayConnectionHandler` removes this
/// handler once the handshake is done, so the data path never passes through it.
package final class HandshakeEOFDeferral: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer

    private var released = false

    package init() {}

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard !released, case .inputClosed? = event as? ChannelEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        released = true
        let pipeline = context.pipeline
        // Re-fired from the head: if this handler is gone by then, the event still reaches TLS.
        context.eventLoop.assumeIsolated().execute {
            pipeline.syncOperations.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }
}
