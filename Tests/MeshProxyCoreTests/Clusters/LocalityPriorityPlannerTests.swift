import Testing
@testable import MeshProxyCore

/// Numbers from ../shared/research/envoy-istio.md §a.6, §b, §c — Envoy's C++ results, not the
/// rounded doc tables.
@Suite("Locality priority planner (Envoy/Istio arithmetic)")
struct LocalityPriorityPlannerTests {
    let client = Locality(region: "r", zone: "z", subzone: "s")
    /// Localities that default failover puts at priorities 0, 1 and 2 for `client`.
    let levelLocalities = ["r/z/s", "r/z/other", "r/y"]

    func endpoints(_ levels: [(total: Int, healthy: Int)]) -> [PlannedEndpoint] {
        levels.enumerated().flatMap { level, counts in
            (0..<counts.total).map { PlannedEndpoint(locality: levelLocalities[level], healthy: $0 < counts.healthy) }
        }
    }

    /// Default failover (outlier detection on) with Envoy's default panic threshold of 50 %.
    func plan(_ levels: [(total: Int, healthy: Int)], panicThreshold: Int = 50) -> LocalityPlan {
        LocalityPriorityPlanner(client: client, setting: LocalityLbSetting(enabled: true),
                                outlierDetection: OutlierDetection(minHealthPercent: panicThreshold)).plan(endpoints(levels))
    }

    @Test("Priority health and load match Envoy's worked examples", arguments: [
        ([(4, 2), (4, 2)], [70, 70], [70, 30], false),
        ([(4, 1), (2, 2)], [35, 100], [35, 65], false),
        ([(4, 1), (4, 1)], [35, 35], [50, 50], true),          // total panic: by host count
        ([(4, 1), (4, 1), (4, 1)], [35, 35, 35], [35, 35, 30], false),
        ([(5, 1), (5, 1), (5, 1)], [28, 28, 28], [34, 33, 33], true),
        ([(5, 0), (5, 0), (5, 4)], [0, 0, 100], [0, 0, 100], false),
        ([(5, 0), (6, 2), (3, 1)], [0, 46, 46], [37, 42, 21], true),
        ([(1, 0), (2, 0)], [0, 0], [34, 66], true),
    ] as [([(Int, Int)], [Int], [Int], Bool)])
    func envoyPriorityLoad(levels: [(Int, Int)], health: [Int], load: [Int], totalPanic: Bool) {
        let result = plan(levels.map { (total: $0.0, healthy: $0.1) })
        #expect(result.priorities.map(\.health) == health)
        #expect(result.priorities.map(\.load) == load)
        #expect(result.panic == totalPanic)
    }

    @Test("The doc table's rounding differs from Envoy's C++; we match the C++")
    func cppRoundingNotDocs() {
        // 100 hosts per level at 25 %, 25 %, 20 % healthy.
        #expect(plan([(100, 25), (100, 25), (100, 20)], panicThreshold: 0).priorities.map(\.load) == [37, 35, 28])
        #expect(plan([(100, 25), (100, 25), (100, 20)]).priorities.map(\.load) == [34, 33, 33])
        let partial = plan([(100, 5), (100, 65)])
        #expect(partial.priorities.map(\.load) == [8, 92])
        #expect(partial.priorities.map(\.panic) == [true, false] && !partial.panic)
    }

    @Test("Shares of all requests sum to 1 and follow the load")
    func sharesFollowLoad() {
        let result = plan([(4, 2), (4, 2)])
        #expect(abs(result.shares.values.reduce(0, +) - 1) < 1e-9)
        #expect(abs(result.shares["r/z/s"]! - 0.7) < 1e-9)
        #expect(abs(result.shares["r/z/other"]! - 0.3) < 1e-9)
    }

    @Test("Everything down with panic disabled: nothing is routable")
    func nothingRoutable() {
        let result = plan([(2, 0), (2, 0)], panicThreshold: 0)
        #expect(result.shares.isEmpty)
        #expect(result.priorities.first?.load == 100)
    }

    @Test("Locality weights scale with health in floating point (locality_wrr.cc)")
    func localityWeightsScaleWithHealth() {
        // X weight 1, Y weight 2 (distribute 25/50 over 100 endpoints each), Y fully healthy.
        func xShare(healthyX: Int) -> Double {
            let endpoints = (0..<100).map { PlannedEndpoint(locality: "r/x", healthy: $0 < healthyX) }
                + (0..<100).map { _ in PlannedEndpoint(locality: "r/y") }
            let setting = LocalityLbSetting(distribute: [.init(from: "r/*", to: ["r/x": 25, "r/y": 50])])
            return LocalityPriorityPlanner(client: client, setting: setting, outlierDetection: nil).plan(endpoints).shares["r/x"] ?? 0
        }
        #expect(abs(xShare(healthyX: 100) - 1.0 / 3) < 1e-9)
        #expect(abs(xShare(healthyX: 69) - 0.966 / 2.966) < 1e-9)  // 32.57 %, the doc's "32" is a floor
        #expect(abs(xShare(healthyX: 50) - 0.7 / 2.7) < 1e-9)
        #expect(xShare(healthyX: 0) == 0)
    }

    @Test("distribute: weights are ceil(original × w / total) per matched locality (istio applyLocalityWeights)")
    func distributeWeights() {
        let endpoints = ["us-east1/zone-a", "us-east1/zone-a", "us-east1/zone-a", "us-east1/zone-b", "us-west1/zone-a", "us-west1/zone-a"]
            .map { PlannedEndpoint(locality: $0) } + [PlannedEndpoint(locality: "eu-west1/zone-a")]
        let setting = LocalityLbSetting(distribute: [.init(from: "us-east1/*", to: ["us-east1/*": 60, "us-west1/*": 40])])
        let result = LocalityPriorityPlanner(client: Locality(region: "us-east1", zone: "zone-a"), setting: setting,
                                             outlierDetection: nil).plan(endpoints)
        #expect(result.shares.mapValues { ($0 * 100).rounded() } == ["us-east1/zone-a": 45, "us-east1/zone-b": 15, "us-west1/zone-a": 40])

        // Three single-endpoint subzones share 50: ceil(16.67) = 17 each, total 101.
        let subzones = ["r1/z1/a", "r1/z1/b", "r1/z1/c", "r2/z1"].map { PlannedEndpoint(locality: $0) }
        let split = LocalityPriorityPlanner(
            client: Locality(region: "r1", zone: "z1", subzone: "a"),
            setting: LocalityLbSetting(distribute: [.init(from: "r1/*", to: ["r1/z1/*": 50, "r2/*": 50])]),
            outlierDetection: nil).plan(subzones)
        #expect(abs(split.shares["r1/z1/a"]! - 17.0 / 101) < 1e-9)
        #expect(abs(split.shares["r2/z1"]! - 50.0 / 101) < 1e-9)

        // Health still scales the weight: zone-a 80 at 50 % healthy -> 56 against 20.
        let health = (0..<4).map { PlannedEndpoint(locality: "r/zone-a", healthy: $0 < 2) } + (0..<4).map { _ in PlannedEndpoint(locality: "r/zone-b") }
        let scaled = LocalityPriorityPlanner(
            client: Locality(region: "r", zone: "zone-a"),
            setting: LocalityLbSetting(distribute: [.init(from: "r/zone-a", to: ["r/zone-a": 80, "r/zone-b": 20])]),
            outlierDetection: nil).plan(health)
        #expect(abs(scaled.shares["r/zone-a"]! - 56.0 / 76) < 1e-9)
    }

    @Test("Locality failover: same subzone, then the failover target region, then the rest (istio LbPriority)")
    func failoverOrdering() {
        let endpoints = ["us-east1/zone-a/sz-1", "us-west1/zone-a", "eu-west1/zone-a"].map { PlannedEndpoint(locality: $0) }
        let planner = LocalityPriorityPlanner(
            client: Locality(region: "us-east1", zone: "zone-a", subzone: "sz-1"),
            setting: LocalityLbSetting(failover: [.init(from: "us-east1", to: "us-west1")]),
            outlierDetection: OutlierDetection())
        let levels = planner.plan(endpoints).priorities.map { $0.localities.map(\.locality) }
        #expect(levels == [["us-east1/zone-a/sz-1"], ["us-west1/zone-a"], ["eu-west1/zone-a"]])
    }

    @Test("Default failover: a half-healthy local zone keeps 70 % and spills 30 % to the next zone, none to other regions")
    func defaultFailoverSpill() {
        let endpoints = (0..<4).map { PlannedEndpoint(locality: "us-east1/zone-a/sz-1", healthy: $0 < 2) }
            + (0..<4).map { _ in PlannedEndpoint(locality: "us-east1/zone-b") }
            + (0..<4).map { _ in PlannedEndpoint(locality: "us-west1/zone-a") }
        let result = LocalityPriorityPlanner(
            client: Locality(region: "us-east1", zone: "zone-a", subzone: "sz-1"),
            setting: LocalityLbSetting(enabled: true), outlierDetection: OutlierDetection()).plan(endpoints)
        #expect(result.shares.mapValues { ($0 * 100).rounded() } == ["us-east1/zone-a/sz-1": 70, "us-east1/zone-b": 30])
    }

    @Test("Without outlier detection Istio does no failover: one priority, traffic by healthy host count")
    func noOutlierDetectionNoFailover() {
        let endpoints = ["r/z", "r/z", "other/z"].map { PlannedEndpoint(locality: $0) }
        let result = LocalityPriorityPlanner(client: Locality(region: "r", zone: "z"),
                                             setting: LocalityLbSetting(failover: [.init(from: "r", to: "other")]),
                                             outlierDetection: nil).plan(endpoints)
        #expect(result.priorities.count == 1)
        #expect(abs(result.shares["other/z"]! - 1.0 / 3) < 1e-9)
    }

    @Test("failoverPriority: more leading labels matched is a better priority (istio applyFailoverPriorities)")
    func failoverPriorityLabels() {
        let endpoints = [
            PlannedEndpoint(locality: "us-east1/a", labels: ["topology.istio.io/network": "net1"]),
            PlannedEndpoint(locality: "us-west1/a", labels: ["topology.istio.io/network": "net1"]),
            PlannedEndpoint(locality: "us-east1/b", labels: ["topology.istio.io/network": "net2"]),
        ]
        let planner = LocalityPriorityPlanner(
            client: Locality(region: "us-east1", zone: "a"), clientLabels: ["topology.istio.io/network": "net1"],
            setting: LocalityLbSetting(failoverPriority: ["topology.istio.io/network", "topology.kubernetes.io/region"]),
            outlierDetection: OutlierDetection())
        #expect(planner.plan(endpoints).priorities.map { $0.localities.map(\.locality) } == [["us-east1/a"], ["us-west1/a"], ["us-east1/b"]])
    }

    @Test("distribute with failover (the design document's YAML): weights in the first tier, failover behind it")
    func distributeWithFailover() {
        var endpoints = ["region1/zone1", "region1/zone1", "region1/zone2", "region1/zone2", "region2/zone1", "region3/zone1"]
            .map { PlannedEndpoint(locality: $0) }
        let planner = LocalityPriorityPlanner(
            client: Locality(region: "region1", zone: "zone1"),
            setting: LocalityLbSetting(enabled: true,
                                       distribute: [.init(from: "region1/zone1/*", to: ["region1/zone1/*": 80, "region1/zone2/*": 20])],
                                       failover: [.init(from: "region1", to: "region2")]),
            outlierDetection: OutlierDetection())
        let healthy = planner.plan(endpoints)
        #expect(healthy.shares.mapValues { ($0 * 100).rounded() } == ["region1/zone1": 80, "region1/zone2": 20])
        #expect(healthy.priorities.map { $0.localities.map(\.locality) } == [["region1/zone1", "region1/zone2"], ["region2/zone1"], ["region3/zone1"]])
        for i in 0..<4 { endpoints[i].healthy = false }
        #expect(planner.plan(endpoints).shares == ["region2/zone1": 1])
    }

    /// Random set-ups (seeded): 2–4 localities across 1–3 priority levels, 1–8 endpoints each,
    /// random health, panic on or off.
    func randomCases(_ count: Int) -> [(LocalityPriorityPlanner, [PlannedEndpoint])] {
        var random = SplitMix64(seed: 2026)
        let localities = ["r/z/s", "r/z/other", "r/y", "q/x"]
        return (0..<count).map { _ in
            var endpoints: [PlannedEndpoint] = []
            for locality in localities.prefix(Int.random(in: 2...4, using: &random)) {
                for _ in 0..<Int.random(in: 1...8, using: &random) {
                    endpoints.append(PlannedEndpoint(locality: locality, healthy: Bool.random(using: &random)))
                }
            }
            let threshold = [0, 50][Int.random(in: 0...1, using: &random)]
            let planner = LocalityPriorityPlanner(client: client, setting: LocalityLbSetting(enabled: true),
                                                  outlierDetection: OutlierDetection(minHealthPercent: threshold))
            return (planner, endpoints)
        }
    }

    @Test("Property: shares sum to 1 whenever anything is routable, and priority loads always sum to 100")
    func sharesSumToOne() {
        for (planner, endpoints) in randomCases(500) {
            let plan = planner.plan(endpoints)
            #expect(plan.priorities.map(\.load).reduce(0, +) == 100)
            if !plan.shares.isEmpty { #expect(abs(plan.shares.values.reduce(0, +) - 1) < 1e-9) }
        }
    }

    @Test("Property: an endpoint losing health never moves traffic towards its own priority")
    func losingHealthNeverAttracts() {
        for (planner, endpoints) in randomCases(500) {
            guard let index = endpoints.firstIndex(where: \.healthy) else { continue }
            let before = planner.plan(endpoints)
            var sicker = endpoints
            sicker[index].healthy = false
            let after = planner.plan(sicker)
            let level = before.priorities.first { $0.localities.contains { $0.locality == endpoints[index].localityName } }!.priority
            // Total panic redistributes by host count regardless of health; outside it, the sick
            // endpoint's level can only lose load.
            if !before.panic && !after.panic {
                #expect(after.priorities[level].load <= before.priorities[level].load,
                        "\(endpoints.map { "\($0.localityName):\($0.healthy)" })")
            }
        }
    }
}
