// Thread churn: blocks that outlive the thread that allocated them. Each of P lanes owns a
// table of slots; a lane's rounds run one after another, each on a fresh thread that
// replaces random slots and exits, so most frees of the next round hit blocks whose
// allocating thread is gone (the shape of a server whose worker threads come and go).

import AllocCore
import Glibc

extension Workload.Family {
    /// The thread-churn rows, at 1, 2, 4 and 8 lanes, with `free` or `free_sized`.
    public static let threadChurn = Workload.Family(
        title: "Thread churn (blocks freed after their thread exited)",
        unit:
            "ns per replacement (free a random slot's block, malloc a random size, uniform 8–1,000 B, write a byte), wall time over all lanes, thread starts included; each lane owns 5,000 slots and runs rounds of 5,000 replacements, each round on a fresh thread that then exits (so about 63% of frees hit a block of an exited thread, the rest one of the round's own); ops/s from that time; `-sized` rows free with C23 `free_sized` where the column's allocator exports it and fall back to `free` where it does not (glibc 2.36, jemalloc 5.3, mimalloc 2.0.9 and tcmalloc 2.10 export none; the BinnedAlloc column frees through its Swift API): free_sized 1 where it was used, 0 where the row freed with free",
        extras: [Extra(key: "opsPerSecond", header: "ops/s"), Extra(key: "freeSized", header: "free_sized")])
}

/// One lane of the thread-churn workload: its slots and its random streams, drawn before
/// the clock starts, handed from each round's thread to the next (a join orders them).
final class ChurnLane: @unchecked Sendable {
    let slotCount: Int
    let blocks: UnsafeMutablePointer<UnsafeMutableRawPointer>
    let sizes: UnsafeMutablePointer<Int>
    let draws: UniformDraws
    /// How many draws the lane's threads have used so far.
    var drawn = 0
    var checksum: UInt64 = 0

    init(seed: UInt64, slotCount: Int, minimumSize: Int, maximumSize: Int) {
        self.slotCount = slotCount
        blocks = .allocate(capacity: slotCount)
        sizes = .allocate(capacity: slotCount)
        draws = UniformDraws(seed: seed, sizes: minimumSize...maximumSize, slotCount: slotCount)
    }

    /// Fills every slot (not timed; run on a thread that exits before the clock starts).
    func fill<A: BenchAllocator>(_ allocator: A) {
        for slot in 0..<slotCount {
            let size = draws.size(drawn)
            let block = allocator.allocate(size)
            checksum &+= touch(block, drawn)
            (blocks + slot).initialize(to: block)
            (sizes + slot).initialize(to: size)
            drawn &+= 1
        }
    }

    /// One round: `replacements` random slots get a new block of a new size.
    @inline(__always)
    func round<A: BenchAllocator>(_ allocator: A, replacements: Int, sized: Bool) {
        var drawn = self.drawn
        var sum = checksum
        for _ in 0..<replacements {
            let slot = draws.slot(drawn)
            let size = draws.size(drawn)
            if sized {
                allocator.deallocateSized(blocks[slot], byteCount: sizes[slot])
            } else {
                allocator.deallocate(blocks[slot], byteCount: sizes[slot])
            }
            let block = allocator.allocate(size)
            sum &+= touch(block, drawn)
            blocks[slot] = block
            sizes[slot] = size
            drawn &+= 1
        }
        self.drawn = drawn
        checksum = sum
    }

    /// Frees what the slots hold and the lane's own memory (not timed).
    func release<A: BenchAllocator>(_ allocator: A) {
        for slot in 0..<slotCount { allocator.deallocate(blocks[slot], byteCount: sizes[slot]) }
        blocks.deallocate()
        sizes.deallocate()
        draws.deallocate()
    }
}

/// Runs `body` on a thread of its own and waits until that thread has exited.
func onFreshThread(_ body: @escaping @Sendable () -> Void) {
    do { try OSThread.spawn(body).join() } catch { fatalError("cannot start a thread: \(error)") }
}

@inline(never)
func threadChurn<A: BenchAllocator>(
    _ allocator: A, threads: Int, slots: Int, roundLength: Int, minimumSize: Int, maximumSize: Int, sized: Bool,
    operations: Int
) -> Measurement {
    let perRound = min(roundLength, max(1, operations / threads))
    let rounds = max(1, operations / (threads * perRound))
    let lanes = (0..<threads).map { lane in
        ChurnLane(
            seed: 0x5EED_0000 + UInt64(lane), slotCount: slots, minimumSize: minimumSize, maximumSize: maximumSize)
    }
    let line = onThreads(threads) { index, line in
        let lane = lanes[index]
        // Filled by a thread that is gone before the clock starts: from the first round on,
        // a free hits a block of an exited thread or of the round's own thread.
        onFreshThread { lane.fill(allocator) }
        line.arriveAndWait()
        for _ in 0..<rounds {
            onFreshThread { lane.round(allocator, replacements: perRound, sized: sized) }
        }
        line.finish()
    }
    var checksum: UInt64 = 0
    for lane in lanes {
        checksum &+= lane.checksum
        lane.release(allocator)
    }
    let total = rounds * perRound * threads
    return Measurement(
        nanoseconds: line.elapsed, operations: total, checksum: checksum,
        extras: [
            "opsPerSecond": Double(total) / (Double(max(1, line.elapsed)) / 1e9),
            "freeSized": sized && allocator.hasSizedFree ? 1 : 0,
        ])
}
