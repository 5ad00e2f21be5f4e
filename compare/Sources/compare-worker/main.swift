// Runs workloads in a process whose allocator is glibc's, and the project's allocators
// through their Swift APIs.
import Workloads

Worker.main(process: .glibc)
