// The worker side of the harness: a worker process runs one workload on one allocator
// and prints one line, `measurement nanoseconds=… operations=… checksum=… peak=…`, the
// last being its peak RSS in bytes.

import AllocCore
import Glibc

/// The entry point of a worker executable.
public enum Worker {
    /// An allocator this worker can measure.
    public struct Entry: Sendable {
        public let name: String
        /// nil when the process really runs on this allocator, else why not.
        public let verify: @Sendable () -> String?
        public let measure: @Sendable (Workload, Scale) -> Measurement

        public init(
            name: String, verify: @escaping @Sendable () -> String?,
            measure: @escaping @Sendable (Workload, Scale) -> Measurement
        ) {
            self.name = name
            self.verify = verify
            self.measure = measure
        }

        /// BinnedAlloc through its Swift API, in a process whose own malloc is glibc's.
        public static var binnedAlloc: Entry {
            Entry(
                name: AllocatorColumn.binnedAlloc.name,
                verify: {
                    ProcessMalloc().isProvided(by: "libc.so.6") ? nil : "the process malloc is not glibc's"
                },
                measure: { workload, scale in Workloads.measure(workload, on: BinnedAllocBench(), scale: scale) })
        }

        /// The process's own malloc, which must come from `library`.
        public static func processMalloc(name: String, library: String) -> Entry {
            Entry(
                name: name,
                verify: {
                    ProcessMalloc().isProvided(by: library)
                        ? nil : "malloc in this process does not come from \(library)"
                },
                measure: { workload, scale in Workloads.measure(workload, on: ProcessMalloc(), scale: scale) })
        }
    }

    /// Parses `--workload NAME --allocator NAME --scale full|quick`, checks that the
    /// process runs on the allocator it claims, runs the workload and prints the line.
    /// Exits 2 on a usage error and 3 when the allocator is not the one claimed.
    public static func main(entries: [Entry]) -> Never {
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
        guard let entry = entries.first(where: { $0.name == options["allocator"] }) else {
            fail(2, "this worker does not run allocator \(options["allocator"] ?? "(none)")")
        }
        guard let scale = Scale(rawValue: options["scale"] ?? "full") else { fail(2, "unknown scale") }
        if let problem = entry.verify() { fail(3, problem) }
        let result = entry.measure(workload, scale)
        // The worker's own high-water mark: wait4's figure would include the driver's.
        let peak = SystemInfo.peakResidentBytes ?? 0
        print(
            "measurement nanoseconds=\(result.nanoseconds) operations=\(result.operations) checksum=\(result.checksum) peak=\(peak)"
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
        return (Measurement(nanoseconds: nanoseconds, operations: operations, checksum: checksum), peak)
    }
}
