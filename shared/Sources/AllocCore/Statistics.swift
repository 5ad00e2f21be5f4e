// Statistics plumbing: counters that a hot path bumps cheaply and any thread reads.

import Synchronization

/// A fixed set of counters named by `Key`, in memory that the caller provides (a header
/// inside a mapped span, a per-thread cache) or in a fresh allocation.
///
/// Two ways to count, chosen per counter by who writes it:
/// - ``add(_:to:)`` from any thread: an atomic add (about 8 ns here).
/// - ``addFromOwner(_:to:)`` when only one thread ever writes this block (a per-thread
///   cache's counters): a relaxed load and store, no locked instruction (well under 1 ns).
///
/// Readers on any thread get each counter as a single untorn word (``value(of:)``,
/// ``snapshot()``); counters read one after another are not one atomic picture.
///
/// ```swift
/// enum Event: Int, CaseIterable { case allocations, frees }
/// let counters = Counters<Event>.allocate()
/// counters.addFromOwner(1, to: .allocations)
/// counters.value(of: .allocations)   // 1
/// ```
public struct Counters<Key: RawRepresentable & CaseIterable>: @unchecked Sendable where Key.RawValue == Int {
    @usableFromInline let base: UnsafeMutablePointer<Atomic<Int>>

    /// The bytes a block for `Key` needs (8-aligned).
    @inlinable
    public static var byteCount: Int { Key.allCases.count * MemoryLayout<Int>.stride }

    /// Zeroes a block at `address` (`byteCount` bytes, 8-aligned) and returns it.
    ///
    /// `Key`'s raw values must be 0, 1, 2... in `allCases` order (checked here, once), since
    /// a key's raw value is its counter's index.
    public init(initializingAt address: UnsafeMutableRawPointer) {
        assert(isAligned(address, to: 8), "Counters at \(address) are not 8-byte aligned")
        precondition(
            Key.allCases.enumerated().allSatisfy { $0.offset == $0.element.rawValue },
            "the raw values of \(Key.self) must be 0, 1, 2... in declaration order")
        let count = Key.allCases.count
        base = address.bindMemory(to: Atomic<Int>.self, capacity: count)
        for index in 0..<count { (base + index).initialize(to: Atomic(0)) }
    }

    /// A handle to a block that was already initialized, or to zero-filled memory (fresh
    /// pages from the kernel: a zero word is a zero counter). Costs nothing and calls no
    /// runtime function, so a malloc implementation may use it anywhere; the set-up with
    /// ``init(initializingAt:)`` asks the runtime for `Key.allCases`, which allocates.
    @inlinable
    public init(at address: UnsafeMutableRawPointer) {
        base = address.assumingMemoryBound(to: Atomic<Int>.self)
    }

    /// A zeroed block in memory of its own, which lives until ``deallocate()``.
    public static func allocate() -> Counters {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 8), alignment: 8)
        return Counters(initializingAt: memory)
    }

    /// Frees a block made by ``allocate()``.
    public func deallocate() {
        UnsafeMutableRawPointer(base).deallocate()
    }

    /// The block's address.
    @inlinable
    public var address: UnsafeMutableRawPointer { UnsafeMutableRawPointer(base) }

    @inlinable
    func counter(_ key: Key) -> UnsafeMutablePointer<Atomic<Int>> {
        base + key.rawValue
    }

    /// Adds `delta` to a counter that several threads may write.
    @inlinable
    public func add(_ delta: Int, to key: Key) {
        counter(key).pointee.wrappingAdd(delta, ordering: .relaxed)
    }

    /// Adds `delta` to a counter that only the calling thread writes (readers are fine).
    @inlinable
    public func addFromOwner(_ delta: Int, to key: Key) {
        let counter = counter(key)
        counter.pointee.store(counter.pointee.load(ordering: .relaxed) &+ delta, ordering: .relaxed)
    }

    /// Raises a counter to `candidate` if it is lower: a high-water mark that several
    /// threads may write.
    @inlinable
    public func raise(_ key: Key, to candidate: Int) {
        AtomicWord.raise(counter(key).pointee, to: candidate, ordering: .relaxed)
    }

    /// The counter's current value.
    @inlinable
    public func value(of key: Key) -> Int {
        counter(key).pointee.load(ordering: .relaxed)
    }

    /// Every counter's value, indexed by key.
    public func snapshot() -> CounterSnapshot<Key> {
        CounterSnapshot(values: Key.allCases.map { value(of: $0) })
    }
}

/// The values of a ``Counters`` block at one moment; add snapshots of several blocks
/// (per-thread caches) with `+`.
public struct CounterSnapshot<Key: RawRepresentable & CaseIterable>: Sendable, Equatable where Key.RawValue == Int {
    /// One value per key, at the key's raw value.
    public var values: [Int]

    public init(values: [Int]) {
        precondition(values.count == Key.allCases.count, "a snapshot needs one value per key")
        self.values = values
    }

    /// All zero.
    public static var zero: CounterSnapshot { CounterSnapshot(values: Array(repeating: 0, count: Key.allCases.count)) }

    public subscript(key: Key) -> Int {
        get { values[key.rawValue] }
        set { values[key.rawValue] = newValue }
    }

    public static func + (lhs: CounterSnapshot, rhs: CounterSnapshot) -> CounterSnapshot {
        CounterSnapshot(values: zip(lhs.values, rhs.values).map { $0 &+ $1 })
    }
}

/// Process-wide counters of the address space and pages AllocCore got from the kernel and
/// gave back. Read them with ``value(of:)`` or ``snapshot()``.
public struct SystemMemoryStatistics: ~Copyable, Sendable {
    public enum Key: Int, CaseIterable, Sendable {
        case mapCalls, mappedBytes, unmapCalls, unmappedBytes, adviseCalls, advisedBytes
    }

    // Plain atomics in a global `let`: no allocation, usable before any initializer ran.
    let mapCalls = Atomic<Int>(0), mappedBytes = Atomic<Int>(0)
    let unmapCalls = Atomic<Int>(0), unmappedBytes = Atomic<Int>(0)
    let adviseCalls = Atomic<Int>(0), advisedBytes = Atomic<Int>(0)

    init() {}

    func withCounter<Result>(_ key: Key, _ body: (borrowing Atomic<Int>) -> Result) -> Result {
        switch key {
        case .mapCalls: body(mapCalls)
        case .mappedBytes: body(mappedBytes)
        case .unmapCalls: body(unmapCalls)
        case .unmappedBytes: body(unmappedBytes)
        case .adviseCalls: body(adviseCalls)
        case .advisedBytes: body(advisedBytes)
        }
    }

    func record(_ calls: Key, _ bytes: Key, _ byteCount: Int) {
        _ = withCounter(calls) { $0.wrappingAdd(1, ordering: .relaxed) }
        _ = withCounter(bytes) { $0.wrappingAdd(byteCount, ordering: .relaxed) }
    }

    /// The counter's current value.
    public func value(of key: Key) -> Int { withCounter(key) { $0.load(ordering: .relaxed) } }

    /// Every counter at once (each read separately).
    public func snapshot() -> CounterSnapshot<Key> {
        CounterSnapshot(values: Key.allCases.map { value(of: $0) })
    }

    /// Bytes mapped and not yet unmapped (advised-away pages still count: they stay mapped).
    public var liveMappedBytes: Int { value(of: .mappedBytes) &- value(of: .unmappedBytes) }
}
