// SwiftNIO's ByteBuffer allocator hooks (`BinnedByteBufferHooks`, issue 21), driven through
// C function pointers the way ByteBuffer drives them (this package cannot depend on NIO): a
// capacity rounded up with binned_good_size, growth by doubling with reallocate, a copy on
// write into fresh storage with copy, and storage freed by whichever thread drops the last
// reference. The suite's name holds "Stress", so the thread-sanitizer run includes it.

import AllocTestSupport
import BinnedAlloc
import Glibc
import Testing

@Suite("ByteBufferHookStress: SwiftNIO's allocator hooks, driven as ByteBuffer drives them")
struct ByteBufferHookStressTests {
    /// What NIO's `ByteBufferAllocator` keeps: the four hooks as C function pointers.
    struct HookedAllocator {
        let allocate: BinnedByteBufferHooks.Allocate
        let reallocate: BinnedByteBufferHooks.Reallocate
        let deallocate: BinnedByteBufferHooks.Deallocate
        let copy: BinnedByteBufferHooks.Copy

        static let binned = HookedAllocator(
            allocate: BinnedByteBufferHooks.allocate, reallocate: BinnedByteBufferHooks.reallocate,
            deallocate: BinnedByteBufferHooks.deallocate, copy: BinnedByteBufferHooks.copy)
    }

    /// A ByteBuffer's storage in miniature: `written` bytes of a pattern in `capacity` bytes.
    struct Storage {
        var bytes: UnsafeMutableRawPointer
        var capacity: Int
        var written: Int
        let tag: Int

        /// Fresh storage for at least `minimum` bytes, its capacity what the allocator hands out
        /// for that request anyway (binned_good_size), as a buffer rounds its capacity up.
        init?(minimum: Int, tag: Int, allocator: HookedAllocator) {
            let capacity = binned_good_size(minimum)
            guard let bytes = allocator.allocate(capacity) else { return nil }
            self.bytes = bytes
            self.capacity = capacity
            written = 0
            self.tag = tag
        }

        /// Appends pattern bytes up to the capacity.
        mutating func fill() {
            for offset in written..<capacity {
                bytes.storeBytes(of: Self.byte(offset, tag: tag), toByteOffset: offset, as: UInt8.self)
            }
            written = capacity
        }

        /// Doubles the capacity with reallocate (ByteBuffer's growth), keeping the written bytes.
        mutating func grow(allocator: HookedAllocator) -> Bool {
            let capacity = binned_good_size(self.capacity * 2)
            guard let grown = allocator.reallocate(bytes, capacity) else { return false }
            bytes = grown
            self.capacity = capacity
            return true
        }

        /// A copy on write: fresh storage of the same capacity holding the written bytes.
        func copied(tag: Int, allocator: HookedAllocator) -> Storage? {
            guard var copy = Storage(minimum: capacity, tag: tag, allocator: allocator) else { return nil }
            allocator.copy(copy.bytes, bytes, written)
            copy.written = written
            return copy
        }

        /// The first offset whose byte is not the pattern's, or nil.
        func firstMismatch() -> Int? {
            (0..<written).first { bytes.load(fromByteOffset: $0, as: UInt8.self) != Self.byte($0, tag: tag) }
        }

        static func byte(_ offset: Int, tag: Int) -> UInt8 { UInt8(truncatingIfNeeded: offset &* 31 &+ tag &* 7) }
    }

    @Test("a buffer grows by doubling from 64 B to 4 MiB (small classes, then large spans) and keeps its bytes")
    func growsByDoubling() throws {
        let allocator = HookedAllocator.binned
        var storage = try #require(Storage(minimum: 64, tag: 1, allocator: allocator))
        #expect(BinnedAllocator.shared.usableSize(of: storage.bytes) >= storage.capacity)
        storage.fill()
        while storage.capacity < 4 << 20 {
            let written = storage.written
            let grew = storage.grow(allocator: allocator)
            #expect(grew)
            #expect(
                storage.written == written && storage.firstMismatch() == nil, "after growing to \(storage.capacity)")
            #expect(BinnedAllocator.shared.usableSize(of: storage.bytes) >= storage.capacity)
            storage.fill()
        }
        let copy = try #require(storage.copied(tag: 1, allocator: allocator))
        #expect(copy.firstMismatch() == nil && copy.written == storage.written)
        allocator.deallocate(storage.bytes)
        allocator.deallocate(copy.bytes)
    }

    @Test("a hook that cannot meet a size answers nil with ENOMEM and leaves the buffer as it was")
    func exhaustionAnswersNil() throws {
        let allocator = HookedAllocator.binned
        errno = 0
        #expect(allocator.allocate(Int.max) == nil && errno == ENOMEM)
        var storage = try #require(Storage(minimum: 100, tag: 2, allocator: allocator))
        storage.fill()
        errno = 0
        #expect(allocator.reallocate(storage.bytes, 1 << 62) == nil && errno == ENOMEM)
        #expect(storage.firstMismatch() == nil)
        allocator.deallocate(storage.bytes)
    }

    /// Three threads in lockstep, as an event loop hands buffers on: the first makes and fills
    /// buffers; the second grows each by doubling, copies it on write and drops the original
    /// (a free of the first thread's blocks); the third checks the copies and drops them.
    @Test("buffers made on one thread, grown and copied on a second, freed on a third")
    func crossThreadLifecycle() throws {
        let buffers = 200
        let slots = UnsafeMutablePointer<Storage?>.allocate(capacity: buffers)
        slots.initialize(repeating: nil, count: buffers)
        defer { slots.deallocate() }
        let shared = SendablePointer(UnsafeMutableRawPointer(slots))
        let problems = UnsafeMutablePointer<Int>.allocate(capacity: 3)
        problems.initialize(repeating: 0, count: 3)
        defer { problems.deallocate() }
        let tally = SendablePointer(UnsafeMutableRawPointer(problems))
        let stages = (0..<3).map { _ in StartLine(threads: 3) }
        try onThreads(3) { thread in
            let slots = shared.raw.assumingMemoryBound(to: Storage?.self)
            let problems = tally.raw.assumingMemoryBound(to: Int.self)
            let allocator = HookedAllocator.binned
            for stage in 0..<3 {
                stages[stage].arriveAndWait()
                guard stage == thread else { continue }
                for index in 0..<buffers {
                    switch thread {
                    case 0:
                        // Sizes from 16 B to 48 KiB: small classes and large spans.
                        slots[index] = Storage(minimum: 16 << (index % 12), tag: index, allocator: allocator)
                        slots[index]?.fill()
                        if slots[index] == nil { problems[0] += 1 }
                    case 1:
                        guard var storage = slots[index] else { continue }
                        for _ in 0..<3 where storage.grow(allocator: allocator) { storage.fill() }
                        if storage.firstMismatch() != nil { problems[1] += 1 }
                        slots[index] = storage.copied(tag: index, allocator: allocator)
                        allocator.deallocate(storage.bytes)
                    default:
                        guard let storage = slots[index] else {
                            problems[2] += 1
                            continue
                        }
                        if storage.firstMismatch() != nil { problems[2] += 1 }
                        allocator.deallocate(storage.bytes)
                        slots[index] = nil
                    }
                }
            }
        }
        #expect(
            problems[0] == 0 && problems[1] == 0 && problems[2] == 0, "\(problems[0]), \(problems[1]), \(problems[2])")
    }
}
