import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

extension ClientBootstrap {
    /// Dials from `source` with the port left to `connect()`, as Envoy does
    /// (`IP_BIND_ADDRESS_NO_PORT`): a plain `bind()` must find a port free for every
    /// destination, which runs out, and slows to a crawl, once tens of thousands of short
    /// connections sit in TIME_WAIT; `connect()` only needs the 4-tuple to be unique.
    package func bindingSource(_ source: SocketAddress) -> ClientBootstrap {
        var bootstrap = self
        if source.protocol == .inet {
            let bindAddressNoPort = ChannelOptions.Types.SocketOption(level: .ip, name: NIOBSDSocket.Option(rawValue: 24))
            bootstrap = bootstrap.channelOption(bindAddressNoPort, value: 1)
        }
        return bootstrap.bind(to: source)
    }
}

/// Why one upstream attempt failed; the access log prints it.
package struct UpstreamConnectError: Error, CustomStringConvertible {
    package var target: UpstreamTarget
    package var reason: String
    /// The connect or the TLS handshake ran out of time (Envoy's `connection timeout`), as opposed
    /// to being refused or failing.
    package var timedOut: Bool = false
    package var description: String { "\(target): \(reason)" }
}

/// An upstream connection ready for bytes, and the application protocol a peer gateway agreed
/// to by ALPN (nil for a local endpoint, or when the peer chose none).
package struct DialedUpstream {
    package var channel: any Channel
    package var applicationProtocol: String?

    package init(channel: any Channel, applicationProtocol: String? = nil) {
        self.channel = channel
        self.applicationProtocol = applicationProtocol
    }
}

/// Dials one upstream target on the downstream's event loop, so the glued pair shares one
/// isolation domain. A local endpoint is plain TCP; a peer gateway is mTLS with our gateway
/// certificate, Istio-form SNI, the peer's SPIFFE ID checked against the peer policy, and the
/// ALPN offered that the caller asks for. The returned channel is ready for bytes (TLS
/// handshake done).
package enum UpstreamConnector {
    private static func tcpOption(_ name: Int32) -> ChannelOptions.Types.SocketOption {
        ChannelOptions.Types.SocketOption(level: .tcp, name: NIOBSDSocket.Option(rawValue: name))
    }

    private static func seconds(_ duration: ConfigDuration) -> SocketOptionValue {
        SocketOptionValue(max(1, duration.duration.components.seconds))
    }

    package static func connect(to target: UpstreamTarget, tls: GatewayTLS, connectTimeout: Duration,
                                handshakeTimeout: Duration, keepalive: ConnectionPoolSettings.TCP.Keepalive? = nil,
                                offering applicationProtocols: [String] = [], from source: SocketAddress? = nil,
                                on eventLoop: any EventLoop) -> EventLoopFuture<DialedUpstream> {
        var bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(connectTimeout))
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            // Reads of up to 256 KiB: a large response crosses in a quarter of the reads (and
            // event-loop passes) that NIO's default 64 KiB ceiling takes; small reads stay small.
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 262_144))
        // Dial from the gateway's own address, as a multi-homed gateway must: peers and
        // firewalls (and a drill's iptables rules) see the gateway, not whichever address the
        // kernel picks.
        if let source { bootstrap = bootstrap.bindingSource(source) }
        if let keepalive {
            // Istio's tcpKeepalive → SO_KEEPALIVE with the kernel's idle/interval/probe knobs;
            // unset values keep the kernel's defaults, as Envoy does.
            bootstrap = bootstrap.channelOption(.socketOption(.so_keepalive), value: 1)
            if let time = keepalive.time { bootstrap = bootstrap.channelOption(tcpOption(TCP_KEEPIDLE), value: seconds(time)) }
            if let interval = keepalive.interval { bootstrap = bootstrap.channelOption(tcpOption(TCP_KEEPINTVL), value: seconds(interval)) }
            if let probes = keepalive.probes { bootstrap = bootstrap.channelOption(tcpOption(TCP_KEEPCNT), value: SocketOptionValue(probes)) }
        }
        let address = target.address
        switch target {
        case .local:
            return connect(bootstrap, to: address).map { DialedUpstream(channel: $0) }.flatMapErrorThrowing { error in
                throw UpstreamConnectError(target: target, reason: describe(error), timedOut: isTimeout(error))
            }
        case .peerGateway(let cluster, _, let serverName):
            let handshake = eventLoop.makePromise(of: String?.self)
            let verifier = tls.peerGateways(of: cluster)
            let context = tls.clientContext(offering: applicationProtocols)
            let sni = serverName.istioForm
            return connect(bootstrap.channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let watcher = HandshakeWatcher(promise: handshake, timeout: handshakeTimeout)
                    let handler = try NIOSSLClientHandler(context: context, serverHostname: sni) { certificates, verification in
                        verifier.verify(certificates, answering: verification) { result in
                            if case .failure(let rejection) = result { watcher.reject("peer gateway refused: \(rejection)") }
                        }
                    }
                    try channel.pipeline.syncOperations.addHandler(handler)
                    try channel.pipeline.syncOperations.addHandler(watcher)
                }
            }, to: address)
            .flatMapErrorThrowing { error in
                handshake.fail(error)
                throw UpstreamConnectError(target: target, reason: describe(error), timedOut: isTimeout(error))
            }
            .flatMap { channel in
                handshake.futureResult.map { DialedUpstream(channel: channel, applicationProtocol: $0) }.flatMapErrorThrowing { error in
                    channel.close(promise: nil)
                    throw UpstreamConnectError(target: target, reason: describe(error), timedOut: isTimeout(error))
                }
            }
        }
    }

    /// Whether a connect failed by running out of time: NIO's connect timeout (on any address
    /// tried), the kernel's ETIMEDOUT, or our TLS handshake timeout.
    package static func isTimeout(_ error: any Error) -> Bool {
        switch error {
        case ChannelError.connectTimeout: true
        case let error as NIOConnectionError: error.connectionErrors.contains { isTimeout($0.error) }
        case let error as IOError: error.errnoCode == ETIMEDOUT
        case let error as HandshakeWatcher.Failure: error.timedOut
        case let error as UpstreamConnectError: error.timedOut
        default: false
        }
    }

    /// Endpoints and gateways are IP literals in practice: connect to the address directly
    /// rather than through the resolver, which would hop to a thread pool on every connection.
    private static func connect(_ bootstrap: ClientBootstrap, to address: HostPort) -> EventLoopFuture<any Channel> {
        if let socket = try? SocketAddress(ipAddress: address.host, port: address.port) {
            return bootstrap.connect(to: socket)
        }
        return bootstrap.connect(host: address.host, port: address.port)
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case let error as UpstreamConnectError: error.reason
        case let error as ChannelError where error == .connectTimeout(.zero): "connect timeout"
        case ChannelError.connectTimeout: "connect timeout"
        case let error as NIOConnectionError:
            error.connectionErrors.first.map { describe($0.error) } ?? "connect failed: \(error)"
        case let error as IOError: "connect failed: " + String(cString: strerror(error.errnoCode)).lowercased()
        case let error as HandshakeWatcher.Failure: error.reason
        case let error as NIOSSLError: "TLS handshake failed: \(error)"
        default: "\(error)"
        }
    }
}

/// Completes a promise with the negotiated ALPN when the upstream TLS handshake finishes (or
/// fails, or takes too long), then steps out of the pipeline.
final class HandshakeWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    struct Failure: Error {
        var reason: String
        var timedOut = false
    }

    private let promise: EventLoopPromise<String?>
    private let timeout: Duration
    private var isDone = false
    private var rejection: String?
    private var timer: Scheduled<Void>?

    init(promise: EventLoopPromise<String?>, timeout: Duration) {
        self.promise = promise
        self.timeout = timeout
    }

    /// Called from the verification callback: remember why, so the failure names it.
    func reject(_ reason: String) { rejection = reason }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            let (watcher, context) = loopBound.value
            watcher.finish(.failure(Failure(reason: "TLS handshake with peer gateway timed out", timedOut: true)), context: context)
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted(let negotiated) = event {
            finish(.success(negotiated), context: context)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(Failure(reason: rejection ?? "TLS handshake with peer gateway failed: \(error)")), context: context)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(Failure(reason: rejection ?? "peer gateway closed the connection during the TLS handshake")), context: context)
        context.fireChannelInactive()
    }

    private func finish(_ result: Result<String?, any Error>, context: ChannelHandlerContext) {
        guard !isDone else { return }
        isDone = true
        timer?.cancel()
        promise.completeWith(result)
    }
}
