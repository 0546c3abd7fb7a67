import ArgumentParser
import Foundation
import MeshProxyCore

/// Runs a whole topology on this machine: CA and certificates, one process per gateway, one
/// demo backend per endpoint, until Ctrl-C.
struct UpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Run a topology on loopback: certificates, gateways and demo backends, until Ctrl-C.")

    @Argument(help: "Topology file.") var topology = "topologies/two-clusters.yaml"
    @Option(help: "State directory for certificates, configs, logs and ready.json. Default .eastwest/<name>.") var stateDir: String?
    @Option(help: "How long to wait for every process to become ready.") var readyTimeout = "60s"
    @Option(help: "Log level passed to the gateways.") var gatewayLogLevel = "info"

    func run() async throws {
        let topo: Topology
        do {
            topo = try ConfigLoader.load(Topology.self, file: topology).resolvingPolicies(relativeTo: topology)
            // Checked before anything starts; warnings are shown once here, not by every gateway.
            for file in topo.policies ?? [] {
                let loaded = try IstioPolicyLoader.load(file: file)
                (loaded.skipped + loaded.warnings.map(\.description)).forEach(printError)
            }
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        guard let timeout = ConfigDuration(parsing: readyTimeout) else { throw ValidationError("--ready-timeout '\(readyTimeout)' is not a duration") }
        let dir = stateDir ?? ".eastwest/\(topo.name)"
        let plan: LaunchPlan
        do {
            plan = try LaunchPlan.prepare(topology: topo, stateDir: dir, gatewayLogLevel: gatewayLogLevel)
        } catch {
            printError("error: \(error)")
            throw ExitCode(1)
        }
        let supervisor = Supervisor(logDirectory: "\(dir)/logs")
        SignalTrap.install { supervisor.requestStop() }
        do {
            try await supervisor.start(plan, readyTimeout: timeout.duration)
        } catch {
            printError("error: \(error)")
            await supervisor.stopAll()
            throw ExitCode(1)
        }
        try plan.writeReadyFile(pids: supervisor.pids)
        say(plan.summary(pids: supervisor.pids))
        await supervisor.waitForStop()
        say("stopping \(supervisor.pids.count) processes…")
        await supervisor.stopAll()
        say("stopped; nothing left running")
    }
}
