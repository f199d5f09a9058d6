/*
 * bench/lowbit: GEMV (batch 1) and GEMM (batch 64) with a 4096 x 4096 weight
 * matrix at f32, int8, int4 and int3 on the CPU plugin, in one run: best
 * time per call and the effective bandwidth of weight traffic (weight bytes
 * / time). The integer rows time what inference runs per layer: QUANTIZE of
 * the activations plus GEMM_Qb on weights packed once. The f32 rows are the
 * plugin's GEMM (OpenBLAS sgemm) and, as a second peer, OpenBLAS's own sgemv
 * for batch 1 (same library and core type the plugin loaded). "bf16 inputs"
 * is GEMM with dtype_in BF16 (rounded copies, then sgemm): the measurement
 * behind the auto policy's choice on this CPU.
 *
 *   bench_lowbit [--n 4096] [--k 4096] [--batches 1,64] [--threads 1,2] [--seconds 1] [--backend cpu]
 * On another backend (e.g. cuda) the threads column is ignored and every
 * timing ends with a 4-byte read, so it covers the work to completion.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harmonics/harmonics.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static float *filled(size_t n, unsigned seed) {
  float *x = malloc(n * sizeof *x);
  for (size_t i = 0; i < n; i++) {
    seed = seed * 1664525u + 1013904223u;
    x[i] = (float)(seed >> 8) / 16777216.0f - 0.5f;
  }
  return x;
}

typedef int (*run_fn)(void *ctx);
static double best_time(run_fn fn, void *ctx, double seconds) {
  if (fn(ctx)) return -1; /* warm-up */
  double best = 1e30, start = now();
  int reps = 0;
  while (reps < 5 || now() - start < seconds) {
    double t = now();
    if (fn(ctx)) return -1;
    t = now() - t;
    if (t < best) best = t;
    reps++;
  }
  return best;
}

typedef struct prog_run {
  hm_device *dev;
  hm_abi_program *prog;
  hm_abi_buffer *sync; /* read after each run on asynchronous backends */
} prog_run;

static int g_async;

static int run_prog(void *ctx) {
  prog_run *r = ctx;
  if (hm_device_program_run(r->dev, r->prog, NULL, 0) != HM_OK) return 1;
  float probe;
  return r->sync && hm_device_buffer_read(r->dev, r->sync, 0, &probe, 4) != HM_OK;
}

static size_t q_row_bytes(int dtype, size_t k) {
  size_t bb = dtype == HM_ABI_DTYPE_Q8 ? 66 : dtype == HM_ABI_DTYPE_Q4 ? 34 : 26;
  return (k + 63) / 64 * bb;
}

#define CHECK(x)                                                   \
  do {                                                             \
    if ((x) != HM_OK) {                                            \
      fprintf(stderr, "bench_lowbit: %s: %s\n", #x, hm_last_error()); \
      exit(1);                                                     \
    }                                                              \
  } while (0)

/* Seconds per call and weight bytes of one configuration (dtype F32 or Qb). */
static double time_one(hm_device *dev, int dtype, size_t m, size_t n, size_t k, double seconds, size_t *wbytes) {
  float *w = filled(n * k, 7), *x = filled(m * k, 9);
  hm_abi_buffer *bw = NULL, *bx = NULL, *bc = NULL, *bwq = NULL, *bxq = NULL;
  CHECK(hm_device_buffer_alloc(dev, n * k * 4, &bw));
  CHECK(hm_device_buffer_alloc(dev, m * k * 4, &bx));
  CHECK(hm_device_buffer_alloc(dev, m * n * 4, &bc));
  CHECK(hm_device_buffer_write(dev, bw, 0, w, n * k * 4));
  CHECK(hm_device_buffer_write(dev, bx, 0, x, m * k * 4));
  prog_run r = {dev, NULL, NULL};
  if (dtype == HM_ABI_DTYPE_F32 || dtype == HM_ABI_DTYPE_BF16) {
    hm_abi_op op = hm_op_init(HM_ABI_OP_GEMM);
    op.dtype_in = (uint32_t)dtype;
    op.flags = HM_ABI_OP_FLAG_TRANS_B;
    op.dims[0] = m;
    op.dims[1] = n;
    op.dims[2] = k;
    op.params[0] = 1.0f;
    op.in[0].buffer = bx;
    op.in[1].buffer = bw;
    op.out[0].buffer = bc;
    CHECK(hm_device_program_create(dev, &op, 1, 0, &r.prog));
    *wbytes = n * k * 4;
  } else {
    size_t rb = q_row_bytes(dtype, k);
    CHECK(hm_device_buffer_alloc(dev, n * rb, &bwq));
    CHECK(hm_device_buffer_alloc(dev, m * rb, &bxq));
    /* Pack the weights once, as inference does. */
    hm_abi_op pack = hm_op_init(HM_ABI_OP_QUANTIZE);
    pack.dtype_in = HM_ABI_DTYPE_F32;
    pack.dtype_out = (uint32_t)dtype;
    pack.dims[0] = n;
    pack.dims[1] = k;
    pack.in[0].buffer = bw;
    pack.out[0].buffer = bwq;
    hm_abi_program *pp = NULL;
    CHECK(hm_device_program_create(dev, &pack, 1, 0, &pp));
    CHECK(hm_device_program_run(dev, pp, NULL, 0));
    hm_device_program_free(dev, pp);
    hm_abi_op ops[2] = {hm_op_init(HM_ABI_OP_QUANTIZE),
                        hm_op_init(dtype == HM_ABI_DTYPE_Q8   ? HM_ABI_OP_GEMM_Q8
                                   : dtype == HM_ABI_DTYPE_Q4 ? HM_ABI_OP_GEMM_Q4
                                                              : HM_ABI_OP_GEMM_Q3)};
    ops[0].dtype_in = HM_ABI_DTYPE_F32;
    ops[0].dtype_out = (uint32_t)dtype;
    ops[0].dims[0] = m;
    ops[0].dims[1] = k;
    ops[0].in[0].buffer = bx;
    ops[0].out[0].buffer = bxq;
    ops[1].dtype_in = (uint32_t)dtype;
    ops[1].dtype_acc = HM_ABI_DTYPE_I32;
    ops[1].dtype_out = HM_ABI_DTYPE_F32;
    ops[1].dims[0] = m;
    ops[1].dims[1] = n;
    ops[1].dims[2] = k;
    ops[1].in[0].buffer = bxq;
    ops[1].in[1].buffer = bwq;
    ops[1].out[0].buffer = bc;
    CHECK(hm_device_program_create(dev, ops, 2, 0, &r.prog));
    *wbytes = n * rb;
  }
  if (g_async) r.sync = bc;
  double t = best_time(run_prog, &r, seconds);
  hm_device_program_free(dev, r.prog);
  hm_device_buffer_free(dev, bw);
  hm_device_buffer_free(dev, bx);
  hm_device_buffer_free(dev, bc);
  hm_device_buffer_free(dev, bwq);
  hm_device_buffer_free(dev, bxq);
  free(w);
  free(x);
  return t;
}

/* OpenBLAS sgemv on the library the plugin loaded (same core type). */
typedef void (*sgemv_fn)(int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
typedef struct gemv_run {
  sgemv_fn sgemv;
  int n, k;
  float *w, *x, *y;
} gemv_run;

static int run_gemv(void *ctx) {
  gemv_run *g = ctx;
  g->sgemv(101, 111, g->n, g->k, 1.0f, g->w, g->k, g->x, 1, 0.0f, g->y, 1);
  return 0;
}

static double time_sgemv(unsigned threads, size_t n, size_t k, double seconds) {
  void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_NOLOAD);
  if (!h) return -1;
  void *s1 = dlsym(h, "cblas_sgemv"), *s2 = dlsym(h, "openblas_set_num_threads");
  if (!s1 || !s2) return -1;
  gemv_run g;
  void (*set_threads)(int);
  memcpy(&g.sgemv, &s1, sizeof s1);
  memcpy(&set_threads, &s2, sizeof s2);
  g.n = (int)n;
  g.k = (int)k;
  g.w = filled(n * k, 7);
  g.x = filled(k, 9);
  g.y = calloc(n, 4);
  set_threads((int)threads);
  double t = best_time(run_gemv, &g, seconds);
  set_threads(1); /* the plugin's setting */
  free(g.w);
  free(g.x);
  free(g.y);
  dlclose(h);
  return t;
}

static size_t parse_list(const char *s, size_t *out, size_t cap) {
  size_t n = 0;
  while (*s && n < cap) {
    out[n++] = strtoul(s, NULL, 10);
    s += strcspn(s, ",");
    if (*s == ',') s++;
  }
  return n;
}

int main(int argc, char **argv) {
  size_t n = 4096, k = 4096, batches[8] = {1, 64}, threads[8] = {1, 2}, nb = 2, nt = 2;
  double seconds = 1.0;
  const char *backend = "cpu";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--n") == 0) n = strtoul(argv[i + 1], NULL, 10);
    else if (strcmp(argv[i], "--k") == 0) k = strtoul(argv[i + 1], NULL, 10);
    else if (strcmp(argv[i], "--batches") == 0) nb = parse_list(argv[i + 1], batches, 8);
    else if (strcmp(argv[i], "--threads") == 0) nt = parse_list(argv[i + 1], threads, 8);
    else if (strcmp(argv[i], "--seconds") == 0) seconds = strtod(argv[i + 1], NULL);
    else if (strcmp(argv[i], "--backend") == 0) backend = argv[i + 1];
    else {
      fprintf(stderr, "usage: bench_lowbit [--n N] [--k K] [--batches 1,64] [--threads 1,2] [--seconds S] [--backend NAME]\n");
      return 2;
    }
  }
  static const struct {
    int dtype;
    const char *name;
  } kinds[] = {{HM_ABI_DTYPE_F32, "f32"}, {HM_ABI_DTYPE_BF16, "bf16 inputs"}, {HM_ABI_DTYPE_Q8, "int8"}, {HM_ABI_DTYPE_Q4, "int4"}, {HM_ABI_DTYPE_Q3, "int3"}};
  printf("weights %zu x %zu; best of >= %.1f s per row\n", n, k, seconds);
  printf("%-7s %-5s %-13s %10s %12s %9s %9s %10s\n", "threads", "batch", "precision", "time_ms", "weight_MB",
         "GB/s", "bits/w", "vs_f32");
  for (size_t ti = 0; ti < nt; ti++) {
    hm_device_options o = hm_device_options_default();
    o.threads = (unsigned)threads[ti];
    hm_device *dev = NULL;
    g_async = strcmp(backend, "cpu") != 0;
    if (g_async && ti > 0) break; /* threads apply to the CPU only */
    CHECK(hm_device_open(backend, &o, &dev));
    if (ti == 0) printf("device: %s\n", hm_device_desc(dev)->features);
    for (size_t bi = 0; bi < nb; bi++) {
      size_t m = batches[bi];
      double f32_time = 0;
      for (size_t c = 0; c < sizeof kinds / sizeof kinds[0]; c++) {
        size_t wb = 0;
        int dt = kinds[c].dtype, packed = dt != HM_ABI_DTYPE_F32 && dt != HM_ABI_DTYPE_BF16;
        uint32_t code = !packed ? HM_ABI_OP_GEMM : dt == HM_ABI_DTYPE_Q8 ? HM_ABI_OP_GEMM_Q8 : dt == HM_ABI_DTYPE_Q4 ? HM_ABI_OP_GEMM_Q4 : HM_ABI_OP_GEMM_Q3;
        if (!hm_device_supports(dev, code, (uint32_t)dt, HM_ABI_DTYPE_F32, 0)) {
          printf("%-7zu %-5zu %-13s not declared by this device\n", threads[ti], m, kinds[c].name);
          continue;
        }
        double t = time_one(dev, kinds[c].dtype, m, n, k, seconds, &wb);
        if (c == 0) f32_time = t;
        printf("%-7zu %-5zu %-13s %10.3f %12.2f %9.1f %9.2f %9.2fx\n", threads[ti], m, kinds[c].name, t * 1e3,
               (double)wb / 1e6, (double)wb / t / 1e9, (double)wb * 8.0 / ((double)n * (double)k), f32_time / t);
      }
      if (m == 1 && !g_async) {
        double t = time_sgemv((unsigned)threads[ti], n, k, seconds);
        if (t > 0)
          printf("%-7zu %-5zu %-13s %10.3f %12.2f %9.1f %9.2f %9.2fx\n", threads[ti], m, "f32 sgemv", t * 1e3,
                 (double)n * k * 4 / 1e6, (double)n * k * 4 / t / 1e9, 32.0, f32_time / t);
      }
    }
    hm_device_close(dev);
  }
  return 0;
}
