import NIOCore
import NIOEmbedded
import Testing
@testable import MeshProxyCore

/// Two channels on one loop joined by `GlueHandler`s, as the gateway joins a client and its
/// upstream: what one side reads, the other writes and flushes.
@Suite("Glue between a downstream and an upstream channel")
struct GlueHandlerTests {
    private func gluedPair() throws -> (downstream: EmbeddedChannel, upstream: EmbeddedChannel) {
        let loop = EmbeddedEventLoop()
        let downstream = EmbeddedChannel(loop: loop), upstream = EmbeddedChannel(loop: loop)
        let (downGlue, upGlue) = GlueHandler.matchedPair()
        try downstream.pipeline.syncOperations.addHandler(downGlue)
        try upstream.pipeline.syncOperations.addHandler(upGlue)
        try downstream.connect(to: .init(ipAddress: "127.0.0.1", port: 1)).wait()
        try upstream.connect(to: .init(ipAddress: "127.0.0.2", port: 2)).wait()
        return (downstream, upstream)
    }

    @Test("bytes read on one side reach the other side, in order")
    func forwardsInOrder() throws {
        let (downstream, upstream) = try gluedPair()
        try downstream.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n"))
        try downstream.writeInbound(ByteBuffer(string: "host: echo\r\n\r\n"))
        #expect(try upstream.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "GET / HTTP/1.1\r\n"))
        #expect(try upstream.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "host: echo\r\n\r\n"))
        #expect(try upstream.readOutbound(as: ByteBuffer.self) == nil)

        // And the answer the other way.
        try upstream.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\n"))
        #expect(try downstream.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "HTTP/1.1 200 OK\r\n\r\n"))
        // Nothing else was written or left over; closing one side closes its partner.
        #expect(try downstream.finish().isClean)
        #expect(!upstream.isActive)
    }

    @Test("a half-close forwards what was read before it")
    func halfCloseForwardsFirst() throws {
        let (downstream, upstream) = try gluedPair()
        try downstream.writeInbound(ByteBuffer(string: "last bytes"))
        downstream.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        // The data is on the upstream's wire before its output is closed.
        #expect(try upstream.readOutbound(as: ByteBuffer.self) == ByteBuffer(string: "last bytes"))
        // …and then the end reached it. EmbeddedChannel has no half-closure (ending its output
        // closes it), so what follows a real half-close is DataPathTests' to show.
        #expect(!upstream.isActive)
    }

    @Test("a side that closes while its partner still has bytes for it: nothing traps")
    func partnerClosesWithBytesPending() throws {
        let (downstream, upstream) = try gluedPair()
        try downstream.writeInbound(ByteBuffer(string: "bytes"))
        try upstream.close().wait()
        // The glue closes the partner in turn, instead of writing into a closed channel.
        #expect(!downstream.isActive)
        #expect(throws: ChannelError.alreadyClosed) { try downstream.finish() }
    }
}
