import Testing
@testable import MeshProxyCore

@Suite("targetRefs on AuthorizationPolicy and RequestAuthentication (Istio 1.22+ policy attachment)")
struct PolicyTargetTests {
    static let policies = """
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: deny-httpbin, namespace: foo}
        spec:
          targetRefs: [{kind: Service, group: "", name: httpbin}]
          action: DENY
          rules: [{to: [{operation: {paths: ["/admin"]}}]}]
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: at-the-gateway, namespace: istio-system}
        spec:
          targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: eastwest}
          action: DENY
          rules: [{to: [{operation: {paths: ["/gateway-only"]}}]}]
        ---
        apiVersion: security.istio.io/v1
        kind: AuthorizationPolicy
        metadata: {name: external, namespace: foo}
        spec:
          targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: payments}]
          action: DENY
          rules: [{}]
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: payments, namespace: foo}
        spec:
          hosts: [payments.example.com]
          ports: [{number: 443, name: tls, protocol: TLS}]
          resolution: DNS
        ---
        apiVersion: security.istio.io/v1
        kind: RequestAuthentication
        metadata: {name: jwt-httpbin, namespace: foo}
        spec:
          targetRefs: [{kind: Service, group: "", name: httpbin}]
          jwtRules: [{issuer: "https://issuer.example", jwks: '{"keys":[]}'}]
        """

    static func names(_ engine: AuthorizationEngine, host: String, labels: [String: String] = ["istio": "eastwestgateway"]) -> [String] {
        let parts = host.split(separator: ".")
        return engine.applicable(gatewayLabels: labels, gatewayNamespace: "istio-system", serviceNamespace: parts.count > 1 ? String(parts[1]) : nil,
                                 serviceLabels: [["app": "any"]], serviceHost: host).map { "\($0.name)\($0.atGateway ? "@gateway" : "")" }
    }

    @Test("A Service target is the traffic to that service only (not its whole namespace, as a policy without a selector would be); a ServiceEntry's hosts; a Gateway target is the gateway labelled with its gateway-name")
    func attachment() throws {
        let loaded = try IstioPolicyLoader.load(yaml: Self.policies, file: "targets.yaml")
        #expect(!loaded.warnings.contains { $0.description.contains("targetRef") }, "\(loaded.warnings)")
        let engine = AuthorizationEngine(policies: loaded.authorizationPolicies, serviceEntries: loaded.serviceEntries)
        #expect(Self.names(engine, host: "httpbin.foo.svc.cluster.local") == ["ns[foo]-policy[deny-httpbin]"])
        #expect(Self.names(engine, host: "ratings.foo.svc.cluster.local").isEmpty, "another service of foo")
        #expect(Self.names(engine, host: "httpbin.bar.svc.cluster.local").isEmpty, "a service of that name in another namespace")
        #expect(Self.names(engine, host: "payments.example.com") == ["ns[foo]-policy[external]"])
        #expect(Self.names(engine, host: "ratings.foo.svc.cluster.local", labels: ["istio": "eastwestgateway", PolicyTarget.gatewayNameLabel: "eastwest"])
                == ["ns[istio-system]-policy[at-the-gateway]@gateway"])

        // The decision: /admin to httpbin refused, to ratings not.
        let request = { (path: String) in
            AuthorizationRequest(principal: nil, sourceIP: "10.0.0.1", destinationIP: "127.0.0.1", listenerPort: 15443, servicePort: 8000, serverName: "",
                                 http: .init(host: "httpbin.foo", method: "GET", path: path, headers: [:]))
        }
        let forHttpbin = engine.applicable(gatewayLabels: [:], gatewayNamespace: "istio-system", serviceNamespace: "foo", serviceLabels: [],
                                           serviceHost: "httpbin.foo.svc.cluster.local")
        #expect(!AuthorizationEngine.decide(request("/admin"), policies: forHttpbin).allowed)
        #expect(AuthorizationEngine.decide(request("/status"), policies: forHttpbin).allowed)

        // RequestAuthentication attaches the same way.
        var routes = RouteConfiguration(localCluster: "east")
        routes.requestAuthentications = PolicyTarget.attach(loaded.requestAuthentications, serviceEntries: loaded.serviceEntries)
        let endpoints = MeshEndpoints(localCluster: "east", clusters: [:])
        #expect(routes.requestAuthenticator(for: ServiceKey(host: "httpbin.foo.svc.cluster.local", port: 8000), endpoints: endpoints) != nil)
        #expect(routes.requestAuthenticator(for: ServiceKey(host: "ratings.foo.svc.cluster.local", port: 8000), endpoints: endpoints) == nil)
    }

    @Test("Istio's validation of targets: not with a selector, only its kinds, a name, no other namespace (errors at their lines); a GatewayClass attaches to waypoints, which is said")
    func validation() throws {
        func problems(_ spec: String) -> [String] {
            let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: foo}\nspec:\n" + spec
            do { return try IstioPolicyLoader.load(yaml: yaml, file: "p.yaml").warnings.map(\.description) } catch { return error.errors.map(\.description) }
        }
        #expect(problems("  selector: {matchLabels: {app: a}}\n  targetRefs: [{kind: Service, name: a}]\n").contains { $0.contains("selector and targetRefs cannot both be set") })
        #expect(problems("  targetRefs: [{kind: Deployment, group: apps, name: a}]\n").contains { $0.hasPrefix("p.yaml:5:") && $0.contains("not apps/Deployment") })
        #expect(problems("  targetRefs: [{kind: Service}]\n").contains { $0.contains("needs a name") })
        #expect(problems("  targetRefs: [{kind: Service, name: a, namespace: bar}]\n").contains { $0.contains("cross namespace referencing is not currently supported") })
        #expect(problems("  targetRef: {kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}\n").contains { $0.contains("warning") && $0.contains("waypoints") })
    }
}
