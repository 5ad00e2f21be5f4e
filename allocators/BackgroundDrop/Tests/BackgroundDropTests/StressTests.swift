// Multi-threaded stress (spec sections 4, 5): more producer threads than cores drop
// into small queues under both full-queue policies, with flushes and shutdowns racing
// them, and in bursts into parked threads (the chained wake); every value must be
// deinitialised exactly once; and DeferredDrop wrappers that die on many threads, some
// after crossing from one to another. The thread-sanitizer run selects
// these suites with `--filter Stress`.

import AllocCore
import AllocTestSupport
import BackgroundDrop
import Glibc
import Synchronization
import Testing

@Suite struct StressTests {
    static let producers = max(8, 2 * SystemInfo.cpuCount)

    /// Producers outnumber cores; a flusher flushes meanwhile; 3 background threads,
    /// 16 slots, so the queue is full most of the time.
    ///
    /// The first producer waits halfway until the flusher finishes one more flush, so at
    /// least one flush really ran while values were still coming (the test used to count
    /// the flushes, and a flusher that a loaded machine did not schedule before every
    /// producer had finished counted none).
    @Test(arguments: [FullQueuePolicy.block(timeout: nil), .dropInline, .block(timeout: .microseconds(20))])
    func manyProducersEveryValueOnce(policy: FullQueuePolicy) throws {
        let seed = testSeed("manyProducersEveryValueOnce(policy: \(policy))")
        let perProducer = 3000
        let producers = Self.producers
        let tally = DeinitTally(capacity: producers * perProducer)
        let dropper = try BackgroundDropper(threads: 3, capacity: 16, whenFull: policy)
        let done = Atomic<Int>(0)
        let flushes = Atomic<Int>(0)
        let flusher = try OSThread.spawn {
            while done.load(ordering: .acquiring) == 0 {
                dropper.flush()
                flushes.add(1, ordering: .relaxed)
                usleep(200)
            }
        }
        let flushedMidway = Atomic<Bool>(false)
        try onThreads(producers) { producer in
            var generator = SplitMix64(seed: seed &+ UInt64(producer))
            var serial = 0
            var waited = false
            while serial < perProducer {
                if producer == 0 && !waited && serial >= perProducer / 2 {
                    // A flush that ends after this point overlapped this producer's drops.
                    waited = true
                    let before = flushes.load(ordering: .relaxed)
                    flushedMidway.store(eventually { flushes.load(ordering: .relaxed) > before }, ordering: .relaxed)
                }
                let id = producer * perProducer + serial
                switch generator.next() % 4 {
                case 0:
                    let count = min(perProducer - serial, Int(generator.next() % 16) + 1)
                    dropper.drop(contentsOf: (id..<id + count).map { TrackedObject($0, tally) })
                    serial += count
                case 1:
                    dropper.drop(TrackedToken(id, tally))
                    serial += 1
                default:
                    dropper.drop(TrackedObject(id, tally))
                    serial += 1
                }
            }
        }
        done.store(1, ordering: .releasing)
        flusher.join()
        dropper.flush()
        let overlapped = flushedMidway.load(ordering: .relaxed)
        #expect(overlapped, "seed \(seed): no flush finished while producers ran")
        #expect(tally.wrongCounts(0..<producers * perProducer) == "", "seed \(seed)")
        let statistics = dropper.statistics()
        #expect(statistics.queued + statistics.droppedInline == producers * perProducer, "seed \(seed)")
        #expect(statistics.pending == 0, "seed \(seed)")
    }

    /// The chained wake loses no wake-up (spec 5): producers outnumber cores and drop in
    /// bursts separated by pauses long enough for the threads to park, so the edge from
    /// idle to busy is crossed again and again by several producers at once; each
    /// producer then flushes with a timeout, which a value left in the queue with every
    /// thread asleep would make throw. Every value is deinitialised exactly once.
    @Test(arguments: [1, 2, 4])
    func burstsIntoParkedThreadsLoseNoWakeUp(threads: Int) throws {
        let bursts = 40
        let perBurst = 24
        let producers = Self.producers
        let perProducer = bursts * perBurst
        let tally = DeinitTally(capacity: producers * perProducer)
        let dropper = try BackgroundDropper(threads: threads, capacity: 1024)
        let timeouts = Mutex<[String]>([])
        let seed = testSeed("burstsIntoParkedThreadsLoseNoWakeUp(threads: \(threads))")
        try onThreads(producers) { producer in
            var generator = SplitMix64(seed: seed &+ UInt64(producer))
            for burst in 0..<bursts {
                let first = producer * perProducer + burst * perBurst
                if generator.next() % 2 == 0 {
                    dropper.drop(contentsOf: (first..<first + perBurst).map { TrackedObject($0, tally) })
                } else {
                    for id in first..<first + perBurst { dropper.drop(TrackedObject(id, tally)) }
                }
                usleep(UInt32(generator.next() % 300))
                do {
                    try dropper.flush(timeout: .seconds(20))
                } catch {
                    timeouts.withLock { $0.append("producer \(producer), burst \(burst): \(error)") }
                }
            }
        }
        #expect(timeouts.withLock { $0 }.isEmpty, "seed \(seed): \(timeouts.withLock { $0.prefix(3) })")
        #expect(tally.wrongCounts(0..<producers * perProducer) == "", "seed \(seed)")
        #expect(dropper.statistics().pending == 0, "seed \(seed)")
    }

    /// One producer, nothing else going on: each lone drop must be taken, or the flush
    /// after it times out (spec 5). The pause before each drop is drawn from 0 to 16 µs,
    /// around the few microseconds a thread looks at the empty queue before it parks, so
    /// that many drops land just as a thread is parking: the race that the look after
    /// announcing closes (without it, a thread parks with the value unseen).
    @Test(arguments: [1, 2, 4])
    func loneDropsAsThreadsParkAreTaken(threads: Int) throws {
        let rounds = 3000
        let tally = DeinitTally(capacity: rounds)
        let dropper = try BackgroundDropper(threads: threads, capacity: 16)
        let seed = testSeed("loneDropsAsThreadsParkAreTaken(threads: \(threads))")
        var generator = SplitMix64(seed: seed)
        for round in 0..<rounds {
            let resume = SystemInfo.monotonicNanoseconds() + generator.next() % 16_000
            while SystemInfo.monotonicNanoseconds() < resume { spinLoopHint() }
            dropper.drop(TrackedObject(round, tally))
            try dropper.flush(timeout: .seconds(20))
            #expect(tally.count(round) == 1, "seed \(seed), round \(round)")
        }
    }

    /// DeferredDrop across threads (spec 2, DeferredDrop): producers outnumber cores and
    /// wrap every value; each wrapper dies on its producer's thread, is taken back (the
    /// value then dies there, never through the dropper), or is swapped through a mailbox
    /// for a neighbour's wrapper, which then dies on this thread. A small queue, so the
    /// policies apply. Every value is deinitialised exactly once, and every wrapper not
    /// taken went through the dropper once.
    @Test(arguments: [FullQueuePolicy.block(timeout: nil), .dropInline])
    func deferredDropsDieOnManyThreads(policy: FullQueuePolicy) throws {
        let dropper = try BackgroundDropper(threads: 2, capacity: 16, whenFull: policy)
        let seed = testSeed("deferredDropsDieOnManyThreads(policy: \(policy))")
        let (values, taken) = try wrapOnManyThreads(seed: seed, dropper: dropper)
        dropper.flush()
        let statistics = dropper.statistics()
        #expect(statistics.queued + statistics.droppedInline == values - taken, "seed \(seed): \(statistics)")
        #expect(statistics.pending == 0, "seed \(seed)")
    }

    /// The same on the shared dropper, which wrappers reach without a reference (spec 7):
    /// every value is deinitialised exactly once. (Its statistics also count what other
    /// tests drop at the same time, so they are not compared.)
    @Test func deferredDropsOnTheSharedDropperDieOnManyThreads() throws {
        let seed = testSeed("deferredDropsOnTheSharedDropperDieOnManyThreads")
        _ = try wrapOnManyThreads(seed: seed, dropper: nil)
    }

    /// The body of the two tests above: wrappers on `dropper` (nil: the shared one, by
    /// the default initializer), checked once the dropper is flushed. Returns how many
    /// values there were and how many were taken back.
    func wrapOnManyThreads(seed: UInt64, dropper: BackgroundDropper?) throws -> (values: Int, taken: Int) {
        let perProducer = 3000
        let producers = Self.producers
        let tally = DeinitTally(capacity: producers * perProducer)
        let mailboxes = (0..<producers).map { _ in Mailbox() }
        let taken = Atomic<Int>(0)
        try onThreads(producers) { producer in
            var generator = SplitMix64(seed: seed &+ UInt64(producer))
            for serial in 0..<perProducer {
                let object = TrackedObject(producer * perProducer + serial, tally)
                let deferred =
                    if let dropper {
                        DeferredDrop(consume object, dropper: dropper)
                    } else {
                        DeferredDrop(consume object)
                    }
                switch generator.next() % 8 {
                case 0:
                    let value = deferred.take()
                    taken.add(1, ordering: .relaxed)
                    _ = consume value
                case 1, 2, 3:
                    let received = mailboxes[(producer + 1) % producers].exchange(deferred)
                    _ = consume received
                default:
                    _ = consume deferred
                }
            }
        }
        for mailbox in mailboxes { _ = mailbox.exchange(nil) }
        (dropper ?? .shared).flush()
        #expect(tally.wrongCounts(0..<producers * perProducer) == "", "seed \(seed)")
        return (producers * perProducer, taken.load(ordering: .relaxed))
    }

    /// Producers keep dropping while another thread shuts the dropper down: each value
    /// is deinitialised exactly once, in the background or inline after the shutdown.
    @Test func shutdownRacingWithProducers() throws {
        for round in 0..<4 {
            let perProducer = 2000
            let producers = Self.producers
            let tally = DeinitTally(capacity: producers * perProducer)
            let dropper = try BackgroundDropper(threads: 2, capacity: 8, whenFull: .block(timeout: nil))
            let closer = try OSThread.spawn {
                usleep(UInt32(1000 * (round + 1)))
                dropper.shutdown()
            }
            try onThreads(producers) { producer in
                for serial in 0..<perProducer { dropper.drop(TrackedObject(producer * perProducer + serial, tally)) }
            }
            closer.join()
            #expect(tally.wrongCounts(0..<producers * perProducer) == "", "round \(round)")
            #expect(dropper.isShutDown)
        }
    }
}

/// One wrapper waiting to be picked up by another thread (StressTests). AllocCore's
/// `SpinLock`, inlined here, so the thread sanitizer sees what orders the hand-over.
final class Mailbox: @unchecked Sendable {
    let lock = SpinLock()
    var letter: DeferredDrop<TrackedObject>?

    /// Leaves `letter` and returns the one that was waiting, if any, which then dies
    /// wherever the caller lets it (outside the lock: its deinit may wait for a slot).
    func exchange(_ letter: consuming DeferredDrop<TrackedObject>?) -> DeferredDrop<TrackedObject>? {
        lock.lock()
        defer { lock.unlock() }
        let waiting = self.letter.take()
        self.letter = letter
        return waiting
    }
}
