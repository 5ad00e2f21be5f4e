// Burst then idle: a service that takes a burst of work, frees it all, then sits idle.
// Two threads allocate and keep about 250 MiB each, free it, and exit; the process then
// sleeps without one allocator call, and RSS is read after each purge delay: what an
// allocator gives back to the system on its own, and when.

import AllocCore
import Glibc

extension Workload.Family {
    /// The burst-then-idle row, with its RSS readings as extra columns.
    public static let burstIdle = Workload.Family(
        title: "Burst then idle (RSS given back after the burst)",
        unit:
            "ns per block (malloc, then free), the burst's wall time plus the free phase's, the RSS readings and the sleeps not timed: 2 threads each malloc 2,800 blocks of random sizes (log-uniform 16 B–1 MiB, seeded: about 250 MiB per thread), writing one byte per 4 KiB of each, and keep them all; after both are done each frees its own blocks and exits; RSS (VmRSS, MiB) is read before the burst, with every block live, after the threads are joined, then after one purge delay (1 s, BinnedMalloc's default) of sleep with no allocator call, and after a second; +2 delays ÷ before is the last reading over the first; no warm-up (each cell is a fresh process's first burst); quick runs allocate 1/20 of the blocks and sleep as long",
        extras: [
            Extra(key: "rss.before", header: "RSS before MiB"), Extra(key: "rss.burst", header: "burst MiB"),
            Extra(key: "rss.freed", header: "freed MiB"), Extra(key: "rss.delay1", header: "+1 delay MiB"),
            Extra(key: "rss.delay2", header: "+2 delays MiB"),
            Extra(key: "rss.delay2OverBefore", header: "+2 delays ÷ before", digits: 2),
        ])
}

/// How long the burst-then-idle row sleeps between its last RSS readings: one second,
/// BinnedMalloc's default purge delay (how long it keeps freed memory before giving it back),
/// so that "+1 delay" is the first reading at which it should have given it back, and
/// "+2 delays" one where a purge that runs late has had its time too. The charts label the idle
/// readings with it.
public let purgeDelayNanoseconds: UInt64 = 1_000_000_000

/// The process's RSS in bytes (VmRSS), read without allocating. Traps where it cannot be
/// read: the row has no result without it.
func residentBytes() -> Int {
    guard let bytes = SystemInfo.currentResidentBytes else { fatalError("VmRSS in /proc/self/status is unreadable") }
    return bytes
}

/// Writes one byte at every 4 KiB of the block, so that its pages are resident, and
/// returns the sum of what it reads back (the same for every allocator: it does not depend
/// on where the block lies).
@inline(__always)
func writeEvery4KiB(_ block: UnsafeMutableRawPointer, byteCount: Int, value: Int) -> UInt64 {
    let byte = UInt8(truncatingIfNeeded: value)
    var sum: UInt64 = 0
    var offset = 0
    while offset < byteCount {
        (block + offset).storeBytes(of: byte, as: UInt8.self)
        sum &+= UInt64((block + offset).load(as: UInt8.self))
        offset += 4096
    }
    return sum
}

/// One thread's share of the burst: its sizes, drawn before RSS is first read, and the
/// blocks it keeps live until the free phase, in memory allocated before that reading too.
final class BurstLane: @unchecked Sendable {
    let count: Int
    let sizes: [Int]
    let blocks: UnsafeMutablePointer<UnsafeMutableRawPointer>
    var checksum: UInt64 = 0

    init(seed: UInt64, count: Int, minimumSize: Int, maximumSize: Int) {
        precondition(count <= RandomTable.count, "a burst lane draws at most \(RandomTable.count) sizes")
        self.count = count
        sizes = RandomTable(seed: seed, minimumSize: minimumSize, maximumSize: maximumSize, slotCount: 1).sizes
        blocks = .allocate(capacity: count)
    }

    /// The burst: every block allocated and written, none freed.
    func allocate<A: BenchAllocator>(_ allocator: A) {
        var sum = checksum
        sizes.withUnsafeBufferPointer { sizes in
            for index in 0..<count {
                let block = allocator.allocate(sizes[index])
                sum &+= writeEvery4KiB(block, byteCount: sizes[index], value: index)
                (blocks + index).initialize(to: block)
            }
        }
        checksum = sum
    }

    /// The free phase: every block read once and freed, oldest first.
    func free<A: BenchAllocator>(_ allocator: A) {
        var sum = checksum
        sizes.withUnsafeBufferPointer { sizes in
            for index in 0..<count {
                sum &+= UInt64(blocks[index].load(as: UInt8.self))
                allocator.deallocate(blocks[index], byteCount: sizes[index])
            }
        }
        checksum = sum
    }

    deinit { blocks.deallocate() }
}

@inline(never)
func burstIdle<A: BenchAllocator>(
    _ allocator: A, threads: Int, minimumSize: Int, maximumSize: Int, delayNanoseconds: UInt64, operations: Int
) -> Measurement {
    let perThread = max(1, operations / threads)
    let lanes = (0..<threads).map { lane in
        BurstLane(
            seed: 0xB_0257_0050 + UInt64(lane), count: perThread, minimumSize: minimumSize, maximumSize: maximumSize)
    }
    let freeLine = StartLine(threads: threads)
    let burstResident = AtomicCounterBox()
    let before = residentBytes()
    let burstLine = onThreads(threads) { index, line in
        let lane = lanes[index]
        line.arriveAndWait()
        lane.allocate(allocator)
        line.finish()
        // The last thread done reads RSS with every block of both threads live, before any is freed.
        freeLine.arriveAndWait { burstResident.store(residentBytes()) }
        lane.free(allocator)
        freeLine.finish()
    }
    let freed = residentBytes()
    SystemInfo.sleep(nanoseconds: delayNanoseconds)
    let afterOneDelay = residentBytes()
    SystemInfo.sleep(nanoseconds: delayNanoseconds)
    let afterTwoDelays = residentBytes()
    let mebibytes = { (bytes: Int) in Double(bytes) / 1_048_576 }
    return Measurement(
        nanoseconds: burstLine.elapsed + freeLine.elapsed, operations: perThread * threads,
        checksum: lanes.reduce(0) { $0 &+ $1.checksum },
        extras: [
            "rss.before": mebibytes(before), "rss.burst": mebibytes(burstResident.load()),
            "rss.freed": mebibytes(freed), "rss.delay1": mebibytes(afterOneDelay),
            "rss.delay2": mebibytes(afterTwoDelays),
            "rss.delay2OverBefore": Double(afterTwoDelays) / Double(max(1, before)),
        ])
}
