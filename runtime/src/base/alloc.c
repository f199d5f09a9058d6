/*
 * Every heap block the runtime owns comes from here, so a test build can
 * fail the Nth allocation and count the blocks still live (SQLite's habit:
 * each failure must leave a clean status and no leak). Shipped builds
 * compile the hook out; these are then plain malloc/free.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "base/base.h"

#ifdef HM_ALLOC_FAILURE_HOOK

static atomic_long attempts; /* allocations asked for since the last arm */
static atomic_long fail_at;  /* fail the attempt with this number; 0 = none */
static atomic_long failures; /* attempts refused since the last arm */
static atomic_long live;     /* blocks handed out and not yet freed */

void hm__alloc_hook_arm(long nth) {
  atomic_store(&attempts, 0);
  atomic_store(&failures, 0);
  atomic_store(&fail_at, nth);
}

long hm__alloc_hook_attempts(void) { return atomic_load(&attempts); }
long hm__alloc_hook_failures(void) { return atomic_load(&failures); }
long hm__alloc_hook_live(void) { return atomic_load(&live); }

/* Nonzero when this attempt is to fail: the armed one and every later one
 * (a failure that is retried must not succeed behind the test's back). */
static int refuse(void) {
  long n = atomic_fetch_add(&attempts, 1) + 1, at = atomic_load(&fail_at);
  if (at > 0 && n >= at) {
    atomic_fetch_add(&failures, 1);
    return 1;
  }
  return 0;
}

static void *counted(void *p) {
  if (p) atomic_fetch_add(&live, 1);
  return p;
}

void *hm__malloc(size_t n) { return refuse() ? NULL : counted(malloc(n ? n : 1)); }

void *hm__calloc(size_t count, size_t size) { return refuse() ? NULL : counted(calloc(count ? count : 1, size ? size : 1)); }

void *hm__realloc(void *p, size_t n) {
  if (refuse()) return NULL;
  void *q = realloc(p, n ? n : 1);
  if (!p) return counted(q);
  return q;
}

void hm__free(void *p) {
  if (!p) return;
  atomic_fetch_sub(&live, 1);
  free(p);
}

#else

void *hm__malloc(size_t n) { return malloc(n ? n : 1); }
void *hm__calloc(size_t count, size_t size) { return calloc(count ? count : 1, size ? size : 1); }
void *hm__realloc(void *p, size_t n) { return realloc(p, n ? n : 1); }
void hm__free(void *p) { free(p); }

#endif
