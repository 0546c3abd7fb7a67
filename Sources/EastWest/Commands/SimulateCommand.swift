import ArgumentParser
import Federation
import Foundation
import MeshProxyCore

/// Runs the federation protocol — the same code the gateways run — on a simulated network in
/// virtual time and reports detection, false positives, dissemination and bandwidth.
struct SimulateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Simulate N federated gateways (latency, loss, kills) in virtual time and report what the protocol does.")

    @Option(help: "Number of gateways.") var nodes = 50
    @Option(help: "Message loss, 0 to 1 (0.01 = 1%).") var loss = 0.0
    @Option(help: "Gateways killed at t = 10 s.") var kill = 1
    @Option(help: "Random seed; the same seed gives the same report.") var seed: UInt64 = 1
    @Option(help: "Simulated time, e.g. 30s or 10m.") var duration = "30s"
    @Option(help: "Timing profile: gateway (default) or wan.") var profile = "gateway"
    @Option(help: "Gateways that process every inbound message late (from t = 3 s).") var slow = 0
    @Option(help: "How late slow gateways process messages.") var slowDelay = "2500ms"
    @Flag(help: "Print the report as JSON.") var json = false

    func run() async throws {
        guard nodes >= 2 else { throw ValidationError("--nodes must be at least 2") }
        guard (0..<1).contains(loss) else { throw ValidationError("--loss must be from 0 up to (not including) 1") }
        guard kill >= 0, kill <= max(0, nodes - 2) else { throw ValidationError("--kill must be from 0 to nodes - 2") }
        guard let time = ConfigDuration(parsing: duration), time.duration >= .seconds(11) else {
            throw ValidationError("--duration '\(duration)' must be a duration of at least 11s (kills happen at 10 s)")
        }
        guard let named = FederationProfile(rawValue: profile) else {
            throw ValidationError("--profile must be one of \(FederationProfile.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let settings = MembershipSettings.profile(named)
        guard let delay = ConfigDuration(parsing: slowDelay) else { throw ValidationError("--slow-delay '\(slowDelay)' is not a duration") }
        guard slow >= 0, slow + kill <= max(0, nodes - 2) else { throw ValidationError("--slow plus --kill must be at most nodes - 2") }
        let report = SimulationScenario(nodes: nodes, loss: loss, kill: kill, seed: seed, duration: time.duration, settings: settings,
                                        slow: slow, slowDelay: delay.duration).run()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.text)
        }
    }
}
