// What the tests share: deinit counters per value id, values of every shape that report
// their deinit, a gate that holds a deinit until the test opens it, and threads.

import AllocCore
import BackgroundDrop
import Glibc
import Synchronization

/// Counts deinits per value id (atomically: values die on any thread), and records the
/// order and thread of deinits when asked to.
final class Tally: @unchecked Sendable {
    let capacity: Int
    let counts: UnsafeMutablePointer<Atomic<Int>>
    let created = Atomic<Int>(0)
    let deinitialised = Atomic<Int>(0)
    /// The most values alive at once (created, not yet deinitialised).
    let peakAlive = Atomic<Int>(0)
    let order = Mutex<[Int]>([])
    let recordsOrder: Bool
    let deinitThreads = Mutex<Set<Int>>([])

    init(capacity: Int, recordsOrder: Bool = false) {
        self.capacity = capacity
        self.recordsOrder = recordsOrder
        counts = .allocate(capacity: capacity)
        for index in 0..<capacity { (counts + index).initialize(to: Atomic(0)) }
    }

    deinit { counts.deallocate() }

    func made(_ id: Int) {
        precondition(id >= 0 && id < capacity, "id \(id) out of range")
        let alive = created.add(1, ordering: .relaxed).newValue - deinitialised.load(ordering: .relaxed)
        var peak = peakAlive.load(ordering: .relaxed)
        while alive > peak {
            let (exchanged, original) = peakAlive.compareExchange(expected: peak, desired: alive, ordering: .relaxed)
            if exchanged { break }
            peak = original
        }
    }

    func died(_ id: Int) {
        counts[id].add(1, ordering: .relaxed)
        deinitialised.add(1, ordering: .releasing)
        if recordsOrder {
            order.withLock { $0.append(id) }
            deinitThreads.withLock { _ = $0.insert(currentThreadID()) }
        }
    }

    func count(_ id: Int) -> Int { counts[id].load(ordering: .acquiring) }

    /// The ids in `range` whose deinit count is not exactly `expected`, as a short
    /// report (the first five and how many in all); empty when every count is right.
    func wrongCounts(_ range: Range<Int>, expected: Int = 1) -> String {
        let wrong = range.filter { count($0) != expected }
        if wrong.isEmpty { return "" }
        let first = wrong.prefix(5).map { "id \($0): \(count($0))" }.joined(separator: ", ")
        return "\(wrong.count) ids deinitialised other than \(expected) times: \(first)"
    }
}

/// A class instance that reports its deinit.
final class Tracked: @unchecked Sendable {
    let id: Int
    let tally: Tally
    var children: [Tracked] = []

    init(_ id: Int, _ tally: Tally) {
        self.id = id
        self.tally = tally
        tally.made(id)
    }

    deinit { tally.died(id) }
}

/// A `~Copyable` struct with a deinit: travels inline (three words).
struct Token: ~Copyable {
    let id: Int
    let tally: Tally
    let extra: Int

    init(_ id: Int, _ tally: Tally) {
        self.id = id
        self.tally = tally
        extra = id &* 31
        tally.made(id)
    }

    deinit { tally.died(id) }
}

/// A struct larger than a slot's payload: it is boxed.
struct Wide {
    let tracked: Tracked
    var padding: (Int, Int, Int, Int, Int, Int, Int) = (1, 2, 3, 4, 5, 6, 7)
}

/// A `~Copyable` struct larger than a slot's payload.
struct WideToken: ~Copyable {
    let token: Token
    var padding: (Int, Int, Int, Int, Int, Int) = (1, 2, 3, 4, 5, 6)
}

/// A deinit that waits until the gate opens (a deinit that blocks).
final class Gate: @unchecked Sendable {
    let word = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
    let entered = Atomic<Int>(0)
    init() { _ = AtomicWord(initializingAt: word, to: 0) }
    deinit { word.deallocate() }

    func open() {
        AtomicWord(at: word).store(1, ordering: .releasing)
        Futex.wake(AtomicWord(at: word))
    }

    func waitUntilOpen() {
        entered.add(1, ordering: .releasing)
        while AtomicWord(at: word).load(ordering: .acquiring) == 0 {
            Futex.wait(AtomicWord(at: word), whileEqualTo: 0, timeoutNanoseconds: 10_000_000)
        }
    }

    /// Waits (polling) until `count` deinits are inside `waitUntilOpen`.
    func waitForEntries(_ count: Int) {
        while entered.load(ordering: .acquiring) < count { usleep(200) }
    }
}

/// A class whose deinit blocks until its gate opens, then reports.
final class Blocker: @unchecked Sendable {
    let gate: Gate
    let tracked: Tracked
    init(_ gate: Gate, _ tracked: Tracked) {
        self.gate = gate
        self.tracked = tracked
    }
    deinit { gate.waitUntilOpen() }
}

/// Runs `body(index)` on `count` threads and joins them.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) throws {
    let threads = try (0..<count).map { index in try OSThread.spawn { body(index) } }
    for thread in threads { thread.join() }
}

/// Waits (polling) until `condition` holds or `seconds` pass; returns whether it held.
func eventually(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = SystemInfo.monotonicNanoseconds() + UInt64(seconds * 1e9)
    while !condition() {
        if SystemInfo.monotonicNanoseconds() > deadline { return false }
        usleep(500)
    }
    return true
}

/// The seed of a randomized test: BACKGROUND_DROP_TEST_SEED, or `fallback`.
func testSeed(_ fallback: UInt64) -> UInt64 {
    if let text = getenv("BACKGROUND_DROP_TEST_SEED"), let seed = UInt64(String(cString: text)) { return seed }
    return fallback
}

/// The number of threads of this process (entries of /proc/self/task).
func processThreadCount() -> Int {
    guard let directory = opendir("/proc/self/task") else { return -1 }
    defer { closedir(directory) }
    var count = 0
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { count += 1 }
    }
    return count
}
