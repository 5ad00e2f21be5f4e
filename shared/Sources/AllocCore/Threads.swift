// Threads: thread-local slots fast enough for an allocator's fast path, the hook that
// gives a thread's cached memory back when it exits, and plain OS threads.

import CAllocCore
import Glibc

/// One of a fixed set of per-thread pointers, stored with the initial-exec TLS model.
///
/// Reading or writing a slot is one `%fs`-relative move once inlined (about 1.4 ns
/// measured here, against about 4 ns for `pthread_getspecific`), it never allocates and
/// it works before any initializer has run, including inside a library loaded with
/// `LD_PRELOAD`. Every slot reads nil on a new thread.
///
/// The slots are few and assigned by name, like the reserved keys of an OS's thread
/// data: one per allocator of the project, and three for tests and applications. A slot
/// index is a compile-time constant, so reading a slot needs no lazy global.
///
/// ```swift
/// let slot = ThreadLocalSlot.binnedAlloc
/// if let cache = slot.value { ... }            // fast path
/// slot.install(newCache)                         // slow path: sets and arms the exit hook
/// ```
public struct ThreadLocalSlot: Sendable, Equatable {
    /// The number of slots.
    public static let count = Int(ALLOC_CORE_TLS_SLOT_COUNT)

    /// The slot's index, below `count`.
    public let index: UInt32

    @inlinable
    public init(index: Int) {
        precondition(index >= 0 && index < Int(ALLOC_CORE_TLS_SLOT_COUNT), "no thread-local slot \(index)")
        self.index = UInt32(truncatingIfNeeded: index)
    }

    @inlinable public static var binnedAlloc: ThreadLocalSlot { ThreadLocalSlot(index: 0) }
    @inlinable public static var arenaAlloc: ThreadLocalSlot { ThreadLocalSlot(index: 1) }
    @inlinable public static var ringAlloc: ThreadLocalSlot { ThreadLocalSlot(index: 2) }
    @inlinable public static var largeAlloc: ThreadLocalSlot { ThreadLocalSlot(index: 3) }
    @inlinable public static var backgroundDrop: ThreadLocalSlot { ThreadLocalSlot(index: 4) }
    /// Slots 5 to 7, for tests and applications.
    @inlinable public static func application(_ number: Int) -> ThreadLocalSlot {
        precondition(number >= 0 && number < 3, "application slots are 0, 1 and 2, not \(number)")
        return ThreadLocalSlot(index: 5 + number)
    }

    /// The calling thread's value of this slot.
    @inlinable
    public var value: UnsafeMutableRawPointer? {
        get { alloc_core_tls_get(index) }
        nonmutating set { alloc_core_tls_set(index, newValue) }
    }

    /// Sets the calling thread's value and makes sure this thread runs the exit hooks when
    /// it ends. Call it on the slow path that first gives a thread its state; afterwards
    /// `value` can be read and written freely.
    ///
    /// - Throws: the `pthread_key_create` or `pthread_setspecific` error, in which case
    ///   the value is still set but the hook will not run for this thread.
    public func install(_ newValue: UnsafeMutableRawPointer) throws(SystemError) {
        alloc_core_tls_set(index, newValue)
        let error = alloc_core_tls_arm_thread_exit()
        if error != 0 { throw SystemError(.threadLocal, code: error) }
    }

    /// Sets the function that runs on a thread that exits with a non-nil value in this
    /// slot; the slot reads nil while it runs, and it gets the last value. Pass nil to
    /// remove it. Hooks run from a pthread key destructor, after the thread's function
    /// returned and before its stack is gone; a hook that sets a slot again gets the
    /// hooks run once more (up to `PTHREAD_DESTRUCTOR_ITERATIONS`, 4, rounds in all).
    ///
    /// Two limits, as with every pthread-key based cache (mimalloc's included):
    /// - glibc frees some per-thread buffers after the last round of key destructors; a
    ///   cache created by such a late `free` would never be handed back. Check
    ///   ``isCurrentThreadExiting`` on the slow path and take a shared path instead.
    /// - `exit()` and a return from `main` run no key destructors, so the main thread's
    ///   hooks do not run at process exit (its memory goes back with the process).
    public func setThreadExitHook(_ hook: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?) {
        _ = alloc_core_tls_set_exit_hook(index, hook)
    }
}

extension ThreadLocalSlot {
    /// Whether the calling thread has begun running its exit hooks. An allocator's slow
    /// path checks it before giving a thread a new per-thread cache: past this point a
    /// cache might outlive the last round of hooks and strand its memory.
    @inlinable
    public static var isCurrentThreadExiting: Bool { alloc_core_thread_is_exiting() != 0 }
}

/// The kernel's id of the calling thread (gettid), unique among live threads.
@inlinable
public func currentThreadID() -> Int {
    Int(alloc_core_gettid())
}

/// A joinable OS thread (pthread) running a Swift closure.
///
/// For background workers and tests. Creating one allocates (the closure's context);
/// write thread bodies in a library module, not at the top level of `main.swift`, whose
/// closures are main-actor isolated in Swift 6 and trap off the main thread.
public struct OSThread: Sendable {
    @usableFromInline let handle: pthread_t

    /// Starts a thread running `body`.
    ///
    /// - Throws: the `pthread_create` error (EAGAIN when the process is out of threads).
    public static func spawn(_ body: @escaping @Sendable () -> Void) throws(SystemError) -> OSThread {
        final class Box {
            let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        var handle = pthread_t()
        let error = pthread_create(
            &handle, nil,
            { context in
                Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
                return nil
            }, context)
        if error != 0 {
            Unmanaged<Box>.fromOpaque(context).release()
            throw SystemError(.threadCreate, code: error)
        }
        return OSThread(handle: handle)
    }

    /// Waits for the thread to finish. Call it exactly once per thread.
    public func join() {
        let error = pthread_join(handle, nil)
        precondition(error == 0, "pthread_join failed with error \(error)")
    }
}

/// Sleeping until a word changes: futex(2) waits and wakes on an `AtomicWord`, for the
/// blocking paths of allocators (a full queue, a background worker's interval, a ring
/// whose oldest buffer is still held). Nothing here allocates.
///
/// The kernel compares only the word's low 32 bits, so a word used for waiting must change
/// in those bits on every change a waiter cares about (a state, or a counter that the
/// waker increments). The word must be in this process's private memory.
///
/// ```swift
/// // Waiter:                                   // Waker:
/// while word.load(ordering: .acquiring) == 0 {  word.store(1, ordering: .releasing)
///     Futex.wait(word, whileEqualTo: 0)        Futex.wake(word)
/// }
/// ```
public enum Futex {
    /// Why a wait returned. Wake-ups can be spurious: callers re-check their condition.
    public enum WaitResult: Sendable, Equatable {
        /// Woken by `wake`, by a signal, or spuriously.
        case woken
        /// The word did not hold the expected value when the wait began.
        case valueChanged
        /// The timeout passed.
        case timedOut
    }

    /// Sleeps while the low 32 bits of `word` equal those of `expected`, for at most
    /// `timeoutNanoseconds` (nil: until woken).
    @discardableResult
    public static func wait(
        _ word: AtomicWord, whileEqualTo expected: Int, timeoutNanoseconds: UInt64? = nil
    ) -> WaitResult {
        let timeout = timeoutNanoseconds.map { Int64(clamping: $0) } ?? -1
        let result = alloc_core_futex_wait(
            word.address.assumingMemoryBound(to: UInt32.self), UInt32(truncatingIfNeeded: expected), timeout)
        switch result {
        case EAGAIN: return .valueChanged
        case ETIMEDOUT: return .timedOut
        default: return .woken
        }
    }

    /// Wakes at most `count` threads waiting on `word`; returns how many woke.
    @discardableResult
    public static func wake(_ word: AtomicWord, count: Int = Int(Int32.max)) -> Int {
        Int(alloc_core_futex_wake(word.address.assumingMemoryBound(to: UInt32.self), Int32(clamping: count)))
    }
}
