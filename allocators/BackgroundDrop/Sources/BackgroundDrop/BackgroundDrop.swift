// BackgroundDrop: deinitialise big values on background threads, so the caller never
// stalls on a long release (a tree of a million nodes, an array of arrays of strings).
//
// # What it is
//
// A `BackgroundDropper` owns one or more background threads and a bounded ring of slots.
// `drop(_:)` moves a value into a slot (the value's bytes go into the slot itself: no
// box, no allocation, for values of up to 48 bytes, which covers class references,
// arrays, dictionaries, strings and existentials) and returns; a background thread takes
// the slot and deinitialises the value there. The caller pays one compare-exchange and a
// few stores, whatever the value holds.
//
// ```swift
// let dropper = try BackgroundDropper(threads: 1)
// let tree = Tree(height: 20)          // a million class nodes
// dropper.drop(consume tree)           // returns at once; the nodes are freed elsewhere
// dropper.flush()                      // waits until everything dropped so far is gone
// ```
//
// `BackgroundDropper.shared` is a process-wide dropper with one thread, for code that
// does not want to own one.
//
// `DeferredDrop` (defer-drop's `DeferDrop`) wraps a value so that its release goes to a
// dropper wherever the wrapper's life ends, on every path out of a scope or when the
// struct or object holding it dies: the wrapper's deinit is one `drop`. Meanwhile the
// value is used in place (`value`, `withValue`), and `take()` cancels the deferral.
//
// ```swift
// var index = DeferredDrop(buildIndex())     // the shared dropper, unless told otherwise
// index.value["swift", default: []].append(7) // read and changed in place
// return index.value.count                    // the index goes to a background thread here
// ```
//
// # The queue
//
// The ring is Dmitry Vyukov's bounded multi-producer multi-consumer queue: every slot has
// a sequence word, producers claim a position with a compare-exchange on the enqueue
// position and publish the slot by storing `position + 1` into its sequence; a background
// thread claims it the same way on the dequeue position, deinitialises the value *in the
// slot*, and frees the slot by storing `position + capacity`. So at most `capacity`
// values are ever waiting or being deinitialised: memory stays bounded however fast the
// producers are. When the ring is full, the policy chosen at construction decides: block
// the caller (with an optional timeout, after which the value is deinitialised inline),
// or deinitialise it inline at once.
//
// # Sleeping
//
// Nobody spins while idle. Producers blocked on a full ring and threads waiting in
// `flush` sleep on futexes, each behind an *event count* (AllocCore's `EventCount`: a
// word with an epoch in its low 32 bits and the number of sleepers above): the waker
// pays one load when nobody sleeps, and exactly one claimer pays the `futex` call when
// someone does. Waits that nobody can announce (an `async` flush, a worker waiting for a
// producer preempted between its two stores) poll with AllocCore's `BackOff`.
//
// Background threads park on a futex of their own and are woken by a *chained wake*
// (the rule of Go's scheduler for its spinning threads, or tokio's "notify one searching
// worker"): a drop wakes a parked thread only when no background thread is *searching*
// (woken, or looking at the empty queue before it parks), and a searching thread that
// takes a value, if it was the last searcher and more values wait, wakes the next. So a
// drop pays at most one `futex_wake`, at the edge from idle to busy, whatever the number
// of threads; the wake-ups that bring the other threads in are paid by the background
// threads. A thread busy in a deinit does not search, so a deinit that blocks does not
// keep the parked threads asleep.
//
// # Shutdown
//
// `shutdown()` (and the deinit of the dropper) closes the ring by setting a bit in the
// enqueue position, so no position can be claimed afterwards, lets the threads drain
// what was queued, and joins them. A drop after that is deinitialised inline, and so
// is the value of a `DeferredDrop` that dies after that. A `DeferredDrop` holds a dropper
// passed to it strongly: a dropper never goes away under a wrapper waiting to use it (the
// shared one never goes away at all).

import AllocCore
import Synchronization

// MARK: - Public API: BackgroundDropper

/// Hands values to background threads to be deinitialised there, so the caller does not
/// pay for a long release.
///
/// A dropper is a reference: copies share the same threads and queue. It is `Sendable`;
/// any thread may drop into it. Its threads stop when ``shutdown()`` is called or the
/// last reference goes away; both wait until everything queued has been deinitialised.
///
/// ```swift
/// let dropper = try BackgroundDropper(threads: 2, capacity: 1024, whenFull: .dropInline)
/// dropper.drop(bigDictionary)          // queued: deinitialised on a background thread
/// dropper.drop(contentsOf: manyTrees)  // one value per slot, claimed together
/// try dropper.flush(timeout: .seconds(1))
/// print(dropper.statistics().droppedInBackground)
/// dropper.shutdown()                   // drains, joins; later drops run inline
/// ```
///
/// # Ownership
///
/// `drop(_:)` takes its argument `consuming sending`: the caller gives the value up, and
/// the compiler rejects a later use of it, or a drop of a non-`Sendable` value still
/// reachable from the caller's other state. Pass a temporary, or a variable with
/// `consume`: a variable passed plainly may be *copied* into the call (one more
/// reference) and released by the caller at the end of its scope, so that the release
/// the dropper makes is not the last one:
///
/// ```swift
/// let tree = Tree(height: 20)
/// dropper.drop(consume tree)           // the last reference travels
/// dropper.drop(makeTree())             // so does a temporary's
/// ```
///
/// An existential is the exception to "a temporary travels": passed to the generic
/// `drop`, the compiler opens it (SE-0352) and passes a *copy* of the value inside,
/// even with `consume` or for a temporary, and the caller releases the existential after
/// `drop` returns. Write `as any P` inside the call so that the existential itself
/// travels (it fits a slot: 32 to 40 bytes):
///
/// ```swift
/// let shape: any Shape = makeShape()
/// dropper.drop(consume shape as any Shape)   // not dropper.drop(consume shape)
/// ```
///
/// If other references to the same object exist, the background thread releases only
/// its own and the object lives on: only the *last* reference's release does the
/// expensive work, wherever it happens.
///
/// # Deinit on another thread
///
/// A dropped value's `deinit` runs on a background thread, at a time of its choosing
/// (use ``flush()`` to wait for it). Code that observes deinit order, takes locks in a
/// deinit, or touches thread-affine state (the main actor, thread-local storage, a
/// non-thread-safe object) from a deinit must not be handed to a dropper, or must be
/// ready for that. With one thread, values are deinitialised one at a time in the order
/// their drops took a queue position; with several, in no promised order and up to
/// `threads` at once (see the spec, section 4).
public final class BackgroundDropper: Sendable {
    /// The ring, its counters and its threads, in memory of their own.
    @usableFromInline let queue: DropQueue

    /// What happens to a drop that finds the queue full.
    public let policy: FullQueuePolicy

    /// The number of background threads.
    public var threadCount: Int { queue.threadCount }

    /// The number of slots: values waiting or being deinitialised, at most (the capacity
    /// asked for, rounded up to a power of two, at least 2).
    public var capacity: Int { queue.capacity }

    /// The largest value, in bytes, that travels in a slot without an allocation; larger
    /// values (or values aligned to more than ``inlineAlignment``) are moved into a heap
    /// box first, one allocation per drop.
    public static let inlineByteCount = Layout.payloadByteCount

    /// The largest alignment a value may have to travel in a slot.
    public static let inlineAlignment = Layout.payloadAlignment

    /// The most threads a dropper may have.
    public static let maximumThreadCount = DropQueue.maximumThreadCount

    /// The largest capacity a dropper may have (64 MiB of slots).
    public static let maximumCapacity = DropQueue.maximumCapacity

    /// A dropper with `threads` background threads and a ring of `capacity` slots
    /// (rounded up to a power of two, at least 2).
    ///
    /// The ring is mapped and every slot written once here (64 bytes a slot), so drops
    /// never take a page fault. The threads start at once and sleep until work arrives.
    ///
    /// - Precondition: `1 <= threads <= maximumThreadCount` and
    ///   `1 <= capacity <= maximumCapacity`: zero threads or zero slots could never drop
    ///   anything in the background, so they are programmer errors, not resource failures.
    /// - Throws: ``BackgroundDropError/outOfMemory(_:)`` when the ring cannot be mapped
    ///   (`mmap`), ``BackgroundDropError/threadStart(_:)`` when a thread cannot be started
    ///   (`pthread_create`, typically `EAGAIN`); nothing is left running then.
    public init(
        threads: Int = 1, capacity: Int = 4096, whenFull policy: FullQueuePolicy = .block(timeout: nil)
    ) throws(BackgroundDropError) {
        precondition(
            threads >= 1 && threads <= DropQueue.maximumThreadCount,
            "BackgroundDropper: threads must be 1...\(DropQueue.maximumThreadCount), got \(threads)")
        precondition(
            capacity >= 1 && capacity <= DropQueue.maximumCapacity,
            "BackgroundDropper: capacity must be 1...\(DropQueue.maximumCapacity), got \(capacity)")
        self.policy = policy
        do {
            queue = try DropQueue.create(threads: threads, capacity: capacity)
        } catch {
            throw .outOfMemory(error)
        }
        do {
            try queue.startThreads()
        } catch {
            throw .threadStart(error)
        }
    }

    /// A dropper with no threads whose ring is closed from the start: every drop runs
    /// inline. What ``shared`` falls back to when its threads cannot be started.
    init(inlineOnly: Void) throws(SystemError) {
        policy = .dropInline
        queue = try DropQueue.create(threads: 0, capacity: 2)
        queue.close()
        queue.markStopped()
    }

    deinit {
        if let worker = queue.currentWorker {
            // The last reference went away inside a deinit that one of our own threads
            // runs: it cannot join itself, so it shuts down what it can and frees the
            // memory when its loop ends.
            queue.shutdownFromWorker(worker, freeMemoryWhenDone: true)
        } else {
            queue.shutdown()
            queue.releaseMemory()
        }
    }

    /// A process-wide dropper: one thread, 4096 slots, and a full queue blocks the caller
    /// for at most 10 ms before the value is deinitialised inline.
    ///
    /// It is never shut down: values still queued when the process exits are not
    /// deinitialised (like Swift globals); call ``flush()`` before exiting when their
    /// deinits matter. If its ring or thread cannot be created, it deinitialises every
    /// value inline instead (and traps only if not even one page can be mapped).
    public static let shared: BackgroundDropper = {
        if let dropper = try? BackgroundDropper(
            threads: 1, capacity: 4096, whenFull: .block(timeout: .milliseconds(10)))
        {
            return dropper
        }
        do {
            return try BackgroundDropper(inlineOnly: ())
        } catch {
            preconditionFailure("BackgroundDropper.shared: cannot map even one page: \(error)")
        }
    }()

    /// ``shared`` without a reference count: it is never released, so borrowing it
    /// needs no retain (reading ``shared`` itself costs a retain and a release around
    /// the use, about 10 ns).
    @usableFromInline static let sharedUnretained = Unmanaged.passUnretained(shared)

    /// `shared.handOff(value)` with no retain of the shared dropper: a ``DeferredDrop``
    /// on the default dropper costs what `drop` through a dropper in a local costs.
    @inlinable
    static func handOffToShared<T: ~Copyable>(_ value: consuming T) {
        var pending = Optional(value)
        sharedUnretained._withUnsafeGuaranteedRef { _ = $0.handOff(pending.take()!) }
    }

    /// Gives `value` to a background thread to deinitialise, and returns without waiting.
    ///
    /// Any value: a class instance, an array, a dictionary, a string, a `~Copyable`
    /// struct with a deinit. Values of up to ``inlineByteCount`` bytes (aligned to at
    /// most ``inlineAlignment``) travel in the slot itself: no allocation. Larger ones
    /// are boxed (one allocation).
    ///
    /// When the queue is full the ``policy`` applies; on one of this dropper's own
    /// threads (a deinit that drops more values) a full queue never blocks: the value is
    /// deinitialised inline. After ``shutdown()`` every value is deinitialised inline.
    ///
    /// - Returns: where the value went; ignore it unless you count.
    @inlinable
    @discardableResult
    public func drop<T: ~Copyable>(_ value: consuming sending T) -> DropOutcome {
        handOff(value)
    }

    /// `drop(_:)` once the value is ours: the fast path, then the policy.
    @inlinable
    func handOff<T: ~Copyable>(_ value: consuming T) -> DropOutcome {
        switch queue.tryEnqueue(value) {
        case .queued:
            return .queued
        case .full(let value):
            return dropWhenFull(value)
        case .closed(let value):
            return dropInline(value, reason: .afterShutdown)
        }
    }

    /// Gives every element of `values` to the background threads, each in a slot of its
    /// own, claiming runs of free slots with one compare-exchange each; the emptied
    /// array's buffer is freed on the caller (one `free`).
    ///
    /// With one thread the elements are deinitialised in array order. Elements that find
    /// the queue full get the ``policy`` one at a time, like single drops. Pass the array
    /// with `consume` (or a temporary): a copy of a shared array would copy its elements
    /// (one more reference each), and the caller's array would release them in the end.
    ///
    /// - Returns: how many elements were queued and how many deinitialised inline.
    @discardableResult
    public func drop<T>(contentsOf values: consuming sending [T]) -> BatchOutcome {
        var values = values
        values.reverse()  // popLast then yields them in array order
        var outcome = BatchOutcome(queued: 0, droppedInline: 0)
        while !values.isEmpty {
            let claimed = queue.enqueueRun(from: &values)
            outcome.queued += claimed
            if claimed == 0, let value = values.popLast() {
                // `consume`: passed plainly, the binding is copied into the call and
                // released after it, when a background thread may already have released
                // the copy it queued; the last release, and the deinit, were then ours.
                switch handOff(consume value) {
                case .queued: outcome.queued += 1
                case .droppedInline: outcome.droppedInline += 1
                }
            }
        }
        return outcome
    }

    /// Waits, as long as it takes, until every value whose drop returned before this call
    /// has been deinitialised. Values dropped meanwhile by other threads may or may not
    /// be waited for.
    ///
    /// The caller sleeps (no spinning); it is woken when the last of those values is done.
    ///
    /// - Precondition: not called from a deinit that one of this dropper's own threads
    ///   runs (it would wait for itself).
    public func flush() {
        _ = queue.flush(deadline: nil)
    }

    /// Like ``flush()``, but gives up after `timeout` (zero or less: it only looks).
    ///
    /// - Throws: ``FlushTimeout`` when the time ran out: how many values were still
    ///   pending, and every drop that was running for longer than the timeout (which
    ///   thread, the value's type, for how long): the deinit that blocks. The other
    ///   threads go on dropping meanwhile.
    public func flush(timeout: Duration) throws(FlushTimeout) {
        if let report = queue.flush(deadline: SystemInfo.deadline(after: timeout)) { throw report }
    }

    /// The `async` variant of ``flush()``: suspends (polling, with AllocCore's `BackOff`
    /// from 20 µs to 5 ms) instead of blocking a thread of the concurrency pool. A
    /// cancelled task stops waiting and returns (the values are still deinitialised,
    /// later).
    public func flush() async {
        _ = await queue.flushAsync(timeoutNanoseconds: nil)
    }

    /// The `async` variant of ``flush(timeout:)``.
    ///
    /// - Throws: ``FlushTimeout``, as the blocking variant; also when the task is
    ///   cancelled before the values are done (the report then tells what was pending).
    public func flush(timeout: Duration) async throws(FlushTimeout) {
        if let report = await queue.flushAsync(timeoutNanoseconds: Duration.nanosecondsClamped(timeout)) {
            throw report
        }
    }

    /// Closes the queue, lets the threads deinitialise everything queued, and joins them.
    /// Drops that come afterwards are deinitialised inline. Idempotent: a second call (or
    /// one racing with the first) returns when the first is done.
    ///
    /// Called from a deinit that one of this dropper's own threads runs (which cannot
    /// wait for itself), it closes the queue and returns at once; that thread then
    /// deinitialises what is left after its current value, joins the other threads, and
    /// ends detached. The same happens when the last reference goes away there.
    public func shutdown() {
        if let worker = queue.currentWorker {
            queue.shutdownFromWorker(worker, freeMemoryWhenDone: false)
        } else {
            queue.shutdown()
        }
    }

    /// Whether ``shutdown()`` has begun: drops are deinitialised inline from then on.
    public var isShutDown: Bool { queue.isClosed }

    /// The counters, read from any thread (each counter untorn; not one atomic picture).
    public func statistics() -> BackgroundDropStatistics {
        queue.statistics()
    }

    /// The first broken invariant of the queue, described, or nil when it is sound: the
    /// layout; the dequeue position at most `capacity` behind the enqueue position; every
    /// slot free for its next position or holding a published value not yet done, and at
    /// most `threadCount` of those being deinitialised; the chained wake's counts within
    /// the thread count; the lifecycle, the workers' records and the counters consistent
    /// (spec section 4). O(capacity + threads). Background threads may run meanwhile, but
    /// no drop may be running on another thread (a slot claimed and not yet published
    /// reads as a violation). For tests and debugging; debug builds run it at shutdown.
    public func integrityViolation() -> String? {
        queue.integrityViolation()
    }
}

// MARK: - Public API: DeferredDrop

/// A value whose release goes to a dropper: when the wrapper dies, its deinit hands the
/// value to ``BackgroundDropper/drop(_:)``, so a big value kept in a local, a field or a
/// collection is released in the background wherever its life ends, on every path out of
/// the scope (a `return`, a `throw`), with nothing to remember at each one.
///
/// ```swift
/// func answer(_ query: String) throws -> [Int] {
///     var index = DeferredDrop(buildIndex())          // a [String: [Int]]; the shared dropper
///     index.value["swift", default: []].append(7)     // read and changed in place
///     return try lookUp(query, in: index.value)
/// }   // `index` dies here, or at the throw: the dictionary goes to a background thread
///
/// var tree = DeferredDrop(makeTree(), dropper: dropper)   // plain classes, not Sendable
/// let leaves = tree.withValue { $0.leafCount }
/// let kept = tree.take()                                  // cancelled: the caller keeps it
/// ```
///
/// # The drop at the end
///
/// The deinit is `dropper.drop(value)`, once (the value in a `~Copyable` envelope of
/// the same layout, which a flush report names `DeferredValue<Value>`): the same fast
/// path (no allocation for a value that fits a slot, ``BackgroundDropper/inlineByteCount``),
/// the dropper's ``FullQueuePolicy`` when the queue is full (under `.block` the wrapper's
/// deinit waits for a slot, for at most the policy's timeout), inline on the thread where
/// the wrapper dies once the dropper has shut down, and inline rather than waiting when it
/// dies inside a deinit that the dropper's own thread runs. Where the value went is not
/// reported (a deinit returns nothing); the dropper's ``BackgroundDropper/statistics()``
/// count it like any drop.
///
/// A dropper passed in is held strongly, so it cannot shut down by going away while a
/// wrapper waits to use it. That reference is the cost on top of `drop` through a dropper
/// held in a local: one retain at construction, one release in the deinit (about 10 ns
/// here). The shared dropper, the default, is never released, so a wrapper on it keeps no
/// reference and costs what `drop` costs (spec section 7).
///
/// # Access while it lives
///
/// - ``value``, for a `Sendable` value: read and changed in place, like a stored
///   property. Accessors that yield (`_read`, `_modify`) rather than a closure: no copy
///   of the value (a `~Copyable` one works too), and no closure around the code that
///   uses it, where a `return` would leave only the closure.
/// - ``withValue(_:)``, for any value: a closure that gets the value `inout sending`.
///   The compiler checks that the closure leaves nothing of the caller's attached to the
///   value and keeps no reference into it, which is what makes a non-`Sendable` value
///   safe to deinitialise on another thread later (below).
///
/// # Which values
///
/// Any type, `~Copyable` ones included (the dropper's `drop` takes `~Copyable` values).
/// A value is given up `consuming sending` at construction, as to `drop`: pass a
/// temporary or `consume variable`; a variable passed plainly may be copied, and then
/// the caller's copy, not the dropper, makes the last release (see
/// ``BackgroundDropper``, Ownership). An existential wraps as itself
/// (`DeferredDrop<any P>`): a type's own generic parameter is not opened.
///
/// A non-`Sendable` value (a tree of plain classes) must not be deinitialised on another
/// thread while the caller still reaches part of it. `drop` gets that guarantee from
/// `sending`, checked where it is called; a wrapper's deinit is called nowhere the
/// compiler can check. So the value stays *disconnected* from the caller for the
/// wrapper's whole life: it comes in `sending`, ``withValue(_:)`` hands it out only
/// `inout sending`, ``take()`` gives it back `sending`, and ``value`` (which would let
/// the caller keep a reference into it) exists only for `Sendable` values.
///
/// `DeferredDrop` is `Sendable` when `Value` is: it may then cross to another thread or
/// task and die there, and its value still goes to its dropper.
public struct DeferredDrop<Value: ~Copyable>: ~Copyable {
    /// The value; nil only while ``withValue(_:)``'s body has it, and once ``take()``
    /// took it, in the deinit that follows.
    @usableFromInline var storage: Value?

    /// The dropper passed to ``init(_:dropper:)``, held strongly; nil for the shared one,
    /// which lives as long as the process and so needs no reference counted here.
    @usableFromInline let chosenDropper: BackgroundDropper?

    /// The dropper that deinitialises the value when the wrapper dies.
    public var dropper: BackgroundDropper { chosenDropper ?? .shared }

    /// Wraps `value`; ``BackgroundDropper/shared`` deinitialises it when the wrapper dies.
    @inlinable
    public init(_ value: consuming sending Value) {
        storage = .some(value)
        chosenDropper = nil
    }

    /// Wraps `value`; `dropper` deinitialises it when the wrapper dies. The wrapper keeps
    /// `dropper` alive until then.
    @inlinable
    public init(_ value: consuming sending Value, dropper: BackgroundDropper) {
        storage = .some(value)
        chosenDropper = dropper
    }

    /// Hands the value to the dropper, unless ``take()`` took it.
    @inlinable
    deinit {
        // A move, not a copy (checked with the strong count by OwnershipTests): a copy
        // would leave the last release, and the deinit, to the end of this one; hence
        // also the `~Copyable` envelope (`DeferredValue`).
        // `handOff`, not `drop`: `drop`'s `sending` cannot be checked on a stored
        // property; the value is disconnected all the same (see the type's comment).
        guard let value = storage else { return }
        if let chosenDropper {
            _ = chosenDropper.handOff(DeferredValue(value))
        } else {
            BackgroundDropper.handOffToShared(DeferredValue(value))
        }
    }

    /// Cancels the deferral: the value comes back, as it was, and nothing goes to the
    /// dropper (its deinit runs wherever the caller lets it end).
    @inlinable
    public consuming func take() -> sending Value {
        // Disconnected for the wrapper's whole life (see the type's comment).
        nonisolated(unsafe) let value = storage.take()!
        return value
    }

    /// Runs `body` with the value, which it may read and change; returns what `body`
    /// returns. For every `Value`; ``value`` is the shorter way for `Sendable` ones.
    ///
    /// The parameter is `inout sending`: the compiler rejects a `body` that stores a
    /// reference to the caller's non-`Sendable` state into the value, or keeps (or
    /// returns) a reference into it, since the value will be deinitialised on another
    /// thread.
    ///
    /// - Throws: what `body` throws; the value stays in the wrapper, as `body` left it.
    @inlinable
    public mutating func withValue<Result: ~Copyable, Failure: Error>(
        _ body: (inout sending Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        // Out of the optional while `body` runs: the compiler cannot see that a stored
        // property is disconnected, but it is (see the type's comment).
        nonisolated(unsafe) var value = storage.take()!
        do {
            let result = try body(&value)
            storage = .some(value)
            return result
        } catch {
            storage = .some(value)
            throw error
        }
    }
}

extension DeferredDrop: Sendable where Value: ~Copyable & Sendable {}

extension DeferredDrop where Value: ~Copyable & Sendable {
    /// The value, read or changed in place: `deferred.value.count`,
    /// `deferred.value.append(x)`. Only for `Sendable` values (a non-`Sendable` one would
    /// let the caller keep a reference into what another thread deinitialises); any value
    /// has ``withValue(_:)``.
    @inlinable
    public var value: Value {
        // Never nil here: only `take()`, which ends the wrapper, and `withValue`'s body,
        // which has the wrapper to itself, take the value out.
        _read { yield storage! }
        _modify { yield &storage! }
    }
}

/// A `DeferredDrop`'s value on its way to the dropper, in a `~Copyable` struct of the
/// same layout, so that no optimization can copy it. Handed over bare, an existential
/// (`DeferredDrop<any P>`) whose concrete type the optimizer could see was opened at the
/// call to `handOff` by its existential specialization, which passed a *copy* and
/// released the original after the call: the release that ran the deinit could be the
/// caller's (`OwnershipTests`, release builds). A flush report names such a value
/// `DeferredValue<Tree>`; writing its type word costs a cached metadata lookup.
@usableFromInline
struct DeferredValue<Value: ~Copyable>: ~Copyable {
    @usableFromInline var value: Value

    @inlinable
    init(_ value: consuming Value) { self.value = value }
}

// MARK: - Public API: FullQueuePolicy

/// What a drop does when every slot is taken.
public enum FullQueuePolicy: Sendable, Equatable {
    /// The caller sleeps until a slot frees up, for at most `timeout` (nil: as long as it
    /// takes; zero or less: it looks once more); when the time runs out, the value is
    /// deinitialised inline. Memory stays bounded and the caller is slowed to the
    /// droppers' pace.
    case block(timeout: Duration?)
    /// The value is deinitialised inline at once: the caller never waits for the queue,
    /// and pays for the release itself when the threads are behind.
    case dropInline
}

// MARK: - Public API: DropOutcome

/// Where a dropped value went.
public enum DropOutcome: Sendable, Equatable {
    /// Into the queue: a background thread deinitialises it.
    case queued
    /// Deinitialised on the calling thread, before `drop` returned.
    case droppedInline(InlineReason)

    /// Why a value was deinitialised inline.
    public enum InlineReason: Sendable, Equatable {
        /// The queue was full and the policy is `.dropInline`.
        case queueFull
        /// The queue stayed full for the policy's whole timeout.
        case timedOut
        /// The queue was full and the caller is one of the dropper's own threads, which
        /// must not wait for itself.
        case fullOnDropThread
        /// The dropper was shut down.
        case afterShutdown
    }
}

// MARK: - Public API: BatchOutcome

/// What `drop(contentsOf:)` did with the elements.
public struct BatchOutcome: Sendable, Equatable {
    /// Elements handed to the background threads.
    public var queued: Int
    /// Elements deinitialised on the calling thread (full queue or shut down).
    public var droppedInline: Int

    public init(queued: Int, droppedInline: Int) {
        self.queued = queued
        self.droppedInline = droppedInline
    }
}

// MARK: - Public API: FlushTimeout

/// A flush whose time ran out.
public struct FlushTimeout: Error, Sendable, Equatable, CustomStringConvertible {
    /// Values the flush waited for that were not deinitialised yet (queued or running).
    public let pending: Int
    /// Deinits that had been running for longer than the flush's timeout.
    public let blockedDrops: [BlockedDrop]

    public var description: String {
        let drops = blockedDrops.map { "thread \($0.thread): \($0.typeName) for \($0.duration)" }
        return "flush timed out with \(pending) values pending; blocked: [\(drops.joined(separator: ", "))]"
    }
}

// MARK: - Public API: BlockedDrop

/// A deinit that has been running on a background thread for a long time.
public struct BlockedDrop: Sendable, Equatable {
    /// The background thread's index, 0..<threads.
    public let thread: Int
    /// The dropped value's type.
    public let typeName: String
    /// How long its deinitialisation had been running when the flush gave up.
    public let duration: Duration
}

// MARK: - Public API: BackgroundDropStatistics

/// The counters of a dropper (spec section 8).
public struct BackgroundDropStatistics: Sendable, Equatable {
    /// Values that went into the queue (every queue position ever taken).
    public var queued: Int
    /// Values the background threads finished deinitialising.
    public var droppedInBackground: Int
    /// Values deinitialised on the caller: full queue (either policy) or after shutdown.
    public var droppedInline: Int
    /// Of `droppedInline`: those dropped after shutdown.
    public var droppedAfterShutdown: Int
    /// The most values waiting or being deinitialised at once, as seen by a background
    /// thread taking a value (it looks at the first value after an idle spell and then
    /// at every 16th, so the mark is exact to within 16 × threads), or the capacity once
    /// a drop found the queue full.
    public var queueHighWaterMark: Int
    /// Time the background threads spent deinitialising, summed over threads.
    public var droppingNanoseconds: UInt64
    /// When the most recent background deinit ended, in `CLOCK_MONOTONIC` nanoseconds
    /// (0 before the first). Read after a flush, the moment the background finished what
    /// the flush waited for, without the flushing thread's own wake-up.
    public var lastDropEndedNanoseconds: UInt64
    /// Times a drop found the queue full and the full-queue policy applied.
    public var fullQueueEvents: Int
    /// Of those, blocked drops whose timeout ran out (then deinitialised inline).
    public var blockTimeouts: Int

    /// Values queued and not yet deinitialised.
    public var pending: Int { queued - droppedInBackground }
}

// MARK: - Public API: BackgroundDropError

/// Why a dropper could not be made.
public enum BackgroundDropError: Error, Equatable, Sendable {
    /// The kernel refused to map the ring (`mmap`: address space or memory exhausted).
    case outOfMemory(SystemError)
    /// A background thread could not be started (`pthread_create`, typically `EAGAIN`);
    /// the threads already started were joined and the ring unmapped.
    case threadStart(SystemError)
}

// MARK: - Fast path: EnqueueAttempt

/// The result of one attempt to enqueue: the value comes back when it could not go in.
@usableFromInline
enum EnqueueAttempt<Value: ~Copyable>: ~Copyable {
    case queued
    case full(Value)
    case closed(Value)
}

// MARK: - Fast path: DropQueue

extension DropQueue {
    /// Moves `value` into a free slot and publishes it, or hands it back when the ring is
    /// full or closed. One compare-exchange on the enqueue position, the value's stores,
    /// one release store; then one load to see whether a background thread must be woken.
    @inlinable
    func tryEnqueue<T: ~Copyable>(_ value: consuming T) -> EnqueueAttempt<T> {
        var position = enqueuePosition.load(ordering: .relaxed)
        while true {
            if position & DropQueue.closedBit != 0 { return .closed(value) }
            let slot = slot(at: position)
            let sequence = Layout.sequence(of: slot).load(ordering: .acquiring)
            if sequence == position {
                // Sequentially consistent: a background thread that is about to sleep
                // reads the enqueue position after announcing itself; either it sees
                // this claim or this thread sees its announcement below.
                let (exchanged, original) = enqueuePosition.compareExchange(
                    expected: position, desired: position &+ 1, ordering: .sequentiallyConsistent)
                if exchanged {
                    DropQueue.store(value, in: slot)
                    Layout.sequence(of: slot).store(position &+ 1, ordering: .releasing)
                    // The chained wake: only when no background thread searches.
                    if workState.needsWake { wakeSleepingWorker() }
                    return .queued
                }
                position = original
            } else if sequence < position {
                return .full(value)
            } else {
                position = enqueuePosition.load(ordering: .relaxed)
            }
        }
    }

    /// Writes `value` and its destroy information into a claimed slot: inline when it
    /// fits, else into a fresh box whose address goes into the slot.
    @inlinable
    static func store<T: ~Copyable>(_ value: consuming T, in slot: UnsafeMutableRawPointer) {
        let typeBits = unsafeBitCast(T.self as any ~Copyable.Type, to: Int.self)
        if MemoryLayout<T>.size <= Layout.payloadByteCount && MemoryLayout<T>.alignment <= Layout.payloadAlignment {
            (slot + Layout.typeOffset).storeBytes(of: typeBits, as: Int.self)
            (slot + Layout.payloadOffset).initializeMemory(as: T.self, to: value)
        } else {
            let box = UnsafeMutablePointer<T>.allocate(capacity: 1)
            box.initialize(to: value)
            (slot + Layout.typeOffset).storeBytes(of: typeBits | boxedFlag, as: Int.self)
            (slot + Layout.payloadOffset).storeBytes(of: box, as: UnsafeMutablePointer<T>.self)
        }
    }
}

// MARK: - Slow path: BackgroundDropper

extension BackgroundDropper {
    /// A drop that found the queue full: the policy.
    @usableFromInline
    @inline(never)
    func dropWhenFull<T: ~Copyable>(_ value: consuming T) -> DropOutcome {
        queue.recordFullQueue()
        if queue.currentWorker != nil { return dropInline(value, reason: .fullOnDropThread) }
        guard case .block(let timeout) = policy else { return dropInline(value, reason: .queueFull) }
        let deadline = timeout.map { SystemInfo.deadline(after: $0) }
        var value = value
        while true {
            // Announce first, then look again: a background thread that frees a slot
            // after this look sees the announcement and wakes us.
            let key = queue.spaceEvent.prepareWait()
            if !queue.isFull {
                queue.spaceEvent.cancelWait(key)
                switch queue.tryEnqueue(value) {
                case .queued: return .queued
                case .full(let again): value = again
                case .closed(let again): return dropInline(again, reason: .afterShutdown)
                }
                continue
            }
            var remaining: UInt64? = nil
            if let deadline {
                let now = SystemInfo.monotonicNanoseconds()
                if now >= deadline {
                    queue.spaceEvent.cancelWait(key)
                    queue.recordTimeout()
                    return dropInline(value, reason: .timedOut)
                }
                remaining = deadline &- now
            }
            queue.spaceEvent.wait(key, timeoutNanoseconds: remaining)
        }
    }

    /// Deinitialises `value` here and counts it.
    @usableFromInline
    @inline(never)
    func dropInline<T: ~Copyable>(_ value: consuming T, reason: DropOutcome.InlineReason) -> DropOutcome {
        queue.recordInline(afterShutdown: reason == .afterShutdown)
        _ = consume value
        return .droppedInline(reason)
    }
}

// MARK: - Slow path: DropQueue

extension DropQueue {
    /// Whether the slot at the enqueue position is still taken (a hint).
    var isFull: Bool {
        let position = enqueuePosition.load(ordering: .sequentiallyConsistent)
        if position & DropQueue.closedBit != 0 { return false }
        // Sequentially consistent, after the caller's announcement: pairs with the
        // background thread's store that frees the slot and its look for waiters.
        return sequence(at: position).load(ordering: .sequentiallyConsistent) < position
    }

    /// Claims up to `values.count` consecutive free slots with one compare-exchange and
    /// moves that many elements (from the end of `values`) into them. Returns how many;
    /// 0 when the queue is full or closed.
    func enqueueRun<T>(from values: inout [T]) -> Int {
        while true {
            let position = enqueuePosition.load(ordering: .relaxed)
            if position & DropQueue.closedBit != 0 { return 0 }
            var count = 0
            let wanted = min(values.count, DropQueue.batchRunLimit)
            while count < wanted
                && sequence(at: position &+ count).load(ordering: .acquiring)
                    == position &+ count
            {
                count += 1
            }
            if count == 0 { return 0 }
            let (exchanged, _) = enqueuePosition.compareExchange(
                expected: position, desired: position &+ count, ordering: .sequentiallyConsistent)
            guard exchanged else { continue }
            for offset in 0..<count {
                let slot = slot(at: position &+ offset)
                DropQueue.store(values.removeLast(), in: slot)
                Layout.sequence(of: slot).store(position &+ offset &+ 1, ordering: .releasing)
            }
            // One wake at most, as for a single drop: the woken thread brings in the next
            // one when it sees the rest of the run waiting.
            if workState.needsWake { wakeSleepingWorker() }
            return count
        }
    }
}

// MARK: - Internals: DropQueue

/// The ring, its positions, its event counts, its counters and its threads, in one
/// mapping (`Layout` names every field). A handle: copying it copies the pointer.
@usableFromInline
struct DropQueue: @unchecked Sendable {
    @usableFromInline let base: UnsafeMutableRawPointer
    @usableFromInline let slots: UnsafeMutableRawPointer
    @usableFromInline let mask: Int

    /// Set in the type word when the payload is a box's address (metadata is 8-aligned).
    @usableFromInline static let boxedFlag = 1
    /// Set in the enqueue position by shutdown: no position can be claimed afterwards.
    @usableFromInline static let closedBit = 1 << 62
    /// A batch claims at most this many slots at once, so one producer does not hold a
    /// long run of claimed, unpublished slots that background threads must wait for.
    static let batchRunLimit = 64
    /// Enough for any machine this runs on; each thread costs a line and a stack.
    static let maximumThreadCount = 256
    /// 2^20 slots: 64 MiB of ring.
    static let maximumCapacity = 1 << 20
    /// A background thread reads the enqueue position (for the high-water mark) at the
    /// first value after it was idle and then at every 16th: the mark is exact to within
    /// 16 × threads, and producers keep their line to themselves.
    static let depthSampleInterval = 16
    /// Looks at an empty queue before a background thread goes to sleep: a few
    /// microseconds of PAUSEs (bounded, once per idle spell), so that a producer only a
    /// little slower than the background threads does not pay a wake-up at every drop.
    static let idleSpinLimit = 256
    /// Looks at a claimed but unpublished slot before a background thread starts sleeping
    /// between looks: the producer is between two stores, a few nanoseconds apart, unless
    /// it was preempted there.
    static let unpublishedSpinLimit = 64
    /// Then it sleeps 20 µs, doubling up to 160 µs between looks: every value queued
    /// behind the unpublished one waits as long as the worker sleeps, so the pause stays
    /// short (it was a fixed 20 µs), while a longer absence costs fewer wake-ups.
    /// (Computed: a stored `Duration` would be a lazy global.)
    static var firstUnpublishedPause: Duration { .microseconds(20) }
    static var longestUnpublishedPause: Duration { .microseconds(160) }
    /// A flusher sleeps at most this long before it looks again: another flusher that
    /// ends raises the watched position, and may raise it past ours (rare: concurrent
    /// flushes), which would otherwise cost us our wake-up.
    static let flushRecheckNanoseconds: UInt64 = 10_000_000
    /// An `async` flush polls (it must not block a thread of the concurrency pool): from
    /// 20 µs, so that a short flush ends soon, doubling up to 5 ms, so that a long one
    /// costs few wake-ups.
    static var firstAsyncFlushPause: Duration { .microseconds(20) }
    static var longestAsyncFlushPause: Duration { .milliseconds(5) }
    /// A shutdown that lost the race to a worker's own shutdown polls for that worker's
    /// end (it must not touch the memory to wake anyone): from 10 µs up to 1 ms.
    static var firstWorkerEndPause: Duration { .microseconds(10) }
    static var longestWorkerEndPause: Duration { .milliseconds(1) }

    /// In the live-workers word: the memory is freed by the last worker to end (the
    /// dropper's deinit ran on one of its own threads).
    static let freeOnExitFlag = 1 << 40
    static let liveWorkerMask = freeOnExitFlag - 1

    /// Lifecycle values.
    static let running = 0, closing = 1, stopped = 2

    @inlinable var enqueuePosition: AtomicWord { AtomicWord(at: base + Layout.enqueuePositionOffset) }
    @inlinable var dequeuePosition: AtomicWord { AtomicWord(at: base + Layout.dequeuePositionOffset) }
    @inlinable var workState: WorkState { WorkState(word: AtomicWord(at: base + Layout.workStateOffset)) }
    var spaceEvent: EventCount { EventCount(word: AtomicWord(at: base + Layout.spaceEventOffset)) }
    var progressEvent: EventCount { EventCount(word: AtomicWord(at: base + Layout.progressEventOffset)) }
    var watchedPosition: AtomicWord { AtomicWord(at: base + Layout.watchedPositionOffset) }
    var lifecycle: AtomicWord { AtomicWord(at: base + Layout.lifecycleOffset) }
    var liveWorkers: AtomicWord { AtomicWord(at: base + Layout.liveWorkersOffset) }
    var detachWorker: AtomicWord { AtomicWord(at: base + Layout.detachWorkerOffset) }
    var threadCount: Int { (base + Layout.threadCountOffset).load(as: Int.self) }
    var capacity: Int { mask + 1 }
    var producerCounters: Counters<ProducerCounter> {
        Counters(at: base + Layout.producerCountersOffset)
    }
    var threadHandles: UnsafeMutablePointer<OSThread> {
        (base + Layout.workerRecordsOffset + threadCount * Layout.workerRecordByteCount).assumingMemoryBound(
            to: OSThread.self)
    }

    /// The slot of `position`.
    @inlinable
    func slot(at position: Int) -> UnsafeMutableRawPointer {
        slots + (position & mask) &* Layout.slotByteCount
    }

    /// The sequence word of the slot of `position`.
    @inlinable
    func sequence(at position: Int) -> AtomicWord { Layout.sequence(of: slot(at: position)) }

    func worker(_ index: Int) -> WorkerRecord {
        WorkerRecord(address: base + Layout.workerRecordsOffset + index * Layout.workerRecordByteCount)
    }

    /// The mapping's size in whole pages for `threads` and `capacity` (a power of two),
    /// and where the slots start. Both are bounded (256 threads, 2^20 slots), so the
    /// roundings cannot overflow.
    static func byteCount(threads: Int, capacity: Int) -> (total: Int, slotsOffset: Int) {
        let handles = threads * MemoryLayout<OSThread>.stride
        let slotsOffset =
            Layout.workerRecordsOffset + threads * Layout.workerRecordByteCount
            + alignUp(handles, to: Layout.lineByteCount)!
        return (alignUp(slotsOffset + capacity * Layout.slotByteCount, to: SystemInfo.pageSize)!, slotsOffset)
    }

    /// Maps and initializes a queue; no thread runs yet.
    static func create(threads: Int, capacity requested: Int) throws(SystemError) -> DropQueue {
        let capacity = max(2, nextPowerOfTwo(requested) ?? maximumCapacity)
        let (total, slotsOffset) = byteCount(threads: threads, capacity: capacity)
        let base = try SystemMemory.map(byteCount: total)
        let queue = DropQueue(base: base, slots: base + slotsOffset, mask: capacity - 1)
        assert(Layout.violation() == nil, "BackgroundDrop: \(Layout.violation() ?? "")")
        assert(
            isAligned(queue.slots, to: Layout.slotByteCount),
            "BackgroundDrop: slots at \(queue.slots) are not line-aligned")
        (base + Layout.threadCountOffset).storeBytes(of: threads, as: Int.self)
        _ = Counters<ProducerCounter>(initializingAt: base + Layout.producerCountersOffset)
        queue.watchedPosition.store(Int.max, ordering: .relaxed)
        // Every thread starts out searching (it looks at the queue before it parks).
        queue.workState.word.store(threads * WorkState.searcherUnit, ordering: .relaxed)
        for position in 0..<capacity {
            // Also faults every page in now, so no drop takes a page fault later.
            _ = AtomicWord(initializingAt: queue.slot(at: position) + Layout.sequenceOffset, to: position)
        }
        for index in 0..<threads {
            queue.worker(index).initialize(queue: base, index: index)
        }
        return queue
    }

    /// Unmaps the queue. Nothing may touch it afterwards.
    func releaseMemory() {
        let (total, _) = DropQueue.byteCount(threads: threadCount, capacity: capacity)
        do {
            try SystemMemory.unmap(base, byteCount: total)
        } catch {
            assertionFailure("BackgroundDrop: cannot unmap the queue at \(base): \(error)")
        }
    }

    /// The record of the calling thread if it is one of this queue's workers.
    var currentWorker: WorkerRecord? {
        guard let address = ThreadLocalSlot.backgroundDrop.value else { return nil }
        let record = WorkerRecord(address: address)
        return record.queueBase == base ? record : nil
    }
}

// MARK: - Internals: ProducerCounter

/// Counters that producers bump on slow paths (any thread: atomic adds).
enum ProducerCounter: Int, CaseIterable {
    case fullQueueEvents, blockTimeouts, droppedInline, droppedAfterShutdown, highWaterMark
}

// MARK: - Internals: WorkerRecord

/// A worker's two lines: what it is dropping now (for flush reports) and its own
/// counters, written only by that worker; then its parked word, on a line of its own so
/// that a waker looking for a parked thread does not take the counters' line away from
/// a busy one.
struct WorkerRecord {
    let address: UnsafeMutableRawPointer

    /// Monotonic time the current drop began, 0 when idle.
    var busySince: AtomicWord { AtomicWord(at: address + Layout.busySinceOffset) }
    /// The type word of the value being dropped.
    var busyType: AtomicWord { AtomicWord(at: address + Layout.busyTypeOffset) }
    var dropped: AtomicWord { AtomicWord(at: address + Layout.droppedOffset) }
    var droppingNanoseconds: AtomicWord { AtomicWord(at: address + Layout.droppingNanosecondsOffset) }
    var highWaterMark: AtomicWord { AtomicWord(at: address + Layout.highWaterMarkOffset) }
    var queueBase: UnsafeMutableRawPointer? {
        (address + Layout.queueBaseOffset).load(as: UnsafeMutableRawPointer?.self)
    }
    var index: Int { (address + Layout.indexOffset).load(as: Int.self) }
    /// Monotonic time the last drop ended, 0 before the first.
    var lastEnded: AtomicWord { AtomicWord(at: address + Layout.lastEndedOffset) }
    /// 1 while the worker is parked (or about to be), 0 otherwise; it sleeps on this word
    /// (its own futex, so that a waker claims exactly this thread).
    var parked: AtomicWord { AtomicWord(at: address + Layout.parkedOffset) }

    func initialize(queue: UnsafeMutableRawPointer, index: Int) {
        // The five counters from `busySince` to `highWaterMark`, one word each (no array:
        // a worker's record is set up where nothing should allocate).
        for offset in stride(from: Layout.busySinceOffset, through: Layout.highWaterMarkOffset, by: 8) {
            _ = AtomicWord(initializingAt: address + offset, to: 0)
        }
        (address + Layout.queueBaseOffset).storeBytes(of: queue, as: UnsafeMutableRawPointer?.self)
        (address + Layout.indexOffset).storeBytes(of: index, as: Int.self)
        _ = AtomicWord(initializingAt: lastEnded.address, to: 0)
        _ = AtomicWord(initializingAt: parked.address, to: 0)
    }

    /// Adds to a counter only this worker writes: a relaxed load and store.
    func bump(_ word: AtomicWord, by delta: Int) {
        word.store(word.load(ordering: .relaxed) &+ delta, ordering: .relaxed)
    }
}

// MARK: - Internals: WorkState

/// The chained wake's state: how many background threads search for work and how many
/// are parked, in one word (the work line), so that a producer learns with one load
/// whether it must wake one.
///
/// A thread *searches* from the moment it finds the queue empty (or is woken) until it
/// takes a value: it is about to see any value published meanwhile. A thread running a
/// deinit does not search (the deinit may last, or block). The rule:
///
/// - A producer that published a value wakes a parked thread only when none searches.
/// - A searching thread that takes a value stops searching; if it was the last one,
///   threads are parked and values were claimed after its own, it wakes one.
/// - A waker first moves one unit from parked to searching with a compare-exchange that
///   requires no searcher: of concurrent wakers at the same edge only one succeeds.
///   Then it claims a parked thread (its `parked` word, 1 to 0) and wakes it; the
///   claimed thread starts out searching, counted already.
///
/// No wake-up is lost: a producer compare-exchanges the enqueue position and then loads
/// this word; a thread that stops searching or parks changes this word and then loads
/// the enqueue position (all sequentially consistent). Either the producer sees nobody
/// searching, or the thread sees the new position (and wakes the next thread, or does
/// not park). Counts are exact: the `parked` word decides who turns a parked thread
/// back into a searcher, the thread itself (it found work before sleeping) or a waker.
@usableFromInline
struct WorkState {
    @usableFromInline let word: AtomicWord

    /// Searching threads, in the low 32 bits (never below 0: each thread takes back only
    /// the unit it added).
    @usableFromInline static let searcherUnit = 1
    @usableFromInline static let searcherMask = (1 << 32) - 1
    /// Parked threads above. The count can dip to -1 for a moment (a waker and the
    /// parked thread itself both turned it into a searcher; the waker then gives its
    /// unit back), hence signed arithmetic on the whole word.
    @usableFromInline static let sleeperUnit = 1 << 32

    @inlinable
    init(word: AtomicWord) { self.word = word }

    /// Whether a producer that just published must wake a thread: none searches and at
    /// least one is parked. Sequentially consistent: after the producer's claim of the
    /// position, pairs with a thread's change of this word before it looks at the queue.
    @inlinable
    var needsWake: Bool {
        let state = word.load(ordering: .sequentiallyConsistent)
        return state & WorkState.searcherMask == 0 && state >= WorkState.sleeperUnit
    }
}

// MARK: - Internals: DropQueue, sleeping and waking

extension DropQueue {
    /// Wakes one parked background thread if none searches (the rule in `WorkState`).
    /// Out of line: a drop calls it once per spell of idleness at most.
    @usableFromInline
    @inline(never)
    func wakeSleepingWorker() {
        var state = workState.word.load(ordering: .sequentiallyConsistent)
        while true {
            guard state & WorkState.searcherMask == 0 && state >= WorkState.sleeperUnit else { return }
            let (exchanged, original) = workState.word.compareExchange(
                expected: state, desired: state &+ WorkState.searcherUnit &- WorkState.sleeperUnit,
                ordering: .sequentiallyConsistent)
            if exchanged { break }
            state = original
        }
        // O(threads): a wake-up costs microseconds anyway.
        for index in 0..<threadCount {
            let parked = worker(index).parked
            if parked.load(ordering: .relaxed) == 1 {
                let (claimed, _) = parked.compareExchange(expected: 1, desired: 0, ordering: .sequentiallyConsistent)
                if claimed {
                    Futex.wake(parked, count: 1)
                    return
                }
            }
        }
        // The parked thread counted found work before sleeping and counted itself as a
        // searcher: give the unit back.
        workState.word.wrappingAdd(WorkState.sleeperUnit &- WorkState.searcherUnit, ordering: .sequentiallyConsistent)
    }

    /// A searching thread took the value at `position` and stops searching. The last
    /// searcher, with threads parked and values claimed after its own, wakes one: the
    /// chain that brings every thread to a backlog without the producer paying for it.
    func stopSearching(took position: Int) {
        let before = workState.word.wrappingSubtract(WorkState.searcherUnit, ordering: .sequentiallyConsistent)
        assert(
            before & WorkState.searcherMask != 0,
            "BackgroundDrop: a searching thread stops, but the work state \(String(before, radix: 16)) counts no searcher"
        )
        guard before & WorkState.searcherMask == 1 && before >= WorkState.sleeperUnit else { return }
        // Sequentially consistent, after the change above: a producer that claimed a
        // position and then saw this thread still searching did not wake anyone.
        let end = enqueuePosition.load(ordering: .sequentiallyConsistent) & ~DropQueue.closedBit
        if end > position &+ 1 { wakeSleepingWorker() }
    }

    /// Parks the calling thread (searching, and it found the queue empty at `end` with
    /// the dequeue position at `next`) until a waker claims it, unless work arrives
    /// first. It is searching again when this returns.
    func park(_ record: WorkerRecord, end: Int, next: Int) {
        record.parked.store(1, ordering: .sequentiallyConsistent)
        workState.word.wrappingAdd(WorkState.sleeperUnit &- WorkState.searcherUnit, ordering: .sequentiallyConsistent)
        // Look again after announcing: a producer that claimed a position before the
        // change above may have seen this thread searching and not woken anyone.
        let endAgain = enqueuePosition.load(ordering: .sequentiallyConsistent)
        if endAgain != end || dequeuePosition.load(ordering: .relaxed) != next {
            let (withdrawn, _) = record.parked.compareExchange(
                expected: 1, desired: 0, ordering: .sequentiallyConsistent)
            // Lost: a waker claimed this thread meanwhile and counted it searching.
            if withdrawn {
                workState.word.wrappingAdd(
                    WorkState.searcherUnit &- WorkState.sleeperUnit, ordering: .sequentiallyConsistent)
            }
            return
        }
        while record.parked.load(ordering: .acquiring) == 1 {
            Futex.wait(record.parked, whileEqualTo: 1)
        }
    }

    /// Claims and wakes every parked thread (shutdown: they come to drain and end).
    func wakeAllWorkers() {
        for index in 0..<threadCount {
            let parked = worker(index).parked
            let (claimed, _) = parked.compareExchange(expected: 1, desired: 0, ordering: .sequentiallyConsistent)
            if claimed {
                workState.word.wrappingAdd(
                    WorkState.searcherUnit &- WorkState.sleeperUnit, ordering: .sequentiallyConsistent)
                Futex.wake(parked, count: 1)
            }
        }
    }
}

// MARK: - Internals: DropQueue, background threads

/// Deinitialises a value of type `T` at `address`: in place, or in the box whose address
/// is stored there. Called with `T` opened from the slot's type word.
func destroyValue<T: ~Copyable>(_ type: T.Type, at address: UnsafeMutableRawPointer, boxed: Bool) {
    if boxed {
        let box = address.load(as: UnsafeMutablePointer<T>.self)
        box.deinitialize(count: 1)
        box.deallocate()
    } else {
        address.assumingMemoryBound(to: T.self).deinitialize(count: 1)
    }
}

/// The type recorded in a type word.
func recordedType(_ typeBits: Int) -> any ~Copyable.Type {
    unsafeBitCast(typeBits & ~DropQueue.boxedFlag, to: (any ~Copyable.Type).self)
}

extension DropQueue {
    /// Starts every worker thread. On failure it closes the queue, joins the threads
    /// already started and marks the queue stopped before it throws; the dropper's
    /// deinit (which runs, since the dropper was fully initialized) then only unmaps it.
    func startThreads() throws(SystemError) {
        let count = threadCount
        liveWorkers.store(count, ordering: .relaxed)
        for index in 0..<count {
            do {
                let queue = self
                let thread = try OSThread.spawn { queue.runWorker(index) }
                (threadHandles + index).initialize(to: thread)
            } catch {
                liveWorkers.wrappingSubtract(count - index, ordering: .relaxed)
                lifecycle.store(DropQueue.closing, ordering: .relaxed)
                close()
                for started in 0..<index { threadHandles[started].join() }
                markStopped()
                throw error
            }
        }
    }

    /// A worker's loop: take a value, deinitialise it, free its slot; sleep when the
    /// queue is empty; end when it is closed and empty.
    func runWorker(_ index: Int) {
        let record = worker(index)
        ThreadLocalSlot.backgroundDrop.value = record.address
        // SCHED_BATCH: a drop that wakes this thread must not hand it the caller's CPU
        // (measured: with the normal policy on a busy machine, the woken worker took the
        // producer's CPU at every drop and the caller ran in lockstep with the deinits).
        // A refusal (EPERM in some containers) only leaves the normal policy.
        OSThread.useBatchSchedulingForCurrentThread()
        var polls = 0
        var unpublishedBackOff = BackOff(
            initial: DropQueue.firstUnpublishedPause, maximum: DropQueue.longestUnpublishedPause)
        var idleSpins = 0
        var untilSample = 0
        // Every worker is counted as searching from the queue's creation.
        var searching = true
        while true {
            if let position = takePublished() {
                if searching {
                    searching = false
                    stopSearching(took: position)
                }
                deinitialize(position, sampleDepth: untilSample == 0, by: record)
                untilSample = untilSample == 0 ? DropQueue.depthSampleInterval - 1 : untilSample - 1
                polls = 0
                idleSpins = 0
                continue
            }
            if !searching {
                searching = true
                workState.word.wrappingAdd(WorkState.searcherUnit, ordering: .sequentiallyConsistent)
            }
            untilSample = 0
            let end = enqueuePosition.load(ordering: .sequentiallyConsistent)
            let next = dequeuePosition.load(ordering: .relaxed)
            if end & ~DropQueue.closedBit > next {
                // Claimed by a producer, not yet published: it is between two stores, or
                // was preempted there. Spin a little, then poll without burning the CPU.
                polls += 1
                if polls < DropQueue.unpublishedSpinLimit {
                    spinLoopHint()
                } else {
                    if polls == DropQueue.unpublishedSpinLimit {
                        unpublishedBackOff = BackOff(
                            initial: DropQueue.firstUnpublishedPause, maximum: DropQueue.longestUnpublishedPause)
                    }
                    // A futex wait on the slot's sequence rather than a blind sleep: it
                    // returns at once if the value was published before it began.
                    Futex.wait(
                        sequence(at: next), whileEqualTo: next, timeoutNanoseconds: unpublishedBackOff.nextPause())
                }
                continue
            }
            if end & DropQueue.closedBit != 0 { break }
            if idleSpins < DropQueue.idleSpinLimit {
                // A producer a little slower than this thread would otherwise pay a
                // futex_wake (microseconds) for nearly every drop.
                idleSpins += 1
                spinLoopHint()
                continue
            }
            idleSpins = 0
            // Searching again once this returns: woken by a claim, or work arrived.
            park(record, end: end, next: next)
        }
        assert(
            dequeuePosition.load(ordering: .relaxed) >= enqueuePosition.load(ordering: .relaxed) & ~DropQueue.closedBit,
            "BackgroundDrop: worker \(index) ends with positions \(dequeuePosition.load(ordering: .relaxed)) to \(enqueuePosition.load(ordering: .relaxed) & ~DropQueue.closedBit) not taken"
        )
        ThreadLocalSlot.backgroundDrop.value = nil
        // The thread that closed the queue from inside a deinit joins the others, since
        // nobody can join it; then it ends detached.
        let closedByThisThread = detachWorker.load(ordering: .acquiring) == index + 1
        if closedByThisThread {
            for other in 0..<threadCount where other != index { threadHandles[other].join() }
            markStopped()
        }
        // The last access to the queue's memory, unless this thread frees it.
        let before = liveWorkers.wrappingSubtract(1, ordering: .sequentiallyConsistent)
        if before == DropQueue.freeOnExitFlag | 1 { releaseMemory() }
        if closedByThisThread { OSThread.detachCurrentThread() }
    }

    /// Claims the value published at the dequeue position, if any: its position.
    func takePublished() -> Int? {
        var position = dequeuePosition.load(ordering: .relaxed)
        while true {
            let sequence = sequence(at: position).load(ordering: .acquiring)
            if sequence == position &+ 1 {
                let (exchanged, original) = dequeuePosition.compareExchange(
                    expected: position, desired: position &+ 1, ordering: .relaxed)
                if exchanged { return position }
                position = original
            } else if sequence < position &+ 1 {
                return nil
            } else {
                position = dequeuePosition.load(ordering: .relaxed)
            }
        }
    }

    /// Deinitialises the value claimed at `position` in its slot, frees the slot and
    /// wakes whoever waits for space or for progress.
    /// With `sampleDepth`, it also reads the enqueue position for the high-water mark:
    /// not at every value, since that line is the producers' and every read of it by a
    /// background thread costs the next producer a cache miss.
    func deinitialize(_ position: Int, sampleDepth: Bool, by record: WorkerRecord) {
        let slot = slot(at: position)
        if sampleDepth {
            let waiting = enqueuePosition.load(ordering: .relaxed) & ~DropQueue.closedBit &- position
            if waiting > record.highWaterMark.load(ordering: .relaxed) {
                record.highWaterMark.store(waiting, ordering: .relaxed)
            }
        }
        assert(
            Layout.sequence(of: slot).load(ordering: .relaxed) == position &+ 1,
            "BackgroundDrop: slot \(slot) of position \(position) holds sequence \(Layout.sequence(of: slot).load(ordering: .relaxed)), not \(position + 1)"
        )
        let typeBits = (slot + Layout.typeOffset).load(as: Int.self)
        let start = SystemInfo.monotonicNanoseconds()
        record.busyType.store(typeBits, ordering: .relaxed)
        record.busySince.store(Int(start), ordering: .releasing)
        destroyValue(
            recordedType(typeBits), at: slot + Layout.payloadOffset, boxed: typeBits & DropQueue.boxedFlag != 0)
        let end = SystemInfo.monotonicNanoseconds()
        record.busySince.store(0, ordering: .releasing)
        record.lastEnded.store(Int(end), ordering: .relaxed)
        record.bump(record.dropped, by: 1)
        record.bump(record.droppingNanoseconds, by: Int(end &- start))
        // Sequentially consistent: a producer blocked on a full ring (or a flusher)
        // announces itself and then reads this word; either it sees the slot free or
        // this thread sees its announcement below.
        Layout.sequence(of: slot).store(position &+ capacity, ordering: .sequentiallyConsistent)
        if spaceEvent.hasWaiters { spaceEvent.notifyOne() }
        if progressEvent.hasWaiters && position >= watchedPosition.load(ordering: .sequentiallyConsistent) {
            progressEvent.notifyAll()
        }
    }
}

// MARK: - Internals: DropQueue, flush

extension DropQueue {
    /// The positions a flush waits for: everything below `end`; `low` is where the scan
    /// for values still undone starts (slots before `end - capacity` were reused, so
    /// their values are long gone).
    func flushTarget() -> (low: Int, end: Int) {
        let end = enqueuePosition.load(ordering: .acquiring) & ~DropQueue.closedBit
        return (max(0, end - capacity), end)
    }

    /// Whether the value at `position` has been deinitialised: its slot was freed for
    /// the next round (or the round after).
    /// Sequentially consistent: a flusher looks after announcing itself and lowering the
    /// watched position; the background thread stores the sequence and then looks at both.
    func isDone(_ position: Int) -> Bool {
        sequence(at: position).load(ordering: .sequentiallyConsistent) >= position &+ capacity
    }

    /// Whether every position in `low..<end` is done, advancing `low` past done ones.
    /// Looks at the last position first: values finish roughly in order, so one look
    /// at it usually settles a pending flush.
    func isFlushed(upTo end: Int, low: inout Int) -> Bool {
        if low >= end { return true }
        if !isDone(end - 1) { return false }
        while low < end && isDone(low) { low += 1 }
        return low >= end
    }

    /// Waits until every value queued before the call is deinitialised, or `deadline`
    /// passes; returns nil or the timeout report.
    func flush(deadline: UInt64?) -> FlushTimeout? {
        precondition(
            currentWorker == nil,
            "BackgroundDropper.flush called from a deinit running on one of its own threads: it would wait for itself")
        let target = flushTarget()
        var low = target.low
        let start = SystemInfo.monotonicNanoseconds()
        var watched: Int? = nil
        defer {
            // Raise the watch again if no other flusher lowered it below ours since.
            if let watched {
                _ = watchedPosition.compareExchange(expected: watched, desired: Int.max, ordering: .relaxed)
            }
        }
        while true {
            let key = progressEvent.prepareWait()
            if isFlushed(upTo: target.end, low: &low) {
                progressEvent.cancelWait(key)
                return nil
            }
            // Ask to be woken when the last value waited for finishes, or, once it has,
            // the first one still undone.
            let watch = isDone(target.end - 1) ? low : target.end - 1
            // Several flushers: the lowest watch wins, and the others re-check when woken.
            // Sequentially consistent: the background thread stores the slot's sequence
            // and then reads this word; the look at the slot below follows this change.
            watchedPosition.lower(to: watch, ordering: .sequentiallyConsistent)
            watched = watch
            if isDone(watch) {
                progressEvent.cancelWait(key)
                continue
            }
            var remaining = DropQueue.flushRecheckNanoseconds
            if let deadline {
                let now = SystemInfo.monotonicNanoseconds()
                if now >= deadline {
                    progressEvent.cancelWait(key)
                    return timeoutReport(upTo: target.end, low: low, olderThan: now &- start)
                }
                remaining = min(remaining, deadline &- now)
            }
            progressEvent.wait(key, timeoutNanoseconds: remaining)
        }
    }

    /// The `async` flush: polls with a back-off (it must not block a thread of the
    /// concurrency pool) until every value queued before the call is deinitialised; nil,
    /// or the report when `timeoutNanoseconds` (nil: no limit) ran out or the task was
    /// cancelled.
    func flushAsync(timeoutNanoseconds timeout: UInt64?) async -> FlushTimeout? {
        let start = SystemInfo.monotonicNanoseconds()
        let target = flushTarget()
        var low = target.low
        var backOff = BackOff(initial: DropQueue.firstAsyncFlushPause, maximum: DropQueue.longestAsyncFlushPause)
        while !isFlushed(upTo: target.end, low: &low) {
            let waited = SystemInfo.monotonicNanoseconds() &- start
            if let timeout, waited >= timeout {
                return timeoutReport(upTo: target.end, low: low, olderThan: timeout)
            }
            if Task.isCancelled {
                return timeoutReport(upTo: target.end, low: low, olderThan: min(waited, timeout ?? waited))
            }
            // The last pause is cut to the time left, so the timeout is kept.
            let pause = backOff.nextPause()
            try? await Task.sleep(nanoseconds: timeout.map { min(pause, $0 &- waited) } ?? pause)
        }
        return nil
    }

    /// What a flush that timed out reports: values still pending below `end`, and the
    /// deinits running for at least `olderThan` nanoseconds.
    func timeoutReport(upTo end: Int, low: Int, olderThan: UInt64) -> FlushTimeout {
        let pending = (low..<end).count { !isDone($0) }
        let now = SystemInfo.monotonicNanoseconds()
        var blocked: [BlockedDrop] = []
        for index in 0..<threadCount {
            let record = worker(index)
            let since = UInt64(record.busySince.load(ordering: .acquiring))
            guard since != 0, now &- since >= olderThan else { continue }
            let type = recordedType(record.busyType.load(ordering: .relaxed))
            blocked.append(
                BlockedDrop(thread: index, typeName: String(describing: type), duration: .nanoseconds(now &- since)))
        }
        return FlushTimeout(pending: pending, blockedDrops: blocked)
    }
}

// MARK: - Internals: DropQueue, shutdown and statistics

extension DropQueue {
    /// Whether the ring was closed.
    var isClosed: Bool { enqueuePosition.load(ordering: .acquiring) & DropQueue.closedBit != 0 }

    /// Closes the ring (no position can be claimed afterwards) and wakes every sleeper:
    /// workers come to drain and end, blocked producers come to drop inline.
    func close() {
        enqueuePosition.bitwiseOr(DropQueue.closedBit, ordering: .sequentiallyConsistent)
        wakeAllWorkers()
        spaceEvent.notifyAll()
    }

    func markStopped() {
        lifecycle.store(DropQueue.stopped, ordering: .releasing)
        Futex.wake(lifecycle)
    }

    /// Shutdown from a thread that is not one of the workers: the first caller closes
    /// and joins; others wait for it. Either way, returns when every worker has ended.
    func shutdown() {
        let (won, _) = lifecycle.compareExchange(
            expected: DropQueue.running, desired: DropQueue.closing, ordering: .acquiringAndReleasing)
        if won {
            close()
            for index in 0..<threadCount { threadHandles[index].join() }
            markStopped()
            // A natural checkpoint: every thread has ended, nothing can be claimed.
            assert(integrityViolation() == nil, "BackgroundDrop: at shutdown, \(integrityViolation() ?? "")")
            return
        }
        while true {
            let state = lifecycle.load(ordering: .acquiring)
            if state == DropQueue.stopped { break }
            Futex.wait(lifecycle, whileEqualTo: state)
        }
        // A worker that shut the queue down ends (detached) after its current value:
        // poll for it, since it must not touch this memory to wake anyone.
        if liveWorkers.load(ordering: .acquiring) & DropQueue.liveWorkerMask != 0 {
            var backOff = BackOff(initial: DropQueue.firstWorkerEndPause, maximum: DropQueue.longestWorkerEndPause)
            _ = backOff.poll(until: .max) { liveWorkers.load(ordering: .acquiring) & DropQueue.liveWorkerMask == 0 }
        }
    }

    /// Shutdown from inside a deinit that worker `record` runs: close the queue and
    /// return. The worker drains what is left after its current value, joins the other
    /// workers, and ends detached (freeing the memory if the dropper is gone).
    func shutdownFromWorker(_ record: WorkerRecord, freeMemoryWhenDone: Bool) {
        if freeMemoryWhenDone {
            liveWorkers.bitwiseOr(DropQueue.freeOnExitFlag, ordering: .sequentiallyConsistent)
        }
        let (won, _) = lifecycle.compareExchange(
            expected: DropQueue.running, desired: DropQueue.closing, ordering: .acquiringAndReleasing)
        // Lost: a shutdown on another thread joins this one; or a worker's shutdown
        // already ran, and that worker ends detached.
        guard won else { return }
        detachWorker.store(record.index + 1, ordering: .releasing)
        close()
    }

    /// Producer-side counting (slow paths only).
    func recordFullQueue() {
        producerCounters.add(1, to: .fullQueueEvents)
        producerCounters.raise(.highWaterMark, to: capacity)
    }

    func recordTimeout() { producerCounters.add(1, to: .blockTimeouts) }

    func recordInline(afterShutdown: Bool) {
        producerCounters.add(1, to: .droppedInline)
        if afterShutdown { producerCounters.add(1, to: .droppedAfterShutdown) }
    }

    func statistics() -> BackgroundDropStatistics {
        var dropped = 0
        var nanoseconds = 0
        var highWater = producerCounters.value(of: .highWaterMark)
        var lastEnded = 0
        for index in 0..<threadCount {
            let record = worker(index)
            dropped += record.dropped.load(ordering: .relaxed)
            nanoseconds += record.droppingNanoseconds.load(ordering: .relaxed)
            highWater = max(highWater, record.highWaterMark.load(ordering: .relaxed))
            lastEnded = max(lastEnded, record.lastEnded.load(ordering: .relaxed))
        }
        return BackgroundDropStatistics(
            queued: enqueuePosition.load(ordering: .relaxed) & ~DropQueue.closedBit,
            droppedInBackground: dropped,
            droppedInline: producerCounters.value(of: .droppedInline),
            droppedAfterShutdown: producerCounters.value(of: .droppedAfterShutdown),
            queueHighWaterMark: highWater,
            droppingNanoseconds: UInt64(nanoseconds),
            lastDropEndedNanoseconds: UInt64(lastEnded),
            fullQueueEvents: producerCounters.value(of: .fullQueueEvents),
            blockTimeouts: producerCounters.value(of: .blockTimeouts))
    }
}

// MARK: - Layout

/// The layout of a dropper's mapping, in address order: the header's lines, the workers'
/// records, the threads' handles, the slots. Each part starts a 64-byte line, so that
/// producers, background threads and sleepers never share a written line. ``violation()``
/// pins it.
///
/// | offset | what |
/// |---|---|
/// | 0 | enqueue position (bit 62: closed) |
/// | 64 | dequeue position |
/// | 128 | work state: searching and parked background threads (`WorkState`) |
/// | 192 | space event: producers blocked on a full ring sleep here |
/// | 256 | progress event: flushers sleep here; + 8: the position they watch |
/// | 320 | lifecycle, live workers (bit 40: free on exit), the worker that closed the queue, thread count |
/// | 384 | producer-side counters (`ProducerCounter`) |
/// | 512 | two lines per worker (`WorkerRecord`: its counters; its parked word, its futex) |
/// | then | the threads' handles, rounded to lines |
/// | then | `capacity` slots of 64 bytes: sequence, type word, 48-byte payload |
@usableFromInline
enum Layout {
    /// A cache line: the unit every part of the mapping starts on.
    static let lineByteCount = 64

    // The header.

    /// The enqueue position, the producers' compare-exchange (`DropQueue.closedBit`: closed).
    @inlinable static var enqueuePositionOffset: Int { 0 }
    /// The dequeue position, the background threads' compare-exchange.
    @inlinable static var dequeuePositionOffset: Int { 64 }
    /// The chained wake's word (`WorkState`): read by every drop, so on a line of its own.
    @inlinable static var workStateOffset: Int { 128 }
    /// The space event (AllocCore's `EventCount`): producers blocked on a full ring sleep here.
    static let spaceEventOffset = 192
    /// The progress event: flushers sleep here.
    static let progressEventOffset = 256
    /// The position whose completion wakes flushers (`Int.max`: none), on the flushers' line.
    static let watchedPositionOffset = 264
    /// The lifecycle: `DropQueue.running`, `.closing`, `.stopped` (a futex for shutdowns).
    static let lifecycleOffset = 320
    /// Workers not yet ended, with `DropQueue.freeOnExitFlag`.
    static let liveWorkersOffset = 328
    /// 1 + the index of the worker that closed the queue from inside a deinit, else 0.
    static let detachWorkerOffset = 336
    /// The number of background threads, written once.
    static let threadCountOffset = 344
    /// The producers' counters (`Counters<ProducerCounter>`), two lines.
    static let producerCountersOffset = 384
    /// The workers' records, `workerRecordByteCount` each; the threads' handles follow.
    static let workerRecordsOffset = 512

    // A worker's record (`WorkerRecord`): a line that only the worker writes, then its
    // parked word on a line of its own (wakers scan it).

    /// Monotonic nanoseconds when the current deinit began, 0 when idle.
    static let busySinceOffset = 0
    /// The type word of the value being deinitialised.
    static let busyTypeOffset = 8
    /// Values this worker deinitialised.
    static let droppedOffset = 16
    /// Nanoseconds this worker spent in deinits.
    static let droppingNanosecondsOffset = 24
    /// The most values waiting that this worker saw.
    static let highWaterMarkOffset = 32
    /// The queue's base address: tells a worker's thread-local record from another queue's.
    static let queueBaseOffset = 40
    /// The worker's index, 0..<threads.
    static let indexOffset = 48
    /// Monotonic nanoseconds when the last deinit ended, 0 before the first.
    static let lastEndedOffset = 56
    /// 1 while the worker is parked or about to be, its futex.
    static let parkedOffset = 64
    /// Bytes of a record: two lines.
    static let workerRecordByteCount = 128

    // A slot: one line.

    /// The sequence word: `p` free for position `p`, `p + 1` published, `p + capacity` done.
    @inlinable static var sequenceOffset: Int { 0 }
    /// The value's type (and `DropQueue.boxedFlag`).
    @inlinable static var typeOffset: Int { 8 }
    /// The value itself, or its box's address.
    @inlinable static var payloadOffset: Int { 16 }
    /// The inline payload: the rest of the line. An existential's inline buffer is 24
    /// bytes; 48 holds a whole `any P` (40 bytes: buffer, type, witness table), or a
    /// string, an array and a dictionary side by side (16 + 8 + 8).
    @usableFromInline static let payloadByteCount = 48
    /// Payloads start 16 bytes into a 64-aligned slot.
    @usableFromInline static let payloadAlignment = 16
    /// Bytes of a slot: one cache line, so neighbouring slots never share a line.
    @usableFromInline static let slotByteCount = 64

    /// The sequence word of `slot`.
    @inlinable
    static func sequence(of slot: UnsafeMutableRawPointer) -> AtomicWord { AtomicWord(at: slot + sequenceOffset) }

    /// What is wrong with the layout above, or nil, as AllocCore's `LayoutCheck` finds it:
    /// each part's fields in address order, word-aligned and not overlapping; the header's
    /// parts on lines of their own (each part's first field 64-aligned); the header and a
    /// record whole lines (the part after each, declared, 64-aligned); a record's parked
    /// word alone on its line (64-aligned, and the next record a line on); the payload
    /// aligned and filling the slot, a slot one line; a thread handle no more aligned than
    /// a line. Run at every queue's creation in debug builds and by the integrity walker.
    static func violation() -> String? {
        let word = MemoryLayout<Int>.size
        let line = lineByteCount
        var header = LayoutCheck("header")
        header.field("enqueue position", at: enqueuePositionOffset, size: word, alignment: line)
        header.field("dequeue position", at: dequeuePositionOffset, size: word, alignment: line)
        header.field("work state", at: workStateOffset, size: word, alignment: line)
        header.field("space event", at: spaceEventOffset, size: word, alignment: line)
        header.field("progress event", at: progressEventOffset, size: word, alignment: line)
        header.field("watched position", at: watchedPositionOffset, size: word)
        header.field("lifecycle", at: lifecycleOffset, size: word, alignment: line)
        header.field("live workers", at: liveWorkersOffset, size: word)
        header.field("detach worker", at: detachWorkerOffset, size: word)
        header.field("thread count", at: threadCountOffset, size: word)
        header.field(
            "producer counters", at: producerCountersOffset, size: Counters<ProducerCounter>.byteCount,
            alignment: line)
        header.field("worker records", at: workerRecordsOffset, size: 0, alignment: line)
        var record = LayoutCheck("worker record")
        record.field("busy since", at: busySinceOffset, size: word)
        record.field("busy type", at: busyTypeOffset, size: word)
        record.field("dropped", at: droppedOffset, size: word)
        record.field("dropping ns", at: droppingNanosecondsOffset, size: word)
        record.field("high-water mark", at: highWaterMarkOffset, size: word)
        record.field("queue base", at: queueBaseOffset, size: word)
        record.field("index", at: indexOffset, size: word)
        record.field("last ended", at: lastEndedOffset, size: word)
        record.field("parked", at: parkedOffset, size: word, alignment: line)
        record.field("next record", at: workerRecordByteCount, size: 0, alignment: line)
        var slot = LayoutCheck("slot")
        slot.field("sequence", at: sequenceOffset, size: word)
        slot.field("type", at: typeOffset, size: word)
        slot.field("payload", at: payloadOffset, size: payloadByteCount, alignment: payloadAlignment)
        let slotIsOneLine = slotByteCount == line && MemoryLayout<OSThread>.alignment <= line
        return header.result(within: workerRecordsOffset) ?? record.result(within: workerRecordByteCount)
            ?? slot.result(filling: slotByteCount)
            ?? (slotIsOneLine ? nil : "a slot is not one line, or a thread handle is aligned past a line")
    }
}

// MARK: - Integrity walker

extension DropQueue {
    /// The first broken invariant of the queue, described, or nil (spec section 4; see
    /// ``BackgroundDropper/integrityViolation()``). Background threads may run meanwhile;
    /// no producer may be between its claim and its publication.
    func integrityViolation() -> String? {
        if let layout = Layout.violation() { return "the layout: \(layout)" }
        let threads = threadCount
        // The dequeue position first: background threads only raise it, so every
        // position below it was taken before the slots are read.
        let taken = dequeuePosition.load(ordering: .acquiring)
        let end = enqueuePosition.load(ordering: .acquiring) & ~DropQueue.closedBit
        if taken > end { return "the dequeue position \(taken) is past the enqueue position \(end)" }
        if end - taken > capacity { return "\(end - taken) values wait in \(capacity) slots" }
        var running = 0
        for index in 0..<capacity {
            // The position this slot serves next, and the one it served before (negative:
            // never used). The slot is free for `next` (the value before is done), or
            // still holds the published value of `previous`.
            let next = end + ((index - end) & mask)
            let previous = next - capacity
            let sequence = sequence(at: next).load(ordering: .acquiring)
            if sequence == next { continue }
            guard previous >= 0 && sequence == previous + 1 else {
                return
                    "slot \(index) holds sequence \(sequence), neither \(next) (free) nor \(previous + 1) (published)"
            }
            if previous < taken { running += 1 }
        }
        if running > threads { return "\(running) values are being deinitialised by \(threads) threads" }
        let state = workState.word.load(ordering: .acquiring)
        let searching = state & WorkState.searcherMask
        let parked = state >> 32
        if parked < -1 || searching + parked > threads {
            return "the work state counts \(searching) searching and \(parked) parked of \(threads) threads"
        }
        let lifecycle = lifecycle.load(ordering: .acquiring)
        let live = liveWorkers.load(ordering: .acquiring) & DropQueue.liveWorkerMask
        let detach = detachWorker.load(ordering: .acquiring)
        if !(DropQueue.running...DropQueue.stopped).contains(lifecycle) || live > threads
            || !(0...threads).contains(detach)
        {
            return "lifecycle \(lifecycle), \(live) live workers, detach worker \(detach) for \(threads) threads"
        }
        // Each pair read in the order producers write it in reverse: a later count never
        // exceeds an earlier one's partner.
        let afterShutdown = producerCounters.value(of: .droppedAfterShutdown)
        let timeouts = producerCounters.value(of: .blockTimeouts)
        if afterShutdown > producerCounters.value(of: .droppedInline)
            || timeouts > producerCounters.value(of: .fullQueueEvents)
            || producerCounters.value(of: .highWaterMark) > capacity
        {
            return "the producer counters disagree: \(statistics())"
        }
        if watchedPosition.load(ordering: .relaxed) < 0 { return "the watched position is negative" }
        var dropped = 0
        for index in 0..<threads {
            let record = worker(index)
            if record.queueBase != base || record.index != index {
                return
                    "worker \(index)'s record names queue \(String(describing: record.queueBase)) and index \(record.index)"
            }
            let parkedWord = record.parked.load(ordering: .relaxed)
            if parkedWord != 0 && parkedWord != 1 { return "worker \(index)'s parked word is \(parkedWord)" }
            if record.highWaterMark.load(ordering: .relaxed) > capacity {
                return "worker \(index)'s high-water mark is above the capacity \(capacity)"
            }
            dropped += record.dropped.load(ordering: .relaxed)
        }
        let takenNow = dequeuePosition.load(ordering: .acquiring)
        if dropped > takenNow { return "\(dropped) values deinitialised, but only \(takenNow) taken" }
        return nil
    }
}
