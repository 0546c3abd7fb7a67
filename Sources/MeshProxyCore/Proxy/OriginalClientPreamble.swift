import NIOCore

/// How an entry gateway tells a peer gateway who the client of a TCP connection is, so the
/// peer's AuthorizationPolicies judge that client and not the gateway that forwarded it (HTTP
/// carries it in `x-forwarded-client-cert`, and its address in `x-forwarded-for`). One line
/// before the client's first byte, `EASTWEST/1 <spiffe-id or -> <client address>\n` (the address
/// is optional: the first gateways sent none), sent only when the peer selected ALPN `eastwest-peer` on the
/// TCP server (so a gateway that does not read it is never sent it), and believed only from a
/// peer gateway identity: from anyone else the line is read and dropped, and the connection is
/// judged by its own certificate.
package enum OriginalClientPreamble {
    static let magic = "EASTWEST/1 "
    /// Longer than any SPIFFE ID this mesh issues (2048 is the spec's URI limit).
    static let maximumLength = 2_100

    package static func encode(_ principal: String?, address: String? = nil) -> ByteBuffer {
        ByteBuffer(string: magic + (principal ?? "-") + (address.map { " " + $0 } ?? "") + "\n")
    }

    package enum Parsed: Equatable {
        /// Not all of it yet.
        case incomplete
        /// The line, and how many bytes it took; `principal` nil for `-` (no certificate),
        /// `address` nil when the line has none.
        case line(principal: String?, address: String? = nil, length: Int)
        case invalid(String)
    }

    package static func parse(_ bytes: ByteBufferView) -> Parsed {
        guard let newline = bytes.firstIndex(of: UInt8(ascii: "\n")) else {
            if bytes.count > maximumLength { return .invalid("original-client preamble longer than \(maximumLength) bytes") }
            let seen = min(bytes.count, magic.utf8.count)
            return bytes.prefix(seen).elementsEqual(magic.utf8.prefix(seen)) ? .incomplete : .invalid("not an original-client preamble")
        }
        let line = String(decoding: bytes[bytes.startIndex..<newline], as: UTF8.self)
        guard line.hasPrefix(magic) else { return .invalid("not an original-client preamble") }
        let fields = line.dropFirst(magic.count).split(separator: " ", omittingEmptySubsequences: false)
        guard let principal = fields.first, !principal.isEmpty else { return .invalid("original-client preamble without a principal") }
        guard fields.count <= 2 else { return .invalid("original-client preamble with more than a principal and an address") }
        let address = fields.count == 2 ? String(fields[1]) : nil
        if let address, IPBlock(address) == nil { return .invalid("original-client preamble address '\(address)' is not an IP address") }
        return .line(principal: principal == "-" ? nil : String(principal), address: address, length: newline - bytes.startIndex + 1)
    }

    /// Read: the principal the line named (nil: a client without a certificate), and the
    /// client's address when it gave one.
    package struct Read: Sendable {
        package var principal: String?
        package var address: String?
    }

    /// Reads the line off the connection, fires `Read`, hands on what follows and leaves.
    package final class Decoder: ByteToMessageDecoder {
        package typealias InboundOut = ByteBuffer
        /// The line is read: whatever still reaches the decoder before it has left passes on.
        private var lineRead = false
        package init() {}

        package func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
            if lineRead {
                if buffer.readableBytes > 0 { context.fireChannelRead(NIOAny(buffer.readSlice(length: buffer.readableBytes)!)) }
                return .needMoreData
            }
            switch OriginalClientPreamble.parse(buffer.readableBytesView) {
            case .incomplete:
                return .needMoreData
            case .invalid(let reason):
                throw Invalid(reason: reason)
            case .line(let principal, let address, let length):
                buffer.moveReaderIndex(forwardBy: length)
                lineRead = true
                context.fireUserInboundEventTriggered(Read(principal: principal, address: address))
                if buffer.readableBytes > 0 { context.fireChannelRead(NIOAny(buffer.readSlice(length: buffer.readableBytes)!)) }
                context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
                return .needMoreData
            }
        }

        package func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
            if buffer.readableBytes > 0 { _ = try decode(context: context, buffer: &buffer) }
            return .needMoreData
        }
    }

    package struct Invalid: Error, CustomStringConvertible {
        var reason: String
        package var description: String { reason }
    }
}
