import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2

/// One request's way to its upstream: the channel its parts are written to (a keep-alive
/// HTTP/1.1 connection, or one stream of a pooled HTTP/2 connection to a peer gateway) and the
/// relay that hands the response back to whoever owns the exchange now.
final class UpstreamExchange {
    enum Kind {
        /// A whole HTTP/1.1 connection; `reused` when it was kept from an earlier request.
        case http1(reused: Bool)
        /// A stream of a multiplexed connection: it ends with its response.
        case http2Stream
    }

    let channel: any Channel
    let relay: UpstreamResponseRelay
    let kind: Kind
    /// A kept connection unused past this is closed by the pool's sweep.
    var idleUntil = NIODeadline.distantFuture

    init(channel: any Channel, relay: UpstreamResponseRelay, kind: Kind) {
        self.channel = channel
        self.relay = relay
        self.kind = kind
    }

    var isReused: Bool {
        if case .http1(reused: true) = kind { return true }
        return false
    }
}

/// The HTTP upstream connections of a gateway, shared by every request of an event loop as
/// Envoy's per-worker connection pools are: idle keep-alive HTTP/1.1 connections by target
/// (local endpoints of `http` services), and multiplexed HTTP/2 connections to peer gateways,
/// one per peer and Istio SNI (Envoy's upstream cluster), and to endpoints of HTTP/2 and gRPC
/// services (h2c), opened when the first request needs one and then carrying every request of
/// that loop — no TLS handshake per request between gateways.
package final class HTTPUpstreamPool: Sendable {
    private let loops = NIOLockedValueBox<[ObjectIdentifier: NIOLoopBound<HTTPUpstreams>]>([:])
    private let dialer: UpstreamDialer
    private let settings: HTTPUpstreamSettings

    package init(dialer: UpstreamDialer, settings: HTTPUpstreamSettings = .init()) {
        self.dialer = dialer
        self.settings = settings
    }

    /// The pool of `eventLoop`; call on that loop.
    func on(_ eventLoop: any EventLoop) -> HTTPUpstreams {
        loops.withLockedValue { loops in
            let key = ObjectIdentifier(eventLoop)
            if let pool = loops[key] { return pool.value }
            let pool = HTTPUpstreams(dialer: dialer, eventLoop: eventLoop, settings: settings)
            loops[key] = NIOLoopBound(pool, eventLoop: eventLoop)
            return pool
        }
    }
}

/// How the pool treats its connections.
package struct HTTPUpstreamSettings: Sendable {
    /// Streams one pooled connection carries at once before the pool opens another
    /// (NIOHTTP2's default `SETTINGS_MAX_CONCURRENT_STREAMS` on the peer's side).
    package var maxStreamsPerConnection = 100
    /// A pooled HTTP/2 connection is pinged this often; no answer within `pingTimeout`
    /// closes it, so a peer that vanished without a FIN is not kept for new requests.
    package var pingInterval: Duration = .seconds(30)
    package var pingTimeout: Duration = .seconds(10)
    /// A pooled connection without a request for this long is closed (Envoy's default
    /// `idle_timeout` for upstream connections, 1 h, unless the route's
    /// `connectionPool.http.idleTimeout` says otherwise).
    package var idleTimeout: Duration = .seconds(3600)
    /// How long a peer that did not agree to `h2` is dialled with HTTP/1.1 instead.
    package var http1FallbackPeriod: Duration = .seconds(60)

    package init() {}
}

/// One event loop's share of the pool. Lives on that loop only.
final class HTTPUpstreams {

    private let dialer: UpstreamDialer
    private let eventLoop: any EventLoop
    private let settings: HTTPUpstreamSettings
    private var idle: [UpstreamTarget: [UpstreamExchange]] = [:]
    private var multiplexed: [UpstreamTarget: [PooledHTTP2Connection]] = [:]
    private var http1Until: [UpstreamTarget: NIODeadline] = [:]

    init(dialer: UpstreamDialer, eventLoop: any EventLoop, settings: HTTPUpstreamSettings) {
        self.dialer = dialer
        self.eventLoop = eventLoop
        self.settings = settings
    }

    typealias Completion = (Result<UpstreamExchange, any Error>) -> Void

    /// A way to `target` for one request: a stream of a pooled HTTP/2 connection for a peer
    /// gateway (TLS, ALPN h2) or an endpoint of an HTTP/2 service (h2c, prior knowledge), else
    /// a kept HTTP/1.1 connection, else a new one. `done` runs on the loop, at once when a kept
    /// connection or an open pooled one serves.
    ///
    /// An `upgrade` (WebSocket) request gets an HTTP/1.1 connection whatever the target: its
    /// connection becomes the tunnel. To a peer gateway that is a TLS connection without ALPN
    /// `h2`, which the peer forwards as bytes to an endpoint of the subset its SNI names.
    /// `clientHTTP2`: the client spoke HTTP/2, for `useClientProtocol`.
    func exchange(to target: UpstreamTarget, action: RouteAction, upgrade: Bool = false, clientHTTP2: Bool = false, _ done: @escaping Completion) {
        switch target {
        case _ where upgrade:
            break
        case .peerGateway where http1Until[target].map { $0 <= .now() } ?? true:
            return stream(to: target, action: action, done)
        case .local where action.localUpstreamIsHTTP2(clientHTTP2: clientHTTP2):
            return stream(to: target, action: action, done)
        case .local, .peerGateway:
            break
        }
        while let kept = idle[target]?.popLast() {
            if kept.channel.isActive { return done(.success(kept)) }
        }
        dialHTTP1(target, action: action, done)
    }

    /// The request on `exchange` is over: a keep-alive HTTP/1.1 connection waits for the next
    /// request to its target; anything else is closed (a stream closes itself).
    func release(_ exchange: UpstreamExchange, to target: UpstreamTarget, keepAlive: Bool, idleTimeout: Duration? = nil) {
        guard case .http1 = exchange.kind else { return }
        guard keepAlive, exchange.channel.isActive else {
            exchange.channel.close(promise: nil)
            return
        }
        let channel = exchange.channel
        exchange.relay.owner = { [weak self] event in
            switch event {
            case .closed: self?.idle[target]?.removeAll { $0.channel === channel }
            case .response: channel.close(promise: nil)  // nothing was asked
            case .writabilityChanged, .readComplete: break
            }
        }
        let kept = UpstreamExchange(channel: channel, relay: exchange.relay, kind: .http1(reused: true))
        let timeout = idleTimeout ?? settings.idleTimeout
        kept.idleUntil = .now() + TimeAmount(timeout)
        idle[target, default: []].append(kept)
        sweepIdle(every: timeout)
    }

    /// Kept HTTP/1.1 connections are closed once idle past their timeout by a sweep a few times
    /// per shortest timeout seen (no timer per request).
    private var sweep: RepeatedTask?
    private var sweepStep = TimeAmount.nanoseconds(.max)

    private func sweepIdle(every timeout: Duration) {
        let step = TimeAmount.idleCheckStep(for: TimeAmount(timeout), atLeast: .milliseconds(10))
        guard step < sweepStep else { return }
        sweepStep = step
        sweep?.cancel()
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        sweep = eventLoop.scheduleRepeatedTask(initialDelay: step, delay: step) { _ in
            let pool = bound.value, now = NIODeadline.now()
            for (target, kept) in pool.idle where kept.contains(where: { $0.idleUntil <= now }) {
                pool.idle[target] = kept.filter { $0.idleUntil > now }
                for expired in kept where expired.idleUntil <= now { expired.channel.close(promise: nil) }
            }
        }
    }

    private func dialHTTP1(_ target: UpstreamTarget, action: RouteAction, _ done: @escaping Completion) {
        let done = NIOLoopBound(done, eventLoop: eventLoop)
        dialer.connect(target, action, [], eventLoop).whenComplete { result in
            done.value(result.flatMap { dialed in Result { try Self.http1(dialed.channel) } })
        }
    }

    /// A dialled connection set up for HTTP/1.1.
    static func http1(_ channel: any Channel) throws -> UpstreamExchange {
        let relay = UpstreamResponseRelay()
        do {
            let operations = channel.pipeline.syncOperations
            // Bytes after a `101` pass on when the decoder leaves (WebSocket upgrades).
            // Headers were parsed or checked on the way in (see HTTPConnectionManager).
            try operations.addHTTPClientHandlers(leftOverBytesStrategy: .forwardBytes, enableOutboundHeaderValidation: false)
            try operations.addHandler(relay)
        } catch {
            channel.close(promise: nil)
            throw error
        }
        return UpstreamExchange(channel: channel, relay: relay, kind: .http1(reused: false))
    }

    private func stream(to target: UpstreamTarget, action: RouteAction, _ done: @escaping Completion) {
        let connections = multiplexed[target, default: []]
        let streamLimit = action.maxConcurrentStreams ?? settings.maxStreamsPerConnection
        if let connection = connections.first(where: { $0.isAccepting && $0.streams < streamLimit }) {
            return connection.openStream(done)
        }
        let connection = PooledHTTP2Connection(target: target, eventLoop: eventLoop, settings: settings,
                                               maxStreams: action.maxRequestsPerConnection, idleTimeout: action.upstreamIdleTimeout)
        let priorKnowledge = connection.priorKnowledge
        multiplexed[target, default: []].append(connection)
        connection.onClose = { [weak self, weak connection] in
            self?.multiplexed[target]?.removeAll { $0 === connection }
        }
        connection.openStream(done)
        let bound = NIOLoopBound((self, connection), eventLoop: eventLoop)
        dialer.connect(target, action, priorKnowledge ? [] : ["h2"], eventLoop).whenComplete { result in
            let (pool, connection) = bound.value
            switch result {
            case .success(let dialed) where priorKnowledge || dialed.applicationProtocol == "h2":
                connection.connected(dialed.channel)
            case .success(let dialed):
                // The peer did not agree to HTTP/2 (it treats the service as bytes): this
                // connection carries one request as HTTP/1.1, as before pooling, and the
                // others waiting dial their own.
                pool.http1Until[target] = .now() + TimeAmount(pool.settings.http1FallbackPeriod)
                connection.fellBack(to: dialed.channel) { pool.dialHTTP1(target, action: action, $0) }
            case .failure(let error):
                connection.failed(error)
            }
        }
    }
}

/// One multiplexed HTTP/2 connection of the pool, from its dial to its close. Lives on its
/// event loop only.
final class PooledHTTP2Connection {
    private enum State {
        case connecting(waiters: [HTTPUpstreams.Completion])
        case ready(channel: any Channel, multiplexer: NIOHTTP2Handler.StreamMultiplexer)
        case closed(any Error)
    }

    let target: UpstreamTarget
    /// A local endpoint speaks h2c by prior knowledge; a peer gateway is asked by ALPN over TLS.
    let priorKnowledge: Bool
    private let eventLoop: any EventLoop
    private let settings: HTTPUpstreamSettings
    private var state: State = .connecting(waiters: [])
    /// Streams open or being opened.
    private(set) var streams = 0
    /// `maxRequestsPerConnection`: after this many streams the connection takes no more and
    /// closes once they end (Envoy drains it); nil: no limit.
    private let maxStreams: Int?
    /// No stream for this long: closed (the route's `connectionPool.http.idleTimeout`, else the pool's).
    private let idleTimeout: Duration
    private var streamsOpened = 0
    /// False once the peer sent GOAWAY or the connection closed: no new streams.
    private(set) var isAccepting = true
    private var idleTimer: Scheduled<Void>?
    var onClose: () -> Void = {}

    struct Closed: Error, CustomStringConvertible {
        var description: String
    }

    init(target: UpstreamTarget, eventLoop: any EventLoop, settings: HTTPUpstreamSettings, maxStreams: Int? = nil, idleTimeout: Duration? = nil) {
        self.target = target
        self.eventLoop = eventLoop
        self.settings = settings
        self.maxStreams = maxStreams
        self.idleTimeout = idleTimeout ?? settings.idleTimeout
        priorKnowledge = target.cluster == nil
    }

    func openStream(_ done: @escaping HTTPUpstreams.Completion) {
        idleTimer?.cancel()
        idleTimer = nil
        streams += 1
        streamsOpened += 1
        if let maxStreams, streamsOpened >= maxStreams { isAccepting = false }
        switch state {
        case .connecting(var waiters):
            waiters.append(done)
            state = .connecting(waiters: waiters)
        case .ready(_, let multiplexer):
            createStream(on: multiplexer, done)
        case .closed(let error):
            streams -= 1
            done(.failure(error))
        }
    }

    func connected(_ channel: any Channel) {
        guard case .connecting(let waiters) = state else { return channel.close(promise: nil) }
        let multiplexer: NIOHTTP2Handler.StreamMultiplexer
        do {
            let operations = channel.pipeline.syncOperations
            try operations.addHandler(FlushCoalescer())
            // Peers never open streams towards the gateway that dialled them.
            // What goes out was parsed or checked on its way in, and what comes back is a peer
            // gateway's (or a local endpoint's) answer its own decoder read: NIOHTTP2's
            // per-header validation on every stream was a few percent of the path.
            var connectionConfiguration = NIOHTTP2Handler.ConnectionConfiguration()
            connectionConfiguration.headerBlockValidation = .disabled
            multiplexer = try operations.configureHTTP2Pipeline(mode: .client, connectionConfiguration: connectionConfiguration,
                                                                streamConfiguration: .init()) { stream in
                stream.close()
            }
            let bound = NIOLoopBound(self, eventLoop: eventLoop)
            try operations.addHandler(HTTP2ConnectionKeepalive(interval: settings.pingInterval, timeout: settings.pingTimeout) {
                bound.value.isAccepting = false
            })
        } catch {
            channel.close(promise: nil)
            return failed(error)
        }
        state = .ready(channel: channel, multiplexer: multiplexer)
        if case .peerGateway(_, _, let serverName) = target {
            Counter(label: "envoy_cluster_upstream_cx_http2_total", dimensions: [("cluster_name", serverName.envoyClusterName)]).increment()
        }
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        channel.closeFuture.whenComplete { _ in bound.value.closed() }
        for waiter in waiters { createStream(on: multiplexer, waiter) }
    }

    /// The dial came back without `h2`: the first waiter gets the connection as HTTP/1.1, the
    /// others their own connections.
    func fellBack(to channel: any Channel, others: (@escaping HTTPUpstreams.Completion) -> Void) {
        guard case .connecting(let waiters) = state else { return channel.close(promise: nil) }
        state = .closed(Closed(description: "\(target): the peer gateway did not agree to h2"))
        isAccepting = false
        streams = 0
        onClose()
        for (index, waiter) in waiters.enumerated() {
            if index == 0 { waiter(Result { try HTTPUpstreams.http1(channel) }) } else { others(waiter) }
        }
    }

    func failed(_ error: any Error) {
        guard case .connecting(let waiters) = state else { return }
        state = .closed(error)
        isAccepting = false
        streams = 0
        onClose()
        for waiter in waiters { waiter(.failure(error)) }
    }

    private func closed() {
        if case .closed = state { return }
        state = .closed(Closed(description: "\(target): the pooled HTTP/2 connection closed"))
        isAccepting = false
        idleTimer?.cancel()
        onClose()
    }

    private func createStream(on multiplexer: NIOHTTP2Handler.StreamMultiplexer, _ done: @escaping HTTPUpstreams.Completion) {
        let relay = UpstreamResponseRelay()
        let promise = eventLoop.makePromise(of: (any Channel).self)
        let scheme: HTTP2FramePayloadToHTTP1ClientCodec.HTTPProtocol = priorKnowledge ? .http : .https
        let bound = NIOLoopBound((self, relay, done), eventLoop: eventLoop)
        multiplexer.createStreamChannel(promise: promise) { stream in
            stream.eventLoop.makeCompletedFuture {
                let operations = stream.pipeline.syncOperations
                try operations.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: scheme))
                try operations.addHandler(bound.value.1)
            }
        }
        promise.futureResult.whenComplete { result in
            let (connection, relay, done) = bound.value
            switch result {
            case .success(let stream):
                stream.closeFuture.whenComplete { _ in bound.value.0.streamEnded() }
                done(.success(UpstreamExchange(channel: stream, relay: relay, kind: .http2Stream)))
            case .failure(let error):
                connection.streamEnded()
                // NIOHTTP2 refuses new streams once the peer said GOAWAY.
                connection.isAccepting = false
                done(.failure(error))
            }
        }
    }

    private func streamEnded() {
        streams = max(0, streams - 1)
        guard streams == 0, case .ready(let channel, _) = state else { return }
        if let maxStreams, streamsOpened >= maxStreams {
            // Drained after its last allowed request: closed now, not after the idle timeout.
            channel.close(promise: nil)
            return
        }
        idleTimer?.cancel()
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        idleTimer = eventLoop.scheduleTask(in: TimeAmount(idleTimeout)) {
            if bound.value.streams == 0 { channel.close(promise: nil) }
        }
    }
}

/// Pings a pooled HTTP/2 connection and closes it when the peer stops answering; tells the pool
/// when the peer says GOAWAY, so no new stream is put on a connection that is going away.
final class HTTP2ConnectionKeepalive: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let interval: Duration
    private let timeout: Duration
    private let goingAway: () -> Void
    private var timer: RepeatedTask?
    private var unanswered: Scheduled<Void>?
    private var sent: UInt64 = 0

    init(interval: Duration, timeout: Duration, goingAway: @escaping () -> Void) {
        self.interval = interval
        self.timeout = timeout
        self.goingAway = goingAway
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleRepeatedTask(initialDelay: TimeAmount(interval), delay: TimeAmount(interval)) { _ in
            let (handler, context) = bound.value
            handler.ping(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) { stop() }

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        context.fireChannelInactive()
    }

    private func stop() {
        timer?.cancel()
        unanswered?.cancel()
        timer = nil
        unanswered = nil
    }

    private func ping(context: ChannelHandlerContext) {
        guard unanswered == nil else { return }
        sent &+= 1
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .ping(HTTP2PingData(withInteger: sent), ack: false))),
                              promise: nil)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        unanswered = context.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            bound.value.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case .ping(let data, ack: true) where data == HTTP2PingData(withInteger: sent):
            unanswered?.cancel()
            unanswered = nil
        case .goAway:
            goingAway()
        default:
            break
        }
        context.fireChannelRead(data)
    }
}

/// Hands an upstream's response parts, and its end, to the exchange's owner: the connection
/// manager of the request it carries, or the pool while a kept connection waits.
final class UpstreamResponseRelay: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    enum Event {
        case response(HTTPClientResponsePart)
        case closed
        case writabilityChanged
        case readComplete
    }

    var owner: (Event) -> Void = { _ in }
    /// The connection manager turned the upstream's reads off (its client reads slowly); kept
    /// with the connection so the next request turns them back on.
    var readsPaused = false
    /// Requests this connection answered (`maxRequestsPerConnection`).
    var requestsServed = 0

    func channelReadComplete(context: ChannelHandlerContext) {
        owner(.readComplete)
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        owner(.writabilityChanged)
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { owner(.response(unwrapInboundIn(data))) }

    func channelInactive(context: ChannelHandlerContext) {
        owner(.closed)
        context.fireChannelInactive()
    }

    /// The upstream closed its side (dialled connections allow half-closure, for the TCP path):
    /// for HTTP that ends the connection; a response delimited by the close has been decoded
    /// whole before this event.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The upstream stream ended with REFUSED_STREAM (nothing of the request was processed):
    /// a condition of its own for retries.
    private(set) var refusedStream = false

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let closed = error as? NIOHTTP2Errors.StreamClosed, closed.errorCode == .refusedStream { refusedStream = true }
        context.close(promise: nil)
    }
}
