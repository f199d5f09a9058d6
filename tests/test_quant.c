/*
 * The packed integer formats (abi/QUANT.md): the reference against the test
 * vectors of QUANT.md Q9 and hand-computed cases, and every ISA level of the
 * CPU plugin (generic, AVX2, AVX-VNNI, AVX-512) against the reference, byte
 * for byte, on the vectors, on random data and on edge values.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harmonics/harmonics.h"
#include "hm_reference.h"
#include "hm_test.h"
#include "test_op_util.h"

static const int kDtypes[3] = {HM_ABI_DTYPE_Q8, HM_ABI_DTYPE_Q4, HM_ABI_DTYPE_Q3};
static const char *kIsas[4] = {"generic", "avx2", "avxvnni", "avx512"};

static uint32_t gemm_code(int dtype) {
  return dtype == HM_ABI_DTYPE_Q8 ? HM_ABI_OP_GEMM_Q8 : dtype == HM_ABI_DTYPE_Q4 ? HM_ABI_OP_GEMM_Q4 : HM_ABI_OP_GEMM_Q3;
}

static float bits_to_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* ===== QUANT.md Q9 ===== */

typedef struct qvector {
  char kind[8], name[64];
  int dtype;
  size_t k, m, n;
  float *x, *y, *c;
  size_t nx, ny, nc;
  uint8_t *q, *a, *b;
  size_t nq, na, nb;
} qvector;

static int parse_dtype(const char *s) {
  return strcmp(s, "Q8") == 0 ? HM_ABI_DTYPE_Q8 : strcmp(s, "Q4") == 0 ? HM_ABI_DTYPE_Q4 : strcmp(s, "Q3") == 0 ? HM_ABI_DTYPE_Q3 : 0;
}

static float *parse_floats(const char *s, size_t *n) {
  size_t cap = strlen(s) / 8 + 1, len = 0;
  float *v = malloc(cap * sizeof *v);
  char *end;
  for (;;) {
    unsigned long u = strtoul(s, &end, 16);
    if (end == s) break;
    v[len++] = bits_to_float((uint32_t)u);
    s = end;
  }
  *n = len;
  return v;
}

static uint8_t *parse_bytes(const char *s, size_t *n) {
  while (*s == ' ') s++;
  size_t len = strcspn(s, " \n") / 2;
  uint8_t *v = malloc(len + 1);
  for (size_t i = 0; i < len; i++) {
    unsigned x;
    sscanf(s + 2 * i, "%2x", &x);
    v[i] = (uint8_t)x;
  }
  *n = len;
  return v;
}

/* Reads the vectors of abi/QUANT.md; returns their count. */
static size_t load_vectors(qvector *out, size_t cap) {
  FILE *f = fopen(HM_SOURCE_DIR "/abi/QUANT.md", "r");
  if (!f) return 0;
  static char line[1 << 16];
  size_t n = 0;
  qvector *cur = NULL;
  while (fgets(line, sizeof line, f)) {
    char dt[8];
    if (n < cap && sscanf(line, "vector %63s %7s k=%zu", out[n].name, dt, &out[n].k) == 3) {
      cur = &out[n++];
      strcpy(cur->kind, "vector");
      cur->dtype = parse_dtype(dt);
    } else if (n < cap && sscanf(line, "gemm %7s m=%zu n=%zu k=%zu", dt, &out[n].m, &out[n].n, &out[n].k) == 4) {
      cur = &out[n++];
      strcpy(cur->kind, "gemm");
      snprintf(cur->name, sizeof cur->name, "gemm_%s", dt);
      cur->dtype = parse_dtype(dt);
    } else if (cur && strncmp(line, "x:", 2) == 0) {
      cur->x = parse_floats(line + 2, &cur->nx);
    } else if (cur && strncmp(line, "y:", 2) == 0) {
      cur->y = parse_floats(line + 2, &cur->ny);
    } else if (cur && strncmp(line, "c:", 2) == 0) {
      cur->c = parse_floats(line + 2, &cur->nc);
    } else if (cur && strncmp(line, "q:", 2) == 0) {
      cur->q = parse_bytes(line + 2, &cur->nq);
    } else if (cur && strncmp(line, "a:", 2) == 0) {
      cur->a = parse_bytes(line + 2, &cur->na);
    } else if (cur && strncmp(line, "b:", 2) == 0) {
      cur->b = parse_bytes(line + 2, &cur->nb);
    }
  }
  fclose(f);
  return n;
}

static void free_vectors(qvector *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(v[i].x);
    free(v[i].y);
    free(v[i].c);
    free(v[i].q);
    free(v[i].a);
    free(v[i].b);
  }
}

static int same_floats(const float *a, const float *b, size_t n) { return memcmp(a, b, n * 4) == 0; }

static void test_reference_vectors(void) {
  qvector v[16];
  memset(v, 0, sizeof v);
  size_t n = load_vectors(v, 16);
  HM_CHECK_EQ(n, 7);
  for (size_t i = 0; i < n; i++) {
    HM_CHECK_MSG(v[i].dtype != 0, "%s: dtype", v[i].name);
    if (strcmp(v[i].kind, "vector") == 0) {
      size_t rb = hm_ref_q_row_bytes(v[i].dtype, v[i].k);
      HM_CHECK_EQ(v[i].nx, v[i].k);
      HM_CHECK_EQ(v[i].nq, rb);
      HM_CHECK_EQ(v[i].ny, v[i].k);
      uint8_t *q = calloc(rb, 1);
      float *y = calloc(v[i].k, 4);
      hm_ref_quantize_row(v[i].dtype, v[i].k, v[i].x, q);
      hm_ref_dequantize_row(v[i].dtype, v[i].k, q, y);
      HM_CHECK_MSG(memcmp(q, v[i].q, rb) == 0, "%s: packed bytes differ from QUANT.md", v[i].name);
      HM_CHECK_MSG(same_floats(y, v[i].y, v[i].k), "%s: dequantized values differ", v[i].name);
      free(q);
      free(y);
    } else {
      size_t rb = hm_ref_q_row_bytes(v[i].dtype, v[i].k);
      HM_CHECK_EQ(v[i].na, v[i].m * rb);
      HM_CHECK_EQ(v[i].nb, v[i].n * rb);
      HM_CHECK_EQ(v[i].nc, v[i].m * v[i].n);
      float c[64];
      hm_ref_gemm_q(v[i].dtype, v[i].m, v[i].n, v[i].k, v[i].a, v[i].b, c);
      HM_CHECK_MSG(same_floats(c, v[i].c, v[i].nc), "%s: C differs", v[i].name);
    }
  }
  free_vectors(v, n);
}

/* Computed by hand from QUANT.md: x = [3, -3, 1, 0...] at Q3 has amax 3,
 * t = 3 * f32(1/3) = 1.0000000298 -> f32 1.0 -> d = 0x3C00; q = [3, -3, 1];
 * group 0 = 3 | 5 << 3 | 1 << 6 = 0x6B. w = [2, 1, -1]: t = 0.6666667 ->
 * d = 0x3955 = 0.66650390625; q = [3, 2, -2]. Their product: s = 9 - 6 - 2 = 1,
 * C = 1.0 * 0.66650390625 * 1. */
static void test_hand_computed(void) {
  float x[64] = {3, -3, 1}, w[64] = {2, 1, -1};
  uint8_t qx[26], qw[26];
  hm_ref_quantize_row(HM_ABI_DTYPE_Q3, 64, x, qx);
  hm_ref_quantize_row(HM_ABI_DTYPE_Q3, 64, w, qw);
  const uint8_t ex[5] = {0x00, 0x3c, 0x6b, 0x00, 0x00};
  HM_CHECK(memcmp(qx, ex, 5) == 0);
  for (int i = 5; i < 26; i++) HM_CHECK_EQ(qx[i], 0);
  HM_CHECK_EQ(qw[0] | qw[1] << 8, 0x3955);
  HM_CHECK_EQ(hm_ref_q_get(HM_ABI_DTYPE_Q3, qw, 0), 3);
  HM_CHECK_EQ(hm_ref_q_get(HM_ABI_DTYPE_Q3, qw, 1), 2);
  HM_CHECK_EQ(hm_ref_q_get(HM_ABI_DTYPE_Q3, qw, 2), -2);
  float c = -1;
  hm_ref_gemm_q(HM_ABI_DTYPE_Q3, 1, 1, 64, qx, qw, &c);
  HM_CHECK(c == 0.66650390625f);
  /* Q8: x = [127, -127, 0.5] -> t = 127 * f32(1/127) = 1.0000000 -> d = 1;
   * 0.5 is a tie and goes to the even 0. Q4: 7 -> d = 1, 2.5 -> 2, 3.5 -> 4. */
  float y[64] = {127, -127, 0.5f};
  uint8_t q8[66], q4[34];
  hm_ref_quantize_row(HM_ABI_DTYPE_Q8, 64, y, q8);
  const uint8_t e8[5] = {0x00, 0x3c, 0x7f, 0x81, 0x00};
  HM_CHECK(memcmp(q8, e8, 5) == 0);
  float z[64] = {7, 2.5f, 3.5f, -7};
  hm_ref_quantize_row(HM_ABI_DTYPE_Q4, 64, z, q4);
  const uint8_t e4[4] = {0x00, 0x3c, 0x27, 0x94}; /* 7 | 2<<4, 4 | -7<<4 */
  HM_CHECK(memcmp(q4, e4, 4) == 0);
  /* Saturating scale: amax 1e6 at Q3 -> 65504, every value clamps to +-3. */
  float big[64];
  for (int i = 0; i < 64; i++) big[i] = i % 2 ? 1.0e6f : -1.0e6f;
  uint8_t qb[26];
  hm_ref_quantize_row(HM_ABI_DTYPE_Q3, 64, big, qb);
  HM_CHECK_EQ(qb[0] | qb[1] << 8, 0x7bff);
  for (int i = 0; i < 64; i++) HM_CHECK_EQ(hm_ref_q_get(HM_ABI_DTYPE_Q3, qb, i), i % 2 ? 3 : -3);
  /* Sizes: 3.25 bits per value at Q3 with the scale. */
  HM_CHECK_EQ(hm_ref_q_row_bytes(HM_ABI_DTYPE_Q3, 64), 26);
  HM_CHECK_EQ(hm_ref_q_row_bytes(HM_ABI_DTYPE_Q4, 65), 68);
  HM_CHECK_EQ(hm_ref_q_row_bytes(HM_ABI_DTYPE_Q8, 1), 66);
}

/* ===== The CPU plugin's ISA levels against the reference ===== */

static hm_device *open_cpu_isa(const char *isa, unsigned threads) {
  char opt[32];
  snprintf(opt, sizeof opt, "isa=%s", isa);
  const char *opts[1] = {opt};
  hm_device_options o = hm_device_options_default();
  o.threads = threads;
  o.options = opts;
  o.n_options = 1;
  hm_device *dev = NULL;
  if (hm_device_open("cpu", &o, &dev) != HM_OK) return NULL;
  return dev;
}

static int run_quantize(hm_device *dev, int dtype, size_t rows, size_t k, const float *x, const char *what) {
  size_t rb = hm_ref_q_row_bytes(dtype, k);
  top_case c;
  memset(&c, 0, sizeof c);
  c.op = hm_op_init(HM_ABI_OP_QUANTIZE);
  c.op.dtype_in = HM_ABI_DTYPE_F32;
  c.op.dtype_out = (uint32_t)dtype;
  c.op.dims[0] = rows;
  c.op.dims[1] = k;
  c.in[0] = (top_operand){(void *)x, rows * k * 4};
  uint8_t *init = malloc(rows * rb);
  memset(init, 0xa5, rows * rb); /* every byte must be written */
  c.out[0] = (top_operand){init, rows * rb};
  void *d[4], *r[4];
  int ok = top_run(dev, &c, d, r) == HM_OK;
  HM_CHECK_MSG(ok, "%s: quantize failed: %s", what, hm_last_error());
  if (ok) {
    HM_CHECK_MSG(memcmp(d[0], r[0], rows * rb) == 0, "%s: packed bytes differ (rows %zu k %zu dtype %d)", what,
                 rows, k, dtype);
    /* And back. */
    top_case u;
    memset(&u, 0, sizeof u);
    u.op = hm_op_init(HM_ABI_OP_DEQUANTIZE);
    u.op.dtype_in = (uint32_t)dtype;
    u.op.dtype_out = HM_ABI_DTYPE_F32;
    u.op.dims[0] = rows;
    u.op.dims[1] = k;
    u.in[0] = (top_operand){r[0], rows * rb};
    float *y0 = calloc(rows * k + 1, 4);
    u.out[0] = (top_operand){y0, rows * k * 4};
    void *d2[4], *r2[4];
    int ok2 = top_run(dev, &u, d2, r2) == HM_OK;
    HM_CHECK_MSG(ok2, "%s: dequantize failed", what);
    if (ok2) HM_CHECK_MSG(memcmp(d2[0], r2[0], rows * k * 4) == 0, "%s: dequantized values differ", what);
    if (ok2) {
      top_free_outputs(d2);
      top_free_outputs(r2);
    }
    free(y0);
    top_free_outputs(d);
    top_free_outputs(r);
  }
  free(init);
  return ok;
}

static void run_gemm(hm_device *dev, int dtype, size_t m, size_t n, size_t k, const uint8_t *a, const uint8_t *b,
                     const char *what) {
  size_t rb = hm_ref_q_row_bytes(dtype, k);
  top_case c;
  memset(&c, 0, sizeof c);
  c.op = hm_op_init(gemm_code(dtype));
  c.op.dtype_in = (uint32_t)dtype;
  c.op.dtype_acc = HM_ABI_DTYPE_I32;
  c.op.dtype_out = HM_ABI_DTYPE_F32;
  c.op.dims[0] = m;
  c.op.dims[1] = n;
  c.op.dims[2] = k;
  c.in[0] = (top_operand){(void *)a, m * rb};
  c.in[1] = (top_operand){(void *)b, n * rb};
  float *init = malloc(m * n * 4);
  for (size_t i = 0; i < m * n; i++) init[i] = NAN;
  c.out[0] = (top_operand){init, m * n * 4};
  void *d[4], *r[4];
  int ok = top_run(dev, &c, d, r) == HM_OK;
  HM_CHECK_MSG(ok, "%s: gemm failed: %s", what, hm_last_error());
  if (ok) {
    HM_CHECK_MSG(memcmp(d[0], r[0], m * n * 4) == 0, "%s: C differs (m %zu n %zu k %zu dtype %d)", what, m, n, k,
                 dtype);
    top_free_outputs(d);
    top_free_outputs(r);
  }
  free(init);
}

/* Random values with edge cases mixed in: zero blocks, huge blocks,
 * non-finite values, ties and tiny values. */
static float *edge_data(size_t n, unsigned long long seed) {
  float *x = top_random(n, -2.0f, 2.0f, seed);
  for (size_t i = 0; i < n; i++) {
    size_t blk = i / 64;
    switch ((blk + seed) % 7) {
      case 1: x[i] = 0.0f; break;                     /* zero block */
      case 2: x[i] *= 1.0e6f; break;                  /* saturated scale */
      case 3: x[i] *= 1.0e-7f; break;                 /* subnormal f16 scale */
      case 4: if (i % 13 == 0) x[i] = (i % 2) ? INFINITY : NAN; break;
      case 5: x[i] = (float)((int)(x[i] * 4.0f)) * 0.5f; break; /* many exact ties */
      default: break;
    }
  }
  return x;
}

static void check_isa(const char *isa, unsigned threads) {
  hm_device *dev = open_cpu_isa(isa, threads);
  if (!dev) {
    printf("  isa %s: not available on this CPU (%s)\n", isa, hm_last_error());
    return;
  }
  printf("  isa %s, %u thread(s)\n", isa, threads);
  char what[160];
  /* The QUANT.md vectors. */
  qvector v[16];
  memset(v, 0, sizeof v);
  size_t nv = load_vectors(v, 16);
  for (size_t i = 0; i < nv; i++) {
    snprintf(what, sizeof what, "%s/%s", isa, v[i].name);
    if (strcmp(v[i].kind, "vector") == 0)
      run_quantize(dev, v[i].dtype, 1, v[i].k, v[i].x, what);
    else
      run_gemm(dev, v[i].dtype, v[i].m, v[i].n, v[i].k, v[i].a, v[i].b, what);
  }
  free_vectors(v, nv);
  /* Random shapes, odd sizes included. */
  static const size_t ks[] = {1, 63, 64, 65, 130, 200, 784};
  static const size_t ms[] = {1, 2, 3, 4, 5, 7, 64};
  static const size_t ns[] = {1, 3, 5, 17, 40};
  unsigned long long seed = 11;
  for (int di = 0; di < 3; di++) {
    int dt = kDtypes[di];
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
      size_t k = ks[ki], m = ms[(ki + (size_t)di) % 7], n = ns[(ki * 3 + (size_t)di) % 5];
      size_t rb = hm_ref_q_row_bytes(dt, k);
      float *a = edge_data(m * k, seed++), *b = edge_data(n * k, seed++);
      snprintf(what, sizeof what, "%s/random", isa);
      run_quantize(dev, dt, m, k, a, what);
      uint8_t *qa = malloc(m * rb), *qb = malloc(n * rb);
      for (size_t i = 0; i < m; i++) hm_ref_quantize_row(dt, k, a + i * k, qa + i * rb);
      for (size_t i = 0; i < n; i++) hm_ref_quantize_row(dt, k, b + i * k, qb + i * rb);
      run_gemm(dev, dt, m, n, k, qa, qb, what);
      /* Hostile bytes: any pattern must decode, including the unused most
       * negative codes and negative scales, and agree with the reference
       * (scales kept finite so that no NaN payloads are compared). */
      for (size_t i = 0; i < m * rb; i++) qa[i] = (uint8_t)(i * 97 + seed);
      for (size_t i = 0; i < n * rb; i++) qb[i] = (uint8_t)(i * 61 + seed);
      size_t bb = hm_ref_q_block_bytes(dt);
      for (size_t off = 0; off < m * rb; off += bb) qa[off + 1] &= 0xbb;
      for (size_t off = 0; off < n * rb; off += bb) qb[off + 1] &= 0xbb;
      snprintf(what, sizeof what, "%s/any-bytes", isa);
      run_gemm(dev, dt, m, n, k, qa, qb, what);
      free(a);
      free(b);
      free(qa);
      free(qb);
    }
    /* A larger one, so the threaded split is exercised. */
    size_t m = 9, n = 67, k = 1000, rb = hm_ref_q_row_bytes(dt, k);
    float *a = top_random(m * k, -1, 1, seed++), *b = top_random(n * k, -1, 1, seed++);
    uint8_t *qa = malloc(m * rb), *qb = malloc(n * rb);
    for (size_t i = 0; i < m; i++) hm_ref_quantize_row(dt, k, a + i * k, qa + i * rb);
    for (size_t i = 0; i < n; i++) hm_ref_quantize_row(dt, k, b + i * k, qb + i * rb);
    snprintf(what, sizeof what, "%s/large", isa);
    run_gemm(dev, dt, m, n, k, qa, qb, what);
    run_gemm(dev, dt, 1, n, k, qa, qb, what);
    run_quantize(dev, dt, n, k, b, what);
    free(a);
    free(b);
    free(qa);
    free(qb);
  }
  hm_device_close(dev);
}

static void test_cpu_isa_levels(void) {
  for (int i = 0; i < 4; i++) {
    check_isa(kIsas[i], 1);
    check_isa(kIsas[i], 2);
  }
}

static void test_cpu_default_is_best(void) {
  hm_device *dev = top_open_cpu(1);
  HM_CHECK(dev != NULL);
  if (!dev) return;
  const hm_abi_device_desc *d = hm_device_desc(dev);
  HM_CHECK(strstr(d->features, "quant=") != NULL);
  for (int i = 0; i < 3; i++) {
    int dt = kDtypes[i];
    HM_CHECK(hm_device_supports(dev, HM_ABI_OP_QUANTIZE, HM_ABI_DTYPE_F32, (uint32_t)dt, 0));
    HM_CHECK(hm_device_supports(dev, HM_ABI_OP_DEQUANTIZE, (uint32_t)dt, HM_ABI_DTYPE_F32, 0));
    HM_CHECK(hm_device_supports(dev, gemm_code(dt), (uint32_t)dt, HM_ABI_DTYPE_F32, 0));
  }
  hm_device_close(dev);
}

static void test_cpu_rejects_bad_ops(void) {
  hm_device *dev = top_open_cpu(1);
  if (!dev) return;
  hm_abi_buffer *a = NULL, *b = NULL, *c = NULL;
  HM_CHECK(hm_device_buffer_alloc(dev, 26, &a) == HM_OK);
  HM_CHECK(hm_device_buffer_alloc(dev, 26, &b) == HM_OK);
  HM_CHECK(hm_device_buffer_alloc(dev, 16, &c) == HM_OK);
  hm_abi_op op = hm_op_init(HM_ABI_OP_GEMM_Q3);
  op.dtype_in = HM_ABI_DTYPE_Q3;
  op.dtype_acc = HM_ABI_DTYPE_I32;
  op.dtype_out = HM_ABI_DTYPE_F32;
  op.dims[0] = 1;
  op.dims[1] = 2; /* B needs 2 rows = 52 bytes, the buffer has 26 */
  op.dims[2] = 64;
  op.in[0].buffer = a;
  op.in[1].buffer = b;
  op.out[0].buffer = c;
  hm_abi_program *p = NULL;
  HM_CHECK_EQ(hm_device_program_create(dev, &op, 1, 0, &p), HM_STATUS_OUT_OF_RANGE);
  op.dims[1] = 1;
  op.dtype_in = HM_ABI_DTYPE_Q4; /* int4 data for the int3 matmul */
  HM_CHECK_EQ(hm_device_program_create(dev, &op, 1, 0, &p), HM_STATUS_UNIMPLEMENTED);
  op.dtype_in = HM_ABI_DTYPE_Q3;
  op.out[0].buffer = a; /* output over an input */
  HM_CHECK_EQ(hm_device_program_create(dev, &op, 1, 0, &p), HM_STATUS_INVALID_ARGUMENT);
  hm_device_buffer_free(dev, a);
  hm_device_buffer_free(dev, b);
  hm_device_buffer_free(dev, c);
  const char *opts[1] = {"isa=sse9"};
  hm_device_options o = hm_device_options_default();
  o.options = opts;
  o.n_options = 1;
  hm_device *bad = NULL;
  HM_CHECK_EQ(hm_device_open("cpu", &o, &bad), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK(strstr(hm_last_error(), "isa='sse9'") != NULL);
  hm_device_close(dev);
}

int main(int argc, char **argv) {
  static const hm_test_case cases[] = {
      HM_TEST_CASE_P(test_, reference_vectors),
      HM_TEST_CASE_P(test_, hand_computed),
      HM_TEST_CASE_P(test_, cpu_isa_levels),
      HM_TEST_CASE_P(test_, cpu_default_is_best),
      HM_TEST_CASE_P(test_, cpu_rejects_bad_ops),
  };
  return hm_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
