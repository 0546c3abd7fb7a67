/// What route matching decided for one connection (and, with the HTTP router, one request):
/// where it goes and under which limits. Pure; the TCP proxy and the HTTP router both carry it
/// out through the same cluster code.
package struct RouteAction: Sendable, Equatable {
    package var route: Route
    /// Who sent it: a peer gateway's traffic goes to local endpoints only.
    package var origin: TrafficOrigin
    package var retry: RetryPolicy
    /// The DestinationRule's `connectTimeout` for the service, else the gateway's.
    package var connectTimeout: Duration
    package var keepalive: ConnectionPoolSettings.TCP.Keepalive?
    /// `connectionPool.tcp.maxConnections`, when set.
    package var maxConnections: Int?
    /// `connectionPool.http`'s breaker limits (none: unlimited, Istio's 2^32-1).
    package var httpLimits = CircuitBreakers.Limits()
    /// `connectionPool.http.maxRequestsPerConnection`: an HTTP/1.1 upstream connection closes
    /// after this many requests.
    package var maxRequestsPerConnection: Int?
    /// `connectionPool.http.idleTimeout`: an upstream connection without a request for this long
    /// is closed (nil: the pool's default, Envoy's 1 h).
    package var upstreamIdleTimeout: Duration?
    /// How a local endpoint of an HTTP service is spoken to: HTTP/2 with prior knowledge when the
    /// service speaks it or `h2UpgradePolicy: UPGRADE`; with `useClientProtocol`, as the client spoke.
    package var upstreamProtocol = UpstreamProtocol.byService
    /// `connectionPool.http.maxConcurrentStreams`: streams per HTTP/2 upstream connection.
    package var maxConcurrentStreams: Int?

    package enum UpstreamProtocol: Sendable, Equatable {
        case byService
        case upgradeToHTTP2
        case asTheClient
    }

    /// Whether a request goes to a local endpoint as an HTTP/2 stream.
    package func localUpstreamIsHTTP2(clientHTTP2: Bool) -> Bool {
        switch upstreamProtocol {
        case .asTheClient: clientHTTP2
        case .upgradeToHTTP2: true
        case .byService: route.protocol?.upstreamIsHTTP2 == true
        }
    }

    package init(route: Route, origin: TrafficOrigin, retry: RetryPolicy, connectTimeout: Duration,
                 keepalive: ConnectionPoolSettings.TCP.Keepalive? = nil, maxConnections: Int? = nil) {
        self.route = route; self.origin = origin; self.retry = retry; self.connectTimeout = connectTimeout
        self.keepalive = keepalive; self.maxConnections = maxConnections
    }
}
