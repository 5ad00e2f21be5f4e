// LargeAlloc's suite: every column does the same work (same operations, same checksum) and
// reports the extras its family lists. Run in this (glibc) process for the columns that
// need no other worker.

import AllocCore
import Testing

@testable import Workloads

@Suite struct LargeAllocSuiteTests {
    @Test("the columns of each large- workload agree on operations and checksum")
    func columnsAgree() {
        for body in LargeAllocSuite.workloads {
            let workload = body.workload
            #expect(workload.name.hasPrefix("large-"))
            #expect(Array(workload.columns.prefix(2)) == [.glibc, .jemalloc])
            var results: [(String, Measurement)] = []
            for column in [AllocatorColumn.glibc, LargeAllocSuite.mmapColumn, LargeAllocSuite.largeAllocColumn] {
                results.append((column.name, body.measure(column: column, scale: .quick)))
            }
            let (_, reference) = results[0]
            for (name, result) in results {
                #expect(result.operations == reference.operations, "\(workload.name) \(name)")
                #expect(result.checksum == reference.checksum && result.checksum != 0, "\(workload.name) \(name)")
                for extra in workload.family.extras {
                    #expect(result.extras[extra.key] != nil, "\(workload.name) \(name) lacks \(extra.key)")
                }
                #expect(result.nanoseconds > 0)
            }
        }
    }
}
