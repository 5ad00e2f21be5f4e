// Helpers shared by the ArenaAlloc tests: unwrapping results of `~Copyable` receivers
// (the `#require` and `#expect` macros cannot take a mutating call on one), seeds, and
// the check of a trap's message in exit tests.

import AllocCore
import Glibc
import Testing

/// `value`, or a recorded failure and a thrown error when it is nil.
func required<T>(
    _ value: T?, _ what: @autoclosure () -> String = "", sourceLocation: SourceLocation = #_sourceLocation
)
    throws -> T
{
    try #require(value, "\(what())", sourceLocation: sourceLocation)
}

/// A seed for a randomized test: `ARENA_TEST_SEED` from the environment when set (to
/// replay a failure), otherwise fresh from the clock.
func testSeed() -> UInt64 {
    if let text = getenv("ARENA_TEST_SEED"), let seed = UInt64(String(cString: text)) { return seed }
    var mixer = SplitMix64(seed: SystemInfo.monotonicNanoseconds())
    return mixer.next()
}

/// Checks that an exit test's child trapped with a message containing `message`.
func expectTrap(_ result: ExitTest.Result?, _ message: String, sourceLocation: SourceLocation = #_sourceLocation) {
    guard let result else { return }  // the exit test already recorded the failure
    let text = String(decoding: result.standardErrorContent, as: UTF8.self)
    #expect(
        text.contains(message), "expected a trap saying \"\(message)\", stderr: \(text.prefix(600))",
        sourceLocation: sourceLocation)
}
