import Yams

/// An Istio Telemetry (telemetry.istio.io v1, v1alpha1): what the standard metrics carry.
/// EastWest carries out `metrics[].overrides[].tagOverrides` on its HTTP metrics — a label
/// added or replaced from the request (`request.headers['x']`, a literal, the method, path or
/// host) or removed — for the workloads the Telemetry selects (as `PolicyScope` reads
/// selectors). Everything else valid loads with a warning naming it.
package struct Telemetry: Codable, Sendable, Equatable {
    package var selector: AuthorizationPolicy.WorkloadSelector?
    package var metrics: [Metrics]?
    /// Envoy's access log for the selected workloads: off (`disabled`), or only the requests a
    /// CEL `filter.expression` holds for (`AccessLogPolicy`).
    package var accessLogging: [AccessLogging]?
    /// `metadata.namespace`, `metadata.name`; set by the loader.
    package var namespace: String = "default"
    package var name: String = ""

    enum CodingKeys: String, CodingKey { case selector, metrics, accessLogging }

    package struct AccessLogging: Codable, Sendable, Equatable {
        package var providers: [Provider]?
        package var disabled: Bool?
        package var filter: Filter?
        package var match: Match?

        package struct Filter: Codable, Sendable, Equatable {
            package var expression: String?
        }
    }

    package struct Metrics: Codable, Sendable, Equatable {
        package var providers: [Provider]?
        package var overrides: [Override]?
    }

    package struct Provider: Codable, Sendable, Equatable {
        package var name: String
    }

    package struct Override: Codable, Sendable, Equatable {
        package var match: Match?
        package var disabled: Bool?
        package var tagOverrides: [String: TagOverride]?
    }

    package struct Match: Codable, Sendable, Equatable {
        package var metric: String?
        package var customMetric: String?
        package var mode: String?

        /// Istio's `WorkloadMode`.
        static let modes = ["CLIENT", "SERVER", "CLIENT_AND_SERVER"]

        /// The reporters `mode` covers at a gateway: `CLIENT` is the entry gateway's
        /// `reporter="source"`, `SERVER` the delivering gateway's `destination`; unset, both.
        var reporters: Set<String> {
            switch mode {
            case "CLIENT": ["source"]
            case "SERVER": ["destination"]
            default: ["source", "destination"]
            }
        }
    }

    package struct TagOverride: Codable, Sendable, Equatable {
        package var operation: String?
        package var value: String?
    }
}

extension Telemetry: NamedIstioResource {}

extension Telemetry {
    /// `telemetries` in the order Istio layers them: the mesh's (root namespace) first, then
    /// namespaces', then those with a workload selector, each group in file order — applied in
    /// that order, the most specific wins.
    static func layered(_ telemetries: [Telemetry], rootNamespace: String = "istio-system") -> [Telemetry] {
        func rank(_ telemetry: Telemetry) -> Int {
            if telemetry.selector?.matchLabels?.isEmpty == false { return 2 }
            return telemetry.namespace == rootNamespace ? 0 : 1
        }
        return telemetries.enumerated().sorted { (rank($0.element), $0.offset) < (rank($1.element), $1.offset) }.map(\.element)
    }
}

extension RouteConfiguration {
    /// Of Telemetry-scoped `items` (namespace and selector each), those that select `service`'s
    /// workloads through this gateway, in their order.
    func telemetryScoped<Item>(_ items: [Item], for service: ServiceKey, endpoints: MeshEndpoints,
                               scope: (Item) -> (namespace: String, selector: [String: String]?)) -> [Item] {
        guard !items.isEmpty else { return [] }
        let (namespace, labels) = Self.workloads(of: service, endpoints: endpoints)
        return items.filter { item in
            let (itemNamespace, selector) = scope(item)
            return PolicyScope.match(namespace: itemNamespace, selector: selector, gatewayLabels: gatewayLabels,
                                     gatewayNamespace: gatewayNamespace, serviceNamespace: namespace, serviceLabels: labels) != nil
        }
    }
}

extension IstioPolicyLoader {
    static let telemetryAPIVersions: Set<String> = ["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"]

    /// Valid Telemetry fields (istio/api telemetry.proto) EastWest does not carry out yet.
    static let telemetryNotImplemented: Set<String> = ["tracing", "targetRef", "targetRefs", "reportingInterval"]

    /// A `match.mode` Istio's enum has.
    static func checkMode(_ match: Telemetry.Match?, at place: FieldPath, map: SourceMap) -> [ConfigError] {
        guard let mode = match?.mode, !Telemetry.Match.modes.contains(mode) else { return [] }
        return [map.error(.invalidValue, at: place.key("match").key("mode"), "'\(mode)' is not CLIENT, SERVER or CLIENT_AND_SERVER")]
    }

    static func readTelemetry(_ spec: Node, _ map: SourceMap, _ loaded: inout Loaded) -> [ConfigError] {
        readNamed(Telemetry.self, kind: "Telemetry", notImplemented: telemetryNotImplemented, spec: spec, map: map, loaded: &loaded,
                  check: { check($0, map: map) }) { telemetry, loaded in loaded.telemetries.append(telemetry) }
    }

    /// Istio's Telemetry validation (the proto's enums), the design document's Prometheus
    /// names read as the enum they mean, and what EastWest does not do.
    static func check(_ telemetry: Telemetry, map: SourceMap) -> (errors: [ConfigError], warnings: [ConfigError]) {
        var errors: [ConfigError] = []
        var warnings: [ConfigError] = []
        let spec = FieldPath().key("spec")
        for (i, logging) in (telemetry.accessLogging ?? []).enumerated() {
            let at = spec.key("accessLogging").index(i)
            if i > 0 {
                warnings.append(map.error(.notImplemented, at: at, "EastWest applies the first accessLogging entry only; this one is ignored").asWarning)
            }
            for (p, provider) in (logging.providers ?? []).enumerated() where provider.name != "envoy" {
                warnings.append(map.error(.notImplemented, at: at.key("providers").index(p).key("name"),
                                          "EastWest writes Envoy's access log to its output only ('\(provider.name)' is not carried out; the rule applies to that log)").asWarning)
            }
            errors += checkMode(logging.match, at: at, map: map)
            if let expression = logging.filter?.expression {
                do {
                    _ = try AccessLogFilter(parsing: expression)
                } catch where error.unsupported {
                    warnings.append(map.error(.notImplemented, at: at.key("filter").key("expression"), "\(error); every request is logged").asWarning)
                } catch {
                    errors.append(map.error(.invalidValue, at: at.key("filter").key("expression"), error.description))
                }
            }
        }
        for (i, metrics) in (telemetry.metrics ?? []).enumerated() {
            let at = spec.key("metrics").index(i)
            for (p, provider) in (metrics.providers ?? []).enumerated() where provider.name != "prometheus" {
                warnings.append(map.error(.notImplemented, at: at.key("providers").index(p).key("name"),
                                          "EastWest serves Prometheus metrics only ('\(provider.name)' is not carried out)").asWarning)
            }
            for (o, override) in (metrics.overrides ?? []).enumerated() {
                let place = at.key("overrides").index(o)
                errors += checkMode(override.match, at: place, map: map)
                if override.match?.customMetric != nil {
                    warnings.append(map.error(.notImplemented, at: place.key("match").key("customMetric"),
                                              "valid Istio field, not carried out by EastWest yet (custom metrics); ignored").asWarning)
                }
                if let metric = override.match?.metric {
                    switch MetricTagOverrides.Metric.read(metric) {
                    case .none:
                        errors.append(map.error(.invalidValue, at: place.key("match").key("metric"),
                                                "'\(metric)' is not an Istio metric (\(MetricTagOverrides.Metric.istioNames.joined(separator: ", ")))"))
                    case .some((let read, let exact)):
                        if !exact {
                            warnings.append(map.error(.istioDifference, at: place.key("match").key("metric"),
                                "Istio rejects '\(metric)' (its enum names the metric: \(read.istioName)); read as \(read.istioName)").asWarning)
                        }
                        if read.isTCP {
                            warnings.append(map.error(.notImplemented, at: place.key("match").key("metric"),
                                                      "overrides of the TCP and gRPC message metrics are not carried out by EastWest yet; ignored").asWarning)
                        }
                    }
                }
                for (name, tag) in (override.tagOverrides ?? [:]).sorted(by: { $0.key < $1.key }) {
                    let tagAt = place.key("tagOverrides").key(name)
                    let operation = tag.operation ?? "UPSERT"
                    guard operation == "UPSERT" || operation == "REMOVE" else {
                        errors.append(map.error(.invalidValue, at: tagAt.key("operation"), "'\(operation)' is not UPSERT or REMOVE"))
                        continue
                    }
                    guard operation == "UPSERT" else { continue }
                    guard let value = tag.value, !value.isEmpty else {
                        errors.append(map.error(.missingField, at: tagAt.key("value"), "an UPSERT tag override needs a value (a CEL expression)"))
                        continue
                    }
                    switch MetricTagOverrides.Expression.read(value) {
                    case .cel: break
                    case .envoyFormat(let expression):
                        warnings.append(map.error(.istioDifference, at: tagAt.key("value"),
                            "not CEL: Istio's tag values are CEL expressions and it cannot evaluate '\(value)'; read as \(expression.cel)").asWarning)
                    case .unsupported:
                        warnings.append(map.error(.notImplemented, at: tagAt.key("value"),
                            "EastWest evaluates request.headers['name'], request.method, request.path, request.host and string literals; '\(value)' is reported as 'unknown' (Istio's value when an expression fails)").asWarning)
                    }
                }
            }
        }
        return (errors, warnings)
    }
}
