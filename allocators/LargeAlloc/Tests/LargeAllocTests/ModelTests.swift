// The seeded model test (spec sections 3 and 4): random requests across classes, on both
// backings; every region's content is written and checked until it is released, live
// regions never overlap, each sits in its class's alignment and holds what was asked;
// about a third of the releases happen on another thread. After every step the integrity
// walker checks the whole structure, and every region of every chunk is in exactly one
// place: live (as many as the model holds), a thread cache, the dirty pool or the clean pool. One seed per run of the body
// of `forEachTestSeed` (ALLOC_TEST_SEED replays one, ALLOC_TEST_SOAK_SECONDS soaks).

import AllocCore
import AllocTestSupport
import Glibc
import LargeAlloc
import Testing

@Suite("Randomized model")
struct ModelTests {
    /// Allocations per backing and seed.
    static let allocationCount = 300

    @Test("random regions keep their content and never overlap, on both backings")
    func randomRegions() throws {
        try forEachTestSeed { seed in
            for mode in BackingMode.allCases {
                try withTemporaryDirectory { directory in
                    var configuration = testConfiguration(
                        backing: mode.backing(directory: directory), threadCacheBytes: 4 << 20)
                    configuration.eagerReturn = seed % 2 == 1
                    let allocator = try LargeAllocator(configuration: configuration)
                    try run(allocator, seed: seed, mode: mode)
                    #expect(allocator.integrityViolation() == nil, "seed \(seed) \(mode) at the end")
                    let statistics = totals(allocator.statistics())
                    #expect(
                        statistics.liveRegions == 0,
                        "seed \(seed) \(mode): \(statistics.liveRegions) regions still live")
                    #expect(statistics.allocations == statistics.deallocations, "seed \(seed) \(mode): \(statistics)")
                    #expect(statistics.allocations == Self.allocationCount, "seed \(seed) \(mode): \(statistics)")
                    if mode == .file {
                        #expect(
                            statistics.fileBytes == statistics.chunkBytes && statistics.fileBytes > 0,
                            "seed \(seed): \(statistics)")
                    }
                }
            }
        }
    }

    /// `allocationCount` allocations over 12 slots of regions of 64 KiB to 2 MiB (classes 0 to 5).
    func run(_ allocator: LargeAllocator, seed: UInt64, mode: BackingMode) throws {
        var generator = SplitMix64(seed: seed)
        let slotCount = 12
        let slots: [RegionSlot] = (0..<slotCount).map { _ in RegionSlot() }
        var live: [Range<Int>?] = Array(repeating: nil, count: slotCount)
        for step in 0..<Self.allocationCount {
            let slot = Int.random(in: 0..<slotCount, using: &generator)
            if let old = slots[slot].swap(nil) {
                let intact = old.isIntact
                #expect(intact, "seed \(seed) \(mode), step \(step): region in slot \(slot) was overwritten")
                live[slot] = nil
                if Int.random(in: 0..<3, using: &generator) == 0 {
                    // Released on another thread.
                    let box = RegionSlot()
                    _ = box.swap(old)
                    try onNewThread { _ = box.swap(nil) }
                } else {
                    _ = consume old
                }
            }
            let elements = Int.random(in: 1...(2 << 20) / 8, using: &generator)
            var region = try allocator.allocate(UInt64.self, capacity: elements)
            let (capacity, byteCapacity) = (region.capacity, region.byteCapacity)
            let context = "seed \(seed) \(mode), step \(step), \(elements) elements"
            #expect(capacity >= elements, "\(context): capacity \(capacity)")
            #expect(
                byteCapacity.nonzeroBitCount == 1 && byteCapacity >= LargeAllocator.minimumRegionSize,
                "\(context): \(byteCapacity) bytes")
            #expect(
                byteCapacity / 2 < max(elements * 8, LargeAllocator.minimumRegionSize + 1),
                "\(context): \(byteCapacity) bytes is not the smallest class")
            let start = region.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress) }
            #expect(start % byteCapacity == 0 || mode == .file, "\(context): \(start) not class-aligned")
            #expect(start % LargeAllocator.minimumRegionSize == 0, "\(context): \(start) not 64 KiB-aligned")
            let range = start..<(start + byteCapacity)
            for case let other? in live {
                #expect(!other.overlaps(range), "\(context): \(range) overlaps live \(other)")
            }
            let tag = generator.next() | 1
            fill(&region, count: min(elements, 64 << 10), tag: tag)
            live[slot] = range
            _ = slots[slot].swap(TaggedRegion(region: region, tag: tag))
            if let problem = allocator.integrityViolation()
                ?? placesViolation(allocator, live: live.count { $0 != nil })
            {
                Issue.record("\(context): \(problem)")
                return
            }
        }
        for slot in 0..<slotCount {
            if let region = slots[slot].swap(nil) {
                let intact = region.isIntact
                #expect(intact, "seed \(seed) \(mode): slot \(slot) overwritten")
            }
        }
    }

    /// Where the statistics disagree with every region being in exactly one place (no
    /// worker runs, so no region is between the pools), or nil.
    func placesViolation(_ allocator: LargeAllocator, live: Int) -> String? {
        let statistics = allocator.statistics()
        for sizeClass in statistics.sizeClasses {
            let regions = sizeClass.chunkBytes / sizeClass.regionByteCount
            if sizeClass.liveRegions + sizeClass.freeRegions != regions {
                return "\(sizeClass.regionByteCount >> 10) KiB: \(sizeClass.liveRegions) live + "
                    + "\(sizeClass.freeRegions) free regions in chunks of \(regions)"
            }
        }
        let total = totals(statistics).liveRegions
        return total == live ? nil : "\(total) regions live, the model holds \(live)"
    }

    @Test("a fresh allocator, and one whose regions all went back, pass the integrity walker")
    func integrityOfFreshAndEmptied() throws {
        let allocator = try LargeAllocator(configuration: testConfiguration())
        #expect(allocator.integrityViolation() == nil)
        do {
            let first = try allocator.allocate(UInt8.self, capacity: 1)
            let second = try allocator.allocate(UInt8.self, capacity: 3 << 20)
            #expect(allocator.integrityViolation() == nil)
            _ = consume first
            _ = consume second
        }
        allocator.releaseThreadCache()
        #expect(allocator.integrityViolation() == nil)
        #expect(placesViolation(allocator, live: 0) == nil)
    }

    @Test("the largest class: a 64 GiB region can be written at both ends")
    func largestClass() throws {
        let allocator = try LargeAllocator(configuration: testConfiguration())
        var region = try allocator.allocate(UInt8.self, capacity: LargeAllocator.maximumRegionSize)
        let capacity = region.capacity
        #expect(capacity == LargeAllocator.maximumRegionSize)
        region.append(count: 1, repeating: 7)
        let value = region[0]
        region[0] = value + 1
        // Only address space is reserved: writing the last byte faults in one page.
        let last = region.withUnsafeBufferPointer { UnsafeMutablePointer(mutating: $0.baseAddress!) } + capacity - 1
        last.pointee = 9
        let first = region[0]
        #expect(first == 8 && last.pointee == 9)
        let sizeClass = try #require(
            allocator.statistics().sizeClass(regionByteCount: LargeAllocator.maximumRegionSize))
        #expect(sizeClass.chunks == 1 && sizeClass.liveRegions == 1)
    }

    @Test("size classes: each request takes the smallest power of two that holds it")
    func sizeClasses() throws {
        let allocator = try LargeAllocator(configuration: testConfiguration())
        #expect(LargeAllocator.regionSizes.count == 21)
        #expect(LargeAllocator.regionSizes.first == 64 << 10 && LargeAllocator.regionSizes.last == 64 << 30)
        for (byteCount, expected) in [
            (1, 64 << 10), (64 << 10, 64 << 10), ((64 << 10) + 1, 128 << 10), (3 << 20, 4 << 20),
        ] {
            let region = try allocator.allocate(UInt8.self, capacity: byteCount)
            let (byteCapacity, capacity) = (region.byteCapacity, region.capacity)
            #expect(byteCapacity == expected, "\(byteCount) bytes")
            #expect(capacity == expected)
        }
        let doubles = try allocator.allocate(Double.self, capacity: 100_000)
        let (byteCapacity, capacity) = (doubles.byteCapacity, doubles.capacity)
        #expect(byteCapacity == 1 << 20 && capacity == (1 << 20) / 8)
    }

    @Test("append, append(contentsOf:), subscript, removeLast, removeAll and span")
    func regionAPI() throws {
        let allocator = try LargeAllocator(configuration: testConfiguration())
        var region = try allocator.allocate(Int.self, capacity: 10)
        let (isEmpty, capacity) = (region.isEmpty, region.capacity)
        #expect(isEmpty && capacity == (64 << 10) / 8)
        for value in 0..<5 { region.append(value) }
        try [10, 11, 12].withUnsafeBufferPointer { buffer throws(LargeAllocError) in
            region.append(contentsOf: buffer)
        }
        region[0] = 100
        let (count, first, last) = (region.count, region[0], region[7])
        #expect(count == 8 && first == 100 && last == 12)
        let removed = region.removeLast()
        let countAfter = region.count
        #expect(removed == 12 && countAfter == 7)
        do {
            let span = region.span
            let (spanCount, spanLast) = (span.count, span[6])
            #expect(spanCount == 7 && spanLast == 11)
        }
        region.prefetch(0..<capacity)
        region.removeAll()
        let emptied = region.isEmpty
        #expect(emptied)
        region.append(count: capacity, repeating: 3)
        let full = region.count
        #expect(full == capacity)
    }

    @Test("non-trivial elements are deinitialized when the region goes")
    func elementsAreDeinitialized() throws {
        let tally = DeinitTally(capacity: 10)
        let allocator = try LargeAllocator(configuration: testConfiguration())
        do {
            var region = try allocator.allocate(TrackedObject.self, capacity: 100)
            for id in 0..<10 { region.append(TrackedObject(id, tally)) }
            let removed = region.removeLast()
            #expect(tally.died == 0, "removeLast hands the element out, alive")
            _ = consume removed
            #expect(tally.died == 1 && tally.count(9) == 1)
        }
        #expect(tally.died == 10)
        let wrong = tally.wrongCounts(0..<10)
        #expect(wrong.isEmpty, "\(wrong)")
    }
}
