import ArgumentParser
import Foundation
import MeshProxyCore
import Synchronization

/// `eastwest drill SCENARIO`: starts the scenario's topology, drives open-loop mTLS load from one
/// cluster, applies the faults on time, and writes a report with detection, failover and
/// failback times. Exit 0 when every expectation holds, 1 when one does not, 2 for an invalid
/// scenario (or a step this machine cannot run).
struct DrillCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drill", abstract: "Run a failover drill (topologies/drills/*.yaml) and write a measured report.")

    @Argument(help: "Scenario file.") var scenario: String
    @Option(help: "Where report.json, report.md, report.html and the topology's state go.") var reportDir: String?
    @Option(help: "Requests per second, instead of the scenario's (e.g. lower on a small machine).") var rate: Int?
    @Option(help: "Drill a deployment already running (`eastwest up`'s ready.json) instead of starting one; only blackhole steps, through the gateways' admin fault API.")
    var attach: String?
    @Flag(help: "Print the report as JSON instead of Markdown.") var json = false

    func run() async throws {
        var (drill, topology) = try Self.load(scenario)
        if let rate {
            guard rate >= 1 else { throw ValidationError("--rate must be at least 1") }
            drill.load.rate = rate
        }
        let dir = reportDir ?? ".eastwest/drills/\(drill.name)"
        try FileManager.default.createDirectory(atPath: "\(dir)/state/logs", withIntermediateDirectories: true)
        if let rootStep = drill.steps.firstIndex(where: { $0.action.needsRoot }), getuid() != 0 {
            printError("\(scenario): error: steps[\(rootStep)]: \(drill.steps[rootStep].action.rawValue) changes iptables rules and needs root; not starting")
            throw ExitCode(2)
        }

        let supervisor = Supervisor(logDirectory: "\(dir)/state/logs")
        let injector = FaultInjector(topology: topology, supervisor: supervisor)
        let interrupted = Atomic<Bool>(false)
        SignalTrap.install {
            interrupted.store(true, ordering: .relaxed)
            supervisor.requestStop()
        }
        let deployment: DrillRun.Deployment
        if let attach {
            // A running deployment is never killed or cut by a drill tool: only blackholes, which
            // expire by themselves.
            if let index = drill.steps.firstIndex(where: { $0.action != .blackhole && $0.action != .unblackhole }) {
                printError("\(scenario): error: steps[\(index)]: \(drill.steps[index].action.rawValue) is not available with --attach; a running deployment is drilled with blackhole/unblackhole")
                throw ExitCode(2)
            }
            do {
                deployment = try DrillRun.Deployment(readyFile: attach, topology: topology, from: drill.load.from)
                injector.adminCredentials.withLock { $0 = deployment.adminCredentials }
            } catch {
                printError("error: --attach \(attach): \(error)")
                throw ExitCode(2)
            }
            say("attached to '\(topology.name)' (\(attach)) for drill '\(drill.name)'")
        } else {
            let plan: LaunchPlan
            do {
                plan = try LaunchPlan.prepare(topology: topology, stateDir: "\(dir)/state", gatewayLogLevel: "warning")
            } catch {
                printError("error: \(error)")
                throw ExitCode(1)
            }
            do {
                say("starting topology '\(topology.name)' for drill '\(drill.name)'…")
                try await supervisor.start(plan, readyTimeout: .seconds(90))
            } catch {
                printError("error: \(error)")
                await supervisor.stopAll()
                throw ExitCode(1)
            }
            deployment = try DrillRun.Deployment(plan: plan, from: drill.load.from)
            injector.adminCredentials.withLock { $0 = deployment.adminCredentials }
        }

        let report: DrillReport
        let marks: [DrillFault]
        do {
            (report, marks) = try await DrillRun(drill: drill, deployment: deployment, injector: injector,
                                                 interrupted: { interrupted.load(ordering: .relaxed) }).run()
        } catch {
            await injector.cleanUp()
            await supervisor.stopAll()
            printError("error: \(error)")
            throw ExitCode(1)
        }
        await injector.cleanUp()
        await supervisor.stopAll()

        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let jsonData = try encoder.encode(report)
        try jsonData.write(to: URL(fileURLWithPath: "\(dir)/report.json"))
        try report.markdown.write(toFile: "\(dir)/report.md", atomically: true, encoding: .utf8)
        try report.html(faultMarks: marks).write(toFile: "\(dir)/report.html", atomically: true, encoding: .utf8)
        if json {
            print(String(decoding: jsonData, as: UTF8.self))
        } else {
            print(report.markdown.components(separatedBy: "\n## Every second")[0])
            print("Reports: \(dir)/report.md, \(dir)/report.html, \(dir)/report.json")
        }
        if interrupted.load(ordering: .relaxed) {
            printError("interrupted: every fault was undone and every process stopped")
            throw ExitCode(130)
        }
        if !report.passed { throw ExitCode(1) }
    }

    /// The scenario and its topology (policies resolved), or exit 2 with the position.
    static func load(_ path: String) throws -> (DrillScenario, Topology) {
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        func resolve(_ file: String) -> String { file.hasPrefix("/") ? file : base.appendingPathComponent(file).standardizedFileURL.path }
        do {
            let text: String
            do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw ConfigErrors([ConfigError(code: .unreadableFile, file: path, message: "cannot read file")])
            }
            let (drill, map) = try ConfigLoader.decode(DrillScenario.self, yaml: text, file: path)
            var problems = drill.validate(map)
            var topology = try ConfigLoader.load(Topology.self, file: resolve(drill.topology)).resolvingPolicies(relativeTo: resolve(drill.topology))
            if let policies = drill.policies { topology.policies = policies.map(resolve) }
            for file in topology.policies ?? [] {
                let loaded = try IstioPolicyLoader.load(file: file)
                loaded.warnings.forEach { printError($0.description) }
            }
            if !topology.clusters.contains(where: { $0.name == drill.load.from }) {
                problems.append(map.error(.invalidValue, at: FieldPath().key("load").key("from"),
                    "'\(drill.load.from)' is not a cluster of \(drill.topology) (\(topology.clusters.map(\.name).joined(separator: ", ")))"))
            }
            let probe = FaultInjector(topology: topology, supervisor: Supervisor(logDirectory: "/tmp"))
            for (i, step) in drill.steps.enumerated() {
                if let between = step.target.between {
                    for name in between where !topology.clusters.contains(where: { $0.name == name }) {
                        problems.append(map.error(.invalidValue, at: FieldPath().key("steps").index(i).key("target").key("between"), "'\(name)' is not a cluster"))
                    }
                } else if [.kill, .stop, .resume, .restart].contains(step.action), probe.resolve(step.target).processes.isEmpty {
                    problems.append(map.error(.invalidValue, at: FieldPath().key("steps").index(i).key("target"), "matches no gateway or backend of \(drill.topology)"))
                }
            }
            guard problems.isEmpty else { throw ConfigErrors(problems) }
            return (drill, topology)
        } catch let errors as ConfigErrors {
            printError(errors.description)
            throw ExitCode(2)
        }
    }
}

/// What the drill's tasks record while it runs.
final class DrillLog: Sendable {
    struct Sample: Sendable {
        var plan: [String: Double]?
        var members: [String: String]?
    }
    let faults = Mutex<[DrillFault]>([])
    let samples = Mutex<[Int: Sample]>([:])
}

/// One drill, once the topology is up: load, faults and per-second sampling side by side.
struct DrillRun {
    /// Where the load goes in and what the drill reads: the `from` cluster's first gateway and
    /// its client identity, whether the drill started the topology or attached to it.
    struct Deployment {
        var topology: Topology
        var listen: HostPort
        var admin: HostPort
        var fromGateways: [String]
        var client: GatewayConfig.TLSFiles
        /// The operator's certificate and token for the gateways' admin writes.
        var adminCredentials = AdminClient.Credentials()

        static func token(_ file: String?) -> String? {
            file.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) }?.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        init(plan: LaunchPlan, from: String) throws {
            guard let gateway = plan.gatewayConfigs.first(where: { $0.cluster == from }), let client = plan.clientCertificates[from] else {
                throw DrillError("no gateway or client certificate for \(from)")
            }
            topology = plan.topology
            listen = gateway.listen
            admin = gateway.effectiveAdmin
            fromGateways = plan.gatewayConfigs.filter { $0.cluster == from }.map(\.name)
            self.client = client
            adminCredentials = .init(token: Self.token(plan.gatewayConfigs.first?.adminTokenFile), certificate: plan.operatorCertificate)
        }

        init(readyFile: String, topology: Topology, from: String) throws {
            let ready = try JSONDecoder().decode(LaunchPlan.ReadyFile.self, from: Data(contentsOf: URL(fileURLWithPath: readyFile)))
            guard let gateway = ready.gateways.first(where: { $0.cluster == from }), let listen = HostPort(parsing: gateway.address),
                  let admin = HostPort(parsing: gateway.admin), let client = ready.clients[from] else {
                throw DrillError("it lists no gateway or client certificate for cluster \(from)")
            }
            self.topology = topology
            self.listen = listen
            self.admin = admin
            fromGateways = ready.gateways.filter { $0.cluster == from }.map(\.name)
            self.client = client.files
            adminCredentials = .init(token: Self.token(ready.adminTokenFile), certificate: ready.operatorCertificate?.files)
        }
    }

    var drill: DrillScenario
    var deployment: Deployment
    var injector: FaultInjector
    var interrupted: @Sendable () -> Bool

    func run() async throws -> (DrillReport, [DrillFault]) {
        // By default every request a new mTLS connection, as a fleet of short-lived clients makes
        // them: a drill measures what one client sees when it connects during a fault. With
        // `keepAlive`, long-lived clients: requests in flight on a connection when a region dies.
        var profile = LoadProfile(target: deployment.listen, serverName: drill.load.host, tls: deployment.client)
        profile.rate = drill.load.rate
        profile.connections = drill.load.concurrency ?? 16
        profile.wireProtocol = drill.load.protocol ?? .http1
        profile.newConnectionPerRequest = !(drill.load.keepAlive ?? false)
        profile.timeout = drill.load.timeout?.duration ?? .seconds(2)
        profile.duration = drill.duration.duration
        profile.readsAnswers = true
        let engine = try LoadEngine(profile: profile)
        let duration = drill.duration.duration
        let seconds = Int(duration.seconds.rounded(.up))
        let log = DrillLog()
        let start = ContinuousClock.now + .milliseconds(200)
        let admin = deployment.admin
        let host = drill.load.host
        let steps = drill.steps
        let injector = self.injector
        let interrupted = self.interrupted
        let terminal = isatty(STDERR_FILENO) != 0
        let from = drill.load.from
        let fromGateways = deployment.fromGateways
        let fromLocalities = deployment.topology.clusters.filter { $0.name == from }
            .flatMap { ($0.services ?? []).flatMap { $0.endpoints.compactMap { $0.locality?.description } } }

        let openedBefore = await Self.openedConnections(admin: admin, host: host)
        let retriesBefore = await Self.retries(admin: admin, host: host)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await engine.run(start: start) }
            group.addTask {
                for (index, step) in steps.enumerated().sorted(by: { $0.element.at.duration < $1.element.at.duration }) {
                    try? await Task.sleep(until: start + step.at.duration, clock: .continuous)
                    if interrupted() { engine.stop(); return }
                    let at = (ContinuousClock.now - start).seconds
                    var hit = try await injector.apply(step, remaining: duration - step.at.duration)
                    if [.partition, .heal, .loss].contains(step.action) {
                        // What a cut hits, seen from the load's side: the other cluster.
                        let own = Set(fromGateways)
                        hit.gateways.removeAll { own.contains($0) }
                        hit.clusters.removeAll { $0 == from }
                        let ownLocalities = Set(fromLocalities)
                        hit.localities.removeAll { ownLocalities.contains($0) }
                    }
                    let target = [step.target.cluster, step.target.region, step.target.zone, step.target.gateway, step.target.service]
                        .compactMap { $0 }.joined(separator: "/") + (step.target.between.map { $0.joined(separator: " <-> ") } ?? "")
                    let what = step.target.between == nil ? " (\((step.target.what ?? .backends).rawValue))" : (step.percent.map { " (\($0) % loss)" } ?? "")
                    let description = "\(step.action.rawValue) \(target)\(what)"
                    log.faults.withLock { $0.append(DrillFault(step: index, action: step.action.rawValue, at: at, description: description,
                                                           clusters: hit.clusters, localities: hit.localities, gateways: hit.gateways,
                                                           isRecovery: step.action.isRecovery)) }
                    printError(String(format: "[%5.1f s] %@", at, description))
                }
            }
            group.addTask {
                for second in 0..<seconds {
                    try? await Task.sleep(until: start + .seconds(second + 1), clock: .continuous)
                    if interrupted() { engine.stop(); return }
                    let planned = try? await AdminClient.send(.GET, admin, path: "/v1/plan?host=\(host)")
                    let members = try? await AdminClient.send(.GET, admin, path: "/v1/members")
                    struct Plan: Decodable { var shares: [String: Double] }
                    let shares = planned.flatMap { try? JSONDecoder().decode(Plan.self, from: Data($0.body.utf8)).shares }
                    let states = members.flatMap { try? JSONDecoder().decode(AdminAPI.MembersBody.self, from: Data($0.body.utf8)) }
                        .map { Dictionary(uniqueKeysWithValues: $0.members.map { ($0.name, $0.state.rawValue) }) }
                    log.samples.withLock { $0[second] = DrillLog.Sample(plan: shares, members: states) }
                    if terminal, let s = engine.snapshot(second: second) {
                        let served = s.byCluster.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: " ")
                        printError(String(format: "[%3d s] sent %d ok %d failed %d  p99 %@  %@", second, s.sent, s.succeeded, s.failures,
                                          s.latencyP99Ms.map { String(format: "%.0f ms", $0) } ?? "-", served))
                    }
                }
            }
            try await group.waitForAll()
        }
        var timeline: [DrillSecond] = []
        let sampled = log.samples.withLock { $0 }
        for second in 0..<seconds {
            var entry = engine.snapshot(second: second) ?? DrillSecond(second: second)
            entry.plannedShares = sampled[second]?.plan
            entry.members = sampled[second]?.members
            timeline.append(entry)
        }
        let happened = log.faults.withLock { $0 }
        var report = DrillAnalysis.report(scenario: drill, timeline: timeline, faults: happened)
        // Give the gateway a moment to close the last connections' books.
        try? await Task.sleep(for: .milliseconds(300))
        if let before = openedBefore, let after = await Self.openedConnections(admin: admin, host: host) {
            report.gatewayOpenedConnections = after - before
        }
        if let before = retriesBefore, let after = await Self.retries(admin: admin, host: host) {
            report.gatewayRetries = after - before
        }
        report.load = drill.load
        return (report, happened)
    }

    /// The gateway's own count of what it proxied for `host` (every source and cluster):
    /// connections on a TCP service, requests it received on an HTTP one.
    static func openedConnections(admin: HostPort, host: String) async -> Int? {
        guard let metrics = await metrics(admin: admin) else { return nil }
        return Int(sum(metrics, "istio_tcp_connections_opened_total", where: "destination_service=\"\(host)\"")
            + sum(metrics, "istio_requests_total", where: "destination_service=\"\(host)\""))
    }

    /// Retries the gateway started for `host` (Envoy's `upstream_rq_retry`, every subset).
    static func retries(admin: HostPort, host: String) async -> Int? {
        guard let metrics = await metrics(admin: admin) else { return nil }
        return Int(sum(metrics, "envoy_cluster_upstream_rq_retry", where: "|\(host)\""))
    }

    private static func metrics(admin: HostPort) async -> String? {
        guard let reply = try? await AdminClient.send(.GET, admin, path: "/stats/prometheus"), reply.status == 200 else { return nil }
        return reply.body
    }

    private static func sum(_ metrics: String, _ name: String, where label: String) -> Double {
        metrics.split(separator: "\n").filter { $0.hasPrefix("\(name){") && $0.contains(label) }
            .reduce(0) { $0 + (Double($1.split(separator: " ").last ?? "0") ?? 0) }
    }
}
