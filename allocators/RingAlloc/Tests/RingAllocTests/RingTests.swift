// The allocation walk and the buffer kinds, one rule at a time (spec sections 2, 3, 7, 8):
// split and exact fit, merges, wraps, a held guard and a full lap, the waiting opt-in,
// extendable growth and its move, typed and shared buffers, statistics, the per-thread
// allocator and teardown.

import AllocCore
import AllocTestSupport
import Glibc
import RingAlloc
import Testing

@Suite("The allocation walk")
struct WalkTests {
    // Spec 3: a segment is its 16-byte header and the payload rounded to 16 bytes; a free
    // segment with more than 64 bytes to spare is split.
    @Test("a request splits the free segment when more than 8 words are left over")
    func splitsBigSlack() throws {
        var ring = try RingAllocator(capacity: 64 * 1024)
        let buffer = try required(ring.fixed(capacity: 100))
        #expect(ok(buffer.capacity == 112))
        let segments = ring.segments()
        #expect(segments.count == 2)
        #expect(segments[0].start == address(of: buffer) - 16 && segments[0].byteCount == 128 && segments[0].isHeld)
        #expect(segments[1].isHeld == false && segments[1].byteCount == ring.capacity - 128)
        #expect(ring.statistics().splits == 1)
        expectSound(ring, "after a split")
    }

    // Spec 3: with 64 bytes or fewer to spare the whole segment is taken (exact fit).
    @Test("a request takes the whole segment when at most 8 words are left over")
    func takesSmallSlackWhole() throws {
        var ring = try RingAllocator(capacity: 64 * 1024)
        // Leave exactly 96 bytes before the tail: a 16-byte request (a 32-byte segment)
        // then has 64 bytes to spare, not more, and takes the segment whole.
        let filler = try required(ring.fixed(capacity: ring.capacity - 96 - 16))
        let small = try required(ring.fixed(capacity: 16))
        #expect(small.capacity == 80, "the 64 spare bytes belong to the buffer")
        #expect(ring.statistics().splits == 1, "only the filler split its segment")
        #expect(ring.segments().count == 2)
        expectSound(ring, "after an exact fit")
        _ = filler
    }

    // Spec 3: free neighbours are merged until the request fits; the tail wraps to the head.
    @Test("a walk wraps at the tail and merges free neighbours")
    func wrapsAndMerges() throws {
        var ring = try RingAllocator(capacity: 64 * 1024)
        var first = ring.fixed(capacity: 1000)
        var second = ring.fixed(capacity: 1000)
        #expect(ok(!isNil(second)))
        let headAddress = address(of: first!)
        let rest = try required(ring.fixed(capacity: ring.capacity - 2 * 1024 - 16))
        #expect(ok(ring.segments().allSatisfy { $0.isHeld }), "the ring is exactly full")
        #expect(ok(isNil(ring.fixed(capacity: 16))), "a full ring answers nil")
        first = nil
        second = nil
        let merged = try required(ring.fixed(capacity: 1500))
        #expect(address(of: merged) == headAddress, "the merged segment starts at the head")
        let statistics = ring.statistics()
        #expect(statistics.wraps >= 1 && statistics.merges == 1 && statistics.failures == 1)
        #expect(statistics.liveBuffers == 2)
        expectSound(ring, "after a wrap and a merge")
        _ = rest
    }

    // Spec 3: the walk fails at a held guard, even if there is room beyond it.
    @Test("a held guard stops the walk: nil, and the oldest release makes room")
    func heldGuardStops() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        var buffers: [Box<RingBuffer>] = []
        while let buffer = ring.fixed(capacity: 1000) { buffers.append(Box(buffer)) }
        #expect(buffers.count >= 15)
        var small: [Box<RingBuffer>] = []
        while let buffer = ring.fixed(capacity: 16) { small.append(Box(buffer)) }
        // Room in the middle does not help: the cursor's segment is the held oldest one.
        _ = buffers.remove(at: 5).take()
        #expect(ok(isNil(ring.fixed(capacity: 100))))
        _ = buffers.removeFirst().take()
        #expect(ok(!isNil(ring.fixed(capacity: 100))))
        #expect(ring.statistics().failures == 3)
        expectSound(ring, "after failures")
        small.removeAll()
    }

    // Spec 3: a request that fits nowhere on a lap (fragmented, nothing held at the cursor).
    @Test("a request that fits nowhere in a whole lap answers nil")
    func fullLapFails() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        // One small buffer held in the middle of the ring leaves two free halves, each
        // smaller than the request.
        var before = ring.fixed(capacity: ring.capacity / 2 - 32)
        let middle = try required(ring.fixed(capacity: 16))
        before = nil
        #expect(ok(isNil(before)))
        #expect(ok(isNil(ring.fixed(capacity: ring.capacity * 3 / 4))))
        #expect(ring.statistics().failures == 1)
        expectSound(ring, "after a full lap")
        _ = middle
    }

    // Spec 2: alignment above 16 bytes is honoured.
    @Test("buffers honour every power-of-two alignment", arguments: [1, 2, 8, 16, 32, 64, 4096])
    func alignment(alignment: Int) throws {
        var ring = try RingAllocator(capacity: 256 * 1024)
        for capacity in [1, 17, 100, 4000] {
            let buffer = try required(ring.fixed(capacity: capacity, alignment: alignment))
            #expect(address(of: buffer) % UInt(max(alignment, 16)) == 0)
            #expect(ok(buffer.capacity >= capacity))
        }
        expectSound(ring, "after aligned buffers")
    }
}

@Suite("When the ring is full")
struct FullRingTests {
    // Spec 2 and 5: the waiting opt-in sees a release made by another thread.
    // Spec 2: nil waits with no limit; a duration bounds the wait.
    @Test(
        "an allocation with a timeout, or none, waits for the oldest buffer's release",
        arguments: [Duration.seconds(60), nil])
    func waitsForRelease(timeout: Duration?) throws {
        // The timeout only bounds a broken wait: the release comes as soon as the owner
        // waits, however late either thread is scheduled.
        var ring = try RingAllocator(capacity: 8 * 1024, fullRingTimeout: timeout)
        #expect(ring.fullRingTimeout == timeout)
        let oldest = try required(ring.fixed(capacity: ring.capacity / 2))
        let other = try required(ring.fixed(capacity: ring.capacity / 2 - 64))
        let box = Box(oldest)
        let probe = WaitsProbe(ring)
        let releasedAt = Box<UInt64>(0)
        // The release waits until the owner is inside its wait (a sleep before it would
        // race: an owner that starts late finds the ring with room, and never waits).
        let releaser = try OSThread.spawn {
            while probe.waits == 0 { usleep(100) }
            releasedAt.value = SystemInfo.monotonicNanoseconds()
            _ = box.take()
        }
        let waited = ring.fixed(capacity: 1000)
        let returnedAt = SystemInfo.monotonicNanoseconds()
        releaser.join()
        #expect(ok(!isNil(waited)), "the release was not noticed within the timeout")
        let released = try required(releasedAt.value)
        #expect(returnedAt >= released, "the allocation returned before the release it waited for")
        #expect(ok(probe.matches(ring)), "the probe does not read the ring's waits counter")
        let statistics = ring.statistics()
        #expect(statistics.waits == 1 && statistics.failures == 0, "\(statistics)")
        _ = other
    }

    @Test("an allocation with a timeout gives up after the timeout")
    func timesOut() throws {
        var ring = try RingAllocator(capacity: 8 * 1024)
        let held = try required(ring.fixed(capacity: ring.capacity - 16))
        ring.fullRingTimeout = .milliseconds(40)
        #expect(ring.fullRingTimeout == .milliseconds(40))
        let start = SystemInfo.monotonicNanoseconds()
        #expect(ok(isNil(ring.fixed(capacity: 16))))
        let elapsed = SystemInfo.monotonicNanoseconds() - start
        // The wait ends at its deadline or after: never before. The upper bound only
        // catches a unit error (a timeout read as microseconds would wait 40 s); a loaded
        // machine may delay the return by a while, and a test must not fail for that.
        #expect(elapsed >= 40_000_000 && elapsed < 20_000_000_000, "waited \(elapsed) ns for a 40 ms timeout")
        // Without a timeout, no wait: the waits counter shows it, the clock could not (a
        // preempted thread takes long without waiting).
        ring.fullRingTimeout = .zero
        #expect(ok(isNil(ring.typed(Int.self, capacity: 2))))
        let statistics = ring.statistics()
        #expect(statistics.waits == 1 && statistics.failures == 2, "\(statistics)")
        _ = held
    }
}

@Suite("Extendable buffers")
struct ExtendableTests {
    // Spec 2: growth in place keeps the address and merges the free space after it.
    @Test("an extendable buffer grows in place, then shrinks to what was written")
    func growsInPlace() throws {
        var ring = try RingAllocator(capacity: 64 * 1024)
        var startAddress: UInt = 0
        var addressesAfterAppends: Set<UInt> = []
        let buffer = try required(
            ring.extendable(capacity: 16) { buffer in
                startAddress = UInt(bitPattern: buffer.withUnsafeBytes { $0.baseAddress })
                for chunk in 0..<40 {
                    #expect(ok(buffer.append(contentsOf: patternArray(tag: 9, count: 100, offset: chunk * 100))))
                    addressesAfterAppends.insert(UInt(bitPattern: buffer.withUnsafeBytes { $0.baseAddress }))
                }
                #expect(ok(buffer.capacity >= 4000))
            })
        #expect(addressesAfterAppends == [startAddress], "growth in place never moves")
        #expect(ok(buffer.count == 4000 && buffer.capacity == 4000), "finalize shrinks to the bytes written")
        #expect(ok(buffer.withUnsafeBytes { firstPatternMismatch($0, tag: 9) } == nil))
        let next = try required(ring.fixed(capacity: 16))
        #expect(address(of: next) == startAddress + 4000 + 16, "the space given back comes next")
        #expect(ring.statistics().moves == 0 && ring.statistics().allocations == 2)
        expectSound(ring, "after growth in place")
    }

    // Spec 2: at the tail, the buffer moves once to the head, keeping its bytes.
    @Test("an extendable buffer that meets the tail moves to the head once")
    func movesOnWrap() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        var first = ring.fixed(capacity: 4000)
        let headAddress = address(of: first!)
        let middle = try required(ring.fixed(capacity: ring.capacity - 4016 - 3000))
        first = nil
        let buffer = try required(
            ring.extendable(capacity: 100) { buffer in
                for chunk in 0..<30 {
                    #expect(ok(buffer.append(contentsOf: patternArray(tag: 4, count: 100, offset: chunk * 100))))
                }
                // The head segment is 4000 bytes; the next append needs more and nothing
                // after the moved buffer is free (the middle buffer is held).
                #expect(ok(buffer.append(contentsOf: patternArray(tag: 4, count: 2000, offset: 3000)) == false))
                #expect(ok(buffer.count == 3000))
            })
        #expect(address(of: buffer) == headAddress, "the buffer moved to the head")
        #expect(ok(buffer.withUnsafeBytes { firstPatternMismatch($0, tag: 4) } == nil), "the move kept the bytes")
        let statistics = ring.statistics()
        #expect(statistics.moves == 1 && statistics.failures == 1 && statistics.liveBuffers == 2)
        expectSound(ring, "after a move")
        _ = middle
    }

    @Test("appends of single bytes, sequences, raw bytes and repeated bytes all land")
    func appendKinds() throws {
        var ring = try RingAllocator(capacity: 64 * 1024)
        let buffer = try required(
            ring.extendable(capacity: 1) { buffer in
                #expect(ok(buffer.append(0x41)))
                #expect(ok(buffer.append(contentsOf: "BC".utf8)))
                #expect(ok(buffer.append(contentsOf: (0..<3).lazy.map { UInt8(0x44 + $0) })))
                [UInt8](repeating: 0x47, count: 2).withUnsafeBytes { #expect(ok(buffer.append(contentsOf: $0))) }
                #expect(ok(buffer.append(repeating: 0x48, count: 3)))
                #expect(ok(buffer.reserveCapacity(500) && buffer.capacity >= 500))
            })
        #expect(ok(buffer.withUnsafeBytes { Array($0) } == Array("ABCDEFGGHHH".utf8)))
        buffer.withBytes { span in #expect(span.byteCount == 11) }
    }

    @Test("a throwing body releases the buffer and rethrows")
    func throwingBody() throws {
        struct Stop: Error {}
        var ring = try RingAllocator(capacity: 16 * 1024)
        #expect(throws: Stop.self) {
            _ = try ring.extendable(capacity: 100) { buffer in
                _ = buffer.append(repeating: 1, count: 10)
                throw Stop()
            }
        }
        #expect(ring.statistics().liveBuffers == 0)
        expectSound(ring, "after a throwing body")
    }
}

@Suite("Fixed, typed and shared buffers")
struct BufferKindTests {
    // Spec 2: appends fill a fixed buffer up to its capacity; `freeCapacity` and `isFull`
    // tell what fits (an append past it traps: BadInputTests.fullFixedBuffer).
    @Test("a fixed buffer appends up to its capacity and says when it is full")
    func fixedAppends() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        var buffer = try required(ring.fixed(capacity: 32))
        #expect(ok(buffer.isEmpty && buffer.capacity == 32 && buffer.freeCapacity == 32 && !buffer.isFull))
        buffer.append(contentsOf: [UInt8](repeating: 7, count: 27))
        buffer.append(contentsOf: (0..<3).lazy.map { UInt8($0) })
        #expect(ok(buffer.count == 30 && buffer.freeCapacity == 2 && !buffer.isFull))
        buffer.append(9)
        buffer.append(9)
        #expect(ok(buffer.freeCapacity == 0 && buffer.isFull))
        #expect(ok(buffer.withUnsafeBytes { Array($0.suffix(5)) } == [0, 1, 2, 9, 9]))
        buffer.withMutableBytes { span in span.storeBytes(of: 5, as: UInt8.self) }
        buffer.withBytes { span in #expect(span.unsafeLoad(as: UInt8.self) == 5) }
        buffer.removeAll()
        buffer.append(repeating: 3, count: 32)
        #expect(ok(buffer.count == 32 && buffer.isFull))
    }

    // Spec 2: typed buffers; the elements left are deinitialised when the buffer goes.
    @Test("a typed buffer deinitialises exactly the elements it still holds")
    func typedDeinitialises() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        let tally = DeinitTally(capacity: 128)
        var capacity = 0
        defer { _ = capacity }
        do {
            var buffer = try required(ring.typed(TrackedObject.self, capacity: 10))
            capacity = buffer.capacity
            #expect(ok(buffer.capacity >= 10 && buffer.capacity < 100))
            for id in 0..<buffer.capacity - 1 { #expect(ok(isNil(buffer.push(TrackedObject(id, tally))))) }
            buffer.append(TrackedObject(buffer.capacity - 1, tally))
            #expect(ok(buffer.isFull && buffer.freeCapacity == 0))
            // Spec 2: a full buffer hands the element back; it dies where the caller drops it.
            let refused = buffer.push(TrackedObject(127, tally))
            #expect(refused?.id == 127 && tally.died == 0, "the element refused by a full buffer comes back alive")
            _ = consume refused
            #expect(tally.died == 1 && tally.count(127) == 1)
            #expect(ok(buffer.pop()?.id == buffer.capacity - 1))
            #expect(ok(buffer.remove(at: 0).id == 0))
            #expect(ok(buffer.swapRemove(at: 0).id == 1))
            #expect(buffer[0].id == buffer.capacity - 2, "the last element took the removed one's place")
            buffer.insert(TrackedObject(100, tally), at: 1)
            #expect(buffer[1].id == 100)
            #expect(tally.died == 4)
            #expect(ok(buffer.count == buffer.capacity - 3 + 1))
        }
        #expect(tally.died == 4 + capacity - 3 + 1, "the elements left were deinitialised with the buffer")
        let wrong = tally.wrongCounts(0..<capacity) + tally.wrongCounts(100..<101)
        #expect(wrong.isEmpty, "\(wrong)")
        expectSound(ring, "after typed buffers")
    }

    @Test("typed elements deinitialise when the buffer is dropped, not before")
    func typedDropCount() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        let tally = DeinitTally(capacity: 8)
        var buffer = ring.typed(TrackedObject.self, capacity: 8)
        for id in 0..<5 { buffer!.append(TrackedObject(id, tally)) }
        #expect(tally.died == 0)
        buffer = nil
        #expect(tally.died == 5 && tally.wrongCounts(0..<5).isEmpty)
        var cleared = try required(ring.typed(TrackedObject.self, capacity: 4))
        cleared.append(TrackedObject(5, tally))
        cleared.removeAll()
        #expect(tally.died == 6 && tally.count(5) == 1 && cleared.isEmpty)
        cleared.withSpan { #expect($0.count == 0) }
        #expect(ring.statistics().liveBuffers == 1)
    }

    // Spec 2: typed buffers take ~Copyable elements too (RingAl's generic buffers take
    // any Rust type, all of which move).
    @Test("a typed buffer of ~Copyable elements moves them in and out and drops the rest")
    func typedNoncopyable() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        let tally = DeinitTally(capacity: 10)
        do {
            var buffer = try required(ring.typed(TrackedToken.self, capacity: 4))
            for id in 0..<4 { buffer.append(TrackedToken(id, tally)) }
            // Spec 2: a full buffer hands a ~Copyable element back instead of destroying it.
            let refused = buffer.push(TrackedToken(9, tally))
            #expect(tally.died == 0, "the refused token is alive")
            #expect(identifier(of: refused) == 9)
            #expect(tally.died == 1 && tally.count(9) == 1)
            let lastID = identifier(of: buffer.pop())
            let firstID = buffer.remove(at: 0).id
            #expect(lastID == 3 && firstID == 0)
            buffer.insert(TrackedToken(7, tally), at: 0)
            let swappedID = buffer.swapRemove(at: 0).id
            #expect(swappedID == 7)
            let ids = (buffer[0].id, buffer[1].id, buffer.count)
            #expect(ids == (2, 1, 2), "the last element took the removed one's place")
            buffer[1].id = 5
            let changed = buffer.withSpan { $0[1].id }
            #expect(changed == 5)
            #expect(tally.died == 4, "the refused one and the 3 moved out were dropped")
        }
        #expect(tally.died == 6, "the 2 left were dropped with the buffer")
        // Token 1 was renamed 5 in place: its deinit reports 5.
        #expect(tally.count(2) == 1 && tally.count(5) == 1 && tally.count(1) == 0)
    }

    // Spec 2: the clone count lives in the segment; the last clone releases it.
    @Test("a shared buffer is released by its last clone")
    func sharedLastClone() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        var buffer = try required(ring.fixed(capacity: 64))
        buffer.append(contentsOf: patternArray(tag: 3, count: 50))
        var first: SharedRingBuffer? = buffer.freeze()
        var second = first?.clone()
        var third = second?.clone()
        #expect(first?.cloneCount == 3)
        #expect(third?.withUnsafeBytes { firstPatternMismatch($0, tag: 3) } == nil)
        third?.withBytes { #expect($0.byteCount == 50) }
        first = nil
        third = nil
        #expect(ring.statistics().liveBuffers == 1 && second?.cloneCount == 1)
        second = nil
        #expect(ring.statistics().liveBuffers == 0)
        expectSound(ring, "after shared buffers")
    }
}

@Suite("Statistics")
struct StatisticsTests {
    // Spec 8.
    @Test("the counters count what happened and the bytes held now")
    func counters() throws {
        var ring = try RingAllocator(capacity: 16 * 1024)
        var a = ring.fixed(capacity: 100)
        let b = try required(ring.fixed(capacity: 200))
        var statistics = ring.statistics()
        #expect(statistics.allocations == 2 && statistics.liveBuffers == 2)
        #expect(statistics.bytesInUse == 128 + 224 && statistics.peakBytesInUse == 352)
        #expect(statistics.capacity == ring.capacity && ring.capacity >= 16 * 1024)
        a = nil
        statistics = ring.statistics()
        #expect(statistics.bytesInUse == 224 && statistics.liveBuffers == 1, "a release shows at once")
        #expect(statistics.peakBytesInUse == 352)
        _ = b
        _ = a
    }
}

/// The id of an optional token (optional chaining would consume it twice).
func identifier(of token: consuming TrackedToken?) -> Int? {
    switch consume token {
    case .some(let token): return token.id
    case .none: return nil
    }
}

@Suite("Per-thread allocator and teardown")
struct ThreadAndTeardownTests {
    // Spec 5: one allocator per thread, kept between calls.
    @Test("withCurrentThread gives a thread the same allocator every time, another thread another")
    func perThread() throws {
        let box = Box<UInt>(0)
        let thread = try OSThread.spawn {
            let first = RingAllocator.withCurrentThread(capacity: 32 * 1024) { $0.fixed(capacity: 100) }!!
            let second = RingAllocator.withCurrentThread { $0.fixed(capacity: 100) }!!
            let statistics = RingAllocator.withCurrentThread { $0.statistics() }!
            box.value =
                statistics.allocations == 2 && address(of: second) == address(of: first) + 128
                    && statistics.capacity < 64 * 1024 ? 1 : 2
        }
        thread.join()
        #expect(box.value == 1, "the thread's calls did not share one allocator")
        // Another new thread, not the test's own: a thread of the test runner may have a
        // ring already, from whichever test ran on it before.
        // -1: the thread got no allocator.
        let otherAllocations = Box<Int>(-1)
        try onNewThread {
            otherAllocations.value = RingAllocator.withCurrentThread { $0.statistics().allocations } ?? -1
        }
        #expect(otherAllocations.value == 0, "another thread's allocations showed on this thread")
    }

    // Spec 5 and 6: teardown with a live buffer keeps the ring mapped until it goes.
    @Test("dropping the allocator with live buffers unmaps the ring after the last release")
    func teardownWithLiveBuffers() async {
        await #expect(processExitsWith: .success) {
            var ring: RingAllocator? = try! RingAllocator(capacity: 64 * 1024)
            var buffer = ring!.fixed(capacity: 100)!
            buffer.append(contentsOf: patternArray(tag: 5, count: 100))
            let shared = buffer.freeze()
            let clone = shared.clone()
            let other = ring!.typed(Int.self, capacity: 3)!
            let page = UnsafeRawPointer(
                bitPattern: alignDown(Int(bitPattern: shared.withUnsafeBytes { $0.baseAddress }), to: 4096))!
            ring = nil
            guard SystemMemory.isMapped(page), shared.withUnsafeBytes({ firstPatternMismatch($0, tag: 5) }) == nil
            else { exit(1) }
            _ = consume shared
            _ = consume other
            guard SystemMemory.isMapped(page) else { exit(2) }
            let unmaps = SystemMemory.statistics.value(of: .unmapCalls)
            let box = Box(clone)
            let thread = try! OSThread.spawn { _ = box.take() }
            thread.join()
            // The last release unmapped the ring, once (counted, not probed: a later mapping
            // could reuse the address).
            exit(SystemMemory.statistics.value(of: .unmapCalls) == unmaps + 1 ? 0 : 3)
        }
    }

    @Test("dropping the allocator with no live buffer unmaps the ring at once")
    func teardownEmpty() async {
        await #expect(processExitsWith: .success) {
            var ring: RingAllocator? = try! RingAllocator(capacity: 64 * 1024)
            let buffer = ring!.fixed(capacity: 10)!
            let page = UnsafeRawPointer(bitPattern: alignDown(Int(bitPattern: address(of: buffer)), to: 4096))!
            _ = consume buffer
            guard SystemMemory.isMapped(page) else { exit(1) }
            let unmaps = SystemMemory.statistics.value(of: .unmapCalls)
            ring = nil
            exit(SystemMemory.statistics.value(of: .unmapCalls) == unmaps + 1 ? 0 : 2)
        }
    }

    // Spec 5: a thread's exit drops its allocator; buffers it handed out stay valid.
    @Test("a thread's exit drops its allocator, and its buffers outlive it")
    func threadExit() async {
        await #expect(processExitsWith: .success) {
            let box = Box<RingBuffer?>(nil)
            let thread = try! OSThread.spawn {
                var buffer = RingAllocator.withCurrentThread { $0.fixed(capacity: 200) }!!
                buffer.append(contentsOf: patternArray(tag: 8, count: 200))
                box.value = .some(buffer)
            }
            thread.join()
            let buffer = box.take()!!
            let page = UnsafeRawPointer(bitPattern: alignDown(Int(bitPattern: address(of: buffer)), to: 4096))!
            guard SystemMemory.isMapped(page), buffer.withUnsafeBytes({ firstPatternMismatch($0, tag: 8) }) == nil
            else {
                exit(1)
            }
            let unmaps = SystemMemory.statistics.value(of: .unmapCalls)
            _ = consume buffer
            exit(SystemMemory.statistics.value(of: .unmapCalls) == unmaps + 1 ? 0 : 2)
        }
    }
}
