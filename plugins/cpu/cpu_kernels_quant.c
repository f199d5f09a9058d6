/*
 * QUANTIZE, DEQUANTIZE and the integer matmuls GEMM_Q8/Q4/Q3 (abi/QUANT.md)
 * on the CPU: threading, scratch layout and the float epilogue. The per-ISA
 * loops are in cpu_quant_vec.c.
 *
 * GEMM_Qb computes C[i][j] for one weight row j at a time: the row is decoded
 * once into bytes (values + 128) and then dotted with four activation rows at
 * once (dot4). With fewer than four activation rows (GEMV), four weight rows
 * are decoded together and dotted with the same activation row instead. The
 * per-block sums then go through the float epilogue of QUANT.md Q7 in block
 * order, so every ISA level and every thread count gives the same bits.
 * Levels with rows8 kernels (AVX2) instead decode eight weight rows at a
 * time in registers and dot them with every activation row, rearranged
 * once (act_layout), the epilogue on the eight rows as one vector (gemv8
 * for each of up to three activation rows, gemm8 for more).
 */
#include <string.h>

#include "cpu_internal.h"

static int op_qtype(const hm_abi_op *op) {
  switch (op->code) {
    case HM_ABI_OP_QUANTIZE: return (int)op->dtype_out;
    case HM_ABI_OP_DEQUANTIZE: return (int)op->dtype_in;
    case HM_ABI_OP_GEMM_Q8: return HM_ABI_DTYPE_Q8;
    case HM_ABI_OP_GEMM_Q4: return HM_ABI_DTYPE_Q4;
    default: return HM_ABI_DTYPE_Q3;
  }
}

static size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

/* Below this many activation rows, gemv8 per row beats gemm8 (whose
 * transposed weight blocks pay off over several rows; bench_lowbit). */
#define GEMM8_MIN_ROWS 4

/* Scratch layout of one GEMM_Qb op. */
typedef struct qgemm_layout {
  size_t m, n, k, nb, mp;  /* mp: rows of A padded to a multiple of 4 */
  size_t a_vals, a_scales, a_sums; /* offsets of the decoded A */
  size_t a_act;                    /* A in act_layout (rows8 levels) */
  size_t per_chunk, chunk0;        /* per-thread part: 4 decoded B rows, their scales, block sums, or
                                      (rows8 levels) gemm8's m * 8 running sums */
  size_t total;
} qgemm_layout;

static qgemm_layout gemm_layout(const cpu_device *dev, const hm_abi_op *op) {
  qgemm_layout l;
  l.m = (size_t)op->dims[0];
  l.n = (size_t)op->dims[1];
  l.k = (size_t)op->dims[2];
  l.nb = cpu_q_blocks(l.k);
  l.mp = round_up(l.m ? l.m : 1, 4);
  size_t vals = round_up(l.nb * CPU_QBLOCK, 64);
  l.a_vals = 0;
  l.a_scales = l.a_vals + l.mp * vals;
  l.a_sums = l.a_scales + round_up(l.mp * l.nb * sizeof(float), 64);
  l.a_act = l.a_sums + round_up(l.mp * l.nb * sizeof(int32_t), 64);
  int rows8 = dev->quant->gemm8 != NULL;
  l.chunk0 = l.a_act + (rows8 ? l.mp * l.nb * CPU_QACT_BYTES : 0);
  l.per_chunk = rows8 ? round_up(l.mp * 8 * sizeof(float), 64)
                      : 4 * vals + round_up(4 * l.nb * sizeof(float), 64) + round_up(4 * l.nb * sizeof(int32_t), 64) +
                            round_up(l.nb * sizeof(int32_t), 64);
  l.total = l.chunk0 + l.per_chunk * (dev->threads ? dev->threads : 1);
  return l;
}

uint64_t cpu_quant_scratch_bytes(const cpu_device *dev, const hm_abi_op *op) {
  if (op->code != HM_ABI_OP_GEMM_Q8 && op->code != HM_ABI_OP_GEMM_Q4 && op->code != HM_ABI_OP_GEMM_Q3) return 0;
  /* Dimensions were bounded by the operand sizes before this is called. */
  return gemm_layout(dev, op).total;
}

/* ===== QUANTIZE / DEQUANTIZE ===== */

typedef struct rows_job {
  const cpu_quant_ops *q;
  int dtype, quantize;
  size_t k, row_bytes;
  const void *in;
  void *out;
} rows_job;

static void rows_range(void *arg, size_t begin, size_t end, size_t chunk) {
  (void)chunk;
  const rows_job *j = arg;
  if (j->quantize)
    j->q->quantize_rows(j->dtype, end - begin, j->k, (const float *)j->in + begin * j->k,
                        (uint8_t *)j->out + begin * j->row_bytes);
  else
    j->q->dequantize_rows(j->dtype, end - begin, j->k, (const uint8_t *)j->in + begin * j->row_bytes,
                          (float *)j->out + begin * j->k);
}

void cpu_kernel_quantize(const cpu_exec *ex, const cpu_op *op) {
  int dtype = op_qtype(&op->op);
  rows_job j = {ex->device->quant, dtype, op->op.code == HM_ABI_OP_QUANTIZE, (size_t)op->op.dims[1],
                cpu_q_blocks((size_t)op->op.dims[1]) * cpu_q_block_bytes(dtype), op->in[0], op->out[0]};
  size_t rows = (size_t)op->op.dims[0];
  /* Rows are independent; split when there is enough work to pay for it. */
  size_t min_rows = j.k ? 32768 / j.k + 1 : rows + 1;
  cpu_parallel_range(ex->device, rows, min_rows, rows_range, &j);
}

/* ===== GEMM_Qb ===== */

typedef struct gemm_job {
  const cpu_quant_ops *q;
  int dtype;
  qgemm_layout l;
  uint8_t *scratch;
  const uint8_t *b;
  float *c;
  size_t b_row_bytes;
} gemm_job;

static void gemm_rows_of_a(const gemm_job *g, size_t i, const int8_t *a[4], const int32_t *asum[4]) {
  const qgemm_layout *l = &g->l;
  size_t vals = round_up(l->nb * CPU_QBLOCK, 64);
  for (int r = 0; r < 4; r++) {
    a[r] = (const int8_t *)(g->scratch + l->a_vals + (i + (size_t)r) * vals);
    asum[r] = (const int32_t *)(g->scratch + l->a_sums) + (i + (size_t)r) * l->nb;
  }
}

static void gemm_range(void *arg, size_t begin, size_t end, size_t chunk) {
  const gemm_job *g = arg;
  const qgemm_layout *l = &g->l;
  size_t nb = l->nb, vals = round_up(nb * CPU_QBLOCK, 64);
  uint8_t *mine = g->scratch + l->chunk0 + chunk * l->per_chunk;
  uint8_t *ub = mine;                                                  /* 4 decoded B rows */
  float *sb = (float *)(mine + 4 * vals);                              /* their scales, [r][b] */
  int32_t *s = (int32_t *)((uint8_t *)sb + round_up(4 * nb * sizeof(float), 64)); /* [b][r] */
  const float *sa = (const float *)(g->scratch + l->a_scales);         /* [i][b] */
  const uint8_t *u[4];
  const int8_t *a[4];
  const int32_t *asum[4];
  if (g->q->gemm8) { /* eight weight rows at a time, decoded in registers */
    const uint8_t *act = g->scratch + l->a_act;
    const int32_t *asum8 = (const int32_t *)(g->scratch + l->a_sums);
    for (size_t j = begin; j < end; j += 8) {
      size_t rows = end - j < 8 ? end - j : 8;
      const uint8_t *bj = g->b + j * g->b_row_bytes;
      if (l->m < GEMM8_MIN_ROWS)
        for (size_t i = 0; i < l->m; i++)
          g->q->gemv8(g->dtype, nb, rows, bj, g->b_row_bytes, act + i * nb * CPU_QACT_BYTES, sa + i * nb,
                      asum8 + i * nb, g->c + i * l->n + j);
      else
        g->q->gemm8(g->dtype, nb, rows, bj, g->b_row_bytes, l->m, act, sa, asum8, (float *)mine, g->c + j, l->n);
    }
    return;
  }
  if (l->m >= 4) {
    /* One weight row against four activation rows. */
    for (size_t j = begin; j < end; j++) {
      g->q->decode_offset(g->dtype, nb, g->b + j * g->b_row_bytes, ub, sb);
      u[0] = u[1] = u[2] = u[3] = ub;
      for (size_t i = 0; i < l->m; i += 4) {
        gemm_rows_of_a(g, i, a, asum);
        g->q->dot4(g->dtype, nb, u, a, asum, s);
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (size_t b = 0; b < nb; b++)
          for (int r = 0; r < 4; r++)
            acc[r] = acc[r] + (sa[(i + (size_t)r) * nb + b] * sb[b]) * (float)s[4 * b + (size_t)r];
        for (size_t r = 0; r < 4 && i + r < l->m; r++) g->c[(i + r) * l->n + j] = acc[r];
      }
    }
    return;
  }
  /* GEMV-like: four weight rows against one activation row. */
  for (size_t j = begin; j < end; j += 4) {
    size_t rows = end - j < 4 ? end - j : 4;
    for (size_t r = 0; r < 4; r++) {
      size_t src = j + (r < rows ? r : 0); /* pad with a repeat of row j; discarded below */
      g->q->decode_offset(g->dtype, nb, g->b + src * g->b_row_bytes, ub + r * vals, sb + r * nb);
      u[r] = ub + r * vals;
    }
    for (size_t i = 0; i < l->m; i++) {
      for (int r = 0; r < 4; r++) {
        a[r] = (const int8_t *)(g->scratch + l->a_vals + i * vals);
        asum[r] = (const int32_t *)(g->scratch + l->a_sums) + i * nb;
      }
      g->q->dot4(g->dtype, nb, u, a, asum, s);
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      const float *sai = sa + i * nb;
      for (size_t b = 0; b < nb; b++)
        for (size_t r = 0; r < 4; r++) acc[r] = acc[r] + (sai[b] * sb[r * nb + b]) * (float)s[4 * b + r];
      for (size_t r = 0; r < rows; r++) g->c[i * l->n + j + r] = acc[r];
    }
  }
}

void cpu_kernel_gemm_q(const cpu_exec *ex, const cpu_op *op) {
  int dtype = op_qtype(&op->op);
  gemm_job g;
  g.q = ex->device->quant;
  g.dtype = dtype;
  g.l = gemm_layout(ex->device, &op->op);
  g.scratch = ex->scratch;
  g.b = op->in[1];
  g.c = op->out[0];
  size_t bb = cpu_q_block_bytes(dtype), nb = g.l.nb, vals = round_up(nb * CPU_QBLOCK, 64);
  g.b_row_bytes = nb * bb;
  if (g.l.m == 0 || g.l.n == 0) return;
  /* Decode A once: values, scales, sums; padding rows are zero. */
  const uint8_t *a = op->in[0];
  float *sa = (float *)(g.scratch + g.l.a_scales);
  int32_t *asum = (int32_t *)(g.scratch + g.l.a_sums);
  for (size_t i = 0; i < g.l.mp; i++) {
    int8_t *v = (int8_t *)(g.scratch + g.l.a_vals + i * vals);
    if (i < g.l.m) {
      g.q->decode_signed(dtype, nb, a + i * nb * bb, v, sa + i * nb, asum + i * nb);
    } else {
      memset(v, 0, vals);
      memset(sa + i * nb, 0, nb * sizeof *sa);
      memset(asum + i * nb, 0, nb * sizeof *asum);
    }
    if (g.q->act_layout && i < g.l.m) { /* gemm8: [block][row], a row tile's blocks together; gemv8: [row][block] */
      int many = g.l.m >= GEMM8_MIN_ROWS;
      g.q->act_layout(dtype, nb, v, g.scratch + g.l.a_act + i * (many ? 1 : nb) * CPU_QACT_BYTES,
                      (many ? g.l.m : 1) * CPU_QACT_BYTES, many);
    }
  }
  double work = (double)g.l.m * (double)g.l.n * (double)g.l.k;
  size_t min_cols = work < 2.0e5 ? g.l.n + 1 : 16;
  cpu_parallel_range(ex->device, g.l.n, min_cols, gemm_range, &g);
}
