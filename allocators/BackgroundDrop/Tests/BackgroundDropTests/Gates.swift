// A gate that holds deinits until the test opens it, and the value whose deinit waits at
// it: how the tests keep a background thread busy for exactly as long as they choose
// (a full queue, a blocked deinit, a flush that must time out), instead of hoping that a
// slow deinit is still running when they look.

import AllocCore
import AllocTestSupport
import Glibc
import Synchronization

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
