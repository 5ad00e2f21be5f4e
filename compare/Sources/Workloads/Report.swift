// Turning repeated measurements into the tables: medians with their spread, ratios against
// the baselines measured in the same run, peak RSS beside time.

/// One run of one cell in its own process.
public struct Sample: Sendable, Codable, Equatable {
    public var workload: String
    public var allocator: String
    public var repetition: Int
    public var nanoseconds: UInt64
    public var operations: Int
    public var checksum: UInt64
    public var peakResidentBytes: Int
    public var userNanoseconds: Int
    public var systemNanoseconds: Int
    /// The workload's extra figures (`Measurement.extras`).
    public var extras: [String: Double]

    public init(
        workload: String, allocator: String, repetition: Int, measurement: Measurement,
        peakResidentBytes: Int, userNanoseconds: Int, systemNanoseconds: Int
    ) {
        self.workload = workload
        self.allocator = allocator
        self.repetition = repetition
        nanoseconds = measurement.nanoseconds
        operations = measurement.operations
        checksum = measurement.checksum
        extras = measurement.extras
        self.peakResidentBytes = peakResidentBytes
        self.userNanoseconds = userNanoseconds
        self.systemNanoseconds = systemNanoseconds
    }

    /// Nanoseconds per operation.
    public var nanosecondsPerOperation: Double { Double(nanoseconds) / Double(max(1, operations)) }
}

/// Everything one run of `compare` measured: the results file that `--json` writes and
/// `--charts DIR --from FILE` reads (BenchCharts reads and writes it, with Foundation, which
/// the workers that link this module do without).
public struct Results: Sendable, Codable, Equatable {
    /// When the run ended, in ISO 8601 (`2026-12-07T05:20:36Z`).
    public var date: String
    public var scale: Scale
    /// How many times every cell ran.
    public var repetitions: Int
    /// The CPUs of the machine that ran it.
    public var cpuCount: Int
    /// The machine in words (CPU model, operating system, kernel); nil in files written before
    /// it was recorded.
    public var machine: String?
    /// Every run of every cell, in the order they ran.
    public var samples: [Sample]

    public init(date: String, scale: Scale, repetitions: Int, cpuCount: Int, machine: String?, samples: [Sample]) {
        self.date = date
        self.scale = scale
        self.repetitions = repetitions
        self.cpuCount = cpuCount
        self.machine = machine
        self.samples = samples
    }
}

/// The median of some values with their minimum and maximum.
public struct Spread: Sendable, Equatable {
    public var median: Double
    public var minimum: Double
    public var maximum: Double

    /// nil for no values. An even count takes the mean of the two middle values.
    public init?(_ values: [Double]) {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        let middle = sorted.count / 2
        median = sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
        minimum = sorted[0]
        maximum = sorted[sorted.count - 1]
    }
}

/// The summary of one (workload, allocator) cell.
public struct CellSummary: Sendable, Equatable {
    public var workload: String
    public var allocator: String
    /// Nanoseconds per operation.
    public var time: Spread
    /// Peak RSS in bytes.
    public var peakResidentBytes: Spread
    /// The spread of each extra figure over the repetitions.
    public var extras: [String: Spread] = [:]
}

/// Renders the markdown tables.
public enum Report {
    /// Summaries of every cell that has samples.
    public static func summarize(_ samples: [Sample]) -> [CellSummary] {
        var order: [String] = []
        var grouped: [String: [Sample]] = [:]
        for sample in samples {
            let key = sample.workload + "\u{0}" + sample.allocator
            if grouped[key] == nil { order.append(key) }
            grouped[key, default: []].append(sample)
        }
        return order.map { key in
            let cell = grouped[key]!
            var extras: [String: Spread] = [:]
            for extra in Set(cell.flatMap(\.extras.keys)) {
                extras[extra] = Spread(cell.compactMap { $0.extras[extra] })
            }
            return CellSummary(
                workload: cell[0].workload, allocator: cell[0].allocator,
                time: Spread(cell.map(\.nanosecondsPerOperation))!,
                peakResidentBytes: Spread(cell.map { Double($0.peakResidentBytes) })!, extras: extras)
        }
    }

    /// The median time per operation of the fastest peer (jemalloc, mimalloc, tcmalloc)
    /// that ran `workload`: what `× best peer` divides by. nil when no peer ran it.
    public static func bestPeerTime(of workload: String, in summaries: [CellSummary]) -> Double? {
        let peers = Set(AllocatorColumn.peers.map(\.name))
        return summaries.filter { $0.workload == workload && peers.contains($0.allocator) }.map(\.time.median).min()
    }

    /// One markdown table per family that has results: a row per (workload, allocator),
    /// with the median time per operation, its range, ratios against the glibc and
    /// jemalloc rows of the same workload and against the fastest peer's (below 1 is
    /// faster), peak RSS, RSS against jemalloc's, and the medians of the family's extra
    /// figures.
    public static func markdown(_ summaries: [CellSummary], workloads: [Workload] = Workload.all) -> String {
        var text = ""
        for family in Workload.families(of: workloads) {
            let rows = workloads.filter { $0.family == family }.flatMap { workload in
                summaries.filter { $0.workload == workload.name }
            }
            guard !rows.isEmpty else { continue }
            text += "### \(family.title)\n\nUnit: \(family.unit).\n\n"
            text +=
                "| workload | allocator | ns/op (median) | min – max | × glibc | × jemalloc | × best peer | peak RSS MiB | RSS × jemalloc |"
                + family.extras.map { " \($0.header) |" }.joined() + "\n"
            text +=
                "|---|---|--:|--:|--:|--:|--:|--:|--:|" + String(repeating: "--:|", count: family.extras.count) + "\n"
            for row in rows {
                let glibc = summaries.first {
                    $0.workload == row.workload && $0.allocator == AllocatorColumn.glibc.name
                }
                let jemalloc = summaries.first {
                    $0.workload == row.workload && $0.allocator == AllocatorColumn.jemalloc.name
                }
                let cells =
                    [
                        row.workload, row.allocator, format(row.time.median),
                        "\(format(row.time.minimum)) – \(format(row.time.maximum))",
                        ratio(row.time.median, glibc?.time.median), ratio(row.time.median, jemalloc?.time.median),
                        ratio(row.time.median, bestPeerTime(of: row.workload, in: summaries)),
                        format(row.peakResidentBytes.median / 1_048_576),
                        ratio(row.peakResidentBytes.median, jemalloc?.peakResidentBytes.median),
                    ]
                    + family.extras.map { extra in
                        row.extras[extra.key].map { format($0.median, digits: extra.digits) } ?? "–"
                    }
                text += "| " + cells.joined(separator: " | ") + " |\n"
            }
            text += "\n"
        }
        return text + globalLockTable(summaries, workloads: workloads)
    }

    /// How often BinnedMalloc took each global lock, per million allocations and frees, on
    /// every malloc-level workload it ran (issue 18: none on a thread's steady-state path).
    static func globalLockTable(_ summaries: [CellSummary], workloads: [Workload]) -> String {
        let keys = Worker.globalLockExtras
        let rows = workloads.flatMap { workload in
            summaries.filter { $0.workload == workload.name && $0.extras[keys[0].key] != nil }
        }
        guard !rows.isEmpty else { return "" }
        var text = "### Global locks taken by BinnedMalloc\n\n"
        text += "Unit: acquisitions per million allocations and frees, from BinnedAlloc's counters around the timed "
        text += "run (its set-up and tear-down included), median of the repetitions.\n\n"
        text += "| workload |" + keys.map { " \($0.header) |" }.joined() + "\n"
        text += "|---|" + String(repeating: "--:|", count: keys.count) + "\n"
        for row in rows {
            let cells = [row.workload] + keys.map { key in row.extras[key.key].map { format($0.median) } ?? "–" }
            text += "| " + cells.joined(separator: " | ") + " |\n"
        }
        return text + "\n"
    }

    static func ratio(_ value: Double, _ baseline: Double?) -> String {
        guard let baseline, baseline > 0 else { return "–" }
        return format(value / baseline, digits: 2)
    }

    /// A number with `digits` decimals (one below 100, none above, for times and sizes).
    public static func format(_ value: Double, digits: Int? = nil) -> String {
        let decimals = digits ?? (value < 100 ? 1 : 0)
        var scale = 1.0
        for _ in 0..<decimals { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        var text = String(Int(rounded))
        if decimals > 0 {
            let fraction = Int(((rounded - Double(Int(rounded))) * scale).rounded())
            let digitsText = String(fraction)
            text += "." + String(repeating: "0", count: decimals - digitsText.count) + digitsText
        }
        return text
    }
}
