import Foundation
import Metrics
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS

/// Sits at the tail of a terminated downstream connection until it is glued to an upstream,
/// carrying out `GatewayConnectionStateMachine`: after the TLS handshake it asks the route
/// action and the plan for targets, dials them as the machine says, then hands the channel pair
/// to `GlueHandler`s and removes itself. Bytes that arrive meanwhile are held (and reads
/// paused) so nothing is lost and nothing piles up.
package final class GatewayConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    private let dataPlane: DataPlane
    /// The route configuration the connection was accepted under.
    private let routes: RouteConfiguration
    /// What the server name resolved to; a `tcp:` route may replace it when the plan is made.
    private var route: Route
    private let record: ConnectionRecord
    private var machine = GatewayConnectionStateMachine()
    /// Decided once the client's identity is known.
    private var action: RouteAction?
    /// The upstream between its connect and the glue.
    private var upstream: (any Channel)?
    /// An AUTO_PASSTHROUGH connection: not terminated here; its bytes (the client's TLS, from
    /// the ClientHello on) go to a local endpoint as they are.
    private let passthrough: Bool

    /// The handshake timeout and an early end of input are `PreHandshakeGuard`'s.
    package init(dataPlane: DataPlane, routes: RouteConfiguration, route: Route, record: ConnectionRecord, passthrough: Bool = false) {
        self.dataPlane = dataPlane
        self.routes = routes
        self.route = route
        self.record = record
        self.passthrough = passthrough
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        // Without a handshake to wait for, the route is known now.
        if passthrough { run(machine.handshakeCompleted(), context: context) }
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case TLSUserEvent.handshakeCompleted(let negotiatedProtocol):
            if record.sourceIdentity == nil, let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
               let leaf = tls.peerCertificate {
                // A resumed session: no verification callback ran, the session holds the leaf.
                record.sourceIdentity = dataPlane.tls.clients.identity(ofResumedSessionLeaf: leaf, now: Date())
            }
            let h2 = negotiatedProtocol == "h2" || negotiatedProtocol == "istio-h2"
            if route.protocol?.isHTTP == true {
                if !fromPeerGateway {
                    startHTTP(h2: h2, origin: .client, context: context)
                    return
                }
                if h2 {
                    // A peer gateway's pooled connection: requests it routed already, one per stream.
                    startHTTP(h2: true, origin: .peerGateway, context: context)
                    return
                }
            }
            if negotiatedProtocol == ClientHelloALPN.peerMarker {
                // An EastWest entry gateway's TCP connection: its original-client line first.
                do {
                    try context.pipeline.syncOperations.addHandler(ByteToMessageHandler(OriginalClientPreamble.Decoder()), position: .before(self))
                } catch {
                    record.detail = "cannot read the original-client preamble: \(error)"
                    context.close(promise: nil)
                }
                return
            }
            run(machine.handshakeCompleted(), context: context)
        case let read as OriginalClientPreamble.Read:
            // Believed from a peer gateway only; anyone else is judged by their own certificate.
            if fromPeerGateway { record.vouched(for: read.principal, address: read.address) }
            run(machine.handshakeCompleted(), context: context)
        case ChannelEvent.inputClosed:
            if machine.inputClosed() == .forward { context.fireUserInboundEventTriggered(event) }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if machine.channelRead(unwrapInboundIn(data)) == .forward { context.fireChannelRead(data) }
    }

    package func read(context: ChannelHandlerContext) {
        // While the ext-authz provider is asked, the client waits (Envoy's network ext_authz stops
        // iteration): what it sent stays in the machine, what it sends next in the kernel.
        if authorizationCheck != nil { readHeld = true; return }
        if machine.readRequested() == .forward { context.read() }
    }

    /// A CUSTOM policy's gRPC check of this connection in flight, and whether the client's next
    /// read waits for it.
    private var authorizationCheck: ExternalAuthorizationCheck?
    private var readHeld = false

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if action == nil, record.detail == nil {
            record.detail = (error as? OriginalClientPreamble.Invalid).map { "refused: \($0)" } ?? TLSFailure.describe(error)
        }
        context.close(promise: nil)
    }

    package func channelInactive(context: ChannelHandlerContext) {
        authorizationCheck?.cancel()
        authorizationCheck = nil
        record.flags += machine.channelInactive()
        context.fireChannelInactive()
    }

    // MARK: - HTTP

    /// An HTTP service's traffic from a client is routed per request here, at the gateway where
    /// it enters the mesh. A peer gateway's comes routed already (the subset is in the server
    /// name): over its pooled HTTP/2 connection (ALPN `h2`) each stream goes to a local endpoint;
    /// without ALPN it is forwarded as bytes, as an older gateway sends it.
    private var fromPeerGateway: Bool { record.sourceIdentity.map(dataPlane.tls.isPeerGateway) == true }

    /// HTTP/2 (ALPN `h2`): one connection manager per stream, fed by `HTTP2ServerStreams`, so
    /// both protocols share every routing and upstream decision.
    private func startHTTP(h2: Bool, origin: TrafficOrigin, context: ChannelHandlerContext) {
        record.carriesHTTP = true
        do {
            let operations = context.pipeline.syncOperations
            if h2 {
                let decided = HTTPConnectionManager.RouteState(route, action: routes.action(for: route, origin: origin), routes: routes, clusters: dataPlane.clusters)
                // Captured for each stream's manager; not `self`, which leaves the pipeline below.
                let (dataPlane, routes, route, record) = (dataPlane, routes, route, record)
                // This handler is the pipeline's last and leaves right after.
                try operations.addHandler(FlushCoalescer(), position: .last)
                // A client's header blocks are validated; a peer gateway's were, where they entered.
                var connectionConfiguration = NIOHTTP2Handler.ConnectionConfiguration()
                if origin == .peerGateway { connectionConfiguration.headerBlockValidation = .disabled }
                try operations.addHandler(NIOHTTP2Handler(mode: .server, connectionConfiguration: connectionConfiguration), position: .last)
                try operations.addHandler(HTTP2ServerStreams(eventLoop: context.eventLoop, idleTimeout: dataPlane.config.idleTimeout) {
                    HTTPConnectionManager(dataPlane: dataPlane, routes: routes, connectionRoute: route, connection: record, protocolName: "HTTP/2",
                                          origin: origin, connectionState: decided)
                }, position: .last)
            } else {
                var limits = NIOHTTPDecoderLimitConfiguration()
                limits.maxHeaderListSize = HTTPLocalReply.maximumRequestHeadersSize
                limits.maxHeaderFieldSize = HTTPLocalReply.maximumRequestHeadersSize
                // The connection manager takes pipelined requests in turn and answers malformed
                // ones itself; every header it writes is valid already (parsed, or checked when
                // its policy loaded), so NIO's per-header validation is left out.
                try operations.configureHTTPServerPipeline(position: .after(self), withPipeliningAssistance: false, withServerUpgrade: nil,
                                                           withErrorHandling: false, withOutboundHeaderValidation: false,
                                                           withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
                try operations.addHandler(HTTPConnectionManager(dataPlane: dataPlane, routes: routes, connectionRoute: route, connection: record,
                                                                protocolName: "HTTP/1.1", idleTimeout: dataPlane.config.idleTimeout), position: .last)
            }
            operations.removeHandler(context: context, promise: nil)
        } catch {
            record.carriesHTTP = false
            record.detail = "cannot start HTTP: \(error)"
            context.close(promise: nil)
        }
    }

    // MARK: - Carrying out the machine's actions

    private func run(_ next: GatewayConnectionStateMachine.Action, context: ChannelHandlerContext) {
        switch next {
        case .none, .forward:
            break
        case .plan:
            run(plan(context: context), context: context)
        case .dial(let target):
            dial(target, context: context)
        case .closeDownstream(let flags, let detail, let upstream):
            if let upstream { record.upstream = upstream.target }
            record.flags += flags
            record.detail = detail
            context.close(promise: nil)
        case .glue(let target, let replay, let inputEnded, let readPending):
            glue(target, replay: replay, inputEnded: inputEnded, readPending: readPending, context: context)
        case .closeUpstream:
            // It connected after the client left.
            upstream?.close(promise: nil)
            upstream = nil
        }
    }

    /// The route action for this client, a connection slot under `maxConnections`, and the
    /// plan's targets.
    private func plan(context: ChannelHandlerContext) -> GatewayConnectionStateMachine.Action {
        // The identity verified at the handshake decides how far the traffic may go.
        // Passed-through traffic goes to local endpoints only, as Istio's sni-dnat clusters.
        let origin: TrafficOrigin = passthrough || fromPeerGateway ? .peerGateway : .client
        if origin == .client, routes.hasTCPRoutes,
           let (rule, destination) = routes.tcpRoute(for: route.service, sourceNamespace: record.sourceNamespace, random: UInt64.random(in: .min ... .max)) {
            // A VirtualService `tcp:` route decides where the connection goes, once, here.
            switch HTTPRequestRouter.resolve(destination, origin: rule.origin, routes: routes, services: dataPlane.clusters.current) {
            case .success(let chosen):
                route = chosen
                record.route = chosen
            case .failure(let missing):
                return machine.refused(flags: [.noClusterFound], detail: missing.detail)
            }
        }
        let clusters = dataPlane.clusters
        if origin == .client || record.vouchedByPeerGateway {
            // Istio's network RBAC filter, with the HTTP-only attributes handled as istiod does.
            // A peer gateway's connection is judged again by the client it vouched for (an older
            // gateway sends no preamble: the entry gateway, which knew the client, judged it).
            let policies = routes.authorizationPolicies(for: route.service, endpoints: clusters.current.inputs.endpoints)
            if !policies.isEmpty {
                let request = AuthorizationRequest(principal: record.sourcePrincipal, sourceIP: record.downstreamRemoteAddress,
                                                   remoteIP: record.originalClientAddress, destinationIP: record.downstreamLocalAddress,
                                                   listenerPort: dataPlane.config.listen.port, servicePort: route.service.port, serverName: record.serverName)
                // The entry gateway asked the provider for the service's policies already.
                switch AuthorizationEngine.custom(request, policies: policies, providers: routes.externalAuthorizers, forwarded: record.vouchedByPeerGateway) {
                case .pass:
                    break
                case .refuse(let rule, let why):
                    Counter(label: "envoy_tcp_rbac_denied", dimensions: OutlierTracker.cluster(route.service)).increment()
                    return machine.refused(flags: [], detail: "rbac_access_denied_matched_policy[\(rule)] (\(why))")
                case .check(let authorizer):
                    askExternalAuthorizer(authorizer, request: request, policies: policies, origin: origin, context: context)
                    return .none
                }
                if let refusal = refusedByRBAC(request, policies: policies) { return refusal }
            }
        }
        return planTargets(origin: origin, context: context)
    }

    /// Istio's network RBAC filter (DENY, then ALLOW): nil lets the connection on.
    private func refusedByRBAC(_ request: AuthorizationRequest, policies: [AuthorizationEngine.Policy]) -> GatewayConnectionStateMachine.Action? {
        let decision = AuthorizationEngine.decide(request, policies: policies)
        guard !decision.allowed else { return nil }
        Counter(label: "envoy_tcp_rbac_denied", dimensions: OutlierTracker.cluster(route.service)).increment()
        return machine.refused(flags: [], detail: decision.responseDetails)
    }

    /// A CUSTOM rule with a gRPC provider matched a TCP connection: Envoy's network ext_authz
    /// asks the provider (`createTcpCheck`: the source, the destination with the server name)
    /// before RBAC, and the connection waits. OK goes on; a denial closes it (`UAEX`); an error
    /// closes it too, unless `failOpen`.
    private func askExternalAuthorizer(_ authorizer: ExternalAuthorizer, request: AuthorizationRequest, policies: [AuthorizationEngine.Policy],
                                       origin: TrafficOrigin, context: ChannelHandlerContext) {
        let check = authorizer.grpcConnectionCheckRequest(source: .init(hostPort: record.downstreamRemote, principal: record.sourcePrincipal),
                                                          destination: .init(hostPort: record.downstreamLocal, principal: dataPlane.tls.identity?.description),
                                                          serverName: record.serverName)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let cluster = route.envoyClusterName
        var answered = false
        let started = ExternalAuthorizationCheck.ask(authorizer, request: check, routes: routes, clusters: dataPlane.clusters,
                                                     upstreams: dataPlane.httpUpstreams.on(context.eventLoop), eventLoop: context.eventLoop) { answer in
            answered = true
            let (handler, context) = bound.value
            handler.authorizationCheck = nil
            let next: GatewayConnectionStateMachine.Action
            let verdict = authorizer.verdict(answer)
            ExternalAuthorizationMetrics.count(verdict, failOpen: authorizer.failOpen, cluster: cluster)
            switch verdict {
            case .allowed:
                next = handler.refusedByRBAC(request, policies: policies) ?? handler.planTargets(origin: origin, context: context)
            case .failed where authorizer.failOpen:
                next = handler.refusedByRBAC(request, policies: policies) ?? handler.planTargets(origin: origin, context: context)
            case .denied:
                next = handler.machine.refused(flags: [.unauthorizedExternalService], detail: "ext_authz_denied by provider \(authorizer.name)")
            case .failed:
                next = handler.machine.refused(flags: [.unauthorizedExternalService], detail: "ext_authz_error: no answer from provider \(authorizer.name)")
            }
            handler.run(next, context: context)
            if handler.readHeld {
                handler.readHeld = false
                handler.read(context: context)
            }
        }
        if !answered { authorizationCheck = started }
    }

    /// The connection may go on: its route action, a connection slot under `maxConnections`,
    /// and the plan's targets.
    private func planTargets(origin: TrafficOrigin, context: ChannelHandlerContext) -> GatewayConnectionStateMachine.Action {
        let clusters = dataPlane.clusters
        let action = routes.action(for: route, origin: origin)
        self.action = action
        if let limit = action.maxConnections {
            guard clusters.connections.acquire(route.service, limit: limit) else {
                Counter(label: "envoy_cluster_upstream_cx_overflow", dimensions: OutlierTracker.cluster(route.service)).increment()
                return machine.refused(flags: [.upstreamOverflow],
                                       detail: "connectionPool.tcp.maxConnections (\(limit)) reached for \(route.service)")
            }
            let service = route.service
            context.channel.closeFuture.whenComplete { _ in clusters.connections.release(service) }
        }
        let targets = Array(clusters.candidates(for: route, origin: origin).prefix(action.retry.maxAttempts))
        if let limits = routes.localRateLimits, !limits.inboundConnectionRules.isEmpty, targets.first?.target.isLocal == true {
            // The workload's inbound sidecar would count this connection: this gateway opens it.
            let (namespace, labels) = RouteConfiguration.workloads(of: route.service, endpoints: clusters.current.inputs.endpoints)
            if let limit = limits.admitInboundConnection(to: route, namespace: namespace, labels: labels) {
                return machine.refused(flags: [.upstreamRetryLimitExceeded],
                                       detail: "local_ratelimit_close_over_limit: new connections to \(route.service)'s workloads over \(limit.settings.maxTokens) per \(limit.settings.fillInterval) (their inbound envoy.filters.network.local_ratelimit)")
            }
        }
        return machine.planned(targets, retry: action.retry, noTarget: origin == .peerGateway
            ? "no local endpoint for \(route.service) (traffic from a peer gateway is never forwarded again)"
            : "no healthy endpoint for \(route.service) in any cluster")
    }

    private func dial(_ planned: PlannedTarget, context: ChannelHandlerContext) {
        guard let action else { return }
        let target = planned.target
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        dataPlane.dialer.connect(target, action, [], context.eventLoop)
            .whenComplete { result in
                let (handler, context) = bound.value
                switch result {
                case .success(let upstream):
                    if upstream.applicationProtocol == ClientHelloALPN.peerMarker {
                        // The peer reads who the client is before the client's first byte.
                        upstream.channel.writeAndFlush(OriginalClientPreamble.encode(handler.record.sourcePrincipal,
                                                                                     address: handler.record.downstreamRemoteAddress), promise: nil)
                    }
                    handler.connected(upstream.channel, context: context)
                case .failure(let error): handler.failed(target: target, error: error, context: context)
                }
            }
    }

    private func failed(target: UpstreamTarget, error: any Error, context: ChannelHandlerContext) {
        guard machine.isConnecting else { return }
        // A failed connect is an outlier signal and, for a peer gateway, a hint to the failure
        // detector, whatever the machine decides next.
        dataPlane.connectFailed(to: target, for: route.service)
        dataPlane.logger.debug("upstream attempt failed", metadata: ["target": "\(target)", "error": "\(error)"])
        run(machine.upstreamFailed(.connectFailure, reason: UpstreamConnector.describe(error)), context: context)
    }

    private func connected(_ upstream: any Channel, context: ChannelHandlerContext) {
        self.upstream = upstream
        run(machine.upstreamConnected(), context: context)
    }

    private func glue(_ planned: PlannedTarget, replay: [ByteBuffer], inputEnded: Bool, readPending: Bool, context: ChannelHandlerContext) {
        guard let upstream else { return }
        self.upstream = nil
        dataPlane.connected(to: planned.target)
        let upstreams = dataPlane.clusters.connections, address = planned.target.address
        upstreams.opened(address)
        upstream.closeFuture.whenComplete { _ in upstreams.closed(address) }
        record.upstream = planned.target
        record.upstreamCluster = planned.target.cluster ?? routes.localCluster
        record.upstreamLocality = planned.locality
        record.upstreamPriority = planned.priority
        record.opened(metrics: dataPlane.metrics)

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
        downstreamGlue.closeWhenIdle(for: dataPlane.config.idleTimeout)
        if case .local(let endpoint) = planned.target {
            let outliers = dataPlane.outliers
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
        for buffer in replay { context.fireChannelRead(wrapInboundOut(buffer)) }
        if !replay.isEmpty { context.fireChannelReadComplete() }
        if inputEnded { context.fireUserInboundEventTriggered(ChannelEvent.inputClosed) }
        // Replay the held read before leaving: once removed, this context no longer reaches
        // the pipeline, and a read lost here stalls the client's upload for good.
        if readPending { context.read() }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Turns a downstream TLS failure into the reason a user reads in the log. BoringSSL's errors
/// reach us only as text (swift-nio-ssl keeps the packed code private), so the packed code is
/// read back out of `error:XXXXXXXX:` and its reason compared with BoringSSL's constants, not
/// its wording.
package enum TLSFailure {
    /// BoringSSL reason codes, as swift-nio-ssl's copy of include/openssl/ssl.h defines them.
    enum Reason: UInt32 {
        case noSharedCipher = 184
        case peerDidNotReturnCertificate = 192
        case unsupportedProtocol = 240
        case wrongVersionNumber = 247
        case alertCertificateRequired = 1116
    }

    package static func describe(_ error: any Error) -> String {
        let text = "\(error)"
        switch reasons(in: text).first {
        case .peerDidNotReturnCertificate?, .alertCertificateRequired?: return PeerRejection.noCertificate.description
        case .wrongVersionNumber?, .unsupportedProtocol?: return "client offered an unsupported TLS version (1.2 or 1.3 required)"
        case .noSharedCipher?: return "no cipher suite in common with the client"
        case nil: return "TLS handshake failed: \(text)"
        }
    }

    /// The known reasons among the packed codes (`error:10000410:…`) in a NIOSSL error's text.
    static func reasons(in text: String) -> [Reason] {
        var result: [Reason] = []
        var rest = Substring(text)
        while let start = rest.range(of: "error:") {
            let digits = rest[start.upperBound...].prefix { $0.isHexDigit }
            if digits.count == 8, let code = UInt32(digits, radix: 16), let reason = Reason(rawValue: code & 0xFFF) { result.append(reason) }
            rest = rest[start.upperBound...]
        }
        return result
    }
}
