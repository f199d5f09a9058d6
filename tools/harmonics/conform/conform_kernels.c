/*
 * Kernel tier: every op of the ABI at every precision and at edge shapes (1,
 * primes, sizes that are not multiples of common tile sizes, large), against
 * the scalar reference. A case whose (op, dtype, variant) the device does not
 * declare is NOT_SUPPORTED; a declared one that fails is FAIL. Float results
 * are compared by NMSE under the tolerance of the declared numerics class,
 * integer and EXACT results bitwise (the packed formats of abi/QUANT.md
 * always). Also: NaN/Inf propagation, optimizers
 * over many steps with dynamic scalars, and activation and loss gradients
 * against finite differences of the reference forward.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conform.h"
#include "harmonics/names.h"
#include "hm_reference.h"

typedef enum kkind { K_PLAIN, K_NAN, K_STEPS, K_GRAD } kkind;

typedef struct kcase {
  uint32_t op, din, dout, variant, flags;
  uint64_t dims[3];
  float params[8];
  kkind kind;
  int steps;
  unsigned id;
} kcase;

#define MAX_CASES 2048
static kcase pool[MAX_CASES];
static unsigned pool_n;

static kcase *new_case(uint32_t op, uint32_t din, uint32_t dout) {
  if (pool_n >= MAX_CASES) { /* a bug in this file, not a plugin's fault */
    fprintf(stderr, "harmonics conform: more than %d kernel cases\n", MAX_CASES);
    exit(3);
  }
  kcase *k = &pool[pool_n];
  memset(k, 0, sizeof *k);
  k->op = op;
  k->din = din;
  k->dout = dout;
  k->id = pool_n++;
  return k;
}

static size_t esize(uint32_t d) {
  return d == HM_ABI_DTYPE_U8 || d == HM_ABI_DTYPE_I8 ? 1 : d == HM_ABI_DTYPE_F16 || d == HM_ABI_DTYPE_BF16 ? 2 : 4;
}

/* ===== The test body ===== */

static int has_variant(uint32_t op) { return op == HM_ABI_OP_ACT_FORWARD || op == HM_ABI_OP_ACT_BACKWARD || op == HM_ABI_OP_LOSS; }

static void describe(const kcase *k, uint64_t seed, char *buf, size_t cap) {
  snprintf(buf, cap, "%s %s->%s%s%s dims %llux%llux%llu flags %u params [%g %g %g %g], seed %llu (inputs from %llu)", hm_op_name(k->op),
           hm_dtype_name(k->din), hm_dtype_name(k->dout), has_variant(k->op) ? " " : "",
           has_variant(k->op) ? (k->op == HM_ABI_OP_LOSS ? hm_loss_name(k->variant) : hm_activation_name(k->variant)) : "",
           (unsigned long long)k->dims[0], (unsigned long long)k->dims[1], (unsigned long long)k->dims[2], k->flags,
           (double)k->params[0], (double)k->params[1], (double)k->params[2], (double)k->params[3],
           (unsigned long long)(seed - 7919ull * k->id), (unsigned long long)seed);
}

typedef struct bufs {
  float *f[8];
  size_t n;
} bufs;

static float *fbuf(bufs *b, size_t n, float lo, float hi, uint64_t seed) {
  float *x = malloc((n ? n : 1) * sizeof *x);
  conform_fill_uniform(x, n, lo, hi, seed);
  b->f[b->n++] = x;
  return x;
}

static void free_bufs(bufs *b) {
  for (size_t i = 0; i < b->n; i++) free(b->f[i]);
}

/* Compares output i by the declared numerics class. */
static void compare(const conform_ctx *c, const kcase *k, const conform_op_case *oc, void *dev[4], void *ref[4],
                    uint64_t seed, conform_result *r) {
  int num = conform_numerics(c, k->op, k->din, k->dout);
  double tol = conform_tolerance(num);
  for (int i = 0; i < 4 && r->status == CONFORM_PASS; i++) {
    if (!oc->out[i].data) continue;
    char what[400];
    describe(k, seed, what, sizeof what);
    int is_float = !(k->op == HM_ABI_OP_GATHER_ROWS && k->din == HM_ABI_DTYPE_I32) &&
                   !((k->op == HM_ABI_OP_FILL || k->op == HM_ABI_OP_COPY) && k->dout != HM_ABI_DTYPE_F32 &&
                     k->din != HM_ABI_DTYPE_F32);
    int packed = k->op >= HM_ABI_OP_QUANTIZE && k->op <= HM_ABI_OP_GEMM_Q3;
    if (num == HM_ABI_NUMERICS_EXACT || !is_float || packed) {
      if (memcmp(dev[i], ref[i], oc->out[i].bytes) != 0) {
        size_t at = 0;
        while (at < oc->out[i].bytes && ((unsigned char *)dev[i])[at] == ((unsigned char *)ref[i])[at]) at++;
        conform_fail(r, "%s: out[%d] differs from the reference at byte %zu (numerics exact)", what, i, at);
      }
      continue;
    }
    double e = conform_nmse(ref[i], dev[i], oc->out[i].bytes / 4);
    if (!(e <= tol)) conform_fail(r, "%s: out[%d] NMSE %.3g > %.0e (numerics %s)", what, i, e, tol, hm_numerics_name((uint32_t)num));
  }
}

#define IN(i, ptr, bytes) oc->in[i] = (conform_operand){(ptr), (bytes)}
#define OUT(i, ptr, bytes) oc->out[i] = (conform_operand){(ptr), (bytes)}

/* GEMM at every precision, and the packed matmuls on reference-quantized rows. */
static void operands_matmul(const kcase *k, uint64_t seed, conform_op_case *oc, bufs *b) {
  size_t d0 = (size_t)k->dims[0], d1 = (size_t)k->dims[1], d2 = (size_t)k->dims[2];
  (void)d0, (void)d1, (void)d2;
  switch (k->op) {
    case HM_ABI_OP_GEMM:
      IN(0, fbuf(b, d0 * d2, -1, 1, seed + 1), d0 * d2 * 4);
      IN(1, fbuf(b, d2 * d1, -1, 1, seed + 2), d2 * d1 * 4);
      OUT(0, fbuf(b, d0 * d1, -1, 1, seed + 3), d0 * d1 * 4);
      if (k->kind == K_NAN) {
        ((float *)oc->in[0].data)[0] = NAN;
        ((float *)oc->in[1].data)[d1 > 1 ? 1 : 0] = INFINITY;
      }
      break;
    case HM_ABI_OP_GEMM_Q8:
    case HM_ABI_OP_GEMM_Q4:
    case HM_ABI_OP_GEMM_Q3: {
      int q = (int)k->din;
      size_t rb = hm_ref_q_row_bytes(q, d2);
      float *a = fbuf(b, d0 * d2, -1, 1, seed + 1), *w = fbuf(b, d1 * d2, -0.5f, 0.5f, seed + 2);
      uint8_t *qa = (uint8_t *)fbuf(b, d0 * rb / 4 + 1, 0, 0, seed), *qw = (uint8_t *)fbuf(b, d1 * rb / 4 + 1, 0, 0, seed);
      for (size_t i = 0; i < d0; i++) hm_ref_quantize_row(q, d2, a + i * d2, qa + i * rb);
      for (size_t i = 0; i < d1; i++) hm_ref_quantize_row(q, d2, w + i * d2, qw + i * rb);
      oc->op.dtype_acc = HM_ABI_DTYPE_I32;
      IN(0, qa, d0 * rb);
      IN(1, qw, d1 * rb);
      OUT(0, fbuf(b, d0 * d1, -1, 1, seed + 3), d0 * d1 * 4);
      break;
    }
    default: break;
  }
}

/* Bias, activation forward and backward. */
static void operands_activation(const kcase *k, uint64_t seed, conform_op_case *oc, bufs *b) {
  size_t d0 = (size_t)k->dims[0], d1 = (size_t)k->dims[1], d2 = (size_t)k->dims[2];
  (void)d0, (void)d1, (void)d2;
  switch (k->op) {
    case HM_ABI_OP_BIAS_ADD:
      IN(0, fbuf(b, d1, -1, 1, seed + 1), d1 * 4);
      OUT(0, fbuf(b, d0 * d1, -1, 1, seed + 2), d0 * d1 * 4);
      break;
    case HM_ABI_OP_ACT_FORWARD: {
      float *x = fbuf(b, d0 * d1, -4, 4, seed + 1);
      if (k->kind == K_NAN) {
        x[0] = NAN;
        if (d0 * d1 > 2) x[1] = INFINITY, x[2] = -INFINITY;
      }
      IN(0, x, d0 * d1 * 4);
      OUT(0, fbuf(b, d0 * d1, -1, 1, seed + 2), d0 * d1 * 4);
      break;
    }
    case HM_ABI_OP_ACT_BACKWARD: {
      float *x = fbuf(b, d0 * d1, -4, 4, seed + 1), *y = fbuf(b, d0 * d1, 0, 0, seed);
      hm_ref_act_forward((int)k->variant, k->params[0], d0, d1, x, y);
      IN(0, x, d0 * d1 * 4);
      IN(1, y, d0 * d1 * 4);
      IN(2, fbuf(b, d0 * d1, -1, 1, seed + 2), d0 * d1 * 4);
      OUT(0, fbuf(b, d0 * d1, -1, 1, seed + 3), d0 * d1 * 4);
      break;
    }
    default: break;
  }
}

/* Losses with dense or class-index targets. */
static void operands_loss(const kcase *k, uint64_t seed, conform_op_case *oc, bufs *b) {
  size_t d0 = (size_t)k->dims[0], d1 = (size_t)k->dims[1], d2 = (size_t)k->dims[2];
  (void)d0, (void)d1, (void)d2;
  switch (k->op) {
    case HM_ABI_OP_LOSS: {
      int ci = (k->flags & HM_ABI_OP_FLAG_CLASS_INDEX) != 0;
      IN(0, fbuf(b, d0 * d1, -3, 3, seed + 1), d0 * d1 * 4);
      float *t = fbuf(b, d0 * d1, k->variant == HM_ABI_LOSS_BCE || k->variant == HM_ABI_LOSS_CROSS_ENTROPY ? 0 : -2, k->variant == HM_ABI_LOSS_BCE || k->variant == HM_ABI_LOSS_CROSS_ENTROPY ? 1 : 2, seed + 2);
      if (ci) {
        int32_t *labels = (int32_t *)t;
        for (size_t i = 0; i < d0; i++) labels[i] = (int32_t)((i * 7 + seed) % d1);
        IN(1, labels, d0 * 4);
      } else {
        IN(1, t, d0 * d1 * 4);
      }
      OUT(0, fbuf(b, 1, 0, 1, seed + 3), 4);
      OUT(1, fbuf(b, d0 * d1, -1, 1, seed + 4), d0 * d1 * 4);
      break;
    }
    default: break;
  }
}

/* Reductions and element-wise vector ops. */
static void operands_vector(const kcase *k, uint64_t seed, conform_op_case *oc, bufs *b) {
  size_t d0 = (size_t)k->dims[0], d1 = (size_t)k->dims[1], d2 = (size_t)k->dims[2];
  (void)d0, (void)d1, (void)d2;
  switch (k->op) {
    case HM_ABI_OP_REDUCE_ROWS:
    case HM_ABI_OP_REDUCE_COLS:
      IN(0, fbuf(b, d0 * d1, -2, 2, seed + 1), d0 * d1 * 4);
      if (k->op == HM_ABI_OP_REDUCE_ROWS) OUT(0, fbuf(b, d1, -1, 1, seed + 2), d1 * 4);
      else OUT(0, fbuf(b, d0, -1, 1, seed + 2), d0 * 4);
      break;
    case HM_ABI_OP_SUM_SQUARES: {
      float *x = fbuf(b, d0, -2, 2, seed + 1);
      if (k->kind == K_NAN) x[d0 / 2] = NAN;
      IN(0, x, d0 * 4);
      OUT(0, fbuf(b, 1, 0, 1, seed + 2), 4);
      break;
    }
    case HM_ABI_OP_CLIP:
    case HM_ABI_OP_SCALE: {
      float *x = fbuf(b, d0, -3, 3, seed + 1);
      if (k->kind == K_NAN) {
        x[0] = NAN;
        if (d0 > 2) x[1] = INFINITY, x[2] = -INFINITY;
      }
      OUT(0, x, d0 * 4);
      break;
    }
    case HM_ABI_OP_AXPY:
      IN(0, fbuf(b, d0, -3, 3, seed + 1), d0 * 4);
      OUT(0, fbuf(b, d0, -3, 3, seed + 2), d0 * 4);
      break;
    case HM_ABI_OP_FILL:
      OUT(0, fbuf(b, d0, -1, 1, seed + 1), d0 * 4);
      break;
    case HM_ABI_OP_COPY: {
      size_t es = esize(k->din);
      IN(0, fbuf(b, (d0 * es + 3) / 4 + 1, -1, 1, seed + 1), d0 * es);
      OUT(0, fbuf(b, (d0 * es + 3) / 4 + 1, -1, 1, seed + 2), d0 * es);
      break;
    }
    default: break;
  }
}

/* Row gathers, with out-of-range indices. */
static void operands_gather(const kcase *k, uint64_t seed, conform_op_case *oc, bufs *b) {
  size_t d0 = (size_t)k->dims[0], d1 = (size_t)k->dims[1], d2 = (size_t)k->dims[2];
  (void)d0, (void)d1, (void)d2;
  switch (k->op) {
    case HM_ABI_OP_GATHER_ROWS: {
      size_t es = esize(k->din);
      unsigned char *src = (unsigned char *)fbuf(b, (d2 * d1 * es + 3) / 4, 0, 0, seed);
      for (size_t i = 0; i < d2 * d1 * es; i++) src[i] = (unsigned char)((i * 131 + seed) >> 1);
      if (k->din == HM_ABI_DTYPE_F32) conform_fill_uniform((float *)src, d2 * d1, -2, 2, seed + 5);
      int32_t *idx = (int32_t *)fbuf(b, d0, 0, 0, seed);
      for (size_t i = 0; i < d0; i++) idx[i] = (int32_t)((i * 7919 + seed) % d2);
      if (d0 > 3) {
        idx[1] = -1; /* out-of-range indices give zero rows */
        idx[3] = (int32_t)d2;
      }
      IN(0, src, d2 * d1 * es);
      IN(1, idx, d0 * 4);
      OUT(0, fbuf(b, d0 * d1, -1, 1, seed + 3), d0 * d1 * 4);
      break;
    }
    default: break;
  }
}

/* Quantize (every kind of block) and dequantize (any bytes). */
static void operands_packed(const kcase *k, uint64_t seed, conform_op_case *oc, bufs *b) {
  size_t d0 = (size_t)k->dims[0], d1 = (size_t)k->dims[1], d2 = (size_t)k->dims[2];
  (void)d0, (void)d1, (void)d2;
  switch (k->op) {
    case HM_ABI_OP_QUANTIZE: {
      /* Blocks of every kind: ordinary, zero, huge (saturated scale), tiny
       * (subnormal binary16 scale), exact ties, and NaN/Inf values. */
      float *x = fbuf(b, d0 * d1, -2, 2, seed + 1);
      for (size_t i = 0; i < d0 * d1; i++) {
        size_t blk = (i % d1) / 64 + i / d1;
        switch (blk % 6) {
          case 1: x[i] = 0.0f; break;
          case 2: x[i] *= 1.0e6f; break;
          case 3: x[i] *= 1.0e-7f; break;
          case 4: x[i] = (float)(int)(x[i] * 4.0f) * 0.5f; break;
          case 5: if (i % 11 == 0) x[i] = i % 2 ? INFINITY : NAN; break;
          default: break;
        }
      }
      size_t bytes = d0 * hm_ref_q_row_bytes((int)k->dout, d1);
      IN(0, x, d0 * d1 * 4);
      OUT(0, fbuf(b, bytes / 4 + 1, 0, 0, seed), bytes);
      memset(oc->out[0].data, 0xa5, bytes); /* every byte must be written */
      break;
    }
    case HM_ABI_OP_DEQUANTIZE: {
      size_t rb = hm_ref_q_row_bytes((int)k->din, d1), bb = hm_ref_q_block_bytes((int)k->din);
      uint8_t *q = (uint8_t *)fbuf(b, d0 * rb / 4 + 1, 0, 0, seed);
      /* Any byte pattern with a finite scale, including the unused most
       * negative codes and negative scales. */
      for (size_t i = 0; i < d0 * rb; i++) q[i] = (uint8_t)((i * 97 + seed) >> 3);
      for (size_t off = 0; off < d0 * rb; off += bb) q[off + 1] &= 0xbb;
      IN(0, q, d0 * rb);
      OUT(0, fbuf(b, d0 * d1, -1, 1, seed + 2), d0 * d1 * 4);
      break;
    }
    default: break;
  }
}

/* Optimizer steps with their state. */
static void operands_optimizer(const kcase *k, uint64_t seed, conform_op_case *oc, bufs *b) {
  size_t d0 = (size_t)k->dims[0], d1 = (size_t)k->dims[1], d2 = (size_t)k->dims[2];
  (void)d0, (void)d1, (void)d2;
  switch (k->op) {
    default: { /* optimizers */
      float *g = fbuf(b, d0, -0.5f, 0.5f, seed + 1);
      if (k->kind == K_NAN) g[d0 / 2] = NAN;
      IN(0, g, d0 * 4);
      OUT(0, fbuf(b, d0, -1, 1, seed + 2), d0 * 4);
      int states = k->op == HM_ABI_OP_SGD ? (k->params[1] != 0.0f) : k->op == HM_ABI_OP_RMSPROP ? 1 : 2;
      for (int s = 0; s < states; s++) {
        float *st = fbuf(b, d0, 0, 0.1f, seed + 3 + (uint64_t)s);
        if (s == 0 && k->op != HM_ABI_OP_RMSPROP) conform_fill_uniform(st, d0, -0.1f, 0.1f, seed + 9);
        OUT(1 + s, st, d0 * 4);
      }
      break;
    }
  }
}

#undef IN
#undef OUT

/* Builds the operands of |k| into |oc| with inputs from |seed|. */
static void build(const kcase *k, uint64_t seed, conform_op_case *oc, bufs *b) {
  memset(oc, 0, sizeof *oc);
  oc->op = hm_op_init(k->op);
  oc->op.dtype_in = k->din;
  oc->op.dtype_out = k->dout;
  oc->op.dtype_acc = k->dout;
  oc->op.variant = k->variant;
  oc->op.flags = k->flags;
  for (int i = 0; i < 3; i++) oc->op.dims[i] = k->dims[i];
  memcpy(oc->op.params, k->params, sizeof k->params);
  switch (k->op) {
    case HM_ABI_OP_GEMM:
    case HM_ABI_OP_GEMM_Q8:
    case HM_ABI_OP_GEMM_Q4:
    case HM_ABI_OP_GEMM_Q3: operands_matmul(k, seed, oc, b); break;
    case HM_ABI_OP_BIAS_ADD:
    case HM_ABI_OP_ACT_FORWARD:
    case HM_ABI_OP_ACT_BACKWARD: operands_activation(k, seed, oc, b); break;
    case HM_ABI_OP_LOSS: operands_loss(k, seed, oc, b); break;
    case HM_ABI_OP_GATHER_ROWS: operands_gather(k, seed, oc, b); break;
    case HM_ABI_OP_QUANTIZE:
    case HM_ABI_OP_DEQUANTIZE: operands_packed(k, seed, oc, b); break;
    case HM_ABI_OP_REDUCE_ROWS:
    case HM_ABI_OP_REDUCE_COLS:
    case HM_ABI_OP_SUM_SQUARES:
    case HM_ABI_OP_CLIP:
    case HM_ABI_OP_SCALE:
    case HM_ABI_OP_AXPY:
    case HM_ABI_OP_FILL:
    case HM_ABI_OP_COPY: operands_vector(k, seed, oc, b); break;
    default: operands_optimizer(k, seed, oc, b); break;
  }
}

static void test_kernel(conform_ctx *c, const void *arg, conform_result *r) {
  const kcase *k = arg;
  int variant = has_variant(k->op) ? (int)k->variant : -1;
  if (!conform_declares(c, k->op, k->din, k->dout, variant)) {
    conform_not_supported(r, "%s %s->%s%s%s is not declared", hm_op_name(k->op), hm_dtype_name(k->din),
                          hm_dtype_name(k->dout), variant >= 0 ? " " : "",
                          variant >= 0 ? (k->op == HM_ABI_OP_LOSS ? hm_loss_name(k->variant) : hm_activation_name(k->variant)) : "");
    return;
  }
  uint64_t seed = c->seed + 7919ull * k->id;
  bufs b = {{0}, 0};
  conform_op_case oc;
  build(k, seed, &oc, &b);
  int steps = k->kind == K_STEPS ? k->steps : 1;
  double scalars[4] = {0};
  for (int s = 1; s <= steps && r->status == CONFORM_PASS; s++) {
    if (k->kind == K_STEPS) {
      /* Dynamic lr and Adam bias corrections, as a training loop passes them. */
      scalars[0] = (double)k->params[0] / s;
      scalars[1] = 1.0 - pow((double)k->params[3], s);
      scalars[2] = 1.0 - pow((double)k->params[4], s);
      oc.op.dyn[0] = 0;
      if (k->op != HM_ABI_OP_SGD && k->op != HM_ABI_OP_RMSPROP) {
        oc.op.dyn[1] = 1;
        oc.op.dyn[2] = 2;
      }
      oc.scalars = scalars;
      oc.n_scalars = 3;
      conform_fill_uniform((float *)oc.in[0].data, k->dims[0], -0.5f, 0.5f, seed + 100 + (uint64_t)s);
    }
    void *dev[4], *ref[4];
    if (conform_run_op(c, &oc, dev, ref, r)) {
      char what[400];
      describe(k, seed, what, sizeof what);
      char keep[512];
      snprintf(keep, sizeof keep, "%s", r->detail);
      conform_fail(r, "%s (step %d): %s", what, s, keep);
      break;
    }
    compare(c, k, &oc, dev, ref, seed, r);
    if (r->status != CONFORM_PASS && steps > 1) {
      char keep[512];
      snprintf(keep, sizeof keep, "%s", r->detail);
      conform_fail(r, "step %d of %d: %s", s, steps, keep);
    }
    /* Continue the trajectory from the plugin's own state. */
    for (int i = 0; i < 4; i++)
      if (oc.out[i].data && dev[i]) memcpy(oc.out[i].data, dev[i], oc.out[i].bytes);
    conform_free_outputs(dev);
    conform_free_outputs(ref);
  }
  free_bufs(&b);
}

/* The plugin's backward against central differences of the double-precision
 * reference forward (activations) or loss. */
static void test_gradient(conform_ctx *c, const void *arg, conform_result *r) {
  const kcase *k = arg;
  uint32_t op = k->op == HM_ABI_OP_LOSS ? HM_ABI_OP_LOSS : HM_ABI_OP_ACT_BACKWARD;
  if (!conform_declares(c, op, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, (int)k->variant)) {
    conform_not_supported(r, "%s %s is not declared", hm_op_name(op),
                          op == HM_ABI_OP_LOSS ? hm_loss_name(k->variant) : hm_activation_name(k->variant));
    return;
  }
  uint64_t seed = c->seed + 7919ull * k->id;
  bufs b = {{0}, 0};
  conform_op_case oc;
  build(k, seed, &oc, &b);
  size_t rows = (size_t)k->dims[0], cols = (size_t)k->dims[1], n = rows * cols;
  void *dev[4], *ref[4];
  if (conform_run_op(c, &oc, dev, ref, r)) {
    free_bufs(&b);
    return;
  }
  const float *got = op == HM_ABI_OP_LOSS ? dev[1] : dev[0];
  const float *x = oc.in[0].data;
  const float *dy = op == HM_ABI_OP_LOSS ? NULL : oc.in[2].data;
  double *xd = malloc(n * sizeof *xd), worst = 0;
  size_t worst_at = 0;
  for (size_t i = 0; i < n; i++) xd[i] = x[i];
  for (size_t i = 0; i < n; i++) {
    const double h = 1e-4;
    double fd;
    if (op == HM_ABI_OP_LOSS) {
      /* d(mean loss)/dP via the float reference on perturbed copies. */
      float *p = malloc(n * sizeof *p), lp = 0, lm = 0;
      for (size_t j = 0; j < n; j++) p[j] = x[j];
      if ((k->variant == HM_ABI_LOSS_MAE || k->variant == HM_ABI_LOSS_HUBER) && !(k->flags & HM_ABI_OP_FLAG_CLASS_INDEX)) {
        double e = fabs((double)x[i] - ((const float *)oc.in[1].data)[i]);
        if (e < 1e-2 || fabs(e - k->params[1]) < 1e-2) {
          free(p);
          continue; /* kinks */
        }
      }
      p[i] = (float)(xd[i] + 1e-2);
      hm_ref_loss((int)k->variant, (k->flags & HM_ABI_OP_FLAG_CLASS_INDEX) != 0, k->params[1], 1, 0, 0, rows, cols, p,
                  oc.in[1].data, &lp, NULL);
      p[i] = (float)(xd[i] - 1e-2);
      hm_ref_loss((int)k->variant, (k->flags & HM_ABI_OP_FLAG_CLASS_INDEX) != 0, k->params[1], 1, 0, 0, rows, cols, p,
                  oc.in[1].data, &lm, NULL);
      fd = ((double)lp - lm) / ((double)(float)(xd[i] + 1e-2) - (double)(float)(xd[i] - 1e-2));
      free(p);
    } else if (k->variant == HM_ABI_ACT_SOFTMAX) {
      size_t row = i / cols;
      double plus = 0, minus = 0;
      for (int pass = 0; pass < 2; pass++) {
        double mx = -INFINITY, sum = 0, acc = 0;
        for (size_t j = 0; j < cols; j++) {
          double v = xd[row * cols + j] + (row * cols + j == i ? (pass ? -h : h) : 0);
          if (v > mx) mx = v;
        }
        for (size_t j = 0; j < cols; j++) sum += exp(xd[row * cols + j] + (row * cols + j == i ? (pass ? -h : h) : 0) - mx);
        for (size_t j = 0; j < cols; j++)
          acc += dy[row * cols + j] * exp(xd[row * cols + j] + (row * cols + j == i ? (pass ? -h : h) : 0) - mx) / sum;
        if (pass) minus = acc;
        else plus = acc;
      }
      fd = (plus - minus) / (2 * h);
    } else {
      if (fabs(xd[i]) < 1e-3) continue; /* kinks at 0 */
      fd = dy[i] * (hm_ref_activation((int)k->variant, xd[i] + h, k->params[0]) -
                    hm_ref_activation((int)k->variant, xd[i] - h, k->params[0])) / (2 * h);
    }
    double err = fabs(fd - got[i]) / (1e-3 + fabs(fd));
    if (err > worst) {
      worst = err;
      worst_at = i;
    }
  }
  if (worst > 2e-2) {
    char what[400];
    describe(k, seed, what, sizeof what);
    conform_fail(r, "%s: gradient element %zu off by %.3g (relative) from finite differences", what, worst_at, worst);
  }
  free(xd);
  conform_free_outputs(dev);
  conform_free_outputs(ref);
  free_bufs(&b);
}

/* ===== Enumeration ===== */

static const char *dt(uint32_t d) { return hm_dtype_name(d); }

static const uint64_t rc_shapes[][2] = {{1, 1}, {3, 7}, {65, 130}, {1000, 3}};

/* GEMM at f32 and the 16-bit input precisions, transposes, alpha/beta, NaN. */
static void add_gemm_cases(conform_suite *s) {
  const uint32_t F32 = HM_ABI_DTYPE_F32;
  kcase *k = NULL;
  static const uint64_t gemm_shapes[][3] = {{1, 1, 1},   {7, 13, 5},  {31, 17, 257}, {129, 3, 65},
                                            {2, 300, 2}, {64, 128, 784}, {256, 256, 256}};
  static const float ab[][2] = {{1, 0}, {0.5f, 1.5f}};
  const uint32_t gemm_types[] = {F32, HM_ABI_DTYPE_TF32, HM_ABI_DTYPE_F16, HM_ABI_DTYPE_BF16};
  for (int t = 0; t < 4; t++)
    for (size_t sh = 0; sh < sizeof gemm_shapes / sizeof gemm_shapes[0]; sh++)
      for (uint32_t fl = 0; fl < 4; fl++)
        for (int a = 0; a < 2; a++) {
          if (t > 0 && (a > 0 || (fl & 1))) continue; /* the 16-bit paths: fewer variants */
          k = new_case(HM_ABI_OP_GEMM, gemm_types[t], F32);
          memcpy(k->dims, gemm_shapes[sh], sizeof k->dims);
          k->flags = fl;
          k->params[0] = ab[a][0];
          k->params[1] = ab[a][1];
          conform_add(s, "kernel.gemm", test_kernel, k, 1, "kernel.gemm.%s.%llux%llux%llu%s%s.ab%d", dt(gemm_types[t]),
                      (unsigned long long)k->dims[0], (unsigned long long)k->dims[1], (unsigned long long)k->dims[2],
                      fl & 1 ? ".ta" : "", fl & 2 ? ".tb" : "", a);
        }
  /* f32 shapes for blocked kernels (GPU plugins pick 8x8 or 4x4 register
   * blocks with four-word loads when sizes allow): a 4x4-only edge, ragged
   * 8x8 edges (with a short k and a longer one), a long k (lavapipe ends a
   * shader's loops after 65535 iterations in all), more blocks than
   * invocations launched (and, in add_later_cases, whole blocks over a k
   * that is not a multiple of 4). */
  static const uint64_t blocked_shapes[][3] = {{4, 12, 8},     {36, 20, 64},  {36, 20, 260},
                                               {16, 16, 8192}, {2080, 2080, 4}};
  for (size_t sh = 0; sh < sizeof blocked_shapes / sizeof blocked_shapes[0]; sh++)
    for (uint32_t fl = 0; fl < 4; fl++) {
      k = new_case(HM_ABI_OP_GEMM, F32, F32);
      memcpy(k->dims, blocked_shapes[sh], sizeof k->dims);
      k->flags = fl;
      k->params[0] = ab[fl % 2][0];
      k->params[1] = ab[fl % 2][1];
      conform_add(s, "kernel.gemm", test_kernel, k, 1, "kernel.gemm.f32.%llux%llux%llu%s%s.ab%u",
                  (unsigned long long)k->dims[0], (unsigned long long)k->dims[1], (unsigned long long)k->dims[2],
                  fl & 1 ? ".ta" : "", fl & 2 ? ".tb" : "", fl % 2);
    }
  k = new_case(HM_ABI_OP_GEMM, F32, F32);
  k->dims[0] = 9, k->dims[1] = 11, k->dims[2] = 13, k->params[0] = 1, k->kind = K_NAN;
  conform_add(s, "kernel.gemm", test_kernel, k, 1, "kernel.gemm.f32.nan_inf_propagate");

}

/* Packed integers (abi/QUANT.md): bit-exact whatever the declared class. */
static void add_packed_cases(conform_suite *s) {
  const uint32_t F32 = HM_ABI_DTYPE_F32;
  kcase *k;
  const uint32_t qtypes[3] = {HM_ABI_DTYPE_Q8, HM_ABI_DTYPE_Q4, HM_ABI_DTYPE_Q3};
  const uint32_t qgemm[3] = {HM_ABI_OP_GEMM_Q8, HM_ABI_OP_GEMM_Q4, HM_ABI_OP_GEMM_Q3};
  static const uint64_t q_shapes[][2] = {{1, 64}, {3, 70}, {17, 200}, {64, 784}};
  /* 4x4x64 and 7x9x1000 for the blocked kernels of the GPU plugins: one
   * whole block, and ragged blocks over 16 packed blocks per row. */
  static const uint64_t qg_shapes[][3] = {{1, 1, 1},    {2, 3, 70},     {5, 17, 130},
                                          {1, 67, 1000}, {64, 128, 784}, {4, 4, 64}, {7, 9, 1000}};
  for (int t = 0; t < 3; t++) {
    for (size_t sh = 0; sh < sizeof q_shapes / sizeof q_shapes[0]; sh++) {
      k = new_case(HM_ABI_OP_QUANTIZE, F32, qtypes[t]);
      memcpy(k->dims, q_shapes[sh], 2 * sizeof(uint64_t));
      conform_add(s, "kernel.quant", test_kernel, k, 1, "kernel.quantize.%s.%llux%llu", dt(qtypes[t]),
                  (unsigned long long)k->dims[0], (unsigned long long)k->dims[1]);
      k = new_case(HM_ABI_OP_DEQUANTIZE, qtypes[t], F32);
      memcpy(k->dims, q_shapes[sh], 2 * sizeof(uint64_t));
      conform_add(s, "kernel.quant", test_kernel, k, 1, "kernel.dequantize.%s.%llux%llu", dt(qtypes[t]),
                  (unsigned long long)k->dims[0], (unsigned long long)k->dims[1]);
    }
    for (size_t sh = 0; sh < sizeof qg_shapes / sizeof qg_shapes[0]; sh++) {
      k = new_case(qgemm[t], qtypes[t], F32);
      memcpy(k->dims, qg_shapes[sh], sizeof k->dims);
      conform_add(s, "kernel.quant", test_kernel, k, 1, "kernel.%s.%llux%llux%llu", hm_op_name(qgemm[t]),
                  (unsigned long long)k->dims[0], (unsigned long long)k->dims[1], (unsigned long long)k->dims[2]);
    }
  }

}

/* Bias and every activation forward and backward, with finite differences. */
static void add_activation_cases(conform_suite *s) {
  const uint32_t F32 = HM_ABI_DTYPE_F32;
  kcase *k;
  for (size_t sh = 0; sh < 4; sh++) {
    k = new_case(HM_ABI_OP_BIAS_ADD, F32, F32);
    memcpy(k->dims, rc_shapes[sh], 2 * sizeof(uint64_t));
    conform_add(s, "kernel.bias_add", test_kernel, k, 1, "kernel.bias_add.%llux%llu", (unsigned long long)k->dims[0],
                (unsigned long long)k->dims[1]);
  }
  for (uint32_t act = 0; act < HM_ABI_ACT_COUNT; act++) {
    for (size_t sh = 0; sh < 3; sh++) {
      k = new_case(HM_ABI_OP_ACT_FORWARD, F32, F32);
      k->variant = act;
      memcpy(k->dims, rc_shapes[sh], 2 * sizeof(uint64_t));
      k->params[0] = hm_ref_activation_default_param((int)act);
      conform_add(s, "kernel.act_forward", test_kernel, k, 1, "kernel.act_forward.%s.%llux%llu", hm_activation_name(act),
                  (unsigned long long)k->dims[0], (unsigned long long)k->dims[1]);
    }
    k = new_case(HM_ABI_OP_ACT_FORWARD, F32, F32);
    k->variant = act, k->dims[0] = 2, k->dims[1] = 5, k->kind = K_NAN;
    k->params[0] = hm_ref_activation_default_param((int)act);
    conform_add(s, "kernel.act_forward", test_kernel, k, 1, "kernel.act_forward.%s.nan_inf", hm_activation_name(act));
    for (size_t sh = 0; sh < 3; sh++)
      for (int beta = 0; beta < 2; beta++) {
        k = new_case(HM_ABI_OP_ACT_BACKWARD, F32, F32);
        k->variant = act;
        memcpy(k->dims, rc_shapes[sh], 2 * sizeof(uint64_t));
        k->params[0] = hm_ref_activation_default_param((int)act);
        k->params[1] = beta ? 0.5f : 0.0f;
        conform_add(s, "kernel.act_backward", test_kernel, k, 1, "kernel.act_backward.%s.%llux%llu%s",
                    hm_activation_name(act), (unsigned long long)k->dims[0], (unsigned long long)k->dims[1],
                    beta ? ".beta" : "");
      }
    k = new_case(HM_ABI_OP_ACT_BACKWARD, F32, F32);
    k->variant = act, k->dims[0] = 3, k->dims[1] = 6, k->kind = K_GRAD;
    k->params[0] = hm_ref_activation_default_param((int)act);
    conform_add(s, "kernel.act_backward", test_gradient, k, 1, "kernel.act_backward.%s.finite_differences",
                hm_activation_name(act));
  }
}

/* Every loss, dense and class-index targets, with finite differences. */
static void add_loss_cases(conform_suite *s) {
  const uint32_t F32 = HM_ABI_DTYPE_F32;
  kcase *k;
  static const uint64_t loss_shapes[][2] = {{1, 1}, {4, 10}, {33, 7}, {64, 10}};
  for (uint32_t loss = 0; loss < HM_ABI_LOSS_COUNT; loss++)
    for (int ci = 0; ci < (loss == HM_ABI_LOSS_CROSS_ENTROPY ? 2 : 1); ci++) {
      for (size_t sh = 0; sh < 4; sh++) {
        k = new_case(HM_ABI_OP_LOSS, F32, F32);
        k->variant = loss;
        k->flags = ci ? HM_ABI_OP_FLAG_CLASS_INDEX : 0;
        memcpy(k->dims, loss_shapes[sh], 2 * sizeof(uint64_t));
        k->params[0] = 1, k->params[1] = 1, k->params[2] = 0.5f, k->params[3] = sh == 2 ? 0.5f : 0.0f;
        conform_add(s, "kernel.loss", test_kernel, k, 1, "kernel.loss.%s%s.%llux%llu", hm_loss_name(loss),
                    ci ? ".index" : "", (unsigned long long)k->dims[0], (unsigned long long)k->dims[1]);
      }
      k = new_case(HM_ABI_OP_LOSS, F32, F32);
      k->variant = loss, k->flags = ci ? HM_ABI_OP_FLAG_CLASS_INDEX : 0, k->dims[0] = 3, k->dims[1] = 5, k->kind = K_GRAD;
      k->params[0] = 1, k->params[1] = 1;
      conform_add(s, "kernel.loss", test_gradient, k, 1, "kernel.loss.%s%s.finite_differences", hm_loss_name(loss),
                  ci ? ".index" : "");
    }
}

/* Reductions, element-wise ops, gathers, fill and copy. */
static void add_vector_cases(conform_suite *s) {
  const uint32_t F32 = HM_ABI_DTYPE_F32;
  kcase *k;
  for (int op = 0; op < 2; op++)
    for (size_t sh = 0; sh < 4; sh++) {
      k = new_case(op ? HM_ABI_OP_REDUCE_COLS : HM_ABI_OP_REDUCE_ROWS, F32, F32);
      memcpy(k->dims, rc_shapes[sh], 2 * sizeof(uint64_t));
      k->params[0] = 0.75f, k->params[1] = sh & 1 ? 0.5f : 0.0f;
      conform_add(s, op ? "kernel.reduce_cols" : "kernel.reduce_rows", test_kernel, k, 1, "kernel.%s.%llux%llu",
                  op ? "reduce_cols" : "reduce_rows", (unsigned long long)k->dims[0], (unsigned long long)k->dims[1]);
    }
  static const uint64_t lengths[] = {1, 17, 100003};
  const uint32_t flat_ops[] = {HM_ABI_OP_SUM_SQUARES, HM_ABI_OP_CLIP, HM_ABI_OP_SCALE, HM_ABI_OP_AXPY};
  for (size_t o = 0; o < 4; o++) {
    for (size_t l = 0; l < 3; l++) {
      k = new_case(flat_ops[o], F32, F32);
      k->dims[0] = lengths[l];
      k->params[0] = flat_ops[o] == HM_ABI_OP_CLIP ? 1.0f : 0.75f;
      k->params[1] = l == 1 ? 0.5f : 0.0f;
      conform_add(s, "kernel.elementwise", test_kernel, k, 1, "kernel.%s.n%llu", hm_op_name(flat_ops[o]),
                  (unsigned long long)k->dims[0]);
    }
    if (flat_ops[o] == HM_ABI_OP_AXPY) continue;
    k = new_case(flat_ops[o], F32, F32);
    k->dims[0] = 33, k->params[0] = flat_ops[o] == HM_ABI_OP_CLIP ? 1.0f : 0.75f, k->kind = K_NAN;
    conform_add(s, "kernel.elementwise", test_kernel, k, 1, "kernel.%s.nan_inf", hm_op_name(flat_ops[o]));
  }
  /* Long sums that GPU plugins split over work-groups: accumulating into
   * the output, and a NaN in one group's share; with odd lengths, and with
   * lengths a multiple of 4 (which they may read four words at a time). */
  for (uint64_t n4 = 0; n4 < 2; n4++) {
    k = new_case(HM_ABI_OP_SUM_SQUARES, F32, F32);
    k->dims[0] = n4 ? 1000000 : 1000003, k->params[0] = 0.75f, k->params[1] = 0.5f;
    conform_add(s, "kernel.elementwise", test_kernel, k, 1, "kernel.sum_squares.n%llu.beta",
                (unsigned long long)k->dims[0]);
    k = new_case(HM_ABI_OP_SUM_SQUARES, F32, F32);
    k->dims[0] = n4 ? 40000 : 40001, k->params[0] = 1.0f, k->kind = K_NAN;
    conform_add(s, "kernel.elementwise", test_kernel, k, 1, "kernel.sum_squares.n%llu.nan_inf",
                (unsigned long long)k->dims[0]);
  }
  const uint32_t gather_types[] = {HM_ABI_DTYPE_U8, F32, HM_ABI_DTYPE_I32};
  static const uint64_t gather_shapes[][3] = {{1, 1, 1}, {17, 784, 50}, {64, 3, 1000}};
  for (int t = 0; t < 3; t++)
    for (size_t sh = 0; sh < 3; sh++) {
      uint32_t out = gather_types[t] == HM_ABI_DTYPE_I32 ? HM_ABI_DTYPE_I32 : F32;
      k = new_case(HM_ABI_OP_GATHER_ROWS, gather_types[t], out);
      memcpy(k->dims, gather_shapes[sh], sizeof k->dims);
      if (gather_types[t] == HM_ABI_DTYPE_I32) k->dims[1] = 1;
      k->params[0] = gather_types[t] == HM_ABI_DTYPE_U8 ? 1.0f / 255.0f : 1.0f;
      conform_add(s, "kernel.gather_rows", test_kernel, k, 1, "kernel.gather_rows.%s.%llux%llu.from%llu",
                  dt(gather_types[t]), (unsigned long long)k->dims[0], (unsigned long long)k->dims[1],
                  (unsigned long long)k->dims[2]);
    }
  const uint32_t fill_types[] = {F32, HM_ABI_DTYPE_I32};
  for (int t = 0; t < 2; t++)
    for (int l = 0; l < 2; l++) {
      k = new_case(HM_ABI_OP_FILL, fill_types[t], fill_types[t]);
      k->dims[0] = l ? 1000 : 1;
      k->params[0] = -7.25f;
      conform_add(s, "kernel.fill_copy", test_kernel, k, 1, "kernel.fill.%s.n%llu", dt(fill_types[t]),
                  (unsigned long long)k->dims[0]);
    }
  const uint32_t copy_types[] = {F32, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_U8};
  for (int t = 0; t < 3; t++)
    for (int l = 0; l < 2; l++) {
      k = new_case(HM_ABI_OP_COPY, copy_types[t], copy_types[t]);
      k->dims[0] = l ? 1001 : 1;
      conform_add(s, "kernel.fill_copy", test_kernel, k, 1, "kernel.copy.%s.n%llu", dt(copy_types[t]),
                  (unsigned long long)k->dims[0]);
    }
}

/* Every optimizer over 12 steps, and a NaN gradient. */
static void add_optimizer_cases(conform_suite *s) {
  const uint32_t F32 = HM_ABI_DTYPE_F32;
  kcase *k;
  const uint32_t opts[] = {HM_ABI_OP_SGD, HM_ABI_OP_ADAM, HM_ABI_OP_RMSPROP, HM_ABI_OP_ADAMW, HM_ABI_OP_LAMB};
  static const uint64_t opt_lengths[] = {1, 17, 40000};
  for (size_t o = 0; o < 5; o++) {
    for (int momentum = 0; momentum < (opts[o] == HM_ABI_OP_SGD ? 2 : 1); momentum++)
      for (size_t l = 0; l < 3; l++) {
        k = new_case(opts[o], F32, F32);
        k->dims[0] = opt_lengths[l];
        k->kind = K_STEPS;
        k->steps = 12;
        k->params[0] = 0.01f;
        if (opts[o] == HM_ABI_OP_SGD) k->params[1] = momentum ? 0.9f : 0.0f;
        else if (opts[o] == HM_ABI_OP_RMSPROP) k->params[1] = 0.9f, k->params[2] = 1e-8f;
        else k->params[3] = 0.9f, k->params[4] = 0.999f, k->params[5] = 1e-8f, k->params[6] = opts[o] == HM_ABI_OP_ADAM ? 0 : 0.01f;
        if (opts[o] == HM_ABI_OP_SGD || opts[o] == HM_ABI_OP_RMSPROP) k->params[3] = 0.9f, k->params[4] = 0.999f;
        conform_add(s, "kernel.optimizer", test_kernel, k, 1, "kernel.%s%s.n%llu.12_steps", hm_op_name(opts[o]),
                    momentum ? ".momentum" : "", (unsigned long long)k->dims[0]);
      }
    k = new_case(opts[o], F32, F32);
    k->dims[0] = 21, k->kind = K_NAN, k->params[0] = 0.01f;
    if (opts[o] == HM_ABI_OP_RMSPROP) k->params[1] = 0.9f, k->params[2] = 1e-8f;
    else if (opts[o] != HM_ABI_OP_SGD)
      k->params[1] = 0.1f, k->params[2] = 0.001f, k->params[3] = 0.9f, k->params[4] = 0.999f, k->params[5] = 1e-8f;
    conform_add(s, "kernel.optimizer", test_kernel, k, 1, "kernel.%s.nan_gradient", hm_op_name(opts[o]));
  }
}

/* Cases added after the suite's first release. A case's inputs come from
 * its index (seed + 7919 id), so they go last: inserted earlier, they would
 * give every later case other inputs, and a vendor's failing case would no
 * longer be the same case. */
static void add_later_cases(conform_suite *s) {
  /* Whole 8x8 blocks over a k that is not a multiple of 4: OpenCL's float8
   * path of gemm_x8 reads such operands word by word (hm_dispatch_limits.vec8). */
  for (uint32_t fl = 0; fl < 4; fl++) {
    kcase *k = new_case(HM_ABI_OP_GEMM, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32);
    k->dims[0] = 16, k->dims[1] = 24, k->dims[2] = 10;
    k->flags = fl;
    k->params[0] = fl % 2 ? 0.5f : 1.0f;
    k->params[1] = fl % 2 ? 1.5f : 0.0f;
    conform_add(s, "kernel.gemm", test_kernel, k, 1, "kernel.gemm.f32.16x24x10%s%s.ab%u", fl & 1 ? ".ta" : "",
                fl & 2 ? ".tb" : "", fl % 2);
  }
  /* Tiles of 8 rows x 32 columns cut by C's edges (Vulkan's gemm_sg on
   * 8-lane subgroups; hm_dispatch_limits.subgroup); with B stored [n][k],
   * 10x37x12 has rows that are not four-word aligned, so its block is stored
   * word by word. */
  static const uint64_t tile_shapes[][3] = {{12, 40, 20}, {13, 44, 28}, {10, 37, 12}};
  for (size_t sh = 0; sh < sizeof tile_shapes / sizeof tile_shapes[0]; sh++)
    for (uint32_t fl = 0; fl < 4; fl++) {
      kcase *k = new_case(HM_ABI_OP_GEMM, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32);
      memcpy(k->dims, tile_shapes[sh], sizeof k->dims);
      k->flags = fl;
      k->params[0] = fl % 2 ? 0.5f : 1.0f;
      k->params[1] = fl % 2 ? 1.5f : 0.0f;
      conform_add(s, "kernel.gemm", test_kernel, k, 1, "kernel.gemm.f32.%llux%llux%llu%s%s.ab%u",
                  (unsigned long long)k->dims[0], (unsigned long long)k->dims[1], (unsigned long long)k->dims[2],
                  fl & 1 ? ".ta" : "", fl & 2 ? ".tb" : "", fl % 2);
    }
}

void conform_add_kernel_tests(conform_suite *s) {
  pool_n = 0;
  add_gemm_cases(s);
  add_packed_cases(s);
  add_activation_cases(s);
  add_loss_cases(s);
  add_vector_cases(s);
  add_optimizer_cases(s);
  add_later_cases(s);
}
