// The event count (no lost wake-up under racing waiters and wakers, timeouts), the back-off
// schedule, atomic raise and lower, and the fork actions' order on both sides of a fork
// (spec sections 1, 10 and 11).

import AllocCore
import AllocTestSupport
import Glibc
import Synchronization
import Testing

@Suite("Event count and back-off")
struct WaitingTests {
    @Test("every waiter of a condition set by racing wakers wakes: no wake-up is lost")
    func noLostWakeUp() throws {
        let page = rawPages()
        defer { page.deallocate() }
        let event = EventCount(word: AtomicWord(initializingAt: page, to: 0))
        let produced = AtomicWord(initializingAt: page + 64, to: 0)
        let consumed = AtomicWord(initializingAt: page + 128, to: 0)
        let items = 2_000
        let lostWakeUps = AtomicWord(initializingAt: page + 192, to: 0)
        // Two consumers take items as two producers publish them, sleeping when none is left.
        try onThreads(4) { thread in
            if thread < 2 {
                for _ in 0..<(items / 2) {
                    produced.wrappingAdd(1, ordering: .sequentiallyConsistent)
                    event.notifyOne()
                }
                return
            }
            while true {
                let taken = consumed.load(ordering: .relaxed)
                if taken == items {
                    // Whoever sees the end wakes the other consumer, which may be asleep.
                    event.notifyAll()
                    return
                }
                if taken < produced.load(ordering: .sequentiallyConsistent) {
                    _ = consumed.compareExchange(expected: taken, desired: taken + 1, ordering: .relaxed)
                    continue
                }
                let key = event.prepareWait()
                if consumed.load(ordering: .relaxed) == items
                    || consumed.load(ordering: .relaxed) < produced.load(ordering: .sequentiallyConsistent)
                {
                    event.cancelWait(key)
                    continue
                }
                // Every item published after the announcement, and the end, wakes a waiter:
                // a wait that runs out its (long) timeout slept through one, a lost wake-up.
                // The bound turns that into a failure instead of a hang.
                if !event.wait(key, timeout: .seconds(30)) { lostWakeUps.wrappingAdd(1, ordering: .relaxed) }
            }
        }
        #expect(consumed.load(ordering: .relaxed) == items)
        #expect(lostWakeUps.load(ordering: .relaxed) == 0, "a consumer slept through a published item")
    }

    @Test("a wait ends at its timeout (withdrawn) or at once after a notify that followed the announcement")
    func waitEnds() {
        let page = rawPages()
        defer { page.deallocate() }
        let event = EventCount(word: AtomicWord(initializingAt: page, to: 0))
        let late = event.prepareWait()
        #expect(event.hasWaiters)
        #expect(!event.wait(late, timeout: .milliseconds(5)))
        #expect(!event.hasWaiters, "the timed-out waiter is still announced")
        event.notifyOne()  // nobody to wake: the epoch stays
        #expect(event.word.load(ordering: .relaxed) == 0)
        let woken = event.prepareWait()
        event.notifyOne()
        #expect(event.wait(woken, timeout: nil), "woken")
        #expect(!event.hasWaiters)
    }

    @Test("the back-off doubles up to its maximum; polling stops at success or the deadline")
    func backOff() {
        var schedule = BackOff(initial: .microseconds(1), maximum: .microseconds(5))
        #expect((0..<5).map { _ in schedule.nextPause() } == [1_000, 2_000, 4_000, 5_000, 5_000])
        var tries = 0
        var polling = BackOff(initial: .microseconds(10), maximum: .milliseconds(1))
        let succeeded = polling.poll(until: SystemInfo.monotonicNanoseconds() + 10_000_000_000) {
            tries += 1
            return tries == 3
        }
        #expect(succeeded && tries == 3)
        var expiring = BackOff(initial: .microseconds(10), maximum: .microseconds(100))
        let deadline = SystemInfo.monotonicNanoseconds() + 2_000_000
        #expect(!expiring.poll(until: deadline) { false })
        #expect(SystemInfo.monotonicNanoseconds() >= deadline)
        #expect(Duration.nanosecondsClamped(.seconds(-1)) == 0)
        #expect(Duration.nanosecondsClamped(.seconds(Int64.max)) == .max)
        #expect(Duration.nanosecondsClamped(.milliseconds(1500)) == 1_500_000_000)
        #expect(SystemInfo.deadline(after: nil) == .max && SystemInfo.deadline(afterNanoseconds: .max) == .max)
        let now = SystemInfo.monotonicNanoseconds()
        let soon = SystemInfo.deadline(after: .seconds(1))
        #expect(soon >= now + 1_000_000_000 && soon < now + 100_000_000_000)
        #expect(SystemInfo.deadline(after: .seconds(-5)) <= SystemInfo.monotonicNanoseconds())
    }

    @Test("raise and lower move a word only towards the mark, from many threads at once")
    func raiseAndLower() throws {
        let page = rawPages()
        defer { page.deallocate() }
        let high = AtomicWord(initializingAt: page, to: 0)
        let low = AtomicWord(initializingAt: page + 64, to: Int.max)
        #expect(high.raise(to: 5, ordering: .relaxed) == 0)
        #expect(high.raise(to: 3, ordering: .relaxed) == 5 && high.load(ordering: .relaxed) == 5)
        #expect(low.lower(to: 7, ordering: .relaxed) == Int.max)
        #expect(low.lower(to: 9, ordering: .relaxed) == 7 && low.load(ordering: .relaxed) == 7)
        let atomic = Atomic<Int>(10)
        #expect(AtomicWord.raise(atomic, to: 12, ordering: .relaxed) == 10 && atomic.load(ordering: .relaxed) == 12)
        #expect(AtomicWord.lower(atomic, to: 2, ordering: .relaxed) == 12 && atomic.load(ordering: .relaxed) == 2)
        high.store(0, ordering: .relaxed)
        low.store(Int.max, ordering: .relaxed)
        try onThreads(4) { thread in
            for value in 0..<10_000 {
                high.raise(to: value * 4 + thread, ordering: .relaxed)
                low.lower(to: 1_000_000 - value * 4 - thread, ordering: .relaxed)
            }
        }
        #expect(high.load(ordering: .relaxed) == 9_999 * 4 + 3)
        #expect(low.load(ordering: .relaxed) == 1_000_000 - 9_999 * 4 - 3)
    }
}

/// What the fork actions of the test below record, one letter per action in order (the
/// actions are C function pointers and cannot capture).
nonisolated(unsafe) var forkRecordBuffer = UnsafeMutablePointer<UInt8>.allocate(capacity: 16)
nonisolated(unsafe) var forkRecordCount = 0

func recordFork(_ letter: UInt8) {
    forkRecordBuffer[forkRecordCount] = letter
    forkRecordCount += 1
}

@Suite("Fork actions")
struct ForkActionsTests {
    @Test("prepare runs newest registration first; parent and child oldest first, on their side")
    func order() async {
        // Each side prints what its actions recorded; the child exits first, then the parent.
        let result = await #expect(processExitsWith: .success, observing: [\.standardOutputContent]) {
            let before = ForkActions.registeredCount
            ForkActions.register(
                prepare: { recordFork(UInt8(ascii: "a")) }, parent: { recordFork(UInt8(ascii: "A")) },
                child: { recordFork(UInt8(ascii: "1")) })
            ForkActions.register(
                prepare: { recordFork(UInt8(ascii: "b")) }, parent: { recordFork(UInt8(ascii: "B")) },
                child: { recordFork(UInt8(ascii: "2")) })
            print("registered \(ForkActions.registeredCount - before)")
            fflush(nil)
            let child = fork()
            let side = child == 0 ? "child" : "parent"
            if child != 0 { waitpid(child, nil, 0) }
            let record = String(
                decoding: UnsafeBufferPointer(start: forkRecordBuffer, count: forkRecordCount), as: UTF8.self)
            print("\(side) \(record)")
            fflush(nil)
            if child == 0 { _exit(0) }
        }
        let lines = String(decoding: result?.standardOutputContent ?? [], as: UTF8.self).split(separator: "\n")
        #expect(lines == ["registered 2", "child ba12", "parent baAB"], "\(lines)")
    }

    @Test("registering more than the capacity traps with a message")
    func overCapacityTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            for _ in 0...ForkActions.capacity { ForkActions.register(prepare: nil, parent: nil, child: nil) }
        }
        expectTrap(result, mentioning: "sets of fork actions are registered already")
    }
}
