import Logging
import Metrics
import Synchronization

/// The shell around `OutlierDetector`: every event loop reports connect results here; an
/// ejection or restoration swaps the data plane's snapshot at once, so the very next
/// connection is planned without (or with) the endpoint. Envoy's outlier stats go to
/// `/stats/prometheus` under Istio's cluster names.
package final class OutlierTracker: Sendable {
    private let detector: Mutex<OutlierDetector>
    /// Services with detection on: every connection checks this small set, not the detector.
    private let enabled: Mutex<Set<ServiceKey>>
    private let store: DataPlaneStore
    private let logger: Logger
    /// Peer gateways this gateway cannot connect to, until when, and how often in a row. SWIM
    /// may still call them alive (another gateway reaches them for us), but new connections
    /// from here would only time out: after `peerFailuresToMark` connect failures in a row
    /// (one lost SYN is not an outage) the plan treats their cluster as unreachable from here
    /// until the time runs out, then tries again (5 s, doubling to 60 s).
    private let unreachablePeers = Mutex<[String: (until: ContinuousClock.Instant, strikes: Int)]>([:])
    private let peerFailures = Mutex<[String: Int]>([:])
    static let peerFailuresToMark = 3

    package init(store: DataPlaneStore, logger: Logger) {
        self.store = store
        self.logger = logger
        let (settings, counts) = Self.configuration(store.current)
        detector = Mutex(OutlierDetector(settings: settings, hostCounts: counts))
        enabled = Mutex(Set(settings.filter { $0.value.threshold != nil }.keys))
    }

    /// Per local service: its DestinationRule's outlierDetection and its endpoint count.
    static func configuration(_ snapshot: DataPlaneSnapshot) -> ([ServiceKey: OutlierDetector.Settings], [ServiceKey: Int]) {
        var settings: [ServiceKey: OutlierDetector.Settings] = [:]
        var counts: [ServiceKey: Int] = [:]
        let picker = snapshot.picker
        for (service, endpoints) in picker.endpoints.local?.services ?? [:] {
            counts[service] = endpoints.count
            let policy = picker.policies.rule(for: service.host)?.policy(port: service.port, subset: nil)
            if let od = policy?.effectiveOutlierDetection { settings[service] = .init(od) }
        }
        return (settings, counts)
    }

    /// The local endpoints changed (registered, removed): keep state, new percent base.
    package func reconfigure() {
        let (settings, counts) = Self.configuration(store.current)
        detector.withLock { $0.reconfigure(settings: settings, hostCounts: counts) }
        enabled.withLock { $0 = Set(settings.filter { $0.value.threshold != nil }.keys) }
    }

    package func failed(_ service: ServiceKey, _ host: HostPort) {
        guard enabled.withLock({ $0.contains(service) }) else { return }
        let events = detector.withLock { $0.failed(service, host, now: .now) }
        apply(events)
    }

    package func succeeded(_ service: ServiceKey, _ host: HostPort) {
        guard enabled.withLock({ $0.contains(service) }) else { return }
        detector.withLock { $0.succeeded(service, host) }
    }

    package func sweep() {
        apply(detector.withLock { $0.sweep(now: .now) })
        publishPeers()  // a wait that ran out lets the peer be tried again
    }

    /// A connect to a peer gateway failed (refused or timed out) on the data path.
    package func peerFailed(_ gateway: String) {
        let failures = peerFailures.withLock { failures -> Int in
            failures[gateway, default: 0] += 1
            return failures[gateway]!
        }
        guard failures >= Self.peerFailuresToMark else { return }
        let now = ContinuousClock.now
        let marked = unreachablePeers.withLock { peers -> Duration? in
            // Connections that were already in flight when it was marked add nothing.
            if let current = peers[gateway], current.until > now { return nil }
            let strikes = (peers[gateway]?.strikes ?? 0) + 1
            let wait = min(Duration.seconds(60), .seconds(5) * (1 << min(strikes - 1, 4)))
            peers[gateway] = (now + wait, strikes)
            return wait
        }
        guard let marked else { return }
        logger.warning("peer gateway unreachable from here", metadata: ["gateway": "\(gateway)", "retry in": "\(marked)"])
        publishPeers()
    }

    /// A connection to a peer gateway got through: it is reachable again.
    package func peerSucceeded(_ gateway: String) {
        peerFailures.withLock { _ = $0.removeValue(forKey: gateway) }
        let changed = unreachablePeers.withLock { $0.removeValue(forKey: gateway) != nil }
        if changed { publishPeers() }
    }

    private func publishPeers() {
        let now = ContinuousClock.now
        let unreachable = unreachablePeers.withLock { Set($0.filter { $0.value.until > now }.keys) }
        store.update { current in
            guard current.picker.unreachableGateways != unreachable else { return current }
            return current.with(unreachableGateways: unreachable)
        }
    }

    private func apply(_ events: [OutlierDetector.Event]) {
        guard !events.isEmpty else { return }
        for event in events {
            switch event {
            case .ejected(let service, let host, let duration):
                logger.warning("outlier ejected", metadata: ["service": "\(service)", "endpoint": "\(host)", "for": "\(duration)"])
                Counter(label: "envoy_cluster_outlier_detection_ejections_enforced_total", dimensions: Self.cluster(service)).increment()
                Counter(label: "envoy_cluster_outlier_detection_ejections_enforced_consecutive_gateway_failure", dimensions: Self.cluster(service)).increment()
            case .restored(let service, let host):
                logger.info("outlier restored", metadata: ["service": "\(service)", "endpoint": "\(host)"])
            case .overflow(let service, let host):
                logger.warning("outlier not ejected: maxEjectionPercent reached", metadata: ["service": "\(service)", "endpoint": "\(host)"])
                Counter(label: "envoy_cluster_outlier_detection_ejections_overflow", dimensions: Self.cluster(service)).increment()
            }
        }
        let ejected = detector.withLock { $0.ejectedByService }
        for service in Set(events.map(\.service)) {
            Gauge(label: "envoy_cluster_outlier_detection_ejections_active", dimensions: Self.cluster(service))
                .record(ejected[service]?.count ?? 0)
        }
        store.update { $0.with(ejected: ejected) }
    }

    /// Istio's Envoy cluster name for a service port.
    static func cluster(_ service: ServiceKey) -> [(String, String)] {
        [("cluster_name", "outbound|\(service.port)||\(service.host)")]
    }
}

extension OutlierDetector.Event {
    var service: ServiceKey {
        switch self {
        case .ejected(let service, _, _), .restored(let service, _), .overflow(let service, _): service
        }
    }
}
