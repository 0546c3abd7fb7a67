import Foundation
import Logging
import Metrics
import NIOHTTP1
import Synchronization

/// Istio's standard HTTP metrics as a gateway reports them (`reporter="source"` where the
/// request enters the mesh, `destination` at the peer gateway delivering it), with Envoy's
/// default histogram buckets, which Istio keeps.
package enum HTTPMetrics {
    package static let requests = "istio_requests_total"
    package static let duration = "istio_request_duration_milliseconds"
    package static let requestBytes = "istio_request_bytes"
    package static let responseBytes = "istio_response_bytes"

    /// Envoy's default histogram buckets (source/common/stats/histogram_impl.cc), for all three.
    package static let buckets: [Double] = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
                                            300000, 600000, 1800000, 3600000]

    /// The four metrics of one label set, made once: swift-prometheus validates every name and
    /// hashes the labels on each make, which at four makes per request was a fifth of the HTTP
    /// path's CPU. Found by `Key`.
    final class Handles: Sendable {
        /// Nil: turned off by a Telemetry's `disabled` (never registered, so never exported).
        let requests: Counter?
        let duration: Recorder?
        let requestBytes: Recorder?
        let responseBytes: Recorder?

        /// `tags`: Telemetry overrides, each for the metrics it names; `disabled`: the metrics not made.
        init(_ dimensions: [(String, String)], tags: [MetricTagOverrides.Applied] = [], disabled: MetricTagOverrides.Metrics = []) {
            func labels(_ metric: MetricTagOverrides.Metrics) -> [(String, String)] {
                tags.isEmpty ? dimensions : MetricTagOverrides.dimensions(dimensions, for: metric, tags)
            }
            requests = disabled.contains(.requests) ? nil : Counter(label: HTTPMetrics.requests, dimensions: labels(.requests))
            duration = disabled.contains(.duration) ? nil : Recorder(label: HTTPMetrics.duration, dimensions: labels(.duration), aggregate: true)
            requestBytes = disabled.contains(.requestBytes) ? nil : Recorder(label: HTTPMetrics.requestBytes, dimensions: labels(.requestBytes), aggregate: true)
            responseBytes = disabled.contains(.responseBytes) ? nil : Recorder(label: HTTPMetrics.responseBytes, dimensions: labels(.responseBytes), aggregate: true)
        }
    }

    /// What tells one label set from another, without spelling the labels out: they are
    /// built only the first time a set is seen.
    struct Key: Hashable {
        var reporter: String
        var sourcePrincipal: String?
        var service: String?
        var cluster: String?
        var grpc: Bool
        var responseCode: Int
        var flags: Set<ResponseFlag>
        var grpcStatus: String?
        var tags: [MetricTagOverrides.Applied]
        var disabled: MetricTagOverrides.Metrics
    }

    private static let handles = Mutex<[Key: Handles]>([:])

    /// The label set a connection's last request was counted under: its next request is
    /// mostly the same (same client, route and status), and comparing two keys whose strings
    /// share storage costs less than hashing one and taking the lock.
    package final class LastUsed {
        fileprivate var last: (key: Key, handles: Handles)?
        package init() {}
    }

    static func handles(for record: HTTPRequestRecord, lastUsed: LastUsed?) -> Handles {
        let key = Key(reporter: record.reporter, sourcePrincipal: record.sourcePrincipal, service: record.route?.service.host,
                      cluster: record.upstreamCluster, grpc: record.route?.protocol == .grpc, responseCode: record.responseCode,
                      flags: record.flags, grpcStatus: record.grpcStatus, tags: record.metricTags, disabled: record.disabledMetrics)
        if let last = lastUsed?.last, last.key == key { return last.handles }
        let found = handles.withLock { cache in
            if let known = cache[key] { return known }
            let made = Handles(record.dimensions, tags: record.metricTags, disabled: record.disabledMetrics)
            cache[key] = made
            return made
        }
        lastUsed?.last = (key, found)
        return found
    }
}

/// The facts about one HTTP request that end up in its access-log line and metrics; filled in as
/// it goes, written once when its response ends (or it is abandoned).
package struct HTTPRequestRecord: Sendable {
    package var start = ContinuousClock.now
    package var startDate = Date()
    package var method = "-"
    package var path = "-"
    package var `protocol` = "HTTP/1.1"
    package var authority = "-"
    package var sourcePrincipal: String?
    /// `source` at the gateway where the request entered the mesh, `destination` at the peer
    /// gateway that delivered it, so a sum over all gateways counts each request once per side.
    package var reporter = "source"
    package var route: Route?
    package var routeName = ""
    package var upstream: UpstreamTarget?
    package var upstreamCluster: String?
    package var responseCode = 0
    package var flags: Set<ResponseFlag> = []
    package var detail: String?
    package var bytesReceived = 0
    package var bytesSent = 0
    package var upstreamServiceTime: Int?
    package var grpcStatus: String?
    /// Telemetry tag overrides, as this request evaluated them.
    package var metricTags: [MetricTagOverrides.Applied] = []
    /// The metrics a Telemetry's `disabled` leaves unreported for this request.
    package var disabledMetrics: MetricTagOverrides.Metrics = []
    /// Telemetry's access-log rule for the request's route (nil: logged).
    package var accessLog: AccessLogPolicy?
    /// The route answered itself (redirect, direct response): Envoy's `direct_response`.
    package var directResponse = false
    package var serverName = "-"
    package var downstreamLocal = "-"
    package var downstreamRemote = "-"
    /// The request's headers as sent on (after the gateway's own changes), and the response's.
    package var requestHeaders: HTTPHeaders = [:]
    package var responseHeaders: HTTPHeaders = [:]

    package init() {}

    /// A request on `connection`: who the client is and where it connected.
    package init(connection: ConnectionRecord) {
        sourcePrincipal = connection.sourcePrincipal
        serverName = connection.serverName
        downstreamLocal = connection.downstreamLocal
        downstreamRemote = connection.downstreamRemote
    }

    /// A request header or pseudo-header, as `%REQ()%` reads it.
    package func requestHeader(_ name: String) -> String? {
        switch name {
        case ":method": method
        case ":path": path
        case ":authority", "host": authority == "-" ? nil : authority
        case ":scheme": "https"
        default: requestHeaders.first(name: name)
        }
    }

    package func responseHeader(_ name: String) -> String? {
        name == ":status" ? (responseCode == 0 ? nil : String(responseCode)) : responseHeaders.first(name: name)
    }

    /// Set when the details are more than the flags tell (an RBAC denial names its policy).
    package var codeDetails: String?

    /// Envoy's `%RESPONSE_CODE_DETAILS%` for what the gateway answered itself.
    var responseCodeDetails: String? {
        if responseCode == 0 { return nil }
        if let codeDetails { return codeDetails }
        if flags.contains(.noRoute) { return "route_not_found" }
        if flags.contains(.noClusterFound) { return "cluster_not_found" }
        if flags.contains(.noHealthyUpstream) { return "no_healthy_upstream" }
        if flags.contains(.upstreamOverflow) { return "upstream_reset_before_response_started{overflow}" }
        if flags.contains(.upstreamConnectionFailure) { return "upstream_reset_before_response_started{remote_connection_failure}" }
        if flags.contains(.upstreamConnectionTermination) { return "upstream_reset_before_response_started{connection_termination}" }
        if flags.contains(.downstreamProtocolError) { return responseCode == 431 ? "http1.headers_too_large" : "http1.codec_error" }
        return directResponse ? "direct_response" : "via_upstream"
    }

    var flagText: String { flags.isEmpty ? "-" : flags.map(\.rawValue).sorted().joined(separator: ",") }

    /// `outbound|<port>|<subset>|<host>`, Envoy's cluster for the route.
    var clusterName: String? { route?.envoyClusterName }

    var dimensions: [(String, String)] {
        let host = route?.service.host
        let parts = host?.split(separator: ".") ?? []
        return [
            ("reporter", reporter), ("source_principal", sourcePrincipal ?? "unknown"),
            ("destination_service", host ?? "unknown"),
            ("destination_service_name", parts.first.map(String.init) ?? "unknown"),
            ("destination_service_namespace", parts.count > 1 ? String(parts[1]) : "unknown"),
            ("destination_cluster", upstreamCluster ?? "unknown"),
            ("request_protocol", route?.protocol == .grpc ? "grpc" : "http"),
            ("response_code", String(responseCode)), ("response_flags", flagText),
            ("grpc_response_status", grpcStatus ?? ""), ("connection_security_policy", "unknown"),
        ]
    }

    /// Counts the request and writes its access-log line in `format`. `lastUsed`: the
    /// connection's last label set.
    package func finish(logger: Logger, format: AccessLogFormat, lastUsed: HTTPMetrics.LastUsed? = nil) {
        let milliseconds = (ContinuousClock.now - start).timeInterval * 1000
        if disabledMetrics != .http {
            let metrics = HTTPMetrics.handles(for: self, lastUsed: lastUsed)
            metrics.requests?.increment()
            metrics.duration?.record(milliseconds)
            metrics.requestBytes?.record(bytesReceived)
            metrics.responseBytes?.record(bytesSent)
        }
        let level: Logger.Level = flags.isEmpty ? .info : .warning
        // The line is built only when it will be written.
        guard logger.logLevel <= level, accessLog?.writes(self) ?? true else { return }
        var line = format.render(self, duration: Int(milliseconds))
        // Istio's default line, plus why the gateway answered itself, for the reader of the log.
        if format == .istioDefault, let detail { line += " reason=\"\(detail)\"" }
        logger.log(level: level, "\(line)")
    }
}
