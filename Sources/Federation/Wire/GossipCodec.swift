import MeshProxyCore
import NIOCore

/// The binary form of `GossipMessage` (version 2: catalog records carry the service protocol). Every message is
/// `version:u8 type:u8 body`; strings are `u16 length + UTF-8`; integers are big-endian.
/// Decoding never traps: a short, oversized or unknown message throws `GossipWireError`, and
/// the caller drops that message and counts it.
package enum GossipCodec {
    package static let version: UInt8 = 2
    /// Largest message accepted (a full catalog snapshot of a big cluster fits).
    package static let maximumMessageSize = 4 << 20

    enum Kind: UInt8 {
        case ping = 1, ack, pingRequest, nack, gossip, pushPull, catalogDigest, catalogDeltas
    }

    // MARK: - Encoding

    package static func encode(_ message: GossipMessage, into buffer: inout ByteBuffer) {
        buffer.writeInteger(version)
        switch message {
        case .ping(let seq, let from, let fromAddress, let target, let updates):
            buffer.writeInteger(Kind.ping.rawValue)
            buffer.writeInteger(seq); writeString(from.name, &buffer); writeAddress(fromAddress, &buffer)
            writeString(target.name, &buffer); writeUpdates(updates, &buffer)
        case .ack(let seq, let from, let updates):
            buffer.writeInteger(Kind.ack.rawValue)
            buffer.writeInteger(seq); writeString(from.name, &buffer); writeUpdates(updates, &buffer)
        case .pingRequest(let seq, let from, let fromAddress, let target, let targetAddress, let updates):
            buffer.writeInteger(Kind.pingRequest.rawValue)
            buffer.writeInteger(seq); writeString(from.name, &buffer); writeAddress(fromAddress, &buffer)
            writeString(target.name, &buffer); writeAddress(targetAddress, &buffer); writeUpdates(updates, &buffer)
        case .nack(let seq, let from):
            buffer.writeInteger(Kind.nack.rawValue)
            buffer.writeInteger(seq); writeString(from.name, &buffer)
        case .gossip(let from, let updates):
            buffer.writeInteger(Kind.gossip.rawValue)
            writeString(from.name, &buffer); writeUpdates(updates, &buffer)
        case .pushPull(let from, let members, let isReply):
            buffer.writeInteger(Kind.pushPull.rawValue)
            writeString(from.name, &buffer); buffer.writeInteger(UInt8(isReply ? 1 : 0)); writeUpdates(members, &buffer)
        case .catalogDigest(let from, let fromAddress, let digest, let isReply):
            buffer.writeInteger(Kind.catalogDigest.rawValue)
            writeString(from.name, &buffer); writeAddress(fromAddress, &buffer); buffer.writeInteger(UInt8(isReply ? 1 : 0))
            buffer.writeInteger(UInt16(digest.count))
            for (origin, version) in digest.sorted(by: { $0.key < $1.key }) {
                writeString(origin.name, &buffer); buffer.writeInteger(version.generation); buffer.writeInteger(version.version)
            }
        case .catalogDeltas(let from, let deltas):
            buffer.writeInteger(Kind.catalogDeltas.rawValue)
            writeString(from.name, &buffer)
            buffer.writeInteger(UInt16(deltas.count))
            for delta in deltas {
                writeString(delta.origin.name, &buffer); writeString(delta.cluster, &buffer)
                buffer.writeInteger(delta.generation); buffer.writeInteger(delta.since); buffer.writeInteger(delta.through)
                buffer.writeInteger(UInt8(delta.isSnapshot ? 1 : 0))
                buffer.writeInteger(UInt32(delta.entries.count))
                for entry in delta.entries { writeEntry(entry, &buffer) }
            }
        }
    }

    package static func encode(_ message: GossipMessage) -> ByteBuffer {
        var buffer = ByteBuffer()
        encode(message, into: &buffer)
        return buffer
    }

    private static func writeString(_ text: String, _ buffer: inout ByteBuffer) {
        let utf8 = text.utf8.prefix(Int(UInt16.max))
        buffer.writeInteger(UInt16(utf8.count))
        buffer.writeBytes(utf8)
    }

    private static func writeAddress(_ address: HostPort, _ buffer: inout ByteBuffer) {
        writeString(address.host, &buffer)
        buffer.writeInteger(UInt16(address.port))
    }

    private static func writeUpdates(_ updates: [MemberUpdate], _ buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt16(updates.count))
        for update in updates {
            writeString(update.id.name, &buffer); writeAddress(update.address, &buffer); writeString(update.cluster, &buffer)
            buffer.writeInteger(update.incarnation)
            buffer.writeInteger(stateCode(update.state))
            if let accuser = update.accuser {
                buffer.writeInteger(UInt8(1)); writeString(accuser.name, &buffer)
            } else {
                buffer.writeInteger(UInt8(0))
            }
        }
    }

    private static func writeEntry(_ entry: CatalogEntry, _ buffer: inout ByteBuffer) {
        writeString(entry.key.host, &buffer); buffer.writeInteger(UInt16(entry.key.port)); writeAddress(entry.key.endpoint, &buffer)
        buffer.writeInteger(entry.version)
        guard let record = entry.record else { buffer.writeInteger(UInt8(0)); return }
        buffer.writeInteger(UInt8(1))
        writeString(record.locality?.description ?? "", &buffer)
        buffer.writeInteger(UInt16(record.labels.count))
        for (key, value) in record.labels.sorted(by: { $0.key < $1.key }) { writeString(key, &buffer); writeString(value, &buffer) }
        writeString(record.protocol?.rawValue ?? "", &buffer)
    }

    private static func stateCode(_ state: MemberState) -> UInt8 {
        switch state { case .alive: 0; case .suspect: 1; case .dead: 2; case .left: 3 }
    }

    // MARK: - Decoding

    package static func decode(_ buffer: ByteBuffer) throws(GossipWireError) -> GossipMessage {
        guard buffer.readableBytes <= maximumMessageSize else { throw .oversized(buffer.readableBytes) }
        var reader = buffer
        let messageVersion: UInt8 = try read(&reader)
        guard messageVersion == version else { throw .unknownVersion(messageVersion) }
        let kindCode: UInt8 = try read(&reader)
        guard let kind = Kind(rawValue: kindCode) else { throw .malformed("unknown message type \(kindCode)") }
        let message: GossipMessage
        switch kind {
        case .ping:
            message = .ping(sequence: try read(&reader), from: MemberID(try readString(&reader)), fromAddress: try readAddress(&reader),
                            target: MemberID(try readString(&reader)), updates: try readUpdates(&reader))
        case .ack:
            message = .ack(sequence: try read(&reader), from: MemberID(try readString(&reader)), updates: try readUpdates(&reader))
        case .pingRequest:
            message = .pingRequest(sequence: try read(&reader), from: MemberID(try readString(&reader)), fromAddress: try readAddress(&reader),
                                   target: MemberID(try readString(&reader)), targetAddress: try readAddress(&reader),
                                   updates: try readUpdates(&reader))
        case .nack:
            message = .nack(sequence: try read(&reader), from: MemberID(try readString(&reader)))
        case .gossip:
            message = .gossip(from: MemberID(try readString(&reader)), updates: try readUpdates(&reader))
        case .pushPull:
            let from = MemberID(try readString(&reader))
            let isReply: UInt8 = try read(&reader)
            message = .pushPull(from: from, members: try readUpdates(&reader), isReply: isReply == 1)
        case .catalogDigest:
            let from = MemberID(try readString(&reader))
            let fromAddress = try readAddress(&reader)
            let isReply: UInt8 = try read(&reader)
            let count: UInt16 = try read(&reader)
            var digest: CatalogDigest = [:]
            for _ in 0..<count {
                let origin = MemberID(try readString(&reader))
                digest[origin] = OriginVersion(generation: try read(&reader), version: try read(&reader))
            }
            message = .catalogDigest(from: from, fromAddress: fromAddress, digest: digest, isReply: isReply == 1)
        case .catalogDeltas:
            let from = MemberID(try readString(&reader))
            let count: UInt16 = try read(&reader)
            var deltas: [CatalogDelta] = []
            for _ in 0..<count {
                let origin = MemberID(try readString(&reader))
                let cluster = try readString(&reader)
                let generation: UInt64 = try read(&reader)
                let since: UInt64 = try read(&reader)
                let through: UInt64 = try read(&reader)
                let snapshot: UInt8 = try read(&reader)
                let entryCount: UInt32 = try read(&reader)
                guard Int(entryCount) <= reader.readableBytes else { throw .malformed("entry count \(entryCount) exceeds the message") }
                var entries: [CatalogEntry] = []
                entries.reserveCapacity(Int(entryCount))
                for _ in 0..<entryCount { entries.append(try readEntry(&reader)) }
                deltas.append(CatalogDelta(origin: origin, cluster: cluster, generation: generation, since: since,
                                           through: through, isSnapshot: snapshot == 1, entries: entries))
            }
            message = .catalogDeltas(from: from, deltas: deltas)
        }
        guard reader.readableBytes == 0 else { throw .malformed("\(reader.readableBytes) trailing bytes") }
        return message
    }

    private static func read<T: FixedWidthInteger>(_ reader: inout ByteBuffer) throws(GossipWireError) -> T {
        guard let value = reader.readInteger(as: T.self) else { throw .malformed("message ends early") }
        return value
    }

    private static func readString(_ reader: inout ByteBuffer) throws(GossipWireError) -> String {
        let length: UInt16 = try read(&reader)
        guard let text = reader.readString(length: Int(length)) else { throw .malformed("string of \(length) bytes runs past the end") }
        return text
    }

    private static func readAddress(_ reader: inout ByteBuffer) throws(GossipWireError) -> HostPort {
        let host = try readString(&reader)
        let port: UInt16 = try read(&reader)
        guard !host.isEmpty, port > 0 else { throw .malformed("address '\(host):\(port)' is not valid") }
        return HostPort(host: host, port: Int(port))
    }

    private static func readUpdates(_ reader: inout ByteBuffer) throws(GossipWireError) -> [MemberUpdate] {
        let count: UInt16 = try read(&reader)
        var updates: [MemberUpdate] = []
        for _ in 0..<count {
            let id = MemberID(try readString(&reader))
            let address = try readAddress(&reader)
            let cluster = try readString(&reader)
            let incarnation: UInt64 = try read(&reader)
            let code: UInt8 = try read(&reader)
            let state: MemberState
            switch code {
            case 0: state = .alive
            case 1: state = .suspect
            case 2: state = .dead
            case 3: state = .left
            default: throw .malformed("unknown member state \(code)")
            }
            let hasAccuser: UInt8 = try read(&reader)
            let accuser = hasAccuser == 1 ? MemberID(try readString(&reader)) : nil
            updates.append(MemberUpdate(id: id, address: address, cluster: cluster, incarnation: incarnation, state: state, accuser: accuser))
        }
        return updates
    }

    private static func readEntry(_ reader: inout ByteBuffer) throws(GossipWireError) -> CatalogEntry {
        let host = try readString(&reader)
        let port: UInt16 = try read(&reader)
        let endpoint = try readAddress(&reader)
        let version: UInt64 = try read(&reader)
        let hasRecord: UInt8 = try read(&reader)
        let key = CatalogKey(host: host, port: Int(port), endpoint: endpoint)
        guard hasRecord == 1 else { return CatalogEntry(key: key, version: version, record: nil) }
        let localityText = try readString(&reader)
        let labelCount: UInt16 = try read(&reader)
        var labels: [String: String] = [:]
        for _ in 0..<labelCount { labels[try readString(&reader)] = try readString(&reader) }
        let locality = localityText.isEmpty ? nil : Locality(parsing: localityText)
        // A protocol this version does not know is left out, not an error: the port is TCP here.
        let protocolName = try readString(&reader)
        return CatalogEntry(key: key, version: version, record: CatalogRecord(
            locality: locality, labels: labels, protocol: protocolName.isEmpty ? nil : ServiceProtocol(istioName: protocolName)))
    }
}

/// Why a peer's message was dropped. `reason` is the metric label.
package enum GossipWireError: Error, Sendable, Equatable, CustomStringConvertible {
    case malformed(String)
    case oversized(Int)
    case unknownVersion(UInt8)

    package var reason: String {
        switch self {
        case .malformed: "malformed"
        case .oversized: "oversized"
        case .unknownVersion: "unknown_version"
        }
    }

    package var description: String {
        switch self {
        case .malformed(let detail): "malformed message: \(detail)"
        case .oversized(let size): "message of \(size) bytes exceeds the \(GossipCodec.maximumMessageSize)-byte limit"
        case .unknownVersion(let version): "unknown protocol version \(version)"
        }
    }
}
