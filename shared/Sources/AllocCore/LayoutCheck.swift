// Pinning a header's layout: every allocator declares its headers as named offsets in
// address order and checks them with this, once, at start-up in debug builds and in its
// tests, so a field moved by hand cannot silently overlap another.

/// Checks a header's fields, given in address order: each is aligned, starts at or after
/// the end of the one before, and the last ends within the header.
///
/// ```swift
/// var check = LayoutCheck("SlabLayout")
/// check.field("magic", at: SlabLayout.magicOffset, size: 8)
/// check.field("links", at: SlabLayout.linksOffset, size: 16)
/// assert(check.result(within: SlabLayout.byteCount) == nil)
/// ```
///
/// Nothing here allocates unless it finds a problem (the message is a `String`), so a
/// process allocator may run it inside `malloc`. The first problem found is kept.
public struct LayoutCheck {
    /// The header's name, which every message starts with.
    public let header: StaticString
    /// Where the last field declared ends.
    public private(set) var end = 0
    /// The first problem found, or nil.
    public private(set) var problem: String? = nil

    public init(_ header: StaticString) { self.header = header }

    /// The next field: `size` bytes at `offset`, which must be a multiple of `alignment`
    /// and at or after the end of the field before. With `adjacent`, it must start exactly
    /// there (two words read as a pair, a list's links).
    public mutating func field(
        _ name: StaticString, at offset: Int, size: Int, alignment: Int = 8, adjacent: Bool = false
    ) {
        guard problem == nil else { return }
        if offset < end {
            problem = "\(header).\(name) at \(offset) overlaps the field before it, which ends at \(end)"
        } else if adjacent && offset != end {
            problem = "\(header).\(name) at \(offset) does not follow the field before it, which ends at \(end)"
        } else if alignment <= 0 || offset % alignment != 0 {
            problem = "\(header).\(name) at \(offset) is not \(alignment)-byte aligned"
        } else if size < 0 {
            problem = "\(header).\(name) has a negative size \(size)"
        }
        end = offset + size
    }

    /// The first problem, or that the fields run past the header's `byteCount` bytes.
    public func result(within byteCount: Int) -> String? {
        problem ?? (end > byteCount ? "\(header): the fields end at \(end), past its \(byteCount) bytes" : nil)
    }

    /// The first problem, or that the fields do not fill the header's `byteCount` bytes
    /// exactly (a header whose size is the sum of its fields).
    public func result(filling byteCount: Int) -> String? {
        problem ?? (end != byteCount ? "\(header): the fields end at \(end), not at its \(byteCount) bytes" : nil)
    }
}
