/// Who opened the connection: it decides how far the gateway may forward it.
package enum TrafficOrigin: Sendable, Hashable {
    /// A workload in (or outside) the mesh: any cluster's endpoints, as the plan says.
    case client
    /// Another cluster's gateway: local endpoints only, so traffic crosses at most one
    /// gateway-to-gateway hop and can never loop.
    case peerGateway
}

/// One place the gateway may try to connect a downstream connection to.
package enum UpstreamTarget: Hashable, Sendable, CustomStringConvertible {
    /// A local endpoint, dialled over plain TCP.
    case local(Endpoint)
    /// A gateway of another cluster, dialled with mTLS and Istio-form SNI.
    case peerGateway(cluster: String, gateway: GatewayAddress, serverName: ServerName)

    package var address: HostPort {
        switch self {
        case .local(let endpoint): endpoint.address
        case .peerGateway(_, let gateway, _): gateway.address
        }
    }

    package var cluster: String? {
        switch self {
        case .local: nil
        case .peerGateway(let cluster, _, _): cluster
        }
    }

    package var description: String {
        switch self {
        case .local(let endpoint): endpoint.address.description
        case .peerGateway(let cluster, let gateway, _): "\(gateway.address) (gateway \(gateway.name) of \(cluster))"
        }
    }
}

/// A target with where the plan put it.
package struct PlannedTarget: Hashable, Sendable {
    package var target: UpstreamTarget
    /// The endpoints' locality as the catalog gives it (empty when unknown).
    package var locality: String
    package var priority: Int
}

/// Chooses upstreams the way Envoy does under the service's DestinationRule: the
/// `LocalityPriorityPlanner` turns the endpoints, their health and this gateway's locality into
/// priority loads and locality shares once per snapshot; each new connection then takes the
/// locality its position in a low-discrepancy sequence falls on (so any run of connections
/// matches the shares closely, with no random source), an endpoint there round robin, and
/// the rest of the plan in priority order as fallbacks for failed connects. Remote localities
/// are reached through their cluster's alive gateways, which pick among their own endpoints.
package struct EndpointPicker: Sendable {
    package var endpoints: MeshEndpoints
    package var policies: [DestinationRule]
    package var client: Locality
    package var clientLabels: [String: String]
    /// Local endpoints outlier detection has ejected, per service: unhealthy to the planner.
    package var ejected: [ServiceKey: Set<HostPort>]
    /// Peer gateways this gateway cannot connect to right now: not used, as if not alive.
    package var unreachableGateways: Set<String>
    /// Drill faults in force: endpoints they cover are out of the plan.
    package var blackholes: [Blackhole]
    private var plans: [PlanKey: RoutePlan] = [:]

    struct PlanKey: Hashable, Sendable {
        var service: ServiceKey
        var subset: String?
        var origin: TrafficOrigin
    }

    /// The plan for one service (and subset) plus the targets behind each of its localities.
    struct RoutePlan: Sendable {
        var plan: LocalityPlan
        /// Cumulative share of requests → index into `localities`.
        var slots: [(upTo: Double, locality: Int)]
        var localities: [[PlannedTarget]]
        /// Every locality with targets, by priority then share: the order fallbacks take.
        var order: [Int]
        /// The DestinationRule's `connectionPool.tcp` for this service and subset.
        var tcp: ConnectionPoolSettings.TCP?
        /// `loadBalancer.simple`: how an endpoint is chosen inside the chosen locality.
        var simple: LoadBalancerSettings.Simple
    }

    package init(endpoints: MeshEndpoints, policies: [DestinationRule] = [], client: Locality? = nil,
                 clientLabels: [String: String] = [:], ejected: [ServiceKey: Set<HostPort>] = [:],
                unreachableGateways: Set<String> = [], blackholes: [Blackhole] = []) {
        self.endpoints = endpoints
        self.policies = policies
        self.client = client ?? Locality(region: "")
        self.clientLabels = clientLabels
        self.ejected = ejected
        self.unreachableGateways = unreachableGateways
        self.blackholes = blackholes
        for cluster in endpoints.clusters.values {
            for service in cluster.services.keys {
                var subsets: [String?] = [nil]
                subsets += (endpoints.subsets[service.host] ?? [:]).keys.sorted().map { Optional($0) }
                for subset in subsets {
                    for origin in [TrafficOrigin.client, .peerGateway] {
                        let key = PlanKey(service: service, subset: subset, origin: origin)
                        if plans[key] == nil { plans[key] = makePlan(key) }
                    }
                }
            }
        }
    }

    /// The same inputs with `change` applied, planned afresh (health changed, faults, …).
    package func replanned(_ change: (inout EndpointPicker) -> Void) -> EndpointPicker {
        var inputs = self
        change(&inputs)
        return EndpointPicker(endpoints: inputs.endpoints, policies: inputs.policies, client: inputs.client,
                              clientLabels: inputs.clientLabels, ejected: inputs.ejected,
                              unreachableGateways: inputs.unreachableGateways, blackholes: inputs.blackholes)
    }

    /// What the data plane does for this service now: the `/v1/plan` answer.
    package func plan(for service: ServiceKey, subset: String?, origin: TrafficOrigin = .client) -> LocalityPlan? {
        plans[PlanKey(service: service, subset: subset, origin: origin)]?.plan
    }

    /// `connectionPool.tcp` of the route's DestinationRule (merged for its port and subset).
    package func connectionPool(for route: Route, origin: TrafficOrigin) -> ConnectionPoolSettings.TCP? {
        plans[PlanKey(service: route.service, subset: route.subset, origin: origin)]?.tcp
    }

    /// - Parameters:
    ///   - cursor: a per-service counter the shell increments on every connection.
    ///   - active: open connections per upstream address, for LEAST_REQUEST.
    package func candidates(for route: Route, origin: TrafficOrigin, cursor: Int,
                            active: (HostPort) -> Int = { _ in 0 }) -> [PlannedTarget] {
        guard let routePlan = plans[PlanKey(service: route.service, subset: route.subset, origin: origin)],
              !routePlan.slots.isEmpty else { return [] }
        // Golden-ratio sequence: evenly spread points in [0, 1) for consecutive cursors.
        let point = (Double(UInt64(truncatingIfNeeded: cursor) % 1_000_003) * 0.618_033_988_749_894_9).truncatingRemainder(dividingBy: 1)
        let chosen = routePlan.slots.first { point < $0.upTo }?.locality ?? routePlan.slots[routePlan.slots.count - 1].locality
        var result = Self.ordered(routePlan.localities[chosen], simple: routePlan.simple, cursor: cursor, active: active)
        for index in routePlan.order where index != chosen {
            result += routePlan.localities[index].rotated(by: cursor)
        }
        return result
    }

    /// The endpoint order inside one locality: the first is the pick, the rest are fallbacks.
    static func ordered(_ targets: [PlannedTarget], simple: LoadBalancerSettings.Simple, cursor: Int,
                        active: (HostPort) -> Int) -> [PlannedTarget] {
        guard targets.count > 1 else { return targets }
        var mixer = SplitMix64(seed: UInt64(truncatingIfNeeded: cursor) &* 0x9E37_79B9_7F4A_7C15)
        switch simple {
        case .random:
            return targets.rotated(by: Int(mixer.next() % UInt64(targets.count)))
        case .leastRequest, .leastConn:
            // Envoy's power of two choices: two distinct random endpoints, the less loaded wins.
            let n = UInt64(targets.count)
            let first = Int(mixer.next() % n)
            let second = (first + 1 + Int(mixer.next() % (n - 1))) % targets.count
            let pick = active(targets[second].target.address) < active(targets[first].target.address) ? second : first
            return targets.rotated(by: pick)
        case .roundRobin, .unspecified, .passthrough:
            return targets.rotated(by: cursor)
        }
    }

    private func makePlan(_ key: PlanKey) -> RoutePlan {
        let selector = key.subset.flatMap { endpoints.subsets[key.service.host]?[$0] } ?? [:]
        let rule = policies.rule(for: key.service.host)
        let policy = rule?.policy(port: key.service.port, subset: key.subset) ?? TrafficPolicy()
        var planned: [PlannedEndpoint] = []
        var targets: [String: [PlannedTarget]] = [:]
        var healthyTargets: [String: [PlannedTarget]] = [:]
        for var cluster in endpoints.clusters.values.sorted(by: { $0.name < $1.name }) {
            cluster.gateways.removeAll { unreachableGateways.contains($0.name) }
            let isLocal = cluster.name == endpoints.localCluster
            guard isLocal || key.origin == .client else { continue }
            // Endpoints behind a network with no usable gateway are out of the plan, as Istio
            // drops them from EDS: they are unreachable, not merely unhealthy.
            guard isLocal || !cluster.gateways.isEmpty else { continue }
            let matching = (cluster.services[key.service] ?? []).filter { endpoint in
                endpoint.matches(selector) && !blackholes.contains { $0.covers(cluster: cluster.name, locality: endpoint.locality) }
            }
            for endpoint in matching {
                let locality = endpoint.locality?.description ?? ""
                let healthy = !isLocal || !(ejected[key.service]?.contains(endpoint.address) ?? false)
                planned.append(PlannedEndpoint(locality: locality, labels: endpoint.labels ?? [:], healthy: healthy))
                let serverName = Route(service: key.service, subset: key.subset, selector: selector).upstreamServerName
                let reach: [UpstreamTarget] = isLocal
                    ? [.local(endpoint)]
                    : cluster.gateways.map { .peerGateway(cluster: cluster.name, gateway: $0, serverName: serverName) }
                for target in reach {
                    let plannedTarget = PlannedTarget(target: target, locality: locality, priority: 0)
                    if !targets[locality, default: []].contains(plannedTarget) { targets[locality, default: []].append(plannedTarget) }
                    if healthy, !healthyTargets[locality, default: []].contains(plannedTarget) {
                        healthyTargets[locality, default: []].append(plannedTarget)
                    }
                }
            }
        }
        let planner = LocalityPriorityPlanner(client: client, clientLabels: clientLabels,
                                              setting: policy.loadBalancer?.localityLbSetting,
                                              outlierDetection: policy.effectiveOutlierDetection)
        let plan = planner.plan(planned)
        var localities: [[PlannedTarget]] = []
        var slots: [(upTo: Double, locality: Int)] = []
        var ranked: [(priority: Int, share: Double, index: Int)] = []
        var cumulative = 0.0
        for level in plan.priorities {
            for share in level.localities {
                // In panic a level uses all its hosts; otherwise only healthy ones.
                let pool = (level.panic ? targets[share.locality] : healthyTargets[share.locality]) ?? []
                guard !pool.isEmpty else { continue }
                let index = localities.count
                localities.append(pool.map { var t = $0; t.priority = level.priority; return t })
                ranked.append((level.priority, share.share, index))
                if share.share > 0 {
                    cumulative += share.share
                    slots.append((cumulative, index))
                }
            }
        }
        let order = ranked.sorted { ($0.priority, -$0.share, $0.index) < ($1.priority, -$1.share, $1.index) }.map(\.index)
        return RoutePlan(plan: plan, slots: slots, localities: localities, order: order, tcp: policy.connectionPool?.tcp,
                         simple: policy.loadBalancer?.simple ?? .roundRobin)
    }
}

extension Array {
    func rotated(by offset: Int) -> [Element] {
        guard count > 1 else { return self }
        let start = ((offset % count) + count) % count
        return Array(self[start...] + self[..<start])
    }
}
