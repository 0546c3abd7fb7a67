import Testing
@testable import MeshProxyCore

@Suite("Peer gateways unreachable from here (back-off)")
struct PeerReachabilityTests {
    let start = ContinuousClock.now

    @Test("Three failures in a row mark a peer for 5 s; failures in flight meanwhile add nothing; each new mark doubles the wait up to 60 s")
    func backOff() {
        var peers = PeerReachability()
        #expect(peers.failed("west-gw", now: start) == nil)
        #expect(peers.failed("west-gw", now: start) == nil)
        #expect(peers.failed("west-gw", now: start) == .seconds(5))
        #expect(peers.unreachable(at: start + .seconds(4)) == ["west-gw"])
        #expect(peers.failed("west-gw", now: start + .seconds(1)) == nil)
        #expect(peers.unreachable(at: start + .seconds(5)) == [])
        var now = start + .seconds(5)
        var waits: [Duration] = []
        for _ in 0..<6 {
            if let wait = peers.failed("west-gw", now: now) { waits.append(wait); now = now + wait }
        }
        #expect(waits == [.seconds(10), .seconds(20), .seconds(40), .seconds(60), .seconds(60), .seconds(60)])
    }

    @Test("One success clears the mark and the count")
    func successClears() {
        var peers = PeerReachability()
        for _ in 0..<3 { _ = peers.failed("west-gw", now: start) }
        let cleared = peers.succeeded("west-gw")
        #expect(cleared)
        #expect(peers.unreachable(at: start) == [])
        let again = peers.succeeded("west-gw")
        #expect(!again)
        #expect(peers.failed("west-gw", now: start) == nil)
        #expect(peers.failed("west-gw", now: start) == nil)
        #expect(peers.failed("west-gw", now: start) == .seconds(5))
    }
}
