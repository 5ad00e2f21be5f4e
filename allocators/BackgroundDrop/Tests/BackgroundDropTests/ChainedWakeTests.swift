// The chained wake (spec section 5): a drop wakes a parked background thread only when
// none searches for work, and a thread that takes a value wakes the next one when more
// values wait. These tests check what the rule must not break: a backlog still gets
// every thread, and a thread stuck in a deinit does not keep the parked ones asleep.
// That no wake-up is lost under contention is StressTests' job (thread sanitizer).

import AllocCore
import AllocTestSupport
import BackgroundDrop
import Glibc
import Synchronization
import Testing

@Suite struct ChainedWakeTests {
    /// Long enough for idle threads to park: they look at the empty queue for a few
    /// microseconds (256 PAUSEs) before they sleep. No outcome depends on it (a thread
    /// still searching when the drop comes takes the value just the same, and every wait
    /// for a result is an `eventually`): it only makes the parked case the usual one.
    static let parkingPause: UInt32 = 20_000

    /// Spec 5: a burst dropped while every thread is parked reaches every thread. Each
    /// value's deinit waits until all of them are inside theirs, so the test passes only
    /// if `threads` deinits run at once: the producer woke one thread, and the chain
    /// (or the producer, once nobody searched) woke the others.
    @Test(arguments: [2, 3])
    func aBurstIntoParkedThreadsReachesEveryThread(threads: Int) throws {
        let tally = DeinitTally(capacity: threads)
        let gate = Gate()
        let dropper = try BackgroundDropper(threads: threads, capacity: 64)
        usleep(Self.parkingPause)
        for id in 0..<threads { dropper.drop(Blocker(gate, TrackedObject(id, tally))) }
        let allInside = eventually { gate.entered.load(ordering: .acquiring) == threads }
        #expect(allInside, "only \(gate.entered.load(ordering: .acquiring)) of \(threads) threads woke up")
        gate.open()
        dropper.flush()
        #expect(tally.wrongCounts(0..<threads) == "")
    }

    /// Spec 5: a thread inside a deinit that blocks does not search for work, so a drop
    /// wakes a parked thread even though the blocked one is awake: the other threads go
    /// on, round after round, each round after they parked again.
    @Test(arguments: [2, 3])
    func aBlockedDeinitDoesNotKeepParkedThreadsAsleep(threads: Int) throws {
        let rounds = 5
        let tally = DeinitTally(capacity: rounds + 1)
        let gate = Gate()
        let dropper = try BackgroundDropper(threads: threads, capacity: 64)
        dropper.drop(Blocker(gate, TrackedObject(rounds, tally)))
        try #require(gate.waitForEntries(1))
        for round in 0..<rounds {
            usleep(Self.parkingPause)
            dropper.drop(TrackedObject(round, tally))
            #expect(eventually { tally.count(round) == 1 }, "round \(round): no thread woke for the drop")
        }
        #expect(tally.count(rounds) == 0)
        gate.open()
        try dropper.flush(timeout: .seconds(10))
        #expect(tally.wrongCounts(0..<rounds + 1) == "")
    }

    /// Spec 5: a batch into parked threads wakes them too (one wake by the producer,
    /// the rest by the chain), and every element is deinitialised once.
    @Test func aBatchIntoParkedThreadsReachesEveryThread() throws {
        let threads = 3
        let tally = DeinitTally(capacity: threads)
        let gate = Gate()
        let dropper = try BackgroundDropper(threads: threads, capacity: 64)
        usleep(Self.parkingPause)
        dropper.drop(contentsOf: (0..<threads).map { Blocker(gate, TrackedObject($0, tally)) })
        let allInside = eventually { gate.entered.load(ordering: .acquiring) == threads }
        #expect(allInside, "only \(gate.entered.load(ordering: .acquiring)) of \(threads) threads woke up")
        gate.open()
        dropper.flush()
        #expect(tally.wrongCounts(0..<threads) == "")
    }
}
