import Yams

/// An Istio EnvoyFilter (networking.istio.io v1alpha3) as users write it. EastWest carries out
/// one kind of patch — an `HTTP_FILTER` inserting `envoy.filters.http.local_ratelimit` — with
/// Envoy's semantics; every other patch loads with a warning naming it.
package struct EnvoyFilter: Codable, Sendable, Equatable {
    package var workloadSelector: Selector?
    package var targetRefs: [AuthorizationPolicy.PolicyTargetReference]?
    package var configPatches: [ConfigPatch]?
    package var priority: Int?
    /// `metadata`; set by the loader.
    package var namespace: String = "default"
    package var name: String = ""

    enum CodingKeys: String, CodingKey { case workloadSelector, targetRefs, configPatches, priority }

    package struct Selector: Codable, Sendable, Equatable {
        package var labels: [String: String]?
    }

    package struct ConfigPatch: Codable, Sendable, Equatable {
        package var applyTo: String?
        package var match: Match?
        package var patch: Patch?
    }

    package struct Match: Codable, Sendable, Equatable {
        package var context: String?
        package var proxy: ConfigValue?
        package var listener: ConfigValue?
        package var routeConfiguration: ConfigValue?
        package var cluster: ConfigValue?
    }

    package struct Patch: Codable, Sendable, Equatable {
        package var operation: String?
        package var value: ConfigValue?
        package var filterClass: String?
    }

    /// Whether the filter applies to a gateway with these labels in this namespace: a
    /// `workloadSelector` its labels satisfy, or none in its namespace or the root namespace.
    package func applies(toLabels labels: [String: String], namespace gatewayNamespace: String, root: String = "istio-system") -> Bool {
        guard namespace == gatewayNamespace || namespace == root else { return false }
        return workloadSelector?.labels.map { $0.selects(labels) } ?? true
    }
}

/// Any YAML or JSON value: the parts of a resource that carry Envoy's own configuration, a
/// JWT's claims.
package indirect enum ConfigValue: Codable, Sendable, Equatable {
    case string(String), number(Double), bool(Bool), list([ConfigValue]), object([String: ConfigValue]), null

    package init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([ConfigValue].self) { self = .list(value) }
        else { self = .object(try container.decode([String: ConfigValue].self)) }
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .list(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }

    package subscript(key: String) -> ConfigValue? {
        if case .object(let object) = self { return object[key] }
        return nil
    }

    package var string: String? {
        switch self {
        case .string(let value): value
        case .number(let value): value == value.rounded() ? String(Int(value)) : String(value)
        default: nil
        }
    }

    package var int: Int? {
        switch self {
        case .number(let value): Int(exactly: value.rounded()) ?? nil
        case .string(let value): Int(value)
        default: nil
        }
    }
}

extension EnvoyFilter: NamedIstioResource {
    /// Every local rate-limit patch, in the order Istio applies them (priority, then as read).
    package static func rateLimitPatches(_ filters: [EnvoyFilter]) -> [(filter: EnvoyFilter, reading: LocalRateLimitPatch.Reading)] {
        filters.enumerated().sorted { ($0.element.priority ?? 0, $0.offset) < ($1.element.priority ?? 0, $1.offset) }.flatMap { _, filter in
            (filter.configPatches ?? []).compactMap { patch in
                let reading = LocalRateLimitPatch.read(patch, origin: "EnvoyFilter \(filter.namespace)/\(filter.name)")
                switch reading {
                case .filter, .route, .connections: return (filter, reading)
                case .notRateLimit, .invalid: return nil
                }
            }
        }
    }

    /// Gateway-only rate limits this gateway does not run because the filter's scope leaves it
    /// out, said aloud.
    package static func gatewayWarnings(_ filters: [EnvoyFilter], labels: [String: String], namespace: String) -> [String] {
        var seen = Set<String>()
        return rateLimitPatches(filters).compactMap { filter, reading in
            guard case .filter(_, .gateway, _) = reading, !filter.applies(toLabels: labels, namespace: namespace),
                  seen.insert("\(filter.namespace)/\(filter.name)").inserted else { return nil }
            return "warning: EnvoyFilter \(filter.namespace)/\(filter.name) rate-limits the gateways \(filter.workloadSelector?.labels.map { "labelled \($0)" } ?? "of namespace \(filter.namespace)"), "
                + "not this one (namespace \(namespace)): as in Istio it does not apply here. Put it in \(namespace) or istio-system with a workloadSelector matching the gateway's labels"
        }
    }
}

extension IstioPolicyLoader {
    static let envoyFilterAPIVersions: Set<String> = ["networking.istio.io/v1alpha3", "networking.istio.io/v1beta1", "networking.istio.io/v1"]

    static func readEnvoyFilter(_ spec: Node, _ map: SourceMap, _ loaded: inout Loaded) -> [ConfigError] {
        if let version = map.root?.mapping?["apiVersion"]?.string, version != "networking.istio.io/v1alpha3" {
            loaded.warnings.append(map.error(.istioDifference, at: FieldPath().key("apiVersion"),
                                             "EnvoyFilter is networking.istio.io/v1alpha3 only; Istio rejects \(version). EastWest reads it as v1alpha3").asWarning)
        }
        return readNamed(EnvoyFilter.self, kind: "EnvoyFilter", notImplemented: [], spec: spec, map: map, loaded: &loaded,
                         check: { check($0, map: map) }) { filter, loaded in loaded.envoyFilters.append(filter) }
    }

    /// Each patch: a local rate limit EastWest carries out (its errors and Envoy's silent
    /// traps said aloud), or a warning naming what is not carried out.
    static func check(_ filter: EnvoyFilter, map: SourceMap) -> (errors: [ConfigError], warnings: [ConfigError]) {
        var errors: [ConfigError] = []
        var warnings: [ConfigError] = []
        for (i, patch) in (filter.configPatches ?? []).enumerated() {
            let path = FieldPath().key("spec").key("configPatches").index(i)
            switch LocalRateLimitPatch.read(patch, origin: "\(map.file):\(map.mark(of: path)?.line ?? 0)") {
            case .notRateLimit(let what):
                warnings.append(map.error(.notImplemented, at: path, "EnvoyFilter patch not carried out by EastWest (\(what)); it reads HTTP_FILTER patches that insert envoy.filters.http.local_ratelimit, HTTP_ROUTE and VIRTUAL_HOST patches that configure it per route or virtual host, and NETWORK_FILTER patches that insert envoy.filters.network.local_ratelimit").asWarning)
            case .invalid(let field, let message):
                let value = path.key("patch").key("value")
                let at = field == LocalRateLimitPatch.routeRateLimitsField ? (patch.applyTo == "HTTP_ROUTE" ? value.key("route") : value).key("rate_limits")
                    : patch.applyTo == "HTTP_ROUTE" || patch.applyTo == "VIRTUAL_HOST" ? value.key("typed_per_filter_config") : value.key("typed_config").key(field)
                errors.append(map.error(.invalidValue, at: at, message))
            case .filter(_, _, let notices), .route(_, _, _, _, _, _, let notices), .connections(_, _, _, _, let notices):
                for notice in notices { warnings.append(map.error(.istioDifference, at: path.key("patch").key("value"), notice).asWarning) }
            }
        }
        return (errors, warnings)
    }
}

/// Reads one EnvoyFilter patch as a local rate limit: an `HTTP_FILTER` patch inserting
/// `envoy.filters.http.local_ratelimit` (with its own token bucket, or none when only routes
/// limit), or an `HTTP_ROUTE` patch merging a `typed_per_filter_config` for it (the route's own
/// bucket, which replaces the filter's for that route, as in Envoy).
package enum LocalRateLimitPatch {
    /// Where the patch runs: at gateways, at the selected workloads' inbound sidecars (here: the
    /// gateway that delivers to them), or both.
    package enum Context: Sendable, Equatable { case any, gateway, inbound }

    /// An `HTTP_ROUTE` patch (a route; `include_vh_rate_limits` adds its virtual host's
    /// `rate_limits` to its own) or a `VIRTUAL_HOST` patch (every route of the virtual host,
    /// below a route's own settings).
    package enum RouteScope: Sendable, Equatable {
        case route(includeVirtualHostRateLimits: Bool)
        case virtualHost
    }

    package enum Reading {
        case notRateLimit(String)
        case invalid(field: String, message: String)
        /// The filter inserted, with its filter-level settings (nil: no token_bucket).
        case filter(LocalRateLimit.Settings?, context: Context, notices: [String])
        /// A route's own settings (nil: the route only adds `rate_limits`, for the filter's
        /// descriptors) and its `route.rate_limits`: the inbound port its virtual host names
        /// (`inbound|http|9080`) and the route's name, each nil for any.
        case route(LocalRateLimit.Settings?, rateLimits: [RateLimitPolicyEntry], context: Context, port: Int?, routeName: String?, scope: RouteScope,
                   notices: [String])
        /// `envoy.filters.network.local_ratelimit`: new connections take a token, on the
        /// filter chains `chain` names (nil: every chain) of the listener `port` names.
        case connections(ConnectionRateLimit.Settings, context: Context, chain: ConnectionRateLimit.Chain?, port: Int?, notices: [String])
    }

    static let networkFilterName = "envoy.filters.network.local_ratelimit"

    static let filterName = "envoy.filters.http.local_ratelimit"
    static let enableHint = "filter_enabled: {runtime_key: local_rate_limit_enabled, default_value: {numerator: 100, denominator: HUNDRED}}"
    static let enforceHint = "filter_enforced: {runtime_key: local_rate_limit_enforced, default_value: {numerator: 100, denominator: HUNDRED}}"

    package static func read(_ patch: EnvoyFilter.ConfigPatch, origin: String) -> Reading {
        let context: Context
        switch patch.match?.context ?? "ANY" {
        case "ANY": context = .any
        case "GATEWAY": context = .gateway
        case "SIDECAR_INBOUND": context = .inbound
        case let other: return .notRateLimit("context \(other): the client's own sidecar, which EastWest is not")
        }
        let operation = patch.patch?.operation ?? ""
        switch patch.applyTo {
        case "HTTP_FILTER":
            guard ["INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "ADD"].contains(operation) else { return .notRateLimit("operation \(operation)") }
            guard let value = patch.patch?.value, value["name"]?.string == filterName else {
                return .notRateLimit("filter \(patch.patch?.value?["name"]?.string ?? "unnamed")")
            }
            // A filter with no typed_config at all is one Envoy would reject: said, and read as empty.
            var notices: [String] = []
            switch settings(value["typed_config"] ?? .object([:]), origin: origin, notices: &notices) {
            case .failure(let invalid): return .invalid(field: invalid.field, message: invalid.message)
            case .success(let settings): return .filter(settings, context: context, notices: notices)
            }
        case "HTTP_ROUTE", "VIRTUAL_HOST":
            let isRoute = patch.applyTo == "HTTP_ROUTE"
            guard operation == "MERGE" else { return .notRateLimit("\(patch.applyTo ?? "") operation \(operation)") }
            let typed = patch.patch?.value?["typed_per_filter_config"]?[filterName]
            let routeRateLimits = isRoute ? patch.patch?.value?["route"]?["rate_limits"] : patch.patch?.value?["rate_limits"]
            guard typed != nil || routeRateLimits != nil else {
                return .notRateLimit("an \(patch.applyTo ?? "") patch without typed_per_filter_config for \(filterName) or \(isRoute ? "route." : "")rate_limits")
            }
            let vhost = patch.match?.routeConfiguration?["vhost"]
            let port = vhost?["name"]?.string.flatMap { name in name.split(whereSeparator: { $0 == "|" || $0 == ":" }).last.flatMap { Int($0) } }
            let routeName = isRoute ? vhost?["route"]?["name"]?.string : nil
            let scope: RouteScope = isRoute ? .route(includeVirtualHostRateLimits: patch.patch?.value?["route"]?["include_vh_rate_limits"] == .bool(true)) : .virtualHost
            var notices: [String] = []
            var rateLimits: [RateLimitPolicyEntry] = []
            if let routeRateLimits {
                switch Self.rateLimits(routeRateLimits, notices: &notices) {
                case .failure(let invalid): return .invalid(field: routeRateLimitsField, message: invalid.message)
                case .success(let read): rateLimits = read
                }
            }
            guard let typed else { return .route(nil, rateLimits: rateLimits, context: context, port: port, routeName: routeName, scope: scope, notices: notices) }
            switch settings(typed, origin: origin, notices: &notices) {
            case .failure(let invalid): return .invalid(field: invalid.field, message: invalid.message)
            case .success(nil):
                // Envoy: "local rate limit token bucket must be set for per filter configs".
                return .invalid(field: "token_bucket", message: "a \(isRoute ? "route" : "virtual host")'s local rate limit (typed_per_filter_config) needs a token_bucket; Envoy rejects it without one")
            case .success(let settings?): return .route(settings, rateLimits: rateLimits, context: context, port: port, routeName: routeName, scope: scope, notices: notices)
            }
        case "NETWORK_FILTER":
            guard ["INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "ADD"].contains(operation) else { return .notRateLimit("operation \(operation)") }
            guard let value = patch.patch?.value, value["name"]?.string == networkFilterName else {
                return .notRateLimit("network filter \(patch.patch?.value?["name"]?.string ?? "unnamed")")
            }
            var notices: [String] = []
            let config = message(value["typed_config"] ?? .object([:]), type: "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit", notices: &notices)
            let bucket: (maxTokens: Int, tokensPerFill: Int, fillInterval: Duration)
            switch tokenBucket(config) {
            case .failure(let invalid): return .invalid(field: invalid.field, message: invalid.message)
            case .success(nil): return .invalid(field: "token_bucket", message: "the network local rate limit needs a token_bucket (Envoy rejects it without one)")
            case .success(let read?): bucket = read
            }
            let match = patch.match?.listener
            let chain: ConnectionRateLimit.Chain? = switch match?["filterChain"]?["filter"]?["name"]?.string {
            case "envoy.filters.network.http_connection_manager": .http
            case "envoy.filters.network.tcp_proxy": .tcp
            default: nil
            }
            let settings = ConnectionRateLimit.Settings(statPrefix: config["stat_prefix"]?.string ?? "local_rate_limit", maxTokens: bucket.maxTokens,
                                                        tokensPerFill: bucket.tokensPerFill, fillInterval: bucket.fillInterval,
                                                        enabled: config["runtime_enabled"]?["default_value"].map { $0 != .bool(false) } ?? true)
            return .connections(settings, context: context, chain: chain, port: match?["portNumber"]?.int, notices: notices)
        default:
            return .notRateLimit("applyTo \(patch.applyTo ?? "unset")")
        }
    }

    /// A `token_bucket` (nil: none given).
    static func tokenBucket(_ config: ConfigValue) -> Result<(maxTokens: Int, tokensPerFill: Int, fillInterval: Duration)?, Invalid> {
        guard let bucket = config["token_bucket"] else { return .success(nil) }
        guard let maxTokens = bucket["max_tokens"]?.int, maxTokens > 0 else {
            return .failure(Invalid(field: "token_bucket", message: "token_bucket.max_tokens must be above 0"))
        }
        guard let interval = bucket["fill_interval"]?.string.flatMap(ConfigDuration.init(parsing:))?.duration, interval >= .milliseconds(50) else {
            return .failure(Invalid(field: "token_bucket", message: "token_bucket.fill_interval must be a duration of at least 50ms"))
        }
        return .success((maxTokens, bucket["tokens_per_fill"]?.int ?? 1, interval))
    }

    struct Invalid: Error { var field: String, message: String }

    /// A `typed_config`'s message: Envoy's own, or wrapped in a udpa TypedStruct's `value`.
    /// Without `@type` Envoy rejects it, which is said; it is read as `type`.
    static func message(_ typed: ConfigValue, type: String, notices: inout [String]) -> ConfigValue {
        if typed["@type"] == nil {
            notices.append("typed_config has no '@type': Envoy rejects such a filter (Istio's push is refused); EastWest reads it as \(type)")
        }
        return typed["value"] ?? typed
    }

    /// A LocalRateLimit message (as Envoy's own or in a udpa TypedStruct's `value`); nil
    /// without a token_bucket (the filter then limits nothing by itself).
    static func settings(_ typed: ConfigValue, origin: String, notices: inout [String]) -> Result<LocalRateLimit.Settings?, Invalid> {
        let config = message(typed, type: "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", notices: &notices)
        let bucket: (maxTokens: Int, tokensPerFill: Int, fillInterval: Duration)
        switch tokenBucket(config) {
        case .failure(let invalid): return .failure(invalid)
        case .success(nil): return .success(nil)
        case .success(let read?): bucket = read
        }
        func fraction(_ key: String) -> Int? {
            guard let percent = config[key]?["default_value"] else { return nil }
            let numerator = percent["numerator"]?.int ?? 0
            let scale = ["HUNDRED": 10_000, "TEN_THOUSAND": 100, "MILLION": 1][percent["denominator"]?.string ?? "HUNDRED"] ?? 10_000
            return min(1_000_000, numerator * scale)
        }
        let enabled = fraction("filter_enabled"), enforced = fraction("filter_enforced")
        if enabled == nil {
            notices.append("Envoy does NOT run this rate limit: without filter_enabled the local_ratelimit filter is off for every request (and EastWest does what Envoy does). Add \(enableHint) and \(enforceHint) next to token_bucket")
        } else if enforced == nil {
            notices.append("Envoy counts this rate limit but never refuses a request: without filter_enforced nothing is enforced. Add \(enforceHint)")
        }
        var settings = LocalRateLimit.Settings(statPrefix: config["stat_prefix"]?.string ?? "http_local_rate_limiter", maxTokens: bucket.maxTokens,
                                               tokensPerFill: bucket.tokensPerFill, fillInterval: bucket.fillInterval,
                                               enabledPerMillion: enabled ?? 0, enforcedPerMillion: enforced ?? 0, origin: origin)
        if let code = config["status"]?["code"]?.int { settings.status = code < 400 ? 429 : code }
        if case .list(let headers)? = config["response_headers_to_add"] {
            settings.responseHeaders = headers.compactMap { entry in
                guard let key = entry["header"]?["key"]?.string, let value = entry["header"]?["value"]?.string else { return nil }
                return (key, value)
            }
        }
        if let version = config["enable_x_ratelimit_headers"]?.string {
            settings.xRateLimitHeaders = version == "DRAFT_VERSION_03"
        }
        settings.perDownstreamConnection = config["local_rate_limit_per_downstream_connection"] == .bool(true)
        if case .bool(let always)? = config["always_consume_default_token_bucket"] { settings.alwaysConsumeDefaultTokenBucket = always }
        settings.stage = config["stage"]?.int ?? 0
        if let limits = config["rate_limits"] {
            switch rateLimits(limits, notices: &notices) {
            case .failure(let invalid): return .failure(invalid)
            case .success(let read): settings.rateLimits = read
            }
        }
        if let listed = config["descriptors"] {
            switch descriptors(listed, filterInterval: bucket.fillInterval, notices: &notices) {
            case .failure(let invalid): return .failure(invalid)
            case .success(let read): settings.descriptors = read
            }
        }
        switch config["vh_rate_limits"]?.string {
        case nil, "OVERRIDE": settings.virtualHostRateLimits = .override
        case "INCLUDE": settings.virtualHostRateLimits = .include
        case "IGNORE": settings.virtualHostRateLimits = .ignore
        case let other?: return .failure(Invalid(field: "vh_rate_limits", message: "vh_rate_limits is OVERRIDE, INCLUDE or IGNORE, not \(other)"))
        }
        for key in ["local_cluster_rate_limit", "request_headers_to_add_when_not_enforced", "rate_limited_as_resource_exhausted"] where config[key] != nil {
            notices.append("\(key) is not carried out by EastWest: the filter runs without it")
        }
        return .success(settings)
    }

    /// Where an invalid route-level `rate_limits` is said to be.
    static let routeRateLimitsField = "route.rate_limits"

    /// `descriptors`: each with its entries and its own token bucket, whose fill interval must be
    /// a multiple of the filter's, none twice (Envoy rejects both).
    static func descriptors(_ listed: ConfigValue, filterInterval: Duration, notices: inout [String]) -> Result<[LocalRateLimit.Descriptor], Invalid> {
        guard case .list(let items) = listed else { return .failure(Invalid(field: "descriptors", message: "descriptors must be a list")) }
        var read: [LocalRateLimit.Descriptor] = []
        for (i, item) in items.enumerated() {
            guard case .list(let entries)? = item["entries"], !entries.isEmpty else {
                return .failure(Invalid(field: "descriptors", message: "descriptors[\(i)] needs at least one entry (key and value)"))
            }
            var descriptor: [RateLimitDescriptor.Entry] = []
            for entry in entries {
                guard let key = entry["key"]?.string, !key.isEmpty else {
                    return .failure(Invalid(field: "descriptors", message: "descriptors[\(i)]: every entry needs a key"))
                }
                let value = entry["value"]?.string ?? ""
                if value.isEmpty {
                    notices.append("descriptors[\(i)] entry '\(key)' has no value: Envoy 1.34+ makes a bucket per value seen (a dynamic descriptor), which EastWest does not carry out; it matches only an empty value")
                }
                descriptor.append(.init(key: key, value: value))
            }
            let bucket: (maxTokens: Int, tokensPerFill: Int, fillInterval: Duration)
            switch tokenBucket(item) {
            case .failure(let invalid): return .failure(Invalid(field: "descriptors", message: "descriptors[\(i)].\(invalid.message)"))
            case .success(nil): return .failure(Invalid(field: "descriptors", message: "descriptors[\(i)] needs a token_bucket"))
            case .success(let found?): bucket = found
            }
            let multiple = bucket.fillInterval / filterInterval
            guard multiple >= 1, filterInterval * Int(multiple.rounded()) == bucket.fillInterval else {
                return .failure(Invalid(field: "descriptors", message: "descriptors[\(i)]: local rate descriptor limit is not a multiple of token bucket fill timer (\(bucket.fillInterval) is not a multiple of the filter's \(filterInterval)); Envoy rejects it"))
            }
            let made = RateLimitDescriptor(descriptor)
            guard !read.contains(where: { $0.descriptor == made }) else {
                return .failure(Invalid(field: "descriptors", message: "duplicate descriptor in the local rate descriptor: \(made)"))
            }
            read.append(LocalRateLimit.Descriptor(made, maxTokens: bucket.maxTokens, tokensPerFill: bucket.tokensPerFill, fillInterval: bucket.fillInterval))
        }
        return .success(read)
    }

    /// A `rate_limits` list (`config.route.v3.RateLimit`): each entry's actions. An entry with an
    /// action EastWest does not carry out is dropped with a notice (it would never make its
    /// descriptor here); a malformed action is an error, as Envoy rejects it.
    static func rateLimits(_ listed: ConfigValue, notices: inout [String]) -> Result<[RateLimitPolicyEntry], Invalid> {
        guard case .list(let items) = listed else { return .failure(Invalid(field: "rate_limits", message: "rate_limits must be a list")) }
        var read: [RateLimitPolicyEntry] = []
        entries: for (i, item) in items.enumerated() {
            guard case .list(let actions)? = item["actions"], !actions.isEmpty else {
                return .failure(Invalid(field: "rate_limits", message: "rate_limits[\(i)] needs at least one action"))
            }
            var entry = RateLimitPolicyEntry(actions: [], stage: item["stage"]?.int ?? 0, disabled: !(item["disable_key"]?.string ?? "").isEmpty)
            if item["limit"] != nil { notices.append("rate_limits[\(i)].limit overrides the global rate limit service's limit; a local rate limit ignores it") }
            for (j, action) in actions.enumerated() {
                func fail(_ message: String) -> Result<[RateLimitPolicyEntry], Invalid> {
                    .failure(Invalid(field: "rate_limits", message: "rate_limits[\(i)].actions[\(j)]: \(message)"))
                }
                guard case .object(let object) = action, object.count == 1, let (kind, body) = object.first else {
                    return fail("an action is an object with exactly one kind (request_headers, remote_address, generic_key, …)")
                }
                switch kind {
                case "source_cluster": entry.actions.append(.sourceCluster)
                case "destination_cluster": entry.actions.append(.destinationCluster)
                case "remote_address": entry.actions.append(.remoteAddress)
                case "request_headers":
                    guard let header = body["header_name"]?.string, !header.isEmpty, let key = body["descriptor_key"]?.string, !key.isEmpty else {
                        return fail("request_headers needs header_name and descriptor_key")
                    }
                    entry.actions.append(.requestHeaders(header: header, key: key, skipIfAbsent: body["skip_if_absent"] == .bool(true)))
                case "query_parameters":
                    guard let name = body["query_parameter_name"]?.string, !name.isEmpty, let key = body["descriptor_key"]?.string, !key.isEmpty else {
                        return fail("query_parameters needs query_parameter_name and descriptor_key")
                    }
                    entry.actions.append(.queryParameters(parameter: name, key: key, skipIfAbsent: body["skip_if_absent"] == .bool(true)))
                case "generic_key":
                    guard let value = body["descriptor_value"]?.string, !value.isEmpty else { return fail("generic_key needs a descriptor_value") }
                    entry.actions.append(.genericKey(key: body["descriptor_key"]?.string.flatMap { $0.isEmpty ? nil : $0 } ?? "generic_key", value: value))
                case "masked_remote_address":
                    let v4 = body["v4_prefix_mask_len"]?.int ?? 32, v6 = body["v6_prefix_mask_len"]?.int ?? 128
                    guard (0...32).contains(v4), (0...128).contains(v6) else { return fail("masked_remote_address prefix lengths are 0-32 (v4) and 0-128 (v6)") }
                    entry.actions.append(.maskedRemoteAddress(v4PrefixLength: v4, v6PrefixLength: v6))
                case "header_value_match":
                    guard let value = body["descriptor_value"]?.string, !value.isEmpty else { return fail("header_value_match needs a descriptor_value") }
                    guard case .list(let listed)? = body["headers"], !listed.isEmpty else { return fail("header_value_match needs at least one header matcher") }
                    var matchers: [HeaderMatcher] = []
                    for matcher in listed {
                        switch headerMatcher(matcher) {
                        case .failure(let problem): return fail(problem.message)
                        case .success(let made?): matchers.append(made)
                        case .success(nil):
                            notices.append("rate_limits[\(i)] matches a header by range_match, which EastWest does not carry out: that entry never makes a descriptor here")
                            continue entries
                        }
                    }
                    let expect = body["expect_match"].map { $0 != .bool(false) } ?? true
                    entry.actions.append(.headerValueMatch(key: body["descriptor_key"]?.string.flatMap { $0.isEmpty ? nil : $0 } ?? "header_match", value: value,
                                                           expectMatch: expect, headers: matchers))
                case "metadata", "dynamic_metadata", "extension", "query_parameter_value_match":
                    notices.append("rate_limits[\(i)] uses the \(kind) action, which EastWest does not carry out: that entry never makes a descriptor here")
                    continue entries
                default:
                    return fail("unknown rate limit action '\(kind)'")
                }
            }
            read.append(entry)
        }
        return .success(read)
    }

    /// Envoy's `HeaderMatcher`: the legacy `exact_match` … `contains_match`, `safe_regex_match`,
    /// `present_match`, or `string_match`; `invert_match`, `treat_missing_header_as_empty`.
    /// nil: a `range_match`, which is not carried out.
    static func headerMatcher(_ value: ConfigValue) -> Result<HeaderMatcher?, Invalid> {
        guard let name = value["name"]?.string, !name.isEmpty else { return .failure(Invalid(field: "rate_limits", message: "a header matcher needs a name")) }
        func regex(_ spec: ConfigValue?, ignoreCase: Bool = false) -> Result<StringMatcher, Invalid> {
            guard let pattern = spec?["regex"]?.string else { return .failure(Invalid(field: "rate_limits", message: "safe_regex needs a regex")) }
            if let problem = RE2Syntax.problem(in: pattern) { return .failure(Invalid(field: "rate_limits", message: problem)) }
            guard let compiled = try? FullMatchRegex(pattern, caseInsensitive: ignoreCase) else {
                return .failure(Invalid(field: "rate_limits", message: "'\(pattern)' is not a regular expression"))
            }
            return .success(.regex(compiled))
        }
        var matcher = HeaderMatcher(name: name, match: nil, invert: value["invert_match"] == .bool(true),
                                    treatMissingAsEmpty: value["treat_missing_header_as_empty"] == .bool(true))
        if let exact = value["exact_match"]?.string { matcher.match = .exact(exact, ignoreCase: false) }
        else if let prefix = value["prefix_match"]?.string { matcher.match = .prefix(prefix, ignoreCase: false) }
        else if let suffix = value["suffix_match"]?.string { matcher.match = .suffix(suffix, ignoreCase: false) }
        else if let part = value["contains_match"]?.string { matcher.match = .contains(part, ignoreCase: false) }
        else if let spec = value["safe_regex_match"] {
            switch regex(spec) { case .failure(let problem): return .failure(problem); case .success(let made): matcher.match = made }
        } else if case .bool(let present)? = value["present_match"] {
            matcher.present = present
        } else if let spec = value["string_match"] {
            let ignoreCase = spec["ignore_case"] == .bool(true)
            if let exact = spec["exact"]?.string { matcher.match = .exact(exact, ignoreCase: ignoreCase) }
            else if let prefix = spec["prefix"]?.string { matcher.match = .prefix(prefix, ignoreCase: ignoreCase) }
            else if let suffix = spec["suffix"]?.string { matcher.match = .suffix(suffix, ignoreCase: ignoreCase) }
            else if let part = spec["contains"]?.string { matcher.match = .contains(part, ignoreCase: ignoreCase) }
            else if let regexSpec = spec["safe_regex"] {
                switch regex(regexSpec, ignoreCase: ignoreCase) { case .failure(let problem): return .failure(problem); case .success(let made): matcher.match = made }
            } else {
                return .failure(Invalid(field: "rate_limits", message: "string_match of header '\(name)' needs exact, prefix, suffix, contains or safe_regex"))
            }
        } else if value["range_match"] != nil {
            return .success(nil)
        }
        return .success(matcher)
    }
}
