// BinnedAllocator.shared, one behaviour at a time: alignment, usable sizes, zero-size
// blocks, every class boundary, reallocate in place and across classes, typed buffers,
// frees from other threads.

import AllocCore
import AllocTestSupport
import Glibc
import Testing

@testable import BinnedAlloc

@Suite("BinnedAllocator.shared")
struct SharedAllocatorTests {
    let allocator = BinnedAllocator.shared

    @Test("the published constants: 32 KiB large threshold, 256 KiB slabs, 16-byte quantum with 4 steps")
    func constants() {
        #expect(BinnedAllocator.smallSizeLimit == 32768)
        #expect(BinnedAllocator.slabSize == 262_144)
        #expect(BinnedAllocator.maximumAlignment == 1 << 30)
        let classes = BinnedAllocator.sizeClasses
        #expect(classes.maximumSize == BinnedAllocator.smallSizeLimit)
        #expect(classes == SizeClasses(quantum: 16, stepsPerDoubling: 4, maximumSize: 32768))
        #expect(classes.size(ofClass: classes.index(for: 100)) == 112)
    }

    /// `allocateZeroed` (calloc's Swift form) on the shared and a locked allocator: dirty
    /// blocks freed and taken again, small and large, aligned too, read zero.
    @Test(
        "allocateZeroed reads zero, also when it reuses dirty blocks",
        arguments: [24, 1000, 32768, 100_000, 5 << 20])
    func allocateZeroedReadsZero(byteCount: Int) throws {
        let locked = LockedBinnedAllocator()
        let allocators:
            [(
                allocate: (Int) -> UnsafeMutableRawPointer?, zeroed: (Int, Int) -> UnsafeMutableRawPointer?,
                free: (UnsafeMutableRawPointer) -> Void
            )] = [
                (
                    { allocator.allocate(byteCount: $0) }, { allocator.allocateZeroed(byteCount: $0, alignment: $1) },
                    { allocator.deallocate($0) }
                ),
                (
                    { locked.allocate(byteCount: $0) }, { locked.allocateZeroed(byteCount: $0, alignment: $1) },
                    { locked.deallocate($0) }
                ),
            ]
        for (allocate, zeroed, free) in allocators {
            for alignment in [16, 64] {
                var dirty: [UnsafeMutableRawPointer] = []
                for _ in 0..<8 {
                    let block = try #require(allocate(byteCount))
                    memset(block, 0xEE, byteCount)
                    dirty.append(block)
                }
                for block in dirty { free(block) }
                for _ in 0..<8 {
                    let block = try #require(zeroed(byteCount, alignment))
                    #expect(isMultiple(block, of: alignment))
                    let bytes = UnsafeRawBufferPointer(start: block, count: byteCount)
                    #expect(bytes.allSatisfy { $0 == 0 }, "allocateZeroed(\(byteCount)) at \(block)")
                    memset(block, 0xEE, byteCount)
                    free(block)
                }
            }
        }
    }

    @Test("zero-byte blocks are unique and freeable")
    func zeroSize() throws {
        var blocks: [UnsafeMutableRawPointer] = []
        for _ in 0..<1000 { blocks.append(try #require(allocator.allocate(byteCount: 0))) }
        #expect(Set(blocks).count == blocks.count, "two live zero-size blocks share an address")
        for block in blocks {
            #expect(isMultiple(block, of: 16))
            #expect(allocator.usableSize(of: block) >= 0)
        }
        for block in blocks { allocator.deallocate(block) }
        let typed = try #require(allocator.allocate(byteCount: 0, alignment: 4096))
        #expect(isMultiple(typed, of: 4096))
        allocator.deallocate(typed)
    }

    @Test("every class boundary: aligned, usable >= size, all of it writable, no two blocks overlap")
    func classBoundaries() throws {
        var intervals = IntervalSet()
        var blocks: [(UnsafeMutableRawPointer, Int, Int)] = []
        for round in 0..<3 {
            for size in boundarySizes() {
                let pointer = try #require(allocator.allocate(byteCount: size), "allocate(byteCount: \(size))")
                #expect(isMultiple(pointer, of: 16), "size \(size): \(pointer)")
                let usable = allocator.usableSize(of: pointer)
                #expect(usable >= size, "size \(size): usable \(usable)")
                let overlap = intervals.insert(start: UInt(bitPattern: pointer), length: usable)
                #expect(overlap == nil, "size \(size): \(pointer) + \(usable) overlaps a live block")
                let tag = round << 20 | size
                Pattern.fill(pointer, tag: tag, range: 0..<min(usable, Pattern.maximumLength))
                blocks.append((pointer, min(usable, Pattern.maximumLength), tag))
            }
        }
        for (pointer, checked, tag) in blocks {
            #expect(Pattern.matches(pointer, tag: tag, range: 0..<checked), "block \(pointer) was overwritten")
            allocator.deallocate(pointer)
        }
    }

    /// A thread's free cache keeps 64 KiB of a class's blocks, and in the classes above 1 KiB
    /// up to 64 blocks in at most 128 KiB (`ThreadCache.freeCacheLimit`): one free fewer than
    /// the limit leaves every freed block in the cache (the free that reaches the limit sends
    /// the older half home). In a child process, on a fresh thread, with the default budget.
    @Test("a free cache keeps 64 blocks of 1 or 2 KiB, 32 of 4 KiB and 8 of 16 KiB before it trims")
    func freeCacheLimits() async {
        await #expect(processExitsWith: .success) {
            try! onNewThread {
                for (size, limit) in [(1024, 64), (1280, 64), (2048, 64), (4096, 32), (16384, 8), (512, 128)] {
                    let blocks = (1..<limit).map { _ in binned_malloc(size)! }
                    for block in blocks { binned_free(block) }
                    let bin = SharedAllocator.currentThreadCache()!.bin(Layout.sizeClasses.index(for: size))
                    precondition(bin.cachedLimit == limit, "\(size) B: the limit is \(bin.cachedLimit)")
                    precondition(bin.cachedCount == limit - 1, "\(size) B: \(bin.cachedCount) blocks cached")
                }
            }
        }
    }

    /// The fast path finds the class of a size up to 4 KiB in its thread cache's table, and
    /// computes it above: both must give each size its class, through malloc and the Swift API.
    @Test("every size up to 32 KiB gets exactly its class's block, through malloc and allocate")
    func everySizeGetsItsClass() throws {
        let classes = BinnedAllocator.sizeClasses
        for size in 0...BinnedAllocator.smallSizeLimit {
            let expected = classes.size(ofClass: classes.index(for: size))
            let viaMalloc = try #require(binned_malloc(size))
            let viaSwift = try #require(allocator.allocate(byteCount: size))
            #expect(allocator.usableSize(of: viaMalloc) == expected, "malloc(\(size))")
            #expect(allocator.usableSize(of: viaSwift) == expected, "allocate(byteCount: \(size))")
            binned_free(viaMalloc)
            allocator.deallocate(viaSwift)
        }
    }

    @Test("alignments from 1 to 4096 for sizes around the class boundaries")
    func alignedAllocations() throws {
        var intervals = IntervalSet()
        var blocks: [UnsafeMutableRawPointer] = []
        for shift in 0...12 {
            for size in [0, 1, 15, 16, 17, 100, 1000, 4095, 4096, 4097, 10_000, 32768, 32769, 70_000] {
                let alignment = 1 << shift
                let pointer = try #require(allocator.allocate(byteCount: size, alignment: alignment))
                #expect(isMultiple(pointer, of: max(16, alignment)), "(\(size), \(alignment)): \(pointer)")
                let usable = allocator.usableSize(of: pointer)
                #expect(usable >= size)
                #expect(intervals.insert(start: UInt(bitPattern: pointer), length: usable) == nil)
                memset(pointer, Int32(shift), usable)
                blocks.append(pointer)
            }
        }
        for block in blocks { allocator.deallocate(block) }
    }

    @Test("reallocate(nil, n) allocates")
    func reallocateNil() throws {
        for size in [0, 1, 100, 5000, 100_000] {
            let pointer = try #require(allocator.reallocate(nil, byteCount: size))
            #expect(isMultiple(pointer, of: 16))
            #expect(allocator.usableSize(of: pointer) >= size)
            memset(pointer, 1, size)
            allocator.deallocate(pointer)
        }
    }

    @Test("reallocate within a size class returns the same pointer, for every class")
    func reallocateInPlace() throws {
        let classes = BinnedAllocator.sizeClasses
        for index in 0..<classes.count {
            let top = classes.size(ofClass: index)
            let bottom = index == 0 ? 1 : classes.size(ofClass: index - 1) + 1
            let pointer = try #require(allocator.allocate(byteCount: bottom))
            Pattern.fill(pointer, tag: index, range: 0..<bottom)
            let grown = allocator.reallocate(pointer, byteCount: top)
            #expect(grown == pointer, "class \(index): reallocate \(bottom) -> \(top) moved the block")
            let shrunk = allocator.reallocate(grown, byteCount: bottom)
            #expect(shrunk == pointer, "class \(index): reallocate \(top) -> \(bottom) moved the block")
            #expect(Pattern.matches(pointer, tag: index, range: 0..<bottom))
            allocator.deallocate(shrunk)
        }
    }

    @Test("reallocate across classes and across the large threshold keeps the contents")
    func reallocateAcrossClasses() throws {
        let limit = BinnedAllocator.smallSizeLimit
        let steps = [16, 17, 500, 200, limit, limit + 1, 100_000, 40_000, 300_000, 50_000, limit, 48, 1 << 20, 1]
        var pointer = try #require(allocator.allocate(byteCount: steps[0]))
        var usable = allocator.usableSize(of: pointer)
        Pattern.fill(pointer, tag: 100, range: 0..<usable)
        for (step, size) in steps.enumerated().dropFirst() {
            let moved = try #require(allocator.reallocate(pointer, byteCount: size), "reallocate to \(size)")
            #expect(isMultiple(moved, of: 16))
            // The first min(old usable, new size) bytes survive.
            let kept = min(usable, size)
            #expect(Pattern.matches(moved, tag: 100 + step - 1, range: 0..<kept), "step \(step): -> \(size)")
            pointer = moved
            usable = allocator.usableSize(of: pointer)
            #expect(usable >= size)
            Pattern.fill(pointer, tag: 100 + step, range: 0..<min(usable, Pattern.maximumLength))
            usable = min(usable, Pattern.maximumLength)
        }
        allocator.deallocate(pointer)
    }

    @Test("a large block resized to other large sizes keeps its contents")
    func largeReallocate() throws {
        var size = 40_000
        var pointer = try #require(allocator.allocate(byteCount: size))
        Pattern.fill(pointer, tag: 7, range: 0..<size)
        for newSize in [80_000, 60_000, 1 << 20, 2 << 20, 33_000, 500_000] {
            pointer = try #require(allocator.reallocate(pointer, byteCount: newSize))
            #expect(Pattern.matches(pointer, tag: 7, range: 0..<min(size, newSize)), "\(size) -> \(newSize)")
            #expect(allocator.usableSize(of: pointer) >= newSize)
            Pattern.fill(pointer, tag: 7, range: 0..<newSize)
            size = newSize
        }
        allocator.deallocate(pointer)
    }

    @Test("typed buffers: the count asked, aligned for the type, usable, freeable")
    func typedBuffers() throws {
        let words = try #require(allocator.allocate(UInt64.self, capacity: 1000))
        #expect(words.count == 1000)
        #expect(isMultiple(UnsafeRawPointer(words.baseAddress!), of: 16))
        #expect(allocator.usableSize(of: UnsafeRawPointer(words.baseAddress!)) >= 8000)
        for index in words.indices { words[index] = UInt64(index) &* 0x9E37_79B9 }
        #expect(words.enumerated().allSatisfy { $0.element == UInt64($0.offset) &* 0x9E37_79B9 })
        allocator.deallocate(words)

        let vectors = try #require(allocator.allocate(SIMD4<Float>.self, capacity: 10_000))
        #expect(vectors.count == 10_000)
        #expect(isMultiple(UnsafeRawPointer(vectors.baseAddress!), of: MemoryLayout<SIMD4<Float>>.alignment))
        vectors.initialize(repeating: SIMD4(1, 2, 3, 4))
        #expect(vectors[9_999] == SIMD4(1, 2, 3, 4))
        allocator.deallocate(vectors)

        let bytes = try #require(allocator.allocate(UInt8.self, capacity: 1))
        #expect(bytes.count == 1)
        allocator.deallocate(bytes)
    }

    @Test("blocks freed on another thread than the one that allocated them, both ways")
    func crossThreadFrees() throws {
        let sizes = [16, 100, 1000, 10_000, BinnedAllocator.smallSizeLimit, 100_000]
        // Allocated here, freed on another thread.
        var blocks: [Int] = []
        for (index, size) in sizes.enumerated() {
            for copy in 0..<50 {
                let pointer = try #require(allocator.allocate(byteCount: size))
                Pattern.fill(pointer, tag: index * 100 + copy, range: 0..<min(size, 4096))
                blocks.append(Int(bitPattern: pointer))
            }
        }
        let handedOver = blocks
        let problems = BlockBox()
        try onNewThread {
            for (offset, address) in handedOver.enumerated() {
                let pointer = UnsafeMutableRawPointer(bitPattern: address)!
                let (index, copy) = (offset / 50, offset % 50)
                if !Pattern.matches(pointer, tag: index * 100 + copy, range: 0..<min(sizes[index], 4096)) {
                    problems.put(pointer)
                }
                BinnedAllocator.shared.deallocate(pointer)
            }
        }
        #expect(problems.takeAll().isEmpty, "blocks changed on their way to another thread")
        // Allocated on another thread, freed here.
        let box = BlockBox()
        try onNewThread {
            for size in sizes {
                for _ in 0..<50 {
                    let pointer = BinnedAllocator.shared.allocate(byteCount: size)!
                    memset(pointer, 0x44, size)
                    box.put(pointer)
                }
            }
        }
        let received = box.takeAll()
        #expect(received.count == sizes.count * 50)
        for pointer in received {
            #expect(UnsafeRawPointer(pointer).load(as: UInt8.self) == 0x44)
            allocator.deallocate(pointer)
        }
        // The freed memory is reusable by this thread.
        for size in sizes {
            let pointer = try #require(allocator.allocate(byteCount: size))
            allocator.deallocate(pointer)
        }
    }

    @Test("statistics list one entry per class, with its size, and count this thread's blocks")
    func statisticsDeltas() throws {
        let classes = BinnedAllocator.sizeClasses
        let before = allocator.statistics()
        #expect(before.sizeClasses.count == classes.count)
        for (index, sizeClass) in before.sizeClasses.enumerated() {
            #expect(sizeClass.size == classes.size(ofClass: index), "class \(index)")
        }
        let count = 500
        var blocks: [UnsafeMutableRawPointer] = []
        for _ in 0..<count { blocks.append(try #require(allocator.allocate(byteCount: 100))) }
        let large = try #require(allocator.allocate(byteCount: 100_000))
        let during = allocator.statistics()
        let index = classIndex(100)
        // Other suites allocate and free at the same time: only monotonic counters are exact.
        #expect(during.sizeClasses[index].allocations - before.sizeClasses[index].allocations >= count)
        #expect(during.sizeClasses[index].slabs >= 1)
        #expect(during.largeAllocations - before.largeAllocations >= 1)
        #expect(during.bytesMapped >= count * 112 + 100_000)
        for block in blocks { allocator.deallocate(block) }
        allocator.deallocate(large)
        let after = allocator.statistics()
        #expect(after.sizeClasses[index].deallocations - during.sizeClasses[index].deallocations >= count)
        #expect(after.largeDeallocations - during.largeDeallocations >= 1)
        #expect(after.threadCaches >= 1, "this thread allocated, so at least one cache exists")
    }
}

@Suite("Statistics of BinnedAllocator.shared, exact in a fresh process")
struct SharedStatisticsTests {
    @Test("N blocks of 100 bytes count N live blocks in the class of 112; frees and large blocks count exactly")
    func exactCounts() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            let before = allocator.statistics()
            let index = classIndex(100)
            var blocks: [UnsafeMutableRawPointer] = []
            for _ in 0..<1000 { blocks.append(allocator.allocate(byteCount: 100)!) }
            var large: [UnsafeMutableRawPointer] = []
            for size in [40_000, 100_000, 1 << 20] { large.append(allocator.allocate(byteCount: size)!) }
            let during = allocator.statistics()
            #expect(during.sizeClasses[index].size == 112, "during.sizeClasses[index].size == 112")
            #expect(
                during.sizeClasses[index].allocations - before.sizeClasses[index].allocations == 1000,
                "during.sizeClasses[index].allocations - before.sizeClasses[index].allocations == 1000")
            #expect(
                during.sizeClasses[index].liveBlocks - before.sizeClasses[index].liveBlocks == 1000,
                "during.sizeClasses[index].liveBlocks - before.sizeClasses[index].liveBlocks == 1000")
            #expect(during.sizeClasses[index].slabs >= 1, "during.sizeClasses[index].slabs >= 1")
            #expect(
                during.largeAllocations - before.largeAllocations == 3,
                "during.largeAllocations - before.largeAllocations == 3")
            #expect(
                during.largeLiveBytes - before.largeLiveBytes >= 40_000 + 100_000 + (1 << 20),
                "during.largeLiveBytes - before.largeLiveBytes >= 40_000 + 100_000 + (1 << 20)")
            #expect(
                during.bytesMapped >= 1000 * 112 + 40_000 + 100_000 + (1 << 20),
                "during.bytesMapped >= 1000 * 112 + 40_000 + 100_000 + (1 << 20)")
            #expect(during.liveBlocks - before.liveBlocks == 1003, "during.liveBlocks - before.liveBlocks == 1003")
            for (other, sizeClass) in during.sizeClasses.enumerated() where other != index {
                #expect(sizeClass.liveBlocks == before.sizeClasses[other].liveBlocks, "class \(other) changed")
            }
            for block in blocks.prefix(400) { allocator.deallocate(block) }
            let partly = allocator.statistics()
            #expect(
                partly.sizeClasses[index].deallocations - before.sizeClasses[index].deallocations == 400,
                "partly.sizeClasses[index].deallocations - before.sizeClasses[index].deallocations == 400")
            #expect(
                partly.sizeClasses[index].liveBlocks - before.sizeClasses[index].liveBlocks == 600,
                "partly.sizeClasses[index].liveBlocks - before.sizeClasses[index].liveBlocks == 600")
            for block in blocks.dropFirst(400) { allocator.deallocate(block) }
            for block in large { allocator.deallocate(block) }
            let after = allocator.statistics()
            #expect(
                after.largeDeallocations - before.largeDeallocations == 3,
                "after.largeDeallocations - before.largeDeallocations == 3")
            #expect(after.largeLiveBytes == before.largeLiveBytes, "after.largeLiveBytes == before.largeLiveBytes")
            #expect(after.liveBlocks == before.liveBlocks, "after.liveBlocks == before.liveBlocks")
            #expect(after.inconsistentClasses.isEmpty, "\(after.inconsistentClasses)")
            #expect(after.threadCaches >= 1, "after.threadCaches >= 1")
        }
    }

    @Test("reallocate in place counts nothing; a move counts one allocation and one free")
    func reallocateAccounting() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            let before = allocator.statistics()
            let pointer = allocator.allocate(byteCount: 100)!
            let same = allocator.reallocate(pointer, byteCount: 110)!
            #expect(same == pointer, "same == pointer")
            #expect(
                allocator.statistics().liveBlocks - before.liveBlocks == 1,
                "allocator.statistics().liveBlocks - before.liveBlocks == 1")
            let moved = allocator.reallocate(same, byteCount: 5000)!
            let after = allocator.statistics()
            #expect(after.liveBlocks - before.liveBlocks == 1, "a moved block must count once")
            #expect(
                after.sizeClasses[classIndex(100)].liveBlocks == before.sizeClasses[classIndex(100)].liveBlocks,
                "after.sizeClasses[classIndex(100)].liveBlocks == before.sizeClasses[classIndex(100)].liveBlocks")
            #expect(
                after.sizeClasses[classIndex(5000)].liveBlocks - before.sizeClasses[classIndex(5000)].liveBlocks == 1,
                "after.sizeClasses[classIndex(5000)].liveBlocks - before.sizeClasses[classIndex(5000)].liveBlocks == 1")
            allocator.deallocate(moved)
            #expect(
                allocator.statistics().liveBlocks == before.liveBlocks,
                "allocator.statistics().liveBlocks == before.liveBlocks")
        }
    }
}
