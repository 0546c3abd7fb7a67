import Foundation
import Logging

/// The facts about one downstream connection that end up in its access-log line and metrics.
/// Filled in as the connection progresses, written once when it closes. Lives on the
/// connection's event loop only.
package final class ConnectionRecord {
    package let start = ContinuousClock.now
    package let startDate = Date()
    package let downstreamRemote: String
    package let downstreamLocal: String
    /// The client's address without its port (`x-forwarded-for`, `source.ip`): split once per
    /// connection, like the local one.
    package private(set) lazy var downstreamRemoteAddress = downstreamRemote.utf8.lastIndex(of: UInt8(ascii: ":")).map { String(downstreamRemote[..<$0]) } ?? downstreamRemote
    /// The address the client reached, without its port (`destination.ip`): split once per
    /// connection, for every request and policy check on it.
    package private(set) lazy var downstreamLocalAddress = downstreamLocal.split(separator: ":").dropLast().joined(separator: ":")
    package var serverName: String = "-"
    /// The HTTP metrics its last request was counted under (HTTP/2: any of its streams); made
    /// on the first request, so a TCP connection allocates nothing for it.
    package private(set) lazy var lastHTTPMetrics = HTTPMetrics.LastUsed()
    /// The client's SPIFFE ID, as the trust policy verified it.
    package var sourceIdentity: SpiffeID? {
        didSet {
            // Spelled out once per connection, not for each of its requests.
            sourcePrincipal = sourceIdentity?.description
            sourceNamespace = sourceIdentity?.namespace
        }
    }
    package private(set) var sourcePrincipal: String?

    /// The client a peer gateway vouched for (its original-client preamble): the principal
    /// policies, metrics and the log see from here on; `sourceIdentity` stays the gateway's.
    package func vouched(for client: String?, address: String? = nil) {
        sourcePrincipal = client
        sourceNamespace = client.flatMap { try? SpiffeID(parsing: $0) }?.namespace
        originalClientAddress = address
        vouchedByPeerGateway = true
    }
    package private(set) var vouchedByPeerGateway = false
    /// The client's address a peer gateway vouched for (AuthorizationPolicy's `remote.ip` and
    /// `remoteIpBlocks`); nil: the connection's own peer is the client.
    package private(set) var originalClientAddress: String?
    /// The namespace of an Istio identity (`sourceNamespace` matches).
    package private(set) var sourceNamespace: String?
    package var route: Route?
    /// The connection's own local rate-limit buckets (`local_rate_limit_per_downstream_connection`),
    /// shared by its HTTP/2 streams.
    package var rateLimitBuckets: [ObjectIdentifier: LocalRateLimit.ConnectionBuckets] = [:]
    package var upstream: UpstreamTarget?
    package var upstreamCluster: String?
    /// Where the traffic plan sent it: the endpoint locality and its priority.
    package var upstreamLocality: String?
    package var upstreamPriority: Int?
    package var flags: [ResponseFlag] = []
    /// Why the connection was refused or failed, for the log reader.
    package var detail: String?
    /// The glued pair, once there is one: their read counts are the connection's bytes.
    package var glue: (downstream: GlueHandler, upstream: GlueHandler)?
    /// Bytes from the client.
    package var bytesReceived: Int { glue?.downstream.bytesRead ?? 0 }
    /// Bytes to the client.
    package var bytesSent: Int { glue?.upstream.bytesRead ?? 0 }
    /// Gossip connections are not proxied traffic and get no access-log line.
    package var isFederation = false
    /// An HTTP connection logs each request (`HTTPRequestRecord`), not itself.
    package var carriesHTTP = false
    private var isOpenInMetrics = false
    private var isFinished = false

    package init(downstreamRemote: String, downstreamLocal: String) {
        self.downstreamRemote = downstreamRemote
        self.downstreamLocal = downstreamLocal
    }

    package var metricLabels: TCPMetrics.Labels? {
        guard let route, let upstreamCluster else { return nil }
        return TCPMetrics.Labels(sourcePrincipal: sourcePrincipal ?? "unknown",
                                 destinationService: route.service.host, destinationCluster: upstreamCluster)
    }

    package func opened(metrics: TCPMetrics) {
        guard let labels = metricLabels else { return }
        isOpenInMetrics = true
        metrics.opened(labels)
        if let upstreamLocality, let upstreamPriority {
            metrics.planned(service: labels.destinationService, locality: upstreamLocality, priority: upstreamPriority)
        }
    }

    /// Writes the access-log line (and closes the metrics) once.
    package func finish(metrics: TCPMetrics, logger: Logger) {
        guard !isFinished, !isFederation, !carriesHTTP else { return }
        isFinished = true
        if isOpenInMetrics, let labels = metricLabels {
            metrics.closed(labels, sent: bytesSent, received: bytesReceived)
        }
        let level: Logger.Level = flags.isEmpty && detail == nil ? .info : .warning
        logger.log(level: level, "\(accessLogLine)")
    }

    /// Envoy's default TCP access-log fields, in Istio's order, with `-` for empty values,
    /// followed by our `reason` so a refused connection says why in the same line.
    package var accessLogLine: String {
        let duration = Int((ContinuousClock.now - start).timeInterval * 1000)
        let flagText = flags.isEmpty ? "-" : flags.map(\.rawValue).joined(separator: ",")
        let upstreamHost = upstream?.address.description ?? "-"
        let cluster = route?.envoyClusterName ?? "-"
        var line = "[\(startDate.formatted(.iso8601))] \"- - -\" 0 \(flagText) \(bytesReceived) \(bytesSent) \(duration) \"\(upstreamHost)\" \(cluster) \(downstreamLocal) \(downstreamRemote) \(serverName) principal=\(sourcePrincipal ?? "-") upstream_cluster=\(upstreamCluster ?? "-")"
        if let upstreamLocality, let upstreamPriority { line += " upstream_locality=\(upstreamLocality.isEmpty ? "-" : upstreamLocality) priority=\(upstreamPriority)" }
        if let detail { line += " reason=\"\(detail)\"" }
        return line
    }
}
