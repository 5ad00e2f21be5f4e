// BinnedAlloc: a size-class binned allocator with per-thread caches.
//
// # What it is
//
// Small requests (up to 32 KiB) are served from *slabs*: 256 KiB regions, aligned to
// 256 KiB, each holding blocks of one size class behind a one-page header. Every thread
// gets a *heap* (its cache): per size class a current slab and a list of slabs with free
// blocks. Allocation pops the current slab's free list; a free by the owning thread pushes
// onto it. Neither takes a lock or an atomic read-modify-write. Larger requests get a
// span of their own straight from the kernel.
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
// - The calling thread's heap: AllocCore's initial-exec thread-local slot, one `%fs` load.
//
// # Threads
//
// A block freed by a thread other than its slab's owner is a *remote free*. The freeing
// thread collects such blocks in a small batch per owner and pushes the batch, as one
// chain with one compare-exchange, onto the owner heap's remote list; the owner takes the
// whole list when it next runs out of blocks of some class. At most `remoteBatchLimit - 1`
// blocks wait in a thread's batch (flushed on its slow paths, at its exit and by
// `releaseUnusedMemory()`).
//
// A thread that exits *parks* its heap: pending frees are pushed, its own remote list
// drained, empty slabs released, and the heap goes onto a global stack. The next new
// thread adopts a parked heap before it maps a new one, so creating and joining thousands
// of threads keeps memory flat. Remote frees to a parked heap keep landing on its remote
// list and are collected by its adopter (or by `releaseUnusedMemory()`).
//
// # Memory back to the OS
//
// A slab that becomes empty while it is not its class's current slab is retired: each
// heap keeps up to `reserveSlabLimit` empty slabs warm for any class; beyond that the
// slab's pages are returned with `MADV_DONTNEED` and it goes to a global pool of empty
// slabs (address space only, one resident header page), or is unmapped when the pool
// already holds `pooledSlabLimit`. Large spans are unmapped when freed.
//
// # Single-threaded variant and page allocator
//
// `LockedBinnedAllocator` is one heap behind one spin lock, with no thread caches
// (rsbmalloc's single-threaded mode). `BinnedPageAllocator` hands out page spans through
// the large path.

import AllocCore
import Glibc
import Synchronization

// MARK: - Public API

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
    /// or alignment cannot be met (not a power of two, above ``maximumAlignment``, or more
    /// memory than the OS gives).
    ///
    /// A zero-byte request returns a unique block that must be freed like any other.
    /// Blocks are always at least 16-byte aligned.
    ///
    /// - Precondition: `byteCount >= 0`.
    @inlinable @inline(__always)
    public func allocate(byteCount: Int, alignment: Int = 16) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "BinnedAllocator.allocate: negative byteCount \(byteCount)")
        if byteCount <= Layout.smallSizeLimit && alignment &- 1 < Layout.quantum && alignment > 0
            && alignment & (alignment &- 1) == 0
        {
            return SharedHeap.allocateSmall(classIndex: Layout.sizeClasses.index(for: byteCount))
        }
        return SharedHeap.allocateShaped(byteCount: byteCount, alignment: alignment)
    }

    /// Frees a block from this allocator (any thread). nil is ignored.
    ///
    /// In debug builds a pointer this allocator did not hand out, or one already freed,
    /// traps with a message naming it.
    @inlinable @inline(__always)
    public func deallocate(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        SharedHeap.deallocate(pointer)
    }

    /// Resizes a block, keeping its first `min(old usable size, byteCount)` bytes.
    ///
    /// Stays in place when `byteCount` falls in the block's size class (or still fits it
    /// and uses more than half of it), or when a large block's span can grow or shrink
    /// where it is; a large
    /// span that must move is moved by remapping its pages, never by copying. A nil
    /// `pointer` allocates. On failure returns nil and leaves the block as it was. The
    /// result is 16-byte aligned (a large block keeps its alignment).
    @inlinable
    public func reallocate(_ pointer: UnsafeMutableRawPointer?, byteCount: Int) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "BinnedAllocator.reallocate: negative byteCount \(byteCount)")
        guard let pointer else { return allocate(byteCount: byteCount) }
        return SharedHeap.reallocate(pointer, byteCount: byteCount)
    }

    /// How many bytes the block really holds (at least what was asked); 0 for nil.
    @inlinable
    public func usableSize(of pointer: UnsafeRawPointer?) -> Int {
        guard let pointer else { return 0 }
        return Layout.usableSize(of: UnsafeMutableRawPointer(mutating: pointer))
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

    /// Counters of every heap (live and parked), summed. Callable from any thread; blocks
    /// still waiting in a thread's remote batch count as live.
    public func statistics() -> BinnedStatistics {
        SharedHeap.statistics()
    }

    /// Pushes the calling thread's pending remote frees, collects the frees waiting for
    /// its heap and for every parked heap, and retires their empty slabs (see the
    /// module comment for where retired slabs go).
    public func releaseUnusedMemory() {
        SharedHeap.releaseUnusedMemory()
    }
}

/// The binned allocator with no thread caches: one heap behind one spin lock, for
/// single-threaded programs or memory that must stay apart from the shared allocator
/// (rsbmalloc's single-threaded mode).
///
/// Every operation takes the lock, so any thread may use an instance. Deinit gives every
/// slab and large span of the instance back to the OS, like dropping an arena: blocks
/// still allocated from it are invalid afterwards.
public final class LockedBinnedAllocator: @unchecked Sendable {
    @usableFromInline let heap: Heap
    @usableFromInline let lock: UnsafeMutablePointer<SpinLock>

    /// An empty allocator; it maps memory on first use.
    ///
    /// - Precondition: the heap's header page can be mapped.
    public init() {
        guard let heap = Heap.create(kind: .locked, global: nil) else {
            preconditionFailure("LockedBinnedAllocator: cannot map a heap page")
        }
        self.heap = heap
        lock = (heap.base + Heap.lockOffset).bindMemory(to: SpinLock.self, capacity: 1)
        lock.initialize(to: SpinLock())
    }

    deinit {
        heap.releaseAllLargeSpans()
        heap.releaseAllSlabs()
        lock.deinitialize(count: 1)
        Heap.unmapHeader(heap)
    }

    /// See ``BinnedAllocator/allocate(byteCount:alignment:)``.
    public func allocate(byteCount: Int, alignment: Int = 16) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "LockedBinnedAllocator.allocate: negative byteCount \(byteCount)")
        guard let shape = Layout.Shape(byteCount: byteCount, alignment: alignment) else { return nil }
        switch shape {
        case .small(let classIndex):
            return lock.pointee.withLock { heap.allocate(classIndex: classIndex) }
        case .large(let byteCount, let alignment):
            return LargeSpan.allocate(
                byteCount: byteCount, alignment: alignment, owner: heap)
        }
    }

    /// See ``BinnedAllocator/deallocate(_:)``.
    public func deallocate(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        if Layout.isLarge(pointer) { return LargeSpan.free(pointer) }
        let slab = Slab(containing: pointer)
        slab.assertOwns(pointer)
        lock.pointee.withLock {
            if slab.owner == heap.base {
                heap.freeLocal(pointer, in: slab)
            } else {
                Heap(slab.owner).remoteFrees.push(pointer)
            }
        }
    }

    /// See ``BinnedAllocator/reallocate(_:byteCount:)``.
    public func reallocate(_ pointer: UnsafeMutableRawPointer?, byteCount: Int) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "LockedBinnedAllocator.reallocate: negative byteCount \(byteCount)")
        guard let pointer else { return allocate(byteCount: byteCount) }
        return Layout.reallocate(
            pointer, byteCount: byteCount,
            allocate: { self.allocate(byteCount: $0) }, deallocate: { self.deallocate($0) })
    }

    /// See ``BinnedAllocator/usableSize(of:)``.
    public func usableSize(of pointer: UnsafeRawPointer?) -> Int {
        guard let pointer else { return 0 }
        return Layout.usableSize(of: UnsafeMutableRawPointer(mutating: pointer))
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

    /// This allocator's counters (exact: one heap); bytes mapped and returned are the
    /// process-wide figures of all binned allocators.
    public func statistics() -> BinnedStatistics {
        var statistics = BinnedStatistics.empty
        lock.pointee.withLock { heap.addStatistics(to: &statistics) }
        statistics.addGlobalFigures(largeFrom: heap.largeCounters)
        statistics.threadCaches = 0
        statistics.parkedThreadCaches = 0
        return statistics
    }
}

/// Page spans straight from the OS, each with a one-page header that remembers its size,
/// so freeing needs no size (rsbmalloc's page allocator). Spans are also blocks of the
/// binned allocators: ``BinnedAllocator/deallocate(_:)`` frees them too.
public struct BinnedPageAllocator: Sendable {
    public init() {}

    /// A span of at least `byteCount` bytes (rounded up to whole pages, at least one)
    /// aligned to `alignment` (at least the page size), or nil.
    public func allocate(byteCount: Int, alignment: Int = 4096) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "BinnedPageAllocator.allocate: negative byteCount \(byteCount)")
        guard alignment > 0, isPowerOfTwo(alignment), alignment <= Layout.maximumAlignment else { return nil }
        return LargeSpan.allocate(
            byteCount: max(byteCount, 1), alignment: alignment)
    }

    /// Unmaps a span; nil is ignored.
    public func deallocate(_ pointer: UnsafeMutableRawPointer?) {
        guard let pointer else { return }
        precondition(Layout.isLarge(pointer), "BinnedPageAllocator.deallocate: \(pointer) is not a page span")
        LargeSpan.free(pointer)
    }

    /// Grows or shrinks a span in place or by remapping (never copying); nil allocates.
    public func reallocate(_ pointer: UnsafeMutableRawPointer?, byteCount: Int) -> UnsafeMutableRawPointer? {
        precondition(byteCount >= 0, "BinnedPageAllocator.reallocate: negative byteCount \(byteCount)")
        guard let pointer else { return allocate(byteCount: byteCount) }
        precondition(Layout.isLarge(pointer), "BinnedPageAllocator.reallocate: \(pointer) is not a page span")
        return LargeSpan.resize(pointer, byteCount: max(byteCount, 1))
    }

    /// The span's size in bytes (whole pages); 0 for nil.
    public func usableSize(of pointer: UnsafeRawPointer?) -> Int {
        guard let pointer else { return 0 }
        return Layout.usableSize(of: UnsafeMutableRawPointer(mutating: pointer))
    }
}

/// A snapshot of the binned allocators' counters.
public struct BinnedStatistics: Sendable, Equatable {
    /// Counters of one size class.
    public struct SizeClass: Sendable, Equatable {
        /// The bytes a block of this class holds.
        public var size: Int
        public var allocations: Int
        public var frees: Int
        /// `allocations - frees`.
        public var liveBlocks: Int
        /// Slabs of this class held by heaps now.
        public var slabs: Int
    }

    /// One entry per class, at its class index.
    public var sizeClasses: [SizeClass]
    /// Blocks above ``BinnedAllocator/smallSizeLimit`` (and page-allocator spans).
    public var largeAllocations: Int
    public var largeFrees: Int
    /// Usable bytes of large blocks not yet freed.
    public var largeLiveBytes: Int
    /// Bytes of slab chunks and large spans mapped now (process-wide).
    public var bytesMapped: Int
    /// Bytes given back to the OS so far, by `MADV_DONTNEED` or `munmap` (process-wide).
    public var bytesReturned: Int
    /// Freed large blocks kept mapped for reuse by the next request of their size class,
    /// and their bytes (process-wide; ``BinnedAllocator/releaseUnusedMemory()`` unmaps them).
    public var cachedLargeBlocks: Int
    public var cachedLargeBytes: Int
    /// Heaps ever created for threads (each is reused after its thread exits).
    public var threadCaches: Int
    /// Heaps of exited threads waiting to be adopted.
    public var parkedThreadCaches: Int

    static var empty: BinnedStatistics {
        BinnedStatistics(
            sizeClasses: (0..<Layout.classCount).map {
                SizeClass(size: Layout.sizeClasses.size(ofClass: $0), allocations: 0, frees: 0, liveBlocks: 0, slabs: 0)
            },
            largeAllocations: 0, largeFrees: 0, largeLiveBytes: 0, bytesMapped: 0, bytesReturned: 0,
            cachedLargeBlocks: 0, cachedLargeBytes: 0, threadCaches: 0, parkedThreadCaches: 0)
    }

    mutating func addGlobalFigures(largeFrom large: Counters<LargeEvent>?) {
        if let large {
            largeAllocations += large.value(of: .allocations)
            largeFrees += large.value(of: .frees)
            largeLiveBytes += large.value(of: .liveBytes)
        }
        guard let global = GlobalState.get() else { return }
        bytesMapped = global.counters.value(of: .bytesMapped)
        bytesReturned = global.counters.value(of: .bytesReturned)
        cachedLargeBlocks = global.counters.value(of: .cachedSpans)
        cachedLargeBytes = global.counters.value(of: .cachedSpanBytes)
        threadCaches = global.counters.value(of: .heaps)
        parkedThreadCaches = global.counters.value(of: .parkedHeaps)
    }
}

// MARK: - C ABI

// The malloc family under `binned_` names, with glibc's answers to bad input (GUIDE
// section 5). Sizes are `size_t` in C: a negative `Int` here is a size of 2^63 or more.

/// `malloc`: NULL with ENOMEM when the size cannot be met.
///
/// The standard `malloc` jumps here, so the fast path is written out in this one function
/// and calls nothing (no stack frame either): a small size pops the calling thread's
/// current slab. Everything else (no heap yet, an empty slab, a large or impossible size,
/// errno) is `mallocSlow`'s. Measured with `binned_free_any` under `LD_PRELOAD`,
/// malloc(16 to 1024)+free through function pointers: 3.1 to 3.3 ns a pair (medians of 9
/// runs), from 4.1 to 4.4 ns when `malloc` went through `BinnedAllocator.allocate` and
/// `free` called `binned_owns` (jemalloc: 3.4 to 4.2 ns).
@c(binned_malloc)
public func binned_malloc(_ size: Int) -> UnsafeMutableRawPointer? {
    if UInt(bitPattern: size) <= UInt(Layout.smallSizeLimit),
        let block = SharedHeap.popSmall(classIndex: Layout.sizeClasses.index(for: size))
    {
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
/// here, any other pointer (glibc's, see `RegionMap`) is passed to `foreignFree`.
///
/// The standard `free` jumps here with glibc's free as `foreignFree`: the region-map test
/// and the whole fast path of `deallocate` are one function with no call, where the
/// standard `free` used to call `binned_owns` and then jump to `binned_free`.
@c(binned_free_any)
public func binned_free_any(
    _ pointer: UnsafeMutableRawPointer?, _ foreignFree: @convention(c) (UnsafeMutableRawPointer?) -> Void
) {
    guard let pointer else { return }
    guard _fastPath(RegionMap.contains(pointer)) else { return foreignFree(pointer) }
    SharedHeap.deallocate(pointer)
}

/// `calloc`: zeroed memory; NULL with ENOMEM when `count * size` overflows.
@c(binned_calloc)
public func binned_calloc(_ count: Int, _ size: Int) -> UnsafeMutableRawPointer? {
    guard let byteCount = checkedByteCount(count: UInt(bitPattern: count), stride: UInt(bitPattern: size)),
        let block = BinnedAllocator.shared.allocate(byteCount: byteCount)
    else { return outOfMemory() }
    // Fresh large spans come zeroed from the kernel; slab blocks and cached spans are reused.
    if !Layout.isLarge(block) || !LargeSpan(user: block).isZeroed { memset(block, 0, byteCount) }
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

/// Whether `pointer` is a block BinnedAlloc handed out (or lies in a region that holds
/// them): the test the standard malloc names make before freeing, so that a foreign
/// pointer goes to glibc (see `RegionMap`). False for NULL.
@c(binned_owns)
public func binned_owns(_ pointer: UnsafeRawPointer?) -> Bool {
    guard let pointer else { return false }
    return RegionMap.contains(pointer)
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
        SharedHeap.report(into: &text)
        try text.write(to: descriptor)
        return 0
    } catch {
        return error.code
    }
}

func outOfMemory() -> UnsafeMutableRawPointer? {
    errno = ENOMEM
    return nil
}

// MARK: - Layout and constants

/// The numbers every part agrees on.
@usableFromInline
enum Layout {
    /// Every block is a multiple of this and aligned to it: malloc's 16-byte guarantee.
    @inlinable static var quantum: Int { 16 }
    /// Slabs are this big and aligned to it. Big enough that the header page costs 1.6% and
    /// even the 32 KiB class gets 7 blocks; small enough that a heap's partly used current
    /// slabs (one per class) stay cheap, since untouched pages are never faulted in.
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
    /// Alignments above this are refused: an aligned span over-maps by its alignment.
    @inlinable static var maximumAlignment: Int { 1 << 30 }
    /// Requests above this are refused without asking the OS: no machine maps 2^62 bytes.
    @inlinable static var maximumByteCount: Int { 1 << 62 }

    /// Whether `pointer` is a large block (its address is slab-aligned).
    @inlinable
    static func isLarge(_ pointer: UnsafeMutableRawPointer) -> Bool {
        Int(bitPattern: pointer) & slabMask == 0
    }

    /// Where a request goes.
    enum Shape {
        case small(classIndex: Int)
        case large(byteCount: Int, alignment: Int)

        /// nil for an alignment that is not a power of two or too large, or a size too large.
        init?(byteCount: Int, alignment: Int) {
            guard alignment > 0, isPowerOfTwo(alignment), alignment <= maximumAlignment,
                byteCount <= maximumByteCount
            else { return nil }
            if byteCount <= smallSizeLimit && alignment <= headerSize {
                // Blocks sit at `slab + page + i * size`: a class whose size is a multiple of
                // the alignment gives aligned blocks. Powers of two close every group of 4
                // classes, so the walk takes at most 3 steps.
                var index = sizeClasses.index(for: max(byteCount, alignment))
                while sizeClasses.size(ofClass: index) % alignment != 0 { index += 1 }
                if index < classCount {
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
        slab.assertOwns(pointer)
        return slab.blockSize
    }

    /// Reallocation shared by the allocators: in place within the block's class (or when
    /// it still fits and is used more than half), by remapping for large spans, else by
    /// moving.
    static func reallocate(
        _ pointer: UnsafeMutableRawPointer, byteCount: Int,
        allocate: (Int) -> UnsafeMutableRawPointer?, deallocate: (UnsafeMutableRawPointer) -> Void
    ) -> UnsafeMutableRawPointer? {
        guard byteCount <= maximumByteCount else { return nil }
        let oldSize: Int
        if isLarge(pointer) {
            if byteCount > smallSizeLimit {
                return LargeSpan.resize(pointer, byteCount: byteCount, classSized: true)
            }
            oldSize = LargeSpan(user: pointer).usableSize
        } else {
            let slab = Slab(containing: pointer)
            slab.assertOwns(pointer)
            oldSize = slab.blockSize
            // The same class, or a bigger one still more than half used (a block whose class
            // was raised for alignment), stays where it is.
            if byteCount <= oldSize
                && (byteCount > oldSize / 2 || sizeClasses.index(for: byteCount) == slab.classIndex)
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

// MARK: - Fast path

/// The shared allocator's entry points: the calling thread's heap, found through the
/// thread-local slot.
@usableFromInline
enum SharedHeap {
    /// Pops a block of class `classIndex` from the current slab of the calling thread's
    /// heap: a TLS load and four memory operations, no atomic read-modify-write.
    @inlinable @inline(__always)
    static func allocateSmall(classIndex: Int) -> UnsafeMutableRawPointer? {
        popSmall(classIndex: classIndex) ?? allocateSmallSlow(classIndex: classIndex)
    }

    /// The fast path alone: a block of class `classIndex` from the calling thread's current
    /// slab, or nil when the thread has no heap yet or that slab has no free block (then
    /// `allocateSmallSlow` is the way on).
    @inlinable @inline(__always)
    static func popSmall(classIndex: Int) -> UnsafeMutableRawPointer? {
        guard let base = ThreadLocalSlot.binnedAlloc.value else { return nil }
        return Heap(base).bin(classIndex).popCurrent()
    }

    /// Frees any block: to the freeing thread's own slab when it owns it (a push, no
    /// atomic), else as a remote free.
    @inlinable @inline(__always)
    static func deallocate(_ pointer: UnsafeMutableRawPointer) {
        if Layout.isLarge(pointer) { return deallocateLarge(pointer) }
        let slab = Slab(containing: pointer)
        slab.assertOwns(pointer)
        if let base = ThreadLocalSlot.binnedAlloc.value, _fastPath(slab.owner == base) {
            Heap(base).freeLocal(pointer, in: slab)
        } else {
            deallocateRemote(pointer, slab: slab)
        }
    }

    // MARK: Slow path

    @usableFromInline @inline(never)
    static func allocateSmallSlow(classIndex: Int) -> UnsafeMutableRawPointer? {
        if let heap = currentHeap() { return heap.allocate(classIndex: classIndex) }
        // An exiting thread (or one that could not get a heap) uses the global locked heap.
        guard let global = GlobalState.get() else { return nil }
        return global.fallbackLock.pointee.withLock { global.fallbackHeap.allocate(classIndex: classIndex) }
    }

    @usableFromInline @inline(never)
    static func allocateShaped(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer? {
        guard let shape = Layout.Shape(byteCount: byteCount, alignment: alignment) else { return nil }
        switch shape {
        case .small(let classIndex):
            return allocateSmall(classIndex: classIndex)
        case .large(let byteCount, let alignment):
            return LargeSpan.allocateShared(byteCount: byteCount, alignment: alignment)
        }
    }

    @usableFromInline @inline(never)
    static func deallocateLarge(_ pointer: UnsafeMutableRawPointer) {
        LargeSpan.free(pointer, cacheable: true)
    }

    /// A block whose slab belongs to another heap: into this thread's batch for that
    /// owner when the owner is a thread heap (never unmapped, so a batch may wait), else
    /// straight onto the owner's remote list: a locked allocator's heap goes away at its
    /// deinit, and a batch must not outlive it; so does a thread with no heap.
    @usableFromInline @inline(never)
    static func deallocateRemote(_ pointer: UnsafeMutableRawPointer, slab: Slab) {
        let owner = Heap(slab.owner)
        if let base = ThreadLocalSlot.binnedAlloc.value, owner.kind == .threadCache {
            Heap(base).batchRemoteFree(pointer, owner: owner)
        } else {
            owner.remoteFrees.push(pointer)
        }
    }

    @usableFromInline @inline(never)
    static func reallocate(_ pointer: UnsafeMutableRawPointer, byteCount: Int) -> UnsafeMutableRawPointer? {
        Layout.reallocate(
            pointer, byteCount: byteCount,
            allocate: { BinnedAllocator.shared.allocate(byteCount: $0) },
            deallocate: { BinnedAllocator.shared.deallocate($0) })
    }

    /// The calling thread's heap: adopted from the parked stack or created, and installed
    /// in the thread-local slot with the exit hook armed. nil while the thread is exiting
    /// (a heap made now could outlive the last exit hook) or when no page can be mapped.
    static func currentHeap() -> Heap? {
        let slot = ThreadLocalSlot.binnedAlloc
        if let base = slot.value { return Heap(base) }
        guard !ThreadLocalSlot.isCurrentThreadExiting, let global = GlobalState.get() else { return nil }
        let heap: Heap
        if let parked = global.parkedHeaps.pop() {
            heap = Heap(parked - Heap.parkedLinkOffset)
            heap.claimParked()
            global.counters.add(-1, to: .parkedHeaps)
        } else if let created = Heap.create(kind: .threadCache, global: global) {
            heap = created
        } else {
            return nil
        }
        // If arming fails the heap still works; it is just not parked at thread exit.
        try? slot.install(heap.base)
        return heap
    }

    /// The thread-exit hook: gives the heap's memory back and parks it for the next thread.
    static let threadExitHook: @convention(c) (UnsafeMutableRawPointer?) -> Void = { base in
        guard let base, let global = GlobalState.get() else { return }
        let heap = Heap(base)
        heap.flushRemoteBatch()
        heap.trim()
        global.counters.add(1, to: .parkedHeaps)
        heap.ownership.store(Heap.Ownership.parked.rawValue, ordering: .releasing)
        global.parkedHeaps.push(base + Heap.parkedLinkOffset)
    }

    static func statistics() -> BinnedStatistics {
        var statistics = BinnedStatistics.empty
        guard let global = GlobalState.get() else { return statistics }
        var node = global.registryHead
        while let base = node {
            Heap(base).addStatistics(to: &statistics)
            node = Heap(base).registryNext
        }
        global.fallbackHeap.addStatistics(to: &statistics)
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
        text.append(counters.value(of: .heaps))
        text.append(" (parked ")
        text.append(counters.value(of: .parkedHeaps))
        text.append("), bytes mapped ")
        text.append(counters.value(of: .bytesMapped))
        text.append(", bytes returned ")
        text.append(counters.value(of: .bytesReturned))
        text.append(", pooled slabs ")
        text.append(counters.value(of: .pooledSlabs))
        text.append("\nlarge blocks: allocations ")
        text.append(large.value(of: .allocations))
        text.append(", frees ")
        text.append(large.value(of: .frees))
        text.append(", live bytes ")
        text.append(large.value(of: .liveBytes))
        text.append(", cached ")
        text.append(counters.value(of: .cachedSpans))
        text.append(" (")
        text.append(counters.value(of: .cachedSpanBytes))
        text.append(" bytes)\n")
        text.append("class      size    allocations          frees     live   slabs\n")
        for index in 0..<Layout.classCount {
            var sums = (allocations: 0, frees: 0, slabs: 0)
            func add(_ heap: Heap) {
                let bin = heap.bin(index)
                sums.allocations += bin.counters.value(of: .allocations)
                sums.frees += bin.counters.value(of: .frees)
                sums.slabs += bin.counters.value(of: .slabs)
            }
            var node = global.registryHead
            while let base = node {
                add(Heap(base))
                node = Heap(base).registryNext
            }
            add(global.fallbackHeap)
            guard sums.allocations > 0 else { continue }
            text.append(index, width: 5)
            text.append(Layout.sizeClasses.size(ofClass: index), width: 10)
            text.append(sums.allocations, width: 15)
            text.append(sums.frees, width: 15)
            text.append(sums.allocations - sums.frees, width: 9)
            text.append(sums.slabs, width: 8)
            text.append("\n")
        }
    }

    static func releaseUnusedMemory() {
        guard let global = GlobalState.get() else { return }
        if let base = ThreadLocalSlot.binnedAlloc.value {
            let heap = Heap(base)
            heap.flushRemoteBatch()
            heap.trim()
        }
        // Parked heaps are trimmed where they are: each is claimed with a compare-exchange
        // (parked → trimming) and stays on the parked stack, so a thread starting meanwhile
        // still finds it (and waits the moment it takes to trim) rather than mapping a new one.
        var node = global.registryHead
        while let base = node {
            let heap = Heap(base)
            node = heap.registryNext
            guard
                heap.ownership.compareExchange(
                    expected: Heap.Ownership.parked.rawValue, desired: Heap.Ownership.trimming.rawValue,
                    ordering: .acquiringAndReleasing
                ).exchanged
            else { continue }
            heap.trim()
            heap.ownership.store(Heap.Ownership.parked.rawValue, ordering: .releasing)
        }
        global.fallbackLock.pointee.withLock { global.fallbackHeap.trim() }
        global.emptySpanCache()
    }
}

// MARK: - Heaps

/// A heap: one page holding a thread's (or a locked allocator's) bins. Only its owner
/// touches it, except `remoteFrees`, which any thread pushes to, and the counters, which
/// any thread reads.
///
/// ```
/// 0     remote frees (AtomicPushList head), alone on its cache line
/// 64    parked-stack link (AtomicStack node)   72  registry next   80  kind
/// 88    remote batch: owner, head, tail, count
/// 120   reserve count   128  reserve head   136  all-slabs head
/// 144   spin lock (locked allocators)   152  large-span list lock   160  large-span list
/// 184   ownership (active, parked, trimming)   192  large counters (3 words)
/// 256   bins: 40 × 64 bytes (current slab, partial head, allocations, frees, slabs)
/// ```
@usableFromInline
struct Heap {
    @usableFromInline let base: UnsafeMutableRawPointer

    @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }

    enum Kind: Int { case threadCache = 0, locked = 1 }

    static let parkedLinkOffset = 64
    static let registryNextOffset = 72
    static let kindOffset = 80
    static let batchOwnerOffset = 88
    static let batchHeadOffset = 96
    static let batchTailOffset = 104
    static let batchCountOffset = 112
    static let reserveCountOffset = 120
    static let reserveHeadOffset = 128
    static let allSlabsOffset = 136
    static let lockOffset = 144
    static let ownershipOffset = 184
    static let largeSpansLockOffset = 152
    static let largeSpansOffset = 160
    static let largeCountersOffset = 192
    @inlinable static var binsOffset: Int { 256 }
    static let byteCount = 4096

    /// Remote frees for one owner are pushed as one chain once this many wait: one
    /// compare-exchange per 64 cross-thread frees, and never more than 63 blocks parked
    /// in a thread that stops freeing.
    static let remoteBatchLimit = 64
    /// Empty slabs a heap keeps warm for any class before returning them to the OS: two
    /// absorb the churn of a working set that hovers around a slab boundary, and bound
    /// what an idle heap holds to 512 KiB.
    static let reserveSlabLimit = 2

    @inlinable
    func bin(_ classIndex: Int) -> Bin {
        Bin(base + (Heap.binsOffset &+ classIndex &* Bin.stride))
    }

    var remoteFrees: AtomicPushList { AtomicPushList(at: base) }

    /// Written once when the heap is made, before any of its blocks exists.
    var kind: Kind { Kind(rawValue: base.load(fromByteOffset: Heap.kindOffset, as: Int.self)).unsafelyUnwrapped }

    /// Whether a thread heap is in use by a thread, parked, or being trimmed by
    /// `releaseUnusedMemory()`; an adopter that pops a heap being trimmed waits for it.
    enum Ownership: Int { case active = 0, parked = 1, trimming = 2 }

    var ownership: AtomicWord { AtomicWord(at: base + Heap.ownershipOffset) }

    var registryNext: UnsafeMutableRawPointer? {
        get { base.load(fromByteOffset: Heap.registryNextOffset, as: UnsafeMutableRawPointer?.self) }
        nonmutating set {
            base.storeBytes(of: newValue, toByteOffset: Heap.registryNextOffset, as: UnsafeMutableRawPointer?.self)
        }
    }

    var largeCounters: Counters<LargeEvent> { Counters(at: base + Heap.largeCountersOffset) }

    /// The large spans of a locked heap, linked through their headers.
    var largeSpansHead: UnsafeMutableRawPointer? {
        get { base.load(fromByteOffset: Heap.largeSpansOffset, as: UnsafeMutableRawPointer?.self) }
        nonmutating set {
            base.storeBytes(of: newValue, toByteOffset: Heap.largeSpansOffset, as: UnsafeMutableRawPointer?.self)
        }
    }

    /// Runs `body` holding the lock that guards a locked heap's list of large spans (a
    /// lock of its own, so that freeing a span never waits for the heap's block lock).
    func withLargeSpans<Result>(_ body: () -> Result) -> Result {
        (base + Heap.largeSpansLockOffset).assumingMemoryBound(to: SpinLock.self).pointee.withLock(body)
    }

    /// Unmaps every large span still linked (a locked allocator's deinit).
    func releaseAllLargeSpans() {
        while let header = withLargeSpans({ largeSpansHead }) {
            LargeSpan.free(header + Layout.headerSize)
        }
    }

    /// Maps a heap (and registers a thread heap with `global`). Its page comes zeroed:
    /// every list empty, every counter 0 (a zero word is a zero `Counters` entry, so the
    /// counters are attached, not initialized: `Counters(initializingAt:)` asks the
    /// runtime for `allCases`, which allocates, and nothing on a malloc path may).
    static func create(kind: Kind, global: GlobalState?) -> Heap? {
        guard let base = try? PageSource().allocate(byteCount: byteCount) else { return nil }
        let heap = Heap(base)
        _ = AtomicPushList(initializingAt: base)
        base.storeBytes(of: kind.rawValue, toByteOffset: kindOffset, as: Int.self)
        _ = AtomicWord(initializingAt: base + ownershipOffset, to: Ownership.active.rawValue)
        (base + largeSpansLockOffset).bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        if kind == .threadCache, let global {
            global.register(heap)
            global.counters.add(1, to: .heaps)
        }
        return heap
    }

    static func unmapHeader(_ heap: Heap) {
        try? PageSource().release(heap.base, byteCount: byteCount)
    }

    /// Takes a heap just popped from the parked stack for the calling thread, waiting while
    /// `releaseUnusedMemory()` trims it.
    func claimParked() {
        while !ownership.compareExchange(
            expected: Ownership.parked.rawValue, desired: Ownership.active.rawValue, ordering: .acquiringAndReleasing
        ).exchanged {
            sched_yield()
        }
    }

    // MARK: Allocation

    /// A block of class `classIndex`: the current slab's free list, else the refill path.
    func allocate(classIndex: Int) -> UnsafeMutableRawPointer? {
        bin(classIndex).popCurrent() ?? refill(classIndex: classIndex)
    }

    /// The current slab ran dry: collect remote frees, carve fresh blocks, move to a
    /// partial slab, or take a new slab, in that order.
    func refill(classIndex: Int) -> UnsafeMutableRawPointer? {
        flushRemoteBatch()
        collectRemoteFrees()
        let bin = bin(classIndex)
        if let slab = bin.current {
            if slab.freeList == nil { slab.carve() }
            if slab.freeList == nil {
                // Exhausted: it leaves the bin and is tracked by no list until a free lands.
                slab.state = .full
                bin.current = nil
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

    /// A slab for class `classIndex`, current and owned by this heap: from the heap's
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
        linkSlab(slab)
        bin(classIndex).counters.addFromOwner(1, to: .slabs)
        return slab
    }

    // MARK: Free

    /// Frees a block of a slab this heap owns: a push onto the slab's free list.
    @inlinable @inline(__always)
    func freeLocal(_ block: UnsafeMutableRawPointer, in slab: Slab) {
        block.storeBytes(of: slab.freeList, as: UnsafeMutableRawPointer?.self)
        slab.freeList = block
        slab.used &-= 1
        bin(slab.classIndex).counters.addFromOwner(1, to: .frees)
        if _slowPath(slab.state != .current) { freedIntoNonCurrent(slab) }
    }

    /// A free landed in a slab that is not its class's current one: a full slab becomes
    /// partial again, and a slab with no block left in use is retired.
    @usableFromInline @inline(never)
    func freedIntoNonCurrent(_ slab: Slab) {
        let bin = bin(slab.classIndex)
        if slab.state == .full {
            slab.state = .partial
            bin.pushPartial(slab)
        }
        if slab.used == 0 {
            bin.removePartial(slab)
            retire(slab)
        }
    }

    /// Adds a remote free to the batch for `owner`; a batch for another owner, or a full
    /// one, is pushed first.
    @usableFromInline
    func batchRemoteFree(_ block: UnsafeMutableRawPointer, owner: Heap) {
        var count = base.load(fromByteOffset: Heap.batchCountOffset, as: Int.self)
        let batchOwner = base.load(fromByteOffset: Heap.batchOwnerOffset, as: UnsafeMutableRawPointer?.self)
        if count > 0 && batchOwner != owner.base {
            flushRemoteBatch()
            count = 0
        }
        if count == 0 {
            AtomicPushList.link(block, to: nil)
            base.storeBytes(of: owner.base, toByteOffset: Heap.batchOwnerOffset, as: UnsafeMutableRawPointer.self)
            base.storeBytes(of: block, toByteOffset: Heap.batchTailOffset, as: UnsafeMutableRawPointer.self)
        } else {
            AtomicPushList.link(
                block, to: base.load(fromByteOffset: Heap.batchHeadOffset, as: UnsafeMutableRawPointer?.self))
        }
        base.storeBytes(of: block, toByteOffset: Heap.batchHeadOffset, as: UnsafeMutableRawPointer.self)
        base.storeBytes(of: count + 1, toByteOffset: Heap.batchCountOffset, as: Int.self)
        if count + 1 >= Heap.remoteBatchLimit { flushRemoteBatch() }
    }

    /// Pushes the waiting remote frees to their owner with one compare-exchange.
    func flushRemoteBatch() {
        guard base.load(fromByteOffset: Heap.batchCountOffset, as: Int.self) > 0 else { return }
        let owner = Heap(base.load(fromByteOffset: Heap.batchOwnerOffset, as: UnsafeMutableRawPointer.self))
        owner.remoteFrees.pushChain(
            first: base.load(fromByteOffset: Heap.batchHeadOffset, as: UnsafeMutableRawPointer.self),
            last: base.load(fromByteOffset: Heap.batchTailOffset, as: UnsafeMutableRawPointer.self))
        base.storeBytes(of: 0, toByteOffset: Heap.batchCountOffset, as: Int.self)
    }

    /// Takes every block other threads freed into this heap's slabs and frees it locally.
    func collectRemoteFrees() {
        var node = remoteFrees.takeAll()
        while let block = node {
            node = AtomicPushList.next(after: block)
            let slab = Slab(containing: block)
            assert(slab.owner == base, "BinnedAlloc: remote free of \(block) reached heap \(base), not its owner")
            freeLocal(block, in: slab)
        }
    }

    // MARK: Slabs

    /// An empty slab leaves this heap: into the reserve, else back to the OS.
    func retire(_ slab: Slab) {
        assert(slab.used == 0, "BinnedAlloc: retiring slab \(slab.base) with \(slab.used) blocks in use")
        bin(slab.classIndex).counters.addFromOwner(-1, to: .slabs)
        unlinkSlab(slab)
        let reserved = base.load(fromByteOffset: Heap.reserveCountOffset, as: Int.self)
        if reserved < Heap.reserveSlabLimit {
            slab.state = .reserved
            slab.next = Slab(
                optional: base.load(fromByteOffset: Heap.reserveHeadOffset, as: UnsafeMutableRawPointer?.self))
            base.storeBytes(of: slab.base, toByteOffset: Heap.reserveHeadOffset, as: UnsafeMutableRawPointer.self)
            base.storeBytes(of: reserved + 1, toByteOffset: Heap.reserveCountOffset, as: Int.self)
        } else {
            GlobalState.get()?.returnSlab(slab)
        }
    }

    func popReserve() -> Slab? {
        guard let first = base.load(fromByteOffset: Heap.reserveHeadOffset, as: UnsafeMutableRawPointer?.self) else {
            return nil
        }
        let slab = Slab(first)
        base.storeBytes(of: slab.next?.base, toByteOffset: Heap.reserveHeadOffset, as: UnsafeMutableRawPointer?.self)
        base.storeBytes(
            of: base.load(fromByteOffset: Heap.reserveCountOffset, as: Int.self) - 1,
            toByteOffset: Heap.reserveCountOffset, as: Int.self)
        return slab
    }

    /// Sends every reserved slab back to the OS.
    func releaseReserve() {
        while let slab = popReserve() { GlobalState.get()?.returnSlab(slab) }
    }

    /// Gives back what the heap holds without need: collects the frees other threads made
    /// into it, then retires its empty current slabs and its reserve.
    func trim() {
        collectRemoteFrees()
        retireEmptyCurrentSlabs()
        releaseReserve()
    }

    /// Retires each class's current slab when nothing in it is in use (thread exit, trim).
    func retireEmptyCurrentSlabs() {
        for index in 0..<Layout.classCount {
            let bin = bin(index)
            if let slab = bin.current, slab.used == 0 {
                bin.current = nil
                slab.state = .partial
                retire(slab)
            }
        }
    }

    /// Every slab this heap owns is linked through `allNext`/`allPrevious`, so that a
    /// locked allocator can unmap them all at deinit.
    func linkSlab(_ slab: Slab) {
        let head = Slab(optional: base.load(fromByteOffset: Heap.allSlabsOffset, as: UnsafeMutableRawPointer?.self))
        slab.allPrevious = nil
        slab.allNext = head
        head?.allPrevious = slab
        base.storeBytes(of: slab.base, toByteOffset: Heap.allSlabsOffset, as: UnsafeMutableRawPointer.self)
    }

    func unlinkSlab(_ slab: Slab) {
        if let previous = slab.allPrevious {
            previous.allNext = slab.allNext
        } else {
            base.storeBytes(
                of: slab.allNext?.base, toByteOffset: Heap.allSlabsOffset, as: UnsafeMutableRawPointer?.self)
        }
        slab.allNext?.allPrevious = slab.allPrevious
    }

    /// Unmaps every slab (a locked allocator's deinit).
    func releaseAllSlabs() {
        releaseReserve()
        var node = Slab(optional: base.load(fromByteOffset: Heap.allSlabsOffset, as: UnsafeMutableRawPointer?.self))
        while let slab = node {
            node = slab.allNext
            GlobalState.get()?.returnSlab(slab)
        }
    }

    // MARK: Statistics

    func addStatistics(to statistics: inout BinnedStatistics) {
        for index in 0..<Layout.classCount {
            let bin = bin(index)
            let allocations = bin.counters.value(of: .allocations)
            let frees = bin.counters.value(of: .frees)
            statistics.sizeClasses[index].allocations += allocations
            statistics.sizeClasses[index].frees += frees
            statistics.sizeClasses[index].liveBlocks += allocations - frees
            statistics.sizeClasses[index].slabs += bin.counters.value(of: .slabs)
        }
    }
}

/// One size class of a heap: its current slab, the slabs with free blocks, and counters.
@usableFromInline
struct Bin {
    @usableFromInline let base: UnsafeMutableRawPointer

    @inlinable init(_ base: UnsafeMutableRawPointer) { self.base = base }

    @inlinable static var stride: Int { 64 }

    /// The slab allocations pop from.
    @inlinable
    var current: Slab? {
        get { Slab(optional: base.load(as: UnsafeMutableRawPointer?.self)) }
        nonmutating set { base.storeBytes(of: newValue?.base, as: UnsafeMutableRawPointer?.self) }
    }

    /// Slabs (not current) with at least one free block, doubly linked.
    var partialHead: Slab? {
        get { Slab(optional: base.load(fromByteOffset: 8, as: UnsafeMutableRawPointer?.self)) }
        nonmutating set { base.storeBytes(of: newValue?.base, toByteOffset: 8, as: UnsafeMutableRawPointer?.self) }
    }

    /// Counters written by the owner only, read by `statistics()` on any thread.
    @inlinable var counters: Counters<BinEvent> { Counters(at: base + 16) }

    /// Pops a block from the current slab's free list, or nil when there is no current
    /// slab or it has no free block: the whole fast path of allocation.
    @inlinable
    func popCurrent() -> UnsafeMutableRawPointer? {
        guard let slab = current, let block = slab.freeList else { return nil }
        slab.freeList = Slab.next(after: block)
        slab.used &+= 1
        counters.addFromOwner(1, to: .allocations)
        return block
    }

    func pushPartial(_ slab: Slab) {
        slab.previous = nil
        slab.next = partialHead
        partialHead?.previous = slab
        partialHead = slab
    }

    func removePartial(_ slab: Slab) {
        if let previous = slab.previous {
            previous.next = slab.next
        } else {
            partialHead = slab.next
        }
        slab.next?.previous = slab.previous
        slab.next = nil
        slab.previous = nil
    }

    func popPartial() -> Slab? {
        guard let slab = partialHead else { return nil }
        removePartial(slab)
        return slab
    }
}

/// The counters of a bin.
@usableFromInline enum BinEvent: Int, CaseIterable { case allocations, frees, slabs }
/// Large-block counters of an allocator.
@usableFromInline enum LargeEvent: Int, CaseIterable { case allocations, frees, liveBytes }

// MARK: - Slabs

/// A slab: a 256 KiB region whose first page is this header and whose other pages hold
/// blocks of one class. Fields other than `magic` and `owner` are the owner heap's alone.
///
/// ```
/// 0 magic (slabMagic ^ address)   8 owner heap   16 class   24 block size   32 block count
/// 40 free list   48 used   56 bump cursor   64 bump end   72 previous   80 next
/// 88 state   96 all-slabs next   104 all-slabs previous
/// ```
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

    @usableFromInline
    enum State: Int { case current = 0, partial = 1, full = 2, reserved = 3 }

    var magicWord: Int {
        get { base.load(as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, as: Int.self) }
    }

    /// The owning heap's address; written when the slab is formatted, read by freeing
    /// threads (an atomic word, since they may be other threads).
    @inlinable
    var owner: UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(bitPattern: AtomicWord(at: base + 8).load(ordering: .relaxed))!
    }

    @inlinable
    var classIndex: Int { base.load(fromByteOffset: 16, as: Int.self) }
    @inlinable
    var blockSize: Int { base.load(fromByteOffset: 24, as: Int.self) }
    var blockCount: Int { base.load(fromByteOffset: 32, as: Int.self) }

    @inlinable
    var freeList: UnsafeMutableRawPointer? {
        get { base.load(fromByteOffset: 40, as: UnsafeMutableRawPointer?.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 40, as: UnsafeMutableRawPointer?.self) }
    }

    /// Blocks handed out and not freed back to this slab (remote frees count once collected).
    @inlinable
    var used: Int {
        get { base.load(fromByteOffset: 48, as: Int.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 48, as: Int.self) }
    }

    var bumpCursor: UnsafeMutableRawPointer {
        get { base.load(fromByteOffset: 56, as: UnsafeMutableRawPointer.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 56, as: UnsafeMutableRawPointer.self) }
    }

    var bumpEnd: UnsafeMutableRawPointer { base.load(fromByteOffset: 64, as: UnsafeMutableRawPointer.self) }

    var previous: Slab? {
        get { link(at: 72) }
        nonmutating set { setLink(newValue, at: 72) }
    }

    var next: Slab? {
        get { link(at: 80) }
        nonmutating set { setLink(newValue, at: 80) }
    }

    @inlinable
    var state: State {
        get { State(rawValue: base.load(fromByteOffset: 88, as: Int.self)).unsafelyUnwrapped }
        nonmutating set { base.storeBytes(of: newValue.rawValue, toByteOffset: 88, as: Int.self) }
    }

    var allNext: Slab? {
        get { link(at: 96) }
        nonmutating set { setLink(newValue, at: 96) }
    }

    var allPrevious: Slab? {
        get { link(at: 104) }
        nonmutating set { setLink(newValue, at: 104) }
    }

    /// A header word holding another slab's address (a list link).
    func link(at offset: Int) -> Slab? {
        Slab(optional: base.load(fromByteOffset: offset, as: UnsafeMutableRawPointer?.self))
    }

    func setLink(_ slab: Slab?, at offset: Int) {
        base.storeBytes(of: slab?.base, toByteOffset: offset, as: UnsafeMutableRawPointer?.self)
    }

    /// The link of a free block: its first word.
    @inlinable
    static func next(after block: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
        block.load(as: UnsafeMutableRawPointer?.self)
    }

    /// Makes the slab an empty current slab of `classIndex` owned by `owner`.
    func format(classIndex: Int, owner: Heap) {
        let blockSize = Layout.sizeClasses.size(ofClass: classIndex)
        let blockCount = (Layout.slabSize - Layout.headerSize) / blockSize
        magicWord = Slab.magic ^ Int(bitPattern: base)
        AtomicWord(at: base + 8).store(Int(bitPattern: owner.base), ordering: .releasing)
        base.storeBytes(of: classIndex, toByteOffset: 16, as: Int.self)
        base.storeBytes(of: blockSize, toByteOffset: 24, as: Int.self)
        base.storeBytes(of: blockCount, toByteOffset: 32, as: Int.self)
        freeList = nil
        used = 0
        bumpCursor = base + Layout.headerSize
        base.storeBytes(
            of: base + Layout.headerSize + blockCount * blockSize, toByteOffset: 64, as: UnsafeMutableRawPointer.self)
        previous = nil
        next = nil
        state = .current
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
        for index in 0..<(count - 1) {
            (cursor + index * size).storeBytes(of: cursor + (index + 1) * size, as: UnsafeMutableRawPointer.self)
        }
        (cursor + (count - 1) * size).storeBytes(of: freeList, as: UnsafeMutableRawPointer?.self)
        freeList = cursor
        bumpCursor = cursor + count * size
    }

    /// In debug builds, traps unless `block` is a block boundary of a live slab.
    @inlinable
    func assertOwns(_ block: UnsafeMutableRawPointer) {
        assert(ownsBlock(block), "BinnedAlloc: \(block) was not allocated by BinnedAlloc, or its slab was freed")
    }

    @usableFromInline
    func ownsBlock(_ block: UnsafeMutableRawPointer) -> Bool {
        guard SystemMemory.isMapped(base), magicWord == Slab.magic ^ Int(bitPattern: base) else { return false }
        let offset = block - (base + Layout.headerSize)
        return offset >= 0 && offset < blockCount * blockSize && offset % blockSize == 0
    }
}

// MARK: - Large spans

/// A large block: a mapping whose user part starts on a slab boundary, with this header
/// in the page before it.
///
/// ```
/// header page: 0 magic (largeMagic ^ address)   8 usable size   16 alignment
///              24 owner heap (a locked allocator's, else 0)   32 previous   40 next
///              48 zeroed (1 while the user part is as the kernel mapped it)
/// user part:   slab-aligned (and aligned to the request), usable size bytes
/// ```
/// The mapping is the header page and the user part, up to the end of the user part's last
/// 256 KiB region (see `mappingSize(usable:)`). A span of a
/// `LockedBinnedAllocator` is linked into its heap's list (under its lock), so that the
/// allocator's deinit unmaps what is still allocated, whichever path frees it before.
///
/// Spans of the shared allocator up to ``spanCacheMaximumSize`` are sized in classes (four
/// per doubling) and, when freed, wait in the global span cache for the next request of
/// their class: a freed 100 KiB block is reused warm, without mmap, munmap and page faults.
struct LargeSpan {
    let header: UnsafeMutableRawPointer

    /// "BINNEDLG", mixed with the header's address.
    static let magic = 0x4249_4E4E_4544_4C47

    init(user: UnsafeMutableRawPointer) { header = user - Layout.headerSize }

    var user: UnsafeMutableRawPointer { header + Layout.headerSize }
    var usableSize: Int { header.load(fromByteOffset: 8, as: Int.self) }
    var alignment: Int { header.load(fromByteOffset: 16, as: Int.self) }
    var mappingSize: Int { LargeSpan.mappingSize(usable: usableSize) }

    /// The mapping of a span with `usable` bytes: the header page and the user part up to
    /// the end of its last 256 KiB region. Untouched, the tail costs address space only,
    /// and it keeps every region the span's user part touches wholly the span's, which
    /// the region map relies on (no other mapping, glibc's included, can land in it).
    static func mappingSize(usable: Int) -> Int { Layout.headerSize + alignUp(usable, to: Layout.slabSize)! }

    var owner: Heap? { base(at: 24).map(Heap.init) }
    /// Whether the user part still reads as zero (fresh from the kernel, not from the cache).
    var isZeroed: Bool { header.load(fromByteOffset: 48, as: Int.self) == 1 }
    var previous: LargeSpan? { base(at: 32).map { LargeSpan(user: $0 + Layout.headerSize) } }
    var next: LargeSpan? { base(at: 40).map { LargeSpan(user: $0 + Layout.headerSize) } }

    func base(at offset: Int) -> UnsafeMutableRawPointer? {
        header.load(fromByteOffset: offset, as: UnsafeMutableRawPointer?.self)
    }

    func setBase(_ value: UnsafeMutableRawPointer?, at offset: Int) {
        header.storeBytes(of: value, toByteOffset: offset, as: UnsafeMutableRawPointer?.self)
    }

    func write(usableSize: Int, alignment: Int, owner: Heap?, zeroed: Bool) {
        header.storeBytes(of: LargeSpan.magic ^ Int(bitPattern: header), as: Int.self)
        header.storeBytes(of: usableSize, toByteOffset: 8, as: Int.self)
        header.storeBytes(of: alignment, toByteOffset: 16, as: Int.self)
        setBase(owner?.base, at: 24)
        setBase(nil, at: 32)
        setBase(nil, at: 40)
        header.storeBytes(of: zeroed ? 1 : 0, toByteOffset: 48, as: Int.self)
        if let owner { owner.withLargeSpans { link(into: owner) } }
    }

    /// A new size after an in-place resize or a move.
    func resized(usableSize: Int) {
        header.storeBytes(of: usableSize, toByteOffset: 8, as: Int.self)
        header.storeBytes(of: 0, toByteOffset: 48, as: Int.self)
    }

    /// After `mremap` moved the span, its magic and its neighbours' links name the new
    /// place (the owner's list lock held, as during the whole move).
    func relinkAfterMove() {
        header.storeBytes(of: LargeSpan.magic ^ Int(bitPattern: header), as: Int.self)
        guard let owner else { return }
        if let previous { previous.setBase(header, at: 40) } else { owner.largeSpansHead = header }
        next?.setBase(header, at: 32)
    }

    /// Links the span at the head of its owner's list (the owner's lock held).
    func link(into owner: Heap) {
        let head = owner.largeSpansHead
        setBase(head, at: 40)
        if let head { LargeSpan(user: head + Layout.headerSize).setBase(header, at: 32) }
        owner.largeSpansHead = header
    }

    /// Takes the span out of its owner's list (the owner's lock held).
    func unlink(from owner: Heap) {
        if let previous { previous.setBase(base(at: 40), at: 40) } else { owner.largeSpansHead = base(at: 40) }
        next?.setBase(base(at: 32), at: 32)
    }

    func assertValid() {
        assert(
            SystemMemory.isMapped(header) && header.load(as: Int.self) == LargeSpan.magic ^ Int(bitPattern: header),
            "BinnedAlloc: \(user) was not allocated by BinnedAlloc, or was already freed")
    }

    /// Where the user part of a span goes: slab-aligned (so frees recognise it), and
    /// aligned as asked.
    static func userAlignment(_ alignment: Int) -> Int { max(alignment, Layout.slabSize) }

    /// The largest span the cache keeps. Past 4 MiB the mapping's system calls and page
    /// faults are small next to what a program does with that much memory, and keeping it
    /// would cost too much resident memory.
    static let spanCacheMaximumSize = 4 << 20

    /// The usable size of a cacheable span for `byteCount`: its class, four per doubling
    /// (at most 25% more, which stays untouched address space until written). nil above
    /// ``spanCacheMaximumSize``.
    static func cacheClassSize(for byteCount: Int) -> Int? {
        guard byteCount > Layout.smallSizeLimit, byteCount <= spanCacheMaximumSize else { return nil }
        // (2^k, 2^(k+1)] in steps of 2^(k-2): 40, 48, 56, 64 KiB, 80, 96... always whole pages.
        let step = 1 << (log2Floor(byteCount - 1) - 2)
        return (byteCount + step - 1) & ~(step - 1)
    }

    /// A block of the shared allocator: a warm span of its class from the cache, else a new
    /// mapping (of the class size when it may be cached later).
    static func allocateShared(byteCount: Int, alignment: Int) -> UnsafeMutableRawPointer? {
        guard alignment <= Layout.slabSize, let classSize = cacheClassSize(for: byteCount) else {
            return allocate(byteCount: byteCount, alignment: alignment)
        }
        if let global = GlobalState.get(), let header = global.takeCachedSpan(usableSize: classSize) {
            let span = LargeSpan(user: header + Layout.headerSize)
            let usable = header.load(fromByteOffset: 8, as: Int.self)
            span.write(usableSize: usable, alignment: alignment, owner: nil, zeroed: false)
            global.largeCounters.add(1, to: .allocations)
            global.largeCounters.add(usable, to: .liveBytes)
            return span.user
        }
        return allocate(byteCount: classSize, alignment: alignment)
    }

    /// Maps `byteCount` (rounded up to pages) with a header page before it. The mapping
    /// is over-sized by the user alignment and trimmed on both sides.
    static func allocate(byteCount: Int, alignment: Int, owner: Heap? = nil) -> UnsafeMutableRawPointer? {
        let page = SystemInfo.pageSize
        let userAlignment = userAlignment(alignment)
        // The global state (and with it the region map) exists before any block is mapped.
        guard byteCount <= Layout.maximumByteCount, let usable = alignUp(byteCount, to: page),
            let global = GlobalState.get()
        else { return nil }
        let padded = mappingSize(usable: usable) + userAlignment
        let savedErrno = errno
        defer { errno = savedErrno }
        guard let raw = try? SystemMemory.map(byteCount: padded) else { return nil }
        let user = alignUp(raw + Layout.headerSize, to: userAlignment)!
        let start = user - Layout.headerSize
        let end = start + mappingSize(usable: usable)
        guard RegionMap.covers(user, byteCount: usable) else {
            try? SystemMemory.unmap(raw, byteCount: padded)
            return nil
        }
        if start > raw { try? SystemMemory.unmap(raw, byteCount: start - raw) }
        if raw + padded > end { try? SystemMemory.unmap(end, byteCount: raw + padded - end) }
        let span = LargeSpan(user: user)
        span.write(usableSize: usable, alignment: alignment, owner: owner, zeroed: true)
        RegionMap.mark(user, byteCount: usable)
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
        span.assertValid()
        let savedErrno = errno
        defer { errno = savedErrno }
        let size = span.mappingSize
        let counters = span.counters
        if let owner = span.owner { owner.withLargeSpans { span.unlink(from: owner) } }
        counters?.add(1, to: .frees)
        counters?.add(-span.usableSize, to: .liveBytes)
        if cacheable, span.owner == nil, span.alignment <= Layout.slabSize,
            cacheClassSize(for: span.usableSize) == span.usableSize, let global = GlobalState.get(),
            global.cacheSpan(span.header, usableSize: span.usableSize)
        {
            return
        }
        if let global = GlobalState.get() {
            global.counters.add(-size, to: .bytesMapped)
            global.counters.add(size, to: .bytesReturned)
        }
        RegionMap.unmark(span.user, byteCount: span.usableSize)
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
        // A span in a locked allocator's list is resized under the list's lock, so that no
        // neighbour is unlinked through its header while the header moves.
        guard let owner = span.owner else {
            return resizeUnlocked(span, byteCount: byteCount, counters: span.counters, classSized: classSized)
        }
        return owner.withLargeSpans {
            resizeUnlocked(span, byteCount: byteCount, counters: owner.largeCounters, classSized: false)
        }
    }

    static func resizeUnlocked(
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
        // Within the same regions the mapping stays as it is.
        if newSize == oldSize {
            span.resized(usableSize: usable)
            counters?.add(usable - oldUsable, to: .liveBytes)
            return pointer
        }
        // Shrinking always succeeds in place; growing in place needs free address space
        // after the span. Regions leave the map before their address space is given up,
        // and join it after it is taken: in between, another thread may map the same
        // addresses and mark them.
        let dropped = oldSize - newSize
        if dropped > 0 { RegionMap.unmark(span.header + newSize, byteCount: dropped) }
        if (try? SystemMemory.resize(span.header, from: oldSize, to: newSize, move: .never)) != nil {
            span.resized(usableSize: usable)
            if dropped < 0 { RegionMap.mark(span.header + oldSize, byteCount: -dropped) }
            global?.counters.add(newSize - oldSize, to: .bytesMapped)
            if newSize < oldSize { global?.counters.add(oldSize - newSize, to: .bytesReturned) }
            counters?.add(usable - oldUsable, to: .liveBytes)
            return pointer
        }
        if dropped > 0 { RegionMap.mark(span.header + newSize, byteCount: dropped) }
        // Move: reserve an aligned place, then remap the header and user pages onto it.
        let userAlignment = userAlignment(alignment)
        let padded = newSize + userAlignment
        guard let raw = try? SystemMemory.reserve(byteCount: padded) else { return nil }
        let user = alignUp(raw + Layout.headerSize, to: userAlignment)!
        let target = user - Layout.headerSize
        RegionMap.unmark(pointer, byteCount: oldSize - Layout.headerSize)
        guard (try? SystemMemory.resize(span.header, from: oldSize, to: newSize, move: .to(target))) != nil else {
            RegionMap.mark(pointer, byteCount: oldSize - Layout.headerSize)
            try? SystemMemory.unmap(raw, byteCount: padded)
            return nil
        }
        // The rest of the reservation, before and after the moved span, goes away.
        if target > raw { try? SystemMemory.unmap(raw, byteCount: target - raw) }
        if raw + padded > target + newSize {
            try? SystemMemory.unmap(target + newSize, byteCount: raw + padded - (target + newSize))
        }
        // The header moved with the pages: only its size and the owner's links change.
        let moved = LargeSpan(user: user)
        moved.resized(usableSize: usable)
        RegionMap.mark(user, byteCount: newSize - Layout.headerSize)
        moved.relinkAfterMove()
        global?.counters.add(newSize - oldSize, to: .bytesMapped)
        counters?.add(usable - oldUsable, to: .liveBytes)
        return user
    }
}

// MARK: - Region map

/// Which 256 KiB regions of the address space hold BinnedAlloc's blocks: one bit per
/// region, set while a slab or a large block's user part covers it. The standard malloc
/// names (BinnedMalloc) ask it before freeing, so that a pointer BinnedAlloc did not hand
/// out (glibc's, from before the library was interposed or from `__libc_malloc`) goes to
/// glibc's free instead of being read as a slab.
///
/// A marked region is wholly one mapping's: slabs are exactly one region, and a large
/// block's user part starts on a region boundary and its mapping runs to the end of its
/// last region (`LargeSpan.mappingSize(usable:)`), so no other mapping, glibc's included,
/// can land in it.
/// So bits are set and cleared without counting.
///
/// The map covers a 48-bit user address space (x86_64 Linux uses 47 bits, arm64 Linux 48):
/// 2^30 bits in 128 MiB of address space reserved without commit charge; only the pages
/// whose bits were ever set become resident (one page per 8 GiB of address space used).
/// A kernel that maps higher (5-level paging, asked for by hint only) would put blocks
/// beyond it: they are refused at mapping time (nil, ENOMEM).
enum RegionMap {
    static let regionShift = 18
    static let addressBits = 48
    static let byteCount = 1 << (addressBits - regionShift - 3)

    /// The map's address once it exists (0 before).
    static let address = Atomic<Int>(0)

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

    /// Whether `pointer` lies in a region that holds BinnedAlloc's blocks.
    static func contains(_ pointer: UnsafeRawPointer) -> Bool {
        let map = address.load(ordering: .relaxed)
        let region = Int(bitPattern: UInt(bitPattern: pointer) &>> UInt(regionShift))
        guard map != 0, region >= 0, region < 1 &<< (addressBits - regionShift) else { return false }
        let word = AtomicWord(at: UnsafeMutableRawPointer(bitPattern: map)! + (region &>> 6) &* 8)
        return word.load(ordering: .relaxed) & (1 &<< (region & 63)) != 0
    }

    /// Whether the map has bits for every region of [start, start + byteCount).
    static func covers(_ start: UnsafeMutableRawPointer, byteCount: Int) -> Bool {
        (Int(bitPattern: start) + byteCount - 1) >> regionShift < 1 << (addressBits - regionShift)
    }

    static func mark(_ start: UnsafeMutableRawPointer, byteCount: Int) { update(start, byteCount, set: true) }
    static func unmark(_ start: UnsafeMutableRawPointer, byteCount: Int) { update(start, byteCount, set: false) }

    /// Sets or clears the bits of every region that [start, start + byteCount) overlaps.
    static func update(_ start: UnsafeMutableRawPointer, _ byteCount: Int, set: Bool) {
        let map = address.load(ordering: .acquiring)
        assert(map != 0, "BinnedAlloc: the region map does not exist yet")
        guard map != 0, byteCount > 0 else { return }
        let first = Int(bitPattern: start) >> regionShift
        let last = (Int(bitPattern: start) + byteCount - 1) >> regionShift
        assert(last < 1 << (addressBits - regionShift), "BinnedAlloc: \(start) is beyond the region map")
        for region in first...min(last, (1 << (addressBits - regionShift)) - 1) {
            let word = AtomicWord(at: UnsafeMutableRawPointer(bitPattern: map)! + (region >> 6) * 8)
            let bit = 1 << (region & 63)
            if set {
                word.bitwiseOr(bit, ordering: .relaxed)
            } else {
                word.bitwiseAnd(~bit, ordering: .relaxed)
            }
        }
    }
}

// MARK: - Global state

/// Process-wide counters.
enum GlobalEvent: Int, CaseIterable {
    case bytesMapped, bytesReturned, heaps, parkedHeaps, pooledSlabs, cachedSpans, cachedSpanBytes
}

/// The state every heap shares, in one page mapped on first use (no initializer has to
/// run first, which a process allocator needs): the pool of empty slabs, the stack of
/// parked heaps, the registry of every thread heap, counters, and the fallback heap for
/// exiting threads.
///
/// ```
/// 0 parked heaps (AtomicStack)   16 registry head   24 pool head   32 pool lock
/// 40 fallback lock   48 fallback heap   64 counters (GlobalEvent)   128 large counters
/// 256 span cache lock   512 span cache: `spanCacheSlots` (128) span headers
/// ```
struct GlobalState {
    let base: UnsafeMutableRawPointer

    /// Slabs mapped at once: 16 slabs (4 MiB) per mmap keeps system calls rare; the spare
    /// slabs wait in the pool, untouched, so they cost address space, not memory.
    static let slabsPerChunk = 16
    /// Empty slabs the pool keeps (decommitted: one resident page each) before unmapping
    /// further ones: 64 slabs are 16 MiB of address space ready for the next burst.
    static let pooledSlabLimit = 64

    /// Freed spans the cache holds at most, and their bytes at most: enough for a burst of
    /// medium blocks (a program's buffers of 64 KiB to a few MiB) to be reused warm, little
    /// next to the RSS of a program that allocates them.
    static let spanCacheSlots = 128
    static let spanCacheByteLimit = 64 << 20

    var parkedHeaps: AtomicStack { AtomicStack(at: base) }
    var counters: Counters<GlobalEvent> { Counters(at: base + 64) }
    var largeCounters: Counters<LargeEvent> { Counters(at: base + 128) }
    /// The pool is a plain list under a lock, not a lock-free stack: pooled slabs may be
    /// unmapped later, which a lock-free pop could still be reading.
    var poolLock: UnsafeMutablePointer<SpinLock> { (base + 32).assumingMemoryBound(to: SpinLock.self) }
    var fallbackLock: UnsafeMutablePointer<SpinLock> { (base + 40).assumingMemoryBound(to: SpinLock.self) }
    var fallbackHeap: Heap { Heap(base.load(fromByteOffset: 48, as: UnsafeMutableRawPointer.self)) }
    var spanCacheLock: UnsafeMutablePointer<SpinLock> { (base + 256).assumingMemoryBound(to: SpinLock.self) }
    var spanCache: UnsafeMutablePointer<UnsafeMutableRawPointer> {
        (base + 512).assumingMemoryBound(to: UnsafeMutableRawPointer.self)
    }

    /// Keeps a freed span (its header) for reuse unless the cache is full; returns whether
    /// it did. A cached span has no valid magic, so a late free of it traps in debug builds.
    func cacheSpan(_ header: UnsafeMutableRawPointer, usableSize: Int) -> Bool {
        spanCacheLock.pointee.withLock {
            // One load keeps a double free from caching a span twice (two later blocks
            // would share it): the first free cleared the magic.
            precondition(
                header.load(as: Int.self) == LargeSpan.magic ^ Int(bitPattern: header),
                "BinnedAlloc: double free of the large block \(header + Layout.headerSize)")
            let count = counters.value(of: .cachedSpans)
            guard count < GlobalState.spanCacheSlots,
                counters.value(of: .cachedSpanBytes) + usableSize <= GlobalState.spanCacheByteLimit
            else { return false }
            header.storeBytes(of: 0, as: Int.self)
            spanCache[count] = header
            counters.add(1, to: .cachedSpans)
            counters.add(usableSize, to: .cachedSpanBytes)
            return true
        }
    }

    /// The cached span (its header) that fits `usableSize` most closely, if one holds at
    /// most half as much again (two classes up): a program's sizes vary, and an exact match
    /// alone would miss most of the time. nil when none fits.
    func takeCachedSpan(usableSize: Int) -> UnsafeMutableRawPointer? {
        spanCacheLock.pointee.withLock {
            let count = counters.value(of: .cachedSpans)
            var best: (index: Int, size: Int)? = nil
            for index in 0..<count {
                let size = spanCache[index].load(fromByteOffset: 8, as: Int.self)
                guard size >= usableSize, size <= usableSize + usableSize / 2, size < best?.size ?? .max else {
                    continue
                }
                best = (index, size)
                if size == usableSize { break }
            }
            guard let best else { return nil }
            let header = spanCache[best.index]
            spanCache[best.index] = spanCache[count - 1]
            counters.add(-1, to: .cachedSpans)
            counters.add(-best.size, to: .cachedSpanBytes)
            return header
        }
    }

    /// Unmaps every cached span.
    func emptySpanCache() {
        while let header = spanCacheLock.pointee.withLock({ () -> UnsafeMutableRawPointer? in
            let count = counters.value(of: .cachedSpans)
            guard count > 0 else { return nil }
            let header = spanCache[count - 1]
            counters.add(-1, to: .cachedSpans)
            counters.add(-header.load(fromByteOffset: 8, as: Int.self), to: .cachedSpanBytes)
            return header
        }) {
            let size = LargeSpan.mappingSize(usable: header.load(fromByteOffset: 8, as: Int.self))
            RegionMap.unmark(header + Layout.headerSize, byteCount: size - Layout.headerSize)
            try? SystemMemory.unmap(header, byteCount: size)
            counters.add(-size, to: .bytesMapped)
            counters.add(size, to: .bytesReturned)
        }
    }

    var registryHead: UnsafeMutableRawPointer? {
        UnsafeMutableRawPointer(bitPattern: AtomicWord(at: base + 16).load(ordering: .acquiring))
    }

    /// Adds a heap to the registry (a list that only grows: heaps are reused, never freed).
    func register(_ heap: Heap) {
        let head = AtomicWord(at: base + 16)
        var current = head.load(ordering: .relaxed)
        while true {
            heap.registryNext = UnsafeMutableRawPointer(bitPattern: current)
            let (exchanged, original) = head.compareExchange(
                expected: current, desired: Int(bitPattern: heap.base), ordering: .releasing)
            if exchanged { return }
            current = original
        }
    }

    /// Pops a pooled slab (under the pool lock).
    func popPooled() -> Slab? {
        poolLock.pointee.withLock {
            guard let first = base.load(fromByteOffset: 24, as: UnsafeMutableRawPointer?.self) else { return nil }
            base.storeBytes(of: Slab(first).next?.base, toByteOffset: 24, as: UnsafeMutableRawPointer?.self)
            counters.add(-1, to: .pooledSlabs)
            return Slab(first)
        }
    }

    /// Pools a slab unless the pool is full; returns whether it did.
    func pool(_ slab: Slab, decommit: Bool) -> Bool {
        poolLock.pointee.withLock {
            guard counters.value(of: .pooledSlabs) < GlobalState.pooledSlabLimit else { return false }
            if decommit {
                try? PageSource().decommit(
                    slab.base + Layout.headerSize, byteCount: Layout.slabSize - Layout.headerSize)
                counters.add(Layout.slabSize - Layout.headerSize, to: .bytesReturned)
            }
            // A pooled slab has no valid magic, so a late free into it traps in debug builds.
            slab.magicWord = 0
            slab.next = Slab(optional: base.load(fromByteOffset: 24, as: UnsafeMutableRawPointer?.self))
            base.storeBytes(of: slab.base, toByteOffset: 24, as: UnsafeMutableRawPointer.self)
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
        guard RegionMap.covers(chunk, byteCount: chunkSize) else {
            try? PageSource().release(chunk, byteCount: chunkSize)
            return nil
        }
        counters.add(chunkSize, to: .bytesMapped)
        RegionMap.mark(chunk, byteCount: chunkSize)
        for index in 1..<GlobalState.slabsPerChunk {
            let spare = Slab(chunk + index * Layout.slabSize)
            if !pool(spare, decommit: false) { returnSlab(spare) }
        }
        return Slab(chunk)
    }

    /// An empty slab goes back to the OS: its block pages are decommitted and it joins the
    /// pool, or it is unmapped when the pool is full. errno is left as it was.
    func returnSlab(_ slab: Slab) {
        let savedErrno = errno
        defer { errno = savedErrno }
        if !pool(slab, decommit: true) {
            RegionMap.unmark(slab.base, byteCount: Layout.slabSize)
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
        guard RegionMap.create(), let page = try? PageSource().allocate(byteCount: 4096) else { return nil }
        guard let fallback = Heap.create(kind: .locked, global: nil) else {
            try? PageSource().release(page, byteCount: 4096)
            return nil
        }
        // Everything is in place before the page is published.
        _ = AtomicStack(initializingAt: page)
        _ = AtomicWord(initializingAt: page + 16, to: 0)
        (page + 32).bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        (page + 40).bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        (page + 256).bindMemory(to: SpinLock.self, capacity: 1).initialize(to: SpinLock())
        page.storeBytes(of: fallback.base, toByteOffset: 48, as: UnsafeMutableRawPointer.self)
        ThreadLocalSlot.binnedAlloc.setThreadExitHook(SharedHeap.threadExitHook)
        let (exchanged, winner) = address.compareExchange(
            expected: 0, desired: Int(bitPattern: page), ordering: .acquiringAndReleasing)
        guard exchanged else {
            Heap.unmapHeader(fallback)
            try? PageSource().release(page, byteCount: 4096)
            return GlobalState(base: UnsafeMutableRawPointer(bitPattern: winner)!)
        }
        // Only now: registering may allocate, and that allocation must find the state.
        pthread_atfork(GlobalState.forkPrepare, GlobalState.forkParent, GlobalState.forkChild)
        return GlobalState(base: page)
    }

    // MARK: fork

    // A fork while another thread holds the pool, fallback or span cache lock would leave
    // it held forever in the child, whose first refill would then spin. So the forking
    // thread takes the three locks before fork and releases them on both sides. Everything else
    // shared is lock-free (the parked stack, the registry, remote lists). Other threads'
    // heaps are orphaned in the child, which has only the forking thread: their memory
    // stays mapped and unused there, as glibc's arenas of vanished threads do.

    static let forkPrepare: @convention(c) () -> Void = {
        guard let global = GlobalState.get() else { return }
        // The order every other path takes them in: a fallback-heap refill or trim takes
        // the pool lock under the fallback lock; the span-cache lock is taken alone.
        global.fallbackLock.pointee.lock()
        global.poolLock.pointee.lock()
        global.spanCacheLock.pointee.lock()
    }

    static let forkParent: @convention(c) () -> Void = {
        guard let global = GlobalState.get() else { return }
        global.spanCacheLock.pointee.unlock()
        global.poolLock.pointee.unlock()
        global.fallbackLock.pointee.unlock()
    }

    static let forkChild: @convention(c) () -> Void = {
        guard let global = GlobalState.get() else { return }
        global.spanCacheLock.pointee.unlock()
        global.poolLock.pointee.unlock()
        global.fallbackLock.pointee.unlock()
    }
}
