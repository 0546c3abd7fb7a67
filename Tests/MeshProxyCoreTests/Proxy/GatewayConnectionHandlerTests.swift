import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOTLS
import Testing
@testable import MeshProxyCore

/// `GatewayConnectionHandler` carrying out its state machine on `EmbeddedChannel`s: the
/// downstream is an embedded channel, and the dialer hands out embedded upstream channels on the
/// same loop (or refuses), so every step is driven and observed without sockets.
@Suite("Gateway connection handler on EmbeddedChannel")
struct GatewayConnectionHandlerTests {
    static let echo = ServiceKey(host: "echo.default.svc.cluster.local", port: 8080)
    static let e1 = HostPort(host: "127.0.9.10", port: 8080), e2 = HostPort(host: "127.0.9.11", port: 8080)

    /// The dials the handler asked for, answered by the test.
    final class Dials: Sendable {
        private let pending = NIOLockedValueBox<[(target: UpstreamTarget, promise: EventLoopPromise<DialedUpstream>)]>([])
        var targets: [UpstreamTarget] { pending.withLockedValue { $0.map(\.target) } }
        func add(_ target: UpstreamTarget, _ promise: EventLoopPromise<DialedUpstream>) { pending.withLockedValue { $0.append((target, promise)) } }
        func answer(_ index: Int, with result: Result<any Channel, any Error>) {
            let promise = pending.withLockedValue { $0[index].promise }
            promise.completeWith(result.map { DialedUpstream(channel: $0) })
        }
    }

    struct Fixture {
        let loop = EmbeddedEventLoop()
        let dataPlane: DataPlane
        let routes: RouteConfiguration
        let dials = Dials()
        let directory: URL

        init(service protocol: ServiceProtocol? = nil, maxConnections: Int? = nil) throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("gch-\(UUID().uuidString.prefix(8))")
            let certs = CertificateDirectory(path: directory.path)
            try certs.createRoot(trustDomain: "cluster.local")
            try certs.createCluster("east")
            try certs.createWorkload(cluster: "east", spiffeID: try GatewayIdentity.spiffeID(cluster: "east", trustDomain: "cluster.local"),
                                     outputPath: "\(directory.path)/gateway")
            var echo = GatewayConfig.ServiceConfig(host: Self.echo.host, port: 8080, endpoints: [Endpoint(address: e1), Endpoint(address: e2)])
            echo.protocol = `protocol`
            let config = GatewayConfig(name: "east-gw", cluster: "east", listen: HostPort(host: "127.0.9.1", port: 15443),
                                       tls: .init(certificateChain: "\(directory.path)/gateway/cert-chain.pem", privateKey: "\(directory.path)/gateway/key.pem",
                                                  rootCertificate: certs.rootCertificatePath),
                                       services: [echo])
            var resources = IstioPolicyLoader.Loaded()
            if let maxConnections {
                resources = try IstioPolicyLoader.load(yaml: """
                    apiVersion: networking.istio.io/v1
                    kind: DestinationRule
                    metadata: {name: echo}
                    spec:
                      host: \(Self.echo.host)
                      trafficPolicy: {connectionPool: {tcp: {maxConnections: \(maxConnections)}}}
                    """, file: "dr.yaml")
            }
            routes = PolicyCompiler.compile(config: config, resources: resources)
            let clusters = ClusterManager(routes: routes, endpoints: config.meshEndpoints)
            let logger = Logger(label: "test")
            let dials = self.dials
            dataPlane = DataPlane(config: config, tls: try GatewayTLS(config: config), routes: routes, clusters: clusters,
                                  outliers: OutlierTracker(clusters: clusters, logger: logger), logger: logger,
                                  dialer: UpstreamDialer { target, _, _, eventLoop in
                                      let promise = eventLoop.makePromise(of: DialedUpstream.self)
                                      dials.add(target, promise)
                                      return promise.futureResult
                                  })
        }

        static var echo: ServiceKey { GatewayConnectionHandlerTests.echo }

        /// A client connection whose TLS handshake has just completed.
        func connection() throws -> (channel: EmbeddedChannel, record: ConnectionRecord) {
            let channel = EmbeddedChannel(loop: loop)
            let record = ConnectionRecord(downstreamRemote: "127.0.9.100:40000", downstreamLocal: "127.0.9.1:15443")
            guard case .route(let route) = routes.resolve(ServerName(host: Self.echo.host, port: nil, subset: nil), in: dataPlane.clusters.current) else {
                throw CancellationError()
            }
            try channel.pipeline.syncOperations.addHandler(GatewayConnectionHandler(dataPlane: dataPlane, routes: routes, route: route, record: record))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.9.100", port: 40000)).wait()
            channel.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
            return (channel, record)
        }

        func upstream() throws -> EmbeddedChannel {
            let channel = EmbeddedChannel(loop: loop)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.9.10", port: 8080)).wait()
            return channel
        }

        func cleanUp() { try? FileManager.default.removeItem(at: directory) }
    }

    @Test("A refused endpoint moves to the next; bytes sent meanwhile are held and reach the upstream in order; answers come back")
    func retryHoldAndGlue() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let (client, record) = try fixture.connection()
        #expect(fixture.dials.targets.map(\.address) == [Self.e1] || fixture.dials.targets.map(\.address) == [Self.e2])
        let first = fixture.dials.targets[0].address
        try client.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n"))
        try client.writeInbound(ByteBuffer(string: "\r\n"))
        fixture.dials.answer(0, with: .failure(IOError(errnoCode: ECONNREFUSED, reason: "connect")))
        #expect(fixture.dials.targets.count == 2 && fixture.dials.targets[1].address != first, "the next endpoint is tried")
        let upstream = try fixture.upstream()
        fixture.dials.answer(1, with: .success(upstream))
        fixture.loop.run()
        var sent = ByteBuffer()
        while var part = try upstream.readOutbound(as: ByteBuffer.self) { sent.writeBuffer(&part) }
        #expect(String(buffer: sent) == "GET / HTTP/1.1\r\n\r\n")
        try upstream.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\r\n"))
        fixture.loop.run()
        #expect(try client.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) } == "HTTP/1.1 200 OK\r\n")
        #expect(record.upstream?.address == fixture.dials.targets[1].address && record.flags.isEmpty)
        _ = try? client.finish()
        _ = try? upstream.finish()
    }

    @Test("Every endpoint refusing ends the connection with UF,URX; maxConnections refuses with UO and frees the slot on close")
    func refusals() throws {
        let fixture = try Fixture(maxConnections: 1)
        defer { fixture.cleanUp() }
        let (held, heldRecord) = try fixture.connection()
        let (second, secondRecord) = try fixture.connection()
        #expect(secondRecord.flags == [.upstreamOverflow] && !second.isActive, "over maxConnections: \(secondRecord.flags)")
        #expect(fixture.dials.targets.count == 1, "the refused connection dials nothing")
        fixture.dials.answer(0, with: .failure(IOError(errnoCode: ECONNREFUSED, reason: "connect")))
        fixture.dials.answer(1, with: .failure(IOError(errnoCode: ECONNREFUSED, reason: "connect")))
        fixture.loop.run()
        #expect(!held.isActive, "both endpoints refused")
        #expect(heldRecord.flags == [.upstreamConnectionFailure, .upstreamRetryLimitExceeded], "\(heldRecord.flags)")
        let (third, thirdRecord) = try fixture.connection()
        #expect(thirdRecord.flags.isEmpty && third.isActive && fixture.dials.targets.count == 3, "the slot came back when the first closed")
        _ = try? third.finish()
    }

    @Test("An http service's client traffic is handed to the HTTP connection manager; the TCP path stays for others")
    func httpSwitch() throws {
        let http = try Fixture(service: .http)
        defer { http.cleanUp() }
        let (client, record) = try http.connection()
        #expect((try? client.pipeline.syncOperations.handler(type: HTTPConnectionManager.self)) != nil)
        #expect((try? client.pipeline.syncOperations.handler(type: GatewayConnectionHandler.self)) == nil)
        #expect(record.carriesHTTP && http.dials.targets.isEmpty, "nothing is dialled before a request arrives")
        _ = try? client.finish()
    }
}
