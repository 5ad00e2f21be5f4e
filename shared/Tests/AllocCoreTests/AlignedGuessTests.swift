// PageSource's aligned spans: one mmap at the guess below the last span when that place is
// free, three calls (over-map, trim both sides) where the kernel chooses otherwise. Each
// test makes its own free or taken address space for the guess: a PROT_NONE reservation
// with exactly the guessed range unmapped, or left whole. No test reads the process-wide
// mapping counters, which other suites' reservations move meanwhile.

import Glibc
import Testing

@testable import AllocCore

extension MappingSuites {
    @Suite struct AlignedGuessTests {
        static let alignment = 1 << 18
        static let offset = 4096
        static let size = 4096 + 3 * (1 << 18)
        static let reservation = 32 << 20

        /// The aligned start the source guesses below `limit` for the tests' span, a page or
        /// more below it.
        static func guess(below limit: Int) -> Int {
            ((limit - 4096 - size + offset) & ~(alignment - 1)) - offset
        }

        static var last: Int { PageSource.AlignedGuess.last.load(ordering: .relaxed) }
        static var anchor: Int { PageSource.AlignedGuess.anchor.load(ordering: .relaxed) }
        static var guessing: Bool { PageSource.AlignedGuess.enabled.load(ordering: .relaxed) }

        /// Sets where the source believes it mapped last, and where the kernel last chose.
        static func believe(last: Int, anchor: Int) {
            PageSource.AlignedGuess.last.store(last, ordering: .relaxed)
            PageSource.AlignedGuess.anchor.store(anchor, ordering: .relaxed)
        }

        @Test("a free guessed place gets the span, with an unmapped page above it, and the next guess goes below it")
        func aFreeGuessIsTaken() throws {
            try #require(Self.guessing, "this kernel lacks MAP_FIXED_NOREPLACE")
            // Another thread's mmap could take the hole first (the kernel's choice, rarely so
            // low): then the guess fails, and the test tries again with a new reservation.
            var placed = false
            for _ in 0..<3 where !placed {
                let region = try SystemMemory.reserve(byteCount: Self.reservation)
                defer { try? SystemMemory.unmap(region, byteCount: Self.reservation) }
                let top = Int(bitPattern: region) + Self.reservation
                let expected = Self.guess(below: top)
                // Only the guessed range is free: the over-sized mapping of the kernel's
                // choice cannot fit in it, so a span there came from the guess.
                try SystemMemory.unmap(UnsafeMutableRawPointer(bitPattern: expected)!, byteCount: Self.size)
                Self.believe(last: top, anchor: top)
                let span = try PageSource().allocate(
                    byteCount: Self.size, alignment: Self.alignment, offset: Self.offset)
                #expect(isAligned(span + Self.offset, to: Self.alignment))
                guard Int(bitPattern: span) == expected else {
                    try PageSource().release(span, byteCount: Self.size)
                    continue
                }
                placed = true
                #expect(expected + Self.size <= top - 4096, "no unmapped page above the span")
                #expect(Self.last == expected)
                span.storeBytes(of: 7, toByteOffset: Self.size - 8, as: Int.self)
                #expect(span.load(as: Int.self) == 0, "a new span reads zero")
                // Unmapped with the reservation it lies in.
            }
            #expect(placed, "no span went to the guessed place in 3 tries")
        }

        @Test("a taken guessed place fails without harm: the kernel chooses, and the guesses start over there")
        func aTakenGuessFallsBack() throws {
            let region = try SystemMemory.reserve(byteCount: Self.reservation)
            defer { try? SystemMemory.unmap(region, byteCount: Self.reservation) }
            let top = Int(bitPattern: region) + Self.reservation
            Self.believe(last: top, anchor: top)
            let span = try PageSource().allocate(byteCount: Self.size, alignment: Self.alignment, offset: Self.offset)
            defer { try? PageSource().release(span, byteCount: Self.size) }
            let start = Int(bitPattern: span)
            #expect(start + Self.size <= Int(bitPattern: region) || start >= top, "the span is inside the reservation")
            #expect(isAligned(span + Self.offset, to: Self.alignment))
            #expect(Self.anchor == start)
            #expect(Self.last == start)
            #expect(Self.guessing, "EEXIST turned the guesses off")
        }

        @Test("guesses stop a window below the kernel's last choice, which then chooses again")
        func guessesStayWithinTheWindow() throws {
            let region = try SystemMemory.reserve(byteCount: Self.reservation)
            defer { try? SystemMemory.unmap(region, byteCount: Self.reservation) }
            let top = Int(bitPattern: region) + Self.reservation
            let guessed = Self.guess(below: top)
            try SystemMemory.unmap(UnsafeMutableRawPointer(bitPattern: guessed)!, byteCount: Self.size)
            // The guessed place is free, but lies more than the window below the anchor.
            Self.believe(last: top, anchor: guessed + PageSource.alignedGuessWindow + 4096)
            let span = try PageSource().allocate(byteCount: Self.size, alignment: Self.alignment, offset: Self.offset)
            defer { try? PageSource().release(span, byteCount: Self.size) }
            #expect(Self.anchor == Int(bitPattern: span))
            #expect(isAligned(span + Self.offset, to: Self.alignment))
        }
    }
}
