import ArgumentParser
import Foundation
import MeshProxyCore

/// Reads a running gateway's view of the federation from its admin API.
struct MembersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "members", abstract: "List the gateways a running gateway knows, with their state.")

    @Option(help: "Admin address of a gateway, host:port.") var admin: String
    @Flag(help: "Print the raw JSON.") var json = false

    func run() async throws {
        let body = try await fetch(admin: admin, path: "/v1/members")
        if json { print(body); return }
        let decoded = try JSONDecoder().decode(AdminAPI.MembersBody.self, from: Data(body.utf8))
        print(row("NAME", "CLUSTER", "ADDRESS", "STATE", "INCARNATION", "LAST CHANGE"))
        for m in [decoded.myself] + decoded.members {
            let change = m.name == decoded.myself.name ? "(self)" : String(format: "%.1fs ago", m.lastChangeSecondsAgo)
            print(row(m.name, m.cluster, m.address, m.state, String(m.incarnation), change))
        }
    }
}

struct EndpointsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "endpoints", abstract: "Show which clusters serve a service, as a running gateway knows it.")

    @Argument(help: "Service host, e.g. echo.default.svc.cluster.local.") var host: String
    @Option(help: "Admin address of a gateway, host:port.") var admin: String
    @Flag(help: "Print the raw JSON.") var json = false

    func run() async throws {
        let body = try await fetch(admin: admin, path: "/v1/services")
        struct Service: Codable { var host: String; var port: Int; var clusters: [String: Int] }
        let services = try JSONDecoder().decode([Service].self, from: Data(body.utf8)).filter { $0.host == host }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(services), as: UTF8.self))
            return
        }
        guard !services.isEmpty else {
            printError("no cluster serves \(host) (as \(admin) knows it)")
            throw ExitCode(1)
        }
        print(row("HOST", "PORT", "CLUSTER", "ENDPOINTS", "", ""))
        for service in services {
            for (cluster, count) in service.clusters.sorted(by: { $0.key < $1.key }) {
                print(row(service.host, String(service.port), cluster, String(count), "", ""))
            }
        }
    }
}

private func fetch(admin: String, path: String) async throws -> String {
    guard let address = HostPort(parsing: admin) else { throw ValidationError("--admin '\(admin)' is not host:port") }
    let reply: (status: Int, body: String)
    do {
        reply = try await Probe.httpGet(address, path: path)
    } catch {
        printError("error: cannot reach the admin API at \(admin): \(error)")
        throw ExitCode(1)
    }
    guard reply.status == 200 else {
        printError("error: \(admin)\(path) answered \(reply.status): \(reply.body.trimmingCharacters(in: .whitespacesAndNewlines))")
        throw ExitCode(1)
    }
    return reply.body
}

private func row(_ columns: String...) -> String {
    let widths = [18, 12, 22, 9, 12, 12]
    return zip(columns, widths).map { $0.padding(toLength: max($1, $0.count + 1), withPad: " ", startingAt: 0) }.joined()
        .trimmingCharacters(in: .whitespaces)
}
