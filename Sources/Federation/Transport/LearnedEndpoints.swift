import MeshProxyCore

extension GossipService.View {
    /// The data plane's view of the mesh: `base` (this cluster from config, plus any statically
    /// configured remote clusters) with every cluster learned by gossip laid over it. A remote
    /// cluster is reachable through its *alive* gateways only: a suspect gateway gets no new
    /// connections, and a cluster whose gateways are all dead keeps its catalog entries (they
    /// return at once on heal) but offers no target until then.
    package func meshEndpoints(base: MeshEndpoints) -> MeshEndpoints {
        var result = base
        result.protocols.merge(protocols) { configured, _ in configured }
        var gateways: [String: [GatewayAddress]] = [:]
        for member in members where member.state == .alive {
            gateways[member.cluster, default: []].append(GatewayAddress(name: member.name, address: member.address))
        }
        let learnedClusters = Set(endpointsByCluster.keys).union(members.map(\.cluster))
        for cluster in learnedClusters where cluster != base.localCluster {
            result.clusters[cluster] = ClusterEndpoints(
                name: cluster, network: base.clusters[cluster]?.network,
                gateways: (gateways[cluster] ?? []).sorted { $0.name < $1.name },
                services: endpointsByCluster[cluster] ?? [:])
        }
        return result
    }
}
