import Logging
import MeshProxyCore
import NIOCore
import Synchronization

/// What the gossip loop reacts to: a message from a peer, or the clock.
package enum FederationEvent: Sendable {
    /// `senderCluster`: the cluster the sender's verified certificate names.
    case message(GossipMessage, senderCluster: String?)
    case tick
    /// The data path could not connect to this member's gateway.
    case unreachable(MemberID)
    /// The admin API added or removed one of this cluster's endpoints.
    case register(CatalogKey, CatalogRecord)
    case deregister(CatalogKey)
}

/// The shell around `FederationNode`: one loop owns the node (no locks, no re-entrancy), fed by
/// the transport's inbound messages and a timer set to the node's next deadline; it carries out the node's directives and
/// publishes a read-only view for the admin API and the data plane.
package final class GossipService: Sendable {
    package struct MemberView: Sendable, Equatable {
        package var name: String
        package var cluster: String
        package var address: HostPort
        package var state: MemberState
        package var incarnation: UInt64
        /// When its state last changed here; readers turn it into an age when they show it.
        package var lastChange: ContinuousClock.Instant
    }

    /// One endpoint as the discovery API shows it.
    package struct EndpointView: Sendable, Equatable {
        package var cluster: String
        package var service: ServiceKey
        package var address: HostPort
        package var locality: Locality?
        package var labels: [String: String]
        /// The alive gateways of a remote cluster it is reached through; empty for this
        /// cluster's own endpoints, which are dialled directly.
        package var via: [String]
        /// Whether new connections can reach it: local, or announced by an alive gateway.
        package var reachable: Bool
        /// The gateways that announce it and the version of their state that did.
        package var announcedBy: [Announcement]
    }

    package struct Announcement: Sendable, Equatable {
        package var gateway: String
        package var version: UInt64
    }

    package struct View: Sendable {
        package var myself: MemberView
        package var members: [MemberView]
        /// What the data plane routes to: endpoints of this gateway and of alive gateways.
        package var endpointsByCluster: [String: [ServiceKey: [Endpoint]]]
        /// What each service port speaks, as the catalog says.
        package var protocols: [ServiceKey: ServiceProtocol]
        /// Every endpoint in the catalog, reachable or not.
        package var endpoints: [EndpointView]
        /// The membership revision this view was built from.
        package var revision: UInt64
        /// Grows by one each time the view changes; blocking queries wait for it to pass theirs.
        package var index: UInt64
    }

    private let id: MemberID
    private let address: HostPort
    private let cluster: String
    private let settings: MembershipSettings
    private let seeds: [HostPort]
    private let records: [CatalogKey: CatalogRecord]
    private let transport: FederationTransport
    private let events: AsyncStream<FederationEvent>
    private let continuation: AsyncStream<FederationEvent>.Continuation
    private let logger: Logger
    private let onChange: @Sendable (View) -> Void
    private let current: Mutex<View?> = Mutex(nil)
    private let mismatchedSenders: Mutex<Set<MemberID>> = Mutex([])
    private let waiters = IndexWaiters()

    package init(id: MemberID, address: HostPort, cluster: String, settings: MembershipSettings, seeds: [HostPort],
                 records: [CatalogKey: CatalogRecord], tls: GatewayTLS, group: any EventLoopGroup, logger: Logger,
                 onChange: @escaping @Sendable (View) -> Void = { _ in }) throws {
        self.id = id; self.address = address; self.cluster = cluster; self.settings = settings
        self.seeds = seeds; self.records = records; self.logger = logger; self.onChange = onChange
        (events, continuation) = AsyncStream.makeStream(of: FederationEvent.self, bufferingPolicy: .bufferingNewest(10_000))
        transport = try FederationTransport(tls: tls, group: group, inbound: continuation, localAddress: address, logger: logger)
    }

    package var view: View? { current.withLock { $0 } }

    /// The view once its index passes `index`, or the current one after `timeout`.
    package func view(after index: UInt64, timeout: Duration) async -> View? {
        await waiters.wait(beyond: index, timeout: timeout)
        return view
    }
    package var droppedMessages: [String: Int] { transport.droppedMessages }

    /// Publishes or withdraws one of this cluster's endpoints; every cluster hears of it.
    package func register(_ key: CatalogKey, _ record: CatalogRecord) { continuation.yield(.register(key, record)) }
    package func deregister(_ key: CatalogKey) { continuation.yield(.deregister(key)) }

    /// Feeds a data-path connect failure to the failure detector.
    package func reportUnreachable(_ gateway: String) { continuation.yield(.unreachable(MemberID(gateway))) }

    /// The listener hands connections with the federation server name here.
    package func acceptConnection(_ channel: any Channel) throws { try transport.acceptConnection(channel) }

    /// Runs until the task is cancelled; then announces a graceful leave.
    package func run() async {
        var random = SystemRandomNumberGenerator()
        let start = ContinuousClock.now
        // A new generation per process start, so peers drop what an earlier run published.
        let generation = UInt64(Date.timeIntervalSinceReferenceDate * 1000)
        var node = FederationNode(id: id, address: address, cluster: cluster, generation: generation, settings: settings, now: start)
        carryOut(node.publish(records, now: start, random: &random), node: node)
        carryOut(node.join(seeds: seeds, now: start), node: node)
        let continuation = self.continuation
        // One timer, set to the node's next deadline: the loop sleeps until the protocol has
        // something to do instead of waking every few milliseconds to ask. An event that
        // brings the deadline forward (a probe or a suspicion started) re-arms it.
        var timer: (deadline: ContinuousClock.Instant, task: Task<Void, Never>)?
        func arm(_ deadline: ContinuousClock.Instant) {
            if let timer, timer.deadline <= deadline { return }
            timer?.task.cancel()
            timer = (deadline, Task {
                try? await Task.sleep(until: deadline, clock: .continuous)
                if !Task.isCancelled { continuation.yield(.tick) }
            })
        }
        arm(node.nextDeadline)
        defer { timer?.task.cancel() }
        await withTaskCancellationHandler {
            for await event in events {
                let now = ContinuousClock.now
                switch event {
                case .tick:
                    if let fired = timer, fired.deadline <= now { timer = nil }
                    if now >= node.nextDeadline { carryOut(node.tick(now: now, random: &random), node: node) }
                case .message(let message, let senderCluster):
                    carryOut(node.received(message, senderCluster: senderCluster, now: now, random: &random), node: node)
                case .unreachable(let member):
                    node.reportUnreachable(member, now: now)
                case .register(let key, let record):
                    carryOut(node.register(key, record, now: now, random: &random), node: node)
                case .deregister(let key):
                    carryOut(node.deregister(key, now: now, random: &random), node: node)
                }
                arm(node.nextDeadline)
                if Task.isCancelled { break }
            }
        } onCancel: {
            continuation.finish()
        }
        carryOut(node.leave(now: .now), node: node)
    }

    private func carryOut(_ directives: [FederationNode.Directive], node: FederationNode) {
        var changed = false
        for directive in directives {
            switch directive {
            case .send(let message, let to):
                transport.send(message, to: to)
            case .memberChanged(let update, let previous):
                changed = true
                let level: Logger.Level = update.state == .alive ? .info : .warning
                logger.log(level: level, "member \(update.state.rawValue)", metadata: [
                    "member": "\(update.id)", "cluster": "\(update.cluster)", "address": "\(update.address)",
                    "incarnation": "\(update.incarnation)", "previous": "\(previous?.rawValue ?? "-")"])
            case .catalogChanged:
                changed = true
            case .identityMismatch(let sender, let reasons):
                transport.countDrop("identity_mismatch", count: reasons.count)
                // Once per sender: a misconfigured gateway repeats itself every gossip round.
                if mismatchedSenders.withLock({ $0.insert(sender).inserted }) {
                    logger.warning("federation peer speaks for a cluster its certificate does not name; dropped",
                                   metadata: ["sender": "\(sender)", "reason": "\(reasons[0])"])
                }
            }
        }
        // Rebuilt only when something it shows changed, not on every tick: it merges the
        // whole catalog.
        guard changed || current.withLock({ $0?.revision }) != node.membership.revision else { return }
        let view = current.withLock { current in
            let next = makeView(node, index: (current?.index ?? 0) + 1)
            current = next
            return next
        }
        waiters.advance(to: view.index)
        if changed { onChange(view) }
    }

    private func makeView(_ node: FederationNode, index: UInt64) -> View {
        func member(_ m: Member) -> MemberView {
            MemberView(name: m.id.name, cluster: m.cluster, address: m.address, state: m.state,
                       incarnation: m.incarnation, lastChange: m.lastChange)
        }
        let me = node.membership.myself
        let members = node.membership.members.values.sorted { $0.id < $1.id }.map(member)
        let aliveMembers = node.membership.members.values.filter { $0.state == .alive }
        let alive = Set(aliveMembers.map(\.id))
        var gatewaysByCluster: [String: [String]] = [:]
        for member in aliveMembers { gatewaysByCluster[member.cluster, default: []].append(member.id.name) }
        let endpoints = node.catalog.listings.map { listing in
            let local = listing.cluster == me.cluster
            return EndpointView(
                cluster: listing.cluster, service: listing.key.service, address: listing.key.endpoint,
                locality: listing.record.locality, labels: listing.record.labels,
                via: local ? [] : (gatewaysByCluster[listing.cluster] ?? []).sorted(),
                reachable: listing.announcedBy.contains { $0.origin == node.id || alive.contains($0.origin) },
                announcedBy: listing.announcedBy.map { Announcement(gateway: $0.origin.name, version: $0.version) })
        }
        return View(
            myself: MemberView(name: me.id.name, cluster: me.cluster, address: me.address, state: me.state,
                               incarnation: me.incarnation, lastChange: .now),
            members: members,
            endpointsByCluster: node.catalog.endpointsByCluster { $0 == node.id || alive.contains($0) },
            protocols: Dictionary(node.catalog.listings.compactMap { listing in listing.record.protocol.map { (listing.key.service, $0) } },
                                  uniquingKeysWith: { first, _ in first }),
            endpoints: endpoints,
            revision: node.membership.revision, index: index)
    }
}

import Foundation
