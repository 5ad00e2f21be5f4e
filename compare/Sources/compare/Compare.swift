// `compare`: runs every (workload, allocator) cell in its own child process, repeats the
// whole sweep, and prints one markdown table per workload family with ratios against
// glibc and jemalloc measured in the same run. Progress goes to stderr, tables to stdout,
// every raw figure to the JSON file, one SVG chart per family to the charts folder; with
// --from it runs nothing and draws the charts of an earlier run's JSON file.

import AllocCore
import ArgumentParser
import BenchCharts
import Foundation
import Workloads

@main
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks the project's allocators against glibc, jemalloc, mimalloc and tcmalloc.",
        discussion: """
            Each cell runs in a fresh child process (a worker whose malloc is the allocator \
            under test): a warm-up (none for burst then idle, whose RSS readings are a fresh \
            process's), then the timed run; the worker reports its own peak RSS \
            (VmHWM) and wait4 its CPU times. The sweep \
            over all cells is repeated, and tables show the median with min and max.
            """)

    @Option(help: "Run only workloads whose name or family contains this text (case-insensitive).")
    var filter: String?

    @Option(name: .customLong("allocator"), help: "Run only this allocator column (repeatable). Baselines always run.")
    var allocators: [String] = []

    @Flag(help: "Short runs (1/20 of the operations, 3 repetitions unless --repetitions): CI's smoke test.")
    var quick = false

    @Option(help: "Times to repeat every cell (at least 1; default 5, or 3 with --quick).")
    var repetitions: Int?

    @Option(help: "Write every raw sample to this JSON file.")
    var json: String?

    @Option(
        help: ArgumentHelp(
            "Write one SVG chart per workload family into this folder, from this run or from --from.",
            valueName: "dir"))
    var charts: String?

    @Option(
        help: ArgumentHelp(
            "Run nothing: draw the --charts of an earlier run from the JSON file its --json wrote.",
            valueName: "results.json"))
    var from: String?

    @Flag(help: "List the workloads and allocator columns, and exit.")
    var list = false

    mutating func validate() throws {
        if let repetitions, repetitions < 1 { throw ValidationError("--repetitions must be at least 1") }
        for name in allocators where AllocatorColumn.named(name) == nil {
            throw ValidationError(
                "unknown allocator \(name); known: \(AllocatorColumn.all.map(\.name).joined(separator: ", "))")
        }
        if selectedWorkloads.isEmpty { throw ValidationError("no workload matches --filter \(filter ?? "")") }
        if from != nil {
            guard charts != nil else { throw ValidationError("--from draws charts only: give --charts DIR") }
            guard !quick, repetitions == nil, json == nil, allocators.isEmpty else {
                throw ValidationError(
                    "--from runs nothing: --quick, --repetitions, --json and --allocator do not apply")
            }
        }
    }

    var selectedWorkloads: [Workload] {
        guard let filter = filter?.lowercased() else { return Workload.all }
        return Workload.all.filter {
            $0.name.lowercased().contains(filter) || $0.family.title.lowercased().contains(filter)
        }
    }

    /// The columns of `workload` that run: the baselines always, the others unless
    /// `--allocator` names some; a column whose library is not installed here never
    /// (``unavailableColumns`` says which and why).
    func selectedColumns(of workload: Workload) -> [AllocatorColumn] {
        workload.columns.filter {
            ($0.isBaseline || allocators.isEmpty || allocators.contains($0.name)) && $0.process.unavailableReason == nil
        }
    }

    /// The columns of the selected workloads that cannot run here, with the reason: the
    /// run goes on without them and says so on stderr and above the tables.
    var unavailableColumns: [(column: AllocatorColumn, reason: String)] {
        var seen: [AllocatorColumn] = []
        for column in selectedWorkloads.flatMap(\.columns) where !seen.contains(column) { seen.append(column) }
        return seen.compactMap { column in column.process.unavailableReason.map { (column, $0) } }
    }

    func run() throws {
        if list {
            for workload in Workload.all {
                print(
                    "\(workload.name)\t\(workload.family.title)\t\(workload.columns.map(\.name).joined(separator: ","))"
                )
            }
            print("allocators: \(AllocatorColumn.all.map(\.name).joined(separator: ", "))")
            return
        }
        if let from, let charts {
            try drawCharts(Results.load(from: from), into: charts)
            return
        }
        let scale: Scale = quick ? .quick : .full
        let rounds = repetitions ?? (quick ? 3 : 5)
        let workers = try workerDirectory()
        let skipped = unavailableColumns.map { "the \($0.column.name) column is skipped: \($0.reason)" }
        for line in skipped { FileHandle.standardError.write(Data("compare: \(line)\n".utf8)) }
        let workloads = selectedWorkloads
        let total = rounds * workloads.map { selectedColumns(of: $0).count }.reduce(0, +)
        var samples: [Sample] = []
        var checksums: [String: UInt64] = [:]
        // Repetitions outermost: drift over the run spreads over every cell alike.
        for repetition in 1...rounds {
            for workload in workloads {
                for column in selectedColumns(of: workload) {
                    let sample = try runCell(workload, column, repetition: repetition, scale: scale, in: workers)
                    if let expected = checksums[workload.name], expected != sample.checksum {
                        throw CompareError(
                            "\(workload.name) on \(column.name) wrote checksum \(sample.checksum), other runs \(expected): the runs did different work"
                        )
                    }
                    checksums[workload.name] = sample.checksum
                    samples.append(sample)
                    let progress = "[\(samples.count)/\(total)] \(workload.name) \(column.name) #\(repetition): "
                    FileHandle.standardError.write(
                        Data((progress + String(format: "%.1f ns/op\n", sample.nanosecondsPerOperation)).utf8))
                }
            }
        }
        print(
            "## Allocator benchmarks (\(scale == .quick ? "quick" : "full") run, \(rounds) repetitions, \(SystemInfo.cpuCount) CPUs)\n"
        )
        for line in skipped { print("> Note: \(line).\n") }
        print(Report.markdown(Report.summarize(samples), workloads: workloads), terminator: "")
        let results = Results(
            date: ISO8601DateFormatter().string(from: Date()), scale: scale, repetitions: rounds,
            cpuCount: SystemInfo.cpuCount, machine: Results.describeThisMachine(), samples: samples)
        if let json {
            try results.write(to: json)
            FileHandle.standardError.write(Data("raw samples written to \(json)\n".utf8))
        }
        if let charts { try drawCharts(results, into: charts) }
    }

    /// Writes the charts of the selected workloads' families, and names on stderr each file
    /// and each workload of the results that this build's catalogue no longer has.
    func drawCharts(_ results: Results, into directory: String) throws {
        let orphans = Charts.workloadsWithoutChart(in: results)
        if !orphans.isEmpty {
            let line = "compare: not in this build's catalogue, so in no chart: \(orphans.joined(separator: ", "))\n"
            FileHandle.standardError.write(Data(line.utf8))
        }
        let paths = try Charts.write(results, into: directory, workloads: selectedWorkloads)
        for path in paths { FileHandle.standardError.write(Data("chart written to \(path)\n".utf8)) }
        if paths.isEmpty { throw CompareError("no chart drawn: no selected workload has samples") }
    }

    /// The folder holding this executable and its workers.
    func workerDirectory() throws -> URL {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let directory = executable.deletingLastPathComponent()
        for worker in Set(selectedWorkloads.flatMap { selectedColumns(of: $0) }.map(\.worker)).sorted() {
            let path = directory.appendingPathComponent(worker).path
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw CompareError("worker \(path) is missing: build the whole package (swift build -c release)")
            }
        }
        return directory
    }

    func runCell(
        _ workload: Workload, _ column: AllocatorColumn, repetition: Int, scale: Scale, in directory: URL
    ) throws -> Sample {
        let worker = directory.appendingPathComponent(column.worker).path
        // A peer that no worker links is preloaded into glibc's worker, which proves it
        // runs on that peer (`Worker.verify`) before it measures anything.
        let environment = column.process.preloadedLibrary.map { ["LD_PRELOAD": $0] } ?? [:]
        let result = try ChildProcess.run(
            worker, arguments: ["--workload", workload.name, "--allocator", column.name, "--scale", scale.rawValue],
            environment: environment)
        guard result.succeeded, let (measurement, peak) = Worker.parse(result.outputText) else {
            let how =
                result.exitStatus.map { "exited with status \($0)" }
                ?? "was killed by signal \(result.terminatingSignal ?? 0)"
            throw CompareError("\(column.worker) \(how) on \(workload.name) for \(column.name): \(result.errorText)")
        }
        return Sample(
            workload: workload.name, allocator: column.name, repetition: repetition, measurement: measurement,
            peakResidentBytes: peak, userNanoseconds: result.userNanoseconds,
            systemNanoseconds: result.systemNanoseconds)
    }
}

struct CompareError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
