// Checks of exit tests: the child must have ended by a Swift trap that printed its message,
// and the message must say what the test expects (not a segmentation fault, not an
// accidental crash further on).

import Glibc
import Testing

/// Checks that an exit test's child ended by a Swift trap (a precondition, an assertion or
/// a fatal error) whose message mentions `words`.
///
/// With `namingTheAnnouncedPointer`, the message must also name the pointer the child
/// printed with ``announceBadPointer(_:)`` just before the bad call: that tells a
/// deliberate ownership check from a crash further on.
public func expectTrap(
    _ result: ExitTest.Result?, mentioning words: String = "", namingTheAnnouncedPointer: Bool = false,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    guard let result else { return }  // the exit test itself already recorded the failure
    let text = String(decoding: result.standardErrorContent, as: UTF8.self)
    let trapped = ["Fatal error", "Precondition failed", "Assertion failed"].contains { text.contains($0) }
    #expect(
        trapped, "expected a trap with a message, got \(result.exitStatus), stderr: \(text.prefix(600))",
        sourceLocation: sourceLocation)
    guard trapped else { return }
    if !words.isEmpty {
        #expect(
            text.contains(words), "the trap's message does not mention \"\(words)\": \(text.prefix(600))",
            sourceLocation: sourceLocation)
    }
    guard namingTheAnnouncedPointer else { return }
    expectAnnouncedPointer(of: result, in: text, prefix: "", sourceLocation: sourceLocation)
}

/// Checks that an exit test's child ended by an allocator's misuse report: `abort()`
/// (SIGABRT) after a line on stderr that mentions `words`, as glibc reports what it
/// catches. With `namingTheAnnouncedPointer`, the line must also name the pointer the child
/// announced (see ``expectTrap(_:mentioning:namingTheAnnouncedPointer:sourceLocation:)``).
public func expectMisuseReport(
    _ result: ExitTest.Result?, mentioning words: String, namingTheAnnouncedPointer: Bool = false,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    guard let result else { return }
    let text = String(decoding: result.standardErrorContent, as: UTF8.self)
    #expect(
        result.exitStatus == .signal(SIGABRT) && text.contains(words),
        "expected an abort reporting \"\(words)\", got \(result.exitStatus), stderr: \(text.prefix(600))",
        sourceLocation: sourceLocation)
    guard namingTheAnnouncedPointer else { return }
    expectAnnouncedPointer(of: result, in: text, prefix: "0x", sourceLocation: sourceLocation)
}

/// Checks that `text` (the child's stderr) names, in hexadecimal after `prefix`, the pointer
/// the child announced last: that tells a deliberate check of that pointer from a crash
/// further on.
func expectAnnouncedPointer(
    of result: ExitTest.Result, in text: String, prefix: String, sourceLocation: SourceLocation
) {
    let output = String(decoding: result.standardOutputContent, as: UTF8.self)
    guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix(announcedPointerPrefix) }) else {
        Issue.record("the child did not announce its pointer", sourceLocation: sourceLocation)
        return
    }
    let hex = line.dropFirst(announcedPointerPrefix.count).lowercased()
    #expect(
        text.lowercased().contains(prefix + hex),
        "the message does not name the pointer 0x\(hex), so it is no check of it: \(text.prefix(600))",
        sourceLocation: sourceLocation)
}

/// Prints the pointer an exit test's child is about to pass to a bad call, for
/// ``expectTrap(_:mentioning:namingTheAnnouncedPointer:sourceLocation:)`` to look for.
public func announceBadPointer(_ pointer: UnsafeMutableRawPointer) {
    print(announcedPointerPrefix + String(UInt(bitPattern: pointer), radix: 16))
    fflush(nil)
}

let announcedPointerPrefix = "bad pointer: "
