// The heap-misuse battery: one program, one misuse per run. `misuse list` prints every case
// as "NAME SIZE"; `misuse NAME SIZE` commits that misuse on a block of SIZE bytes (8 B,
// 4 KiB or 256 KiB) with whatever allocator the process has (LD_PRELOAD), then, if it
// survived, prints NOT_CAUGHT and exits 0. An allocator that catches the misuse stops the
// process (an abort with a message, or a fault) before that line.
//
// Each case goes on using the heap after the misuse the way a program would (frees,
// allocations of the same size), so that an allocator that checks lazily gets its chance,
// and the compiler cannot see through any of it (the blocks pass through `escape`).
#define _GNU_SOURCE
#include <alloca.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

// Every misuse here is on purpose.
#pragma GCC diagnostic ignored "-Wuse-after-free"
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overflow"

// Blocks and sizes pass through here, so that no call or write below is folded away or
// diagnosed at compile time.
static void *volatile escaped;
static void *escape(void *pointer) {
  escaped = pointer;
  return escaped;
}
static volatile size_t opaque_size;

// Heap traffic after a misuse: allocations and frees of the block's size and others, as a
// program's next steps would be. Returns the blocks still held, freed by the caller.
static void churn(size_t size, void **held, int count) {
  for (int i = 0; i < count; i++) {
    held[i] = escape(malloc(size));
    memset(held[i], 0x11, size);
  }
  for (int i = 0; i < count; i += 2) free(held[i]);
  for (int i = 0; i < count; i += 2) held[i] = escape(malloc(size));
}

static void release(void **held, int count) {
  for (int i = 0; i < count; i++) free(held[i]);
}

enum { churn_count = 16 };

static void double_immediate(size_t size) {
  char *block = escape(malloc(size));
  free(block);
  free(escape(block));
}

// Freed, then other blocks of its size freed after it, then freed again.
static void double_delayed(size_t size) {
  char *block = escape(malloc(size));
  void *others[churn_count];
  for (int i = 0; i < churn_count; i++) others[i] = escape(malloc(size));
  free(block);
  release(others, churn_count);
  free(escape(block));
}

// glibc's fastbin case: a, b, a.
static void double_interleaved(size_t size) {
  char *first = escape(malloc(size));
  char *second = escape(malloc(size));
  free(first);
  free(second);
  free(escape(first));
}

// Freed, handed out again (most allocators give the same block back) and freed by its new
// owner, then freed a second time through the old pointer.
static void double_after_reuse(size_t size) {
  char *block = escape(malloc(size));
  free(block);
  char *again = escape(malloc(size));
  memset(again, 0x22, size);
  free(again);
  free(escape(block));
}

static void invalid_unaligned(size_t size) {
  char *block = escape(malloc(size));
  free(escape(block + 1));
}

// A pointer to a field a little way into the block (16 bytes in; 8 in an 8-byte block).
static void invalid_inside(size_t size) {
  char *block = escape(malloc(size));
  free(escape(block + (size >= 32 ? 16 : 8)));
}

// Memory no allocator handed out: a page of its own, a few bytes in.
static void invalid_far(size_t size) {
  (void)size;
  char *page = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED) exit(2);
  free(escape(page + 4096 + 16));
}

static void invalid_stack(size_t size) {
  (void)size;
  char buffer[64] __attribute__((aligned(16)));
  memset(buffer, 0, sizeof buffer);
  free(escape(buffer + 16));
}

static void invalid_alloca(size_t size) {
  char *block = alloca(size);
  memset(block, 0, size);
  free(escape(block));
}

// Writes `count` bytes starting `offset` bytes from the block's start (negative: before it),
// directly or with memcpy, then goes on using the heap.
static void corrupt(size_t size, long offset, size_t count, int with_memcpy) {
  char *block = escape(malloc(size));
  memset(block, 0x33, size);
  char *target = block + offset;
  if (with_memcpy) {
    char *source = escape(malloc(count));
    memset(source, 0x44, count);
    memcpy(escape(target), source, opaque_size = count);
    free(source);
  } else {
    for (size_t i = 0; i < count; i++) ((volatile char *)escape(target))[i] = 0x44;
  }
  void *held[churn_count];
  churn(size, held, churn_count);
  free(block);
  release(held, churn_count);
  churn(size, held, churn_count);
  release(held, churn_count);
}

static void overflow_1(size_t size) { corrupt(size, (long)size, 1, 0); }
static void overflow_32(size_t size) { corrupt(size, (long)size, 32, 0); }
static void overflow_1m(size_t size) { corrupt(size, (long)size, 1 << 20, 0); }
static void overflow_1_memcpy(size_t size) { corrupt(size, 0, size + 1, 1); }
static void overflow_32_memcpy(size_t size) { corrupt(size, 0, size + 32, 1); }
static void overflow_1m_memcpy(size_t size) { corrupt(size, 0, size + (1 << 20), 1); }
static void underflow_1(size_t size) { corrupt(size, -1, 1, 0); }
static void underflow_32(size_t size) { corrupt(size, -32, 32, 0); }
static void underflow_1m(size_t size) { corrupt(size, -(1L << 20), 1 << 20, 0); }
static void underflow_1_memcpy(size_t size) { corrupt(size, -1, 1, 1); }
static void underflow_32_memcpy(size_t size) { corrupt(size, -32, 32, 1); }
static void underflow_1m_memcpy(size_t size) { corrupt(size, -(1L << 20), 1 << 20, 1); }

// A write into a freed block; with reuse, blocks of its size are then allocated again.
static void write_after_free(size_t size, int reuse) {
  char *block = escape(malloc(size));
  memset(block, 0x55, size);
  free(block);
  ((volatile char *)escape(block))[size / 2] = 0x66;
  ((volatile char *)escape(block))[0] = 0x66;
  if (reuse) {
    void *held[churn_count];
    churn(size, held, churn_count);
    release(held, churn_count);
  } else {
    char *other = escape(malloc(size * 2 + 64));
    free(other);
  }
}

static void use_after_free(size_t size) { write_after_free(size, 0); }
static void use_after_free_reused(size_t size) { write_after_free(size, 1); }

static const struct {
  const char *name;
  void (*run)(size_t size);
} cases[] = {
    {"double-free-immediate", double_immediate},
    {"double-free-delayed", double_delayed},
    {"double-free-interleaved", double_interleaved},
    {"double-free-after-reuse", double_after_reuse},
    {"invalid-free-unaligned", invalid_unaligned},
    {"invalid-free-inside", invalid_inside},
    {"invalid-free-far", invalid_far},
    {"invalid-free-stack", invalid_stack},
    {"invalid-free-alloca", invalid_alloca},
    {"overflow-1", overflow_1},
    {"overflow-32", overflow_32},
    {"overflow-1m", overflow_1m},
    {"overflow-1-memcpy", overflow_1_memcpy},
    {"overflow-32-memcpy", overflow_32_memcpy},
    {"overflow-1m-memcpy", overflow_1m_memcpy},
    {"underflow-1", underflow_1},
    {"underflow-32", underflow_32},
    {"underflow-1m", underflow_1m},
    {"underflow-1-memcpy", underflow_1_memcpy},
    {"underflow-32-memcpy", underflow_32_memcpy},
    {"underflow-1m-memcpy", underflow_1m_memcpy},
    {"write-after-free", use_after_free},
    {"write-after-free-reused", use_after_free_reused},
};
static const size_t sizes[] = {8, 4096, 262144};

int main(int argc, char **argv) {
  const size_t case_count = sizeof cases / sizeof cases[0];
  if (argc == 2 && strcmp(argv[1], "list") == 0) {
    for (size_t i = 0; i < case_count; i++)
      for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) printf("%s %zu\n", cases[i].name, sizes[s]);
    return 0;
  }
  if (argc != 3) {
    fprintf(stderr, "usage: misuse list | misuse CASE SIZE\n");
    return 2;
  }
  size_t size = strtoull(argv[2], NULL, 10);
  for (size_t i = 0; i < case_count; i++) {
    if (strcmp(argv[1], cases[i].name) != 0) continue;
    cases[i].run(size);
    printf("NOT_CAUGHT\n");
    fflush(stdout);
    return 0;
  }
  fprintf(stderr, "misuse: no case %s\n", argv[1]);
  return 2;
}
