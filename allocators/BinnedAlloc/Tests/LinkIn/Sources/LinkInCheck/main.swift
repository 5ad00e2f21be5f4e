// Checks, in a Swift executable that links BinnedMalloc, that BinnedAlloc is the allocator
// of the whole process: every malloc-family name resolves to this executable, and what the
// Swift runtime (libswiftCore.so), libc and the program itself allocate shows in
// BinnedAlloc's own counters. Prints one line per check and exits 1 if any fails.
import BinnedAlloc
import Glibc

LinkInCheck.run()
