// Controls a thread applies to itself: detaching, for a worker that learns while it runs
// that nobody will join it (BackgroundDrop's worker on which the last handle of its
// dropper goes away: it cannot join itself), and batch scheduling, for background
// workers that must not preempt the threads that wake them.

import Glibc

extension OSThread {
    /// Detaches the calling thread (pthread_detach of pthread_self): its stack and
    /// descriptor go back to the system when it ends, and nobody may join it afterwards.
    ///
    /// - Precondition: the calling thread is joinable (not detached already); a thread
    ///   that some other thread joins, or will join, must not detach itself.
    public static func detachCurrentThread() {
        let error = pthread_detach(pthread_self())
        precondition(error == 0, "pthread_detach failed with error \(error)")
    }

    /// Linux's SCHED_BATCH, which the Glibc module does not import (it needs _GNU_SOURCE).
    static let batchPolicy: Int32 = 3

    /// Moves the calling thread to the batch scheduling policy (SCHED_BATCH, same nice
    /// value): the scheduler treats it as CPU-bound and a wake-up of it does not preempt
    /// the running thread. For a background worker that another thread wakes with a
    /// futex: with the normal policy the woken worker, having slept, takes the waker's
    /// CPU at once when no other CPU is idle, and the waker stalls until its next turn.
    ///
    /// - Returns: 0, or the `pthread_setschedparam` error (`EPERM` under a seccomp or
    ///   container policy that forbids it), in which case the thread keeps its policy:
    ///   a hint that was refused, not a failure.
    @discardableResult
    public static func useBatchSchedulingForCurrentThread() -> Int32 {
        var parameters = sched_param()
        parameters.sched_priority = 0
        return pthread_setschedparam(pthread_self(), batchPolicy, &parameters)
    }

    /// The calling thread's scheduling policy (SCHED_OTHER 0, SCHED_BATCH 3...).
    public static var currentThreadSchedulingPolicy: Int32 {
        var policy: Int32 = 0
        var parameters = sched_param()
        let error = pthread_getschedparam(pthread_self(), &policy, &parameters)
        precondition(error == 0, "pthread_getschedparam failed with error \(error)")
        return policy
    }
}
