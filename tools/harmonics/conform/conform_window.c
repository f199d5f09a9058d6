/*
 * Kernel tier, window ops (SPEC.md §7.5): convolution forward, backward-data
 * and backward-filter, max and average pooling forward and backward, and
 * dropout, at shapes that catch indexing slips — odd sizes, one pixel,
 * stride 2, padding, dilation, groups (depthwise too), accumulation — against
 * the scalar reference by NMSE under the declared numerics class; dropout
 * and the max-pool argmax bitwise. Also batch and layer normalization,
 * forward (training and evaluation) and backward, and IM2COL (bitwise).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conform.h"
#include "harmonics/names.h"
#include "hm_reference.h"

typedef struct wcase {
  uint32_t op, variant, flags;
  uint32_t n, c_in, c_out, h, w, groups;
  uint32_t kh, kw, sh, sw, ph, pw, dh, dw;
  float rate; /* dropout */
  unsigned id;
} wcase;

#define MAX_WINDOW_CASES 256
static wcase cases[MAX_WINDOW_CASES];
static unsigned n_cases;

static hm_abi_op make_op(const wcase *k) {
  hm_abi_op op = hm_op_init(k->op);
  op.variant = k->variant;
  op.flags = k->flags;
  if (k->op == HM_ABI_OP_DROPOUT) {
    op.dims[0] = (uint64_t)k->n * k->c_in * k->h * k->w;
    op.dims[1] = 0x0123456789abcdefull + k->id;
    op.params[0] = k->rate;
    op.params[1] = 41.0f;
    op.params[2] = 1.0f / (1.0f - k->rate);
    return op;
  }
  int pool = k->op == HM_ABI_OP_POOL2D || k->op == HM_ABI_OP_POOL2D_BWD;
  op.dims[0] = k->n;
  op.dims[1] = pool ? k->c_in : HM_ABI_PACK2(k->c_in, k->c_out);
  op.dims[2] = HM_ABI_PACK2(k->h, k->w);
  op.dims[3] = pool ? 0 : k->groups;
  float p[8] = {(float)k->kh, (float)k->kw, (float)k->sh, (float)k->sw, (float)k->ph, (float)k->pw,
                pool ? 0.0f : (float)k->dh, pool ? 0.0f : (float)k->dw};
  memcpy(op.params, p, sizeof p);
  return op;
}

static void describe(const wcase *k, char *buf, size_t cap) {
  if (k->op >= HM_ABI_OP_BATCH_NORM && k->op <= HM_ABI_OP_LAYER_NORM_BWD) {
    snprintf(buf, cap, "%s%s N%u C%u S%u%s", hm_op_name(k->op),
             k->op == HM_ABI_OP_BATCH_NORM ? (k->variant ? " eval" : " train") : "", k->n, k->c_in, k->h * k->w,
             k->flags & HM_ABI_OP_FLAG_ACCUMULATE ? " accumulate" : "");
    return;
  }
  if (k->op == HM_ABI_OP_DROPOUT) {
    snprintf(buf, cap, "dropout n=%u rate %g", k->n * k->c_in * k->h * k->w, (double)k->rate);
    return;
  }
  snprintf(buf, cap, "%s%s%s N%u C%u->%u %ux%u k%ux%u s%ux%u p%ux%u d%ux%u g%u%s", hm_op_name(k->op),
           k->op == HM_ABI_OP_POOL2D || k->op == HM_ABI_OP_POOL2D_BWD ? " " : "",
           k->op == HM_ABI_OP_POOL2D || k->op == HM_ABI_OP_POOL2D_BWD ? (k->variant ? "avg" : "max") : "", k->n,
           k->c_in, k->c_out, k->h, k->w, k->kh, k->kw, k->sh, k->sw, k->ph, k->pw, k->dh, k->dw, k->groups,
           k->flags & HM_ABI_OP_FLAG_ACCUMULATE ? " accumulate" : "");
}

static float *values(size_t n, float lo, float hi, uint64_t seed) {
  float *x = malloc((n ? n : 1) * sizeof *x);
  if (x) conform_fill_uniform(x, n, lo, hi, seed);
  return x;
}

/* Batch norm [n, c_in, h*w] or layer norm [n, c_in * h*w]: the operands,
 * with running statistics (read in evaluation, updated in training) and
 * accumulation into the gradients. */
static int norm_operands(const wcase *k, uint64_t seed, conform_op_case *oc, float *f[8]) {
  size_t n = k->n, c = k->c_in, s = (size_t)k->h * k->w, nx = n * c * s;
  int bn = k->op == HM_ABI_OP_BATCH_NORM || k->op == HM_ABI_OP_BATCH_NORM_BWD;
  size_t np = bn ? c : c * s;
  int acc = (k->flags & HM_ABI_OP_FLAG_ACCUMULATE) != 0;
  oc->op.flags = 0;
  oc->op.dims[0] = n;
  oc->op.dims[1] = np;
  oc->op.dims[2] = bn ? s : 0;
  f[0] = values(nx, -2.0f, 3.0f, seed);                                     /* x */
  f[1] = values(np, 0.5f, 1.5f, seed + 1);                                   /* gamma */
  f[2] = values(np, -0.5f, 0.5f, seed + 2);                                  /* beta */
  f[3] = values(2 * np, 0.2f, 1.2f, seed + 3);                               /* running statistics */
  f[4] = values(nx, -1.0f, 1.0f, seed + 4);                                  /* y, or dy */
  f[5] = values(nx, acc ? -1.0f : 0.0f, acc ? 1.0f : 0.0f, seed + 5);        /* dx */
  f[6] = values(np, -1.0f, 1.0f, seed + 6);                                  /* dgamma */
  f[7] = values(np, -1.0f, 1.0f, seed + 7);                                  /* dbeta */
  for (int i = 0; i < 8; i++)
    if (!f[i]) return 1;
  if (k->op == HM_ABI_OP_BATCH_NORM || k->op == HM_ABI_OP_LAYER_NORM) {
    oc->op.params[0] = 1e-5f;
    oc->op.params[1] = bn ? 0.1f : 0.0f;
    oc->in[0] = (conform_operand){f[0], nx * 4};
    oc->in[1] = (conform_operand){f[1], np * 4};
    oc->in[2] = (conform_operand){f[2], np * 4};
    oc->out[0] = (conform_operand){f[4], nx * 4};
    if (bn) oc->out[1] = (conform_operand){f[3], 2 * np * 4};
    return 0;
  }
  oc->op.params[0] = acc ? 1.0f : 0.0f;
  oc->op.params[1] = acc ? 1.0f : 0.0f;
  oc->op.params[2] = 1e-5f;
  oc->in[0] = (conform_operand){f[0], nx * 4};
  oc->in[1] = (conform_operand){f[4], nx * 4};
  oc->in[2] = (conform_operand){f[1], np * 4};
  if (k->id % 3 != 1) oc->out[0] = (conform_operand){f[5], nx * 4}; /* a source without a gradient */
  oc->out[1] = (conform_operand){f[6], np * 4};
  oc->out[2] = (conform_operand){f[7], np * 4};
  return 0;
}

static void test_window(conform_ctx *c, const void *arg, conform_result *r) {
  const wcase *k = arg;
  int pool = k->op == HM_ABI_OP_POOL2D || k->op == HM_ABI_OP_POOL2D_BWD;
  int norm = k->op >= HM_ABI_OP_BATCH_NORM && k->op <= HM_ABI_OP_LAYER_NORM_BWD;
  int variant = pool || k->op == HM_ABI_OP_BATCH_NORM ? (int)k->variant : -1;
  char what[256];
  describe(k, what, sizeof what);
  if (!conform_declares(c, k->op, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, variant)) {
    conform_not_supported(r, "%s is not declared", what);
    return;
  }
  uint64_t seed = c->seed + 104729ull * k->id;
  conform_op_case oc;
  memset(&oc, 0, sizeof oc);
  oc.op = make_op(k);
  float *f[8] = {0};
  int32_t *argmax = NULL;
  double step_scalar = 12345678.0; /* dropout's step through a dynamic scalar, above 2^23 */
  if (norm) {
    if (norm_operands(k, seed, &oc, f)) {
      conform_fail(r, "%s: out of memory in the suite", what);
      for (int i = 0; i < 8; i++) free(f[i]);
      return;
    }
  } else if (k->op == HM_ABI_OP_DROPOUT) {
    size_t n = (size_t)oc.op.dims[0];
    f[0] = values(n, -2.0f, 2.0f, seed);
    f[1] = values(n, 0.0f, 0.0f, seed + 1);
    oc.in[0] = (conform_operand){f[0], n * 4};
    oc.out[0] = (conform_operand){f[1], n * 4};
    oc.op.dyn[1] = 0;
    oc.scalars = &step_scalar;
    oc.n_scalars = 1;
  } else {
    hm_abi_window g;
    if (hm_abi_window_decode(&oc.op, &g)) {
      conform_fail(r, "%s: the suite built an invalid geometry", what);
      return;
    }
    size_t nx = (size_t)g.n * g.c_in * g.h * g.w, ny = (size_t)g.n * g.c_out * g.ho * g.wo;
    size_t nw = (size_t)g.c_out * (g.c_in / g.groups) * g.kh * g.kw;
    int acc = (k->flags & HM_ABI_OP_FLAG_ACCUMULATE) != 0;
    switch (k->op) {
      case HM_ABI_OP_CONV2D:
        f[0] = values(nx, -1.0f, 1.0f, seed), f[1] = values(nw, -0.5f, 0.5f, seed + 1);
        f[2] = values(g.c_out, -0.5f, 0.5f, seed + 2), f[3] = values(ny, 0.0f, 0.0f, 0);
        oc.in[0] = (conform_operand){f[0], nx * 4};
        oc.in[1] = (conform_operand){f[1], nw * 4};
        if (k->id % 2 == 0) oc.in[2] = (conform_operand){f[2], g.c_out * 4};
        oc.out[0] = (conform_operand){f[3], ny * 4};
        break;
      case HM_ABI_OP_IM2COL: {
        size_t ncol = (size_t)g.n * g.ho * g.wo * g.c_in * g.kh * g.kw;
        f[0] = values(nx, -1.0f, 1.0f, seed), f[1] = values(ncol, 0.0f, 0.0f, 0);
        oc.in[0] = (conform_operand){f[0], nx * 4};
        oc.out[0] = (conform_operand){f[1], ncol * 4};
        break;
      }
      case HM_ABI_OP_CONV2D_BWD_DATA:
        f[0] = values(ny, -1.0f, 1.0f, seed), f[1] = values(nw, -0.5f, 0.5f, seed + 1);
        f[2] = values(nx, acc ? -1.0f : 0.0f, acc ? 1.0f : 0.0f, seed + 2);
        oc.in[0] = (conform_operand){f[0], ny * 4};
        oc.in[1] = (conform_operand){f[1], nw * 4};
        oc.out[0] = (conform_operand){f[2], nx * 4};
        break;
      case HM_ABI_OP_CONV2D_BWD_FILTER:
        f[0] = values(nx, -1.0f, 1.0f, seed), f[1] = values(ny, -1.0f, 1.0f, seed + 1);
        f[2] = values(nw, acc ? -1.0f : 0.0f, acc ? 1.0f : 0.0f, seed + 2);
        f[3] = values(g.c_out, acc ? -1.0f : 0.0f, acc ? 1.0f : 0.0f, seed + 3);
        oc.in[0] = (conform_operand){f[0], nx * 4};
        oc.in[1] = (conform_operand){f[1], ny * 4};
        oc.out[0] = (conform_operand){f[2], nw * 4};
        if (k->id % 2 == 0) oc.out[1] = (conform_operand){f[3], g.c_out * 4};
        break;
      case HM_ABI_OP_POOL2D:
        f[0] = values(nx, -1.0f, 1.0f, seed), f[1] = values(ny, 0.0f, 0.0f, 0);
        if (k->id % 3 == 0) /* ties: max pooling must take the first in scan order */
          for (size_t i = 0; i < nx; i++) f[0][i] = (float)((int)(f[0][i] * 2.0f)) * 0.5f;
        oc.in[0] = (conform_operand){f[0], nx * 4};
        oc.out[0] = (conform_operand){f[1], ny * 4};
        if (k->variant == HM_ABI_POOL_MAX) {
          argmax = calloc(ny ? ny : 1, 4);
          oc.out[1] = (conform_operand){argmax, ny * 4};
        }
        break;
      default: /* POOL2D_BWD: the argmax comes from the reference forward */
        f[0] = values(ny, -1.0f, 1.0f, seed), f[1] = values(nx, acc ? -1.0f : 0.0f, acc ? 1.0f : 0.0f, seed + 1);
        oc.in[0] = (conform_operand){f[0], ny * 4};
        oc.out[0] = (conform_operand){f[1], nx * 4};
        if (k->variant == HM_ABI_POOL_MAX) {
          float *x = values(nx, -1.0f, 1.0f, seed + 2), *y = values(ny, 0.0f, 0.0f, 0);
          argmax = calloc(ny ? ny : 1, 4);
          if (x && y && argmax) hm_ref_pool2d(HM_ABI_POOL_MAX, &g, x, y, argmax);
          free(x);
          free(y);
          oc.in[1] = (conform_operand){argmax, ny * 4};
        }
        break;
    }
  }
  void *dev[4], *ref[4];
  if (conform_run_op(c, &oc, dev, ref, r)) {
    char keep[512];
    snprintf(keep, sizeof keep, "%s", r->detail);
    conform_fail(r, "%s: %s", what, keep);
  } else {
    int num = conform_numerics(c, k->op, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32);
    double tol = conform_tolerance(num);
    for (int i = 0; i < 4 && r->status == CONFORM_PASS; i++) {
      if (!oc.out[i].data) continue;
      int bitwise = num == HM_ABI_NUMERICS_EXACT || (k->op == HM_ABI_OP_POOL2D && i == 1);
      if (bitwise) {
        if (memcmp(dev[i], ref[i], oc.out[i].bytes) != 0) {
          size_t at = 0;
          while (((unsigned char *)dev[i])[at] == ((unsigned char *)ref[i])[at]) at++;
          conform_fail(r, "%s: out[%d] differs from the reference at element %zu (bitwise)", what, i, at / 4);
        }
        continue;
      }
      double e = conform_nmse(ref[i], dev[i], oc.out[i].bytes / 4);
      if (!(e <= tol))
        conform_fail(r, "%s: out[%d] NMSE %.3g > %.0e (numerics %s)", what, i, e, tol, hm_numerics_name((uint32_t)num));
    }
    conform_free_outputs(dev);
    conform_free_outputs(ref);
  }
  for (int i = 0; i < 8; i++) free(f[i]);
  free(argmax);
}

static wcase *add(uint32_t op) {
  if (n_cases >= MAX_WINDOW_CASES) {
    fprintf(stderr, "harmonics conform: more than %d window cases\n", MAX_WINDOW_CASES);
    exit(3);
  }
  wcase *k = &cases[n_cases];
  memset(k, 0, sizeof *k);
  k->op = op;
  k->id = n_cases++;
  return k;
}

/* N, C_in, C_out, H, W, groups, KH, KW, SH, SW, PH, PW, DH, DW */
static const uint32_t conv_shapes[][14] = {
    {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1},    /* one pixel */
    {2, 3, 5, 7, 9, 1, 3, 3, 1, 1, 0, 0, 1, 1},    /* odd sizes, no padding */
    {3, 4, 6, 11, 10, 1, 3, 3, 2, 2, 1, 1, 1, 1},  /* stride 2, padding 1 */
    {2, 4, 6, 9, 13, 2, 3, 5, 1, 2, 2, 1, 1, 1},   /* groups 2, rectangular kernel */
    {2, 6, 6, 8, 8, 6, 3, 3, 1, 1, 1, 1, 1, 1},    /* depthwise */
    {2, 3, 4, 12, 11, 1, 3, 3, 1, 1, 2, 2, 2, 2},  /* dilation 2 */
    {5, 8, 16, 6, 6, 1, 1, 1, 1, 1, 0, 0, 1, 1},   /* pointwise (1x1) */
    {1, 2, 3, 5, 5, 1, 5, 5, 3, 3, 4, 4, 1, 1},    /* padding as large as the kernel */
    {64, 32, 64, 13, 13, 1, 3, 3, 1, 1, 0, 0, 1, 1}, /* the example CNN's second convolution */
    {300, 1, 4, 28, 28, 1, 3, 3, 1, 1, 0, 0, 1, 1},  /* long sums: plugins that split launches (lavapipe) */
};

/* N, C, H, W, KH, KW, SH, SW, PH, PW */
static const uint32_t pool_shapes[][10] = {
    {1, 1, 1, 1, 1, 1, 1, 1, 0, 0}, {2, 3, 8, 8, 2, 2, 2, 2, 0, 0}, {2, 3, 7, 9, 2, 2, 2, 2, 0, 0},
    {3, 2, 11, 10, 3, 3, 2, 2, 1, 1}, {2, 4, 9, 7, 3, 2, 1, 1, 1, 1}, {64, 32, 26, 26, 2, 2, 2, 2, 0, 0},
};

void conform_add_window_tests(conform_suite *s) {
  n_cases = 0;
  const uint32_t conv_ops[4] = {HM_ABI_OP_CONV2D, HM_ABI_OP_CONV2D_BWD_DATA, HM_ABI_OP_CONV2D_BWD_FILTER,
                                HM_ABI_OP_IM2COL};
  for (size_t sh = 0; sh < sizeof conv_shapes / sizeof conv_shapes[0]; sh++)
    for (int o = 0; o < 4; o++)
      for (int acc = 0; acc < (o == 1 || o == 2 ? 2 : 1); acc++) {
        if (acc && sh % 3) continue; /* accumulation on a third of the shapes */
        const uint32_t *v = conv_shapes[sh];
        if (o == 3 && v[5] != 1) continue; /* im2col: one group */
        wcase *k = add(conv_ops[o]);
        k->n = v[0], k->c_in = v[1], k->c_out = v[2], k->h = v[3], k->w = v[4], k->groups = v[5];
        k->kh = v[6], k->kw = v[7], k->sh = v[8], k->sw = v[9], k->ph = v[10], k->pw = v[11], k->dh = v[12];
        k->dw = v[13];
        k->flags = acc ? HM_ABI_OP_FLAG_ACCUMULATE : 0;
        conform_add(s, "kernel.conv2d", test_window, k, 1, "kernel.%s.%zu%s", hm_op_name(k->op), sh,
                    acc ? ".accumulate" : "");
      }
  for (size_t sh = 0; sh < sizeof pool_shapes / sizeof pool_shapes[0]; sh++)
    for (uint32_t variant = 0; variant < HM_ABI_POOL_COUNT; variant++)
      for (int bwd = 0; bwd < 2; bwd++) {
        const uint32_t *v = pool_shapes[sh];
        wcase *k = add(bwd ? HM_ABI_OP_POOL2D_BWD : HM_ABI_OP_POOL2D);
        k->variant = variant;
        k->n = v[0], k->c_in = k->c_out = v[1], k->h = v[2], k->w = v[3], k->kh = v[4], k->kw = v[5];
        k->sh = v[6], k->sw = v[7], k->ph = v[8], k->pw = v[9], k->groups = 1, k->dh = k->dw = 1;
        k->flags = bwd && sh % 2 ? HM_ABI_OP_FLAG_ACCUMULATE : 0;
        conform_add(s, "kernel.pool2d", test_window, k, 1, "kernel.%s.%s.%zu", hm_op_name(k->op),
                    variant ? "avg" : "max", sh);
      }
  /* N, C, H*W: one value, odd sizes, the example CNN's first layer, flat features */
  static const uint32_t norm_shapes[][3] = {{1, 1, 1}, {4, 3, 5}, {64, 32, 169}, {17, 10, 1}, {5, 7, 1}};
  for (size_t sh = 0; sh < sizeof norm_shapes / sizeof norm_shapes[0]; sh++) {
    const uint32_t ops[4] = {HM_ABI_OP_BATCH_NORM, HM_ABI_OP_BATCH_NORM_BWD, HM_ABI_OP_LAYER_NORM,
                             HM_ABI_OP_LAYER_NORM_BWD};
    for (int o = 0; o < 4; o++)
      for (uint32_t v = 0; v < (o == 0 ? 2u : 1u); v++) {
        if (norm_shapes[sh][0] == 1 && norm_shapes[sh][2] == 1 && o < 2) continue; /* one value per channel */
        wcase *k = add(ops[o]);
        k->n = norm_shapes[sh][0], k->c_in = norm_shapes[sh][1], k->h = norm_shapes[sh][2], k->w = 1;
        k->variant = v;
        k->flags = (o == 1 || o == 3) && sh % 2 ? HM_ABI_OP_FLAG_ACCUMULATE : 0;
        conform_add(s, "kernel.norm", test_window, k, 1, "kernel.%s%s.%zu", hm_op_name(k->op),
                    o == 0 ? (v ? ".eval" : ".train") : "", sh);
      }
  }
  static const uint32_t lengths[] = {1, 17, 100003};
  static const float rates[] = {0.0f, 0.25f, 0.5f, 0.9f};
  for (size_t l = 0; l < 3; l++)
    for (size_t r = 0; r < 4; r++) {
      wcase *k = add(HM_ABI_OP_DROPOUT);
      k->n = lengths[l], k->c_in = k->h = k->w = 1;
      k->rate = rates[r];
      conform_add(s, "kernel.dropout", test_window, k, 1, "kernel.dropout.n%u.rate%g", lengths[l], (double)rates[r]);
    }
}
