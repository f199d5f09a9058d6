/*
 * hm_reference.h — the scalar reference implementation of every ABI op.
 *
 * This is the executable form of SPEC.md §7: plain loops, computed in double
 * and rounded to float at the end, with no threading and no tricks. Tests and
 * `harmonics conform` compare plugins against it. It is not fast and is not
 * meant to be.
 */
#ifndef HM_REFERENCE_H_
#define HM_REFERENCE_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Activation f(x) and its derivative, in double. |param| is the leaky-relu
 * slope or the elu alpha (ignored by the others). Softmax is not elementwise
 * and is handled by hm_ref_act_forward/backward. */
double hm_ref_activation(int act, double x, double param);
double hm_ref_activation_grad(int act, double x, double param);
/* The default |param| of an activation (0.01 leaky slope, 1 elu alpha). */
float hm_ref_activation_default_param(int act);

void hm_ref_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                 const float *a, const float *b, float beta, float *c);
void hm_ref_bias_add(size_t rows, size_t cols, const float *bias, float *y);
void hm_ref_act_forward(int act, float param, size_t rows, size_t cols, const float *x, float *y);
void hm_ref_act_backward(int act, float param, float beta, size_t rows, size_t cols, const float *x,
                         const float *y, const float *dy, float *dx);
/* Loss over a rows x cols prediction. |target| is rows int32 class indices when
 * |class_index|, else rows x cols floats. Writes loss_beta*loss_out + mean loss
 * into *loss_out (if non-NULL) and grad_beta*grad + scale*d(mean loss)/dP into
 * grad (if non-NULL). */
void hm_ref_loss(int loss, int class_index, float param, float scale, float loss_beta,
                 float grad_beta, size_t rows, size_t cols, const float *pred, const void *target,
                 float *loss_out, float *grad);
void hm_ref_reduce_rows(size_t rows, size_t cols, float alpha, float beta, const float *x, float *y);
void hm_ref_reduce_cols(size_t rows, size_t cols, float alpha, float beta, const float *x, float *y);
void hm_ref_sum_squares(size_t n, float alpha, float beta, const float *x, float *y);
void hm_ref_clip(size_t n, float c, float *x);
void hm_ref_scale(size_t n, float a, const float *x, float *y);
void hm_ref_axpy(size_t n, float a, const float *x, float *y);
/* Gathers rows of |src| (rows_src x cols, dtype_in F32, U8 or I32) into |dst|
 * (F32, or I32 when the source is I32). Out-of-range indices give zero rows. */
void hm_ref_gather_rows(int dtype_in, size_t rows_out, size_t cols, size_t rows_src, float scale,
                        const void *src, const int32_t *idx, void *dst);
void hm_ref_fill(int dtype, size_t n, float v, void *x);
void hm_ref_copy(int dtype, size_t n, const void *x, void *y);

/* Optimizer steps over n elements (SPEC.md §7.4). */
void hm_ref_sgd(size_t n, float lr, float momentum, const float *g, float *p, float *vel);
void hm_ref_adam(size_t n, float lr, float b1, float b2, float eps, float bc1, float bc2,
                 const float *g, float *p, float *m, float *v);
void hm_ref_rmsprop(size_t n, float lr, float rho, float eps, const float *g, float *p, float *s);
void hm_ref_adamw(size_t n, float lr, float b1, float b2, float eps, float bc1, float bc2, float wd,
                  const float *g, float *p, float *m, float *v);
void hm_ref_lamb(size_t n, float lr, float b1, float b2, float eps, float bc1, float bc2, float wd,
                 const float *g, float *p, float *m, float *v);

/* ===== Packed integer formats (abi/QUANT.md), hm_reference_quant.c ===== */

#define HM_REF_QBLOCK 64 /* values per block */

/* Bytes of one block (2-byte f16 scale + packed values), 0 for other dtypes. */
size_t hm_ref_q_block_bytes(int dtype);
/* The largest magnitude of a quantized value: 127, 7 or 3. */
int hm_ref_q_max(int dtype);
/* Bytes of one packed row of |k| values (k rounded up to whole blocks). */
size_t hm_ref_q_row_bytes(int dtype, size_t k);
/* IEEE binary16 conversions; the f32 -> f16 one rounds to nearest even and
 * saturates to +-65504 instead of overflowing (QUANT.md §2). */
uint16_t hm_ref_f32_to_f16_sat(float f);
float hm_ref_f16_to_f32(uint16_t h);
/* The scale of a block, and its |i|-th value as a signed integer. */
float hm_ref_q_scale(const uint8_t *block);
int hm_ref_q_get(int dtype, const uint8_t *block, int i);
void hm_ref_quantize_row(int dtype, size_t k, const float *x, uint8_t *out);
void hm_ref_dequantize_row(int dtype, size_t k, const uint8_t *q, float *x);
/* C (m x n, f32) = A (m packed rows) . B (n packed rows)^T, K = k. */
void hm_ref_gemm_q(int dtype, size_t m, size_t n, size_t k, const uint8_t *a, const uint8_t *b, float *c);
/* |x| rounded to the input precision of a GEMM (F32 unchanged; TF32, F16 and
 * BF16 to nearest even, F16 overflowing to infinity). */
float hm_ref_round_to(int dtype, float x);

/* ===== Window ops and dropout (SPEC.md §7.5), hm_reference_window.c ===== */

/* CONV2D: y = conv(x, w) + bias (bias may be NULL). */
void hm_ref_conv2d(const hm_abi_window *g, const float *x, const float *w, const float *bias, float *y);
/* IM2COL: cols [N*Ho*Wo, C_in*KH*KW] = each output position's patch of x. */
void hm_ref_im2col(const hm_abi_window *g, const float *x, float *cols);
/* CONV2D_BWD_DATA: dx (+)= the gradient of conv with respect to x. */
void hm_ref_conv2d_bwd_data(const hm_abi_window *g, int accumulate, const float *dy, const float *w, float *dx);
/* CONV2D_BWD_FILTER: dw (+)= dLoss/dw, db (+)= sum of dy per channel (db may be NULL). */
void hm_ref_conv2d_bwd_filter(const hm_abi_window *g, int accumulate, const float *x, const float *dy, float *dw,
                              float *db);
/* POOL2D: y = max or average pool of x; argmax (may be NULL; max only)
 * receives each maximum's index in its input plane. */
void hm_ref_pool2d(int variant, const hm_abi_window *g, const float *x, float *y, int32_t *argmax);
/* POOL2D_BWD: dx (+)= the gradient through the pool (max uses argmax). */
void hm_ref_pool2d_bwd(int variant, const hm_abi_window *g, int accumulate, const float *dy, const int32_t *argmax,
                       float *dx);
/* The dropout hash (lowbias32) and keep decision: element |index| of update
 * |step| under |seed| survives |rate| (SPEC.md §7.5, bit-exact). */
uint32_t hm_ref_hash32(uint32_t x);
int hm_ref_dropout_keep(uint64_t seed, uint32_t step, uint32_t index, float rate);
void hm_ref_dropout(size_t n, uint64_t seed, uint32_t step, float rate, float scale, const float *x, float *y);

/* BATCH_NORM over [n, c, s] (s = H*W): |mode| hm_abi_norm_mode; running
 * = [mean per channel, variance per channel]: evaluation normalizes with
 * it, training (batch statistics) updates it when non-NULL (momentum m:
 * r = (1-m) r + m batch, the variance unbiased). */
void hm_ref_batch_norm(int mode, size_t n, size_t c, size_t s, float eps, float momentum, const float *x,
                       const float *gamma, const float *beta, float *y, float *running);
/* BATCH_NORM_BWD of training mode: the batch statistics recomputed from x. */
void hm_ref_batch_norm_bwd(size_t n, size_t c, size_t s, float eps, float beta_dx, float beta_params, const float *x,
                           const float *dy, const float *gamma, float *dx, float *dgamma, float *dbeta);
/* LAYER_NORM over each of n rows of d values, and its backward. */
void hm_ref_layer_norm(size_t n, size_t d, float eps, const float *x, const float *gamma, const float *beta, float *y);
void hm_ref_layer_norm_bwd(size_t n, size_t d, float eps, float beta_dx, float beta_params, const float *x,
                           const float *dy, const float *gamma, float *dx, float *dgamma, float *dbeta);

/* Element size in bytes of a plain dtype, 0 for block formats and NONE. */
size_t hm_ref_dtype_size(int dtype);

/* Resolves an operand to host memory; returns NULL for an unused operand. */
typedef void *(*hm_ref_resolve_fn)(void *ctx, const hm_abi_operand *operand);

/* Executes one op on host memory with the reference kernels. Returns
 * HM_ABI_OK, or HM_ABI_STATUS_UNIMPLEMENTED for an op/dtype without a
 * reference, or HM_ABI_STATUS_INVALID_ARGUMENT for a malformed op. */
int32_t hm_ref_execute(const hm_abi_op *op, hm_ref_resolve_fn resolve, void *ctx,
                       const double *scalars, uint32_t n_scalars);

/* The value of the op's parameter |param_index| after applying dynamic slot
 * |dyn_index| if it is used (SPEC.md §7: a used slot overrides the param). */
float hm_ref_param(const hm_abi_op *op, int param_index, int dyn_index, const double *scalars,
                   uint32_t n_scalars);

#ifdef __cplusplus
}
#endif
#endif /* HM_REFERENCE_H_ */
