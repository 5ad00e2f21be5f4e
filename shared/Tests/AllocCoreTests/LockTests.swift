import AllocCore
import AllocTestSupport
import Synchronization
import Testing

@Suite struct SpinLockTests {
    @Test func tryLockFailsWhileHeldAndSucceedsAfter() {
        let lock = SpinLock()
        let first = lock.tryLock()
        let second = lock.tryLock()
        #expect(first && !second)
        lock.unlock()
        let value = lock.withLock { 42 }
        #expect(value == 42)
        let afterwards = lock.tryLock()
        #expect(afterwards)
        lock.unlock()
    }

    @Test func withLockRethrowsAndReleases() {
        struct Failure: Error {}
        let lock = SpinLock()
        #expect(throws: Failure.self) { try lock.withLock { () throws(Failure) in throw Failure() } }
        let released = lock.tryLock()
        #expect(released, "withLock must release the lock when the body throws")
        lock.unlock()
    }
}

@Suite struct SpinLockStressTests {
    /// A plain (non-atomic) counter in raw memory, incremented under a lock that also lives
    /// in raw memory: any lost update means two threads were inside at once. More threads
    /// than cores, so the yield path runs too.
    @Test func excludesEveryOtherThreadFromTheCriticalSection() throws {
        let page = rawPages()
        defer { page.deallocate() }
        let lock = page.bindMemory(to: SpinLock.self, capacity: 1)
        lock.initialize(to: SpinLock())
        let counter = UnsafeMutablePointer<Int>(bitPattern: Int(bitPattern: page + 64))!
        counter.initialize(to: 0)
        let threads = SystemInfo.cpuCount * 2 + 1
        let iterations = 20_000
        nonisolated(unsafe) let sharedCounter = counter
        nonisolated(unsafe) let sharedLock = lock
        try onThreads(threads) { _ in
            for _ in 0..<iterations {
                sharedLock.pointee.lock()
                sharedCounter.pointee += 1
                sharedLock.pointee.unlock()
            }
        }
        #expect(counter.pointee == threads * iterations)
    }
}
