import Foundation
import NIOHTTP1

/// ext-authz over gRPC (`envoyExtAuthzGrpc`): Envoy's `GrpcClientImpl` with the check request
/// `CheckRequestUtils::createHttpCheck` builds (envoyproxy/envoy:source/extensions/filters/common/
/// ext_authz/check_request_utils.cc, ext_authz_grpc_impl.cc; api/envoy/service/auth/v3). Pure:
/// the unary call `envoy.service.auth.v3.Authorization/Check` as an HTTP/2 request and body, and
/// what its answer means.
extension ExternalAuthorizer {
    package static let grpcCheckPath = "/envoy.service.auth.v3.Authorization/Check"

    /// What the check request says about the request and its connection.
    package struct CheckAttributes: Sendable {
        package struct Peer: Sendable {
            package var address: String
            package var port: Int
            /// The SPIFFE ID (URI SAN) the peer's certificate carries.
            package var principal: String?

            package init(address: String, port: Int, principal: String?) {
                self.address = address; self.port = port; self.principal = principal
            }

            /// `ip:port` (or `[ip]:port`) as a connection record keeps it.
            package init(hostPort: String, principal: String?) {
                let parsed = HostPort(parsing: hostPort)
                self.init(address: parsed?.host ?? hostPort, port: parsed?.port ?? 0, principal: principal)
            }
        }

        package var source: Peer
        package var destination: Peer
        /// When the request's first byte came (`request.time`).
        package var time: Date
        /// Envoy's stream id, in decimal (`request.http.id`).
        package var streamID: UInt64
        package var head: HTTPRequestHead
        /// `:authority` as the request carried it.
        package var authority: String
        /// "HTTP/1.1" or "HTTP/2".
        package var protocolName: String
        /// The buffered body (`includeRequestBodyInCheck`); nil: none was buffered.
        package var body: CheckedBody?

        package init(source: Peer, destination: Peer, time: Date, streamID: UInt64, head: HTTPRequestHead, authority: String, protocolName: String,
                     body: CheckedBody? = nil) {
            self.source = source; self.destination = destination; self.time = time; self.streamID = streamID
            self.head = head; self.authority = authority; self.protocolName = protocolName; self.body = body
        }
    }

    /// An `AttributeContext.Peer`: its address (`Address { socket_address { address = 2,
    /// port_value = 3 } }`), its `service` and its principal.
    static func peer(_ peer: CheckAttributes.Peer, service: String = "") -> (inout ProtobufWire.Writer) -> Void {
        { writer in
            writer.message(1) { address in
                address.message(1) { socket in
                    socket.string(2, peer.address)
                    socket.integer(3, Int64(peer.port))
                }
            }
            writer.string(2, service)
            writer.string(4, peer.principal ?? "")
        }
    }

    /// Envoy's network ext_authz check for a TCP connection (`createTcpCheck`): the source, and
    /// the destination with the requested server name as its `service`; no request.
    package func grpcConnectionCheckRequest(source: CheckAttributes.Peer, destination: CheckAttributes.Peer, serverName: String)
        -> (head: HTTPRequestHead, body: [UInt8]) {
        var writer = ProtobufWire.Writer()
        writer.message(1) { context in
            context.message(1, Self.peer(source))
            context.message(2, Self.peer(destination, service: serverName))
        }
        return grpcCall(writer.bytes)
    }

    /// The `CheckRequest` message (`attributes`: source, destination, request).
    package func grpcCheckMessage(_ attributes: CheckAttributes) -> [UInt8] {
        let peer = { (peer: CheckAttributes.Peer) in Self.peer(peer) }
        // Every header, pseudo-headers first as Envoy's map holds them, names lower-cased,
        // repeated ones joined by ",".
        var headers: [(String, String)] = [(":authority", attributes.authority), (":method", attributes.head.method.rawValue),
                                           (":path", attributes.head.uri), (":scheme", "https")]
        var index: [String: Int] = [:]
        for (name, value) in attributes.head.headers {
            let lower = name.lowercased()
            guard lower != "host", lower != "x-envoy-auth-partial-body" else { continue }
            if let at = index[lower] {
                headers[at].1 += "," + value
            } else {
                index[lower] = headers.count
                headers.append((lower, value))
            }
        }
        if let body = attributes.body { headers.append((Self.partialBodyHeader, String(body.partial))) }
        let seconds = attributes.time.timeIntervalSince1970
        var writer = ProtobufWire.Writer()
        writer.message(1) { context in
            context.message(1, peer(attributes.source))
            context.message(2, peer(attributes.destination))
            context.message(4) { request in
                request.message(1) { timestamp in
                    timestamp.integer(1, Int64(seconds.rounded(.down)))
                    timestamp.integer(2, Int64((seconds - seconds.rounded(.down)) * 1_000_000_000))
                }
                request.message(2) { http in
                    http.string(1, String(attributes.streamID))
                    http.string(2, attributes.head.method.rawValue)
                    http.map(3, headers)
                    http.string(4, attributes.head.uri)
                    http.string(5, attributes.authority)
                    http.string(6, "https")
                    // Envoy's bytesReceived: what had come when the check left.
                    http.integer(9, Int64(attributes.body?.received ?? 0))
                    http.string(10, attributes.protocolName)
                    if let body = attributes.body {
                        // As a string (invalid UTF-8 replaced, as Envoy sanitizes it), or as bytes.
                        if requestBody?.packAsBytes == true { http.bytes(12, body.bytes) } else { http.string(11, String(decoding: body.bytes, as: UTF8.self)) }
                    }
                }
            }
        }
        return writer.bytes
    }

    /// The unary call: the request head (`:authority` the provider's host, the provider's
    /// timeout as `grpc-timeout`) and its one length-prefixed, uncompressed message.
    package func grpcCheckRequest(_ attributes: CheckAttributes) -> (head: HTTPRequestHead, body: [UInt8]) {
        grpcCall(grpcCheckMessage(attributes))
    }

    /// `message` as the unary call's request.
    private func grpcCall(_ message: [UInt8]) -> (head: HTTPRequestHead, body: [UInt8]) {
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: Self.grpcCheckPath)
        head.headers.add(name: "host", value: host)
        head.headers.add(name: "content-type", value: "application/grpc")
        head.headers.add(name: "te", value: "trailers")
        let milliseconds = max(1, Int64(timeout.components.seconds) * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        // grpc-timeout takes at most eight digits.
        head.headers.add(name: "grpc-timeout", value: milliseconds < 100_000_000 ? "\(milliseconds)m" : "\(min(99_999_999, milliseconds / 1000))S")
        let length = UInt32(message.count)
        let prefix: [UInt8] = [0, UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
        return (head, prefix + message)
    }

    /// Envoy's `onSuccess`/`onFailure`: an answer that is not a whole OK call (an HTTP status
    /// other than 200, a grpc-status other than 0, no message, a malformed one) is an error;
    /// `status.code` OK allows with the `ok_response`'s headers; an `error_response` is an error;
    /// anything else denies, 403 unless the `denied_response` gives a status.
    package func grpcVerdict(status: Int, headers: HTTPHeaders, trailers: HTTPHeaders?, body: [UInt8]) -> Verdict {
        guard status == 200, (trailers?.first(name: "grpc-status") ?? headers.first(name: "grpc-status")) == "0",
              body.count >= 5, body[0] == 0 else { return .failed }
        let length = Int(body[1]) << 24 | Int(body[2]) << 16 | Int(body[3]) << 8 | Int(body[4])
        guard body.count - 5 >= length, let response = try? CheckResponse(body[5..<(5 + length)]) else { return .failed }
        if response.code == 0 {
            var allowed = Allowed()
            allowed.requestHeaders = response.ok.headers
            allowed.removeFromRequest = response.ok.headersToRemove.map { $0.lowercased() }
            allowed.addToResponse = response.ok.responseHeaders.map { HTTPHeaderPair(name: $0.name, value: $0.value) }
            return .allowed(allowed)
        }
        if response.isError { return .failed }
        let passed = response.denied.headers.filter { !Self.framing.contains($0.name) }.map { HTTPHeaderPair(name: $0.name, value: $0.value) }
        return .denied(status: response.denied.status > 0 ? response.denied.status : 403, headers: passed, body: Array(response.denied.body.utf8))
    }

    /// The parts of a `CheckResponse` Envoy's HTTP filter acts on.
    struct CheckResponse {
        struct HTTPParts {
            var status = 0
            var headers: [HeaderMutation] = []
            var headersToRemove: [String] = []
            var responseHeaders: [HeaderMutation] = []
            var body = ""
        }

        var code: Int64 = 0
        var ok = HTTPParts()
        var denied = HTTPParts()
        var isError = false

        init(_ bytes: ArraySlice<UInt8>) throws(ProtobufWire.Malformed) {
            for (field, value) in try ProtobufWire.fields(bytes) {
                guard let data = value.data else { continue }
                switch field {
                case 1:  // google.rpc.Status { code = 1 }
                    for (inner, value) in try ProtobufWire.fields(data) where inner == 1 { code = value.integer ?? 0 }
                case 2: denied = try Self.parts(data)  // DeniedHttpResponse
                case 3: ok = try Self.parts(data)  // OkHttpResponse
                case 5: isError = true  // ErrorResponse (Envoy 1.35+)
                default: break
                }
            }
        }

        /// Denied (status 1, headers 2, body 3) and OK (headers 2, headers_to_remove 5,
        /// response_headers_to_add 6) share their field numbers where they overlap.
        static func parts(_ bytes: ArraySlice<UInt8>) throws(ProtobufWire.Malformed) -> HTTPParts {
            var parts = HTTPParts()
            for (field, value) in try ProtobufWire.fields(bytes) {
                guard let data = value.data else { continue }
                switch field {
                case 1:
                    for (inner, value) in try ProtobufWire.fields(data) where inner == 1 { parts.status = Int(value.integer ?? 0) }
                case 2: if let header = try header(data) { parts.headers.append(header) }
                case 3: parts.body = String(decoding: data, as: UTF8.self)
                case 5: parts.headersToRemove.append(String(decoding: data, as: UTF8.self))
                case 6: if let header = try header(data) { parts.responseHeaders.append(header) }
                default: break
                }
            }
            return parts
        }

        /// A `HeaderValueOption`: `header` { key 1, value 2, raw_value 3 }, the deprecated `append`
        /// BoolValue (true appends, false overwrites), else `append_action`.
        static func header(_ bytes: ArraySlice<UInt8>) throws(ProtobufWire.Malformed) -> HeaderMutation? {
            var name = "", value = "", raw: String?
            var action = HeaderMutation.Action.appendOrAdd
            var deprecatedAppend: Bool?
            for (field, part) in try ProtobufWire.fields(bytes) {
                switch (field, part) {
                case (1, .bytes(let header)):
                    for (inner, part) in try ProtobufWire.fields(header) {
                        switch inner {
                        case 1: name = part.string ?? ""
                        case 2: value = part.string ?? ""
                        case 3: raw = part.string
                        default: break
                        }
                    }
                case (2, .bytes(let wrapped)):
                    deprecatedAppend = false
                    for (inner, flag) in try ProtobufWire.fields(wrapped) where inner == 1 { deprecatedAppend = flag.integer == 1 }
                case (3, .varint(let raw)):
                    // Envoy reads an unknown action as OVERWRITE_IF_EXISTS_OR_ADD.
                    action = HeaderMutation.Action(rawValue: Int(truncatingIfNeeded: raw)) ?? .overwriteOrAdd
                default: break
                }
            }
            guard !name.isEmpty else { return nil }
            if let deprecatedAppend { action = deprecatedAppend ? .appendOrAdd : .overwriteOrAdd }
            return HeaderMutation(name: name.lowercased(), value: value.isEmpty ? raw ?? "" : value, action: action)
        }
    }
}
