import Federation
import MeshProxyCore
import Testing

@Suite("Federation timing from config")
struct FederationTimingTests {
    let topology = """
        name: demo
        clusters:
        - name: east
          gateways: [{name: east-gw-1, address: 127.0.1.1}]
        federation:
          profile: wan
          timing: {probeInterval: 700ms, suspicionConfirmations: 3}
        """

    @Test("A topology's profile and per-value overrides reach every gateway's failure detector")
    func overridesApply() throws {
        let topology = try ConfigLoader.load(Topology.self, yaml: topology, file: "topo.yaml")
        let config = topology.gatewayConfig(cluster: topology.clusters[0], gateway: topology.clusters[0].gateways[0],
                                            tls: .init(certificateChain: "c", privateKey: "k", rootCertificate: "r"))
        let settings = MembershipSettings(config.federation)
        #expect(settings.probeInterval == .milliseconds(700))
        #expect(settings.suspicionConfirmations == 3)
        // Everything not overridden is the wan profile's.
        #expect(settings.probeTimeout == MembershipSettings.wan.probeTimeout)
        #expect(settings.pushPullInterval == MembershipSettings.wan.pushPullInterval)
        #expect(MembershipSettings(nil) == .gateway)
    }

    @Test("Bad timing values and unknown profiles are errors naming line, column and field")
    func badValues() {
        func errors(_ yaml: String) -> [String] {
            do { _ = try ConfigLoader.load(Topology.self, yaml: yaml, file: "topo.yaml"); return [] } catch {
                return error.errors.map(\.description)
            }
        }
        #expect(errors(topology.replacingOccurrences(of: "profile: wan", with: "profile: lan")) == [
            "topo.yaml:6:3: error: federation.profile: 'lan' is not a timing profile (gateway, wan)"])
        let bad = topology.replacingOccurrences(of: "{probeInterval: 700ms, suspicionConfirmations: 3}",
                                                with: "{probeInterval: 100ms, probeTimeout: 200ms, gossipFanout: 0}")
        #expect(errors(bad) == [
            "topo.yaml:7:34: error: federation.timing.probeTimeout: 200ms must be shorter than probeInterval (100ms): a probe must end before the next starts",
            "topo.yaml:7:55: error: federation.timing.gossipFanout: must be at least 1",
        ])
        #expect(errors(topology.replacingOccurrences(of: "profile: wan", with: "seeds: [127.0.2.1:15443]")).first?
            .contains("federation.seeds: a topology derives every gateway's seeds") == true)
    }
}
