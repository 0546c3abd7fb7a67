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
    /// The address upstream connections are dialled from: the gateway's own listen address.
    package let sourceAddress: SocketAddress?
    private let configuration: Mutex<RouteConfiguration>

    package init(config: GatewayConfig, tls: GatewayTLS, routes: RouteConfiguration, clusters: ClusterManager,
                 outliers: OutlierTracker, logger: Logger, peerGatewayUnreachable: @escaping @Sendable (String) -> Void = { _ in }) {
        self.config = config
        self.tls = tls
        self.clusters = clusters
        self.outliers = outliers
        self.metrics = TCPMetrics()
        self.logger = logger
        self.peerGatewayUnreachable = peerGatewayUnreachable
        self.sourceAddress = try? SocketAddress(ipAddress: config.listen.host, port: 0)
        self.configuration = Mutex(routes)
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
