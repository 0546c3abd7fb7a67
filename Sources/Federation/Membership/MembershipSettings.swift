import MeshProxyCore

/// Timing of the failure detector and dissemination. Every value can be overridden in the
/// gateway config; profiles give sensible sets.
///
/// The default (`gateway`) profile spends probes generously because a federation has tens of
/// gateways, not thousands of nodes, and a dead gateway black-holes a whole cluster's traffic:
/// it aims to have every live gateway mark a killed one dead within 2 s at N ≤ 50, where
/// memberlist's LAN profile takes 5.8–10.9 s (../shared/research/gossip.md §5.2).
package struct MembershipSettings: Sendable, Equatable {
    /// One probe per member per period (SWIM's protocol period T).
    package var probeInterval: Duration
    /// How long to wait for a direct ack before asking others (memberlist `ProbeTimeout`).
    package var probeTimeout: Duration
    /// Members asked to probe on our behalf when the direct probe fails (SWIM's k).
    package var indirectChecks: Int
    /// Minimum suspicion timeout = suspicionMultiplier × max(1, log10 N) × probeInterval.
    package var suspicionMultiplier: Double
    /// Maximum suspicion timeout = this × minimum (Lifeguard, memberlist uses 6).
    package var suspicionMaxTimeoutMultiplier: Double
    /// Independent confirmations that shrink a suspicion to its minimum (Lifeguard's K).
    package var suspicionConfirmations: Int
    /// Each update is sent retransmitMultiplier × ⌈log10(N + 1)⌉ times (memberlist 4).
    package var retransmitMultiplier: Int
    /// Dedicated gossip: every interval, send queued updates to `gossipFanout` random members.
    package var gossipInterval: Duration
    package var gossipFanout: Int
    /// Dead members still get gossip this long, so a wrongly killed one hears it and refutes.
    package var gossipToTheDead: Duration
    /// Full state exchange with one random member (repairs what gossip missed, heals partitions).
    package var pushPullInterval: Duration
    /// Dead and left members are forgotten after this (tombstone lifetime).
    package var deadMemberRetention: Duration
    /// Lifeguard's local health multiplier saturates at this value (1 disables it).
    package var maxLocalHealthMultiplier: Int
    /// At most this many updates ride on one message.
    package var maxUpdatesPerMessage: Int

    package init(probeInterval: Duration, probeTimeout: Duration, indirectChecks: Int, suspicionMultiplier: Double,
                 suspicionMaxTimeoutMultiplier: Double, suspicionConfirmations: Int, retransmitMultiplier: Int,
                 gossipInterval: Duration, gossipFanout: Int, gossipToTheDead: Duration, pushPullInterval: Duration,
                 deadMemberRetention: Duration, maxLocalHealthMultiplier: Int, maxUpdatesPerMessage: Int) {
        self.probeInterval = probeInterval; self.probeTimeout = probeTimeout; self.indirectChecks = indirectChecks
        self.suspicionMultiplier = suspicionMultiplier; self.suspicionMaxTimeoutMultiplier = suspicionMaxTimeoutMultiplier
        self.suspicionConfirmations = suspicionConfirmations; self.retransmitMultiplier = retransmitMultiplier
        self.gossipInterval = gossipInterval; self.gossipFanout = gossipFanout; self.gossipToTheDead = gossipToTheDead
        self.pushPullInterval = pushPullInterval; self.deadMemberRetention = deadMemberRetention
        self.maxLocalHealthMultiplier = maxLocalHealthMultiplier; self.maxUpdatesPerMessage = maxUpdatesPerMessage
    }

    /// Fast detection for gateways on a LAN or one region's network.
    package static let gateway = MembershipSettings(
        probeInterval: .milliseconds(200), probeTimeout: .milliseconds(100), indirectChecks: 3,
        suspicionMultiplier: 2.5, suspicionMaxTimeoutMultiplier: 4, suspicionConfirmations: 1,
        retransmitMultiplier: 4, gossipInterval: .milliseconds(100), gossipFanout: 3,
        gossipToTheDead: .seconds(30), pushPullInterval: .seconds(30), deadMemberRetention: .seconds(3600),
        maxLocalHealthMultiplier: 8, maxUpdatesPerMessage: 16)

    /// For gateways across continents: slower, fewer bytes, tolerant of 150 ms round trips.
    package static let wan = MembershipSettings(
        probeInterval: .seconds(1), probeTimeout: .milliseconds(500), indirectChecks: 3,
        suspicionMultiplier: 4, suspicionMaxTimeoutMultiplier: 6, suspicionConfirmations: 2,
        retransmitMultiplier: 4, gossipInterval: .milliseconds(300), gossipFanout: 3,
        gossipToTheDead: .seconds(60), pushPullInterval: .seconds(30), deadMemberRetention: .seconds(4 * 3600),
        maxLocalHealthMultiplier: 8, maxUpdatesPerMessage: 16)

    package static func profile(_ profile: FederationProfile) -> MembershipSettings {
        switch profile {
        case .gateway: .gateway
        case .wan: .wan
        }
    }

    /// A config's `federation:` block: the profile (default `gateway`) with each `timing` value
    /// that is set replacing the profile's.
    package init(_ config: FederationConfig?) {
        self = Self.profile(config?.profile ?? .gateway)
        guard let timing = config?.timing else { return }
        if let v = timing.probeInterval { probeInterval = v.duration }
        if let v = timing.probeTimeout { probeTimeout = v.duration }
        if let v = timing.indirectChecks { indirectChecks = v }
        if let v = timing.suspicionMultiplier { suspicionMultiplier = v }
        if let v = timing.suspicionMaxTimeoutMultiplier { suspicionMaxTimeoutMultiplier = v }
        if let v = timing.suspicionConfirmations { suspicionConfirmations = v }
        if let v = timing.retransmitMultiplier { retransmitMultiplier = v }
        if let v = timing.gossipInterval { gossipInterval = v.duration }
        if let v = timing.gossipFanout { gossipFanout = v }
        if let v = timing.gossipToTheDead { gossipToTheDead = v.duration }
        if let v = timing.pushPullInterval { pushPullInterval = v.duration }
        if let v = timing.deadMemberRetention { deadMemberRetention = v.duration }
        if let v = timing.maxLocalHealthMultiplier { maxLocalHealthMultiplier = v }
        if let v = timing.maxUpdatesPerMessage { maxUpdatesPerMessage = v }
    }

    /// The values in effect, written back as a complete `timing:` block (for `/config_dump`).
    package var asTiming: FederationTiming {
        var t = FederationTiming()
        t.probeInterval = ConfigDuration(probeInterval); t.probeTimeout = ConfigDuration(probeTimeout)
        t.indirectChecks = indirectChecks; t.suspicionMultiplier = suspicionMultiplier
        t.suspicionMaxTimeoutMultiplier = suspicionMaxTimeoutMultiplier; t.suspicionConfirmations = suspicionConfirmations
        t.retransmitMultiplier = retransmitMultiplier; t.gossipInterval = ConfigDuration(gossipInterval)
        t.gossipFanout = gossipFanout; t.gossipToTheDead = ConfigDuration(gossipToTheDead)
        t.pushPullInterval = ConfigDuration(pushPullInterval); t.deadMemberRetention = ConfigDuration(deadMemberRetention)
        t.maxLocalHealthMultiplier = maxLocalHealthMultiplier; t.maxUpdatesPerMessage = maxUpdatesPerMessage
        return t
    }

    /// memberlist `suspicionTimeout`: grows with log N so large groups get time to refute.
    package func suspicionMinimum(members: Int) -> Duration {
        let scale = max(1.0, log10(Double(max(1, members))))
        return probeInterval * (suspicionMultiplier * scale)
    }

    /// Sends per update before it leaves the broadcast queue.
    package func retransmitLimit(members: Int) -> Int {
        retransmitMultiplier * max(1, Int(log10(Double(members + 1)).rounded(.up)))
    }
}

import Foundation
