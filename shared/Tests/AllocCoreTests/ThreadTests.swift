import AllocCore
import AllocTestSupport
import Glibc
import Synchronization
import Testing

/// What the exit hook saw: a global `let` of atomics, since a C hook cannot capture.
let exitHookCalls = Atomic<Int>(0)
let exitHookValueSum = Atomic<Int>(0)
let exitHookSlotWasClear = Atomic<Int>(0)
let exitHookSawExiting = Atomic<Int>(0)

/// Serializes the suites that install process-wide hooks on the same slot.
@Suite(.serialized) struct ThreadLocalSlotTests {
    @Test func eachThreadSeesItsOwnValueAndNewThreadsStartNil() throws {
        let slot = ThreadLocalSlot.application(1)
        slot.value = UnsafeMutableRawPointer(bitPattern: 0x1000)
        let sawNil = Atomic<Int>(0)
        try onThreads(4) { thread in
            if slot.value == nil { sawNil.add(1, ordering: .relaxed) }
            slot.value = UnsafeMutableRawPointer(bitPattern: 0x2000 + thread * 16)
            for _ in 0..<1000 {
                precondition(slot.value == UnsafeMutableRawPointer(bitPattern: 0x2000 + thread * 16))
            }
        }
        #expect(sawNil.load(ordering: .relaxed) == 4)
        #expect(slot.value == UnsafeMutableRawPointer(bitPattern: 0x1000))
        slot.value = nil
    }

    @Test func namedSlotsAreDistinct() {
        let slots: [ThreadLocalSlot] = [
            .binnedAlloc, .arenaAlloc, .ringAlloc, .largeAlloc, .backgroundDrop,
            .application(0), .application(1), .application(2),
        ]
        #expect(Set(slots.map(\.index)).count == ThreadLocalSlot.count)
    }

    /// The hook runs once per exiting thread that installed a value, on that thread, with
    /// that value, while the slot reads nil; threads that never installed one run nothing.
    @Test func exitHookGivesEachThreadsValueBack() throws {
        let slot = ThreadLocalSlot.application(0)
        slot.setThreadExitHook { value in
            exitHookCalls.add(1, ordering: .relaxed)
            exitHookValueSum.add(Int(bitPattern: value), ordering: .relaxed)
            if ThreadLocalSlot.application(0).value == nil { exitHookSlotWasClear.add(1, ordering: .relaxed) }
            if ThreadLocalSlot.isCurrentThreadExiting { exitHookSawExiting.add(1, ordering: .relaxed) }
        }
        defer { slot.setThreadExitHook(nil) }
        let before = (
            exitHookCalls.load(ordering: .relaxed), exitHookValueSum.load(ordering: .relaxed),
            exitHookSawExiting.load(ordering: .relaxed)
        )
        let exitingBeforeExit = Atomic<Int>(0)
        try onThreads(6) { thread in
            if ThreadLocalSlot.isCurrentThreadExiting { exitingBeforeExit.add(1, ordering: .relaxed) }
            if thread < 5 {
                try! slot.install(UnsafeMutableRawPointer(bitPattern: (thread + 1) * 16)!)
            }
        }
        #expect(exitHookCalls.load(ordering: .relaxed) - before.0 == 5)
        #expect(exitHookValueSum.load(ordering: .relaxed) - before.1 == (1 + 2 + 3 + 4 + 5) * 16)
        #expect(exitHookSlotWasClear.load(ordering: .relaxed) >= 5)
        #expect(exitHookSawExiting.load(ordering: .relaxed) - before.2 == 5)
        #expect(exitingBeforeExit.load(ordering: .relaxed) == 0)
        #expect(!ThreadLocalSlot.isCurrentThreadExiting)
    }

    /// A hook that installs a value again (a free inside the hook recreating a cache) is
    /// called again for that value, within glibc's four rounds of key destructors.
    @Test func exitHookRunsAgainForAValueSetDuringExit() throws {
        let slot = ThreadLocalSlot.application(2)
        let before = exitHookCalls.load(ordering: .relaxed)
        slot.setThreadExitHook { value in
            exitHookCalls.add(1, ordering: .relaxed)
            if Int(bitPattern: value) == 32 {
                try! ThreadLocalSlot.application(2).install(UnsafeMutableRawPointer(bitPattern: 48)!)
            }
        }
        defer { slot.setThreadExitHook(nil) }
        try onThreads(1) { _ in try! slot.install(UnsafeMutableRawPointer(bitPattern: 32)!) }
        #expect(exitHookCalls.load(ordering: .relaxed) - before == 2)
    }
}

@Suite struct ThreadLocalSlotMisuseTests {
    @Test func slotIndexOutOfRangeTraps() async {
        await #expect(processExitsWith: .failure) { _ = ThreadLocalSlot(index: 8) }
        await #expect(processExitsWith: .failure) { _ = ThreadLocalSlot.application(3) }
    }

    /// The C symbols are hidden (local once linked), so two copies of AllocCore in one
    /// process, a program and a preloaded allocator, keep separate slots and hooks.
    @Test func cSymbolsAreLocalToTheLinkedImage() throws {
        let listing = try ChildProcess.run("/usr/bin/nm", arguments: ["/proc/\(getpid())/exe"])
        #expect(listing.succeeded)
        let symbols = listing.outputText.split(separator: "\n").filter {
            $0.hasSuffix("alloc_core_tls_slots") || $0.contains(" alloc_core_tls_")
        }
        #expect(symbols.count >= 3, "nm found \(symbols)")
        for line in symbols {
            let type = line.split(separator: " ").dropLast().last.map(String.init) ?? ""
            #expect(type == type.lowercased(), "\(line) is a global symbol")
        }
    }
}

@Suite struct OSThreadTests {
    @Test func threadsRunTheirBodiesAndJoin() throws {
        let ran = Atomic<Int>(0)
        let ids = Mutex<Set<Int>>([])
        try onThreads(3) { _ in
            ran.add(1, ordering: .relaxed)
            ids.withLock { _ = $0.insert(currentThreadID()) }
        }
        #expect(ran.load(ordering: .relaxed) == 3)
        #expect(ids.withLock { $0.count } == 3)
        #expect(!ids.withLock { $0.contains(currentThreadID()) })
    }
}

@Suite struct FutexTests {
    /// A waiter sleeps until the word changes and it is woken; the waker sees it woke.
    @Test func waiterSleepsUntilWokenAfterAChange() throws {
        let memory = rawPages()
        defer { memory.deallocate() }
        let word = AtomicWord(initializingAt: memory, to: 0)
        let woke = AtomicWord(initializingAt: memory + 64, to: 0)
        let address = Int(bitPattern: memory)
        let waiter = try OSThread.spawn {
            let word = AtomicWord(at: UnsafeMutableRawPointer(bitPattern: address)!)
            while word.load(ordering: .acquiring) == 0 { Futex.wait(word, whileEqualTo: 0) }
            AtomicWord(at: UnsafeMutableRawPointer(bitPattern: address)! + 64).store(1, ordering: .releasing)
        }
        // The waiter cannot finish before the store: it only leaves the loop on a change.
        usleep(20_000)
        #expect(woke.load(ordering: .acquiring) == 0)
        word.store(1, ordering: .releasing)
        Futex.wake(word)
        waiter.join()
        #expect(woke.load(ordering: .acquiring) == 1)
    }

    @Test func waitReturnsAtOnceWhenTheWordDiffersAndTimesOutOtherwise() {
        let memory = rawPages()
        defer { memory.deallocate() }
        let word = AtomicWord(initializingAt: memory, to: 7)
        #expect(Futex.wait(word, whileEqualTo: 8, timeoutNanoseconds: 5_000_000_000) == .valueChanged)
        let start = SystemInfo.monotonicNanoseconds()
        #expect(Futex.wait(word, whileEqualTo: 7, timeoutNanoseconds: 20_000_000) == .timedOut)
        #expect(SystemInfo.monotonicNanoseconds() - start >= 20_000_000)
        #expect(Futex.wake(word) == 0)
    }
}
