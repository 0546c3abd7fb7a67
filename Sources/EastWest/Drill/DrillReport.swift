import MeshProxyCore
import Foundation

/// One second of a drill as the load generator and the gateways saw it.
package struct DrillSecond: Codable, Sendable, Equatable {
    package var second: Int
    package var sent = 0
    package var succeeded = 0
    /// Failed requests by kind: connect, tls, reset, status, timeout.
    package var failed: [String: Int] = [:]
    /// Answered requests by the cluster and the locality of the backend that answered.
    package var byCluster: [String: Int] = [:]
    package var byLocality: [String: Int] = [:]
    package var latencyP50Ms: Double?
    package var latencyP99Ms: Double?
    package var latencyMaxMs: Double?
    /// The client-side gateway's live plan at the end of the second (`/v1/plan`).
    package var plannedShares: [String: Double]?
    /// Member states the client-side gateway reported (`/v1/members`).
    package var members: [String: String]?

    package init(second: Int) { self.second = second }
    package var failures: Int { failed.values.reduce(0, +) }
}

/// A step as it happened, with what it hit.
package struct DrillFault: Codable, Sendable, Equatable {
    package var step: Int
    package var action: String
    /// Seconds since the load started.
    package var at: Double
    package var description: String
    package var clusters: [String]
    package var localities: [String]
    package var gateways: [String]
    package var isRecovery: Bool

    package init(step: Int, action: String, at: Double, description: String, clusters: [String], localities: [String],
                 gateways: [String], isRecovery: Bool) {
        self.step = step; self.action = action; self.at = at; self.description = description
        self.clusters = clusters; self.localities = localities; self.gateways = gateways; self.isRecovery = isRecovery
    }
}

/// What a drill measured about one fault.
package struct FaultResult: Codable, Sendable, Equatable {
    package var step: Int
    package var action: String
    package var description: String
    package var at: Double
    /// Fault → the client-side gateway's plan no longer sends traffic to what was hit (or it
    /// lists a hit gateway as not alive). Per-second resolution.
    package var detectSeconds: Double?
    /// Fault → start of the first whole second with no failed request and no answer from what
    /// was hit (only survivors serve).
    package var failoverSeconds: Double?
    /// Recovery step → start of the first whole second in which what was hit serves again
    /// (if it served before the fault) with no failures.
    package var failbackSeconds: Double?
    package var recoveryStep: Int?
    package var requestsUntilRecovered: Int
    package var failuresUntilRecovered: Int
}

package struct DrillReport: Codable, Sendable, Equatable {
    /// The stretch between two steps (or the start and end): what it sent and lost.
    package struct Phase: Codable, Sendable, Equatable {
        /// Seconds since the load started.
        package var from: Double
        package var to: Double
        /// The step that began it ("start" for the first).
        package var after: String
        package var sent: Int
        package var failed: Int
    }

    package struct Check: Codable, Sendable, Equatable {
        package var name: String
        package var limit: Double
        package var observed: Double?
        package var passed: Bool
    }
    package var name: String
    package var durationSeconds: Double
    package var from: String
    package var host: String
    package var rate: Int
    package var sent: Int
    package var succeeded: Int
    package var failed: [String: Int]
    package var errorRate: Double
    package var faults: [FaultResult]
    package var phases: [Phase]
    package var checks: [Check]
    package var passed: Bool
    /// Connections the client-side gateway itself counted as proxied for the host during the
    /// drill (`istio_tcp_connections_opened_total`): a check on the load generator's numbers.
    package var gatewayOpenedConnections: Int?
    /// Retries the client-side gateway made for the host (`envoy_cluster_upstream_rq_retry`):
    /// failures the clients never saw.
    package var gatewayRetries: Int?
    /// How the load was sent.
    package var load: DrillScenario.Load?
    package var timeline: [DrillSecond]
}

/// Turns a drill's timeline and its faults into the numbers of a post-drill review. Pure.
package enum DrillAnalysis {
    package static func report(scenario: DrillScenario, timeline: [DrillSecond], faults: [DrillFault]) -> DrillReport {
        let sent = timeline.reduce(0) { $0 + $1.sent }
        let succeeded = timeline.reduce(0) { $0 + $1.succeeded }
        var failed: [String: Int] = [:]
        for second in timeline { failed.merge(second.failed, uniquingKeysWith: +) }
        let failures = failed.values.reduce(0, +)
        let errorRate = sent == 0 ? 0 : Double(failures) / Double(sent)

        var results: [FaultResult] = []
        for fault in faults where !fault.isRecovery {
            let recovery = faults.first { $0.isRecovery && $0.at > fault.at && Self.sameTarget($0, fault) }
            results.append(analyze(fault, recovery: recovery, timeline: timeline))
        }
        var checks: [DrillReport.Check] = []
        if let limit = scenario.expect?.maxErrorRate {
            checks.append(.init(name: "maxErrorRate", limit: limit, observed: errorRate, passed: errorRate <= limit))
        }
        if let limit = scenario.expect?.maxFailoverSeconds {
            let values = results.map(\.failoverSeconds)
            let worst = values.contains { $0 == nil } ? nil : values.compactMap { $0 }.max() ?? 0
            checks.append(.init(name: "maxFailoverSeconds", limit: limit, observed: worst, passed: worst.map { $0 <= limit } ?? false))
        }
        if let limit = scenario.expect?.maxFailbackSeconds {
            let values = results.filter { $0.recoveryStep != nil }.map(\.failbackSeconds)
            let worst = values.contains { $0 == nil } ? nil : values.compactMap { $0 }.max() ?? 0
            checks.append(.init(name: "maxFailbackSeconds", limit: limit, observed: worst, passed: worst.map { $0 <= limit } ?? false))
        }
        // Phases split at every step; a request belongs to the phase its second starts in.
        let bounds = [0.0] + faults.map(\.at) + [Double(timeline.count)]
        var phases: [DrillReport.Phase] = []
        for (i, start) in bounds.dropLast().enumerated() {
            let end = bounds[i + 1]
            let seconds = timeline.filter { Double($0.second) >= start.rounded(.down) && Double($0.second) < end.rounded(.down) }
            phases.append(.init(from: start, to: end, after: i == 0 ? "start" : faults[i - 1].description,
                                sent: seconds.reduce(0) { $0 + $1.sent }, failed: seconds.reduce(0) { $0 + $1.failures }))
        }
        return DrillReport(name: scenario.name, durationSeconds: scenario.duration.duration.seconds, from: scenario.load.from,
                           host: scenario.load.host, rate: scenario.load.rate, sent: sent, succeeded: succeeded, failed: failed,
                           errorRate: errorRate, faults: results, phases: phases, checks: checks, passed: checks.allSatisfy(\.passed),
                           gatewayOpenedConnections: nil, gatewayRetries: nil, load: nil, timeline: timeline)
    }

    static func sameTarget(_ a: DrillFault, _ b: DrillFault) -> Bool {
        a.clusters == b.clusters && a.localities == b.localities && a.gateways == b.gateways
    }

    /// Requests answered by what the fault hit, in one second. A gateway-only fault hits no
    /// backend: the survivors are the cluster's other gateways, and the answer cannot tell
    /// which gateway carried it, so only failures count there.
    static func servedByHit(_ second: DrillSecond, _ fault: DrillFault) -> Int {
        if !fault.localities.isEmpty { return fault.localities.reduce(0) { $0 + second.byLocality[$1, default: 0] } }
        if !fault.gateways.isEmpty, fault.action != "partition", fault.action != "loss" { return 0 }
        return fault.clusters.reduce(0) { $0 + second.byCluster[$1, default: 0] }
    }

    static func analyze(_ fault: DrillFault, recovery: DrillFault?, timeline: [DrillSecond]) -> FaultResult {
        let end = recovery?.at ?? Double(timeline.count)
        let during = timeline.filter { Double($0.second) + 1 > fault.at && Double($0.second) < end }
        // Detection: the client-side plan gives the hit localities nothing, or a hit gateway
        // is no longer alive in its member list.
        let detected = during.first { second in
            let planDropped = !fault.localities.isEmpty && second.plannedShares.map { shares in
                fault.localities.allSatisfy { (shares[$0] ?? 0) == 0 }
            } ?? false
            let memberDown = !fault.gateways.isEmpty && fault.gateways.allSatisfy { second.members?[$0].map { $0 != "alive" } ?? false }
            return planDropped || memberDown
        }
        let failover = timeline.first { Double($0.second) >= fault.at && Double($0.second) < end && $0.sent > 0
            && $0.failures == 0 && servedByHit($0, fault) == 0 }
        var failback: Double?
        if let recovery {
            let before = timeline.filter { Double($0.second) + 1 <= fault.at }
            let servedBefore = before.reduce(0) { $0 + servedByHit($1, fault) } > 0
            failback = timeline.first { Double($0.second) >= recovery.at && $0.sent > 0 && $0.failures == 0
                && (!servedBefore || servedByHit($0, fault) > 0) }.map { Double($0.second) - recovery.at }
        }
        return FaultResult(step: fault.step, action: fault.action, description: fault.description, at: fault.at,
                           detectSeconds: detected.map { max(0, Double($0.second + 1) - fault.at) },
                           failoverSeconds: failover.map { max(0, Double($0.second) - fault.at) },
                           failbackSeconds: failback.map { max(0, $0) }, recoveryStep: recovery?.step,
                           requestsUntilRecovered: during.reduce(0) { $0 + $1.sent },
                           failuresUntilRecovered: during.reduce(0) { $0 + $1.failures })
    }
}
