// The background worker and memory returned to the OS (spec section 6): dirty regions are
// advised away and move to the clean pool, resident bytes fall, idle chunks are unmapped,
// and stopping the worker does not wait for its interval.
//
// The worker runs on its own schedule, so no test reads a figure it could change
// meanwhile: what must be seen before the worker acts is measured while the regions are
// live (it never touches those) or before the worker is started, and what it does is
// awaited with `eventually`, whose bound only matters when the worker never does it.

import AllocCore
import AllocTestSupport
import Glibc
import LargeAlloc
import Testing

@Suite("Background worker")
struct WorkerTests {
    /// Allocates `count` 2 MiB regions, writes every page, calls `whileLive` while they are
    /// all still live (the worker cannot have cleared any of them yet), and frees them.
    func churn(_ allocator: LargeAllocator, count: Int, whileLive: () throws -> Void = {}) throws {
        var regions: [RegionSlot] = []
        for index in 0..<count {
            var region = try allocator.allocate(UInt64.self, capacity: (2 << 20) / 8)
            fill(&region, count: region.capacity, tag: UInt64(index) + 1)
            let slot = RegionSlot()
            _ = slot.swap(TaggedRegion(region: region, tag: UInt64(index) + 1))
            regions.append(slot)
        }
        try whileLive()
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
        // Measured while the regions are live: once they are freed, the worker may clear
        // them before a measurement, however soon after the free it is made. Live regions
        // are never the worker's, however many of its intervals pass (three here).
        var touched = 0
        try churn(allocator, count: 8) {
            usleep(30_000)
            touched = try resident(allocator)
        }
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
        let settled = try eventually { try resident(allocator) <= configuration.threadCacheBytes + (1 << 20) }
        let residentBytes = try resident(allocator)
        #expect(settled, "resident \(residentBytes) bytes, retained bound \(configuration.threadCacheBytes)")
        allocator.releaseThreadCache()
        let emptied = try eventually { try resident(allocator) < 1 << 20 }
        let residentAfterRelease = try resident(allocator)
        #expect(emptied, "after releaseThreadCache: \(residentAfterRelease) bytes resident")
    }

    @Test("chunks wholly clean for chunkIdleAge are unmapped, and refilled on demand")
    func idleChunksAreUnmapped() throws {
        // No worker until `before` is read: a running one may unmap the chunks (40 ms after
        // the frees) before the test gets to read them.
        var configuration = testConfiguration(threadCacheBytes: 0)
        configuration.chunkIdleAge = .milliseconds(30)
        let allocator = try LargeAllocator(configuration: configuration)
        try churn(allocator, count: 3)
        // Without a worker nothing is cleared or unmapped, however long the test takes
        // (here longer than chunkIdleAge).
        usleep(40_000)
        let before = try #require(allocator.statistics().sizeClass(regionByteCount: 2 << 20))
        #expect(before.chunks == 2 && before.dirtyRegions == 3 && before.unmappedChunks == 0, "\(before)")
        configuration.backgroundInterval = .milliseconds(10)
        try allocator.reconfigure(configuration)
        let unmapped = eventually { allocator.statistics().sizeClass(regionByteCount: 2 << 20)!.chunks == 0 }
        let after = try #require(allocator.statistics().sizeClass(regionByteCount: 2 << 20))
        #expect(unmapped, "\(after)")
        #expect(after.unmappedChunks == before.chunks && after.chunkBytes == 0 && after.freeRegions == 0, "\(after)")
        let mapped = try #require(allocator.mappingStatistics().first { $0.regionByteCount == 2 << 20 })
        #expect(mapped.usage.mappedBytes == 0)
        try churn(allocator, count: 1)
        #expect(allocator.statistics().sizeClass(regionByteCount: 2 << 20)!.refills == before.refills + 1)
    }

    @Test("a stop wakes the worker at once; reconfiguring starts and stops it")
    func workerStartsAndStops() throws {
        let allocator = try LargeAllocator(configuration: testConfiguration(worker: .seconds(3600)))
        var configuration = allocator.configuration
        configuration.backgroundInterval = nil
        // The stop joins the worker, which sleeps for an hour unless the stop wakes it. It
        // runs on a thread of its own so that a broken wake-up fails the test instead of
        // hanging it; the bound is far below the interval, and only a stop that waits for
        // the interval comes near it.
        let stopped = Signal()
        let stopConfiguration = configuration
        let stopper = try OSThread.spawn {
            try? allocator.reconfigure(stopConfiguration)
            stopped.raise()
        }
        let stoppedEarly = eventually(within: 60) { stopped.isRaised }
        #expect(stoppedEarly, "stopping waited for the worker's interval of an hour")
        guard stoppedEarly else { return }  // the stopper stays blocked; the run goes on
        stopper.join()
        #expect(allocator.configuration == configuration)
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

    @Test("growth: chunks grow with refills, slowed by the dampener, bounded by maximumChunkBytes")
    func boundedGrowth() throws {
        var configuration = testConfiguration(threadCacheBytes: 0)
        configuration.initialChunkBytes = 256 << 10
        configuration.maximumChunkBytes = 1 << 20
        configuration.growthDampener = 1
        let allocator = try LargeAllocator(configuration: configuration)
        var regions: [RegionSlot] = []
        for index in 0..<40 {
            let slot = RegionSlot()
            _ = slot.swap(TaggedRegion(region: try allocator.allocate(UInt64.self, capacity: 1), tag: UInt64(index)))
            regions.append(slot)
        }
        let sizeClass = allocator.statistics().sizeClasses[0]
        // Chunks of 256 KiB, 256 KiB, 512 KiB, 512 KiB, 1 MiB, 1 MiB, 1 MiB...: 4, 4, 8, 8, 16...
        // regions. 40 live regions need 4 + 4 + 8 + 8 + 16 = 40: five refills.
        #expect(sizeClass.refills == 5, "\(sizeClass)")
        #expect(sizeClass.chunkBytes == (256 + 256 + 512 + 512 + 1024) << 10, "\(sizeClass)")
        regions.removeAll()
    }
}
