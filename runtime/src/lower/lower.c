/*
 * Lowering: a graph becomes ABI programs (SPEC.md §7 ops). One training step
 * — gather the batch, forward, losses, backward, gradient norm, clip,
 * optimizer — is one program, so a plugin may fuse it or capture it whole.
 *
 * Forward, for each layer L in topological order and each edge e = S -> L:
 *   z_e = value(S) · W_eᵀ + b_e;  a_e = f_e(z_e);  value(L) = Σ_e a_e.
 * Backward, for each layer in reverse order, with g_L = dLoss/dvalue(L):
 *   dz_e = g_L ⊙ f_e'(z_e);  dW_e (+)= dz_eᵀ · value(S);  db_e (+)= Σ_rows dz_e;
 *   g_S (+)= dz_e · W_e  when S is a layer that influences a loss.
 * The first contribution to a gradient overwrites it (beta = 0), later ones
 * add (beta = 1), so no buffer needs clearing.
 *
 * A convolution, pooling or dropout connection replaces the matmul and bias
 * with its op (SPEC.md §7.5) and its backward ops; the activation, the sum
 * and the gradient bookkeeping are the same. Dropout is the identity in
 * evaluation and inference programs. A convolution at a packed width is a
 * matmul of its input's patches (IM2COL) with W as [C_out, C_in·KH·KW], each
 * quantized by rows as a dense connection's input and weights are.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lower/lower.h"

#include "harmonics/names.h"

typedef struct op_list {
  hm_abi_op *ops;
  size_t n, cap;
  int failed;
} op_list;

static hm_abi_op *push(op_list *l, uint32_t code) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    hm_abi_op *ops = hm__realloc(l->ops, cap * sizeof *ops);
    if (!ops) {
      l->failed = 1;
      return NULL;
    }
    l->ops = ops;
    l->cap = cap;
  }
  hm_abi_op *op = &l->ops[l->n++];
  *op = hm_op_init(code);
  return op;
}

/* What every emitter reads. */
typedef struct lowering {
  const hm_plan *p;
  const hm_graph *g;
  const hm_step_buffers *b;
  const hm_fit_options *o;
} lowering;

#define PUSH(var, list, code)              \
  hm_abi_op *var = push((list), (code));   \
  if (!var) return
#define OPD(buf) ((hm_abi_operand){(buf), 0})

hm_abi_buffer *hm__lower_value(const hm_plan *p, const hm_step_buffers *b, size_t node) {
  const hm_graph *g = p->g;
  if (g->nodes[node].kind != HM_NODE_LAYER) return b->nodes[node].batch;
  long e = p->nodes[node].single_input;
  return e >= 0 ? b->edges[e].a : b->nodes[node].sum;
}

static hm_abi_buffer *value(const lowering *s, size_t node) { return hm__lower_value(s->p, s->b, node); }

/* Programs whose backward pass follows (here or in a stage's backward program). */
static int is_training(program_kind k) {
  return k == PROG_TRAIN || k == PROG_MICRO_FIRST || k == PROG_MICRO_ACC || k == PROG_STAGE_FORWARD;
}

static int is_stage_backward(program_kind k) { return k == PROG_STAGE_BACKWARD_FIRST || k == PROG_STAGE_BACKWARD_ACC; }

static void emit_gathers(const lowering *s, op_list *l, program_kind kind, size_t b, hm_status *st) {
  const hm_graph *g = s->g;
  int eval = kind == PROG_EVAL;
  for (size_t i = 0; i < g->n_nodes && *st == HM_OK; i++) {
    if (g->nodes[i].kind != HM_NODE_PRODUCER || s->p->nodes[i].boundary_in) continue; /* the host writes a boundary */
    const hm_node_buffers *nb = &s->b->nodes[i];
    hm_abi_buffer *src = nb->data[eval];
    const hm_producer_info *d = &nb->info[eval];
    int feeds = s->p->nodes[i].feeds, target = s->p->nodes[i].is_target;
    if (!src) {
      if (feeds)
        *st = hm__fail(HM_STATUS_FAILED_PRECONDITION, "producer '%s' has no %s data bound", g->nodes[i].name,
                       eval ? "evaluation" : "input");
      continue;
    }
    if (!feeds && !target) continue;
    hm_abi_op *op = push(l, HM_ABI_OP_GATHER_ROWS);
    if (!op) return;
    op->dtype_in = d->dtype;
    op->dtype_out = d->dtype == HM_ABI_DTYPE_I32 ? HM_ABI_DTYPE_I32 : HM_ABI_DTYPE_F32;
    op->dtype_acc = op->dtype_out;
    op->dims[0] = b;
    op->dims[1] = d->width;
    op->dims[2] = d->count;
    op->params[0] = d->dtype == HM_ABI_DTYPE_U8 ? d->scale : 1.0f;
    op->in[0] = OPD(src);
    op->in[1] = OPD(s->b->idx);
    op->out[0] = OPD(nb->batch);
  }
}

/* One QUANTIZE (f32 rows -> packed) or DEQUANTIZE (packed -> f32 rows) of
 * a |rows| x |k| matrix at packed dtype |q|. */
static void emit_packing(op_list *l, uint32_t code, uint32_t q, size_t rows, size_t k, hm_abi_operand in,
                         hm_abi_operand out) {
  PUSH(op, l, code);
  int quantize = code == HM_ABI_OP_QUANTIZE;
  op->dtype_in = quantize ? HM_ABI_DTYPE_F32 : q;
  op->dtype_out = quantize ? q : HM_ABI_DTYPE_F32;
  op->dims[0] = rows;
  op->dims[1] = k;
  op->in[0] = in;
  op->out[0] = out;
}

/* The matmul z = x . W^T of edge |e|: f32 (or 16-bit inputs) GEMM, or at a
 * packed width: quantize W (unless packed once for inference) and x, the
 * integer matmul, and for training the dequantized W and x the
 * straight-through backward pass multiplies with. */
static void emit_matmul(const lowering *s, op_list *l, program_kind kind, size_t e, size_t b) {
  const hm_edge *ed = &s->g->edges[e];
  const hm_edge_buffers *es = &s->b->edges[e];
  size_t n = s->p->nodes[ed->dst].width, k = s->p->nodes[ed->src].width;
  uint32_t q = s->p->edges[e].prec.dtype;
  hm_abi_buffer *x = value(s, ed->src);
  if (!hm__precision_is_packed(q)) {
    PUSH(mm, l, HM_ABI_OP_GEMM);
    mm->dtype_in = q;
    mm->flags = HM_ABI_OP_FLAG_TRANS_B;
    mm->dims[0] = b;
    mm->dims[1] = n;
    mm->dims[2] = k;
    mm->params[0] = 1.0f;
    mm->params[1] = 0.0f;
    mm->in[0] = OPD(x);
    mm->in[1] = es->w;
    mm->out[0] = OPD(es->z);
    return;
  }
  hm_abi_operand srcs[2] = {es->w, OPD(x)};
  hm_abi_buffer *packed[2] = {es->wq, es->xq};
  size_t rows[2] = {n, b};
  for (int i = 0; i < 2; i++) /* weights without a buffer were packed once */
    if (srcs[i].buffer) emit_packing(l, HM_ABI_OP_QUANTIZE, q, rows[i], k, srcs[i], OPD(packed[i]));
  PUSH(mm, l, hm__precision_gemm_op(q));
  mm->dtype_in = q;
  mm->dtype_acc = HM_ABI_DTYPE_I32;
  mm->dtype_out = HM_ABI_DTYPE_F32;
  mm->dims[0] = b;
  mm->dims[1] = n;
  mm->dims[2] = k;
  mm->in[0] = OPD(es->xq);
  mm->in[1] = OPD(es->wq);
  mm->out[0] = OPD(es->z);
  if (!is_training(kind) || !s->p->edges[e].trainable) return;
  hm_abi_buffer *deq[2] = {es->wdq, es->xdq};
  for (int i = 0; i < 2; i++) emit_packing(l, HM_ABI_OP_DEQUANTIZE, q, rows[i], k, OPD(packed[i]), OPD(deq[i]));
}

/* The window geometry of edge |e| (convolution or pooling) over |b| images. */
static void window_op(const lowering *s, hm_abi_op *op, size_t e, size_t b) {
  const hm_edge *ed = &s->g->edges[e];
  const hm_node *src = &s->g->nodes[ed->src];
  const hm_connection_spec *c = &ed->spec;
  int pool = c->kind != HM_CONNECTION_CONV2D;
  op->dims[0] = b;
  op->dims[1] = pool ? src->shape[0] : HM_ABI_PACK2(src->shape[0], c->out_channels);
  op->dims[2] = HM_ABI_PACK2(src->shape[1], src->shape[2]);
  op->dims[3] = pool ? 0 : c->groups;
  float p[8] = {(float)c->kernel[0], (float)c->kernel[1], (float)c->stride[0], (float)c->stride[1],
                (float)c->padding[0], (float)c->padding[1], pool ? 0.0f : (float)c->dilation[0],
                pool ? 0.0f : (float)c->dilation[1]};
  memcpy(op->params, p, sizeof p);
  if (pool) op->variant = c->kind == HM_CONNECTION_MAX_POOL ? HM_ABI_POOL_MAX : HM_ABI_POOL_AVG;
}

/* Dropout of |n| values: the mask of this batch (SLOT_STEP) and connection. */
static void dropout_op(const lowering *s, hm_abi_op *op, size_t e, size_t n) {
  float rate = s->g->edges[e].spec.rate;
  op->dims[0] = n;
  op->dims[1] = s->o->seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(e + 1)); /* each connection its own mask */
  op->params[0] = rate;
  op->params[2] = 1.0f / (1.0f - rate);
  op->dyn[1] = SLOT_STEP;
}

/* Batch norm's [N, C, S] view of a source (S = H*W; a flat source is [N, width, 1]). */
static void norm_dims(const lowering *s, hm_abi_op *op, size_t e, size_t b) {
  const hm_edge *ed = &s->g->edges[e];
  const hm_node *src = &s->g->nodes[ed->src];
  size_t c = hm__norm_channels(src);
  op->dims[0] = b;
  if (ed->spec.kind == HM_CONNECTION_LAYER_NORM) {
    op->dims[1] = src->width;
    return;
  }
  op->dims[1] = c;
  op->dims[2] = src->width / c;
}

/* z = op(x) of a connection that is not dense. */
static void emit_window_forward(const lowering *s, op_list *l, program_kind kind, size_t e, size_t b) {
  const hm_edge *ed = &s->g->edges[e];
  const hm_edge_buffers *es = &s->b->edges[e];
  hm_abi_buffer *x = value(s, ed->src);
  size_t n = b * s->p->nodes[ed->dst].width;
  switch (ed->spec.kind) {
    case HM_CONNECTION_CONV2D: {
      PUSH(op, l, HM_ABI_OP_CONV2D);
      window_op(s, op, e, b);
      op->in[0] = OPD(x);
      op->in[1] = es->w;
      op->in[2] = es->b;
      op->out[0] = OPD(es->z);
      return;
    }
    case HM_CONNECTION_MAX_POOL:
    case HM_CONNECTION_AVG_POOL: {
      PUSH(op, l, HM_ABI_OP_POOL2D);
      window_op(s, op, e, b);
      op->in[0] = OPD(x);
      op->out[0] = OPD(es->z);
      if (is_training(kind) && s->p->edges[e].backprop) op->out[1] = OPD(es->argmax);
      return;
    }
    case HM_CONNECTION_BATCH_NORM:
    case HM_CONNECTION_LAYER_NORM: {
      int bn = ed->spec.kind == HM_CONNECTION_BATCH_NORM, train = is_training(kind);
      PUSH(op, l, bn ? HM_ABI_OP_BATCH_NORM : HM_ABI_OP_LAYER_NORM);
      norm_dims(s, op, e, b);
      op->params[0] = ed->spec.eps;
      op->params[1] = ed->spec.momentum;
      op->in[0] = OPD(x);
      op->in[1] = es->w;
      op->in[2] = es->b;
      op->out[0] = OPD(es->z);
      if (bn) op->out[1] = OPD(es->running); /* updated while training, read in evaluation and inference */
      if (bn && !train) op->variant = HM_ABI_NORM_EVAL;
      return;
    }
    default: {
      if (!is_training(kind)) { /* evaluation and inference keep every value */
        PUSH(cp, l, HM_ABI_OP_COPY);
        cp->dims[0] = n;
        cp->in[0] = OPD(x);
        cp->out[0] = OPD(es->z);
        return;
      }
      PUSH(op, l, HM_ABI_OP_DROPOUT);
      dropout_op(s, op, e, n);
      op->in[0] = OPD(x);
      op->out[0] = OPD(es->z);
      return;
    }
  }
}

/* dX (+)= the transposed convolution of dz with |w| (the f32 weights, or the
 * dequantized ones of a packed convolution). */
static void emit_conv_bwd_data(const lowering *s, op_list *l, size_t e, size_t b, hm_abi_operand w, char *grad_init) {
  size_t S = s->g->edges[e].src;
  PUSH(dx, l, HM_ABI_OP_CONV2D_BWD_DATA);
  window_op(s, dx, e, b);
  dx->flags = grad_init[S] ? HM_ABI_OP_FLAG_ACCUMULATE : 0;
  dx->in[0] = OPD(s->b->edges[e].dz);
  dx->in[1] = w;
  dx->out[0] = OPD(s->b->nodes[S].grad);
  grad_init[S] = 1;
}

/* A convolution at packed width q, per image n: z_n [C_out, P] = Ŵq · Pq_nᵀ,
 * with P = IM2COL(x) quantized by rows (QUANT.md Q7, so the integer matmul
 * writes [N, C, H, W] directly); the bias through two rank-1 GEMMs with a
 * row of ones; for training, the dequantized Ŵ and patches the backward
 * pass multiplies with (straight-through, as for a dense connection). */
static void emit_conv_packed(const lowering *s, op_list *l, program_kind kind, size_t e, size_t b) {
  const hm_edge_buffers *es = &s->b->edges[e];
  size_t rows, k, P;
  hm__edge_matrix(s->g, e, &rows, &k, &P);
  uint32_t q = s->p->edges[e].prec.dtype;
  PUSH(im, l, HM_ABI_OP_IM2COL);
  window_op(s, im, e, b);
  im->in[0] = OPD(value(s, s->g->edges[e].src));
  im->out[0] = OPD(es->cols);
  /* Each image's packed patches start 4-byte aligned: one QUANTIZE for
   * all when that is where they fall anyway, else one per image. */
  size_t stride = hm__packed_stride(q, P, k), parts = stride == hm__packed_bytes(q, P, k) ? 1 : b;
  for (size_t i = 0; i < parts; i++)
    emit_packing(l, HM_ABI_OP_QUANTIZE, q, b * P / parts, k, (hm_abi_operand){es->cols, i * P * k * 4},
                 (hm_abi_operand){es->xq, i * stride});
  if (es->w.buffer) emit_packing(l, HM_ABI_OP_QUANTIZE, q, rows, k, es->w, OPD(es->wq)); /* else packed once */
  for (size_t n = 0; n < b; n++) {
    PUSH(mm, l, hm__precision_gemm_op(q));
    mm->dtype_in = q;
    mm->dtype_acc = HM_ABI_DTYPE_I32;
    mm->dtype_out = HM_ABI_DTYPE_F32;
    mm->dims[0] = rows;
    mm->dims[1] = P;
    mm->dims[2] = k;
    mm->in[0] = OPD(es->wq);
    mm->in[1] = (hm_abi_operand){es->xq, n * stride};
    mm->out[0] = (hm_abi_operand){es->z, n * rows * P * 4};
  }
  if (es->b.buffer) {
    PUSH(ones, l, HM_ABI_OP_FILL);
    ones->dims[0] = P > b ? P : b;
    ones->params[0] = 1.0f;
    ones->out[0] = OPD(es->ones);
    PUSH(plane, l, HM_ABI_OP_GEMM); /* [C_out, P] = bias · ones */
    plane->dims[0] = rows;
    plane->dims[1] = P;
    plane->dims[2] = 1;
    plane->params[0] = 1.0f;
    plane->in[0] = es->b;
    plane->in[1] = OPD(es->ones);
    plane->out[0] = OPD(es->conv_tmp);
    PUSH(add, l, HM_ABI_OP_GEMM); /* z [b, C_out·P] += ones · plane */
    add->dims[0] = b;
    add->dims[1] = rows * P;
    add->dims[2] = 1;
    add->params[0] = 1.0f;
    add->params[1] = 1.0f;
    add->in[0] = OPD(es->ones);
    add->in[1] = OPD(es->conv_tmp);
    add->out[0] = OPD(es->z);
  }
  if (!is_training(kind) || !s->p->edges[e].trainable) return;
  for (size_t i = 0; i < parts; i++)
    emit_packing(l, HM_ABI_OP_DEQUANTIZE, q, b * P / parts, k, (hm_abi_operand){es->xq, i * stride},
                 (hm_abi_operand){es->xdq, i * P * k * 4});
  emit_packing(l, HM_ABI_OP_DEQUANTIZE, q, rows, k, OPD(es->wq), OPD(es->wdq));
}

/* Its backward pass: dW (+)= Σ_n dz_n · P̂_n, db (+)= Σ dz over images and
 * positions, dX (+)= the transposed convolution of dz with Ŵ (which is
 * col2im(dzᵀ · Ŵ), the straight-through gradient of the patches). */
static void emit_conv_packed_backward(const lowering *s, op_list *l, size_t e, size_t b, int accumulate, int to_src,
                                      char *grad_init) {
  const hm_edge_buffers *es = &s->b->edges[e];
  size_t rows, k, P;
  hm__edge_matrix(s->g, e, &rows, &k, &P);
  if (s->p->edges[e].trainable) {
    for (size_t n = 0; n < b; n++) {
      PUSH(dw, l, HM_ABI_OP_GEMM);
      dw->dims[0] = rows;
      dw->dims[1] = k;
      dw->dims[2] = P;
      dw->params[0] = 1.0f;
      dw->params[1] = n > 0 || accumulate ? 1.0f : 0.0f;
      dw->in[0] = (hm_abi_operand){es->dz, n * rows * P * 4};
      dw->in[1] = (hm_abi_operand){es->xdq, n * P * k * 4};
      dw->out[0] = es->dw;
    }
    if (es->db.buffer) {
      PUSH(planes, l, HM_ABI_OP_REDUCE_COLS); /* per image and channel */
      planes->dims[0] = b * rows;
      planes->dims[1] = P;
      planes->params[0] = 1.0f;
      planes->in[0] = OPD(es->dz);
      planes->out[0] = OPD(es->conv_tmp);
      PUSH(db, l, HM_ABI_OP_REDUCE_ROWS);
      db->dims[0] = b;
      db->dims[1] = rows;
      db->params[0] = 1.0f;
      db->params[1] = accumulate ? 1.0f : 0.0f;
      db->in[0] = OPD(es->conv_tmp);
      db->out[0] = es->db;
    }
  }
  if (to_src) emit_conv_bwd_data(s, l, e, b, OPD(es->wdq), grad_init);
}

static void emit_forward(const lowering *s, op_list *l, program_kind kind, size_t b) {
  const hm_graph *g = s->g;
  for (size_t k = 0; k < s->p->n_order; k++) {
    size_t L = s->p->order[k];
    size_t wl = s->p->nodes[L].width;
    int first = 1;
    for (size_t e = 0; e < g->n_edges; e++) {
      const hm_edge *ed = &g->edges[e];
      if (ed->dst != L) continue;
      const hm_edge_buffers *es = &s->b->edges[e];
      if (ed->spec.kind == HM_CONNECTION_CONV2D && hm__precision_is_packed(s->p->edges[e].prec.dtype)) {
        emit_conv_packed(s, l, kind, e, b);
      } else if (ed->spec.kind != HM_CONNECTION_DENSE) {
        emit_window_forward(s, l, kind, e, b);
      } else {
        emit_matmul(s, l, kind, e, b);
        if (l->failed) return;
        PUSH(bias, l, HM_ABI_OP_BIAS_ADD);
        bias->dims[0] = b;
        bias->dims[1] = wl;
        bias->in[0] = es->b;
        bias->out[0] = OPD(es->z);
      }
      if (l->failed) return;
      if (ed->activation != HM_ABI_ACT_IDENTITY) {
        PUSH(act, l, HM_ABI_OP_ACT_FORWARD);
        act->variant = ed->activation;
        act->dims[0] = b;
        act->dims[1] = wl;
        act->params[0] = ed->activation == HM_ABI_ACT_LEAKY_RELU ? 0.01f : ed->activation == HM_ABI_ACT_ELU ? 1.0f : 0.0f;
        act->in[0] = OPD(es->z);
        act->out[0] = OPD(es->a);
      }
      if (s->p->nodes[L].single_input < 0) {
        PUSH(sum, l, first ? HM_ABI_OP_COPY : HM_ABI_OP_AXPY);
        sum->dims[0] = b * wl;
        sum->params[0] = 1.0f;
        sum->in[0] = OPD(es->a);
        sum->out[0] = OPD(s->b->nodes[L].sum);
      }
      first = 0;
    }
  }
}

static void emit_consumers(const lowering *s, op_list *l, size_t b) {
  const hm_graph *g = s->g;
  for (size_t e = 0; e < g->n_edges; e++) {
    const hm_edge *ed = &g->edges[e];
    if (g->nodes[ed->dst].kind != HM_NODE_CONSUMER || s->p->nodes[ed->dst].boundary_out) continue;
    PUSH(act, l, HM_ABI_OP_ACT_FORWARD);
    act->variant = ed->activation;
    act->dims[0] = b;
    act->dims[1] = s->p->nodes[ed->dst].width;
    act->params[0] = ed->activation == HM_ABI_ACT_LEAKY_RELU ? 0.01f : ed->activation == HM_ABI_ACT_ELU ? 1.0f : 0.0f;
    act->in[0] = OPD(value(s, ed->src));
    act->out[0] = OPD(s->b->nodes[ed->dst].batch);
  }
}

/* Losses; |grads| sets each tapped layer's gradient. Marks initialised grads. */
static void emit_losses(const lowering *s, op_list *l, size_t b, int grads, char *grad_init) {
  const hm_graph *g = s->g;
  for (size_t t = 0; t < g->n_taps; t++) {
    const hm_tap *tap = &g->taps[t];
    const hm_node_buffers *target = &s->b->nodes[tap->target];
    int ci = (target->data[DATA_TRAIN] ? target->info[DATA_TRAIN].dtype : target->info[DATA_EVAL].dtype) == HM_ABI_DTYPE_I32;
    PUSH(op, l, HM_ABI_OP_LOSS);
    op->variant = tap->loss;
    op->flags = ci ? HM_ABI_OP_FLAG_CLASS_INDEX : 0;
    op->dims[0] = b;
    op->dims[1] = s->p->nodes[tap->layer].width;
    op->params[0] = 1.0f;                 /* gradient scale */
    op->params[1] = 1.0f;                 /* huber delta */
    op->params[2] = t == 0 ? 0.0f : 1.0f; /* taps sum their losses */
    op->params[3] = grad_init[tap->layer] ? 1.0f : 0.0f;
    op->in[0] = OPD(value(s, tap->layer));
    op->in[1] = OPD(target->batch);
    op->out[0] = OPD(s->b->stats);
    if (grads) {
      op->dyn[0] = SLOT_LOSS_SCALE;
      op->out[1] = OPD(s->b->nodes[tap->layer].grad);
      grad_init[tap->layer] = 1;
    }
  }
}

/* The backward ops of a connection that is not dense, from dz. */
static void emit_window_backward(const lowering *s, op_list *l, size_t e, size_t b, int accumulate, char *grad_init) {
  const hm_graph *g = s->g;
  const hm_edge *ed = &g->edges[e];
  const hm_edge_buffers *es = &s->b->edges[e];
  size_t S = ed->src;
  int to_src = (g->nodes[S].kind == HM_NODE_LAYER || s->p->nodes[S].boundary_in) && s->p->nodes[S].needs_grad;
  switch (ed->spec.kind) {
    case HM_CONNECTION_CONV2D:
      if (hm__precision_is_packed(s->p->edges[e].prec.dtype)) {
        emit_conv_packed_backward(s, l, e, b, accumulate, to_src, grad_init);
        return;
      }
      if (s->p->edges[e].trainable) {
        PUSH(dw, l, HM_ABI_OP_CONV2D_BWD_FILTER);
        window_op(s, dw, e, b);
        dw->flags = accumulate ? HM_ABI_OP_FLAG_ACCUMULATE : 0;
        dw->in[0] = OPD(value(s, S));
        dw->in[1] = OPD(es->dz);
        dw->out[0] = es->dw;
        dw->out[1] = es->db;
      }
      if (to_src) emit_conv_bwd_data(s, l, e, b, es->w, grad_init);
      return;
    case HM_CONNECTION_BATCH_NORM:
    case HM_CONNECTION_LAYER_NORM: {
      int bn = ed->spec.kind == HM_CONNECTION_BATCH_NORM, train = s->p->edges[e].trainable;
      if (!train && !to_src) return;
      PUSH(op, l, bn ? HM_ABI_OP_BATCH_NORM_BWD : HM_ABI_OP_LAYER_NORM_BWD);
      norm_dims(s, op, e, b);
      op->params[0] = to_src && grad_init[S] ? 1.0f : 0.0f;
      op->params[1] = accumulate ? 1.0f : 0.0f;
      op->params[2] = ed->spec.eps;
      op->in[0] = OPD(value(s, S));
      op->in[1] = OPD(es->dz);
      op->in[2] = es->w;
      if (to_src) op->out[0] = OPD(s->b->nodes[S].grad);
      if (train) {
        op->out[1] = es->dw;
        op->out[2] = es->db;
      }
      if (!to_src) return;
      break;
    }
    case HM_CONNECTION_MAX_POOL:
    case HM_CONNECTION_AVG_POOL: {
      if (!to_src) return;
      PUSH(dx, l, HM_ABI_OP_POOL2D_BWD);
      window_op(s, dx, e, b);
      dx->flags = grad_init[S] ? HM_ABI_OP_FLAG_ACCUMULATE : 0;
      dx->in[0] = OPD(es->dz);
      if (ed->spec.kind == HM_CONNECTION_MAX_POOL) dx->in[1] = OPD(es->argmax);
      dx->out[0] = OPD(s->b->nodes[S].grad);
      break;
    }
    default: {
      if (!to_src) return;
      /* The same mask on the gradient: into the connection's own buffer,
       * then copied or added (dropout has no accumulate). */
      size_t n = b * s->p->nodes[ed->dst].width;
      hm_abi_buffer *in = ed->activation == HM_ABI_ACT_IDENTITY ? s->b->nodes[ed->dst].grad : es->dz;
      PUSH(op, l, HM_ABI_OP_DROPOUT);
      dropout_op(s, op, e, n);
      op->in[0] = OPD(in);
      op->out[0] = OPD(es->dz);
      PUSH(sum, l, grad_init[S] ? HM_ABI_OP_AXPY : HM_ABI_OP_COPY);
      sum->dims[0] = n;
      sum->params[0] = 1.0f;
      sum->in[0] = OPD(es->dz);
      sum->out[0] = OPD(s->b->nodes[S].grad);
      break;
    }
  }
  grad_init[S] = 1;
}

static void emit_backward(const lowering *s, op_list *l, size_t b, int accumulate, char *grad_init) {
  const hm_graph *g = s->g;
  for (size_t k = s->p->n_order; k-- > 0;) {
    size_t L = s->p->order[k];
    if (!s->p->nodes[L].needs_grad || !grad_init[L]) continue;
    size_t wl = s->p->nodes[L].width;
    for (size_t e = 0; e < g->n_edges; e++) {
      const hm_edge *ed = &g->edges[e];
      if (ed->dst != L || !s->p->edges[e].backprop) continue;
      const hm_edge_buffers *es = &s->b->edges[e];
      size_t ws = s->p->nodes[ed->src].width;
      if (ed->activation != HM_ABI_ACT_IDENTITY) {
        PUSH(act, l, HM_ABI_OP_ACT_BACKWARD);
        act->variant = ed->activation;
        act->dims[0] = b;
        act->dims[1] = wl;
        act->params[0] = ed->activation == HM_ABI_ACT_LEAKY_RELU ? 0.01f : ed->activation == HM_ABI_ACT_ELU ? 1.0f : 0.0f;
        act->params[1] = 0.0f;
        act->in[0] = OPD(es->z);
        act->in[1] = OPD(es->a);
        act->in[2] = OPD(s->b->nodes[L].grad);
        act->out[0] = OPD(es->dz);
      }
      if (ed->spec.kind != HM_CONNECTION_DENSE) {
        emit_window_backward(s, l, e, b, accumulate, grad_init);
        if (l->failed) return;
        continue;
      }
      /* Straight-through: the gradients of a packed matmul use the values it
       * multiplied (dequantized), and pass unchanged through the rounding. */
      uint32_t q = s->p->edges[e].prec.dtype;
      int packed = hm__precision_is_packed(q);
      uint32_t din = packed ? HM_ABI_DTYPE_F32 : q;
      PUSH(dw, l, HM_ABI_OP_GEMM);
      dw->dtype_in = din;
      dw->flags = HM_ABI_OP_FLAG_TRANS_A;
      dw->dims[0] = wl;
      dw->dims[1] = ws;
      dw->dims[2] = b;
      dw->params[0] = 1.0f;
      dw->params[1] = accumulate ? 1.0f : 0.0f;
      dw->in[0] = OPD(es->dz);
      dw->in[1] = OPD(packed ? es->xdq : value(s, ed->src));
      dw->out[0] = es->dw;
      PUSH(db, l, HM_ABI_OP_REDUCE_ROWS);
      db->dims[0] = b;
      db->dims[1] = wl;
      db->params[0] = 1.0f;
      db->params[1] = accumulate ? 1.0f : 0.0f;
      db->in[0] = OPD(es->dz);
      db->out[0] = es->db;
      size_t S = ed->src;
      if ((g->nodes[S].kind == HM_NODE_LAYER || s->p->nodes[S].boundary_in) && s->p->nodes[S].needs_grad) {
        PUSH(dx, l, HM_ABI_OP_GEMM);
        dx->dtype_in = din;
        dx->dims[0] = b;
        dx->dims[1] = ws;
        dx->dims[2] = wl;
        dx->params[0] = 1.0f;
        dx->params[1] = grad_init[S] ? 1.0f : 0.0f;
        dx->in[0] = OPD(es->dz);
        dx->in[1] = packed ? OPD(es->wdq) : es->w;
        dx->out[0] = OPD(s->b->nodes[S].grad);
        grad_init[S] = 1;
      }
    }
  }
}

static uint32_t optimizer_op(hm_optimizer o) {
  switch (o) {
    case HM_OPTIMIZER_ADAM: return HM_ABI_OP_ADAM;
    case HM_OPTIMIZER_RMSPROP: return HM_ABI_OP_RMSPROP;
    case HM_OPTIMIZER_ADAMW: return HM_ABI_OP_ADAMW;
    case HM_OPTIMIZER_LAMB: return HM_ABI_OP_LAMB;
    default: return HM_ABI_OP_SGD;
  }
}

/* One op of the apply phase over |n| floats of the tensors at |at|: average
 * (accumulation), norm before clipping (|first|: overwrite), clip, or the
 * optimizer step. */
static void emit_apply_op(const lowering *s, op_list *l, int pass, int first, size_t n, hm_abi_operand grad,
                          hm_abi_operand param, hm_abi_operand s1, hm_abi_operand s2) {
  const hm_fit_options *o = s->o;
  if (pass == 0) {
    PUSH(sc, l, HM_ABI_OP_SCALE);
    sc->dims[0] = n;
    sc->params[0] = 1.0f;
    sc->dyn[0] = SLOT_GRAD_SCALE;
    sc->out[0] = grad;
  } else if (pass == 1) {
    PUSH(sq, l, HM_ABI_OP_SUM_SQUARES);
    sq->dims[0] = n;
    sq->params[0] = 1.0f;
    sq->params[1] = first ? 0.0f : 1.0f;
    sq->in[0] = grad;
    sq->out[0] = (hm_abi_operand){s->b->stats, 4};
  } else if (pass == 2) {
    PUSH(cl, l, HM_ABI_OP_CLIP);
    cl->dims[0] = n;
    cl->params[0] = o->grad_clip;
    cl->out[0] = grad;
  } else {
    PUSH(op, l, optimizer_op(o->optimizer));
    op->dims[0] = n;
    op->dyn[0] = SLOT_LR;
    op->in[0] = grad;
    op->out[0] = param;
    switch (o->optimizer) {
      case HM_OPTIMIZER_SGD:
        op->params[1] = o->momentum;
        if (o->momentum != 0.0f) op->out[1] = s1;
        break;
      case HM_OPTIMIZER_RMSPROP:
        op->params[1] = o->rho;
        op->params[2] = o->epsilon;
        op->out[1] = s1;
        break;
      default:
        op->dyn[1] = SLOT_BC1;
        op->dyn[2] = SLOT_BC2;
        op->params[3] = o->beta1;
        op->params[4] = o->beta2;
        op->params[5] = o->epsilon;
        op->params[6] = o->optimizer == HM_OPTIMIZER_ADAM ? 0.0f : o->weight_decay;
        op->out[1] = s1;
        op->out[2] = s2;
        break;
    }
  }
}

/* Average (accumulation), norm before clipping, clip, optimizer step. Each
 * is element-wise given the norm, so each is one op over the parameter
 * arena (whose padding is zero and stays zero under every one of them);
 * LAMB's trust ratio is per tensor, so it steps tensor by tensor. */
static void emit_apply(const lowering *s, op_list *l, int average) {
  const hm_graph *g = s->g;
  const hm_param_arena *ar = &s->b->arena;
  int first = 1;
  for (int pass = 0; pass < 4; pass++) {
    if ((pass == 0 && !average) || (pass == 2 && s->o->grad_clip <= 0.0f)) continue;
    if (ar->floats && (pass < 3 || s->o->optimizer != HM_OPTIMIZER_LAMB)) {
      emit_apply_op(s, l, pass, 1, ar->floats, OPD(ar->grads), OPD(ar->params), OPD(ar->state[0]),
                    OPD(ar->state[1]));
      continue;
    }
    for (size_t e = 0; e < g->n_edges; e++) {
      const hm_edge_buffers *es = &s->b->edges[e];
      if (!s->p->edges[e].trainable) continue;
      hm_param_desc pd[2];
      size_t n_params = hm__edge_params(g, e, pd);
      hm_abi_operand grads[2] = {es->dw, es->db}, params[2] = {es->w, es->b};
      hm_abi_operand s1[2] = {es->s1w, es->s1b}, s2[2] = {es->s2w, es->s2b};
      for (size_t k = 0; k < n_params; k++) {
        emit_apply_op(s, l, pass, first, pd[k].count, grads[k], params[k], s1[k], s2[k]);
        if (pass == 1) first = 0;
      }
    }
  }
}

hm_status hm__lower_step(const hm_plan *p, const hm_step_buffers *b, const hm_fit_options *o, program_kind kind,
                         size_t batch, hm_abi_op **ops, size_t *n_ops) {
  const lowering ctx = {p, p->g, b, o}, *s = &ctx;
  op_list l = {0};
  hm_status st = HM_OK;
  char *grad_init = hm__calloc(s->g->n_nodes ? s->g->n_nodes : 1, 1);
  if (!grad_init) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (is_stage_backward(kind)) {
    /* The host has written the gradients the later stages sent. */
    for (size_t i = 0; i < s->g->n_nodes; i++) grad_init[i] = (char)s->p->nodes[i].grad_from_host;
    emit_backward(s, &l, batch, kind == PROG_STAGE_BACKWARD_ACC, grad_init);
  } else if (kind != PROG_APPLY) {
    emit_gathers(s, &l, kind, batch, &st);
    emit_forward(s, &l, kind, batch);
    if (kind == PROG_EVAL || kind == PROG_INFER) emit_consumers(s, &l, batch);
    int targets = s->g->n_taps > 0 && kind != PROG_STAGE_FORWARD;
    for (size_t t = 0; t < s->g->n_taps; t++)
      if (!b->nodes[s->g->taps[t].target].data[kind == PROG_EVAL ? DATA_EVAL : DATA_TRAIN]) targets = 0;
    if (targets) emit_losses(s, &l, batch, is_training(kind), grad_init);
    if (is_training(kind) && kind != PROG_STAGE_FORWARD)
      emit_backward(s, &l, batch, kind == PROG_MICRO_ACC, grad_init);
  }
  if (kind == PROG_TRAIN || kind == PROG_APPLY) emit_apply(s, &l, kind == PROG_APPLY);
  hm__free(grad_init);
  if (l.failed && st == HM_OK) st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory building a program");
  if (st != HM_OK) {
    hm__free(l.ops);
    return st;
  }
  hm__log(HM_LOG_TRAIN, "program kind %d batch %zu: %zu ops", (int)kind, batch, l.n);
  *ops = l.ops;
  *n_ops = l.n;
  return HM_OK;
}
