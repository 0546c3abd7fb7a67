import Testing
@testable import MeshProxyCore

@Suite("Outlier detection (Envoy semantics at L4)")
struct OutlierDetectorTests {
    let echo = ServiceKey(host: "echo.default.svc.cluster.local", port: 8080)
    let a = HostPort(host: "10.0.0.1", port: 8080), b = HostPort(host: "10.0.0.2", port: 8080)
    let t0 = ContinuousClock.now

    func detector(_ od: OutlierDetection, hosts: Int = 2) -> OutlierDetector {
        OutlierDetector(settings: [echo: .init(od)], hostCounts: [echo: hosts])
    }

    @Test("consecutiveGatewayErrors connect failures eject; a success in between resets the count")
    func thresholdAndReset() {
        var d = detector(OutlierDetection(consecutiveGatewayErrors: 3, maxEjectionPercent: 100))
        #expect(d.failed(echo, a, now: t0).isEmpty)
        #expect(d.failed(echo, a, now: t0).isEmpty)
        d.succeeded(echo, a)
        #expect(d.failed(echo, a, now: t0).isEmpty)
        #expect(d.failed(echo, a, now: t0).isEmpty)
        #expect(d.failed(echo, a, now: t0) == [.ejected(echo, a, for: .seconds(30))])
        #expect(d.ejected(echo) == [a])
    }

    @Test("Istio's default consecutive5xxErrors (5) counts connect failures; 0 with no gateway errors disables detection")
    func defaultsAndDisabled() {
        var d = detector(OutlierDetection(maxEjectionPercent: 100))
        for _ in 0..<4 { #expect(d.failed(echo, a, now: t0).isEmpty) }
        #expect(d.failed(echo, a, now: t0).count == 1)
        var off = detector(OutlierDetection(consecutive5xxErrors: 0, maxEjectionPercent: 100))
        for _ in 0..<20 { #expect(off.failed(echo, a, now: t0).isEmpty) }
    }

    @Test("Ejection lasts baseEjectionTime × times ejected; the sweep restores it on time")
    func ejectionTimeGrows() {
        var d = detector(OutlierDetection(consecutiveGatewayErrors: 1, baseEjectionTime: ConfigDuration(.seconds(2)), maxEjectionPercent: 100))
        #expect(d.failed(echo, a, now: t0) == [.ejected(echo, a, for: .seconds(2))])
        #expect(d.sweep(now: t0 + .seconds(1)).isEmpty)
        #expect(d.sweep(now: t0 + .seconds(2)) == [.restored(echo, a)])
        #expect(d.ejected(echo).isEmpty)
        #expect(d.failed(echo, a, now: t0 + .seconds(3)) == [.ejected(echo, a, for: .seconds(4))])
    }

    @Test("maxEjectionPercent: Istio's default 10 % never ejects one of two endpoints; 50 % ejects one, not both")
    func maxEjectionPercent() {
        var tight = detector(OutlierDetection(consecutiveGatewayErrors: 1))
        #expect(tight.failed(echo, a, now: t0) == [.overflow(echo, a)])
        var half = detector(OutlierDetection(consecutiveGatewayErrors: 1, maxEjectionPercent: 50))
        #expect(half.failed(echo, a, now: t0).count == 1)
        #expect(half.failed(echo, b, now: t0) == [.overflow(echo, b)])
        #expect(half.ejected(echo) == [a])
    }
}
