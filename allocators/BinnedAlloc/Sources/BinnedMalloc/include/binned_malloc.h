// BinnedAlloc's malloc family for C callers. The binned_* names are always available; the
// library built from this target (libbinnedmalloc.so) also answers to the standard names,
// so that LD_PRELOAD makes BinnedAlloc the allocator of a whole process.
#ifndef BINNED_MALLOC_H
#define BINNED_MALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

void *binned_malloc(size_t size);
void binned_free(void *pointer);
void *binned_calloc(size_t count, size_t size);
void *binned_realloc(void *pointer, size_t size);
void *binned_reallocarray(void *pointer, size_t count, size_t size);
int binned_posix_memalign(void **result, size_t alignment, size_t size);
void *binned_aligned_alloc(size_t alignment, size_t size);
void *binned_memalign(size_t alignment, size_t size);
void *binned_valloc(size_t size);
void *binned_pvalloc(size_t size);
size_t binned_malloc_usable_size(void *pointer);
void binned_free_sized(void *pointer, size_t size);
void binned_free_aligned_sized(void *pointer, size_t alignment, size_t size);

/// Whether `pointer` is a block BinnedAlloc handed out (false for NULL). The standard
/// names send other pointers to glibc's allocator.
_Bool binned_owns(const void *pointer);

/// `free` for any pointer: BinnedAlloc's blocks are freed, every other pointer (false
/// for binned_owns) is passed to `foreign_free`. The standard `free` is this with glibc's.
void binned_free_any(void *pointer, void (*foreign_free)(void *));

/// Writes the allocator's statistics to `descriptor` as text, without allocating. Returns 0
/// or an errno value. `BINNEDMALLOC_STATS=1` makes the process print them to stderr at exit.
int binned_print_statistics(int descriptor);

#ifdef __cplusplus
}
#endif

#endif
