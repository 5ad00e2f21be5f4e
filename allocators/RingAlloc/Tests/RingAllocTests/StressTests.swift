// Multi-threaded stress (spec section 5): buffers released on other threads while the
// owner keeps allocating, shared buffers cloned to several threads and released in random
// order, and allocators dropped while other threads still hold and release their buffers.
// The thread-sanitizer run selects these suites with `--filter Stress`.

import AllocCore
import AllocTestSupport
import Glibc
import RingAlloc
import Synchronization
import Testing

/// What the threads of a stress run report.
final class StressReport: @unchecked Sendable {
    let problems = Mutex<[String]>([])
    let received = Atomic<Int>(0)
    let done = Atomic<Bool>(false)

    func report(_ problem: String) {
        problems.withLock { if $0.count < 10 { $0.append(problem) } }
    }
}

/// A buffer in flight with the tag of its pattern.
struct TaggedBuffer: ~Copyable {
    var buffer: RingBuffer
    var tag: Int
}

struct TaggedShared: ~Copyable {
    var buffer: SharedRingBuffer
    var tag: Int
}

/// Pushes `value` onto `queue`, yielding while the queue is full.
func pushWaiting<Value: ~Copyable>(_ value: consuming Value, onto queue: HandoffQueue<Value>) {
    var pending = Optional(value)
    while let rejected = queue.push(pending.take()!) {
        pending = .some(rejected)
        sched_yield()
    }
}

@Suite("RingAlloc Stress")
struct StressTests {
    // Spec 5: a release on another thread is seen by the owner (release/acquire), and the
    // owner's reuse never touches a buffer another thread still reads.
    @Test("fixed and typed buffers released on other threads while the owner keeps allocating")
    func crossThreadRelease() throws {
        let seed = testSeed()
        // The timeout only bounds a broken wait: releases keep coming while the owner waits.
        var ring = try RingAllocator(capacity: 32 * 1024, fullRingTimeout: .seconds(60))
        let probe = WaitsProbe(ring)
        // Every queued buffer holds a segment of 32 bytes or more: queues that long never fill
        // before the ring does, so the ring is what makes the owner wait (spec 3, Wait).
        let segmentBound = ring.capacity / 32
        let queue = HandoffQueue<TaggedBuffer>(capacity: segmentBound)
        let typedQueue = HandoffQueue<TypedRingBuffer<Int>>(capacity: segmentBound)
        let report = StressReport()
        // Consumers that keep up would leave the ring room all along and the wait untested:
        // once `hold` is set, they take nothing until the owner has waited, so the ring
        // fills for certain, whatever the scheduler does.
        let hold = Atomic<Bool>(false)
        let consumers = try (0..<2).map { _ in
            try OSThread.spawn {
                while true {
                    if hold.load(ordering: .acquiring) && probe.waits == 0 {
                        sched_yield()
                    } else if let item = queue.pop() {
                        if let index = item.buffer.withUnsafeBytes({ firstPatternMismatch($0, tag: item.tag) }) {
                            report.report(
                                "seed \(seed): buffer \(item.tag): byte \(index) was overwritten before its release")
                        }
                        report.received.add(1, ordering: .relaxed)
                    } else if let typed = typedQueue.pop() {
                        let sum = typed.withUnsafeBufferPointer { $0.reduce(0, +) }
                        if sum != typed.count * (typed.count - 1) / 2 {
                            report.report("seed \(seed): a typed buffer changed")
                        }
                        report.received.add(1, ordering: .relaxed)
                    } else if report.done.load(ordering: .acquiring) {
                        return
                    } else {
                        sched_yield()
                    }
                }
            }
        }
        var generator = SplitMix64(seed: seed)
        let total = 20_000
        for tag in 0..<total {
            if tag == total / 2 { hold.store(true, ordering: .releasing) }
            if tag % 7 == 0 {
                var typed = try required(ring.typed(Int.self, capacity: 1 + Int(generator.next() % 64)))
                for value in 0..<typed.capacity { typed.append(value) }
                pushWaiting(typed, onto: typedQueue)
            } else {
                var buffer = try required(
                    ring.fixed(capacity: 1 + Int(generator.next() % 2000)), "seed \(seed): buffer \(tag)")
                buffer.append(repeating: 0, count: buffer.capacity)
                buffer.withUnsafeMutableBytes { fillPattern($0, tag: tag) }
                pushWaiting(TaggedBuffer(buffer: buffer, tag: tag), onto: queue)
            }
        }
        report.done.store(true, ordering: .releasing)
        for consumer in consumers { consumer.join() }
        #expect(report.problems.withLock { $0 } == [])
        #expect(report.received.load(ordering: .relaxed) == total, "seed \(seed)")
        let statistics = ring.statistics()
        #expect(
            statistics.allocations == total && statistics.failures == 0 && statistics.liveBuffers == 0,
            "seed \(seed): \(statistics)")
        // 20,000 segments of 32 bytes or more: at least 19 laps of the 32 KiB ring.
        #expect(statistics.wraps > 10, "seed \(seed): the ring was reused: \(statistics)")
        #expect(statistics.waits > 0, "seed \(seed): the owner never found the ring full: \(statistics)")
        expectSound(ring, "seed \(seed): after the cross-thread run")
    }

    // Spec 2 and 5: clones on several threads; the last one, whichever it is, releases.
    @Test("shared buffers cloned to several threads and released in random order")
    func sharedAcrossThreads() throws {
        let seed = testSeed()
        // The timeout only bounds a broken wait: the workers keep releasing while the owner waits.
        var ring = try RingAllocator(capacity: 64 * 1024, fullRingTimeout: .seconds(60))
        let workers = 3
        let queues = (0..<workers).map { _ in HandoffQueue<TaggedShared>(capacity: 32) }
        let report = StressReport()
        let threads = try (0..<workers).map { index in
            try OSThread.spawn {
                var generator = SplitMix64(seed: seed &+ UInt64(index + 1))
                var held: [Box<TaggedShared>] = []
                var finished = false
                while !finished || !held.isEmpty {
                    if let item = queues[index].pop() {
                        held.append(Box(item))
                    } else if report.done.load(ordering: .acquiring) {
                        finished = true
                    } else {
                        sched_yield()
                    }
                    // Keep a few, release a random one: every thread drops in its own order.
                    while held.count > (finished ? 0 : Int(generator.next() % 6)) {
                        let item = held.remove(at: Int(generator.next() % UInt64(held.count))).take()!
                        if let index = item.buffer.withUnsafeBytes({ firstPatternMismatch($0, tag: item.tag) }) {
                            report.report("seed \(seed): shared buffer \(item.tag): byte \(index) changed")
                        }
                        report.received.add(1, ordering: .relaxed)
                    }
                }
            }
        }
        var generator = SplitMix64(seed: seed)
        let total = 5000
        for tag in 0..<total {
            var buffer = try required(ring.fixed(capacity: 1 + Int(generator.next() % 1000)))
            buffer.append(contentsOf: patternArray(tag: tag, count: buffer.capacity))
            let shared = buffer.freeze()
            for queue in queues { pushWaiting(TaggedShared(buffer: shared.clone(), tag: tag), onto: queue) }
            // The owner's own handle goes at a random moment among the others'.
            if generator.next() % 2 == 0 { sched_yield() }
            _ = consume shared
        }
        report.done.store(true, ordering: .releasing)
        for thread in threads { thread.join() }
        #expect(report.problems.withLock { $0 } == [])
        #expect(report.received.load(ordering: .relaxed) == total * workers, "seed \(seed)")
        let statistics = ring.statistics()
        #expect(
            statistics.liveBuffers == 0 && statistics.failures == 0 && statistics.allocations == total,
            "seed \(seed): \(statistics)")
        expectSound(ring, "seed \(seed): after the shared run")
    }

    // Spec 2 and 5: bytes written through an output span on the owner's thread are seen
    // through `bytes` by the thread that receives the buffer, changes made there through
    // `mutableBytes` stay in that buffer, and clones read their bytes through spans at
    // once on several threads, while the owner reuses what they release.
    @Test("buffers filled through output spans are read and changed through spans on other threads")
    func spansAcrossThreads() throws {
        let seed = testSeed()
        // The timeout only bounds a broken wait: the workers keep releasing while the owner waits.
        var ring = try RingAllocator(capacity: 32 * 1024, fullRingTimeout: .seconds(60))
        let workers = 2
        let fixedQueue = HandoffQueue<TaggedBuffer>(capacity: 64)
        let sharedQueues = (0..<workers).map { _ in HandoffQueue<TaggedShared>(capacity: 64) }
        let report = StressReport()
        let threads = try (0..<workers).map { index in
            try OSThread.spawn {
                var finishing = false
                while true {
                    if var item = fixedQueue.pop() {
                        let tag = item.tag
                        if let byte = firstPatternMismatch(item.buffer.bytes, tag: tag) {
                            report.report("seed \(seed): buffer \(tag): byte \(byte) differs from what was written")
                        }
                        do {
                            var bytes = item.buffer.mutableBytes
                            for offset in bytes.byteOffsets {
                                bytes.storeBytes(
                                    of: ~patternByte(tag: tag, index: offset), toByteOffset: offset, as: UInt8.self)
                            }
                        }
                        let changed = item.buffer.withUnsafeBytes { bytes in
                            bytes.indices.allSatisfy { bytes[$0] == ~patternByte(tag: tag, index: $0) }
                        }
                        if !changed { report.report("seed \(seed): buffer \(tag): a change through its span was lost") }
                        report.received.add(1, ordering: .relaxed)
                    } else if let item = sharedQueues[index].pop() {
                        if let byte = firstPatternMismatch(item.buffer.bytes, tag: item.tag) {
                            report.report("seed \(seed): shared buffer \(item.tag): byte \(byte) changed")
                        }
                        report.received.add(1, ordering: .relaxed)
                    } else if finishing {
                        return
                    } else if report.done.load(ordering: .acquiring) {
                        // Everything was pushed before `done`: one more pass empties the queues.
                        finishing = true
                    } else {
                        sched_yield()
                    }
                }
            }
        }
        var generator = SplitMix64(seed: seed)
        let total = 4000
        var expected = 0
        for tag in 0..<total {
            if tag % 2 == 0 {
                var buffer = try required(ring.fixed(capacity: 1 + Int(generator.next() % 1500)))
                buffer.append(minimumFreeCapacity: buffer.capacity) { output in
                    appendPattern(&output, tag: tag, count: output.capacity)
                }
                pushWaiting(TaggedBuffer(buffer: buffer, tag: tag), onto: fixedQueue)
                expected += 1
            } else {
                let size = 1 + Int(generator.next() % 3000)
                let chunk = 1 + Int(generator.next() % 500)
                var refused = false
                let buffer = try required(
                    ring.extendable(capacity: 64) { buffer in
                        while buffer.count < size && !refused {
                            let count = min(chunk, size - buffer.count)
                            let offset = buffer.count
                            refused =
                                buffer.append(minimumFreeCapacity: count) { output in
                                    appendPattern(&output, tag: tag, count: count, offset: offset)
                                } == nil
                        }
                    }, "seed \(seed): extendable buffer \(tag)")
                if refused { report.report("seed \(seed): extendable buffer \(tag) could not grow") }
                let shared = buffer.freeze()
                for queue in sharedQueues { pushWaiting(TaggedShared(buffer: shared.clone(), tag: tag), onto: queue) }
                expected += workers
            }
        }
        report.done.store(true, ordering: .releasing)
        for thread in threads { thread.join() }
        #expect(report.problems.withLock { $0 } == [])
        #expect(report.received.load(ordering: .relaxed) == expected, "seed \(seed)")
        let statistics = ring.statistics()
        #expect(
            statistics.liveBuffers == 0 && statistics.failures == 0 && statistics.allocations == total,
            "seed \(seed): \(statistics)")
        #expect(statistics.wraps > 10, "seed \(seed): the ring was reused: \(statistics)")
        expectSound(ring, "seed \(seed): after the span run")
    }

    // Spec 5 and 6: teardown never frees memory under a buffer and never waits for one.
    @Test("allocators dropped while other threads still read and release their buffers")
    func teardownRace() throws {
        let rounds = 400
        let queue = HandoffQueue<TaggedBuffer>(capacity: 4096)
        let report = StressReport()
        let consumers = try (0..<2).map { _ in
            try OSThread.spawn {
                while true {
                    if let item = queue.pop() {
                        if let index = item.buffer.withUnsafeBytes({ firstPatternMismatch($0, tag: item.tag) }) {
                            report.report("buffer \(item.tag): byte \(index) changed after teardown")
                        }
                        report.received.add(1, ordering: .relaxed)
                    } else if report.done.load(ordering: .acquiring) {
                        return
                    } else {
                        sched_yield()
                    }
                }
            }
        }
        for round in 0..<rounds {
            var ring: RingAllocator? = try RingAllocator(capacity: 16 * 1024)
            for index in 0..<10 {
                var buffer = ring!.fixed(capacity: 100 + index * 37)!
                buffer.append(contentsOf: patternArray(tag: round * 10 + index, count: buffer.capacity))
                pushWaiting(TaggedBuffer(buffer: buffer, tag: round * 10 + index), onto: queue)
            }
            ring = nil  // while the consumers are releasing this round's buffers
        }
        report.done.store(true, ordering: .releasing)
        for consumer in consumers { consumer.join() }
        #expect(report.problems.withLock { $0 } == [])
        #expect(report.received.load(ordering: .relaxed) == rounds * 10)
    }

    // Spec 6: and whichever side finishes last unmaps the ring, exactly once. Counted with
    // AllocCore's map and unmap counters, in a child process where nothing else maps
    // through AllocCore: probing the rings' old pages instead failed once under the
    // thread sanitizer, whose runtime maps memory of its own into the holes they left.
    @Test("after a teardown race every ring is unmapped once its last buffer is gone")
    func teardownRaceUnmaps() async {
        await #expect(processExitsWith: .success) {
            let queue = HandoffQueue<RingBuffer>(capacity: 4096)
            let done = Atomic<Bool>(false)
            let consumer = try! OSThread.spawn {
                while true {
                    if let buffer = queue.pop() {
                        _ = consume buffer
                    } else if done.load(ordering: .acquiring) {
                        return
                    } else {
                        sched_yield()
                    }
                }
            }
            let before = SystemMemory.statistics.snapshot()
            let rings = 100
            for _ in 0..<rings {
                var ring: RingAllocator? = try! RingAllocator(capacity: 8 * 1024)
                for _ in 0..<8 { pushWaiting(ring!.fixed(capacity: 200)!, onto: queue) }
                ring = nil
            }
            done.store(true, ordering: .releasing)
            consumer.join()
            let after = SystemMemory.statistics.snapshot()
            let maps = after[.mapCalls] - before[.mapCalls]
            let unmaps = after[.unmapCalls] - before[.unmapCalls]
            let liveBytes =
                (after[.mappedBytes] - after[.unmappedBytes]) - (before[.mappedBytes] - before[.unmappedBytes])
            exit(maps == rings && unmaps == rings && liveBytes == 0 ? 0 : 1)
        }
    }
}
