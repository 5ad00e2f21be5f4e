// BackgroundDrop's workloads: bgdrop's benchmark (1,000 binary trees of height 10, 1,023
// class nodes each, dropped in a loop) and defer-drop's (a 1000×1000 array of arrays of
// strings, dropped whole), as caller-side time of the release against the hand-off to a
// dropper with one or two threads, in a process whose malloc is glibc's or jemalloc's.
// Building the values is not timed; only the release (baselines) or the hand-off
// (droppers) is.
//
// Each measurement runs two passes over freshly built values. The first times the whole
// loop over the benchmark's own values (the row's time), and the time until the
// background has finished them ("finished ns": until the end of the last deinit, as the
// dropper records it, so the flushing thread's own wake-up is not counted). The second
// times every release or hand-off on its own, for the latency percentiles, so that the
// clock reads do not weigh on the first. For the trees it gives up the trees again. For
// the strings it gives up the 1,000 inner arrays of each value one by one (3,000 timed
// hand-offs of 1,000 strings each): defer-drop drops each 1000×1000 value whole, which
// is what the first pass does, but three values per run would make p99.9 the maximum,
// and a thousand values of about 95 MB each would take about a minute to build. The
// checksum counts the tree nodes deinitialised (each node's deinit counts itself in a
// per-thread counter, read after the background finished) or the strings built, and
// equals across columns.
//
// A third family (issue 21) measures `DeferredDrop`'s cost to the caller against `drop`'s:
// small objects given up one by one, by a drop or by a wrapper made and ended at once.

import AllocCore
import BackgroundDrop
import Synchronization

enum BackgroundDropSuite: BenchSuite {
    static let name = "BackgroundDrop"

    static let oneThread = AllocatorColumn(name: "BackgroundDrop-1t", process: .glibc)
    static let twoThreads = AllocatorColumn(name: "BackgroundDrop-2t", process: .glibc)
    static let oneThreadJemalloc = AllocatorColumn(name: "BackgroundDrop-1t/jemalloc", process: .jemalloc)
    static let twoThreadsJemalloc = AllocatorColumn(name: "BackgroundDrop-2t/jemalloc", process: .jemalloc)
    /// The floor of "finished": the same values released by a second thread with no queue
    /// and no wake-up in the time (see ``runOnOtherThread``), in each process allocator.
    /// The strings only: for the trees, such a thread measured slower than a dropper's own
    /// thread (35–44 µs a tree against 20–25, with more of glibc's time in
    /// `malloc_consolidate` and around `free`; not understood), so it would bound nothing.
    static let otherThread = AllocatorColumn(name: "other-thread", process: .glibc)
    static let otherThreadJemalloc = AllocatorColumn(name: "other-thread/jemalloc", process: .jemalloc)

    static let family = Workload.Family(
        title: "Background drop: caller-side release (bgdrop's trees, defer-drop's strings)",
        unit:
            "ns per value the caller gives up (one tree of 1,023 class nodes, or one 1000×1000 array of 24-byte strings): baselines release it in place, BackgroundDrop columns hand it to a dropper with 1 or 2 threads; building is not timed; finished ns: per value, until the last background deinit ended (baselines: the release itself); in deinit ns: per value, time the background threads spent inside the deinits, summed over threads (the release on another thread, where malloc frees cross-thread; for the baselines, the release): the queue's own cost is what finished adds to it; other-thread (strings): the floor of finished, the release of the same values by a second thread that waits spinning for the start (no queue, no wake-up; every free a cross-thread free), ns/op and finished being that release; p50…max: one release or hand-off, timed alone, of a tree, or of one inner array of 1,000 strings (3,000 per run)",
        extras: [
            Workload.Family.Extra(key: "finished", header: "finished ns"),
            Workload.Family.Extra(key: "deinit", header: "in deinit ns"),
        ] + Workload.Family.Extra.latencyPercentiles
    )

    static let columns = [
        AllocatorColumn.glibc, .jemalloc, oneThread, twoThreads, oneThreadJemalloc, twoThreadsJemalloc,
    ]

    static var workloads: [any SuiteWorkload] {
        [
            DeferredWorkload(),
            DropWorkload(name: "drop-trees-1000x1023", operations: 1000, columns: columns) { operations, dropper in
                run(
                    operations: operations, dropper: dropper, build: { TreeNode(height: 10) },
                    latencySamples: operations, giveUpTimingEach: giveUpTimingEach
                ) { _ in
                    UInt64(DeinitTally.total())
                }
            },
            DropWorkload(
                name: "drop-strings-1000x1000", operations: 3, columns: columns,
                body: { operations, dropper in
                    run(
                        operations: operations, dropper: dropper, build: buildStrings,
                        latencySamples: operations * 1000, giveUpTimingEach: giveUpInnerArraysTimingEach
                    ) { count in
                        UInt64(count * 1_000_000)
                    }
                },
                otherThreadFloor: { operations, releaser in
                    runOnOtherThread(
                        releaser, operations: operations, build: buildStrings, latencySamples: operations * 1000,
                        releaseTimingEach: giveUpInnerArraysTimingEach
                    ) { count in
                        UInt64(count * 1_000_000)
                    }
                }),
        ]
    }

    /// A workload of this suite: its row, its body (a release in place for the baselines,
    /// a hand-off to `dropper` for the dropper columns) and, where it has one, the
    /// other-thread floor's body (and the floor's two columns).
    struct DropWorkload: SuiteWorkload {
        let workload: Workload
        let body: @Sendable (_ operations: Int, _ dropper: BackgroundDropper?) -> Measurement
        let otherThreadFloor: (@Sendable (_ operations: Int, _ releaser: ReleaseThread) -> Measurement)?

        init(
            name: String, operations: Int, columns: [AllocatorColumn],
            body: @escaping @Sendable (_ operations: Int, _ dropper: BackgroundDropper?) -> Measurement,
            otherThreadFloor: (@Sendable (_ operations: Int, _ releaser: ReleaseThread) -> Measurement)? = nil
        ) {
            workload = Workload(
                name: name, family: family, kind: .suite(BackgroundDropSuite.name), operations: operations,
                columns: columns + (otherThreadFloor == nil ? [] : [otherThread, otherThreadJemalloc]))
            self.body = body
            self.otherThreadFloor = otherThreadFloor
        }

        func measure(column: AllocatorColumn, scale: Scale) -> Measurement {
            let threads: Int? =
                switch column {
                case oneThread, oneThreadJemalloc: 1
                case twoThreads, twoThreadsJemalloc: 2
                default: nil
                }
            let onOtherThread = column == otherThread || column == otherThreadJemalloc
            precondition(threads != nil || column.isBaseline || onOtherThread, "\(name) has no column \(column.name)")
            // The dropper is created once, before any timing; its threads sleep in between.
            let dropper: BackgroundDropper?
            do {
                dropper = try threads.map { try BackgroundDropper(threads: $0, capacity: 4096) }
            } catch {
                fatalError("cannot create a dropper: \(error)")
            }
            let operations = workload.operations(at: scale)
            if onOtherThread {
                guard let otherThreadFloor else { preconditionFailure("\(workload.name) has no other-thread floor") }
                // The floor's thread, made once, so that it is as warm as a dropper's.
                let releaser = ReleaseThread()
                return measureWithWarmUp(operations: operations, scale: scale) { otherThreadFloor($0, releaser) }
            }
            return measureWithWarmUp(operations: operations, scale: scale) { body($0, dropper) }
        }
    }

    /// One measurement over `operations` values built beforehand: the timed loop, then a
    /// second loop over fresh values, `giveUpTimingEach`, that times each release or
    /// hand-off alone (`latencySamples` of them). `checksum(count)` is called once the
    /// background finished the timed loop's `count` values.
    @inline(never)
    static func run<Value: Sendable>(
        operations: Int, dropper: BackgroundDropper?, build: () -> Value, latencySamples: Int,
        giveUpTimingEach: (UnsafeMutablePointer<Value>, Int, BackgroundDropper?, inout LatencyRecorder) -> Void,
        checksum: (Int) -> UInt64
    ) -> Measurement {
        let values = UnsafeMutablePointer<Value>.allocate(capacity: operations)
        defer { values.deallocate() }
        let before = dropper?.statistics()
        var latencies = LatencyRecorder(capacity: latencySamples)

        for index in 0..<operations { (values + index).initialize(to: build()) }
        DeinitTally.reset()
        let start = SystemInfo.monotonicNanoseconds()
        giveUp(values, operations, to: dropper)
        let end = SystemInfo.monotonicNanoseconds()
        dropper?.flush()
        let sum = checksum(operations)
        let afterTimedPass = dropper?.statistics()
        // Until the last deinit ended: the dropper records when (the flush returns a
        // wake-up later); for the baselines, the release itself.
        let finished = afterTimedPass.map { max(end, $0.lastDropEndedNanoseconds) } ?? end
        // Time inside the deinits: the background's share of "finished" (the rest is the
        // queue and the background thread's wake-up); for the baselines, the release.
        let inDeinit =
            afterTimedPass.map { $0.droppingNanoseconds - (before?.droppingNanoseconds ?? 0) } ?? (end - start)

        for index in 0..<operations { (values + index).initialize(to: build()) }
        giveUpTimingEach(values, operations, dropper, &latencies)
        dropper?.flush()
        if let dropper, let before {
            // Every value went through the queue, none was dropped inline, all are done.
            let after = dropper.statistics()
            let expected = operations + latencySamples
            precondition(
                after.queued - before.queued == expected && after.droppedInline == 0 && after.pending == 0,
                "the dropper did not take every value: \(after)")
        }
        var extras = latencies.percentiles()
        extras["finished"] = Double(finished - start) / Double(operations)
        extras["deinit"] = Double(inDeinit) / Double(operations)
        return Measurement(nanoseconds: end - start, operations: operations, checksum: sum, extras: extras)
    }

    /// The `other-thread` floor: ``run``'s two passes, with the releases made by
    /// `releaser`'s thread, which waits spinning for a start both threads see, so no
    /// wake-up is in the time: what is left is the release itself, on a thread that did
    /// not allocate the values (glibc then frees with atomic operations, which a process
    /// that never had a second thread skips; jemalloc frees to another thread's arena).
    /// No dropper can finish sooner, whatever its queue.
    @inline(never)
    static func runOnOtherThread<Value: Sendable>(
        _ releaser: ReleaseThread, operations: Int, build: () -> Value, latencySamples: Int,
        releaseTimingEach:
            @escaping @Sendable (UnsafeMutablePointer<Value>, Int, BackgroundDropper?, inout LatencyRecorder) -> Void,
        checksum: (Int) -> UInt64
    ) -> Measurement {
        let values = UnsafeMutablePointer<Value>.allocate(capacity: operations)
        defer { values.deallocate() }
        let latencies = UnsafeMutablePointer<LatencyRecorder>.allocate(capacity: 1)
        latencies.initialize(to: LatencyRecorder(capacity: latencySamples))
        defer { latencies.deinitialize(count: 1).deallocate() }
        let shared = UncheckedPointers(values: values, latencies: latencies)

        for index in 0..<operations { (values + index).initialize(to: build()) }
        DeinitTally.reset()
        let (start, end) = releaser.run { giveUp(shared.values, operations, to: nil) }
        let sum = checksum(operations)

        for index in 0..<operations { (values + index).initialize(to: build()) }
        _ = releaser.run { releaseTimingEach(shared.values, operations, nil, &shared.latencies.pointee) }

        var extras = latencies.pointee.percentiles()
        extras["finished"] = Double(end - start) / Double(operations)
        extras["deinit"] = Double(end - start) / Double(operations)
        return Measurement(nanoseconds: end - start, operations: operations, checksum: sum, extras: extras)
    }

    /// The pointers `runOnOtherThread` hands to its thread, which is done with them
    /// before `run` returns.
    struct UncheckedPointers<Value>: @unchecked Sendable {
        let values: UnsafeMutablePointer<Value>
        let latencies: UnsafeMutablePointer<LatencyRecorder>
    }

    /// A thread that runs one job at a time for the floor, timed there from a start both
    /// threads wait for, spinning (so its wake-up is not in the time). Between jobs it
    /// sleeps on a futex; it lives as long as the worker process.
    final class ReleaseThread: @unchecked Sendable {
        /// Jobs posted (the thread's futex), and jobs done (the caller's).
        let words = UnsafeMutableRawPointer.allocate(byteCount: 128, alignment: 64)
        var posted: AtomicWord { AtomicWord(at: words) }
        var done: AtomicWord { AtomicWord(at: words + 64) }
        /// The job and its start line, written before `posted` moves (release/acquire).
        var job: (@Sendable () -> Void)?
        var line = StartLine(threads: 2)

        init() {
            _ = AtomicWord(initializingAt: words, to: 0)
            _ = AtomicWord(initializingAt: words + 64, to: 0)
            do {
                _ = try OSThread.spawn { [self] in serve() }
            } catch {
                fatalError("cannot start a thread: \(error)")
            }
        }

        func serve() {
            // The scheduling policy of a dropper's threads, so that only the queue differs.
            OSThread.useBatchSchedulingForCurrentThread()
            var seen = 0
            while true {
                while posted.load(ordering: .acquiring) == seen { _ = Futex.wait(posted, whileEqualTo: seen) }
                seen += 1
                line.arriveAndWait()
                job?()
                line.finish()
                done.store(seen, ordering: .releasing)
                _ = Futex.wake(done)
            }
        }

        /// Runs `body` on the thread; returns when it started and ended there.
        func run(_ body: @escaping @Sendable () -> Void) -> (start: UInt64, end: UInt64) {
            job = body
            line = StartLine(threads: 2)
            let number = posted.wrappingAdd(1, ordering: .releasing) + 1
            _ = Futex.wake(posted)
            line.arriveAndWait()
            while done.load(ordering: .acquiring) != number { _ = Futex.wait(done, whileEqualTo: number - 1) }
            return (UInt64(line.startTime.load()), UInt64(line.latestEnd.load()))
        }
    }

    /// Releases (no dropper) or hands off every value, as a program would in a loop.
    @inline(__always)
    static func giveUp<Value: Sendable>(
        _ values: UnsafeMutablePointer<Value>, _ count: Int, to dropper: BackgroundDropper?
    ) {
        if let dropper {
            for index in 0..<count { dropper.drop((values + index).move()) }
        } else {
            for index in 0..<count { (values + index).deinitialize(count: 1) }
        }
    }

    /// `giveUp`, with each release or hand-off timed alone. The value is moved out before
    /// the clock starts and handed over with `consume`, so that the drop takes the last
    /// reference (a plain variable would be retained into the call and released after).
    static func giveUpTimingEach<Value: Sendable>(
        _ values: UnsafeMutablePointer<Value>, _ count: Int, _ dropper: BackgroundDropper?,
        _ latencies: inout LatencyRecorder
    ) {
        if let dropper {
            for index in 0..<count {
                let value = (values + index).move()
                let t0 = SystemInfo.monotonicNanoseconds()
                dropper.drop(consume value)
                latencies.record(SystemInfo.monotonicNanoseconds() - t0)
            }
        } else {
            for index in 0..<count {
                let t0 = SystemInfo.monotonicNanoseconds()
                (values + index).deinitialize(count: 1)
                latencies.record(SystemInfo.monotonicNanoseconds() - t0)
            }
        }
    }

    /// The strings' latency pass: each value's 1,000 inner arrays released or handed off
    /// one by one, each timed alone (taking an array out of its value is not timed); the
    /// emptied outer arrays are freed afterwards, untimed.
    static func giveUpInnerArraysTimingEach(
        _ values: UnsafeMutablePointer<[[String]]>, _ count: Int, _ dropper: BackgroundDropper?,
        _ latencies: inout LatencyRecorder
    ) {
        let inner = UnsafeMutablePointer<[String]>.allocate(capacity: 1)
        defer { inner.deallocate() }
        for index in 0..<count {
            while !values[index].isEmpty {
                inner.initialize(to: values[index].removeLast())
                if let dropper {
                    let value = inner.move()
                    let t0 = SystemInfo.monotonicNanoseconds()
                    dropper.drop(consume value)
                    latencies.record(SystemInfo.monotonicNanoseconds() - t0)
                } else {
                    let t0 = SystemInfo.monotonicNanoseconds()
                    inner.deinitialize(count: 1)
                    latencies.record(SystemInfo.monotonicNanoseconds() - t0)
                }
            }
        }
        values.deinitialize(count: count)
    }

    /// defer-drop's value: 1,000 arrays of 1,000 strings of 24 bytes, each with a heap
    /// buffer of its own (longer than the 15 bytes Swift stores inline).
    static func buildStrings() -> [[String]] {
        (0..<1000).map { _ in (0..<1000).map { _ in String(repeating: "s", count: 24) } }
    }
}

/// bgdrop's tree node: a class with two children; a tree of height 10 has 1,023 nodes.
/// Its deinit counts itself, so the checksum proves every node was deinitialised.
final class TreeNode: Sendable {
    let left: TreeNode?
    let right: TreeNode?

    init(height: Int) {
        left = height > 1 ? TreeNode(height: height - 1) : nil
        right = height > 1 ? TreeNode(height: height - 1) : nil
    }

    deinit { DeinitTally.count() }
}

// MARK: - DeferredDrop against drop

extension BackgroundDropSuite {
    /// Each object wrapped in a ``DeferredDrop`` on the same one-thread dropper, the wrapper
    /// made and ended at once.
    static let deferred = AllocatorColumn(name: "DeferredDrop-1t", process: .glibc)
    /// `drop` on `BackgroundDropper.shared` (one thread, 4,096 slots) held in a local, and
    /// `DeferredDrop(value)`, which uses it by default.
    static let sharedDrop = AllocatorColumn(name: "BackgroundDrop-shared", process: .glibc)
    static let deferredShared = AllocatorColumn(name: "DeferredDrop-shared", process: .glibc)

    static let deferredFamily = Workload.Family(
        title: "Background drop: DeferredDrop against drop (caller-side cost)",
        unit:
            "ns per object given up: 2,048 objects (a node of a tree of height 1: a final class instance whose deinit counts itself) built before the clock starts; baselines release each in place; BackgroundDrop-1t hands each to a dropper with 1 thread and 8,192 slots with drop(_:); DeferredDrop-1t wraps each in a DeferredDrop on the same dropper and ends the wrapper at once (its init, which keeps the dropper, and its deinit, which hands the object over, both timed); BackgroundDrop-shared: drop(_:) on BackgroundDropper.shared (1 thread, 4,096 slots) held in a local; DeferredDrop-shared: DeferredDrop(object), the wrapper's default, which uses the shared dropper without keeping it (it is never released); the dropper is flushed after the clock stops"
    )

    /// The objects, and the dropper's slots: room for them all (in the shared dropper's 4,096
    /// too), so no hand-off waits.
    static let deferredObjects = 2048
    static let deferredCapacity = 8192

    struct DeferredWorkload: SuiteWorkload {
        var workload: Workload {
            Workload(
                name: "deferred-drop-objects-2048", family: deferredFamily, kind: .suite(BackgroundDropSuite.name),
                operations: deferredObjects,
                columns: [.glibc, .jemalloc, oneThread, deferred, sharedDrop, deferredShared])
        }

        func measure(column: AllocatorColumn, scale: Scale) -> Measurement {
            precondition(
                column.isBaseline || workload.columns.contains(column), "\(workload.name) has no column \(column.name)")
            // The dropper is created once, before any timing; its thread sleeps in between.
            let dropper: BackgroundDropper?
            do {
                switch column {
                case sharedDrop, deferredShared: dropper = BackgroundDropper.shared
                case oneThread, deferred: dropper = try BackgroundDropper(threads: 1, capacity: deferredCapacity)
                default: dropper = nil
                }
            } catch {
                fatalError("cannot create a dropper: \(error)")
            }
            let how: GiveUp =
                switch column {
                case deferred: .wrap
                case deferredShared: .wrapOnShared
                default: dropper == nil ? .inPlace : .drop
                }
            return measureWithWarmUp(operations: workload.operations(at: scale), scale: scale) { operations in
                giveUpObjects(operations: operations, dropper: dropper, how: how)
            }
        }
    }

    /// How ``giveUpObjects(operations:dropper:how:)`` gives each object up.
    enum GiveUp {
        /// Released in place: no dropper.
        case inPlace
        /// `dropper.drop(object)`.
        case drop
        /// `DeferredDrop(object, dropper: dropper)`, made and ended at once.
        case wrap
        /// `DeferredDrop(object)` (the shared dropper, the wrapper's default), made and
        /// ended at once.
        case wrapOnShared
    }

    /// Gives up `operations` objects built beforehand, as `how` says (`dropper` is the
    /// dropper used, for `.wrapOnShared` the shared one). The checksum is the objects
    /// deinitialized, counted once the dropper is flushed.
    @inline(never)
    static func giveUpObjects(operations: Int, dropper: BackgroundDropper?, how: GiveUp) -> Measurement {
        let values = UnsafeMutablePointer<TreeNode>.allocate(capacity: operations)
        defer { values.deallocate() }
        for index in 0..<operations { (values + index).initialize(to: TreeNode(height: 1)) }
        let before = dropper?.statistics()
        DeinitTally.reset()
        let start = SystemInfo.monotonicNanoseconds()
        switch how {
        case .inPlace:
            values.deinitialize(count: operations)
        case .drop:
            for index in 0..<operations { dropper!.drop((values + index).move()) }
        case .wrap:
            for index in 0..<operations { _ = DeferredDrop((values + index).move(), dropper: dropper!) }
        case .wrapOnShared:
            for index in 0..<operations { _ = DeferredDrop((values + index).move()) }
        }
        let end = SystemInfo.monotonicNanoseconds()
        if let dropper, let before {
            dropper.flush()
            // Every object went through the queue: none waited, none was dropped inline.
            let after = dropper.statistics()
            precondition(
                after.queued - before.queued == operations && after.droppedInline == 0 && after.pending == 0,
                "the dropper did not take every object: \(after)")
        }
        return Measurement(
            nanoseconds: end - start, operations: operations, checksum: UInt64(DeinitTally.total()))
    }
}

/// Per-thread deinit counters: a plain increment through an application thread-local
/// slot (no atomic, no shared line), summed when the threads are idle.
enum DeinitTally {
    static let slot = ThreadLocalSlot.application(2)
    static let counters = Mutex<[Int]>([])  // the counters' addresses

    @inline(__always)
    static func count() {
        guard let counter = slot.value else { return register() }
        counter.assumingMemoryBound(to: Int.self).pointee += 1
    }

    /// A thread's first deinit: gives it a counter (never freed: a benchmark process).
    @inline(never)
    static func register() {
        let counter = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        counter.initialize(to: 1)
        counters.withLock { $0.append(Int(bitPattern: counter)) }
        slot.value = UnsafeMutableRawPointer(counter)
    }

    /// The sum; call it when no thread deinitialises nodes (after a flush).
    static func total() -> Int { counters.withLock { $0.reduce(0) { $0 + counter(at: $1).pointee } } }

    static func reset() { counters.withLock { for address in $0 { counter(at: address).pointee = 0 } } }

    static func counter(at address: Int) -> UnsafeMutablePointer<Int> { UnsafeMutablePointer(bitPattern: address)! }
}
