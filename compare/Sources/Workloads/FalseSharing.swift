// False sharing: small objects that several threads write hard. Where an allocator hands
// two threads blocks in one cache line, every write of one thread evicts the other's line,
// and the same loop runs many times slower. Active: each thread's own allocations meet;
// passive: the blocks the main thread allocated for the threads, freed by them, are reused.

import AllocCore
import Glibc

extension Workload.Family {
    /// The false-sharing rows, active and passive, at 1, 2, 4 and 8 threads.
    public static let falseSharing = Workload.Family(
        title: "False sharing (small objects written hard)",
        unit:
            "ns per object (malloc 8 B, 1,000 writes to it, free), wall time over all threads; active: each thread allocates its own objects; passive: the main thread first allocates one 8 B object per thread and hands it over, each thread frees it, then runs the same loop; writes-only: the floor, the same threads writing the same object 1,000 times, each object alone in 128 bytes set aside before the run, nothing allocated or freed"
    )
}

/// Writes the block's first word `writes` times, each a load and a store of its own, and
/// returns the final value.
@inline(__always)
func writeHard(_ block: UnsafeMutableRawPointer, writes: Int, start: Int) -> UInt64 {
    // Relaxed atomic loads and stores compile to plain moves that the optimizer does not
    // merge into one store, so every write reaches the cache line, as a program's does.
    let word = AtomicWord(initializingAt: block, to: start)
    for _ in 0..<writes { word.store(word.load(ordering: .relaxed) &+ 1, ordering: .relaxed) }
    return UInt64(truncatingIfNeeded: word.load(ordering: .relaxed))
}

/// One block per thread, made before the threads start: the main thread's blocks that the
/// passive rows hand over, or the floor's objects.
final class HandedBlocks: @unchecked Sendable {
    let blocks: UnsafeMutablePointer<UnsafeMutableRawPointer>
    init(count: Int, make: () -> UnsafeMutableRawPointer) {
        blocks = .allocate(capacity: count)
        for index in 0..<count { (blocks + index).initialize(to: make()) }
    }
    deinit { blocks.deallocate() }
}

@inline(never)
func falseSharing<A: BenchAllocator>(
    _ allocator: A, threads: Int, objectSize: Int, writes: Int, passive: Bool, operations: Int
) -> Measurement {
    precondition(objectSize >= 8, "an object of the false-sharing rows holds a word")
    let perThread = max(1, operations / threads)
    let handed: HandedBlocks? = passive ? HandedBlocks(count: threads) { allocator.allocate(objectSize) } : nil
    let checksum = AtomicCounterBox()
    let line = onThreads(threads) { thread, line in
        var sum: UInt64 = 0
        line.arriveAndWait()
        if let handed { allocator.deallocate(handed.blocks[thread], byteCount: objectSize) }
        for index in 0..<perThread {
            let block = allocator.allocate(objectSize)
            sum &+= writeHard(block, writes: writes, start: index)
            allocator.deallocate(block, byteCount: objectSize)
        }
        line.finish()
        _ = checksum.add(Int(truncatingIfNeeded: sum))
    }
    return Measurement(nanoseconds: line.elapsed, operations: perThread * threads, checksum: UInt64(checksum.load()))
}

/// The false-sharing rows' floor (the writes-only column): the loop of `falseSharing`
/// without the allocator, each thread writing an object of its own that no other thread's
/// shares a line with, or the adjacent line that the L2 prefetcher fetches with it (128
/// bytes apart). A row whose allocators all run at this time cannot be won by any.
@inline(never)
func falseSharingFloor(threads: Int, writes: Int, operations: Int) -> Measurement {
    let perThread = max(1, operations / threads)
    let objects = HandedBlocks(count: threads) { .allocate(byteCount: 128, alignment: 128) }
    defer { for thread in 0..<threads { objects.blocks[thread].deallocate() } }
    let checksum = AtomicCounterBox()
    let line = onThreads(threads) { thread, line in
        let object = objects.blocks[thread]
        var sum: UInt64 = 0
        line.arriveAndWait()
        for index in 0..<perThread { sum &+= writeHard(object, writes: writes, start: index) }
        line.finish()
        _ = checksum.add(Int(truncatingIfNeeded: sum))
    }
    return Measurement(nanoseconds: line.elapsed, operations: perThread * threads, checksum: UInt64(checksum.load()))
}
