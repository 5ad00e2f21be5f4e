// Behaviour of the single-thread Arena: the growth rule, reset and chunk reuse, grow,
// shrink and rollback of the newest allocation, statistics (spec sections 3, 4, 7, 8).

import AllocCore
import Testing

@testable import ArenaAlloc

@Suite("Arena")
struct ArenaTests {
    @Test("chunks follow the growth rule: sum of earlier chunks plus the request, rounded (spec 3)")
    func growthRule() throws {
        var arena = Arena()
        var sizes: [Int] = []
        var reserved = 0
        for _ in 0..<40_000 {
            _ = try required(arena.allocate(byteCount: 4, alignment: 4))
            let statistics = arena.statistics
            if statistics.reservedBytes != reserved {
                sizes.append(statistics.reservedBytes - reserved)
                reserved = statistics.reservedBytes
            }
        }
        // 4 KiB, then >= 4 KiB + request (8 KiB), >= 12 KiB + request (16 KiB), then 16 KiB multiples.
        #expect(sizes == [4096, 8192, 16384, 32768, 65536, 131_072], "chunk sizes \(sizes)")
        // blink-alloc's cycle: 17,453 four-byte objects span five chunks, then one of 80 KiB.
        var cycle = Arena()
        for _ in 0..<17_453 { _ = try required(cycle.allocate(of: UInt32.self, capacity: 1)) }
        #expect(cycle.statistics.chunks == 5 && cycle.statistics.reservedBytes == 126_976, "\(cycle.statistics)")
        cycle.reset()
        #expect(cycle.statistics.chunks == 1 && cycle.statistics.reservedBytes == 81_920, "\(cycle.statistics)")
        #expect(Arena.chunkSize(forAtLeast: 16385, after: 0) == 32768)
        #expect(Arena.chunkSize(forAtLeast: 20000, after: 10000) == 32768)
        #expect(Arena.chunkSize(forAtLeast: 5000, after: 3000) == 8192)
        #expect(Arena.chunkSize(forAtLeast: Int.max, after: 1) == nil)
        #expect(Arena.chunkSize(forAtLeast: Int.max - 10, after: 0) == nil)
    }

    @Test("after the first cycle a cycle needs no new chunk (spec 4: reset consolidates)")
    func chunkReuseAfterWarmUp() throws {
        var arena = Arena()
        var afterFirst: ArenaStatistics?
        for cycle in 0..<6 {
            for index in 0..<17_453 {
                let slot = try required(arena.allocate(of: UInt32.self, capacity: 1))
                slot[0] = UInt32(index)
            }
            // A few odd sizes and alignments, as a real cycle has.
            for size in [1, 100, 3000, 7] { _ = try required(arena.allocate(byteCount: size, alignment: 16)) }
            if cycle >= 1 {
                #expect(arena.statistics.chunks == 1, "cycle \(cycle) took a new chunk: \(arena.statistics)")
            }
            arena.reset()
            if cycle == 0 { afterFirst = arena.statistics }
            #expect(arena.statistics.chunks == 1)
            #expect(
                arena.statistics.reservedBytes == afterFirst?.reservedBytes, "reserved bytes changed in cycle \(cycle)")
        }
        #expect(arena.statistics.resets == 6)
        #expect(arena.statistics.bytesInUse == 0)
        #expect(arena.statistics.peakBytesInUse >= 17_453 * 4)
    }

    @Test("rollback of the newest allocation gives its bytes back, in reverse order like a stack (spec 2)")
    func rollback() throws {
        var arena = Arena()
        let first = try required(arena.allocate(byteCount: 64))
        let second = try required(arena.allocate(byteCount: 100))
        let used = arena.bytesInUse
        let older = arena.deallocate(first, byteCount: 64)
        #expect(!older, "an older block rolled back while a newer one is live")
        let wrongCount = arena.deallocate(second, byteCount: 99)
        #expect(!wrongCount, "a rollback with a byte count other than the block's")
        let rolledBack = arena.deallocate(second, byteCount: 100)
        #expect(rolledBack)
        #expect(arena.bytesInUse == used - 100)
        let again = arena.deallocate(second, byteCount: 100)
        #expect(!again, "a second rollback of the same block")
        let foreign = UnsafeMutableRawPointer(bitPattern: 0x1000)!
        let rolledBackForeign = arena.deallocate(foreign, byteCount: 16)
        #expect(!rolledBackForeign, "a pointer not from the arena rolled back")
        let third = try required(arena.allocate(byteCount: 100))
        #expect(third == second, "the rolled-back bytes are reused")
        #expect(arena.statistics.peakBytesInUse >= used)
        // Newest first, every block comes back.
        let thirdBack = arena.deallocate(third, byteCount: 100)
        let firstBack = arena.deallocate(first, byteCount: 64)
        #expect(thirdBack && firstBack)
        #expect(arena.bytesInUse == 0)
    }

    @Test("a value put with a deinit is never rolled back, nor anything before it (spec 2)")
    func rollbackStopsAtValues() throws {
        var arena = Arena()
        let raw = try required(arena.allocate(byteCount: 32))
        let log = DeinitLog()
        let box = try required(arena.put(Tracked(1, log)))
        let usedWithValue = arena.bytesInUse
        let rawBack = arena.deallocate(raw, byteCount: 32)
        #expect(!rawBack, "a block below a value with a deinit rolled back")
        let plain = try required(arena.allocate(byteCount: 48))
        let plainBack = arena.deallocate(plain, byteCount: 48)
        #expect(plainBack, "a block above the value did not roll back")
        // The block's alignment padding stays used.
        #expect(arena.bytesInUse >= usedWithValue && arena.bytesInUse < usedWithValue + 16)
        // A byte count that reaches from the older block over the value to the cursor
        // would free the value's deinit record: refused (the rollback floor).
        let spanning = arena.deallocate(raw, byteCount: arena.cursor - Int(bitPattern: raw))
        #expect(!spanning, "a wrong byte count rolled back over a value with a deinit")
        _ = box
        arena.reset()
        #expect(log.order == [1], "the value's deinit ran at the reset")
    }

    @Test("a byte count that reaches from an older chunk to the cursor rolls nothing back (spec 2, 9)")
    func rollbackAcrossChunks() throws {
        var arena = Arena(firstChunkByteCount: 64)
        let old = try required(arena.allocate(byteCount: 16))
        let new = try required(arena.allocate(byteCount: 4096))
        #expect(arena.statistics.chunks == 2)
        let used = arena.bytesInUse
        let spanning = arena.deallocate(old, byteCount: arena.cursor - Int(bitPattern: old))
        #expect(!spanning && arena.bytesInUse == used, "a rollback moved the cursor into an older chunk")
        let newBack = arena.deallocate(new, byteCount: 4096)
        #expect(newBack && arena.bytesInUse == used - 4096)
    }

    @Test("the newest allocation grows and shrinks in place; an older one moves with its bytes (spec 2)")
    func growAndShrink() throws {
        var arena = Arena(firstChunkByteCount: 1 << 16)
        let older = try required(arena.allocate(byteCount: 32))
        for offset in 0..<32 { older.storeBytes(of: UInt8(offset), toByteOffset: offset, as: UInt8.self) }
        let block = try required(arena.allocate(byteCount: 16))
        let grown = try required(arena.resize(block, from: 16, to: 4000))
        #expect(grown == block, "grow of the newest block moved it")
        let used = arena.bytesInUse
        let shrunk = try required(arena.resize(grown, from: 4000, to: 8))
        #expect(shrunk == block && arena.bytesInUse == used - 3992)
        let next = try required(arena.allocate(byteCount: 8, alignment: 8))
        #expect(next == block + 8, "the shrunk bytes were not reused")
        // An older block: shrinking stays, growing moves and keeps the contents.
        let stayed = arena.resize(older, from: 32, to: 16)
        #expect(stayed == older)
        let moved = try required(arena.resize(older, from: 32, to: 64))
        #expect(moved != older)
        for offset in 0..<32 { #expect(moved.load(fromByteOffset: offset, as: UInt8.self) == UInt8(offset)) }
        // The newest block growing past its chunk moves into a new chunk with its bytes.
        let last = try required(arena.allocate(byteCount: 16))
        last.storeBytes(of: 0xABCD_1234, as: UInt32.self)
        let big = try required(arena.resize(last, from: 16, to: 1 << 17))
        #expect(big != last && big.load(as: UInt32.self) == 0xABCD_1234)
        #expect(arena.statistics.chunks == 2)
    }

    @Test("the warm reset of one chunk with trivial values is O(1): no deinit walk, no free (spec 7)")
    func warmReset() throws {
        var arena = Arena()
        for _ in 0..<1000 { _ = arena.putWithoutDeinit(UInt64(1)) }
        arena.reset()
        for _ in 0..<1000 { _ = arena.put(UInt32(1)) }
        #expect(arena.deinitRecords == nil, "a trivial put recorded a deinit")
        let before = arena.statistics
        arena.reset()
        #expect(arena.statistics.chunks == 1 && arena.statistics.reservedBytes == before.reservedBytes)
    }

    @Test("alignments up to the page size are honoured (spec 2)")
    func alignments() throws {
        var arena = Arena()
        var shift = 0
        while 1 << shift <= Arena.maximumAlignment {
            for size in [0, 1, 33] {
                let block = try required(arena.allocate(byteCount: size, alignment: 1 << shift))
                #expect(Int(bitPattern: block) % (1 << shift) == 0, "alignment \(1 << shift): \(block)")
            }
            shift += 1
        }
    }

    @Test("a cache gives back warm arenas; its arenas keep their chunk (spec 2)")
    func cache() throws {
        let cache = ArenaCache()
        var arena = cache.take()
        for _ in 0..<10_000 { _ = try required(arena.allocate(byteCount: 8)) }
        arena.reset()
        let reserved = arena.statistics.reservedBytes
        cache.give(arena)
        #expect(cache.count == 1)
        var again = cache.take()
        #expect(cache.count == 0)
        #expect(again.statistics.reservedBytes == reserved && again.statistics.chunks == 1)
        for _ in 0..<10_000 { _ = try required(again.allocate(byteCount: 8)) }
        #expect(again.statistics.chunks == 1, "a warm arena from the cache took a new chunk")
        cache.give(again)
        cache.give(cache.take())
        cache.give(Arena())  // never used: holds no chunk, nothing is cached
        #expect(cache.count == 1)
    }
}

@Suite("SharedArena")
struct SharedArenaTests {
    @Test("a thread bumps through a window of the shared chunk; a reset retires every window (spec 3, 5)")
    func windows() throws {
        var shared = SharedArena()
        let first = try required(shared.allocate(byteCount: 16))
        let second = try required(shared.allocate(byteCount: 16))
        #expect(second == first + 16, "small requests come from the thread's window, one after another")
        #expect(shared.statistics.bytesInUse == 4096, "a window counts as in use: \(shared.statistics)")
        let large = try required(shared.allocate(byteCount: 2000))
        #expect(large == first + 32, "a request up to a quarter of a window still comes from it")
        shared.reset()
        #expect(shared.statistics.bytesInUse == 0)
        let after = try required(shared.allocate(byteCount: 16))
        #expect(shared.statistics.bytesInUse == 4096, "after the reset, the first request takes a new window")
        _ = after
    }

    @Test("a shared arena's repeating cycle needs no new chunk after the first (spec 3)")
    func sharedChunkReuse() throws {
        var shared = SharedArena()
        var afterFirst: ArenaStatistics?
        for cycle in 0..<4 {
            for index in 0..<17_453 {
                let slot = try required(shared.allocate(of: UInt32.self, capacity: 1))
                slot[0] = UInt32(index)
            }
            _ = try required(shared.allocate(byteCount: 3000))  // straight from the chunk
            if cycle >= 1 {
                #expect(shared.statistics.chunks == 1, "cycle \(cycle) took a new chunk: \(shared.statistics)")
            }
            shared.reset()
            if cycle == 0 { afterFirst = shared.statistics }
            #expect(shared.statistics.chunks == 1 && shared.statistics.reservedBytes == afterFirst?.reservedBytes)
        }
        #expect(shared.statistics.peakBytesInUse >= 17_453 * 4)
    }

    @Test("two shared arenas used in turn on one thread keep their blocks apart and intact (spec 5)")
    func alternatingArenas() throws {
        let one = SharedArena(firstChunkByteCount: 128)
        let two = SharedArena(firstChunkByteCount: 128)
        var blocks: [(address: Int, byteCount: Int, fill: UInt8)] = []
        for index in 0..<3000 {
            let arena = index % 3 == 0 ? two : one
            let byteCount = index % 7 * 9 + 1
            let block = try required(arena.allocate(byteCount: byteCount, alignment: 1 << (index % 5)))
            let fill = UInt8(truncatingIfNeeded: index)
            block.initializeMemory(as: UInt8.self, repeating: fill, count: byteCount)
            blocks.append((Int(bitPattern: block), byteCount, fill))
        }
        expectDisjointAndIntact(blocks, seed: 0)
        #expect(one.statistics.bytesInUse > 0 && two.statistics.bytesInUse > 0)
        // Each arena keeps its window in the thread while the other is used: about 2,000
        // and 1,000 requests of at most 55 bytes (plus alignment) take a few windows
        // each, not one per switch (one window per thread had reserved 4 KiB per switch).
        #expect(one.statistics.bytesInUse <= 40 * 4096, "windows left behind: \(one.statistics)")
        #expect(two.statistics.bytesInUse <= 20 * 4096, "windows left behind: \(two.statistics)")
    }

    @Test("a thread using more shared arenas in turn than it keeps windows for stays correct")
    func manyArenasInTurn() throws {
        let arenas = (0..<(ThreadWindow.perThread + 2)).map { _ in SharedArena(firstChunkByteCount: 128) }
        var blocks: [(address: Int, byteCount: Int, fill: UInt8)] = []
        for index in 0..<2_000 {
            // Mostly the first four in turn, then now and then the others.
            let arena = arenas[index % 10 == 9 ? ThreadWindow.perThread + index % 2 : index % ThreadWindow.perThread]
            let byteCount = index % 5 * 7 + 1
            let block = try required(arena.allocate(byteCount: byteCount, alignment: 8))
            let fill = UInt8(truncatingIfNeeded: index)
            block.initializeMemory(as: UInt8.self, repeating: fill, count: byteCount)
            blocks.append((Int(bitPattern: block), byteCount, fill))
        }
        expectDisjointAndIntact(blocks, seed: 0)
    }
}
