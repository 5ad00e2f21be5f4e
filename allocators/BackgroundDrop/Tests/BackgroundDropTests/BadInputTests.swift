// Spec section 9, row by row: programmer errors trap with a message (checked in child
// processes, exit tests); the other bad inputs get a documented answer, tested where the
// behaviour lives (BackgroundDropTests.swift) and listed here by name.

import AllocCore
import AllocTestSupport
import BackgroundDrop
import Glibc
import Testing

@Suite("Bad input traps with a message (child processes)")
struct TrapTests {
    /// Spec 9: zero threads.
    @Test func zeroThreads() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = try? BackgroundDropper(threads: 0)
        }
        expectTrap(result, mentioning: "threads must be 1...256, got 0")
    }

    /// Spec 9: more threads than the maximum, and a negative count.
    @Test func tooManyThreads() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = try? BackgroundDropper(threads: 257)
        }
        expectTrap(result, mentioning: "threads must be 1...256, got 257")
        let negative = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = try? BackgroundDropper(threads: -1)
        }
        expectTrap(negative, mentioning: "got -1")
    }

    /// Spec 9: a queue capacity of zero.
    @Test func zeroCapacity() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = try? BackgroundDropper(capacity: 0)
        }
        expectTrap(result, mentioning: "capacity must be 1...1048576, got 0")
    }

    /// Spec 9: a capacity above the maximum.
    @Test func hugeCapacity() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = try? BackgroundDropper(capacity: Int.max)
        }
        expectTrap(result, mentioning: "capacity must be 1...1048576, got \(Int.max)")
    }

    /// Spec 9: flush called from a deinit on the dropper's own thread would wait for itself.
    @Test func flushFromADropThread() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            final class Flusher: @unchecked Sendable {
                let dropper: BackgroundDropper
                init(_ dropper: BackgroundDropper) { self.dropper = dropper }
                deinit { dropper.flush() }
            }
            let dropper = try BackgroundDropper(threads: 1)
            dropper.drop(Flusher(dropper))
            dropper.flush()
        }
        expectTrap(result, mentioning: "flush called from a deinit running on one of its own threads")
    }
}

@Suite struct BadInputAnswers {
    /// Spec 9: a drop after shutdown is deinitialised inline, at once, and counted.
    @Test func dropAfterShutdownIsInline() throws {
        let tally = DeinitTally(capacity: 2)
        let dropper = try BackgroundDropper()
        dropper.shutdown()
        #expect(dropper.drop(TrackedObject(0, tally)) == .droppedInline(.afterShutdown))
        #expect(tally.count(0) == 1)
        #expect(dropper.drop(TrackedToken(1, tally)) == .droppedInline(.afterShutdown))
        #expect(tally.count(1) == 1)
        #expect(dropper.statistics().droppedAfterShutdown == 2)
        try dropper.flush(timeout: .milliseconds(1))
    }

    /// Spec 9: a thread that cannot start makes `init` throw
    /// `BackgroundDropError.threadStart(SystemError)`, after joining the threads
    /// already started (in a child process whose address space is capped just above
    /// one more thread stack, so the second `pthread_create` fails).
    @Test func threadStartFailureThrows() async {
        await #expect(processExitsWith: .success, observing: [\.standardErrorContent]) {
            var limit = rlimit()
            getrlimit(Int32(RLIMIT_AS.rawValue), &limit)
            let saved = limit
            let mapped = try virtualMemoryBytes()
            limit.rlim_cur = rlim_t(mapped + 12 << 20)
            setrlimit(Int32(RLIMIT_AS.rawValue), &limit)
            var failure: BackgroundDropError?
            do throws(BackgroundDropError) {
                _ = try BackgroundDropper(threads: 8, capacity: 2)
            } catch {
                failure = error
            }
            var restored = saved
            setrlimit(Int32(RLIMIT_AS.rawValue), &restored)
            guard case .threadStart(let system) = failure, system.operation == .threadCreate else {
                preconditionFailure("expected a pthread_create failure, got \(String(describing: failure))")
            }
            let dropper = try BackgroundDropper(threads: 2)
            dropper.drop([1, 2, 3])
            dropper.flush()
        }
    }

    /// Spec 9: capacity 1 is valid and rounds up to 2 (the sequence scheme needs two
    /// slots to tell a full slot from a free one).
    @Test func capacityOneRoundsUpAndWorks() throws {
        let tally = DeinitTally(capacity: 100)
        let dropper = try BackgroundDropper(threads: 1, capacity: 1)
        #expect(dropper.capacity == 2)
        for id in 0..<100 { dropper.drop(TrackedObject(id, tally)) }
        dropper.flush()
        #expect(tally.wrongCounts(0..<100) == "")
    }
}

/// The process's virtual size (VmSize in /proc/self/status), in bytes.
func virtualMemoryBytes() throws -> Int {
    guard let file = fopen("/proc/self/status", "r") else { throw SystemError(.read, code: errno) }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, Int32(line.count), file) != nil {
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if text.hasPrefix("VmSize:") {
            let digits = text.filter(\.isNumber)
            return (Int(digits) ?? 0) * 1024
        }
    }
    throw SystemError(.read, code: ENOENT)
}
