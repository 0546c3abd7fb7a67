import Logging
import Metrics
import Synchronization

/// The shell around `OutlierDetector`: every event loop reports connect results here; an
/// ejection or restoration replans that service at once, so the very next connection is
/// planned without (or with) the endpoint. Envoy's outlier stats go to
/// `/stats/prometheus` under Istio's cluster names.
package final class OutlierTracker: Sendable {
    private let detector: Mutex<OutlierDetector>
    /// Services with detection on: every connection checks this small set, not the detector.
    private let enabled: Mutex<Set<ServiceKey>>
    private let clusters: ClusterManager
    private let logger: Logger
    /// Peer gateways this gateway cannot connect to right now (`PeerReachability`).
    private let peers = Mutex(PeerReachability())

    package init(clusters: ClusterManager, logger: Logger) {
        self.clusters = clusters
        self.logger = logger
        let (settings, counts) = Self.configuration(clusters.current.inputs)
        detector = Mutex(OutlierDetector(settings: settings, hostCounts: counts))
        enabled = Mutex(Set(settings.filter { $0.value.isEnabled }.keys))
    }

    /// Per local service: its DestinationRule's outlierDetection and its endpoint count.
    static func configuration(_ inputs: EndpointPicker.Inputs) -> ([ServiceKey: OutlierDetector.Settings], [ServiceKey: Int]) {
        var settings: [ServiceKey: OutlierDetector.Settings] = [:]
        var counts: [ServiceKey: Int] = [:]
        for (service, endpoints) in inputs.endpoints.local?.services ?? [:] {
            counts[service] = endpoints.count
            let policy = inputs.routes.trafficPolicy(for: service, subset: nil)
            if let od = policy.effectiveOutlierDetection { settings[service] = .init(od) }
        }
        return (settings, counts)
    }

    /// The local endpoints changed (registered, removed): keep state, new percent base.
    package func reconfigure() {
        let (settings, counts) = Self.configuration(clusters.current.inputs)
        detector.withLock { $0.reconfigure(settings: settings, hostCounts: counts) }
        enabled.withLock { $0 = Set(settings.filter { $0.value.isEnabled }.keys) }
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

    /// What a local endpoint did for an HTTP request: its status, or a local-origin event.
    package func record(_ result: OutlierResult, _ service: ServiceKey, _ host: HostPort) {
        guard enabled.withLock({ $0.contains(service) }) else { return }
        apply(detector.withLock { $0.record(result, service, host, now: .now) })
    }

    package func sweep() {
        apply(detector.withLock { $0.sweep(now: .now) })
        publishPeers()  // a wait that ran out lets the peer be tried again
    }

    /// A connect to a peer gateway failed (refused or timed out) on the data path.
    package func peerFailed(_ gateway: String) {
        guard let marked = peers.withLock({ $0.failed(gateway, now: .now) }) else { return }
        logger.warning("peer gateway unreachable from here", metadata: ["gateway": "\(gateway)", "retry in": "\(marked)"])
        publishPeers()
    }

    /// A connection to a peer gateway got through: it is reachable again.
    package func peerSucceeded(_ gateway: String) {
        if peers.withLock({ $0.succeeded(gateway) }) { publishPeers() }
    }

    private func publishPeers() {
        let now = ContinuousClock.now
        let unreachable = peers.withLock { $0.unreachable(at: now) }
        clusters.update { $0.unreachableGateways = unreachable }
    }

    private func apply(_ events: [OutlierDetector.Event]) {
        guard !events.isEmpty else { return }
        for event in events {
            switch event {
            case .ejected(let service, let host, let duration, let reason):
                logger.warning("outlier ejected", metadata: ["service": "\(service)", "endpoint": "\(host)", "for": "\(duration)", "reason": "\(reason.rawValue)"])
                Counter(label: "envoy_cluster_outlier_detection_ejections_enforced_total", dimensions: Self.cluster(service)).increment()
                Counter(label: "envoy_cluster_outlier_detection_ejections_enforced_\(reason.rawValue)", dimensions: Self.cluster(service)).increment()
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
        clusters.update { $0.ejected = ejected }
    }

    /// Istio's Envoy cluster name for a service port.
    static func cluster(_ service: ServiceKey) -> [(String, String)] {
        [("cluster_name", Route(service: service, subset: nil, selector: [:]).envoyClusterName)]
    }
}

extension OutlierDetector.Event {
    var service: ServiceKey {
        switch self {
        case .ejected(let service, _, _, _), .restored(let service, _), .overflow(let service, _): service
        }
    }
}
