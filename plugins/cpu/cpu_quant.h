/*
 * The packed integer formats of abi/QUANT.md on the CPU. cpu_quant_vec.c is
 * compiled once per ISA level (generic, AVX2, AVX-VNNI, AVX-512 VNNI+VBMI);
 * every level computes the same bytes and the same f32 results, because the
 * integer parts are exact and the few float operations happen in the same
 * order with no contraction (-ffp-contract=off). The threading and the float
 * epilogue of the matmul live in cpu_kernels_quant.c.
 *
 * The matmul works on decoded blocks: activations (A) as signed int8 with
 * per-block sums, weights (B) as unsigned bytes q + 128, which is the operand
 * order VNNI's vpdpbusd (u8 x s8) wants: sum (qb + 128) * qa - 128 * sum(qa)
 * = sum qb * qa, exactly.
 */
#ifndef HM_CPU_QUANT_H_
#define HM_CPU_QUANT_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics_abi.h"

#define CPU_QBLOCK 64

typedef struct cpu_quant_ops {
  const char *name;
  /* Packs |rows| rows of |k| floats into rows of ceil(k/64) blocks. */
  void (*quantize_rows)(int dtype, size_t rows, size_t k, const float *x, uint8_t *q);
  /* Unpacks |rows| rows of |k| values. */
  void (*dequantize_rows)(int dtype, size_t rows, size_t k, const uint8_t *q, float *x);
  /* One packed row of |nb| blocks: values as int8 (nb*64), scales, sums. */
  void (*decode_signed)(int dtype, size_t nb, const uint8_t *row, int8_t *vals, float *scales, int32_t *sums);
  /* One packed row of |nb| blocks: values + 128 as uint8 (nb*64), scales. */
  void (*decode_offset)(int dtype, size_t nb, const uint8_t *row, uint8_t *vals, float *scales);
  /* Four block dot products at once: for r < 4 and b < nb,
   * s[4*b + r] = sum_t (u[r][64b+t] - 128) * a[r][64b+t], given
   * asum[r][b] = sum_t a[r][64b+t]; |dtype| says how large the values can be. */
  void (*dot4)(int dtype, size_t nb, const uint8_t *const u[4], const int8_t *const a[4],
               const int32_t *const asum[4], int32_t *s);
  /* Eight weight rows at a time, decoded in registers (NULL where a level
   * has none; the dot4 path then runs). act_layout rearranges one activation
   * row's decoded values (decode_signed's) once into the order the weights
   * decode in, CPU_QACT_BYTES a block, its blocks |stride| bytes apart
   * (|many|: for gemm8). Then each of the |rows| <= 8 rows of |b|
   * (|row_bytes| apart) is dotted with it through QUANT.md Q7's float
   * epilogue; |sa| and |asum| are the activations' block scales and sums
   * ([row][block], decode_signed's). gemv8 takes one activation row (blocks
   * CPU_QACT_BYTES apart) and writes c[0..rows); gemm8 takes |m| rows, block
   * b of row i at (b * m + i) * CPU_QACT_BYTES, writes c[i * ldc + r] and
   * needs |scratch| of m * 8 floats, 32-byte aligned. The caller takes
   * gemm8 from GEMM8_MIN_ROWS rows (cpu_kernels_quant.c), gemv8 per row
   * below. */
  void (*act_layout)(int dtype, size_t nb, const int8_t *vals, void *act, size_t stride, int many);
  void (*gemv8)(int dtype, size_t nb, size_t rows, const uint8_t *b, size_t row_bytes, const void *act,
                const float *sa, const int32_t *asum, float *c);
  void (*gemm8)(int dtype, size_t nb, size_t rows, const uint8_t *b, size_t row_bytes, size_t m, const void *act,
                const float *sa, const int32_t *asum, float *scratch, float *c, size_t ldc);
} cpu_quant_ops;

#define CPU_QACT_BYTES 128 /* per block: 64 values as int16 at most */

const cpu_quant_ops *cpu_quant_generic(void);
const cpu_quant_ops *cpu_quant_avx2(void);
const cpu_quant_ops *cpu_quant_avxvnni(void);
const cpu_quant_ops *cpu_quant_avx512(void);

static inline size_t cpu_q_block_bytes(int dtype) {
  return dtype == HM_ABI_DTYPE_Q8   ? HM_ABI_Q8_BLOCK_BYTES
         : dtype == HM_ABI_DTYPE_Q4 ? HM_ABI_Q4_BLOCK_BYTES
         : dtype == HM_ABI_DTYPE_Q3 ? HM_ABI_Q3_BLOCK_BYTES
                                    : 0;
}

static inline size_t cpu_q_blocks(size_t k) { return (k + CPU_QBLOCK - 1) / CPU_QBLOCK; }

#endif /* HM_CPU_QUANT_H_ */
