import NIOHTTP1

/// Telemetry `tagOverrides` on the standard HTTP metrics: labels added or replaced with a value
/// from the request, or removed, per metric and reporter (`CLIENT` is the entry gateway's
/// `reporter="source"`, `SERVER` the delivering gateway's `destination`). Compiled once from
/// the Telemetry resources; each request evaluates the few that apply to its route.
package enum MetricTagOverrides {
    /// Istio's `MetricSelector.IstioMetric`.
    package enum Metric: String, CaseIterable, Sendable {
        case all = "ALL_METRICS", requestCount = "REQUEST_COUNT", requestDuration = "REQUEST_DURATION"
        case requestSize = "REQUEST_SIZE", responseSize = "RESPONSE_SIZE"
        case tcpOpened = "TCP_OPENED_CONNECTIONS", tcpClosed = "TCP_CLOSED_CONNECTIONS"
        case tcpSent = "TCP_SENT_BYTES", tcpReceived = "TCP_RECEIVED_BYTES"
        case grpcRequestMessages = "GRPC_REQUEST_MESSAGES", grpcResponseMessages = "GRPC_RESPONSE_MESSAGES"

        var istioName: String { rawValue }
        static var istioNames: [String] { allCases.map(\.rawValue) }
        var isTCP: Bool { ![.all, .requestCount, .requestDuration, .requestSize, .responseSize].contains(self) }

        /// The enum, or (not exact) the Prometheus name of the metric without or with `istio_`,
        /// as the design document writes it (`requests_total`).
        static func read(_ text: String) -> (Metric, exact: Bool)? {
            if let metric = Metric(rawValue: text) { return (metric, true) }
            let plain = text.hasPrefix("istio_") ? String(text.dropFirst("istio_".count)) : text
            return byPrometheusName[plain].map { ($0, false) }
        }

        private static let byPrometheusName: [String: Metric] = [
            "requests_total": .requestCount, "request_duration_milliseconds": .requestDuration, "request_bytes": .requestSize,
            "response_bytes": .responseSize, "tcp_connections_opened_total": .tcpOpened, "tcp_connections_closed_total": .tcpClosed,
            "tcp_sent_bytes_total": .tcpSent, "tcp_received_bytes_total": .tcpReceived,
            "request_messages_total": .grpcRequestMessages, "response_messages_total": .grpcResponseMessages,
        ]

        var metrics: Metrics {
            switch self {
            case .all: .http
            case .requestCount: .requests
            case .requestDuration: .duration
            case .requestSize: .requestBytes
            case .responseSize: .responseBytes
            default: []
            }
        }
    }

    /// Which of the four HTTP metrics a tag is for.
    package struct Metrics: OptionSet, Hashable, Sendable {
        package var rawValue: UInt8
        package init(rawValue: UInt8) { self.rawValue = rawValue }
        static let requests = Metrics(rawValue: 1), duration = Metrics(rawValue: 2)
        static let requestBytes = Metrics(rawValue: 4), responseBytes = Metrics(rawValue: 8)
        static let http: Metrics = [.requests, .duration, .requestBytes, .responseBytes]
    }

    /// A tag value: the CEL EastWest evaluates.
    package enum Expression: Hashable, Sendable {
        case header(String)
        case literal(String)
        case method, path, host
        /// Not evaluated here: `unknown`, as Istio reports an expression that fails.
        case unknown

        package enum Reading: Equatable { case cel(Expression), envoyFormat(Expression), unsupported }

        /// `request.headers['x']` (or `"x"`), `request.method|path|host`, a quoted literal; the
        /// Envoy-format spellings `%{REQUEST_HEADERS['x']}` and `%REQ(x)%` are read as the
        /// header they mean, flagged.
        static func read(_ text: String) -> Reading {
            let value = text.trimmingASCIISpaces()
            func quoted(_ inner: Substring) -> String? {
                guard inner.count >= 2, let first = inner.first, first == "'" || first == "\"", inner.last == first else { return nil }
                return String(inner.dropFirst().dropLast())
            }
            func between(_ prefix: String, _ suffix: String) -> Substring? {
                value.hasPrefix(prefix) && value.hasSuffix(suffix) && value.count > prefix.count + suffix.count
                    ? value.dropFirst(prefix.count).dropLast(suffix.count) : nil
            }
            switch value {
            case "request.method": return .cel(.method)
            case "request.path", "request.url_path": return .cel(.path)
            case "request.host": return .cel(.host)
            default: break
            }
            if let inner = between("request.headers[", "]"), let name = quoted(inner) { return .cel(.header(name.lowercased())) }
            if let literal = quoted(value) { return .cel(.literal(literal)) }
            if let inner = between("%{REQUEST_HEADERS[", "]}"), let name = quoted(inner) { return .envoyFormat(.header(name.lowercased())) }
            if let inner = between("%REQ(", ")%"), !inner.isEmpty { return .envoyFormat(.header(inner.lowercased())) }
            return .unsupported
        }

        /// As CEL, for messages.
        var cel: String {
            switch self {
            case .header(let name): "request.headers['\(name)']"
            case .literal(let text): "'\(text)'"
            case .method: "request.method"
            case .path: "request.path"
            case .host: "request.host"
            case .unknown: "unknown"
            }
        }

        /// Istio reports `unknown` for a value it cannot find.
        func evaluate(_ head: HTTPRequestHead) -> String {
            switch self {
            case .header(let name): head.headers[name].first ?? "unknown"
            case .literal(let text): text
            case .method: head.method.rawValue
            case .path: head.uri.pathWithoutQuery
            case .host: head.headers.first(name: "host") ?? "unknown"
            case .unknown: "unknown"
            }
        }
    }

    /// One override, compiled: nil `value` removes the label.
    package struct Tag: Hashable, Sendable {
        var name: String
        var metrics: Metrics
        /// `source` (CLIENT), `destination` (SERVER), or both.
        var reporters: Set<String>
        var value: Expression?
    }

    /// `disabled` on an override: its metrics not reported (or, `false`, reported again) for
    /// its reporters.
    package struct Toggle: Hashable, Sendable {
        var metrics: Metrics
        var reporters: Set<String>
        var disabled: Bool
    }

    /// A tag as one request carries it to its metrics.
    package struct Applied: Hashable, Sendable {
        var name: String
        var metrics: Metrics
        /// Nil: the label is removed.
        var value: String?
    }

    /// One Telemetry's overrides with what decides where they apply, compiled when the
    /// configuration loads (a route asks for them once per connection).
    package struct Scoped: Sendable, Equatable {
        var namespace: String
        var selector: [String: String]?
        var tags: [Tag]
        var toggles: [Toggle] = []
    }

    /// `telemetries` compiled, the mesh's (root namespace) first, then namespaces', then those
    /// with a selector, each group in file order: applied in that order, the most specific wins
    /// a label, as Istio layers them.
    static func compile(_ telemetries: [Telemetry], rootNamespace: String = "istio-system") -> [Scoped] {
        Telemetry.layered(telemetries, rootNamespace: rootNamespace)
            .map { Scoped(namespace: $0.namespace, selector: $0.selector?.matchLabels, tags: tags(of: $0), toggles: toggles(of: $0)) }
            .filter { !$0.tags.isEmpty || !$0.toggles.isEmpty }
    }

    /// The Prometheus overrides of one Telemetry that name HTTP metrics, in order, with the
    /// metrics and reporters each selects.
    private static func overrides(of telemetry: Telemetry) -> [(override: Telemetry.Override, metrics: Metrics, reporters: Set<String>)] {
        var result: [(Telemetry.Override, Metrics, Set<String>)] = []
        for metrics in telemetry.metrics ?? [] where (metrics.providers ?? []).isEmpty || metrics.providers!.contains(where: { $0.name == "prometheus" }) {
            for override in metrics.overrides ?? [] {
                let selected = override.match?.metric.flatMap { Metric.read($0)?.0 } ?? .all
                guard override.match?.customMetric == nil, !selected.metrics.isEmpty else { continue }
                result.append((override, selected.metrics, override.match?.reporters ?? Telemetry.Match().reporters))
            }
        }
        return result
    }

    static func toggles(of telemetry: Telemetry) -> [Toggle] {
        overrides(of: telemetry).compactMap { entry in
            entry.override.disabled.map { Toggle(metrics: entry.metrics, reporters: entry.reporters, disabled: $0) }
        }
    }

    /// The metrics `toggles` (in order, the last word wins) leave unreported for `reporter`.
    static func disabled(_ toggles: [Toggle], reporter: String) -> Metrics {
        var off: Metrics = []
        for toggle in toggles where toggle.reporters.contains(reporter) {
            if toggle.disabled { off.formUnion(toggle.metrics) } else { off.subtract(toggle.metrics) }
        }
        return off
    }

    /// The overrides of one Telemetry, in order.
    static func tags(of telemetry: Telemetry) -> [Tag] {
        var tags: [Tag] = []
        for (override, metrics, reporters) in overrides(of: telemetry) {
            for (name, tag) in (override.tagOverrides ?? [:]).sorted(by: { $0.key < $1.key }) {
                let value: Expression?
                if tag.operation == "REMOVE" {
                    value = nil
                } else {
                    switch Expression.read(tag.value ?? "") {
                    case .cel(let expression), .envoyFormat(let expression): value = expression
                    case .unsupported: value = .unknown
                    }
                }
                tags.append(Tag(name: name, metrics: metrics, reporters: reporters, value: value))
            }
        }
        return tags
    }


    /// What `tags` say for one request reported by `reporter`.
    static func evaluate(_ tags: [Tag], _ head: HTTPRequestHead, reporter: String) -> [Applied] {
        tags.compactMap { tag in
            tag.reporters.contains(reporter) ? Applied(name: tag.name, metrics: tag.metrics, value: tag.value?.evaluate(head)) : nil
        }
    }

    /// `dimensions` for `metric` after `applied`, in order: a later tag of a name wins.
    static func dimensions(_ dimensions: [(String, String)], for metric: Metrics, _ applied: [Applied]) -> [(String, String)] {
        var result = dimensions
        for tag in applied where tag.metrics.contains(metric) {
            result.removeAll { $0.0 == tag.name }
            if let value = tag.value { result.append((tag.name, value)) }
        }
        return result
    }
}

extension RouteConfiguration {
    /// The Telemetry tag overrides for traffic through this gateway to `service`, in the
    /// order they apply (`MetricTagOverrides.compile`).
    package func metricTags(for service: ServiceKey, endpoints: MeshEndpoints) -> [MetricTagOverrides.Tag] {
        telemetryScoped(metricTagScopes, for: service, endpoints: endpoints) { ($0.namespace, $0.selector) }.flatMap(\.tags)
    }

    /// The Telemetry `disabled` overrides for traffic to `service`, in the order they apply.
    package func metricToggles(for service: ServiceKey, endpoints: MeshEndpoints) -> [MetricTagOverrides.Toggle] {
        telemetryScoped(metricTagScopes, for: service, endpoints: endpoints) { ($0.namespace, $0.selector) }.flatMap(\.toggles)
    }
}
