// ArenaAlloc's suite: every column of every workload does the same work (same checksum,
// same operation count). The workload functions run here for two cycles each (one that
// grows the arena, one after its reset), in this (glibc) process; the jemalloc column runs
// the glibc column's code in another process.

import Testing

@testable import Workloads

// Serialized: the workloads keep their warm arena in a static (a worker runs one cell).
@Suite(.serialized) struct ArenaAllocSuiteTests {
    typealias Suite = ArenaAllocSuite

    /// Each workload's column functions, baseline first (the process-allocator columns, such as
    /// BinnedMalloc, run the baselines' function in their own process).
    static let columns: [String: [@Sendable () -> Measurement]] = [
        "arena-small-u32": [
            { Suite.mallocSmall(cycles: 2) }, { Suite.arenaSmall(cycles: 2) }, { Suite.sharedSmall(cycles: 2) },
        ],
        "arena-small-u32-fresh": [{ Suite.mallocSmall(cycles: 2) }, { Suite.freshArenaSmall(cycles: 2) }],
        "arena-put": [{ Suite.classInstances(cycles: 2) }, { Suite.arenaPut(cycles: 2) }],
        "arena-grow-shrink": [{ Suite.mallocGrowShrink(cycles: 2) }, { Suite.arenaGrowShrink(cycles: 2) }],
        "arena-push": [{ Suite.arrayPush(cycles: 2) }, { Suite.arenaPush(cycles: 2) }],
        "arena-collect-111": [
            { Suite.arrayFromSequence(cycles: 2, hideCount: false) },
            { Suite.arenaCollect(cycles: 2, hideCount: false) },
        ],
        "arena-collect-111-filter": [
            { Suite.arrayFromSequence(cycles: 2, hideCount: true) }, { Suite.arenaCollect(cycles: 2, hideCount: true) },
        ],
        "arena-array-1000x100": [{ Suite.swiftArrays(cycles: 2) }, { Suite.arenaArrays(cycles: 2) }],
        "arena-string-1000x100": [{ Suite.swiftStrings(cycles: 2) }, { Suite.arenaStrings(cycles: 2) }],
        "arena-t2": [
            { Suite.mallocTwoThreads(cycles: 2) }, { Suite.sharedTwoThreads(cycles: 2) },
            { Suite.localTwoThreads(cycles: 2) },
        ],
    ]

    @Test("every workload is listed with its baselines first, and every column is tested")
    func catalogue() {
        #expect(Set(Suite.workloads.map(\.workload.name)) == Set(Self.columns.keys))
        for workload in Suite.workloads.map(\.workload) {
            #expect(workload.columns.prefix(2) == [.glibc, .jemalloc], "\(workload.name): baselines first")
            let ownColumns = workload.columns.filter { !$0.runsBaselineCode }
            #expect(ownColumns.count + 1 == Self.columns[workload.name]?.count, "\(workload.name)")
            #expect(Workload.named(workload.name) != nil, "\(workload.name) is not in the catalogue")
        }
    }

    @Test("every column of a workload gives the same checksum", arguments: Self.columns.keys.sorted())
    func columnsAgree(name: String) throws {
        let measurements = try #require(Self.columns[name]).map { $0() }
        let reference = measurements[0]
        #expect(reference.checksum != 0 && reference.operations == 2 * Suite.cycle)
        for (index, measurement) in measurements.enumerated() {
            #expect(measurement.checksum == reference.checksum, "\(name): column \(index) wrote other values")
            #expect(measurement.operations == reference.operations, "\(name): column \(index) counted otherwise")
        }
    }
}
