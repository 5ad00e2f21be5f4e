// BinnedAlloc's malloc family for C callers. The binned_* names are always available; the
// library built from this target (libbinnedmalloc.so) also answers to the standard names,
// so that LD_PRELOAD makes BinnedAlloc the allocator of a whole process.
#ifndef BINNED_MALLOC_H
#define BINNED_MALLOC_H

#include <stddef.h>
#include <stdio.h>

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

/// Writes the statistics to `descriptor` in `format`, "text" or "json" (the JSON schema is in
/// docs/spec/BinnedAlloc.md, section 10), without allocating. Returns 0, EINVAL for another
/// format, or an errno value.
int binned_write_statistics(int descriptor, const char *format);

/// What the library's destructor calls: the statistics to stderr in the format that
/// BINNEDMALLOC_STATS (1 or json) or stats_print in BINNEDMALLOC_CONF chose, or nothing.
void binned_report_at_exit(void);

/// One statistic by name ("live_bytes", "mapped_bytes", "stats.allocated"...: the list is in
/// the spec, section 10). -1 with errno ENOENT for an unknown name.
long long binned_statistic(const char *name);

/// The usable size a request of `size` bytes gets (like malloc_good_size or nallocx).
size_t binned_good_size(size_t size);

/// Applies BINNEDMALLOC_CONF-style items ("purge_delay_ms:100,background_thread:false")
/// now. Returns 0, or EINVAL when an item was bad (the good ones still apply).
int binned_configure(const char *items);

/// malloc_trim, mallopt and malloc_info over BinnedAlloc (the standard names call these).
int binned_trim(size_t pad);
int binned_mallopt(int parameter, int value);
int binned_malloc_info(int options, FILE *stream);

#ifdef __cplusplus
}
#endif

#endif
