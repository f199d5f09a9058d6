/* The cycle state's fields, shared by the training loop and checkpoints. */
#ifndef HM_TRAIN_CYCLE_STATE_H_
#define HM_TRAIN_CYCLE_STATE_H_

#include "harmonics/training.h"
#include "lower/plan.h"

/* Fetches the newest parameters and optimizer state (new sets, caller frees). */
typedef hm_status (*hm_weights_fetch_fn)(void *ctx, hm_weights **params, hm_weights **opt_state);

struct hm_cycle_state {
  size_t step, epoch, samples;
  float loss, grad_norm, lr;
  /* The mean training loss of the last completed epoch (NaN before one), and
   * the running sum (loss x rows) and rows of the current epoch. */
  float epoch_loss;
  double epoch_loss_sum;
  size_t epoch_loss_rows;
  double start_time, elapsed, train_seconds;
  double wait_seconds;      /* a pipeline stage: of train_seconds, waiting for the other stages */
  float eval_loss, eval_accuracy;
  hm_stop_reason stop_reason;
  hm_weights *weights, *opt_state;
  int weights_stale;        /* the device holds newer weights than |weights| */
  /* While fit runs the device holds the weights: the loop installs a fetch
   * so that reading the state downloads them on demand (never the other way). */
  hm_weights_fetch_fn fetch;
  void *fetch_ctx;
  char backend[48];
  size_t device_bytes;      /* peak bytes of the session's device buffers */
  size_t n_layers;
  char **layer_names, **precisions, **kernels, **notes;
  size_t *matrix_bytes, *matrix_weights; /* per connection, as its matmul reads it */
  /* What a checkpoint needs to resume bit-identically. */
  int has_options;
  hm_fit_options opts;      /* pointers (device, backend, callbacks, resume) cleared */
  int schedule_kind;        /* 0 none, 1 exponential decay, 2 a user callback */
  hm_policy policy;
  size_t position;          /* samples consumed in the current epoch */
  float best_norm;          /* early stopping */
  size_t stall;
  uint32_t graph_fingerprint;
};

hm_status hm__cycle_state_create(hm_cycle_state **out);
/* Records the backend and the precision chosen per connection. */
hm_status hm__cycle_state_describe(hm_cycle_state *st, const hm_plan *plan, hm_device *dev);
/* Installs (or, with NULL, removes) the fetch of the live weights. */
void hm__cycle_state_go_live(hm_cycle_state *st, hm_weights_fetch_fn fetch, void *ctx);
/* Records the options and policy of a fit (for checkpoints). */
void hm__cycle_state_set_options(hm_cycle_state *st, const hm_fit_options *o, const hm_policy *p, int schedule_kind);
/* Decodes a whole .hck file image (checkpoint.c). */
hm_status hm__cycle_state_decode(const unsigned char *data, size_t len, const char *what, hm_cycle_state **out);
/* Checks that |r| can resume training |g| with |o| and |policy| — the
 * options that shape the trajectory, the policy and the graph are those it
 * was trained with — and gives |g| its weights (fit and the trainer). */
hm_status hm__cycle_state_resume_into(const hm_cycle_state *r, hm_graph *g, const hm_fit_options *o,
                                      const hm_policy *policy);
/* Fetches weights and optimizer state through the live fetch if stale. */
hm_status hm__cycle_state_sync(hm_cycle_state *st);

#endif /* HM_TRAIN_CYCLE_STATE_H_ */
