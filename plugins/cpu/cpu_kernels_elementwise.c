/*
 * Element-wise and row-wise kernels: bias, activations, clip, scale, axpy,
 * fill, copy, gather. Threading over rows or flat ranges; inner loops from
 * the device's cpu_vec table.
 */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"

#define MIN_PARALLEL 4096 /* elements per chunk below which threads cost more than they save */

typedef struct ew_job {
  const cpu_exec *ex;
  const cpu_op *op;
  size_t cols;
  float a, b;
} ew_job;

static size_t rows_min(size_t cols) {
  size_t r = MIN_PARALLEL / (cols ? cols : 1);
  return r ? r : 1;
}

/* ===== bias add ===== */

static void bias_range(void *arg, size_t r0, size_t r1, size_t chunk) {
  (void)chunk;
  const ew_job *j = arg;
  float *y = (float *)j->op->out[0] + r0 * j->cols;
  j->ex->device->vec->act_forward(HM_ABI_ACT_IDENTITY, 0.0f, r1 - r0, j->cols, j->op->in[0], y, y);
}

void cpu_kernel_bias_add(const cpu_exec *ex, const cpu_op *op) {
  ew_job j = {ex, op, (size_t)op->op.dims[1], 0, 0};
  cpu_parallel_range(ex->device, (size_t)op->op.dims[0], rows_min(j.cols), bias_range, &j);
}

/* ===== activations ===== */

static void softmax_rows(size_t r0, size_t r1, size_t cols, const float *x, float *y) {
  for (size_t r = r0; r < r1; r++) {
    const float *xr = x + r * cols;
    float *yr = y + r * cols;
    float mx = -INFINITY;
    for (size_t c = 0; c < cols; c++) mx = xr[c] > mx ? xr[c] : mx;
    double sum = 0.0;
    for (size_t c = 0; c < cols; c++) {
      float e = expf(xr[c] - mx);
      yr[c] = e;
      sum += e;
    }
    float inv = (float)(1.0 / sum);
    for (size_t c = 0; c < cols; c++) yr[c] *= inv;
  }
}

static void act_forward_range(void *arg, size_t r0, size_t r1, size_t chunk) {
  (void)chunk;
  const ew_job *j = arg;
  const float *x = j->op->in[0];
  float *y = j->op->out[0];
  if (j->op->op.variant == HM_ABI_ACT_SOFTMAX) {
    softmax_rows(r0, r1, j->cols, x, y);
    return;
  }
  j->ex->device->vec->act_forward((int)j->op->op.variant, j->a, r1 - r0, j->cols, NULL,
                                  x + r0 * j->cols, y + r0 * j->cols);
}

void cpu_kernel_act_forward(const cpu_exec *ex, const cpu_op *op) {
  ew_job j = {ex, op, (size_t)op->op.dims[1], cpu_param(ex, op, 0), 0};
  cpu_parallel_range(ex->device, (size_t)op->op.dims[0], rows_min(j.cols), act_forward_range, &j);
}

static void act_backward_range(void *arg, size_t r0, size_t r1, size_t chunk) {
  (void)chunk;
  const ew_job *j = arg;
  const cpu_op *op = j->op;
  size_t cols = j->cols;
  const float *x = op->in[0], *y = op->in[1], *dy = op->in[2];
  float *dx = op->out[0];
  float beta = j->b;
  if (op->op.variant == HM_ABI_ACT_SOFTMAX) {
    for (size_t r = r0; r < r1; r++) {
      const float *yr = y + r * cols, *dyr = dy + r * cols;
      float *dxr = dx + r * cols;
      double dot = 0.0;
      for (size_t c = 0; c < cols; c++) dot += (double)dyr[c] * yr[c];
      float d = (float)dot;
      for (size_t c = 0; c < cols; c++) {
        float g = yr[c] * (dyr[c] - d);
        dxr[c] = beta == 0.0f ? g : g + beta * dxr[c];
      }
    }
    return;
  }
  size_t off = r0 * cols, n = (r1 - r0) * cols;
  j->ex->device->vec->act_backward((int)op->op.variant, j->a, beta, n, x ? x + off : NULL,
                                   y ? y + off : NULL, dy + off, dx + off);
}

void cpu_kernel_act_backward(const cpu_exec *ex, const cpu_op *op) {
  ew_job j = {ex, op, (size_t)op->op.dims[1], cpu_param(ex, op, 0), cpu_param(ex, op, 1)};
  cpu_parallel_range(ex->device, (size_t)op->op.dims[0], rows_min(j.cols), act_backward_range, &j);
}

/* ===== clip, scale, axpy ===== */

static void clip_range(void *arg, size_t b, size_t e, size_t chunk) {
  (void)chunk;
  const ew_job *j = arg;
  j->ex->device->vec->clip(e - b, j->a, (float *)j->op->out[0] + b);
}

void cpu_kernel_clip(const cpu_exec *ex, const cpu_op *op) {
  ew_job j = {ex, op, 0, cpu_param(ex, op, 0), 0};
  cpu_parallel_range(ex->device, (size_t)op->op.dims[0], MIN_PARALLEL, clip_range, &j);
}

static void scale_range(void *arg, size_t b, size_t e, size_t chunk) {
  (void)chunk;
  const ew_job *j = arg;
  float *y = j->op->out[0];
  const float *x = j->op->in[0] ? (const float *)j->op->in[0] : y;
  j->ex->device->vec->scale(e - b, j->a, x + b, y + b);
}

void cpu_kernel_scale(const cpu_exec *ex, const cpu_op *op) {
  ew_job j = {ex, op, 0, cpu_param(ex, op, 0), 0};
  cpu_parallel_range(ex->device, (size_t)op->op.dims[0], MIN_PARALLEL, scale_range, &j);
}

static void axpy_range(void *arg, size_t b, size_t e, size_t chunk) {
  (void)chunk;
  const ew_job *j = arg;
  j->ex->device->vec->axpy(e - b, j->a, (const float *)j->op->in[0] + b, (float *)j->op->out[0] + b);
}

void cpu_kernel_axpy(const cpu_exec *ex, const cpu_op *op) {
  ew_job j = {ex, op, 0, cpu_param(ex, op, 0), 0};
  cpu_parallel_range(ex->device, (size_t)op->op.dims[0], MIN_PARALLEL, axpy_range, &j);
}

/* ===== fill, copy ===== */

void cpu_kernel_fill(const cpu_exec *ex, const cpu_op *op) {
  size_t n = (size_t)op->op.dims[0];
  float v = cpu_param(ex, op, 0);
  if (op->op.dtype_out == HM_ABI_DTYPE_I32) {
    int32_t *x = op->out[0];
    int32_t iv = (int32_t)v;
    for (size_t i = 0; i < n; i++) x[i] = iv;
  } else {
    float *x = op->out[0];
    for (size_t i = 0; i < n; i++) x[i] = v;
  }
}

void cpu_kernel_copy(const cpu_exec *ex, const cpu_op *op) {
  (void)ex;
  size_t es = op->op.dtype_in == HM_ABI_DTYPE_U8 ? 1 : 4;
  memmove(op->out[0], op->in[0], (size_t)op->op.dims[0] * es);
}

/* ===== gather rows ===== */

static void prefetch_row(const void *base, int32_t row, size_t rows_src, size_t row_bytes) {
  if (row < 0 || (size_t)row >= rows_src) return;
  const char *p = (const char *)base + (size_t)row * row_bytes;
  for (size_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(p + off, 0, 0);
}

static void gather_range(void *arg, size_t r0, size_t r1, size_t chunk) {
  (void)chunk;
  const ew_job *j = arg;
  const cpu_op *op = j->op;
  size_t cols = j->cols, rows_src = (size_t)op->op.dims[2];
  const int32_t *idx = op->in[1];
  uint32_t din = op->op.dtype_in ? op->op.dtype_in : HM_ABI_DTYPE_F32;
  size_t row_bytes = cols * (din == HM_ABI_DTYPE_U8 ? 1 : 4);
  /* Rows come from random places in a large dataset: fetch a few rows ahead
   * so their cache misses overlap instead of queueing one after another. */
  enum { AHEAD = 6 };
  for (size_t r = r0; r < r1 && r < r0 + AHEAD; r++) prefetch_row(op->in[0], idx[r], rows_src, row_bytes);
  for (size_t r = r0; r < r1; r++) {
    if (r + AHEAD < r1) prefetch_row(op->in[0], idx[r + AHEAD], rows_src, row_bytes);
    int32_t s = idx[r];
    int valid = s >= 0 && (size_t)s < rows_src;
    if (din == HM_ABI_DTYPE_I32) {
      int32_t *dst = (int32_t *)op->out[0] + r * cols;
      if (valid) memcpy(dst, (const int32_t *)op->in[0] + (size_t)s * cols, cols * 4);
      else memset(dst, 0, cols * 4);
    } else if (din == HM_ABI_DTYPE_U8) {
      float *dst = (float *)op->out[0] + r * cols;
      if (valid) j->ex->device->vec->u8_to_f32(cols, j->a, (const uint8_t *)op->in[0] + (size_t)s * cols, dst);
      else memset(dst, 0, cols * 4);
    } else {
      float *dst = (float *)op->out[0] + r * cols;
      if (valid) j->ex->device->vec->scale(cols, j->a, (const float *)op->in[0] + (size_t)s * cols, dst);
      else memset(dst, 0, cols * 4);
    }
  }
}

void cpu_kernel_gather_rows(const cpu_exec *ex, const cpu_op *op) {
  ew_job j = {ex, op, (size_t)op->op.dims[1], cpu_param(ex, op, 0), 0};
  cpu_parallel_range(ex->device, (size_t)op->op.dims[0], rows_min(j.cols), gather_range, &j);
}
