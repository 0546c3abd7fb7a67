/// Where a connection goes once its server name is known: a service port and maybe a subset.
package struct Route: Hashable, Sendable {
    package var service: ServiceKey
    package var subset: String?
    /// The subset's label selector; empty when no subset was named.
    package var selector: [String: String]
    /// What the service port speaks, when known; it decides the ALPN offered to the client.
    package var `protocol`: ServiceProtocol? = nil

    /// The SNI a gateway sends when it carries this route to a peer gateway: always Istio's form,
    /// so the peer needs no knowledge of how the client spelled it.
    package var upstreamServerName: ServerName {
        .istio(host: service.host, port: service.port, subset: subset)
    }

    /// Envoy's name for the upstream cluster (`%UPSTREAM_CLUSTER%`, `cluster_name` labels).
    package var envoyClusterName: String { upstreamServerName.envoyClusterName }
}

/// Everything the gateway was told about routing, compiled once (by `PolicyCompiler`) from the
/// gateway config and the Istio resources: subsets, DestinationRules, defaults. Immutable; a
/// reload swaps it whole while `ClusterManager`'s live state (health, counters, cursors)
/// carries on. Envoy's route configuration, as opposed to its cluster manager.
package struct RouteConfiguration: Sendable, Equatable {
    package let localCluster: String
    /// The Gateway resources' servers on this gateway's port; nil: none select it.
    package let gatewayServers: GatewayServers?
    /// Where this gateway is: the origin of every locality plan it makes.
    package let client: Locality
    /// The client labels failover priorities compare (`topology.istio.io/network`).
    package let clientLabels: [String: String]
    /// Named subsets per host: the topology's `subsets:` and every DestinationRule's.
    package let subsets: [String: [String: [String: String]]]
    /// The DestinationRules in the order they were loaded (the first for a host wins).
    package let destinationRules: [DestinationRule]
    private let rulesByHost: [String: DestinationRule]
    /// Rules written with Istio's short host names (`reviews`), by that name.
    private let rulesByShortName: [String: DestinationRule]
    /// VirtualService `http:` routes by host (FQDN, lower-case, or `*.` wildcard).
    private let httpRoutesByHost: VirtualHosts<HTTPRouteTable>
    /// VirtualService `tls:` and `tcp:` routes by host.
    private let tcpRoutesByHost: VirtualHosts<[TCPRouteRule]>

    /// The gateway's defaults where no DestinationRule says otherwise.
    package let connectTimeout: Duration
    package let maxConnectAttempts: Int
    /// The AuthorizationPolicies this gateway loaded, and the labels and namespace they select
    /// the gateway by.
    package var authorization = AuthorizationEngine()
    /// The mesh config's ext-authz providers, which CUSTOM policies name.
    package var externalAuthorizers = ExternalAuthorizers()
    package var gatewayLabels: [String: String] = [:]
    package var gatewayNamespace = "istio-system"
    /// `envoy.filters.http.local_ratelimit` from EnvoyFilters: the gateway's own, and the
    /// inbound ones of the workloads it delivers to; nil: none.
    package var localRateLimits: LocalRateLimits?
    /// Every RequestAuthentication loaded; which apply is decided per route.
    package var requestAuthentications: [RequestAuthentication] = []
    /// The Telemetry resources' tag overrides on the HTTP metrics, compiled (`metricTags(for:)`).
    package var metricTagScopes: [MetricTagOverrides.Scoped] = []
    /// The Telemetry resources' access-log rules, compiled (`accessLogPolicies(for:endpoints:)`).
    package var accessLogScopes: [AccessLogPolicy.Scoped] = []
    /// Their network jwksUris by URI, filled by the gateway's fetcher.
    package var remoteJWKS: [String: RemoteJWKS] = [:]
    /// Tokens verified at this gateway, for every route (state: not compared).
    package var verifiedTokens: VerifiedTokens? = VerifiedTokens()

    package init(localCluster: String, client: Locality = Locality(region: ""), clientLabels: [String: String] = [:],
                 subsets: [String: [String: [String: String]]] = [:], destinationRules: [DestinationRule] = [],
                 httpRoutes: [String: HTTPRouteTable] = [:], tcpRoutes: [String: [TCPRouteRule]] = [:], gatewayServers: GatewayServers? = nil,
                 connectTimeout: Duration = .seconds(5), maxConnectAttempts: Int = 3) {
        self.localCluster = localCluster
        self.gatewayServers = gatewayServers
        self.tcpRoutesByHost = VirtualHosts(tcpRoutes)
        self.client = client
        self.clientLabels = clientLabels
        self.destinationRules = destinationRules
        self.connectTimeout = connectTimeout
        self.maxConnectAttempts = maxConnectAttempts
        httpRoutesByHost = VirtualHosts(httpRoutes)
        var byHost: [String: DestinationRule] = [:]
        var byShortName: [String: DestinationRule] = [:]
        var subsets = subsets
        for rule in destinationRules {
            if rule.host.contains(".") {
                if byHost[rule.host] == nil { byHost[rule.host] = rule }
            } else if byShortName[rule.host] == nil {
                byShortName[rule.host] = rule
            }
        }
        rulesByHost = byHost
        rulesByShortName = byShortName
        // A DestinationRule's subsets are routable names too (`outbound_.8080_.v2_.host`); a
        // subset the topology names already keeps the topology's labels. Short-name rules give
        // theirs to whichever FQDN they match, at lookup.
        for rule in destinationRules where rule.host.contains(".") {
            for subset in rule.subsets ?? [] where subsets[rule.host]?[subset.name] == nil {
                subsets[rule.host, default: [:]][subset.name] = subset.labels ?? [:]
            }
        }
        self.subsets = subsets
    }

    /// The DestinationRule for `host`: an exact host first, else Istio's short name matching
    /// the FQDN's first label. Two dictionary probes.
    package func rule(for host: String) -> DestinationRule? {
        if let exact = rulesByHost[host] { return exact }
        guard let dot = host.firstIndex(of: ".") else { return rulesByShortName[host] }
        return rulesByShortName[String(host[..<dot])]
    }

    /// The VirtualService routes for a request's host (`Host` / `:authority` without its port):
    /// exact first, then the longest `*.` suffix, then `*`. Nil when no VirtualService names it.
    package func httpRoutes(for authority: String) -> HTTPRouteTable? {
        // Once per request: bytes, not Characters, and no lower-cased copy of a lower-case name.
        var host = Substring(authority)
        let digits = UInt8(ascii: "0")...UInt8(ascii: "9")
        if let colon = host.utf8.lastIndex(of: UInt8(ascii: ":")), host.utf8.last != UInt8(ascii: "]"),
           host.utf8[host.utf8.index(after: colon)...].allSatisfy(digits.contains) {
            host = host[..<colon]
        }
        let name = host.utf8.contains(where: (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains) ? host.lowercased() : String(host)
        return httpRoutesByHost[name]
    }

    /// The first `tls:` or `tcp:` route for a connection to `service` from a client in
    /// `sourceNamespace` (the service's own host, else the longest `*.` wildcard covering it, as
    /// for HTTP), and the destination `random` draws from it.
    package func tcpRoute(for service: ServiceKey, sourceNamespace: String?, random: UInt64) -> (rule: TCPRouteRule, destination: HTTPDestination)? {
        guard let rules = tcpRoutesByHost[service.host] else { return nil }
        for rule in rules where rule.holds(port: service.port, sourceNamespace: sourceNamespace) {
            guard let destination = HTTPDestination.pick(rule.destinations, random: random) else { return nil }
            return (rule, destination)
        }
        return nil
    }

    package var hasTCPRoutes: Bool { !tcpRoutesByHost.isEmpty }

    /// Whether any VirtualService routes HTTP here (the HTTP path is taken only then, or for
    /// HTTP services).
    package var hasHTTPRoutes: Bool { !httpRoutesByHost.isEmpty }

    /// The labels of `subset` of `host`, when it is defined: the topology's or an exact-host
    /// rule's (compiled into `subsets`), else a short-name rule's. One subset, without building
    /// the host's whole table: route resolution asks this per connection.
    package func selector(host: String, subset: String) -> [String: String]? {
        if let labels = subsets[host]?[subset] { return labels }
        return rule(for: host)?.subsets?.first { $0.name == subset }.map { $0.labels ?? [:] }
    }

    /// Every subset defined for `host`, by the same two sources as `selector`, for planning.
    package func subsets(of host: String) -> [String: [String: String]] {
        var result = subsets[host] ?? [:]
        for subset in rule(for: host)?.subsets ?? [] where result[subset.name] == nil {
            result[subset.name] = subset.labels ?? [:]
        }
        return result
    }

    /// The traffic policy for one service port and subset, merged as Istio merges it.
    package func trafficPolicy(for service: ServiceKey, subset: String?) -> TrafficPolicy {
        rule(for: service.host)?.policy(port: service.port, subset: subset) ?? TrafficPolicy()
    }

    package enum Resolution: Equatable, Sendable {
        case route(Route)
        /// Envoy's `NR`: no filter chain for this name. `reason` goes in the log line.
        case noRoute(reason: String)
    }

    /// The route for a server name against the services the mesh serves now. Dictionary probes.
    package func resolve(_ name: ServerName, in services: some ServiceDirectory) -> Resolution {
        let ports = services.ports(of: name.host)
        guard !ports.isEmpty else {
            // A name no service has, under a `tls:` route (a `*.` wildcard in sniHosts, as a
            // gateway's filter chain matches it): the route picks the destination, at the port
            // its match names (any, without one).
            if let rules = tcpRoutesByHost[name.host], !rules.isEmpty {
                let port = name.port ?? rules.lazy.flatMap(\.matches).compactMap(\.port).first ?? 0
                return .route(Route(service: ServiceKey(host: name.host, port: port), subset: nil, selector: [:]))
            }
            return .noRoute(reason: "no service '\(name.host)' in the mesh")
        }
        let port: Int
        if let requested = name.port {
            guard ports.contains(requested) else {
                return .noRoute(reason: "service '\(name.host)' has no port \(requested) (ports: \(ports.map(String.init).joined(separator: ", ")))")
            }
            port = requested
        } else {
            // A plain host name means the service's port; with several, the lowest, so the
            // choice is stable. Clients that need another port use the Istio form.
            port = ports[0]
        }
        var selector: [String: String] = [:]
        if let subset = name.subset {
            guard let labels = self.selector(host: name.host, subset: subset) else {
                return .noRoute(reason: "service '\(name.host)' has no subset '\(subset)'")
            }
            selector = labels
        }
        let service = ServiceKey(host: name.host, port: port)
        return .route(Route(service: service, subset: name.subset, selector: selector, protocol: services.protocol(of: service)))
    }

    /// What the data path does with `route` for traffic from `origin`: retries, timeouts and
    /// limits from the route's DestinationRule, else the gateway's defaults.
    package func action(for route: Route, origin: TrafficOrigin) -> RouteAction {
        let connectionPool = trafficPolicy(for: route.service, subset: route.subset).connectionPool
        let pool = connectionPool?.tcp
        var action = RouteAction(route: route, origin: origin, retry: .connectAttempts(maxConnectAttempts),
                                 connectTimeout: pool?.connectTimeout?.duration ?? connectTimeout,
                                 keepalive: pool?.tcpKeepalive, maxConnections: pool?.maxConnections)
        if let http = connectionPool?.http {
            action.httpLimits = http.limits
            action.maxRequestsPerConnection = http.maxRequestsPerConnection.flatMap { $0 > 0 ? $0 : nil }
            action.upstreamIdleTimeout = http.idleTimeout.map(\.duration).flatMap { $0 > .zero ? $0 : nil }
            action.upstreamProtocol = http.useClientProtocol == true ? .asTheClient : http.h2UpgradePolicy == "UPGRADE" ? .upgradeToHTTP2 : .byService
            action.maxConcurrentStreams = http.maxConcurrentStreams.flatMap { $0 > 0 ? $0 : nil }
        }
        return action
    }
}

/// The services the mesh serves right now, as route resolution needs them. `ClusterManager`'s
/// live view provides it; routes only name services, as Envoy's routes name clusters.
package protocol ServiceDirectory {
    /// Every port of `host` served anywhere in the mesh, lowest first.
    func ports(of host: String) -> [Int]
    /// What the service port speaks, when a config or a peer's catalog said so.
    func `protocol`(of service: ServiceKey) -> ServiceProtocol?
}

/// Values by VirtualService host, found as Envoy finds a virtual host: the exact name first,
/// then the longest `*.` suffix covering it, then `*`.
struct VirtualHosts<Value: Sendable & Equatable>: Sendable, Equatable {
    private let exact: [String: Value]
    /// `*.suffix` hosts as their suffix (`.example.com`; empty for `*`), longest first.
    private let wildcards: [(suffix: String, value: Value)]

    init(_ byHost: [String: Value]) {
        exact = byHost.filter { !$0.key.hasPrefix("*") }
        wildcards = byHost.filter { $0.key.hasPrefix("*") }
            .map { (String($0.key.dropFirst()), $0.value) }
            .sorted { ($0.suffix.count, $0.suffix) > ($1.suffix.count, $1.suffix) }
    }

    /// `name` lower-case, without a port.
    subscript(name: String) -> Value? {
        if let value = exact[name] { return value }
        return wildcards.first { $0.suffix.isEmpty || name.hasSuffix($0.suffix) }?.value
    }

    var isEmpty: Bool { exact.isEmpty && wildcards.isEmpty }

    static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.exact == rhs.exact && lhs.wildcards.elementsEqual(rhs.wildcards) { $0.suffix == $1.suffix && $0.value == $1.value }
    }
}
