/*
 * Inner loops, compiled once per ISA level (see cpu_vec.h). CPU_VEC_SUFFIX and
 * CPU_VEC_NAME are set by the build for each compilation.
 */
#include "cpu_vec.h"

#include <math.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "harmonics_abi.h"

#ifndef CPU_VEC_SUFFIX
#error "compile cpu_vec.c with -DCPU_VEC_SUFFIX=<isa>"
#endif
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(name##_, CPU_VEC_SUFFIX)

#define SELU_LAMBDA 1.0507009873554805f
#define SELU_ALPHA 1.6732632423543772f

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static void FN(act_forward)(int act, float param, size_t rows, size_t cols, const float *bias,
                            const float *x, float *y) {
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * cols;
    float *yr = y + r * cols;
    switch (act) {
      case HM_ABI_ACT_IDENTITY:
        if (bias)
          for (size_t c = 0; c < cols; c++) yr[c] = xr[c] + bias[c];
        else
          for (size_t c = 0; c < cols; c++) yr[c] = xr[c];
        break;
      case HM_ABI_ACT_RELU:
        if (bias)
          for (size_t c = 0; c < cols; c++) {
            float v = xr[c] + bias[c];
            yr[c] = v > 0.0f ? v : 0.0f;
          }
        else
          for (size_t c = 0; c < cols; c++) yr[c] = xr[c] > 0.0f ? xr[c] : 0.0f;
        break;
      case HM_ABI_ACT_LEAKY_RELU:
        for (size_t c = 0; c < cols; c++) {
          float v = xr[c] + (bias ? bias[c] : 0.0f);
          yr[c] = v > 0.0f ? v : param * v;
        }
        break;
      default:
        for (size_t c = 0; c < cols; c++) {
          float v = xr[c] + (bias ? bias[c] : 0.0f);
          float o;
          switch (act) {
            case HM_ABI_ACT_SIGMOID: o = sigmoidf(v); break;
            case HM_ABI_ACT_TANH: o = tanhf(v); break;
            case HM_ABI_ACT_GELU: o = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); break;
            case HM_ABI_ACT_SILU: o = v * sigmoidf(v); break;
            case HM_ABI_ACT_ELU: o = v > 0.0f ? v : param * expm1f(v); break;
            case HM_ABI_ACT_SELU: o = v > 0.0f ? SELU_LAMBDA * v : SELU_LAMBDA * SELU_ALPHA * expm1f(v); break;
            default: o = NAN; break;
          }
          yr[c] = o;
        }
        break;
    }
  }
}

static void FN(act_backward)(int act, float param, float beta, size_t n, const float *x,
                             const float *y, const float *dy, float *dx) {
  /* beta == 0 must not read dx (it may hold garbage or alias dy). */
  switch (act) {
    case HM_ABI_ACT_IDENTITY:
      if (beta == 0.0f)
        for (size_t i = 0; i < n; i++) dx[i] = dy[i];
      else
        for (size_t i = 0; i < n; i++) dx[i] = dy[i] + beta * dx[i];
      return;
    case HM_ABI_ACT_RELU:
      if (beta == 0.0f)
        for (size_t i = 0; i < n; i++) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
      else
        for (size_t i = 0; i < n; i++) dx[i] = (x[i] > 0.0f ? dy[i] : 0.0f) + beta * dx[i];
      return;
    default: break;
  }
  for (size_t i = 0; i < n; i++) {
    float g;
    switch (act) {
      case HM_ABI_ACT_LEAKY_RELU: g = x[i] > 0.0f ? 1.0f : param; break;
      case HM_ABI_ACT_SIGMOID: g = y[i] * (1.0f - y[i]); break;
      case HM_ABI_ACT_TANH: g = 1.0f - y[i] * y[i]; break;
      case HM_ABI_ACT_GELU: {
        float v = x[i];
        g = 0.5f * (1.0f + erff(v * 0.70710678118654752f)) + v * expf(-0.5f * v * v) * 0.39894228040143268f;
        break;
      }
      case HM_ABI_ACT_SILU: {
        float s = sigmoidf(x[i]);
        g = s * (1.0f + x[i] * (1.0f - s));
        break;
      }
      case HM_ABI_ACT_ELU: g = x[i] > 0.0f ? 1.0f : param * expf(x[i]); break;
      case HM_ABI_ACT_SELU: g = x[i] > 0.0f ? SELU_LAMBDA : SELU_LAMBDA * SELU_ALPHA * expf(x[i]); break;
      default: g = NAN; break;
    }
    float v = dy[i] * g;
    dx[i] = beta == 0.0f ? v : v + beta * dx[i];
  }
}

static void FN(accumulate_rows)(size_t rows, size_t cols, size_t stride, const float *x, float *acc) {
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * stride;
    for (size_t c = 0; c < cols; c++) acc[c] += xr[c];
  }
}

static double FN(sum_squares)(size_t n, const float *x) {
  /* 64 float lanes (four vector registers at AVX-512), flushed into a double
   * every 4096 elements so no lane sums more than 64 terms: fast and
   * accurate, and the order depends only on n. */
  double total = 0.0;
  for (size_t i = 0; i < n; i += 4096) {
    size_t end = n - i > 4096 ? i + 4096 : n;
    float lanes[64] = {0};
    size_t j = i;
    for (; j + 64 <= end; j += 64)
      for (int l = 0; l < 64; l++) lanes[l] += x[j + l] * x[j + l];
    double block = 0.0;
    for (; j < end; j++) block += (double)x[j] * x[j];
    for (int l = 0; l < 64; l++) block += lanes[l];
    total += block;
  }
  return total;
}

static void FN(clip)(size_t n, float c, float *x) {
  for (size_t i = 0; i < n; i++) {
    float v = x[i];
    v = v > c ? c : v;
    v = v < -c ? -c : v;
    x[i] = v;
  }
}

static void FN(scale)(size_t n, float a, const float *x, float *y) {
  for (size_t i = 0; i < n; i++) y[i] = a * x[i];
}

static void FN(axpy)(size_t n, float a, const float *x, float *y) {
  for (size_t i = 0; i < n; i++) y[i] = a * x[i] + y[i];
}

static void FN(u8_to_f32)(size_t n, float scale, const uint8_t *src, float *dst) {
  for (size_t i = 0; i < n; i++) dst[i] = scale * (float)src[i];
}

static void FN(sgd)(size_t n, float lr, float momentum, const float *g, float *p, float *vel) {
  if (momentum == 0.0f || !vel) {
    for (size_t i = 0; i < n; i++) p[i] -= lr * g[i];
    return;
  }
  for (size_t i = 0; i < n; i++) {
    float v = momentum * vel[i] + g[i];
    vel[i] = v;
    p[i] -= lr * v;
  }
}

static void FN(adam)(size_t n, float lr, float b1, float b2, float eps, float inv_bc1, float inv_bc2,
                     float wd, const float *g, float *p, float *m, float *v) {
  /* m_hat / (sqrt(v_hat) + eps) = (m / bc1) * sqrt(bc2) / (sqrt(v) + eps * sqrt(bc2)):
   * the bias corrections fold into two constants. */
  float c1 = 1.0f - b1, c2 = 1.0f - b2;
  float sbc2 = __builtin_sqrtf(1.0f / inv_bc2);
  float step = lr * inv_bc1 * sbc2, eps_t = eps * sbc2, decay = 1.0f - lr * wd;
  for (size_t i = 0; i < n; i++) {
    float gi = g[i];
    float mi = b1 * m[i] + c1 * gi;
    float vi = b2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = decay * p[i] - step * mi / (__builtin_sqrtf(vi) + eps_t);
  }
}

static void FN(rmsprop)(size_t n, float lr, float rho, float eps, const float *g, float *p, float *s) {
  float c = 1.0f - rho;
  for (size_t i = 0; i < n; i++) {
    float si = rho * s[i] + c * g[i] * g[i];
    s[i] = si;
    p[i] -= lr * g[i] / (__builtin_sqrtf(si) + eps);
  }
}

static void FN(lamb_moments)(size_t n, float b1, float b2, float eps, float inv_bc1, float inv_bc2,
                             float wd, const float *g, const float *p, float *m, float *v, double *p2,
                             double *u2) {
  float c1 = 1.0f - b1, c2 = 1.0f - b2;
  double sp = 0.0, su = 0.0;
  for (size_t i = 0; i < n; i++) {
    float gi = g[i];
    float mi = b1 * m[i] + c1 * gi;
    float vi = b2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float u = (mi * inv_bc1) / (__builtin_sqrtf(vi * inv_bc2) + eps) + wd * p[i];
    sp += (double)p[i] * p[i];
    su += (double)u * u;
  }
  *p2 = sp;
  *u2 = su;
}

static void FN(lamb_apply)(size_t n, float step, float eps, float inv_bc1, float inv_bc2, float wd,
                           const float *m, const float *v, float *p) {
  for (size_t i = 0; i < n; i++) {
    float u = (m[i] * inv_bc1) / (__builtin_sqrtf(v[i] * inv_bc2) + eps) + wd * p[i];
    p[i] -= step * u;
  }
}

/* best, at = v, i when v > best or v is the first NaN (SPEC.md 7.5), with
 * masks rather than branches: which value is largest is a coin toss the
 * branch predictor loses. */
static inline void take_if(float v, int32_t i, float *best, int32_t *at) {
  uint32_t m = 0u - (uint32_t)((v > *best) | ((v != v) & (*best == *best))), vb, bb;
  __builtin_memcpy(&vb, &v, 4);
  __builtin_memcpy(&bb, best, 4);
  bb = (vb & m) | (bb & ~m);
  __builtin_memcpy(best, &bb, 4);
  *at = (int32_t)(((uint32_t)i & m) | ((uint32_t)*at & ~m));
}

#ifdef __AVX2__
/* Eight outputs at once: even and odd columns of 16 inputs per row. */
static inline void take8(__m256 v, __m256i i, __m256 *best, __m256i *at) {
  __m256 m = _mm256_or_ps(_mm256_cmp_ps(v, *best, _CMP_GT_OQ),
                          _mm256_and_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), _mm256_cmp_ps(*best, *best, _CMP_ORD_Q)));
  *best = _mm256_blendv_ps(*best, v, m);
  *at = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(*at), _mm256_castsi256_ps(i), m));
}

static inline void deinterleave(const float *r, __m256 *even, __m256 *odd) {
  __m256 lo = _mm256_loadu_ps(r), hi = _mm256_loadu_ps(r + 8);
  *even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0x88)), 0xD8));
  *odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(lo, hi, 0xDD)), 0xD8));
}
#endif

static void FN(max_pool_2x2_row)(size_t wo, size_t w, int32_t base, const float *r0, const float *r1, float *y,
                                 int32_t *am) {
  size_t o = 0;
#ifdef __AVX2__
  const __m256i two = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  for (; o + 8 <= wo; o += 8) {
    __m256 a, b, c, d;
    deinterleave(r0 + 2 * o, &a, &b);
    deinterleave(r1 + 2 * o, &c, &d);
    __m256i i0 = _mm256_add_epi32(_mm256_set1_epi32(base + (int32_t)(2 * o)), two);
    __m256 best = a;
    __m256i at = i0;
    take8(b, _mm256_add_epi32(i0, _mm256_set1_epi32(1)), &best, &at);
    take8(c, _mm256_add_epi32(i0, _mm256_set1_epi32((int32_t)w)), &best, &at);
    take8(d, _mm256_add_epi32(i0, _mm256_set1_epi32((int32_t)w + 1)), &best, &at);
    _mm256_storeu_ps(y + o, best);
    if (am) _mm256_storeu_si256((__m256i *)(am + o), at);
  }
#endif
  for (; o < wo; o++) {
    size_t c = 2 * o;
    float best = r0[c];
    int32_t at = base + (int32_t)c;
    take_if(r0[c + 1], base + (int32_t)c + 1, &best, &at);
    take_if(r1[c], base + (int32_t)(w + c), &best, &at);
    take_if(r1[c + 1], base + (int32_t)(w + c + 1), &best, &at);
    y[o] = best;
    if (am) am[o] = at;
  }
}

static const cpu_vec_ops ops = {
    .name = CPU_VEC_NAME,
    .act_forward = FN(act_forward),
    .act_backward = FN(act_backward),
    .accumulate_rows = FN(accumulate_rows),
    .sum_squares = FN(sum_squares),
    .clip = FN(clip),
    .scale = FN(scale),
    .axpy = FN(axpy),
    .u8_to_f32 = FN(u8_to_f32),
    .sgd = FN(sgd),
    .adam = FN(adam),
    .rmsprop = FN(rmsprop),
    .lamb_moments = FN(lamb_moments),
    .lamb_apply = FN(lamb_apply),
    .max_pool_2x2_row = FN(max_pool_2x2_row),
};

const cpu_vec_ops *FN(cpu_vec)(void) { return &ops; }
