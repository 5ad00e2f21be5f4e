// CAllocCore: the few things Swift cannot express directly.
//
// - Thread-local slots with the initial-exec TLS model, read through static inline
//   accessors so that Swift callers inline a single %fs-relative load (GUIDE section 3:
//   about 1.4 ns, against about 4 ns for pthread_getspecific). Initial-exec is the model
//   that stays fast and safe inside a library that may be LD_PRELOADed.
// - A thread-exit hook per slot, run from a pthread key destructor.
// - GNU-only calls (memfd_create, fallocate, gettid, MADV_* values) that the Swift Glibc
//   module does not import without _GNU_SOURCE.
// - The CPU's spin-wait hint.
//
// Nothing here allocates.
#ifndef ALLOC_CORE_H
#define ALLOC_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

// Hidden: a process may hold two copies of AllocCore (a program that links it, running
// under a preloaded allocator that links its own), and each copy must keep its own slots,
// key and hooks. Swift modules that use AllocCore are linked statically into one image.
#pragma GCC visibility push(hidden)

/// Number of thread-local slots. Each allocator owns one (see ThreadLocalSlot in Swift).
#define ALLOC_CORE_TLS_SLOT_COUNT 8

extern __thread void *alloc_core_tls_slots[ALLOC_CORE_TLS_SLOT_COUNT]
    __attribute__((tls_model("initial-exec")));

static inline __attribute__((always_inline)) void *alloc_core_tls_get(unsigned slot) {
  return alloc_core_tls_slots[slot];
}

static inline __attribute__((always_inline)) void alloc_core_tls_set(unsigned slot, void *value) {
  alloc_core_tls_slots[slot] = value;
}

/// Called on the exiting thread with the slot's last non-NULL value; the slot reads
/// NULL while the hook runs.
typedef void (*alloc_core_thread_exit_hook)(void *value);

/// Installs (or with NULL removes) the exit hook of `slot`. Returns 0, or EINVAL.
int alloc_core_tls_set_exit_hook(unsigned slot, alloc_core_thread_exit_hook hook);

/// Makes sure the exit hooks run when the calling thread exits. Cheap after the first
/// call on a thread; call it on a slow path, when a slot is first set. Returns 0 or an
/// errno value from pthread_key_create / pthread_setspecific.
int alloc_core_tls_arm_thread_exit(void);

/// Whether the calling thread has started running its exit hooks. A cache created after
/// that may outlive the last round of hooks (glibc frees some per-thread buffers after
/// the pthread key destructors), so allocators check this on their slow path and use a
/// shared path instead of giving an exiting thread a new cache.
int alloc_core_thread_is_exiting(void);

/// Most fork actions the process may register (each allocator registers one set).
#define ALLOC_CORE_FORK_ACTION_CAPACITY 8

typedef void (*alloc_core_fork_action)(void);

/// Registers actions around fork(2): `prepare` runs in the forking thread before the
/// fork, newest registration first; `parent` and `child` run after it on each side,
/// oldest first (pthread_atfork's order, so a later allocator, which may call an earlier
/// one, is stopped first and restarted last). Any action may be NULL. The first call
/// installs the process's one pthread_atfork; none allocates but that. Returns 0, or
/// ENOMEM when ALLOC_CORE_FORK_ACTION_CAPACITY sets are registered already.
int alloc_core_fork_register(alloc_core_fork_action prepare, alloc_core_fork_action parent,
                             alloc_core_fork_action child);

/// How many sets of fork actions are registered.
int alloc_core_fork_registered_count(void);

/// The spin-wait hint: PAUSE on x86, YIELD on ARM.
static inline __attribute__((always_inline)) void alloc_core_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/// The symbolic name of an errno value ("ENOMEM"), thread-safe (strerrorname_np), or NULL.
const char *alloc_core_errno_name(int code);

/// gettid(2).
pid_t alloc_core_gettid(void);

/// memfd_create(2) with MFD_CLOEXEC. Returns a descriptor or -1 with errno.
int alloc_core_memfd_create(const char *name);

/// fallocate(2) with mode 0. Returns 0 or -1 with errno.
int alloc_core_fallocate(int fd, off_t offset, off_t length);

/// mremap(2). `flags`: 0 to resize in place only, 1 to let the kernel move the mapping,
/// 2 to move it to `new_address` (MREMAP_MAYMOVE | MREMAP_FIXED). Returns the address or
/// NULL with errno.
void *alloc_core_mremap(void *old_address, size_t old_size, size_t new_size, int flags, void *new_address);

/// Whether the page holding `address` is mapped (mincore answers ENOMEM otherwise).
int alloc_core_is_mapped(const void *address);

/// pipe2(2) with O_CLOEXEC. Returns 0 or -1 with errno.
int alloc_core_pipe_cloexec(int descriptors[2]);

/// mkostemp(3) with O_CLOEXEC: creates a unique file from `path_template` (ending in
/// XXXXXX, rewritten in place). Returns a descriptor or -1 with errno.
int alloc_core_mkstemp_cloexec(char *path_template);

/// The number of CPUs in the calling thread's affinity mask, or 0 if it cannot be read.
int alloc_core_affinity_cpu_count(void);

/// 64 random bits from the kernel (getrandom, non-blocking), or, where that fails, from the
/// 16 random bytes the kernel gives every process at exec (AT_RANDOM). Allocates nothing.
uint64_t alloc_core_random_word(void);

/// futex(2) FUTEX_WAIT_PRIVATE on the 32-bit word at `address`: sleeps while it holds
/// `expected`, at most `timeout_ns` nanoseconds (negative: no limit). Returns 0 when woken
/// (or spuriously), else the errno value: EAGAIN (the word did not hold `expected`),
/// ETIMEDOUT, EINTR.
int alloc_core_futex_wait(uint32_t *address, uint32_t expected, int64_t timeout_ns);

/// futex(2) FUTEX_WAKE_PRIVATE: wakes at most `count` threads waiting on `address`.
/// Returns how many were woken.
int alloc_core_futex_wake(uint32_t *address, int count);

/// The madvise(2) advice values, whatever the headers' feature macros.
extern const int alloc_core_madv_dontneed;
extern const int alloc_core_madv_free;
extern const int alloc_core_madv_hugepage;
extern const int alloc_core_madv_nohugepage;
extern const int alloc_core_madv_willneed;
extern const int alloc_core_madv_remove;
extern const int alloc_core_madv_populate_write;

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif

#endif
