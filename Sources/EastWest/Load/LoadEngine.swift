import Foundation
import MeshProxyCore
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// The one load engine: `eastwest load` and every drill drive traffic through it.
///
/// Each thread runs a `LoadShard` on its own event loop with its share of the connections and
/// of the rate; nothing is shared between shards but the recorder. Open loop: request i of a
/// shard is due at start + i / rate and waits for a free connection (or stream) if none is
/// idle; its latency runs from when it was due, so a stall is not hidden (coordinated
/// omission). Closed loop: each connection sends its next request when the last is answered.
final class LoadEngine: Sendable {
    let profile: LoadProfile
    let recorder = LoadRecorder()
    private let context: NIOSSLContext?
    private let request: ByteBuffer
    private let shards = NIOLockedValueBox<[NIOLoopBound<LoadShard>]>([])

    init(profile: LoadProfile) throws {
        self.profile = profile
        self.context = try profile.sslContext()
        self.request = profile.requestBytes()
    }

    /// Runs from `start` for the profile's duration (or its idle hold and burst); returns when
    /// every request has ended. Cancelling the task stops sending new requests.
    func run(start: ContinuousClock.Instant) async {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, profile.threads))
        let startDeadline = NIODeadline.now() + TimeAmount(start - ContinuousClock.now)
        var finished: [EventLoopFuture<Void>] = []
        for (index, loop) in group.makeIterator().enumerated() {
            let share = Self.share(of: profile, shard: index, of: profile.threads)
            let promise = loop.makePromise(of: Void.self)
            let context = self.context, request = self.request, recorder = self.recorder
            let bound = try? await loop.submit {
                let shard = LoadShard(profile: share, request: request, context: context, recorder: recorder,
                                      loop: loop, start: startDeadline, finished: promise)
                shard.begin()
                return NIOLoopBound(shard, eventLoop: loop)
            }.get()
            if let bound { shards.withLockedValue { $0.append(bound) } }
            finished.append(promise.futureResult)
        }
        await withTaskCancellationHandler {
            for future in finished { try? await future.get() }
        } onCancel: {
            self.stop()
        }
        try? await group.shutdownGracefully()
    }

    /// Stops sending; requests in flight finish or time out.
    func stop() {
        for shard in shards.withLockedValue({ $0 }) {
            shard.eventLoop.execute { shard.value.stop() }
        }
    }

    func snapshot(second: Int) -> DrillSecond? { recorder.snapshot(second: second) }

    /// Shard `index`'s part of the connections, rate and idle connections (the remainder goes
    /// to the first shards).
    static func share(of profile: LoadProfile, shard index: Int, of count: Int) -> LoadProfile {
        func part(_ total: Int) -> Int { total / count + (index < total % count ? 1 : 0) }
        var share = profile
        share.connections = max(1, part(profile.connections))
        share.rate = profile.rate.map(part)
        share.idleConnections = profile.idleConnections.map(part)
        return share
    }
}

/// Load on one event loop. Loop-confined: every method runs on `loop`.
final class LoadShard {
    private struct InFlight {
        var due: NIODeadline
        var second: Int
        var lane: (any LoadLane)?
    }

    let profile: LoadProfile
    let request: ByteBuffer
    /// An HTTP/2 request body, when the profile has a payload.
    let payload: ByteBuffer?
    let context: NIOSSLContext?
    let recorder: LoadRecorder
    let loop: any EventLoop
    private let start: NIODeadline
    private var end: NIODeadline
    private let finished: EventLoopPromise<Void>

    private var issued = 0
    private var pending = CircularBuffer<(due: NIODeadline, second: Int)>()
    /// One entry per free request slot (a kept-alive HTTP/1.1 connection has one, an HTTP/2
    /// connection one per stream); entries of closed lanes are skipped.
    private var freeSlots = CircularBuffer<any LoadLane>()
    private var lanes: [ObjectIdentifier: any LoadLane] = [:]
    private var inFlight: [Int: InFlight] = [:]
    private var nextID = 0
    private var stopping = false
    private var done = false
    private var ticker: RepeatedTask?
    private var ticks = 0
    /// Idle-then-burst mode: connections still being opened, and whether the burst went out.
    private var idleToOpen = 0
    private var burstSent = false

    init(profile: LoadProfile, request: ByteBuffer, context: NIOSSLContext?, recorder: LoadRecorder,
         loop: any EventLoop, start: NIODeadline, finished: EventLoopPromise<Void>) {
        self.profile = profile
        self.request = request
        self.payload = profile.payload > 0 ? LoadProfile.filler(profile.payload) : nil
        self.context = context
        self.recorder = recorder
        self.loop = loop
        self.start = start
        self.end = start + TimeAmount(profile.duration)
        self.finished = finished
    }

    private var isOpenLoop: Bool { profile.rate != nil }
    private var keepsConnections: Bool { !profile.newConnectionPerRequest && profile.wireProtocol != .tcp }

    func begin() {
        let bound = NIOLoopBound(self, eventLoop: loop)
        if let idle = profile.idleConnections {
            idleToOpen = idle
            end = .distantFuture
            openIdleConnections()
        } else if keepsConnections {
            // Connections are opened before the clock starts: a keep-alive run measures requests.
            for _ in 0..<profile.connections { openLane() }
        }
        ticker = loop.scheduleRepeatedTask(initialDelay: max(.zero, start - .now()), delay: .milliseconds(1)) { _ in
            bound.value.tick()
        }
    }

    func stop() {
        guard !stopping else { return }
        end = min(end, .now())
        tick()
    }

    // MARK: - Lanes report here

    func laneReady(_ lane: any LoadLane, slots: Int) {
        if profile.idleConnections != nil {
            lanes[ObjectIdentifier(lane)] = lane
            idleToOpen -= 1
            openIdleConnections()
            return
        }
        for _ in 0..<slots { freeSlots.append(lane) }
        dispatch()
    }

    func laneFailedToOpen(error kind: String) {
        recorder.connectionFailed(kind)
        if profile.idleConnections != nil {
            idleToOpen -= 1
            recorder.sent(second: 0)
            recorder.ended(second: 0, outcome: .failure(kind), latencyMicroseconds: 0, responseBytes: 0)
            openIdleConnections()
            return
        }
        reopenLater()
    }

    func laneClosed(_ lane: any LoadLane) {
        let wasHeld = lanes.removeValue(forKey: ObjectIdentifier(lane)) != nil
        if profile.idleConnections != nil, !burstSent, wasHeld {
            // Dropped while idle (by the proxy's idle timeout, say): the burst cannot use it.
            recorder.sent(second: 0)
            recorder.ended(second: 0, outcome: .failure("closed-while-idle"), latencyMicroseconds: 0, responseBytes: 0)
        }
        if keepsConnections, profile.idleConnections == nil { reopenLater() }
        finishIfDone()
    }

    /// A request ended. Late answers to requests already counted as timeouts are dropped.
    func ended(id: Int, outcome: LoadOutcome, responseBytes: Int) {
        guard let request = inFlight.removeValue(forKey: id) else { return }
        let latency = NIODeadline.now() - request.due
        recorder.ended(second: request.second, outcome: outcome, latencyMicroseconds: latency.nanoseconds / 1000,
                       responseBytes: responseBytes)
        if !keepsConnections && profile.idleConnections == nil { dispatch() }
        finishIfDone()
    }

    // MARK: - Scheduling

    private func tick() {
        let now = NIODeadline.now()
        ticks += 1
        if let rate = profile.rate, !stopping, now >= start {
            // Everything due up to now, and never past the end: rate × duration in all.
            let elapsed = Double((min(now, end) - start).nanoseconds) / 1e9
            let due = min(Int(elapsed * Double(rate)) + (now >= end ? 0 : 1), Int((Double(rate) * profile.duration.seconds).rounded()))
            while issued < due {
                let offset = TimeAmount.nanoseconds(Int64(Double(issued) / Double(rate) * 1e9))
                let second = Int(offset.nanoseconds / 1_000_000_000)
                pending.append((start + offset, second))
                recorder.sent(second: second)
                issued += 1
            }
        }
        if now >= end { stopping = true }
        if profile.idleConnections != nil, !burstSent, idleToOpen == 0, now >= idleBurstAt {
            burst()
        }
        if ticks % 20 == 0 || stopping { expire(now: now) }
        dispatch()
        finishIfDone()
    }

    /// Gives every due request a free slot, or opens a connection for it.
    private func dispatch() {
        guard profile.idleConnections == nil else { return }
        if keepsConnections {
            while let lane = nextFreeSlot() {
                if isOpenLoop {
                    guard let next = pending.popFirst() else { freeSlots.prepend(lane); return }
                    send(on: lane, due: next.due, second: next.second, countSent: false)
                } else {
                    guard !stopping, NIODeadline.now() >= start else { freeSlots.prepend(lane); return }
                    send(on: lane, due: .now(), second: secondOf(.now()), countSent: true)
                }
            }
        } else {
            while inFlight.count < profile.connections {
                if isOpenLoop {
                    guard let next = pending.popFirst() else { return }
                    openOneShot(due: next.due, second: next.second, countSent: false)
                } else {
                    guard !stopping, NIODeadline.now() >= start else { return }
                    openOneShot(due: .now(), second: secondOf(.now()), countSent: true)
                }
            }
        }
    }

    private func nextFreeSlot() -> (any LoadLane)? {
        while let lane = freeSlots.popFirst() {
            if lane.isOpen { return lane }
        }
        return nil
    }

    private func secondOf(_ instant: NIODeadline) -> Int { max(0, Int((instant - start).nanoseconds / 1_000_000_000)) }

    private func register(due: NIODeadline, second: Int, lane: (any LoadLane)?, countSent: Bool) -> Int {
        if countSent { recorder.sent(second: second) }
        let id = nextID
        nextID += 1
        inFlight[id] = InFlight(due: due, second: second, lane: lane)
        return id
    }

    private func send(on lane: any LoadLane, due: NIODeadline, second: Int, countSent: Bool) {
        let id = register(due: due, second: second, lane: lane, countSent: countSent)
        lane.send(id: id)
    }

    private func openOneShot(due: NIODeadline, second: Int, countSent: Bool) {
        let id = register(due: due, second: second, lane: nil, countSent: countSent)
        let lane = makeLane(oneShot: id)
        inFlight[id]?.lane = lane
    }

    private func openLane() {
        let lane = makeLane(oneShot: nil)
        lanes[ObjectIdentifier(lane)] = lane
    }

    private func makeLane(oneShot: Int?) -> any LoadLane {
        switch profile.wireProtocol {
        case .http2 where oneShot == nil: HTTP2LoadConnection.open(shard: self)
        default: HTTP1LoadConnection.open(shard: self, oneShot: oneShot)
        }
    }

    private func reopenLater() {
        guard !stopping else { return }
        let bound = NIOLoopBound(self, eventLoop: loop)
        // A refused connect is retried after a breath, not in a tight loop.
        loop.scheduleTask(in: .milliseconds(50)) {
            let shard = bound.value
            if !shard.stopping { shard.openLane() }
        }
    }

    /// Requests past their timeout end as timeouts; the lane drops them (an HTTP/1.1
    /// connection with an unanswered request cannot be reused, so it closes).
    private func expire(now: NIODeadline) {
        let timeout = TimeAmount(profile.timeout)
        while let first = pending.first, now - first.due >= timeout {
            _ = pending.popFirst()
            recorder.ended(second: first.second, outcome: .failure("timeout"), latencyMicroseconds: timeout.nanoseconds / 1000, responseBytes: 0)
        }
        let late = inFlight.filter { now - $0.value.due >= timeout }
        for (id, request) in late {
            inFlight[id] = nil
            recorder.ended(second: request.second, outcome: .failure("timeout"), latencyMicroseconds: timeout.nanoseconds / 1000, responseBytes: 0)
            request.lane?.abandon(id: id)
        }
    }

    private func finishIfDone() {
        guard stopping, !done, pending.isEmpty, inFlight.isEmpty else { return }
        if profile.idleConnections != nil, !burstSent { return }
        done = true
        ticker?.cancel()
        for lane in lanes.values { lane.close() }
        lanes = [:]
        finished.succeed()
    }

    // MARK: - Idle connections, then a burst

    private var idleBurstAt = NIODeadline.distantFuture
    private var idleOpening = 0

    /// Opens the idle connections a few hundred at a time, as a fleet of clients would
    /// arrive, rather than as one SYN flood into a listen backlog.
    private func openIdleConnections() {
        guard let total = profile.idleConnections else { return }
        let opened = total - idleToOpen
        while idleOpening - opened < 256 && idleOpening < total {
            idleOpening += 1
            _ = makeLane(oneShot: nil)
        }
        if idleToOpen == 0, idleBurstAt == .distantFuture {
            idleBurstAt = .now() + TimeAmount(profile.idleFor)
        }
    }

    private func burst() {
        burstSent = true
        let now = NIODeadline.now()
        for lane in lanes.values {
            send(on: lane, due: now, second: 0, countSent: true)
        }
        stopping = true
    }
}

/// A connection (or stream carrier) the shard sends requests on.
protocol LoadLane: AnyObject {
    var isOpen: Bool { get }
    func send(id: Int)
    /// The request timed out: stop waiting for it.
    func abandon(id: Int)
    func close()
}

extension LoadShard {
    /// The bootstrap every lane dials with: TLS (SNI and verification by the server name) when
    /// the profile has certificates.
    func bootstrap(_ extra: @escaping @Sendable (any Channel) throws -> Void) -> ClientBootstrap {
        let context = self.context, name = profile.serverName
        return ClientBootstrap(group: loop)
            .connectTimeout(TimeAmount(profile.timeout))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.allowRemoteHalfClosure, value: profile.wireProtocol == .tcp)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context {
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: name))
                    }
                    try extra(channel)
                }
            }
    }

    func connect(_ bootstrap: ClientBootstrap) -> EventLoopFuture<any Channel> {
        let target = profile.target
        if let address = try? SocketAddress(ipAddress: target.host, port: target.port) {
            return bootstrap.connect(to: address)
        }
        return bootstrap.connect(host: target.host, port: target.port)
    }

    /// How a connect failed, for the report: a timeout (NIO's connect timeout, on any of the
    /// addresses tried) or any other failure.
    static func connectFailureKind(_ error: any Error) -> String {
        UpstreamConnector.isTimeout(error) ? "timeout" : "connect"
    }
}
