// Spans and output spans (spec section 2, "Spans"): the bytes written as `RawSpan` and
// `MutableRawSpan`, a typed buffer's elements as `Span` and `MutableSpan`, and writes into
// the free capacity through `OutputRawSpan` and `OutputSpan`: round trips, read(2) straight
// into a buffer, a body that throws halfway, extendable growth before the body, and changes
// made through a mutable span seen by the closure accessors. What the compiler refuses (a
// span that outlives its buffer) is listed in the spec; the traps are in BadInputTests.

import AllocCore
import AllocTestSupport
import Glibc
import RingAlloc
import Testing

/// What a body throws after writing part of the free capacity.
struct Interrupted: Error, Equatable {
    let after: Int
}

/// A pipe holding `bytes`, its write end closed: read(2) on the read end gives `bytes`,
/// then the end of the file. The caller closes the read end.
func pipeHolding(_ bytes: [UInt8]) throws -> Int32 {
    var ends: [Int32] = [0, 0]
    guard pipe(&ends) == 0 else { throw MissingValue() }
    // A pipe holds 64 KiB before a write blocks: the tests stay well below.
    let written = bytes.withUnsafeBytes { write(ends[1], $0.baseAddress, $0.count) }
    close(ends[1])
    #expect(written == bytes.count)
    return ends[0]
}

/// One read(2) into `output`'s free bytes: what read answered.
func readOnce(_ descriptor: Int32, into output: inout OutputRawSpan) -> Int {
    output.withUnsafeMutableBytes { bytes, initializedCount in
        let result = read(descriptor, bytes.baseAddress! + initializedCount, bytes.count - initializedCount)
        if result > 0 { initializedCount += result }
        return result
    }
}

@Suite("Spans and output spans")
struct SpanTests {
    // Spec 2: bytes written through the output span are the buffer's, read back through
    // `bytes`; the span covers the whole free capacity, more than the minimum asked.
    @Test("a fixed buffer written through OutputRawSpan reads back through bytes, up to its capacity")
    func fixedRoundTrip() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        var buffer = try required(ring.fixed(capacity: 100))
        buffer.append(contentsOf: patternArray(tag: 5, count: 10))
        let freeSeen = buffer.append(minimumFreeCapacity: 20) { output in
            let free = output.capacity
            appendPattern(&output, tag: 5, count: 30, offset: 10)
            return free
        }
        #expect(ok(freeSeen == buffer.capacity - 10), "the span covers all the free capacity")
        #expect(ok(buffer.count == 40 && buffer.bytes.byteCount == 40))
        #expect(ok(firstPatternMismatch(buffer.bytes, tag: 5) == nil))
        // More than the minimum, up to the capacity: fills the buffer.
        buffer.append(minimumFreeCapacity: 0) { output in
            appendPattern(&output, tag: 5, count: output.freeCapacity, offset: 40)
        }
        #expect(ok(buffer.isFull && buffer.bytes.byteCount == buffer.capacity))
        #expect(ok(firstPatternMismatch(buffer.bytes, tag: 5) == nil))
        // A full buffer hands the body an empty span; asking for nothing is no error.
        let emptyCapacity = buffer.append(minimumFreeCapacity: 0) { $0.capacity }
        #expect(emptyCapacity == 0)
        // The same bytes through every closure accessor.
        #expect(ok(buffer.withUnsafeBytes { firstPatternMismatch($0, tag: 5) } == nil))
        #expect(ok(buffer.withBytes { firstPatternMismatch($0, tag: 5) } == nil))
        expectSound(ring, "after output-span writes")
    }

    // Spec 2: the use the API is for: read(2) fills the buffer in place, no copy.
    @Test("read(2) fills a fixed buffer in place through its output span")
    func readIntoFixed() throws {
        let data = patternArray(tag: 21, count: 3000)
        let descriptor = try pipeHolding(data)
        defer { close(descriptor) }
        var ring = try RingAllocator(capacity: 16 * 1024)
        var buffer = try required(ring.fixed(capacity: 4096))
        var total = 0
        while true {
            let result = buffer.append(minimumFreeCapacity: 1) { readOnce(descriptor, into: &$0) }
            guard result > 0 else {
                #expect(result == 0, "end of file, not an error")
                break
            }
            total += result
        }
        #expect(ok(total == 3000 && buffer.count == 3000))
        #expect(ok(firstPatternMismatch(buffer.bytes, tag: 21) == nil))
    }

    // Spec 2: the initialized prefix is committed when the body throws, nothing past it.
    @Test("a body that throws after writing part of the capacity leaves exactly that prefix")
    func fixedPartialWriteThenThrow() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        var buffer = try required(ring.fixed(capacity: 64))
        buffer.append(contentsOf: patternArray(tag: 8, count: 4))
        #expect(throws: Interrupted(after: 13)) {
            try buffer.append(minimumFreeCapacity: 32) { output throws(Interrupted) in
                appendPattern(&output, tag: 8, count: 15, offset: 4)
                _ = output.removeLast()
                _ = output.removeLast()
                throw Interrupted(after: output.byteCount)
            }
        }
        #expect(ok(buffer.count == 17), "4 before, 13 initialized when the body threw")
        #expect(ok(firstPatternMismatch(buffer.bytes, tag: 8) == nil))
        // The buffer goes on from there.
        buffer.append(minimumFreeCapacity: 1) { appendPattern(&$0, tag: 8, count: 1, offset: 17) }
        #expect(ok(buffer.count == 18 && firstPatternMismatch(buffer.bytes, tag: 8) == nil))
    }

    // Spec 2: typed elements initialized before a throw stay, and are deinitialised with
    // the buffer, once each; none is lost or dropped twice.
    @Test("a typed body that throws halfway keeps the elements it initialized, ~Copyable ones included")
    func typedPartialWriteThenThrow() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        let tally = DeinitTally(capacity: 10)
        do {
            var buffer = try required(ring.typed(TrackedToken.self, capacity: 8))
            buffer.append(TrackedToken(0, tally))
            #expect(throws: Interrupted(after: 3)) {
                try buffer.append(minimumFreeCapacity: 5) { output throws(Interrupted) in
                    for id in 1...4 { output.append(TrackedToken(id, tally)) }
                    _ = output.removeLast()
                    throw Interrupted(after: output.count)
                }
            }
            #expect(tally.died == 1 && tally.count(4) == 1, "only the removed element died")
            let ids = buffer.span.count == 4 ? (0..<4).map { buffer.span[$0].id } : []
            #expect(ids == [0, 1, 2, 3])
        }
        #expect(tally.died == 5)
        let wrong = tally.wrongCounts(0..<5)
        #expect(wrong.isEmpty, "\(wrong)")
    }

    @Test("a typed buffer written through OutputSpan reads back through span and its bytes")
    func typedRoundTrip() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        var numbers = try required(ring.typed(Int.self, capacity: 16))
        numbers.append(-1)
        let appended = numbers.append(minimumFreeCapacity: 3) { output in
            for value in 0..<10 { output.append(value * value) }
            return output.count
        }
        #expect(appended == 10)
        let span = numbers.span
        #expect(span.count == 11 && span[0] == -1 && span[10] == 81)
        #expect(span.bytes.byteCount == 11 * MemoryLayout<Int>.stride)
        #expect(span.bytes.unsafeLoad(fromByteOffset: 3 * MemoryLayout<Int>.stride, as: Int.self) == 4)
        numbers.withUnsafeBufferPointer { #expect(Array($0) == [-1] + (0..<10).map { $0 * $0 }) }
    }

    // Spec 2: a mutable span changes the bytes in place; the closure accessors see it.
    @Test("changes through mutableBytes and mutableSpan are seen by the closure accessors")
    func mutableSpansAreSeen() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        var buffer = try required(ring.fixed(capacity: 32))
        buffer.append(repeating: 0, count: 20)
        do {
            var bytes = buffer.mutableBytes
            for index in bytes.byteOffsets {
                bytes.storeBytes(of: patternByte(tag: 2, index: index), toByteOffset: index, as: UInt8.self)
            }
        }
        #expect(ok(buffer.withUnsafeBytes { firstPatternMismatch($0, tag: 2) } == nil))
        #expect(ok(buffer.withBytes { firstPatternMismatch($0, tag: 2) } == nil))
        // And the other way round: a change through a closure, seen through the span.
        buffer.withMutableBytes { $0.storeBytes(of: 0xEE, toByteOffset: 19, as: UInt8.self) }
        #expect(ok(buffer.bytes.unsafeLoad(fromByteOffset: 19, as: UInt8.self) == 0xEE))

        var numbers = try required(ring.typed(Int.self, capacity: 8))
        for value in 0..<5 { numbers.append(value) }
        do {
            var span = numbers.mutableSpan
            span.swapAt(0, 4)
            span[2] = 20
        }
        numbers.withUnsafeBufferPointer { #expect(Array($0) == [4, 1, 20, 3, 0]) }
        numbers.withSpan { #expect($0[2] == 20) }
        #expect(numbers[0] == 4)

        let tally = DeinitTally(capacity: 4)
        var tokens = try required(ring.typed(TrackedToken.self, capacity: 4))
        for id in 0..<3 { tokens.append(TrackedToken(id, tally)) }
        do {
            var span = tokens.mutableSpan
            span.swapAt(0, 2)
        }
        let ids = tokens.withSpan { span in (span[0].id, span[1].id, span[2].id) }
        #expect(ids == (2, 1, 0) && tally.died == 0, "swapped in place, none dropped")
    }

    // Spec 2 and 3: an extendable buffer grows before the body runs, so the body sees the
    // capacity it asked for; the growth aims at four times the capacity, in place.
    @Test("an extendable buffer grows before the body when asked for more than it has")
    func extendableGrowsBeforeTheBody() throws {
        var ring = try RingAllocator(capacity: 64 * 1024)
        var capacityBefore = 0
        var seen: (free: Int, capacity: Int, bufferCapacity: Int)?
        var start: UInt = 0
        let buffer = try required(
            ring.extendable(capacity: 16) { buffer in
                _ = buffer.append(contentsOf: patternArray(tag: 6, count: 10))
                capacityBefore = buffer.capacity
                start = UInt(bitPattern: buffer.withUnsafeBytes { $0.baseAddress })
                let answer = buffer.append(minimumFreeCapacity: 1000) { output in
                    let capacity = output.capacity
                    appendPattern(&output, tag: 6, count: 1000, offset: 10)
                    return (output.freeCapacity, capacity)
                }
                if let answer { seen = (answer.0, answer.1, buffer.capacity) }
                #expect(ok(buffer.count == 1010 && buffer.freeCapacity == buffer.capacity - 1010))
                #expect(ok(firstPatternMismatch(buffer.bytes, tag: 6) == nil))
                #expect(UInt(bitPattern: buffer.withUnsafeBytes { $0.baseAddress }) == start, "grew in place")
            })
        #expect(capacityBefore < 1010)
        let (free, capacity, bufferCapacity) = try #require(seen)
        #expect(capacity >= 1000 && capacity == bufferCapacity - 10, "the span covers the grown free capacity")
        #expect(free == capacity - 1000)
        #expect(ok(buffer.count == 1010 && firstPatternMismatch(buffer.bytes, tag: 6) == nil))
        expectSound(ring, "after growth before the body")
    }

    // Spec 3: a growth that meets the tail moves the buffer to the head first; the body
    // then writes into the moved buffer, after the bytes the move copied.
    @Test("an extendable buffer moves to the head before the body when it meets the tail")
    func extendableMovesBeforeTheBody() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        var first = ring.fixed(capacity: 8000)
        let headAddress = address(of: first!)
        let middle = try required(ring.fixed(capacity: ring.capacity - 8016 - 3000))
        first = nil
        let buffer = try required(
            ring.extendable(capacity: 100) { buffer in
                _ = buffer.append(contentsOf: patternArray(tag: 12, count: 2500))
                let written = buffer.append(minimumFreeCapacity: 3000) { output in
                    appendPattern(&output, tag: 12, count: 3000, offset: 2500)
                    return output.byteCount
                }
                #expect(written == 3000)
            })
        #expect(address(of: buffer) == headAddress, "the buffer moved to the head")
        #expect(ok(buffer.count == 5500 && firstPatternMismatch(buffer.bytes, tag: 12) == nil))
        #expect(ring.statistics().moves == 1)
        expectSound(ring, "after a move before the body")
        _ = middle
    }

    // Spec 2 and 9: exhaustion is nil, not a trap; the body does not run; bytes stay.
    @Test("an extendable buffer that cannot grow answers nil and does not run the body")
    func extendableCannotGrow() throws {
        var ring = try RingAllocator(capacity: 4096)
        let capacity = ring.capacity
        var ran = false
        var refusal: Int? = -1
        let buffer = try required(
            ring.extendable(capacity: 100) { buffer in
                _ = buffer.append(contentsOf: patternArray(tag: 3, count: 100))
                refusal = buffer.append(minimumFreeCapacity: capacity) { output in
                    ran = true
                    return output.capacity
                }
                // Asking for what is there already needs no growth.
                let free = buffer.freeCapacity
                let again = buffer.append(minimumFreeCapacity: free) { $0.capacity }
                #expect(again == free)
                // Absurd sizes answer nil without overflowing.
                #expect(buffer.append(minimumFreeCapacity: Int.max) { _ in ran = true } == nil)
            })
        #expect(refusal == nil && !ran)
        #expect(ok(buffer.count == 100 && firstPatternMismatch(buffer.bytes, tag: 3) == nil))
        #expect(ring.statistics().failures == 2)
        expectSound(ring, "after refused growth")
    }

    // Spec 2: read(2) until the end of the file into an extendable buffer, 4 KiB free at
    // least before each call (the example of the API's documentation).
    @Test("read(2) until the end of the file grows an extendable buffer in place of a copy")
    func readIntoExtendable() throws {
        let data = patternArray(tag: 17, count: 20_000)
        let descriptor = try pipeHolding(data)
        defer { close(descriptor) }
        var ring = try RingAllocator(capacity: 64 * 1024)
        var calls = 0
        let contents = try required(
            ring.extendable(capacity: 4096) { buffer in
                var more = true
                while more {
                    calls += 1
                    more = buffer.append(minimumFreeCapacity: 4096) { readOnce(descriptor, into: &$0) > 0 } ?? false
                }
            })
        #expect(ok(contents.count == 20_000 && firstPatternMismatch(contents.bytes, tag: 17) == nil))
        #expect(calls >= 2)
        expectSound(ring, "after reading a pipe")
    }

    // Spec 2: a throw inside an extendable buffer's output span keeps the prefix in the
    // buffer; the extendable body goes on or throws as it likes.
    @Test("an extendable body's output span that throws halfway keeps the prefix")
    func extendablePartialWriteThenThrow() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        let buffer = try required(
            ring.extendable(capacity: 16) { buffer in
                do throws(Interrupted) {
                    _ = try buffer.append(minimumFreeCapacity: 500) { output throws(Interrupted) in
                        appendPattern(&output, tag: 14, count: 300)
                        throw Interrupted(after: 300)
                    }
                } catch {
                    #expect(error == Interrupted(after: 300))
                }
                #expect(ok(buffer.count == 300))
            })
        #expect(ok(buffer.count == 300 && firstPatternMismatch(buffer.bytes, tag: 14) == nil))
        expectSound(ring, "after a throwing output span")
    }

    @Test("extendable and shared buffers show their bytes as spans")
    func extendableAndSharedSpans() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        let buffer = try required(
            ring.extendable(capacity: 16) { buffer in
                _ = buffer.append(contentsOf: patternArray(tag: 1, count: 40))
                #expect(ok(buffer.bytes.byteCount == 40))
                do {
                    var bytes = buffer.mutableBytes
                    bytes.storeBytes(of: 0, toByteOffset: 39, as: UInt8.self)
                }
                #expect(ok(buffer.withUnsafeBytes { $0[39] } == 0))
                buffer.withUnsafeMutableBytes { $0[39] = patternByte(tag: 1, index: 39) }
            })
        let shared = buffer.freeze()
        let clone = shared.clone()
        #expect(ok(firstPatternMismatch(clone.bytes, tag: 1) == nil && clone.bytes.byteCount == 40))
        #expect(ok(shared.bytes.isIdentical(to: clone.bytes)), "clones show the same bytes")
    }
}
