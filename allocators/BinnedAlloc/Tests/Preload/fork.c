// fork() while other threads allocate: every child must allocate and free at once and
// exit, with no deadlock (an alarm kills a stuck child). Run under LD_PRELOAD.
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int stop;

static void *churn(void *argument) {
  (void)argument;
  unsigned size = 1;
  while (!stop) {
    // Big and small blocks: refills, slab retirement and large spans all run.
    void *blocks[64];
    for (int i = 0; i < 64; i++) blocks[i] = malloc((size = size * 2654435761u) % 300000 + 1);
    for (int i = 0; i < 64; i++) free(blocks[i]);
  }
  return NULL;
}

int main(void) {
  enum { THREADS = 4, FORKS = 200 };
  pthread_t threads[THREADS];
  for (int t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, churn, NULL);
  int passed = 0, failed = 0;
  for (int f = 0; f < FORKS; f++) {
    pid_t child = fork();
    if (child == 0) {
      alarm(10);
      for (int i = 0; i < 1000; i++) {
        char *p = malloc((size_t)i * 97 + 1);
        memset(p, i, (size_t)i * 97 + 1);
        free(p);
      }
      void *big = malloc(1 << 22);
      free(big);
      _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) passed++;
    else {
      failed++;
      fprintf(stderr, "fork %d: child ended with status %d\n", f, status);
    }
  }
  stop = 1;
  for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
  printf("fork: %d passed, %d failed\n", passed, failed);
  return failed != 0;
}
