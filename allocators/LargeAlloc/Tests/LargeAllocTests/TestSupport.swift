// Helpers shared by the test suites: configurations, patterns, threads, waiting for the
// worker, and a temporary directory per test.

import AllocCore
import Glibc
import LargeAlloc
import Synchronization
import Testing

/// A configuration for tests: small areas, no worker unless asked, so that counters move
/// only when a test makes them.
func testConfiguration(
    backing: LargeAllocConfiguration.Backing = .anonymous(hugePages: false),
    threadCacheBytes: Int = 8 << 20, worker: Duration? = nil
) -> LargeAllocConfiguration {
    var configuration = LargeAllocConfiguration()
    configuration.backing = backing
    configuration.threadCacheBytes = threadCacheBytes
    configuration.backgroundInterval = worker
    configuration.initialAreaBytes = 4 << 20
    configuration.maximumAreaBytes = 16 << 20
    configuration.areaIdleAge = nil
    return configuration
}

/// Both backings the randomized tests run over; the file one in `directory`.
enum BackingMode: String, CaseIterable, Sendable {
    case anonymous, file

    func backing(directory: String) -> LargeAllocConfiguration.Backing {
        self == .anonymous ? .anonymous(hugePages: true) : .file(directory: directory)
    }
}

/// A fresh directory under /tmp, removed (with anything left in it) by `body`'s end.
func withTemporaryDirectory<Result>(_ body: (String) throws -> Result) throws -> Result {
    var template = Array("/tmp/largealloc-test-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    let path = try #require(made.map { String(cString: $0) })
    defer {
        for name in directoryEntries(path) { unlink(path + "/" + name) }
        rmdir(path)
    }
    return try body(path)
}

/// The names in a directory, without "." and "..".
func directoryEntries(_ path: String) -> [String] {
    guard let directory = opendir(path) else { return [] }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafePointer(to: entry.pointee.d_name) {
            $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// Lines of /proc/self/maps that map a file under `directory` (deleted or not).
func mappedFiles(under directory: String) -> [String] {
    guard let file = fopen("/proc/self/maps", "r") else { return [] }
    defer { fclose(file) }
    var lines: [String] = []
    var buffer = [CChar](repeating: 0, count: 4096)
    while fgets(&buffer, Int32(buffer.count), file) != nil {
        let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if line.contains(directory + "/") { lines.append(line) }
    }
    return lines
}

/// Fills a region to `count` elements: every element `tag`, and every 512th (one per
/// 4 KiB page) `tag ^ index`, so both the pages and their order are checked.
func fill(_ region: inout Region<UInt64>, count: Int, tag: UInt64) throws {
    try region.append(count: count, repeating: tag)
    region.withUnsafeMutableBufferPointer { elements in
        for index in stride(from: 0, to: count, by: 512) { elements[index] = tag ^ UInt64(index) }
        elements[count - 1] = tag ^ UInt64(count - 1)
    }
}

/// Whether `fill(_:count:tag:)` content is intact; checks every marked element and the
/// elements right after each.
func matches(_ region: borrowing Region<UInt64>, tag: UInt64) -> Bool {
    region.withUnsafeBufferPointer { elements in
        let count = elements.count
        guard count > 0, elements[count - 1] == tag ^ UInt64(count - 1) else { return false }
        for index in stride(from: 0, to: count - 1, by: 512) {
            guard elements[index] == tag ^ UInt64(index) else { return false }
            if index + 1 < count - 1 && elements[index + 1] != tag { return false }
        }
        return true
    }
}

/// Polls `condition` every millisecond for up to `seconds`; returns whether it held.
func eventually(within seconds: Double = 10, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = SystemInfo.monotonicNanoseconds() + UInt64(seconds * 1e9)
    while SystemInfo.monotonicNanoseconds() < deadline {
        if try condition() { return true }
        usleep(1000)
    }
    return try condition()
}

/// Runs `body` on a new thread and waits for it.
func onThread(_ body: @escaping @Sendable () -> Void) throws {
    try OSThread.spawn(body).join()
}

/// Class counters summed over every class.
func totals(_ statistics: LargeAllocStatistics) -> LargeAllocStatistics.SizeClass {
    var total = LargeAllocStatistics.SizeClass(regionByteCount: 0)
    for sizeClass in statistics.sizeClasses {
        total.areas += sizeClass.areas
        total.areaBytes += sizeClass.areaBytes
        total.fileBytes += sizeClass.fileBytes
        total.dirtyRegions += sizeClass.dirtyRegions
        total.cleanRegions += sizeClass.cleanRegions
        total.threadRegions += sizeClass.threadRegions
        total.liveRegions += sizeClass.liveRegions
        total.allocations += sizeClass.allocations
        total.slowPaths += sizeClass.slowPaths
        total.refills += sizeClass.refills
        total.deallocations += sizeClass.deallocations
        total.eagerClears += sizeClass.eagerClears
        total.backgroundClears += sizeClass.backgroundClears
        total.clearFailures += sizeClass.clearFailures
        total.steals += sizeClass.steals
        total.unmappedAreas += sizeClass.unmappedAreas
    }
    return total
}

/// A one-shot signal between threads.
final class Signal: Sendable {
    let word = Atomic<Int>(0)
    func raise() { word.store(1, ordering: .releasing) }
    func wait() { while word.load(ordering: .acquiring) == 0 { usleep(200) } }
}

/// A region and the tag its content was filled with.
struct TaggedRegion: ~Copyable, Sendable {
    var region: Region<UInt64>
    let tag: UInt64

    /// Whether its content is what `fill` wrote with `tag`.
    var isIntact: Bool { matches(region, tag: tag) }
}

/// A slot that threads swap regions through, under AllocCore's spin lock (inlined into
/// this module, so the thread sanitizer sees its atomics; `Synchronization.Mutex` is
/// compiled into the standard library, and the sanitizer would not see it order the accesses).
final class RegionSlot: @unchecked Sendable {
    let lock = SpinLock()
    var stored: TaggedRegion? = nil

    /// Puts `incoming` in and returns what was there.
    func swap(_ incoming: consuming TaggedRegion?) -> TaggedRegion? {
        lock.lock()
        defer { lock.unlock() }
        let previous = stored.take()
        stored = incoming
        return previous
    }
}

/// Checks that an exit test trapped with a message containing `text` on standard error.
func expectTrap(_ result: ExitTest.Result?, saying text: String, sourceLocation: SourceLocation = #_sourceLocation) {
    guard let result else { return }  // the exit test already recorded the failure
    let output = String(decoding: result.standardErrorContent, as: UTF8.self)
    #expect(
        output.contains(text), "expected a trap saying \"\(text)\", got: \(output.suffix(400))",
        sourceLocation: sourceLocation)
}
