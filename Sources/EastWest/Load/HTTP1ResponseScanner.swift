import MeshProxyCore
import NIOCore

/// Finds where one HTTP/1.x response ends in the bytes a load-generating connection reads,
/// without building header objects: the load generator must not be the bottleneck it measures.
/// Understands a status line, `Content-Length`, `Connection: close` and a body delimited by the
/// end of the connection (HTTP/1.0 style); a chunked body is reported as unsupported.
package struct HTTP1ResponseScanner: Sendable {
    package enum Event: Equatable, Sendable {
        /// More bytes are needed.
        case needMore
        /// One response is complete; `keepAlive` false when the server will close.
        case complete(status: Int, keepAlive: Bool)
        case malformed(String)
    }

    private enum State: Equatable { case head, body(remaining: Int), untilClose, done }

    private var state = State.head
    private var head: [UInt8] = []
    private var status = 0
    private var keepAlive = true
    /// The body so far, kept only when asked (a demo backend's answer names its cluster).
    package private(set) var body: [UInt8] = []
    private let keepsBody: Bool
    /// Response bytes read, head and body.
    package private(set) var bytes = 0

    package init(keepsBody: Bool = false) { self.keepsBody = keepsBody }

    /// Ready for the next response on a kept-alive connection.
    package mutating func reset() {
        state = .head; head.removeAll(keepingCapacity: true); body.removeAll(keepingCapacity: true)
        status = 0; keepAlive = true; bytes = 0
    }

    /// Consumes `buffer`. Bytes after a complete response are an error: requests are not pipelined.
    package mutating func consume(_ buffer: ByteBuffer) -> Event {
        bytes += buffer.readableBytes
        return buffer.withUnsafeReadableBytes { consume(UnsafeRawBufferPointer($0)) }
    }

    /// The connection ended: completes a response whose body runs to the end of the connection.
    package mutating func connectionEnded() -> Event {
        if case .untilClose = state { state = .done; return .complete(status: status, keepAlive: false) }
        return .malformed(state == .head && head.isEmpty ? "connection closed before any response" : "connection closed mid-response")
    }

    private mutating func consume(_ bytes: UnsafeRawBufferPointer) -> Event {
        var rest = bytes[...]
        if case .head = state {
            guard let end = Self.headEnd(in: rest, after: head) else {
                head.append(contentsOf: rest)
                return head.count > 64 * 1024 ? .malformed("response head larger than 64 KiB") : .needMore
            }
            head.append(contentsOf: rest[rest.startIndex..<end])
            rest = rest[end...]
            if let problem = parseHead() { return .malformed(problem) }
        }
        switch state {
        case .head:
            return .needMore
        case .done:  // a head with no body
            return rest.isEmpty ? .complete(status: status, keepAlive: keepAlive) : .malformed("bytes after a complete response")
        case .untilClose:
            if keepsBody { body.append(contentsOf: rest) }
            return .needMore
        case .body(let remaining):
            if rest.count > remaining { return .malformed("bytes after a complete response") }
            if keepsBody { body.append(contentsOf: rest) }
            let left = remaining - rest.count
            if left == 0 { state = .done; return .complete(status: status, keepAlive: keepAlive) }
            state = .body(remaining: left)
            return .needMore
        }
    }

    /// Index just past `\r\n\r\n`, looking across the boundary with what is already held.
    private static func headEnd(in bytes: Slice<UnsafeRawBufferPointer>, after held: [UInt8]) -> Int? {
        var window: UInt32 = 0
        for byte in held.suffix(3) { window = window << 8 | UInt32(byte) }
        var index = bytes.startIndex
        while index < bytes.endIndex {
            window = window << 8 | UInt32(bytes[index])
            index += 1
            if window == 0x0D0A_0D0A { return index }
        }
        return nil
    }

    private static let versionPrefix = Array("HTTP/1.".utf8)

    private mutating func parseHead() -> String? {
        // "HTTP/1.1 200 ..."
        guard head.count >= 12, head.starts(with: Self.versionPrefix) else { return "not an HTTP/1.x response" }
        let digits = head[9..<12]
        guard digits.allSatisfy({ (0x30...0x39).contains($0) }) else { return "malformed status line" }
        status = digits.reduce(0) { $0 * 10 + Int($1 - 0x30) }
        keepAlive = head[7] == 0x31  // HTTP/1.1 keeps alive unless told otherwise; 1.0 does not
        var length: Int?
        var lineStart = head.firstIndex(of: 0x0A).map { $0 + 1 } ?? head.count
        while lineStart < head.count {
            let lineEnd = head[lineStart...].firstIndex(of: 0x0A) ?? head.count
            let line = head[lineStart..<lineEnd]
            lineStart = lineEnd + 1
            guard let colon = line.firstIndex(of: 0x3A) else { continue }
            let name = line[..<colon]
            let value = line[(colon + 1)...].drop { $0 == 0x20 || $0 == 0x09 }
            if Self.equalsIgnoringCase(name, "content-length") {
                var number = 0
                for byte in value where (0x30...0x39).contains(byte) { number = number * 10 + Int(byte - 0x30) }
                length = number
            } else if Self.equalsIgnoringCase(name, "transfer-encoding") {
                return "chunked responses are not supported by the load generator"
            } else if Self.equalsIgnoringCase(name, "connection") {
                if Self.startsIgnoringCase(value, "close") { keepAlive = false }
                if Self.startsIgnoringCase(value, "keep-alive") { keepAlive = true }
            }
        }
        if status == 204 || status == 304 || (100..<200).contains(status) { length = 0 }
        if let length {
            state = length == 0 ? .done : .body(remaining: length)
        } else {
            state = .untilClose
            keepAlive = false
        }
        return nil
    }

    // Byte comparisons, no String: this runs for every response the generator counts.
    private static func equalsIgnoringCase(_ bytes: ArraySlice<UInt8>, _ lowercase: StaticString) -> Bool {
        bytes.count == lowercase.utf8CodeUnitCount && startsIgnoringCase(bytes, lowercase)
    }

    private static func startsIgnoringCase(_ bytes: ArraySlice<UInt8>, _ lowercase: StaticString) -> Bool {
        guard bytes.count >= lowercase.utf8CodeUnitCount else { return false }
        return lowercase.withUTF8Buffer { expected in
            zip(bytes, expected).allSatisfy { ($0 | 0x20) == $1 || ($0 == $1) }
        }
    }
}
