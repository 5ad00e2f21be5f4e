// ArenaAlloc's workloads: blink-alloc's benchmarks (17,453 operations per cycle, then a
// reset), against what a program writes without an arena: malloc/free through function
// pointers for single objects and resized blocks, Swift arrays for pushes and
// from-sequence, in a process whose malloc is glibc's or jemalloc's.

import AllocCore
import ArenaAlloc
import Glibc

enum ArenaAllocSuite: BenchSuite {
    static let name = "ArenaAlloc"

    /// blink-alloc's cycle length: every workload allocates this many times, then resets.
    static let cycle = 17_453

    /// ``Arena``, one thread.
    static let arena = AllocatorColumn(name: "ArenaAlloc", process: .glibc)
    /// ``SharedArena`` (each thread bumps through its own window of the shared chunk).
    static let shared = AllocatorColumn(name: "ArenaAlloc shared", process: .glibc)
    /// ``LocalArena`` per thread over a ``SharedArena``.
    static let local = AllocatorColumn(name: "ArenaAlloc local", process: .glibc)

    static let smallObjects = Workload.Family(
        title: "Arena: small objects, then release all (blink-alloc's 17,453-allocation cycle)",
        unit:
            "ns per object: allocate a 4-byte object, write it, release the cycle's objects (arena: reset; baselines: malloc(4) then free each through function pointers); release ns: releasing one whole cycle (median over the cycles, two clock reads included)",
        extras: [Workload.Family.Extra(key: "release", header: "release ns")])
    static let values = Workload.Family(
        title: "Arena: values put in the arena, against Swift class instances",
        unit:
            "ns per value: put a 16-byte struct (two Ints) and read it back, reset per 17,453 values (baselines: what a program writes without an arena: an instance of a final class with the same two fields, kept in an Array reserved for the cycle, released at the cycle's end by removeAll(keepingCapacity:))"
    )
    static let resizing = Workload.Family(
        title: "Arena: growing and shrinking the newest allocation",
        unit:
            "ns per operation: grow-shrink = allocate 16 B, grow to 64 B, shrink to 32 B (baselines: malloc, realloc, realloc, free at the cycle's end); push = append one UInt32 to an array (baselines: Swift Array.append)"
    )
    static let fromSequence = Workload.Family(
        title: "Arena: an array from a sequence of 111 elements",
        unit:
            "ns per array: arena collect (reset per 17,453 arrays) vs Swift Array(sequence), freed at once; filter = a lazy filter that hides the count"
    )
    static let collections = Workload.Family(
        title: "Arena: growable arrays and strings, against Swift Array and String",
        unit:
            "ns per collection built and dropped, 1,000 per cycle: array = 100 Ints appended one by one to an empty ArenaArray in a withScope body (the scope, and its reset, once per 1,000), baselines an empty Swift Array; string = 100 appends of \"ab\" to an empty ArenaString, baselines an empty Swift String (both start at capacity 0 and grow as they must; BinnedMalloc runs the baselines' code)"
    )
    static let threads = Workload.Family(
        title: "Arena: two threads",
        unit:
            "ns per object, wall time: each thread allocates and writes 4-byte objects in cycles of 17,453 (baselines: malloc, then free the cycle; shared: one SharedArena, reset after the run, since it resets only once no thread holds it, so it keeps the whole run's objects: compare its RSS; local: a LocalArena per thread, reset per cycle)"
    )

    static var workloads: [any SuiteWorkload] {
        let plain: [AllocatorColumn] = [.glibc, .jemalloc, arena]
        return [
            ArenaWorkload("arena-small-u32", smallObjects, cycles: 400, [.glibc, .jemalloc, arena, shared]) {
                column, cycles in
                if column.isBaseline { return mallocSmall(cycles: cycles) }
                return column == shared ? sharedSmall(cycles: cycles) : arenaSmall(cycles: cycles)
            },
            ArenaWorkload("arena-small-u32-fresh", smallObjects, cycles: 200, plain, mallocSmall, freshArenaSmall),
            ArenaWorkload("arena-put", values, cycles: 200, plain, classInstances, arenaPut),
            ArenaWorkload("arena-grow-shrink", resizing, cycles: 200, plain, mallocGrowShrink, arenaGrowShrink),
            ArenaWorkload("arena-push", resizing, cycles: 400, plain, arrayPush, arenaPush),
            ArenaWorkload(
                "arena-collect-111", fromSequence, cycles: 20, plain,
                { arrayFromSequence(cycles: $0, hideCount: false) },
                { arenaCollect(cycles: $0, hideCount: false) }),
            ArenaWorkload(
                "arena-collect-111-filter", fromSequence, cycles: 20, plain,
                { arrayFromSequence(cycles: $0, hideCount: true) }, { arenaCollect(cycles: $0, hideCount: true) }),
            ArenaWorkload(
                "arena-array-1000x100", collections, cycles: 20, [.glibc, .jemalloc, .binnedMalloc, arena],
                swiftArrays, arenaArrays),
            ArenaWorkload(
                "arena-string-1000x100", collections, cycles: 5, [.glibc, .jemalloc, .binnedMalloc, arena],
                swiftStrings, arenaStrings),
            ArenaWorkload("arena-t2", threads, cycles: 400, [.glibc, .jemalloc, shared, local]) { column, cycles in
                if column.isBaseline { return mallocTwoThreads(cycles: cycles) }
                return column == shared ? sharedTwoThreads(cycles: cycles) : localTwoThreads(cycles: cycles)
            },
        ]
    }

    /// A workload of this suite: its row, and its body for a column and a number of cycles.
    struct ArenaWorkload: SuiteWorkload {
        let workload: Workload
        /// Runs `cycles` cycles for `column`: a baseline's code, or the arena column's.
        let body: @Sendable (_ column: AllocatorColumn, _ cycles: Int) -> Measurement

        /// A row of `cycles` of the suite's cycles (17,453 operations each) over `columns`.
        init(
            _ name: String, _ family: Workload.Family, cycles: Int, _ columns: [AllocatorColumn],
            body: @escaping @Sendable (_ column: AllocatorColumn, _ cycles: Int) -> Measurement
        ) {
            workload = Workload(
                name: name, family: family, kind: .suite(ArenaAllocSuite.name), operations: cycle * cycles,
                columns: columns)
            self.body = body
        }

        /// A row whose baselines run `baseline` and whose one arena column runs `arena`.
        init(
            _ name: String, _ family: Workload.Family, cycles: Int, _ columns: [AllocatorColumn],
            _ baseline: @escaping @Sendable (_ cycles: Int) -> Measurement,
            _ arena: @escaping @Sendable (_ cycles: Int) -> Measurement
        ) {
            self.init(name, family, cycles: cycles, columns) { column, cycles in
                column.isBaseline ? baseline(cycles) : arena(cycles)
            }
        }

        func measure(column: AllocatorColumn, scale: Scale) -> Measurement {
            let run = { (operations: Int) in body(column, max(1, operations / cycle)) }
            // Every column first runs two untimed cycles, whatever the scale: the first grows
            // the arena (or the heap), the second touches the chunk a reset consolidated into,
            // so even a quick run's timed part sees warm memory, as a full run's mostly does.
            // `arena-small-u32-fresh` still makes a new arena per cycle: it measures the cold case.
            _ = run(2 * cycle)
            return measureWithWarmUp(operations: workload.operations(at: scale), scale: scale, run)
        }
    }

    /// What the small-object workload needs of an arena, so that one loop measures both
    /// `Arena` and `SharedArena` (specialized for each: no dynamic dispatch in the loop).
    protocol CycleArena: ~Copyable {
        mutating func allocate<T>(of type: T.Type, capacity: Int) -> UnsafeMutableBufferPointer<T>?
        mutating func reset()
    }

    // MARK: Warm arenas

    /// The arena of the cell this worker runs, kept from the warm-up runs to the timed run
    /// (as the process's heap stays warm for the baselines): the timed run measures an
    /// arena after warm-up, except in `arena-small-u32-fresh`, which measures the warm-up.
    nonisolated(unsafe) static var warmArena: Arena? = nil
    nonisolated(unsafe) static var warmShared: SharedArena? = nil

    static func takeArena() -> Arena { warmArena.take() ?? Arena() }
    static func keep(_ arena: consuming Arena) { warmArena = consume arena }
    static func takeShared() -> SharedArena { warmShared.take() ?? SharedArena() }

    // MARK: Small objects

    /// The time each cycle's release took, kept in memory allocated before the clock starts;
    /// reported as the median, so the first cycle (an arena's one-time consolidation, a
    /// heap's first growth) does not stand for the warm case.
    struct ReleaseTimes: ~Copyable {
        let times: UnsafeMutablePointer<UInt64>
        let capacity: Int
        var count = 0

        init(cycles: Int) {
            capacity = max(1, cycles)
            times = .allocate(capacity: capacity)
        }

        deinit { times.deallocate() }

        mutating func record(_ nanoseconds: UInt64) {
            guard count < capacity else { return }
            times[count] = nanoseconds
            count += 1
        }

        var median: Double {
            var sorted = UnsafeMutableBufferPointer(start: times, count: count)
            sorted.sort()
            return count == 0 ? 0 : Double(sorted[count / 2])
        }
    }

    @inline(never)
    static func mallocSmall(cycles: Int) -> Measurement {
        let heap = ProcessMalloc()
        let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: cycle)
        defer { blocks.deallocate() }
        var checksum: UInt64 = 0
        var release = ReleaseTimes(cycles: cycles)
        let start = SystemInfo.monotonicNanoseconds()
        for _ in 0..<cycles {
            for index in 0..<cycle {
                let block = heap.allocate(4)
                block.storeBytes(of: UInt32(truncatingIfNeeded: index), as: UInt32.self)
                checksum &+= UInt64(block.load(as: UInt32.self))
                blocks[index] = block
            }
            let releaseStart = SystemInfo.monotonicNanoseconds()
            for index in 0..<cycle { heap.deallocate(blocks[index], byteCount: 4) }
            release.record(SystemInfo.monotonicNanoseconds() - releaseStart)
        }
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(
            nanoseconds: end - start, operations: cycles * cycle, checksum: checksum,
            extras: ["release": release.median])
    }

    /// A cycle of small objects in `arena`, reset per cycle; the release time is the reset's.
    @inline(never)
    static func smallObjects<A: CycleArena & ~Copyable>(in arena: inout A, cycles: Int) -> Measurement {
        var checksum: UInt64 = 0
        var release = ReleaseTimes(cycles: cycles)
        let start = SystemInfo.monotonicNanoseconds()
        for _ in 0..<cycles {
            for index in 0..<cycle {
                let slot = arena.allocate(of: UInt32.self, capacity: 1).unsafelyUnwrapped
                slot[0] = UInt32(truncatingIfNeeded: index)
                checksum &+= UInt64(slot[0])
            }
            let releaseStart = SystemInfo.monotonicNanoseconds()
            arena.reset()
            release.record(SystemInfo.monotonicNanoseconds() - releaseStart)
        }
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(
            nanoseconds: end - start, operations: cycles * cycle, checksum: checksum,
            extras: ["release": release.median])
    }

    static func arenaSmall(cycles: Int) -> Measurement {
        var arena = takeArena()
        let measurement = smallObjects(in: &arena, cycles: cycles)
        keep(arena)
        return measurement
    }

    static func sharedSmall(cycles: Int) -> Measurement {
        var arena = takeShared()
        let measurement = smallObjects(in: &arena, cycles: cycles)
        warmShared = arena
        return measurement
    }

    @inline(never)
    static func freshArenaSmall(cycles: Int) -> Measurement {
        var checksum: UInt64 = 0
        var release = ReleaseTimes(cycles: cycles)
        let start = SystemInfo.monotonicNanoseconds()
        for _ in 0..<cycles {
            var arena = Arena()
            for index in 0..<cycle {
                let slot = arena.allocate(of: UInt32.self, capacity: 1).unsafelyUnwrapped
                slot[0] = UInt32(truncatingIfNeeded: index)
                checksum &+= UInt64(slot[0])
            }
            let releaseStart = SystemInfo.monotonicNanoseconds()
            _ = consume arena
            release.record(SystemInfo.monotonicNanoseconds() - releaseStart)
        }
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(
            nanoseconds: end - start, operations: cycles * cycle, checksum: checksum,
            extras: ["release": release.median])
    }

    // MARK: Values

    /// The value both sides make: two words, as a tree node's payload or a small record.
    struct Pair {
        var first: Int
        var second: Int
    }

    /// The same fields in a class: what a Swift program allocates without an arena.
    final class PairObject {
        var first: Int
        var second: Int
        init(first: Int, second: Int) {
            self.first = first
            self.second = second
        }
    }

    @inline(never)
    static func classInstances(cycles: Int) -> Measurement {
        var objects: [PairObject] = []
        objects.reserveCapacity(cycle)
        var checksum: UInt64 = 0
        let start = SystemInfo.monotonicNanoseconds()
        for _ in 0..<cycles {
            for index in 0..<cycle {
                let object = PairObject(first: index, second: index &* 3)
                objects.append(object)
                checksum &+= UInt64(truncatingIfNeeded: object.first &+ object.second)
            }
            objects.removeAll(keepingCapacity: true)
        }
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(nanoseconds: end - start, operations: cycles * cycle, checksum: checksum)
    }

    @inline(never)
    static func arenaPut(cycles: Int) -> Measurement {
        var arena = takeArena()
        var checksum: UInt64 = 0
        let start = SystemInfo.monotonicNanoseconds()
        for _ in 0..<cycles {
            for index in 0..<cycle {
                let pair = arena.put(Pair(first: index, second: index &* 3)).unsafelyUnwrapped
                checksum &+= UInt64(truncatingIfNeeded: pair.value.first &+ pair.value.second)
            }
            arena.reset()
        }
        let end = SystemInfo.monotonicNanoseconds()
        keep(arena)
        return Measurement(nanoseconds: end - start, operations: cycles * cycle, checksum: checksum)
    }

    // MARK: Resizing

    typealias Reallocate = @convention(c) (UnsafeMutableRawPointer?, Int) -> UnsafeMutableRawPointer?

    /// The process's `realloc`, found at run time like ``ProcessMalloc``'s functions.
    static let processRealloc: Reallocate = {
        guard let symbol = dlsym(nil, "realloc") else { fatalError("dlsym found no realloc") }
        return unsafeBitCast(symbol, to: Reallocate.self)
    }()

    @inline(never)
    static func mallocGrowShrink(cycles: Int) -> Measurement {
        let heap = ProcessMalloc()
        let reallocate = processRealloc
        let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: cycle)
        defer { blocks.deallocate() }
        var checksum: UInt64 = 0
        let start = SystemInfo.monotonicNanoseconds()
        for _ in 0..<cycles {
            for index in 0..<cycle {
                var block = heap.allocate(16)
                block.storeBytes(of: UInt32(truncatingIfNeeded: index), as: UInt32.self)
                block = reallocate(block, 64).unsafelyUnwrapped
                block.storeBytes(of: 1, toByteOffset: 60, as: UInt32.self)
                block = reallocate(block, 32).unsafelyUnwrapped
                checksum &+= UInt64(block.load(as: UInt32.self))
                blocks[index] = block
            }
            for index in 0..<cycle { heap.deallocate(blocks[index], byteCount: 32) }
        }
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(nanoseconds: end - start, operations: cycles * cycle, checksum: checksum)
    }

    @inline(never)
    static func arenaGrowShrink(cycles: Int) -> Measurement {
        var arena = takeArena()
        var checksum: UInt64 = 0
        let start = SystemInfo.monotonicNanoseconds()
        for _ in 0..<cycles {
            for index in 0..<cycle {
                var block = arena.allocate(byteCount: 16).unsafelyUnwrapped
                block.storeBytes(of: UInt32(truncatingIfNeeded: index), as: UInt32.self)
                block = arena.resize(block, from: 16, to: 64).unsafelyUnwrapped
                block.storeBytes(of: 1, toByteOffset: 60, as: UInt32.self)
                block = arena.resize(block, from: 64, to: 32).unsafelyUnwrapped
                checksum &+= UInt64(block.load(as: UInt32.self))
            }
            arena.reset()
        }
        let end = SystemInfo.monotonicNanoseconds()
        keep(arena)
        return Measurement(nanoseconds: end - start, operations: cycles * cycle, checksum: checksum)
    }

    @inline(never)
    static func arrayPush(cycles: Int) -> Measurement {
        var checksum: UInt64 = 0
        let start = SystemInfo.monotonicNanoseconds()
        for _ in 0..<cycles {
            var array: [UInt32] = []
            for index in 0..<cycle { array.append(UInt32(truncatingIfNeeded: index)) }
            checksum &+= UInt64(array[cycle - 1]) &+ UInt64(array.count)
        }
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(nanoseconds: end - start, operations: cycles * cycle, checksum: checksum)
    }

    /// An array that grows in the arena: doubling by `resize`, which stays in place while
    /// the array is the arena's newest block (what blink-alloc's `Vec::push` in an arena does).
    @inline(never)
    static func arenaPush(cycles: Int) -> Measurement {
        var arena = takeArena()
        var checksum: UInt64 = 0
        let stride = MemoryLayout<UInt32>.stride
        let start = SystemInfo.monotonicNanoseconds()
        for _ in 0..<cycles {
            var capacity = 4
            var elements = arena.allocate(byteCount: capacity * stride, alignment: 4).unsafelyUnwrapped
            var count = 0
            for index in 0..<cycle {
                if count == capacity {
                    elements =
                        arena.resize(elements, from: capacity * stride, to: 2 * capacity * stride, alignment: 4)
                        .unsafelyUnwrapped
                    capacity *= 2
                }
                elements.storeBytes(
                    of: UInt32(truncatingIfNeeded: index), toByteOffset: count * stride, as: UInt32.self)
                count += 1
            }
            checksum &+= UInt64(elements.load(fromByteOffset: (cycle - 1) * stride, as: UInt32.self)) &+ UInt64(count)
            arena.reset()
        }
        let end = SystemInfo.monotonicNanoseconds()
        keep(arena)
        return Measurement(nanoseconds: end - start, operations: cycles * cycle, checksum: checksum)
    }

    // MARK: From a sequence

    static let sequenceLength = 111

    @inline(never)
    static func arrayFromSequence(cycles: Int, hideCount: Bool) -> Measurement {
        var checksum: UInt64 = 0
        let start = SystemInfo.monotonicNanoseconds()
        for _ in 0..<cycles {
            for index in 0..<cycle {
                let values = (0..<sequenceLength).lazy.map { UInt32(truncatingIfNeeded: $0 &+ index) }
                let array = hideCount ? Array(values.filter { _ in true }) : Array(values)
                checksum &+= UInt64(array[sequenceLength - 1]) &+ UInt64(array.count)
            }
        }
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(nanoseconds: end - start, operations: cycles * cycle, checksum: checksum)
    }

    @inline(never)
    static func arenaCollect(cycles: Int, hideCount: Bool) -> Measurement {
        var arena = takeArena()
        var checksum: UInt64 = 0
        let start = SystemInfo.monotonicNanoseconds()
        for _ in 0..<cycles {
            for index in 0..<cycle {
                let values = (0..<sequenceLength).lazy.map { UInt32(truncatingIfNeeded: $0 &+ index) }
                let array =
                    hideCount
                    ? arena.collect(values.filter { _ in true }).unsafelyUnwrapped
                    : arena.collect(values).unsafelyUnwrapped
                checksum &+= UInt64(array[sequenceLength - 1]) &+ UInt64(array.count)
            }
            arena.reset()
        }
        let end = SystemInfo.monotonicNanoseconds()
        keep(arena)
        return Measurement(nanoseconds: end - start, operations: cycles * cycle, checksum: checksum)
    }

    // MARK: Growable collections

    /// Collections per scope: the 1,000 arrays of 100 elements; a cycle is 17,453
    /// collections, so the arena opens a scope (and resets) every 1,000 of them.
    static let collectionsPerScope = 1_000
    static let elementsPerCollection = 100

    /// The checksum's view of a value, through a function the optimizer cannot see into, so
    /// that no collection is built for nothing.
    @inline(never)
    static func sink(_ value: Int) -> UInt64 { UInt64(truncatingIfNeeded: value) }

    @inline(never)
    static func swiftArrays(cycles: Int) -> Measurement {
        var checksum: UInt64 = 0
        let start = SystemInfo.monotonicNanoseconds()
        for round in 0..<(cycles * cycle) {
            var array: [Int] = []
            for element in 0..<elementsPerCollection { array.append(element &+ round) }
            checksum &+= sink(array[elementsPerCollection - 1])
        }
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(nanoseconds: end - start, operations: cycles * cycle, checksum: checksum)
    }

    @inline(never)
    static func arenaArrays(cycles: Int) -> Measurement {
        var arena = takeArena()
        var checksum: UInt64 = 0
        let total = cycles * cycle
        let start = SystemInfo.monotonicNanoseconds()
        var round = 0
        while round < total {
            let end = min(total, round + collectionsPerScope)
            checksum &+= arena.withScope { scope in
                var sum: UInt64 = 0
                for index in round..<end {
                    guard var array = try? ArenaArray<Int>(in: scope) else { fatalError("the arena is full") }
                    for element in 0..<elementsPerCollection {
                        guard (try? array.append(element &+ index)) != nil else { fatalError("the arena is full") }
                    }
                    sum &+= sink(array[elementsPerCollection - 1])
                }
                return sum
            }
            round = end
        }
        let end = SystemInfo.monotonicNanoseconds()
        keep(arena)
        return Measurement(nanoseconds: end - start, operations: total, checksum: checksum)
    }

    @inline(never)
    static func swiftStrings(cycles: Int) -> Measurement {
        var checksum: UInt64 = 0
        let start = SystemInfo.monotonicNanoseconds()
        for round in 0..<(cycles * cycle) {
            var string = ""
            for _ in 0..<elementsPerCollection { string.append("ab") }
            checksum &+= sink(string.utf8.count &+ round)
        }
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(nanoseconds: end - start, operations: cycles * cycle, checksum: checksum)
    }

    @inline(never)
    static func arenaStrings(cycles: Int) -> Measurement {
        var arena = takeArena()
        var checksum: UInt64 = 0
        let total = cycles * cycle
        let start = SystemInfo.monotonicNanoseconds()
        var round = 0
        while round < total {
            let end = min(total, round + collectionsPerScope)
            checksum &+= arena.withScope { scope in
                var sum: UInt64 = 0
                for index in round..<end {
                    guard var string = try? ArenaString(in: scope) else { fatalError("the arena is full") }
                    for _ in 0..<elementsPerCollection {
                        guard (try? string.append("ab")) != nil else { fatalError("the arena is full") }
                    }
                    sum &+= sink(string.utf8Count &+ index)
                }
                return sum
            }
            round = end
        }
        let end = SystemInfo.monotonicNanoseconds()
        keep(arena)
        return Measurement(nanoseconds: end - start, operations: total, checksum: checksum)
    }

    // MARK: Two threads

    static let threadCount = 2

    @inline(never)
    static func mallocTwoThreads(cycles: Int) -> Measurement {
        let perThread = max(1, cycles / threadCount)
        let checksum = AtomicCounterBox()
        let line = onThreads(threadCount) { _, line in
            let heap = ProcessMalloc()
            let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: cycle)
            var sum: UInt64 = 0
            line.arriveAndWait()
            for _ in 0..<perThread {
                for index in 0..<cycle {
                    let block = heap.allocate(4)
                    block.storeBytes(of: UInt32(truncatingIfNeeded: index), as: UInt32.self)
                    sum &+= UInt64(block.load(as: UInt32.self))
                    blocks[index] = block
                }
                for index in 0..<cycle { heap.deallocate(blocks[index], byteCount: 4) }
            }
            line.finish()
            blocks.deallocate()
            _ = checksum.add(Int(truncatingIfNeeded: sum))
        }
        return Measurement(
            nanoseconds: line.elapsed, operations: perThread * threadCount * cycle, checksum: UInt64(checksum.load()))
    }

    @inline(never)
    static func sharedTwoThreads(cycles: Int) -> Measurement {
        let perThread = max(1, cycles / threadCount)
        let checksum = AtomicCounterBox()
        var arena = takeShared()
        let line = onThreads(threadCount) { [arena] _, line in
            var sum: UInt64 = 0
            line.arriveAndWait()
            for _ in 0..<perThread {
                for index in 0..<cycle {
                    let slot = arena.allocate(of: UInt32.self, capacity: 1).unsafelyUnwrapped
                    slot[0] = UInt32(truncatingIfNeeded: index)
                    sum &+= UInt64(slot[0])
                }
            }
            line.finish()
            _ = checksum.add(Int(truncatingIfNeeded: sum))
        }
        // The closure (and its copy of the arena) is gone once the threads are joined.
        let resetStart = SystemInfo.monotonicNanoseconds()
        arena.reset()
        let resetTime = SystemInfo.monotonicNanoseconds() - resetStart
        warmShared = arena
        return Measurement(
            nanoseconds: line.elapsed + resetTime, operations: perThread * threadCount * cycle,
            checksum: UInt64(checksum.load()))
    }

    @inline(never)
    static func localTwoThreads(cycles: Int) -> Measurement {
        let perThread = max(1, cycles / threadCount)
        let checksum = AtomicCounterBox()
        var arena = takeShared()
        let line = onThreads(threadCount) { [arena] _, line in
            var local = arena.makeLocalArena()
            var sum: UInt64 = 0
            line.arriveAndWait()
            for _ in 0..<perThread {
                for index in 0..<cycle {
                    let slot = local.allocate(of: UInt32.self, capacity: 1).unsafelyUnwrapped
                    slot[0] = UInt32(truncatingIfNeeded: index)
                    sum &+= UInt64(slot[0])
                }
                local.reset()
            }
            line.finish()
            _ = checksum.add(Int(truncatingIfNeeded: sum))
        }
        // The local arenas gave their chunks back: the next run's local arenas reuse them.
        arena.reset()
        warmShared = arena
        return Measurement(
            nanoseconds: line.elapsed, operations: perThread * threadCount * cycle, checksum: UInt64(checksum.load()))
    }
}

extension Arena: ArenaAllocSuite.CycleArena {}
extension SharedArena: ArenaAllocSuite.CycleArena {}
