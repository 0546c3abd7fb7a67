import MeshProxyCore

/// SWIM failure detection with Lifeguard's refinements (local health multiplier, dynamic
/// suspicion timeout, buddy system) and memberlist's dedicated gossip and push/pull repair.
///
/// Pure: it never reads a clock, draws a random number or touches a socket. Every input is a
/// `mutating func` taking `now` (and a random source where it chooses), returning the
/// directives the shell carries out. The shell calls `tick` at `nextDeadline` (or sooner).
package struct Membership: Sendable {
    package enum Directive: Sendable, Equatable {
        case send(GossipMessage, to: HostPort)
        /// A member's state as this node sees it changed; the shell updates routing and logs.
        case memberChanged(MemberUpdate, previous: MemberState?)
    }

    struct Probe: Sendable {
        var sequence: UInt32
        var target: MemberID
        var ackDeadline: ContinuousClock.Instant
        var endDeadline: ContinuousClock.Instant
        var isIndirect = false
        var expectedNacks = 0
        var nacks = 0
    }

    /// A ping we send on someone else's behalf (ping-req).
    struct Relay: Sendable {
        var requester: MemberID
        var requesterAddress: HostPort
        var requesterSequence: UInt32
        var nackDeadline: ContinuousClock.Instant
    }

    struct Suspicion: Sendable {
        var incarnation: UInt64
        var start: ContinuousClock.Instant
        var accusers: Set<MemberID>
        /// The last-chance ping sent when the timer ran out (see `expireSuspicions`).
        var lastChance: (sequence: UInt32, deadline: ContinuousClock.Instant)?
    }

    package let settings: MembershipSettings
    package internal(set) var myself: MemberUpdate
    package internal(set) var members: [MemberID: Member] = [:]
    /// Every member's name, sorted: a stable order for seeded random choices (dictionary order
    /// changes from process to process).
    var roster: [MemberID] = []
    /// Members that are alive or suspect.
    var liveCount = 0
    /// Where we joined; asked again while we know nobody (a lost join must not strand us).
    var seeds: [HostPort] = []
    /// Bumped whenever the member table or our own record changes, so a reader can tell
    /// whether a view it built is still current without rebuilding it.
    package internal(set) var revision: UInt64 = 0
    /// Lifeguard's local health score S ∈ [0, max − 1]: timeouts are scaled by S + 1.
    package internal(set) var localHealth = 0

    var probe: Probe?
    var relays: [UInt32: Relay] = [:]
    var suspicions: [MemberID: Suspicion] = [:]
    var broadcasts = BroadcastQueue()
    var probeOrder: [MemberID] = []
    var probeIndex = 0
    var probeFirst: MemberID?
    var sequence: UInt32 = 0
    var nextProbe: ContinuousClock.Instant
    var nextGossip: ContinuousClock.Instant
    var nextPushPull: ContinuousClock.Instant
    /// Reaping scans the whole table: once a second is plenty for an hour-long retention.
    var nextReap: ContinuousClock.Instant
    package internal(set) var isLeaving = false

    package init(myself id: MemberID, address: HostPort, cluster: String, settings: MembershipSettings = .gateway,
                 now: ContinuousClock.Instant) {
        self.settings = settings
        self.myself = MemberUpdate(id: id, address: address, cluster: cluster, incarnation: 0, state: .alive)
        nextProbe = now + settings.probeInterval
        nextGossip = now + settings.gossipInterval
        nextPushPull = now + settings.pushPullInterval
        nextReap = now + .seconds(1)
    }

    /// The earliest time `tick` has work to do.
    package var nextDeadline: ContinuousClock.Instant {
        var deadline = min(nextProbe, nextGossip, nextPushPull)
        if let probe { deadline = min(deadline, probe.isIndirect ? probe.endDeadline : probe.ackDeadline) }
        for relay in relays.values { deadline = min(deadline, relay.nackDeadline) }
        for (id, suspicion) in suspicions { deadline = min(deadline, suspicionDeadline(for: id, suspicion)) }
        return deadline
    }

    /// Members that are alive or suspect (suspects still count: they may refute), by name.
    package var liveMembers: [Member] {
        roster.compactMap { members[$0] }.filter { !$0.state.isGone }
    }

    /// Group size as Lifeguard and memberlist count it: every known non-gone member and us.
    var groupSize: Int { liveCount + 1 }

    /// Up to `count` distinct random members that pass `include`, without scanning the whole
    /// group: what probing and gossip need many times a second.
    package func randomMembers(_ count: Int, random: inout some RandomNumberGenerator,
                               where include: (Member) -> Bool = { !$0.state.isGone }) -> [Member] {
        guard count > 0, !roster.isEmpty else { return [] }
        var chosen: [Member] = []
        var seen = Set<MemberID>()
        var attempts = 0
        while chosen.count < count, attempts < count * 8 {
            attempts += 1
            let id = roster[Int.random(in: 0..<roster.count, using: &random)]
            guard seen.insert(id).inserted, let member = members[id], include(member) else { continue }
            chosen.append(member)
        }
        if chosen.count < count {
            // Few eligible members: fall back to a scan, still in a seeded order.
            let rest = roster.filter { !seen.contains($0) }.compactMap { members[$0] }.filter(include).shuffled(using: &random)
            chosen += rest.prefix(count - chosen.count)
        }
        return chosen
    }

    var lhmScale: Double { Double(localHealth + 1) }

    mutating func nextSequence() -> UInt32 {
        sequence &+= 1
        return sequence
    }

    // MARK: - Joining and leaving

    /// Introduces this node to seeds: a push/pull with each, so the first reply teaches us the
    /// whole group (memberlist's join).
    package mutating func join(seeds: [HostPort], now: ContinuousClock.Instant) -> [Directive] {
        self.seeds = seeds.filter { $0 != myself.address }
        // Announce ourselves too, not only through the seed: whoever we learn about hears of
        // us from us, so a join that raced another join is not left to the next push/pull.
        enqueue(myself)
        // And sync whole tables with a random member soon: members that joined at the same
        // time as us may have been announced before anyone knew us (state learned by push/pull
        // is not re-gossiped, so this is the repair).
        nextPushPull = min(nextPushPull, now + settings.probeInterval * 10)
        return seeds.filter { $0 != myself.address }.map { .send(.pushPull(from: myself.id, members: fullState, isReply: false), to: $0) }
    }

    /// Announces a graceful leave: `left` outranks `alive` at our next incarnation.
    package mutating func leave(now: ContinuousClock.Instant) -> [Directive] {
        isLeaving = true
        myself.incarnation += 1
        myself.state = .left
        revision &+= 1
        enqueue(myself)
        let updates = piggyback()
        return liveMembers.prefix(max(settings.gossipFanout, 3) * 2).map { .send(.gossip(from: myself.id, updates: updates), to: $0.address) }
    }

    /// Every member we know plus ourselves, as sent in push/pull.
    var fullState: [MemberUpdate] {
        [myself] + members.values.map(\.update).sorted { $0.id < $1.id }
    }

    // MARK: - Data-plane hints

    /// A connect to this member's gateway failed on the data path: probe it next rather than
    /// waiting for its turn, so a dead gateway is suspected sooner.
    package mutating func reportUnreachable(_ id: MemberID, now: ContinuousClock.Instant) {
        guard let member = members[id], !member.state.isGone, probe?.target != id else { return }
        probeFirst = id
        if probe == nil { nextProbe = min(nextProbe, now) }
    }
}
