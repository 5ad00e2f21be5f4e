// Bad input to the Swift API (spec section 9): requests that cannot be met answer nil and
// never crash; programmer errors (a negative size, an alignment that is not a power of two,
// freeing a pointer the allocator does not own) trap with a message, checked in child
// processes (exit tests).

import AllocCore
import AllocTestSupport
import BinnedAlloc
import Glibc
import Testing

/// Powers of two above the largest alignment: allocate answers nil (exhaustion, not misuse).
let tooLargeAlignments = [BinnedAllocator.maximumAlignment << 1, 1 << 40, 1 << 62]
/// Sizes no allocator can meet: nil, not a crash and not an overflow.
let impossibleSizes = [Int.max, Int.max - 4095, Int.max - 16, 1 << 50, 1 << 62]

@Suite("Bad input answers nil")
struct BadInputTests {
    @Test("BinnedAllocator.shared: alignments above the maximum answer nil", arguments: tooLargeAlignments)
    func sharedTooLargeAlignment(alignment: Int) {
        #expect(BinnedAllocator.shared.allocate(byteCount: 64, alignment: alignment) == nil)
        #expect(BinnedAllocator.shared.allocate(byteCount: 0, alignment: alignment) == nil)
        #expect(BinnedAllocator.shared.allocate(byteCount: 100_000, alignment: alignment) == nil)
    }

    @Test("BinnedAllocator.shared: impossible sizes answer nil", arguments: impossibleSizes)
    func sharedImpossibleSize(byteCount: Int) {
        #expect(BinnedAllocator.shared.allocate(byteCount: byteCount) == nil)
        #expect(BinnedAllocator.shared.allocate(byteCount: byteCount, alignment: 4096) == nil)
        #expect(BinnedAllocator.shared.allocate(byteCount: byteCount, alignment: 1 << 20) == nil)
    }

    @Test("LockedBinnedAllocator: alignments above the maximum and impossible sizes answer nil")
    func lockedBadInput() {
        let allocator = LockedBinnedAllocator()
        for alignment in tooLargeAlignments {
            #expect(allocator.allocate(byteCount: 64, alignment: alignment) == nil, "alignment \(alignment)")
        }
        for byteCount in impossibleSizes {
            #expect(allocator.allocate(byteCount: byteCount) == nil, "byteCount \(byteCount)")
            #expect(allocator.allocate(byteCount: byteCount, alignment: 4096) == nil, "byteCount \(byteCount)")
        }
        let statistics = allocator.statistics()
        #expect(statistics.liveBlocks == 0 && statistics.largeLiveBytes == 0, "failed requests left blocks live")
    }

    @Test("BinnedPageAllocator: impossible sizes and alignments above the maximum answer nil")
    func pageAllocatorImpossibleSize() {
        let pages = BinnedPageAllocator()
        for byteCount in impossibleSizes {
            #expect(pages.allocate(byteCount: byteCount) == nil, "byteCount \(byteCount)")
        }
        for alignment in tooLargeAlignments {
            #expect(pages.allocate(byteCount: 4096, alignment: alignment) == nil, "alignment \(alignment)")
        }
    }

    @Test("the largest alignment is honoured, and so is every power of two below it")
    func everyPowerOfTwoAlignment() throws {
        let allocator = BinnedAllocator.shared
        var shift = 0
        while 1 << shift <= BinnedAllocator.maximumAlignment {
            let alignment = 1 << shift
            for byteCount in [1, 100, 5000, BinnedAllocator.smallSizeLimit + 1] {
                let pointer = try #require(
                    allocator.allocate(byteCount: byteCount, alignment: alignment),
                    "allocate(byteCount: \(byteCount), alignment: \(alignment))")
                #expect(isMultiple(pointer, of: max(16, alignment)), "alignment \(alignment): \(pointer)")
                #expect(allocator.usableSize(of: pointer) >= byteCount)
                memset(pointer, 0x7E, byteCount)
                allocator.deallocate(pointer)
            }
            shift += shift < 16 ? 1 : 7  // up to 64 KiB one by one, then 2^23 and 2^30
        }
        #expect(BinnedAllocator.maximumAlignment == 1 << 30)
    }

    @Test("deallocate(nil) is a no-op; usableSize(nil) is 0")
    func nilPointer() {
        let locked = LockedBinnedAllocator()
        locked.deallocate(nil)
        #expect(locked.usableSize(of: nil) == 0)
        #expect(
            locked.statistics().smallDeallocations + locked.statistics().largeDeallocations == 0,
            "deallocate(nil) counted a free")
        BinnedAllocator.shared.deallocate(nil)
        #expect(BinnedAllocator.shared.usableSize(of: nil) == 0)
        BinnedPageAllocator().deallocate(nil)
        #expect(BinnedPageAllocator().usableSize(of: nil) == 0)
    }

    @Test("reallocate to an impossible size answers nil and leaves the block valid, contents intact")
    func failedReallocateKeepsTheBlock() throws {
        let allocator = BinnedAllocator.shared
        for byteCount in [1, 100, 4000, BinnedAllocator.smallSizeLimit, 200_000] {
            let pointer = try #require(allocator.allocate(byteCount: byteCount))
            let usable = allocator.usableSize(of: pointer)
            Pattern.fill(pointer, tag: byteCount, range: 0..<byteCount)
            for impossible in [1 << 50, Int.max, Int.max - 4095] {
                #expect(allocator.reallocate(pointer, byteCount: impossible) == nil, "\(byteCount) -> \(impossible)")
                #expect(Pattern.matches(pointer, tag: byteCount, range: 0..<byteCount), "contents lost")
                #expect(allocator.usableSize(of: pointer) == usable)
            }
            // Still a live block: it can be resized and freed.
            let grown = try #require(allocator.reallocate(pointer, byteCount: byteCount * 2))
            #expect(Pattern.matches(grown, tag: byteCount, range: 0..<byteCount))
            allocator.deallocate(grown)
        }
    }

    @Test("LockedBinnedAllocator and BinnedPageAllocator: a failed reallocate leaves the block valid")
    func failedReallocateKeepsTheBlockElsewhere() throws {
        let locked = LockedBinnedAllocator()
        let small = try #require(locked.allocate(byteCount: 300))
        Pattern.fill(small, tag: 1, range: 0..<300)
        #expect(locked.reallocate(small, byteCount: 1 << 50) == nil)
        #expect(Pattern.matches(small, tag: 1, range: 0..<300))
        locked.deallocate(small)
        #expect(locked.statistics().liveBlocks == 0)

        let pages = BinnedPageAllocator()
        let span = try #require(pages.allocate(byteCount: 10_000))
        Pattern.fill(span, tag: 2, range: 0..<10_000)
        #expect(pages.reallocate(span, byteCount: 1 << 50) == nil)
        #expect(Pattern.matches(span, tag: 2, range: 0..<10_000))
        pages.deallocate(span)
    }
}

/// A Swift array whose storage address the trap tests pass to deallocate.
func deallocateArrayStorage() {
    var array = [UInt64](repeating: 7, count: 64)
    array.withUnsafeMutableBytes {
        announceBadPointer($0.baseAddress! + 16)
        BinnedAllocator.shared.deallocate($0.baseAddress! + 16)
    }
    array.withUnsafeMutableBytes { BinnedAllocator.shared.deallocate($0.baseAddress!) }
}

@Suite("Programmer errors trap with a message (child processes)")
struct TrapTests {
    @Test("allocate with a negative byteCount is a precondition failure")
    func negativeByteCount() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            _ = BinnedAllocator.shared.allocate(byteCount: -1)
        }
        expectTrap(result, mentioning: "BinnedAllocator.allocate: negative byteCount -1")
    }

    @Test("allocate with byteCount Int.min is a precondition failure")
    func mostNegativeByteCount() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            _ = BinnedAllocator.shared.allocate(byteCount: Int.min, alignment: 64)
        }
        expectTrap(result, mentioning: "negative byteCount \(Int.min)")
    }

    @Test("reallocate with a negative byteCount is a precondition failure")
    func negativeReallocate() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let pointer = BinnedAllocator.shared.allocate(byteCount: 64)
            _ = BinnedAllocator.shared.reallocate(pointer, byteCount: -5)
        }
        expectTrap(result, mentioning: "BinnedAllocator.reallocate: negative byteCount -5")
    }

    @Test("an alignment that is not a power of two is a precondition failure, small or large, shared or locked")
    func alignmentNotAPowerOfTwo() async {
        var result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            _ = BinnedAllocator.shared.allocate(byteCount: 64, alignment: 24)
        }
        expectTrap(result, mentioning: "BinnedAllocator.allocate: alignment 24 is not a power of two")
        result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            _ = BinnedAllocator.shared.allocate(byteCount: 100_000, alignment: 0)
        }
        expectTrap(result, mentioning: "BinnedAllocator.allocate: alignment 0 is not a power of two")
        result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            _ = BinnedAllocator.shared.allocate(byteCount: 0, alignment: -16)
        }
        expectTrap(result, mentioning: "BinnedAllocator.allocate: alignment -16 is not a power of two")
        result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            _ = LockedBinnedAllocator().allocate(byteCount: 64, alignment: 3)
        }
        expectTrap(result, mentioning: "LockedBinnedAllocator.allocate: alignment 3 is not a power of two")
        result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            _ = BinnedPageAllocator().allocate(byteCount: 4096, alignment: Int.min)
        }
        expectTrap(result, mentioning: "BinnedPageAllocator.allocate: alignment \(Int.min) is not a power of two")
    }

    @Test("LockedBinnedAllocator: a negative byteCount is a precondition failure")
    func lockedNegativeByteCount() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            _ = LockedBinnedAllocator().allocate(byteCount: -1)
        }
        expectTrap(result, mentioning: "LockedBinnedAllocator.allocate: negative byteCount -1")
    }

    @Test("deallocate of a pointer into a Swift array's storage traps")
    func foreignArrayStorage() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            deallocateArrayStorage()
        }
        expectMisuseReport(result, mentioning: "BinnedAlloc did not hand out", namingTheAnnouncedPointer: true)
    }

    @Test("deallocate of glibc's malloc(64) traps")
    func foreignMalloc() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let pointer = malloc(64)!
            memset(pointer, 0, 64)
            announceBadPointer(pointer)
            BinnedAllocator.shared.deallocate(pointer)
        }
        expectMisuseReport(result, mentioning: "BinnedAlloc did not hand out", namingTheAnnouncedPointer: true)
    }

    @Test("deallocate of glibc's malloc(1 MiB) (an mmap'd chunk) traps")
    func foreignLargeMalloc() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let pointer = malloc(1 << 20)!
            memset(pointer, 0, 1 << 20)
            announceBadPointer(pointer)
            BinnedAllocator.shared.deallocate(pointer)
        }
        expectMisuseReport(result, mentioning: "BinnedAlloc did not hand out", namingTheAnnouncedPointer: true)
    }

    @Test("deallocate of p + 16 for a live small block traps")
    func interiorPointerSmall() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let pointer = BinnedAllocator.shared.allocate(byteCount: 64)!
            announceBadPointer(pointer + 16)
            BinnedAllocator.shared.deallocate(pointer + 16)
        }
        expectMisuseReport(result, mentioning: "not a block's start", namingTheAnnouncedPointer: true)
    }

    @Test("deallocate of p + 16 for a live large block traps")
    func interiorPointerLarge() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let pointer = BinnedAllocator.shared.allocate(byteCount: 100_000)!
            announceBadPointer(pointer + 16)
            BinnedAllocator.shared.deallocate(pointer + 16)
        }
        expectMisuseReport(result, mentioning: "holds no live block", namingTheAnnouncedPointer: true)
    }

    @Test("deallocate of p + 4096 for a live large block traps")
    func interiorPageOfLargeBlock() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let pointer = BinnedAllocator.shared.allocate(byteCount: 100_000)!
            announceBadPointer(pointer + 4096)
            BinnedAllocator.shared.deallocate(pointer + 4096)
        }
        expectMisuseReport(result, mentioning: "holds no live block", namingTheAnnouncedPointer: true)
    }

    @Test("LockedBinnedAllocator: deallocate of glibc's malloc(64) traps")
    func lockedForeignMalloc() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let pointer = malloc(64)!
            announceBadPointer(pointer)
            LockedBinnedAllocator().deallocate(pointer)
        }
        expectMisuseReport(result, mentioning: "BinnedAlloc did not hand out", namingTheAnnouncedPointer: true)
    }

    @Test("LockedBinnedAllocator: deallocate of p + 16 traps")
    func lockedInteriorPointer() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let allocator = LockedBinnedAllocator()
            let pointer = allocator.allocate(byteCount: 64)!
            announceBadPointer(pointer + 16)
            allocator.deallocate(pointer + 16)
        }
        expectMisuseReport(result, mentioning: "not a block's start", namingTheAnnouncedPointer: true)
    }

    @Test("the child processes that trap are the checks, not the setup: the same setup without the bad call exits 0")
    func controlRunSucceeds() async {
        // Guards the trap tests against passing for the wrong reason (a setup that crashes).
        await #expect(processExitsWith: .success) {
            let pointer = BinnedAllocator.shared.allocate(byteCount: 64)!
            BinnedAllocator.shared.deallocate(pointer)
            let large = BinnedAllocator.shared.allocate(byteCount: 100_000)!
            BinnedAllocator.shared.deallocate(large)
            let foreign = malloc(64)!
            memset(foreign, 0, 64)
            free(foreign)
            let allocator = LockedBinnedAllocator()
            allocator.deallocate(allocator.allocate(byteCount: 64)!)
            var array = [UInt64](repeating: 7, count: 64)
            array.withUnsafeMutableBytes { $0.storeBytes(of: 1, as: UInt64.self) }
            #expect(array[0] == 1)
        }
    }
}
