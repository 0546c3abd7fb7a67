import NIOCore
import NIOEmbedded
import Testing
@testable import MeshProxyCore

@Suite("Original-client preamble (TCP between gateways)")
struct OriginalClientPreambleTests {
    @Test("The line round-trips, '-' is a client without a certificate; partial lines wait; anything else, or too long, is refused")
    func parse() {
        let line = OriginalClientPreamble.encode("spiffe://cluster.local/ns/default/sa/client")
        #expect(OriginalClientPreamble.parse(line.readableBytesView) == .line(principal: "spiffe://cluster.local/ns/default/sa/client", length: line.readableBytes))
        #expect(OriginalClientPreamble.parse(OriginalClientPreamble.encode(nil).readableBytesView) == .line(principal: nil, length: 13))
        let withAddress = OriginalClientPreamble.encode("spiffe://td/ns/a/sa/b", address: "fd00::7")
        #expect(OriginalClientPreamble.parse(withAddress.readableBytesView) == .line(principal: "spiffe://td/ns/a/sa/b", address: "fd00::7", length: withAddress.readableBytes))
        #expect(OriginalClientPreamble.parse(OriginalClientPreamble.encode(nil, address: "10.0.0.1").readableBytesView) == .line(principal: nil, address: "10.0.0.1", length: 22))
        if case .invalid = OriginalClientPreamble.parse(ByteBuffer(string: "EASTWEST/1 - not-an-ip\n").readableBytesView) {} else { Issue.record("a bad address taken") }
        if case .invalid = OriginalClientPreamble.parse(ByteBuffer(string: "EASTWEST/1 - 10.0.0.1 extra\n").readableBytesView) {} else { Issue.record("a third field taken") }
        #expect(OriginalClientPreamble.parse(ByteBuffer(string: "EASTW").readableBytesView) == .incomplete)
        #expect(OriginalClientPreamble.parse(ByteBuffer(string: "EASTWEST/1 spiffe://x").readableBytesView) == .incomplete)
        if case .invalid = OriginalClientPreamble.parse(ByteBuffer(string: "GET / HTTP/1.1\r\n").readableBytesView) {} else { Issue.record("HTTP taken for a preamble") }
        if case .invalid = OriginalClientPreamble.parse(ByteBuffer(string: "EASTWEST/1 \n").readableBytesView) {} else { Issue.record("empty principal taken") }
        if case .invalid = OriginalClientPreamble.parse(ByteBuffer(string: "EASTWEST/1 " + String(repeating: "a", count: 3000)).readableBytesView) {} else { Issue.record("no bound") }
    }

    @Test("On a channel: the line is read off, the event fired, the bytes after it (same read or later) pass on, and the decoder leaves")
    func decoder() throws {
        final class Events: ChannelInboundHandler {
            typealias InboundIn = ByteBuffer
            var read: [String?] = []
            var bytes = ""
            func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
                if let event = event as? OriginalClientPreamble.Read { read.append(event.principal) }
            }
            func channelRead(context: ChannelHandlerContext, data: NIOAny) { bytes += String(buffer: unwrapInboundIn(data)) }
        }
        let events = Events()
        let channel = EmbeddedChannel(handlers: [ByteToMessageHandler(OriginalClientPreamble.Decoder()), events])
        try channel.writeInbound(ByteBuffer(string: "EASTWEST/1 spiffe://td/ns/a/sa/b\nhel"))
        try channel.writeInbound(ByteBuffer(string: "lo"))
        channel.embeddedEventLoop.run()
        #expect(events.read == ["spiffe://td/ns/a/sa/b"])
        #expect(events.bytes == "hello")
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<OriginalClientPreamble.Decoder>.self) }
        _ = try channel.finish()
    }
}
