// The value adaptor: put, copy, collect; deinit on reset, newest first, exactly once;
// no deinit for trivial values; sequences whose count lies (spec 2 and 4).

import AllocCore
import AllocTestSupport
import Testing

@testable import ArenaAlloc

/// A struct holding a class reference: not trivial, so its deinit must run.
struct Holder {
    var tracked: TrackedObject
    var number: Int
}

/// A sequence whose underestimatedCount is `claimed` whatever it holds.
struct LyingSequence: Sequence {
    let elements: [Int]
    let claimed: Int
    var underestimatedCount: Int { claimed }
    func makeIterator() -> IndexingIterator<[Int]> { elements.makeIterator() }
}

@Suite("Values in the arena")
struct ValueTests {
    @Test("every put value is deinitialized exactly once, newest first, at the reset (spec 4)")
    func deinitOrder() throws {
        let log = DeinitTally(capacity: 1000, recordsOrder: true)
        var arena = Arena()
        for id in 0..<100 {
            let pointer = try required(arena.put(Holder(tracked: TrackedObject(id, log), number: id)))
            #expect(pointer.value.number == id)
        }
        let buffer = try required(arena.copy([TrackedObject(100, log), TrackedObject(101, log)]))
        #expect(buffer.count == 2)
        #expect(log.order.isEmpty, "a value was deinitialized before the reset")
        arena.reset()
        #expect(log.order == [100, 101] + Array((0..<100).reversed()), "order \(log.order)")
        arena.reset()
        #expect(log.order.count == 102, "a second reset deinitialized again")
    }

    @Test("the arena's end deinitializes what is left (spec 4)")
    func deinitAtEnd() throws {
        let log = DeinitTally(capacity: 1000, recordsOrder: true)
        do {
            var arena = Arena()
            _ = arena.put(TrackedObject(1, log))
            _ = arena.collect((2...4).map { TrackedObject($0, log) })
        }
        #expect(log.order == [2, 3, 4, 1])
    }

    @Test("trivial values and putWithoutDeinit leave no record (spec 4)")
    func noDeinitForTrivial() throws {
        var arena = Arena()
        let number = try required(arena.put(42))
        let pair = try required(arena.putWithoutDeinit((UInt8(1), Double(2))))
        let string = try required(arena.copy("héllo"))
        let numbers = try required(arena.collect(1...1000))
        #expect(arena.deinitRecords == nil)
        #expect(number.value == 42 && pair.value.1 == 2)
        #expect(string.string == "héllo" && string.count == 6)
        #expect(numbers.count == 1000 && numbers.reduce(0, +) == 500_500)
        number.value = 43
        #expect(number.unsafePointer.pointee == 43)
    }

    @Test(
        "collect copes with counts that are unknown, too low, too high or absurd (spec 2)",
        arguments: [0, 3, 1000, Int.max])
    func lyingCounts(claimed: Int) throws {
        var arena = Arena()
        for length in [0, 1, 7, 500, 20_000] {
            let elements = Array(0..<length)
            let collected = try required(arena.collect(LyingSequence(elements: elements, claimed: claimed)))
            #expect(Array(collected) == elements, "claimed \(claimed), length \(length)")
            let filtered = try required(arena.collect(elements.lazy.filter { $0 % 3 == 0 }))
            #expect(Array(filtered) == elements.filter { $0 % 3 == 0 })
        }
        // The over-claimed capacity was given back: what is in use is about what was kept.
        #expect(arena.bytesInUse < 2 * 8 * (20_000 + 7_000 + 500 + 200) + 4096)
    }

    @Test("collect of values with a deinit records them once, with the real count (spec 4)")
    func collectWithDeinit() throws {
        let log = DeinitTally(capacity: 1000, recordsOrder: true)
        var arena = Arena()
        let trackers = (0..<300).map { TrackedObject($0, log) }
        let collected = try required(
            arena.collect(LyingSequence(elements: Array(0..<300), claimed: 2).lazy.map { trackers[$0] }))
        #expect(collected.count == 300 && collected[299].id == 299)
        arena.reset()
        #expect(log.order.isEmpty, "the array still holds the trackers")
        _ = consume trackers
        #expect(log.order.count == 300)
    }

    @Test("a scope's values and spans work, and the arena resets when the scope ends (spec 5)")
    func scope() throws {
        let log = DeinitTally(capacity: 1000, recordsOrder: true)
        var arena = Arena()
        let sum = try arena.withScope { scope throws(ArenaAllocError) in
            let node = try scope.put(TrackedObject(7, log))
            let text = try scope.copy("scope")
            let squares = try scope.collect((1...10).lazy.map { $0 * $0 })
            let copied = try scope.copy([1, 2, 3])
            let raw = try scope.allocate(of: UInt16.self, capacity: 4)
            raw[3] = 9
            let flag = try scope.putWithoutDeinit(true)
            flag.value = false
            #expect(text.string == "scope" && text.count == 5)
            #expect(squares.span[9] == 100 && copied[2] == 3)
            #expect(scope.statistics().bytesInUse > 0)
            return node.value.id + squares.withUnsafeBufferPointer { $0.reduce(0, +) } + Int(raw[3])
        }
        #expect(sum == 7 + 385 + 9)
        #expect(log.order == [7])
        #expect(arena.bytesInUse == 0 && arena.statistics().resets == 1)
    }

    @Test("the module's example compiles as written, with an inferred error type (spec 2)")
    func moduleExample() throws {
        let log = DeinitTally(capacity: 1000, recordsOrder: true)
        var arena = Arena()
        let total = try arena.withScope { scope in
            let numbers = try scope.collect(1...100)
            let name = try scope.copy("arena")
            let node = try scope.put(TrackedObject(7, log))
            var squares = try ArenaArray<Int>(in: scope)
            for n in 1...10 { try squares.append(n * n) }
            return numbers.count + name.count + node.value.id + squares.span[9]
        }
        #expect(total == 212 && log.order == [7])
    }

    @Test("a scope that throws still resets the arena (spec 5)")
    func scopeThrows() {
        struct Failure: Error {}
        let log = DeinitTally(capacity: 1000, recordsOrder: true)
        var arena = Arena()
        #expect(throws: Failure.self) {
            try arena.withScope { scope throws(Failure) in
                _ = try? scope.put(TrackedObject(1, log))
                throw Failure()
            }
        }
        #expect(log.order == [1] && arena.bytesInUse == 0)
    }

    @Test("an arena moves to another thread and is used there (spec 5)")
    func sendArena() throws {
        let arena = Arena()
        let result = SumLog()
        let box = ArenaBox(arena)
        try OSThread.spawn {
            var arena = box.take()
            let value = arena.put(21)!
            result.append(value.value * 2)
        }.join()
        #expect(result.all == [42])
    }
}

/// Moves a ~Copyable arena into a thread's closure.
final class ArenaBox: @unchecked Sendable {
    var arena: Arena?
    init(_ arena: consuming Arena) { self.arena = consume arena }
    func take() -> Arena { arena.take()! }
}
