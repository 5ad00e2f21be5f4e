// The span cache (spec section 6, "Large blocks"): freed large blocks of the shared
// allocator wait, mapped, for the next request they fit. Each test runs in a fresh child
// process (an exit test), where no other test takes from the process-wide cache meanwhile,
// and first sets a purge delay of an hour, so that no purge empties the cache while it runs
// (`IdleReturnTests` tests the purge).

import AllocCore
import BinnedAlloc
import Glibc
import Testing

@Suite("Large span cache, in a fresh process")
struct SpanCacheTests {
    @Test("a freed large block is reused for its class, warm, and counted as cached meanwhile")
    func freedSpanIsReusedForItsClass() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            allocator.configuration.purgeDelayMilliseconds = 3_600_000
            let first = allocator.allocate(byteCount: 100_000)!
            // 100,000 bytes fall in the (64 KiB, 128 KiB] classes of 16 KiB steps: 112 KiB.
            #expect(allocator.usableSize(of: first) == 112 << 10)
            memset(first, 0x5A, 100_000)
            let mappedBefore = allocator.statistics().bytesMapped
            allocator.deallocate(first)
            let cached = allocator.statistics()
            #expect(cached.cachedLargeBlocks == 1 && cached.cachedLargeBytes == 112 << 10)
            #expect(cached.bytesMapped == mappedBefore, "a cached span stays mapped")
            // Any size of the same class takes it back.
            let second = allocator.allocate(byteCount: 99_000)!
            #expect(second == first)
            #expect((second + 50_000).load(as: UInt8.self) == 0x5A, "reused warm, not remapped")
            #expect(allocator.statistics().cachedLargeBlocks == 0)
            // A class more than half as big again does not (a smaller one would): the miss
            // maps new memory, and first unmaps as much of the cache, oldest first, of the
            // spans cached more than 10 ms ago.
            allocator.deallocate(second)
            usleep(20_000)
            let returned = allocator.statistics().bytesReturned
            let third = allocator.allocate(byteCount: 60_000)!
            #expect(allocator.usableSize(of: third) == 64 << 10)
            #expect(allocator.statistics().cachedLargeBlocks == 0)
            #expect(allocator.statistics().bytesReturned >= returned + (112 << 10), "the cached span was unmapped")
            allocator.deallocate(third)
        }
    }

    @Test("a freed span serves a smaller class within half as much again; realloc keeps spans in classes")
    func closestFitAndClassSizedRealloc() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            allocator.configuration.purgeDelayMilliseconds = 3_600_000
            let big = allocator.allocate(byteCount: 120 << 10)!  // class 128 KiB
            allocator.deallocate(big)
            let smaller = allocator.allocate(byteCount: 90 << 10)!  // class 96 KiB: 128 ≤ 96 × 1.5
            #expect(smaller == big)
            #expect(allocator.usableSize(of: smaller) == 128 << 10)
            // Growing past the span moves it to a class size, so it is cached when freed.
            let grown = allocator.reallocate(smaller, byteCount: 300_000)!
            #expect(allocator.usableSize(of: grown) == 320 << 10)
            // Shrinking while more than half stays used keeps the span as it is.
            #expect(allocator.reallocate(grown, byteCount: 200_000) == grown)
            #expect(allocator.usableSize(of: grown) == 320 << 10)
            allocator.deallocate(grown)
            #expect(allocator.statistics().cachedLargeBlocks == 1)
            // The page allocator's spans keep their page-rounded sizes.
            let pages = BinnedPageAllocator().allocate(byteCount: 100_000)!
            let resized = BinnedPageAllocator().reallocate(pages, byteCount: 150_000)!
            #expect(BinnedPageAllocator().usableSize(of: resized) == 151_552)
            BinnedPageAllocator().deallocate(resized)
        }
    }

    @Test("calloc of a reused span reads zero")
    func callocZeroesACachedSpan() async {
        await #expect(processExitsWith: .success) {
            BinnedAllocator.shared.configuration.purgeDelayMilliseconds = 3_600_000
            let first = binned_malloc(200_000)!
            memset(first, 0xFF, 200_000)
            binned_free(first)
            let second = binned_calloc(1, 200_000)!.assumingMemoryBound(to: UInt8.self)
            #expect(UnsafeMutableRawPointer(second) == first, "the test needs the cached span back")
            #expect((0..<200_000).allSatisfy { second[$0] == 0 })
            binned_free(second)
        }
    }

    /// A freed span the cache has no room for is queued for release rather than unmapped
    /// at its free (issue 18's burst row): the next miss or purge unmaps it.
    @Test(
        "the cache is bounded (128 spans, its budget); what it refuses is queued with no munmap, for a miss or a purge to unmap; a miss evicts stale spans next"
    )
    func cacheIsBoundedAndReleasable() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            allocator.configuration.purgeDelayMilliseconds = 3_600_000
            allocator.configuration.spanCacheBytes = 64 << 20
            let unmapCalls = { SystemMemory.statistics.snapshot()[.unmapCalls] }
            let small = (0..<140).map { _ in allocator.allocate(byteCount: 40 << 10)! }
            let unmapsBefore = unmapCalls()
            for block in small { allocator.deallocate(block) }
            // 128 fill the slots; 12 are queued, as live and held bytes stay within the peak.
            #expect(allocator.statistics().cachedLargeBlocks == 140)
            #expect(binned_statistic("queued_large_blocks") == 12)
            #expect(unmapCalls() == unmapsBefore, "a free unmapped a span")
            allocator.releaseUnusedMemory()
            #expect(allocator.statistics().cachedLargeBlocks == 0)
            #expect(allocator.statistics().cachedLargeBytes == 0)
            #expect(unmapCalls() >= unmapsBefore + 140)

            let big = (0..<25).map { _ in allocator.allocate(byteCount: 3 << 20)! }
            for block in big { allocator.deallocate(block) }
            let statistics = allocator.statistics()
            // 21 spans of 3 MiB fit in the 64 MiB budget; the last 4 freed are queued.
            #expect(statistics.cachedLargeBlocks == 25)
            #expect(binned_statistic("queued_large_blocks") == 4)
            #expect(Int64(statistics.cachedLargeBytes) - binned_statistic("queued_large_bytes") == 63 << 20)
            // 5 MiB fits no cached span: two queued spans (6 MiB) go before it is mapped.
            let mapped = statistics.bytesMapped
            let huge = allocator.allocate(byteCount: 5 << 20)!
            #expect(allocator.statistics().bytesMapped < mapped, "the miss unmapped more than it mapped")
            #expect(binned_statistic("queued_large_blocks") == 2)
            #expect(allocator.statistics().cachedLargeBlocks == 23)
            // 7 MiB: the last two queued spans, then, once they are stale (10 ms), one cached.
            usleep(20_000)
            let larger = allocator.allocate(byteCount: 7 << 20)!
            #expect(binned_statistic("queued_large_blocks") == 0)
            #expect(allocator.statistics().cachedLargeBlocks == 20)
            allocator.deallocate(huge)
            allocator.deallocate(larger)
            allocator.releaseUnusedMemory()
            #expect(allocator.statistics().cachedLargeBlocks == 0)
        }
    }

    /// Issue 18: buffers above 4 MiB, freed after a peak, wait warm for the next ones (the
    /// big-blocks and large-mixed rows), and live plus cached bytes stay within that peak.
    @Test("spans above 4 MiB are cached up to the recent peak of live large bytes; smaller ones within the budget")
    func bigSpansAreCachedUpToTheRecentPeak() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            allocator.configuration.purgeDelayMilliseconds = 3_600_000
            #expect(allocator.configuration.spanCacheBytes == 16 << 20)
            // Ten 8 MiB buffers live at once, then freed: each fits within the peak (80 MiB)
            // less what is still live, so all are kept (the budget alone keeps 16 MiB).
            let big = (0..<10).map { _ in allocator.allocate(byteCount: 8 << 20)! }
            for block in big { allocator.deallocate(block) }
            var statistics = allocator.statistics()
            #expect(statistics.cachedLargeBlocks == 10 && statistics.cachedLargeBytes == 80 << 20)
            // They come back warm: no new mapping.
            let mapped = statistics.bytesMapped
            let again = (0..<10).map { _ in allocator.allocate(byteCount: 8 << 20)! }
            #expect(allocator.statistics().bytesMapped == mapped && allocator.statistics().cachedLargeBlocks == 0)
            for block in again { allocator.deallocate(block) }
            // A purge gives them back.
            allocator.releaseUnusedMemory()
            statistics = allocator.statistics()
            #expect(statistics.cachedLargeBlocks == 0 && statistics.cachedLargeBytes == 0)
            // Class-sized spans (3 MiB) keep to the budget whatever the peak: 5 of 10 (15 MiB)
            // are cached, the other 5 queued for release.
            let classSized = (0..<10).map { _ in allocator.allocate(byteCount: 3 << 20)! }
            for block in classSized { allocator.deallocate(block) }
            #expect(allocator.statistics().cachedLargeBlocks == 10)
            #expect(binned_statistic("queued_large_blocks") == 5)
            allocator.releaseUnusedMemory()
            #expect(allocator.statistics().cachedLargeBlocks == 0)
        }
    }

    /// calloc of a cached span grown by mremap clears what the span held, up to its old
    /// mapping's end (past its old usable size, where it held more before it was cut),
    /// and faults the new pages in with one madvise instead of clearing them, after one
    /// that advises the span huge pages.
    @Test(
        "calloc that grows a cached span above 4 MiB reads zero everywhere, advises it huge pages and faults the new pages in at once"
    )
    func callocOfAGrownSpanReadsZero() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            allocator.configuration.purgeDelayMilliseconds = 3_600_000
            func expectZero(_ block: UnsafeMutableRawPointer, _ byteCount: Int) {
                let bytes = UnsafeRawBufferPointer(start: block, count: byteCount)
                let firstNonZero = bytes.firstIndex { $0 != 0 }
                #expect(firstNonZero == nil, "byte \(firstNonZero ?? -1) of \(byteCount) is not zero")
            }
            // A span of 8 MiB + 200 KiB, dirty to its end, is cut (more than 1/8 to spare)
            // to 7 MiB + 100 KiB: its last granule keeps dirty bytes past the new size.
            let large = binned_malloc((8 << 20) + (200 << 10))!
            memset(large, 0xAB, allocator.usableSize(of: large))
            binned_free(large)
            let cut = binned_calloc(1, (7 << 20) + (100 << 10))!
            expectZero(cut, (7 << 20) + (100 << 10))
            memset(cut, 0xCD, allocator.usableSize(of: cut))
            binned_free(cut)
            #expect(allocator.statistics().cachedLargeBlocks == 1)
            // A 9 MiB calloc grows it: one madvise advises the span huge pages and one faults
            // in the pages past the old mapping (each counted where it succeeds: a kernel
            // without transparent huge pages refuses the first, one before 5.14 the second,
            // and the pages then fault in as touched).
            let page = SystemInfo.pageSize
            let probe = try! SystemMemory.map(byteCount: page)
            let populates = (try? SystemMemory.advise(probe, byteCount: page, .populateWrite)) != nil
            let hugePages = (try? SystemMemory.advise(probe, byteCount: page, .hugePage)) != nil
            try! SystemMemory.unmap(probe, byteCount: page)
            let advised = SystemMemory.statistics.snapshot()[.adviseCalls]
            let grown = binned_calloc(1, 9 << 20)!
            #expect(allocator.statistics().cachedLargeBlocks == 0, "the cached span was not taken")
            #expect(
                SystemMemory.statistics.snapshot()[.adviseCalls] == advised + (populates ? 1 : 0) + (hugePages ? 1 : 0))
            let range = Int(bitPattern: grown)..<Int(bitPattern: grown) + (9 << 20)
            let usage = try! MemoryMappings.usage(of: [range])[0]
            #expect(usage.hugePageAdvisedBytes == (hugePages ? 9 << 20 : 0), "\(usage)")
            expectZero(grown, 9 << 20)
            binned_free(grown)
        }
    }

    /// A span mapped above 4 MiB starts on a huge page, so that huge pages line up with it;
    /// a fresh one, which calloc leaves to fault in as touched, keeps small pages (a program
    /// that touches it sparsely keeps a small resident set).
    @Test("a span mapped above 4 MiB starts on a 2 MiB boundary; a fresh one is not advised huge pages")
    func bigSpansAlignToHugePages() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            allocator.configuration.purgeDelayMilliseconds = 3_600_000
            var blocks: [UnsafeMutableRawPointer] = []
            for byteCount in [(4 << 20) + 1, 6 << 20, (10 << 20) + 12_345] {
                let block = binned_calloc(1, byteCount)!
                #expect(Int(bitPattern: block) % (2 << 20) == 0, "\(block), \(byteCount) bytes")
                let range = Int(bitPattern: block)..<Int(bitPattern: block) + byteCount
                let usage = try! MemoryMappings.usage(of: [range])[0]
                #expect(usage.hugePageAdvisedBytes == 0, "\(usage)")
                blocks.append(block)
            }
            // At 4 MiB and below spans are sized in classes and aligned to their slab size.
            let classSized = binned_malloc(4 << 20)!
            #expect(Int(bitPattern: classSized) % BinnedAllocator.slabSize == 0)
            for block in blocks + [classSized] { binned_free(block) }
        }
    }

    @Test("spans of locked allocators, page allocators and large alignments are never cached")
    func onlySharedDefaultAlignedSpansAreCached() async {
        await #expect(processExitsWith: .success) {
            let locked = LockedBinnedAllocator()
            locked.deallocate(locked.allocate(byteCount: 100_000))
            BinnedPageAllocator().deallocate(BinnedPageAllocator().allocate(byteCount: 100_000))
            let shared = BinnedAllocator.shared
            shared.deallocate(shared.allocate(byteCount: 100_000, alignment: 1 << 20))
            #expect(shared.statistics().cachedLargeBlocks == 0)
        }
    }
}
