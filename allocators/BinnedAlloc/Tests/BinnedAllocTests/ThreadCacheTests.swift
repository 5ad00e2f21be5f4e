// Per-thread caches: a thread that exits gives its cache back (parked, then reused by the
// next thread), blocks of an exited thread can still be freed anywhere, and the global
// statistics balance once every block is freed.
//
// These tests count caches and live blocks of the process-wide allocator, which the other
// suites use at the same time; so each runs in a fresh child process (an exit test), where
// its thread is the only user of the allocator and every count is exact.

import AllocCore
import AllocTestSupport
import BinnedAlloc
import Glibc
import Synchronization
import Testing

/// Blocks that one thread hands to another in the thread-cache tests.
final class BlockBox: @unchecked Sendable {
    let blocks = Mutex<[Int]>([])
    func put(_ pointer: UnsafeMutableRawPointer) { blocks.withLock { $0.append(Int(bitPattern: pointer)) } }
    func takeAll() -> [UnsafeMutableRawPointer] {
        blocks.withLock { list in
            defer { list.removeAll() }
            return list.map { UnsafeMutableRawPointer(bitPattern: $0)! }
        }
    }
}

/// Allocates `count` blocks of assorted sizes (small and large), writes into each, frees
/// every other one and puts the rest in `box`.
func allocateOnThisThread(_ count: Int, keepingHalfIn box: BlockBox, salt: Int = 0) {
    let allocator = BinnedAllocator.shared
    for index in 0..<count {
        let size = index % 10 == 9 ? 40_000 + 4096 * (index % 3) : 16 + (index * 97 + salt) % 3000
        guard let pointer = allocator.allocate(byteCount: size) else {
            fatalError("allocate(byteCount: \(size)) returned nil")
        }
        memset(pointer, Int32(index & 0xFF), size)
        if index % 2 == 0 { allocator.deallocate(pointer) } else { box.put(pointer) }
    }
}

@Suite("Thread caches, in a fresh process")
struct ThreadCacheTests {
    @Test("a thread that exits parks its cache; the next new thread reuses it")
    func exitedThreadParksItsCache() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            let before = allocator.statistics()
            let box = BlockBox()
            try onNewThread { allocateOnThisThread(100, keepingHalfIn: box) }
            let afterExit = allocator.statistics()
            #expect(afterExit.threadCaches >= before.threadCaches + 1, "the thread got no cache")
            #expect(afterExit.parkedThreadCaches >= 1, "no parked cache after the thread exited")
            #expect(afterExit.liveBlocks == before.liveBlocks + 50, "\(afterExit.liveBlocks) live, expected 50 more")

            // A second thread, started after the first ended, takes the parked cache.
            try onNewThread { allocateOnThisThread(100, keepingHalfIn: box, salt: 1) }
            let afterSecond = allocator.statistics()
            #expect(
                afterSecond.threadCaches == afterExit.threadCaches,
                "a new cache was created although one was parked: \(afterExit.threadCaches) -> \(afterSecond.threadCaches)"
            )
            #expect(afterSecond.parkedThreadCaches >= 1, "the second thread's cache was not parked either")

            // The blocks of both exited threads are freed here, on another thread.
            for pointer in box.takeAll() { allocator.deallocate(pointer) }
            allocator.releaseUnusedMemory()
            let end = allocator.statistics()
            #expect(end.inconsistentClasses.isEmpty, "\(end.inconsistentClasses)")
            #expect(end.liveBlocks == before.liveBlocks, "\(end.liveBlocks) blocks live, \(before.liveBlocks) before")
            #expect(end.largeLiveBytes == before.largeLiveBytes, "end.largeLiveBytes == before.largeLiveBytes")
        }
    }

    /// Issue 18: the blocks an exited thread allocated, freed by another thread, are
    /// collected as their batches reach the parked cache (not at its adoption or the next
    /// purge), so its emptied slabs retire at once; the next thread, which adopts that
    /// cache, takes the same memory again: no slab is mapped, and the new blocks are the
    /// freed ones.
    @Test("blocks of an exited thread, freed elsewhere, are collected at once and reused by the next thread")
    func exitedThreadsFreedBlocksAreReused() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            // No purge meanwhile: the collection counted here is the free path's own.
            allocator.configuration.purgeDelayMilliseconds = 3_600_000
            let sizeClass = BinnedAllocator.sizeClasses.index(for: 64)
            let count = 20_000  // about five slabs of 64-byte blocks
            let slabBlocks = (BinnedAllocator.slabSize - 4096) / 64
            let box = BlockBox()
            // This thread gets its own cache first, so that the parked one waits for the
            // second thread (a thread's first free would adopt it).
            allocator.deallocate(allocator.allocate(byteCount: 64))
            let baseline = allocator.statistics().sizeClasses[sizeClass].slabs
            try onNewThread {
                for _ in 0..<count {
                    guard let pointer = allocator.allocate(byteCount: 64) else { fatalError("allocation failed") }
                    box.put(pointer)
                }
            }
            let first = box.takeAll()
            let allocated = allocator.statistics()
            #expect(allocated.parkedThreadCaches >= 1, "the allocating thread's cache was not parked")
            // Freed on this thread: into its free cache (at most 255 blocks stay) and remote
            // batches of 64 to the parked cache (at most 63 wait). What stays is among the
            // last 511 freed, the last allocated: one slab, or two where they straddle one.
            for pointer in first { allocator.deallocate(pointer) }
            let freed = allocator.statistics()
            #expect(
                freed.sizeClasses[sizeClass].slabs <= baseline + 2,
                "slabs of 64 B after the frees: \(allocated.sizeClasses[sizeClass].slabs) -> \(freed.sizeClasses[sizeClass].slabs)"
            )
            let reused = count - 1_000  // what this thread's free cache and batch may still hold
            try onNewThread {
                for _ in 0..<reused {
                    guard let pointer = allocator.allocate(byteCount: 64) else { fatalError("allocation failed") }
                    box.put(pointer)
                }
            }
            let after = allocator.statistics()
            let second = box.takeAll()
            #expect(after.threadCaches == allocated.threadCaches, "the second thread did not adopt the parked cache")
            #expect(after.bytesMapped == allocated.bytesMapped, "slabs were mapped for blocks freed just before")
            #expect(
                after.sizeClasses[sizeClass].slabs <= allocated.sizeClasses[sizeClass].slabs,
                "slabs of 64 B: \(allocated.sizeClasses[sizeClass].slabs) -> \(after.sizeClasses[sizeClass].slabs)")
            // Retired slabs come back formatted anew, at the same addresses.
            let reusedBlocks = Set(second).intersection(first).count
            #expect(reusedBlocks >= reused - slabBlocks, "only \(reusedBlocks) of \(reused) blocks were reused")
            for pointer in second { allocator.deallocate(pointer) }
        }
    }

    @Test("another thread's block is kept by the freeing thread only if its class fills whole cache lines")
    func foreignBlocksThatShareLinesGoHome() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            // Blocks of this thread's cache, freed by another thread that then allocates the
            // same sizes: a 16-byte block shares its line with its neighbours, which this
            // thread may write, so it goes home and the other thread gets a block of its
            // own slab; a 256-byte block fills its 4 lines, so the freeing thread reuses it.
            let shared = (0..<4).map { _ in allocator.allocate(byteCount: 16)! }
            let filling = allocator.allocate(byteCount: 256)!
            let handed = shared.map { Int(bitPattern: $0) } + [Int(bitPattern: filling)]
            let reused = Mutex<(sharing: Bool, filling: Bool)>((false, false))
            try onNewThread {
                for address in handed { allocator.deallocate(UnsafeMutableRawPointer(bitPattern: address)) }
                let small = (0..<4).map { _ in Int(bitPattern: allocator.allocate(byteCount: 16)!) }
                let large = Int(bitPattern: allocator.allocate(byteCount: 256)!)
                reused.withLock { $0 = (!Set(small).isDisjoint(with: handed), large == handed.last!) }
                for address in small + [large] { allocator.deallocate(UnsafeMutableRawPointer(bitPattern: address)) }
            }
            #expect(!reused.withLock { $0.sharing }, "a 16-byte block of another thread was reused")
            #expect(reused.withLock { $0.filling }, "the 256-byte block of another thread was not reused")
        }
    }

    @Test("200 short threads one after another: the number of caches stays flat")
    func threadChurnReusesCaches() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            let box = BlockBox()
            // One thread first, so that any one-time setup is done.
            try onNewThread { allocateOnThisThread(20, keepingHalfIn: box) }
            let before = allocator.statistics()
            for round in 0..<200 {
                // Each thread also frees the blocks the previous (exited) thread left.
                try onNewThread {
                    for pointer in box.takeAll() { allocator.deallocate(pointer) }
                    allocateOnThisThread(20, keepingHalfIn: box, salt: round)
                }
            }
            let after = allocator.statistics()
            #expect(
                after.threadCaches - before.threadCaches <= 4,
                "200 sequential threads created \(after.threadCaches - before.threadCaches) caches")
            #expect(after.parkedThreadCaches >= 1, "after.parkedThreadCaches >= 1")
            for pointer in box.takeAll() { allocator.deallocate(pointer) }
            allocator.releaseUnusedMemory()
            let end = allocator.statistics()
            #expect(end.inconsistentClasses.isEmpty, "\(end.inconsistentClasses)")
            #expect(end.liveBlocks == 0, "\(end.liveBlocks) blocks still live after every block was freed")
            #expect(end.largeLiveBytes == 0, "end.largeLiveBytes == 0")
        }
    }

    @Test("concurrent threads get distinct caches, and all of them are parked when the threads end")
    func concurrentThreadsGetTheirOwnCaches() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            let threadCount = 4
            let allHaveCaches = StartLine(threads: threadCount)
            let box = BlockBox()
            try onThreads(threadCount) { thread in
                allocateOnThisThread(10, keepingHalfIn: box, salt: thread)
                // Stay alive until every thread has its cache, so none can be reused.
                allHaveCaches.arriveAndWait()
            }
            let after = allocator.statistics()
            #expect(after.threadCaches >= threadCount, "\(threadCount) live threads, \(after.threadCaches) caches")
            #expect(after.parkedThreadCaches >= threadCount, "only \(after.parkedThreadCaches) caches parked")
            for pointer in box.takeAll() { allocator.deallocate(pointer) }
            allocator.releaseUnusedMemory()
            #expect(allocator.statistics().liveBlocks == 0, "allocator.statistics().liveBlocks == 0")
        }
    }

    @Test("after a cross-thread stress, the statistics balance: nothing live, every class consistent")
    func statisticsBalanceAfterCrossThreadTraffic() async {
        let seed = testSeed()
        await #expect(processExitsWith: .success) { [seed = seed as UInt64] in
            let allocator = BinnedAllocator.shared
            let stress = ExchangeStress(
                allocator: allocator, slots: 128, seed: seed, operationsPerThread: 5_000, maximumSize: 65536)
            let threads = 2 * SystemInfo.cpuCount + 1
            try stress.runAll(threads: threads)
            #expect(
                stress.problems.isEmpty, "seed \(seed): \(stress.problems)")
            let beforeRelease = allocator.statistics()
            #expect(beforeRelease.threadCaches >= threads, "seed \(seed): \(beforeRelease.threadCaches) caches")
            allocator.releaseUnusedMemory()
            let statistics = allocator.statistics()
            #expect(statistics.inconsistentClasses.isEmpty, "seed \(seed): \(statistics.inconsistentClasses)")
            #expect(statistics.liveBlocks == 0, "seed \(seed): \(statistics.liveBlocks) blocks still counted live")
            #expect(statistics.largeLiveBytes == 0, "seed \(seed)")
            let allocations = stress.board.allocations.load(ordering: .relaxed)
            #expect(statistics.smallAllocations + statistics.largeAllocations >= allocations, "seed \(seed)")
            #expect(
                statistics.smallDeallocations + statistics.largeDeallocations
                    == statistics.smallAllocations + statistics.largeAllocations, "seed \(seed)")
        }
    }

    /// The schedule under which the count of caches above used to come short, made on
    /// purpose: each thread runs its whole share alone, one after another, as a loaded
    /// machine may run threads started one by one. A thread that ended before the next
    /// made its heap would hand it over (parked, then adopted); every thread makes its heap
    /// before the start line, so none can.
    @Test("every thread of a stress run has a cache of its own, even when the threads run one after another")
    func stressThreadsHoldTheirCachesTogether() async {
        let seed = testSeed()
        await #expect(processExitsWith: .success) { [seed = seed as UInt64] in
            let allocator = BinnedAllocator.shared
            let stress = ExchangeStress(
                allocator: allocator, slots: 128, seed: seed, operationsPerThread: 1_000, maximumSize: 4096,
                operationsPerRound: 1_000, serialized: true)
            let threads = 2 * SystemInfo.cpuCount + 1
            try stress.runAll(threads: threads)
            #expect(
                stress.problems.isEmpty, "seed \(seed): \(stress.problems)")
            let statistics = allocator.statistics()
            #expect(statistics.threadCaches >= threads, "seed \(seed): \(statistics.threadCaches) caches")
        }
    }
}
