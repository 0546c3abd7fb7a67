import MeshProxyCore

/// One gateway's whole federation protocol: membership (who is alive) and the endpoint
/// catalog (what every cluster serves), pure like its parts. The transport shell and the
/// simulator both drive this type, so what the simulator measures is what gateways run.
package struct FederationNode: Sendable {
    package enum Directive: Sendable, Equatable {
        case send(GossipMessage, to: HostPort)
        case memberChanged(MemberUpdate, previous: MemberState?)
        /// Catalog keys whose value changed here; the shell rebuilds the routing snapshot.
        case catalogChanged([CatalogKey])
        /// Parts of a message from `sender` were dropped: it spoke for a cluster its
        /// certificate does not name (`IdentityBinding`).
        case identityMismatch(sender: MemberID, reasons: [String])
    }

    package struct CatalogSettings: Sendable, Equatable {
        /// Digest exchange with one random member (the repair path).
        package var syncInterval: Duration = .seconds(5)
        /// Peers a fresh change is pushed to at once (the fast path); receivers forward what
        /// was new to them once, so a change spreads in ~log N hops.
        package var pushFanout = 3
        /// Extra gossip ticks a fresh delta is pushed on, after the first push.
        package var retransmitRounds = 2
        /// Most entries per deltas message.
        package var maxEntriesPerMessage = 2_000
        /// How long a delete is remembered.
        package var tombstoneRetention: Duration = .seconds(3600)
        package init() {}
    }

    package private(set) var membership: Membership
    package private(set) var catalog: EndpointCatalog
    package let catalogSettings: CatalogSettings
    private var nextCatalogSync: ContinuousClock.Instant
    /// Fresh deltas pushed again on the next few gossip ticks: a single push to 3 peers that
    /// each forward once misses about e⁻³ ≈ 5 % of nodes; a few more rounds make a miss rare
    /// and leave the rest to the digest sync.
    private var pendingDeltas: [(delta: CatalogDelta, rounds: Int)] = []
    private var nextDeltaRound: ContinuousClock.Instant

    package init(id: MemberID, address: HostPort, cluster: String, generation: UInt64,
                 settings: MembershipSettings = .gateway, catalogSettings: CatalogSettings = .init(),
                 now: ContinuousClock.Instant) {
        membership = Membership(myself: id, address: address, cluster: cluster, settings: settings, now: now)
        catalog = EndpointCatalog(myself: id, cluster: cluster, generation: generation)
        self.catalogSettings = catalogSettings
        nextCatalogSync = now + catalogSettings.syncInterval
        nextDeltaRound = now + settings.gossipInterval
    }

    /// Most members a fresh change of our own is pushed to directly; beyond it, the digest sync.
    static let directPushLimit = 256

    package var id: MemberID { membership.myself.id }
    package var cluster: String { membership.myself.cluster }
    package var nextDeadline: ContinuousClock.Instant {
        min(membership.nextDeadline, nextCatalogSync, pendingDeltas.isEmpty ? nextCatalogSync : nextDeltaRound)
    }

    package mutating func join(seeds: [HostPort], now: ContinuousClock.Instant) -> [Directive] {
        var directives = membership.join(seeds: seeds, now: now).map(Self.lift)
        // Ask the seeds for the catalog at once instead of waiting for the first sync.
        for seed in seeds where seed != membership.myself.address {
            directives.append(.send(.catalogDigest(from: id, fromAddress: membership.myself.address, digest: catalog.digest, isReply: false), to: seed))
        }
        return directives
    }

    package mutating func leave(now: ContinuousClock.Instant) -> [Directive] {
        membership.leave(now: now).map(Self.lift)
    }

    package mutating func reportUnreachable(_ member: MemberID, now: ContinuousClock.Instant) {
        membership.reportUnreachable(member, now: now)
    }

    package mutating func tick(now: ContinuousClock.Instant, random: inout some RandomNumberGenerator) -> [Directive] {
        var directives = syncWithArrivals(membership.tick(now: now, random: &random).map(Self.lift))
        if now >= nextDeltaRound {
            nextDeltaRound = now + membership.settings.gossipInterval
            if !pendingDeltas.isEmpty {
                let deltas = pendingDeltas.map(\.delta)
                pendingDeltas = pendingDeltas.compactMap { $0.rounds > 1 ? ($0.delta, $0.rounds - 1) : nil }
                let peers = membership.randomMembers(catalogSettings.pushFanout, random: &random)
                directives += peers.map { .send(.catalogDeltas(from: id, deltas: deltas), to: $0.address) }
            }
        }
        if now >= nextCatalogSync {
            nextCatalogSync = now + catalogSettings.syncInterval
            catalog.collectGarbage(now: now, retention: catalogSettings.tombstoneRetention) { origin in
                // An origin whose member is gone from the table entirely was reaped.
                membership.members[origin] == nil
            }
            if let peer = membership.randomMembers(1, random: &random).first {
                directives.append(.send(.catalogDigest(from: id, fromAddress: membership.myself.address, digest: catalog.digest, isReply: false), to: peer.address))
            }
        }
        return directives
    }

    /// Publishes this gateway's own endpoints (replacing what it published before) and pushes
    /// the change to a few peers at once.
    package mutating func publish(_ records: [CatalogKey: CatalogRecord], now: ContinuousClock.Instant,
                                  random: inout some RandomNumberGenerator) -> [Directive] {
        guard let delta = catalog.publish(records, now: now) else { return [] }
        // To every live member at once, not a fanout: other clusters' gateways do not relay
        // our cluster's state (IdentityBinding), so rumour mongering would stop at the first hop.
        return [.catalogChanged(delta.entries.map(\.key))] + push([delta], except: nil, fanout: Self.directPushLimit, random: &random)
    }

    package mutating func register(_ key: CatalogKey, _ record: CatalogRecord, now: ContinuousClock.Instant,
                                   random: inout some RandomNumberGenerator) -> [Directive] {
        var records = catalog.localRecords
        records[key] = record
        return publish(records, now: now, random: &random)
    }

    package mutating func deregister(_ key: CatalogKey, now: ContinuousClock.Instant,
                                     random: inout some RandomNumberGenerator) -> [Directive] {
        var records = catalog.localRecords
        guard records.removeValue(forKey: key) != nil else { return [] }
        return publish(records, now: now, random: &random)
    }

    /// A message from a gateway whose verified certificate names `senderCluster` (nil: a
    /// gateway identity that names no cluster); what it may not say is dropped first.
    package mutating func received(_ message: GossipMessage, senderCluster: String?, now: ContinuousClock.Instant,
                                   random: inout some RandomNumberGenerator) -> [Directive] {
        let binding = IdentityBinding(message, senderCluster: senderCluster, members: membership.members)
        let mismatch: [Directive] = binding.dropped.isEmpty ? [] : [.identityMismatch(sender: message.sender, reasons: binding.dropped)]
        guard let admitted = binding.message else { return mismatch }
        return mismatch + received(admitted, now: now, random: &random)
    }

    private mutating func received(_ message: GossipMessage, now: ContinuousClock.Instant,
                                   random: inout some RandomNumberGenerator) -> [Directive] {
        switch message {
        case .catalogDigest(let from, let fromAddress, let digest, let isReply):
            var directives: [Directive] = []
            // A joiner's digest can arrive before its membership does: answer the address it gave.
            let address = membership.members[from]?.address ?? fromAddress
            // Only our own cluster's state: the peer would drop any other (IdentityBinding).
            let deltas = catalog.deltas(for: digest, budget: catalogSettings.maxEntriesPerMessage).filter { $0.cluster == cluster }
            if !deltas.isEmpty { directives.append(.send(.catalogDeltas(from: id, deltas: deltas), to: address)) }
            // Scuttlebutt's second leg: they know more somewhere; send our digest back.
            if !isReply, catalog.isBehind(digest) {
                directives.append(.send(.catalogDigest(from: id, fromAddress: membership.myself.address, digest: catalog.digest, isReply: true), to: address))
            }
            return directives
        case .catalogDeltas(let from, let deltas):
            var changed: [CatalogKey] = []
            var news: [CatalogDelta] = []
            for delta in deltas {
                let keys = catalog.apply(delta, now: now)
                changed += keys
                // Rumour mongering: forward a fresh change that was new to us, once. A snapshot
                // is anti-entropy catching us up on old state (a joiner gets every origin's);
                // everyone else has it, and forwarding it is what made joins storm.
                if !keys.isEmpty, !delta.isSnapshot, delta.cluster == cluster { news.append(delta) }
            }
            guard !changed.isEmpty else { return [] }
            return [.catalogChanged(changed)] + (news.isEmpty ? [] : push(news, except: from, random: &random))
        default:
            return syncWithArrivals(membership.received(message, now: now, random: &random).map(Self.lift))
        }
    }

    /// A member that is new or back from dead gets our digest at once: only its own cluster's
    /// gateways can bring us its cluster's catalog, and the periodic sync with one random
    /// member would take many rounds to reach it (after a partition heals, every one of them).
    private func syncWithArrivals(_ directives: [Directive]) -> [Directive] {
        var result = directives
        for case .memberChanged(let update, let previous) in directives
        where update.state == .alive && (previous == nil || previous?.isGone == true) && update.id != id {
            result.append(.send(.catalogDigest(from: id, fromAddress: membership.myself.address, digest: catalog.digest, isReply: false),
                                to: update.address))
        }
        return result
    }

    /// Sends fresh deltas to `fanout` live members (default: the catalog's push fanout) and
    /// queues them for the retransmit rounds.
    private mutating func push(_ deltas: [CatalogDelta], except: MemberID?, fanout: Int? = nil,
                               random: inout some RandomNumberGenerator) -> [Directive] {
        pendingDeltas += deltas.map { ($0, catalogSettings.retransmitRounds) }
        let peers = membership.randomMembers(fanout ?? catalogSettings.pushFanout, random: &random) { !$0.state.isGone && $0.id != except }
        return peers.map { .send(.catalogDeltas(from: id, deltas: deltas), to: $0.address) }
    }

    private static func lift(_ directive: Membership.Directive) -> Directive {
        switch directive {
        case .send(let message, let address): .send(message, to: address)
        case .memberChanged(let update, let previous): .memberChanged(update, previous: previous)
        }
    }
}
