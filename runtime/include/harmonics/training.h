/*
 * Training: fit, fit_for, fit_until and inference (DESIGN.md §4;
 * seed/Training.md). An epoch is one pass over the bound training data in
 * shuffled mini-batches; a step is one optimizer update.
 */
#ifndef HARMONICS_TRAINING_H_
#define HARMONICS_TRAINING_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics/collectives.h"
#include "harmonics/graph.h"
#include "harmonics/plugins.h"
#include "harmonics/policy.h"
#include "harmonics/status.h"
#include "harmonics/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The optimizers, X(NAME, value, "name"): the enum, hm_optimizer_name and
 * the CLI's list come from here (formulas: DESIGN.md §4). */
#define HM_OPTIMIZERS(X) \
  X(SGD, 0, "sgd")       \
  X(ADAM, 1, "adam")     \
  X(RMSPROP, 2, "rmsprop") \
  X(ADAMW, 3, "adamw")   \
  X(LAMB, 4, "lamb")

#define HM_OPTIMIZER_ENUM_(name, value, text) HM_OPTIMIZER_##name = value,
typedef enum hm_optimizer { HM_OPTIMIZERS(HM_OPTIMIZER_ENUM_) HM_OPTIMIZER_COUNT = 5 } hm_optimizer;
#undef HM_OPTIMIZER_ENUM_

/* Why fit stopped, X(NAME, value, "name"); a state loaded from a checkpoint
 * says "checkpoint". */
#define HM_STOP_REASONS(X)                  \
  X(EPOCHS, 0, "epochs")                    \
  X(TIME, 1, "time")                        \
  X(PREDICATE, 2, "predicate")              \
  X(EARLY_STOP, 3, "early_stop")            \
  X(EPOCH_CALLBACK, 4, "epoch_callback")    \
  X(CHECKPOINT, 5, "checkpoint")            \
  X(CANCELLED, 6, "cancelled")

#define HM_STOP_ENUM_(name, value, text) HM_STOP_##name = value,
typedef enum hm_stop_reason { HM_STOP_REASONS(HM_STOP_ENUM_) HM_STOP_COUNT = 7 } hm_stop_reason;
#undef HM_STOP_ENUM_

/* A learning-rate schedule: fn(update_index, self) is called with update
 * index 0, 1, 2, ... and returns the learning rate of that update. |params|
 * holds a built-in schedule's numbers so schedules are plain values. */
typedef struct hm_lr_schedule {
  float (*fn)(size_t step_index, const struct hm_lr_schedule *self);
  void *user;
  float params[4];
  uint64_t iparams[2];
} hm_lr_schedule;

/* lr = max(min_lr, initial * rate^floor(step / decay_steps));
 * decay_steps == 0 gives a constant |initial| (no clamp). */
HM_API hm_lr_schedule hm_exponential_decay_schedule(float initial, float rate, size_t decay_steps, float min_lr);

/* A progress sink, called after every update with the update's step number
 * (1, 2, ...), the gradient's L2 norm before clipping, the loss and the
 * learning rate. */
typedef struct hm_progress_sink {
  void (*fn)(void *user, size_t step, float grad_norm, float loss, float lr);
  void *user;
} hm_progress_sink;

typedef struct hm_cycle_state hm_cycle_state;
struct hm_pipeline_stage; /* harmonics/pipeline.h */

/* Called after every epoch (after evaluation); return nonzero to stop. */
typedef int (*hm_epoch_fn)(void *user, const hm_cycle_state *state);

typedef struct hm_fit_options {
  size_t struct_size;
  /* ===== the seed's FitOptions ===== */
  float learning_rate;        /* 0.01 */
  hm_optimizer optimizer;     /* SGD */
  float grad_clip;            /* 0: off; else clamp every gradient element to ±clip after averaging */
  size_t early_stop_patience; /* 0: off; else stop after this many updates without improvement */
  float early_stop_delta;     /* an update improves iff norm + delta < best norm */
  float weight_decay;         /* AdamW and LAMB only */
  size_t accumulate_steps;    /* 1: gradients of k micro-batches are averaged into one update; an
                               * epoch's partial group is applied at its end */
  hm_lr_schedule lr_schedule_fp; /* .fn NULL: constant learning_rate */
  hm_progress_sink progress;  /* .fn NULL: none */
  /* ===== the loop ===== */
  size_t batch_size;          /* 32 */
  uint64_t seed;              /* 0: weight initialisation and shuffling */
  int shuffle;                /* 1: a new order every epoch */
  /* ===== optimizer hyper-parameters ===== */
  float momentum;             /* SGD: 0 (off) */
  float beta1, beta2;         /* Adam, AdamW, LAMB: 0.9, 0.999 */
  float epsilon;              /* 1e-8 */
  float rho;                  /* RMSProp decay: 0.9 */
  /* ===== where it runs ===== */
  hm_device *device;          /* an open device (borrowed), or NULL to select: */
  const char *backend;        /* "cpu", "cuda:1", ...; NULL = the registry's selection */
  unsigned threads;           /* CPU threads when this call opens the device; 0 = default */
  size_t eval_batch_size;     /* 1000 */
  hm_epoch_fn on_epoch;
  void *on_epoch_user;
  /* ===== checkpoints (harmonics/serialization.h) ===== */
  /* Continue from this state (borrowed): its weights, optimizer state, step,
   * epoch and position. The options that shape the trajectory must equal the
   * state's (hm_cycle_state_fit_options gives them); fit then trains until
   * |epochs| epochs are complete in total. Resuming on the same backend with
   * the same thread count is bit-identical to not having stopped. */
  const struct hm_cycle_state *resume;
  /* Write a checkpoint here (atomically) after every epoch, every
   * |checkpoint_every| updates when nonzero, and when training ends. */
  const char *checkpoint_path;
  size_t checkpoint_every;
  /* Asked after every update (after progress): nonzero stops the fit there
   * with stop reason "cancelled" (HM_OK; the state and the graph hold the
   * weights of that update). For a signal handler's flag or a callback
   * that failed (the C++ layer stops this way when a callback throws). */
  int (*cancel)(void *user);
  void *cancel_user;
  /* ===== data parallel (docs/distributed.md) ===== */
  /* NULL: one process. Else this process is rank |rank| of |size|: each
   * global batch of batch_size rows is split over the ranks, gradients are
   * summed in one all-reduce per update, metrics are reduced, evaluation is
   * sharded, rank 0 decides every stop, runs progress, on_epoch and the
   * predicate, and writes checkpoints. Every rank calls fit with the same
   * graph, policy, options and resume state (compared at start). Borrowed. */
  const hm_collectives *collectives;
  /* ===== pipeline (harmonics/pipeline.h) ===== */
  /* NULL: the whole graph here. Else the graph is stage |stage| of a
   * partition, trained in step with the other stages over |transport|: an
   * update's accumulate_steps micro-batches of batch_size rows flow forward
   * through every stage, then back. The last stage computes the loss and
   * decides every stop, runs progress, on_epoch and the predicate; every
   * stage checkpoints its own weights (hm_pipeline_checkpoint_path).
   * Every stage passes the same options (compared at start). Borrowed. */
  const struct hm_pipeline_stage *pipeline;
  void *reserved[1];
} hm_fit_options;

HM_API hm_fit_options hm_fit_options_default(void);

/* Trains for |epochs| passes. NULL policy = hm_make_hardware_policy().
 * On success *out_state holds the final state (caller frees with
 * hm_cycle_state_free) and the graph's weights are the trained ones.
 * HM_STATUS_DIVERGED: an update's loss or gradient norm was not finite; the
 * graph (and the checkpoint, if any) holds the weights after the last finite
 * update (docs/training.md). */
HM_API HM_MUST_USE hm_status hm_graph_fit(hm_graph *g, size_t epochs, const hm_policy *policy,
                                          const hm_fit_options *opts, hm_cycle_state **out_state);
/* Trains until |seconds| of wall time have passed (checked after each
 * update; at least one update). */
HM_API HM_MUST_USE hm_status hm_graph_fit_for(hm_graph *g, double seconds, const hm_policy *policy,
                                              const hm_fit_options *opts, hm_cycle_state **out_state);
/* Trains until pred(state, user) returns nonzero; the predicate runs after
 * every update. */
typedef int (*hm_stop_predicate)(const hm_cycle_state *state, void *user);
HM_API HM_MUST_USE hm_status hm_graph_fit_until(hm_graph *g, hm_stop_predicate pred, void *user,
                                                const hm_policy *policy, const hm_fit_options *opts,
                                                hm_cycle_state **out_state);

/* ===== Cycle state ===== */

HM_API void hm_cycle_state_free(hm_cycle_state *s);
HM_API size_t hm_cycle_state_step(const hm_cycle_state *s);   /* updates done */
HM_API size_t hm_cycle_state_epoch(const hm_cycle_state *s);  /* epochs completed */
HM_API float hm_cycle_state_loss(const hm_cycle_state *s);    /* last update's loss */
/* The mean training loss over the last completed epoch: every mini-batch's
 * mean loss weighted by its rows (so the loss of the epoch's samples as the
 * weights were when each batch ran). NaN before the first epoch ends. */
HM_API float hm_cycle_state_epoch_loss(const hm_cycle_state *s);
HM_API float hm_cycle_state_grad_norm(const hm_cycle_state *s);
HM_API float hm_cycle_state_learning_rate(const hm_cycle_state *s);
HM_API double hm_cycle_state_elapsed(const hm_cycle_state *s);       /* seconds since fit started */
HM_API double hm_cycle_state_train_seconds(const hm_cycle_state *s); /* in update steps only */
/* A pipeline stage (harmonics/pipeline.h): the part of train_seconds it
 * spent waiting for the other stages' messages (the pipeline's bubble and
 * imbalance, as this stage saw them); 0 outside a pipeline. Not kept in
 * checkpoints. */
HM_API double hm_cycle_state_wait_seconds(const hm_cycle_state *s);
HM_API size_t hm_cycle_state_samples(const hm_cycle_state *s);       /* training samples processed */
/* Held-out metrics of the last evaluation (NAN when none; accuracy only for
 * classification). */
HM_API float hm_cycle_state_eval_loss(const hm_cycle_state *s);
HM_API float hm_cycle_state_eval_accuracy(const hm_cycle_state *s);
/* Why the loop stopped, and its name (hm_stop_reason_name): "epochs", "time",
 * "predicate", "early_stop", "epoch_callback", "cancelled"; "checkpoint" for
 * a loaded state. */
HM_API hm_stop_reason hm_cycle_state_stop(const hm_cycle_state *s);
HM_API const char *hm_cycle_state_stop_reason(const hm_cycle_state *s);
/* The learned weights (during fit_until's predicate: fetched from the device
 * on first access). Borrowed from the state. */
HM_API const hm_weights *hm_cycle_state_weights(const hm_cycle_state *s);
/* Optimizer state tensors ("<param>.m", "<param>.v", ...). Borrowed. */
HM_API const hm_weights *hm_cycle_state_optimizer_state(const hm_cycle_state *s);
/* Precision chosen per connection with weights, in graph order: layer
 * "a->b", precision "f32", "bf16", "int8", "int4", "int3" and the kernel that
 * ran it ("gemm", "gemm_bf16", "int8_matmul", ..., "int3_matmul"). */
HM_API size_t hm_cycle_state_layer_count(const hm_cycle_state *s);
HM_API HM_MUST_USE hm_status hm_cycle_state_layer_precision(const hm_cycle_state *s, size_t i, const char **layer,
                                                            const char **precision, const char **kernel);
/* The device bytes of connection |i|'s weight matrix as its matmul reads it
 * (the packed blocks under a bits policy; 4 bytes a weight otherwise) and its
 * number of weights: *bytes * 8 / *count is its cost in bits per weight. */
HM_API HM_MUST_USE hm_status hm_cycle_state_layer_weight_bytes(const hm_cycle_state *s, size_t i, size_t *bytes,
                                                               size_t *count);
/* Why connection |i| runs at another precision than the policy asked (the
 * device lacks a kernel, or what auto found); "" when it runs as asked. */
HM_API const char *hm_cycle_state_layer_note(const hm_cycle_state *s, size_t i);
/* The backend that ran the fit ("cpu:0"). */
HM_API const char *hm_cycle_state_backend(const hm_cycle_state *s);
/* Peak bytes of device buffers the fit held (data, parameters, activations,
 * gradients, optimizer state; a plugin's own scratch is not counted). 0 for
 * a state loaded from a checkpoint. */
HM_API size_t hm_cycle_state_device_bytes(const hm_cycle_state *s);

/* ===== Inference and evaluation ===== */

/* What the weight matrix of one connection costs as it ran. */
typedef struct hm_connection_cost {
  size_t connection;    /* its index for hm_graph_connection */
  char precision[8];    /* "f32", "bf16", "f16", "int8", "int4", "int3" */
  size_t inputs, outputs;
  /* Device bytes of the matrix: packed QUANT.md blocks (each row padded to
   * whole 64-value blocks, one f16 scale a block) or 4 bytes a weight.
   * weight_bytes * 8 / weights is its cost in bits per weight;
   * see hm_policy_matrix_bytes for the rule. */
  size_t weight_bytes;
  /* Its weights: inputs * outputs for a dense connection, C_out * C_in /
   * groups * KH * KW for a convolution. */
  size_t weights;
} hm_connection_cost;

typedef struct hm_eval_result {
  size_t samples;
  float loss;     /* mean loss over the samples (NAN without taps/targets) */
  float accuracy; /* classification accuracy (NAN when not a classification tap) */
  /* Device memory of the weights as they ran: the matrices (packed under a
   * bits policy: QUANT.md blocks, scales included) and the f32 biases; and
   * the number of matrix weights, so weight_bytes * 8 / weight_count is the
   * cost in bits per weight. */
  size_t weight_bytes, bias_bytes, weight_count;
  /* The precision each connection ran at: "in->hidden int3/int3_matmul;
   * hidden->out int4/int4_matmul (why)", truncated with "..." if long. */
  char precision[512];
  char backend[48]; /* the device that ran it: "cpu:0", "vulkan:1" */
  /* The same per connection with weights, in graph order (the first
   * HM_POLICY_MAX_CONNECTIONS of them; n_connections counts them all). */
  size_t n_connections;
  hm_connection_cost connections[HM_POLICY_MAX_CONNECTIONS];
} hm_eval_result;

/* Runs the graph forward over its bound producers (the eval bindings when
 * |use_eval_data|, else the training bindings) with its current weights,
 * pushes consumer outputs to bound consumers, and computes loss/accuracy
 * when targets are bound. */
HM_API HM_MUST_USE hm_status hm_graph_inference(hm_graph *g, const hm_policy *policy, const hm_fit_options *opts,
                                                int use_eval_data, hm_eval_result *out);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_TRAINING_H_ */
