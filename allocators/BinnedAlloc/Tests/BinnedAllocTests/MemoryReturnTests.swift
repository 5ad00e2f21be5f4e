// Memory goes back to the OS: after a burst of small blocks is freed and
// releaseUnusedMemory() runs, bytesReturned has grown and the resident set is back near
// where it was. Resident set size is process-wide, so each test runs in a fresh child
// process (an exit test) where nothing else allocates at the same time.

import AllocCore
import AllocTestSupport
import BinnedAlloc
import Glibc
import Testing

let mebibyte = 1 << 20

/// The resident set size now, in bytes.
func residentBytes() -> Int {
    guard let bytes = SystemInfo.currentResidentBytes else { fatalError("VmRSS is unreadable") }
    return bytes
}

/// An array of `count` pointers in memory that is resident before the burst starts, so it
/// does not count in the burst's resident set.
func pointerArray(_ count: Int) -> UnsafeMutablePointer<UnsafeMutableRawPointer?> {
    let array = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: count)
    array.initialize(repeating: nil, count: count)
    return array
}

@Suite("Memory returned to the OS, in a fresh process")
struct MemoryReturnTests {
    @Test("64 MiB of 64-byte blocks, freed and released: bytesReturned grows, RSS falls back")
    func smallBlockBurstIsReturned() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            let count = 64 * mebibyte / 64
            let pointers = pointerArray(count)
            allocator.deallocate(allocator.allocate(byteCount: 64))  // one-time setup out of the way
            allocator.releaseUnusedMemory()
            let before = allocator.statistics()
            let residentBefore = residentBytes()
            for index in 0..<count {
                guard let pointer = allocator.allocate(byteCount: 64) else { fatalError("allocation \(index) failed") }
                memset(pointer, Int32(index & 0xFF), 64)
                pointers[index] = pointer
            }
            let peak = allocator.statistics()
            let residentPeak = residentBytes()
            #expect(residentPeak - residentBefore >= 48 * mebibyte, "the burst did not raise RSS: test is void")
            #expect(
                peak.bytesMapped - before.bytesMapped >= 64 * mebibyte,
                "bytesMapped grew by \(peak.bytesMapped - before.bytesMapped) only")
            #expect(
                peak.sizeClasses[classIndex(64)].liveBlocks - before.sizeClasses[classIndex(64)].liveBlocks == count,
                "peak.sizeClasses[classIndex(64)].liveBlocks - before.sizeClasses[classIndex(64)].liveBlocks == count")
            #expect(
                peak.sizeClasses[classIndex(64)].slabs >= 64 * mebibyte / BinnedAllocator.slabSize,
                "peak.sizeClasses[classIndex(64)].slabs >= 64 * mebibyte / BinnedAllocator.slabSize")
            for index in 0..<count { allocator.deallocate(pointers[index]) }
            allocator.releaseUnusedMemory()
            let after = allocator.statistics()
            let residentAfter = residentBytes()
            #expect(
                after.bytesReturned - before.bytesReturned >= 32 * mebibyte,
                "bytesReturned grew by \(after.bytesReturned - before.bytesReturned) bytes only")
            #expect(
                residentAfter <= residentBefore + 8 * mebibyte,
                "RSS \(residentBefore / mebibyte) MiB before, \(residentPeak / mebibyte) MiB at the peak, \(residentAfter / mebibyte) MiB after release"
            )
            #expect(
                after.sizeClasses[classIndex(64)].liveBlocks == before.sizeClasses[classIndex(64)].liveBlocks,
                "after.sizeClasses[classIndex(64)].liveBlocks == before.sizeClasses[classIndex(64)].liveBlocks")
        }
    }

    @Test("a burst allocated by a thread that exited and freed elsewhere is returned too")
    func burstOfAnExitedThreadIsReturned() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            let count = 32 * mebibyte / 128
            let pointers = SendablePointer(UnsafeMutableRawPointer(pointerArray(count)))
            allocator.deallocate(allocator.allocate(byteCount: 128))
            allocator.releaseUnusedMemory()
            let before = allocator.statistics()
            let residentBefore = residentBytes()
            try onNewThread {
                let array = pointers.raw.assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
                for index in 0..<count {
                    guard let pointer = allocator.allocate(byteCount: 128) else { fatalError("allocation failed") }
                    memset(pointer, 0x5A, 128)
                    array[index] = pointer
                }
            }
            let residentPeak = residentBytes()
            #expect(residentPeak - residentBefore >= 24 * mebibyte, "the burst did not raise RSS: test is void")
            // Freed here: every free is remote to the (exited) thread that allocated.
            let array = pointers.raw.assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
            for index in 0..<count { allocator.deallocate(array[index]) }
            allocator.releaseUnusedMemory()
            let after = allocator.statistics()
            let residentAfter = residentBytes()
            #expect(
                after.bytesReturned - before.bytesReturned >= 16 * mebibyte,
                "bytesReturned grew by \(after.bytesReturned - before.bytesReturned) bytes only")
            #expect(
                residentAfter <= residentBefore + 8 * mebibyte,
                "RSS \(residentBefore / mebibyte) MiB before, \(residentPeak / mebibyte) MiB at the peak, \(residentAfter / mebibyte) MiB after release"
            )
            #expect(after.liveBlocks == before.liveBlocks, "after.liveBlocks == before.liveBlocks")
        }
    }

    @Test("large blocks: freed and released, their pages leave the resident set")
    func largeBlocksAreReturned() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            let count = 64
            let pointers = pointerArray(count)
            let before = allocator.statistics()
            let residentBefore = residentBytes()
            for index in 0..<count {
                let size = mebibyte + index * 4096 + 1
                guard let pointer = allocator.allocate(byteCount: size) else { fatalError("allocation failed") }
                memset(pointer, 0x33, size)
                pointers[index] = pointer
            }
            let peak = allocator.statistics()
            #expect(
                peak.largeAllocations - before.largeAllocations == count,
                "peak.largeAllocations - before.largeAllocations == count")
            #expect(
                peak.largeLiveBytes - before.largeLiveBytes >= count * mebibyte,
                "peak.largeLiveBytes - before.largeLiveBytes >= count * mebibyte")
            #expect(residentBytes() - residentBefore >= 48 * mebibyte, "the blocks did not raise RSS: test is void")
            for index in 0..<count { allocator.deallocate(pointers[index]) }
            allocator.releaseUnusedMemory()
            let after = allocator.statistics()
            #expect(
                after.largeDeallocations - before.largeDeallocations == count,
                "after.largeDeallocations - before.largeDeallocations == count")
            #expect(after.largeLiveBytes == before.largeLiveBytes, "after.largeLiveBytes == before.largeLiveBytes")
            #expect(
                after.bytesReturned - before.bytesReturned >= 32 * mebibyte,
                "after.bytesReturned - before.bytesReturned >= 32 * mebibyte")
            #expect(
                residentBytes() <= residentBefore + 8 * mebibyte, "residentBytes() <= residentBefore + 8 * mebibyte")
        }
    }

    /// The policy needs no call: a slab that empties while it is not current is retired at
    /// once (two kept warm, the rest decommitted or unmapped), so only the current slab, the
    /// reserve and the slabs of the blocks in the free cache stay resident.
    @Test("a freed burst goes back to the OS by itself, with no releaseUnusedMemory call")
    func burstReturnsWithoutAnyCall() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            let count = 64 * mebibyte / 128
            let pointers = pointerArray(count)
            allocator.deallocate(allocator.allocate(byteCount: 128))
            let before = allocator.statistics()
            let residentBefore = residentBytes()
            for index in 0..<count {
                guard let pointer = allocator.allocate(byteCount: 128) else { fatalError("allocation \(index) failed") }
                memset(pointer, Int32(index & 0xFF), 128)
                pointers[index] = pointer
            }
            let residentPeak = residentBytes()
            #expect(residentPeak - residentBefore >= 48 * mebibyte, "the burst did not raise RSS: test is void")
            for index in 0..<count { allocator.deallocate(pointers[index]) }
            let after = allocator.statistics()
            #expect(after.bytesReturned - before.bytesReturned >= 48 * mebibyte)
            #expect(
                residentBytes() <= residentBefore + 4 * mebibyte,
                "RSS \(residentBefore / mebibyte) MiB before, \(residentPeak / mebibyte) MiB at the peak, \(residentBytes() / mebibyte) MiB after"
            )
            // The thread's free cache keeps the newest blocks it freed (at most 256 of 128 B),
            // which may straddle the current slab and the one before it.
            #expect(
                after.sizeClasses[classIndex(128)].slabs <= 2,
                "only the current slab, and one the free cache may pin, stay with the heap")
        }
    }

    @Test("a LockedBinnedAllocator gives back its slabs and large spans when it goes away, live blocks and all")
    func lockedAllocatorDeinitUnmaps() async {
        await #expect(processExitsWith: .success) {
            let count = 64 * mebibyte / 256
            let spanSize = 2 * mebibyte
            let residentBefore = residentBytes()
            do {
                let allocator = LockedBinnedAllocator()
                for index in 0..<count {
                    // Never freed: deinit must give the slabs back all the same.
                    guard let pointer = allocator.allocate(byteCount: 256) else { fatalError("allocation failed") }
                    memset(pointer, Int32(index & 0xFF), 256)
                }
                var spans: [UnsafeMutableRawPointer] = []
                for _ in 0..<16 {
                    guard let span = allocator.allocate(byteCount: spanSize) else { fatalError("allocation failed") }
                    memset(span, 0x5A, spanSize)
                    spans.append(span)
                }
                // One span freed by the shared allocator (it must leave the instance's list),
                // one freed by the instance, one moved by a growing reallocate (the list must
                // follow it); the other 13 stay live until deinit.
                BinnedAllocator.shared.deallocate(spans[0])
                allocator.deallocate(spans[1])
                guard let grown = allocator.reallocate(spans[2], byteCount: 8 * spanSize) else {
                    fatalError("reallocate failed")
                }
                #expect(UnsafeRawPointer(grown).load(fromByteOffset: spanSize - 1, as: UInt8.self) == 0x5A)
                memset(grown, 0x6B, 8 * spanSize)
                let statistics = allocator.statistics()
                #expect(statistics.largeAllocations == 16 && statistics.largeDeallocations == 2)
                #expect(statistics.largeLiveBytes == 13 * spanSize + 8 * spanSize)
                #expect(residentBytes() - residentBefore >= 100 * mebibyte, "RSS did not grow: test is void")
                #expect(
                    statistics.sizeClasses[classIndex(256)].liveBlocks == count,
                    "statistics.sizeClasses[classIndex(256)].liveBlocks == count")
            }
            #expect(
                residentBytes() <= residentBefore + 8 * mebibyte,
                "RSS \(residentBefore / mebibyte) MiB before, \(residentBytes() / mebibyte) MiB after deinit")
        }
    }
}
