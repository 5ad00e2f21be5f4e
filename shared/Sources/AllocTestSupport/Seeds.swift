// Seeds for randomized tests: one variable replays a run, every seed is printed before the
// work it drives starts, and a soak runs the same test under many fresh seeds.

import AllocCore
import Glibc
import Synchronization

/// The variable that replays a randomized test: every test that draws a seed uses it.
public let seedVariable = "ALLOC_TEST_SEED"

/// The variable that turns the seed loops of ``forEachTestSeed(_:_:)`` into a soak: the
/// seconds each such test keeps drawing fresh seeds (`make soak` sets it).
public let soakVariable = "ALLOC_TEST_SOAK_SECONDS"

/// The seed a randomized test runs with: `ALLOC_TEST_SEED` when it is set (to replay a
/// failure), otherwise fresh from the clock.
///
/// The seed is printed, and standard output flushed, before the function returns, so a
/// trap inside the library (which kills the process before any `#expect` can report)
/// still leaves it in the log, with the command that replays it.
///
/// - Parameter test: the test's name, printed with the seed (the caller's function by default).
public func testSeed(_ test: String = #function) -> UInt64 {
    let seed = replaySeed() ?? freshSeed()
    announce(seed: seed, test: test)
    return seed
}

/// Runs `body` once for each seed of a randomized model test, printing each seed before
/// its run starts (see ``testSeed(_:)``).
///
/// - `ALLOC_TEST_SEED` set: that seed alone.
/// - `ALLOC_TEST_SOAK_SECONDS` set (by `make soak`): fresh seeds until that many seconds
///   have passed, at least one; the count is printed at the end.
/// - Otherwise: one fresh seed.
///
/// A thrown error ends the loop at its seed. A failed expectation is reported where it
/// happens and the loop goes on, so in a log the seed printed last before a failure is
/// the one that replays it (`make soak` runs one test at a time, and reads the log so).
public func forEachTestSeed(_ test: String = #function, _ body: (UInt64) throws -> Void) rethrows {
    if let seed = replaySeed() {
        announce(seed: seed, test: test)
        return try body(seed)
    }
    guard let budget = soakSeconds() else {
        let seed = freshSeed()
        announce(seed: seed, test: test)
        return try body(seed)
    }
    let deadline = SystemInfo.monotonicNanoseconds() &+ UInt64(budget * 1e9)
    var count = 0
    repeat {
        let seed = freshSeed()
        announce(seed: seed, test: test)
        try body(seed)
        count += 1
    } while SystemInfo.monotonicNanoseconds() < deadline
    print("soak: \(test) ran \(count) seeds")
    fflush(nil)
}

/// `ALLOC_TEST_SEED` as a number, or nil when it is unset; a value that is not a number
/// traps, so a mistyped replay never runs a different seed silently.
func replaySeed() -> UInt64? {
    guard let text = getenv(seedVariable) else { return nil }
    let string = String(cString: text)
    guard let seed = UInt64(string) else {
        preconditionFailure("\(seedVariable)=\(string) is not a seed (a decimal UInt64)")
    }
    return seed
}

/// `ALLOC_TEST_SOAK_SECONDS` as a positive number of seconds, or nil when unset.
func soakSeconds() -> Double? {
    guard let text = getenv(soakVariable) else { return nil }
    let string = String(cString: text)
    guard let seconds = Double(string), seconds > 0 else {
        preconditionFailure("\(soakVariable)=\(string) is not a positive number of seconds")
    }
    return seconds
}

/// A seed no other test of this process drew: the clock mixed with a process-wide counter
/// (two tests starting in the same nanosecond still differ) and the process id.
func freshSeed() -> UInt64 {
    let serial = UInt64(seedSerial.wrappingAdd(1, ordering: .relaxed).newValue)
    var mixer = SplitMix64(
        seed: SystemInfo.monotonicNanoseconds() ^ (serial &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(getpid()) << 40))
    return mixer.next()
}

/// Counts the fresh seeds drawn in this process.
let seedSerial = Atomic<Int>(0)

/// Prints the seed line that `make soak` and a reader of a failed log look for.
func announce(seed: UInt64, test: String) {
    print("seed: \(test) runs with \(seedVariable)=\(seed)")
    fflush(nil)
}
