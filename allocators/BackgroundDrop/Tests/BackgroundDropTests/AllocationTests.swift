// Spec section 2 and 7: a drop of a value that fits a slot allocates nothing. Proof by
// glibc's arena statistics in a child process (no other test's allocations there):
// while the background thread is held, 12,000 values (class references, strings and
// 32-byte existentials) sit in the queue; had each drop boxed its value, the bytes in
// use would have grown by at least 12,000 × 16. The same
// child then drops 4,000 values too wide for a slot, which are boxed, and sees the
// growth: the measurement can tell the difference.

import AllocCore
import AllocTestSupport
import BackgroundDrop
import CMallocStatistics
import Glibc
import Testing

/// Bytes glibc's arenas hand out (in chunks in use, including mmapped chunks).
func mallocBytesInUse() -> Int { Int(malloc_statistics_bytes_in_use()) }

@Suite struct AllocationTests {
    @Test func dropsOfInlineValuesDoNotAllocate() async {
        await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let count = 4000
            let tally = DeinitTally(capacity: 2 * count + 1)
            let gate = Gate()
            let dropper = try BackgroundDropper(threads: 1, capacity: 16384)
            dropper.drop(Blocker(gate, TrackedObject(2 * count, tally)))
            precondition(gate.waitForEntries(1), "the background thread never took the blocker")
            var narrow = (0..<count).map { TrackedObject($0, tally) }
            var wide = (count..<2 * count).map { Wide(tracked: TrackedObject($0, tally)) }
            var strings = (0..<count).map { "a string too long to be stored inline \($0)" }
            var existentials: [any Sendable] = (0..<count).map { ($0, $0 + 1) }  // 32-byte `any Sendable`
            let before = mallocBytesInUse()
            while let value = narrow.popLast() { dropper.drop(consume value) }
            while let value = strings.popLast() { dropper.drop(consume value) }
            // `as any Sendable`: the existential itself travels, not the pair inside it
            // (which the compiler would open it to, spec 2, Ownership).
            while let value = existentials.popLast() { dropper.drop(consume value as any Sendable) }
            let afterNarrow = mallocBytesInUse()
            while let value = wide.popLast() { dropper.drop(consume value) }
            let afterWide = mallocBytesInUse()
            gate.open()
            dropper.flush()
            let narrowGrowth = afterNarrow - before
            let wideGrowth = afterWide - afterNarrow
            precondition(narrowGrowth < 1024, "inline drops allocated: \(narrowGrowth) bytes for \(3 * count) drops")
            precondition(wideGrowth >= count * 64, "boxed drops went unseen: \(wideGrowth) bytes")
            precondition(tally.wrongCounts(0..<2 * count + 1) == "", tally.wrongCounts(0..<2 * count + 1))
        }
    }
}
