/*
 * Data-parallel training over hm_collectives (docs/distributed.md): the
 * split of each global batch, the one all-reduce per update over the
 * gradient arena, the reduced metrics, the stop decision of rank 0 and the
 * consistency checks at start. The fit loop (training.c) calls these when
 * hm_fit_options.collectives is set.
 */
#ifndef HM_TRAIN_DATA_PARALLEL_H_
#define HM_TRAIN_DATA_PARALLEL_H_

#include "harmonics/collectives.h"
#include "train/session.h"

typedef struct hm_dp {
  const hm_collectives *c;
  size_t n_grads;   /* floats of the gradient arena */
  float *arena;     /* n_grads + the two loss sums below */
  int grads_live;   /* the device gradients hold this group's contributions */
  double loss_mean; /* sum over the group's micro-batches of this rank's part of the batch mean */
  double loss_rows; /* sum of this rank's loss * rows (the epoch loss) */
} hm_dp;

hm_status hm__dp_create(const hm_collectives *c, hm_session *s, hm_dp **out);
void hm__dp_free(hm_dp *dp);
static inline int hm__dp_is_root(const hm_dp *dp) { return !dp || dp->c->rank == 0; }

/* This rank's rows [*begin, *begin + *rows) of a global batch of |b| rows:
 * floor(b*r/size) .. floor(b*(r+1)/size), so shares differ by at most one
 * row and may be empty. */
void hm__dp_share(const hm_dp *dp, size_t b, size_t *begin, size_t *rows);

/* Fails on every rank unless all ranks run the same graph, policy and
 * trajectory options, and start from the same weights; the message names
 * the first difference (or the rank that found one). */
hm_status hm__dp_check_start(hm_dp *dp, const hm_graph *g, const hm_policy *policy, const hm_fit_options *o,
                             int schedule_kind);

/* Sums the group's gradients (the device's, or zeros when this rank had no
 * rows) and loss sums over the ranks and writes the gradients back. Returns
 * the global batch-mean loss summed over the group's micro-batches and the
 * global sum of loss * rows. */
hm_status hm__dp_reduce_group(hm_dp *dp, hm_session *s, double *loss_mean, double *loss_rows);

/* Rank 0's stop decision, on every rank. */
hm_status hm__dp_agree_stop(hm_dp *dp, int *stop, hm_stop_reason *reason);

/* The evaluation sharded over the ranks: this rank evaluates its share of
 * the data, the sums are reduced. */
hm_status hm__dp_evaluate(hm_dp *dp, hm_session *s, float *loss, float *accuracy);

#endif /* HM_TRAIN_DATA_PARALLEL_H_ */
