// Multi-threaded stress (spec sections 4, 5): more producer threads than cores drop
// into small queues under both full-queue policies, with flushes and shutdowns racing
// them; every value must be deinitialised exactly once. The thread-sanitizer run selects
// these suites with `--filter Stress`.

import AllocCore
import BackgroundDrop
import Glibc
import Synchronization
import Testing

@Suite struct StressTests {
    static let producers = max(8, 2 * SystemInfo.cpuCount)

    /// Producers outnumber cores; a flusher flushes meanwhile; 3 background threads,
    /// 16 slots, so the queue is full most of the time.
    @Test(arguments: [FullQueuePolicy.block(timeoutNanoseconds: nil), .dropInline, .block(timeoutNanoseconds: 20_000)])
    func manyProducersEveryValueOnce(policy: FullQueuePolicy) throws {
        let perProducer = 3000
        let producers = Self.producers
        let tally = Tally(capacity: producers * perProducer)
        let dropper = try BackgroundDropper(threads: 3, capacity: 16, whenFull: policy)
        let done = Atomic<Int>(0)
        let flushes = Atomic<Int>(0)
        let flusher = try OSThread.spawn {
            while done.load(ordering: .acquiring) == 0 {
                dropper.flush()
                flushes.add(1, ordering: .relaxed)
                usleep(200)
            }
        }
        try onThreads(producers) { producer in
            var generator = SplitMix64(seed: UInt64(producer))
            var serial = 0
            while serial < perProducer {
                let id = producer * perProducer + serial
                switch generator.next() % 4 {
                case 0:
                    let count = min(perProducer - serial, Int(generator.next() % 16) + 1)
                    dropper.drop(contentsOf: (id..<id + count).map { Tracked($0, tally) })
                    serial += count
                case 1:
                    dropper.drop(Token(id, tally))
                    serial += 1
                default:
                    dropper.drop(Tracked(id, tally))
                    serial += 1
                }
            }
        }
        done.store(1, ordering: .releasing)
        flusher.join()
        dropper.flush()
        #expect(tally.wrongCounts(0..<producers * perProducer) == "")
        let statistics = dropper.statistics()
        #expect(statistics.queued + statistics.droppedInline == producers * perProducer)
        #expect(statistics.pending == 0)
        #expect(flushes.load(ordering: .relaxed) > 0)
    }

    /// Producers keep dropping while another thread shuts the dropper down: each value
    /// is deinitialised exactly once, in the background or inline after the shutdown.
    @Test func shutdownRacingWithProducers() throws {
        for round in 0..<4 {
            let perProducer = 2000
            let producers = Self.producers
            let tally = Tally(capacity: producers * perProducer)
            let dropper = try BackgroundDropper(threads: 2, capacity: 8, whenFull: .block(timeoutNanoseconds: nil))
            let closer = try OSThread.spawn {
                usleep(UInt32(1000 * (round + 1)))
                dropper.shutdown()
            }
            try onThreads(producers) { producer in
                for serial in 0..<perProducer { dropper.drop(Tracked(producer * perProducer + serial, tally)) }
            }
            closer.join()
            #expect(tally.wrongCounts(0..<producers * perProducer) == "", "round \(round)")
            #expect(dropper.isShutDown)
        }
    }
}
