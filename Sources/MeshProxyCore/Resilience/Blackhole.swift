import Foundation

/// What a drill's blackhole covers: the endpoints of a cluster, a region or a zone (any
/// combination narrows it). The wire form of `POST /v1/faults`.
package struct BlackholeTarget: Sendable, Equatable, Codable {
    package var cluster: String?
    package var region: String?
    package var zone: String?

    package init(cluster: String? = nil, region: String? = nil, zone: String? = nil) {
        self.cluster = cluster; self.region = region; self.zone = zone
    }

    package var isEmpty: Bool { cluster == nil && region == nil && zone == nil }

    /// Whether an endpoint of `cluster` at `locality` is inside it.
    package func covers(cluster: String, locality: Locality?) -> Bool {
        if let name = self.cluster, name != cluster { return false }
        if let region, locality?.region != region { return false }
        if let zone, locality?.zone != zone { return false }
        return !isEmpty
    }

    package var description: String {
        [cluster.map { "cluster \($0)" }, region.map { "region \($0)" }, zone.map { "zone \($0)" }].compactMap { $0 }.joined(separator: ", ")
    }
}

/// A drill's fault on a running deployment: this gateway treats the endpoints of `target` as
/// unreachable until `until`, then by itself returns to normal, so a drill tool that crashes
/// leaves nothing behind.
package struct Blackhole: Sendable, Equatable {
    package var target: BlackholeTarget
    package var until: ContinuousClock.Instant

    package init(_ target: BlackholeTarget, until: ContinuousClock.Instant) {
        self.target = target
        self.until = until
    }

    package func covers(cluster: String, locality: Locality?) -> Bool { target.covers(cluster: cluster, locality: locality) }
}

/// The body of `POST /v1/faults`: `{"blackhole": {"region": "us-east1"}, "duration": "30s"}`.
package struct FaultRequest: Sendable, Equatable, Codable {
    package var blackhole: BlackholeTarget
    package var duration: String

    package init(blackhole: BlackholeTarget, duration: ConfigDuration) {
        self.blackhole = blackhole
        self.duration = duration.description
    }
}

extension FaultRequest {
    /// Why a `POST /v1/faults` body was refused: the text of the 400 answer.
    package struct Refusal: Error, Sendable, Equatable, CustomStringConvertible {
        package var description: String
    }

    /// A body checked: its target names something and its duration is from 1 ms to 1 h.
    package static func validated(json: some Sequence<UInt8>) throws(Refusal) -> (target: BlackholeTarget, duration: ConfigDuration) {
        guard let body = try? JSONDecoder().decode(FaultRequest.self, from: Data(json)) else {
            throw Refusal(description: #"body must be {"blackhole": {"cluster"|"region"|"zone": "…"}, "duration": "30s"}"#)
        }
        guard let duration = ConfigDuration(parsing: body.duration), duration.duration > .zero, duration.duration <= .seconds(3600) else {
            throw Refusal(description: "duration '\(body.duration.prefix(80))' must be from 1ms to 1h")
        }
        guard !body.blackhole.isEmpty else { throw Refusal(description: "blackhole needs a cluster, region or zone") }
        return (body.blackhole, duration)
    }
}
