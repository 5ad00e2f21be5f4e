// Threads for tests: run a body on N threads, start them together, hand raw pointers
// across, and wait for a condition with a bound.

import AllocCore
import Glibc

/// Runs `body(threadIndex)` on `count` OS threads at once and joins them all.
///
/// - Throws: the `pthread_create` error when a thread cannot start (the threads already
///   started are not joined: the test fails anyway).
public func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) throws {
    let threads = try (0..<count).map { index throws(SystemError) in try OSThread.spawn { body(index) } }
    for thread in threads { thread.join() }
}

/// Runs `body` on a new OS thread and waits for it to end (a thread that then exits, for
/// the thread-exit paths of the allocators).
public func onNewThread(_ body: @escaping @Sendable () -> Void) throws {
    try OSThread.spawn(body).join()
}

/// Holds every thread until all have arrived, so that their steps really interleave:
/// threads started one by one might otherwise each finish before the next begins. Waiting
/// threads yield the processor, so more threads than cores still make progress.
public final class StartLine: @unchecked Sendable {
    let lock = SpinLock()
    var arrived = 0
    /// How many threads must arrive before any goes on.
    public let threads: Int

    public init(threads: Int) { self.threads = threads }

    /// Arrives and waits until every thread has.
    public func arriveAndWait() {
        lock.withLock { arrived += 1 }
        while lock.withLock({ arrived }) < threads { sched_yield() }
    }
}

/// A raw pointer that closures running on other threads may capture.
public struct SendablePointer: @unchecked Sendable {
    public let raw: UnsafeMutableRawPointer
    public init(_ raw: UnsafeMutableRawPointer) { self.raw = raw }
}

/// Polls `condition` every half millisecond until it holds or `seconds` pass; returns
/// whether it held.
///
/// For outcomes that another thread brings about in its own time (a background worker,
/// a thread that exits): the bound is generous (10 s by default) because a loaded machine
/// may not schedule that thread for a long while, and a test must not fail for it. Never
/// a way to wait for something that should *not* happen: that needs a synchronisation
/// the test controls.
public func eventually(within seconds: Double = 10, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = SystemInfo.monotonicNanoseconds() &+ UInt64(seconds * 1e9)
    while SystemInfo.monotonicNanoseconds() < deadline {
        if try condition() { return true }
        usleep(500)
    }
    return try condition()
}

/// The number of threads of this process (entries of /proc/self/task), or -1.
public func processThreadCount() -> Int {
    guard let directory = opendir("/proc/self/task") else { return -1 }
    defer { closedir(directory) }
    var count = 0
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { count += 1 }
    }
    return count
}
