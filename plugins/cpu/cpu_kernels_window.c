/*
 * Convolution, pooling and dropout on the CPU (SPEC.md §7.5).
 *
 * A convolution is im2col + one sgemm per block of images and group: the
 * block's patches become a [C_in/g * KH * KW, images * Ho * Wo] matrix (each
 * image a column block), so W [C_out/g, K] times it is every image's output
 * plane in one GEMM wide enough for sgemm to run near its peak (one image of
 * the example CNN's second layer is only 121 columns); the result is copied
 * into [N, C, H, W] order with the bias. The backward passes use the same
 * blocks: dY gathered into [C_out/g, images * Ho * Wo], W^T times it and
 * col2im for the data gradient, dY times the patches^T for the filter's.
 * Images are split into one contiguous range per thread; each thread has its
 * own blocks and, for the filter gradient, its own partial sums, added in
 * thread order afterwards — so results depend only on the thread count.
 * Every buffer comes from the program's scratch (no allocation per step).
 * A training step's forward convolution keeps its patches in a buffer of the
 * program's, laid out as the blocks use them, and the filter gradient later in
 * the same program multiplies those instead of gathering them again.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

/* Images [begin, end) of task |t| of |tasks|. */
static void split(size_t n, size_t tasks, size_t t, size_t *begin, size_t *end) {
  *begin = n * t / tasks;
  *end = n * (t + 1) / tasks;
}

static size_t conv_tasks(const cpu_device *dev, const hm_abi_window *g) {
  return dev->threads < g->n ? dev->threads : g->n;
}

/* Floats of one block's patches per image (K x P) and of its gathered
 * output rows (C_out/g x P). */
static uint64_t patch_floats(const hm_abi_window *g) {
  return (uint64_t)(g->c_in / g->groups) * g->kh * g->kw * g->ho * g->wo;
}
static uint64_t out_floats(const hm_abi_window *g) { return (uint64_t)(g->c_out / g->groups) * g->ho * g->wo; }

/* Images per block, at most a task's share: as many as fit 2M floats (8 MB)
 * for the forward pass and the filter gradient (wide GEMMs; their blocks
 * must match, as they share patches), 64K floats (256 KB) for the data
 * gradient, whose GEMM writes the patch gradients that col2im reads at once
 * — from L2 when the block is that small (one image of the example's second
 * layer: its data gradient took 15% less time than with 8 MB blocks). */
static uint64_t block_images(const cpu_device *dev, const hm_abi_window *g, uint32_t code) {
  uint64_t per = patch_floats(g) + out_floats(g), share = (g->n + conv_tasks(dev, g) - 1) / conv_tasks(dev, g);
  uint64_t target = code == HM_ABI_OP_CONV2D_BWD_DATA ? (uint64_t)64 << 10 : (uint64_t)2 << 20;
  uint64_t b = per ? target / per : share;
  if (b < 1) b = 1;
  return b < share ? b : share;
}

/* One task's scratch: the patches and output rows of a block, then (filter
 * gradient) the partial dW and db. */
static uint64_t conv_task_floats(const cpu_device *dev, const hm_abi_op *op, const hm_abi_window *g) {
  uint64_t n = block_images(dev, g, op->code) * (patch_floats(g) + out_floats(g));
  if (op->code == HM_ABI_OP_CONV2D_BWD_FILTER) n += (uint64_t)g->c_out * (g->c_in / g->groups) * g->kh * g->kw + g->c_out;
  return (n + 15) / 16 * 16; /* keep each task's block on 64 bytes */
}

uint64_t cpu_window_scratch_bytes(const cpu_device *dev, const hm_abi_op *op) {
  hm_abi_window g;
  if (op->code != HM_ABI_OP_CONV2D && op->code != HM_ABI_OP_CONV2D_BWD_DATA && op->code != HM_ABI_OP_CONV2D_BWD_FILTER)
    return 0;
  if (hm_abi_window_decode(op, &g)) return 0; /* refused by validation */
  return conv_tasks(dev, &g) * conv_task_floats(dev, op, &g) * 4 + 64;
}

/* Floats of every image's patches, all groups: the layout of a patch buffer,
 * where the block of images [n0, n0 + nb) keeps group gi's patches at
 * (n0 * groups + gi * nb) * patch_floats — block boundaries are the same for
 * a forward op and its filter gradient, as their geometry is. */
static uint64_t all_patch_floats(const hm_abi_window *g) { return (uint64_t)g->n * g->groups * patch_floats(g); }

#define CPU_PATCH_CACHE_MAX ((uint64_t)64 << 20) /* bytes per convolution; larger ones gather twice */

static int same_window(const hm_abi_window *a, const hm_abi_window *b) {
  return a->n == b->n && a->c_in == b->c_in && a->c_out == b->c_out && a->h == b->h && a->w == b->w && a->kh == b->kh &&
         a->kw == b->kw && a->sh == b->sh && a->sw == b->sw && a->ph == b->ph && a->pw == b->pw && a->dh == b->dh &&
         a->dw == b->dw && a->groups == b->groups;
}

/* Nonzero when [a, a + na) and [b, b + nb) overlap. */
static int overlaps(const void *a, uint64_t na, const void *b, uint64_t nb) {
  const unsigned char *x = a, *y = b;
  return x && y && x < y + nb && y < x + na;
}

/* Nonzero when some output of ops (from, to) overlaps [x, x + bytes). */
static int written_between(const cpu_program *p, uint32_t from, uint32_t to, const void *x, uint64_t bytes) {
  for (uint32_t k = from + 1; k < to; k++)
    for (int i = 0; i < HM_ABI_MAX_OPERANDS; i++)
      if (overlaps(p->ops[k].out[i], p->ops[k].out_bytes[i], x, bytes)) return 1;
  return 0;
}

/* The ACT_FORWARD right after CONV2D |i| that reads exactly its output and
 * writes nowhere the convolution reads: running it row by row inside the
 * convolution gives the same values. Softmax works on whole rows of the
 * activation's own shape, so it stays separate. */
static cpu_op *following_activation(cpu_program *p, uint32_t i, const hm_abi_window *g) {
  cpu_op *conv = &p->ops[i], *act = i + 1 < p->n_ops ? &p->ops[i + 1] : NULL;
  uint64_t ny = (uint64_t)g->n * g->c_out * g->ho * g->wo;
  if (!act || act->op.code != HM_ABI_OP_ACT_FORWARD || act->op.variant == HM_ABI_ACT_SOFTMAX ||
      act->in[0] != conv->out[0] || act->op.dims[0] * act->op.dims[1] != ny)
    return NULL;
  for (int k = 0; k < HM_ABI_MAX_OPERANDS; k++)
    if (overlaps(act->out[0], act->out_bytes[0], conv->in[k], conv->in_bytes[k])) return NULL;
  return act;
}

/* The ACT_BACKWARD right after POOL2D_BWD |i| whose incoming gradient is
 * exactly the pooling's output and that writes nowhere the pooling reads:
 * applying it plane by plane, after each plane's scatter, gives the same
 * values. */
static cpu_op *following_activation_gradient(cpu_program *p, uint32_t i, const hm_abi_window *g) {
  cpu_op *pool = &p->ops[i], *act = i + 1 < p->n_ops ? &p->ops[i + 1] : NULL;
  uint64_t nx = (uint64_t)g->n * g->c_in * g->h * g->w;
  if (!act || act->op.code != HM_ABI_OP_ACT_BACKWARD || act->op.variant == HM_ABI_ACT_SOFTMAX ||
      act->in[2] != pool->out[0] || act->op.dims[0] * act->op.dims[1] != nx)
    return NULL;
  for (int k = 0; k < HM_ABI_MAX_OPERANDS; k++)
    if (overlaps(act->out[0], act->out_bytes[0], pool->in[k], pool->in_bytes[k])) return NULL;
  return act;
}

int32_t cpu_window_link(cpu_program *p) {
  for (uint32_t i = 0; i < p->n_ops; i++) {
    hm_abi_window g;
    uint32_t code = p->ops[i].op.code;
    if ((code != HM_ABI_OP_CONV2D && code != HM_ABI_OP_POOL2D_BWD) || hm_abi_window_decode(&p->ops[i].op, &g))
      continue;
    cpu_op *act = code == HM_ABI_OP_CONV2D ? following_activation(p, i, &g) : following_activation_gradient(p, i, &g);
    if (act) {
      p->ops[i].act = act;
      act->fused = 1;
    }
  }
  uint64_t total = 0;
  for (int pass = 0; pass < 2; pass++) { /* size, then hand out */
    uint64_t at = 0;
    for (uint32_t i = 0; i < p->n_ops; i++) {
      cpu_op *fwd = &p->ops[i];
      hm_abi_window g, h;
      if (fwd->op.code != HM_ABI_OP_CONV2D || hm_abi_window_decode(&fwd->op, &g)) continue;
      uint64_t floats = all_patch_floats(&g);
      if (floats * 4 > CPU_PATCH_CACHE_MAX) continue;
      for (uint32_t j = i + 1; j < p->n_ops; j++) {
        cpu_op *bwd = &p->ops[j];
        if (bwd->op.code != HM_ABI_OP_CONV2D_BWD_FILTER || bwd->in[0] != fwd->in[0] ||
            hm_abi_window_decode(&bwd->op, &h) || !same_window(&g, &h))
          continue;
        if (written_between(p, i, j, fwd->in[0], fwd->in_bytes[0])) break;
        if (pass == 1) fwd->patches = bwd->patches = p->patches + at;
        at += (floats + 15) / 16 * 16; /* each on 64 bytes */
        break;
      }
    }
    if (pass == 0) {
      total = at;
      if (!total) return HM_ABI_OK;
      p->patches = total <= SIZE_MAX / 4 - 64 ? aligned_alloc(64, (size_t)total * 4) : NULL;
      if (!p->patches)
        return cpu_fail(p->device->ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED,
                        "cpu: out of memory for %llu bytes of convolution patches", (unsigned long long)total * 4);
    }
  }
  return HM_ABI_OK;
}

/* The range of output columns o whose input column o*s - p + k*d lies in [0, size). */
static void valid_range(uint32_t out, uint32_t s, uint32_t p, uint32_t k, uint32_t d, uint32_t size, uint32_t *o0,
                        uint32_t *o1) {
  long off = (long)k * d - (long)p; /* input = o*s + off */
  long lo = off >= 0 ? 0 : (-off + (long)s - 1) / (long)s;
  long hi = ((long)size - 1 - off) < 0 ? -1 : ((long)size - 1 - off) / (long)s; /* last valid o */
  if (hi >= (long)out) hi = (long)out - 1;
  *o0 = (uint32_t)(lo < (long)out ? lo : out);
  *o1 = hi < lo ? *o0 : (uint32_t)hi + 1;
}

/* d[0, n) = s[0, n) for the short rows of small images (11 floats in the
 * example's second layer), where a call to memcpy costs more than the copy. */
static inline void copy_row(float *restrict d, const float *restrict s, size_t n) {
  if (n >= 8) { /* 8-float moves, the last one overlapping the one before */
    for (size_t i = 0; i + 8 < n; i += 8) memcpy(d + i, s + i, 8 * sizeof *d);
    memcpy(d + n - 8, s + n - 8, 8 * sizeof *d);
  } else if (n >= 4) {
    memcpy(d, s, 4 * sizeof *d);
    memcpy(d + n - 4, s + n - 4, 4 * sizeof *d);
  } else {
    for (size_t i = 0; i < n; i++) d[i] = s[i];
  }
}

/* col[(ci*KH + ky)*KW + kx][oh*Wo + ow] (rows |ld| apart) = x[ci][ih][iw],
 * zero in the padding. */
static void im2col(const hm_abi_window *g, uint32_t channels, const float *x, float *col, size_t ld) {
  for (uint32_t ci = 0; ci < channels; ci++)
    for (uint32_t ky = 0; ky < g->kh; ky++)
      for (uint32_t kx = 0; kx < g->kw; kx++) {
        float *row = col + (((size_t)ci * g->kh + ky) * g->kw + kx) * ld;
        uint32_t ow0, ow1;
        valid_range(g->wo, g->sw, g->pw, kx, g->dw, g->w, &ow0, &ow1);
        for (uint32_t oh = 0; oh < g->ho; oh++) {
          float *r = row + (size_t)oh * g->wo;
          long ih = (long)oh * g->sh - (long)g->ph + (long)ky * g->dh;
          if (ih < 0 || ih >= (long)g->h) {
            memset(r, 0, g->wo * sizeof *r);
            continue;
          }
          const float *src = x + ((size_t)ci * g->h + (size_t)ih) * g->w;
          long base = (long)kx * g->dw - (long)g->pw;
          for (uint32_t ow = 0; ow < ow0; ow++) r[ow] = 0.0f;
          if (g->sw == 1) {
            copy_row(r + ow0, src + base + ow0, ow1 - ow0);
          } else {
            for (uint32_t ow = ow0; ow < ow1; ow++) r[ow] = src[(long)ow * g->sw + base];
          }
          for (uint32_t ow = ow1; ow < g->wo; ow++) r[ow] = 0.0f;
        }
      }
}

/* dx[ci][ih][iw] += col[...]: im2col's adjoint. */
static void col2im(const hm_abi_window *g, uint32_t channels, const float *col, size_t ld, float *dx) {
  for (uint32_t ci = 0; ci < channels; ci++)
    for (uint32_t ky = 0; ky < g->kh; ky++)
      for (uint32_t kx = 0; kx < g->kw; kx++) {
        const float *row = col + (((size_t)ci * g->kh + ky) * g->kw + kx) * ld;
        uint32_t ow0, ow1;
        valid_range(g->wo, g->sw, g->pw, kx, g->dw, g->w, &ow0, &ow1);
        for (uint32_t oh = 0; oh < g->ho; oh++) {
          long ih = (long)oh * g->sh - (long)g->ph + (long)ky * g->dh;
          if (ih < 0 || ih >= (long)g->h) continue;
          float *restrict dst = dx + ((size_t)ci * g->h + (size_t)ih) * g->w + (long)kx * g->dw - (long)g->pw;
          const float *restrict r = row + (size_t)oh * g->wo;
          if (g->sw == 1) {
            for (uint32_t ow = ow0; ow < ow1; ow++) dst[ow] += r[ow]; /* contiguous: vectorizes */
          } else {
            for (uint32_t ow = ow0; ow < ow1; ow++) dst[(size_t)ow * g->sw] += r[ow];
          }
        }
      }
}

/* The sum of n floats in 8 interleaved partial sums (so the loop
 * vectorizes without reassociating the compiler could not prove safe). */
static float sum8(const float *x, size_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; k++) s[k] += x[i + k];
  float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; i < n; i++) t += x[i];
  return t;
}

typedef struct conv_job {
  const cpu_exec *ex;
  const cpu_op *op;
  hm_abi_window g;
  size_t tasks, task_floats, block;
  int accumulate;
  float act_param; /* the fused activation's parameter, for this run */
} conv_job;

/* Nonzero when an image's output plane alone is wide enough for sgemm to run
 * near its peak (the example's first layer: 26x26 = 676 columns) — measured
 * to gain in the backward passes, which then skip gathering dY. */
static int per_image(const hm_abi_window *g) { return (uint64_t)g->ho * g->wo >= 256; }

/* Images [n0, n0 + nb) of group |gi|: one block. */
static void conv_block(const conv_job *j, float *col, float *rows, float *pdw, float *pdb, size_t n0, size_t nb,
                       uint32_t gi) {
  const hm_abi_window *g = &j->g;
  const cpu_context *ctx = j->ex->device->ctx;
  uint32_t cig = g->c_in / g->groups, cog = g->c_out / g->groups, code = j->op->op.code;
  size_t P = (size_t)g->ho * g->wo, HW = (size_t)g->h * g->w, K = (size_t)cig * g->kh * g->kw, ld = nb * P;
  const float *w = (const float *)j->op->in[1] + (size_t)gi * cog * K;
  int gather = code == HM_ABI_OP_CONV2D || (code == HM_ABI_OP_CONV2D_BWD_FILTER && !j->op->patches);
  if (j->op->patches && code != HM_ABI_OP_CONV2D_BWD_DATA)
    col = j->op->patches + (n0 * g->groups + (size_t)gi * nb) * patch_floats(g);
  if (gather)
    for (size_t i = 0; i < nb; i++)
      im2col(g, cig, (const float *)j->op->in[0] + ((n0 + i) * g->c_in + (size_t)gi * cig) * HW, col + i * P, ld);
  if (code == HM_ABI_OP_CONV2D) {
    /* One GEMM for the block (per image, the call's own cost outweighs
     * writing Y in place), then bias and activation row by row while each
     * row is in cache. */
    cpu_sgemm(ctx, 0, 0, cog, ld, K, 1.0f, w, K, col, ld, 0.0f, rows, ld);
    const float *bias = j->op->in[2];
    const cpu_op *act = j->op->act;
    for (size_t i = 0; i < nb; i++)
      for (uint32_t c = 0; c < cog; c++) {
        size_t at = ((n0 + i) * g->c_out + (size_t)gi * cog + c) * P;
        float *restrict y = (float *)j->op->out[0] + at;
        const float *restrict r = rows + (size_t)c * ld + i * P;
        float bv = bias ? bias[(size_t)gi * cog + c] : 0.0f;
        for (size_t p = 0; p < P; p++) y[p] = r[p] + bv;
        if (act)
          j->ex->device->vec->act_forward((int)act->op.variant, j->act_param, 1, P, NULL, y, (float *)act->out[0] + at);
      }
    return;
  }
  /* Each image's dY plane is [C_out/g, P], rows P apart: a wide one is
   * multiplied where it lies, image by image, instead of being gathered
   * into the block's rows first. */
  const float *dy = code == HM_ABI_OP_CONV2D_BWD_DATA ? j->op->in[0] : j->op->in[1];
  if (per_image(g)) {
    for (size_t i = 0; i < nb; i++) {
      const float *dyi = dy + ((n0 + i) * g->c_out + (size_t)gi * cog) * P;
      if (code == HM_ABI_OP_CONV2D_BWD_FILTER) {
        cpu_sgemm(ctx, 0, 1, cog, K, P, 1.0f, dyi, P, col + i * P, ld, 1.0f, pdw + (size_t)gi * cog * K, K);
        for (uint32_t c = 0; c < cog; c++) pdb[(size_t)gi * cog + c] += sum8(dyi + (size_t)c * P, P);
      } else {
        cpu_sgemm(ctx, 1, 0, K, P, cog, 1.0f, w, K, dyi, P, 0.0f, col + i * P, ld);
      }
    }
    if (code == HM_ABI_OP_CONV2D_BWD_FILTER) return;
  } else {
    /* dY of the block, one row per output channel. */
    for (size_t i = 0; i < nb; i++)
      for (uint32_t c = 0; c < cog; c++)
        memcpy(rows + (size_t)c * ld + i * P, dy + ((n0 + i) * g->c_out + (size_t)gi * cog + c) * P,
               P * sizeof *rows);
    if (code == HM_ABI_OP_CONV2D_BWD_FILTER) {
      cpu_sgemm(ctx, 0, 1, cog, K, ld, 1.0f, rows, ld, col, ld, 1.0f, pdw + (size_t)gi * cog * K, K);
      for (uint32_t c = 0; c < cog; c++) pdb[(size_t)gi * cog + c] += sum8(rows + (size_t)c * ld, ld);
      return;
    }
    cpu_sgemm(ctx, 1, 0, K, ld, cog, 1.0f, w, K, rows, ld, 0.0f, col, ld);
  }
  for (size_t i = 0; i < nb; i++) {
    float *dx = (float *)j->op->out[0] + ((n0 + i) * g->c_in + (size_t)gi * cig) * HW;
    if (!j->accumulate) memset(dx, 0, (size_t)cig * HW * sizeof *dx);
    col2im(g, cig, col + i * P, ld, dx);
  }
}

static void conv_task(void *arg, size_t t) {
  const conv_job *j = arg;
  const hm_abi_window *g = &j->g;
  size_t K = (size_t)(g->c_in / g->groups) * g->kh * g->kw;
  float *col = (float *)j->ex->scratch + t * j->task_floats, *rows = col + j->block * patch_floats(g);
  float *pdw = NULL, *pdb = NULL; /* the filter gradient's partial sums, after the blocks */
  if (j->op->op.code == HM_ABI_OP_CONV2D_BWD_FILTER) {
    pdw = rows + j->block * out_floats(g);
    pdb = pdw + (size_t)g->c_out * K;
    memset(pdw, 0, ((size_t)g->c_out * K + g->c_out) * sizeof *pdw);
  }
  size_t b, e;
  split(g->n, j->tasks, t, &b, &e);
  for (size_t n0 = b; n0 < e; n0 += j->block) {
    size_t nb = e - n0 < j->block ? e - n0 : j->block;
    for (uint32_t gi = 0; gi < g->groups; gi++) conv_block(j, col, rows, pdw, pdb, n0, nb, gi);
  }
}

void cpu_kernel_conv2d(const cpu_exec *ex, const cpu_op *op) {
  conv_job j = {.ex = ex,
                .op = op,
                .accumulate = (op->op.flags & HM_ABI_OP_FLAG_ACCUMULATE) != 0,
                .act_param = op->act ? cpu_param(ex, op->act, 0) : 0.0f};
  (void)hm_abi_window_decode(&op->op, &j.g); /* validated at program_create */
  j.tasks = conv_tasks(ex->device, &j.g);
  j.task_floats = conv_task_floats(ex->device, &op->op, &j.g);
  j.block = block_images(ex->device, &j.g, op->op.code);
  if (j.tasks <= 1) conv_task(&j, 0);
  else cpu_pool_run(ex->device->pool, j.tasks, conv_task, &j);
  if (op->op.code != HM_ABI_OP_CONV2D_BWD_FILTER) return;
  /* The tasks' partial sums, in task order. */
  size_t nw = (size_t)j.g.c_out * (j.g.c_in / j.g.groups) * j.g.kh * j.g.kw, nb = j.g.c_out;
  float *dw = op->out[0], *db = op->out[1];
  const float *p0 = (const float *)ex->scratch + j.block * (patch_floats(&j.g) + out_floats(&j.g));
  for (size_t i = 0; i < nw; i++) {
    float s = j.accumulate ? dw[i] : 0.0f;
    for (size_t t = 0; t < j.tasks; t++) s += p0[t * j.task_floats + i];
    dw[i] = s;
  }
  if (!db) return;
  for (size_t i = 0; i < nb; i++) {
    float s = j.accumulate ? db[i] : 0.0f;
    for (size_t t = 0; t < j.tasks; t++) s += p0[t * j.task_floats + nw + i];
    db[i] = s;
  }
}

/* ===== IM2COL: patches as rows (packed convolutions quantize them) ===== */

typedef struct im2col_job {
  const cpu_op *op;
  hm_abi_window g;
} im2col_job;

/* Output rows [begin, end): each an output position's patch, c-major. */
static void im2col_rows(void *arg, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const im2col_job *j = arg;
  const hm_abi_window *g = &j->g;
  const float *x = j->op->in[0];
  size_t k = (size_t)g->c_in * g->kh * g->kw, P = (size_t)g->ho * g->wo, HW = (size_t)g->h * g->w;
  for (size_t row = begin; row < end; row++) {
    size_t n = row / P, pos = row % P, oh = pos / g->wo, ow = pos % g->wo;
    float *out = (float *)j->op->out[0] + row * k;
    for (uint32_t ci = 0; ci < g->c_in; ci++) {
      const float *plane = x + ((size_t)n * g->c_in + ci) * HW;
      for (uint32_t ky = 0; ky < g->kh; ky++) {
        long ih = (long)oh * g->sh - (long)g->ph + (long)ky * g->dh;
        for (uint32_t kx = 0; kx < g->kw; kx++) {
          long iw = (long)ow * g->sw - (long)g->pw + (long)kx * g->dw;
          int inside = ih >= 0 && ih < (long)g->h && iw >= 0 && iw < (long)g->w;
          *out++ = inside ? plane[(size_t)ih * g->w + (size_t)iw] : 0.0f;
        }
      }
    }
  }
}

void cpu_kernel_im2col(const cpu_exec *ex, const cpu_op *op) {
  im2col_job j = {op, {0}};
  (void)hm_abi_window_decode(&op->op, &j.g); /* validated at program_create */
  cpu_parallel_range(ex->device, (size_t)j.g.n * j.g.ho * j.g.wo, 64, im2col_rows, &j);
}

/* ===== Pooling ===== */

typedef struct pool_job {
  const cpu_vec_ops *vec;
  const cpu_op *op;
  hm_abi_window g;
  int accumulate;
  float act_param, act_beta; /* the fused activation gradient's parameters, for this run */
} pool_job;

/* Max pooling's comparison: v replaces the best so far when larger, or when
 * it is the first NaN (SPEC.md 7.5: a NaN wins and stays). */
static inline int max_takes(float v, float best) { return (v > best) | ((v != v) & (best == best)); }

static void pool_forward_planes(void *arg, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const pool_job *j = arg;
  const hm_abi_window *g = &j->g;
  size_t HW = (size_t)g->h * g->w, P = (size_t)g->ho * g->wo;
  int max = j->op->op.variant == HM_ABI_POOL_MAX;
  float area = (float)g->kh * (float)g->kw;
  int two = max && g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0;
  for (size_t pl = begin; pl < end; pl++) {
    if (two) { /* 2x2, stride 2, no padding: the usual CNN's, a row at a time in the device's vector loop */
      const float *x = (const float *)j->op->in[0] + pl * HW;
      int32_t *am = j->op->out[1] ? (int32_t *)j->op->out[1] + pl * P : NULL;
      for (uint32_t oh = 0; oh < g->ho; oh++)
        j->vec->max_pool_2x2_row(g->wo, g->w, (int32_t)(2 * oh * g->w), x + (size_t)(2 * oh) * g->w,
                                 x + (size_t)(2 * oh + 1) * g->w, (float *)j->op->out[0] + pl * P + (size_t)oh * g->wo,
                                 am ? am + (size_t)oh * g->wo : NULL);
      continue;
    }
    const float *x = (const float *)j->op->in[0] + pl * HW;
    float *y = (float *)j->op->out[0] + pl * P;
    int32_t *am = j->op->out[1] ? (int32_t *)j->op->out[1] + pl * P : NULL;
    for (uint32_t oh = 0; oh < g->ho; oh++) {
      uint32_t kh0, kh1;
      long ih0 = (long)oh * g->sh - (long)g->ph;
      kh0 = ih0 < 0 ? (uint32_t)-ih0 : 0;
      kh1 = ih0 + (long)g->kh > (long)g->h ? (uint32_t)((long)g->h - ih0) : g->kh;
      for (uint32_t ow = 0; ow < g->wo; ow++) {
        long iw0 = (long)ow * g->sw - (long)g->pw;
        uint32_t kw0 = iw0 < 0 ? (uint32_t)-iw0 : 0;
        uint32_t kw1 = iw0 + (long)g->kw > (long)g->w ? (uint32_t)((long)g->w - iw0) : g->kw;
        if (max) {
          long best = -1;
          float bv = 0.0f;
          for (uint32_t ky = kh0; ky < kh1; ky++)
            for (uint32_t kx = kw0; kx < kw1; kx++) {
              long at = (ih0 + ky) * (long)g->w + iw0 + kx;
              float v = x[at];
              if (best < 0 || max_takes(v, bv)) {
                best = at;
                bv = v;
              }
            }
          y[(size_t)oh * g->wo + ow] = bv;
          if (am) am[(size_t)oh * g->wo + ow] = (int32_t)best;
        } else {
          float s = 0.0f;
          for (uint32_t ky = kh0; ky < kh1; ky++)
            for (uint32_t kx = kw0; kx < kw1; kx++) s += x[(ih0 + ky) * (long)g->w + iw0 + kx];
          y[(size_t)oh * g->wo + ow] = s / area;
        }
      }
    }
  }
}

static void pool_backward_planes(void *arg, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const pool_job *j = arg;
  const hm_abi_window *g = &j->g;
  size_t HW = (size_t)g->h * g->w, P = (size_t)g->ho * g->wo;
  int max = j->op->op.variant == HM_ABI_POOL_MAX;
  float area = (float)g->kh * (float)g->kw;
  for (size_t pl = begin; pl < end; pl++) {
    const float *dy = (const float *)j->op->in[0] + pl * P;
    float *dx = (float *)j->op->out[0] + pl * HW;
    if (!j->accumulate) memset(dx, 0, HW * sizeof *dx);
    if (max) {
      const int32_t *am = (const int32_t *)j->op->in[1] + pl * P;
      for (size_t o = 0; o < P; o++)
        if (am[o] >= 0 && (size_t)am[o] < HW) dx[am[o]] += dy[o];
    } else {
      for (uint32_t oh = 0; oh < g->ho; oh++)
        for (uint32_t ow = 0; ow < g->wo; ow++) {
          float d = dy[(size_t)oh * g->wo + ow] / area;
          for (uint32_t ky = 0; ky < g->kh; ky++) {
            long ih = (long)oh * g->sh - (long)g->ph + ky;
            if (ih < 0 || ih >= (long)g->h) continue;
            for (uint32_t kx = 0; kx < g->kw; kx++) {
              long iw = (long)ow * g->sw - (long)g->pw + kx;
              if (iw >= 0 && iw < (long)g->w) dx[ih * (long)g->w + iw] += d;
            }
          }
        }
    }
    const cpu_op *act = j->op->act; /* through the activation while the plane is in cache */
    if (act) {
      const float *z = act->in[0], *a = act->in[1];
      j->vec->act_backward((int)act->op.variant, j->act_param, j->act_beta, HW, z ? z + pl * HW : NULL,
                           a ? a + pl * HW : NULL, dx, (float *)act->out[0] + pl * HW);
    }
  }
}

void cpu_kernel_pool2d(const cpu_exec *ex, const cpu_op *op) {
  pool_job j = {ex->device->vec, op, {0}, (op->op.flags & HM_ABI_OP_FLAG_ACCUMULATE) != 0,
                op->act ? cpu_param(ex, op->act, 0) : 0.0f, op->act ? cpu_param(ex, op->act, 1) : 0.0f};
  (void)hm_abi_window_decode(&op->op, &j.g);
  size_t planes = (size_t)j.g.n * j.g.c_in;
  cpu_parallel_range(ex->device, planes, 8,
                     op->op.code == HM_ABI_OP_POOL2D ? pool_forward_planes : pool_backward_planes, &j);
}

/* ===== Dropout ===== */

typedef struct dropout_job {
  const cpu_op *op;
  uint32_t key, step, threshold;
  float scale;
} dropout_job;

static uint32_t hash32(uint32_t x) { /* lowbias32, as SPEC.md §7.5 */
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

static void dropout_range(void *arg, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const dropout_job *j = arg;
  const float *x = j->op->in[0];
  float *y = j->op->out[0];
  uint32_t base = hash32(j->key ^ j->step);
  for (size_t i = begin; i < end; i++) y[i] = (hash32(base ^ (uint32_t)i) >> 8) >= j->threshold ? x[i] * j->scale : 0.0f;
}

void cpu_kernel_dropout(const cpu_exec *ex, const cpu_op *op) {
  uint64_t seed = op->op.dims[1];
  dropout_job j = {op, hash32((uint32_t)seed ^ hash32((uint32_t)(seed >> 32) ^ 0x9e3779b9u)),
                   hm_abi_dropout_step(&op->op, ex->scalars, ex->n_scalars),
                   (uint32_t)(op->op.params[0] * 16777216.0f), op->op.params[2]};
  cpu_parallel_range(ex->device, (size_t)op->op.dims[0], 4096, dropout_range, &j);
}
