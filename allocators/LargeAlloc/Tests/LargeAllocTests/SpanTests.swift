// A region's spans and output span (spec section 2, "Spans"): the elements as `Span` and
// `MutableSpan`, and writes into the free capacity through `OutputSpan`: a round trip,
// read(2) straight into a region of bytes, a body that throws halfway, and changes made
// through the mutable span seen by the closure accessors. What the compiler refuses (a
// span that outlives its region) is listed in the spec; the traps are in BadInputTests.

import AllocCore
import AllocTestSupport
import Glibc
import LargeAlloc
import Testing

/// What a body throws after initializing part of the free capacity.
struct Interrupted: Error, Equatable {
    let after: Int
}

@Suite("Region spans and output spans")
struct RegionSpanTests {
    // Spec 2: elements initialized through the output span are the region's; the span
    // covers the whole free capacity, more than the minimum asked.
    @Test("a region written through OutputSpan reads back through span, up to its capacity")
    func roundTrip() throws {
        let allocator = try LargeAllocator(configuration: testConfiguration())
        var region = try allocator.allocate(UInt64.self, capacity: 100)
        region.append(7)
        let seen = region.append(minimumFreeCapacity: 10) { output in
            let capacity = output.capacity
            for value in 0..<50 { output.append(UInt64(value) * 3) }
            return capacity
        }
        let (capacity, count, free) = (region.capacity, region.count, region.freeCapacity)
        #expect(seen == capacity - 1, "the span covers all the free capacity")
        #expect(count == 51 && free == capacity - 51)
        do {
            let span = region.span
            #expect(span.count == 51 && span[0] == 7 && span[50] == 147)
            #expect(span.bytes.byteCount == 51 * 8)
        }
        // More than the minimum, up to the capacity: fills the region.
        region.append(minimumFreeCapacity: 0) { output in
            output.append(repeating: 9, count: output.freeCapacity)
        }
        let (full, last) = (region.isFull, region[capacity - 1])
        #expect(full && last == 9)
        let emptyCapacity = region.append(minimumFreeCapacity: 0) { $0.capacity }
        #expect(emptyCapacity == 0, "a full region hands the body an empty span")
    }

    // Spec 2: the use the API is for: read(2) fills the region in place, no copy.
    @Test("read(2) fills a region of bytes in place through its output span")
    func readIntoRegion() throws {
        let data = (0..<50_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8) }
        var ends: [Int32] = [0, 0]
        try #require(pipe(&ends) == 0)
        defer { close(ends[0]) }
        // A pipe holds 64 KiB before a write blocks: 50,000 bytes go in at once.
        let written = data.withUnsafeBytes { write(ends[1], $0.baseAddress, $0.count) }
        close(ends[1])
        #expect(written == data.count)
        let allocator = try LargeAllocator(configuration: testConfiguration())
        var region = try allocator.allocate(UInt8.self, capacity: 64 << 10)
        while true {
            let result = region.append(minimumFreeCapacity: 1) { output in
                output.withUnsafeMutableBufferPointer { buffer, initializedCount in
                    let result = read(ends[0], buffer.baseAddress! + initializedCount, buffer.count - initializedCount)
                    if result > 0 { initializedCount += result }
                    return result
                }
            }
            guard result > 0 else {
                #expect(result == 0, "end of file, not an error")
                break
            }
        }
        let same = region.withUnsafeBufferPointer { Array($0) } == data
        #expect(same)
        let fromSpan = region.span.withUnsafeBufferPointer { Array($0) } == data
        #expect(fromSpan)
    }

    // Spec 2: elements initialized before a throw stay in the region, and are
    // deinitialized with it, once each.
    @Test("a body that throws after initializing part of the capacity leaves exactly that prefix")
    func partialWriteThenThrow() throws {
        let tally = DeinitTally(capacity: 10)
        let allocator = try LargeAllocator(configuration: testConfiguration())
        do {
            var region = try allocator.allocate(TrackedObject.self, capacity: 8)
            region.append(TrackedObject(0, tally))
            #expect(throws: Interrupted(after: 4)) {
                try region.append(minimumFreeCapacity: 8) { output throws(Interrupted) in
                    for id in 1...5 { output.append(TrackedObject(id, tally)) }
                    _ = output.removeLast()
                    throw Interrupted(after: output.count)
                }
            }
            #expect(tally.died == 1 && tally.count(5) == 1, "only the removed element died")
            let ids = region.withUnsafeBufferPointer { $0.map(\.id) }
            #expect(ids == [0, 1, 2, 3, 4])
            // The region goes on from there.
            region.append(minimumFreeCapacity: 1) { $0.append(TrackedObject(6, tally)) }
            let count = region.count
            #expect(count == 6)
        }
        #expect(tally.died == 7, "the removed one, and the six the region held")
        let wrong = tally.wrongCounts(0..<7)
        #expect(wrong.isEmpty, "\(wrong)")
    }

    // Spec 2: a mutable span changes elements in place; the closure accessors and the
    // subscript see it, and the other way round.
    @Test("changes through mutableSpan are seen by the closure accessors and the subscript")
    func mutableSpanIsSeen() throws {
        let allocator = try LargeAllocator(configuration: testConfiguration())
        var region = try allocator.allocate(Int.self, capacity: 10)
        for value in 0..<5 { region.append(value) }
        do {
            var span = region.mutableSpan
            span.swapAt(0, 4)
            span[2] = 20
        }
        let elements = region.withUnsafeBufferPointer { Array($0) }
        #expect(elements == [4, 1, 20, 3, 0])
        let first = region[0]
        #expect(first == 4)
        region.withUnsafeMutableBufferPointer { $0[3] = 30 }
        region[1] = 10
        let seen = (region.span[1], region.span[3])
        #expect(seen == (10, 30))
    }
}
