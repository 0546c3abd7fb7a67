import Logging
import NIOCore
import Synchronization

/// What the data path works with: the compiled routes (swapped whole; a connection reads them
/// once, when it is accepted, and never sees a half-applied change), the live clusters, TLS, and
/// where its observations go. Built once, complete, before the listener opens.
package final class DataPlane: Sendable {
    package let config: GatewayConfig
    package let tls: GatewayTLS
    package let clusters: ClusterManager
    package let outliers: OutlierTracker
    package let metrics: TCPMetrics
    package let logger: Logger
    /// Told when a connect to a peer gateway fails on the data path (gateway name), so the
    /// failure detector probes it now instead of at its turn.
    package let peerGatewayUnreachable: @Sendable (String) -> Void
    /// How upstream connections are opened: the data path's one way out (the network here;
    /// tests hand in channels of their own).
    package let dialer: UpstreamDialer
    /// HTTP upstream connections shared per event loop: kept HTTP/1.1, pooled HTTP/2 to peers.
    package let httpUpstreams: HTTPUpstreamPool
    /// The HTTP access-log format (`accessLogFormat`, else Istio's default).
    package let accessLog: AccessLogFormat
    private let configuration: Mutex<RouteConfiguration>

    package init(config: GatewayConfig, tls: GatewayTLS, routes: RouteConfiguration, clusters: ClusterManager,
                 outliers: OutlierTracker, logger: Logger, peerGatewayUnreachable: @escaping @Sendable (String) -> Void = { _ in },
                 dialer: UpstreamDialer? = nil) {
        self.config = config
        self.tls = tls
        self.clusters = clusters
        self.outliers = outliers
        self.metrics = TCPMetrics()
        self.logger = logger
        self.peerGatewayUnreachable = peerGatewayUnreachable
        let dialer = dialer ?? .network(tls: tls, config: config)
        self.dialer = dialer
        self.httpUpstreams = HTTPUpstreamPool(dialer: dialer)
        self.accessLog = .configured(format: config.accessLogFormat, encoding: config.accessLogEncoding)
        self.configuration = Mutex(routes)
    }

    /// A connect to `target` for `service` failed: an outlier signal for a local endpoint and,
    /// for a peer gateway, a hint to the failure detector and to peer reachability.
    package func connectFailed(to target: UpstreamTarget, for service: ServiceKey) {
        switch target {
        case .peerGateway(_, let gateway, _):
            peerGatewayUnreachable(gateway.name)
            outliers.peerFailed(gateway.name)
        case .local(let endpoint):
            outliers.failed(service, endpoint.address)
        }
    }

    /// A connect to `target` got through: a peer gateway is reachable again.
    package func connected(to target: UpstreamTarget) {
        if case .peerGateway(_, let gateway, _) = target { outliers.peerSucceeded(gateway.name) }
    }

    /// The route configuration new connections resolve against.
    package var routes: RouteConfiguration { configuration.withLock { $0 } }

    /// Puts a new route configuration in force (a reload): new connections use it at once,
    /// open ones keep theirs, and the clusters replan only what it changes.
    package func swap(routes: RouteConfiguration) {
        configuration.withLock { current in
            current = routes
            clusters.update { $0.routes = routes }
        }
    }
}

/// Opens one upstream connection for a route action on an event loop (the downstream's, so the
/// pair shares one isolation domain), offering a peer gateway the given ALPN.
package struct UpstreamDialer: Sendable {
    package typealias Connect = @Sendable (_ target: UpstreamTarget, _ action: RouteAction, _ applicationProtocols: [String],
                                           _ eventLoop: any EventLoop) -> EventLoopFuture<DialedUpstream>
    package var connect: Connect

    package init(connect: @escaping Connect) {
        self.connect = connect
    }

    /// TCP to local endpoints, mTLS to peer gateways, dialled from the gateway's own address.
    package static func network(tls: GatewayTLS, config: GatewayConfig) -> UpstreamDialer {
        let source = try? SocketAddress(ipAddress: config.listen.host, port: 0)
        let handshakeTimeout = config.handshakeTimeout
        return UpstreamDialer { target, action, applicationProtocols, eventLoop in
            UpstreamConnector.connect(to: target, tls: tls, connectTimeout: action.connectTimeout, handshakeTimeout: handshakeTimeout,
                                      keepalive: action.keepalive, offering: applicationProtocols, from: source, on: eventLoop)
        }
    }
}
