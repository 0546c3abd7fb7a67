import NIOCore
import Testing
@testable import EastWest
import MeshProxyCore

@Suite("HTTP/1.x response boundaries for the load generator")
struct HTTP1ResponseScannerTests {
    private func feed(_ scanner: inout HTTP1ResponseScanner, _ parts: [String]) -> [HTTP1ResponseScanner.Event] {
        parts.map { scanner.consume(ByteBuffer(string: $0)) }
    }

    @Test("A Content-Length response completes on its last byte, however the reads split it")
    func contentLength() {
        let response = "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\n\r\nhello"
        for cut in 1..<response.utf8.count {
            var scanner = HTTP1ResponseScanner()
            let bytes = Array(response.utf8)
            let events = [scanner.consume(ByteBuffer(bytes: bytes[..<cut])), scanner.consume(ByteBuffer(bytes: bytes[cut...]))]
            #expect(events == [.needMore, .complete(status: 200, keepAlive: true)], "cut at \(cut)")
            #expect(scanner.bytes == bytes.count)
        }
    }

    @Test("Keep-alive follows the version and the Connection header; case does not matter")
    func keepAlive() {
        var scanner = HTTP1ResponseScanner()
        #expect(feed(&scanner, ["HTTP/1.1 204 No Content\r\nconnection: Close\r\n\r\n"]) == [.complete(status: 204, keepAlive: false)])
        scanner.reset()
        #expect(feed(&scanner, ["HTTP/1.0 200 OK\r\nCONTENT-LENGTH: 2\r\nConnection: keep-alive\r\n\r\nok"]) == [.complete(status: 200, keepAlive: true)])
        scanner.reset()
        #expect(feed(&scanner, ["HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"]) == [.complete(status: 503, keepAlive: true)])
    }

    @Test("Without a length the body runs to the end of the connection, and is kept when asked")
    func untilClose() {
        var scanner = HTTP1ResponseScanner(keepsBody: true)
        #expect(feed(&scanner, ["HTTP/1.0 200 OK\r\n\r\n{\"cluster\":", "\"east\"}"]) == [.needMore, .needMore])
        #expect(scanner.connectionEnded() == .complete(status: 200, keepAlive: false))
        #expect(String(decoding: scanner.body, as: UTF8.self) == "{\"cluster\":\"east\"}")
    }

    @Test("What the generator cannot count is an error, not a success", arguments: [
        (["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"], "chunked responses are not supported by the load generator"),
        (["HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab"], "bytes after a complete response"),
        (["SSH-2.0-OpenSSH\r\n\r\n"], "not an HTTP/1.x response"),
        (["HTTP/1.1 2x0 OK\r\n\r\n"], "malformed status line"),
    ])
    func malformed(parts: [String], reason: String) {
        var scanner = HTTP1ResponseScanner()
        #expect(feed(&scanner, parts).last == .malformed(reason))
    }

    @Test("A connection that ends mid-response is not an answer")
    func endedEarly() {
        var scanner = HTTP1ResponseScanner()
        #expect(feed(&scanner, ["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"]) == [.needMore])
        #expect(scanner.connectionEnded() == .malformed("connection closed mid-response"))
        var fresh = HTTP1ResponseScanner()
        #expect(fresh.connectionEnded() == .malformed("connection closed before any response"))
    }
}
