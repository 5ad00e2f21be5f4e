// Checks on a ring: its soundness (spec section 4), a buffer's address, the waits counter
// read from another thread, and a pass-through for Bools that `#expect` cannot take apart.

import AllocCore
import RingAlloc
import Testing

/// Checks that the ring is sound (spec section 4), and records what is wrong.
func expectSound(
    _ ring: borrowing RingAllocator, _ context: @autoclosure () -> String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    if let violation = ring.integrityViolation() {
        Issue.record("\(context()): \(violation)", sourceLocation: sourceLocation)
    }
}

/// The address of a buffer's first byte.
func address(of buffer: borrowing RingBuffer) -> UInt {
    UInt(bitPattern: buffer.withUnsafeBytes { $0.baseAddress })
}

/// Passes a Bool through: `#expect(ok(buffer.append(x)))`, since `#expect` cannot take a
/// method call on a ~Copyable value apart.
func ok(_ value: Bool) -> Bool { value }

/// The ring's `waits` counter, readable from any thread: how a test learns that the owner
/// has started waiting for a release (it is inside the allocation call, so it can signal
/// nothing itself), and only then releases, instead of guessing with a sleep.
///
/// The ring's statistics are the owner's to read (spec section 8); this reads the one
/// counter with an atomic load at its pinned place (spec section 3: the header is the
/// 256 bytes before the head, its `Counters<RingCounter>` block at 128, one word per
/// counter in the order of section 8's table, `waits` the seventh). The owner writes it
/// with relaxed atomic stores, so the read is no data race. ``matches(_:)`` checks the
/// place against `statistics()`.
struct WaitsProbe: @unchecked Sendable {
    let word: AtomicWord

    /// The probe of `ring`, made on the ring's thread.
    init(_ ring: borrowing RingAllocator) {
        let head = ring.segments()[0].start
        let header = UnsafeMutableRawPointer(bitPattern: head - 256)!
        word = AtomicWord(at: header + 128 + 6 * 8)
    }

    /// Waits counted so far.
    var waits: Int { word.load(ordering: .relaxed) }

    /// Whether the probe reads what `statistics()` reports (on the ring's thread).
    func matches(_ ring: borrowing RingAllocator) -> Bool { waits == ring.statistics().waits }
}
