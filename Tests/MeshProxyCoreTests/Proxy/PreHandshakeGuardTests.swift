import NIOCore
import NIOEmbedded
import NIOTLS
import Testing
@testable import MeshProxyCore

@Suite("Between accept and a verified peer (pre-handshake guard)")
struct PreHandshakeGuardTests {
    @Test("End of input before the ClientHello closes; after it, it is held until the handshake completes")
    func endOfInput() {
        var early = PreHandshakeStateMachine()
        #expect(early.bytesArrived(ByteBuffer(bytes: [22])) == .none)
        #expect(early.endOfInput() == .close(reason: "client closed before sending a complete ClientHello"))

        var burst = PreHandshakeStateMachine()
        #expect(burst.bytesArrived(ByteBuffer(bytes: [22, 3, 1, 0, 200])) == .none)
        burst.serverNameRead()
        #expect(burst.endOfInput() == .holdEndOfInput)
        #expect(burst.handshakeCompleted() == .deliverEndOfInput)

        var plain = PreHandshakeStateMachine()
        plain.serverNameRead()
        #expect(plain.handshakeCompleted() == .none)
    }

    @Test("A record header over 2^14 bytes is refused, even when it arrives a byte at a time; 2^14 itself passes")
    func oversizedRecord() {
        var split = PreHandshakeStateMachine()
        #expect(split.bytesArrived(ByteBuffer(bytes: [22, 3])) == .none)
        #expect(split.bytesArrived(ByteBuffer(bytes: [1])) == .none)
        #expect(split.bytesArrived(ByteBuffer(bytes: [0x40, 0x01, 1, 1])) ==
                .refuseOversizedRecord(reason: "ClientHello record of 16385 bytes is larger than TLS allows (16384)"))
        var limit = PreHandshakeStateMachine()
        #expect(limit.bytesArrived(ByteBuffer(bytes: [22, 3, 1, 0x40, 0x00])) == .none)
    }

    @Test("The timeout names the phase it caught; after the handshake it does nothing")
    func timeouts() {
        var silent = PreHandshakeStateMachine()
        #expect(silent.timedOut(after: .seconds(10)) == .close(reason: "no complete ClientHello within the handshake timeout (10s)"))
        var slow = PreHandshakeStateMachine()
        slow.serverNameRead()
        #expect(slow.timedOut(after: .seconds(10)) == .close(reason: "TLS handshake did not complete within 10s"))
        var done = PreHandshakeStateMachine()
        done.serverNameRead()
        _ = done.handshakeCompleted()
        #expect(done.timedOut(after: .seconds(10)) == .none)
    }

    /// Records every inbound event that gets past the guard.
    private final class Sink: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        var reads: [ByteBuffer] = []
        var endOfInput = 0
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { reads.append(unwrapInboundIn(data)) }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .inputClosed? = event as? ChannelEvent { endOfInput += 1 }
        }
    }

    @Test("On a channel: an early end closes it and frees the slot; a held end reaches the handlers behind once the observer sees the handshake")
    func onAChannel() throws {
        let pending = PendingHandshakes(limit: 2)
        #expect(pending.admit())
        var refusals: [String] = []
        let early = EmbeddedChannel()
        let guardHandler = PreHandshakeGuard(timeout: .seconds(10), pending: pending) { refusals.append($0) }
        try early.pipeline.syncOperations.addHandler(guardHandler)
        try early.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        try early.writeInbound(ByteBuffer(bytes: [22]))
        early.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(!early.isActive)
        #expect(refusals == ["client closed before sending a complete ClientHello"])
        #expect(pending.current == 0)

        #expect(pending.admit())
        let burst = EmbeddedChannel()
        let held = PreHandshakeGuard(timeout: .seconds(10), pending: pending) { refusals.append($0) }
        let sink = Sink()
        try burst.pipeline.syncOperations.addHandler(held)
        try burst.pipeline.syncOperations.addHandler(HandshakeCompletionObserver(guard: held))
        try burst.pipeline.syncOperations.addHandler(sink)
        try burst.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        try burst.writeInbound(ByteBuffer(bytes: [22, 3, 1, 0, 5, 1, 2, 3, 4, 5]))
        held.serverNameRead()
        burst.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(sink.endOfInput == 0)
        #expect(burst.isActive)
        burst.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
        burst.embeddedEventLoop.run()
        #expect(sink.endOfInput == 1)
        #expect(sink.reads.map(\.readableBytes) == [10])
        #expect(pending.current == 0)
        #expect(throws: (any Error).self) { try burst.pipeline.syncOperations.context(handler: held) }
        #expect(try burst.finish().isClean)
    }

    @Test("The timeout closes a connection that never sends a byte")
    func silentConnection() throws {
        var refusals: [String] = []
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(PreHandshakeGuard(timeout: .seconds(2), pending: nil) { refusals.append($0) })
        try channel.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1999))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!channel.isActive)
        #expect(refusals == ["no complete ClientHello within the handshake timeout (2s)"])
    }
}

@Suite("TLS failure reasons")
struct TLSFailureTests {
    @Test("BoringSSL's packed codes, not its wording, decide the reason in the log")
    func reasons() {
        let noCertificate = "handshakeFailed(NIOSSL.BoringSSLError.sslError([Error: 268435648 error:100000c0:SSL routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE]))"
        #expect(TLSFailure.reasons(in: noCertificate) == [.peerDidNotReturnCertificate])
        #expect(TLSFailure.describe(NSErrorLike(text: noCertificate)) == PeerRejection.noCertificate.description)
        #expect(TLSFailure.reasons(in: "error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER") == [.wrongVersionNumber])
        #expect(TLSFailure.reasons(in: "error:100000b8:SSL routines:OPENSSL_internal:NO_SHARED_CIPHER") == [.noSharedCipher])
        #expect(TLSFailure.describe(NSErrorLike(text: "something else")) == "TLS handshake failed: something else")
    }

    struct NSErrorLike: Error, CustomStringConvertible { var text: String; var description: String { text } }
}
