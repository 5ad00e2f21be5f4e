// A one-shot signal between threads, for tests that hold a thread at a point they choose.

import Glibc
import Synchronization

/// A one-shot signal between threads: `wait()` returns once `raise()` has been called
/// (and everything written before it is visible).
final class Signal: Sendable {
    let word = Atomic<Int>(0)

    /// Whether the signal was raised.
    var isRaised: Bool { word.load(ordering: .acquiring) != 0 }

    func raise() { word.store(1, ordering: .releasing) }

    /// Waits, sleeping 200 µs between looks, so that a waiting thread leaves the cores to
    /// the others.
    func wait() { while !isRaised { usleep(200) } }
}
