// Totals of a statistics snapshot, for the accounting checks.

import BinnedAlloc

/// The totals of a statistics snapshot used by the accounting checks.
extension BinnedAllocStatistics {
    var smallLiveBlocks: Int { sizeClasses.reduce(0) { $0 + $1.liveBlocks } }
    var smallAllocations: Int { sizeClasses.reduce(0) { $0 + $1.allocations } }
    var smallDeallocations: Int { sizeClasses.reduce(0) { $0 + $1.deallocations } }
    var largeLiveBlocks: Int { largeAllocations - largeDeallocations }
    /// Every block the statistics count as live, small and large.
    var liveBlocks: Int { smallLiveBlocks + largeLiveBlocks }

    /// Class indices whose counters do not add up (allocations - deallocations != liveBlocks, or a
    /// negative count), with a description of each.
    var inconsistentClasses: [String] {
        sizeClasses.enumerated().compactMap { index, sizeClass in
            let consistent =
                sizeClass.allocations - sizeClass.deallocations == sizeClass.liveBlocks && sizeClass.liveBlocks >= 0
                && sizeClass.deallocations >= 0 && sizeClass.slabs >= 0
            return consistent
                ? nil
                : "class \(index) (size \(sizeClass.size)): allocations \(sizeClass.allocations), "
                    + "deallocations \(sizeClass.deallocations), liveBlocks \(sizeClass.liveBlocks), slabs \(sizeClass.slabs)"
        }
    }
}
