// Model-based randomized test (spec sections 2, 4, 5, 8): a seeded run of drops of every
// kind, batches, flushes, statistics checks and a final shutdown, on droppers of random
// shape (threads, capacity, policy), checked against a model: which ids were dropped,
// which must already be gone (inline drops at once, everything before a flush), and what
// the counters must say. One seed per run of `forEachTestSeed` (a soak runs many); replay
// a failure with the ALLOC_TEST_SEED the log printed before it.

import AllocCore
import AllocTestSupport
import BackgroundDrop
import Glibc
import Testing

/// A value whose deinit takes a while (a few microseconds), so queues fill up.
final class Slow: @unchecked Sendable {
    let tracked: TrackedObject
    init(_ tracked: TrackedObject) { self.tracked = tracked }
    deinit { usleep(5) }
}

struct DropperModel {
    let seed: UInt64
    var generator: SplitMix64
    let dropper: BackgroundDropper
    let tally: DeinitTally
    var nextID = 0
    /// Ids dropped so far, and those that must be gone already.
    var dropped: [Int] = []
    var queued = 0
    var inline = 0
    var problems: [String] = []

    init(seed: UInt64, operations: Int) throws {
        self.seed = seed
        generator = SplitMix64(seed: seed)
        let threads = Int(generator.next() % 3) + 1
        let capacity = [2, 4, 16, 64, 256][Int(generator.next() % 5)]
        let policy: FullQueuePolicy =
            switch generator.next() % 3 {
            case 0: .dropInline
            case 1: .block(timeout: nil)
            default: .block(timeout: .microseconds(50))
            }
        dropper = try BackgroundDropper(threads: threads, capacity: capacity, whenFull: policy)
        tally = DeinitTally(capacity: operations * 21 + 10)
    }

    mutating func fresh() -> Int {
        defer { nextID += 1 }
        return nextID
    }

    mutating func note(_ outcome: DropOutcome, ids: [Int]) {
        dropped += ids
        switch outcome {
        case .queued: queued += 1
        case .droppedInline:
            inline += 1
            for id in ids where tally.count(id) != 1 {
                problems.append("inline drop of \(id) left count \(tally.count(id))")
            }
        }
    }

    mutating func step() {
        let tallyRef = tally
        switch generator.next() % 20 {
        case 0...5:
            let id = fresh()
            note(dropper.drop(TrackedObject(id, tallyRef)), ids: [id])
        case 6:
            let id = fresh()
            note(dropper.drop(TrackedToken(id, tallyRef)), ids: [id])
        case 7:
            let id = fresh()
            note(dropper.drop(Wide(tracked: TrackedObject(id, tallyRef))), ids: [id])
        case 8:
            let id = fresh()
            note(dropper.drop(WideToken(token: TrackedToken(id, tallyRef))), ids: [id])
        case 9:
            let ids = (0..<Int(generator.next() % 5)).map { _ in fresh() }
            note(dropper.drop(ids.map { TrackedObject($0, tallyRef) }), ids: ids)
        case 10:
            let ids = (0..<2).map { _ in fresh() }
            note(dropper.drop(["x": TrackedObject(ids[0], tallyRef), "y": TrackedObject(ids[1], tallyRef)]), ids: ids)
        case 11...12:
            let id = fresh()
            note(dropper.drop(Slow(TrackedObject(id, tallyRef))), ids: [id])
        case 13...14:
            let ids = (0..<Int(generator.next() % 20)).map { _ in fresh() }
            let outcome = dropper.drop(contentsOf: ids.map { TrackedObject($0, tallyRef) })
            if outcome.queued + outcome.droppedInline != ids.count {
                problems.append("batch of \(ids.count) reported \(outcome)")
            }
            dropped += ids
            queued += outcome.queued
            inline += outcome.droppedInline
        case 15:
            dropper.flush()
            checkFlushed()
        case 16:
            do {
                // A bound for a stuck flush only: the longest queue here drains in milliseconds.
                try dropper.flush(timeout: .seconds(20))
                checkFlushed()
            } catch {
                problems.append("flush timed out with no blocking deinit: \(error)")
            }
        default:
            checkCounts()
        }
    }

    /// After a flush: every id dropped so far is gone exactly once; counters add up.
    mutating func checkFlushed() {
        for id in dropped where tally.count(id) != 1 {
            problems.append("after flush id \(id) count \(tally.count(id))")
        }
        let statistics = dropper.statistics()
        if statistics.pending != 0 { problems.append("after flush pending \(statistics.pending)") }
        checkCounts()
    }

    /// At any time: no id deinitialised twice; queued and inline match the outcomes.
    mutating func checkCounts() {
        let statistics = dropper.statistics()
        if statistics.queued != queued || statistics.droppedInline != inline {
            problems.append("statistics \(statistics) but the model queued \(queued), inline \(inline)")
        }
        if statistics.queueHighWaterMark > dropper.capacity {
            problems.append("high-water mark \(statistics.queueHighWaterMark) above capacity \(dropper.capacity)")
        }
        if let twice = dropped.first(where: { tally.count($0) > 1 }) { problems.append("id \(twice) dropped twice") }
    }
}

@Suite struct ModelTests {
    /// Each seed: a dropper of random shape, 1,500 random steps with the integrity walker
    /// after each, then a shutdown after which the queue is still sound and every id
    /// dropped must have been deinitialised exactly once.
    @Test func randomRunsMatchTheModel() throws {
        try forEachTestSeed { seed in
            var model = try DropperModel(seed: seed, operations: 1500)
            for _ in 0..<1500 {
                model.step()
                // Spec 4: the queue is sound between drops (background threads running).
                if let violation = model.dropper.integrityViolation() { model.problems.append(violation) }
                if !model.problems.isEmpty { break }
            }
            model.dropper.shutdown()
            if let violation = model.dropper.integrityViolation() {
                model.problems.append("after shutdown: \(violation)")
            }
            if model.problems.isEmpty {
                for id in model.dropped where model.tally.count(id) != 1 {
                    model.problems.append("after shutdown id \(id) count \(model.tally.count(id))")
                }
            }
            #expect(model.problems.isEmpty, "seed \(seed): \(model.problems.prefix(5))")
        }
    }
}
