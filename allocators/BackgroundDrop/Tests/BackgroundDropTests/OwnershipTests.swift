// Spec section 2, Ownership: a value handed over as the spec says (a temporary, `consume
// variable`, an existential as `consume variable as any P`, a batch with `consume`) leaves
// no reference with the caller, so the release the dropper makes is the last one and the
// deinit runs on its thread. A reference left with the caller is released when `drop`
// returns, racing with the background thread: whichever releases last runs the deinit.
// That race cannot be steered from outside the library (nothing of the caller's runs
// between the hand-off and the release), so these tests look at its cause instead, at a
// moment the test controls: while the drop waits for a slot of a full queue (the only
// background thread held at a gate), the object's strong count must be what it was
// before the drop, when only the caller's variable or array held it. One reference more
// is the reference that a quicker background thread would leave to the caller's release.

import AllocCore
import AllocTestSupport
import BackgroundDrop
import Glibc
import Synchronization
import Testing

/// The strong count of the object behind `handle`, read without keeping a reference:
/// both readings a test compares go through this one function, so whatever the call
/// itself adds is the same in both.
@inline(never)
func strongCount(_ handle: Unmanaged<TrackedObject>) -> UInt {
    _getRetainCount(handle.takeUnretainedValue())
}

/// A handle on the object inside `existential`, retained only while this call lasts.
@inline(never)
func handle(of existential: borrowing any Sendable) -> Unmanaged<TrackedObject> {
    Unmanaged.passUnretained((copy existential) as! TrackedObject)
}

/// A dropper of one thread and two slots whose thread is held at `gate` by a blocker in
/// one slot and whose other slot is taken: the next drop waits (policy `.block`).
func fullDropper(_ gate: Gate, _ tally: DeinitTally, blockerID: Int, fillerID: Int) throws -> BackgroundDropper {
    let dropper = try BackgroundDropper(threads: 1, capacity: 2, whenFull: .block(timeout: nil))
    dropper.drop(Blocker(gate, TrackedObject(blockerID, tally)))
    guard gate.waitForEntries(1) else {
        // Open the gate, or the dropper's shutdown would wait for the blocker for ever.
        gate.open()
        Issue.record("the background thread never took the blocker")
        throw MissingValue()
    }
    #expect(dropper.drop(TrackedObject(fillerID, tally)) == .queued)
    return dropper
}

@Suite struct OwnershipTests {
    /// The flake this replaces: `drop(consume existential)` let the compiler open the
    /// existential (SE-0352) and pass a *copy* of the object inside, the caller releasing
    /// its existential after `drop` returned; `everyKindOfValueIsDeinitialisedOnceInTheBackground`
    /// saw that object die on the caller when the background thread was quicker (about
    /// 3 drops in 100 with a thread already awake). Written `as any Sendable`, the
    /// existential itself travels (32 bytes, in the slot) and the caller keeps nothing.
    @Test func anExistentialDroppedAsAnyPLeavesNoReferenceWithTheCaller() throws {
        let tally = DeinitTally(capacity: 3, recordsOrder: true)
        let gate = Gate()
        let dropper = try fullDropper(gate, tally, blockerID: 1, fillerID: 2)
        let readings = Mutex<(handle: Unmanaged<TrackedObject>?, before: UInt, caller: Int)>((nil, 0, 0))
        let outcome = Mutex<DropOutcome?>(nil)
        let producer = try OSThread.spawn {
            let existential: any Sendable = TrackedObject(0, tally)
            let object = handle(of: existential)
            let before = strongCount(object)
            readings.withLock { $0 = (object, before, currentThreadID()) }
            let result = dropper.drop(consume existential as any Sendable)
            outcome.withLock { $0 = result }
        }
        // The producer is inside `drop` once the queue counted its full-queue event.
        let waiting = eventually { dropper.statistics().fullQueueEvents == 1 }
        let (object, before, caller) = readings.withLock { $0 }
        if waiting, let object {
            #expect(strongCount(object) == before, "the caller keeps a reference to the dropped object")
        } else {
            Issue.record("the producer never waited for a slot")
        }
        gate.open()
        producer.join()
        dropper.flush()
        #expect(outcome.withLock { $0 } == .queued)
        #expect(tally.wrongCounts(0..<3) == "")
        #expect(!tally.threads.contains(caller), "the dropped object died on the caller")
    }

    /// `drop(contentsOf:)`: an element that finds the queue full goes through the policy
    /// alone; it was passed on as a copy of the popped element, whose original the batch
    /// released after the hand-off, racing with the background thread as above.
    @Test func aBatchElementThatWaitsForASlotLeavesNoReferenceWithTheCaller() throws {
        let tally = DeinitTally(capacity: 4, recordsOrder: true)
        let gate = Gate()
        let dropper = try fullDropper(gate, tally, blockerID: 2, fillerID: 3)
        let readings = Mutex<(handle: Unmanaged<TrackedObject>?, before: UInt, caller: Int)>((nil, 0, 0))
        let outcome = Mutex<BatchOutcome?>(nil)
        let producer = try OSThread.spawn {
            // Only the array holds them. The first element finds no free slot and waits.
            let elements = [TrackedObject(0, tally), TrackedObject(1, tally)]
            let first = Unmanaged.passUnretained(elements[0])
            let before = strongCount(first)
            readings.withLock { $0 = (first, before, currentThreadID()) }
            let result = dropper.drop(contentsOf: consume elements)
            outcome.withLock { $0 = result }
        }
        let waiting = eventually { dropper.statistics().fullQueueEvents == 1 }
        let (first, before, caller) = readings.withLock { $0 }
        if waiting, let first {
            #expect(strongCount(first) == before, "the batch keeps a reference to the waiting element")
        } else {
            Issue.record("the batch never waited for a slot")
        }
        gate.open()
        producer.join()
        dropper.flush()
        #expect(outcome.withLock { $0 } == BatchOutcome(queued: 2, droppedInline: 0))
        #expect(tally.wrongCounts(0..<4) == "")
        #expect(!tally.threads.contains(caller), "an element died on the caller")
    }
}
