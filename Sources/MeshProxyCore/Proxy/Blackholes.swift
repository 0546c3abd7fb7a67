import Logging
import Synchronization

/// The blackholes in force on this gateway (`POST /v1/faults`), each expiring by itself; any
/// change replans the data path at once.
package final class Blackholes: Sendable {
    private let active = Mutex<[Blackhole]>([])
    private let clusters: ClusterManager
    private let logger: Logger

    package init(clusters: ClusterManager, logger: Logger) {
        self.clusters = clusters
        self.logger = logger
    }

    package var current: [Blackhole] {
        let now = ContinuousClock.now
        return active.withLock { $0.filter { $0.until > now } }
    }

    package func add(_ blackhole: Blackhole) {
        active.withLock { $0.append(blackhole) }
        logger.warning("fault injected: blackhole", metadata: ["target": "\(blackhole.target.description)", "for": "\(blackhole.until - .now)"])
        publish()
    }

    package func clear() {
        active.withLock { $0 = [] }
        logger.warning("faults cleared")
        publish()
    }

    /// Drops the expired ones (called every second).
    package func sweep() {
        let now = ContinuousClock.now
        let expired = active.withLock { active -> Bool in
            let before = active.count
            active.removeAll { $0.until <= now }
            return active.count != before
        }
        if expired { publish() }
    }

    private func publish() {
        let list = current
        clusters.update { $0.blackholes = list }
    }
}
