// The C ABI (binned_malloc and friends) keeps glibc's semantics: sizes are size_t, so a
// negative Int is a size of 2^63 or more (too large); failures answer nil with errno
// ENOMEM; posix_memalign answers its error instead of setting errno; free never touches
// errno; calloc memory reads zero even when it reuses a dirty block.

import AllocCore
import AllocTestSupport
import BinnedAlloc
import Glibc
import Synchronization
import Testing

/// Sizes that are too large for any allocator, as C callers would pass them:
/// SIZE_MAX (-1), PTRDIFF_MAX + 1 (Int.min), PTRDIFF_MAX, and 2^50 (the OS refuses).
let tooLargeCSizes = [-1, Int.min, Int.max, Int.max - 4095, 1 << 50, -4096]

/// Sizes across every kind of block: tiny, each range of classes, the large threshold, large.
let cSizes = [
    1, 8, 16, 24, 100, 1000, 4000, 8193, 20_000, BinnedAllocator.smallSizeLimit,
    BinnedAllocator.smallSizeLimit + 1, 100_000, 1 << 20,
]

@Suite("C ABI, glibc semantics")
struct CABITests {
    @Test("malloc(0) returns unique, freeable blocks")
    func mallocZero() throws {
        let first = try #require(binned_malloc(0))
        let second = try #require(binned_malloc(0))
        #expect(first != second)
        #expect(binned_malloc_usable_size(first) >= 0)
        binned_free(first)
        binned_free(second)
    }

    @Test("malloc of a size that is too large answers nil with errno ENOMEM", arguments: tooLargeCSizes)
    func mallocTooLarge(size: Int) {
        currentErrno = 0
        #expect(binned_malloc(size) == nil)
        #expect(currentErrno == ENOMEM, "errno \(currentErrno) after malloc(\(size))")
    }

    @Test("malloc: aligned to 16, usable size at least what was asked, contents kept", arguments: cSizes)
    func mallocBasics(size: Int) throws {
        let pointer = try #require(binned_malloc(size))
        #expect(isMultiple(pointer, of: 16))
        #expect(binned_malloc_usable_size(pointer) >= size)
        let checked = min(size, 1 << 16)
        Pattern.fill(pointer, tag: size, range: 0..<checked)
        memset(pointer + checked, 0x11, size - checked)
        #expect(Pattern.matches(pointer, tag: size, range: 0..<checked))
        binned_free(pointer)
    }

    @Test("calloc with a count × size that overflows (or is too large) answers nil with ENOMEM")
    func callocOverflow() {
        let cases: [(Int, Int)] = [
            (1 << 32, 1 << 32), (-1, 2), (2, -1), (Int.max, 3), (3, Int.max), (1 << 62, 4), (-1, 1), (1, -1),
            (Int.max / 2 + 1, 2), (1 << 25, 1 << 25),
        ]
        for (count, size) in cases {
            currentErrno = 0
            #expect(binned_calloc(count, size) == nil, "calloc(\(count), \(size))")
            #expect(currentErrno == ENOMEM, "errno \(currentErrno) after calloc(\(count), \(size))")
        }
    }

    @Test("calloc of zero bytes returns a freeable block", arguments: [(0, 0), (0, 10), (10, 0), (0, Int.max)])
    func callocZero(count: Int, size: Int) throws {
        let pointer = try #require(binned_calloc(count, size))
        binned_free(pointer)
    }

    @Test("calloc memory reads zero, also when it reuses blocks that were written and freed", arguments: cSizes)
    func callocZeroesReusedBlocks(size: Int) throws {
        let count = size > 100_000 ? 4 : 32
        // Dirty blocks of this size, freed: calloc on the same thread gets them back.
        var dirty: [UnsafeMutableRawPointer] = []
        for _ in 0..<count {
            let pointer = try #require(binned_malloc(size))
            memset(pointer, 0xAB, binned_malloc_usable_size(pointer))
            dirty.append(pointer)
        }
        for pointer in dirty.reversed() { binned_free(pointer) }
        var reused = 0
        var blocks: [UnsafeMutableRawPointer] = []
        for index in 0..<count {
            let pointer = try #require(index % 2 == 0 ? binned_calloc(1, size) : binned_calloc(size, 1))
            if dirty.contains(pointer) { reused += 1 }
            let bytes = UnsafeRawBufferPointer(start: pointer, count: size)
            let firstNonZero = bytes.firstIndex { $0 != 0 }
            #expect(firstNonZero == nil, "calloc(\(size)) block \(pointer): byte \(firstNonZero ?? -1) is not zero")
            blocks.append(pointer)
        }
        for pointer in blocks { binned_free(pointer) }
        if size <= BinnedAllocator.smallSizeLimit {
            // Otherwise the test proves nothing about reuse.
            #expect(reused > 0, "calloc never reused one of the \(count) freed blocks of \(size) bytes")
        }
    }

    @Test("calloc(count, size) with count > 1 zeroes all count × size bytes")
    func callocArray() throws {
        for (count, size) in [(3, 7), (100, 10), (1000, 33), (5, 10_000), (50, 4096)] {
            let pointer = try #require(binned_calloc(count, size))
            #expect(binned_malloc_usable_size(pointer) >= count * size)
            let bytes = UnsafeRawBufferPointer(start: pointer, count: count * size)
            #expect(bytes.allSatisfy { $0 == 0 }, "calloc(\(count), \(size))")
            memset(pointer, 0xCD, count * size)
            binned_free(pointer)
        }
    }

    @Test("free(nil) is a no-op, and free never changes errno")
    func freeKeepsErrno() throws {
        currentErrno = 1234
        binned_free(nil)
        #expect(currentErrno == 1234)
        for size in cSizes + [0] {
            let pointer = try #require(binned_malloc(size))
            currentErrno = 1234
            binned_free(pointer)
            #expect(currentErrno == 1234, "free of a \(size)-byte block changed errno to \(currentErrno)")
        }
        // Many frees in a row, so that caches overflow and flush inside free.
        var pointers: [UnsafeMutableRawPointer] = []
        for index in 0..<5000 { pointers.append(try #require(binned_malloc(16 + index % 512))) }
        currentErrno = 1234
        for pointer in pointers { binned_free(pointer) }
        #expect(currentErrno == 1234, "a burst of frees changed errno to \(currentErrno)")
        // A block that another thread allocated (a remote free).
        let box = BlockBox()
        try onNewThread {
            for size in [64, 5000, 100_000] { box.put(binned_malloc(size)!) }
        }
        for pointer in box.takeAll() {
            currentErrno = 1234
            binned_free(pointer)
            #expect(currentErrno == 1234, "a remote free changed errno to \(currentErrno)")
        }
        currentErrno = 1234
        binned_free_sized(binned_malloc(100), 100)
        binned_free_aligned_sized(binned_aligned_alloc(64, 128), 64, 128)
        #expect(currentErrno == 1234, "free_sized or free_aligned_sized changed errno to \(currentErrno)")
    }

    @Test("malloc_usable_size(nil) is 0; for a block it is at least the size asked")
    func usableSize() throws {
        #expect(binned_malloc_usable_size(nil) == 0)
        for size in boundarySizes() {
            let pointer = try #require(binned_malloc(size))
            let usable = binned_malloc_usable_size(pointer)
            #expect(usable >= size, "malloc_usable_size(malloc(\(size))) = \(usable)")
            memset(pointer, 0x42, usable)  // all of it is usable
            binned_free(pointer)
        }
    }

    @Test("realloc(nil, n) is malloc(n)")
    func reallocNil() throws {
        for size in [0, 1, 100, 5000, 100_000] {
            let pointer = try #require(binned_realloc(nil, size))
            #expect(isMultiple(pointer, of: 16))
            #expect(binned_malloc_usable_size(pointer) >= size)
            memset(pointer, 0x21, size)
            binned_free(pointer)
        }
        currentErrno = 0
        #expect(binned_realloc(nil, -1) == nil)
        #expect(currentErrno == ENOMEM)
    }

    @Test("realloc(p, 0) frees p and returns nil")
    func reallocZero() throws {
        for size in [1, 100, 5000, 100_000] {
            let pointer = try #require(binned_malloc(size))
            #expect(binned_realloc(pointer, 0) == nil, "realloc(malloc(\(size)), 0)")
        }
    }

    @Test("realloc keeps the first min(old, new) bytes, growing and shrinking, small and large")
    func reallocKeepsContents() throws {
        let steps = [1, 17, 100, 64, 4000, 3000, 40_000, 200_000, 33_000, 1_000_000, 50, 5]
        var pointer = try #require(binned_malloc(steps[0]))
        var size = steps[0]
        Pattern.fill(pointer, tag: 0, range: 0..<size)
        for (step, newSize) in steps.enumerated().dropFirst() {
            let moved = try #require(binned_realloc(pointer, newSize), "realloc \(size) -> \(newSize)")
            let kept = min(size, newSize)
            #expect(Pattern.matches(moved, tag: step - 1, range: 0..<kept), "realloc \(size) -> \(newSize)")
            #expect(binned_malloc_usable_size(moved) >= newSize)
            pointer = moved
            size = newSize
            Pattern.fill(pointer, tag: step, range: 0..<size)
        }
        binned_free(pointer)
    }

    @Test("a failed realloc answers nil with ENOMEM and leaves p valid with its contents")
    func failedRealloc() throws {
        for size in [10, 3000, 100_000] {
            let pointer = try #require(binned_malloc(size))
            Pattern.fill(pointer, tag: size, range: 0..<size)
            for tooLarge in [-1, Int.min, 1 << 50, Int.max] {
                currentErrno = 0
                #expect(binned_realloc(pointer, tooLarge) == nil, "realloc(\(size) bytes, \(tooLarge))")
                #expect(currentErrno == ENOMEM, "errno \(currentErrno) after realloc(p, \(tooLarge))")
                #expect(Pattern.matches(pointer, tag: size, range: 0..<size))
            }
            binned_free(pointer)
        }
    }

    @Test("reallocarray: overflow answers nil with ENOMEM and keeps p; otherwise it is realloc(count × size)")
    func reallocarray() throws {
        let pointer = try #require(binned_reallocarray(nil, 10, 10))
        #expect(binned_malloc_usable_size(pointer) >= 100)
        Pattern.fill(pointer, tag: 5, range: 0..<100)
        for (count, size) in [(1 << 32, 1 << 32), (-1, 2), (Int.max, 2), (2, Int.max / 2 + 1), (1 << 30, 1 << 30)] {
            currentErrno = 0
            #expect(binned_reallocarray(pointer, count, size) == nil, "reallocarray(p, \(count), \(size))")
            #expect(currentErrno == ENOMEM, "errno \(currentErrno) after reallocarray(p, \(count), \(size))")
            #expect(Pattern.matches(pointer, tag: 5, range: 0..<100))
        }
        let grown = try #require(binned_reallocarray(pointer, 300, 40))
        #expect(binned_malloc_usable_size(grown) >= 12_000)
        #expect(Pattern.matches(grown, tag: 5, range: 0..<100))
        currentErrno = 0
        #expect(binned_reallocarray(nil, 1 << 40, 1 << 40) == nil)
        #expect(currentErrno == ENOMEM)
        binned_free(grown)
    }

    @Test(
        "posix_memalign with a bad alignment answers EINVAL and leaves *result alone",
        arguments: [0, 1, 2, 3, 4, 24, 48, -8, -16])
    func posixMemalignBadAlignment(alignment: Int) {
        let sentinel = UnsafeMutableRawPointer(bitPattern: 0xDEAD_BEE0)
        var result = sentinel
        #expect(binned_posix_memalign(&result, alignment, 64) == EINVAL, "alignment \(alignment)")
        #expect(result == sentinel, "*result changed to \(String(describing: result))")
    }

    @Test("posix_memalign of a size that is too large answers ENOMEM and leaves *result alone")
    func posixMemalignTooLarge() {
        let sentinel = UnsafeMutableRawPointer(bitPattern: 0xDEAD_BEE0)
        for (alignment, size) in [(16, -1), (64, -1), (4096, Int.max), (16, 1 << 50), (1 << 20, Int.min)] {
            var result = sentinel
            #expect(binned_posix_memalign(&result, alignment, size) == ENOMEM, "(\(alignment), \(size))")
            #expect(result == sentinel)
        }
    }

    @Test("posix_memalign: size 0 succeeds; every valid alignment is honoured")
    func posixMemalign() throws {
        var zero: UnsafeMutableRawPointer? = nil
        #expect(binned_posix_memalign(&zero, 16, 0) == 0)
        binned_free(zero)
        for shift in 3...22 {
            for size in [1, 100, 5000, 70_000] {
                var result: UnsafeMutableRawPointer? = nil
                #expect(binned_posix_memalign(&result, 1 << shift, size) == 0, "(\(1 << shift), \(size))")
                let pointer = try #require(result)
                #expect(isMultiple(pointer, of: 1 << shift), "posix_memalign(\(1 << shift), \(size)) = \(pointer)")
                #expect(binned_malloc_usable_size(pointer) >= size)
                memset(pointer, 0x5C, size)
                binned_free(pointer)
            }
        }
    }

    @Test("aligned_alloc and memalign round odd alignments up to a power of two (glibc leniency)")
    func lenientAlignment() throws {
        let zeroAlignment = try #require(binned_aligned_alloc(0, 1))
        #expect(isMultiple(zeroAlignment, of: 16))
        binned_free(zeroAlignment)
        let three = try #require(binned_aligned_alloc(3, 16))
        #expect(isMultiple(three, of: 16))
        binned_free(three)
        let memalignThree = try #require(binned_memalign(3, 10))
        #expect(isMultiple(memalignThree, of: 16))
        binned_free(memalignThree)
        // 100 is rounded up to 128, 3000 to 4096.
        let hundred = try #require(binned_memalign(100, 50))
        #expect(isMultiple(hundred, of: 128), "memalign(100, 50) = \(hundred)")
        binned_free(hundred)
        let threeThousand = try #require(binned_aligned_alloc(3000, 10))
        #expect(isMultiple(threeThousand, of: 4096), "aligned_alloc(3000, 10) = \(threeThousand)")
        binned_free(threeThousand)
    }

    @Test("aligned_alloc does not need size to be a multiple of the alignment")
    func alignedAllocAnySize() throws {
        for (alignment, size) in [(64, 100), (256, 1), (4096, 4097), (32, 33), (1 << 16, 10), (1 << 21, 3)] {
            let pointer = try #require(binned_aligned_alloc(alignment, size), "aligned_alloc(\(alignment), \(size))")
            #expect(isMultiple(pointer, of: alignment), "aligned_alloc(\(alignment), \(size)) = \(pointer)")
            #expect(binned_malloc_usable_size(pointer) >= size)
            memset(pointer, 0x3D, size)
            binned_free(pointer)
            let viaMemalign = try #require(binned_memalign(alignment, size))
            #expect(isMultiple(viaMemalign, of: alignment))
            binned_free(viaMemalign)
        }
    }

    @Test("aligned_alloc, memalign, valloc and pvalloc of a size too large answer nil with ENOMEM")
    func alignedTooLarge() {
        for size in [-1, Int.max, 1 << 50] {
            currentErrno = 0
            #expect(binned_aligned_alloc(64, size) == nil)
            #expect(currentErrno == ENOMEM, "aligned_alloc(64, \(size)): errno \(currentErrno)")
            currentErrno = 0
            #expect(binned_memalign(4096, size) == nil)
            #expect(currentErrno == ENOMEM, "memalign(4096, \(size)): errno \(currentErrno)")
            currentErrno = 0
            #expect(binned_valloc(size) == nil)
            #expect(currentErrno == ENOMEM, "valloc(\(size)): errno \(currentErrno)")
            currentErrno = 0
            #expect(binned_pvalloc(size) == nil)
            #expect(currentErrno == ENOMEM, "pvalloc(\(size)): errno \(currentErrno)")
        }
    }

    @Test("valloc and pvalloc return page-aligned blocks; pvalloc rounds the size up to whole pages")
    func vallocPvalloc() throws {
        let page = SystemInfo.pageSize
        for size in [1, 100, 4096, 4097, 20_000, 100_000] {
            let v = try #require(binned_valloc(size))
            #expect(isMultiple(v, of: page), "valloc(\(size)) = \(v)")
            #expect(binned_malloc_usable_size(v) >= size)
            memset(v, 0x66, size)
            binned_free(v)
            let p = try #require(binned_pvalloc(size))
            #expect(isMultiple(p, of: page), "pvalloc(\(size)) = \(p)")
            let rounded = (size + page - 1) / page * page
            #expect(binned_malloc_usable_size(p) >= rounded, "pvalloc(\(size)): usable \(binned_malloc_usable_size(p))")
            memset(p, 0x67, rounded)
            binned_free(p)
        }
        let one = try #require(binned_pvalloc(1))
        #expect(binned_malloc_usable_size(one) >= 4096)
        binned_free(one)
    }

    @Test("free_sized and free_aligned_sized free blocks of every kind")
    func sizedFrees() throws {
        for size in cSizes {
            let pointer = try #require(binned_malloc(size))
            binned_free_sized(pointer, size)
            for alignment in [16, 64, 4096] {
                let aligned = try #require(binned_aligned_alloc(alignment, size))
                binned_free_aligned_sized(aligned, alignment, size)
            }
        }
        binned_free_sized(nil, 0)
        binned_free_aligned_sized(nil, 64, 0)
    }
}

@Suite("C ABI accounting, in a fresh process")
struct CABIAccountingTests {
    @Test("realloc(p, 0), free_sized, free_aligned_sized and free really free; failures allocate nothing")
    func cFunctionsAccount() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            let base = allocator.statistics().liveBlocks
            func live() -> Int { allocator.statistics().liveBlocks - base }

            let small = binned_malloc(100)!
            let large = binned_malloc(100_000)!
            let zero = binned_malloc(0)!
            let zeroed = binned_calloc(0, 10)!
            #expect(live() == 4, "malloc and calloc, zero sizes included, make 4 live blocks, not \(live())")
            #expect(binned_realloc(small, 0) == nil, "binned_realloc(small, 0) == nil")
            #expect(live() == 3, "realloc(p, 0) did not free p")
            #expect(binned_realloc(large, 0) == nil, "binned_realloc(large, 0) == nil")
            #expect(live() == 2, "realloc(large, 0) did not free it")
            binned_free(zero)
            binned_free(zeroed)
            binned_free(nil)
            #expect(live() == 0, "live() == 0")

            for size in cSizes {
                binned_free_sized(binned_malloc(size)!, size)
                binned_free_aligned_sized(binned_aligned_alloc(256, size)!, 256, size)
                binned_free(binned_valloc(size)!)
                binned_free(binned_pvalloc(size)!)
                binned_free(binned_memalign(64, size)!)
                binned_free(binned_calloc(1, size)!)
                var result: UnsafeMutableRawPointer? = nil
                #expect(binned_posix_memalign(&result, 32, size) == 0, "binned_posix_memalign(&result, 32, size) == 0")
                binned_free(result)
                #expect(live() == 0, "size \(size): \(live()) blocks left live")
            }

            // Failures allocate nothing.
            let kept = binned_malloc(64)!
            _ = binned_malloc(-1)
            _ = binned_calloc(1 << 32, 1 << 32)
            _ = binned_realloc(kept, 1 << 50)
            _ = binned_reallocarray(kept, -1, 2)
            var result: UnsafeMutableRawPointer? = nil
            _ = binned_posix_memalign(&result, 24, 64)
            _ = binned_posix_memalign(&result, 64, -1)
            _ = binned_aligned_alloc(64, -1)
            #expect(live() == 1, "failed calls changed the live count to \(live())")
            binned_free(kept)
            #expect(live() == 0, "live() == 0")
            let statistics = allocator.statistics()
            #expect(statistics.inconsistentClasses.isEmpty, "\(statistics.inconsistentClasses)")
        }
    }
}

@Suite("Statistics report (BINNEDMALLOC_STATS), in a fresh process")
struct StatisticsReportTests {
    /// Every block the shared allocator has handed out, small and large.
    static func totalAllocations() -> Int {
        let statistics = BinnedAllocator.shared.statistics()
        return statistics.sizeClasses.reduce(statistics.largeAllocations) { $0 + $1.allocations }
    }

    @Test("the report lists the counters and the classes in use, and allocates nothing")
    func reportIsCompleteAndDoesNotAllocate() async {
        await #expect(processExitsWith: .success) {
            let blocks = (0..<100).map { _ in binned_malloc(48)! }
            // What reading the statistics twice allocates by itself (its arrays)...
            let first = StatisticsReportTests.totalAllocations()
            let second = StatisticsReportTests.totalAllocations()
            // ...is all that two reads around a report allocate.
            var descriptors: [Int32] = [0, 0]
            #expect(pipe(&descriptors) == 0)
            let third = StatisticsReportTests.totalAllocations()
            #expect(binned_print_statistics(descriptors[1]) == 0)
            let fourth = StatisticsReportTests.totalAllocations()
            #expect(
                fourth - third == second - first, "the report allocated \(fourth - third - (second - first)) blocks")
            close(descriptors[1])
            var buffer = [UInt8](repeating: 0, count: 64 << 10)
            var length = 0
            while case let count = read(descriptors[0], &buffer[length], buffer.count - length), count > 0 {
                length += count
            }
            close(descriptors[0])
            let text = String(decoding: buffer[0..<length], as: UTF8.self)
            #expect(text.hasPrefix("BinnedAlloc statistics\nthread caches "))
            #expect(text.contains("large blocks: allocations "))
            // Class 2 holds 48-byte blocks: at least the 100 live ones.
            let row = text.split(separator: "\n").first { $0.split(separator: " ").first == "2" }
            let fields = row?.split(separator: " ").compactMap { Int($0) } ?? []
            #expect(fields.count == 6 && fields[1] == 48 && fields[4] >= 100, "class 2 row: \(row ?? "missing")")
            #expect(binned_print_statistics(-1) == EBADF)
            for block in blocks { binned_free(block) }
        }
    }
}

/// Whether a granule is marked depends on what else maps memory meanwhile: in the test
/// process, another test's large block may land where a freed one was (and be marked) or
/// take the hole a test meant for a foreign mapping. So the checks that look at granules
/// after a free, or at where the kernel puts the next mapping, run in a fresh process,
/// where nothing else maps memory between the test's own calls.
@Suite("Foreign pointers, in a fresh process (spec: C ABI, foreign pointers)")
struct ForeignPointerRegionTests {
    @Test("binned_owns: true for every kind of block while it lives, false for glibc's, the stack and NULL")
    func ownershipFollowsTheGranuleMap() async {
        await #expect(processExitsWith: .success) {
            let small = try #require(binned_malloc(64))
            let aligned = try #require(binned_memalign(4096, 5000))
            let large = try #require(binned_malloc(100_000))
            let huge = try #require(binned_malloc(8 << 20))
            for block in [small, aligned, large, huge] { #expect(binned_owns(block), "\(block) is not ours") }
            #expect(binned_owns(huge + (8 << 20) - 1), "the last byte of a large block is in its granules")
            let foreign = try #require(malloc(100))  // this test process's malloc is glibc's
            #expect(!binned_owns(foreign), "glibc's block \(foreign) is taken as ours")
            free(foreign)
            var local = 0
            withUnsafeMutablePointer(to: &local) { #expect(!binned_owns($0), "the stack is taken as ours") }
            #expect(!binned_owns(nil), "NULL is taken as ours")
            // A freed large block may wait in the span cache; emptying the cache unmaps it,
            // and its granules leave the map (nothing else maps memory in this process
            // meanwhile).
            binned_free(huge)
            BinnedAllocator.shared.releaseUnusedMemory()
            #expect(!binned_owns(huge), "the granules of the freed block \(huge) are still marked")
            for block in [small, aligned, large] { binned_free(block) }
        }
    }

    /// A large block's mapping runs to the end of its last granule, so no other
    /// mapping (glibc's mmap'd chunks, say) can land in a granule the map says is ours: the
    /// kernel hands out the most recent hole first, which used to be the block's tail.
    @Test("mappings made right after small large blocks are never taken for BinnedAlloc's")
    func nothingElseLandsInAMarkedRegion() async {
        await #expect(processExitsWith: .success) {
            for round in 0..<32 {
                let block = try #require(binned_malloc(40_000 + round * 4096))
                let other = try SystemMemory.map(byteCount: 200 << 10)
                #expect(
                    !binned_owns(other) && !binned_owns(other + (100 << 10)), "round \(round): \(other) taken as ours")
                try SystemMemory.unmap(other, byteCount: 200 << 10)
                binned_free(block)
            }
        }
    }
}

@Suite("Foreign pointers (spec: C ABI, foreign pointers)")
struct ForeignPointerTests {
    @Test("binned_free_any frees BinnedAlloc's blocks of every kind and hands every other pointer to foreignFree")
    func freeAnyRoutesByTheGranuleMap() throws {
        ForeignFreeRecorder.reset()
        let sizeClass = BinnedAllocator.sizeClasses.index(for: 48)
        let before = BinnedAllocator.shared.statistics()
        let small = try #require(binned_malloc(48))
        let large = try #require(binned_malloc(100_000))
        let aligned = try #require(binned_memalign(4096, 5000))
        for block in [small, large, aligned] { binned_free_any(block, ForeignFreeRecorder.record) }
        let after = BinnedAllocator.shared.statistics()
        #expect(
            after.sizeClasses[sizeClass].deallocations - before.sizeClasses[sizeClass].deallocations >= 1,
            "the small block was freed into BinnedAlloc")
        #expect(after.largeDeallocations - before.largeDeallocations >= 1, "the large block was freed into BinnedAlloc")
        #expect(ForeignFreeRecorder.addresses.isEmpty, "no BinnedAlloc block reached foreignFree")
        binned_free_any(nil, ForeignFreeRecorder.record)
        #expect(ForeignFreeRecorder.addresses.isEmpty, "NULL is a no-op")
        let foreign = try #require(malloc(100))  // this test process's malloc is glibc's
        binned_free_any(foreign, ForeignFreeRecorder.record)
        #expect(ForeignFreeRecorder.addresses == [Int(bitPattern: foreign)])
        free(foreign)
    }
}

/// The `foreignFree` of the binned_free_any test: remembers the addresses it was given (a
/// C function pointer captures nothing, so the list is global) and frees nothing.
enum ForeignFreeRecorder {
    static let given = Mutex<[Int]>([])

    static var addresses: [Int] { given.withLock { $0 } }

    static func reset() { given.withLock { $0 = [] } }

    static let record: @convention(c) (UnsafeMutableRawPointer?) -> Void = { pointer in
        let address = Int(bitPattern: pointer)
        ForeignFreeRecorder.given.withLock { $0.append(address) }
    }
}

/// errno of the calling thread.
var currentErrno: Int32 {
    get { Glibc.errno }
    set { Glibc.errno = newValue }
}
