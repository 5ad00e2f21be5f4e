// The worker side of the harness: a worker process runs one workload on one allocator
// and prints one line, `measurement nanoseconds=… operations=… checksum=… peak=…`, the
// last being its peak RSS in bytes.

import AllocCore
import BinnedAlloc
import Glibc

/// The entry point of a worker executable.
public enum Worker {
    /// Runs `workload` for `column` in this process: the malloc-style workloads on the
    /// process's malloc (the baselines) or on a package's Swift API, suite workloads
    /// through their suite.
    static func measure(_ workload: Workload, column: AllocatorColumn, scale: Scale) -> Measurement {
        if case .program(let arguments, let quickArguments) = workload.kind {
            return Programs.measure(scale == .quick ? quickArguments : arguments, column: column, scale: scale)
        }
        if workload.isSuite {
            guard let body = Suites.body(of: workload) else { preconditionFailure("no suite runs \(workload.name)") }
            // A process allocator column runs what the baselines run: suites know them as glibc.
            return body.measure(column: column.runsBaselineCode ? .glibc : column, scale: scale)
        }
        switch column {
        case .binnedAlloc: return Workloads.measure(workload, on: BinnedAllocBench(), scale: scale)
        case .writesOnly: return measureFloor(workload, scale: scale)
        default:
            precondition(column.runsBaselineCode, "no malloc-style adapter for column \(column.name)")
            guard column.process == .binnedMalloc else {
                return Workloads.measure(workload, on: ProcessMalloc(), scale: scale)
            }
            // The counters around each run; the last run is the timed one.
            var around: (before: BinnedAllocStatistics, after: BinnedAllocStatistics)? = nil
            var result = Workloads.measure(workload, scale: scale) { operations in
                let before = BinnedAllocator.shared.statistics()
                let measurement = run(workload.kind, on: ProcessMalloc(), operations: operations)
                around = (before, BinnedAllocator.shared.statistics())
                return measurement
            }
            if let around { result.extras.merge(globalLockRates(from: around.before, to: around.after)) { $1 } }
            return result
        }
    }

    /// The keys of BinnedMalloc's global-lock rates in `Measurement.extras`, and their
    /// headers in the table of `Report.globalLockTable`.
    public static let globalLockExtras = [
        Workload.Family.Extra(key: "locks.pool", header: "pool"),
        Workload.Family.Extra(key: "locks.spanCache", header: "span cache"),
        Workload.Family.Extra(key: "locks.fallback", header: "fallback cache"),
    ]

    /// BinnedAlloc's global-lock acquisitions per million allocations and frees between two
    /// snapshots of its counters (the process's, the harness's own allocations included).
    static func globalLockRates(
        from before: BinnedAllocStatistics, to after: BinnedAllocStatistics
    ) -> [String: Double] {
        let perMillion = 1e6 / Double(max(1, after.operations - before.operations))
        let (old, new) = (before.globalLockAcquisitions, after.globalLockAcquisitions)
        let counts = [new.pool - old.pool, new.spanCache - old.spanCache, new.fallback - old.fallback]
        var rates: [String: Double] = [:]
        for (extra, count) in zip(globalLockExtras, counts) { rates[extra.key] = Double(count) * perMillion }
        return rates
    }

    /// nil when this process's malloc is `process`, else why not: the `malloc` the process
    /// resolves to must be the one its library exports (a preloaded peer's, or glibc's when
    /// nothing is preloaded).
    static func verify(_ process: ProcessAllocator) -> String? {
        let malloc = ProcessMalloc()
        if let soname = process.soname {
            return malloc.isProvided(by: soname)
                ? nil : "malloc in this process is not \(process.rawValue)'s (\(soname))"
        }
        // BinnedMalloc: the process malloc is no library's, and what it hands out shows in
        // BinnedAlloc's own counters.
        let libraries = ProcessAllocator.allCases.compactMap(\.soname)
        if let owner = libraries.first(where: { malloc.isProvided(by: $0) }) {
            return "malloc in this process is still \(owner)'s, not BinnedMalloc's"
        }
        let sizeClass = BinnedAllocator.sizeClasses.index(for: 80)
        let before = BinnedAllocator.shared.statistics().sizeClasses[sizeClass].allocations
        let blocks = (0..<10).map { _ in malloc.allocate(80) }
        let after = BinnedAllocator.shared.statistics().sizeClasses[sizeClass].allocations
        for block in blocks { malloc.deallocate(block, byteCount: 80) }
        return after - before >= 10 ? nil : "malloc(80) did not allocate from BinnedAlloc"
    }

    /// Parses `--workload NAME --allocator NAME --scale full|quick`, checks that the column
    /// runs in this executable (`process` is the allocator it links) and that the process
    /// runs on the column's allocator, runs the workload and
    /// prints the line. Exits 2 on a usage error and 3 when the allocator is not the one
    /// claimed.
    public static func main(process: ProcessAllocator) -> Never {
        var options: [String: String] = [:]
        var arguments = CommandLine.arguments.dropFirst()
        while let flag = arguments.popFirst() {
            guard flag.hasPrefix("--"), let value = arguments.popFirst() else {
                fail(2, "usage: --workload NAME --allocator NAME --scale full|quick")
            }
            options[String(flag.dropFirst(2))] = value
        }
        guard let workloadName = options["workload"], let workload = Workload.named(workloadName) else {
            fail(2, "unknown workload \(options["workload"] ?? "(none)")")
        }
        guard let column = workload.columns.first(where: { $0.name == options["allocator"] }) else {
            fail(2, "workload \(workload.name) has no column \(options["allocator"] ?? "(none)")")
        }
        // One executable serves several process allocators (glibc's worker with a peer
        // preloaded): the column names which, and `verify` proves it.
        guard column.worker == process.worker else {
            fail(2, "column \(column.name) runs in \(column.worker), not in this worker")
        }
        guard let scale = Scale(rawValue: options["scale"] ?? "full") else { fail(2, "unknown scale") }
        if let problem = verify(column.process) { fail(3, problem) }
        let result = measure(workload, column: column, scale: scale)
        // The worker's own high-water mark: wait4's figure would include the driver's.
        let peak = result.peakResidentBytes ?? SystemInfo.peakResidentBytes ?? 0
        let extras = result.extras.keys.sorted().map { " extra.\($0)=\(result.extras[$0]!)" }.joined()
        print(
            "measurement nanoseconds=\(result.nanoseconds) operations=\(result.operations) checksum=\(result.checksum) peak=\(peak)\(extras)"
        )
        exit(0)
    }

    static func fail(_ status: Int32, _ message: String) -> Never {
        let line = "compare worker: \(message)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        exit(status)
    }

    /// Reads the line a worker printed: the measurement and the worker's peak RSS in bytes.
    public static func parse(_ output: String) -> (measurement: Measurement, peakResidentBytes: Int)? {
        guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("measurement ") }) else { return nil }
        var fields: [Substring: Substring] = [:]
        for pair in line.split(separator: " ").dropFirst() {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[parts[0]] = parts[1] }
        }
        guard let nanoseconds = fields["nanoseconds"].flatMap({ UInt64($0) }),
            let operations = fields["operations"].flatMap({ Int($0) }),
            let checksum = fields["checksum"].flatMap({ UInt64($0) }),
            let peak = fields["peak"].flatMap({ Int($0) })
        else { return nil }
        var extras: [String: Double] = [:]
        for (key, value) in fields where key.hasPrefix("extra.") {
            guard let number = Double(value) else { return nil }
            extras[String(key.dropFirst("extra.".count))] = number
        }
        return (
            Measurement(nanoseconds: nanoseconds, operations: operations, checksum: checksum, extras: extras), peak
        )
    }
}
