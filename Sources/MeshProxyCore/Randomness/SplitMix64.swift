import Synchronization

/// A seeded random source (Vigna's SplitMix64, as in swift-argument-parser's `roll` example):
/// the same seed gives the same run, so a simulation or a load-balancing sequence can be replayed.
package struct SplitMix64: RandomNumberGenerator, Sendable {
    /// A generator for one connection or stream: its seed is a process-wide counter (started at
    /// a random point) run through SplitMix64's mix, so seeds are distinct and no connection
    /// pays a system call for one.
    package static func fresh() -> SplitMix64 {
        var mixer = SplitMix64(seed: freshSeedBase ^ freshSeedCounter.add(1, ordering: .relaxed).newValue)
        return SplitMix64(seed: mixer.next())
    }

    private var state: UInt64
    package init(seed: UInt64) { state = seed }
    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private let freshSeedBase = UInt64.random(in: .min ... .max)
private let freshSeedCounter = Atomic<UInt64>(0)
