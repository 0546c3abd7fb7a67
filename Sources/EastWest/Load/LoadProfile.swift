import Foundation
import MeshProxyCore
import NIOCore
import NIOSSL

/// What a load run sends and how: `eastwest load` builds one from its flags, a drill from its
/// scenario's `load:` block.
package struct LoadProfile: Sendable {
    package enum WireProtocol: String, Sendable, Codable, CaseIterable {
        /// HTTP/1.1 requests, one at a time per connection (no pipelining).
        case http1
        /// HTTP/2 streams, `streamsPerConnection` at a time per connection (prior knowledge;
        /// ALPN offers h2 over TLS).
        case http2
        /// One connection per request: send the payload, half-close, read until the server
        /// closes. The default payload is an HTTP/1.0 GET, so an HTTP backend answers.
        case tcp
    }

    var target: HostPort
    /// SNI, the name the server certificate is checked against, and the HTTP Host/:authority.
    var serverName: String
    /// Client certificate, key and the CA the server is verified against; nil for plaintext.
    var tls: GatewayConfig.TLSFiles?
    var wireProtocol = WireProtocol.http1
    /// Kept-alive connections; with `newConnectionPerRequest`, requests in flight at most.
    var connections = 32
    var streamsPerConnection = 1
    /// Requests per second, open loop (latency from the intended send time); nil: closed loop,
    /// every connection sends its next request as soon as the last one is answered.
    var rate: Int?
    var duration: Duration = .seconds(10)
    var newConnectionPerRequest = false
    var path = "/"
    /// Extra request headers (a token, say), sent on every request.
    var headers: [(name: String, value: String)] = []
    /// Request body bytes (an HTTP POST), or the bytes a `tcp` request sends.
    var payload = 0
    /// A request that takes longer than this (from when it was due) counts as a timeout.
    var timeout: Duration = .seconds(10)
    /// Event loops (threads) generating load.
    var threads = 1
    /// Keep each response body: the demo backend's answer names the cluster and locality.
    var readsAnswers = false
    /// Open this many connections first and hold them idle for `idleFor`, then send one
    /// request on each at once (a burst); nothing else is sent.
    var idleConnections: Int?
    var idleFor: Duration = .seconds(30)

    /// The bytes of one request, built once and written as the same buffer every time.
    func requestBytes() -> ByteBuffer {
        if wireProtocol == .tcp && payload > 0 { return Self.filler(payload) }
        let version = wireProtocol == .tcp ? "HTTP/1.0" : "HTTP/1.1"
        var head = "\(payload > 0 ? "POST" : "GET") \(path) \(version)\r\nHost: \(serverName)\r\n"
        if payload > 0 { head += "Content-Length: \(payload)\r\nContent-Type: application/octet-stream\r\n" }
        for header in headers { head += "\(header.name): \(header.value)\r\n" }
        var buffer = ByteBuffer(string: head + "\r\n")
        if payload > 0 { buffer.writeImmutableBuffer(Self.filler(payload)) }
        return buffer
    }

    static func filler(_ count: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeRepeatingByte(UInt8(ascii: "x"), count: count)
        return buffer
    }

    func sslContext() throws -> NIOSSLContext? {
        guard let files = tls else { return nil }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.certificateChain = try NIOSSLCertificate.fromPEMFile(files.certificateChain).map { .certificate($0) }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: files.privateKey, format: .pem))
        tls.trustRoots = .file(files.rootCertificate)
        if wireProtocol == .http2 { tls.applicationProtocols = ["h2"] }
        return try NIOSSLContext(configuration: tls)
    }
}
