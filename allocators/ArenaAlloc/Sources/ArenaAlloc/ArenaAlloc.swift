// ArenaAlloc: bump arenas that reset in one step, for memory whose lifetime is a cycle
// (a frame, a request, a compiler pass).
//
// # What it is
//
// An arena hands out memory by moving a cursor through a *chunk*; nothing is freed one
// by one. `reset()` runs the deinitializers of the values put into the arena (newest
// first), keeps one chunk and moves the cursor back to its start, so the next cycle
// allocates without calling malloc at all. When a chunk is full the arena takes a bigger
// one (blink-alloc's rule: at least the sum of all earlier chunks plus the request), so
// the number of chunks stays logarithmic in the bytes of a cycle. A reset after a cycle
// that spanned chunks replaces them by one chunk that holds the whole cycle, so a cycle
// that repeats takes no new chunk after the first.
//
// ```swift
// var arena = Arena()
// let total = try arena.withScope { scope in
//     let numbers = try scope.collect(1...100)            // an array in the arena
//     let name = try scope.copy("arena")                  // UTF-8 bytes in the arena
//     let node = try scope.put(Node(id: 7))               // deinitialized at the reset
//     var squares = try ArenaArray<Int>(in: scope)        // a growable array in the arena
//     for n in 1...10 { try squares.append(n * n) }       // grows in place at the tip
//     return numbers.count + name.count + node.value.id + squares.span[9]
// }                                                       // the arena is reset here
// ```
//
// # Growable collections, values built in place, a cap on memory
//
// - ``ArenaArray`` and ``ArenaString`` (bumpalo's `collections::Vec` and `String`): made
//   in a scope, they grow through the arena, in place while they are its newest block,
//   and read and write through `Span`, `MutableSpan` and `OutputSpan`. They are
//   `~Copyable` and `~Escapable`: the compiler keeps them inside their scope.
// - ``Arena/putResult(of:)`` (bumpalo's `alloc_with`): the memory first, then the value
//   from a closure, which the optimizer can build right there instead of on the stack.
// - ``Arena/allocationLimit`` (bumpalo's `set_allocation_limit`): the most bytes of
//   chunks an arena (or a ``SharedArena`` with its local arenas, or every arena of an
//   ``ArenaCache``) may hold; past it, requests answer nil and the reset works as ever.
//
// # The four roles (blink-alloc's, with Swift names)
//
// - ``Arena``: one owner at a time (`~Copyable`, may move to another thread); the fast
//   path is a few integer operations on stored properties.
// - ``SharedArena``: any number of threads allocate at once; each thread bumps through
//   its own 4 KiB window of the shared chunk (found through AllocCore's `arenaAlloc`
//   thread-local slot) and takes a new window with one fetch-and-add. Copies of the
//   value share one arena; `reset()` needs the only copy.
// - ``LocalArena``: a thread's own ``Arena`` whose chunks are lent by a ``SharedArena``;
//   its allocations live until the shared arena resets, and the shared arena remembers
//   the largest chunk a local arena needed, so the next one starts that big.
// - ``ArenaCache``: warm arenas that tasks take and give back; a given-back arena is
//   reset and keeps its chunk.
//
// # Safety, in three tiers (the spec's section 5 has the table)
//
// 1. Compile time: inside ``Arena/withScope(_:)`` the references (``ArenaRef``,
//    ``ArenaSpan``) and the collections (``ArenaArray``, ``ArenaString``) are `~Escapable`
//    and depend on the scope, so they cannot be returned, stored outside or captured by
//    an escaping closure; a span of a collection borrows it, so it cannot grow (and
//    move) under the span; the arena is accessed exclusively for the whole body, so it
//    cannot be reset, moved or destroyed meanwhile.
// 2. Run time, debug builds: the escapable handles of the direct API (``ArenaPointer``,
//    ``ArenaBuffer``) carry the arena's generation, and every access traps with a message
//    when the arena was reset since. A reset while a scope is open traps in every build.
// 3. The caller's duty: raw pointers from `allocate`, and any handle used after its
//    arena was destroyed or (for release builds) reset.
//
// # Memory
//
// Chunks come from the C heap (`malloc`): chunks start at 4 KiB, where a page mapping
// would cost a system call per chunk and a page per arena, and glibc and jemalloc map
// large requests directly anyway. A failed `malloc`, like a chunk the allocation limit
// refuses, is an answer (nil, or ``ArenaAllocError/outOfMemory``), never a crash.

import AllocCore
import Glibc
import Synchronization

// MARK: - Public API: Arena

/// A bump arena for one owner at a time: allocation moves a cursor, ``reset()`` frees
/// everything at once and keeps the memory warm for the next cycle.
///
/// `Arena` is `~Copyable`: it has one owner, which may move it to another thread
/// (it is `Sendable`) but never share it. Every allocation and the reset are `mutating`,
/// so Swift's exclusivity rules keep them from overlapping.
///
/// ```swift
/// var arena = Arena()
/// for frame in frames {
///     let vertices = arena.allocate(of: Vertex.self, capacity: frame.count)!
///     render(frame, into: vertices)
///     arena.reset()                      // no free per vertex buffer; no malloc next frame
/// }
/// ```
///
/// Three ways to use it, from safest to rawest:
/// - ``withScope(_:)``: values, strings and collections put in the arena through a
///   scope whose references cannot leave the closure (checked by the compiler), and the
///   growable ``ArenaArray`` and ``ArenaString``; the arena is reset when the closure
///   returns.
/// - ``put(_:)``, ``putResult(of:)``, ``copy(_:)-(StringProtocol)``, ``collect(_:)``: the
///   same operations returning escapable handles that check, in debug builds, that the
///   arena was not reset since they were made.
/// - ``allocate(byteCount:alignment:)`` and ``allocate(of:capacity:)``: raw memory, the
///   caller's to keep within the cycle; the newest allocation can grow, shrink or be
///   rolled back in place (``resize(_:from:to:alignment:)``, ``deallocate(_:byteCount:)``).
public struct Arena: ~Copyable, @unchecked Sendable {
    /// The largest alignment any allocation may ask for: the page size.
    public static let maximumAlignment = 4096
    /// The first chunk's default size. Small enough that an arena used for a handful of
    /// objects costs a page; the growth rule makes later chunks as big as they need to be.
    public static let defaultFirstChunkByteCount = 4096
    /// Chunk sizes are powers of two below this and multiples of it above (blink-alloc's
    /// threshold): a power-of-two rounding would waste up to half of a large chunk.
    public static let chunkGranularity = 16 << 10

    // The fast path's state. Addresses are kept as integers so that the bound check is
    // one subtraction and an empty arena (cursor 1, limit 0) fails it for every request.
    @usableFromInline var cursor: Int
    @usableFromInline var limit: Int
    /// No block below this address changes size in place or rolls back: where the chunk
    /// started, or the end of the last value that has a deinit record (a rollback would
    /// free its record too). The newest block is the one that ends at the cursor, so an
    /// allocation writes nothing but the cursor (a second store measured 15% of it).
    @usableFromInline var rollbackFloor: Int
    /// Whether a ``withScope(_:)`` body is running: a reset then traps.
    @usableFromInline var scopeIsOpen: Bool
    /// The newest chunk (the largest: every chunk is larger than all earlier ones together).
    @usableFromInline var chunk: UnsafeMutableRawPointer?
    /// The newest deinit record (values to deinitialize at the reset, newest first).
    @usableFromInline var deinitRecords: UnsafeMutableRawPointer?
    /// Bytes used in chunks before the newest: what `bytesInUse` adds to the newest's use.
    @usableFromInline var bytesUsedInEarlierChunks: Int
    /// The highest `bytesInUse` of this cycle seen at a point where it fell (a rollback, a
    /// shrink); `reset` sizes a consolidated chunk by it.
    @usableFromInline var cyclePeakBytes: Int
    @usableFromInline var chunkCount: Int
    /// Bytes of the chunks held, headers included: what the allocation limit bounds.
    @usableFromInline var reservedBytes: Int
    /// The most bytes of chunks the arena may hold (``allocationLimit``), `Int.max` for
    /// none. Read where a chunk is taken and by the reset, never on the fast path.
    @usableFromInline var chunkByteLimit: Int
    /// Whether a chunk held now was cut to the allocation limit: smaller than the growth
    /// rule asks, so it may be smaller than the older chunks together, and the newest
    /// chunk may not be the largest. Cleared by the reset, which keeps one chunk.
    var holdsChunkCutToLimit: Bool
    @usableFromInline var peakBytes: Int
    @usableFromInline var resetCount: Int
    let firstChunkByteCount: Int
    /// Where chunks come from when the arena is a ``LocalArena``'s; nil for the C heap.
    let lender: SharedArenaStorage?
    #if DEBUG
        /// The arena's generation, in memory of its own so that handles can read it while
        /// the arena value moves: one more per reset (debug builds only).
        @usableFromInline let generation: UnsafeMutablePointer<Int>
    #endif

    /// An empty arena; it takes its first chunk (of `firstChunkByteCount` bytes, or more
    /// for a larger first request) when it first allocates.
    ///
    /// - Parameters:
    ///   - firstChunkByteCount: the first chunk's size (rounded up by the growth rule).
    ///   - allocationLimit: the most bytes of chunks the arena may hold, or nil for no
    ///     limit; see ``allocationLimit``.
    /// - Precondition: `firstChunkByteCount` is positive; `allocationLimit` is not negative.
    public init(firstChunkByteCount: Int = Arena.defaultFirstChunkByteCount, allocationLimit: Int? = nil) {
        self.init(
            firstChunkByteCount: firstChunkByteCount, allocationLimit: allocationLimit, lender: nil, adopting: nil)
    }

    init(
        firstChunkByteCount: Int, allocationLimit: Int?, lender: SharedArenaStorage?,
        adopting warmChunk: UnsafeMutableRawPointer?
    ) {
        precondition(firstChunkByteCount > 0, "Arena: firstChunkByteCount \(firstChunkByteCount) is not positive")
        chunkByteLimit = Arena.chunkByteLimit(allocationLimit, owner: "Arena")
        holdsChunkCutToLimit = false
        cursor = 1
        limit = 0
        rollbackFloor = 0
        scopeIsOpen = false
        chunk = nil
        deinitRecords = nil
        bytesUsedInEarlierChunks = 0
        cyclePeakBytes = 0
        chunkCount = 0
        reservedBytes = 0
        peakBytes = 0
        resetCount = 0
        self.firstChunkByteCount = firstChunkByteCount
        self.lender = lender
        #if DEBUG
            assert(ArenaLayout.isChecked)
            generation = .allocate(capacity: 1)
            generation.initialize(to: 0)
        #endif
        if let warmChunk {
            // Its first word linked it into the cache: it is the arena's only chunk now.
            ChunkHeader.setPrevious(of: warmChunk, to: nil)
            install(warmChunk)
        }
    }

    deinit {
        precondition(!scopeIsOpen, "Arena destroyed while a withScope body is running")
        Arena.runDeinitializers(from: deinitRecords)
        var next = chunk
        while let current = next {
            next = ChunkHeader.previous(of: current)
            releaseChunk(current)
        }
        #if DEBUG
            generation.deallocate()
        #endif
    }

    /// `byteCount` bytes aligned to `alignment`, or nil when the arena cannot get a chunk
    /// that large (the size overflows, or `malloc` fails).
    ///
    /// The memory is uninitialized and stays valid until the next ``reset()`` or the
    /// arena's end. A zero-byte request returns a pointer that must not be read or written
    /// (it may equal the next allocation's address). A zero-byte block stays valid for
    /// ``resize(_:from:to:alignment:)`` and ``deallocate(_:byteCount:)`` whatever happens
    /// to its neighbours: a rollback of the block before it may leave it past the cursor.
    ///
    /// - Precondition: `byteCount >= 0`; `alignment` is a power of two at most
    ///   ``maximumAlignment``.
    /// - Complexity: O(1): a few integer operations; a new chunk (one `malloc`) when the
    ///   current one is full.
    @inlinable @inline(__always)
    public mutating func allocate(byteCount: Int, alignment: Int = 16) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "Arena.allocate: negative byteCount \(byteCount)")
        precondition(
            isPowerOfTwo(alignment) && alignment <= Arena.maximumAlignment,
            "Arena.allocate: alignment \(alignment) is not a power of two up to \(Arena.maximumAlignment)")
        // The cursor is usually aligned already (same-typed allocations keep it so), and a
        // predicted branch takes the rounding off the cursor's dependency chain: an
        // allocation then waits on one addition, not three operations (0.84 → 0.5 ns).
        var aligned = cursor
        if _slowPath(aligned & (alignment &- 1) != 0) { aligned = (aligned &+ (alignment &- 1)) & ~(alignment &- 1) }
        if byteCount <= limit &- aligned {
            cursor = aligned &+ byteCount
            return UnsafeMutableRawPointer(bitPattern: aligned)
        }
        return allocateInNewChunk(byteCount: byteCount, alignment: alignment)
    }

    /// Uninitialized memory for `capacity` values of `T`, bound to `T`, or nil when the
    /// byte count overflows or memory is exhausted. Nothing is deinitialized at the reset:
    /// values with a deinit belong in ``put(_:)`` or ``collect(_:)``. As with
    /// `UnsafeMutablePointer.allocate`, capacity 0 and zero-size types are fine (a type's
    /// stride is at least 1).
    ///
    /// - Precondition: `capacity >= 0`; `T`'s alignment is at most ``maximumAlignment``.
    @inlinable @inline(__always)
    public mutating func allocate<T>(of type: T.Type, capacity: Int) -> UnsafeMutableBufferPointer<T>? {
        precondition(capacity >= 0, "Arena.allocate(of:capacity:): negative capacity \(capacity)")
        guard let byteCount = checkedByteCount(count: capacity, stride: MemoryLayout<T>.stride),
            let raw = allocate(byteCount: byteCount, alignment: MemoryLayout<T>.alignment)
        else { return nil }
        return UnsafeMutableBufferPointer(start: raw.bindMemory(to: T.self, capacity: capacity), count: capacity)
    }

    /// Resizes the block at `pointer` (from ``allocate(byteCount:alignment:)``, asked with
    /// `oldByteCount` and `alignment`) to `newByteCount` bytes, keeping its first
    /// `min(oldByteCount, newByteCount)` bytes.
    ///
    /// The newest allocation grows and shrinks in place while it fits its chunk (a shrink
    /// gives the bytes back to the arena). An older block shrinks in place (its tail stays
    /// used until the reset) and grows by moving to a new allocation (the old bytes stay
    /// used until the reset).
    ///
    /// - Returns: the block's address, or nil when it must move and memory is exhausted;
    ///   the block is then unchanged.
    /// - Precondition: both byte counts are `>= 0`; `pointer` is a live block of this arena.
    @inlinable
    public mutating func resize(
        _ pointer: UnsafeMutableRawPointer, from oldByteCount: Int, to newByteCount: Int, alignment: Int = 16
    ) -> UnsafeMutableRawPointer? {
        precondition(
            oldByteCount >= 0 && newByteCount >= 0,
            "Arena.resize: negative byteCount (from \(oldByteCount) to \(newByteCount))")
        let start = Int(bitPattern: pointer)
        // A live block with bytes ends at or before the cursor; past it, its bytes were
        // rolled back (a use after the rollback). A zero-byte block owns no bytes, so it
        // may lie past the cursor: a rollback of the block it ended gives that block's
        // bytes back and leaves the zero-byte block where it was, still valid. It is
        // then not the newest, so it moves to grow (copying nothing).
        assert(
            oldByteCount == 0 || start &+ oldByteCount <= cursor || chunkCount > 1,
            "Arena.resize of \(pointer) (\(oldByteCount) bytes), which ends past the cursor \(cursor)")
        if isNewest(start, byteCount: oldByteCount) {
            if newByteCount <= limit &- start {
                if newByteCount < oldByteCount { noteFall() }
                cursor = start &+ newByteCount
                return pointer
            }
        } else if newByteCount <= oldByteCount {
            return pointer
        }
        return moveBlock(pointer, from: oldByteCount, to: newByteCount, alignment: alignment)
    }

    /// Gives the newest allocation's bytes back (a rollback); an older block is left
    /// until the reset. The newest block is the one that ends at the cursor: after a
    /// rollback, the block before it is the newest when nothing (no alignment padding, no
    /// value with a deinit) lies between them, so blocks freed in reverse order of
    /// allocation all come back, like a stack.
    ///
    /// - Parameters:
    ///   - pointer: a block of this arena.
    ///   - byteCount: the byte count it was allocated (or last resized) with.
    /// - Returns: whether the bytes came back.
    @inlinable @discardableResult
    public mutating func deallocate(_ pointer: UnsafeMutableRawPointer, byteCount: Int) -> Bool {
        precondition(byteCount >= 0, "Arena.deallocate: negative byteCount \(byteCount)")
        let start = Int(bitPattern: pointer)
        guard isNewest(start, byteCount: byteCount) else { return false }
        noteFall()
        cursor = start
        return true
    }

    /// Deinitializes every value put with a deinit (newest first), frees every chunk but
    /// one, and moves the cursor back to that chunk's start.
    ///
    /// The chunk kept is the largest when it held the whole cycle; when the cycle spanned
    /// chunks that one cannot hold, they are all replaced by a single chunk sized for the
    /// cycle (by the growth rule), so a cycle that repeats needs no new chunk after the
    /// first. Were that `malloc` to fail, the largest chunk is kept: a reset never fails.
    /// Under an ``allocationLimit`` the arena holds at most the limit afterwards: it keeps
    /// no chunk rather than one above the limit, and consolidates only within it (when
    /// the limit cannot hold the largest chunk and the new one at once, the largest goes
    /// first, and a failed `malloc` leaves the arena with no chunk).
    ///
    /// Every pointer and handle from before is invalid afterwards; in debug builds the
    /// handles (``ArenaPointer``, ``ArenaBuffer``) trap when used.
    ///
    /// - Precondition: no ``withScope(_:)`` body is running on this arena (traps with a
    ///   message; the compiler already refuses it for an arena in a variable).
    /// - Complexity: O(values with a deinit + chunks); O(1) after warm-up with trivial values.
    @inlinable
    public mutating func reset() {
        precondition(!scopeIsOpen, "Arena.reset() while a withScope body is running on this arena")
        if deinitRecords == nil && chunkCount <= 1 && reservedBytes <= chunkByteLimit, let chunk {
            // The warm case: one chunk within the limit, nothing to deinitialize.
            let used = max(cursor &- ChunkHeader.dataStart(of: chunk), cyclePeakBytes)
            if used > peakBytes { peakBytes = used }
            cursor = ChunkHeader.dataStart(of: chunk)
            rollbackFloor = cursor
            cyclePeakBytes = 0
            resetCount &+= 1
            #if DEBUG
                generation.pointee &+= 1
            #endif
            return
        }
        resetSlow()
    }

    /// Runs `body` with a scope that puts values, strings and collections into the arena,
    /// then resets the arena (also when `body` throws).
    ///
    /// The references a scope returns (``ArenaRef``, ``ArenaSpan``) are non-escapable and
    /// depend on the scope: the compiler refuses to return them from `body`, store them
    /// outside it or capture them in an escaping closure. The arena is borrowed mutably for
    /// the whole call, so `body` cannot reset, move or destroy it.
    ///
    /// ```swift
    /// var arena = Arena()
    /// let sum = try arena.withScope { scope in
    ///     let squares = try scope.collect((1...10).lazy.map { $0 * $0 })
    ///     return squares.withUnsafeBufferPointer { $0.reduce(0, +) }
    /// }
    /// ```
    ///
    /// - Precondition: no scope is open on this arena (it cannot be, short of reaching
    ///   the arena through an unsafe pointer inside `body`).
    @inlinable
    public mutating func withScope<Result, Failure: Error>(
        _ body: (ArenaScope) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        precondition(!scopeIsOpen, "Arena.withScope inside a withScope body of the same arena")
        scopeIsOpen = true
        let result = withUnsafeMutablePointer(to: &self) { arena in
            Swift.Result { () throws(Failure) -> Result in try body(ArenaScope(arena: arena)) }
        }
        scopeIsOpen = false
        reset()
        return try result.get()
    }

    /// The most bytes the arena may take from the system: the sizes of the chunks it
    /// holds, headers included (what ``statistics()`` reports as `reservedBytes`), or nil
    /// (the default) for no limit. bumpalo's `set_allocation_limit`; a cap on the memory
    /// of one request, say.
    ///
    /// A request that needs a chunk the limit does not allow answers nil (a scope throws
    /// ``ArenaAllocError/outOfMemory``), as when `malloc` fails, and the arena stays
    /// usable. When the chunk the growth rule asks for does not fit under the limit, the
    /// arena takes the largest chunk that does and still holds the request (bumpalo's
    /// fallback), so all of the limit but chunk headers and tails is usable.
    ///
    /// ```swift
    /// var arena = Arena(allocationLimit: 1 << 20)       // at most 1 MiB of chunks
    /// while let block = arena.allocate(byteCount: 1000) { use(block) }
    /// arena.reset()                                      // and it allocates again
    /// ```
    ///
    /// The limit may change at any time but while a scope is open (the arena is borrowed
    /// then). Lowered below what the arena holds, it takes nothing away: the memory held
    /// stays valid and in use, and no new chunk is taken. The next ``reset()`` releases
    /// the excess: after a reset the arena holds at most the limit (it keeps no chunk
    /// rather than one above the limit, and consolidates a cycle into one chunk only
    /// within the limit). A limit of 0 lets the arena take no chunk: every request that
    /// needs one fails, a zero-byte request to an arena that holds none included.
    ///
    /// - Precondition: the limit is not negative.
    public var allocationLimit: Int? {
        get { chunkByteLimit == Int.max ? nil : chunkByteLimit }
        set { chunkByteLimit = Arena.chunkByteLimit(newValue, owner: "Arena") }
    }

    /// The arena's counters now (section 8 of the spec).
    public func statistics() -> ArenaAllocStatistics {
        ArenaAllocStatistics(
            chunks: chunkCount, reservedBytes: reservedBytes, bytesInUse: bytesInUse,
            peakBytesInUse: max(peakBytes, cyclePeakBytes, bytesInUse), resets: resetCount)
    }

    /// Bytes handed out since the last reset, alignment padding included (the unused tail
    /// of a full chunk is not counted).
    @inlinable
    public var bytesInUse: Int {
        guard let chunk else { return 0 }
        return bytesUsedInEarlierChunks &+ (cursor &- ChunkHeader.dataStart(of: chunk))
    }
}

extension Arena {
    /// Moves `value` into the arena and returns a handle to it, or nil when memory is
    /// exhausted (the value is then destroyed). A value with a deinit (not trivially
    /// copyable) is deinitialized at the next reset, newest first; a trivial one costs
    /// only its bytes.
    @inlinable
    public mutating func put<T>(_ value: T) -> ArenaPointer<T>? {
        guard let slot = allocateValues(of: T.self, count: 1) else { return nil }
        slot.initialize(to: value)
        return ArenaPointer(slot, in: self)
    }

    /// Like ``put(_:)`` for a type that has no deinit, enforced by the compiler: never
    /// leaves a record, whatever the build.
    @inlinable
    public mutating func putWithoutDeinit<T: BitwiseCopyable>(_ value: T) -> ArenaPointer<T>? {
        guard let raw = allocate(byteCount: MemoryLayout<T>.stride, alignment: MemoryLayout<T>.alignment) else {
            return nil
        }
        let slot = raw.bindMemory(to: T.self, capacity: 1)
        slot.initialize(to: value)
        return ArenaPointer(slot, in: self)
    }

    /// Builds a value in the arena from what `body` returns (bumpalo's `alloc_with`): the
    /// memory is taken first, then `body` runs and its result goes into it. Returns a
    /// handle, or nil when memory is exhausted (`body` is then not called).
    ///
    /// What it saves is the copy of a large value: ``put(_:)`` receives a value that
    /// already exists and copies it in. Here, when the optimizer inlines `body` (a closure
    /// literal usually is), it builds the value straight in the arena: measured with
    /// `swiftc -O`, a 528-byte struct made in the closure was written by stores into the
    /// arena's memory, with no stack copy. A closure that returns what an opaque function
    /// made still costs one copy (the function's result is built on the stack). As in
    /// Rust, this is an optimization the compiler may make, not a guarantee.
    ///
    /// A value with a deinit is deinitialized at the reset, as with ``put(_:)``. When
    /// `body` throws, its memory is given back and the error is rethrown.
    ///
    /// ```swift
    /// let table = arena.putResult { LookupTable(filledWith: 0) }!   // 4 KiB, not built on the stack
    /// ```
    @inlinable
    public mutating func putResult<T, Failure: Error>(
        of body: () throws(Failure) -> T
    ) throws(Failure) -> ArenaPointer<T>? {
        guard let slot = allocateSlot(of: T.self) else { return nil }
        do {
            slot.initialize(to: try body())
        } catch {
            deallocate(UnsafeMutableRawPointer(slot), byteCount: MemoryLayout<T>.stride)
            throw error
        }
        guard finishPut(slot) else { return nil }
        return ArenaPointer(slot, in: self)
    }

    /// Copies the UTF-8 bytes of `string` into the arena (no terminating zero), or nil
    /// when memory is exhausted. ``ArenaBuffer/string`` reads them back as a `String`.
    @inlinable
    public mutating func copy(_ string: some StringProtocol) -> ArenaBuffer<UInt8>? {
        copy(string.utf8)
    }

    /// Copies the elements of `collection` into the arena, or nil when memory is
    /// exhausted. Elements with a deinit are deinitialized at the reset.
    ///
    /// - Precondition: the collection's `count` is its number of elements (a collection
    ///   whose count lies belongs in ``collect(_:)``).
    @inlinable
    public mutating func copy<C: Collection>(_ collection: C) -> ArenaBuffer<C.Element>? {
        let count = collection.count
        guard let start = allocateValues(of: C.Element.self, count: count) else { return nil }
        let buffer = UnsafeMutableBufferPointer(start: start, count: count)
        var (rest, written) = buffer.initialize(from: collection)
        precondition(
            written == count && rest.next() == nil,
            "Arena.copy: the collection's count \(count) is not its number of elements; use collect")
        return ArenaBuffer(start, count: count, in: self)
    }

    /// Builds an array in the arena from any sequence, or nil when memory is exhausted.
    ///
    /// The sequence's `underestimatedCount` is only a first guess: the array starts at
    /// that capacity (at most ``collectInitialCapacityLimit``), grows in place while it
    /// is the newest allocation and its chunk has room, doubles into a new chunk when
    /// not, and gives back what it did not use. A count that lies either way costs time,
    /// never correctness. The sequence must not allocate from this arena while it is
    /// iterated (it cannot: the arena is borrowed mutably).
    @inlinable
    public mutating func collect<S: Sequence>(_ sequence: S) -> ArenaBuffer<S.Element>? {
        guard let (start, count) = collectElements(sequence) else { return nil }
        return ArenaBuffer(start, count: count, in: self)
    }

    /// The initial capacity `collect` trusts a sequence's `underestimatedCount` with;
    /// beyond it the array doubles as elements arrive, so a count that lies upwards cannot
    /// make the arena reserve more than this many elements in vain.
    public static let collectInitialCapacityLimit = 1 << 16
}

// MARK: - Public API: SharedArena

/// An arena that any number of threads allocate from at once (blink-alloc's
/// `SyncBlinkAlloc`).
///
/// Each thread bumps through a *window* of its own: 4 KiB of the shared chunk, taken with
/// one fetch-and-add on the chunk's cursor, found through AllocCore's `arenaAlloc`
/// thread-local slot. So a small allocation costs a thread-local load, a compare and a
/// bump, and threads do not contend for the cursor's cache line but once per window. A
/// request above 1 KiB goes to the shared cursor directly. A thread keeps a window in
/// each of the last four shared arenas it used, so using several in turn costs no new
/// window per switch; a window's unused rest stays reserved until the reset (under
/// 4 KiB per thread and arena while a thread uses at most four in turn).
///
/// Copies of a `SharedArena` value share one arena (hand a copy to each thread).
/// ``reset()`` is `mutating` and traps unless it is called on the only copy left, which
/// proves that no other thread, and no ``LocalArena``, can still allocate from it.
///
/// ```swift
/// var shared = SharedArena()
/// let workers = (0..<4).map { _ in
///     try! OSThread.spawn { [shared] in
///         var local = shared.makeLocalArena()        // no atomics on its fast path
///         for _ in 0..<1000 { _ = local.allocate(byteCount: 32) }
///     }
/// }
/// for worker in workers { worker.join() }
/// shared.reset()                                      // the workers' copies are gone
/// ```
///
/// A thread that allocates a lot, or large blocks, is better served by a ``LocalArena``:
/// no thread-local lookup, and it resets on its own.
public struct SharedArena: Sendable {
    @usableFromInline var storage: SharedArenaStorage

    /// An empty shared arena; its first chunk (and a local arena's) is at least
    /// `firstChunkByteCount` bytes.
    ///
    /// - Parameter allocationLimit: the most bytes of chunks the arena may hold, its local
    ///   arenas' included, or nil for no limit; see ``allocationLimit``.
    /// - Precondition: `firstChunkByteCount` is positive; `allocationLimit` is not negative.
    public init(firstChunkByteCount: Int = Arena.defaultFirstChunkByteCount, allocationLimit: Int? = nil) {
        precondition(firstChunkByteCount > 0, "SharedArena: firstChunkByteCount \(firstChunkByteCount) is not positive")
        storage = SharedArenaStorage(
            firstChunkByteCount: firstChunkByteCount,
            chunkByteLimit: Arena.chunkByteLimit(allocationLimit, owner: "SharedArena"))
    }

    /// The most bytes the shared arena may take from the system: its own chunks and every
    /// chunk it lends to local arenas (lent, retired or spare), headers included, as
    /// ``statistics()`` reports them in `reservedBytes`; nil (the default) for no limit.
    ///
    /// The rules are ``Arena/allocationLimit``'s: a request that needs a chunk the limit
    /// does not allow answers nil (so does a local arena's when the shared arena cannot
    /// lend it a chunk); a chunk that the growth rule makes too large is cut to what the
    /// limit leaves; a limit lowered below what is held takes nothing away, and the next
    /// ``reset()`` releases the excess (spare chunks first, then its own chunk).
    ///
    /// Any thread may read or change it at any time: it is kept under the lock that
    /// every chunk is taken under, so each chunk is checked against the limit as it
    /// stands at that moment, and the bytes held never pass the largest limit set
    /// meanwhile. A local arena may have a limit of its own besides
    /// (``LocalArena/allocationLimit``).
    ///
    /// - Precondition: the limit is not negative.
    public var allocationLimit: Int? {
        get { storage.lock.withLock { storage.chunkByteLimit == Int.max ? nil : storage.chunkByteLimit } }
        nonmutating set {
            let limit = Arena.chunkByteLimit(newValue, owner: "SharedArena")
            storage.lock.withLock { storage.chunkByteLimit = limit }
        }
    }

    /// `byteCount` bytes aligned to `alignment`, valid until the shared arena's reset, or
    /// nil when memory is exhausted. Any thread.
    ///
    /// - Precondition: as ``Arena/allocate(byteCount:alignment:)``.
    /// - Complexity: O(1): a bump in the thread's window; one fetch-and-add per window
    ///   (a compare-exchange loop for alignments above 8 outside a window); a chunk is
    ///   added under a lock when the current one is full.
    @inlinable
    public func allocate(byteCount: Int, alignment: Int = 16) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "SharedArena.allocate: negative byteCount \(byteCount)")
        precondition(
            isPowerOfTwo(alignment) && alignment <= Arena.maximumAlignment,
            "SharedArena.allocate: alignment \(alignment) is not a power of two up to \(Arena.maximumAlignment)")
        return storage.allocate(byteCount: byteCount, alignment: alignment)
    }

    /// Uninitialized memory for `capacity` values of `T` (never deinitialized), or nil.
    @inlinable
    public func allocate<T>(of type: T.Type, capacity: Int) -> UnsafeMutableBufferPointer<T>? {
        precondition(capacity >= 0, "SharedArena.allocate(of:capacity:): negative capacity \(capacity)")
        guard let byteCount = checkedByteCount(count: capacity, stride: MemoryLayout<T>.stride),
            let raw = allocate(byteCount: byteCount, alignment: MemoryLayout<T>.alignment)
        else { return nil }
        return UnsafeMutableBufferPointer(start: raw.bindMemory(to: T.self, capacity: capacity), count: capacity)
    }

    /// A local arena for the calling thread, fed with whole chunks by this arena. Its
    /// first chunk is as large as the largest chunk any local arena of this shared arena
    /// has needed so far.
    public func makeLocalArena() -> LocalArena {
        LocalArena(lender: storage)
    }

    /// Frees its own chunks but one (the largest if it held the cycle, else one new chunk
    /// sized for the cycle, as ``Arena/reset()``), makes the chunks that local arenas gave
    /// back spare (lent again to the next local arenas), moves the cursor back, and
    /// retires every thread's window. Over an ``allocationLimit`` lowered below what it
    /// holds, it frees spare chunks, then its own chunk, until it is within the limit.
    ///
    /// - Precondition: this is the only copy of the shared arena, and no local arena of
    ///   it is alive (traps with a message otherwise).
    public mutating func reset() {
        precondition(
            isKnownUniquelyReferenced(&storage),
            "SharedArena.reset() while another copy of it (another thread's, or a LocalArena's) still exists")
        storage.reset()
    }

    /// The counters now (any thread; each counter is read separately).
    public func statistics() -> ArenaAllocStatistics { storage.statistics() }
}

// MARK: - Public API: LocalArena

/// A thread's own arena fed by a ``SharedArena`` (blink-alloc's `LocalBlinkAlloc`): the
/// fast path of an ``Arena``, with chunks lent by the shared arena.
///
/// What a local arena allocates stays valid after the local arena ends, until the shared
/// arena's reset: its chunks go back to the shared arena, which keeps them. A local
/// ``reset()`` reuses its own largest chunk and hands the others back as spares.
public struct LocalArena: ~Copyable, @unchecked Sendable {
    @usableFromInline var arena: Arena

    init(lender: SharedArenaStorage) {
        arena = Arena(
            firstChunkByteCount: lender.firstLocalChunkByteCount, allocationLimit: nil, lender: lender, adopting: nil)
    }

    /// The most bytes of chunks this local arena may hold, or nil (the default); see
    /// ``Arena/allocationLimit``. Its shared arena's limit applies too: a chunk it cannot
    /// lend fails the request as well.
    public var allocationLimit: Int? {
        get { arena.allocationLimit }
        set { arena.allocationLimit = newValue }
    }

    /// See ``Arena/allocate(byteCount:alignment:)``.
    @inlinable @inline(__always)
    public mutating func allocate(byteCount: Int, alignment: Int = 16) -> UnsafeMutableRawPointer? {
        arena.allocate(byteCount: byteCount, alignment: alignment)
    }

    /// See ``Arena/allocate(of:capacity:)``.
    @inlinable @inline(__always)
    public mutating func allocate<T>(of type: T.Type, capacity: Int) -> UnsafeMutableBufferPointer<T>? {
        arena.allocate(of: type, capacity: capacity)
    }

    /// See ``Arena/resize(_:from:to:alignment:)``.
    @inlinable
    public mutating func resize(
        _ pointer: UnsafeMutableRawPointer, from oldByteCount: Int, to newByteCount: Int, alignment: Int = 16
    ) -> UnsafeMutableRawPointer? {
        arena.resize(pointer, from: oldByteCount, to: newByteCount, alignment: alignment)
    }

    /// See ``Arena/deallocate(_:byteCount:)``.
    @inlinable @discardableResult
    public mutating func deallocate(_ pointer: UnsafeMutableRawPointer, byteCount: Int) -> Bool {
        arena.deallocate(pointer, byteCount: byteCount)
    }

    /// See ``Arena/withScope(_:)``: the scope's values live until the local arena resets.
    @inlinable
    public mutating func withScope<Result, Failure: Error>(
        _ body: (ArenaScope) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try arena.withScope(body)
    }

    /// See ``Arena/reset()``; chunks it does not keep become the shared arena's spares.
    @inlinable
    public mutating func reset() { arena.reset() }

    /// The local arena's own counters now.
    public func statistics() -> ArenaAllocStatistics { arena.statistics() }
}

// MARK: - Public API: ArenaCache

/// Warm arenas that tasks take and give back (blink-alloc's `BlinkAllocCache`): an arena
/// given back is reset and keeps its chunk, so the next task starts with memory already
/// sized for its cycle.
///
/// ```swift
/// let cache = ArenaCache()
/// // on any thread, per task:
/// var arena = cache.take()
/// handle(request, in: &arena)
/// cache.give(arena)
/// ```
///
/// Any thread may take and give; the cache holds a lock for a few instructions.
public final class ArenaCache: @unchecked Sendable {
    /// Warm chunks, linked through their first word.
    var warmChunks: UnsafeMutableRawPointer?
    var warmCount = 0
    let lock = SpinLock()
    /// The first chunk size of the arenas the cache makes when it holds none.
    public let firstChunkByteCount: Int
    /// The allocation limit of every arena the cache hands out (``Arena/allocationLimit``;
    /// nil for none); the cache keeps no chunk larger than it.
    public let allocationLimit: Int?

    /// An empty cache.
    ///
    /// - Precondition: `firstChunkByteCount` is positive; `allocationLimit` is not negative.
    public init(firstChunkByteCount: Int = Arena.defaultFirstChunkByteCount, allocationLimit: Int? = nil) {
        precondition(firstChunkByteCount > 0, "ArenaCache: firstChunkByteCount \(firstChunkByteCount) is not positive")
        _ = Arena.chunkByteLimit(allocationLimit, owner: "ArenaCache")
        self.firstChunkByteCount = firstChunkByteCount
        self.allocationLimit = allocationLimit
    }

    deinit {
        var next = warmChunks
        while let chunk = next {
            next = ChunkHeader.previous(of: chunk)
            free(chunk)
        }
    }

    /// A warm arena (the most recently given back), or a new one, with the cache's
    /// ``allocationLimit``.
    public func take() -> Arena {
        let chunk: UnsafeMutableRawPointer? = lock.withLock {
            guard let chunk = warmChunks else { return nil }
            warmChunks = ChunkHeader.previous(of: chunk)
            warmCount -= 1
            return chunk
        }
        return Arena(
            firstChunkByteCount: firstChunkByteCount, allocationLimit: allocationLimit, lender: nil, adopting: chunk)
    }

    /// Resets `arena` (its values are deinitialized) and keeps its chunk for the next
    /// ``take()``, unless the chunk is larger than the cache's ``allocationLimit`` (the
    /// arena's own limit may have been raised or removed meanwhile): that one is freed.
    public func give(_ arena: consuming Arena) {
        arena.reset()
        guard let chunk = arena.detachChunk() else { return }
        if let allocationLimit, ChunkHeader.size(of: chunk) > allocationLimit {
            free(chunk)
            return
        }
        lock.withLock {
            ChunkHeader.setPrevious(of: chunk, to: warmChunks)
            warmChunks = chunk
            warmCount += 1
        }
    }

    /// How many warm arenas the cache holds.
    public var count: Int { lock.withLock { warmCount } }
}

// MARK: - Public API: ArenaScope

/// Ways to put things into an arena inside ``Arena/withScope(_:)``, whose references
/// cannot leave the scope; ``ArenaArray`` and ``ArenaString`` are made from it too.
///
/// Exhaustion throws ``ArenaAllocError/outOfMemory``, so a scope's body reads as straight
/// code with `try`.
public struct ArenaScope: ~Escapable {
    @usableFromInline let arena: UnsafeMutablePointer<Arena>

    @usableFromInline @_lifetime(immortal)
    init(arena: UnsafeMutablePointer<Arena>) { self.arena = arena }

    /// Moves `value` into the arena; see ``Arena/put(_:)``.
    @inlinable @_lifetime(copy self)
    public func put<T>(_ value: T) throws(ArenaAllocError) -> ArenaRef<T> {
        guard let pointer = arena.pointee.put(value) else { throw .outOfMemory }
        return _overrideLifetime(ArenaRef(pointer), copying: self)
    }

    /// Stores a value with no deinit; see ``Arena/putWithoutDeinit(_:)``.
    @inlinable @_lifetime(copy self)
    public func putWithoutDeinit<T: BitwiseCopyable>(_ value: T) throws(ArenaAllocError) -> ArenaRef<T> {
        guard let pointer = arena.pointee.putWithoutDeinit(value) else { throw .outOfMemory }
        return _overrideLifetime(ArenaRef(pointer), copying: self)
    }

    /// Builds a value in the arena from what `body` returns; see ``Arena/putResult(of:)``.
    ///
    /// The value's memory is taken before `body` runs, so `body` may itself put things in
    /// the arena through this scope. When `body` throws, the memory is given back if
    /// nothing was allocated after it (else it stays unused until the reset).
    ///
    /// - Throws: ``ArenaAllocError/outOfMemory``, or what `body` throws (two sources of
    ///   errors make this an untyped `throws`).
    @inlinable @_lifetime(copy self)
    public func putResult<T>(of body: () throws -> T) throws -> ArenaRef<T> {
        // Each arena access is its own short one: `body` may reach the arena through this
        // scope, so none may be open while it runs.
        guard let slot = arena.pointee.allocateSlot(of: T.self) else { throw ArenaAllocError.outOfMemory }
        do {
            slot.initialize(to: try body())
        } catch {
            arena.pointee.deallocate(UnsafeMutableRawPointer(slot), byteCount: MemoryLayout<T>.stride)
            throw error
        }
        guard arena.pointee.finishPut(slot) else { throw ArenaAllocError.outOfMemory }
        return _overrideLifetime(ArenaRef(ArenaPointer(slot, in: arena.pointee)), copying: self)
    }

    /// Copies a string's UTF-8 bytes; see ``Arena/copy(_:)-(StringProtocol)``.
    @inlinable @_lifetime(copy self)
    public func copy(_ string: some StringProtocol) throws(ArenaAllocError) -> ArenaSpan<UInt8> {
        guard let buffer = arena.pointee.copy(string) else { throw .outOfMemory }
        return _overrideLifetime(ArenaSpan(buffer), copying: self)
    }

    /// Copies a collection; see ``Arena/copy(_:)-(Collection)``.
    @inlinable @_lifetime(copy self)
    public func copy<C: Collection>(_ collection: C) throws(ArenaAllocError) -> ArenaSpan<C.Element> {
        guard let buffer = arena.pointee.copy(collection) else { throw .outOfMemory }
        return _overrideLifetime(ArenaSpan(buffer), copying: self)
    }

    /// Builds an array from any sequence; see ``Arena/collect(_:)``.
    @inlinable @_lifetime(copy self)
    public func collect<S: Sequence>(_ sequence: S) throws(ArenaAllocError) -> ArenaSpan<S.Element> {
        guard let buffer = arena.pointee.collect(sequence) else { throw .outOfMemory }
        return _overrideLifetime(ArenaSpan(buffer), copying: self)
    }

    /// Uninitialized memory for `capacity` values of `T`, valid for the scope; nothing is
    /// deinitialized at the reset.
    @inlinable
    public func allocate<T>(of type: T.Type, capacity: Int) throws(ArenaAllocError) -> UnsafeMutableBufferPointer<T> {
        guard let buffer = arena.pointee.allocate(of: type, capacity: capacity) else { throw .outOfMemory }
        return buffer
    }

    /// The arena's counters now.
    public func statistics() -> ArenaAllocStatistics { arena.pointee.statistics() }
}

// MARK: - Public API: ArenaPointer

/// A value in an arena, from ``Arena/put(_:)``: an escapable handle that, in debug
/// builds, traps when used after the arena was reset.
///
/// It is valid until the arena's next reset or its end; with a release build, using it
/// after that is undefined (the caller's duty). Inside ``Arena/withScope(_:)`` prefer
/// ``ArenaRef``, which the compiler keeps inside the scope.
public struct ArenaPointer<Pointee> {
    @usableFromInline let base: UnsafeMutablePointer<Pointee>
    #if DEBUG
        @usableFromInline let stamp: GenerationStamp
    #endif

    @inlinable
    init(_ base: UnsafeMutablePointer<Pointee>, in arena: borrowing Arena) {
        self.base = base
        #if DEBUG
            stamp = GenerationStamp(arena.generation)
        #endif
    }

    /// The value (read and written in place).
    @inlinable
    public var value: Pointee {
        get {
            checkGeneration()
            return base.pointee
        }
        nonmutating set {
            checkGeneration()
            base.pointee = newValue
        }
    }

    /// The value's address, for APIs that take a pointer. The caller's duty: do not use
    /// it past the arena's reset.
    @inlinable
    public var unsafePointer: UnsafeMutablePointer<Pointee> {
        checkGeneration()
        return base
    }

    @inlinable @inline(__always)
    func checkGeneration() {
        #if DEBUG
            stamp.check(kind: "ArenaPointer<\(Pointee.self)>", address: UnsafeRawPointer(base))
        #endif
    }
}

/// A handle may cross threads when its value may: the handle is only an address (and,
/// in debug builds, the generation word it checks), so what crosses is access to the
/// value. Whether threads may then use it at once is the value's business, as for any
/// shared reference.
extension ArenaPointer: @unchecked Sendable where Pointee: Sendable {}

// MARK: - Public API: ArenaBuffer

/// Values in an arena, from ``Arena/copy(_:)-(Collection)`` or ``Arena/collect(_:)``: an
/// escapable random-access collection that, in debug builds, traps when used after the
/// arena was reset.
public struct ArenaBuffer<Element>: RandomAccessCollection {
    @usableFromInline let base: UnsafeMutablePointer<Element>?
    public let count: Int
    #if DEBUG
        @usableFromInline let stamp: GenerationStamp
    #endif

    @inlinable
    init(_ base: UnsafeMutablePointer<Element>?, count: Int, in arena: borrowing Arena) {
        self.base = base
        self.count = count
        #if DEBUG
            stamp = GenerationStamp(arena.generation)
        #endif
    }

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { count }

    /// The element at `index` (read and written in place).
    @inlinable
    public subscript(index: Int) -> Element {
        get {
            precondition(index >= 0 && index < count, "ArenaBuffer index \(index) out of range 0..<\(count)")
            checkGeneration()
            return base.unsafelyUnwrapped[index]
        }
        nonmutating set {
            precondition(index >= 0 && index < count, "ArenaBuffer index \(index) out of range 0..<\(count)")
            checkGeneration()
            base.unsafelyUnwrapped[index] = newValue
        }
    }

    /// The elements as a buffer, for the duration of `body`.
    @inlinable
    public func withUnsafeBufferPointer<Result, Failure: Error>(
        _ body: (UnsafeBufferPointer<Element>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        checkGeneration()
        return try body(UnsafeBufferPointer(start: base, count: count))
    }

    @inlinable @inline(__always)
    func checkGeneration() {
        #if DEBUG
            if let base { stamp.check(kind: "ArenaBuffer<\(Element.self)>", address: UnsafeRawPointer(base)) }
        #endif
    }
}

extension ArenaBuffer where Element == UInt8 {
    /// The bytes decoded as UTF-8 (a new `String`).
    @inlinable
    public var string: String {
        withUnsafeBufferPointer { String(decoding: $0, as: UTF8.self) }
    }
}

/// As ``ArenaPointer``: the buffer may cross threads when its elements may.
extension ArenaBuffer: @unchecked Sendable where Element: Sendable {}

// MARK: - Public API: ArenaRef

/// A value in an arena, from a scope: non-escapable, so it cannot outlive the scope.
public struct ArenaRef<Pointee>: ~Escapable {
    @usableFromInline let pointer: ArenaPointer<Pointee>

    @usableFromInline @_lifetime(immortal)
    init(_ pointer: ArenaPointer<Pointee>) { self.pointer = pointer }

    /// The value (read and written in place).
    @inlinable
    public var value: Pointee {
        get { pointer.value }
        nonmutating set { pointer.value = newValue }
    }
}

// MARK: - Public API: ArenaSpan

/// Values in an arena, from a scope: non-escapable, so they cannot outlive the scope.
public struct ArenaSpan<Element>: ~Escapable {
    @usableFromInline let buffer: ArenaBuffer<Element>

    @usableFromInline @_lifetime(immortal)
    init(_ buffer: ArenaBuffer<Element>) { self.buffer = buffer }

    /// The number of elements.
    @inlinable public var count: Int { buffer.count }

    /// The element at `index` (read and written in place).
    @inlinable
    public subscript(index: Int) -> Element {
        get { buffer[index] }
        nonmutating set { buffer[index] = newValue }
    }

    /// The elements as a buffer, for the duration of `body`.
    @inlinable
    public func withUnsafeBufferPointer<Result, Failure: Error>(
        _ body: (UnsafeBufferPointer<Element>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try buffer.withUnsafeBufferPointer(body)
    }

    /// The elements as a standard-library `Span`, which shares the scope's lifetime.
    @inlinable
    public var span: Span<Element> {
        @_lifetime(copy self) get {
            buffer.checkGeneration()
            let span = Span(_unsafeStart: UnsafePointer(buffer.base.unsafelyUnwrapped), count: buffer.count)
            return _overrideLifetime(span, copying: self)
        }
    }
}

extension ArenaSpan where Element == UInt8 {
    /// The bytes decoded as UTF-8 (a new `String`).
    @inlinable public var string: String { buffer.string }
}

// MARK: - Public API: ArenaArray

/// A growable array whose storage lives in an arena (bumpalo's `collections::Vec`,
/// blink-alloc's `Vec::new_in`), made in a ``Arena/withScope(_:)`` body.
///
/// It grows like `Array`, doubling its capacity, with the arena as its allocator: in
/// place while its storage is the arena's newest block and the chunk has room, else by
/// moving its elements to a new block at the arena's cursor (the old bytes stay used
/// until the reset). Dropped, it deinitializes its elements and gives its storage back
/// when that is still the newest block, so arrays built and dropped one after another
/// reuse the same bytes, with no `malloc` and no `free`.
///
/// ```swift
/// var arena = Arena()
/// let total = try arena.withScope { scope in
///     var squares = try ArenaArray<Int>(in: scope)
///     for n in 1...100 { try squares.append(n * n) }      // grows in place: it is the newest block
///     try squares.append(addingCapacity: 10) { output in  // an OutputSpan over the new capacity
///         for n in 101...110 { output.append(n * n) }
///     }
///     do {
///         var writable = squares.mutableSpan              // MutableSpan<Int>, until the block ends
///         writable[0] = 0
///     }
///     let span = squares.span                             // Span<Int>
///     return span.indices.reduce(0) { $0 + span[$1] }
/// }
/// ```
///
/// **Safety.** The compiler keeps the array inside its scope: it is `~Escapable` and
/// depends on the scope, so it cannot be returned from the body, stored outside it or
/// captured by an escaping closure, and the arena cannot be reset while it lives. It is
/// `~Copyable`, so no two values share its storage. ``span`` and ``mutableSpan`` borrow
/// it, so it cannot grow (and move) while a span is alive: an exclusivity error. At run
/// time every index and count is checked (`precondition`).
///
/// **Elements** may be of any (copyable) type. The array owns them: it deinitializes
/// them when it is emptied or dropped, and, being non-escapable, it is always dropped
/// before its scope resets the arena, so it needs no deinit record (a record would also
/// put the rollback floor above it, and it could no longer grow in place). ``finish()``
/// hands the elements over to the arena instead, which deinitializes them at the reset.
public struct ArenaArray<Element>: ~Copyable, ~Escapable {
    /// The scope's arena, which stays where it is while the scope's body runs.
    @usableFromInline let arena: UnsafeMutablePointer<Arena>
    /// The storage, a block of the arena of `elementCapacity` elements whose first
    /// `elementCount` are initialized; nil while the capacity is 0.
    @usableFromInline var base: UnsafeMutablePointer<Element>?
    @usableFromInline var elementCount: Int
    @usableFromInline var elementCapacity: Int

    /// An empty array whose storage lives in `scope`'s arena, with room for `capacity`
    /// elements (a capacity of 0 takes no memory).
    ///
    /// - Throws: ``ArenaAllocError/outOfMemory`` when the arena cannot give the capacity.
    /// - Precondition: `capacity >= 0`.
    @inlinable @_lifetime(copy scope)
    public init(capacity: Int = 0, in scope: ArenaScope) throws(ArenaAllocError) {
        precondition(capacity >= 0, "ArenaArray: negative capacity \(capacity)")
        self.init(arena: scope.arena)
        self = _overrideLifetime(self, copying: scope)
        if capacity > 0 { try grow(toHold: capacity, exactly: true) }
    }

    @usableFromInline @_lifetime(immortal)
    init(arena: UnsafeMutablePointer<Arena>) {
        self.arena = arena
        base = nil
        elementCount = 0
        elementCapacity = 0
    }

    deinit {
        guard let base else { return }
        base.deinitialize(count: elementCount)
        arena.pointee.deallocate(
            UnsafeMutableRawPointer(base), byteCount: elementCapacity &* MemoryLayout<Element>.stride)
    }

    /// The number of elements.
    @inlinable public var count: Int { elementCount }
    /// How many elements the storage holds before the array must grow.
    @inlinable public var capacity: Int { elementCapacity }
    /// Whether the array has no elements.
    @inlinable public var isEmpty: Bool { elementCount == 0 }

    /// The element at `index`, read and written in place.
    ///
    /// - Precondition: `0 <= index < count`.
    @inlinable
    public subscript(index: Int) -> Element {
        get {
            precondition(
                index >= 0 && index < elementCount, "ArenaArray index \(index) out of range 0..<\(elementCount)")
            return base.unsafelyUnwrapped[index]
        }
        set {
            precondition(
                index >= 0 && index < elementCount, "ArenaArray index \(index) out of range 0..<\(elementCount)")
            base.unsafelyUnwrapped[index] = newValue
        }
    }

    /// Appends `element`; a full array first grows through the arena.
    ///
    /// - Throws: ``ArenaAllocError/outOfMemory`` when the arena cannot give the larger
    ///   storage; the array is then unchanged.
    /// - Complexity: amortized O(1): an in-place growth is a few integer operations, a
    ///   move copies the elements once.
    @inlinable
    public mutating func append(_ element: Element) throws(ArenaAllocError) {
        if _slowPath(elementCount == elementCapacity) { try grow(toHold: elementCount &+ 1) }
        (base.unsafelyUnwrapped + elementCount).initialize(to: element)
        elementCount &+= 1
    }

    /// Appends the elements of `elements`. A sequence with contiguous storage is copied
    /// at once; another one grows the array by its `underestimatedCount` (at most
    /// ``Arena/collectInitialCapacityLimit`` on trust), then as elements come.
    ///
    /// - Throws: ``ArenaAllocError/outOfMemory``; the elements appended before memory ran
    ///   out stay.
    @inlinable
    public mutating func append(contentsOf elements: some Sequence<Element>) throws(ArenaAllocError) {
        if let count = elements.withContiguousStorageIfAvailable({ $0.count }) {
            try reserveRoom(for: count)
            let destination = base.map { $0 + elementCount }
            let copied =
                elements.withContiguousStorageIfAvailable { source in
                    precondition(source.count == count, "ArenaArray.append(contentsOf:): the storage changed size")
                    if count > 0, let origin = source.baseAddress {
                        destination.unsafelyUnwrapped.initialize(from: origin, count: count)
                    }
                    return count
                } ?? 0
            elementCount &+= copied
            return
        }
        try reserveRoom(for: min(elements.underestimatedCount, Arena.collectInitialCapacityLimit))
        for element in elements { try append(element) }
    }

    /// Appends what `body` writes into an `OutputSpan` over `count` new slots (SE-0485's
    /// way to fill storage in place, from a decoder or `read(2)`): the array first grows
    /// through the arena to hold `count` more elements; then what `body` initialized,
    /// from none to all `count`, is appended, also when `body` throws.
    ///
    /// - Throws: ``ArenaAllocError/outOfMemory`` when the capacity cannot be had (`body`
    ///   is then not called), or what `body` throws (two sources of errors make this an
    ///   untyped `throws`).
    /// - Precondition: `count >= 0`.
    @inlinable
    public mutating func append(
        addingCapacity count: Int, initializingWith body: (inout OutputSpan<Element>) throws -> Void
    ) throws {
        precondition(count >= 0, "ArenaArray.append(addingCapacity:): negative count \(count)")
        try reserveRoom(for: count)
        let free = UnsafeMutableBufferPointer(start: base.map { $0 + elementCount }, count: count)
        var output = OutputSpan(buffer: free, initializedCount: 0)
        do {
            try body(&output)
        } catch {
            elementCount &+= output.finalize(for: free)
            throw error
        }
        elementCount &+= output.finalize(for: free)
    }

    /// Makes the capacity at least `minimumCapacity` (exactly that, when it grows).
    ///
    /// - Throws: ``ArenaAllocError/outOfMemory``; the array is then unchanged.
    /// - Precondition: `minimumCapacity >= 0`.
    @inlinable
    public mutating func reserveCapacity(_ minimumCapacity: Int) throws(ArenaAllocError) {
        precondition(minimumCapacity >= 0, "ArenaArray.reserveCapacity: negative capacity \(minimumCapacity)")
        if minimumCapacity > elementCapacity { try grow(toHold: minimumCapacity, exactly: true) }
    }

    /// Removes and returns the last element.
    ///
    /// - Precondition: the array is not empty.
    @inlinable @discardableResult
    public mutating func removeLast() -> Element {
        precondition(elementCount > 0, "ArenaArray.removeLast() on an empty array")
        elementCount &-= 1
        return (base.unsafelyUnwrapped + elementCount).move()
    }

    /// Deinitializes every element; unless `keepingCapacity`, gives the storage back too
    /// (to the arena when it is the newest block, else it stays used until the reset).
    @inlinable
    public mutating func removeAll(keepingCapacity: Bool = false) {
        guard let base else { return }
        base.deinitialize(count: elementCount)
        elementCount = 0
        if !keepingCapacity {
            // Through a copy of the pointer: with the thread sanitizer, Swift 6.3.1 takes a
            // call through `self.arena.pointee` in a mutating method of this non-escapable
            // type for an escape of `self` ("lifetime-dependent variable 'self' escapes its
            // scope").
            let arena = self.arena
            arena.pointee.deallocate(
                UnsafeMutableRawPointer(base), byteCount: elementCapacity &* MemoryLayout<Element>.stride)
            self.base = nil
            elementCapacity = 0
        }
    }

    /// The elements, for reading; the array cannot change while the span lives.
    @inlinable
    public var span: Span<Element> {
        @_lifetime(borrow self) get {
            let span = Span(_unsafeElements: UnsafeBufferPointer(start: base, count: elementCount))
            return _overrideLifetime(span, borrowing: self)
        }
    }

    /// The elements, for reading and writing in place; the array is accessed exclusively
    /// while the span lives.
    @inlinable
    public var mutableSpan: MutableSpan<Element> {
        @_lifetime(&self) mutating get {
            let span = MutableSpan(_unsafeElements: UnsafeMutableBufferPointer(start: base, count: elementCount))
            return _overrideLifetime(span, mutating: &self)
        }
    }

    /// Ends the array and hands its elements over to the arena (bumpalo's
    /// `into_bump_slice`): its unused capacity is given back when it is the newest block,
    /// and elements with a deinit are deinitialized at the reset, like ``ArenaScope/collect(_:)``'s.
    ///
    /// - Returns: the elements, as a scope's span.
    /// - Throws: ``ArenaAllocError/outOfMemory`` when the deinit record (32 bytes, for
    ///   elements with a deinit) cannot be had; the elements are then deinitialized.
    @_lifetime(copy self)
    public consuming func finish() throws(ArenaAllocError) -> ArenaSpan<Element> {
        let (arena, base, count, capacity) = (self.arena, self.base, elementCount, elementCapacity)
        let elements = _overrideLifetime(ArenaSpan(ArenaBuffer(base, count: count, in: arena.pointee)), copying: self)
        discard self
        guard let base else { return elements }
        let stride = MemoryLayout<Element>.stride
        // A shrink never moves the block.
        _ = arena.pointee.resize(
            UnsafeMutableRawPointer(base), from: capacity &* stride, to: count &* stride,
            alignment: MemoryLayout<Element>.alignment)
        if !_isPOD(Element.self) && count > 0 && !arena.pointee.recordDeinit(of: base, count: count) {
            base.deinitialize(count: count)
            throw .outOfMemory
        }
        return elements
    }
}

// MARK: - Public API: ArenaString

/// A string builder whose UTF-8 bytes live in an arena (bumpalo's `collections::String`),
/// made in a ``Arena/withScope(_:)`` body: an ``ArenaArray`` of bytes that only whole
/// strings, characters and scalars are appended to, so it always holds valid UTF-8.
///
/// ```swift
/// try arena.withScope { scope in
///     var text = try ArenaString(in: scope)
///     for (name, value) in headers {
///         try text.append(name)
///         try text.append(": ")
///         try text.append(value)
///         try text.append("\r\n")
///     }
///     send(text.utf8)                                     // Span<UInt8>: no copy
/// }
/// ```
///
/// It grows, and is kept inside its scope, as ``ArenaArray`` is. It has no mutable
/// span: a write could break the UTF-8 that ``utf8Span`` promises.
public struct ArenaString: ~Copyable, ~Escapable {
    @usableFromInline var bytes: ArenaArray<UInt8>

    /// An empty string builder whose bytes live in `scope`'s arena, with room for
    /// `capacity` UTF-8 bytes.
    ///
    /// - Throws: ``ArenaAllocError/outOfMemory`` when the arena cannot give the capacity.
    /// - Precondition: `capacity >= 0`.
    @inlinable @_lifetime(copy scope)
    public init(capacity: Int = 0, in scope: ArenaScope) throws(ArenaAllocError) {
        bytes = try ArenaArray(capacity: capacity, in: scope)
    }

    /// The number of UTF-8 bytes.
    @inlinable public var utf8Count: Int { bytes.count }
    /// How many UTF-8 bytes the storage holds before the builder must grow.
    @inlinable public var capacity: Int { bytes.capacity }
    /// Whether the string is empty.
    @inlinable public var isEmpty: Bool { bytes.isEmpty }

    /// Appends the UTF-8 bytes of `string` (copied at once when they are contiguous, as a
    /// native `String`'s and `Substring`'s are).
    ///
    /// - Throws: ``ArenaAllocError/outOfMemory``; the builder is then unchanged.
    @inlinable
    public mutating func append(_ string: some StringProtocol) throws(ArenaAllocError) {
        try appendWhole(string.utf8)
    }

    /// Appends a character's UTF-8 bytes; the builder is unchanged when it throws.
    @inlinable
    public mutating func append(_ character: Character) throws(ArenaAllocError) {
        try appendWhole(character.utf8)
    }

    /// Appends a scalar's UTF-8 bytes; the builder is unchanged when it throws.
    @inlinable
    public mutating func append(_ scalar: Unicode.Scalar) throws(ArenaAllocError) {
        try appendWhole(scalar.utf8)
    }

    /// Appends all of `utf8` or none of it, so that a failure cannot leave part of a
    /// character behind.
    @inlinable
    mutating func appendWhole(_ utf8: some Sequence<UInt8>) throws(ArenaAllocError) {
        let count = bytes.elementCount
        do throws(ArenaAllocError) {
            try bytes.append(contentsOf: utf8)
        } catch {
            bytes.elementCount = count  // bytes need no deinitialization
            throw error
        }
    }

    /// Makes the capacity at least `minimumCapacity` UTF-8 bytes.
    ///
    /// - Precondition: `minimumCapacity >= 0`.
    @inlinable
    public mutating func reserveCapacity(_ minimumCapacity: Int) throws(ArenaAllocError) {
        try bytes.reserveCapacity(minimumCapacity)
    }

    /// Empties the builder; unless `keepingCapacity`, gives the storage back too.
    @inlinable
    public mutating func removeAll(keepingCapacity: Bool = false) {
        bytes.removeAll(keepingCapacity: keepingCapacity)
    }

    /// The UTF-8 bytes.
    @inlinable
    public var utf8: Span<UInt8> {
        @_lifetime(borrow self) get { bytes.span }
    }

    /// The text, as the standard library's view of validated UTF-8 (no check is made:
    /// only valid UTF-8 was appended).
    @inlinable
    public var utf8Span: UTF8Span {
        @_lifetime(borrow self) get { UTF8Span(unchecked: bytes.span) }
    }

    /// The text, copied into a `String`.
    @inlinable
    public var string: String { String(copying: utf8Span) }

    /// Ends the builder and hands its bytes over to the arena; see
    /// ``ArenaArray/finish()``. ``ArenaSpan/string`` reads them back.
    @_lifetime(copy self)
    public consuming func finish() throws(ArenaAllocError) -> ArenaSpan<UInt8> {
        try bytes.finish()
    }
}

// MARK: - Public API: ArenaAllocError

/// Why an arena could not give memory.
public enum ArenaAllocError: Error, Equatable, Sendable {
    /// The request's size overflows, the C heap refused a chunk, or the allocation limit
    /// allows none large enough.
    case outOfMemory
}

// MARK: - Public API: ArenaAllocStatistics

/// An arena's counters at one moment.
public struct ArenaAllocStatistics: Sendable, Equatable {
    /// Chunks the arena holds (for a ``SharedArena``: its own, those lent to local
    /// arenas, and spare ones).
    public var chunks: Int
    /// Bytes of those chunks, headers included: what an allocation limit bounds.
    public var reservedBytes: Int
    /// Bytes handed out since the last reset, alignment padding included.
    public var bytesInUse: Int
    /// The most bytes ever in use at once.
    public var peakBytesInUse: Int
    /// Resets so far.
    public var resets: Int

    public init(chunks: Int, reservedBytes: Int, bytesInUse: Int, peakBytesInUse: Int, resets: Int) {
        self.chunks = chunks
        self.reservedBytes = reservedBytes
        self.bytesInUse = bytesInUse
        self.peakBytesInUse = peakBytesInUse
        self.resets = resets
    }
}

// MARK: - Fast path: Arena

// `Arena.allocate` and the warm `reset` above are the fast path themselves (a bound check
// and a store, inlined into the caller); these are the inlinable pieces the value API
// and rollback build on.
extension Arena {
    /// Whether the block at `start` of `byteCount` bytes is the newest: it ends at the
    /// cursor, above the rollback floor.
    @inlinable
    func isNewest(_ start: Int, byteCount: Int) -> Bool {
        start &+ byteCount == cursor && start >= rollbackFloor
    }

    /// Memory for `count` values of `T`, with a deinit record when `T` has a deinit;
    /// nil on exhaustion or overflow. With a record, the values are never the newest
    /// block: the record follows them, below the rollback floor.
    @inlinable
    mutating func allocateValues<T>(of type: T.Type, count: Int) -> UnsafeMutablePointer<T>? {
        guard let byteCount = checkedByteCount(count: count, stride: MemoryLayout<T>.stride),
            let raw = allocate(byteCount: byteCount, alignment: MemoryLayout<T>.alignment)
        else { return nil }
        let values = raw.bindMemory(to: T.self, capacity: count)
        if !_isPOD(T.self) && count > 0 {
            guard recordDeinit(of: values, count: count) else {
                deallocate(raw, byteCount: byteCount)
                return nil
            }
        }
        return values
    }

    /// Grows or shrinks the block at `block` from `oldByteCount` to `newByteCount` bytes
    /// where it is, when it is the newest block and its chunk has room; whether it did.
    @inlinable
    mutating func resizeInPlace(_ block: UnsafeMutableRawPointer, from oldByteCount: Int, to newByteCount: Int) -> Bool
    {
        let start = Int(bitPattern: block)
        guard isNewest(start, byteCount: oldByteCount), newByteCount <= limit &- start else { return false }
        if newByteCount < oldByteCount { noteFall() }
        cursor = start &+ newByteCount
        return true
    }

    /// Memory for one `T`, bound to it, with no deinit record yet: the first half of a
    /// put whose value is made after its memory (``putResult(of:)``).
    @inlinable
    mutating func allocateSlot<T>(of type: T.Type) -> UnsafeMutablePointer<T>? {
        allocate(byteCount: MemoryLayout<T>.stride, alignment: MemoryLayout<T>.alignment)?
            .bindMemory(to: T.self, capacity: 1)
    }

    /// The second half: records the deinit of the value now in `slot` when `T` has one.
    /// Without memory for the record, deinitializes the value, gives its memory back when
    /// it is the newest block, and returns false.
    @inlinable
    mutating func finishPut<T>(_ slot: UnsafeMutablePointer<T>) -> Bool {
        if _isPOD(T.self) || recordDeinit(of: slot, count: 1) { return true }
        slot.deinitialize(count: 1)
        deallocate(UnsafeMutableRawPointer(slot), byteCount: MemoryLayout<T>.stride)
        return false
    }

    /// Records that `count` values of `T` at `values` are deinitialized at the reset.
    @inlinable
    mutating func recordDeinit<T>(of values: UnsafeMutablePointer<T>, count: Int) -> Bool {
        guard let record = allocate(byteCount: DeinitRecord.byteCount, alignment: DeinitRecord.alignment) else {
            return false
        }
        DeinitRecord.initialize(record, next: deinitRecords, type: T.self, values: values, count: count)
        deinitRecords = record
        rollbackFloor = cursor
        return true
    }
}

// MARK: - Fast path: ArenaArray

// `append` above is the fast path itself (a compare, a store, an increment); this is the
// check the bulk appends make before they write.
extension ArenaArray {
    /// Room for `count` more elements: grows when the capacity left is smaller.
    @inlinable @inline(__always)
    mutating func reserveRoom(for count: Int) throws(ArenaAllocError) {
        guard count > elementCapacity &- elementCount else { return }
        let (needed, overflow) = elementCount.addingReportingOverflow(count)
        guard !overflow else { throw .outOfMemory }
        try grow(toHold: needed)
    }
}

// MARK: - Fast path: SharedArenaStorage

extension SharedArenaStorage {
    /// The fast path: a bump in the calling thread's window of this arena, when it has one.
    @inlinable
    func allocate(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer? {
        if let state = ThreadLocalSlot.arenaAlloc.value {
            let window = state.assumingMemoryBound(to: ThreadWindow.self)
            if window.pointee.epoch == epoch.load(ordering: .relaxed),
                let block = window.pointee.bump(byteCount: byteCount, alignment: alignment)
            {
                return block
            }
        }
        return allocateInNewWindow(byteCount: byteCount, alignment: alignment)
    }
}

// MARK: - Fast path: ThreadWindow

extension ThreadWindow {
    /// `byteCount` bytes aligned to `alignment` from the window, or nil when they do not fit.
    @inlinable @inline(__always)
    mutating func bump(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer? {
        let aligned = (cursor &+ (alignment &- 1)) & ~(alignment &- 1)
        guard byteCount <= limit &- aligned else { return nil }
        cursor = aligned &+ byteCount
        return UnsafeMutableRawPointer(bitPattern: aligned)
    }
}

// MARK: - Slow path: Arena

extension Arena {
    /// Takes a chunk that holds the request (the growth rule's size, or one cut to the
    /// allocation limit), then allocates from it; nil when none may be had.
    @usableFromInline @inline(never)
    mutating func allocateInNewChunk(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer? {
        // Room for the header and for aligning the data start (16-aligned) to `alignment`.
        let (needed, overflow) = byteCount.addingReportingOverflow(
            ChunkHeader.byteCount + max(0, alignment - ChunkHeader.byteCount))
        guard !overflow,
            let size = Arena.chunkSize(
                rule: Arena.chunkSize(forAtLeast: max(needed, firstChunkByteCount), after: reservedBytes),
                needed: needed, room: Arena.room(under: chunkByteLimit, holding: reservedBytes)),
            let newChunk = takeChunk(byteCount: size, minimum: needed)
        else { return nil }
        // A chunk cut to the limit (or a smaller spare a lender had) breaks the growth rule.
        if ChunkHeader.size(of: newChunk) < reservedBytes + ChunkHeader.byteCount { holdsChunkCutToLimit = true }
        if let chunk { bytesUsedInEarlierChunks &+= cursor &- ChunkHeader.dataStart(of: chunk) }
        ChunkHeader.setPrevious(of: newChunk, to: chunk)
        install(newChunk)
        let aligned = (cursor &+ (alignment &- 1)) & ~(alignment &- 1)
        assert(
            byteCount <= limit &- aligned,
            "Arena: chunk \(newChunk) of \(ChunkHeader.size(of: newChunk)) bytes does not hold \(byteCount) bytes")
        cursor = aligned &+ byteCount
        return UnsafeMutableRawPointer(bitPattern: aligned)
    }

    /// The size of the next chunk: at least `byteCount` plus every earlier chunk's bytes
    /// (`earlierBytes`), rounded to a power of two below ``chunkGranularity`` and to a
    /// multiple of it above; nil when that overflows.
    @usableFromInline
    static func chunkSize(forAtLeast byteCount: Int, after earlierBytes: Int) -> Int? {
        let (sum, overflow) = byteCount.addingReportingOverflow(earlierBytes)
        guard !overflow else { return nil }
        return sum < chunkGranularity ? nextPowerOfTwo(sum) : alignUp(sum, to: chunkGranularity)
    }

    /// The size of the chunk to take under an allocation limit: `ruleSize` (the growth
    /// rule's, nil when it overflows) when it fits in `room` (what the limit leaves,
    /// `Int.max` for no limit); otherwise the largest size of the rule's rounding within
    /// the room (a power of two below ``chunkGranularity``, a multiple of it above),
    /// when that still holds `needed` bytes; nil when none does.
    static func chunkSize(rule ruleSize: Int?, needed: Int, room: Int) -> Int? {
        if let ruleSize, ruleSize <= room { return ruleSize }
        guard room != Int.max, room >= needed, needed > 0 else { return nil }
        let cut = room >= chunkGranularity ? alignDown(room, to: chunkGranularity) : 1 << log2Floor(room)
        return cut >= needed ? cut : nil
    }

    /// What a limit of `limit` bytes (`Int.max`: none) leaves to an owner that holds
    /// `heldBytes`: negative when the limit was lowered below them.
    static func room(under limit: Int, holding heldBytes: Int) -> Int {
        limit == Int.max ? Int.max : limit - heldBytes
    }

    /// An allocation limit as stored (`Int.max` for none), after checking it.
    static func chunkByteLimit(_ allocationLimit: Int?, owner: String) -> Int {
        guard let allocationLimit else { return Int.max }
        precondition(allocationLimit >= 0, "\(owner): negative allocationLimit \(allocationLimit)")
        return allocationLimit
    }

    /// The largest chunk of the list from `first`.
    static func largestChunk(from first: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer {
        var largest = first
        var next = ChunkHeader.previous(of: first)
        while let current = next {
            if ChunkHeader.size(of: current) > ChunkHeader.size(of: largest) { largest = current }
            next = ChunkHeader.previous(of: current)
        }
        return largest
    }

    /// Makes `newChunk` (its header filled in except the size, which is already there)
    /// the current chunk.
    mutating func install(_ newChunk: UnsafeMutableRawPointer) {
        let size = ChunkHeader.size(of: newChunk)
        chunk = newChunk
        chunkCount += 1
        reservedBytes += size
        cursor = ChunkHeader.dataStart(of: newChunk)
        limit = Int(bitPattern: newChunk) &+ size
        rollbackFloor = cursor
    }

    /// A chunk of `byteCount` bytes with its size recorded, from the lender or the C heap.
    /// A lender may give a smaller one, of at least `minimum` bytes, when its own limit or
    /// its spares say so.
    func takeChunk(byteCount: Int, minimum: Int) -> UnsafeMutableRawPointer? {
        if let lender { return lender.lendChunk(byteCount: byteCount, minimum: minimum) }
        guard let chunk = malloc(byteCount) else { return nil }
        ChunkHeader.setSize(of: chunk, to: byteCount)
        return chunk
    }

    /// Gives a chunk back: to the lender (which keeps its data alive, or makes it spare
    /// when `dataIsDead`), or to the C heap.
    func releaseChunk(_ chunk: UnsafeMutableRawPointer, dataIsDead: Bool = false) {
        if let lender { lender.takeBack(chunk, dataIsDead: dataIsDead) } else { free(chunk) }
    }

    /// Before `bytesInUse` falls, keeps the cycle's high-water mark.
    @usableFromInline
    mutating func noteFall() {
        let inUse = bytesInUse
        if inUse > cyclePeakBytes { cyclePeakBytes = inUse }
    }

    /// Moves a block that cannot change size in place; the old bytes stay used.
    @usableFromInline @inline(never)
    mutating func moveBlock(
        _ pointer: UnsafeMutableRawPointer, from oldByteCount: Int, to newByteCount: Int, alignment: Int
    ) -> UnsafeMutableRawPointer? {
        let start = Int(bitPattern: pointer)
        let savedCursor = cursor
        if isNewest(start, byteCount: oldByteCount) {
            // Give the old bytes back first: in a new chunk they are dead anyway.
            cursor = start
        }
        guard let moved = allocate(byteCount: newByteCount, alignment: alignment) else {
            cursor = savedCursor
            return nil
        }
        // The old block lies before the new one (same chunk, lower address) or in an
        // earlier chunk: the ranges do not overlap unless the block stayed where it was.
        if moved != pointer { moved.copyMemory(from: pointer, byteCount: min(oldByteCount, newByteCount)) }
        return moved
    }

    /// A new block for one that cannot change size in place (see
    /// ``resizeInPlace(_:from:to:)``), whose contents the caller moves. When the old block
    /// is the newest, its bytes are given back first: it ends a chunk too small for the
    /// new size, so the new block comes from a new chunk and cannot overlap it. Nil on
    /// exhaustion, with the arena as it was.
    @usableFromInline
    mutating func allocateForMove(
        from old: UnsafeMutableRawPointer?, byteCount oldByteCount: Int, to newByteCount: Int, alignment: Int
    ) -> UnsafeMutableRawPointer? {
        let savedCursor = cursor
        if let old, isNewest(Int(bitPattern: old), byteCount: oldByteCount) { cursor = Int(bitPattern: old) }
        guard let moved = allocate(byteCount: newByteCount, alignment: alignment) else {
            cursor = savedCursor
            return nil
        }
        return moved
    }

    /// The reset of everything but the warm single-chunk case.
    @usableFromInline @inline(never)
    mutating func resetSlow() {
        runDeinitializers()
        guard let newestChunk = chunk else {
            resetCount &+= 1
            #if DEBUG
                generation.pointee &+= 1
            #endif
            return
        }
        noteFall()
        if cyclePeakBytes > peakBytes { peakBytes = cyclePeakBytes }
        let cycleBytes = cyclePeakBytes
        let chunksBefore = chunkCount
        // Keep the largest chunk (the newest, unless one was cut to the limit) and give the
        // others back first: their data is dead, and so the arena never holds more than
        // it did during the cycle.
        let largest = holdsChunkCutToLimit ? Arena.largestChunk(from: newestChunk) : newestChunk
        var next: UnsafeMutableRawPointer? = newestChunk
        while let current = next {
            next = ChunkHeader.previous(of: current)
            if current != largest { releaseChunk(current, dataIsDead: true) }
        }
        let largestSize = ChunkHeader.size(of: largest)
        var kept: UnsafeMutableRawPointer? = largest
        if chunksBefore > 1, largestSize - ChunkHeader.byteCount < cycleBytes,
            let size = Arena.chunkSize(forAtLeast: cycleBytes + ChunkHeader.byteCount, after: 0),
            size <= chunkByteLimit
        {
            // One chunk for the whole cycle: the next cycle needs no new chunk.
            if size <= chunkByteLimit - largestSize {
                // Taken before the largest goes, so a failed `malloc` keeps it.
                if let consolidated = takeChunk(byteCount: size, minimum: size) {
                    releaseChunk(largest, dataIsDead: true)
                    kept = consolidated
                }
            } else {
                // The limit does not allow both at once: the largest goes first, and a
                // failed `malloc` leaves the arena with no chunk.
                releaseChunk(largest, dataIsDead: true)
                kept = takeChunk(byteCount: size, minimum: size)
            }
        }
        if let keptChunk = kept, ChunkHeader.size(of: keptChunk) > chunkByteLimit {
            // The limit was lowered below the chunk: the reset releases the excess.
            releaseChunk(keptChunk, dataIsDead: true)
            kept = nil
        }
        chunk = nil
        chunkCount = 0
        reservedBytes = 0
        holdsChunkCutToLimit = false
        if let kept {
            ChunkHeader.setPrevious(of: kept, to: nil)
            install(kept)
        } else {
            cursor = 1
            limit = 0
            rollbackFloor = 0
        }
        bytesUsedInEarlierChunks = 0
        cyclePeakBytes = 0
        resetCount &+= 1
        #if DEBUG
            generation.pointee &+= 1
            if let violation = integrityViolation() { preconditionFailure("Arena after a reset: \(violation)") }
        #endif
    }

    /// Deinitializes the values of every deinit record, newest first, and forgets them.
    mutating func runDeinitializers() {
        let first = deinitRecords
        deinitRecords = nil
        Arena.runDeinitializers(from: first)
    }

    static func runDeinitializers(from first: UnsafeMutableRawPointer?) {
        var next = first
        while let record = next {
            next = DeinitRecord.next(of: record)
            DeinitRecord.run(record)
        }
    }

    /// Hands the arena's single chunk over (the arena then holds none); for the cache.
    consuming func detachChunk() -> UnsafeMutableRawPointer? {
        assert(chunkCount <= 1, "Arena.detachChunk with \(chunkCount) chunks: reset first")
        let detached = chunk
        chunk = nil
        return detached
    }

    /// The elements of `sequence` in a growing array at the cursor; nil on exhaustion (the
    /// elements collected so far are then deinitialized).
    @inlinable
    mutating func collectElements<S: Sequence>(_ sequence: S) -> (UnsafeMutablePointer<S.Element>?, Int)? {
        typealias Element = S.Element
        let stride = MemoryLayout<Element>.stride
        let alignment = MemoryLayout<Element>.alignment
        var capacity = min(max(sequence.underestimatedCount, 0), Arena.collectInitialCapacityLimit)
        guard let initialByteCount = checkedByteCount(count: capacity, stride: stride),
            var raw = allocate(byteCount: initialByteCount, alignment: alignment)
        else { return nil }
        var values = raw.bindMemory(to: Element.self, capacity: capacity)
        var iterator = sequence.makeIterator()
        var count = 0
        var failed = false
        // The guessed part: a loop with one test per element.
        while count < capacity, let element = iterator.next() {
            (values + count).initialize(to: element)
            count &+= 1
        }
        // The rest (when the guess was low): grow as needed.
        while count == capacity, let element = iterator.next() {
            let newCapacity = max(8, capacity &* 2)
            guard let byteCount = checkedByteCount(count: newCapacity, stride: stride),
                let grown = resize(raw, from: capacity &* stride, to: byteCount, alignment: alignment)
            else {
                failed = true
                break
            }
            raw = grown
            values = raw.bindMemory(to: Element.self, capacity: newCapacity)
            capacity = newCapacity
            (values + count).initialize(to: element)
            count &+= 1
            while count < capacity, let element = iterator.next() {
                (values + count).initialize(to: element)
                count &+= 1
            }
        }
        if failed {
            values.deinitialize(count: count)
            deallocate(raw, byteCount: capacity &* stride)
            return nil
        }
        // Give back what the guess over-reserved (in place: the array is the newest block).
        _ = resize(raw, from: capacity * stride, to: count * stride, alignment: alignment)
        if !_isPOD(Element.self) && count > 0 {
            guard recordDeinit(of: values, count: count) else {
                values.deinitialize(count: count)
                return nil
            }
        }
        return (values, count)
    }
}

// MARK: - Slow path: ArenaArray

extension ArenaArray {
    /// The smallest capacity a growing array takes (bumpalo's `RawVec` rule), so that the
    /// first appends do not grow one by one: 8 one-byte elements, 4 up to 1 KiB, else 1.
    @inlinable static var minimumGrowth: Int {
        let stride = MemoryLayout<Element>.stride
        return stride == 1 ? 8 : stride <= 1024 ? 4 : 1
    }

    /// Grows the storage to hold `minimumCapacity` elements: to exactly that when
    /// `exactly`, else to twice the capacity (at least ``minimumGrowth``) when that is
    /// more. In place when the storage is the newest block and its chunk has room; else
    /// the elements move to a new block.
    ///
    /// The work is out of line, in ``storage(growing:count:capacity:toHold:exactly:in:)``,
    /// which takes the fields by value and returns the new ones: `self`'s address never
    /// leaves the caller, so an appending loop keeps the count and capacity in registers
    /// instead of storing the count to memory at every element (measured: 62 → 38 ns per
    /// array of 100 `Int`s in `make bench`'s arena-array row).
    @inlinable
    mutating func grow(toHold minimumCapacity: Int, exactly: Bool = false) throws(ArenaAllocError) {
        (base, elementCapacity) = try Self.storage(
            growing: base, count: elementCount, capacity: elementCapacity, toHold: minimumCapacity,
            exactly: exactly, in: arena)
    }

    /// The storage and capacity after growing `base` (`capacity` elements, the first `count`
    /// initialized) as ``grow(toHold:exactly:)`` says; the elements moved when the block
    /// could not grow in place. Out of line, and specialized in the caller.
    @inlinable @inline(never)
    static func storage(
        growing base: UnsafeMutablePointer<Element>?, count: Int, capacity: Int, toHold minimumCapacity: Int,
        exactly: Bool, in arena: UnsafeMutablePointer<Arena>
    ) throws(ArenaAllocError) -> (UnsafeMutablePointer<Element>, Int) {
        let doubled = capacity <= Int.max / 2 ? capacity &* 2 : Int.max
        let newCapacity = exactly ? minimumCapacity : max(minimumCapacity, doubled, Self.minimumGrowth)
        let stride = MemoryLayout<Element>.stride
        let oldByteCount = capacity &* stride
        guard let newByteCount = checkedByteCount(count: newCapacity, stride: stride) else { throw .outOfMemory }
        if let base, arena.pointee.resizeInPlace(UnsafeMutableRawPointer(base), from: oldByteCount, to: newByteCount) {
            return (base, newCapacity)
        }
        guard
            let raw = arena.pointee.allocateForMove(
                from: base.map { UnsafeMutableRawPointer($0) }, byteCount: oldByteCount, to: newByteCount,
                alignment: MemoryLayout<Element>.alignment)
        else { throw .outOfMemory }
        let moved = raw.bindMemory(to: Element.self, capacity: newCapacity)
        if let base { moved.moveInitialize(from: base, count: count) }
        return (moved, newCapacity)
    }
}

// MARK: - Slow path: SharedArenaStorage

extension SharedArenaStorage {
    /// Allocates from the calling thread's window of this arena when it is not the front
    /// one (the thread used another arena since), else from a new window; a large request
    /// (above a quarter of a window) goes straight to the shared chunk.
    @usableFromInline @inline(never)
    func allocateInNewWindow(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer? {
        guard byteCount <= SharedArenaStorage.windowByteCount / 4, let windows = ThreadWindow.current() else {
            return allocateFromChunk(byteCount: byteCount, alignment: alignment)
        }
        let epoch = epoch.load(ordering: .relaxed)
        if windows[0].epoch != epoch {
            // Bring this arena's window to the front, or make room there by dropping the
            // least recently used one (its leftover stays unused until its arena's reset).
            var index = 1
            while index < ThreadWindow.perThread - 1 && windows[index].epoch != epoch { index += 1 }
            let found = windows[index]
            (windows + 1).update(from: windows, count: index)
            windows[0] = found
            if found.epoch == epoch, let block = windows[0].bump(byteCount: byteCount, alignment: alignment) {
                return block
            }
        }
        // The window is full (its leftover, under a quarter of a window, stays unused).
        // Alignment 8 keeps the take a fetch-and-add; the window aligns each request.
        guard let start = allocateFromChunk(byteCount: SharedArenaStorage.windowByteCount, alignment: 8) else {
            return allocateFromChunk(byteCount: byteCount, alignment: alignment)
        }
        windows[0] = ThreadWindow(
            epoch: epoch, cursor: Int(bitPattern: start),
            limit: Int(bitPattern: start) &+ SharedArenaStorage.windowByteCount)
        return windows[0].bump(byteCount: byteCount, alignment: alignment)
            ?? allocateFromChunk(byteCount: byteCount, alignment: alignment)
    }

    /// Bytes a thread takes from the shared chunk at once: it then bumps through them with
    /// no atomic operation. Small enough that a thread that stops allocating wastes little
    /// (under a window per thread and arena until the reset), large enough that the one
    /// contended fetch-and-add per window costs well under a nanosecond per object.
    static let windowByteCount = 4096

    /// An allocation from the current chunk. The cursor stays a multiple of 8 (sizes are
    /// rounded up to 8), so a request aligned to 8 or less is one fetch-and-add, which
    /// never retries under contention; larger alignments take a compare-exchange loop.
    func allocateFromChunk(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer? {
        let chunkAddress = current.load(ordering: .acquiring)
        if let chunk = UnsafeMutableRawPointer(bitPattern: chunkAddress) {
            let cursorWord = SharedChunkHeader.cursor(of: chunk)
            let limit = SharedChunkHeader.limit(of: chunk)
            var cursor = cursorWord.load(ordering: .relaxed)
            // Checked before rounding, so the rounding below cannot overflow.
            if byteCount <= limit &- cursor {
                let rounded = (byteCount &+ 7) & ~7
                if alignment <= 8 {
                    let start = cursorWord.wrappingAdd(rounded, ordering: .relaxed)
                    if rounded <= limit &- start { return UnsafeMutableRawPointer(bitPattern: start) }
                    // Another thread took the room first: the cursor now stands past the
                    // limit (by less than one request per racing thread) and the chunk
                    // counts as full.
                } else {
                    while true {
                        let aligned = (cursor &+ (alignment &- 1)) & ~(alignment &- 1)
                        guard rounded <= limit &- aligned else { break }
                        let (exchanged, original) = cursorWord.weakCompareExchange(
                            expected: cursor, desired: aligned &+ rounded, successOrdering: .relaxed,
                            failureOrdering: .relaxed)
                        if exchanged { return UnsafeMutableRawPointer(bitPattern: aligned) }
                        cursor = original
                    }
                }
            }
        }
        return allocateInNewChunk(byteCount: byteCount, alignment: alignment, seen: chunkAddress)
    }

    /// Adds a chunk that holds the request, unless another thread already replaced the
    /// chunk `seen`; then retries.
    @usableFromInline @inline(never)
    func allocateInNewChunk(byteCount: Int, alignment: Int, seen: Int) -> UnsafeMutableRawPointer? {
        let (needed, overflow) = byteCount.addingReportingOverflow(
            SharedChunkHeader.byteCount + 8 + max(0, alignment - 16))
        guard !overflow else { return nil }
        let added: Bool = lock.withLock {
            guard current.load(ordering: .relaxed) == seen else { return true }
            guard
                let size = Arena.chunkSize(
                    rule: Arena.chunkSize(forAtLeast: max(needed, firstChunkByteCount), after: ownBytes),
                    needed: needed, room: Arena.room(under: chunkByteLimit, holding: ownBytes + otherBytes)),
                let chunk = malloc(size)
            else { return false }
            if size < ownBytes + SharedChunkHeader.byteCount { ownChunkCutToLimit = true }
            SharedChunkHeader.initialize(chunk, size: size, previous: UnsafeMutableRawPointer(bitPattern: seen))
            ownChunks += 1
            ownBytes += size
            current.store(Int(bitPattern: chunk), ordering: .releasing)
            return true
        }
        return added ? allocateFromChunk(byteCount: byteCount, alignment: alignment) : nil
    }

    /// A chunk for a local arena: a spare one of at least `byteCount` bytes, else one of
    /// that size from the C heap (cut to what the allocation limit leaves, down to
    /// `minimum` bytes), else a spare one of at least `minimum` bytes; nil when none.
    func lendChunk(byteCount: Int, minimum: Int) -> UnsafeMutableRawPointer? {
        let lent: UnsafeMutableRawPointer? = lock.withLock {
            if let spare = takeSpare(atLeast: byteCount) { return spare }
            if let size = Arena.chunkSize(
                rule: byteCount, needed: minimum,
                room: Arena.room(under: chunkByteLimit, holding: ownBytes + otherBytes)),
                let chunk = malloc(size)
            {
                ChunkHeader.setSize(of: chunk, to: size)
                otherChunks += 1
                otherBytes += size
                return chunk
            }
            return takeSpare(atLeast: minimum)
        }
        guard let lent else { return nil }
        AtomicWord.raise(largestLocalChunk, to: ChunkHeader.size(of: lent), ordering: .relaxed)
        return lent
    }

    /// The first spare chunk of at least `byteCount` bytes, taken off the list. Caller
    /// holds `lock`.
    func takeSpare(atLeast byteCount: Int) -> UnsafeMutableRawPointer? {
        var link: UnsafeMutableRawPointer? = nil
        var candidate = spareChunks
        while let chunk = candidate {
            let next = ChunkHeader.previous(of: chunk)
            if ChunkHeader.size(of: chunk) >= byteCount {
                if let link { ChunkHeader.setPrevious(of: link, to: next) } else { spareChunks = next }
                return chunk
            }
            link = chunk
            candidate = next
        }
        return nil
    }

    /// A chunk a local arena is done with: retired until the reset when its data may still
    /// be in use, spare at once when not.
    func takeBack(_ chunk: UnsafeMutableRawPointer, dataIsDead: Bool) {
        lock.withLock {
            if dataIsDead {
                ChunkHeader.setPrevious(of: chunk, to: spareChunks)
                spareChunks = chunk
            } else {
                ChunkHeader.setPrevious(of: chunk, to: retiredChunks)
                retiredChunks = chunk
            }
        }
    }

    /// Bytes handed out from the own chunks. Caller holds `lock` (or the only reference).
    func ownBytesInUse() -> Int {
        var total = 0
        var next = UnsafeMutableRawPointer(bitPattern: current.load(ordering: .acquiring))
        while let chunk = next {
            let cursor = min(
                SharedChunkHeader.cursor(of: chunk).load(ordering: .relaxed), SharedChunkHeader.limit(of: chunk))
            total += cursor - SharedChunkHeader.dataStart(of: chunk)
            next = ChunkHeader.previous(of: chunk)
        }
        return total
    }

    /// See ``SharedArena/reset()``; the caller proved no other reference exists.
    func reset() {
        lock.withLock {
            let inUse = ownBytesInUse()
            if inUse > peakBytes { peakBytes = inUse }
            while let chunk = retiredChunks {
                retiredChunks = ChunkHeader.previous(of: chunk)
                ChunkHeader.setPrevious(of: chunk, to: spareChunks)
                spareChunks = chunk
            }
            if let newest = UnsafeMutableRawPointer(bitPattern: current.load(ordering: .relaxed)) {
                // As `Arena.reset`: keep the largest own chunk if it held the cycle, else one
                // chunk sized for the cycle (its windows included), so a repeating cycle
                // needs no new chunk after the first; the other own chunks go first.
                let largest = ownChunkCutToLimit ? Arena.largestChunk(from: newest) : newest
                var next: UnsafeMutableRawPointer? = newest
                while let chunk = next {
                    next = ChunkHeader.previous(of: chunk)
                    if chunk != largest { free(chunk) }
                }
                var kept: UnsafeMutableRawPointer? = largest
                var size = ChunkHeader.size(of: largest)
                let room = Arena.room(under: chunkByteLimit, holding: otherBytes)
                if ownChunks > 1, size - SharedChunkHeader.byteCount < inUse,
                    let cycleSize = Arena.chunkSize(forAtLeast: inUse + SharedChunkHeader.byteCount, after: 0),
                    cycleSize <= room
                {
                    if cycleSize <= room - size {
                        // Taken before the largest goes, so a failed `malloc` keeps it.
                        if let consolidated = malloc(cycleSize) {
                            free(largest)
                            kept = consolidated
                            size = cycleSize
                        }
                    } else {
                        // The limit does not allow both at once.
                        free(largest)
                        kept = malloc(cycleSize)
                        size = cycleSize
                    }
                }
                if let kept {
                    SharedChunkHeader.initialize(kept, size: size, previous: nil)
                    ownChunks = 1
                    ownBytes = size
                } else {
                    ownChunks = 0
                    ownBytes = 0
                }
                current.store(Int(bitPattern: kept), ordering: .releasing)
            }
            ownChunkCutToLimit = false
            // Over a limit lowered below what is held, the excess goes: spare chunks first,
            // then the own chunk.
            while ownBytes + otherBytes > chunkByteLimit, let spare = spareChunks {
                spareChunks = ChunkHeader.previous(of: spare)
                otherChunks -= 1
                otherBytes -= ChunkHeader.size(of: spare)
                free(spare)
            }
            if ownBytes + otherBytes > chunkByteLimit,
                let own = UnsafeMutableRawPointer(bitPattern: current.load(ordering: .relaxed))
            {
                free(own)
                current.store(0, ordering: .releasing)
                ownChunks = 0
                ownBytes = 0
            }
            resetCount += 1
            epoch.store(SharedArenaStorage.nextEpoch(), ordering: .relaxed)
            #if DEBUG
                if let violation = integrityViolationLocked() {
                    preconditionFailure("SharedArena after a reset: \(violation)")
                }
            #endif
        }
    }

    func statistics() -> ArenaAllocStatistics {
        lock.withLock {
            let inUse = ownBytesInUse()
            return ArenaAllocStatistics(
                chunks: ownChunks + otherChunks, reservedBytes: ownBytes + otherBytes, bytesInUse: inUse,
                peakBytesInUse: max(peakBytes, inUse), resets: resetCount)
        }
    }
}

// MARK: - Internals: SharedArenaStorage

/// The state of a ``SharedArena``, shared by its copies and its local arenas.
///
/// Its own chunks form a list from `current` (published with release, read with acquire);
/// each shared chunk has an atomic cursor in its header. Chunks are added under `lock`
/// and freed only by `reset` (when no other reference exists) or `deinit`, so a thread
/// that read a chunk's address can always still read its header.
@usableFromInline
final class SharedArenaStorage: @unchecked Sendable {
    /// The newest own chunk's address, or 0.
    let current = Atomic<Int>(0)
    /// This arena's epoch, unique in the process (from ``SharedArenaStorage/nextEpoch()``)
    /// and renewed by every reset: a thread's window is this arena's current one only
    /// when the epochs match, so a window never outlives a reset, and a window of a
    /// destroyed arena never matches an arena created later at the same address.
    @usableFromInline let epoch = Atomic<Int>(0)
    /// The largest chunk a local arena took: the next local arena's first chunk size.
    let largestLocalChunk: Atomic<Int>
    let lock = SpinLock()
    let firstChunkByteCount: Int
    // Guarded by `lock`:
    /// The most bytes of chunks, own and lent, the arena may hold (`Int.max`: no limit).
    var chunkByteLimit: Int
    /// Whether an own chunk was cut to the limit since the reset (the growth rule's sum
    /// part then does not hold for the own chunks).
    var ownChunkCutToLimit = false
    var ownChunks = 0
    var ownBytes = 0
    /// Chunks a local arena gave back with live data: kept until the reset.
    var retiredChunks: UnsafeMutableRawPointer?
    /// Chunks with no live data, lent again before anything is taken from the C heap.
    var spareChunks: UnsafeMutableRawPointer?
    var otherChunks = 0
    var otherBytes = 0
    var peakBytes = 0
    var resetCount = 0

    init(firstChunkByteCount: Int, chunkByteLimit: Int) {
        self.firstChunkByteCount = firstChunkByteCount
        self.chunkByteLimit = chunkByteLimit
        largestLocalChunk = Atomic(firstChunkByteCount)
        epoch.store(SharedArenaStorage.nextEpoch(), ordering: .relaxed)
        #if DEBUG
            assert(ArenaLayout.isChecked)
        #endif
    }

    /// A number no arena had before (epochs start at 1, so a zeroed window matches none).
    static func nextEpoch() -> Int {
        epochCounter.wrappingAdd(1, ordering: .relaxed).newValue
    }

    deinit {
        freeList(UnsafeMutableRawPointer(bitPattern: current.load(ordering: .relaxed)))
        freeList(retiredChunks)
        freeList(spareChunks)
    }

    func freeList(_ first: UnsafeMutableRawPointer?) {
        var next = first
        while let chunk = next {
            next = ChunkHeader.previous(of: chunk)
            free(chunk)
        }
    }

    /// The first chunk size of a new local arena.
    var firstLocalChunkByteCount: Int { largestLocalChunk.load(ordering: .relaxed) }
}

/// The source of ``SharedArenaStorage`` epochs.
let epochCounter = Atomic<Int>(0)

// MARK: - Internals: ThreadWindow

/// A thread's window into one shared arena: bytes it took from the arena's chunk and
/// bumps through alone. Lives in memory of its own, in the thread's `arenaAlloc` slot,
/// and is freed by the slot's exit hook.
@usableFromInline
struct ThreadWindow {
    /// The epoch of the arena the window belongs to (0: none).
    @usableFromInline var epoch: Int
    @usableFromInline var cursor: Int
    @usableFromInline var limit: Int

    /// Windows a thread keeps, most recently used first, so that a thread using up to
    /// this many shared arenas in turn goes on in each one's window instead of leaving a
    /// window's rest behind at every switch (with one window, alternating 16-byte
    /// requests between two arenas reserved 4 KiB each).
    static let perThread = 4

    /// The calling thread's ``perThread`` windows (the front one is what the fast path
    /// reads), made on its first use; nil on a thread that is exiting or whose exit hook
    /// cannot be armed (it then allocates from the chunk).
    static func current() -> UnsafeMutablePointer<ThreadWindow>? {
        if let state = ThreadLocalSlot.arenaAlloc.value { return state.assumingMemoryBound(to: ThreadWindow.self) }
        guard !ThreadLocalSlot.isCurrentThreadExiting, exitHookIsSet,
            let memory = malloc(MemoryLayout<ThreadWindow>.stride * perThread)
        else { return nil }
        let window = memory.bindMemory(to: ThreadWindow.self, capacity: perThread)
        window.initialize(repeating: ThreadWindow(epoch: 0, cursor: 0, limit: 0), count: perThread)
        do {
            try ThreadLocalSlot.arenaAlloc.install(memory)
        } catch {
            ThreadLocalSlot.arenaAlloc.value = nil
            free(memory)
            return nil
        }
        return window
    }

    /// Sets the hook that frees a window when its thread exits (once per process).
    static let exitHookIsSet: Bool = {
        ThreadLocalSlot.arenaAlloc.setThreadExitHook { state in free(state) }
        return true
    }()
}

// MARK: - Internals: GenerationStamp

#if DEBUG
    /// The arena generation a debug handle was made in, and where to read the current one.
    @usableFromInline struct GenerationStamp: @unchecked Sendable {
        @usableFromInline let current: UnsafeMutablePointer<Int>
        @usableFromInline let made: Int

        @inlinable
        init(_ current: UnsafeMutablePointer<Int>) {
            self.current = current
            made = current.pointee
        }

        @inlinable
        func check(kind: @autoclosure () -> String, address: UnsafeRawPointer) {
            if current.pointee != made { staleHandle(kind(), address: address, made: made, now: current.pointee) }
        }
    }

    @usableFromInline @inline(never)
    func staleHandle(_ kind: String, address: UnsafeRawPointer, made: Int, now: Int) -> Never {
        preconditionFailure(
            "\(kind) at \(address) used after its arena was reset: made in generation \(made), the arena is in generation \(now)"
        )
    }
#endif

// MARK: - Layout: ChunkHeader

/// The header at the start of every chunk of an ``Arena`` or ``LocalArena`` (and of every
/// chunk in an ``ArenaCache`` or in a ``SharedArena``'s retired and spare lists), in
/// address order. The data starts right after it, 16-aligned because `malloc` memory is
/// and the header is a multiple of 16.
@usableFromInline
enum ChunkHeader {
    /// The previous (older, smaller) chunk, or nil. First, so that every list of chunks
    /// (an arena's, a cache's, a shared arena's own, retired and spare ones) links
    /// through the same word, whichever header the chunk has.
    @inlinable static var previousOffset: Int { 0 }
    /// The chunk's size in bytes, header included: the chunk ends (an arena's limit
    /// lies) at `chunk + size`.
    static let sizeOffset = 8
    /// The header's size: a multiple of 16, so that the data keeps `malloc`'s alignment.
    @usableFromInline static let byteCount = 16

    @inlinable
    static func dataStart(of chunk: UnsafeMutableRawPointer) -> Int { Int(bitPattern: chunk) &+ byteCount }

    @inlinable
    static func previous(of chunk: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
        chunk.load(fromByteOffset: previousOffset, as: UnsafeMutableRawPointer?.self)
    }

    static func setPrevious(of chunk: UnsafeMutableRawPointer, to previous: UnsafeMutableRawPointer?) {
        chunk.storeBytes(of: previous, toByteOffset: previousOffset, as: UnsafeMutableRawPointer?.self)
    }

    static func size(of chunk: UnsafeMutableRawPointer) -> Int { chunk.load(fromByteOffset: sizeOffset, as: Int.self) }

    static func setSize(of chunk: UnsafeMutableRawPointer, to size: Int) {
        chunk.storeBytes(of: size, toByteOffset: sizeOffset, as: Int.self)
    }
}

// MARK: - Layout: SharedChunkHeader

/// The header of a ``SharedArena``'s own chunks, in address order: a ``ChunkHeader``
/// (so the chunks list and free like any other), then the atomic cursor and the limit.
@usableFromInline
enum SharedChunkHeader {
    /// As ``ChunkHeader/previousOffset``: the previous (older) own chunk.
    static let previousOffset = ChunkHeader.previousOffset
    /// As ``ChunkHeader/sizeOffset``: the chunk's size, header included.
    static let sizeOffset = ChunkHeader.sizeOffset
    /// The cursor (an `AtomicWord`): the next free byte, bumped by every thread with a
    /// fetch-and-add. Kept a multiple of 8; it may stand past the limit once the chunk is
    /// full (a racing thread's add).
    static let cursorOffset = 16
    /// The limit, `chunk + size`: written once before the chunk is published and read by
    /// every allocation, so it sits beside the cursor, on the same cache line.
    static let limitOffset = 24
    /// The header's size: a multiple of 16, so that the data keeps `malloc`'s alignment.
    static let byteCount = 32

    static func cursor(of chunk: UnsafeMutableRawPointer) -> AtomicWord { AtomicWord(at: chunk + cursorOffset) }

    static func limit(of chunk: UnsafeMutableRawPointer) -> Int {
        chunk.load(fromByteOffset: limitOffset, as: Int.self)
    }

    static func dataStart(of chunk: UnsafeMutableRawPointer) -> Int { Int(bitPattern: chunk) + byteCount }

    /// Writes the header; the chunk is published afterwards (with release).
    static func initialize(_ chunk: UnsafeMutableRawPointer, size: Int, previous: UnsafeMutableRawPointer?) {
        ChunkHeader.setPrevious(of: chunk, to: previous)
        ChunkHeader.setSize(of: chunk, to: size)
        _ = AtomicWord(initializingAt: chunk + cursorOffset, to: dataStart(of: chunk))
        chunk.storeBytes(of: Int(bitPattern: chunk) + size, toByteOffset: limitOffset, as: Int.self)
    }
}

// MARK: - Layout: DeinitRecord

/// A record of values to deinitialize at the reset, in the arena itself, in address
/// order. Allocated with alignment ``alignment`` right after its values (or in the next
/// chunk), so it lies below the rollback floor and is never rolled back.
@usableFromInline
enum DeinitRecord {
    /// The next (older) record, or nil: the records form a list, newest first.
    @inlinable static var nextOffset: Int { 0 }
    /// The values' type, as `Any.Type` metadata: the reset opens it to deinitialize them.
    @inlinable static var typeOffset: Int { 8 }
    /// The first value's address.
    @inlinable static var valuesOffset: Int { 16 }
    /// How many values (at least 1: nothing is recorded for none).
    @inlinable static var countOffset: Int { 24 }
    /// The record's size.
    @usableFromInline static let byteCount = 32
    /// The alignment records are allocated with: their fields are words.
    @usableFromInline static let alignment = 8

    @inlinable
    static func initialize<T>(
        _ record: UnsafeMutableRawPointer, next: UnsafeMutableRawPointer?, type: T.Type,
        values: UnsafeMutablePointer<T>, count: Int
    ) {
        record.storeBytes(of: next, toByteOffset: nextOffset, as: UnsafeMutableRawPointer?.self)
        record.storeBytes(
            of: unsafeBitCast(T.self as Any.Type, to: UnsafeRawPointer.self), toByteOffset: typeOffset,
            as: UnsafeRawPointer.self)
        record.storeBytes(
            of: UnsafeMutableRawPointer(values), toByteOffset: valuesOffset, as: UnsafeMutableRawPointer.self)
        record.storeBytes(of: count, toByteOffset: countOffset, as: Int.self)
    }

    static func next(of record: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
        record.load(fromByteOffset: nextOffset, as: UnsafeMutableRawPointer?.self)
    }

    static func valueType(of record: UnsafeMutableRawPointer) -> Any.Type {
        unsafeBitCast(record.load(fromByteOffset: typeOffset, as: UnsafeRawPointer.self), to: Any.Type.self)
    }

    static func values(of record: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer {
        record.load(fromByteOffset: valuesOffset, as: UnsafeMutableRawPointer.self)
    }

    static func count(of record: UnsafeMutableRawPointer) -> Int {
        record.load(fromByteOffset: countOffset, as: Int.self)
    }

    /// Deinitializes the record's values, opening the stored type.
    static func run(_ record: UnsafeMutableRawPointer) {
        deinitialize(valueType(of: record), values(of: record), count(of: record))
    }

    static func deinitialize<T>(_ type: T.Type, _ values: UnsafeMutableRawPointer, _ count: Int) {
        values.assumingMemoryBound(to: T.self).deinitialize(count: count)
    }

    /// The stride of the record's values' type (for the integrity walker).
    static func stride(of record: UnsafeMutableRawPointer) -> Int { strideOf(valueType(of: record)) }

    static func strideOf<T>(_ type: T.Type) -> Int { MemoryLayout<T>.stride }
}

// MARK: - Layout: the check

/// The check that pins every header's layout, with AllocCore's `LayoutCheck`: debug builds
/// run it once, when the first arena of the process is made; the layout test runs it in
/// every build.
enum ArenaLayout {
    /// The headers in raw memory, from the named offsets above. (A ``ThreadWindow`` is a
    /// Swift struct, read only as one: only its size is pinned, by ``violation()``.)
    enum Header: String, CaseIterable {
        case chunkHeader = "ChunkHeader"
        case sharedChunkHeader = "SharedChunkHeader"
        case deinitRecord = "DeinitRecord"

        var name: String { rawValue }
    }

    static var headers: [Header] { Header.allCases }

    /// What is wrong with `header`, or nil: its fields in address order without overlap,
    /// each aligned to its word and inside the header, and the header's size a multiple of
    /// the alignment of the addresses it starts at, so that what follows it keeps that
    /// alignment (declared as the field after the last: a chunk's data at 16, like
    /// `malloc`'s; the block after a record at ``DeinitRecord/alignment``).
    static func violation(in header: Header) -> String? {
        let word = MemoryLayout<Int>.size
        switch header {
        case .chunkHeader:
            var check = LayoutCheck("ChunkHeader")
            check.field("previous", at: ChunkHeader.previousOffset, size: word)
            check.field("size", at: ChunkHeader.sizeOffset, size: word)
            check.field("data", at: ChunkHeader.byteCount, size: 0, alignment: 16)
            return check.result(within: ChunkHeader.byteCount)
        case .sharedChunkHeader:
            var check = LayoutCheck("SharedChunkHeader")
            check.field("previous", at: SharedChunkHeader.previousOffset, size: word)
            check.field("size", at: SharedChunkHeader.sizeOffset, size: word)
            check.field("cursor", at: SharedChunkHeader.cursorOffset, size: word)
            check.field("limit", at: SharedChunkHeader.limitOffset, size: word)
            check.field("data", at: SharedChunkHeader.byteCount, size: 0, alignment: 16)
            return check.result(within: SharedChunkHeader.byteCount)
        case .deinitRecord:
            var check = LayoutCheck("DeinitRecord")
            check.field("next", at: DeinitRecord.nextOffset, size: word)
            check.field("type", at: DeinitRecord.typeOffset, size: word)
            check.field("values", at: DeinitRecord.valuesOffset, size: word)
            check.field("count", at: DeinitRecord.countOffset, size: word)
            check.field("following", at: DeinitRecord.byteCount, size: 0, alignment: DeinitRecord.alignment)
            return check.result(within: DeinitRecord.byteCount)
        }
    }

    /// What is wrong with any header, or nil; also what the code assumes across them: a
    /// shared chunk's header starts as a chunk header (lists of both walk through
    /// ``ChunkHeader/previous(of:)``), and a thread window is three words (they are
    /// allocated as `perThread` strides).
    static func violation() -> String? {
        if let violation = violation(in: .chunkHeader) ?? violation(in: .sharedChunkHeader)
            ?? violation(in: .deinitRecord)
        {
            return violation
        }
        if SharedChunkHeader.previousOffset != ChunkHeader.previousOffset
            || SharedChunkHeader.sizeOffset != ChunkHeader.sizeOffset
        {
            return "SharedChunkHeader does not start as a ChunkHeader"
        }
        if MemoryLayout<ThreadWindow>.stride != 3 * MemoryLayout<Int>.size {
            return "ThreadWindow is \(MemoryLayout<ThreadWindow>.stride) bytes, not three words"
        }
        return nil
    }

    #if DEBUG
        /// Runs ``violation()`` once per process and traps on what it finds (debug builds).
        static let isChecked: Bool = {
            if let violation = violation() { preconditionFailure("ArenaAlloc layout: \(violation)") }
            return true
        }()
    #endif
}

// MARK: - Integrity walker

extension Arena {
    /// The first broken invariant of the arena's structure (spec section 4), or nil:
    ///
    /// - the chunk chain: as many chunks and bytes as counted, each 16-aligned, a size the
    ///   growth rule gives (a power of two below ``chunkGranularity``, a multiple of it
    ///   above) and at least every older chunk's bytes plus a header (unless a chunk was
    ///   cut to the allocation limit this cycle);
    /// - the cursor, the rollback floor and the limit inside the newest chunk
    ///   (`data start ≤ floor ≤ cursor ≤ limit = chunk + size`), or `1, 0` with no chunk;
    /// - the bytes used in earlier chunks: none with one chunk, at most their data bytes;
    /// - the deinit records: each inside a chunk, newest first (a record lies below the
    ///   one before it in its chunk, or in an older chunk), below the rollback floor, its
    ///   values (at least one) inside a chunk and before it.
    ///
    /// O(chunks × records). Debug builds run it at the end of every slow reset; the model
    /// test after every step.
    func integrityViolation() -> String? {
        guard let newest = chunk else {
            if cursor != 1 || limit != 0 {
                return "an arena with no chunk has cursor \(cursor) and limit \(limit), not 1 and 0"
            }
            if chunkCount != 0 || reservedBytes != 0 || bytesUsedInEarlierChunks != 0 || deinitRecords != nil {
                return "an arena with no chunk counts \(chunkCount) chunks, \(reservedBytes) bytes reserved, "
                    + "\(bytesUsedInEarlierChunks) bytes used in earlier ones, or has deinit records"
            }
            return nil
        }
        let chain = Arena.walkChain(
            from: newest, counted: chunkCount, bytes: reservedBytes, headerByteCount: ChunkHeader.byteCount,
            growthSumHolds: !holdsChunkCutToLimit, owner: "the arena")
        if let violation = chain.violation { return violation }
        let (chunks, sizes) = (chain.chunks, chain.sizes)
        let dataStart = ChunkHeader.dataStart(of: newest)
        if limit != Int(bitPattern: newest) + sizes[0] {
            return "the limit \(limit) is not the newest chunk's end \(Int(bitPattern: newest) + sizes[0])"
        }
        if !(dataStart <= rollbackFloor && rollbackFloor <= cursor && cursor <= limit) {
            return
                "data start \(dataStart), rollback floor \(rollbackFloor), cursor \(cursor), limit \(limit) are out of order"
        }
        let earlierDataBytes = sizes.dropFirst().reduce(0) { $0 + $1 - ChunkHeader.byteCount }
        if bytesUsedInEarlierChunks < 0 || bytesUsedInEarlierChunks > earlierDataBytes
            || (chunkCount == 1 && bytesUsedInEarlierChunks != 0)
        {
            return "\(bytesUsedInEarlierChunks) bytes used in earlier chunks, which hold \(earlierDataBytes) data bytes"
        }
        return deinitRecordsViolation(chunks: chunks, sizes: sizes)
    }

    /// The chain of chunks from `first` (newest first), and what is wrong with it: not
    /// exactly `counted` chunks (the walk stops past that, so a cycle ends it), not `bytes`
    /// bytes in all, or a chunk that breaks the growth rule (its sum part only when
    /// `growthSumHolds`: no chunk was cut to an allocation limit).
    static func walkChain(
        from first: UnsafeMutableRawPointer?, counted: Int, bytes: Int, headerByteCount: Int, growthSumHolds: Bool,
        owner: String
    ) -> (chunks: [UnsafeMutableRawPointer], sizes: [Int], violation: String?) {
        var chunks: [UnsafeMutableRawPointer] = []
        var next = first
        while let current = next, chunks.count <= counted {
            chunks.append(current)
            next = ChunkHeader.previous(of: current)
        }
        let sizes = chunks.map { ChunkHeader.size(of: $0) }
        if chunks.count != counted {
            let more = next == nil ? "" : " or more"
            return (chunks, sizes, "\(owner)'s chain holds \(chunks.count)\(more) chunks, it counts \(counted)")
        }
        if let violation = chunkChainViolation(
            chunks, sizes: sizes, headerByteCount: headerByteCount, growthSumHolds: growthSumHolds)
        {
            return (chunks, sizes, violation)
        }
        if sizes.reduce(0, +) != bytes {
            return (chunks, sizes, "\(owner)'s chunks hold \(sizes.reduce(0, +)) bytes, it counts \(bytes)")
        }
        return (chunks, sizes, nil)
    }

    /// What is wrong with the chain `chunks` (newest first) of the given `sizes`, or nil:
    /// a chunk misaligned, not of a size the growth rule gives, or (when `growthSumHolds`)
    /// smaller than the older chunks together plus a header.
    static func chunkChainViolation(
        _ chunks: [UnsafeMutableRawPointer], sizes: [Int], headerByteCount: Int, growthSumHolds: Bool
    )
        -> String?
    {
        var olderBytes = sizes.reduce(0, +)
        for (chunk, size) in zip(chunks, sizes) {
            olderBytes -= size
            if Int(bitPattern: chunk) % 16 != 0 { return "chunk \(chunk) is not 16-aligned" }
            if size < headerByteCount || chunkSize(forAtLeast: size, after: 0) != size {
                return "chunk \(chunk) has \(size) bytes, not a size of the growth rule"
            }
            if growthSumHolds && size < olderBytes + headerByteCount {
                return "chunk \(chunk) has \(size) bytes, less than the \(olderBytes) of older chunks plus a header"
            }
        }
        return nil
    }

    /// The records part of ``integrityViolation()``; `chunks` is the chain, newest first.
    func deinitRecordsViolation(chunks: [UnsafeMutableRawPointer], sizes: [Int]) -> String? {
        /// The index in `chunks` of the chunk whose data holds `start..<start + byteCount`.
        func chunkIndex(of start: Int, byteCount: Int) -> Int? {
            chunks.indices.first { index in
                let base = Int(bitPattern: chunks[index])
                return start >= base + ChunkHeader.byteCount && byteCount <= base + sizes[index] - start
            }
        }
        var previous: (index: Int, address: Int)? = nil
        var next = deinitRecords
        while let record = next {
            let address = Int(bitPattern: record)
            guard let index = chunkIndex(of: address, byteCount: DeinitRecord.byteCount) else {
                return "deinit record \(record) lies in no chunk of the arena"
            }
            if let previous, index < previous.index || (index == previous.index && address >= previous.address) {
                return "deinit record \(record) is not older than the record before it"
            }
            if index == 0 && address + DeinitRecord.byteCount > rollbackFloor {
                return "deinit record \(record) lies above the rollback floor \(rollbackFloor)"
            }
            let values = Int(bitPattern: DeinitRecord.values(of: record))
            let count = DeinitRecord.count(of: record)
            let (byteCount, overflow) = count.multipliedReportingOverflow(by: DeinitRecord.stride(of: record))
            guard count >= 1, !overflow, let valuesIndex = chunkIndex(of: values, byteCount: byteCount),
                valuesIndex > index || (valuesIndex == index && values + byteCount <= address)
            else {
                return
                    "deinit record \(record) holds \(count) values at 0x\(String(values, radix: 16)), not before it in a chunk"
            }
            previous = (index, address)
            next = DeinitRecord.next(of: record)
        }
        return nil
    }
}

extension LocalArena {
    /// The first broken invariant of the local arena's structure, or nil; see
    /// ``Arena/integrityViolation()``.
    func integrityViolation() -> String? { arena.integrityViolation() }
}

extension SharedArena {
    /// The first broken invariant of the shared arena's structure, or nil; see
    /// ``SharedArenaStorage/integrityViolation()``.
    func integrityViolation() -> String? { storage.integrityViolation() }
}

extension SharedArenaStorage {
    /// The first broken invariant of the shared arena's structure (spec section 4), or
    /// nil; takes the lock. Threads may allocate meanwhile: what it reads of the cursors
    /// only grows.
    func integrityViolation() -> String? { lock.withLock { integrityViolationLocked() } }

    /// ``integrityViolation()`` for a caller that holds the lock:
    ///
    /// - the own chunks: as many and as many bytes as counted, the growth rule as an
    ///   arena's, each header's limit its end and its cursor a multiple of 8 at or past
    ///   its data start (past the limit only when full);
    /// - the retired and spare chunks: sizes of the growth rule, no more of them or their
    ///   bytes than lent (the rest are in live local arenas), and no chunk twice, in one
    ///   list or across lists;
    /// - the largest local chunk at least the first chunk size.
    ///
    /// Debug builds run it at the end of every reset.
    func integrityViolationLocked() -> String? {
        let chain = Arena.walkChain(
            from: UnsafeMutableRawPointer(bitPattern: current.load(ordering: .acquiring)), counted: ownChunks,
            bytes: ownBytes, headerByteCount: SharedChunkHeader.byteCount, growthSumHolds: !ownChunkCutToLimit,
            owner: "the shared arena")
        if let violation = chain.violation { return violation }
        let (own, sizes) = (chain.chunks, chain.sizes)
        for (chunk, size) in zip(own, sizes) {
            let limit = SharedChunkHeader.limit(of: chunk)
            let cursor = SharedChunkHeader.cursor(of: chunk).load(ordering: .relaxed)
            if limit != Int(bitPattern: chunk) + size { return "shared chunk \(chunk) has limit \(limit), not its end" }
            if cursor < SharedChunkHeader.dataStart(of: chunk) || cursor % 8 != 0 {
                return "shared chunk \(chunk) has cursor \(cursor): before its data or not a multiple of 8"
            }
        }
        var lentBack: [UnsafeMutableRawPointer] = []
        for (name, first) in [("retired", retiredChunks), ("spare", spareChunks)] {
            var next = first
            while let chunk = next {
                if lentBack.count >= otherChunks { return "more retired and spare chunks than the \(otherChunks) lent" }
                let size = ChunkHeader.size(of: chunk)
                if Int(bitPattern: chunk) % 16 != 0 || size < ChunkHeader.byteCount
                    || Arena.chunkSize(forAtLeast: size, after: 0) != size
                {
                    return "\(name) chunk \(chunk) of \(size) bytes is misaligned or not a size of the growth rule"
                }
                lentBack.append(chunk)
                next = ChunkHeader.previous(of: chunk)
            }
        }
        let lentBackBytes = lentBack.reduce(0) { $0 + ChunkHeader.size(of: $1) }
        if lentBackBytes > otherBytes {
            return "retired and spare chunks hold \(lentBackBytes) bytes, more than the \(otherBytes) lent"
        }
        let all = (own + lentBack).map { Int(bitPattern: $0) }.sorted()
        if let twice = zip(all, all.dropFirst()).first(where: { $0 == $1 }) {
            return "chunk 0x\(String(twice.0, radix: 16)) is in the shared arena's lists twice"
        }
        if largestLocalChunk.load(ordering: .relaxed) < firstChunkByteCount {
            return "the largest local chunk \(largestLocalChunk.load(ordering: .relaxed)) is below the first chunk size"
        }
        return nil
    }
}

extension ArenaCache {
    /// The first broken invariant of the cache's warm chunks, or nil: as many as
    /// counted, each 16-aligned and of a size the growth rule gives.
    func integrityViolation() -> String? {
        lock.withLock {
            var count = 0
            var next = warmChunks
            while let chunk = next {
                if count >= warmCount { return "the cache holds more than its \(warmCount) warm chunks" }
                let size = ChunkHeader.size(of: chunk)
                if Int(bitPattern: chunk) % 16 != 0 || size < ChunkHeader.byteCount
                    || Arena.chunkSize(forAtLeast: size, after: 0) != size
                {
                    return "warm chunk \(chunk) of \(size) bytes is misaligned or not a size of the growth rule"
                }
                count += 1
                next = ChunkHeader.previous(of: chunk)
            }
            return count == warmCount ? nil : "the cache holds \(count) warm chunks, it counts \(warmCount)"
        }
    }
}
