import Testing
@testable import MeshProxyCore

/// ServiceEntry and WorkloadEntry as Istio users write them, declaring a cluster's services.
@Suite("ServiceEntry and WorkloadEntry")
struct ServiceEntryTests {
    static let yaml = """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: ratings, namespace: default}
        spec:
          hosts: [ratings.default.svc.cluster.local]
          location: MESH_INTERNAL
          ports: [{number: 9080, name: http, protocol: HTTP, targetPort: 8080}]
          resolution: STATIC
          endpoints:
          - {address: 127.0.1.10, labels: {version: v1}, locality: us-east/zone-a}
          - {address: 127.0.1.11, ports: {http: 9090}, labels: {version: v2, topology.istio.io/cluster: west}}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: details, namespace: shop}
        spec:
          hosts: [details.shop.svc.cluster.local]
          ports: [{number: 9080, name: grpc-api, protocol: GRPC}]
          resolution: STATIC
          workloadSelector: {labels: {app: details}}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: details-vm, namespace: shop}
        spec: {address: 127.0.1.20, ports: {grpc-api: 7000}, labels: {app: details, version: v1}}
        ---
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: other, namespace: default}
        spec: {address: 127.0.1.21, labels: {app: details}}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: api}
        spec:
          hosts: [api.example.com]
          ports: [{number: 443, name: tls, protocol: TLS}]
          resolution: DNS
          location: MESH_EXTERNAL
        """

    @Test("Inline endpoints (the port by name, else targetPort), a selector's WorkloadEntries of the namespace, DNS hosts; a cluster label keeps an endpoint to its cluster")
    func services() throws {
        let loaded = try IstioPolicyLoader.load(yaml: Self.yaml, file: "entries.yaml")
        #expect(loaded.warnings.isEmpty && loaded.skipped.isEmpty, "\(loaded.warnings) \(loaded.skipped)")
        let east = ServiceEntry.services(loaded.serviceEntries, workloads: loaded.workloadEntries, cluster: "east")
        let ratings = try #require(east.first { $0.host == "ratings.default.svc.cluster.local" })
        #expect(ratings.port == 9080 && ratings.protocol == .http)
        #expect(ratings.endpoints == [Endpoint(address: HostPort(host: "127.0.1.10", port: 8080), locality: Locality(region: "us-east", zone: "zone-a"),
                                               labels: ["version": "v1"])], "the west-labelled endpoint is west's")
        let west = ServiceEntry.services(loaded.serviceEntries, workloads: loaded.workloadEntries, cluster: "west")
        #expect(west.first { $0.host == "ratings.default.svc.cluster.local" }?.endpoints.map(\.address.description) == ["127.0.1.10:8080", "127.0.1.11:9090"])
        let details = try #require(east.first { $0.host == "details.shop.svc.cluster.local" })
        #expect(details.protocol == .grpc && details.endpoints.map(\.address.description) == ["127.0.1.20:7000"], "only the namespace's WorkloadEntries")
        #expect(east.first { $0.host == "api.example.com" }?.endpoints.map(\.address.description) == ["api.example.com:443"])
    }

    @Test("What Istio rejects is an error at its line")
    func validation() throws {
        let bad = """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: bad}
            spec:
              hosts: ["*.example.com"]
              ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http}]
              resolution: DNS
              endpoints: [{address: 10.0.0.1, ports: {grpc: 9000}}]
              workloadSelector: {labels: {app: x}}
            """
        do {
            _ = try IstioPolicyLoader.load(yaml: bad, file: "bad.yaml")
            Issue.record("loaded")
        } catch {
            let text = error.description
            #expect(text.contains("port name 'http' is used twice"), "\(text)")
            #expect(text.contains("bad.yaml:9:") && text.contains("endpoints and workloadSelector cannot both be set"), "\(text)")
            #expect(text.contains("'grpc' is not one of the entry's port names"), "\(text)")
            #expect(text.contains("DNS resolution cannot use wildcard hosts"), "\(text)")
        }
        do {
            _ = try IstioPolicyLoader.load(yaml: """
                apiVersion: networking.istio.io/v1
                kind: ServiceEntry
                metadata: {name: s}
                spec: {hosts: [a.b], ports: [{number: 80}], resolution: STATIC, endpoints: [{address: db.internal}]}
                """, file: "s.yaml")
            Issue.record("loaded")
        } catch {
            #expect(error.description.contains("STATIC resolution takes IP addresses"), "\(error.description)")
        }
    }
}
