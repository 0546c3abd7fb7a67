import ArgumentParser
import Foundation
import MeshProxyCore

/// "Why did my request go there": what a gateway would do with a request, asked of the running
/// gateway (its live view: federation, health, ejections) or worked out from its config file
/// offline (every endpoint healthy), as `eastwest plan` does for locality plans.
struct RouteCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "route",
        abstract: "Show the VirtualService rule, destinations, subset, locality plan and targets a request would get, without sending it.")

    @Option(help: "Admin address of a running gateway, host:port: its live view.") var admin: String?
    @Option(help: "A gateway's config file: what that gateway would do, offline, with its services, remote clusters and policies (every endpoint healthy).")
    var config: String?
    @Option(help: "The request's Host / :authority.") var host: String
    @Option(help: "The request's path, with any query.") var path: String = "/"
    @Option(help: "The request's method.") var method: String = "GET"
    @Option(name: .customShort("H"), help: "A request header, 'name: value' (repeatable).") var header: [String] = []
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        if let config {
            guard admin == nil else { throw ValidationError("--admin and --config: choose one") }
            return try offline(config: config)
        }
        guard let admin else { throw ValidationError("--admin ADDRESS (a running gateway) or --config FILE (offline) is needed") }
        guard let address = HostPort(parsing: admin) else { throw ValidationError("--admin '\(admin)' is not host:port") }
        var query = URLComponents()
        query.queryItems = [URLQueryItem(name: "host", value: host), URLQueryItem(name: "path", value: path), URLQueryItem(name: "method", value: method)]
            + header.map { URLQueryItem(name: "header", value: $0) }
        let reply: AdminClient.Response
        do {
            reply = try await AdminClient.send(.GET, address, path: "/v1/route?\(query.percentEncodedQuery ?? "")")
        } catch {
            printError("error: cannot reach the admin listener at \(address): \(error)")
            throw ExitCode(1)
        }
        guard reply.status == 200 else {
            printError("error: \(reply.body)")
            throw ExitCode(1)
        }
        if json { print(reply.body); return }
        let explanation = try JSONDecoder().decode(Explanation.self, from: Data(reply.body.utf8))
        print(explanation.text)
    }

    func offline(config file: String) throws {
        let routes: RouteConfiguration, endpoints: MeshEndpoints
        do {
            var gateway = try ConfigLoader.load(GatewayConfig.self, file: file)
            routes = try GatewayNode.compileRoutes(&gateway, configPath: file).routes
            endpoints = gateway.meshEndpoints
        } catch {
            printError(error.description)
            throw ExitCode(2)
        }
        let request = HTTPRequestFacts(method: method.uppercased(), path: path, authority: host, headers: RouteExplanation.headers(header))
        let explanation = RouteExplanation.explain(request, routes: routes, clusters: ClusterManager(routes: routes, endpoints: endpoints),
                                                   random: UInt64.random(in: .min ... .max))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let body = try encoder.encode(explanation)
        if json { print(String(decoding: body, as: UTF8.self)); return }
        print(try JSONDecoder().decode(Explanation.self, from: body).text)
    }

    /// The JSON of `/v1/route`, read back for the text form.
    struct Explanation: Decodable {
        struct Destination: Decodable { var host: String; var port: Int?; var subset: String?; var weight: Int; var share: Double }
        struct Target: Decodable { var address: String; var cluster: String; var locality: String; var priority: Int; var via: String? }
        struct Reply: Decodable { var status: Int; var body: String; var flags: String; var detail: String }
        struct Plan: Decodable { var shares: [String: Double]? }
        var method: String, host: String, path: String
        var virtualService: String?, routeName: String?
        var timeoutMilliseconds: Int?
        struct Retries: Decodable { var retries: Int; var retryOn: [String]; var perTryTimeoutMilliseconds: Int?; var remoteLocalities: Bool; var istioDefault: Bool }
        struct Fault: Decodable { var delayMilliseconds: Int?; var delayPercent: Double?; var abortStatus: Int?; var abortGrpcStatus: Int?; var abortPercent: Double? }
        var retries: Retries?
        var fault: Fault?
        struct Mirror: Decodable { var host: String; var subset: String?; var percent: Double }
        var mirrors: [Mirror]
        var destinations: [Destination]
        var chosen: Destination?
        var cluster: String?
        var targets: [Target]
        var localReply: Reply?

        var text: String {
            var lines = ["\(method) \(host)\(path)"]
            lines.append("  rule:         \(virtualService ?? "none (no VirtualService for this host: the service itself)")\(routeName.map { " [\($0)]" } ?? "")")
            if destinations.count > 1 {
                lines.append("  destinations: " + destinations.map { "\($0.host)\($0.subset.map { " subset \($0)" } ?? "") \(String(format: "%.1f", $0.share)) %" }.joined(separator: ", "))
            }
            if let cluster { lines.append("  cluster:      \(cluster)\(destinations.count > 1 ? " (drawn for this request)" : "")") }
            if let timeoutMilliseconds { lines.append("  timeout:      \(timeoutMilliseconds) ms (then 504 UT)") }
            if let retries {
                let perTry = retries.perTryTimeoutMilliseconds.map { ", \($0) ms per try" } ?? ""
                let remote = retries.remoteLocalities ? ", may leave the locality from the third try" : ""
                lines.append(retries.retries == 0 ? "  retries:      none"
                    : "  retries:      \(retries.retries) on \(retries.retryOn.joined(separator: ","))\(perTry)\(remote)\(retries.istioDefault ? " (Istio's default)" : "")")
            }
            if let fault {
                var parts: [String] = []
                if let ms = fault.delayMilliseconds { parts.append("delay \(ms) ms for \(fault.delayPercent ?? 0) % (DI)") }
                if let status = fault.abortStatus {
                    parts.append("abort \(fault.abortGrpcStatus.map { "grpc-status \($0)" } ?? String(status)) for \(fault.abortPercent ?? 0) % (FI)")
                }
                lines.append("  fault:        " + parts.joined(separator: "; "))
            }
            for mirror in mirrors {
                lines.append("  mirror:       \(mirror.host)\(mirror.subset.map { " subset \($0)" } ?? "") for \(mirror.percent) % (copies; answers dropped)")
            }
            for (index, target) in targets.enumerated() {
                let via = target.via.map { " via gateway \($0)" } ?? ""
                lines.append("  \(index == 0 ? "target:      " : "then:        ") \(target.address) in \(target.cluster) \(target.locality.isEmpty ? "" : "(\(target.locality)) ")priority \(target.priority)\(via)")
            }
            if let reply = localReply {
                lines.append("  response:     \(reply.status) \(reply.flags)\(reply.body.isEmpty ? "" : " \"\(reply.body)\"") — \(reply.detail)")
            } else {
                lines.append("  response:     forwarded to the first target")
            }
            return lines.joined(separator: "\n")
        }
    }
}
