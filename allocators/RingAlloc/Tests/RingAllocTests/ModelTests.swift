// Model-based randomized test (spec sections 2 and 4): a seeded run that mixes fixed,
// extendable, typed and shared buffers on a small ring, so that it wraps, merges, splits
// and fills up, and checks after every operation that the ring is sound (the integrity
// walker), that every live buffer lies inside a held segment of its own, and, when a buffer
// is released, that its contents survived. One seed per run of the body of
// `forEachTestSeed` (ALLOC_TEST_SEED replays one, ALLOC_TEST_SOAK_SECONDS soaks).

import AllocCore
import AllocTestSupport
import RingAlloc
import Testing

/// The model: the live buffers, each with the tag of its pattern.
struct RingModel: ~Copyable {
    let seed: UInt64
    var generator: SplitMix64
    var ring: RingAllocator
    var fixed: [(box: Box<RingBuffer>, tag: Int)] = []
    var typed: [(box: Box<TypedRingBuffer<Int>>, values: [Int])] = []
    /// Clones of shared buffers; clones of one segment share the tag.
    var shared: [(box: Box<SharedRingBuffer>, tag: Int)] = []
    var nextTag = 1
    var counts = (fixed: 0, extendable: 0, typed: 0, frozen: 0, clones: 0, failures: 0, releases: 0)

    init(seed: UInt64, capacity: Int) throws {
        self.seed = seed
        generator = SplitMix64(seed: seed)
        ring = try RingAllocator(capacity: capacity)
    }

    mutating func random(_ bound: Int) -> Int { Int(generator.next() % UInt64(bound)) }

    /// Sizes from 1 to 4096, log-uniform, with the split threshold's neighbours often.
    mutating func randomSize() -> Int {
        if random(10) == 0 { return [1, 15, 16, 17, 48, 63, 64, 65, 80, 81][random(10)] }
        return max(1, 1 << random(13) + random(1 << random(12) + 1))
    }

    /// One random operation; returns a problem, or nil.
    mutating func step() -> String? {
        switch random(100) {
        case 0..<18: return allocateFixed()
        case 18..<30: return allocateExtendable()
        case 30..<38: return allocateTyped()
        case 38..<48: return operateOnTyped()
        case 48..<53: return freeze()
        case 53..<58: return cloneShared()
        default: return release()
        }
    }

    mutating func allocateFixed() -> String? {
        let capacity = min(randomSize(), ring.largestBufferCapacity - 512)
        let alignment = [16, 16, 16, 32, 64, 256][random(6)]
        guard var buffer = ring.fixed(capacity: capacity, alignment: alignment) else {
            counts.failures += 1
            return nil
        }
        counts.fixed += 1
        if buffer.capacity < capacity { return "fixed(capacity: \(capacity)) has capacity \(buffer.capacity)" }
        let aligned = buffer.withUnsafeBytes { Int(bitPattern: $0.baseAddress) } % alignment == 0
        if !aligned { return "fixed(alignment: \(alignment)) is misaligned" }
        let tag = nextTag
        nextTag += 1
        let length = random(capacity + 1)
        if random(2) == 0 {
            buffer.append(contentsOf: patternArray(tag: tag, count: length))
        } else if tag % 2 == 0 {
            // Spec 2: written in place through the output span (chosen by the tag, so that
            // the seeds draw the same numbers as before the output spans).
            buffer.append(minimumFreeCapacity: length) { appendPattern(&$0, tag: tag, count: length) }
        } else {
            buffer.append(repeating: 0, count: length)
            buffer.withUnsafeMutableBytes { fillPattern($0, tag: tag) }
        }
        // Spec 2: an append past the capacity traps; the free capacity tells beforehand.
        if buffer.count != length || buffer.freeCapacity != buffer.capacity - length
            || buffer.isFull != (length == buffer.capacity)
        {
            return "after \(length) bytes: count \(buffer.count), free \(buffer.freeCapacity), full \(buffer.isFull)"
        }
        fixed.append((Box(buffer), tag))
        return nil
    }

    mutating func allocateExtendable() -> String? {
        let tag = nextTag
        nextTag += 1
        var written = 0
        var refused = false
        let chunks = 1 + random(8)
        var sizes: [Int] = []
        for _ in 0..<chunks { sizes.append(random(4) == 0 ? randomSize() : 1 + random(300)) }
        let initial = 1 + random(200)
        let result = ring.extendable(capacity: initial) { buffer in
            for (index, size) in sizes.enumerated() where !refused {
                // Every second chunk through the output span, which grows the buffer as
                // the append of the same bytes would.
                let appended =
                    index % 2 == 0
                    ? buffer.append(contentsOf: patternArray(tag: tag, count: size, offset: written))
                    : buffer.append(minimumFreeCapacity: size) { output in
                        appendPattern(&output, tag: tag, count: size, offset: written)
                    } != nil
                if appended {
                    written += size
                } else {
                    refused = true
                }
            }
        }
        guard let buffer = result else {
            counts.failures += 1
            return nil
        }
        // A refused append is a failure too (a growth that found the ring full).
        if refused { counts.failures += 1 }
        counts.extendable += 1
        if buffer.count != written { return "an extendable buffer holds \(buffer.count) bytes, \(written) written" }
        if let index = buffer.withUnsafeBytes({ firstPatternMismatch($0, tag: tag) }) {
            return "an extendable buffer lost its byte \(index) of \(written) when it grew or moved"
        }
        fixed.append((Box(buffer), tag))
        return nil
    }

    mutating func allocateTyped() -> String? {
        let capacity = 1 + random(100)
        guard let buffer = ring.typed(Int.self, capacity: capacity) else {
            counts.failures += 1
            return nil
        }
        counts.typed += 1
        if buffer.capacity < capacity { return "typed(capacity: \(capacity)) has capacity \(buffer.capacity)" }
        typed.append((Box(buffer), []))
        return nil
    }

    mutating func operateOnTyped() -> String? {
        guard !typed.isEmpty else { return nil }
        let index = random(typed.count)
        var values = typed[index].values
        let box = typed[index].box
        let operation = random(6)
        let value = Int(truncatingIfNeeded: generator.next())
        let position = random(values.count + 1)
        let problem: String? = box.with { buffer in
            switch operation {
            case 0, 1:
                // Spec 2: a full buffer hands the element back.
                let refused = buffer.push(value)
                if (refused == nil) != (values.count < buffer.capacity) || (refused != nil && refused != value) {
                    return "push answered \(String(describing: refused)) at \(values.count)/\(buffer.capacity)"
                }
                if refused == nil { values.append(value) }
            case 2:
                if buffer.pop() != values.popLast() { return "pop disagrees with the model" }
            case 3:
                if buffer.isFull != (values.count == buffer.capacity)
                    || buffer.freeCapacity != buffer.capacity - values.count
                {
                    return
                        "isFull \(buffer.isFull), freeCapacity \(buffer.freeCapacity) at \(values.count)/\(buffer.capacity)"
                }
                // An insert into a full buffer traps (BadInputTests.fullTypedBuffer).
                guard !buffer.isFull else { return nil }
                buffer.insert(value, at: position)
                values.insert(value, at: position)
            case 4:
                guard !values.isEmpty else { return nil }
                let at = position % values.count
                if buffer.remove(at: at) != values.remove(at: at) {
                    return "remove(at: \(at)) disagrees with the model"
                }
            default:
                guard !values.isEmpty else { return nil }
                let at = position % values.count
                let expected = values[at]
                values[at] = values[values.count - 1]
                values.removeLast()
                if buffer.swapRemove(at: at) != expected { return "swapRemove(at: \(at)) disagrees with the model" }
            }
            let same = buffer.withUnsafeBufferPointer { Array($0) } == values
            return same ? nil : "a typed buffer holds other elements than the model"
        }
        typed[index].values = values
        return problem
    }

    mutating func freeze() -> String? {
        guard !fixed.isEmpty else { return nil }
        let entry = fixed.remove(at: random(fixed.count))
        let frozen = entry.box.take()!.freeze()
        if frozen.cloneCount != 1 { return "a frozen buffer starts with \(frozen.cloneCount) clones" }
        counts.frozen += 1
        shared.append((Box(frozen), entry.tag))
        return nil
    }

    mutating func cloneShared() -> String? {
        guard !shared.isEmpty else { return nil }
        let entry = shared[random(shared.count)]
        let clone = entry.box.with { $0.clone() }
        counts.clones += 1
        shared.append((Box(clone), entry.tag))
        return nil
    }

    /// Releases a buffer, the oldest more often than not (a ring's usual order), after
    /// checking its contents.
    mutating func release() -> String? {
        let kind = random(3)
        let oldest = random(10) < 7
        counts.releases += 1
        if kind == 0, !fixed.isEmpty {
            let entry = fixed.remove(at: oldest ? 0 : random(fixed.count))
            let buffer = entry.box.take()!
            if let index = buffer.withUnsafeBytes({ firstPatternMismatch($0, tag: entry.tag) }) {
                return "a buffer's byte \(index) changed before its release"
            }
        } else if kind == 1, !typed.isEmpty {
            let entry = typed.remove(at: oldest ? 0 : random(typed.count))
            let same = entry.box.with { buffer in buffer.withUnsafeBufferPointer { Array($0) } } == entry.values
            if !same { return "a typed buffer's elements changed before its release" }
            _ = entry.box.take()
        } else if !shared.isEmpty {
            let entry = shared.remove(at: oldest ? 0 : random(shared.count))
            let buffer = entry.box.take()!
            if let index = buffer.withUnsafeBytes({ firstPatternMismatch($0, tag: entry.tag) }) {
                return "a shared buffer's byte \(index) changed before its release"
            }
        }
        return nil
    }

    /// What the run has not exercised enough yet, or nil: every buffer kind, clones, full
    /// rings, wraps, merges and splits.
    func coverageGap() -> String? {
        let statistics = ring.statistics()
        let covered =
            counts.extendable > 50 && counts.typed > 50 && counts.clones > 20 && counts.failures > 0
            && statistics.wraps > 5 && statistics.merges > 50 && statistics.splits > 50
        return covered ? nil : "too little coverage: \(counts), \(statistics)"
    }

    /// Every live buffer inside a held segment, one segment per buffer (clones share
    /// theirs), and as many held segments as buffers.
    func checkPlacement() -> String? {
        // The owner is named only for a report: building the names at every step would
        // cost more than the check.
        var ranges: [(start: UInt, end: UInt, kind: StaticString, index: Int)] = []
        for (index, entry) in fixed.enumerated() {
            let (start, capacity) = entry.box.with { buffer in
                (UInt(bitPattern: buffer.withUnsafeBytes { $0.baseAddress }), buffer.capacity)
            }
            ranges.append((start, start + UInt(capacity), "fixed", index))
        }
        for (index, entry) in typed.enumerated() {
            let (start, capacity) = entry.box.with { buffer in
                (UInt(bitPattern: buffer.withUnsafeBufferPointer { $0.baseAddress }), buffer.capacity)
            }
            ranges.append((start, start + UInt(capacity * MemoryLayout<Int>.stride), "typed", index))
        }
        var sharedStarts = Set<UInt>()
        for (index, entry) in shared.enumerated() {
            let (start, count) = entry.box.with { buffer in
                (UInt(bitPattern: buffer.withUnsafeBytes { $0.baseAddress }), buffer.count)
            }
            if sharedStarts.insert(start).inserted { ranges.append((start, start + UInt(count), "shared", index)) }
        }
        // In address order (the walk goes from the head), and disjoint: the only segment
        // that can hold a buffer is the last one whose payload starts at or before it.
        let held = ring.segments().filter(\.isHeld)
        if held.count != ranges.count { return "\(held.count) held segments for \(ranges.count) live buffers" }
        var used = Set<UInt>()
        for range in ranges {
            var (low, high) = (0, held.count)
            while low < high {
                let middle = (low + high) / 2
                if held[middle].start + 16 <= range.start { low = middle + 1 } else { high = middle }
            }
            let owner = { "\(range.kind) #\(range.index) at 0x\(String(range.start, radix: 16))" }
            guard low > 0, range.end <= held[low - 1].start + UInt(held[low - 1].byteCount) else {
                return "\(owner()) lies in no held segment"
            }
            if !used.insert(held[low - 1].start).inserted { return "\(owner()) shares a segment with another buffer" }
        }
        return nil
    }
}

@Suite("Model-based randomized test")
struct ModelTests {
    /// Steps every seed runs. A seed whose run has not yet exercised all that the test
    /// claims to check (``RingModel/coverageGap()``) goes on, up to `maximumSteps`: how
    /// much of each kind a run makes is random, and at a fixed 2500 steps about 2 seeds in
    /// 100 fell short (too few clones or wraps) although nothing was wrong.
    static let steps = 2500
    static let maximumSteps = 10_000

    // Spec sections 2 and 4: every operation of every buffer kind keeps the ring sound.
    @Test("a seeded mix of every buffer kind keeps the ring sound and the contents intact")
    func randomizedMix() throws {
        try forEachTestSeed { seed in try Self.run(seed: seed) }
    }

    // The seed, found by a soak, whose first 2500 steps made 19 clones (the coverage asks
    // for more than 20): it failed while the step count was fixed.
    @Test("a seed short of the coverage after 2500 steps goes on until it has it")
    func seedShortOfCoverage() throws {
        try Self.run(seed: 11_110_760_791_507_865_815)
    }

    /// One seed's run: a step, then the ring's soundness and every buffer's placement,
    /// until the run is long enough; then the run's coverage and the failure count.
    static func run(seed: UInt64) throws {
        var model = try RingModel(seed: seed, capacity: 40 * 1024)
        var step = 0
        while step < steps || (step < maximumSteps && model.coverageGap() != nil) {
            if let problem = model.step() ?? model.ring.integrityViolation() ?? model.checkPlacement() {
                Issue.record("seed \(seed), step \(step): \(problem)")
                return
            }
            step += 1
        }
        // The run must have exercised what it claims to check.
        if let gap = model.coverageGap() { Issue.record("seed \(seed): after \(step) steps, \(gap)") }
        let statistics = model.ring.statistics()
        #expect(statistics.failures == model.counts.failures, "seed \(seed): \(model.counts), \(statistics)")
    }
}
