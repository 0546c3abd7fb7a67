import NIOHTTP1

/// One MeshConfig ext-authz provider, compiled: Envoy's `ext_authz` HTTP filter and its HTTP
/// client (envoyproxy/envoy:source/extensions/filters/common/ext_authz/ext_authz_http_impl.cc) as
/// istiod configures them (istio/istio:pilot/pkg/security/authz/builder/extauthz.go). Pure: what
/// the check request is, and what an answer means; `ExternalAuthorizationCheck` sends it.
package struct ExternalAuthorizer: Sendable, Equatable {
    package enum Transport: Sendable, Equatable { case http, grpc }

    package var name: String
    package var transport: Transport
    /// The provider's service host (its `<namespace>/` dropped) and port.
    package var host: String
    package var port: Int
    /// istiod's default when none is given: 600 s.
    package var timeout: Duration
    package var pathPrefix: String
    package var failOpen: Bool
    /// What a client gets when the check fails (no answer, a 5xx, a timeout): 403 unless set.
    package var statusOnError: Int
    /// Request headers the check carries besides Envoy's fixed four (`authorization`, `:method`,
    /// `:path`, `host`); names matched ignoring case, `x*` a prefix, `*x` a suffix.
    var requestHeaders: [StringPattern]
    /// `includeAdditionalHeadersInCheck`, in name order (istiod sorts them).
    package var additionalHeaders: [HTTPHeaderPair]
    var upstreamOnAllow: [StringPattern]
    var downstreamOnAllow: [StringPattern]
    /// Nil: every header of a denial reaches the client but `host` (Envoy's default).
    var downstreamOnDeny: [StringPattern]?
    /// `includeRequestBodyInCheck`; nil: the check is sent at the request's head.
    package var requestBody: RequestBody?

    /// Envoy's `with_request_body`: the body is buffered before the check, up to
    /// `maxRequestBytes` (above 0: the loader refuses 0, as Envoy does).
    package struct RequestBody: Sendable, Equatable {
        package var maxRequestBytes: Int
        package var allowPartialMessage: Bool
        package var packAsBytes: Bool
    }

    /// What of the request's body a check carries.
    package struct CheckedBody: Sendable, Equatable {
        /// At most `maxRequestBytes`.
        package var bytes: [UInt8]
        /// More had come than the check carries.
        package var partial: Bool
        /// Body bytes received when the check left.
        package var received: Int

        package init(bytes: [UInt8], partial: Bool, received: Int) { self.bytes = bytes; self.partial = partial; self.received = received }
    }

    /// The header that says whether the check saw the whole body.
    package static let partialBodyHeader = "x-envoy-auth-partial-body"

    package init(_ provider: MeshConfig.ExtensionProvider) {
        name = provider.name
        let patterns = { (names: [String]?) in (names ?? []).map { StringPattern($0.lowercased()) } }
        if let http = provider.envoyExtAuthzHttp {
            transport = .http
            (host, port) = (Self.host(of: http.service), http.port.value)
            timeout = http.timeout?.duration ?? .seconds(600)
            pathPrefix = http.pathPrefix ?? ""
            failOpen = http.failOpen ?? false
            statusOnError = http.statusOnError.flatMap(Self.statusCode) ?? 403
            requestHeaders = patterns(http.includeRequestHeadersInCheck ?? http.includeHeadersInCheck)
            additionalHeaders = (http.includeAdditionalHeadersInCheck ?? [:]).sorted { $0.key < $1.key }.map { HTTPHeaderPair(name: $0.key, value: $0.value) }
            upstreamOnAllow = patterns(http.headersToUpstreamOnAllow)
            downstreamOnAllow = patterns(http.headersToDownstreamOnAllow)
            // Envoy: with a list, the list plus the four it always passes.
            downstreamOnDeny = http.headersToDownstreamOnDeny.map { patterns($0 + [":status", "content-length", "www-authenticate", "location"]) }
            requestBody = http.includeRequestBodyInCheck.map(Self.requestBody)
        } else {
            let grpc = provider.envoyExtAuthzGrpc
            transport = .grpc
            (host, port) = (Self.host(of: grpc?.service ?? ""), grpc?.port.value ?? 0)
            timeout = grpc?.timeout?.duration ?? .seconds(600)
            pathPrefix = ""
            failOpen = grpc?.failOpen ?? false
            statusOnError = grpc?.statusOnError.flatMap(Self.statusCode) ?? 403
            requestHeaders = []; additionalHeaders = []; upstreamOnAllow = []; downstreamOnAllow = []; downstreamOnDeny = nil
            requestBody = grpc?.includeRequestBodyInCheck.map(Self.requestBody)
        }
    }

    private static func requestBody(_ body: MeshConfig.RequestBody) -> RequestBody {
        RequestBody(maxRequestBytes: body.maxRequestBytes?.value ?? 0, allowPartialMessage: body.allowPartialMessage ?? false,
                    packAsBytes: body.packAsBytes ?? false)
    }

    /// `statusOnError` as istiod parses it: an HTTP status code Envoy knows.
    package static func statusCode(_ text: String) -> Int? {
        guard let code = Int(text), (100...599).contains(code) else { return nil }
        return code
    }

    /// `ns/host` or `host`: the host (service names are FQDNs in EastWest's catalog).
    private static func host(of service: String) -> String {
        service.split(separator: "/", maxSplits: 1).last.map(String.init) ?? service
    }

    /// Envoy's check request: the client's method, the provider's path prefix before the path,
    /// the buffered body (`includeRequestBodyInCheck`; none: `content-length: 0`), the headers it
    /// always passes and the allowed ones, then the provider's additional headers (set, replacing).
    package func checkRequest(for head: HTTPRequestHead, body: [UInt8] = []) -> HTTPRequestHead {
        var check = HTTPRequestHead(version: .http1_1, method: head.method, uri: pathPrefix + head.uri)
        check.headers.add(name: "content-length", value: String(body.count))
        for (name, value) in head.headers {
            let lower = name.lowercased()
            guard lower != "content-length" else { continue }
            if lower == "host" || lower == "authorization" || requestHeaders.contains(where: { $0.matchesIgnoringCase(lower) }) {
                check.headers.add(name: name, value: value)
            }
        }
        for header in additionalHeaders { check.headers.replaceOrAdd(name: header.name, value: header.value) }
        return check
    }

    /// What the provider's answer means.
    package enum Verdict: Sendable, Equatable {
        /// Go on: headers to set on the request, to remove from it, and to add to its response.
        case allowed(Allowed)
        /// Answer the client with the provider's status, headers and body.
        case denied(status: Int, headers: [HTTPHeaderPair], body: [UInt8])
        /// The check failed: `statusOnError`, or on with `failOpen`.
        case failed
    }

    package struct Allowed: Sendable, Equatable {
        /// Headers the provider puts on the request (the HTTP provider's allowed ones replace;
        /// a gRPC answer says how, per header).
        package var requestHeaders: [HeaderMutation] = []
        package var removeFromRequest: [String] = []
        package var addToResponse: [HTTPHeaderPair] = []
    }

    /// One header an answer sets on the request, with Envoy's `HeaderValueOption` append action.
    package struct HeaderMutation: Sendable, Equatable {
        package enum Action: Int, Sendable, Equatable {
            /// `APPEND_IF_EXISTS_OR_ADD` (0, protobuf's default): another value, or the first.
            case appendOrAdd = 0
            /// `ADD_IF_ABSENT`: only when the request has none.
            case addIfAbsent = 1
            /// `OVERWRITE_IF_EXISTS_OR_ADD`: replaces every value.
            case overwriteOrAdd = 2
            /// `OVERWRITE_IF_EXISTS`: replaces, never adds.
            case overwriteIfExists = 3
        }

        package var name: String
        package var value: String
        package var action: Action

        package init(name: String, value: String, action: Action = .overwriteOrAdd) {
            self.name = name; self.value = value; self.action = action
        }

        package func apply(to headers: inout HTTPHeaders) {
            switch action {
            case .appendOrAdd: headers.add(name: name, value: value)
            case .addIfAbsent: if !headers.contains(name: name) { headers.add(name: name, value: value) }
            case .overwriteOrAdd: headers.replaceOrAdd(name: name, value: value)
            case .overwriteIfExists: if headers.contains(name: name) { headers.replaceOrAdd(name: name, value: value) }
            }
        }
    }

    /// What an answer means for this provider's transport; no answer is the error path.
    func verdict(_ answer: ExternalAuthorizationCheck.Answer?) -> Verdict {
        guard let answer else { return .failed }
        switch transport {
        case .http: return verdict(status: answer.status, headers: answer.headers, body: answer.body)
        case .grpc: return grpcVerdict(status: answer.status, headers: answer.headers, trailers: answer.trailers, body: answer.body)
        }
    }

    /// Envoy's `toResponse`: 200 allows; a 5xx is an error (`status_on_error`); anything else
    /// denies with that status.
    package func verdict(status: Int, headers: HTTPHeaders, body: [UInt8]) -> Verdict {
        if (500...599).contains(status) { return .failed }
        if status == 200 {
            var allowed = Allowed()
            for (name, value) in headers {
                let lower = name.lowercased()
                if lower == "x-envoy-auth-headers-to-remove" {
                    allowed.removeFromRequest += value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty }
                    continue
                }
                if upstreamOnAllow.contains(where: { $0.matchesIgnoringCase(lower) }) { allowed.requestHeaders.append(HeaderMutation(name: lower, value: value)) }
                if downstreamOnAllow.contains(where: { $0.matchesIgnoringCase(lower) }) { allowed.addToResponse.append(HTTPHeaderPair(name: lower, value: value)) }
            }
            return .allowed(allowed)
        }
        var passed: [HTTPHeaderPair] = []
        for (name, value) in headers {
            let lower = name.lowercased()
            guard lower != "x-envoy-auth-headers-to-remove", !Self.framing.contains(lower) else { continue }
            let passes = downstreamOnDeny.map { list in list.contains { $0.matchesIgnoringCase(lower) } } ?? (lower != "host")
            if passes { passed.append(HTTPHeaderPair(name: lower, value: value)) }
        }
        return .denied(status: status, headers: passed, body: body)
    }

    /// The gateway frames the reply itself: the provider's framing headers never pass.
    static let framing: Set<String> = ["content-length", "transfer-encoding", "connection", "keep-alive"]
}

/// A header name and value, comparable (NIO's tuples are not `Equatable`).
package struct HTTPHeaderPair: Sendable, Equatable {
    package var name: String
    package var value: String

    package init(name: String, value: String) { self.name = name; self.value = value }
}

/// The ext-authz providers of the mesh config, by name.
package struct ExternalAuthorizers: Sendable, Equatable {
    package var byName: [String: ExternalAuthorizer]

    package init(_ providers: [MeshConfig.ExtensionProvider] = []) {
        var byName: [String: ExternalAuthorizer] = [:]
        // istiod rejects a duplicate name; the loader reported it, the first is kept.
        for provider in providers where provider.envoyExtAuthzHttp != nil || provider.envoyExtAuthzGrpc != nil {
            if byName[provider.name] == nil { byName[provider.name] = ExternalAuthorizer(provider) }
        }
        self.byName = byName
    }

    package subscript(name: String) -> ExternalAuthorizer? { byName[name] }
}

extension ExternalAuthorizers {
    /// CUSTOM policies whose provider no loaded mesh config declares (it may be in another file
    /// than the policy, so this is asked of everything loaded): istiod turns their rules into
    /// DENY rules, and so does the gateway.
    package static func warnings(_ loaded: IstioPolicyLoader.Loaded) -> [String] {
        let declared = Set(loaded.extensionProviders.filter { $0.envoyExtAuthzHttp != nil || $0.envoyExtAuthzGrpc != nil }.map(\.name))
        return loaded.authorizationPolicies.compactMap { policy in
            guard policy.action == .custom, let name = policy.provider?.name, !name.isEmpty, !declared.contains(name) else { return nil }
            return "warning: AuthorizationPolicy \(policy.namespace)/\(policy.name): CUSTOM provider '\(name)' is in no mesh config "
                + "(extensionProviders of an `istio` ConfigMap or an IstioOperator in policies:): requests its rules match are refused with 403"
        }
    }
}
