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
                warnings.append(map.error(.notImplemented, at: path, "EnvoyFilter patch not carried out by EastWest (\(what)); it reads HTTP_FILTER patches that insert envoy.filters.http.local_ratelimit, HTTP_ROUTE patches that configure it per route, and NETWORK_FILTER patches that insert envoy.filters.network.local_ratelimit").asWarning)
            case .invalid(let field, let message):
                let value = path.key("patch").key("value")
                errors.append(map.error(.invalidValue, at: patch.applyTo == "HTTP_ROUTE" ? value.key("typed_per_filter_config") : value.key("typed_config").key(field), message))
            case .filter(_, _, let notices), .route(_, _, _, _, let notices), .connections(_, _, _, _, let notices):
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

    package enum Reading {
        case notRateLimit(String)
        case invalid(field: String, message: String)
        /// The filter inserted, with its filter-level settings (nil: no token_bucket).
        case filter(LocalRateLimit.Settings?, context: Context, notices: [String])
        /// A route's own settings: the inbound port its virtual host names (`inbound|http|9080`)
        /// and the route's name, each nil for any.
        case route(LocalRateLimit.Settings, context: Context, port: Int?, routeName: String?, notices: [String])
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
        case "HTTP_ROUTE":
            guard operation == "MERGE" else { return .notRateLimit("HTTP_ROUTE operation \(operation)") }
            guard let typed = patch.patch?.value?["typed_per_filter_config"]?[filterName] else {
                return .notRateLimit("an HTTP_ROUTE patch without typed_per_filter_config for \(filterName)")
            }
            let vhost = patch.match?.routeConfiguration?["vhost"]
            let port = vhost?["name"]?.string.flatMap { name in name.split(whereSeparator: { $0 == "|" || $0 == ":" }).last.flatMap { Int($0) } }
            let routeName = vhost?["route"]?["name"]?.string
            var notices: [String] = []
            switch settings(typed, origin: origin, notices: &notices) {
            case .failure(let invalid): return .invalid(field: invalid.field, message: invalid.message)
            case .success(nil):
                // Envoy: "local rate limit token bucket must be set for per filter configs".
                return .invalid(field: "token_bucket", message: "a route's local rate limit (typed_per_filter_config) needs a token_bucket; Envoy rejects it without one")
            case .success(let settings?): return .route(settings, context: context, port: port, routeName: routeName, notices: notices)
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
            if context == .inbound { return .notRateLimit("a network local rate limit at SIDECAR_INBOUND: the workload's own connections, which the gateway does not hold") }
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
        for key in ["descriptors", "local_rate_limit_per_downstream_connection"] where config[key] != nil {
            notices.append("\(key) is not carried out by EastWest yet: one bucket per scope")
        }
        return .success(settings)
    }
}
