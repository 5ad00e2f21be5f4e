// Every row of the spec's bad-input table (section 9): typed errors for requests and
// resources, a counted failure for a refused madvise, and precondition traps (exit tests)
// for programmer errors.

import AllocCore
import AllocTestSupport
import Glibc
import LargeAlloc
import Testing

struct Empty {}

@Suite("Bad input")
struct BadInputTests {
    @Test("a request above the largest class: .tooLarge")
    func tooLarge() throws {
        let allocator = try LargeAllocator(configuration: testConfiguration())
        let maximum = LargeAllocator.maximumRegionSize
        #expect(throws: LargeAllocError.tooLarge(byteCount: maximum + 1)) {
            _ = try allocator.allocate(UInt8.self, capacity: maximum + 1)
        }
        #expect(throws: LargeAllocError.tooLarge(byteCount: maximum * 2)) {
            _ = try allocator.allocate(UInt64.self, capacity: maximum / 4)
        }
        #expect(totals(allocator.statistics()).chunks == 0, "a refused request mapped a chunk")
    }

    @Test("count × stride overflows: .sizeOverflow")
    func sizeOverflow() throws {
        let allocator = try LargeAllocator(configuration: testConfiguration())
        #expect(throws: LargeAllocError.sizeOverflow(capacity: Int.max / 4, stride: 8)) {
            _ = try allocator.allocate(UInt64.self, capacity: Int.max / 4)
        }
        #expect(throws: LargeAllocError.sizeOverflow(capacity: Int.max, stride: 2)) {
            _ = try allocator.allocate(UInt16.self, capacity: Int.max)
        }
    }

    @Test("a full region: push hands the element back, isFull and freeCapacity tell beforehand")
    func fullRegionPush() throws {
        let allocator = try LargeAllocator(configuration: testConfiguration())
        var region = try allocator.allocate(UInt64.self, capacity: 1)
        let capacity = region.capacity
        let (emptyFree, emptyFull) = (region.freeCapacity, region.isFull)
        #expect(emptyFree == capacity && !emptyFull)
        region.append(count: capacity - 2, repeating: 1)
        let stored = region.push(2)
        #expect(stored == nil, "push on a region with room stores the element")
        region.append(3)
        let (fullFree, full) = (region.freeCapacity, region.isFull)
        #expect(fullFree == 0 && full)
        let handedBack = region.push(4)
        #expect(handedBack == 4, "push on a full region hands the element back")
        let (count, last) = (region.count, region[capacity - 1])
        #expect(count == capacity && last == 3, "the full region is unchanged")
    }

    @Test("push hands a class instance back alive, never deinitialized behind the caller's back")
    func fullRegionPushKeepsObject() throws {
        let tally = DeinitTally(capacity: 2)
        let allocator = try LargeAllocator(configuration: testConfiguration())
        var region = try allocator.allocate(TrackedObject.self, capacity: 1)
        let filler = TrackedObject(0, tally)
        region.append(count: region.capacity, repeating: filler)
        let returned = region.push(TrackedObject(1, tally))
        #expect(returned?.id == 1 && tally.died == 0)
        _ = consume returned
        #expect(tally.count(1) == 1, "the handed-back element dies with the caller's copy")
    }

    @Test(
        "a directory that does not exist, is a file, or cannot hold files: .io, nothing left behind",
        arguments: ["missing", "file", "/proc/self"])
    func badDirectory(kind: String) throws {
        try withTemporaryDirectory { parent in
            let directory: String
            switch kind {
            case "missing": directory = parent + "/missing"
            case "file":
                directory = parent + "/plain"
                let descriptor = open(directory, O_CREAT | O_WRONLY, 0o600)
                close(descriptor)
            default: directory = kind
            }
            let entriesBefore = directoryEntries(parent)
            var configuration = testConfiguration()
            configuration.backing = .file(directory: directory)
            #expect {
                _ = try LargeAllocator(configuration: configuration)
            } throws: { error in
                guard case .io(let systemError) = error as? LargeAllocError else { return false }
                return systemError.operation == .temporaryFile
            }
            // Reconfiguring to a bad directory is refused too, and the old backing stays.
            let allocator = try LargeAllocator(configuration: testConfiguration())
            #expect(throws: LargeAllocError.self) { try allocator.reconfigure(configuration) }
            #expect(allocator.configuration.backing == .anonymous(hugePages: false))
            _ = try allocator.allocate(UInt8.self, capacity: 1)
            #expect(directoryEntries(parent) == entriesBefore, "files left behind in \(parent)")
            #expect(mappedFiles(under: directory).isEmpty)
        }
    }

    @Test("the worker's madvise failing: counted, the regions stay dirty and usable")
    func workerAdviceFails() throws {
        // MADV_REMOVE on anonymous private memory: the kernel answers EINVAL.
        var configuration = testConfiguration(threadCacheBytes: 0, worker: .milliseconds(5))
        configuration.clearAdvice = .remove
        let allocator = try LargeAllocator(configuration: configuration)
        do {
            var region = try allocator.allocate(UInt64.self, capacity: 1000)
            fill(&region, count: 1000, tag: 5)
        }
        let failed = eventually { allocator.statistics().sizeClasses[0].clearFailures >= 2 }
        // Stopped (and joined) before the pools are read: a running worker holds the region
        // off the dirty pool while its madvise fails, and a read then finds no dirty region.
        configuration.backgroundInterval = nil
        try allocator.reconfigure(configuration)
        let statistics = allocator.statistics()
        #expect(failed, "\(statistics.sizeClasses[0])")
        #expect(statistics.lastClearError == EINVAL)
        #expect(statistics.sizeClasses[0].dirtyRegions == 1 && statistics.sizeClasses[0].backgroundClears == 0)
        var again = try allocator.allocate(UInt64.self, capacity: 1000)
        fill(&again, count: 1000, tag: 6)
        let intact = matches(again, tag: 6)
        #expect(intact)
    }

    @Test("the kernel refusing a chunk: .outOfMemory with its errno, and the allocator still works")
    func kernelRefusesChunk() async {
        // In a child process whose address space is capped at 16 GiB, a 64 GiB chunk cannot
        // be reserved.
        await #expect(processExitsWith: .success) {
            var limit = rlimit(rlim_cur: 16 << 30, rlim_max: 16 << 30)
            precondition(setrlimit(Int32(RLIMIT_AS.rawValue), &limit) == 0, "setrlimit failed")
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            do throws(LargeAllocError) {
                _ = try allocator.allocate(UInt8.self, capacity: LargeAllocator.maximumRegionSize)
                exit(1)
            } catch .outOfMemory(let error) {
                precondition(error.code == ENOMEM && error.operation == .map, "unexpected \(error)")
            } catch {
                exit(2)
            }
            precondition(totals(allocator.statistics()).chunks == 0)
            let small = try! allocator.allocate(UInt8.self, capacity: 1)
            precondition(small.capacity == 64 << 10)
            exit(0)
        }
    }

    // Programmer errors: a trap with a message.

    @Test("capacity zero traps, naming the capacity")
    func zeroCapacity() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            _ = try? allocator.allocate(UInt64.self, capacity: 0)
        }
        expectTrap(result, mentioning: "capacity 0: the capacity must be at least 1")
    }

    @Test("a negative capacity traps, naming the capacity")
    func negativeCapacity() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            _ = try? allocator.allocate(UInt64.self, capacity: Int.min)
        }
        expectTrap(result, mentioning: "capacity \(Int.min): the capacity must be at least 1")
    }

    @Test("a zero-size element type traps (an empty struct)")
    func zeroSizeStruct() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            _ = try? allocator.allocate(Empty.self, capacity: 10)
        }
        expectTrap(result, mentioning: "allocate(Empty): zero-size types need no memory")
    }

    @Test("a zero-size element type traps (Void)")
    func zeroSizeVoid() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            _ = try? allocator.allocate(Void.self, capacity: 1)
        }
        expectTrap(result, mentioning: "zero-size types need no memory")
    }

    @Test("append to a full region traps")
    func appendToFullRegion() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            var region = try! allocator.allocate(UInt64.self, capacity: 1)
            region.append(count: region.capacity, repeating: 1)
            region.append(2)
        }
        expectTrap(result, mentioning: "Region.append: the region is full (capacity 8192)")
    }

    @Test("append(count:repeating:) that does not fit traps before storing")
    func appendCountPastCapacity() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            var region = try! allocator.allocate(UInt64.self, capacity: 1)
            region.append(1)
            region.append(count: region.capacity, repeating: 3)
        }
        expectTrap(result, mentioning: "Region.append(count: 8192): 8192 elements do not fit in the 8191 free")
    }

    @Test("append(contentsOf:) that does not fit traps before storing")
    func appendContentsPastCapacity() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            var region = try! allocator.allocate(UInt64.self, capacity: 1)
            region.append(count: region.capacity - 1, repeating: 1)
            [4, 5].withUnsafeBufferPointer { region.append(contentsOf: $0) }
        }
        expectTrap(result, mentioning: "Region.append(contentsOf:): 2 elements do not fit in the 1 free")
    }

    @Test("append(minimumFreeCapacity:) with a negative capacity traps")
    func negativeMinimumFreeCapacity() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            var region = try! allocator.allocate(UInt64.self, capacity: 10)
            region.append(minimumFreeCapacity: -1) { _ in }
        }
        expectTrap(result, mentioning: "Region.append(minimumFreeCapacity: -1): negative capacity")
    }

    @Test("append(minimumFreeCapacity:) asking for more than is free traps before the body runs")
    func minimumFreeCapacityPastCapacity() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            var region = try! allocator.allocate(UInt64.self, capacity: 1)
            region.append(1)
            region.append(minimumFreeCapacity: region.capacity) { _ in print("the body ran") }
        }
        expectTrap(
            result, mentioning: "Region.append(minimumFreeCapacity: 8192): 8192 elements do not fit in the 8191 free")
    }

    // The output span is bounded by the free capacity, and must stay the one the body was
    // given: the standard library traps otherwise (spec section 2, what the compiler checks).
    @Test("a write past the free capacity, or a replaced output span, traps in the standard library")
    func outputSpanMisuse() async {
        var result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            var region = try! allocator.allocate(UInt64.self, capacity: 1)
            region.append(minimumFreeCapacity: 0) { output in
                output.append(repeating: 0, count: output.capacity)
                output.append(1)
            }
        }
        expectTrap(result, mentioning: "OutputSpan capacity overflow")
        result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            var region = try! allocator.allocate(UInt64.self, capacity: 1)
            region.append(minimumFreeCapacity: 0) { output in output = OutputSpan() }
        }
        expectTrap(result, mentioning: "OutputSpan identity mismatch")
    }

    @Test("a span read past the initialized elements traps")
    func spanPastCount() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            var region = try! allocator.allocate(UInt64.self, capacity: 10)
            region.append(1)
            _ = region.span[1]
        }
        expectTrap(result, mentioning: "Index out of bounds")
    }

    @Test("subscript out of range traps")
    func subscriptOutOfRange() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            var region = try! allocator.allocate(Int.self, capacity: 10)
            region.append(1)
            _ = region[1]
        }
        expectTrap(result, mentioning: "Region index 1 out of range 0..<1")
    }

    @Test("prefetch outside the capacity traps")
    func prefetchOutOfRange() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            let region = try! allocator.allocate(Int.self, capacity: 10)
            region.prefetch(0..<(region.capacity + 1))
        }
        expectTrap(result, mentioning: "is outside the capacity")
    }

    @Test("removeLast on an empty region traps")
    func removeLastEmpty() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            var region = try! allocator.allocate(Int.self, capacity: 10)
            _ = region.removeLast()
        }
        expectTrap(result, mentioning: "removeLast() on an empty region")
    }

    @Test("append(count:) with a negative count traps")
    func negativeAppendCount() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            var region = try! allocator.allocate(Int.self, capacity: 10)
            region.append(count: -1, repeating: 0)
        }
        expectTrap(result, mentioning: "negative count")
    }

    @Test("configuration with a negative threadCacheBytes traps")
    func invalidConfiguration0() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var configuration = LargeAllocConfiguration()
            configuration.threadCacheBytes = -1
            _ = try? LargeAllocator(configuration: configuration)
        }
        expectTrap(result, mentioning: "negative threadCacheBytes -1")
    }

    @Test("configuration with backgroundBytesPerTick zero traps")
    func invalidConfiguration1() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var configuration = LargeAllocConfiguration()
            configuration.backgroundBytesPerTick = 0
            _ = try? LargeAllocator(configuration: configuration)
        }
        expectTrap(result, mentioning: "backgroundBytesPerTick must be positive")
    }

    @Test("configuration with initialChunkBytes zero traps")
    func invalidConfiguration2() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var configuration = LargeAllocConfiguration()
            configuration.initialChunkBytes = 0
            _ = try? LargeAllocator(configuration: configuration)
        }
        expectTrap(result, mentioning: "initialChunkBytes must be positive")
    }

    @Test("configuration with maximumChunkBytes below initialChunkBytes traps")
    func invalidConfiguration3() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var configuration = LargeAllocConfiguration()
            configuration.maximumChunkBytes = configuration.initialChunkBytes - 1
            _ = try? LargeAllocator(configuration: configuration)
        }
        expectTrap(result, mentioning: "is below initialChunkBytes")
    }

    @Test("configuration with growthDampener 63 traps")
    func invalidConfiguration4() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var configuration = LargeAllocConfiguration()
            configuration.growthDampener = 63
            _ = try? LargeAllocator(configuration: configuration)
        }
        expectTrap(result, mentioning: "growthDampener 63 is not in 0...62")
    }

    @Test(
        "configuration with a zero or sub-microsecond backgroundInterval traps (it would spin)",
        arguments: [Duration.zero, .nanoseconds(0.5), .nanoseconds(999)])
    func invalidConfiguration5(interval: Duration) async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            [interval = interval as Duration] in
            var configuration = LargeAllocConfiguration()
            configuration.backgroundInterval = interval
            _ = try? LargeAllocator(configuration: configuration)
        }
        expectTrap(result, mentioning: "backgroundInterval must be positive (1 µs at least)")
    }

    @Test("configuration with a negative chunkIdleAge traps")
    func invalidConfiguration6() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var configuration = LargeAllocConfiguration()
            configuration.chunkIdleAge = .seconds(-1)
            _ = try? LargeAllocator(configuration: configuration)
        }
        expectTrap(result, mentioning: "negative chunkIdleAge")
    }

    @Test("reconfiguring with invalid figures traps too")
    func invalidReconfiguration() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            var configuration = allocator.configuration
            configuration.threadCacheBytes = -5
            try? allocator.reconfigure(configuration)
        }
        expectTrap(result, mentioning: "negative threadCacheBytes -5")
    }
}
