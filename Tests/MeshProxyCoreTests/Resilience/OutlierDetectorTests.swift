import Testing
@testable import MeshProxyCore

@Suite("Outlier detection (Envoy semantics, L4 and L7)")
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
        #expect(d.failed(echo, a, now: t0) == [.ejected(echo, a, for: .seconds(30), reason: .consecutiveGatewayFailure)])
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
        #expect(d.failed(echo, a, now: t0) == [.ejected(echo, a, for: .seconds(2), reason: .consecutiveGatewayFailure)])
        #expect(d.sweep(now: t0 + .seconds(1)).isEmpty)
        #expect(d.sweep(now: t0 + .seconds(2)) == [.restored(echo, a)])
        #expect(d.ejected(echo).isEmpty)
        #expect(d.failed(echo, a, now: t0 + .seconds(3)) == [.ejected(echo, a, for: .seconds(4), reason: .consecutiveGatewayFailure)])
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

    @Test("L7: 5xx statuses feed consecutive5xxErrors, only 502/503/504 consecutiveGatewayErrors; a 500 breaks a gateway run, a 2xx or 4xx breaks both")
    func httpStatuses() {
        var d = detector(OutlierDetection(consecutive5xxErrors: 3, consecutiveGatewayErrors: 2, maxEjectionPercent: 100))
        #expect(d.record(.response(503), echo, a, now: t0).isEmpty)
        #expect(d.record(.response(500), echo, a, now: t0).isEmpty)  // gateway run broken, 5xx run at 2
        #expect(d.record(.response(502), echo, a, now: t0) == [.ejected(echo, a, for: .seconds(30), reason: .consecutive5xx)])
        #expect(d.record(.response(503), echo, b, now: t0).isEmpty)
        #expect(d.record(.response(404), echo, b, now: t0).isEmpty)  // any non-5xx ends both runs
        #expect(d.record(.response(503), echo, b, now: t0).isEmpty)
        #expect(d.record(.response(504), echo, b, now: t0) == [.ejected(echo, b, for: .seconds(30), reason: .consecutiveGatewayFailure)])
        // Istio's default (consecutive5xxErrors 5, no gateway errors): five 500s eject.
        var plain = detector(OutlierDetection(maxEjectionPercent: 100))
        for _ in 0..<4 { #expect(plain.record(.response(500), echo, a, now: t0).isEmpty) }
        #expect(plain.record(.response(500), echo, a, now: t0).count == 1)
    }

    @Test("L7 local-origin events: without split they count as 503 (504 for a timeout); with splitExternalLocalOriginErrors only toward consecutiveLocalOriginFailures, and an HTTP connect success ends that run")
    func localOrigin() {
        var shared = detector(OutlierDetection(consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, maxEjectionPercent: 100))
        #expect(shared.record(.localOriginTimeout, echo, a, now: t0).isEmpty)
        #expect(shared.record(.connected, echo, a, now: t0).isEmpty)  // no verdict: the run goes on
        #expect(shared.record(.response(503), echo, a, now: t0).count == 1)
        var split = detector(OutlierDetection(consecutive5xxErrors: 2, maxEjectionPercent: 100, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 2))
        #expect(split.record(.localOriginFailure, echo, a, now: t0).isEmpty)
        #expect(split.record(.response(503), echo, a, now: t0).isEmpty)  // external: its own run
        #expect(split.record(.connected, echo, a, now: t0).isEmpty)  // ends the local-origin run
        #expect(split.record(.localOriginFailure, echo, a, now: t0).isEmpty)
        #expect(split.record(.localOriginFailure, echo, a, now: t0) == [.ejected(echo, a, for: .seconds(30), reason: .consecutiveLocalOriginFailure)])
    }
}
