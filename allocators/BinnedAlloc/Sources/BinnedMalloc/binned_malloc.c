// The standard malloc names, each a tail call into BinnedAlloc's binned_* function.
//
// Why C: Swift gives every public symbol protected visibility on ELF, and an alias of a
// protected symbol stays protected, which makes the dynamic loader warn ("direct
// reference to protected function `free' ... may break pointer equality") in hosts that
// take the address of free. These definitions have default visibility, like glibc's.
#include <stddef.h>
#include <stdlib.h>

#include "binned_malloc.h"

#define BINNED_EXPORT __attribute__((visibility("default")))

BINNED_EXPORT void *malloc(size_t size) { return binned_malloc(size); }
BINNED_EXPORT void free(void *pointer) { binned_free(pointer); }
BINNED_EXPORT void *calloc(size_t count, size_t size) { return binned_calloc(count, size); }
BINNED_EXPORT void *realloc(void *pointer, size_t size) { return binned_realloc(pointer, size); }
BINNED_EXPORT void *reallocarray(void *pointer, size_t count, size_t size) {
  return binned_reallocarray(pointer, count, size);
}
BINNED_EXPORT int posix_memalign(void **result, size_t alignment, size_t size) {
  return binned_posix_memalign(result, alignment, size);
}
BINNED_EXPORT void *aligned_alloc(size_t alignment, size_t size) { return binned_aligned_alloc(alignment, size); }
BINNED_EXPORT void *memalign(size_t alignment, size_t size) { return binned_memalign(alignment, size); }
BINNED_EXPORT void *valloc(size_t size) { return binned_valloc(size); }
BINNED_EXPORT void *pvalloc(size_t size) { return binned_pvalloc(size); }
BINNED_EXPORT size_t malloc_usable_size(void *pointer) { return binned_malloc_usable_size(pointer); }
BINNED_EXPORT void free_sized(void *pointer, size_t size) { binned_free_sized(pointer, size); }
BINNED_EXPORT void free_aligned_sized(void *pointer, size_t alignment, size_t size) {
  binned_free_aligned_sized(pointer, alignment, size);
}

// BINNEDMALLOC_STATS=1 (any value but empty or "0"): the statistics go to stderr when the
// process exits, written without allocating. A destructor runs after the program's atexit
// handlers, whether this is linked into the executable or preloaded.
__attribute__((destructor)) static void binned_report_at_exit(void) {
  const char *value = getenv("BINNEDMALLOC_STATS");
  if (value != NULL && value[0] != '\0' && !(value[0] == '0' && value[1] == '\0')) binned_print_statistics(2);
}
