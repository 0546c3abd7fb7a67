import Metrics

/// Istio's standard TCP metrics, reported by the gateway for every proxied connection
/// (istio.io reference/config/metrics). Labels are fixed per connection, so each connection
/// resolves its counters once when it opens and adds byte counts once when it closes: nothing
/// is done per read.
package struct TCPMetrics: Sendable {
    package struct Labels: Hashable, Sendable {
        /// The client's SPIFFE ID, `unknown` when there was none.
        package var sourcePrincipal: String
        /// The service host.
        package var destinationService: String
        /// The cluster whose endpoint served the connection.
        package var destinationCluster: String

        package init(sourcePrincipal: String, destinationService: String, destinationCluster: String) {
            self.sourcePrincipal = sourcePrincipal; self.destinationService = destinationService
            self.destinationCluster = destinationCluster
        }

        var dimensions: [(String, String)] {
            [("reporter", "destination"), ("source_principal", sourcePrincipal),
             ("destination_service", destinationService), ("destination_cluster", destinationCluster),
             ("request_protocol", "tcp"), ("connection_security_policy", "mutual_tls")]
        }
    }

    package static let connectionsOpened = "istio_tcp_connections_opened_total"
    package static let connectionsClosed = "istio_tcp_connections_closed_total"
    package static let sentBytes = "istio_tcp_sent_bytes_total"
    package static let receivedBytes = "istio_tcp_received_bytes_total"

    /// Connections per endpoint locality and priority the traffic plan chose: the shares that
    /// were actually served, next to the ones `/v1/plan` predicts.
    package static let localityConnections = "eastwest_upstream_locality_connections_total"

    package init() {}

    package func planned(service: String, locality: String, priority: Int) {
        Counter(label: Self.localityConnections, dimensions: [
            ("destination_service", service), ("locality", locality.isEmpty ? "unknown" : locality), ("priority", String(priority))]).increment()
    }

    package func opened(_ labels: Labels) {
        Counter(label: Self.connectionsOpened, dimensions: labels.dimensions).increment()
    }

    /// `sent` is bytes sent to the client (the response direction), `received` bytes from it.
    package func closed(_ labels: Labels, sent: Int, received: Int) {
        let dimensions = labels.dimensions
        Counter(label: Self.connectionsClosed, dimensions: dimensions).increment()
        Counter(label: Self.sentBytes, dimensions: dimensions).increment(by: sent)
        Counter(label: Self.receivedBytes, dimensions: dimensions).increment(by: received)
    }
}
