/*
 * GEMM: OpenBLAS sgemm (single-threaded per call) over column or row blocks of
 * C, one block per thread. Each element of C is computed by exactly one call
 * with the same K order, so results do not depend on scheduling. The
 * `gemm=reference` option replaces sgemm with a plain loop (for platforms
 * without OpenBLAS; far slower, and reported as such).
 */
#include <string.h>

#include "cpu_internal.h"

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

typedef struct gemm_job {
  const cpu_exec *ex;
  int ta, tb;
  size_t m, n, k;
  float alpha, beta;
  const float *a, *b;
  float *c;
  int split_cols;
} gemm_job;

static void reference_sgemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a,
                            size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
  for (size_t i = 0; i < m; i++) {
    float *ci = c + i * ldc;
    for (size_t j = 0; j < n; j++) ci[j] = beta == 0.0f ? 0.0f : beta * ci[j];
    for (size_t p = 0; p < k; p++) {
      float av = alpha * (ta ? a[p * lda + i] : a[i * lda + p]);
      if (tb)
        for (size_t j = 0; j < n; j++) ci[j] += av * b[j * ldb + p];
      else
        for (size_t j = 0; j < n; j++) ci[j] += av * b[p * ldb + j];
    }
  }
}

void cpu_sgemm(const cpu_context *ctx, int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a,
               size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
  if (ctx->use_reference_gemm) {
    reference_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  ctx->blas.sgemm(ROW_MAJOR, ta ? TRANS : NO_TRANS, tb ? TRANS : NO_TRANS, (int)m, (int)n, (int)k, alpha, a, (int)lda,
                  b, (int)ldb, beta, c, (int)ldc);
}

/* C[block] for rows [r0, r1) x cols [c0, c1). */
static void gemm_block(const gemm_job *j, size_t r0, size_t r1, size_t c0, size_t c1) {
  size_t lda = j->ta ? j->m : j->k, ldb = j->tb ? j->k : j->n, ldc = j->n;
  const float *a = j->ta ? j->a + r0 : j->a + r0 * lda;
  const float *b = j->tb ? j->b + c0 * ldb : j->b + c0;
  float *c = j->c + r0 * ldc + c0;
  size_t mm = r1 - r0, nn = c1 - c0;
  const cpu_context *ctx = j->ex->device->ctx;
  if (mm == 1 && !ctx->use_reference_gemm) {
    /* One row of C is a matrix-vector product: y = alpha op(B)^T x + beta y.
     * A single row is contiguous whether or not A is transposed (lda = 1). */
    if (j->tb)
      ctx->blas.sgemv(ROW_MAJOR, NO_TRANS, (int)nn, (int)j->k, j->alpha, b, (int)ldb, a, 1, j->beta, c, 1);
    else
      ctx->blas.sgemv(ROW_MAJOR, TRANS, (int)j->k, (int)nn, j->alpha, b, (int)ldb, a, 1, j->beta, c, 1);
    return;
  }
  if (ctx->use_reference_gemm) {
    reference_sgemm(j->ta, j->tb, mm, nn, j->k, j->alpha, a, lda, b, ldb, j->beta, c, ldc);
    return;
  }
  ctx->blas.sgemm(ROW_MAJOR, j->ta ? TRANS : NO_TRANS, j->tb ? TRANS : NO_TRANS, (int)mm, (int)nn,
                  (int)j->k, j->alpha, a, (int)lda, b, (int)ldb, j->beta, c, (int)ldc);
}

static void gemm_range(void *arg, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const gemm_job *j = arg;
  if (j->split_cols)
    gemm_block(j, 0, j->m, begin, end);
  else
    gemm_block(j, begin, end, 0, j->n);
}

/* Rounds f32 values to bfloat16 precision (nearest even), kept as f32 so
 * sgemm can run them; non-finite values are left as they are. */
static void round_bf16(size_t n, const float *x, float *y) {
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &x[i], 4);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&y[i], &u, 4);
  }
}

uint64_t cpu_gemm_scratch_bytes(const hm_abi_op *op) {
  if (op->code != HM_ABI_OP_GEMM || op->dtype_in != HM_ABI_DTYPE_BF16) return 0;
  /* Dimensions were bounded by the operand sizes before this is called. */
  return ((uint64_t)op->dims[0] * op->dims[2] + (uint64_t)op->dims[2] * op->dims[1]) * 4 + 64;
}

void cpu_kernel_gemm(const cpu_exec *ex, const cpu_op *op) {
  gemm_job j = {ex,
                !!(op->op.flags & HM_ABI_OP_FLAG_TRANS_A),
                !!(op->op.flags & HM_ABI_OP_FLAG_TRANS_B),
                (size_t)op->op.dims[0],
                (size_t)op->op.dims[1],
                (size_t)op->op.dims[2],
                cpu_param(ex, op, 0),
                cpu_param(ex, op, 1),
                op->in[0],
                op->in[1],
                op->out[0],
                0};
  if (j.m == 0 || j.n == 0) return;
  if (op->op.dtype_in == HM_ABI_DTYPE_BF16) {
    /* BF16 inputs: sgemm on rounded copies. This is slower than f32 (the
     * plugin declares it so); it exists for numerics, not speed. */
    float *ra = (float *)ex->scratch, *rb = ra + j.m * j.k;
    round_bf16(j.m * j.k, j.a, ra);
    round_bf16(j.k * j.n, j.b, rb);
    j.a = ra;
    j.b = rb;
  }
  if (j.k == 0) { /* C = beta*C; beta == 0 must not read C */
    for (size_t i = 0; i < j.m * j.n; i++) j.c[i] = j.beta == 0.0f ? 0.0f : j.beta * j.c[i];
    return;
  }
  double flops = 2.0 * (double)j.m * (double)j.n * (double)j.k;
  if (ex->device->threads == 1 || flops < 1.0e6) {
    gemm_block(&j, 0, j.m, 0, j.n);
    return;
  }
  /* Split the larger output dimension; blocks of >= 16 keep sgemm efficient. */
  j.split_cols = j.n >= j.m;
  cpu_parallel_range(ex->device, j.split_cols ? j.n : j.m, 16, gemm_range, &j);
}
