// The background worker and memory returned to the OS (spec section 6): dirty regions are
// advised away and move to the clean pool, resident bytes fall, idle areas are unmapped,
// and stopping the worker does not wait for its interval.

import AllocCore
import Glibc
import LargeAlloc
import Testing

@Suite("Background worker")
struct WorkerTests {
    /// Allocates `count` 2 MiB regions, writes every page, and frees them.
    func churn(_ allocator: LargeAllocator, count: Int) throws {
        var regions: [RegionSlot] = []
        for index in 0..<count {
            var region = try allocator.allocate(UInt64.self, capacity: (2 << 20) / 8)
            try fill(&region, count: region.capacity, tag: UInt64(index) + 1)
            let slot = RegionSlot()
            _ = slot.swap(TaggedRegion(region: region, tag: UInt64(index) + 1))
            regions.append(slot)
        }
        regions.removeAll()
    }

    func resident(_ allocator: LargeAllocator) throws -> Int {
        try allocator.mappingStatistics().reduce(0) { $0 + $1.usage.residentBytes }
    }

    @Test("the worker moves dirty regions to clean and resident bytes fall (MADV_DONTNEED)")
    func workerClearsDirtyRegions() throws {
        var configuration = testConfiguration(threadCacheBytes: 0, worker: .milliseconds(10))
        configuration.clearAdvice = .dontNeed
        configuration.backgroundBytesPerTick = 4 << 20
        let allocator = try LargeAllocator(configuration: configuration)
        try churn(allocator, count: 8)
        let touched = try resident(allocator)
        #expect(touched >= 8 << 20, "the 8 regions' 16 MiB were written: \(touched)")
        let cleared = eventually {
            let sizeClass = allocator.statistics().sizeClass(regionByteCount: 2 << 20)!
            return sizeClass.backgroundClears >= 8 && sizeClass.dirtyRegions == 0
        }
        let sizeClass = try #require(allocator.statistics().sizeClass(regionByteCount: 2 << 20))
        #expect(cleared, "dirty regions left: \(sizeClass)")
        #expect(sizeClass.clearFailures == 0 && sizeClass.cleanRegions == sizeClass.freeRegions, "\(sizeClass)")
        // 4 MiB per tick: clearing 8 regions took at least 4 ticks.
        #expect(allocator.statistics().workerTicks >= 4)
        let after = try resident(allocator)
        #expect(after < touched / 4, "resident bytes after clearing: \(after), before: \(touched)")
    }

    @Test("with MADV_FREE (the default) regions move to clean and the kernel may take the pages")
    func workerUsesLazyFree() throws {
        let configuration = testConfiguration(threadCacheBytes: 0, worker: .milliseconds(10))
        let allocator = try LargeAllocator(configuration: configuration)
        try churn(allocator, count: 4)
        let cleared = eventually { allocator.statistics().sizeClass(regionByteCount: 2 << 20)!.backgroundClears >= 4 }
        #expect(cleared)
        let usage = try #require(allocator.mappingStatistics().first { $0.regionByteCount == 2 << 20 }).usage
        // Pages are either gone already or marked lazily free; none is still plain dirty.
        #expect(usage.residentBytes - usage.lazyFreeBytes < 2 << 20, "\(usage)")
    }

    @Test("after everything is freed and two worker intervals pass, resident bytes are within the thread cache")
    func retainedMemoryIsBounded() throws {
        var configuration = testConfiguration(threadCacheBytes: 4 << 20, worker: .milliseconds(20))
        configuration.clearAdvice = .dontNeed
        let allocator = try LargeAllocator(configuration: configuration)
        try churn(allocator, count: 12)
        usleep(40_000)
        let settled = try eventually { try resident(allocator) <= configuration.threadCacheBytes + (1 << 20) }
        let residentBytes = try resident(allocator)
        #expect(settled, "resident \(residentBytes) bytes, retained bound \(configuration.threadCacheBytes)")
        allocator.releaseThreadCache()
        let emptied = try eventually { try resident(allocator) < 1 << 20 }
        let residentAfterRelease = try resident(allocator)
        #expect(emptied, "after releaseThreadCache: \(residentAfterRelease) bytes resident")
    }

    @Test("areas wholly clean for areaIdleAge are unmapped, and refilled on demand")
    func idleAreasAreUnmapped() throws {
        var configuration = testConfiguration(threadCacheBytes: 0, worker: .milliseconds(10))
        configuration.areaIdleAge = .milliseconds(30)
        let allocator = try LargeAllocator(configuration: configuration)
        try churn(allocator, count: 3)
        let before = try #require(allocator.statistics().sizeClass(regionByteCount: 2 << 20))
        #expect(before.areas >= 1)
        let unmapped = eventually { allocator.statistics().sizeClass(regionByteCount: 2 << 20)!.areas == 0 }
        let after = try #require(allocator.statistics().sizeClass(regionByteCount: 2 << 20))
        #expect(unmapped, "\(after)")
        #expect(after.unmappedAreas == before.areas && after.areaBytes == 0 && after.freeRegions == 0, "\(after)")
        let mapped = try #require(allocator.mappingStatistics().first { $0.regionByteCount == 2 << 20 })
        #expect(mapped.usage.mappedBytes == 0)
        try churn(allocator, count: 1)
        #expect(allocator.statistics().sizeClass(regionByteCount: 2 << 20)!.refills == before.refills + 1)
    }

    @Test("a stop wakes the worker at once; reconfiguring starts and stops it")
    func workerStartsAndStops() throws {
        let allocator = try LargeAllocator(configuration: testConfiguration(worker: .seconds(3600)))
        var configuration = allocator.configuration
        let start = SystemInfo.monotonicNanoseconds()
        configuration.backgroundInterval = nil
        try allocator.reconfigure(configuration)
        #expect(SystemInfo.monotonicNanoseconds() - start < 2_000_000_000, "stopping waited for the interval")
        configuration.backgroundInterval = .milliseconds(5)
        try allocator.reconfigure(configuration)
        let ticked = eventually { allocator.statistics().workerTicks >= 2 }
        #expect(ticked)
        #expect(allocator.configuration == configuration)
    }

    @Test("eager return gives pages back at free time and pools the region clean")
    func eagerReturn() throws {
        var configuration = testConfiguration(threadCacheBytes: 0)
        configuration.eagerReturn = true
        let allocator = try LargeAllocator(configuration: configuration)
        try churn(allocator, count: 4)
        let sizeClass = try #require(allocator.statistics().sizeClass(regionByteCount: 2 << 20))
        #expect(sizeClass.eagerClears == 4 && sizeClass.dirtyRegions == 0, "\(sizeClass)")
        #expect(try resident(allocator) < 1 << 20)
    }

    @Test("growth: areas grow with refills, slowed by the dampener, bounded by maximumAreaBytes")
    func boundedGrowth() throws {
        var configuration = testConfiguration(threadCacheBytes: 0)
        configuration.initialAreaBytes = 256 << 10
        configuration.maximumAreaBytes = 1 << 20
        configuration.growthDampener = 1
        let allocator = try LargeAllocator(configuration: configuration)
        var regions: [RegionSlot] = []
        for index in 0..<40 {
            let slot = RegionSlot()
            _ = slot.swap(TaggedRegion(region: try allocator.allocate(UInt64.self, capacity: 1), tag: UInt64(index)))
            regions.append(slot)
        }
        let sizeClass = allocator.statistics().sizeClasses[0]
        // Areas of 256 KiB, 256 KiB, 512 KiB, 512 KiB, 1 MiB, 1 MiB, 1 MiB...: 4, 4, 8, 8, 16...
        // regions. 40 live regions need 4 + 4 + 8 + 8 + 16 = 40: five refills.
        #expect(sizeClass.refills == 5, "\(sizeClass)")
        #expect(sizeClass.areaBytes == (256 + 256 + 512 + 512 + 1024) << 10, "\(sizeClass)")
        regions.removeAll()
    }
}
