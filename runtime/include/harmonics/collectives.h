/*
 * Collectives: what data-parallel training needs from the processes it runs
 * in (DESIGN.md §11; docs/distributed.md). An implementation fills the
 * table; hm_fit_options.collectives carries it into fit. libharmonics never
 * links a transport: libharmonics_mpi (<harmonics/mpi.h>) implements this
 * over MPI, and a test or another engine may implement it too.
 *
 * Every call returns a status and none waits forever: an implementation
 * gives up after its timeout with UNAVAILABLE and a sentence naming the
 * peer or the operation (hm_set_error), so a dead rank is an error, not a
 * hang. Every rank must make the same calls in the same order.
 */
#ifndef HARMONICS_COLLECTIVES_H_
#define HARMONICS_COLLECTIVES_H_

#include <stddef.h>

#include "harmonics/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hm_collectives {
  size_t struct_size;
  void *self;
  int rank; /* 0 .. size-1; rank 0 decides every stop and writes checkpoints */
  int size;
  /* Sums |n| floats element-wise over all ranks, in place, with the same
   * result on every rank (bit for bit). */
  hm_status (*allreduce_sum_f32)(void *self, float *data, size_t n);
  /* Copies |bytes| bytes from |root|'s |data| into every rank's |data|. */
  hm_status (*broadcast)(void *self, void *data, size_t bytes, int root);
  hm_status (*barrier)(void *self);
} hm_collectives;

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_COLLECTIVES_H_ */
