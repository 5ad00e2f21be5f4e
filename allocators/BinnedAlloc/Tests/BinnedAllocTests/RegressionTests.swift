// Regression tests for bugs found in review, each one failing on the code before its fix.

import AllocCore
import AllocTestSupport
import BinnedAlloc
import Glibc
import Synchronization
import Testing

@Suite("Regressions, in fresh processes")
struct RegressionTests {
    /// A locked allocator's block freed through the shared allocator must not wait in a
    /// thread's remote batch: the locked heap may be gone (deinit) before the batch is
    /// pushed, which crashed the flush (or corrupted a reused page).
    @Test("a locked allocator's block freed through the shared allocator survives the locked allocator's deinit")
    func lockedBlockFreedThroughSharedThenDeinit() async {
        await #expect(processExitsWith: .success) {
            let warmUp = BinnedAllocator.shared.allocate(byteCount: 16)  // this thread gets a heap
            do {
                let locked = LockedBinnedAllocator()
                for _ in 0..<10 {
                    guard let block = locked.allocate(byteCount: 64) else { fatalError("allocation failed") }
                    BinnedAllocator.shared.deallocate(block)
                }
            }
            // Anything left in this thread's batch would be pushed to the vanished heap now.
            for _ in 0..<4 { _ = LockedBinnedAllocator().allocate(byteCount: 64) }
            BinnedAllocator.shared.releaseUnusedMemory()
            BinnedAllocator.shared.deallocate(warmUp)
        }
    }

    /// Large-span counters follow the span: a shared span freed through a locked allocator
    /// leaves the shared figures and never appears in the locked allocator's.
    @Test("a large span is counted where it was allocated, whoever frees it")
    func largeSpanCountersFollowTheSpan() async {
        await #expect(processExitsWith: .success) {
            let locked = LockedBinnedAllocator()
            let before = BinnedAllocator.shared.statistics()
            guard let span = BinnedAllocator.shared.allocate(byteCount: 100_000) else {
                fatalError("allocation failed")
            }
            locked.deallocate(span)
            let after = BinnedAllocator.shared.statistics()
            let lockedFigures = locked.statistics()
            #expect(lockedFigures.largeAllocations == 0 && lockedFigures.largeDeallocations == 0)
            #expect(lockedFigures.largeLiveBytes == 0)
            #expect(after.largeAllocations - before.largeAllocations == 1)
            #expect(after.largeDeallocations - before.largeDeallocations == 1)
            #expect(after.largeLiveBytes == before.largeLiveBytes)
        }
    }

    /// size_t semantics for absurd alignments, as glibc answers them.
    @Test("absurd alignments get glibc's errno")
    func absurdAlignments() {
        var result: UnsafeMutableRawPointer? = UnsafeMutableRawPointer(bitPattern: 0x1234)
        #expect(binned_posix_memalign(&result, Int.min, 16) == ENOMEM, "2^63 is a power of two")
        #expect(result == UnsafeMutableRawPointer(bitPattern: 0x1234))
        errno = 0
        #expect(binned_memalign(Int.min, 16) == nil && errno == ENOMEM, "2^63 is SIZE_MAX / 2 + 1")
        errno = 0
        #expect(binned_memalign(Int.min + 1, 16) == nil && errno == EINVAL, "above 2^63")
        errno = 0
        #expect(binned_aligned_alloc(-1, 16) == nil && errno == EINVAL, "SIZE_MAX")
    }
}

/// Trimming parked heaps while threads start and end: starting threads must still adopt
/// parked heaps (not map new ones), and the hand-over must be race-free (run under the
/// thread sanitizer with the other stress suites).
@Suite("ParkingStress: releaseUnusedMemory against thread churn")
struct ParkingStressTests {
    @Test("threads adopt parked heaps while other threads trim them")
    func adoptionWhileTrimming() async {
        await #expect(processExitsWith: .success) {
            let stop = Atomic<Bool>(false)
            // Two heaps exist at most at once below (the main thread's and one short thread's),
            // plus the trimmers' own.
            let trimmers = (0..<2).map { _ in
                try! OSThread.spawn {
                    while !stop.load(ordering: .relaxed) { BinnedAllocator.shared.releaseUnusedMemory() }
                }
            }
            let before = BinnedAllocator.shared.statistics().threadCaches
            for _ in 0..<300 {
                try! onNewThread {
                    let block = BinnedAllocator.shared.allocate(byteCount: 64)!
                    BinnedAllocator.shared.deallocate(block)
                }
            }
            stop.store(true, ordering: .relaxed)
            for trimmer in trimmers { trimmer.join() }
            let created = BinnedAllocator.shared.statistics().threadCaches - before
            #expect(created <= 2, "\(created) heaps created for 300 short threads, one at a time")
        }
    }
}
