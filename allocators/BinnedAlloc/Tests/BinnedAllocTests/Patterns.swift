// Byte patterns for block contents: every block gets a pattern cut from one table of random
// bytes, so filling and checking a block are one memcpy and one memcmp.

import AllocCore
import Glibc

/// Random bytes that block patterns are cut from: the bytes of a block whose pattern
/// starts at `origin` are `pattern[origin + offset]`, so checking a block is one memcmp.
/// Allocated with the system allocator, never freed (shared by every test).
enum Pattern {
    /// Patterns start at an origin below this.
    static let origins = 1 << 16
    /// The longest range one fill or check may cover.
    static let maximumLength = 1 << 21
    nonisolated(unsafe) static let bytes: UnsafeMutableRawPointer = {
        let count = origins + maximumLength
        let memory = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 16)
        var generator = SplitMix64(seed: 0x5EED_B10C)
        var index = 0
        while index < count {
            memory.storeBytes(of: generator.next(), toByteOffset: index, as: UInt64.self)
            index += 8
        }
        return memory
    }()

    /// The origin of the pattern of a block tagged `tag`.
    static func origin(_ tag: Int) -> Int {
        var mixer = SplitMix64(seed: UInt64(bitPattern: Int64(tag)))
        return Int(mixer.next() % UInt64(origins))
    }

    /// Writes bytes `range` of the pattern `tag` into the block at `block`.
    static func fill(_ block: UnsafeMutableRawPointer, tag: Int, range: Range<Int>) {
        precondition(range.upperBound <= maximumLength)
        guard !range.isEmpty else { return }
        memcpy(block + range.lowerBound, bytes + origin(tag) + range.lowerBound, range.count)
    }

    /// Whether bytes `range` of the block at `block` hold the pattern `tag`.
    static func matches(_ block: UnsafeRawPointer, tag: Int, range: Range<Int>) -> Bool {
        precondition(range.upperBound <= maximumLength)
        guard !range.isEmpty else { return true }
        return memcmp(block + range.lowerBound, bytes + origin(tag) + range.lowerBound, range.count) == 0
    }

    /// The ranges of a block of `byteCount` bytes that tests fill and check: all of it up
    /// to 16 KiB, else the first and last 2 KiB and 1 KiB in the middle.
    static func windows(_ byteCount: Int) -> [Range<Int>] {
        if byteCount <= 16384 { return [0..<byteCount] }
        let middle = byteCount / 2
        return [0..<2048, (middle - 512)..<(middle + 512), (byteCount - 2048)..<byteCount]
    }

    /// The windows of a block of `byteCount` bytes clipped to its first `prefix` bytes.
    static func windows(_ byteCount: Int, clippedTo prefix: Int) -> [Range<Int>] {
        windows(byteCount).compactMap { window in
            let clipped = window.clamped(to: 0..<max(0, min(prefix, byteCount)))
            return clipped.isEmpty ? nil : clipped
        }
    }
}
