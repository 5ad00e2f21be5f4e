// The growable arena collections and values built from a closure: growth in place at the
// arena's tip and by moving elsewhere, contents kept, spans, OutputSpan appends, element
// deinits, finish(), and putResult(of:) (spec sections 2, 4 and 5).

import AllocCore
import AllocTestSupport
import Testing

@testable import ArenaAlloc

/// The address of an array's storage (nil while it has none).
func storageAddress<Element>(_ array: borrowing ArenaArray<Element>) -> UnsafeRawPointer? {
    array.span.withUnsafeBufferPointer { $0.baseAddress.map { UnsafeRawPointer($0) } }
}

/// A value of 4 KiB: what `putResult(of:)` exists for.
struct Page {
    var words:
        (
            InlineWords, InlineWords, InlineWords, InlineWords, InlineWords, InlineWords, InlineWords, InlineWords
        )
}

/// 64 words.
struct InlineWords {
    var low: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int)
    var high: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int)
    var more: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int)
    var last: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int, Int)

    init(_ value: Int) {
        let sixteen = (
            value, value, value, value, value, value, value, value, value, value, value, value, value, value, value,
            value
        )
        (low, high, more, last) = (sixteen, sixteen, sixteen, sixteen)
    }
}

struct Failure: Error, Equatable {}

@Suite("Arena collections")
struct CollectionTests {
    @Test("an array at the arena's tip grows in place: same storage, contents kept (spec 2)")
    func growsInPlaceAtTheTip() throws {
        var arena = Arena(firstChunkByteCount: 1 << 16)
        try arena.withScope { scope throws(ArenaAllocError) in
            var numbers = try ArenaArray<Int>(in: scope)
            let none = storageAddress(numbers)
            #expect(numbers.capacity == 0 && none == nil, "capacity 0 takes no memory")
            try numbers.append(0)
            let first = storageAddress(numbers)
            #expect(first != nil)
            #expect(numbers.capacity == ArenaArray<Int>.minimumGrowth)
            var capacities: Set<Int> = []
            for value in 1..<1000 {
                try numbers.append(value)
                capacities.insert(numbers.capacity)
                let address = storageAddress(numbers)
                #expect(address == first, "the newest block moved at \(value)")
            }
            #expect(capacities.count >= 7, "the array grew \(capacities.count) times, by doubling")
            #expect(numbers.count == 1000 && numbers.capacity == 1024)
            // The array's bytes are all the arena holds: growth at the tip takes no more.
            #expect(scope.statistics().bytesInUse == 1024 * 8 && scope.statistics().chunks == 1)
            let span = numbers.span
            #expect(span.count == 1000 && (0..<1000).allSatisfy { span[$0] == $0 })
        }
    }

    @Test("an array that is not the newest block moves to grow, and keeps its elements (spec 2)")
    func movesWhenNotAtTheTip() throws {
        var arena = Arena(firstChunkByteCount: 1 << 16)
        try arena.withScope { scope throws(ArenaAllocError) in
            var numbers = try ArenaArray<Int>(capacity: 4, in: scope)
            for value in 0..<4 { try numbers.append(value) }
            let before = storageAddress(numbers).map { Int(bitPattern: $0) } ?? 0
            let blocker = try scope.putWithoutDeinit(UInt64(7))
            try numbers.append(4)
            let moved = storageAddress(numbers).map { Int(bitPattern: $0) } ?? 0
            #expect(before != 0 && moved != before, "it grew in place over a newer block")
            #expect(moved > before, "it moved to the cursor, after the newer block")
            #expect(numbers.capacity == 8 && blocker.value == 7)
            #expect((0..<5).allSatisfy { numbers[$0] == $0 })
            // Now it is the newest block again: the next growth is in place.
            for value in 5..<9 { try numbers.append(value) }
            let again = storageAddress(numbers).map { Int(bitPattern: $0) } ?? 0
            #expect(again == moved && numbers.capacity == 16)
            // The old storage stays used until the reset: 4 Ints, a value, 16 Ints.
            #expect(scope.statistics().bytesInUse == 4 * 8 + 8 + 16 * 8)
        }
    }

    @Test("an array at the tip that outgrows its chunk moves to a new chunk with its elements (spec 2)")
    func movesToANewChunk() throws {
        var arena = Arena(firstChunkByteCount: 256)
        try arena.withScope { scope throws(ArenaAllocError) in
            var numbers = try ArenaArray<UInt16>(in: scope)
            for value in 0..<5000 { try numbers.append(UInt16(value)) }
            #expect(scope.statistics().chunks > 1)
            let span = numbers.span
            #expect((0..<5000).allSatisfy { span[$0] == UInt16($0) })
        }
        #expect(arena.integrityViolation() == nil)
    }

    @Test("a dropped array gives its bytes back, so the next one reuses them (spec 2)")
    func droppedArraysReuseTheirBytes() throws {
        var arena = Arena()
        try arena.withScope { scope throws(ArenaAllocError) in
            var addresses: Set<UnsafeRawPointer?> = []
            for round in 0..<100 {
                var numbers = try ArenaArray<Int>(in: scope)
                for value in 0..<100 { try numbers.append(value &* round) }
                addresses.insert(storageAddress(numbers))
                #expect(numbers[99] == 99 * round)
            }
            #expect(addresses.count == 1, "arrays built and dropped in turn used \(addresses.count) places")
            #expect(scope.statistics().bytesInUse == 0 && scope.statistics().chunks == 1)
        }
    }

    @Test("span reads, mutableSpan writes in place, subscripts and removals (spec 2)")
    func spans() throws {
        var arena = Arena()
        try arena.withScope { scope throws(ArenaAllocError) in
            var numbers = try ArenaArray<Int>(capacity: 10, in: scope)
            try numbers.append(contentsOf: 0..<10)
            // A span bound to a name borrows the array to the end of the name's scope (as
            // `Array.span` does): each lives in a block of its own.
            do {
                var writable = numbers.mutableSpan
                for index in writable.indices { writable[index] *= 10 }
            }
            do {
                let span = numbers.span
                #expect(span.count == 10 && span[9] == 90)
            }
            numbers[0] = -1
            #expect(numbers[0] == -1 && numbers.removeLast() == 90 && numbers.count == 9)
            try numbers.append(contentsOf: [100, 200])  // contiguous storage: copied at once
            try numbers.append(contentsOf: (0..<3).lazy.map { $0 + 300 })  // one by one
            #expect(numbers.count == 14 && numbers[10] == 200 && numbers[13] == 302)
            numbers.removeAll(keepingCapacity: true)
            #expect(numbers.isEmpty && numbers.capacity >= 14)
            numbers.removeAll()
            #expect(numbers.capacity == 0 && scope.statistics().bytesInUse == 0, "removeAll gave the storage back")
            try numbers.reserveCapacity(50)
            #expect(numbers.capacity == 50 && numbers.isEmpty)
        }
    }

    @Test("append(addingCapacity:) keeps exactly what the OutputSpan initialized, also when the closure throws")
    func outputSpanAppends() throws {
        var arena = Arena()
        try arena.withScope { scope in
            var bytes = try ArenaArray<UInt8>(in: scope)
            try bytes.append(addingCapacity: 100) { output in
                for value in 0..<60 { output.append(UInt8(value)) }
            }
            #expect(bytes.count == 60 && bytes.capacity >= 100)
            #expect(throws: Failure.self) {
                try bytes.append(addingCapacity: 10) { output in
                    output.append(200)
                    output.append(201)
                    throw Failure()
                }
            }
            #expect(bytes.count == 62 && bytes[60] == 200 && bytes[61] == 201, "the prefix written stays")
            try bytes.append(addingCapacity: 0) { _ in }
            #expect(bytes.count == 62)
        }
    }

    @Test("elements are deinitialized once: when removed, emptied or dropped, never twice after moves (spec 4)")
    func elementDeinits() throws {
        let log = DeinitTally(capacity: 1000)
        var arena = Arena(firstChunkByteCount: 128)
        try arena.withScope { scope throws(ArenaAllocError) in
            var objects = try ArenaArray<TrackedObject>(in: scope)
            for id in 0..<300 {
                try objects.append(TrackedObject(id, log))
                if id % 50 == 0 { _ = try scope.copy("knock the array off the tip \(id)") }
            }
            let last = objects.removeLast()
            #expect(log.died == 0 && last.id == 299)
            _ = consume last
            #expect(log.died == 1)
            var more = try ArenaArray<Holder>(in: scope)
            for id in 300..<310 { try more.append(Holder(tracked: TrackedObject(id, log), number: id)) }
            more.removeAll()
            #expect(log.died == 11)
            #expect(objects.count == 299)
        }
        #expect(log.died == 310 && log.wrongCounts(0..<310).isEmpty, "\(log.wrongCounts(0..<310))")
        #expect(arena.deinitRecords == nil)
    }

    @Test("finish() hands the elements to the arena: deinitialized at the reset, newest first (spec 2, 4)")
    func finish() throws {
        let log = DeinitTally(capacity: 100, recordsOrder: true)
        var arena = Arena()
        let sum = try arena.withScope { scope throws(ArenaAllocError) in
            var objects = try ArenaArray<TrackedObject>(capacity: 16, in: scope)
            for id in 0..<5 { try objects.append(TrackedObject(id, log)) }
            let used = scope.statistics().bytesInUse
            let finished = try objects.finish()
            // The 11 unused slots went back; a 32-byte record follows the 5 elements.
            #expect(scope.statistics().bytesInUse == used - 11 * 8 + DeinitRecord.byteCount)
            _ = try scope.put(TrackedObject(5, log))
            var numbers = try ArenaArray<Int>(in: scope)
            try numbers.append(contentsOf: 1...4)
            let frozen = try numbers.finish()
            #expect(log.died == 0)
            return finished.withUnsafeBufferPointer { $0.reduce(0) { $0 + $1.id } } + frozen[3]
        }
        #expect(sum == 10 + 4)
        #expect(log.order == [5, 0, 1, 2, 3, 4], "order \(log.order)")
    }

    @Test("a string builder appends strings, characters and scalars as UTF-8 and grows in place (spec 2)")
    func stringBuilder() throws {
        var arena = Arena(firstChunkByteCount: 1 << 16)
        let text = try arena.withScope { scope throws(ArenaAllocError) in
            var builder = try ArenaString(in: scope)
            #expect(builder.isEmpty && builder.utf8Count == 0 && builder.string == "")
            try builder.append("héllo")
            try builder.append(Character("👋🏽"))
            try builder.append(Unicode.Scalar(0x41)!)
            try builder.append("world, this is long enough to live on the heap"[...])
            let address = builder.utf8.withUnsafeBufferPointer { $0.baseAddress }
            for _ in 0..<100 { try builder.append(", more") }
            #expect(builder.utf8.withUnsafeBufferPointer { $0.baseAddress } == address, "it moved at the tip")
            let expected =
                "héllo👋🏽Aworld, this is long enough to live on the heap" + String(repeating: ", more", count: 100)
            #expect(builder.string == expected && builder.utf8Count == expected.utf8.count)
            #expect(builder.utf8Span.count == expected.utf8.count && builder.utf8[0] == UInt8(ascii: "h"))
            let kept = try builder.finish()
            return kept.string
        }
        #expect(text.hasPrefix("héllo👋🏽A") && text.hasSuffix(", more, more"))
    }

    @Test("collections work in a local arena's scope, and stay correct when interleaved (spec 2, 5)")
    func interleavedInLocalArena() throws {
        let shared = SharedArena(firstChunkByteCount: 512)
        var local = shared.makeLocalArena()
        try local.withScope { scope throws(ArenaAllocError) in
            var evens = try ArenaArray<Int>(in: scope)
            var odds = try ArenaArray<Int>(in: scope)
            var names = try ArenaString(in: scope)
            for value in 0..<2000 {
                if value % 2 == 0 { try evens.append(value) } else { try odds.append(value) }
                if value % 100 == 0 { try names.append("\(value);") }
            }
            #expect(evens.count == 1000 && odds.count == 1000)
            #expect((0..<1000).allSatisfy { evens[$0] == 2 * $0 && odds[$0] == 2 * $0 + 1 })
            #expect(names.string.hasPrefix("0;100;200;") && names.string.hasSuffix("1900;"))
        }
        #expect(local.integrityViolation() == nil && local.statistics().bytesInUse == 0)
    }

    @Test("putResult(of:) takes the memory first, builds the value there, and gives it back when the closure throws")
    func putWith() throws {
        let log = DeinitTally(capacity: 100, recordsOrder: true)
        var arena = Arena(firstChunkByteCount: 1 << 16)
        _ = try required(arena.allocate(byteCount: 8))
        let expectedAddress = arena.cursor
        let page = try required(
            arena.putResult {
                Page(words: (.init(1), .init(2), .init(3), .init(4), .init(5), .init(6), .init(7), .init(8)))
            })
        #expect(Int(bitPattern: page.unsafePointer) == expectedAddress && page.value.words.7.last.15 == 8)
        #expect(arena.deinitRecords == nil, "a trivial value left a record")
        let used = arena.bytesInUse
        #expect(throws: Failure.self) {
            _ = try arena.putResult { () throws(Failure) -> TrackedObject in throw Failure() }
        }
        #expect(arena.bytesInUse == used && arena.deinitRecords == nil, "a throwing closure left memory or a record")
        let tracked = try required(arena.putResult { TrackedObject(1, log) })
        #expect(tracked.value.id == 1 && log.died == 0)
        // Memory is exhausted: the closure is not called.
        var limited = Arena(allocationLimit: 0)
        var called = false
        let none = limited.putResult { () -> Int in
            called = true
            return 1
        }
        #expect(none == nil && !called)
        arena.reset()
        #expect(log.order == [1])
    }

    @Test("a scope's putResult(of:) lets the closure allocate from the scope; a throwing closure leaves no record")
    func scopePutWith() throws {
        let log = DeinitTally(capacity: 100, recordsOrder: true)
        var arena = Arena()
        try arena.withScope { scope in
            let holder = try scope.putResult {
                let name = try scope.copy("inner")  // allocated after the holder's memory
                return Holder(tracked: TrackedObject(name.count, log), number: 7)
            }
            #expect(holder.value.number == 7 && holder.value.tracked.id == 5)
            let used = scope.statistics().bytesInUse
            #expect(throws: Failure.self) {
                _ = try scope.putResult { () throws -> TrackedObject in throw Failure() }
            }
            #expect(scope.statistics().bytesInUse == used, "the memory of a failed put stayed used")
            let late = try scope.putResult { TrackedObject(6, log) }
            #expect(late.value.id == 6)
        }
        #expect(log.order == [6, 5])
    }
}
