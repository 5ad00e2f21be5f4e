// Bad input (spec section 9): programmer errors trap with a message naming the call, in
// child processes (exit tests); resource exhaustion answers nil, false or a typed error.

import AllocCore
import AllocTestSupport
import Glibc
import RingAlloc
import Testing

/// A zero-size type.
struct Empty {}

@Suite("Bad input")
struct BadInputTests {
    @Test("a ring of 0, negative or more than the maximum capacity traps")
    func badRingCapacity() async {
        for capacity: Int in [0, -1] {
            let result = await #expect(
                processExitsWith: .failure, observing: [\.standardErrorContent]
            ) { [capacity = capacity as Int] in
                _ = try? RingAllocator(capacity: capacity)
            }
            expectTrap(result, mentioning: "RingAllocator(capacity: \(capacity)): the capacity must be between")
        }
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = try? RingAllocator(capacity: RingAllocator.maximumCapacity + 1)
        }
        expectTrap(
            result,
            mentioning: "RingAllocator(capacity: \(RingAllocator.maximumCapacity + 1)): the capacity must be between")
    }

    @Test("a ring the kernel cannot map throws RingAllocError.outOfMemory(SystemError(.map, ENOMEM))")
    func unmappableRing() {
        #expect(throws: RingAllocError.outOfMemory(SystemError(.map, code: ENOMEM))) {
            _ = try RingAllocator(capacity: RingAllocator.maximumCapacity)
        }
    }

    @Test("a zero capacity traps, for every buffer kind")
    func zeroCapacity() async {
        var result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            _ = ring.fixed(capacity: 0)
        }
        expectTrap(result, mentioning: "fixed(capacity: 0): the capacity must be at least 1")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            _ = ring.extendable(capacity: 0) { _ in }
        }
        expectTrap(result, mentioning: "extendable(capacity: 0)")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            _ = ring.typed(Int.self, capacity: 0)
        }
        expectTrap(result, mentioning: "capacity: 0): the capacity must be at least 1")
    }

    @Test("a capacity bigger than the ring traps, for every buffer kind")
    func capacityBiggerThanTheRing() async {
        var result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            _ = ring.fixed(capacity: ring.largestBufferCapacity + 1)
        }
        expectTrap(result, mentioning: "larger than the ring's largest buffer")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            _ = ring.fixed(capacity: ring.largestBufferCapacity, alignment: 64)
        }
        expectTrap(result, mentioning: "with alignment 64")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            _ = ring.extendable(capacity: Int.max) { _ in }
        }
        expectTrap(result, mentioning: "larger than the ring's largest buffer")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            _ = ring.typed(Int.self, capacity: Int.max / 2)
        }
        expectTrap(result, mentioning: "larger than the ring's largest buffer")
    }

    @Test("the largest buffer fits an empty ring exactly")
    func largestBufferFits() throws {
        var ring = try RingAllocator(capacity: 4096)
        let buffer = try required(ring.fixed(capacity: ring.largestBufferCapacity))
        #expect(ok(buffer.capacity == ring.largestBufferCapacity))
        #expect(ring.statistics().bytesInUse == ring.capacity)
    }

    @Test("an alignment that is not a power of two traps", arguments: [0, 3, 24, -16])
    func badAlignment(alignment: Int) async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            [alignment = alignment as Int] in
            var ring = try! RingAllocator(capacity: 4096)
            _ = ring.fixed(capacity: 8, alignment: alignment)
        }
        expectTrap(result, mentioning: "not a power of two")
    }

    @Test("a typed buffer of a zero-size type traps")
    func zeroSizeType() async {
        var result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            _ = ring.typed(Empty.self, capacity: 4)
        }
        expectTrap(result, mentioning: "zero-size types need no memory")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            _ = ring.typed(Void.self, capacity: 1)
        }
        expectTrap(result, mentioning: "zero-size types need no memory")
    }

    @Test("indices out of range and negative counts trap")
    func badIndices() async {
        var result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.typed(Int.self, capacity: 4)!
            buffer.append(1)
            _ = buffer.remove(at: 1)
        }
        expectTrap(result, mentioning: "remove(at: 1): out of 0..<1")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.typed(Int.self, capacity: 4)!
            buffer.insert(1, at: 1)
        }
        expectTrap(result, mentioning: "insert(at: 1): out of 0...0")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            let buffer = ring.typed(Int.self, capacity: 4)!
            _ = buffer[0]
        }
        expectTrap(result, mentioning: "TypedRingBuffer[0]: out of 0..<0")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.fixed(capacity: 4)!
            buffer.append(repeating: 0, count: -1)
        }
        expectTrap(result, mentioning: "negative count")
    }

    // Spec 2 and 9: a full fixed-capacity buffer traps on append and insert (RigidArray's
    // rule), so that nothing is dropped or cut short behind the caller's back.
    @Test("an append past a fixed buffer's capacity traps, for every kind of append")
    func fullFixedBuffer() async {
        var result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.fixed(capacity: 16)!
            buffer.append(repeating: 0, count: buffer.capacity)
            buffer.append(1)
        }
        expectTrap(result, mentioning: "RingBuffer.append: the buffer is full (capacity 16)")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.fixed(capacity: 16)!
            buffer.append(contentsOf: [UInt8](repeating: 1, count: 17))
        }
        expectTrap(result, mentioning: "17 bytes do not fit in the 16 free")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.fixed(capacity: 16)!
            buffer.append(contentsOf: (0..<17).lazy.map { UInt8($0) })
        }
        expectTrap(result, mentioning: "the buffer is full")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.fixed(capacity: 16)!
            buffer.append(repeating: 0, count: 17)
        }
        expectTrap(result, mentioning: "17 bytes do not fit in the 16 free")
    }

    @Test("an append or insert into a full typed buffer traps; push hands the element back")
    func fullTypedBuffer() async throws {
        var result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.typed(Int.self, capacity: 2)!
            for value in 0..<buffer.capacity { buffer.append(value) }
            buffer.append(0)
        }
        expectTrap(result, mentioning: "TypedRingBuffer.append: the buffer is full")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.typed(Int.self, capacity: 2)!
            for value in 0..<buffer.capacity { buffer.append(value) }
            buffer.insert(0, at: 0)
        }
        expectTrap(result, mentioning: "TypedRingBuffer.insert(at: 0): the buffer is full")
        var ring = try RingAllocator(capacity: 4096)
        var buffer = try required(ring.typed(Int.self, capacity: 2))
        for value in 0..<buffer.capacity { #expect(buffer.push(value) == nil) }
        #expect(buffer.push(-1) == -1 && buffer.count == buffer.capacity)
    }

    // Spec 2 and 9: an output-span append asks for a free capacity; a negative one is a
    // programmer error for every buffer kind.
    @Test("a negative minimumFreeCapacity traps, for every buffer kind")
    func negativeMinimumFreeCapacity() async {
        var result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.fixed(capacity: 16)!
            buffer.append(minimumFreeCapacity: -1) { _ in }
        }
        expectTrap(result, mentioning: "RingBuffer.append(minimumFreeCapacity: -1): negative capacity")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            _ = ring.extendable(capacity: 16) { buffer in _ = buffer.append(minimumFreeCapacity: -1) { _ in } }
        }
        expectTrap(result, mentioning: "ExtendableRingBuffer.append(minimumFreeCapacity: -1): negative capacity")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.typed(Int.self, capacity: 2)!
            buffer.append(minimumFreeCapacity: Int.min) { _ in }
        }
        expectTrap(result, mentioning: "TypedRingBuffer.append(minimumFreeCapacity: \(Int.min)): negative capacity")
    }

    // Spec 2 and 9: a fixed buffer's output-span append that cannot have the capacity it
    // asks for traps before the body runs, as every bulk append of a fixed buffer.
    @Test("an output-span append asking for more than a fixed or typed buffer has free traps")
    func outputSpanPastFreeCapacity() async {
        var result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.fixed(capacity: 16)!
            buffer.append(0)
            buffer.append(minimumFreeCapacity: 16) { _ in print("the body ran") }
        }
        expectTrap(result, mentioning: "RingBuffer.append(minimumFreeCapacity: 16): 16 bytes do not fit in the 15 free")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.typed(Int.self, capacity: 2)!
            buffer.append(minimumFreeCapacity: Int.max) { _ in }
        }
        expectTrap(result, mentioning: "\(Int.max) elements do not fit in the 2 free")
    }

    // Spec 2 and 9: the output span is bounded by the free capacity: the standard library
    // traps on a write past it, and on a body that replaced the span it was given (the
    // way an output span could leave its closure; spec 2, what the compiler checks).
    @Test("a write past the free capacity, or a replaced output span, traps in the standard library")
    func outputSpanMisuse() async {
        var result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.fixed(capacity: 16)!
            buffer.append(minimumFreeCapacity: 0) { output in
                for _ in 0...output.capacity { output.append(1) }
            }
        }
        expectTrap(result, mentioning: "OutputRawSpan capacity overflow")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var numbers = ring.typed(Int.self, capacity: 2)!
            numbers.append(minimumFreeCapacity: 0) { output in
                for value in 0...output.capacity { output.append(value) }
            }
        }
        expectTrap(result, mentioning: "OutputSpan capacity overflow")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.fixed(capacity: 16)!
            var escaped = OutputRawSpan()
            buffer.append(minimumFreeCapacity: 0) { output in
                escaped = output
                output = OutputRawSpan()
            }
            escaped.append(1)
        }
        expectTrap(result, mentioning: "OutputRawSpan identity mismatch")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            _ = ring.extendable(capacity: 16) { buffer in
                _ = buffer.append(minimumFreeCapacity: 0) { output in output = OutputRawSpan() }
            }
        }
        expectTrap(result, mentioning: "OutputRawSpan identity mismatch")
    }

    // Spec 2 and 9: spans cover the bytes written, not the capacity: a read past them
    // traps (the standard library's bounds check), where a buffer pointer would not.
    @Test("a span read past the bytes written traps")
    func spanPastCount() async {
        var result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var buffer = ring.fixed(capacity: 16)!
            buffer.append(1)
            _ = buffer.bytes.unsafeLoad(fromByteOffset: 1, as: UInt8.self)
        }
        expectTrap(result, mentioning: "Byte offset range out of bounds")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var ring = try! RingAllocator(capacity: 4096)
            var numbers = ring.typed(Int.self, capacity: 4)!
            numbers.append(1)
            var span = numbers.mutableSpan
            span[1] = 2
        }
        expectTrap(result, mentioning: "index out of bounds")
    }

    @Test("withCurrentThread inside its own body traps")
    func nestedThreadAllocator() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = RingAllocator.withCurrentThread { _ in
                RingAllocator.withCurrentThread { $0.statistics() }
            }
        }
        expectTrap(result, mentioning: "called from inside its body")
    }

    // Exhaustion is not a programmer error: nil or false, never a trap.
    @Test("an extendable buffer that would outgrow the ring answers false and keeps its bytes")
    func extendableOutgrowsTheRing() throws {
        var ring = try RingAllocator(capacity: 4096)
        let capacity = ring.capacity
        var refused = false
        let buffer = try required(
            ring.extendable(capacity: 100) { buffer in
                _ = buffer.append(repeating: 7, count: 100)
                refused = !buffer.append(repeating: 7, count: capacity)
            })
        #expect(refused)
        #expect(ok(buffer.count == 100))
        #expect(ring.statistics().failures == 1)
    }

    @Test("appends and reservations of absurd sizes answer false without overflowing")
    func absurdGrowth() throws {
        var ring = try RingAllocator(capacity: 4096)
        var answers: [Bool] = []
        let buffer = try required(
            ring.extendable(capacity: 10) { buffer in
                answers.append(buffer.append(repeating: 1, count: 10))
                answers.append(buffer.append(repeating: 1, count: Int.max))
                answers.append(buffer.append(repeating: 1, count: Int.max - 5))
                answers.append(buffer.reserveCapacity(Int.max))
                answers.append(buffer.reserveCapacity(Int.min))
            })
        #expect(answers == [true, false, false, false, true])
        #expect(ok(buffer.count == 10))
        #expect(ring.statistics().failures == 3)
        expectSound(ring, "after absurd growth")
    }
}
