// Alignment and size arithmetic that cannot overflow silently: every operation that can
// overflow returns nil instead of wrapping, and every precondition on its arguments is a
// `precondition` with a message, because a wrong size in an allocator is corruption later.

/// Whether `value` is a power of two (1, 2, 4, ...). Zero and negatives are not.
@inlinable
public func isPowerOfTwo(_ value: Int) -> Bool {
    value > 0 && value & (value &- 1) == 0
}

/// `value` rounded up to a multiple of `alignment` (a power of two), or nil when the
/// result would not fit in an `Int`. `value` must not be negative.
@inlinable
public func alignUp(_ value: Int, to alignment: Int) -> Int? {
    precondition(isPowerOfTwo(alignment), "alignment \(alignment) is not a power of two")
    precondition(value >= 0, "cannot align the negative value \(value)")
    let (sum, overflow) = value.addingReportingOverflow(alignment &- 1)
    return overflow ? nil : sum & ~(alignment &- 1)
}

/// `value` rounded down to a multiple of `alignment` (a power of two).
@inlinable
public func alignDown(_ value: Int, to alignment: Int) -> Int {
    precondition(isPowerOfTwo(alignment), "alignment \(alignment) is not a power of two")
    return value & ~(alignment &- 1)
}

/// `pointer` rounded up to a multiple of `alignment` (a power of two), or nil when the
/// address would wrap.
@inlinable
public func alignUp(_ pointer: UnsafeMutableRawPointer, to alignment: Int) -> UnsafeMutableRawPointer? {
    precondition(isPowerOfTwo(alignment), "alignment \(alignment) is not a power of two")
    let mask = UInt(bitPattern: alignment &- 1)
    let (sum, overflow) = UInt(bitPattern: pointer).addingReportingOverflow(mask)
    return overflow ? nil : UnsafeMutableRawPointer(bitPattern: sum & ~mask)
}

/// Whether `pointer` is a multiple of `alignment` (a power of two).
@inlinable
public func isAligned(_ pointer: UnsafeRawPointer, to alignment: Int) -> Bool {
    Int(bitPattern: pointer) & (alignment &- 1) == 0
}

/// The smallest power of two that is >= `value` (1 for values up to 1), or nil when it
/// does not fit in an `Int`.
@inlinable
public func nextPowerOfTwo(_ value: Int) -> Int? {
    if value <= 1 { return 1 }
    let shift = Int.bitWidth &- (value &- 1).leadingZeroBitCount
    return shift >= Int.bitWidth &- 1 ? nil : 1 &<< shift
}

/// ⌊log2(value)⌋ for a positive value.
@inlinable
public func log2Floor(_ value: Int) -> Int {
    precondition(value > 0, "log2Floor of the non-positive value \(value)")
    return Int.bitWidth &- 1 &- value.leadingZeroBitCount
}

/// ⌈log2(value)⌉ for a positive value.
@inlinable
public func log2Ceiling(_ value: Int) -> Int {
    precondition(value > 0, "log2Ceiling of the non-positive value \(value)")
    return value == 1 ? 0 : Int.bitWidth &- (value &- 1).leadingZeroBitCount
}

/// `count * stride` in bytes, or nil when either is negative or the product overflows:
/// the check behind calloc, reallocarray and typed allocation.
@inlinable
public func checkedByteCount(count: Int, stride: Int) -> Int? {
    guard count >= 0, stride >= 0 else { return nil }
    let (product, overflow) = count.multipliedReportingOverflow(by: stride)
    return overflow ? nil : product
}

/// `count * stride` for the C ABI's unsigned sizes, or nil when the product does not fit
/// in an `Int` (glibc answers such requests with ENOMEM).
@inlinable
public func checkedByteCount(count: UInt, stride: UInt) -> Int? {
    let (product, overflow) = count.multipliedReportingOverflow(by: stride)
    return overflow || product > UInt(Int.max) ? nil : Int(product)
}

/// A log-linear table of size classes, as jemalloc and mimalloc use: classes are spaced
/// by `quantum` up to `quantum × stepsPerDoubling`, and above that every power-of-two
/// range (2^b, 2^(b+1)] is cut into `stepsPerDoubling` equal steps.
///
/// The worst-case internal fragmentation is one step: above the linear range a request
/// wastes less than `1 / (stepsPerDoubling + 1)` of its class size (with 4 steps, under
/// 20%: 2^b + 1 bytes in the class 2^b + 2^b/4), and within it less than one quantum.
/// With one step per doubling the classes are the powers of two from `quantum` up.
///
/// ```swift
/// let classes = SizeClasses(quantum: 16, stepsPerDoubling: 4, maximumSize: 16384)
/// classes.index(for: 65)     // 4
/// classes.size(ofClass: 4)   // 80
/// ```
///
/// Everything here is always inlined: allocators build their table in a computed property
/// on every call, and only inlining lets the optimizer fold it into constants (an
/// out-of-line copy would rebuild the table on each malloc).
public struct SizeClasses: Sendable, Equatable {
    /// log2 of the spacing in the linear range.
    public let quantumShift: Int
    /// log2 of the number of classes per power-of-two range.
    public let stepsShift: Int
    /// The largest size with a class; `index(for:)` takes sizes up to it.
    public let maximumSize: Int
    /// The number of classes, the last one holding `maximumSize`.
    public let count: Int

    /// - Parameters:
    ///   - quantum: the spacing of the smallest classes and the alignment of every class
    ///     size; a power of two.
    ///   - stepsPerDoubling: classes per power-of-two range; a power of two.
    ///   - maximumSize: the largest size that gets a class (rounded up to its class).
    @inlinable @inline(__always)
    public init(quantum: Int, stepsPerDoubling: Int, maximumSize: Int) {
        precondition(isPowerOfTwo(quantum), "quantum \(quantum) is not a power of two")
        precondition(isPowerOfTwo(stepsPerDoubling), "stepsPerDoubling \(stepsPerDoubling) is not a power of two")
        precondition(maximumSize >= quantum && maximumSize <= 1 << 56, "maximumSize \(maximumSize) is out of range")
        quantumShift = log2Floor(quantum)
        stepsShift = log2Floor(stepsPerDoubling)
        precondition(quantumShift + stepsShift <= 56, "quantum × stepsPerDoubling must be at most 2^56")
        let provisional = SizeClasses(
            quantumShift: quantumShift, stepsShift: stepsShift, maximumSize: maximumSize, count: 0)
        count = provisional.index(for: maximumSize) + 1
        self.maximumSize = provisional.size(ofClass: count - 1)
    }

    @inlinable @inline(__always)
    init(quantumShift: Int, stepsShift: Int, maximumSize: Int, count: Int) {
        self.quantumShift = quantumShift
        self.stepsShift = stepsShift
        self.maximumSize = maximumSize
        self.count = count
    }

    /// The index of the smallest class that holds `size` bytes (0 for sizes 0 and 1).
    /// `size` must be at most `maximumSize`.
    @inlinable @inline(__always)
    public func index(for size: Int) -> Int {
        precondition(size >= 0 && size <= maximumSize, "size \(size) has no class (maximum \(maximumSize))")
        let steps = 1 &<< stepsShift
        let linearLimit = steps &<< quantumShift
        if size <= linearLimit {
            return size <= 1 ? 0 : (size &- 1) &>> quantumShift
        }
        // The step is read by shifting the top bit to bit 63, so that the only variable
        // shift count is the leading-zero count, a full register. Written as
        // `word >> (topBit - stepsShift)`, LLVM computed the count in `cl` alone
        // (`mov $61, %cl; sub %al, %cl`); an 8-bit write merges with whatever the register
        // held before, and at `binned_malloc`'s entry that was the previous `free`'s last
        // value. Each malloc of 65 B to 32 KiB then waited for the free before it
        // (malloc/free pairs of 256 B on an AMD Zen 4: 11.4 against 6.8 ns; 64 B, on the linear
        // path: 6.6).
        let word = UInt(bitPattern: size &- 1)
        let leadingZeros = word.leadingZeroBitCount
        let topBit = UInt.bitWidth &- 1 &- leadingZeros
        let stepWithTop = Int(bitPattern: (word &<< UInt(leadingZeros)) &>> UInt(UInt.bitWidth &- 1 &- stepsShift))
        return (topBit &- stepsShift &- quantumShift) &* steps &+ stepWithTop
    }

    /// The size of class `index`: the most bytes a block of that class holds.
    @inlinable @inline(__always)
    public func size(ofClass index: Int) -> Int {
        precondition(index >= 0, "class index \(index) is negative")
        let steps = 1 &<< stepsShift
        if index < steps { return (index &+ 1) &<< quantumShift }
        let group = (index &- steps) &>> stepsShift
        let step = (index &- steps) & (steps &- 1)
        let topBit = group &+ stepsShift &+ quantumShift
        return (1 &<< topBit) &+ ((step &+ 1) &<< (topBit &- stepsShift))
    }
}
