// The allocation limit: what counts (chunk bytes, headers included), a limit of 0, a limit
// hit in the middle of a scope, a limit lowered below what is held, changes on a live
// arena, local arenas, shared arenas and the cache (spec sections 2, 3 and 9).

import AllocCore
import AllocTestSupport
import Testing

@testable import ArenaAlloc

@Suite("Allocation limit")
struct LimitTests {
    @Test("a limit of 0 lets no chunk be taken: every request that needs one fails, and the arena stays usable")
    func limitOfZero() throws {
        var arena = Arena(allocationLimit: 0)
        #expect(arena.allocationLimit == 0)
        let one = arena.allocate(byteCount: 1)
        let none = arena.allocate(byteCount: 0)
        let value = arena.put(1)
        #expect(one == nil && none == nil && value == nil, "a zero-byte request needs a chunk too")
        #expect(arena.statistics().chunks == 0 && arena.statistics().reservedBytes == 0)
        #expect(throws: ArenaAllocError.outOfMemory) {
            try arena.withScope { scope throws(ArenaAllocError) in
                var numbers = try ArenaArray<Int>(in: scope)  // capacity 0 takes nothing
                try numbers.append(1)
            }
        }
        arena.reset()
        arena.allocationLimit = nil
        _ = try required(arena.allocate(byteCount: 1))
        #expect(arena.integrityViolation() == nil)

        let shared = SharedArena(allocationLimit: 0)
        let sharedBlock = shared.allocate(byteCount: 8)
        #expect(sharedBlock == nil)
        var local = shared.makeLocalArena()
        let localBlock = local.allocate(byteCount: 8)
        #expect(localBlock == nil && shared.statistics().reservedBytes == 0)
    }

    @Test("chunks never pass the limit, headers included, and a chunk is cut to what the limit leaves (spec 3)")
    func limitIsNeverPassed() throws {
        // 100,000 is no size of the growth rule: the last chunks are cut to fit under it.
        var arena = Arena(allocationLimit: 100_000)
        var blocks = 0
        while let block = arena.allocate(byteCount: 1000) {
            block.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: blocks), count: 1000)
            blocks += 1
        }
        let statistics = arena.statistics()
        #expect(statistics.reservedBytes <= 100_000, "\(statistics)")
        // 4, 8, 16 and 32 KiB by the rule, then 32 KiB, 4 KiB and 1 KiB cut to the limit.
        #expect(blocks == 97 && statistics.reservedBytes == 99_328, "\(blocks) blocks, \(statistics)")
        #expect(arena.holdsChunkCutToLimit && arena.integrityViolation() == nil)
        // The reset keeps one chunk within the limit, sized for the cycle, and it works again.
        arena.reset()
        #expect(arena.statistics().chunks == 1 && arena.statistics().reservedBytes == 98_304)
        #expect(!arena.holdsChunkCutToLimit && arena.integrityViolation() == nil)
        blocks = 0
        while arena.allocate(byteCount: 1000) != nil { blocks += 1 }
        // 97 blocks (1,008 bytes apart: 16-byte alignment) in the 96 KiB chunk, one in a
        // 1 KiB chunk cut to the limit.
        #expect(blocks == 98 && arena.statistics().reservedBytes <= 100_000, "blocks \(blocks), \(arena.statistics())")
        // The cut itself: the rule's size when it fits, else the largest rounded size
        // within the room that holds the request.
        #expect(Arena.chunkSize(rule: 65536, needed: 1016, room: 65536) == 65536)
        #expect(Arena.chunkSize(rule: 65536, needed: 1016, room: 38560) == 32768)
        #expect(Arena.chunkSize(rule: 65536, needed: 1016, room: 1696) == 1024)
        #expect(Arena.chunkSize(rule: 65536, needed: 1016, room: 1000) == nil)
        #expect(Arena.chunkSize(rule: 65536, needed: 1016, room: -5) == nil)
        #expect(Arena.chunkSize(rule: nil, needed: 1016, room: Int.max) == nil, "no limit: an overflow stays nil")
    }

    @Test("a limit equal to the first chunk lets one chunk of exactly that size be used")
    func limitAsFirstChunk() throws {
        var arena = Arena(firstChunkByteCount: 100_000, allocationLimit: 100_000)
        _ = try required(arena.allocate(byteCount: 1))
        // The rule rounds 100,000 up to 112 KiB; the limit cuts it to 96 KiB.
        #expect(arena.statistics().chunks == 1 && arena.statistics().reservedBytes == 98_304)
    }

    @Test("a limit hit in the middle of a scope throws, keeps what was built, and the reset works")
    func limitHitInsideAScope() throws {
        var arena = Arena(allocationLimit: 64 << 10)
        var appended = 0
        #expect(throws: ArenaAllocError.outOfMemory) {
            try arena.withScope { scope throws(ArenaAllocError) in
                var numbers = try ArenaArray<Int>(in: scope)
                do throws(ArenaAllocError) {
                    while true {
                        try numbers.append(appended)
                        appended += 1
                    }
                } catch {
                    #expect(numbers.count == appended && numbers[appended - 1] == appended - 1)
                    #expect(scope.statistics().reservedBytes <= 64 << 10)
                    throw error
                }
            }
        }
        #expect(appended >= 2048, "only \(appended) Ints fit under 64 KiB")
        #expect(arena.statistics().resets == 1 && arena.bytesInUse == 0)
        #expect(arena.statistics().reservedBytes <= 64 << 10)
        let sum = try arena.withScope { scope throws(ArenaAllocError) in
            let numbers = try scope.collect(1...100)
            return numbers.withUnsafeBufferPointer { $0.reduce(0, +) }
        }
        #expect(sum == 5050)
    }

    @Test("a limit lowered below what is held keeps that memory, refuses new chunks, and the reset releases the excess")
    func limitBelowUse() throws {
        var arena = Arena()
        var blocks: [(UnsafeMutableRawPointer, UInt8)] = []
        for index in 0..<50 {
            let block = try required(arena.allocate(byteCount: 1000))
            block.initializeMemory(as: UInt8.self, repeating: UInt8(index), count: 1000)
            blocks.append((block, UInt8(index)))
        }
        let held = arena.statistics().reservedBytes
        #expect(held > 8192)
        arena.allocationLimit = 8192
        let intact = blocks.allSatisfy { block, fill in
            UnsafeRawBufferPointer(start: block, count: 1000).allSatisfy { $0 == fill }
        }
        #expect(intact && arena.statistics().reservedBytes == held, "the lowered limit took memory away")
        // What fits the current chunk still comes; what needs a chunk does not.
        let small = arena.allocate(byteCount: 16)
        let large = arena.allocate(byteCount: 1 << 20)
        #expect(small != nil && large == nil && arena.statistics().reservedBytes == held)
        arena.reset()
        #expect(arena.statistics().reservedBytes <= 8192, "\(arena.statistics())")
        #expect(arena.integrityViolation() == nil)
        _ = try required(arena.allocate(byteCount: 5000))
        #expect(arena.statistics().reservedBytes <= 8192)
        // Raised on the live arena, it allows more at once.
        arena.allocationLimit = 1 << 20
        _ = try required(arena.allocate(byteCount: 100_000))
        arena.allocationLimit = nil
        _ = try required(arena.allocate(byteCount: 1 << 21))
        #expect(arena.integrityViolation() == nil)
    }

    @Test("the warm reset does not keep a chunk above a lowered limit")
    func warmResetRespectsTheLimit() throws {
        var arena = Arena()
        _ = try required(arena.allocate(byteCount: 100))
        arena.reset()
        #expect(arena.statistics().chunks == 1)
        arena.allocationLimit = 1024
        arena.reset()
        #expect(arena.statistics().chunks == 0 && arena.statistics().reservedBytes == 0)
        _ = try required(arena.allocate(byteCount: 100))
        #expect(arena.statistics().reservedBytes == 1024, "the new chunk is cut to the limit")
    }

    @Test("local arenas obey their own limit and their shared arena's")
    func localArenas() throws {
        var shared = SharedArena(firstChunkByteCount: 1024, allocationLimit: 64 << 10)
        do {
            var first = shared.makeLocalArena()
            first.allocationLimit = 16 << 10
            var count = 0
            while first.allocate(byteCount: 512) != nil { count += 1 }
            #expect(first.statistics().reservedBytes <= 16 << 10 && count >= 24, "\(count), \(first.statistics())")
            #expect(first.integrityViolation() == nil)
            var second = shared.makeLocalArena()
            while second.allocate(byteCount: 512) != nil {}
            #expect(shared.statistics().reservedBytes <= 64 << 10, "\(shared.statistics())")
            #expect(shared.statistics().reservedBytes >= 56 << 10, "most of the limit is usable")
            let direct = shared.allocate(byteCount: 512)
            #expect(direct == nil, "the shared arena took a chunk past its limit")
        }
        // The local arenas gave their chunks back; a lowered limit frees spares at the reset.
        shared.allocationLimit = 20 << 10
        #expect(shared.allocationLimit == 20 << 10)
        shared.reset()
        #expect(shared.statistics().reservedBytes <= 20 << 10, "\(shared.statistics())")
        #expect(shared.integrityViolation() == nil)
        var third = shared.makeLocalArena()
        _ = try required(third.allocate(byteCount: 512))
        #expect(shared.statistics().reservedBytes <= 20 << 10)
    }

    @Test("a shared arena cuts its own chunks to the limit and releases the excess at the reset")
    func sharedOwnChunks() throws {
        var shared = SharedArena(allocationLimit: 100_000)
        var bytes = 0
        while shared.allocate(byteCount: 2000) != nil { bytes += 2000 }
        #expect(shared.statistics().reservedBytes <= 100_000 && bytes >= 80_000, "\(bytes), \(shared.statistics())")
        #expect(shared.integrityViolation() == nil)
        shared.reset()
        #expect(shared.statistics().chunks == 1 && shared.statistics().reservedBytes <= 100_000)
        #expect(shared.integrityViolation() == nil)
        shared.allocationLimit = 4096
        shared.reset()
        #expect(shared.statistics().reservedBytes <= 4096 && shared.integrityViolation() == nil)
        _ = try required(shared.allocate(byteCount: 100))
        shared.allocationLimit = nil
        #expect(shared.allocationLimit == nil)
    }

    @Test("a cache's arenas carry its limit, and the cache keeps no chunk above it")
    func cacheLimit() throws {
        let cache = ArenaCache(allocationLimit: 32 << 10)
        var arena = cache.take()
        #expect(arena.allocationLimit == 32 << 10)
        while arena.allocate(byteCount: 1000) != nil {}
        #expect(arena.statistics().reservedBytes <= 32 << 10)
        cache.give(arena)
        #expect(cache.count == 1)
        var unlimited = cache.take()
        unlimited.allocationLimit = nil
        _ = try required(unlimited.allocate(byteCount: 100_000))
        cache.give(unlimited)  // reset to one chunk above the cache's limit: freed
        #expect(cache.count == 0 && cache.integrityViolation() == nil)
    }
}
