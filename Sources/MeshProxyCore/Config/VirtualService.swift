import Foundation

/// An Istio VirtualService (networking.istio.io v1, v1beta1, v1alpha3) as users write it; the
/// fields EastWest carries out are typed here, the rest load with a warning
/// (`IstioPolicyLoader.virtualServiceNotImplemented`). `PolicyCompiler` turns it into
/// `HTTPRouteTable`s; nothing on the data path reads this form.
package struct VirtualService: Codable, Sendable, Equatable {
    package var hosts: [String]?
    package var gateways: [String]?
    package var http: [HTTPRoute]?
    package var tcp: [TCPRoute]?
    package var tls: [TLSRoute]?
    package var exportTo: [String]?
    /// `metadata.namespace` (short host names resolve in it); set by the loader, not decoded.
    package var namespace: String = "default"
    /// `metadata.name`, for `eastwest route` and the log.
    package var name: String = ""

    enum CodingKeys: String, CodingKey { case hosts, gateways, http, tcp, tls, exportTo }

    package init(hosts: [String], http: [HTTPRoute], namespace: String = "default", name: String = "") {
        self.hosts = hosts; self.http = http; self.namespace = namespace; self.name = name
    }

    package struct HTTPRoute: Codable, Sendable, Equatable {
        package var name: String?
        package var match: [HTTPMatchRequest]?
        package var route: [HTTPRouteDestination]?
        package var headers: Headers?
        package var rewrite: HTTPRewrite?
        package var redirect: HTTPRedirect?
        package var directResponse: HTTPDirectResponse?
        /// Istio's request timeout; unset (or 0s) is none, not Envoy's 15 s.
        package var timeout: ConfigDuration?
        /// Unset: Istio's default retry policy (`RetryPolicy.istioDefault`).
        package var retries: HTTPRetry?
        package var fault: HTTPFaultInjection?
        /// One mirror (`mirror` with `mirrorPercentage`, or the legacy integer `mirrorPercent`) or
        /// several (`mirrors`), never both.
        package var mirror: Destination?
        package var mirrorPercentage: Percent?
        package var mirrorPercent: Int?
        package var mirrors: [HTTPMirrorPolicy]?
        /// This rule's traffic is routed by another VirtualService's rules (one without hosts),
        /// merged in as istiod merges them (`VirtualServiceDelegation`).
        package var delegate: Delegate?

        package init(name: String? = nil, match: [HTTPMatchRequest]? = nil, route: [HTTPRouteDestination]? = nil) {
            self.name = name; self.match = match; self.route = route
        }
    }

    /// `delegate`: the VirtualService whose rules stand in for this one (namespace: the root's).
    package struct Delegate: Codable, Sendable, Equatable {
        package var name: String
        package var namespace: String?
    }

    /// `retries` (istio/api HTTPRetry): `attempts` retries after the first try.
    package struct HTTPRetry: Codable, Sendable, Equatable {
        package var attempts: Int?
        package var perTryTimeout: ConfigDuration?
        /// Envoy's `retry_on`: tokens and bare status codes, comma-separated, no spaces.
        package var retryOn: String?
        package var retryRemoteLocalities: Bool?
        package var retryIgnorePreviousHosts: Bool?
        package var backoff: ConfigDuration?
    }

    /// `fault` (istio/api HTTPFaultInjection): a delay and/or an abort for a share of requests.
    package struct HTTPFaultInjection: Codable, Sendable, Equatable {
        package var delay: Delay?
        package var abort: Abort?

        package struct Delay: Codable, Sendable, Equatable {
            package var fixedDelay: ConfigDuration?
            package var exponentialDelay: ConfigDuration?
            package var percentage: Percent?
            /// Deprecated integer percent, read when `percentage` is absent.
            package var percent: Int?
        }

        package struct Abort: Codable, Sendable, Equatable {
            package var httpStatus: Int?
            package var grpcStatus: String?
            package var http2Error: String?
            package var percentage: Percent?
        }
    }

    /// One of `mirrors`: a destination and its share (absent: every request).
    package struct HTTPMirrorPolicy: Codable, Sendable, Equatable {
        package var destination: Destination
        package var percentage: Percent?
    }

    /// istio/api `Percent`: a double in [0, 100].
    package struct Percent: Codable, Sendable, Equatable {
        package var value: Double?
    }

    /// `rewrite`: the path (`uri`, Envoy's `prefix_rewrite`, or `uriRegexRewrite`) and the
    /// authority, before the request goes upstream.
    package struct HTTPRewrite: Codable, Sendable, Equatable {
        package var uri: String?
        package var authority: String?
        package var uriRegexRewrite: RegexRewrite?

        package struct RegexRewrite: Codable, Sendable, Equatable {
            package var match: String?
            package var rewrite: String?
        }
    }

    /// `redirect`: the gateway answers with a 3xx and a `location` built from the request.
    package struct HTTPRedirect: Codable, Sendable, Equatable {
        package var uri: String?
        package var authority: String?
        package var port: Int?
        package var derivePort: String?
        package var scheme: String?
        package var redirectCode: Int?
    }

    /// `directResponse`: the gateway answers with this status and body itself.
    package struct HTTPDirectResponse: Codable, Sendable, Equatable {
        package var status: Int
        package var body: Body?

        package struct Body: Codable, Sendable, Equatable {
            package var string: String?
            /// Base64, as protobuf's JSON mapping writes bytes.
            package var bytes: String?
        }

        /// Istio raises Envoy's 4 KB direct-response body limit to 1 MiB.
        package static let bodyLimit = 1 << 20

        /// The body as sent: the string's UTF-8, or the decoded bytes.
        package var bodyBytes: [UInt8] {
            if let string = body?.string { return Array(string.utf8) }
            if let bytes = body?.bytes, let data = Data(base64Encoded: bytes) { return Array(data) }
            return []
        }
    }

    /// A `tcp:` route: for the service's TCP ports, by destination port (and client namespace),
    /// weighted destinations chosen per connection.
    package struct TCPRoute: Codable, Sendable, Equatable {
        package var match: [L4MatchAttributes]?
        package var route: [HTTPRouteDestination]?
    }

    /// A `tls:` route: TLS traffic by the server name it was sent to (`sniHosts`, required, each
    /// one of the VirtualService's hosts), port and client namespace; weighted destinations
    /// chosen per connection, tried before the host's `tcp:` routes as Istio does.
    package struct TLSRoute: Codable, Sendable, Equatable {
        package var match: [TLSMatchAttributes]?
        package var route: [HTTPRouteDestination]?
    }

    package struct TLSMatchAttributes: Codable, Sendable, Equatable {
        package var sniHosts: [String]?
        package var port: Int?
        package var sourceNamespace: String?
        package var destinationSubnets: [String]?
        package var sourceLabels: [String: String]?
        package var gateways: [String]?
    }

    package struct L4MatchAttributes: Codable, Sendable, Equatable {
        package var port: Int?
        package var sourceNamespace: String?
        package var destinationSubnets: [String]?
        package var sourceLabels: [String: String]?
        package var gateways: [String]?
    }

    package struct HTTPMatchRequest: Codable, Sendable, Equatable {
        package var name: String?
        package var uri: StringMatch?
        package var scheme: StringMatch?
        package var method: StringMatch?
        package var authority: StringMatch?
        package var headers: [String: StringMatch]?
        package var withoutHeaders: [String: StringMatch]?
        package var queryParams: [String: StringMatch]?
        package var ignoreUriCase: Bool?
        package var port: Int?
        package var sourceLabels: [String: String]?
        package var sourceNamespace: String?
        package var gateways: [String]?

        package init(uri: StringMatch? = nil, headers: [String: StringMatch]? = nil) { self.uri = uri; self.headers = headers }
    }

    /// Istio's StringMatch: one of exact, prefix, regex; `{}` (none) means "present".
    package struct StringMatch: Codable, Sendable, Equatable {
        package var exact: String?
        package var prefix: String?
        package var regex: String?

        package init(exact: String? = nil, prefix: String? = nil, regex: String? = nil) {
            self.exact = exact; self.prefix = prefix; self.regex = regex
        }
    }

    package struct HTTPRouteDestination: Codable, Sendable, Equatable {
        package var destination: Destination
        package var weight: Int?
        package var headers: Headers?

        package init(destination: Destination, weight: Int? = nil) { self.destination = destination; self.weight = weight }
    }

    package struct Destination: Codable, Sendable, Equatable {
        package var host: String
        package var subset: String?
        package var port: PortSelector?

        package init(host: String, subset: String? = nil, port: Int? = nil) {
            self.host = host; self.subset = subset; self.port = port.map { PortSelector(number: $0) }
        }
    }

    package struct PortSelector: Codable, Sendable, Equatable {
        package var number: Int?
    }

    package struct Headers: Codable, Sendable, Equatable {
        package var request: Operations?
        package var response: Operations?

        package struct Operations: Codable, Sendable, Equatable {
            package var set: [String: String]?
            package var add: [String: String]?
            package var remove: [String]?
        }
    }
}
