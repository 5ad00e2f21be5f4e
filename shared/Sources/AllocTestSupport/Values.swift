// Values for tests: a tally of deinits (per id, with their order and threads), objects and
// non-copyable tokens that report to it, and unwrapping optionals that `#require` cannot
// take (non-copyable ones, or the result of a mutating call on a non-copyable receiver).

import AllocCore
import Synchronization
import Testing

/// Counts deinits per value id, atomically (values may die on any thread); records their
/// order and threads when asked to, and the most values alive at once.
///
/// The lock is AllocCore's `SpinLock`, inlined into the test module, so the thread
/// sanitizer sees what orders the records (it would not see inside `Synchronization.Mutex`).
public final class DeinitTally: @unchecked Sendable {
    /// Ids run from 0 to `capacity - 1`.
    public let capacity: Int
    let counts: UnsafeMutablePointer<Atomic<Int>>
    let madeCount = Atomic<Int>(0)
    let diedCount = Atomic<Int>(0)
    let peak = Atomic<Int>(0)
    let recordsOrder: Bool
    let lock = SpinLock()
    var orderRecorded: [Int] = []
    var threadsRecorded: Set<Int> = []

    /// A tally of ids `0..<capacity`; with `recordsOrder`, the order and threads of deinits
    /// are kept too (a lock per deinit).
    public init(capacity: Int, recordsOrder: Bool = false) {
        self.capacity = capacity
        self.recordsOrder = recordsOrder
        counts = .allocate(capacity: capacity)
        for index in 0..<capacity { (counts + index).initialize(to: Atomic(0)) }
    }

    deinit {
        counts.deinitialize(count: capacity)
        counts.deallocate()
    }

    /// Records that value `id` was made.
    public func made(_ id: Int) {
        precondition(id >= 0 && id < capacity, "DeinitTally: id \(id) is not in 0..<\(capacity)")
        let alive = madeCount.add(1, ordering: .relaxed).newValue - diedCount.load(ordering: .relaxed)
        var seen = peak.load(ordering: .relaxed)
        while alive > seen {
            let (exchanged, original) = peak.compareExchange(expected: seen, desired: alive, ordering: .relaxed)
            if exchanged { break }
            seen = original
        }
    }

    /// Records that value `id` was deinitialized, on the calling thread.
    public func died(_ id: Int) {
        precondition(id >= 0 && id < capacity, "DeinitTally: id \(id) is not in 0..<\(capacity)")
        counts[id].add(1, ordering: .relaxed)
        diedCount.add(1, ordering: .releasing)
        if recordsOrder {
            let thread = currentThreadID()
            lock.withLock {
                orderRecorded.append(id)
                threadsRecorded.insert(thread)
            }
        }
    }

    /// How many times value `id` was deinitialized.
    public func count(_ id: Int) -> Int { counts[id].load(ordering: .acquiring) }
    /// How many values were made.
    public var made: Int { madeCount.load(ordering: .acquiring) }
    /// How many deinits ran.
    public var died: Int { diedCount.load(ordering: .acquiring) }
    /// The most values alive at once (made, not yet deinitialized).
    public var peakAlive: Int { peak.load(ordering: .acquiring) }
    /// The ids in the order their deinits ran (empty unless `recordsOrder`).
    public var order: [Int] { lock.withLock { orderRecorded } }
    /// The threads (`currentThreadID()`) that ran deinits (empty unless `recordsOrder`).
    public var threads: Set<Int> { lock.withLock { threadsRecorded } }

    /// The ids in `range` whose deinit count is not exactly `expected`, as a short report
    /// (the first five and how many in all); empty when every count is right.
    public func wrongCounts(_ range: Range<Int>, expected: Int = 1) -> String {
        let wrong = range.filter { count($0) != expected }
        if wrong.isEmpty { return "" }
        let first = wrong.prefix(5).map { "id \($0): \(count($0))" }.joined(separator: ", ")
        return "\(wrong.count) ids deinitialized other than \(expected) times: \(first)"
    }
}

/// A class instance that reports its deinit to a tally.
public final class TrackedObject: @unchecked Sendable {
    public let id: Int
    public let tally: DeinitTally
    /// Objects this one keeps alive (a tree, for tests that release a whole structure).
    public var children: [TrackedObject] = []

    public init(_ id: Int, _ tally: DeinitTally) {
        self.id = id
        self.tally = tally
        tally.made(id)
    }

    deinit { tally.died(id) }
}

/// A non-copyable struct that reports its deinit to a tally.
public struct TrackedToken: ~Copyable, Sendable {
    public var id: Int
    public let tally: DeinitTally

    public init(_ id: Int, _ tally: DeinitTally) {
        self.id = id
        self.tally = tally
        tally.made(id)
    }

    deinit { tally.died(id) }
}

/// The value of an optional, or a recorded failure and a thrown error when it is nil.
/// Takes non-copyable values (which `#require` cannot) and the result of a mutating call
/// on a non-copyable receiver (which the macros cannot take apart).
public func required<Value: ~Copyable>(
    _ value: consuming Value?, _ what: @autoclosure () -> String = "a value",
    sourceLocation: SourceLocation = #_sourceLocation
) throws -> Value {
    switch consume value {
    case .some(let unwrapped): return unwrapped
    case .none:
        Issue.record("expected \(what()), got nil", sourceLocation: sourceLocation)
        throw MissingValue()
    }
}

/// What ``required(_:_:sourceLocation:)`` throws for nil, and what a helper throws after it
/// recorded why it cannot go on: the failure is already recorded.
public struct MissingValue: Error {
    public init() {}
}

/// Whether a non-copyable optional is nil (`#expect(x == nil)` takes copyable values only).
public func isNil<Value: ~Copyable>(_ value: borrowing Value?) -> Bool {
    switch value {
    case .none: return true
    case .some: return false
    }
}
