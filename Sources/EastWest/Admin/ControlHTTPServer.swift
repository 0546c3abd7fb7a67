import MeshProxyCore
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A request as the admin API and the demo backend see it: whole, body aggregated.
package struct ControlHTTPRequest: Sendable {
    package var method: HTTPMethod
    package var uri: String
    package var headers: HTTPHeaders
    package var body: ByteBuffer
    /// The client's address, for the log of who changed what.
    package var remote = "-"
    /// The client's SPIFFE ID, when it came over TLS with a mesh certificate the server verified.
    package var peerIdentity: SpiffeID?

    package var path: String { String(uri.split(separator: "?", maxSplits: 1).first ?? "") }

    /// Query parameters, percent-decoded (`+` as space); the last of a repeated name wins.
    package var query: [String: String] {
        guard let text = uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return [:] }
        var result: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map {
                $0.replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0)
            }
            result[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        return result
    }
}

package struct ControlHTTPResponse: Sendable {
    package var status: HTTPResponseStatus
    package var headers: HTTPHeaders
    package var body: ByteBuffer
    /// No response at all: the connection is closed instead (a demo backend's failure mode).
    package var reset = false

    /// The connection closes without an answer.
    package static var connectionReset: ControlHTTPResponse {
        var response = ControlHTTPResponse(text: "")
        response.reset = true
        return response
    }

    package init(status: HTTPResponseStatus = .ok, contentType: String = "text/plain; charset=utf-8", body: ByteBuffer) {
        self.status = status
        self.headers = HTTPHeaders([("Content-Type", contentType)])
        self.body = body
    }

    package init(status: HTTPResponseStatus = .ok, contentType: String = "text/plain; charset=utf-8", text: String) {
        self.init(status: status, contentType: contentType, body: ByteBuffer(string: text))
    }
}

/// A small HTTP/1.1 keep-alive server for control-plane endpoints (admin API, demo backend):
/// a request goes in whole, a response comes out whole. Not on the data path.
///
/// Bodies are capped at `maximumBodySize`: a larger one gets 413 and the connection is closed,
/// without buffering it. Headers are capped by NIOHTTP1's parser (80 KiB; 400 beyond).
package enum ControlHTTPServer {
    package static let maximumBodySize = 1 << 20

    package typealias Responder = @Sendable (ControlHTTPRequest, any EventLoop) -> EventLoopFuture<ControlHTTPResponse>

    /// TLS on the same port as plaintext: a connection that starts with a TLS handshake record
    /// gets this context, and a client certificate the verifier accepts names the client.
    package struct MutualTLS: Sendable {
        package var context: NIOSSLContext
        package var verifier: PeerVerifier
        package init(context: NIOSSLContext, verifier: PeerVerifier) { self.context = context; self.verifier = verifier }
    }

    /// Binds `address`; an address in use fails with an error naming it.
    package static func bind(host: String, port: Int, role: String, group: any EventLoopGroup, tls: MutualTLS? = nil,
                             responder: @escaping Responder) async throws -> any Channel {
        do {
            return try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let peer = PeerIdentity()
                        if let tls { try channel.pipeline.syncOperations.addHandler(TLSSniffer(tls: tls, peer: peer)) }
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(RequestHandler(responder: responder, peer: peer))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            throw ListenError(address: HostPort(host: host, port: port).description, role: role, underlying: error)
        }
    }

    private final class RequestHandler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        private let responder: Responder
        private let peer: PeerIdentity
        private var head: HTTPRequestHead?
        private var body = ByteBuffer()
        /// Set once a request was refused as too large: the rest of it is dropped.
        private var refused = false

        init(responder: @escaping Responder, peer: PeerIdentity) { self.responder = responder; self.peer = peer }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                guard !refused else { return }
                self.head = head
                body.clear()
                if let length = head.headers.first(name: "Content-Length").flatMap(Int.init), length > ControlHTTPServer.maximumBodySize {
                    refuseTooLarge(version: head.version, context: context)
                }
            case .body(var chunk):
                guard !refused else { return }
                guard body.readableBytes + chunk.readableBytes <= ControlHTTPServer.maximumBodySize else {
                    refuseTooLarge(version: head?.version ?? .http1_1, context: context)
                    return
                }
                body.writeBuffer(&chunk)
            case .end:
                guard !refused, let head else { return }
                var request = ControlHTTPRequest(method: head.method, uri: head.uri, headers: head.headers, body: body)
                request.remote = context.remoteAddress?.description ?? "-"
                request.peerIdentity = peer.id
                let keepAlive = head.isKeepAlive
                let version = head.version
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                responder(request, context.eventLoop).hop(to: context.eventLoop).whenComplete { result in
                    let (handler, context) = bound.value
                    let response = (try? result.get()) ?? ControlHTTPResponse(status: .internalServerError, text: "internal error\n")
                    handler.write(response, version: version, keepAlive: keepAlive, context: context)
                }
            }
        }

        private func refuseTooLarge(version: HTTPVersion, context: ChannelHandlerContext) {
            refused = true
            body = ByteBuffer()
            let response = ControlHTTPResponse(status: .payloadTooLarge,
                                             text: "request body larger than \(ControlHTTPServer.maximumBodySize) bytes\n")
            write(response, version: version, keepAlive: false, context: context)
        }

        private func write(_ response: ControlHTTPResponse, version: HTTPVersion, keepAlive: Bool, context: ChannelHandlerContext) {
            if response.reset {
                context.close(promise: nil)
                return
            }
            var headers = response.headers
            headers.replaceOrAdd(name: "Content-Length", value: String(response.body.readableBytes))
            if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: response.status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive {
                let channel = context.channel
                done.whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }

    /// Who the client of one connection is, once its TLS handshake verified it.
    private final class PeerIdentity: @unchecked Sendable {  // one connection's event loop writes and reads it
        var id: SpiffeID?
    }

    /// Looks at a connection's first byte: a TLS handshake record (0x16) gets the TLS handler,
    /// anything else stays plaintext. Leaves the pipeline after that first read.
    private final class TLSSniffer: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        private let tls: MutualTLS
        private let peer: PeerIdentity

        init(tls: MutualTLS, peer: PeerIdentity) { self.tls = tls; self.peer = peer }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            if buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) == 0x16 {
                let verifier = tls.verifier
                let peer = NIOLoopBound(peer, eventLoop: context.eventLoop)
                let handler = NIOSSLServerHandler(context: tls.context) { certificates, promise in
                    verifier.verify(certificates, answering: promise) { result in
                        if case .success(let id) = result { peer.value.id = id }
                    }
                }
                do {
                    try context.pipeline.syncOperations.addHandler(handler, position: .after(self))
                } catch {
                    context.close(promise: nil)
                    return
                }
            }
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }
}
