// LargeAlloc's workloads: lgalloc's throughput benchmark (2 MiB regions allocated and
// freed at 1 and 2 threads, with and without touching every 4 KiB page) and a mixed-size
// workload (random 5–25 MiB, at most 20 live). Columns: glibc's and jemalloc's malloc/free
// of the same sizes through function pointers, plain mmap/munmap, LargeAlloc, and the
// writes alone into memory mapped once (the floor: what touching the pages costs).

import AllocCore
import Glibc
import LargeAlloc

enum LargeAllocSuite: BenchSuite {
    static let name = "LargeAlloc"

    /// mmap/munmap of each block (through AllocCore), in a glibc process.
    static let mmapColumn = AllocatorColumn(name: "large-mmap", process: .glibc)
    /// LargeAlloc regions, in a glibc process.
    static let largeAllocColumn = AllocatorColumn(name: "LargeAlloc", process: .glibc)
    /// `.writesOnly` is the floor: the same writes into one block of the largest size,
    /// mapped and touched before the timed run.
    static let columns: [AllocatorColumn] = [.glibc, .jemalloc, mmapColumn, largeAllocColumn, .writesOnly]

    static let regionFamily = Workload.Family(
        title: "Large regions: 2 MiB allocate and free (lgalloc's benchmark)",
        unit:
            "ns per allocate+free of a 2 MiB block, wall time over all threads with no clock in the loop (\"touch\": one byte written per 4 KiB page in between; else one byte); ops/s from that time; latencies from a second pass timing each allocate+free alone; writes-only: the same writes into a block mapped once, the floor no allocator can beat",
        extras: [Workload.Family.Extra(key: "opsPerSecond", header: "ops/s")] + Workload.Family.Extra.latencyPercentiles
    )

    static let mixedFamily = Workload.Family(
        title: "Large regions: mixed sizes",
        unit:
            "ns per allocation: random 5–25 MiB, at most 20 live (a random live block freed first), one byte written per 4 KiB page (writes-only: the same writes into one 25 MiB block, no allocation); retained: RSS above the start once all is freed and 250 ms (two LargeAlloc worker intervals and the ticks' time) passed",
        extras: [Workload.Family.Extra(key: "retainedMiB", header: "retained MiB")])

    /// What a workload does.
    enum Shape: Sendable {
        case regions(threads: Int, touch: Bool)
        case mixed
    }

    /// Operations of a full run, sized so that the suite's full run (five columns, five
    /// repetitions) stays near two minutes: mmap/munmap of a touched 2 MiB block costs about
    /// 0.9 ms here, and a touched 5–25 MiB block 3 to 10 ms in every column but LargeAlloc.
    /// The mixed workload has 2,000 allocations; 500 keep the run within budget.
    static var workloads: [any SuiteWorkload] {
        [
            LargeWorkload(name: "large-2mib-t1", shape: .regions(threads: 1, touch: false), operations: 100_000),
            LargeWorkload(name: "large-2mib-t2", shape: .regions(threads: 2, touch: false), operations: 100_000),
            LargeWorkload(name: "large-2mib-touch-t1", shape: .regions(threads: 1, touch: true), operations: 2_000),
            LargeWorkload(name: "large-2mib-touch-t2", shape: .regions(threads: 2, touch: true), operations: 2_000),
            LargeWorkload(name: "large-mixed-5-25mib", shape: .mixed, operations: 500),
        ]
    }

    /// A workload of this suite: its row, and the shape its body runs for every column.
    struct LargeWorkload: SuiteWorkload {
        let workload: Workload
        let shape: Shape

        init(name: String, shape: Shape, operations: Int) {
            let family: Workload.Family
            switch shape {
            case .regions: family = regionFamily
            case .mixed: family = mixedFamily
            }
            workload = Workload(
                name: name, family: family, kind: .suite(LargeAllocSuite.name), operations: operations,
                columns: columns)
            self.shape = shape
        }

        func measure(column: AllocatorColumn, scale: Scale) -> Measurement {
            let operations = workload.operations(at: scale)
            let startResident = SystemInfo.currentResidentBytes ?? 0
            let source = LargeAllocSuite.source(for: column)
            switch shape {
            case .regions(let threads, let touch):
                return measureWithWarmUp(operations: operations, scale: scale) { count in
                    regions(source, threads: threads, touch: touch, operations: count)
                }
            case .mixed:
                var result = measureWithWarmUp(operations: operations, scale: scale) { count in
                    mixed(source, operations: count)
                }
                usleep(250_000)
                let retained = (SystemInfo.currentResidentBytes ?? 0) - startResident
                result.extras["retainedMiB"] = Double(max(0, retained)) / Double(1 << 20)
                return result
            }
        }
    }

    /// The configuration of the LargeAlloc column: anonymous chunks without huge-page advice
    /// (with it, the mixed workload ran 6× slower here: huge-page faults and splits cost
    /// more than the TLB misses they save), a 32 MiB thread cache (lgalloc's default), a worker every 100 ms that may clear
    /// 512 MiB per class and tick with `MADV_DONTNEED` (so RSS falls at once), chunks
    /// unmapped after 1 s idle.
    static var benchConfiguration: LargeAllocConfiguration {
        var configuration = LargeAllocConfiguration()
        configuration.backing = .anonymous(hugePages: false)
        configuration.threadCacheBytes = 32 << 20
        configuration.backgroundInterval = .milliseconds(100)
        configuration.backgroundBytesPerTick = 512 << 20
        configuration.clearAdvice = .dontNeed
        configuration.chunkIdleAge = .seconds(1)
        return configuration
    }

    /// Where `column`'s blocks come from.
    static func source(for column: AllocatorColumn) -> LargeSource {
        switch column {
        case .glibc, .jemalloc: return .malloc(ProcessMalloc())
        case mmapColumn: return .mmap
        case largeAllocColumn:
            do { return .largeAlloc(try LargeAllocator(configuration: benchConfiguration)) } catch {
                fatalError("LargeAllocator: \(error)")
            }
        case .writesOnly:
            guard let block = try? SystemMemory.map(byteCount: writesOnlyBytes) else { fatalError("mmap failed") }
            _ = write(block, byteCount: writesOnlyBytes, touch: true, value: 0)
            return .writesOnly(block)
        default: preconditionFailure("\(name) has no column \(column.name)")
        }
    }

    /// Where a column's blocks come from.
    enum LargeSource: @unchecked Sendable {
        case malloc(ProcessMalloc)
        case mmap
        case largeAlloc(LargeAllocator)
        /// One block of ``writesOnlyBytes``.
        case writesOnly(UnsafeMutableRawPointer)
    }

    /// The writes-only column's block: the mixed workload's largest request.
    static let writesOnlyBytes = 25 << 20

    /// Writes one byte per 4 KiB page of `byteCount` bytes at `block` (only the first with
    /// `touch` false) and returns their sum.
    @inline(__always)
    static func write(_ block: UnsafeMutableRawPointer, byteCount: Int, touch: Bool, value: Int) -> UInt64 {
        var sum: UInt64 = 0
        var offset = 0
        repeat {
            block.storeBytes(
                of: UInt8(truncatingIfNeeded: value &+ offset &>> 12), toByteOffset: offset, as: UInt8.self)
            sum &+= UInt64(block.load(fromByteOffset: offset, as: UInt8.self))
            offset &+= 4096
        } while touch && offset < byteCount
        return sum
    }

    /// Allocates, writes and frees one block of `byteCount` bytes; returns the write's sum.
    /// A protocol, so that the timed loop is specialized per column with no switch in it,
    /// and a column can give each thread a source of its own (`forThread`).
    protocol PairSource: Sendable {
        func pair(byteCount: Int, touch: Bool, value: Int) -> UInt64
        /// What thread `index` of the workload uses (itself, unless threads must not share).
        func forThread(_ index: Int) -> Self
    }

    struct MallocPairs: PairSource {
        let malloc: ProcessMalloc
        func forThread(_ index: Int) -> Self { self }
        @inline(__always)
        func pair(byteCount: Int, touch: Bool, value: Int) -> UInt64 {
            let block = malloc.allocate(byteCount)
            let sum = write(block, byteCount: byteCount, touch: touch, value: value)
            malloc.deallocate(block, byteCount: byteCount)
            return sum
        }
    }

    struct MappedPairs: PairSource {
        func forThread(_ index: Int) -> Self { self }
        @inline(__always)
        func pair(byteCount: Int, touch: Bool, value: Int) -> UInt64 {
            guard let block = try? SystemMemory.map(byteCount: byteCount) else { fatalError("mmap failed") }
            let sum = write(block, byteCount: byteCount, touch: touch, value: value)
            try? SystemMemory.unmap(block, byteCount: byteCount)
            return sum
        }
    }

    struct WritesOnly: PairSource, @unchecked Sendable {
        let block: UnsafeMutableRawPointer
        /// A 2 MiB part of the block per thread: threads writing the same lines would
        /// measure the cache lines' travel between cores, not a floor.
        func forThread(_ index: Int) -> Self { WritesOnly(block: block + index * (2 << 20)) }
        @inline(__always)
        func pair(byteCount: Int, touch: Bool, value: Int) -> UInt64 {
            write(block, byteCount: byteCount, touch: touch, value: value)
        }
    }

    struct RegionPairs: PairSource {
        let allocator: LargeAllocator
        func forThread(_ index: Int) -> Self { self }
        @inline(__always)
        func pair(byteCount: Int, touch: Bool, value: Int) -> UInt64 {
            guard let region = try? allocator.allocate(UInt8.self, capacity: byteCount) else {
                fatalError("LargeAlloc refused \(byteCount) bytes")
            }
            let block = region.withUnsafeBufferPointer { UnsafeMutableRawPointer(mutating: $0.baseAddress!) }
            return write(block, byteCount: byteCount, touch: touch, value: value)
        }
    }

    static func regions(_ source: LargeSource, threads: Int, touch: Bool, operations: Int) -> Measurement {
        switch source {
        case .malloc(let malloc):
            regions(MallocPairs(malloc: malloc), threads: threads, touch: touch, operations: operations)
        case .mmap: regions(MappedPairs(), threads: threads, touch: touch, operations: operations)
        case .largeAlloc(let allocator):
            regions(RegionPairs(allocator: allocator), threads: threads, touch: touch, operations: operations)
        case .writesOnly(let block):
            regions(WritesOnly(block: block), threads: threads, touch: touch, operations: operations)
        }
    }

    @inline(never)
    static func regions<Source: PairSource>(_ source: Source, threads: Int, touch: Bool, operations: Int) -> Measurement
    {
        let perThread = max(1, operations / threads)
        let latencies = (0..<threads).map { _ in UnsafeMutablePointer<UInt64>.allocate(capacity: perThread) }
        let buffers = LatencyBuffers(latencies)
        defer { for buffer in latencies { buffer.deallocate() } }
        let checksum = AtomicCounterBox()
        // Throughput first, with no clock inside the loop (two clock reads per pair would
        // cost as much as a cached pair itself); then the same pairs again, each timed
        // alone, for the latency percentiles.
        let line = onThreads(threads) { thread, line in
            let source = source.forThread(thread)
            var sum: UInt64 = 0
            line.arriveAndWait()
            for index in 0..<perThread {
                sum &+= source.pair(byteCount: 2 << 20, touch: touch, value: index)
            }
            line.finish()
            _ = checksum.add(Int(truncatingIfNeeded: sum))
        }
        _ = onThreads(threads) { thread, line in
            let samples = buffers.pointers[thread]
            let source = source.forThread(thread)
            var sum: UInt64 = 0
            line.arriveAndWait()
            for index in 0..<perThread {
                let start = SystemInfo.monotonicNanoseconds()
                sum &+= source.pair(byteCount: 2 << 20, touch: touch, value: index)
                samples[index] = SystemInfo.monotonicNanoseconds() &- start
            }
            line.finish()
            _ = checksum.add(Int(truncatingIfNeeded: sum))
        }
        var recorder = LatencyRecorder(capacity: perThread * threads)
        for buffer in latencies {
            for index in 0..<perThread { recorder.record(buffer[index]) }
        }
        var extras = recorder.percentiles()
        extras["opsPerSecond"] = Double(perThread * threads) / (Double(line.elapsed) / 1e9)
        return Measurement(
            nanoseconds: line.elapsed, operations: perThread * threads, checksum: UInt64(checksum.load()),
            extras: extras)
    }

    /// The latency buffers of the threads.
    final class LatencyBuffers: @unchecked Sendable {
        let pointers: [UnsafeMutablePointer<UInt64>]
        init(_ pointers: [UnsafeMutablePointer<UInt64>]) { self.pointers = pointers }
    }

    /// At most this many blocks live in the mixed workload.
    static let mixedLive = 20

    @inline(never)
    static func mixed(_ source: LargeSource, operations: Int) -> Measurement {
        var generator = SplitMix64(seed: 25)
        let sizes = (0..<operations).map { _ in Int.random(in: (5 << 20)...(25 << 20), using: &generator) }
        let victims = (0..<operations).map { _ in Int.random(in: 0..<mixedLive, using: &generator) }
        var checksum: UInt64 = 0
        let start: UInt64
        switch source {
        case .largeAlloc(let allocator):
            let slots = UnsafeMutablePointer<Region<UInt8>?>.allocate(capacity: mixedLive)
            for index in 0..<mixedLive { (slots + index).initialize(to: nil) }
            start = SystemInfo.monotonicNanoseconds()
            for index in 0..<operations {
                let slot = index < mixedLive ? index : victims[index]
                _ = (slots + slot).move()
                guard let region = try? allocator.allocate(UInt8.self, capacity: sizes[index]) else {
                    fatalError("LargeAlloc refused \(sizes[index]) bytes")
                }
                let block = region.withUnsafeBufferPointer { UnsafeMutableRawPointer(mutating: $0.baseAddress!) }
                checksum &+= write(block, byteCount: sizes[index], touch: true, value: index)
                (slots + slot).initialize(to: region)
            }
            slots.deinitialize(count: mixedLive)
            slots.deallocate()
        case .writesOnly(let block):
            start = SystemInfo.monotonicNanoseconds()
            for index in 0..<operations {
                checksum &+= write(block, byteCount: sizes[index], touch: true, value: index)
            }
        case .malloc, .mmap:
            let blocks = UnsafeMutablePointer<(UnsafeMutableRawPointer, Int)?>.allocate(capacity: mixedLive)
            blocks.initialize(repeating: nil, count: mixedLive)
            start = SystemInfo.monotonicNanoseconds()
            for index in 0..<operations {
                let slot = index < mixedLive ? index : victims[index]
                if let (old, size) = blocks[slot] { release(source, old, byteCount: size) }
                let block = obtain(source, byteCount: sizes[index])
                checksum &+= write(block, byteCount: sizes[index], touch: true, value: index)
                blocks[slot] = (block, sizes[index])
            }
            for slot in 0..<mixedLive {
                if let (old, size) = blocks[slot] { release(source, old, byteCount: size) }
            }
            blocks.deallocate()
        }
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(nanoseconds: end - start, operations: operations, checksum: checksum)
    }

    @inline(__always)
    static func obtain(_ source: LargeSource, byteCount: Int) -> UnsafeMutableRawPointer {
        switch source {
        case .malloc(let malloc): return malloc.allocate(byteCount)
        case .mmap:
            guard let block = try? SystemMemory.map(byteCount: byteCount) else { fatalError("mmap failed") }
            return block
        case .largeAlloc, .writesOnly: preconditionFailure("\(source) allocates nothing here")
        }
    }

    @inline(__always)
    static func release(_ source: LargeSource, _ block: UnsafeMutableRawPointer, byteCount: Int) {
        switch source {
        case .malloc(let malloc): malloc.deallocate(block, byteCount: byteCount)
        case .mmap: try? SystemMemory.unmap(block, byteCount: byteCount)
        case .largeAlloc, .writesOnly: preconditionFailure("\(source) frees nothing here")
        }
    }
}
