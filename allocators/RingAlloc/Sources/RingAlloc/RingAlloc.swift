// RingAlloc: a ring allocator with guard words for short-lived buffers, released from any
// thread.
//
// # What it is
//
// One mapping of N bytes, cut into *regions* by *guard words*. Every region starts with a
// 16-byte header: the guard (the address of the next region's guard, with a lock bit) and a
// share word (the clone count of a frozen buffer). The last 16 bytes hold the *tail guard*,
// permanently locked, pointing back to the first region: the ring closes there.
//
// ```
//  head                                                                 tail
//  | G S | payload ... | G S | payload ........ | G S | free ......... | T  |
//    |                 ^ |                      ^ |                     ^ |
//    +-----------------+ +----------------------+ +---------------------+ +--> head
// ```
//
// The allocator keeps a *cursor*: the guard where the next allocation looks first. An
// allocation takes the cursor's region when it is free and big enough (an exact fit, or a
// split when more than 8 words would be left over), merges free neighbours into it until
// the request fits, wraps to the head when it meets the tail, and fails (nil) when it meets
// a locked guard (the oldest buffer is still held) or has come all the way round.
//
// ```swift
// var ring = try RingAllocator(capacity: 1 << 20)
// var buffer = ring.fixed(capacity: 100)!          // 100 bytes (or a little more)
// _ = buffer.append(contentsOf: [1, 2, 3])
// let shared = buffer.freeze()                     // read-only, Sendable, cloneable
// let other = shared.clone()                       // hand `other` to another thread
// ```
//
// # Threads
//
// A `RingAllocator` belongs to one thread at a time (it is not `Sendable`); every thread
// that wants buffers gets its own, or uses the per-thread one
// (`RingAllocator.withCurrentThread`). Buffers are `~Copyable` and `Sendable`: each is
// released exactly once, by its deinit, on whatever thread drops it. The release is one
// atomic exchange with *release* ordering on the buffer's guard; the allocator reads guards
// with *acquire* loads, so everything the releasing thread wrote happens before the
// allocator reuses the memory.
//
// # Teardown
//
// Dropping the allocator while buffers are alive elsewhere neither unmaps memory under them
// nor waits for them: the deinit marks every held guard *orphaned* and adds their number to
// a counter in the ring's header; a buffer whose release finds its guard orphaned takes one
// off that counter, and whichever side brings it to zero unmaps the ring.

import AllocCore
import Glibc
import Synchronization

// MARK: - Public API

/// A ring of guard-word-separated regions for short-lived buffers, after the Rust crate
/// RingAl.
///
/// Buffers come out in ring order and are best released in roughly the same order (a
/// queue of messages, frames, requests); a buffer that stays held blocks the ring behind
/// it, and allocation then fails (nil) instead of searching around it, or waits for it
/// when ``fullRingTimeoutNanoseconds`` is set.
///
/// ```swift
/// var ring = try RingAllocator(capacity: 1 << 20)
///
/// // Fixed: a capacity chosen up front.
/// var message = ring.fixed(capacity: 256)!
/// _ = message.append(contentsOf: "hello".utf8)
///
/// // Extendable: grows while it is written, then becomes a fixed buffer.
/// let frame = ring.extendable(capacity: 64) { buffer in
///     for chunk in chunks { _ = buffer.append(contentsOf: chunk) }
/// }!
///
/// // Typed: a fixed-capacity vector whose remaining elements are deinitialised.
/// var numbers = ring.typed(Int.self, capacity: 16)!
/// _ = numbers.push(42)
///
/// // Shareable: frozen, read-only, cloned to other threads; released by the last clone.
/// let shared = frame.freeze()
/// let copy = shared.clone()
/// ```
///
/// An allocator is a `~Copyable` value that belongs to one thread; it is not `Sendable`.
/// A thread that does not want to carry one around uses the per-thread allocator,
/// ``withCurrentThread(capacity:_:)``. Buffers may be dropped on any thread.
///
/// Dropping the allocator does not invalidate its buffers: the ring stays mapped until
/// the last of them is released (see the module comment).
public struct RingAllocator: ~Copyable {
    @usableFromInline let ring: Ring

    /// The alignment of every buffer's bytes unless a larger one is asked for.
    public static let minimumAlignment = Layout.granule

    /// The most bytes a ring may hold (2^46): far beyond any sensible ring, and small
    /// enough that no size arithmetic on it can overflow.
    public static let maximumCapacity = Layout.maximumCapacity

    /// Maps a ring of at least `capacity` bytes (rounded up so that the mapping is whole
    /// pages; ``capacity`` tells the result).
    ///
    /// - Parameters:
    ///   - capacity: bytes for regions, their 16-byte headers included; at least 1 and at
    ///     most ``maximumCapacity``.
    ///   - fullRingTimeoutNanoseconds: how long an allocation that finds the ring full
    ///     waits for the oldest buffer to be released (0, the default: it answers nil at
    ///     once). See ``fullRingTimeoutNanoseconds``.
    /// - Throws: `SystemError` from `mmap` when the memory cannot be mapped.
    /// - Precondition: `1 <= capacity <= maximumCapacity`.
    public init(capacity: Int, fullRingTimeoutNanoseconds: UInt64 = 0) throws(SystemError) {
        precondition(
            capacity > 0 && capacity <= Layout.maximumCapacity,
            "RingAllocator(capacity: \(capacity)): the capacity must be between 1 and \(Layout.maximumCapacity)")
        ring = try Ring.create(capacity: capacity)
        ring.timeoutNanoseconds = fullRingTimeoutNanoseconds
    }

    deinit { ring.tearDown() }

    /// The bytes between the head and the tail guard: what regions, headers included, share.
    public var capacity: Int { ring.tail &- ring.head }

    /// The largest capacity one buffer can ask for (a single region spanning the ring).
    public var largestBufferCapacity: Int { ring.largestPayload }

    /// How long an allocation that finds the ring full waits, in nanoseconds, for the
    /// buffer that blocks it to be released; 0 (the default) answers nil at once.
    ///
    /// A waiting allocation sleeps with a bounded back-off (1 µs doubling up to 1 ms) and
    /// looks again after each sleep, so a release is noticed within about a millisecond,
    /// and the release itself stays one atomic exchange with no wake-up call. The wait
    /// applies to fixed, typed and extendable allocations and to extendable growth.
    public var fullRingTimeoutNanoseconds: UInt64 {
        get { ring.timeoutNanoseconds }
        set { ring.timeoutNanoseconds = newValue }
    }

    /// A buffer of at least `capacity` bytes, aligned to `alignment`, empty (`count` 0),
    /// or nil when the ring is full.
    ///
    /// ```swift
    /// var buffer = ring.fixed(capacity: 1500)!
    /// _ = buffer.append(contentsOf: packet)       // false if it does not fit
    /// ```
    ///
    /// - Errors: nil when the region at the cursor is still held and the request does
    ///   not fit before it, or the ring is too fragmented (after waiting up to
    ///   ``fullRingTimeoutNanoseconds``).
    /// - Precondition: `capacity >= 1`; `capacity` (plus the alignment's padding) at most
    ///   ``largestBufferCapacity``; `alignment` a power of two.
    @inlinable
    public mutating func fixed(capacity: Int, alignment: Int = minimumAlignment) -> RingBuffer? {
        let needed = ring.regionByteCount(capacity: capacity, alignment: alignment, caller: "fixed")
        guard let start = ring.reserve(needed) ?? ring.reserveAfterFailure(needed) else { return nil }
        let base = Layout.payload(of: start, alignment: alignment)
        return RingBuffer(ring: ring, start: start, base: base, capacity: ring.cursor &- Int(bitPattern: base))
    }

    /// An extendable buffer of at least `capacity` bytes for `body` to write, returned as
    /// a fixed buffer when `body` returns, or nil when not even `capacity` bytes are free.
    ///
    /// The buffer grows while it is written: in place, by merging the free regions after
    /// it, as long as they are free; when it meets the end of the ring it moves once, to
    /// the head, copying what it holds. When `body` returns, the buffer shrinks to what was
    /// written (the rest goes back to the ring) and becomes a ``RingBuffer``.
    ///
    /// The allocator is exclusively borrowed while `body` runs, so nothing else can take
    /// the space the buffer grows into.
    ///
    /// ```swift
    /// let line = ring.extendable(capacity: 32) { buffer in
    ///     for word in words { _ = buffer.append(contentsOf: word.utf8) }
    /// }
    /// ```
    ///
    /// - Errors: nil when the first `capacity` bytes cannot be had; inside `body`, an
    ///   append answers false when the buffer cannot grow. If `body` throws, the buffer is
    ///   released and the error rethrown.
    /// - Precondition: `1 <= capacity <= largestBufferCapacity`.
    @inlinable
    public mutating func extendable<Failure: Error>(
        capacity: Int = 64, _ body: (inout ExtendableRingBuffer) throws(Failure) -> Void
    ) throws(Failure) -> RingBuffer? {
        let needed = ring.regionByteCount(capacity: capacity, alignment: Layout.granule, caller: "extendable")
        guard let start = ring.reserve(needed) ?? ring.reserveAfterFailure(needed) else { return nil }
        var buffer = ExtendableRingBuffer(ring: ring, start: start)
        try body(&buffer)
        return buffer.finalize()
    }

    /// A fixed-capacity vector of at least `capacity` values of `Element`, or nil when the
    /// ring is full. Elements left in it when it is dropped are deinitialised.
    ///
    /// ```swift
    /// var points = ring.typed(Point.self, capacity: 64)!
    /// _ = points.push(Point(x: 1, y: 2))
    /// ```
    ///
    /// - Errors: nil when the ring is full (as ``fixed(capacity:alignment:)``).
    /// - Precondition: `Element` is not a zero-size type; `capacity >= 1`; the bytes fit
    ///   in ``largestBufferCapacity``.
    @inlinable
    public mutating func typed<Element: ~Copyable>(
        _ type: Element.Type = Element.self, capacity: Int
    ) -> TypedRingBuffer<
        Element
    >? {
        precondition(
            MemoryLayout<Element>.size > 0,
            "RingAllocator.typed(\(Element.self).self, capacity: \(capacity)): zero-size types need no memory")
        precondition(
            capacity > 0,
            "RingAllocator.typed(\(Element.self).self, capacity: \(capacity)): the capacity must be at least 1")
        let stride = MemoryLayout<Element>.stride
        let byteCount = checkedByteCount(count: capacity, stride: stride) ?? Int.max
        let alignment = max(MemoryLayout<Element>.alignment, Layout.granule)
        let needed = ring.regionByteCount(capacity: byteCount, alignment: alignment, caller: "typed")
        guard let start = ring.reserve(needed) ?? ring.reserveAfterFailure(needed) else { return nil }
        let base = Layout.payload(of: start, alignment: alignment)
        return TypedRingBuffer(
            ring: ring, start: start, base: base.bindMemory(to: Element.self, capacity: capacity),
            capacity: (ring.cursor &- Int(bitPattern: base)) / stride)
    }

    /// The allocator's counters, and the bytes held now (a walk of the ring: O(regions)).
    public func statistics() -> RingStatistics {
        ring.statistics()
    }

    /// The regions of the ring in address order, for tests and debugging (O(regions)).
    public func regions() -> [RingRegion] {
        var regions: [RingRegion] = []
        ring.walk { start, value in
            regions.append(
                RingRegion(
                    start: UInt(bitPattern: start), byteCount: (value & Layout.addressMask) &- start,
                    isHeld: value & Layout.locked != 0))
            return true
        }
        return regions
    }

    /// The first broken invariant of the ring, described, or nil when it is sound: every
    /// guard inside the ring, 16-aligned and ahead of the one before; the walk closing
    /// exactly at the tail, which points back to the head; the cursor on a guard; no
    /// orphaned guard; the bytes tally equal to the held regions plus the released ones
    /// not yet reclaimed (spec section 4). O(regions); for tests and debugging.
    public func integrityViolation() -> String? {
        ring.integrityViolation()
    }
}

@available(*, unavailable, message: "a RingAllocator belongs to one thread; give each thread its own")
extension RingAllocator: Sendable {}

extension RingAllocator {
    /// The capacity of a per-thread ring unless the first call asks for another: 1 MiB.
    public static let defaultThreadCapacity = 1 << 20

    /// Runs `body` with the calling thread's own allocator, creating it (with `capacity`
    /// bytes) on the thread's first call. Returns nil, without running `body`, when the
    /// ring cannot be mapped or the thread is already exiting.
    ///
    /// The allocator lives in AllocCore's thread-local slot `ringAlloc`: reaching it is
    /// one `%fs`-relative load. When the thread exits, its allocator is dropped, which
    /// (see teardown) leaves buffers alive elsewhere valid. `capacity` only matters on the
    /// first call of a thread. Assigning a new allocator to the `inout` argument makes
    /// it the thread's allocator.
    ///
    /// ```swift
    /// let buffer = RingAllocator.withCurrentThread { $0.fixed(capacity: 64) }
    /// ```
    ///
    /// - Precondition: not called from inside `body` (the allocator is borrowed).
    @inlinable
    public static func withCurrentThread<Result: ~Copyable, Failure: Error>(
        capacity: Int = defaultThreadCapacity, _ body: (inout RingAllocator) throws(Failure) -> Result
    ) throws(Failure) -> Result? {
        guard let storage = ThreadLocalSlot.ringAlloc.value ?? installThreadAllocator(capacity: capacity) else {
            return nil
        }
        let allocator = storage.assumingMemoryBound(to: RingAllocator.self)
        precondition(!allocator.pointee.ring.isBorrowed, "RingAllocator.withCurrentThread called from inside its body")
        allocator.pointee.ring.isBorrowed = true
        defer { allocator.pointee.ring.isBorrowed = false }
        return try body(&allocator.pointee)
    }

    /// The slow path of ``withCurrentThread(capacity:_:)``: maps the thread's ring and
    /// installs it in the slot with its exit hook.
    @usableFromInline
    @inline(never)
    static func installThreadAllocator(capacity: Int) -> UnsafeMutableRawPointer? {
        guard !ThreadLocalSlot.isCurrentThreadExiting,
            let allocator = try? RingAllocator(capacity: capacity)
        else { return nil }
        let storage = UnsafeMutablePointer<RingAllocator>.allocate(capacity: 1)
        storage.initialize(to: allocator)
        let slot = ThreadLocalSlot.ringAlloc
        slot.setThreadExitHook(ringAllocThreadExit)
        do {
            try slot.install(UnsafeMutableRawPointer(storage))
        } catch {
            // Without the exit hook the ring would outlive the thread: refuse instead.
            slot.value = nil
            storage.deinitialize(count: 1)
            storage.deallocate()
            return nil
        }
        return UnsafeMutableRawPointer(storage)
    }
}

/// The thread-exit hook of the `ringAlloc` slot: drops the thread's allocator.
private func ringAllocThreadExit(_ storage: UnsafeMutableRawPointer?) {
    guard let allocator = storage?.assumingMemoryBound(to: RingAllocator.self) else { return }
    allocator.deinitialize(count: 1)
    allocator.deallocate()
}

/// A buffer of bytes with a fixed capacity, from ``RingAllocator/fixed(capacity:alignment:)``
/// or a finished extendable buffer.
///
/// It holds `count` initialized bytes out of `capacity`; appends add bytes at the end
/// until it is full. It is `~Copyable`: the region goes back to the ring exactly once,
/// when the buffer is dropped, on any thread (it is `Sendable`). ``freeze()`` turns it
/// into a read-only buffer that can be cloned.
public struct RingBuffer: ~Copyable, @unchecked Sendable {
    @usableFromInline let ring: Ring
    @usableFromInline let start: Int
    @usableFromInline let base: UnsafeMutableRawPointer
    /// How many bytes the buffer can hold (at least what was asked).
    public let capacity: Int
    @usableFromInline var storedCount: Int

    @inlinable
    init(ring: Ring, start: Int, base: UnsafeMutableRawPointer, capacity: Int, count: Int = 0) {
        self.ring = ring
        self.start = start
        self.base = base
        self.capacity = capacity
        storedCount = count
        Layout.assertHeld(start)
    }

    deinit { Ring.release(start, ring: ring) }

    /// The bytes written so far.
    @inlinable public var count: Int { storedCount }

    /// Whether no byte has been written.
    @inlinable public var isEmpty: Bool { storedCount == 0 }

    /// The bytes that can still be appended.
    @inlinable public var freeCapacity: Int { capacity &- storedCount }

    /// Appends one byte; false (and nothing written) when the buffer is full.
    @inlinable
    public mutating func append(_ byte: UInt8) -> Bool {
        guard storedCount < capacity else { return false }
        base.storeBytes(of: byte, toByteOffset: storedCount, as: UInt8.self)
        storedCount &+= 1
        return true
    }

    /// Appends `bytes`; false (and nothing written) when they do not all fit.
    @inlinable
    public mutating func append(contentsOf bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count <= capacity &- storedCount else { return false }
        if let source = bytes.baseAddress { (base + storedCount).copyMemory(from: source, byteCount: bytes.count) }
        storedCount &+= bytes.count
        return true
    }

    /// Appends the bytes of a sequence; false (and `count` unchanged) when they do not
    /// all fit.
    @inlinable
    public mutating func append<Bytes: Sequence<UInt8>>(contentsOf bytes: Bytes) -> Bool {
        if let appended = bytes.withContiguousStorageIfAvailable({ append(contentsOf: UnsafeRawBufferPointer($0)) }) {
            return appended
        }
        let saved = storedCount
        for byte in bytes where !append(byte) {
            storedCount = saved
            return false
        }
        return true
    }

    /// Appends `count` copies of `byte`; false (and nothing written) when they do not fit.
    @inlinable
    public mutating func append(repeating byte: UInt8, count: Int) -> Bool {
        precondition(count >= 0, "RingBuffer.append(repeating:count: \(count)): negative count")
        guard count <= capacity &- storedCount else { return false }
        (base + storedCount).initializeMemory(as: UInt8.self, repeating: byte, count: count)
        storedCount &+= count
        return true
    }

    /// Forgets the bytes written; the capacity stays.
    @inlinable
    public mutating func removeAll() { storedCount = 0 }

    /// Calls `body` with the bytes written, as a span.
    @inlinable
    public func withBytes<Result, Failure: Error>(_ body: (RawSpan) throws(Failure) -> Result) throws(Failure) -> Result
    {
        try body(UnsafeRawBufferPointer(start: base, count: storedCount).bytes)
    }

    /// Calls `body` with the bytes written, as a mutable span.
    @inlinable
    public mutating func withMutableBytes<Result, Failure: Error>(
        _ body: (inout MutableRawSpan) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        var span = MutableRawSpan(_unsafeBytes: UnsafeMutableRawBufferPointer(start: base, count: storedCount))
        return try body(&span)
    }

    /// Calls `body` with a pointer to the bytes written; valid only inside `body`.
    @inlinable
    public func withUnsafeBytes<Result, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(UnsafeRawBufferPointer(start: base, count: storedCount))
    }

    /// Calls `body` with a mutable pointer to the bytes written; valid only inside `body`.
    @inlinable
    public mutating func withUnsafeMutableBytes<Result, Failure: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(UnsafeMutableRawBufferPointer(start: base, count: storedCount))
    }

    /// Makes the buffer read-only and shareable: the result can be cloned, and its clones
    /// sent to other threads; the region goes back when the last clone is dropped. No
    /// memory is allocated: the clone count lives in the region's header.
    public consuming func freeze() -> SharedRingBuffer {
        _ = AtomicWord(initializingAt: Layout.shareWord(of: start), to: 1)
        let shared = SharedRingBuffer(ring: ring, start: start, base: base, count: storedCount)
        discard self
        return shared
    }
}

/// A buffer being written by the body of ``RingAllocator/extendable(capacity:_:)``: it
/// grows as bytes are appended and becomes a ``RingBuffer`` when the body returns.
///
/// Growth merges the free regions after the buffer (no copy); when the buffer meets the
/// end of the ring it moves, once, to the head (one copy of what it holds). An append
/// answers false when the buffer can grow no further: the region after it is held, or it
/// already moved, or it would need more than the ring.
public struct ExtendableRingBuffer: ~Copyable {
    @usableFromInline let ring: Ring
    @usableFromInline var start: Int
    @usableFromInline var base: UnsafeMutableRawPointer
    @usableFromInline var storedCapacity: Int
    @usableFromInline var storedCount: Int

    @inlinable
    init(ring: Ring, start: Int) {
        self.ring = ring
        self.start = start
        base = Layout.payload(of: start, alignment: Layout.granule)
        storedCapacity = ring.cursor &- Int(bitPattern: base)
        storedCount = 0
    }

    /// Reached only when the body throws: the region goes back unused.
    deinit { Ring.release(start, ring: ring) }

    /// The bytes written so far.
    @inlinable public var count: Int { storedCount }

    /// The bytes the buffer holds before it must grow again.
    @inlinable public var capacity: Int { storedCapacity }

    /// Makes room for at least `minimumCapacity` bytes; false when the buffer cannot grow
    /// that far.
    @inlinable
    public mutating func reserveCapacity(_ minimumCapacity: Int) -> Bool {
        minimumCapacity <= storedCapacity || grow(adding: minimumCapacity &- storedCount)
    }

    /// Appends one byte; false when the buffer cannot grow.
    @inlinable
    public mutating func append(_ byte: UInt8) -> Bool {
        guard storedCount < storedCapacity || grow(adding: 1) else { return false }
        base.storeBytes(of: byte, toByteOffset: storedCount, as: UInt8.self)
        storedCount &+= 1
        return true
    }

    /// Appends `bytes`, growing as needed; false (and nothing written) when the buffer
    /// cannot grow enough.
    @inlinable
    public mutating func append(contentsOf bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count <= storedCapacity &- storedCount || grow(adding: bytes.count) else {
            return false
        }
        if let source = bytes.baseAddress { (base + storedCount).copyMemory(from: source, byteCount: bytes.count) }
        storedCount &+= bytes.count
        return true
    }

    /// Appends the bytes of a sequence, growing as needed; false (and `count` unchanged)
    /// when the buffer cannot grow enough.
    @inlinable
    public mutating func append<Bytes: Sequence<UInt8>>(contentsOf bytes: Bytes) -> Bool {
        if let appended = bytes.withContiguousStorageIfAvailable({ append(contentsOf: UnsafeRawBufferPointer($0)) }) {
            return appended
        }
        let saved = storedCount
        for byte in bytes where !append(byte) {
            storedCount = saved
            return false
        }
        return true
    }

    /// Appends `count` copies of `byte`, growing as needed; false when it cannot grow.
    @inlinable
    public mutating func append(repeating byte: UInt8, count: Int) -> Bool {
        precondition(count >= 0, "ExtendableRingBuffer.append(repeating:count: \(count)): negative count")
        guard count <= storedCapacity &- storedCount || grow(adding: count) else { return false }
        (base + storedCount).initializeMemory(as: UInt8.self, repeating: byte, count: count)
        storedCount &+= count
        return true
    }

    /// Calls `body` with the bytes written, as a span.
    @inlinable
    public func withBytes<Result, Failure: Error>(_ body: (RawSpan) throws(Failure) -> Result) throws(Failure) -> Result
    {
        try body(UnsafeRawBufferPointer(start: base, count: storedCount).bytes)
    }

    /// Calls `body` with a pointer to the bytes written; valid only inside `body` (a
    /// later append may move the buffer).
    @inlinable
    public func withUnsafeBytes<Result, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(UnsafeRawBufferPointer(start: base, count: storedCount))
    }

    /// Calls `body` with a mutable pointer to the bytes written; valid only inside `body`.
    @inlinable
    public mutating func withUnsafeMutableBytes<Result, Failure: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(UnsafeMutableRawBufferPointer(start: base, count: storedCount))
    }
}

@available(*, unavailable, message: "an extendable buffer grows into its allocator's ring: it stays on its thread")
extension ExtendableRingBuffer: Sendable {}

/// A read-only buffer shared by clones, from ``RingBuffer/freeze()``.
///
/// ``clone()`` adds one to a count kept in the region's header (an atomic add, no heap
/// allocation); dropping a clone takes one off, and the last one releases the region.
/// Clones may be read and dropped on any threads at once.
public struct SharedRingBuffer: ~Copyable, @unchecked Sendable {
    @usableFromInline let ring: Ring
    @usableFromInline let start: Int
    @usableFromInline let base: UnsafeMutableRawPointer
    /// How many bytes the buffer holds.
    public let count: Int

    @inlinable
    init(ring: Ring, start: Int, base: UnsafeMutableRawPointer, count: Int) {
        self.ring = ring
        self.start = start
        self.base = base
        self.count = count
    }

    deinit {
        // Acquire: the last clone's release must follow every other clone's reads.
        if AtomicWord(at: Layout.shareWord(of: start)).wrappingSubtract(1, ordering: .acquiringAndReleasing) == 1 {
            Ring.release(start, ring: ring)
        }
    }

    /// Another handle to the same bytes.
    @inlinable
    public func clone() -> SharedRingBuffer {
        AtomicWord(at: Layout.shareWord(of: start)).wrappingAdd(1, ordering: .relaxed)
        return SharedRingBuffer(ring: ring, start: start, base: base, count: count)
    }

    /// How many clones exist now (a hint when other threads clone or drop at once).
    @inlinable
    public var cloneCount: Int { AtomicWord(at: Layout.shareWord(of: start)).load(ordering: .relaxed) }

    /// Calls `body` with the bytes, as a span.
    @inlinable
    public func withBytes<Result, Failure: Error>(_ body: (RawSpan) throws(Failure) -> Result) throws(Failure) -> Result
    {
        try body(UnsafeRawBufferPointer(start: base, count: count).bytes)
    }

    /// Calls `body` with a pointer to the bytes; valid only inside `body`.
    @inlinable
    public func withUnsafeBytes<Result, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }
}

/// A vector of `Element` with a fixed capacity in a ring region, from
/// ``RingAllocator/typed(_:capacity:)``.
///
/// Elements may be `~Copyable`: `push` and `insert` consume them, `pop` and the removals
/// move them out, the subscript borrows or modifies them in place. Dropping the buffer
/// deinitialises the elements it still holds (RingAl leaks them) and releases the region,
/// on any thread (it is `Sendable` when `Element` is).
///
/// ```swift
/// var handles = ring.typed(FileHandle.self, capacity: 8)!   // FileHandle: ~Copyable
/// _ = handles.push(FileHandle(descriptor))
/// let handle = handles.pop()                                // moved out
/// ```
public struct TypedRingBuffer<Element: ~Copyable>: ~Copyable {
    @usableFromInline let ring: Ring
    @usableFromInline let start: Int
    @usableFromInline let base: UnsafeMutablePointer<Element>
    /// How many elements the buffer can hold (at least what was asked).
    public let capacity: Int
    @usableFromInline var storedCount: Int

    @inlinable
    init(ring: Ring, start: Int, base: UnsafeMutablePointer<Element>, capacity: Int) {
        self.ring = ring
        self.start = start
        self.base = base
        self.capacity = capacity
        storedCount = 0
        Layout.assertHeld(start)
    }

    deinit {
        base.deinitialize(count: storedCount)
        Ring.release(start, ring: ring)
    }

    /// The number of elements.
    @inlinable public var count: Int { storedCount }

    /// Whether there is no element.
    @inlinable public var isEmpty: Bool { storedCount == 0 }

    /// The element at `index`.
    ///
    /// - Precondition: `0 <= index < count`.
    @inlinable
    public subscript(index: Int) -> Element {
        _read {
            precondition(index >= 0 && index < storedCount, "TypedRingBuffer[\(index)]: out of 0..<\(storedCount)")
            yield base[index]
        }
        _modify {
            precondition(index >= 0 && index < storedCount, "TypedRingBuffer[\(index)]: out of 0..<\(storedCount)")
            yield &base[index]
        }
    }

    /// Adds `element` at the end; false (and `element` dropped) when the buffer is full.
    @inlinable
    public mutating func push(_ element: consuming Element) -> Bool {
        guard storedCount < capacity else { return false }
        (base + storedCount).initialize(to: element)
        storedCount &+= 1
        return true
    }

    /// Removes and returns the last element, or nil when there is none.
    @inlinable
    public mutating func pop() -> Element? {
        guard storedCount > 0 else { return nil }
        storedCount &-= 1
        return (base + storedCount).move()
    }

    /// Inserts `element` at `index`, moving the later ones up; false when full.
    ///
    /// - Precondition: `0 <= index <= count`.
    @inlinable
    public mutating func insert(_ element: consuming Element, at index: Int) -> Bool {
        precondition(
            index >= 0 && index <= storedCount, "TypedRingBuffer.insert(at: \(index)): out of 0...\(storedCount)")
        guard storedCount < capacity else { return false }
        (base + index + 1).moveInitialize(from: base + index, count: storedCount &- index)
        (base + index).initialize(to: element)
        storedCount &+= 1
        return true
    }

    /// Removes and returns the element at `index`, moving the later ones down.
    ///
    /// - Precondition: `0 <= index < count`.
    @inlinable
    public mutating func remove(at index: Int) -> Element {
        precondition(
            index >= 0 && index < storedCount, "TypedRingBuffer.remove(at: \(index)): out of 0..<\(storedCount)")
        let element = (base + index).move()
        (base + index).moveInitialize(from: base + index + 1, count: storedCount &- index &- 1)
        storedCount &-= 1
        return element
    }

    /// Removes and returns the element at `index`, putting the last one in its place
    /// (O(1); the order is not kept).
    ///
    /// - Precondition: `0 <= index < count`.
    @inlinable
    public mutating func swapRemove(at index: Int) -> Element {
        precondition(
            index >= 0 && index < storedCount, "TypedRingBuffer.swapRemove(at: \(index)): out of 0..<\(storedCount)")
        storedCount &-= 1
        let element = (base + index).move()
        if index != storedCount { (base + index).moveInitialize(from: base + storedCount, count: 1) }
        return element
    }

    /// Deinitialises every element; the capacity stays.
    @inlinable
    public mutating func removeAll() {
        base.deinitialize(count: storedCount)
        storedCount = 0
    }

    /// Calls `body` with the elements, as a span.
    @inlinable
    public func withSpan<Result, Failure: Error>(
        _ body: (Span<Element>) throws(Failure) -> Result
    ) throws(Failure)
        -> Result
    {
        try body(UnsafeBufferPointer(start: base, count: storedCount).span)
    }

    /// Calls `body` with a pointer to the elements; valid only inside `body`.
    @inlinable
    public func withUnsafeBufferPointer<Result, Failure: Error>(
        _ body: (UnsafeBufferPointer<Element>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(UnsafeBufferPointer(start: base, count: storedCount))
    }

    /// Calls `body` with a mutable pointer to the elements; valid only inside `body`.
    @inlinable
    public mutating func withUnsafeMutableBufferPointer<Result, Failure: Error>(
        _ body: (UnsafeMutableBufferPointer<Element>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(UnsafeMutableBufferPointer(start: base, count: storedCount))
    }
}

extension TypedRingBuffer: @unchecked Sendable where Element: Sendable & ~Copyable {}

/// What a ``RingAllocator`` has done, and what it holds now.
public struct RingStatistics: Sendable, Equatable {
    /// Buffers handed out (fixed, extendable and typed; a move of an extendable buffer
    /// is not a new allocation).
    public var allocations: Int
    /// Allocations and growths that answered nil or false because the ring was full.
    public var failures: Int
    /// Times the cursor came round from the tail to the head.
    public var wraps: Int
    /// Free regions merged into the one before them.
    public var merges: Int
    /// Regions split because more than 8 words would have been left over.
    public var splits: Int
    /// Extendable buffers moved to the head because they met the end of the ring.
    public var moves: Int
    /// Allocations that found the ring full and waited (``RingAllocator/fullRingTimeoutNanoseconds``).
    public var waits: Int
    /// Buffers held now (regions whose guard is locked).
    public var liveBuffers: Int
    /// Bytes of the regions held now, their headers included (exact when read).
    public var bytesInUse: Int
    /// The most bytes ever counted in use. The allocator learns of a release when its walk
    /// reaches the released region, so this is the high-water mark of held bytes plus
    /// released bytes not yet reclaimed: an upper bound of the true peak, equal to it when
    /// buffers are released in ring order.
    public var peakBytesInUse: Int
    /// The ring's capacity in bytes (``RingAllocator/capacity``).
    public var capacity: Int
}

/// One region of a ring, as ``RingAllocator/regions()`` lists it.
public struct RingRegion: Sendable, Equatable {
    /// The address of the region's guard word.
    public let start: UInt
    /// The region's size, its 16-byte header included.
    public let byteCount: Int
    /// Whether a buffer holds it.
    public let isHeld: Bool
}

// MARK: - Fast path

/// The ring: a handle to the header at the start of the mapping. The header holds the
/// allocator's state (only its owner thread reads and writes it), the teardown counter
/// (any thread) and the counters; the regions follow it.
@usableFromInline
struct Ring {
    @usableFromInline let header: UnsafeMutableRawPointer

    @inlinable
    init(header: UnsafeMutableRawPointer) { self.header = header }

    @inlinable
    func field(_ offset: Int) -> Int { header.load(fromByteOffset: offset, as: Int.self) }

    @inlinable
    func setField(_ offset: Int, _ value: Int) { header.storeBytes(of: value, toByteOffset: offset, as: Int.self) }

    /// The first guard.
    @inlinable var head: Int { field(Layout.headOffset) }
    /// The tail guard: always locked, pointing back to the head.
    @inlinable var tail: Int { field(Layout.tailOffset) }
    /// The largest payload of one region.
    @inlinable var largestPayload: Int { tail &- head &- Layout.regionHeaderByteCount }

    /// The guard where the next allocation looks first.
    @inlinable var cursor: Int {
        get { field(Layout.cursorOffset) }
        nonmutating set { setField(Layout.cursorOffset, newValue) }
    }

    /// Bytes of held regions plus released regions the allocator has not reached yet.
    @inlinable var reservedBytes: Int {
        get { field(Layout.reservedOffset) }
        nonmutating set { setField(Layout.reservedOffset, newValue) }
    }

    @inlinable var peakReservedBytes: Int {
        get { field(Layout.peakOffset) }
        nonmutating set { setField(Layout.peakOffset, newValue) }
    }

    @inlinable var timeoutNanoseconds: UInt64 {
        get { UInt64(bitPattern: Int64(field(Layout.timeoutOffset))) }
        nonmutating set { setField(Layout.timeoutOffset, Int(Int64(bitPattern: newValue))) }
    }

    /// Whether `withCurrentThread` is running a body with this allocator.
    @inlinable var isBorrowed: Bool {
        get { field(Layout.borrowedOffset) != 0 }
        nonmutating set { setField(Layout.borrowedOffset, newValue ? 1 : 0) }
    }

    @inlinable
    var counters: Counters<RingCounter> { Counters(at: header + Layout.countersOffset) }

    /// The region bytes (header included) a buffer of `capacity` bytes aligned to
    /// `alignment` needs, after checking the request.
    @inlinable
    func regionByteCount(capacity: Int, alignment: Int, caller: StaticString) -> Int {
        precondition(capacity > 0, "RingAllocator.\(caller)(capacity: \(capacity)): the capacity must be at least 1")
        precondition(
            isPowerOfTwo(alignment), "RingAllocator.\(caller)(alignment: \(alignment)): not a power of two")
        let padding = alignment > Layout.granule ? alignment &- Layout.granule : 0
        precondition(
            capacity <= largestPayload &- padding,
            "RingAllocator.\(caller)(capacity: \(capacity)): larger than the ring's largest buffer (\(largestPayload &- padding) bytes with alignment \(alignment))"
        )
        return (capacity &+ padding &+ Layout.granule &- 1) & ~(Layout.granule &- 1) &+ Layout.regionHeaderByteCount
    }

    /// Reserves a region of at least `needed` bytes at the cursor: returns its guard,
    /// locked, with the cursor moved to the guard after it; nil when the ring is full.
    ///
    /// The fast path takes the cursor's region when it is free and big enough; anything
    /// else (a merge, a wrap, a held region) is the slow path's.
    @inlinable
    func reserve(_ needed: Int) -> Int? {
        let start = cursor
        let value = Layout.word(start).load(ordering: .acquiring)
        let next = value & Layout.addressMask
        if value & Layout.locked == 0 && next &- start >= needed {
            if value & Layout.unreclaimed != 0 { reservedBytes &-= next &- start }
            take(start, next: next, needed: needed)
            return start
        }
        return reserveSlow(needed)
    }

    /// Locks the free region `start..<next` for a request of `needed` bytes, splitting off
    /// the rest when more than `Layout.splitThreshold` bytes would be left over.
    @inlinable
    func take(_ start: Int, next: Int, needed: Int) {
        var end = next
        if next &- start &- needed > Layout.splitThreshold {
            end = start &+ needed
            Layout.word(end).store(next, ordering: .relaxed)
            counters.addFromOwner(1, to: .splits)
        }
        Layout.word(start).store(end | Layout.locked | Layout.unreclaimed, ordering: .relaxed)
        cursor = end
        addReserved(end &- start)
        counters.addFromOwner(1, to: .allocations)
    }

    @inlinable
    func addReserved(_ byteCount: Int) {
        let reserved = reservedBytes &+ byteCount
        reservedBytes = reserved
        if reserved > peakReservedBytes { peakReservedBytes = reserved }
    }

    /// Gives the region of the guard at `start` back to its ring: one atomic exchange with
    /// release ordering, so that the allocator's acquiring load of the guard sees every
    /// write made to the buffer before. Any thread.
    @inlinable
    static func release(_ start: Int, ring: Ring) {
        let word = Layout.word(start)
        let held = word.load(ordering: .relaxed)
        assert(held & Layout.locked != 0, "RingAlloc: released the region at 0x\(String(start, radix: 16)) twice")
        let before = word.exchange(held & ~(Layout.locked | Layout.orphaned), ordering: .releasing)
        if before & Layout.orphaned != 0 { ring.releaseOrphan() }
    }

    // MARK: - Slow path

    /// The allocation walk when the cursor's region cannot be taken as it is: merges free
    /// regions after it, wraps at the tail (at most once: a full lap fails), and stops at a
    /// held region. Merges are kept even when the walk fails.
    @usableFromInline
    @inline(never)
    func reserveSlow(_ needed: Int) -> Int? {
        let head = head
        let tail = tail
        let counters = counters
        var start = cursor
        var wrapped = false
        while true {
            if start == tail {
                if wrapped { return nil }
                wrapped = true
                counters.addFromOwner(1, to: .wraps)
                start = head
            }
            let value = Layout.word(start).load(ordering: .acquiring)
            if value & Layout.locked != 0 { return nil }
            var next = value & Layout.addressMask
            if value & Layout.unreclaimed != 0 { reservedBytes &-= next &- start }
            while next &- start < needed {
                if next == tail { break }
                let following = Layout.word(next).load(ordering: .acquiring)
                if following & Layout.locked != 0 {
                    Layout.word(start).store(next, ordering: .relaxed)
                    return nil
                }
                let after = following & Layout.addressMask
                if following & Layout.unreclaimed != 0 { reservedBytes &-= after &- next }
                next = after
                counters.addFromOwner(1, to: .merges)
            }
            if next &- start >= needed {
                take(start, next: next, needed: needed)
                return start
            }
            // Too small before the tail: leave it free (merged) and wrap.
            Layout.word(start).store(next, ordering: .relaxed)
            start = tail
        }
    }

    /// After a failed `reserve`: waits for the ring to free up when a timeout is set, else
    /// counts the failure and answers nil.
    @usableFromInline
    @inline(never)
    func reserveAfterFailure(_ needed: Int) -> Int? {
        var start: Int?
        _ = waitForRelease {
            start = reserve(needed); return start != nil
        }
        return start
    }

    /// Retries `attempt` with a bounded back-off until it succeeds or the timeout passes;
    /// counts a wait, and a failure when it gives up. Without a timeout: one failure.
    ///
    /// Polling rather than a futex wake-up keeps the release one exchange: a wake-up
    /// protocol would need every release to check for waiters after its store (a full
    /// fence, and a shared cache line written by every releasing thread). The back-off is
    /// capped at `Layout.maximumBackOffNanoseconds`, so a release is noticed within about
    /// a millisecond.
    @usableFromInline
    func waitForRelease(_ attempt: () -> Bool) -> Bool {
        let timeout = timeoutNanoseconds
        if timeout > 0 {
            counters.addFromOwner(1, to: .waits)
            let deadline = SystemInfo.monotonicNanoseconds() &+ timeout
            var pause = Layout.initialBackOffNanoseconds
            while true {
                let now = SystemInfo.monotonicNanoseconds()
                if now >= deadline { break }
                // The idle word never changes: this is a sleep that allocates nothing.
                Futex.wait(
                    AtomicWord(at: header + Layout.idleOffset), whileEqualTo: 0,
                    timeoutNanoseconds: min(pause, deadline - now))
                if attempt() { return true }
                pause = min(pause &* 2, Layout.maximumBackOffNanoseconds)
            }
        }
        counters.addFromOwner(1, to: .failures)
        return false
    }

    /// A release that found its guard orphaned: the allocator is gone, and the last
    /// region to go unmaps the ring (see `tearDown`).
    @usableFromInline
    @inline(never)
    func releaseOrphan() {
        let outstanding = AtomicWord(at: header + Layout.outstandingOffset)
        if outstanding.wrappingSubtract(1, ordering: .acquiringAndReleasing) == 1 { unmap() }
    }

    // MARK: - Internals

    /// Maps a ring and writes its header, its first free region and its tail guard.
    static func create(capacity: Int) throws(SystemError) -> Ring {
        let total = alignUp(
            Layout.headerByteCount + capacity + Layout.regionHeaderByteCount, to: SystemInfo.pageSize)
        guard let total else { throw SystemError(.map, code: ENOMEM) }
        // The header layout: owner fields end before the counters, the counters before
        // the first region.
        assert(
            Layout.borrowedOffset + 8 <= Layout.countersOffset
                && Layout.countersOffset + Counters<RingCounter>.byteCount <= Layout.headerByteCount,
            "RingAlloc: the header fields overlap (counters end at \(Layout.countersOffset + Counters<RingCounter>.byteCount))"
        )
        let memory = try SystemMemory.map(byteCount: total)
        let ring = Ring(header: memory)
        let head = Int(bitPattern: memory) + Layout.headerByteCount
        let tail = Int(bitPattern: memory) + total - Layout.regionHeaderByteCount
        _ = AtomicWord(initializingAt: memory + Layout.outstandingOffset, to: 0)
        _ = AtomicWord(initializingAt: memory + Layout.idleOffset, to: 0)
        ring.setField(Layout.mappingByteCountOffset, total)
        ring.setField(Layout.headOffset, head)
        ring.setField(Layout.tailOffset, tail)
        ring.cursor = head
        _ = Counters<RingCounter>(initializingAt: memory + Layout.countersOffset)
        _ = AtomicWord(initializingAt: Layout.pointer(head), to: tail)
        _ = AtomicWord(initializingAt: Layout.pointer(tail), to: head | Layout.locked)
        return ring
    }

    /// Calls `body` with each guard's address and value from the head to the tail, until
    /// it answers false or the walk has taken more steps than the ring has granules.
    func walk(_ body: (Int, Int) -> Bool) {
        let tail = tail
        var start = head
        var steps = 0
        let maximumSteps = (tail &- start) / Layout.granule
        while start != tail && steps <= maximumSteps {
            let value = Layout.word(start).load(ordering: .acquiring)
            if !body(start, value) { return }
            start = value & Layout.addressMask
            steps &+= 1
        }
    }

    func statistics() -> RingStatistics {
        var live = 0
        var bytes = 0
        walk { start, value in
            if value & Layout.locked != 0 {
                live &+= 1
                bytes &+= (value & Layout.addressMask) &- start
            }
            return true
        }
        let counters = counters
        return RingStatistics(
            allocations: counters.value(of: .allocations), failures: counters.value(of: .failures),
            wraps: counters.value(of: .wraps), merges: counters.value(of: .merges), splits: counters.value(of: .splits),
            moves: counters.value(of: .moves), waits: counters.value(of: .waits), liveBuffers: live,
            bytesInUse: bytes, peakBytesInUse: peakReservedBytes, capacity: tail &- head)
    }

    func integrityViolation() -> String? {
        let head = head
        let tail = tail
        let cursor = cursor
        func hex(_ value: Int) -> String { "0x" + String(value, radix: 16) }
        if Layout.word(tail).load(ordering: .relaxed) != head | Layout.locked {
            return
                "the tail guard at \(hex(tail)) holds \(hex(Layout.word(tail).load(ordering: .relaxed))), not the head \(hex(head)) locked"
        }
        var problem: String?
        var last = head
        var cursorSeen = cursor == tail
        var tally = 0
        var closed = false
        walk { start, value in
            let next = value & Layout.addressMask
            if start == cursor { cursorSeen = true }
            if value & Layout.orphaned != 0 {
                problem = "the guard at \(hex(start)) is orphaned while its allocator lives"
            } else if next & (Layout.granule - 1) != 0 || next <= start || next > tail {
                problem =
                    "the guard at \(hex(start)) points to \(hex(next)), outside \(hex(start + 16))...\(hex(tail)) or misaligned"
            } else if next &- start < Layout.regionHeaderByteCount + Layout.granule {
                problem = "the region at \(hex(start)) is \(next - start) bytes, smaller than a header and a granule"
            }
            if value & (Layout.locked | Layout.unreclaimed) != 0 { tally &+= next &- start }
            last = start
            if next == tail { closed = true }
            return problem == nil
        }
        if let problem { return problem }
        if !closed { return "the walk from the head does not reach the tail (last guard \(hex(last)))" }
        if !cursorSeen { return "the cursor \(hex(cursor)) is not on a guard" }
        if tally != reservedBytes {
            return "the bytes tally is \(reservedBytes), but held and unreclaimed regions make \(tally)"
        }
        return nil
    }

    /// Drops the allocator: orphans every held guard and counts them; the last of the
    /// allocator and those buffers to finish unmaps the ring. Never waits.
    func tearDown() {
        var held = 0
        walk { start, value in
            if value & Layout.locked != 0 {
                // The guard may be released at this very moment: only the exchange (or
                // this OR) that comes second sees both bits, so each held region is
                // counted here exactly when its release will see the orphan bit.
                let before = Layout.word(start).bitwiseOr(Layout.orphaned, ordering: .acquiringAndReleasing)
                if before & Layout.locked != 0 { held &+= 1 }
            }
            return true
        }
        let outstanding = AtomicWord(at: header + Layout.outstandingOffset)
        if outstanding.wrappingAdd(held, ordering: .acquiringAndReleasing) &+ held == 0 { unmap() }
    }

    func unmap() {
        let byteCount = field(Layout.mappingByteCountOffset)
        do {
            try SystemMemory.unmap(header, byteCount: byteCount)
        } catch {
            assertionFailure("RingAlloc: cannot unmap the ring at \(header): \(error)")
        }
    }
}

// MARK: - Slow path: extendable growth

extension ExtendableRingBuffer {
    /// Grows the buffer to hold at least `additional` bytes more than it holds (aiming at
    /// four times its capacity: growth in place copies nothing, and what is not written
    /// goes back when the body returns, so a big step only saves later steps): in place by merging the free regions after it, or by moving to
    /// the head when it meets the tail. Waits like an allocation when a timeout is set.
    @usableFromInline
    @inline(never)
    mutating func grow(adding additional: Int) -> Bool {
        // Compared before adding, so that no count can overflow.
        guard additional <= ring.largestPayload &- storedCount else {
            ring.counters.addFromOwner(1, to: .failures)
            return false
        }
        let minimumCapacity = storedCount &+ additional
        if growOnce(toAtLeast: minimumCapacity) { return true }
        return ring.waitForRelease { growOnce(toAtLeast: minimumCapacity) }
    }

    /// One attempt of `grow`.
    mutating func growOnce(toAtLeast minimumCapacity: Int) -> Bool {
        let ring = ring
        let tail = ring.tail
        let end = Int(bitPattern: base) &+ storedCapacity
        assert(
            ring.cursor == end,
            "ExtendableRingBuffer: the cursor 0x\(String(ring.cursor, radix: 16)) moved away from the buffer's end 0x\(String(end, radix: 16))"
        )
        let granuleMask = Layout.granule &- 1
        let minimumEnd = (Int(bitPattern: base) &+ minimumCapacity &+ granuleMask) & ~granuleMask
        let wantedEnd = max(minimumEnd, (Int(bitPattern: base) &+ 4 &* storedCapacity) & ~granuleMask)
        var reached = end
        var blockedByTail = false
        while reached < wantedEnd {
            if reached == tail {
                blockedByTail = true
                break
            }
            let value = Layout.word(reached).load(ordering: .acquiring)
            if value & Layout.locked != 0 { break }
            let after = value & Layout.addressMask
            if value & Layout.unreclaimed != 0 { ring.reservedBytes &-= after &- reached }
            reached = after
            ring.counters.addFromOwner(1, to: .merges)
        }
        if reached >= minimumEnd {
            var newEnd = reached
            if reached &- wantedEnd > Layout.splitThreshold {
                newEnd = wantedEnd
                Layout.word(newEnd).store(reached, ordering: .relaxed)
                ring.counters.addFromOwner(1, to: .splits)
            }
            Layout.word(start).store(newEnd | Layout.locked | Layout.unreclaimed, ordering: .relaxed)
            ring.addReserved(newEnd &- end)
            ring.cursor = newEnd
            storedCapacity = newEnd &- Int(bitPattern: base)
            return true
        }
        // Keep what was merged as one free region after the buffer.
        if reached != end { Layout.word(end).store(reached, ordering: .relaxed) }
        guard blockedByTail && start != ring.head else { return false }
        return move(toAtLeast: minimumCapacity)
    }

    /// Moves the buffer to the head of the ring (it met the tail): reserves a region
    /// there, copies the bytes written, releases the old region.
    mutating func move(toAtLeast minimumCapacity: Int) -> Bool {
        let ring = ring
        let savedCursor = ring.cursor
        ring.cursor = ring.tail
        let wanted = max(minimumCapacity, 2 &* storedCapacity)
        let granuleMask = Layout.granule &- 1
        func regionByteCount(_ capacity: Int) -> Int {
            ((capacity &+ granuleMask) & ~granuleMask) &+ Layout.regionHeaderByteCount
        }
        let newStart: Int
        if wanted <= ring.largestPayload, let reserved = ring.reserve(regionByteCount(wanted)) {
            newStart = reserved
        } else if let reserved = ring.reserve(regionByteCount(minimumCapacity)) {
            newStart = reserved
        } else {
            ring.cursor = savedCursor
            return false
        }
        let newBase = Layout.payload(of: newStart, alignment: Layout.granule)
        newBase.copyMemory(from: base, byteCount: storedCount)
        // Not a new buffer: the allocation `reserve` counted is this buffer's first one.
        ring.counters.addFromOwner(-1, to: .allocations)
        ring.counters.addFromOwner(1, to: .moves)
        Ring.release(start, ring: ring)
        start = newStart
        base = newBase
        storedCapacity = ring.cursor &- Int(bitPattern: newBase)
        return true
    }

    /// Shrinks the region to the bytes written (when more than the split threshold would
    /// be left over) and hands it over as a fixed buffer.
    @usableFromInline
    consuming func finalize() -> RingBuffer {
        let ring = ring
        let end = Int(bitPattern: base) &+ storedCapacity
        let granuleMask = Layout.granule &- 1
        let usedEnd = (Int(bitPattern: base) &+ max(storedCount, 1) &+ granuleMask) & ~granuleMask
        var capacity = storedCapacity
        if end &- usedEnd > Layout.splitThreshold {
            Layout.word(usedEnd).store(end, ordering: .relaxed)
            Layout.word(start).store(usedEnd | Layout.locked | Layout.unreclaimed, ordering: .relaxed)
            ring.reservedBytes &-= end &- usedEnd
            ring.cursor = usedEnd
            ring.counters.addFromOwner(1, to: .splits)
            capacity = usedEnd &- Int(bitPattern: base)
        }
        let buffer = RingBuffer(ring: ring, start: start, base: base, capacity: capacity, count: storedCount)
        discard self
        return buffer
    }
}

// MARK: - Internals: layout

/// The allocator's counters, in the ring's header.
@usableFromInline
enum RingCounter: Int, CaseIterable {
    case allocations, failures, wraps, merges, splits, moves, waits
}

/// The layout of a ring: header offsets, guard bits, region sizes, tuning constants.
@usableFromInline
enum Layout {
    // Header (256 bytes at the start of the mapping). The first word is the only one
    // other threads write (teardown's counter); the rest is the owner thread's.
    @usableFromInline static let outstandingOffset = 0
    @usableFromInline static let idleOffset = 8
    @usableFromInline static let mappingByteCountOffset = 16
    @usableFromInline static let headOffset = 24
    @usableFromInline static let tailOffset = 32
    @usableFromInline static let cursorOffset = 40
    @usableFromInline static let reservedOffset = 48
    @usableFromInline static let peakOffset = 56
    @usableFromInline static let timeoutOffset = 64
    @usableFromInline static let borrowedOffset = 72
    @usableFromInline static let countersOffset = 128
    /// The header's size: the counters end well before it, and regions start 64-aligned.
    @usableFromInline static let headerByteCount = 256

    // Guard bits: guards are 16-aligned, so the low 4 bits of an address are free.
    /// A buffer holds the region.
    @usableFromInline static let locked = 1
    /// The allocator was dropped while the region was held.
    @usableFromInline static let orphaned = 2
    /// The region's bytes are in the allocator's tally (it was handed out and the
    /// allocator has not reclaimed it since).
    @usableFromInline static let unreclaimed = 4
    @usableFromInline static let addressMask = ~15

    /// Regions and payloads are multiples of 16 bytes, so every payload is 16-aligned
    /// like malloc's.
    @usableFromInline static let granule = 16
    /// A region's header: the guard word and the share word (a frozen buffer's clones).
    @usableFromInline static let regionHeaderByteCount = 16
    /// A region is split when more than 8 words would be left over (RingAl's rule): a
    /// smaller rest would be a region too small to be worth a guard.
    @usableFromInline static let splitThreshold = 64
    /// 2^46 bytes: no sum of sizes below it overflows.
    @usableFromInline static let maximumCapacity = 1 << 46

    /// A full ring's first look after 1 µs: a release by a running thread is that close.
    static let initialBackOffNanoseconds: UInt64 = 1_000
    /// And at most every millisecond: the delay a waiting allocation may add to a release.
    static let maximumBackOffNanoseconds: UInt64 = 1_000_000

    @inlinable
    static func pointer(_ address: Int) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: address).unsafelyUnwrapped
    }

    /// The guard word at `address`.
    @inlinable
    static func word(_ address: Int) -> AtomicWord { AtomicWord(at: pointer(address)) }

    /// The share word of the region whose guard is at `start`.
    @inlinable
    static func shareWord(of start: Int) -> UnsafeMutableRawPointer { pointer(start &+ 8) }

    /// The first payload byte of the region at `start`, aligned to `alignment`.
    @inlinable
    static func payload(of start: Int, alignment: Int) -> UnsafeMutableRawPointer {
        let first = start &+ regionHeaderByteCount
        return pointer(alignment <= granule ? first : (first &+ alignment &- 1) & ~(alignment &- 1))
    }

    @inlinable
    static func assertHeld(_ start: Int) {
        assert(
            word(start).load(ordering: .relaxed) & locked != 0,
            "RingAlloc: the region at 0x\(String(start, radix: 16)) is not held")
    }
}
