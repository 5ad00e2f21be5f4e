// The one place that calls pthread_atfork: allocators register what they do around a fork
// here, and AllocCore runs every registration in pthread_atfork's order.

import CAllocCore
import Glibc

/// What allocators do around `fork(2)`, registered once per allocator.
///
/// A fork copies only the forking thread: a lock another thread held at that moment stays
/// held in the child for ever, and the child's first allocation would wait on it. So an
/// allocator takes its locks before the fork (`prepare`) and releases them on both sides
/// (`parent`, `child`); the child may also forget what belonged to threads it does not
/// have.
///
/// ```swift
/// ForkActions.register(prepare: lockEverything, parent: unlockEverything, child: resetAfterFork)
/// ```
///
/// `prepare` actions run newest registration first, `parent` and `child` oldest first
/// (pthread_atfork's order): an allocator registered later may call one registered earlier
/// (a LargeAlloc instance whose child action allocates, under BinnedMalloc), so it stops
/// first and restarts last. The actions run with every other thread stopped in the child,
/// and must not allocate from the allocator they belong to before it has restarted.
public enum ForkActions {
    /// A fork action: a C function pointer, since it runs inside `fork`, where a closure's
    /// context could be anywhere.
    public typealias Action = @convention(c) () -> Void

    /// The most sets that a process may register: one per allocator, with room to spare.
    public static var capacity: Int { Int(ALLOC_CORE_FORK_ACTION_CAPACITY) }

    /// Registers one allocator's actions. Nothing here allocates except the process's one
    /// `pthread_atfork`, on the first registration; safe from inside `malloc`.
    ///
    /// - Precondition: fewer than ``capacity`` sets are registered (each allocator
    ///   registers once; a loop registering per instance is a bug).
    public static func register(prepare: Action?, parent: Action?, child: Action?) {
        let result = alloc_core_fork_register(prepare, parent, child)
        precondition(
            result != ENOMEM, "ForkActions.register: \(capacity) sets of fork actions are registered already")
        precondition(result == 0, "ForkActions.register: pthread_atfork failed with error \(result)")
    }

    /// How many sets are registered (for tests and statistics).
    public static var registeredCount: Int { Int(alloc_core_fork_registered_count()) }
}
