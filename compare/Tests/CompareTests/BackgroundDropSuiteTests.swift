// BackgroundDrop's suite: every column does the same work and reports the same checksum
// (tree nodes deinitialised, counted per thread), in this (glibc) process; the jemalloc
// columns run the same code in another process.

import BackgroundDrop
import Testing

@testable import Workloads

// Serialized: the deinit tally is process-wide.
@Suite(.serialized) struct BackgroundDropSuiteTests {
    typealias Suite = BackgroundDropSuite

    @Test(
        "the drop workloads list the baselines first, then the four dropper columns (and the strings two floors); the DeferredDrop row its four"
    )
    func catalogue() {
        #expect(
            Suite.workloads.map(\.workload.name) == [
                "deferred-drop-objects-2048", "drop-trees-1000x1023", "drop-strings-1000x1000",
            ])
        for workload in Suite.workloads.map(\.workload) {
            #expect(workload.columns.prefix(2) == [.glibc, .jemalloc], "\(workload.name): baselines first")
            #expect(workload.columns.count == (workload.name == "drop-strings-1000x1000" ? 8 : 6), "\(workload.name)")
        }
    }

    @Test(
        "DeferredDrop's row: in place, drop and a wrapper, on a dropper of its own and the shared one, count the same objects"
    )
    func deferredChecksumsAgree() throws {
        let dropper = try BackgroundDropper(threads: 1, capacity: Suite.deferredCapacity)
        let runs = [
            Suite.giveUpObjects(operations: 500, dropper: nil, how: .inPlace),
            Suite.giveUpObjects(operations: 500, dropper: dropper, how: .drop),
            Suite.giveUpObjects(operations: 500, dropper: dropper, how: .wrap),
            Suite.giveUpObjects(operations: 500, dropper: .shared, how: .drop),
            Suite.giveUpObjects(operations: 500, dropper: .shared, how: .wrapOnShared),
        ]
        #expect(runs.allSatisfy { $0.checksum == 500 && $0.operations == 500 }, "\(runs.map(\.checksum))")
    }

    @Test("releasing in place and handing off to 1 or 2 threads count the same deinitialised nodes")
    func treesChecksumsAgree() throws {
        let trees = 20
        var checksums: [UInt64] = []
        for threads in [nil, 1, 2] as [Int?] {
            let dropper = try threads.map { try BackgroundDropper(threads: $0) }
            let measurement = Suite.run(
                operations: trees, dropper: dropper, build: { TreeNode(height: 10) }, latencySamples: trees,
                giveUpTimingEach: Suite.giveUpTimingEach
            ) { _ in UInt64(DeinitTally.total()) }
            #expect(measurement.operations == trees)
            #expect(measurement.extras["finished"].map { $0 > 0 } == true)
            #expect(measurement.extras["max"].map { $0 > 0 } == true)
            #expect(measurement.extras["deinit"].map { $0 > 0 } == true)
            checksums.append(measurement.checksum)
        }
        #expect(checksums == Array(repeating: UInt64(trees * 1023), count: 3))
    }

    @Test("the other-thread floor's runner releases every value on its second thread, timed there")
    func otherThreadReleasesEverything() {
        let trees = 20
        let measurement = Suite.runOnOtherThread(
            Suite.ReleaseThread(), operations: trees, build: { TreeNode(height: 10) }, latencySamples: trees,
            releaseTimingEach: Suite.giveUpTimingEach
        ) { _ in UInt64(DeinitTally.total()) }
        #expect(measurement.checksum == UInt64(trees * 1023))
        #expect(measurement.nanoseconds > 0 && measurement.extras["finished"] == measurement.extras["deinit"])
        #expect(measurement.extras["p50"].map { $0 > 0 } == true)
    }

    @Test("the strings' latency pass gives up every inner array on its own, and everything is dropped")
    func stringsLatencyPassDropsEachInnerArray() throws {
        let dropper = try BackgroundDropper(threads: 1)
        let measurement = Suite.run(
            operations: 5, dropper: dropper, build: { [[String]](repeating: ["x"], count: 10) }, latencySamples: 50,
            giveUpTimingEach: Suite.giveUpInnerArraysTimingEach
        ) { UInt64($0) }
        #expect(measurement.checksum == 5)
        // 5 values in the timed pass, then their 10 inner arrays each, one by one.
        #expect(dropper.statistics().droppedInBackground == 5 + 50)
        #expect(measurement.extras["p50"].map { $0 > 0 } == true)
    }
}
