// Every row of the spec's bad-input table (section 9): nil or a typed error for requests
// no memory can meet, a precondition failure with a message for programmer errors
// (checked in child processes), a debug trap for handles used after a reset.

import AllocCore
import AllocTestSupport
import Testing

@testable import ArenaAlloc

@Suite("Bad input")
struct BadInputTests {
    @Test("sizes that overflow or that malloc refuses answer nil, and leave the arena usable (spec 9)")
    func impossibleSizes() throws {
        var arena = Arena()
        _ = try required(arena.allocate(byteCount: 10))
        for byteCount in [Int.max, Int.max - 4095, 1 << 62, 1 << 46] {
            let block = arena.allocate(byteCount: byteCount)
            #expect(block == nil, "allocate(byteCount: \(byteCount))")
            let aligned = arena.allocate(byteCount: byteCount, alignment: 4096)
            #expect(aligned == nil, "allocate(byteCount: \(byteCount), alignment: 4096)")
        }
        let typed = arena.allocate(of: UInt64.self, capacity: Int.max / 4)
        #expect(typed == nil, "count × stride overflow")
        let shared = SharedArena()
        #expect(shared.allocate(byteCount: Int.max) == nil && shared.allocate(byteCount: 1 << 46) == nil)
        #expect(shared.allocate(of: UInt64.self, capacity: Int.max / 2) == nil)
        var local = shared.makeLocalArena()
        let localBlock = local.allocate(byteCount: 1 << 46)
        #expect(localBlock == nil)
        #expect(arena.statistics().chunks == 1, "a failed request added a chunk")
        _ = try required(arena.allocate(byteCount: 10))
    }

    @Test("a scope throws ArenaAllocError.outOfMemory when memory is exhausted (spec 9)")
    func scopeThrowsOutOfMemory() {
        var arena = Arena()
        #expect(throws: ArenaAllocError.outOfMemory) {
            try arena.withScope { scope throws(ArenaAllocError) in
                _ = try scope.allocate(of: UInt8.self, capacity: 1 << 46)
            }
        }
        #expect(arena.statistics().resets == 1)
    }

    @Test("zero-byte requests succeed and take no bytes (spec 9)")
    func zeroBytes() throws {
        var arena = Arena()
        let first = try required(arena.allocate(byteCount: 0))
        let second = try required(arena.allocate(byteCount: 0))
        #expect(first == second && arena.bytesInUse == 0)
        let empty = try required(arena.collect(EmptyCollection<Int>()))
        #expect(empty.isEmpty)
    }

    @Test("raw typed memory takes zero-size types and capacity 0, as UnsafeMutablePointer.allocate does (spec 9)")
    func zeroSizeTypesAndZeroCapacity() throws {
        struct Empty {}
        var arena = Arena()
        let nothing = try required(arena.allocate(of: Int.self, capacity: 0))
        #expect(nothing.isEmpty && arena.bytesInUse == 0)
        let empties = try required(arena.allocate(of: Empty.self, capacity: 4))
        #expect(empties.count == 4 && arena.bytesInUse == 4 * MemoryLayout<Empty>.stride)
        empties.initialize(repeating: Empty())
        let shared = SharedArena()
        #expect(try required(shared.allocate(of: Empty.self, capacity: 3)).count == 3)
        #expect(try required(shared.allocate(of: Int.self, capacity: 0)).isEmpty)
        var local = shared.makeLocalArena()
        #expect(try required(local.allocate(of: Empty.self, capacity: 2)).count == 2)
        #expect(try required(local.allocate(of: Int.self, capacity: 0)).isEmpty)
        let counts = try arena.withScope { scope throws(ArenaAllocError) in
            (try scope.allocate(of: Empty.self, capacity: 5).count, try scope.allocate(of: Int.self, capacity: 0).count)
        }
        #expect(counts == (5, 0))
        // Values of a zero-size type go in like any other.
        let values = try required(arena.copy([Empty(), Empty()]))
        #expect(values.count == 2)
        #expect(arena.integrityViolation() == nil)
    }

    @Test("a negative byteCount is a precondition failure (spec 9)")
    func negativeByteCount() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            _ = arena.allocate(byteCount: -1)
        }
        expectTrap(result, mentioning: "negative byteCount -1")
    }

    @Test("an alignment that is not a power of two is a precondition failure (spec 9)")
    func alignmentNotPowerOfTwo() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            _ = arena.allocate(byteCount: 8, alignment: 24)
        }
        expectTrap(result, mentioning: "alignment 24 is not a power of two")
    }

    @Test("an alignment of zero or a negative one is a precondition failure (spec 9)")
    func alignmentZeroOrNegative() async {
        let zero = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            _ = arena.allocate(byteCount: 8, alignment: 0)
        }
        expectTrap(zero, mentioning: "alignment 0 is not a power of two")
        let negative = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            _ = arena.allocate(byteCount: 8, alignment: -8)
        }
        expectTrap(negative, mentioning: "alignment -8 is not a power of two")
        let three = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let shared = SharedArena()
            _ = shared.allocate(byteCount: 8, alignment: 3)
        }
        expectTrap(three, mentioning: "alignment 3 is not a power of two")
    }

    @Test("an alignment above the page size is a precondition failure (spec 9)")
    func alignmentAbovePage() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let shared = SharedArena()
            _ = shared.allocate(byteCount: 8, alignment: 8192)
        }
        expectTrap(result, mentioning: "alignment 8192 is not a power of two up to 4096")
        let single = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            _ = arena.allocate(byteCount: 8, alignment: 8192)
        }
        expectTrap(single, mentioning: "Arena.allocate: alignment 8192 is not a power of two up to 4096")
    }

    @Test("a negative byte count given to deallocate or resize is a precondition failure (spec 9)")
    func negativeRollbackCount() async {
        let rollback = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            let block = arena.allocate(byteCount: 16)!
            _ = arena.deallocate(block + 24, byteCount: -8)
        }
        expectTrap(rollback, mentioning: "Arena.deallocate: negative byteCount -8")
        let resize = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            let block = arena.allocate(byteCount: 16)!
            _ = arena.resize(block, from: -1, to: 8)
        }
        expectTrap(resize, mentioning: "Arena.resize: negative byteCount (from -1 to 8)")
    }

    @Test("a negative capacity is a precondition failure (spec 9)")
    func negativeCapacity() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            _ = arena.allocate(of: Int.self, capacity: -3)
        }
        expectTrap(result, mentioning: "negative capacity -3")
    }

    @Test("a first chunk size that is not positive is a precondition failure (spec 9)")
    func nonPositiveFirstChunk() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Arena(firstChunkByteCount: 0)
        }
        expectTrap(result, mentioning: "Arena: firstChunkByteCount 0 is not positive")
    }

    @Test("a reset while a scope is open traps, even reached through a pointer (spec 5, 9)")
    func resetInsideScope() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let arena = UnsafeMutablePointer<Arena>.allocate(capacity: 1)
            arena.initialize(to: Arena())
            arena.pointee.withScope { _ in arena.pointee.reset() }
        }
        expectTrap(result, mentioning: "Arena.reset() while a withScope body is running")
    }

    @Test("a handle used after its arena was reset traps in debug builds (spec 5, 9)")
    func staleHandle() async {
        #if DEBUG
            let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
                var arena = Arena()
                let pointer = arena.put(5)!
                arena.reset()
                print(pointer.value)
            }
            expectTrap(result, mentioning: "ArenaPointer<Int> at 0x")
            expectTrap(
                result, mentioning: "used after its arena was reset: made in generation 0, the arena is in generation 1"
            )
            let buffer = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
                var arena = Arena()
                let numbers = arena.collect([1, 2, 3])!
                arena.reset()
                print(numbers[0])
            }
            expectTrap(buffer, mentioning: "ArenaBuffer<Int>")
        #endif
    }

    @Test("a shared arena's reset while another copy exists traps (spec 5, 9)")
    func sharedResetWithCopy() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var shared = SharedArena()
            let local = shared.makeLocalArena()
            shared.reset()
            _ = consume local
        }
        expectTrap(result, mentioning: "SharedArena.reset() while another copy of it")
    }

    @Test("a negative allocation limit is a precondition failure, for every kind of arena (spec 9)")
    func negativeAllocationLimit() async {
        let arena = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            arena.allocationLimit = -1
        }
        expectTrap(arena, mentioning: "Arena: negative allocationLimit -1")
        let shared = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = SharedArena(allocationLimit: -4096)
        }
        expectTrap(shared, mentioning: "SharedArena: negative allocationLimit -4096")
        let cache = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = ArenaCache(allocationLimit: -2)
        }
        expectTrap(cache, mentioning: "ArenaCache: negative allocationLimit -2")
    }

    @Test("a negative capacity or count given to an arena collection is a precondition failure (spec 9)")
    func negativeCollectionCounts() async {
        let array = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            try? arena.withScope { scope throws(ArenaAllocError) in _ = try ArenaArray<Int>(capacity: -1, in: scope) }
        }
        expectTrap(array, mentioning: "ArenaArray: negative capacity -1")
        let string = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            try? arena.withScope { scope throws(ArenaAllocError) in _ = try ArenaString(capacity: -5, in: scope) }
        }
        expectTrap(string, mentioning: "negative capacity -5")
        let reserve = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            try? arena.withScope { scope throws(ArenaAllocError) in
                var numbers = try ArenaArray<Int>(in: scope)
                try numbers.reserveCapacity(-2)
            }
        }
        expectTrap(reserve, mentioning: "ArenaArray.reserveCapacity: negative capacity -2")
        let adding = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            try? arena.withScope { scope in
                var numbers = try ArenaArray<Int>(in: scope)
                try numbers.append(addingCapacity: -1) { _ in }
            }
        }
        expectTrap(adding, mentioning: "ArenaArray.append(addingCapacity:): negative count -1")
    }

    @Test("an index out of range or a removal from an empty arena array is a precondition failure (spec 9)")
    func collectionIndices() async {
        let read = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            try? arena.withScope { scope throws(ArenaAllocError) in
                var numbers = try ArenaArray<Int>(in: scope)
                try numbers.append(contentsOf: [1, 2])
                print(numbers[2])
            }
        }
        expectTrap(read, mentioning: "ArenaArray index 2 out of range 0..<2")
        let write = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            try? arena.withScope { scope throws(ArenaAllocError) in
                var numbers = try ArenaArray<Int>(capacity: 8, in: scope)
                numbers[-1] = 3
            }
        }
        expectTrap(write, mentioning: "ArenaArray index -1 out of range 0..<0")
        let empty = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            try? arena.withScope { scope throws(ArenaAllocError) in
                var numbers = try ArenaArray<String>(in: scope)
                numbers.removeLast()
            }
        }
        expectTrap(empty, mentioning: "ArenaArray.removeLast() on an empty array")
    }

    @Test("an OutputSpan closure that writes past the capacity it asked for traps (the standard library's check)")
    func outputSpanOverflow() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            try? arena.withScope { scope in
                var numbers = try ArenaArray<Int>(capacity: 100, in: scope)
                try numbers.append(addingCapacity: 2) { output in
                    for value in 0..<3 { output.append(value) }
                }
            }
        }
        expectTrap(result)
    }

    @Test("a copy whose count lies is a precondition failure; collect is the way (spec 9)")
    func copyWithLyingCount() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var arena = Arena()
            _ = arena.copy(LyingCollection())
        }
        expectTrap(result, mentioning: "is not its number of elements; use collect")
    }
}

/// A collection whose count says 10 but which holds 3 elements.
struct LyingCollection: Collection {
    var startIndex: Int { 0 }
    var endIndex: Int { 3 }
    var count: Int { 10 }
    subscript(index: Int) -> Int { index }
    func index(after index: Int) -> Int { index + 1 }
}
