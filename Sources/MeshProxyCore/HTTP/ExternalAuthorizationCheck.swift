import NIOCore
import NIOHTTP1

/// One ext-authz check in flight (Envoy's `RawHttpClientImpl`): the check request to a target of
/// the provider's service over the loop's pooled upstreams, its whole answer collected, given
/// up at the provider's timeout or when the request it checks goes away. `done` runs once, on
/// the loop: the answer, or nil when there is none (reset, closed, timed out, too large).
final class ExternalAuthorizationCheck {
    struct Answer {
        var status: Int
        var headers: HTTPHeaders
        var body: [UInt8]
        /// A gRPC answer's trailers (its `grpc-status`).
        var trailers: HTTPHeaders?
    }

    /// Envoy's async client buffers the whole answer; past this it is an error.
    private static let bodyLimit = 1 << 20

    private var done: ((Answer?) -> Void)?
    private var channel: (any Channel)?
    private var deadline: Scheduled<Void>?

    init(_ request: HTTPRequestHead, body requestBody: [UInt8] = [], to target: UpstreamTarget, action: RouteAction, timeout: Duration, upstreams: HTTPUpstreams,
         eventLoop: any EventLoop, done: @escaping (Answer?) -> Void) {
        self.done = done
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        deadline = eventLoop.scheduleTask(in: TimeAmount(timeout)) { bound.value.finish(nil) }
        upstreams.exchange(to: target, action: action) { [weak self, weak upstreams] result in
            guard let self, self.done != nil else {
                if case .success(let exchange) = result { exchange.channel.close(promise: nil) }
                return
            }
            guard case .success(let exchange) = result else { return self.finish(nil) }
            self.channel = exchange.channel
            var head: HTTPResponseHead?
            var body: [UInt8] = []
            exchange.relay.owner = { [weak self] event in
                switch event {
                case .response(.head(let received)):
                    head = received
                case .response(.body(let buffer)):
                    body += buffer.readableBytesView
                    if body.count > Self.bodyLimit { self?.finish(nil) }
                case .response(.end(let trailers)):
                    guard let self, let head else { return }
                    self.channel = nil
                    upstreams?.release(exchange, to: target, keepAlive: head.isKeepAlive)
                    self.finish(Answer(status: Int(head.status.code), headers: head.headers, body: body, trailers: trailers))
                case .closed:
                    self?.finish(nil)
                case .writabilityChanged, .readComplete:
                    break
                }
            }
            if exchange.relay.readsPaused {
                exchange.relay.readsPaused = false
                exchange.channel.setOption(ChannelOptions.autoRead, value: true).whenSuccess { exchange.channel.read() }
            }
            exchange.channel.write(HTTPClientRequestPart.head(request), promise: nil)
            if !requestBody.isEmpty {
                exchange.channel.write(HTTPClientRequestPart.body(.byteBuffer(exchange.channel.allocator.buffer(bytes: requestBody))), promise: nil)
            }
            exchange.channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
    }

    /// Sends `request` to a target of the provider's service (any cluster: a local endpoint or
    /// through its gateway; a gRPC provider always over HTTP/2, as istiod configures its
    /// cluster). No such service or no healthy target is Envoy's error: `done(nil)` at once.
    static func ask(_ authorizer: ExternalAuthorizer, request: (head: HTTPRequestHead, body: [UInt8]), routes: RouteConfiguration,
                    clusters: ClusterManager, upstreams: HTTPUpstreams, eventLoop: any EventLoop,
                    done: @escaping (Answer?) -> Void) -> ExternalAuthorizationCheck? {
        guard case .success(let route) = HTTPRequestRouter.resolve(HTTPDestination(host: authorizer.host, port: authorizer.port, weight: 100),
                                                                   origin: "ext-authz provider \(authorizer.name)", routes: routes, services: clusters.current),
              let target = clusters.candidates(for: route, origin: .client).first else {
            done(nil)
            return nil
        }
        var action = routes.action(for: route, origin: .client)
        if authorizer.transport == .grpc { action.upstreamProtocol = .upgradeToHTTP2 }
        return ExternalAuthorizationCheck(request.head, body: request.body, to: target.target, action: action, timeout: authorizer.timeout,
                                          upstreams: upstreams, eventLoop: eventLoop, done: done)
    }

    /// The request it checks is gone: nothing more is reported.
    func cancel() {
        done = nil
        finish(nil)
    }

    private func finish(_ answer: Answer?) {
        deadline?.cancel()
        deadline = nil
        if let channel {
            // An answer not read to its end leaves the connection unusable.
            self.channel = nil
            channel.close(promise: nil)
        }
        guard let done else { return }
        self.done = nil
        done(answer)
    }
}
