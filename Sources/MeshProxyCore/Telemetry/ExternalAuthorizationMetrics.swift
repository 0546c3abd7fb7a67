import Metrics
import Synchronization

/// Envoy's ext_authz HTTP filter statistics, kept under the route's upstream cluster
/// (`cluster.<name>.ext_authz.*`), as Prometheus names them:
/// `envoy_cluster_ext_authz_ok{cluster_name="outbound|…"}` and `_denied`, `_error`,
/// `_failure_mode_allowed`.
package enum ExternalAuthorizationMetrics {
    package enum Outcome: String, CaseIterable, Sendable {
        case ok, denied, error
        case failureModeAllowed = "failure_mode_allowed"
    }

    /// Made once per cluster and outcome: a counter's make validates its name and hashes its labels.
    private static let counters = Mutex<[String: Counter]>([:])

    /// Counts a check's verdict as Envoy does: a failure let through by `failOpen` is
    /// `failure_mode_allowed`, not an error.
    static func count(_ verdict: ExternalAuthorizer.Verdict, failOpen: Bool, cluster: String) {
        switch verdict {
        case .allowed: count(.ok, cluster: cluster)
        case .denied: count(.denied, cluster: cluster)
        case .failed: count(failOpen ? .failureModeAllowed : .error, cluster: cluster)
        }
    }

    static func count(_ outcome: Outcome, cluster: String) {
        let key = "\(outcome.rawValue)|\(cluster)"
        let counter = counters.withLock { cache in
            if let known = cache[key] { return known }
            let made = Counter(label: "envoy_cluster_ext_authz_\(outcome.rawValue)", dimensions: [("cluster_name", cluster)])
            cache[key] = made
            return made
        }
        counter.increment()
    }
}
