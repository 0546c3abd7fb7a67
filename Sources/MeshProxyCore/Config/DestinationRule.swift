/// Istio's DestinationRule (networking.istio.io v1, v1beta1, v1alpha3), the parts EastWest
/// carries out. Field names and defaults are Istio's (istio/api destination_rule.proto); other
/// valid Istio fields load with a warning (see `IstioPolicyLoader`).
package struct DestinationRule: Codable, Sendable, Equatable {
    package var host: String
    package var trafficPolicy: TrafficPolicy?
    package var subsets: [Subset]?
    package var exportTo: [String]?

    package struct Subset: Codable, Sendable, Equatable {
        package var name: String
        package var labels: [String: String]?
        package var trafficPolicy: TrafficPolicy?
    }

    package init(host: String, trafficPolicy: TrafficPolicy? = nil, subsets: [Subset]? = nil) {
        self.host = host; self.trafficPolicy = trafficPolicy; self.subsets = subsets
    }

    /// The policy for one port and subset, merged the way Istio merges it: subset level over
    /// top level, port level over both, each top-level field replaced whole.
    package func policy(port: Int?, subset: String?) -> TrafficPolicy {
        var merged = trafficPolicy ?? TrafficPolicy()
        if let port, let level = merged.portLevelSettings?.first(where: { $0.port?.number == port }) { merged.overlay(level.policy) }
        if let subset, let chosen = subsets?.first(where: { $0.name == subset }), let own = chosen.trafficPolicy {
            merged.overlay(own)
            if let port, let level = own.portLevelSettings?.first(where: { $0.port?.number == port }) { merged.overlay(level.policy) }
        }
        merged.portLevelSettings = nil
        return merged
    }
}

extension [DestinationRule] {
    /// The rule for `host`; Istio's short names match their FQDN's first label.
    package func rule(for host: String) -> DestinationRule? {
        first { $0.host == host } ?? first { !$0.host.contains(".") && host.hasPrefix($0.host + ".") }
    }
}

package struct TrafficPolicy: Codable, Sendable, Equatable {
    package var loadBalancer: LoadBalancerSettings?
    package var connectionPool: ConnectionPoolSettings?
    package var outlierDetection: OutlierDetection?
    /// Not an Istio field: the design document EastWest started from writes outlier detection
    /// under this name. Read as `outlierDetection`, with a warning.
    package var circuitBreaker: OutlierDetection?
    package var portLevelSettings: [PortTrafficPolicy]?

    package init(loadBalancer: LoadBalancerSettings? = nil, connectionPool: ConnectionPoolSettings? = nil,
                 outlierDetection: OutlierDetection? = nil) {
        self.loadBalancer = loadBalancer; self.connectionPool = connectionPool; self.outlierDetection = outlierDetection
    }

    /// Outlier detection as configured under either name.
    package var effectiveOutlierDetection: OutlierDetection? { outlierDetection ?? circuitBreaker }

    mutating func overlay(_ other: TrafficPolicy) {
        if let v = other.loadBalancer { loadBalancer = v }
        if let v = other.connectionPool { connectionPool = v }
        if other.effectiveOutlierDetection != nil { outlierDetection = other.effectiveOutlierDetection; circuitBreaker = nil }
    }
}

package struct PortTrafficPolicy: Codable, Sendable, Equatable {
    package struct PortSelector: Codable, Sendable, Equatable { package var number: Int? }
    package var port: PortSelector?
    package var loadBalancer: LoadBalancerSettings?
    package var connectionPool: ConnectionPoolSettings?
    package var outlierDetection: OutlierDetection?

    var policy: TrafficPolicy { TrafficPolicy(loadBalancer: loadBalancer, connectionPool: connectionPool, outlierDetection: outlierDetection) }
}

package struct LoadBalancerSettings: Codable, Sendable, Equatable {
    package enum Simple: String, Codable, Sendable {
        case roundRobin = "ROUND_ROBIN", leastRequest = "LEAST_REQUEST", leastConn = "LEAST_CONN", random = "RANDOM"
        case passthrough = "PASSTHROUGH", unspecified = "UNSPECIFIED"
    }
    package var simple: Simple?
    package var localityLbSetting: LocalityLbSetting?
    package init(simple: Simple? = nil, localityLbSetting: LocalityLbSetting? = nil) {
        self.simple = simple; self.localityLbSetting = localityLbSetting
    }
}

/// Istio's `localityLbSetting`.
package struct LocalityLbSetting: Codable, Sendable, Equatable {
    package struct Distribute: Codable, Sendable, Equatable {
        /// `region/zone/subzone` of the client, `*` allowed.
        package var from: String
        /// Locality pattern → weight (1–100, summing to 100).
        package var to: [String: Int]
        package init(from: String, to: [String: Int]) { self.from = from; self.to = to }
    }
    package struct Failover: Codable, Sendable, Equatable {
        package var from: String
        package var to: String
        package init(from: String, to: String) { self.from = from; self.to = to }
    }
    package var enabled: Bool?
    package var distribute: [Distribute]?
    package var failover: [Failover]?
    package var failoverPriority: [String]?

    package init(enabled: Bool? = nil, distribute: [Distribute]? = nil, failover: [Failover]? = nil, failoverPriority: [String]? = nil) {
        self.enabled = enabled; self.distribute = distribute; self.failover = failover; self.failoverPriority = failoverPriority
    }
}

package struct OutlierDetection: Codable, Sendable, Equatable {
    package var consecutive5xxErrors: Int?
    package var consecutiveGatewayErrors: Int?
    package var interval: ConfigDuration?
    package var baseEjectionTime: ConfigDuration?
    package var maxEjectionPercent: Int?
    package var minHealthPercent: Int?
    package var splitExternalLocalOriginErrors: Bool?
    package var consecutiveLocalOriginFailures: Int?
    package init(consecutive5xxErrors: Int? = nil, consecutiveGatewayErrors: Int? = nil, interval: ConfigDuration? = nil,
                 baseEjectionTime: ConfigDuration? = nil, maxEjectionPercent: Int? = nil, minHealthPercent: Int? = nil,
                 splitExternalLocalOriginErrors: Bool? = nil, consecutiveLocalOriginFailures: Int? = nil) {
        self.consecutive5xxErrors = consecutive5xxErrors; self.consecutiveGatewayErrors = consecutiveGatewayErrors
        self.interval = interval; self.baseEjectionTime = baseEjectionTime
        self.maxEjectionPercent = maxEjectionPercent; self.minHealthPercent = minHealthPercent
        self.splitExternalLocalOriginErrors = splitExternalLocalOriginErrors; self.consecutiveLocalOriginFailures = consecutiveLocalOriginFailures
    }
}

package struct ConnectionPoolSettings: Codable, Sendable, Equatable {
    package struct TCP: Codable, Sendable, Equatable {
        package struct Keepalive: Codable, Sendable, Equatable {
            package var probes: Int?
            package var time: ConfigDuration?
            package var interval: ConfigDuration?
        }
        package var maxConnections: Int?
        package var connectTimeout: ConfigDuration?
        package var tcpKeepalive: Keepalive?
    }
    package var tcp: TCP?
    package var http: HTTP?

    /// `connectionPool.http`: the fields EastWest carries out (the others load with a warning).
    package struct HTTP: Codable, Sendable, Equatable {
        package var http1MaxPendingRequests: Int?
        package var http2MaxRequests: Int?
        package var maxRequestsPerConnection: Int?
        package var maxRetries: Int?
        /// How long an upstream connection may sit without a request (Envoy's cluster
        /// `common_http_protocol_options.idle_timeout`; 1 h when unset).
        package var idleTimeout: ConfigDuration?
        /// `DEFAULT` / `DO_NOT_UPGRADE` (HTTP/1.1 to an HTTP/1.1 service, Istio's mesh default) or
        /// `UPGRADE` (HTTP/2 with prior knowledge to its endpoints).
        package var h2UpgradePolicy: String?
        /// The upstream speaks whatever the client spoke (Envoy's `use_downstream_protocol_config`);
        /// wins over `h2UpgradePolicy`, as in Istio.
        package var useClientProtocol: Bool?
        /// Streams one HTTP/2 upstream connection carries at once (Envoy's `max_concurrent_streams`).
        package var maxConcurrentStreams: Int?

        package static let h2UpgradePolicies: Set<String> = ["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"]

        package init(http1MaxPendingRequests: Int? = nil, http2MaxRequests: Int? = nil, maxRequestsPerConnection: Int? = nil, maxRetries: Int? = nil) {
            self.http1MaxPendingRequests = http1MaxPendingRequests; self.http2MaxRequests = http2MaxRequests
            self.maxRequestsPerConnection = maxRequestsPerConnection; self.maxRetries = maxRetries
        }

        /// istiod's `applyConnectionPool`: only values above 0 replace the (unlimited) defaults.
        package var limits: CircuitBreakers.Limits {
            func positive(_ value: Int?) -> Int? { value.flatMap { $0 > 0 ? $0 : nil } }
            return CircuitBreakers.Limits(maxRequests: positive(http2MaxRequests), maxPending: positive(http1MaxPendingRequests),
                                          maxRetries: positive(maxRetries))
        }
    }
}
