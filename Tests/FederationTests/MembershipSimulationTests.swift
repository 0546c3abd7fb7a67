import Testing
@testable import Federation
import MeshProxyCore

/// The protocol on a simulated network in virtual time; seeds make every run repeatable.
/// Serialized: each case keeps a core busy for its whole run, and in parallel they starved the
/// drill tests' gateways (run at the same time in the same `swift test`) into timeouts.
@Suite("Membership on a simulated network", .serialized)
struct MembershipSimulationTests {
    @Test("Nodes that join one seed all know each other within 2 s", arguments: [1, 2, 3] as [UInt64])
    func joinConverges(seed: UInt64) {
        let sim = FederationSimulation(nodes: 20, seed: seed)
        sim.startAll()
        var convergedAt: Duration?
        while sim.now < .seconds(5) && convergedAt == nil {
            sim.run(for: .milliseconds(50))
            if sim.membershipConverged { convergedAt = sim.now }
        }
        #expect(convergedAt != nil && convergedAt! <= .seconds(2), "seed \(seed): converged at \(String(describing: convergedAt))")
    }

    @Test("A killed gateway is marked dead by every live peer within 2 s (N = 50), with no false positives", arguments: [11, 12, 13] as [UInt64])
    func killedNodeDetected(seed: UInt64) {
        let sim = FederationSimulation(nodes: 50, seed: seed)
        sim.startAll()
        sim.run(until: .seconds(4))
        #expect(sim.membershipConverged)
        let victim = 17
        let killedAt = sim.now
        sim.kill(victim)
        sim.run(for: .seconds(5))
        let declarations = sim.deathDeclarations.filter { $0.subject == victim }
        let observers = Set(declarations.map(\.observer))
        #expect(observers == Set(sim.liveIndices), "seed \(seed): \(sim.liveIndices.count - observers.count) peers never marked it dead")
        let last = declarations.map(\.at).max() ?? .seconds(999)
        #expect(last - killedAt <= .seconds(2), "seed \(seed): last peer marked it dead after \(last - killedAt)")
        #expect(sim.deathDeclarations.allSatisfy { $0.subject == victim }, "a live member was declared dead")
    }

    @Test("1% message loss for 10 simulated minutes: no live member is ever declared dead (N = 50)")
    func noFalsePositivesUnderLoss() async {
        let (deaths, gone, complete) = await onDedicatedThread {
            let sim = FederationSimulation(nodes: 50, network: .init(loss: 0.01), seed: 42)
            sim.startAll()
            sim.run(until: .seconds(600))
            // A lost probe may leave someone briefly suspect at the end; nobody is gone.
            let gone = sim.liveIndices.flatMap { i in sim.nodes[i].membership.members.values.filter { $0.state.isGone } }.count
            return (sim.deathDeclarations.prefix(5).map { "\($0.observer)->\($0.subject)@\($0.at)" }, gone,
                    sim.liveIndices.allSatisfy { sim.nodes[$0].membership.members.count == 49 })
        }
        #expect(deaths.isEmpty, "false deaths: \(deaths)")
        #expect(gone == 0)
        #expect(complete)
    }

    /// What a user cares about is the healthy gateways' view: the stalled ones are (rightly)
    /// declared dead and flap, as memberlist's do; `eastwest simulate` runs the 10-minute version.
    @Test("3 of 50 members process messages 2.5 s late for 10 simulated minutes: no healthy member ever declares another healthy member dead (Lifeguard)",
          arguments: [UInt64(1)])
    func slowMembersDoNotKillHealthyOnes(seed: UInt64) async {
        let report = await onDedicatedThread {
            SimulationScenario(nodes: 50, loss: 0, kill: 1, seed: seed, duration: .seconds(600), slow: 3).run()
        }
        #expect(report.falsePositives == 0, "healthy members declared dead: \(report.falsePositiveMembers)")
        // The stalled members are found out, and the killed one is still detected by everyone.
        #expect(report.slowMemberDeathDeclarations > 0)
        #expect(report.detections.allSatisfy { $0.allSeconds != nil })
    }

    @Test("A member cut off for less than the suspicion timeout refutes and is never declared dead")
    func briefIsolationIsRefuted() {
        let sim = FederationSimulation(nodes: 10, seed: 5)
        sim.startAll()
        sim.run(until: .seconds(3))
        let incarnationBefore = sim.nodes[4].membership.myself.incarnation
        sim.partition([4], Array(0..<10).filter { $0 != 4 })
        sim.run(for: .milliseconds(400))
        sim.heal()
        sim.run(for: .seconds(5))
        #expect(sim.deathDeclarations.isEmpty)
        #expect(sim.membershipConverged)
        #expect(sim.nodes[4].membership.myself.incarnation >= incarnationBefore)
    }

    @Test("A partition between two halves: each side declares the other dead, and after heal everything converges")
    func partitionThenHeal() {
        let sim = FederationSimulation(nodes: 12, seed: 9)
        sim.startAll()
        sim.run(until: .seconds(3))
        let left = Array(0..<6), right = Array(6..<12)
        sim.partition(left, right)
        sim.run(for: .seconds(10))
        #expect(sim.state(of: 8, seenBy: 2) == .dead)
        #expect(sim.state(of: 2, seenBy: 8) == .dead)
        // Both sides keep their own view.
        #expect(sim.state(of: 3, seenBy: 2) == .alive)
        sim.heal()
        var healedAt: Duration?
        let start = sim.now
        while sim.now < start + .seconds(60) && healedAt == nil {
            sim.run(for: .milliseconds(100))
            if sim.membershipConverged { healedAt = sim.now }
        }
        #expect(healedAt != nil, "membership did not converge within 60 s of the heal")
        // The catalog converged too: every node holds every node's endpoint.
        for key in sim.catalogFirstSeen.keys {
            #expect(sim.liveIndices.allSatisfy { sim.nodes[$0].catalog.holds(key) }, "\(key) missing somewhere after heal")
        }
    }

    @Test("A restarted gateway rejoins: peers see it alive again with a higher incarnation and its endpoints return")
    func restartRejoins() {
        let sim = FederationSimulation(nodes: 8, seed: 21)
        sim.startAll()
        sim.run(until: .seconds(3))
        sim.kill(3)
        sim.run(for: .seconds(4))
        #expect(sim.state(of: 3, seenBy: 0) == .dead)
        sim.start(3, at: sim.now)
        sim.run(for: .seconds(3))
        #expect(sim.membershipConverged)
        let key = CatalogKey(host: "svc-3.default.svc.cluster.local", port: 8080, endpoint: HostPort(host: "10.200.0.3", port: 8080))
        #expect(sim.liveIndices.allSatisfy { sim.nodes[$0].catalog.holds(key) })
    }

    @Test("A catalog change reaches every node within 1 s (N = 50) and a delete spreads as a tombstone")
    func catalogSpreads() {
        let sim = FederationSimulation(nodes: 50, seed: 3)
        sim.startAll()
        sim.run(until: .seconds(4))
        let key = CatalogKey(host: "new.default.svc.cluster.local", port: 9000, endpoint: HostPort(host: "10.201.0.1", port: 9000))
        let published = sim.now
        var records = sim.nodes[10].catalog.localRecords
        records[key] = CatalogRecord(locality: Locality(region: "r1"), labels: ["version": "v2"])
        sim.publish(10, records)
        sim.run(for: .seconds(3))
        let seen = sim.catalogFirstSeen[key] ?? [:]
        #expect(seen.count == 50)
        #expect((seen.values.max() ?? .seconds(99)) - published <= .seconds(1))
        records[key] = nil
        sim.publish(10, records)
        sim.run(for: .seconds(3))
        #expect(sim.liveIndices.allSatisfy { !sim.nodes[$0].catalog.holds(key) })
    }
}
