// RingAlloc: a ring allocator with guard words for short-lived buffers, released from any
// thread.
//
// # What it is
//
// One mapping of N bytes, cut into *segments* by *guard words*. Every segment starts with a
// 16-byte header: the guard (the address of the next segment's guard, with a lock bit) and a
// share word (the clone count of a frozen buffer). The last 16 bytes hold the *tail guard*,
// permanently locked, pointing back to the first segment: the ring closes there.
//
// ```
//  head                                                                 tail
//  | G S | payload ... | G S | payload ........ | G S | free ......... | T  |
//    |                 ^ |                      ^ |                     ^ |
//    +-----------------+ +----------------------+ +---------------------+ +--> head
// ```
//
// The allocator keeps a *cursor*: the guard where the next allocation looks first. An
// allocation takes the cursor's segment when it is free and big enough (an exact fit, or a
// split when more than 8 words would be left over), merges free neighbours into it until
// the request fits, wraps to the head when it meets the tail, and fails (nil) when it meets
// a locked guard (the oldest buffer is still held) or has come all the way round.
//
// ```swift
// var ring = try RingAllocator(capacity: 1 << 20)
// var buffer = ring.fixed(capacity: 100)!          // 100 bytes (or a little more)
// buffer.append(contentsOf: [1, 2, 3])             // traps if it does not fit
// let shared = buffer.freeze()                     // read-only, Sendable, cloneable
// let other = shared.clone()                       // hand `other` to another thread
// ```
//
// # Spans
//
// A buffer's contents are also spans, bound to the buffer's lifetime: `bytes` (a
// `RawSpan` of the bytes written) on fixed, extendable and shared buffers, `mutableBytes`
// (a `MutableRawSpan`) on fixed and extendable ones, `span` and `mutableSpan` on typed
// ones. The compiler rejects a span that outlives its buffer, or that is used across a
// change to it or its release (`@_lifetime`, which needs the package's `Lifetimes`
// feature; spec section 2 lists the checks). `append(minimumFreeCapacity:initializingWith:)`
// hands the free capacity to a closure as an `OutputRawSpan` (an `OutputSpan` for typed
// buffers), so that `read(2)` or a decoder writes in place, with no copy; what the closure
// initialized is appended, also when it throws. An extendable buffer grows before the
// closure runs; a fixed one traps when less is free, as its other bulk appends.
//
// ```swift
// var packet = ring.fixed(capacity: 1500)!
// let received = packet.append(minimumFreeCapacity: 1) { output in
//     output.withUnsafeMutableBytes { bytes, initializedCount in
//         let result = recv(socket, bytes.baseAddress! + initializedCount, bytes.count - initializedCount, 0)
//         if result > 0 { initializedCount += result }
//         return result
//     }
// }
// decode(packet.bytes)                             // RawSpan: borrows `packet`
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

// MARK: - Public API: RingAllocator

/// A ring of guard-word-separated segments for short-lived buffers, after the Rust crate
/// RingAl.
///
/// Buffers come out in ring order and are best released in roughly the same order (a
/// queue of messages, frames, requests); a buffer that stays held blocks the ring behind
/// it, and allocation then fails (nil) instead of searching around it, or waits for it
/// when ``fullRingTimeout`` is set.
///
/// ```swift
/// var ring = try RingAllocator(capacity: 1 << 20)
///
/// // Fixed: a capacity chosen up front.
/// var message = ring.fixed(capacity: 256)!
/// message.append(contentsOf: "hello".utf8)
///
/// // Extendable: grows while it is written, then becomes a fixed buffer.
/// let frame = ring.extendable(capacity: 64) { buffer in
///     for chunk in chunks { _ = buffer.append(contentsOf: chunk) }
/// }!
///
/// // Typed: a fixed-capacity vector whose remaining elements are deinitialised.
/// var numbers = ring.typed(Int.self, capacity: 16)!
/// numbers.append(42)                  // traps when full; `push` hands the element back
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
    ///   - capacity: bytes for segments, their 16-byte headers included; at least 1 and at
    ///     most ``maximumCapacity``.
    ///   - fullRingTimeout: how long an allocation that finds the ring full waits for the
    ///     oldest buffer to be released: `.zero` (the default) answers nil at once, nil
    ///     waits as long as it takes. See ``fullRingTimeout``.
    /// - Throws: ``RingAllocError/outOfMemory(_:)`` when `mmap` cannot map the ring.
    /// - Precondition: `1 <= capacity <= maximumCapacity`.
    public init(capacity: Int, fullRingTimeout: Duration? = .zero) throws(RingAllocError) {
        precondition(
            capacity > 0 && capacity <= Layout.maximumCapacity,
            "RingAllocator(capacity: \(capacity)): the capacity must be between 1 and \(Layout.maximumCapacity)")
        do {
            ring = try Ring.create(capacity: capacity)
        } catch {
            throw .outOfMemory(error)
        }
        self.fullRingTimeout = fullRingTimeout
    }

    deinit { ring.tearDown() }

    /// The bytes between the head and the tail guard: what segments, headers included, share.
    public var capacity: Int { ring.tail &- ring.head }

    /// The largest capacity one buffer can ask for (a single segment spanning the ring).
    public var largestBufferCapacity: Int { ring.largestPayload }

    /// How long an allocation that finds the ring full waits for the buffer that blocks
    /// it to be released: `.zero` (the default) answers nil at once, a positive duration
    /// waits up to that long, nil waits as long as it takes. A negative duration is zero.
    /// Kept to the nanosecond (below that a wait is no wait).
    ///
    /// A waiting allocation sleeps with a bounded back-off (AllocCore's `BackOff`: 1 µs
    /// doubling up to 1 ms) and looks again after each sleep, so a release is noticed
    /// within about a millisecond, and the release itself stays one atomic exchange with
    /// no wake-up call. The wait applies to fixed, typed and extendable allocations and to
    /// extendable growth. Waiting with no limit for a buffer that this thread holds never
    /// ends: use nil only when other threads release.
    public var fullRingTimeout: Duration? {
        get {
            let nanoseconds = ring.timeoutNanoseconds
            return nanoseconds == Layout.noTimeLimit ? nil : .nanoseconds(nanoseconds)
        }
        set {
            ring.timeoutNanoseconds =
                newValue.map { Int(clamping: Duration.nanosecondsClamped($0)) } ?? Layout.noTimeLimit
        }
    }

    /// A buffer of at least `capacity` bytes, aligned to `alignment`, empty (`count` 0),
    /// or nil when the ring is full.
    ///
    /// ```swift
    /// var buffer = ring.fixed(capacity: 1500)!
    /// buffer.append(contentsOf: packet)           // traps if it does not fit: see freeCapacity
    /// ```
    ///
    /// - Errors: nil when the segment at the cursor is still held and the request does
    ///   not fit before it, or the ring is too fragmented (after waiting up to
    ///   ``fullRingTimeout``).
    /// - Precondition: `capacity >= 1`; `capacity` (plus the alignment's padding) at most
    ///   ``largestBufferCapacity``; `alignment` a power of two.
    @inlinable
    public mutating func fixed(capacity: Int, alignment: Int = minimumAlignment) -> RingBuffer? {
        let needed = ring.segmentByteCount(capacity: capacity, alignment: alignment, caller: "fixed")
        guard let start = ring.reserve(needed) ?? ring.reserveAfterFailure(needed) else { return nil }
        let base = Layout.payload(of: start, alignment: alignment)
        return RingBuffer(ring: ring, start: start, base: base, capacity: ring.cursor &- Int(bitPattern: base))
    }

    /// An extendable buffer of at least `capacity` bytes for `body` to write, returned as
    /// a fixed buffer when `body` returns, or nil when not even `capacity` bytes are free.
    ///
    /// The buffer grows while it is written: in place, by merging the free segments after
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
        let needed = ring.segmentByteCount(capacity: capacity, alignment: Layout.granule, caller: "extendable")
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
    /// points.append(Point(x: 1, y: 2))
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
        let needed = ring.segmentByteCount(capacity: byteCount, alignment: alignment, caller: "typed")
        guard let start = ring.reserve(needed) ?? ring.reserveAfterFailure(needed) else { return nil }
        let base = Layout.payload(of: start, alignment: alignment)
        return TypedRingBuffer(
            ring: ring, start: start, base: base.bindMemory(to: Element.self, capacity: capacity),
            capacity: (ring.cursor &- Int(bitPattern: base)) / stride)
    }

    /// The allocator's counters, and the bytes held now (a walk of the ring: O(segments)).
    public func statistics() -> RingAllocStatistics {
        ring.statistics()
    }

    /// The segments of the ring in address order, for tests and debugging (O(segments)).
    public func segments() -> [RingSegment] {
        var segments: [RingSegment] = []
        ring.walk { start, value in
            segments.append(
                RingSegment(
                    start: UInt(bitPattern: start), byteCount: (value & Layout.addressMask) &- start,
                    isHeld: value & Layout.locked != 0))
            return true
        }
        return segments
    }

    /// The first broken invariant of the ring, described, or nil when it is sound: every
    /// guard inside the ring, 16-aligned and ahead of the one before; the walk closing
    /// exactly at the tail, which points back to the head; the cursor on a guard; no
    /// orphaned guard; the bytes tally equal to the held segments plus the released ones
    /// not yet reclaimed; the header's layout (spec sections 3 and 4). O(segments); for
    /// tests and debugging.
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

// MARK: - Public API: RingBuffer

/// A buffer of bytes with a fixed capacity, from ``RingAllocator/fixed(capacity:alignment:)``
/// or a finished extendable buffer.
///
/// It holds `count` initialized bytes out of `capacity`; appends add bytes at the end,
/// and an append that does not fit traps (like swift-collections' `RigidArray`): check
/// ``freeCapacity`` or ``isFull`` first when the bytes may not fit. It is `~Copyable`: the segment goes back to the ring exactly once,
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

    /// Whether no byte can be appended.
    @inlinable public var isFull: Bool { storedCount == capacity }

    /// Appends one byte.
    ///
    /// - Precondition: the buffer is not full (``isFull``).
    @inlinable
    public mutating func append(_ byte: UInt8) {
        precondition(storedCount < capacity, "RingBuffer.append: the buffer is full (capacity \(capacity))")
        base.storeBytes(of: byte, toByteOffset: storedCount, as: UInt8.self)
        storedCount &+= 1
    }

    /// Appends `bytes`, all of them.
    ///
    /// - Precondition: they fit (`bytes.count <= freeCapacity`).
    @inlinable
    public mutating func append(contentsOf bytes: UnsafeRawBufferPointer) {
        precondition(
            bytes.count <= capacity &- storedCount,
            "RingBuffer.append(contentsOf:): \(bytes.count) bytes do not fit in the \(capacity &- storedCount) free")
        if let source = bytes.baseAddress { (base + storedCount).copyMemory(from: source, byteCount: bytes.count) }
        storedCount &+= bytes.count
    }

    /// Appends the bytes of a sequence, all of them.
    ///
    /// - Precondition: they fit (checked before anything is written when the sequence is
    ///   contiguous, else when the byte that does not fit comes).
    @inlinable
    public mutating func append<Bytes: Sequence<UInt8>>(contentsOf bytes: Bytes) {
        if bytes.withContiguousStorageIfAvailable({ append(contentsOf: UnsafeRawBufferPointer($0)) }) == nil {
            for byte in bytes { append(byte) }
        }
    }

    /// Appends `count` copies of `byte`.
    ///
    /// - Precondition: `0 <= count <= freeCapacity`.
    @inlinable
    public mutating func append(repeating byte: UInt8, count: Int) {
        precondition(count >= 0, "RingBuffer.append(repeating:count: \(count)): negative count")
        precondition(
            count <= capacity &- storedCount,
            "RingBuffer.append(repeating:count: \(count)): \(count) bytes do not fit in the \(capacity &- storedCount) free"
        )
        (base + storedCount).initializeMemory(as: UInt8.self, repeating: byte, count: count)
        storedCount &+= count
    }

    /// Lets `body` write into the free capacity in place, through an output span: the
    /// way for `read(2)` or a decoder to fill the buffer with no copy.
    ///
    /// The span covers all of ``freeCapacity`` (at least `minimumFreeCapacity` bytes, and
    /// writing more than that is fine); what `body` has initialized when it returns is
    /// appended. If `body` throws, the bytes it had initialized are appended all the same
    /// (exactly that prefix, nothing past it) and the error is rethrown.
    ///
    /// ```swift
    /// // What read(2) answers: bytes read, 0 at the end of the file, -1 on an error.
    /// let received = buffer.append(minimumFreeCapacity: 1) { output in
    ///     output.withUnsafeMutableBytes { bytes, initializedCount in
    ///         let result = read(descriptor, bytes.baseAddress! + initializedCount, bytes.count - initializedCount)
    ///         if result > 0 { initializedCount += result }
    ///         return result
    ///     }
    /// }
    /// ```
    ///
    /// - Returns: what `body` returns.
    /// - Precondition: `0 <= minimumFreeCapacity <= freeCapacity` (a fixed buffer's bulk
    ///   append traps when it does not fit); `body` leaves the span it was given in place
    ///   (the standard library traps on "OutputRawSpan identity mismatch" otherwise).
    @inlinable
    public mutating func append<Result: ~Copyable, Failure: Error>(
        minimumFreeCapacity: Int, initializingWith body: (inout OutputRawSpan) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        precondition(
            minimumFreeCapacity >= 0,
            "RingBuffer.append(minimumFreeCapacity: \(minimumFreeCapacity)): negative capacity")
        precondition(
            minimumFreeCapacity <= capacity &- storedCount,
            "RingBuffer.append(minimumFreeCapacity: \(minimumFreeCapacity)): \(minimumFreeCapacity) bytes do not fit in the \(capacity &- storedCount) free"
        )
        let free = UnsafeMutableRawBufferPointer(start: base + storedCount, count: capacity &- storedCount)
        var output = OutputRawSpan(buffer: free, initializedCount: 0)
        defer {
            // On return and on a throw alike: the initialized prefix is the buffer's.
            storedCount &+= output.finalize(for: free)
            output = OutputRawSpan()
        }
        return try body(&output)
    }

    /// Forgets the bytes written; the capacity stays.
    @inlinable
    public mutating func removeAll() { storedCount = 0 }

    /// The bytes written, as a span that borrows the buffer: it cannot outlive the
    /// buffer, and the buffer cannot be changed while it is used (the compiler checks
    /// both; spec section 2).
    @inlinable
    public var bytes: RawSpan {
        @_lifetime(borrow self)
        borrowing get {
            _overrideLifetime(RawSpan(_unsafeStart: base, byteCount: storedCount), borrowing: self)
        }
    }

    /// The bytes written, as a mutable span that holds exclusive access to the buffer
    /// while it is used (the compiler checks it).
    @inlinable
    public var mutableBytes: MutableRawSpan {
        @_lifetime(&self)
        mutating get {
            _overrideLifetime(MutableRawSpan(_unsafeStart: base, byteCount: storedCount), mutating: &self)
        }
    }

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
    /// sent to other threads; the segment goes back when the last clone is dropped. No
    /// memory is allocated: the clone count lives in the segment's header.
    public consuming func freeze() -> SharedRingBuffer {
        _ = AtomicWord(initializingAt: Layout.shareWord(of: start), to: 1)
        let shared = SharedRingBuffer(ring: ring, start: start, base: base, count: storedCount)
        discard self
        return shared
    }
}

// MARK: - Public API: ExtendableRingBuffer

/// A buffer being written by the body of ``RingAllocator/extendable(capacity:_:)``: it
/// grows as bytes are appended and becomes a ``RingBuffer`` when the body returns.
///
/// Growth merges the free segments after the buffer (no copy); when the buffer meets the
/// end of the ring it moves, once, to the head (one copy of what it holds). An append
/// answers false when the buffer can grow no further: the segment after it is held, or it
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

    /// Reached only when the body throws: the segment goes back unused.
    deinit { Ring.release(start, ring: ring) }

    /// The bytes written so far.
    @inlinable public var count: Int { storedCount }

    /// The bytes the buffer holds before it must grow again.
    @inlinable public var capacity: Int { storedCapacity }

    /// The bytes that can be appended before the buffer must grow again.
    @inlinable public var freeCapacity: Int { storedCapacity &- storedCount }

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

    /// Grows the buffer, when it has fewer than `minimumFreeCapacity` bytes free, before
    /// `body` runs; then lets `body` write into the free capacity in place, through an
    /// output span (``RingBuffer/append(minimumFreeCapacity:initializingWith:)`` says how).
    ///
    /// The span covers all of ``freeCapacity`` after the growth, which may be more than
    /// asked (growth aims at four times the capacity; what is not written goes back when
    /// the extendable body returns). What `body` has initialized when it returns, or when
    /// it throws, is appended: exactly that prefix.
    ///
    /// ```swift
    /// // read(2) until the end of the file, with at least 4 KiB free for each call.
    /// let contents = ring.extendable(capacity: 4096) { buffer in
    ///     var more = true
    ///     while more {
    ///         more = buffer.append(minimumFreeCapacity: 4096) { output in
    ///             output.withUnsafeMutableBytes { bytes, initializedCount in
    ///                 let result = read(descriptor, bytes.baseAddress! + initializedCount, bytes.count - initializedCount)
    ///                 if result > 0 { initializedCount += result }
    ///                 return result > 0
    ///             }
    ///         } ?? false                      // nil: the ring has no room for 4 KiB more
    ///     }
    /// }
    /// ```
    ///
    /// - Returns: what `body` returns, or nil, without calling `body`, when the buffer
    ///   cannot grow to `minimumFreeCapacity` free bytes (the segment after it is held, it
    ///   already moved, or it would need more than the ring); the bytes written stay.
    /// - Precondition: `minimumFreeCapacity >= 0`; `body` leaves the span it was given
    ///   in place.
    @inlinable
    public mutating func append<Result: ~Copyable, Failure: Error>(
        minimumFreeCapacity: Int, initializingWith body: (inout OutputRawSpan) throws(Failure) -> Result
    ) throws(Failure) -> Result? {
        precondition(
            minimumFreeCapacity >= 0,
            "ExtendableRingBuffer.append(minimumFreeCapacity: \(minimumFreeCapacity)): negative capacity")
        guard minimumFreeCapacity <= storedCapacity &- storedCount || grow(adding: minimumFreeCapacity) else {
            return nil
        }
        let free = UnsafeMutableRawBufferPointer(start: base + storedCount, count: storedCapacity &- storedCount)
        var output = OutputRawSpan(buffer: free, initializedCount: 0)
        defer {
            // On return and on a throw alike: the initialized prefix is the buffer's.
            storedCount &+= output.finalize(for: free)
            output = OutputRawSpan()
        }
        return try body(&output)
    }

    /// The bytes written, as a span that borrows the buffer: no append, which may move
    /// the buffer, can happen while it is used (the compiler checks it).
    @inlinable
    public var bytes: RawSpan {
        @_lifetime(borrow self)
        borrowing get {
            _overrideLifetime(RawSpan(_unsafeStart: base, byteCount: storedCount), borrowing: self)
        }
    }

    /// The bytes written, as a mutable span that holds exclusive access to the buffer
    /// while it is used (the compiler checks it).
    @inlinable
    public var mutableBytes: MutableRawSpan {
        @_lifetime(&self)
        mutating get {
            _overrideLifetime(MutableRawSpan(_unsafeStart: base, byteCount: storedCount), mutating: &self)
        }
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

// MARK: - Public API: SharedRingBuffer

/// A read-only buffer shared by clones, from ``RingBuffer/freeze()``.
///
/// ``clone()`` adds one to a count kept in the segment's header (an atomic add, no heap
/// allocation); dropping a clone takes one off, and the last one releases the segment.
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

    /// The bytes, as a span that borrows this clone: it cannot outlive the clone (the
    /// compiler checks it), so the segment cannot go back while it is used. There is no
    /// mutable span: a shared buffer is read-only.
    @inlinable
    public var bytes: RawSpan {
        @_lifetime(borrow self)
        borrowing get {
            _overrideLifetime(RawSpan(_unsafeStart: base, byteCount: count), borrowing: self)
        }
    }

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

// MARK: - Public API: TypedRingBuffer

/// A vector of `Element` with a fixed capacity in a ring segment, from
/// ``RingAllocator/typed(_:capacity:)``.
///
/// Elements may be `~Copyable`: `append`, `push` and `insert` consume them, `pop` and the
/// removals move them out, the subscript borrows or modifies them in place. Dropping the
/// buffer deinitialises the elements it still holds (RingAl leaks them) and releases the
/// segment, on any thread (it is `Sendable` when `Element` is).
///
/// A full buffer never destroys an element behind the caller's back (swift-collections'
/// `RigidArray` rules): ``append(_:)`` and ``insert(_:at:)`` trap, ``push(_:)`` hands the
/// element back; ``isFull`` and ``freeCapacity`` tell beforehand.
///
/// ```swift
/// var handles = ring.typed(FileHandle.self, capacity: 8)!   // FileHandle: ~Copyable
/// if let refused = handles.push(FileHandle(descriptor)) { close(refused) }
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

    /// Whether no element can be added.
    @inlinable public var isFull: Bool { storedCount == capacity }

    /// The elements that can still be added.
    @inlinable public var freeCapacity: Int { capacity &- storedCount }

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

    /// Adds `element` at the end.
    ///
    /// - Precondition: the buffer is not full (``isFull``); ``push(_:)`` is the variant
    ///   that hands the element back instead.
    @inlinable
    public mutating func append(_ element: consuming Element) {
        precondition(storedCount < capacity, "TypedRingBuffer.append: the buffer is full (capacity \(capacity))")
        (base + storedCount).initialize(to: element)
        storedCount &+= 1
    }

    /// Adds `element` at the end when there is room: nil when it was stored, else the
    /// element itself, handed back (a full buffer never destroys it).
    @inlinable
    public mutating func push(_ element: consuming Element) -> Element? {
        guard storedCount < capacity else { return element }
        (base + storedCount).initialize(to: element)
        storedCount &+= 1
        return nil
    }

    /// Removes and returns the last element, or nil when there is none.
    @inlinable
    public mutating func pop() -> Element? {
        guard storedCount > 0 else { return nil }
        storedCount &-= 1
        return (base + storedCount).move()
    }

    /// Inserts `element` at `index`, moving the later ones up.
    ///
    /// - Precondition: `0 <= index <= count`; the buffer is not full (``isFull``).
    @inlinable
    public mutating func insert(_ element: consuming Element, at index: Int) {
        precondition(
            index >= 0 && index <= storedCount, "TypedRingBuffer.insert(at: \(index)): out of 0...\(storedCount)")
        precondition(
            storedCount < capacity, "TypedRingBuffer.insert(at: \(index)): the buffer is full (capacity \(capacity))")
        (base + index + 1).moveInitialize(from: base + index, count: storedCount &- index)
        (base + index).initialize(to: element)
        storedCount &+= 1
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

    /// Lets `body` initialize elements in the free capacity in place, through an output
    /// span: a decoder builds them where they will stay, with no copy.
    ///
    /// The span covers all of ``freeCapacity`` (at least `minimumFreeCapacity` elements,
    /// and appending more than that is fine); the elements `body` has initialized when
    /// it returns are appended. If `body` throws, the elements it had initialized are
    /// appended all the same (exactly that prefix) and the error is rethrown.
    ///
    /// ```swift
    /// var points = ring.typed(Point.self, capacity: 64)!
    /// points.append(minimumFreeCapacity: 2) { output in
    ///     output.append(Point(x: 1, y: 2))
    ///     output.append(Point(x: 3, y: 4))
    /// }
    /// ```
    ///
    /// - Returns: what `body` returns.
    /// - Precondition: `0 <= minimumFreeCapacity <= freeCapacity` (as ``append(_:)``,
    ///   a full buffer traps); `body` leaves the span it was given in place.
    @inlinable
    public mutating func append<Result: ~Copyable, Failure: Error>(
        minimumFreeCapacity: Int, initializingWith body: (inout OutputSpan<Element>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        precondition(
            minimumFreeCapacity >= 0,
            "TypedRingBuffer.append(minimumFreeCapacity: \(minimumFreeCapacity)): negative capacity")
        precondition(
            minimumFreeCapacity <= capacity &- storedCount,
            "TypedRingBuffer.append(minimumFreeCapacity: \(minimumFreeCapacity)): \(minimumFreeCapacity) elements do not fit in the \(capacity &- storedCount) free"
        )
        let free = UnsafeMutableBufferPointer(start: base + storedCount, count: capacity &- storedCount)
        var output = OutputSpan(buffer: free, initializedCount: 0)
        defer {
            // On return and on a throw alike: the initialized prefix is the buffer's.
            storedCount &+= output.finalize(for: free)
            output = OutputSpan()
        }
        return try body(&output)
    }

    /// The elements, as a span that borrows the buffer: it cannot outlive the buffer,
    /// and the buffer cannot be changed while it is used (the compiler checks both).
    /// For `BitwiseCopyable` elements, `span.bytes` is their raw bytes.
    @inlinable
    public var span: Span<Element> {
        @_lifetime(borrow self)
        borrowing get {
            _overrideLifetime(Span(_unsafeStart: UnsafePointer(base), count: storedCount), borrowing: self)
        }
    }

    /// The elements, as a mutable span that holds exclusive access to the buffer while
    /// it is used (the compiler checks it): elements are changed or swapped in place,
    /// never added or removed.
    @inlinable
    public var mutableSpan: MutableSpan<Element> {
        @_lifetime(&self)
        mutating get {
            _overrideLifetime(MutableSpan(_unsafeStart: base, count: storedCount), mutating: &self)
        }
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

// MARK: - Public API: RingAllocStatistics

/// What a ``RingAllocator`` has done, and what it holds now.
public struct RingAllocStatistics: Sendable, Equatable {
    /// Buffers handed out (fixed, extendable and typed; a move of an extendable buffer
    /// is not a new allocation).
    public var allocations: Int
    /// Allocations and growths that answered nil or false because the ring was full.
    public var failures: Int
    /// Times the cursor came round from the tail to the head.
    public var wraps: Int
    /// Free segments merged into the one before them.
    public var merges: Int
    /// Segments split because more than 8 words would have been left over.
    public var splits: Int
    /// Extendable buffers moved to the head because they met the end of the ring.
    public var moves: Int
    /// Allocations that found the ring full and waited (``RingAllocator/fullRingTimeout``).
    public var waits: Int
    /// Buffers held now (segments whose guard is locked).
    public var liveBuffers: Int
    /// Bytes of the segments held now, their headers included (exact when read).
    public var bytesInUse: Int
    /// The most bytes ever counted in use. The allocator learns of a release when its walk
    /// reaches the released segment, so this is the high-water mark of held bytes plus
    /// released bytes not yet reclaimed: an upper bound of the true peak, equal to it when
    /// buffers are released in ring order.
    public var peakBytesInUse: Int
    /// The ring's capacity in bytes (``RingAllocator/capacity``).
    public var capacity: Int
}

// MARK: - Public API: RingSegment

/// One segment of a ring, as ``RingAllocator/segments()`` lists it.
public struct RingSegment: Sendable, Equatable {
    /// The address of the segment's guard word.
    public let start: UInt
    /// The segment's size, its 16-byte header included.
    public let byteCount: Int
    /// Whether a buffer holds it.
    public let isHeld: Bool
}

// MARK: - Public API: RingAllocError

/// Why a ring could not be made. Everything else that can go wrong is either a full ring
/// (nil, or an extendable append's false) or a programmer error (a precondition).
public enum RingAllocError: Error, Equatable, Sendable {
    /// The kernel refused to map the ring (`mmap`: address space or memory exhausted).
    case outOfMemory(SystemError)
}

// MARK: - Fast path: Ring

/// The ring: a handle to the header at the start of the mapping. The header holds the
/// allocator's state (only its owner thread reads and writes it), the teardown counter
/// (any thread) and the counters; the segments follow it.
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
    /// The largest payload of one segment.
    @inlinable var largestPayload: Int { tail &- head &- Layout.segmentHeaderByteCount }

    /// The guard where the next allocation looks first.
    @inlinable var cursor: Int {
        get { field(Layout.cursorOffset) }
        nonmutating set { setField(Layout.cursorOffset, newValue) }
    }

    /// Bytes of held segments plus released segments the allocator has not reached yet.
    @inlinable var reservedBytes: Int {
        get { field(Layout.reservedOffset) }
        nonmutating set { setField(Layout.reservedOffset, newValue) }
    }

    @inlinable var peakReservedBytes: Int {
        get { field(Layout.peakOffset) }
        nonmutating set { setField(Layout.peakOffset, newValue) }
    }

    /// The full-ring wait in nanoseconds, or `Layout.noTimeLimit`.
    @inlinable var timeoutNanoseconds: Int {
        get { field(Layout.timeoutOffset) }
        nonmutating set { setField(Layout.timeoutOffset, newValue) }
    }

    /// Whether `withCurrentThread` is running a body with this allocator.
    @inlinable var isBorrowed: Bool {
        get { field(Layout.borrowedOffset) != 0 }
        nonmutating set { setField(Layout.borrowedOffset, newValue ? 1 : 0) }
    }

    @inlinable
    var counters: Counters<RingCounter> { Counters(at: header + Layout.countersOffset) }

    /// The segment bytes (header included) a buffer of `capacity` bytes aligned to
    /// `alignment` needs, after checking the request.
    @inlinable
    func segmentByteCount(capacity: Int, alignment: Int, caller: StaticString) -> Int {
        precondition(capacity > 0, "RingAllocator.\(caller)(capacity: \(capacity)): the capacity must be at least 1")
        precondition(
            isPowerOfTwo(alignment), "RingAllocator.\(caller)(alignment: \(alignment)): not a power of two")
        let padding = alignment > Layout.granule ? alignment &- Layout.granule : 0
        precondition(
            capacity <= largestPayload &- padding,
            "RingAllocator.\(caller)(capacity: \(capacity)): larger than the ring's largest buffer (\(largestPayload &- padding) bytes with alignment \(alignment))"
        )
        return (capacity &+ padding &+ Layout.granule &- 1) & ~(Layout.granule &- 1) &+ Layout.segmentHeaderByteCount
    }

    /// Reserves a segment of at least `needed` bytes at the cursor: returns its guard,
    /// locked, with the cursor moved to the guard after it; nil when the ring is full.
    ///
    /// The fast path takes the cursor's segment when it is free and big enough; anything
    /// else (a merge, a wrap, a held segment) is the slow path's.
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

    /// Locks the free segment `start..<next` for a request of `needed` bytes, splitting off
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

    /// Gives the segment of the guard at `start` back to its ring: one atomic exchange with
    /// release ordering, so that the allocator's acquiring load of the guard sees every
    /// write made to the buffer before. Any thread.
    @inlinable
    static func release(_ start: Int, ring: Ring) {
        let word = Layout.word(start)
        let held = word.load(ordering: .relaxed)
        assert(held & Layout.locked != 0, "RingAlloc: released the segment at 0x\(String(start, radix: 16)) twice")
        let before = word.exchange(held & ~(Layout.locked | Layout.orphaned), ordering: .releasing)
        if before & Layout.orphaned != 0 { ring.releaseOrphan() }
    }
}

// MARK: - Slow path: Ring

extension Ring {

    /// The allocation walk when the cursor's segment cannot be taken as it is: merges free
    /// segments after it, wraps at the tail (at most once: a full lap fails), and stops at a
    /// held segment. Merges are kept even when the walk fails.
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
    /// capped at `Layout.longestFullRingPause`, so a release is noticed within about a
    /// millisecond; its sleeps (`nanosleep`) allocate nothing.
    @usableFromInline
    func waitForRelease(_ attempt: () -> Bool) -> Bool {
        let timeout = timeoutNanoseconds
        if timeout != 0 {
            counters.addFromOwner(1, to: .waits)
            // No limit: a deadline the monotonic clock never reaches (584 years).
            let deadline =
                timeout == Layout.noTimeLimit
                ? UInt64.max : SystemInfo.deadline(afterNanoseconds: UInt64(timeout))
            var backOff = BackOff(initial: Layout.firstFullRingPause, maximum: Layout.longestFullRingPause)
            if backOff.poll(until: deadline, attempt) { return true }
        }
        counters.addFromOwner(1, to: .failures)
        return false
    }

    /// A release that found its guard orphaned: the allocator is gone, and the last
    /// segment to go unmaps the ring (see `tearDown`).
    @usableFromInline
    @inline(never)
    func releaseOrphan() {
        let outstanding = AtomicWord(at: header + Layout.outstandingOffset)
        if outstanding.wrappingSubtract(1, ordering: .acquiringAndReleasing) == 1 { unmap() }
    }
}

// MARK: - Slow path: ExtendableRingBuffer

extension ExtendableRingBuffer {
    /// Grows the buffer to hold at least `additional` bytes more than it holds (aiming at
    /// four times its capacity: growth in place copies nothing, and what is not written
    /// goes back when the body returns, so a big step only saves later steps): in place
    /// by merging the free segments after it, or by moving to the head when it meets the
    /// tail. Waits like an allocation when a timeout is set.
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
        // Keep what was merged as one free segment after the buffer.
        if reached != end { Layout.word(end).store(reached, ordering: .relaxed) }
        guard blockedByTail && start != ring.head else { return false }
        return move(toAtLeast: minimumCapacity)
    }

    /// Moves the buffer to the head of the ring (it met the tail): reserves a segment
    /// there, copies the bytes written, releases the old segment.
    mutating func move(toAtLeast minimumCapacity: Int) -> Bool {
        let ring = ring
        let savedCursor = ring.cursor
        ring.cursor = ring.tail
        let wanted = max(minimumCapacity, 2 &* storedCapacity)
        let granuleMask = Layout.granule &- 1
        func segmentByteCount(_ capacity: Int) -> Int {
            ((capacity &+ granuleMask) & ~granuleMask) &+ Layout.segmentHeaderByteCount
        }
        let newStart: Int
        if wanted <= ring.largestPayload, let reserved = ring.reserve(segmentByteCount(wanted)) {
            newStart = reserved
        } else if let reserved = ring.reserve(segmentByteCount(minimumCapacity)) {
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

    /// Shrinks the segment to the bytes written (when more than the split threshold would
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

// MARK: - Internals: Ring

extension Ring {
    /// Maps a ring and writes its header, its first free segment and its tail guard.
    static func create(capacity: Int) throws(SystemError) -> Ring {
        let total = alignUp(
            Layout.headerByteCount + capacity + Layout.segmentHeaderByteCount, to: SystemInfo.pageSize)
        guard let total else { throw SystemError(.map, code: ENOMEM) }
        assert(Layout.violation() == nil, "RingAlloc: \(Layout.violation() ?? "")")
        let memory = try SystemMemory.map(byteCount: total)
        let ring = Ring(header: memory)
        let head = Int(bitPattern: memory) + Layout.headerByteCount
        let tail = Int(bitPattern: memory) + total - Layout.segmentHeaderByteCount
        _ = AtomicWord(initializingAt: memory + Layout.outstandingOffset, to: 0)
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

    func statistics() -> RingAllocStatistics {
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
        return RingAllocStatistics(
            allocations: counters.value(of: .allocations), failures: counters.value(of: .failures),
            wraps: counters.value(of: .wraps), merges: counters.value(of: .merges), splits: counters.value(of: .splits),
            moves: counters.value(of: .moves), waits: counters.value(of: .waits), liveBuffers: live,
            bytesInUse: bytes, peakBytesInUse: peakReservedBytes, capacity: tail &- head)
    }

    /// Drops the allocator: orphans every held guard and counts them; the last of the
    /// allocator and those buffers to finish unmaps the ring. Never waits.
    func tearDown() {
        var held = 0
        walk { start, value in
            if value & Layout.locked != 0 {
                // The guard may be released at this very moment: only the exchange (or
                // this OR) that comes second sees both bits, so each held segment is
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

// MARK: - Internals: RingCounter

/// The allocator's counters, in the ring's header.
@usableFromInline
enum RingCounter: Int, CaseIterable {
    case allocations, failures, wraps, merges, splits, moves, waits
}

// MARK: - Layout

/// The layout of a ring: the header's fields and a segment's, in address order; the guard
/// bits; sizes and tuning constants. ``violation()`` pins it.
@usableFromInline
enum Layout {
    // The ring's header: 256 bytes at the start of the mapping, one word per field. The
    // first word is the only one other threads write (teardown's counter); the rest is
    // the owner thread's.

    /// Buffers orphaned by the teardown and not yet released (any thread; the side that
    /// brings it to 0 unmaps).
    @inlinable static var outstandingOffset: Int { 0 }
    /// The mapping's size in bytes, for `munmap`.
    @inlinable static var mappingByteCountOffset: Int { 8 }
    /// The address of the first guard.
    @inlinable static var headOffset: Int { 16 }
    /// The address of the tail guard.
    @inlinable static var tailOffset: Int { 24 }
    /// The guard where the next allocation looks first.
    @inlinable static var cursorOffset: Int { 32 }
    /// The bytes tally: held segments plus released ones not yet reclaimed.
    @inlinable static var reservedOffset: Int { 40 }
    /// The tally's high-water mark.
    @inlinable static var peakOffset: Int { 48 }
    /// The full-ring wait in nanoseconds (0: none; `noTimeLimit`: no limit).
    @inlinable static var timeoutOffset: Int { 56 }
    /// 1 while `withCurrentThread` runs a body with this allocator.
    @inlinable static var borrowedOffset: Int { 64 }
    /// The `Counters<RingCounter>` block, on its own lines after the owner fields.
    @inlinable static var countersOffset: Int { 128 }
    /// The header's size: the counters end well before it, and segments start 64-aligned.
    @usableFromInline static let headerByteCount = 256

    // A segment's header: two words before its payload.

    /// The guard: the address of the next segment's guard, with the guard bits below.
    @inlinable static var guardOffset: Int { 0 }
    /// The share word: a frozen buffer's clone count (unused otherwise).
    @inlinable static var shareOffset: Int { 8 }
    /// A segment's header: the guard word and the share word.
    @usableFromInline static let segmentHeaderByteCount = 16

    // Guard bits: guards are 16-aligned, so the low 4 bits of an address are free.
    /// A buffer holds the segment.
    @usableFromInline static let locked = 1
    /// The allocator was dropped while the segment was held.
    @usableFromInline static let orphaned = 2
    /// The segment's bytes are in the allocator's tally (it was handed out and the
    /// allocator has not reclaimed it since).
    @usableFromInline static let unreclaimed = 4
    @usableFromInline static let addressMask = ~15

    /// Segments and payloads are multiples of 16 bytes, so every payload is 16-aligned
    /// like malloc's.
    @usableFromInline static let granule = 16
    /// A segment is split when more than 8 words would be left over (RingAl's rule): a
    /// smaller rest would be a segment too small to be worth a guard.
    @usableFromInline static let splitThreshold = 64
    /// 2^46 bytes: no sum of sizes below it overflows.
    @usableFromInline static let maximumCapacity = 1 << 46

    /// The timeout field's value for "wait as long as it takes" (a timeout is never
    /// negative: negative durations are stored as 0).
    static let noTimeLimit = -1
    /// A full ring's first look after 1 µs: a release by a running thread is that close.
    /// (Computed: a stored `Duration` would need a lazy global's `swift_once`.)
    static var firstFullRingPause: Duration { .microseconds(1) }
    /// And at most every millisecond: the delay a waiting allocation may add to a release.
    static var longestFullRingPause: Duration { .milliseconds(1) }

    @inlinable
    static func pointer(_ address: Int) -> UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: address).unsafelyUnwrapped
    }

    /// The guard word of the segment at `start`.
    @inlinable
    static func word(_ start: Int) -> AtomicWord { AtomicWord(at: pointer(start &+ guardOffset)) }

    /// The share word of the segment at `start`.
    @inlinable
    static func shareWord(of start: Int) -> UnsafeMutableRawPointer { pointer(start &+ shareOffset) }

    /// The first payload byte of the segment at `start`, aligned to `alignment`.
    @inlinable
    static func payload(of start: Int, alignment: Int) -> UnsafeMutableRawPointer {
        let first = start &+ segmentHeaderByteCount
        return pointer(alignment <= granule ? first : (first &+ alignment &- 1) & ~(alignment &- 1))
    }

    @inlinable
    static func assertHeld(_ start: Int) {
        assert(
            word(start).load(ordering: .relaxed) & locked != 0,
            "RingAlloc: the segment at 0x\(String(start, radix: 16)) is not held")
    }

    /// What is wrong with the layout above, or nil, as AllocCore's `LayoutCheck` finds it:
    /// the fields of each header in address order, word-aligned and inside their header
    /// (the counters after the owner fields and before the first segment); the ring's
    /// header whole lines (the first segment, declared after it, 64-aligned); a segment's
    /// guard its first word and its header whole granules (the payload, declared after
    /// it, granule-aligned); the guard bits below the granule. Run by every ring's
    /// creation in debug builds and by ``Ring/integrityViolation()``.
    static func violation() -> String? {
        let word = MemoryLayout<Int>.size
        var header = LayoutCheck("RingHeader")
        header.field("outstanding", at: outstandingOffset, size: word)
        header.field("mappingByteCount", at: mappingByteCountOffset, size: word)
        header.field("head", at: headOffset, size: word)
        header.field("tail", at: tailOffset, size: word)
        header.field("cursor", at: cursorOffset, size: word)
        header.field("reserved", at: reservedOffset, size: word)
        header.field("peak", at: peakOffset, size: word)
        header.field("timeout", at: timeoutOffset, size: word)
        header.field("borrowed", at: borrowedOffset, size: word)
        header.field("counters", at: countersOffset, size: Counters<RingCounter>.byteCount)
        header.field("first segment", at: headerByteCount, size: 0, alignment: 64)
        var segment = LayoutCheck("SegmentHeader")
        segment.field("guard", at: guardOffset, size: word, adjacent: true)
        segment.field("share", at: shareOffset, size: word)
        segment.field("payload", at: segmentHeaderByteCount, size: 0, alignment: granule)
        if let violation = header.result(within: headerByteCount) ?? segment.result(within: segmentHeaderByteCount) {
            return violation
        }
        if (locked | orphaned | unreclaimed) & addressMask != 0 || addressMask != ~(granule - 1) {
            return "the guard bits do not fit below the \(granule)-byte granule"
        }
        return nil
    }
}

// MARK: - Integrity walker

extension Ring {
    /// The first broken invariant of the ring and its layout, described, or nil (spec
    /// section 4; ``RingAllocator/integrityViolation()`` lists what it checks). Run by the
    /// model test after every step.
    func integrityViolation() -> String? {
        if let layout = Layout.violation() { return "the layout: \(layout)" }
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
                    "the guard at \(hex(start)) points to \(hex(next)), outside \(hex(start + Layout.segmentHeaderByteCount))...\(hex(tail)) or misaligned"
            } else if next &- start < Layout.segmentHeaderByteCount + Layout.granule {
                problem = "the segment at \(hex(start)) is \(next - start) bytes, smaller than a header and a granule"
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
            return "the bytes tally is \(reservedBytes), but held and unreclaimed segments make \(tally)"
        }
        return nil
    }
}
