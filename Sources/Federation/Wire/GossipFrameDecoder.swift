import NIOCore

/// Splits a federation connection's bytes into messages: `length:u32` then that many bytes.
/// A length over `GossipCodec.maximumMessageSize` fails at the header, before anything is
/// buffered for it: NIOExtras' `LengthFieldBasedFrameDecoder` has no cap and would hold up to
/// 4 GiB for one peer's claim.
package struct GossipFrameDecoder: ByteToMessageDecoder {
    package typealias InboundOut = ByteBuffer

    package init() {}

    package mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try Self.nextFrame(&buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }

    /// The next whole frame, nil while it is incomplete. Pure, so it is fuzzed without a channel.
    package static func nextFrame(_ buffer: inout ByteBuffer) throws(GossipWireError) -> ByteBuffer? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length <= GossipCodec.maximumMessageSize else { throw .oversized(Int(length)) }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        return buffer.readSlice(length: Int(length))
    }
}
