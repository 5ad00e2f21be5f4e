// LockedBinnedAllocator (one heap behind one lock, instances independent, statistics
// exact) and BinnedPageAllocator (whole pages, usable size = size rounded up to pages).

import AllocCore
import AllocTestSupport
import BinnedAlloc
import Glibc
import Testing

@Suite("LockedBinnedAllocator")
struct LockedBinnedAllocatorTests {
    @Test("a fresh instance counts nothing and has no thread caches")
    func freshStatistics() {
        let statistics = LockedBinnedAllocator().statistics()
        #expect(statistics.sizeClasses.count == BinnedAllocator.sizeClasses.count)
        for (index, sizeClass) in statistics.sizeClasses.enumerated() {
            #expect(sizeClass.size == BinnedAllocator.sizeClasses.size(ofClass: index))
            #expect(sizeClass.allocations == 0 && sizeClass.deallocations == 0 && sizeClass.liveBlocks == 0)
            #expect(sizeClass.slabs == 0)
        }
        #expect(
            statistics.largeAllocations == 0 && statistics.largeDeallocations == 0 && statistics.largeLiveBytes == 0)
        #expect(statistics.threadCaches == 0 && statistics.parkedThreadCaches == 0)
    }

    @Test("exact statistics: allocations, frees, live blocks per class, large blocks")
    func exactStatistics() throws {
        let allocator = LockedBinnedAllocator()
        let index = classIndex(100)
        var blocks: [UnsafeMutableRawPointer] = []
        for _ in 0..<1000 { blocks.append(try #require(allocator.allocate(byteCount: 100))) }
        for size in [1, 16, 17, 5000] { blocks.append(try #require(allocator.allocate(byteCount: size))) }
        var statistics = allocator.statistics()
        #expect(statistics.sizeClasses[index].size == 112)
        #expect(statistics.sizeClasses[index].allocations == 1000)
        #expect(statistics.sizeClasses[index].liveBlocks == 1000)
        #expect(statistics.sizeClasses[index].deallocations == 0)
        #expect(statistics.sizeClasses[index].slabs >= 1000 * 112 / BinnedAllocator.slabSize + 1)
        #expect(statistics.sizeClasses[0].liveBlocks == 2, "1 and 16 bytes are class 0")
        #expect(statistics.sizeClasses[1].liveBlocks == 1, "17 bytes is class 1")
        #expect(statistics.sizeClasses[classIndex(5000)].liveBlocks == 1)
        #expect(statistics.smallLiveBlocks == 1004)
        #expect(statistics.largeAllocations == 0)
        #expect(statistics.bytesMapped >= 1004 * 112)

        let large = try #require(allocator.allocate(byteCount: 100_000))
        let larger = try #require(allocator.allocate(byteCount: BinnedAllocator.smallSizeLimit + 1))
        statistics = allocator.statistics()
        #expect(statistics.largeAllocations == 2)
        #expect(statistics.largeLiveBytes >= 100_000 + BinnedAllocator.smallSizeLimit + 1)
        #expect(statistics.bytesMapped >= 1004 * 112 + 100_000 + BinnedAllocator.smallSizeLimit)

        for block in blocks.prefix(300) { allocator.deallocate(block) }
        statistics = allocator.statistics()
        #expect(statistics.sizeClasses[index].deallocations == 300)
        #expect(statistics.sizeClasses[index].liveBlocks == 700)
        allocator.deallocate(large)
        allocator.deallocate(larger)
        for block in blocks.dropFirst(300) { allocator.deallocate(block) }
        statistics = allocator.statistics()
        #expect(statistics.largeDeallocations == 2 && statistics.largeLiveBytes == 0)
        #expect(statistics.liveBlocks == 0)
        #expect(
            statistics.sizeClasses[index].allocations == 1000 && statistics.sizeClasses[index].deallocations == 1000)
        #expect(statistics.inconsistentClasses.isEmpty, "\(statistics.inconsistentClasses)")
        #expect(statistics.threadCaches == 0)
    }

    @Test("instances are independent: one's blocks and counts never show in another")
    func independentInstances() throws {
        let first = LockedBinnedAllocator()
        let second = LockedBinnedAllocator()
        var intervals = IntervalSet()
        var blocks: [(LockedBinnedAllocator, UnsafeMutableRawPointer)] = []
        for index in 0..<400 {
            let allocator = index % 2 == 0 ? first : second
            let size = [24, 100, 3000, 50_000][index % 4]
            let pointer = try #require(allocator.allocate(byteCount: size))
            #expect(
                intervals.insert(start: UInt(bitPattern: pointer), length: allocator.usableSize(of: pointer)) == nil)
            Pattern.fill(pointer, tag: index, range: 0..<size)
            blocks.append((allocator, pointer))
        }
        #expect(first.statistics().liveBlocks == 200)
        #expect(second.statistics().liveBlocks == 200)
        for (index, (allocator, pointer)) in blocks.enumerated() where allocator === first {
            #expect(Pattern.matches(pointer, tag: index, range: 0..<[24, 100, 3000, 50_000][index % 4]))
            allocator.deallocate(pointer)
        }
        #expect(first.statistics().liveBlocks == 0)
        #expect(second.statistics().liveBlocks == 200)
        for (index, (allocator, pointer)) in blocks.enumerated() where allocator === second {
            #expect(Pattern.matches(pointer, tag: index, range: 0..<[24, 100, 3000, 50_000][index % 4]))
            allocator.deallocate(pointer)
        }
        #expect(second.statistics().liveBlocks == 0)
    }

    @Test("alignment, usable sizes, zero-size blocks, class boundaries")
    func basics() throws {
        let allocator = LockedBinnedAllocator()
        #expect(allocator.usableSize(of: nil) == 0)
        allocator.deallocate(nil)
        let zero1 = try #require(allocator.allocate(byteCount: 0))
        let zero2 = try #require(allocator.allocate(byteCount: 0))
        #expect(zero1 != zero2)
        allocator.deallocate(zero1)
        allocator.deallocate(zero2)
        var intervals = IntervalSet()
        var blocks: [UnsafeMutableRawPointer] = []
        for size in boundarySizes() {
            for alignment in [16, 64, 4096] {
                let pointer = try #require(allocator.allocate(byteCount: size, alignment: alignment))
                #expect(isMultiple(pointer, of: alignment), "(\(size), \(alignment)): \(pointer)")
                let usable = allocator.usableSize(of: pointer)
                #expect(usable >= size)
                #expect(intervals.insert(start: UInt(bitPattern: pointer), length: usable) == nil)
                memset(pointer, 0x77, usable)
                blocks.append(pointer)
            }
        }
        for block in blocks { allocator.deallocate(block) }
        #expect(allocator.statistics().liveBlocks == 0)
        let huge = try #require(allocator.allocate(byteCount: 10, alignment: BinnedAllocator.maximumAlignment))
        #expect(isMultiple(huge, of: BinnedAllocator.maximumAlignment))
        allocator.deallocate(huge)
    }

    @Test("reallocate: nil allocates, same class stays in place, other sizes keep the contents")
    func reallocate() throws {
        let allocator = LockedBinnedAllocator()
        let first = try #require(allocator.reallocate(nil, byteCount: 100))
        Pattern.fill(first, tag: 1, range: 0..<100)
        #expect(allocator.reallocate(first, byteCount: 112) == first)
        #expect(allocator.reallocate(first, byteCount: 97) == first)
        var pointer = first
        var size = 97
        for newSize in [5000, 40_000, 300_000, 35_000, 2000, 10] {
            pointer = try #require(allocator.reallocate(pointer, byteCount: newSize))
            #expect(Pattern.matches(pointer, tag: 1, range: 0..<min(size, newSize)), "\(size) -> \(newSize)")
            Pattern.fill(pointer, tag: 1, range: 0..<newSize)
            size = newSize
        }
        #expect(allocator.statistics().liveBlocks == 1)
        allocator.deallocate(pointer)
        #expect(allocator.statistics().liveBlocks == 0)
    }

    @Test("typed buffers")
    func typedBuffers() throws {
        let allocator = LockedBinnedAllocator()
        let buffer = try #require(allocator.allocate(Int32.self, capacity: 20_000))
        #expect(buffer.count == 20_000)
        buffer.initialize(repeating: -3)
        #expect(buffer.allSatisfy { $0 == -3 })
        #expect(allocator.statistics().largeAllocations == 1, "80,000 bytes are a large block")
        allocator.deallocate(buffer)
        #expect(allocator.statistics().largeLiveBytes == 0)
    }

    @Test("an instance dropped with live blocks goes away cleanly")
    func deinitWithLiveBlocks() throws {
        for _ in 0..<20 {
            let allocator = LockedBinnedAllocator()
            for size in [16, 100, 1000, 30_000, 100_000] {
                let pointer = try #require(allocator.allocate(byteCount: size))
                memset(pointer, 1, size)
            }
        }
    }

    /// A refill takes a partial slab that holds a page of freed blocks before it carves a
    /// fresh page of its current slab. A locked allocator's frees go straight to their slab
    /// (it has no free cache), so which blocks come back is exact.
    @Test("a refill reuses a partial slab's freed blocks before it carves fresh pages")
    func refillReusesFreedBlocksBeforeFreshPages() throws {
        let allocator = LockedBinnedAllocator()
        let size = 1024
        let page = 4096
        let perSlab = (BinnedAllocator.slabSize - page) / size
        let slab = { (block: UnsafeMutableRawPointer) in Int(bitPattern: block) & ~(BinnedAllocator.slabSize - 1) }
        // One full slab, and the first page of the next one carved, its first block handed out.
        var blocks: [UnsafeMutableRawPointer] = []
        for _ in 0...perSlab { blocks.append(try #require(allocator.allocate(byteCount: size))) }
        let current = blocks[perSlab]
        #expect(Set(blocks.prefix(perSlab).map(slab)).count == 1 && slab(current) != slab(blocks[0]))
        // Half of the full slab's blocks go back to it: it becomes partial.
        let freed = Set(blocks.prefix(perSlab / 2))
        for block in freed { allocator.deallocate(block) }
        // The rest of the carved page first, then the freed blocks; not one block of a new page.
        var again: [UnsafeMutableRawPointer] = []
        for _ in 0..<(perSlab / 2 + page / size - 1) {
            again.append(try #require(allocator.allocate(byteCount: size)))
        }
        let fresh = again.filter { !freed.contains($0) }
        #expect(fresh.count == page / size - 1)
        #expect(fresh.allSatisfy { slab($0) == slab(current) && current.distance(to: $0) < page })
        for block in blocks.dropFirst(perSlab / 2) + again { allocator.deallocate(block) }
        #expect(allocator.statistics().smallLiveBlocks == 0)
    }
}

@Suite("BinnedPageAllocator")
struct BinnedPageAllocatorTests {
    let pages = BinnedPageAllocator()

    @Test("page-aligned spans whose usable size is the size rounded up to whole pages")
    func usableIsRoundedToPages() throws {
        let page = SystemInfo.pageSize
        var intervals = IntervalSet()
        var spans: [(UnsafeMutableRawPointer, Int)] = []
        for size in [1, 100, 4095, 4096, 4097, 8192, 10_000, 65_536, 1 << 20, (1 << 20) + 1] {
            let pointer = try #require(pages.allocate(byteCount: size))
            #expect(isMultiple(pointer, of: page), "allocate(\(size)) = \(pointer)")
            let usable = pages.usableSize(of: pointer)
            #expect(usable == (size + page - 1) / page * page, "allocate(\(size)): usable \(usable)")
            #expect(intervals.insert(start: UInt(bitPattern: pointer), length: usable) == nil)
            Pattern.fill(pointer, tag: size, range: 0..<usable)  // every usable byte is writable
            spans.append((pointer, size))
        }
        for (pointer, size) in spans {
            let usable = pages.usableSize(of: pointer)
            #expect(Pattern.matches(pointer, tag: size, range: 0..<usable), "span of \(size) bytes was overwritten")
            pages.deallocate(pointer)
        }
    }

    @Test("contents survive until freed")
    func contentsSurvive() throws {
        var spans: [(UnsafeMutableRawPointer, Int)] = []
        for index in 0..<64 {
            let size = 1000 + index * 3000
            let pointer = try #require(pages.allocate(byteCount: size))
            Pattern.fill(pointer, tag: index, range: 0..<size)
            spans.append((pointer, size))
        }
        for (index, (pointer, size)) in spans.enumerated() {
            #expect(Pattern.matches(pointer, tag: index, range: 0..<size), "span \(index) was overwritten")
            pages.deallocate(pointer)
        }
    }

    @Test(
        "alignments above a page are honoured; smaller ones still give whole pages",
        arguments: [16, 64, 4096, 8192, 65_536, 1 << 21])
    func alignment(alignment: Int) throws {
        for size in [1, 5000, 300_000] {
            let pointer = try #require(pages.allocate(byteCount: size, alignment: alignment))
            #expect(isMultiple(pointer, of: max(alignment, SystemInfo.pageSize)), "(\(size), \(alignment)): \(pointer)")
            #expect(pages.usableSize(of: pointer) >= size)
            memset(pointer, 0x2F, size)
            pages.deallocate(pointer)
        }
    }

    @Test("reallocate keeps min(old usable, new size) bytes and updates the usable size")
    func reallocate() throws {
        let page = SystemInfo.pageSize
        var pointer = try #require(pages.reallocate(nil, byteCount: 5000))
        #expect(pages.usableSize(of: pointer) == 2 * page)
        var usable = 2 * page
        Pattern.fill(pointer, tag: 9, range: 0..<usable)
        for newSize in [100_000, 20_000, 1, 3 * page, 1 << 20] {
            pointer = try #require(pages.reallocate(pointer, byteCount: newSize))
            #expect(isMultiple(pointer, of: page))
            #expect(Pattern.matches(pointer, tag: 9, range: 0..<min(usable, newSize)), "-> \(newSize)")
            usable = pages.usableSize(of: pointer)
            #expect(usable == (newSize + page - 1) / page * page, "reallocate to \(newSize): usable \(usable)")
            Pattern.fill(pointer, tag: 9, range: 0..<usable)
        }
        pages.deallocate(pointer)
    }

    @Test("spans allocated on one thread are freed on others")
    func crossThread() throws {
        let box = BlockBox()
        try onThreads(4) { thread in
            for index in 0..<50 {
                let pointer = BinnedPageAllocator().allocate(byteCount: 4096 * (1 + index % 5))!
                memset(pointer, Int32(thread), 4096)
                box.put(pointer)
            }
        }
        let spans = box.takeAll()
        #expect(spans.count == 200)
        #expect(Set(spans).count == 200)
        let handed = spans.map { Int(bitPattern: $0) }
        try onThreads(4) { thread in
            for address in handed[(thread * 50)..<(thread * 50 + 50)] {
                BinnedPageAllocator().deallocate(UnsafeMutableRawPointer(bitPattern: address))
            }
        }
    }
}
