// CAllocCore: thread-local slots, the thread-exit hook and GNU-only system calls.
#define _GNU_SOURCE
#include "alloc_core.h"

#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>

__thread void *alloc_core_tls_slots[ALLOC_CORE_TLS_SLOT_COUNT]
    __attribute__((tls_model("initial-exec"))) = {0};

// Hooks are written once at set-up and read at thread exit: atomics keep that race-free.
static alloc_core_thread_exit_hook exit_hooks[ALLOC_CORE_TLS_SLOT_COUNT] = {0};
static pthread_key_t exit_key = 0;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;
static int exit_key_error = 0;
// Whether this thread has armed the key; a plain TLS flag avoids a pthread_getspecific.
static __thread int exit_armed __attribute__((tls_model("initial-exec"))) = 0;
// Set when this thread's exit hooks first run; never cleared (the thread is ending).
static __thread int thread_exiting __attribute__((tls_model("initial-exec"))) = 0;

int alloc_core_thread_is_exiting(void) { return thread_exiting; }

int alloc_core_tls_set_exit_hook(unsigned slot, alloc_core_thread_exit_hook hook) {
  if (slot >= ALLOC_CORE_TLS_SLOT_COUNT) return EINVAL;
  __atomic_store_n(&exit_hooks[slot], hook, __ATOMIC_RELEASE);
  return 0;
}

// Runs the hooks of every non-NULL slot. A hook may set a slot again (for instance a
// free() inside a hook recreating a cache); then the key is set again, and glibc calls
// this destructor once more, up to PTHREAD_DESTRUCTOR_ITERATIONS times.
static void run_exit_hooks(void *unused) {
  (void)unused;
  exit_armed = 0;
  thread_exiting = 1;
  for (unsigned slot = 0; slot < ALLOC_CORE_TLS_SLOT_COUNT; slot++) {
    void *value = alloc_core_tls_slots[slot];
    if (value == NULL) continue;
    alloc_core_thread_exit_hook hook = __atomic_load_n(&exit_hooks[slot], __ATOMIC_ACQUIRE);
    if (hook == NULL) continue;
    alloc_core_tls_slots[slot] = NULL;
    hook(value);
  }
  for (unsigned slot = 0; slot < ALLOC_CORE_TLS_SLOT_COUNT; slot++) {
    if (alloc_core_tls_slots[slot] != NULL && __atomic_load_n(&exit_hooks[slot], __ATOMIC_ACQUIRE) != NULL) {
      alloc_core_tls_arm_thread_exit();
      break;
    }
  }
}

static void create_exit_key(void) {
  exit_key_error = pthread_key_create(&exit_key, run_exit_hooks);
}

int alloc_core_tls_arm_thread_exit(void) {
  if (exit_armed) return 0;
  pthread_once(&exit_key_once, create_exit_key);
  if (exit_key_error != 0) return exit_key_error;
  // Any non-NULL value makes glibc call the destructor at thread exit.
  int error = pthread_setspecific(exit_key, (void *)1);
  if (error == 0) exit_armed = 1;
  return error;
}

const char *alloc_core_errno_name(int code) { return strerrorname_np(code); }

pid_t alloc_core_gettid(void) { return (pid_t)syscall(SYS_gettid); }

int alloc_core_memfd_create(const char *name) { return (int)syscall(SYS_memfd_create, name, MFD_CLOEXEC); }

int alloc_core_fallocate(int fd, off_t offset, off_t length) { return fallocate(fd, 0, offset, length); }

void *alloc_core_mremap(void *old_address, size_t old_size, size_t new_size, int flags, void *new_address) {
  int mremap_flags = flags == 0 ? 0 : flags == 1 ? MREMAP_MAYMOVE : (MREMAP_MAYMOVE | MREMAP_FIXED);
  void *result = mremap(old_address, old_size, new_size, mremap_flags, new_address);
  return result == MAP_FAILED ? NULL : result;
}

int alloc_core_is_mapped(const void *address) {
  unsigned char residency;
  uintptr_t page = (uintptr_t)address & ~(uintptr_t)(sysconf(_SC_PAGESIZE) - 1);
  return mincore((void *)page, 1, &residency) == 0 || errno != ENOMEM;
}

int alloc_core_pipe_cloexec(int descriptors[2]) { return pipe2(descriptors, O_CLOEXEC); }

int alloc_core_mkstemp_cloexec(char *path_template) { return mkostemp(path_template, O_CLOEXEC); }

int alloc_core_affinity_cpu_count(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 0;
  return CPU_COUNT(&set);
}

uint64_t alloc_core_random_word(void) {
  uint64_t word = 0;
  if (syscall(SYS_getrandom, &word, sizeof word, GRND_NONBLOCK) == (long)sizeof word) return word;
  const uint64_t *bytes = (const uint64_t *)getauxval(AT_RANDOM);
  if (bytes != NULL) memcpy(&word, bytes, sizeof word);
  return word;
}

const int alloc_core_madv_dontneed = MADV_DONTNEED;
const int alloc_core_madv_free = MADV_FREE;
const int alloc_core_madv_hugepage = MADV_HUGEPAGE;
const int alloc_core_madv_nohugepage = MADV_NOHUGEPAGE;
const int alloc_core_madv_willneed = MADV_WILLNEED;
const int alloc_core_madv_remove = MADV_REMOVE;
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14's value, for headers older than the kernel
#endif
const int alloc_core_madv_populate_write = MADV_POPULATE_WRITE;

int alloc_core_futex_wait(uint32_t *address, uint32_t expected, int64_t timeout_ns) {
  struct timespec timeout;
  if (timeout_ns >= 0) {
    timeout.tv_sec = (time_t)(timeout_ns / 1000000000);
    timeout.tv_nsec = (long)(timeout_ns % 1000000000);
  }
  long result = syscall(SYS_futex, address, FUTEX_WAIT_PRIVATE, expected, timeout_ns >= 0 ? &timeout : NULL, NULL, 0);
  return result == 0 ? 0 : errno;
}

int alloc_core_futex_wake(uint32_t *address, int count) {
  long result = syscall(SYS_futex, address, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
  return result < 0 ? 0 : (int)result;
}

// Fork actions: one pthread_atfork for the whole process, whose handlers run the
// registered sets in pthread_atfork's order. A registration takes a spin lock (it may come
// from inside malloc, where nothing may block on a lock malloc needs) and publishes the
// new count with release ordering, so a handler sees only complete sets. The prepare
// handler notes how many sets it prepared, and the parent and child handlers run exactly
// those: a set registered by another thread between the prepare and the fork never has
// its parent or child action run without its prepare.
static alloc_core_fork_action fork_prepare[ALLOC_CORE_FORK_ACTION_CAPACITY];
static alloc_core_fork_action fork_parent[ALLOC_CORE_FORK_ACTION_CAPACITY];
static alloc_core_fork_action fork_child[ALLOC_CORE_FORK_ACTION_CAPACITY];
static int fork_count = 0;
static int fork_lock = 0;
// Written by the forking thread's prepare, read by its parent and child handlers.
static int fork_prepared = 0;
static pthread_once_t fork_install_once = PTHREAD_ONCE_INIT;
static int fork_install_error = 0;

static void run_fork_prepare(void) {
  fork_prepared = __atomic_load_n(&fork_count, __ATOMIC_ACQUIRE);
  for (int index = fork_prepared - 1; index >= 0; index--) {
    if (fork_prepare[index]) fork_prepare[index]();
  }
}

static void run_fork_parent(void) {
  for (int index = 0; index < fork_prepared; index++) {
    if (fork_parent[index]) fork_parent[index]();
  }
}

static void run_fork_child(void) {
  for (int index = 0; index < fork_prepared; index++) {
    if (fork_child[index]) fork_child[index]();
  }
}

static void install_fork_handlers(void) {
  fork_install_error = pthread_atfork(run_fork_prepare, run_fork_parent, run_fork_child);
}

int alloc_core_fork_register(alloc_core_fork_action prepare, alloc_core_fork_action parent,
                             alloc_core_fork_action child) {
  while (__atomic_exchange_n(&fork_lock, 1, __ATOMIC_ACQUIRE)) alloc_core_cpu_relax();
  int index = fork_count;
  if (index == ALLOC_CORE_FORK_ACTION_CAPACITY) {
    __atomic_store_n(&fork_lock, 0, __ATOMIC_RELEASE);
    return ENOMEM;
  }
  fork_prepare[index] = prepare;
  fork_parent[index] = parent;
  fork_child[index] = child;
  __atomic_store_n(&fork_count, index + 1, __ATOMIC_RELEASE);
  __atomic_store_n(&fork_lock, 0, __ATOMIC_RELEASE);
  // Outside the lock (pthread_atfork may allocate, and a preloaded malloc registers from
  // inside its own initialisation); every registration returns only once the handlers
  // are installed, so none is ever registered without them.
  pthread_once(&fork_install_once, install_fork_handlers);
  return fork_install_error;
}

int alloc_core_fork_registered_count(void) { return __atomic_load_n(&fork_count, __ATOMIC_ACQUIRE); }
