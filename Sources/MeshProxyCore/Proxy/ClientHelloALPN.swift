import NIOCore

/// The ALPN protocols a TLS ClientHello offers, read before any crypto (RFC 8446 §4.1.2,
/// RFC 7301): what tells an EastWest peer gateway (which offers `eastwest-peer`) from an Istio
/// workload on an AUTO_PASSTHROUGH server, whose TLS the gateway must not terminate.
package enum ClientHelloALPN {
    /// The token EastWest gateways add to what they offer a peer gateway.
    package static let peerMarker = "eastwest-peer"

    /// The offered protocols, from the first TLS record in `bytes`; nil when the record is not
    /// a whole ClientHello (yet), `[]` when it offers no ALPN.
    package static func offered(in bytes: ByteBuffer) -> [String]? {
        var record = bytes
        guard let type = record.readInteger(as: UInt8.self), type == 22,
              record.readInteger(as: UInt16.self) != nil,
              let length = record.readInteger(as: UInt16.self), var body = record.readSlice(length: Int(length)),
              let handshakeType = body.readInteger(as: UInt8.self), handshakeType == 1,
              let high = body.readInteger(as: UInt8.self), let low = body.readInteger(as: UInt16.self) else { return nil }
        // A ClientHello split over several records: what is here is not all of it.
        guard var hello = body.readSlice(length: Int(high) << 16 | Int(low)) else { return nil }
        // Version and random, then session id, cipher suites, compression methods.
        guard hello.readSlice(length: 2 + 32) != nil, skip8(&hello), skip16(&hello), skip8(&hello) else { return nil }
        guard let extensionsLength = hello.readInteger(as: UInt16.self) else { return [] }
        guard var extensions = hello.readSlice(length: Int(extensionsLength)) else { return nil }
        while let kind = extensions.readInteger(as: UInt16.self), let size = extensions.readInteger(as: UInt16.self) {
            guard var data = extensions.readSlice(length: Int(size)) else { return nil }
            guard kind == 16 else { continue }
            guard let listLength = data.readInteger(as: UInt16.self), var list = data.readSlice(length: Int(listLength)) else { return nil }
            var protocols: [String] = []
            while let nameLength = list.readInteger(as: UInt8.self) {
                guard let name = list.readString(length: Int(nameLength)) else { return nil }
                protocols.append(name)
            }
            return protocols
        }
        return []
    }

    private static func skip8(_ buffer: inout ByteBuffer) -> Bool {
        guard let length = buffer.readInteger(as: UInt8.self) else { return false }
        return buffer.readSlice(length: Int(length)) != nil
    }

    private static func skip16(_ buffer: inout ByteBuffer) -> Bool {
        guard let length = buffer.readInteger(as: UInt16.self) else { return false }
        return buffer.readSlice(length: Int(length)) != nil
    }
}
