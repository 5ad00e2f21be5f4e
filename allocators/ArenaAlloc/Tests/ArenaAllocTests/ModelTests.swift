// A seeded model-based test: random sizes, alignments, grows, shrinks, rollbacks, values
// and resets against a model of the live blocks and of which block is the newest; checks
// no overlap, alignment, contents, exactly which rollbacks succeed, and that values are
// deinitialized once each, newest first, and runs the integrity walker after every step
// and reset (spec sections 2 and 4). Each seed is printed before
// its run starts; ALLOC_TEST_SEED=<seed> replays it, and `make soak` runs many.

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
}
