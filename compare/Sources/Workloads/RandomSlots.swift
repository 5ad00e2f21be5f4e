// Random slots: per thread a table of slots that starts empty; each step picks a random
// slot, frees the block it holds (if any) and puts a new block of a random size up to
// 1 KiB there, writing its first byte. Unlike the working-set rows, the live set grows
// from nothing and sizes are uniform, so most requests are of the larger small classes.

import AllocCore
import Glibc

extension Workload.Family {
    /// The random-slot rows at 1, 2, 4 and 8 threads.
    public static let randomSlots = Workload.Family(
        title: "Random slots",
        unit:
            "ns per step (pick a random slot of the thread's 1,000, free its block if any, malloc a random size, uniform 1 B–1 KiB, write its first byte), wall time over all threads' steps"
    )
}

@inline(never)
func randomSlots<A: BenchAllocator>(
    _ allocator: A, threads: Int, slots: Int, maximumSize: Int, operations: Int
) -> Measurement {
    let perThread = max(1, operations / threads)
    let checksum = AtomicCounterBox()
    let line = onThreads(threads) { thread, line in
        let draws = UniformDraws(seed: 0x510_7000 + UInt64(thread), sizes: 1...maximumSize, slotCount: slots)
        let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: slots)
        let sizes = UnsafeMutablePointer<Int>.allocate(capacity: slots)
        blocks.initialize(repeating: nil, count: slots)
        sizes.initialize(repeating: 0, count: slots)
        var sum: UInt64 = 0
        line.arriveAndWait()
        for step in 0..<perThread {
            let slot = draws.slot(step)
            let size = draws.size(step)
            if let old = blocks[slot] { allocator.deallocate(old, byteCount: sizes[slot]) }
            let block = allocator.allocate(size)
            sum &+= touch(block, step)
            blocks[slot] = block
            sizes[slot] = size
        }
        line.finish()
        for slot in 0..<slots {
            if let block = blocks[slot] { allocator.deallocate(block, byteCount: sizes[slot]) }
        }
        blocks.deallocate()
        sizes.deallocate()
        draws.deallocate()
        _ = checksum.add(Int(truncatingIfNeeded: sum))
    }
    return Measurement(nanoseconds: line.elapsed, operations: perThread * threads, checksum: UInt64(checksum.load()))
}
