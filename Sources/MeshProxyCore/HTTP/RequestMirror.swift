import NIOCore
import NIOHTTP1

/// A VirtualService mirror: a copy of the request for `destination`, for `perMillion` of the
/// requests (Envoy's `request_mirror_policies`, with Istio's percentages in parts per million).
package struct RequestMirror: Sendable, Equatable {
    package var destination: HTTPDestination
    package var perMillion: Int

    package init(destination: HTTPDestination, perMillion: Int) {
        self.destination = destination; self.perMillion = perMillion
    }

    /// Envoy's runtime-fraction roll for one request.
    package func holds(random: UInt64) -> Bool { random % 1_000_000 < UInt64(perMillion) }
}

/// Sends one mirrored copy and forgets it, as Envoy's shadow requests: the copy goes out once
/// the whole request is in, with the request's own headers (Istio no longer adds `-shadow` to
/// the authority since 1.28); its answer is read and dropped; it gives up at the route's
/// timeout. Nothing about it reaches the real request: not its time, its status or its errors.
enum MirroredRequest {
    static func send(_ parts: [HTTPClientRequestPart], to target: UpstreamTarget, action: RouteAction, timeout: Duration?,
                     upstreams: HTTPUpstreams, eventLoop: any EventLoop) {
        upstreams.exchange(to: target, action: action) { result in
            guard case .success(let exchange) = result else { return }
            let channel = exchange.channel
            let deadline = timeout.map { limit in eventLoop.scheduleTask(in: TimeAmount(limit)) { channel.close(promise: nil) } }
            var keepAlive = false
            exchange.relay.owner = { [weak upstreams] event in
                switch event {
                case .response(.head(let head)): keepAlive = head.isKeepAlive
                case .response(.end):
                    deadline?.cancel()
                    upstreams?.release(exchange, to: target, keepAlive: keepAlive)
                case .closed: deadline?.cancel()
                case .response(.body), .writabilityChanged, .readComplete: break
                }
            }
            if exchange.relay.readsPaused {
                // A kept connection an earlier slow client had paused.
                exchange.relay.readsPaused = false
                channel.setOption(ChannelOptions.autoRead, value: true).whenSuccess { channel.read() }
            }
            for part in parts { channel.write(part, promise: nil) }
            channel.flush()
        }
    }
}
