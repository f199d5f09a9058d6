/*
 * The packed integer formats of abi/QUANT.md, bit-exactly: f16 scales,
 * quantization with round-to-nearest-even, packing, dequantization and the
 * block GEMM with integer accumulation. Every plugin's integer kernels must
 * produce the same bytes (numerics class EXACT).
 */
#include <math.h>
#include <string.h>

#include "hm_reference.h"

size_t hm_ref_q_block_bytes(int dtype) {
  switch (dtype) {
    case HM_ABI_DTYPE_Q8: return 2 + HM_REF_QBLOCK;
    case HM_ABI_DTYPE_Q4: return 2 + HM_REF_QBLOCK / 2;
    case HM_ABI_DTYPE_Q3: return 2 + HM_REF_QBLOCK * 3 / 8;
    default: return 0;
  }
}

int hm_ref_q_max(int dtype) {
  switch (dtype) {
    case HM_ABI_DTYPE_Q8: return 127;
    case HM_ABI_DTYPE_Q4: return 7;
    case HM_ABI_DTYPE_Q3: return 3;
    default: return 0;
  }
}

size_t hm_ref_q_row_bytes(int dtype, size_t k) {
  return (k + HM_REF_QBLOCK - 1) / HM_REF_QBLOCK * hm_ref_q_block_bytes(dtype);
}

/* f32(1/qmax), the constants of QUANT.md §2. */
static float inv_qmax(int dtype) {
  uint32_t bits = dtype == HM_ABI_DTYPE_Q8 ? 0x3C010204u : dtype == HM_ABI_DTYPE_Q4 ? 0x3E124925u : 0x3EAAAAABu;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t hm_ref_f32_to_f16_sat(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t mag = x & 0x7fffffffu;
  if (mag > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); /* NaN */
  /* 65520 and above round to infinity in binary16: saturate instead. */
  if (mag >= 0x477ff000u) return (uint16_t)(sign | 0x7bffu);
  if (mag < 0x33000000u) return (uint16_t)sign; /* below half the smallest subnormal: 0 */
  int exp = (int)(mag >> 23) - 127;
  uint32_t mant = (mag & 0x7fffffu) | 0x800000u;
  if (exp >= -14) {
    /* Normal: keep 10 mantissa bits, round to nearest even. */
    uint32_t half = ((uint32_t)(exp + 15) << 10) | ((mant >> 13) & 0x3ffu);
    uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (half & 1))) half++;
    return (uint16_t)(sign | half);
  }
  /* Subnormal: value = m * 2^-24. */
  int shift = -exp - 14 + 13;
  uint32_t m = mant >> shift;
  uint32_t rest = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (m & 1))) m++;
  return (uint16_t)(sign | m);
}

float hm_ref_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
  if (e == 0) {
    if (m == 0) x = sign;
    else { /* subnormal */
      int shift = 0;
      while (!(m & 0x400u)) {
        m <<= 1;
        shift++;
      }
      x = sign | ((uint32_t)(113 - shift) << 23) | ((m & 0x3ffu) << 13);
    }
  } else if (e == 31) {
    x = sign | 0x7f800000u | (m << 13);
  } else {
    x = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &x, 4);
  return f;
}

float hm_ref_q_scale(const uint8_t *block) { return hm_ref_f16_to_f32((uint16_t)(block[0] | (block[1] << 8))); }

int hm_ref_q_get(int dtype, const uint8_t *block, int i) {
  const uint8_t *q = block + 2;
  switch (dtype) {
    case HM_ABI_DTYPE_Q8: return (int8_t)q[i];
    case HM_ABI_DTYPE_Q4: {
      int v = (q[i / 2] >> (4 * (i % 2))) & 0xf;
      return v >= 8 ? v - 16 : v;
    }
    case HM_ABI_DTYPE_Q3: {
      const uint8_t *g = q + 3 * (i / 8);
      uint32_t w = (uint32_t)g[0] | ((uint32_t)g[1] << 8) | ((uint32_t)g[2] << 16);
      int v = (int)((w >> (3 * (i % 8))) & 7u);
      return v >= 4 ? v - 8 : v;
    }
    default: return 0;
  }
}

static void q_set(int dtype, uint8_t *block, int i, int v) {
  uint8_t *q = block + 2;
  switch (dtype) {
    case HM_ABI_DTYPE_Q8: q[i] = (uint8_t)(int8_t)v; break;
    case HM_ABI_DTYPE_Q4: q[i / 2] = (uint8_t)((q[i / 2] & ~(0xf << (4 * (i % 2)))) | ((v & 0xf) << (4 * (i % 2)))); break;
    case HM_ABI_DTYPE_Q3: {
      uint8_t *g = q + 3 * (i / 8);
      uint32_t w = (uint32_t)g[0] | ((uint32_t)g[1] << 8) | ((uint32_t)g[2] << 16);
      int shift = 3 * (i % 8);
      w = (w & ~(7u << shift)) | ((uint32_t)(v & 7) << shift);
      g[0] = (uint8_t)w;
      g[1] = (uint8_t)(w >> 8);
      g[2] = (uint8_t)(w >> 16);
      break;
    }
    default: break;
  }
}

void hm_ref_quantize_row(int dtype, size_t k, const float *x, uint8_t *out) {
  size_t bb = hm_ref_q_block_bytes(dtype), nb = (k + HM_REF_QBLOCK - 1) / HM_REF_QBLOCK;
  int qmax = hm_ref_q_max(dtype);
  for (size_t b = 0; b < nb; b++) {
    uint8_t *blk = out + b * bb;
    memset(blk, 0, bb);
    float v[HM_REF_QBLOCK], amax = 0.0f;
    for (int i = 0; i < HM_REF_QBLOCK; i++) {
      size_t j = b * HM_REF_QBLOCK + (size_t)i;
      float xv = j < k ? x[j] : 0.0f;
      v[i] = isfinite(xv) ? xv : 0.0f; /* non-finite values quantize to 0 */
      if (fabsf(v[i]) > amax) amax = fabsf(v[i]);
    }
    uint16_t d16 = hm_ref_f32_to_f16_sat(amax * inv_qmax(dtype));
    blk[0] = (uint8_t)d16;
    blk[1] = (uint8_t)(d16 >> 8);
    double d = hm_ref_f16_to_f32(d16);
    if (d == 0.0) continue;
    for (int i = 0; i < HM_REF_QBLOCK; i++) {
      /* The exact quotient is decided correctly in double (QUANT.md §2). */
      double q = nearbyint((double)v[i] / d);
      if (q > qmax) q = qmax;
      if (q < -qmax) q = -qmax;
      q_set(dtype, blk, i, (int)q);
    }
  }
}

void hm_ref_dequantize_row(int dtype, size_t k, const uint8_t *q, float *x) {
  size_t bb = hm_ref_q_block_bytes(dtype);
  for (size_t j = 0; j < k; j++) {
    const uint8_t *blk = q + (j / HM_REF_QBLOCK) * bb;
    x[j] = hm_ref_q_scale(blk) * (float)hm_ref_q_get(dtype, blk, (int)(j % HM_REF_QBLOCK));
  }
}

void hm_ref_gemm_q(int dtype, size_t m, size_t n, size_t k, const uint8_t *a, const uint8_t *b, float *c) {
  size_t bb = hm_ref_q_block_bytes(dtype), nb = (k + HM_REF_QBLOCK - 1) / HM_REF_QBLOCK, row = nb * bb;
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) {
      float acc = 0.0f;
      for (size_t blk = 0; blk < nb; blk++) {
        const uint8_t *pa = a + i * row + blk * bb, *pb = b + j * row + blk * bb;
        int32_t s = 0;
        for (int t = 0; t < HM_REF_QBLOCK; t++) s += hm_ref_q_get(dtype, pa, t) * hm_ref_q_get(dtype, pb, t);
        /* Three roundings in this order, no fused multiply-add (QUANT.md §4;
         * the file is built with -ffp-contract=off). */
        float scale = hm_ref_q_scale(pa) * hm_ref_q_scale(pb);
        float term = scale * (float)s;
        acc = acc + term;
      }
      c[i * n + j] = acc;
    }
}

float hm_ref_round_to(int dtype, float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if (!isfinite(x)) return x;
  switch (dtype) {
    case HM_ABI_DTYPE_BF16:
    case HM_ABI_DTYPE_TF32: {
      int drop = dtype == HM_ABI_DTYPE_BF16 ? 16 : 13; /* mantissa bits removed */
      uint32_t half = 1u << (drop - 1), rest = u & ((1u << drop) - 1), keep = u >> drop;
      if (rest > half || (rest == half && (keep & 1))) keep++; /* may carry into the exponent: correct */
      u = keep << drop;
      break;
    }
    case HM_ABI_DTYPE_F16: {
      if (fabsf(x) >= 65520.0f) return x > 0 ? INFINITY : -INFINITY;
      return hm_ref_f16_to_f32(hm_ref_f32_to_f16_sat(x));
    }
    default: return x;
  }
  memcpy(&x, &u, 4);
  return x;
}
