/*
 * Scalar reference kernels: the meaning of each ABI op (SPEC.md §7), computed
 * in double precision and rounded to float once at the end.
 */
#include "hm_reference.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SELU_LAMBDA 1.0507009873554804934193349852946
#define SELU_ALPHA 1.6732632423543772848170429916717
#define INV_SQRT2 0.70710678118654752440084436210485
#define INV_SQRT_2PI 0.39894228040143267793994605993438

float hm_ref_activation_default_param(int act) {
  if (act == HM_ABI_ACT_LEAKY_RELU) return 0.01f;
  if (act == HM_ABI_ACT_ELU) return 1.0f;
  return 0.0f;
}

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

double hm_ref_activation(int act, double x, double param) {
  switch (act) {
    case HM_ABI_ACT_IDENTITY: return x;
    case HM_ABI_ACT_RELU: return x > 0 ? x : 0.0;
    case HM_ABI_ACT_LEAKY_RELU: return x > 0 ? x : param * x;
    case HM_ABI_ACT_SIGMOID: return sigmoid(x);
    case HM_ABI_ACT_TANH: return tanh(x);
    case HM_ABI_ACT_GELU: return 0.5 * x * (1.0 + erf(x * INV_SQRT2));
    case HM_ABI_ACT_SILU: return x * sigmoid(x);
    case HM_ABI_ACT_ELU: return x > 0 ? x : param * expm1(x);
    case HM_ABI_ACT_SELU: return x > 0 ? SELU_LAMBDA * x : SELU_LAMBDA * SELU_ALPHA * expm1(x);
    default: return NAN;
  }
}

double hm_ref_activation_grad(int act, double x, double param) {
  switch (act) {
    case HM_ABI_ACT_IDENTITY: return 1.0;
    case HM_ABI_ACT_RELU: return x > 0 ? 1.0 : 0.0;
    case HM_ABI_ACT_LEAKY_RELU: return x > 0 ? 1.0 : param;
    case HM_ABI_ACT_SIGMOID: {
      double s = sigmoid(x);
      return s * (1.0 - s);
    }
    case HM_ABI_ACT_TANH: {
      double t = tanh(x);
      return 1.0 - t * t;
    }
    case HM_ABI_ACT_GELU:
      return 0.5 * (1.0 + erf(x * INV_SQRT2)) + x * exp(-0.5 * x * x) * INV_SQRT_2PI;
    case HM_ABI_ACT_SILU: {
      double s = sigmoid(x);
      return s * (1.0 + x * (1.0 - s));
    }
    case HM_ABI_ACT_ELU: return x > 0 ? 1.0 : param * exp(x);
    case HM_ABI_ACT_SELU: return x > 0 ? SELU_LAMBDA : SELU_LAMBDA * SELU_ALPHA * exp(x);
    default: return NAN;
  }
}

void hm_ref_gemm(int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
                 const float *a, const float *b, float beta, float *c) {
  for (size_t i = 0; i < m; i++) {
    for (size_t j = 0; j < n; j++) {
      double acc = 0.0;
      for (size_t p = 0; p < k; p++) {
        double av = trans_a ? a[p * m + i] : a[i * k + p];
        double bv = trans_b ? b[j * k + p] : b[p * n + j];
        acc += av * bv;
      }
      double prev = beta == 0.0f ? 0.0 : (double)beta * c[i * n + j];
      c[i * n + j] = (float)((double)alpha * acc + prev);
    }
  }
}

void hm_ref_bias_add(size_t rows, size_t cols, const float *bias, float *y) {
  for (size_t r = 0; r < rows; r++)
    for (size_t c = 0; c < cols; c++) y[r * cols + c] = (float)((double)y[r * cols + c] + bias[c]);
}

void hm_ref_act_forward(int act, float param, size_t rows, size_t cols, const float *x, float *y) {
  if (act == HM_ABI_ACT_SOFTMAX) {
    for (size_t r = 0; r < rows; r++) {
      const float *xr = x + r * cols;
      double mx = -INFINITY, sum = 0.0;
      for (size_t c = 0; c < cols; c++)
        if (xr[c] > mx) mx = xr[c];
      for (size_t c = 0; c < cols; c++) sum += exp((double)xr[c] - mx);
      for (size_t c = 0; c < cols; c++) y[r * cols + c] = (float)(exp((double)xr[c] - mx) / sum);
    }
    return;
  }
  for (size_t i = 0; i < rows * cols; i++) y[i] = (float)hm_ref_activation(act, x[i], param);
}

void hm_ref_act_backward(int act, float param, float beta, size_t rows, size_t cols, const float *x,
                         const float *y, const float *dy, float *dx) {
  for (size_t r = 0; r < rows; r++) {
    double dot = 0.0;
    if (act == HM_ABI_ACT_SOFTMAX)
      for (size_t c = 0; c < cols; c++) dot += (double)dy[r * cols + c] * y[r * cols + c];
    for (size_t c = 0; c < cols; c++) {
      size_t i = r * cols + c;
      double g;
      if (act == HM_ABI_ACT_SOFTMAX) {
        g = (double)y[i] * ((double)dy[i] - dot);
      } else if (act == HM_ABI_ACT_SIGMOID) {
        g = (double)dy[i] * ((double)y[i] * (1.0 - (double)y[i]));
      } else if (act == HM_ABI_ACT_TANH) {
        g = (double)dy[i] * (1.0 - (double)y[i] * y[i]);
      } else if (act == HM_ABI_ACT_IDENTITY) {
        g = dy[i];
      } else {
        g = (double)dy[i] * hm_ref_activation_grad(act, x[i], param);
      }
      double prev = beta == 0.0f ? 0.0 : (double)beta * dx[i];
      dx[i] = (float)(g + prev);
    }
  }
}

void hm_ref_loss(int loss, int class_index, float param, float scale, float loss_beta,
                 float grad_beta, size_t rows, size_t cols, const float *pred, const void *target,
                 float *loss_out, float *grad) {
  const float *tf = (const float *)target;
  const int32_t *ti = (const int32_t *)target;
  double total = 0.0;
  /* Cross-entropy is a mean over rows; the element-wise losses are means over
   * all rows*cols elements, as in PyTorch's default reduction. */
  double denom = loss == HM_ABI_LOSS_CROSS_ENTROPY ? (double)rows : (double)rows * (double)cols;
  for (size_t r = 0; r < rows; r++) {
    const float *p = pred + r * cols;
    if (loss == HM_ABI_LOSS_CROSS_ENTROPY) {
      double mx = -INFINITY, sum = 0.0;
      for (size_t c = 0; c < cols; c++)
        if (p[c] > mx) mx = p[c];
      for (size_t c = 0; c < cols; c++) sum += exp((double)p[c] - mx);
      double lse = mx + log(sum);
      double tsum = 0.0;
      int32_t label = class_index ? ti[r] : -1;
      int valid = !class_index || (label >= 0 && (size_t)label < cols);
      if (class_index) {
        if (valid) total += lse - p[label];
        tsum = valid ? 1.0 : 0.0;
      } else {
        for (size_t c = 0; c < cols; c++) {
          total += (double)tf[r * cols + c] * (lse - p[c]);
          tsum += tf[r * cols + c];
        }
      }
      if (grad) {
        for (size_t c = 0; c < cols; c++) {
          double sm = exp((double)p[c] - lse);
          double t = class_index ? (valid && (size_t)label == c ? 1.0 : 0.0) : tf[r * cols + c];
          double g = class_index && !valid ? 0.0 : (tsum * sm - t);
          size_t i = r * cols + c;
          double prev = grad_beta == 0.0f ? 0.0 : (double)grad_beta * grad[i];
          grad[i] = (float)((double)scale * g / denom + prev);
        }
      }
      continue;
    }
    for (size_t c = 0; c < cols; c++) {
      size_t i = r * cols + c;
      double x = p[c], t = tf[i], e = x - t, l = 0.0, g = 0.0;
      switch (loss) {
        case HM_ABI_LOSS_MSE:
          l = e * e;
          g = 2.0 * e;
          break;
        case HM_ABI_LOSS_MAE:
          l = fabs(e);
          g = e > 0 ? 1.0 : (e < 0 ? -1.0 : 0.0);
          break;
        case HM_ABI_LOSS_BCE:
          l = (x > 0 ? x : 0.0) - x * t + log1p(exp(-fabs(x)));
          g = sigmoid(x) - t;
          break;
        case HM_ABI_LOSS_HUBER: {
          double d = param;
          if (fabs(e) <= d) {
            l = 0.5 * e * e;
            g = e;
          } else {
            l = d * (fabs(e) - 0.5 * d);
            g = e > 0 ? d : -d;
          }
          break;
        }
        default: break;
      }
      total += l;
      if (grad) {
        double prev = grad_beta == 0.0f ? 0.0 : (double)grad_beta * grad[i];
        grad[i] = (float)((double)scale * g / denom + prev);
      }
    }
  }
  if (loss_out) {
    double prev = loss_beta == 0.0f ? 0.0 : (double)loss_beta * loss_out[0];
    loss_out[0] = (float)(total / denom + prev);
  }
}

void hm_ref_reduce_rows(size_t rows, size_t cols, float alpha, float beta, const float *x, float *y) {
  for (size_t c = 0; c < cols; c++) {
    double acc = 0.0;
    for (size_t r = 0; r < rows; r++) acc += x[r * cols + c];
    double prev = beta == 0.0f ? 0.0 : (double)beta * y[c];
    y[c] = (float)((double)alpha * acc + prev);
  }
}

void hm_ref_reduce_cols(size_t rows, size_t cols, float alpha, float beta, const float *x, float *y) {
  for (size_t r = 0; r < rows; r++) {
    double acc = 0.0;
    for (size_t c = 0; c < cols; c++) acc += x[r * cols + c];
    double prev = beta == 0.0f ? 0.0 : (double)beta * y[r];
    y[r] = (float)((double)alpha * acc + prev);
  }
}

void hm_ref_sum_squares(size_t n, float alpha, float beta, const float *x, float *y) {
  double acc = 0.0;
  for (size_t i = 0; i < n; i++) acc += (double)x[i] * x[i];
  double prev = beta == 0.0f ? 0.0 : (double)beta * y[0];
  y[0] = (float)((double)alpha * acc + prev);
}

void hm_ref_clip(size_t n, float c, float *x) {
  for (size_t i = 0; i < n; i++) {
    if (x[i] > c) x[i] = c;
    else if (x[i] < -c) x[i] = -c;
  }
}

void hm_ref_scale(size_t n, float a, const float *x, float *y) {
  for (size_t i = 0; i < n; i++) y[i] = (float)((double)a * x[i]);
}

void hm_ref_axpy(size_t n, float a, const float *x, float *y) {
  for (size_t i = 0; i < n; i++) y[i] = (float)((double)a * x[i] + y[i]);
}

size_t hm_ref_dtype_size(int dtype) {
  switch (dtype) {
    case HM_ABI_DTYPE_F32: return 4;
    case HM_ABI_DTYPE_F16: return 2;
    case HM_ABI_DTYPE_BF16: return 2;
    case HM_ABI_DTYPE_F64: return 8;
    case HM_ABI_DTYPE_I32: return 4;
    case HM_ABI_DTYPE_I8: return 1;
    case HM_ABI_DTYPE_U8: return 1;
    case HM_ABI_DTYPE_I64: return 8;
    default: return 0;
  }
}

void hm_ref_gather_rows(int dtype_in, size_t rows_out, size_t cols, size_t rows_src, float scale,
                        const void *src, const int32_t *idx, void *dst) {
  for (size_t r = 0; r < rows_out; r++) {
    int32_t s = idx[r];
    int valid = s >= 0 && (size_t)s < rows_src;
    for (size_t c = 0; c < cols; c++) {
      size_t o = r * cols + c;
      if (dtype_in == HM_ABI_DTYPE_I32) {
        ((int32_t *)dst)[o] = valid ? ((const int32_t *)src)[(size_t)s * cols + c] : 0;
      } else if (dtype_in == HM_ABI_DTYPE_U8) {
        ((float *)dst)[o] = valid ? (float)((double)scale * ((const uint8_t *)src)[(size_t)s * cols + c]) : 0.0f;
      } else {
        ((float *)dst)[o] = valid ? (float)((double)scale * ((const float *)src)[(size_t)s * cols + c]) : 0.0f;
      }
    }
  }
}

void hm_ref_fill(int dtype, size_t n, float v, void *x) {
  for (size_t i = 0; i < n; i++) {
    if (dtype == HM_ABI_DTYPE_I32) ((int32_t *)x)[i] = (int32_t)v;
    else ((float *)x)[i] = v;
  }
}

void hm_ref_copy(int dtype, size_t n, const void *x, void *y) {
  size_t es = hm_ref_dtype_size(dtype);
  memmove(y, x, n * es);
}

void hm_ref_sgd(size_t n, float lr, float momentum, const float *g, float *p, float *vel) {
  for (size_t i = 0; i < n; i++) {
    double step = g[i];
    if (momentum != 0.0f && vel) {
      double v = (double)momentum * vel[i] + g[i];
      vel[i] = (float)v;
      step = vel[i];
    }
    p[i] = (float)((double)p[i] - (double)lr * step);
  }
}

/* Shared by Adam, AdamW and LAMB: updates m and v and returns the direction
 * m_hat / (sqrt(v_hat) + eps) for element i. */
static double adam_direction(size_t i, float b1, float b2, float eps, float bc1, float bc2,
                             const float *g, float *m, float *v) {
  m[i] = (float)((double)b1 * m[i] + (1.0 - (double)b1) * g[i]);
  v[i] = (float)((double)b2 * v[i] + (1.0 - (double)b2) * (double)g[i] * g[i]);
  double mh = (double)m[i] / bc1;
  double vh = (double)v[i] / bc2;
  return mh / (sqrt(vh) + eps);
}

void hm_ref_adam(size_t n, float lr, float b1, float b2, float eps, float bc1, float bc2,
                 const float *g, float *p, float *m, float *v) {
  for (size_t i = 0; i < n; i++) {
    double d = adam_direction(i, b1, b2, eps, bc1, bc2, g, m, v);
    p[i] = (float)((double)p[i] - (double)lr * d);
  }
}

void hm_ref_rmsprop(size_t n, float lr, float rho, float eps, const float *g, float *p, float *s) {
  for (size_t i = 0; i < n; i++) {
    s[i] = (float)((double)rho * s[i] + (1.0 - (double)rho) * (double)g[i] * g[i]);
    p[i] = (float)((double)p[i] - (double)lr * g[i] / (sqrt((double)s[i]) + eps));
  }
}

void hm_ref_adamw(size_t n, float lr, float b1, float b2, float eps, float bc1, float bc2, float wd,
                  const float *g, float *p, float *m, float *v) {
  for (size_t i = 0; i < n; i++) {
    double d = adam_direction(i, b1, b2, eps, bc1, bc2, g, m, v);
    p[i] = (float)((double)p[i] - (double)lr * (d + (double)wd * p[i]));
  }
}

void hm_ref_lamb(size_t n, float lr, float b1, float b2, float eps, float bc1, float bc2, float wd,
                 const float *g, float *p, float *m, float *v) {
  double pn = 0.0, un = 0.0;
  for (size_t i = 0; i < n; i++) {
    double d = adam_direction(i, b1, b2, eps, bc1, bc2, g, m, v);
    double u = d + (double)wd * p[i];
    pn += (double)p[i] * p[i];
    un += u * u;
  }
  pn = sqrt(pn);
  un = sqrt(un);
  double trust = (pn == 0.0 || un == 0.0) ? 1.0 : pn / un;
  for (size_t i = 0; i < n; i++) {
    double mh = (double)m[i] / bc1, vh = (double)v[i] / bc2;
    double u = mh / (sqrt(vh) + eps) + (double)wd * p[i];
    p[i] = (float)((double)p[i] - (double)lr * trust * u);
  }
}

/* GEMM with its inputs first rounded to |din| (a no-op for F32). */
static int32_t ref_gemm_rounded(const hm_abi_op *op, int din, const float *a, const float *b, float *c, float alpha,
                                float beta) {
  size_t m = (size_t)op->dims[0], n = (size_t)op->dims[1], k = (size_t)op->dims[2];
  int ta = !!(op->flags & HM_ABI_OP_FLAG_TRANS_A), tb = !!(op->flags & HM_ABI_OP_FLAG_TRANS_B);
  if (din == HM_ABI_DTYPE_F32) {
    hm_ref_gemm(ta, tb, m, n, k, alpha, a, b, beta, c);
    return HM_ABI_OK;
  }
  float *ra = malloc((m * k + 1) * sizeof *ra), *rb = malloc((n * k + 1) * sizeof *rb);
  if (!ra || !rb) {
    free(ra);
    free(rb);
    return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  }
  for (size_t i = 0; i < m * k; i++) ra[i] = hm_ref_round_to(din, a[i]);
  for (size_t i = 0; i < n * k; i++) rb[i] = hm_ref_round_to(din, b[i]);
  hm_ref_gemm(ta, tb, m, n, k, alpha, ra, rb, beta, c);
  free(ra);
  free(rb);
  return HM_ABI_OK;
}

float hm_ref_param(const hm_abi_op *op, int param_index, int dyn_index, const double *scalars,
                   uint32_t n_scalars) {
  if (dyn_index >= 0 && dyn_index < HM_ABI_MAX_DYN) {
    int32_t slot = op->dyn[dyn_index];
    if (slot >= 0 && (uint32_t)slot < n_scalars) return (float)scalars[slot];
  }
  return op->params[param_index];
}

/* dyn[i], when used, replaces params[i] (SPEC.md §7). */
#define P(i) hm_ref_param(op, (i), (i) < HM_ABI_MAX_DYN ? (i) : -1, scalars, n_scalars)
#define IN(i) resolve(ctx, &op->in[i])
#define OUT(i) resolve(ctx, &op->out[i])

int32_t hm_ref_execute(const hm_abi_op *op, hm_ref_resolve_fn resolve, void *ctx,
                       const double *scalars, uint32_t n_scalars) {
  size_t d0 = (size_t)op->dims[0], d1 = (size_t)op->dims[1], d2 = (size_t)op->dims[2];
  int din = op->dtype_in ? (int)op->dtype_in : HM_ABI_DTYPE_F32;
  switch (op->code) {
    case HM_ABI_OP_GEMM:
      if (din != HM_ABI_DTYPE_F32 && din != HM_ABI_DTYPE_TF32 && din != HM_ABI_DTYPE_F16 &&
          din != HM_ABI_DTYPE_BF16)
        return HM_ABI_STATUS_UNIMPLEMENTED;
      return ref_gemm_rounded(op, din, IN(0), IN(1), OUT(0), P(0), P(1));
    case HM_ABI_OP_BIAS_ADD: hm_ref_bias_add(d0, d1, IN(0), OUT(0)); return HM_ABI_OK;
    case HM_ABI_OP_ACT_FORWARD:
      if (op->variant >= HM_ABI_ACT_COUNT) return HM_ABI_STATUS_INVALID_ARGUMENT;
      hm_ref_act_forward((int)op->variant, P(0), d0, d1, IN(0), OUT(0));
      return HM_ABI_OK;
    case HM_ABI_OP_ACT_BACKWARD:
      if (op->variant >= HM_ABI_ACT_COUNT) return HM_ABI_STATUS_INVALID_ARGUMENT;
      hm_ref_act_backward((int)op->variant, P(0), P(1), d0, d1, IN(0), IN(1), IN(2), OUT(0));
      return HM_ABI_OK;
    case HM_ABI_OP_LOSS:
      if (op->variant >= HM_ABI_LOSS_COUNT) return HM_ABI_STATUS_INVALID_ARGUMENT;
      hm_ref_loss((int)op->variant, !!(op->flags & HM_ABI_OP_FLAG_CLASS_INDEX), P(1), P(0), P(2), P(3),
                  d0, d1, IN(0), IN(1), OUT(0), OUT(1));
      return HM_ABI_OK;
    case HM_ABI_OP_REDUCE_ROWS: hm_ref_reduce_rows(d0, d1, P(0), P(1), IN(0), OUT(0)); return HM_ABI_OK;
    case HM_ABI_OP_REDUCE_COLS: hm_ref_reduce_cols(d0, d1, P(0), P(1), IN(0), OUT(0)); return HM_ABI_OK;
    case HM_ABI_OP_SUM_SQUARES: hm_ref_sum_squares(d0, P(0), P(1), IN(0), OUT(0)); return HM_ABI_OK;
    case HM_ABI_OP_CLIP: hm_ref_clip(d0, P(0), OUT(0)); return HM_ABI_OK;
    case HM_ABI_OP_SCALE: {
      float *y = OUT(0);
      const float *x = op->in[0].buffer ? (const float *)IN(0) : y;
      hm_ref_scale(d0, P(0), x, y);
      return HM_ABI_OK;
    }
    case HM_ABI_OP_AXPY: hm_ref_axpy(d0, P(0), IN(0), OUT(0)); return HM_ABI_OK;
    case HM_ABI_OP_GATHER_ROWS:
      if (din != HM_ABI_DTYPE_F32 && din != HM_ABI_DTYPE_U8 && din != HM_ABI_DTYPE_I32)
        return HM_ABI_STATUS_UNIMPLEMENTED;
      hm_ref_gather_rows(din, d0, d1, d2, P(0), IN(0), IN(1), OUT(0));
      return HM_ABI_OK;
    case HM_ABI_OP_FILL: {
      int dout = op->dtype_out ? (int)op->dtype_out : HM_ABI_DTYPE_F32;
      if (dout != HM_ABI_DTYPE_F32 && dout != HM_ABI_DTYPE_I32) return HM_ABI_STATUS_UNIMPLEMENTED;
      hm_ref_fill(dout, d0, P(0), OUT(0));
      return HM_ABI_OK;
    }
    case HM_ABI_OP_COPY:
      if (hm_ref_dtype_size(din) == 0) return HM_ABI_STATUS_UNIMPLEMENTED;
      hm_ref_copy(din, d0, IN(0), OUT(0));
      return HM_ABI_OK;
    case HM_ABI_OP_SGD: hm_ref_sgd(d0, P(0), P(1), IN(0), OUT(0), OUT(1)); return HM_ABI_OK;
    case HM_ABI_OP_ADAM:
      hm_ref_adam(d0, P(0), op->params[3], op->params[4], op->params[5], P(1), P(2), IN(0), OUT(0),
                  OUT(1), OUT(2));
      return HM_ABI_OK;
    case HM_ABI_OP_RMSPROP:
      hm_ref_rmsprop(d0, P(0), op->params[1], op->params[2], IN(0), OUT(0), OUT(1));
      return HM_ABI_OK;
    case HM_ABI_OP_ADAMW:
      hm_ref_adamw(d0, P(0), op->params[3], op->params[4], op->params[5], P(1), P(2), op->params[6],
                   IN(0), OUT(0), OUT(1), OUT(2));
      return HM_ABI_OK;
    case HM_ABI_OP_LAMB:
      hm_ref_lamb(d0, P(0), op->params[3], op->params[4], op->params[5], P(1), P(2), op->params[6],
                  IN(0), OUT(0), OUT(1), OUT(2));
      return HM_ABI_OK;
    case HM_ABI_OP_QUANTIZE: {
      int dout = (int)op->dtype_out;
      if (din != HM_ABI_DTYPE_F32 || !hm_ref_q_block_bytes(dout)) return HM_ABI_STATUS_UNIMPLEMENTED;
      const float *x = IN(0);
      uint8_t *q = OUT(0);
      for (size_t r = 0; r < d0; r++) hm_ref_quantize_row(dout, d1, x + r * d1, q + r * hm_ref_q_row_bytes(dout, d1));
      return HM_ABI_OK;
    }
    case HM_ABI_OP_DEQUANTIZE: {
      if (!hm_ref_q_block_bytes(din)) return HM_ABI_STATUS_UNIMPLEMENTED;
      const uint8_t *q = IN(0);
      float *x = OUT(0);
      for (size_t r = 0; r < d0; r++) hm_ref_dequantize_row(din, d1, q + r * hm_ref_q_row_bytes(din, d1), x + r * d1);
      return HM_ABI_OK;
    }
    case HM_ABI_OP_GEMM_Q8:
    case HM_ABI_OP_GEMM_Q4:
    case HM_ABI_OP_GEMM_Q3: {
      int want = op->code == HM_ABI_OP_GEMM_Q8 ? HM_ABI_DTYPE_Q8 : op->code == HM_ABI_OP_GEMM_Q4 ? HM_ABI_DTYPE_Q4 : HM_ABI_DTYPE_Q3;
      if (din != want) return HM_ABI_STATUS_INVALID_ARGUMENT;
      hm_ref_gemm_q(want, d0, d1, d2, IN(0), IN(1), OUT(0));
      return HM_ABI_OK;
    }
    case HM_ABI_OP_CONV2D:
    case HM_ABI_OP_CONV2D_BWD_DATA:
    case HM_ABI_OP_CONV2D_BWD_FILTER:
    case HM_ABI_OP_POOL2D:
    case HM_ABI_OP_POOL2D_BWD:
    case HM_ABI_OP_IM2COL: {
      hm_abi_window g;
      if (hm_abi_window_decode(op, &g)) return HM_ABI_STATUS_INVALID_ARGUMENT;
      int acc = (op->flags & HM_ABI_OP_FLAG_ACCUMULATE) != 0;
      if ((op->code == HM_ABI_OP_POOL2D || op->code == HM_ABI_OP_POOL2D_BWD) && op->variant >= HM_ABI_POOL_COUNT)
        return HM_ABI_STATUS_INVALID_ARGUMENT;
      if (op->code == HM_ABI_OP_IM2COL && g.groups != 1) return HM_ABI_STATUS_INVALID_ARGUMENT;
      switch (op->code) {
        case HM_ABI_OP_IM2COL: hm_ref_im2col(&g, IN(0), OUT(0)); break;
        case HM_ABI_OP_CONV2D: hm_ref_conv2d(&g, IN(0), IN(1), IN(2), OUT(0)); break;
        case HM_ABI_OP_CONV2D_BWD_DATA: hm_ref_conv2d_bwd_data(&g, acc, IN(0), IN(1), OUT(0)); break;
        case HM_ABI_OP_CONV2D_BWD_FILTER: hm_ref_conv2d_bwd_filter(&g, acc, IN(0), IN(1), OUT(0), OUT(1)); break;
        case HM_ABI_OP_POOL2D: hm_ref_pool2d((int)op->variant, &g, IN(0), OUT(0), OUT(1)); break;
        default: hm_ref_pool2d_bwd((int)op->variant, &g, acc, IN(0), IN(1), OUT(0)); break;
      }
      return HM_ABI_OK;
    }
    case HM_ABI_OP_DROPOUT: {
      float rate = op->params[0];
      if (!(rate >= 0.0f && rate < 1.0f)) return HM_ABI_STATUS_INVALID_ARGUMENT;
      hm_ref_dropout(d0, op->dims[1], hm_abi_dropout_step(op, scalars, n_scalars), rate, op->params[2], IN(0),
                     OUT(0));
      return HM_ABI_OK;
    }
    case HM_ABI_OP_BATCH_NORM:
      if (op->variant >= HM_ABI_NORM_COUNT) return HM_ABI_STATUS_INVALID_ARGUMENT;
      hm_ref_batch_norm((int)op->variant, d0, d1, d2, op->params[0], op->params[1], IN(0), IN(1), IN(2), OUT(0),
                        OUT(1));
      return HM_ABI_OK;
    case HM_ABI_OP_BATCH_NORM_BWD:
      hm_ref_batch_norm_bwd(d0, d1, d2, op->params[2], op->params[0], op->params[1], IN(0), IN(1), IN(2), OUT(0), OUT(1),
                            OUT(2));
      return HM_ABI_OK;
    case HM_ABI_OP_LAYER_NORM:
      hm_ref_layer_norm(d0, d1, op->params[0], IN(0), IN(1), IN(2), OUT(0));
      return HM_ABI_OK;
    case HM_ABI_OP_LAYER_NORM_BWD:
      hm_ref_layer_norm_bwd(d0, d1, op->params[2], op->params[0], op->params[1], IN(0), IN(1), IN(2), OUT(0), OUT(1),
                            OUT(2));
      return HM_ABI_OK;
    default: return HM_ABI_STATUS_UNIMPLEMENTED;
  }
}
