import Testing
@testable import MeshProxyCore

@Suite("HTTP circuit breakers (connectionPool.http)")
struct CircuitBreakersTests {
    @Test("istiod's limits: only values above 0 set one; a full breaker refuses until a slot comes back; each resource counts alone")
    func limits() {
        #expect(ConnectionPoolSettings.HTTP(http1MaxPendingRequests: 0, http2MaxRequests: -1).limits.isEmpty)
        let limits = ConnectionPoolSettings.HTTP(http1MaxPendingRequests: 1, http2MaxRequests: 2, maxRetries: 1).limits
        #expect(limits == CircuitBreakers.Limits(maxRequests: 2, maxPending: 1, maxRetries: 1))
        let breakers = CircuitBreakers(cluster: "outbound|9080|v1|reviews.default.svc.cluster.local", limits: limits)
        #expect(breakers.acquire(.requests) && breakers.acquire(.requests))
        #expect(!breakers.acquire(.requests))
        #expect(breakers.inUse(.requests) == 2)
        #expect(breakers.acquire(.pending) && !breakers.acquire(.pending))
        #expect(breakers.acquire(.retries) && !breakers.acquire(.retries))
        breakers.release(.requests)
        #expect(breakers.acquire(.requests))
        let unlimited = CircuitBreakers(cluster: "c", limits: .init(maxRequests: 1))
        for _ in 0..<100 { #expect(unlimited.acquire(.pending)) }
    }

    @Test("The cluster manager keeps one set per cluster while its limits stay; none without limits")
    func perCluster() {
        let manager = ClusterManager(routes: RouteConfiguration(localCluster: "east"), endpoints: MeshEndpoints(localCluster: "east", clusters: [:]))
        let route = Route(service: ServiceKey(host: "reviews.default.svc.cluster.local", port: 9080), subset: "v1", selector: [:])
        let limits = CircuitBreakers.Limits(maxRequests: 5)
        let first = manager.breakers(for: route, limits: limits)
        #expect(first != nil && first === manager.breakers(for: route, limits: limits))
        #expect(manager.breakers(for: route, limits: CircuitBreakers.Limits(maxRequests: 6)) !== first)
        #expect(manager.breakers(for: route, limits: CircuitBreakers.Limits()) == nil)
    }
}
