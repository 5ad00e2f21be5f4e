// Runs workloads in a process linked with libjemalloc: jemalloc's unprefixed malloc
// family then serves the whole process, the Swift runtime included.
import CJemalloc
import Workloads

// Asking jemalloc for its version also keeps the library linked where a linker drops
// libraries that nothing references.
var version: UnsafePointer<CChar>? = nil
var length = MemoryLayout<UnsafePointer<CChar>?>.size
precondition(mallctl("version", &version, &length, nil, 0) == 0, "mallctl(\"version\") failed")

Worker.main(process: .jemalloc)
