import Foundation
import NIOHTTP1
import Testing
@testable import MeshProxyCore

@Suite("ext-authz over gRPC: Envoy's CheckRequest and CheckResponse on the wire")
struct ExternalAuthorizationGRPCTests {
    static let provider = ExternalAuthorizer(MeshConfig.ExtensionProvider(name: "grpc", envoyExtAuthzGrpc: .init(
        service: "foo/ext-authz.foo.svc.cluster.local", port: ProtoUInt32(9000), timeout: nil, failOpen: nil, statusOnError: nil)))

    @Test("The wire format: varints of every size (negative int64 as ten bytes), strings, nested messages and map entries read back field by field; a truncated varint, a length past the end and a group are malformed")
    func wire() throws {
        var writer = ProtobufWire.Writer()
        writer.integer(1, 300)
        writer.integer(2, -1)
        writer.string(3, "héllo")
        writer.message(4) { $0.integer(1, 7) }
        writer.map(5, [("k", "v"), ("", "")])
        writer.string(6, "")  // a default value is not written
        #expect(Array(writer.bytes.prefix(3)) == [0x08, 0xAC, 0x02])
        #expect(Array(writer.bytes[3...13]) == [0x10] + Array(repeating: 0xFF, count: 9) + [0x01])
        let fields = try ProtobufWire.fields(writer.bytes[...])
        #expect(fields.map(\.field) == [1, 2, 3, 4, 5, 5])
        #expect(fields[0].value.integer == 300 && fields[1].value.integer == -1 && fields[2].value.string == "héllo")
        #expect(try ProtobufWire.fields(try #require(fields[3].value.data)).first?.value.integer == 7)
        let entry = try ProtobufWire.fields(try #require(fields[4].value.data))
        #expect(entry.map(\.field) == [1, 2] && entry[1].value.string == "v")
        #expect(fields[5].value.data?.isEmpty == true, "an empty entry is still an entry")
        for bad: [UInt8] in [[0x08, 0x80], [0x0A, 0x05, 0x61], [0x0B], [0x00, 0x01]] {
            #expect(throws: ProtobufWire.Malformed.self) { try ProtobufWire.fields(bad[...]) }
        }
    }

    static let head: HTTPRequestHead = {
        var head = HTTPRequestHead(version: .http2, method: .POST, uri: "/api/v1?x=1")
        head.headers.add(name: "Host", value: "web.foo.svc.cluster.local")
        head.headers.add(name: "X-Tag", value: "a")
        head.headers.add(name: "x-tag", value: "b")
        head.headers.add(name: "x-envoy-auth-partial-body", value: "forged")
        return head
    }()

    @Test("The check request: POST to Authorization/Check with application/grpc, te and the provider's timeout (istiod's 600 s); one uncompressed message naming the client, the gateway and the request, headers lower-cased and joined, pseudo-headers in, a forged partial-body header out")
    func checkRequest() throws {
        let attributes = ExternalAuthorizer.CheckAttributes(
            source: .init(hostPort: "10.0.0.7:40000", principal: "spiffe://cluster.local/ns/default/sa/sleep"),
            destination: .init(hostPort: "[::1]:15443", principal: "spiffe://cluster.local/ns/istio-system/sa/eastwest-gateway-east"),
            time: Date(timeIntervalSince1970: 1_700_000_000.25), streamID: 42, head: Self.head, authority: "web.foo.svc.cluster.local", protocolName: "HTTP/2")
        let (head, body) = Self.provider.grpcCheckRequest(attributes)
        #expect(head.method == .POST && head.uri == "/envoy.service.auth.v3.Authorization/Check")
        #expect(head.headers["content-type"] == ["application/grpc"] && head.headers["te"] == ["trailers"] && head.headers["grpc-timeout"] == ["600000m"])
        #expect(head.headers["host"] == ["ext-authz.foo.svc.cluster.local"])
        #expect(body[0] == 0 && Int(body[1]) << 24 | Int(body[2]) << 16 | Int(body[3]) << 8 | Int(body[4]) == body.count - 5)
        let context = try #require(try ProtobufWire.fields(body[5...]).first { $0.field == 1 }?.value.data)
        func message(_ bytes: ArraySlice<UInt8>, _ path: [Int]) throws -> [(field: Int, value: ProtobufWire.Value)] {
            var current = bytes
            for field in path { current = try #require(try ProtobufWire.fields(current).first { $0.field == field }?.value.data) }
            return try ProtobufWire.fields(current)
        }
        #expect(try message(context, [1]).first { $0.field == 4 }?.value.string == "spiffe://cluster.local/ns/default/sa/sleep")
        let socket = try message(context, [2, 1, 1])
        #expect(socket.first { $0.field == 2 }?.value.string == "::1" && socket.first { $0.field == 3 }?.value.integer == 15443)
        let time = try message(context, [4, 1])
        #expect(time.first { $0.field == 1 }?.value.integer == 1_700_000_000 && time.first { $0.field == 2 }?.value.integer == 250_000_000)
        let http = try message(context, [4, 2])
        func string(_ field: Int) -> String? { http.first { $0.field == field }?.value.string }
        #expect(string(1) == "42" && string(2) == "POST" && string(4) == "/api/v1?x=1" && string(5) == "web.foo.svc.cluster.local"
                && string(6) == "https" && string(10) == "HTTP/2")
        let headers = try http.filter { $0.field == 3 }.map { entry -> String in
            let pair = try ProtobufWire.fields(try #require(entry.value.data))
            return "\(pair.first { $0.field == 1 }?.value.string ?? ""): \(pair.first { $0.field == 2 }?.value.string ?? "")"
        }
        #expect(headers == [":authority: web.foo.svc.cluster.local", ":method: POST", ":path: /api/v1?x=1", ":scheme: https", "x-tag: a,b"])
    }

    /// A CheckResponse as a provider writes it.
    static func response(code: Int64, denied: ((inout ProtobufWire.Writer) -> Void)? = nil, ok: ((inout ProtobufWire.Writer) -> Void)? = nil,
                         error: Bool = false) -> [UInt8] {
        var writer = ProtobufWire.Writer()
        writer.message(1) { $0.integer(1, code) }
        if let denied { writer.message(2, denied) }
        if let ok { writer.message(3, ok) }
        if error { writer.message(5) { $0.string(3, "oops") } }
        let length = UInt32(writer.bytes.count)
        return [0, UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + writer.bytes
    }

    static func header(_ key: String, _ value: String, action: Int64? = nil, append: Bool? = nil) -> (inout ProtobufWire.Writer) -> Void {
        { option in
            option.message(1) { $0.string(1, key); $0.string(2, value) }
            if append == true { option.message(2) { $0.integer(1, 1) } }
            if let action { option.integer(3, action) }
        }
    }

    @Test("Answers: OK allows with its request headers by append action (default append, the deprecated append flag, overwrite, add-if-absent), headers to remove and response headers; another status denies, 403 unless the denied response says; grpc-status ≠ 0, HTTP ≠ 200, a compressed or missing message, an error_response are errors")
    func verdicts() throws {
        let ok = Self.response(code: 0, ok: { ok in
            ok.message(2, Self.header("X-User", "alice"))
            ok.message(2, Self.header("x-tag", "c", append: true))
            ok.message(2, Self.header("x-mode", "strict", action: 2))
            ok.message(2, Self.header("x-once", "1", action: 1))
            ok.string(5, "Authorization")
            ok.message(6, Self.header("x-seen", "yes"))
        })
        let trailers: HTTPHeaders = ["grpc-status": "0"]
        guard case .allowed(let allowed) = Self.provider.grpcVerdict(status: 200, headers: [:], trailers: trailers, body: ok) else {
            Issue.record("not allowed"); return
        }
        var request: HTTPHeaders = ["x-tag": "a", "x-mode": "lax", "x-once": "0", "authorization": "Bearer t"]
        for mutation in allowed.requestHeaders { mutation.apply(to: &request) }
        for name in allowed.removeFromRequest { request.remove(name: name) }
        #expect(request["x-user"] == ["alice"] && request["x-tag"] == ["a", "c"] && request["x-mode"] == ["strict"] && request["x-once"] == ["0"])
        #expect(!request.contains(name: "authorization") && allowed.addToResponse == [.init(name: "x-seen", value: "yes")])

        let deny = Self.response(code: 7, denied: { denied in
            denied.message(1) { $0.integer(1, 401) }
            denied.message(2, Self.header("x-why", "no"))
            denied.string(3, "go away")
        })
        #expect(Self.provider.grpcVerdict(status: 200, headers: [:], trailers: trailers, body: deny)
                == .denied(status: 401, headers: [.init(name: "x-why", value: "no")], body: Array("go away".utf8)))
        #expect(Self.provider.grpcVerdict(status: 200, headers: [:], trailers: trailers, body: Self.response(code: 16))
                == .denied(status: 403, headers: [], body: []))
        #expect(Self.provider.grpcVerdict(status: 200, headers: [:], trailers: trailers, body: Self.response(code: 7, error: true)) == .failed)
        #expect(Self.provider.grpcVerdict(status: 200, headers: [:], trailers: ["grpc-status": "14"], body: ok) == .failed)
        #expect(Self.provider.grpcVerdict(status: 200, headers: ["grpc-status": "0"], trailers: nil, body: []) == .failed, "no message")
        #expect(Self.provider.grpcVerdict(status: 503, headers: [:], trailers: trailers, body: ok) == .failed)
        #expect(Self.provider.grpcVerdict(status: 200, headers: [:], trailers: trailers, body: [1] + ok.dropFirst()) == .failed, "compressed")
        #expect(Self.provider.grpcVerdict(status: 200, headers: [:], trailers: trailers, body: Array(ok.dropLast(3))) == .failed, "cut short")
    }
}
