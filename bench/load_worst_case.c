/*
 * Worst-case load times of every file format near its caps: a DSL model and
 * its .hgr with as many connections as the node cap allows between layers
 * (every layer feeds every later one), and weights files (.hnwt, safetensors)
 * with many small tensors. A loader linear in its input keeps each row's
 * time proportional to its size; a quadratic one shows up as a 4x step per
 * doubling.
 *
 *   bench_load_worst_case [--max-layers N (600)] [--max-tensors N (262144)]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harmonics/harmonics.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static long file_size(const char *path) {
  FILE *f = fopen(path, "rb");
  long size = 0;
  if (f) {
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fclose(f);
  }
  return size;
}

/* producer x {4}; layers l0..l(n-1) {4}; x feeds l0, every l_i feeds every l_j, j > i. */
static char *dense_dag(size_t layers, size_t *edges, size_t *len) {
  size_t cap = 64 + layers * 32 + layers * layers * 24, n = 0;
  char *t = malloc(cap);
  if (!t) return NULL;
  n += (size_t)snprintf(t + n, cap - n, "harmonic dag {\n  producer x {4};\n");
  for (size_t i = 0; i < layers; i++) n += (size_t)snprintf(t + n, cap - n, "  layer l%zu {4};\n", i);
  n += (size_t)snprintf(t + n, cap - n, "  cycle {\n    x -> l0;\n");
  *edges = 1;
  for (size_t i = 0; i < layers; i++)
    for (size_t j = i + 1; j < layers; j++) {
      n += (size_t)snprintf(t + n, cap - n, "    l%zu -> l%zu;\n", i, j);
      ++*edges;
    }
  n += (size_t)snprintf(t + n, cap - n, "  }\n}\n");
  *len = n;
  return t;
}

static void bench_graphs(size_t max_layers, const char *dir) {
  printf("%-12s %10s %10s %12s %12s\n", "format", "layers", "edges", "bytes", "load s");
  for (size_t layers = 75; layers <= max_layers; layers *= 2) {
    size_t edges = 0, len = 0;
    char *text = dense_dag(layers, &edges, &len);
    if (!text) return;
    hm_graph *g = NULL;
    double t0 = now();
    hm_status st = hm_graph_parse(text, len, "dag.hmx", &g);
    double t_dsl = now() - t0;
    free(text);
    if (st != HM_OK) {
      printf("dsl: %s\n", hm_last_error());
      return;
    }
    printf("%-12s %10zu %10zu %12zu %12.4f\n", "dsl", layers, edges, len, t_dsl);
    char path[512];
    snprintf(path, sizeof path, "%s/dag.hgr", dir);
    if (hm_save_graph_file(g, path) != HM_OK) printf("save .hgr: %s\n", hm_last_error());
    hm_graph_free(g);
    hm_graph *h = NULL;
    t0 = now();
    st = hm_load_graph_file(path, &h);
    double t_hgr = now() - t0;
    long size = file_size(path);
    if (st != HM_OK) printf("load .hgr: %s\n", hm_last_error());
    else printf("%-12s %10zu %10zu %12ld %12.4f\n", ".hgr", layers, edges, size, t_hgr);
    hm_graph_free(h);
    unlink(path);
  }
}

static void bench_weights(size_t max_tensors, const char *dir) {
  printf("\n%-12s %10s %12s %12s %12s\n", "format", "tensors", "bytes", "build s", "load s");
  for (size_t n = 16384; n <= max_tensors; n *= 2) {
    hm_weights *w = NULL;
    if (hm_weights_create(&w) != HM_OK) return;
    uint64_t shape[1] = {1};
    float v = 1.0f;
    double t0 = now();
    for (size_t i = 0; i < n; i++) {
      char name[32];
      snprintf(name, sizeof name, "t%zu", i);
      if (hm_weights_set(w, name, HM_ABI_DTYPE_F32, 1, shape, &v) != HM_OK) {
        printf("set: %s\n", hm_last_error());
        hm_weights_free(w);
        return;
      }
    }
    double t_build = now() - t0;
    const char *kinds[2] = {".hnwt", "safetensors"};
    for (int k = 0; k < 2; k++) {
      if (k == 1 && n > 65536) continue; /* the safetensors cap */
      char path[512];
      snprintf(path, sizeof path, "%s/w%s", dir, k ? ".safetensors" : ".hnwt");
      hm_status st = k ? hm_weights_save_safetensors(w, path) : hm_save_weights_file(w, path);
      if (st != HM_OK) {
        printf("save %s: %s\n", kinds[k], hm_last_error());
        continue;
      }
      hm_weights *r = NULL;
      t0 = now();
      st = k ? hm_weights_load_safetensors(path, &r) : hm_load_weights_file(path, &r);
      double t_load = now() - t0;
      long size = file_size(path);
      if (st != HM_OK) printf("load %s: %s\n", kinds[k], hm_last_error());
      else printf("%-12s %10zu %12ld %12.4f %12.4f\n", kinds[k], n, size, t_build, t_load);
      hm_weights_free(r);
      unlink(path);
    }
    hm_weights_free(w);
  }
}

int main(int argc, char **argv) {
  size_t max_layers = 600, max_tensors = 262144;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--max-layers")) max_layers = strtoul(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--max-tensors")) max_tensors = strtoul(argv[i + 1], NULL, 10);
    else {
      fprintf(stderr, "usage: bench_load_worst_case [--max-layers N] [--max-tensors N]\n");
      return 2;
    }
  }
  char dir[] = "/tmp/hm_bench_load_XXXXXX";
  if (!mkdtemp(dir)) return 1;
  bench_graphs(max_layers, dir);
  bench_weights(max_tensors, dir);
  rmdir(dir);
  return 0;
}
