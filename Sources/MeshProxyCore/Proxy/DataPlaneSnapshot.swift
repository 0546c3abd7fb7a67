import NIOCore
import Logging
import Synchronization

/// Everything a new downstream connection needs, frozen for one config generation: a
/// connection reads the current snapshot once, when it is accepted, and never sees a
/// half-applied change.
package struct DataPlaneSnapshot: Sendable {
    package var config: GatewayConfig
    package var tls: GatewayTLS
    package var routes: RouteTable
    package var picker: EndpointPicker
    package var cursors: RoundRobinCursors
    /// Open upstream connections per service and address (maxConnections, LEAST_REQUEST).
    package var upstreams: UpstreamConnections
    package var metrics: TCPMetrics
    package var logger: Logger
    /// Told when a connect to a peer gateway fails on the data path (gateway name), so the
    /// failure detector probes it now instead of at its turn.
    package var peerGatewayUnreachable: @Sendable (String) -> Void = { _ in }
    /// The address upstream connections are dialled from: the gateway's own listen address.
    package var sourceAddress: SocketAddress?
    /// Where connect results to local endpoints go (outlier detection); nil when off.
    package var outliers: OutlierTracker?

    package init(config: GatewayConfig, tls: GatewayTLS, logger: Logger, policies: [DestinationRule] = []) {
        self.config = config
        self.tls = tls
        // Empty until `with(endpoints:)` below builds routes and plans once, with the subsets
        // of the policies folded in.
        let empty = MeshEndpoints(localCluster: config.cluster, clusters: [:])
        self.routes = RouteTable(endpoints: empty)
        self.picker = EndpointPicker(endpoints: empty, policies: policies)
        self.cursors = RoundRobinCursors()
        self.sourceAddress = try? SocketAddress(ipAddress: config.listen.host, port: 0)
        self.upstreams = UpstreamConnections()
        self.metrics = TCPMetrics()
        self.logger = logger
        self = with(endpoints: config.meshEndpoints)
    }
}

extension DataPlaneSnapshot {
    /// The same gateway with a new view of the mesh's endpoints (federation learned something):
    /// routes and the traffic plan are rebuilt at once; round-robin positions carry over.
    package func with(endpoints: MeshEndpoints) -> DataPlaneSnapshot {
        var mesh = endpoints
        // A DestinationRule's subsets are routable names too (`outbound_.8080_.v2_.host`).
        for rule in picker.policies {
            for subset in rule.subsets ?? [] where mesh.subsets[rule.host]?[subset.name] == nil {
                mesh.subsets[rule.host, default: [:]][subset.name] = subset.labels ?? [:]
            }
        }
        var next = self
        next.routes = RouteTable(endpoints: mesh)
        var clientLabels: [String: String] = [:]
        if let network = config.network { clientLabels["topology.istio.io/network"] = network }
        next.picker = picker.replanned { inputs in
            inputs.endpoints = mesh
            inputs.client = config.locality ?? Locality(region: "")
            inputs.clientLabels = clientLabels
        }
        return next
    }

    /// The same gateway after outlier detection ejected or restored endpoints.
    package func with(ejected: [ServiceKey: Set<HostPort>]) -> DataPlaneSnapshot {
        var next = self
        next.picker = picker.replanned { $0.ejected = ejected }
        return next
    }

    /// The same gateway after peer gateways became unreachable (or reachable) from here.
    package func with(unreachableGateways: Set<String>) -> DataPlaneSnapshot {
        var next = self
        next.picker = picker.replanned { $0.unreachableGateways = unreachableGateways }
        return next
    }

    /// The same gateway with the drill faults now in force.
    package func with(blackholes: [Blackhole]) -> DataPlaneSnapshot {
        var next = self
        next.picker = picker.replanned { $0.blackholes = blackholes }
        return next
    }
}

/// The current snapshot, swapped whole when the mesh changes; a connection reads it once.
package final class DataPlaneStore: Sendable {
    private let snapshot: Mutex<DataPlaneSnapshot>

    package init(_ initial: DataPlaneSnapshot) { snapshot = Mutex(initial) }

    package var current: DataPlaneSnapshot { snapshot.withLock { $0 } }

    package func update(_ change: (DataPlaneSnapshot) -> DataPlaneSnapshot) {
        snapshot.withLock { $0 = change($0) }
    }
}

/// One round-robin position per service, shared by every event loop. One lock per accepted
/// connection; never held across I/O.
package final class RoundRobinCursors: Sendable {
    private let positions = Mutex<[ServiceKey: Int]>([:])

    package init() {}

    /// The position for this connection; the next caller gets the one after it.
    package func next(for service: ServiceKey) -> Int {
        positions.withLock { positions in
            let value = positions[service, default: 0]
            positions[service] = value &+ 1
            return value
        }
    }
}
