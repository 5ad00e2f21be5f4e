// A gate that holds deinits until the test opens it, and the value whose deinit waits at
// it: how the tests keep a background thread busy for exactly as long as they choose
// (a full queue, a blocked deinit, a flush that must time out), instead of hoping that a
// slow deinit is still running when they look.

import AllocCore
import AllocTestSupport
import BackgroundDrop
import Glibc
import Synchronization
import Testing

/// A deinit that waits until the gate opens (a deinit that blocks).
final class Gate: @unchecked Sendable {
    let word = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
    let entered = Atomic<Int>(0)
    init() { _ = AtomicWord(initializingAt: word, to: 0) }
    deinit { word.deallocate() }

    /// Lets every waiting deinit (and every later one) go on.
    func open() {
        AtomicWord(at: word).store(1, ordering: .releasing)
        Futex.wake(AtomicWord(at: word))
    }

    /// Called by a deinit: counts itself in, then sleeps until the gate opens.
    func waitUntilOpen() {
        entered.add(1, ordering: .releasing)
        while AtomicWord(at: word).load(ordering: .acquiring) == 0 {
            Futex.wait(AtomicWord(at: word), whileEqualTo: 0, timeoutNanoseconds: 10_000_000)
        }
    }

    /// Whether `count` deinits came inside `waitUntilOpen` within `eventually`'s bound: a
    /// background thread takes the value in its own time, so the test waits for it, but a
    /// thread that never does fails the test instead of hanging it.
    func waitForEntries(_ count: Int) -> Bool {
        eventually { entered.load(ordering: .acquiring) >= count }
    }
}

/// A class whose deinit blocks until its gate opens; its tracked object dies after that.
final class Blocker: @unchecked Sendable {
    let gate: Gate
    let tracked: TrackedObject
    init(_ gate: Gate, _ tracked: TrackedObject) {
        self.gate = gate
        self.tracked = tracked
    }
    deinit { gate.waitUntilOpen() }
}

/// A dropper whose (first) background thread is held at the returned gate by a blocker
/// (`blockerID`), which takes one of its `capacity` slots until the gate opens. Open the
/// gate before the dropper's last reference goes, or its shutdown waits for the blocker
/// for ever; a failure here opens it itself.
func heldDropper(
    _ tally: DeinitTally, blockerID: Int, threads: Int = 1, capacity: Int,
    whenFull policy: FullQueuePolicy = .block(timeout: nil)
) throws -> (BackgroundDropper, Gate) {
    let gate = Gate()
    let dropper = try BackgroundDropper(threads: threads, capacity: capacity, whenFull: policy)
    dropper.drop(Blocker(gate, TrackedObject(blockerID, tally)))
    guard gate.waitForEntries(1) else {
        gate.open()
        Issue.record("the background thread never took the blocker")
        throw MissingValue()
    }
    return (dropper, gate)
}

/// A held dropper of one thread and two slots that is full: the blocker in one slot,
/// `fillerID` in the other. The next drop waits (policy `.block`) until the gate opens.
func fullDropper(_ tally: DeinitTally, blockerID: Int, fillerID: Int) throws -> (BackgroundDropper, Gate) {
    let (dropper, gate) = try heldDropper(tally, blockerID: blockerID, capacity: 2)
    let filler = dropper.drop(TrackedObject(fillerID, tally))
    #expect(filler == .queued)
    return (dropper, gate)
}

/// A thread that makes one drop into a full dropper and is, once the initializer returns,
/// inside it waiting for a slot (the queue counted its full-queue event: the gate holds
/// the only background thread, so no slot can free before the test opens it).
final class BlockedProducer<Outcome: Sendable>: Sendable {
    /// Where the producer leaves what its drop returned.
    final class Result: Sendable {
        let value = Mutex<Outcome?>(nil)
    }

    let thread: OSThread
    let result: Result

    init(_ dropper: BackgroundDropper, _ drop: @escaping @Sendable () -> Outcome) throws {
        let result = Result()
        self.result = result
        thread = try OSThread.spawn {
            let outcome = drop()
            result.value.withLock { $0 = outcome }
        }
        try #require(
            eventually { dropper.statistics().fullQueueEvents == 1 }, "the producer never found the queue full")
    }

    /// What the drop returned, or nil while it waits.
    var outcome: Outcome? { result.value.withLock { $0 } }

    /// Waits for the thread; returns what the drop returned.
    func join() -> Outcome? {
        thread.join()
        return outcome
    }
}
