/// A drill's fault on a running deployment (`POST /v1/faults`): this gateway treats the
/// endpoints of a cluster, region or zone as unreachable until `until`, then by itself returns
/// to normal, so a drill tool that crashes leaves nothing behind.
package struct Blackhole: Sendable, Equatable, Codable {
    package var cluster: String?
    package var region: String?
    package var zone: String?
    package var until: ContinuousClock.Instant

    package init(cluster: String? = nil, region: String? = nil, zone: String? = nil, until: ContinuousClock.Instant) {
        self.cluster = cluster; self.region = region; self.zone = zone; self.until = until
    }

    /// Whether an endpoint of `cluster` at `locality` is inside the blackhole.
    package func covers(cluster: String, locality: Locality?) -> Bool {
        if let name = self.cluster, name != cluster { return false }
        if let region, locality?.region != region { return false }
        if let zone, locality?.zone != zone { return false }
        return self.cluster != nil || region != nil || zone != nil
    }

    package var target: String {
        [cluster.map { "cluster \($0)" }, region.map { "region \($0)" }, zone.map { "zone \($0)" }].compactMap { $0 }.joined(separator: ", ")
    }

    enum CodingKeys: String, CodingKey { case cluster, region, zone }
    package init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        cluster = try c.decodeIfPresent(String.self, forKey: .cluster)
        region = try c.decodeIfPresent(String.self, forKey: .region)
        zone = try c.decodeIfPresent(String.self, forKey: .zone)
        until = .now
    }
    package func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(cluster, forKey: .cluster)
        try c.encodeIfPresent(region, forKey: .region)
        try c.encodeIfPresent(zone, forKey: .zone)
    }
}
