/*
 * Per-element inner loops of the CPU kernels. cpu_vec.c is compiled once per
 * ISA level (generic x86-64, AVX2+FMA, AVX-512) with the matching -m flags, and
 * the device picks the table that fits the CPU at open time. The loops are
 * plain C the compiler vectorizes; the threading lives in cpu_kernels_*.c.
 * Every variant computes the same function; results may differ in the last
 * bit where FMA contraction applies (numerics class F32).
 */
#ifndef HM_CPU_VEC_H_
#define HM_CPU_VEC_H_

#include <stddef.h>
#include <stdint.h>

typedef struct cpu_vec_ops {
  const char *name;
  /* y[i] = f(x[i] (+ bias[i % cols])) over a rows x cols block starting at a row. */
  void (*act_forward)(int act, float param, size_t rows, size_t cols, const float *bias,
                      const float *x, float *y);
  /* dx = beta*dx + dy * f'(x or y), element-wise (softmax handled by caller). */
  void (*act_backward)(int act, float param, float beta, size_t n, const float *x, const float *y,
                       const float *dy, float *dx);
  /* acc[c] += sum over rows of x[r*stride + c], c < cols. */
  void (*accumulate_rows)(size_t rows, size_t cols, size_t stride, const float *x, float *acc);
  double (*sum_squares)(size_t n, const float *x);
  void (*clip)(size_t n, float c, float *x);
  void (*scale)(size_t n, float a, const float *x, float *y);
  void (*axpy)(size_t n, float a, const float *x, float *y);
  void (*u8_to_f32)(size_t n, float scale, const uint8_t *src, float *dst);
  void (*sgd)(size_t n, float lr, float momentum, const float *g, float *p, float *vel);
  /* Adam (wd = 0, decoupled = 0), AdamW (decoupled = 1). */
  void (*adam)(size_t n, float lr, float b1, float b2, float eps, float inv_bc1, float inv_bc2,
               float wd, const float *g, float *p, float *m, float *v);
  void (*rmsprop)(size_t n, float lr, float rho, float eps, const float *g, float *p, float *s);
  /* LAMB phase 1: update m and v, return sum p^2 and sum u^2 (u = direction + wd*p). */
  void (*lamb_moments)(size_t n, float b1, float b2, float eps, float inv_bc1, float inv_bc2,
                       float wd, const float *g, const float *p, float *m, float *v, double *p2,
                       double *u2);
  /* LAMB phase 2: p -= step * u with step = lr * trust. */
  void (*lamb_apply)(size_t n, float step, float eps, float inv_bc1, float inv_bc2, float wd,
                     const float *m, const float *v, float *p);
  /* One output row of 2x2 max pooling with stride 2: y[o] = the largest of
   * r0[2o], r0[2o+1], r1[2o], r1[2o+1] (the first of equals; a NaN wins and
   * stays) and am[o] its index base + 2o, +1, +w, +w+1 (am may be NULL). */
  void (*max_pool_2x2_row)(size_t wo, size_t w, int32_t base, const float *r0, const float *r1, float *y,
                           int32_t *am);
} cpu_vec_ops;

const cpu_vec_ops *cpu_vec_generic(void);
const cpu_vec_ops *cpu_vec_avx2(void);
const cpu_vec_ops *cpu_vec_avx512(void);

#endif /* HM_CPU_VEC_H_ */
