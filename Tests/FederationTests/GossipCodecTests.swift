import NIOCore
import Testing
@testable import Federation
import MeshProxyCore

@Suite("Gossip wire format")
struct GossipCodecTests {
    static let update = MemberUpdate(id: "east-gw-1", address: HostPort(host: "127.0.1.1", port: 15443), cluster: "east",
                                     incarnation: 7, state: .suspect, accuser: "west-gw-1")
    static let key = CatalogKey(host: "echo.default.svc.cluster.local", port: 8080, endpoint: HostPort(host: "127.0.1.10", port: 8080))

    static let messages: [GossipMessage] = [
        .ping(sequence: 1, from: "a", fromAddress: HostPort(host: "127.0.1.1", port: 15443), target: "b", updates: [update]),
        .ack(sequence: 2, from: "b", updates: []),
        .pingRequest(sequence: 3, from: "a", fromAddress: HostPort(host: "127.0.1.1", port: 15443), target: "c",
                     targetAddress: HostPort(host: "127.0.3.1", port: 15443), updates: [update, update]),
        .nack(sequence: 4, from: "c"),
        .gossip(from: "a", updates: [update]),
        .pushPull(from: "a", members: [update], isReply: true),
        .catalogDigest(from: "a", fromAddress: HostPort(host: "127.0.1.1", port: 15443),
                       digest: ["a": OriginVersion(generation: 3, version: 9)], isReply: false),
        .catalogDeltas(from: "a", deltas: [CatalogDelta(
            origin: "a", cluster: "east", generation: 3, since: 4, through: 6, isSnapshot: false,
            entries: [CatalogEntry(key: key, version: 5, record: CatalogRecord(locality: Locality(region: "us-east1", zone: "a"), labels: ["version": "v1"])),
                      CatalogEntry(key: key, version: 6, record: nil)])]),
    ]

    @Test("Every message kind survives encode and decode", arguments: messages)
    func roundTrip(message: GossipMessage) throws {
        let encoded = GossipCodec.encode(message)
        #expect(try GossipCodec.decode(encoded) == message)
    }

    @Test("Truncated, unknown-version, unknown-type and oversized messages are refused, never trapped on")
    func malformed() {
        let good = GossipCodec.encode(Self.messages[0])
        for length in 0..<good.readableBytes {
            #expect(throws: GossipWireError.self) { try GossipCodec.decode(good.getSlice(at: 0, length: length)!) }
        }
        var wrongVersion = good
        wrongVersion.setInteger(UInt8(9), at: 0)
        #expect(throws: GossipWireError.unknownVersion(9)) { try GossipCodec.decode(wrongVersion) }
        var wrongType = good
        wrongType.setInteger(UInt8(200), at: 1)
        #expect(throws: GossipWireError.malformed("unknown message type 200")) { try GossipCodec.decode(wrongType) }
        var trailing = good
        trailing.writeInteger(UInt8(0))
        #expect(throws: GossipWireError.malformed("1 trailing bytes")) { try GossipCodec.decode(trailing) }
        let huge = ByteBuffer(repeating: 0, count: GossipCodec.maximumMessageSize + 1)
        #expect(throws: GossipWireError.oversized(GossipCodec.maximumMessageSize + 1)) { try GossipCodec.decode(huge) }
    }
}
