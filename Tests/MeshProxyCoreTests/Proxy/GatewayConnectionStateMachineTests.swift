import NIOCore
import Testing
@testable import MeshProxyCore

@Suite("Connection decisions from handshake to glue (state machine)")
struct GatewayConnectionStateMachineTests {
    func target(_ address: String, priority: Int = 0) -> PlannedTarget {
        PlannedTarget(target: .local(Endpoint(address: HostPort(parsing: address)!)), locality: "r/z", priority: priority)
    }

    @Test("A failed connect moves to the next target; when all fail the client is closed with UF,URX and every reason")
    func retriesThenGivesUp() {
        var machine = GatewayConnectionStateMachine()
        let targets = [target("10.0.0.1:80"), target("10.0.0.2:80"), target("10.0.0.3:80", priority: 1)]
        #expect(machine.handshakeCompleted() == .plan)
        #expect(machine.planned(targets, retry: .connectAttempts(3), noTarget: "none") == .dial(targets[0]))
        #expect(machine.upstreamFailed(.connectFailure, reason: "connection refused") == .dial(targets[1]))
        #expect(machine.upstreamFailed(.connectFailure, reason: "connect timeout") == .dial(targets[2]))
        #expect(machine.upstreamFailed(.connectFailure, reason: "connection refused") == .closeDownstream(
            flags: [.upstreamConnectionFailure, .upstreamRetryLimitExceeded],
            detail: "all 3 upstream attempt(s) failed: 10.0.0.1:80 (connection refused); 10.0.0.2:80 (connect timeout); 10.0.0.3:80 (connection refused)",
            upstream: targets[2]))
        // Late answers after giving up change nothing.
        #expect(machine.upstreamFailed(.connectFailure, reason: "late") == .none)
        #expect(machine.upstreamConnected() == .closeUpstream)
    }

    @Test("One target and one attempt: UF without URX; no target at all: UH with the reason")
    func singleAttemptAndNoTarget() {
        var one = GatewayConnectionStateMachine()
        _ = one.handshakeCompleted()
        #expect(one.planned([target("10.0.0.1:80")], retry: .connectAttempts(3), noTarget: "none") == .dial(target("10.0.0.1:80")))
        #expect(one.upstreamFailed(.connectFailure, reason: "refused") ==
                .closeDownstream(flags: [.upstreamConnectionFailure], detail: "all 1 upstream attempt(s) failed: 10.0.0.1:80 (refused)",
                                 upstream: target("10.0.0.1:80")))

        var none = GatewayConnectionStateMachine()
        _ = none.handshakeCompleted()
        #expect(none.planned([], retry: .connectAttempts(3), noTarget: "no healthy endpoint") ==
                .closeDownstream(flags: [.noHealthyUpstream], detail: "no healthy endpoint"))
    }

    @Test("A condition the policy does not retry ends at once")
    func notRetriedCondition() {
        var machine = GatewayConnectionStateMachine()
        _ = machine.handshakeCompleted()
        _ = machine.planned([target("10.0.0.1:80"), target("10.0.0.2:80")], retry: .connectAttempts(2), noTarget: "none")
        #expect(machine.upstreamFailed(.reset(requestSent: true), reason: "reset") ==
                .closeDownstream(flags: [.upstreamConnectionFailure], detail: "all 1 upstream attempt(s) failed: 10.0.0.1:80 (reset)",
                                 upstream: target("10.0.0.1:80")))
    }

    @Test("While dialling: bytes are held, reads paused and an end of input kept; all are replayed at the glue, in order")
    func holdsWhileDialling() {
        var machine = GatewayConnectionStateMachine()
        #expect(machine.channelRead(ByteBuffer(string: "early")) == .none)  // with the handshake's last flight
        _ = machine.handshakeCompleted()
        _ = machine.planned([target("10.0.0.1:80")], retry: .connectAttempts(1), noTarget: "none")
        #expect(machine.channelRead(ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n")) == .none)
        #expect(machine.readRequested() == .none)
        #expect(machine.inputClosed() == .none)
        #expect(machine.upstreamConnected() == .glue(target("10.0.0.1:80"),
            replay: [ByteBuffer(string: "early"), ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n")], inputEnded: true, readPending: true))
        // Glued: everything passes through.
        #expect(machine.channelRead(ByteBuffer(string: "more")) == .forward)
        #expect(machine.readRequested() == .forward)
        #expect(machine.inputClosed() == .forward)
    }

    @Test("A client that leaves while dialling is DC, and the upstream that answers later is closed")
    func clientLeavesWhileDialling() {
        var machine = GatewayConnectionStateMachine()
        _ = machine.handshakeCompleted()
        _ = machine.planned([target("10.0.0.1:80")], retry: .connectAttempts(1), noTarget: "none")
        #expect(machine.channelInactive() == [.downstreamTermination])
        #expect(machine.upstreamConnected() == .closeUpstream)
        #expect(machine.channelRead(ByteBuffer(string: "x")) == .none)
    }

    @Test("A refused connection (a limit) closes without dialling; an end before the handshake passes on")
    func refusedAndEarlyEnd() {
        var machine = GatewayConnectionStateMachine()
        #expect(machine.inputClosed() == .forward)
        _ = machine.handshakeCompleted()
        #expect(machine.refused(flags: [.upstreamOverflow], detail: "maxConnections") == .closeDownstream(flags: [.upstreamOverflow], detail: "maxConnections"))
        #expect(machine.channelInactive() == [])
    }
}
