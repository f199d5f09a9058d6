/* Op-to-kernel planning for the GPU plugins (dispatch.h). */
#include "dispatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "op_rules.h"

_Static_assert(sizeof(hm_kparams) == 112, "hm_kparams must match the kernels' parameter block");

static const char *const names[HK_COUNT] = {
    "gemm", "bias_add", "act_fwd", "softmax_fwd", "act_bwd", "softmax_bwd", "loss", "reduce_rows",
    "reduce_cols", "sum_squares", "clip", "scale", "axpy", "gather", "fill", "copy", "sgd", "adam",
    "rmsprop", "lamb", "quantize", "dequantize", "gemm_q", "conv2d", "conv2d_bwd_data", "conv2d_bwd_filter",
    "pool2d", "pool2d_bwd", "dropout", "batch_norm", "batch_norm_bwd", "layer_norm", "layer_norm_bwd", "im2col",
    "gemm_reg", "gemm_x4", "gemm_x8", "bias_act", "gemm_qx4", "gemm_dot", "gemm_sg"};

const char *hm_kernel_name(hm_kernel_id k) { return (unsigned)k < HK_COUNT ? names[k] : "?"; }

/* Work items that fit 32-bit indexing (the kernels index with uint). */
static int fits(uint64_t n) { return n < ((uint64_t)1 << 31); }

/* Convolution, pooling and dropout: geometry into dim/aux/f (hm_ops.kern). */
static int plan_window(const hm_abi_op *op, uint32_t max_groups, hm_dispatch *d, char *err, size_t cap) {
  uint64_t items;
  d->p.flags = op->flags;
  for (int i = 0; i < 8; i++) d->p.f[i] = op->params[i];
  for (int i = 0; i < 4; i++) d->p.dyn[i] = op->dyn[i] == HM_ABI_DYN_NONE ? -1 : op->dyn[i];
  d->local_size = 64;
  if (op->code == HM_ABI_OP_DROPOUT) {
    d->kernel = HK_DROPOUT;
    d->p.dim[0] = (uint32_t)op->dims[0];
    d->p.aux0 = HM_ABI_PACK2_LO(op->dims[1]); /* the seed's two words */
    d->p.aux1 = HM_ABI_PACK2_HI(op->dims[1]);
    items = op->dims[0];
  } else {
    hm_abi_window g;
    if (hm_abi_window_decode(op, &g)) {
      snprintf(err, cap, "op %u: invalid window geometry", op->code);
      return 1;
    }
    uint64_t nx = (uint64_t)g.n * g.c_in * g.h * g.w, ny = (uint64_t)g.n * g.c_out * g.ho * g.wo;
    uint64_t nw = (uint64_t)g.c_out * (g.c_in / g.groups) * g.kh * g.kw;
    d->p.dim[0] = g.n, d->p.dim[1] = g.c_in, d->p.dim[2] = g.h, d->p.dim[3] = g.w;
    d->p.aux0 = g.c_out;
    d->p.aux1 = g.groups;
    switch (op->code) {
      case HM_ABI_OP_CONV2D:
        d->kernel = HK_CONV2D;
        d->p.variant = op->in[2].buffer ? 1u : 0u;
        items = ny;
        break;
      case HM_ABI_OP_CONV2D_BWD_DATA: d->kernel = HK_CONV2D_BWD_DATA; items = nx; break;
      case HM_ABI_OP_CONV2D_BWD_FILTER:
        d->kernel = HK_CONV2D_BWD_FILTER;
        d->p.variant = op->out[1].buffer ? 1u : 0u;
        items = nw + g.c_out;
        break;
      case HM_ABI_OP_IM2COL:
        d->kernel = HK_IM2COL;
        nw = (uint64_t)g.c_in * g.kh * g.kw; /* a patch row */
        items = ny = (uint64_t)g.n * g.ho * g.wo * nw;
        break;
      case HM_ABI_OP_POOL2D:
        d->kernel = HK_POOL2D;
        d->p.variant = op->variant;
        d->p.aux1 = op->out[1].buffer ? 1u : 0u;
        items = ny;
        break;
      default:
        d->kernel = HK_POOL2D_BWD;
        d->p.variant = op->variant;
        items = nx;
        break;
    }
    if (!fits(nx) || !fits(ny) || !fits(nw)) items = UINT64_MAX;
  }
  if (!fits(items)) {
    snprintf(err, cap, "op %u is too large for 32-bit indexing", op->code);
    return 1;
  }
  uint64_t groups = (items + d->local_size - 1) / d->local_size;
  if (groups < 1) groups = 1;
  if (groups > max_groups) groups = max_groups;
  d->groups = (uint32_t)groups;
  return 0;
}

int hm_plan_dispatch(const hm_abi_op *op, uint32_t max_groups, hm_dispatch *d, char *err, size_t cap) {
  const hm_dispatch_limits lim = {.max_groups = max_groups, .max_loop = 0, .gemm_block = 8, .vec8 = 0};
  return hm_plan_dispatch_for(op, &lim, d, err, cap);
}

static uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

/* Loop iterations one invocation runs for |b| images of window op |op|. */
static uint64_t window_cost(const hm_abi_op *op, const hm_abi_window *g, uint64_t b, uint64_t lanes) {
  uint64_t nx = b * g->c_in * g->h * g->w, ny = b * g->c_out * g->ho * g->wo, k = (uint64_t)g->kh * g->kw;
  switch (op->code) {
    case HM_ABI_OP_CONV2D: return ceil_div(ny, lanes) * (1 + (uint64_t)(g->c_in / g->groups) * (1 + g->kh + k));
    case HM_ABI_OP_CONV2D_BWD_DATA: return ceil_div(nx, lanes) * (1 + (uint64_t)(g->c_out / g->groups) * (1 + g->kh + k));
    case HM_ABI_OP_CONV2D_BWD_FILTER: {
      uint64_t nw = (uint64_t)g->c_out * (g->c_in / g->groups) * k + g->c_out;
      return ceil_div(nw, lanes) * (1 + b * (1 + g->ho + (uint64_t)g->ho * g->wo));
    }
    case HM_ABI_OP_POOL2D: return ceil_div(ny, lanes) * (1 + g->kh + k);
    default: return ceil_div(nx, lanes) * (1 + ceil_div(g->kh, g->sh) * (1 + ceil_div(g->kw, g->sw)));
  }
}

/* Splits window op |op| by images so no invocation passes |max_loop|. */
static int slice_window(const hm_abi_op *op, uint32_t max_groups, uint32_t max_loop, hm_dispatch *d, char *err,
                        size_t cap) {
  hm_abi_window g;
  if (op->code == HM_ABI_OP_IM2COL || hm_abi_window_decode(op, &g)) return 0; /* im2col has no loop */
  uint64_t lanes = (uint64_t)max_groups * d->local_size, b = g.n;
  while (b > 1 && window_cost(op, &g, b, lanes) > max_loop) b = (b + 1) / 2;
  if (window_cost(op, &g, b, lanes) > max_loop) {
    snprintf(err, cap, "op %u: one image needs %llu loop iterations per invocation, more than this device runs (%u)",
             op->code, (unsigned long long)window_cost(op, &g, 1, lanes), max_loop);
    return 1;
  }
  if (b == g.n) return 0;
  uint32_t x = g.c_in * g.h * g.w, y = g.c_out * g.ho * g.wo;
  uint32_t words[5][6] = {/* bindings b0..b5 per image: conv, bwd data, bwd filter, pool, pool bwd */
                          {x, 0, 0, y, 0, 0}, {y, 0, 0, x, 0, 0}, {x, y, 0, 0, 0, 0}, {x, 0, 0, y, y, 0},
                          {y, y, 0, x, 0, 0}};
  memcpy(d->slice_words, words[op->code - HM_ABI_OP_CONV2D], sizeof d->slice_words);
  d->slice_images = (uint32_t)b;
  d->slices = (uint32_t)ceil_div(g.n, b);
  return 0;
}

void hm_dispatch_slice(const hm_dispatch *d, uint32_t s, hm_kparams *p, uint32_t *groups) {
  *p = d->p;
  *groups = d->groups;
  if (d->slices <= 1) return;
  if (d->scratch_words) { /* a split reduction: the partial sums, then their sum (hm_ops.kern) */
    p->variant = s > 0 ? 2u : d->p.variant == 3u ? 3u : 1u;
    if (s > 0) *groups = 1;
    return;
  }
  uint32_t first = s * d->slice_images, n = d->p.dim[0] - first < d->slice_images ? d->p.dim[0] - first : d->slice_images;
  p->dim[0] = n;
  for (int k = 0; k < 6; k++) p->off[k] += first * d->slice_words[k];
  if (d->kernel == HK_CONV2D_BWD_FILTER && s > 0) p->flags |= HM_ABI_OP_FLAG_ACCUMULATE; /* the sums continue */
}

int hm_plan_dispatch_for(const hm_abi_op *op, const hm_dispatch_limits *lim, hm_dispatch *d, char *err, size_t cap) {
  const uint32_t max_groups = lim->max_groups, max_loop = lim->max_loop, gemm_block = lim->gemm_block;
  memset(d, 0, sizeof *d);
  d->slices = 1;
  if (hm_op_is_window(op->code)) {
    if (plan_window(op, max_groups, d, err, cap)) return 1;
    return max_loop ? slice_window(op, max_groups, max_loop, d, err, cap) : 0;
  }
  if (op->code == HM_ABI_OP_DROPOUT) return plan_window(op, max_groups, d, err, cap);
  if (op->code >= HM_ABI_OP_BATCH_NORM && op->code <= HM_ABI_OP_LAYER_NORM_BWD) {
    /* One work-group of 128 per channel (batch norm) or row (layer norm),
     * and for layer norm's backward one more for the parameter gradients. */
    for (int i = 0; i < 3; i++) d->p.dim[i] = (uint32_t)op->dims[i];
    for (int i = 0; i < 8; i++) d->p.f[i] = op->params[i];
    d->p.variant = op->variant;
    d->local_size = 128;
    static const hm_kernel_id kernel[] = {HK_BATCH_NORM, HK_BATCH_NORM_BWD, HK_LAYER_NORM, HK_LAYER_NORM_BWD};
    int bwd = op->code == HM_ABI_OP_BATCH_NORM_BWD || op->code == HM_ABI_OP_LAYER_NORM_BWD;
    int layer = op->code >= HM_ABI_OP_LAYER_NORM;
    d->kernel = kernel[op->code - HM_ABI_OP_BATCH_NORM];
    d->p.aux0 = bwd ? (op->out[0].buffer ? 1u : 0u) | (op->out[1].buffer ? 2u : 0u) | (op->out[2].buffer ? 4u : 0u)
                    : (op->out[1].buffer ? 1u : 0u);
    uint64_t elems = op->dims[0] * op->dims[1] * (layer ? 1 : op->dims[2]);
    uint64_t groups = layer ? op->dims[0] + (op->code == HM_ABI_OP_LAYER_NORM_BWD) : op->dims[1];
    if (!fits(elems) || !fits(groups)) {
      snprintf(err, cap, "op %u is too large for 32-bit indexing", op->code);
      return 1;
    }
    /* Layer norm's parameter task loops over every row in one invocation. */
    if (max_loop && op->code == HM_ABI_OP_LAYER_NORM_BWD && op->dims[0] > max_loop) {
      snprintf(err, cap, "op %u: %llu rows need more loop iterations per invocation than this device runs (%u)",
               op->code, (unsigned long long)op->dims[0], max_loop);
      return 1;
    }
    d->groups = (uint32_t)(groups < max_groups ? groups : max_groups);
    /* ...at least one for the rows and the last for the parameters. */
    if (op->code == HM_ABI_OP_LAYER_NORM_BWD && d->groups < 2) d->groups = 2;
    return 0;
  }
  uint64_t d0 = op->dims[0], d1 = op->dims[1], d2 = op->dims[2];
  for (int i = 0; i < 4; i++) d->p.dim[i] = (uint32_t)op->dims[i];
  if (d0 >= ((uint64_t)1 << 31) || d1 >= ((uint64_t)1 << 31) || d2 >= ((uint64_t)1 << 31)) {
    snprintf(err, cap, "dimensions beyond 2^31 are not supported by this backend");
    return 1;
  }
  d->p.flags = op->flags;
  d->p.variant = op->variant;
  for (int i = 0; i < 8; i++) d->p.f[i] = op->params[i];
  for (int i = 0; i < 4; i++) d->p.dyn[i] = op->dyn[i] == HM_ABI_DYN_NONE ? -1 : op->dyn[i];
  d->local_size = 64;
  uint64_t items = 1; /* work items of a grid-stride kernel */
  uint64_t loop = 0;  /* a GEMM's loop iterations per work item */
  int single_group = 0;
  uint32_t din = hm_dtype_or_f32(op->dtype_in), dout = hm_dtype_or_f32(op->dtype_out);
  switch (op->code) {
    case HM_ABI_OP_GEMM: {
      /* Register blocks, because loads — not arithmetic — bound the kernels
       * on the CPU emulators (docs/plugins.md): 8x8 (up to gemm_block) or
       * 4x4 outputs per invocation with four-word loads where the
       * contiguous sizes and the operand offsets are multiples of 4, 4x4
       * with one-word loads where not, one output per invocation for a C
       * thinner than 4. */
      int ta = (op->flags & HM_ABI_OP_FLAG_TRANS_A) != 0, tb = (op->flags & HM_ABI_OP_FLAG_TRANS_B) != 0;
      int x4 = d2 % 4 == 0 && (!ta || d0 % 4 == 0) && (tb || d1 % 4 == 0) && op->in[0].offset % 16 == 0 &&
               op->in[1].offset % 16 == 0;
      uint64_t side = x4 && gemm_block >= 8 && d0 >= 8 && d1 >= 8 ? 8 : d0 >= 4 && d1 >= 4 ? 4 : 1;
      d->kernel = side == 8 ? HK_GEMM_X8 : side == 4 ? (x4 ? HK_GEMM_X4 : HK_GEMM_REG) : HK_GEMM;
      if (d->kernel == HK_GEMM_X8) d->local_size = 8;
      items = ((d0 + side - 1) / side) * ((d1 + side - 1) / side);
      loop = d2 / (x4 && side > 1 ? 4 : 1) + 1;
      /* A subgroup per 8 rows x 4 subgroup-size columns, sharing A (gemm_sg),
       * where C has that many (a smaller C would leave lanes idle). */
      uint64_t span = 4 * (uint64_t)lim->subgroup;
      if (lim->subgroup >= 8 && d->kernel == HK_GEMM_X4 && d0 >= 8 && d1 >= span) {
        d->kernel = HK_GEMM_SG;
        items = ((d0 + 7) / 8) * ((d1 + span - 1) / span) * lim->subgroup;
        loop = d2 / 4 + 1;
      }
      /* C = A Bᵀ as dot products of rows: a work-group of 8 per 8x8 block (gemm_dot). */
      if (lim->vec8 && x4 && d0 >= 8 && d1 >= 8 && tb && !ta) {
        d->kernel = HK_GEMM_DOT;
        d->local_size = 8;
        items = ((d0 + 7) / 8) * ((d1 + 7) / 8) * 8;
        loop = d2 / 4 + 1;
      }
      /* gemm_x8's float8 path: any k and offsets where every block lies inside C. */
      if (lim->vec8 && !x4 && !tb && gemm_block >= 8 && d0 >= 8 && d1 >= 8 && d0 % 8 == 0 && d1 % 8 == 0) {
        d->kernel = HK_GEMM_X8;
        d->local_size = 8;
        items = (d0 / 8) * (d1 / 8);
        loop = d2 + 1;
      }
      /* Two blocks an invocation where one row of B is 16 words (a 64-byte line). */
      if (lim->vec8 && d->kernel == HK_GEMM_X8 && !ta && !tb && d0 % 8 == 0 && d1 % 16 == 0) {
        d->p.flags |= HM_KFLAG_N16;
        items = (d0 / 8) * (d1 / 16);
      }
      if ((d->kernel == HK_GEMM_X4 || d->kernel == HK_GEMM_SG) && d1 % 4 == 0 && op->out[0].offset % 16 == 0)
        d->p.flags |= HM_KFLAG_C_X4;
      if (!fits(d0 * d1) || !fits(d0 * d2) || !fits(d2 * d1)) items = UINT64_MAX; /* indices past 32 bits */
      break;
    }
    case HM_ABI_OP_BIAS_ADD: d->kernel = HK_BIAS_ADD; items = d0 * d1; break;
    case HM_ABI_OP_ACT_FORWARD:
      d->kernel = op->variant == HM_ABI_ACT_SOFTMAX ? HK_SOFTMAX_FWD : HK_ACT_FWD;
      items = op->variant == HM_ABI_ACT_SOFTMAX ? d0 : d0 * d1;
      break;
    case HM_ABI_OP_ACT_BACKWARD:
      d->kernel = op->variant == HM_ABI_ACT_SOFTMAX ? HK_SOFTMAX_BWD : HK_ACT_BWD;
      items = op->variant == HM_ABI_ACT_SOFTMAX ? d0 : d0 * d1;
      break;
    case HM_ABI_OP_LOSS:
      d->kernel = HK_LOSS;
      single_group = 1;
      d->p.aux0 = (op->out[0].buffer ? 1u : 0u) | (op->out[1].buffer ? 2u : 0u) |
                  ((op->flags & HM_ABI_OP_FLAG_CLASS_INDEX) ? 4u : 0u);
      items = d0 * d1;
      break;
    case HM_ABI_OP_REDUCE_ROWS: d->kernel = HK_REDUCE_ROWS; items = d1; if (!fits(d0 * d1)) items = UINT64_MAX; break;
    case HM_ABI_OP_REDUCE_COLS: d->kernel = HK_REDUCE_COLS; items = d0; if (!fits(d0 * d1)) items = UINT64_MAX; break;
    case HM_ABI_OP_SUM_SQUARES:
      d->kernel = HK_SUM_SQUARES;
      items = d0;
      if (d0 <= HM_REDUCE_SPLIT) {
        single_group = 1;
        break;
      }
      if (!fits(items)) break;
      {
        /* Groups of 128 taking 4096 elements or more each, at most
         * max_groups; a partial sum per invocation. */
        uint64_t groups = (d0 + 4095) / 4096;
        if (groups > max_groups) groups = max_groups;
        d->local_size = 128;
        d->groups = (uint32_t)groups;
        d->p.aux1 = (uint32_t)groups * 128u;
        d->scratch_words = (uint32_t)groups * 128u;
        d->slices = 2;
        /* The partial sums read four words at a time where they can (VARIANT 3). */
        if (d0 % 4 == 0 && op->in[0].offset % 16 == 0) d->p.variant = 3;
      }
      return 0;
    case HM_ABI_OP_CLIP: d->kernel = HK_CLIP; items = d0; break;
    case HM_ABI_OP_SCALE: d->kernel = HK_SCALE; items = d0; d->p.aux0 = op->in[0].buffer ? 1u : 0u; break;
    case HM_ABI_OP_AXPY: d->kernel = HK_AXPY; items = d0; break;
    case HM_ABI_OP_GATHER_ROWS:
      d->kernel = HK_GATHER;
      items = d0 * d1;
      d->p.variant = din == HM_ABI_DTYPE_U8 ? 1u : din == HM_ABI_DTYPE_I32 ? 2u : 0u; /* specialized in GLSL */
      /* u8 rows four bytes at a time where rows and the output stay 4-word aligned. */
      if (din == HM_ABI_DTYPE_U8 && d1 % 4 == 0 && op->in[0].offset % 4 == 0 && op->out[0].offset % 16 == 0) {
        d->p.variant = 3;
        items = d0 * d1 / 4;
      }
      if (!fits(d2 * d1)) items = UINT64_MAX;
      break;
    case HM_ABI_OP_FILL: d->kernel = HK_FILL; items = d0; d->p.aux0 = dout == HM_ABI_DTYPE_I32 ? 1u : 0u; break;
    case HM_ABI_OP_COPY: {
      d->kernel = HK_COPY;
      uint64_t es = din == HM_ABI_DTYPE_U8 || din == HM_ABI_DTYPE_I8 ? 1 : 4, bytes = d0 * es;
      if (!fits(bytes)) items = UINT64_MAX;
      else {
        d->p.aux0 = (uint32_t)bytes;
        items = (bytes + 3) / 4;
      }
      break;
    }
    case HM_ABI_OP_SGD:
      d->kernel = HK_SGD;
      items = d0;
      d->p.aux0 = op->out[1].buffer ? 1u : 0u;
      break;
    case HM_ABI_OP_ADAM:
    case HM_ABI_OP_ADAMW: {
      /* Four elements an invocation's iteration (VARIANT 1) where the length
       * and every operand's word offset are multiples of 4. */
      int x4 = d0 % 4 == 0;
      for (int s = 0; s < 3; s++) x4 = x4 && op->out[s].offset % 16 == 0;
      x4 = x4 && op->in[0].offset % 16 == 0;
      d->kernel = HK_ADAM;
      d->p.variant = x4 ? 1u : 0u;
      items = x4 ? d0 / 4 : d0;
      d->p.aux0 = op->code == HM_ABI_OP_ADAMW ? 1u : 0u;
      break;
    }
    case HM_ABI_OP_RMSPROP: d->kernel = HK_RMSPROP; items = d0; break;
    case HM_ABI_OP_LAMB: d->kernel = HK_LAMB; single_group = 1; items = d0; break;
    case HM_ABI_OP_QUANTIZE: {
      d->kernel = HK_QUANTIZE;
      uint64_t bytes = d0 * ((d1 + 63) / 64) * hm_q_block_bytes((int)dout);
      d->p.aux0 = dout;
      if (!fits(bytes) || !fits(d0 * d1)) items = UINT64_MAX;
      else {
        d->p.aux1 = (uint32_t)bytes;
        items = (bytes + 3) / 4;
      }
      break;
    }
    case HM_ABI_OP_DEQUANTIZE:
      d->kernel = HK_DEQUANTIZE;
      d->p.aux0 = din;
      items = d0 * d1;
      if (!fits(d0 * ((d1 + 63) / 64) * hm_q_block_bytes((int)din))) items = UINT64_MAX;
      break;
    case HM_ABI_OP_GEMM_Q8:
    case HM_ABI_OP_GEMM_Q4:
    case HM_ABI_OP_GEMM_Q3: {
      /* 4x4 blocks (gemm_qx4: 8 reads of a word or 3-byte group feed 64 or
       * 128 integer multiply-adds) where C has 4 rows and columns; one
       * output per invocation (gemm_q) where thinner. Loop iterations per
       * output or block: 64 per block for gemm_q, a unit of codes (16 for
       * Q8, 8 else) per block for gemm_qx4. */
      uint64_t blocks = (d2 + 63) / 64;
      int x4 = d0 >= 4 && d1 >= 4;
      d->kernel = x4 ? HK_GEMM_QX4 : HK_GEMM_Q;
      d->p.aux0 = din;
      d->p.variant = x4 ? din : 0; /* specialized in GLSL */
      items = x4 ? ((d0 + 3) / 4) * ((d1 + 3) / 4) : d0 * d1;
      loop = blocks * (x4 ? (din == HM_ABI_DTYPE_Q8 ? 16 : 8) + 1 : 64);
      if (!fits((d0 > d1 ? d0 : d1) * blocks * HM_ABI_Q8_BLOCK_BYTES)) items = UINT64_MAX;
      break;
    }
    default: snprintf(err, cap, "op %u has no kernel", op->code); return 1;
  }
  if (!fits(items)) {
    snprintf(err, cap, "op %u is too large for 32-bit indexing (%llu x %llu x %llu)", op->code,
             (unsigned long long)d0, (unsigned long long)d1, (unsigned long long)d2);
    return 1;
  }
  if (single_group) {
    d->local_size = 128; /* the Vulkan minimum for maxComputeWorkGroupInvocations */
    d->groups = 1;
    return 0;
  }
  uint64_t groups = (items + d->local_size - 1) / d->local_size;
  uint64_t cap_groups = lim->spread_groups && lim->spread_groups < max_groups ? lim->spread_groups : max_groups;
  if (groups < 1) groups = 1;
  if (groups > cap_groups) { /* as few groups as give every invocation the same share */
    uint64_t share = (items + cap_groups * d->local_size - 1) / (cap_groups * d->local_size);
    groups = (items + share * d->local_size - 1) / (share * d->local_size);
  }
  /* Each invocation loops over its share of the items (times a GEMM's loop
   * over k); where that passes the device's loop limit, more groups. */
  uint64_t each = loop ? loop : 1, lanes = (uint64_t)d->local_size;
  if (max_loop && (items + groups * lanes - 1) / (groups * lanes) * each > max_loop) {
    uint64_t shares = max_loop / each ? max_loop / each : 1, need = (items + shares * lanes - 1) / (shares * lanes);
    groups = need < max_groups ? need : max_groups;
  }
  d->groups = (uint32_t)groups;
  /* A device that ends long loops (lavapipe) must not get a kernel whose
   * invocations loop past its limit: refuse it rather than compute part. */
  uint64_t per = (items + groups * lanes - 1) / (groups * lanes) * each;
  if (max_loop && per > max_loop) {
    int matmul = op->code == HM_ABI_OP_GEMM || (op->code >= HM_ABI_OP_GEMM_Q8 && op->code <= HM_ABI_OP_GEMM_Q3);
    snprintf(err, cap, "op %u: a %llux%llux%llu %s needs %llu loop iterations per invocation, more than this device "
             "runs (%u)", op->code, (unsigned long long)d0, (unsigned long long)d1, (unsigned long long)d2,
             matmul ? "GEMM" : "launch", (unsigned long long)per, max_loop);
    return 1;
  }
  return 0;
}

static int all_f32(const hm_abi_op *op) {
  return hm_dtype_or_f32(op->dtype_in) == HM_ABI_DTYPE_F32 && hm_dtype_or_f32(op->dtype_out) == HM_ABI_DTYPE_F32;
}

int hm_kernel_is_gemm(hm_kernel_id k) {
  return k == HK_GEMM || k == HK_GEMM_REG || k == HK_GEMM_X4 || k == HK_GEMM_X8 || k == HK_GEMM_DOT || k == HK_GEMM_SG;
}

/* Whether [a, a + an) and [b, b + bn) of the same buffer meet. */
static int overlap(const hm_abi_operand *a, uint64_t an, const hm_abi_operand *b, uint64_t bn) {
  return a->buffer == b->buffer && a->offset < b->offset + bn && b->offset < a->offset + an;
}

/* Whether |act| is an element-wise f32 ACT_FORWARD of exactly the
 * rows x cols sum at |sum|, writing an output that does not meet it. */
static int activates(const hm_abi_op *act, const hm_abi_operand *sum, uint64_t rows, uint64_t cols) {
  const hm_abi_operand *y = &act->out[0];
  return act->code == HM_ABI_OP_ACT_FORWARD && act->variant != HM_ABI_ACT_SOFTMAX && all_f32(act) &&
         act->dims[0] == rows && act->dims[1] == cols && act->in[0].buffer == sum->buffer &&
         act->in[0].offset == sum->offset && y->buffer && !overlap(y, rows * cols * 4, sum, rows * cols * 4);
}

int hm_plan_bias_act(const hm_abi_op *bias, const hm_abi_op *act, uint32_t max_groups, hm_abi_op *fused,
                     hm_dispatch *d) {
  if (bias->code != HM_ABI_OP_BIAS_ADD || !all_f32(bias)) return 0;
  uint64_t rows = bias->dims[0], cols = bias->dims[1], n = rows * cols * 4;
  const hm_abi_operand *z = &bias->out[0], *b = &bias->in[0], *y = &act->out[0];
  if (rows * cols >= ((uint64_t)1 << 31) || !z->buffer || !b->buffer || !activates(act, z, rows, cols) ||
      overlap(y, n, b, cols * 4))
    return 0;
  *fused = *bias;
  fused->out[1] = *y;
  memset(d, 0, sizeof *d);
  d->kernel = HK_BIAS_ACT;
  d->slices = 1;
  d->local_size = 64;
  d->p.dim[0] = (uint32_t)rows, d->p.dim[1] = (uint32_t)cols;
  d->p.variant = act->variant;
  for (int i = 0; i < 8; i++) d->p.f[i] = act->params[i];
  for (int i = 0; i < 4; i++) d->p.dyn[i] = act->dyn[i] == HM_ABI_DYN_NONE ? -1 : act->dyn[i];
  uint64_t groups = (rows * cols + 63) / 64;
  d->groups = (uint32_t)(groups < 1 ? 1 : groups > max_groups ? max_groups : groups);
  return 1;
}

int hm_plan_gemm_epilogue(const hm_abi_op *gemm, const hm_abi_op *bias, const hm_abi_op *act, hm_dispatch *d,
                          hm_abi_op *fused) {
  if (gemm->code != HM_ABI_OP_GEMM || !all_f32(gemm) || d->p.variant != 0 || !hm_kernel_is_gemm(d->kernel)) return 0;
  uint64_t m = gemm->dims[0], n = gemm->dims[1], k = gemm->dims[2], c_bytes = m * n * 4;
  const hm_abi_operand *c = &gemm->out[0], *a = &gemm->in[0], *b = &gemm->in[1], *v = &bias->in[0];
  if (bias->code != HM_ABI_OP_BIAS_ADD || !all_f32(bias) || bias->dims[0] != m || bias->dims[1] != n || !v->buffer ||
      bias->out[0].buffer != c->buffer || bias->out[0].offset != c->offset || overlap(v, n * 4, c, c_bytes))
    return 0;
  *fused = *gemm;
  fused->in[2] = *v;
  d->p.variant = 1;
  const hm_abi_operand *y = act ? &act->out[0] : NULL;
  if (!act || !activates(act, c, m, n) || overlap(y, c_bytes, v, n * 4) || overlap(y, c_bytes, a, m * k * 4) ||
      overlap(y, c_bytes, b, k * n * 4))
    return 1;
  fused->out[1] = *y;
  d->p.variant = 2 + act->variant;
  d->p.f[2] = act->params[0];
  d->p.dyn[2] = act->dyn[0] == HM_ABI_DYN_NONE ? -1 : act->dyn[0];
  return 2;
}

int hm_plan_gemm_act_backward(const hm_abi_op *gemm, const hm_abi_op *act, hm_dispatch *d, hm_abi_op *fused) {
  if (gemm->code != HM_ABI_OP_GEMM || !all_f32(gemm) || d->p.variant != 0 || !hm_kernel_is_gemm(d->kernel)) return 0;
  uint64_t m = gemm->dims[0], n = gemm->dims[1], k = gemm->dims[2], c_bytes = m * n * 4;
  const hm_abi_operand *c = &gemm->out[0], *z = &act->in[0], *dz = &act->out[0];
  uint32_t v = act->variant;
  if (act->code != HM_ABI_OP_ACT_BACKWARD || !all_f32(act) || v == HM_ABI_ACT_SOFTMAX || v == HM_ABI_ACT_SIGMOID ||
      v == HM_ABI_ACT_TANH || v == HM_ABI_ACT_IDENTITY || act->dims[0] != m || act->dims[1] != n ||
      act->params[1] != 0.0f || act->dyn[1] != HM_ABI_DYN_NONE || act->in[2].buffer != c->buffer ||
      act->in[2].offset != c->offset || !z->buffer || !dz->buffer)
    return 0;
  if (overlap(dz, c_bytes, c, c_bytes) || overlap(dz, c_bytes, z, c_bytes) ||
      overlap(dz, c_bytes, &gemm->in[0], m * k * 4) || overlap(dz, c_bytes, &gemm->in[1], k * n * 4))
    return 0;
  *fused = *gemm;
  fused->in[2] = *z;
  fused->out[1] = *dz;
  d->p.variant = HM_GEMM_ACT_BWD + v;
  d->p.f[2] = act->params[0];
  d->p.dyn[2] = act->dyn[0] == HM_ABI_DYN_NONE ? -1 : act->dyn[0];
  return 1;
}

int hm_plan_fusion(const hm_abi_op *op, const hm_abi_op *next, const hm_abi_op *after, uint32_t max_groups,
                   hm_dispatch *d, hm_abi_op *fused) {
  if (!next) return 0;
  if (hm_plan_gemm_act_backward(op, next, d, fused)) return 1;
  int absorbed = hm_plan_gemm_epilogue(op, next, after, d, fused);
  if (!absorbed && hm_plan_bias_act(op, next, max_groups, fused, d)) absorbed = 1;
  return absorbed;
}

#define F32 HM_ABI_DTYPE_F32
#define CAP(op, din, dacc, dout, num, variants) {op, din, dacc, dout, num, 0, variants, 0.0f, {0, 0, 0}}
static const hm_abi_capability kernel_caps[] = {
    CAP(HM_ABI_OP_GEMM, F32, F32, F32, HM_ABI_NUMERICS_F32, 0),
#define ROW(...) CAP(__VA_ARGS__),
    HM_PORTABLE_CAPS(ROW)
    HM_WINDOW_CAPS(ROW) /* the window ops, dropout and the normalizations */
#undef ROW
};

const hm_abi_capability *hm_kernel_caps(uint32_t *n) {
  *n = (uint32_t)(sizeof kernel_caps / sizeof kernel_caps[0]);
  return kernel_caps;
}

void hm_print_launch_profile(const char *plugin, const char *device, const hm_launch_time *t, uint32_t n,
                             uint32_t runs, double span_ms, int barriers) {
  if (!t || runs < 2) return;
  double total = 0;
  for (uint32_t d = 0; d < n; d++) total += t[d].ms;
  char between[64] = "";
  if (barriers >= 0) snprintf(between, sizeof between, " and %d barriers between them", barriers);
  fprintf(stderr, "%s profile: %s, %u launches%s, mean of %u runs: %.3f ms a run\n", plugin, device, n, between,
          runs - 1, total / (runs - 1));
  fprintf(stderr, "%s profile: %.3f ms a run from the first launch's start to the last one's end\n", plugin,
          span_ms / (runs - 1));
  fprintf(stderr, "%s profile:  #  op  op code  kernel             variant        ms      %%\n", plugin);
  for (uint32_t d = 0; d < n; d++)
    fprintf(stderr, "%s profile: %2u %3u %8u  %-18s %7u %9.3f %6.1f\n", plugin, d, t[d].op, t[d].code,
            hm_kernel_name(t[d].kernel), t[d].variant, t[d].ms / (runs - 1), total > 0 ? 100.0 * t[d].ms / total : 0.0);
}

static int add_access(hm_hazards *h, hm_access a) {
  if (h->n == h->cap) {
    size_t cap = h->cap ? 2 * h->cap : 32;
    hm_access *grown = realloc(h->pending, cap * sizeof *grown);
    if (!grown) return 1;
    h->pending = grown;
    h->cap = cap;
  }
  h->pending[h->n++] = a;
  return 0;
}

int hm_hazards_launch(hm_hazards *h, const hm_abi_op *ops, size_t n_ops, const void *scratch) {
  if (h->always) return 1;
  size_t before = h->n; /* this launch's accesses go after the pending ones */
  int fail = 0;
  for (size_t i = 0; i < n_ops && !fail; i++) {
    hm_operand_req in[HM_ABI_MAX_OPERANDS], out[HM_ABI_MAX_OPERANDS];
    (void)hm_op_requirements(&ops[i], in, out);
    for (int k = 0; k < 2 * HM_ABI_MAX_OPERANDS && !fail; k++) {
      const hm_abi_operand *o = k < HM_ABI_MAX_OPERANDS ? &ops[i].in[k] : &ops[i].out[k - HM_ABI_MAX_OPERANDS];
      uint64_t bytes = (k < HM_ABI_MAX_OPERANDS ? in[k] : out[k - HM_ABI_MAX_OPERANDS]).bytes;
      if (!o->buffer) continue;
      uint64_t end = bytes && bytes <= UINT64_MAX - o->offset ? o->offset + bytes : UINT64_MAX;
      fail = add_access(h, (hm_access){o->buffer, o->offset, end, k >= HM_ABI_MAX_OPERANDS});
    }
  }
  if (scratch && !fail) fail = add_access(h, (hm_access){scratch, 0, UINT64_MAX, 1});
  if (fail) {
    h->always = 1;
    return 1;
  }
  int wait = 0;
  for (size_t a = before; a < h->n && !wait; a++)
    for (size_t p = 0; p < before && !wait; p++) {
      const hm_access *x = &h->pending[a], *y = &h->pending[p];
      wait = x->buffer == y->buffer && x->begin < y->end && y->begin < x->end && (x->write || y->write);
    }
  if (wait) { /* the barrier: only this launch's accesses stay pending */
    memmove(h->pending, h->pending + before, (h->n - before) * sizeof *h->pending);
    h->n -= before;
  }
  return wait;
}

void hm_hazards_free(hm_hazards *h) {
  free(h->pending);
  memset(h, 0, sizeof *h);
}
