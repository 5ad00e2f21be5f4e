// BinnedAlloc: a size-class binned allocator with per-thread caches.
//
// # What it is
//
// Small requests (up to 32 KiB) are served from *slabs*: 256 KiB, aligned to their size,
// each holding blocks of one size class behind a one-page header. Every thread gets a
// *thread cache*: per size class a current slab, a list of slabs with free blocks, and a
// *free cache* of blocks the thread freed (an array of pointers). A free appends to the
// freeing thread's free cache (a block of another thread's slab only when its class fills
// whole cache lines; else it goes home); allocation takes the newest, else pops the
// current slab's free list. Neither takes a lock or an atomic read-modify-write. Larger requests
// get a span of their own, from the span cache or the kernel.
//
// ```swift
// let allocator = BinnedAllocator.shared
// let block = allocator.allocate(byteCount: 100)!     // 112-byte class, 16-byte aligned
// allocator.usableSize(of: block)                      // 112
// let bigger = allocator.reallocate(block, byteCount: 4000)!
// allocator.deallocate(bigger)
// ```
//
// From C, the same allocator answers to `binned_malloc`, `binned_free` and the rest of the
// malloc family, with glibc's semantics (errno, NULL, alignment rules).
//
// # How it finds things
//
// - The slab of a small block: `pointer & ~(slabSize - 1)`. Blocks start one page into
//   the slab, so no small block is ever slab-aligned.
// - A large block's pointer *is* slab-aligned, with its header in the page just before.
//   So `pointer & (slabSize - 1) == 0` tells large from small with one test.
// - Whether a pointer is BinnedAlloc's at all (the standard names' question), and the class
//   and owner of a block of a thread's slab (the free path's): the granule map, two bytes
//   per *granule* (256 KiB of address space).
// - The calling thread's cache: AllocCore's initial-exec thread-local slot, one `%fs` load.
//
// # Threads
//
// A free cache that overflows sends its older half home: blocks of the thread's own slabs
// onto their slabs' free lists, others as *remote frees*. The freeing
// thread collects those in a small batch per owner and pushes the batch, as one
// chain with one compare-exchange, onto the owner cache's remote list; the owner takes the
// whole list when it next runs out of blocks of some class. At most `remoteBatchLimit - 1`
// blocks wait in a thread's batch (flushed on its slow paths, at its exit and by
// `releaseUnusedMemory()`).
//
// A thread that exits *parks* its cache: its free caches are emptied, pending frees pushed, its own remote list
// drained, empty slabs released, and the cache goes onto a global stack. The next new
// thread adopts a parked cache before it maps a new one, so creating and joining thousands
// of threads keeps memory flat. Remote frees to a parked cache keep landing on its remote
// list and are collected by its adopter (or by `releaseUnusedMemory()`).
//
// # Memory back to the OS
//
// A slab that becomes empty while it is not its class's current slab is retired: each
// thread cache keeps up to `reserveSlabLimit` empty slabs warm for any class; beyond that the
// slab's pages are returned with `MADV_DONTNEED` and it goes to a global pool of empty
// slabs (address space only, one resident header page), or is unmapped when the pool
// already holds `pooledSlabLimit`. Freed large spans wait in a span cache, within a byte
// budget, for the next request they fit (or, above 4 MiB, can be grown to); the rest are
// unmapped. Above 4 MiB the budget stretches to the recent peak of live large bytes, so that
// live and cached stay within it. A cached span goes back after the purge delay (1 s),
// unmapped by a background purger thread or by the next slow path
// (`BinnedAllocConfiguration`), and a request that fits no cached span first unmaps stale
// ones. `malloc_trim` gives back everything at once.
//
// # Misuse
//
// Every free checks, before it changes anything, that the pointer is a block's start and
// that the block is not already free (a keyed mark in its second word), and aborts with one
// line on stderr naming the pointer otherwise (`Misuse`), as glibc does. The hardened build
// (the package trait `Hardened`) adds seals after blocks, poison in freed ones, encoded
// free-list links, a random carve order and guards after large blocks (`Hardening`).
//
// # Structure
//
// The headers live in raw memory, their fields at the offsets of the Layout section
// (checked once in debug builds); every doubly linked list (a bin's partial slabs, a
// cache's owned slabs and reserve, the pool, a locked cache's large spans) is AllocCore's
// `IntrusiveList`. A slab is in exactly one place, which its state names; the integrity
// walker at the end of the file checks that, and every list, from the model tests.
//
// The file: this manual, the public API (the allocators, the statistics, the C ABI, the
// hooks for SwiftNIO's ByteBuffer), the fast path, the slow path, the internals (one section
// per type), the layout, the integrity walker.
//
// # Single-threaded variant and page allocator
//
// `LockedBinnedAllocator` is one `ThreadCache` behind one spin lock, with no per-thread caches
// (rsbmalloc's single-threaded mode). `BinnedPageAllocator` hands out page spans through
// the large path.

import AllocCore
import Glibc
import Synchronization

// MARK: - Public API

// MARK: - BinnedAllocator

/// The process-wide binned allocator: per-thread caches over shared slabs.
///
/// All state is global, so every `BinnedAllocator` value is the same allocator; use
/// ``shared``. Any thread may free any block; memory cached by a thread goes back when the
/// thread exits.
public struct BinnedAllocator: Sendable {
    /// The allocator.
    @inlinable public static var shared: BinnedAllocator { BinnedAllocator() }

    @inlinable init() {}

    /// The largest request served from slabs; larger ones get a span of their own.
    public static let smallSizeLimit = Layout.smallSizeLimit
    /// The size and alignment of a slab.
    public static let slabSize = Layout.slabSize
    /// The size classes of small blocks: 16-byte steps up to 64 B, then 4 classes per
    /// power of two up to 32 KiB (40 classes; at most 20% of a block above 64 B is slack).
    public static let sizeClasses = Layout.sizeClasses
    /// The largest alignment `allocate(byteCount:alignment:)` accepts.
    public static let maximumAlignment = Layout.maximumAlignment

    /// A block of at least `byteCount` bytes aligned to `alignment`, or nil when the size
    /// or alignment cannot be met (an alignment above ``maximumAlignment``, or more memory
    /// than the OS gives).
    ///
    /// A zero-byte request returns a unique block that must be freed like any other.
    /// Blocks are always at least 16-byte aligned.
    ///
    /// - Precondition: `byteCount >= 0`, and `alignment` is a power of two.
    @inlinable @inline(__always)
    public func allocate(byteCount: Int, alignment: Int = 16) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "BinnedAllocator.allocate: negative byteCount \(byteCount)")
        if Hardening.isEnabled { return Hardening.allocate(byteCount: byteCount, alignment: alignment) }
        if byteCount <= Layout.smallSizeLimit && alignment &- 1 < Layout.quantum && alignment > 0
            && alignment & (alignment &- 1) == 0
        {
            return SharedAllocator.popSmall(byteCount: byteCount)
                ?? SharedAllocator.allocateSmallSlow(classIndex: Layout.sizeClasses.index(for: byteCount))
        }
        return SharedAllocator.allocateShaped(byteCount: byteCount, alignment: alignment)
    }

    /// ``allocate(byteCount:alignment:)`` for a block that reads as zero: C's `calloc`,
    /// Rust's `GlobalAlloc::alloc_zeroed`. Clears only what may not be zero already
    /// (`Block.clear(_:byteCount:)`): a fresh large block is the kernel's zero pages,
    /// untouched until used.
    ///
    /// - Precondition: as ``allocate(byteCount:alignment:)``.
    @inlinable
    public func allocateZeroed(byteCount: Int, alignment: Int = 16) -> UnsafeMutableRawPointer? {
        guard let block = allocate(byteCount: byteCount, alignment: alignment) else { return nil }
        Block.clear(block, byteCount: byteCount)
        return block
    }

    /// Frees a block from this allocator (any thread). nil is ignored.
    ///
    /// In debug builds a pointer this allocator did not hand out, or one already freed,
    /// traps with a message naming it.
    @inlinable @inline(__always)
    public func deallocate(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        SharedAllocator.deallocate(pointer)
    }

    /// Resizes a block, keeping its first `min(old usable size, byteCount)` bytes.
    ///
    /// Stays in place when `byteCount` falls in the block's size class (or still fits it
    /// and uses more than half of it), or when a large block's span can grow or shrink
    /// where it is; a large span that must move is moved by remapping its pages, never by
    /// copying. A nil `pointer` allocates. On failure returns nil and leaves the block as
    /// it was. The result is 16-byte aligned (a large block keeps its alignment).
    @inlinable
    public func reallocate(_ pointer: UnsafeMutableRawPointer?, byteCount: Int) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "BinnedAllocator.reallocate: negative byteCount \(byteCount)")
        guard let pointer else { return allocate(byteCount: byteCount) }
        return SharedAllocator.reallocate(pointer, byteCount: byteCount)
    }

    /// How many bytes the block really holds (at least what was asked; exactly that in the
    /// hardened build); 0 for nil.
    @inlinable
    public func usableSize(of pointer: UnsafeRawPointer?) -> Int {
        guard let pointer else { return 0 }
        if Hardening.isEnabled { return Hardening.usableSize(of: UnsafeMutableRawPointer(mutating: pointer)) }
        return Block.usableSize(of: UnsafeMutableRawPointer(mutating: pointer))
    }

    /// Uninitialized memory for `capacity` values of `T`, or nil when the byte count
    /// overflows or memory is exhausted.
    @inlinable
    public func allocate<T>(_ type: T.Type, capacity: Int) -> UnsafeMutableBufferPointer<T>? {
        guard let byteCount = checkedByteCount(count: capacity, stride: MemoryLayout<T>.stride),
            let raw = allocate(byteCount: byteCount, alignment: max(MemoryLayout<T>.alignment, Layout.quantum))
        else { return nil }
        return UnsafeMutableBufferPointer(start: raw.bindMemory(to: T.self, capacity: capacity), count: capacity)
    }

    /// Frees memory from `allocate(_:capacity:)`; deinitialize the values first.
    @inlinable
    public func deallocate<T>(_ buffer: UnsafeMutableBufferPointer<T>) {
        deallocate(buffer.baseAddress.map(UnsafeMutableRawPointer.init))
    }

    /// Counters of every thread cache (live and parked), summed. Callable from any
    /// thread. A free counts when it is made, whichever thread makes it.
    public func statistics() -> BinnedAllocStatistics {
        SharedAllocator.statistics()
    }

    /// Pushes the calling thread's pending remote frees, collects the frees waiting for
    /// its thread cache and for every parked one, and retires their empty slabs (see the
    /// module comment for where retired slabs go).
    public func releaseUnusedMemory() {
        SharedAllocator.releaseUnusedMemory()
    }

    /// The knobs in force (see ``BinnedAllocConfiguration``). Setting them takes effect at
    /// once for the purge delay, the background thread and the span-cache budget, and for the
    /// free caches of thread caches made afterwards. `BINNEDMALLOC_CONF` sets them when the
    /// allocator starts; `mallopt` changes some of them.
    public var configuration: BinnedAllocConfiguration {
        get { GlobalState.get()?.configuration ?? BinnedAllocConfiguration() }
        nonmutating set {
            precondition(newValue.isValid, "BinnedAllocator.configuration: \(newValue) is out of range")
            GlobalState.get()?.configure(newValue)
        }
    }

    /// Writes the statistics to `descriptor`, as text (what `BINNEDMALLOC_STATS=1` prints) or
    /// as one JSON object (the schema is in docs/spec/BinnedAlloc.md), without allocating.
    ///
    /// - Throws: the error of the mmap or write that failed.
    public func writeStatistics(
        to descriptor: Int32, format: BinnedAllocConfiguration.StatisticsFormat = .text
    )
        throws(SystemError)
    {
        var text = try RawText(capacity: 32 << 10)
        switch format {
        case .none: return
        case .text: SharedAllocator.report(into: &text)
        case .json: SharedAllocator.reportJSON(into: &text)
        }
        try text.write(to: descriptor)
    }
}

// MARK: - BinnedAllocConfiguration

/// The shared allocator's knobs, with jemalloc's `MALLOC_CONF` as the model: set from the
/// environment as `BINNEDMALLOC_CONF=key:value,key:value` when the allocator starts, from
/// Swift through ``BinnedAllocator/configuration``, and in part through `mallopt`.
///
/// | key | value | default |
/// |---|---|---|
/// | `purge_delay_ms` | 0 to 86,400,000 | 1000 |
/// | `background_thread` | `true` or `false` | `true` |
/// | `span_cache_bytes` | bytes, with an optional `k`, `m` or `g` suffix | 16m |
/// | `free_cache_bytes` | 0 to 64k | 64k |
/// | `stats_print` | `none`, `text` or `json` | `none` |
///
/// A bad key or value prints one line to stderr and keeps the default; the process goes on.
public struct BinnedAllocConfiguration: Sendable, Equatable {
    /// How long freed memory waits for reuse before it goes back to the OS: a freed large
    /// block in the span cache, and the blocks freed into parked thread caches. 0 returns
    /// freed large blocks at once (nothing is cached). One second: a server's steady churn
    /// reuses its buffers within milliseconds, and its RSS falls a second after a burst
    /// (jemalloc's dirty pages decay over 10 s; mimalloc purges after 10 ms).
    public var purgeDelayMilliseconds = 1000
    /// Whether a background thread returns memory whose delay has passed while the process
    /// makes no call (see the spec's section 10). It starts when memory first waits for a
    /// delay, sleeps half a delay at a time, and takes no lock a thread's fast path takes.
    /// Without it, memory is returned only from the allocator's own slow paths (a large
    /// block's allocation or free, a thread's exit), so an idle process keeps it.
    public var backgroundThread = true
    /// The bytes of freed large blocks the span cache keeps for reuse, or half the live
    /// large bytes when that is more (and for blocks above 4 MiB, the recent peak of live
    /// large bytes less those live, when that is more still: see `GlobalState.cacheSpan`);
    /// 0 caches nothing. 16 MiB: a program's buffers of
    /// 64 KiB to a few MiB are reused warm, and cached spans add little to its peak
    /// (python3 building and parsing JSON peaked at 130 MiB with 64 MiB, at 119 MiB with
    /// 16 MiB or less; glibc 116 MiB, jemalloc 119 MiB).
    public var spanCacheBytes = 16 << 20
    /// The bytes of freed blocks of one class a thread's free cache keeps (at least 4
    /// blocks and at most 256 whatever the bytes; up to twice as many bytes in a class
    /// where that makes up to 64 blocks); at most 64 KiB.
    public var freeCacheBytes = 64 << 10
    /// What the process prints to stderr at exit. `BINNEDMALLOC_STATS` (`1` for text,
    /// `json`) overrides it.
    public var statisticsAtExit = StatisticsFormat.none

    /// The formats statistics are written in.
    public enum StatisticsFormat: Int, Sendable {
        case none = 0, text = 1, json = 2
    }

    /// The defaults.
    public init() {}

    /// The largest purge delay: a day.
    public static let maximumPurgeDelayMilliseconds = 86_400_000
    /// The largest free-cache budget: the free caches' slot arrays are sized for it.
    public static let maximumFreeCacheBytes = 64 << 10

    var isValid: Bool {
        (0...BinnedAllocConfiguration.maximumPurgeDelayMilliseconds).contains(purgeDelayMilliseconds)
            && spanCacheBytes >= 0
            && (0...BinnedAllocConfiguration.maximumFreeCacheBytes).contains(freeCacheBytes)
    }
}

// MARK: - LockedBinnedAllocator

/// The binned allocator with no thread caches: one `ThreadCache` behind one spin lock, for
/// single-threaded programs or memory that must stay apart from the shared allocator
/// (rsbmalloc's single-threaded mode).
///
/// Every operation takes the lock, so any thread may use an instance. Deinit gives every
/// slab and large span of the instance back to the OS, like dropping an arena: blocks
/// still allocated from it are invalid afterwards.
public final class LockedBinnedAllocator: @unchecked Sendable {
    @usableFromInline let cache: ThreadCache
    @usableFromInline let lock: UnsafeMutablePointer<SpinLock>

    /// An empty allocator; it maps memory on first use.
    ///
    /// - Precondition: the cache's header page can be mapped.
    public init() {
        guard let cache = ThreadCache.create(kind: .locked, global: nil) else {
            preconditionFailure("LockedBinnedAllocator: cannot map a thread cache page")
        }
        self.cache = cache
        lock = (cache.base + ThreadCacheLayout.lockOffset).bindMemory(to: SpinLock.self, capacity: 1)
        lock.initialize(to: SpinLock())
    }

    deinit {
        // The cache alone: the shared global state is not this allocator's to create or check.
        assert(cache.integrityViolation() == nil, "BinnedAlloc: \(cache.integrityViolation() ?? "")")
        cache.releaseAllLargeSpans()
        cache.releaseAllSlabs()
        lock.deinitialize(count: 1)
        ThreadCache.unmapHeader(cache)
    }

    /// See ``BinnedAllocator/allocate(byteCount:alignment:)``.
    ///
    /// - Precondition: `byteCount >= 0`, and `alignment` is a power of two.
    public func allocate(byteCount: Int, alignment: Int = 16) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "LockedBinnedAllocator.allocate: negative byteCount \(byteCount)")
        precondition(
            isPowerOfTwo(alignment), "LockedBinnedAllocator.allocate: alignment \(alignment) is not a power of two")
        guard let shape = Block.Shape(byteCount: byteCount, alignment: alignment) else { return nil }
        switch shape {
        case .small(let classIndex):
            let block = lock.pointee.withLock { cache.allocate(classIndex: classIndex) }
            // The hardened build leaves the mark to `Hardening.handOut`, which seals only the
            // shared allocator's blocks.
            if Hardening.isEnabled { block?.storeBytes(of: 0, toByteOffset: Misuse.markOffset, as: UInt.self) }
            return block
        case .large(let byteCount, let alignment):
            return LargeSpan.allocate(byteCount: byteCount, alignment: alignment, owner: cache)
        }
    }

    /// See ``BinnedAllocator/allocateZeroed(byteCount:alignment:)``.
    ///
    /// - Precondition: `byteCount >= 0`, and `alignment` is a power of two.
    public func allocateZeroed(byteCount: Int, alignment: Int = 16) -> UnsafeMutableRawPointer? {
        guard let block = allocate(byteCount: byteCount, alignment: alignment) else { return nil }
        Block.clear(block, byteCount: byteCount)
        return block
    }

    /// See ``BinnedAllocator/deallocate(_:)``.
    public func deallocate(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        guard GranuleMap.entry(pointer) != GranuleMap.foreign else { Misuse.report(.notHandedOut, pointer) }
        if Block.isLarge(pointer) { return LargeSpan.free(pointer) }
        let slab = Slab(containing: pointer)
        slab.checkAndMarkFree(pointer)
        lock.pointee.withLock {
            cache.bin(slab.classIndex).counters.addFromOwner(1, to: .deallocations)
            if slab.owner == cache.base {
                cache.freeLocal(pointer, in: slab)
            } else {
                ThreadCache(slab.owner).remoteFrees.push(pointer)
            }
        }
    }

    /// See ``BinnedAllocator/reallocate(_:byteCount:)``.
    public func reallocate(_ pointer: UnsafeMutableRawPointer?, byteCount: Int) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "LockedBinnedAllocator.reallocate: negative byteCount \(byteCount)")
        guard let pointer else { return allocate(byteCount: byteCount) }
        return Block.reallocate(
            pointer, byteCount: byteCount,
            allocate: { self.allocate(byteCount: $0) }, deallocate: { self.deallocate($0) })
    }

    /// See ``BinnedAllocator/usableSize(of:)``.
    public func usableSize(of pointer: UnsafeRawPointer?) -> Int {
        guard let pointer else { return 0 }
        return Block.usableSize(of: UnsafeMutableRawPointer(mutating: pointer))
    }

    /// See ``BinnedAllocator/allocate(_:capacity:)``.
    public func allocate<T>(_ type: T.Type, capacity: Int) -> UnsafeMutableBufferPointer<T>? {
        guard let byteCount = checkedByteCount(count: capacity, stride: MemoryLayout<T>.stride),
            let raw = allocate(byteCount: byteCount, alignment: max(MemoryLayout<T>.alignment, Layout.quantum))
        else { return nil }
        return UnsafeMutableBufferPointer(start: raw.bindMemory(to: T.self, capacity: capacity), count: capacity)
    }

    /// See ``BinnedAllocator/deallocate(_:)-(UnsafeMutableBufferPointer<T>)``.
    public func deallocate<T>(_ buffer: UnsafeMutableBufferPointer<T>) {
        deallocate(buffer.baseAddress.map(UnsafeMutableRawPointer.init))
    }

    /// This allocator's counters (exact: one thread cache); bytes mapped and returned are
    /// the process-wide figures of all binned allocators.
    public func statistics() -> BinnedAllocStatistics {
        var statistics = BinnedAllocStatistics.empty
        lock.pointee.withLock { cache.addStatistics(to: &statistics) }
        statistics.addGlobalFigures(largeFrom: cache.largeCounters)
        statistics.threadCaches = 0
        statistics.parkedThreadCaches = 0
        return statistics
    }
}

// MARK: - BinnedPageAllocator

/// Page spans straight from the OS, each with a one-page header that remembers its size,
/// so freeing needs no size (rsbmalloc's page allocator). Spans are also blocks of the
/// binned allocators: ``BinnedAllocator/deallocate(_:)`` frees them too.
public struct BinnedPageAllocator: Sendable {
    public init() {}

    /// A span of at least `byteCount` bytes (rounded up to whole pages, at least one)
    /// aligned to `alignment` (at least the page size), or nil when the alignment is above
    /// ``BinnedAllocator/maximumAlignment`` or memory is exhausted.
    ///
    /// - Precondition: `byteCount >= 0`, and `alignment` is a power of two.
    public func allocate(byteCount: Int, alignment: Int = 4096) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "BinnedPageAllocator.allocate: negative byteCount \(byteCount)")
        precondition(
            isPowerOfTwo(alignment), "BinnedPageAllocator.allocate: alignment \(alignment) is not a power of two")
        guard alignment <= Layout.maximumAlignment else { return nil }
        return LargeSpan.allocate(byteCount: max(byteCount, 1), alignment: alignment)
    }

    /// Unmaps a span; nil is ignored.
    public func deallocate(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        precondition(Block.isLarge(pointer), "BinnedPageAllocator.deallocate: \(pointer) is not a page span")
        LargeSpan.free(pointer)
    }

    /// Grows or shrinks a span in place or by remapping (never copying); nil allocates.
    public func reallocate(_ pointer: UnsafeMutableRawPointer?, byteCount: Int) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "BinnedPageAllocator.reallocate: negative byteCount \(byteCount)")
        guard let pointer else { return allocate(byteCount: byteCount) }
        precondition(Block.isLarge(pointer), "BinnedPageAllocator.reallocate: \(pointer) is not a page span")
        return LargeSpan.resize(pointer, byteCount: max(byteCount, 1))
    }

    /// The span's size in bytes (whole pages); 0 for nil.
    public func usableSize(of pointer: UnsafeRawPointer?) -> Int {
        guard let pointer else { return 0 }
        return Block.usableSize(of: UnsafeMutableRawPointer(mutating: pointer))
    }
}

// MARK: - BinnedAllocStatistics

/// A snapshot of the binned allocators' counters.
public struct BinnedAllocStatistics: Sendable, Equatable {
    /// Counters of one size class.
    public struct SizeClass: Sendable, Equatable {
        /// The bytes a block of this class holds.
        public var size: Int
        public var allocations: Int
        public var deallocations: Int
        /// `allocations - deallocations`.
        public var liveBlocks: Int
        /// Slabs of this class held by thread caches now.
        public var slabs: Int
    }

    /// One entry per class, at its class index.
    public var sizeClasses: [SizeClass]
    /// Blocks above ``BinnedAllocator/smallSizeLimit`` (and page-allocator spans).
    public var largeAllocations: Int
    public var largeDeallocations: Int
    /// Usable bytes of large blocks not yet freed.
    public var largeLiveBytes: Int
    /// Bytes of slab chunks and large spans mapped now (process-wide).
    public var bytesMapped: Int
    /// Bytes given back to the OS so far, by `MADV_DONTNEED` or `munmap` (process-wide).
    public var bytesReturned: Int
    /// Freed large blocks kept mapped, and their bytes (process-wide): in the span cache, for
    /// reuse by the next request of their size class, or queued for release by the next
    /// purge (`binned_statistic("queued_large_blocks")` counts those).
    /// ``BinnedAllocator/releaseUnusedMemory()`` unmaps them all.
    public var cachedLargeBlocks: Int
    public var cachedLargeBytes: Int
    /// Thread caches ever created for threads (each is reused after its thread exits).
    public var threadCaches: Int
    /// Thread caches of exited threads waiting to be adopted.
    public var parkedThreadCaches: Int
    /// How often each lock that any thread may take was taken so far (process-wide).
    public var globalLockAcquisitions: GlobalLocks

    /// Acquisitions of the process-wide locks: the pool of empty slabs (a thread takes or
    /// returns a slab beyond its reserve), the span cache (large blocks up to 4 MiB and
    /// above), and the fallback cache (threads that are exiting).
    public struct GlobalLocks: Sendable, Equatable {
        public var pool: Int
        public var spanCache: Int
        public var fallback: Int
    }

    /// Every allocation and free counted here, small and large: the operations that
    /// `globalLockAcquisitions` can be set against.
    public var operations: Int {
        sizeClasses.reduce(0) { $0 + $1.allocations + $1.deallocations } + largeAllocations + largeDeallocations
    }

    static var empty: BinnedAllocStatistics {
        BinnedAllocStatistics(
            sizeClasses: (0..<Layout.classCount).map {
                SizeClass(
                    size: Layout.sizeClasses.size(ofClass: $0), allocations: 0, deallocations: 0, liveBlocks: 0,
                    slabs: 0)
            },
            largeAllocations: 0, largeDeallocations: 0, largeLiveBytes: 0, bytesMapped: 0, bytesReturned: 0,
            cachedLargeBlocks: 0, cachedLargeBytes: 0, threadCaches: 0, parkedThreadCaches: 0,
            globalLockAcquisitions: GlobalLocks(pool: 0, spanCache: 0, fallback: 0))
    }

    mutating func addGlobalFigures(largeFrom large: Counters<LargeEvent>?) {
        if let large {
            largeAllocations += large.value(of: .allocations)
            largeDeallocations += large.value(of: .deallocations)
            largeLiveBytes += large.value(of: .liveBytes)
        }
        guard let global = GlobalState.get() else { return }
        bytesMapped = global.counters.value(of: .bytesMapped)
        bytesReturned = global.counters.value(of: .bytesReturned)
        (cachedLargeBlocks, cachedLargeBytes) = global.heldSpans
        threadCaches = global.counters.value(of: .threadCaches)
        parkedThreadCaches = global.counters.value(of: .parkedThreadCaches)
        globalLockAcquisitions = GlobalLocks(
            pool: global.counters.value(of: .poolLocks), spanCache: global.counters.value(of: .spanCacheLocks),
            fallback: global.counters.value(of: .fallbackLocks))
    }
}

// MARK: - C ABI

// The malloc family under `binned_` names, with glibc's answers to bad input (GUIDE
// section 5). Sizes are `size_t` in C: a negative `Int` here is a size of 2^63 or more.

/// `malloc`: NULL with ENOMEM when the size cannot be met.
///
/// The standard `malloc` jumps here, so the fast path is written out in this one function
/// and calls nothing (no stack frame either): a small size pops the calling thread's
/// current slab. Everything else (no thread cache yet, an empty slab, a large or impossible size,
/// errno) is `mallocSlow`'s. Measured with `binned_free_any` under `LD_PRELOAD`,
/// malloc(16 to 1024)+free through function pointers: 3.1 to 3.3 ns a pair (medians of 9
/// runs), from 4.1 to 4.4 ns when `malloc` went through `BinnedAllocator.allocate` and
/// `free` called `binned_owns` (jemalloc: 3.4 to 4.2 ns).
@c(binned_malloc)
public func binned_malloc(_ size: Int) -> UnsafeMutableRawPointer? {
    if Hardening.isEnabled {
        guard size >= 0, let block = Hardening.allocate(byteCount: size, alignment: Layout.quantum) else {
            return outOfMemory()
        }
        return block
    }
    if UInt(bitPattern: size) <= UInt(Layout.smallSizeLimit), let block = SharedAllocator.popSmall(byteCount: size) {
        return block
    }
    return mallocSlow(size)
}

/// `binned_malloc` when the calling thread's current slab cannot serve the size.
@inline(never)
func mallocSlow(_ size: Int) -> UnsafeMutableRawPointer? {
    guard size >= 0, let block = BinnedAllocator.shared.allocate(byteCount: size) else { return outOfMemory() }
    return block
}

/// `free`: NULL is a no-op; errno is never changed.
@c(binned_free)
public func binned_free(_ pointer: UnsafeMutableRawPointer?) {
    BinnedAllocator.shared.deallocate(pointer)
}

/// `free` for any pointer, as the standard names need it: a BinnedAlloc block is freed
/// here, any other pointer (glibc's, see `GranuleMap`) is passed to `foreignFree`.
///
/// The standard `free` jumps here with glibc's free as `foreignFree`: the granule-map test
/// and the whole fast path of `deallocate` are one function with no call, where the
/// standard `free` used to call `binned_owns` and then jump to `binned_free`.
@c(binned_free_any)
public func binned_free_any(
    _ pointer: UnsafeMutableRawPointer?, _ foreignFree: @convention(c) (UnsafeMutableRawPointer?) -> Void
) {
    guard let pointer else { return }
    let entry = GranuleMap.entry(pointer)
    if _fastPath(SharedAllocator.freeToCache(pointer, entry: entry)) { return }
    guard entry != GranuleMap.foreign else { return foreignFree(pointer) }
    SharedAllocator.deallocateSlow(pointer)
}

/// `calloc`: zeroed memory; NULL with ENOMEM when `count * size` overflows.
@c(binned_calloc)
public func binned_calloc(_ count: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    guard let byteCount = checkedByteCount(count: UInt(bitPattern: count), stride: UInt(bitPattern: size)),
        let block = BinnedAllocator.shared.allocateZeroed(byteCount: byteCount)
    else { return outOfMemory() }
    return block
}

/// `realloc`: NULL pointer allocates; size 0 frees and returns NULL; on failure NULL with
/// ENOMEM and the block unchanged.
@c(binned_realloc)
public func binned_realloc(_ pointer: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
    if pointer != nil && size == 0 {
        BinnedAllocator.shared.deallocate(pointer)
        return nil
    }
    guard size >= 0, let block = BinnedAllocator.shared.reallocate(pointer, byteCount: size) else {
        return outOfMemory()
    }
    return block
}

/// `reallocarray`: `realloc(pointer, count * size)` with NULL and ENOMEM on overflow.
@c(binned_reallocarray)
public func binned_reallocarray(
    _ pointer: UnsafeMutableRawPointer?, _ count: Int, _ size: Int
)
    -> UnsafeMutableRawPointer?
{
    guard let byteCount = checkedByteCount(count: UInt(bitPattern: count), stride: UInt(bitPattern: size)) else {
        return outOfMemory()
    }
    return binned_realloc(pointer, byteCount)
}

/// `posix_memalign`: EINVAL for an alignment that is not a power of two multiple of
/// `sizeof(void *)`, ENOMEM when the size cannot be met; `*result` is only written on
/// success.
@c(binned_posix_memalign)
public func binned_posix_memalign(
    _ result: UnsafeMutablePointer<UnsafeMutableRawPointer?>?, _ alignment: Int, _ size: Int
) -> Int32 {
    // size_t semantics: 2^63 is a power of two (that no allocator can honour: ENOMEM).
    let requested = UInt(bitPattern: alignment)
    guard requested >= UInt(MemoryLayout<UnsafeRawPointer>.size), requested & (requested &- 1) == 0 else {
        return EINVAL
    }
    guard size >= 0, requested <= UInt(Layout.maximumAlignment),
        let block = BinnedAllocator.shared.allocate(byteCount: size, alignment: alignment)
    else { return ENOMEM }
    result?.pointee = block
    return 0
}

/// `aligned_alloc`: glibc's leniency, the alignment is rounded up to a power of two and
/// the size need not be a multiple of it.
@c(binned_aligned_alloc)
public func binned_aligned_alloc(_ alignment: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    binned_memalign(alignment, size)
}

/// `memalign`: like `aligned_alloc`; as in glibc, EINVAL only for an alignment above
/// 2^63 (`SIZE_MAX / 2 + 1`), ENOMEM for one too large to honour.
@c(binned_memalign)
public func binned_memalign(_ alignment: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    let requested = UInt(bitPattern: alignment)
    guard requested <= UInt(1) << 63 else {
        errno = EINVAL
        return nil
    }
    let rounded = requested <= 1 ? 1 : UInt(1) << (UInt.bitWidth - (requested &- 1).leadingZeroBitCount)
    guard size >= 0, rounded <= UInt(Layout.maximumAlignment),
        let block = BinnedAllocator.shared.allocate(byteCount: size, alignment: max(Int(rounded), Layout.quantum))
    else { return outOfMemory() }
    return block
}

/// `valloc`: page-aligned.
@c(binned_valloc)
public func binned_valloc(_ size: Int) -> UnsafeMutableRawPointer? {
    binned_memalign(SystemInfo.pageSize, size)
}

/// `pvalloc`: page-aligned, the size rounded up to whole pages (one page for 0).
@c(binned_pvalloc)
public func binned_pvalloc(_ size: Int) -> UnsafeMutableRawPointer? {
    guard size >= 0, let rounded = alignUp(max(size, 1), to: SystemInfo.pageSize) else { return outOfMemory() }
    return binned_memalign(SystemInfo.pageSize, rounded)
}

/// `malloc_usable_size`: 0 for NULL.
@c(binned_malloc_usable_size)
public func binned_malloc_usable_size(_ pointer: UnsafeMutableRawPointer?) -> Int {
    BinnedAllocator.shared.usableSize(of: pointer)
}

/// Whether `pointer` is a block BinnedAlloc handed out (or lies in a granule that holds
/// them): the test the standard malloc names make before freeing, so that a foreign
/// pointer goes to glibc (see `GranuleMap`). False for NULL.
@c(binned_owns)
public func binned_owns(_ pointer: UnsafeRawPointer?) -> Bool {
    guard let pointer else { return false }
    return GranuleMap.contains(pointer)
}

/// C23 `free_sized`: the size is a hint this allocator does not need.
@c(binned_free_sized)
public func binned_free_sized(_ pointer: UnsafeMutableRawPointer?, _ size: Int) {
    BinnedAllocator.shared.deallocate(pointer)
}

/// C23 `free_aligned_sized`.
@c(binned_free_aligned_sized)
public func binned_free_aligned_sized(_ pointer: UnsafeMutableRawPointer?, _ alignment: Int, _ size: Int) {
    BinnedAllocator.shared.deallocate(pointer)
}

/// Writes the shared allocator's statistics to `descriptor` as text, without allocating
/// (the text is built in pages from mmap): what `BINNEDMALLOC_STATS=1` prints to stderr at
/// exit. Returns 0, or the errno of the mmap or write that failed.
@c(binned_print_statistics)
public func binned_print_statistics(_ descriptor: Int32) -> Int32 {
    let savedErrno = errno
    defer { errno = savedErrno }
    do {
        var text = try RawText(capacity: 16 << 10)
        SharedAllocator.report(into: &text)
        try text.write(to: descriptor)
        return 0
    } catch {
        return error.code
    }
}

/// The statistics to `descriptor` in `format` (`"text"` or `"json"`), without allocating.
/// Returns 0, EINVAL for another format, or the errno of the mmap or write that failed.
@c(binned_write_statistics)
public func binned_write_statistics(_ descriptor: Int32, _ format: UnsafePointer<CChar>?) -> Int32 {
    let savedErrno = errno
    defer { errno = savedErrno }
    guard let format else { return EINVAL }
    let name = UnsafeRawBufferPointer(start: format, count: strlen(format))
    let chosen: BinnedAllocConfiguration.StatisticsFormat
    if name.elementsEqual("text".utf8) {
        chosen = .text
    } else if name.elementsEqual("json".utf8) {
        chosen = .json
    } else {
        return EINVAL
    }
    do {
        try BinnedAllocator.shared.writeStatistics(to: descriptor, format: chosen)
        return 0
    } catch {
        return error.code
    }
}

/// What the library prints at exit: the statistics to stderr in the configured format
/// (`BINNEDMALLOC_STATS`, or `stats_print` in `BINNEDMALLOC_CONF`), or nothing.
@c(binned_report_at_exit)
public func binned_report_at_exit() {
    guard let global = GlobalState.get() else { return }
    // The hardened build checks the poison of the blocks the exiting thread freed last.
    if Hardening.isEnabled, let base = ThreadLocalSlot.binnedAlloc.value {
        Hardening.checkFreeCaches(ThreadCache(base))
    }
    try? BinnedAllocator.shared.writeStatistics(to: 2, format: global.configuration.statisticsAtExit)
}

/// One statistic by name, as jemalloc's `mallctl("stats.allocated")` answers tools: the
/// names are in `SharedAllocator.statistic(named:)` and the spec. -1 with errno ENOENT
/// for an unknown name (or NULL). Allocates nothing.
@c(binned_statistic)
public func binned_statistic(_ name: UnsafePointer<CChar>?) -> Int64 {
    guard let name,
        let value = SharedAllocator.statistic(named: UnsafeRawBufferPointer(start: name, count: strlen(name)))
    else {
        errno = ENOENT
        return -1
    }
    return Int64(value)
}

/// The usable size a request of `size` bytes gets (`malloc_good_size`, jemalloc's
/// `nallocx`): a buffer may round its capacity up to it for free. `size` itself for a
/// size no block can have.
@c(binned_good_size)
public func binned_good_size(_ size: Int) -> Int {
    guard size >= 0,
        let shape = Block.Shape(
            byteCount: Hardening.isEnabled ? Hardening.paddedByteCount(size) : size, alignment: Layout.quantum)
    else { return size }
    switch shape {
    case .small(let classIndex):
        // The hardened build's seal takes the block's last word.
        return Layout.sizeClasses.size(ofClass: classIndex) - (Hardening.isEnabled ? Hardening.sealBytes : 0)
    case .large(let byteCount, _):
        return LargeSpan.cacheClassSize(for: byteCount) ?? alignUp(byteCount, to: SystemInfo.pageSize) ?? size
    }
}

/// Applies `BINNEDMALLOC_CONF`-style items (`"purge_delay_ms:100,background_thread:false"`)
/// now. Returns 0, or EINVAL when an item was bad (the others still apply); bad items
/// are not printed.
@c(binned_configure)
public func binned_configure(_ text: UnsafePointer<CChar>?) -> Int32 {
    guard let text, let global = GlobalState.get() else { return EINVAL }
    var configuration = global.configuration
    let bad = configuration.parse(UnsafeRawBufferPointer(start: text, count: strlen(text)))
    global.configure(configuration)
    return bad == 0 ? 0 : EINVAL
}

/// `malloc_trim`: gives back everything cached and unused (the calling thread's caches,
/// parked caches, the fallback cache, the span cache), whatever the purge delay. `pad` is
/// ignored. Returns 1 when memory went back to the OS, else 0, as glibc.
@c(binned_trim)
public func binned_trim(_ pad: Int) -> Int32 {
    let before = GlobalState.get()?.counters.value(of: .bytesReturned) ?? 0
    SharedAllocator.releaseUnusedMemory()
    return (GlobalState.get()?.counters.value(of: .bytesReturned) ?? 0) > before ? 1 : 0
}

/// `mallopt`: returns 1, as glibc does for every option it knows. `M_TRIM_THRESHOLD` (-1)
/// sets the span-cache budget (`span_cache_bytes`: what stays cached before memory goes
/// back); a negative value is refused with 0. Every other option (`M_MMAP_THRESHOLD`,
/// `M_ARENA_MAX`, `M_TOP_PAD`, `M_MXFAST`, `M_PERTURB`...) tunes a glibc structure this
/// allocator does not have and is accepted and ignored.
@c(binned_mallopt)
public func binned_mallopt(_ parameter: Int32, _ value: Int32) -> Int32 {
    let trimThreshold: Int32 = -1
    guard parameter == trimThreshold else { return 1 }
    guard value >= 0, let global = GlobalState.get() else { return 0 }
    var configuration = global.configuration
    configuration.spanCacheBytes = Int(value)
    global.configure(configuration)
    return 1
}

/// `malloc_info`: the statistics as XML to `stream` (glibc's outer element and our
/// numbers: see the spec). `options` must be 0 (EINVAL and -1 otherwise, as glibc).
@c(binned_malloc_info)
public func binned_malloc_info(_ options: Int32, _ stream: UnsafeMutablePointer<FILE>?) -> Int32 {
    guard options == 0, let stream else {
        errno = EINVAL
        return -1
    }
    guard var text = try? RawText(capacity: 16 << 10) else {
        errno = ENOMEM
        return -1
    }
    SharedAllocator.reportXML(into: &text)
    let bytes = text.bytes
    return fwrite(bytes.baseAddress, 1, bytes.count, stream) == bytes.count ? 0 : -1
}

func outOfMemory() -> UnsafeMutableRawPointer? {
    errno = ENOMEM
    return nil
}

// MARK: - SwiftNIO's ByteBuffer hooks

/// The four functions SwiftNIO's `ByteBufferAllocator` takes to put its storage on another
/// allocator (swift-nio pull request 3526): allocate, reallocate, deallocate and copy, each
/// `@convention(c)`, here over the shared allocator. A server passes them in where it makes
/// its allocator, once:
///
/// ```swift
/// let allocator = ByteBufferAllocator(
///     allocate: BinnedByteBufferHooks.allocate, reallocate: BinnedByteBufferHooks.reallocate,
///     deallocate: BinnedByteBufferHooks.deallocate, copy: BinnedByteBufferHooks.copy)
/// ```
///
/// (the labels are NIO's to choose; the four types are the ones its hooks have had since its
/// first release). They are `binned_malloc`, `binned_realloc`, `binned_free` and a `memcpy`, so
/// every answer is the C ABI's: nil with `ENOMEM` when memory runs out, a block freed from any
/// thread. A ByteBuffer grows its storage by doubling with `reallocate`: a small block moves
/// to the next class (a copy of at most 32 KiB), a large one grows by remapping its pages,
/// without a copy. `binned_good_size` tells the capacity a request really gets, so that a
/// buffer can use all of it. Nothing here needs BinnedMalloc as the process's `malloc`: a server
/// that keeps glibc's (or jemalloc's) for everything else can put only its buffers here.
public enum BinnedByteBufferHooks {
    /// `malloc`'s type: a block of at least the given bytes, or nil.
    public typealias Allocate = @convention(c) (Int) -> UnsafeMutableRawPointer?
    /// `realloc`'s type: the block moved or resized to the given bytes, or nil (the block
    /// unchanged); a nil block allocates.
    public typealias Reallocate = @convention(c) (UnsafeMutableRawPointer?, Int) -> UnsafeMutableRawPointer?
    /// `free`'s type.
    public typealias Deallocate = @convention(c) (UnsafeMutableRawPointer) -> Void
    /// `memcpy`'s type: destination, source, byte count (the ranges do not overlap).
    public typealias Copy = @convention(c) (UnsafeMutableRawPointer, UnsafeRawPointer, Int) -> Void

    public static let allocate: Allocate = { binned_malloc($0) }
    public static let reallocate: Reallocate = { binned_realloc($0, $1) }
    public static let deallocate: Deallocate = { binned_free($0) }
    public static let copy: Copy = { $0.copyMemory(from: $1, byteCount: $2) }
}

// MARK: - Fast path

/// The shared allocator's entry points: the calling thread's cache, found through the
/// thread-local slot.
@usableFromInline
enum SharedAllocator {
    /// Pops a block of class `classIndex` from the current slab of the calling thread's
    /// cache: a TLS load and four memory operations, no atomic read-modify-write.
    @inlinable @inline(__always)
    static func allocateSmall(classIndex: Int) -> UnsafeMutableRawPointer? {
        popSmall(classIndex: classIndex) ?? allocateSmallSlow(classIndex: classIndex)
    }

    /// The fast path alone: a block of class `classIndex` from the calling thread's current
    /// slab, or nil when the thread has no cache yet or that slab has no free block (then
    /// `allocateSmallSlow` is the way on).
    @inlinable @inline(__always)
    static func popSmall(classIndex: Int) -> UnsafeMutableRawPointer? {
        guard let base = ThreadLocalSlot.binnedAlloc.value else { return nil }
        return ThreadCache(base).bin(classIndex).pop()
    }

    /// `popSmall(classIndex:)` for a size (at most `Layout.smallSizeLimit`): the class is
    /// looked up in the calling thread's cache (`ThreadCache.classIndex(for:)`).
    @inlinable @inline(__always)
    static func popSmall(byteCount: Int) -> UnsafeMutableRawPointer? {
        guard let base = ThreadLocalSlot.binnedAlloc.value else { return nil }
        let cache = ThreadCache(base)
        return cache.bin(cache.classIndex(for: byteCount)).pop()
    }

    /// Frees any block: `freeToCache`, else `deallocateSlow`.
    @inlinable @inline(__always)
    static func deallocate(_ pointer: UnsafeMutableRawPointer) {
        if _fastPath(freeToCache(pointer, entry: GranuleMap.entry(pointer))) { return }
        deallocateSlow(pointer)
    }

    /// The whole fast path of a free, `pointer`'s granule entry given: a block of the calling
    /// thread's own cache's slab, or of any thread cache's slab of a class whose blocks
    /// fill whole cache lines, goes onto the calling thread's free cache (class and owner
    /// from the entry: no slab header is read, no atomic). False for anything else: no
    /// cache yet, a large block or a locked cache's slab, and another thread cache's block
    /// of a class whose blocks share lines with their neighbours, which goes home instead
    /// (see `Layout.fillsCacheLines(classIndex:)`).
    @inlinable @inline(__always)
    static func freeToCache(_ pointer: UnsafeMutableRawPointer, entry: UInt16) -> Bool {
        let slot = Int(entry & GranuleMap.classBits)
        guard slot >= GranuleMap.firstClassEntry, let base = ThreadLocalSlot.binnedAlloc.value else { return false }
        let cache = ThreadCache(base)
        let classIndex = slot &- GranuleMap.firstClassEntry
        guard entry &>> GranuleMap.tagShift == cache.tag || Layout.fillsCacheLines(classIndex: classIndex) else {
            return false
        }
        cache.checkAndMarkFree(pointer, classIndex: classIndex)
        cache.cacheFreed(pointer, classIndex: classIndex)
        return true
    }

}

// MARK: - Slow path

extension SharedAllocator {
    @usableFromInline @inline(never)
    static func allocateSmallSlow(classIndex: Int) -> UnsafeMutableRawPointer? {
        if let cache = currentThreadCache() { return cache.allocate(classIndex: classIndex) }
        // An exiting thread (or one that could not get a cache) uses the global locked
        // fallback cache.
        guard let global = GlobalState.get() else { return nil }
        return global.withFallbackLock { global.fallbackCache.allocate(classIndex: classIndex) }
    }

    @usableFromInline @inline(never)
    static func allocateShaped(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer? {
        // Here, off the fast path: a small request with a valid alignment up to 16 never
        // comes this way. The C ABI passes powers of two only, so it never traps here.
        precondition(isPowerOfTwo(alignment), "BinnedAllocator.allocate: alignment \(alignment) is not a power of two")
        guard let shape = Block.Shape(byteCount: byteCount, alignment: alignment) else { return nil }
        switch shape {
        case .small(let classIndex):
            return allocateSmall(classIndex: classIndex)
        case .large(let byteCount, let alignment):
            return LargeSpan.allocateShared(byteCount: byteCount, alignment: alignment)
        }
    }

    /// A large block, a block of a locked cache's slab, or any block freed by a thread with
    /// no cache (one that is exiting). A small block goes onto its owner's remote list: through
    /// this thread's batch for that owner when the owner is a thread's cache (never
    /// unmapped, so a batch may wait), else straight: a locked allocator's cache goes away
    /// at its deinit, and a batch must not outlive it. The free is counted in the calling
    /// thread's cache, or in the fallback cache (under its lock) when it has none.
    @usableFromInline @inline(never)
    static func deallocateSlow(_ pointer: UnsafeMutableRawPointer) {
        guard GranuleMap.entry(pointer) != GranuleMap.foreign else { Misuse.report(.notHandedOut, pointer) }
        if Block.isLarge(pointer) { return LargeSpan.free(pointer, cacheable: true) }
        let slab = Slab(containing: pointer)
        slab.checkAndMarkFree(pointer)
        let owner = ThreadCache(slab.owner)
        // A thread that only frees (a consumer) gets a cache at its first free, so that its
        // frees take the fast path and no lock from then on.
        if let cache = currentThreadCache() {
            if Int(GranuleMap.entry(pointer) & GranuleMap.classBits) >= GranuleMap.firstClassEntry,
                owner.base == cache.base || Layout.fillsCacheLines(classIndex: slab.classIndex)
            {
                return cache.cacheFreed(pointer, classIndex: slab.classIndex)
            }
            cache.bin(slab.classIndex).counters.addFromOwner(1, to: .deallocations)
            if owner.kind == .perThread {
                cache.batchRemoteFree(pointer, owner: owner)
            } else {
                owner.remoteFrees.push(pointer)
            }
        } else {
            if let global = GlobalState.get() {
                global.withFallbackLock {
                    global.fallbackCache.bin(slab.classIndex).counters.addFromOwner(1, to: .deallocations)
                }
            }
            owner.remoteFrees.push(pointer)
        }
    }

    @usableFromInline @inline(never)
    static func reallocate(_ pointer: UnsafeMutableRawPointer, byteCount: Int) -> UnsafeMutableRawPointer? {
        if Hardening.isEnabled { return Hardening.reallocate(pointer, byteCount: byteCount) }
        return Block.reallocate(
            pointer, byteCount: byteCount,
            allocate: { BinnedAllocator.shared.allocate(byteCount: $0) },
            deallocate: { BinnedAllocator.shared.deallocate($0) })
    }

    /// The calling thread's cache: adopted from the parked stack or created, and installed
    /// in the thread-local slot with the exit hook armed. nil while the thread is exiting
    /// (a cache made now could outlive the last exit hook) or when no page can be mapped.
    static func currentThreadCache() -> ThreadCache? {
        let slot = ThreadLocalSlot.binnedAlloc
        if let base = slot.value { return ThreadCache(base) }
        guard !ThreadLocalSlot.isCurrentThreadExiting, let global = GlobalState.get() else { return nil }
        let cache: ThreadCache
        if let parked = global.parkedThreadCaches.pop() {
            cache = ThreadCache(parkedLink: parked)
            cache.claimParked()
            global.counters.add(-1, to: .parkedThreadCaches)
        } else if let created = ThreadCache.create(kind: .perThread, global: global) {
            cache = created
        } else {
            return nil
        }
        // If arming fails the cache still works; it is just not parked at thread exit.
        try? slot.install(cache.base)
        return cache
    }

    /// The thread-exit hook: gives the cache's memory back and parks it for the next thread.
    static let threadExitHook: @convention(c) (UnsafeMutableRawPointer?) -> Void = { base in
        guard let base, let global = GlobalState.get() else { return }
        let cache = ThreadCache(base)
        cache.trim()
        global.counters.add(1, to: .parkedThreadCaches)
        cache.ownership.store(ThreadCache.Ownership.parked.rawValue, ordering: .releasing)
        global.parkedThreadCaches.push(cache.parkedLink)
        // Frees into the parked cache may follow: each batch's pusher collects them
        // (`GlobalState.trimIfParked`), the purger what a pusher could not.
        global.startPurgerIfNeeded()
        global.purgeIfDue()
    }

    static func statistics() -> BinnedAllocStatistics {
        var statistics = BinnedAllocStatistics.empty
        guard let global = GlobalState.get() else { return statistics }
        global.forEachCache { $0.addStatistics(to: &statistics) }
        statistics.addGlobalFigures(largeFrom: global.largeCounters)
        return statistics
    }

    /// The statistics as text, summed straight from the counters: `statistics()` builds an
    /// array, and this runs inside processes whose malloc is BinnedAlloc, at exit.
    static func report(into text: inout RawText) {
        text.append("BinnedAlloc statistics\n")
        guard let global = GlobalState.get() else { return }
        let counters = global.counters
        let large = global.largeCounters
        text.append("thread caches ")
        text.append(counters.value(of: .threadCaches))
        text.append(" (parked ")
        text.append(counters.value(of: .parkedThreadCaches))
        text.append("), bytes mapped ")
        text.append(counters.value(of: .bytesMapped))
        text.append(", bytes returned ")
        text.append(counters.value(of: .bytesReturned))
        text.append(", pooled slabs ")
        text.append(counters.value(of: .pooledSlabs))
        text.append("\nlarge blocks: allocations ")
        text.append(large.value(of: .allocations))
        text.append(", deallocations ")
        text.append(large.value(of: .deallocations))
        text.append(", live bytes ")
        text.append(large.value(of: .liveBytes))
        text.append(", cached ")
        text.append(global.heldSpans.count)
        text.append(" (")
        text.append(global.heldSpans.bytes)
        text.append(" bytes; queued for release ")
        text.append(counters.value(of: .queuedSpans))
        text.append(")\nglobal locks taken: pool ")
        text.append(counters.value(of: .poolLocks))
        text.append(", span cache ")
        text.append(counters.value(of: .spanCacheLocks))
        text.append(", fallback cache ")
        text.append(counters.value(of: .fallbackLocks))
        text.append("\n")
        text.append("class      size    allocations  deallocations     live   slabs\n")
        for index in 0..<Layout.classCount {
            let sums = classSums(global, classIndex: index)
            guard sums.allocations > 0 else { continue }
            text.append(index, width: 5)
            text.append(Layout.sizeClasses.size(ofClass: index), width: 10)
            text.append(sums.allocations, width: 15)
            text.append(sums.deallocations, width: 15)
            text.append(sums.allocations - sums.deallocations, width: 9)
            text.append(sums.slabs, width: 8)
            text.append("\n")
        }
    }

    /// Sums of every cache's counters (threads', parked and the fallback cache), read
    /// without allocating.
    struct Totals {
        var allocations = 0
        var deallocations = 0
        var liveSmallBytes = 0
        var slabs = 0
    }

    static func totals(_ global: GlobalState) -> Totals {
        var totals = Totals()
        for index in 0..<Layout.classCount {
            let sums = classSums(global, classIndex: index)
            totals.allocations += sums.allocations
            totals.deallocations += sums.deallocations
            totals.liveSmallBytes += (sums.allocations - sums.deallocations) * Layout.sizeClasses.size(ofClass: index)
            totals.slabs += sums.slabs
        }
        return totals
    }

    /// One class's counters summed over every cache, read without allocating.
    static func classSums(
        _ global: GlobalState, classIndex: Int
    ) -> (allocations: Int, deallocations: Int, slabs: Int) {
        var sums = (allocations: 0, deallocations: 0, slabs: 0)
        global.forEachCache { cache in
            let counters = cache.bin(classIndex).counters
            sums.allocations += counters.value(of: .allocations)
            sums.deallocations += counters.value(of: .deallocations)
            sums.slabs += counters.value(of: .slabs)
        }
        return sums
    }

    /// The statistics `binned_statistic` answers, by name (jemalloc's `stats.allocated`
    /// and `stats.mapped` among them). nil for an unknown name.
    static func statistic(named name: UnsafeRawBufferPointer) -> Int? {
        guard let global = GlobalState.get() else { return name.isEmpty ? nil : 0 }
        let counters = global.counters
        let large = global.largeCounters
        func small() -> Totals { SharedAllocator.totals(global) }
        func matches(_ candidate: StaticString) -> Bool {
            candidate.withUTF8Buffer { name.elementsEqual($0) }
        }
        if matches("live_bytes") || matches("stats.allocated") {
            return small().liveSmallBytes + large.value(of: .liveBytes)
        }
        if matches("small_live_bytes") { return small().liveSmallBytes }
        if matches("large_live_bytes") { return large.value(of: .liveBytes) }
        if matches("large_live_blocks") { return large.value(of: .allocations) - large.value(of: .deallocations) }
        if matches("mapped_bytes") || matches("stats.mapped") { return counters.value(of: .bytesMapped) }
        if matches("returned_bytes") { return counters.value(of: .bytesReturned) }
        if matches("cached_large_bytes") { return global.heldSpans.bytes }
        if matches("cached_large_blocks") { return global.heldSpans.count }
        if matches("queued_large_bytes") { return counters.value(of: .queuedSpanBytes) }
        if matches("queued_large_blocks") { return counters.value(of: .queuedSpans) }
        if matches("pooled_slabs") { return counters.value(of: .pooledSlabs) }
        if matches("slabs") { return small().slabs }
        if matches("thread_caches") { return counters.value(of: .threadCaches) }
        if matches("parked_thread_caches") { return counters.value(of: .parkedThreadCaches) }
        if matches("allocations") { return small().allocations + large.value(of: .allocations) }
        if matches("deallocations") { return small().deallocations + large.value(of: .deallocations) }
        if matches("purges") { return counters.value(of: .purges) }
        if matches("purge_delay_ms") { return global.configuration.purgeDelayMilliseconds }
        if matches("background_thread_running") {
            return global.word(GlobalLayout.purgerStateOffset).load(ordering: .relaxed)
        }
        return nil
    }

    /// The statistics as one JSON object (schema in docs/spec/BinnedAlloc.md, section 10),
    /// built straight from the counters: nothing here allocates.
    static func reportJSON(into text: inout RawText) {
        guard let global = GlobalState.get() else {
            text.append("{\"allocator\":\"BinnedAlloc\",\"version\":1}\n")
            return
        }
        let counters = global.counters
        let large = global.largeCounters
        let configuration = global.configuration
        let totals = SharedAllocator.totals(global)
        func field(_ name: StaticString, _ value: Int, last: Bool = false) {
            text.append("\"")
            text.append(name)
            text.append("\":")
            text.append(value)
            if !last { text.append(",") }
        }
        text.append("{\"allocator\":\"BinnedAlloc\",\"version\":1,\"configuration\":{")
        field("purge_delay_ms", configuration.purgeDelayMilliseconds)
        text.append(configuration.backgroundThread ? "\"background_thread\":true," : "\"background_thread\":false,")
        field("span_cache_bytes", configuration.spanCacheBytes)
        field("free_cache_bytes", configuration.freeCacheBytes, last: true)
        text.append("},\"bytes\":{")
        field("live", totals.liveSmallBytes + large.value(of: .liveBytes))
        field("small_live", totals.liveSmallBytes)
        field("large_live", large.value(of: .liveBytes))
        field("mapped", counters.value(of: .bytesMapped))
        field("returned", counters.value(of: .bytesReturned))
        field("cached_large", global.heldSpans.bytes)
        field("queued_large", counters.value(of: .queuedSpanBytes), last: true)
        text.append("},\"counts\":{")
        field("allocations", totals.allocations + large.value(of: .allocations))
        field("deallocations", totals.deallocations + large.value(of: .deallocations))
        field("large_allocations", large.value(of: .allocations))
        field("large_deallocations", large.value(of: .deallocations))
        field("cached_large_blocks", global.heldSpans.count)
        field("queued_large_blocks", counters.value(of: .queuedSpans))
        field("slabs", totals.slabs)
        field("pooled_slabs", counters.value(of: .pooledSlabs))
        field("thread_caches", counters.value(of: .threadCaches))
        field("parked_thread_caches", counters.value(of: .parkedThreadCaches))
        field("purges", counters.value(of: .purges), last: true)
        text.append("},\"global_locks\":{")
        field("pool", counters.value(of: .poolLocks))
        field("span_cache", counters.value(of: .spanCacheLocks))
        field("fallback", counters.value(of: .fallbackLocks), last: true)
        text.append("},\"size_classes\":[")
        for index in 0..<Layout.classCount {
            let sums = classSums(global, classIndex: index)
            text.append(index == 0 ? "{" : ",{")
            field("size", Layout.sizeClasses.size(ofClass: index))
            field("allocations", sums.allocations)
            field("deallocations", sums.deallocations)
            field("live", sums.allocations - sums.deallocations)
            field("slabs", sums.slabs, last: true)
            text.append("}")
        }
        text.append("]}\n")
    }

    /// `malloc_info`'s XML: glibc's outer `<malloc version="1">` element, one `<heap>` for
    /// the whole allocator, and our figures as `<total>` and `<system>` elements.
    static func reportXML(into text: inout RawText) {
        let global = GlobalState.get()
        let totals = global.map { SharedAllocator.totals($0) } ?? Totals()
        let live = totals.liveSmallBytes + (global?.largeCounters.value(of: .liveBytes) ?? 0)
        let mapped = global?.counters.value(of: .bytesMapped) ?? 0
        let held = global?.heldSpans ?? (count: 0, bytes: 0)
        func element(_ name: StaticString, _ type: StaticString, size: Int, count: Int? = nil) {
            text.append("<")
            text.append(name)
            text.append(" type=\"")
            text.append(type)
            if let count {
                text.append("\" count=\"")
                text.append(count)
            }
            text.append("\" size=\"")
            text.append(size)
            text.append("\"/>\n")
        }
        text.append("<malloc version=\"1\" allocator=\"BinnedAlloc\">\n<heap nr=\"0\">\n")
        element("total", "live", size: live, count: totals.allocations - totals.deallocations)
        element("total", "cached", size: held.bytes, count: held.count)
        element("system", "current", size: mapped)
        element("system", "returned", size: global?.counters.value(of: .bytesReturned) ?? 0)
        text.append("</heap>\n")
        element("total", "mmap", size: mapped)
        element("system", "current", size: mapped)
        text.append("</malloc>\n")
    }

    static func releaseUnusedMemory() {
        guard let global = GlobalState.get() else { return }
        if let base = ThreadLocalSlot.binnedAlloc.value { ThreadCache(base).trim() }
        global.forEachParkedCache { $0.trim() }
        global.withFallbackLock { global.fallbackCache.trim() }
        global.emptySpanCache()
    }
}

// MARK: - Internals

// MARK: - Misuse

/// Heap misuse that every free checks for (issue 20), reported as glibc reports what it
/// catches: one line on stderr, then `abort()`, before the allocator changes anything.
///
/// - A double free of a small block: a free leaves a *mark* in the block's second word (the
///   process's random key mixed with the block's address) and every allocation clears it, so
///   a block freed and not handed out since still carries it, wherever it waits (a free
///   cache, a slab's free list, a remote list). A copy of a freed block elsewhere does not
///   carry a valid mark (the address differs), and no program can write one without the key.
///   Missed: a second free after the block was handed out again (it is then a live block of
///   its new owner), two threads freeing one block at the same instant, and a block whose
///   second word a write after free overwrote.
/// - A free of a pointer that is not a block's start: the offset in its slab is checked
///   against the class size (one multiplication) and the slab's last block.
/// - A free inside a slab that holds no blocks (reserved, pooled, a large block's pages) or of
///   memory BinnedAlloc never handed out (the `binned_*` names and the Swift API; the standard
///   names send such pointers to glibc, which has its own checks).
/// - A double free of a large block, or a pointer inside one (its header's magic).
@usableFromInline
enum Misuse {
    @usableFromInline
    enum Kind {
        case doubleFree, notABlockStart, noLiveSlab, notHandedOut
        /// The hardened build's (`Hardening`).
        case overflow, underflow, writeAfterFree, corruptedLink, corruptedFreeBlock
    }

    /// The byte offset of a freed small block's mark: its second word, since its first is a
    /// free-list link while it waits in a slab or a remote list.
    @inlinable static var markOffset: Int { 8 }

    /// The mark of a freed `block`: the process's key mixed with its address (in the hardened
    /// build with its top byte fixed, see `Hardening.withBoundaryByte`).
    @inlinable @inline(__always)
    static func mark(of block: UnsafeMutableRawPointer, key: UInt) -> UInt {
        let mark = key ^ UInt(bitPattern: block)
        return Hardening.isEnabled ? Hardening.withBoundaryByte(mark) : mark
    }

    /// Writes "BinnedAlloc: double free of 0x… (class 3, 64 B)" or its like to stderr and
    /// aborts. Allocates nothing: the line is built in a page from mmap.
    @usableFromInline @inline(never)
    static func report(_ kind: Kind, _ pointer: UnsafeMutableRawPointer, classIndex: Int? = nil) -> Never {
        if var text = try? RawText(capacity: 256) {
            switch kind {
            case .doubleFree: text.append("BinnedAlloc: double free of ")
            case .notABlockStart: text.append("BinnedAlloc: free of a pointer that is not a block's start: ")
            case .noLiveSlab: text.append("BinnedAlloc: free of a pointer in memory that holds no live block: ")
            case .notHandedOut: text.append("BinnedAlloc: free of a pointer BinnedAlloc did not hand out: ")
            case .overflow: text.append("BinnedAlloc: heap overflow: the bytes after the block were overwritten: ")
            case .underflow: text.append("BinnedAlloc: heap underflow: the word before the block was overwritten: ")
            case .writeAfterFree: text.append("BinnedAlloc: write after free into the freed block ")
            case .corruptedLink: text.append("BinnedAlloc: corrupted free list: a freed block's link was overwritten: ")
            case .corruptedFreeBlock:
                text.append("BinnedAlloc: heap corruption: the last word of a freed block (its neighbour's boundary) ")
                text.append("was overwritten: ")
            }
            text.appendHex(UInt(bitPattern: pointer))
            if let classIndex {
                text.append(" (class ")
                text.append(classIndex)
                text.append(", ")
                text.append(Layout.sizeClasses.size(ofClass: classIndex))
                text.append(" B)")
            } else if kind == .doubleFree || kind == .overflow || kind == .underflow {
                text.append(" (a large block)")
            }
            text.append("\n")
            try? text.write(to: 2)
        }
        abort()
    }
}

// MARK: - Hardening

/// The hardened build's checks (issue 20), compiled in by the package trait `Hardened`
/// (`swift build --traits Hardened`, which defines `BINNED_HARDENED`): `make` builds
/// `libbinnedmalloc-hardened.so` with it, and a Swift executable gets it with
/// `.package(path: ..., traits: ["Hardened"])`. Every use sits behind ``isEnabled``, a
/// constant the optimizer folds, so the default build carries none of it.
///
/// What it adds to the checks every build makes (`Misuse`), for the shared allocator and
/// the C ABI (a `LockedBinnedAllocator` gets the encoded links and the random carve only):
///
/// | check | catches | how |
/// |---|---|---|
/// | seal | a write past a small block, of 1 byte or more | a request gets ``sealBytes`` more; the block's last word holds the requested size and a keyed hash of it and the block's address, and up to ``patternBytes`` after the request hold ``pattern``; both checked at free |
/// | boundary | a write before a small block | at free, the word before the block (its neighbour's last, or the slab header's) must be a seal or a free mark, both with a fixed top byte; a free block's last word must still be its mark when it is handed out |
/// | poison | a write into a freed small block | its first word and its bytes from 16 to 64 (or its seal word) are filled at free, and checked when it is handed out again, when it leaves the free cache, and at exit for the exiting thread's free cache |
/// | encoded links | an overwrite of a freed block steering allocation | slab free-list links are stored XOR a secret and their own address, and must decode to a block of the same slab; remote-list blocks must belong to the cache collecting them |
/// | random carve | a heap layout an attacker can predict | each page of fresh blocks goes onto the free list in a random order |
/// | large blocks | writes past and after the free of a large block | a PROT_NONE tail after the user part (at least a page), cached spans PROT_NONE, a pattern after the request (the header's keyed last word, which catches writes before the block, is every build's) |
///
/// A block's usable size is what was asked for (`malloc_usable_size` says so), so that a
/// program writing up to it never touches the seal. Missed: writes past the pattern that
/// skip it (a store far past the end that lands in another live block), reads of freed
/// memory, poison writes that restore the pattern's bytes, and writes after free deeper
/// than the first cache line of a block. The costs are measured in `make bench` (its
/// BinnedMalloc-hardened column) and listed in docs/spec/BinnedAlloc.md.
@usableFromInline
enum Hardening {
    /// Whether this is the hardened build.
    @inlinable static var isEnabled: Bool {
        #if BINNED_HARDENED
            true
        #else
            false
        #endif
    }

    /// The seal's size: a word, the last of the block, so that it is aligned.
    @inlinable static var sealBytes: Int { 8 }
    /// The bytes after a request that hold ``pattern`` (fewer when the block has less room):
    /// enough for the first bytes of any overflow, at two stores.
    static let patternBytes = 16
    @inlinable static var pattern: UInt8 { 0xA5 }
    /// Freed blocks are poisoned up to this offset (or their seal word, in smaller blocks):
    /// one cache line, which the next user of the block touches anyway.
    static let poisonEnd = 64
    /// The poison: a byte no pointer or small integer is made of.
    @inlinable static var poisonWord: UInt { 0xDFDF_DFDF_DFDF_DFDF }
    /// The low bits of a seal that hold the requested size (at most 32 KiB).
    static let sealSizeMask: UInt = 0xFFFF

    /// The request a block is chosen for: `byteCount` and room for the seal when that is
    /// small, else a large block, which needs no room (its requested size is in its header).
    static func paddedByteCount(_ byteCount: Int) -> Int {
        byteCount <= Layout.smallSizeLimit - sealBytes
            ? byteCount + sealBytes : max(byteCount, Layout.smallSizeLimit + 1)
    }

    // MARK: Keys

    /// The process's secrets, random and written before the global page is published: one
    /// for seals and large headers, one for free-list links.
    static func sealKey(_ global: GlobalState) -> UInt {
        global.base.load(fromByteOffset: GlobalLayout.sealKeyOffset, as: UInt.self)
    }

    static func linkKey(_ global: GlobalState) -> UInt {
        global.base.load(fromByteOffset: GlobalLayout.linkKeyOffset, as: UInt.self)
    }

    // MARK: Small blocks

    /// The seal of a live block of `size` requested bytes at `block`: the size in the low 16
    /// bits, a keyed hash of the size and the address above them.
    static func seal(of block: UnsafeMutableRawPointer, size: Int, key: UInt) -> UInt {
        let mixed = (key ^ UInt(bitPattern: block) ^ UInt(size) &<< 48) &* 0x9E37_79B9_7F4A_7C15
        return withBoundaryByte(mixed & ~sealSizeMask | UInt(size))
    }

    /// `word` with its top byte, the byte just before the next block (little-endian), set to
    /// ``pattern``: a keyed word's top byte is random, and a 1-byte underflow that writes the
    /// value it already held changes nothing a check could see (1 time in 256); a fixed byte
    /// turns that into a write of ``pattern`` itself.
    @inlinable @inline(__always)
    static func withBoundaryByte(_ word: UInt) -> UInt { word & 0x00FF_FFFF_FFFF_FFFF | UInt(pattern) &<< 56 }

    /// Whether `word` is a valid seal of the block at `block` of `blockSize` bytes.
    static func isSeal(_ word: UInt, of block: UnsafeMutableRawPointer, blockSize: Int, key: UInt) -> Bool {
        let size = Int(word & sealSizeMask)
        return size <= blockSize - sealBytes && word == seal(of: block, size: size, key: key)
    }

    /// A small block handed out for `size` bytes: checks that its last word still holds the
    /// free mark (the next block's boundary: an underflow of that block may have hit it) and
    /// the poison its free left (a fresh block was marked and poisoned when carved), then
    /// clears the mark and writes the pattern and the seal (in a 16-byte block the seal
    /// replaces the mark, in one store, so that a neighbour's check never sees a cleared word).
    static func handOut(_ block: UnsafeMutableRawPointer, size: Int, classIndex: Int, global: GlobalState) {
        let blockSize = Layout.sizeClasses.size(ofClass: classIndex)
        guard (block + blockSize - sealBytes).load(as: UInt.self) == Misuse.mark(of: block, key: global.freeKey) else {
            Misuse.report(.corruptedFreeBlock, block, classIndex: classIndex)
        }
        checkPoison(block, blockSize: blockSize, classIndex: classIndex)
        if blockSize > Misuse.markOffset + sealBytes {
            block.storeBytes(of: 0, toByteOffset: Misuse.markOffset, as: UInt.self)
        }
        writeSeal(block, size: size, blockSize: blockSize, global: global)
    }

    static func writeSeal(_ block: UnsafeMutableRawPointer, size: Int, blockSize: Int, global: GlobalState) {
        let capacity = blockSize - sealBytes
        assert(size <= capacity, "BinnedAlloc: \(size) bytes do not fit a sealed block of \(blockSize)")
        writePattern(at: block + size, count: min(patternBytes, capacity - size))
        (block + capacity).storeBytes(of: seal(of: block, size: size, key: sealKey(global)), as: UInt.self)
    }

    /// The requested size a live small block's seal holds.
    static func sealedSize(of block: UnsafeMutableRawPointer, blockSize: Int) -> Int {
        Int((block + blockSize - sealBytes).load(as: UInt.self) & sealSizeMask)
    }

    /// The checks of a small block's free, after the double-free check and before the mark:
    /// its seal and pattern are intact (nothing wrote past it), and the word before it is
    /// its neighbour's seal or free mark, or the slab header's (nothing wrote before it).
    /// `freeKey` is the process's mark key.
    @usableFromInline
    static func checkFree(_ block: UnsafeMutableRawPointer, classIndex: Int, freeKey: UInt) {
        guard let global = GlobalState.get() else { return }
        let key = sealKey(global)
        let blockSize = Layout.sizeClasses.size(ofClass: classIndex)
        checkSeal(block, blockSize: blockSize, classIndex: classIndex, key: key)
        let previous = block - blockSize
        let before = (block - sealBytes).load(as: UInt.self)
        guard
            before == Misuse.mark(of: previous, key: freeKey)
                || isSeal(before, of: previous, blockSize: blockSize, key: key)
        else { Misuse.report(.underflow, block, classIndex: classIndex) }
    }

    static func checkSeal(_ block: UnsafeMutableRawPointer, blockSize: Int, classIndex: Int, key: UInt) {
        let capacity = blockSize - sealBytes
        let word = (block + capacity).load(as: UInt.self)
        guard isSeal(word, of: block, blockSize: blockSize, key: key) else {
            Misuse.report(.overflow, block, classIndex: classIndex)
        }
        let size = Int(word & sealSizeMask)
        guard isPatternIntact(at: block + size, count: min(patternBytes, capacity - size)) else {
            Misuse.report(.overflow, block, classIndex: classIndex)
        }
    }

    /// ``pattern`` in every byte of a word.
    static var patternWord: UInt { UInt(pattern) &* 0x0101_0101_0101_0101 }

    /// Writes `count` (at most ``patternBytes``) pattern bytes at `start`: two overlapping word
    /// stores from 8 bytes on (a call to memset cost more than the rest of a hand-out), else
    /// byte by byte.
    static func writePattern(at start: UnsafeMutableRawPointer, count: Int) {
        assert(count <= patternBytes, "BinnedAlloc: \(count) pattern bytes, more than \(patternBytes)")
        if count >= 8 {
            start.storeBytes(of: patternWord, as: UInt.self)
            (start + count - 8).storeBytes(of: patternWord, as: UInt.self)
        } else {
            for offset in 0..<count { (start + offset).storeBytes(of: pattern, as: UInt8.self) }
        }
    }

    static func isPatternIntact(at start: UnsafeMutableRawPointer, count: Int) -> Bool {
        if count >= 8 {
            return start.loadUnaligned(as: UInt.self) == patternWord
                && (start + count - 8).loadUnaligned(as: UInt.self) == patternWord
        }
        for offset in 0..<count where (start + offset).load(as: UInt8.self) != pattern { return false }
        return true
    }

    /// A small block just marked free: its first word, its poisoned line and its last word
    /// (the free mark, which the next block's free accepts as its boundary) are written.
    @usableFromInline
    static func poison(_ block: UnsafeMutableRawPointer, classIndex: Int, mark: UInt) {
        let blockSize = Layout.sizeClasses.size(ofClass: classIndex)
        block.storeBytes(of: poisonWord, as: UInt.self)
        poisonLine(block, blockSize: blockSize)
        (block + blockSize - sealBytes).storeBytes(of: mark, as: UInt.self)
    }

    /// Fills the poisoned words from the third on.
    static func poisonLine(_ block: UnsafeMutableRawPointer, blockSize: Int) {
        for offset in stride(from: 16, to: min(poisonEnd, blockSize - sealBytes), by: 8) {
            (block + offset).storeBytes(of: poisonWord, as: UInt.self)
        }
    }

    /// Traps unless the poisoned words from the third on are intact.
    static func checkPoison(_ block: UnsafeMutableRawPointer, blockSize: Int, classIndex: Int) {
        for offset in stride(from: 16, to: min(poisonEnd, blockSize - sealBytes), by: 8)
        where (block + offset).load(as: UInt.self) != poisonWord {
            Misuse.report(.writeAfterFree, block, classIndex: classIndex)
        }
    }

    /// Traps unless a block waiting in a free cache is as its free left it: its first word
    /// too holds poison there (no link).
    static func checkCachedBlock(_ block: UnsafeMutableRawPointer, classIndex: Int) {
        guard block.load(as: UInt.self) == poisonWord else {
            Misuse.report(.writeAfterFree, block, classIndex: classIndex)
        }
        checkPoison(block, blockSize: Layout.sizeClasses.size(ofClass: classIndex), classIndex: classIndex)
    }

    /// The first word of a block popped from a free cache (the rest is checked when it is
    /// handed out).
    @usableFromInline
    static func checkCachedWord(_ block: UnsafeMutableRawPointer) {
        guard block.load(as: UInt.self) == poisonWord else { Misuse.report(.writeAfterFree, block) }
    }

    /// Checks every block in `cache`'s free caches (the exiting thread's, at exit).
    static func checkFreeCaches(_ cache: ThreadCache) {
        for index in 0..<Layout.classCount {
            let bin = cache.bin(index)
            guard let slots = bin.cachedSlots else { continue }
            for slot in 0..<bin.cachedCount { checkCachedBlock(slots[slot], classIndex: index) }
        }
    }

    /// A fresh block, just linked onto its slab's free list: marked free (second and last
    /// word) and poisoned, as if freed, so that a free of it is a double free and the
    /// boundary check of the next block accepts it.
    static func prepareFresh(_ block: UnsafeMutableRawPointer, blockSize: Int, freeKey: UInt) {
        let mark = Misuse.mark(of: block, key: freeKey)
        block.storeBytes(of: mark, toByteOffset: Misuse.markOffset, as: UInt.self)
        poisonLine(block, blockSize: blockSize)
        (block + blockSize - sealBytes).storeBytes(of: mark, as: UInt.self)
    }

    // MARK: Links

    /// A free-list link as stored: XOR the link key and the link's own address (safe-linking
    /// with a secret), so that a pointer written into a freed block decodes to garbage.
    @usableFromInline @inline(never)
    static func encode(_ next: UnsafeMutableRawPointer?, at block: UnsafeMutableRawPointer) -> UInt {
        UInt(bitPattern: next) ^ (GlobalState.get().map(linkKey) ?? 0) ^ UInt(bitPattern: block)
    }

    /// The link stored in `block`, decoded; traps unless it is nil or a block start in the
    /// same slab.
    @usableFromInline @inline(never)
    static func decode(_ stored: UInt, at block: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
        let next = stored ^ (GlobalState.get().map(linkKey) ?? 0) ^ UInt(bitPattern: block)
        guard next != 0 else { return nil }
        let slab = UInt(bitPattern: Slab(containing: block).base)
        guard next & ~UInt(Layout.slabMask) == slab, next & UInt(Layout.quantum - 1) == 0,
            next - slab >= UInt(Layout.headerSize)
        else { Misuse.report(.corruptedLink, block) }
        return UnsafeMutableRawPointer(bitPattern: next)
    }

    /// The order fresh blocks go onto the free list in: a permutation of `0..<count` drawn
    /// with a generator seeded from the link key and `seed` (the carve cursor), written
    /// into the blocks' second words (`order(ofBlock:)` reads it back). Fisher–Yates.
    static func shuffle(count: Int, block: (Int) -> UnsafeMutableRawPointer, seed: UnsafeMutableRawPointer) {
        for index in 0..<count { block(index).storeBytes(of: index, toByteOffset: 8, as: Int.self) }
        var state = (GlobalState.get().map(linkKey) ?? 0) ^ UInt(bitPattern: seed)
        for index in stride(from: count - 1, to: 0, by: -1) {
            // SplitMix64: one multiply-xorshift step per draw.
            state = state &+ 0x9E37_79B9_7F4A_7C15
            var draw = (state ^ state &>> 30) &* 0xBF58_476D_1CE4_E5B9
            draw = (draw ^ draw &>> 27) &* 0x94D0_49BB_1331_11EB
            let other = Int((draw ^ draw &>> 31) % UInt(index + 1))
            let mine = block(index).load(fromByteOffset: 8, as: Int.self)
            block(index).storeBytes(
                of: block(other).load(fromByteOffset: 8, as: Int.self), toByteOffset: 8, as: Int.self)
            block(other).storeBytes(of: mine, toByteOffset: 8, as: Int.self)
        }
    }

    // MARK: Large blocks

    /// A large block's requested size and pattern (after the request, within its pages):
    /// written for every span, with the page-rounded size, and again by `allocate` with the
    /// size asked. (Its boundary word is every build's: `LargeSpan.writeBoundary`.)
    static func armLarge(_ span: LargeSpan, requested: Int) {
        span.header.storeBytes(of: requested, toByteOffset: LargeSpanLayout.requestedSizeOffset, as: Int.self)
        writePattern(at: span.user + requested, count: min(patternBytes, span.usableSize - requested))
    }

    static func requestedSize(of span: LargeSpan) -> Int {
        span.header.load(fromByteOffset: LargeSpanLayout.requestedSizeOffset, as: Int.self)
    }

    /// The hardened check of a large block's free: its pattern (its boundary word is
    /// checked in every build, `LargeSpan.checkBoundary`).
    static func checkLarge(_ span: LargeSpan) {
        span.checkBoundary()
        let requested = requestedSize(of: span)
        guard requested <= span.usableSize,
            isPatternIntact(at: span.user + requested, count: min(patternBytes, span.usableSize - requested))
        else { Misuse.report(.overflow, span.user) }
    }

    /// Closes (or opens) the span's guard: its mapping from the end of the user part on, at
    /// least a page (`LargeSpan.mappingSize(usable:)` adds one).
    static func guardTail(_ span: LargeSpan, closed: Bool) {
        let start = span.user + span.usableSize
        let byteCount = span.header + span.mappingSize - start
        if closed {
            try? SystemMemory.revokeAccess(start, byteCount: byteCount)
        } else {
            try? SystemMemory.commit(start, byteCount: byteCount)
        }
    }

    // MARK: The shared allocator's entry points

    /// `BinnedAllocator.allocate` and `malloc` in the hardened build: a block with room for its
    /// seal, sealed (or a large block, armed).
    @usableFromInline
    static func allocate(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer? {
        guard let global = GlobalState.get() else { return nil }
        // Most requests: small and at most 16-byte aligned, straight to their class
        // (`Block.Shape`'s division by the alignment cost more than all the checks).
        if byteCount <= Layout.smallSizeLimit - sealBytes && alignment > 0 && alignment &- 1 < Layout.quantum
            && alignment & (alignment &- 1) == 0
        {
            let classIndex = Layout.sizeClasses.index(for: byteCount &+ sealBytes)
            guard let block = SharedAllocator.allocateSmall(classIndex: classIndex) else { return nil }
            handOut(block, size: byteCount, classIndex: classIndex, global: global)
            return block
        }
        guard let block = SharedAllocator.allocateShaped(byteCount: paddedByteCount(byteCount), alignment: alignment)
        else { return nil }
        if Block.isLarge(block) {
            armLarge(LargeSpan(user: block), requested: byteCount)
        } else {
            handOut(block, size: byteCount, classIndex: Slab(containing: block).classIndex, global: global)
        }
        return block
    }

    /// The usable size: what was asked for.
    @usableFromInline
    static func usableSize(of pointer: UnsafeMutableRawPointer) -> Int {
        if Block.isLarge(pointer) {
            let span = LargeSpan(user: pointer)
            span.assertValid()
            return requestedSize(of: span)
        }
        let slab = Slab(containing: pointer)
        Slab.assertOwns(pointer)
        return sealedSize(of: pointer, blockSize: slab.blockSize)
    }

    /// `BinnedAllocator.reallocate` in the hardened build: in place when the size still
    /// fits the block and falls in its class or uses more than half of it (checked, then
    /// sealed again), else moved (a large block too: its guard and pattern move with a new
    /// mapping).
    static func reallocate(_ pointer: UnsafeMutableRawPointer, byteCount: Int) -> UnsafeMutableRawPointer? {
        guard let global = GlobalState.get(), byteCount <= Layout.maximumByteCount else { return nil }
        // The block's checks come first: the size its seal or header holds decides the copy.
        var alignment = Layout.quantum
        if Block.isLarge(pointer) {
            let span = LargeSpan(user: pointer)
            span.assertValid()
            checkLarge(span)
            alignment = span.alignment
            if byteCount <= span.usableSize && byteCount > span.usableSize / 2 {
                armLarge(span, requested: byteCount)
                return pointer
            }
        } else {
            let slab = Slab(containing: pointer)
            Slab.assertOwns(pointer)
            checkSeal(pointer, blockSize: slab.blockSize, classIndex: slab.classIndex, key: sealKey(global))
            let capacity = slab.blockSize - sealBytes
            // The default build's rule (`Block.reallocate`), for the padded request.
            if byteCount <= capacity
                && (byteCount > capacity / 2 || Layout.sizeClasses.index(for: byteCount + sealBytes) == slab.classIndex)
            {
                writeSeal(pointer, size: byteCount, blockSize: slab.blockSize, global: global)
                return pointer
            }
        }
        let oldSize = usableSize(of: pointer)
        guard let moved = allocate(byteCount: byteCount, alignment: alignment) else { return nil }
        moved.copyMemory(from: pointer, byteCount: min(oldSize, byteCount))
        SharedAllocator.deallocate(pointer)
        return moved
    }
}

// MARK: - Block

/// What every allocator does with a block, whatever its kind: where a request goes, how
/// big a block is, and how it is resized.
@usableFromInline
enum Block {
    /// Whether `pointer` is a large block (its address is slab-aligned).
    @inlinable
    static func isLarge(_ pointer: UnsafeMutableRawPointer) -> Bool {
        Int(bitPattern: pointer) & Layout.slabMask == 0
    }

    /// Makes the first `byteCount` bytes of a block just allocated read as zero. A slab
    /// block is reused: cleared. A large span is cleared up to where it reads as zero
    /// (`LargeSpan.zeroedFrom`): a fresh mapping not at all, and its pages fault in as the
    /// program touches them (as glibc's calloc leaves them); the pages a cached span gained
    /// by mremap read as zero, and are faulted in with one call where clearing took a fault
    /// a page: `big-blocks-5-25mib` 1.29 to 1.04 ms a block (A/B, medians of 5 runs), peak
    /// RSS unchanged (clearing had made those pages resident as well).
    ///
    /// Before those pages are faulted in, the whole span is advised transparent huge pages
    /// (`MADV_HUGEPAGE`, a hint the kernel may ignore): every page of the range is about
    /// to be resident anyway, so a 2 MiB page costs no more memory than 512 small ones, and
    /// it is faulted in and later freed at a fraction of their cost. Measured on this
    /// project's VM (16 MiB, means of 30 rounds): populating 372 against 42 µs a MiB,
    /// unmapping 65 against 2.9. `big-blocks-5-25mib`: 1.13–1.26 to 0.93–1.14 ms a block
    /// (medians of 5–7 alternating runs, four sets; tcmalloc 0.75–0.81), peak RSS 434 to
    /// 435 MiB. Only spans calloc fills like this are advised: a fresh mapping that a
    /// program touches sparsely keeps small pages, and its resident set the pages it
    /// touched. The advice covers the whole mapping, so that the span stays one mapping
    /// that mremap can grow or move.
    @usableFromInline
    static func clear(_ block: UnsafeMutableRawPointer, byteCount: Int) {
        guard isLarge(block) else {
            memset(block, 0, byteCount)
            return
        }
        let span = LargeSpan(user: block)
        let zeroedFrom = min(span.zeroedFrom, byteCount)
        guard zeroedFrom > 0 else { return }
        memset(block, 0, zeroedFrom)
        if zeroedFrom < byteCount, let end = alignUp(byteCount, to: SystemInfo.pageSize) {
            try? SystemMemory.advise(span.header, byteCount: span.mappingSize, .hugePage)
            try? SystemMemory.advise(block + zeroedFrom, byteCount: end - zeroedFrom, .populateWrite)
        }
    }

    /// Where a request goes.
    enum Shape {
        case small(classIndex: Int)
        case large(byteCount: Int, alignment: Int)

        /// nil for an alignment or a size too large. The caller has checked that the
        /// alignment is a power of two.
        init?(byteCount: Int, alignment: Int) {
            assert(isPowerOfTwo(alignment), "BinnedAlloc: alignment \(alignment) is not a power of two")
            guard alignment <= Layout.maximumAlignment, byteCount <= Layout.maximumByteCount else { return nil }
            if byteCount <= Layout.smallSizeLimit && alignment <= Layout.headerSize {
                // Blocks sit at `slab + page + i * size`: a class whose size is a multiple of
                // the alignment gives aligned blocks. Powers of two close every group of 4
                // classes, so the walk takes at most 3 steps.
                var index = Layout.sizeClasses.index(for: max(byteCount, alignment))
                while Layout.sizeClasses.size(ofClass: index) % alignment != 0 { index += 1 }
                if index < Layout.classCount {
                    self = .small(classIndex: index)
                    return
                }
            }
            self = .large(byteCount: max(byteCount, 1), alignment: alignment)
        }
    }

    /// The usable size of a block of any kind.
    @usableFromInline
    static func usableSize(of pointer: UnsafeMutableRawPointer) -> Int {
        if isLarge(pointer) {
            let span = LargeSpan(user: pointer)
            span.assertValid()
            return span.usableSize
        }
        let slab = Slab(containing: pointer)
        Slab.assertOwns(pointer)
        return slab.blockSize
    }

    /// Reallocation shared by the allocators: in place within the block's class (or when
    /// it still fits and is used more than half), by remapping for large spans, else by
    /// moving.
    static func reallocate(
        _ pointer: UnsafeMutableRawPointer, byteCount: Int,
        allocate: (Int) -> UnsafeMutableRawPointer?, deallocate: (UnsafeMutableRawPointer) -> Void
    ) -> UnsafeMutableRawPointer? {
        guard byteCount <= Layout.maximumByteCount else { return nil }
        let oldSize: Int
        if isLarge(pointer) {
            if byteCount > Layout.smallSizeLimit {
                return LargeSpan.resize(pointer, byteCount: byteCount, classSized: true)
            }
            oldSize = LargeSpan(user: pointer).usableSize
        } else {
            let slab = Slab(containing: pointer)
            Slab.assertOwns(pointer)
            oldSize = slab.blockSize
            // The same class, or a bigger one still more than half used (a block whose class
            // was raised for alignment), stays where it is.
            if byteCount <= oldSize
                && (byteCount > oldSize / 2 || Layout.sizeClasses.index(for: byteCount) == slab.classIndex)
            {
                return pointer
            }
        }
        guard let moved = allocate(byteCount) else { return nil }
        moved.copyMemory(from: pointer, byteCount: min(oldSize, byteCount))
        deallocate(pointer)
        return moved
    }
}

// MARK: - ThreadCache

/// A thread cache: one page (`ThreadCacheLayout`) holding a thread's bins, or a locked
/// allocator's (the same structure, shared by whoever holds the allocator's lock). Only
/// its owner touches it, except `remoteFrees`, which any thread pushes to, and the
/// counters, which any thread reads.
@usableFromInline
struct ThreadCache {
    @usableFromInline let base: UnsafeMutableRawPointer

    @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }

    /// A thread's own cache, or a locked one (a `LockedBinnedAllocator`'s, or the fallback
    /// cache of exiting threads), which takes no batched remote frees.
    enum Kind: Int { case perThread = 0, locked = 1 }

    /// Remote frees for one owner are pushed as one chain once this many wait: one
    /// compare-exchange per 64 cross-thread frees, and never more than 63 blocks parked
    /// in a thread that stops freeing.
    static let remoteBatchLimit = 64
    /// How many blocks of a class a thread's free cache holds: 64 KiB of them (`bytes`), at
    /// least 4 and at most 256; and for a class where that is fewer than 64 blocks (those
    /// above 1 KiB), up to 64 blocks as long as they take at most twice as many bytes. Enough
    /// that a thread alternating frees and allocations of a class reuses the blocks it just
    /// freed, still warm in its cache, without touching a slab, and that a batch of a few
    /// hundred blocks of 1 to 4 KiB, freed together and allocated again, stays in it (with
    /// 16 blocks of 4 KiB it overflowed and went back through its slabs:
    /// `batch-1000-16-4096` 8.2 to 7.4 ns a block, tcmalloc 8.0, medians of 10 alternating
    /// runs); little enough that 40 classes hold at most 3.2 MiB per thread (tcmalloc's
    /// thread cache: 4 MiB), given back at exit. Doubling every class's bytes instead
    /// held 0.5 to 1.3 MiB more at the peak of `thread-churn-t2` and
    /// `producer-consumer-16-1024`, whose blocks are at most 1 KiB. `bytes` is
    /// `BinnedAllocConfiguration.freeCacheBytes`; the slot arrays are sized for the most it
    /// may be.
    static func freeCacheLimit(
        ofClass classIndex: Int, bytes: Int = BinnedAllocConfiguration.maximumFreeCacheBytes
    ) -> Int {
        let size = Layout.sizeClasses.size(ofClass: classIndex)
        return min(256, max(4, bytes / size, min(64, 2 * bytes / size)))
    }

    /// Empty slabs a cache keeps warm for any class before returning them to the OS: two
    /// absorb the churn of a working set that hovers around a slab boundary, and bound
    /// what an idle cache holds to 512 KiB.
    static let reserveSlabLimit = 2

    @inlinable
    func bin(_ classIndex: Int) -> Bin {
        Bin(base + (ThreadCacheLayout.binsOffset &+ classIndex &* BinLayout.stride))
    }

    var remoteFrees: AtomicPushList { AtomicPushList(at: base + ThreadCacheLayout.remoteFreesOffset) }

    /// Written once when the cache is made, before any of its blocks exists.
    var kind: Kind {
        Kind(rawValue: base.load(fromByteOffset: ThreadCacheLayout.kindOffset, as: Int.self)).unsafelyUnwrapped
    }

    /// What the granule entries of this cache's slabs hold in their high bits, so that a free
    /// knows its own cache's blocks: 1 to 1023, given in the order thread caches are made
    /// (they are reused, never freed, so a process with up to 1,023 threads at once has them
    /// all tagged); `GranuleMap.noTag` for a later one and for a locked cache, whose slabs'
    /// entries hold 0, which matches no cache. Written once when the cache is made.
    @inlinable var tag: UInt16 { base.load(fromByteOffset: ThreadCacheLayout.tagOffset, as: UInt16.self) }

    /// The process's key (`GlobalState.freeKey`), in a thread's cache for its free fast path.
    @inlinable var freeKey: UInt { base.load(fromByteOffset: ThreadCacheLayout.freeKeyOffset, as: UInt.self) }

    /// What a free checks a block's offset from its slab's first block against, per class:
    /// Lemire's divisibility constant for the class size (`offset` is a multiple of it when
    /// `offset × divisor`, wrapping, is at most `divisor − 1`; exact for every offset below
    /// 2^32), and the offset of the slab's last block. Written when a thread's cache is made.
    @usableFromInline
    struct ClassCheck {
        @usableFromInline let divisor: UInt64
        @usableFromInline let lastOffset: UInt64

        init(classIndex: Int) {
            let size = Layout.sizeClasses.size(ofClass: classIndex)
            divisor = UInt64.max / UInt64(size) &+ 1
            lastOffset = UInt64(((Layout.slabSize - Layout.headerSize) / size - 1) * size)
        }

        /// Whether `offset` (from the slab's first block; negative in the header page) is a
        /// block's start.
        @inlinable @inline(__always)
        func isBlockStart(_ offset: Int) -> Bool {
            let unsigned = UInt64(bitPattern: Int64(offset))  // negative: far above lastOffset
            return unsigned <= lastOffset && unsigned &* divisor <= divisor &- 1
        }
    }

    /// The class of a small request of `byteCount` bytes. Up to
    /// `ThreadCacheLayout.classTableLimit` it is one byte of the cache's class table,
    /// indexed by 16-byte steps, where `SizeClasses.index(for:)` is a chain of about ten
    /// dependent instructions (bsr and shifts) on the way to the bin. Medians of 10
    /// alternating runs of `malloc`: `batch-1000-16-4096` 10.5 to 8.6 ns a block (tcmalloc
    /// 8.1), `random-slots-1024-t1` 9.4 to 9.0, `pairs-64` 5.0 both ways.
    @inlinable @inline(__always)
    func classIndex(for byteCount: Int) -> Int {
        guard byteCount <= ThreadCacheLayout.classTableLimit else { return Layout.sizeClasses.index(for: byteCount) }
        let classIndex = Int(
            base.load(fromByteOffset: ThreadCacheLayout.classTableOffset &+ (byteCount &+ 15) &>> 4, as: UInt8.self))
        assert(
            classIndex == Layout.sizeClasses.index(for: byteCount),
            "BinnedAlloc: the class table says \(classIndex) for \(byteCount) bytes")
        return classIndex
    }

    @inlinable
    func classCheck(_ classIndex: Int) -> ClassCheck {
        base.load(
            fromByteOffset: ThreadCacheLayout.classChecksOffset &+ classIndex &* ThreadCacheLayout.classCheckStride,
            as: ClassCheck.self)
    }

    /// The checks of a free that no correct program fails, before anything changes: `block`
    /// must be a block's start, and not already freed (its second word does not hold the
    /// mark a free leaves, the key mixed with its address). Then it marks the block. Traps
    /// with one line on stderr (`Misuse`) when a check fails.
    @inlinable @inline(__always)
    func checkAndMarkFree(_ block: UnsafeMutableRawPointer, classIndex: Int) {
        let offset = Int(bitPattern: block) & Layout.slabMask &- Layout.headerSize
        if _slowPath(!classCheck(classIndex).isBlockStart(offset)) {
            Misuse.report(.notABlockStart, block, classIndex: classIndex)
        }
        let mark = Misuse.mark(of: block, key: freeKey)
        if _slowPath(block.load(fromByteOffset: Misuse.markOffset, as: UInt.self) == mark) {
            Misuse.report(.doubleFree, block, classIndex: classIndex)
        }
        if Hardening.isEnabled { Hardening.checkFree(block, classIndex: classIndex, freeKey: freeKey) }
        block.storeBytes(of: mark, toByteOffset: Misuse.markOffset, as: UInt.self)
        if Hardening.isEnabled { Hardening.poison(block, classIndex: classIndex, mark: mark) }
    }

    /// Whether a thread's cache is in use by a thread, parked, or being trimmed by
    /// `releaseUnusedMemory()`; an adopter that pops a cache being trimmed waits for it.
    enum Ownership: Int { case active = 0, parked = 1, trimming = 2 }

    var ownership: AtomicWord { AtomicWord(at: base + ThreadCacheLayout.ownershipOffset) }

    /// Where the cache's link on the global stack of parked caches lies.
    var parkedLink: UnsafeMutableRawPointer { base + ThreadCacheLayout.parkedLinkOffset }

    /// The cache whose parked-stack link is `link`.
    init(parkedLink link: UnsafeMutableRawPointer) { base = link - ThreadCacheLayout.parkedLinkOffset }

    var registryNext: UnsafeMutableRawPointer? {
        get { base.load(fromByteOffset: ThreadCacheLayout.registryNextOffset, as: UnsafeMutableRawPointer?.self) }
        nonmutating set {
            base.storeBytes(
                of: newValue, toByteOffset: ThreadCacheLayout.registryNextOffset, as: UnsafeMutableRawPointer?.self)
        }
    }

    var largeCounters: Counters<LargeEvent> { Counters(at: base + ThreadCacheLayout.largeCountersOffset) }

    /// Every slab this cache owns in a class (current, partial or full; not the reserve),
    /// so that a locked allocator can unmap them all at deinit.
    var ownedSlabs: IntrusiveList {
        IntrusiveList(anchor: base + ThreadCacheLayout.ownedSlabsOffset, linkOffset: SlabLayout.ownedLinksOffset)
    }

    /// Empty slabs kept warm for any class (at most `reserveSlabLimit`).
    var reserve: IntrusiveList {
        IntrusiveList(anchor: base + ThreadCacheLayout.reserveOffset, linkOffset: SlabLayout.placeLinksOffset)
    }

    var reserveCount: Int {
        get { base.load(fromByteOffset: ThreadCacheLayout.reserveCountOffset, as: Int.self) }
        nonmutating set {
            base.storeBytes(of: newValue, toByteOffset: ThreadCacheLayout.reserveCountOffset, as: Int.self)
        }
    }

    /// The large spans of a locked cache, linked through their headers (under
    /// `withLargeSpans`).
    var largeSpans: IntrusiveList {
        IntrusiveList(anchor: base + ThreadCacheLayout.largeSpansOffset, linkOffset: LargeSpanLayout.linksOffset)
    }

    /// Runs `body` holding the lock that guards a locked cache's list of large spans (a
    /// lock of its own, so that freeing a span never waits for the cache's block lock).
    func withLargeSpans<Result>(_ body: () -> Result) -> Result {
        (base + ThreadCacheLayout.largeSpansLockOffset).assumingMemoryBound(to: SpinLock.self).pointee.withLock(body)
    }

    /// Unmaps every large span still linked (a locked allocator's deinit).
    func releaseAllLargeSpans() {
        while let header = withLargeSpans({ largeSpans.first }) {
            LargeSpan.free(LargeSpan(header: header).user)
        }
    }

    /// Maps a cache (and registers a thread's cache with `global`). Its page comes zeroed:
    /// every list empty, every counter 0 (a zero word is a zero `Counters` entry, so the
    /// counters are attached, not initialized: `Counters(initializingAt:)` asks the
    /// runtime for `allCases`, which allocates, and nothing on a malloc path may).
    static func create(kind: Kind, global: GlobalState?) -> ThreadCache? {
        guard let base = try? PageSource().allocate(byteCount: ThreadCacheLayout.byteCount) else { return nil }
        let cache = ThreadCache(base)
        _ = AtomicPushList(initializingAt: base + ThreadCacheLayout.remoteFreesOffset)
        base.storeBytes(of: kind.rawValue, toByteOffset: ThreadCacheLayout.kindOffset, as: Int.self)
        var tag = GranuleMap.noTag
        if kind == .perThread, let global {
            let next = global.word(GlobalLayout.nextCacheTagOffset).wrappingAdd(1, ordering: .relaxed) + 1
            if next < GranuleMap.tagLimit { tag = UInt16(next) }
        }
        base.storeBytes(of: tag, toByteOffset: ThreadCacheLayout.tagOffset, as: UInt16.self)
        _ = AtomicWord(initializingAt: base + ThreadCacheLayout.ownershipOffset, to: Ownership.active.rawValue)
        (base + ThreadCacheLayout.largeSpansLockOffset).bindMemory(to: SpinLock.self, capacity: 1).initialize(
            to: SpinLock())
        if kind == .perThread, let global {
            let bytes = global.word(GlobalLayout.freeCacheBytesOffset).load(ordering: .relaxed)
            var slots = base + ThreadCacheLayout.freeCacheSlotsOffset
            for index in 0..<Layout.classCount {
                let capacity = freeCacheLimit(ofClass: index)
                cache.bin(index).cachedSlots = slots.bindMemory(to: UnsafeMutableRawPointer.self, capacity: capacity)
                cache.bin(index).cachedLimit = freeCacheLimit(ofClass: index, bytes: bytes)
                slots += capacity &* MemoryLayout<UnsafeMutableRawPointer>.stride
            }
            base.storeBytes(of: global.freeKey, toByteOffset: ThreadCacheLayout.freeKeyOffset, as: UInt.self)
            for index in 0..<Layout.classCount {
                base.storeBytes(
                    of: ClassCheck(classIndex: index),
                    toByteOffset: ThreadCacheLayout.classChecksOffset + index * ThreadCacheLayout.classCheckStride,
                    as: ClassCheck.self)
            }
            for step in 0...ThreadCacheLayout.classTableLimit / 16 {
                base.storeBytes(
                    of: UInt8(Layout.sizeClasses.index(for: step * 16)),
                    toByteOffset: ThreadCacheLayout.classTableOffset + step, as: UInt8.self)
            }
            global.register(cache)
            global.counters.add(1, to: .threadCaches)
        }
        return cache
    }

    static func unmapHeader(_ cache: ThreadCache) {
        try? PageSource().release(cache.base, byteCount: ThreadCacheLayout.byteCount)
    }

    /// Takes a cache just popped from the parked stack for the calling thread, waiting
    /// while `releaseUnusedMemory()` trims it.
    func claimParked() {
        while !ownership.compareExchange(
            expected: Ownership.parked.rawValue, desired: Ownership.active.rawValue, ordering: .acquiringAndReleasing
        ).exchanged {
            sched_yield()
        }
    }

    // MARK: Allocation

    /// A block of class `classIndex`: the free cache, the current slab's free list, else
    /// the refill path.
    func allocate(classIndex: Int) -> UnsafeMutableRawPointer? {
        bin(classIndex).pop() ?? refill(classIndex: classIndex)
    }

    /// The current slab ran dry: collect remote frees; then take the first partial slab if
    /// it holds a page of freed blocks, else carve fresh blocks of the current slab, else
    /// (the current slab is exhausted) take any partial slab, else a new slab.
    ///
    /// Freed blocks before fresh pages: a freed block's page is resident already, a fresh
    /// page becomes resident when it is carved. The current slab, with never-used pages
    /// left, then waits first on the partial list: a later refill takes it back, carves one
    /// page of it, and at the refill after that compares it with the slab behind it the same
    /// way. Requiring a page of freed blocks keeps refills as rare as carving does (a carve
    /// also yields a page). Thread churn at 2 threads
    /// (`compare-worker-binnedmalloc`, medians of 10 alternating runs, peak RSS): 26.8 →
    /// 25.9 MiB; random sizes at 2 threads: 45.7 → 43.7 MiB; time within the noise, and
    /// cachegrind counts within 1.5% on a python3 JSON program.
    func refill(classIndex: Int) -> UnsafeMutableRawPointer? {
        flushRemoteBatch()
        collectRemoteFrees()
        let bin = bin(classIndex)
        if let slab = bin.current, slab.freeList == nil {
            if slab.bumpCursor == slab.bumpEnd {
                // Exhausted: it leaves the bin and is on no list but the owned one until a
                // free lands.
                slab.state = .full
                bin.current = nil
            } else if let front = bin.partial.first.map({ Slab($0) }), front.holdsFreedPage {
                assert(slab.used > 0, "BinnedAlloc: current slab \(slab.base) has nothing carved")
                slab.state = .partial
                bin.partial.remove(front.base)
                bin.partial.pushFront(slab.base)
                front.state = .current
                bin.current = front
            } else {
                slab.carve()
            }
        }
        if bin.current == nil {
            if let slab = bin.popPartial() {
                slab.state = .current
                bin.current = slab
            } else if let slab = acquireSlab(classIndex: classIndex) {
                bin.current = slab
            } else {
                return nil
            }
        }
        let slab = bin.current!
        if slab.freeList == nil { slab.carve() }
        guard let block = bin.popCurrent() else {
            assertionFailure("BinnedAlloc: slab \(slab.base) of class \(classIndex) has no block after refill")
            return nil
        }
        return block
    }

    /// A slab for class `classIndex`, current and owned by this cache: from the cache's
    /// reserve, the global pool, or a newly mapped chunk.
    func acquireSlab(classIndex: Int) -> Slab? {
        let slab: Slab
        if let reserved = popReserve() {
            slab = reserved
        } else if let global = GlobalState.get(), let pooled = global.takeSlab() {
            slab = pooled
        } else {
            return nil
        }
        slab.format(classIndex: classIndex, owner: self)
        ownedSlabs.pushFront(slab.base)
        bin(classIndex).counters.addFromOwner(1, to: .slabs)
        return slab
    }

    // MARK: Deallocation

    /// A block freed by this cache's thread, of a thread cache's slab of class
    /// `classIndex` (this cache's or another's): appended to the free cache; when that
    /// reaches its limit, the older half goes back to the slabs.
    @inlinable @inline(__always)
    func cacheFreed(_ block: UnsafeMutableRawPointer, classIndex: Int) {
        Slab.assertOwns(block)
        let bin = bin(classIndex)
        let count = bin.cachedCount
        assert(count < bin.cachedLimit, "BinnedAlloc: a free cache was left full")
        bin.cachedSlots.unsafelyUnwrapped[count] = block
        bin.cachedCount = count &+ 1
        bin.counters.addFromOwner(1, to: .deallocations)
        if _slowPath(count &+ 1 == bin.cachedLimit) { trimFreeCache(classIndex: classIndex, keeping: (count &+ 1) / 2) }
    }

    /// Sends all but the newest `keeping` blocks of a class's free cache back to their
    /// slabs, and moves the newest down to the array's start.
    @usableFromInline @inline(never)
    func trimFreeCache(classIndex: Int, keeping: Int) {
        let bin = bin(classIndex)
        let count = bin.cachedCount
        guard count > keeping else { return }
        let slots = bin.cachedSlots.unsafelyUnwrapped
        let leaving = count &- keeping
        for index in 0..<leaving {
            let block = slots[index]
            if Hardening.isEnabled { Hardening.checkCachedBlock(block, classIndex: classIndex) }
            let slab = Slab(containing: block)
            if slab.owner == base {
                freeLocal(block, in: slab)
            } else {
                batchRemoteFree(block, owner: ThreadCache(slab.owner))
            }
        }
        // Forward, so that the overlapping ranges copy right.
        for index in 0..<keeping { slots[index] = slots[leaving &+ index] }
        bin.cachedCount = keeping
    }

    /// Sends every class's free cache back to the slabs (thread exit, trim).
    func emptyFreeCaches() {
        for index in 0..<Layout.classCount { trimFreeCache(classIndex: index, keeping: 0) }
    }

    /// Puts a block of a slab this cache owns back on the slab's free list (the free was
    /// counted when the caller freed it).
    @inlinable @inline(__always)
    func freeLocal(_ block: UnsafeMutableRawPointer, in slab: Slab) {
        Slab.link(block, to: slab.freeList)
        slab.freeList = block
        slab.used &-= 1
        if _slowPath(slab.state != .current) { freedIntoNonCurrent(slab) }
    }

    /// A free landed in a slab that is not its class's current one: a full slab becomes
    /// partial again, and a slab with no block left in use is retired.
    @usableFromInline @inline(never)
    func freedIntoNonCurrent(_ slab: Slab) {
        let bin = bin(slab.classIndex)
        if slab.state == .full {
            slab.state = .partial
            bin.partial.pushFront(slab.base)
        }
        if slab.used == 0 {
            bin.partial.remove(slab.base)
            retire(slab)
        }
    }

    /// The batch of remote frees waiting to be pushed to one owner: its first and last
    /// block and its length.
    var batchOwner: UnsafeMutableRawPointer? {
        get { base.load(fromByteOffset: ThreadCacheLayout.batchOwnerOffset, as: UnsafeMutableRawPointer?.self) }
        nonmutating set {
            base.storeBytes(
                of: newValue, toByteOffset: ThreadCacheLayout.batchOwnerOffset, as: UnsafeMutableRawPointer?.self)
        }
    }

    var batchHead: UnsafeMutableRawPointer? {
        get { base.load(fromByteOffset: ThreadCacheLayout.batchHeadOffset, as: UnsafeMutableRawPointer?.self) }
        nonmutating set {
            base.storeBytes(
                of: newValue, toByteOffset: ThreadCacheLayout.batchHeadOffset, as: UnsafeMutableRawPointer?.self)
        }
    }

    var batchTail: UnsafeMutableRawPointer? {
        get { base.load(fromByteOffset: ThreadCacheLayout.batchTailOffset, as: UnsafeMutableRawPointer?.self) }
        nonmutating set {
            base.storeBytes(
                of: newValue, toByteOffset: ThreadCacheLayout.batchTailOffset, as: UnsafeMutableRawPointer?.self)
        }
    }

    var batchCount: Int {
        get { base.load(fromByteOffset: ThreadCacheLayout.batchCountOffset, as: Int.self) }
        nonmutating set {
            base.storeBytes(of: newValue, toByteOffset: ThreadCacheLayout.batchCountOffset, as: Int.self)
        }
    }

    /// Adds a remote free to the batch for `owner`; a batch for another owner, or a full
    /// one, is pushed first.
    @usableFromInline
    func batchRemoteFree(_ block: UnsafeMutableRawPointer, owner: ThreadCache) {
        var count = batchCount
        if count > 0 && batchOwner != owner.base {
            flushRemoteBatch()
            count = 0
        }
        if count == 0 {
            AtomicPushList.link(block, to: nil)
            batchOwner = owner.base
            batchTail = block
        } else {
            AtomicPushList.link(block, to: batchHead)
        }
        batchHead = block
        batchCount = count + 1
        if count + 1 >= ThreadCache.remoteBatchLimit { flushRemoteBatch() }
    }

    /// Pushes the waiting remote frees to their owner with one compare-exchange. A parked
    /// owner is trimmed at once (``GlobalState/trimIfParked(_:)``): no thread would collect
    /// the frees until one adopts it or the purger runs, and meanwhile the slabs they empty
    /// could not be reused.
    func flushRemoteBatch() {
        guard batchCount > 0 else { return }
        let owner = ThreadCache(batchOwner!)
        owner.remoteFrees.pushChain(first: batchHead!, last: batchTail!)
        batchCount = 0
        if owner.ownership.load(ordering: .relaxed) == Ownership.parked.rawValue {
            GlobalState.get()?.trimIfParked(owner)
        }
    }

    /// Takes every block other threads freed into this cache's slabs and frees it locally.
    func collectRemoteFrees() {
        var node = remoteFrees.takeAll()
        while let block = node {
            node = AtomicPushList.next(after: block)
            let slab = Slab(containing: block)
            if Hardening.isEnabled && slab.owner != base { Misuse.report(.corruptedLink, block) }
            assert(
                slab.owner == base, "BinnedAlloc: remote free of \(block) reached thread cache \(base), not its owner")
            freeLocal(block, in: slab)
        }
    }

    // MARK: Slabs

    /// An empty slab leaves this cache's class: into the reserve, else back to the OS.
    /// The slab is on no place list (it was current, or just left its partial list).
    func retire(_ slab: Slab) {
        assert(slab.used == 0, "BinnedAlloc: retiring slab \(slab.base) with \(slab.used) blocks in use")
        // The place lists share the slab's links, and the only node of a list has nil links
        // like a slab on none: the state tells that it left its old place.
        assert(
            slab.state == .current || slab.state == .partial,
            "BinnedAlloc: retiring slab \(slab.base) in state \(slab.state), which is not in a class")
        bin(slab.classIndex).counters.addFromOwner(-1, to: .slabs)
        GranuleMap.setClass(of: slab, to: nil, tag: GranuleMap.noTag)
        ownedSlabs.remove(slab.base)
        if reserveCount < ThreadCache.reserveSlabLimit {
            // No magic while it holds no blocks, so that a free into it fails `checkAndMarkFree`.
            slab.magicWord = 0
            slab.state = .reserved
            reserve.pushFront(slab.base)
            reserveCount += 1
        } else {
            GlobalState.get()?.returnSlab(slab)
        }
    }

    func popReserve() -> Slab? {
        guard let first = reserve.popFront() else { return nil }
        reserveCount -= 1
        return Slab(first)
    }

    /// Sends every reserved slab back to the OS.
    func releaseReserve() {
        while let slab = popReserve() { GlobalState.get()?.returnSlab(slab) }
    }

    /// Gives back what the cache holds without need: empties its free caches and pushes its
    /// remote batch, collects the frees other threads made into it, then takes every class's
    /// current slab out of its bin and releases its reserve.
    func trim() {
        emptyFreeCaches()
        flushRemoteBatch()
        collectRemoteFrees()
        releaseCurrentSlabs()
        releaseReserve()
    }

    /// Takes each class's current slab out of its bin (thread exit, trim): an empty one is
    /// retired, one with blocks left to hand out goes onto the partial list, a full one onto
    /// no list. A current slab never retires, so in a parked cache it would stay resident,
    /// emptied by other threads' frees, until a thread adopts the cache; as a partial or
    /// full slab it retires at the trim or refill that collects its last block. An adopter's
    /// first allocation of a class takes the slow path, which collects the remote frees
    /// before it takes a partial slab. Thread churn (`compare-worker-binnedmalloc`, medians
    /// of 6 to 8 runs each, peak RSS): 27.7 to 26.5 MiB at 2 threads, 50.0 to 45.8 at 4,
    /// 87.4 to 78.3 at 8, time unchanged (jemalloc: 21.2, 41.0, 69.0).
    func releaseCurrentSlabs() {
        for index in 0..<Layout.classCount {
            let bin = bin(index)
            guard let slab = bin.current else { continue }
            bin.current = nil
            if slab.used == 0 {
                retire(slab)
            } else if slab.freeList != nil || slab.bumpCursor < slab.bumpEnd {
                slab.state = .partial
                bin.partial.pushFront(slab.base)
            } else {
                slab.state = .full
            }
        }
    }

    /// Unmaps every slab (a locked allocator's deinit): the partial lists are emptied
    /// first, so that each slab leaves every list before it goes to the pool.
    func releaseAllSlabs() {
        releaseReserve()
        for index in 0..<Layout.classCount {
            let bin = bin(index)
            bin.current = nil
            while bin.partial.popFront() != nil {}
        }
        while let slab = ownedSlabs.popFront() { GlobalState.get()?.returnSlab(Slab(slab)) }
    }

    // MARK: Statistics

    func addStatistics(to statistics: inout BinnedAllocStatistics) {
        for index in 0..<Layout.classCount {
            let bin = bin(index)
            let allocations = bin.counters.value(of: .allocations)
            let deallocations = bin.counters.value(of: .deallocations)
            statistics.sizeClasses[index].allocations += allocations
            statistics.sizeClasses[index].deallocations += deallocations
            statistics.sizeClasses[index].liveBlocks += allocations - deallocations
            statistics.sizeClasses[index].slabs += bin.counters.value(of: .slabs)
        }
    }
}

// MARK: - Bin

/// One size class of a thread cache (`BinLayout`): its current slab, the slabs with free
/// blocks, and counters.
@usableFromInline
struct Bin {
    @usableFromInline let base: UnsafeMutableRawPointer

    @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }

    /// The slab allocations pop from.
    @inlinable
    var current: Slab? {
        get { Slab(optional: base.load(fromByteOffset: BinLayout.currentOffset, as: UnsafeMutableRawPointer?.self)) }
        nonmutating set {
            base.storeBytes(
                of: newValue?.base, toByteOffset: BinLayout.currentOffset, as: UnsafeMutableRawPointer?.self)
        }
    }

    /// Slabs (not current) with at least one free block, or a never-used one (a current slab
    /// that left its bin at a trim).
    var partial: IntrusiveList {
        IntrusiveList(anchor: base + BinLayout.partialOffset, linkOffset: SlabLayout.placeLinksOffset)
    }

    /// Counters written by the owner only, read by `statistics()` on any thread.
    @inlinable var counters: Counters<BinEvent> { Counters(at: base + BinLayout.countersOffset) }

    /// The free cache: blocks of this class that this thread freed, oldest first, in an
    /// array of `cachedLimit` slots in the cache's mapping (set when the cache is made; nil
    /// in a locked cache). Any thread's slabs' blocks, still counted in use by their slabs.
    /// An array, not a list through the blocks: a pop reads no block, so the block handed
    /// out is not loaded (a cache miss when the working set is large) until the caller
    /// touches it, and a free writes nothing into the block.
    @inlinable
    var cachedSlots: UnsafeMutablePointer<UnsafeMutableRawPointer>? {
        get {
            base.load(
                fromByteOffset: BinLayout.cachedSlotsOffset, as: UnsafeMutablePointer<UnsafeMutableRawPointer>?.self)
        }
        nonmutating set {
            base.storeBytes(
                of: newValue, toByteOffset: BinLayout.cachedSlotsOffset,
                as: UnsafeMutablePointer<UnsafeMutableRawPointer>?.self)
        }
    }

    @inlinable
    var cachedCount: Int {
        get { base.load(fromByteOffset: BinLayout.cachedCountOffset, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: BinLayout.cachedCountOffset, as: Int.self) }
    }

    /// Set when the cache is made (`ThreadCache.freeCacheLimit(ofClass:)`); 0 in a locked
    /// cache, which keeps no free cache.
    @inlinable
    var cachedLimit: Int {
        get { base.load(fromByteOffset: BinLayout.cachedLimitOffset, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: BinLayout.cachedLimitOffset, as: Int.self) }
    }

    /// A block for the caller: the free cache's newest, else the current slab's next free
    /// block; nil when both are empty. The whole fast path of allocation.
    @inlinable @inline(__always)
    func pop() -> UnsafeMutableRawPointer? {
        let count = cachedCount
        if count != 0 {
            cachedCount = count &- 1
            counters.addFromOwner(1, to: .allocations)
            let block = cachedSlots.unsafelyUnwrapped[count &- 1]
            if Hardening.isEnabled {
                Hardening.checkCachedWord(block)
            } else {
                block.storeBytes(of: 0, toByteOffset: Misuse.markOffset, as: UInt.self)
            }
            return block
        }
        return popCurrent()
    }

    /// Pops a block from the current slab's free list, or nil when there is no current
    /// slab or it has no free block.
    @inlinable @inline(__always)
    func popCurrent() -> UnsafeMutableRawPointer? {
        guard let slab = current, let block = slab.freeList else { return nil }
        slab.freeList = Slab.next(after: block)
        slab.used &+= 1
        counters.addFromOwner(1, to: .allocations)
        // The hardened build clears the mark when it seals the block (`Hardening.handOut`).
        if !Hardening.isEnabled { block.storeBytes(of: 0, toByteOffset: Misuse.markOffset, as: UInt.self) }
        return block
    }

    func popPartial() -> Slab? { partial.popFront().map { Slab($0) } }
}

// MARK: - Counters

// Each event enum knows the bytes of its `Counters` from its last case: `Counters.byteCount`
// asks the runtime for `allCases`, which allocates, and the layout check runs inside malloc
// (a test checks that the two agree).

/// The counters of a bin.
@usableFromInline enum BinEvent: Int, CaseIterable {
    case allocations, deallocations, slabs
    static var byteCount: Int { (slabs.rawValue + 1) * 8 }
}

/// Large-block counters of an allocator.
@usableFromInline enum LargeEvent: Int, CaseIterable {
    case allocations, deallocations, liveBytes
    static var byteCount: Int { (liveBytes.rawValue + 1) * 8 }
}

/// Process-wide counters.
enum GlobalEvent: Int, CaseIterable {
    case bytesMapped, bytesReturned, threadCaches, parkedThreadCaches, pooledSlabs, cachedSpans, cachedSpanBytes
    /// Spans on the release queue (`GlobalState.releaseQueue`), and their usable bytes.
    case queuedSpans, queuedSpanBytes
    /// How often each global lock was taken.
    case poolLocks, spanCacheLocks, fallbackLocks
    /// Purges that returned memory (`GlobalState.purge`).
    case purges
    static var byteCount: Int { (purges.rawValue + 1) * 8 }
}

// MARK: - Slab

/// A slab: 256 KiB, aligned to its size, whose first page is this header (`SlabLayout`)
/// and whose other pages hold blocks of one class. Fields other than `magic` and `owner`
/// are the owner thread cache's alone.
///
/// A slab is in exactly one place, which its `state` names: its bin's current slot, its
/// bin's partial list, nowhere (full, until a free lands), its cache's reserve, or the
/// global pool. The partial list, the reserve and the pool share the slab's place links
/// (a slab is in at most one of them); a slab that belongs to a class is also on its
/// cache's owned list, through links of its own. `integrityViolation()` checks all of it.
@usableFromInline
struct Slab {
    @usableFromInline let base: UnsafeMutableRawPointer

    @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }

    @inlinable init?(optional base: UnsafeMutableRawPointer?) {
        guard let base else { return nil }
        self.base = base
    }

    /// The slab holding a small block.
    @inlinable
    init(containing block: UnsafeMutableRawPointer) {
        base = UnsafeMutableRawPointer(bitPattern: Int(bitPattern: block) & ~Layout.slabMask)!
    }

    /// "BINNEDSL", mixed with the address so a copied header does not validate elsewhere.
    static let magic = 0x4249_4E4E_4544_534C

    /// Where the slab is (see the type's comment).
    @usableFromInline
    enum State: Int { case current = 0, partial = 1, full = 2, reserved = 3, pooled = 4 }

    var magicWord: Int {
        get { base.load(fromByteOffset: SlabLayout.magicOffset, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: SlabLayout.magicOffset, as: Int.self) }
    }

    /// The owning thread cache's address; written when the slab is formatted, read by
    /// freeing threads (an atomic word, since they may be other threads).
    @inlinable
    var owner: UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: AtomicWord(at: base + SlabLayout.ownerOffset).load(ordering: .relaxed))!
    }

    @inlinable
    var classIndex: Int { base.load(fromByteOffset: SlabLayout.classIndexOffset, as: Int.self) }
    @inlinable
    var blockSize: Int { base.load(fromByteOffset: SlabLayout.blockSizeOffset, as: Int.self) }
    var blockCount: Int { base.load(fromByteOffset: SlabLayout.blockCountOffset, as: Int.self) }

    /// Whether the free list holds at least a page's worth of blocks (one block of a class
    /// larger than a page).
    var holdsFreedPage: Bool {
        let size = blockSize
        let carved = bumpCursor - (base + Layout.headerSize)
        return carved - used &* size >= max(size, SystemInfo.pageSize)
    }

    @inlinable
    var freeList: UnsafeMutableRawPointer? {
        get { base.load(fromByteOffset: SlabLayout.freeListOffset, as: UnsafeMutableRawPointer?.self) }
        nonmutating set {
            base.storeBytes(of: newValue, toByteOffset: SlabLayout.freeListOffset, as: UnsafeMutableRawPointer?.self)
        }
    }

    /// Blocks handed out and not freed back to this slab (remote frees count once collected).
    @inlinable
    var used: Int {
        get { base.load(fromByteOffset: SlabLayout.usedOffset, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: SlabLayout.usedOffset, as: Int.self) }
    }

    var bumpCursor: UnsafeMutableRawPointer {
        get { base.load(fromByteOffset: SlabLayout.bumpCursorOffset, as: UnsafeMutableRawPointer.self) }
        nonmutating set {
            base.storeBytes(of: newValue, toByteOffset: SlabLayout.bumpCursorOffset, as: UnsafeMutableRawPointer.self)
        }
    }

    var bumpEnd: UnsafeMutableRawPointer {
        get { base.load(fromByteOffset: SlabLayout.bumpEndOffset, as: UnsafeMutableRawPointer.self) }
        nonmutating set {
            base.storeBytes(of: newValue, toByteOffset: SlabLayout.bumpEndOffset, as: UnsafeMutableRawPointer.self)
        }
    }

    @inlinable
    var state: State {
        get { State(rawValue: base.load(fromByteOffset: SlabLayout.stateOffset, as: Int.self)).unsafelyUnwrapped }
        nonmutating set { base.storeBytes(of: newValue.rawValue, toByteOffset: SlabLayout.stateOffset, as: Int.self) }
    }

    /// The link of a free block: its first word (encoded in the hardened build, see
    /// `Hardening.encode`).
    @inlinable
    static func next(after block: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
        if Hardening.isEnabled { return Hardening.decode(block.load(as: UInt.self), at: block) }
        return block.load(as: UnsafeMutableRawPointer?.self)
    }

    @inlinable
    static func link(_ block: UnsafeMutableRawPointer, to next: UnsafeMutableRawPointer?) {
        if Hardening.isEnabled { return block.storeBytes(of: Hardening.encode(next, at: block), as: UInt.self) }
        block.storeBytes(of: next, as: UnsafeMutableRawPointer?.self)
    }

    /// Makes the slab an empty current slab of `classIndex` owned by `owner`. The slab is
    /// in no list (it just left the reserve or the pool, or is fresh from the OS).
    func format(classIndex: Int, owner: ThreadCache) {
        let blockSize = Layout.sizeClasses.size(ofClass: classIndex)
        let blockCount = (Layout.slabSize - Layout.headerSize) / blockSize
        magicWord = Slab.magic ^ Int(bitPattern: base)
        AtomicWord(at: base + SlabLayout.ownerOffset).store(Int(bitPattern: owner.base), ordering: .releasing)
        base.storeBytes(of: classIndex, toByteOffset: SlabLayout.classIndexOffset, as: Int.self)
        base.storeBytes(of: blockSize, toByteOffset: SlabLayout.blockSizeOffset, as: Int.self)
        base.storeBytes(of: blockCount, toByteOffset: SlabLayout.blockCountOffset, as: Int.self)
        freeList = nil
        used = 0
        bumpCursor = base + Layout.headerSize
        bumpEnd = base + Layout.headerSize + blockCount * blockSize
        if Hardening.isEnabled, let key = GlobalState.get()?.freeKey {
            // The first block's boundary: the free mark of the block that would precede it.
            let mark = Misuse.mark(of: base + Layout.headerSize - blockSize, key: key)
            base.storeBytes(of: mark, toByteOffset: SlabLayout.boundaryOffset, as: UInt.self)
        }
        state = .current
        GranuleMap.setClass(of: self, to: owner.kind == .perThread ? classIndex : nil, tag: owner.tag)
    }

    /// Moves never-used blocks onto the free list, lowest address first: those that end
    /// within the cursor's page (at least one), so pages are touched as they are needed.
    func carve() {
        let cursor = bumpCursor
        let remaining = bumpEnd - cursor
        guard remaining > 0 else { return }
        let size = blockSize
        let pageEnd = alignUp(cursor + 1, to: SystemInfo.pageSize)!
        let count = min(max(1, (pageEnd - cursor) / size), remaining / size)
        bumpCursor = cursor + count * size
        if Hardening.isEnabled { return carveShuffled(from: cursor, count: count) }
        for index in 0..<(count - 1) {
            (cursor + index * size).storeBytes(of: cursor + (index + 1) * size, as: UnsafeMutableRawPointer.self)
        }
        (cursor + (count - 1) * size).storeBytes(of: freeList, as: UnsafeMutableRawPointer?.self)
        freeList = cursor
    }

    /// The hardened build's carve: the `count` blocks from `cursor` go onto the free list in
    /// a random order (`Hardening.shuffle`), each marked free and poisoned.
    func carveShuffled(from cursor: UnsafeMutableRawPointer, count: Int) {
        let size = blockSize
        Hardening.shuffle(count: count, block: { cursor + $0 * size }, seed: cursor)
        var next = freeList
        for index in (0..<count).reversed() {
            let block = cursor + (cursor + index * size).load(fromByteOffset: 8, as: Int.self) * size
            Slab.link(block, to: next)
            next = block
        }
        freeList = next
        guard let key = GlobalState.get()?.freeKey else { return }
        for index in 0..<count { Hardening.prepareFresh(cursor + index * size, blockSize: size, freeKey: key) }
    }

    /// The checks of a free on a slow path, from the slab's header: the slab holds blocks
    /// (its magic is valid: it is in a class), `block` is a block's start, and it is not
    /// already freed (`ThreadCache.checkAndMarkFree`). Then it marks the block. Traps with one
    /// line on stderr (`Misuse`) when a check fails.
    func checkAndMarkFree(_ block: UnsafeMutableRawPointer) {
        // Not the state: the owner changes it (current, partial, full) while other threads
        // free the slab's blocks. A slab without blocks (reserved, pooled) has no magic.
        guard magicWord == Slab.magic ^ Int(bitPattern: base) else { Misuse.report(.noLiveSlab, block) }
        let offset = block - (base + Layout.headerSize)
        guard offset >= 0, offset < blockCount * blockSize, offset % blockSize == 0 else {
            Misuse.report(.notABlockStart, block, classIndex: classIndex)
        }
        guard let key = GlobalState.get()?.freeKey else { return }
        let mark = Misuse.mark(of: block, key: key)
        if block.load(fromByteOffset: Misuse.markOffset, as: UInt.self) == mark {
            Misuse.report(.doubleFree, block, classIndex: classIndex)
        }
        // A `LockedBinnedAllocator`'s blocks carry no seals.
        let sealed = Hardening.isEnabled && holdsSharedBlocks
        if sealed { Hardening.checkFree(block, classIndex: classIndex, freeKey: key) }
        block.storeBytes(of: mark, toByteOffset: Misuse.markOffset, as: UInt.self)
        if sealed { Hardening.poison(block, classIndex: classIndex, mark: mark) }
    }

    /// Whether the slab's blocks are the shared allocator's: its owner is a thread's cache or
    /// the fallback cache of exiting threads, not a `LockedBinnedAllocator`.
    var holdsSharedBlocks: Bool {
        ThreadCache(owner).kind == .perThread || owner == GlobalState.get()?.fallbackCache.base
    }

    /// In debug builds, traps unless `block` is a block boundary of a live slab. Static, so
    /// that a release build does not even find the slab (nor check that its address is not 0).
    @inlinable
    static func assertOwns(_ block: UnsafeMutableRawPointer) {
        assert(
            Slab(containing: block).ownsBlock(block),
            "BinnedAlloc: \(block) was not allocated by BinnedAlloc, or its slab was freed")
    }

    @usableFromInline
    func ownsBlock(_ block: UnsafeMutableRawPointer) -> Bool {
        guard SystemMemory.isMapped(base), magicWord == Slab.magic ^ Int(bitPattern: base) else { return false }
        let offset = block - (base + Layout.headerSize)
        return offset >= 0 && offset < blockCount * blockSize && offset % blockSize == 0
    }
}

// MARK: - LargeSpan

/// A large block: a mapping whose user part starts on a slab boundary, with this header
/// (`LargeSpanLayout`) in the page before it; the user part is slab-aligned (and aligned
/// to the request) and holds the usable size.
///
/// The mapping is the header page and the user part, up to the end of the user part's last
/// granule (see `mappingSize(usable:)`). A span of a `LockedBinnedAllocator` is on its
/// thread cache's list of large spans (under that list's lock), so that the allocator's
/// deinit unmaps what is still allocated, whichever path frees it before.
///
/// Spans of the shared allocator up to ``spanCacheMaximumSize`` are sized in classes (four
/// per doubling) and, when freed, wait in the global span cache for the next request of
/// their class: a freed 100 KiB block is reused warm, without mmap, munmap and page faults.
struct LargeSpan {
    let header: UnsafeMutableRawPointer

    /// "BINNEDLG", mixed with the header's address.
    static let magic = 0x4249_4E4E_4544_4C47

    init(user: UnsafeMutableRawPointer) { header = user - Layout.headerSize }

    init(header: UnsafeMutableRawPointer) { self.header = header }

    var user: UnsafeMutableRawPointer { header + Layout.headerSize }
    var usableSize: Int { header.load(fromByteOffset: LargeSpanLayout.usableSizeOffset, as: Int.self) }
    var alignment: Int { header.load(fromByteOffset: LargeSpanLayout.alignmentOffset, as: Int.self) }
    var mappingSize: Int { LargeSpan.mappingSize(usable: usableSize) }

    /// Whether the header carries its magic (a live span; a cached or foreign one does not).
    var hasMagic: Bool {
        header.load(fromByteOffset: LargeSpanLayout.magicOffset, as: Int.self) == LargeSpan.magic
            ^ Int(bitPattern: header)
    }

    /// The mapping of a span with `usable` bytes: the header page and the user part up to
    /// the end of its last granule. Untouched, the tail costs address space only, and it
    /// keeps every granule the span's user part touches wholly the span's, which the
    /// granule map relies on (no other mapping, glibc's included, can land in it). The
    /// hardened build adds a page, so that the guard after the user part is never empty.
    static func mappingSize(usable: Int) -> Int {
        Layout.headerSize + alignUp(usable + (Hardening.isEnabled ? SystemInfo.pageSize : 0), to: Layout.slabSize)!
    }

    var owner: ThreadCache? {
        header.load(fromByteOffset: LargeSpanLayout.ownerOffset, as: UnsafeMutableRawPointer?.self).map {
            ThreadCache($0)
        }
    }

    /// Where the user part reads as zero from, as the span was handed out: 0 for a fresh
    /// mapping, the old mapping's end for a cached span grown by mremap (its new pages are
    /// the kernel's), `Int.max` when nothing is known (a reused or resized span).
    var zeroedFrom: Int { header.load(fromByteOffset: LargeSpanLayout.zeroedFromOffset, as: Int.self) }

    /// Writes a new header. The span is in no list: fresh from the kernel (zeroed), or from
    /// the span cache (a shared span, never on a list).
    func write(usableSize: Int, alignment: Int, owner: ThreadCache?, zeroedFrom: Int) {
        header.storeBytes(
            of: LargeSpan.magic ^ Int(bitPattern: header), toByteOffset: LargeSpanLayout.magicOffset, as: Int.self)
        header.storeBytes(of: usableSize, toByteOffset: LargeSpanLayout.usableSizeOffset, as: Int.self)
        header.storeBytes(of: alignment, toByteOffset: LargeSpanLayout.alignmentOffset, as: Int.self)
        header.storeBytes(
            of: owner?.base, toByteOffset: LargeSpanLayout.ownerOffset, as: UnsafeMutableRawPointer?.self)
        header.storeBytes(of: zeroedFrom, toByteOffset: LargeSpanLayout.zeroedFromOffset, as: Int.self)
        writeBoundary()
        if Hardening.isEnabled { Hardening.armLarge(self, requested: usableSize) }
        if let owner { owner.withLargeSpans { owner.largeSpans.pushFront(header) } }
    }

    /// The word just before the user part (the header page's last): the process key XOR
    /// the user address, its top byte ``Hardening/pattern``. A write into those 8 bytes
    /// changes it (a 1-byte underflow hits the top byte, which only `pattern` leaves
    /// unchanged), and `free` and `realloc` report it as an underflow before they change
    /// anything.
    func boundary(global: GlobalState) -> UInt {
        Hardening.withBoundaryByte(global.freeKey ^ UInt(bitPattern: user))
    }

    /// Writes ``boundary(global:)``: for every new header, and again after a move.
    func writeBoundary() {
        guard let global = GlobalState.get() else { return }
        header.storeBytes(of: boundary(global: global), toByteOffset: LargeSpanLayout.boundaryOffset, as: UInt.self)
    }

    /// Reports an underflow (and aborts) unless the boundary word is intact.
    func checkBoundary() {
        guard let global = GlobalState.get() else { return }
        guard header.load(fromByteOffset: LargeSpanLayout.boundaryOffset, as: UInt.self) == boundary(global: global)
        else { Misuse.report(.underflow, user) }
    }

    /// A new size after an in-place resize or a move.
    func resized(usableSize: Int) {
        header.storeBytes(of: usableSize, toByteOffset: LargeSpanLayout.usableSizeOffset, as: Int.self)
        header.storeBytes(of: Int.max, toByteOffset: LargeSpanLayout.zeroedFromOffset, as: Int.self)
        if Hardening.isEnabled { Hardening.armLarge(self, requested: usableSize) }
    }

    /// After a span of the cache was grown from `oldUsable` bytes for a new owner: its user
    /// part reads as zero from the end of the old mapping's (the rest of that granule may
    /// hold what the span held when it was larger).
    func grew(from oldUsable: Int) {
        header.storeBytes(
            of: LargeSpan.mappingSize(usable: oldUsable) - Layout.headerSize,
            toByteOffset: LargeSpanLayout.zeroedFromOffset, as: Int.self)
    }

    /// After `mremap` moved the span, its magic names the new place.
    func markMoved() {
        header.storeBytes(
            of: LargeSpan.magic ^ Int(bitPattern: header), toByteOffset: LargeSpanLayout.magicOffset, as: Int.self)
        writeBoundary()
    }

    /// Forgets the magic: a cached span is no live block, so a late free of it traps in
    /// debug builds (and a double free is caught before it is cached twice).
    func clearMagic() {
        header.storeBytes(of: 0, toByteOffset: LargeSpanLayout.magicOffset, as: Int.self)
    }

    func assertValid() {
        assert(
            SystemMemory.isMapped(header) && hasMagic,
            "BinnedAlloc: \(user) was not allocated by BinnedAlloc, or was already freed")
    }

    /// Where the user part of a span of `usable` bytes goes when it is mapped or moved:
    /// slab-aligned (so frees recognise it), and aligned as asked. Above
    /// ``spanCacheMaximumSize`` it starts on a huge page (2 MiB), so that when the span is
    /// advised huge pages (`Block.clear`) they line up with its user part; it costs address
    /// space only. (A span grown in place keeps its place.)
    static func userAlignment(_ alignment: Int, usable: Int) -> Int {
        max(alignment, usable > spanCacheMaximumSize ? SystemInfo.hugePageSize : Layout.slabSize)
    }

    /// The largest span sized in classes. Above it spans are sized in pages, and a request
    /// that no cached span fits grows the largest smaller one (see `allocateShared`): a
    /// program cycling buffers of 5 to 25 MiB then reuses resident pages, as glibc's heap
    /// does, where each fresh mapping faulted in every page again (9 ms a block, against
    /// glibc's 1 ms, in `big-blocks-5-25mib`).
    static let spanCacheMaximumSize = 4 << 20

    /// How long a cached span waits before a miss may unmap it to make room: 10 ms. Spans
    /// that a program reuses come back within microseconds; one that waited longer fits
    /// nothing the program asks for now. Measured (one run each, time and peak RSS):
    /// python3 building and parsing a 120,000-element JSON document, 133 MiB with no
    /// eviction, 122 MiB with it (glibc 116 MiB, jemalloc 119 MiB); `stress.c` (8 threads,
    /// 1 B to 1 MiB), 1.25 s at 386 MiB with none, 0.8 s at 307 MiB with it, and 4.3 s when
    /// a miss evicted spans of any age (its buffers were unmapped between uses).
    static let staleSpanAge = 10_000_000

    /// The usable size of a cacheable span for `byteCount`: its class, four per doubling
    /// (at most 25% more, which stays untouched address space until written). nil above
    /// ``spanCacheMaximumSize``.
    static func cacheClassSize(for byteCount: Int) -> Int? {
        guard byteCount > Layout.smallSizeLimit, byteCount <= spanCacheMaximumSize else { return nil }
        // (2^k, 2^(k+1)] in steps of 2^(k-2): 40, 48, 56, 64 KiB, 80, 96... always whole pages.
        let step = 1 << (log2Floor(byteCount - 1) - 2)
        return (byteCount + step - 1) & ~(step - 1)
    }

    /// A block of the shared allocator: a warm span from the cache that fits, else (above
    /// ``spanCacheMaximumSize``) a smaller cached span grown with mremap, so that only the
    /// pages it gains fault in, else a new mapping (of the class size when it is one).
    static func allocateShared(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer? {
        guard alignment <= Layout.slabSize, let global = GlobalState.get(),
            let size = cacheClassSize(for: byteCount) ?? alignUp(byteCount, to: SystemInfo.pageSize)
        else { return allocate(byteCount: byteCount, alignment: alignment) }
        defer { global.noteLargeLive() }
        if let header = global.takeCachedSpan(usableSize: size, orSmaller: size > spanCacheMaximumSize) {
            let span = reuse(header, alignment: alignment, global: global)
            let usable = LargeSpan(user: span).usableSize
            // Above the classes a span with more than 1/8 to spare is cut to the request
            // (mremap in place, the tail's pages freed), so that slack does not add up to
            // resident memory; cutting every span down cost 6% more time in
            // `big-blocks-5-25mib`, whose requests then grew more cached spans. A smaller
            // span is grown, so that only the pages it gains fault in.
            guard size > spanCacheMaximumSize, usable < size || usable > size + size / 8 else { return span }
            if let resized = resize(span, byteCount: size) {
                // Past the old mapping's end the pages are new: calloc need not clear them.
                if usable < size { LargeSpan(user: resized).grew(from: usable) }
                return resized
            }
            if usable >= size { return span }
            free(span, cacheable: true)
        }
        // A miss maps new memory: as much goes first, oldest first, of the queued spans, then
        // of the cached spans that are stale, so that spans that fit nothing do not add to
        // the peak.
        var evicted = global.releaseQueuedSpans(atLeast: size)
        let staleBefore = Int(SystemInfo.monotonicNanoseconds()) - staleSpanAge
        while evicted < size {
            let bytes = global.evictOldestSpan(cachedBefore: staleBefore)
            if bytes == 0 { break }
            evicted += bytes
        }
        global.purgeIfDue()
        return allocate(byteCount: size, alignment: alignment)
    }

    /// A span taken from the cache, made a live block of the shared allocator again.
    private static func reuse(
        _ header: UnsafeMutableRawPointer, alignment: Int, global: GlobalState
    ) -> UnsafeMutableRawPointer {
        let span = LargeSpan(header: header)
        let usable = span.usableSize
        if Hardening.isEnabled { try? SystemMemory.commit(span.user, byteCount: usable) }
        span.write(usableSize: usable, alignment: alignment, owner: nil, zeroedFrom: .max)
        global.largeCounters.add(1, to: .allocations)
        global.largeCounters.add(usable, to: .liveBytes)
        return span.user
    }

    /// Maps `byteCount` (rounded up to pages) with a header page before it, the user part
    /// aligned: one mmap where the page source's guess of an aligned place succeeds, else an
    /// over-sized one trimmed on both sides (`PageSource.allocate(byteCount:alignment:offset:)`).
    static func allocate(byteCount: Int, alignment: Int, owner: ThreadCache? = nil) -> UnsafeMutableRawPointer? {
        let page = SystemInfo.pageSize
        // The global state (and with it the granule map) exists before any block is mapped.
        guard byteCount <= Layout.maximumByteCount, let usable = alignUp(byteCount, to: page),
            let global = GlobalState.get()
        else { return nil }
        let savedErrno = errno
        defer { errno = savedErrno }
        let size = mappingSize(usable: usable)
        guard
            let start = try? PageSource().allocate(
                byteCount: size, alignment: userAlignment(alignment, usable: usable), offset: Layout.headerSize)
        else { return nil }
        let user = start + Layout.headerSize
        let end = start + size
        guard GranuleMap.covers(user, byteCount: usable) else {
            try? SystemMemory.unmap(start, byteCount: size)
            return nil
        }
        let span = LargeSpan(user: user)
        span.write(usableSize: usable, alignment: alignment, owner: owner, zeroedFrom: 0)
        if Hardening.isEnabled { Hardening.guardTail(span, closed: true) }
        GranuleMap.mark(user, byteCount: usable)
        global.counters.add(end - start, to: .bytesMapped)
        span.counters?.add(1, to: .allocations)
        span.counters?.add(usable, to: .liveBytes)
        return user
    }

    /// The counters a span is counted in: its locked allocator's, or the global ones.
    var counters: Counters<LargeEvent>? { owner?.largeCounters ?? GlobalState.get()?.largeCounters }

    /// Unmaps a span, counted where it was allocated, or keeps it in the span cache when
    /// it is a shared allocator's span of a cache class. errno is left as it was.
    static func free(_ pointer: UnsafeMutableRawPointer, cacheable: Bool = false) {
        let span = LargeSpan(user: pointer)
        if !span.hasMagic {
            // A cached span's magic is 0: freed once already, and not handed out since.
            let magic = span.header.load(fromByteOffset: LargeSpanLayout.magicOffset, as: Int.self)
            Misuse.report(magic == 0 ? .doubleFree : .notHandedOut, pointer)
        }
        if Hardening.isEnabled { Hardening.checkLarge(span) } else { span.checkBoundary() }
        let savedErrno = errno
        defer { errno = savedErrno }
        let size = span.mappingSize
        let counters = span.counters
        if let owner = span.owner { owner.withLargeSpans { owner.largeSpans.remove(span.header) } }
        counters?.add(1, to: .deallocations)
        counters?.add(-span.usableSize, to: .liveBytes)
        if cacheable, span.owner == nil, span.alignment <= Layout.slabSize,
            span.usableSize > spanCacheMaximumSize || cacheClassSize(for: span.usableSize) == span.usableSize,
            let global = GlobalState.get(),
            // The hardened build closes a span before it is published in the cache (a write
            // after free then faults); one the cache refuses is unmapped anyway.
            !Hardening.isEnabled || (try? SystemMemory.revokeAccess(span.user, byteCount: span.usableSize)) != nil,
            global.cacheSpan(span.header, usableSize: span.usableSize)
        {
            global.startPurgerIfNeeded()
            global.purgeIfDue()
            return
        }
        if let global = GlobalState.get() {
            global.counters.add(-size, to: .bytesMapped)
            global.counters.add(size, to: .bytesReturned)
        }
        GranuleMap.unmark(span.user, byteCount: span.usableSize)
        try? SystemMemory.unmap(span.header, byteCount: size)
    }

    /// Resizes a span's user part to `byteCount` (rounded up to pages): shrinks in place,
    /// grows in place when the address space after it is free, else moves the pages to a
    /// new aligned place with mremap (no copy). nil when the OS refuses; the span is then
    /// unchanged.
    /// `classSized`: the span is a block of the shared allocator, kept in the span cache's
    /// classes so that it can be cached when freed.
    static func resize(
        _ pointer: UnsafeMutableRawPointer, byteCount: Int, classSized: Bool = false
    ) -> UnsafeMutableRawPointer? {
        let span = LargeSpan(user: pointer)
        span.assertValid()
        span.checkBoundary()
        // A span on a locked allocator's list leaves it, under the list's lock, while its
        // header may move (no neighbour may link to a header in flight), and the span, moved
        // or not, goes back on.
        guard let owner = span.owner else {
            return resizeUnlocked(span, byteCount: byteCount, counters: span.counters, classSized: classSized)
        }
        return owner.withLargeSpans {
            owner.largeSpans.remove(span.header)
            let resized = resizeUnlocked(span, byteCount: byteCount, counters: owner.largeCounters, classSized: false)
            owner.largeSpans.pushFront(LargeSpan(user: resized ?? pointer).header)
            return resized
        }
    }

    static func resizeUnlocked(
        _ span: LargeSpan, byteCount: Int, counters: Counters<LargeEvent>?, classSized: Bool
    ) -> UnsafeMutableRawPointer? {
        guard Hardening.isEnabled else {
            return resizeMapping(span, byteCount: byteCount, counters: counters, classSized: classSized)
        }
        // mremap moves only a range of one protection: the guard opens for the resize and
        // closes again after the user part's new end.
        Hardening.guardTail(span, closed: false)
        let resized = resizeMapping(span, byteCount: byteCount, counters: counters, classSized: classSized)
        Hardening.guardTail(LargeSpan(user: resized ?? span.user), closed: true)
        return resized
    }

    static func resizeMapping(
        _ span: LargeSpan, byteCount: Int, counters: Counters<LargeEvent>?, classSized: Bool
    ) -> UnsafeMutableRawPointer? {
        let pointer = span.user
        let page = SystemInfo.pageSize
        guard byteCount <= Layout.maximumByteCount, var usable = alignUp(byteCount, to: page) else { return nil }
        let oldUsable = span.usableSize
        let alignment = span.alignment
        // A shared span stays in the cache's classes, so that it can be cached when freed;
        // and one still more than half used keeps its size rather than shrinking by a page.
        if classSized && alignment <= Layout.slabSize, let classSize = cacheClassSize(for: byteCount) {
            if byteCount <= oldUsable && byteCount > oldUsable / 2 { return pointer }
            usable = classSize
        }
        if usable == oldUsable { return pointer }
        let savedErrno = errno
        defer { errno = savedErrno }
        let oldSize = span.mappingSize
        let newSize = mappingSize(usable: usable)
        let global = GlobalState.get()
        // Within the same granules the mapping stays as it is.
        if newSize == oldSize {
            span.resized(usableSize: usable)
            counters?.add(usable - oldUsable, to: .liveBytes)
            return pointer
        }
        // Shrinking always succeeds in place; growing in place needs free address space
        // after the span. Granules leave the map before their address space is given up,
        // and join it after it is taken: in between, another thread may map the same
        // addresses and mark them.
        let dropped = oldSize - newSize
        if dropped > 0 { GranuleMap.unmark(span.header + newSize, byteCount: dropped) }
        if (try? SystemMemory.resize(span.header, from: oldSize, to: newSize, move: .never)) != nil {
            span.resized(usableSize: usable)
            if dropped < 0 { GranuleMap.mark(span.header + oldSize, byteCount: -dropped) }
            global?.counters.add(newSize - oldSize, to: .bytesMapped)
            if newSize < oldSize { global?.counters.add(oldSize - newSize, to: .bytesReturned) }
            counters?.add(usable - oldUsable, to: .liveBytes)
            return pointer
        }
        if dropped > 0 { GranuleMap.mark(span.header + newSize, byteCount: dropped) }
        // Move: reserve an aligned place, then remap the header and user pages onto it.
        let userAlignment = userAlignment(alignment, usable: usable)
        let padded = newSize + userAlignment
        guard let raw = try? SystemMemory.reserve(byteCount: padded) else { return nil }
        let user = alignUp(raw + Layout.headerSize, to: userAlignment)!
        let target = user - Layout.headerSize
        GranuleMap.unmark(pointer, byteCount: oldSize - Layout.headerSize)
        guard (try? SystemMemory.resize(span.header, from: oldSize, to: newSize, move: .to(target))) != nil else {
            GranuleMap.mark(pointer, byteCount: oldSize - Layout.headerSize)
            try? SystemMemory.unmap(raw, byteCount: padded)
            return nil
        }
        // The rest of the reservation, before and after the moved span, goes away.
        if target > raw { try? SystemMemory.unmap(raw, byteCount: target - raw) }
        if raw + padded > target + newSize {
            try? SystemMemory.unmap(target + newSize, byteCount: raw + padded - (target + newSize))
        }
        // The header moved with the pages: only its size and its magic change.
        let moved = LargeSpan(user: user)
        moved.resized(usableSize: usable)
        moved.markMoved()
        GranuleMap.mark(user, byteCount: newSize - Layout.headerSize)
        global?.counters.add(newSize - oldSize, to: .bytesMapped)
        counters?.add(usable - oldUsable, to: .liveBytes)
        return user
    }
}

// MARK: - Granule map

/// What each granule (256 KiB of address space, aligned to its size) holds, two bytes per
/// granule. The low 6 bits: nothing of BinnedAlloc's (0, `foreign`), a slab of a thread's
/// cache formatted for class `c` (`firstClassEntry + c`), or anything else of BinnedAlloc's
/// (1, `owned`: a large block's user part, a slab in a reserve or the pool, a slab of a
/// locked cache). The high 10 bits of a class entry: the tag of the thread cache that owns
/// the slab (`ThreadCache.tag`; 0 when that cache has none), so that a free tells its own
/// thread cache's blocks from others' without reading the slab's header.
///
/// Two questions read it. The standard malloc names (BinnedMalloc) ask whether a pointer is
/// BinnedAlloc's before freeing it, so that one BinnedAlloc did not hand out (glibc's, from
/// before the library was interposed or from `__libc_malloc`) goes to glibc's free instead
/// of being read as a slab. And every free asks which class a block is, to push it onto the
/// freeing thread's free cache without reading the slab's header (a cache miss on most
/// frees of a large working set: 40% of `free`'s samples before, under
/// `random-8-16384-ws10000-t1`). The map is dense, so its line is usually in cache.
///
/// A granule with a non-zero entry is wholly one mapping's: slabs are exactly one granule,
/// and a large block's user part starts on a granule boundary and its mapping runs to the
/// end of its last granule (`LargeSpan.mappingSize(usable:)`), so no other mapping, glibc's
/// included, can land in it. So entries are written without counting. A slab's class entry
/// is written when it is formatted and cleared to `owned` when it is retired, that is only
/// while none of its blocks is allocated or in a free cache: a thread that reads a block's
/// entry holds the block, and the entry cannot change under it.
///
/// The map covers a 48-bit user address space (x86_64 Linux uses 47 bits, arm64 Linux 48):
/// 2^30 entries in 2 GiB of address space reserved without commit charge; only the pages
/// whose entries were ever written become resident (one page per 512 MiB of address space
/// used). A kernel that maps higher (5-level paging, asked for by hint only) would put
/// blocks beyond it: they are refused at mapping time (nil, ENOMEM).
@usableFromInline
enum GranuleMap {
    @inlinable static var granuleShift: Int { 18 }
    @inlinable static var addressBits: Int { 48 }
    static let byteCount = MemoryLayout<UInt16>.stride << (addressBits - granuleShift)

    /// The entry of a granule that holds nothing of BinnedAlloc's.
    @inlinable static var foreign: UInt16 { 0 }
    /// The entry of a granule of BinnedAlloc's that is not a thread cache's formatted slab.
    @inlinable static var owned: UInt16 { 1 }
    /// The low bits of a thread cache's slab of class 0; class `c` is this plus `c`.
    @inlinable static var firstClassEntry: Int { 2 }
    /// The bits that hold `foreign`, `owned` or a class, and where the owner's tag starts.
    @inlinable static var classBits: UInt16 { 63 }
    @inlinable static var tagShift: UInt16 { 6 }
    /// The tags a thread cache may have: 1 to 1023 (0 in an entry: no tag).
    static let tagLimit = 1 << 10
    /// The tag of a thread cache without one: no entry's high bits equal it.
    @inlinable static var noTag: UInt16 { .max }

    /// The map's address once it exists (0 before).
    @usableFromInline static let address = Atomic<Int>(0)

    /// Maps the map (racing callers map one each; all but one unmap theirs). False only
    /// when no address space is left.
    static func create() -> Bool {
        guard address.load(ordering: .acquiring) == 0 else { return true }
        let savedErrno = errno
        defer { errno = savedErrno }
        guard let map = try? SystemMemory.reserve(byteCount: byteCount) else { return false }
        guard (try? SystemMemory.commit(map, byteCount: byteCount)) != nil else {
            try? SystemMemory.unmap(map, byteCount: byteCount)
            return false
        }
        if !address.compareExchange(expected: 0, desired: Int(bitPattern: map), ordering: .acquiringAndReleasing)
            .exchanged
        {
            try? SystemMemory.unmap(map, byteCount: byteCount)
        }
        return true
    }

    /// The entry of the granule `pointer` lies in (`foreign` before the map exists and
    /// beyond it): one load.
    @inlinable @inline(__always)
    static func entry(_ pointer: UnsafeRawPointer) -> UInt16 {
        let map = address.load(ordering: .relaxed)
        let granule = UInt(bitPattern: pointer) &>> UInt(granuleShift)
        guard map != 0, granule < 1 &<< UInt(addressBits - granuleShift) else { return foreign }
        return UnsafeMutableRawPointer(bitPattern: map).unsafelyUnwrapped.assumingMemoryBound(to: Atomic<UInt16>.self)
            .advanced(by: Int(bitPattern: granule)).pointee.load(ordering: .relaxed)
    }

    /// The class entry of a thread cache's slab of class `classIndex` owned by the cache
    /// tagged `tag` (0 in the entry for `noTag`).
    static func classEntry(_ classIndex: Int, tag: UInt16) -> UInt16 {
        UInt16(firstClassEntry + classIndex) | (tag == noTag ? 0 : tag) << tagShift
    }

    /// Whether `pointer` lies in a granule that holds BinnedAlloc's blocks.
    static func contains(_ pointer: UnsafeRawPointer) -> Bool { entry(pointer) != foreign }

    /// Whether the map has entries for every granule of [start, start + byteCount).
    static func covers(_ start: UnsafeMutableRawPointer, byteCount: Int) -> Bool {
        (Int(bitPattern: start) + byteCount - 1) >> granuleShift < 1 << (addressBits - granuleShift)
    }

    static func mark(_ start: UnsafeMutableRawPointer, byteCount: Int) { update(start, byteCount, to: owned) }
    static func unmark(_ start: UnsafeMutableRawPointer, byteCount: Int) { update(start, byteCount, to: foreign) }

    /// Makes a slab's entry name its class and its owner's tag (a thread cache's slab just
    /// formatted) or `owned` (nil: a slab leaving its class, or one of a locked cache).
    static func setClass(of slab: Slab, to classIndex: Int?, tag: UInt16) {
        update(slab.base, Layout.slabSize, to: classIndex.map { classEntry($0, tag: tag) } ?? owned)
    }

    /// Writes `entry` for every granule that [start, start + byteCount) overlaps.
    static func update(_ start: UnsafeMutableRawPointer, _ byteCount: Int, to entry: UInt16) {
        let map = address.load(ordering: .acquiring)
        assert(map != 0, "BinnedAlloc: the granule map does not exist yet")
        guard map != 0, byteCount > 0 else { return }
        let first = Int(bitPattern: start) >> granuleShift
        let last = (Int(bitPattern: start) + byteCount - 1) >> granuleShift
        assert(last < 1 << (addressBits - granuleShift), "BinnedAlloc: \(start) is beyond the granule map")
        let entries = UnsafeMutableRawPointer(bitPattern: map)!.assumingMemoryBound(to: Atomic<UInt16>.self)
        for granule in first...min(last, (1 << (addressBits - granuleShift)) - 1) {
            entries[granule].store(entry, ordering: .relaxed)
        }
    }
}

// MARK: - GlobalState

/// The state every thread cache shares, in one page (`GlobalLayout`) mapped on first use
/// (no initializer has to run first, which a process allocator needs): the pool of empty
/// slabs, the stack of parked thread caches, the registry of every thread's cache,
/// counters, the fallback cache for exiting threads, and the span cache.
struct GlobalState {
    let base: UnsafeMutableRawPointer

    /// Slabs mapped at once: 16 slabs (4 MiB) per mmap keeps system calls rare; the spare
    /// slabs wait in the pool, untouched, so they cost address space, not memory.
    static let slabsPerChunk = 16
    /// Empty slabs the pool keeps (decommitted: one resident page each) before unmapping
    /// further ones: 64 slabs are 16 MiB of address space ready for the next burst.
    static let pooledSlabLimit = 64

    /// Freed spans the cache holds at most. Its bytes are bounded by
    /// `BinnedAllocConfiguration.spanCacheBytes` (16 MiB by default), or half the live
    /// large bytes when that is more: cycling 20 buffers of 5 to 25 MiB
    /// (`big-blocks-5-25mib`), 1.0 ms a block at 439 MiB peak RSS (glibc: 0.98 ms, 464 MiB);
    /// with a third, 1.2 ms at 414 MiB; with a fixed 64 MiB alone, 1.6 ms at 452 MiB.
    static let spanCacheSlots = 128

    var parkedThreadCaches: AtomicStack { AtomicStack(at: base + GlobalLayout.parkedThreadCachesOffset) }
    var counters: Counters<GlobalEvent> { Counters(at: base + GlobalLayout.countersOffset) }
    var largeCounters: Counters<LargeEvent> { Counters(at: base + GlobalLayout.largeCountersOffset) }
    /// The pool is a plain list under a lock, not a lock-free stack: pooled slabs may be
    /// unmapped later, which a lock-free pop could still be reading.
    var pool: IntrusiveList {
        IntrusiveList(anchor: base + GlobalLayout.poolOffset, linkOffset: SlabLayout.placeLinksOffset)
    }
    var poolLock: UnsafeMutablePointer<SpinLock> {
        (base + GlobalLayout.poolLockOffset).assumingMemoryBound(to: SpinLock.self)
    }
    var fallbackLock: UnsafeMutablePointer<SpinLock> {
        (base + GlobalLayout.fallbackLockOffset).assumingMemoryBound(to: SpinLock.self)
    }
    /// Run `body` holding the pool's, the fallback cache's or the span cache's lock, and
    /// count the acquisition (`BinnedAllocStatistics.globalLockAcquisitions`): these are the
    /// only locks every thread may take, and a steady state should take them rarely.
    func withPoolLock<Result>(_ body: () -> Result) -> Result {
        poolLock.pointee.withLock {
            counters.add(1, to: .poolLocks)
            return body()
        }
    }

    func withFallbackLock<Result>(_ body: () -> Result) -> Result {
        fallbackLock.pointee.withLock {
            counters.add(1, to: .fallbackLocks)
            return body()
        }
    }

    func withSpanCacheLock<Result>(_ body: () -> Result) -> Result {
        spanCacheLock.pointee.withLock {
            counters.add(1, to: .spanCacheLocks)
            return body()
        }
    }

    var fallbackCache: ThreadCache {
        ThreadCache(base.load(fromByteOffset: GlobalLayout.fallbackCacheOffset, as: UnsafeMutableRawPointer.self))
    }
    var spanCacheLock: UnsafeMutablePointer<SpinLock> {
        (base + GlobalLayout.spanCacheLockOffset).assumingMemoryBound(to: SpinLock.self)
    }
    var parkedWalkLock: UnsafeMutablePointer<SpinLock> {
        (base + GlobalLayout.parkedWalkLockOffset).assumingMemoryBound(to: SpinLock.self)
    }
    var spanCache: UnsafeMutablePointer<UnsafeMutableRawPointer> {
        (base + GlobalLayout.spanCacheOffset).assumingMemoryBound(to: UnsafeMutableRawPointer.self)
    }
    /// The process's secret for marking freed blocks (`Misuse`): random, never 0.
    var freeKey: UInt { base.load(fromByteOffset: GlobalLayout.freeKeyOffset, as: UInt.self) }

    var spanCachedAt: UnsafeMutablePointer<Int> {
        (base + GlobalLayout.spanCachedAtOffset).assumingMemoryBound(to: Int.self)
    }

    /// Freed spans of the shared allocator that the span cache had no room for, kept
    /// mapped until the next purge unmaps them (`cacheSpan`), newest first; under the span
    /// cache's lock. Never searched: a queued span is not reused.
    var releaseQueue: IntrusiveList {
        IntrusiveList(
            anchor: base + GlobalLayout.releaseQueueOffset, linkOffset: LargeSpanLayout.linksOffset, hasTail: true)
    }

    /// Freed spans still mapped, cached or queued, and their usable bytes: the statistics'
    /// cached large blocks.
    var heldSpans: (count: Int, bytes: Int) {
        (
            counters.value(of: .cachedSpans) + counters.value(of: .queuedSpans),
            counters.value(of: .cachedSpanBytes) + counters.value(of: .queuedSpanBytes)
        )
    }

    /// A word of the global page, atomic.
    func word(_ offset: Int) -> AtomicWord { AtomicWord(at: base + offset) }

    /// Raises the recent peak of the shared allocator's live large bytes to their present
    /// figure (after a large allocation); each purge lowers it to the figure then. The span
    /// cache may hold a freed span above the classes up to that peak (`cacheSpan`).
    func noteLargeLive() {
        let live = largeCounters.value(of: .liveBytes)
        let peak = word(GlobalLayout.largePeakOffset)
        var seen = peak.load(ordering: .relaxed)
        while live > seen {
            let result = peak.compareExchange(expected: seen, desired: live, ordering: .relaxed)
            if result.exchanged { return }
            seen = result.original
        }
    }

    /// Keeps a freed span (its header) for reuse unless the cache is full; else, while live,
    /// cached and queued large bytes stay within the recent peak of live ones, puts it on
    /// the release queue, for the next purge (or a miss) to unmap: a thread that frees many
    /// large blocks at once (the end of a burst, a thread's teardown) then makes no munmap,
    /// each a TLB shootdown on every core the process runs on. Returns whether the span was
    /// kept either way. A kept span has no valid magic, so a late free of it traps.
    ///
    /// Measured in `burst-idle-500mib-t2` (two threads each free 2,800 blocks of up to 1 MiB,
    /// about 900 of them spans, then exit), medians of 5 and 7 alternating runs: 50.5 and
    /// 44.0 µs a block when each refused span was unmapped at its free, 34.8 and 37.5 with
    /// them queued (tcmalloc, which keeps them all, 37.7 and 33.4).
    func cacheSpan(_ header: UnsafeMutableRawPointer, usableSize: Int) -> Bool {
        withSpanCacheLock {
            let span = LargeSpan(header: header)
            // Two threads freeing one span at once both pass `free`'s check; under the lock, the
            // second finds the magic the first cleared, and the span is never cached twice.
            if !span.hasMagic { Misuse.report(.doubleFree, span.user) }
            let count = counters.value(of: .cachedSpans)
            let budget = word(GlobalLayout.spanCacheBytesOffset).load(ordering: .relaxed)
            let live = largeCounters.value(of: .liveBytes)
            var byteLimit = budget == 0 || purgeDelayNanoseconds == 0 ? 0 : max(budget, live / 2)
            // A span above the classes (each of its pages a fault to make resident again)
            // may also fill the cache up to the recent peak: live and cached large bytes
            // then stay within what was live a moment ago.
            if byteLimit > 0 && usableSize > LargeSpan.spanCacheMaximumSize {
                byteLimit = max(byteLimit, word(GlobalLayout.largePeakOffset).load(ordering: .relaxed) - live)
            }
            guard count < GlobalState.spanCacheSlots, counters.value(of: .cachedSpanBytes) + usableSize <= byteLimit
            else {
                let peak = word(GlobalLayout.largePeakOffset).load(ordering: .relaxed)
                guard byteLimit > 0, heldSpans.bytes + usableSize <= peak - live else { return false }
                span.clearMagic()
                releaseQueue.pushFront(header)
                counters.add(1, to: .queuedSpans)
                counters.add(usableSize, to: .queuedSpanBytes)
                return true
            }
            span.clearMagic()
            spanCache[count] = header
            spanCachedAt[count] = Int(SystemInfo.monotonicNanoseconds())
            counters.add(1, to: .cachedSpans)
            counters.add(usableSize, to: .cachedSpanBytes)
            return true
        }
    }

    /// The cached span (its header) that fits `usableSize` most closely, if one holds at
    /// most half as much again (two classes up): a program's sizes vary, and an exact match
    /// alone would miss most of the time. Failing that, when `orSmaller`, the largest cached
    /// span above ``LargeSpan/spanCacheMaximumSize`` that is smaller, to be grown to it. One
    /// scan under one acquisition of the lock; nil when nothing qualifies.
    func takeCachedSpan(usableSize: Int, orSmaller: Bool = false) -> UnsafeMutableRawPointer? {
        withSpanCacheLock {
            let count = counters.value(of: .cachedSpans)
            var fit: (index: Int, size: Int)? = nil
            var smaller: (index: Int, size: Int)? = nil
            for index in 0..<count {
                let size = LargeSpan(header: spanCache[index]).usableSize
                if size >= usableSize {
                    if size <= usableSize + usableSize / 2 && size < fit?.size ?? .max { fit = (index, size) }
                    if size == usableSize { break }
                } else if orSmaller && size > LargeSpan.spanCacheMaximumSize && size > smaller?.size ?? 0 {
                    smaller = (index, size)
                }
            }
            guard let best = fit ?? smaller else { return nil }
            let header = spanCache[best.index]
            spanCache[best.index] = spanCache[count - 1]
            spanCachedAt[best.index] = spanCachedAt[count - 1]
            counters.add(-1, to: .cachedSpans)
            counters.add(-best.size, to: .cachedSpanBytes)
            return header
        }
    }

    /// Unmaps the span that has waited longest in the cache if it was cached at
    /// `deadline` or before; returns its usable bytes (what it may have held resident), 0
    /// when none was unmapped.
    func evictOldestSpan(cachedBefore deadline: Int) -> Int {
        guard
            let span = withSpanCacheLock({ () -> LargeSpan? in
                let count = counters.value(of: .cachedSpans)
                guard count > 0 else { return nil }
                var oldest = 0
                for index in 1..<max(count, 1) where spanCachedAt[index] < spanCachedAt[oldest] { oldest = index }
                guard spanCachedAt[oldest] <= deadline else { return nil }
                let span = LargeSpan(header: spanCache[oldest])
                spanCache[oldest] = spanCache[count - 1]
                spanCachedAt[oldest] = spanCachedAt[count - 1]
                counters.add(-1, to: .cachedSpans)
                counters.add(-span.usableSize, to: .cachedSpanBytes)
                return span
            })
        else { return 0 }
        let usable = span.usableSize
        unmapSpan(span)
        return usable
    }

    /// Gives a span that is in no list and no slot (taken from the cache or the release
    /// queue) back to the OS.
    func unmapSpan(_ span: LargeSpan) {
        let size = span.mappingSize
        GranuleMap.unmark(span.user, byteCount: size - Layout.headerSize)
        try? SystemMemory.unmap(span.header, byteCount: size)
        counters.add(-size, to: .bytesMapped)
        counters.add(size, to: .bytesReturned)
    }

    /// Unmaps queued spans, oldest first, until at least `byteCount` usable bytes went (all
    /// of them by default); returns the usable bytes unmapped.
    @discardableResult
    func releaseQueuedSpans(atLeast byteCount: Int = .max) -> Int {
        var released = 0
        // The count, read without the lock, spares an empty queue the lock.
        while released < byteCount, counters.value(of: .queuedSpans) > 0,
            let span = withSpanCacheLock({ () -> LargeSpan? in
                guard let header = releaseQueue.last else { return nil }
                releaseQueue.remove(header)
                let span = LargeSpan(header: header)
                counters.add(-1, to: .queuedSpans)
                counters.add(-span.usableSize, to: .queuedSpanBytes)
                return span
            })
        {
            released += span.usableSize
            unmapSpan(span)
        }
        return released
    }

    /// Unmaps every cached and queued span.
    func emptySpanCache() {
        releaseQueuedSpans()
        while let span = withSpanCacheLock({ () -> LargeSpan? in
            let count = counters.value(of: .cachedSpans)
            guard count > 0 else { return nil }
            let span = LargeSpan(header: spanCache[count - 1])
            counters.add(-1, to: .cachedSpans)
            counters.add(-span.usableSize, to: .cachedSpanBytes)
            return span
        }) {
            unmapSpan(span)
        }
    }

    /// Runs `body` on every thread's cache (live and parked) and on the fallback cache: what
    /// the statistics sum.
    func forEachCache(_ body: (ThreadCache) -> Void) {
        var node = registryHead
        while let base = node {
            body(ThreadCache(base))
            node = ThreadCache(base).registryNext
        }
        body(fallbackCache)
    }

    var registryHead: UnsafeMutableRawPointer? {
        UnsafeMutableRawPointer(
            bitPattern: AtomicWord(at: base + GlobalLayout.registryHeadOffset).load(ordering: .acquiring))
    }

    /// Adds a thread's cache to the registry (a list that only grows: caches are reused,
    /// never freed).
    func register(_ cache: ThreadCache) {
        let head = AtomicWord(at: base + GlobalLayout.registryHeadOffset)
        var current = head.load(ordering: .relaxed)
        while true {
            cache.registryNext = UnsafeMutableRawPointer(bitPattern: current)
            let (exchanged, original) = head.compareExchange(
                expected: current, desired: Int(bitPattern: cache.base), ordering: .releasing)
            if exchanged { return }
            current = original
        }
    }

    /// Runs `body` on each parked thread cache, where it is: each is claimed with a
    /// compare-exchange (parked → trimming) and stays on the parked stack, so a thread
    /// starting meanwhile still finds it (and waits the moment `body` takes) rather than
    /// mapping a new one. Caches in use by their threads are skipped.
    ///
    /// One walk at a time, under the parked-walk lock, which `fork` also takes: a child
    /// forked while the purger was trimming a cache would find that cache claimed forever,
    /// and its next new thread would wait for it without end.
    func forEachParkedCache(_ body: (ThreadCache) -> Void) {
        parkedWalkLock.pointee.withLock {
            var node = registryHead
            while let base = node {
                let cache = ThreadCache(base)
                node = cache.registryNext
                withClaimedParked(cache, body)
            }
        }
    }

    /// Trims `cache` if it is parked and no walk of the parked caches runs (that walk may
    /// be the purger's, about to trim it; or `fork`'s lock): a thread that just pushed
    /// frees into a parked cache collects them, so that the slabs they emptied retire
    /// now rather than at the next purge. A program that frees an exited thread's blocks,
    /// then allocates again on new threads (a worker pool; `compare`'s warm-up runs, each
    /// freed from the main thread), otherwise maps new slabs meanwhile. Peak RSS of
    /// `thread-churn-t2` (3 runs of a C replica; 6 of `compare-worker-binnedmalloc`):
    /// 16.9–20.3 to 13.0–16.4 MiB (jemalloc 14.2–17.5), and a median of 25.2 to 24.2 MiB
    /// (jemalloc 21.6), time unchanged.
    func trimIfParked(_ cache: ThreadCache) {
        guard parkedWalkLock.pointee.tryLock() else { return }
        withClaimedParked(cache) { $0.trim() }
        parkedWalkLock.pointee.unlock()
    }

    /// Runs `body` on `cache` if it is parked, claimed (parked → trimming) for the while;
    /// the caller holds the parked-walk lock.
    private func withClaimedParked(_ cache: ThreadCache, _ body: (ThreadCache) -> Void) {
        guard
            cache.ownership.compareExchange(
                expected: ThreadCache.Ownership.parked.rawValue,
                desired: ThreadCache.Ownership.trimming.rawValue, ordering: .acquiringAndReleasing
            ).exchanged
        else { return }
        body(cache)
        cache.ownership.store(ThreadCache.Ownership.parked.rawValue, ordering: .releasing)
    }

    /// Pops a pooled slab (under the pool lock).
    func popPooled() -> Slab? {
        withPoolLock {
            guard let first = pool.popFront() else { return nil }
            counters.add(-1, to: .pooledSlabs)
            return Slab(first)
        }
    }

    /// Pools a slab, which is on no list, unless the pool is full; returns whether it did.
    func pool(_ slab: Slab, decommit: Bool) -> Bool {
        withPoolLock {
            guard counters.value(of: .pooledSlabs) < GlobalState.pooledSlabLimit else { return false }
            if decommit {
                try? PageSource().decommit(
                    slab.base + Layout.headerSize, byteCount: Layout.slabSize - Layout.headerSize)
                counters.add(Layout.slabSize - Layout.headerSize, to: .bytesReturned)
            }
            assert(slab.state != .pooled, "BinnedAlloc: slab \(slab.base) is pooled twice")
            // A pooled slab has no valid magic, so a late free into it traps in debug builds.
            slab.magicWord = 0
            slab.state = .pooled
            pool.pushFront(slab.base)
            counters.add(1, to: .pooledSlabs)
            return true
        }
    }

    /// An empty slab: from the pool, else from a newly mapped chunk (whose other slabs
    /// join the pool untouched).
    func takeSlab() -> Slab? {
        if let pooled = popPooled() { return pooled }
        let chunkSize = GlobalState.slabsPerChunk * Layout.slabSize
        let savedErrno = errno
        defer { errno = savedErrno }
        guard let chunk = try? PageSource().allocate(byteCount: chunkSize, alignment: Layout.slabSize) else {
            return nil
        }
        guard GranuleMap.covers(chunk, byteCount: chunkSize) else {
            try? PageSource().release(chunk, byteCount: chunkSize)
            return nil
        }
        counters.add(chunkSize, to: .bytesMapped)
        GranuleMap.mark(chunk, byteCount: chunkSize)
        for index in 1..<GlobalState.slabsPerChunk {
            let spare = Slab(chunk + index * Layout.slabSize)
            if !pool(spare, decommit: false) { returnSlab(spare) }
        }
        return Slab(chunk)
    }

    /// An empty slab, on no list, goes back to the OS: its block pages are decommitted and
    /// it joins the pool, or it is unmapped when the pool is full. errno is left as it was.
    func returnSlab(_ slab: Slab) {
        let savedErrno = errno
        defer { errno = savedErrno }
        if !pool(slab, decommit: true) {
            GranuleMap.unmark(slab.base, byteCount: Layout.slabSize)
            try? PageSource().release(slab.base, byteCount: Layout.slabSize)
            counters.add(-Layout.slabSize, to: .bytesMapped)
            counters.add(Layout.slabSize, to: .bytesReturned)
        }
    }

    /// The address of the global page once it exists (0 before).
    static let address = Atomic<Int>(0)

    /// The global state, mapped and initialized by the first caller (racing callers map
    /// one each; all but one unmap theirs). nil only if no page can be mapped.
    @inline(__always)
    static func get() -> GlobalState? {
        let existing = address.load(ordering: .acquiring)
        if existing != 0 { return GlobalState(base: UnsafeMutableRawPointer(bitPattern: existing)!) }
        return create()
    }

    @inline(never)
    static func create() -> GlobalState? {
        assert(Layout.violation() == nil, "BinnedAlloc: \(Layout.violation() ?? "")")
        guard GranuleMap.create(), let page = try? PageSource().allocate(byteCount: GlobalLayout.byteCount) else {
            return nil
        }
        // The key mixes the kernel's random bits with the page's address (ASLR); it is never
        // 0, which would make a block holding its own address in its second word (an empty
        // circular list's head) look freed.
        let key = UInt(truncatingIfNeeded: SystemInfo.randomWord()) ^ UInt(bitPattern: page).byteSwapped
        page.storeBytes(
            of: key == 0 ? 0x9E37_79B9_7F4A_7C15 : key, toByteOffset: GlobalLayout.freeKeyOffset, as: UInt.self)
        if Hardening.isEnabled {
            let sealKey = UInt(truncatingIfNeeded: SystemInfo.randomWord())
            page.storeBytes(of: sealKey, toByteOffset: GlobalLayout.sealKeyOffset, as: UInt.self)
            let linkKey = UInt(truncatingIfNeeded: SystemInfo.randomWord())
            page.storeBytes(of: linkKey, toByteOffset: GlobalLayout.linkKeyOffset, as: UInt.self)
        }
        guard let fallback = ThreadCache.create(kind: .locked, global: nil) else {
            try? PageSource().release(page, byteCount: GlobalLayout.byteCount)
            return nil
        }
        // Everything is in place before the page is published.
        _ = AtomicStack(initializingAt: page + GlobalLayout.parkedThreadCachesOffset)
        _ = AtomicWord(initializingAt: page + GlobalLayout.registryHeadOffset, to: 0)
        // Three lines, not a loop over an array: nothing here may allocate.
        (page + GlobalLayout.poolLockOffset).bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        (page + GlobalLayout.fallbackLockOffset).bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        (page + GlobalLayout.spanCacheLockOffset).bindMemory(to: SpinLock.self, capacity: 1).initialize(
            to: SpinLock())
        (page + GlobalLayout.parkedWalkLockOffset).bindMemory(to: SpinLock.self, capacity: 1).initialize(
            to: SpinLock())
        page.storeBytes(
            of: fallback.base, toByteOffset: GlobalLayout.fallbackCacheOffset, as: UnsafeMutableRawPointer.self)
        GlobalState(base: page).configure(BinnedAllocConfiguration.fromEnvironment())
        ThreadLocalSlot.binnedAlloc.setThreadExitHook(SharedAllocator.threadExitHook)
        let (exchanged, winner) = address.compareExchange(
            expected: 0, desired: Int(bitPattern: page), ordering: .acquiringAndReleasing)
        guard exchanged else {
            ThreadCache.unmapHeader(fallback)
            try? PageSource().release(page, byteCount: GlobalLayout.byteCount)
            return GlobalState(base: UnsafeMutableRawPointer(bitPattern: winner)!)
        }
        // Only now: registering may allocate, and that allocation must find the state.
        ForkActions.register(
            prepare: GlobalState.forkPrepare, parent: GlobalState.forkParent, child: GlobalState.forkChild)
        return GlobalState(base: page)
    }

    // MARK: fork

    // A fork while another thread holds the pool, fallback or span cache lock would leave
    // it held forever in the child, whose first refill would then spin. So the forking
    // thread takes the three locks before fork and releases them on both sides, and first
    // the parked-walk lock, so that no parked cache is claimed by a walk (the purger's,
    // `releaseUnusedMemory()`'s) at the moment of the fork. Everything
    // else shared is lock-free (the parked stack, the registry, remote lists). Other
    // threads' caches are orphaned in the child, which has only the forking thread: their
    // memory stays mapped and unused there, as glibc's arenas of vanished threads do.

    static let forkPrepare: ForkActions.Action = {
        guard let global = GlobalState.get() else { return }
        // The order every other path takes them in: a walk of the parked caches takes the
        // pool lock (a trim returns slabs); a fallback-cache refill or trim takes the pool
        // lock under the fallback lock; the span-cache lock is taken alone.
        global.parkedWalkLock.pointee.lock()
        global.fallbackLock.pointee.lock()
        global.poolLock.pointee.lock()
        global.spanCacheLock.pointee.lock()
    }

    /// Releases what `forkPrepare` took, in reverse order.
    func unlockAfterFork() {
        spanCacheLock.pointee.unlock()
        poolLock.pointee.unlock()
        fallbackLock.pointee.unlock()
        parkedWalkLock.pointee.unlock()
    }

    static let forkParent: ForkActions.Action = { GlobalState.get()?.unlockAfterFork() }

    static let forkChild: ForkActions.Action = {
        guard let global = GlobalState.get() else { return }
        global.unlockAfterFork()
        // The child has only the forking thread: a purger starts again when needed.
        global.word(GlobalLayout.purgerStateOffset).store(0, ordering: .relaxed)
    }
}

// MARK: - Configuration and memory returned on idle

extension GlobalState {
    /// The knobs in force.
    var configuration: BinnedAllocConfiguration {
        var configuration = BinnedAllocConfiguration()
        configuration.purgeDelayMilliseconds = purgeDelayNanoseconds / 1_000_000
        configuration.backgroundThread = word(GlobalLayout.backgroundThreadOffset).load(ordering: .relaxed) != 0
        configuration.spanCacheBytes = word(GlobalLayout.spanCacheBytesOffset).load(ordering: .relaxed)
        configuration.freeCacheBytes = word(GlobalLayout.freeCacheBytesOffset).load(ordering: .relaxed)
        configuration.statisticsAtExit =
            BinnedAllocConfiguration.StatisticsFormat(
                rawValue: word(GlobalLayout.statisticsAtExitOffset).load(ordering: .relaxed)) ?? .none
        return configuration
    }

    /// Puts `configuration` in force. A smaller span-cache budget or purge delay applies
    /// at the next purge, which it starts.
    func configure(_ configuration: BinnedAllocConfiguration) {
        assert(configuration.isValid, "BinnedAlloc: configuring \(configuration)")
        word(GlobalLayout.purgeDelayOffset).store(
            configuration.purgeDelayMilliseconds * 1_000_000, ordering: .relaxed)
        word(GlobalLayout.backgroundThreadOffset).store(configuration.backgroundThread ? 1 : 0, ordering: .relaxed)
        word(GlobalLayout.spanCacheBytesOffset).store(configuration.spanCacheBytes, ordering: .relaxed)
        word(GlobalLayout.freeCacheBytesOffset).store(configuration.freeCacheBytes, ordering: .relaxed)
        word(GlobalLayout.statisticsAtExitOffset).store(configuration.statisticsAtExit.rawValue, ordering: .relaxed)
        // Queued spans and spans over the new budget go now; ones younger than the new delay
        // wait for it.
        releaseQueuedSpans()
        var cached = counters.value(of: .cachedSpanBytes)
        while cached > configuration.spanCacheBytes || (cached > 0 && configuration.purgeDelayMilliseconds == 0) {
            let bytes = evictOldestSpan(cachedBefore: .max)
            if bytes == 0 { break }
            cached = counters.value(of: .cachedSpanBytes)
        }
    }

    var purgeDelayNanoseconds: Int { word(GlobalLayout.purgeDelayOffset).load(ordering: .relaxed) }

    /// The shortest time between two purges, whatever the delay: a purge walks every
    /// parked cache.
    static let minimumPurgeInterval = 1_000_000

    /// Returns to the OS what has waited at least a purge delay (everything when
    /// `everything`): cached spans, and the frees that landed in parked caches and in the
    /// fallback cache since their last trim (their empty slabs go to the pool, decommitted).
    /// Takes no lock a fast path takes. Returns whether any memory went back.
    @discardableResult
    func purge(now: Int, everything: Bool = false) -> Bool {
        let returnedBefore = counters.value(of: .bytesReturned)
        let deadline = everything ? Int.max : now - purgeDelayNanoseconds
        word(GlobalLayout.largePeakOffset).store(largeCounters.value(of: .liveBytes), ordering: .relaxed)
        // Queued spans wait for no delay: they are never reused.
        releaseQueuedSpans()
        while evictOldestSpan(cachedBefore: deadline) > 0 {}
        forEachParkedCache { $0.trim() }
        withFallbackLock { fallbackCache.trim() }
        let released = counters.value(of: .bytesReturned) > returnedBefore
        if released { counters.add(1, to: .purges) }
        return released
    }

    /// A purge from a slow path (a large block's allocation or free, a thread's exit) when
    /// half a delay has passed since the last one, so that a process without the
    /// background thread still returns memory while it runs. One clock read.
    func purgeIfDue() {
        let lastPurge = word(GlobalLayout.lastPurgeOffset)
        let now = Int(SystemInfo.monotonicNanoseconds())
        let last = lastPurge.load(ordering: .relaxed)
        guard now - last >= max(purgeDelayNanoseconds / 2, GlobalState.minimumPurgeInterval),
            lastPurge.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
        else { return }
        purge(now: now)
    }

    /// Starts the background purger when it is configured and not running. Called with no
    /// lock held: creating a thread allocates (glibc's thread-local storage).
    func startPurgerIfNeeded() {
        let state = word(GlobalLayout.purgerStateOffset)
        guard word(GlobalLayout.backgroundThreadOffset).load(ordering: .relaxed) != 0,
            state.load(ordering: .relaxed) == 0,
            state.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged
        else { return }
        let savedErrno = errno
        defer { errno = savedErrno }
        // The thread blocks every signal (it inherits the mask it is created with), so that
        // no signal of the host's is ever handled on it.
        var all = sigset_t()
        var previous = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_SETMASK, &all, &previous)
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        if pthread_create(&thread, &attributes, GlobalState.purgerMain, nil) != 0 {
            // No thread (a process out of threads): the slow paths still purge.
            state.store(0, ordering: .relaxed)
        }
        pthread_attr_destroy(&attributes)
        pthread_sigmask(SIG_SETMASK, &previous, nil)
    }

    /// The purger: sleeps half a delay (at least 10 ms), purges, and stops when the
    /// background thread is configured off. It allocates nothing and has no thread cache.
    static let purgerMain: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { _ in
        guard let global = GlobalState.get() else { return nil }
        let state = global.word(GlobalLayout.purgerStateOffset)
        while global.word(GlobalLayout.backgroundThreadOffset).load(ordering: .relaxed) != 0 {
            let interval = max(global.purgeDelayNanoseconds / 2, 10_000_000)
            var request = timespec(tv_sec: interval / 1_000_000_000, tv_nsec: interval % 1_000_000_000)
            var remaining = timespec()
            while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
            let now = Int(SystemInfo.monotonicNanoseconds())
            global.word(GlobalLayout.lastPurgeOffset).store(now, ordering: .relaxed)
            global.purge(now: now)
        }
        state.store(0, ordering: .relaxed)
        return nil
    }
}

extension BinnedAllocConfiguration {
    /// The knobs `BINNEDMALLOC_CONF` and `BINNEDMALLOC_STATS` set, each bad item reported on
    /// stderr. Reads the environment with getenv and allocates nothing: it runs inside
    /// the first malloc.
    static func fromEnvironment() -> BinnedAllocConfiguration {
        var configuration = BinnedAllocConfiguration()
        if let text = getenv("BINNEDMALLOC_CONF") {
            configuration.parse(UnsafeRawBufferPointer(start: text, count: strlen(text)), reportingTo: 2)
        }
        if let value = getenv("BINNEDMALLOC_STATS"), value[0] != 0 {
            let bytes = UnsafeRawBufferPointer(start: value, count: strlen(value))
            if bytes.elementsEqual("json".utf8) {
                configuration.statisticsAtExit = .json
            } else if !bytes.elementsEqual("0".utf8) {
                configuration.statisticsAtExit = .text
            }
        }
        return configuration
    }

    /// Applies `key:value` items separated by commas (`MALLOC_CONF`'s syntax); an item
    /// with an unknown key, no value or a bad value changes nothing and, when `descriptor`
    /// is given, is reported there on one line. Returns how many items were bad.
    @discardableResult
    mutating func parse(_ text: UnsafeRawBufferPointer, reportingTo descriptor: Int32? = nil) -> Int {
        var bad = 0
        var start = 0
        while start <= text.count {
            var end = start
            while end < text.count && text[end] != UInt8(ascii: ",") { end += 1 }
            let item = UnsafeRawBufferPointer(rebasing: text[start..<end])
            if !item.isEmpty, let problem = apply(item) {
                bad += 1
                if let descriptor { BinnedAllocConfiguration.report(problem, item: item, to: descriptor) }
            }
            start = end + 1
        }
        return bad
    }

    /// Applies one `key:value` item; what is wrong with it, or nil.
    private mutating func apply(_ item: UnsafeRawBufferPointer) -> StaticString? {
        guard let colon = item.firstIndex(of: UInt8(ascii: ":")) else { return "no value (key:value)" }
        let key = UnsafeRawBufferPointer(rebasing: item[..<colon])
        let value = UnsafeRawBufferPointer(rebasing: item[(colon + 1)...])
        guard !value.isEmpty else { return "no value (key:value)" }
        if key.elementsEqual("purge_delay_ms".utf8) {
            guard let number = BinnedAllocConfiguration.number(value, suffixes: false),
                number <= BinnedAllocConfiguration.maximumPurgeDelayMilliseconds
            else { return "purge_delay_ms takes 0 to 86400000" }
            purgeDelayMilliseconds = number
        } else if key.elementsEqual("background_thread".utf8) {
            if value.elementsEqual("true".utf8) {
                backgroundThread = true
            } else if value.elementsEqual("false".utf8) {
                backgroundThread = false
            } else {
                return "background_thread takes true or false"
            }
        } else if key.elementsEqual("span_cache_bytes".utf8) {
            guard let number = BinnedAllocConfiguration.number(value, suffixes: true) else {
                return "span_cache_bytes takes a byte count (suffixes k, m, g)"
            }
            spanCacheBytes = number
        } else if key.elementsEqual("free_cache_bytes".utf8) {
            guard let number = BinnedAllocConfiguration.number(value, suffixes: true),
                number <= BinnedAllocConfiguration.maximumFreeCacheBytes
            else { return "free_cache_bytes takes 0 to 64k" }
            freeCacheBytes = number
        } else if key.elementsEqual("stats_print".utf8) {
            if value.elementsEqual("none".utf8) {
                statisticsAtExit = .none
            } else if value.elementsEqual("text".utf8) {
                statisticsAtExit = .text
            } else if value.elementsEqual("json".utf8) {
                statisticsAtExit = .json
            } else {
                return "stats_print takes none, text or json"
            }
        } else {
            return "unknown key"
        }
        return nil
    }

    /// A decimal number with an optional `k`, `m` or `g` suffix (powers of 1024); nil for
    /// anything else, a sign included, or a number that does not fit.
    private static func number(_ text: UnsafeRawBufferPointer, suffixes: Bool) -> Int? {
        var digits = text.count
        var shift = 0
        if suffixes, let last = text.last {
            switch last | 0x20 {
            case UInt8(ascii: "k"): shift = 10
            case UInt8(ascii: "m"): shift = 20
            case UInt8(ascii: "g"): shift = 30
            default: break
            }
            if shift > 0 { digits -= 1 }
        }
        guard digits > 0 else { return nil }
        var value = 0
        for index in 0..<digits {
            let byte = text[index]
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            let (times10, overflow) = value.multipliedReportingOverflow(by: 10)
            guard !overflow, let sum = Optional(times10 &+ Int(byte - UInt8(ascii: "0"))), sum >= times10 else {
                return nil
            }
            value = sum
        }
        guard value <= Int.max >> shift else { return nil }
        return value << shift
    }

    /// One line: `BinnedAlloc: BINNEDMALLOC_CONF item "...": problem; ignored`, the item cut
    /// at 64 bytes. Written from an mmap'd page: nothing here allocates.
    private static func report(_ problem: StaticString, item: UnsafeRawBufferPointer, to descriptor: Int32) {
        guard var text = try? RawText(capacity: 256) else { return }
        text.append("BinnedAlloc: BINNEDMALLOC_CONF item \"")
        text.append(UnsafeRawBufferPointer(rebasing: item.prefix(64)))
        text.append(item.count > 64 ? "...\": " : "\": ")
        text.append(problem)
        text.append("; ignored\n")
        try? text.write(to: descriptor)
    }
}

// MARK: - Layout

/// The numbers every part agrees on.
@usableFromInline
enum Layout {
    /// Every block is a multiple of this and aligned to it: malloc's 16-byte guarantee.
    @inlinable static var quantum: Int { 16 }
    /// Slabs are this big and aligned to it. Big enough that the header page costs 1.6% and
    /// even the 32 KiB class gets 7 blocks; small enough that a thread cache's partly used
    /// current slabs (one per class) stay cheap, since untouched pages are never faulted in.
    /// Also the size of a granule of the granule map.
    @inlinable static var slabSize: Int { 256 << 10 }
    @inlinable static var slabMask: Int { slabSize &- 1 }
    /// A slab's header page; also the distance from a large block back to its header.
    @inlinable static var headerSize: Int { 4096 }
    /// The largest small request: half of what a slab could hold is the point past which
    /// a slab would have too few blocks, and a span of its own costs little next to it.
    @inlinable static var smallSizeLimit: Int { 32 << 10 }
    @inlinable static var sizeClasses: SizeClasses {
        SizeClasses(quantum: quantum, stepsPerDoubling: 4, maximumSize: smallSizeLimit)
    }
    @inlinable static var classCount: Int { 40 }
    /// The bytes of a cache line: two threads writing blocks in one line slow each other
    /// down many times over (false sharing).
    @inlinable static var cacheLineSize: Int { 64 }

    /// Whether class `classIndex`'s blocks fill whole cache lines: their size is a multiple
    /// of the line, and blocks start a page into their slab. A free may keep another thread
    /// cache's block of such a class for its own thread; a block of any other class (16 to
    /// 112, 160 and 224 B) shares lines with its neighbours, which their owner's thread may
    /// be writing, so it goes home. Reused by the freeing thread, the main thread's 8-byte
    /// objects handed to two threads put both in one line: `false-sharing-passive-t2` ran
    /// at 470 ns an object against jemalloc's 110.
    @inlinable @inline(__always)
    static func fillsCacheLines(classIndex: Int) -> Bool {
        lineFillingClasses &>> UInt64(classIndex) & 1 != 0
    }

    /// Bit `c` set for each class `c` whose size is a multiple of `cacheLineSize`: 64, 128,
    /// 192 B and everything from 256 B (classes 3, 7, 9 and 11 to 39). A constant, so that
    /// the free path tests one bit; `violation()` checks it against `sizeClasses`.
    @inlinable static var lineFillingClasses: UInt64 { 0xFF_FFFF_FA88 }
    /// Alignments above this are refused: an aligned span over-maps by its alignment.
    @inlinable static var maximumAlignment: Int { 1 << 30 }
    /// Requests above this are refused without asking the OS: no machine maps 2^62 bytes.
    @inlinable static var maximumByteCount: Int { 1 << 62 }

    /// What is wrong with the header layouts below, or nil: fields out of address order,
    /// overlapping, off their alignment, or past their header, as AllocCore's `LayoutCheck`
    /// finds them (it allocates nothing unless something is wrong, so it may run inside
    /// `malloc`). Run once by the first allocation in debug builds (`GlobalState.create`),
    /// and by a test.
    static func violation() -> String? {
        for index in 0..<classCount
        where fillsCacheLines(classIndex: index) != (sizeClasses.size(ofClass: index) % cacheLineSize == 0) {
            return "Layout: lineFillingClasses is wrong for class \(index)"
        }
        return SlabLayout.violation() ?? BinLayout.violation() ?? ThreadCacheLayout.violation()
            ?? LargeSpanLayout.violation() ?? GlobalLayout.violation()
    }
}

// MARK: - SlabLayout

/// A slab's header page, in address order. Every field is a word.
@usableFromInline
enum SlabLayout {
    /// `Slab.magic ^ address` while the slab belongs to a class; 0 in a reserve and in the
    /// pool, so that a free into a slab that holds no blocks fails `Slab.checkAndMarkFree`.
    @inlinable static var magicOffset: Int { 0 }
    /// The owner thread cache's address, an atomic word: freeing threads read it.
    @inlinable static var ownerOffset: Int { 8 }
    /// The size class, its block size and how many blocks fit (set by `format`).
    @inlinable static var classIndexOffset: Int { 16 }
    @inlinable static var blockSizeOffset: Int { 24 }
    @inlinable static var blockCountOffset: Int { 32 }
    /// The first free block; each free block's first word links the next.
    @inlinable static var freeListOffset: Int { 40 }
    /// Blocks handed out and not yet freed into the slab.
    @inlinable static var usedOffset: Int { 48 }
    /// Never-used blocks lie in [cursor, end): carved a page at a time, so untouched pages
    /// stay unfaulted.
    @inlinable static var bumpCursorOffset: Int { 56 }
    @inlinable static var bumpEndOffset: Int { 64 }
    /// The links (previous, next) of the one place list a non-current slab may be on: its
    /// bin's partial list, its cache's reserve, or the global pool.
    @inlinable static var placeLinksOffset: Int { 72 }
    /// `Slab.State`: where the slab is. Read by every free, so it shares the first two
    /// cache lines with the free list and `used`.
    @inlinable static var stateOffset: Int { 88 }
    /// The links (previous, next) of its cache's owned list (a slab of a class).
    @inlinable static var ownedLinksOffset: Int { 96 }
    /// The hardened build's boundary of the first block: the page's last word, the free mark
    /// of the block that would precede the first (`Hardening.checkFree`).
    static var boundaryOffset: Int { Layout.headerSize - 8 }

    static func violation() -> String? {
        var check = LayoutCheck("SlabLayout")
        check.field("magic", at: magicOffset, size: 8)
        check.field("owner", at: ownerOffset, size: 8)
        check.field("classIndex", at: classIndexOffset, size: 8)
        check.field("blockSize", at: blockSizeOffset, size: 8)
        check.field("blockCount", at: blockCountOffset, size: 8)
        check.field("freeList", at: freeListOffset, size: 8)
        check.field("used", at: usedOffset, size: 8)
        check.field("bumpCursor", at: bumpCursorOffset, size: 8)
        check.field("bumpEnd", at: bumpEndOffset, size: 8)
        check.field("placeLinks", at: placeLinksOffset, size: 16)
        check.field("state", at: stateOffset, size: 8)
        check.field("ownedLinks", at: ownedLinksOffset, size: 16)
        check.field("boundary", at: boundaryOffset, size: 8)
        return check.result(within: Layout.headerSize)
    }
}

// MARK: - BinLayout

/// One size class inside a thread cache's page, in address order.
@usableFromInline
enum BinLayout {
    /// The current slab (allocations pop from it), or nil.
    @inlinable static var currentOffset: Int { 0 }
    /// The anchor of the partial list (one word: the first slab).
    @inlinable static var partialOffset: Int { 8 }
    /// Owner-written `Counters<BinEvent>`: allocations, deallocations, slabs.
    @inlinable static var countersOffset: Int { 16 }
    /// The free cache: its slot array (`Bin.cachedSlots`), how many blocks it holds, and
    /// how many slots it has (when it fills, the older half goes back to the slabs).
    @inlinable static var cachedSlotsOffset: Int { 40 }
    @inlinable static var cachedCountOffset: Int { 48 }
    @inlinable static var cachedLimitOffset: Int { 56 }
    /// A bin per cache line, so that a thread's classes in use share no line with others.
    @inlinable static var stride: Int { 64 }

    static func violation() -> String? {
        var check = LayoutCheck("BinLayout")
        check.field("current", at: currentOffset, size: 8)
        check.field("partial", at: partialOffset, size: 8)
        check.field("counters", at: countersOffset, size: BinEvent.byteCount)
        check.field("cachedSlots", at: cachedSlotsOffset, size: 8)
        check.field("cachedCount", at: cachedCountOffset, size: 8)
        check.field("cachedLimit", at: cachedLimitOffset, size: 8)
        return check.result(within: stride)
    }
}

// MARK: - ThreadCacheLayout

/// A thread cache's page, in address order.
@usableFromInline
enum ThreadCacheLayout {
    /// The remote-free list head (`AtomicPushList`), which other threads push to: alone on
    /// its cache line, so that their pushes do not slow the owner's own fields.
    @inlinable static var remoteFreesOffset: Int { 0 }
    /// The node of the global stack of parked caches (`AtomicStack`).
    @inlinable static var parkedLinkOffset: Int { 64 }
    /// The next cache in the global registry (a list that only grows).
    @inlinable static var registryNextOffset: Int { 72 }
    /// `ThreadCache.Kind`, written once.
    @inlinable static var kindOffset: Int { 80 }
    /// The remote batch: the owner it is for, its first and last block, and its length.
    @inlinable static var batchOwnerOffset: Int { 88 }
    @inlinable static var batchHeadOffset: Int { 96 }
    @inlinable static var batchTailOffset: Int { 104 }
    @inlinable static var batchCountOffset: Int { 112 }
    /// How many slabs the reserve holds, and its anchor (one word).
    @inlinable static var reserveCountOffset: Int { 120 }
    @inlinable static var reserveOffset: Int { 128 }
    /// The anchor of the owned-slabs list (one word).
    @inlinable static var ownedSlabsOffset: Int { 136 }
    /// The `SpinLock` of a locked cache (a `LockedBinnedAllocator`'s).
    @inlinable static var lockOffset: Int { 144 }
    /// The `SpinLock` of the large-span list, and the list's anchor (one word).
    @inlinable static var largeSpansLockOffset: Int { 152 }
    @inlinable static var largeSpansOffset: Int { 160 }
    /// `ThreadCache.tag` (a `UInt16`).
    @inlinable static var tagOffset: Int { 168 }
    /// `ThreadCache.freeKey`: the process's key, copied here for the free fast path.
    @inlinable static var freeKeyOffset: Int { 176 }
    /// `ThreadCache.Ownership`, an atomic word (active, parked, trimming).
    @inlinable static var ownershipOffset: Int { 184 }
    /// `Counters<LargeEvent>` of a locked cache's large blocks.
    @inlinable static var largeCountersOffset: Int { 192 }
    /// The bins, `Layout.classCount` of them, `BinLayout.stride` apart, from a cache line.
    @inlinable static var binsOffset: Int { 256 }
    /// Per class, what a free checks a block's offset in its slab against
    /// (`ThreadCache.ClassCheck`): two words, after the bins.
    @inlinable static var classChecksOffset: Int { 2816 }
    @inlinable static var classCheckStride: Int { 16 }
    /// The class of each request size up to `classTableLimit`, a byte per 16-byte step
    /// (`ThreadCache.classIndex(for:)`): entry `i` is the class of `16 × i` bytes, and so of
    /// every size from `16 × i − 15`. Written when a thread's cache is made.
    @inlinable static var classTableOffset: Int { 3456 }
    @inlinable static var classTableLimit: Int { 4096 }
    /// The free caches' slot arrays (`Bin.cachedSlots`), each class's after the one before,
    /// from the second page: pages of them that a thread never fills are never touched.
    @inlinable static var freeCacheSlotsOffset: Int { 4096 }
    /// The header page and the slot arrays' pages (36 KiB for the 40 classes' 4,599 slots).
    static var byteCount: Int {
        var slots = 0
        for index in 0..<Layout.classCount { slots += ThreadCache.freeCacheLimit(ofClass: index) }
        return freeCacheSlotsOffset + (slots * MemoryLayout<UnsafeMutableRawPointer>.stride + 4095) & ~4095
    }

    static func violation() -> String? {
        var check = LayoutCheck("ThreadCacheLayout")
        check.field("remoteFrees", at: remoteFreesOffset, size: 64)
        check.field("parkedLink", at: parkedLinkOffset, size: 8)
        check.field("registryNext", at: registryNextOffset, size: 8)
        check.field("kind", at: kindOffset, size: 8)
        check.field("batchOwner", at: batchOwnerOffset, size: 8)
        check.field("batchHead", at: batchHeadOffset, size: 8)
        check.field("batchTail", at: batchTailOffset, size: 8)
        check.field("batchCount", at: batchCountOffset, size: 8)
        check.field("reserveCount", at: reserveCountOffset, size: 8)
        check.field("reserve", at: reserveOffset, size: 8)
        check.field("ownedSlabs", at: ownedSlabsOffset, size: 8)
        check.field("lock", at: lockOffset, size: MemoryLayout<SpinLock>.size)
        check.field("largeSpansLock", at: largeSpansLockOffset, size: MemoryLayout<SpinLock>.size)
        check.field("largeSpans", at: largeSpansOffset, size: 8)
        check.field("tag", at: tagOffset, size: 2)
        check.field("freeKey", at: freeKeyOffset, size: 8)
        check.field("ownership", at: ownershipOffset, size: 8)
        check.field("largeCounters", at: largeCountersOffset, size: LargeEvent.byteCount)
        check.field("bins", at: binsOffset, size: Layout.classCount * BinLayout.stride, alignment: 64)
        check.field("classChecks", at: classChecksOffset, size: Layout.classCount * classCheckStride)
        check.field("classTable", at: classTableOffset, size: classTableLimit / 16 + 1, alignment: 1)
        return check.result(within: freeCacheSlotsOffset)
    }
}

// MARK: - LargeSpanLayout

/// A large span's header page, in address order. Every field is a word.
enum LargeSpanLayout {
    /// `LargeSpan.magic ^ address` while the span is a live block; 0 in the span cache.
    static var magicOffset: Int { 0 }
    /// The user part's size in bytes (whole pages), and the alignment it was asked with.
    static var usableSizeOffset: Int { 8 }
    static var alignmentOffset: Int { 16 }
    /// The locked cache that allocated the span, or 0 (the shared allocator's).
    static var ownerOffset: Int { 24 }
    /// The links (previous, next) of the owner's large-span list; of the release queue for
    /// a shared span (which has no owner) that waits there.
    static var linksOffset: Int { 32 }
    /// Where the user part reads as zero from (`LargeSpan.zeroedFrom`): calloc clears
    /// only what comes before.
    static var zeroedFromOffset: Int { 48 }
    /// The hardened build's (`Hardening.armLarge`): the size asked for.
    static var requestedSizeOffset: Int { 56 }
    /// The page's last word, just before the user part, keyed with its address
    /// (`LargeSpan.boundary`): every build's underflow check.
    static var boundaryOffset: Int { Layout.headerSize - 8 }

    static func violation() -> String? {
        var check = LayoutCheck("LargeSpanLayout")
        check.field("magic", at: magicOffset, size: 8)
        check.field("usableSize", at: usableSizeOffset, size: 8)
        check.field("alignment", at: alignmentOffset, size: 8)
        check.field("owner", at: ownerOffset, size: 8)
        check.field("links", at: linksOffset, size: 16)
        check.field("zeroedFrom", at: zeroedFromOffset, size: 8)
        check.field("requestedSize", at: requestedSizeOffset, size: 8)
        check.field("boundary", at: boundaryOffset, size: 8)
        return check.result(within: Layout.headerSize)
    }
}

// MARK: - GlobalLayout

/// The global page, in address order.
enum GlobalLayout {
    /// The stack of parked thread caches (`AtomicStack`, a word pair).
    static var parkedThreadCachesOffset: Int { 0 }
    /// The first cache of the registry, an atomic word.
    static var registryHeadOffset: Int { 16 }
    /// The anchor of the pool of empty slabs (one word), and its `SpinLock`.
    static var poolOffset: Int { 24 }
    static var poolLockOffset: Int { 32 }
    /// The `SpinLock` of the fallback cache, and the cache's address.
    static var fallbackLockOffset: Int { 40 }
    static var fallbackCacheOffset: Int { 48 }
    /// `Counters<GlobalEvent>`, and the shared allocator's `Counters<LargeEvent>`, each
    /// from a cache line.
    static var countersOffset: Int { 64 }
    static var largeCountersOffset: Int { 192 }
    /// The span cache's `SpinLock`, on a cache line of its own, and its slots (span
    /// headers), from the next.
    static var spanCacheLockOffset: Int { 256 }
    static var spanCacheOffset: Int { 512 }
    /// When each cached span was cached (monotonic nanoseconds), slot by slot.
    static var spanCachedAtOffset: Int { 1536 }
    /// `BinnedAllocConfiguration`, a word per knob (atomic, relaxed: read on slow paths).
    static var purgeDelayOffset: Int { 2560 }
    static var backgroundThreadOffset: Int { 2568 }
    static var spanCacheBytesOffset: Int { 2576 }
    static var freeCacheBytesOffset: Int { 2584 }
    static var statisticsAtExitOffset: Int { 2592 }
    /// The purger: whether its thread runs (an atomic word), and when memory was last
    /// purged (monotonic nanoseconds, atomic).
    static var purgerStateOffset: Int { 2624 }
    static var lastPurgeOffset: Int { 2632 }
    /// The `SpinLock` of walks over the parked caches (`GlobalState.forEachParkedCache`).
    static var parkedWalkLockOffset: Int { 2640 }
    /// The last `ThreadCache.tag` given, an atomic word.
    static var nextCacheTagOffset: Int { 2648 }
    /// `GlobalState.freeKey`, written before the page is published.
    static var freeKeyOffset: Int { 2656 }
    /// The hardened build's keys (`Hardening.sealKey`, `Hardening.linkKey`).
    static var sealKeyOffset: Int { 2664 }
    static var linkKeyOffset: Int { 2672 }
    /// The shared allocator's live large bytes at their highest since the last purge
    /// (`GlobalState.noteLargeLive`), an atomic word.
    static var largePeakOffset: Int { 2680 }
    /// The anchor (first and last span) of the release queue (`GlobalState.releaseQueue`).
    static var releaseQueueOffset: Int { 2688 }
    /// The page.
    static var byteCount: Int { 4096 }

    static func violation() -> String? {
        var check = LayoutCheck("GlobalLayout")
        check.field("parkedThreadCaches", at: parkedThreadCachesOffset, size: 16, alignment: 16)
        check.field("registryHead", at: registryHeadOffset, size: 8)
        check.field("pool", at: poolOffset, size: 8)
        check.field("poolLock", at: poolLockOffset, size: MemoryLayout<SpinLock>.size)
        check.field("fallbackLock", at: fallbackLockOffset, size: MemoryLayout<SpinLock>.size)
        check.field("fallbackCache", at: fallbackCacheOffset, size: 8)
        check.field("counters", at: countersOffset, size: GlobalEvent.byteCount)
        check.field("largeCounters", at: largeCountersOffset, size: LargeEvent.byteCount)
        check.field("spanCacheLock", at: spanCacheLockOffset, size: MemoryLayout<SpinLock>.size)
        check.field("spanCache", at: spanCacheOffset, size: GlobalState.spanCacheSlots * 8)
        check.field("spanCachedAt", at: spanCachedAtOffset, size: GlobalState.spanCacheSlots * 8)
        check.field("purgeDelay", at: purgeDelayOffset, size: 8)
        check.field("backgroundThread", at: backgroundThreadOffset, size: 8)
        check.field("spanCacheBytes", at: spanCacheBytesOffset, size: 8)
        check.field("freeCacheBytes", at: freeCacheBytesOffset, size: 8)
        check.field("statisticsAtExit", at: statisticsAtExitOffset, size: 8)
        check.field("purgerState", at: purgerStateOffset, size: 8, alignment: 64)
        check.field("lastPurge", at: lastPurgeOffset, size: 8)
        check.field("parkedWalkLock", at: parkedWalkLockOffset, size: MemoryLayout<SpinLock>.size)
        check.field("nextCacheTag", at: nextCacheTagOffset, size: 8)
        check.field("freeKey", at: freeKeyOffset, size: 8)
        check.field("sealKey", at: sealKeyOffset, size: 8)
        check.field("linkKey", at: linkKeyOffset, size: 8)
        check.field("largePeak", at: largePeakOffset, size: 8)
        check.field("releaseQueue", at: releaseQueueOffset, size: 16)
        return check.result(within: byteCount)
    }
}

// MARK: - Integrity walker

// Walks the whole structure and says what is wrong with it: the first violation as text,
// or nil. The model tests run it after their audits and at the end; debug builds run it
// when a locked allocator is dropped. It takes the locks it needs and claims parked
// caches as `releaseUnusedMemory()` does, so it may run while other threads allocate; it
// walks the calling thread's own cache, never another thread's.

extension BinnedAllocator {
    /// What is wrong with the shared allocator, or nil: the calling thread's cache, the
    /// parked caches, the fallback cache, the pool and the span cache. O(slabs² + blocks
    /// free in them).
    func integrityViolation() -> String? {
        guard let global = GlobalState.get() else { return nil }
        if let base = ThreadLocalSlot.binnedAlloc.value, let problem = ThreadCache(base).integrityViolation() {
            return problem
        }
        var parkedProblem: String? = nil
        global.forEachParkedCache { cache in
            if parkedProblem == nil { parkedProblem = cache.integrityViolation() }
        }
        if let parkedProblem { return parkedProblem }
        return global.fallbackLock.pointee.withLock { global.fallbackCache.integrityViolation() }
            ?? global.integrityViolation()
    }
}

extension LockedBinnedAllocator {
    /// What is wrong with this allocator's cache, its large spans, or the shared pool and
    /// span cache, or nil.
    func integrityViolation() -> String? {
        lock.pointee.withLock { cache.integrityViolation() } ?? GlobalState.get()?.integrityViolation()
    }
}

extension ThreadCache {
    /// What is wrong with this cache, or nil. The caller owns the cache (its thread, its
    /// lock, or a parked cache it claimed).
    ///
    /// A slab is in exactly one place: each slab its bins name (current or partial) is on
    /// the owned list with the state that says so; each slab on the owned list is its
    /// bin's current slab, on its bin's partial list, or full; each class's count of
    /// owned slabs is its `slabs` counter; the reserve holds only empty reserved slabs,
    /// none of them owned. Lists are checked with `IntrusiveList.integrityViolation`.
    func integrityViolation() -> String? {
        let name = "thread cache \(base)"
        if let problem = ownedSlabs.integrityViolation(limit: 1 << 24) { return "\(name), owned slabs: \(problem)" }
        if let problem = reserve.integrityViolation(limit: ThreadCache.reserveSlabLimit) {
            return "\(name), reserve: \(problem)"
        }
        guard (0..<ThreadCache.remoteBatchLimit).contains(batchCount) else {
            return "\(name): \(batchCount) blocks in the remote batch"
        }
        var problem: String? = nil
        ownedSlabs.forEach { node in
            guard problem == nil else { return }
            let slab = Slab(node)
            if let wrong = slab.integrityViolation(owner: self) {
                problem = "\(name): \(wrong)"
                return
            }
            let bin = bin(slab.classIndex)
            switch slab.state {
            case .current where bin.current?.base != node:
                problem =
                    "\(name): slab \(node) says it is current, but its bin's current slab is "
                    + "\(String(describing: bin.current?.base))"
            case .partial where !bin.partial.contains(node):
                problem = "\(name): partial slab \(node) is not on its bin's partial list"
            case .full where !reserve.isUnlinked(node) || bin.partial.first == node:
                problem = "\(name): full slab \(node) is on a list"
            case .reserved, .pooled:
                problem = "\(name): slab \(node) is owned, yet \(slab.state)"
            default:
                break
            }
        }
        if let problem { return problem }
        for index in 0..<Layout.classCount {
            let bin = bin(index)
            if let current = bin.current, current.state != .current || !ownedSlabs.contains(current.base) {
                return "\(name): class \(index)'s current slab \(current.base) is \(current.state), "
                    + "owned: \(ownedSlabs.contains(current.base))"
            }
            if let wrong = bin.partial.integrityViolation(limit: 1 << 24) {
                return "\(name): class \(index)'s partial list: \(wrong)"
            }
            bin.partial.forEach { node in
                let slab = Slab(node)
                if problem == nil && (slab.state != .partial || slab.classIndex != index || !ownedSlabs.contains(node))
                {
                    problem =
                        "\(name): slab \(node) on class \(index)'s partial list is \(slab.state) "
                        + "of class \(slab.classIndex), owned: \(ownedSlabs.contains(node))"
                }
            }
            if let problem { return problem }
            if let problem = bin.freeCacheViolation(classIndex: index, key: GlobalState.get()?.freeKey ?? 0) {
                return "\(name): \(problem)"
            }
            var owned = 0
            ownedSlabs.forEach { if Slab($0).classIndex == index { owned += 1 } }
            if owned != bin.counters.value(of: .slabs) {
                return "\(name): class \(index) owns \(owned) slabs, its counter says \(bin.counters.value(of: .slabs))"
            }
        }
        var reserved = 0
        reserve.forEach { node in
            reserved += 1
            let slab = Slab(node)
            if problem == nil && (slab.state != .reserved || slab.used != 0 || ownedSlabs.contains(node)) {
                problem =
                    "\(name): reserved slab \(node) is \(slab.state) with \(slab.used) blocks in use, "
                    + "owned: \(ownedSlabs.contains(node))"
            }
        }
        if let problem { return problem }
        if reserved != reserveCount { return "\(name): \(reserved) reserved slabs, the count says \(reserveCount)" }
        return withLargeSpans { largeSpansViolation() }
    }

    /// What is wrong with a locked cache's list of large spans (its lock held), or nil.
    func largeSpansViolation() -> String? {
        if let problem = largeSpans.integrityViolation(limit: 1 << 24) { return "large spans of \(base): \(problem)" }
        var problem: String? = nil
        largeSpans.forEach { header in
            let span = LargeSpan(header: header)
            if problem == nil && (!span.hasMagic || span.owner?.base != base) {
                problem = "large span \(span.user) on the list of \(base) has no magic, or another owner"
            }
        }
        return problem
    }
}

extension Bin {
    /// What is wrong with the free cache of class `classIndex`, or nil: at most its limit
    /// of blocks, as many as its count says, each a block boundary of a slab of that class
    /// whose granule entry names the class, each once, each carrying the mark of a freed
    /// block (`Misuse`; `key` is the process's).
    func freeCacheViolation(classIndex: Int, key: UInt) -> String? {
        guard cachedCount >= 0, cachedCount <= cachedLimit else {
            return "class \(classIndex)'s free cache holds \(cachedCount) blocks, its limit is \(cachedLimit)"
        }
        guard cachedCount > 0, let slots = cachedSlots else { return nil }
        for index in 0..<cachedCount {
            let block = slots[index]
            let slab = Slab(containing: block)
            guard slab.ownsBlock(block), slab.classIndex == classIndex,
                GranuleMap.entry(block) & GranuleMap.classBits
                    == GranuleMap.classEntry(classIndex, tag: GranuleMap.noTag)
            else { return "block \(block) in class \(classIndex)'s free cache is not a block of that class" }
            for earlier in 0..<index where slots[earlier] == block {
                return "block \(block) is twice in class \(classIndex)'s free cache"
            }
            guard block.load(fromByteOffset: Misuse.markOffset, as: UInt.self) == Misuse.mark(of: block, key: key)
            else {
                return "block \(block) in class \(classIndex)'s free cache does not carry a freed block's mark"
            }
        }
        return nil
    }
}

extension Slab {
    /// What is wrong with this slab of `owner`'s, or nil: its header, its granule, its
    /// free list (blocks of the slab, on block boundaries, no cycle), and whether its
    /// blocks add up (in use + free + never used = all).
    func integrityViolation(owner: ThreadCache) -> String? {
        guard magicWord == Slab.magic ^ Int(bitPattern: base) else { return "slab \(base) has no magic" }
        guard self.owner == owner.base else { return "slab \(base) belongs to \(self.owner)" }
        guard (0..<Layout.classCount).contains(classIndex), blockSize == Layout.sizeClasses.size(ofClass: classIndex),
            blockCount == (Layout.slabSize - Layout.headerSize) / blockSize
        else { return "slab \(base): class \(classIndex), block size \(blockSize), \(blockCount) blocks" }
        let entry = owner.kind == .perThread ? GranuleMap.classEntry(classIndex, tag: owner.tag) : GranuleMap.owned
        guard GranuleMap.entry(base) == entry else {
            return "slab \(base)'s granule entry is \(GranuleMap.entry(base)), not \(entry)"
        }
        let first = base + Layout.headerSize
        guard bumpCursor >= first, bumpCursor <= bumpEnd, bumpEnd == first + blockCount * blockSize,
            (bumpCursor - first) % blockSize == 0
        else { return "slab \(base): bump cursor \(bumpCursor), end \(bumpEnd)" }
        var free = 0
        var node = freeList
        while let block = node {
            let offset = block - first
            guard block < bumpCursor, offset >= 0, offset % blockSize == 0 else {
                return "slab \(base): free block \(block) is no carved block of the slab"
            }
            free += 1
            guard free <= blockCount else { return "slab \(base): the free list has a cycle" }
            node = Slab.next(after: block)
        }
        let neverUsed = (bumpEnd - bumpCursor) / blockSize
        guard used >= 0, used + free + neverUsed == blockCount else {
            return "slab \(base): \(used) in use + \(free) free + \(neverUsed) never used != \(blockCount) blocks"
        }
        switch state {
        case .partial where free + neverUsed == 0 || used == 0:
            return "partial slab \(base) has \(free) free and \(neverUsed) never-used blocks and \(used) in use"
        case .full where free != 0 || neverUsed != 0:
            return "full slab \(base) has \(free) free and \(neverUsed) never-used blocks"
        default:
            return nil
        }
    }
}

extension GlobalState {
    /// What is wrong with the pool or the span cache, or nil (under their locks).
    func integrityViolation() -> String? {
        let poolProblem: String? = poolLock.pointee.withLock {
            if let problem = pool.integrityViolation(limit: GlobalState.pooledSlabLimit) { return "pool: \(problem)" }
            var count = 0
            var problem: String? = nil
            pool.forEach { node in
                count += 1
                let slab = Slab(node)
                if problem == nil && (slab.magicWord != 0 || slab.state != .pooled) {
                    problem = "pooled slab \(node) has magic \(slab.magicWord) and is \(slab.state)"
                }
            }
            if problem == nil && count != counters.value(of: .pooledSlabs) {
                problem = "the pool holds \(count) slabs, its counter says \(counters.value(of: .pooledSlabs))"
            }
            return problem
        }
        if let poolProblem { return poolProblem }
        return spanCacheLock.pointee.withLock {
            let count = counters.value(of: .cachedSpans)
            guard (0...GlobalState.spanCacheSlots).contains(count) else { return "\(count) cached spans" }
            var bytes = 0
            for index in 0..<count {
                let span = LargeSpan(header: spanCache[index])
                if span.hasMagic { return "cached span \(span.user) still has its magic" }
                bytes += span.usableSize
            }
            if bytes != counters.value(of: .cachedSpanBytes) {
                return "cached spans hold \(bytes) bytes, the counter says \(counters.value(of: .cachedSpanBytes))"
            }
            let queued = counters.value(of: .queuedSpans)
            if let problem = releaseQueue.integrityViolation(limit: queued) { return "release queue: \(problem)" }
            var queuedCount = 0
            var queuedBytes = 0
            var node = releaseQueue.first
            while let header = node {
                let span = LargeSpan(header: header)
                if span.hasMagic || span.owner != nil { return "queued span \(span.user) is live or a locked one's" }
                queuedCount += 1
                queuedBytes += span.usableSize
                node = releaseQueue.next(after: header)
            }
            if queuedCount != queued || queuedBytes != counters.value(of: .queuedSpanBytes) {
                return "the release queue holds \(queuedCount) spans (\(queuedBytes) bytes), its counters say \(queued)"
            }
            return nil
        }
    }
}
