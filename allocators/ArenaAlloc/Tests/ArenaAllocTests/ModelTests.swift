// A seeded model-based test: random sizes, alignments, grows, shrinks, rollbacks and
// resets against a model of the live blocks; checks no overlap, alignment and contents
// (spec sections 2 and 4). A failure prints the seed; ARENA_TEST_SEED replays it.

import AllocCore
import Glibc
import Testing

@testable import ArenaAlloc

/// A live block in the model: where it is, its size and the byte it was filled with.
struct ModelBlock {
    var address: UnsafeMutableRawPointer
    var byteCount: Int
    var alignment: Int
    var fill: UInt8
}

@Suite("Arena model")
struct ModelTests {
    @Test("random operations keep blocks apart, aligned and intact", arguments: 0..<4)
    func randomOperations(round: Int) throws {
        let seed = testSeed() &+ UInt64(round)
        var random = SplitMix64(seed: seed)
        var arena = Arena(firstChunkByteCount: [64, 4096, 1 << 16, 100][round])
        var live: [ModelBlock] = []
        var fills: UInt8 = 0

        func check(_ block: ModelBlock) -> Bool {
            let bytes = UnsafeRawBufferPointer(start: block.address, count: block.byteCount)
            return bytes.allSatisfy { $0 == block.fill }
        }

        for step in 0..<6_000 {
            let draw = random.next() % 100
            switch draw {
            case 0..<60:
                let byteCount = Int(random.next() % 4) == 0 ? Int(random.next() % 20_000) : Int(random.next() % 64)
                let alignment = 1 << Int(random.next() % 13)
                let address = try required(
                    arena.allocate(byteCount: byteCount, alignment: alignment), "seed \(seed) step \(step)")
                #expect(
                    Int(bitPattern: address) % alignment == 0, "seed \(seed) step \(step): \(address) % \(alignment)")
                for other in live where byteCount > 0 && other.byteCount > 0 {
                    let apart = address + byteCount <= other.address || other.address + other.byteCount <= address
                    #expect(
                        apart,
                        "seed \(seed) step \(step): \(address)+\(byteCount) overlaps \(other.address)+\(other.byteCount)"
                    )
                }
                fills &+= 1
                memset(address, Int32(fills), byteCount)
                live.append(ModelBlock(address: address, byteCount: byteCount, alignment: alignment, fill: fills))
            case 60..<75:
                guard var block = live.last else { continue }
                let newByteCount = Int(random.next() % 30_000)
                let moved = try required(
                    arena.resize(block.address, from: block.byteCount, to: newByteCount, alignment: block.alignment),
                    "seed \(seed) step \(step)")
                let kept = min(block.byteCount, newByteCount)
                #expect(
                    UnsafeRawBufferPointer(start: moved, count: kept).allSatisfy { $0 == block.fill },
                    "seed \(seed) step \(step): resize lost the contents")
                #expect(Int(bitPattern: moved) % block.alignment == 0)
                block.address = moved
                block.byteCount = newByteCount
                memset(moved, Int32(block.fill), newByteCount)
                live[live.count - 1] = block
            case 75..<90:
                guard let block = live.last else { continue }
                let used = arena.bytesInUse
                let rolledBack = arena.deallocate(block.address, byteCount: block.byteCount)
                // Rollback works for the newest block only (the one that ends at the cursor).
                if rolledBack {
                    #expect(arena.bytesInUse <= used, "seed \(seed) step \(step)")
                    live.removeLast()
                }
            case 90..<98:
                for block in live {
                    #expect(check(block), "seed \(seed) step \(step): block \(block.address) was overwritten")
                }
            default:
                for block in live {
                    #expect(check(block), "seed \(seed) step \(step): block \(block.address) was overwritten")
                }
                arena.reset()
                live.removeAll()
                #expect(arena.bytesInUse == 0 && arena.statistics.chunks <= 1, "seed \(seed) step \(step)")
            }
            #expect(arena.statistics.peakBytesInUse >= arena.bytesInUse)
        }
        for block in live { #expect(check(block), "seed \(seed): block \(block.address) was overwritten") }
    }
}
