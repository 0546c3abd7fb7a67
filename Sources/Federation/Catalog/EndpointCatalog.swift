import MeshProxyCore

/// Every cluster's service endpoints, replicated between gateways. Each gateway is the only
/// writer of its own origin's entries (its cluster's endpoints as it sees them); versions are
/// per origin, deletes are tombstones, and anti-entropy ships exactly what a peer lacks.
///
/// Pure: no clock, no I/O. `now` is passed in where tombstone ages matter.
package struct EndpointCatalog: Sendable {
    package struct OriginLog: Sendable, Equatable {
        package var cluster: String
        package var generation: UInt64
        /// Highest version known without a gap.
        package var watermark: UInt64
        package var entries: [CatalogKey: CatalogEntry]
        /// When each tombstone was written or learned, for garbage collection.
        package var tombstoneSince: [CatalogKey: ContinuousClock.Instant]
        /// Highest version of a tombstone already collected: a peer older than this must get
        /// a snapshot, because the delete it missed is no longer on record.
        package var collectedThrough: UInt64

        var live: [CatalogEntry] { entries.values.filter { !$0.isTombstone } }
    }

    package let myself: MemberID
    package let myCluster: String
    package private(set) var origins: [MemberID: OriginLog] = [:]

    package init(myself: MemberID, cluster: String, generation: UInt64) {
        self.myself = myself
        self.myCluster = cluster
        origins[myself] = OriginLog(cluster: cluster, generation: generation, watermark: 0, entries: [:],
                                    tombstoneSince: [:], collectedThrough: 0)
    }

    package var digest: CatalogDigest {
        origins.mapValues { OriginVersion(generation: $0.generation, version: $0.watermark) }
    }

    // MARK: - Local writes

    /// Makes this gateway's published endpoints exactly `records`: new or changed keys get a
    /// new version, keys no longer present get a tombstone. Returns the delta to push, or nil
    /// when nothing changed.
    package mutating func publish(_ records: [CatalogKey: CatalogRecord], now: ContinuousClock.Instant) -> CatalogDelta? {
        guard var log = origins[myself] else { return nil }
        let since = log.watermark
        var written: [CatalogEntry] = []
        for key in records.keys.sorted() {
            let record = records[key]!
            if let current = log.entries[key], current.record == record { continue }
            log.watermark += 1
            let entry = CatalogEntry(key: key, version: log.watermark, record: record)
            log.entries[key] = entry
            log.tombstoneSince[key] = nil
            written.append(entry)
        }
        for (key, entry) in log.entries.sorted(by: { $0.key < $1.key }) where !entry.isTombstone && records[key] == nil {
            log.watermark += 1
            let tombstone = CatalogEntry(key: key, version: log.watermark, record: nil)
            log.entries[key] = tombstone
            log.tombstoneSince[key] = now
            written.append(tombstone)
        }
        origins[myself] = log
        guard !written.isEmpty else { return nil }
        return CatalogDelta(origin: myself, cluster: myCluster, generation: log.generation, since: since,
                            through: log.watermark, isSnapshot: false, entries: written)
    }

    /// Adds or replaces one local endpoint (the register API).
    package mutating func register(_ key: CatalogKey, _ record: CatalogRecord, now: ContinuousClock.Instant) -> CatalogDelta? {
        var records = localRecords
        records[key] = record
        return publish(records, now: now)
    }

    /// Removes one local endpoint (the deregister API). Nil when it was not published.
    package mutating func deregister(_ key: CatalogKey, now: ContinuousClock.Instant) -> CatalogDelta? {
        var records = localRecords
        guard records.removeValue(forKey: key) != nil else { return nil }
        return publish(records, now: now)
    }

    package var localRecords: [CatalogKey: CatalogRecord] {
        var records: [CatalogKey: CatalogRecord] = [:]
        for entry in origins[myself]?.live ?? [] { records[entry.key] = entry.record }
        return records
    }

    // MARK: - Anti-entropy

    /// What `remote` lacks, at most `budget` entries in all, each origin's lowest versions first.
    package func deltas(for remote: CatalogDigest, budget: Int = .max) -> [CatalogDelta] {
        var left = budget
        var result: [CatalogDelta] = []
        for (origin, log) in origins.sorted(by: { $0.key < $1.key }) where left > 0 {
            let theirs = remote[origin]
            let snapshot = theirs == nil || theirs!.generation < log.generation || theirs!.version < log.collectedThrough
            if !snapshot, let theirs, theirs.generation > log.generation || theirs.version >= log.watermark { continue }
            let since: UInt64 = snapshot ? 0 : theirs!.version
            let candidates = snapshot ? log.live : log.entries.values.filter { $0.version > since }
            guard !candidates.isEmpty || snapshot else { continue }
            let sorted = candidates.sorted { $0.version < $1.version }
            let entries = snapshot ? sorted : Array(sorted.prefix(left))
            left -= entries.count
            let through = entries.count < sorted.count ? entries.last?.version ?? since : log.watermark
            result.append(CatalogDelta(origin: origin, cluster: log.cluster, generation: log.generation, since: since,
                                       through: through, isSnapshot: snapshot, entries: entries))
        }
        return result
    }

    /// Whether `remote` knows something we do not (so we should send it our digest back).
    package func isBehind(_ remote: CatalogDigest) -> Bool {
        remote.contains { origin, theirs in
            guard origin != myself else { return false }
            guard let ours = origins[origin] else { return true }
            return OriginVersion(generation: ours.generation, version: ours.watermark) < theirs
        }
    }

    /// Applies a delta from any peer. Older generations and older versions per key are ignored,
    /// so duplicated, reordered or stale deltas can never resurrect a deleted endpoint. Returns
    /// the keys whose value changed.
    @discardableResult
    package mutating func apply(_ delta: CatalogDelta, now: ContinuousClock.Instant) -> [CatalogKey] {
        // Our own origin is written only by us; a copy of it coming back is old news, except
        // a newer generation, which cannot happen while we run.
        guard delta.origin != myself else { return [] }
        var log: OriginLog
        var changed: [CatalogKey] = []
        if let existing = origins[delta.origin], existing.generation >= delta.generation {
            guard existing.generation == delta.generation else { return [] }
            log = existing
            if delta.isSnapshot {
                // Everything the snapshot does not list is gone at the origin.
                let listed = Set(delta.entries.map(\.key))
                for (key, entry) in log.entries where !listed.contains(key) && !entry.isTombstone {
                    log.entries[key] = CatalogEntry(key: key, version: entry.version, record: nil)
                    log.tombstoneSince[key] = now
                    changed.append(key)
                }
            }
        } else {
            // New origin, or the origin restarted: what we held for it is void.
            changed += origins[delta.origin]?.live.map(\.key) ?? []
            log = OriginLog(cluster: delta.cluster, generation: delta.generation, watermark: 0, entries: [:],
                            tombstoneSince: [:], collectedThrough: 0)
        }
        for entry in delta.entries {
            if let current = log.entries[entry.key], current.version >= entry.version { continue }
            let before = log.entries[entry.key]?.record
            log.entries[entry.key] = entry
            log.tombstoneSince[entry.key] = entry.isTombstone ? now : nil
            if before != entry.record { changed.append(entry.key) }
        }
        if delta.since <= log.watermark || delta.isSnapshot {
            log.watermark = max(log.watermark, delta.through)
        }
        origins[delta.origin] = log
        return changed
    }

    // MARK: - Garbage collection

    /// Forgets tombstones older than `retention`, and whole origins that `isRetired` says are
    /// gone for good (their member left or was reaped). A tombstone must outlive every copy
    /// that could still hold the live value: `retention` should exceed the longest partition
    /// tolerated plus a few anti-entropy periods.
    package mutating func collectGarbage(now: ContinuousClock.Instant, retention: Duration, isRetired: (MemberID) -> Bool = { _ in false }) {
        for origin in Array(origins.keys) {
            if origin != myself, isRetired(origin) {
                origins[origin] = nil
                continue
            }
            guard var log = origins[origin] else { continue }
            for (key, since) in log.tombstoneSince where now - since >= retention {
                log.collectedThrough = max(log.collectedThrough, log.entries[key]?.version ?? 0)
                log.entries[key] = nil
                log.tombstoneSince[key] = nil
            }
            origins[origin] = log
        }
    }

    // MARK: - Views

    /// One endpoint as the discovery API lists it: every origin that announces it, with the
    /// version of that origin's state that did.
    package struct Listing: Sendable, Equatable {
        package var cluster: String
        package var key: CatalogKey
        package var record: CatalogRecord
        package var announcedBy: [(origin: MemberID, version: UInt64)]

        package static func == (a: Listing, b: Listing) -> Bool {
            a.cluster == b.cluster && a.key == b.key && a.record == b.record
                && a.announcedBy.map(\.origin) == b.announcedBy.map(\.origin) && a.announcedBy.map(\.version) == b.announcedBy.map(\.version)
        }
    }

    /// Every live endpoint of every origin, merged per cluster, sorted by cluster and key.
    package var listings: [Listing] {
        var merged: [String: [CatalogKey: Listing]] = [:]
        for (origin, log) in origins.sorted(by: { $0.key < $1.key }) {
            for entry in log.live {
                var listing = merged[log.cluster]?[entry.key]
                    ?? Listing(cluster: log.cluster, key: entry.key, record: entry.record!, announcedBy: [])
                listing.announcedBy.append((origin, entry.version))
                merged[log.cluster, default: [:]][entry.key] = listing
            }
        }
        return merged.sorted { $0.key < $1.key }.flatMap { $0.value.values.sorted { $0.key < $1.key } }
    }

    /// Whether any origin currently publishes `key`.
    package func holds(_ key: CatalogKey) -> Bool {
        origins.values.contains { $0.entries[key].map { !$0.isTombstone } ?? false }
    }

    /// Endpoints per cluster and service, merged over every origin of the cluster (two gateways
    /// of one cluster publishing the same endpoint give it once). `includeOrigin` filters
    /// origins, e.g. to those whose gateway is alive.
    package func endpointsByCluster(includeOrigin: (MemberID) -> Bool = { _ in true }) -> [String: [ServiceKey: [Endpoint]]] {
        var merged: [String: [CatalogKey: CatalogRecord]] = [:]
        for (origin, log) in origins where includeOrigin(origin) {
            for entry in log.live { merged[log.cluster, default: [:]][entry.key] = entry.record }
        }
        return merged.mapValues { records in
            var services: [ServiceKey: [Endpoint]] = [:]
            for (key, record) in records.sorted(by: { $0.key < $1.key }) {
                services[key.service, default: []].append(
                    Endpoint(address: key.endpoint, locality: record.locality, labels: record.labels.isEmpty ? nil : record.labels))
            }
            return services
        }
    }
}
