// Spec section 2, Ownership: a value handed over as the spec says (a temporary, `consume
// variable`, an existential as `consume variable as any P`, a batch with `consume`, a
// DeferredDrop that dies) leaves no reference with the caller, so the release the
// dropper makes is the last one and the deinit runs on its thread. A reference left with the caller is released when `drop`
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

/// Runs `produce` on a producer thread against a dropper that is full (its one thread held
/// at a gate by a blocker, its other slot taken), so the drop `produce` makes waits for a
/// slot. `produce` reports the object that will wait, just before it drops; while the
/// producer waits inside `drop`, that object's strong count must be what it was when the
/// producer reported it. Then the gate opens and everything is flushed. Returns what the
/// drop returned and the producer's thread.
func whileTheDropWaits<Outcome: Sendable>(
    _ tally: DeinitTally, blockerID: Int, fillerID: Int,
    _ produce: @escaping @Sendable (BackgroundDropper, _ report: (Unmanaged<TrackedObject>) -> Void) -> Outcome
) throws -> (outcome: Outcome?, producer: Int) {
    let (dropper, gate) = try fullDropper(tally, blockerID: blockerID, fillerID: fillerID)
    defer { gate.open() }
    let readings = Mutex<(handle: Unmanaged<TrackedObject>?, before: UInt, producer: Int)>((nil, 0, 0))
    let producer = try BlockedProducer(dropper) {
        produce(dropper) { object in readings.withLock { $0 = (object, strongCount(object), currentThreadID()) } }
    }
    let (object, before, producerThread) = readings.withLock { $0 }
    if let object {
        #expect(strongCount(object) == before, "the caller keeps a reference to the object that waits")
    } else {
        Issue.record("the producer did not report the object that waits")
    }
    gate.open()
    let outcome = producer.join()
    dropper.flush()
    return (outcome, producerThread)
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
        let (outcome, producer) = try whileTheDropWaits(tally, blockerID: 1, fillerID: 2) { dropper, report in
            let existential: any Sendable = TrackedObject(0, tally)
            report(handle(of: existential))
            return dropper.drop(consume existential as any Sendable)
        }
        #expect(outcome == .queued)
        #expect(tally.wrongCounts(0..<3) == "")
        #expect(!tally.threads.contains(producer), "the dropped object died on the caller")
    }

    /// `drop(contentsOf:)`: an element that finds the queue full goes through the policy
    /// alone; it was passed on as a copy of the popped element, whose original the batch
    /// released after the hand-off, racing with the background thread as above.
    @Test func aBatchElementThatWaitsForASlotLeavesNoReferenceWithTheCaller() throws {
        let tally = DeinitTally(capacity: 4, recordsOrder: true)
        let (outcome, producer) = try whileTheDropWaits(tally, blockerID: 2, fillerID: 3) { dropper, report in
            // Only the array holds them. The first element finds no free slot and waits.
            let elements = [TrackedObject(0, tally), TrackedObject(1, tally)]
            report(Unmanaged.passUnretained(elements[0]))
            return dropper.drop(contentsOf: consume elements)
        }
        #expect(outcome == BatchOutcome(queued: 2, droppedInline: 0))
        #expect(tally.wrongCounts(0..<4) == "")
        #expect(!tally.threads.contains(producer), "an element died on the caller")
    }

    /// A `DeferredDrop`'s deinit moves its value to the dropper: while the deinit waits
    /// for a slot, only the wrapper's reference exists, none left for the caller's
    /// release (spec 2, DeferredDrop).
    @Test func aDeferredDropHandsItsValueOverWithoutACopy() throws {
        let tally = DeinitTally(capacity: 3, recordsOrder: true)
        let (outcome, producer) = try whileTheDropWaits(tally, blockerID: 1, fillerID: 2) { dropper, report in
            let object = TrackedObject(0, tally)
            report(Unmanaged.passUnretained(object))
            let deferred = DeferredDrop(consume object, dropper: dropper)
            _ = consume deferred
            return true
        }
        #expect(outcome == true)
        #expect(tally.wrongCounts(0..<3) == "")
        #expect(!tally.threads.contains(producer), "the wrapped object died on the caller")
    }

    /// An existential wraps as itself (`DeferredDrop<any Sendable>`: a type's generic
    /// parameter is not opened, unlike `drop`'s, spec 2), so `consume existential` is
    /// enough: the caller keeps no reference. In a release build this failed (a third
    /// reference while the deinit waited) until the value travelled in a `~Copyable`
    /// envelope: the optimizer opened the existential at the call to `handOff`, passed a
    /// copy and released the original after the call.
    @Test func aDeferredDropOfAnExistentialLeavesNoReferenceWithTheCaller() throws {
        let tally = DeinitTally(capacity: 3, recordsOrder: true)
        let (outcome, producer) = try whileTheDropWaits(tally, blockerID: 1, fillerID: 2) { dropper, report in
            let existential: any Sendable = TrackedObject(0, tally)
            report(handle(of: existential))
            let deferred = DeferredDrop(consume existential, dropper: dropper)
            let isExistential = type(of: deferred).self == DeferredDrop<any Sendable>.self
            _ = consume deferred
            return isExistential
        }
        #expect(outcome == true, "the existential was opened")
        #expect(tally.wrongCounts(0..<3) == "")
        #expect(!tally.threads.contains(producer), "the wrapped object died on the caller")
    }
}
