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

    /// In this cluster: the gateway is the last hop before the workload.
    package var isLocal: Bool {
        if case .local = self { return true }
        return false
    }

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
/// priority loads and locality shares once per change of a service's inputs; each new
/// connection then takes the locality its position in a low-discrepancy sequence falls on (so
/// any run of connections matches the shares closely, with no random source), an endpoint there
/// round robin, and the rest of the plan in priority order as fallbacks for failed connects.
/// Remote localities are reached through their cluster's alive gateways, which pick among their
/// own endpoints. A pure value: `ClusterManager` holds the live one.
package struct EndpointPicker: Sendable, ServiceDirectory {
    /// Everything a plan is made from.
    package struct Inputs: Sendable, Equatable {
        package var routes: RouteConfiguration
        package var endpoints: MeshEndpoints
        /// Local endpoints outlier detection has ejected, per service: unhealthy to the planner.
        package var ejected: [ServiceKey: Set<HostPort>] = [:]
        /// Peer gateways this gateway cannot connect to right now: not used, as if not alive.
        package var unreachableGateways: Set<String> = []
        /// Drill faults in force: endpoints they cover are out of the plan.
        package var blackholes: [Blackhole] = []

        package init(routes: RouteConfiguration, endpoints: MeshEndpoints, ejected: [ServiceKey: Set<HostPort>] = [:],
                     unreachableGateways: Set<String> = [], blackholes: [Blackhole] = []) {
            self.routes = routes; self.endpoints = endpoints; self.ejected = ejected
            self.unreachableGateways = unreachableGateways; self.blackholes = blackholes
        }
    }

    package private(set) var inputs: Inputs
    /// Every port of a host served anywhere in the mesh, lowest first: route resolution's probe.
    private var portsByHost: [String: [Int]]
    private var plans: [ServiceKey: [Variant: RoutePlan]] = [:]
    /// The services the last change planned again (all of them for a new picker): what a
    /// change cost, for the log and for tests.
    package private(set) var replannedServices: Set<ServiceKey> = []

    /// One plan of a service: per subset, and per origin (a peer gateway's traffic stays local).
    struct Variant: Hashable, Sendable {
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
        /// `loadBalancer.simple`: how an endpoint is chosen inside the chosen locality.
        var simple: LoadBalancerSettings.Simple
    }

    package init(_ inputs: Inputs) {
        self.inputs = inputs
        portsByHost = inputs.endpoints.portsByHost()
        replannedServices = Self.services(inputs)
        for service in replannedServices { plans[service] = Self.plans(for: service, inputs) }
    }

    package init(endpoints: MeshEndpoints, routes: RouteConfiguration, ejected: [ServiceKey: Set<HostPort>] = [:],
                 unreachableGateways: Set<String> = [], blackholes: [Blackhole] = []) {
        self.init(Inputs(routes: routes, endpoints: endpoints, ejected: ejected,
                         unreachableGateways: unreachableGateways, blackholes: blackholes))
    }

    /// The same picker with `change` applied to its inputs. Only the services whose own inputs
    /// changed are planned again (an ejection replans one service, a gateway leaving replans
    /// the services of its cluster); every other plan is kept as it is.
    package func replanned(_ change: (inout Inputs) -> Void) -> EndpointPicker {
        var next = self
        change(&next.inputs)
        next.replannedServices = []
        guard next.inputs != inputs else { return next }
        if next.inputs.endpoints != inputs.endpoints { next.portsByHost = next.inputs.endpoints.portsByHost() }
        let everything = next.inputs.routes.client != inputs.routes.client || next.inputs.routes.clientLabels != inputs.routes.clientLabels
        let before = Self.services(inputs), after = Self.services(next.inputs)
        for gone in before.subtracting(after) { next.plans[gone] = nil }
        for service in after where everything || !before.contains(service)
            || Self.planInputs(of: service, inputs) != Self.planInputs(of: service, next.inputs) {
            next.plans[service] = Self.plans(for: service, next.inputs)
            next.replannedServices.insert(service)
        }
        return next
    }

    package func ports(of host: String) -> [Int] { portsByHost[host] ?? [] }

    package func `protocol`(of service: ServiceKey) -> ServiceProtocol? { inputs.endpoints.protocols[service] }

    /// What the data plane does for this service now: the `/v1/plan` answer.
    package func plan(for service: ServiceKey, subset: String?, origin: TrafficOrigin = .client) -> LocalityPlan? {
        plans[service]?[Variant(subset: subset, origin: origin)]?.plan
    }

    /// - Parameters:
    ///   - cursor: a per-service counter the shell increments on every connection.
    ///   - active: open connections per upstream address, for LEAST_REQUEST.
    package func candidates(for route: Route, origin: TrafficOrigin, cursor: Int,
                            active: (HostPort) -> Int = { _ in 0 }) -> [PlannedTarget] {
        guard let routePlan = plans[route.service]?[Variant(subset: route.subset, origin: origin)],
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

    /// Every service port served anywhere in the mesh.
    static func services(_ inputs: Inputs) -> Set<ServiceKey> {
        Set(inputs.endpoints.clusters.values.flatMap(\.services.keys))
    }

    /// What one service's plans are made from, so a change elsewhere leaves them alone.
    struct ServicePlanInputs: Equatable {
        var rule: DestinationRule?
        var subsets: [String: [String: String]]
        /// Per cluster serving it: the usable gateways and the endpoints no fault covers.
        var clusters: [String: [GatewayAddress]]
        var endpoints: [String: [Endpoint]]
        var ejected: Set<HostPort>?
    }

    /// What one service's plans are made from: also what `makePlan` walks, so a change that
    /// leaves it equal leaves the plans equal.
    static func planInputs(of service: ServiceKey, _ inputs: Inputs) -> ServicePlanInputs {
        var result = ServicePlanInputs(rule: inputs.routes.rule(for: service.host), subsets: inputs.routes.subsets(of: service.host),
                                       clusters: [:], endpoints: [:], ejected: inputs.ejected[service])
        for cluster in inputs.endpoints.clusters.values {
            guard let endpoints = cluster.services[service] else { continue }
            result.clusters[cluster.name] = cluster.gateways.filter { !inputs.unreachableGateways.contains($0.name) }
            result.endpoints[cluster.name] = endpoints.filter { endpoint in
                !inputs.blackholes.contains { $0.covers(cluster: cluster.name, locality: endpoint.locality) }
            }
        }
        return result
    }

    /// Every plan of one service: each subset (and none), for clients and for peer gateways.
    static func plans(for service: ServiceKey, _ inputs: Inputs) -> [Variant: RoutePlan] {
        var result: [Variant: RoutePlan] = [:]
        let facts = planInputs(of: service, inputs)
        for subset in [nil] + facts.subsets.keys.sorted().map(Optional.some) {
            for origin in [TrafficOrigin.client, .peerGateway] {
                result[Variant(subset: subset, origin: origin)] = makePlan(service: service, subset: subset,
                                                                           selector: subset.flatMap { facts.subsets[$0] } ?? [:],
                                                                           origin: origin, facts, inputs)
            }
        }
        return result
    }

    private static func makePlan(service: ServiceKey, subset: String?, selector: [String: String], origin: TrafficOrigin,
                                 _ facts: ServicePlanInputs, _ inputs: Inputs) -> RoutePlan {
        let policy = inputs.routes.trafficPolicy(for: service, subset: subset)
        var planned: [PlannedEndpoint] = []
        var targets: [String: [PlannedTarget]] = [:]
        var healthyTargets: [String: [PlannedTarget]] = [:]
        for (clusterName, gateways) in facts.clusters.sorted(by: { $0.key < $1.key }) {
            let isLocal = clusterName == inputs.endpoints.localCluster
            guard isLocal || origin == .client else { continue }
            // Endpoints behind a network with no usable gateway are out of the plan, as Istio
            // drops them from EDS: they are unreachable, not merely unhealthy.
            guard isLocal || !gateways.isEmpty else { continue }
            let matching = (facts.endpoints[clusterName] ?? []).filter { $0.matches(selector) }
            for endpoint in matching {
                let locality = endpoint.locality?.description ?? ""
                let healthy = !isLocal || !(facts.ejected?.contains(endpoint.address) ?? false)
                planned.append(PlannedEndpoint(locality: locality, labels: endpoint.labels ?? [:], healthy: healthy))
                let serverName = Route(service: service, subset: subset, selector: selector).upstreamServerName
                let reach: [UpstreamTarget] = isLocal
                    ? [.local(endpoint)]
                    : gateways.map { .peerGateway(cluster: clusterName, gateway: $0, serverName: serverName) }
                for target in reach {
                    let plannedTarget = PlannedTarget(target: target, locality: locality, priority: 0)
                    if !targets[locality, default: []].contains(plannedTarget) { targets[locality, default: []].append(plannedTarget) }
                    if healthy, !healthyTargets[locality, default: []].contains(plannedTarget) {
                        healthyTargets[locality, default: []].append(plannedTarget)
                    }
                }
            }
        }
        let planner = LocalityPriorityPlanner(client: inputs.routes.client, clientLabels: inputs.routes.clientLabels,
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
        return RoutePlan(plan: plan, slots: slots, localities: localities, order: order,
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
