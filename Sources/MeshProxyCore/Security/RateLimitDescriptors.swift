import NIOHTTP1

/// A request's rate-limit descriptor (Envoy's `RateLimit::Descriptor`): entries in the order
/// the actions produced them. A local rate limit's configured descriptor applies to a request
/// that produced the same entries, key and value, in the same order.
package struct RateLimitDescriptor: Hashable, Sendable, CustomStringConvertible {
    package struct Entry: Hashable, Sendable {
        package var key: String
        package var value: String
        package init(key: String, value: String) { self.key = key; self.value = value }
    }

    package var entries: [Entry]

    package init(_ entries: [Entry]) { self.entries = entries }

    /// Envoy's spelling in its errors and debug log: `key=value, key=value`.
    package var description: String { entries.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") }
}

/// What a request offers the rate-limit actions: its HTTP parts (pseudo-headers included, as
/// Envoy's header map holds them), the client's address, and the clusters on either side.
package struct RateLimitRequest {
    package var facts: HTTPRequestFacts
    /// The downstream client's address, without its port (`remote_address`).
    package var remoteAddress: String
    /// Envoy's local service cluster (`source_cluster`): this gateway's `name.namespace`.
    package var sourceCluster: String
    /// The route's upstream cluster, Istio's `outbound|port|subset|host` (`destination_cluster`).
    package var destinationCluster: String

    package init(facts: HTTPRequestFacts, remoteAddress: String, sourceCluster: String, destinationCluster: String) {
        self.facts = facts
        self.remoteAddress = remoteAddress
        self.sourceCluster = sourceCluster
        self.destinationCluster = destinationCluster
    }

    /// A header's values joined by `,` (Envoy's `getAllOfHeaderAsString`), or a pseudo-header.
    package func header(_ name: String) -> String? {
        switch name.lowercased() {
        case ":path": return facts.path
        case ":method": return facts.method
        case ":authority", "host": return facts.authority.isEmpty ? nil : facts.authority
        case ":scheme": return facts.scheme
        default:
            let values = facts.headers[name]
            if values.isEmpty { return nil }
            return values.count == 1 ? values[0] : values.joined(separator: ",")
        }
    }

    /// The first value of a query parameter, undecoded (`query_parameters`).
    func queryParameter(_ name: String) -> String? { facts.queryParameter(name) }
}

/// Envoy's `config.route.v3.HeaderMatcher`, as `header_value_match` uses it.
package struct HeaderMatcher: Sendable, Equatable {
    package var name: String
    /// nil: `present_match` (the header is there, or — `present: false` — is not).
    package var match: StringMatcher?
    package var present = true
    package var invert = false
    package var treatMissingAsEmpty = false

    package init(name: String, match: StringMatcher?, present: Bool = true, invert: Bool = false, treatMissingAsEmpty: Bool = false) {
        self.name = name
        self.match = match
        self.present = present
        self.invert = invert
        self.treatMissingAsEmpty = treatMissingAsEmpty
    }

    /// Envoy's `HeaderUtility::matchHeaders`: a missing header matches only a `present_match`
    /// that asks for it to be missing (or, inverted, one that asks for it to be there), unless
    /// it is treated as empty.
    package func matches(_ request: RateLimitRequest) -> Bool {
        guard let value = request.header(name) ?? (treatMissingAsEmpty ? "" : nil) else {
            return match == nil && (invert ? present : !present)
        }
        let matched = match?.matches(value) ?? present
        return matched != invert
    }
}

/// One entry of a route's (or the filter's) `rate_limits` (`config.route.v3.RateLimit`): its
/// actions, in order, make one descriptor for a request — or none, when an action finds nothing
/// to say (a missing header without `skip_if_absent`, a `header_value_match` that does not hold).
package struct RateLimitPolicyEntry: Sendable, Equatable {
    package enum Action: Sendable, Equatable {
        /// `("source_cluster", <local service cluster>)`.
        case sourceCluster
        /// `("destination_cluster", <route's cluster>)`.
        case destinationCluster
        /// `(descriptor_key, <header's value>)`.
        case requestHeaders(header: String, key: String, skipIfAbsent: Bool)
        /// `("remote_address", <client address>)`.
        case remoteAddress
        /// `("masked_remote_address", <client address masked>/<length>)`.
        case maskedRemoteAddress(v4PrefixLength: Int, v6PrefixLength: Int)
        /// `(descriptor_key or "generic_key", descriptor_value)`.
        case genericKey(key: String, value: String)
        /// `(descriptor_key or "header_match", descriptor_value)` when the headers match as
        /// `expect_match` says.
        case headerValueMatch(key: String, value: String, expectMatch: Bool, headers: [HeaderMatcher])
        /// `(descriptor_key, <query parameter's value>)`.
        case queryParameters(parameter: String, key: String, skipIfAbsent: Bool)
    }

    package var actions: [Action]
    package var stage: Int = 0
    /// `disable_key` is set: Envoy's local rate limit skips the entry (runtime keys are the
    /// global limit's).
    package var disabled = false

    package init(actions: [Action], stage: Int = 0, disabled: Bool = false) {
        self.actions = actions
        self.stage = stage
        self.disabled = disabled
    }

    /// The request's descriptor under these actions (Envoy's `populateDescriptors`): nil when an
    /// action stops it; an action skipped by `skip_if_absent` adds nothing.
    package func descriptor(for request: RateLimitRequest) -> RateLimitDescriptor? {
        var entries: [RateLimitDescriptor.Entry] = []
        for action in actions {
            switch action {
            case .sourceCluster:
                entries.append(.init(key: "source_cluster", value: request.sourceCluster))
            case .destinationCluster:
                entries.append(.init(key: "destination_cluster", value: request.destinationCluster))
            case .requestHeaders(let header, let key, let skipIfAbsent):
                guard let value = request.header(header) else {
                    if skipIfAbsent { continue }
                    return nil
                }
                entries.append(.init(key: key, value: value))
            case .remoteAddress:
                entries.append(.init(key: "remote_address", value: request.remoteAddress))
            case .maskedRemoteAddress(let v4, let v6):
                guard let masked = IPBlock.masked(request.remoteAddress, v4PrefixLength: v4, v6PrefixLength: v6) else { return nil }
                entries.append(.init(key: "masked_remote_address", value: masked))
            case .genericKey(let key, let value):
                entries.append(.init(key: key, value: value))
            case .headerValueMatch(let key, let value, let expectMatch, let headers):
                guard headers.allSatisfy({ $0.matches(request) }) == expectMatch else { return nil }
                entries.append(.init(key: key, value: value))
            case .queryParameters(let parameter, let key, let skipIfAbsent):
                guard let value = request.queryParameter(parameter) else {
                    if skipIfAbsent { continue }
                    return nil
                }
                entries.append(.init(key: key, value: value))
            }
        }
        // Envoy adds no descriptor without entries (every action skipped).
        return entries.isEmpty ? nil : RateLimitDescriptor(entries)
    }

    /// Every descriptor `entries` make for a request at `stage` (Envoy's order, one per entry).
    package static func descriptors(_ entries: [RateLimitPolicyEntry], stage: Int, for request: RateLimitRequest) -> [RateLimitDescriptor] {
        entries.compactMap { $0.stage == stage && !$0.disabled ? $0.descriptor(for: request) : nil }
    }
}
