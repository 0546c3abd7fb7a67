import Foundation
import Metrics
import NIOCore
import NIOTLS

/// Sits at the tail of a terminated downstream connection until it is glued to an upstream.
/// After the TLS handshake it decides who the client is (workload or peer gateway), asks the
/// endpoint picker for targets, dials them in order until one answers, then hands the channel
/// pair to `GlueHandler`s and removes itself. Bytes that arrive meanwhile are held (and reads
/// paused) so nothing is lost and nothing piles up.
package final class GatewayConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    private enum State {
        case handshaking
        case connecting
        case glued
        case closed
    }

    private let snapshot: DataPlaneSnapshot
    private let route: Route
    private let record: ConnectionRecord
    private var state = State.handshaking
    private var held: [ByteBuffer] = []
    private var inputEnded = false
    private var pendingRead = false
    private var targets: [PlannedTarget] = []
    private var attempt = 0
    private var failures: [String] = []
    /// The DestinationRule's `connectTimeout` for this service, else the gateway's.
    private var connectTimeout: Duration = .seconds(5)
    private var keepalive: ConnectionPoolSettings.TCP.Keepalive?
    /// The handshake timeout and an early end of input are `PreHandshakeGuard`'s.
    package init(snapshot: DataPlaneSnapshot, route: Route, record: ConnectionRecord) {
        self.snapshot = snapshot
        self.route = route
        self.record = record
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case TLSUserEvent.handshakeCompleted:
            startConnecting(context: context)
        case ChannelEvent.inputClosed where state == .connecting:
            inputEnded = true
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch state {
        case .connecting, .handshaking:
            held.append(unwrapInboundIn(data))
        case .glued:
            context.fireChannelRead(data)
        case .closed:
            break
        }
    }

    package func read(context: ChannelHandlerContext) {
        if state == .connecting {
            pendingRead = true  // backpressure: no upstream to write to yet
        } else {
            context.read()
        }
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if state == .handshaking, record.detail == nil {
            record.detail = TLSFailure.describe(error)
        }
        context.close(promise: nil)
    }

    package func channelInactive(context: ChannelHandlerContext) {
        if state == .connecting { record.flags.append(.downstreamTermination) }
        state = .closed
        context.fireChannelInactive()
    }

    // MARK: - Choosing and dialling the upstream

    private func startConnecting(context: ChannelHandlerContext) {
        state = .connecting
        let origin: TrafficOrigin
        // The identity verified at the handshake, against the same set that admits peer gateways.
        if let id = record.sourceIdentity, snapshot.tls.isPeerGateway(id) {
            origin = .peerGateway
        } else {
            origin = .client
        }
        let pool = snapshot.picker.connectionPool(for: route, origin: origin)
        if let limit = pool?.maxConnections {
            guard snapshot.upstreams.acquire(route.service, limit: limit) else {
                record.flags.append(.upstreamOverflow)
                record.detail = "connectionPool.tcp.maxConnections (\(limit)) reached for \(route.service)"
                Counter(label: "envoy_cluster_upstream_cx_overflow", dimensions: OutlierTracker.cluster(route.service)).increment()
                state = .closed
                context.close(promise: nil)
                return
            }
            let upstreams = snapshot.upstreams, service = route.service
            context.channel.closeFuture.whenComplete { _ in upstreams.release(service) }
        }
        connectTimeout = pool?.connectTimeout?.duration ?? snapshot.config.connectTimeout
        keepalive = pool?.tcpKeepalive
        let cursor = snapshot.cursors.next(for: route.service)
        let upstreams = snapshot.upstreams
        targets = Array(snapshot.picker.candidates(for: route, origin: origin, cursor: cursor, active: upstreams.open(to:))
            .prefix(snapshot.config.effectiveMaxConnectAttempts))
        guard !targets.isEmpty else {
            record.flags.append(.noHealthyUpstream)
            record.detail = origin == .peerGateway
                ? "no local endpoint for \(route.service) (traffic from a peer gateway is never forwarded again)"
                : "no healthy endpoint for \(route.service) in any cluster"
            state = .closed
            context.close(promise: nil)
            return
        }
        dialNext(context: context)
    }

    private func dialNext(context: ChannelHandlerContext) {
        let planned = targets[attempt]
        let target = planned.target
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        UpstreamConnector.connect(to: target, tls: snapshot.tls, connectTimeout: connectTimeout,
                                  handshakeTimeout: snapshot.config.handshakeTimeout, keepalive: keepalive,
                                  from: snapshot.sourceAddress, on: context.eventLoop)
            .whenComplete { result in
                let (handler, context) = bound.value
                switch result {
                case .success(let upstream): handler.connected(to: upstream, target: planned, context: context)
                case .failure(let error): handler.failed(target: target, error: error, context: context)
                }
            }
    }

    private func failed(target: UpstreamTarget, error: any Error, context: ChannelHandlerContext) {
        guard state == .connecting else { return }
        failures.append(UpstreamConnector.describe(error))
        switch target {
        case .peerGateway(_, let gateway, _):
            snapshot.peerGatewayUnreachable(gateway.name)
            snapshot.outliers?.peerFailed(gateway.name)
        case .local(let endpoint): snapshot.outliers?.failed(route.service, endpoint.address)
        }
        snapshot.logger.debug("upstream attempt failed", metadata: ["target": "\(target)", "error": "\(error)"])
        attempt += 1
        if attempt < targets.count {
            dialNext(context: context)
            return
        }
        record.upstream = target
        record.flags.append(.upstreamConnectionFailure)
        if targets.count > 1 { record.flags.append(.upstreamRetryLimitExceeded) }
        record.detail = "all \(targets.count) upstream attempt(s) failed: " + zip(targets, failures).map { "\($0.target) (\($1))" }.joined(separator: "; ")
        state = .closed
        context.close(promise: nil)
    }

    private func connected(to upstream: any Channel, target planned: PlannedTarget, context: ChannelHandlerContext) {
        guard state == .connecting else {
            upstream.close(promise: nil)  // the client left while we were dialling
            return
        }
        state = .glued
        if case .peerGateway(_, let gateway, _) = planned.target { snapshot.outliers?.peerSucceeded(gateway.name) }
        let upstreams = snapshot.upstreams, address = planned.target.address
        upstreams.opened(address)
        upstream.closeFuture.whenComplete { _ in upstreams.closed(address) }
        record.upstream = planned.target
        record.upstreamCluster = planned.target.cluster ?? snapshot.config.cluster
        record.upstreamLocality = planned.locality
        record.upstreamPriority = planned.priority
        record.opened(metrics: snapshot.metrics)

        let (downstreamGlue, upstreamGlue) = GlueHandler.matchedPair()
        do {
            try upstream.pipeline.syncOperations.addHandler(upstreamGlue)
            try context.pipeline.syncOperations.addHandler(downstreamGlue, position: .after(self))
        } catch {
            record.detail = "cannot join upstream: \(error)"
            upstream.close(promise: nil)
            context.close(promise: nil)
            return
        }
        record.glue = (downstream: downstreamGlue, upstream: upstreamGlue)
        downstreamGlue.closeWhenIdle(for: snapshot.config.idleTimeout)
        if case .local(let endpoint) = planned.target, let outliers = snapshot.outliers {
            // Judged when the connection ends: an endpoint that resets established connections
            // is as broken as one that refuses them (a gateway error); a clean end is a success
            // that clears the endpoint's run of errors.
            let glue = NIOLoopBound(upstreamGlue, eventLoop: upstream.eventLoop), service = route.service
            upstream.closeFuture.whenComplete { _ in
                if let error = glue.value.failure as? IOError, error.errnoCode == ECONNRESET {
                    outliers.failed(service, endpoint.address)
                } else {
                    outliers.succeeded(service, endpoint.address)
                }
            }
        }
        // Replay what arrived while dialling through the glue, so it is counted and ordered.
        let buffered = held
        held = []
        for buffer in buffered { context.fireChannelRead(wrapInboundOut(buffer)) }
        if !buffered.isEmpty { context.fireChannelReadComplete() }
        if inputEnded { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        // Replay the held read before leaving: once removed, this context no longer reaches
        // the pipeline, and a read lost here stalls the client's upload for good.
        if pendingRead {
            pendingRead = false
            context.read()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Turns a downstream TLS failure into the reason a user reads in the log.
package enum TLSFailure {
    package static func describe(_ error: any Error) -> String {
        let text = "\(error)"
        if text.contains("PEER_DID_NOT_RETURN_A_CERTIFICATE") || text.contains("CERTIFICATE_REQUIRED") {
            return PeerRejection.noCertificate.description
        }
        if text.contains("WRONG_VERSION_NUMBER") || text.contains("UNSUPPORTED_PROTOCOL") {
            return "client offered an unsupported TLS version (1.2 or 1.3 required)"
        }
        if text.contains("NO_SHARED_CIPHER") { return "no cipher suite in common with the client" }
        return "TLS handshake failed: \(text)"
    }
}
