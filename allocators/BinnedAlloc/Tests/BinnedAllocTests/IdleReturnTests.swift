// Issue 19's knobs and queries (spec section 10): freed memory goes back to the OS once it
// has waited a purge delay, with no call (the background thread) or from a slow path (without
// it); the configuration from Swift and from BINNEDMALLOC_CONF-style text, bad items
// included; glibc's extra entry points and the statistic queries. Each test runs in a fresh
// child process (an exit test): the configuration and the span cache are process-wide.
//
// No test waits a fixed time for the purger: each polls for what it expects with a 20 s
// bound (the purge takes about two delays), or sleeps past a delay on the monotonic clock
// and then makes the slow-path call itself.

import AllocCore
import BinnedAlloc
import Glibc
import Testing

/// Calls `condition` every 10 ms until it holds or 20 s have passed; whether it held.
func eventually(_ condition: () -> Bool) -> Bool {
    let deadline = SystemInfo.monotonicNanoseconds() + 20_000_000_000
    while !condition() {
        if SystemInfo.monotonicNanoseconds() > deadline { return false }
        usleep(10_000)
    }
    return true
}

/// `count` large blocks of `size` bytes, every page written, then freed: they wait in the
/// span cache.
func freeLargeBlocks(count: Int, size: Int) {
    let allocator = BinnedAllocator.shared
    let blocks = (0..<count).map { _ in allocator.allocate(byteCount: size)! }
    for block in blocks { memset(block, 0x33, size) }
    for block in blocks { allocator.deallocate(block) }
}

/// Configures the background thread off and the purge delay, then waits for a purger the
/// child started before (a thread of the test runtime that exited) to stop at its next
/// wake-up, within half the old delay; whether it stopped.
func stopPurger(purgeDelayMilliseconds: Int) -> Bool {
    let allocator = BinnedAllocator.shared
    allocator.configuration.backgroundThread = false
    allocator.configuration.purgeDelayMilliseconds = purgeDelayMilliseconds
    return eventually { binned_statistic("background_thread_running") == 0 }
}

/// A thread that allocates, frees and exits: its exit is a slow path, which purges when half
/// a delay has passed since the last purge.
func purgeFromAThreadExit() {
    let allocator = BinnedAllocator.shared
    let thread = try! OSThread.spawn { allocator.deallocate(allocator.allocate(byteCount: 64)) }
    thread.join()
}

@Suite("Memory returned on idle, in a fresh process")
struct IdleReturnTests {
    @Test("freed large blocks go back after the purge delay with no call: the background thread")
    func backgroundThreadReturnsCachedSpans() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            allocator.configuration.purgeDelayMilliseconds = 100
            freeLargeBlocks(count: 16, size: mebibyte)
            let cached = allocator.statistics()
            let residentCached = residentBytes()
            #expect(cached.cachedLargeBytes >= 16 * mebibyte, "the blocks were not cached: the test is void")
            #expect(eventually { allocator.statistics().cachedLargeBytes == 0 }, "the cache never emptied")
            #expect(binned_statistic("background_thread_running") == 1)
            #expect(binned_statistic("purges") >= 1)
            let after = allocator.statistics()
            #expect(after.bytesReturned - cached.bytesReturned >= 16 * mebibyte)
            #expect(
                residentBytes() <= residentCached - 8 * mebibyte,
                "RSS \(residentBytes()) after the purge, \(residentCached) while cached")
        }
    }

    @Test("without the background thread, a slow path returns what has waited a delay, and nothing returns sooner")
    func slowPathReturnsWhatWaited() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            #expect(stopPurger(purgeDelayMilliseconds: 50), "the purger never stopped")
            freeLargeBlocks(count: 4, size: mebibyte)
            #expect(allocator.statistics().cachedLargeBytes == 4 * mebibyte, "cached as freed")
            #expect(binned_statistic("background_thread_running") == 0, "no purger thread was started")
            // The blocks waited more than the delay.
            usleep(100_000)
            purgeFromAThreadExit()
            #expect(allocator.statistics().cachedLargeBytes == 0, "the exit's purge left cached bytes")
            // Idle without the thread: a block freed now stays, however long the process waits
            // without a call.
            freeLargeBlocks(count: 1, size: mebibyte)
            usleep(100_000)
            #expect(allocator.statistics().cachedLargeBytes == mebibyte)
        }
    }

    /// Spans queued for release are never reused, so the first purge unmaps them, however
    /// recently they were freed; cached spans keep waiting a delay.
    @Test("the first slow-path purge unmaps the spans queued for release; cached ones wait their delay")
    func purgeReleasesQueuedSpansAtOnce() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            #expect(stopPurger(purgeDelayMilliseconds: 4_000), "the purger never stopped")
            // 140 spans of 40 KiB: 128 fill the cache's slots, 12 are queued.
            freeLargeBlocks(count: 140, size: 40 << 10)
            #expect(binned_statistic("queued_large_blocks") == 12)
            // Past half a delay, a thread's exit purges: the queued spans go, the cached ones
            // (freed 2 s before, against a delay of 4 s) stay.
            usleep(2_100_000)
            let returned = allocator.statistics().bytesReturned
            purgeFromAThreadExit()
            #expect(binned_statistic("queued_large_blocks") == 0)
            #expect(allocator.statistics().cachedLargeBlocks == 128)
            #expect(allocator.statistics().bytesReturned - returned >= 12 * (40 << 10))
        }
    }

    @Test("a miss unmaps stale cached spans before it maps, so spans that fit nothing do not add to the peak")
    func missEvictsBeforeMapping() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            allocator.configuration.purgeDelayMilliseconds = 3_600_000
            freeLargeBlocks(count: 8, size: 40 << 10)
            let before = allocator.statistics()
            #expect(before.cachedLargeBlocks == 8)
            // Stale after 10 ms; then 200 KiB (its class: 224 KiB), which fits none of the
            // 40 KiB spans, unmaps six of them first.
            usleep(20_000)
            let block = allocator.allocate(byteCount: 200 << 10)!
            let after = allocator.statistics()
            #expect(after.cachedLargeBlocks == 2)
            #expect(after.bytesMapped <= before.bytesMapped, "the miss mapped more than it unmapped")
            allocator.deallocate(block)
        }
    }
}

@Suite("Configuration, glibc's extra entry points and statistic queries, in a fresh process")
struct ConfigurationTests {
    @Test("the defaults, and every knob set from Swift and from BINNEDMALLOC_CONF-style items")
    func knobsFromSwiftAndText() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            #expect(allocator.configuration == BinnedAllocConfiguration())
            #expect(allocator.configuration.purgeDelayMilliseconds == 1000)
            #expect(allocator.configuration.backgroundThread)
            #expect(allocator.configuration.spanCacheBytes == 16 << 20)
            #expect(allocator.configuration.freeCacheBytes == 64 << 10)
            #expect(binned_configure("purge_delay_ms:250,background_thread:false,span_cache_bytes:2m") == 0)
            #expect(binned_configure("free_cache_bytes:4K,stats_print:json") == 0)
            var expected = BinnedAllocConfiguration()
            expected.purgeDelayMilliseconds = 250
            expected.backgroundThread = false
            expected.spanCacheBytes = 2 << 20
            expected.freeCacheBytes = 4 << 10
            expected.statisticsAtExit = .json
            #expect(allocator.configuration == expected)
            expected.statisticsAtExit = .none
            allocator.configuration = expected
            #expect(allocator.configuration == expected)
            #expect(binned_statistic("purge_delay_ms") == 250)
        }
    }

    @Test("bad items are refused one by one and change nothing; good items beside them still apply")
    func badItemsChangeNothing() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            let defaults = allocator.configuration
            let long = String(repeating: "x", count: 4096)
            let bad = [
                "bogus:1", "purge_delay_ms", "purge_delay_ms:", "purge_delay_ms:-1", "purge_delay_ms:86400001",
                "purge_delay_ms:99999999999999999999999", "span_cache_bytes:1e9", "span_cache_bytes:k",
                "span_cache_bytes:9223372036854775807g", "free_cache_bytes:65537", "free_cache_bytes:1m",
                "background_thread:yes", "background_thread:TRUE", "stats_print:xml", ":", ":1", long,
                "purge_delay_ms:" + long,
            ]
            for item in bad {
                #expect(binned_configure(item) == EINVAL, "\(item.prefix(40)) was accepted")
                #expect(allocator.configuration == defaults, "\(item.prefix(40)) changed the configuration")
            }
            #expect(binned_configure("") == 0 && binned_configure(",,,") == 0, "empty items are no items")
            #expect(binned_configure(nil) == EINVAL)
            #expect(binned_configure("bogus:1,purge_delay_ms:7,span_cache_bytes:-1") == EINVAL)
            #expect(allocator.configuration.purgeDelayMilliseconds == 7, "the good item between bad ones applied")
            #expect(allocator.configuration.spanCacheBytes == defaults.spanCacheBytes)
        }
    }

    @Test("a smaller span-cache budget evicts at once; a budget of 0 or a delay of 0 caches nothing")
    func budgetChangesApplyAtOnce() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            allocator.configuration.purgeDelayMilliseconds = 3_600_000
            freeLargeBlocks(count: 8, size: mebibyte)
            #expect(allocator.statistics().cachedLargeBytes == 8 * mebibyte)
            allocator.configuration.spanCacheBytes = 3 * mebibyte
            #expect(allocator.statistics().cachedLargeBytes == 3 * mebibyte)
            allocator.configuration.spanCacheBytes = 0
            #expect(allocator.statistics().cachedLargeBytes == 0)
            freeLargeBlocks(count: 2, size: mebibyte)
            #expect(allocator.statistics().cachedLargeBytes == 0, "a budget of 0 caches nothing")
            allocator.configuration.spanCacheBytes = 64 << 20
            allocator.configuration.purgeDelayMilliseconds = 0
            freeLargeBlocks(count: 2, size: mebibyte)
            #expect(allocator.statistics().cachedLargeBytes == 0, "a delay of 0 caches nothing")
        }
    }

    @Test("an out-of-range knob set from Swift is a precondition failure")
    func outOfRangeKnobTraps() async {
        await #expect(processExitsWith: .failure) {
            BinnedAllocator.shared.configuration.freeCacheBytes = 1 << 20
        }
        await #expect(processExitsWith: .failure) {
            BinnedAllocator.shared.configuration.purgeDelayMilliseconds = -1
        }
    }

    @Test("malloc_trim returns 1 when it gave memory back and 0 when there was none; mallopt answers 1")
    func trimAndMallopt() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            allocator.configuration.purgeDelayMilliseconds = 3_600_000
            freeLargeBlocks(count: 2, size: mebibyte)
            #expect(binned_trim(0) == 1)
            #expect(allocator.statistics().cachedLargeBytes == 0)
            #expect(binned_trim(0) == 0, "nothing was left to give back")
            // M_TRIM_THRESHOLD (-1) is the span-cache budget; other options are accepted.
            #expect(binned_mallopt(-1, 1 << 20) == 1)
            #expect(allocator.configuration.spanCacheBytes == 1 << 20)
            #expect(binned_mallopt(-1, -5) == 0)
            #expect(allocator.configuration.spanCacheBytes == 1 << 20)
            for option: Int32 in [-3, -8, -2, 1, -6, 12_345] { #expect(binned_mallopt(option, 7) == 1) }
        }
    }

    @Test("binned_good_size is the usable size a request gets; binned_statistic reads the counters")
    func goodSizeAndStatistics() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            allocator.configuration.purgeDelayMilliseconds = 3_600_000
            for size in cSizes + [0, 33, 5 << 20, (5 << 20) + 1] {
                let block = binned_malloc(size)!
                #expect(binned_good_size(size) == binned_malloc_usable_size(block), "size \(size)")
                binned_free(block)
            }
            for size in tooLargeCSizes { #expect(binned_good_size(size) == size) }
            let small = (0..<100).map { _ in binned_malloc(100)! }
            let large = binned_malloc(1 << 20)!
            let statistics = allocator.statistics()
            let smallLive = statistics.sizeClasses.reduce(0) { $0 + $1.liveBlocks * $1.size }
            #expect(binned_statistic("small_live_bytes") == Int64(smallLive))
            #expect(binned_statistic("large_live_bytes") == Int64(statistics.largeLiveBytes))
            #expect(binned_statistic("live_bytes") == Int64(smallLive + statistics.largeLiveBytes))
            #expect(binned_statistic("stats.allocated") == binned_statistic("live_bytes"))
            #expect(binned_statistic("mapped_bytes") == Int64(statistics.bytesMapped))
            #expect(binned_statistic("stats.mapped") == Int64(statistics.bytesMapped))
            #expect(
                binned_statistic("large_live_blocks")
                    == Int64(statistics.largeAllocations - statistics.largeDeallocations))
            errno = 0
            #expect(binned_statistic("no_such_statistic") == -1 && errno == ENOENT)
            #expect(binned_statistic(nil) == -1)
            for block in small { binned_free(block) }
            binned_free(large)
        }
    }

    @Test("the JSON statistics are one object with the configuration, the byte counts and every class")
    func jsonStatistics() async {
        await #expect(processExitsWith: .success) {
            let blocks = (0..<50).map { _ in binned_malloc(48)! }
            var descriptors: [Int32] = [0, 0]
            #expect(pipe(&descriptors) == 0)
            #expect(binned_write_statistics(descriptors[1], "json") == 0)
            #expect(binned_write_statistics(descriptors[1], "xml") == EINVAL)
            close(descriptors[1])
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = read(descriptors[0], &buffer, buffer.count)
                if count <= 0 { break }
                bytes += buffer[0..<count]
            }
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(text.hasPrefix("{\"allocator\":\"BinnedAlloc\",\"version\":1,\"configuration\":{"))
            #expect(text.hasSuffix("]}\n") && text.filter { $0 == "\n" }.count == 1, "one object on one line")
            #expect(text.filter { $0 == "{" }.count == text.filter { $0 == "}" }.count)
            #expect(text.split(separator: "{\"size\":").count - 1 == 40, "one entry per class")
            #expect(text.contains("{\"size\":48,\"allocations\":"))
            #expect(text.contains("\"purge_delay_ms\":1000,\"background_thread\":true,"))
            for block in blocks { binned_free(block) }
        }
    }
}
