import Foundation
import NIOHTTP1

/// A response the gateway writes itself, with Envoy's status, body and response flag
/// (research note §8), so a user sees what they would see behind Envoy.
package struct HTTPLocalReply: Sendable, Equatable {
    package var status: HTTPResponseStatus
    package var body: String
    package var flags: Set<ResponseFlag>
    /// Extra headers (`x-envoy-overloaded: true` on overflow, `location` on a redirect).
    package var headers: [(name: String, value: String)] = []
    /// A direct response's body as configured, when it is bytes rather than text.
    package var bytes: [UInt8]?
    /// Why, for the access log and `eastwest route`.
    package var detail: String
    /// A gRPC fault abort's status, given as it is rather than mapped from the HTTP status.
    package var grpcAbortStatus: Int?

    package init(status: HTTPResponseStatus, body: String, flags: Set<ResponseFlag>, detail: String) {
        self.status = status; self.body = body; self.flags = flags; self.detail = detail
    }

    /// The gRPC status a gRPC client gets instead (Envoy's `Grpc::Utility::httpToGrpcStatus`):
    /// a local reply to a gRPC request is HTTP 200 with `grpc-status` and `grpc-message`.
    package var grpcStatus: Int {
        if let grpcAbortStatus { return grpcAbortStatus }
        return switch status.code {
        case 400: 13  // INTERNAL
        case 401: 16  // UNAUTHENTICATED
        case 403: 7  // PERMISSION_DENIED
        case 404: 12  // UNIMPLEMENTED
        case 429, 502, 503, 504: 14  // UNAVAILABLE
        default: 2  // UNKNOWN
        }
    }

    /// What goes on the wire.
    package var payload: [UInt8] { bytes ?? Array(body.utf8) }

    /// The response head as Envoy writes a local reply: its length, a content type only with a
    /// body, the date, `server: istio-envoy`, the reply's own headers, and `connection: close`
    /// when the connection ends after it.
    package func head(closing: Bool) -> HTTPResponseHead {
        var head = HTTPResponseHead(version: .http1_1, status: status)
        let length = payload.count
        head.headers.add(name: "content-length", value: String(length))
        if length > 0 { head.headers.add(name: "content-type", value: "text/plain") }
        head.headers.add(name: "date", value: Self.httpDate())
        head.headers.add(name: "server", value: "istio-envoy")
        for header in headers {
            // A provider's own (an ext-authz denial's) replace the gateway's, as Envoy's setCopy.
            if Self.replaceable.contains(header.name) { head.headers.replaceOrAdd(name: header.name, value: header.value) }
            else { head.headers.add(name: header.name, value: header.value) }
        }
        if closing { head.headers.add(name: "connection", value: "close") }
        return head
    }

    /// A client that broke HTTP/1 (a bad request line, a bad header): 400 `Bad Request`, `DPE`.
    package static func badRequest(_ detail: String) -> HTTPLocalReply {
        .init(status: .badRequest, body: "Bad Request", flags: [.downstreamProtocolError], detail: detail)
    }

    /// Headers over Envoy's `max_request_headers_kb` (60 KiB): 431, `DPE`.
    package static func headersTooLarge(_ detail: String) -> HTTPLocalReply {
        .init(status: .requestHeaderFieldsTooLarge, body: "Request Header Fields Too Large", flags: [.downstreamProtocolError], detail: detail)
    }

    /// A body over the limit a filter buffers it to (ext_authz's `maxRequestBytes`): Envoy's
    /// buffer-limit answer, 413 `Payload Too Large`.
    package static func payloadTooLarge(_ detail: String) -> HTTPLocalReply {
        .init(status: .payloadTooLarge, body: "Payload Too Large", flags: [], detail: detail)
    }

    /// Envoy's `max_request_headers_kb` default.
    package static let maximumRequestHeadersSize = 60 * 1024

    /// A VirtualService `redirect`: the 3xx with its `location`, empty body, no flag.
    package static func redirect(code: Int, location: String, detail: String) -> HTTPLocalReply {
        var reply = HTTPLocalReply(status: HTTPResponseStatus(statusCode: code), body: "", flags: [], detail: detail)
        reply.headers = [("location", location)]
        return reply
    }

    /// A VirtualService `directResponse`: its status and body, no flag.
    package static func directResponse(status: Int, body: [UInt8], detail: String) -> HTTPLocalReply {
        var reply = HTTPLocalReply(status: HTTPResponseStatus(statusCode: status), body: String(decoding: body, as: UTF8.self), flags: [], detail: detail)
        reply.bytes = body
        return reply
    }

    /// No route matched the request: 404, empty body, `NR`.
    package static func noRoute(_ detail: String) -> HTTPLocalReply { .init(status: .notFound, body: "", flags: [.noRoute], detail: detail) }

    /// The route names a service, port or subset the mesh does not have: 503, empty body, `NC`.
    package static func noCluster(_ detail: String) -> HTTPLocalReply {
        .init(status: .serviceUnavailable, body: "", flags: [.noClusterFound], detail: detail)
    }

    /// Nothing healthy to send it to: 503 `no healthy upstream`, `UH`.
    package static func noHealthyUpstream(_ detail: String) -> HTTPLocalReply {
        .init(status: .serviceUnavailable, body: "no healthy upstream", flags: [.noHealthyUpstream], detail: detail)
    }

    /// The plan has no target for `route`: none healthy in any cluster.
    package static func noHealthyUpstream(for route: Route) -> HTTPLocalReply {
        noHealthyUpstream("no healthy endpoint for \(route.service)\(route.subset.map { " subset \($0)" } ?? "") in any cluster")
    }

    /// Every connect attempt failed: 503 with Envoy's reset text, `UF` (plus `URX` after retries).
    package static func connectFailure(timedOut: Bool, attempts: Int, detail: String) -> HTTPLocalReply {
        let reason = timedOut ? "connection timeout" : "remote connection failure"
        let prefix = attempts > 1 ? "retried and the latest reset reason: " : "reset reason: "
        var flags: Set<ResponseFlag> = [.upstreamConnectionFailure]
        if attempts > 1 { flags.insert(.upstreamRetryLimitExceeded) }
        return .init(status: .serviceUnavailable, body: "upstream connect error or disconnect/reset before headers. \(prefix)\(reason)",
                     flags: flags, detail: detail)
    }

    /// The upstream closed or reset before its response headers: 503, `UC`.
    package static func upstreamTerminated(_ detail: String, retried: Bool = false) -> HTTPLocalReply {
        .init(status: .serviceUnavailable,
              body: "upstream connect error or disconnect/reset before headers. \(retried ? "retried and the latest reset reason" : "reset reason"): connection termination",
              flags: [.upstreamConnectionTermination], detail: detail)
    }

    /// A VirtualService `fault.abort`: its status with Envoy's body, `FI`; a gRPC abort is a
    /// 200 with the gRPC status (as a gRPC client's local reply is).
    package static func faultAbort(_ abort: FaultInjection.Abort) -> HTTPLocalReply {
        var reply = HTTPLocalReply(status: HTTPResponseStatus(statusCode: abort.httpStatus), body: "fault filter abort", flags: [.faultInjected],
                                   detail: "fault injected: abort \(abort.grpcStatus.map { "grpc-status \($0)" } ?? String(abort.httpStatus))")
        reply.grpcAbortStatus = abort.grpcStatus
        return reply
    }

    /// The route's `timeout` passed with no response: Envoy's 504 `UT` (`response_timeout`).
    package static func upstreamTimeout(_ detail: String) -> HTTPLocalReply {
        .init(status: .gatewayTimeout, body: "upstream request timeout", flags: [.upstreamRequestTimeout], detail: detail)
    }

    /// The local rate limit is out of tokens: its status (429), body `local_rate_limited`, `RL`,
    /// and the filter's `response_headers_to_add`.
    package static func rateLimited(_ settings: LocalRateLimit.Settings) -> HTTPLocalReply {
        var reply = HTTPLocalReply(status: HTTPResponseStatus(statusCode: settings.status), body: "local_rate_limited", flags: [.rateLimited],
                                   detail: "local_rate_limited: \(settings.origin) (\(settings.maxTokens) tokens, \(settings.tokensPerFill) per \(settings.fillInterval))")
        reply.headers = settings.responseHeaders
        return reply
    }

    /// RequestAuthentication refused the token: 401 (403 for its audiences) with the verifier's
    /// text as the body and `www-authenticate: Bearer realm="<URI>", error="invalid_token"`.
    package static func jwtRejected(status: Int, message: String, uri: String) -> HTTPLocalReply {
        var reply = HTTPLocalReply(status: HTTPResponseStatus(statusCode: status), body: message, flags: [], detail: "jwt_authn_access_denied{\(message)}")
        reply.headers = [("www-authenticate", "Bearer realm=\"\(uri.prefix(256))\", error=\"invalid_token\"")]
        return reply
    }

    /// An AuthorizationPolicy refused the request: Envoy's RBAC filter answers 403 `RBAC: access
    /// denied`, with no response flag (the policy is in the details).
    package static func forbidden(_ detail: String) -> HTTPLocalReply {
        .init(status: .forbidden, body: "RBAC: access denied", flags: [], detail: detail)
    }

    /// An ext-authz provider denied the request (CUSTOM): its status, headers and body as it
    /// answered, `UAEX` (Envoy's ext_authz `onComplete`, details `ext_authz_denied`).
    package static func externalAuthorizationDenied(status: Int, headers: [HTTPHeaderPair], body: [UInt8], provider: String) -> HTTPLocalReply {
        var reply = HTTPLocalReply(status: HTTPResponseStatus(statusCode: status), body: "", flags: [.unauthorizedExternalService],
                                   detail: "ext_authz_denied: provider \(provider) answered \(status)")
        reply.bytes = body
        reply.headers = headers.map { ($0.name, $0.value) }
        return reply
    }

    /// The ext-authz provider could not be asked (no answer, a 5xx, its timeout): the provider's
    /// `statusOnError` (403) with no body, `UAEX` (details `ext_authz_error`).
    package static func externalAuthorizationFailed(status: Int, provider: String) -> HTTPLocalReply {
        .init(status: HTTPResponseStatus(statusCode: status), body: "", flags: [.unauthorizedExternalService],
              detail: "ext_authz_error: no answer from provider \(provider)")
    }

    /// Circuit breaker open: 503 with `x-envoy-overloaded: true`, `UO`.
    package static func overflow(_ detail: String) -> HTTPLocalReply {
        var reply = HTTPLocalReply(status: .serviceUnavailable, body: "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                                   flags: [.upstreamOverflow], detail: detail)
        reply.headers = [("x-envoy-overloaded", "true")]
        return reply
    }

    private static let replaceable: Set<String> = ["content-type", "date", "server"]

    package static func == (a: HTTPLocalReply, b: HTTPLocalReply) -> Bool {
        a.status == b.status && a.payload == b.payload && a.flags == b.flags && a.detail == b.detail
            && a.headers.elementsEqual(b.headers, by: { $0 == $1 })
    }
}

extension HTTPLocalReply {
    /// RFC 9110's IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the `date` Envoy's local replies carry.
    static func httpDate(_ date: Date = Date()) -> String {
        var seconds = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
