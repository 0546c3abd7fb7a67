import NIOHTTP1
import Testing
@testable import MeshProxyCore

@Suite("Telemetry: loading and tag overrides")
struct TelemetryTests {
    @Test("The design document's Telemetry loads (not skipped): its Prometheus metric name and Envoy-format values are read as what they mean, each with a warning at its line")
    func designDocument() throws {
        let loaded = try IstioPolicyLoader.load(yaml: """
            apiVersion: telemetry.istio.io/v1alpha1
            kind: Telemetry
            metadata:
              name: mcp-custom-metrics
            spec:
              metrics:
              - overrides:
                - match:
                    metric: requests_total
                  tagOverrides:
                    organization_id:
                      value: "%{REQUEST_HEADERS['x-organization-id']}"
                    user_id:
                      value: "%{REQUEST_HEADERS['x-user-id']}"
              accessLogging:
              - providers: [{name: envoy}]
            """, file: "telemetry.yaml")
        #expect(loaded.skipped.isEmpty && loaded.telemetries.count == 1)
        let text = loaded.warnings.map(\.description)
        #expect(text.contains { $0.hasPrefix("telemetry.yaml:9:") && $0.contains("read as REQUEST_COUNT") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("telemetry.yaml:12:") && $0.contains("read as request.headers['x-organization-id']") }, "\(text)")
        #expect(!text.contains { $0.contains("spec.accessLogging") }, "accessLogging with the envoy provider is carried out: \(text)")
        let tags = MetricTagOverrides.tags(of: loaded.telemetries[0])
        #expect(tags.map(\.name) == ["organization_id", "user_id"])
        #expect(tags.allSatisfy { $0.metrics == [.requests] && $0.reporters == ["source", "destination"] })
    }

    @Test("What Istio rejects is an error at its line: an unknown metric, mode or operation, an UPSERT without a value")
    func invalid() {
        do {
            _ = try IstioPolicyLoader.load(yaml: """
                apiVersion: telemetry.istio.io/v1
                kind: Telemetry
                metadata: {name: bad}
                spec:
                  metrics:
                  - overrides:
                    - match: {metric: REQUESTS, mode: BOTH}
                      tagOverrides:
                        a: {operation: MERGE, value: "'x'"}
                        b: {}
                """, file: "bad.yaml")
            Issue.record("loaded")
        } catch {
            let text = error.description
            for expected in ["bad.yaml:7:", "'REQUESTS' is not an Istio metric", "'BOTH' is not CLIENT, SERVER or CLIENT_AND_SERVER",
                             "bad.yaml:9:", "'MERGE' is not UPSERT or REMOVE", "bad.yaml:10:", "needs a value"] {
                #expect(text.contains(expected), "\(expected) in \(text)")
            }
        }
    }

    @Test("Values: request.headers, method, path (no query), host, literals; Envoy's %REQ()% read as the header; anything else is 'unknown'; labels replaced, added and removed per metric, the later tag winning")
    func values() {
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/orgs/7?page=2")
        head.headers.add(name: "Host", value: "orgs.example")
        head.headers.add(name: "X-Tenant", value: "acme")
        func value(_ text: String) -> String? {
            switch MetricTagOverrides.Expression.read(text) {
            case .cel(let expression), .envoyFormat(let expression): expression.evaluate(head)
            case .unsupported: nil
            }
        }
        #expect(value("request.headers['x-tenant']") == "acme")
        #expect(value(#"request.headers["X-Tenant"]"#) == "acme")
        #expect(value("request.headers['x-missing']") == "unknown")
        #expect(value("request.method") == "POST" && value("request.path") == "/orgs/7" && value("request.host") == "orgs.example")
        #expect(value("'fixed'") == "fixed")
        #expect(MetricTagOverrides.Expression.read("%REQ(X-Tenant)%") == .envoyFormat(.header("x-tenant")))
        #expect(MetricTagOverrides.Expression.read("size(request.headers)") == .unsupported)

        let standard = [("reporter", "source"), ("request_protocol", "http"), ("response_code", "200")]
        let applied: [MetricTagOverrides.Applied] = [
            .init(name: "response_code", metrics: .http, value: "2xx"),
            .init(name: "request_protocol", metrics: [.duration], value: nil),
            .init(name: "tenant", metrics: [.requests], value: "acme"),
            .init(name: "tenant", metrics: [.requests], value: "later"),
        ]
        let requests = MetricTagOverrides.dimensions(standard, for: .requests, applied)
        #expect(requests.map { "\($0.0)=\($0.1)" } == ["reporter=source", "request_protocol=http", "response_code=2xx", "tenant=later"])
        let durations = MetricTagOverrides.dimensions(standard, for: .duration, applied)
        #expect(durations.map { "\($0.0)=\($0.1)" } == ["reporter=source", "response_code=2xx"])
    }

    func record(code: Int, path: String = "/api/items", headers: [(String, String)] = [], reporter: String = "source") -> HTTPRequestRecord {
        var record = HTTPRequestRecord()
        record.responseCode = code
        record.method = "GET"
        record.path = path
        record.authority = "shop.example.com"
        record.requestHeaders = HTTPHeaders(headers)
        record.reporter = reporter
        return record
    }

    @Test("accessLogging filter.expression: Envoy's CEL over the request's attributes, with CEL's error rules (a missing header is an error that || and && absorb when the other side decides; an error or non-boolean logs nothing)")
    func filterExpressions() throws {
        func holds(_ expression: String, _ record: HTTPRequestRecord) throws -> Bool { try AccessLogFilter(parsing: expression).holds(for: record) }
        let ok = record(code: 200), missing = record(code: 404), failed = record(code: 503, headers: [("x-debug", "1")])
        #expect(try !holds("response.code >= 400", ok) && holds("response.code >= 400", missing) && holds("response.code >= 400", failed))
        #expect(try holds("response.code >= 500 || request.headers['x-debug'] == '1'", failed))
        #expect(try !holds("request.headers['x-debug'] == '1'", ok), "a missing header is an error: no line")
        #expect(try holds("request.headers['x-debug'] == '1' || response.code == 200", ok), "|| absorbs the error when the other side is true")
        #expect(try !holds("request.headers['x-debug'] == '1' && response.code == 404", ok))
        #expect(try holds("!(response.code == 200) && request.method == \"GET\"", missing))
        #expect(try holds("request.path.startsWith('/api') && request.url_path.endsWith('items')", record(code: 200, path: "/api/items?page=2")))
        #expect(try holds("request.host.contains('example')", ok))
        #expect(try !holds("response.code", ok), "not a boolean: no line")
        #expect(try !holds("response.code == '200'", ok), "int against string: an error, no line")
        #expect(throws: AccessLogFilter.ParseError.self) { try AccessLogFilter(parsing: "response.code >=") }
        do {
            _ = try AccessLogFilter(parsing: "connection.mtls")
            Issue.record("parsed")
        } catch {
            #expect(error.unsupported && error.description.contains("'connection.mtls' is not an attribute EastWest evaluates"))
        }
    }

    @Test("accessLogging applies by scope, most specific last: a namespace's filter over the mesh's, a workload selector's disabled over both; match.mode CLIENT leaves the destination side's lines alone; bad CEL is an error at its line, CEL naming what EastWest does not evaluate a warning")
    func accessLoggingScopes() throws {
        let loaded = try IstioPolicyLoader.load(yaml: """
            apiVersion: telemetry.istio.io/v1
            kind: Telemetry
            metadata: {name: mesh-default, namespace: istio-system}
            spec:
              accessLogging: [{providers: [{name: envoy}], filter: {expression: "response.code >= 400"}, match: {mode: CLIENT}}]
            ---
            apiVersion: telemetry.istio.io/v1
            kind: Telemetry
            metadata: {name: quiet, namespace: shop}
            spec:
              selector: {matchLabels: {app: cart}}
              accessLogging: [{disabled: true}]
            ---
            apiVersion: telemetry.istio.io/v1
            kind: Telemetry
            metadata: {name: unsupported, namespace: other}
            spec:
              accessLogging: [{filter: {expression: "connection.mtls"}}]
            """, file: "logging.yaml")
        let text = loaded.warnings.map(\.description)
        #expect(text.count == 1 && text[0].hasPrefix("logging.yaml:18:") && text[0].contains("every request is logged"), "\(text)")
        let scopes = AccessLogPolicy.compile(loaded.telemetries)
        #expect(scopes.map(\.namespace) == ["istio-system", "other", "shop"], "mesh first, then namespaces, then selectors")
        let mesh = try #require(scopes.first?.policy)
        #expect(!mesh.writes(record(code: 200)) && mesh.writes(record(code: 503)))
        #expect(AccessLogPolicy.pick([mesh], reporter: "destination") == nil, "a CLIENT rule leaves the destination side's lines")
        let quiet = try #require(scopes.last?.policy)
        #expect(!quiet.writes(record(code: 503)))
        #expect(AccessLogPolicy.pick([mesh, quiet], reporter: "source") == quiet, "the most specific rule for the mode wins")
        #expect(scopes[1].policy.filter == nil && scopes[1].policy.writes(record(code: 200)), "an unsupported filter logs everything")

        do {
            _ = try IstioPolicyLoader.load(yaml: """
                apiVersion: telemetry.istio.io/v1
                kind: Telemetry
                metadata: {name: bad}
                spec:
                  accessLogging: [{filter: {expression: "response.code >= && 1"}, match: {mode: BOTH}}]
                """, file: "bad-logging.yaml")
            Issue.record("loaded")
        } catch {
            #expect(error.description.contains("bad-logging.yaml:5:") && error.description.contains("CEL filter") && error.description.contains("'BOTH' is not CLIENT"), "\(error.description)")
        }
    }

    @Test("metrics overrides disabled: off for the metrics and mode they name, in order (a later disabled: false turns one back on); no warning")
    func disabledMetrics() throws {
        let loaded = try IstioPolicyLoader.load(yaml: """
            apiVersion: telemetry.istio.io/v1
            kind: Telemetry
            metadata: {name: quiet, namespace: istio-system}
            spec:
              metrics:
              - overrides:
                - match: {metric: ALL_METRICS, mode: CLIENT}
                  disabled: true
                - match: {metric: REQUEST_COUNT}
                  disabled: false
            """, file: "quiet.yaml")
        #expect(loaded.warnings.isEmpty, "\(loaded.warnings)")
        let toggles = MetricTagOverrides.toggles(of: loaded.telemetries[0])
        #expect(MetricTagOverrides.disabled(toggles, reporter: "source") == [.duration, .requestBytes, .responseBytes])
        #expect(MetricTagOverrides.disabled(toggles, reporter: "destination") == [])
        #expect(MetricTagOverrides.compile(loaded.telemetries).count == 1, "a Telemetry with only toggles is kept")
    }
}
