// The page source that allocators share: page-aligned (or more strictly aligned) spans
// from the kernel, given back by unmapping or by advising the pages away.

import Glibc
import Synchronization

/// Spans of whole pages from the kernel, with an optional alignment above the page size
/// and optional transparent-huge-page advice.
///
/// A span is zero-filled when new. The source keeps no state of its own: every call is a
/// system call (counted in ``SystemMemory/statistics``), so allocators put their own
/// caches in front of it.
///
/// ```swift
/// let source = PageSource(hugePageAdvice: false)
/// let span = try source.allocate(byteCount: 1 << 20, alignment: 1 << 20)
/// try source.decommit(span, byteCount: 1 << 20)   // RSS drops, the range stays mapped
/// try source.release(span, byteCount: 1 << 20)    // the range is gone
/// ```
public struct PageSource: Sendable, Equatable {
    /// Whether spans of at least a huge page get `MADV_HUGEPAGE`.
    public let hugePageAdvice: Bool

    public init(hugePageAdvice: Bool = false) {
        self.hugePageAdvice = hugePageAdvice
    }

    /// A span of `byteCount` bytes (rounded up to whole pages: use ``roundedByteCount(_:)``
    /// for what you will get) whose address plus `offset` is a multiple of `alignment`: a
    /// block whose header page comes before an aligned part passes the header's size.
    ///
    /// An alignment above the page size costs three calls where the kernel chooses the
    /// place: map `byteCount + alignment - page`, then unmap the unaligned head and the tail,
    /// so the span wastes no address space. So the source first asks for one aligned place
    /// (``SystemMemory/map(byteCount:exactlyAt:)``): below the last aligned span it mapped,
    /// with at least a page left unmapped between them (a write past a span's end faults),
    /// where the kernel's top-down placement puts a new mapping anyway, each thread's
    /// guess claimed before its call so that two threads do not guess one place. The guesses
    /// walk down from the kernel's last choice by at most ``alignedGuessWindow``; past that,
    /// or when a guess fails (something is mapped there), the kernel chooses again (the
    /// highest free gap), so address space left by unmapped spans is used again. Measured
    /// in `compare`'s burst-then-idle row, where BinnedMalloc maps each block above 32 KiB
    /// as an aligned span (two threads): 2,415 munmaps and 2,396 mmaps (530 of them failed
    /// guesses) where there were 5,442 and 1,866, and 28.3 µs a block instead of 41.5
    /// (medians of 5 runs).
    ///
    /// - Parameter alignment: a power of two; page-size alignment or less costs nothing.
    /// - Parameter offset: a page multiple below `alignment` (0 when it is a page or less).
    /// - Throws: `SystemError` with `ENOMEM` when the size cannot be represented or the
    ///   kernel refuses.
    public func allocate(
        byteCount: Int, alignment: Int = SystemInfo.pageSize, offset: Int = 0
    ) throws(SystemError) -> UnsafeMutableRawPointer {
        precondition(isPowerOfTwo(alignment), "PageSource alignment \(alignment) is not a power of two")
        precondition(
            offset >= 0 && offset % SystemInfo.pageSize == 0 && (offset == 0 || offset < alignment),
            "PageSource offset \(offset) is not a page multiple below the alignment \(alignment)")
        guard byteCount > 0, let size = roundedByteCount(byteCount) else { throw SystemError(.map, code: ENOMEM) }
        let span: UnsafeMutableRawPointer
        if alignment <= SystemInfo.pageSize {
            span = try SystemMemory.map(byteCount: size)
        } else if let guessed = Self.mapAtGuess(byteCount: size, alignment: alignment, offset: offset) {
            span = guessed
        } else {
            // A mapping of size + alignment - page always holds such a span, since mmap's
            // result and the offset are page multiples.
            let slack = alignment - SystemInfo.pageSize
            guard size <= Int.max - slack else { throw SystemError(.map, code: ENOMEM) }
            let padded = size + slack
            let raw = try SystemMemory.map(byteCount: padded)
            let aligned = alignUp(raw + offset, to: alignment)! - offset
            let head = aligned - raw
            let tail = padded - head - size
            // Trimming cannot fail for page-aligned ranges inside our own mapping; were it
            // to, only address space would be lost, and the span is still good.
            if head > 0 { try? SystemMemory.unmap(raw, byteCount: head) }
            if tail > 0 { try? SystemMemory.unmap(aligned + size, byteCount: tail) }
            span = aligned
            AlignedGuess.anchor.store(Int(bitPattern: aligned), ordering: .relaxed)
            AlignedGuess.last.store(Int(bitPattern: aligned), ordering: .relaxed)
        }
        if hugePageAdvice && size >= SystemInfo.hugePageSize {
            // Advice is a hint: a kernel without THP refuses it, and the span is still good.
            try? SystemMemory.advise(span, byteCount: size, .hugePage)
        }
        return span
    }

    /// How far below the kernel's last choice aligned spans are guessed before the kernel
    /// chooses again: 1 GiB, so that a process that keeps mapping and unmapping spans does
    /// not walk down its address space for ever.
    public static let alignedGuessWindow = 1 << 30

    /// Where aligned spans were mapped, process-wide (see ``allocate(byteCount:alignment:offset:)``).
    enum AlignedGuess {
        /// The lowest address claimed for a guess, or the kernel's last choice (0 before the
        /// first aligned span).
        static let last = Atomic<Int>(0)
        /// The start of the last aligned span placed by the kernel.
        static let anchor = Atomic<Int>(0)
        /// Cleared for good when a guess fails for want of MAP_FIXED_NOREPLACE.
        static let enabled = Atomic<Bool>(true)
    }

    /// An aligned span mapped at the guess below the last one, or nil (then the kernel
    /// chooses).
    static func mapAtGuess(byteCount: Int, alignment: Int, offset: Int) -> UnsafeMutableRawPointer? {
        guard AlignedGuess.enabled.load(ordering: .relaxed) else { return nil }
        var last = AlignedGuess.last.load(ordering: .relaxed)
        let anchor = AlignedGuess.anchor.load(ordering: .relaxed)
        while last != 0 {
            // The highest aligned start whose span ends a page or more below `last`: the
            // page between stays unmapped, so a write past the span's end faults (as it
            // does past the trimmed tail of a span the kernel placed).
            let top = last - SystemInfo.pageSize - byteCount + offset
            guard top > alignment else { return nil }
            let guess = (top & ~(alignment - 1)) - offset
            guard anchor - guess <= alignedGuessWindow else { return nil }
            let claim = AlignedGuess.last.compareExchange(expected: last, desired: guess, ordering: .relaxed)
            guard claim.exchanged else {
                last = claim.original
                continue
            }
            let address = UnsafeMutableRawPointer(bitPattern: guess)!
            if let span = SystemMemory.map(byteCount: byteCount, exactlyAt: address) { return span }
            if errno == EOPNOTSUPP { AlignedGuess.enabled.store(false, ordering: .relaxed) }
            return nil
        }
        return nil
    }

    /// `byteCount` rounded up to whole pages, or nil if that overflows.
    @inlinable
    public func roundedByteCount(_ byteCount: Int) -> Int? {
        alignUp(byteCount, to: SystemInfo.pageSize)
    }

    /// Gives a span (or a page-aligned part of one) back to the kernel: unmapped.
    public func release(_ span: UnsafeMutableRawPointer, byteCount: Int) throws(SystemError) {
        assert(isAligned(span, to: SystemInfo.pageSize), "PageSource.release of \(span), which is not page-aligned")
        try SystemMemory.unmap(span, byteCount: roundedByteCount(byteCount)!)
    }

    /// Returns the pages of a span to the kernel but keeps the range mapped for reuse.
    ///
    /// - Parameter advice: `.dontNeed` (the default) frees the pages at once, RSS drops,
    ///   and they read as zero when touched again; `.free` lets the kernel take them
    ///   lazily, which is cheaper when they may soon be reused, but their contents are
    ///   then undefined and RSS falls only under memory pressure.
    public func decommit(
        _ span: UnsafeMutableRawPointer, byteCount: Int, advice: MemoryAdvice = .dontNeed
    ) throws(SystemError) {
        precondition(advice == .dontNeed || advice == .free, "decommit takes .dontNeed or .free, not \(advice)")
        assert(isAligned(span, to: SystemInfo.pageSize), "PageSource.decommit of \(span), which is not page-aligned")
        try SystemMemory.advise(span, byteCount: roundedByteCount(byteCount)!, advice)
    }
}
