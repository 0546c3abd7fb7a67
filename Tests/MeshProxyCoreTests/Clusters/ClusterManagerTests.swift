import Testing
@testable import MeshProxyCore

/// The split between compiled routes and live cluster state: what a change replans, and what
/// survives a swap of the route configuration.
@Suite("Route configuration and cluster manager")
struct ClusterManagerTests {
    let echo = ServiceKey(host: "echo.default.svc.cluster.local", port: 8080)
    let ratings = ServiceKey(host: "ratings.default.svc.cluster.local", port: 9080)
    let e1 = HostPort(host: "127.0.1.10", port: 8080), e2 = HostPort(host: "127.0.1.11", port: 8080)

    var mesh: MeshEndpoints {
        let east = Locality(region: "us-east1", zone: "a"), west = Locality(region: "us-west1", zone: "a")
        return MeshEndpoints(localCluster: "east", clusters: [
            "east": ClusterEndpoints(name: "east", gateways: [], services: [
                echo: [Endpoint(address: e1, locality: east, labels: ["version": "v1"]),
                       Endpoint(address: e2, locality: east, labels: ["version": "v2"])],
            ]),
            "west": ClusterEndpoints(name: "west", gateways: [GatewayAddress(name: "west-gw-1", address: HostPort(host: "127.0.2.1", port: 15443))],
                                     services: [ratings: [Endpoint(address: HostPort(host: "127.0.2.20", port: 9080), locality: west)]]),
        ])
    }

    func routes(_ rules: [DestinationRule] = []) -> RouteConfiguration {
        RouteConfiguration(localCluster: "east", client: Locality(region: "us-east1", zone: "a"), destinationRules: rules)
    }

    /// echo with locality failover and consecutive-error ejection.
    var failover: DestinationRule {
        DestinationRule(host: "echo.default.svc.cluster.local",
                        trafficPolicy: TrafficPolicy(loadBalancer: .init(localityLbSetting: LocalityLbSetting(enabled: true)),
                                                     outlierDetection: OutlierDetection()))
    }

    @Test("A change replans only the services it touches: an ejection one service, a gateway leaving its cluster's services")
    func replansPerService() {
        let picker = EndpointPicker(endpoints: mesh, routes: routes([failover]))
        #expect(picker.replannedServices == [echo, ratings])
        let ejected = picker.replanned { $0.ejected = [echo: [e1]] }
        #expect(ejected.replannedServices == [echo])
        #expect(ejected.plan(for: echo, subset: nil) != picker.plan(for: echo, subset: nil))
        let unreachable = ejected.replanned { $0.unreachableGateways = ["west-gw-1"] }
        #expect(unreachable.replannedServices == [ratings])
        #expect(unreachable.candidates(for: Route(service: ratings, subset: nil, selector: [:]), origin: .client, cursor: 0).isEmpty)
        // Nothing changed: nothing planned.
        #expect(unreachable.replanned { $0.unreachableGateways = ["west-gw-1"] }.replannedServices.isEmpty)
        // A new endpoint of echo replans echo only.
        var grown = mesh
        grown.clusters["east"]?.services[echo]?.append(Endpoint(address: HostPort(host: "127.0.1.12", port: 8080)))
        #expect(picker.replanned { $0.endpoints = grown }.replannedServices == [echo])
    }

    @Test("Lookups by host: exact rule first, then Istio's short name; a short-name rule's subsets are routable")
    func ruleLookup() throws {
        let short = DestinationRule(host: "echo", subsets: [.init(name: "canary", labels: ["version": "v2"])])
        let exact = DestinationRule(host: "ratings.default.svc.cluster.local")
        let config = routes([short, exact])
        #expect(config.rule(for: echo.host) == short)
        #expect(config.rule(for: ratings.host) == exact)
        #expect(config.rule(for: "other.default.svc.cluster.local") == nil)
        let picker = EndpointPicker(endpoints: mesh, routes: config)
        guard case .route(let canary) = config.resolve(try ServerName(parsing: "outbound_.8080_.canary_.\(echo.host)"), in: picker) else {
            Issue.record("the short-name rule's subset did not route"); return
        }
        #expect(canary.selector == ["version": "v2"])
        #expect(picker.candidates(for: canary, origin: .client, cursor: 0).map(\.target.address) == [e2])
    }

    @Test("The route action takes connectTimeout and maxConnections from the DestinationRule, else the gateway's defaults")
    func routeAction() throws {
        let pool = try #require(try ConfigLoader.decode(ConnectionPoolSettings.self, yaml: "tcp: {maxConnections: 7, connectTimeout: 250ms}", file: "pool.yaml").0)
        let config = RouteConfiguration(localCluster: "east", destinationRules: [DestinationRule(host: echo.host, trafficPolicy: TrafficPolicy(connectionPool: pool))],
                                        connectTimeout: .seconds(2), maxConnectAttempts: 4)
        let action = config.action(for: Route(service: echo, subset: nil, selector: [:]), origin: .client)
        #expect(action.connectTimeout == .milliseconds(250))
        #expect(action.maxConnections == 7)
        #expect(action.retry.maxAttempts == 4)
        let fallback = config.action(for: Route(service: ratings, subset: nil, selector: [:]), origin: .client)
        #expect(fallback.connectTimeout == .seconds(2) && fallback.maxConnections == nil)
    }

    @Test("A swap of the route configuration keeps ejections, round-robin positions and open-connection counts")
    func liveStateSurvivesSwap() throws {
        let clusters = ClusterManager(routes: routes([failover]), endpoints: mesh)
        clusters.update { $0.ejected = [echo: [e1]] }
        #expect(clusters.connections.acquire(echo, limit: 1))
        let route = Route(service: echo, subset: nil, selector: [:])
        let first = clusters.candidates(for: route, origin: .client)
        #expect(first.first?.target.address == e2)

        // A reload that changes nothing about echo's endpoints: the ejection still holds, the
        // breaker slot is still taken, and round robin continues where it was.
        var changed = failover
        changed.subsets = [.init(name: "v1", labels: ["version": "v1"])]
        clusters.update { $0.routes = routes([changed]) }
        #expect(clusters.current.plan(for: echo, subset: "v1") != nil)
        #expect(clusters.candidates(for: route, origin: .client).first?.target.address == e2)
        #expect(!clusters.connections.acquire(echo, limit: 1))
        #expect(clusters.cursors.next(for: echo) == 2)
    }

    @Test("PolicyCompiler: the topology's subsets and the DestinationRules' subsets, the network as a client label")
    func compiles() throws {
        var (config, _) = try ConfigLoader.decode(GatewayConfig.self, yaml: """
            name: east-gw-1
            cluster: east
            network: net-east
            locality: us-east1/a
            listen: 127.0.0.1:15443
            tls: {certificateChain: a, privateKey: b, rootCertificate: c}
            services:
              - host: echo.default.svc.cluster.local
                port: 8080
                subsets: {blue: {track: blue}}
                endpoints: [{address: "127.0.1.10:8080"}]
            """, file: "gateway.yaml")
        config.maxConnectAttempts = 5
        var resources = IstioPolicyLoader.Loaded()
        resources.destinationRules = [DestinationRule(host: echo.host, subsets: [.init(name: "blue", labels: ["track": "other"]),
                                                                                  .init(name: "green", labels: ["track": "green"])])]
        let compiled = PolicyCompiler.compile(config: config, resources: resources)
        #expect(compiled.clientLabels == ["topology.istio.io/network": "net-east"])
        #expect(compiled.client == Locality(region: "us-east1", zone: "a"))
        // The topology's own subset keeps its labels; the rule adds the one it lacks.
        #expect(compiled.subsets[echo.host] == ["blue": ["track": "blue"], "green": ["track": "green"]])
        #expect(compiled.maxConnectAttempts == 5)
    }
}
