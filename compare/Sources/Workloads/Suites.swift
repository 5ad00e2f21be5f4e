// Suites: the workloads an allocator package brings that are not malloc-shaped (an arena
// reset, a ring of buffers, large regions, values dropped in the background). Each
// package's suite lives in a file of its own here, `<Name>Suite.swift`; this file is the
// protocol and the list.

/// The workloads one allocator package brings, and the code that runs them.
///
/// A suite's workloads have `kind: .suite(name)` and list their columns: the glibc and
/// jemalloc baselines first (the same objects allocated the way a program would without
/// the package, in a process whose malloc is that baseline), then the package's own
/// columns. Every column of a workload must do the same work and return the same
/// checksum; the driver checks it.
public protocol BenchSuite {
    /// The suite's name, which its workloads' `.suite(name)` kind carries.
    static var name: String { get }
    /// The suite's workloads, in table order.
    static var workloads: [Workload] { get }
    /// Runs `workload` for `column` in this process (the worker has already checked that
    /// the process allocator is the column's): warm-up, then one timed run.
    static func measure(_ workload: Workload, column: AllocatorColumn, scale: Scale) -> Measurement
}

/// Every suite, in table order.
public enum Suites {
    public static var all: [any BenchSuite.Type] {
        [ArenaAllocSuite.self, RingAllocSuite.self, LargeAllocSuite.self, BackgroundDropSuite.self]
    }

    /// The suite that runs `workload`, or nil for the malloc-style workloads.
    public static func suite(of workload: Workload) -> (any BenchSuite.Type)? {
        guard case .suite(let name) = workload.kind else { return nil }
        return all.first { $0.name == name }
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
