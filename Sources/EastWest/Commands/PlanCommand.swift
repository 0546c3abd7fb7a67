import ArgumentParser
import Foundation
import MeshProxyCore

/// Predicts where requests from one locality go under a DestinationRule, with Envoy's numbers.
struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show the priorities, load and per-locality share of requests Envoy/Istio semantics give a client locality.")

    @Option(help: "Client locality, REGION/ZONE[/SUBZONE] (the gateway that accepts the connection).") var from: String?
    @Option(help: "YAML file: endpoints: [{address, locality, labels, healthy}]. Optional when --policy has ServiceEntries with endpoints for the host.") var endpoints: String?
    @Option(help: "Admin address of a running gateway: show its live plan for --host instead.") var admin: String?
    @Option(name: .customLong("policy"), help: "Istio YAML with DestinationRules, and ServiceEntries / WorkloadEntries whose endpoints join --endpoints' (repeatable).") var policies: [String] = []
    @Option(help: "Service host whose DestinationRule applies (default: the only one).") var host: String?
    @Option(help: "Subset name: only its endpoints, with its traffic policy.") var subset: String?
    @Option(help: "Service port, for portLevelSettings.") var port: Int?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        if let admin { return try await live(admin: admin) }
        guard let from, endpoints != nil || !policies.isEmpty else { throw ValidationError("give --from and --endpoints (or --policy with ServiceEntries), or --admin and --host") }
        guard let client = Locality(parsing: from), !client.region.isEmpty else {
            throw ValidationError("--from '\(from)' must be REGION/ZONE[/SUBZONE]")
        }
        var file = EndpointsFile(endpoints: [])
        var rules: [DestinationRule] = []
        var loadedPolicies: [IstioPolicyLoader.Loaded] = []
        do {
            if let endpoints { file = try ConfigLoader.load(EndpointsFile.self, file: endpoints) }
            for path in policies {
                let loaded = try IstioPolicyLoader.load(file: path)
                (loaded.skipped + loaded.warnings.map(\.description)).forEach(printError)
                loadedPolicies.append(loaded)
                rules += loaded.destinationRules
            }
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        let rule: DestinationRule?
        if let host {
            rule = loadedPolicies.lazy.compactMap { $0.rule(for: host) }.first
            if rule == nil, !rules.isEmpty { printError("note: no DestinationRule for \(host); Envoy defaults apply") }
        } else if rules.count > 1 {
            printError("error: \(rules.count) DestinationRules loaded (\(rules.map(\.host).joined(separator: ", "))); choose one with --host")
            throw ExitCode(2)
        } else {
            rule = rules.first
        }
        // A ServiceEntry's endpoints are the service's as much as a listed one (Istio plans them alike).
        let entries = loadedPolicies.flatMap(\.serviceEntries), workloads = loadedPolicies.flatMap(\.workloadEntries)
        let declared = ServiceEntry.services(entries, workloads: workloads, cluster: nil)
        let declaredHosts = Set(declared.map(\.host))
        let serviceHost = host ?? rule?.host ?? (declaredHosts.count == 1 ? declaredHosts.first : nil)
        var planned = file.planned
        // One port's endpoints (--port, else the entry's first): the same workload on two ports is one endpoint to plan.
        let ports = declared.filter { $0.host == serviceHost?.lowercased() }
        if let service = ports.first(where: { port == nil || $0.port == port }) {
            planned += service.endpoints.map { PlannedEndpoint(locality: $0.locality?.description ?? "", labels: $0.labels ?? [:]) }
        }
        if planned.isEmpty {
            printError("error: no endpoints: --endpoints lists none, and no ServiceEntry in --policy declares endpoints for \(serviceHost ?? "the host (give --host)")")
            throw ExitCode(2)
        }
        if let subset {
            guard let selector = rule?.subsets?.first(where: { $0.name == subset }) else {
                printError("error: subset '\(subset)' is not defined by \(rule.map { "the DestinationRule for \($0.host)" } ?? "any DestinationRule")")
                throw ExitCode(2)
            }
            planned = planned.filter { endpoint in (selector.labels ?? [:]).selects(endpoint.labels) }
        }
        let policy = rule?.policy(port: port, subset: subset) ?? TrafficPolicy()
        let planner = LocalityPriorityPlanner(client: client, setting: policy.loadBalancer?.localityLbSetting,
                                              outlierDetection: policy.effectiveOutlierDetection)
        let plan = planner.plan(planned)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(plan), as: UTF8.self))
        } else {
            print(Self.text(plan, client: from, threshold: planner.panicThreshold))
        }
    }

    /// The plan a running gateway follows now (`GET /v1/plan`), from its locality and health view.
    func live(admin: String) async throws {
        guard let host else { throw ValidationError("--admin needs --host") }
        var query = "host=\(host)"
        if let subset { query += "&subset=\(subset)" }
        if let port { query += "&port=\(port)" }
        let body = try await AdminClient.get(admin: admin, path: "/v1/plan?\(query)")
        if json { print(body); return }
        let plan = try JSONDecoder().decode(LocalityPlan.self, from: Data(body.utf8))
        print(Self.text(plan, client: "gateway \(admin)", threshold: nil))
    }

    static func text(_ plan: LocalityPlan, client: String, threshold: Int?) -> String {
        var notes = threshold.map { ["panic threshold \($0) %"] } ?? []
        if plan.panic { notes.append("every priority in panic: load split by host count") }
        var lines = ["from \(client)" + (notes.isEmpty ? "" : " (\(notes.joined(separator: "; ")))")]
        lines.append("PRIORITY  HEALTH  LOAD   LOCALITY                          HEALTHY  SHARE")
        for level in plan.priorities {
            for (i, locality) in level.localities.enumerated() {
                let head = i == 0
                    ? "P\(level.priority)".padding(toLength: 10, withPad: " ", startingAt: 0)
                        + "\(level.health)".padding(toLength: 8, withPad: " ", startingAt: 0)
                        + "\(level.load)%\(level.panic ? "!" : "")".padding(toLength: 7, withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: 25)
                lines.append(head + locality.locality.padding(toLength: max(34, locality.locality.count + 1), withPad: " ", startingAt: 0)
                             + "\(locality.healthy)/\(locality.total)".padding(toLength: 9, withPad: " ", startingAt: 0)
                             + String(format: "%.2f %%", locality.share * 100))
            }
        }
        if plan.shares.isEmpty { lines.append("nothing is routable: no healthy endpoint and panic is disabled (Envoy answers 503 UH)") }
        if plan.priorities.contains(where: \.panic) { lines.append("! in panic: picks from all its endpoints, healthy or not") }
        return lines.joined(separator: "\n")
    }
}
