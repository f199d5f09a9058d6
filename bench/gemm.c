/*
 * bench/gemm: GFLOP/s of the CPU plugin's GEMM (square sizes 128-2048, 1 and
 * 2 threads) beside OpenBLAS called directly with the right core type, in the
 * same run. The direct figure comes from a child process of this program
 * that sets OPENBLAS_CORETYPE for itself only (never globally), loads
 * OpenBLAS and calls cblas_sgemm with OpenBLAS's own threading.
 *
 *   bench_gemm [--sizes 128,256,...] [--threads 1,2] [--core SkylakeX] [--seconds 0.5]
 */
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

/* Best time of repeated calls until |seconds| have passed (at least 3 calls). */
typedef int (*run_fn)(void *ctx);
static double best_time(run_fn fn, void *ctx, double seconds) {
  fn(ctx); /* warm-up */
  double best = 1e30, start = now();
  int reps = 0;
  while (reps < 3 || now() - start < seconds) {
    double t = now();
    if (fn(ctx)) return -1;
    t = now() - t;
    if (t < best) best = t;
    reps++;
  }
  return best;
}

/* ===== Harmonics ===== */

typedef struct hm_run {
  hm_device *dev;
  hm_abi_program *prog;
} hm_run;

static int run_hm(void *ctx) {
  hm_run *r = ctx;
  return hm_device_program_run(r->dev, r->prog, NULL, 0) != HM_OK;
}

static double gflops_harmonics(unsigned threads, size_t n, double seconds, char *path, size_t cap) {
  hm_device_options o = hm_device_options_default();
  o.threads = threads;
  hm_device *dev = NULL;
  if (hm_device_open("cpu", &o, &dev) != HM_OK) {
    fprintf(stderr, "bench_gemm: %s\n", hm_last_error());
    return -1;
  }
  const char *feat = hm_device_desc(dev)->features, *g = strstr(feat, "gemm=");
  if (g) snprintf(path, cap, "%.*s", (int)strcspn(g + 5, " "), g + 5);
  size_t bytes = n * n * sizeof(float);
  float *a = filled(n * n, 1), *b = filled(n * n, 2);
  hm_abi_buffer *ba = NULL, *bb = NULL, *bc = NULL;
  double result = -1;
  if (hm_device_buffer_alloc(dev, bytes, &ba) || hm_device_buffer_alloc(dev, bytes, &bb) ||
      hm_device_buffer_alloc(dev, bytes, &bc) || hm_device_buffer_write(dev, ba, 0, a, bytes) ||
      hm_device_buffer_write(dev, bb, 0, b, bytes))
    goto done;
  hm_abi_op op = hm_op_init(HM_ABI_OP_GEMM);
  op.dims[0] = op.dims[1] = op.dims[2] = n;
  op.params[0] = 1.0f;
  op.in[0].buffer = ba;
  op.in[1].buffer = bb;
  op.out[0].buffer = bc;
  hm_run r = {dev, NULL};
  if (hm_device_program_create(dev, &op, 1, 0, &r.prog) != HM_OK) goto done;
  double t = best_time(run_hm, &r, seconds);
  if (t > 0) result = 2.0 * (double)n * n * n / t / 1e9;
  hm_device_program_free(dev, r.prog);
done:
  if (result < 0) fprintf(stderr, "bench_gemm: %s\n", hm_last_error());
  hm_device_buffer_free(dev, ba);
  hm_device_buffer_free(dev, bb);
  hm_device_buffer_free(dev, bc);
  hm_device_close(dev);
  free(a);
  free(b);
  return result;
}

/* ===== OpenBLAS directly (child process) ===== */

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *,
                         int);
typedef struct blas_run {
  sgemm_fn sgemm;
  size_t n;
  float *a, *b, *c;
} blas_run;

static int run_blas(void *ctx) {
  blas_run *r = ctx;
  int n = (int)r->n;
  r->sgemm(101, 111, 111, n, n, n, 1.0f, r->a, n, r->b, n, 0.0f, r->c, n);
  return 0;
}

static int direct_main(unsigned threads, size_t n, double seconds) {
  void *h = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    fprintf(stderr, "bench_gemm: %s\n", dlerror());
    return 1;
  }
  blas_run r;
  void (*set_threads)(int);
  char *(*corename)(void);
  void *s1 = dlsym(h, "cblas_sgemm"), *s2 = dlsym(h, "openblas_set_num_threads"), *s3 = dlsym(h, "openblas_get_corename");
  memcpy(&r.sgemm, &s1, sizeof s1);
  memcpy(&set_threads, &s2, sizeof s2);
  memcpy(&corename, &s3, sizeof s3);
  set_threads((int)threads);
  r.n = n;
  r.a = filled(n * n, 1);
  r.b = filled(n * n, 2);
  r.c = calloc(n * n, sizeof(float));
  double t = best_time(run_blas, &r, seconds);
  printf("%s %.3f\n", corename(), 2.0 * (double)n * n * n / t / 1e9);
  return 0;
}

static double gflops_direct(const char *self, const char *core, unsigned threads, size_t n, double seconds,
                            char *core_out, size_t cap) {
  int fds[2];
  if (pipe(fds)) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    if (core) setenv("OPENBLAS_CORETYPE", core, 1); /* this child only */
    char t[16], s[32], sec[32];
    snprintf(t, sizeof t, "%u", threads);
    snprintf(s, sizeof s, "%zu", n);
    snprintf(sec, sizeof sec, "%g", seconds);
    execl(self, self, "--direct", t, s, sec, (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  char buf[256] = "";
  ssize_t got = read(fds[0], buf, sizeof buf - 1);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (got <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  buf[got] = '\0';
  double g = -1;
  char name[64] = "";
  if (sscanf(buf, "%63s %lf", name, &g) != 2) return -1;
  snprintf(core_out, cap, "%s", name);
  return g;
}

/* The same rule the CPU plugin uses, read from /proc/cpuinfo flags. */
static const char *best_core(void) {
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return NULL;
  char line[8192];
  const char *core = NULL;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "flags", 5) != 0) continue;
    int f512 = strstr(line, " avx512f") && strstr(line, " avx512bw") && strstr(line, " avx512vl") &&
               strstr(line, " avx512dq");
    if (f512) core = strstr(line, " avx512_bf16") ? "Cooperlake" : "SkylakeX";
    else if (strstr(line, " avx2") && strstr(line, " fma")) core = "Haswell";
    break;
  }
  fclose(f);
  return core;
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
  if (argc == 5 && strcmp(argv[1], "--direct") == 0)
    return direct_main((unsigned)atoi(argv[2]), strtoul(argv[3], NULL, 10), atof(argv[4]));
  size_t sizes[16] = {128, 256, 512, 1024, 2048}, n_sizes = 5;
  size_t threads[8] = {1, 2}, n_threads = 2;
  const char *core = best_core();
  double seconds = 0.5;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--sizes") == 0 && i + 1 < argc) n_sizes = parse_list(argv[++i], sizes, 16);
    else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) n_threads = parse_list(argv[++i], threads, 8);
    else if (strcmp(argv[i], "--core") == 0 && i + 1 < argc) core = argv[++i];
    else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) seconds = atof(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_gemm [--sizes 128,256] [--threads 1,2] [--core NAME] [--seconds S]\n");
      return 2;
    }
  }
  const char *env_core = getenv("OPENBLAS_CORETYPE");
  printf("# bench_gemm: C = A*B, square f32, best of repeated runs (%.1f s each)\n", seconds);
  printf("# OPENBLAS_CORETYPE in this environment: %s (the plugin chooses its own)\n", env_core ? env_core : "unset");
  printf("# 'openblas' = cblas_sgemm in a child with OPENBLAS_CORETYPE=%s; 'as-env' = the same child with the\n"
         "# environment left as it is (what a program linked to OpenBLAS gets); ratio = harmonics / openblas\n",
         core ? core : "(unset)");
  printf("%6s %7s %10s %-28s %10s %-11s %10s %-11s %6s\n", "size", "threads", "harmonics", "plugin gemm path",
         "openblas", "core", "as-env", "core", "ratio");
  for (size_t t = 0; t < n_threads; t++)
    for (size_t s = 0; s < n_sizes; s++) {
      char path[128] = "?", got_core[64] = "?";
      double h = gflops_harmonics((unsigned)threads[t], sizes[s], seconds, path, sizeof path);
      double d = gflops_direct(argv[0], core, (unsigned)threads[t], sizes[s], seconds, got_core, sizeof got_core);
      char env_core_got[64] = "?";
      double e = gflops_direct(argv[0], NULL, (unsigned)threads[t], sizes[s], seconds, env_core_got,
                               sizeof env_core_got);
      printf("%6zu %7zu %10.1f %-28s %10.1f %-11s %10.1f %-11s %6.2f\n", sizes[s], threads[t], h, path, d, got_core,
             e, env_core_got, d > 0 && h > 0 ? h / d : NAN);
      fflush(stdout);
    }
  return 0;
}
