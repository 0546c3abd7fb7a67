import Testing
@testable import MeshProxyCore

@Suite("Istio DestinationRule loading")
struct IstioPolicyLoaderTests {
    /// The design document's YAML, plus a PeerAuthentication in the same file.
    let designDocument = """
        apiVersion: networking.istio.io/v1beta1
        kind: DestinationRule
        metadata:
          name: mcp-organization
        spec:
          host: mcp-organization
          trafficPolicy:
            loadBalancer:
              localityLbSetting:
                enabled: true
                distribute:
                - from: "region1/zone1/*"
                  to:
                    "region1/zone1/*": 80
                    "region1/zone2/*": 20
                failover:
                - from: region1
                  to: region2
            circuitBreaker:
              consecutiveGatewayErrors: 5
              interval: 30s
            tls:
              mode: ISTIO_MUTUAL
        ---
        apiVersion: security.istio.io/v1beta1
        kind: PeerAuthentication
        metadata:
          name: mcp-mtls
        spec:
          mtls: {mode: STRICT}
        """

    @Test("The design document's rule loads: circuitBreaker read as outlierDetection, each difference from Istio a warning with its line")
    func designDocumentLoads() throws {
        let loaded = try IstioPolicyLoader.load(yaml: designDocument, file: "dr.yaml")
        let rule = try #require(loaded.destinationRules.first)
        #expect(rule.policy(port: nil, subset: nil).effectiveOutlierDetection?.consecutiveGatewayErrors == 5)
        // Its PeerAuthentication (STRICT, what the gateway does) is read too: nothing is skipped.
        #expect(loaded.skipped.isEmpty, "\(loaded.skipped)")
        #expect(loaded.peerAuthentications.map(\.name) == ["mcp-mtls"])
        #expect(IstioPolicyLoader.kinds.keys.sorted() == ["AuthorizationPolicy", "DestinationRule", "EnvoyFilter", "Gateway", "IstioOperator", "PeerAuthentication",
                                                          "RequestAuthentication", "ServiceEntry", "Telemetry", "VirtualService", "WorkloadEntry"])
        let warnings = loaded.warnings.map(\.description)
        #expect(warnings.contains("dr.yaml:22:5: warning: spec.trafficPolicy.tls: valid Istio field, not carried out by EastWest yet; ignored"))
        #expect(warnings.contains { $0.hasPrefix("dr.yaml:19:5: warning: spec.trafficPolicy.circuitBreaker: not an Istio field; read as 'outlierDetection'") })
        #expect(warnings.contains { $0.hasPrefix("dr.yaml:9:7: warning: spec.trafficPolicy.loadBalancer.localityLbSetting: Istio rejects 'distribute' together with 'failover'") })
        #expect(rule.host == "mcp-organization" && loaded.rule(for: "mcp-organization.default.svc.cluster.local") == rule)
    }

    @Test("Failover without outlierDetection is loudly flagged: Istio silently does nothing")
    func failoverWithoutOutlierDetection() throws {
        let yaml = """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: echo}
            spec:
              host: echo.default.svc.cluster.local
              trafficPolicy:
                loadBalancer:
                  localityLbSetting:
                    failover: [{from: us-east1, to: us-west1}]
            """
        let loaded = try IstioPolicyLoader.load(yaml: yaml, file: "dr.yaml")
        #expect(loaded.warnings.map(\.description).contains { $0.contains("there is no outlierDetection: Istio (and EastWest) then do NO failover") })
    }

    @Test("What Istio rejects is an error naming file, line, column and field; nothing is loaded")
    func istioRejections() {
        let yaml = """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: echo}
            spec:
              host: echo.default.svc.cluster.local
              trafficPolicy:
                loadBalancer:
                  localityLbSetting:
                    distribute: [{from: "us-east1/*", to: {"us-east1/*": 70, "us-west1/*": 20}}]
                    failover: [{from: us-east1, to: us-east1}]
                outlierDetecton: {interval: 5s}
            """
        do {
            _ = try IstioPolicyLoader.load(yaml: yaml, file: "dr.yaml")
            Issue.record("expected errors")
        } catch {
            let problems = error.errors.map(\.description)
            #expect(problems.contains("dr.yaml:11:5: error: spec.trafficPolicy.outlierDetecton: unknown field 'outlierDetecton' (not a DestinationRule field)"))
            #expect(problems.contains("dr.yaml:9:43: error: spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: weights must each be 1-100 and sum to 100 (they sum to 90)"))
            #expect(problems.contains { $0.contains("failover[0]: failover 'from' and 'to' must be different regions") })
        }
    }

    @Test("connectionPool.http's protocol fields load into the route action: UPGRADE, useClientProtocol over it, maxConcurrentStreams; an unknown h2UpgradePolicy is an error at its line")
    func upstreamProtocolFields() throws {
        func action(_ http: String) throws(ConfigErrors) -> RouteAction {
            let loaded = try IstioPolicyLoader.load(yaml: """
                apiVersion: networking.istio.io/v1
                kind: DestinationRule
                metadata: {name: echo}
                spec:
                  host: echo.default.svc.cluster.local
                  trafficPolicy: {connectionPool: {http: \(http)}}
                """, file: "dr.yaml")
            #expect(loaded.warnings.isEmpty, "\(loaded.warnings)")
            let routes = RouteConfiguration(localCluster: "east", destinationRules: loaded.destinationRules)
            return routes.action(for: Route(service: ServiceKey(host: "echo.default.svc.cluster.local", port: 80), subset: nil, selector: [:]), origin: .client)
        }
        #expect(try action("{h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 10}").upstreamProtocol == .upgradeToHTTP2)
        #expect(try action("{h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 10}").maxConcurrentStreams == 10)
        #expect(try action("{h2UpgradePolicy: UPGRADE, useClientProtocol: true}").upstreamProtocol == .asTheClient)
        #expect(try action("{h2UpgradePolicy: DO_NOT_UPGRADE}").upstreamProtocol == .byService)
        #expect(try action("{h2UpgradePolicy: UPGRADE}").localUpstreamIsHTTP2(clientHTTP2: false))
        #expect(try !action("{useClientProtocol: true}").localUpstreamIsHTTP2(clientHTTP2: false))
        #expect(try action("{useClientProtocol: true}").localUpstreamIsHTTP2(clientHTTP2: true))
        do {
            _ = try action("{h2UpgradePolicy: ALWAYS}")
            Issue.record("expected an error")
        } catch {
            #expect(error.errors.map(\.description).contains { $0.hasPrefix("dr.yaml:6:") && $0.contains("'ALWAYS' is not one of DEFAULT, DO_NOT_UPGRADE, UPGRADE") }, "\(error)")
        }
    }

    @Test("Subset and port-level policies override the top level, field by field of the top level")
    func policyMerge() throws {
        let yaml = """
            apiVersion: networking.istio.io/v1alpha3
            kind: DestinationRule
            metadata: {name: echo}
            spec:
              host: echo.default.svc.cluster.local
              trafficPolicy:
                outlierDetection: {consecutiveGatewayErrors: 3}
                portLevelSettings:
                - port: {number: 9090}
                  outlierDetection: {consecutiveGatewayErrors: 9}
              subsets:
              - name: v2
                labels: {version: v2}
                trafficPolicy:
                  loadBalancer: {localityLbSetting: {enabled: false}}
            """
        let rule = try #require(try IstioPolicyLoader.load(yaml: yaml, file: "dr.yaml").destinationRules.first)
        #expect(rule.policy(port: 8080, subset: nil).outlierDetection?.consecutiveGatewayErrors == 3)
        #expect(rule.policy(port: 9090, subset: nil).outlierDetection?.consecutiveGatewayErrors == 9)
        let v2 = rule.policy(port: 8080, subset: "v2")
        #expect(v2.loadBalancer?.localityLbSetting?.enabled == false && v2.outlierDetection?.consecutiveGatewayErrors == 3)
    }
}
