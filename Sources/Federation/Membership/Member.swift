import MeshProxyCore

/// A gateway's name in the federation (its gateway name, unique across the mesh).
package struct MemberID: Hashable, Sendable, Comparable, CustomStringConvertible, ExpressibleByStringLiteral {
    package var name: String
    package init(_ name: String) { self.name = name }
    package init(stringLiteral value: String) { self.name = value }
    package var description: String { name }
    package static func < (a: MemberID, b: MemberID) -> Bool { a.name < b.name }
}

/// SWIM member states, plus `left` for a graceful leave (memberlist's StateLeft).
package enum MemberState: String, Sendable, Equatable, Codable {
    case alive, suspect, dead, left

    /// Dead and left members get no probes and no new traffic.
    package var isGone: Bool { self == .dead || self == .left }
}

/// What one member claims about another: the unit of gossip. Only the member itself raises its
/// incarnation, so `(incarnation, state)` orders every claim about it (SWIM §4.2).
package struct MemberUpdate: Hashable, Sendable {
    package var id: MemberID
    package var address: HostPort
    package var cluster: String
    package var incarnation: UInt64
    package var state: MemberState
    /// For `suspect`: who raised the suspicion, so independent confirmations can be counted
    /// (Lifeguard). Nil otherwise.
    package var accuser: MemberID?

    package init(id: MemberID, address: HostPort, cluster: String, incarnation: UInt64, state: MemberState, accuser: MemberID? = nil) {
        self.id = id; self.address = address; self.cluster = cluster; self.incarnation = incarnation; self.state = state
        self.accuser = accuser
    }

    /// Whether this claim replaces `current` (memberlist state.go precedence):
    /// alive needs a higher incarnation; suspect the same or higher over alive, higher over
    /// suspect; dead and left win at the same or higher incarnation and stay until the member
    /// itself comes back with a higher one.
    package func overrides(_ current: MemberUpdate) -> Bool {
        switch state {
        case .alive:
            return incarnation > current.incarnation
        case .suspect:
            switch current.state {
            case .alive: return incarnation >= current.incarnation
            case .suspect, .dead, .left: return incarnation > current.incarnation
            }
        case .dead, .left:
            if current.state.isGone { return incarnation > current.incarnation }
            return incarnation >= current.incarnation
        }
    }
}

/// A member as this node sees it.
package struct Member: Sendable, Equatable {
    package var update: MemberUpdate
    package var lastChange: ContinuousClock.Instant

    package var id: MemberID { update.id }
    package var state: MemberState { update.state }
    package var incarnation: UInt64 { update.incarnation }
    package var address: HostPort { update.address }
    package var cluster: String { update.cluster }
}
