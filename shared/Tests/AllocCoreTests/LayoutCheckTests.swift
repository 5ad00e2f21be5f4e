// LayoutCheck names the first field out of place: overlapping, misaligned, not adjacent
// where it must be, past the header's end, or short of filling it (spec section 12).

import AllocCore
import Testing

@Suite("Layout check")
struct LayoutCheckTests {
    @Test("a sound layout passes; each kind of damage is named, the first one found")
    func damage() {
        var sound = LayoutCheck("Header")
        sound.field("a", at: 0, size: 8)
        sound.field("links", at: 8, size: 16)
        sound.field("next", at: 24, size: 8, adjacent: true)
        sound.field("line", at: 64, size: 8, alignment: 64)
        #expect(sound.result(within: 128) == nil && sound.result(filling: 72) == nil)
        #expect(sound.result(filling: 128)?.contains("not at its 128 bytes") == true)
        #expect(sound.result(within: 70)?.contains("past its 70 bytes") == true)

        var overlap = LayoutCheck("Header")
        overlap.field("a", at: 0, size: 16)
        overlap.field("b", at: 8, size: 8)
        overlap.field("c", at: 3, size: 8)
        #expect(overlap.result(within: 64) == "Header.b at 8 overlaps the field before it, which ends at 16")

        var misaligned = LayoutCheck("Header")
        misaligned.field("a", at: 12, size: 8)
        #expect(misaligned.result(within: 64) == "Header.a at 12 is not 8-byte aligned")

        var apart = LayoutCheck("Header")
        apart.field("previous", at: 0, size: 8)
        apart.field("next", at: 16, size: 8, adjacent: true)
        #expect(apart.result(within: 64)?.contains("does not follow") == true)
    }
}
