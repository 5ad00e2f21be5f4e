import AllocCore
import Glibc
import Testing

@Suite struct SystemInfoTests {
    @Test func machineFactsAreSane() {
        #expect(SystemInfo.pageSize == 4096)
        #expect(SystemInfo.cpuCount >= 1)
        let first = SystemInfo.monotonicNanoseconds()
        let second = SystemInfo.monotonicNanoseconds()
        #expect(second >= first)
        let current = SystemInfo.currentResidentBytes ?? 0
        let peak = SystemInfo.peakResidentBytes ?? 0
        #expect(current > 1 << 20)
        #expect(peak >= current)
        #expect(currentThreadID() > 0)
    }
}

/// Suites that map memory run one at a time, so each sees only its own effect on the
/// process-wide counters and on RSS.
@Suite(.serialized) struct MappingSuites {}

extension MappingSuites {
    @Suite struct SystemMemoryTests {
        @Test func mappedMemoryIsZeroedWritableAndCounted() throws {
            let before = SystemMemory.statistics.snapshot()
            let size = 64 * 1024
            let span = try SystemMemory.map(byteCount: size)
            #expect(isAligned(span, to: SystemInfo.pageSize))
            let bytes = span.bindMemory(to: UInt8.self, capacity: size)
            #expect((0..<size).allSatisfy { bytes[$0] == 0 })
            bytes[size - 1] = 7
            try SystemMemory.unmap(span, byteCount: size)
            let after = SystemMemory.statistics.snapshot()
            #expect(after[.mapCalls] - before[.mapCalls] >= 1)
            #expect(after[.mappedBytes] - before[.mappedBytes] >= size)
            #expect(after[.unmappedBytes] - before[.unmappedBytes] >= size)
        }

        /// DONTNEED gives the pages back at once: RSS falls and the memory reads zero again.
        @Test func adviseDontNeedZeroesAndLowersResidentSize() throws {
            let size = 32 << 20
            let span = try SystemMemory.map(byteCount: size)
            defer { try? SystemMemory.unmap(span, byteCount: size) }
            memset(span, 0xAB, size)
            let touched = SystemInfo.currentResidentBytes!
            #expect(SystemInfo.peakResidentBytes! >= touched)
            try SystemMemory.advise(span, byteCount: size, .dontNeed)
            let released = SystemInfo.currentResidentBytes!
            #expect(touched - released >= size / 2, "RSS went from \(touched) to \(released)")
            #expect(span.load(fromByteOffset: size / 2, as: UInt8.self) == 0)
            for advice in [MemoryAdvice.willNeed, .hugePage, .noHugePage, .free] {
                try SystemMemory.advise(span, byteCount: size, advice)
            }
        }

        /// POPULATE_WRITE makes a fresh span resident at once (smaps counts it), and it still
        /// reads zero; a kernel before 5.14 answers EINVAL. The span lies between inaccessible
        /// pages, so that no neighbour's pages are counted with it.
        @Test func advisePopulateWriteMakesPagesResident() throws {
            let size = 8 << 20
            try withIsolatedSpan(byteCount: size) { span in
                let range = Int(bitPattern: span)..<Int(bitPattern: span) + size
                #expect(try MemoryMappings.usage(of: [range])[0].residentBytes == 0)
                do {
                    try SystemMemory.advise(span, byteCount: size, .populateWrite)
                } catch let error as SystemError {
                    #expect(error.code == EINVAL, "populateWrite failed with \(error)")
                    return
                }
                #expect(try MemoryMappings.usage(of: [range])[0].residentBytes == size)
                #expect(span.load(fromByteOffset: size - 8, as: Int.self) == 0)
            }
        }

        @Test func reservedAddressSpaceBecomesUsableWhenCommitted() throws {
            let size = 1 << 30
            let reserved = try SystemMemory.reserve(byteCount: size)
            defer { try? SystemMemory.unmap(reserved, byteCount: size) }
            try SystemMemory.commit(reserved + (1 << 20), byteCount: 4096)
            (reserved + (1 << 20)).storeBytes(of: 99, as: Int.self)
            #expect((reserved + (1 << 20)).load(as: Int.self) == 99)
        }

        /// A revoked page faults when written (in a child process, which the fault ends), and
        /// opens again, contents kept, when committed.
        @Test func revokedAccessFaultsUntilCommittedAgain() async throws {
            await #expect(processExitsWith: .signal(SIGSEGV)) {
                let page = try! SystemMemory.map(byteCount: SystemInfo.pageSize)
                try! SystemMemory.revokeAccess(page, byteCount: SystemInfo.pageSize)
                page.storeBytes(of: 1, as: Int.self)
            }
            let page = try SystemMemory.map(byteCount: SystemInfo.pageSize)
            defer { try? SystemMemory.unmap(page, byteCount: SystemInfo.pageSize) }
            page.storeBytes(of: 77, as: Int.self)
            try SystemMemory.revokeAccess(page, byteCount: SystemInfo.pageSize)
            try SystemMemory.commit(page, byteCount: SystemInfo.pageSize)
            #expect(page.load(as: Int.self) == 77)
        }

        /// In a child process: whether a range is still mapped is only the test's to say
        /// where no other test maps memory at the same time (a parallel test's mapping
        /// could land in the range just given up, as mmap reuses the newest hole first).
        @Test func resizeGrowsShrinksAndMovesWithoutCopying() async {
            await #expect(processExitsWith: .success) {
                let page = SystemInfo.pageSize
                let span = try! SystemMemory.map(byteCount: 4 * page)
                span.storeBytes(of: 42, as: Int.self)
                let shrunk = try! SystemMemory.resize(span, from: 4 * page, to: 2 * page, move: .never)
                guard shrunk == span else { exit(1) }
                let target = try! SystemMemory.reserve(byteCount: 8 * page)
                let moved = try! SystemMemory.resize(span, from: 2 * page, to: 8 * page, move: .to(target))
                guard moved == target, moved.load(as: Int.self) == 42 else { exit(2) }
                guard !SystemMemory.isMapped(span) || span == target, SystemMemory.isMapped(moved + 7 * page) else {
                    exit(3)
                }
                let anywhere = try! SystemMemory.resize(moved, from: 8 * page, to: 16 * page, move: .anywhere)
                guard anywhere.load(as: Int.self) == 42 else { exit(4) }
                try! SystemMemory.unmap(anywhere, byteCount: 16 * page)
                exit(SystemMemory.isMapped(anywhere) ? 5 : 0)
            }
        }

        /// Bad input gets a typed error with the errno, never MAP_FAILED or a crash.
        @Test func badRequestsThrowTypedErrors() throws {
            #expect(throws: SystemError(.map, code: EINVAL)) { try SystemMemory.map(byteCount: 0) }
            #expect(throws: SystemError(.map, code: ENOMEM)) { try SystemMemory.map(byteCount: Int.max) }
            let misaligned = UnsafeMutableRawPointer(bitPattern: 0x1001)!
            #expect(throws: SystemError(.unmap, code: EINVAL)) { try SystemMemory.unmap(misaligned, byteCount: 4096) }
            #expect(throws: SystemError(.advise, code: EINVAL)) {
                try SystemMemory.advise(misaligned, byteCount: 4096, .dontNeed)
            }
            #expect(throws: SystemError.self) {
                _ = try MemoryFile(inDirectory: "/nonexistent-directory-for-alloccore")
            }
            #expect(SystemError(.map, code: ENOMEM).description == "mmap failed: ENOMEM (errno 12)")
            #expect(throws: SystemError(.remap, code: EINVAL)) {
                try SystemMemory.resize(misaligned, from: 4096, to: 8192, move: .anywhere)
            }
        }
    }

    @Suite struct MemoryFileTests {
        /// Two shared mappings of one memory file see each other's writes: the memory is the file's.
        @Test(arguments: [false, true])
        func sharedMappingsOfOneFileShareTheirPages(inDirectory: Bool) throws {
            let file = inDirectory ? try MemoryFile(inDirectory: "/tmp") : try MemoryFile(name: "alloccore-test")
            let size = 1 << 20
            try file.truncate(to: size)
            try file.allocate(offset: 0, byteCount: size)
            let first = try SystemMemory.mapShared(file, offset: 0, byteCount: size)
            let second = try SystemMemory.mapShared(file, offset: 0, byteCount: size)
            defer {
                try? SystemMemory.unmap(first, byteCount: size)
                try? SystemMemory.unmap(second, byteCount: size)
            }
            #expect(first != second)
            first.storeBytes(of: 0xDEAD_BEEF, toByteOffset: 4096, as: Int.self)
            #expect(second.load(fromByteOffset: 4096, as: Int.self) == 0xDEAD_BEEF)
            try SystemMemory.advise(first, byteCount: size, .remove)
            #expect(second.load(fromByteOffset: 4096, as: Int.self) == 0, "MADV_REMOVE punches a hole in the file")
            var status = stat()
            #expect(fstat(file.descriptor, &status) == 0 && status.st_size == size)
        }
    }

    @Suite struct PageSourceTests {
        @Test(arguments: [4096, 1 << 16, 1 << 21])
        func spansHonourTheirAlignmentAndReleaseExactly(alignment: Int) throws {
            let source = PageSource()
            let before = SystemMemory.statistics.liveMappedBytes
            let span = try source.allocate(byteCount: 3 * 4096 + 1, alignment: alignment)
            #expect(isAligned(span, to: alignment))
            #expect(source.roundedByteCount(3 * 4096 + 1) == 4 * 4096)
            span.storeBytes(of: 1, toByteOffset: 4 * 4096 - 8, as: Int.self)
            #expect(
                SystemMemory.statistics.liveMappedBytes - before == 4 * 4096,
                "the over-mapped head and tail are unmapped")
            try source.release(span, byteCount: 3 * 4096 + 1)
            #expect(SystemMemory.statistics.liveMappedBytes == before)
        }

        @Test func decommittedSpansStayMappedAndReadZero() throws {
            let source = PageSource(hugePageAdvice: true)
            let size = 4 << 20
            let span = try source.allocate(byteCount: size, alignment: SystemInfo.hugePageSize)
            defer { try? source.release(span, byteCount: size) }
            memset(span, 0x5A, size)
            try source.decommit(span, byteCount: size)
            #expect(span.load(fromByteOffset: size - 1, as: UInt8.self) == 0)
            try source.decommit(span, byteCount: size, advice: .free)
            span.storeBytes(of: 3, as: UInt8.self)
            #expect(span.load(as: UInt8.self) == 3)
        }

        @Test func impossibleSizesThrowOutOfMemory() {
            let source = PageSource()
            #expect(throws: SystemError(.map, code: ENOMEM)) { try source.allocate(byteCount: Int.max - 100) }
            #expect(throws: SystemError(.map, code: ENOMEM)) { try source.allocate(byteCount: 0) }
            #expect(throws: SystemError(.map, code: ENOMEM)) {
                try source.allocate(byteCount: Int.max / 2, alignment: 1 << 62)
            }
            #expect(throws: SystemError(.map, code: ENOMEM)) { try source.allocate(byteCount: 1 << 50) }
        }
    }
}

extension MappingSuites {
    @Suite struct RawTextTests {
        @Test func formatsNumbersAndTextAndWritesThemToADescriptor() throws {
            var text = try RawText(capacity: 100)
            text.append("live: ")
            text.append(0)
            text.append(",")
            text.append(-1234, width: 8)
            text.append(",")
            text.append(Int.max)
            text.append(",")
            text.append(Int.min)
            text.append("\n")
            let expected = "live: 0,   -1234,9223372036854775807,-9223372036854775808\n"
            #expect(String(decoding: text.bytes, as: UTF8.self) == expected)

            var descriptors: [Int32] = [0, 0]
            #expect(pipe(&descriptors) == 0)
            defer { close(descriptors[0]) }
            try text.write(to: descriptors[1])
            close(descriptors[1])
            var buffer = [UInt8](repeating: 0, count: 200)
            let read = Glibc.read(descriptors[0], &buffer, buffer.count)
            #expect(String(decoding: buffer[0..<max(0, read)], as: UTF8.self) == expected)
            #expect(throws: SystemError(.write, code: EBADF)) { try text.write(to: -1) }
        }

        @Test func formatsHexadecimalAndRawBytes() throws {
            var text = try RawText(capacity: 100)
            text.appendHex(0)
            text.append(" ")
            text.appendHex(0x7F12_3456_789A)
            text.append(" ")
            text.appendHex(UInt.max)
            text.append(" ")
            Array("raw".utf8).withUnsafeBytes { text.append($0) }
            #expect(String(decoding: text.bytes, as: UTF8.self) == "0x0 0x7f123456789a 0xffffffffffffffff raw")
        }

        @Test func textPastTheCapacityIsDropped() throws {
            var text = try RawText(capacity: 1)
            for _ in 0..<SystemInfo.pageSize { text.append("ab") }
            text.append(123_456)
            #expect(text.count == SystemInfo.pageSize)
        }
    }
}
