// Multi-threaded stress: threads allocate blocks, write a pattern and hand them to other
// threads through shared slots swapped atomically, so most frees are cross-thread; the
// receiver checks the pattern and frees. The threads run in lockstep rounds, so that how
// much they interleave is the test's doing, not the scheduler's. The thread-sanitizer run
// selects these suites with `--filter Stress`.

import AllocCore
import AllocTestSupport
import BinnedAlloc
import Glibc
import Synchronization
import Testing

/// What the threads of a stress run share: the slots, the counters and the problems seen.
final class ExchangeBoard: @unchecked Sendable {
    let slotCount: Int
    /// `slotCount` pairs: (block address, size << 32 | tag), or (0, 0) for an empty slot.
    let slots: UnsafeMutableRawPointer
    let allocations = Atomic<Int>(0)
    let deallocations = Atomic<Int>(0)
    let crossThreadDeallocations = Atomic<Int>(0)
    let problems = Mutex<[String]>([])

    init(slotCount: Int) {
        self.slotCount = slotCount
        slots = UnsafeMutableRawPointer.allocate(byteCount: slotCount * 16, alignment: 16)
        for index in 0..<slotCount {
            _ = AtomicWordPair(initializingAt: slots + index * 16, first: 0, second: 0)
        }
    }

    deinit { slots.deallocate() }

    func slot(_ index: Int) -> AtomicWordPair { AtomicWordPair(at: slots + index * 16) }

    func report(_ problem: String) {
        problems.withLock { if $0.count < 20 { $0.append(problem) } }
    }
}

/// A block in flight: its address, size and pattern tag (thread index << 20 | serial).
struct FlyingBlock {
    var pointer: UnsafeMutableRawPointer
    var size: Int
    var tag: Int

    var packed: WordPair {
        WordPair(first: UInt(bitPattern: Int(bitPattern: pointer)), second: UInt(size << 32 | tag))
    }

    init(pointer: UnsafeMutableRawPointer, size: Int, tag: Int) {
        self.pointer = pointer
        self.size = size
        self.tag = tag
    }

    init?(_ pair: WordPair) {
        guard let pointer = UnsafeMutableRawPointer(bitPattern: pair.first) else { return nil }
        self.pointer = pointer
        size = Int(pair.second >> 32)
        tag = Int(pair.second & 0xFFFF_FFFF)
    }

    var owner: Int { tag >> 20 }
}

/// Where the threads of one stress run meet: a start line per round, and, in a serialized
/// run, whose turn it is.
final class Rounds: @unchecked Sendable {
    let threads: Int
    let lines: [StartLine]
    let serialized: Bool
    /// In a serialized run: round × threads + the position of the thread whose turn it is.
    let turn = Atomic<Int>(0)

    init(threads: Int, rounds: Int, serialized: Bool) {
        self.threads = threads
        self.serialized = serialized
        lines = (0..<rounds).map { _ in StartLine(threads: threads) }
    }

    /// Waits until every thread has reached round `round`, and in a serialized run until
    /// the threads before `position` have run their share of it.
    func begin(round: Int, position: Int) {
        lines[round].arriveAndWait()
        guard serialized else { return }
        while turn.load(ordering: .acquiring) != round * threads + position { sched_yield() }
    }

    /// Ends the calling thread's share of a round (hands the turn on in a serialized run).
    func end() {
        if serialized { turn.add(1, ordering: .releasing) }
    }
}

/// The stress body shared by the allocators under test.
///
/// The threads run in rounds of `operationsPerRound` operations and meet at a start line
/// before each: no thread gets more than a round ahead of another, whatever the scheduler
/// does. Free-running threads, more of them than cores, could each run their whole share
/// alone on a loaded machine; a thread alone in the slots soon finds only its own blocks
/// there, and the run would no longer be the cross-thread stress it claims to be (nor would
/// the threads ever hold their heaps at the same time). With `serialized`, the threads of
/// each round even run one after another: the worst schedule, made on purpose.
struct ExchangeStress<Allocator: ModelledAllocator & Sendable>: Sendable {
    let allocator: Allocator
    let board: ExchangeBoard
    let seed: UInt64
    let operationsPerThread: Int
    let maximumSize: Int
    /// A round is short next to the slots: a thread publishes into few of them per round,
    /// so most blocks it meets there are other threads'.
    let operationsPerRound: Int
    let serialized: Bool

    var roundCount: Int { (operationsPerThread + operationsPerRound - 1) / operationsPerRound }

    /// A stress of `allocator` through a board of `slots` slots of its own; `serialized`
    /// with `operationsPerRound` (64 unless given) sets the schedule.
    init(
        allocator: Allocator, slots: Int, seed: UInt64, operationsPerThread: Int, maximumSize: Int,
        operationsPerRound: Int = 64, serialized: Bool = false
    ) {
        self.allocator = allocator
        board = ExchangeBoard(slotCount: slots)
        self.seed = seed
        self.operationsPerThread = operationsPerThread
        self.maximumSize = maximumSize
        self.operationsPerRound = operationsPerRound
        self.serialized = serialized
    }

    /// What the threads reported wrong (empty when nothing).
    var problems: [String] { board.problems.withLock { $0 } }

    /// Checks a block received from anywhere and frees it on this thread.
    func verifyAndFree(_ block: FlyingBlock, on thread: Int) {
        guard Pattern.matches(block.pointer, tag: block.tag, range: 0..<block.size) else {
            board.report(
                "seed \(seed): block \(block.pointer) of \(block.size) bytes from thread \(block.owner) "
                    + "(tag \(block.tag)) was overwritten before thread \(thread) freed it")
            return  // leaked on purpose: it may be in use twice
        }
        let usable = allocator.usableSize(of: block.pointer)
        if usable < block.size {
            board.report("seed \(seed): usableSize \(usable) < \(block.size) on a thread that did not allocate it")
        }
        allocator.deallocate(block.pointer)
        board.deallocations.add(1, ordering: .relaxed)
        if block.owner != thread { board.crossThreadDeallocations.add(1, ordering: .relaxed) }
    }

    func newBlock(_ generator: inout SplitMix64, thread: Int, serial: inout Int) -> FlyingBlock? {
        let bits = Int.random(in: 0...maximumSize.trailingZeroBitCount, using: &generator)
        let size = Int.random(in: max(1, (1 << bits) >> 1)...(1 << bits), using: &generator)
        let alignment = generator.next() % 10 == 0 ? 1 << Int.random(in: 5...12, using: &generator) : 16
        guard let pointer = allocator.allocate(byteCount: size, alignment: alignment) else {
            board.report("seed \(seed): allocate(byteCount: \(size), alignment: \(alignment)) returned nil")
            return nil
        }
        guard isMultiple(pointer, of: max(alignment, 16)) else {
            board.report("seed \(seed): \(pointer) is not aligned to \(max(alignment, 16))")
            return nil
        }
        board.allocations.add(1, ordering: .relaxed)
        serial += 1
        let block = FlyingBlock(pointer: pointer, size: size, tag: thread << 20 | (serial & 0xF_FFFF))
        Pattern.fill(pointer, tag: block.tag, range: 0..<size)
        return block
    }

    /// One operation of thread `thread`; false when it went wrong (reported), after which
    /// the thread stops operating (but still meets the others at every start line).
    func step(
        _ generator: inout SplitMix64, thread: Int, serial: inout Int, local: inout [FlyingBlock]
    ) -> Bool {
        let roll = generator.next() % 100
        let slot = board.slot(Int.random(in: 0..<board.slotCount, using: &generator))
        if roll < 55 {
            // Publish a new block; free whatever the slot held (usually another thread's).
            guard let block = newBlock(&generator, thread: thread, serial: &serial) else { return false }
            if let previous = FlyingBlock(slot.exchange(block.packed, ordering: .acquiringAndReleasing)) {
                verifyAndFree(previous, on: thread)
            }
        } else if roll < 70 {
            // Take a block from a slot.
            if let taken = FlyingBlock(slot.exchange(WordPair(first: 0, second: 0), ordering: .acquiringAndReleasing)) {
                verifyAndFree(taken, on: thread)
            }
        } else if roll < 85 || local.isEmpty {
            // Thread-local traffic: allocate, or free the block allocated longest ago.
            if local.count < 64 {
                guard let block = newBlock(&generator, thread: thread, serial: &serial) else { return false }
                local.append(block)
            } else {
                verifyAndFree(local.removeFirst(), on: thread)
            }
        } else {
            // Reallocate a local block; its pattern survives up to the smaller size.
            let index = Int.random(in: 0..<local.count, using: &generator)
            let block = local[index]
            let newSize = Int.random(in: 1...maximumSize, using: &generator)
            guard let moved = allocator.reallocate(block.pointer, byteCount: newSize) else {
                board.report("seed \(seed): reallocate to \(newSize) returned nil")
                return false
            }
            if !Pattern.matches(moved, tag: block.tag, range: 0..<min(block.size, newSize)) {
                board.report("seed \(seed): reallocate from \(block.size) to \(newSize) bytes lost the contents")
                local.remove(at: index)
                return true
            }
            serial += 1
            let resized = FlyingBlock(pointer: moved, size: newSize, tag: thread << 20 | (serial & 0xF_FFFF))
            Pattern.fill(moved, tag: resized.tag, range: 0..<newSize)
            local[index] = resized
        }
        return true
    }

    /// The whole share of thread `thread`, at `position` in its group of `rounds.threads`.
    func run(thread: Int, position: Int, rounds: Rounds) {
        var generator = SplitMix64(seed: seed &+ UInt64(thread) &* 0x9E37_79B9)
        var serial = 0
        var local: [FlyingBlock] = []
        var healthy = true
        // The thread's heap exists before the first start line, so no thread of the group
        // can exit (and leave its heap to the next one) before every other has its own.
        allocator.deallocate(allocator.allocateDefault(byteCount: 1))
        for round in 0..<roundCount {
            rounds.begin(round: round, position: position)
            let operations = min(operationsPerRound, operationsPerThread - round * operationsPerRound)
            for _ in 0..<operations where healthy {
                healthy = step(&generator, thread: thread, serial: &serial, local: &local)
            }
            rounds.end()
        }
        for block in local { verifyAndFree(block, on: thread) }
    }

    /// Runs `threads` threads in lockstep rounds, with thread indices (pattern tags and
    /// generator seeds) from `firstIndex` on, and joins them.
    func runThreads(_ threads: Int, firstIndex: Int = 0) throws {
        _ = Pattern.bytes  // built once, before the threads read it
        let rounds = Rounds(threads: threads, rounds: roundCount, serialized: serialized)
        try onThreads(threads) { position in run(thread: firstIndex + position, position: position, rounds: rounds) }
    }

    /// Frees, on the calling thread, the blocks the slots still hold.
    func drainSlots() {
        for index in 0..<board.slotCount {
            if let block = FlyingBlock(
                board.slot(index).exchange(WordPair(first: 0, second: 0), ordering: .acquiringAndReleasing))
            {
                verifyAndFree(block, on: -1)
            }
        }
    }

    /// Runs `threads` threads, then empties the slots on the calling thread.
    func runAll(threads: Int) throws {
        try runThreads(threads)
        drainSlots()
    }
}

@Suite("BinnedStress: cross-thread frees through shared slots")
struct BinnedStressTests {
    /// More threads than cores: the lockstep rounds, not the scheduler, make them interleave.
    static let threadCount = 2 * SystemInfo.cpuCount + 1

    @Test("BinnedAllocator.shared: blocks handed between threads keep their contents and free anywhere")
    func sharedAllocatorExchange() throws {
        let seed = testSeed()
        let stress = ExchangeStress(
            allocator: BinnedAllocator.shared, slots: 512, seed: seed, operationsPerThread: 20_000,
            maximumSize: 65536)
        try stress.runAll(threads: Self.threadCount)
        let problems = stress.problems
        #expect(problems.isEmpty, "seed \(seed): \(problems)")
        let allocations = stress.board.allocations.load(ordering: .relaxed)
        let deallocations = stress.board.deallocations.load(ordering: .relaxed)
        #expect(
            allocations == deallocations, "seed \(seed): \(allocations) allocations, \(deallocations) deallocations")
        // Most frees must be cross-thread, or the test does not test what it says.
        let crossThreadDeallocations = stress.board.crossThreadDeallocations.load(ordering: .relaxed)
        #expect(
            crossThreadDeallocations * 3 > deallocations,
            "seed \(seed): \(crossThreadDeallocations) of \(deallocations) deallocations cross-thread")
        BinnedAllocator.shared.releaseUnusedMemory()
    }

    /// The schedule that used to void the check above, made on purpose: the threads of each
    /// round run one after another. Lockstep rounds keep most frees cross-thread all the
    /// same; the control shows what free-running threads (one round per thread) get under
    /// that schedule, which a loaded machine could pick for them.
    @Test("cross-thread frees stay the majority when the threads of each round run one after another")
    func crossThreadFreesUnderTheWorstSchedule() throws {
        let seed = testSeed()
        let operationsPerThread = 4_000
        func run(operationsPerRound: Int) throws -> (crossThread: Int, deallocations: Int) {
            let stress = ExchangeStress(
                allocator: BinnedAllocator.shared, slots: 512, seed: seed, operationsPerThread: operationsPerThread,
                maximumSize: 65536, operationsPerRound: operationsPerRound, serialized: true)
            try stress.runAll(threads: Self.threadCount)
            let problems = stress.problems
            #expect(problems.isEmpty, "seed \(seed): \(problems)")
            return (
                stress.board.crossThreadDeallocations.load(ordering: .relaxed),
                stress.board.deallocations.load(ordering: .relaxed)
            )
        }
        let lockstep = try run(operationsPerRound: 64)
        #expect(
            lockstep.crossThread * 3 > lockstep.deallocations,
            "seed \(seed): in lockstep, \(lockstep.crossThread) of \(lockstep.deallocations) frees cross-thread")
        let alone = try run(operationsPerRound: operationsPerThread)
        #expect(
            alone.crossThread * 3 < alone.deallocations,
            "seed \(seed): control: each thread alone, yet \(alone.crossThread) of \(alone.deallocations) frees cross-thread"
        )
        BinnedAllocator.shared.releaseUnusedMemory()
    }

    @Test("BinnedAllocator.shared: threads that allocate, free remotely and exit at the same time")
    func sharedAllocatorThreadsExitWhileBlocksAreRemote() throws {
        // Several groups of short threads; blocks stay in the slots after their allocating
        // thread exited, and are freed by the threads of the next group.
        let seed = testSeed()
        let stress = ExchangeStress(
            allocator: BinnedAllocator.shared, slots: 256, seed: seed, operationsPerThread: 2_000,
            maximumSize: 4096)
        for group in 0..<8 {
            try stress.runThreads(Self.threadCount, firstIndex: group * 64)
        }
        try stress.runAll(threads: 1)
        let problems = stress.problems
        #expect(problems.isEmpty, "seed \(seed): \(problems)")
        #expect(
            stress.board.allocations.load(ordering: .relaxed) == stress.board.deallocations.load(ordering: .relaxed),
            "seed \(seed)")
        BinnedAllocator.shared.releaseUnusedMemory()
    }
}

/// The tables of `threadChurnWithExitedOwners`: per lane, slots of (block, size, tag).
/// Each table is used by one thread per round, and rounds are joined before the next.
final class ChurnTables: @unchecked Sendable {
    let lanes: Int
    let slots: Int
    let blocks: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    let sizes: UnsafeMutablePointer<Int>
    let tags: UnsafeMutablePointer<Int>
    let problems = Mutex<[String]>([])

    init(lanes: Int, slots: Int) {
        (self.lanes, self.slots) = (lanes, slots)
        blocks = .allocate(capacity: lanes * slots)
        blocks.initialize(repeating: nil, count: lanes * slots)
        sizes = .allocate(capacity: lanes * slots)
        sizes.initialize(repeating: 0, count: lanes * slots)
        tags = .allocate(capacity: lanes * slots)
        tags.initialize(repeating: 0, count: lanes * slots)
    }

    deinit {
        blocks.deallocate()
        sizes.deallocate()
        tags.deallocate()
    }

    /// Frees the block in `slot` (checking its pattern) and puts a new one there.
    func replace(_ slot: Int, size: Int, tag: Int) {
        let allocator = BinnedAllocator.shared
        if let old = blocks[slot] {
            if !Pattern.matches(old, tag: tags[slot], range: 0..<sizes[slot]) {
                problems.withLock { $0.append("slot \(slot): block \(old) lost its pattern") }
            }
            allocator.deallocate(old)
        }
        guard let block = allocator.allocate(byteCount: size) else {
            problems.withLock { $0.append("allocate(byteCount: \(size)) returned nil") }
            blocks[slot] = nil
            return
        }
        Pattern.fill(block, tag: tag, range: 0..<size)
        (blocks[slot], sizes[slot], tags[slot]) = (block, size, tag)
    }
}

extension BinnedStressTests {
    /// Issue 18's thread churn, under the sanitizer: each lane's slots pass to a fresh
    /// thread every round, and the lanes swap tables between rounds, so most frees hit
    /// blocks whose allocating thread has exited (its cache parked or adopted by another
    /// lane) or belongs to the other lane's running thread; blocks of every kind sit in
    /// free caches and remote batches when threads exit.
    @Test("thread churn: fresh threads each round free blocks of exited threads and of each other")
    func threadChurnWithExitedOwners() throws {
        let seed = testSeed()
        let lanes = Self.threadCount
        let tables = ChurnTables(lanes: lanes, slots: 500)
        for round in 0..<24 {
            try onThreads(lanes) { position in
                var generator = SplitMix64(seed: seed &+ UInt64(round * lanes + position))
                let table = (position + round) % lanes * tables.slots
                for step in 0..<1_500 {
                    let slot = table + Int(generator.next() % UInt64(tables.slots))
                    let size = 8 + Int(generator.next() % 993)
                    tables.replace(slot, size: size, tag: (round * 1_500 + step) % Pattern.origins)
                }
            }
        }
        for slot in 0..<(lanes * tables.slots) where tables.blocks[slot] != nil {
            tables.replace(slot, size: 0, tag: 0)
            BinnedAllocator.shared.deallocate(tables.blocks[slot])
        }
        let problems = tables.problems.withLock { $0 }
        #expect(problems.isEmpty, "seed \(seed): \(problems.prefix(5))")
        BinnedAllocator.shared.releaseUnusedMemory()
    }
}

@Suite("LockedStress: one LockedBinnedAllocator shared by several threads")
struct LockedStressTests {
    @Test("blocks handed between threads keep their contents; statistics balance exactly at the end")
    func lockedAllocatorExchange() throws {
        let seed = testSeed()
        let allocator = LockedBinnedAllocator()
        let stress = ExchangeStress(
            allocator: allocator, slots: 256, seed: seed, operationsPerThread: 10_000, maximumSize: 65536)
        try stress.runAll(threads: max(4, SystemInfo.cpuCount + 1))
        let problems = stress.problems
        #expect(problems.isEmpty, "seed \(seed): \(problems)")
        let allocations = stress.board.allocations.load(ordering: .relaxed)
        #expect(allocations == stress.board.deallocations.load(ordering: .relaxed), "seed \(seed)")
        let statistics = allocator.statistics()
        #expect(statistics.inconsistentClasses.isEmpty, "seed \(seed): \(statistics.inconsistentClasses)")
        #expect(statistics.liveBlocks == 0, "seed \(seed): \(statistics.liveBlocks) blocks still counted live")
        #expect(statistics.largeLiveBytes == 0, "seed \(seed)")
        #expect(statistics.smallAllocations + statistics.largeAllocations >= allocations, "seed \(seed)")
    }
}
