// A seeded model-based test: random sizes, alignments, grows, shrinks, rollbacks, values
// and resets against a model of the live blocks and of which block is the newest; checks
// no overlap, alignment, contents, exactly which rollbacks succeed, and that values are
// deinitialized once each, newest first, and runs the integrity walker after every step
// and reset (spec sections 2 and 4). A second one runs the arena collections against
// Swift arrays and strings, under random allocation limits: contents, exactly when an
// array grows in place, failures only under a limit, never more chunk bytes than the
// limit, every element deinitialized once. Each seed is printed before its run starts;
// ALLOC_TEST_SEED=<seed> replays it, and `make soak` runs many.

import AllocCore
import AllocTestSupport
import Glibc
import Testing

@testable import ArenaAlloc

/// A live block in the model: where it is, its size and the byte it was filled with.
struct ModelBlock {
    var address: UnsafeMutableRawPointer
    var byteCount: Int
    var alignment: Int
    var fill: UInt8
    /// Whether a value with a deinit record was put after it: the rollback floor then lies
    /// above it, so it never rolls back or grows in place again.
    var belowFloor = false

    var end: Int { Int(bitPattern: address) + byteCount }
}

@Suite("Arena model")
struct ModelTests {
    /// The first chunk sizes the model runs with: tiny (a chunk per few blocks), a page,
    /// larger than most cycles, and one that is not a power of two.
    static let firstChunkSizes = [64, 4096, 1 << 16, 100]
    /// Steps in one seed's run.
    static let steps = 6_000
    /// The largest block a step asks for (a resize; a new block is at most 20,000 bytes).
    static let largestBlock = 30_000

    @Test("random operations keep blocks apart, aligned and intact", arguments: firstChunkSizes)
    func randomOperations(firstChunkByteCount: Int) throws {
        try forEachTestSeed("randomOperations(firstChunkByteCount: \(firstChunkByteCount))") { seed in
            try run(seed: seed, firstChunkByteCount: firstChunkByteCount)
        }
    }

    /// One run of the model: 6,000 random steps from `seed`.
    func run(seed: UInt64, firstChunkByteCount: Int) throws {
        var random = SplitMix64(seed: seed)
        var arena = Arena(firstChunkByteCount: firstChunkByteCount)
        var live: [ModelBlock] = []
        var fills: UInt8 = 0
        // Where the model expects the cursor: the end of the newest raw block, nil after a
        // put (a value, or its deinit record, is then the newest block).
        var modelCursor: Int? = nil
        var strings: [(handle: ArenaPointer<String>, text: String)] = []
        var numbers: [(buffer: ArenaBuffer<UInt16>, first: UInt16)] = []
        // Ids are steps; a fresh tally for each cycle.
        var deinits = DeinitTally(capacity: Self.steps, recordsOrder: true)
        var putTracked = 0

        // Contents are compared with memcmp against a scratch buffer of the fill byte: a
        // byte loop in a debug build made a seed's run take most of a second.
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: Self.largestBlock, alignment: 16)
        defer { scratch.deallocate() }
        func holds(_ address: UnsafeRawPointer, _ byteCount: Int, _ fill: UInt8) -> Bool {
            memset(scratch, Int32(fill), byteCount)
            return memcmp(address, scratch, byteCount) == 0
        }
        func check(_ block: ModelBlock) -> Bool { holds(block.address, block.byteCount, block.fill) }
        func isNewest(_ block: ModelBlock) -> Bool { !block.belowFloor && block.end == modelCursor }
        func checkAll(_ step: Int) {
            for block in live {
                #expect(check(block), "seed \(seed) step \(step): block \(block.address) was overwritten")
            }
            for (handle, text) in strings { #expect(handle.value == text, "seed \(seed) step \(step)") }
            for (buffer, first) in numbers {
                let intact = buffer.enumerated().allSatisfy { (index: Int, element: UInt16) in
                    element == first &+ UInt16(index) &* 3
                }
                #expect(intact, "seed \(seed) step \(step): a collected array was overwritten")
            }
        }

        for step in 0..<Self.steps {
            let draw = random.next() % 100
            switch draw {
            case 0..<55:
                let byteCount = Int(random.next() % 4) == 0 ? Int(random.next() % 20_000) : Int(random.next() % 64)
                let alignment = 1 << Int(random.next() % 13)
                let address = try required(
                    arena.allocate(byteCount: byteCount, alignment: alignment), "seed \(seed) step \(step)")
                #expect(
                    Int(bitPattern: address) % alignment == 0, "seed \(seed) step \(step): \(address) % \(alignment)")
                for other in live where byteCount > 0 && other.byteCount > 0 {
                    let apart = address + byteCount <= other.address || other.address + other.byteCount <= address
                    #expect(
                        apart,
                        "seed \(seed) step \(step): \(address)+\(byteCount) overlaps \(other.address)+\(other.byteCount)"
                    )
                }
                fills &+= 1
                memset(address, Int32(fills), byteCount)
                live.append(ModelBlock(address: address, byteCount: byteCount, alignment: alignment, fill: fills))
                modelCursor = live[live.count - 1].end
            case 55..<70:
                // Any live block, mostly the newest: the newest grows and shrinks in place
                // while its chunk has room; an older one shrinks in place and moves to grow.
                guard !live.isEmpty else { continue }
                let index = random.next() % 2 == 0 ? live.count - 1 : Int(random.next() % UInt64(live.count))
                var block = live[index]
                let newest = isNewest(block)
                let newByteCount = Int(random.next() % UInt64(Self.largestBlock))
                let moved = try required(
                    arena.resize(block.address, from: block.byteCount, to: newByteCount, alignment: block.alignment),
                    "seed \(seed) step \(step)")
                let kept = min(block.byteCount, newByteCount)
                #expect(holds(moved, kept, block.fill), "seed \(seed) step \(step): resize lost the contents")
                #expect(Int(bitPattern: moved) % block.alignment == 0)
                if !newest {
                    #expect(
                        (moved == block.address) == (newByteCount <= block.byteCount),
                        "seed \(seed) step \(step): an older block must shrink in place and move to grow")
                }
                let inPlace = moved == block.address
                block.address = moved
                block.byteCount = newByteCount
                memset(moved, Int32(block.fill), newByteCount)
                if !inPlace {
                    // A new allocation above everything: the newest block now.
                    block.belowFloor = false
                    live.remove(at: index)
                    live.append(block)
                    modelCursor = block.end
                } else {
                    live[index] = block
                    if newest { modelCursor = block.end }
                }
            case 70..<85:
                // A rollback: exactly the newest block comes back, by exactly its bytes.
                guard !live.isEmpty else { continue }
                let index = random.next() % 4 == 0 ? Int(random.next() % UInt64(live.count)) : live.count - 1
                let block = live[index]
                let expected = isNewest(block)
                let used = arena.bytesInUse
                let rolledBack = arena.deallocate(block.address, byteCount: block.byteCount)
                #expect(
                    rolledBack == expected, "seed \(seed) step \(step): rollback \(rolledBack), expected \(expected)")
                if rolledBack {
                    #expect(arena.bytesInUse == used - block.byteCount, "seed \(seed) step \(step)")
                    live.remove(at: index)
                    modelCursor = Int(bitPattern: block.address)
                } else {
                    #expect(arena.bytesInUse == used, "seed \(seed) step \(step)")
                }
            case 85..<88:
                // A value with a deinit: its record puts the rollback floor above every block.
                let text = "value \(step) of seed \(seed), long enough to live on the heap"
                strings.append((try required(arena.put(text), "seed \(seed) step \(step)"), text))
                _ = try required(arena.put(TrackedObject(step, deinits)), "seed \(seed) step \(step)")
                putTracked += 1
                for index in live.indices { live[index].belowFloor = true }
                modelCursor = nil
            case 88..<90:
                // A trivial collection of a count the sequence hides: no record, no floor.
                let first = UInt16(truncatingIfNeeded: step)
                // At least one element: an empty array takes no bytes, and whether it
                // rounded the cursor up depends on the cursor's alignment.
                let count = 1 + Int(random.next() % 300)
                let elements = (0..<count * 2).lazy.filter { $0 % 2 == 0 }.map { (index: Int) -> UInt16 in
                    first &+ UInt16(index / 2) &* 3
                }
                numbers.append((try required(arena.collect(elements), "seed \(seed) step \(step)"), first))
                modelCursor = nil
            case 90..<98:
                checkAll(step)
            default:
                checkAll(step)
                arena.reset()
                #expect(deinits.order.count == putTracked, "seed \(seed) step \(step): every value deinitialized once")
                #expect(deinits.order == deinits.order.sorted(by: >), "seed \(seed) step \(step): newest first")
                deinits = DeinitTally(capacity: Self.steps, recordsOrder: true)
                putTracked = 0
                live.removeAll()
                strings.removeAll()
                numbers.removeAll()
                modelCursor = nil
                #expect(arena.bytesInUse == 0 && arena.statistics().chunks <= 1, "seed \(seed) step \(step)")
            }
            #expect(arena.statistics().peakBytesInUse >= arena.bytesInUse, "seed \(seed) step \(step)")
            // The whole structure (spec 4): chunks, cursor, floor, counts and deinit records.
            if let violation = arena.integrityViolation() {
                Issue.record("seed \(seed) step \(step) (draw \(draw)): \(violation)")
                return
            }
        }
        checkAll(Self.steps)
    }

    /// Scopes in one seed's run of the collection model, and steps in each.
    static let collectionCycles = 16
    static let collectionSteps = 600

    @Test("random collection operations match Swift arrays and strings, under random allocation limits")
    func randomCollectionOperations() throws {
        try forEachTestSeed("randomCollectionOperations") { seed in try runCollections(seed: seed) }
    }

    /// One run of the collection model from `seed`.
    func runCollections(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        var arena = Arena(firstChunkByteCount: 256)
        let tally = DeinitTally(capacity: Self.collectionCycles * Self.collectionSteps + 1)
        var nextID = 0
        for cycle in 0..<Self.collectionCycles {
            // No limit, a tight one, or a roomy one; changed between scopes on the live arena.
            let limit: Int? =
                switch random.next() % 3 {
                case 0: nil
                case 1: 1024 + Int(random.next() % 8192)
                default: 16 << 10 + Int(random.next() % (256 << 10))
                }
            arena.allocationLimit = limit
            // A limit lowered below what the arena holds takes nothing away until the reset.
            let heldWhenSet = arena.statistics().reservedBytes
            let where_ = "seed \(seed) cycle \(cycle) limit \(limit.map(String.init) ?? "none")"
            try arena.withScope { scope in
                var numbers = try ArenaArray<UInt32>(in: scope)
                var objects = try ArenaArray<TrackedObject>(in: scope)
                var text = try ArenaString(in: scope)
                var numbersModel: [UInt32] = []
                var objectsModel: [Int] = []
                var textModel = ""
                /// A failure is allowed only under a limit.
                func failed(_ step: Int, _ what: String) {
                    #expect(limit != nil, "\(where_) step \(step): \(what) failed with no limit")
                }
                for step in 0..<Self.collectionSteps {
                    let draw = random.next() % 100
                    switch draw {
                    case 0..<30:
                        // One append; when it grows, in place exactly when the storage is the
                        // newest block and its chunk has room.
                        let value = UInt32(truncatingIfNeeded: random.next())
                        let before = numbers.base.map { Int(bitPattern: $0) }
                        let grows = numbers.count == numbers.capacity
                        let newCapacity = max(numbers.count + 1, numbers.capacity * 2, 4)
                        let fitsInPlace = before.map { start in
                            scope.arena.pointee.isNewest(start, byteCount: numbers.capacity * 4)
                                && newCapacity * 4 <= scope.arena.pointee.limit - start
                        }
                        do throws(ArenaAllocError) {
                            try numbers.append(value)
                            numbersModel.append(value)
                            let after = numbers.base.map { Int(bitPattern: $0) }
                            if grows, let fitsInPlace {
                                #expect(
                                    (after == before) == fitsInPlace,
                                    "\(where_) step \(step): in place \(after == before), expected \(fitsInPlace)")
                            }
                        } catch {
                            failed(step, "append")
                            #expect(
                                numbers.count == numbersModel.count
                                    && numbers.base.map { Int(bitPattern: $0) } == before)
                        }
                    case 30..<40:
                        // Many at once, from contiguous storage or one by one.
                        let count = Int(random.next() % 200)
                        let first = UInt32(truncatingIfNeeded: random.next())
                        let values = (0..<count).map { first &+ UInt32($0) }
                        let countBefore = numbers.count
                        do throws(ArenaAllocError) {
                            if random.next() % 2 == 0 {
                                try numbers.append(contentsOf: values)
                            } else {
                                try numbers.append(contentsOf: values.lazy.map { $0 })
                            }
                            numbersModel += values
                        } catch {
                            failed(step, "append(contentsOf:)")
                            // The elements appended before memory ran out stay.
                            numbersModel += values.prefix(numbers.count - countBefore)
                        }
                    case 40..<46:
                        // Through an OutputSpan: a part of the capacity, maybe then a throw.
                        let capacity = Int(random.next() % 300)
                        let written = capacity == 0 ? 0 : Int(random.next() % UInt64(capacity + 1))
                        let throwsAfter = random.next() % 4 == 0
                        let first = UInt32(truncatingIfNeeded: random.next())
                        do {
                            try numbers.append(addingCapacity: capacity) { output in
                                for index in 0..<written { output.append(first &+ UInt32(index)) }
                                if throwsAfter { throw MissingValue() }
                            }
                            numbersModel += (0..<written).map { first &+ UInt32($0) }
                        } catch is MissingValue {
                            numbersModel += (0..<written).map { first &+ UInt32($0) }
                        } catch {
                            failed(step, "append(addingCapacity:)")
                        }
                    case 46..<52:
                        if !numbersModel.isEmpty {
                            #expect(numbers.removeLast() == numbersModel.removeLast(), "\(where_) step \(step)")
                        }
                    case 52..<54:
                        numbers.removeAll(keepingCapacity: random.next() % 2 == 0)
                        numbersModel.removeAll()
                    case 54..<57:
                        let capacity = Int(random.next() % 2000)
                        do throws(ArenaAllocError) {
                            try numbers.reserveCapacity(capacity)
                            #expect(numbers.capacity >= capacity)
                        } catch {
                            failed(step, "reserveCapacity")
                        }
                    case 57..<59:
                        // A new array in the old one's place: the old one is dropped.
                        numbers = try ArenaArray<UInt32>(in: scope)
                        numbersModel.removeAll()
                    case 59..<70:
                        let id = nextID
                        nextID += 1
                        do throws(ArenaAllocError) {
                            try objects.append(TrackedObject(id, tally))
                            objectsModel.append(id)
                        } catch {
                            failed(step, "objects.append")
                        }
                        if random.next() % 4 == 0 && !objectsModel.isEmpty {
                            #expect(objects.removeLast().id == objectsModel.removeLast())
                        }
                    case 70..<80:
                        let piece = random.next() % 2 == 0 ? "step \(step); " : "é👋\(step % 7)"
                        do throws(ArenaAllocError) {
                            try text.append(piece)
                            textModel += piece
                        } catch {
                            failed(step, "text.append")
                        }
                    case 80..<90:
                        // Other allocations knock the collections off the tip; a value with a
                        // deinit puts the rollback floor above them.
                        do throws(ArenaAllocError) {
                            if random.next() % 3 == 0 {
                                let id = nextID
                                nextID += 1
                                _ = try scope.put(TrackedObject(id, tally))
                            } else {
                                _ = try scope.allocate(of: UInt8.self, capacity: Int(random.next() % 500))
                            }
                        } catch {
                            failed(step, "a scope allocation")
                        }
                    default:
                        let numbersIntact =
                            numbers.count == numbersModel.count
                            && numbersModel.indices.allSatisfy { numbers[$0] == numbersModel[$0] }
                        let objectsIntact =
                            objects.count == objectsModel.count
                            && objectsModel.indices.allSatisfy { objects[$0].id == objectsModel[$0] }
                        #expect(numbersIntact && objectsIntact, "\(where_) step \(step): an array lost its contents")
                        #expect(text.string == textModel, "\(where_) step \(step): the string lost its contents")
                    }
                    if let violation = scope.arena.pointee.integrityViolation() {
                        Issue.record("\(where_) step \(step) (draw \(draw)): \(violation)")
                        return
                    }
                    if let limit {
                        let reserved = scope.statistics().reservedBytes
                        #expect(
                            reserved <= max(limit, heldWhenSet), "\(where_) step \(step): \(reserved) bytes of chunks")
                    }
                }
                #expect(numbers.span.count == numbersModel.count && text.utf8Count == textModel.utf8.count)
            }
            #expect(arena.bytesInUse == 0, "\(where_)")
            if let limit { #expect(arena.statistics().reservedBytes <= limit, "\(where_): after the reset") }
            #expect(
                tally.died == tally.made && tally.wrongCounts(0..<nextID).isEmpty,
                "\(where_): \(tally.wrongCounts(0..<nextID))")
            if let violation = arena.integrityViolation() { Issue.record("\(where_), after the reset: \(violation)") }
        }
    }
}
