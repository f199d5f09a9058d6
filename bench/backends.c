/*
 * bench/backends: every loaded backend in one run — GEMM GFLOP/s (square
 * f32, timed to completion: a 4-byte read after each run waits for the
 * device) and training samples/s of the Fashion-MNIST example on a subset.
 * lavapipe (Vulkan) and PoCL (OpenCL) emulate GPUs on the CPU here: their
 * figures are for catching regressions, not for comparison with real GPUs.
 *
 *   bench_backends [--sizes 128,256,512] [--train-samples 4000] [--seconds 0.5] [--model examples/fashion_mnist.hmx]
 *                  [--backends cpu,vulkan,opencl,cuda] [--packed MxNxK|off]
 *
 * --packed (default 64x1024x1024) also times the packed integer matmuls
 * GEMM_Q8/Q4/Q3 (abi/QUANT.md) on that shape, operands packed on the device
 * by QUANTIZE, in GOP/s (2·M·N·K per run: each multiply-add counts two, as
 * for f32).
 *
 * Each backend after the CPU also gets a line of its figures divided by the
 * CPU plugin's from the same run (when the CPU ran first).
 */
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

/* Runs |p| then reads 4 bytes of |c| (waiting for the device), repeatedly
 * for |seconds| (at least 3 times); the best time, or -1. */
static double best_run(hm_device *dev, hm_abi_program *p, hm_abi_buffer *c, double seconds) {
  float probe;
  if (hm_device_program_run(dev, p, NULL, 0) || hm_device_buffer_read(dev, c, 0, &probe, 4)) return -1; /* JIT */
  double best = 1e30, start = now();
  for (int reps = 0; reps < 3 || now() - start < seconds; reps++) {
    double t = now();
    if (hm_device_program_run(dev, p, NULL, 0) || hm_device_buffer_read(dev, c, 0, &probe, 4)) return -1;
    t = now() - t;
    if (t < best) best = t;
  }
  return best;
}

/* G(FL)OP/s of the matmul |op| (2·m·n·k per run, m, n, k its dims) on
 * inputs |a|, |b| and output |c|, run alone in a program; -1 on failure. */
static double matmul_rate(hm_device *dev, hm_abi_op *op, hm_abi_buffer *a, hm_abi_buffer *b, hm_abi_buffer *c,
                          double seconds) {
  op->in[0].buffer = a;
  op->in[1].buffer = b;
  op->out[0].buffer = c;
  hm_abi_program *p = NULL;
  double t = hm_device_program_create(dev, op, 1, 0, &p) ? -1 : best_run(dev, p, c, seconds);
  hm_device_program_free(dev, p);
  return t > 0 ? 2.0 * (double)op->dims[0] * (double)op->dims[1] * (double)op->dims[2] / t / 1e9 : -1;
}

static double gemm_gflops(hm_device *dev, size_t n, double seconds) {
  size_t bytes = n * n * 4;
  float *a = malloc(bytes);
  for (size_t i = 0; i < n * n; i++) a[i] = (float)(i % 97) / 97.0f - 0.5f;
  hm_abi_buffer *ba = NULL, *bb = NULL, *bc = NULL;
  double result = -1;
  if (hm_device_buffer_alloc(dev, bytes, &ba) || hm_device_buffer_alloc(dev, bytes, &bb) ||
      hm_device_buffer_alloc(dev, bytes, &bc) || hm_device_buffer_write(dev, ba, 0, a, bytes) ||
      hm_device_buffer_write(dev, bb, 0, a, bytes))
    goto done;
  hm_abi_op op = hm_op_init(HM_ABI_OP_GEMM);
  op.dims[0] = op.dims[1] = op.dims[2] = n;
  op.params[0] = 1.0f;
  result = matmul_rate(dev, &op, ba, bb, bc, seconds);
done:
  if (result < 0) fprintf(stderr, "bench_backends: gemm %zu: %s\n", n, hm_last_error());
  hm_device_buffer_free(dev, ba);
  hm_device_buffer_free(dev, bb);
  hm_device_buffer_free(dev, bc);
  free(a);
  return result;
}

/* GOP/s of an m x n x k GEMM_Qb (C = A . Bᵀ on packed rows) at packed
 * dtype |q|; the operands are quantized on the device from values in
 * [-1, 1). */
static double packed_gops(hm_device *dev, uint32_t code, uint32_t q, const size_t mnk[3], double seconds) {
  size_t m = mnk[0], n = mnk[1], k = mnk[2], rows = m > n ? m : n;
  size_t block = q == HM_ABI_DTYPE_Q8 ? HM_ABI_Q8_BLOCK_BYTES : q == HM_ABI_DTYPE_Q4 ? HM_ABI_Q4_BLOCK_BYTES
                                                                                      : HM_ABI_Q3_BLOCK_BYTES;
  size_t row_bytes = (k + 63) / 64 * block;
  float *x = malloc(rows * k * sizeof *x);
  for (size_t i = 0; x && i < rows * k; i++) x[i] = (float)((i * 7919) % 211) / 105.5f - 1.0f;
  hm_abi_buffer *bx = NULL, *qa = NULL, *qb = NULL, *bc = NULL;
  hm_abi_program *pq = NULL;
  double result = -1;
  if (!x || hm_device_buffer_alloc(dev, rows * k * 4, &bx) || hm_device_buffer_alloc(dev, m * row_bytes + 4, &qa) ||
      hm_device_buffer_alloc(dev, n * row_bytes + 4, &qb) || hm_device_buffer_alloc(dev, m * n * 4, &bc) ||
      hm_device_buffer_write(dev, bx, 0, x, rows * k * 4))
    goto done;
  hm_abi_op ops[2];
  for (int i = 0; i < 2; i++) {
    ops[i] = hm_op_init(HM_ABI_OP_QUANTIZE);
    ops[i].dtype_in = HM_ABI_DTYPE_F32;
    ops[i].dtype_out = q;
    ops[i].dims[0] = i ? n : m;
    ops[i].dims[1] = k;
    ops[i].in[0].buffer = bx;
    ops[i].out[0].buffer = i ? qb : qa;
  }
  if (hm_device_program_create(dev, ops, 2, 0, &pq) || hm_device_program_run(dev, pq, NULL, 0)) goto done;
  hm_abi_op op = hm_op_init(code);
  op.dtype_in = q;
  op.dtype_acc = HM_ABI_DTYPE_I32;
  op.dtype_out = HM_ABI_DTYPE_F32;
  op.dims[0] = m, op.dims[1] = n, op.dims[2] = k;
  result = matmul_rate(dev, &op, qa, qb, bc, seconds);
done:
  if (result < 0) fprintf(stderr, "bench_backends: packed gemm: %s\n", hm_last_error());
  hm_device_program_free(dev, pq);
  hm_abi_buffer *bufs[] = {bx, qa, qb, bc};
  for (int i = 0; i < 4; i++) hm_device_buffer_free(dev, bufs[i]);
  free(x);
  return result;
}

/* One epoch of the example on |samples| training images; samples/s of the
 * update steps and the held-out accuracy. */
static int train(const char *backend, const char *model, size_t samples, double *sps, float *acc) {
  const char *dir = getenv("HARMONICS_FASHION_MNIST_DIR");
  char xi[512], yi[512], xt[512], yt[512];
  if (!dir) dir = "/usr/share/datasets/fashion-mnist";
  snprintf(xi, sizeof xi, "%s/train-images-idx3-ubyte.gz", dir);
  snprintf(yi, sizeof yi, "%s/train-labels-idx1-ubyte.gz", dir);
  snprintf(xt, sizeof xt, "%s/t10k-images-idx3-ubyte.gz", dir);
  snprintf(yt, sizeof yt, "%s/t10k-labels-idx1-ubyte.gz", dir);
  hm_graph *g = NULL;
  hm_producer *p[4] = {0}, *lim[4] = {0};
  const char *paths[4] = {xi, yi, xt, yt};
  int rc = hm_graph_load_dsl(model, &g) != HM_OK;
  for (int i = 0; i < 4 && !rc; i++)
    rc = hm_producer_open_idx(paths[i], &p[i]) != HM_OK || hm_producer_limit(p[i], i < 2 ? samples : 2000, &lim[i]) != HM_OK;
  if (!rc)
    rc = hm_graph_bind_producer(g, "pixels", lim[0]) || hm_graph_bind_producer(g, "label", lim[1]) ||
         hm_graph_bind_eval(g, "pixels", lim[2]) || hm_graph_bind_eval(g, "label", lim[3]);
  hm_cycle_state *st = NULL;
  if (!rc) {
    hm_fit_options o = hm_fit_options_default();
    o.backend = backend;
    o.optimizer = HM_OPTIMIZER_ADAM;
    o.learning_rate = 0.001f;
    o.batch_size = 64;
    rc = hm_graph_fit(g, 1, NULL, &o, &st) != HM_OK;
  }
  if (rc) {
    fprintf(stderr, "bench_backends: training on %s: %s\n", backend, hm_last_error());
  } else {
    *sps = (double)hm_cycle_state_samples(st) / hm_cycle_state_train_seconds(st);
    *acc = hm_cycle_state_eval_accuracy(st);
  }
  hm_cycle_state_free(st);
  hm_graph_free(g);
  for (int i = 0; i < 4; i++) {
    hm_producer_free(lim[i]);
    hm_producer_free(p[i]);
  }
  return rc;
}

/* |x| as a percentage of |base| in a column |width| wide, or "-". */
static void print_ratio(double x, double base, int width) {
  if (x > 0 && base > 0) printf(" %*.1f%%", width - 1, 100.0 * x / base);
  else printf(" %*s", width, "-");
}

int main(int argc, char **argv) {
  size_t sizes[8] = {128, 256, 512}, n_sizes = 3, samples = 4000;
  double seconds = 0.5;
  const char *model = HM_EXAMPLES_DIR "/fashion_mnist.hmx"; /* from any directory */
  const char *only = "cpu,vulkan,opencl,cuda";
  size_t packed[3] = {64, 1024, 1024};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--sizes")) {
      n_sizes = 0;
      for (char *s = argv[i + 1]; *s && n_sizes < 8;) {
        sizes[n_sizes++] = strtoul(s, &s, 10);
        if (*s == ',') s++;
      }
    } else if (!strcmp(argv[i], "--train-samples")) samples = strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--seconds")) seconds = strtod(argv[i + 1], NULL);
    else if (!strcmp(argv[i], "--model")) model = argv[i + 1];
    else if (!strcmp(argv[i], "--backends")) only = argv[i + 1];
    else if (!strcmp(argv[i], "--packed") && !strcmp(argv[i + 1], "off")) packed[0] = 0;
    else if (!strcmp(argv[i], "--packed") &&
             sscanf(argv[i + 1], "%zux%zux%zu", &packed[0], &packed[1], &packed[2]) == 3 && packed[0] &&
             packed[1] && packed[2]) {
    } else {
      fprintf(stderr, "usage: bench_backends [--sizes 128,256,512] [--train-samples N] [--seconds S] [--model M] "
                      "[--backends cpu,vulkan,...] [--packed MxNxK|off]\n");
      return 2;
    }
  }
  static const char *backends[] = {"cpu", "vulkan", "opencl", "cuda"};
  printf("%-8s %-44s", "backend", "device");
  for (size_t s = 0; s < n_sizes; s++) printf(" gemm%-5zu", sizes[s]);
  if (packed[0]) printf(" %9s %9s %9s", "q8", "q4", "q3");
  printf(" %12s %9s\n", "train_smp/s", "accuracy");
  /* Figures per backend: GEMM per size, training at [8], packed at [9..11]. */
  double cpu[12] = {0};
  static const uint32_t qcode[3] = {HM_ABI_OP_GEMM_Q8, HM_ABI_OP_GEMM_Q4, HM_ABI_OP_GEMM_Q3};
  static const uint32_t qtype[3] = {HM_ABI_DTYPE_Q8, HM_ABI_DTYPE_Q4, HM_ABI_DTYPE_Q3};
  for (size_t b = 0; b < sizeof backends / sizeof backends[0]; b++) {
    size_t len = strlen(backends[b]);
    const char *at = strstr(only, backends[b]);
    if (!at || (at != only && at[-1] != ',') || (at[len] && at[len] != ',')) continue;
    double fig[12] = {0};
    hm_device *dev = NULL;
    if (hm_device_open(backends[b], NULL, &dev) != HM_OK) {
      printf("%-8s not available: %s\n", backends[b], hm_last_error());
      continue;
    }
    printf("%-8s %-44.44s", backends[b], hm_device_desc(dev)->name);
    fflush(stdout);
    for (size_t s = 0; s < n_sizes; s++) {
      printf(" %9.2f", fig[s] = gemm_gflops(dev, sizes[s], seconds));
      fflush(stdout);
    }
    for (int q = 0; q < 3 && packed[0]; q++) {
      printf(" %9.2f", fig[9 + q] = packed_gops(dev, qcode[q], qtype[q], packed, seconds));
      fflush(stdout);
    }
    hm_device_close(dev);
    double sps = 0;
    float acc = 0;
    if (samples && train(backends[b], model, samples, &sps, &acc) == 0) printf(" %12.0f %8.2f%%\n", sps, 100.0 * acc);
    else printf(" %12s %9s\n", "-", "-");
    fig[8] = sps;
    if (b == 0) memcpy(cpu, fig, sizeof cpu);
    else if (cpu[8] > 0 || cpu[0] > 0) { /* the ratio line */
      printf("%-8s %-44s", "", "  vs cpu");
      for (size_t s = 0; s < n_sizes; s++) print_ratio(fig[s], cpu[s], 9);
      for (int q = 0; q < 3 && packed[0]; q++) print_ratio(fig[9 + q], cpu[9 + q], 9);
      print_ratio(fig[8], cpu[8], 12);
      printf("\n");
    }
  }
  printf("GEMM figures are GFLOP/s (f32, square); training: 1 epoch, %zu samples, batch 64, Adam.\n", samples);
  if (packed[0])
    printf("q8/q4/q3: GEMM_Q8/Q4/Q3 %zux%zux%zu on packed rows, GOP/s.\n", packed[0], packed[1], packed[2]);
  return 0;
}
