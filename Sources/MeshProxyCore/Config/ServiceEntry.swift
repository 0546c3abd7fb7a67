import Foundation

/// An Istio `ServiceEntry` (networking.istio.io v1, v1beta1, v1alpha3) as users write it: hosts,
/// ports with their protocols, and endpoints listed inline or selected from `WorkloadEntry`s.
/// A gateway that loads one declares those endpoints as its cluster's, next to its `services:`,
/// so they are planned, served and gossiped like any other.
package struct ServiceEntry: Codable, Sendable, Equatable {
    package var hosts: [String]?
    package var addresses: [String]?
    package var ports: [Port]?
    package var location: String?
    package var resolution: String?
    package var endpoints: [WorkloadEntry]?
    package var workloadSelector: WorkloadSelector?
    package var namespace: String = "default"
    package var name: String = ""

    enum CodingKeys: String, CodingKey { case hosts, addresses, ports, location, resolution, endpoints, workloadSelector }

    package struct Port: Codable, Sendable, Equatable {
        package var number: Int
        package var name: String?
        package var `protocol`: String?
        package var targetPort: Int?
    }

    package struct WorkloadSelector: Codable, Sendable, Equatable {
        package var labels: [String: String]?
    }

    package static let resolutions: Set<String> = ["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"]
    package static let locations: Set<String> = ["MESH_EXTERNAL", "MESH_INTERNAL"]
}

/// An Istio `WorkloadEntry`, also the form of a ServiceEntry's inline `endpoints`.
package struct WorkloadEntry: Codable, Sendable, Equatable {
    package var address: String?
    /// Port name → the workload's port for it.
    package var ports: [String: Int]?
    package var labels: [String: String]?
    package var locality: String?
    package var namespace: String = "default"
    package var name: String = ""

    enum CodingKeys: String, CodingKey { case address, ports, labels, locality }

    /// Istio's well-known label for the cluster a workload runs in. A policy file shared by
    /// every cluster of a topology says with it whose endpoint this is; without it the endpoint
    /// belongs to whichever gateway loads the file.
    package static let clusterLabel = "topology.istio.io/cluster"
}

extension ServiceEntry {
    /// The service ports these entries declare for `cluster`, as a topology's `services:` would:
    /// one per host and port, with the endpoints (inline, or the namespace's WorkloadEntries the
    /// selector picks) that belong to the cluster, on the port the entry names for them
    /// (`ports[name]`, else `targetPort`, else the service port). `cluster` nil: every cluster's
    /// (an offline `eastwest plan` over a policy file the whole topology shares).
    package static func services(_ entries: [ServiceEntry], workloads: [WorkloadEntry], cluster: String?) -> [GatewayConfig.ServiceConfig] {
        var result: [GatewayConfig.ServiceConfig] = []
        for entry in entries {
            let members: [WorkloadEntry]
            if let selector = entry.workloadSelector?.labels {
                members = workloads.filter { workload in
                    workload.namespace == entry.namespace && selector.selects(workload.labels)
                }
            } else {
                members = entry.endpoints ?? []
            }
            let own = members.filter { member in cluster.map { cluster in (member.labels?[WorkloadEntry.clusterLabel]).map { $0 == cluster } ?? true } ?? true }
            for host in entry.hosts ?? [] {
                for port in entry.ports ?? [] {
                    let endpoints: [Endpoint] = own.compactMap { member in
                        guard let address = member.address, !address.isEmpty else { return nil }
                        let number = port.name.flatMap { member.ports?[$0] } ?? port.targetPort ?? port.number
                        return Endpoint(address: HostPort(host: address, port: number), locality: member.locality.flatMap(Locality.init(parsing:)),
                                        labels: member.labels)
                    }
                    // DNS resolution without endpoints: the host itself, resolved when dialled.
                    let resolved = endpoints.isEmpty && (entry.resolution == "DNS" || entry.resolution == "DNS_ROUND_ROBIN") && !host.contains("*")
                        ? [Endpoint(address: HostPort(host: host, port: port.targetPort ?? port.number))] : endpoints
                    guard !resolved.isEmpty else { continue }
                    result.append(.init(host: host.lowercased(), port: port.number, endpoints: resolved,
                                        protocol: port.protocol.flatMap { ServiceProtocol(istioName: $0) }))
                }
            }
        }
        return result
    }
}
