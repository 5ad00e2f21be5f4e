// File-backed chunks and fork (spec sections 5 and 6): temporary files exist only while
// their chunks are mapped and never appear in the directory; a child process after fork
// can allocate and free, and never reuses a file-backed region it shares with its parent.

import AllocCore
import AllocTestSupport
import Glibc
import LargeAlloc
import Testing

@Suite("File backing and fork")
struct FileAndForkTests {
    @Test("temporary files are mapped while chunks live and gone with the allocator")
    func temporaryFilesRemoved() throws {
        try withTemporaryDirectory { directory in
            var allocator: LargeAllocator? = try LargeAllocator(
                configuration: testConfiguration(backing: .file(directory: directory)))
            var region: Region<UInt64>? = try allocator!.allocate(UInt64.self, capacity: 300_000)
            fill(&region!, count: 300_000, tag: 9)
            let small = try allocator!.allocate(UInt8.self, capacity: 1)
            #expect(directoryEntries(directory).isEmpty, "temporary files are unlinked at once")
            let mapped = mappedFiles(under: directory)
            #expect(mapped.count == 2 && mapped.allSatisfy { $0.contains("(deleted)") }, "\(mapped)")
            let statistics = totals(allocator!.statistics())
            #expect(statistics.fileBytes == statistics.chunkBytes && statistics.fileBytes >= 4 << 20)
            _ = consume small
            allocator = nil
            #expect(mappedFiles(under: directory).count == 2, "a live region keeps its allocator's chunks")
            let intact = matches(region!, tag: 9)
            #expect(intact)
            region = nil
            #expect(mappedFiles(under: directory).isEmpty, "chunks still mapped after the last region went")
            #expect(directoryEntries(directory).isEmpty)
        }
    }

    @Test("an idle file-backed chunk is unmapped, and its file with it")
    func idleFileChunkUnmapped() throws {
        try withTemporaryDirectory { directory in
            var configuration = testConfiguration(
                backing: .file(directory: directory), threadCacheBytes: 0, worker: .milliseconds(5))
            configuration.chunkIdleAge = .milliseconds(10)
            let allocator = try LargeAllocator(configuration: configuration)
            do {
                var region = try allocator.allocate(UInt64.self, capacity: 1000)
                fill(&region, count: 1000, tag: 1)
            }
            let unmapped = eventually { mappedFiles(under: directory).isEmpty }
            #expect(unmapped)
            #expect(totals(allocator.statistics()).unmappedChunks == 1)
        }
    }

    @Test("switching the backing at run time: new chunks use the new backing")
    func switchBacking() throws {
        try withTemporaryDirectory { directory in
            let allocator = try LargeAllocator(configuration: testConfiguration())
            let anonymous = try allocator.allocate(UInt8.self, capacity: 1)
            var configuration = allocator.configuration
            configuration.backing = .file(directory: directory)
            try allocator.reconfigure(configuration)
            let file = try allocator.allocate(UInt8.self, capacity: 1 << 20)
            let statistics = allocator.statistics()
            #expect(statistics.sizeClasses[0].fileBytes == 0 && statistics.sizeClasses[4].fileBytes > 0)
            #expect(mappedFiles(under: directory).count == 1)
            _ = consume anonymous
            _ = consume file
        }
    }

    @Test("a child process after fork allocates and frees; shared file regions are not reused")
    func forkChild() async {
        await #expect(processExitsWith: .success) {
            try! withTemporaryDirectory { directory in
                for backing in [
                    LargeAllocConfiguration.Backing.anonymous(hugePages: false), .file(directory: directory),
                ] {
                    let configuration = testConfiguration(backing: backing, worker: .milliseconds(5))
                    let allocator = try LargeAllocator(configuration: configuration)
                    var live = try allocator.allocate(UInt64.self, capacity: 100_000)
                    fill(&live, count: 100_000, tag: 11)
                    let liveAddress = live.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress) }
                    var freed = try allocator.allocate(UInt64.self, capacity: 100_000)
                    let freedAddress = freed.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress) }
                    fill(&freed, count: 10, tag: 12)
                    _ = consume freed  // in the parent's thread cache
                    let isFile = backing != .anonymous(hugePages: false)

                    let child = fork()
                    if child == 0 {
                        // The child: allocate and free in several classes, check content.
                        var failures = 0
                        for round in 0..<20 {
                            var region = try! allocator.allocate(UInt64.self, capacity: 1000 << (round % 6))
                            let address = region.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress) }
                            if isFile && (address == freedAddress || address == liveAddress) { failures += 1 }
                            fill(&region, count: 1000, tag: UInt64(round) + 100)
                            if !matches(region, tag: UInt64(round) + 100) { failures += 1 }
                        }
                        if !matches(live, tag: 11) { failures += 1 }
                        _ = consume live  // a shared region is dropped, never pooled, in the child
                        let again = try! allocator.allocate(UInt64.self, capacity: 100_000)
                        let againAddress = again.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress) }
                        if isFile && (againAddress == liveAddress || againAddress == freedAddress) { failures += 1 }
                        _exit(failures == 0 ? 0 : 1)
                    }
                    var status: Int32 = 0
                    while waitpid(child, &status, 0) < 0 && errno == EINTR {}
                    precondition(status == 0, "child failed for \(backing): status \(status)")
                    // The parent's regions are untouched by the child.
                    precondition(matches(live, tag: 11), "the child wrote into the parent's live region")
                    let reused = try allocator.allocate(UInt64.self, capacity: 100_000)
                    precondition(reused.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress) } == freedAddress)
                }
            }
        }
    }
}

@Suite("Allocator lifetime")
struct LifetimeTests {
    @Test("the allocator goes away with its last region, whichever thread frees it and how")
    func lastRegionOnAnyThread() throws {
        try withTemporaryDirectory { directory in
            var allocator: LargeAllocator? = try LargeAllocator(
                configuration: testConfiguration(backing: .file(directory: directory), worker: .milliseconds(2)))
            let slots = (0..<4).map { _ in RegionSlot() }
            for slot in slots {
                _ = slot.swap(TaggedRegion(region: try allocator!.allocate(UInt64.self, capacity: 1000), tag: 1))
            }
            // A region freed on a new thread (which makes a cache for the free) while the
            // handle lives; then the handle goes while three are live.
            try onNewThread { _ = slots[0].swap(nil) }
            allocator = nil
            #expect(!mappedFiles(under: directory).isEmpty)
            try onNewThread { _ = slots[1].swap(nil) }  // a new thread: no cache can be made now
            _ = slots[2].swap(nil)  // the allocating thread's cache, transferred at close
            #expect(!mappedFiles(under: directory).isEmpty, "destroyed with a region still live")
            try onNewThread { _ = slots[3].swap(nil) }
            #expect(mappedFiles(under: directory).isEmpty, "chunks still mapped after the last region went")
        }
    }
}
