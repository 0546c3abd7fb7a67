import MeshProxyCore
import NIOCore

/// N federation nodes on a simulated network in virtual time: latency with jitter, random
/// loss, partitions, killed and slow nodes. Everything random comes from one seeded source, so
/// the same seed replays the same run. Used by `eastwest simulate` and by the tests.
package final class FederationSimulation {
    package struct Network: Sendable {
        package var latency: Duration = .microseconds(500)
        package var jitter: Duration = .microseconds(500)
        /// Probability that any one message is lost.
        package var loss: Double = 0
        package init(latency: Duration = .microseconds(500), jitter: Duration = .microseconds(500), loss: Double = 0) {
            self.latency = latency; self.jitter = jitter; self.loss = loss
        }
    }

    private enum Event {
        case deliver(to: Int, message: GossipMessage, senderCluster: String)
        case wake(Int)
    }

    package private(set) var now: Duration = .zero
    package private(set) var nodes: [FederationNode] = []
    package private(set) var isAlive: [Bool] = []
    package let addresses: [HostPort]
    package var network: Network
    package private(set) var bytesSent: [Int]
    /// Every time some node declared another dead: (observer, subject, when).
    package private(set) var deathDeclarations: [(observer: Int, subject: Int, at: Duration)] = []
    /// When each node first held each catalog key live.
    /// Catalog keys whose spread is recorded; nil records every key (costly at large N).
    package var trackedKeys: Set<CatalogKey>?
    package private(set) var catalogFirstSeen: [CatalogKey: [Int: Duration]] = [:]

    private let origin = ContinuousClock.now
    private let settings: MembershipSettings
    private let catalogSettings: FederationNode.CatalogSettings
    private var random: SplitMix64
    private var events = EventHeap<Event>()
    private var scheduledWake: [Duration?]
    private var indexOf: [HostPort: Int] = [:]
    private var blocked: Set<[Int]> = []
    private var slowDelay: [Duration] = []
    private var generations: [UInt64]

    package init(nodes count: Int, settings: MembershipSettings = .gateway, catalogSettings: FederationNode.CatalogSettings = .init(),
                 network: Network = .init(), seed: UInt64) {
        self.settings = settings
        self.catalogSettings = catalogSettings
        self.network = network
        self.random = SplitMix64(seed: seed)
        addresses = (0..<count).map { HostPort(host: "10.\($0 / 65_536).\($0 / 256 % 256).\($0 % 256)", port: 15443) }
        bytesSent = Array(repeating: 0, count: count)
        scheduledWake = Array(repeating: nil, count: count)
        slowDelay = Array(repeating: .zero, count: count)
        generations = Array(repeating: 1, count: count)
        isAlive = Array(repeating: false, count: count)
        for (i, address) in addresses.enumerated() { indexOf[address] = i }
        nodes = (0..<count).map { makeNode($0) }
    }

    private func makeNode(_ i: Int) -> FederationNode {
        FederationNode(id: Self.name(i), address: addresses[i], cluster: "cluster-\(i)", generation: generations[i],
                       settings: settings, catalogSettings: catalogSettings, now: instant(now))
    }

    package static func name(_ i: Int) -> MemberID { MemberID("gw-\(i)") }

    package func index(of id: MemberID) -> Int? { Int(id.name.dropFirst(3)) }

    private func instant(_ time: Duration) -> ContinuousClock.Instant { origin + time }

    // MARK: - Scenario controls

    /// Starts every node; node 0 is the seed, the others join it at random times within
    /// `spread`, each publishing one endpoint of its own.
    package func startAll(spread: Duration = .milliseconds(500)) {
        let begin = now
        let times = nodes.indices.map { i in i == 0 ? Duration.zero : spread * Double.random(in: 0..<1, using: &random) }
        for i in nodes.indices.sorted(by: { (times[$0], $0) < (times[$1], $1) }) {
            start(i, at: begin + times[i])
        }
    }

    /// Starts (or restarts) node `i` at `time`: a fresh process with a new catalog generation.
    package func start(_ i: Int, at time: Duration) {
        run(until: time)
        generations[i] += 1
        nodes[i] = makeNode(i)
        isAlive[i] = true
        let key = CatalogKey(host: "svc-\(i).default.svc.cluster.local", port: 8080, endpoint: HostPort(host: "10.200.\(i / 256 % 256).\(i % 256)", port: 8080))
        carryOut(nodes[i].publish([key: CatalogRecord()], now: instant(now), random: &random), from: i)
        if i != 0 { carryOut(nodes[i].join(seeds: [addresses[0]], now: instant(now)), from: i) }
        schedule(i)
    }

    package func kill(_ i: Int) { isAlive[i] = false }

    /// Drops every message between the two groups, both ways, until `heal`.
    package func partition(_ a: [Int], _ b: [Int]) {
        for x in a { for y in b { blocked.insert([x, y]); blocked.insert([y, x]) } }
    }

    package func heal() { blocked.removeAll() }

    /// Node `i` processes every inbound message `delay` late (Lifeguard's slow member).
    package func slow(_ i: Int, by delay: Duration) { slowDelay[i] = delay }

    package func publish(_ i: Int, _ records: [CatalogKey: CatalogRecord]) {
        carryOut(nodes[i].publish(records, now: instant(now), random: &random), from: i)
        schedule(i)
    }

    // MARK: - Running

    package func run(until time: Duration) {
        while let next = events.nextTime, next <= time {
            let (at, event) = events.pop()!
            now = at
            switch event {
            case .wake(let i):
                guard scheduledWake[i] == at else { continue }
                scheduledWake[i] = nil
                guard isAlive[i] else { continue }
                if instant(now) >= nodes[i].nextDeadline {
                    carryOut(nodes[i].tick(now: instant(now), random: &random), from: i)
                }
                schedule(i)
            case .deliver(let i, let message, let senderCluster):
                guard isAlive[i] else { continue }
                carryOut(nodes[i].received(message, senderCluster: senderCluster, now: instant(now), random: &random), from: i)
                schedule(i)
            }
        }
        now = max(now, time)
    }

    package func run(for duration: Duration) { run(until: now + duration) }

    private func schedule(_ i: Int) {
        guard isAlive[i] else { return }
        let deadline = max(now, nodes[i].nextDeadline - origin)
        if let pending = scheduledWake[i], pending <= deadline { return }
        scheduledWake[i] = deadline
        events.push(.wake(i), at: deadline)
    }

    private func carryOut(_ directives: [FederationNode.Directive], from i: Int) {
        for directive in directives {
            switch directive {
            case .send(let message, let address):
                bytesSent[i] += GossipCodec.encode(message).readableBytes
                guard let j = indexOf[address], j != i else { continue }
                if network.loss > 0, Double.random(in: 0..<1, using: &random) < network.loss { continue }
                if blocked.contains([i, j]) { continue }
                let delay = network.latency + network.jitter * Double.random(in: 0..<1, using: &random) + slowDelay[j]
                events.push(.deliver(to: j, message: message, senderCluster: nodes[i].cluster), at: now + delay)
            case .memberChanged(let update, _):
                if update.state == .dead, let subject = index(of: update.id) {
                    deathDeclarations.append((i, subject, now))
                }
            case .identityMismatch:
                continue  // every simulated node speaks for its own cluster
            case .catalogChanged(let keys):
                for key in keys where (trackedKeys?.contains(key) ?? true) && catalogFirstSeen[key]?[i] == nil && nodes[i].catalog.holds(key) {
                    catalogFirstSeen[key, default: [:]][i] = now
                }
            }
        }
    }

    // MARK: - Observations

    package var liveIndices: [Int] { nodes.indices.filter { isAlive[$0] } }

    /// Whether every live node sees every other live node as alive.
    package var membershipConverged: Bool {
        let live = liveIndices
        let liveIDs = Set(live.map { Self.name($0) })
        for i in live {
            let seen = nodes[i].membership.members.values.filter { $0.state == .alive && liveIDs.contains($0.id) }.count
            if seen != live.count - 1 { return false }
        }
        return true
    }

    /// How node `observer` sees node `subject`.
    package func state(of subject: Int, seenBy observer: Int) -> MemberState? {
        nodes[observer].membership.members[Self.name(subject)]?.state
    }
}
