import MeshProxyCore

/// A gateway may speak only for its own cluster: the one its certificate names
/// (`GatewayIdentity`). Applied to every message before the protocol sees it.
///
/// - The sender's own claims: a message that carries claims and whose sender is known in, or
///   announces itself in, another cluster is dropped whole (a gateway configured as another
///   cluster's). A message without claims passes: a relayed ack names the target as sender.
/// - Claims about third parties: SWIM spreads them by relay, so they are kept, except one that
///   moves a known member to another cluster. A relayed member that does not exist cannot
///   attract traffic: a gateway dialled as cluster C's must present C's identity.
/// - Catalog state comes only from its own cluster: a delta whose cluster, or whose origin's
///   cluster, is not the sender's is dropped. Nodes therefore relay and answer only their own
///   cluster's deltas, and every cluster's catalog reaches a node from that cluster's gateways.
package struct IdentityBinding: Sendable, Equatable {
    /// What was taken out and why; empty when the message came through whole.
    package var dropped: [String] = []
    /// What is left to hand to the protocol; nil when nothing is.
    package var message: GossipMessage?

    package init(_ message: GossipMessage, senderCluster: String?, members: [MemberID: Member]) {
        guard let senderCluster else {
            dropped = ["\(message.sender) has no gateway identity that names a cluster"]
            return
        }
        let sender = message.sender
        // A message without claims says nothing a binding could contradict, and one kind names
        // another member as its sender: the ack a ping-req helper relays for the target.
        if message.memberUpdates.isEmpty, !message.isCatalogDeltas {
            self.message = message
            return
        }
        if let known = members[sender]?.cluster, known != senderCluster {
            dropped = ["\(sender) is a member of cluster '\(known)' but its certificate names '\(senderCluster)'"]
            return
        }
        if let claim = message.memberUpdates.first(where: { $0.id == sender && $0.cluster != senderCluster }) {
            dropped = ["\(sender) announces cluster '\(claim.cluster)' but its certificate names '\(senderCluster)'"]
            return
        }
        var dropped: [String] = []
        let kept = message.memberUpdates.filter { update in
            guard let known = members[update.id]?.cluster, known != update.cluster else { return true }
            dropped.append("\(sender) moves \(update.id) from cluster '\(known)' to '\(update.cluster)'")
            return false
        }
        var result: GossipMessage? = message.replacingMemberUpdates(kept)
        if case .catalogDeltas(let from, let deltas) = message {
            let own = deltas.filter { delta in
                let originCluster = members[delta.origin]?.cluster ?? delta.cluster
                guard delta.cluster == senderCluster, originCluster == senderCluster else {
                    dropped.append("\(sender) of cluster '\(senderCluster)' sent catalog state of \(delta.origin) in cluster '\(delta.cluster)'")
                    return false
                }
                return true
            }
            result = own.isEmpty ? nil : .catalogDeltas(from: from, deltas: own)
        }
        self.dropped = dropped
        self.message = result
    }
}

extension GossipMessage {
    /// The member claims a message carries (piggybacked updates or a full state).
    package var memberUpdates: [MemberUpdate] {
        switch self {
        case .ping(_, _, _, _, let updates), .ack(_, _, let updates), .pingRequest(_, _, _, _, _, let updates),
             .gossip(_, let updates), .pushPull(_, let updates, _):
            updates
        case .nack, .catalogDigest, .catalogDeltas:
            []
        }
    }

    var isCatalogDeltas: Bool { if case .catalogDeltas = self { true } else { false } }

    func replacingMemberUpdates(_ updates: [MemberUpdate]) -> GossipMessage {
        switch self {
        case .ping(let sequence, let from, let fromAddress, let target, _):
            .ping(sequence: sequence, from: from, fromAddress: fromAddress, target: target, updates: updates)
        case .ack(let sequence, let from, _): .ack(sequence: sequence, from: from, updates: updates)
        case .pingRequest(let sequence, let from, let fromAddress, let target, let targetAddress, _):
            .pingRequest(sequence: sequence, from: from, fromAddress: fromAddress, target: target, targetAddress: targetAddress, updates: updates)
        case .gossip(let from, _): .gossip(from: from, updates: updates)
        case .pushPull(let from, _, let isReply): .pushPull(from: from, members: updates, isReply: isReply)
        case .nack, .catalogDigest, .catalogDeltas: self
        }
    }
}
