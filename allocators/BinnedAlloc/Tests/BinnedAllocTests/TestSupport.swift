// Helpers shared by the BinnedAlloc tests: a seeded generator, a sendable pointer box,
// byte patterns checked with memcmp, an interval set that finds overlapping blocks, and
// the checks that exit tests run on a trap's standard error.

import AllocCore
import BinnedAlloc
import Glibc
import Testing

/// A seed for a randomized test: `BINNED_TEST_SEED` from the environment when set (to
/// replay a failure), otherwise fresh from the clock.
func testSeed() -> UInt64 {
    if let text = getenv("BINNED_TEST_SEED"), let seed = UInt64(String(cString: text)) { return seed }
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    var mixer = SplitMix64(seed: UInt64(time.tv_sec) &* 1_000_000_007 &+ UInt64(time.tv_nsec))
    return mixer.next()
}

/// A raw pointer that closures running on other threads may capture.
struct SendablePointer: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer
    init(_ raw: UnsafeMutableRawPointer) { self.raw = raw }
}

/// Runs `body(threadIndex)` on `count` OS threads at once and waits for all of them.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) throws {
    let threads = try (0..<count).map { index throws(SystemError) in try OSThread.spawn { body(index) } }
    for thread in threads { thread.join() }
}

/// Runs `body` on a new OS thread and waits for it to end.
func onNewThread(_ body: @escaping @Sendable () -> Void) throws {
    try OSThread.spawn(body).join()
}

/// Random bytes that block patterns are cut from: the bytes of a block whose pattern
/// starts at `origin` are `pattern[origin + offset]`, so checking a block is one memcmp.
/// Allocated with the system allocator, never freed (shared by every test).
enum Pattern {
    /// Patterns start at an origin below this.
    static let origins = 1 << 16
    /// The longest range one fill or check may cover.
    static let maximumLength = 1 << 21
    nonisolated(unsafe) static let bytes: UnsafeMutableRawPointer = {
        let count = origins + maximumLength
        let memory = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 16)
        var generator = SplitMix64(seed: 0x5EED_B10C)
        var index = 0
        while index < count {
            memory.storeBytes(of: generator.next(), toByteOffset: index, as: UInt64.self)
            index += 8
        }
        return memory
    }()

    /// The origin of the pattern of a block tagged `tag`.
    static func origin(_ tag: Int) -> Int {
        var mixer = SplitMix64(seed: UInt64(bitPattern: Int64(tag)))
        return Int(mixer.next() % UInt64(origins))
    }

    /// Writes bytes `range` of the pattern `tag` into the block at `block`.
    static func fill(_ block: UnsafeMutableRawPointer, tag: Int, range: Range<Int>) {
        precondition(range.upperBound <= maximumLength)
        guard !range.isEmpty else { return }
        memcpy(block + range.lowerBound, bytes + origin(tag) + range.lowerBound, range.count)
    }

    /// Whether bytes `range` of the block at `block` hold the pattern `tag`.
    static func matches(_ block: UnsafeRawPointer, tag: Int, range: Range<Int>) -> Bool {
        precondition(range.upperBound <= maximumLength)
        guard !range.isEmpty else { return true }
        return memcmp(block + range.lowerBound, bytes + origin(tag) + range.lowerBound, range.count) == 0
    }

    /// The ranges of a block of `byteCount` bytes that tests fill and check: all of it up
    /// to 16 KiB, else the first and last 2 KiB and 1 KiB in the middle.
    static func windows(_ byteCount: Int) -> [Range<Int>] {
        if byteCount <= 16384 { return [0..<byteCount] }
        let middle = byteCount / 2
        return [0..<2048, (middle - 512)..<(middle + 512), (byteCount - 2048)..<byteCount]
    }

    /// The windows of a block of `byteCount` bytes clipped to its first `prefix` bytes.
    static func windows(_ byteCount: Int, clippedTo prefix: Int) -> [Range<Int>] {
        windows(byteCount).compactMap { window in
            let clipped = window.clamped(to: 0..<max(0, min(prefix, byteCount)))
            return clipped.isEmpty ? nil : clipped
        }
    }
}

/// Live blocks as address intervals, sorted by address: reports a new block that overlaps
/// a live one.
struct IntervalSet {
    private(set) var starts: [UInt] = []
    private(set) var ends: [UInt] = []

    var count: Int { starts.count }

    /// The index of the first interval whose start is >= `address`.
    private func lowerBound(_ address: UInt) -> Int {
        var low = 0
        var high = starts.count
        while low < high {
            let middle = (low + high) / 2
            if starts[middle] < address { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// Inserts [start, start + length) and returns nil, or returns the live interval it
    /// overlaps (and inserts nothing).
    mutating func insert(start: UInt, length: Int) -> (start: UInt, end: UInt)? {
        let end = start + UInt(max(length, 1))
        let index = lowerBound(start)
        if index < starts.count && starts[index] < end { return (starts[index], ends[index]) }
        if index > 0 && ends[index - 1] > start { return (starts[index - 1], ends[index - 1]) }
        starts.insert(start, at: index)
        ends.insert(end, at: index)
        return nil
    }

    /// Removes the interval that starts at `start`; returns whether there was one.
    @discardableResult
    mutating func remove(start: UInt) -> Bool {
        let index = lowerBound(start)
        guard index < starts.count && starts[index] == start else { return false }
        starts.remove(at: index)
        ends.remove(at: index)
        return true
    }
}

/// Whether `pointer` is a multiple of `alignment`.
func isMultiple(_ pointer: UnsafeRawPointer, of alignment: Int) -> Bool {
    Int(bitPattern: pointer) & (alignment - 1) == 0
}

/// The sizes every class boundary test goes through: 0, 1, each class size and the sizes
/// either side of it, the large threshold and the first sizes above it.
func boundarySizes() -> [Int] {
    let classes = BinnedAllocator.sizeClasses
    var sizes: Set<Int> = [0, 1, 2, 15, 17]
    for index in 0..<classes.count {
        let size = classes.size(ofClass: index)
        sizes.formUnion([size - 1, size, size + 1])
    }
    let limit = BinnedAllocator.smallSizeLimit
    sizes.formUnion([limit - 1, limit, limit + 1, limit + 4096, 2 * limit, 4 * limit])
    return sizes.sorted()
}

/// The totals of a statistics snapshot used by the accounting checks.
extension BinnedStatistics {
    var smallLiveBlocks: Int { sizeClasses.reduce(0) { $0 + $1.liveBlocks } }
    var smallAllocations: Int { sizeClasses.reduce(0) { $0 + $1.allocations } }
    var smallFrees: Int { sizeClasses.reduce(0) { $0 + $1.frees } }
    var largeLiveBlocks: Int { largeAllocations - largeFrees }
    /// Every block the statistics count as live, small and large.
    var liveBlocks: Int { smallLiveBlocks + largeLiveBlocks }

    /// Class indices whose counters do not add up (allocations - frees != liveBlocks, or a
    /// negative count), with a description of each.
    var inconsistentClasses: [String] {
        sizeClasses.enumerated().compactMap { index, sizeClass in
            let consistent =
                sizeClass.allocations - sizeClass.frees == sizeClass.liveBlocks && sizeClass.liveBlocks >= 0
                && sizeClass.frees >= 0 && sizeClass.slabs >= 0
            return consistent
                ? nil
                : "class \(index) (size \(sizeClass.size)): allocations \(sizeClass.allocations), "
                    + "frees \(sizeClass.frees), liveBlocks \(sizeClass.liveBlocks), slabs \(sizeClass.slabs)"
        }
    }
}

/// The class index of requests of `byteCount` bytes (at most `smallSizeLimit`).
func classIndex(_ byteCount: Int) -> Int { BinnedAllocator.sizeClasses.index(for: byteCount) }

/// Prints the pointer a trap test is about to pass to deallocate, so that the parent can
/// look for it in the trap's message.
func announce(_ pointer: UnsafeMutableRawPointer) {
    print("bad pointer: \(String(UInt(bitPattern: pointer), radix: 16))")
    fflush(nil)
}

/// Checks that a child process ended by a Swift trap that printed its message: a
/// precondition, assertion or fatal error, not a segmentation fault or a silent exit.
/// With `namingThePointer`, the message must also name the pointer the child announced:
/// a deliberate ownership check, not an accidental crash further on (a nil unwrapped, an
/// index out of range).
func expectTrapMessage(
    _ result: ExitTest.Result?, _ what: String, namingThePointer: Bool = false,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    guard let result else { return }  // the exit test itself already recorded the failure
    let text = String(decoding: result.standardErrorContent, as: UTF8.self)
    let trapped = ["Fatal error", "Precondition failed", "Assertion failed"].contains { text.contains($0) }
    #expect(
        trapped, "\(what): expected a trap with a message, got \(result.exitStatus), stderr: \(text.prefix(600))",
        sourceLocation: sourceLocation)
    guard namingThePointer, trapped else { return }
    let output = String(decoding: result.standardOutputContent, as: UTF8.self)
    guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("bad pointer: ") }) else {
        Issue.record("\(what): the child did not announce its pointer", sourceLocation: sourceLocation)
        return
    }
    let hex = line.dropFirst("bad pointer: ".count)
    let message = text.split(separator: "\n").first { $0.contains("Fatal error") || $0.contains("failed") } ?? ""
    let named = text.lowercased().contains(hex.lowercased())
    #expect(
        named, "\(what): the trap does not name the pointer 0x\(hex), so it is no ownership check: \(message)",
        sourceLocation: sourceLocation)
}

/// errno of the calling thread.
var currentErrno: Int32 {
    get { Glibc.errno }
    set { Glibc.errno = newValue }
}
