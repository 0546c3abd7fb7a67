import Testing
@testable import MeshProxyCore

@Suite("Server names (SNI)")
struct ServerNameTests {
    @Test("Istio and plain forms parse to host, port and subset", arguments: [
        ("outbound_.8080_._.echo.default.svc.cluster.local", "echo.default.svc.cluster.local", 8080, nil),
        ("outbound_.9080_.v2_.reviews.prod.svc.cluster.local", "reviews.prod.svc.cluster.local", 9080, "v2"),
        ("OUTBOUND_.15443_.Canary_.Echo.Default.svc.cluster.local", "echo.default.svc.cluster.local", 15443, "canary"),
        ("echo.default.svc.cluster.local", "echo.default.svc.cluster.local", nil, nil),
        ("localhost", "localhost", nil, nil),
    ] as [(String, String, Int?, String?)])
    func parses(name: String, host: String, port: Int?, subset: String?) throws {
        let parsed = try ServerName(parsing: name)
        #expect(parsed.host == host)
        #expect(parsed.port == port)
        #expect(parsed.subset == subset)
    }

    @Test("Malformed names are refused with the reason", arguments: [
        ("", "is empty"),
        ("outbound_.x_._.echo.local", "port 'x' is not a number"),
        ("outbound_.0_._.echo.local", "port '0' is not a number from 1 to 65535"),
        ("outbound_.8080_._.", "has an empty host"),
        ("outbound_.8080_.echo.local", "subset part 'echo' must end with '_'"),
        ("outbound_.8080_._", "has fewer than four parts"),
        ("inbound_.8080_._.echo.local", "is an inbound cluster name"),
        ("echo..local", "empty or over-long label"),
        ("echo local", "not allowed in a DNS name"),
    ])
    func refuses(name: String, reason: String) {
        #expect {
            try ServerName(parsing: name)
        } throws: { error in
            (error as? ServerNameError)?.description.contains(reason) == true
        }
    }

    @Test("The Istio form round-trips, with '_' for an empty subset")
    func istioFormRoundTrips() throws {
        let name = ServerName.istio(host: "echo.default.svc.cluster.local", port: 8080, subset: nil)
        #expect(name.istioForm == "outbound_.8080_._.echo.default.svc.cluster.local")
        #expect(try ServerName(parsing: name.istioForm) == name)
        let v1 = ServerName.istio(host: "a.b", port: 1, subset: "v1")
        #expect(v1.istioForm == "outbound_.1_.v1_.a.b")
    }
}

@Suite("Route configuration and endpoint picker")
struct RoutingTests {
    let echo = ServiceKey(host: "echo.default.svc.cluster.local", port: 8080)
    let ratings = ServiceKey(host: "ratings.default.svc.cluster.local", port: 9080)

    var mesh: MeshEndpoints {
        let east = Locality(region: "us-east1", zone: "a"), west = Locality(region: "us-west1", zone: "a")
        let e1 = Endpoint(address: HostPort(host: "127.0.1.10", port: 8080), locality: east, labels: ["version": "v1"])
        let e2 = Endpoint(address: HostPort(host: "127.0.1.11", port: 8080), locality: east, labels: ["version": "v2"])
        let w1 = Endpoint(address: HostPort(host: "127.0.2.10", port: 8080), locality: west, labels: ["version": "v1"])
        let r1 = Endpoint(address: HostPort(host: "127.0.2.20", port: 9080), locality: west)
        let westGateway = GatewayAddress(name: "west-gw-1", address: HostPort(host: "127.0.2.1", port: 15443))
        return MeshEndpoints(
            localCluster: "east",
            clusters: [
                "east": ClusterEndpoints(name: "east", gateways: [], services: [echo: [e1, e2]]),
                "west": ClusterEndpoints(name: "west", gateways: [westGateway], services: [echo: [w1], ratings: [r1]]),
            ])
    }

    /// The routes of a gateway in us-east1/a, with echo's subsets and `policies`.
    func routes(_ policies: [DestinationRule] = []) -> RouteConfiguration {
        RouteConfiguration(localCluster: "east", client: Locality(region: "us-east1", zone: "a"),
                           subsets: ["echo.default.svc.cluster.local": ["v1": ["version": "v1"], "v2": ["version": "v2"]]],
                           destinationRules: policies)
    }

    func makePicker(_ policies: [DestinationRule] = [], ejected: [ServiceKey: Set<HostPort>] = [:]) -> EndpointPicker {
        EndpointPicker(endpoints: mesh, routes: routes(policies), ejected: ejected)
    }

    @Test("Unknown host, port or subset is no route (NR) with the reason")
    func unknownIsNoRoute() throws {
        let table = routes(), services = makePicker()
        #expect(table.resolve(try ServerName(parsing: "nope.default.svc.cluster.local"), in: services) == .noRoute(reason: "no service 'nope.default.svc.cluster.local' in the mesh"))
        #expect(table.resolve(try ServerName(parsing: "outbound_.9999_._.echo.default.svc.cluster.local"), in: services)
                == .noRoute(reason: "service 'echo.default.svc.cluster.local' has no port 9999 (ports: 8080)"))
        #expect(table.resolve(try ServerName(parsing: "outbound_.8080_.v9_.echo.default.svc.cluster.local"), in: services)
                == .noRoute(reason: "service 'echo.default.svc.cluster.local' has no subset 'v9'"))
    }

    @Test("A plain host name routes to the service's port; a subset narrows the endpoints")
    func plainAndSubset() throws {
        let table = routes(), picker = makePicker()
        guard case .route(let plain) = table.resolve(try ServerName(parsing: "ratings.default.svc.cluster.local"), in: picker) else {
            Issue.record("no route"); return
        }
        #expect(plain.service == ratings)
        guard case .route(let v2) = table.resolve(try ServerName(parsing: "outbound_.8080_.v2_.echo.default.svc.cluster.local"), in: picker) else {
            Issue.record("no route"); return
        }
        #expect(picker.candidates(for: v2, origin: .client, cursor: 0).map(\.target.address.description) == ["127.0.1.11:8080"])
    }

    /// A DestinationRule for echo with locality failover (outlier detection turns it on).
    func failoverRule(_ setting: LocalityLbSetting = LocalityLbSetting(enabled: true)) -> DestinationRule {
        DestinationRule(host: "echo.default.svc.cluster.local",
                        trafficPolicy: TrafficPolicy(loadBalancer: .init(localityLbSetting: setting), outlierDetection: OutlierDetection()))
    }

    @Test("With locality failover, local endpoints round robin first, then the remote cluster's gateway with the Istio-form SNI")
    func localThenRemote() throws {
        let picker = makePicker([failoverRule()])
        let route = Route(service: echo, subset: nil, selector: [:])
        let first = picker.candidates(for: route, origin: .client, cursor: 0)
        let second = picker.candidates(for: route, origin: .client, cursor: 1)
        #expect(first.map(\.target.address.description) == ["127.0.1.10:8080", "127.0.1.11:8080", "127.0.2.1:15443"])
        #expect(second.map(\.target.address.description) == ["127.0.1.11:8080", "127.0.1.10:8080", "127.0.2.1:15443"])
        #expect(first.map(\.priority) == [0, 0, 1])
        guard case .peerGateway(let cluster, _, let sni) = first[2].target else { Issue.record("expected a peer gateway"); return }
        #expect(cluster == "west")
        #expect(sni.istioForm == "outbound_.8080_._.echo.default.svc.cluster.local")
        // Local endpoints ejected: the plan fails over to west at once.
        let ejected = makePicker([failoverRule()], ejected: [echo: [HostPort(host: "127.0.1.10", port: 8080), HostPort(host: "127.0.1.11", port: 8080)]])
        #expect(ejected.candidates(for: route, origin: .client, cursor: 0).first?.target.address.description == "127.0.2.1:15443")
        #expect(ejected.plan(for: echo, subset: nil)?.shares == ["us-west1/a": 1])
    }

    @Test("Without outlier detection Istio does no failover: connections spread over every cluster's endpoints by count")
    func istioDefaultSpreads() {
        let picker = makePicker()
        let route = Route(service: echo, subset: nil, selector: [:])
        var counts: [String: Int] = [:]
        for cursor in 0..<3000 { counts[picker.candidates(for: route, origin: .client, cursor: cursor)[0].locality, default: 0] += 1 }
        #expect(abs(counts["us-east1/a", default: 0] - 2000) <= 3 && abs(counts["us-west1/a", default: 0] - 1000) <= 3, "\(counts)")
    }

    @Test("Connections follow distribute weights closely over any run (80/20 across clusters)")
    func followsDistribute() {
        let rule = failoverRule(LocalityLbSetting(distribute: [.init(from: "us-east1/*", to: ["us-east1/*": 80, "us-west1/*": 20])]))
        let picker = makePicker([rule])
        let route = Route(service: echo, subset: nil, selector: [:])
        for run in [100, 1000] {
            let west = (0..<run).filter { picker.candidates(for: route, origin: .client, cursor: $0)[0].locality == "us-west1/a" }.count
            #expect(abs(Double(west) / Double(run) - 0.2) <= 0.02, "run \(run): \(west) to west")
        }
    }

    @Test("loadBalancer.simple inside a locality: LEAST_REQUEST takes the less loaded of two choices, RANDOM spreads evenly")
    func simpleLoadBalancers() {
        func simplePicker(_ simple: LoadBalancerSettings.Simple) -> EndpointPicker {
            let rule = DestinationRule(host: "echo.default.svc.cluster.local",
                                       trafficPolicy: TrafficPolicy(loadBalancer: .init(simple: simple, localityLbSetting: .init(enabled: true)),
                                                                    outlierDetection: OutlierDetection()))
            return makePicker([rule])
        }
        let route = Route(service: echo, subset: nil, selector: [:])
        let busy = HostPort(host: "127.0.1.10", port: 8080)
        let least = simplePicker(.leastRequest)
        #expect((0..<100).allSatisfy { least.candidates(for: route, origin: .client, cursor: $0, active: { $0 == busy ? 3 : 0 })[0].target.address != busy })
        let random = simplePicker(.random)
        let firstIsBusy = (0..<1000).filter { random.candidates(for: route, origin: .client, cursor: $0)[0].target.address == busy }.count
        #expect((400...600).contains(firstIsBusy), "\(firstIsBusy) of 1000")
    }

    @Test("Traffic from a peer gateway goes only to local endpoints (one hop, never a loop)")
    func peerGatewayTrafficStaysLocal() {
        let picker = makePicker()
        #expect(picker.candidates(for: Route(service: ratings, subset: nil, selector: [:]), origin: .peerGateway, cursor: 0).isEmpty)
        #expect(picker.candidates(for: Route(service: ratings, subset: nil, selector: [:]), origin: .client, cursor: 0).count == 1)
    }
}
