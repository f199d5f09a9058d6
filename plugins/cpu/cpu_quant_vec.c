/*
 * Quantize, dequantize, decode and the block dot products of abi/QUANT.md,
 * compiled once per ISA level (see cpu_quant.h). The build sets
 * CPU_QUANT_SUFFIX (generic, avx2, avxvnni, avx512) and CPU_QUANT_LEVEL
 * (0, 1, 2, 3) and compiles with -ffp-contract=off.
 */
#include "cpu_quant.h"

#include <math.h>
#include <string.h>

#if CPU_QUANT_LEVEL > 0
#include <immintrin.h>
#endif

#ifndef CPU_QUANT_SUFFIX
#error "compile cpu_quant_vec.c with -DCPU_QUANT_SUFFIX=<isa> -DCPU_QUANT_LEVEL=<n>"
#endif
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define FN(name) CAT(name##_, CPU_QUANT_SUFFIX)
#define STR2(x) #x
#define STR(x) STR2(x)

enum { Q8 = 8, Q4 = 9, Q3 = 10 };

static int qmax(int dtype) { return dtype == Q8 ? 127 : dtype == Q4 ? 7 : 3; }

/* f32(1/qmax), QUANT.md Q2. */
static float inv_qmax(int dtype) {
  uint32_t bits = dtype == Q8 ? 0x3C010204u : dtype == Q4 ? 0x3E124925u : 0x3EAAAAABu;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* Round to nearest even, saturating at 65504 (QUANT.md Q2). |f| >= 0. */
static uint16_t scale_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if (x >= 0x477ff000u) return 0x7bffu;
  if (x <= 0x33000000u) return 0;
  int e = (int)(x >> 23) - 127;
  uint32_t mant = (x & 0x7fffffu) | 0x800000u;
  int shift = e >= -14 ? 13 : 13 + (-14 - e); /* bits dropped from the 24-bit significand */
  uint32_t keep = mant >> shift, rest = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rest > half || (rest == half && (keep & 1))) keep++;
  /* Normal: the implicit bit lands on the exponent field and a carry out of
   * the mantissa bumps the exponent, as it should. Subnormal: keep is m. */
  return e >= -14 ? (uint16_t)(((uint32_t)(e + 14) << 10) + keep) : (uint16_t)keep;
}

static float f16_to_f32(uint16_t h) {
#if CPU_QUANT_LEVEL > 0
  return _cvtsh_ss(h); /* exact, subnormals included */
#else
  /* Any bit pattern: hostile files may hold negative or non-finite scales. */
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
  if (e == 0) {
    float f = (float)m * 0x1p-24f; /* 0 or subnormal m * 2^-24: exact in f32 */
    memcpy(&x, &f, 4);
    x |= sign;
  } else if (e == 31) {
    x = sign | 0x7f800000u | (m << 13);
  } else {
    x = sign | ((e + 112) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &x, 4);
  return f;
#endif
}

static float block_scale(const uint8_t *blk) { return f16_to_f32((uint16_t)(blk[0] | (blk[1] << 8))); }

/* ===== Quantize / dequantize ===== */

static void pack_values(int dtype, const int8_t *q, uint8_t *out) {
  switch (dtype) {
    case Q8: memcpy(out, q, CPU_QBLOCK); break;
    case Q4:
      for (int i = 0; i < CPU_QBLOCK / 2; i++) out[i] = (uint8_t)((q[2 * i] & 0xf) | ((q[2 * i + 1] & 0xf) << 4));
      break;
    default:
      for (int g = 0; g < CPU_QBLOCK / 8; g++) {
        uint32_t w = 0;
        for (int j = 0; j < 8; j++) w |= (uint32_t)(q[8 * g + j] & 7) << (3 * j);
        out[3 * g] = (uint8_t)w;
        out[3 * g + 1] = (uint8_t)(w >> 8);
        out[3 * g + 2] = (uint8_t)(w >> 16);
      }
      break;
  }
}

static void quantize_block(int dtype, const float *x, size_t n, uint8_t *blk) {
  float v[CPU_QBLOCK];
  float amax = 0.0f;
  for (size_t i = 0; i < CPU_QBLOCK; i++) {
    float xv = i < n ? x[i] : 0.0f;
    v[i] = isfinite(xv) ? xv : 0.0f;
  }
  for (size_t i = 0; i < CPU_QBLOCK; i++) {
    float a = fabsf(v[i]);
    amax = a > amax ? a : amax;
  }
  uint16_t d16 = scale_to_f16(amax * inv_qmax(dtype));
  blk[0] = (uint8_t)d16;
  blk[1] = (uint8_t)(d16 >> 8);
  int8_t q[CPU_QBLOCK];
  double d = f16_to_f32(d16), lim = qmax(dtype);
  if (d == 0.0) {
    memset(q, 0, sizeof q);
  } else {
    for (size_t i = 0; i < CPU_QBLOCK; i++) {
      /* The exact quotient, decided in binary64 (QUANT.md Q3). */
      double t = nearbyint((double)v[i] / d);
      t = t > lim ? lim : t < -lim ? -lim : t;
      q[i] = (int8_t)t;
    }
  }
  pack_values(dtype, q, blk + 2);
}

static void FN(quantize_rows)(int dtype, size_t rows, size_t k, const float *x, uint8_t *q) {
  size_t nb = cpu_q_blocks(k), bb = cpu_q_block_bytes(dtype);
  for (size_t r = 0; r < rows; r++)
    for (size_t b = 0; b < nb; b++) {
      size_t j = b * CPU_QBLOCK, n = k - j < CPU_QBLOCK ? k - j : CPU_QBLOCK;
      quantize_block(dtype, x + r * k + j, n, q + (r * nb + b) * bb);
    }
}

#if CPU_QUANT_LEVEL == 0 || CPU_QUANT_LEVEL == 3
/* Values of one block as int8, portable (AVX2 levels: unpack_block_256). */
static void unpack_signed(int dtype, const uint8_t *p, int8_t *v) {
  switch (dtype) {
    case Q8: memcpy(v, p, CPU_QBLOCK); break;
    case Q4:
      for (int i = 0; i < CPU_QBLOCK / 2; i++) {
        v[2 * i] = (int8_t)((int8_t)(uint8_t)(p[i] << 4) >> 4);
        v[2 * i + 1] = (int8_t)((int8_t)p[i] >> 4);
      }
      break;
    default:
      for (int g = 0; g < CPU_QBLOCK / 8; g++) {
        uint32_t w = (uint32_t)p[3 * g] | ((uint32_t)p[3 * g + 1] << 8) | ((uint32_t)p[3 * g + 2] << 16);
        for (int j = 0; j < 8; j++) {
          int u = (int)((w >> (3 * j)) & 7u);
          v[8 * g + j] = (int8_t)(u >= 4 ? u - 8 : u);
        }
      }
      break;
  }
}
#endif

#if CPU_QUANT_LEVEL == 3
/* AVX-512 VBMI: one block's 64 values as bytes (two's complement). */
static inline __m512i unpack_block_512(int dtype, const uint8_t *p) {
  if (dtype == Q8) return _mm512_loadu_si512(p);
  if (dtype == Q4) {
    __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)p));
    /* Each 16-bit word: low nibble in the low byte, high nibble in the high byte. */
    __m512i t = _mm512_or_si512(_mm512_and_si512(w, _mm512_set1_epi16(0x000f)),
                                _mm512_and_si512(_mm512_slli_epi16(w, 4), _mm512_set1_epi16(0x0f00)));
    /* Sign-extend 4 bits: (t ^ 8) - 8 per byte. */
    return _mm512_sub_epi8(_mm512_xor_si512(t, _mm512_set1_epi8(8)), _mm512_set1_epi8(8));
  }
  /* Q3: group g's three bytes into 64-bit lane g, then each 3-bit field into its byte. */
  const __m512i perm = _mm512_set_epi8(0, 0, 0, 0, 0, 23, 22, 21, 0, 0, 0, 0, 0, 20, 19, 18, 0, 0, 0, 0, 0, 17, 16,
                                       15, 0, 0, 0, 0, 0, 14, 13, 12, 0, 0, 0, 0, 0, 11, 10, 9, 0, 0, 0, 0, 0, 8, 7,
                                       6, 0, 0, 0, 0, 0, 5, 4, 3, 0, 0, 0, 0, 0, 2, 1, 0);
  __m512i data = _mm512_maskz_loadu_epi8(0xffffffull, p);
  __m512i g = _mm512_permutexvar_epi8(perm, data);
  __m512i f = _mm512_multishift_epi64_epi8(_mm512_set1_epi64(0x15120f0c09060300ll), g);
  __m512i u = _mm512_and_si512(f, _mm512_set1_epi8(7));
  return _mm512_sub_epi8(_mm512_xor_si512(u, _mm512_set1_epi8(4)), _mm512_set1_epi8(4));
}
#endif

#if CPU_QUANT_LEVEL == 1 || CPU_QUANT_LEVEL == 2
/* Q3 on AVX2: group g (values 8g..8g+7) is 24 bits in bytes 3g..3g+2, value
 * j at bit 3j. The 24 bytes load as [bytes 0-15 | bytes 8-23] (nothing past
 * the block); q3_words(x, t) puts each value of groups t and t + 4 into its
 * own 16-bit word with its two bytes (pshufb, within a 128-bit half), and a
 * multiply by q3_field_mul() moves its 3 bits to the top of the word. Byte 3
 * of a group is never needed (values 6 and 7 lie in byte 2), so the last
 * group reads nothing past it. */
static inline __m256i q3_load(const uint8_t *p) {
  return _mm256_loadu2_m128i((const __m128i *)(p + 8), (const __m128i *)p);
}

static inline __m256i q3_words(__m256i x, int t) {
#define Q3_WORDS(o) o, o + 1, o, o + 1, o, o + 1, o + 1, o + 2, o + 1, o + 2, o + 1, o + 2, o + 2, -128, o + 2, -128
  static const int8_t spread[4][32] = {{Q3_WORDS(0), Q3_WORDS(4)},   /* groups 0 | 4 */
                                       {Q3_WORDS(3), Q3_WORDS(7)},   /* groups 1 | 5 */
                                       {Q3_WORDS(6), Q3_WORDS(10)},  /* groups 2 | 6 */
                                       {Q3_WORDS(9), Q3_WORDS(13)}}; /* groups 3 | 7 */
#undef Q3_WORDS
  return _mm256_shuffle_epi8(x, _mm256_loadu_si256((const __m256i *)spread[t]));
}

/* 2^(13 - s) for the bit offsets s = 0, 3, 6, 1, 4, 7, 2, 5 of values 0-7 in their words. */
static inline __m256i q3_field_mul(void) {
  return _mm256_setr_epi16(8192, 1024, 128, 4096, 512, 64, 2048, 256, 8192, 1024, 128, 4096, 512, 64, 2048, 256);
}

/* AVX2: one block's 64 values as bytes, values 0-31 in *lo and 32-63 in *hi,
 * each plus |bias| (0: two's complement; 128: the offset form dot4 reads). */
static inline void unpack_block_256(int dtype, const uint8_t *p, int bias, __m256i *lo, __m256i *hi) {
  __m256i b = _mm256_set1_epi8((char)bias);
  if (dtype == Q8) {
    *lo = _mm256_add_epi8(_mm256_loadu_si256((const __m256i *)p), b);
    *hi = _mm256_add_epi8(_mm256_loadu_si256((const __m256i *)(p + 32)), b);
    return;
  }
  if (dtype == Q4) {
    /* Byte i holds value 2i (low nibble) and 2i + 1 (high nibble). */
    __m256i x = _mm256_loadu_si256((const __m256i *)p), m = _mm256_set1_epi8(0x0f);
    __m256i l = _mm256_and_si256(x, m), h = _mm256_and_si256(_mm256_srli_epi16(x, 4), m);
    __m256i a = _mm256_unpacklo_epi8(l, h), c = _mm256_unpackhi_epi8(l, h); /* [0-15 | 32-47], [16-31 | 48-63] */
    /* Sign-extend 4 bits and add the bias: (t ^ 8) - 8 + bias. */
    __m256i s = _mm256_set1_epi8(8), sb = _mm256_sub_epi8(b, s);
    *lo = _mm256_add_epi8(_mm256_xor_si256(_mm256_permute2x128_si256(a, c, 0x20), s), sb);
    *hi = _mm256_add_epi8(_mm256_xor_si256(_mm256_permute2x128_si256(a, c, 0x31), s), sb);
    return;
  }
  /* Q3 (q3_words): a shift brings each value down from the top of its
   * word; packus and a lane permute put the bytes in order. */
  const __m256i mul = q3_field_mul();
  __m256i x = q3_load(p);
  __m256i s4 = _mm256_set1_epi16(4), sb = _mm256_set1_epi16((short)(bias - 4)), w[4];
  for (int t = 0; t < 4; t++) {
    __m256i u = _mm256_srli_epi16(_mm256_mullo_epi16(q3_words(x, t), mul), 13);
    w[t] = _mm256_and_si256(_mm256_add_epi16(_mm256_xor_si256(u, s4), sb), _mm256_set1_epi16(0xff)); /* (u ^ 4) - 4 + bias */
  }
  __m256i p01 = _mm256_packus_epi16(w[0], w[1]), p23 = _mm256_packus_epi16(w[2], w[3]); /* [g0 g1 | g4 g5], [g2 g3 | g6 g7] */
  *lo = _mm256_permute2x128_si256(p01, p23, 0x20);
  *hi = _mm256_permute2x128_si256(p01, p23, 0x31);
}

/* One block's 64 values (plus |bias|) stored at |out|; returns the sum of
 * the bytes stored (as unsigned). */
static inline int32_t unpack_block_store(int dtype, const uint8_t *p, int bias, void *out) {
  __m256i lo, hi;
  unpack_block_256(dtype, p, bias, &lo, &hi);
  _mm256_storeu_si256((__m256i *)out, lo);
  _mm256_storeu_si256((__m256i *)((uint8_t *)out + 32), hi);
  /* sad against zero: the bytes' sums in four 64-bit lanes per register. */
  __m256i s = _mm256_add_epi64(_mm256_sad_epu8(lo, _mm256_setzero_si256()), _mm256_sad_epu8(hi, _mm256_setzero_si256()));
  __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  return (int32_t)(_mm_cvtsi128_si64(t) + _mm_extract_epi64(t, 1));
}
#endif

static void FN(dequantize_rows)(int dtype, size_t rows, size_t k, const uint8_t *q, float *x) {
  size_t nb = cpu_q_blocks(k), bb = cpu_q_block_bytes(dtype);
  int8_t v[CPU_QBLOCK];
  for (size_t r = 0; r < rows; r++)
    for (size_t b = 0; b < nb; b++) {
      const uint8_t *blk = q + (r * nb + b) * bb;
#if CPU_QUANT_LEVEL == 1 || CPU_QUANT_LEVEL == 2
      (void)unpack_block_store(dtype, blk + 2, 0, v);
#else
      unpack_signed(dtype, blk + 2, v);
#endif
      float d = block_scale(blk);
      size_t j = b * CPU_QBLOCK, n = k - j < CPU_QBLOCK ? k - j : CPU_QBLOCK;
      float *y = x + r * k + j;
      for (size_t i = 0; i < n; i++) y[i] = d * (float)v[i];
    }
}

static void FN(decode_signed)(int dtype, size_t nb, const uint8_t *row, int8_t *vals, float *scales,
                              int32_t *sums) {
  size_t bb = cpu_q_block_bytes(dtype);
  for (size_t b = 0; b < nb; b++) {
    const uint8_t *blk = row + b * bb;
    int8_t *v = vals + b * CPU_QBLOCK;
    scales[b] = block_scale(blk);
#if CPU_QUANT_LEVEL == 3
    __m512i q = unpack_block_512(dtype, blk + 2);
    _mm512_storeu_si512(v, q);
    sums[b] = _mm512_reduce_add_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1), q));
#elif CPU_QUANT_LEVEL == 1 || CPU_QUANT_LEVEL == 2
    /* Unpacked with +128 for the unsigned byte sum, then stored signed. */
    sums[b] = unpack_block_store(dtype, blk + 2, 128, v) - 128 * CPU_QBLOCK;
    for (int i = 0; i < CPU_QBLOCK; i++) v[i] = (int8_t)(v[i] ^ (int8_t)0x80);
#else
    unpack_signed(dtype, blk + 2, v);
    int32_t s = 0;
    for (int i = 0; i < CPU_QBLOCK; i++) s += v[i];
    sums[b] = s;
#endif
  }
}

static void FN(decode_offset)(int dtype, size_t nb, const uint8_t *row, uint8_t *vals, float *scales) {
  size_t bb = cpu_q_block_bytes(dtype);
  for (size_t b = 0; b < nb; b++) {
    const uint8_t *blk = row + b * bb;
    uint8_t *v = vals + b * CPU_QBLOCK;
    scales[b] = block_scale(blk);
#if CPU_QUANT_LEVEL == 3
    _mm512_storeu_si512(v, _mm512_xor_si512(unpack_block_512(dtype, blk + 2), _mm512_set1_epi8((char)0x80)));
#elif CPU_QUANT_LEVEL == 1 || CPU_QUANT_LEVEL == 2
    (void)unpack_block_store(dtype, blk + 2, 128, v);
#else
    int8_t s[CPU_QBLOCK];
    unpack_signed(dtype, blk + 2, s);
    for (int i = 0; i < CPU_QBLOCK; i++) v[i] = (uint8_t)(s[i] + 128);
#endif
  }
}

/* ===== Block dot products ===== */

#if CPU_QUANT_LEVEL == 3
static void FN(dot4)(int dtype, size_t nb, const uint8_t *const u[4], const int8_t *const a[4],
                     const int32_t *const asum[4], int32_t *s) {
  (void)dtype;
  for (size_t b = 0; b < nb; b++) {
    size_t o = b * CPU_QBLOCK;
    __m512i z = _mm512_setzero_si512();
    __m512i d0 = _mm512_dpbusd_epi32(z, _mm512_loadu_si512(u[0] + o), _mm512_loadu_si512(a[0] + o));
    __m512i d1 = _mm512_dpbusd_epi32(z, _mm512_loadu_si512(u[1] + o), _mm512_loadu_si512(a[1] + o));
    __m512i d2 = _mm512_dpbusd_epi32(z, _mm512_loadu_si512(u[2] + o), _mm512_loadu_si512(a[2] + o));
    __m512i d3 = _mm512_dpbusd_epi32(z, _mm512_loadu_si512(u[3] + o), _mm512_loadu_si512(a[3] + o));
    /* Reduce four vectors of 16 partial sums to one sum each. */
    __m512i t01 = _mm512_add_epi32(_mm512_unpacklo_epi32(d0, d1), _mm512_unpackhi_epi32(d0, d1));
    __m512i t23 = _mm512_add_epi32(_mm512_unpacklo_epi32(d2, d3), _mm512_unpackhi_epi32(d2, d3));
    __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi64(t01, t23), _mm512_unpackhi_epi64(t01, t23));
    __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(t), _mm512_extracti64x4_epi64(t, 1));
    __m128i q = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    __m128i corr = _mm_set_epi32(asum[3][b], asum[2][b], asum[1][b], asum[0][b]);
    _mm_storeu_si128((__m128i *)(s + 4 * b), _mm_sub_epi32(q, _mm_slli_epi32(corr, 7)));
  }
}
#elif CPU_QUANT_LEVEL == 1 || CPU_QUANT_LEVEL == 2
static inline __m128i reduce4_256(__m256i d0, __m256i d1, __m256i d2, __m256i d3) {
  __m256i t01 = _mm256_add_epi32(_mm256_unpacklo_epi32(d0, d1), _mm256_unpackhi_epi32(d0, d1));
  __m256i t23 = _mm256_add_epi32(_mm256_unpacklo_epi32(d2, d3), _mm256_unpackhi_epi32(d2, d3));
  __m256i t = _mm256_add_epi32(_mm256_unpacklo_epi64(t01, t23), _mm256_unpackhi_epi64(t01, t23));
  return _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
}

#if CPU_QUANT_LEVEL == 2
/* AVX-VNNI: u8 x s8 products summed in fours; the offset is removed after. */
static inline __m256i block_dot(const uint8_t *u, const int8_t *a) {
  __m256i acc = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_loadu_si256((const __m256i *)u),
                                        _mm256_loadu_si256((const __m256i *)a));
  return _mm256_dpbusd_avx_epi32(acc, _mm256_loadu_si256((const __m256i *)(u + 32)),
                                 _mm256_loadu_si256((const __m256i *)(a + 32)));
}
#else
/* AVX2, int4 and int3: u is 128 +- 8 and a within +-8, so maddubs's pair
 * sums (at most 2 * 136 * 8) cannot saturate; then pairs of those. */
static inline __m256i block_dot_narrow(const uint8_t *u, const int8_t *a) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i p0 = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)u), _mm256_loadu_si256((const __m256i *)a));
  __m256i p1 = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(u + 32)),
                                    _mm256_loadu_si256((const __m256i *)(a + 32)));
  return _mm256_madd_epi16(_mm256_add_epi16(p0, p1), ones); /* |p0 + p1| <= 4352 */
}

/* AVX2, int8: widen to 16 bits (maddubs would saturate) and multiply-add pairs. */
static inline __m256i block_dot(const uint8_t *u, const int8_t *a) {
  __m256i acc = _mm256_setzero_si256();
  for (int c = 0; c < CPU_QBLOCK; c += 16) {
    __m256i ua = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(u + c)));
    __m256i aa = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(a + c)));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(ua, aa));
  }
  return acc;
}
#endif

static void FN(dot4)(int dtype, size_t nb, const uint8_t *const u[4], const int8_t *const a[4],
                     const int32_t *const asum[4], int32_t *s) {
#if CPU_QUANT_LEVEL == 1
  if (dtype != Q8) {
    for (size_t b = 0; b < nb; b++) {
      size_t o = b * CPU_QBLOCK;
      __m128i q = reduce4_256(block_dot_narrow(u[0] + o, a[0] + o), block_dot_narrow(u[1] + o, a[1] + o),
                              block_dot_narrow(u[2] + o, a[2] + o), block_dot_narrow(u[3] + o, a[3] + o));
      __m128i corr = _mm_set_epi32(asum[3][b], asum[2][b], asum[1][b], asum[0][b]);
      _mm_storeu_si128((__m128i *)(s + 4 * b), _mm_sub_epi32(q, _mm_slli_epi32(corr, 7)));
    }
    return;
  }
#else
  (void)dtype;
#endif
  for (size_t b = 0; b < nb; b++) {
    size_t o = b * CPU_QBLOCK;
    __m128i q = reduce4_256(block_dot(u[0] + o, a[0] + o), block_dot(u[1] + o, a[1] + o),
                            block_dot(u[2] + o, a[2] + o), block_dot(u[3] + o, a[3] + o));
    __m128i corr = _mm_set_epi32(asum[3][b], asum[2][b], asum[1][b], asum[0][b]);
    _mm_storeu_si128((__m128i *)(s + 4 * b), _mm_sub_epi32(q, _mm_slli_epi32(corr, 7)));
  }
}

/* ===== Eight weight rows decoded in registers (gemv8, gemm8) ===== */

/* Q3 for gemv8 needs no shift per value. The block loads as [block bytes
 * 0-15 | 10-25]: the scale and data bytes 0-13 | data bytes 8-23. After an
 * XOR of every field's top bit (each value becomes value + 4, 0..7), a mask
 * keeps one field of each byte in place, field * 2^s for its bit offset s in
 * the byte, and maddubs multiplies it by the activation times 2^(5 - s),
 * precomputed: every product is 32 * (value + 4) * activation, at most
 * 32 * 7 * 4 in size. Register A takes values 0, 3, 6 of each group (bytes
 * 0, 1, 2 at bits 0, 1, 2), register B values 1, 4, 7 (bits 3, 4, 5).
 * Values 2 and 5 straddle bytes 0-1 and 1-2: a pshufb puts each pair in a
 * 16-bit word (register C), a shift by 6 leaves value 2 at bit 0 and value 5
 * at bit 1 (activation times 32 and 16). The low half takes data bytes 0-11
 * (groups 0-3), the high half 12-23 (groups 4-7), the lanes outside are
 * masked to zero, and the scale is the first word (scales8 gathers eight
 * rows' with unpacks). Checked against the reference by test_quant. */
static int q3_gemv_lane_byte(int lane) { /* the data byte of a lane of A or B, or -1 */
  if (lane < 16) return lane >= 2 && lane < 14 ? lane - 2 : -1;
  return lane >= 20 ? lane - 8 : -1;
}

/* The activation layouts the rows8 kernels read (CPU_QACT_BYTES per block):
 * Q8 as int16 in order; Q4 as int8, the even values then the odd ones (a
 * weight byte's low and high nibbles); Q3 for gemv8 as int8 in three
 * registers' order (see q3_gemv_lane_byte), times 2^(5 - s), and for gemm8
 * (|many|) as int8 in order. */
static void FN(act_layout)(int dtype, size_t nb, const int8_t *vals, void *act, size_t stride, int many) {
  for (size_t b = 0; b < nb; b++) {
    const int8_t *v = vals + b * CPU_QBLOCK;
    uint8_t *o = (uint8_t *)act + b * stride;
    int16_t w[CPU_QBLOCK];
    if (dtype == Q4) {
      for (int i = 0; i < CPU_QBLOCK / 2; i++) {
        o[i] = (uint8_t)v[2 * i];
        o[CPU_QBLOCK / 2 + i] = (uint8_t)v[2 * i + 1];
      }
      continue;
    }
    if (dtype == Q3 && many) { /* plain, as unpack_block_256 orders the weights */
      memcpy(o, v, CPU_QBLOCK);
      continue;
    }
    if (dtype == Q3) { /* A, B and C (see q3_gemv_lane_byte), 32 bytes each */
      memset(o, 0, 96);
      for (int lane = 0; lane < 32; lane++) {
        int d = q3_gemv_lane_byte(lane), g = d / 3, t = d % 3;
        if (d < 0) continue;
        o[lane] = (uint8_t)(v[8 * g + 3 * t] * (32 >> t));
        o[32 + lane] = (uint8_t)(v[8 * g + 3 * t + 1] * (4 >> t));
      }
      for (int g = 0; g < 8; g++) {
        o[64 + 4 * g] = (uint8_t)(v[8 * g + 2] * 32);
        o[64 + 4 * g + 2] = (uint8_t)(v[8 * g + 5] * 16);
      }
      continue;
    }
    for (int i = 0; i < CPU_QBLOCK; i++) w[i] = v[i];
    memcpy(o, w, sizeof w);
  }
}

/* One weight block decoded into registers, w[0..] in act_layout's order:
 * Q8 as four registers of int16; Q4 as nibble ^ 8 = value + 8 (unsigned,
 * for maddubs), the low nibbles then the high ones; Q3 as registers A, B
 * and C of q3_gemv_lane_byte, each field masked in place (value + 4, times
 * 2^s). *head is the block's first 16 bytes for Q3 (its scale in word 0). */
static inline void weight_block(int dtype, const uint8_t *blk, __m256i w[4], __m128i *head) {
  const uint8_t *p = blk + 2;
  if (dtype == Q8) {
    for (int c = 0; c < 4; c++) w[c] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 16 * c)));
    return;
  }
  if (dtype == Q4) {
    const __m256i m = _mm256_set1_epi8(0x0f);
    __m256i x = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)p), _mm256_set1_epi8((char)0x88));
    w[0] = _mm256_and_si256(x, m);
    w[1] = _mm256_and_si256(_mm256_srli_epi16(x, 4), m);
    return;
  }
  /* Q3: 0x924924 is every field's top bit in a 24-bit group. */
#define Q3_LANES(a, b, c) a, b, c, a, b, c, a, b, c, a, b, c
  const __m256i flip = _mm256_setr_epi8(0, 0, Q3_LANES(0x24, 0x49, (char)0x92), 0, 0, 0, 0, 0, 0,
                                        Q3_LANES(0x24, 0x49, (char)0x92));
  const __m256i mask_a = _mm256_setr_epi8(0, 0, Q3_LANES(7, 14, 28), 0, 0, 0, 0, 0, 0, Q3_LANES(7, 14, 28));
  const __m256i mask_b = _mm256_setr_epi8(0, 0, Q3_LANES(56, 112, (char)224), 0, 0, 0, 0, 0, 0,
                                          Q3_LANES(56, 112, (char)224));
#undef Q3_LANES
  const __m256i pairs = _mm256_setr_epi8(2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 10, 11, 12, 12, 13, 4, 5, 5, 6, 7, 8, 8, 9,
                                         10, 11, 11, 12, 13, 14, 14, 15);
  const __m256i mask_c = _mm256_setr_epi16(7, 14, 7, 14, 7, 14, 7, 14, 7, 14, 7, 14, 7, 14, 7, 14);
  __m128i lo = _mm_loadu_si128((const __m128i *)blk);
  *head = lo;
  __m256i x = _mm256_xor_si256(
      _mm256_inserti128_si256(_mm256_castsi128_si256(lo), _mm_loadu_si128((const __m128i *)(p + 8)), 1), flip);
  w[0] = _mm256_and_si256(x, mask_a);
  w[1] = _mm256_and_si256(x, mask_b);
  w[2] = _mm256_and_si256(_mm256_srli_epi16(_mm256_shuffle_epi8(x, pairs), 6), mask_c);
}

/* The registers of one activation block in act_layout's order. */
static inline void act_block(int dtype, const uint8_t *a, __m256i v[4]) {
  int n = dtype == Q8 ? 4 : dtype == Q4 ? 2 : 3;
  for (int r = 0; r < n; r++) v[r] = _mm256_loadu_si256((const __m256i *)a + r);
}

/* A decoded weight block dotted with an activation block: eight partial
 * sums of (for Q4) the sum + 8 * the activation's block sum or (for Q3) 32
 * times (the sum + 4 * the activation's block sum); row_sums8 corrects.
 * Every maddubs pair is at most 2 * 15 * 8 (Q4) or 2 * 32 * 7 * 4 (Q3) in
 * size, and Q8's 16-bit products take every code, -128 included. */
static inline __m256i rows8_dot(int dtype, const __m256i w[4], const __m256i a[4]) {
  if (dtype == Q8)
    return _mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(w[0], a[0]), _mm256_madd_epi16(w[1], a[1])),
                            _mm256_add_epi32(_mm256_madd_epi16(w[2], a[2]), _mm256_madd_epi16(w[3], a[3])));
  __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(w[0], a[0]), _mm256_maddubs_epi16(w[1], a[1]));
  if (dtype == Q3) s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(w[2], a[2]));
  return _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
}

/* Eight rows' block sums from their rows8_dot partials, corrected. */
static inline __m256i row_sums8(int dtype, const __m256i d[8], int32_t asum) {
  __m256i s = _mm256_set_m128i(reduce4_256(d[4], d[5], d[6], d[7]), reduce4_256(d[0], d[1], d[2], d[3]));
  if (dtype == Q3) s = _mm256_srai_epi32(s, 5); /* exact: every product was a multiple of 32 */
  if (dtype != Q8) s = _mm256_sub_epi32(s, _mm256_set1_epi32((dtype == Q4 ? 8 : 4) * asum));
  return s;
}

static inline short scale_bits(const uint8_t *blk) { return (short)(blk[0] | (blk[1] << 8)); }

/* The scales of eight rows' blocks at offset |o|: for Q3 the first word of
 * each weight_block head, gathered with unpacks. */
static inline __m256 scales8(int dtype, const uint8_t *const r[8], size_t o, const __m128i hd[8]) {
  __m128i h;
  if (dtype == Q3) {
    __m128i w01 = _mm_unpacklo_epi16(hd[0], hd[1]), w23 = _mm_unpacklo_epi16(hd[2], hd[3]);
    __m128i w45 = _mm_unpacklo_epi16(hd[4], hd[5]), w67 = _mm_unpacklo_epi16(hd[6], hd[7]);
    h = _mm_unpacklo_epi64(_mm_unpacklo_epi32(w01, w23), _mm_unpacklo_epi32(w45, w67));
  } else {
    h = _mm_setr_epi16(scale_bits(r[0] + o), scale_bits(r[1] + o), scale_bits(r[2] + o), scale_bits(r[3] + o),
                       scale_bits(r[4] + o), scale_bits(r[5] + o), scale_bits(r[6] + o), scale_bits(r[7] + o));
  }
  return _mm256_cvtph_ps(h);
}

/* QUANT.md Q7's step on eight lanes, each in its row's scalar order: acc +
 * (Da * Db) * (float)s. */
static inline __m256 q7_step(__m256 acc, float da, __m256 db, __m256i s) {
  return _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(da), db), _mm256_cvtepi32_ps(s)));
}

static inline size_t block_bytes_of(int dtype) { return dtype == Q8 ? 66 : dtype == Q4 ? 34 : 26; }

/* gemv8 for one dtype (a constant after inlining). */
static inline __attribute__((always_inline)) __m256 gemv8_rows(int dtype, size_t nb, const uint8_t *const r[8],
                                                               const uint8_t *act, const float *sa,
                                                               const int32_t *asum) {
  size_t bb = block_bytes_of(dtype);
  __m256 acc = _mm256_setzero_ps();
  for (size_t b = 0; b < nb; b++) {
    size_t o = b * bb;
    __m256i av[4], w[4], d[8];
    __m128i hd[8];
    act_block(dtype, act + b * CPU_QACT_BYTES, av);
    for (int j = 0; j < 8; j++) {
      weight_block(dtype, r[j] + o, w, &hd[j]);
      d[j] = rows8_dot(dtype, w, av);
    }
    acc = q7_step(acc, sa[b], scales8(dtype, r, o, hd), row_sums8(dtype, d, asum[b]));
  }
  return acc;
}

/* gemm8's weight block: decoded once for every activation row, so Q3
 * unpacks to plain bytes (value + 4, two registers, as Q4's two) instead
 * of gemv8's three masked registers, in act_layout's |many| order. */
static inline void weight_block_many(int dtype, const uint8_t *blk, __m256i w[4]) {
  if (dtype == Q3) {
    unpack_block_256(Q3, blk + 2, 4, &w[0], &w[1]);
    return;
  }
  __m128i head;
  weight_block(dtype, blk, w, &head);
}

/* Eight rows' registers transposed as 32-bit words: r[j] word q becomes
 * t[q] word j (an 8x8 transpose, unpacks then lane swaps). */
static inline void transpose8_epi32(const __m256i r[8], __m256i t[8]) {
  __m256i a[8], b[8];
  for (int k = 0; k < 4; k++) {
    a[2 * k] = _mm256_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
    a[2 * k + 1] = _mm256_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 2; k++)
    for (int h = 0; h < 2; h++) {
      b[4 * k + 2 * h] = _mm256_unpacklo_epi64(a[4 * k + h], a[4 * k + h + 2]);
      b[4 * k + 2 * h + 1] = _mm256_unpackhi_epi64(a[4 * k + h], a[4 * k + h + 2]);
    }
  for (int q = 0; q < 4; q++) {
    t[q] = _mm256_permute2x128_si256(b[q], b[q + 4], 0x20);
    t[q + 4] = _mm256_permute2x128_si256(b[q], b[q + 4], 0x31);
  }
}

/* acc += x in acc's own register: GCC 12 otherwise adds into a temporary
 * and copies it back each step, and with eight rows in flight it spills
 * (bench_lowbit batch 64, int8: 22.3 -> 18.7 ms). */
static inline void add_into_epi32(__m256i *acc, __m256i x) { __asm__("vpaddd %1, %0, %0" : "+x"(*acc) : "x"(x)); }
static inline void add_into_epi16(__m256i *acc, __m256i x) { __asm__("vpaddw %1, %0, %0" : "+x"(*acc) : "x"(x)); }

#define GEMM8_TILE 256
#define GEMM8_RUN 8
/* gemm8's inner step for |R| activation rows (a, CPU_QACT_BYTES apart) and
 * block b: word q of wt holds the eight weight rows' values at the
 * activation's word q, so one broadcast activation word against it gives
 * the eight rows' partial dots in their own lanes, and no horizontal sum is
 * needed. maddubs pairs are summed in 16 bits (at most 16 * 2 * 15 * 8 for
 * Q4, 16 * 2 * 7 * 4 for Q3 as bytes + 4), then one madd makes each lane a
 * row's block sum; Q8's madd sums are 32-bit from the start. */
static inline __attribute__((always_inline)) void gemm8_step(int dtype, int R, const __m256i *wt, const uint8_t *a,
                                                             size_t nb, size_t b, const float *sa,
                                                             const int32_t *asum, __m256 db, __m256 *acc) {
  int words = dtype == Q8 ? 32 : 16, corr = dtype == Q4 ? 8 : dtype == Q3 ? 4 : 0;
  __m256i s[GEMM8_RUN];
  for (int r = 0; r < R; r++) s[r] = _mm256_setzero_si256();
#pragma GCC unroll 16 /* whole blocks for int4 and int3: 7-9% faster */
  for (int q = 0; q < words; q++) {
    __m256i w = _mm256_load_si256(wt + q);
    for (int r = 0; r < R; r++) {
      int32_t x;
      memcpy(&x, a + (size_t)r * CPU_QACT_BYTES + 4 * (size_t)q, sizeof x);
      __m256i v = _mm256_set1_epi32(x);
      if (dtype == Q8) add_into_epi32(&s[r], _mm256_madd_epi16(w, v));
      else add_into_epi16(&s[r], _mm256_maddubs_epi16(w, v));
    }
  }
  for (int r = 0; r < R; r++) {
    __m256i t = dtype == Q8 ? s[r] : _mm256_madd_epi16(s[r], _mm256_set1_epi16(1));
    if (corr) t = _mm256_sub_epi32(t, _mm256_set1_epi32(corr * asum[(size_t)r * nb + b]));
    acc[r] = q7_step(acc[r], sa[(size_t)r * nb + b], db, t);
  }
}

/* gemm8 for one dtype: block by block, the eight rows decoded once and
 * transposed (gemm8_step's wt), then dotted with each activation row of a
 * tile of GEMM8_TILE (whose blocks lie together in act's [block][row]
 * layout, so a tile's reads stay in cache), GEMM8_RUN rows at a time;
 * acc[i] holds row i's eight running sums. */
static inline __attribute__((always_inline)) void gemm8_rows(int dtype, size_t nb, const uint8_t *const r[8], size_t m,
                                                             const uint8_t *act, const float *sa,
                                                             const int32_t *asum, __m256 *acc) {
  size_t bb = block_bytes_of(dtype);
  int regs = dtype == Q8 ? 4 : 2;
  for (size_t i = 0; i < m; i++) acc[i] = _mm256_setzero_ps();
  for (size_t i0 = 0; i0 < m; i0 += GEMM8_TILE)
  for (size_t b = 0; b < nb; b++) {
    size_t o = b * bb, end = m < i0 + GEMM8_TILE ? m : i0 + GEMM8_TILE;
    __m256i wd[8][4], col[8];
    __attribute__((aligned(32))) __m256i wt[32];
    for (int j = 0; j < 8; j++) weight_block_many(dtype, r[j] + o, wd[j]);
    for (int c = 0; c < regs; c++) {
      for (int j = 0; j < 8; j++) col[j] = wd[j][c];
      transpose8_epi32(col, wt + 8 * c);
    }
    __m256 db = scales8(Q8, r, o, NULL); /* the scales read one by one */
    /* GEMM8_RUN rows a step, then half a run, then one at a time (R stays a constant). */
#define GEMM8_STEP(R) \
  gemm8_step(dtype, R, wt, act + (b * m + i) * CPU_QACT_BYTES, nb, b, sa + i * nb, asum + i * nb, db, acc + i)
    size_t i = i0;
    for (; i + GEMM8_RUN <= end; i += GEMM8_RUN) GEMM8_STEP(GEMM8_RUN);
    if (i + GEMM8_RUN / 2 <= end) {
      GEMM8_STEP(GEMM8_RUN / 2);
      i += GEMM8_RUN / 2;
    }
    for (; i < end; i++) GEMM8_STEP(1);
#undef GEMM8_STEP
  }
}

static void rows8(const uint8_t *b, size_t rows, size_t row_bytes, const uint8_t *r[8]) {
  for (size_t i = 0; i < 8; i++) r[i] = b + (i < rows ? i : 0) * row_bytes; /* a short tail repeats row 0 */
}

static void FN(gemv8)(int dtype, size_t nb, size_t rows, const uint8_t *b, size_t row_bytes, const void *act,
                      const float *sa, const int32_t *asum, float *c) {
  const uint8_t *r[8];
  rows8(b, rows, row_bytes, r);
  __m256 acc = dtype == Q8   ? gemv8_rows(Q8, nb, r, act, sa, asum)
               : dtype == Q4 ? gemv8_rows(Q4, nb, r, act, sa, asum)
                             : gemv8_rows(Q3, nb, r, act, sa, asum);
  float out[8];
  _mm256_storeu_ps(out, acc);
  memcpy(c, out, rows * sizeof *c);
}

static void FN(gemm8)(int dtype, size_t nb, size_t rows, const uint8_t *b, size_t row_bytes, size_t m,
                      const void *act, const float *sa, const int32_t *asum, float *scratch, float *c, size_t ldc) {
  const uint8_t *r[8];
  rows8(b, rows, row_bytes, r);
  __m256 *acc = (__m256 *)scratch;
  if (dtype == Q8) gemm8_rows(Q8, nb, r, m, act, sa, asum, acc);
  else if (dtype == Q4) gemm8_rows(Q4, nb, r, m, act, sa, asum, acc);
  else gemm8_rows(Q3, nb, r, m, act, sa, asum, acc);
  for (size_t i = 0; i < m; i++) {
    float out[8];
    _mm256_storeu_ps(out, acc[i]);
    memcpy(c + i * ldc, out, rows * sizeof *c);
  }
}
#define ROWS8_OPS FN(act_layout), FN(gemv8), FN(gemm8)

#else
static void FN(dot4)(int dtype, size_t nb, const uint8_t *const u[4], const int8_t *const a[4],
                     const int32_t *const asum[4], int32_t *s) {
  (void)dtype;
  (void)asum;
  for (size_t b = 0; b < nb; b++)
    for (int r = 0; r < 4; r++) {
      const uint8_t *ur = u[r] + b * CPU_QBLOCK;
      const int8_t *ar = a[r] + b * CPU_QBLOCK;
      int32_t acc = 0;
      for (int t = 0; t < CPU_QBLOCK; t++) acc += ((int32_t)ur[t] - 128) * ar[t];
      s[4 * b + (size_t)r] = acc;
    }
}
#endif

const cpu_quant_ops *FN(cpu_quant)(void) {
#ifndef ROWS8_OPS
#define ROWS8_OPS NULL, NULL, NULL /* the dot4 path (cpu_kernels_quant.c) */
#endif
  static const cpu_quant_ops ops = {STR(CPU_QUANT_SUFFIX), FN(quantize_rows), FN(dequantize_rows),
                                    FN(decode_signed), FN(decode_offset), FN(dot4), ROWS8_OPS};
  return &ops;
}
