// Big blocks: the LargeAlloc suite's mixed-size shape (random 5–25 MiB, at most 20 live,
// a random live block freed before each new one) as a malloc-level row, so that every
// process allocator runs it: blocks come zero-filled from `calloc`, as a program asking
// for a cleared buffer gets them, and every 4 KiB page is read and written.

import AllocCore
import Glibc

extension Workload.Family {
    /// The big-block row.
    public static let bigBlocks = Workload.Family(
        title: "Big blocks (zero-filled, 5–25 MiB)",
        unit:
            "ns per block: calloc of a random size (uniform 5–25 MiB) into one of 20 slots (the slot's block freed first), then one byte per 4 KiB page read (it must be 0) and written; the BinnedAlloc column calls `allocateZeroed`, calloc's Swift form"
    )
}

/// Reads one byte per 4 KiB page (all must be zero) and writes `value` there; returns the
/// sum of what it wrote, with anything non-zero it read weighed far above it, so that a
/// block that was not cleared changes the checksum the driver compares across columns.
@inline(__always)
func readAndWritePages(_ block: UnsafeMutableRawPointer, byteCount: Int, value: Int) -> UInt64 {
    var sum: UInt64 = 0
    var offset = 0
    while offset < byteCount {
        let page = block + offset
        sum &+= UInt64(page.load(as: UInt8.self)) << 32
        page.storeBytes(of: UInt8(truncatingIfNeeded: value), as: UInt8.self)
        sum &+= UInt64(UInt8(truncatingIfNeeded: value))
        offset += 4096
    }
    return sum
}

@inline(never)
func bigBlocks<A: BenchAllocator>(
    _ allocator: A, live: Int, minimumSize: Int, maximumSize: Int, operations: Int
) -> Measurement {
    let draws = UniformDraws(seed: 25, sizes: minimumSize...maximumSize, slotCount: live)
    defer { draws.deallocate() }
    let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: live)
    let sizes = UnsafeMutablePointer<Int>.allocate(capacity: live)
    blocks.initialize(repeating: nil, count: live)
    sizes.initialize(repeating: 0, count: live)
    var checksum: UInt64 = 0
    let start = SystemInfo.monotonicNanoseconds()
    for index in 0..<operations {
        // The first `live` blocks fill the slots in order; then a random one is replaced.
        let slot = index < live ? index : draws.slot(index)
        let size = draws.size(index)
        if let old = blocks[slot] { allocator.deallocate(old, byteCount: sizes[slot]) }
        let block = allocator.allocateZeroed(size)
        checksum &+= readAndWritePages(block, byteCount: size, value: index)
        blocks[slot] = block
        sizes[slot] = size
    }
    let end = SystemInfo.monotonicNanoseconds()
    for slot in 0..<live {
        if let block = blocks[slot] { allocator.deallocate(block, byteCount: sizes[slot]) }
    }
    blocks.deallocate()
    sizes.deallocate()
    return Measurement(nanoseconds: end - start, operations: operations, checksum: checksum)
}
