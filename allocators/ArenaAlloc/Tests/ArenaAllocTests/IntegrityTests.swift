// The layout check and the integrity walker (spec sections 3 and 4): the real layouts
// pass and a broken one is named; the walker passes healthy arenas and names each kind
// of damage done to one by hand.

import AllocCore
import AllocTestSupport
import Testing

@testable import ArenaAlloc

@Suite("Layout and integrity")
struct IntegrityTests {
    @Test("every header's named offsets are in address order, aligned and inside the header (spec 3)")
    func layoutHolds() {
        #expect(ArenaLayout.violation() == nil, "\(ArenaLayout.violation() ?? "")")
        #expect(ArenaLayout.headers.map(\.name) == ["ChunkHeader", "SharedChunkHeader", "DeinitRecord"])
        for header in ArenaLayout.headers {
            #expect(ArenaLayout.violation(in: header) == nil, "\(ArenaLayout.violation(in: header) ?? "")")
        }
        #expect(ChunkHeader.byteCount == 16 && SharedChunkHeader.byteCount == 32 && DeinitRecord.byteCount == 32)
    }

    @Test("the layout check names a field out of order, misaligned or past the header (spec 3)")
    func layoutCheckFindsDamage() {
        // AllocCore's LayoutCheck as ArenaLayout uses it: word fields, then the data after
        // the header at 16.
        func violation(_ fields: [(StaticString, Int)], byteCount: Int = 16) -> String? {
            var check = LayoutCheck("Test")
            for (name, offset) in fields { check.field(name, at: offset, size: 8) }
            check.field("data", at: byteCount, size: 0, alignment: 16)
            return check.result(within: byteCount)
        }
        #expect(violation([("a", 0), ("b", 8)]) == nil)
        #expect(violation([("a", 8), ("b", 0)])?.contains("Test.b at 0 overlaps") == true)
        #expect(violation([("a", 0), ("b", 12)])?.contains("Test.b at 12 is not 8-byte aligned") == true)
        #expect(violation([("a", 0), ("b", 16)])?.contains("Test.data at 16 overlaps") == true)
        #expect(violation([("a", 0)], byteCount: 24)?.contains("Test.data at 24 is not 16-byte aligned") == true)
    }

    @Test("the walker passes arenas of several chunks, records, local arenas and a cache (spec 4)")
    func healthyArenas() throws {
        var arena = Arena(firstChunkByteCount: 64)
        #expect(arena.integrityViolation() == nil, "an empty arena")
        let log = DeinitTally(capacity: 100)
        for id in 0..<100 {
            _ = try required(arena.allocate(byteCount: id * 13, alignment: 1 << (id % 8)))
            _ = try required(arena.put(TrackedObject(id, log)))
            _ = try required(arena.collect((0..<id).lazy.map { "\($0)" }))
        }
        #expect(arena.statistics().chunks > 3)
        #expect(arena.integrityViolation() == nil, "\(arena.integrityViolation() ?? "")")
        arena.reset()
        #expect(arena.integrityViolation() == nil, "\(arena.integrityViolation() ?? "")")

        var shared = SharedArena(firstChunkByteCount: 256)
        do {
            var local = shared.makeLocalArena()
            for index in 0..<2_000 {
                _ = try required(shared.allocate(byteCount: index % 1500, alignment: 1 << (index % 7)))
                _ = try required(local.allocate(byteCount: index % 300))
            }
            #expect(local.integrityViolation() == nil, "\(local.integrityViolation() ?? "")")
            #expect(shared.integrityViolation() == nil, "\(shared.integrityViolation() ?? "")")
            local.reset()
            #expect(shared.integrityViolation() == nil, "\(shared.integrityViolation() ?? "")")
        }
        shared.reset()
        #expect(shared.integrityViolation() == nil, "\(shared.integrityViolation() ?? "")")

        let cache = ArenaCache()
        var taken = cache.take()
        _ = try required(taken.allocate(byteCount: 100_000))
        cache.give(taken)
        cache.give(cache.take())
        #expect(cache.integrityViolation() == nil && cache.count == 1)
    }

    @Test("the walker names damage to the chunk chain, the cursor, the floor and the counts (spec 4)")
    func arenaDamage() throws {
        var arena = Arena(firstChunkByteCount: 64)
        for _ in 0..<20 { _ = try required(arena.allocate(byteCount: 40)) }
        try #require(arena.statistics().chunks >= 3 && arena.integrityViolation() == nil)
        let newest = try required(arena.chunk, "the newest chunk")
        let older = try #require(ChunkHeader.previous(of: newest))

        func expectViolation(_ text: String, _ damage: (inout Arena) -> Void, _ repair: (inout Arena) -> Void) {
            damage(&arena)
            let violation = arena.integrityViolation()
            #expect(violation?.contains(text) == true, "\(violation ?? "nil"), expected \(text)")
            repair(&arena)
            #expect(arena.integrityViolation() == nil, "the repair left \(arena.integrityViolation() ?? "")")
        }
        let olderSize = ChunkHeader.size(of: older)
        expectViolation(
            "less than the", { _ in ChunkHeader.setSize(of: older, to: 1 << 20) },
            { _ in ChunkHeader.setSize(of: older, to: olderSize) })
        expectViolation(
            "not a size of the growth rule", { _ in ChunkHeader.setSize(of: older, to: olderSize + 16) },
            { _ in ChunkHeader.setSize(of: older, to: olderSize) })
        expectViolation("chunks, it counts", { $0.chunkCount += 1 }, { $0.chunkCount -= 1 })
        expectViolation("bytes, it counts", { $0.reservedBytes += 16 }, { $0.reservedBytes -= 16 })
        let cursor = arena.cursor
        let floor = arena.rollbackFloor
        expectViolation("out of order", { $0.cursor = $0.limit + 8 }, { $0.cursor = cursor })
        expectViolation("out of order", { $0.rollbackFloor = $0.cursor + 8 }, { $0.rollbackFloor = floor })
        expectViolation("limit", { $0.limit -= 16 }, { $0.limit += 16 })
        let earlier = arena.bytesUsedInEarlierChunks
        expectViolation(
            "used in earlier chunks", { $0.bytesUsedInEarlierChunks = -1 }, { $0.bytesUsedInEarlierChunks = earlier })
        // A cycle in the chain ends the walk.
        let olderPrevious = ChunkHeader.previous(of: older)
        expectViolation(
            "or more", { _ in ChunkHeader.setPrevious(of: older, to: newest) },
            { _ in ChunkHeader.setPrevious(of: older, to: olderPrevious) })
    }

    @Test("the walker names a deinit record out of place (spec 4)")
    func recordDamage() throws {
        var arena = Arena()
        let log = DeinitTally(capacity: 10)
        _ = try required(arena.put(TrackedObject(1, log)))
        _ = try required(arena.put(TrackedObject(2, log)))
        let newest = try required(arena.deinitRecords, "the newest record")
        let older = try #require(DeinitRecord.next(of: newest))
        let values = DeinitRecord.values(of: newest).assumingMemoryBound(to: TrackedObject.self)
        try #require(arena.integrityViolation() == nil)
        // The newer record made to point to itself: no longer older than the one before.
        DeinitRecord.initialize(newest, next: newest, type: TrackedObject.self, values: values, count: 1)
        #expect(arena.integrityViolation()?.contains("not older than") == true)
        // Values said to lie after the record.
        DeinitRecord.initialize(
            newest, next: older, type: TrackedObject.self,
            values: (newest + 64).assumingMemoryBound(to: TrackedObject.self), count: 1)
        #expect(arena.integrityViolation()?.contains("not before it") == true)
        // A record above the rollback floor could be rolled back.
        let floor = arena.rollbackFloor
        arena.rollbackFloor = Int(bitPattern: newest)
        #expect(arena.integrityViolation()?.contains("above the rollback floor") == true)
        arena.rollbackFloor = floor
        DeinitRecord.initialize(newest, next: older, type: TrackedObject.self, values: values, count: 1)
        #expect(arena.integrityViolation() == nil, "\(arena.integrityViolation() ?? "")")
        arena.reset()
        #expect(log.died == 2)
    }

    @Test("the walker names damage to a shared arena's lists and counts (spec 4)")
    func sharedDamage() throws {
        var shared = SharedArena(firstChunkByteCount: 256)
        for _ in 0..<50 { _ = try required(shared.allocate(byteCount: 2000)) }
        do {
            var local = shared.makeLocalArena()
            for _ in 0..<50 { _ = try required(local.allocate(byteCount: 2000)) }
            local.reset()
        }
        // The storage reference ends with this block: the reset needs the only one.
        do {
            let storage = shared.storage
            try #require(storage.spareChunks != nil && storage.integrityViolation() == nil)
            storage.ownChunks += 1
            #expect(storage.integrityViolation()?.contains("counts") == true)
            storage.ownChunks -= 1
            storage.otherBytes -= 16
            #expect(storage.integrityViolation()?.contains("more than the") == true)
            storage.otherBytes += 16
            // A spare chunk that is retired too.
            let spare = try #require(storage.spareChunks)
            let retired = storage.retiredChunks
            storage.retiredChunks = spare
            #expect(storage.integrityViolation() != nil)
            storage.retiredChunks = retired
            #expect(storage.integrityViolation() == nil, "\(storage.integrityViolation() ?? "")")
            let newest = try #require(UnsafeMutableRawPointer(bitPattern: storage.current.load(ordering: .relaxed)))
            let cursor = SharedChunkHeader.cursor(of: newest)
            let saved = cursor.load(ordering: .relaxed)
            cursor.store(saved + 4, ordering: .relaxed)
            #expect(storage.integrityViolation()?.contains("multiple of 8") == true)
            cursor.store(saved, ordering: .relaxed)
        }
        shared.reset()
        #expect(shared.integrityViolation() == nil)
    }

    @Test("the walker names a cache whose count is wrong (spec 4)")
    func cacheDamage() throws {
        let cache = ArenaCache()
        var arena = cache.take()
        _ = try required(arena.allocate(byteCount: 10))
        cache.give(arena)
        try #require(cache.integrityViolation() == nil)
        cache.warmCount += 1
        #expect(cache.integrityViolation()?.contains("counts") == true)
        cache.warmCount -= 1
    }

    @Test("handles are Sendable when their element is (spec 5)")
    func sendableHandles() throws {
        func send<T: Sendable>(_ value: T) -> T { value }
        var arena = Arena()
        let pointer = try required(arena.put(7))
        let buffer = try required(arena.copy([1, 2, 3]))
        #expect(send(pointer).value == 7 && send(buffer)[2] == 3)
        // `send(arena.put(NonSendable()))` does not compile (spec 5 quotes the error).
    }
}
