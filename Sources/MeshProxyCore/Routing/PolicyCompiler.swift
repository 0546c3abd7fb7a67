/// Turns the gateway config and the Istio resources it loaded into the `RouteConfiguration`
/// the data path reads. Each resource kind contributes through its own step in `kinds`
/// (DestinationRule today; VirtualService, AuthorizationPolicy, … register theirs), so the
/// compiled form has one place per kind and the data path never interprets raw resources.
package enum PolicyCompiler {
    /// What the kinds' steps build up before it is frozen.
    package struct Draft: Sendable {
        package var subsets: [String: [String: [String: String]]] = [:]
        package var destinationRules: [DestinationRule] = []
        package var httpRoutes: [String: HTTPRouteTable] = [:]
        package var tcpRoutes: [String: [TCPRouteRule]] = [:]
        /// This gateway's labels and listener port, which Gateway resources select by.
        package var gatewayLabels: [String: String] = [:]
        package var listenerPort = 15443
        package var gatewayServers: GatewayServers?
        package var authorization = AuthorizationEngine()
    }

    /// One kind's compile step: reads its resources out of what the loader produced.
    package struct KindCompiler: Sendable {
        package var kind: String
        package var compile: @Sendable (_ loaded: IstioPolicyLoader.Loaded, _ draft: inout Draft) -> Void
    }

    package static let kinds: [KindCompiler] = [
        KindCompiler(kind: "DestinationRule") { loaded, draft in draft.destinationRules += loaded.destinationRules },
        KindCompiler(kind: "VirtualService") { loaded, draft in
            let merged = VirtualServiceDelegation.merge(loaded.virtualServices, origins: loaded.virtualServiceOrigins)
            draft.httpRoutes = VirtualServiceCompiler.compile(merged.services, origins: merged.origins, proxyLabels: draft.gatewayLabels)
            draft.tcpRoutes = VirtualServiceCompiler.compileTCP(merged.services, proxyLabels: draft.gatewayLabels)
        },
        KindCompiler(kind: "AuthorizationPolicy") { loaded, draft in 
            draft.authorization = AuthorizationEngine(policies: loaded.authorizationPolicies, serviceEntries: loaded.serviceEntries)
        },
        KindCompiler(kind: "Gateway") { loaded, draft in
            draft.gatewayServers = GatewayServers.compile(loaded.gateways, origins: loaded.gatewayOrigins, labels: draft.gatewayLabels, port: draft.listenerPort)
        },
    ]

    package static func compile(config: GatewayConfig, resources: IstioPolicyLoader.Loaded = .init()) -> RouteConfiguration {
        var draft = Draft()
        draft.gatewayLabels = config.effectiveLabels
        draft.listenerPort = config.listen.port
        // The topology's own subsets (a service entry's `subsets:`), for every cluster it lists.
        for service in config.everyService {
            for (name, labels) in service.subsets ?? [:] { draft.subsets[service.host, default: [:]][name] = labels }
        }
        for step in kinds { step.compile(resources, &draft) }
        var clientLabels: [String: String] = [:]
        if let network = config.network { clientLabels["topology.istio.io/network"] = network }
        var routes = RouteConfiguration(localCluster: config.cluster, client: config.locality ?? Locality(region: ""),
                                        clientLabels: clientLabels, subsets: draft.subsets, destinationRules: draft.destinationRules, httpRoutes: draft.httpRoutes,
                                        tcpRoutes: draft.tcpRoutes, gatewayServers: draft.gatewayServers,
                                        connectTimeout: config.connectTimeout, maxConnectAttempts: config.effectiveMaxConnectAttempts)
        routes.authorization = draft.authorization
        routes.externalAuthorizers = ExternalAuthorizers(resources.extensionProviders)
        routes.gatewayLabels = config.effectiveLabels
        routes.gatewayNamespace = config.effectiveNamespace
        routes.requestAuthentications = PolicyTarget.attach(resources.requestAuthentications, serviceEntries: resources.serviceEntries)
        routes.metricTagScopes = MetricTagOverrides.compile(resources.telemetries)
        routes.accessLogScopes = AccessLogPolicy.compile(resources.telemetries)
        routes.remoteJWKS = Dictionary(uniqueKeysWithValues: RemoteJWKS.uris(in: resources.requestAuthentications).map { ($0, RemoteJWKS(uri: $0)) })
        let limits = LocalRateLimits(resources.envoyFilters, gatewayLabels: config.effectiveLabels, gatewayNamespace: config.effectiveNamespace)
        routes.localRateLimits = limits.isEmpty ? nil : limits
        return routes
    }
}
