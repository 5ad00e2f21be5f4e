// Thousands of short-lived threads, one after another and a few at a time, each
// allocating and freeing: memory must stay flat, since an exiting thread's cache goes
// back (parked for the next thread). Run under LD_PRELOAD.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long resident_kib(void) {
  FILE *status = fopen("/proc/self/status", "r");
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, status))
    if (strncmp(line, "VmRSS:", 6) == 0) kib = atol(line + 6);
  fclose(status);
  return kib;
}

static void *short_life(void *argument) {
  (void)argument;
  void *blocks[200];
  for (int i = 0; i < 200; i++) {
    blocks[i] = malloc((size_t)(i * 37 % 5000) + 1);
    memset(blocks[i], i, (size_t)(i * 37 % 5000) + 1);
  }
  for (int i = 0; i < 200; i++) free(blocks[i]);
  return NULL;
}

static void run(int count) {
  for (int i = 0; i < count; i += 4) {
    pthread_t threads[4];
    for (int t = 0; t < 4; t++) pthread_create(&threads[t], NULL, short_life, NULL);
    for (int t = 0; t < 4; t++) pthread_join(threads[t], NULL);
  }
}

int main(void) {
  run(200);
  long early = resident_kib();
  run(4000);
  long late = resident_kib();
  int failed = late > early + 8 * 1024;
  printf("churn: %d passed, %d failed (RSS %ld KiB after 200 threads, %ld KiB after 4,200)\n", !failed, failed,
         early, late);
  return failed;
}
