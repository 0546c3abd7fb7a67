import Testing
import NIOSSL
@testable import MeshProxyCore

@Suite("Config validation messages")
struct ConfigValidationTests {
    func errors<T: Codable & ConfigValidatable>(_ type: T.Type, _ yaml: String) -> [String] {
        do {
            _ = try ConfigLoader.load(type, yaml: yaml, file: "topo.yaml")
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    let valid = """
        name: demo
        clusters:
        - name: east
          gateways:
          - {name: east-gw-1, address: 127.0.1.1, locality: us-east1/us-east1-a}
          services:
          - host: echo.default.svc.cluster.local
            port: 8080
            endpoints:
            - {address: 127.0.1.10:8080, locality: us-east1/us-east1-a, labels: {version: v1}}
        """

    @Test("A valid topology loads, with defaults for trust domain and gateway port")
    func validTopology() throws {
        let topology = try ConfigLoader.load(Topology.self, yaml: valid, file: "topo.yaml")
        #expect(topology.effectiveTrustDomain == "cluster.local")
        #expect(topology.clusters[0].gateways[0].listen == HostPort(host: "127.0.1.1", port: 15443))
        #expect(topology.clusters[0].gateways[0].admin == HostPort(host: "127.0.1.1", port: 15000))
    }

    @Test("Malformed YAML names the line and column")
    func malformedYAML() {
        let problems = errors(Topology.self, "name: demo\nclusters:\n  - name: [east\n")
        #expect(problems.count == 1)
        #expect(problems.first?.hasPrefix("topo.yaml:") == true)
        #expect(problems.first?.contains("error: invalid YAML") == true)
    }

    @Test("A bad endpoint address points at its line, column and field")
    func badAddress() {
        let yaml = valid.replacingOccurrences(of: "127.0.1.10:8080", with: "127.0.1.10:99999")
        #expect(errors(Topology.self, yaml) == [
            "topo.yaml:10:8: error: clusters[0].services[0].endpoints[0].address: '127.0.1.10:99999' is not an address of the form host:port with a port from 1 to 65535",
        ])
    }

    @Test("A missing field names the mapping that lacks it")
    func missingField() {
        let yaml = valid.replacingOccurrences(of: "    port: 8080\n", with: "")
        #expect(errors(Topology.self, yaml) == ["topo.yaml:7:5: error: clusters[0].services[0].port: missing required field 'port'"])
    }

    @Test("A misspelt key is an error, not silently ignored")
    func unknownKey() {
        let yaml = valid.replacingOccurrences(of: "    endpoints:", with: "    endpionts:")
        let problems = errors(Topology.self, yaml)
        #expect(problems.contains { $0.contains("error: clusters[0].services[0]") && $0.contains("missing required field 'endpoints'") })
        let extra = valid + "\n    weigth: 3\n"
        #expect(errors(Topology.self, extra) == [
            "topo.yaml:11:5: error: clusters[0].services[0].weigth: unknown field 'weigth' (known here: endpoints, host, port)",
        ])
    }

    @Test("Every meaning problem in a file is reported, each with its position")
    func everyProblem() {
        let yaml = """
            name: demo
            trustDomain: Cluster.Local
            clusters:
            - name: east
              gateways:
              - {name: gw, address: 127.0.1.1}
              - {name: gw, address: 127.0.1.1}
              services:
              - {host: "Echo Service", port: 0, endpoints: []}
            """
        #expect(errors(Topology.self, yaml) == [
            "topo.yaml:2:1: error: trustDomain: 'Cluster.Local' is not a valid trust domain (lower-case letters, digits, '.', '-', '_')",
            "topo.yaml:7:6: error: clusters[0].gateways[1].name: gateway 'gw' appears twice",
            "topo.yaml:7:16: error: clusters[0].gateways[1].address: address 127.0.1.1:15443 is used by another gateway",
            "topo.yaml:9:6: error: clusters[0].services[0].host: host 'echo service' contains a character that is not allowed in a DNS name",
            "topo.yaml:9:28: error: clusters[0].services[0].port: 0 is not a port from 1 to 65535",
        ])
    }

    @Test("Gateway config durations and identities are checked")
    func gatewayConfig() {
        let yaml = """
            name: gw
            cluster: east
            listen: 127.0.1.1:15443
            tls: {certificateChain: a.pem, privateKey: k.pem, rootCertificate: r.pem}
            peerGatewayIdentities: [spiffe://cluster.local/ns/istio-system/sa/eastwest-gateway, "https://x"]
            timeouts: {connect: 0s, idle: 10x}
            """
        #expect(errors(GatewayConfig.self, yaml) == [
            "topo.yaml:6:25: error: timeouts.idle: '10x' is not a duration such as 500ms, 10s, 5m or 1h",
        ])
        let fixed = yaml.replacingOccurrences(of: "10x", with: "10m")
        #expect(errors(GatewayConfig.self, fixed) == [
            "topo.yaml:5:85: error: peerGatewayIdentities[1]: 'https://x' is not a SPIFFE ID: must start with 'spiffe://'",
            "topo.yaml:6:12: error: timeouts.connect: must be longer than 0s",
        ])
    }

    @Test("compliancePolicy: pqc loads; Istio's fips-140-2, not carried out, is an error at its position; absent is Envoy's key exchange")
    func compliancePolicy() throws {
        let yaml = """
            name: gw
            cluster: east
            listen: 127.0.1.1:15443
            tls: {certificateChain: a.pem, privateKey: k.pem, rootCertificate: r.pem}
            compliancePolicy: fips-140-2
            """
        #expect(errors(GatewayConfig.self, yaml) == [
            "topo.yaml:5:1: error: compliancePolicy: 'fips-140-2' is not a compliance policy EastWest carries out (pqc is; Istio's fips-140-2 is not)",
        ])
        let pqc = try ConfigLoader.load(GatewayConfig.self, yaml: yaml.replacingOccurrences(of: "fips-140-2", with: "pqc"), file: "gw.yaml")
        #expect(pqc.compliancePolicy == .pqc)
        let pqcExchange = GatewayTLS.KeyExchange(.pqc), envoyDefaults = GatewayTLS.KeyExchange(nil)
        #expect(pqcExchange.groups == [.x25519_MLKEM768] && pqcExchange.minimumTLSVersion == .tlsv13)
        #expect(envoyDefaults.groups == [.x25519, .secp256r1] && envoyDefaults.minimumTLSVersion == .tlsv12)
    }
}
