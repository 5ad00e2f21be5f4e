// System calls with Swift-typed results. Every call that can fail throws a SystemError
// carrying the operation and errno; nothing here returns MAP_FAILED or -1 to the caller.

import CAllocCore
import Glibc

/// A failed system call: which operation, and the errno it set.
public struct SystemError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The operations AllocCore performs.
    public enum Operation: String, Sendable {
        case map = "mmap", unmap = "munmap", protect = "mprotect", advise = "madvise", remap = "mremap"
        case memoryFile = "memfd_create", temporaryFile = "mkstemp", truncate = "ftruncate"
        case fileAllocate = "fallocate", close = "close"
        case threadCreate = "pthread_create", threadLocal = "pthread_key"
        case spawn = "posix_spawn", pipe = "pipe", wait = "wait4", read = "read", write = "write"
    }

    public let operation: Operation
    /// The errno value.
    public let code: Int32

    public init(_ operation: Operation, code: Int32) {
        self.operation = operation
        self.code = code
    }

    public var description: String {
        // strerrorname_np returns a constant string: thread-safe, unlike strerror.
        let name = alloc_core_errno_name(code).map { String(cString: $0) } ?? "unknown error"
        return "\(operation.rawValue) failed: \(name) (errno \(code))"
    }
}

/// Facts about the machine and the process.
public enum SystemInfo {
    /// The size of a page in bytes (4096 on x86_64 Linux). Cheap: glibc reads a cached value.
    @inlinable
    public static var pageSize: Int { Int(getpagesize()) }

    /// The size of a transparent huge page on x86_64 (2 MiB), the alignment that lets the
    /// kernel back a span with huge pages.
    public static let hugePageSize = 2 << 20

    /// The number of CPUs this process may run on (its affinity mask), at least 1.
    public static var cpuCount: Int {
        let count = Int(alloc_core_affinity_cpu_count())
        return count > 0 ? count : max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// 64 random bits from the kernel (for a per-process secret), read without allocating.
    public static func randomWord() -> UInt64 { alloc_core_random_word() }

    /// Nanoseconds of the monotonic clock: for intervals, never for wall time.
    @inlinable
    public static func monotonicNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    /// The process's peak resident set size in bytes since it started or last exec'd
    /// (VmHWM in /proc/self/status), read without allocating; nil if unreadable.
    ///
    /// Not getrusage's ru_maxrss: Linux carries that across exec, so a program spawned by
    /// a big parent reports at least the parent's peak.
    public static var peakResidentBytes: Int? {
        procStatusKilobytes("VmHWM:").map { $0 * 1024 }
    }

    /// The process's current resident set size in bytes (VmRSS in /proc/self/status),
    /// read without allocating; nil if unreadable.
    public static var currentResidentBytes: Int? {
        procStatusKilobytes("VmRSS:").map { $0 * 1024 }
    }

    /// The number after `field` (a name with its colon) in /proc/self/status, in kB.
    static func procStatusKilobytes(_ field: StaticString) -> Int? {
        let descriptor = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 8192) { buffer -> Int? in
            var filled = 0
            while filled < buffer.count {
                let count = read(descriptor, buffer.baseAddress! + filled, buffer.count - filled)
                if count <= 0 { break }
                filled += count
            }
            let name = UnsafeBufferPointer(start: field.utf8Start, count: field.utf8CodeUnitCount)
            var lineStart = 0
            while lineStart + name.count <= filled {
                if (0..<name.count).allSatisfy({ buffer[lineStart + $0] == name[$0] }) {
                    var number = 0
                    var index = lineStart + name.count
                    while index < filled && buffer[index] != UInt8(ascii: "\n") {
                        let byte = buffer[index]
                        if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                            number = number * 10 + Int(byte - UInt8(ascii: "0"))
                        }
                        index += 1
                    }
                    return number
                }
                while lineStart < filled && buffer[lineStart] != UInt8(ascii: "\n") { lineStart += 1 }
                lineStart += 1
            }
            return nil
        }
    }
}

/// What `madvise` tells the kernel about a range.
public enum MemoryAdvice: Sendable, CaseIterable {
    /// Drop the pages now; anonymous private memory reads as zero afterwards. RSS falls at once.
    case dontNeed
    /// The kernel may take the pages lazily under memory pressure; until then a write
    /// cancels the advice. Contents are undefined afterwards. RSS falls only when reclaimed.
    case free
    /// Back the range with transparent huge pages where possible.
    case hugePage
    /// Never back the range with transparent huge pages.
    case noHugePage
    /// Read the pages ahead: they will be used soon.
    case willNeed
    /// Free the range and its backing store in a shared file mapping (punch a hole).
    case remove
    /// Fault every page in now, writable (Linux 5.14; EINVAL before): one call where
    /// touching the pages would take a fault each. For memory about to be written whole.
    case populateWrite

    @inlinable
    var value: Int32 {
        switch self {
        case .dontNeed: alloc_core_madv_dontneed
        case .free: alloc_core_madv_free
        case .hugePage: alloc_core_madv_hugepage
        case .noHugePage: alloc_core_madv_nohugepage
        case .willNeed: alloc_core_madv_willneed
        case .remove: alloc_core_madv_remove
        case .populateWrite: alloc_core_madv_populate_write
        }
    }
}

/// Address space and pages straight from the kernel. Sizes are rounded up to whole pages
/// by the kernel; pass page multiples to keep your own accounting exact. Each successful
/// call is counted in ``SystemMemory/statistics``.
public enum SystemMemory {
    /// Counters of every mapping call made through AllocCore, process-wide.
    public static let statistics = SystemMemoryStatistics()

    /// Maps `byteCount` bytes of zeroed, readable and writable anonymous private memory.
    public static func map(byteCount: Int) throws(SystemError) -> UnsafeMutableRawPointer {
        try mapAnonymous(byteCount: byteCount, protection: PROT_READ | PROT_WRITE, flags: 0)
    }

    /// Maps `byteCount` bytes like ``map(byteCount:)``, at `address` exactly or not at all
    /// (`MAP_FIXED_NOREPLACE`, Linux 4.17). nil with errno `EEXIST` when something is mapped
    /// there already, `EOPNOTSUPP` when the kernel does not know the flag (it took the address
    /// as a hint and mapped elsewhere; that mapping is undone), or the kernel's errno.
    public static func map(byteCount: Int, exactlyAt address: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
        guard byteCount > 0 else { return nil }
        let result = mmap(
            address, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0)
        guard let result, result != UnsafeMutableRawPointer(bitPattern: -1) else { return nil }
        guard result == address else {
            munmap(result, byteCount)
            errno = EOPNOTSUPP
            return nil
        }
        statistics.record(.mapCalls, .mappedBytes, byteCount)
        return result
    }

    /// Reserves `byteCount` bytes of address space with no access and no commit charge
    /// (PROT_NONE, MAP_NORESERVE). Make parts usable with ``commit(_:byteCount:)``.
    public static func reserve(byteCount: Int) throws(SystemError) -> UnsafeMutableRawPointer {
        try mapAnonymous(byteCount: byteCount, protection: PROT_NONE, flags: MAP_NORESERVE)
    }

    /// Makes a reserved (or revoked) range readable and writable. Pages never written read as
    /// zero; a revoked page keeps what it held.
    public static func commit(_ address: UnsafeMutableRawPointer, byteCount: Int) throws(SystemError) {
        guard mprotect(address, byteCount, PROT_READ | PROT_WRITE) == 0 else {
            throw SystemError(.protect, code: errno)
        }
    }

    /// Makes a range inaccessible (PROT_NONE) without giving its pages back: any read or
    /// write of it faults until ``commit(_:byteCount:)`` opens it again. Guard pages, and
    /// memory that must not be touched while it waits for reuse.
    public static func revokeAccess(_ address: UnsafeMutableRawPointer, byteCount: Int) throws(SystemError) {
        guard mprotect(address, byteCount, PROT_NONE) == 0 else { throw SystemError(.protect, code: errno) }
    }

    /// Unmaps a range obtained from this type (or any part of it).
    public static func unmap(_ address: UnsafeMutableRawPointer, byteCount: Int) throws(SystemError) {
        guard munmap(address, byteCount) == 0 else { throw SystemError(.unmap, code: errno) }
        statistics.record(.unmapCalls, .unmappedBytes, byteCount)
    }

    /// How ``resize(_:from:to:move:)`` may satisfy a resize.
    public enum Move {
        /// Only in place: grow into free address space after the mapping, or shrink.
        case never
        /// Anywhere the kernel likes (the pages move without being copied).
        case anywhere
        /// To `address`, replacing whatever is mapped there (a range reserved for it).
        case to(UnsafeMutableRawPointer)
    }

    /// Grows or shrinks a mapping (mremap): pages move, they are never copied. With
    /// `.never`, growing fails with `ENOMEM` when the address space after the mapping is
    /// taken.
    public static func resize(
        _ address: UnsafeMutableRawPointer, from oldByteCount: Int, to newByteCount: Int, move: Move
    ) throws(SystemError) -> UnsafeMutableRawPointer {
        let result: UnsafeMutableRawPointer?
        switch move {
        case .never: result = alloc_core_mremap(address, oldByteCount, newByteCount, 0, nil)
        case .anywhere: result = alloc_core_mremap(address, oldByteCount, newByteCount, 1, nil)
        case .to(let target): result = alloc_core_mremap(address, oldByteCount, newByteCount, 2, target)
        }
        guard let result else { throw SystemError(.remap, code: errno) }
        if newByteCount > oldByteCount {
            statistics.record(.mapCalls, .mappedBytes, newByteCount - oldByteCount)
        } else if newByteCount < oldByteCount {
            statistics.record(.unmapCalls, .unmappedBytes, oldByteCount - newByteCount)
        }
        return result
    }

    /// Whether the page holding `address` is mapped: a system call (mincore), for debug
    /// checks such as telling a foreign pointer from one of ours before reading a header.
    public static func isMapped(_ address: UnsafeRawPointer) -> Bool {
        alloc_core_is_mapped(address) != 0
    }

    /// Gives the kernel `advice` about a page-aligned range.
    public static func advise(
        _ address: UnsafeMutableRawPointer, byteCount: Int, _ advice: MemoryAdvice
    ) throws(SystemError) {
        guard madvise(address, byteCount, advice.value) == 0 else { throw SystemError(.advise, code: errno) }
        switch advice {
        case .dontNeed, .free, .remove: statistics.record(.adviseCalls, .advisedBytes, byteCount)
        case .hugePage, .noHugePage, .willNeed, .populateWrite: statistics.record(.adviseCalls, .advisedBytes, 0)
        }
    }

    /// Maps `byteCount` bytes of `file` from `offset` (a page multiple), shared: writes go
    /// to the file, and the kernel can write pages back to it instead of to swap.
    public static func mapShared(
        _ file: borrowing MemoryFile, offset: Int, byteCount: Int
    ) throws(SystemError) -> UnsafeMutableRawPointer {
        let address = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED, file.descriptor, off_t(offset))
        guard let address, address != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw SystemError(.map, code: errno)
        }
        statistics.record(.mapCalls, .mappedBytes, byteCount)
        return address
    }

    static func mapAnonymous(
        byteCount: Int, protection: Int32, flags: Int32
    ) throws(SystemError) -> UnsafeMutableRawPointer {
        guard byteCount > 0 else { throw SystemError(.map, code: EINVAL) }
        let address = mmap(nil, byteCount, protection, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0)
        guard let address, address != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw SystemError(.map, code: errno)
        }
        statistics.record(.mapCalls, .mappedBytes, byteCount)
        return address
    }
}

/// A file that backs shared mappings: anonymous (memfd_create) or a temporary file in a
/// directory you choose (unlinked at once, so it disappears with its last descriptor).
/// File-backed memory lets the kernel page cold data out to that file rather than swap.
/// The descriptor is closed when the value is consumed or goes out of scope.
public struct MemoryFile: ~Copyable, Sendable {
    /// The open descriptor.
    public let descriptor: Int32

    /// A memory file with no name in any directory (memfd_create).
    public init(name: String) throws(SystemError) {
        let descriptor = alloc_core_memfd_create(name)
        guard descriptor >= 0 else { throw SystemError(.memoryFile, code: errno) }
        self.descriptor = descriptor
    }

    /// A temporary file created in `directory` and unlinked at once.
    public init(inDirectory directory: String) throws(SystemError) {
        var template = Array((directory.hasSuffix("/") ? directory : directory + "/").utf8CString.dropLast())
        template.append(contentsOf: "alloccore-XXXXXX".utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { alloc_core_mkstemp_cloexec($0.baseAddress!) }
        guard descriptor >= 0 else { throw SystemError(.temporaryFile, code: errno) }
        _ = template.withUnsafeBufferPointer { unlink($0.baseAddress!) }
        self.descriptor = descriptor
    }

    /// Sets the file's size (ftruncate): growing adds a hole that reads as zero.
    public func truncate(to byteCount: Int) throws(SystemError) {
        guard ftruncate(descriptor, off_t(byteCount)) == 0 else { throw SystemError(.truncate, code: errno) }
    }

    /// Reserves disk blocks for a range (fallocate), so later writes through a mapping
    /// cannot fail with SIGBUS for lack of space; grows the file if needed.
    public func allocate(offset: Int, byteCount: Int) throws(SystemError) {
        guard alloc_core_fallocate(descriptor, off_t(offset), off_t(byteCount)) == 0 else {
            throw SystemError(.fileAllocate, code: errno)
        }
    }

    deinit { close(descriptor) }
}

/// Text built without allocating, for reports an allocator prints from inside a process
/// it serves (at exit, from a signal-free context): its memory comes from `mmap`, its
/// numbers are formatted by hand, and `write(to:)` hands it to a file descriptor.
///
/// ```swift
/// var text = try RawText(capacity: 4096)
/// text.append("live blocks: ")
/// text.append(42, width: 8)
/// text.append("\n")
/// try text.write(to: 2)
/// ```
/// Text past the capacity is dropped.
public struct RawText: ~Copyable {
    @usableFromInline let base: UnsafeMutableRawPointer
    @usableFromInline let capacity: Int
    /// Bytes written so far.
    public private(set) var count = 0

    /// A buffer of at least `capacity` bytes (whole pages) from `mmap`.
    public init(capacity: Int) throws(SystemError) {
        self.capacity = alignUp(max(capacity, 1), to: SystemInfo.pageSize) ?? SystemInfo.pageSize
        base = try SystemMemory.map(byteCount: self.capacity)
    }

    deinit { try? SystemMemory.unmap(base, byteCount: capacity) }

    /// The text so far.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    public mutating func append(_ text: StaticString) {
        text.withUTF8Buffer { utf8 in
            let length = min(utf8.count, capacity - count)
            guard length > 0 else { return }
            (base + count).copyMemory(from: utf8.baseAddress!, byteCount: length)
            count += length
        }
    }

    /// Raw bytes (text the caller has, such as a C string's).
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        let length = min(bytes.count, capacity - count)
        guard length > 0 else { return }
        (base + count).copyMemory(from: bytes.baseAddress!, byteCount: length)
        count += length
    }

    /// `value` in hexadecimal with a `0x` prefix and no leading zeros (an address, say).
    public mutating func appendHex(_ value: UInt) {
        append("0x")
        var shift = UInt.bitWidth - 4
        while shift > 0 && (value >> UInt(shift)) & 0xF == 0 { shift -= 4 }
        while shift >= 0 && count < capacity {
            let digit = UInt8((value >> UInt(shift)) & 0xF)
            base.storeBytes(
                of: digit < 10 ? UInt8(ascii: "0") + digit : UInt8(ascii: "a") + digit - 10, toByteOffset: count,
                as: UInt8.self)
            count += 1
            shift -= 4
        }
    }

    /// `value` in decimal, right-aligned in `width` columns (wider numbers are not cut).
    public mutating func append(_ value: Int, width: Int = 0) {
        // 20 digits and a sign hold any Int.
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
        let length = withUnsafeMutableBytes(of: &digits) { scratch in
            var magnitude = value.magnitude
            var index = scratch.count
            repeat {
                index -= 1
                scratch[index] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            if value < 0 {
                index -= 1
                scratch[index] = UInt8(ascii: "-")
            }
            let length = scratch.count - index
            for _ in 0..<max(0, width - length) where count < capacity {
                base.storeBytes(of: UInt8(ascii: " "), toByteOffset: count, as: UInt8.self)
                count += 1
            }
            let copied = min(length, capacity - count)
            (base + count).copyMemory(from: scratch.baseAddress! + index, byteCount: copied)
            return copied
        }
        count += length
    }

    /// Writes the whole text to `descriptor`, retrying short writes and EINTR.
    public func write(to descriptor: Int32) throws(SystemError) {
        var offset = 0
        while offset < count {
            let written = Glibc.write(descriptor, base + offset, count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw SystemError(.write, code: errno)
            }
            offset += written
        }
    }
}
