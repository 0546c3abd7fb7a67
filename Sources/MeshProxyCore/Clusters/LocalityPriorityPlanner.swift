/// One endpoint as the planner sees it: where it runs, its labels and whether it is healthy.
package struct PlannedEndpoint: Sendable, Equatable {
    /// The locality as the user wrote it; plans report shares under this name.
    package var localityName: String
    package var locality: Locality
    package var labels: [String: String]
    package var healthy: Bool

    package init(locality: String, labels: [String: String] = [:], healthy: Bool = true) {
        self.localityName = locality
        self.locality = Locality(parsing: locality) ?? Locality(region: locality)
        self.labels = labels
        self.healthy = healthy
    }
}

/// Where requests from one client locality go: Envoy's priority levels with their health and
/// load, and each locality's share of all requests.
package struct LocalityPlan: Sendable, Equatable, Codable {
    package struct LocalityShare: Sendable, Equatable, Codable {
        package var locality: String
        package var healthy: Int
        package var total: Int
        /// Fraction of all requests this locality receives.
        package var share: Double
    }
    package struct Level: Sendable, Equatable, Codable {
        package var priority: Int
        /// Envoy's health score: min(100, ⌊OF × healthy / total⌋).
        package var health: Int
        /// Percent of requests the level receives (Envoy's priority load; sums to 100).
        package var load: Int
        /// The level picks from all its hosts regardless of health (Envoy's panic mode).
        package var panic: Bool
        package var localities: [LocalityShare]
    }
    /// Every level is in panic: load is split by host count (Envoy's total panic).
    package var panic: Bool
    package var priorities: [Level]
    /// Locality (as written) → fraction of all requests; empty when nothing is routable.
    package var shares: [String: Double]
}

/// Turns Istio's `localityLbSetting` and outlier-detection presence into Envoy priorities and
/// locality weights exactly as istiod does (pilot/pkg/networking/core/loadbalancer), then
/// computes what Envoy does with them (load_balancer_impl.cc, locality_wrr.cc) with Envoy's
/// integer arithmetic. Pure: the same inputs give the same plan.
///
/// One extension: Istio rejects `distribute` together with `failover`; EastWest accepts it with
/// these semantics — the localities the matching `distribute` rule names form priority 0 with
/// its weights, every other locality is ordered behind them by the failover rules.
package struct LocalityPriorityPlanner: Sendable {
    package var client: Locality
    /// Labels of the client proxy besides its locality (e.g. `topology.istio.io/network`), for
    /// `failoverPriority`.
    package var clientLabels: [String: String]
    package var setting: LocalityLbSetting?
    package var outlierDetection: OutlierDetection?
    /// Envoy's overprovisioning factor in percent (default 140).
    package var overprovisioningFactor: Int

    package init(client: Locality, clientLabels: [String: String] = [:], setting: LocalityLbSetting?,
                 outlierDetection: OutlierDetection?, overprovisioningFactor: Int = 140) {
        self.client = client; self.clientLabels = clientLabels; self.setting = setting
        self.outlierDetection = outlierDetection; self.overprovisioningFactor = overprovisioningFactor
    }

    /// Envoy's `healthy_panic_threshold`: Istio sets it to `minHealthPercent` (default 0, panic
    /// off) when outlier detection is configured; otherwise Envoy's 50 % stays.
    package var panicThreshold: Int {
        outlierDetection.map { min(100, max(0, $0.minHealthPercent ?? 0)) } ?? 50
    }

    /// Istio only turns locality failover on when outlier detection is configured.
    package var failoverEnabled: Bool { outlierDetection != nil }

    // MARK: - Istio: priorities and weights

    /// Endpoints of one locality at one priority (Envoy's LocalityLbEndpoints).
    struct Group {
        var name: String
        var locality: Locality
        var endpoints: [PlannedEndpoint]
        var weight: Int
        var priority: Int
    }

    func groups(_ endpoints: [PlannedEndpoint]) -> (groups: [Group], localityWeighted: Bool) {
        var order: [String] = []
        var byName: [String: [PlannedEndpoint]] = [:]
        for endpoint in endpoints {
            if byName[endpoint.localityName] == nil { order.append(endpoint.localityName) }
            byName[endpoint.localityName, default: []].append(endpoint)
        }
        var groups = order.map { Group(name: $0, locality: byName[$0]![0].locality, endpoints: byName[$0]!, weight: byName[$0]!.count, priority: 0) }
        guard let setting = setting ?? Optional(LocalityLbSetting()), setting.enabled ?? true else { return (groups, false) }
        let failover = setting.failover ?? []
        let failoverPriority = setting.failoverPriority ?? []

        if let rule = setting.distribute?.first(where: { Self.matches(pattern: $0.from, client) }) {
            var claimed = Set<Int>()
            for (pattern, weight) in rule.to.sorted(by: { $0.key < $1.key }) {
                let matching = groups.indices.filter { !claimed.contains($0) && Self.matches(pattern: pattern, groups[$0].locality) }
                let total = matching.reduce(0) { $0 + groups[$1].weight }
                guard total > 0 else { continue }
                for i in matching {
                    claimed.insert(i)
                    // ceil(original × weight / total), in integers.
                    groups[i].weight = (groups[i].weight * weight + total - 1) / total
                }
            }
            if failoverEnabled, !failover.isEmpty || !failoverPriority.isEmpty {
                // The EastWest extension: the distributed localities first, failover behind.
                var rest = groups.indices.filter { !claimed.contains($0) }.map { groups[$0] }
                rest = failoverPriorities(rest, failover: failover, failoverPriority: failoverPriority)
                let first = groups.indices.filter { claimed.contains($0) }.map { group in
                    var g = groups[group]; g.priority = 0; return g
                }
                return (Self.renumbered(first + rest.map { var g = $0; g.priority += 1; return g }), true)
            }
            return (groups.indices.filter { claimed.contains($0) }.map { groups[$0] }, true)
        }
        guard failoverEnabled else { return (groups, false) }
        groups = failoverPriorities(groups, failover: failover, failoverPriority: failoverPriority)
        return (Self.renumbered(groups), !failover.isEmpty || !failoverPriority.isEmpty)
    }

    /// `failoverPriority` labels (split per endpoint), then locality failover on top.
    func failoverPriorities(_ groups: [Group], failover: [LocalityLbSetting.Failover], failoverPriority: [String]) -> [Group] {
        var result = groups
        let clientLabels = Self.topologyLabels(client).merging(self.clientLabels) { _, mine in mine }
        if !failoverPriority.isEmpty {
            result = []
            for group in groups {
                var split: [Int: [PlannedEndpoint]] = [:]
                for endpoint in group.endpoints {
                    let labels = Self.topologyLabels(endpoint.locality).merging(endpoint.labels) { _, own in own }
                    split[Self.labelPriority(failoverPriority, client: clientLabels, endpoint: labels), default: []].append(endpoint)
                }
                for (priority, endpoints) in split.sorted(by: { $0.key < $1.key }) {
                    result.append(Group(name: group.name, locality: group.locality, endpoints: endpoints, weight: endpoints.count, priority: priority))
                }
            }
            guard !failover.isEmpty else { return result }
        }
        let rule = failover.first { $0.from == client.region }
        return result.map { group in
            var g = group
            g.priority = group.priority * 5 + Self.localityPriority(client: client, endpoint: group.locality, rule: rule)
            return g
        }
    }

    /// istio util `LbPriority`: 0 same subzone, 1 same zone, 2 same region, 3 other region,
    /// 4 other region that is not the failover target of the client's region.
    static func localityPriority(client: Locality, endpoint: Locality, rule: LocalityLbSetting.Failover?) -> Int {
        if client.region == endpoint.region {
            if client.zone == endpoint.zone { return client.subzone == endpoint.subzone ? 0 : 1 }
            return 2
        }
        if let rule, endpoint.region != rule.to { return 4 }
        return 3
    }

    /// istio `applyFailoverPriorities`: the number of list entries left after the first one
    /// whose value differs; an entry `key=value` compares against that value.
    static func labelPriority(_ list: [String], client: [String: String], endpoint: [String: String]) -> Int {
        for (index, entry) in list.enumerated() {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            let expected = parts.count == 2 ? parts[1] : client[parts[0]]
            if expected == nil || endpoint[parts[0]] != expected { return list.count - index }
        }
        return 0
    }

    static func topologyLabels(_ locality: Locality) -> [String: String] {
        ["topology.kubernetes.io/region": locality.region, "topology.kubernetes.io/zone": locality.zone,
         "topology.istio.io/subzone": locality.subzone]
    }

    /// Distinct priorities renumbered 0, 1, 2, … without gaps.
    static func renumbered(_ groups: [Group]) -> [Group] {
        let levels = Array(Set(groups.map(\.priority))).sorted()
        let index = Dictionary(uniqueKeysWithValues: levels.enumerated().map { ($1, $0) })
        return groups.map { var g = $0; g.priority = index[$0.priority]!; return g }
    }

    /// istio util `LocalityMatch`: region must match (or be `*`); an empty or `*` zone or
    /// subzone in the pattern matches anything.
    package static func matches(pattern: String, _ locality: Locality) -> Bool {
        let parts = pattern.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let region = parts.first ?? "", zone = parts.count > 1 ? parts[1] : "", subzone = parts.count > 2 ? parts[2] : ""
        guard region == "*" || region == locality.region else { return false }
        guard zone.isEmpty || zone == "*" || zone == locality.zone else { return false }
        return subzone.isEmpty || subzone == "*" || subzone == locality.subzone
    }

    // MARK: - Envoy: priority load, panic, locality shares

    package func plan(_ endpoints: [PlannedEndpoint]) -> LocalityPlan {
        let (groups, localityWeighted) = groups(endpoints)
        let levelCount = (groups.map(\.priority).max() ?? -1) + 1
        let levels = (0..<levelCount).map { p in groups.filter { $0.priority == p } }
        let hosts = levels.map { $0.reduce(0) { $0 + $1.endpoints.count } }
        let healthy = levels.map { $0.reduce(0) { $0 + $1.endpoints.filter(\.healthy).count } }
        let of = overprovisioningFactor
        // recalculatePerPriorityState: integer arithmetic.
        let health = zip(hosts, healthy).map { total, up in total == 0 ? 0 : min(100, of * up / total) }
        let nta = min(100, health.reduce(0, +))
        let threshold = panicThreshold
        // recalculatePerPriorityPanic: the healthy percentage without the overprovisioning factor.
        let panic = zip(hosts, healthy).map { total, up -> Bool in
            guard nta != 100 else { return false }
            let percent = total == 0 ? 0 : 100.0 * Double(up) / Double(total)
            return percent < Double(threshold)
        }
        let totalPanic = levelCount > 0 && panic.allSatisfy { $0 }
        var load = Array(repeating: 0, count: levelCount)
        var routable = true
        if totalPanic {
            // recalculateLoadInTotalPanic: by host count, remainder to the first non-empty level.
            let all = hosts.reduce(0, +)
            if all == 0 {
                load[0] = 100
                routable = false
            } else {
                for p in 0..<levelCount { load[p] = 100 * hosts[p] / all }
                if let first = hosts.firstIndex(where: { $0 > 0 }) { load[first] += 100 - load.reduce(0, +) }
            }
        } else if nta == 0 {
            if levelCount > 0 { load[0] = 100 }
            routable = false
        } else {
            // distributeLoad: floor each level's share of the total availability, remainder to
            // the first level with health.
            var left = 100
            for p in 0..<levelCount {
                load[p] = min(left, health[p] * 100 / nta)
                left -= load[p]
            }
            if left > 0, let first = health.firstIndex(where: { $0 > 0 }) { load[first] += left }
        }

        var shares: [String: Double] = [:]
        var planned: [LocalityPlan.Level] = []
        for p in 0..<levelCount {
            let inPanic = totalPanic || panic[p]
            let weights: [Double] = levels[p].map { group in
                let up = group.endpoints.filter(\.healthy).count
                if inPanic { return Double(group.endpoints.count) }  // all hosts, no locality weights
                if localityWeighted {
                    // locality_wrr.cc effectiveLocalityWeight, in floating point.
                    return Double(group.weight) * min(1.0, Double(of) / 100.0 * Double(up) / Double(group.endpoints.count))
                }
                return Double(up)  // no locality weighting: balanced over healthy hosts
            }
            let sum = weights.reduce(0, +)
            var localities: [LocalityPlan.LocalityShare] = []
            for (group, weight) in zip(levels[p], weights) {
                let share = routable && sum > 0 ? Double(load[p]) / 100.0 * weight / sum : 0
                localities.append(.init(locality: group.name, healthy: group.endpoints.filter(\.healthy).count,
                                        total: group.endpoints.count, share: share))
                if share > 0 { shares[group.name, default: 0] += share }
            }
            planned.append(.init(priority: p, health: health[p], load: load[p], panic: inPanic, localities: localities))
        }
        return LocalityPlan(panic: totalPanic, priorities: planned, shares: shares)
    }
}
