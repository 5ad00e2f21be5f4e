// RingAlloc's suite: every column of every row does the same work (same checksum, same
// operations), and the ring sized by `ringCapacity` is never full, warm-up included.

import AllocCore
import RingAlloc
import Testing

@testable import Workloads

@Suite("RingAlloc suite")
struct RingAllocSuiteTests {
    @Test("the baselines, RingAlloc and its output spans agree on every row", arguments: RingAllocSuite.rows.indices)
    func columnsAgree(rowIndex: Int) throws {
        let row = RingAllocSuite.rows[rowIndex]
        let sizes = RingAllocSuite.SizeTable(maximumBytes: row.maximumBytes)
        defer { sizes.deallocate() }
        var ring = try RingAllocator(capacity: RingAllocSuite.ringCapacity(row, sizes))
        // Enough iterations to wrap the ring a few times, fewer for the big rows.
        let operations = row.maximumBytes >= 65536 ? 2 * row.maximumHeld + 50 : 5_000
        // Twice each: the second run reuses the ring, as the timed run does; with the appends,
        // then through output spans.
        for outputSpan in [false, false, true, true] {
            let arrayFixed = RingAllocSuite.arrayFixed(row, sizes, operations: operations)
            let ringFixed = RingAllocSuite.ringFixed(
                row, sizes, &ring, outputSpan: outputSpan, operations: operations)
            #expect(arrayFixed.checksum == ringFixed.checksum && arrayFixed.checksum != 0)
            #expect(arrayFixed.operations == ringFixed.operations)
            let arrayChunked = RingAllocSuite.arrayChunked(row, sizes, operations: operations)
            let ringExtendable = RingAllocSuite.ringExtendable(
                row, sizes, &ring, outputSpan: outputSpan, operations: operations)
            #expect(arrayChunked.checksum == ringExtendable.checksum && arrayChunked.checksum != 0)
        }
        let statistics = ring.statistics()
        #expect(statistics.failures == 0 && statistics.liveBuffers == 0 && statistics.wraps > 0, "\(statistics)")
        #expect(ring.integrityViolation() == nil)
    }
}
