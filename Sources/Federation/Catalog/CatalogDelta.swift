import MeshProxyCore

/// One endpoint of one service, as a catalog key.
package struct CatalogKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    package var host: String
    package var port: Int
    package var endpoint: HostPort

    package init(host: String, port: Int, endpoint: HostPort) {
        self.host = host; self.port = port; self.endpoint = endpoint
    }

    package var service: ServiceKey { ServiceKey(host: host, port: port) }
    package var description: String { "\(host):\(port)@\(endpoint)" }
    package static func < (a: CatalogKey, b: CatalogKey) -> Bool {
        (a.host, a.port, a.endpoint.host, a.endpoint.port) < (b.host, b.port, b.endpoint.host, b.endpoint.port)
    }
}

/// What the catalog says about an endpoint besides its address.
package struct CatalogRecord: Hashable, Sendable {
    package var locality: Locality?
    package var labels: [String: String]
    /// What the service port speaks, as its cluster's config says.
    package var `protocol`: ServiceProtocol?
    package init(locality: Locality? = nil, labels: [String: String] = [:], protocol: ServiceProtocol? = nil) {
        self.locality = locality; self.labels = labels; self.protocol = `protocol`
    }
}

/// A versioned write by an origin: a record, or a tombstone (`record == nil`) for a delete.
package struct CatalogEntry: Hashable, Sendable {
    package var key: CatalogKey
    package var version: UInt64
    package var record: CatalogRecord?
    package init(key: CatalogKey, version: UInt64, record: CatalogRecord?) {
        self.key = key; self.version = version; self.record = record
    }
    package var isTombstone: Bool { record == nil }
}

/// Where an origin's log stands: a generation (a new one each time the origin process starts,
/// so a restart with a reset counter is not mistaken for old news) and the highest version.
package struct OriginVersion: Hashable, Sendable, Comparable {
    package var generation: UInt64
    package var version: UInt64
    package init(generation: UInt64, version: UInt64) { self.generation = generation; self.version = version }
    package static func < (a: OriginVersion, b: OriginVersion) -> Bool { (a.generation, a.version) < (b.generation, b.version) }
}

/// Scuttlebutt's summary: per origin, how far this node's copy goes.
package typealias CatalogDigest = [MemberID: OriginVersion]

/// Entries of one origin that a peer lacks, in ascending version order, so a truncated batch is
/// still a valid prefix. `since` is the version the batch continues from: a receiver whose copy
/// is older than `since` applies the entries (each is newer per key) but does not move its
/// watermark past the gap, so anti-entropy fills it later.
package struct CatalogDelta: Hashable, Sendable {
    package var origin: MemberID
    package var cluster: String
    package var generation: UInt64
    package var since: UInt64
    /// The origin version the receiver holds after applying this (when `since` is no newer
    /// than what it had): the last entry's version for a truncated batch, else the origin's.
    package var through: UInt64
    /// A snapshot is the origin's whole live state: it replaces everything the receiver holds
    /// for the origin (new generation, or the receiver is older than the tombstones still kept).
    /// Snapshots are never truncated.
    package var isSnapshot: Bool
    package var entries: [CatalogEntry]

    package init(origin: MemberID, cluster: String, generation: UInt64, since: UInt64, through: UInt64, isSnapshot: Bool, entries: [CatalogEntry]) {
        self.origin = origin; self.cluster = cluster; self.generation = generation; self.since = since; self.through = through
        self.isSnapshot = isSnapshot; self.entries = entries
    }
}
