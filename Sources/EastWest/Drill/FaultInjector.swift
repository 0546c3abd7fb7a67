import Foundation
import Subprocess
#if canImport(System)
import System
#else
import SystemPackage
#endif
import MeshProxyCore
import Synchronization

/// Carries out a drill's steps on a running topology: signals to its processes, restarts, and
/// iptables rules between clusters' loopback addresses. Every rule it adds and every process it
/// stops is remembered, and `cleanUp` undoes them all — also after Ctrl-C.
final class FaultInjector: Sendable {
    private let topology: Topology
    private let supervisor: Supervisor
    private let rules = Mutex<[[String]]>([])
    private let stopped = Mutex<Set<String>>([])
    /// What the blackhole in force hit (an unblackhole is its recovery).
    private let blackholed = Mutex<Hit?>(nil)
    /// What the gateways' admin writes need (known once the deployment is).
    let adminCredentials = Mutex(AdminClient.Credentials())

    init(topology: Topology, supervisor: Supervisor) {
        self.topology = topology
        self.supervisor = supervisor
    }

    /// What a target names: process names, and the clusters, localities and gateways it hits.
    struct Hit {
        var processes: [String] = []
        var clusters: [String] = []
        var localities: [String] = []
        var gateways: [String] = []
    }

    func resolve(_ target: DrillScenario.Target) -> Hit {
        var hit = Hit()
        let what = target.what ?? .backends
        for cluster in topology.clusters {
            if let name = target.cluster, name != cluster.name { continue }
            let before = hit.processes.count
            if what != .backends {
                for gateway in cluster.gateways {
                    if let name = target.gateway, name != gateway.name { continue }
                    if let region = target.region, gateway.locality?.region != region { continue }
                    if let zone = target.zone, gateway.locality?.zone != zone { continue }
                    hit.processes.append(gateway.name)
                    hit.gateways.append(gateway.name)
                }
            }
            if what != .gateways, target.gateway == nil {
                for service in cluster.services ?? [] {
                    if let host = target.service, host != service.host { continue }
                    for endpoint in service.endpoints {
                        if let region = target.region, endpoint.locality?.region != region { continue }
                        if let zone = target.zone, endpoint.locality?.zone != zone { continue }
                        hit.processes.append(backendName(service.host, endpoint.address))
                        if let locality = endpoint.locality?.description, !hit.localities.contains(locality) { hit.localities.append(locality) }
                    }
                }
            }
            if hit.processes.count > before { hit.clusters.append(cluster.name) }
        }
        return hit
    }

    /// Carries out one step; returns what it hit, or throws with the reason.
    /// - Parameter remaining: how long the drill still runs (a blackhole's default duration).
    func apply(_ step: DrillScenario.Step, remaining: Duration) async throws -> Hit {
        switch step.action {
        case .kill, .stop, .resume, .restart:
            let hit = resolve(step.target)
            guard !hit.processes.isEmpty else { throw DrillError("step \(step.action.rawValue): the target matches no process") }
            for name in hit.processes {
                switch step.action {
                case .kill: supervisor.signal(name, SIGKILL)
                case .stop:
                    supervisor.signal(name, SIGSTOP)
                    stopped.withLock { _ = $0.insert(name) }
                case .resume:
                    supervisor.signal(name, SIGCONT)
                    stopped.withLock { _ = $0.remove(name) }
                default:
                    try await supervisor.restart(name)
                    stopped.withLock { _ = $0.remove(name) }
                }
            }
            return hit
        case .partition, .loss, .heal:
            let pair = step.target.between ?? []
            let subnets = try pair.map(subnet(of:))
            var hit = Hit()
            hit.clusters = pair
            let cut = topology.clusters.filter { pair.contains($0.name) }
            hit.gateways = cut.flatMap { $0.gateways.map(\.name) }
            hit.localities = Array(Set(cut.flatMap { ($0.services ?? []).flatMap { $0.endpoints.compactMap { $0.locality?.description } } })).sorted()
            if step.action == .heal {
                await removeRules { rule in rule.contains(subnets[0]) && rule.contains(subnets[1]) }
                return hit
            }
            var match: [String] = []
            if step.action == .loss { match = ["-m", "statistic", "--mode", "random", "--probability", String((step.percent ?? 0) / 100)] }
            for (from, to) in [(subnets[0], subnets[1]), (subnets[1], subnets[0])] {
                try await addRule(["-s", from, "-d", to] + match + ["-j", "DROP"])
            }
            return hit
        case .blackhole:
            // Every gateway treats the target as unreachable; it expires by itself.
            var hit = Hit()
            let t = step.target
            for cluster in topology.clusters where t.cluster == nil || t.cluster == cluster.name {
                for endpoint in (cluster.services ?? []).flatMap(\.endpoints) {
                    if let region = t.region, endpoint.locality?.region != region { continue }
                    if let zone = t.zone, endpoint.locality?.zone != zone { continue }
                    if !hit.clusters.contains(cluster.name) { hit.clusters.append(cluster.name) }
                    if let locality = endpoint.locality?.description, !hit.localities.contains(locality) { hit.localities.append(locality) }
                }
            }
            let duration = step.duration?.duration ?? remaining + .seconds(5)
            let request = FaultRequest(blackhole: BlackholeTarget(cluster: t.cluster, region: t.region, zone: t.zone),
                                       duration: ConfigDuration(.seconds(Int(duration.seconds.rounded(.up)))))
            let body = String(decoding: try JSONEncoder().encode(request), as: UTF8.self)
            for admin in admins {
                let reply = try await AdminClient.send(.POST, admin, path: "/v1/faults", body: body, credentials: adminCredentials.withLock { $0 })
                guard reply.status == 201 else { throw DrillError("blackhole at \(admin): \(reply.status) \(reply.body)") }
            }
            blackholed.withLock { $0 = hit }
            return hit
        case .unblackhole:
            let hit = blackholed.withLock { $0 } ?? Hit()
            await clearBlackholes()
            return hit
        }
    }

    private var admins: [HostPort] { topology.clusters.flatMap { $0.gateways.compactMap(\.admin) } }

    private func clearBlackholes() async {
        let credentials = adminCredentials.withLock { $0 }
        for admin in admins { _ = try? await AdminClient.send(.DELETE, admin, path: "/v1/faults", credentials: credentials) }
        blackholed.withLock { $0 = nil }
    }

    /// Every cluster lives in its own 127.0.x.0/24: the first gateway's /24.
    private func subnet(of cluster: String) throws -> String {
        guard let gateway = topology.clusters.first(where: { $0.name == cluster })?.gateways.first?.listen,
              case let parts = gateway.host.split(separator: "."), parts.count == 4 else {
            throw DrillError("cluster '\(cluster)' has no IPv4 gateway address to cut")
        }
        return "\(parts[0]).\(parts[1]).\(parts[2]).0/24"
    }

    private func addRule(_ rule: [String]) async throws {
        let result = try await runIptables(["-I", "OUTPUT"] + rule)
        guard result == 0 else { throw DrillError("iptables -I OUTPUT \(rule.joined(separator: " ")) failed (root needed)") }
        rules.withLock { $0.append(rule) }
    }

    private func removeRules(where matches: ([String]) -> Bool) async {
        let removed = rules.withLock { rules -> [[String]] in
            let chosen = rules.filter(matches)
            rules.removeAll(where: matches)
            return chosen
        }
        for rule in removed { _ = try? await runIptables(["-D", "OUTPUT"] + rule) }
    }

    /// Runs iptables (`-w`: wait for the xtables lock) and returns its exit status.
    private func runIptables(_ arguments: [String]) async throws -> Int32 {
        let path = FileManager.default.isExecutableFile(atPath: "/usr/sbin/iptables") ? "/usr/sbin/iptables" : "/sbin/iptables"
        let result = try await run(.path(FilePath(path)), arguments: Arguments(["-w"] + arguments), output: .discarded, error: .discarded)
        switch result.terminationStatus {
        case .exited(let code): return code
        case .signaled(let signal): return 128 + signal
        }
    }

    /// Removes every rule this drill added, resumes every process it stopped and clears the
    /// gateways' blackholes.
    func cleanUp() async {
        if blackholed.withLock({ $0 }) != nil { await clearBlackholes() }
        await removeRules { _ in true }
        for name in stopped.withLock({ state in defer { state = [] }; return state }) { supervisor.signal(name, SIGCONT) }
    }
}

struct DrillError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
