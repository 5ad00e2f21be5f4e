// The project's allocators seen as `BenchAllocator`s, called through their Swift APIs.
// They live in this module so that the generic workloads are specialized for each.

import BinnedAlloc

/// BinnedAlloc's process-wide allocator.
struct BinnedAllocBench: BenchAllocator {
    @inline(__always)
    func allocate(_ byteCount: Int) -> UnsafeMutableRawPointer {
        guard let block = BinnedAllocator.shared.allocate(byteCount: byteCount) else {
            fatalError("BinnedAlloc returned nil for \(byteCount) bytes")
        }
        return block
    }

    @inline(__always)
    func deallocate(_ pointer: UnsafeMutableRawPointer, byteCount: Int) {
        BinnedAllocator.shared.deallocate(pointer)
    }

    func allocateZeroed(_ byteCount: Int) -> UnsafeMutableRawPointer {
        guard let block = BinnedAllocator.shared.allocateZeroed(byteCount: byteCount) else {
            fatalError("BinnedAlloc returned nil for \(byteCount) zeroed bytes")
        }
        return block
    }
}
