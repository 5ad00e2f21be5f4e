// AllocTestSupport's seeds: ALLOC_TEST_SEED replays, a soak draws fresh seeds for its time,
// and every seed is printed before the work it drives (checked in child processes, whose
// environment and standard output the test controls).

import AllocTestSupport
import Glibc
import Testing

@Suite("Test support: seeds")
struct TestSupportSeedTests {
    @Test("ALLOC_TEST_SEED replays: testSeed and forEachTestSeed return it, printed first")
    func replay() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            setenv("ALLOC_TEST_SEED", "12345", 1)
            unsetenv("ALLOC_TEST_SOAK_SECONDS")
            var seeds: [UInt64] = [testSeed("replay")]
            forEachTestSeed("loop") { seeds.append($0) }
            if seeds != [12345, 12345] { exit(1) }
        }
        let output = String(decoding: result?.standardOutputContent ?? [], as: UTF8.self)
        #expect(output.contains("seed: replay runs with ALLOC_TEST_SEED=12345\n"), "\(output)")
        #expect(output.contains("seed: loop runs with ALLOC_TEST_SEED=12345\n"), "\(output)")
    }

    @Test("a seed that is not a number traps instead of running another seed")
    func badSeed() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            setenv("ALLOC_TEST_SEED", "0x12", 1)
            _ = testSeed()
        }
        expectTrap(result, mentioning: "ALLOC_TEST_SEED=0x12 is not a seed")
    }

    @Test("without a soak, one fresh seed; fresh seeds differ from one another")
    func freshSeeds() {
        guard getenv("ALLOC_TEST_SEED") == nil, getenv("ALLOC_TEST_SOAK_SECONDS") == nil else { return }
        var seeds: [UInt64] = []
        forEachTestSeed { seeds.append($0) }
        #expect(seeds.count == 1)
        let many = Set((0..<100).map { _ in testSeed() })
        #expect(many.count == 100, "fresh seeds repeat")
    }

    @Test("a soak runs fresh seeds, each printed before its run, until its time has passed")
    func soak() async {
        let result = await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            unsetenv("ALLOC_TEST_SEED")
            setenv("ALLOC_TEST_SOAK_SECONDS", "0.2", 1)
            var runs = 0
            forEachTestSeed("soaked") { _ in
                runs += 1
                usleep(20_000)
            }
            // 0.2 s of 20 ms runs: at least 2 (the time is a lower bound, never an upper one).
            if runs < 2 { exit(1) }
        }
        let output = String(decoding: result?.standardOutputContent ?? [], as: UTF8.self)
        let seedLines = output.split(separator: "\n").filter { $0.hasPrefix("seed: soaked runs with ALLOC_TEST_SEED=") }
        #expect(output.contains("soak: soaked ran \(seedLines.count) seeds"), "\(output)")
        #expect(Set(seedLines).count == seedLines.count, "a soak repeated a seed")
    }
}
