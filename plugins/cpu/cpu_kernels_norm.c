/*
 * Batch and layer normalization on the CPU (SPEC.md §7.5): one task per
 * channel (batch norm) or per block of rows (layer norm); sums in double so
 * a large batch of similar values keeps its variance. The backward passes
 * recompute the statistics from X (one more pass over it), as the ABI
 * specifies them.
 */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"

typedef struct norm_job {
  const cpu_exec *ex;
  const cpu_op *op;
  size_t n, c, s;
  float *stats; /* layer norm backward: each row's mean, then 1/std (program scratch) */
} norm_job;

static float beta_mix(float beta, float old) { return beta != 0.0f ? beta * old : 0.0f; }

/* Mean and biased variance of channel |ch| of [n, c, s]. */
static void channel_moments(const float *x, size_t n, size_t c, size_t s, size_t ch, double *mean, double *var) {
  double sum = 0.0, q = 0.0;
  for (size_t i = 0; i < n; i++) {
    const float *p = x + (i * c + ch) * s;
    float part = 0.0f;
    for (size_t k = 0; k < s; k++) part += p[k];
    sum += part;
  }
  *mean = sum / (double)(n * s);
  float mf = (float)*mean;
  for (size_t i = 0; i < n; i++) {
    const float *p = x + (i * c + ch) * s;
    float part = 0.0f;
    for (size_t k = 0; k < s; k++) {
      float d = p[k] - mf;
      part += d * d;
    }
    q += part;
  }
  *var = q / (double)(n * s);
}

/* Mean and 1/sqrt(var + eps) of row |r| of [n, d]. */
static void row_moments(const float *x, size_t d, size_t r, float eps, float *mean, float *inv) {
  const float *p = x + r * d;
  double sum = 0.0, q = 0.0;
  for (size_t k = 0; k < d; k++) sum += p[k];
  double m = sum / (double)d;
  for (size_t k = 0; k < d; k++) q += ((double)p[k] - m) * ((double)p[k] - m);
  *mean = (float)m;
  *inv = (float)(1.0 / sqrt(q / (double)d + (double)eps));
}

static void batch_norm_channels(void *arg, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const norm_job *j = arg;
  const cpu_op *op = j->op;
  const float *x = op->in[0], *gamma = op->in[1], *beta = op->in[2];
  float *y = op->out[0], *running = op->out[1];
  float eps = op->op.params[0], momentum = op->op.params[1];
  size_t n = j->n, c = j->c, s = j->s, m = n * s;
  int eval = op->op.variant == HM_ABI_NORM_EVAL;
  for (size_t ch = begin; ch < end; ch++) {
    double mean, var;
    if (eval) {
      mean = running[ch];
      var = running[c + ch];
    } else {
      channel_moments(x, n, c, s, ch, &mean, &var);
    }
    float inv = (float)(1.0 / sqrt(var + (double)eps)), scale = gamma[ch] * inv;
    float shift = beta[ch] - (float)mean * scale;
    for (size_t i = 0; i < n; i++) {
      const float *p = x + (i * c + ch) * s;
      float *q = y + (i * c + ch) * s;
      for (size_t k = 0; k < s; k++) q[k] = p[k] * scale + shift;
    }
    if (eval) continue;
    if (running) {
      double unbiased = m > 1 ? var * (double)m / (double)(m - 1) : var;
      running[ch] = (float)((1.0 - momentum) * running[ch] + momentum * mean);
      running[c + ch] = (float)((1.0 - momentum) * running[c + ch] + momentum * unbiased);
    }
  }
}

static void batch_norm_bwd_channels(void *arg, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const norm_job *j = arg;
  const cpu_op *op = j->op;
  const float *x = op->in[0], *dy = op->in[1], *gamma = op->in[2];
  float *dx = op->out[0], *dgamma = op->out[1], *dbeta = op->out[2];
  float bdx = op->op.params[0], bp = op->op.params[1], eps = op->op.params[2];
  size_t n = j->n, c = j->c, s = j->s;
  float m = (float)(n * s);
  for (size_t ch = begin; ch < end; ch++) {
    double dmean, dvar;
    channel_moments(x, n, c, s, ch, &dmean, &dvar);
    float mean = (float)dmean, inv = (float)(1.0 / sqrt(dvar + (double)eps));
    double sdy = 0.0, sdyx = 0.0;
    for (size_t i = 0; i < n; i++) {
      const float *px = x + (i * c + ch) * s, *pd = dy + (i * c + ch) * s;
      float a = 0.0f, b = 0.0f;
      for (size_t k = 0; k < s; k++) {
        a += pd[k];
        b += pd[k] * (px[k] - mean);
      }
      sdy += a;
      sdyx += b;
    }
    sdyx *= inv;
    if (dgamma) dgamma[ch] = beta_mix(bp, dgamma[ch]) + (float)sdyx;
    if (dbeta) dbeta[ch] = beta_mix(bp, dbeta[ch]) + (float)sdy;
    if (!dx) continue;
    float k1 = gamma[ch] * inv / m, fsdy = (float)sdy, fsdyx = (float)sdyx;
    for (size_t i = 0; i < n; i++) {
      const float *px = x + (i * c + ch) * s, *pd = dy + (i * c + ch) * s;
      float *q = dx + (i * c + ch) * s;
      for (size_t k = 0; k < s; k++) {
        float xhat = (px[k] - mean) * inv;
        q[k] = beta_mix(bdx, q[k]) + k1 * (m * pd[k] - fsdy - xhat * fsdyx);
      }
    }
  }
}

static void layer_norm_rows(void *arg, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const norm_job *j = arg;
  const cpu_op *op = j->op;
  const float *x = op->in[0], *gamma = op->in[1], *beta = op->in[2];
  float *y = op->out[0];
  float eps = op->op.params[0];
  size_t d = j->c;
  for (size_t r = begin; r < end; r++) {
    float mf, inv;
    row_moments(x, d, r, eps, &mf, &inv);
    const float *p = x + r * d;
    float *o = y + r * d;
    for (size_t k = 0; k < d; k++) o[k] = (p[k] - mf) * inv * gamma[k] + beta[k];
  }
}

static void layer_norm_bwd_rows(void *arg, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const norm_job *j = arg;
  const cpu_op *op = j->op;
  const float *x = op->in[0], *dy = op->in[1], *gamma = op->in[2];
  float *dx = op->out[0];
  float bdx = op->op.params[0], eps = op->op.params[2];
  size_t d = j->c;
  for (size_t r = begin; r < end; r++) {
    float mean, inv;
    row_moments(x, d, r, eps, &mean, &inv);
    double sg = 0.0, sgx = 0.0;
    for (size_t k = 0; k < d; k++) {
      double g = (double)dy[r * d + k] * gamma[k];
      sg += g;
      sgx += g * ((x[r * d + k] - mean) * inv);
    }
    float k1 = inv / (float)d, fd = (float)d, fsg = (float)sg, fsgx = (float)sgx;
    for (size_t k = 0; k < d; k++) {
      float xhat = (x[r * d + k] - mean) * inv, g = dy[r * d + k] * gamma[k];
      dx[r * d + k] = beta_mix(bdx, dx[r * d + k]) + k1 * (fd * g - fsg - xhat * fsgx);
    }
  }
}

/* Layer norm's parameter gradients: a sum over rows per column, in columns
 * split across threads (each column summed in row order); the rows'
 * statistics first, into the job's scratch. */
static void layer_norm_stats(void *arg, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const norm_job *j = arg;
  for (size_t r = begin; r < end; r++)
    row_moments(j->op->in[0], j->c, r, j->op->op.params[2], &j->stats[r], &j->stats[j->n + r]);
}

static void layer_norm_param_cols(void *arg, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const norm_job *j = arg;
  const cpu_op *op = j->op;
  const float *x = op->in[0], *dy = op->in[1], *saved = j->stats;
  float *dgamma = op->out[1], *dbeta = op->out[2];
  float bp = op->op.params[1];
  size_t n = j->n, d = j->c;
  for (size_t k = begin; k < end; k++) {
    float g = 0.0f, b = 0.0f;
    for (size_t r = 0; r < n; r++) {
      g += dy[r * d + k] * ((x[r * d + k] - saved[r]) * saved[n + r]);
      b += dy[r * d + k];
    }
    if (dgamma) dgamma[k] = beta_mix(bp, dgamma[k]) + g;
    if (dbeta) dbeta[k] = beta_mix(bp, dbeta[k]) + b;
  }
}

uint64_t cpu_norm_scratch_bytes(const hm_abi_op *op) {
  return op->code == HM_ABI_OP_LAYER_NORM_BWD ? 2 * op->dims[0] * 4 + 64 : 0;
}

void cpu_kernel_norm(const cpu_exec *ex, const cpu_op *op) {
  norm_job j = {ex, op, (size_t)op->op.dims[0], (size_t)op->op.dims[1], (size_t)op->op.dims[2], (float *)ex->scratch};
  switch (op->op.code) {
    case HM_ABI_OP_BATCH_NORM: cpu_parallel_range(ex->device, j.c, 1, batch_norm_channels, &j); break;
    case HM_ABI_OP_BATCH_NORM_BWD: cpu_parallel_range(ex->device, j.c, 1, batch_norm_bwd_channels, &j); break;
    case HM_ABI_OP_LAYER_NORM: cpu_parallel_range(ex->device, j.n, 16, layer_norm_rows, &j); break;
    default:
      if (op->out[0]) cpu_parallel_range(ex->device, j.n, 16, layer_norm_bwd_rows, &j);
      if (op->out[1] || op->out[2]) {
        cpu_parallel_range(ex->device, j.n, 16, layer_norm_stats, &j);
        cpu_parallel_range(ex->device, j.c, 64, layer_norm_param_cols, &j);
      }
      break;
  }
}
