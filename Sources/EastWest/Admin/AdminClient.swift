import Foundation
import MeshProxyCore
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// One request to an admin API (readiness checks, `eastwest members`, drills): NIOHTTP1's
/// client codec and response aggregator over a fresh connection, closed after the answer.
enum AdminClient {
    struct Response: Sendable {
        var status: Int
        var body: String
    }

    /// Largest answer read (a big mesh's `/v1/endpoints` or `/stats/prometheus`).
    static let maximumResponseSize = 64 << 20

    /// How an operator proves it may write: an operator certificate (TLS on the admin port,
    /// preferred) or the bearer token.
    struct Credentials: Sendable {
        var token: String?
        var certificate: GatewayConfig.TLSFiles?
    }

    /// - Parameter token: the operator's bearer token, for writes.
    static func send(_ method: HTTPMethod, _ address: HostPort, path: String, body: String = "", token: String? = nil,
                     timeout: Duration = .seconds(10)) async throws -> Response {
        try await send(method, address, path: path, body: body, credentials: Credentials(token: token), timeout: timeout)
    }

    /// With an operator certificate the request goes over TLS with it (the gateway's chain checked
    /// against the same mesh root), and no token is sent.
    static func send(_ method: HTTPMethod, _ address: HostPort, path: String, body: String = "", credentials: Credentials,
                     timeout: Duration = .seconds(10)) async throws -> Response {
        let tls = try credentials.certificate.map(Self.tlsContext)
        let token = tls == nil ? credentials.token : nil
        let group = MultiThreadedEventLoopGroup.singleton
        let answer = group.next().makePromise(of: Response.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.milliseconds(500))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let operations = channel.pipeline.syncOperations
                        if let tls { try operations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: nil)) }
                        try operations.addHTTPClientHandlers()
                        try operations.addHandler(NIOHTTPClientResponseAggregator(maxContentLength: maximumResponseSize))
                        try operations.addHandler(ResponseReceiver(answer: answer))
                    }
                }
                .connect(host: address.host, port: address.port).get()
        } catch {
            answer.fail(error)  // a promise must be completed, even when nothing connected
            throw error
        }
        let deadline = channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            answer.fail(AdminClientError.timedOut(address: address, path: path))
            channel.close(promise: nil)
        }
        var headers = HTTPHeaders([("Host", address.description), ("Connection", "close"), ("Content-Length", String(body.utf8.count))])
        if !body.isEmpty { headers.add(name: "Content-Type", value: "application/json") }
        if let token { headers.add(name: "Authorization", value: "Bearer \(token)") }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if !body.isEmpty { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: body))), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        defer { deadline.cancel() }
        return try await answer.futureResult.get()
    }

    private static func tlsContext(_ files: GatewayConfig.TLSFiles) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(files.certificateChain).map { .certificate($0) }
        configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: files.privateKey, format: .pem))
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(files.rootCertificate))
        // The gateway's certificate names its SPIFFE ID and service hosts, not the admin address.
        configuration.certificateVerification = .noHostnameVerification
        return try NIOSSLContext(configuration: configuration)
    }

    private final class ResponseReceiver: ChannelInboundHandler {
        typealias InboundIn = NIOHTTPClientResponseFull
        private let answer: EventLoopPromise<Response>
        init(answer: EventLoopPromise<Response>) { self.answer = answer }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let response = unwrapInboundIn(data)
            answer.succeed(Response(status: Int(response.head.status.code), body: response.body.map { String(buffer: $0) } ?? ""))
            context.close(promise: nil)
        }
        func channelInactive(context: ChannelHandlerContext) {
            answer.fail(AdminClientError.closedBeforeAnswer)
            context.fireChannelInactive()
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            answer.fail(error)
            context.close(promise: nil)
        }
    }
}

enum AdminClientError: Error, CustomStringConvertible {
    case timedOut(address: HostPort, path: String)
    case closedBeforeAnswer

    var description: String {
        switch self {
        case .timedOut(let address, let path): "no answer from http://\(address)\(path) in time"
        case .closedBeforeAnswer: "the admin API closed the connection before answering"
        }
    }
}
