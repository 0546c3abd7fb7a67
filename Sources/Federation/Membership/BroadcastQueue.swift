/// Membership updates waiting to be piggybacked, least-sent first (memberlist's
/// TransmitLimitedQueue). A newer claim about a member replaces the queued one, so the queue
/// holds at most one update per member. Updates are kept in buckets by send count, each bucket
/// sorted by member name, so choosing the next updates never sorts the whole queue.
struct BroadcastQueue: Sendable {
    private var entries: [MemberID: (update: MemberUpdate, transmits: Int)] = [:]
    private var buckets: [[MemberID]] = []

    var isEmpty: Bool { entries.isEmpty }
    var count: Int { entries.count }

    mutating func enqueue(_ update: MemberUpdate) {
        remove(update.id)
        entries[update.id] = (update, 0)
        insert(update.id, into: 0)
    }

    mutating func remove(_ id: MemberID) {
        guard let old = entries.removeValue(forKey: id) else { return }
        let index = position(of: id, in: buckets[old.transmits])
        buckets[old.transmits].remove(at: index)
    }

    /// Up to `limit` updates, least-sent first; each counts one send and leaves the queue after
    /// `maxTransmits` sends.
    mutating func take(_ limit: Int, maxTransmits: Int) -> [MemberUpdate] {
        var chosen: [(MemberID, Int)] = []
        outer: for (transmits, bucket) in buckets.enumerated() {
            for id in bucket {
                chosen.append((id, transmits))
                if chosen.count == limit { break outer }
            }
        }
        var updates: [MemberUpdate] = []
        for (id, transmits) in chosen {
            guard let entry = entries[id] else { continue }
            updates.append(entry.update)
            buckets[transmits].remove(at: position(of: id, in: buckets[transmits]))
            if transmits + 1 >= maxTransmits {
                entries[id] = nil
            } else {
                entries[id] = (entry.update, transmits + 1)
                insert(id, into: transmits + 1)
            }
        }
        return updates
    }

    private mutating func insert(_ id: MemberID, into bucket: Int) {
        while buckets.count <= bucket { buckets.append([]) }
        buckets[bucket].insert(id, at: position(of: id, in: buckets[bucket]))
    }

    /// Binary search: the index of `id`, or where it would go.
    private func position(of id: MemberID, in bucket: [MemberID]) -> Int {
        var low = 0, high = bucket.count
        while low < high {
            let mid = (low + high) / 2
            if bucket[mid] < id { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
