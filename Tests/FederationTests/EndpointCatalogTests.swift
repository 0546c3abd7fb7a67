import Testing
@testable import Federation
import MeshProxyCore

@Suite("Endpoint catalog merge rules")
struct EndpointCatalogTests {
    let start = ContinuousClock.now
    let echo1 = CatalogKey(host: "echo.default.svc.cluster.local", port: 8080, endpoint: HostPort(host: "127.0.1.10", port: 8080))
    let echo2 = CatalogKey(host: "echo.default.svc.cluster.local", port: 8080, endpoint: HostPort(host: "127.0.1.11", port: 8080))
    let record = CatalogRecord(locality: Locality(region: "us-east1", zone: "a"), labels: ["version": "v1"])

    @Test("Deltas ship exactly what a peer lacks, and applying them makes the copies equal")
    func deltasReconcile() throws {
        var east = EndpointCatalog(myself: "east-gw", cluster: "east", generation: 1)
        var west = EndpointCatalog(myself: "west-gw", cluster: "west", generation: 1)
        _ = east.publish([echo1: record, echo2: record], now: start)
        #expect(west.isBehind(east.digest))
        for delta in east.deltas(for: west.digest) { west.apply(delta, now: start) }
        #expect(west.endpointsByCluster()["east"]?[echo1.service]?.count == 2)
        #expect(east.deltas(for: west.digest).isEmpty)
        #expect(!west.isBehind(east.digest))
    }

    @Test("Out-of-order and duplicated deltas converge; an old delta never resurrects a deleted endpoint")
    func staleDeltasIgnored() {
        var east = EndpointCatalog(myself: "east-gw", cluster: "east", generation: 1)
        var west = EndpointCatalog(myself: "west-gw", cluster: "west", generation: 1)
        let add = east.publish([echo1: record], now: start)!
        let remove = east.publish([:], now: start)!
        // The delete arrives first, then the add, then the delete again.
        west.apply(remove, now: start)
        west.apply(add, now: start)
        west.apply(remove, now: start)
        west.apply(add, now: start)
        #expect(!west.holds(echo1))
        // The gap left by the reordering is filled by anti-entropy.
        for delta in east.deltas(for: west.digest) { west.apply(delta, now: start) }
        #expect(west.digest["east-gw"] == east.digest["east-gw"])
        #expect(!west.holds(echo1))
    }

    @Test("Two gateways of one cluster publishing the same endpoints show them once, and one dying keeps them")
    func sameClusterNoDuplicates() {
        var gw1 = EndpointCatalog(myself: "east-gw-1", cluster: "east", generation: 1)
        var gw2 = EndpointCatalog(myself: "east-gw-2", cluster: "east", generation: 1)
        var west = EndpointCatalog(myself: "west-gw", cluster: "west", generation: 1)
        west.apply(gw1.publish([echo1: record, echo2: record], now: start)!, now: start)
        west.apply(gw2.publish([echo1: record, echo2: record], now: start)!, now: start)
        #expect(west.endpointsByCluster()["east"]?[echo1.service]?.count == 2)
        let withoutGW1 = west.endpointsByCluster { $0 != "east-gw-1" }
        #expect(withoutGW1["east"]?[echo1.service]?.count == 2)
    }

    @Test("A restarted origin (new generation) replaces what peers held for it")
    func newGenerationReplaces() {
        var old = EndpointCatalog(myself: "east-gw", cluster: "east", generation: 1)
        var west = EndpointCatalog(myself: "west-gw", cluster: "west", generation: 1)
        west.apply(old.publish([echo1: record, echo2: record], now: start)!, now: start)
        var restarted = EndpointCatalog(myself: "east-gw", cluster: "east", generation: 2)
        _ = restarted.publish([echo2: record], now: start)
        for delta in restarted.deltas(for: west.digest) { west.apply(delta, now: start) }
        #expect(!west.holds(echo1))
        #expect(west.holds(echo2))
        _ = old
    }

    @Test("Tombstones are collected after the retention; a peer older than that gets a snapshot")
    func tombstoneCollection() {
        var east = EndpointCatalog(myself: "east-gw", cluster: "east", generation: 1)
        var west = EndpointCatalog(myself: "west-gw", cluster: "west", generation: 1)
        let staleCopy = west
        west.apply(east.publish([echo1: record, echo2: record], now: start)!, now: start)
        var lagging = staleCopy
        lagging.apply(east.deltas(for: lagging.digest)[0], now: start)
        _ = east.publish([echo2: record], now: start)  // echo1 deleted
        east.collectGarbage(now: start + .seconds(7200), retention: .seconds(3600))
        #expect(east.origins["east-gw"]?.entries[echo1] == nil)
        let deltas = east.deltas(for: lagging.digest)
        #expect(deltas.first?.isSnapshot == true)
        for delta in deltas { lagging.apply(delta, now: start) }
        #expect(!lagging.holds(echo1))
        #expect(lagging.holds(echo2))
    }
}
