// Runs workloads in a process linked with the BinnedMalloc product: BinnedAlloc's malloc
// family then serves the whole process, the Swift runtime included.
import Workloads

Worker.main(process: .binnedMalloc)
