/*
 * A training/inference session: a graph lowered onto one device. It owns the
 * device buffers (datasets, parameters, gradients, optimizer state,
 * activations) and caches the ABI programs built from the graph: a whole
 * training step becomes one program, created once and run every step with
 * dynamic scalars (DESIGN.md §6 rule 5).
 */
#ifndef HM_TRAIN_SESSION_H_
#define HM_TRAIN_SESSION_H_

#include "data/data.h"
#include "graph/graph.h"
#include "harmonics/training.h"
#include "lower/lower.h"

typedef struct hm_session {
  hm_graph *g;
  hm_device *dev;
  int owns_device;
  hm_fit_options opts;
  hm_plan *plan;                /* read by the session and the lowering */
  hm_step_buffers bufs;         /* every device buffer of the graph */
  hm_bound_data *host[2];       /* per node: host copies of the bound data [DATA_TRAIN], [DATA_EVAL];
                                 * values kept only for the accuracy tap's targets */
  size_t train_count;           /* samples in the training data */
  size_t eval_count;            /* samples in the evaluation data (0: none) */
  size_t max_batch;             /* activation buffers hold this many rows */
  size_t train_rows;            /* gradient buffers hold this many rows (0: no training) */
  size_t device_bytes;          /* bytes of device buffers the session holds now */
  size_t peak_device_bytes;     /* ... and at most so far */
  int32_t *idx_host;
  /* Programs per kind and activation slot: two batch sizes each (full and
   * last partial), at programs[(kind * n_slots + slot) * 2 + j]. */
  struct hm_session_program {
    hm_abi_program *prog;
    size_t batch;
  } *programs;
  int with_optimizer;           /* training buffers exist */
  /* A pipeline stage keeps the activations of each micro-batch of an update
   * until its backward pass: slot k's buffers are slot_bufs[k], which share
   * everything but the activations with slot 0 (== bufs). */
  size_t n_slots;
  hm_step_buffers *slot_bufs;
} hm_session;

/* Opens a session for |g| (resolved) with |opts|. |train| uploads the
 * training data and allocates gradients and optimizer state; |eval| uploads
 * the evaluation data. */
hm_status hm__session_create(hm_graph *g, const hm_fit_options *opts, const hm_policy *policy, int train, int eval,
                             hm_session **out);
/* What else a session may be. */
typedef struct hm_session_spec {
  int train, eval;                  /* as hm__session_create */
  const hm_plan_boundaries *bounds; /* a pipeline stage's boundaries (their values and gradients pass
                                     * through the host), or NULL */
  size_t slots;                     /* sets of activation buffers (1; a stage: one per micro-batch) */
  int no_data;                      /* training buffers without training data: the gradients come from
                                     * elsewhere (a parameter server's trainer) */
} hm_session_spec;
/* A session as |spec| says; without bound data (a stage between others, or
 * |no_data|) its buffers are sized from the options. */
hm_status hm__session_open(hm_graph *g, const hm_fit_options *opts, const hm_policy *policy,
                           const hm_session_spec *spec, hm_session **out);
void hm__session_free(hm_session *s);
/* Uploads the graph's weights (initialising them from opts.seed first when
 * the graph has none) and zeroes optimizer state. */
hm_status hm__session_upload_weights(hm_session *s);
/* Writes a set of parameters with the graph's names and shapes to the device. */
hm_status hm__session_write_weights(hm_session *s, const hm_weights *w);
/* Inference: packs the weights of packed-precision connections once on the
 * device and frees their f32 copies. */
hm_status hm__session_pack_weights(hm_session *s);
/* Fills weight_bytes, bias_bytes, weight_count and connections of |out|:
 * device bytes of the weight matrices as they run (packed where packed), of
 * the biases, and the number of matrix weights, in total and per connection. */
void hm__session_weight_costs(const hm_session *s, hm_eval_result *out);
/* "a->b int3/int3_matmul; ..." with notes in parentheses (hm_eval_result). */
void hm__session_precision_summary(const hm_session *s, char *buf, size_t cap);
/* Writes optimizer state tensors ("<param>.m", ...) into the session. */
hm_status hm__session_upload_opt_state(hm_session *s, const hm_weights *state);
/* Reads parameters (and optimizer state when |opt_state| is non-NULL) back. */
hm_status hm__session_download(hm_session *s, hm_weights **params, hm_weights **opt_state);
/* The program of |kind| at batch size |batch| over activation slot |slot|
 * (built on first use). */
hm_status hm__session_program(hm_session *s, program_kind kind, size_t slot, size_t batch, hm_abi_program **out);
/* Runs |kind| over samples |indices| (batch = n) and reads the stats. */
hm_status hm__session_step(hm_session *s, program_kind kind, const int32_t *indices, size_t n,
                           const double scalars[N_SLOTS], float *loss, float *sumsq);
/* The same over activation slot |slot|; |indices| may be NULL (no gather). */
hm_status hm__session_step_slot(hm_session *s, program_kind kind, size_t slot, const int32_t *indices, size_t n,
                                const double scalars[N_SLOTS], float *loss, float *sumsq);
/* The buffer holding a node's value for the current batch. */
static inline hm_abi_buffer *hm__session_value(const hm_session *s, size_t node) {
  return hm__lower_value(s->plan, &s->bufs, node);
}
/* The same in activation slot |slot|. */
static inline hm_abi_buffer *hm__session_slot_value(const hm_session *s, size_t slot, size_t node) {
  return hm__lower_value(s->plan, &s->slot_bufs[slot], node);
}
/* Evaluation batches of a pipeline stage: called before each batch runs
 * (to write the boundary values it receives) and after (to send its own). */
typedef hm_status (*hm_eval_batch_hook)(void *ctx, int after, size_t batch_index, size_t rows);
/* Evaluates over the evaluation data (or the training data when !use_eval):
 * mean loss and accuracy; pushes consumer outputs when |push| is set. */
hm_status hm__session_evaluate(hm_session *s, int use_eval, int push, hm_eval_result *out);
/* The sums of an evaluation over samples [begin, end) (a data-parallel
 * rank's shard): loss * rows summed over batches, and correct predictions. */
typedef struct hm_eval_sums {
  int has_loss, has_accuracy;
  double loss_sum;
  size_t correct;
} hm_eval_sums;
hm_status hm__session_evaluate_range(hm_session *s, int use_eval, int push, size_t begin, size_t end,
                                     hm_eval_sums *out);
/* evaluate_range with |hook| around every batch (NULL: none). */
hm_status hm__session_evaluate_hooked(hm_session *s, int use_eval, int push, size_t begin, size_t end,
                                      hm_eval_batch_hook hook, void *ctx, hm_eval_sums *out);
/* The gradient arena: every trainable connection's dW then db, in graph
 * order, as one array of hm__session_grad_count floats; read from and
 * written to the device buffers the micro and apply programs use. */
size_t hm__session_grad_count(const hm_session *s);
hm_status hm__session_grads_read(hm_session *s, float *arena);
hm_status hm__session_grads_write(hm_session *s, const float *arena);

#endif /* HM_TRAIN_SESSION_H_ */
