import Foundation
import Logging
import MeshProxyCore
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL
import NIOTLS

/// Carries gossip between gateways over the same `ADDRESS:15443` listener as the data plane:
/// mutual TLS with the gateway certificates, a reserved server name so the SNI router hands the
/// connection here before any crypto, the ALPN protocol `eastwest-federation/2` agreed in the
/// handshake (a peer that does not speak this protocol version is closed), and
/// length-prefixed `GossipCodec` frames. Only peers with a gateway identity are heard; a
/// malformed frame is dropped and counted, never fatal.
package final class FederationTransport: Sendable {
    /// The SNI federation connections use; no service may have this name.
    package static let serverName = "federation.eastwest.internal"
    /// The ALPN protocol both ends must agree on; a new wire version gets a new name.
    package static let applicationProtocol = "eastwest-federation/2"

    private let tls: GatewayTLS
    private let serverContext: NIOSSLContext
    private let clientContext: NIOSSLContext
    private let group: any EventLoopGroup
    private let inbound: AsyncStream<FederationEvent>.Continuation
    fileprivate let logger: Logger
    private let localAddress: HostPort
    private let connections = NIOLockedValueBox<[HostPort: EventLoopFuture<any Channel>]>([:])
    private let dropped = NIOLockedValueBox<[String: Int]>([:])

    package init(tls: GatewayTLS, group: any EventLoopGroup, inbound: AsyncStream<FederationEvent>.Continuation,
                 localAddress: HostPort, logger: Logger) throws {
        (serverContext, clientContext) = try tls.contexts(applicationProtocols: [Self.applicationProtocol])
        self.localAddress = localAddress
        self.tls = tls
        self.group = group
        self.inbound = inbound
        self.logger = logger
    }

    /// Messages dropped by reason (`malformed`, `oversized`, `unknown_version`, `send_failed`).
    package var droppedMessages: [String: Int] { dropped.withLockedValue { $0 } }

    package func countDrop(_ reason: String, count: Int = 1) {
        dropped.withLockedValue { $0[reason, default: 0] += count }
        Counter(label: "eastwest_federation_messages_dropped_total", dimensions: [("reason", reason)]).increment(by: count)
    }

    // MARK: - Inbound

    /// Called by the listener, on the connection's event loop, for the reserved server name.
    package func acceptConnection(_ channel: any Channel) throws {
        let remote = channel.remoteAddress.map { "\($0)" } ?? "?"
        let receiver = FrameReceiver(transport: self)
        let handler = NIOSSLServerHandler(context: serverContext, customVerificationCallback: peerVerification(peer: remote) { id in
            receiver.senderCluster = GatewayIdentity.cluster(of: id)
        })
        let operations = channel.pipeline.syncOperations
        try operations.addHandler(handler)
        try operations.addHandler(ProtocolGuard(transport: self, peer: remote))
        try operations.addHandler(ByteToMessageHandler(GossipFrameDecoder()))
        try operations.addHandler(receiver)
    }

    /// Both directions admit any gateway identity; what a peer may say is bound to its cluster
    /// later (`FederationNode`).
    private func peerVerification(peer: String, verified: @escaping (SpiffeID) -> Void = { _ in }) -> NIOSSLCustomVerificationCallback {
        let verifier = tls.federationPeers
        let logger = self.logger
        return { certificates, promise in
            verifier.verify(certificates, answering: promise) { result in
                switch result {
                case .success(let id): verified(id)
                case .failure(let rejection):
                    logger.warning("federation peer refused", metadata: ["peer": "\(peer)", "reason": "\(rejection)"])
                }
            }
        }
    }

    fileprivate func received(_ frame: ByteBuffer, senderCluster: String?) {
        do {
            inbound.yield(.message(try GossipCodec.decode(frame), senderCluster: senderCluster))
        } catch {
            countDrop(error.reason)
            logger.debug("dropped federation message", metadata: ["reason": "\(error)"])
        }
    }

    private final class FrameReceiver: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let transport: FederationTransport
        /// The cluster the peer's verified certificate names, set during the handshake.
        var senderCluster: String?
        init(transport: FederationTransport) { self.transport = transport }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            transport.received(unwrapInboundIn(data), senderCluster: senderCluster)
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            // A frame over the size limit: nothing after it on this stream can be trusted.
            if let wire = error as? GossipWireError { transport.countDrop(wire.reason) }
            context.close(promise: nil)
        }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            // A draining gateway closes gossip connections at once: they would never end by
            // themselves and would hold the drain for its whole timeout.
            if event is ChannelShouldQuiesceEvent {
                context.close(promise: nil)
                return
            }
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// Closes a connection whose handshake did not agree on `applicationProtocol`: the peer
    /// is not an EastWest gateway speaking this wire version.
    private final class ProtocolGuard: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        let transport: FederationTransport
        let peer: String
        init(transport: FederationTransport, peer: String) { self.transport = transport; self.peer = peer }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted(let negotiated) = event as? TLSUserEvent, negotiated != FederationTransport.applicationProtocol {
                transport.countDrop("wrong_protocol")
                transport.logger.warning("federation peer refused", metadata: [
                    "peer": "\(peer)", "reason": "ALPN '\(negotiated ?? "none")', expected '\(FederationTransport.applicationProtocol)'"])
                context.close(promise: nil)
                return
            }
            context.fireUserInboundEventTriggered(event)
        }
    }

    // MARK: - Outbound

    /// Sends one message, reusing the connection to that peer. Like a datagram: a failure drops
    /// the message (the protocol tolerates loss) and the next send dials again.
    package func send(_ message: GossipMessage, to address: HostPort) {
        let frame = GossipCodec.encode(message)
        guard frame.readableBytes <= GossipCodec.maximumMessageSize else {
            countDrop("oversized")
            return
        }
        let future = connection(to: address)
        future.whenSuccess { channel in channel.writeAndFlush(frame, promise: nil) }
        future.whenFailure { [weak self] _ in
            self?.countDrop("send_failed")
            self?.forget(address, future)
        }
    }

    private func connection(to address: HostPort) -> EventLoopFuture<any Channel> {
        connections.withLockedValue { connections in
            if let existing = connections[address] { return existing }
            let future = dial(address)
            connections[address] = future
            future.whenSuccess { [weak self] channel in
                channel.closeFuture.whenComplete { _ in self?.forget(address, future) }
            }
            return future
        }
    }

    private func forget(_ address: HostPort, _ future: EventLoopFuture<any Channel>) {
        connections.withLockedValue { connections in
            if connections[address] === future { connections[address] = nil }
        }
    }

    private func dial(_ address: HostPort) -> EventLoopFuture<any Channel> {
        let context = clientContext
        // Dial from our own gateway address, as a multi-homed gateway must: peers and
        // firewalls see the gateway, not whichever address the kernel picks.
        var bootstrap = ClientBootstrap(group: group).connectTimeout(.seconds(1))
        if let source = try? SocketAddress(ipAddress: localAddress.host, port: 0) { bootstrap = bootstrap.bindingSource(source) }
        return bootstrap
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = try NIOSSLClientHandler(context: context, serverHostname: Self.serverName,
                                                          customVerificationCallback: self.peerVerification(peer: "\(address)"))
                    try channel.pipeline.syncOperations.addHandler(handler)
                    try channel.pipeline.syncOperations.addHandler(ProtocolGuard(transport: self, peer: "\(address)"))
                    try channel.pipeline.syncOperations.addHandler(LengthFieldPrepender(lengthFieldBitLength: .fourBytes))
                }
            }
            .connect(host: address.host, port: address.port)
    }
}
