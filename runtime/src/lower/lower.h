/*
 * Lowering: a planned graph and the buffers a session allocated for it become
 * the ops of one ABI program per step kind (SPEC.md §7). lower/ never
 * allocates device memory; the session (train/) owns every buffer named here.
 */
#ifndef HM_LOWER_LOWER_H_
#define HM_LOWER_LOWER_H_

#include "harmonics/data.h"
#include "harmonics/training.h"
#include "lower/plan.h"

/* Dynamic scalar slots of every program. */
/* SLOT_LOSS_SCALE multiplies the loss gradient of a training program: 1 in
 * one process; a data-parallel rank's share of the global batch (rows/B),
 * so that the ranks' gradients sum to the global batch mean. */
/* SLOT_STEP numbers a training batch for dropout's mask (SPEC.md §7.5):
 * update * accumulate_steps + the micro-batch's index in its update. */
enum { SLOT_LR = 0, SLOT_BC1 = 1, SLOT_BC2 = 2, SLOT_GRAD_SCALE = 3, SLOT_LOSS_SCALE = 4, SLOT_STEP = 5, N_SLOTS = 6 };
/* The dropout step of micro-batch |k| of an update whose first micro-batch
 * has step |first|, modulo 2^24 (SPEC.md 7.5: exact in a float). */
static inline double hm__dropout_step(double first, size_t k) {
  double v = first + (double)k;
  return v >= 16777216.0 ? v - 16777216.0 : v;
}

typedef enum program_kind {
  PROG_TRAIN = 0,   /* forward, loss, backward, norm, clip, optimizer (accumulate_steps == 1) */
  PROG_MICRO_FIRST, /* forward, loss, backward writing gradients */
  PROG_MICRO_ACC,   /* the same, adding to gradients */
  PROG_APPLY,       /* average, norm, clip, optimizer */
  PROG_EVAL,        /* forward and loss on the evaluation data */
  PROG_INFER,       /* forward to consumers (and loss when targets exist) */
  /* A pipeline stage before the last (train/pipeline.c) runs an update's
   * micro-batches forward, keeping each one's activations in its own slot,
   * then backward from the gradients the later stages sent. */
  PROG_STAGE_FORWARD,        /* gather and forward, as a training step computes it */
  PROG_STAGE_BACKWARD_FIRST, /* backward from the host's gradients, writing gradients */
  PROG_STAGE_BACKWARD_ACC,   /* the same, adding to gradients */
  PROG_KINDS
} program_kind;

enum { DATA_TRAIN = 0, DATA_EVAL = 1 };

typedef struct hm_node_buffers {
  hm_abi_buffer *data[2];       /* a producer's whole data set, [DATA_TRAIN] and [DATA_EVAL] */
  hm_producer_info info[2];     /* what each holds */
  hm_abi_buffer *batch;         /* producer: gathered batch; consumer: output */
  hm_abi_buffer *sum;           /* layer with several inputs: their sum */
  hm_abi_buffer *grad;          /* dLoss/dValue of a layer (batch x width) */
} hm_node_buffers;

typedef struct hm_edge_buffers {
  /* A trainable connection's parameters, gradients and optimizer state lie
   * in the session's arena (hm_param_arena); the others' parameters in
   * buffers of their own (offset 0). */
  hm_abi_operand w, b;          /* parameters */
  hm_abi_operand dw, db;        /* gradients */
  hm_abi_operand s1w, s2w, s1b, s2b; /* optimizer state (m/v, s, velocity) */
  hm_abi_buffer *z;             /* pre-activation (batch x width(dst)) */
  hm_abi_buffer *a;             /* post-activation; == z for identity */
  hm_abi_buffer *dz;            /* gradient at z; == grad(dst) for identity */
  /* Packed precisions (QUANT.md): the weights and the input entering the
   * matmul, packed each step, and their dequantized values for the
   * straight-through backward pass. Inference packs the weights once and
   * frees |w|. */
  hm_abi_buffer *wq, *xq, *wdq, *xdq;
  /* A packed convolution multiplies its input's patches (IM2COL, |cols|:
   * batch * Ho*Wo rows of C_in*KH*KW), so xq and xdq hold those rows; its
   * bias goes through GEMMs with a row of ones (|ones|, at least max(Ho*Wo,
   * batch)) via |conv_tmp| (at least max(C_out * Ho*Wo, batch * C_out)). */
  hm_abi_buffer *cols, *ones, *conv_tmp;
  hm_abi_buffer *argmax;        /* max pooling: where each maximum came from (I32, batch x width(dst)) */
  hm_abi_buffer *running;       /* batch norm: running mean then running variance ([2C]) */
} hm_edge_buffers;

/* The trainable parameters in one buffer, each tensor at the same offset in
 * the gradients' and the optimizer state's buffers, so the steps that treat
 * every parameter alike (norm, clip, optimizer) are one op each. Tensors
 * start on HM_ARENA_ALIGN-float boundaries; the padding is zero. */
#define HM_ARENA_ALIGN 16
typedef struct hm_param_arena {
  hm_abi_buffer *params, *grads;
  hm_abi_buffer *state[2];      /* first and second optimizer state; NULL when the optimizer keeps less */
  size_t floats;                /* length of each, padding included; 0: no arena */
} hm_param_arena;

typedef struct hm_step_buffers {
  hm_node_buffers *nodes;       /* one per graph node */
  hm_edge_buffers *edges;       /* one per connection */
  hm_abi_buffer *idx;           /* batch indices (int32) */
  hm_abi_buffer *stats;         /* [loss, sum of squared gradients] */
  hm_param_arena arena;
} hm_step_buffers;

/* The buffer holding a node's value for the current batch. */
hm_abi_buffer *hm__lower_value(const hm_plan *p, const hm_step_buffers *b, size_t node);
/* The ops of one step of |kind| over |batch| rows (caller frees *ops). */
hm_status hm__lower_step(const hm_plan *p, const hm_step_buffers *b, const hm_fit_options *o, program_kind kind,
                         size_t batch, hm_abi_op **ops, size_t *n_ops);

#endif /* HM_LOWER_LOWER_H_ */
