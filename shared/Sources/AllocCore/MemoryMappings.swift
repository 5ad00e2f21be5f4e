// What the kernel says about the process's own mappings: resident and dirty bytes per
// address range, read from /proc/self/smaps. For statistics, never for a fast path: it
// reads a file of a few hundred bytes per mapping and allocates.

import Glibc

/// The kernel's figures for the part of the address space inside one range, summed over
/// the mappings (VMAs) that overlap it.
public struct MappingUsage: Sendable, Equatable {
    /// Bytes of the range that are mapped.
    public var mappedBytes: Int
    /// Bytes in RAM (smaps `Rss`).
    public var residentBytes: Int
    /// Bytes written and not yet written back or discarded (`Private_Dirty` + `Shared_Dirty`).
    public var dirtyBytes: Int
    /// Bytes lazily freed with `MADV_FREE` that the kernel has not taken yet (`LazyFree`).
    public var lazyFreeBytes: Int
    /// Mapped bytes advised transparent huge pages with `MADV_HUGEPAGE` (`hg` in the
    /// mapping's `VmFlags`): the advice, whether or not the kernel has found huge pages.
    public var hugePageAdvisedBytes: Int

    public init(
        mappedBytes: Int = 0, residentBytes: Int = 0, dirtyBytes: Int = 0, lazyFreeBytes: Int = 0,
        hugePageAdvisedBytes: Int = 0
    ) {
        self.mappedBytes = mappedBytes
        self.residentBytes = residentBytes
        self.dirtyBytes = dirtyBytes
        self.lazyFreeBytes = lazyFreeBytes
        self.hugePageAdvisedBytes = hugePageAdvisedBytes
    }

    public static func + (lhs: MappingUsage, rhs: MappingUsage) -> MappingUsage {
        MappingUsage(
            mappedBytes: lhs.mappedBytes + rhs.mappedBytes, residentBytes: lhs.residentBytes + rhs.residentBytes,
            dirtyBytes: lhs.dirtyBytes + rhs.dirtyBytes, lazyFreeBytes: lhs.lazyFreeBytes + rhs.lazyFreeBytes,
            hugePageAdvisedBytes: lhs.hugePageAdvisedBytes + rhs.hugePageAdvisedBytes)
    }
}

/// Reads /proc/self/smaps.
public enum MemoryMappings {
    /// The usage of each range in `ranges` (address ranges, as integers), in the same order.
    ///
    /// The kernel reports per mapping, and it may merge neighbouring mappings with the same
    /// flags into one: a mapping that only partly overlaps a range contributes its figures in
    /// proportion to the overlap (exact for a mapping wholly inside the range, an estimate
    /// otherwise).
    ///
    /// - Throws: `SystemError` for `open` (as `.read`) or `read` failing; Linux without
    ///   /proc, for instance.
    public static func usage(of ranges: [Range<Int>]) throws(SystemError) -> [MappingUsage] {
        let text = try readWholeFile("/proc/self/smaps")
        var result = Array(repeating: MappingUsage(), count: ranges.count)
        var current: Range<Int>? = nil
        var figures = MappingUsage()

        func flush() {
            guard let mapping = current, !mapping.isEmpty else { return }
            for (index, range) in ranges.enumerated() {
                let overlap = max(
                    0, min(range.upperBound, mapping.upperBound) - max(range.lowerBound, mapping.lowerBound))
                guard overlap > 0 else { continue }
                func share(_ bytes: Int) -> Int {
                    overlap == mapping.count ? bytes : Int((Double(bytes) * Double(overlap) / Double(mapping.count)))
                }
                result[index] =
                    result[index]
                    + MappingUsage(
                        mappedBytes: overlap, residentBytes: share(figures.residentBytes),
                        dirtyBytes: share(figures.dirtyBytes), lazyFreeBytes: share(figures.lazyFreeBytes),
                        hugePageAdvisedBytes: figures.hugePageAdvisedBytes > 0 ? overlap : 0)
            }
        }

        for line in text.split(separator: UInt8(ascii: "\n")) {
            if let mapping = parseHeader(line) {
                flush()
                current = mapping
                figures = MappingUsage()
            } else if let kilobytes = field(line, "Rss:") {
                figures.residentBytes += kilobytes * 1024
            } else if let kilobytes = field(line, "Private_Dirty:") ?? field(line, "Shared_Dirty:") {
                figures.dirtyBytes += kilobytes * 1024
            } else if let kilobytes = field(line, "LazyFree:") {
                figures.lazyFreeBytes += kilobytes * 1024
            } else if hasFlag(line, "VmFlags:", "hg") {
                // A flag, not a size: any nonzero value marks the mapping as advised.
                figures.hugePageAdvisedBytes = 1
            }
        }
        flush()
        return result
    }

    /// `start-end` in hex at the start of a mapping's header line, or nil for a field line.
    static func parseHeader(_ line: ArraySlice<UInt8>) -> Range<Int>? {
        var index = line.startIndex
        func hexNumber() -> Int? {
            var value = 0
            let start = index
            while index < line.endIndex, let digit = hexDigit(line[index]) {
                value = value &* 16 &+ digit
                index += 1
            }
            return index > start ? value : nil
        }
        guard let start = hexNumber(), index < line.endIndex, line[index] == UInt8(ascii: "-") else { return nil }
        index += 1
        guard let end = hexNumber(), index < line.endIndex, line[index] == UInt8(ascii: " "), end >= start else {
            return nil
        }
        return start..<end
    }

    static func hexDigit(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a")) + 10
        default: nil
        }
    }

    /// The number of a `Name:   123 kB` line whose name is `name`, or nil.
    static func field(_ line: ArraySlice<UInt8>, _ name: StaticString) -> Int? {
        let nameBytes = UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)
        guard line.count > nameBytes.count, line.prefix(nameBytes.count).elementsEqual(nameBytes) else { return nil }
        var value = 0
        for byte in line.dropFirst(nameBytes.count) where byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }

    /// Whether a `Name: ab cd ...` line named `name` lists the two-letter flag `flag`.
    static func hasFlag(_ line: ArraySlice<UInt8>, _ name: StaticString, _ flag: StaticString) -> Bool {
        let nameBytes = UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount)
        let flagBytes = UnsafeBufferPointer(start: flag.utf8Start, count: flag.utf8CodeUnitCount)
        guard line.count > nameBytes.count, line.prefix(nameBytes.count).elementsEqual(nameBytes) else { return false }
        return line.dropFirst(nameBytes.count).split(separator: UInt8(ascii: " ")).contains {
            $0.elementsEqual(flagBytes)
        }
    }

    static func readWholeFile(_ path: String) throws(SystemError) -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw SystemError(.read, code: errno) }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw SystemError(.read, code: errno)
            }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[..<count])
        }
    }
}
