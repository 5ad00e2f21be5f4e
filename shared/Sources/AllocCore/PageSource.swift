// The page source that allocators share: page-aligned (or more strictly aligned) spans
// from the kernel, given back by unmapping or by advising the pages away.

import Glibc

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
    /// for what you will get) whose address is a multiple of `alignment`.
    ///
    /// An alignment above the page size is met by mapping `byteCount + alignment - page`
    /// and unmapping the unaligned head and the tail, so the span wastes no address space.
    ///
    /// - Parameter alignment: a power of two; page-size alignment or less costs nothing.
    /// - Throws: `SystemError` with `ENOMEM` when the size cannot be represented or the
    ///   kernel refuses.
    public func allocate(
        byteCount: Int, alignment: Int = SystemInfo.pageSize
    ) throws(SystemError) -> UnsafeMutableRawPointer {
        precondition(isPowerOfTwo(alignment), "PageSource alignment \(alignment) is not a power of two")
        guard byteCount > 0, let size = roundedByteCount(byteCount) else { throw SystemError(.map, code: ENOMEM) }
        let span: UnsafeMutableRawPointer
        if alignment <= SystemInfo.pageSize {
            span = try SystemMemory.map(byteCount: size)
        } else {
            // A mapping of size + alignment - page always holds an aligned span of size,
            // since mmap's result is page-aligned.
            let slack = alignment - SystemInfo.pageSize
            guard size <= Int.max - slack else { throw SystemError(.map, code: ENOMEM) }
            let padded = size + slack
            let raw = try SystemMemory.map(byteCount: padded)
            let aligned = alignUp(raw, to: alignment)!
            let head = aligned - raw
            let tail = padded - head - size
            // Trimming cannot fail for page-aligned ranges inside our own mapping; were it
            // to, only address space would be lost, and the span is still good.
            if head > 0 { try? SystemMemory.unmap(raw, byteCount: head) }
            if tail > 0 { try? SystemMemory.unmap(aligned + size, byteCount: tail) }
            span = aligned
        }
        if hugePageAdvice && size >= SystemInfo.hugePageSize {
            // Advice is a hint: a kernel without THP refuses it, and the span is still good.
            try? SystemMemory.advise(span, byteCount: size, .hugePage)
        }
        return span
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
