// RingAlloc's workloads: RingAl's published table, reconstructed. RingAl's benchmark code
// is not published; its description is "iterations, max bytes per buffer, max buffers
// held", RingAl against Vec. Here each iteration draws a size uniformly from 1 to the
// maximum (from a seeded table made before the clock starts), releases the oldest buffer
// when the queue already holds the maximum, allocates a buffer of that size and writes
// every byte of it, and queues it. The baselines do the same with Swift `[UInt8]` (the
// Vec a Swift program would use) in a process whose malloc is glibc's or jemalloc's.
//
// Two families, as RingAl's table has two halves:
// - fixed: `ring.fixed(capacity: size)` + `append(repeating:count:)`, against
//   `[UInt8](repeating:count:)` (one allocation, one fill);
// - extendable: the bytes written in chunks of max/16 bytes (at least 16), into
//   `ring.extendable` (grows in place; starts at one chunk) against an empty `[UInt8]`
//   that `append(contentsOf:)` grows (doubling), as a Vec written through io::Write.
// The `RingAlloc output span` column writes the same bytes the way `read(2)` or a decoder
// would, in place through `append(minimumFreeCapacity:initializingWith:)`'s OutputRawSpan
// (issue 21: within 5% of the `RingAlloc` column's appends).
//
// The ring is made once per worker process, before the warm-up, as a program makes one
// ring and keeps it: its pages are first touched in the warm-up, as they would be in the
// first few thousand of RingAl's million iterations. It has room for the most bytes the
// row's sizes ever hold at once plus four of the largest buffers, so it is never full
// (see `ringCapacity`) and touches about as much memory as the baselines' heaps hold.
// Workload names keep RingAl's rows (its iterations, max bytes, max held), but a full run
// here does fewer iterations (`Row.operations`: 5M, 3M, 3M, 100K, 50K) to keep the suite
// under two minutes; times are per buffer, in steady state, so the ratios compare with
// RingAl's.

import AllocCore
import RingAlloc

enum RingAllocSuite: BenchSuite {
    static let name = "RingAlloc"

    /// RingAlloc's fixed and extendable buffers, in a glibc process.
    static let ring = AllocatorColumn(name: "RingAlloc", process: .glibc)
    /// The same buffers, written in place through an output span.
    static let ringOutputSpan = AllocatorColumn(name: "RingAlloc output span", process: .glibc)
    // `.writesOnly` is the floor: the same bytes written the same way at a cursor that
    // walks through memory of the ring's size, mapped and touched before the timed run, with
    // no allocation, no header and no release (the queue keeps only where each buffer was,
    // for the checksum).

    static let fixedFamily = Workload.Family(
        title: "Ring: fixed buffers (RingAl's table: iterations / max bytes / max held)",
        unit:
            "ns per buffer: draw a size in 1...max, release the oldest buffer if max are held, allocate, write every byte, queue it (baselines: [UInt8](repeating:count:), dropped oldest first; RingAlloc: append(repeating:count:); output span: the same bytes set through append(minimumFreeCapacity:initializingWith:)'s OutputRawSpan)"
    )
    static let extendableFamily = Workload.Family(
        title: "Ring: extendable buffers written in chunks (RingAl's table, second half)",
        unit:
            "ns per buffer: as fixed, but the bytes are appended in chunks of max/16 bytes (at least 16) to a growing buffer (baselines: an empty [UInt8] grown by append(contentsOf:); RingAlloc: append(contentsOf:); output span: each chunk copied in through append(minimumFreeCapacity:initializingWith:))"
    )

    /// One row of RingAl's table: the iterations RingAl ran, the largest buffer, the most
    /// buffers held, and the iterations a full run here performs.
    struct Row: Sendable {
        let published: String
        let maximumBytes: Int
        let maximumHeld: Int
        let operations: Int
    }

    static let rows: [Row] = [
        Row(published: "10M", maximumBytes: 64, maximumHeld: 64, operations: 5_000_000),
        Row(published: "10M", maximumBytes: 1024, maximumHeld: 64, operations: 3_000_000),
        Row(published: "10M", maximumBytes: 1024, maximumHeld: 1024, operations: 3_000_000),
        Row(published: "1M", maximumBytes: 65536, maximumHeld: 64, operations: 100_000),
        Row(published: "1M", maximumBytes: 131_072, maximumHeld: 1024, operations: 50_000),
    ]

    static func workloadName(extendable: Bool, _ row: Row) -> String {
        "ring-\(extendable ? "ext" : "fixed")-\(row.published)-\(row.maximumBytes)-\(row.maximumHeld)"
    }

    static var workloads: [any SuiteWorkload] {
        [false, true].flatMap { extendable in rows.map { RingWorkload(extendable: extendable, row: $0) } }
    }

    /// A workload of this suite: one row of RingAl's table, fixed or extendable buffers.
    struct RingWorkload: SuiteWorkload {
        let extendable: Bool
        let row: Row

        var workload: Workload {
            Workload(
                name: workloadName(extendable: extendable, row), family: extendable ? extendableFamily : fixedFamily,
                kind: .suite(name), operations: row.operations,
                columns: [.glibc, .jemalloc, ring, ringOutputSpan, .writesOnly])
        }

        func measure(column: AllocatorColumn, scale: Scale) -> Measurement {
            let sizes = SizeTable(maximumBytes: row.maximumBytes)
            defer { sizes.deallocate() }
            let operations = workload.operations(at: scale)
            if column.isBaseline {
                return measureWithWarmUp(operations: operations, scale: scale) { operations in
                    extendable
                        ? arrayChunked(row, sizes, operations: operations)
                        : arrayFixed(row, sizes, operations: operations)
                }
            }
            if column == .writesOnly {
                let capacity = ringCapacity(row, sizes)
                let area = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
                defer { area.deallocate() }
                area.initializeMemory(as: UInt8.self, repeating: 0, count: capacity)
                return measureWithWarmUp(operations: operations, scale: scale) { operations in
                    writesAlone(row, sizes, area: area, capacity: capacity, chunked: extendable, operations: operations)
                }
            }
            // One ring for the process, as a program makes one: the warm-up touches its pages.
            guard var ring = try? RingAllocator(capacity: ringCapacity(row, sizes)) else {
                fatalError("cannot map the ring")
            }
            let outputSpan = column == ringOutputSpan
            return measureWithWarmUp(operations: operations, scale: scale) { operations in
                extendable
                    ? ringExtendable(row, sizes, &ring, outputSpan: outputSpan, operations: operations)
                    : ringFixed(row, sizes, &ring, outputSpan: outputSpan, operations: operations)
            }
        }
    }

    // MARK: Inputs

    /// Sizes drawn uniformly from 1...max with a fixed seed, and a source of `max` bytes
    /// for the chunked writes.
    struct SizeTable {
        static let count = 1 << 16
        let sizes: UnsafeMutablePointer<Int>
        let source: UnsafeMutableRawPointer
        let maximumBytes: Int

        init(maximumBytes: Int) {
            self.maximumBytes = maximumBytes
            var generator = SplitMix64(seed: 0x52_696E_67)
            sizes = .allocate(capacity: Self.count)
            for index in 0..<Self.count { sizes[index] = 1 + Int(generator.next() % UInt64(maximumBytes)) }
            source = .allocate(byteCount: maximumBytes, alignment: 16)
            for index in 0..<maximumBytes {
                source.storeBytes(of: UInt8(truncatingIfNeeded: index &* 7 &+ 1), toByteOffset: index, as: UInt8.self)
            }
        }

        func deallocate() {
            sizes.deallocate()
            source.deallocate()
        }

        @inline(__always)
        func size(_ iteration: Int) -> Int { sizes[iteration & (Self.count - 1)] }

        /// The chunk of the chunked writes.
        var chunk: Int { max(16, maximumBytes / 16) }
    }

    /// At most `capacity` values, dropped oldest first: the same queue for every column.
    struct BoundedQueue<Element: ~Copyable>: ~Copyable {
        let slots: UnsafeMutablePointer<Element>
        let capacity: Int
        var head = 0
        var count = 0

        init(capacity: Int) {
            self.capacity = capacity
            slots = .allocate(capacity: capacity)
        }

        deinit {
            (slots + head).deinitialize(count: min(count, capacity - head))
            if head + count > capacity { slots.deinitialize(count: head + count - capacity) }
            slots.deallocate()
        }

        var isFull: Bool { count == capacity }

        mutating func push(_ element: consuming Element) {
            let index = head + count
            (slots + (index >= capacity ? index - capacity : index)).initialize(to: element)
            count += 1
        }

        mutating func popOldest() -> Element {
            let element = (slots + head).move()
            head = head + 1 == capacity ? 0 : head + 1
            count -= 1
            return element
        }
    }

    /// What every column adds to the checksum for a buffer it releases.
    @inline(__always)
    static func summary(first: UInt8, last: UInt8, count: Int) -> UInt64 {
        UInt64(first) &+ UInt64(last) &<< 8 &+ UInt64(count) &<< 16
    }

    /// A ring that is never full for this row's sizes: the most segment bytes any
    /// `maximumHeld` consecutive sizes of the table need (each size rounded up to 16 bytes,
    /// plus its 16-byte header and up to 64 bytes of unsplit slack), plus four segments of
    /// twice the largest size: the buffer being written, an extendable buffer's old and new
    /// segments while it moves, and the space a wrap leaves before the tail. (Growth in
    /// place only takes what is free, and needs no more than the bytes written.) Sized like
    /// this, the ring touches about as much memory as the baselines' heaps hold.
    static func ringCapacity(_ row: Row, _ sizes: SizeTable) -> Int {
        func segment(_ size: Int) -> Int { (size + 15) & ~15 + 80 }
        var window = 0
        var peak = 0
        for index in 0..<(SizeTable.count + row.maximumHeld) {
            window += segment(sizes.size(index))
            if index >= row.maximumHeld { window -= segment(sizes.size(index - row.maximumHeld)) }
            peak = max(peak, window)
        }
        return peak + 4 * segment(2 * row.maximumBytes)
    }

    // MARK: Fixed

    @inline(never)
    static func arrayFixed(_ row: Row, _ sizes: SizeTable, operations: Int) -> Measurement {
        var checksum: UInt64 = 0
        let start = SystemInfo.monotonicNanoseconds()
        var queue = BoundedQueue<[UInt8]>(capacity: row.maximumHeld)
        for iteration in 0..<operations {
            if queue.isFull {
                let oldest = queue.popOldest()
                checksum &+= summary(first: oldest[0], last: oldest[oldest.count - 1], count: oldest.count)
            }
            queue.push([UInt8](repeating: UInt8(truncatingIfNeeded: iteration), count: sizes.size(iteration)))
        }
        _ = consume queue
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(nanoseconds: end - start, operations: operations, checksum: checksum)
    }

    @inline(never)
    static func ringFixed(
        _ row: Row, _ sizes: SizeTable, _ ring: inout RingAllocator, outputSpan: Bool, operations: Int
    ) -> Measurement {
        var checksum: UInt64 = 0
        let start = SystemInfo.monotonicNanoseconds()
        var queue = BoundedQueue<RingBuffer>(capacity: row.maximumHeld)
        for iteration in 0..<operations {
            if queue.isFull {
                let oldest = queue.popOldest()
                checksum &+= oldest.withUnsafeBytes { summary(first: $0[0], last: $0[$0.count - 1], count: $0.count) }
            }
            let size = sizes.size(iteration)
            let byte = UInt8(truncatingIfNeeded: iteration)
            guard var buffer = ring.fixed(capacity: size) else { fatalError("the ring was full") }
            if outputSpan {
                buffer.append(minimumFreeCapacity: size) { output in
                    output.withUnsafeMutableBytes { bytes, initialized in
                        bytes.baseAddress!.initializeMemory(as: UInt8.self, repeating: byte, count: size)
                        initialized = size
                    }
                }
            } else {
                buffer.append(repeating: byte, count: size)
            }
            queue.push(buffer)
        }
        _ = consume queue
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(nanoseconds: end - start, operations: operations, checksum: checksum)
    }

    // MARK: Extendable, chunked writes

    @inline(never)
    static func arrayChunked(_ row: Row, _ sizes: SizeTable, operations: Int) -> Measurement {
        var checksum: UInt64 = 0
        let chunk = sizes.chunk
        let start = SystemInfo.monotonicNanoseconds()
        var queue = BoundedQueue<[UInt8]>(capacity: row.maximumHeld)
        for iteration in 0..<operations {
            if queue.isFull {
                let oldest = queue.popOldest()
                checksum &+= summary(first: oldest[0], last: oldest[oldest.count - 1], count: oldest.count)
            }
            let size = sizes.size(iteration)
            var array: [UInt8] = []
            var written = 0
            while written < size {
                let count = min(chunk, size - written)
                array.append(contentsOf: UnsafeRawBufferPointer(start: sizes.source + written, count: count))
                written += count
            }
            queue.push(array)
        }
        _ = consume queue
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(nanoseconds: end - start, operations: operations, checksum: checksum)
    }

    @inline(never)
    static func ringExtendable(
        _ row: Row, _ sizes: SizeTable, _ ring: inout RingAllocator, outputSpan: Bool, operations: Int
    ) -> Measurement {
        var checksum: UInt64 = 0
        let chunk = sizes.chunk
        let start = SystemInfo.monotonicNanoseconds()
        var queue = BoundedQueue<RingBuffer>(capacity: row.maximumHeld)
        for iteration in 0..<operations {
            if queue.isFull {
                let oldest = queue.popOldest()
                checksum &+= oldest.withUnsafeBytes { summary(first: $0[0], last: $0[$0.count - 1], count: $0.count) }
            }
            let size = sizes.size(iteration)
            let buffer = ring.extendable(capacity: min(chunk, size)) { buffer in
                var written = 0
                while written < size {
                    let count = min(chunk, size - written)
                    let source = sizes.source + written
                    if outputSpan {
                        let appended: Void? = buffer.append(minimumFreeCapacity: count) { output in
                            output.withUnsafeMutableBytes { bytes, initialized in
                                (bytes.baseAddress! + initialized).copyMemory(from: source, byteCount: count)
                                initialized += count
                            }
                        }
                        guard appended != nil else { fatalError("the ring was full") }
                    } else {
                        guard buffer.append(contentsOf: UnsafeRawBufferPointer(start: source, count: count))
                        else { fatalError("the ring was full") }
                    }
                    written += count
                }
            }
            guard let buffer else { fatalError("the ring was full") }
            queue.push(buffer)
        }
        _ = consume queue
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(nanoseconds: end - start, operations: operations, checksum: checksum)
    }

    // MARK: Writes alone

    @inline(never)
    static func writesAlone(
        _ row: Row, _ sizes: SizeTable, area: UnsafeMutableRawPointer, capacity: Int, chunked: Bool,
        operations: Int
    ) -> Measurement {
        var checksum: UInt64 = 0
        let chunk = sizes.chunk
        var cursor = 0
        let start = SystemInfo.monotonicNanoseconds()
        var queue = BoundedQueue<(offset: Int, count: Int)>(capacity: row.maximumHeld)
        for iteration in 0..<operations {
            if queue.isFull {
                let (offset, count) = queue.popOldest()
                checksum &+= summary(
                    first: area.load(fromByteOffset: offset, as: UInt8.self),
                    last: area.load(fromByteOffset: offset + count - 1, as: UInt8.self), count: count)
            }
            let size = sizes.size(iteration)
            if cursor + size > capacity { cursor = 0 }
            if chunked {
                var written = 0
                while written < size {
                    let count = min(chunk, size - written)
                    (area + cursor + written).copyMemory(from: sizes.source + written, byteCount: count)
                    written += count
                }
            } else {
                (area + cursor).initializeMemory(
                    as: UInt8.self, repeating: UInt8(truncatingIfNeeded: iteration), count: size)
            }
            queue.push((cursor, size))
            cursor += (size + 15) & ~15
        }
        _ = consume queue
        let end = SystemInfo.monotonicNanoseconds()
        return Measurement(nanoseconds: end - start, operations: operations, checksum: checksum)
    }
}
