import AllocCore
import Glibc
import Testing

@Suite struct ChildProcessTests {
    @Test func capturesOutputStatusAndEnvironment() throws {
        let result = try ChildProcess.run(
            "/bin/sh", arguments: ["-c", "echo out $ALLOCCORE_TEST; echo err >&2; exit 3"],
            environment: ["ALLOCCORE_TEST": "value"])
        #expect(result.exitStatus == 3)
        #expect(result.terminatingSignal == nil)
        #expect(!result.succeeded)
        #expect(result.outputText == "out value\n")
        #expect(result.errorText == "err\n")
        #expect(result.maximumResidentBytesIncludingParent > 0)
    }

    @Test func reportsTheSignalThatEndedTheChild() throws {
        let result = try ChildProcess.run("/bin/sh", arguments: ["-c", "kill -KILL $$"])
        #expect(result.exitStatus == nil)
        #expect(result.terminatingSignal == 9)
    }

    /// More output than a pipe holds, on both streams, must not deadlock.
    @Test func drainsLargeOutputOnBothStreams() throws {
        let result = try ChildProcess.run(
            "/bin/sh", arguments: ["-c", "head -c 300000 /dev/zero; head -c 200000 /dev/zero >&2"])
        #expect(result.succeeded)
        #expect(result.standardOutput.count == 300_000)
        #expect(result.standardError.count == 200_000)
    }

    /// The child starts with no blocked signals, whatever the test runner's threads block.
    @Test func childStartsWithNoBlockedSignals() throws {
        let result = try ChildProcess.run("/bin/sh", arguments: ["-c", "grep SigBlk /proc/self/status"])
        #expect(result.outputText.trimmingPrefix("SigBlk:").allSatisfy { $0 == "0" || $0.isWhitespace })
    }

    @Test func missingProgramThrows() {
        #expect(throws: SystemError(.spawn, code: ENOENT)) { try ChildProcess.run("/nonexistent/program") }
    }
}
