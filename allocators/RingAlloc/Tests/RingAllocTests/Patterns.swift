// The byte pattern written into buffers: a buffer overwritten by another, or whose bytes
// were moved wrongly, no longer matches its tag's pattern.

/// The byte at `index` of a buffer tagged `tag`.
@inline(__always)
func patternByte(tag: Int, index: Int) -> UInt8 {
    UInt8(truncatingIfNeeded: tag &* 31 &+ index &* 7 &+ (index >> 8))
}

/// Fills `bytes` with the pattern of `tag`, starting at pattern index `offset`.
func fillPattern(_ bytes: UnsafeMutableRawBufferPointer, tag: Int, offset: Int = 0) {
    for index in 0..<bytes.count { bytes[index] = patternByte(tag: tag, index: offset + index) }
}

/// The pattern of `tag` over `count` bytes, as an array (to append).
func patternArray(tag: Int, count: Int, offset: Int = 0) -> [UInt8] {
    (0..<count).map { patternByte(tag: tag, index: offset + $0) }
}

/// The index of the first byte that breaks the pattern, or nil.
func firstPatternMismatch(_ bytes: UnsafeRawBufferPointer, tag: Int) -> Int? {
    for index in 0..<bytes.count where bytes[index] != patternByte(tag: tag, index: index) { return index }
    return nil
}

/// The index of the first byte of `bytes` that breaks the pattern of `tag`, or nil: read
/// through the span, whose loads are bounds-checked.
func firstPatternMismatch(_ bytes: RawSpan, tag: Int) -> Int? {
    for index in bytes.byteOffsets
    where bytes.unsafeLoad(fromByteOffset: index, as: UInt8.self) != patternByte(tag: tag, index: index) {
        return index
    }
    return nil
}

/// Appends the pattern of `tag` to `output`, from pattern index `offset`, `count` bytes.
func appendPattern(_ output: inout OutputRawSpan, tag: Int, count: Int, offset: Int = 0) {
    for index in 0..<count { output.append(patternByte(tag: tag, index: offset + index)) }
}
