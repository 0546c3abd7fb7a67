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
    /// The local rate limit the filters set for a gateway with these labels in this namespace:
    /// the first that applies (Istio applies patches in priority order, then by age; files are
    /// read in order).
    package static func localRateLimit(_ filters: [EnvoyFilter], labels: [String: String], namespace: String) -> LocalRateLimit.Settings? {
        for filter in filters.sorted(by: { ($0.priority ?? 0) < ($1.priority ?? 0) }) where filter.applies(toLabels: labels, namespace: namespace) {
            for patch in filter.configPatches ?? [] {
                if case .rateLimit(let settings, _) = LocalRateLimitPatch.read(patch, origin: "EnvoyFilter \(filter.namespace)/\(filter.name)") { return settings }
            }
        }
        return nil
    }

    /// Rate limits this gateway does not run because the filter's scope leaves it out, said aloud.
    package static func gatewayWarnings(_ filters: [EnvoyFilter], labels: [String: String], namespace: String) -> [String] {
        filters.compactMap { filter in
            let limits = (filter.configPatches ?? []).contains { if case .rateLimit = LocalRateLimitPatch.read($0, origin: "") { true } else { false } }
            guard limits, !filter.applies(toLabels: labels, namespace: namespace) else { return nil }
            return "warning: EnvoyFilter \(filter.namespace)/\(filter.name) rate-limits the workloads \(filter.workloadSelector?.labels.map { "labelled \($0)" } ?? "of namespace \(filter.namespace)"), "
                + "not this gateway (namespace \(namespace)): as in Istio it does not apply here. Put it in \(namespace) or istio-system with a workloadSelector matching the gateway's labels"
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
                warnings.append(map.error(.notImplemented, at: path, "EnvoyFilter patch not carried out by EastWest (\(what)); it reads HTTP_FILTER patches that insert envoy.filters.http.local_ratelimit").asWarning)
            case .invalid(let field, let message):
                errors.append(map.error(.invalidValue, at: path.key("patch").key("value").key("typed_config").key(field), message))
            case .rateLimit(_, let notices):
                for notice in notices { warnings.append(map.error(.istioDifference, at: path.key("patch").key("value"), notice).asWarning) }
            }
        }
        return (errors, warnings)
    }
}

/// Reads one EnvoyFilter patch as a local rate limit.
package enum LocalRateLimitPatch {
    package enum Reading {
        case notRateLimit(String)
        case invalid(field: String, message: String)
        /// The settings, and what Envoy would do that a user does not expect.
        case rateLimit(LocalRateLimit.Settings, notices: [String])
    }

    static let filterName = "envoy.filters.http.local_ratelimit"
    static let enableHint = "filter_enabled: {runtime_key: local_rate_limit_enabled, default_value: {numerator: 100, denominator: HUNDRED}}"
    static let enforceHint = "filter_enforced: {runtime_key: local_rate_limit_enforced, default_value: {numerator: 100, denominator: HUNDRED}}"

    package static func read(_ patch: EnvoyFilter.ConfigPatch, origin: String) -> Reading {
        guard patch.applyTo == "HTTP_FILTER" else { return .notRateLimit("applyTo \(patch.applyTo ?? "unset")") }
        let operation = patch.patch?.operation ?? ""
        guard ["INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "ADD"].contains(operation) else { return .notRateLimit("operation \(operation)") }
        if let context = patch.match?.context, !["ANY", "GATEWAY"].contains(context) { return .notRateLimit("context \(context): not a gateway") }
        guard let value = patch.patch?.value, value["name"]?.string == filterName else {
            return .notRateLimit("filter \(patch.patch?.value?["name"]?.string ?? "unnamed")")
        }
        // `typed_config` as Envoy's own message, or wrapped in a udpa TypedStruct's `value`.
        guard let typed = value["typed_config"] else { return .invalid(field: "token_bucket", message: "a local rate limit needs typed_config with a token_bucket") }
        let config = typed["value"] ?? typed
        var notices: [String] = []
        if typed["@type"] == nil {
            notices.append("typed_config has no '@type': Envoy rejects such a filter (Istio's push is refused); EastWest reads it as envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit")
        }
        guard let bucket = config["token_bucket"] else { return .invalid(field: "token_bucket", message: "a local rate limit needs a token_bucket") }
        guard let maxTokens = bucket["max_tokens"]?.int, maxTokens > 0 else {
            return .invalid(field: "token_bucket", message: "token_bucket.max_tokens must be above 0")
        }
        guard let interval = bucket["fill_interval"]?.string.flatMap(ConfigDuration.init(parsing:))?.duration, interval >= .milliseconds(50) else {
            return .invalid(field: "token_bucket", message: "token_bucket.fill_interval must be a duration of at least 50ms")
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
        var settings = LocalRateLimit.Settings(statPrefix: config["stat_prefix"]?.string ?? "http_local_rate_limiter", maxTokens: maxTokens,
                                               tokensPerFill: bucket["tokens_per_fill"]?.int ?? 1, fillInterval: interval,
                                               enabledPerMillion: enabled ?? 0, enforcedPerMillion: enforced ?? 0, origin: origin)
        if let code = config["status"]?["code"]?.int { settings.status = code < 400 ? 429 : code }
        if case .list(let headers)? = config["response_headers_to_add"] {
            settings.responseHeaders = headers.compactMap { entry in
                guard let key = entry["header"]?["key"]?.string, let value = entry["header"]?["value"]?.string else { return nil }
                return (key, value)
            }
        }
        for key in ["descriptors", "enable_x_ratelimit_headers", "local_rate_limit_per_downstream_connection"] where config[key] != nil {
            notices.append("\(key) is not carried out by EastWest yet: one bucket for the whole gateway, without x-ratelimit-* headers")
        }
        return .rateLimit(settings, notices: notices)
    }
}
