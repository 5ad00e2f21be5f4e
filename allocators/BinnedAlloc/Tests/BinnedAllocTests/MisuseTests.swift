// Heap misuse caught at free (issue 20, spec section 9): double frees of small and large
// blocks, wherever the freed block waits (the free cache, its slab's free list, a remote
// list), frees of pointers that are no block's start, and writes before a large block.
// Each runs in a child process (an exit test) that must end by abort() after one line
// naming the pointer; a control run does the same steps without the misuse and exits 0.

import AllocCore
import AllocTestSupport
import BinnedAlloc
import Glibc
import Testing

@Suite("Heap misuse is caught at free, with one line on stderr (child processes)")
struct MisuseTests {
    @Test("a double free of a small block, at once: the block is in the free cache")
    func doubleFreeImmediate() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let block = BinnedAllocator.shared.allocate(byteCount: 64)!
            BinnedAllocator.shared.deallocate(block)
            announceBadPointer(block)
            BinnedAllocator.shared.deallocate(block)
        }
        expectMisuseReport(result, mentioning: "double free of", namingTheAnnouncedPointer: true)
        expectMisuseReport(result, mentioning: "(class 3, 64 B)")
    }

    @Test("a double free after 1,000 other frees of its class: the block is back on its slab's free list")
    func doubleFreeDelayed() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let allocator = BinnedAllocator.shared
            let block = allocator.allocate(byteCount: 48)!
            let others = (0..<1_000).map { _ in allocator.allocate(byteCount: 48)! }
            allocator.deallocate(block)
            for other in others { allocator.deallocate(other) }
            announceBadPointer(block)
            allocator.deallocate(block)
        }
        expectMisuseReport(result, mentioning: "double free of", namingTheAnnouncedPointer: true)
    }

    @Test("a double free by two threads: freed on one (a remote free), then on the other")
    func doubleFreeCrossThread() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let allocator = BinnedAllocator.shared
            // 16 B: another thread's block of a class that shares cache lines goes home.
            let address = Int(bitPattern: allocator.allocate(byteCount: 16)!)
            try! onNewThread { allocator.deallocate(UnsafeMutableRawPointer(bitPattern: address)) }
            let block = UnsafeMutableRawPointer(bitPattern: address)!
            announceBadPointer(block)
            allocator.deallocate(block)
        }
        expectMisuseReport(result, mentioning: "double free of", namingTheAnnouncedPointer: true)
    }

    @Test("a double free through the C ABI, after the block was handed out again and freed by its new owner")
    func doubleFreeAfterReuse() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let block = binned_malloc(200)!
            binned_free(block)
            let again = binned_malloc(200)!
            memset(again, 0x5A, 200)
            binned_free(again)
            announceBadPointer(block)
            binned_free(block)
        }
        expectMisuseReport(result, mentioning: "double free of", namingTheAnnouncedPointer: true)
    }

    @Test("a double free of a large block, cached after its first free")
    func doubleFreeLarge() async {
        let result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            BinnedAllocator.shared.configuration.purgeDelayMilliseconds = 3_600_000
            let block = BinnedAllocator.shared.allocate(byteCount: 100_000)!
            BinnedAllocator.shared.deallocate(block)
            announceBadPointer(block)
            BinnedAllocator.shared.deallocate(block)
        }
        expectMisuseReport(result, mentioning: "double free of", namingTheAnnouncedPointer: true)
    }

    @Test("a write of 1 byte before a large block is caught at its free, and at its realloc")
    func underflowOfALargeBlock() async {
        var result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let block = BinnedAllocator.shared.allocate(byteCount: 300_000)!
            (block - 1).storeBytes(of: 0x44, as: UInt8.self)
            announceBadPointer(block)
            BinnedAllocator.shared.deallocate(block)
        }
        expectMisuseReport(result, mentioning: "heap underflow", namingTheAnnouncedPointer: true)
        result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let block = binned_malloc(300_000)!
            (block - 32).initializeMemory(as: UInt8.self, repeating: 0x44, count: 32)
            announceBadPointer(block)
            _ = binned_realloc(block, 600_000)
        }
        expectMisuseReport(result, mentioning: "heap underflow", namingTheAnnouncedPointer: true)
    }

    @Test("a free of a pointer into a slab's header page, and of p + 8 (unaligned), are no block's start")
    func pointersThatAreNoBlockStart() async {
        var result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let block = BinnedAllocator.shared.allocate(byteCount: 64)!
            let header = UnsafeMutableRawPointer(bitPattern: Int(bitPattern: block) & ~(BinnedAllocator.slabSize - 1))!
            announceBadPointer(header + 64)
            BinnedAllocator.shared.deallocate(header + 64)
        }
        expectMisuseReport(result, mentioning: "not a block's start", namingTheAnnouncedPointer: true)
        result = await #expect(
            processExitsWith: .failure, observing: [\.standardOutputContent, \.standardErrorContent]
        ) {
            let block = binned_malloc(4096)!
            announceBadPointer(block + 8)
            binned_free(block + 8)
        }
        expectMisuseReport(result, mentioning: "not a block's start", namingTheAnnouncedPointer: true)
    }

    @Test("the control: the same steps without the misuse exit 0, and a block's old contents never look freed")
    func controlRunSucceeds() async {
        await #expect(processExitsWith: .success) {
            let allocator = BinnedAllocator.shared
            // A block handed out again is live: freeing it once is correct, even when the
            // program copied a freed block's words into it (no mark is valid elsewhere).
            let first = allocator.allocate(byteCount: 64)!
            allocator.deallocate(first)
            let second = allocator.allocate(byteCount: 64)!
            let other = allocator.allocate(byteCount: 64)!
            allocator.deallocate(other)
            memcpy(second, other, 64)  // a use after free that copies the freed block's words
            allocator.deallocate(second)
            let others = (0..<1_000).map { _ in allocator.allocate(byteCount: 48)! }
            for block in others { allocator.deallocate(block) }
            let address = Int(bitPattern: allocator.allocate(byteCount: 16)!)
            try! onNewThread { allocator.deallocate(UnsafeMutableRawPointer(bitPattern: address)) }
            let large = allocator.allocate(byteCount: 100_000)!
            allocator.deallocate(large)
            // A large block grown in place and moved keeps a valid boundary word.
            var grown = binned_malloc(300_000)!
            for size in [600_000, 5_000_000, 40_000_000, 200_000] { grown = binned_realloc(grown, size)! }
            binned_free(grown)
            let reused = binned_malloc(200)!
            binned_free(reused)
            binned_free(binned_malloc(200)!)
        }
    }
}
