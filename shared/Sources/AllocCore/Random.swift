// A seeded random number generator for randomized tests and benchmarks.

/// SplitMix64: a tiny, fast generator whose whole state is one word, so a seed printed
/// with a failing model-based test replays it exactly. Not for anything that needs
/// unpredictability.
///
/// ```swift
/// var generator = SplitMix64(seed: 42)
/// let size = Int.random(in: 0...4096, using: &generator)
/// ```
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The state; the next value is a function of it alone.
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
