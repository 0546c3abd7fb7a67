import Foundation
import Histogram
import MeshProxyCore
import Synchronization

/// How one request ended.
enum LoadOutcome: Sendable {
    case success(cluster: String?, locality: String?)
    /// connect, tls, reset, status, timeout, protocol
    case failure(String)
}

/// Counts and latencies of a load run, per second of intended send time and in total.
/// Latency is in microseconds (HdrHistogram, 3 significant digits, up to an hour).
final class LoadRecorder: Sendable {
    struct Second {
        var numbers: DrillSecond
        var latencies = LoadRecorder.histogram()
    }

    struct Totals {
        var sent = 0
        var succeeded = 0
        var failed: [String: Int] = [:]
        var responseBytes = 0
        var latencies = LoadRecorder.histogram()
        /// Kept-alive connections that could not be opened (or re-opened), by kind: not
        /// requests, but why fewer were sent.
        var connectionFailures: [String: Int] = [:]
    }

    private let seconds = Mutex<[Int: Second]>([:])
    private let totals = Mutex(Totals())

    static func histogram() -> Histogram<UInt64> {
        Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    }

    func sent(second: Int) {
        seconds.withLock { $0[second, default: Second(numbers: DrillSecond(second: second))].numbers.sent += 1 }
        totals.withLock { $0.sent += 1 }
    }

    func connectionFailed(_ kind: String) {
        totals.withLock { $0.connectionFailures[kind, default: 0] += 1 }
    }

    func ended(second: Int, outcome: LoadOutcome, latencyMicroseconds: Int64, responseBytes: Int) {
        let latency = UInt64(max(0, latencyMicroseconds))
        seconds.withLock { seconds in
            // Mutated in place: a copy of the entry would copy its histogram's counts.
            if seconds[second] == nil { seconds[second] = Second(numbers: DrillSecond(second: second)) }
            switch outcome {
            case .success(let cluster, let locality):
                seconds[second]!.numbers.succeeded += 1
                if let cluster { seconds[second]!.numbers.byCluster[cluster, default: 0] += 1 }
                if let locality { seconds[second]!.numbers.byLocality[locality.isEmpty ? "unknown" : locality, default: 0] += 1 }
                _ = seconds[second]!.latencies.record(latency)
            case .failure(let kind):
                seconds[second]!.numbers.failed[kind, default: 0] += 1
            }
        }
        totals.withLock { totals in
            totals.responseBytes += responseBytes
            switch outcome {
            case .success:
                totals.succeeded += 1
                _ = totals.latencies.record(latency)
            case .failure(let kind):
                totals.failed[kind, default: 0] += 1
            }
        }
    }

    /// The numbers of one second (nil until something was due in it).
    func snapshot(second: Int) -> DrillSecond? {
        seconds.withLock { seconds in
            guard let entry = seconds[second] else { return nil }
            var numbers = entry.numbers
            if entry.latencies.totalCount > 0 {
                numbers.latencyP50Ms = Double(entry.latencies.valueAtPercentile(50)) / 1000
                numbers.latencyP99Ms = Double(entry.latencies.valueAtPercentile(99)) / 1000
                numbers.latencyMaxMs = Double(entry.latencies.max) / 1000
            }
            return numbers
        }
    }

    var total: Totals { totals.withLock { $0 } }
}
