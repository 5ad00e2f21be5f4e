// Atomics on raw memory: a word, a 16-byte pair, and the two lock-free lists allocators
// build from them (an ABA-safe stack and a many-producers push list drained all at once).
//
// Each type here is a handle: a pointer to memory that the caller owns (a slab header,
// a page it mapped). The handle is trivially copyable and costs nothing to pass around;
// the memory it points at must stay mapped for as long as any handle is used.
//
// `Synchronization` requires orderings known at compile time. Methods that take an
// ordering are `@_transparent` with the standard library's constant-orderings semantics
// (as swift-atomics does), so a literal ordering at the call site reaches the atomic.

import Synchronization

/// A machine word at a raw address, operated on atomically with explicit orderings.
///
/// Use it for words that live inside memory you manage yourself (headers in mmap'd
/// spans, slots in a ring), where `Atomic<Int>` cannot be a stored property.
///
/// ```swift
/// let word = AtomicWord(initializingAt: header, to: 0)
/// word.wrappingAdd(1, ordering: .relaxed)
/// let seen = AtomicWord(at: header).load(ordering: .acquiring)
/// ```
///
/// The address must be 8-byte aligned (checked in debug builds).
public struct AtomicWord: @unchecked Sendable {
    @usableFromInline let storage: UnsafeMutablePointer<Atomic<Int>>

    /// Initializes the word at `address` to `value` and returns a handle to it. Call it
    /// once, before any other thread can see the address.
    @inlinable
    public init(initializingAt address: UnsafeMutableRawPointer, to value: Int) {
        assert(
            Int(bitPattern: address) & (MemoryLayout<Int>.alignment - 1) == 0,
            "AtomicWord at \(address) is not 8-byte aligned")
        storage = address.bindMemory(to: Atomic<Int>.self, capacity: 1)
        storage.initialize(to: Atomic(value))
    }

    /// A handle to the word at `address`: one initialized with `init(initializingAt:to:)`,
    /// or any word of plain memory that is only ever accessed atomically (an `Atomic<Int>`
    /// is a trivial type, so an atomic store is as good as an initialization; memory that
    /// one thread writes plainly while another reads it atomically is a data race).
    @inlinable
    public init(at address: UnsafeMutableRawPointer) {
        assert(
            Int(bitPattern: address) & (MemoryLayout<Int>.alignment - 1) == 0,
            "AtomicWord at \(address) is not 8-byte aligned")
        storage = address.bindMemory(to: Atomic<Int>.self, capacity: 1)
    }

    /// The word's address.
    @inlinable
    public var address: UnsafeMutableRawPointer { UnsafeMutableRawPointer(storage) }

    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    public func load(ordering: AtomicLoadOrdering) -> Int {
        storage.pointee.load(ordering: ordering)
    }

    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    public func store(_ value: Int, ordering: AtomicStoreOrdering) {
        storage.pointee.store(value, ordering: ordering)
    }

    /// Stores `value` and returns the value it replaced.
    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    @discardableResult
    public func exchange(_ value: Int, ordering: AtomicUpdateOrdering) -> Int {
        storage.pointee.exchange(value, ordering: ordering)
    }

    /// Stores `desired` if the word holds `expected`; returns whether it did and the value
    /// that was there.
    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    public func compareExchange(
        expected: Int, desired: Int, ordering: AtomicUpdateOrdering
    ) -> (exchanged: Bool, original: Int) {
        storage.pointee.compareExchange(expected: expected, desired: desired, ordering: ordering)
    }

    /// Like `compareExchange(expected:desired:ordering:)` but may fail spuriously; use it in
    /// retry loops, where it is cheaper on some CPUs.
    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    public func weakCompareExchange(
        expected: Int, desired: Int, successOrdering: AtomicUpdateOrdering,
        failureOrdering: AtomicLoadOrdering
    ) -> (exchanged: Bool, original: Int) {
        storage.pointee.weakCompareExchange(
            expected: expected, desired: desired, successOrdering: successOrdering,
            failureOrdering: failureOrdering)
    }

    /// Adds `delta` (wrapping on overflow) and returns the value before the addition.
    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    @discardableResult
    public func wrappingAdd(_ delta: Int, ordering: AtomicUpdateOrdering) -> Int {
        storage.pointee.wrappingAdd(delta, ordering: ordering).oldValue
    }

    /// Subtracts `delta` (wrapping on overflow) and returns the value before.
    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    @discardableResult
    public func wrappingSubtract(_ delta: Int, ordering: AtomicUpdateOrdering) -> Int {
        storage.pointee.wrappingSubtract(delta, ordering: ordering).oldValue
    }

    /// ORs `bits` in and returns the value before.
    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    @discardableResult
    public func bitwiseOr(_ bits: Int, ordering: AtomicUpdateOrdering) -> Int {
        storage.pointee.bitwiseOr(bits, ordering: ordering).oldValue
    }

    /// ANDs `bits` in and returns the value before.
    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    @discardableResult
    public func bitwiseAnd(_ bits: Int, ordering: AtomicUpdateOrdering) -> Int {
        storage.pointee.bitwiseAnd(bits, ordering: ordering).oldValue
    }

    /// Raises the word to `value` when it holds less (a high-water mark); returns the value
    /// before. See ``raise(_:to:ordering:)``.
    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    @discardableResult
    public func raise(to value: Int, ordering: AtomicUpdateOrdering) -> Int {
        AtomicWord.raise(storage.pointee, to: value, ordering: ordering)
    }

    /// Lowers the word to `value` when it holds more (a low-water mark); returns the value
    /// before. See ``lower(_:to:ordering:)``.
    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    @discardableResult
    public func lower(to value: Int, ordering: AtomicUpdateOrdering) -> Int {
        AtomicWord.lower(storage.pointee, to: value, ordering: ordering)
    }

    /// Raises `atomic` to `value` when it holds less; returns the value before. A loop of
    /// compare-exchanges that ends as soon as the word is already at least `value`, so a
    /// mark that rarely rises costs one load.
    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    @discardableResult
    public static func raise(_ atomic: borrowing Atomic<Int>, to value: Int, ordering: AtomicUpdateOrdering) -> Int {
        var current = atomic.load(ordering: .relaxed)
        while current < value {
            let (exchanged, original) = atomic.compareExchange(
                expected: current, desired: value, successOrdering: ordering, failureOrdering: .relaxed)
            if exchanged { break }
            current = original
        }
        return current
    }

    /// Lowers `atomic` to `value` when it holds more; returns the value before.
    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    @discardableResult
    public static func lower(_ atomic: borrowing Atomic<Int>, to value: Int, ordering: AtomicUpdateOrdering) -> Int {
        var current = atomic.load(ordering: .relaxed)
        while current > value {
            let (exchanged, original) = atomic.compareExchange(
                expected: current, desired: value, successOrdering: ordering, failureOrdering: .relaxed)
            if exchanged { break }
            current = original
        }
        return current
    }
}

/// Two machine words at a 16-byte aligned raw address, read and replaced together
/// (`cmpxchg16b` on x86_64).
///
/// The classic use is a pointer with a version tag, so that a compare-exchange fails when
/// the pointer was popped and pushed back in between (the ABA problem); see
/// ``AtomicStack``. Every operation, loads included, writes the cache line on x86_64:
/// keep pairs off read-mostly paths.
public struct AtomicWordPair: @unchecked Sendable {
    @usableFromInline let storage: UnsafeMutablePointer<Atomic<WordPair>>

    /// Initializes the pair at `address` and returns a handle to it.
    @inlinable
    public init(initializingAt address: UnsafeMutableRawPointer, first: UInt, second: UInt) {
        assert(Int(bitPattern: address) & 15 == 0, "AtomicWordPair at \(address) is not 16-byte aligned")
        storage = address.bindMemory(to: Atomic<WordPair>.self, capacity: 1)
        storage.initialize(to: Atomic(WordPair(first: first, second: second)))
    }

    /// A handle to a pair that was already initialized.
    @inlinable
    public init(at address: UnsafeMutableRawPointer) {
        assert(Int(bitPattern: address) & 15 == 0, "AtomicWordPair at \(address) is not 16-byte aligned")
        storage = address.bindMemory(to: Atomic<WordPair>.self, capacity: 1)
    }

    /// The pair's address.
    @inlinable
    public var address: UnsafeMutableRawPointer { UnsafeMutableRawPointer(storage) }

    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    public func load(ordering: AtomicLoadOrdering) -> WordPair {
        storage.pointee.load(ordering: ordering)
    }

    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    public func store(_ value: WordPair, ordering: AtomicStoreOrdering) {
        storage.pointee.store(value, ordering: ordering)
    }

    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    @discardableResult
    public func exchange(_ value: WordPair, ordering: AtomicUpdateOrdering) -> WordPair {
        storage.pointee.exchange(value, ordering: ordering)
    }

    @_semantics("atomics.requires_constant_orderings")
    @_transparent
    public func compareExchange(
        expected: WordPair, desired: WordPair, ordering: AtomicUpdateOrdering
    ) -> (exchanged: Bool, original: WordPair) {
        storage.pointee.compareExchange(expected: expected, desired: desired, ordering: ordering)
    }
}

/// An ABA-safe lock-free LIFO stack of nodes in raw memory (a Treiber stack with a
/// version tag), for free lists shared by threads: free slabs, free regions.
///
/// The stack is intrusive: it links nodes through their first word, so a node needs no
/// memory beyond its own first 8 bytes, and pushing never allocates.
///
/// - Important: a node's memory must stay mapped while it may be on the stack: `pop`
///   reads the first word of the node at the top, which another thread may pop and reuse
///   at the same moment (the tag makes that read harmless, never a dangling access to
///   unmapped memory). Unmap a node only after you popped it and no other thread can
///   still be inside `pop` with it, for instance memory that is only ever reused, or
///   freed under a lock that every popper holds.
public struct AtomicStack: @unchecked Sendable {
    /// Bytes the head needs: a pointer and a tag, 16-byte aligned.
    public static let headByteCount = 16

    @usableFromInline let head: AtomicWordPair

    /// Initializes an empty stack whose head lives at `address` (16 bytes, 16-aligned).
    @inlinable
    public init(initializingAt address: UnsafeMutableRawPointer) {
        head = AtomicWordPair(initializingAt: address, first: 0, second: 0)
    }

    /// A handle to a stack that was already initialized.
    @inlinable
    public init(at address: UnsafeMutableRawPointer) {
        head = AtomicWordPair(at: address)
    }

    /// Pushes `node` (at least 8 bytes, 8-aligned, not on any list).
    @inlinable
    public func push(_ node: UnsafeMutableRawPointer) {
        // Atomic stores to the link: a concurrent `pop` may still read this word.
        let link = AtomicWord(at: node)
        var current = headGuess
        while true {
            link.store(Int(bitPattern: current.first), ordering: .relaxed)
            let next = WordPair(first: UInt(bitPattern: Int(bitPattern: node)), second: current.second &+ 1)
            let (exchanged, original) = head.compareExchange(
                expected: current, desired: next, ordering: .releasing)
            if exchanged { return }
            current = original
        }
    }

    /// The head read as two 8-byte loads: it may be torn, but it is only a guess that the
    /// 16-byte compare-exchange then checks, and it spares the cache-line write that a
    /// 16-byte atomic load (itself a `cmpxchg16b` on x86_64) costs.
    @inlinable
    var headGuess: WordPair {
        let pointer = AtomicWord(at: head.address).load(ordering: .acquiring)
        let tag = AtomicWord(at: head.address + 8).load(ordering: .relaxed)
        return WordPair(first: UInt(bitPattern: pointer), second: UInt(bitPattern: tag))
    }

    /// Pops the most recently pushed node, or returns nil when the stack is empty.
    @inlinable
    public func pop() -> UnsafeMutableRawPointer? {
        var current = headGuess
        while true {
            guard let node = UnsafeMutableRawPointer(bitPattern: current.first) else {
                // A torn guess can look empty: only a 16-byte load may answer nil.
                current = head.load(ordering: .acquiring)
                if current.first == 0 { return nil }
                continue
            }
            let next = AtomicWord(at: node).load(ordering: .relaxed)
            let desired = WordPair(first: UInt(bitPattern: next), second: current.second &+ 1)
            let (exchanged, original) = head.compareExchange(
                expected: current, desired: desired, ordering: .acquiringAndReleasing)
            if exchanged { return node }
            current = original
        }
    }

    /// Whether the stack was empty when looked at (a hint: other threads may change it).
    @inlinable
    public var isEmpty: Bool { AtomicWord(at: head.address).load(ordering: .relaxed) == 0 }
}

/// A list that many threads push nodes onto and one thread empties at once, for remote
/// frees: threads that free a block owned by another thread push it here, and the owner
/// takes the whole chain with one exchange (no ABA problem, since nothing pops one node).
///
/// Intrusive like ``AtomicStack``: nodes are linked through their first word. The chain
/// returned by ``takeAll()`` is the caller's alone; walk it with ``next(after:)``.
public struct AtomicPushList: @unchecked Sendable {
    /// Bytes the head needs: one word, 8-byte aligned.
    public static let headByteCount = 8

    @usableFromInline let head: AtomicWord

    /// Initializes an empty list whose head lives at `address`.
    @inlinable
    public init(initializingAt address: UnsafeMutableRawPointer) {
        head = AtomicWord(initializingAt: address, to: 0)
    }

    /// A handle to a list that was already initialized.
    @inlinable
    public init(at address: UnsafeMutableRawPointer) {
        head = AtomicWord(at: address)
    }

    /// Pushes `node` (at least 8 bytes, 8-aligned, not on any list). Any thread.
    @inlinable
    public func push(_ node: UnsafeMutableRawPointer) {
        pushChain(first: node, last: node)
    }

    /// Pushes a chain already linked through first words, from `first` to `last`, with a
    /// single compare-exchange. Any thread.
    @inlinable
    public func pushChain(first: UnsafeMutableRawPointer, last: UnsafeMutableRawPointer) {
        let lastLink = AtomicWord(at: last)
        var current = head.load(ordering: .relaxed)
        while true {
            lastLink.store(current, ordering: .relaxed)
            let (exchanged, original) = head.compareExchange(
                expected: current, desired: Int(bitPattern: first), ordering: .releasing)
            if exchanged { return }
            current = original
        }
    }

    /// Takes every node pushed so far, newest first, leaving the list empty.
    @inlinable
    public func takeAll() -> UnsafeMutableRawPointer? {
        // A relaxed look first: an empty list (the common case) costs no cache-line write.
        guard head.load(ordering: .relaxed) != 0 else { return nil }
        return UnsafeMutableRawPointer(bitPattern: head.exchange(0, ordering: .acquiring))
    }

    /// The node linked after `node` in a chain returned by ``takeAll()``.
    @inlinable
    public static func next(after node: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
        UnsafeMutableRawPointer(bitPattern: AtomicWord(at: node).load(ordering: .relaxed))
    }

    /// Links `node` to `next` before a ``pushChain(first:last:)``.
    @inlinable
    public static func link(_ node: UnsafeMutableRawPointer, to next: UnsafeMutableRawPointer?) {
        AtomicWord(at: node).store(Int(bitPattern: next), ordering: .relaxed)
    }

    /// Whether the list was empty when looked at (a hint).
    @inlinable
    public var isEmpty: Bool { head.load(ordering: .relaxed) == 0 }
}
