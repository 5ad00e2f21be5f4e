// LargeAlloc: an allocator only for large objects, in power-of-two size classes, with
// per-thread caches, global dirty and clean pools and a background worker that gives the
// pages of freed regions back to the OS.
//
// # What it is
//
// A request for `capacity` values of `Element` takes a *region* of the smallest power of two
// that holds it, from 64 KiB to 64 GiB (21 classes). Regions are cut from *chunks* (lgalloc's
// areas): big mappings, anonymous or backed by a temporary file, mapped a class at a time.
// A region is
// handed out as a ``Region``: a `~Copyable`, fixed-capacity typed buffer that goes back to
// its allocator, from whatever thread drops it.
//
// ```swift
// let allocator = try LargeAllocator(configuration: .init())
// var samples = try allocator.allocate(Double.self, capacity: 1_000_000)  // an 8 MiB region
// samples.append(1.5)
// samples.withUnsafeBufferPointer { print($0.reduce(0, +)) }
// // capacity is 1_048_576 (8 MiB / 8): `append` past it traps, `push` hands the value back
// ```
//
// A region's elements are also spans bound to its lifetime, `span` and `mutableSpan`: the
// compiler rejects one that outlives the region or is used across a change to it
// (`@_lifetime`, which needs the package's `Lifetimes` feature). And
// `append(minimumFreeCapacity:initializingWith:)` hands the free capacity to a closure as
// an `OutputSpan`, so that `read(2)` or a decoder fills the region in place, with no copy;
// what the closure initialized is appended, also when it throws.
//
// ```swift
// var bytes = try allocator.allocate(UInt8.self, capacity: 1 << 20)
// bytes.append(minimumFreeCapacity: 4096) { output in decoder.decode(into: &output) }
// checksum(bytes.span)                              // Span<UInt8>: borrows `bytes`
// ```
//
// # Where a region comes from
//
// 1. The calling thread's cache (a few dirty regions, at most `threadCacheBytes`).
// 2. The class's global *dirty* pool (freed, pages still resident).
// 3. The class's global *clean* pool (pages given back to the OS, or never touched).
// 4. Another thread's cache (*stealing*).
// 5. A new chunk, under the refill lock, of a size that grows with each refill of the class
//    (slowed by the growth dampener) but never past `maximumChunkBytes`.
//
// A free goes to the freeing thread's cache; past its byte bound, to the dirty pool, or
// with `eagerReturn` straight to the clean pool after `MADV_DONTNEED` (`MADV_REMOVE` for
// file-backed chunks). The background worker wakes every `backgroundInterval`, takes up to
// `backgroundBytesPerTick` of the regions that have been dirty for a whole interval from
// each dirty pool, oldest first, advises the pages away and moves them to the clean pool.
// A chunk whose regions are all clean for `chunkIdleAge` is unmapped.
//
// # Where it comes from
//
// The Rust crate lgalloc (Materialize). It improves on the crate's open points: chunks are
// unmapped when wholly clean and idle, chunk growth is bounded, a child process after
// `fork` can allocate and free, and instances (not one global) make it testable. The
// design is in docs/spec/LargeAlloc.md.
//
// # How this file reads
//
// Public API; the fast path (thread cache); the slow path (pools, stealing, refills, the
// background worker, statistics, fork); the internal types (region nodes, chunks, class
// pools, thread caches, the control block, the list of live allocators); the layout of
// every header in raw memory as named offsets, with the check that pins it; the integrity
// walker.

import AllocCore
import Glibc
import Synchronization

// MARK: - Public API: LargeAllocConfiguration

/// How a ``LargeAllocator`` behaves. Every field can be changed at run time with
/// ``LargeAllocator/reconfigure(_:)``; new values apply to the next operation that reads
/// them (new chunks for the backing, the next tick for the worker's figures).
///
/// ```swift
/// var configuration = LargeAllocConfiguration()
/// configuration.backing = .file(directory: "/var/tmp")
/// configuration.backgroundInterval = .milliseconds(100)
/// configuration.eagerReturn = true
/// let allocator = try LargeAllocator(configuration: configuration)
/// ```
public struct LargeAllocConfiguration: Sendable, Equatable {
    /// What new chunks are made of.
    public enum Backing: Sendable, Equatable {
        /// Anonymous private memory; with `hugePages`, chunks (aligned to 2 MiB) get
        /// `MADV_HUGEPAGE` so the kernel can back them with transparent huge pages.
        case anonymous(hugePages: Bool)
        /// A temporary file per chunk, created in `directory`, unlinked at once and mapped
        /// shared: under memory pressure the kernel writes cold pages to the file instead of
        /// swap. The file disappears when its chunk is unmapped.
        case file(directory: String)
    }

    /// The advice the background worker gives the pages of dirty regions.
    public enum ClearAdvice: Sendable, Equatable {
        /// `MADV_FREE`: the kernel takes the pages lazily, under memory pressure; cheapest
        /// when regions are soon reused, but RSS falls only when the kernel reclaims.
        case free
        /// `MADV_DONTNEED`: the pages go at once and RSS falls.
        case dontNeed
        /// `MADV_REMOVE`: frees the pages and the file's blocks (file-backed chunks). The
        /// kernel refuses it on anonymous private memory (EINVAL): the worker then counts a
        /// clear failure per region and leaves the regions dirty.
        case remove
    }

    /// Whether ``LargeAllocator/allocate(_:capacity:)`` serves requests; a disabled
    /// allocator throws ``LargeAllocError/disabled`` (regions already out can still be
    /// used and freed).
    public var isEnabled = true
    /// What new chunks are made of.
    public var backing = Backing.anonymous(hugePages: false)
    /// The most bytes of regions a thread's cache holds; 0 disables thread caches.
    public var threadCacheBytes = 32 << 20
    /// Whether a free that does not fit the thread cache gives its pages back at once
    /// (`MADV_DONTNEED`, or `MADV_REMOVE` on file-backed chunks) and goes to the clean pool.
    public var eagerReturn = false
    /// How often the background worker wakes; nil: no worker.
    public var backgroundInterval: Duration? = .seconds(1)
    /// The most bytes the worker takes from each class's dirty pool per tick (it always
    /// takes at least one region, so no class waits forever). It takes only regions that
    /// have been dirty for a whole `backgroundInterval`, least recently freed first.
    public var backgroundBytesPerTick = 128 << 20
    /// The worker's advice; nil: `.free` for anonymous chunks, `.remove` for file-backed ones.
    public var clearAdvice: ClearAdvice? = nil
    /// The size of a class's first chunk: 32 MiB, as lgalloc. Classes of that size or
    /// more get one region per chunk at first.
    public var initialChunkBytes = 32 << 20
    /// The largest chunk (beyond the single region of a class larger than this): 1 GiB
    /// bounds how much address space and file one refill takes.
    public var maximumChunkBytes = 1 << 30
    /// A chunk has `initialChunkBytes << (refills >> growthDampener)` bytes (bounded by
    /// `maximumChunkBytes`): 0 doubles each refill, 1 every second refill, and so on.
    public var growthDampener = 1
    /// How long a chunk's regions must all be clean before the worker unmaps it; nil: never.
    public var chunkIdleAge: Duration? = .seconds(10)

    public init() {}

    /// Checks the figures (the directory is checked by the allocator, which creates a file).
    func validate() {
        precondition(threadCacheBytes >= 0, "LargeAllocConfiguration: negative threadCacheBytes \(threadCacheBytes)")
        precondition(
            backgroundBytesPerTick > 0,
            "LargeAllocConfiguration: backgroundBytesPerTick must be positive, not \(backgroundBytesPerTick)")
        precondition(
            initialChunkBytes > 0,
            "LargeAllocConfiguration: initialChunkBytes must be positive, not \(initialChunkBytes)")
        precondition(
            maximumChunkBytes >= initialChunkBytes,
            "LargeAllocConfiguration: maximumChunkBytes \(maximumChunkBytes) is below initialChunkBytes \(initialChunkBytes)"
        )
        precondition(
            (0...62).contains(growthDampener),
            "LargeAllocConfiguration: growthDampener \(growthDampener) is not in 0...62"
        )
        if let backgroundInterval {
            // At least a microsecond: a shorter positive interval rounds to no wait at all,
            // and the worker would spin.
            precondition(
                backgroundInterval >= .microseconds(1),
                "LargeAllocConfiguration: backgroundInterval must be positive (1 µs at least), not \(backgroundInterval)"
            )
        }
        if let chunkIdleAge {
            precondition(chunkIdleAge >= .zero, "LargeAllocConfiguration: negative chunkIdleAge \(chunkIdleAge)")
        }
    }
}

// MARK: - Public API: LargeAllocError

/// Why a request failed: exhaustion, overflow or a refused resource. Programmer errors
/// (a capacity below 1, a zero-size element type, an append to a full region) are
/// preconditions instead (spec section 9).
public enum LargeAllocError: Error, Equatable, Sendable {
    /// The allocator is disabled (``LargeAllocConfiguration/isEnabled``).
    case disabled
    /// `capacity × stride` overflows an `Int`.
    case sizeOverflow(capacity: Int, stride: Int)
    /// More bytes than the largest class (``LargeAllocator/maximumRegionSize``).
    case tooLarge(byteCount: Int)
    /// The kernel refused to map a chunk (address space or memory exhausted).
    case outOfMemory(SystemError)
    /// A temporary file could not be created or sized in the configured directory (it does
    /// not exist, is not a directory, is not writable, or the disk is full). Nothing is
    /// left behind.
    case io(SystemError)
}

// MARK: - Public API: Region

/// A fixed-capacity buffer of `Element` in a region of a ``LargeAllocator``.
///
/// The capacity is what the region's size class holds (at least what was asked) and never
/// changes; nothing is ever reallocated. A full region is the caller's to foresee
/// (``isFull``, ``freeCapacity``): ``append(_:)`` past the capacity traps, ``push(_:)``
/// hands the element back, and the bulk appends store all their elements or trap before
/// storing any. Elements `0..<count` are initialized; the rest of the region is raw memory.
///
/// A region is `~Copyable`: it has one owner, and when the owner drops it (on any thread)
/// its elements are deinitialized and the region goes back to the allocator. It is
/// `Sendable` when `Element` is.
///
/// ```swift
/// var region = try allocator.allocate(UInt64.self, capacity: 100_000)
/// for value in 0..<100_000 { region.append(UInt64(value)) }
/// region.prefetch(50_000..<60_000)                  // MADV_WILLNEED
/// let sum = region.withUnsafeBufferPointer { $0.reduce(0, &+) }
/// ```
public struct Region<Element>: ~Copyable {
    @usableFromInline let node: Node
    @usableFromInline let control: Control
    @usableFromInline let elements: UnsafeMutablePointer<Element>
    /// How many elements the region holds at most.
    public let capacity: Int
    @usableFromInline var storedCount = 0

    @inlinable
    init(node: Node, control: Control) {
        self.node = node
        self.control = control
        elements = node.address.bindMemory(to: Element.self, capacity: 1)
        capacity = Layout.regionSize(ofClass: node.classIndex) / MemoryLayout<Element>.stride
    }

    deinit {
        elements.deinitialize(count: storedCount)
        control.release(node)
    }

    /// The number of initialized elements.
    @inlinable public var count: Int { storedCount }
    /// Whether the region holds no element.
    @inlinable public var isEmpty: Bool { storedCount == 0 }
    /// The region's size in bytes (its size class).
    @inlinable public var byteCapacity: Int { Layout.regionSize(ofClass: node.classIndex) }
    /// Whether the region holds ``capacity`` elements: ``append(_:)`` would trap.
    @inlinable public var isFull: Bool { storedCount == capacity }
    /// How many more elements fit: `capacity - count`.
    @inlinable public var freeCapacity: Int { capacity &- storedCount }

    /// Appends `element`.
    ///
    /// - Precondition: the region is not full (``isFull``); use ``push(_:)`` to have the
    ///   element handed back instead.
    @inlinable
    public mutating func append(_ element: consuming Element) {
        precondition(storedCount < capacity, "Region.append: the region is full (capacity \(capacity))")
        (elements + storedCount).initialize(to: element)
        storedCount &+= 1
    }

    /// Appends `element` if there is room, else hands it back.
    ///
    /// - Returns: nil when the element was stored; the element itself when the region is
    ///   full (the region is unchanged).
    @inlinable
    public mutating func push(_ element: consuming Element) -> Element? {
        guard storedCount < capacity else { return element }
        (elements + storedCount).initialize(to: element)
        storedCount &+= 1
        return nil
    }

    /// Appends every element of `buffer`.
    ///
    /// - Precondition: they all fit (`buffer.count <= freeCapacity`); nothing is stored
    ///   otherwise.
    @inlinable
    public mutating func append(contentsOf buffer: UnsafeBufferPointer<Element>) {
        precondition(
            buffer.count <= capacity &- storedCount,
            "Region.append(contentsOf:): \(buffer.count) elements do not fit in the \(capacity &- storedCount) free")
        guard let source = buffer.baseAddress else { return }
        (elements + storedCount).initialize(from: source, count: buffer.count)
        storedCount &+= buffer.count
    }

    /// Appends `count` copies of `value`.
    ///
    /// - Precondition: `0 <= count <= freeCapacity`; nothing is stored otherwise.
    @inlinable
    public mutating func append(count: Int, repeating value: Element) {
        precondition(count >= 0, "Region.append(count: \(count)): negative count")
        precondition(
            count <= capacity &- storedCount,
            "Region.append(count: \(count)): \(count) elements do not fit in the \(capacity &- storedCount) free")
        (elements + storedCount).initialize(repeating: value, count: count)
        storedCount &+= count
    }

    /// Removes and returns the last element.
    ///
    /// - Precondition: the region is not empty.
    @inlinable
    public mutating func removeLast() -> Element {
        precondition(storedCount > 0, "Region.removeLast() on an empty region")
        storedCount &-= 1
        return (elements + storedCount).move()
    }

    /// Removes every element; the capacity stays.
    @inlinable
    public mutating func removeAll() {
        elements.deinitialize(count: storedCount)
        storedCount = 0
    }

    /// The element at `index`.
    ///
    /// - Precondition: `0 <= index < count`.
    @inlinable
    public subscript(index: Int) -> Element {
        get {
            precondition(index >= 0 && index < storedCount, "Region index \(index) out of range 0..<\(storedCount)")
            return elements[index]
        }
        set {
            precondition(index >= 0 && index < storedCount, "Region index \(index) out of range 0..<\(storedCount)")
            elements[index] = newValue
        }
    }

    /// Calls `body` with the initialized elements. The pointer must not escape `body`.
    @inlinable
    public func withUnsafeBufferPointer<Result, Failure: Error>(
        _ body: (UnsafeBufferPointer<Element>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(UnsafeBufferPointer(start: elements, count: storedCount))
    }

    /// Calls `body` with the initialized elements, to change them in place. The pointer
    /// must not escape `body`.
    @inlinable
    public mutating func withUnsafeMutableBufferPointer<Result, Failure: Error>(
        _ body: (UnsafeMutableBufferPointer<Element>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try body(UnsafeMutableBufferPointer(start: elements, count: storedCount))
    }

    /// The initialized elements as a span that borrows the region: it cannot outlive the
    /// region, and the region cannot be changed while it is used (the compiler checks
    /// both; spec section 2). For `BitwiseCopyable` elements, `span.bytes` is their raw
    /// bytes.
    @inlinable
    public var span: Span<Element> {
        @_lifetime(borrow self)
        borrowing get {
            let span = Span(_unsafeStart: elements, count: storedCount)
            return _overrideLifetime(span, borrowing: self)
        }
    }

    /// The initialized elements as a mutable span that holds exclusive access to the
    /// region while it is used (the compiler checks it): elements are changed or swapped
    /// in place, never added or removed.
    @inlinable
    public var mutableSpan: MutableSpan<Element> {
        @_lifetime(&self)
        mutating get {
            let span = MutableSpan(_unsafeStart: elements, count: storedCount)
            return _overrideLifetime(span, mutating: &self)
        }
    }

    /// Lets `body` initialize elements in the free capacity in place, through an output
    /// span: `read(2)` or a decoder fills the region where the data will stay, with no
    /// copy.
    ///
    /// The span covers all of ``freeCapacity`` (at least `minimumFreeCapacity` elements,
    /// and appending more than that is fine); the elements `body` has initialized when it
    /// returns are appended. If `body` throws, the elements it had initialized are
    /// appended all the same (exactly that prefix) and the error is rethrown.
    ///
    /// ```swift
    /// var bytes = try allocator.allocate(UInt8.self, capacity: 1 << 20)
    /// // What read(2) answers: bytes read, 0 at the end of the file, -1 on an error.
    /// let received = bytes.append(minimumFreeCapacity: 1) { output in
    ///     output.withUnsafeMutableBufferPointer { buffer, initializedCount in
    ///         let result = read(descriptor, buffer.baseAddress! + initializedCount, buffer.count - initializedCount)
    ///         if result > 0 { initializedCount += result }
    ///         return result
    ///     }
    /// }
    /// ```
    ///
    /// - Returns: what `body` returns.
    /// - Precondition: `0 <= minimumFreeCapacity <= freeCapacity` (a region's bulk
    ///   append traps when it does not fit); `body` leaves the span it was given in place
    ///   (the standard library traps on "OutputSpan identity mismatch" otherwise).
    @inlinable
    public mutating func append<Result: ~Copyable, Failure: Error>(
        minimumFreeCapacity: Int, initializingWith body: (inout OutputSpan<Element>) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        precondition(
            minimumFreeCapacity >= 0, "Region.append(minimumFreeCapacity: \(minimumFreeCapacity)): negative capacity")
        precondition(
            minimumFreeCapacity <= capacity &- storedCount,
            "Region.append(minimumFreeCapacity: \(minimumFreeCapacity)): \(minimumFreeCapacity) elements do not fit in the \(capacity &- storedCount) free"
        )
        let free = UnsafeMutableBufferPointer(start: elements + storedCount, count: capacity &- storedCount)
        var output = OutputSpan(buffer: free, initializedCount: 0)
        defer {
            // On return and on a throw alike: the initialized prefix is the region's.
            storedCount &+= output.finalize(for: free)
            output = OutputSpan()
        }
        return try body(&output)
    }

    /// Tells the kernel that elements in `range` (of the capacity, initialized or not) will
    /// be used soon (`MADV_WILLNEED` on the pages that hold them): file-backed pages are
    /// read ahead, swapped-out pages brought in. A hint: a refusal is ignored.
    ///
    /// - Precondition: `range` lies within `0..<capacity`.
    public func prefetch(_ range: Range<Int>) {
        precondition(
            range.lowerBound >= 0 && range.upperBound <= capacity,
            "Region.prefetch(\(range)) is outside the capacity 0..<\(capacity)")
        guard !range.isEmpty else { return }
        let stride = MemoryLayout<Element>.stride
        let page = SystemInfo.pageSize
        let start = alignDown(range.lowerBound * stride, to: page)
        let end = alignUp(range.upperBound * stride, to: page)!
        try? SystemMemory.advise(node.address + start, byteCount: end - start, .willNeed)
    }
}

// Its stored parts are a node and the control block, which every thread may use (the
// allocator's locks and atomics order them), and the elements: sending a region sends its
// elements, so it may cross threads exactly when they may.
extension Region: @unchecked Sendable where Element: Sendable {}

// MARK: - Public API: LargeAllocator

/// Power-of-two large regions with per-thread caches, global dirty and clean pools, and a
/// background worker (lgalloc's design; see the module comment).
///
/// Each instance is an allocator of its own, with its own chunks, pools and worker. It is
/// `Sendable`: every thread may allocate from it, and a region may be dropped on any
/// thread. The instance's memory goes back to the OS (chunks unmapped, temporary files
/// gone) once the allocator is released and its last region dropped.
///
/// ```swift
/// var configuration = LargeAllocConfiguration()
/// configuration.backgroundInterval = .milliseconds(50)
/// let allocator = try LargeAllocator(configuration: configuration)
/// let region = try allocator.allocate(UInt8.self, capacity: 3 << 20)   // a 4 MiB region
/// print(allocator.statistics().sizeClasses[6].allocations)              // 1
/// ```
public final class LargeAllocator: @unchecked Sendable {
    /// The smallest region: 64 KiB. Below it, a general allocator serves as well (size
    /// classes without a power-of-two waste), a region's `madvise` would cost more than its
    /// pages, and the 56 bytes of metadata per region would stop being negligible (0.09%).
    public static let minimumRegionSize = Layout.minimumRegionSize
    /// The largest region: 64 GiB (chunks are reserved without a commit charge, so a
    /// region this big costs address space until it is written).
    public static let maximumRegionSize = Layout.maximumRegionSize
    /// The region sizes, smallest first: 64 KiB, 128 KiB, …, 64 GiB.
    public static let regionSizes = (0..<Layout.classCount).map(Layout.regionSize(ofClass:))

    @usableFromInline let control: Control
    /// The configuration last applied, and the worker thread; changed under this mutex
    /// (reconfiguration and deinit only, never an allocation).
    let state = Mutex(AllocatorState())

    struct AllocatorState: ~Copyable {
        var configuration = LargeAllocConfiguration()
        var worker: OSThread? = nil
        /// The process that started the worker: a child after `fork` has no worker thread.
        var workerProcess: pid_t = 0
    }

    /// An allocator with `configuration`; its first chunks are mapped by the first requests.
    ///
    /// - Throws: ``LargeAllocError/io(_:)`` when the backing is a file and no temporary file
    ///   can be created in its directory (nothing is left behind);
    ///   ``LargeAllocError/outOfMemory(_:)`` when its bookkeeping or worker cannot be had.
    /// - Precondition: the configuration's figures are valid (see its fields).
    public init(configuration: LargeAllocConfiguration = LargeAllocConfiguration()) throws(LargeAllocError) {
        configuration.validate()
        if case .file(let directory) = configuration.backing { try Control.probe(directory: directory) }
        control = Control.create()
        control.apply(configuration)
        LiveAllocators.register(control)
        do {
            try state.withLock { state throws(LargeAllocError) in
                state.configuration = configuration
                try startOrStopWorker(&state)
            }
        } catch {
            control.close()
            throw error
        }
    }

    deinit {
        state.withLock { state in
            state.configuration.backgroundInterval = nil
            try? startOrStopWorker(&state)
        }
        control.close()
    }

    /// A region for `capacity` values of `Element`: the smallest class of at least
    /// `capacity × stride` bytes. Its ``Region/capacity`` may be larger than asked.
    ///
    /// The region's memory is not initialized: it may hold what a previous region left there
    /// (a region reused from a thread cache or the dirty pool), or zeros.
    ///
    /// - Throws: ``LargeAllocError/sizeOverflow(capacity:stride:)``,
    ///   ``LargeAllocError/tooLarge(byteCount:)``, ``LargeAllocError/disabled``; from a
    ///   refill ``LargeAllocError/outOfMemory(_:)`` or ``LargeAllocError/io(_:)``.
    /// - Precondition: `Element` has a nonzero size (a region of nothing is not a large
    ///   object), and `capacity >= 1`.
    @inlinable
    public func allocate<Element>(
        _ type: Element.Type = Element.self, capacity: Int
    ) throws(LargeAllocError) -> Region<Element> {
        precondition(
            MemoryLayout<Element>.size > 0,
            "LargeAllocator.allocate(\(Element.self)): zero-size types need no memory")
        precondition(
            capacity > 0, "LargeAllocator.allocate: capacity \(capacity): the capacity must be at least 1")
        let stride = MemoryLayout<Element>.stride
        guard let byteCount = checkedByteCount(count: capacity, stride: stride) else {
            throw .sizeOverflow(capacity: capacity, stride: stride)
        }
        guard byteCount <= Layout.maximumRegionSize else { throw .tooLarge(byteCount: byteCount) }
        guard control.isEnabled else { throw .disabled }
        let node = try control.allocate(classIndex: Layout.classIndex(forByteCount: byteCount))
        return Region(node: node, control: control)
    }

    /// The configuration in force.
    public var configuration: LargeAllocConfiguration { state.withLock { $0.configuration } }

    /// Applies `configuration`: the worker is started, stopped, or picks up its new interval
    /// at its next tick; new chunks use the new backing; the thread-cache bound applies to
    /// the next free.
    ///
    /// - Throws: ``LargeAllocError/io(_:)`` when the new backing is a file and no temporary
    ///   file can be created in its directory; the old configuration then stays.
    ///   ``LargeAllocError/outOfMemory(_:)`` when the worker thread cannot be started (the
    ///   rest of the configuration is applied, with no worker).
    /// - Precondition: the configuration's figures are valid.
    public func reconfigure(_ configuration: LargeAllocConfiguration) throws(LargeAllocError) {
        configuration.validate()
        if case .file(let directory) = configuration.backing { try Control.probe(directory: directory) }
        try state.withLock { state throws(LargeAllocError) in
            state.configuration = configuration
            control.apply(configuration)
            do throws(LargeAllocError) {
                try startOrStopWorker(&state)
            } catch {
                state.configuration.backgroundInterval = nil
                control.apply(state.configuration)
                throw error
            }
        }
    }

    /// Moves the regions in the calling thread's cache to the dirty pools, where the worker
    /// (or another thread) finds them. A thread's cache is also emptied when it exits.
    public func releaseThreadCache() {
        guard let cache = control.threadCache() else { return }
        control.empty(cache)
    }

    /// A snapshot of the counters (section 8 of the spec). Callable from any thread; the
    /// classes are read one after another, not as one atomic picture.
    public func statistics() -> LargeAllocStatistics {
        control.statistics()
    }

    /// What the kernel reports for each class's chunks (/proc/self/smaps): bytes mapped,
    /// resident and dirty, and lazily freed pages not yet taken.
    ///
    /// - Throws: ``LargeAllocError/io(_:)`` when /proc/self/smaps cannot be read.
    public func mappingStatistics() throws(LargeAllocError) -> [LargeAllocMappingStatistics] {
        try control.mappingStatistics()
    }

    /// The first broken invariant of the allocator's structure, described, or nil when it
    /// is sound (spec sections 3 and 4): the header layouts; every chunk's nodes; the
    /// dirty, clean and chunk lists of every class; every thread cache; and every region
    /// in exactly one place: live, a thread cache, the dirty pool or the clean pool (or
    /// the worker's hands, or orphaned after fork).
    ///
    /// It takes every lock of the allocator, so it may run while other threads use it;
    /// O(regions + caches × classes). For tests and debugging.
    public func integrityViolation() -> String? {
        control.integrityViolation()
    }
}

// MARK: - Public API: LargeAllocStatistics

/// Counters of a ``LargeAllocator`` (section 8 of the spec).
public struct LargeAllocStatistics: Sendable, Equatable {
    /// One size class.
    public struct SizeClass: Sendable, Equatable {
        /// The class's region size.
        public var regionByteCount: Int
        /// Chunks mapped now, and their bytes.
        public var chunks = 0
        public var chunkBytes = 0
        /// Bytes of those chunks backed by temporary files.
        public var fileBytes = 0
        /// Regions in the global dirty pool (freed, pages resident).
        public var dirtyRegions = 0
        /// Regions in the global clean pool (pages given back, or never touched).
        public var cleanRegions = 0
        /// Regions in threads' caches.
        public var threadRegions = 0
        /// Regions handed out and not yet freed.
        public var liveRegions = 0
        /// Regions handed out, in all.
        public var allocations = 0
        /// Allocations that missed the thread cache.
        public var slowPaths = 0
        /// Chunks mapped, in all.
        public var refills = 0
        /// Regions freed, in all.
        public var deallocations = 0
        /// Deallocations that gave the pages back at once (`eagerReturn`).
        public var eagerClears = 0
        /// Regions the worker moved from dirty to clean.
        public var backgroundClears = 0
        /// Regions whose `madvise` the kernel refused (they stayed dirty).
        public var clearFailures = 0
        /// Regions taken from another thread's cache.
        public var steals = 0
        /// Chunks unmapped by the worker after `chunkIdleAge` wholly clean.
        public var unmappedChunks = 0

        public init(regionByteCount: Int) { self.regionByteCount = regionByteCount }

        /// Regions free anywhere: dirty, clean or in a thread cache.
        public var freeRegions: Int { dirtyRegions + cleanRegions + threadRegions }
        /// Regions free in the global pools.
        public var globalRegions: Int { dirtyRegions + cleanRegions }
    }

    /// Index `i` is the class whose region size is `LargeAllocator.regionSizes[i]`.
    public var sizeClasses: [SizeClass]
    /// Thread caches ever made (live threads' and parked ones).
    public var threadCaches: Int
    /// Thread caches whose thread exited, empty, waiting for a new thread to adopt them.
    public var parkedThreadCaches: Int
    /// Ticks the worker has run.
    public var workerTicks: Int
    /// The errno of the last `madvise` the kernel refused (0: none).
    public var lastClearError: Int32

    /// A class's counters by region size.
    public func sizeClass(regionByteCount: Int) -> SizeClass? {
        sizeClasses.first { $0.regionByteCount == regionByteCount }
    }
}

// MARK: - Public API: LargeAllocMappingStatistics

/// What the kernel reports for one class's chunks.
public struct LargeAllocMappingStatistics: Sendable, Equatable {
    /// The class's region size.
    public var regionByteCount: Int
    /// Bytes of the chunks mapped, resident, dirty, and lazily freed but not yet taken.
    public var usage: MappingUsage
}

// MARK: - Fast path: allocation and free

extension Control {
    /// A region of class `classIndex`: from the thread's cache (one spin lock that only a
    /// stealing thread could contend for, a pop, and counting in the cache's own words: no
    /// shared cache line is written), else from the slow path.
    @inlinable
    func allocate(classIndex: Int) throws(LargeAllocError) -> Node {
        if let cache = threadCache(), let node = cache.popAllocating(classIndex: classIndex) {
            return node
        }
        return try allocateSlow(classIndex: classIndex)
    }

    /// Takes a region back, from any thread: into the thread's cache if it fits its bound.
    @inlinable
    func release(_ node: Node) {
        guard let cache = threadCache(), node.state == .live else { return releaseSlow(node, cache: nil) }
        let (accepted, closing) = cache.pushReleasing(node, boundBytes: threadCacheBytes)
        if !accepted { returnToPool(node) }
        if closing { releaseLive() }
    }

    /// The calling thread's cache for this allocator, if it has one: the thread-local
    /// table's entries are (allocator id, cache) pairs.
    @inlinable
    func threadCache() -> ThreadCache? {
        guard let table = ThreadLocalSlot.largeAlloc.value else { return nil }
        let id = self.id
        for entry in 0..<ThreadTableLayout.entryCount {
            let offset = entry &* ThreadTableLayout.entryByteCount
            if table.load(fromByteOffset: offset &+ ThreadTableLayout.idOffset, as: Int.self) == id {
                return ThreadCache(
                    table.load(
                        fromByteOffset: offset &+ ThreadTableLayout.cacheOffset, as: UnsafeMutableRawPointer.self))
            }
        }
        return nil
    }
}

extension ThreadCache {
    /// Pops a cached region of `classIndex` for the calling thread, counting it as an
    /// allocation in this cache (one lock section), or returns nil.
    @inlinable
    func popAllocating(classIndex: Int) -> Node? {
        lock.pointee.lock()
        guard let node = popTop(classIndex) else {
            lock.pointee.unlock()
            return nil
        }
        countAllocation(classIndex)
        lock.pointee.unlock()
        return node
    }

    /// Counts the free of `node` in this cache and keeps it unless the cache would then
    /// hold more than `boundBytes`; `closing`: the allocator's handle is gone and the
    /// free must be counted in the global word instead (``Control/releaseLive()``).
    @inlinable
    func pushReleasing(_ node: Node, boundBytes: Int) -> (accepted: Bool, closing: Bool) {
        let classIndex = node.classIndex
        let size = Layout.regionSize(ofClass: classIndex)
        lock.pointee.lock()
        let closing = countDeallocation(classIndex)
        guard size <= boundBytes &- cachedBytes else {
            lock.pointee.unlock()
            return (false, closing)
        }
        node.state = .cached
        var stack = self.stack(classIndex)
        stack.push(node)
        setStack(classIndex, stack)
        countWord(classIndex).store(countWord(classIndex).load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        cachedBytes &+= size
        lock.pointee.unlock()
        return (true, closing)
    }

    /// Under the lock: the top region of `classIndex`'s stack, taken off the cache and
    /// made live (under the lock, so a walker holding it sees every region where its state
    /// says).
    @inlinable
    func popTop(_ classIndex: Int) -> Node? {
        var stack = self.stack(classIndex)
        guard let node = stack.pop() else { return nil }
        assert(node.state == .cached, "LargeAlloc: cached region \(node.address) in state \(node.state)")
        setStack(classIndex, stack)
        countWord(classIndex).store(countWord(classIndex).load(ordering: .relaxed) &- 1, ordering: .relaxed)
        cachedBytes &-= Layout.regionSize(ofClass: classIndex)
        node.state = .live
        return node
    }

    /// Under the lock: one more region live through this cache. Only while the handle lives.
    @inlinable
    func countAllocation(_ classIndex: Int) {
        assert(!isTransferred, "LargeAlloc: an allocation after the allocator was released")
        live &+= 1
        let allocations = allocationsWord(classIndex)
        allocations.store(allocations.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
    }

    /// Under the lock: one region less; returns true when the count has moved to the
    /// allocator's global word (the handle is gone), where the caller must take it off.
    @inlinable
    func countDeallocation(_ classIndex: Int) -> Bool {
        let deallocations = deallocationsWord(classIndex)
        deallocations.store(deallocations.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        if isTransferred { return true }
        live &-= 1
        return false
    }
}

// MARK: - Slow path: pools, stealing, refills

extension Control {
    @usableFromInline @inline(never)
    func allocateSlow(classIndex: Int) throws(LargeAllocError) -> Node {
        let pool = pool(classIndex)
        pool.counters.add(1, to: .slowPaths)
        let cache = threadCacheCreatingIfNeeded()
        if let cache, let node = cache.popAllocating(classIndex: classIndex) { return node }
        if let node = pool.withLock({ pool.popDirtyOrClean() }) {
            return countAllocation(node, cache: cache)
        }
        if let node = steal(classIndex: classIndex, except: cache) {
            pool.counters.add(1, to: .steals)
            return countAllocation(node, cache: cache)
        }
        refillLock.pointee.lock()
        defer { refillLock.pointee.unlock() }
        // Another thread may have refilled while this one waited for the lock.
        if let node = pool.withLock({ pool.popDirtyOrClean() }) {
            return countAllocation(node, cache: cache)
        }
        return countAllocation(try mapChunk(classIndex: classIndex), cache: cache)
    }

    /// Counts an allocation made on the slow path: in the thread's cache, or (a thread with
    /// none) in the class counters and the global live word.
    func countAllocation(_ node: Node, cache: ThreadCache?) -> Node {
        assert(node.state == .live, "LargeAlloc: region \(node.address) handed out in state \(node.state)")
        if let cache {
            cache.lock.pointee.withLock { cache.countAllocation(node.classIndex) }
        } else {
            pool(node.classIndex).counters.add(1, to: .allocations)
            liveWord.wrappingAdd(1, ordering: .relaxed)
        }
        return node
    }

    /// A free by a thread with no cache yet: counted in a cache made now (and kept there if
    /// it fits), else in the class counters and the global live word. A region of a chunk
    /// shared with the parent process (file-backed, inherited across `fork`) is dropped.
    @usableFromInline @inline(never)
    func releaseSlow(_ node: Node, cache: ThreadCache?) {
        if node.state != .orphaned {
            assert(
                node.state == .live, "LargeAlloc: free of region \(node.address) in state \(node.state) (double free?)")
        }
        if node.state != .orphaned, let cache = cache ?? threadCacheCreatingIfNeeded() {
            let (accepted, closing) = cache.pushReleasing(node, boundBytes: threadCacheBytes)
            if !accepted { returnToPool(node) }
            if closing { releaseLive() }
            return
        }
        if let cache = cache ?? threadCache() {
            if cache.lock.pointee.withLock({ cache.countDeallocation(node.classIndex) }) { releaseLive() }
        } else {
            pool(node.classIndex).counters.add(1, to: .deallocations)
            releaseLive()
        }
        if node.state != .orphaned { returnToPool(node) }
    }

    /// A freed region that no cache keeps: to the clean pool after an eager `madvise`, else
    /// to the dirty pool.
    @usableFromInline @inline(never)
    func returnToPool(_ node: Node) {
        let pool = pool(node.classIndex)
        if eagerReturn {
            let advice: MemoryAdvice = node.chunk.isFileBacked ? .remove : .dontNeed
            if (try? SystemMemory.advise(node.address, byteCount: node.chunk.regionSize, advice)) != nil {
                pool.counters.add(1, to: .eagerClears)
                pool.withLock { pool.pushClean(node) }
                return
            }
            pool.counters.add(1, to: .clearFailures)
        }
        pool.withLock { pool.pushDirty(node) }
    }

    /// Takes one live region off the global live word; once the handle is gone, the free
    /// that brings it to zero destroys the allocator.
    @usableFromInline
    func releaseLive() {
        let new = liveWord.wrappingSubtract(1, ordering: .acquiringAndReleasing) &- 1
        if new == Control.closedFlag { destroy() }
    }

    /// Called once, when the handle goes (after the worker stopped): moves every cache's
    /// live count to the global word, marks the caches so that later frees count there,
    /// and destroys the allocator if no region is live.
    func close() {
        var isEmpty = false
        refillLock.pointee.withLock {
            isClosing = true
            forEachCache { $0.lock.pointee.lock() }
            var total = 0
            forEachCache { cache in
                total &+= cache.live
                cache.live = 0
                cache.isTransferred = true
            }
            let new = liveWord.wrappingAdd(total &+ Control.closedFlag, ordering: .acquiringAndReleasing)
            isEmpty = new &+ total &+ Control.closedFlag == Control.closedFlag
            forEachCache { $0.lock.pointee.unlock() }
        }
        if isEmpty { destroy() }
    }

    /// Unmaps every chunk and frees every cache and the block: the last reference is gone.
    /// Debug builds walk the whole structure first (nothing else can reach it now).
    @usableFromInline @inline(never)
    func destroy() {
        #if DEBUG
            if let violation = integrityViolation() { preconditionFailure("LargeAlloc at destroy: \(violation)") }
        #endif
        LiveAllocators.unregister(self)
        for classIndex in 0..<Layout.classCount {
            pool(classIndex).chunks.forEach { Chunk($0).destroy() }
        }
        var record = firstCache
        while let cache = record {
            record = cache.registryNext
            cache.base.deallocate()
        }
        free(directory)
        base.deallocate()
    }

    /// A region of `classIndex` from another thread's cache (a thread that freed it and has
    /// not allocated since, or that exited inside a fork child), or nil.
    func steal(classIndex: Int, except own: ThreadCache?) -> Node? {
        var record = firstCache
        while let cache = record {
            record = cache.registryNext
            guard cache != own, cache.countWord(classIndex).load(ordering: .relaxed) > 0 else { continue }
            if let node = cache.lock.pointee.withLock({ cache.popTop(classIndex) }) { return node }
        }
        return nil
    }

    /// The calling thread's cache, made (or a parked one adopted) if it has none; nil when
    /// the thread is exiting, caches are disabled, the handle is gone, or the thread's
    /// table is full of live allocators.
    func threadCacheCreatingIfNeeded() -> ThreadCache? {
        if let cache = threadCache() { return cache }
        guard threadCacheBytes > 0, !ThreadLocalSlot.isCurrentThreadExiting else { return nil }
        guard let table = ThreadTable.current(), let entry = ThreadTable.freeEntry(table) else { return nil }
        // Under the refill lock, so that `close()` sees every cache made before it.
        guard let cache = refillLock.pointee.withLock({ isClosing ? nil : adoptOrCreateCache() }) else { return nil }
        ThreadTable.store(cache: cache, id: id, at: entry, of: table)
        return cache
    }

    /// A parked cache (its thread exited) claimed with a compare-exchange, or a new one
    /// pushed onto the list of caches, which only grows until the allocator is destroyed.
    /// Under the refill lock.
    func adoptOrCreateCache() -> ThreadCache {
        var record = firstCache
        while let cache = record {
            if cache.owned.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged {
                return cache
            }
            record = cache.registryNext
        }
        let cache = ThreadCache.create()
        cache.registryNext = firstCache
        cachesWord.store(Int(bitPattern: cache.base), ordering: .releasing)
        return cache
    }

    /// Moves every region of `cache` to the dirty pools, holding the cache's lock
    /// throughout (cache, then pool: the order `fork` takes them), so no region is ever
    /// in a state that no structure shows.
    func empty(_ cache: ThreadCache) {
        cache.lock.pointee.withLock {
            for classIndex in 0..<Layout.classCount {
                var stack = cache.stack(classIndex)
                guard stack.top != nil else { continue }
                cache.setStack(classIndex, NodeStack(top: nil))
                cache.countWord(classIndex).store(0, ordering: .relaxed)
                let pool = pool(classIndex)
                pool.withLock {
                    while let node = stack.pop() { pool.pushDirty(node) }
                }
            }
            cache.cachedBytes = 0
        }
    }

    /// Maps a new chunk for `classIndex` (under the refill lock); one region is returned
    /// live, the others join the clean pool untouched.
    func mapChunk(classIndex: Int) throws(LargeAllocError) -> Node {
        let pool = pool(classIndex)
        let regionSize = Layout.regionSize(ofClass: classIndex)
        let regionCount = Layout.regionCount(
            regionSize: regionSize, refills: pool.refills, initialChunkBytes: word(.initialChunkBytes),
            maximumChunkBytes: word(.maximumChunkBytes), growthDampener: word(.growthDampener))
        let byteCount = regionCount * regionSize
        let backing = word(.backing)
        let base: UnsafeMutableRawPointer
        if backing == Control.fileBacking {
            base = try Control.mapFile(byteCount: byteCount, directory: String(cString: directory!))
        } else {
            base = try Control.mapAnonymous(byteCount: byteCount, hugePages: backing == Control.hugePageBacking)
        }
        let chunk = Chunk.create(
            mapping: base, byteCount: byteCount, classIndex: classIndex, regionCount: regionCount,
            isFileBacked: backing == Control.fileBacking)
        pool.refills += 1
        pool.counters.add(1, to: .refills)
        pool.counters.add(1, to: .chunks)
        pool.counters.add(byteCount, to: .chunkBytes)
        let first = chunk.node(0)
        first.state = .live
        pool.withLock {
            pool.chunks.pushFront(chunk.base)
            for index in 1..<regionCount { pool.pushClean(chunk.node(index)) }
        }
        return first
    }

    static func mapAnonymous(byteCount: Int, hugePages: Bool) throws(LargeAllocError) -> UnsafeMutableRawPointer {
        // Reserved without a commit charge (MAP_NORESERVE), aligned to 2 MiB so that huge
        // pages can back whole regions of 2 MiB and more, between two inaccessible guard
        // pages: the kernel never merges the chunk with a neighbouring mapping, so
        // /proc/self/smaps reports it on its own (mapping statistics stay exact).
        let alignment = SystemInfo.hugePageSize
        let guardSize = Chunk.guardSize
        guard byteCount <= Int.max - alignment - 2 * guardSize else {
            throw .outOfMemory(SystemError(.map, code: ENOMEM))
        }
        let padded = byteCount + alignment + guardSize
        let raw: UnsafeMutableRawPointer
        do { raw = try SystemMemory.reserve(byteCount: padded) } catch { throw .outOfMemory(error) }
        let aligned = alignUp(raw + guardSize, to: alignment)!
        let head = aligned - guardSize - raw
        let tail = padded - head - byteCount - 2 * guardSize
        if head > 0 { try? SystemMemory.unmap(raw, byteCount: head) }
        if tail > 0 { try? SystemMemory.unmap(aligned + byteCount + guardSize, byteCount: tail) }
        do {
            try SystemMemory.commit(aligned, byteCount: byteCount)
        } catch {
            try? SystemMemory.unmap(aligned - guardSize, byteCount: byteCount + 2 * guardSize)
            throw .outOfMemory(error)
        }
        // Advice is a hint: a kernel without transparent huge pages refuses it.
        if hugePages { try? SystemMemory.advise(aligned, byteCount: byteCount, .hugePage) }
        return aligned
    }

    /// A temporary file of `byteCount` bytes in `directory`, mapped shared. The file is
    /// unlinked at once and its descriptor closed here: the mapping keeps it alive, and
    /// unmapping the chunk removes it.
    static func mapFile(byteCount: Int, directory: String) throws(LargeAllocError) -> UnsafeMutableRawPointer {
        let file: MemoryFile
        do { file = try MemoryFile(inDirectory: directory) } catch { throw .io(error) }
        do { try file.truncate(to: byteCount) } catch { throw .io(error) }
        do { return try SystemMemory.mapShared(file, offset: 0, byteCount: byteCount) } catch {
            throw .outOfMemory(error)
        }
    }

    /// Checks that a temporary file can be created in `directory` (and removes it at once).
    static func probe(directory: String) throws(LargeAllocError) {
        do { _ = try MemoryFile(inDirectory: directory) } catch { throw .io(error) }
    }
}

// MARK: - Slow path: the background worker

extension LargeAllocator {
    /// Starts the worker if the configuration has an interval and none runs, stops (and
    /// joins) it if it has none and one runs.
    func startOrStopWorker(_ state: inout AllocatorState) throws(LargeAllocError) {
        let wanted = state.configuration.backgroundInterval != nil
        // A child after fork has the parent's record of a worker, but no thread.
        if state.worker != nil && state.workerProcess != getpid() { state.worker = nil }
        if wanted && state.worker == nil {
            control.workerWord.store(Control.WorkerState.running, ordering: .releasing)
            let control = self.control
            do {
                state.worker = try OSThread.spawn { control.runWorker() }
                state.workerProcess = getpid()
            } catch {
                throw .outOfMemory(error)
            }
        } else if !wanted, let worker = state.worker {
            control.workerWord.store(Control.WorkerState.stopping, ordering: .releasing)
            Futex.wake(control.workerWord)
            worker.join()
            state.worker = nil
        }
    }
}

extension Control {
    /// The worker's loop: wait one interval on the futex word (a stop wakes it at once),
    /// then clear and unmap.
    func runWorker() {
        while workerWord.load(ordering: .acquiring) == WorkerState.running {
            let interval = UInt64(max(1, word(.intervalNanoseconds)))
            Futex.wait(workerWord, whileEqualTo: WorkerState.running, timeoutNanoseconds: interval)
            guard workerWord.load(ordering: .acquiring) == WorkerState.running else { return }
            tick()
        }
    }

    /// One tick: up to `backgroundBytesPerTick` from each dirty pool advised away and moved
    /// to the clean pool, then chunks wholly clean for `chunkIdleAge` unmapped.
    func tick() {
        let budget = word(.bytesPerTick)
        let minimumDirtyAge = UInt64(max(0, word(.intervalNanoseconds)))
        let configuredAdvice = word(.clearAdvice)
        let idleAge = word(.chunkIdleNanoseconds)
        for classIndex in 0..<Layout.classCount {
            let pool = pool(classIndex)
            let regionSize = Layout.regionSize(ofClass: classIndex)
            // The regions in the worker's hands, between the pools, in state `clearing`.
            var taken = NodeStack(top: nil)
            pool.withLock {
                // Only regions dirty for a whole interval: one freed just now is the likeliest
                // to be reused, and clearing it would cost a page fault per page at reuse.
                let now = SystemInfo.monotonicNanoseconds()
                let cutoff = now >= minimumDirtyAge ? now - minimumDirtyAge : 0
                var takenBytes = 0
                while takenBytes == 0 || takenBytes <= budget - regionSize,
                    let node = pool.popOldestDirty(dirtySinceAtMost: cutoff)
                {
                    node.state = .clearing
                    taken.push(node)
                    takenBytes += regionSize
                }
            }
            var cleared = NodeStack(top: nil)
            var failed = NodeStack(top: nil)
            var clearedCount = 0
            var failedCount = 0
            while let node = taken.pop() {
                let advice = Control.advice(configured: configuredAdvice, fileBacked: node.chunk.isFileBacked)
                do {
                    try SystemMemory.advise(node.address, byteCount: regionSize, advice)
                    cleared.push(node)
                    clearedCount += 1
                } catch {
                    lastClearError.store(Int(error.code), ordering: .relaxed)
                    failed.push(node)
                    failedCount += 1
                }
            }
            if clearedCount + failedCount > 0 {
                pool.withLock {
                    while let node = cleared.pop() { pool.pushClean(node) }
                    while let node = failed.pop() { pool.pushDirty(node) }
                }
                pool.counters.add(clearedCount, to: .backgroundClears)
                pool.counters.add(failedCount, to: .clearFailures)
            }
            if idleAge >= 0 { unmapIdleChunks(pool, idleAge: UInt64(idleAge)) }
        }
        workerTicks.wrappingAdd(1, ordering: .relaxed)
    }

    /// The kernel advice for clearing a region.
    static func advice(configured: Int, fileBacked: Bool) -> MemoryAdvice {
        switch configured {
        case ClearAdviceCode.free: .free
        case ClearAdviceCode.dontNeed: .dontNeed
        case ClearAdviceCode.remove: .remove
        default: fileBacked ? .remove : .free
        }
    }

    /// Unmaps the chunks of `pool` whose regions have all been clean for `idleAge` ns.
    func unmapIdleChunks(_ pool: ClassPool, idleAge: UInt64) {
        var idle: [Chunk] = []
        pool.withLock {
            // Read under the lock: `wholeCleanSince` is set under it, so it is never later.
            let now = SystemInfo.monotonicNanoseconds()
            pool.chunks.forEach { base in
                let chunk = Chunk(base)
                guard !chunk.isOrphaned, chunk.cleanCount == chunk.regionCount, now - chunk.wholeCleanSince >= idleAge
                else { return }
                for index in 0..<chunk.regionCount { pool.unlinkClean(chunk.node(index)) }
                pool.chunks.remove(base)
                idle.append(chunk)
            }
        }
        for chunk in idle {
            pool.counters.add(-1, to: .chunks)
            pool.counters.add(-chunk.byteCount, to: .chunkBytes)
            pool.counters.add(1, to: .unmappedChunks)
            chunk.destroy()
        }
    }
}

// MARK: - Slow path: statistics

extension Control {
    func statistics() -> LargeAllocStatistics {
        var classes = (0..<Layout.classCount).map {
            LargeAllocStatistics.SizeClass(regionByteCount: Layout.regionSize(ofClass: $0))
        }
        var cacheCount = 0
        var parkedCount = 0
        forEachCache { cache in
            cacheCount += 1
            if cache.owned.load(ordering: .relaxed) == 0 { parkedCount += 1 }
            for classIndex in 0..<Layout.classCount {
                classes[classIndex].threadRegions += cache.countWord(classIndex).load(ordering: .relaxed)
                classes[classIndex].allocations += cache.allocationsWord(classIndex).load(ordering: .relaxed)
                classes[classIndex].deallocations += cache.deallocationsWord(classIndex).load(ordering: .relaxed)
            }
        }
        for classIndex in 0..<Layout.classCount {
            let pool = pool(classIndex)
            pool.withLock {
                classes[classIndex].dirtyRegions = pool.dirtyCount
                classes[classIndex].cleanRegions = pool.cleanCount
                var fileBytes = 0
                pool.chunks.forEach { base in
                    let chunk = Chunk(base)
                    if chunk.isFileBacked { fileBytes += chunk.byteCount }
                }
                classes[classIndex].fileBytes = fileBytes
            }
            let counters = pool.counters
            classes[classIndex].chunks = counters.value(of: .chunks)
            classes[classIndex].chunkBytes = counters.value(of: .chunkBytes)
            classes[classIndex].allocations += counters.value(of: .allocations)
            classes[classIndex].slowPaths = counters.value(of: .slowPaths)
            classes[classIndex].refills = counters.value(of: .refills)
            classes[classIndex].deallocations += counters.value(of: .deallocations)
            classes[classIndex].eagerClears = counters.value(of: .eagerClears)
            classes[classIndex].backgroundClears = counters.value(of: .backgroundClears)
            classes[classIndex].clearFailures = counters.value(of: .clearFailures)
            classes[classIndex].steals = counters.value(of: .steals)
            classes[classIndex].unmappedChunks = counters.value(of: .unmappedChunks)
            classes[classIndex].liveRegions = classes[classIndex].allocations - classes[classIndex].deallocations
        }
        return LargeAllocStatistics(
            sizeClasses: classes, threadCaches: cacheCount, parkedThreadCaches: parkedCount,
            workerTicks: workerTicks.load(ordering: .relaxed),
            lastClearError: Int32(lastClearError.load(ordering: .relaxed)))
    }

    func mappingStatistics() throws(LargeAllocError) -> [LargeAllocMappingStatistics] {
        var ranges: [Range<Int>] = []
        var classOfRange: [Int] = []
        for classIndex in 0..<Layout.classCount {
            let pool = pool(classIndex)
            pool.withLock {
                pool.chunks.forEach { base in
                    let chunk = Chunk(base)
                    let start = Int(bitPattern: chunk.mapping)
                    ranges.append(start..<(start + chunk.byteCount))
                    classOfRange.append(classIndex)
                }
            }
        }
        let usages: [MappingUsage]
        do { usages = try MemoryMappings.usage(of: ranges) } catch { throw .io(error) }
        var result = (0..<Layout.classCount).map {
            LargeAllocMappingStatistics(regionByteCount: Layout.regionSize(ofClass: $0), usage: MappingUsage())
        }
        for (index, usage) in usages.enumerated() {
            result[classOfRange[index]].usage = result[classOfRange[index]].usage + usage
        }
        return result
    }
}

// MARK: - Slow path: fork

// The forking thread takes every lock of every live allocator before fork (global lock,
// then per allocator: refill lock, thread caches, class pools: the order the code nests
// them in) and releases them on both sides, so the child never inherits a lock held by a
// thread it does not have. In the child, file-backed chunks are shared with the parent
// (MAP_SHARED): their free regions leave the pools and caches, and their regions are
// dropped when freed, so the child never writes memory the parent uses. Anonymous chunks
// are copy-on-write, the child's own. The worker thread is not copied.

extension LiveAllocators {
    /// Registered with AllocCore's ``ForkActions`` when the first allocator is made.
    static let forkPrepare: ForkActions.Action = {
        lock.lock()
        forEach { $0.lockAll() }
    }

    static let forkParent: ForkActions.Action = {
        forEach { $0.unlockAll() }
        lock.unlock()
    }

    static let forkChild: ForkActions.Action = {
        forEach { control in
            control.orphanFileBackedChunks()
            control.unlockAll()
        }
        lock.unlock()
    }
}

extension Control {
    /// Takes every lock of the allocator, in the order the code nests them: the refill
    /// lock, the thread caches' locks, the class pools' locks.
    func lockAll() {
        refillLock.pointee.lock()
        forEachCache { $0.lock.pointee.lock() }
        for classIndex in 0..<Layout.classCount { pool(classIndex).lock.pointee.lock() }
    }

    func unlockAll() {
        for classIndex in 0..<Layout.classCount { pool(classIndex).lock.pointee.unlock() }
        forEachCache { $0.lock.pointee.unlock() }
        refillLock.pointee.unlock()
    }

    /// In the child, with every lock held: file-backed chunks become orphaned, and their
    /// free regions leave the pools and caches (the others keep their order and ages).
    func orphanFileBackedChunks() {
        for classIndex in 0..<Layout.classCount {
            let pool = pool(classIndex)
            var any = false
            pool.chunks.forEach { base in
                let chunk = Chunk(base)
                guard chunk.isFileBacked else { return }
                chunk.isOrphaned = true
                any = true
            }
            guard any else { continue }
            pool.dirty.forEach { base in
                let node = Node(base)
                if node.chunk.isOrphaned { pool.unlinkDirty(node) }
            }
            pool.clean.forEach { base in
                let node = Node(base)
                if node.chunk.isOrphaned { pool.unlinkClean(node) }
            }
            forEachCache { cache in
                var stack = cache.stack(classIndex)
                var kept: [Node] = []
                var dropped = 0
                while let node = stack.pop() {
                    if node.chunk.isOrphaned { dropped += 1 } else { kept.append(node) }
                }
                for node in kept.reversed() { stack.push(node) }
                cache.setStack(classIndex, stack)
                cache.countWord(classIndex).store(kept.count, ordering: .relaxed)
                cache.cachedBytes -= dropped * Layout.regionSize(ofClass: classIndex)
            }
            pool.chunks.forEach { base in
                let chunk = Chunk(base)
                guard chunk.isOrphaned else { return }
                for index in 0..<chunk.regionCount { chunk.node(index).state = .orphaned }
            }
        }
    }
}

// MARK: - Internals: Node

/// A region's descriptor in its chunk's metadata (never in the region itself, so pooling a
/// clean region touches none of its pages); fields in ``NodeLayout``.
@usableFromInline
struct Node: Equatable {
    /// Where a region is; every move asserts the state it expects (spec section 4).
    @usableFromInline
    enum State: Int, CaseIterable {
        /// A ``Region`` owns it.
        case live
        /// In a thread cache's stack.
        case cached
        /// In the class's dirty pool.
        case dirty
        /// In the class's clean pool.
        case clean
        /// In the worker's hands between the pools, or in a chunk being made.
        case clearing
        /// Its chunk is shared with the parent process (file-backed, inherited across fork).
        case orphaned
    }

    @usableFromInline let base: UnsafeMutableRawPointer

    @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }

    @inlinable
    init?(optional base: UnsafeMutableRawPointer?) {
        guard let base else { return nil }
        self.base = base
    }

    @inlinable
    var previous: Node? {
        get { Node(optional: base.load(fromByteOffset: NodeLayout.previousOffset, as: UnsafeMutableRawPointer?.self)) }
        nonmutating set {
            base.storeBytes(
                of: newValue?.base, toByteOffset: NodeLayout.previousOffset, as: UnsafeMutableRawPointer?.self)
        }
    }

    @inlinable
    var next: Node? {
        get { Node(optional: base.load(fromByteOffset: NodeLayout.nextOffset, as: UnsafeMutableRawPointer?.self)) }
        nonmutating set {
            base.storeBytes(of: newValue?.base, toByteOffset: NodeLayout.nextOffset, as: UnsafeMutableRawPointer?.self)
        }
    }

    @inlinable
    var address: UnsafeMutableRawPointer {
        base.load(fromByteOffset: NodeLayout.addressOffset, as: UnsafeMutableRawPointer.self)
    }

    var chunk: Chunk { Chunk(base.load(fromByteOffset: NodeLayout.chunkOffset, as: UnsafeMutableRawPointer.self)) }

    @inlinable
    var state: State {
        get { State(rawValue: base.load(fromByteOffset: NodeLayout.stateOffset, as: Int.self))! }
        nonmutating set { base.storeBytes(of: newValue.rawValue, toByteOffset: NodeLayout.stateOffset, as: Int.self) }
    }

    /// The state, or nil when the word holds no state (for the integrity walker, which
    /// must report a stray word rather than trap on it).
    var checkedState: State? { State(rawValue: base.load(fromByteOffset: NodeLayout.stateOffset, as: Int.self)) }

    @inlinable
    var classIndex: Int { base.load(fromByteOffset: NodeLayout.classIndexOffset, as: Int.self) }

    /// When the region entered the dirty pool (monotonic ns).
    var dirtySince: UInt64 {
        get { base.load(fromByteOffset: NodeLayout.dirtySinceOffset, as: UInt64.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: NodeLayout.dirtySinceOffset, as: UInt64.self) }
    }
}

// MARK: - Internals: NodeStack

/// A stack of nodes linked through their next link alone: a thread cache's stack per class
/// (its top word in the cache) and the worker's batches. These are genuinely stacks, not
/// lists: the cache hands out the region freed last (its pages likeliest still in the CPU
/// caches), the worker's batches are taken whole, and nothing is ever removed from the
/// middle; one link keeps a push or a pop to the node and the top, with no write to a
/// neighbour on the fast path. A popped node has its link cleared: it goes live, or into
/// a pool's ``IntrusiveList``, as a node in no list.
@usableFromInline
struct NodeStack {
    @usableFromInline var top: Node?

    @inlinable init(top: Node?) { self.top = top }

    @inlinable
    mutating func push(_ node: Node) {
        assert(
            node.next == nil && node.previous == nil && node != top,
            "LargeAlloc: region \(node.address) pushed on a stack while linked")
        node.next = top
        top = node
    }

    @inlinable
    mutating func pop() -> Node? {
        guard let node = top else { return nil }
        top = node.next
        node.next = nil
        return node
    }
}

// MARK: - Internals: Chunk

/// A chunk: one mapping cut into regions of one class, with its header and the regions'
/// nodes in one block of malloc'd metadata (the mapping holds only user data); fields in
/// ``ChunkLayout``.
struct Chunk: Equatable {
    let base: UnsafeMutableRawPointer

    init(_ base: UnsafeMutableRawPointer) { self.base = base }

    /// The metadata of a chunk over `mapping`, every node in no list and in state
    /// `clearing` (the caller hands them out or pools them).
    static func create(
        mapping: UnsafeMutableRawPointer, byteCount: Int, classIndex: Int, regionCount: Int, isFileBacked: Bool
    ) -> Chunk {
        let header = UnsafeMutableRawPointer.allocate(
            byteCount: ChunkLayout.nodesOffset + regionCount * NodeLayout.byteCount, alignment: 64)
        header.storeBytes(of: nil, toByteOffset: ChunkLayout.previousOffset, as: UnsafeMutableRawPointer?.self)
        header.storeBytes(of: nil, toByteOffset: ChunkLayout.nextOffset, as: UnsafeMutableRawPointer?.self)
        header.storeBytes(of: mapping, toByteOffset: ChunkLayout.mappingOffset, as: UnsafeMutableRawPointer.self)
        header.storeBytes(of: byteCount, toByteOffset: ChunkLayout.byteCountOffset, as: Int.self)
        header.storeBytes(of: classIndex, toByteOffset: ChunkLayout.classIndexOffset, as: Int.self)
        header.storeBytes(of: regionCount, toByteOffset: ChunkLayout.regionCountOffset, as: Int.self)
        header.storeBytes(of: isFileBacked ? 1 : 0, toByteOffset: ChunkLayout.isFileBackedOffset, as: Int.self)
        let chunk = Chunk(header)
        chunk.cleanCount = 0
        chunk.wholeCleanSince = 0
        chunk.isOrphaned = false
        let regionSize = Layout.regionSize(ofClass: classIndex)
        for index in 0..<regionCount {
            let node = chunk.node(index)
            node.previous = nil
            node.next = nil
            node.base.storeBytes(
                of: mapping + index * regionSize, toByteOffset: NodeLayout.addressOffset,
                as: UnsafeMutableRawPointer.self)
            node.base.storeBytes(of: header, toByteOffset: NodeLayout.chunkOffset, as: UnsafeMutableRawPointer.self)
            node.state = .clearing
            node.base.storeBytes(of: classIndex, toByteOffset: NodeLayout.classIndexOffset, as: Int.self)
        }
        return chunk
    }

    /// The inaccessible page on each side of an anonymous chunk.
    static var guardSize: Int { SystemInfo.pageSize }

    /// Unmaps the chunk (its guard pages too; its file, if any, goes with it) and frees its
    /// metadata.
    func destroy() {
        if isFileBacked {
            try? SystemMemory.unmap(mapping, byteCount: byteCount)
        } else {
            try? SystemMemory.unmap(mapping - Chunk.guardSize, byteCount: byteCount + 2 * Chunk.guardSize)
        }
        base.deallocate()
    }

    var mapping: UnsafeMutableRawPointer {
        base.load(fromByteOffset: ChunkLayout.mappingOffset, as: UnsafeMutableRawPointer.self)
    }
    var byteCount: Int { base.load(fromByteOffset: ChunkLayout.byteCountOffset, as: Int.self) }
    var classIndex: Int { base.load(fromByteOffset: ChunkLayout.classIndexOffset, as: Int.self) }
    var regionCount: Int { base.load(fromByteOffset: ChunkLayout.regionCountOffset, as: Int.self) }
    var regionSize: Int { Layout.regionSize(ofClass: classIndex) }
    var cleanCount: Int {
        get { base.load(fromByteOffset: ChunkLayout.cleanCountOffset, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: ChunkLayout.cleanCountOffset, as: Int.self) }
    }
    var wholeCleanSince: UInt64 {
        get { base.load(fromByteOffset: ChunkLayout.wholeCleanSinceOffset, as: UInt64.self) }
        nonmutating set {
            base.storeBytes(of: newValue, toByteOffset: ChunkLayout.wholeCleanSinceOffset, as: UInt64.self)
        }
    }
    var isFileBacked: Bool { base.load(fromByteOffset: ChunkLayout.isFileBackedOffset, as: Int.self) != 0 }
    var isOrphaned: Bool {
        get { base.load(fromByteOffset: ChunkLayout.isOrphanedOffset, as: Int.self) != 0 }
        nonmutating set {
            base.storeBytes(of: newValue ? 1 : 0, toByteOffset: ChunkLayout.isOrphanedOffset, as: Int.self)
        }
    }

    func node(_ index: Int) -> Node {
        assert(index >= 0 && index < regionCount, "LargeAlloc: chunk \(mapping) has no region \(index)")
        return Node(base + ChunkLayout.nodesOffset + index * NodeLayout.byteCount)
    }
}

// MARK: - Internals: ClassPool

/// Per-class events, counted with relaxed atomic adds.
@usableFromInline
enum ClassEvent: Int, CaseIterable {
    case chunks, chunkBytes, allocations, slowPaths, refills, deallocations
    case eagerClears, backgroundClears, clearFailures, steals, unmappedChunks
}

/// A size class's global state, in the control block (fields in ``ClassPoolLayout``): the
/// dirty pool (a list with a tail: allocation takes the most recently freed region, whose
/// pages are likeliest still in the CPU caches, and the worker the least recently freed
/// one), the clean pool (a list, so an idle chunk's regions can be taken out of it), the
/// list of chunks, all under one spin lock (critical sections are a few pointer moves);
/// and its counters.
@usableFromInline
struct ClassPool {
    @usableFromInline let base: UnsafeMutableRawPointer

    @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }

    func initialize() {
        base.initializeMemory(as: UInt8.self, repeating: 0, count: ClassPoolLayout.countersOffset)
        (base + ClassPoolLayout.lockOffset).bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        _ = Counters<ClassEvent>(initializingAt: base + ClassPoolLayout.countersOffset)
    }

    @inlinable
    var counters: Counters<ClassEvent> { Counters(at: base + ClassPoolLayout.countersOffset) }

    var lock: UnsafeMutablePointer<SpinLock> {
        (base + ClassPoolLayout.lockOffset).assumingMemoryBound(to: SpinLock.self)
    }

    func withLock<Result>(_ body: () -> Result) -> Result {
        lock.pointee.lock()
        defer { lock.pointee.unlock() }
        return body()
    }

    /// The dirty pool, most recently freed first.
    var dirty: IntrusiveList {
        IntrusiveList(
            anchor: base + ClassPoolLayout.dirtyFirstOffset, linkOffset: NodeLayout.previousOffset, hasTail: true)
    }
    var dirtyCount: Int {
        get { base.load(fromByteOffset: ClassPoolLayout.dirtyCountOffset, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: ClassPoolLayout.dirtyCountOffset, as: Int.self) }
    }
    /// The clean pool, most recently cleaned first.
    var clean: IntrusiveList {
        IntrusiveList(anchor: base + ClassPoolLayout.cleanFirstOffset, linkOffset: NodeLayout.previousOffset)
    }
    var cleanCount: Int {
        get { base.load(fromByteOffset: ClassPoolLayout.cleanCountOffset, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: ClassPoolLayout.cleanCountOffset, as: Int.self) }
    }
    /// The class's chunks, newest first.
    var chunks: IntrusiveList {
        IntrusiveList(anchor: base + ClassPoolLayout.chunksFirstOffset, linkOffset: ChunkLayout.previousOffset)
    }
    var refills: Int {
        get { base.load(fromByteOffset: ClassPoolLayout.refillsOffset, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: ClassPoolLayout.refillsOffset, as: Int.self) }
    }

    // Everything below runs under the lock.

    func pushDirty(_ node: Node) {
        node.state = .dirty
        node.dirtySince = SystemInfo.monotonicNanoseconds()
        dirty.pushFront(node.base)
        dirtyCount += 1
    }

    /// The most recently freed dirty region.
    func popDirty() -> Node? {
        guard let node = Node(optional: dirty.first) else { return nil }
        unlinkDirty(node)
        return node
    }

    /// The least recently freed dirty region if it has been dirty since `cutoff` or
    /// earlier: the one the worker clears first.
    func popOldestDirty(dirtySinceAtMost cutoff: UInt64) -> Node? {
        guard let node = Node(optional: dirty.last), node.dirtySince <= cutoff else { return nil }
        unlinkDirty(node)
        return node
    }

    func unlinkDirty(_ node: Node) {
        assert(node.state == .dirty, "LargeAlloc: dirty region \(node.address) in state \(node.state)")
        dirty.remove(node.base)
        dirtyCount -= 1
        node.state = .live
    }

    func pushClean(_ node: Node) {
        node.state = .clean
        clean.pushFront(node.base)
        cleanCount += 1
        let chunk = node.chunk
        chunk.cleanCount += 1
        assert(chunk.cleanCount <= chunk.regionCount, "LargeAlloc: chunk \(chunk.mapping) has too many clean regions")
        if chunk.cleanCount == chunk.regionCount { chunk.wholeCleanSince = SystemInfo.monotonicNanoseconds() }
    }

    func unlinkClean(_ node: Node) {
        assert(node.state == .clean, "LargeAlloc: region \(node.address) is not clean but \(node.state)")
        clean.remove(node.base)
        cleanCount -= 1
        node.chunk.cleanCount -= 1
        node.state = .live
    }

    /// A dirty region if there is one (its pages are resident: cheapest to reuse), else a
    /// clean one.
    func popDirtyOrClean() -> Node? {
        if let node = popDirty() { return node }
        guard let node = Node(optional: clean.first) else { return nil }
        unlinkClean(node)
        return node
    }
}

// MARK: - Internals: ThreadCache

/// A thread's cache for one allocator (fields in ``ThreadCacheLayout``): per class a
/// ``NodeStack`` of regions and the counts of allocations and deallocations made through it, under
/// a spin lock that only stealing threads contend for. Made when a thread first needs one,
/// parked when it exits, adopted by a later thread; freed with the allocator.
///
/// `live` is the net number of regions allocated minus freed through this cache (it may
/// be negative: a region allocated here and freed by another thread). When the handle
/// goes, ``Control/close()`` moves it to the allocator's global word and sets
/// `transferred`; deallocations after that are counted there.
@usableFromInline
struct ThreadCache: Equatable {
    @usableFromInline let base: UnsafeMutableRawPointer

    @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }

    init?(optional base: UnsafeMutableRawPointer?) {
        guard let base else { return nil }
        self.base = base
    }

    /// A new cache, owned by the calling thread.
    static func create() -> ThreadCache {
        let base = UnsafeMutableRawPointer.allocate(byteCount: ThreadCacheLayout.byteCount, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: ThreadCacheLayout.byteCount)
        (base + ThreadCacheLayout.lockOffset).bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        _ = AtomicWord(initializingAt: base + ThreadCacheLayout.ownedOffset, to: 1)
        let cache = ThreadCache(base)
        for classIndex in 0..<Layout.classCount {
            _ = AtomicWord(initializingAt: cache.countWord(classIndex).address, to: 0)
            _ = AtomicWord(initializingAt: cache.allocationsWord(classIndex).address, to: 0)
            _ = AtomicWord(initializingAt: cache.deallocationsWord(classIndex).address, to: 0)
        }
        return cache
    }

    @inlinable
    var lock: UnsafeMutablePointer<SpinLock> {
        (base + ThreadCacheLayout.lockOffset).assumingMemoryBound(to: SpinLock.self)
    }

    /// The next cache of the allocator: written once, before the cache is published.
    var registryNext: ThreadCache? {
        get {
            ThreadCache(
                optional: base.load(
                    fromByteOffset: ThreadCacheLayout.registryNextOffset, as: UnsafeMutableRawPointer?.self))
        }
        nonmutating set {
            base.storeBytes(
                of: newValue?.base, toByteOffset: ThreadCacheLayout.registryNextOffset,
                as: UnsafeMutableRawPointer?.self)
        }
    }

    var owned: AtomicWord { AtomicWord(at: base + ThreadCacheLayout.ownedOffset) }

    @inlinable
    var cachedBytes: Int {
        get { base.load(fromByteOffset: ThreadCacheLayout.cachedBytesOffset, as: Int.self) }
        nonmutating set {
            base.storeBytes(of: newValue, toByteOffset: ThreadCacheLayout.cachedBytesOffset, as: Int.self)
        }
    }

    @inlinable
    var live: Int {
        get { base.load(fromByteOffset: ThreadCacheLayout.liveOffset, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: ThreadCacheLayout.liveOffset, as: Int.self) }
    }

    @inlinable
    var isTransferred: Bool {
        get { base.load(fromByteOffset: ThreadCacheLayout.isTransferredOffset, as: Bool.self) }
        nonmutating set {
            base.storeBytes(of: newValue, toByteOffset: ThreadCacheLayout.isTransferredOffset, as: Bool.self)
        }
    }

    /// Where class `classIndex`'s fields start.
    @inlinable
    func classBase(_ classIndex: Int) -> UnsafeMutableRawPointer {
        base + (ThreadCacheLayout.classesOffset &+ classIndex &* ThreadCacheLayout.classStride)
    }

    @inlinable
    func stack(_ classIndex: Int) -> NodeStack {
        NodeStack(
            top: Node(
                optional: classBase(classIndex).load(
                    fromByteOffset: ThreadCacheLayout.topOffset, as: UnsafeMutableRawPointer?.self)))
    }

    @inlinable
    func setStack(_ classIndex: Int, _ stack: NodeStack) {
        classBase(classIndex).storeBytes(
            of: stack.top?.base, toByteOffset: ThreadCacheLayout.topOffset, as: UnsafeMutableRawPointer?.self)
    }

    @inlinable
    func countWord(_ classIndex: Int) -> AtomicWord {
        AtomicWord(at: classBase(classIndex) + ThreadCacheLayout.countOffset)
    }

    @inlinable
    func allocationsWord(_ classIndex: Int) -> AtomicWord {
        AtomicWord(at: classBase(classIndex) + ThreadCacheLayout.allocationsOffset)
    }

    @inlinable
    func deallocationsWord(_ classIndex: Int) -> AtomicWord {
        AtomicWord(at: classBase(classIndex) + ThreadCacheLayout.deallocationsOffset)
    }
}

// MARK: - Internals: ThreadTable

/// The thread-local table: ``ThreadTableLayout/entryCount`` pairs (allocator id, thread
/// cache) in malloc'd memory, found through ``ThreadLocalSlot/largeAlloc``. Ids are never
/// reused, so an entry of a destroyed allocator never matches again; the exit hook skips it.
enum ThreadTable {
    /// The calling thread's table, made and installed (arming the exit hook) if needed.
    static func current() -> UnsafeMutableRawPointer? {
        if let table = ThreadLocalSlot.largeAlloc.value { return table }
        let byteCount = ThreadTableLayout.entryCount * ThreadTableLayout.entryByteCount
        let table = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 16)
        table.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
        // If arming fails the cache still works; it is just not returned at thread exit
        // (other threads can still steal from it).
        try? ThreadLocalSlot.largeAlloc.install(table)
        return table
    }

    static func id(at entry: Int, of table: UnsafeMutableRawPointer) -> Int {
        table.load(fromByteOffset: entry * ThreadTableLayout.entryByteCount + ThreadTableLayout.idOffset, as: Int.self)
    }

    static func cache(at entry: Int, of table: UnsafeMutableRawPointer) -> ThreadCache {
        ThreadCache(
            table.load(
                fromByteOffset: entry * ThreadTableLayout.entryByteCount + ThreadTableLayout.cacheOffset,
                as: UnsafeMutableRawPointer.self))
    }

    /// Fills `entry`: the cache first, then the id that makes the entry match.
    static func store(cache: ThreadCache, id: Int, at entry: Int, of table: UnsafeMutableRawPointer) {
        let offset = entry * ThreadTableLayout.entryByteCount
        table.storeBytes(
            of: cache.base, toByteOffset: offset + ThreadTableLayout.cacheOffset, as: UnsafeMutableRawPointer.self)
        table.storeBytes(of: id, toByteOffset: offset + ThreadTableLayout.idOffset, as: Int.self)
    }

    /// A free entry of `table`; entries of destroyed allocators are cleared to make room.
    static func freeEntry(_ table: UnsafeMutableRawPointer) -> Int? {
        func free() -> Int? {
            (0..<ThreadTableLayout.entryCount).first { id(at: $0, of: table) == 0 }
        }
        if let entry = free() { return entry }
        LiveAllocators.withLock {
            for entry in 0..<ThreadTableLayout.entryCount where LiveAllocators.find(id: id(at: entry, of: table)) == nil
            {
                table.storeBytes(
                    of: 0, toByteOffset: entry * ThreadTableLayout.entryByteCount + ThreadTableLayout.idOffset,
                    as: Int.self)
            }
        }
        return free()
    }

    /// The exit hook: each live allocator's cache is emptied into its dirty pools and parked.
    static let threadExitHook: @convention(c) (UnsafeMutableRawPointer?) -> Void = { table in
        guard let table else { return }
        for entry in 0..<ThreadTableLayout.entryCount {
            let id = id(at: entry, of: table)
            guard id != 0 else { continue }
            let cache = cache(at: entry, of: table)
            // Under the global lock, so the allocator cannot be destroyed meanwhile.
            LiveAllocators.withLock {
                guard let control = LiveAllocators.find(id: id) else { return }
                control.empty(cache)
                cache.owned.store(0, ordering: .releasing)
            }
        }
        table.deallocate()
    }
}

// MARK: - Internals: Control

/// The allocator's state, in one malloc'd block (fields in ``ControlLayout``):
/// configuration words (atomics, read on the slow paths), locks, the list of thread
/// caches, the worker's futex word, its links in the list of live allocators, and the 21
/// class pools.
///
/// The live word counts regions allocated minus freed by threads without a cache; while
/// the handle lives it may be negative (each cache counts its own share, so the fast path
/// writes no shared line). ``close()`` adds the caches' shares and `closedFlag`; from then
/// on the word is `closedFlag` + the regions still live, and the free that brings it to
/// `closedFlag` destroys the allocator.
@usableFromInline
struct Control: @unchecked Sendable, Equatable {
    @usableFromInline let base: UnsafeMutableRawPointer

    @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }

    /// The configuration words, at `ControlLayout.configurationOffset + 8 × rawValue`.
    @usableFromInline
    enum Word: Int, CaseIterable {
        case enabled, threadCacheBytes, eagerReturn, growthDampener, bytesPerTick, intervalNanoseconds
        case chunkIdleNanoseconds, backing, clearAdvice, initialChunkBytes, maximumChunkBytes
    }

    static let anonymousBacking = 0
    static let hugePageBacking = 1
    static let fileBacking = 2

    enum ClearAdviceCode {
        static let automatic = 0
        static let free = 1
        static let dontNeed = 2
        static let remove = 3
    }

    enum WorkerState {
        static let running = 0
        static let stopping = 1
    }

    static func create() -> Control {
        let base = UnsafeMutableRawPointer.allocate(byteCount: ControlLayout.byteCount, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: ControlLayout.poolsOffset)
        let control = Control(base)
        _ = AtomicWord(initializingAt: base + ControlLayout.liveWordOffset, to: 0)
        base.storeBytes(
            of: LiveAllocators.nextID.wrappingAdd(1, ordering: .relaxed).oldValue, toByteOffset: ControlLayout.idOffset,
            as: Int.self)
        for word in Word.allCases { _ = AtomicWord(initializingAt: control.wordAddress(word), to: 0) }
        (base + ControlLayout.refillLockOffset).bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        _ = AtomicWord(initializingAt: base + ControlLayout.cachesOffset, to: 0)
        _ = AtomicWord(initializingAt: base + ControlLayout.workerWordOffset, to: WorkerState.running)
        _ = AtomicWord(initializingAt: base + ControlLayout.workerTicksOffset, to: 0)
        _ = AtomicWord(initializingAt: base + ControlLayout.lastClearErrorOffset, to: 0)
        for classIndex in 0..<Layout.classCount { control.pool(classIndex).initialize() }
        return control
    }

    @usableFromInline var liveWord: AtomicWord { AtomicWord(at: base + ControlLayout.liveWordOffset) }
    /// Set in the live word by `close()`; counts stay far below it.
    @usableFromInline static var closedFlag: Int { 1 << 62 }

    /// Whether the handle is gone (no cache may be made any more); under the refill lock.
    var isClosing: Bool {
        get { base.load(fromByteOffset: ControlLayout.isClosingOffset, as: Bool.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: ControlLayout.isClosingOffset, as: Bool.self) }
    }
    @inlinable var id: Int { base.load(fromByteOffset: ControlLayout.idOffset, as: Int.self) }

    @inlinable
    func wordAddress(_ word: Word) -> UnsafeMutableRawPointer {
        base + (ControlLayout.configurationOffset &+ word.rawValue &* 8)
    }

    func word(_ word: Word) -> Int { AtomicWord(at: wordAddress(word)).load(ordering: .relaxed) }

    func setWord(_ word: Word, _ value: Int) { AtomicWord(at: wordAddress(word)).store(value, ordering: .relaxed) }

    @inlinable
    var isEnabled: Bool { AtomicWord(at: wordAddress(.enabled)).load(ordering: .relaxed) != 0 }

    @inlinable
    var threadCacheBytes: Int { AtomicWord(at: wordAddress(.threadCacheBytes)).load(ordering: .relaxed) }

    var eagerReturn: Bool { word(.eagerReturn) != 0 }

    /// The directory of file-backed chunks; replaced and read under the refill lock.
    var directory: UnsafeMutablePointer<CChar>? {
        get { base.load(fromByteOffset: ControlLayout.directoryOffset, as: UnsafeMutablePointer<CChar>?.self) }
        nonmutating set {
            base.storeBytes(
                of: newValue, toByteOffset: ControlLayout.directoryOffset, as: UnsafeMutablePointer<CChar>?.self)
        }
    }

    var refillLock: UnsafeMutablePointer<SpinLock> {
        (base + ControlLayout.refillLockOffset).assumingMemoryBound(to: SpinLock.self)
    }
    /// The newest thread cache; each links to the one made before it (``ThreadCache/registryNext``).
    var cachesWord: AtomicWord { AtomicWord(at: base + ControlLayout.cachesOffset) }
    var workerWord: AtomicWord { AtomicWord(at: base + ControlLayout.workerWordOffset) }
    var workerTicks: AtomicWord { AtomicWord(at: base + ControlLayout.workerTicksOffset) }
    var lastClearError: AtomicWord { AtomicWord(at: base + ControlLayout.lastClearErrorOffset) }

    @inlinable
    func pool(_ classIndex: Int) -> ClassPool {
        ClassPool(base + (ControlLayout.poolsOffset &+ classIndex &* ClassPoolLayout.byteCount))
    }

    /// The newest thread cache, read with acquiring order: a cache is published complete.
    var firstCache: ThreadCache? {
        ThreadCache(optional: UnsafeMutableRawPointer(bitPattern: cachesWord.load(ordering: .acquiring)))
    }

    func forEachCache(_ body: (ThreadCache) -> Void) {
        var record = firstCache
        while let cache = record {
            record = cache.registryNext
            body(cache)
        }
    }

    /// Stores `configuration`'s figures (the caller has validated them).
    func apply(_ configuration: LargeAllocConfiguration) {
        setWord(.enabled, configuration.isEnabled ? 1 : 0)
        setWord(.threadCacheBytes, configuration.threadCacheBytes)
        setWord(.eagerReturn, configuration.eagerReturn ? 1 : 0)
        setWord(.growthDampener, configuration.growthDampener)
        setWord(.bytesPerTick, configuration.backgroundBytesPerTick)
        setWord(.intervalNanoseconds, configuration.backgroundInterval.map(Control.nanoseconds) ?? 0)
        setWord(.chunkIdleNanoseconds, configuration.chunkIdleAge.map(Control.nanoseconds) ?? -1)
        let advice: Int
        switch configuration.clearAdvice {
        case nil: advice = ClearAdviceCode.automatic
        case .free: advice = ClearAdviceCode.free
        case .dontNeed: advice = ClearAdviceCode.dontNeed
        case .remove: advice = ClearAdviceCode.remove
        }
        setWord(.clearAdvice, advice)
        setWord(.initialChunkBytes, configuration.initialChunkBytes)
        setWord(.maximumChunkBytes, configuration.maximumChunkBytes)
        refillLock.pointee.withLock {
            switch configuration.backing {
            case .anonymous(let hugePages):
                setWord(.backing, hugePages ? Control.hugePageBacking : Control.anonymousBacking)
            case .file(let path):
                free(directory)
                directory = strdup(path)
                setWord(.backing, Control.fileBacking)
            }
        }
    }

    /// A duration as a configuration word: whole nanoseconds, at most `Int.max`.
    static func nanoseconds(_ duration: Duration) -> Int {
        Int(clamping: Duration.nanosecondsClamped(duration))
    }
}

// MARK: - Internals: LiveAllocators

/// Every live allocator, in an ``IntrusiveList`` of control blocks under one global spin
/// lock: the thread-exit hook and `fork` find them here, and an allocator leaves the list
/// before it is destroyed.
enum LiveAllocators {
    static let lock = SpinLock()
    /// The list's anchor: the first live allocator's control block. One word, never
    /// freed, read and written only under `lock`.
    nonisolated(unsafe) static let anchor: UnsafeMutableRawPointer = {
        let anchor = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
        anchor.storeBytes(of: nil, as: UnsafeMutableRawPointer?.self)
        return anchor
    }()
    /// Allocator ids; never reused.
    static let nextID = Atomic<Int>(1)
    static let hooksInstalled = Atomic<Bool>(false)

    /// Under the lock.
    static var list: IntrusiveList { IntrusiveList(anchor: anchor, linkOffset: ControlLayout.liveLinksOffset) }

    static func withLock<Result>(_ body: () -> Result) -> Result {
        lock.lock()
        defer { lock.unlock() }
        return body()
    }

    /// Adds `control`; the first call installs the thread-exit hook and the fork actions
    /// and, in debug builds, checks the header layouts (section 3 of the spec).
    static func register(_ control: Control) {
        if !hooksInstalled.exchange(true, ordering: .acquiringAndReleasing) {
            assert(Layout.headerViolation() == nil, "LargeAlloc: \(Layout.headerViolation() ?? "")")
            ThreadLocalSlot.largeAlloc.setThreadExitHook(ThreadTable.threadExitHook)
            ForkActions.register(prepare: forkPrepare, parent: forkParent, child: forkChild)
        }
        withLock { list.pushFront(control.base) }
    }

    static func unregister(_ control: Control) {
        withLock { list.remove(control.base) }
    }

    /// Under the lock.
    static func find(id: Int) -> Control? {
        var next = list.first
        while let base = next {
            if Control(base).id == id { return Control(base) }
            next = list.next(after: base)
        }
        return nil
    }

    /// Under the lock.
    static func forEach(_ body: (Control) -> Void) {
        list.forEach { body(Control($0)) }
    }
}

// MARK: - Layout: size classes

/// The size classes (spec section 3): the numbers every part agrees on.
@usableFromInline
enum Layout {
    /// 2^16 = 64 KiB: see ``LargeAllocator/minimumRegionSize``.
    @inlinable static var minimumRegionShift: Int { 16 }
    /// 2^36 = 64 GiB, the largest class of lgalloc's latest release.
    @inlinable static var maximumRegionShift: Int { 36 }
    @inlinable static var classCount: Int { maximumRegionShift &- minimumRegionShift &+ 1 }
    @inlinable static var minimumRegionSize: Int { 1 &<< minimumRegionShift }
    @inlinable static var maximumRegionSize: Int { 1 &<< maximumRegionShift }

    /// The class of the smallest region that holds `byteCount` (1 ... maximumRegionSize).
    @inlinable
    static func classIndex(forByteCount byteCount: Int) -> Int {
        assert(byteCount > 0 && byteCount <= maximumRegionSize, "LargeAlloc: no class for \(byteCount) bytes")
        return byteCount <= minimumRegionSize ? 0 : log2Ceiling(byteCount) &- minimumRegionShift
    }

    @inlinable
    static func regionSize(ofClass classIndex: Int) -> Int {
        assert(classIndex >= 0 && classIndex < classCount, "LargeAlloc: no class \(classIndex)")
        return 1 &<< (minimumRegionShift &+ classIndex)
    }

    /// Regions in a class's next chunk: `initialChunkBytes / regionSize` (at least one),
    /// doubled every `2^growthDampener` refills, at most `maximumChunkBytes / regionSize`
    /// (at least one). Bounded growth keeps refills rare without mapping without end.
    static func regionCount(
        regionSize: Int, refills: Int, initialChunkBytes: Int, maximumChunkBytes: Int, growthDampener: Int
    ) -> Int {
        let first = max(1, initialChunkBytes / regionSize)
        let limit = max(1, maximumChunkBytes / regionSize)
        let doublings = min(refills >> growthDampener, 62 - log2Floor(first))
        return min(first << doublings, limit)
    }
}

// MARK: - Layout: headers

/// A region's node: 7 words in its chunk's metadata block (``ChunkLayout/nodesOffset`` +
/// 56 × index), never in the region, so pooling a clean region touches none of its pages.
@usableFromInline
enum NodeLayout {
    /// The pool list's previous link (``IntrusiveList``: previous, then next). nil outside
    /// the dirty and clean pools.
    @inlinable static var previousOffset: Int { 0 }
    /// The pool list's next link; also the link of a thread cache's stack and of the
    /// worker's batches (``NodeStack``). nil when the node is in no list or stack.
    @inlinable static var nextOffset: Int { 8 }
    /// The region's first byte; fixed when the chunk is made.
    @inlinable static var addressOffset: Int { 16 }
    /// The chunk's metadata block; fixed.
    @inlinable static var chunkOffset: Int { 24 }
    /// Where the region is: a ``Node/State`` raw value.
    @inlinable static var stateOffset: Int { 32 }
    /// The size class; fixed.
    @inlinable static var classIndexOffset: Int { 40 }
    /// When the region entered the dirty pool (monotonic ns); meaningful while dirty.
    @inlinable static var dirtySinceOffset: Int { 48 }
    /// 56 bytes: 0.09% of the smallest region.
    @inlinable static var byteCount: Int { 56 }
}

/// A chunk's metadata block: the header, then the nodes of its regions. malloc'd apart
/// from the mapping, which holds only user data.
enum ChunkLayout {
    /// The class pool's chunk list (``IntrusiveList``): previous link.
    static var previousOffset: Int { 0 }
    /// The chunk list's next link.
    static var nextOffset: Int { 8 }
    /// The mapping's first byte (after the leading guard page of an anonymous chunk).
    static var mappingOffset: Int { 16 }
    /// The mapping's size, guard pages not included: region count × region size.
    static var byteCountOffset: Int { 24 }
    /// The size class of every region in it.
    static var classIndexOffset: Int { 32 }
    /// How many regions (and nodes) it has.
    static var regionCountOffset: Int { 40 }
    /// Its regions in the clean pool, under the class lock.
    static var cleanCountOffset: Int { 48 }
    /// When the clean count last reached the region count (monotonic ns): the idle clock.
    static var wholeCleanSinceOffset: Int { 56 }
    /// 1: a temporary file backs the mapping (shared); 0: anonymous.
    static var isFileBackedOffset: Int { 64 }
    /// 1 in a fork child for a file-backed chunk: shared with the parent, never reused.
    static var isOrphanedOffset: Int { 72 }
    /// The nodes, from the header's 80 bytes rounded up to whole 64-byte lines: header
    /// writes (counts, clocks) never share a line with the first nodes.
    static var nodesOffset: Int { 128 }
}

/// A size class's pool, one of 21 in the control block (``ControlLayout/poolsOffset`` +
/// 152 × class).
@usableFromInline
enum ClassPoolLayout {
    /// The class lock (a ``SpinLock``): the lists and counts below are changed under it.
    @inlinable static var lockOffset: Int { 0 }
    /// The dirty list's anchor, first node then last (a list with a tail).
    @inlinable static var dirtyFirstOffset: Int { 8 }
    @inlinable static var dirtyLastOffset: Int { 16 }
    /// Nodes in the dirty list.
    @inlinable static var dirtyCountOffset: Int { 24 }
    /// The clean list's anchor: its first node.
    @inlinable static var cleanFirstOffset: Int { 32 }
    /// Nodes in the clean list.
    @inlinable static var cleanCountOffset: Int { 40 }
    /// The chunk list's anchor: the newest chunk.
    @inlinable static var chunksFirstOffset: Int { 48 }
    /// Chunks mapped for the class, in all; under the refill lock (it sets the next
    /// chunk's size).
    @inlinable static var refillsOffset: Int { 56 }
    /// The class's ``ClassEvent`` counters, relaxed atomics, one word each.
    @inlinable static var countersOffset: Int { 64 }
    /// 64 + 11 counters × 8.
    @inlinable static var byteCount: Int { 152 }
}

/// A thread cache: a header, then 21 blocks of per-class fields. malloc'd, 64-aligned.
@usableFromInline
enum ThreadCacheLayout {
    /// The cache lock (a ``SpinLock``): its owner and stealing threads take it.
    @inlinable static var lockOffset: Int { 0 }
    /// The allocator's next (older) cache; written before the cache is published.
    @inlinable static var registryNextOffset: Int { 8 }
    /// Atomic: 1 while a thread owns the cache, 0 parked (its thread exited).
    @inlinable static var ownedOffset: Int { 16 }
    /// Bytes of the regions in its stacks, under the lock.
    @inlinable static var cachedBytesOffset: Int { 24 }
    /// Regions allocated minus freed through it, under the lock; may be negative.
    @inlinable static var liveOffset: Int { 32 }
    /// A Bool: the live count has moved to the control block's live word (``Control/close()``).
    @inlinable static var isTransferredOffset: Int { 40 }
    /// The per-class blocks start on the second 64-byte line: the owner's hot header
    /// words and the first class's words are apart.
    @inlinable static var classesOffset: Int { 64 }
    /// One class's block: top, count, allocations, deallocations.
    @inlinable static var classStride: Int { 32 }
    /// In a class block: the stack's top node (under the lock).
    @inlinable static var topOffset: Int { 0 }
    /// Atomic: nodes in the stack; written under the lock, read by stealers and statistics.
    @inlinable static var countOffset: Int { 8 }
    /// Atomic: allocations through the cache; written under the lock, read by statistics.
    @inlinable static var allocationsOffset: Int { 16 }
    /// Atomic: deallocations through the cache; written under the lock, read by statistics.
    @inlinable static var deallocationsOffset: Int { 24 }
    /// 64 + 21 classes × 32.
    @inlinable static var byteCount: Int { 736 }
}

/// The thread-local table: ``entryCount`` entries of (allocator id, thread cache).
@usableFromInline
enum ThreadTableLayout {
    /// Allocators one thread can cache for at once; a thread that uses more (all alive)
    /// goes to the global pools for the others.
    @inlinable static var entryCount: Int { 8 }
    /// An entry: the allocator's id (0: free), then its cache.
    @inlinable static var entryByteCount: Int { 16 }
    @inlinable static var idOffset: Int { 0 }
    @inlinable static var cacheOffset: Int { 8 }
}

/// The control block, one per allocator: malloc'd, 64-aligned.
@usableFromInline
enum ControlLayout {
    /// Atomic: regions allocated minus freed outside the caches (``Control/closedFlag``).
    @inlinable static var liveWordOffset: Int { 0 }
    /// The allocator's id, matched against the thread tables; never reused.
    @inlinable static var idOffset: Int { 8 }
    /// Atomics: the configuration words, 8 × ``Control/Word`` (11 words, to 104).
    @inlinable static var configurationOffset: Int { 16 }
    /// The file backing's directory, a malloc'd C string; under the refill lock.
    @inlinable static var directoryOffset: Int { 104 }
    /// The refill lock (a ``SpinLock``): chunk mapping, cache creation, closing.
    @inlinable static var refillLockOffset: Int { 112 }
    /// Atomic: the newest thread cache (``ThreadCacheLayout/registryNextOffset`` links the rest).
    @inlinable static var cachesOffset: Int { 120 }
    /// Atomic: the worker's futex word (running or stopping).
    @inlinable static var workerWordOffset: Int { 128 }
    /// Atomic: ticks the worker has run.
    @inlinable static var workerTicksOffset: Int { 136 }
    /// The links in the list of live allocators (``IntrusiveList``: previous, next), under
    /// its global lock.
    @inlinable static var liveLinksOffset: Int { 144 }
    /// Atomic: the errno of the last `madvise` the kernel refused.
    @inlinable static var lastClearErrorOffset: Int { 160 }
    /// A Bool: the handle is gone; under the refill lock.
    @inlinable static var isClosingOffset: Int { 168 }
    /// The class pools, from the header's 169 bytes rounded up to a 64-byte line: the
    /// header's words never share a line with the first pool's lock.
    @inlinable static var poolsOffset: Int { 192 }
    /// The header and 21 pools of 152 bytes.
    @inlinable static var byteCount: Int { 3384 }
}

extension Layout {
    /// What is wrong with the header layouts above, or nil (spec section 3), as AllocCore's
    /// `LayoutCheck` finds it: in each header the fields lie in address order without
    /// overlap, each aligned to its size up to a word (a lock and a word at 8, a Bool at 1),
    /// all within the header's size; each list's links are a previous word followed by its
    /// next word, as ``IntrusiveList`` reads them, and the dirty list's anchor its first
    /// word followed by its last (`adjacent`); a lock fits its word (the field after it
    /// starts one word on); the class pool, the thread cache and the control block are
    /// exactly filled (their counters, per-class blocks and pools end where they end).
    /// Asserted when the first allocator is made (debug builds); run by the integrity walker.
    static func headerViolation() -> String? {
        let word = MemoryLayout<Int>.size
        let lock = MemoryLayout<SpinLock>.size
        let bool = MemoryLayout<Bool>.size
        let classes = Layout.classCount
        var node = LayoutCheck("Node")
        node.field("previous", at: NodeLayout.previousOffset, size: word)
        node.field("next", at: NodeLayout.nextOffset, size: word, adjacent: true)
        node.field("address", at: NodeLayout.addressOffset, size: word)
        node.field("chunk", at: NodeLayout.chunkOffset, size: word)
        node.field("state", at: NodeLayout.stateOffset, size: word)
        node.field("classIndex", at: NodeLayout.classIndexOffset, size: word)
        node.field("dirtySince", at: NodeLayout.dirtySinceOffset, size: word)
        var chunk = LayoutCheck("Chunk header")
        chunk.field("previous", at: ChunkLayout.previousOffset, size: word)
        chunk.field("next", at: ChunkLayout.nextOffset, size: word, adjacent: true)
        chunk.field("mapping", at: ChunkLayout.mappingOffset, size: word)
        chunk.field("byteCount", at: ChunkLayout.byteCountOffset, size: word)
        chunk.field("classIndex", at: ChunkLayout.classIndexOffset, size: word)
        chunk.field("regionCount", at: ChunkLayout.regionCountOffset, size: word)
        chunk.field("cleanCount", at: ChunkLayout.cleanCountOffset, size: word)
        chunk.field("wholeCleanSince", at: ChunkLayout.wholeCleanSinceOffset, size: word)
        chunk.field("isFileBacked", at: ChunkLayout.isFileBackedOffset, size: word)
        chunk.field("isOrphaned", at: ChunkLayout.isOrphanedOffset, size: word)
        var pool = LayoutCheck("ClassPool")
        pool.field("lock", at: ClassPoolLayout.lockOffset, size: lock)
        pool.field("dirtyFirst", at: ClassPoolLayout.dirtyFirstOffset, size: word)
        pool.field("dirtyLast", at: ClassPoolLayout.dirtyLastOffset, size: word, adjacent: true)
        pool.field("dirtyCount", at: ClassPoolLayout.dirtyCountOffset, size: word)
        pool.field("cleanFirst", at: ClassPoolLayout.cleanFirstOffset, size: word)
        pool.field("cleanCount", at: ClassPoolLayout.cleanCountOffset, size: word)
        pool.field("chunksFirst", at: ClassPoolLayout.chunksFirstOffset, size: word)
        pool.field("refills", at: ClassPoolLayout.refillsOffset, size: word)
        pool.field("counters", at: ClassPoolLayout.countersOffset, size: Counters<ClassEvent>.byteCount)
        var cache = LayoutCheck("ThreadCache")
        cache.field("lock", at: ThreadCacheLayout.lockOffset, size: lock)
        cache.field("registryNext", at: ThreadCacheLayout.registryNextOffset, size: word)
        cache.field("owned", at: ThreadCacheLayout.ownedOffset, size: word)
        cache.field("cachedBytes", at: ThreadCacheLayout.cachedBytesOffset, size: word)
        cache.field("live", at: ThreadCacheLayout.liveOffset, size: word)
        cache.field("isTransferred", at: ThreadCacheLayout.isTransferredOffset, size: bool, alignment: bool)
        cache.field("classes", at: ThreadCacheLayout.classesOffset, size: classes * ThreadCacheLayout.classStride)
        var cacheClass = LayoutCheck("ThreadCache class block")
        cacheClass.field("top", at: ThreadCacheLayout.topOffset, size: word)
        cacheClass.field("count", at: ThreadCacheLayout.countOffset, size: word)
        cacheClass.field("allocations", at: ThreadCacheLayout.allocationsOffset, size: word)
        cacheClass.field("deallocations", at: ThreadCacheLayout.deallocationsOffset, size: word)
        var tableEntry = LayoutCheck("ThreadTable entry")
        tableEntry.field("id", at: ThreadTableLayout.idOffset, size: word)
        tableEntry.field("cache", at: ThreadTableLayout.cacheOffset, size: word)
        var control = LayoutCheck("Control")
        control.field("liveWord", at: ControlLayout.liveWordOffset, size: word)
        control.field("id", at: ControlLayout.idOffset, size: word)
        control.field("configuration", at: ControlLayout.configurationOffset, size: Control.Word.allCases.count * word)
        control.field("directory", at: ControlLayout.directoryOffset, size: word)
        control.field("refillLock", at: ControlLayout.refillLockOffset, size: lock)
        control.field("caches", at: ControlLayout.cachesOffset, size: word)
        control.field("workerWord", at: ControlLayout.workerWordOffset, size: word)
        control.field("workerTicks", at: ControlLayout.workerTicksOffset, size: word)
        control.field("liveLinks", at: ControlLayout.liveLinksOffset, size: 2 * word)
        control.field("lastClearError", at: ControlLayout.lastClearErrorOffset, size: word)
        control.field("isClosing", at: ControlLayout.isClosingOffset, size: bool, alignment: bool)
        control.field("pools", at: ControlLayout.poolsOffset, size: classes * ClassPoolLayout.byteCount)
        return node.result(within: NodeLayout.byteCount) ?? chunk.result(within: ChunkLayout.nodesOffset)
            ?? pool.result(filling: ClassPoolLayout.byteCount) ?? cache.result(filling: ThreadCacheLayout.byteCount)
            ?? cacheClass.result(within: ThreadCacheLayout.classStride)
            ?? tableEntry.result(within: ThreadTableLayout.entryByteCount)
            ?? control.result(filling: ControlLayout.byteCount)
    }
}

// MARK: - Integrity walker

extension Control {
    /// See ``LargeAllocator/integrityViolation()``. Takes the global lock (this allocator
    /// must be in the list of live ones) and every lock of the allocator, in the order
    /// `fork` takes them.
    func integrityViolation() -> String? {
        if let violation = Layout.headerViolation() { return "layout: \(violation)" }
        return LiveAllocators.withLock { () -> String? in
            if let violation = LiveAllocators.list.integrityViolation(limit: Control.walkLimit) {
                return "the list of live allocators: \(violation)"
            }
            guard LiveAllocators.list.contains(base) else { return "the allocator is not in the list of live ones" }
            lockAll()
            defer { unlockAll() }
            return structureViolation()
        }
    }

    /// More nodes than any list or stack can hold: a walk past it is in a cycle.
    static var walkLimit: Int { 1 << 40 }

    /// With every lock held: each chunk's nodes, the pools' lists, the caches' stacks,
    /// and every region in exactly one place.
    func structureViolation() -> String? {
        var cachedPerClass = [Int](repeating: 0, count: Layout.classCount)
        var chunksPerClass: [Set<UnsafeMutableRawPointer>] = []
        var regionsPerClass: [Int] = []
        for classIndex in 0..<Layout.classCount {
            let pool = pool(classIndex)
            let regionSize = Layout.regionSize(ofClass: classIndex)
            let place = "class \(classIndex) (\(regionSize >> 10) KiB)"
            if let violation = pool.chunks.integrityViolation(limit: Control.walkLimit) {
                return "\(place), the chunk list: \(violation)"
            }
            // Each chunk and its nodes: where the node says it is, counted per state.
            var chunkBases = Set<UnsafeMutableRawPointer>()
            var inState = [Int](repeating: 0, count: Node.State.allCases.count)
            var regionCount = 0
            var nextChunk = pool.chunks.first
            while let chunkBase = nextChunk {
                nextChunk = pool.chunks.next(after: chunkBase)
                chunkBases.insert(chunkBase)
                let chunk = Chunk(chunkBase)
                guard chunk.classIndex == classIndex, chunk.regionCount >= 1,
                    chunk.byteCount == chunk.regionCount * regionSize
                else {
                    return "\(place): chunk \(chunk.mapping) of class \(chunk.classIndex), "
                        + "\(chunk.regionCount) regions in \(chunk.byteCount) bytes"
                }
                regionCount += chunk.regionCount
                var clean = 0
                for index in 0..<chunk.regionCount {
                    let node = chunk.node(index)
                    let region = "\(place): region \(index) of chunk \(chunk.mapping)"
                    guard node.address == chunk.mapping + index * regionSize, node.chunk == chunk,
                        node.classIndex == classIndex
                    else { return "\(region) has address \(node.address), class \(node.classIndex)" }
                    guard let state = node.checkedState else { return "\(region) has no state" }
                    inState[state.rawValue] += 1
                    if state == .clean { clean += 1 }
                    if state == .live && (node.previous != nil || node.next != nil) {
                        return "\(region) is live but still linked"
                    }
                    if chunk.isOrphaned != (state == .orphaned) {
                        return "\(region) is \(state) in a chunk \(chunk.isOrphaned ? "" : "not ")orphaned"
                    }
                }
                guard chunk.cleanCount == clean else {
                    return "\(place): chunk \(chunk.mapping) counts \(chunk.cleanCount) clean regions, has \(clean)"
                }
            }
            // The pools: each list sound, each node of this class's chunks in the list's
            // state, as many as the count says and as the chunks have in that state.
            for (name, list, count, state) in [
                ("dirty", pool.dirty, pool.dirtyCount, Node.State.dirty),
                ("clean", pool.clean, pool.cleanCount, Node.State.clean),
            ] {
                if let violation = list.integrityViolation(limit: regionCount) {
                    return "\(place), the \(name) pool: \(violation)"
                }
                var length = 0
                var newer = UInt64.max
                var next = list.first
                while let base = next {
                    next = list.next(after: base)
                    let node = Node(base)
                    guard chunkBases.contains(node.chunk.base), node.checkedState == state else {
                        return "\(place): region \(node.address) in the \(name) pool is "
                            + "\(node.checkedState.map { "\($0)" } ?? "stateless") or of another class"
                    }
                    if state == .dirty {
                        guard node.dirtySince <= newer else {
                            return "\(place): the dirty pool is not newest first at \(node.address)"
                        }
                        newer = node.dirtySince
                    }
                    length += 1
                }
                guard length == count, count == inState[state.rawValue] else {
                    return "\(place): the \(name) pool holds \(length) regions, counts \(count), "
                        + "and the chunks have \(inState[state.rawValue]) \(name)"
                }
            }
            cachedPerClass[classIndex] = inState[Node.State.cached.rawValue]
            chunksPerClass.append(chunkBases)
            regionsPerClass.append(regionCount)
        }
        // The thread caches: each stack of its class's cached nodes, as long as its count;
        // the bytes add up; a parked cache is empty; together they hold every cached node.
        var cachesSeen = 0
        var record = firstCache
        while let cache = record {
            record = cache.registryNext
            cachesSeen += 1
            guard cachesSeen <= Control.walkLimit else { return "the thread caches loop" }
            let owned = cache.owned.load(ordering: .relaxed)
            guard owned == 0 || owned == 1 else { return "thread cache \(cache.base) has owned word \(owned)" }
            var bytes = 0
            for classIndex in 0..<Layout.classCount {
                var length = 0
                var next = cache.stack(classIndex).top
                while let node = next {
                    next = node.next
                    length += 1
                    guard length <= regionsPerClass[classIndex] else {
                        return "thread cache \(cache.base), class \(classIndex): the stack loops"
                    }
                    guard chunksPerClass[classIndex].contains(node.chunk.base), node.checkedState == .cached,
                        node.previous == nil
                    else {
                        return "thread cache \(cache.base), class \(classIndex): region \(node.address) is "
                            + "\(node.checkedState.map { "\($0)" } ?? "stateless"), of another class, or in a list"
                    }
                }
                let count = cache.countWord(classIndex).load(ordering: .relaxed)
                guard length == count else {
                    return "thread cache \(cache.base), class \(classIndex): \(length) regions, counts \(count)"
                }
                cachedPerClass[classIndex] -= length
                bytes += length * Layout.regionSize(ofClass: classIndex)
            }
            guard bytes == cache.cachedBytes else {
                return "thread cache \(cache.base) holds \(bytes) bytes, counts \(cache.cachedBytes)"
            }
            guard owned == 1 || bytes == 0 else { return "parked thread cache \(cache.base) holds \(bytes) bytes" }
        }
        if let classIndex = cachedPerClass.firstIndex(where: { $0 != 0 }) {
            return "class \(classIndex): \(cachedPerClass[classIndex]) cached regions are in no thread cache's stack "
                + "(negative: in two)"
        }
        return nil
    }
}
