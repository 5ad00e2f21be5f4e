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
    @Test("capacity zero or negative: .invalidCapacity", arguments: [0, -1, Int.min])
    func invalidCapacity(capacity: Int) throws {
        let allocator = try LargeAllocator(configuration: testConfiguration())
        #expect(throws: LargeAllocError.invalidCapacity(capacity)) {
            _ = try allocator.allocate(UInt64.self, capacity: capacity)
        }
    }

    @Test("zero-sized element types: .zeroSizedElement")
    func zeroSizedElement() throws {
        let allocator = try LargeAllocator(configuration: testConfiguration())
        #expect(throws: LargeAllocError.zeroSizedElement) { _ = try allocator.allocate(Empty.self, capacity: 10) }
        #expect(throws: LargeAllocError.zeroSizedElement) { _ = try allocator.allocate(Void.self, capacity: 1) }
    }

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
        #expect(totals(allocator.statistics()).areas == 0, "a refused request mapped an area")
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

    @Test("appending past the capacity: .capacityExceeded, region unchanged")
    func capacityExceeded() throws {
        let allocator = try LargeAllocator(configuration: testConfiguration())
        var region = try allocator.allocate(UInt64.self, capacity: 1)
        let capacity = region.capacity
        try region.append(count: capacity - 1, repeating: 1)
        try region.append(2)
        #expect(throws: LargeAllocError.capacityExceeded(capacity: capacity)) { try region.append(3) }
        #expect(throws: LargeAllocError.capacityExceeded(capacity: capacity)) {
            try region.append(count: 1, repeating: 3)
        }
        #expect(throws: LargeAllocError.capacityExceeded(capacity: capacity)) {
            try [4].withUnsafeBufferPointer { buffer throws(LargeAllocError) in try region.append(contentsOf: buffer) }
        }
        let (count, last) = (region.count, region[capacity - 1])
        #expect(count == capacity && last == 2)
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
            try fill(&region, count: 1000, tag: 5)
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
        try fill(&again, count: 1000, tag: 6)
        let intact = matches(again, tag: 6)
        #expect(intact)
    }

    @Test("the kernel refusing an area: .outOfMemory with its errno, and the allocator still works")
    func kernelRefusesArea() async {
        // In a child process whose address space is capped at 16 GiB, a 64 GiB area cannot
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
            precondition(totals(allocator.statistics()).areas == 0)
            let small = try! allocator.allocate(UInt8.self, capacity: 1)
            precondition(small.capacity == 64 << 10)
            exit(0)
        }
    }

    // Programmer errors: a trap with a message.

    @Test("subscript out of range traps")
    func subscriptOutOfRange() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let allocator = try! LargeAllocator(configuration: testConfiguration())
            var region = try! allocator.allocate(Int.self, capacity: 10)
            try! region.append(1)
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
            try! region.append(count: -1, repeating: 0)
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

    @Test("configuration with initialAreaBytes zero traps")
    func invalidConfiguration2() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var configuration = LargeAllocConfiguration()
            configuration.initialAreaBytes = 0
            _ = try? LargeAllocator(configuration: configuration)
        }
        expectTrap(result, mentioning: "initialAreaBytes must be positive")
    }

    @Test("configuration with maximumAreaBytes below initialAreaBytes traps")
    func invalidConfiguration3() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var configuration = LargeAllocConfiguration()
            configuration.maximumAreaBytes = configuration.initialAreaBytes - 1
            _ = try? LargeAllocator(configuration: configuration)
        }
        expectTrap(result, mentioning: "is below initialAreaBytes")
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

    @Test("configuration with a zero backgroundInterval traps")
    func invalidConfiguration5() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var configuration = LargeAllocConfiguration()
            configuration.backgroundInterval = .zero
            _ = try? LargeAllocator(configuration: configuration)
        }
        expectTrap(result, mentioning: "backgroundInterval must be positive")
    }

    @Test("configuration with a negative areaIdleAge traps")
    func invalidConfiguration6() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var configuration = LargeAllocConfiguration()
            configuration.areaIdleAge = .seconds(-1)
            _ = try? LargeAllocator(configuration: configuration)
        }
        expectTrap(result, mentioning: "negative areaIdleAge")
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
