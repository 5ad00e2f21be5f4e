// The shared arena, local arenas and the cache from more threads than cores (run under
// the thread sanitizer in test-all): blocks never overlap, contents survive, memory
// allocated on one thread is read and released on another, and the integrity walker
// passes at the end (spec sections 4 and 5).

import AllocCore
import AllocTestSupport
import Glibc
import Testing

@testable import ArenaAlloc

// The logs below use AllocCore's SpinLock rather than `Mutex`: the thread sanitizer sees
// the atomics of an inlined SpinLock, not those inside the Synchronization library.

/// Blocks one thread allocated, for the main thread to check after the join.
final class BlockLog: @unchecked Sendable {
    let lock = SpinLock()
    var blocks: [(address: Int, byteCount: Int, fill: UInt8)] = []
    func append(_ more: [(address: Int, byteCount: Int, fill: UInt8)]) { lock.withLock { blocks += more } }
    var all: [(address: Int, byteCount: Int, fill: UInt8)] { lock.withLock { blocks } }
}

/// Numbers threads report, for the main thread to count after the join.
final class SumLog: @unchecked Sendable {
    let lock = SpinLock()
    var sums: [Int] = []
    func append(_ sum: Int) { lock.withLock { sums.append(sum) } }
    var count: Int { lock.withLock { sums.count } }
    var all: [Int] { lock.withLock { sums } }
}

/// Checks that no two blocks overlap and that each still holds its fill byte.
func expectDisjointAndIntact(_ blocks: [(address: Int, byteCount: Int, fill: UInt8)], seed: UInt64) {
    let sorted = blocks.filter { $0.byteCount > 0 }.sorted { $0.address < $1.address }
    for (left, right) in zip(sorted, sorted.dropFirst()) {
        #expect(left.address + left.byteCount <= right.address, "seed \(seed): blocks overlap at \(right.address)")
    }
    for block in sorted {
        let bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: block.address), count: block.byteCount)
        #expect(bytes.allSatisfy { $0 == block.fill }, "seed \(seed): block at \(block.address) overwritten")
    }
}

@Suite("ArenaAlloc Stress")
struct StressTests {
    static let threads = 8

    @Test("threads allocate from one shared arena, directly and through local arenas, round after round")
    func sharedAndLocal() throws {
        let seed = testSeed()
        var shared = SharedArena(firstChunkByteCount: 256)
        for round in 0..<3 {
            let log = BlockLog()
            let line = StartLine(threads: Self.threads)
            let threads = try (0..<Self.threads).map { thread throws(SystemError) in
                try OSThread.spawn { [shared] in
                    var random = SplitMix64(seed: seed &+ UInt64(round &* 100 &+ thread))
                    line.arriveAndWait()
                    var local = shared.makeLocalArena()
                    var sharedBlocks: [(address: Int, byteCount: Int, fill: UInt8)] = []
                    var localBlocks: [(address: Int, byteCount: Int, fill: UInt8)] = []
                    for step in 0..<5_000 {
                        // Mostly small (thread windows), sometimes above 1 KiB (the shared
                        // cursor), alignments 1 to 64 (fetch-and-add or compare-exchange).
                        let byteCount = Int(random.next() % 16 == 0 ? random.next() % 3000 : random.next() % 200)
                        let alignment = 1 << Int(random.next() % 7)
                        let useLocal = step % 2 == 0
                        let block =
                            useLocal
                            ? local.allocate(byteCount: byteCount, alignment: alignment)!
                            : shared.allocate(byteCount: byteCount, alignment: alignment)!
                        precondition(Int(bitPattern: block) % alignment == 0, "seed \(seed): misaligned \(block)")
                        let fill = UInt8(truncatingIfNeeded: thread &* 31 &+ step)
                        block.initializeMemory(as: UInt8.self, repeating: fill, count: byteCount)
                        if useLocal {
                            localBlocks.append((Int(bitPattern: block), byteCount, fill))
                        } else {
                            sharedBlocks.append((Int(bitPattern: block), byteCount, fill))
                        }
                        if step == 2_500 {
                            // A local reset: its blocks are dead, its other chunks become spares.
                            local.reset()
                            localBlocks.removeAll()
                        }
                    }
                    log.append(sharedBlocks + localBlocks)
                    // The local arena ends here: its chunks go back to the shared arena and
                    // its blocks stay valid until the shared reset.
                }
            }
            for thread in threads { thread.join() }
            // Released on another thread: the main thread reads every block, then resets.
            expectDisjointAndIntact(log.all, seed: seed)
            #expect(
                shared.integrityViolation() == nil, "seed \(seed) round \(round): \(shared.integrityViolation() ?? "")")
            let statistics = shared.statistics()
            #expect(statistics.chunks >= 2 && statistics.bytesInUse > 0, "seed \(seed) round \(round)")
            shared.reset()
            #expect(shared.statistics().resets == round + 1 && shared.statistics().bytesInUse == 0)
            #expect(
                shared.integrityViolation() == nil, "seed \(seed) round \(round): \(shared.integrityViolation() ?? "")")
        }
        // A second round reuses the spare chunks the local arenas gave back.
        let chunksBefore = shared.statistics().chunks
        var local = shared.makeLocalArena()
        _ = local.allocate(byteCount: 100)
        #expect(shared.statistics().chunks == chunksBefore, "a local arena took a new chunk while spares were left")
        #expect(local.integrityViolation() == nil && shared.integrityViolation() == nil)
    }

    @Test("threads allocate from a shared arena with a limit, which one thread changes meanwhile")
    func sharedLimit() throws {
        let seed = testSeed()
        let limits = [96 << 10, 256 << 10, 160 << 10]
        var shared = SharedArena(firstChunkByteCount: 512, allocationLimit: limits[0])
        for round in 0..<3 {
            let log = BlockLog()
            let failures = SumLog()
            let line = StartLine(threads: Self.threads + 1)
            var threads = try (0..<Self.threads).map { thread throws(SystemError) in
                try OSThread.spawn { [shared] in
                    var random = SplitMix64(seed: seed &+ UInt64(round &* 100 &+ thread))
                    line.arriveAndWait()
                    var local = shared.makeLocalArena()
                    var blocks: [(address: Int, byteCount: Int, fill: UInt8)] = []
                    var failed = 0
                    for step in 0..<3_000 {
                        let byteCount = Int(random.next() % 8 == 0 ? random.next() % 3000 : random.next() % 200)
                        let useLocal = step % 2 == 0
                        let block =
                            useLocal
                            ? local.allocate(byteCount: byteCount, alignment: 8)
                            : shared.allocate(byteCount: byteCount, alignment: 8)
                        guard let block else {
                            failed += 1
                            continue
                        }
                        let fill = UInt8(truncatingIfNeeded: thread &* 31 &+ step)
                        block.initializeMemory(as: UInt8.self, repeating: fill, count: byteCount)
                        blocks.append((Int(bitPattern: block), byteCount, fill))
                    }
                    log.append(blocks)
                    failures.append(failed)
                }
            }
            // Meanwhile the limit is raised and lowered (read under the lock chunks are taken under).
            threads.append(
                try OSThread.spawn { [shared] in
                    line.arriveAndWait()
                    for change in 0..<200 { shared.allocationLimit = limits[(change &+ round) % limits.count] }
                    shared.allocationLimit = limits[0]
                })
            for thread in threads { thread.join() }
            expectDisjointAndIntact(log.all, seed: seed)
            let statistics = shared.statistics()
            #expect(statistics.reservedBytes <= limits.max()!, "seed \(seed) round \(round): \(statistics)")
            #expect(failures.all.reduce(0, +) > 0, "seed \(seed) round \(round): the limit was never hit")
            #expect(
                shared.integrityViolation() == nil, "seed \(seed) round \(round): \(shared.integrityViolation() ?? "")")
            shared.reset()
            #expect(shared.statistics().reservedBytes <= limits[0], "seed \(seed): the reset kept more than the limit")
            #expect(shared.integrityViolation() == nil, "seed \(seed): \(shared.integrityViolation() ?? "")")
        }
    }

    @Test("arenas taken from a cache on one thread are given back on another")
    func cacheAcrossThreads() throws {
        let seed = testSeed()
        let cache = ArenaCache(firstChunkByteCount: 512)
        let handed = SumLog()
        let line = StartLine(threads: Self.threads)
        let threads = try (0..<Self.threads).map { thread throws(SystemError) in
            try OSThread.spawn {
                line.arriveAndWait()
                for round in 0..<50 {
                    var arena = cache.take()
                    var sum = 0
                    for index in 0..<300 {
                        let value = arena.put(index &+ round)!
                        sum &+= value.value
                    }
                    let names = arena.collect((0..<20).lazy.map { "t\(thread)-\($0)" })!
                    precondition(names.count == 20 && names[19] == "t\(thread)-19", "seed \(seed): bad names")
                    handed.append(sum)
                    cache.give(arena)
                }
            }
        }
        for thread in threads { thread.join() }
        #expect(handed.count == Self.threads * 50)
        #expect(cache.count >= 1 && cache.count <= Self.threads)
        #expect(cache.integrityViolation() == nil, "seed \(seed): \(cache.integrityViolation() ?? "")")
        var warm = cache.take()
        #expect(warm.statistics().chunks == 1)
        _ = warm.allocate(byteCount: 10)
    }

    @Test("the next local arena starts as large as the largest one before")
    func adaptiveFirstChunk() throws {
        let shared = SharedArena(firstChunkByteCount: 1024)
        try OSThread.spawn { [shared] in
            var local = shared.makeLocalArena()
            for _ in 0..<10_000 { _ = local.allocate(byteCount: 16) }
        }.join()
        var next = shared.makeLocalArena()
        _ = next.allocate(byteCount: 16)
        #expect(next.statistics().reservedBytes >= 131_072, "first chunk \(next.statistics().reservedBytes)")
    }
}
