import MeshProxyCore

extension Membership {
    // MARK: - Periodic work

    /// Carries out everything due at `now`: probe deadlines, relays, suspicion expiry, the next
    /// probe, dedicated gossip and push/pull.
    package mutating func tick(now: ContinuousClock.Instant, random: inout some RandomNumberGenerator) -> [Directive] {
        var directives: [Directive] = []
        if isLeaving { return directives }
        directives += checkProbe(now: now, random: &random)
        directives += expireRelays(now: now)
        directives += expireSuspicions(now: now)
        if probe == nil, now >= nextProbe {
            if liveCount == 0, !seeds.isEmpty {
                // Alone: the join (or everyone) was lost. Ask the seeds again, once a period.
                nextProbe = now + settings.probeInterval
                directives += seeds.map { .send(.pushPull(from: myself.id, members: fullState, isReply: false), to: $0) }
            } else {
                directives += startProbe(now: now, random: &random)
            }
        }
        if now >= nextGossip {
            nextGossip = now + settings.gossipInterval
            directives += gossip(now: now, random: &random)
        }
        if now >= nextPushPull {
            nextPushPull = now + settings.pushPullInterval
            if let peer = randomMembers(1, random: &random).first {
                directives.append(.send(.pushPull(from: myself.id, members: fullState, isReply: false), to: peer.address))
            }
            // Reconnect (Serf's ReconnectInterval): also try one member we think is dead. After a
            // partition heals this is how the two sides find each other again; a member that is
            // really gone just does not answer.
            if let peer = randomMembers(1, random: &random, where: { $0.state == .dead }).first {
                directives.append(.send(.pushPull(from: myself.id, members: fullState, isReply: false), to: peer.address))
            }
        }
        if now >= nextReap {
            nextReap = now + .seconds(1)
            reap(now: now)
        }
        return directives
    }

    // MARK: - Probing (SWIM §3.1, Lifeguard LHA-Probe)

    private mutating func chooseProbeTarget(random: inout some RandomNumberGenerator) -> MemberID? {
        if let first = probeFirst, let member = members[first], !member.state.isGone {
            probeFirst = nil
            return first
        }
        probeFirst = nil
        // Randomized round robin: a shuffled walk, reshuffled at the end, bounds the time to
        // the first probe of any member while keeping the expected 1.58 periods.
        for _ in 0..<2 {
            while probeIndex < probeOrder.count {
                let id = probeOrder[probeIndex]
                probeIndex += 1
                if let member = members[id], !member.state.isGone { return id }
            }
            probeOrder = liveMembers.map(\.id).shuffled(using: &random)
            probeIndex = 0
        }
        return nil
    }

    mutating func startProbe(now: ContinuousClock.Instant, random: inout some RandomNumberGenerator) -> [Directive] {
        nextProbe = now + settings.probeInterval * lhmScale
        guard let target = chooseProbeTarget(random: &random), let member = members[target] else { return [] }
        let seq = nextSequence()
        probe = Probe(sequence: seq, target: target,
                      ackDeadline: now + settings.probeTimeout * lhmScale,
                      endDeadline: now + settings.probeInterval * lhmScale)
        var updates = piggyback()
        // Buddy system: tell a suspect directly that it is suspected, so it can refute now.
        if member.state == .suspect, !updates.contains(member.update) { updates.insert(member.update, at: 0) }
        return [.send(.ping(sequence: seq, from: myself.id, fromAddress: myself.address, target: target, updates: updates), to: member.address)]
    }

    private mutating func checkProbe(now: ContinuousClock.Instant, random: inout some RandomNumberGenerator) -> [Directive] {
        guard var current = probe else { return [] }
        if !current.isIndirect, now >= current.ackDeadline {
            current.isIndirect = true
            let helpers = randomMembers(settings.indirectChecks, random: &random) { $0.id != current.target && $0.state == .alive }
            current.expectedNacks = helpers.count
            probe = current
            guard let target = members[current.target] else { return [] }
            let updates = piggyback()
            return helpers.map {
                .send(.pingRequest(sequence: current.sequence, from: myself.id, fromAddress: myself.address,
                                   target: current.target, targetAddress: target.address, updates: updates), to: $0.address)
            }
        }
        guard current.isIndirect, now >= current.endDeadline else { return [] }
        probe = nil
        // No ack at all. Lifeguard: every helper that did not even nack is evidence that our
        // own network or CPU is the problem.
        adjustHealth(by: 1 + max(0, current.expectedNacks - current.nacks))
        // Accuse an alive target; for one already suspected, our failed probe is an
        // independent confirmation that shortens everyone's timer (Lifeguard).
        guard let member = members[current.target], member.state == .alive || member.state == .suspect else { return [] }
        var suspect = member.update
        suspect.state = .suspect
        suspect.accuser = myself.id
        return apply(suspect, now: now)
    }

    private mutating func expireRelays(now: ContinuousClock.Instant) -> [Directive] {
        var directives: [Directive] = []
        for (seq, relay) in relays where now >= relay.nackDeadline {
            relays[seq] = nil
            directives.append(.send(.nack(sequence: relay.requesterSequence, from: myself.id), to: relay.requesterAddress))
        }
        return directives
    }

    mutating func adjustHealth(by delta: Int) {
        localHealth = min(max(0, localHealth + delta), max(0, settings.maxLocalHealthMultiplier - 1))
    }

    // MARK: - Suspicion (Lifeguard LHA-Suspicion)

    /// max(Min, Max − (Max − Min) · log(C + 1) / log(K + 1)) with C independent confirmations.
    func suspicionTimeout(for id: MemberID, _ suspicion: Suspicion) -> Duration {
        let minimum = settings.suspicionMinimum(members: groupSize)
        let maximum = minimum * settings.suspicionMaxTimeoutMultiplier
        var k = settings.suspicionConfirmations
        if groupSize - 2 < k { k = 0 }
        guard k > 0 else { return minimum }
        let confirmations = Double(max(0, suspicion.accusers.count - 1))
        let fraction = log(confirmations + 1) / log(Double(k) + 1)
        let timeout = maximum - (maximum - minimum) * min(1, fraction)
        return max(minimum, timeout)
    }

    /// When the suspicion of `id` runs out: its timer, or the end of its last-chance ping.
    func suspicionDeadline(for id: MemberID, _ suspicion: Suspicion) -> ContinuousClock.Instant {
        suspicion.lastChance?.deadline ?? suspicion.start + suspicionTimeout(for: id, suspicion)
    }

    /// A suspicion that runs out declares the member dead — unless we only heard of it from
    /// others. Then we first ping the member ourselves, carrying the suspicion so it can refute:
    /// epidemic gossip misses a node now and then, and a refutation that missed us must not
    /// cost a live gateway its traffic (a slow member accusing healthy ones makes this common).
    /// A real death costs one probe timeout more here.
    private mutating func expireSuspicions(now: ContinuousClock.Instant) -> [Directive] {
        var directives: [Directive] = []
        for (id, suspicion) in suspicions.sorted(by: { $0.key < $1.key }) where now >= suspicionDeadline(for: id, suspicion) {
            guard let member = members[id], member.state == .suspect, member.incarnation == suspicion.incarnation else {
                suspicions[id] = nil
                continue
            }
            if suspicion.lastChance == nil, !suspicion.accusers.contains(myself.id) {
                let seq = nextSequence()
                let deadline = now + settings.probeTimeout * lhmScale
                suspicions[id]?.lastChance = (seq, deadline)
                directives.append(.send(.ping(sequence: seq, from: myself.id, fromAddress: myself.address, target: id,
                                              updates: [member.update]), to: member.address))
                continue
            }
            suspicions[id] = nil
            var dead = member.update
            dead.state = .dead
            dead.accuser = nil
            directives += apply(dead, now: now)
        }
        return directives
    }

    /// An ack to a last-chance ping: the member lives. Its refutation is on the way (the ping
    /// told it); give it a whole timer to arrive.
    mutating func lastChanceAnswered(sequence: UInt32, from id: MemberID, now: ContinuousClock.Instant) -> Bool {
        guard var suspicion = suspicions[id], suspicion.lastChance?.sequence == sequence else { return false }
        suspicion.lastChance = nil
        suspicion.start = now
        suspicions[id] = suspicion
        return true
    }

    private mutating func reap(now: ContinuousClock.Instant) {
        for (id, member) in members where member.state.isGone && now - member.lastChange >= settings.deadMemberRetention {
            members[id] = nil
            revision &+= 1
            broadcasts.remove(id)
            roster.removeAll { $0 == id }
        }
    }
}

import Foundation
