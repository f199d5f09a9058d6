/*
 * Losses and reductions. Partial sums are kept per chunk and combined in chunk
 * order, so the result is the same on every run with the same thread count.
 */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"

#define MAX_CHUNKS 256
#define MIN_PARALLEL 4096

typedef struct red_job {
  const cpu_exec *ex;
  const cpu_op *op;
  size_t rows, cols;
  float p0, p1, p2, p3;
  double partial[MAX_CHUNKS];
} red_job;

static size_t rows_min(size_t cols) {
  size_t r = MIN_PARALLEL / (cols ? cols : 1);
  return r ? r : 1;
}

/* ===== loss ===== */

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static void loss_range(void *arg, size_t r0, size_t r1, size_t chunk) {
  red_job *j = arg;
  const cpu_op *op = j->op;
  size_t cols = j->cols;
  int loss = (int)op->op.variant, ci = (op->op.flags & HM_ABI_OP_FLAG_CLASS_INDEX) != 0;
  const float *pred = op->in[0];
  const float *tf = op->in[1];
  const int32_t *ti = op->in[1];
  float *grad = op->out[1];
  float scale = j->p0, delta = j->p1, gbeta = j->p3;
  double denom = loss == HM_ABI_LOSS_CROSS_ENTROPY ? (double)j->rows : (double)j->rows * (double)cols;
  float gmul = (float)((double)scale / denom);
  double total = 0.0;
  for (size_t r = r0; r < r1; r++) {
    const float *p = pred + r * cols;
    float *g = grad ? grad + r * cols : NULL;
    if (loss == HM_ABI_LOSS_CROSS_ENTROPY) {
      float mx = -INFINITY;
      for (size_t c = 0; c < cols; c++) mx = p[c] > mx ? p[c] : mx;
      double sum = 0.0;
      for (size_t c = 0; c < cols; c++) sum += expf(p[c] - mx);
      float lse = mx + (float)log(sum);
      int32_t label = ci ? ti[r] : -1;
      int valid = !ci || (label >= 0 && (size_t)label < cols);
      double tsum = 0.0;
      if (ci) {
        if (valid) total += (double)lse - p[label];
        tsum = valid ? 1.0 : 0.0;
      } else {
        for (size_t c = 0; c < cols; c++) {
          total += (double)tf[r * cols + c] * ((double)lse - p[c]);
          tsum += tf[r * cols + c];
        }
      }
      if (g) {
        for (size_t c = 0; c < cols; c++) {
          float sm = expf(p[c] - lse);
          float t = ci ? (valid && (size_t)label == c ? 1.0f : 0.0f) : tf[r * cols + c];
          float v = (ci && !valid) ? 0.0f : ((float)tsum * sm - t) * gmul;
          g[c] = gbeta == 0.0f ? v : v + gbeta * g[c];
        }
      }
      continue;
    }
    for (size_t c = 0; c < cols; c++) {
      float x = p[c], t = tf[r * cols + c], e = x - t, l, d;
      switch (loss) {
        case HM_ABI_LOSS_MSE:
          l = e * e;
          d = 2.0f * e;
          break;
        case HM_ABI_LOSS_MAE:
          l = fabsf(e);
          d = e > 0 ? 1.0f : (e < 0 ? -1.0f : 0.0f);
          break;
        case HM_ABI_LOSS_BCE:
          l = (x > 0 ? x : 0.0f) - x * t + log1pf(expf(-fabsf(x)));
          d = sigmoidf(x) - t;
          break;
        default: /* HUBER */
          if (fabsf(e) <= delta) {
            l = 0.5f * e * e;
            d = e;
          } else {
            l = delta * (fabsf(e) - 0.5f * delta);
            d = e > 0 ? delta : -delta;
          }
          break;
      }
      total += l;
      if (g) g[c] = gbeta == 0.0f ? d * gmul : d * gmul + gbeta * g[c];
    }
  }
  j->partial[chunk] = total;
}

void cpu_kernel_loss(const cpu_exec *ex, const cpu_op *op) {
  red_job j;
  j.ex = ex;
  j.op = op;
  j.rows = (size_t)op->op.dims[0];
  j.cols = (size_t)op->op.dims[1];
  j.p0 = cpu_param(ex, op, 0);
  j.p1 = cpu_param(ex, op, 1);
  j.p2 = cpu_param(ex, op, 2);
  j.p3 = cpu_param(ex, op, 3);
  memset(j.partial, 0, sizeof j.partial);
  size_t chunks = cpu_parallel_range(ex->device, j.rows, rows_min(j.cols), loss_range, &j);
  if (op->out[0]) {
    double total = 0.0;
    for (size_t c = 0; c < chunks; c++) total += j.partial[c];
    int ce = op->op.variant == HM_ABI_LOSS_CROSS_ENTROPY;
    double denom = ce ? (double)j.rows : (double)j.rows * (double)j.cols;
    float *out = op->out[0];
    float mean = denom > 0 ? (float)(total / denom) : 0.0f;
    *out = j.p2 == 0.0f ? mean : mean + j.p2 * *out;
  }
}

/* ===== reductions ===== */

static void reduce_rows_range(void *arg, size_t c0, size_t c1, size_t chunk) {
  (void)chunk;
  red_job *j = arg;
  const float *x = j->op->in[0];
  float *y = j->op->out[0];
  float acc[256];
  for (size_t c = c0; c < c1; c += 256) {
    size_t w = c1 - c < 256 ? c1 - c : 256;
    memset(acc, 0, w * sizeof(float));
    j->ex->device->vec->accumulate_rows(j->rows, w, j->cols, x + c, acc);
    for (size_t i = 0; i < w; i++) y[c + i] = j->p1 == 0.0f ? j->p0 * acc[i] : j->p0 * acc[i] + j->p1 * y[c + i];
  }
}

void cpu_kernel_reduce_rows(const cpu_exec *ex, const cpu_op *op) {
  red_job j;
  j.ex = ex;
  j.op = op;
  j.rows = (size_t)op->op.dims[0];
  j.cols = (size_t)op->op.dims[1];
  j.p0 = cpu_param(ex, op, 0);
  j.p1 = cpu_param(ex, op, 1);
  size_t min_cols = MIN_PARALLEL / (j.rows ? j.rows : 1);
  cpu_parallel_range(ex->device, j.cols, min_cols < 16 ? 16 : min_cols, reduce_rows_range, &j);
}

static void reduce_cols_range(void *arg, size_t r0, size_t r1, size_t chunk) {
  (void)chunk;
  red_job *j = arg;
  const float *x = j->op->in[0];
  float *y = j->op->out[0];
  for (size_t r = r0; r < r1; r++) {
    double acc = 0.0;
    const float *xr = x + r * j->cols;
    for (size_t c = 0; c < j->cols; c++) acc += xr[c];
    float v = j->p0 * (float)acc;
    y[r] = j->p1 == 0.0f ? v : v + j->p1 * y[r];
  }
}

void cpu_kernel_reduce_cols(const cpu_exec *ex, const cpu_op *op) {
  red_job j;
  j.ex = ex;
  j.op = op;
  j.rows = (size_t)op->op.dims[0];
  j.cols = (size_t)op->op.dims[1];
  j.p0 = cpu_param(ex, op, 0);
  j.p1 = cpu_param(ex, op, 1);
  cpu_parallel_range(ex->device, j.rows, rows_min(j.cols), reduce_cols_range, &j);
}

static void sumsq_range(void *arg, size_t b, size_t e, size_t chunk) {
  red_job *j = arg;
  j->partial[chunk] = j->ex->device->vec->sum_squares(e - b, (const float *)j->op->in[0] + b);
}

void cpu_kernel_sum_squares(const cpu_exec *ex, const cpu_op *op) {
  red_job j;
  j.ex = ex;
  j.op = op;
  memset(j.partial, 0, sizeof j.partial);
  size_t chunks = cpu_parallel_range(ex->device, (size_t)op->op.dims[0], 16384, sumsq_range, &j);
  double total = 0.0;
  for (size_t c = 0; c < chunks; c++) total += j.partial[c];
  float alpha = cpu_param(ex, op, 0), beta = cpu_param(ex, op, 1);
  float *y = op->out[0];
  float v = (float)((double)alpha * total);
  *y = beta == 0.0f ? v : v + beta * *y;
}
