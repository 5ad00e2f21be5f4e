import AllocCore
import AllocTestSupport
import Testing

enum TestEvent: Int, CaseIterable { case allocations, frees, peak }

@Suite struct CountersTests {
    @Test func countersAddRaiseAndSnapshot() throws {
        let counters = Counters<TestEvent>.allocate()
        defer { counters.deallocate() }
        #expect(Counters<TestEvent>.byteCount == 24)
        counters.addFromOwner(3, to: .allocations)
        counters.add(2, to: .frees)
        counters.raise(.peak, to: 10)
        counters.raise(.peak, to: 4)
        #expect(counters.value(of: .allocations) == 3)
        #expect(Counters<TestEvent>(at: counters.address).value(of: .frees) == 2)
        let snapshot = counters.snapshot()
        #expect(snapshot[.peak] == 10)
        #expect((snapshot + snapshot).values == [6, 4, 20])
        #expect(CounterSnapshot<TestEvent>.zero.values == [0, 0, 0])
    }
}

enum SparseEvent: Int, CaseIterable { case first = 0, second = 100 }

@Suite struct CountersMisuseTests {
    /// A key's raw value is its counter's index, so keys must be dense from 0.
    @Test func sparseKeysTrapAtInitialization() async {
        await #expect(processExitsWith: .failure) { _ = Counters<SparseEvent>.allocate() }
    }
}

@Suite struct CountersStressTests {
    /// Shared adds from several threads lose nothing; owner adds from one writer are read
    /// untorn by another thread, and never go backwards.
    @Test func sharedAndOwnerCountersUnderConcurrency() throws {
        let counters = Counters<TestEvent>.allocate()
        defer { counters.deallocate() }
        let iterations = 20_000
        try onThreads(4) { thread in
            for index in 0..<iterations {
                counters.add(1, to: .frees)
                counters.raise(.peak, to: thread * iterations + index)
                if thread == 0 {
                    counters.addFromOwner(1, to: .allocations)
                } else if thread == 1 {
                    var last = 0
                    let seen = counters.value(of: .allocations)
                    precondition(seen >= last, "an owner counter went backwards")
                    last = seen
                }
            }
        }
        #expect(counters.value(of: .frees) == 4 * iterations)
        #expect(counters.value(of: .allocations) == iterations)
        #expect(counters.value(of: .peak) == 4 * iterations - 1)
    }
}
