// Regions with a checkable content: the fill pattern, a region paired with its tag, and
// a slot that threads swap regions through.

import AllocCore
import LargeAlloc

/// Fills a region to `count` elements: every element `tag`, and every 512th (one per
/// 4 KiB page) `tag ^ index`, so both the pages and their order are checked.
func fill(_ region: inout Region<UInt64>, count: Int, tag: UInt64) {
    region.append(count: count, repeating: tag)
    region.withUnsafeMutableBufferPointer { elements in
        for index in stride(from: 0, to: count, by: 512) { elements[index] = tag ^ UInt64(index) }
        elements[count - 1] = tag ^ UInt64(count - 1)
    }
}

/// Whether `fill(_:count:tag:)` content is intact; checks every marked element and the
/// elements right after each.
func matches(_ region: borrowing Region<UInt64>, tag: UInt64) -> Bool {
    region.withUnsafeBufferPointer { elements in
        let count = elements.count
        guard count > 0, elements[count - 1] == tag ^ UInt64(count - 1) else { return false }
        for index in stride(from: 0, to: count - 1, by: 512) {
            guard elements[index] == tag ^ UInt64(index) else { return false }
            if index + 1 < count - 1 && elements[index + 1] != tag { return false }
        }
        return true
    }
}

/// A region and the tag its content was filled with.
struct TaggedRegion: ~Copyable, Sendable {
    var region: Region<UInt64>
    let tag: UInt64

    /// Whether its content is what `fill` wrote with `tag`.
    var isIntact: Bool { matches(region, tag: tag) }
}

/// A slot that threads swap regions through, under AllocCore's spin lock (inlined into
/// this module, so the thread sanitizer sees its atomics; `Synchronization.Mutex` is
/// compiled into the standard library, and the sanitizer would not see it order the accesses).
final class RegionSlot: @unchecked Sendable {
    let lock = SpinLock()
    var stored: TaggedRegion? = nil

    /// Puts `incoming` in and returns what was there.
    func swap(_ incoming: consuming TaggedRegion?) -> TaggedRegion? {
        lock.lock()
        defer { lock.unlock() }
        let previous = stored.take()
        stored = incoming
        return previous
    }
}
