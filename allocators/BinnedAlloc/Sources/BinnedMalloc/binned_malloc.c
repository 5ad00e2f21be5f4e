// The standard malloc names, each a tail call into BinnedAlloc's binned_* function once
// pointers BinnedAlloc did not hand out have been sent to glibc. free and the C23 sized
// frees jump straight to binned_free_any, which tests the granule map itself and is handed
// glibc's free for foreign pointers, so that freeing a BinnedAlloc block is one function
// with no call (measured under LD_PRELOAD: malloc(64)+free through function pointers went
// from 4.1 to 3.1 ns with this and binned_malloc's call-free fast path; jemalloc 3.4 ns).
//
// On x86-64, malloc, free and the sized frees are a jump and nothing else, on a 64-byte
// boundary (as the Swift functions they jump to are): compiled from C they pushed and popped
// a frame pointer for nothing, and sat wherever the linker put them. Medians of 15
// alternating runs of compare-worker-binnedmalloc (BinnedMalloc linked in): pairs-64 5.59
// to 5.06 ns a pair, batch-1000-16-4096 8.30 to 7.13 ns a block, random-slots-1024-t1
// within the noise (minimum 8.96 to 8.50); aligned C functions that kept their frames were
// in between. Under LD_PRELOAD, called through the PLT, malloc+free pairs did not change.
//
// Why C: Swift gives every public symbol protected visibility on ELF, and an alias of a
// protected symbol stays protected, which makes the dynamic loader warn ("direct
// reference to protected function `free' ... may break pointer equality") in hosts that
// take the address of free. These definitions have default visibility, like glibc's.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <malloc.h>
#include <stddef.h>
#include <stdlib.h>

#include "binned_malloc.h"

#define BINNED_EXPORT __attribute__((visibility("default")))

// glibc's own allocator, for pointers BinnedAlloc did not hand out (see binned_owns):
// blocks from before the library was interposed, or from a direct __libc_malloc call.
extern void __libc_free(void *pointer);
extern void *__libc_realloc(void *pointer, size_t size);

/// glibc's malloc_usable_size, found once (it has no __libc_ name): a foreign pointer's
/// size. Looked up only when a foreign pointer is asked about.
static size_t foreign_usable_size(void *pointer) {
  static size_t (*glibc_usable_size)(void *);
  size_t (*function)(void *) = __atomic_load_n(&glibc_usable_size, __ATOMIC_ACQUIRE);
  if (function == NULL) {
    function = (size_t (*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
    if (function == NULL) return 0;
    __atomic_store_n(&glibc_usable_size, function, __ATOMIC_RELEASE);
  }
  return function(pointer);
}

#define FOREIGN(pointer) __builtin_expect((pointer) != NULL && !binned_owns(pointer), 0)

#if defined(__x86_64__)
// A function whose whole body is its asm: the arguments stay in their registers. (With
// -fcf-protection, clang still starts it with its endbr64.)
#define JUMP_SHIM __attribute__((naked, aligned(64)))
// free(pointer), with glibc's free (from the GOT) as binned_free_any's second argument.
#define JUMP_TO_FREE_ANY \
  __asm__ volatile("movq __libc_free@GOTPCREL(%rip), %rsi\n\tjmp binned_free_any@PLT")

BINNED_EXPORT JUMP_SHIM void *malloc(size_t size) { __asm__ volatile("jmp binned_malloc@PLT"); }
BINNED_EXPORT JUMP_SHIM void free(void *pointer) { JUMP_TO_FREE_ANY; }
// The size and alignment are hints BinnedAlloc does not need.
BINNED_EXPORT JUMP_SHIM void free_sized(void *pointer, size_t size) { JUMP_TO_FREE_ANY; }
BINNED_EXPORT JUMP_SHIM void free_aligned_sized(void *pointer, size_t alignment, size_t size) { JUMP_TO_FREE_ANY; }
#else
BINNED_EXPORT void *malloc(size_t size) { return binned_malloc(size); }
BINNED_EXPORT void free(void *pointer) { binned_free_any(pointer, __libc_free); }
// The size and alignment are hints BinnedAlloc does not need.
BINNED_EXPORT void free_sized(void *pointer, size_t size) { binned_free_any(pointer, __libc_free); }
BINNED_EXPORT void free_aligned_sized(void *pointer, size_t alignment, size_t size) {
  binned_free_any(pointer, __libc_free);
}
#endif
BINNED_EXPORT void *calloc(size_t count, size_t size) { return binned_calloc(count, size); }
BINNED_EXPORT void *realloc(void *pointer, size_t size) {
  if (FOREIGN(pointer)) return __libc_realloc(pointer, size);
  return binned_realloc(pointer, size);
}
BINNED_EXPORT void *reallocarray(void *pointer, size_t count, size_t size) {
  size_t total;
  if (FOREIGN(pointer) && !__builtin_mul_overflow(count, size, &total)) return __libc_realloc(pointer, total);
  return binned_reallocarray(pointer, count, size);
}
BINNED_EXPORT int posix_memalign(void **result, size_t alignment, size_t size) {
  return binned_posix_memalign(result, alignment, size);
}
BINNED_EXPORT void *aligned_alloc(size_t alignment, size_t size) { return binned_aligned_alloc(alignment, size); }
BINNED_EXPORT void *memalign(size_t alignment, size_t size) { return binned_memalign(alignment, size); }
BINNED_EXPORT void *valloc(size_t size) { return binned_valloc(size); }
BINNED_EXPORT void *pvalloc(size_t size) { return binned_pvalloc(size); }
BINNED_EXPORT size_t malloc_usable_size(void *pointer) {
  if (FOREIGN(pointer)) return foreign_usable_size(pointer);
  return binned_malloc_usable_size(pointer);
}
// glibc's extra entry points, over BinnedAlloc's numbers (docs/spec/BinnedAlloc.md,
// section 10, says which figure each mallinfo2 field holds).
BINNED_EXPORT int malloc_trim(size_t pad) { return binned_trim(pad); }
BINNED_EXPORT int mallopt(int parameter, int value) { return binned_mallopt(parameter, value); }
BINNED_EXPORT int malloc_info(int options, FILE *stream) { return binned_malloc_info(options, stream); }
BINNED_EXPORT void malloc_stats(void) { binned_print_statistics(2); }

static size_t statistic(const char *name) {
  long long value = binned_statistic(name);
  return value < 0 ? 0 : (size_t)value;
}

BINNED_EXPORT struct mallinfo2 mallinfo2(void) {
  struct mallinfo2 info = {0};
  size_t mapped = statistic("mapped_bytes"), live = statistic("live_bytes");
  info.arena = mapped;
  info.ordblks = statistic("cached_large_blocks") + statistic("pooled_slabs");
  info.hblks = statistic("large_live_blocks");
  info.hblkhd = statistic("large_live_bytes");
  info.uordblks = live;
  info.fordblks = mapped > live ? mapped - live : 0;
  info.keepcost = statistic("cached_large_bytes");
  return info;
}

// mallinfo's fields are int: each saturates at INT_MAX rather than wrapping.
#define SATURATED(value) ((int)((value) > (size_t)INT_MAX ? (size_t)INT_MAX : (value)))

BINNED_EXPORT struct mallinfo mallinfo(void) {
  struct mallinfo2 wide = mallinfo2();
  struct mallinfo info = {0};
  info.arena = SATURATED(wide.arena);
  info.ordblks = SATURATED(wide.ordblks);
  info.hblks = SATURATED(wide.hblks);
  info.hblkhd = SATURATED(wide.hblkhd);
  info.uordblks = SATURATED(wide.uordblks);
  info.fordblks = SATURATED(wide.fordblks);
  info.keepcost = SATURATED(wide.keepcost);
  return info;
}

// The statistics go to stderr at exit when BINNEDMALLOC_STATS (1 or json) or stats_print in
// BINNEDMALLOC_CONF asks, written without allocating. A destructor runs after the program's
// atexit handlers, whether this is linked into the executable or preloaded.
__attribute__((destructor)) static void binned_report_at_exit_destructor(void) { binned_report_at_exit(); }
