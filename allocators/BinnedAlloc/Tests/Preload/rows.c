// Walks GUIDE section 5 (glibc's answers to bad input) through the standard names, in a
// process run with LD_PRELOAD=libbinnedmalloc.so. Prints "N passed, N failed".
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Sizes the compiler cannot see, so that it neither warns about nor folds the bad calls.
static volatile size_t size_max = SIZE_MAX;
static volatile size_t ptrdiff_max = PTRDIFF_MAX;

// The rows below use a block after a realloc that failed on purpose (it stays valid);
// GCC cannot know the realloc fails.
#pragma GCC diagnostic ignored "-Wuse-after-free"

static int passed, failed;

#define CHECK(condition)                                                  \
  do {                                                                    \
    if (condition) {                                                      \
      passed++;                                                           \
    } else {                                                              \
      failed++;                                                           \
      fprintf(stderr, "rows.c:%d: failed: %s\n", __LINE__, #condition);   \
    }                                                                     \
  } while (0)

static int aligned(void *pointer, size_t alignment) { return ((uintptr_t)pointer & (alignment - 1)) == 0; }

int main(void) {
  // The process allocator really is BinnedAlloc.
  Dl_info info;
  void *resolved = dlsym(RTLD_DEFAULT, "malloc");
  CHECK(resolved != NULL && dladdr(resolved, &info) && strstr(info.dli_fname, "libbinnedmalloc") != NULL);

  // malloc(0): a unique, freeable pointer.
  void *zero1 = malloc(0), *zero2 = malloc(0);
  CHECK(zero1 != NULL && zero2 != NULL && zero1 != zero2);
  free(zero1);
  free(zero2);

  // Impossible sizes: NULL with ENOMEM.
  errno = 0;
  CHECK(malloc(size_max) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(malloc(ptrdiff_max + 1) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(calloc(size_max / 2, 3) == NULL && errno == ENOMEM);

  // calloc reads zero, also when it reuses a dirty block.
  for (size_t size = 1; size <= 40000; size = size * 3 + 1) {
    unsigned char *dirty = malloc(size);
    memset(dirty, 0xAB, size);
    free(dirty);
    unsigned char *clean = calloc(1, size);
    int zero = 1;
    for (size_t i = 0; i < size; i++) zero &= clean[i] == 0;
    CHECK(clean != NULL && zero);
    free(clean);
  }

  // free(NULL) is a no-op; free never changes errno.
  free(NULL);
  void *block = malloc(100);
  errno = 1234;
  free(block);
  CHECK(errno == 1234);
  void *large = malloc(1 << 20);
  errno = 4321;
  free(large);
  CHECK(errno == 4321);

  // malloc_usable_size.
  CHECK(malloc_usable_size(NULL) == 0);
  for (size_t size = 0; size <= 100000; size = size * 2 + 7) {
    void *p = malloc(size);
    CHECK(p != NULL && malloc_usable_size(p) >= size && aligned(p, 16));
    free(p);
  }

  // Every pointer is 16-byte aligned, sizes 1 to 8 included.
  for (size_t size = 1; size <= 8; size++) {
    void *p = malloc(size);
    CHECK(aligned(p, 16));
    free(p);
  }

  // realloc.
  char *grown = realloc(NULL, 10);  // realloc(NULL, n) is malloc(n)
  CHECK(grown != NULL);
  memcpy(grown, "abcdefghi", 10);
  grown = realloc(grown, 100000);
  CHECK(grown != NULL && memcmp(grown, "abcdefghi", 10) == 0);
  errno = 0;
  CHECK(realloc(grown, size_max) == NULL && errno == ENOMEM);  // failure keeps the block
  CHECK(memcmp(grown, "abcdefghi", 10) == 0);
  CHECK(realloc(grown, 0) == NULL);  // realloc(p, 0) frees p
  errno = 0;
  void *array = reallocarray(NULL, size_max / 2, 4);
  CHECK(array == NULL && errno == ENOMEM);
  array = reallocarray(NULL, 10, 10);
  CHECK(array != NULL && malloc_usable_size(array) >= 100);
  free(array);

  // posix_memalign: EINVAL for bad alignments, ENOMEM for impossible sizes, *p untouched.
  void *sentinel = (void *)0x1234;
  size_t bad[] = {0, 3, 4, 24};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    void *result = sentinel;
    CHECK(posix_memalign(&result, bad[i], 16) == EINVAL && result == sentinel);
  }
  void *result = sentinel;
  CHECK(posix_memalign(&result, 64, size_max) == ENOMEM && result == sentinel);
  CHECK(posix_memalign(&result, 64, 0) == 0 && result != sentinel && aligned(result, 64));
  free(result);
  for (size_t alignment = 8; alignment <= (1 << 22); alignment <<= 1) {
    void *p = NULL;
    CHECK(posix_memalign(&p, alignment, 100) == 0 && aligned(p, alignment));
    free(p);
  }

  // aligned_alloc, memalign: glibc's leniency.
  void *a = aligned_alloc(0, 1);
  CHECK(a != NULL);
  free(a);
  a = aligned_alloc(3, 16);
  CHECK(a != NULL && aligned(a, 4));
  free(a);
  a = memalign(3, 10);
  CHECK(a != NULL && aligned(a, 4));
  free(a);
  a = aligned_alloc(256, 10);  // size need not be a multiple of the alignment
  CHECK(a != NULL && aligned(a, 256));
  free(a);

  // valloc and pvalloc: page-aligned; pvalloc rounds the size up to a page.
  void *v = valloc(10);
  CHECK(v != NULL && aligned(v, 4096));
  free(v);
  void *pv = pvalloc(1);
  CHECK(pv != NULL && aligned(pv, 4096) && malloc_usable_size(pv) >= 4096);
  free(pv);

  // C23 sized frees: glibc 2.36 has none, so they are found in the preloaded library.
  void (*free_sized)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
  void (*free_aligned_sized)(void *, size_t, size_t) =
      (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
  CHECK(free_sized != NULL && free_aligned_sized != NULL);
  if (free_sized && free_aligned_sized) {
    free_sized(malloc(48), 48);
    free_aligned_sized(aligned_alloc(64, 64), 64, 64);
  }

  // Foreign pointers: glibc's blocks (as from before the library was interposed) reach
  // glibc's free, realloc and malloc_usable_size, never BinnedAlloc's slab code.
  void *(*glibc_malloc)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "__libc_malloc");
  CHECK(glibc_malloc != NULL);
  if (glibc_malloc) {
    char *foreign = glibc_malloc(100);
    CHECK(foreign != NULL && malloc_usable_size(foreign) >= 100);
    memset(foreign, 'f', 100);
    foreign = realloc(foreign, 5000);
    CHECK(foreign != NULL && foreign[99] == 'f' && malloc_usable_size(foreign) >= 5000);
    free(foreign);
    if (free_sized) free_sized(glibc_malloc(64), 64);
    errno = 0;
    free(glibc_malloc(1 << 20));  // glibc's mmapped chunk
    CHECK(errno == 0);
  }

  printf("rows: %d passed, %d failed\n", passed, failed);
  return failed != 0;
}
