// The workloads, generic over the allocator so that each allocator gets its own
// specialized copy: the loop around an allocation costs the same for every column.
//
// Every result stays observable: each block is written to, and a checksum of what was
// written is returned and printed, so no allocation can be optimized away.

import AllocCore
import Glibc

/// What a workload needs from an allocator.
public protocol BenchAllocator: Sendable {
    /// A block of at least `byteCount` bytes, 16-byte aligned. Traps on exhaustion: a
    /// benchmark that ran out of memory has no result.
    func allocate(_ byteCount: Int) -> UnsafeMutableRawPointer
    /// Frees a block from `allocate` with the size it was asked with.
    func deallocate(_ pointer: UnsafeMutableRawPointer, byteCount: Int)
    /// A zero-filled block of at least `byteCount` bytes (`calloc` where the allocator has
    /// one, so that it may skip clearing memory it knows is fresh).
    func allocateZeroed(_ byteCount: Int) -> UnsafeMutableRawPointer
    /// Frees a block telling the allocator its size, as C23's `free_sized` does; an
    /// allocator without a sized free frees it as `deallocate` does.
    func deallocateSized(_ pointer: UnsafeMutableRawPointer, byteCount: Int)
    /// Whether `deallocateSized` is a sized free of the allocator's own (else it is `free`).
    var hasSizedFree: Bool { get }
}

extension BenchAllocator {
    public func allocateZeroed(_ byteCount: Int) -> UnsafeMutableRawPointer {
        let block = allocate(byteCount)
        memset(block, 0, byteCount)
        return block
    }

    public func deallocateSized(_ pointer: UnsafeMutableRawPointer, byteCount: Int) {
        deallocate(pointer, byteCount: byteCount)
    }

    public var hasSizedFree: Bool { false }
}

/// The process's `malloc` and `free`, found with `dlsym` at run time. The compiler cannot
/// see which function it calls, so it cannot delete a malloc/free pair (LLVM deletes
/// a direct pair it sees as unused: GUIDE section 3).
public struct ProcessMalloc: BenchAllocator, @unchecked Sendable {
    typealias Allocate = @convention(c) (Int) -> UnsafeMutableRawPointer?
    typealias Free = @convention(c) (UnsafeMutableRawPointer?) -> Void
    typealias AllocateZeroed = @convention(c) (Int, Int) -> UnsafeMutableRawPointer?
    typealias FreeSized = @convention(c) (UnsafeMutableRawPointer?, Int) -> Void

    let allocateFunction: Allocate
    let freeFunction: Free
    let allocateZeroedFunction: AllocateZeroed
    /// C23's `free_sized`, when the library that provides `malloc` exports it.
    let freeSizedFunction: FreeSized?
    /// The address of the `malloc` this process resolves to.
    public let mallocAddress: UnsafeMutableRawPointer

    public init() {
        guard let allocate = dlsym(nil, "malloc"), let free = dlsym(nil, "free"), let calloc = dlsym(nil, "calloc")
        else {
            fatalError("dlsym found no malloc/free/calloc in this process")
        }
        mallocAddress = allocate
        allocateFunction = unsafeBitCast(allocate, to: Allocate.self)
        freeFunction = unsafeBitCast(free, to: Free.self)
        allocateZeroedFunction = unsafeBitCast(calloc, to: AllocateZeroed.self)
        // A free_sized from another object than malloc's (a later glibc's, under a preloaded
        // peer that lacks it) would free the peer's blocks into the wrong allocator.
        if let freeSized = dlsym(nil, "free_sized"),
            Self.library(exporting: "free_sized", at: freeSized) == Self.library(exporting: "malloc", at: allocate)
        {
            freeSizedFunction = unsafeBitCast(freeSized, to: FreeSized.self)
        } else {
            freeSizedFunction = nil
        }
    }

    /// Which process allocator's library exports `symbol` at `address`, by soname; nil
    /// when none does (BinnedMalloc's symbols are the executable's own). Glibc's module
    /// does not declare `dladdr`, so the known libraries are asked instead.
    static func library(exporting symbol: String, at address: UnsafeMutableRawPointer) -> String? {
        ProcessAllocator.allCases.compactMap(\.soname).first { soname in
            guard let handle = dlopen(soname, RTLD_NOW | RTLD_NOLOAD) else { return false }
            defer { dlclose(handle) }
            return dlsym(handle, symbol) == address
        }
    }

    /// Whether the process's `malloc` is the one exported by `library` (a soname already
    /// loaded, such as "libc.so.6"): proof of which allocator a worker measures.
    public func isProvided(by library: String) -> Bool {
        guard let handle = dlopen(library, RTLD_NOW | RTLD_NOLOAD) else { return false }
        defer { dlclose(handle) }
        return dlsym(handle, "malloc") == mallocAddress
    }

    @inline(__always)
    public func allocate(_ byteCount: Int) -> UnsafeMutableRawPointer {
        guard let pointer = allocateFunction(byteCount) else { fatalError("malloc(\(byteCount)) returned NULL") }
        return pointer
    }

    @inline(__always)
    public func deallocate(_ pointer: UnsafeMutableRawPointer, byteCount: Int) {
        freeFunction(pointer)
    }

    @inline(__always)
    public func allocateZeroed(_ byteCount: Int) -> UnsafeMutableRawPointer {
        guard let pointer = allocateZeroedFunction(1, byteCount) else {
            fatalError("calloc(1, \(byteCount)) returned NULL")
        }
        return pointer
    }

    @inline(__always)
    public func deallocateSized(_ pointer: UnsafeMutableRawPointer, byteCount: Int) {
        if let freeSizedFunction { freeSizedFunction(pointer, byteCount) } else { freeFunction(pointer) }
    }

    public var hasSizedFree: Bool { freeSizedFunction != nil }
}

/// One timed run: how long the measured part took and how many operations it did.
public struct Measurement: Sendable, Equatable {
    public var nanoseconds: UInt64
    public var operations: Int
    /// A sum over what the workload wrote into its blocks: printed so that it is used.
    public var checksum: UInt64
    /// Figures besides the time (latency percentiles, a background phase's duration...),
    /// keyed as the workload's family lists them in `Workload.Family.extras`.
    public var extras: [String: Double]
    /// The peak RSS to report, when it is not the worker's own (a program the worker ran).
    public var peakResidentBytes: Int?

    public init(
        nanoseconds: UInt64, operations: Int, checksum: UInt64, extras: [String: Double] = [:],
        peakResidentBytes: Int? = nil
    ) {
        self.nanoseconds = nanoseconds
        self.operations = operations
        self.checksum = checksum
        self.extras = extras
        self.peakResidentBytes = peakResidentBytes
    }
}

/// Random sizes and slots, generated before the clock starts so the generator's cost is
/// not measured. Sizes are log-uniform: as many 8–16 B blocks as 8–16 KiB ones, which
/// is closer to real programs than a uniform draw (whose mean would be ~8 KiB).
struct RandomTable {
    static let count = 1 << 16
    var sizes: [Int]
    var slots: [Int]

    init(seed: UInt64, minimumSize: Int, maximumSize: Int, slotCount: Int) {
        var generator = SplitMix64(seed: seed)
        func next() -> UInt64 { generator.next() }
        let low = log2(Double(minimumSize))
        let high = log2(Double(maximumSize))
        sizes = (0..<Self.count).map { _ in
            let unit = Double(next() >> 11) / Double(1 << 53)
            return min(maximumSize, max(minimumSize, Int(exp2(low + unit * (high - low)))))
        }
        slots = (0..<Self.count).map { _ in Int(next() % UInt64(max(1, slotCount))) }
    }
}

/// Uniform random sizes and slots for the field's workload shapes (thread churn, random
/// slots, big blocks), drawn before the clock starts into memory of their own so that the
/// loop reads them without bounds checks; draw `n` is entry `n` modulo ``count``.
struct UniformDraws: @unchecked Sendable {
    static let count = 1 << 16
    let sizes: UnsafeMutablePointer<Int>
    let slots: UnsafeMutablePointer<Int>

    init(seed: UInt64, sizes range: ClosedRange<Int>, slotCount: Int) {
        var generator = SplitMix64(seed: seed)
        sizes = .allocate(capacity: Self.count)
        slots = .allocate(capacity: Self.count)
        for index in 0..<Self.count {
            (sizes + index).initialize(to: Int.random(in: range, using: &generator))
            (slots + index).initialize(to: Int.random(in: 0..<max(1, slotCount), using: &generator))
        }
    }

    @inline(__always) func size(_ draw: Int) -> Int { sizes[draw & (Self.count - 1)] }
    @inline(__always) func slot(_ draw: Int) -> Int { slots[draw & (Self.count - 1)] }

    func deallocate() {
        sizes.deallocate()
        slots.deallocate()
    }
}

/// How long the warm-up lasts at least: long enough for the CPU to leave its idle clock
/// and for the allocator to map what the workload needs, so the first repetition of a
/// cell is not slower than the others.
let warmUpNanoseconds: UInt64 = 50_000_000

/// Runs `workload` on `allocator`: warm-up runs at a tenth of the operations until
/// `warmUpNanoseconds` have passed (at least one), then the timed run; or the timed run
/// alone where the workload does not warm up (`Workload.warmsUp`).
public func measure<A: BenchAllocator>(_ workload: Workload, on allocator: A, scale: Scale) -> Measurement {
    measure(workload, scale: scale) { operations in run(workload.kind, on: allocator, operations: operations) }
}

/// `body` at `workload`'s operations for `scale`: after the warm-up rule of
/// `measureWithWarmUp`, or once, in a process that has run nothing of it yet, where the
/// workload does not warm up (`Workload.warmsUp`).
func measure(_ workload: Workload, scale: Scale, _ body: (Int) -> Measurement) -> Measurement {
    let operations = workload.operations(at: scale)
    guard workload.warmsUp else { return body(operations) }
    return measureWithWarmUp(operations: operations, scale: scale, body)
}

/// The warm-up rule of every workload, suites included: `body(operations / 10)` until
/// `warmUpNanoseconds` have passed in a full run (once in a quick run), then the timed
/// `body(operations)`, whose measurement is returned.
public func measureWithWarmUp(operations: Int, scale: Scale, _ body: (Int) -> Measurement) -> Measurement {
    let warmUpStart = SystemInfo.monotonicNanoseconds()
    repeat {
        _ = body(max(1, operations / 10))
    } while scale == .full && SystemInfo.monotonicNanoseconds() - warmUpStart < warmUpNanoseconds
    return body(operations)
}

/// `workload`'s floor (the writes-only column, which only rows that have a floor list):
/// its writes with no allocator in the loop, after the same warm-up rule.
func measureFloor(_ workload: Workload, scale: Scale) -> Measurement {
    guard case .falseSharing(let threads, _, let writes, _) = workload.kind else {
        preconditionFailure("\(workload.name) has no writes-only floor")
    }
    return measure(workload, scale: scale) { operations in
        falseSharingFloor(threads: threads, writes: writes, operations: operations)
    }
}

@inline(never)
func run<A: BenchAllocator>(_ kind: WorkloadKind, on allocator: A, operations: Int) -> Measurement {
    switch kind {
    case .pairs(let size):
        return pairs(allocator, size: size, operations: operations)
    case .fifo(let live, let size):
        return fifo(allocator, live: live, size: size, operations: operations)
    case .randomWorkingSet(let threads, let workingSet, let minimumSize, let maximumSize):
        return randomWorkingSet(
            allocator, threads: threads, workingSet: workingSet, minimumSize: minimumSize,
            maximumSize: maximumSize, operations: operations)
    case .producerConsumer(let minimumSize, let maximumSize, let queueCapacity):
        return producerConsumer(
            allocator, minimumSize: minimumSize, maximumSize: maximumSize, queueCapacity: queueCapacity,
            operations: operations)
    case .batch(let count, let minimumSize, let maximumSize):
        return batch(
            allocator, count: count, minimumSize: minimumSize, maximumSize: maximumSize, operations: operations)
    case .threadChurn(let threads, let slots, let roundLength, let minimumSize, let maximumSize, let sized):
        return threadChurn(
            allocator, threads: threads, slots: slots, roundLength: roundLength, minimumSize: minimumSize,
            maximumSize: maximumSize, sized: sized, operations: operations)
    case .falseSharing(let threads, let objectSize, let writes, let passive):
        return falseSharing(
            allocator, threads: threads, objectSize: objectSize, writes: writes, passive: passive,
            operations: operations)
    case .randomSlots(let threads, let slots, let maximumSize):
        return randomSlots(allocator, threads: threads, slots: slots, maximumSize: maximumSize, operations: operations)
    case .bigBlocks(let live, let minimumSize, let maximumSize):
        return bigBlocks(
            allocator, live: live, minimumSize: minimumSize, maximumSize: maximumSize, operations: operations)
    case .burstIdle(let threads, let minimumSize, let maximumSize, let delayNanoseconds):
        return burstIdle(
            allocator, threads: threads, minimumSize: minimumSize, maximumSize: maximumSize,
            delayNanoseconds: delayNanoseconds, operations: operations)
    case .suite(let name):
        preconditionFailure("workload of suite \(name) run as a malloc-style workload")
    case .program(let arguments, _):
        preconditionFailure("the program \(arguments[0]) run as a malloc-style workload")
    }
}

/// Writes a byte derived from `value` into the block and returns it for the checksum.
@inline(__always)
func touch(_ block: UnsafeMutableRawPointer, _ value: Int) -> UInt64 {
    block.storeBytes(of: UInt8(truncatingIfNeeded: value), as: UInt8.self)
    return UInt64(block.load(as: UInt8.self))
}

@inline(never)
func pairs<A: BenchAllocator>(_ allocator: A, size: Int, operations: Int) -> Measurement {
    var checksum: UInt64 = 0
    let start = SystemInfo.monotonicNanoseconds()
    for index in 0..<operations {
        let block = allocator.allocate(size)
        checksum &+= touch(block, index)
        allocator.deallocate(block, byteCount: size)
    }
    let end = SystemInfo.monotonicNanoseconds()
    return Measurement(nanoseconds: end - start, operations: operations, checksum: checksum)
}

@inline(never)
func fifo<A: BenchAllocator>(_ allocator: A, live: Int, size: Int, operations: Int) -> Measurement {
    let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: live)
    defer { blocks.deallocate() }
    let rounds = max(1, operations / live)
    var checksum: UInt64 = 0
    let start = SystemInfo.monotonicNanoseconds()
    for _ in 0..<rounds {
        for index in 0..<live {
            let block = allocator.allocate(size)
            checksum &+= touch(block, index)
            (blocks + index).initialize(to: block)
        }
        for index in 0..<live {
            allocator.deallocate(blocks[index], byteCount: size)
        }
    }
    let end = SystemInfo.monotonicNanoseconds()
    return Measurement(nanoseconds: end - start, operations: rounds * live, checksum: checksum)
}

@inline(never)
func batch<A: BenchAllocator>(
    _ allocator: A, count: Int, minimumSize: Int, maximumSize: Int, operations: Int
)
    -> Measurement
{
    let table = RandomTable(seed: 7, minimumSize: minimumSize, maximumSize: maximumSize, slotCount: 1)
    let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: count)
    defer { blocks.deallocate() }
    let rounds = max(1, operations / count)
    var checksum: UInt64 = 0
    let start = SystemInfo.monotonicNanoseconds()
    table.sizes.withUnsafeBufferPointer { sizes in
        var drawn = 0
        for _ in 0..<rounds {
            for index in 0..<count {
                let block = allocator.allocate(sizes[drawn & (RandomTable.count - 1)])
                drawn &+= 1
                checksum &+= touch(block, index)
                (blocks + index).initialize(to: block)
            }
            var index = count
            while index > 0 {
                index -= 1
                allocator.deallocate(
                    blocks[index], byteCount: sizes[(drawn &- count &+ index) & (RandomTable.count - 1)])
            }
        }
    }
    let end = SystemInfo.monotonicNanoseconds()
    return Measurement(nanoseconds: end - start, operations: rounds * count, checksum: checksum)
}

/// A start line for threads: every thread waits until all are ready, then the clock
/// starts; each thread notes when it finished its measured part.
final class StartLine: Sendable {
    let ready = AtomicCounterBox()
    let started = AtomicCounterBox()
    let startTime = AtomicCounterBox()
    let latestEnd = AtomicCounterBox()
    let threads: Int

    init(threads: Int) { self.threads = threads }

    /// Called by each worker thread; the last one to arrive runs `lastArrival` while the
    /// others wait (a reading between two timed phases), then starts the clock.
    func arriveAndWait(lastArrival: () -> Void = {}) {
        if ready.add(1) == threads - 1 {
            lastArrival()
            startTime.store(Int(SystemInfo.monotonicNanoseconds()))
            started.store(1)
        } else {
            while started.load() == 0 { spinLoopHint() }
        }
    }

    func finish() { latestEnd.raise(to: Int(SystemInfo.monotonicNanoseconds())) }

    var elapsed: UInt64 { UInt64(latestEnd.load() - startTime.load()) }
}

/// An `Int` that threads share, in memory of its own.
final class AtomicCounterBox: @unchecked Sendable {
    let memory = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
    let word: AtomicWord
    init() { word = AtomicWord(initializingAt: memory, to: 0) }
    deinit { memory.deallocate() }
    /// Adds and returns the old value.
    func add(_ delta: Int) -> Int { word.wrappingAdd(delta, ordering: .acquiringAndReleasing) }
    func load() -> Int { word.load(ordering: .acquiring) }
    func store(_ value: Int) { word.store(value, ordering: .releasing) }
    func raise(to value: Int) {
        var current = word.load(ordering: .relaxed)
        while current < value {
            let (exchanged, original) = word.compareExchange(
                expected: current, desired: value, ordering: .acquiringAndReleasing)
            if exchanged { return }
            current = original
        }
    }
}

/// Runs `body(threadIndex, startLine)` on `count` threads and waits for them.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int, StartLine) -> Void) -> StartLine {
    let line = StartLine(threads: count)
    let threads = (0..<count).map { index in
        do { return try OSThread.spawn { body(index, line) } } catch { fatalError("cannot start a thread: \(error)") }
    }
    for thread in threads { thread.join() }
    return line
}

@inline(never)
func randomWorkingSet<A: BenchAllocator>(
    _ allocator: A, threads: Int, workingSet: Int, minimumSize: Int, maximumSize: Int, operations: Int
) -> Measurement {
    let perThread = max(1, operations / threads)
    let checksum = AtomicCounterBox()
    let line = onThreads(threads) { thread, line in
        let table = RandomTable(
            seed: UInt64(thread + 1), minimumSize: minimumSize, maximumSize: maximumSize, slotCount: workingSet)
        let blocks = UnsafeMutablePointer<UnsafeMutableRawPointer>.allocate(capacity: workingSet)
        let sizes = UnsafeMutablePointer<Int>.allocate(capacity: workingSet)
        var sum: UInt64 = 0
        for slot in 0..<workingSet {
            let size = table.sizes[slot & (RandomTable.count - 1)]
            (blocks + slot).initialize(to: allocator.allocate(size))
            (sizes + slot).initialize(to: size)
        }
        table.sizes.withUnsafeBufferPointer { randomSizes in
            table.slots.withUnsafeBufferPointer { randomSlots in
                line.arriveAndWait()
                for index in 0..<perThread {
                    let slot = randomSlots[index & (RandomTable.count - 1)]
                    let size = randomSizes[(index &+ 7919) & (RandomTable.count - 1)]
                    allocator.deallocate(blocks[slot], byteCount: sizes[slot])
                    let block = allocator.allocate(size)
                    sum &+= touch(block, index)
                    blocks[slot] = block
                    sizes[slot] = size
                }
                line.finish()
            }
        }
        for slot in 0..<workingSet { allocator.deallocate(blocks[slot], byteCount: sizes[slot]) }
        blocks.deallocate()
        sizes.deallocate()
        _ = checksum.add(Int(truncatingIfNeeded: sum))
    }
    return Measurement(nanoseconds: line.elapsed, operations: perThread * threads, checksum: UInt64(checksum.load()))
}

/// A single-producer single-consumer queue of block pointers; head and tail on their own
/// cache lines.
final class BlockQueue: @unchecked Sendable {
    let capacity: Int
    let memory: UnsafeMutableRawPointer
    let head: AtomicWord
    let tail: AtomicWord
    let slots: UnsafeMutablePointer<UnsafeMutableRawPointer?>

    init(capacity: Int) {
        self.capacity = capacity
        memory = UnsafeMutableRawPointer.allocate(byteCount: 128 + capacity * 8, alignment: 64)
        head = AtomicWord(initializingAt: memory, to: 0)
        tail = AtomicWord(initializingAt: memory + 64, to: 0)
        slots = (memory + 128).bindMemory(to: UnsafeMutableRawPointer?.self, capacity: capacity)
        slots.initialize(repeating: nil, count: capacity)
    }

    deinit { memory.deallocate() }
}

@inline(never)
func producerConsumer<A: BenchAllocator>(
    _ allocator: A, minimumSize: Int, maximumSize: Int, queueCapacity: Int, operations: Int
) -> Measurement {
    let queue = BlockQueue(capacity: queueCapacity)
    let table = RandomTable(seed: 42, minimumSize: minimumSize, maximumSize: maximumSize, slotCount: 1)
    let checksum = AtomicCounterBox()
    let line = onThreads(2) { thread, line in
        table.sizes.withUnsafeBufferPointer { sizes in
            var sum: UInt64 = 0
            line.arriveAndWait()
            if thread == 0 {
                var tail = 0
                for index in 0..<operations {
                    let block = allocator.allocate(sizes[index & (RandomTable.count - 1)])
                    sum &+= touch(block, index)
                    while tail - queue.head.load(ordering: .acquiring) == queue.capacity { spinLoopHint() }
                    queue.slots[tail % queue.capacity] = block
                    tail += 1
                    queue.tail.store(tail, ordering: .releasing)
                }
            } else {
                var head = 0
                for _ in 0..<operations {
                    while queue.tail.load(ordering: .acquiring) == head { spinLoopHint() }
                    let block = queue.slots[head % queue.capacity]!
                    sum &+= UInt64(block.load(as: UInt8.self))
                    allocator.deallocate(block, byteCount: sizes[head & (RandomTable.count - 1)])
                    head += 1
                    queue.head.store(head, ordering: .releasing)
                }
                line.finish()
            }
            _ = checksum.add(Int(truncatingIfNeeded: sum))
        }
    }
    return Measurement(nanoseconds: line.elapsed, operations: operations, checksum: UInt64(checksum.load()))
}
