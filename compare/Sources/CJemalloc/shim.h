// jemalloc as Debian ships it (libjemalloc-dev): unprefixed names, so linking it makes
// jemalloc the allocator of the whole process.
#include <jemalloc/jemalloc.h>
