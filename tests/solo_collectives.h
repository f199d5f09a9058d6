/*
 * Collectives of one rank, in process, for tests of the data-parallel fit
 * without MPI: every call is the identity, counted; |fail_after| > 0 makes
 * that all-reduce fail as a lost peer would.
 */
#ifndef HM_TESTS_SOLO_COLLECTIVES_H_
#define HM_TESTS_SOLO_COLLECTIVES_H_

#include "harmonics/collectives.h"

typedef struct solo_ranks {
  int reduces, fail_after;
} solo_ranks;

static inline hm_status solo_allreduce(void *self, float *data, size_t n) {
  solo_ranks *r = (solo_ranks *)self;
  (void)data, (void)n;
  if (++r->reduces == r->fail_after) return hm_set_error(HM_STATUS_UNAVAILABLE, "rank 1 is gone");
  return HM_OK;
}

static inline hm_status solo_broadcast(void *self, void *data, size_t bytes, int root) {
  (void)self, (void)data, (void)bytes, (void)root;
  return HM_OK;
}

static inline hm_status solo_barrier(void *self) {
  (void)self;
  return HM_OK;
}

/* The table for |ranks| (which must outlive it). */
static inline hm_collectives solo_collectives(solo_ranks *ranks) {
  hm_collectives c = {sizeof c, ranks, 0, 1, solo_allreduce, solo_broadcast, solo_barrier};
  return c;
}

#endif /* HM_TESTS_SOLO_COLLECTIVES_H_ */
