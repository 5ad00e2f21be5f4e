// Many threads, random sizes from 1 B to 1 MiB, blocks handed between threads through a
// shared array with atomic exchange (so most frees are cross-thread), a pattern written
// into every block and checked before it is freed, calloc zero checks, realloc growth,
// and threads that exit and are recreated. Run under LD_PRELOAD=libbinnedmalloc.so.
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { THREADS = 8, ROUNDS = 4, OPERATIONS = 5000, SLOTS = 4096 };

typedef struct {
  unsigned char *block;
  size_t size;
} Slot;

static Slot *slots[SLOTS];
static int corrupted;

static uint64_t next_random(uint64_t *state) {
  *state += 0x9E3779B97F4A7C15ull;
  uint64_t z = *state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Log-uniform from 1 B to 1 MiB: as many tiny blocks as huge ones.
static size_t random_size(uint64_t *state) {
  int shift = (int)(next_random(state) % 21);
  return 1 + (size_t)(next_random(state) & ((1ull << shift) - 1));
}

static unsigned char pattern(const Slot *slot, size_t index) {
  return (unsigned char)(((uintptr_t)slot->block >> 4) + slot->size + index * 7);
}

static void fill(Slot *slot) {
  // First and last 64 bytes, and one byte per page: enough to catch overlaps cheaply.
  for (size_t i = 0; i < slot->size; i = (i < 64 || i + 64 >= slot->size) ? i + 1 : i + 4096)
    slot->block[i] = pattern(slot, i);
}

static void check_and_free(Slot *slot) {
  for (size_t i = 0; i < slot->size; i = (i < 64 || i + 64 >= slot->size) ? i + 1 : i + 4096) {
    if (slot->block[i] != pattern(slot, i)) {
      __atomic_add_fetch(&corrupted, 1, __ATOMIC_RELAXED);
      break;
    }
  }
  free(slot->block);
  free(slot);
}

static void *worker(void *argument) {
  uint64_t state = (uintptr_t)argument * 7919 + 1;
  for (int operation = 0; operation < OPERATIONS; operation++) {
    Slot *slot = malloc(sizeof *slot);
    slot->size = random_size(&state);
    switch (next_random(&state) % 3) {
      case 0: {
        slot->block = calloc(1, slot->size);
        for (size_t i = 0; i < slot->size; i += 997)
          if (slot->block[i] != 0) __atomic_add_fetch(&corrupted, 1, __ATOMIC_RELAXED);
        break;
      }
      case 1: {
        // Grow by realloc in steps, keeping what was written.
        size_t half = slot->size / 2 + 1;
        slot->block = malloc(half);
        memset(slot->block, 0x5A, half);
        slot->block = realloc(slot->block, slot->size);
        for (size_t i = 0; i < half && i < slot->size; i += 61)
          if (slot->block[i] != 0x5A) __atomic_add_fetch(&corrupted, 1, __ATOMIC_RELAXED);
        break;
      }
      default:
        slot->block = malloc(slot->size);
    }
    fill(slot);
    Slot *previous = __atomic_exchange_n(&slots[next_random(&state) % SLOTS], slot, __ATOMIC_ACQ_REL);
    if (previous) check_and_free(previous);
  }
  return NULL;
}

int main(void) {
  for (int round = 0; round < ROUNDS; round++) {
    pthread_t threads[THREADS];
    for (intptr_t t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, worker, (void *)(t + round * THREADS));
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
  }
  for (int i = 0; i < SLOTS; i++)
    if (slots[i]) check_and_free(slots[i]);
  int failed = corrupted != 0;
  printf("stress: %d passed, %d failed (%d corrupted blocks)\n", !failed, failed, corrupted);
  return failed;
}
