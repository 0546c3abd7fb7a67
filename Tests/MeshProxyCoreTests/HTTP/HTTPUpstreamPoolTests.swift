import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTP2
import Testing
@testable import MeshProxyCore

/// The per-loop upstream pool on embedded channels: the dialer hands out embedded connections
/// that "negotiated" the ALPN the test says, so pooling, fallback and reuse are observed without
/// sockets.
@Suite("HTTP upstream pool")
struct HTTPUpstreamPoolTests {
    static let peer = UpstreamTarget.peerGateway(cluster: "west", gateway: GatewayAddress(name: "west-gw", address: HostPort(host: "127.0.9.2", port: 15443)),
                                                 serverName: .istio(host: "reviews.default.svc.cluster.local", port: 9080, subset: "v2"))
    static let local = UpstreamTarget.local(Endpoint(address: HostPort(host: "127.0.9.10", port: 9080)))
    static let action = RouteAction(route: Route(service: ServiceKey(host: "reviews.default.svc.cluster.local", port: 9080), subset: "v2", selector: [:]),
                                    origin: .client, retry: .connectAttempts(1), connectTimeout: .seconds(1))

    final class Dialer: Sendable {
        let loop: EmbeddedEventLoop
        let alpn: String?
        private let dialled = NIOLockedValueBox<[(target: UpstreamTarget, offered: [String], channel: EmbeddedChannel)]>([])
        var dials: [(target: UpstreamTarget, offered: [String], channel: EmbeddedChannel)] { dialled.withLockedValue { $0 } }

        init(loop: EmbeddedEventLoop, alpn: String?) {
            self.loop = loop
            self.alpn = alpn
        }

        var dialer: UpstreamDialer {
            UpstreamDialer { [self] target, _, offered, _ in
                let channel = EmbeddedChannel(loop: loop)
                _ = try? channel.connect(to: SocketAddress(ipAddress: "127.0.9.2", port: 15443)).wait()
                dialled.withLockedValue { $0.append((target, offered, channel)) }
                return loop.makeSucceededFuture(DialedUpstream(channel: channel, applicationProtocol: offered.isEmpty ? nil : alpn))
            }
        }
    }

    /// What the pool answered, as the answers come (some only once the loop runs).
    final class Answers {
        var results: [Result<UpstreamExchange, any Error>] = []
    }

    static func exchanges(_ upstreams: HTTPUpstreams, _ count: Int, to target: UpstreamTarget) -> [Result<UpstreamExchange, any Error>] {
        exchanges(upstreams, count, to: target, into: Answers()).results
    }

    @discardableResult
    static func exchanges(_ upstreams: HTTPUpstreams, _ count: Int, to target: UpstreamTarget, into answers: Answers) -> Answers {
        for _ in 0..<count { upstreams.exchange(to: target, action: action) { answers.results.append($0) } }
        return answers
    }

    @Test("Requests to a peer gateway share one dialled HTTP/2 connection (ALPN h2 offered), one stream each")
    func multiplexed() throws {
        let loop = EmbeddedEventLoop()
        let dialer = Dialer(loop: loop, alpn: "h2")
        let upstreams = HTTPUpstreamPool(dialer: dialer.dialer).on(loop)
        let answers = Self.exchanges(upstreams, 3, to: Self.peer, into: Answers())
        loop.run()
        #expect(dialer.dials.count == 1 && dialer.dials[0].offered == ["h2"])
        let streams = try answers.results.map { try $0.get() }
        #expect(streams.count == 3)
        #expect(streams.allSatisfy { if case .http2Stream = $0.kind { true } else { false } })
        #expect(Set(streams.map { ObjectIdentifier($0.channel) }).count == 3)
        // The connection speaks HTTP/2: its first bytes are the client preface.
        let preface = try dialer.dials[0].channel.readOutbound(as: ByteBuffer.self)
        #expect(preface.map { String(buffer: $0).hasPrefix("PRI * HTTP/2.0") } == true)
    }

    @Test("maxRequestsPerConnection on the pooled HTTP/2 connection: after that many streams a new connection is dialled, and the drained one closes when its streams end")
    func maxRequestsPerPooledConnection() throws {
        let loop = EmbeddedEventLoop()
        let dialer = Dialer(loop: loop, alpn: "h2")
        let upstreams = HTTPUpstreamPool(dialer: dialer.dialer).on(loop)
        var limited = Self.action
        limited.maxRequestsPerConnection = 2
        let answers = Answers()
        for _ in 0..<3 { upstreams.exchange(to: Self.peer, action: limited) { answers.results.append($0) } }
        loop.run()
        let streams = try answers.results.map { try $0.get() }
        #expect(streams.count == 3 && dialer.dials.count == 2, "two streams on the first connection, the third on a second")
        #expect(streams[0].channel.parent === streams[1].channel.parent && streams[2].channel.parent !== streams[0].channel.parent)
        let first = dialer.dials[0].channel
        for stream in streams.prefix(2) { stream.channel.close(promise: nil) }
        loop.run()
        #expect(!first.isActive, "the drained connection closes with its last stream")
        #expect(dialer.dials[1].channel.isActive)
    }

    @Test("A peer that does not agree to h2 gets the first request as HTTP/1.1 on that connection; the others, and later ones, dial HTTP/1.1")
    func fallback() throws {
        let loop = EmbeddedEventLoop()
        let dialer = Dialer(loop: loop, alpn: nil)
        let upstreams = HTTPUpstreamPool(dialer: dialer.dialer).on(loop)
        let answers = Self.exchanges(upstreams, 2, to: Self.peer, into: Answers())
        loop.run()
        let exchanges = try answers.results.map { try $0.get() }
        #expect(exchanges.count == 2)
        #expect(exchanges.allSatisfy { if case .http1(reused: false) = $0.kind { true } else { false } })
        #expect(dialer.dials.map(\.offered) == [["h2"], []])
        _ = Self.exchanges(upstreams, 1, to: Self.peer)
        #expect(dialer.dials.map(\.offered) == [["h2"], [], []], "within the fallback period, no h2 is offered")
    }

    @Test("A kept-alive HTTP/1.1 connection serves the next request to its target, from any manager of the loop; a closed one is not handed out")
    func keptAlive() throws {
        let loop = EmbeddedEventLoop()
        let dialer = Dialer(loop: loop, alpn: nil)
        let upstreams = HTTPUpstreamPool(dialer: dialer.dialer).on(loop)
        let first = try #require(try Self.exchanges(upstreams, 1, to: Self.local).first?.get())
        upstreams.release(first, to: Self.local, keepAlive: true)
        let second = try #require(try Self.exchanges(upstreams, 1, to: Self.local).first?.get())
        #expect(second.channel === first.channel && second.isReused && dialer.dials.count == 1)
        upstreams.release(second, to: Self.local, keepAlive: true)
        try second.channel.close().wait()
        let third = try #require(try Self.exchanges(upstreams, 1, to: Self.local).first?.get())
        #expect(third.channel !== first.channel && !third.isReused && dialer.dials.count == 2)
        upstreams.release(third, to: Self.local, keepAlive: false)
        #expect(!third.channel.isActive, "a response that did not keep alive closes its connection")
    }
}

@Suite("x-forwarded-client-cert")
struct ForwardedClientCertTests {
    @Test("The original client is the first element's URI; quoted values may hold separators")
    func originalClient() {
        #expect(ForwardedClientCert.originalClient("By=spiffe://td/ns/istio-system/sa/gw;URI=spiffe://td/ns/default/sa/client") == "spiffe://td/ns/default/sa/client")
        #expect(ForwardedClientCert.originalClient(#"By=spiffe://a;Subject="CN=x,O=y;z";URI=spiffe://first,By=spiffe://b;URI=spiffe://second"#) == "spiffe://first")
        #expect(ForwardedClientCert.elements(#"Hash=ab;Subject="a,b";URI=spiffe://c"#).first?.map(\.value) == ["ab", "a,b", "spiffe://c"])
        #expect(ForwardedClientCert.originalClient("By=spiffe://gw") == nil)
        #expect(ForwardedClientCert.originalClient("") == nil)
    }
}

@Suite("x-request-id")
struct RequestIDTests {
    @Test("A version-4 UUID in lower case, different each time and across fresh generators")
    func uuidV4() throws {
        var random = SplitMix64.fresh(), other = SplitMix64.fresh()
        var seen: Set<String> = []
        for _ in 0..<1000 {
            for id in [RequestID.make(&random), RequestID.make(&other)] {
                let parts = id.split(separator: "-").map(\.count)
                #expect(parts == [8, 4, 4, 4, 12] && id == id.lowercased(), "\(id)")
                let chars = Array(id)
                #expect(chars[14] == "4" && "89ab".contains(chars[19]), "\(id)")
                seen.insert(id)
            }
        }
        #expect(seen.count == 2000)
    }
}
