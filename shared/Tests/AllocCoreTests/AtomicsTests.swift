import AllocCore
import AllocTestSupport
import Synchronization
import Testing

@Suite struct AtomicWordTests {
    @Test func singleThreadedOperationsReturnWhatTheyReplaced() throws {
        let page = rawPages()
        defer { page.deallocate() }
        let word = AtomicWord(initializingAt: page + 8, to: 5)
        #expect(word.address == page + 8)
        #expect(word.load(ordering: .relaxed) == 5)
        word.store(7, ordering: .releasing)
        #expect(AtomicWord(at: page + 8).load(ordering: .acquiring) == 7)
        #expect(word.exchange(9, ordering: .acquiringAndReleasing) == 7)
        #expect(word.compareExchange(expected: 1, desired: 2, ordering: .relaxed) == (false, 9))
        #expect(word.compareExchange(expected: 9, desired: 2, ordering: .relaxed) == (true, 9))
        #expect(word.wrappingAdd(3, ordering: .relaxed) == 2)
        #expect(word.wrappingSubtract(1, ordering: .relaxed) == 5)
        #expect(word.bitwiseOr(0b1000, ordering: .relaxed) == 4)
        #expect(word.bitwiseAnd(0b0100, ordering: .relaxed) == 12)
        #expect(word.load(ordering: .relaxed) == 4)
        word.store(Int.max, ordering: .relaxed)
        #expect(word.wrappingAdd(1, ordering: .relaxed) == Int.max)
        #expect(word.load(ordering: .relaxed) == Int.min)
        var weak = (exchanged: false, original: 0)
        repeat {
            weak = word.weakCompareExchange(
                expected: Int.min, desired: 0, successOrdering: .relaxed, failureOrdering: .relaxed)
        } while !weak.exchanged && weak.original == Int.min
        #expect(weak.exchanged && word.load(ordering: .relaxed) == 0)
    }

    @Test func pairReadsAndReplacesBothWords() throws {
        let page = rawPages()
        defer { page.deallocate() }
        let pair = AtomicWordPair(initializingAt: page + 16, first: 1, second: 2)
        #expect(pair.load(ordering: .relaxed) == WordPair(first: 1, second: 2))
        let stale = WordPair(first: 1, second: 1)
        #expect(
            !pair.compareExchange(expected: stale, desired: WordPair(first: 0, second: 0), ordering: .relaxed).exchanged
        )
        #expect(
            pair.compareExchange(
                expected: WordPair(first: 1, second: 2), desired: WordPair(first: 3, second: 4), ordering: .relaxed
            ).exchanged)
        #expect(pair.exchange(WordPair(first: 5, second: 6), ordering: .relaxed) == WordPair(first: 3, second: 4))
        pair.store(WordPair(first: 7, second: 8), ordering: .releasing)
        #expect(AtomicWordPair(at: page + 16).load(ordering: .acquiring) == WordPair(first: 7, second: 8))
    }
}

/// Multi-threaded tests; the thread sanitizer runs every suite named `Stress`.
@Suite struct AtomicsStressTests {
    static let threads = 4
    static let iterations = 50_000

    @Test func wordAddsFromSeveralThreadsAreNeverLost() throws {
        let page = rawPages()
        defer { page.deallocate() }
        let added = AtomicWord(initializingAt: page, to: 0)
        let casAdded = AtomicWord(initializingAt: page + 64, to: 0)
        try onThreads(Self.threads) { _ in
            for _ in 0..<Self.iterations {
                added.wrappingAdd(1, ordering: .relaxed)
                var current = casAdded.load(ordering: .relaxed)
                while true {
                    let (exchanged, original) = casAdded.compareExchange(
                        expected: current, desired: current + 1, ordering: .relaxed)
                    if exchanged { break }
                    current = original
                }
            }
        }
        #expect(added.load(ordering: .relaxed) == Self.threads * Self.iterations)
        #expect(casAdded.load(ordering: .relaxed) == Self.threads * Self.iterations)
    }

    @Test func pairIsNeverSeenTorn() throws {
        let page = rawPages()
        defer { page.deallocate() }
        let pair = AtomicWordPair(initializingAt: page, first: 0, second: 0)
        let torn = Atomic<Int>(0)
        try onThreads(2) { _ in
            for _ in 0..<Self.iterations {
                var current = pair.load(ordering: .acquiring)
                while true {
                    if current.first != current.second { torn.add(1, ordering: .relaxed) }
                    let next = WordPair(first: current.first + 1, second: current.second + 1)
                    let (exchanged, original) = pair.compareExchange(
                        expected: current, desired: next, ordering: .acquiringAndReleasing)
                    if exchanged { break }
                    current = original
                }
            }
        }
        #expect(torn.load(ordering: .relaxed) == 0)
        #expect(
            pair.load(ordering: .relaxed)
                == WordPair(first: UInt(2 * Self.iterations), second: UInt(2 * Self.iterations)))
    }

    /// Nodes move between the stack and the threads; a node held by two threads at once
    /// (a lost ABA race) would show as an owner mark overwritten by another thread.
    @Test func stackHandsEachNodeToOneThreadAtATime() throws {
        let nodeCount = 64
        let nodeSize = 64
        let memory = rawPages(1 + nodeCount * nodeSize / 4096)
        defer { memory.deallocate() }
        let stack = AtomicStack(initializingAt: memory)
        #expect(stack.isEmpty)
        #expect(stack.pop() == nil)
        let nodes = memory + 4096
        for index in 0..<nodeCount { stack.push(nodes + index * nodeSize) }
        #expect(!stack.isEmpty)
        let conflicts = Atomic<Int>(0)
        try onThreads(Self.threads) { thread in
            for _ in 0..<Self.iterations / 4 {
                guard let node = stack.pop() else { continue }
                let owner = AtomicWord(at: node + 8)
                if owner.exchange(thread + 1, ordering: .relaxed) != 0 { conflicts.add(1, ordering: .relaxed) }
                if owner.exchange(0, ordering: .relaxed) != thread + 1 { conflicts.add(1, ordering: .relaxed) }
                stack.push(node)
            }
        }
        #expect(conflicts.load(ordering: .relaxed) == 0)
        var seen = Set<UnsafeMutableRawPointer>()
        while let node = stack.pop() { seen.insert(node) }
        #expect(seen.count == nodeCount)
        #expect(seen == Set((0..<nodeCount).map { nodes + $0 * nodeSize }))
    }

    @Test func pushListDeliversEveryNodeOnceToTheConsumer() throws {
        let producers = 3
        let perProducer = 2_000
        let memory = rawPages(1 + producers * perProducer * 16 / 4096)
        defer { memory.deallocate() }
        let list = AtomicPushList(initializingAt: memory)
        #expect(list.takeAll() == nil)
        nonisolated(unsafe) let nodes = memory + 64
        let received = Atomic<Int>(0)
        let checksum = Atomic<Int>(0)
        let done = Atomic<Int>(0)
        try onThreads(producers + 1) { thread in
            if thread < producers {
                for index in 0..<perProducer {
                    let node = nodes + (thread * perProducer + index) * 16
                    AtomicWord(at: node + 8).store(thread * perProducer + index, ordering: .relaxed)
                    list.push(node)
                }
                done.add(1, ordering: .releasing)
            } else {
                while true {
                    let finished = done.load(ordering: .acquiring) == producers
                    var node = list.takeAll()
                    while let current = node {
                        node = AtomicPushList.next(after: current)
                        received.add(1, ordering: .relaxed)
                        checksum.add(AtomicWord(at: current + 8).load(ordering: .relaxed), ordering: .relaxed)
                    }
                    if finished && list.isEmpty { break }
                }
            }
        }
        let total = producers * perProducer
        #expect(received.load(ordering: .relaxed) == total)
        #expect(checksum.load(ordering: .relaxed) == total * (total - 1) / 2)
    }

    @Test func pushChainLinksAChainInOneStep() throws {
        let page = rawPages()
        defer { page.deallocate() }
        let list = AtomicPushList(initializingAt: page)
        let a = page + 64, b = page + 128, c = page + 192
        list.push(c)
        AtomicPushList.link(a, to: b)
        list.pushChain(first: a, last: b)
        var order: [UnsafeMutableRawPointer] = []
        var node = list.takeAll()
        while let current = node {
            order.append(current)
            node = AtomicPushList.next(after: current)
        }
        #expect(order == [a, b, c])
        #expect(list.isEmpty)
    }
}
