// Test support: glibc's arena statistics, which the Swift Glibc module does not import
// (malloc.h is not part of it). Used to show that a drop allocates nothing.
#ifndef MALLOC_STATISTICS_H
#define MALLOC_STATISTICS_H

#include <stddef.h>

/// Bytes glibc's malloc hands out right now: chunks in use in every arena (uordblks)
/// plus mmapped chunks (hblkhd), from mallinfo2().
size_t malloc_statistics_bytes_in_use(void);

#endif
