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
        #expect(text.contains { $0.contains("spec.accessLogging") && $0.contains("not carried out") }, "\(text)")
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
}
