// DeferredDrop (spec section 2, DeferredDrop): a wrapper whose deinit hands its value to
// a dropper. The value goes to the dropper's thread when the wrapper dies, whatever kind
// of value it is; `take()` cancels that and gives the value back intact; the value can
// be read and changed while it lives (`value` for Sendable values, `withValue` for any);
// a wrapper whose dropper has shut down drops inline (spec 9). That nothing is copied
// on the way is OwnershipTests' job, many threads StressTests'.
//
// Each wrapper is ended with `_ = consume deferred`, so the test knows where its deinit
// runs.

import AllocCore
import AllocTestSupport
import BackgroundDrop
import Glibc
import Testing

/// A tree of plain classes: not `Sendable`, so only `withValue` reaches into it.
final class PlainTree {
    let tracked: TrackedObject
    var children: [PlainTree] = []
    init(_ tracked: TrackedObject) { self.tracked = tracked }
}

struct AbandonedChange: Error {}

@Suite struct DeferredDropTests {
    /// Spec 2: when the wrapper dies its value is queued, and deinitialised on the
    /// dropper's thread, once: a class, a `~Copyable` struct, a boxed wide value, a
    /// non-`Sendable` tree, an existential; nothing before the wrapper dies.
    @Test func theValueIsDeinitialisedOnTheDroppersThreadWhenTheWrapperDies() throws {
        let tally = DeinitTally(capacity: 16, recordsOrder: true)
        let dropper = try BackgroundDropper(threads: 1, capacity: 64)
        let object = DeferredDrop(TrackedObject(0, tally), dropper: dropper)
        let token = DeferredDrop(TrackedToken(1, tally), dropper: dropper)
        let wide = DeferredDrop(WideToken(token: TrackedToken(2, tally)), dropper: dropper)
        let tree = PlainTree(TrackedObject(3, tally))
        tree.children = (4..<8).map { PlainTree(TrackedObject($0, tally)) }
        let plain = DeferredDrop(consume tree, dropper: dropper)
        let existential: any Sendable = TrackedObject(8, tally)
        let opaque = DeferredDrop(consume existential, dropper: dropper)
        #expect(object.dropper === dropper)
        dropper.flush()
        #expect(tally.died == 0, "a value died while its wrapper lived")
        #expect(dropper.statistics().queued == 0)
        _ = consume object
        _ = consume token
        _ = consume wide
        _ = consume plain
        _ = consume opaque
        dropper.flush()
        #expect(tally.wrongCounts(0..<9) == "")
        #expect(!tally.threads.contains(currentThreadID()), "a value was deinitialised on the caller: \(tally.order)")
        #expect(tally.threads.count == 1)
        #expect(dropper.statistics().queued == 5)
    }

    /// Spec 2: the default dropper is the shared one.
    @Test func theDefaultDropperIsTheSharedOne() {
        let tally = DeinitTally(capacity: 1, recordsOrder: true)
        let deferred = DeferredDrop(TrackedObject(0, tally))
        #expect(deferred.dropper === BackgroundDropper.shared)
        _ = consume deferred
        BackgroundDropper.shared.flush()
        #expect(tally.count(0) == 1)
        #expect(!tally.threads.contains(currentThreadID()), "the value was deinitialised on the caller")
    }

    /// Spec 2 and 7: a wrapper on the shared dropper keeps no reference to it (it is never
    /// released, so none is needed: that is the retain and release a chosen dropper costs),
    /// while one on a chosen dropper keeps one. Counted in a child process, where no other
    /// test holds either dropper for a moment.
    @Test func aWrapperOnTheSharedDropperKeepsNoReference() async {
        await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            let tally = DeinitTally(capacity: 2, recordsOrder: true)
            let chosen = try BackgroundDropper(threads: 1, capacity: 16)
            let sharedBefore = _getRetainCount(BackgroundDropper.shared)
            let chosenBefore = _getRetainCount(chosen)
            let onShared = DeferredDrop(TrackedObject(0, tally))
            let onChosen = DeferredDrop(TrackedObject(1, tally), dropper: chosen)
            let sharedDuring = _getRetainCount(BackgroundDropper.shared)
            let chosenDuring = _getRetainCount(chosen)
            precondition(
                sharedDuring == sharedBefore,
                "shared: \(sharedBefore) before, \(sharedDuring) with a wrapper")
            precondition(
                chosenDuring == chosenBefore + 1,
                "chosen: \(chosenBefore) before, \(chosenDuring) with a wrapper")
            _ = consume onShared
            _ = consume onChosen
            BackgroundDropper.shared.flush()
            chosen.flush()
            precondition(tally.count(0) == 1 && tally.count(1) == 1, "a wrapped value was not dropped")
            precondition(
                !tally.threads.contains(currentThreadID()), "a value was deinitialised on the caller")
        }
    }

    /// Spec 2: `take()` cancels the deferral: the same object comes back, nothing is
    /// queued, and the value lives until the caller lets it go (on the caller's thread).
    @Test func takeCancelsTheDeferralAndReturnsTheValueIntact() throws {
        let tally = DeinitTally(capacity: 2, recordsOrder: true)
        let dropper = try BackgroundDropper(threads: 1, capacity: 16)
        let object = TrackedObject(0, tally)
        let identity = ObjectIdentifier(object)
        object.children = [TrackedObject(1, tally)]
        let deferred = DeferredDrop(consume object, dropper: dropper)
        let back = deferred.take()
        dropper.flush()
        #expect(tally.died == 0, "a taken value was deinitialised")
        #expect(dropper.statistics().queued == 0 && dropper.statistics().droppedInline == 0)
        #expect(ObjectIdentifier(back) == identity && back.id == 0 && back.children.map(\.id) == [1])
        _ = consume back
        #expect(tally.wrongCounts(0..<2) == "")
        #expect(tally.threads == [currentThreadID()], "a taken value dies where the caller lets it")
    }

    /// Spec 2: `take()` of a `~Copyable` value, changed while it lived.
    @Test func takeReturnsANoncopyableValueAsItWasLeft() throws {
        let tally = DeinitTally(capacity: 8)
        let dropper = try BackgroundDropper(threads: 1, capacity: 16)
        var deferred = DeferredDrop(TrackedToken(0, tally), dropper: dropper)
        deferred.value.id = 7
        let token = deferred.take()
        #expect(token.id == 7)
        dropper.flush()
        #expect(tally.died == 0)
        _ = consume token
        #expect(tally.count(7) == 1)
        #expect(dropper.statistics().queued == 0)
    }

    /// Spec 2: `value` reads and changes a `Sendable` value in place, and what is
    /// dropped is the value as it was left.
    @Test func valueReadsAndChangesTheValueInPlace() throws {
        let tally = DeinitTally(capacity: 4, recordsOrder: true)
        let dropper = try BackgroundDropper(threads: 1, capacity: 16)
        var numbers = DeferredDrop([1, 2, 3], dropper: dropper)
        #expect(numbers.value.count == 3)
        numbers.value.append(4)
        numbers.value[0] = 10
        #expect(numbers.value == [10, 2, 3, 4])
        #expect(numbers.take() == [10, 2, 3, 4])
        var objects = DeferredDrop([TrackedObject(0, tally)], dropper: dropper)
        objects.value.append(TrackedObject(1, tally))
        objects.value.removeFirst()
        #expect(tally.count(0) == 1, "the element removed in place died at once, on the caller")
        var token = DeferredDrop(TrackedToken(2, tally), dropper: dropper)
        token.value.id = 3
        #expect(token.value.id == 3)
        _ = consume objects
        _ = consume token
        dropper.flush()
        #expect(tally.count(1) == 1 && tally.count(3) == 1 && tally.count(2) == 0, "\(tally.order)")
        #expect(tally.order == [0, 1, 3])
        #expect(tally.threads.count == 2, "the removed element dies on the caller, the wrappers' values elsewhere")
    }

    /// Spec 2: `withValue` reads and changes a non-`Sendable` value; a body that throws
    /// leaves the value in the wrapper as it left it; the whole tree is dropped.
    @Test func withValueChangesANonSendableValue() throws {
        let tally = DeinitTally(capacity: 8, recordsOrder: true)
        let dropper = try BackgroundDropper(threads: 1, capacity: 16)
        var deferred = DeferredDrop(PlainTree(TrackedObject(0, tally)), dropper: dropper)
        let count = deferred.withValue { tree in
            tree.children.append(PlainTree(TrackedObject(1, tally)))
            return tree.children.count
        }
        #expect(count == 1)
        do {
            try deferred.withValue { (tree) throws(AbandonedChange) in
                tree.children.append(PlainTree(TrackedObject(2, tally)))
                throw AbandonedChange()
            }
            Issue.record("the body's error was not thrown")
        } catch {}
        #expect(deferred.withValue { $0.children.map(\.tracked.id) } == [1, 2])
        dropper.flush()
        #expect(tally.died == 0)
        _ = consume deferred
        dropper.flush()
        #expect(tally.wrongCounts(0..<3) == "")
        #expect(!tally.threads.contains(currentThreadID()), "part of the tree died on the caller")
    }

    /// Spec 2: a wrapped value travels in its envelope, so a flush report names the
    /// deinit that blocks `DeferredValue<Blocker>`.
    @Test func aFlushReportNamesAWrappedValue() throws {
        let tally = DeinitTally(capacity: 1)
        let gate = Gate()
        let dropper = try BackgroundDropper(threads: 1, capacity: 16)
        let deferred = DeferredDrop(Blocker(gate, TrackedObject(0, tally)), dropper: dropper)
        _ = consume deferred
        var report: FlushTimeout?
        if gate.waitForEntries(1) {
            do {
                try dropper.flush(timeout: .milliseconds(10))
            } catch {
                report = error
            }
        } else {
            Issue.record("the background thread never took the blocker")
        }
        // Before the dropper's last reference goes: its shutdown waits for the blocker.
        gate.open()
        dropper.flush()
        #expect(
            report?.blockedDrops.map(\.typeName) == ["DeferredValue<Blocker>"],
            "\(String(describing: report))")
        #expect(tally.count(0) == 1)
    }

    /// Spec 9: a wrapper whose dropper has shut down drops its value inline, on the
    /// thread where it dies, before its deinit returns; counted as a drop after
    /// shutdown. Also for a wrapper made before the shutdown.
    @Test func aWrapperWhoseDropperShutDownDropsInline() throws {
        let tally = DeinitTally(capacity: 2, recordsOrder: true)
        let dropper = try BackgroundDropper(threads: 1, capacity: 16)
        let before = DeferredDrop(TrackedObject(0, tally), dropper: dropper)
        dropper.shutdown()
        let after = DeferredDrop(TrackedToken(1, tally), dropper: dropper)
        _ = consume before
        #expect(tally.count(0) == 1, "not dropped inline")
        _ = consume after
        #expect(tally.count(1) == 1, "not dropped inline")
        #expect(tally.threads == [currentThreadID()])
        let statistics = dropper.statistics()
        #expect(statistics.droppedAfterShutdown == 2 && statistics.queued == 0)
    }

    /// Spec 9: a wrapper keeps its dropper alive after the caller's last reference went;
    /// when the wrapper dies, its value is queued and then the dropper's own deinit
    /// drains the queue: the value has been deinitialised, in the background, by the time
    /// the wrapper's deinit returns.
    @Test func aWrapperKeepsItsDropperAlive() throws {
        let tally = DeinitTally(capacity: 1, recordsOrder: true)
        var dropper: BackgroundDropper? = try BackgroundDropper(threads: 1, capacity: 16)
        weak let watched = dropper
        let deferred = DeferredDrop(TrackedObject(0, tally), dropper: dropper!)
        dropper = nil
        #expect(watched != nil, "the dropper went away while a wrapper held it")
        _ = consume deferred
        #expect(watched == nil)
        #expect(tally.count(0) == 1, "the dropper's shutdown did not drain the value")
        #expect(!tally.threads.contains(currentThreadID()), "the value was deinitialised on the caller")
    }

    /// Spec 9: a wrapper that dies inside a deinit the dropper's own thread runs (a field
    /// of a dropped value) drops into the same dropper, which deinitialises its value on
    /// that thread; with the queue full, inline there rather than waiting for itself.
    @Test func aWrapperThatDiesOnTheDroppersThread() throws {
        final class Holder: Sendable {
            let inner: DeferredDrop<TrackedObject>
            init(_ inner: consuming DeferredDrop<TrackedObject>) { self.inner = inner }
        }
        let tally = DeinitTally(capacity: 64, recordsOrder: true)
        let dropper = try BackgroundDropper(threads: 1, capacity: 2)
        for id in 0..<32 {
            dropper.drop(Holder(DeferredDrop(TrackedObject(id, tally), dropper: dropper)))
        }
        // The first flush waits for the holders, whose deinits drop the inner values;
        // the second for those.
        dropper.flush()
        dropper.flush()
        #expect(tally.wrongCounts(0..<32) == "")
        #expect(!tally.threads.contains(currentThreadID()), "a value was deinitialised on the caller")
        let statistics = dropper.statistics()
        #expect(statistics.queued + statistics.droppedInline == 64, "\(statistics)")
    }
}
