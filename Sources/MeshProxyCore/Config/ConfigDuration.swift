/// A duration written the way Istio and Envoy configs write them: `10s`, `1.5s`, `250ms`,
/// `1h`, `2m`, `100us` (protobuf Duration's JSON form, plus the units Go's time.ParseDuration
/// accepts, which users paste from Istio docs).
package struct ConfigDuration: Hashable, Sendable, Codable, CustomStringConvertible {
    package var duration: Duration
    private var text: String

    package init(_ duration: Duration) {
        self.duration = duration
        let ms = duration.milliseconds
        self.text = ms % 1000 == 0 ? "\(ms / 1000)s" : "\(ms)ms"
    }

    package init?(parsing text: String) {
        let units: [(String, Double)] = [("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9), ("h", 3600), ("m", 60), ("s", 1)]
        guard let (suffix, scale) = units.first(where: { text.hasSuffix($0.0) }),
              let value = Double(text.dropLast(suffix.count)), value >= 0, value.isFinite,
              // Beyond Int64 nanoseconds (about 292 years) the conversion would trap, as Go's
              // ParseDuration refuses it (found by fuzzing the admin API's fault bodies).
              (value * scale * 1e9).rounded() < 9.2e18 else { return nil }
        self.duration = .nanoseconds(Int64((value * scale * 1e9).rounded()))
        self.text = text
    }

    package var description: String { text }

    package init(from decoder: any Decoder) throws {
        self = try decoder.parsedString(ConfigDuration.init(parsing:)) { "'\($0)' is not a duration such as 500ms, 10s, 5m or 1h" }
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(text)
    }
}

extension Duration {
    /// Whole milliseconds, as Envoy's `*-ms` headers and config write them.
    package var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }

    /// The duration in seconds as a floating-point number, for reports and rates.
    package var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
