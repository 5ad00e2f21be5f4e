// LargeAlloc: an allocator only for large objects, in power-of-two size classes, with
// per-thread caches, global dirty and clean pools and a background worker that gives the
// pages of freed regions back to the OS.
//
// # What it is
//
// A request for `capacity` values of `Element` takes a *region* of the smallest power of two
// that holds it, from 64 KiB to 64 GiB (21 classes). Regions are cut from *areas*: big
// mappings, anonymous or backed by a temporary file, mapped a class at a time. A region is
// handed out as a ``Region``: a `~Copyable`, fixed-capacity typed buffer that goes back to
// its allocator, from whatever thread drops it.
//
// ```swift
// let allocator = try LargeAllocator(configuration: .init())
// var samples = try allocator.allocate(Double.self, capacity: 1_000_000)  // an 8 MiB region
// try samples.append(1.5)
// samples.withUnsafeBufferPointer { print($0.reduce(0, +)) }
// // capacity is 1_048_576 (8 MiB / 8); one more append past it throws .capacityExceeded
// ```
//
// # Where a region comes from
//
// 1. The calling thread's cache (a few dirty regions, at most `threadCacheBytes`).
// 2. The class's global *dirty* pool (freed, pages still resident).
// 3. The class's global *clean* pool (pages given back to the OS, or never touched).
// 4. Another thread's cache (*stealing*).
// 5. A new area, under the refill lock, of a size that grows with each refill of the class
//    (slowed by the growth dampener) but never past `maximumAreaBytes`.
//
// A free goes to the freeing thread's cache; past its byte bound, to the dirty pool, or
// with `eagerReturn` straight to the clean pool after `MADV_DONTNEED` (`MADV_REMOVE` for
// file-backed areas). The background worker wakes every `backgroundInterval`, takes up to
// `backgroundBytesPerTick` of the regions that have been dirty for a whole interval from
// each dirty pool, oldest first, advises the pages away and moves them to the clean pool.
// An area whose regions are all clean for `areaIdleAge` is unmapped.
//
// # Where it comes from
//
// The Rust crate lgalloc (Materialize). It improves on the crate's open points: areas are
// unmapped when wholly clean and idle, area growth is bounded, a child process after
// `fork` can allocate and free, and instances (not one global) make it testable. The
// design is in docs/spec/LargeAlloc.md.

import AllocCore
import Glibc
import Synchronization

// MARK: - Public API

/// How a ``LargeAllocator`` behaves. Every field can be changed at run time with
/// ``LargeAllocator/reconfigure(_:)``; new values apply to the next operation that reads
/// them (new areas for the backing, the next tick for the worker's figures).
///
/// ```swift
/// var configuration = LargeAllocConfiguration()
/// configuration.backing = .file(directory: "/var/tmp")
/// configuration.backgroundInterval = .milliseconds(100)
/// configuration.eagerReturn = true
/// let allocator = try LargeAllocator(configuration: configuration)
/// ```
public struct LargeAllocConfiguration: Sendable, Equatable {
    /// What new areas are made of.
    public enum Backing: Sendable, Equatable {
        /// Anonymous private memory; with `hugePages`, areas (aligned to 2 MiB) get
        /// `MADV_HUGEPAGE` so the kernel can back them with transparent huge pages.
        case anonymous(hugePages: Bool)
        /// A temporary file per area, created in `directory`, unlinked at once and mapped
        /// shared: under memory pressure the kernel writes cold pages to the file instead of
        /// swap. The file disappears when its area is unmapped.
        case file(directory: String)
    }

    /// The advice the background worker gives the pages of dirty regions.
    public enum ClearAdvice: Sendable, Equatable {
        /// `MADV_FREE`: the kernel takes the pages lazily, under memory pressure; cheapest
        /// when regions are soon reused, but RSS falls only when the kernel reclaims.
        case free
        /// `MADV_DONTNEED`: the pages go at once and RSS falls.
        case dontNeed
        /// `MADV_REMOVE`: frees the pages and the file's blocks (file-backed areas). The
        /// kernel refuses it on anonymous private memory (EINVAL): the worker then counts a
        /// clear failure per region and leaves the regions dirty.
        case remove
    }

    /// Whether ``LargeAllocator/allocate(_:capacity:)`` serves requests; a disabled
    /// allocator throws ``LargeAllocError/disabled`` (regions already out can still be
    /// used and freed).
    public var isEnabled = true
    /// What new areas are made of.
    public var backing = Backing.anonymous(hugePages: false)
    /// The most bytes of regions a thread's cache holds; 0 disables thread caches.
    public var threadCacheBytes = 32 << 20
    /// Whether a free that does not fit the thread cache gives its pages back at once
    /// (`MADV_DONTNEED`, or `MADV_REMOVE` on file-backed areas) and goes to the clean pool.
    public var eagerReturn = false
    /// How often the background worker wakes; nil: no worker.
    public var backgroundInterval: Duration? = .seconds(1)
    /// The most bytes the worker takes from each class's dirty pool per tick (it always
    /// takes at least one region, so no class waits forever). It takes only regions that
    /// have been dirty for a whole `backgroundInterval`, least recently freed first.
    public var backgroundBytesPerTick = 128 << 20
    /// The worker's advice; nil: `.free` for anonymous areas, `.remove` for file-backed ones.
    public var clearAdvice: ClearAdvice? = nil
    /// The size of a class's first area: 32 MiB, as lgalloc. Classes of that size or
    /// more get one region per area at first.
    public var initialAreaBytes = 32 << 20
    /// The largest area (beyond the single region of a class larger than this): 1 GiB
    /// bounds how much address space and file one refill takes.
    public var maximumAreaBytes = 1 << 30
    /// An area has `initialAreaBytes << (refills >> growthDampener)` bytes (bounded by
    /// `maximumAreaBytes`): 0 doubles each refill, 1 every second refill, and so on.
    public var growthDampener = 1
    /// How long an area's regions must all be clean before the worker unmaps it; nil: never.
    public var areaIdleAge: Duration? = .seconds(10)

    public init() {}

    /// Checks the figures (the directory is checked by the allocator, which creates a file).
    func validate() {
        precondition(threadCacheBytes >= 0, "LargeAllocConfiguration: negative threadCacheBytes \(threadCacheBytes)")
        precondition(
            backgroundBytesPerTick > 0,
            "LargeAllocConfiguration: backgroundBytesPerTick must be positive, not \(backgroundBytesPerTick)")
        precondition(
            initialAreaBytes > 0, "LargeAllocConfiguration: initialAreaBytes must be positive, not \(initialAreaBytes)")
        precondition(
            maximumAreaBytes >= initialAreaBytes,
            "LargeAllocConfiguration: maximumAreaBytes \(maximumAreaBytes) is below initialAreaBytes \(initialAreaBytes)"
        )
        precondition(
            (0...62).contains(growthDampener),
            "LargeAllocConfiguration: growthDampener \(growthDampener) is not in 0...62"
        )
        if let backgroundInterval {
            precondition(
                backgroundInterval > .zero,
                "LargeAllocConfiguration: backgroundInterval must be positive, not \(backgroundInterval)")
        }
        if let areaIdleAge {
            precondition(areaIdleAge >= .zero, "LargeAllocConfiguration: negative areaIdleAge \(areaIdleAge)")
        }
    }
}

/// Why a request failed.
public enum LargeAllocError: Error, Equatable, Sendable {
    /// The allocator is disabled (``LargeAllocConfiguration/isEnabled``).
    case disabled
    /// A capacity of zero or less was asked for.
    case invalidCapacity(Int)
    /// The element type has size zero: a region of nothing is not a large object.
    case zeroSizedElement
    /// `capacity × stride` overflows an `Int`.
    case sizeOverflow(capacity: Int, stride: Int)
    /// More bytes than the largest class (``LargeAllocator/maximumRegionSize``).
    case tooLarge(byteCount: Int)
    /// An append would go past the region's capacity; the region is unchanged.
    case capacityExceeded(capacity: Int)
    /// The kernel refused to map an area (address space or memory exhausted).
    case outOfMemory(SystemError)
    /// A temporary file could not be created or sized in the configured directory (it does
    /// not exist, is not a directory, is not writable, or the disk is full). Nothing is
    /// left behind.
    case io(SystemError)
}

/// A fixed-capacity buffer of `Element` in a region of a ``LargeAllocator``.
///
/// The capacity is what the region's size class holds (at least what was asked) and never
/// changes: ``append(_:)`` past it throws ``LargeAllocError/capacityExceeded(capacity:)``
/// and leaves the region as it was; nothing is ever reallocated. Elements `0..<count` are
/// initialized; the rest of the region is raw memory.
///
/// A region is `~Copyable`: it has one owner, and when the owner drops it (on any thread)
/// its elements are deinitialized and the region goes back to the allocator. It is
/// `Sendable` when `Element` is.
///
/// ```swift
/// var region = try allocator.allocate(UInt64.self, capacity: 100_000)
/// for value in 0..<100_000 { try region.append(UInt64(value)) }
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

    /// Appends `element`.
    ///
    /// - Throws: ``LargeAllocError/capacityExceeded(capacity:)`` when the region is full;
    ///   the region is unchanged.
    @inlinable
    public mutating func append(_ element: consuming Element) throws(LargeAllocError) {
        guard storedCount < capacity else { throw .capacityExceeded(capacity: capacity) }
        (elements + storedCount).initialize(to: element)
        storedCount &+= 1
    }

    /// Appends every element of `buffer`, or none of them.
    ///
    /// - Throws: ``LargeAllocError/capacityExceeded(capacity:)`` when they do not all fit;
    ///   the region is unchanged.
    @inlinable
    public mutating func append(contentsOf buffer: UnsafeBufferPointer<Element>) throws(LargeAllocError) {
        guard buffer.count <= capacity &- storedCount else { throw .capacityExceeded(capacity: capacity) }
        guard let source = buffer.baseAddress else { return }
        (elements + storedCount).initialize(from: source, count: buffer.count)
        storedCount &+= buffer.count
    }

    /// Appends `count` copies of `value`, or nothing.
    ///
    /// - Throws: ``LargeAllocError/capacityExceeded(capacity:)`` when they do not all fit;
    ///   the region is unchanged.
    /// - Precondition: `count >= 0`.
    @inlinable
    public mutating func append(count: Int, repeating value: Element) throws(LargeAllocError) {
        precondition(count >= 0, "Region.append(count: \(count)): negative count")
        guard count <= capacity &- storedCount else { throw .capacityExceeded(capacity: capacity) }
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

    /// The initialized elements as a span, valid while the region is borrowed.
    public var span: Span<Element> {
        @_lifetime(borrow self)
        borrowing get {
            let span = Span(_unsafeStart: elements, count: storedCount)
            return _overrideLifetime(span, borrowing: self)
        }
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

extension Region: @unchecked Sendable where Element: Sendable {}

/// Power-of-two large regions with per-thread caches, global dirty and clean pools, and a
/// background worker (lgalloc's design; see the module comment).
///
/// Each instance is an allocator of its own, with its own areas, pools and worker. It is
/// `Sendable`: every thread may allocate from it, and a region may be dropped on any
/// thread. The instance's memory goes back to the OS (areas unmapped, temporary files
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
    /// The largest region: 64 GiB (areas are reserved without a commit charge, so a
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

    /// An allocator with `configuration`; its first areas are mapped by the first requests.
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
    /// - Throws: ``LargeAllocError/disabled``, ``LargeAllocError/invalidCapacity(_:)``,
    ///   ``LargeAllocError/zeroSizedElement``, ``LargeAllocError/sizeOverflow(capacity:stride:)``,
    ///   ``LargeAllocError/tooLarge(byteCount:)``; from a refill
    ///   ``LargeAllocError/outOfMemory(_:)`` or ``LargeAllocError/io(_:)``.
    @inlinable
    public func allocate<Element>(
        _ type: Element.Type = Element.self, capacity: Int
    ) throws(LargeAllocError) -> Region<Element> {
        guard MemoryLayout<Element>.size > 0 else { throw .zeroSizedElement }
        guard capacity > 0 else { throw .invalidCapacity(capacity) }
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
    /// at its next tick; new areas use the new backing; the thread-cache bound applies to
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

    /// What the kernel reports for each class's areas (/proc/self/smaps): bytes mapped,
    /// resident and dirty, and lazily freed pages not yet taken.
    ///
    /// - Throws: ``LargeAllocError/io(_:)`` when /proc/self/smaps cannot be read.
    public func mappingStatistics() throws(LargeAllocError) -> [LargeAllocMappingStatistics] {
        try control.mappingStatistics()
    }

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

/// Counters of a ``LargeAllocator`` (section 8 of the spec).
public struct LargeAllocStatistics: Sendable, Equatable {
    /// One size class.
    public struct SizeClass: Sendable, Equatable {
        /// The class's region size.
        public var regionByteCount: Int
        /// Areas mapped now, and their bytes.
        public var areas = 0
        public var areaBytes = 0
        /// Bytes of those areas backed by temporary files.
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
        /// Areas mapped, in all.
        public var refills = 0
        /// Regions freed, in all.
        public var deallocations = 0
        /// Frees that gave the pages back at once (`eagerReturn`).
        public var eagerClears = 0
        /// Regions the worker moved from dirty to clean.
        public var backgroundClears = 0
        /// Regions whose `madvise` the kernel refused (they stayed dirty).
        public var clearFailures = 0
        /// Regions taken from another thread's cache.
        public var steals = 0
        /// Areas unmapped by the worker after `areaIdleAge` wholly clean.
        public var unmappedAreas = 0

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
    /// Ticks the worker has run.
    public var workerTicks: Int
    /// The errno of the last `madvise` the kernel refused (0: none).
    public var lastClearError: Int32

    /// A class's counters by region size.
    public func sizeClass(regionByteCount: Int) -> SizeClass? {
        sizeClasses.first { $0.regionByteCount == regionByteCount }
    }
}

/// What the kernel reports for one class's areas.
public struct LargeAllocMappingStatistics: Sendable, Equatable {
    /// The class's region size.
    public var regionByteCount: Int
    /// Bytes of the areas mapped, resident, dirty, and lazily freed but not yet taken.
    public var usage: MappingUsage
}

// MARK: - Fast path

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
        for entry in 0..<ThreadTable.entryCount {
            if table.load(fromByteOffset: entry &* 16, as: Int.self) == id {
                return ThreadCache(table.load(fromByteOffset: entry &* 16 &+ 8, as: UnsafeMutableRawPointer.self))
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
        guard let node = unlinkHead(classIndex) else {
            lock.pointee.unlock()
            return nil
        }
        countAllocation(classIndex)
        lock.pointee.unlock()
        node.state = .live
        return node
    }

    /// Pops a cached region of `classIndex` for another thread (stealing), or nil.
    func pop(classIndex: Int) -> Node? {
        lock.pointee.lock()
        let node = unlinkHead(classIndex)
        lock.pointee.unlock()
        node?.state = .live
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
        node.next = head(classIndex)
        setHead(classIndex, node)
        countWord(classIndex).store(countWord(classIndex).load(ordering: .relaxed) &+ 1, ordering: .relaxed)
        cachedBytes &+= size
        lock.pointee.unlock()
        return (true, closing)
    }

    /// Under the lock: the first region of `classIndex`, taken off the cache.
    @inlinable
    func unlinkHead(_ classIndex: Int) -> Node? {
        guard let node = head(classIndex) else { return nil }
        assert(node.state == .cached, "LargeAlloc: cached region \(node.address) in state \(node.state)")
        setHead(classIndex, node.next)
        countWord(classIndex).store(countWord(classIndex).load(ordering: .relaxed) &- 1, ordering: .relaxed)
        cachedBytes &-= Layout.regionSize(ofClass: classIndex)
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

// MARK: - Slow path

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
        return countAllocation(try mapArea(classIndex: classIndex), cache: cache)
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
    /// it fits), else in the class counters and the global live word. A region of an area
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
            let advice: MemoryAdvice = node.area.isFileBacked ? .remove : .dontNeed
            if (try? SystemMemory.advise(node.address, byteCount: node.area.regionSize, advice)) != nil {
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

    /// A region of `classIndex` from another thread's cache (a thread that freed it and has
    /// not allocated since, or that exited inside a fork child), or nil.
    func steal(classIndex: Int, except own: ThreadCache?) -> Node? {
        var record = ThreadCache(optional: recordsHead.load(ordering: .acquiring))
        while let cache = record {
            record = cache.registryNext
            guard cache != own, cache.countWord(classIndex).load(ordering: .relaxed) > 0 else { continue }
            if let node = cache.pop(classIndex: classIndex) { return node }
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
        table.storeBytes(of: cache.base, toByteOffset: entry * 16 + 8, as: UnsafeMutableRawPointer.self)
        table.storeBytes(of: id, toByteOffset: entry * 16, as: Int.self)
        return cache
    }

    /// A parked cache (its thread exited) claimed with a compare-exchange, or a new one
    /// pushed onto the list of caches, which only grows until the allocator is destroyed.
    /// Under the refill lock.
    func adoptOrCreateCache() -> ThreadCache {
        var record = ThreadCache(optional: recordsHead.load(ordering: .acquiring))
        while let cache = record {
            if cache.owned.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged {
                return cache
            }
            record = cache.registryNext
        }
        let cache = ThreadCache.create()
        cache.registryNext = ThreadCache(optional: recordsHead.load(ordering: .relaxed))
        recordsHead.store(Int(bitPattern: cache.base), ordering: .releasing)
        return cache
    }

    /// Moves every region of `cache` to the dirty pools.
    func empty(_ cache: ThreadCache) {
        var chains: [(Int, Node)] = []
        cache.lock.pointee.withLock {
            for classIndex in 0..<Layout.classCount {
                if let head = cache.head(classIndex) { chains.append((classIndex, head)) }
                cache.setHead(classIndex, nil)
                cache.countWord(classIndex).store(0, ordering: .relaxed)
            }
            cache.cachedBytes = 0
        }
        for (classIndex, head) in chains {
            let pool = pool(classIndex)
            pool.withLock {
                var next: Node? = head
                while let node = next {
                    next = node.next
                    pool.pushDirty(node)
                }
            }
        }
    }

    /// Maps a new area for `classIndex` (under the refill lock); one region is returned
    /// live, the others join the clean pool untouched.
    func mapArea(classIndex: Int) throws(LargeAllocError) -> Node {
        let pool = pool(classIndex)
        let regionSize = Layout.regionSize(ofClass: classIndex)
        let regionCount = Layout.regionCount(
            regionSize: regionSize, refills: pool.refills, initialAreaBytes: word(.initialAreaBytes),
            maximumAreaBytes: word(.maximumAreaBytes), growthDampener: word(.growthDampener))
        let byteCount = regionCount * regionSize
        let backing = word(.backing)
        let base: UnsafeMutableRawPointer
        if backing == Control.fileBacking {
            base = try Control.mapFile(byteCount: byteCount, directory: String(cString: directory!))
        } else {
            base = try Control.mapAnonymous(byteCount: byteCount, hugePages: backing == Control.hugePageBacking)
        }
        let area = Area.create(
            base: base, byteCount: byteCount, classIndex: classIndex, regionCount: regionCount,
            isFileBacked: backing == Control.fileBacking)
        pool.refills += 1
        pool.counters.add(1, to: .refills)
        pool.counters.add(1, to: .areas)
        pool.counters.add(byteCount, to: .areaBytes)
        let first = area.node(0)
        pool.withLock {
            pool.link(area)
            for index in 1..<regionCount { pool.pushClean(area.node(index)) }
        }
        first.state = .live
        return first
    }

    static func mapAnonymous(byteCount: Int, hugePages: Bool) throws(LargeAllocError) -> UnsafeMutableRawPointer {
        // Reserved without a commit charge (MAP_NORESERVE), aligned to 2 MiB so that huge
        // pages can back whole regions of 2 MiB and more, between two inaccessible guard
        // pages: the kernel never merges the area with a neighbouring mapping, so
        // /proc/self/smaps reports it on its own (mapping statistics stay exact).
        let alignment = SystemInfo.hugePageSize
        let guardSize = Area.guardSize
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
    /// unmapping the area removes it.
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

// MARK: - Background worker

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
    /// to the clean pool, then areas wholly clean for `areaIdleAge` unmapped.
    func tick() {
        let budget = word(.bytesPerTick)
        let minimumDirtyAge = UInt64(max(0, word(.intervalNanoseconds)))
        let configuredAdvice = word(.clearAdvice)
        let idleAge = word(.areaIdleNanoseconds)
        for classIndex in 0..<Layout.classCount {
            let pool = pool(classIndex)
            let regionSize = Layout.regionSize(ofClass: classIndex)
            var taken: Node? = nil
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
                    node.next = taken
                    taken = node
                    takenBytes += regionSize
                }
            }
            var cleared: Node? = nil
            var failed: Node? = nil
            var clearedCount = 0
            var failedCount = 0
            while let node = taken {
                taken = node.next
                let advice = Control.advice(configured: configuredAdvice, fileBacked: node.area.isFileBacked)
                do {
                    try SystemMemory.advise(node.address, byteCount: regionSize, advice)
                    node.next = cleared
                    cleared = node
                    clearedCount += 1
                } catch {
                    lastClearError.store(Int(error.code), ordering: .relaxed)
                    node.next = failed
                    failed = node
                    failedCount += 1
                }
            }
            if clearedCount + failedCount > 0 {
                pool.withLock {
                    while let node = cleared {
                        cleared = node.next
                        pool.pushClean(node)
                    }
                    while let node = failed {
                        failed = node.next
                        pool.pushDirty(node)
                    }
                }
                pool.counters.add(clearedCount, to: .backgroundClears)
                pool.counters.add(failedCount, to: .clearFailures)
            }
            if idleAge >= 0 { unmapIdleAreas(pool, idleAge: UInt64(idleAge)) }
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

    /// Unmaps the areas of `pool` whose regions have all been clean for `idleAge` ns.
    func unmapIdleAreas(_ pool: ClassPool, idleAge: UInt64) {
        var idle: [Area] = []
        pool.withLock {
            // Read under the lock: `wholeCleanSince` is set under it, so it is never later.
            let now = SystemInfo.monotonicNanoseconds()
            var next = pool.firstArea
            while let area = next {
                next = area.next
                guard !area.isOrphaned, area.cleanCount == area.regionCount, now - area.wholeCleanSince >= idleAge
                else { continue }
                for index in 0..<area.regionCount { pool.unlinkClean(area.node(index)) }
                pool.unlink(area)
                idle.append(area)
            }
        }
        for area in idle {
            pool.counters.add(-1, to: .areas)
            pool.counters.add(-area.byteCount, to: .areaBytes)
            pool.counters.add(1, to: .unmappedAreas)
            area.destroy()
        }
    }
}

// MARK: - Layout and constants

/// The numbers every part agrees on.
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

    /// Regions in a class's next area: `initialAreaBytes / regionSize` (at least one),
    /// doubled every `2^growthDampener` refills, at most `maximumAreaBytes / regionSize`
    /// (at least one). Bounded growth keeps refills rare without mapping without end.
    static func regionCount(
        regionSize: Int, refills: Int, initialAreaBytes: Int, maximumAreaBytes: Int, growthDampener: Int
    ) -> Int {
        let first = max(1, initialAreaBytes / regionSize)
        let limit = max(1, maximumAreaBytes / regionSize)
        let doublings = min(refills >> growthDampener, 62 - log2Floor(first))
        return min(first << doublings, limit)
    }
}

/// A region's descriptor, 56 bytes in its area's metadata (never in the region itself, so
/// pooling a clean region touches none of its pages).
///
/// ```
/// 0 next   8 previous (pools)   16 address   24 area   32 state   40 class   48 dirty since (ns)
/// ```
@usableFromInline
struct Node: Equatable {
    @usableFromInline static let byteCount = 56

    /// Where a region is.
    @usableFromInline
    enum State: Int {
        case live, cached, dirty, clean, clearing
        /// Its area is shared with the parent process (file-backed, inherited across fork).
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
    var next: Node? {
        get { Node(optional: base.load(as: UnsafeMutableRawPointer?.self)) }
        nonmutating set { base.storeBytes(of: newValue?.base, as: UnsafeMutableRawPointer?.self) }
    }

    var previous: Node? {
        get { Node(optional: base.load(fromByteOffset: 8, as: UnsafeMutableRawPointer?.self)) }
        nonmutating set { base.storeBytes(of: newValue?.base, toByteOffset: 8, as: UnsafeMutableRawPointer?.self) }
    }

    @inlinable
    var address: UnsafeMutableRawPointer { base.load(fromByteOffset: 16, as: UnsafeMutableRawPointer.self) }

    var area: Area { Area(base.load(fromByteOffset: 24, as: UnsafeMutableRawPointer.self)) }

    @inlinable
    var state: State {
        get { State(rawValue: base.load(fromByteOffset: 32, as: Int.self))! }
        nonmutating set { base.storeBytes(of: newValue.rawValue, toByteOffset: 32, as: Int.self) }
    }

    @inlinable
    var classIndex: Int { base.load(fromByteOffset: 40, as: Int.self) }

    /// When the region entered the dirty pool (monotonic ns).
    var dirtySince: UInt64 {
        get { base.load(fromByteOffset: 48, as: UInt64.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 48, as: UInt64.self) }
    }
}

/// An area: one mapping cut into regions of one class, with its header and the regions'
/// nodes in one block of malloc'd metadata (the mapping holds only user data).
///
/// ```
/// 0 next   8 previous   16 base   24 byte count   32 class   40 region count
/// 48 clean count   56 wholly clean since (ns)   64 file-backed   72 orphaned   128 nodes
/// ```
struct Area: Equatable {
    static let nodesOffset = 128
    let base: UnsafeMutableRawPointer

    init(_ base: UnsafeMutableRawPointer) { self.base = base }

    init?(optional base: UnsafeMutableRawPointer?) {
        guard let base else { return nil }
        self.base = base
    }

    static func create(
        base mapping: UnsafeMutableRawPointer, byteCount: Int, classIndex: Int, regionCount: Int, isFileBacked: Bool
    ) -> Area {
        let header = UnsafeMutableRawPointer.allocate(
            byteCount: nodesOffset + regionCount * Node.byteCount, alignment: 64)
        let area = Area(header)
        header.storeBytes(of: nil, as: UnsafeMutableRawPointer?.self)
        header.storeBytes(of: nil, toByteOffset: 8, as: UnsafeMutableRawPointer?.self)
        header.storeBytes(of: mapping, toByteOffset: 16, as: UnsafeMutableRawPointer.self)
        header.storeBytes(of: byteCount, toByteOffset: 24, as: Int.self)
        header.storeBytes(of: classIndex, toByteOffset: 32, as: Int.self)
        header.storeBytes(of: regionCount, toByteOffset: 40, as: Int.self)
        area.cleanCount = 0
        area.wholeCleanSince = 0
        header.storeBytes(of: isFileBacked ? 1 : 0, toByteOffset: 64, as: Int.self)
        area.isOrphaned = false
        let regionSize = Layout.regionSize(ofClass: classIndex)
        for index in 0..<regionCount {
            let node = area.node(index)
            node.next = nil
            node.previous = nil
            node.base.storeBytes(of: mapping + index * regionSize, toByteOffset: 16, as: UnsafeMutableRawPointer.self)
            node.base.storeBytes(of: header, toByteOffset: 24, as: UnsafeMutableRawPointer.self)
            node.state = .clearing
            node.base.storeBytes(of: classIndex, toByteOffset: 40, as: Int.self)
        }
        return area
    }

    /// The inaccessible page on each side of an anonymous area.
    static var guardSize: Int { SystemInfo.pageSize }

    /// Unmaps the area (its guard pages too; its file, if any, goes with it) and frees its
    /// metadata.
    func destroy() {
        if isFileBacked {
            try? SystemMemory.unmap(mapping, byteCount: byteCount)
        } else {
            try? SystemMemory.unmap(mapping - Area.guardSize, byteCount: byteCount + 2 * Area.guardSize)
        }
        base.deallocate()
    }

    var next: Area? {
        get { Area(optional: base.load(as: UnsafeMutableRawPointer?.self)) }
        nonmutating set { base.storeBytes(of: newValue?.base, as: UnsafeMutableRawPointer?.self) }
    }
    var previous: Area? {
        get { Area(optional: base.load(fromByteOffset: 8, as: UnsafeMutableRawPointer?.self)) }
        nonmutating set { base.storeBytes(of: newValue?.base, toByteOffset: 8, as: UnsafeMutableRawPointer?.self) }
    }
    var mapping: UnsafeMutableRawPointer { base.load(fromByteOffset: 16, as: UnsafeMutableRawPointer.self) }
    var byteCount: Int { base.load(fromByteOffset: 24, as: Int.self) }
    var classIndex: Int { base.load(fromByteOffset: 32, as: Int.self) }
    var regionCount: Int { base.load(fromByteOffset: 40, as: Int.self) }
    var regionSize: Int { Layout.regionSize(ofClass: classIndex) }
    var cleanCount: Int {
        get { base.load(fromByteOffset: 48, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 48, as: Int.self) }
    }
    var wholeCleanSince: UInt64 {
        get { base.load(fromByteOffset: 56, as: UInt64.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 56, as: UInt64.self) }
    }
    var isFileBacked: Bool { base.load(fromByteOffset: 64, as: Int.self) != 0 }
    var isOrphaned: Bool {
        get { base.load(fromByteOffset: 72, as: Int.self) != 0 }
        nonmutating set { base.storeBytes(of: newValue ? 1 : 0, toByteOffset: 72, as: Int.self) }
    }

    func node(_ index: Int) -> Node {
        assert(index >= 0 && index < regionCount, "LargeAlloc: area \(mapping) has no region \(index)")
        return Node(base + Area.nodesOffset + index * Node.byteCount)
    }
}

/// Per-class events, counted with relaxed atomic adds.
@usableFromInline
enum ClassEvent: Int, CaseIterable {
    case areas, areaBytes, allocations, slowPaths, refills, deallocations
    case eagerClears, backgroundClears, clearFailures, steals, unmappedAreas
}

/// A size class's global state, in the control block: the dirty pool (a doubly-linked
/// list: allocation takes the most recently freed region, whose pages are likeliest still
/// in the CPU caches, and the worker the least recently freed one), the clean pool (a
/// doubly-linked list, so an idle area's regions can be taken out of it), the list of
/// areas, all under one spin lock (critical sections are a few pointer moves); and its
/// counters.
///
/// ```
/// 0 lock   8 dirty head   16 dirty count   24 clean head   32 clean count   40 areas
/// 48 refills (under the refill lock)   56 dirty tail   64 counters (ClassEvent)
/// ```
@usableFromInline
struct ClassPool {
    @usableFromInline static let byteCount = 64 + ClassEvent.allCases.count * 8
    @usableFromInline let base: UnsafeMutableRawPointer

    @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }

    func initialize() {
        base.bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        for offset in stride(from: 8, to: 64, by: 8) { base.storeBytes(of: 0, toByteOffset: offset, as: Int.self) }
        _ = Counters<ClassEvent>(initializingAt: base + 64)
    }

    @inlinable
    var counters: Counters<ClassEvent> { Counters(at: base + 64) }

    var lock: UnsafeMutablePointer<SpinLock> { base.assumingMemoryBound(to: SpinLock.self) }

    func withLock<Result>(_ body: () -> Result) -> Result {
        lock.pointee.lock()
        defer { lock.pointee.unlock() }
        return body()
    }

    var dirtyHead: Node? {
        get { Node(optional: base.load(fromByteOffset: 8, as: UnsafeMutableRawPointer?.self)) }
        nonmutating set { base.storeBytes(of: newValue?.base, toByteOffset: 8, as: UnsafeMutableRawPointer?.self) }
    }
    var dirtyCount: Int {
        get { base.load(fromByteOffset: 16, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 16, as: Int.self) }
    }
    var cleanHead: Node? {
        get { Node(optional: base.load(fromByteOffset: 24, as: UnsafeMutableRawPointer?.self)) }
        nonmutating set { base.storeBytes(of: newValue?.base, toByteOffset: 24, as: UnsafeMutableRawPointer?.self) }
    }
    var cleanCount: Int {
        get { base.load(fromByteOffset: 32, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 32, as: Int.self) }
    }
    var firstArea: Area? {
        get { Area(optional: base.load(fromByteOffset: 40, as: UnsafeMutableRawPointer?.self)) }
        nonmutating set { base.storeBytes(of: newValue?.base, toByteOffset: 40, as: UnsafeMutableRawPointer?.self) }
    }
    var refills: Int {
        get { base.load(fromByteOffset: 48, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 48, as: Int.self) }
    }
    var dirtyTail: Node? {
        get { Node(optional: base.load(fromByteOffset: 56, as: UnsafeMutableRawPointer?.self)) }
        nonmutating set { base.storeBytes(of: newValue?.base, toByteOffset: 56, as: UnsafeMutableRawPointer?.self) }
    }

    // Everything below runs under the lock.

    func pushDirty(_ node: Node) {
        node.state = .dirty
        node.dirtySince = SystemInfo.monotonicNanoseconds()
        node.previous = nil
        node.next = dirtyHead
        if let head = dirtyHead { head.previous = node } else { dirtyTail = node }
        dirtyHead = node
        dirtyCount += 1
    }

    /// The most recently freed dirty region.
    func popDirty() -> Node? {
        guard let node = dirtyHead else { return nil }
        unlinkDirty(node)
        return node
    }

    /// The least recently freed dirty region if it has been dirty since `cutoff` or
    /// earlier: the one the worker clears first.
    func popOldestDirty(dirtySinceAtMost cutoff: UInt64) -> Node? {
        guard let node = dirtyTail, node.dirtySince <= cutoff else { return nil }
        unlinkDirty(node)
        return node
    }

    func unlinkDirty(_ node: Node) {
        assert(node.state == .dirty, "LargeAlloc: dirty region \(node.address) in state \(node.state)")
        if let previous = node.previous { previous.next = node.next } else { dirtyHead = node.next }
        if let next = node.next { next.previous = node.previous } else { dirtyTail = node.previous }
        dirtyCount -= 1
        node.state = .live
    }

    func pushClean(_ node: Node) {
        node.state = .clean
        node.previous = nil
        node.next = cleanHead
        cleanHead?.previous = node
        cleanHead = node
        cleanCount += 1
        let area = node.area
        area.cleanCount += 1
        assert(area.cleanCount <= area.regionCount, "LargeAlloc: area \(area.mapping) has too many clean regions")
        if area.cleanCount == area.regionCount { area.wholeCleanSince = SystemInfo.monotonicNanoseconds() }
    }

    func unlinkClean(_ node: Node) {
        assert(node.state == .clean, "LargeAlloc: region \(node.address) is not clean but \(node.state)")
        if let previous = node.previous { previous.next = node.next } else { cleanHead = node.next }
        node.next?.previous = node.previous
        cleanCount -= 1
        node.area.cleanCount -= 1
        node.state = .live
    }

    /// A dirty region if there is one (its pages are resident: cheapest to reuse), else a
    /// clean one.
    func popDirtyOrClean() -> Node? {
        if let node = popDirty() { return node }
        guard let node = cleanHead else { return nil }
        unlinkClean(node)
        return node
    }

    func link(_ area: Area) {
        area.previous = nil
        area.next = firstArea
        firstArea?.previous = area
        firstArea = area
    }

    func unlink(_ area: Area) {
        if let previous = area.previous { previous.next = area.next } else { firstArea = area.next }
        area.next?.previous = area.previous
    }
}

/// A thread's cache for one allocator: per class a stack of regions and the counts of
/// allocations and frees made through it, under a spin lock that only stealing threads
/// contend for. Made when a thread first needs one, parked when it exits, adopted by a
/// later thread; freed with the allocator.
///
/// `live` is the net number of regions allocated minus freed through this cache (it may
/// be negative: a region allocated here and freed by another thread). When the handle
/// goes, ``Control/close()`` moves it to the allocator's global word and sets
/// `transferred`; frees after that are counted there.
///
/// ```
/// 0 lock   8 next cache of the allocator   16 owned (1) or parked (0)   24 cached bytes
/// 32 live   40 transferred
/// 64 per class, 32 bytes: head, count, allocations, deallocations (the last three
///    atomic words, written under the lock, read by stealers and statistics)
/// ```
@usableFromInline
struct ThreadCache: Equatable {
    static let byteCount = 64 + Layout.classCount * 32
    @usableFromInline let base: UnsafeMutableRawPointer

    @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }

    init?(optional base: UnsafeMutableRawPointer?) {
        guard let base else { return nil }
        self.base = base
    }

    init?(optional address: Int) {
        guard let base = UnsafeMutableRawPointer(bitPattern: address) else { return nil }
        self.base = base
    }

    /// A new cache, owned by the calling thread.
    static func create() -> ThreadCache {
        let base = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
        base.bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        _ = AtomicWord(initializingAt: base + 16, to: 1)
        let cache = ThreadCache(base)
        for classIndex in 0..<Layout.classCount {
            _ = AtomicWord(initializingAt: cache.countWord(classIndex).address, to: 0)
            _ = AtomicWord(initializingAt: cache.allocationsWord(classIndex).address, to: 0)
            _ = AtomicWord(initializingAt: cache.deallocationsWord(classIndex).address, to: 0)
        }
        return cache
    }

    @inlinable
    var lock: UnsafeMutablePointer<SpinLock> { base.assumingMemoryBound(to: SpinLock.self) }

    var registryNext: ThreadCache? {
        get { ThreadCache(optional: base.load(fromByteOffset: 8, as: UnsafeMutableRawPointer?.self)) }
        nonmutating set { base.storeBytes(of: newValue?.base, toByteOffset: 8, as: UnsafeMutableRawPointer?.self) }
    }

    var owned: AtomicWord { AtomicWord(at: base + 16) }

    @inlinable
    var cachedBytes: Int {
        get { base.load(fromByteOffset: 24, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 24, as: Int.self) }
    }

    @inlinable
    var live: Int {
        get { base.load(fromByteOffset: 32, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 32, as: Int.self) }
    }

    @inlinable
    var isTransferred: Bool {
        get { base.load(fromByteOffset: 40, as: Bool.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 40, as: Bool.self) }
    }

    @inlinable
    func head(_ classIndex: Int) -> Node? {
        Node(optional: base.load(fromByteOffset: 64 &+ classIndex &* 32, as: UnsafeMutableRawPointer?.self))
    }

    @inlinable
    func setHead(_ classIndex: Int, _ node: Node?) {
        base.storeBytes(of: node?.base, toByteOffset: 64 &+ classIndex &* 32, as: UnsafeMutableRawPointer?.self)
    }

    @inlinable
    func countWord(_ classIndex: Int) -> AtomicWord { AtomicWord(at: base + (72 &+ classIndex &* 32)) }

    @inlinable
    func allocationsWord(_ classIndex: Int) -> AtomicWord { AtomicWord(at: base + (80 &+ classIndex &* 32)) }

    @inlinable
    func deallocationsWord(_ classIndex: Int) -> AtomicWord { AtomicWord(at: base + (88 &+ classIndex &* 32)) }
}

/// The thread-local table: `entryCount` pairs (allocator id, thread cache) in malloc'd
/// memory, found through ``ThreadLocalSlot/largeAlloc``. Ids are never reused, so an entry
/// of a destroyed allocator never matches again; the exit hook skips it.
@usableFromInline
enum ThreadTable {
    /// Allocators one thread can cache for at once; a thread that uses more (all alive)
    /// goes to the global pools for the others.
    @inlinable static var entryCount: Int { 8 }

    /// The calling thread's table, made and installed (arming the exit hook) if needed.
    static func current() -> UnsafeMutableRawPointer? {
        if let table = ThreadLocalSlot.largeAlloc.value { return table }
        let table = UnsafeMutableRawPointer.allocate(byteCount: entryCount * 16, alignment: 16)
        table.initializeMemory(as: UInt8.self, repeating: 0, count: entryCount * 16)
        // If arming fails the cache still works; it is just not returned at thread exit
        // (other threads can still steal from it).
        try? ThreadLocalSlot.largeAlloc.install(table)
        return table
    }

    /// A free entry of `table`; entries of destroyed allocators are cleared to make room.
    static func freeEntry(_ table: UnsafeMutableRawPointer) -> Int? {
        func free() -> Int? {
            (0..<entryCount).first { table.load(fromByteOffset: $0 * 16, as: Int.self) == 0 }
        }
        if let entry = free() { return entry }
        LiveAllocators.withLock {
            for entry in 0..<entryCount
            where LiveAllocators.find(id: table.load(fromByteOffset: entry * 16, as: Int.self)) == nil {
                table.storeBytes(of: 0, toByteOffset: entry * 16, as: Int.self)
            }
        }
        return free()
    }

    /// The exit hook: each live allocator's cache is emptied into its dirty pools and parked.
    static let threadExitHook: @convention(c) (UnsafeMutableRawPointer?) -> Void = { table in
        guard let table else { return }
        for entry in 0..<entryCount {
            let id = table.load(fromByteOffset: entry * 16, as: Int.self)
            guard id != 0 else { continue }
            let cache = ThreadCache(table.load(fromByteOffset: entry * 16 + 8, as: UnsafeMutableRawPointer.self))
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

/// The allocator's state, in one malloc'd block: configuration words (atomics, read on
/// the slow paths), locks, the list of thread caches, the worker's futex word, and the 21
/// class pools.
///
/// ```
/// 0 live word   8 id   16…104 configuration words (Control.Word)   104 directory (C string)
/// 112 refill lock   120 thread caches   128 worker word   136 worker ticks
/// 144 next live allocator   152 last clear error   160 closing   192 class pools
/// ```
///
/// The live word counts regions allocated minus freed by threads without a cache; while
/// the handle lives it may be negative (each cache counts its own share, so the fast path
/// writes no shared line). ``close()`` adds the caches' shares and `closedFlag`; from then
/// on the word is `closedFlag` + the regions still live, and the free that brings it to
/// `closedFlag` destroys the allocator.
///
/// ```
/// ```
@usableFromInline
struct Control: @unchecked Sendable, Equatable {
    @usableFromInline let base: UnsafeMutableRawPointer

    @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }

    @usableFromInline static let poolsOffset = 192
    static let byteCount = poolsOffset + Layout.classCount * ClassPool.byteCount

    /// The configuration words, at `16 + 8 × rawValue`.
    enum Word: Int {
        case enabled, threadCacheBytes, eagerReturn, growthDampener, bytesPerTick, intervalNanoseconds
        case areaIdleNanoseconds, backing, clearAdvice, initialAreaBytes, maximumAreaBytes
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

    /// The layouts of section 3 of the spec: a lock fits its 8-byte slot, the pool
    /// counters end where the next pool starts, the per-class blocks are where the
    /// diagrams put them.
    static var layoutIsPinned: Bool {
        MemoryLayout<SpinLock>.size <= 8 && MemoryLayout<Int>.size == 8
            && ClassPool.byteCount == 64 + 11 * 8 && ClassEvent.allCases.count == 11
            && ThreadCache.byteCount == 64 + 21 * 32 && Node.byteCount == 7 * 8 && Area.nodesOffset >= 80
            && poolsOffset >= 168 && byteCount == poolsOffset + 21 * ClassPool.byteCount
    }

    static func create() -> Control {
        assert(layoutIsPinned, "LargeAlloc: a header layout no longer matches its diagram")
        let base = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: poolsOffset)
        let control = Control(base)
        _ = AtomicWord(initializingAt: base, to: 0)
        base.storeBytes(
            of: LiveAllocators.nextID.wrappingAdd(1, ordering: .relaxed).oldValue, toByteOffset: 8, as: Int.self)
        for word in stride(from: 16, to: 104, by: 8) { _ = AtomicWord(initializingAt: base + word, to: 0) }
        (base + 112).bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        _ = AtomicWord(initializingAt: base + 120, to: 0)
        _ = AtomicWord(initializingAt: base + 128, to: WorkerState.running)
        _ = AtomicWord(initializingAt: base + 136, to: 0)
        _ = AtomicWord(initializingAt: base + 152, to: 0)
        for classIndex in 0..<Layout.classCount { control.pool(classIndex).initialize() }
        return control
    }

    @usableFromInline var liveWord: AtomicWord { AtomicWord(at: base) }
    /// Set in the live word by `close()`; counts stay far below it.
    @usableFromInline static var closedFlag: Int { 1 << 62 }

    /// Whether the handle is gone (no cache may be made any more); under the refill lock.
    var isClosing: Bool {
        get { base.load(fromByteOffset: 160, as: Bool.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 160, as: Bool.self) }
    }
    @inlinable var id: Int { base.load(fromByteOffset: 8, as: Int.self) }

    func word(_ word: Word) -> Int { AtomicWord(at: base + 16 + word.rawValue * 8).load(ordering: .relaxed) }

    func setWord(_ word: Word, _ value: Int) {
        AtomicWord(at: base + 16 + word.rawValue * 8).store(value, ordering: .relaxed)
    }

    @inlinable
    var isEnabled: Bool { AtomicWord(at: base + 16).load(ordering: .relaxed) != 0 }

    @inlinable
    var threadCacheBytes: Int { AtomicWord(at: base + 24).load(ordering: .relaxed) }

    var eagerReturn: Bool { word(.eagerReturn) != 0 }

    /// The directory of file-backed areas; replaced and read under the refill lock.
    var directory: UnsafeMutablePointer<CChar>? {
        get { base.load(fromByteOffset: 104, as: UnsafeMutablePointer<CChar>?.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 104, as: UnsafeMutablePointer<CChar>?.self) }
    }

    var refillLock: UnsafeMutablePointer<SpinLock> { (base + 112).assumingMemoryBound(to: SpinLock.self) }
    var recordsHead: AtomicWord { AtomicWord(at: base + 120) }
    var workerWord: AtomicWord { AtomicWord(at: base + 128) }
    var workerTicks: AtomicWord { AtomicWord(at: base + 136) }
    /// The next live allocator (under the global lock).
    var nextLive: Control? {
        get { base.load(fromByteOffset: 144, as: UnsafeMutableRawPointer?.self).map(Control.init) }
        nonmutating set { base.storeBytes(of: newValue?.base, toByteOffset: 144, as: UnsafeMutableRawPointer?.self) }
    }
    var lastClearError: AtomicWord { AtomicWord(at: base + 152) }

    @inlinable
    func pool(_ classIndex: Int) -> ClassPool {
        ClassPool(base + (Control.poolsOffset &+ classIndex &* ClassPool.byteCount))
    }

    /// Stores `configuration`'s figures (the caller has validated them).
    func apply(_ configuration: LargeAllocConfiguration) {
        setWord(.enabled, configuration.isEnabled ? 1 : 0)
        setWord(.threadCacheBytes, configuration.threadCacheBytes)
        setWord(.eagerReturn, configuration.eagerReturn ? 1 : 0)
        setWord(.growthDampener, configuration.growthDampener)
        setWord(.bytesPerTick, configuration.backgroundBytesPerTick)
        setWord(.intervalNanoseconds, configuration.backgroundInterval.map(Control.nanoseconds) ?? 0)
        setWord(.areaIdleNanoseconds, configuration.areaIdleAge.map(Control.nanoseconds) ?? -1)
        let advice: Int
        switch configuration.clearAdvice {
        case nil: advice = ClearAdviceCode.automatic
        case .free: advice = ClearAdviceCode.free
        case .dontNeed: advice = ClearAdviceCode.dontNeed
        case .remove: advice = ClearAdviceCode.remove
        }
        setWord(.clearAdvice, advice)
        setWord(.initialAreaBytes, configuration.initialAreaBytes)
        setWord(.maximumAreaBytes, configuration.maximumAreaBytes)
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

    static func nanoseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        let (total, overflow) = Int(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        let (sum, sumOverflow) = total.addingReportingOverflow(Int(attoseconds / 1_000_000_000))
        return overflow || sumOverflow ? Int.max : sum
    }

    /// Unmaps every area and frees every cache and the block: the last reference is gone.
    @usableFromInline @inline(never)
    func destroy() {
        LiveAllocators.unregister(self)
        for classIndex in 0..<Layout.classCount {
            var next = pool(classIndex).firstArea
            while let area = next {
                next = area.next
                area.destroy()
            }
        }
        var record = ThreadCache(optional: recordsHead.load(ordering: .acquiring))
        while let cache = record {
            record = cache.registryNext
            cache.base.deallocate()
        }
        free(directory)
        base.deallocate()
    }

    // MARK: Statistics

    func statistics() -> LargeAllocStatistics {
        var classes = (0..<Layout.classCount).map {
            LargeAllocStatistics.SizeClass(regionByteCount: Layout.regionSize(ofClass: $0))
        }
        var cacheCount = 0
        var record = ThreadCache(optional: recordsHead.load(ordering: .acquiring))
        while let cache = record {
            cacheCount += 1
            for classIndex in 0..<Layout.classCount {
                classes[classIndex].threadRegions += cache.countWord(classIndex).load(ordering: .relaxed)
                classes[classIndex].allocations += cache.allocationsWord(classIndex).load(ordering: .relaxed)
                classes[classIndex].deallocations += cache.deallocationsWord(classIndex).load(ordering: .relaxed)
            }
            record = cache.registryNext
        }
        for classIndex in 0..<Layout.classCount {
            let pool = pool(classIndex)
            pool.withLock {
                classes[classIndex].dirtyRegions = pool.dirtyCount
                classes[classIndex].cleanRegions = pool.cleanCount
                var fileBytes = 0
                var next = pool.firstArea
                while let area = next {
                    if area.isFileBacked { fileBytes += area.byteCount }
                    next = area.next
                }
                classes[classIndex].fileBytes = fileBytes
            }
            let counters = pool.counters
            classes[classIndex].areas = counters.value(of: .areas)
            classes[classIndex].areaBytes = counters.value(of: .areaBytes)
            classes[classIndex].allocations += counters.value(of: .allocations)
            classes[classIndex].slowPaths = counters.value(of: .slowPaths)
            classes[classIndex].refills = counters.value(of: .refills)
            classes[classIndex].deallocations += counters.value(of: .deallocations)
            classes[classIndex].eagerClears = counters.value(of: .eagerClears)
            classes[classIndex].backgroundClears = counters.value(of: .backgroundClears)
            classes[classIndex].clearFailures = counters.value(of: .clearFailures)
            classes[classIndex].steals = counters.value(of: .steals)
            classes[classIndex].unmappedAreas = counters.value(of: .unmappedAreas)
            classes[classIndex].liveRegions = classes[classIndex].allocations - classes[classIndex].deallocations
        }
        return LargeAllocStatistics(
            sizeClasses: classes, threadCaches: cacheCount, workerTicks: workerTicks.load(ordering: .relaxed),
            lastClearError: Int32(lastClearError.load(ordering: .relaxed)))
    }

    func mappingStatistics() throws(LargeAllocError) -> [LargeAllocMappingStatistics] {
        var ranges: [Range<Int>] = []
        var classOfRange: [Int] = []
        for classIndex in 0..<Layout.classCount {
            let pool = pool(classIndex)
            pool.withLock {
                var next = pool.firstArea
                while let area = next {
                    let start = Int(bitPattern: area.mapping)
                    ranges.append(start..<(start + area.byteCount))
                    classOfRange.append(classIndex)
                    next = area.next
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

    // MARK: fork

    // The forking thread takes every lock of every live allocator before fork (global lock,
    // then per allocator: refill lock, thread caches, class pools: the order the code
    // nests them in) and releases them on both sides, so the child never inherits a lock
    // held by a thread it does not have. In the child, file-backed areas are shared with
    // the parent (MAP_SHARED): their free regions leave the pools and caches, and their
    // regions are dropped when freed, so the child never writes memory the parent uses.
    // Anonymous areas are copy-on-write, the child's own. The worker thread is not copied.

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

    func forEachCache(_ body: (ThreadCache) -> Void) {
        var record = ThreadCache(optional: recordsHead.load(ordering: .acquiring))
        while let cache = record {
            record = cache.registryNext
            body(cache)
        }
    }

    /// In the child, with every lock held: file-backed areas become orphaned.
    func orphanFileBackedAreas() {
        for classIndex in 0..<Layout.classCount {
            let pool = pool(classIndex)
            var next = pool.firstArea
            var any = false
            while let area = next {
                next = area.next
                guard area.isFileBacked else { continue }
                any = true
                area.isOrphaned = true
            }
            guard any else { continue }
            // Rebuild the pools without the orphaned regions.
            var dirty: [Node] = []
            while let node = pool.popDirty() { dirty.append(node) }
            for node in dirty.reversed() where !node.area.isOrphaned { pool.pushDirty(node) }
            var clean: [Node] = []
            while let node = pool.cleanHead {
                pool.unlinkClean(node)
                clean.append(node)
            }
            for node in clean.reversed() where !node.area.isOrphaned { pool.pushClean(node) }
            forEachCache { cache in
                var kept: [Node] = []
                var node = cache.head(classIndex)
                while let current = node {
                    node = current.next
                    if !current.area.isOrphaned { kept.append(current) }
                }
                cache.setHead(classIndex, nil)
                for node in kept.reversed() {
                    node.next = cache.head(classIndex)
                    cache.setHead(classIndex, node)
                }
                let dropped = cache.countWord(classIndex).load(ordering: .relaxed) - kept.count
                cache.countWord(classIndex).store(kept.count, ordering: .relaxed)
                cache.cachedBytes -= dropped * Layout.regionSize(ofClass: classIndex)
            }
            var areaNext = pool.firstArea
            while let area = areaNext {
                areaNext = area.next
                guard area.isOrphaned else { continue }
                for index in 0..<area.regionCount { area.node(index).state = .orphaned }
            }
        }
    }
}

/// Every live allocator, in a list under one global spin lock: the thread-exit hook and
/// `fork` find them here, and an allocator leaves the list before it is destroyed.
enum LiveAllocators {
    static let lock = SpinLock()
    static let head = Atomic<Int>(0)
    /// Allocator ids; never reused.
    static let nextID = Atomic<Int>(1)
    static let hooksInstalled = Atomic<Bool>(false)

    static func withLock<Result>(_ body: () -> Result) -> Result {
        lock.lock()
        defer { lock.unlock() }
        return body()
    }

    static func register(_ control: Control) {
        if !hooksInstalled.exchange(true, ordering: .acquiringAndReleasing) {
            ThreadLocalSlot.largeAlloc.setThreadExitHook(ThreadTable.threadExitHook)
            pthread_atfork(forkPrepare, forkParent, forkChild)
        }
        withLock {
            control.nextLive = first
            head.store(Int(bitPattern: control.base), ordering: .relaxed)
        }
    }

    static func unregister(_ control: Control) {
        withLock {
            if first == control {
                head.store(Int(bitPattern: control.nextLive?.base), ordering: .relaxed)
                return
            }
            var previous = first
            while let current = previous, let next = current.nextLive {
                if next == control {
                    current.nextLive = control.nextLive
                    return
                }
                previous = next
            }
        }
    }

    /// Under the lock.
    static var first: Control? {
        UnsafeMutableRawPointer(bitPattern: head.load(ordering: .relaxed)).map(Control.init)
    }

    /// Under the lock.
    static func find(id: Int) -> Control? {
        var next = first
        while let control = next {
            if control.id == id { return control }
            next = control.nextLive
        }
        return nil
    }

    static func forEach(_ body: (Control) -> Void) {
        var next = first
        while let control = next {
            next = control.nextLive
            body(control)
        }
    }

    static let forkPrepare: @convention(c) () -> Void = {
        lock.lock()
        forEach { $0.lockAll() }
    }

    static let forkParent: @convention(c) () -> Void = {
        forEach { $0.unlockAll() }
        lock.unlock()
    }

    static let forkChild: @convention(c) () -> Void = {
        forEach { control in
            control.orphanFileBackedAreas()
            control.unlockAll()
        }
        lock.unlock()
    }
}
