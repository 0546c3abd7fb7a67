import ArgumentParser
import Foundation
import Federation
import MeshProxyCore

/// Reads a running gateway's view of the federation from its admin API.
struct MembersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "members", abstract: "List the gateways a running gateway knows, with their state.")

    @Option(help: "Admin address of a gateway, host:port.") var admin: String
    @Flag(help: "Print the raw JSON.") var json = false

    func run() async throws {
        let body = try await AdminClient.get(admin: admin, path: "/v1/members")
        if json { print(body); return }
        let decoded = try JSONDecoder().decode(AdminAPI.MembersBody.self, from: Data(body.utf8))
        var rows = [["NAME", "CLUSTER", "ADDRESS", "STATE", "INCARNATION", "LAST CHANGE"]]
        for m in [decoded.myself] + decoded.members {
            let change = m.name == decoded.myself.name ? "(self)" : String(format: "%.1fs ago", m.lastChangeSecondsAgo)
            rows.append([m.name, m.cluster, m.address.description, m.state.rawValue, String(m.incarnation), change])
        }
        print(table(rows))
    }
}

struct EndpointsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "endpoints", abstract: "Show every endpoint of a service, as a running gateway knows it.")

    @Argument(help: "Service host, e.g. echo.default.svc.cluster.local.") var host: String
    @Option(help: "Admin address of a gateway, host:port.") var admin: String
    @Option(help: "Only this service port.") var port: Int?
    @Flag(help: "Print the raw JSON.") var json = false

    func run() async throws {
        var path = "/v1/endpoints?host=\(host.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? host)"
        if let port { path += "&port=\(port)" }
        let body = try await AdminClient.get(admin: admin, path: path)
        if json { print(body); return }
        let endpoints = try JSONDecoder().decode([AdminAPI.EndpointBody].self, from: Data(body.utf8))
        guard !endpoints.isEmpty else {
            printError("no cluster serves \(host) (as \(admin) knows it)")
            throw ExitCode(1)
        }
        var rows = [["CLUSTER", "PORT", "ADDRESS", "REACHABLE", "LOCALITY", "VIA", "LABELS"]]
        for e in endpoints {
            let labels = e.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
            rows.append([e.cluster, String(e.port), e.address, e.reachable ? "yes" : "no", e.locality ?? "-",
                         e.via.isEmpty ? "direct" : e.via.joined(separator: ","), labels.isEmpty ? "-" : labels])
        }
        print(table(rows))
    }
}

extension AdminClient {
    /// Reads from a running gateway's admin API for a command: failures are one line on
    /// stderr and exit 1.
    static func get(admin: String, path: String) async throws -> String {
        guard let address = HostPort(parsing: admin) else { throw ValidationError("--admin '\(admin)' is not host:port") }
        let reply: Response
        do {
            reply = try await AdminClient.send(.GET, address, path: path)
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
}

/// Left-aligned columns, each as wide as its widest cell plus two spaces.
private func table(_ rows: [[String]]) -> String {
    let widths = rows.reduce(into: [Int]()) { widths, row in
        for (i, cell) in row.enumerated() {
            if i < widths.count { widths[i] = max(widths[i], cell.count) } else { widths.append(cell.count) }
        }
    }
    return rows.map { row in
        row.enumerated().map { $1.padding(toLength: widths[$0] + 2, withPad: " ", startingAt: 0) }.joined()
            .trimmingCharacters(in: .whitespaces)
    }.joined(separator: "\n")
}
