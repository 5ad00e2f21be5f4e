// Model-based randomized tests: seeded runs of allocate / deallocate / reallocate checked
// against a model of the live blocks (address, size, usable size, alignment, the pattern
// written into it). Each seed is one short run (`forEachTestSeed`), so a soak tries
// hundreds of them; the printed ALLOC_TEST_SEED line replays a failure. The integrity
// walker (spec section 4) checks the allocator's whole structure at every audit and at the
// end of each run.

import AllocCore
import AllocTestSupport
import Glibc
import Testing

@testable import BinnedAlloc

/// The operations the model drives, so that one driver checks every allocator.
protocol ModelledAllocator {
    func allocate(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer?
    func allocateDefault(byteCount: Int) -> UnsafeMutableRawPointer?
    func deallocate(_ pointer: UnsafeMutableRawPointer?)
    func reallocate(_ pointer: UnsafeMutableRawPointer?, byteCount: Int) -> UnsafeMutableRawPointer?
    func usableSize(of pointer: UnsafeRawPointer?) -> Int
}

extension BinnedAllocator: ModelledAllocator {
    func allocateDefault(byteCount: Int) -> UnsafeMutableRawPointer? { allocate(byteCount: byteCount) }
}

extension LockedBinnedAllocator: ModelledAllocator {
    func allocateDefault(byteCount: Int) -> UnsafeMutableRawPointer? { allocate(byteCount: byteCount) }
}

/// One live block of the model.
struct ModelBlock {
    var pointer: UnsafeMutableRawPointer
    var size: Int
    var usable: Int
    var alignment: Int
    /// The pattern written over `Pattern.windows(usable)`.
    var tag: Int
    /// The size class the block was carved from, when it is a plain small block
    /// (alignment <= 16, size <= smallSizeLimit); nil for large or over-aligned blocks.
    var sizeClass: Int?
}

/// The model and its driver. `run` returns nil or the first discrepancy it found (after
/// which it stops, since the heap may be corrupt).
struct AllocatorModel<Allocator: ModelledAllocator> {
    let allocator: Allocator
    let seed: UInt64
    var generator: SplitMix64
    var live: [ModelBlock] = []
    var intervals = IntervalSet()
    var nextTag = 1
    let limit = BinnedAllocator.smallSizeLimit
    let specialSizes = boundarySizes()
    var counts = (allocations: 0, deallocations: 0, reallocations: 0, moves: 0, large: 0)

    init(allocator: Allocator, seed: UInt64) {
        self.allocator = allocator
        self.seed = seed
        generator = SplitMix64(seed: seed)
    }

    /// Sizes from 0 to 4 × smallSizeLimit: log-uniform below the large threshold, with 5%
    /// large sizes and 4% exact class boundaries (and the sizes either side).
    mutating func randomSize() -> Int {
        let roll = generator.next() % 100
        if roll < 4 { return specialSizes.randomElement(using: &generator)! }
        if roll < 9 { return Int.random(in: (limit + 1)...(4 * limit), using: &generator) }
        let bits = Int.random(in: 0...15, using: &generator)
        return Int.random(in: ((1 << bits) >> 1)...(1 << bits), using: &generator)
    }

    /// 16 most of the time (the default argument), otherwise a power of two up to 4096.
    mutating func randomAlignment() -> Int? {
        generator.next() % 100 < 85 ? nil : 1 << Int.random(in: 0...12, using: &generator)
    }

    func describe(_ block: ModelBlock) -> String {
        "block \(block.pointer) tag \(block.tag) size \(block.size) usable \(block.usable) "
            + "alignment \(block.alignment)"
    }

    func checkContents(_ block: ModelBlock, at pointer: UnsafeRawPointer, prefix: Int) -> String? {
        for window in Pattern.windows(block.usable, clippedTo: prefix)
        where !Pattern.matches(pointer, tag: block.tag, range: window) {
            var firstBad = window.lowerBound
            while Pattern.matches(pointer, tag: block.tag, range: firstBad..<(firstBad + 1)) { firstBad += 1 }
            return "contents of \(describe(block)) changed: first wrong byte at offset \(firstBad) (now at \(pointer))"
        }
        return nil
    }

    /// Checks a block the allocator just returned and adds it to the model.
    mutating func admit(
        _ pointer: UnsafeMutableRawPointer, size: Int, alignment: Int, sizeClass: Int?, what: String
    ) -> String? {
        guard isMultiple(pointer, of: 16) else { return "\(what) returned \(pointer), not 16-byte aligned" }
        guard isMultiple(pointer, of: alignment) else {
            return "\(what) returned \(pointer), not aligned to the \(alignment) asked"
        }
        let usable = allocator.usableSize(of: pointer)
        guard usable >= size else { return "\(what): usableSize \(usable) < \(size) asked (\(pointer))" }
        guard usable <= Pattern.maximumLength else { return "\(what): usableSize \(usable) is implausibly large" }
        if let overlap = intervals.insert(start: UInt(bitPattern: pointer), length: usable) {
            return "\(what) returned \(pointer) with usable size \(usable), overlapping the live block "
                + "[\(String(overlap.start, radix: 16)), \(String(overlap.end, radix: 16)))"
        }
        let block = ModelBlock(
            pointer: pointer, size: size, usable: usable, alignment: alignment, tag: nextTag, sizeClass: sizeClass)
        nextTag += 1
        for window in Pattern.windows(usable) { Pattern.fill(pointer, tag: block.tag, range: window) }
        live.append(block)
        return nil
    }

    mutating func allocateOne() -> String? {
        let size = randomSize()
        let alignment = randomAlignment()
        let pointer =
            alignment.map { allocator.allocate(byteCount: size, alignment: $0) }
            ?? allocator.allocateDefault(byteCount: size)
        let what = "allocate(byteCount: \(size), alignment: \(alignment.map(String.init) ?? "default"))"
        guard let pointer else { return "\(what) returned nil" }
        counts.allocations += 1
        if size > limit { counts.large += 1 }
        let plain = (alignment ?? 16) <= 16 && size <= limit
        return admit(
            pointer, size: size, alignment: alignment ?? 16, sizeClass: plain ? classIndex(size) : nil, what: what)
    }

    mutating func freeOne() -> String? {
        let index = Int.random(in: 0..<live.count, using: &generator)
        let block = live[index]
        if let problem = checkContents(block, at: block.pointer, prefix: block.usable) { return problem }
        let usable = allocator.usableSize(of: block.pointer)
        guard usable == block.usable else {
            return "usableSize of live \(describe(block)) changed to \(usable)"
        }
        live.swapAt(index, live.count - 1)
        live.removeLast()
        intervals.remove(start: UInt(bitPattern: block.pointer))
        allocator.deallocate(block.pointer)
        counts.deallocations += 1
        return nil
    }

    mutating func reallocateOne() -> String? {
        let index = Int.random(in: 0..<live.count, using: &generator)
        let block = live[index]
        if let problem = checkContents(block, at: block.pointer, prefix: block.usable) { return problem }
        // Large blocks mostly stay large and sometimes grow far (up to 1 MiB), so that
        // spans grow and shrink in place and also have to move.
        let newSize =
            block.size > limit && generator.next() % 2 == 0
            ? Int.random(in: (limit + 1)...(32 * limit), using: &generator) : max(1, randomSize())
        let what = "reallocate(\(describe(block)), byteCount: \(newSize))"
        guard let result = allocator.reallocate(block.pointer, byteCount: newSize) else {
            return "\(what) returned nil"
        }
        counts.reallocations += 1
        live.swapAt(index, live.count - 1)
        live.removeLast()
        intervals.remove(start: UInt(bitPattern: block.pointer))
        if let sizeClass = block.sizeClass, newSize <= limit, classIndex(newSize) == sizeClass,
            result != block.pointer
        {
            return "\(what) stayed in size class \(sizeClass) but moved the block to \(result)"
        }
        if result != block.pointer { counts.moves += 1 }
        // Contents: the first min(old usable, new size) bytes are kept.
        if let problem = checkContents(block, at: result, prefix: min(block.usable, newSize)) {
            return "after \(what): " + problem
        }
        let sizeClass: Int? =
            result == block.pointer ? block.sizeClass : (newSize <= limit ? classIndex(newSize) : nil)
        return admit(result, size: newSize, alignment: 16, sizeClass: sizeClass, what: what)
    }

    func checkAll() -> String? {
        for block in live {
            if let problem = checkContents(block, at: block.pointer, prefix: block.usable) { return problem }
        }
        return nil
    }

    /// Runs `operations` random operations with up to `maximumLive` live blocks, drawing a
    /// new target number of live blocks every `retargetInterval` operations, and calling
    /// `audit` every `auditInterval` operations with the number of live blocks.
    mutating func run(
        operations: Int, maximumLive: Int, retargetInterval: Int, auditInterval: Int,
        audit: (Int) -> String? = { _ in nil }
    ) -> String? {
        var target = maximumLive / 2
        for operation in 0..<operations {
            if operation % retargetInterval == 0 {
                // Alternate between filling up and draining, so slabs empty and refill.
                target = Int.random(in: 0...maximumLive, using: &generator)
            }
            let roll = generator.next() % 100
            let problem: String?
            if live.isEmpty || (live.count < target ? roll < 55 : roll < 25) {
                problem = live.count >= maximumLive ? freeOne() : allocateOne()
            } else if roll < 80 {
                problem = freeOne()
            } else {
                problem = reallocateOne()
            }
            if let problem { return "operation \(operation): \(problem)" }
            if operation % auditInterval == auditInterval - 1 {
                if let problem = checkAll() { return "sweep after operation \(operation): \(problem)" }
                if let problem = audit(live.count) { return "audit after operation \(operation): \(problem)" }
            }
        }
        if let problem = checkAll() { return "final sweep: \(problem)" }
        while !live.isEmpty {
            if let problem = freeOne() { return "final free: \(problem)" }
        }
        return nil
    }
}

@Suite("Model-based randomized tests")
struct ModelTests {
    /// One seed's run of the shared allocator: long enough to fill up to 3,000 live blocks
    /// and drain them several times (a new target every 4,000 operations), short enough
    /// that a soak tries hundreds of seeds a minute.
    static let sharedOperations = 30_000
    /// One seed's run of a locked allocator, audited against its statistics.
    static let lockedOperations = 30_000

    @Test("BinnedAllocator.shared agrees with the model, seed after seed")
    func sharedAllocatorModel() throws {
        try forEachTestSeed { seed in
            var model = AllocatorModel(allocator: BinnedAllocator.shared, seed: seed)
            let problem = model.run(
                operations: Self.sharedOperations, maximumLive: 3000, retargetInterval: 4_000, auditInterval: 10_000
            ) { _ in BinnedAllocator.shared.integrityViolation() }
            try #require(problem == nil, "seed \(seed): \(problem ?? "")")
            let violation = BinnedAllocator.shared.integrityViolation()
            try #require(violation == nil, "seed \(seed), after the run: \(violation ?? "")")
            // The run must have exercised every kind of operation, large blocks and moves
            // (a run has about 40% allocations, 40% frees, 20% reallocations, most of
            // them moves, and 2% large blocks).
            let counts = model.counts
            let operations = Self.sharedOperations
            #expect(
                counts.allocations > operations / 4 && counts.deallocations > operations / 4, "seed \(seed): \(counts)")
            #expect(counts.reallocations > operations / 10 && counts.moves > operations / 40, "seed \(seed): \(counts)")
            #expect(counts.large > operations / 100, "seed \(seed): \(counts)")
        }
    }

    @Test("LockedBinnedAllocator agrees with the model, and its statistics count exactly the live blocks")
    func lockedAllocatorModel() throws {
        try forEachTestSeed { seed in
            let allocator = LockedBinnedAllocator()
            var model = AllocatorModel(allocator: allocator, seed: seed)
            let problem = model.run(
                operations: Self.lockedOperations, maximumLive: 2000, retargetInterval: 4_000, auditInterval: 2_000
            ) { liveCount in
                if let violation = allocator.integrityViolation() { return violation }
                let statistics = allocator.statistics()
                if let bad = statistics.inconsistentClasses.first { return "inconsistent statistics: \(bad)" }
                if statistics.liveBlocks != liveCount {
                    return "statistics count \(statistics.smallLiveBlocks) small + \(statistics.largeLiveBlocks) "
                        + "large live blocks, the model has \(liveCount)"
                }
                return nil
            }
            try #require(problem == nil, "seed \(seed): \(problem ?? "")")
            let violation = allocator.integrityViolation()
            try #require(violation == nil, "seed \(seed), after the run: \(violation ?? "")")
            let statistics = allocator.statistics()
            #expect(statistics.inconsistentClasses.isEmpty, "seed \(seed): \(statistics.inconsistentClasses)")
            #expect(statistics.smallLiveBlocks == 0, "seed \(seed): \(statistics.smallLiveBlocks) small blocks live")
            #expect(statistics.largeLiveBlocks == 0 && statistics.largeLiveBytes == 0, "seed \(seed)")
            #expect(
                statistics.smallAllocations + statistics.largeAllocations >= model.counts.allocations, "seed \(seed)")
            #expect(statistics.largeAllocations >= model.counts.large, "seed \(seed)")
        }
    }
}
