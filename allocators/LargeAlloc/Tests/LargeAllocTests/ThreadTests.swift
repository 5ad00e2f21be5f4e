// Thread caches (spec section 5): a thread's exit returns its cache to the dirty pools,
// an allocation with empty pools steals from another thread's cache, caches respect their
// byte bound; and the enable switch (section 2).

import AllocCore
import AllocTestSupport
import Glibc
import LargeAlloc
import Testing

@Suite("Thread caches and configuration")
struct ThreadTests {
    /// One region per chunk, so that a pool never has a spare region from a refill.
    func oneRegionPerChunk(threadCacheBytes: Int) -> LargeAllocConfiguration {
        var configuration = testConfiguration(threadCacheBytes: threadCacheBytes)
        configuration.initialChunkBytes = 1 << 20
        configuration.maximumChunkBytes = 1 << 20
        return configuration
    }

    @Test("a thread's exit returns its cache to the dirty pool")
    func threadExitReturnsCache() throws {
        let allocator = try LargeAllocator(configuration: oneRegionPerChunk(threadCacheBytes: 8 << 20))
        try onNewThread {
            let regions = (0..<3).map { _ in RegionSlot() }
            for slot in regions {
                _ = slot.swap(TaggedRegion(region: try! allocator.allocate(UInt64.self, capacity: 100_000), tag: 1))
            }
            for slot in regions { _ = slot.swap(nil) }
            let sizeClass = allocator.statistics().sizeClass(regionByteCount: 1 << 20)!
            #expect(sizeClass.threadRegions == 3 && sizeClass.dirtyRegions == 0, "\(sizeClass)")
        }
        let sizeClass = try #require(allocator.statistics().sizeClass(regionByteCount: 1 << 20))
        #expect(sizeClass.threadRegions == 0, "the exited thread's cache still holds regions: \(sizeClass)")
        #expect(sizeClass.dirtyRegions == 3 && sizeClass.liveRegions == 0, "\(sizeClass)")
        let parked = allocator.statistics()
        #expect(parked.threadCaches == 1 && parked.parkedThreadCaches == 1, "\(parked)")
        #expect(allocator.integrityViolation() == nil)
        // A new thread adopts the parked cache instead of making one.
        try onNewThread {
            _ = try! allocator.allocate(UInt8.self, capacity: 1)
            let adopted = allocator.statistics()
            #expect(adopted.threadCaches == 1 && adopted.parkedThreadCaches == 0, "\(adopted)")
        }
        #expect(allocator.statistics().threadCaches == 1)
    }

    @Test("with empty pools, an allocation steals from another thread's cache")
    func stealing() throws {
        let allocator = try LargeAllocator(configuration: oneRegionPerChunk(threadCacheBytes: 8 << 20))
        let cached = Signal()
        let done = Signal()
        let thread = try OSThread.spawn {
            let first = RegionSlot()
            let second = RegionSlot()
            _ = first.swap(TaggedRegion(region: try! allocator.allocate(UInt64.self, capacity: 100_000), tag: 1))
            _ = second.swap(TaggedRegion(region: try! allocator.allocate(UInt64.self, capacity: 100_000), tag: 2))
            _ = first.swap(nil)
            _ = second.swap(nil)
            cached.raise()
            done.wait()  // alive, so its cache is not returned at exit
        }
        cached.wait()
        let before = try #require(allocator.statistics().sizeClass(regionByteCount: 1 << 20))
        #expect(before.threadRegions == 2 && before.globalRegions == 0 && before.refills == 2, "\(before)")
        let stolen = try allocator.allocate(UInt64.self, capacity: 100_000)
        let after = try #require(allocator.statistics().sizeClass(regionByteCount: 1 << 20))
        #expect(after.steals == 1 && after.refills == 2 && after.threadRegions == 1, "\(after)")
        _ = consume stolen
        done.raise()
        thread.join()
    }

    @Test("a cache holds at most threadCacheBytes; the rest goes to the dirty pool")
    func cacheBound() throws {
        let allocator = try LargeAllocator(configuration: oneRegionPerChunk(threadCacheBytes: 2 << 20))
        let regions = (0..<5).map { _ in RegionSlot() }
        for slot in regions {
            _ = slot.swap(TaggedRegion(region: try allocator.allocate(UInt64.self, capacity: 100_000), tag: 1))
        }
        for slot in regions { _ = slot.swap(nil) }
        let sizeClass = try #require(allocator.statistics().sizeClass(regionByteCount: 1 << 20))
        #expect(sizeClass.threadRegions == 2 && sizeClass.dirtyRegions == 3, "\(sizeClass)")
        // The next allocations come from the cache first, without a slow path.
        let slowPaths = sizeClass.slowPaths
        let again = try allocator.allocate(UInt8.self, capacity: 1 << 20)
        #expect(allocator.statistics().sizeClass(regionByteCount: 1 << 20)!.slowPaths == slowPaths)
        _ = consume again
    }

    @Test("a disabled allocator throws .disabled; its regions still work and go back")
    func disabled() throws {
        var configuration = testConfiguration()
        let allocator = try LargeAllocator(configuration: configuration)
        var region = try allocator.allocate(UInt64.self, capacity: 10)
        configuration.isEnabled = false
        try allocator.reconfigure(configuration)
        #expect(throws: LargeAllocError.disabled) { _ = try allocator.allocate(UInt8.self, capacity: 1) }
        region.append(5)
        let value = region[0]
        #expect(value == 5)
        _ = consume region
        #expect(totals(allocator.statistics()).liveRegions == 0)
        configuration.isEnabled = true
        try allocator.reconfigure(configuration)
        let again = try allocator.allocate(UInt8.self, capacity: 1)
        let capacity = again.capacity
        #expect(capacity == 64 << 10)
    }

    @Test("a disabled configuration is disabled from the start")
    func disabledFromTheStart() throws {
        var configuration = testConfiguration()
        configuration.isEnabled = false
        let allocator = try LargeAllocator(configuration: configuration)
        #expect(throws: LargeAllocError.disabled) { _ = try allocator.allocate(Int.self, capacity: 1) }
        #expect(totals(allocator.statistics()).chunks == 0)
    }

    @Test("a thread using more allocators than its table holds still allocates and frees in each")
    func moreAllocatorsThanTableEntries() throws {
        try onNewThread {
            let allocators = (0..<12).map { _ in try! LargeAllocator(configuration: testConfiguration()) }
            for allocator in allocators {
                var region = try! allocator.allocate(UInt64.self, capacity: 100)
                fill(&region, count: 100, tag: 7)
                let intact = matches(region, tag: 7)
                #expect(intact)
            }
            for allocator in allocators {
                let statistics = totals(allocator.statistics())
                #expect(statistics.allocations == 1 && statistics.liveRegions == 0, "\(statistics)")
            }
            // Eight got a thread cache (the region is cached); the others used the pools.
            let cached = allocators.filter { totals($0.statistics()).threadRegions == 1 }.count
            #expect(cached == 8)
        }
    }

    @Test("regions outlive their allocator handle and are released into it afterwards")
    func regionOutlivesHandle() throws {
        var allocator: LargeAllocator? = try LargeAllocator(configuration: testConfiguration(worker: .milliseconds(5)))
        var region = try allocator!.allocate(UInt64.self, capacity: 1000)
        allocator = nil
        fill(&region, count: 1000, tag: 3)
        let intact = matches(region, tag: 3)
        #expect(intact)
        let slot = RegionSlot()
        _ = slot.swap(TaggedRegion(region: region, tag: 3))
        try onNewThread { _ = slot.swap(nil) }  // the last reference goes on another thread
    }
}
