// The catalogue: which workloads exist, which allocator columns run them, and in which
// worker executable. The driver and the workers read the same catalogue, so a workload
// name means the same thing on both sides of the process boundary.

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
}

/// One benchmark: a name that `--filter` matches, its family (one table per family), what
/// it does, and how many operations a full run performs.
public struct Workload: Sendable {
    public let name: String
    public let family: Family
    public let kind: WorkloadKind
    /// What the time is divided by in the tables (an allocate/free pair, a replacement...).
    public let operations: Int

    public func operations(at scale: Scale) -> Int { max(1, operations / scale.divisor) }

    /// One table per family.
    public enum Family: String, Sendable, CaseIterable {
        case pairs = "Small-object pairs"
        case fifo = "Live blocks freed in FIFO order"
        case workingSet = "Random sizes over a working set"
        case producerConsumer = "Producer/consumer (cross-thread frees)"
        case batch = "Batches (rsbmalloc-style)"

        /// What a row's time measures, printed under the table's title.
        public var unit: String {
            switch self {
            case .pairs: "ns per malloc+free pair, one thread, through function pointers"
            case .fifo: "ns per block (malloc, then free oldest first), one thread"
            case .workingSet:
                "ns per replacement (free a random block, malloc a random size), wall time over all threads' replacements"
            case .producerConsumer: "ns per block (malloc on the producer, free on the consumer), wall time"
            case .batch: "ns per block (allocate the batch, then free it newest first), one thread"
            }
        }
    }

    /// Every workload, in table order.
    public static let all: [Workload] = [
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
    ]

    public static func named(_ name: String) -> Workload? { all.first { $0.name == name } }
}

/// A column of the tables: an allocator, and how a worker reaches it.
public struct AllocatorColumn: Sendable, Equatable {
    /// The name in the tables and on the worker's command line.
    public let name: String
    /// The worker executable, a sibling of `compare` in the build folder.
    public let worker: String
    /// Whether this is one of the baselines every ratio is taken against.
    public let isBaseline: Bool

    /// glibc's allocator: the process allocator of `compare-worker`.
    public static let glibc = AllocatorColumn(name: "glibc", worker: "compare-worker", isBaseline: true)
    /// jemalloc: the process allocator of `compare-worker-jemalloc`, which links it.
    public static let jemalloc = AllocatorColumn(name: "jemalloc", worker: "compare-worker-jemalloc", isBaseline: true)

    /// BinnedAlloc through its Swift API, in a process whose malloc is glibc's.
    public static let binnedAlloc = AllocatorColumn(name: "BinnedAlloc", worker: "compare-worker", isBaseline: false)

    /// Every column, baselines first. Each allocator package adds its own.
    public static let all: [AllocatorColumn] = [.glibc, .jemalloc, .binnedAlloc]

    public static func named(_ name: String) -> AllocatorColumn? { all.first { $0.name == name } }
}
