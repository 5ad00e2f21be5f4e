// Configurations for the tests, the two backings the randomized tests run over, and the
// class counters summed over every class.

import LargeAlloc

/// A configuration for tests: small chunks, no worker unless asked, so that counters move
/// only when a test makes them.
func testConfiguration(
    backing: LargeAllocConfiguration.Backing = .anonymous(hugePages: false),
    threadCacheBytes: Int = 8 << 20, worker: Duration? = nil
) -> LargeAllocConfiguration {
    var configuration = LargeAllocConfiguration()
    configuration.backing = backing
    configuration.threadCacheBytes = threadCacheBytes
    configuration.backgroundInterval = worker
    configuration.initialChunkBytes = 4 << 20
    configuration.maximumChunkBytes = 16 << 20
    configuration.chunkIdleAge = nil
    return configuration
}

/// Both backings the randomized tests run over; the file one in `directory`.
enum BackingMode: String, CaseIterable, Sendable {
    case anonymous, file

    func backing(directory: String) -> LargeAllocConfiguration.Backing {
        self == .anonymous ? .anonymous(hugePages: true) : .file(directory: directory)
    }
}

/// Class counters summed over every class.
func totals(_ statistics: LargeAllocStatistics) -> LargeAllocStatistics.SizeClass {
    var total = LargeAllocStatistics.SizeClass(regionByteCount: 0)
    for sizeClass in statistics.sizeClasses {
        total.chunks += sizeClass.chunks
        total.chunkBytes += sizeClass.chunkBytes
        total.fileBytes += sizeClass.fileBytes
        total.dirtyRegions += sizeClass.dirtyRegions
        total.cleanRegions += sizeClass.cleanRegions
        total.threadRegions += sizeClass.threadRegions
        total.liveRegions += sizeClass.liveRegions
        total.allocations += sizeClass.allocations
        total.slowPaths += sizeClass.slowPaths
        total.refills += sizeClass.refills
        total.deallocations += sizeClass.deallocations
        total.eagerClears += sizeClass.eagerClears
        total.backgroundClears += sizeClass.backgroundClears
        total.clearFailures += sizeClass.clearFailures
        total.steals += sizeClass.steals
        total.unmappedChunks += sizeClass.unmappedChunks
    }
    return total
}
