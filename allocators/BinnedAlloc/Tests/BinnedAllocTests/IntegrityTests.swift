// The layout check and the integrity walker (spec sections 3 and 4): the layouts pass
// their check, and the walker names each kind of damage done to a sound structure (and
// passes once it is repaired), so the model tests that run it can fail.

import AllocCore
import Testing

@testable import BinnedAlloc

@Suite("Layout check and integrity walker")
struct IntegrityTests {
    @Test("every header layout passes its check; the event enums size their counters as Counters does")
    func layoutsPassTheirCheck() {
        #expect(Layout.violation() == nil, "\(Layout.violation() ?? "")")
        #expect(BinEvent.byteCount == Counters<BinEvent>.byteCount)
        #expect(LargeEvent.byteCount == Counters<LargeEvent>.byteCount)
        #expect(GlobalEvent.byteCount == Counters<GlobalEvent>.byteCount)
        #expect(Layout.classCount == Layout.sizeClasses.count)
    }

    @Test("the layout check finds overlapping, misaligned and overlong fields")
    func layoutCheckFindsMistakes() {
        var overlap = LayoutCheck("Test")
        overlap.field("a", at: 0, size: 16)
        overlap.field("b", at: 8, size: 8)
        #expect(overlap.result(within: 64)?.contains("Test.b at 8 overlaps") == true)
        var misaligned = LayoutCheck("Test")
        misaligned.field("a", at: 4, size: 8)
        #expect(misaligned.result(within: 64)?.contains("not 8-byte aligned") == true)
        var overlong = LayoutCheck("Test")
        overlong.field("a", at: 0, size: 72)
        #expect(overlong.result(within: 64)?.contains("past its 64 bytes") == true)
    }

    /// A locked allocator with blocks in several states: a full slab, partial slabs, a
    /// current slab, a reserved slab and a large span.
    static func populated() -> (LockedBinnedAllocator, [UnsafeMutableRawPointer]) {
        let allocator = LockedBinnedAllocator()
        let blocksPerSlab = (BinnedAllocator.slabSize - 4096) / 4096
        var blocks = (0..<(3 * blocksPerSlab + 5)).map { _ in allocator.allocate(byteCount: 4096)! }
        // Another class and a large span first: a new slab would come from the reserve.
        let others = [allocator.allocate(byteCount: 100)!, allocator.allocate(byteCount: 100_000)!]
        // Free one block of the first slab (full → partial) and every block of the second
        // (partial → empty → reserve).
        allocator.deallocate(blocks.remove(at: 0))
        for _ in 0..<blocksPerSlab { allocator.deallocate(blocks.remove(at: blocksPerSlab - 1)) }
        blocks += others
        return (allocator, blocks)
    }

    @Test("a populated locked allocator is sound, and so is the shared allocator")
    func soundStructures() {
        let (allocator, blocks) = Self.populated()
        #expect(allocator.integrityViolation() == nil, "\(allocator.integrityViolation() ?? "")")
        #expect(allocator.cache.reserveCount == 1, "the test meant to leave a slab in the reserve")
        #expect(allocator.cache.largeSpans.count == 1)
        for block in blocks { allocator.deallocate(block) }
        #expect(allocator.integrityViolation() == nil, "\(allocator.integrityViolation() ?? "")")
        let shared = (0..<1000).map { BinnedAllocator.shared.allocate(byteCount: $0 * 7)! }
        #expect(
            BinnedAllocator.shared.integrityViolation() == nil, "\(BinnedAllocator.shared.integrityViolation() ?? "")")
        for block in shared { BinnedAllocator.shared.deallocate(block) }
    }

    /// Issue 18: a parked cache keeps no current slab, so that its slabs retire as soon as
    /// other threads' frees empty them.
    @Test("a trim takes every current slab out of its bin: empty ones retire, the others wait on lists")
    func trimReleasesCurrentSlabs() throws {
        let allocator = LockedBinnedAllocator()
        let cache = allocator.cache
        // 64 B: one page carved (64 blocks) and all of it handed out; the rest never used.
        let partlyUsed = (0..<(4096 / 64)).map { _ in allocator.allocate(byteCount: 64)! }
        // 4096 B: one block a page, the whole slab handed out.
        let blocksPerSlab = (BinnedAllocator.slabSize - 4096) / 4096
        let wholeSlab = (0..<blocksPerSlab).map { _ in allocator.allocate(byteCount: 4096)! }
        // 128 B: a current slab with nothing in use.
        allocator.deallocate(allocator.allocate(byteCount: 128)!)
        let partial = try #require(cache.bin(Layout.sizeClasses.index(for: 64)).current)
        let full = try #require(cache.bin(Layout.sizeClasses.index(for: 4096)).current)
        #expect(partial.freeList == nil && partial.bumpCursor < partial.bumpEnd, "64 B: meant to carve one page")
        #expect(full.freeList == nil && full.bumpCursor == full.bumpEnd, "4096 B: meant to hand out the slab")

        allocator.lock.pointee.withLock { cache.trim() }
        for index in 0..<Layout.classCount {
            #expect(cache.bin(index).current == nil, "class \(index) kept its current slab")
        }
        #expect(partial.state == .partial && cache.bin(Layout.sizeClasses.index(for: 64)).partial.first == partial.base)
        #expect(full.state == .full)
        #expect(cache.bin(Layout.sizeClasses.index(for: 128)).counters.value(of: .slabs) == 0, "128 B: not retired")
        #expect(allocator.integrityViolation() == nil, "\(allocator.integrityViolation() ?? "")")

        // The next allocation of each class takes its slab back: a never-used block, a freed one.
        let again = try #require(allocator.allocate(byteCount: 64))
        #expect(Slab(containing: again).base == partial.base && partial.state == .current)
        allocator.deallocate(wholeSlab[0])
        let reused = try #require(allocator.allocate(byteCount: 4096))
        #expect(reused == wholeSlab[0] && full.state == .current)
        #expect(allocator.integrityViolation() == nil, "\(allocator.integrityViolation() ?? "")")
        for block in partlyUsed + wholeSlab.dropFirst() + [again, reused] { allocator.deallocate(block) }
    }

    @Test("the walker names a slab in the wrong place, a wrong slab count, a free-list cycle and a bad span list")
    func walkerFindsDamage() throws {
        let (allocator, blocks) = Self.populated()
        defer { for block in blocks { allocator.deallocate(block) } }
        let cache = allocator.cache
        let bin = cache.bin(Layout.sizeClasses.index(for: 4096))
        let partial = try #require(bin.partial.first.map { Slab($0) })

        // A partial slab that says it is full.
        partial.state = .full
        #expect(allocator.integrityViolation()?.contains("full slab \(partial.base)") == true)
        partial.state = .partial
        #expect(allocator.integrityViolation() == nil)

        // A slab counter that does not match the owned list.
        bin.counters.addFromOwner(1, to: .slabs)
        #expect(allocator.integrityViolation()?.contains("its counter says") == true)
        bin.counters.addFromOwner(-1, to: .slabs)

        // A free list that loops back on itself.
        let free = try #require(partial.freeList)
        let savedLink = Slab.next(after: free)
        Slab.link(free, to: free)
        #expect(allocator.integrityViolation()?.contains("cycle") == true)
        Slab.link(free, to: savedLink)

        // A reserved slab that still has a block in use.
        let reserved = try #require(cache.reserve.first.map { Slab($0) })
        reserved.used += 1
        #expect(allocator.integrityViolation()?.contains("reserved slab \(reserved.base)") == true)
        reserved.used -= 1

        // A large span whose list link is broken.
        let span = try #require(cache.largeSpans.first)
        span.storeBytes(of: span, toByteOffset: LargeSpanLayout.linksOffset, as: UnsafeMutableRawPointer?.self)
        #expect(allocator.integrityViolation()?.contains("large spans of") == true)
        span.storeBytes(of: nil, toByteOffset: LargeSpanLayout.linksOffset, as: UnsafeMutableRawPointer?.self)

        #expect(allocator.integrityViolation() == nil, "\(allocator.integrityViolation() ?? "")")
    }
}
