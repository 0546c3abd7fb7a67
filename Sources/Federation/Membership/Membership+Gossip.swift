import MeshProxyCore

extension Membership {
    // MARK: - Messages

    /// Handles one membership message. Catalog messages are not membership's business and
    /// return nothing.
    package mutating func received(_ message: GossipMessage, now: ContinuousClock.Instant,
                                   random: inout some RandomNumberGenerator) -> [Directive] {
        guard !isLeaving else { return [] }
        var directives: [Directive] = []
        switch message {
        case .ping(let seq, let from, let fromAddress, let target, let updates):
            directives += merge(updates, now: now, random: &random)
            // A ping meant for a previous holder of our address is not ours to answer.
            guard target == myself.id else { return directives }
            let reply = members[from]?.address ?? fromAddress
            directives.append(.send(.ack(sequence: seq, from: myself.id, updates: piggyback()), to: reply))
            if members[from] == nil {
                // Someone probes us whom we never heard of: a dissemination gap. Sync with it
                // now rather than at the next push/pull.
                directives.append(.send(.pushPull(from: myself.id, members: fullState, isReply: false), to: fromAddress))
            }

        case .ack(let seq, let from, let updates):
            directives += merge(updates, now: now, random: &random)
            if let current = probe, current.sequence == seq, current.target == from {
                probe = nil
                adjustHealth(by: -1)
            } else if lastChanceAnswered(sequence: seq, from: from, now: now) {
                break
            } else if let relay = relays.removeValue(forKey: seq) {
                directives.append(.send(.ack(sequence: relay.requesterSequence, from: from, updates: []), to: relay.requesterAddress))
            }

        case .pingRequest(let seq, let from, let fromAddress, let target, let targetAddress, let updates):
            directives += merge(updates, now: now, random: &random)
            let mine = nextSequence()
            // Nack a little before the requester gives up, so it can count our answer.
            relays[mine] = Relay(requester: from, requesterAddress: members[from]?.address ?? fromAddress,
                                 requesterSequence: seq, nackDeadline: now + settings.probeTimeout * 0.8)
            directives.append(.send(.ping(sequence: mine, from: myself.id, fromAddress: myself.address, target: target,
                                          updates: piggyback()), to: targetAddress))

        case .nack(let seq, _):
            if let current = probe, current.sequence == seq { probe?.nacks = current.nacks + 1 }

        case .gossip(_, let updates):
            directives += merge(updates, now: now, random: &random)

        case .pushPull(let from, let state, let isReply):
            // A full state is mostly what everyone knows: members new to us (a joiner learning
            // the table) are not gossiped on, or every join would re-broadcast the whole group.
            // The sender itself and changes of state still are.
            directives += merge(state, now: now, random: &random) { update, isNew in !isNew || update.id == from }
            if !isReply, let sender = state.first(where: { $0.id == from }) ?? members[from]?.update {
                directives.append(.send(.pushPull(from: myself.id, members: fullState, isReply: true), to: sender.address))
            }

        case .catalogDigest, .catalogDeltas:
            break
        }
        return directives
    }

    private mutating func merge(_ updates: [MemberUpdate], now: ContinuousClock.Instant,
                                random: inout some RandomNumberGenerator,
                                rebroadcast: (MemberUpdate, _ isNew: Bool) -> Bool = { _, _ in true }) -> [Directive] {
        var directives: [Directive] = []
        for update in updates {
            let isNew = members[update.id] == nil && update.id != myself.id
            directives += apply(update, now: now, rebroadcast: rebroadcast(update, isNew))
            if isNew, members[update.id] != nil {
                // SWIM §4.3: a joiner goes to a random place in the rest of the walk, so every
                // node does not probe the same members in the same order.
                let position = Int.random(in: probeIndex...probeOrder.count, using: &random)
                probeOrder.insert(update.id, at: position)
            }
        }
        return directives
    }

    // MARK: - Applying a claim

    /// Applies one claim about a member with SWIM's precedence rules; refutes claims about us.
    mutating func apply(_ update: MemberUpdate, now: ContinuousClock.Instant, rebroadcast: Bool = true) -> [Directive] {
        if update.id == myself.id { return refute(update, now: now) }
        guard let existing = members[update.id] else {
            // Never learn a member from a claim that it is gone: that is how full-state syncs
            // resurrect long-dead nodes (hashicorp/memberlist#312).
            guard !update.state.isGone else { return [] }
            return record(update, previous: nil, now: now, rebroadcast: rebroadcast)
        }
        if update.state == .suspect, existing.state == .suspect, update.incarnation == existing.incarnation,
           let accuser = update.accuser, var suspicion = suspicions[update.id], !suspicion.accusers.contains(accuser) {
            // An independent confirmation shortens the timer (Lifeguard); pass it on once.
            suspicion.accusers.insert(accuser)
            suspicions[update.id] = suspicion
            enqueue(update)
            return []
        }
        guard update.overrides(existing.update) else { return [] }
        return record(update, previous: existing.state, now: now, rebroadcast: rebroadcast)
    }

    private mutating func record(_ update: MemberUpdate, previous: MemberState?, now: ContinuousClock.Instant,
                                 rebroadcast: Bool = true) -> [Directive] {
        var stored = update
        if stored.state != .suspect { stored.accuser = nil }
        if previous == nil {
            let index = roster.firstIndex { $0 > update.id } ?? roster.endIndex
            roster.insert(update.id, at: index)
        }
        let wasLive = previous.map { !$0.isGone } ?? false
        if wasLive != !update.state.isGone { liveCount += wasLive ? -1 : 1 }
        members[update.id] = Member(update: stored, lastChange: now)
        revision &+= 1
        switch update.state {
        case .suspect:
            suspicions[update.id] = Suspicion(incarnation: update.incarnation, start: now,
                                              accusers: update.accuser.map { [$0] } ?? [])
        case .alive, .dead, .left:
            suspicions[update.id] = nil
        }
        if rebroadcast { enqueue(update) }
        guard previous != update.state else { return [] }
        return [.memberChanged(stored, previous: previous)]
    }

    /// Someone says we are suspect, dead or left, or knows an incarnation of ours we forgot
    /// (we restarted): outbid it and tell everyone.
    private mutating func refute(_ update: MemberUpdate, now: ContinuousClock.Instant) -> [Directive] {
        guard !isLeaving else { return [] }
        guard update.incarnation >= myself.incarnation, update.state != .alive || update.incarnation > myself.incarnation else { return [] }
        myself.incarnation = update.incarnation + 1
        myself.state = .alive
        revision &+= 1
        enqueue(myself)
        guard update.state == .suspect || update.state == .dead else { return [] }
        adjustHealth(by: 1)  // Lifeguard: being suspected hints that we are the slow one
        // Tell a few members at once instead of waiting for the next gossip tick: the
        // refutation races every suspicion timer in the group.
        var random = SplitMix64(seed: UInt64(myself.incarnation) &* 0x9E37_79B9 &+ UInt64(sequence))
        let refutation = [myself]
        return randomMembers(settings.gossipFanout * 2, random: &random).map {
            .send(.gossip(from: myself.id, updates: refutation), to: $0.address)
        }
    }

    // MARK: - Dissemination

    mutating func enqueue(_ update: MemberUpdate) {
        broadcasts.enqueue(update)
    }

    /// Least-sent updates first, each sent at most retransmitMultiplier·⌈log10(N+1)⌉ times.
    mutating func piggyback() -> [MemberUpdate] {
        guard !broadcasts.isEmpty else { return [] }
        return broadcasts.take(settings.maxUpdatesPerMessage, maxTransmits: settings.retransmitLimit(members: groupSize))
    }

    /// Dedicated gossip to a few random members; recently dead ones included so a wrongly
    /// killed member hears it and refutes. Nothing is sent when nothing is queued.
    mutating func gossip(now: ContinuousClock.Instant, random: inout some RandomNumberGenerator) -> [Directive] {
        guard !broadcasts.isEmpty else { return [] }
        let targets = randomMembers(settings.gossipFanout, random: &random) {
            !$0.state.isGone || now - $0.lastChange < settings.gossipToTheDead
        }
        guard !targets.isEmpty else { return [] }
        var directives: [Directive] = []
        for target in targets {
            let updates = piggyback()
            guard !updates.isEmpty else { break }
            directives.append(.send(.gossip(from: myself.id, updates: updates), to: target.address))
        }
        return directives
    }
}
