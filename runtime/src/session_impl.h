/*
 * A training/inference session: a graph lowered onto one device. It owns the
 * device buffers (datasets, parameters, gradients, optimizer state,
 * activations) and caches the ABI programs built from the graph: a whole
 * training step becomes one program, created once and run every step with
 * dynamic scalars (DESIGN.md §6 rule 5).
 */
#ifndef HM_SESSION_IMPL_H_
#define HM_SESSION_IMPL_H_

#include "device_impl.h"
#include "graph_impl.h"
#include "harmonics/training.h"
#include "precision.h"

/* Dynamic scalar slots of every program. */
enum { SLOT_LR = 0, SLOT_BC1 = 1, SLOT_BC2 = 2, SLOT_GRAD_SCALE = 3, N_SLOTS = 4 };

typedef enum program_kind {
  PROG_TRAIN = 0,   /* forward, loss, backward, norm, clip, optimizer (accumulate_steps == 1) */
  PROG_MICRO_FIRST, /* forward, loss, backward writing gradients */
  PROG_MICRO_ACC,   /* the same, adding to gradients */
  PROG_APPLY,       /* average, norm, clip, optimizer */
  PROG_EVAL,        /* forward and loss on the evaluation data */
  PROG_INFER,       /* forward to consumers (and loss when targets exist) */
  PROG_KINDS
} program_kind;

typedef struct node_state {
  size_t width;                 /* resolved */
  hm_bound_data train, eval;    /* host copies of bound data (values freed after upload, except eval targets) */
  hm_abi_buffer *train_data;    /* the whole training set of a producer */
  hm_abi_buffer *eval_data;
  hm_abi_buffer *batch;         /* producer: gathered batch; consumer: output */
  hm_abi_buffer *sum;           /* layer with several inputs: their sum */
  hm_abi_buffer *grad;          /* dLoss/dValue of a layer (batch x width) */
  int needs_grad;               /* the layer influences a loss */
  long single_input;            /* the only edge into this layer, or -1 */
} node_state;

typedef struct edge_state {
  int trainable;                /* has parameters updated by the optimizer */
  hm_abi_buffer *w, *b;         /* parameters */
  hm_abi_buffer *dw, *db;       /* gradients */
  hm_abi_buffer *s1w, *s2w, *s1b, *s2b; /* optimizer state (m/v, s, velocity) */
  hm_abi_buffer *z;             /* pre-activation (batch x width(dst)) */
  hm_abi_buffer *a;             /* post-activation; == z for identity */
  hm_abi_buffer *dz;            /* gradient at z; == grad(dst) for identity */
  /* Packed precisions (QUANT.md): the weights and the input entering the
   * matmul, packed each step, and their dequantized values for the
   * straight-through backward pass. Inference packs the weights once and
   * frees |w|. */
  hm_abi_buffer *wq, *xq, *wdq, *xdq;
} edge_state;

typedef struct hm_session {
  hm_graph *g;
  hm_device *dev;
  int owns_device;
  hm_fit_options opts;
  size_t *order;                /* layers in topological order */
  size_t n_order;
  node_state *nodes;
  edge_state *edges;
  size_t train_count;           /* samples in the training data */
  size_t eval_count;            /* samples in the evaluation data (0: none) */
  size_t max_batch;             /* activation buffers hold this many rows */
  hm_abi_buffer *idx;           /* batch indices (max_batch int32) */
  hm_abi_buffer *stats;         /* [loss, sum of squared gradients] */
  int32_t *idx_host;
  struct {
    hm_abi_program *prog;
    size_t batch;
  } programs[PROG_KINDS][2];    /* per kind: two batch sizes (full and last partial) */
  long accuracy_tap;            /* a cross-entropy tap to score accuracy, or -1 */
  int with_optimizer;           /* training buffers exist */
  hm_edge_precision *prec;      /* per edge: the precision plan */
} hm_session;

/* Opens a session for |g| (resolved) with |opts|. |train| uploads the
 * training data and allocates gradients and optimizer state; |eval| uploads
 * the evaluation data. */
hm_status hm__session_create(hm_graph *g, const hm_fit_options *opts, const hm_policy *policy, int train, int eval,
                             hm_session **out);
void hm__session_free(hm_session *s);
/* Uploads the graph's weights (initialising them from opts.seed first when
 * the graph has none) and zeroes optimizer state. */
hm_status hm__session_upload_weights(hm_session *s);
/* Inference: packs the weights of packed-precision connections once on the
 * device and frees their f32 copies. */
hm_status hm__session_pack_weights(hm_session *s);
/* Device bytes of the weight matrices as they run (packed where packed), of
 * the biases, and the number of matrix weights. */
void hm__session_weight_bytes(const hm_session *s, size_t *matrix_bytes, size_t *bias_bytes, size_t *weights);
/* "a->b int3/int3_matmul; ..." with notes in parentheses (hm_eval_result). */
void hm__session_precision_summary(const hm_session *s, char *buf, size_t cap);
/* Writes optimizer state tensors ("<param>.m", ...) into the session. */
hm_status hm__session_upload_opt_state(hm_session *s, const hm_weights *state);
/* Reads parameters (and optimizer state when |opt_state| is non-NULL) back. */
hm_status hm__session_download(hm_session *s, hm_weights **params, hm_weights **opt_state);
/* The program of |kind| at batch size |batch| (built on first use). */
hm_status hm__session_program(hm_session *s, program_kind kind, size_t batch, hm_abi_program **out);
/* Runs |kind| over samples |indices| (batch = n) and reads the stats. */
hm_status hm__session_step(hm_session *s, program_kind kind, const int32_t *indices, size_t n,
                           const double scalars[N_SLOTS], float *loss, float *sumsq);
/* The buffer holding a node's value for the current batch. */
hm_abi_buffer *hm__session_value(hm_session *s, size_t node);
/* Evaluates over the evaluation data (or the training data when !use_eval):
 * mean loss and accuracy; pushes consumer outputs when |push| is set. */
hm_status hm__session_evaluate(hm_session *s, int use_eval, int push, hm_eval_result *out);

#endif /* HM_SESSION_IMPL_H_ */
