import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// Envoy's HTTP connection manager at the gateway where a request enters the mesh: one per
/// HTTP/1.1 connection (requests one after another; the manager is a handler on its pipeline) or
/// per HTTP/2 stream (fed by the connection's `HTTP2ServerStreams`; it answers through the
/// `HTTPDownstream` it was started on). For each request it asks `HTTPRequestRouter` where it
/// goes, asks the cluster manager for the plan's targets, carries out the route's fault and
/// retry policy (`FaultInjection`, `RetryState`: which outcome is retried, after which back-off,
/// at which target), relays the request and streams the response back, and answers with Envoy's
/// local replies when it cannot.
///
/// Upstreams come from the event loop's `HTTPUpstreams`: a stream of the pooled HTTP/2
/// connection to a peer gateway, or a keep-alive HTTP/1.1 connection to a local endpoint, kept
/// after its response for the next request of any downstream connection on the loop. A kept
/// connection the upstream closes before answering is a reset like any other, for the retry
/// policy to judge (as in Envoy: it cannot be told from an upstream that died on the request).
///
/// At the peer gateway that receives a request over the pooled connection, a manager with
/// origin `.peerGateway` makes no routing decision: the route is the connection's (its SNI names
/// the subset the entry gateway chose), the targets are local endpoints only, and the
/// forwarded headers, the client's identity in `x-forwarded-client-cert` included, pass as the
/// entry gateway set them.
package final class HTTPConnectionManager: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = HTTPServerRequestPart
    package typealias OutboundOut = HTTPServerResponsePart

    private let dataPlane: DataPlane
    private let routes: RouteConfiguration
    /// What the client's server name resolved to at the handshake.
    private let connectionRoute: Route
    private let connection: ConnectionRecord
    private let protocolName: String
    /// A client (route here) or a peer gateway (routed already; local endpoints only).
    private let origin: TrafficOrigin
    private var random: SplitMix64
    /// The event loop's upstream connections; set when the handler joins its pipeline.
    private var upstreams: HTTPUpstreams?

    private enum State {
        case idle
        /// Waiting for an upstream; request parts are held until it is there.
        case connecting(held: [HTTPClientRequestPart], ended: Bool)
        case forwarding(upstream: UpstreamExchange, ended: Bool)
        /// Between attempts (a retry's back-off) or in an injected delay: request parts are
        /// kept for the next attempt.
        case waiting(ended: Bool)
        /// An ext-authz provider is being asked (a CUSTOM policy matched): request parts are
        /// kept, nothing is routed or timed yet.
        case authorizing(ended: Bool)
        /// A local reply went out; the rest of the request body is read and dropped.
        case discarding
        /// A WebSocket upgrade was accepted: both sides carry bytes now, not HTTP.
        case tunnel
    }

    private var state = State.idle
    private var record = HTTPRequestRecord()
    private var forward: HTTPRequestRouter.Forward?
    /// The route action for `forward`, decided once per request.
    private var action: RouteAction?
    /// What the last route decided: the next request on a keep-alive connection mostly takes
    /// the same route, and the policy lookups behind it are not free.
    private var lastAction: RouteState?

    /// Everything decided once per route: its action and the route's circuit breakers,
    /// AuthorizationPolicies and RequestAuthentication rules. An HTTP/2 connection decides its
    /// own route's once and hands it to every stream's manager.
    /// A class: a keep-alive connection's requests share one, and each request takes it by one
    /// retain rather than copying (and releasing) its nine fields.
    package final class RouteState: Sendable {
        let route: Route
        let action: RouteAction
        let breakers: CircuitBreakers?
        let policies: [AuthorizationEngine.Policy]
        let authenticator: JWTAuthenticator?
        /// The workloads' inbound rate limits, for requests this gateway delivers itself.
        let inboundLimits: [LocalRateLimits.Applied]
        /// Telemetry tag overrides on this route's metrics, and the metrics it turns off.
        let metricTags: [MetricTagOverrides.Tag]
        let metricToggles: [MetricTagOverrides.Toggle]
        /// Telemetry's access-log rules for this route, least specific first (none: every request logged).
        let accessLogs: [AccessLogPolicy]

        /// A CUSTOM policy applies: the ext-authz step has something to decide.
        let hasCustomPolicy: Bool

        init(_ route: Route, action: RouteAction, routes: RouteConfiguration, clusters: ClusterManager) {
            let endpoints = clusters.current.inputs.endpoints
            self.route = route
            self.action = action
            breakers = action.httpLimits.isEmpty ? nil : clusters.breakers(for: route, limits: action.httpLimits)
            policies = routes.authorizationPolicies(for: route.service, endpoints: endpoints)
            hasCustomPolicy = policies.contains { $0.action == .custom }
            authenticator = routes.requestAuthenticator(for: route.service, endpoints: endpoints)
            inboundLimits = routes.inboundRateLimits(for: route.service, endpoints: endpoints)
            metricTags = routes.metricTags(for: route.service, endpoints: endpoints)
            metricToggles = routes.metricToggles(for: route.service, endpoints: endpoints)
            accessLogs = routes.accessLogPolicies(for: route.service, endpoints: endpoints)
        }
    }
    /// The route's RequestAuthentication rules (nil: none), and what a verified token adds.
    private var authenticator: JWTAuthenticator?
    private var requestPrincipal: RequestPrincipal?
    /// The token this connection's last request carried, verified (most clients send one token).
    private var lastToken: JWTAuthenticator.LastToken?
    private var tokenHeaders: [(name: String, value: String)] = []
    private var tokenHeaderRemoved: String?
    /// The verified JWT's payload, from the entry gateway to the peer gateway (trusted from
    /// gateways only, like x-forwarded-client-cert), so its policies see the same principal.
    private static let verifiedPayload = "x-eastwest-jwt-payload"
    /// The original client's protocol, from the entry gateway to the peer gateway when the route
    /// has `useClientProtocol` (between gateways every request is an HTTP/2 stream).
    private static let clientProtocol = "x-eastwest-client-protocol"
    /// The original client spoke HTTP/2 (at a peer gateway: as the entry gateway says).
    private var clientHTTP2 = false
    /// The AuthorizationPolicies that apply to the current route (none: nothing to decide).
    private var policies: [AuthorizationEngine.Policy] = []
    /// The route's cluster's circuit breakers (nil: no `connectionPool.http` limits), and the
    /// slots this request holds in them until it is logged.
    private var breakers: CircuitBreakers?
    private var holdsRequest = false, holdsPending = false, holdsRetry = false
    /// The request's retries: its policy, the targets tried.
    private var retry = RetryState(policy: .none)
    /// The target of the attempt in flight.
    private var target: PlannedTarget?
    /// A retry's back-off or a fault's delay: one at a time.
    private var attemptTimer: Scheduled<Void>?
    private var requestKeepAlive = true
    /// A gRPC client gets local replies as gRPC statuses.
    private var requestIsGRPC = false
    /// An HTTP/1.1 `Upgrade: websocket` request (Istio turns WebSocket upgrades on): passed on
    /// with its upgrade headers over its own HTTP/1.1 connection, and on `101` the two
    /// connections are joined byte for byte.
    private var requestIsWebSocket = false
    private var switchingProtocols = false
    private var responseStarted = false
    private var upstreamRequestEnded: ContinuousClock.Instant?
    /// The request as sent upstream, until its response starts: sent again by a retry, or on a
    /// fresh connection when a kept one turns out closed. Nil once over `retryBufferLimit`
    /// bytes: then nothing is retried (Envoy's `retry_or_shadow_abandoned`).
    private var kept: [HTTPClientRequestPart]? = []
    private var keptBytes = 0
    /// Envoy's default `per_connection_buffer_limit_bytes` (Istio sets none).
    private static let retryBufferLimit = 1 << 20
    /// Body bytes held while an upstream is dialled before the client is paused.
    private static let resendLimit = 64 << 10
    private var upstreamKeepAlive = false
    /// Body bytes held while the upstream is being dialled; past `resendLimit` the client waits.
    private var heldBytes = 0
    /// Hop-by-hop headers (and the ones a gateway replaces) that never cross it.
    private static let hopByHop = ["connection", "keep-alive", "proxy-connection"]
    /// Set by the gateway itself, whatever the client sent.
    private static let replacedAtTheEdge = ["x-request-id", "x-forwarded-client-cert", "x-forwarded-proto", "x-forwarded-for", verifiedPayload, clientProtocol]
    private static let responseHeadersDropped = hopByHop + ["server"]

    /// - Parameters:
    ///   - connectionState: what `connectionRoute` decides, when the caller has it already
    ///     (decided once per HTTP/2 connection rather than once per stream).
    ///   - idleTimeout: an HTTP/1 connection with no request for this long is closed (Envoy's
    ///     HCM `idle_timeout`, 1 h by default like the TCP proxy's); nil for an HTTP/2 stream.
    package init(dataPlane: DataPlane, routes: RouteConfiguration, connectionRoute: Route, connection: ConnectionRecord,
                 protocolName: String, origin: TrafficOrigin = .client, connectionState: RouteState? = nil, idleTimeout: Duration? = nil) {
        self.dataPlane = dataPlane
        self.routes = routes
        self.connectionRoute = connectionRoute
        self.connection = connection
        self.protocolName = protocolName
        self.origin = origin
        lastAction = connectionState
        self.idleTimeout = idleTimeout
        random = SplitMix64.fresh()
    }

    /// The route's `timeout` (from the whole request received, Envoy's router timer) and the
    /// retry policy's per-try timeout (from each attempt's request sent), on one lazily armed
    /// timer: requests that end in time cost it nothing.
    private var deadlines = RequestDeadlines()
    private var deadlineTimer: Scheduled<Void>?

    private let idleTimeout: Duration?
    private var idleCheck: RepeatedTask?
    /// When the last request began or ended.
    private var lastActive = NIODeadline.now()

    /// Where the responses go: the HTTP/1 connection this handler sits on, or one HTTP/2 stream.
    private var downstream: (any HTTPDownstream)!

    /// Starts serving `downstream` (an HTTP/2 stream's manager is not a channel handler: its
    /// connection's `HTTP2ServerStreams` hands it the stream's parts).
    package func start(on downstream: any HTTPDownstream) {
        self.downstream = downstream
        upstreams = dataPlane.httpUpstreams.on(downstream.eventLoop)
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        start(on: HTTP1Downstream(context))
        guard let idleTimeout else { return }
        // Checked a few times per period rather than a timer re-armed per request.
        let period = TimeAmount(idleTimeout), step = TimeAmount.idleCheckStep(for: period)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleRepeatedTask(initialDelay: step, delay: step) { _ in
            let manager = bound.value
            if case .idle = manager.state, manager.pipelined.isEmpty, NIODeadline.now() - manager.lastActive >= period {
                manager.idleCheck?.cancel()
                manager.downstream.close()
            }
        }
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        stopDeadlines()
        // The downstream holds the context, which holds this handler.
        (downstream as? HTTP1Downstream)?.detach()
    }

    /// HTTP/1.1 requests a client sent before the current response ended (pipelining), in order:
    /// taken up one by one as responses end. Kept here rather than by NIO's pipelining handler,
    /// which stops and restarts the socket's reads around every request (two `epoll_ctl`s per
    /// request for clients that never pipeline).
    /// An array, not a `CircularBuffer`: that allocates 16 slots up front, once per request for an
    /// HTTP/2 stream, which never pipelines; pipelining HTTP/1.1 clients are rare and capped.
    private var pipelined: [HTTPServerRequestPart] = []
    private var drainingPipelined = false
    private static let pipelinedLimit = 256
    /// The client closed its side: the connection closes once nothing is left to answer.
    private var clientInputClosed = false

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received(unwrapInboundIn(data))
    }

    /// One part of the client's request (or of a pipelined one).
    package func received(_ part: HTTPServerRequestPart) {
        if !pipelined.isEmpty || isPipelined(part) {
            pipelined.append(part)
            // A client far ahead of its answers waits (its requests stay in its socket).
            if pipelined.count > Self.pipelinedLimit { pauseClient(true) }
            return
        }
        handle(part)
    }

    /// A request head while the previous request is still being answered.
    private func isPipelined(_ part: HTTPServerRequestPart) -> Bool {
        guard isHeadPart(part) else { return false }
        if case .idle = state { return false }
        return true
    }

    private func handle(_ part: HTTPServerRequestPart) {
        switch part {
        case .head(let head): begin(head)
        case .body(let body):
            record.bytesReceived += body.readableBytes
            send(.body(.byteBuffer(body)), ended: false)
        case .end(let trailers):
            requestEnded(trailers)
        }
    }

    /// The whole request is in: the route's timer starts, mirrors go out, the attempt's per-try
    /// timer starts. Waiting for an ext-authz answer, the end is kept for when it comes.
    private func requestEnded(_ trailers: HTTPHeaders?) {
        send(.end(trailers), ended: true)
        if case .authorizing = state { return }
        startRequestTimer()
        if let mirrors = forward?.mirrors, !mirrors.isEmpty { sendMirrors(mirrors) }
        switch state {
        case .connecting, .forwarding: startPerTryTimer()
        case .idle, .discarding, .tunnel, .waiting, .authorizing: break
        }
        if case .discarding = state {
            state = .idle
            finishRequest()
        }
    }

    /// What one read of the client brought goes upstream now: unflushed, a body would pile up in
    /// the gateway until its end (and an HTTP/2 stream, counting it as pending, would stop the
    /// client for good).
    package func channelReadComplete(context: ChannelHandlerContext) {
        readComplete()
        context.fireChannelReadComplete()
    }

    package func readComplete() {
        if case .forwarding(let exchange, _) = state { exchange.channel.flush() }
    }

    package func channelWritabilityChanged(context: ChannelHandlerContext) {
        downstreamWritabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    /// Backpressure, response direction: a client that reads slowly stops the upstream's reads
    /// instead of the response piling up in the gateway.
    package func downstreamWritabilityChanged() {
        if case .forwarding(let exchange, _) = state { setUpstreamReads(exchange, on: downstream.isWritable) }
    }

    /// Turns the upstream's reads on or off, only when that changes anything (a kept connection
    /// remembers being paused by an earlier response's slow client).
    private func setUpstreamReads(_ exchange: UpstreamExchange, on: Bool) {
        guard exchange.relay.readsPaused == on else { return }
        exchange.relay.readsPaused = !on
        let upstream = exchange.channel
        upstream.setOption(ChannelOptions.autoRead, value: on).whenSuccess { if on { upstream.read() } }
    }

    /// Backpressure, request direction: an upstream that takes the body slowly (or is still
    /// being dialled with more than `resendLimit` held) stops the client's reads.
    private func upstreamWritabilityChanged(_ exchange: UpstreamExchange) {
        guard case .forwarding(let current, _) = state, current === exchange else { return }
        pauseClient(!exchange.channel.isWritable)
    }

    private var clientPaused = false

    private func pauseClient(_ pause: Bool) {
        guard pause != clientPaused else { return }
        clientPaused = pause
        downstream.pauseReads(pause)
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // A client that half-closed after its requests still gets their answers.
            clientInputClosed = true
            if case .idle = state, pipelined.isEmpty { downstream.close() }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Envoy's answer to a client that breaks HTTP/1: 400 `Bad Request`, or 431 past 60 KiB of
    /// headers (Envoy's `max_request_headers_kb`), flag `DPE`, then the connection closes.
    /// Written only when no response has started (otherwise the close is all the client can be
    /// told); logged and counted like any request. Other connections and requests are untouched.
    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else { return context.fireErrorCaught(error) }
        let detail = "malformed HTTP/1 from the client: \(parserError)"
        let reply = parserError == .headerOverflow ? HTTPLocalReply.headersTooLarge(detail) : .badRequest(detail)
        var malformed = HTTPRequestRecord(connection: connection)
        malformed.flags = reply.flags
        malformed.detail = detail
        malformed.directResponse = true
        var responseOpen = false
        if case .forwarding = state { responseOpen = responseStarted }
        if !responseOpen {
            malformed.responseCode = Int(reply.status.code)
            malformed.bytesSent = reply.payload.count
            downstream.write(.head(reply.head(closing: true)))
            downstream.write(.body(.byteBuffer(ByteBuffer(bytes: reply.payload))))
            downstream.writeAndFlush(.end(nil))
        }
        malformed.finish(logger: dataPlane.logger, format: dataPlane.accessLog)
        downstream.close()
    }

    package func channelInactive(context: ChannelHandlerContext) {
        downstreamClosed()
        context.fireChannelInactive()
    }

    /// The client's connection (or its HTTP/2 stream) is gone.
    package func downstreamClosed() {
        stopDeadlines()
        cancelAttemptTimer()
        authorizationCheck?.cancel()
        authorizationCheck = nil
        if case .forwarding(let exchange, _) = state {
            state = .idle
            exchange.channel.close(promise: nil)
        }
        if forward != nil, record.responseCode == 0 { record.flags.insert(.downstreamTermination) }
        logRequest()
        state = .idle
    }

    // MARK: - One request

    private func begin(_ head: HTTPRequestHead) {
        if idleTimeout != nil { lastActive = .now() }
        record = HTTPRequestRecord(connection: connection)
        if !filterResponseHeaders.isEmpty { filterResponseHeaders = [] }
        record.method = head.method.rawValue
        record.path = head.uri
        record.protocol = protocolName
        record.authority = head.headers.first(name: "host") ?? "-"
        if origin == .peerGateway {
            // The client is the one the entry gateway verified and named.
            record.sourcePrincipal = head.headers.first(name: "x-forwarded-client-cert").flatMap(ForwardedClientCert.originalClient)
            record.reporter = "destination"
        }
        // An HTTP/2 stream ends with its response; `connection` headers are HTTP/1 only.
        requestKeepAlive = head.version.major >= 2 || head.isKeepAlive
        requestIsGRPC = head.headers.first(name: "content-type")?.hasASCIIPrefixIgnoringCase("application/grpc") == true
        clientHTTP2 = head.version.major >= 2
        if origin == .peerGateway, let spoken = head.headers.first(name: Self.clientProtocol) { clientHTTP2 = spoken == "HTTP/2" }
        requestIsWebSocket = head.version == .http1_1 && head.headers.first(name: "upgrade")?.lowercased() == "websocket"
            && head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
        switchingProtocols = false
        responseStarted = false
        kept = []
        keptBytes = 0
        checkAwaitingBody = nil

        let facts = HTTPRequestFacts(method: head.method.rawValue, path: head.uri, authority: record.authority == "-" ? "" : record.authority,
                                     headers: head.headers, sourceNamespace: connection.sourceNamespace)
        let clusters = dataPlane.clusters
        let decision = origin == .peerGateway
            ? .forward(HTTPRequestRouter.Forward(route: connectionRoute, routeName: "", origin: nil, requestHeaders: .init(), responseHeaders: .init()))
            : HTTPRequestRouter.decide(facts, connectionRoute: connectionRoute, routes: routes, services: clusters.current,
                                       listenerPort: dataPlane.config.listen.port, random: random.next())
        if let limits = routes.localRateLimits?.gateway, !limits.isEmpty {
            // Envoy's local_ratelimit, first in the HTTP filters (the EnvoyFilter inserts it).
            var routeName = "", route = connectionRoute
            if case .forward(let forward) = decision { routeName = forward.routeName; route = forward.route }
            if let limit = LocalRateLimits.pick(limits, routeName: routeName), !admitted(by: limit, facts: facts, route: route) {
                if case .forward(let forward) = decision { self.forward = forward; record.route = forward.route; record.routeName = forward.routeName }
                return
            }
        }
        switch decision {
        case .reply(let reply):
            localReply(reply)
        case .forward(let forward):
            self.forward = forward
            record.route = forward.route
            record.routeName = forward.routeName
            let decided = lastAction.flatMap { $0.route == forward.route ? $0 : nil }
                ?? RouteState(forward.route, action: routes.action(for: forward.route, origin: origin), routes: routes, clusters: clusters)
            lastAction = decided
            if !decided.metricTags.isEmpty { record.metricTags = MetricTagOverrides.evaluate(decided.metricTags, head, reporter: record.reporter) }
            if !decided.metricToggles.isEmpty { record.disabledMetrics = MetricTagOverrides.disabled(decided.metricToggles, reporter: record.reporter) }
            if !decided.accessLogs.isEmpty { record.accessLog = AccessLogPolicy.pick(decided.accessLogs, reporter: record.reporter) }
            breakers = decided.breakers
            policies = decided.policies
            authenticator = decided.authenticator
            requestPrincipal = nil
            tokenHeaders = []
            tokenHeaderRemoved = nil
            // Istio's CUSTOM first (ext_authz runs before jwt_authn and RBAC).
            if decided.hasCustomPolicy {
                switch AuthorizationEngine.custom(authorizationRequest(head, facts: facts, route: forward.route), policies: policies,
                                                  providers: routes.externalAuthorizers, forwarded: origin == .peerGateway) {
                case .pass:
                    break
                case .refuse(let rule, let why):
                    record.codeDetails = "rbac_access_denied_matched_policy[\(rule)]"
                    localReply(.forbidden("\(record.codeDetails ?? ""): \(why)"))
                    return
                case .check(let authorizer) where authorizer.requestBody != nil && !requestIsWebSocket:
                    // includeRequestBodyInCheck: the body first (its parts are kept as they come).
                    state = .authorizing(ended: false)
                    checkAwaitingBody = PendingCheck(authorizer: authorizer, head: head, facts: facts, decided: decided)
                    return
                case .check(let authorizer):
                    askExternalAuthorizer(authorizer, head: head, facts: facts, decided: decided)
                    return
                }
            }
            admit(head, facts: facts, forward: forward, decided: decided)
        }
    }

    /// The rest of a routed request's way in, once CUSTOM let it through: the token
    /// (RequestAuthentication), the policies (RBAC), the inbound rate limit, the fault, the
    /// first attempt.
    private func admit(_ head: HTTPRequestHead, facts: HTTPRequestFacts, forward: HTTPRequestRouter.Forward, decided: RouteState) {
        let clusters = dataPlane.clusters
        let action = decided.action
        // At a peer gateway, what the entry gateway verified; else (the entry gateway had no
        // rule for it) the token itself, under this gateway's rules.
        if origin == .peerGateway, let verified = head.headers.first(name: Self.verifiedPayload).flatMap(RequestPrincipal.init(payload:)) {
            requestPrincipal = verified
        } else if let authenticator, !authenticated(head, authenticator: authenticator) {
            return
        }
        if !policies.isEmpty, !authorized(head, facts: facts, route: forward.route) { return }
        self.action = action
        // A peer gateway only walks its local endpoints on connect failures: the entry
        // gateway's retry policy covers the request end to end, once.
        retry = RetryState(policy: origin == .peerGateway ? action.retry : forward.retry)
        guard let first = retry.nextTarget(in: clusters.candidates(for: forward.route, origin: origin)) else {
            localReply(origin == .peerGateway
                ? .noHealthyUpstream("no local endpoint for \(forward.route.service) (traffic from a peer gateway is never forwarded again)")
                : .noHealthyUpstream(for: forward.route))
            return
        }
        // The inbound sidecar's rate limit, where this gateway is the last hop to the workload.
        if origin == .peerGateway || first.target.isLocal, let limit = LocalRateLimits.pick(decided.inboundLimits, routeName: forward.routeName),
           !admitted(by: limit, facts: facts, route: forward.route) { return }
        target = first
        let upstream = HTTPClientRequestPart.head(upstreamHead(head, forward: forward))
        keep(upstream)
        let fault = forward.fault?.decide(delayRandom: random.next(), abortRandom: random.next())
        if let delay = fault?.delay {
            // Envoy's fault filter runs before the router: the route's timer starts after it.
            record.flags.insert(.delayInjected)
            state = .waiting(ended: false)
            attemptTimer = schedule(in: delay) { manager in
                manager.afterDelay(abort: fault?.abort)
            }
            return
        }
        if let abort = fault?.abort {
            localReply(.faultAbort(abort))
            return
        }
        state = .connecting(held: [upstream], ended: false)
        openExchange()
    }

    /// A CUSTOM policy matched: the provider is asked, the request waits (its parts kept), and
    /// its answer lets the request in, or answers the client.
    private func askExternalAuthorizer(_ authorizer: ExternalAuthorizer, head: HTTPRequestHead, facts: HTTPRequestFacts, decided: RouteState,
                                       body: ExternalAuthorizer.CheckedBody? = nil) {
        guard let upstreams, let forward else { return }
        state = .authorizing(ended: false)
        let bound = NIOLoopBound(self, eventLoop: downstream.eventLoop)
        let request: (head: HTTPRequestHead, body: [UInt8])
        switch authorizer.transport {
        case .http:
            // The partial-body header is the gateway's to say, never the client's.
            var checked = head
            checked.headers.remove(name: ExternalAuthorizer.partialBodyHeader)
            if let body { checked.headers.add(name: ExternalAuthorizer.partialBodyHeader, value: String(body.partial)) }
            request = (authorizer.checkRequest(for: checked, body: body?.bytes ?? []), body?.bytes ?? [])
        case .grpc:
            request = authorizer.grpcCheckRequest(.init(
                source: .init(hostPort: connection.downstreamRemote, principal: record.sourcePrincipal),
                destination: .init(hostPort: connection.downstreamLocal, principal: dataPlane.tls.identity?.description),
                time: record.startDate, streamID: random.next(), head: head, authority: facts.authority, protocolName: clientHTTP2 ? "HTTP/2" : "HTTP/1.1",
                body: body))
        }
        authorizationCheck = ExternalAuthorizationCheck.ask(authorizer, request: request, routes: routes, clusters: dataPlane.clusters,
                                                            upstreams: upstreams, eventLoop: downstream.eventLoop) { answer in
            let manager = bound.value
            manager.authorizationCheck = nil
            guard case .authorizing = manager.state, manager.forward?.route == forward.route else { return }
            manager.externalAuthorizationAnswered(authorizer, answer, head: head, facts: facts, decided: decided)
        }
    }

    private var authorizationCheck: ExternalAuthorizationCheck?

    /// A CUSTOM check waiting for the request's body (`includeRequestBodyInCheck`).
    private struct PendingCheck {
        var authorizer: ExternalAuthorizer
        var head: HTTPRequestHead
        var facts: HTTPRequestFacts
        var decided: RouteState
    }
    private var checkAwaitingBody: PendingCheck?

    /// Envoy's ext_authz `decodeData` with `with_request_body`: the check goes once the request
    /// has ended, or — `allowPartialMessage` — once `maxRequestBytes` are in (the check gets
    /// those); without it, a body past `maxRequestBytes` is Envoy's buffer-limit answer, 413.
    private func bodyArrived(for pending: PendingCheck, ended: Bool) {
        guard let settings = pending.authorizer.requestBody else { return }
        // Without allowPartialMessage the check waits for the end, and a body past the limit is
        // refused (Envoy's decoder buffer limit); a body past what the gateway keeps for a
        // request (`retryBufferLimit`) can be neither checked nor replayed.
        if kept == nil || (!settings.allowPartialMessage && keptBytes > settings.maxRequestBytes) {
            checkAwaitingBody = nil
            record.codeDetails = "request_payload_too_large"
            localReply(.payloadTooLarge("the body is over includeRequestBodyInCheck.maxRequestBytes (\(settings.maxRequestBytes)) of provider \(pending.authorizer.name)"))
            return
        }
        let full = settings.allowPartialMessage && keptBytes >= settings.maxRequestBytes
        guard ended || full else { return }
        checkAwaitingBody = nil
        var body: [UInt8] = []
        for part in kept ?? [] {
            guard case .body(.byteBuffer(let buffer)) = part, body.count < settings.maxRequestBytes else { continue }
            body += buffer.readableBytesView.prefix(settings.maxRequestBytes - body.count)
        }
        // A request that ended without a body is checked as Envoy checks one that ended at its
        // headers: no body, no partial-body header.
        let checked = keptBytes == 0 ? nil : ExternalAuthorizer.CheckedBody(bytes: body, partial: keptBytes > body.count, received: keptBytes)
        askExternalAuthorizer(pending.authorizer, head: pending.head, facts: pending.facts, decided: pending.decided, body: checked)
    }

    /// Envoy's ext_authz `onComplete`: allowed (with its headers) goes on; denied answers with the
    /// provider's status, headers and body; an error is `statusOnError` unless `failOpen`. Both
    /// refusals carry `UAEX`.
    private func externalAuthorizationAnswered(_ authorizer: ExternalAuthorizer, _ answer: ExternalAuthorizationCheck.Answer?, head: HTTPRequestHead,
                                               facts: HTTPRequestFacts, decided: RouteState) {
        guard let forward else { return }
        let cluster = forward.route.envoyClusterName
        var head = head
        let verdict = authorizer.verdict(answer)
        ExternalAuthorizationMetrics.count(verdict, failOpen: authorizer.failOpen, cluster: cluster)
        switch verdict {
        case .allowed(let allowed):
            for header in allowed.requestHeaders { header.apply(to: &head.headers) }
            for name in allowed.removeFromRequest where name != "host" { head.headers.remove(name: name) }
            filterResponseHeaders += allowed.addToResponse.map { ($0.name, $0.value) }
        case .denied(let status, let headers, let body):
            record.codeDetails = "ext_authz_denied"
            localReply(.externalAuthorizationDenied(status: status, headers: headers, body: body, provider: authorizer.name))
            return
        case .failed where authorizer.failOpen:
            break  // on, as if allowed with nothing to change
        case .failed:
            record.codeDetails = "ext_authz_error"
            localReply(.externalAuthorizationFailed(status: authorizer.statusOnError, provider: authorizer.name))
            return
        }
        // The parts that came while waiting follow the head, as if they had just arrived.
        guard case .authorizing(let ended) = state else { return }
        let waited = kept ?? []
        kept = []
        keptBytes = 0
        // As a delay would leave it: a refusal now knows whether the request is all in.
        state = .waiting(ended: ended)
        admit(head, facts: facts, forward: forward, decided: decided)
        for part in waited {
            switch state {
            case .connecting, .forwarding, .waiting: break
            case .idle, .discarding, .tunnel, .authorizing: return
            }
            if case .end(let trailers) = part { requestEnded(trailers) } else { send(part, ended: false) }
        }
    }

    /// One request through a local rate limit; false: refused with its local reply. The
    /// limit's `x-ratelimit-*` headers go on whatever answers the request.
    private func admitted(by picked: LocalRateLimits.Picked, facts: HTTPRequestFacts, route: Route) -> Bool {
        let limit = picked.limit
        let descriptors = picked.descriptors(for: RateLimitRequest(
            facts: facts, remoteAddress: forwardedClientAddress(facts.headers) ?? connection.downstreamRemoteAddress,
            sourceCluster: "\(dataPlane.config.name).\(dataPlane.config.effectiveNamespace)", destinationCluster: route.envoyClusterName))
        guard let consulted = limit.consult(enabledRoll: random.next(), enforcedRoll: random.next(), descriptors: descriptors,
                                            connectionBuckets: &connection.rateLimitBuckets) else { return true }
        filterResponseHeaders += limit.headers(consulted)
        switch consulted.verdict {
        case .pass, .limitedNotEnforced:  // counted when not enforced; Envoy lets it through
            return true
        case .refuse:
            record.codeDetails = "local_rate_limited"
            localReply(.rateLimited(limit.settings))
            return false
        }
    }

    /// What the request's filters add to whatever answers it (Envoy adds them in their
    /// encodeHeaders): the local rate limit's `x-ratelimit-*`, the ext-authz provider's
    /// `headersToDownstreamOnAllow`.
    private var filterResponseHeaders: [(name: String, value: String)] = []

    /// The verified token's payload for the current target: a peer gateway gets it, a backend
    /// never sees what the gateways tell each other.
    private func addVerifiedPayload(to headers: inout HTTPHeaders) {
        guard let principal = requestPrincipal else { return }
        if target?.target.isLocal == false {
            headers.replaceOrAdd(name: Self.verifiedPayload, value: principal.payload)
        } else {
            headers.removeIfPresent(Self.verifiedPayload)
        }
    }

    /// jwt_authn's outputs for a token this gateway verified: the token gone unless forwarded,
    /// the claim and payload headers.
    private func applyTokenOutputs(to headers: inout HTTPHeaders) {
        if let removed = tokenHeaderRemoved { headers.remove(name: removed) }
        for header in tokenHeaders { headers.replaceOrAdd(name: header.name, value: header.value) }
    }

    /// Envoy's jwt_authn with Istio's requirement: no token passes, a token must verify.
    /// False: refused (401, or 403 for audiences).
    private func authenticated(_ head: HTTPRequestHead, authenticator: JWTAuthenticator) -> Bool {
        switch authenticator.authenticate(head.headers, path: head.uri, last: &lastToken) {
        case .noToken:
            return true
        case .verified(let principal, let headers, let removing):
            requestPrincipal = principal
            tokenHeaders = headers
            tokenHeaderRemoved = removing
            return true
        case .rejected(let status, let message):
            record.codeDetails = "jwt_authn_access_denied{\(message)}"
            localReply(.jwtRejected(status: status, message: message, uri: "https://\(record.authority)\(head.uri)"))
            return false
        }
    }

    /// Istio's RBAC filter, before any fault or upstream: the request as the original client
    /// sent it, judged by the AuthorizationPolicies of the route. False: refused with 403.
    private func authorized(_ head: HTTPRequestHead, facts: HTTPRequestFacts, route: Route) -> Bool {
        let decision = AuthorizationEngine.decide(authorizationRequest(head, facts: facts, route: route), policies: policies)
        for audited in decision.audited { dataPlane.logger.info("AuthorizationPolicy AUDIT matched", metadata: ["policy": "\(audited)", "path": "\(facts.path)"]) }
        for shadow in decision.shadow { dataPlane.logger.info("AuthorizationPolicy dry run", metadata: ["result": "\(shadow)", "path": "\(facts.path)"]) }
        guard !decision.allowed else { return true }
        record.codeDetails = decision.responseDetails
        localReply(.forbidden("\(decision.responseDetails): \(record.sourcePrincipal ?? "a client without a certificate") \(facts.method) \(facts.path)"))
        return false
    }

    /// The request as policies judge it: the original client, its addresses, its HTTP parts, the
    /// token's principal once verified.
    private func authorizationRequest(_ head: HTTPRequestHead, facts: HTTPRequestFacts, route: Route) -> AuthorizationRequest {
        let peer = connection.downstreamRemoteAddress
        let remote = forwardedClientAddress(head.headers)
        var request = AuthorizationRequest(principal: record.sourcePrincipal, sourceIP: peer, remoteIP: remote, destinationIP: connection.downstreamLocalAddress,
                                           listenerPort: dataPlane.config.listen.port, servicePort: route.service.port, serverName: connection.serverName,
                                           http: .init(host: facts.authority, method: facts.method, path: facts.path, headers: head.headers))
        request.requestPrincipal = requestPrincipal
        return request
    }

    /// At a peer gateway, the original client's address: the first hop the entry gateway
    /// recorded in `x-forwarded-for`. nil elsewhere (the connection's peer is the client).
    private func forwardedClientAddress(_ headers: HTTPHeaders) -> String? {
        guard origin == .peerGateway else { return nil }
        return headers.first(name: "x-forwarded-for").flatMap { $0.split(separator: ",").first }.map { $0.trimmingCharacters(in: .whitespaces) }
    }

    /// A fault's delay is over: its abort, if the roll gave one, else the first attempt.
    private func afterDelay(abort: FaultInjection.Abort?) {
        guard case .waiting(let ended) = state else { return }
        if let abort {
            localReply(.faultAbort(abort))
            return
        }
        startRequestTimer()
        startAttempt(ended: ended)
    }

    /// Runs `task` on the loop after `delay`, with the manager.
    private func schedule(in delay: Duration,
                          _ task: @escaping (HTTPConnectionManager) -> Void) -> Scheduled<Void> {
        let bound = NIOLoopBound((self, task), eventLoop: downstream.eventLoop)
        return downstream.eventLoop.scheduleTask(in: TimeAmount(delay)) {
            let (manager, task) = bound.value
            manager.attemptTimer = nil
            task(manager)
        }
    }

    /// Ends the back-off or delay, and the attempt's per-try timeout.
    private func cancelAttemptTimer() {
        attemptTimer?.cancel()
        attemptTimer = nil
        deadlines.clear(.perTry)
    }

    /// Sends the kept request to `target` (a retry, or the first attempt after a delay).
    private func startAttempt(ended: Bool) {
        guard var parts = kept else { return }
        if origin == .client, case .head(var head) = parts.first {
            // Envoy's `x-envoy-attempt-count` (Istio turns it on): which attempt this is.
            head.headers.replaceOrAdd(name: "x-envoy-attempt-count", value: String(retry.attempts))
            // A retry may move between a local endpoint and a peer gateway.
            addVerifiedPayload(to: &head.headers)
            parts[0] = .head(head)
        }
        state = .connecting(held: parts, ended: ended)
        openExchange()
        if ended { startPerTryTimer() }
    }

    /// The policy's per-try timeout, from the whole request sent on (Envoy's per-try timer).
    private func startPerTryTimer() {
        guard let perTry = retry.policy.perTryTimeout, attemptTimer == nil, !deadlines.isSet(.perTry), !responseStarted else { return }
        if let at = deadlines.set(.perTry, at: .now() + TimeAmount(perTry)) { armDeadlines(at: at) }
    }

    private func perTryTimedOut(after perTry: Duration) {
        guard !responseStarted else { return }
        let ended: Bool
        switch state {
        case .connecting(_, let requestEnded): ended = requestEnded
        case .forwarding(let exchange, let requestEnded):
            ended = requestEnded
            state = .waiting(ended: ended)
            exchange.channel.close(promise: nil)
        case .idle, .discarding, .tunnel, .waiting, .authorizing: return
        }
        state = .waiting(ended: ended)
        reportOutlier(.localOriginTimeout)
        let reason = "no response from \(target?.target.description ?? "the upstream") within the per-try timeout \(perTry)"
        attemptEnded(.perTryTimeout, reason: reason, reply: .upstreamTimeout(reason))
    }

    /// The attempt in flight ended with `outcome` and its exchange is gone: another attempt
    /// after the back-off, or `reply` (with the retry's flags) as the answer.
    private func attemptEnded(_ outcome: AttemptOutcome, reason: String, reply: HTTPLocalReply) {
        cancelAttemptTimer()
        switch decideRetry(outcome, reason: reason) {
        case .retry(let backoff):
            let ended: Bool
            switch state {
            case .connecting(_, let requestEnded), .forwarding(_, let requestEnded), .waiting(let requestEnded): ended = requestEnded
            case .idle, .discarding, .tunnel, .authorizing: return
            }
            state = .waiting(ended: ended)
            scheduleRetry(after: backoff)
        case .giveUp(let why):
            var reply = reply
            reply.flags.remove(.upstreamRetryLimitExceeded)
            reply.flags.formUnion(Self.flags(why, attempts: retry.attempts))
            localReply(reply)
        }
    }

    /// What the retry state makes of `outcome`, counted as Envoy counts it. A retry takes a
    /// slot of the cluster's `maxRetries` until its back-off ends.
    private func decideRetry(_ outcome: AttemptOutcome, reason: String) -> RetryState.Decision {
        var allowed = true
        if let breakers, breakers.limits.maxRetries != nil, retry.policy.retries(outcome), retry.attempts < retry.policy.maxAttempts, kept != nil {
            allowed = breakers.acquire(.retries)
            holdsRetry = allowed
        }
        let decision = retry.attemptFailed(outcome, reason: reason, requestKept: kept != nil, retryAllowed: allowed, random: random.next())
        guard let cluster = forward?.route.envoyClusterName else { return decision }
        switch decision {
        case .retry: RetryMetrics.retried(cluster)
        case .giveUp(.exhausted) where retry.attempts > 1: RetryMetrics.limitExceeded(cluster)
        case .giveUp(.overflow): RetryMetrics.overflowed(cluster)
        case .giveUp: break
        }
        return decision
    }

    /// Envoy's flags for a request whose retries ended: `URX` when they ran out, `UO` when the
    /// budget stopped them.
    private static func flags(_ giveUp: RetryState.GiveUp, attempts: Int) -> Set<ResponseFlag> {
        switch giveUp {
        case .exhausted: attempts > 1 ? [.upstreamRetryLimitExceeded] : []
        case .overflow: [.upstreamOverflow]
        case .notRetriable, .requestNotKept: []
        }
    }

    /// The back-off is over: the next target from a fresh look at the plan (health may have
    /// moved the load), then the attempt.
    private func retryNow() {
        guard case .waiting(let ended) = state, let forward else { return }
        if holdsRetry {
            holdsRetry = false
            breakers?.release(.retries)
        }
        guard let next = retry.nextTarget(in: dataPlane.clusters.candidates(for: forward.route, origin: origin)) else {
            localReply(.noHealthyUpstream(for: forward.route))
            return
        }
        target = next
        startAttempt(ended: ended)
    }

    /// The request as the upstream gets it: Envoy's edge handling at a gateway (x-request-id
    /// replaced, x-forwarded-*, the client's identity in x-forwarded-client-cert, x-envoy-*
    /// stripped) and the route's header operations. From a peer gateway, as it was sent, less
    /// the hop-by-hop headers. Edited in place: no header is copied or lower-cased per request.
    private func upstreamHead(_ head: HTTPRequestHead, forward: HTTPRequestRouter.Forward) -> HTTPRequestHead {
        var upstream = HTTPRequestHead(version: .http1_1, method: head.method, uri: forward.path ?? head.uri, headers: head.headers)
        upstream.headers.removeAll(named: Self.hopByHop)
        // `upgrade` is hop-by-hop too, unless the request is upgrading (Envoy's
        // mutateRequestHeaders): then it goes on with the `connection` that names it.
        if requestIsWebSocket { upstream.headers.add(name: "connection", value: "upgrade") } else { upstream.headers.removeIfPresent("upgrade") }
        if origin == .peerGateway {
            // For this gateway's policies only; the backend never sees it.
            upstream.headers.removeIfPresent(Self.verifiedPayload)
            upstream.headers.removeIfPresent(Self.clientProtocol)
            applyTokenOutputs(to: &upstream.headers)
            record.requestHeaders = upstream.headers
            return upstream
        }
        upstream.headers.removeAll(named: Self.replacedAtTheEdge)
        // One pass; nothing is allocated when the client sent none (the usual case).
        for name in upstream.headers.compactMap({ $0.name.hasASCIIPrefixIgnoringCase("x-envoy-") ? $0.name : nil }) {
            upstream.headers.remove(name: name)
        }
        let remote = connection.downstreamRemoteAddress
        upstream.headers.add(name: "x-forwarded-for", value: head.headers.first(name: "x-forwarded-for").map { "\($0), \(remote)" } ?? remote)
        upstream.headers.add(name: "x-forwarded-proto", value: "https")
        upstream.headers.add(name: "x-request-id", value: RequestID.make(&random))
        if let client = connection.sourcePrincipal {
            // Envoy's SANITIZE_SET at a gateway: only the gateway sets it, for the client it
            // verified. `By` is this gateway; peer gateways trust it only from gateway identities.
            upstream.headers.add(name: "x-forwarded-client-cert", value: dataPlane.tls.identity.map { "By=\($0);URI=\(client)" } ?? "URI=\(client)")
        }
        if let authority = forward.authority {
            upstream.headers.replaceOrAdd(name: "host", value: authority)
            record.authority = authority
        }
        if let path = forward.path {
            // Envoy keeps the path as sent for the access log (`%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`).
            upstream.headers.add(name: "x-envoy-original-path", value: head.uri)
            record.path = path
        }
        upstream.headers.add(name: "x-envoy-attempt-count", value: "1")
        if requestPrincipal != nil {
            applyTokenOutputs(to: &upstream.headers)
            addVerifiedPayload(to: &upstream.headers)
        }
        if let timeout = forward.timeout {
            // Envoy's setTimeoutHeaders: the upstream learns how long the gateway will wait.
            upstream.headers.add(name: "x-envoy-expected-rq-timeout-ms", value: String(timeout.milliseconds))
        }
        forward.requestHeaders.apply(to: &upstream.headers)
        record.requestHeaders = upstream.headers
        return upstream
    }

    private func send(_ part: HTTPClientRequestPart, ended: Bool) {
        switch state {
        case .connecting(var held, _):
            keep(part)
            // The state lets go of its array first: appending to a copy the enum still holds
            // would copy every held part, once per part, while the upstream is dialled.
            state = .idle
            held.append(part)
            state = .connecting(held: held, ended: ended)
            if case .body(.byteBuffer(let buffer)) = part { heldBytes += buffer.readableBytes }
            if heldBytes > Self.resendLimit { pauseClient(true) }
        case .forwarding(let exchange, _):
            keep(part)
            exchange.channel.write(part, promise: nil)
            if ended { exchange.channel.flush(); upstreamRequestEnded = .now }
            state = .forwarding(upstream: exchange, ended: ended)
        case .waiting:
            keep(part)
            state = .waiting(ended: ended)
            // Nothing takes the body while waiting; a large one waits in the client.
            if keptBytes > Self.resendLimit { pauseClient(true) }
        case .authorizing:
            keep(part)
            state = .authorizing(ended: ended)
            if let pending = checkAwaitingBody {
                // Bounded by maxRequestBytes, not by pausing the client: the check needs the body.
                bodyArrived(for: pending, ended: ended)
            } else if keptBytes > Self.resendLimit {
                pauseClient(true)
            }
        case .idle, .discarding, .tunnel:
            break
        }
    }

    /// The route's mirrors, each rolled for this request: a copy of the whole request (when it
    /// was small enough to keep, as Envoy needs it buffered) to the mirror's first target.
    private func sendMirrors(_ mirrors: [RequestMirror]) {
        guard origin == .client, let parts = kept, let upstreams, let forward else { return }
        for mirror in mirrors where mirror.holds(random: random.next()) {
            guard case .success(let route) = HTTPRequestRouter.resolve(mirror.destination, origin: forward.origin ?? "mirror", routes: routes,
                                                                       services: dataPlane.clusters.current),
                  let target = dataPlane.clusters.candidates(for: route, origin: origin).first else { continue }
            MirroredRequest.send(parts, to: target.target, action: routes.action(for: route, origin: origin), timeout: forward.timeout,
                                 upstreams: upstreams, eventLoop: downstream.eventLoop)
        }
    }

    /// Envoy's route timeout: from the whole request received to the whole response, across
    /// every attempt. Before the response starts it is a 504 `UT`; after, the client's stream is
    /// ended (the status has gone out already).
    private func startRequestTimer() {
        guard let timeout = forward?.timeout, !deadlines.isSet(.route), awaitsResponse else { return }
        if let at = deadlines.set(.route, at: .now() + TimeAmount(timeout)) { armDeadlines(at: at) }
    }

    private func armDeadlines(at deadline: NIODeadline) {
        deadlineTimer?.cancel()
        let bound = NIOLoopBound(self, eventLoop: downstream.eventLoop)
        deadlineTimer = downstream.eventLoop.scheduleTask(deadline: deadline) {
            let manager = bound.value
            manager.deadlineTimer = nil
            manager.deadlinesPassed()
        }
    }

    /// The timer ran: the deadlines that passed take effect (a per-try timeout may start the
    /// next attempt and its own), and the timer is armed for what is left.
    private func deadlinesPassed() {
        let passed = deadlines.fired(now: .now())
        if passed.perTry, let perTry = retry.policy.perTryTimeout { perTryTimedOut(after: perTry) }
        if passed.route, let timeout = forward?.timeout { requestTimedOut(after: timeout) }
        if let at = deadlines.armIfNeeded() { armDeadlines(at: at) }
    }

    private func stopDeadlines() {
        deadlineTimer?.cancel()
        deadlineTimer = nil
        deadlines.reset()
    }

    private func requestTimedOut(after timeout: Duration) {
        guard awaitsResponse else { return }
        cancelAttemptTimer()
        // A local-origin timeout: a 504 for outlier detection unless split (Envoy).
        if !responseStarted { reportOutlier(.localOriginTimeout) }
        if responseStarted {
            record.flags.insert(.upstreamRequestTimeout)
            if case .forwarding(let exchange, _) = state { exchange.channel.close(promise: nil) }
            state = .idle
            finishRequest()
            downstream.close()
            return
        }
        localReply(.upstreamTimeout("no response from \(record.upstream?.description ?? "the upstream") within the route's timeout \(timeout)"))
    }

    /// A request is with an upstream (being dialled or answered), not answered yet.
    private var awaitsResponse: Bool {
        switch state {
        case .connecting, .forwarding, .waiting: true
        case .idle, .discarding, .tunnel, .authorizing: false
        }
    }

    private func cancelRequestTimer() {
        deadlines.clear(.route)
    }

    /// Asks the loop's pool for a way to the current target: a new or kept connection, or a
    /// stream of the pooled connection to a peer gateway.
    private func openExchange() {
        guard let action, let upstreams, let planned = target else { return }
        if let breakers {
            // Envoy's connection pool: a request in flight, then one waiting for a connection.
            if !holdsRequest {
                guard breakers.acquire(.requests) else { return overflow("\(breakers.limits.maxRequests ?? 0) requests in flight (http2MaxRequests)") }
                holdsRequest = true
            }
            guard breakers.acquire(.pending) else { return overflow("\(breakers.limits.maxPending ?? 0) requests pending (http1MaxPendingRequests)") }
            holdsPending = true
        }
        upstreams.exchange(to: planned.target, action: action, upgrade: requestIsWebSocket, clientHTTP2: clientHTTP2) { [self] result in
            switch result {
            case .success(let exchange): connected(exchange, planned: planned)
            case .failure(let error): failed(planned, error: error)
            }
        }
    }

    private func failed(_ planned: PlannedTarget, error: any Error) {
        guard case .connecting(_, let ended) = state, planned == target, let forward else { return }
        releasePending()
        dataPlane.connectFailed(to: planned.target, for: forward.route.service)
        record.upstream = planned.target
        state = .waiting(ended: ended)
        let reason = "\(planned.target): \(UpstreamConnector.describe(error))"
        attemptEnded(.connectFailure, reason: reason,
                     reply: .connectFailure(timedOut: UpstreamConnector.isTimeout(error), attempts: retry.attempts, detail: reason))
    }

    /// Sends the held request on `exchange` and takes its response events.
    private func connected(_ exchange: UpstreamExchange, planned: PlannedTarget) {
        guard case .connecting(let held, let ended) = state, planned == target else {
            exchange.channel.close(promise: nil)
            return
        }
        releasePending()
        if !exchange.isReused {
            dataPlane.connected(to: planned.target)
            reportOutlier(.connected)
        }
        let bound = NIOLoopBound(self, eventLoop: downstream.eventLoop)
        exchange.relay.owner = { event in
            let handler = bound.value
            switch event {
            case .response(let part): handler.upstreamResponse(part)
            case .closed: handler.upstreamClosed(exchange)
            case .writabilityChanged: handler.upstreamWritabilityChanged(exchange)
            case .readComplete:
                // What one read of the upstream brought goes out now: held unflushed in TLS it
                // would escape backpressure (the channel only counts what was flushed to it).
                handler.downstream.flush()
            }
        }
        record.upstream = planned.target
        record.upstreamCluster = planned.target.cluster ?? routes.localCluster
        state = .forwarding(upstream: exchange, ended: ended)
        let upstream = exchange.channel
        setUpstreamReads(exchange, on: downstream.isWritable)
        var parts = held
        if origin == .client, action?.upstreamProtocol == .asTheClient, !planned.target.isLocal, case .head(var head)? = parts.first {
            head.headers.replaceOrAdd(name: Self.clientProtocol, value: clientHTTP2 ? "HTTP/2" : "HTTP/1.1")
            parts[0] = .head(head)
        }
        for part in parts { upstream.write(part, promise: nil) }
        upstream.flush()
        if ended { upstreamRequestEnded = .now }
        heldBytes = 0
        pauseClient(!upstream.isWritable)
    }

    /// Keeps a request part for another attempt, until the response begins or the limit.
    private func keep(_ part: HTTPClientRequestPart) {
        guard kept != nil, !responseStarted else { return }
        if case .body(.byteBuffer(let buffer)) = part { keptBytes += buffer.readableBytes }
        if keptBytes > Self.retryBufferLimit { kept = nil } else { kept?.append(part) }
    }

    private func upstreamResponse(_ part: HTTPClientResponsePart) {
        guard case .forwarding = state, let forward else { return }
        switch part {
        case .head(var head):
            if case .local = target?.target { reportOutlier(.response(Self.outlierStatus(head))) }
            if retryResponse(head) { return }
            responseStarted = true
            kept = nil
            cancelAttemptTimer()
            upstreamKeepAlive = head.isKeepAlive
            record.responseCode = Int(head.status.code)
            switchingProtocols = requestIsWebSocket && head.status == .switchingProtocols
            for name in Self.responseHeadersDropped where !(switchingProtocols && name == "connection") { head.headers.removeIfPresent(name) }
            let serviceTime = Int(((upstreamRequestEnded.map { .now - $0 }) ?? .zero).timeInterval * 1000)
            record.upstreamServiceTime = serviceTime
            record.grpcStatus = head.headers.first(name: "grpc-status")
            // Set, not added: a peer gateway's own is replaced (Envoy's router sets it).
            head.headers.replaceOrAdd(name: "x-envoy-upstream-service-time", value: String(serviceTime))
            head.headers.add(name: "server", value: "istio-envoy")
            for header in filterResponseHeaders { head.headers.replaceOrAdd(name: header.name, value: header.value) }
            forward.responseHeaders.apply(to: &head.headers)
            record.responseHeaders = head.headers
            if !requestKeepAlive && !switchingProtocols { head.headers.add(name: "connection", value: "close") }
            head.version = .http1_1
            downstream.write(.head(head))
        case .body(let body):
            record.bytesSent += body.readableBytes
            downstream.write(.body(.byteBuffer(body)))
        case .end(let trailers):
            if switchingProtocols, case .forwarding(let exchange, _) = state {
                downstream.writeAndFlush(.end(nil))
                joinAsBytes(exchange)
                return
            }
            if let status = trailers?.first(name: "grpc-status") { record.grpcStatus = status }
            // The upstream is released before the end goes out: on an HTTP/2 stream that end
            // closes the stream at once, and `downstreamClosed` runs inside the write.
            if case .forwarding(let exchange, let ended) = state {
                // The state moves first: closing fires the relay's end at once.
                state = ended ? .idle : .discarding
                if ended, let target = record.upstream {
                    exchange.relay.requestsServed += 1
                    let underLimit = action?.maxRequestsPerConnection.map { exchange.relay.requestsServed < $0 } ?? true
                    upstreams?.release(exchange, to: target, keepAlive: upstreamKeepAlive && underLimit, idleTimeout: action?.upstreamIdleTimeout)
                } else {
                    exchange.channel.close(promise: nil)
                }
            }
            cancelRequestTimer()
            downstream.writeAndFlush(.end(trailers))
            finishRequest()
        }
    }

    private func releasePending() {
        guard holdsPending else { return }
        holdsPending = false
        breakers?.release(.pending)
    }

    /// A full circuit breaker: Envoy's 503 `UO` with `x-envoy-overloaded`, never retried and
    /// never an outlier signal.
    private func overflow(_ what: String) {
        breakers?.overflowed()
        localReply(.overflow("\(forward?.route.envoyClusterName ?? "cluster") has \(what)"))
    }

    /// What the attempt's local endpoint did, for outlier detection (a peer gateway is judged
    /// by reachability, not per request).
    private func reportOutlier(_ result: OutlierResult) {
        guard case .local(let endpoint) = target?.target, let service = forward?.route.service else { return }
        dataPlane.outliers.record(result, service, endpoint.address)
    }

    /// The status outlier detection judges: a gRPC status in the response headers (a
    /// trailers-only answer) as Envoy maps it to HTTP (`Grpc::Utility::grpcToHttpStatus`).
    private static func outlierStatus(_ head: HTTPResponseHead) -> Int {
        guard let grpc = head.headers.first(name: "grpc-status").flatMap(Int.init) else { return Int(head.status.code) }
        return grpcToHTTP[grpc] ?? 500
    }

    private static let grpcToHTTP = [0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400,
                                     12: 501, 13: 500, 14: 503, 15: 500, 16: 401]

    /// A response head the retry policy retries (a 503 under `5xx`, a gRPC `unavailable`):
    /// not passed on; its exchange is dropped and the next attempt follows the back-off.
    /// False when it is the answer.
    private func retryResponse(_ head: HTTPResponseHead) -> Bool {
        guard origin == .client, case .forwarding(let exchange, let ended) = state else { return false }
        let outcome = AttemptOutcome.response(status: Int(head.status.code), grpcStatus: head.headers.first(name: "grpc-status").flatMap { Int($0) },
                                              rateLimited: head.headers.contains(name: "x-envoy-ratelimited"))
        guard retry.policy.retries(outcome) else {
            // Envoy's `upstream_rq_retry_success`: a retried request got an answer it keeps.
            if retry.attempts > 1, let cluster = forward?.route.envoyClusterName { RetryMetrics.succeeded(cluster) }
            return false
        }
        cancelAttemptTimer()
        let decision = decideRetry(outcome, reason: "\(target?.target.description ?? "upstream") answered \(head.status.code)")
        guard case .retry(let backoff) = decision else {
            if case .giveUp(let why) = decision { record.flags.formUnion(Self.flags(why, attempts: retry.attempts)) }
            return false
        }
        // The state moves first: closing fires the relay's end at once.
        state = .waiting(ended: ended)
        exchange.channel.close(promise: nil)
        scheduleRetry(after: backoff)
        return true
    }

    /// The next attempt, once the back-off is over.
    private func scheduleRetry(after backoff: Duration) {
        attemptTimer = schedule(in: backoff) { manager in manager.retryNow() }
    }

    private func upstreamClosed(_ exchange: UpstreamExchange) {
        guard case .forwarding(let current, let ended) = state, current === exchange else { return }
        if responseStarted {
            // Mid-response: the client cannot be told otherwise than by the end of its stream.
            record.flags.insert(.upstreamConnectionTermination)
            state = .idle
            finishRequest()
            downstream.close()
        } else {
            reportOutlier(.localOriginFailure)
            state = .waiting(ended: ended)
            let refused = exchange.relay.refusedStream
            let reason = "\(record.upstream?.description ?? "upstream") \(refused ? "refused the stream" : "closed before its response")"
            attemptEnded(refused ? .refusedStream : .reset(requestSent: true), reason: reason,
                         reply: .upstreamTerminated(reason, retried: retry.attempts > 1))
        }
    }

    /// The upstream accepted the WebSocket upgrade and its `101` is out: the client's connection
    /// and the upstream's lose their HTTP handlers (this one included) and are glued as the TCP
    /// path glues them, idle timeout included. The request is logged when the client's
    /// connection ends, with the bytes that crossed, as Envoy logs an upgraded stream.
    private func joinAsBytes(_ exchange: UpstreamExchange) {
        // The upgrade's response is complete; the tunnel has the idle timeout instead.
        cancelRequestTimer()
        state = .tunnel
        guard let context = downstream.http1Context else {
            exchange.channel.close(promise: nil)
            return downstream.close()
        }
        let client = context.pipeline.syncOperations, upstream = exchange.channel.pipeline.syncOperations
        let (downstreamGlue, upstreamGlue) = GlueHandler.matchedPair()
        do {
            try client.addHandler(downstreamGlue, position: .last)
            try upstream.addHandler(upstreamGlue, position: .last)
        } catch {
            record.detail = "cannot join the upgraded connections: \(error)"
            exchange.channel.close(promise: nil)
            context.close(promise: nil)
            return
        }
        // The client's side first: bytes the upstream sent right after its 101 come out of its
        // decoder as it leaves, and must find no HTTP encoder on their way to the client.
        client.removeHandler(ofType: HTTPResponseEncoder.self)
        client.removeHandler(ofType: ByteToMessageHandler<HTTPRequestDecoder>.self)
        upstream.removeHandler(exchange.relay, promise: nil)
        upstream.removeHandler(ofType: HTTPRequestEncoder.self)
        upstream.removeHandler(ofType: ByteToMessageHandler<HTTPResponseDecoder>.self)
        // A decoder leaves in a task of its own, handing on the bytes it held (what the server
        // sent with its 101) with no read-complete after them: flushed by the next task.
        let clientChannel = context.channel
        context.eventLoop.execute { clientChannel.flush() }
        downstreamGlue.closeWhenIdle(for: dataPlane.config.idleTimeout)
        let bound = NIOLoopBound((self, downstreamGlue, upstreamGlue), eventLoop: context.eventLoop)
        context.channel.closeFuture.whenComplete { _ in
            let (manager, fromClient, fromUpstream) = bound.value
            manager.record.bytesReceived += fromClient.bytesRead
            manager.record.bytesSent += fromUpstream.bytesRead
            manager.logRequest()
        }
        // Reads may have been paused for a slow client; the glue decides from here on.
        for channel in [context.channel, exchange.channel] {
            channel.setOption(ChannelOptions.autoRead, value: true).whenSuccess { channel.read() }
        }
        client.removeHandler(context: context, promise: nil)
    }

    private func localReply(_ reply: HTTPLocalReply) {
        cancelRequestTimer()
        cancelAttemptTimer()
        var reply = reply
        reply.headers += filterResponseHeaders
        let requestEnded: Bool
        switch state {
        case .connecting(_, let ended), .waiting(let ended), .authorizing(let ended): requestEnded = ended
        case .forwarding(let exchange, let ended):
            requestEnded = ended
            // The state moves first: closing fires the relay's end at once.
            state = .discarding
            exchange.channel.close(promise: nil)
        case .idle, .discarding, .tunnel: requestEnded = false
        }
        record.flags.formUnion(reply.flags)
        record.detail = reply.detail
        record.directResponse = reply.flags.isEmpty
        if requestIsGRPC || reply.grpcAbortStatus != nil {
            // As Envoy answers a gRPC client: 200, the status and message in the trailers.
            record.responseCode = 200
            record.grpcStatus = String(reply.grpcStatus)
            var head = HTTPResponseHead(version: .http1_1, status: .ok)
            head.headers.add(name: "content-type", value: "application/grpc")
            head.headers.add(name: "date", value: HTTPLocalReply.httpDate())
            head.headers.add(name: "server", value: "istio-envoy")
            for header in reply.headers { head.headers.add(name: header.name, value: header.value) }
            var trailers = HTTPHeaders([("grpc-status", String(reply.grpcStatus))])
            if !reply.body.isEmpty { trailers.add(name: "grpc-message", value: reply.body) }
            downstream.write(.head(head))
            downstream.writeAndFlush(.end(trailers))
            state = requestEnded ? .idle : .discarding
            if requestEnded { finishRequest() }
            return
        }
        record.responseCode = Int(reply.status.code)
        let payload = reply.payload
        downstream.write(.head(reply.head(closing: !requestKeepAlive)))
        if !payload.isEmpty {
            record.bytesSent += payload.count
            downstream.write(.body(.byteBuffer(ByteBuffer(bytes: payload))))
        }
        downstream.writeAndFlush(.end(nil))
        state = requestEnded ? .idle : .discarding
        if requestEnded { finishRequest() }
    }

    /// Logs and counts the request once (an HTTP/2 stream may close, and `downstreamClosed` run,
    /// while its response end is being written), and gives its circuit-breaker slots back.
    private func logRequest() {
        if let breakers {
            if holdsRequest { breakers.release(.requests) }
            if holdsPending { breakers.release(.pending) }
            if holdsRetry { breakers.release(.retries) }
            holdsRequest = false; holdsPending = false; holdsRetry = false
        }
        guard forward != nil || record.responseCode != 0 || !record.flags.isEmpty else { return }
        record.finish(logger: dataPlane.logger, format: dataPlane.accessLog, lastUsed: connection.lastHTTPMetrics)
        forward = nil
        record = HTTPRequestRecord()
    }

    /// The response is out and the request fully read: log, count, and for a client that asked
    /// to close, close.
    private func finishRequest() {
        if idleTimeout != nil { lastActive = .now() }
        logRequest()
        guard case .idle = state else { return }
        if !requestKeepAlive {
            downstream.close()
            return
        }
        // The next pipelined request, if the client sent one; handling it may end it at once
        // (a local reply), which comes back here: the outer loop takes the rest.
        if !drainingPipelined {
            drainingPipelined = true
            while case .idle = state, !pipelined.isEmpty {
                let head = pipelined.removeFirst()
                handle(head)
                // The rest of that request (its body, its end) is the current request's.
                while let next = pipelined.first, !isHeadPart(next) {
                    pipelined.removeFirst()
                    handle(next)
                }
            }
            drainingPipelined = false
        }
        if case .idle = state {
            if clientInputClosed, pipelined.isEmpty { downstream.close() }
            pauseClient(false)
        }
    }

    private func isHeadPart(_ part: HTTPServerRequestPart) -> Bool {
        if case .head = part { return true }
        return false
    }
}


extension String {
    /// A request target without its query (`/a/b?c=1` → `/a/b`), as Envoy's `url_path`.
    var pathWithoutQuery: String {
        utf8.firstIndex(of: UInt8(ascii: "?")).map { String(self[..<$0]) } ?? self
    }

    /// Whether it starts with `prefix` (lower-case ASCII) in any case: a header name or a
    /// media type, compared without making a lower-cased copy.
    func hasASCIIPrefixIgnoringCase(_ prefix: StaticString) -> Bool {
        var utf8 = self.utf8.makeIterator()
        let count = prefix.utf8CodeUnitCount
        let start = prefix.utf8Start
        for index in 0..<count {
            guard let byte = utf8.next() else { return false }
            let lowered = (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte | 0x20 : byte
            guard lowered == start[index] else { return false }
        }
        return true
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// Removes the handler of `type`, when the pipeline has one.
    func removeHandler<Handler: ChannelHandler>(ofType type: Handler.Type) {
        if let context = try? context(handlerType: type) { removeHandler(context: context, promise: nil) }
    }
}
