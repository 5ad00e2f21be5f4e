import AllocCore
import Glibc
import Testing

@testable import Workloads

@Suite struct SpreadTests {
    @Test func medianOfOddAndEvenCounts() {
        #expect(Spread([3, 1, 2]) == Spread(median: 2, minimum: 1, maximum: 3))
        #expect(Spread([4, 1, 3, 2])?.median == 2.5)
        #expect(Spread([7])?.median == 7)
        #expect(Spread([]) == nil)
    }
}

extension Spread {
    init(median: Double, minimum: Double, maximum: Double) {
        self = Spread([minimum, median, maximum])!
    }
}

@Suite struct ReportTests {
    func sample(_ workload: String, _ allocator: String, nanoseconds: UInt64, peak: Int = 8 << 20) -> Sample {
        Sample(
            workload: workload, allocator: allocator, repetition: 1,
            measurement: Measurement(nanoseconds: nanoseconds, operations: 1000, checksum: 0),
            peakResidentBytes: peak, userNanoseconds: 0, systemNanoseconds: 0)
    }

    /// Ratios are taken against the baselines of the same workload, medians over the
    /// repetitions, and every family with rows gets its own table.
    @Test func tablesShowMediansAndRatiosAgainstBothBaselines() {
        let samples = [
            sample("pairs-16", "glibc", nanoseconds: 10_000), sample("pairs-16", "glibc", nanoseconds: 12_000),
            sample("pairs-16", "glibc", nanoseconds: 30_000),
            sample("pairs-16", "jemalloc", nanoseconds: 6_000, peak: 16 << 20),
            sample("fifo-100x64", "glibc", nanoseconds: 9_000),
            sample("fifo-100x64", "jemalloc", nanoseconds: 4_500),
        ]
        let summaries = Report.summarize(samples)
        #expect(summaries.count == 4)
        #expect(summaries[0].time == Spread([10, 12, 30]))
        let table = Report.markdown(summaries)
        #expect(table.contains("### Small-object pairs\n\nUnit: ns per malloc+free pair"))
        #expect(table.contains("### Live blocks freed in FIFO order"))
        #expect(!table.contains("### Producer/consumer"))
        #expect(table.contains("| pairs-16 | glibc | 12.0 | 10.0 – 30.0 | 1.00 | 2.00 | 2.00 | 8.0 | 0.50 |"))
        #expect(table.contains("| pairs-16 | jemalloc | 6.0 | 6.0 – 6.0 | 0.50 | 1.00 | 1.00 | 16.0 | 1.00 |"))
        #expect(table.contains("| fifo-100x64 | jemalloc | 4.5 | 4.5 – 4.5 | 0.50 | 1.00 | 1.00 |"))
    }

    @Test func missingBaselineShowsADash() {
        let table = Report.markdown(Report.summarize([sample("pairs-64", "glibc", nanoseconds: 5_000)]))
        #expect(table.contains("| pairs-64 | glibc | 5.0 | 5.0 – 5.0 | 1.00 | – | – | 8.0 | – |"))
    }

    /// `× best peer` divides by the fastest of jemalloc, mimalloc and tcmalloc on the same
    /// workload (medians), whichever it is, and never by glibc or a project column.
    @Test func bestPeerIsTheFastestPeerOfTheSameWorkload() {
        let samples = [
            sample("pairs-16", "glibc", nanoseconds: 2_000),
            sample("pairs-16", "jemalloc", nanoseconds: 8_000),
            sample("pairs-16", "mimalloc", nanoseconds: 5_000), sample("pairs-16", "mimalloc", nanoseconds: 4_000),
            sample("pairs-16", "mimalloc", nanoseconds: 90_000),
            sample("pairs-16", "tcmalloc", nanoseconds: 6_000),
            sample("pairs-16", "BinnedMalloc", nanoseconds: 3_000),
            sample("pairs-64", "jemalloc", nanoseconds: 10_000),
            sample("pairs-64", "tcmalloc", nanoseconds: 20_000),
            sample("pairs-64", "BinnedMalloc", nanoseconds: 15_000),
        ]
        let summaries = Report.summarize(samples)
        #expect(Report.bestPeerTime(of: "pairs-16", in: summaries) == 5)
        #expect(Report.bestPeerTime(of: "pairs-64", in: summaries) == 10)
        #expect(Report.bestPeerTime(of: "fifo-100x64", in: summaries) == nil)
        let table = Report.markdown(summaries)
        #expect(table.contains("| × jemalloc | × best peer | peak RSS MiB |"))
        // BinnedMalloc: 3.0 over glibc's 2.0, jemalloc's 8.0 and mimalloc's median 5.0.
        #expect(table.contains("| pairs-16 | BinnedMalloc | 3.0 | 3.0 – 3.0 | 1.50 | 0.38 | 0.60 |"))
        #expect(table.contains("| pairs-16 | mimalloc | 5.0 | 4.0 – 90.0 | 2.50 | 0.63 | 1.00 |"))
        #expect(table.contains("| pairs-64 | BinnedMalloc | 15.0 | 15.0 – 15.0 | – | 1.50 | 1.50 |"))
    }

    @Test func numbersKeepOneDecimalBelowAHundred() {
        #expect(Report.format(3.14159) == "3.1")
        #expect(Report.format(0.05) == "0.1")
        #expect(Report.format(99.94) == "99.9")
        #expect(Report.format(123.6) == "124")
        #expect(Report.format(0.125, digits: 2) == "0.13")
        #expect(Report.format(2.5, digits: 2) == "2.50")
    }
}

@Suite struct WorkerProtocolTests {
    @Test func parsesTheLastMeasurementLine() {
        let output = "noise\nmeasurement nanoseconds=1200 operations=100 checksum=77 peak=4096\n"
        let parsed = Worker.parse(output)
        #expect(parsed?.measurement == Measurement(nanoseconds: 1200, operations: 100, checksum: 77))
        #expect(parsed?.peakResidentBytes == 4096)
        #expect(Worker.parse("measurement nanoseconds=12 operations=1") == nil)
        #expect(Worker.parse("") == nil)
    }

    @Test func catalogueNamesAreUniqueAndBaselinesComeFirst() {
        #expect(Set(Workload.all.map(\.name)).count == Workload.all.count)
        #expect(Workload.families().count == Set(Workload.all.map(\.family.title)).count)
        #expect(Workload.all.allSatisfy { Array($0.columns.prefix(2)) == [.glibc, .jemalloc] })
        #expect(AllocatorColumn.all.prefix(2) == [.glibc, .jemalloc])
        #expect(AllocatorColumn.all.filter(\.isBaseline) == [.glibc, .jemalloc])
        #expect(AllocatorColumn.named("BinnedAlloc")?.worker == "compare-worker")
        #expect(AllocatorColumn.peers == [.jemalloc, .mimalloc, .tcmalloc])
        #expect(
            Array(AllocatorColumn.all.prefix(AllocatorColumn.processAllocatorColumns.count))
                == AllocatorColumn.processAllocatorColumns)
        #expect(Workload.named("python3-test-dict-list-set")?.columns == AllocatorColumn.processAllocatorColumns)
        #expect(Workload.named("python3-json-build-parse")?.columns == AllocatorColumn.processAllocatorColumns)
        #expect(Workload.named("pairs-64")?.kind == .pairs(size: 64))
        #expect(Workload.named("nonexistent") == nil)
        #expect(Workload.named("pairs-16")!.operations(at: .quick) * 20 == Workload.named("pairs-16")!.operations)
    }
}

@Suite struct PeerColumnTests {
    /// Every malloc-level row (malloc-style workloads and real programs) runs every process
    /// allocator, the peers included; suite rows keep their own columns.
    @Test func everyMallocLevelRowRunsEveryPeer() {
        for workload in Workload.all where !workload.isSuite {
            for column in AllocatorColumn.processAllocatorColumns {
                #expect(workload.columns.contains(column), "\(workload.name) lacks \(column.name)")
            }
        }
        #expect(Workload.all.filter(\.isMallocStyle).allSatisfy { $0.columns.contains(.binnedAlloc) })
    }

    /// mimalloc and tcmalloc run in glibc's worker with Debian's library preloaded, and the
    /// proof names that library's soname; jemalloc's worker links its library instead.
    @Test func peersArePreloadedIntoGlibcsWorker() {
        #expect(AllocatorColumn.mimalloc.worker == "compare-worker")
        #expect(AllocatorColumn.tcmalloc.worker == "compare-worker")
        #expect(ProcessAllocator.mimalloc.preloadedLibrary == "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2")
        #expect(ProcessAllocator.tcmalloc.preloadedLibrary == "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")
        #expect(ProcessAllocator.jemalloc.preloadedLibrary == nil && ProcessAllocator.glibc.preloadedLibrary == nil)
        #expect(ProcessAllocator.binnedMalloc.soname == nil)
        for process in [ProcessAllocator.glibc, .jemalloc, .binnedMalloc] { #expect(process.unavailableReason == nil) }
        for process in [ProcessAllocator.mimalloc, .tcmalloc] {
            let installed = access(process.libraryPath!, R_OK) == 0
            #expect((process.unavailableReason == nil) == installed)
        }
        #expect(Programs.preload(for: .mimalloc) == ProcessAllocator.mimalloc.libraryPath)
        #expect(Programs.preload(for: .tcmalloc) == ProcessAllocator.tcmalloc.libraryPath)
    }

    /// BinnedAlloc's hardened library runs in glibc's worker too, preloaded from where `make
    /// preload` builds it (or `BINNEDMALLOC_HARDENED_LIBRARY`); unbuilt, its column is left out
    /// with a reason that says how to build it.
    @Test func theHardenedLibraryIsPreloadedIntoGlibcsWorker() throws {
        let process = ProcessAllocator.binnedMallocHardened
        let library = try #require(process.libraryPath)
        #expect(AllocatorColumn.binnedMallocHardened.worker == "compare-worker")
        #expect(library.hasSuffix("libbinnedmalloc-hardened.so"))
        #expect(process.preloadedLibrary == library && process.soname == library)
        #expect(Programs.preload(for: .binnedMallocHardened) == library)
        let built = access(library, R_OK) == 0
        #expect((process.unavailableReason == nil) == built)
        if !built { #expect(process.unavailableReason?.contains("make preload") == true) }
    }

    /// This test process runs on glibc: the proof accepts glibc and refuses every other
    /// claim, the peers' included.
    @Test func theProofRefusesAClaimThisProcessDoesNotKeep() {
        #expect(Worker.verify(.glibc) == nil)
        for process in [ProcessAllocator.jemalloc, .mimalloc, .tcmalloc, .binnedMalloc, .binnedMallocHardened] {
            #expect(Worker.verify(process) != nil, "\(process) accepted in a glibc process")
        }
    }
}

/// An allocator that counts what it is asked for and checks that what comes back is what
/// it handed out: proof that a workload does the work it claims.
final class CountingAllocator: BenchAllocator, @unchecked Sendable {
    let lock = SpinLock()
    var live: [UnsafeMutableRawPointer: Int] = [:]
    var allocations = 0
    var maximumLive = 0

    func allocate(_ byteCount: Int) -> UnsafeMutableRawPointer {
        let block = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 16)
        lock.withLock {
            live[block] = byteCount
            allocations += 1
            maximumLive = max(maximumLive, live.count)
        }
        return block
    }

    func deallocate(_ pointer: UnsafeMutableRawPointer, byteCount: Int) {
        let known = lock.withLock { live.removeValue(forKey: pointer) }
        precondition(
            known == byteCount,
            "freed \(pointer) with size \(byteCount), allocated with \(known.map(String.init) ?? "nothing")")
        pointer.deallocate()
    }
}

@Suite struct WorkloadTests {
    /// A worker finds a suite workload's code by its name alone: every suite row in the
    /// catalogue has a body, the body's row is that row, and no two rows share a name.
    @Test func everySuiteWorkloadHasItsBody() {
        let suiteRows = Workload.all.filter(\.isSuite)
        #expect(suiteRows.count == Suites.all.reduce(0) { $0 + $1.workloads.count })
        for row in suiteRows {
            #expect(Suites.body(of: row)?.workload.name == row.name, "\(row.name) has no body")
        }
        #expect(Set(Workload.all.map(\.name)).count == Workload.all.count, "two workloads share a name")
    }

    /// Every workload frees every block it allocates, with the size it asked for, keeps
    /// the live count it promises, and writes the same checksum on every run.
    @Test(arguments: Workload.all.filter(\.isMallocStyle).map(\.name))
    func workloadAllocatesAndFreesWhatItClaims(name: String) {
        let workload = Workload.named(name)!
        let allocator = CountingAllocator()
        let operations = testOperations(of: workload)
        let first = run(testKind(of: workload), on: allocator, operations: operations)
        let second = run(testKind(of: workload), on: CountingAllocator(), operations: operations)
        #expect(allocator.live.isEmpty, "\(name) leaked \(allocator.live.count) blocks")
        #expect(first.checksum == second.checksum)
        #expect(first.operations >= operations / 2 && first.operations <= operations)
        #expect(first.nanoseconds > 0)
        switch workload.kind {
        case .pairs:
            #expect(allocator.allocations == 2_000 && allocator.maximumLive == 1)
        case .fifo(let live, _):
            #expect(allocator.maximumLive == live)
        case .randomWorkingSet(let threads, let workingSet, _, _):
            #expect(allocator.maximumLive == threads * workingSet)
            #expect(allocator.allocations == threads * workingSet + first.operations)
        case .producerConsumer(_, _, let capacity):
            #expect(allocator.allocations == 2_000)
            #expect(allocator.maximumLive <= capacity + 2)
        case .batch(let count, _, _):
            #expect(allocator.maximumLive == count)
            #expect(allocator.allocations == first.operations)
        case .threadChurn(let threads, let slots, _, _, _, _):
            // Every lane's slots stay filled; each replacement frees one block and makes one.
            #expect(allocator.maximumLive == threads * slots)
            #expect(allocator.allocations == threads * slots + first.operations)
            #expect(first.extras["freeSized"] == 0, "CountingAllocator has no sized free")
            #expect((first.extras["opsPerSecond"] ?? 0) > 0)
        case .falseSharing(let threads, _, _, let passive):
            // One object per thread at a time, plus the handed-over ones in the passive rows.
            #expect(allocator.allocations == first.operations + (passive ? threads : 0))
            #expect(allocator.maximumLive <= threads * (passive ? 2 : 1))
        case .randomSlots(let threads, let slots, _):
            #expect(allocator.allocations == first.operations)
            #expect(allocator.maximumLive <= threads * slots)
        case .bigBlocks(let live, _, _):
            #expect(allocator.allocations == first.operations)
            #expect(allocator.maximumLive == live)
        case .burstIdle:
            // Every block of the burst is live at once, then freed.
            #expect(allocator.allocations == first.operations)
            #expect(allocator.maximumLive == first.operations)
            let readings = ["rss.before", "rss.burst", "rss.freed", "rss.delay1", "rss.delay2"].compactMap {
                first.extras[$0]
            }
            #expect(readings.count == 5 && readings.allSatisfy { $0 > 0 }, "\(first.extras)")
            #expect(first.extras["rss.delay2OverBefore"] == first.extras["rss.delay2"]! / first.extras["rss.before"]!)
        case .suite, .program:
            Issue.record("\(name) is not a malloc-style workload")
        }
    }

    /// The BinnedAlloc adapter runs every workload to the same checksum as the model.
    @Test(arguments: Workload.all.filter(\.isMallocStyle).map(\.name))
    func binnedAllocRunsEveryWorkload(name: String) {
        let workload = Workload.named(name)!
        let expected = run(testKind(of: workload), on: CountingAllocator(), operations: testOperations(of: workload))
        let measured = run(testKind(of: workload), on: BinnedAllocBench(), operations: testOperations(of: workload))
        #expect(measured.checksum == expected.checksum)
        #expect(measured.operations == expected.operations)
    }

    /// A row with a writes-only column runs its floor to the checksum and operations of the
    /// model, allocating nothing (every false-sharing row, and no other malloc-style row).
    @Test(arguments: Workload.all.filter { $0.isMallocStyle && $0.columns.contains(.writesOnly) }.map(\.name))
    func theFloorDoesTheRowsWritesWithoutAllocating(name: String) {
        let workload = Workload.named(name)!
        guard case .falseSharing(let threads, _, let writes, _) = workload.kind else {
            Issue.record("\(name) lists a floor that only the false-sharing rows have")
            return
        }
        let expected = run(workload.kind, on: CountingAllocator(), operations: 2_000)
        let floor = falseSharingFloor(threads: threads, writes: writes, operations: 2_000)
        #expect(floor.checksum == expected.checksum)
        #expect(floor.operations == expected.operations)
        #expect(floor.nanoseconds > 0)
    }

    @Test func everyFalseSharingRowHasItsFloor() {
        let sharing = Workload.all.filter { $0.family == .falseSharing }
        #expect(sharing.count == 8)
        #expect(sharing.allSatisfy { $0.columns.last == .writesOnly })
        #expect(Workload.all.filter { $0.isMallocStyle && $0.columns.contains(.writesOnly) }.count == sharing.count)
    }

    /// Operations a test runs a workload for: 2,000, but 40 blocks of 5–25 MiB (each one
    /// cleared and touched) are enough to fill and churn the big-block row's 20 slots, and
    /// 200 blocks (about 18 MiB) for a burst.
    func testOperations(of workload: Workload) -> Int {
        switch workload.kind {
        case .bigBlocks: 40
        case .burstIdle: 200
        default: 2_000
        }
    }

    /// The kind a test runs: the catalogue's, with the burst's purge delays cut to 1 ms.
    func testKind(of workload: Workload) -> WorkloadKind {
        guard case .burstIdle(let threads, let minimumSize, let maximumSize, _) = workload.kind else {
            return workload.kind
        }
        return .burstIdle(
            threads: threads, minimumSize: minimumSize, maximumSize: maximumSize, delayNanoseconds: 1_000_000)
    }

    /// The burst-then-idle row reads a fresh process: no warm-up burst runs before it, in
    /// quick runs either, and its purge delay is BinnedMalloc's default, quick runs included.
    @Test func burstIdleRunsOnceInAFreshProcessAndSleepsFullDelays() {
        let workload = Workload.named("burst-idle-500mib-t2")!
        #expect(!workload.warmsUp)
        #expect(Workload.all.filter { !$0.warmsUp }.map(\.name) == [workload.name])
        #expect(purgeDelayNanoseconds == 1_000_000_000)
        #expect(
            workload.kind
                == .burstIdle(
                    threads: 2, minimumSize: 16, maximumSize: 1 << 20, delayNanoseconds: purgeDelayNanoseconds))
        var runs: [Int] = []
        _ = Workloads.measure(workload, scale: .quick) { operations in
            runs.append(operations)
            return Measurement(nanoseconds: 1, operations: operations, checksum: 0)
        }
        #expect(runs == [workload.operations / 20])
        var warmed: [Int] = []
        _ = Workloads.measure(Workload.named("pairs-16")!, scale: .quick) { operations in
            warmed.append(operations)
            return Measurement(nanoseconds: 1, operations: operations, checksum: 0)
        }
        #expect(warmed.count == 2)
    }

    /// One byte per 4 KiB of a block, from its start: the checksum does not depend on where
    /// the block lies.
    @Test func burstWritesOneBytePer4KiB() {
        let block = UnsafeMutableRawPointer.allocate(byteCount: 3 * 4096 + 1, alignment: 16)
        defer { block.deallocate() }
        memset(block, 0, 3 * 4096 + 1)
        #expect(writeEvery4KiB(block, byteCount: 3 * 4096 + 1, value: 5) == 4 * 5)
        #expect(writeEvery4KiB(block + 1, byteCount: 4096, value: 0x107) == 7)
        let bytes = UnsafeRawBufferPointer(start: block, count: 3 * 4096 + 1)
        #expect(bytes.enumerated().filter { $0.element != 0 }.map(\.offset) == [0, 1, 4096, 8192, 12288])
    }

    @Test func processMallocKnowsWhichLibraryProvidesIt() {
        let malloc = ProcessMalloc()
        #expect(malloc.isProvided(by: "libc.so.6"))
        #expect(!malloc.isProvided(by: "libjemalloc.so.2"))
        #expect(!malloc.isProvided(by: "libmimalloc.so.2") && !malloc.isProvided(by: "libtcmalloc_minimal.so.4"))
        // glibc 2.36 has no free_sized: the sized rows free with free here.
        #expect(!malloc.hasSizedFree)
        let block = malloc.allocate(100)
        malloc.deallocateSized(block, byteCount: 100)
        let zeroed = malloc.allocateZeroed(4096)
        #expect(UnsafeRawBufferPointer(start: zeroed, count: 4096).allSatisfy { $0 == 0 })
        malloc.deallocate(zeroed, byteCount: 4096)
    }

    /// A block handed out without being cleared changes the big-block row's checksum, so
    /// the driver's cross-column check catches an allocator whose calloc is wrong.
    @Test func bigBlockPagesMustReadZero() {
        let block = UnsafeMutableRawPointer.allocate(byteCount: 8192, alignment: 4096)
        defer { block.deallocate() }
        memset(block, 0, 8192)
        let clean = readAndWritePages(block, byteCount: 8192, value: 3)
        #expect(clean == 6)
        // The pages now hold 3: read again, they weigh in far above what is written.
        #expect(readAndWritePages(block, byteCount: 8192, value: 3) == 6 + (6 << 32))
    }

    @Test func randomSizesAreLogUniformWithinBounds() {
        let table = RandomTable(seed: 1, minimumSize: 8, maximumSize: 16384, slotCount: 10)
        #expect(table.sizes.allSatisfy { $0 >= 8 && $0 <= 16384 })
        #expect(table.slots.allSatisfy { $0 >= 0 && $0 < 10 })
        let small = table.sizes.filter { $0 < 128 }.count
        let large = table.sizes.filter { $0 >= 1024 }.count
        // log-uniform over 11 doublings: 4 doublings below 128, 4 at or above 1024.
        #expect(abs(Double(small) / Double(RandomTable.count) - 4.0 / 11) < 0.02)
        #expect(abs(Double(large) / Double(RandomTable.count) - 4.0 / 11) < 0.02)
    }
}

@Suite struct ExtrasTests {
    /// Extra figures travel on the measurement line and come out as medians in the
    /// columns their family lists.
    @Test func extrasTravelAndBecomeColumns() throws {
        let parsed = try #require(
            Worker.parse("measurement nanoseconds=10 operations=1 checksum=0 peak=1 extra.p99=250 extra.p50=100.5"))
        #expect(parsed.measurement.extras == ["p99": 250, "p50": 100.5])
        #expect(Worker.parse("measurement nanoseconds=10 operations=1 checksum=0 peak=1 extra.p99=x") == nil)

        let family = Workload.Family(title: "Latency test", unit: "ns", extras: [.init(key: "p99", header: "p99 ns")])
        let workload = Workload(name: "latency-test", family: family, kind: .suite("test"), operations: 1)
        let samples = [250.0, 150, 900].map { p99 in
            Sample(
                workload: "latency-test", allocator: "glibc", repetition: 1,
                measurement: Measurement(nanoseconds: 10, operations: 1, checksum: 0, extras: ["p99": p99]),
                peakResidentBytes: 1 << 20, userNanoseconds: 0, systemNanoseconds: 0)
        }
        let table = Report.markdown(Report.summarize(samples), workloads: [workload])
        #expect(table.contains("| RSS × jemalloc | p99 ns |"))
        #expect(table.contains("| latency-test | glibc | 10.0 | 10.0 – 10.0 | 1.00 | – | – | 1.0 | – | 250 |"))

        let ratioFamily = Workload.Family(
            title: "Ratio test", unit: "ns", extras: [.init(key: "ratio", header: "ratio", digits: 2)])
        let ratioRow = Workload(name: "ratio-test", family: ratioFamily, kind: .suite("test"), operations: 1)
        let ratioSample = Sample(
            workload: "ratio-test", allocator: "glibc", repetition: 1,
            measurement: Measurement(nanoseconds: 10, operations: 1, checksum: 0, extras: ["ratio": 1.046]),
            peakResidentBytes: 1 << 20, userNanoseconds: 0, systemNanoseconds: 0)
        #expect(Report.markdown(Report.summarize([ratioSample]), workloads: [ratioRow]).contains("| 1.0 | – | 1.05 |"))
    }

    @Test func latencyRecorderReportsPercentiles() {
        var recorder = LatencyRecorder(capacity: 1000)
        for value in (1...1000).reversed() { recorder.record(UInt64(value)) }
        recorder.record(5000)  // past capacity: not kept
        let percentiles = recorder.percentiles()
        // Nearest rank: p99.9 of 1,000 samples is the 999th, not the largest.
        #expect(percentiles["p50"] == 500)
        #expect(percentiles["p99"] == 990)
        #expect(percentiles["p99.9"] == 999)
        #expect(percentiles["max"] == 1000)
        var three = LatencyRecorder(capacity: 3)
        for value in [30, 10, 20] as [UInt64] { three.record(value) }
        #expect(three.percentiles()["p50"] == 20)
        #expect(three.percentiles()["p99.9"] == 30)
        #expect(LatencyRecorder(capacity: 4).percentiles()["max"] == 0)
    }
}

@Suite struct ProgramTests {
    /// A real program runs with each column's allocator preloaded; a failing one stops.
    @Test func programsRunWithTheColumnsAllocatorPreloaded() throws {
        #expect(Programs.preload(for: .glibc) == nil)
        #expect(Programs.preload(for: .jemalloc)?.hasSuffix("libjemalloc.so.2") == true)
        #expect(Programs.preload(for: .binnedMalloc)?.hasSuffix("libbinnedmalloc.so") == true)
        let measurement = Programs.measure(["sh", "-c", "test -z \"$LD_PRELOAD\""], column: .glibc, scale: .quick)
        #expect(measurement.operations == 1 && measurement.nanoseconds > 0)
        #expect((measurement.peakResidentBytes ?? 0) > 0)
        #expect(Programs.find("sh") != nil && Programs.find("no-such-program-here") == nil)
    }

    /// The JSON script is valid python3 and its check passes on a small document.
    @Test func theJSONScriptRunsAndChecksItsDocument() {
        let measurement = Programs.measure(
            ["python3", "-c", Programs.jsonBuildParseScript(elements: 100)], column: .glibc, scale: .quick)
        #expect(measurement.operations == 1 && measurement.nanoseconds > 0)
    }

    @Test func aProgramThatFailsStopsTheBenchmark() async {
        await #expect(processExitsWith: .failure) {
            _ = Programs.measure(["false"], column: .glibc, scale: .quick)
        }
    }
}
