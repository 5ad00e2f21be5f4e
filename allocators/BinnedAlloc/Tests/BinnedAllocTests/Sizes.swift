// Sizes, classes and alignment checks shared by the tests of BinnedAllocator's classes.

import BinnedAlloc

/// Whether `pointer` is a multiple of `alignment`.
func isMultiple(_ pointer: UnsafeRawPointer, of alignment: Int) -> Bool {
    Int(bitPattern: pointer) & (alignment - 1) == 0
}

/// The sizes every class boundary test goes through: 0, 1, each class size and the sizes
/// either side of it, the large threshold and the first sizes above it.
func boundarySizes() -> [Int] {
    let classes = BinnedAllocator.sizeClasses
    var sizes: Set<Int> = [0, 1, 2, 15, 17]
    for index in 0..<classes.count {
        let size = classes.size(ofClass: index)
        sizes.formUnion([size - 1, size, size + 1])
    }
    let limit = BinnedAllocator.smallSizeLimit
    sizes.formUnion([limit - 1, limit, limit + 1, limit + 4096, 2 * limit, 4 * limit])
    return sizes.sorted()
}

/// The class index of requests of `byteCount` bytes (at most `smallSizeLimit`).
func classIndex(_ byteCount: Int) -> Int { BinnedAllocator.sizeClasses.index(for: byteCount) }
