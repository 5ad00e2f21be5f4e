// glibc's extra entry points under LD_PRELOAD answer from BinnedAlloc's numbers, and freed
// memory goes back to the OS after the purge delay with no call. Run under LD_PRELOAD with
// BINNEDMALLOC_CONF=purge_delay_ms:200 (the run script sets it).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(condition, ...)                          \
  do {                                                 \
    if (!(condition)) {                                \
      fprintf(stderr, "extras.c:%d: ", __LINE__);      \
      fprintf(stderr, __VA_ARGS__);                    \
      fputc('\n', stderr);                             \
      exit(1);                                         \
    }                                                  \
  } while (0)

static long resident_kib(void) {
  FILE *status = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, status))
    if (strncmp(line, "VmRSS:", 6) == 0) kib = atol(line + 6);
  fclose(status);
  return kib;
}

static long long statistic(const char *name) {
  long long (*query)(const char *) = (long long (*)(const char *))dlsym(RTLD_DEFAULT, "binned_statistic");
  CHECK(query != NULL, "binned_statistic is not exported");
  return query(name);
}

static void sleep_milliseconds(long milliseconds) {
  struct timespec request = {milliseconds / 1000, (milliseconds % 1000) * 1000000};
  nanosleep(&request, NULL);
}

int main(void) {
  // mallinfo2 and mallinfo follow our live bytes.
  struct mallinfo2 before = mallinfo2();
  enum { count = 64, size = 1 << 20 };
  char *blocks[count];
  for (int i = 0; i < count; i++) {
    blocks[i] = malloc(size);
    memset(blocks[i], 1, size);
  }
  struct mallinfo2 during = mallinfo2();
  CHECK(during.uordblks >= before.uordblks + (size_t)count * size, "mallinfo2.uordblks %zu -> %zu",
        before.uordblks, during.uordblks);
  CHECK((long long)during.uordblks == statistic("live_bytes"), "mallinfo2 and binned_statistic disagree");
  CHECK(during.arena >= during.uordblks, "arena %zu < uordblks %zu", during.arena, during.uordblks);
  CHECK(during.hblks >= count && during.hblkhd >= (size_t)count * size, "hblks %zu, hblkhd %zu", during.hblks,
        during.hblkhd);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  struct mallinfo narrow = mallinfo();
#pragma GCC diagnostic pop
  CHECK(narrow.uordblks > 0 && (size_t)narrow.uordblks <= during.uordblks + (size_t)size, "mallinfo %d",
        narrow.uordblks);

  // The other entry points answer as glibc's do.
  CHECK(mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1, "mallopt(M_MMAP_THRESHOLD) != 1");
  CHECK(mallopt(M_ARENA_MAX, 2) == 1, "mallopt(M_ARENA_MAX) != 1");
  char *xml = NULL;
  size_t xml_size = 0;
  FILE *stream = open_memstream(&xml, &xml_size);
  CHECK(malloc_info(0, stream) == 0, "malloc_info failed");
  fclose(stream);
  CHECK(strstr(xml, "<malloc version=\"1\"") != NULL && strstr(xml, "</malloc>") != NULL, "malloc_info: %s", xml);
  free(xml);
  CHECK(malloc_info(1, stdout) == -1, "malloc_info(1, ...) did not fail");
  CHECK(statistic("no_such_statistic") == -1, "an unknown statistic answered");

  // Freed memory waits in the cache, then goes back after the delay with no call: poll up to
  // 20 s (100 delays), so that a slow machine cannot fail it; it takes about 0.3 s. The purger
  // empties the cache, unmaps, trims the parked caches and only then counts its purge, all on
  // its own thread: the poll waits for every sign of it, not just the first.
  for (int i = 0; i < count; i++) free(blocks[i]);
  long freed_kib = resident_kib();
  long long cached = statistic("cached_large_bytes");
  CHECK(cached > 0, "nothing was cached");
  long waited = 0;
  long idle_kib = resident_kib();
  while ((statistic("cached_large_bytes") > 0 || statistic("purges") == 0 || idle_kib + cached / 2048 > freed_kib) &&
         waited < 20000) {
    sleep_milliseconds(20);
    waited += 20;
    idle_kib = resident_kib();
  }
  CHECK(statistic("cached_large_bytes") == 0, "%lld bytes still cached after %ld ms", statistic("cached_large_bytes"),
        waited);
  CHECK(idle_kib + cached / 2048 <= freed_kib, "RSS %ld KiB after the delay, %ld KiB before, %lld bytes were cached",
        idle_kib, freed_kib, cached);
  CHECK(statistic("purges") > 0, "no purge counted after %ld ms", waited);

  // malloc_trim gives back what a delay has not yet: a freed block waits in the cache.
  char *volatile big = malloc(8 << 20);
  memset((char *)big, 1, 8 << 20);
  free(big);
  CHECK(statistic("cached_large_bytes") > 0, "the 8 MiB block was not cached");
  CHECK(malloc_trim(0) == 1, "malloc_trim returned 0 with memory to give back");
  CHECK(statistic("cached_large_bytes") == 0, "malloc_trim left cached bytes");
  printf("extras: mallinfo2 %zu live bytes at the peak; RSS %ld -> %ld KiB %ld ms after the free\n", during.uordblks,
         freed_kib, idle_kib, waited);
  return 0;
}
