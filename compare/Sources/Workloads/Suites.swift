// Suites: the workloads an allocator package brings that are not malloc-shaped (an arena
// reset, a ring of buffers, large regions, values dropped in the background). Each
// package's suite lives in a file of its own here, `<Name>Suite.swift`; this file is the
// protocols and the list. docs/benchmarks.md says how to add a workload.

/// One workload of a suite: the row it adds to a table and the code that runs it.
///
/// A workload is a value whose type has a body, so declaring a row without the code that
/// runs it does not compile. The worker process receives only the workload's name and
/// finds the value by it (``Suites/body(of:)``): the same list declares the rows and
/// their code, so a name never reaches a worker without a body to run.
public protocol SuiteWorkload: Sendable {
    /// The row: name, family, operations and columns, with `kind: .suite(suite name)`.
    var workload: Workload { get }
    /// Runs the workload for `column` in this process (the worker has already checked
    /// that the process allocator is the column's): warm-up, then one timed run. Every
    /// column does the same work and returns the same checksum; the driver checks it.
    func measure(column: AllocatorColumn, scale: Scale) -> Measurement
}

/// The workloads one allocator package brings.
///
/// A suite's workloads list their columns: the glibc and jemalloc baselines first (the
/// same objects allocated the way a program would without the package, in a process whose
/// malloc is that baseline), then the package's own columns.
public protocol BenchSuite {
    /// The suite's name, which its workloads' `.suite(name)` kind carries.
    static var name: String { get }
    /// The suite's workloads, in table order.
    static var workloads: [any SuiteWorkload] { get }
}

/// Every suite, in table order.
public enum Suites {
    public static var all: [any BenchSuite.Type] {
        [ArenaAllocSuite.self, RingAllocSuite.self, LargeAllocSuite.self, BackgroundDropSuite.self]
    }

    /// The code that runs `workload`, or nil for the malloc-style workloads.
    public static func body(of workload: Workload) -> (any SuiteWorkload)? {
        guard case .suite(let name) = workload.kind, let suite = all.first(where: { $0.name == name }) else {
            return nil
        }
        return suite.workloads.first { $0.workload.name == workload.name }
    }
}

/// Latencies of single operations, kept in memory allocated before the clock starts, and
/// summarized as the extras `p50`, `p99`, `p99.9` and `max` (nanoseconds).
public struct LatencyRecorder: ~Copyable {
    let samples: UnsafeMutablePointer<UInt64>
    let capacity: Int
    var count = 0

    /// Room for `capacity` latencies; later ones are not kept.
    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        samples = .allocate(capacity: self.capacity)
    }

    deinit { samples.deallocate() }

    @inline(__always)
    public mutating func record(_ nanoseconds: UInt64) {
        guard count < capacity else { return }
        samples[count] = nanoseconds
        count += 1
    }

    /// The percentiles of what was recorded, as `Measurement.extras` (all 0 when empty).
    public func percentiles() -> [String: Double] {
        var sorted = UnsafeMutableBufferPointer(start: samples, count: count)
        sorted.sort()
        // Nearest rank, as HdrHistogram's valueAtPercentile: the smallest sample with at
        // least `fraction` of all samples at or below it (p99.9 of 1,000 is the 999th).
        func at(_ fraction: Double) -> Double {
            let rank = max(1, Int((Double(count) * fraction).rounded(.up)))
            return count == 0 ? 0 : Double(sorted[min(count, rank) - 1])
        }
        return ["p50": at(0.5), "p99": at(0.99), "p99.9": at(0.999), "max": count == 0 ? 0 : Double(sorted[count - 1])]
    }
}

extension Workload.Family.Extra {
    /// The latency percentile columns `LatencyRecorder.percentiles()` fills.
    public static let latencyPercentiles: [Self] = [
        Self(key: "p50", header: "p50 ns"), Self(key: "p99", header: "p99 ns"),
        Self(key: "p99.9", header: "p99.9 ns"), Self(key: "max", header: "max ns"),
    ]
}
