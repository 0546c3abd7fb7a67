import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL
import NIOTLS

/// The 15443 listener. Per connection: read the SNI from the ClientHello before any crypto,
/// refuse unknown names (`NR`), terminate mTLS with the mesh policy deciding who gets in, then
/// hand over to `GatewayConnectionHandler`.
package final class GatewayListener: Sendable {
    private let dataPlane: DataPlane
    private let group: any EventLoopGroup
    private let quiescing: ServerQuiescingHelper
    private let pending: PendingHandshakes

    /// Takes over connections whose server name is `federationServerName` (gossip between gateways).
    private let federationAcceptor: (@Sendable (any Channel) throws -> Void)?
    private let federationServerName: String?

    package init(dataPlane: DataPlane, group: any EventLoopGroup, federationServerName: String? = nil,
                 federationAcceptor: (@Sendable (any Channel) throws -> Void)? = nil) {
        self.federationServerName = federationServerName
        self.federationAcceptor = federationAcceptor
        self.dataPlane = dataPlane
        self.group = group
        self.quiescing = ServerQuiescingHelper(group: group)
        self.pending = PendingHandshakes(limit: dataPlane.config.effectiveMaxPendingHandshakes)
    }

    /// Binds the listen address; an address in use fails with an error naming it.
    package func bind() async throws -> SocketAddress {
        let dataPlane = self.dataPlane
        let quiescing = self.quiescing
        let pending = self.pending
        let address = dataPlane.config.listen
        let federation = federationServerName.flatMap { name in federationAcceptor.map { (name, $0) } }
        do {
            let server = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                    }
                }
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try Self.initialize(channel, dataPlane: dataPlane, pending: pending, federation: federation)
                    }
                }
                .bind(host: address.host, port: address.port).get()
            return server.localAddress!
        } catch {
            throw ListenError(address: address.description, role: "gateway listener", underlying: error)
        }
    }

    /// Stops accepting, lets open connections finish for up to `timeout`, then returns.
    /// Returns true when every connection finished by itself.
    package func drain(timeout: Duration) async -> Bool {
        let promise = group.next().makePromise(of: Void.self)
        quiescing.initiateShutdown(promise: promise)
        let deadline = group.next().scheduleTask(in: TimeAmount(timeout)) {}
        let drained: Bool = await withCheckedContinuation { continuation in
            let once = NIOLockedValueBox(false)
            @Sendable func finish(_ value: Bool) {
                if once.withLockedValue({ done in defer { done = true }; return !done }) { continuation.resume(returning: value) }
            }
            promise.futureResult.whenComplete { _ in finish(true) }
            deadline.futureResult.whenComplete { _ in finish(false) }
        }
        deadline.cancel()
        return drained
    }

    private static func initialize(_ channel: any Channel, dataPlane: DataPlane, pending: PendingHandshakes,
                                   federation: (String, @Sendable (any Channel) throws -> Void)?) throws {
        let record = ConnectionRecord(downstreamRemote: channel.remoteAddress.map(Self.describe) ?? "-",
                                      downstreamLocal: channel.localAddress.map(Self.describe) ?? "-")
        let logger = dataPlane.logger
        let metrics = dataPlane.metrics
        // Read once: the connection keeps the routes it was accepted under.
        let routes = dataPlane.routes
        let bound = NIOLoopBound(record, eventLoop: channel.eventLoop)
        channel.closeFuture.whenComplete { _ in bound.value.finish(metrics: metrics, logger: logger) }
        guard pending.admit() else {
            record.detail = "refused at accept: \(pending.limit) connections are already in their handshake (maxPendingHandshakes)"
            channel.close(promise: nil)
            return
        }
        let guardHandler = PreHandshakeGuard(timeout: dataPlane.config.handshakeTimeout, pending: pending,
                                             keepsClientHello: routes.gatewayServers?.passesThrough == true) { reason in
            if record.detail == nil { record.detail = reason }
        }

        let sni = ByteToMessageHandler(SNIHandler { result in
            /// No route for this server name: closed before the handshake, `NR`, with why.
            func refuse(_ detail: String, flags: [ResponseFlag] = [.noRoute], error: any Error = ChannelError.ioOnClosedChannel) -> EventLoopFuture<Void> {
                record.flags = flags
                record.detail = detail
                channel.close(promise: nil)
                return channel.eventLoop.makeFailedFuture(error)
            }
            let name: String
            switch result {
            case .hostname(let hostname): name = hostname
            case .fallback:
                return refuse("client sent no server name (SNI); the gateway routes by it")
            }
            guardHandler.serverNameRead()
            if let (federationName, accept) = federation, name == federationName {
                // Gossip between gateways shares the port; it is not a proxied connection.
                record.serverName = name
                record.isFederation = true
                do {
                    try accept(channel)
                    try channel.pipeline.syncOperations.addHandler(HandshakeCompletionObserver(guard: guardHandler), position: .last)
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
            record.serverName = name
            let route: Route
            switch Result(catching: { () throws(ServerNameError) in try ServerName(parsing: name) }) {
            case .failure(let error):
                return refuse(error.description, error: error)
            case .success(let serverName):
                switch routes.resolve(serverName, in: dataPlane.clusters.current) {
                case .noRoute(let reason):
                    return refuse(reason)
                case .route(let found):
                    route = found
                    record.route = found
                }
                if let limit = routes.localRateLimits?.admitConnection(to: route, listenerPort: dataPlane.config.listen.port) {
                    // Envoy's network local_ratelimit: closed at once, before any handshake, with
                    // the flag Envoy sets for it (URX) and its close reason.
                    return refuse("local_ratelimit_close_over_limit: new connections over \(limit.settings.maxTokens) per \(limit.settings.fillInterval) (envoy.filters.network.local_ratelimit)",
                                  flags: [.upstreamRetryLimitExceeded])
                }
                switch routes.gatewayServers?.exposure(of: route.service.host) ?? .terminate {
                case .hidden(let reason):
                    return refuse(reason)
                case .passthrough where serverName.port != nil
                    && guardHandler.offeredApplicationProtocols?.contains(ClientHelloALPN.peerMarker) != true:
                    // An Istio workload's own mTLS, by its Istio SNI: to a local endpoint untouched
                    // (an EastWest peer, which offers its marker, is terminated as always).
                    do {
                        let operations = channel.pipeline.syncOperations
                        try operations.addHandler(GatewayConnectionHandler(dataPlane: dataPlane, routes: routes, route: route, record: record,
                                                                           passthrough: true))
                        // No handshake here: the guard's watch ends with the route.
                        guardHandler.handshakeCompleted(context: try operations.context(handler: guardHandler))
                        return channel.eventLoop.makeSucceededVoidFuture()
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                case .passthrough where serverName.port == nil:
                    return refuse("AUTO_PASSTHROUGH routes by Istio's SNI (outbound_.<port>_.<subset>_.<host>) only; '\(name)' is not one")
                case .terminate, .passthrough:
                    break
                }
            }
            do {
                let verifier = dataPlane.tls.clients
                let tls = NIOSSLServerHandler(context: dataPlane.tls.serverContext(for: route.protocol)) { certificates, verification in
                    verifier.verify(certificates, answering: verification) { result in
                        switch result {
                        case .success(let id): record.sourceIdentity = id
                        case .failure(let rejection): record.detail = "client refused: \(rejection)"
                        }
                    }
                }
                let operations = channel.pipeline.syncOperations
                try operations.addHandler(tls)
                try operations.addHandler(HandshakeCompletionObserver(guard: guardHandler))
                try operations.addHandler(GatewayConnectionHandler(dataPlane: dataPlane, routes: routes, route: route, record: record))
                return channel.eventLoop.makeSucceededVoidFuture()
            } catch {
                return channel.eventLoop.makeFailedFuture(error)
            }
        })
        try channel.pipeline.syncOperations.addHandler(guardHandler)
        try channel.pipeline.syncOperations.addHandler(sni)
    }

    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return HostPort(host: ip, port: port).description
    }
}

/// A listener that could not bind, naming the address.
package struct ListenError: Error, CustomStringConvertible {
    package var address: String
    package var role: String
    package var underlying: any Error

    package init(address: String, role: String, underlying: any Error) {
        self.address = address; self.role = role; self.underlying = underlying
    }
    package var description: String {
        switch (underlying as? IOError)?.errnoCode {
        case EADDRINUSE: "\(role): cannot listen on \(address): address already in use"
        case EADDRNOTAVAIL: "\(role): cannot listen on \(address): no such local address"
        default: "\(role): cannot listen on \(address): \(underlying)"
        }
    }
}
