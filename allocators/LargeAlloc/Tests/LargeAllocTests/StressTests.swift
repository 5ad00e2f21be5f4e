// Multi-threaded stress (spec section 5): more threads than cores allocate regions, write
// a pattern, and swap them through shared slots, so most releases happen on another
// thread, while the worker clears and unmaps and another thread reads statistics and runs
// the integrity walker (spec section 4: it takes every lock, so it is exact while the others
// run). The thread-sanitizer run selects this suite with `--filter Stress`.

import AllocCore
import AllocTestSupport
import Glibc
import LargeAlloc
import Synchronization
import Testing

@Suite("LargeAlloc Stress")
struct StressTests {
    static let threadCount = max(6, SystemInfo.cpuCount * 3)

    final class Problems: @unchecked Sendable {
        let lock = SpinLock()
        var list: [String] = []
        func report(_ problem: String) { lock.withLock { if list.count < 10 { list.append(problem) } } }
    }

    /// The counters that only ever grow, of every class, and the allocator's.
    static func growingCounters(_ statistics: LargeAllocStatistics) -> [(String, Int)] {
        var counters = [("threadCaches", statistics.threadCaches), ("workerTicks", statistics.workerTicks)]
        for sizeClass in statistics.sizeClasses {
            let size = sizeClass.regionByteCount >> 10
            counters += [
                ("allocations of \(size) KiB", sizeClass.allocations),
                ("deallocations of \(size) KiB", sizeClass.deallocations),
                ("slowPaths of \(size) KiB", sizeClass.slowPaths), ("refills of \(size) KiB", sizeClass.refills),
                ("eagerClears of \(size) KiB", sizeClass.eagerClears),
                ("backgroundClears of \(size) KiB", sizeClass.backgroundClears),
                ("clearFailures of \(size) KiB", sizeClass.clearFailures), ("steals of \(size) KiB", sizeClass.steals),
                ("unmappedChunks of \(size) KiB", sizeClass.unmappedChunks),
            ]
        }
        return counters
    }

    /// Each thread: `operations` times, allocate a region of 64 KiB to 1 MiB, fill it, swap
    /// it into a random slot, and check and drop what came out.
    func stress(_ allocator: LargeAllocator, seed: UInt64, operations: Int) throws {
        let slots = (0..<16).map { _ in RegionSlot() }
        let problems = Problems()
        let stop = Signal()
        let allocationBound = Self.threadCount * operations
        // A snapshot taken while other threads allocate and free is not one atomic picture
        // (spec section 8): `liveRegions`, a difference of sums read one after another, can
        // be off for a moment, even negative. What holds is that no counter that only grows
        // ever goes back from one snapshot to the next, and none passes what was done.
        let reader = try OSThread.spawn {
            var previous = Self.growingCounters(allocator.statistics())
            while !stop.isRaised {
                usleep(500)
                let statistics = allocator.statistics()
                let current = Self.growingCounters(statistics)
                for (before, now) in zip(previous, current) where now.1 < before.1 {
                    problems.report("seed \(seed): \(now.0) went back from \(before.1) to \(now.1)")
                }
                let total = totals(statistics)
                if total.allocations > allocationBound || total.deallocations > allocationBound {
                    problems.report("seed \(seed): \(total.allocations) allocations, bound \(allocationBound)")
                }
                previous = current
                if let violation = allocator.integrityViolation() { problems.report("seed \(seed): \(violation)") }
            }
        }
        let threads = try (0..<Self.threadCount).map { thread in
            try OSThread.spawn {
                var generator = SplitMix64(seed: seed &+ UInt64(thread))
                for operation in 0..<operations {
                    let elements = Int.random(in: 1...(1 << 20) / 8, using: &generator)
                    let tag = UInt64(thread) << 32 | UInt64(operation) | 1
                    do {
                        var region = try allocator.allocate(UInt64.self, capacity: elements)
                        fill(&region, count: min(elements, 2048), tag: tag)
                        let slot = slots[Int.random(in: 0..<slots.count, using: &generator)]
                        if let old = slot.swap(TaggedRegion(region: region, tag: tag)), !old.isIntact {
                            problems.report("seed \(seed): region tagged \(old.tag) overwritten before release")
                        }
                    } catch {
                        problems.report("seed \(seed): thread \(thread) got \(error)")
                    }
                }
            }
        }
        for thread in threads { thread.join() }
        stop.raise()
        reader.join()
        for slot in slots {
            if let region = slot.swap(nil), !region.isIntact { problems.report("seed \(seed): slot overwritten") }
        }
        if let violation = allocator.integrityViolation() { problems.report("seed \(seed) at the end: \(violation)") }
        let found = problems.lock.withLock { problems.list }
        #expect(found.isEmpty, "\(found)")
        let statistics = totals(allocator.statistics())
        #expect(
            statistics.liveRegions == 0 && statistics.allocations == allocationBound, "seed \(seed): \(statistics)")
    }

    /// Checks a region written by ``spansAcrossThreads()`` (element `i` is `tag ^ i`)
    /// through its span, changes every element through its mutable span, and checks the
    /// change through the closure accessor: what is wrong, or nil.
    static func checkAndChange(_ item: inout TaggedRegion) -> String? {
        let tag = item.tag
        let intact = item.region.span.withUnsafeBufferPointer { elements in
            elements.indices.allSatisfy { elements[$0] == tag ^ UInt64($0) }
        }
        guard intact else { return "region tagged \(tag) overwritten before release" }
        do {
            var span = item.region.mutableSpan
            for index in span.indices { span[index] = ~span[index] }
        }
        let changed = item.region.withUnsafeBufferPointer { elements in
            elements.indices.allSatisfy { elements[$0] == ~(tag ^ UInt64($0)) }
        }
        return changed ? nil : "region tagged \(tag): a change through its mutable span was lost"
    }

    // Spec 2 and 5: a region filled through its output span on one thread is read through
    // `span` and changed through `mutableSpan` by the thread that takes it from a slot,
    // and released there.
    @Test("regions filled through output spans are read and changed through spans on other threads")
    func spansAcrossThreads() throws {
        let seed = testSeed()
        let allocator = try LargeAllocator(
            configuration: testConfiguration(threadCacheBytes: 2 << 20, worker: .milliseconds(1)))
        let slots = (0..<8).map { _ in RegionSlot() }
        let problems = Problems()
        let threadCount = 4
        let operations = 300
        let threads = try (0..<threadCount).map { thread in
            try OSThread.spawn {
                var generator = SplitMix64(seed: seed &+ UInt64(thread))
                for operation in 0..<operations {
                    let elements = Int.random(in: 1...16_384, using: &generator)
                    let tag = UInt64(thread) << 32 | UInt64(operation) | 1
                    do {
                        var region = try allocator.allocate(UInt64.self, capacity: elements)
                        region.append(minimumFreeCapacity: elements) { output in
                            for index in 0..<elements { output.append(tag ^ UInt64(index)) }
                        }
                        let slot = slots[Int.random(in: 0..<slots.count, using: &generator)]
                        if var old = slot.swap(TaggedRegion(region: region, tag: tag)),
                            let problem = Self.checkAndChange(&old)
                        {
                            problems.report("seed \(seed): \(problem)")
                        }
                    } catch {
                        problems.report("seed \(seed): thread \(thread) got \(error)")
                    }
                }
            }
        }
        for thread in threads { thread.join() }
        for slot in slots {
            if var item = slot.swap(nil), let problem = Self.checkAndChange(&item) {
                problems.report("seed \(seed): \(problem)")
            }
        }
        let found = problems.lock.withLock { problems.list }
        #expect(found.isEmpty, "\(found)")
        let statistics = totals(allocator.statistics())
        #expect(
            statistics.liveRegions == 0 && statistics.allocations == threadCount * operations,
            "seed \(seed): \(statistics)")
        #expect(allocator.integrityViolation() == nil)
    }

    @Test("anonymous, small caches, fast worker that unmaps idle chunks")
    func anonymous() throws {
        var configuration = testConfiguration(threadCacheBytes: 2 << 20, worker: .milliseconds(1))
        configuration.chunkIdleAge = .zero
        configuration.backgroundBytesPerTick = 1 << 20
        let allocator = try LargeAllocator(configuration: configuration)
        try stress(allocator, seed: testSeed(), operations: 1000)
    }

    @Test("eager return, no thread caches")
    func eager() throws {
        var configuration = testConfiguration(threadCacheBytes: 0, worker: .milliseconds(2))
        configuration.eagerReturn = true
        let allocator = try LargeAllocator(configuration: configuration)
        try stress(allocator, seed: testSeed(), operations: 500)
    }

    @Test("file-backed, with stealing and reconfiguration on the fly")
    func fileBacked() throws {
        try withTemporaryDirectory { directory in
            var configuration = testConfiguration(
                backing: .file(directory: directory), threadCacheBytes: 4 << 20, worker: .milliseconds(2))
            configuration.chunkIdleAge = .milliseconds(1)
            let allocator = try LargeAllocator(configuration: configuration)
            let stop = Signal()
            let base = configuration
            let changer = try OSThread.spawn {
                var flip = false
                while !stop.isRaised {
                    var changed = base
                    changed.eagerReturn = flip
                    changed.threadCacheBytes = flip ? 0 : 4 << 20
                    changed.backgroundInterval = flip ? nil : .milliseconds(1)
                    try? allocator.reconfigure(changed)
                    flip.toggle()
                    usleep(2000)
                }
            }
            try stress(allocator, seed: testSeed(), operations: 500)
            stop.raise()
            changer.join()
        }
    }
}
