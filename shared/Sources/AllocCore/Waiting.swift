// Waiting for another thread without spinning: an event count over a futex, for waits
// that a waker can announce, and a back-off schedule, for waits that only polling can end.

import Glibc
import Synchronization

/// An event count: threads that wait for a condition announce themselves, look at the
/// condition once more, then sleep on the word until its epoch changes; wakers pay one
/// load when nobody waits.
///
/// ```swift
/// // Waiter:                                        // Waker, after making it true:
/// while !condition() {                              event.notifyOne()
///     let key = event.prepareWait()
///     if condition() { event.cancelWait(key); break }
///     event.wait(key, timeout: nil)
/// }
/// ```
///
/// The word holds the epoch in its low 32 bits (what the futex compares) and the number
/// of announced, unclaimed waiters above. `notifyOne` claims one waiter and bumps the
/// epoch in one compare-exchange, so of many concurrent wakers only one makes the
/// system call. A waiter that sees the epoch moved counts itself claimed; when two
/// waiters both do, the count stays one too high (a later waker makes one system call
/// for nobody): it errs towards extra wake-ups, never towards a lost one. No wake-up is
/// lost because the announcement, the waiter's second look and the waker's change of the
/// condition followed by its look at the word are all sequentially consistent.
public struct EventCount: @unchecked Sendable {
    /// The word, in memory the caller owns (zero when new), in this process's private memory.
    public let word: AtomicWord

    @usableFromInline static let waiterUnit = 1 << 32
    @usableFromInline static let epochMask = (1 << 32) - 1

    /// An event count over `word` (a zeroed word is a new event count).
    @inlinable
    public init(word: AtomicWord) { self.word = word }

    /// Whether anyone announced a wait (sequentially consistent: pairs with the
    /// announcement, after the waker's own sequentially consistent change).
    @inlinable
    public var hasWaiters: Bool { word.load(ordering: .sequentiallyConsistent) >> 32 != 0 }

    /// Announces a wait; returns the key to pass to ``wait(_:timeout:)`` or
    /// ``cancelWait(_:)``. Look at the condition again after this, before sleeping.
    @inlinable
    public func prepareWait() -> Int {
        word.wrappingAdd(EventCount.waiterUnit, ordering: .sequentiallyConsistent) & EventCount.epochMask
    }

    /// Withdraws an announcement (the condition held after all).
    public func cancelWait(_ key: Int) {
        var current = word.load(ordering: .relaxed)
        while current & EventCount.epochMask == key {
            let (exchanged, original) = word.compareExchange(
                expected: current, desired: current &- EventCount.waiterUnit, ordering: .sequentiallyConsistent)
            if exchanged { return }
            current = original
        }
        // The epoch moved: a waker claimed this announcement already.
    }

    /// Sleeps until a waker bumps the epoch past `key`, or `timeout` passes (then the
    /// announcement is withdrawn). Returns false on timeout.
    @discardableResult
    public func wait(_ key: Int, timeout: Duration?) -> Bool {
        wait(key, timeoutNanoseconds: timeout.map(Duration.nanosecondsClamped))
    }

    /// ``wait(_:timeout:)`` with the timeout in nanoseconds.
    @discardableResult
    public func wait(_ key: Int, timeoutNanoseconds: UInt64?) -> Bool {
        let deadline = timeoutNanoseconds.map(SystemInfo.deadline(afterNanoseconds:))
        while true {
            var remaining: UInt64? = nil
            if let deadline {
                let now = SystemInfo.monotonicNanoseconds()
                if now >= deadline {
                    cancelWait(key)
                    return word.load(ordering: .acquiring) & EventCount.epochMask != key
                }
                remaining = deadline &- now
            }
            Futex.wait(word, whileEqualTo: key, timeoutNanoseconds: remaining)
            if word.load(ordering: .acquiring) & EventCount.epochMask != key { return true }
        }
    }

    /// Claims one waiter and wakes it, if any announced itself.
    @inline(never)
    public func notifyOne() {
        var current = word.load(ordering: .sequentiallyConsistent)
        while current >> 32 != 0 {
            let desired =
                (current &- EventCount.waiterUnit) & ~EventCount.epochMask | (current &+ 1) & EventCount.epochMask
            let (exchanged, original) = word.compareExchange(
                expected: current, desired: desired, ordering: .sequentiallyConsistent)
            if exchanged {
                Futex.wake(word, count: 1)
                return
            }
            current = original
        }
    }

    /// Claims and wakes every waiter.
    @inline(never)
    public func notifyAll() {
        var current = word.load(ordering: .sequentiallyConsistent)
        while current >> 32 != 0 {
            let (exchanged, original) = word.compareExchange(
                expected: current, desired: (current &+ 1) & EventCount.epochMask, ordering: .sequentiallyConsistent)
            if exchanged {
                Futex.wake(word)
                return
            }
            current = original
        }
    }
}

/// The pauses of a polling wait: each twice the one before, from `initial` up to
/// `maximum`, so a condition that comes true soon is seen soon and one that takes long
/// costs few wake-ups.
///
/// For waits that no waker can announce (a release that must stay one exchange, a task
/// that must not block a thread): ``poll(until:_:)`` sleeps between tries without
/// allocating; an `async` caller sleeps for ``nextPause()`` itself.
public struct BackOff: Sendable {
    /// The next pause, in nanoseconds.
    public private(set) var pauseNanoseconds: UInt64
    /// The longest pause, in nanoseconds: how late a waiter may see the condition.
    public let maximumNanoseconds: UInt64

    /// - Precondition: `initial` is positive and at most `maximum`.
    public init(initial: Duration, maximum: Duration) {
        pauseNanoseconds = Duration.nanosecondsClamped(initial)
        maximumNanoseconds = Duration.nanosecondsClamped(maximum)
        precondition(
            pauseNanoseconds > 0 && pauseNanoseconds <= maximumNanoseconds,
            "BackOff: initial pause \(initial) is not positive or exceeds the maximum \(maximum)")
    }

    /// Returns the pause to take now and doubles the next one (up to the maximum).
    public mutating func nextPause() -> UInt64 {
        let pause = pauseNanoseconds
        pauseNanoseconds = min(pause &* 2, maximumNanoseconds)
        return pause
    }

    /// Tries `attempt` after each pause until it succeeds or the monotonic clock reaches
    /// `deadline` (nanoseconds, ``SystemInfo/monotonicNanoseconds()``); returns whether it
    /// succeeded. The last pause is cut to the deadline. Sleeps with `nanosleep`, which
    /// allocates nothing.
    public mutating func poll(until deadline: UInt64, _ attempt: () -> Bool) -> Bool {
        while true {
            let now = SystemInfo.monotonicNanoseconds()
            if now >= deadline { return false }
            SystemInfo.sleep(nanoseconds: min(nextPause(), deadline &- now))
            if attempt() { return true }
        }
    }
}

extension Duration {
    /// The duration in whole nanoseconds, clamped to `0...UInt64.max` (a negative duration
    /// is zero; a duration beyond 584 years is the longest wait there is).
    public static func nanosecondsClamped(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return 0 }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .max }
        let (total, carry) = whole.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
        return carry ? .max : total
    }
}

extension SystemInfo {
    /// The monotonic-clock deadline `nanoseconds` from now, saturating: a wait that long
    /// never ends (`UInt64.max`, 584 years of uptime) instead of wrapping into the past.
    @inlinable
    public static func deadline(afterNanoseconds nanoseconds: UInt64) -> UInt64 {
        let (sum, overflow) = monotonicNanoseconds().addingReportingOverflow(nanoseconds)
        return overflow ? .max : sum
    }

    /// The monotonic-clock deadline `timeout` from now (nil: no limit, `UInt64.max`; zero
    /// or negative: now).
    @inlinable
    public static func deadline(after timeout: Duration?) -> UInt64 {
        guard let timeout else { return .max }
        return deadline(afterNanoseconds: Duration.nanosecondsClamped(timeout))
    }

    /// Sleeps the calling thread for `nanoseconds` (resuming after a signal), allocating
    /// nothing.
    public static func sleep(nanoseconds: UInt64) {
        var request = timespec(
            tv_sec: Int(clamping: nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) == -1 && errno == EINTR { request = remaining }
    }
}
