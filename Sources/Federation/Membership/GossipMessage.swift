import MeshProxyCore

/// Messages between gateways. Membership messages carry piggybacked updates; catalog
/// messages carry digests and deltas (they travel on the same reliable stream but are kept
/// apart so a large catalog never crowds out failure detection).
package enum GossipMessage: Sendable, Equatable {
    /// "Are you alive?" `target` is who the sender thinks it is talking to.
    case ping(sequence: UInt32, from: MemberID, fromAddress: HostPort, target: MemberID, updates: [MemberUpdate])
    case ack(sequence: UInt32, from: MemberID, updates: [MemberUpdate])
    /// Ask `from`'s peer to probe `target` and relay the answer (SWIM ping-req).
    case pingRequest(sequence: UInt32, from: MemberID, fromAddress: HostPort, target: MemberID, targetAddress: HostPort, updates: [MemberUpdate])
    /// Lifeguard: the helper did not hear from the target in time, but the path to it works.
    case nack(sequence: UInt32, from: MemberID)
    /// Dedicated gossip (memberlist's gossip timer).
    case gossip(from: MemberID, updates: [MemberUpdate])
    /// Full membership state; a join is a push/pull with a seed.
    case pushPull(from: MemberID, members: [MemberUpdate], isReply: Bool)
    /// Catalog anti-entropy (Scuttlebutt): what I have, per origin.
    case catalogDigest(from: MemberID, fromAddress: HostPort, digest: CatalogDigest, isReply: Bool)
    /// Catalog entries the receiver lacks, each origin's in version order.
    case catalogDeltas(from: MemberID, deltas: [CatalogDelta])

    package var sender: MemberID {
        switch self {
        case .ping(_, let from, _, _, _), .ack(_, let from, _), .pingRequest(_, let from, _, _, _, _), .nack(_, let from),
             .gossip(let from, _), .pushPull(let from, _, _), .catalogDigest(let from, _, _, _), .catalogDeltas(let from, _):
            from
        }
    }
}
