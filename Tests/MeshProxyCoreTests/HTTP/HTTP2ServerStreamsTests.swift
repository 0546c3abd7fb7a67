import NIOHPACK
import NIOHTTP1
import Testing
@testable import MeshProxyCore

/// What `HTTP2ServerStreams` hands its connection managers and writes back, without sockets:
/// header blocks as HTTP/1 parts see them, and when a window is topped up.
@Suite("HTTP/2 streams served as frames")
struct HTTP2ServerStreamsTests {
    @Test("A request block: :authority becomes host (first), pseudo-headers go, a body method without a length gets content-length 0 when it ended or chunked framing when a body follows")
    func requestHead() throws {
        let block = HPACKHeaders([(":method", "POST"), (":path", "/a?b=1"), (":scheme", "https"), (":authority", "web.ns.svc"), ("x-a", "1"), ("x-a", "2")])
        let ended = try HTTPRequestHead(http2Request: block, endStream: true)
        #expect(ended.method == .POST && ended.uri == "/a?b=1" && ended.version.major == 2)
        #expect(ended.headers.map { "\($0.name): \($0.value)" } == ["host: web.ns.svc", "content-length: 0", "x-a: 1", "x-a: 2"])
        let streaming = try HTTPRequestHead(http2Request: block, endStream: false)
        #expect(streaming.headers["transfer-encoding"] == ["chunked"])
        let get = try HTTPRequestHead(http2Request: HPACKHeaders([(":method", "GET"), (":path", "/"), (":scheme", "https"), ("host", "h")]), endStream: true)
        #expect(get.headers.map { "\($0.name): \($0.value)" } == ["host: h"])
        #expect(throws: HTTP2RequestHeadError.self) { try HTTPRequestHead(http2Request: HPACKHeaders([(":method", "GET"), (":authority", "h")]), endStream: true) }
        #expect(throws: HTTP2RequestHeadError.self) { try HTTPRequestHead(http2Request: HPACKHeaders([(":method", "GET"), (":path", "/")]), endStream: true) }
    }

    @Test("A response head: :status first, names lower-cased, connection-specific headers (RFC 9113 §8.2.2) left out; trailers the same without :status")
    func responseHead() {
        var head = HTTPResponseHead(version: .http1_1, status: .created)
        head.headers.add(name: "Content-Type", value: "text/plain")
        head.headers.add(name: "Connection", value: "close")
        head.headers.add(name: "transfer-encoding", value: "chunked")
        head.headers.add(name: "keep-alive", value: "timeout=5")
        head.headers.add(name: "x-envoy-upstream-service-time", value: "3")
        let block = HPACKHeaders(responseHead: head)
        #expect(block.map { "\($0.name): \($0.value)" } == [":status: 201", "content-type: text/plain", "x-envoy-upstream-service-time: 3"])
        let trailers = HPACKHeaders(regularHeaders: HTTPHeaders([("Grpc-Status", "0"), ("upgrade", "h2c")]))
        #expect(trailers.map { "\($0.name): \($0.value)" } == ["grpc-status: 0"])
    }

    @Test("Windows are topped up to 65,535 once below half of it (NIOHTTP2's InboundWindowManager), and from below zero")
    func windows() {
        #expect(HTTP2ServerStreams.windowIncrement(window: 65_535) == nil)
        #expect(HTTP2ServerStreams.windowIncrement(window: 40_000) == nil)
        #expect(HTTP2ServerStreams.windowIncrement(window: 32_767) == 32_768)
        #expect(HTTP2ServerStreams.windowIncrement(window: 0) == 65_535)
        #expect(HTTP2ServerStreams.windowIncrement(window: -100) == 65_635)
    }
}
