import AllocCore
import Glibc
import Synchronization
import Testing

/// What the detached thread and the test share: a global `let`, since a C thread entry
/// cannot capture.
let detachState = Atomic<Int>(0)

@Suite struct ThreadControlTests {
    /// A thread that detached itself can no longer be joined: pthread_join answers EINVAL
    /// at once (asked while the thread is still alive, so its handle is still valid).
    @Test func aDetachedThreadCannotBeJoined() {
        detachState.store(0, ordering: .relaxed)
        var handle = pthread_t()
        let created = pthread_create(
            &handle, nil,
            { _ in
                OSThread.detachCurrentThread()
                detachState.store(1, ordering: .releasing)
                while detachState.load(ordering: .acquiring) != 2 { usleep(100) }
                return nil
            }, nil)
        #expect(created == 0)
        while detachState.load(ordering: .acquiring) != 1 { usleep(100) }
        #expect(pthread_join(handle, nil) == EINVAL)
        detachState.store(2, ordering: .releasing)
    }

    /// Batch scheduling applies to the calling thread only.
    @Test func batchSchedulingIsPerThread() throws {
        let seen = Mutex<(before: Int32, result: Int32, after: Int32)>((-1, -1, -1))
        let thread = try OSThread.spawn {
            let before = OSThread.currentThreadSchedulingPolicy
            let result = OSThread.useBatchSchedulingForCurrentThread()
            seen.withLock { $0 = (before, result, OSThread.currentThreadSchedulingPolicy) }
        }
        thread.join()
        let (before, result, after) = seen.withLock { $0 }
        #expect(before == 0, "a new thread starts with SCHED_OTHER")
        #expect(result == 0 && after == 3, "result \(result), policy afterwards \(after)")
        #expect(OSThread.currentThreadSchedulingPolicy == 0, "the test's own thread changed policy")
    }
}
