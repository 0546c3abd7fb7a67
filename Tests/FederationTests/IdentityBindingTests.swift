import MeshProxyCore
import Testing
@testable import Federation

@Suite("A gateway speaks only for its own cluster (identity binding)")
struct IdentityBindingTests {
    let now = ContinuousClock.now
    let address = HostPort(host: "127.0.0.1", port: 15443)

    func update(_ id: MemberID, _ cluster: String) -> MemberUpdate {
        MemberUpdate(id: id, address: address, cluster: cluster, incarnation: 1, state: .alive)
    }

    var members: [MemberID: Member] {
        ["east-gw": Member(update: update("east-gw", "east"), lastChange: now),
         "west-gw": Member(update: update("west-gw", "west"), lastChange: now)]
    }

    func delta(_ origin: MemberID, _ cluster: String) -> CatalogDelta {
        CatalogDelta(origin: origin, cluster: cluster, generation: 1, since: 0, through: 1, isSnapshot: true, entries: [])
    }

    @Test("A sender announcing, or known in, a cluster its certificate does not name is dropped whole")
    func senderClaims() {
        let announces = GossipMessage.gossip(from: "liar", updates: [update("liar", "west"), update("east-gw", "east")])
        let dropped = IdentityBinding(announces, senderCluster: "east", members: members)
        #expect(dropped.message == nil)
        #expect(dropped.dropped == ["liar announces cluster 'west' but its certificate names 'east'"])

        let known = GossipMessage.pushPull(from: "west-gw", members: [update("east-gw", "east")], isReply: false)
        #expect(IdentityBinding(known, senderCluster: "east", members: members).message == nil)
        #expect(IdentityBinding(known, senderCluster: nil, members: members).message == nil)
    }

    @Test("Third-party claims are relayed, except one that moves a known member; a relayed ack passes")
    func relayedClaims() {
        let relay = GossipMessage.gossip(from: "east-gw", updates: [update("new-west-gw", "west"), update("west-gw", "east")])
        let binding = IdentityBinding(relay, senderCluster: "east", members: members)
        #expect(binding.message == .gossip(from: "east-gw", updates: [update("new-west-gw", "west")]))
        #expect(binding.dropped == ["east-gw moves west-gw from cluster 'west' to 'east'"])

        // A ping-req helper in east relays the ack of west's gateway under its name.
        let ack = GossipMessage.ack(sequence: 7, from: "west-gw", updates: [])
        #expect(IdentityBinding(ack, senderCluster: "east", members: members).message == ack)
    }

    @Test("Catalog state is taken only from its own cluster's gateways")
    func catalogState() {
        let mixed = GossipMessage.catalogDeltas(from: "east-gw", deltas: [delta("east-gw", "east"), delta("west-gw", "west"), delta("west-gw", "east")])
        let binding = IdentityBinding(mixed, senderCluster: "east", members: members)
        #expect(binding.message == .catalogDeltas(from: "east-gw", deltas: [delta("east-gw", "east")]))
        #expect(binding.dropped.count == 2)
        let foreign = GossipMessage.catalogDeltas(from: "east-gw", deltas: [delta("west-gw", "west")])
        #expect(IdentityBinding(foreign, senderCluster: "east", members: members).message == nil)
    }

    @Test("A node answers a digest and relays news with its own cluster's state only")
    func nodeSendsOwnClusterOnly() {
        var random = SystemRandomNumberGenerator()
        var west = FederationNode(id: "west-gw", address: HostPort(host: "127.0.2.1", port: 15443), cluster: "west", generation: 1, now: now)
        // west learned east's catalog from east's gateway itself.
        let east = [delta("east-gw", "east")].map { var d = $0; d.entries = [CatalogEntry(key: CatalogKey(host: "a.default.svc.cluster.local", port: 80, endpoint: address), version: 1, record: CatalogRecord())]; return d }
        _ = west.received(.catalogDeltas(from: "east-gw", deltas: east), senderCluster: "east", now: now, random: &random)
        _ = west.publish([CatalogKey(host: "b.default.svc.cluster.local", port: 80, endpoint: address): CatalogRecord()], now: now, random: &random)
        // A third gateway knowing nothing asks west.
        let empty = FederationNode(id: "south-gw", address: HostPort(host: "127.0.3.1", port: 15443), cluster: "south", generation: 1, now: now)
        let replies = west.received(.catalogDigest(from: "south-gw", fromAddress: HostPort(host: "127.0.3.1", port: 15443), digest: empty.catalog.digest, isReply: false),
                                    senderCluster: "south", now: now, random: &random)
        let sent = replies.compactMap { directive -> [CatalogDelta]? in
            if case .send(.catalogDeltas(_, let deltas), _) = directive { deltas } else { nil }
        }.flatMap { $0 }
        #expect(sent.map(\.cluster) == ["west"])
    }
}
