import AllocCore
import Testing

/// A read-write span between two inaccessible pages, so the kernel cannot merge it with a
/// neighbouring mapping (the figures would then be shared with the neighbour).
func withIsolatedSpan(byteCount: Int, _ body: (UnsafeMutableRawPointer) throws -> Void) throws {
    let page = SystemInfo.pageSize
    let reservation = try SystemMemory.reserve(byteCount: byteCount + 2 * page)
    defer { try? SystemMemory.unmap(reservation, byteCount: byteCount + 2 * page) }
    try SystemMemory.commit(reservation + page, byteCount: byteCount)
    try body(reservation + page)
}

@Suite struct MemoryMappingsTests {
    @Test func residentAndDirtyBytesFollowTouchesAndAdvice() throws {
        let byteCount = 8 << 20
        let touched = 2 << 20
        try withIsolatedSpan(byteCount: byteCount) { span in
            let range = Int(bitPattern: span)..<(Int(bitPattern: span) + byteCount)

            let untouched = try #require(MemoryMappings.usage(of: [range]).first)
            #expect(untouched.mappedBytes == byteCount)
            #expect(untouched.residentBytes < touched, "nothing was written yet: \(untouched)")

            for offset in stride(from: 0, to: touched, by: SystemInfo.pageSize) {
                span.storeBytes(of: 1, toByteOffset: offset, as: UInt8.self)
            }
            let written = try #require(MemoryMappings.usage(of: [range]).first)
            #expect(written.residentBytes >= touched, "\(written)")
            #expect(written.dirtyBytes >= touched, "\(written)")
            #expect(written.residentBytes <= byteCount, "\(written)")

            try SystemMemory.advise(span, byteCount: byteCount, .dontNeed)
            let dropped = try #require(MemoryMappings.usage(of: [range]).first)
            #expect(dropped.residentBytes < touched, "MADV_DONTNEED should drop the pages: \(dropped)")
        }
    }

    @Test func hugePageAdviceIsReportedForTheAdvisedMappingOnly() throws {
        let byteCount = 4 << 20
        try withIsolatedSpan(byteCount: byteCount) { span in
            let range = Int(bitPattern: span)..<(Int(bitPattern: span) + byteCount)
            #expect(try #require(MemoryMappings.usage(of: [range]).first).hugePageAdvisedBytes == 0)
            // A kernel built without transparent huge pages refuses the advice.
            guard (try? SystemMemory.advise(span, byteCount: byteCount, .hugePage)) != nil else { return }
            let advised = try #require(MemoryMappings.usage(of: [range]).first)
            #expect(advised.hugePageAdvisedBytes == byteCount, "\(advised)")
            // Advising half splits the mapping: only that half is reported.
            try SystemMemory.advise(span, byteCount: byteCount / 2, .noHugePage)
            let half = try #require(MemoryMappings.usage(of: [range]).first)
            #expect(half.hugePageAdvisedBytes == byteCount / 2, "\(half)")
        }
    }

    @Test func rangesAreReportedSeparatelyAndUnmappedRangesAreEmpty() throws {
        let byteCount = 1 << 20
        try withIsolatedSpan(byteCount: byteCount) { first in
            first.initializeMemory(as: UInt8.self, repeating: 7, count: byteCount)
            let firstRange = Int(bitPattern: first)..<(Int(bitPattern: first) + byteCount)
            // The page below the null page is never mapped.
            let usages = try MemoryMappings.usage(of: [firstRange, 0..<4096])
            #expect(usages.count == 2)
            #expect(usages[0].mappedBytes == byteCount && usages[0].residentBytes >= byteCount / 2, "\(usages[0])")
            #expect(usages[1] == MappingUsage())
        }
    }
}
