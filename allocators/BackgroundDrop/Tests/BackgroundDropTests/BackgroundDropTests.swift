// The API's promises, one by one: every kind of value is deinitialised exactly once and
// on a background thread (spec section 2), flush and shutdown (section 5), ordering
// (section 4), the full-queue policies (section 2), a deinit that blocks (section 5),
// statistics (section 8).

import AllocCore
import AllocTestSupport
import BackgroundDrop
import Glibc
import Synchronization
import Testing

@Suite struct DropTests {
    /// Spec 2: class instances, ~Copyable structs, boxed wide values, arrays,
    /// dictionaries, strings and existentials all go to a background thread, and each
    /// is deinitialised exactly once.
    @Test func everyKindOfValueIsDeinitialisedOnceInTheBackground() throws {
        let tally = DeinitTally(capacity: 64, recordsOrder: true)
        let dropper = try BackgroundDropper(threads: 1, capacity: 64)
        var outcomes: [DropOutcome] = []
        outcomes.append(dropper.drop(TrackedObject(0, tally)))
        outcomes.append(dropper.drop(TrackedToken(1, tally)))
        outcomes.append(dropper.drop(Wide(tracked: TrackedObject(2, tally))))
        outcomes.append(dropper.drop(WideToken(token: TrackedToken(3, tally))))
        outcomes.append(dropper.drop([TrackedObject(4, tally), TrackedObject(5, tally)]))
        outcomes.append(dropper.drop(["a": TrackedObject(6, tally), "b": TrackedObject(7, tally)]))
        outcomes.append(dropper.drop(String(repeating: "long string, heap allocated ", count: 10)))
        // `as any Sendable` keeps the existential whole; without it the compiler opens it
        // and passes a copy of the object inside, and the caller's release of the
        // existential after `drop` raced with the background thread's (OwnershipTests).
        let existential: any Sendable = TrackedObject(8, tally)
        outcomes.append(dropper.drop(consume existential as any Sendable))
        let tree = TrackedObject(9, tally)
        tree.children = (10..<20).map { TrackedObject($0, tally) }
        outcomes.append(dropper.drop(consume tree))
        #expect(outcomes.allSatisfy { $0 == .queued })
        dropper.flush()
        #expect(tally.wrongCounts(0..<20) == "")
        let threads = tally.threads
        #expect(!threads.contains(currentThreadID()), "a value was deinitialised on the caller: \(tally.order)")
        #expect(threads.count == 1, "one background thread, saw \(threads.count)")
        let statistics = dropper.statistics()
        #expect(statistics.queued == 9 && statistics.droppedInBackground == 9 && statistics.pending == 0)
    }

    /// Spec 2: other references keep an object alive; the background only releases one.
    @Test func aSharedObjectSurvivesItsDrop() throws {
        let tally = DeinitTally(capacity: 1)
        let dropper = try BackgroundDropper()
        let object = TrackedObject(0, tally)
        let copy = object
        dropper.drop(consume copy)
        dropper.flush()
        #expect(tally.count(0) == 0, "the object died while a reference remained")
        withExtendedLifetime(object) {}
    }

    /// Spec 2 (batch): every element in a slot of its own; with one thread, array order.
    @Test func batchDropsEveryElementInOrder() throws {
        let tally = DeinitTally(capacity: 1000, recordsOrder: true)
        let dropper = try BackgroundDropper(threads: 1, capacity: 4096)
        let values = (0..<1000).map { TrackedObject($0, tally) }
        let outcome = dropper.drop(contentsOf: consume values)
        #expect(outcome == BatchOutcome(queued: 1000, droppedInline: 0))
        dropper.flush()
        #expect(tally.wrongCounts(0..<1000) == "")
        #expect(tally.order == Array(0..<1000), "one thread must deinitialise in array order")
        #expect(dropper.statistics().queued == 1000)
    }

    /// Spec 2 (batch): a batch larger than the free slots gets the policy for the rest.
    @Test func batchLargerThanTheQueueUsesThePolicy() throws {
        let tally = DeinitTally(capacity: 101)
        let (dropper, gate) = try heldDropper(tally, blockerID: 100, capacity: 16, whenFull: .dropInline)
        let outcome = dropper.drop(contentsOf: (0..<100).map { TrackedObject($0, tally) })
        // The blocker holds one slot: 15 free.
        #expect(outcome == BatchOutcome(queued: 15, droppedInline: 85), "\(outcome)")
        gate.open()
        dropper.flush()
        #expect(tally.wrongCounts(0..<101) == "")
    }

    /// Spec 4: with one thread, values are deinitialised in the order their drops took
    /// positions; per producer, in program order, whatever the interleaving.
    @Test func oneThreadKeepsEachProducersOrder() throws {
        let producers = 4
        let perProducer = 2000
        let tally = DeinitTally(capacity: producers * perProducer, recordsOrder: true)
        let dropper = try BackgroundDropper(threads: 1, capacity: 256)
        try onThreads(producers) { producer in
            for serial in 0..<perProducer { dropper.drop(TrackedObject(producer * perProducer + serial, tally)) }
        }
        dropper.flush()
        let order = tally.order
        #expect(order.count == producers * perProducer)
        for producer in 0..<producers {
            let mine = order.filter { $0 / perProducer == producer }
            #expect(mine == Array(producer * perProducer..<(producer + 1) * perProducer), "producer \(producer)")
        }
    }

    /// Spec 4: with several threads nothing about order is promised, but deinits do run
    /// at the same time: a second value finishes while the first is still inside its deinit.
    @Test func severalThreadsDeinitialiseConcurrently() throws {
        let tally = DeinitTally(capacity: 2)
        let (dropper, gate) = try heldDropper(tally, blockerID: 0, threads: 2, capacity: 16)
        dropper.drop(TrackedObject(1, tally))
        #expect(eventually { tally.count(1) == 1 }, "the second thread did not go on")
        #expect(tally.count(0) == 0)
        gate.open()
        dropper.flush()
        #expect(tally.count(0) == 1)
    }
}

@Suite struct FlushAndShutdownTests {
    /// Spec 5: flush returns only when everything dropped before it is deinitialised.
    @Test func flushWaitsForEverythingBefore() throws {
        let tally = DeinitTally(capacity: 3000)
        let dropper = try BackgroundDropper(threads: 2, capacity: 4096)
        for round in 0..<3 {
            for id in round * 1000..<(round + 1) * 1000 {
                let value = TrackedObject(id, tally)
                value.children = [TrackedObject(0, DeinitTally(capacity: 1))]  // a little work per value
                dropper.drop(value)
            }
            dropper.flush()
            #expect(tally.wrongCounts(0..<(round + 1) * 1000).isEmpty, "round \(round)")
        }
        #expect(dropper.statistics().pending == 0)
    }

    /// Spec 5: flush with a timeout reports a deinit that blocks: its thread and type,
    /// the values pending; the other thread goes on meanwhile.
    ///
    /// The other thread is given the time it needs to drain the 100 values before the
    /// flush starts (it used to have to do it within the flush's 50 ms, which a loaded
    /// machine need not grant), so the report's count is exactly the blocked value.
    @Test func flushTimeoutReportsTheBlockedDeinit() throws {
        let tally = DeinitTally(capacity: 101)
        let (dropper, gate) = try heldDropper(tally, blockerID: 100, threads: 2, capacity: 256)
        for id in 0..<100 { dropper.drop(TrackedObject(id, tally)) }
        #expect(eventually { tally.wrongCounts(0..<100) == "" }, "the other thread did not go on")
        let start = SystemInfo.monotonicNanoseconds()
        var report: FlushTimeout?
        do {
            try dropper.flush(timeout: .milliseconds(50))
        } catch {
            report = error
        }
        let waited = SystemInfo.monotonicNanoseconds() - start
        let timeout = try #require(report, "flush returned while a deinit was blocked")
        #expect(waited >= 50_000_000, "gave up after \(waited) ns")
        #expect(timeout.pending == 1, "\(timeout)")
        #expect(timeout.blockedDrops.count == 1, "\(timeout)")
        #expect(timeout.blockedDrops.first?.typeName.contains("Blocker") == true, "\(timeout)")
        #expect((timeout.blockedDrops.first?.duration ?? .zero) >= .milliseconds(50))
        #expect(tally.count(100) == 0)
        gate.open()
        try dropper.flush(timeout: .seconds(10))
        #expect(tally.count(100) == 1)
    }

    /// Spec 5: the async flush suspends until done; with a timeout it reports.
    @Test func asyncFlush() async throws {
        let tally = DeinitTally(capacity: 500)
        let gate = Gate()
        let dropper = try BackgroundDropper(threads: 1, capacity: 1024)
        for id in 0..<499 { dropper.drop(TrackedObject(id, tally)) }
        await dropper.flush()
        #expect(tally.wrongCounts(0..<499) == "")
        dropper.drop(Blocker(gate, TrackedObject(499, tally)))
        await #expect(throws: FlushTimeout.self) { try await dropper.flush(timeout: .milliseconds(20)) }
        // A cancelled task stops waiting (the blocker is still inside its deinit).
        let waiter = Task { await dropper.flush() }
        waiter.cancel()
        await waiter.value
        #expect(tally.count(499) == 0)
        gate.open()
        try await dropper.flush(timeout: .seconds(10))
        #expect(tally.count(499) == 1)
    }

    /// Spec 5: shutdown drains and joins; afterwards drops run inline, counted; a
    /// second shutdown returns at once.
    @Test func shutdownDrainsJoinsAndLaterDropsRunInline() throws {
        let tally = DeinitTally(capacity: 2001)
        let dropper = try BackgroundDropper(threads: 3, capacity: 4096)
        for id in 0..<2000 { dropper.drop(TrackedObject(id, tally)) }
        dropper.shutdown()
        #expect(tally.wrongCounts(0..<2000) == "", "shutdown returned with values pending")
        #expect(dropper.isShutDown)
        #expect(dropper.drop(TrackedObject(2000, tally)) == .droppedInline(.afterShutdown))
        #expect(tally.count(2000) == 1)
        dropper.shutdown()
        dropper.flush()
        let statistics = dropper.statistics()
        #expect(statistics.droppedAfterShutdown == 1 && statistics.droppedInline == 1 && statistics.pending == 0)
        #expect(
            dropper.drop(contentsOf: [TrackedObject(0, DeinitTally(capacity: 1))])
                == BatchOutcome(queued: 0, droppedInline: 1))
    }

    /// Spec 5: the threads are gone when shutdown returns (counted in a child process,
    /// where no other test starts or ends threads), and when the last reference goes.
    ///
    /// "Gone" is checked with `eventually`: `pthread_join` returns when the kernel clears
    /// the thread's id, which it does before it takes the thread out of /proc/self/task,
    /// so a joined thread can still be listed for a moment.
    @Test func shutdownJoinsTheThreads() async {
        await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let before = processThreadCount()
            let dropper = try BackgroundDropper(threads: 3)
            precondition(
                processThreadCount() == before + 3, "3 threads expected, \(processThreadCount() - before) seen")
            dropper.shutdown()
            precondition(eventually { processThreadCount() == before }, "threads left after shutdown")
            do {
                let other = try BackgroundDropper(threads: 2)
                other.drop([1, 2, 3])
            }
            precondition(eventually { processThreadCount() == before }, "threads left after the last reference went")
        }
    }

    /// Spec 5: the last reference going away shuts down: nothing queued is lost.
    @Test func deinitOfTheLastHandleDrainsTheQueue() throws {
        let tally = DeinitTally(capacity: 5000)
        do {
            let dropper = try BackgroundDropper(threads: 2, capacity: 8192)
            for id in 0..<5000 { dropper.drop(TrackedObject(id, tally)) }
        }
        #expect(tally.wrongCounts(0..<5000) == "")
    }

    /// Spec 5: shutdown racing from several threads: all return after the drain.
    @Test func concurrentShutdowns() throws {
        let tally = DeinitTally(capacity: 1000)
        let dropper = try BackgroundDropper(threads: 2, capacity: 1024)
        for id in 0..<1000 { dropper.drop(TrackedObject(id, tally)) }
        let early = Atomic<Int>(0)
        try onThreads(4) { _ in
            dropper.shutdown()
            if tally.died != 1000 { early.add(1, ordering: .relaxed) }
        }
        #expect(early.load(ordering: .relaxed) == 0, "shutdown returned before the drain")
        #expect(tally.wrongCounts(0..<1000) == "")
    }

    /// Spec 5: the last reference dies inside a deinit on the dropper's own thread: that
    /// thread shuts down without joining itself, drains, and frees the queue.
    @Test func lastHandleDroppedFromItsOwnThread() throws {
        final class Holder: @unchecked Sendable {
            let dropper: BackgroundDropper
            init(_ dropper: BackgroundDropper) { self.dropper = dropper }
        }
        for threads in [1, 2] {
            let tally = DeinitTally(capacity: 500)
            do {
                let dropper = try BackgroundDropper(threads: threads, capacity: 1024)
                let gate = Gate()
                dropper.drop(Blocker(gate, TrackedObject(499, tally)))
                dropper.drop(Holder(dropper))
                for id in 0..<499 { dropper.drop(TrackedObject(id, tally)) }
                gate.open()
            }
            #expect(eventually { tally.died == 500 }, "threads \(threads)")
            #expect(tally.wrongCounts(0..<500) == "")
        }
    }

    /// Spec 5: a deinit on the dropper's own thread that drops more values into it, with
    /// the queue full and a blocking policy, drops them inline instead of waiting for itself.
    @Test func dropsFromADeinitOnTheDropThreadNeverBlock() throws {
        final class OutcomeLog: Sendable {
            let entries = Mutex<[DropOutcome]>([])
        }
        final class Spawner: @unchecked Sendable {
            let dropper: BackgroundDropper
            let tally: DeinitTally
            let log: OutcomeLog
            init(_ dropper: BackgroundDropper, _ tally: DeinitTally, _ log: OutcomeLog) {
                self.dropper = dropper
                self.tally = tally
                self.log = log
            }
            deinit {
                for id in 0..<8 {
                    let outcome = dropper.drop(TrackedObject(id, tally))
                    log.entries.withLock { $0.append(outcome) }
                }
            }
        }
        let tally = DeinitTally(capacity: 8)
        let dropper = try BackgroundDropper(threads: 1, capacity: 2, whenFull: .block(timeout: nil))
        let log = OutcomeLog()
        dropper.drop(Spawner(dropper, tally, log))
        dropper.flush()
        dropper.flush()
        #expect(tally.wrongCounts(0..<8) == "")
        let outcomes = log.entries.withLock { $0 }
        let inline = outcomes.filter { $0 == .droppedInline(.fullOnDropThread) }.count
        #expect(inline >= 6, "capacity 2 minus the spawner's own slot leaves 1 free: \(outcomes)")
    }
}

@Suite struct FullQueuePolicyTests {
    /// Spec 2: `.dropInline` deinitialises on the caller at once when the queue is full.
    @Test func dropInlineWhenFull() throws {
        let tally = DeinitTally(capacity: 10)
        let (dropper, gate) = try heldDropper(tally, blockerID: 9, capacity: 4, whenFull: .dropInline)
        let outcomes = (0..<5).map { dropper.drop(TrackedObject($0, tally)) }
        #expect(outcomes == [.queued, .queued, .queued, .droppedInline(.queueFull), .droppedInline(.queueFull)])
        #expect(tally.count(3) == 1 && tally.count(4) == 1 && tally.count(0) == 0)
        gate.open()
        dropper.flush()
        #expect(tally.wrongCounts(0..<5) == "")
        let statistics = dropper.statistics()
        #expect(statistics.fullQueueEvents == 2 && statistics.droppedInline == 2)
        #expect(statistics.queueHighWaterMark == 4)
    }

    /// Spec 2: `.block(timeout)` waits that long, then deinitialises inline.
    @Test func blockTimesOutThenDropsInline() throws {
        let tally = DeinitTally(capacity: 3)
        let gate = Gate()
        let dropper = try BackgroundDropper(
            threads: 1, capacity: 2, whenFull: .block(timeout: .milliseconds(30)))
        dropper.drop(Blocker(gate, TrackedObject(2, tally)))
        try #require(gate.waitForEntries(1))
        #expect(dropper.drop(TrackedObject(0, tally)) == .queued)
        let start = SystemInfo.monotonicNanoseconds()
        #expect(dropper.drop(TrackedObject(1, tally)) == .droppedInline(.timedOut))
        #expect(SystemInfo.monotonicNanoseconds() - start >= 30_000_000)
        #expect(tally.count(1) == 1)
        gate.open()
        dropper.flush()
        #expect(dropper.statistics().blockTimeouts == 1)
    }

    /// Spec 2 and 9: a zero or negative timeout does not wait: `.block(timeout: .zero)`
    /// deinitialises inline at once, `flush(timeout: .zero)` only looks; and the queue
    /// stays sound (the integrity walker) with a deinit blocked and the ring full.
    @Test(arguments: [Duration.zero, .seconds(-1)])
    func zeroOrNegativeTimeoutsDoNotWait(timeout: Duration) throws {
        let tally = DeinitTally(capacity: 3)
        let (dropper, gate) = try heldDropper(tally, blockerID: 2, capacity: 2, whenFull: .block(timeout: timeout))
        #expect(dropper.drop(TrackedObject(0, tally)) == .queued)
        #expect(dropper.drop(TrackedObject(1, tally)) == .droppedInline(.timedOut))
        #expect(tally.count(1) == 1)
        #expect(dropper.integrityViolation() == nil)
        #expect(throws: FlushTimeout.self) { try dropper.flush(timeout: timeout) }
        gate.open()
        dropper.flush()
        try dropper.flush(timeout: timeout)
        #expect(dropper.integrityViolation() == nil)
    }

    /// Spec 2: `.block(nil)` waits until a slot frees, then queues; the caller slept.
    @Test func blockWaitsForASlot() throws {
        let tally = DeinitTally(capacity: 3)
        let (dropper, gate) = try fullDropper(tally, blockerID: 2, fillerID: 0)
        defer { gate.open() }
        let producer = try BlockedProducer(dropper) { dropper.drop(TrackedObject(1, tally)) }
        #expect(producer.outcome == nil, "the drop did not block on a full queue")
        gate.open()
        #expect(producer.join() == .queued)
        dropper.flush()
        #expect(tally.wrongCounts(0..<3) == "")
    }

    /// Spec 2: shutdown wakes a producer blocked on a full queue; it drops inline.
    ///
    /// The test waits until the producer is blocked (it used to sleep 20 ms and hope, and
    /// then had to accept `.queued` too); the gate keeps the queue full until the shutdown
    /// has closed it, so the outcome is exactly an inline drop after shutdown.
    @Test func shutdownReleasesBlockedProducers() throws {
        let tally = DeinitTally(capacity: 3)
        let (dropper, gate) = try fullDropper(tally, blockerID: 2, fillerID: 0)
        defer { gate.open() }
        let producer = try BlockedProducer(dropper) { dropper.drop(TrackedObject(1, tally)) }
        let closer = try OSThread.spawn { dropper.shutdown() }
        #expect(eventually { dropper.isShutDown })
        // The shutdown waits for the blocked deinit; the producer does not.
        #expect(eventually { producer.outcome != nil }, "shutdown left the producer blocked")
        #expect(producer.outcome == .droppedInline(.afterShutdown))
        #expect(tally.count(1) == 1 && tally.count(0) == 0)
        gate.open()
        _ = producer.join()
        closer.join()
        #expect(tally.wrongCounts(0..<3) == "")
    }

    /// Spec 2, 7: a producer much faster than the dropper: values alive at once stay
    /// within the capacity (plus the one in the producer's hands), under both policies.
    ///
    /// The background thread is held at a gate until the queue has been full once, so
    /// the producer outruns it whatever the machine's load (a loaded machine could slow
    /// the producer down to the slow deinits' pace, and the queue never fill).
    @Test(arguments: [FullQueuePolicy.block(timeout: nil), .dropInline])
    func memoryStaysBounded(policy: FullQueuePolicy) throws {
        final class Slow: @unchecked Sendable {
            let tracked: TrackedObject
            let payload = [UInt8](repeating: 7, count: 16 << 10)
            init(_ tracked: TrackedObject) { self.tracked = tracked }
            deinit { usleep(20) }
        }
        let count = 3000
        let tally = DeinitTally(capacity: count + 1)
        let gate = Gate()
        let dropper = try BackgroundDropper(threads: 1, capacity: 32, whenFull: policy)
        dropper.drop(Blocker(gate, TrackedObject(count, tally)))
        let opener = try OSThread.spawn {
            _ = eventually { dropper.statistics().fullQueueEvents > 0 }
            gate.open()
        }
        for id in 0..<count { dropper.drop(Slow(TrackedObject(id, tally))) }
        opener.join()
        dropper.flush()
        #expect(tally.wrongCounts(0..<count + 1) == "")
        #expect(tally.peakAlive <= 32 + 1, "peak \(tally.peakAlive)")
        #expect(dropper.statistics().fullQueueEvents > 0, "the producer never outran the dropper")
    }
}

@Suite struct StatisticsTests {
    /// Spec 8: every counter counts what it says.
    @Test func countersAddUp() throws {
        let tally = DeinitTally(capacity: 300)
        let dropper = try BackgroundDropper(threads: 2, capacity: 512)
        for id in 0..<200 { dropper.drop(TrackedObject(id, tally)) }
        dropper.drop(contentsOf: (200..<300).map { TrackedObject($0, tally) })
        dropper.flush()
        let statistics = dropper.statistics()
        #expect(statistics.queued == 300)
        #expect(statistics.droppedInBackground == 300)
        #expect(statistics.pending == 0)
        #expect(statistics.droppedInline == 0 && statistics.fullQueueEvents == 0 && statistics.blockTimeouts == 0)
        #expect(statistics.queueHighWaterMark >= 1 && statistics.queueHighWaterMark <= 512)
        #expect(statistics.droppingNanoseconds > 0)
        #expect(statistics.lastDropEndedNanoseconds > 0)
    }

    /// Spec 8: the end of the last background deinit is recorded: not before the
    /// deinit's own last look at the clock, not after the flush that waited for it.
    @Test func lastDropEndedIsWhenTheLastDeinitEnded() throws {
        let dropper = try BackgroundDropper(threads: 2, capacity: 16)
        #expect(dropper.statistics().lastDropEndedNanoseconds == 0)
        let deinitEnd = Stamp()
        dropper.drop(ClockAtDeinit(deinitEnd, sleepMicroseconds: 2000))
        dropper.flush()
        let flushed = SystemInfo.monotonicNanoseconds()
        let ended = dropper.statistics().lastDropEndedNanoseconds
        let inside = deinitEnd.nanoseconds.load(ordering: .acquiring)
        #expect(inside > 0 && ended >= inside, "recorded \(ended), the deinit's clock read \(inside)")
        #expect(ended <= flushed, "recorded \(ended), after the flush returned at \(flushed)")
    }

    /// Spec 2: the shared dropper exists once and works.
    @Test func sharedDropper() {
        let tally = DeinitTally(capacity: 10)
        #expect(BackgroundDropper.shared === BackgroundDropper.shared)
        #expect(BackgroundDropper.shared.threadCount == 1 && BackgroundDropper.shared.capacity == 4096)
        for id in 0..<10 { BackgroundDropper.shared.drop(TrackedObject(id, tally)) }
        BackgroundDropper.shared.flush()
        #expect(tally.wrongCounts(0..<10) == "")
    }

    /// Spec 3: capacity rounds up to a power of two, at least 2; the inline limits.
    @Test func capacityRoundsUp() throws {
        #expect(try BackgroundDropper(capacity: 1).capacity == 2)
        #expect(try BackgroundDropper(capacity: 1000).capacity == 1024)
        #expect(try BackgroundDropper(capacity: 1024).capacity == 1024)
        #expect(BackgroundDropper.inlineByteCount == 48 && BackgroundDropper.inlineAlignment == 16)
    }
}

/// A value whose deinit sleeps, then stores the time it ended into `stamp`.
final class ClockAtDeinit: Sendable {
    let stamp: Stamp
    let sleepMicroseconds: UInt32

    init(_ stamp: Stamp, sleepMicroseconds: UInt32) {
        self.stamp = stamp
        self.sleepMicroseconds = sleepMicroseconds
    }

    deinit {
        usleep(sleepMicroseconds)
        stamp.nanoseconds.store(SystemInfo.monotonicNanoseconds(), ordering: .releasing)
    }
}

/// A monotonic time, set from any thread.
final class Stamp: Sendable {
    let nanoseconds = Atomic<UInt64>(0)
}
