/// The `federation:` block of a gateway config or topology: where to join, and the failure
/// detector's timing as a named profile with any value overridden.
///
/// ```yaml
/// federation:
///   seeds: [127.0.2.1:15443]
///   profile: gateway          # or wan
///   timing: {probeInterval: 300ms, suspicionMultiplier: 3}
/// ```
package struct FederationConfig: Codable, Sendable, Equatable {
    /// Other gateways' `ADDRESS:15443` to join through; one reachable seed is enough.
    /// A topology leaves it out: `eastwest up` derives every gateway's seeds.
    package var seeds: [HostPort]?
    /// Timing profile; default `gateway`.
    package var profile: FederationProfile?
    /// Values that replace the profile's, one by one.
    package var timing: FederationTiming?

    package init(seeds: [HostPort]? = nil, profile: FederationProfile? = nil, timing: FederationTiming? = nil) {
        self.seeds = seeds; self.profile = profile; self.timing = timing
    }

    package func validate(at path: FieldPath, map: SourceMap) -> [ConfigError] {
        timing?.validate(at: path.key("timing"), map: map) ?? []
    }
}

/// The named timing sets; their values live with the failure detector (`MembershipSettings`).
package enum FederationProfile: String, Codable, Sendable, CaseIterable {
    /// Fast detection for gateways on one region's network: the default.
    case gateway
    /// Across continents: slower, fewer bytes, tolerant of long round trips.
    case wan

    package init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let value = FederationProfile(rawValue: text) ?? (text == "default" ? .gateway : nil) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription:
                "'\(text)' is not a timing profile (\(Self.allCases.map(\.rawValue).joined(separator: ", ")))"))
        }
        self = value
    }
}

/// Per-value overrides of a timing profile; names match `MembershipSettings` (and, where one
/// exists, memberlist's option of the same meaning).
package struct FederationTiming: Codable, Sendable, Equatable {
    package var probeInterval: ConfigDuration?
    package var probeTimeout: ConfigDuration?
    package var indirectChecks: Int?
    package var suspicionMultiplier: Double?
    package var suspicionMaxTimeoutMultiplier: Double?
    package var suspicionConfirmations: Int?
    package var retransmitMultiplier: Int?
    package var gossipInterval: ConfigDuration?
    package var gossipFanout: Int?
    package var gossipToTheDead: ConfigDuration?
    package var pushPullInterval: ConfigDuration?
    package var deadMemberRetention: ConfigDuration?
    package var maxLocalHealthMultiplier: Int?
    package var maxUpdatesPerMessage: Int?

    package init() {}

    func validate(at path: FieldPath, map: SourceMap) -> [ConfigError] {
        var errors: [ConfigError] = []
        let durations: [(String, ConfigDuration?)] = [
            ("probeInterval", probeInterval), ("probeTimeout", probeTimeout), ("gossipInterval", gossipInterval),
            ("gossipToTheDead", gossipToTheDead), ("pushPullInterval", pushPullInterval), ("deadMemberRetention", deadMemberRetention)]
        for case let (name, value?) in durations where value.duration <= .zero {
            errors.append(map.error(.invalidValue, at: path.key(name), "must be longer than 0s"))
        }
        if let timeout = probeTimeout, let interval = probeInterval, timeout.duration >= interval.duration {
            errors.append(map.error(.invalidValue, at: path.key("probeTimeout"),
                                    "\(timeout) must be shorter than probeInterval (\(interval)): a probe must end before the next starts"))
        }
        let counts: [(String, Int?, Int)] = [
            ("indirectChecks", indirectChecks, 0), ("suspicionConfirmations", suspicionConfirmations, 0),
            ("retransmitMultiplier", retransmitMultiplier, 1), ("gossipFanout", gossipFanout, 1),
            ("maxLocalHealthMultiplier", maxLocalHealthMultiplier, 1), ("maxUpdatesPerMessage", maxUpdatesPerMessage, 1)]
        for case let (name, value?, minimum) in counts where value < minimum {
            errors.append(map.error(.invalidValue, at: path.key(name), "must be at least \(minimum)"))
        }
        if let value = suspicionMultiplier, !(value > 0) {
            errors.append(map.error(.invalidValue, at: path.key("suspicionMultiplier"), "must be greater than 0"))
        }
        if let value = suspicionMaxTimeoutMultiplier, !(value >= 1) {
            errors.append(map.error(.invalidValue, at: path.key("suspicionMaxTimeoutMultiplier"), "must be at least 1"))
        }
        return errors
    }
}
