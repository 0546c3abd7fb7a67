import Foundation
import MeshProxyCore
import Testing

/// Two clusters serving one service from a Python backend script (`SCRIPT serve ADDRESS
/// VERSION`, printing `ready`): v1 in east at `127.0.<east>.10`, v2 in west at `127.0.<west>.10`;
/// east's gateway reaches v2 through west's, both gateways load `policies`. The real servers
/// the gRPC and WebSocket suites need, set up once.
struct ScriptedBackends {
    let mesh: TestMesh
    let east: GatewayConfig
    let eastGateway: ChildProcess
    private let backends: [ChildProcess]

    init(_ label: String, host: String, port: Int, protocol serviceProtocol: ServiceProtocol, script: String,
         blocks: (east: Int, west: Int), policies: String) async throws {
        let mesh = try TestMesh(label, clusters: ["east", "west"], serviceHosts: [host])
        var backends: [ChildProcess] = []
        do {
            let addresses = ["v1": "127.0.\(blocks.east).10:\(port)", "v2": "127.0.\(blocks.west).10:\(port)"]
            for version in ["v1", "v2"] {
                let backend = try ChildProcess(name: "\(label)-\(version)", arguments: ["/usr/bin/env", "python3", script, "serve", addresses[version]!, version],
                                               logPath: "\(mesh.directory)/\(label)-\(version).log")
                backends.append(backend)
                try #require(await eventually { backend.log.contains("ready") }, "backend \(version) did not start: \(backend.log)")
            }
            func service(_ version: String) -> GatewayConfig.ServiceConfig {
                .init(host: host, port: port, endpoints: [Endpoint(address: HostPort(parsing: addresses[version]!)!, labels: ["version": version])],
                      protocol: serviceProtocol)
            }
            let policyPath = "\(mesh.directory)/policies.yaml"
            try policies.write(toFile: policyPath, atomically: true, encoding: .utf8)
            let westIP = "127.0.\(blocks.west).1"
            var east = mesh.gatewayConfig(name: "east-gw", cluster: "east", ip: "127.0.\(blocks.east).1", services: [service("v1")],
                                          remotes: [.init(name: "west", gateways: [.init(name: "west-gw", address: HostPort(host: westIP, port: 15443))],
                                                          services: [service("v2")])])
            east.policies = [policyPath]
            var west = mesh.gatewayConfig(name: "west-gw", cluster: "west", ip: westIP, services: [service("v2")])
            west.policies = [policyPath]
            try await mesh.startGateway(west)
            eastGateway = try await mesh.startGateway(east)
            self.east = east
        } catch {
            backends.forEach { $0.stop() }
            mesh.processes.stopAll()
            throw error
        }
        self.mesh = mesh
        self.backends = backends
    }

    /// The client certificate's directory in east.
    var client: String { mesh.clientCertPath("east") }

    func stop() {
        backends.forEach { $0.stop() }
        mesh.processes.stopAll()
    }
}
