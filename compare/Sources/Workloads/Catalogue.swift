// The catalogue: which workloads exist, which allocator columns run them, and in which
// worker executable. The driver and the workers read the same catalogue, so a workload
// name means the same thing on both sides of the process boundary.

import Glibc

/// How big a run is: `full` for `make bench`, `quick` for CI's smoke run.
public enum Scale: String, Sendable, CaseIterable, Codable {
    case full, quick

    /// Operations are divided by this in quick runs.
    var divisor: Int { self == .full ? 1 : 20 }
}

/// What a workload does, as the worker runs it.
public enum WorkloadKind: Sendable, Equatable {
    /// `malloc(size)` then `free` at once, `operations` times.
    case pairs(size: Int)
    /// `live` blocks of `size` allocated, then freed oldest first, until `operations` blocks.
    case fifo(live: Int, size: Int)
    /// Each thread keeps `workingSet` blocks of random sizes (log-uniform from `minimumSize`
    /// to `maximumSize`) and replaces a random one per operation.
    case randomWorkingSet(threads: Int, workingSet: Int, minimumSize: Int, maximumSize: Int)
    /// One thread allocates blocks of random sizes (log-uniform) and hands them through a
    /// bounded queue to a second thread, which frees them: every free is cross-thread.
    case producerConsumer(minimumSize: Int, maximumSize: Int, queueCapacity: Int)
    /// `count` blocks of random sizes (log-uniform) allocated, then all freed newest
    /// first, over and over: the allocate-a-batch-then-drop-it pattern of rsbmalloc's
    /// benchmarks (and of a request's temporary objects).
    case batch(count: Int, minimumSize: Int, maximumSize: Int)
    /// `threads` lanes, each owning `slots` blocks of random sizes (uniform from
    /// `minimumSize` to `maximumSize`), run rounds of `roundLength` replacements, each round
    /// on a fresh thread that then exits: most frees hit blocks of a thread that is gone.
    /// `sized` frees with `free_sized` where the process allocator exports it.
    case threadChurn(threads: Int, slots: Int, roundLength: Int, minimumSize: Int, maximumSize: Int, sized: Bool)
    /// Each of `threads` threads allocates an object of `objectSize` bytes, writes it
    /// `writes` times and frees it, over and over; `passive`: each first frees an object the
    /// main thread allocated for it.
    case falseSharing(threads: Int, objectSize: Int, writes: Int, passive: Bool)
    /// Per thread `slots` slots, empty at first; each step frees a random slot's block (if
    /// any) and allocates a random size (uniform from 1 to `maximumSize`) in its place.
    case randomSlots(threads: Int, slots: Int, maximumSize: Int)
    /// At most `live` zero-filled blocks (calloc) of random sizes (uniform from
    /// `minimumSize` to `maximumSize`), a random live one freed before each new one, every
    /// page read and written.
    case bigBlocks(live: Int, minimumSize: Int, maximumSize: Int)
    /// Each of `threads` threads allocates `operations / threads` blocks of random sizes
    /// (log-uniform from `minimumSize` to `maximumSize`), one byte written per 4 KiB, and
    /// keeps them all; then each frees its own and exits, and the process sleeps
    /// `delayNanoseconds` twice. RSS is read before, between and after the phases.
    case burstIdle(threads: Int, minimumSize: Int, maximumSize: Int, delayNanoseconds: UInt64)
    /// A real program (`arguments[0]` found on the PATH) run to completion in a child of the
    /// worker, with the column's allocator preloaded; `quickArguments` in quick runs. The
    /// time is its wall time; it must exit with status 0.
    case program(arguments: [String], quickArguments: [String])
    /// A workload of an allocator package's own suite (`BenchSuite`), named by the suite:
    /// the suite's code runs it, for every column the workload lists.
    case suite(String)
}

/// One benchmark: a name that `--filter` matches, its family (one table per family), what
/// it does, and how many operations a full run performs.
public struct Workload: Sendable {
    public let name: String
    public let family: Family
    public let kind: WorkloadKind
    /// What the time is divided by in the tables (an allocate/free pair, a replacement...).
    public let operations: Int

    public func operations(at scale: Scale) -> Int { isProgram ? 1 : max(1, operations / scale.divisor) }

    /// Whether this runs on a `BenchAllocator` (malloc and free of blocks in the worker).
    public var isMallocStyle: Bool { !isSuite && !isProgram }

    /// Whether this runs a real program rather than allocating in the worker.
    public var isProgram: Bool {
        if case .program = kind { return true }
        return false
    }

    /// Whether the worker warms up before the timed run. Not for burst then idle: its RSS
    /// readings are those of a process that has not yet allocated what the burst does, and a
    /// warm-up's burst would leave in it whatever the allocator keeps.
    public var warmsUp: Bool {
        if case .burstIdle = kind { return false }
        return true
    }

    /// Whether a suite runs this workload (else it is malloc-style, run on `BenchAllocator`s).
    public var isSuite: Bool {
        if case .suite = kind { return true }
        return false
    }

    /// One table per family, in the order families first appear in `Workload.all`.
    public struct Family: Sendable, Equatable {
        /// The table's title.
        public let title: String
        /// What a row's time measures, printed under the table's title.
        public let unit: String
        /// Figures a workload reports besides its time (`Measurement.extras`), each a column
        /// of the table showing its median.
        public let extras: [Extra]

        public init(title: String, unit: String, extras: [Extra] = []) {
            self.title = title
            self.unit = unit
            self.extras = extras
        }

        /// A figure beside the time: its key in `Measurement.extras`, its column header, and
        /// its decimals (nil: `Report.format`'s default, one below 100 and none above).
        public struct Extra: Sendable, Equatable {
            public let key: String
            public let header: String
            public let digits: Int?
            public init(key: String, header: String, digits: Int? = nil) {
                self.key = key
                self.header = header
                self.digits = digits
            }
        }

        public static let pairs = Family(
            title: "Small-object pairs", unit: "ns per malloc+free pair, one thread, through function pointers")
        public static let fifo = Family(
            title: "Live blocks freed in FIFO order", unit: "ns per block (malloc, then free oldest first), one thread")
        public static let workingSet = Family(
            title: "Random sizes over a working set",
            unit:
                "ns per replacement (free a random block, malloc a random size), wall time over all threads' replacements"
        )
        public static let producerConsumer = Family(
            title: "Producer/consumer (cross-thread frees)",
            unit: "ns per block (malloc on the producer, free on the consumer), wall time")
        public static let batch = Family(
            title: "Batches (rsbmalloc-style)",
            unit: "ns per block (allocate the batch, then free it newest first), one thread")
        public static let programs = Family(
            title: "Real programs with the allocator preloaded",
            unit:
                "ns per run of the program (wall time), with nothing, libjemalloc.so.2, libmimalloc.so.2, libtcmalloc_minimal.so.4 or libbinnedmalloc.so in LD_PRELOAD; peak RSS is the program's (wait4); python3-test-dict-list-set runs `python3 -m test test_dict test_list test_set` (quick runs: test_list alone); python3-json-build-parse runs `python3 -c` with a script that, 3 times, builds a list of 120,000 dicts (each an int id, a string name, a float price, a list of 2 short strings and a list of 3 ints; no randomness), json.dumps it into an 11 MiB string, drops the list, json.loads the string, checks the middle element's name and drops the string and the parsed list (quick runs: 6,000 dicts)"
        )
    }

    /// The columns that run this workload, baselines first.
    public let columns: [AllocatorColumn]

    public init(
        name: String, family: Family, kind: WorkloadKind, operations: Int,
        columns: [AllocatorColumn] = AllocatorColumn.mallocColumns
    ) {
        self.name = name
        self.family = family
        self.kind = kind
        self.operations = operations
        self.columns = columns
    }

    /// Every workload, in table order.
    public static let all: [Workload] =
        [
            Workload(name: "pairs-16", family: .pairs, kind: .pairs(size: 16), operations: 20_000_000),
            Workload(name: "pairs-64", family: .pairs, kind: .pairs(size: 64), operations: 20_000_000),
            Workload(name: "pairs-256", family: .pairs, kind: .pairs(size: 256), operations: 20_000_000),
            Workload(name: "pairs-1024", family: .pairs, kind: .pairs(size: 1024), operations: 20_000_000),
            Workload(name: "fifo-100x64", family: .fifo, kind: .fifo(live: 100, size: 64), operations: 20_000_000),
            Workload(
                name: "random-8-16384-ws10000-t1", family: .workingSet,
                kind: .randomWorkingSet(threads: 1, workingSet: 10_000, minimumSize: 8, maximumSize: 16384),
                operations: 2_000_000),
            Workload(
                name: "random-8-16384-ws10000-t2", family: .workingSet,
                kind: .randomWorkingSet(threads: 2, workingSet: 10_000, minimumSize: 8, maximumSize: 16384),
                operations: 4_000_000),
            Workload(
                name: "producer-consumer-16-1024", family: .producerConsumer,
                kind: .producerConsumer(minimumSize: 16, maximumSize: 1024, queueCapacity: 1024),
                operations: 2_000_000),
            Workload(
                name: "batch-1000-16-4096", family: .batch,
                kind: .batch(count: 1000, minimumSize: 16, maximumSize: 4096), operations: 5_000_000),
        ] + fieldShapes
        + [
            // 2 × 2,800 blocks of mean 92 KiB: 250 and 256 MiB with these seeds.
            Workload(
                name: "burst-idle-500mib-t2", family: .burstIdle,
                kind: .burstIdle(
                    threads: 2, minimumSize: 16, maximumSize: 1 << 20, delayNanoseconds: purgeDelayNanoseconds),
                operations: 5_600),
            Workload(
                name: "python3-test-dict-list-set", family: .programs,
                kind: .program(
                    arguments: ["python3", "-m", "test", "test_dict", "test_list", "test_set"],
                    quickArguments: ["python3", "-m", "test", "test_list"]),
                operations: 1, columns: AllocatorColumn.processAllocatorColumns),
            Workload(
                name: "python3-json-build-parse", family: .programs,
                kind: .program(
                    arguments: ["python3", "-c", Programs.jsonBuildParseScript(elements: 120_000)],
                    quickArguments: ["python3", "-c", Programs.jsonBuildParseScript(elements: 6_000)]),
                operations: 1, columns: AllocatorColumn.processAllocatorColumns),
        ] + Suites.all.flatMap { $0.workloads.map { $0.workload.addingProcessAllocatorColumns() } }

    /// The thread counts of the field's multi-threaded shapes: 4 and 8 oversubscribe a
    /// 2-CPU machine on purpose, to show that nothing collapses when threads outnumber CPUs.
    static let fieldThreadCounts = [1, 2, 4, 8]

    /// The field's usual workload shapes (thread churn, false sharing, random slots, big
    /// blocks), written here from their descriptions. Operations are sized so that a full
    /// cell runs a few tenths of a second on every column (see docs/benchmarks.md).
    static var fieldShapes: [Workload] {
        let churn = [false, true].flatMap { sized in
            fieldThreadCounts.map { threads in
                Workload(
                    name: "thread-churn\(sized ? "-sized" : "")-t\(threads)", family: .threadChurn,
                    kind: .threadChurn(
                        threads: threads, slots: 5_000, roundLength: 5_000, minimumSize: 8, maximumSize: 1_000,
                        sized: sized),
                    operations: 4_000_000)
            }
        }
        let sharing = [false, true].flatMap { passive in
            fieldThreadCounts.map { threads in
                Workload(
                    name: "false-sharing-\(passive ? "passive" : "active")-t\(threads)", family: .falseSharing,
                    kind: .falseSharing(threads: threads, objectSize: 8, writes: 1_000, passive: passive),
                    operations: 1_000_000, columns: AllocatorColumn.mallocColumns + [.writesOnly])
            }
        }
        let slots = fieldThreadCounts.map { threads in
            Workload(
                name: "random-slots-1024-t\(threads)", family: .randomSlots,
                kind: .randomSlots(threads: threads, slots: 1_000, maximumSize: 1024), operations: 10_000_000)
        }
        let big = Workload(
            name: "big-blocks-5-25mib", family: .bigBlocks,
            kind: .bigBlocks(live: 20, minimumSize: 5 << 20, maximumSize: 25 << 20), operations: 2_000)
        return churn + sharing + slots + [big]
    }

    /// This suite workload with the process allocator columns after its baselines: every
    /// Swift-level workload also runs on BinnedAlloc as the allocator of the whole process.
    func addingProcessAllocatorColumns() -> Workload {
        guard !columns.contains(.binnedMalloc) else { return self }
        let baselines = columns.prefix { $0.isBaseline }
        return Workload(
            name: name, family: family, kind: kind, operations: operations,
            columns: baselines + [.binnedMalloc] + columns.dropFirst(baselines.count))
    }

    /// The families of `workloads` in the order they first appear: the tables' order.
    public static func families(of workloads: [Workload] = all) -> [Family] {
        var families: [Family] = []
        for workload in workloads where !families.contains(workload.family) { families.append(workload.family) }
        return families
    }

    public static func named(_ name: String) -> Workload? { all.first { $0.name == name } }
}

/// The allocator a worker process runs on: which worker executable it is, and which
/// library the driver preloads into it.
public enum ProcessAllocator: String, Sendable, CaseIterable {
    /// glibc's malloc: `compare-worker`.
    case glibc
    /// jemalloc, linked into `compare-worker-jemalloc`, serving the whole process.
    case jemalloc
    /// Debian's mimalloc 2.0 (`libmimalloc2.0`), preloaded into `compare-worker`.
    case mimalloc
    /// Debian's tcmalloc 2.10 (gperftools' minimal build, `libtcmalloc-minimal4`),
    /// preloaded into `compare-worker`.
    case tcmalloc
    /// BinnedAlloc through its C ABI: `compare-worker-binnedmalloc` links the BinnedMalloc
    /// product, which makes it the allocator of the whole process, Swift runtime included.
    case binnedMalloc
    /// BinnedAlloc's hardened build, `libbinnedmalloc-hardened.so` (`make preload` builds it;
    /// `BINNEDMALLOC_HARDENED_LIBRARY` names another), preloaded into `compare-worker`: what
    /// its heap-misuse checks cost against the BinnedMalloc column.
    case binnedMallocHardened

    /// The worker executable, a sibling of `compare` in the build folder.
    public var worker: String {
        switch self {
        case .glibc, .mimalloc, .tcmalloc, .binnedMallocHardened: "compare-worker"
        case .jemalloc: "compare-worker-jemalloc"
        case .binnedMalloc: "compare-worker-binnedmalloc"
        }
    }

    /// The library whose `malloc` serves this process (`Worker.verify` checks it): a soname,
    /// or the path of BinnedAlloc's hardened library (it has no soname); nil for BinnedMalloc,
    /// which is linked in statically and so no library's.
    public var soname: String? {
        switch self {
        case .glibc: "libc.so.6"
        case .jemalloc: "libjemalloc.so.2"
        case .mimalloc: "libmimalloc.so.2"
        case .tcmalloc: "libtcmalloc_minimal.so.4"
        case .binnedMalloc: nil
        case .binnedMallocHardened: libraryPath
        }
    }

    /// The Debian package that brings the library (`make deps` installs them).
    public var debianPackage: String? {
        switch self {
        case .glibc, .binnedMalloc, .binnedMallocHardened: nil
        case .jemalloc: "libjemalloc2"
        case .mimalloc: "libmimalloc2.0"
        case .tcmalloc: "libtcmalloc-minimal4"
        }
    }

    /// Where the library is: where Debian installs a peer's, and BinnedAlloc's hardened one
    /// from `BINNEDMALLOC_HARDENED_LIBRARY` (`make bench` sets it), else from where `make
    /// preload` puts it beside this checkout.
    public var libraryPath: String? {
        switch self {
        case .glibc, .binnedMalloc: nil
        case .jemalloc, .mimalloc, .tcmalloc: soname.map { "/usr/lib/x86_64-linux-gnu/\($0)" }
        case .binnedMallocHardened:
            getenv("BINNEDMALLOC_HARDENED_LIBRARY").map { String(cString: $0) }
                ?? "allocators/BinnedAlloc/.build-hardened/release/libbinnedmalloc-hardened.so"
        }
    }

    /// The library the driver puts in the worker's `LD_PRELOAD`: the peers that no worker
    /// executable links (jemalloc's worker links it; a preloaded copy would be a second one).
    public var preloadedLibrary: String? {
        switch self {
        case .mimalloc, .tcmalloc, .binnedMallocHardened: libraryPath
        case .glibc, .jemalloc, .binnedMalloc: nil
        }
    }

    /// Whether this process allocator can run here: nil when it can, else why not (its
    /// library is not installed). A missing peer drops its column, not the whole run.
    public var unavailableReason: String? {
        guard let library = preloadedLibrary, access(library, R_OK) != 0 else { return nil }
        guard let package = debianPackage else { return "\(library) is not built (make preload)" }
        return "\(library) is not installed (make deps, or apt-get install \(package))"
    }
}

/// A column of the tables: an allocator, and the process it runs in.
public struct AllocatorColumn: Sendable, Equatable {
    /// The name in the tables and on the worker's command line.
    public let name: String
    /// The process allocator of the worker that runs this column.
    public let process: ProcessAllocator
    /// Whether this is one of the baselines every ratio is taken against.
    public let isBaseline: Bool

    public init(name: String, process: ProcessAllocator, isBaseline: Bool = false) {
        self.name = name
        self.process = process
        self.isBaseline = isBaseline
    }

    /// The worker executable, a sibling of `compare` in the build folder.
    public var worker: String { process.worker }

    /// glibc's allocator: the process allocator of `compare-worker`.
    public static let glibc = AllocatorColumn(name: "glibc", process: .glibc, isBaseline: true)
    /// jemalloc: the process allocator of `compare-worker-jemalloc`, which links it.
    public static let jemalloc = AllocatorColumn(name: "jemalloc", process: .jemalloc, isBaseline: true)

    /// mimalloc: Debian's libmimalloc.so.2, preloaded into `compare-worker`.
    public static let mimalloc = AllocatorColumn(name: "mimalloc", process: .mimalloc)
    /// tcmalloc: Debian's libtcmalloc_minimal.so.4, preloaded into `compare-worker`.
    public static let tcmalloc = AllocatorColumn(name: "tcmalloc", process: .tcmalloc)

    /// The allocators a Swift server would pick instead of glibc's: `× best peer` divides
    /// by the fastest of them on the same row in the same run.
    public static let peers: [AllocatorColumn] = [.jemalloc, .mimalloc, .tcmalloc]

    /// BinnedAlloc through its Swift API, in a process whose malloc is glibc's.
    public static let binnedAlloc = AllocatorColumn(name: "BinnedAlloc", process: .glibc)
    /// BinnedAlloc as the process allocator (the BinnedMalloc product): the baselines' code,
    /// `malloc`/`free` through function pointers or Swift's own allocations, on BinnedAlloc.
    public static let binnedMalloc = AllocatorColumn(name: "BinnedMalloc", process: .binnedMalloc)
    /// BinnedAlloc's hardened build as the process allocator, preloaded into `compare-worker`.
    public static let binnedMallocHardened = AllocatorColumn(
        name: "BinnedMalloc-hardened", process: .binnedMallocHardened)
    /// A row's floor, where it has one: the row's own writes into memory set aside before
    /// the timed run, with no allocation and no release in the loop, in glibc's worker. No
    /// allocator can go below it; each family's unit says what its floor writes.
    public static let writesOnly = AllocatorColumn(name: "writes-only", process: .glibc)

    /// Whether this column runs the baselines' code, only in another process: the process
    /// allocator columns.
    public var runsBaselineCode: Bool { Self.processAllocatorColumns.contains(self) }

    /// The columns whose allocator is the whole process's, baselines first: every
    /// malloc-level row (the malloc-style workloads and the real programs) runs them all.
    public static let processAllocatorColumns: [AllocatorColumn] = [
        .glibc, .jemalloc, .mimalloc, .tcmalloc, .binnedMalloc, .binnedMallocHardened,
    ]

    /// The columns of the malloc-style workloads (`BenchAllocator`), baselines first.
    public static let mallocColumns: [AllocatorColumn] = processAllocatorColumns + [.binnedAlloc]

    /// Every column, baselines first, then the malloc-style columns, then each suite's.
    public static var all: [AllocatorColumn] {
        var columns: [AllocatorColumn] = []
        for column in Workload.all.flatMap(\.columns) where !columns.contains(column) { columns.append(column) }
        return columns
    }

    public static func named(_ name: String) -> AllocatorColumn? { all.first { $0.name == name } }
}
