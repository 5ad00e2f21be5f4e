// Totals of a statistics snapshot, for the accounting checks.

import BinnedAlloc

/// The totals of a statistics snapshot used by the accounting checks.
extension BinnedStatistics {
    var smallLiveBlocks: Int { sizeClasses.reduce(0) { $0 + $1.liveBlocks } }
    var smallAllocations: Int { sizeClasses.reduce(0) { $0 + $1.allocations } }
    var smallFrees: Int { sizeClasses.reduce(0) { $0 + $1.frees } }
    var largeLiveBlocks: Int { largeAllocations - largeFrees }
    /// Every block the statistics count as live, small and large.
    var liveBlocks: Int { smallLiveBlocks + largeLiveBlocks }

    /// Class indices whose counters do not add up (allocations - frees != liveBlocks, or a
    /// negative count), with a description of each.
    var inconsistentClasses: [String] {
        sizeClasses.enumerated().compactMap { index, sizeClass in
            let consistent =
                sizeClass.allocations - sizeClass.frees == sizeClass.liveBlocks && sizeClass.liveBlocks >= 0
                && sizeClass.frees >= 0 && sizeClass.slabs >= 0
            return consistent
                ? nil
                : "class \(index) (size \(sizeClass.size)): allocations \(sizeClass.allocations), "
                    + "frees \(sizeClass.frees), liveBlocks \(sizeClass.liveBlocks), slabs \(sizeClass.slabs)"
        }
    }
}
