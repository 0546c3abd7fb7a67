import MeshProxyCore

/// A scripted run of the federation on the simulated network and what a user wants to know
/// about it: how fast a group forms, how fast a dead gateway is noticed, whether live ones are
/// ever wrongly declared dead, how fast a catalog change spreads, and what it costs.
package struct SimulationScenario: Sendable {
    package var nodes: Int
    package var loss: Double
    package var kill: Int
    package var seed: UInt64
    package var duration: Duration
    package var settings: MembershipSettings
    /// Members that process every inbound message `slowDelay` late from t = 3 s (Lifeguard's
    /// scenario). They are never killed.
    package var slow: Int
    package var slowDelay: Duration

    package init(nodes: Int, loss: Double = 0, kill: Int = 1, seed: UInt64 = 1, duration: Duration = .seconds(30),
                 settings: MembershipSettings = .gateway, slow: Int = 0, slowDelay: Duration = .milliseconds(2500)) {
        self.nodes = nodes; self.loss = loss; self.kill = kill; self.seed = seed; self.duration = duration; self.settings = settings
        self.slow = slow; self.slowDelay = slowDelay
    }

    /// When the catalog change and the kills happen.
    package var catalogChangeAt: Duration { .seconds(5) }
    package var killAt: Duration { .seconds(10) }

    package func run() -> SimulationReport {
        let sim = FederationSimulation(nodes: nodes, settings: settings, network: .init(loss: loss), seed: seed)
        let key = CatalogKey(host: "simulated.default.svc.cluster.local", port: 8080, endpoint: HostPort(host: "10.250.0.1", port: 8080))
        sim.trackedKeys = [key]
        sim.startAll()
        var picker = SplitMix64(seed: seed &+ 0x5EED)
        let candidates = Array(2..<max(2, nodes)).shuffled(using: &picker)
        let slowMembers = Array(candidates.suffix(min(slow, candidates.count)))
        // Runs to `time`, checking every 50 ms until the group has formed (up to the kill).
        var converged: Duration?
        func advance(to time: Duration) {
            while converged == nil, sim.now < min(time, killAt) {
                sim.run(for: .milliseconds(50))
                if sim.membershipConverged { converged = sim.now }
            }
            sim.run(until: time)
        }
        advance(to: min(duration, .seconds(3)))
        for member in slowMembers { sim.slow(member, by: slowDelay) }
        advance(to: min(duration, catalogChangeAt))
        var records = sim.nodes[min(1, nodes - 1)].catalog.localRecords
        records[key] = CatalogRecord(locality: Locality(region: "sim"))
        sim.publish(min(1, nodes - 1), records)

        let idleStart = catalogChangeAt + .seconds(2)
        advance(to: min(duration, idleStart))
        let bytesAtIdleStart = sim.bytesSent.reduce(0, +)
        advance(to: min(duration, killAt))
        let idleBytes = sim.bytesSent.reduce(0, +) - bytesAtIdleStart
        let idleSeconds = max(0.001, (min(duration, killAt) - idleStart).seconds)

        // Kill victims other than the seed and the publisher, chosen by the seed.
        let victims = Array(candidates.prefix(min(kill, candidates.count - slowMembers.count)))
        let killedAt = sim.now
        for victim in victims { sim.kill(victim) }
        sim.run(until: duration)

        let liveAtEnd = Set(sim.liveIndices)
        var detections: [SimulationReport.Detection] = []
        for victim in victims {
            let declarations = sim.deathDeclarations.filter { $0.subject == victim && liveAtEnd.contains($0.observer) }
            let observers = Set(declarations.map(\.observer))
            detections.append(.init(
                member: FederationSimulation.name(victim).name,
                firstSeconds: declarations.map(\.at).min().map { ($0 - killedAt).seconds },
                allSeconds: observers.count == liveAtEnd.count ? declarations.map(\.at).max().map { ($0 - killedAt).seconds } : nil,
                observers: observers.count))
        }
        // A false positive is a healthy member declaring another healthy member dead; the slow
        // members' own views, and their being found out, are reported apart.
        let falsePositives = sim.deathDeclarations.filter {
            !victims.contains($0.subject) && !slowMembers.contains($0.subject) && !slowMembers.contains($0.observer)
        }
        let slowDeaths = sim.deathDeclarations.filter { slowMembers.contains($0.subject) }.count
        let seen = (sim.catalogFirstSeen[key] ?? [:]).values.sorted()
        func spread(_ fraction: Double) -> Double? {
            let needed = Int((Double(nodes) * fraction).rounded(.up))
            guard seen.count >= needed, needed > 0 else { return nil }
            return (seen[needed - 1] - catalogChangeAt).seconds
        }
        return SimulationReport(
            nodes: nodes, loss: loss, seed: seed, durationSeconds: duration.seconds,
            convergenceSeconds: converged?.seconds,
            convergenceRounds: converged.map { $0.seconds / settings.gossipInterval.seconds },
            detections: detections,
            falsePositives: falsePositives.count,
            falsePositiveMembers: Set(falsePositives.map { FederationSimulation.name($0.subject).name }).sorted(),
            slowMembers: slowMembers.map { FederationSimulation.name($0).name }, slowMemberDeathDeclarations: slowDeaths,
            catalogSpread99Seconds: spread(0.99), catalogSpread100Seconds: spread(1.0),
            bytesPerNodePerSecond: Double(sim.bytesSent.reduce(0, +)) / Double(nodes) / duration.seconds,
            idleBytesPerNodePerSecond: Double(idleBytes) / Double(nodes) / idleSeconds)
    }
}

package struct SimulationReport: Sendable, Codable, Equatable {
    package struct Detection: Sendable, Codable, Equatable {
        package var member: String
        /// Kill → the first live member declares it dead.
        package var firstSeconds: Double?
        /// Kill → every live member has declared it dead; nil if some never did.
        package var allSeconds: Double?
        package var observers: Int
    }

    package var nodes: Int
    package var loss: Double
    package var seed: UInt64
    package var durationSeconds: Double
    /// Start → every node knows every other as alive.
    package var convergenceSeconds: Double?
    package var convergenceRounds: Double?
    package var detections: [Detection]
    /// Dead declarations about members that were never killed.
    package var falsePositives: Int
    package var falsePositiveMembers: [String]
    package var slowMembers: [String]
    /// How often a slow member was declared dead by someone (it refutes and flaps).
    package var slowMemberDeathDeclarations: Int
    package var catalogSpread99Seconds: Double?
    package var catalogSpread100Seconds: Double?
    package var bytesPerNodePerSecond: Double
    package var idleBytesPerNodePerSecond: Double

    package var text: String {
        func s(_ value: Double?, never: String = "never") -> String { value.map { String(format: "%.3f s", $0) } ?? never }
        var lines = [
            "nodes \(nodes), loss \(String(format: "%.1f", loss * 100))%, seed \(seed), \(String(format: "%.0f", durationSeconds)) s simulated",
            "membership converged      \(s(convergenceSeconds, never: "not within 10 s"))" + (convergenceRounds.map { String(format: " (%.1f gossip rounds)", $0) } ?? ""),
        ]
        for detection in detections {
            lines.append("killed \(detection.member) dead at first peer \(s(detection.firstSeconds)), at every peer \(s(detection.allSeconds)) (\(detection.observers) peers)")
        }
        lines.append("false positives           \(falsePositives)" + (falsePositiveMembers.isEmpty ? "" : " (\(falsePositiveMembers.joined(separator: ", ")))"))
        if !slowMembers.isEmpty {
            lines.append("slow members              \(slowMembers.joined(separator: ", ")): declared dead \(slowMemberDeathDeclarations) times")
        }
        lines.append("catalog change at 99%     \(s(catalogSpread99Seconds)), at 100% \(s(catalogSpread100Seconds))")
        lines.append(String(format: "bytes per node per second %.0f overall, %.0f idle", bytesPerNodePerSecond, idleBytesPerNodePerSecond))
        return lines.joined(separator: "\n")
    }
}

