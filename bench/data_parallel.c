/*
 * Data-parallel scaling: one fit of an MLP on random data at a global batch
 * of 1024, under mpirun; rank 0 prints samples/s and the time the all-reduce
 * took per update (measured around the collectives' all-reduce).
 *   mpirun -np N bench_data_parallel WIDTHS THREADS [SAMPLES] [EPOCHS]
 *   WIDTHS: "784-128-10" or "784-1024-1024-10"
 * bench/data_parallel.sh runs the comparison of the issue: -np 1 with 2
 * threads against -np 2 with 1 thread each, for both models.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harmonics/harmonics.h"
#include "harmonics/mpi.h"

static const hm_collectives *inner;
static double reduce_seconds;
static size_t reduces;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static hm_status timed_allreduce(void *self, float *data, size_t n) {
  (void)self;
  double t0 = now();
  hm_status st = inner->allreduce_sum_f32(inner->self, data, n);
  reduce_seconds += now() - t0;
  reduces++;
  return st;
}
static hm_status pass_broadcast(void *self, void *data, size_t bytes, int root) {
  (void)self;
  return inner->broadcast(inner->self, data, bytes, root);
}
static hm_status pass_barrier(void *self) {
  (void)self;
  return inner->barrier(inner->self);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: mpirun -np N bench_data_parallel WIDTHS THREADS [SAMPLES] [EPOCHS]\n");
    return 2;
  }
  size_t widths[8], n_w = 0;
  for (char *p = argv[1]; *p && n_w < 8;) {
    widths[n_w++] = strtoul(p, &p, 10);
    if (*p == '-') p++;
  }
  unsigned threads = (unsigned)atoi(argv[2]);
  size_t samples = argc > 3 ? strtoul(argv[3], NULL, 10) : 16384, epochs = argc > 4 ? strtoul(argv[4], NULL, 10) : 2;
  hm_collectives *mpi = NULL;
  if (n_w < 2 || hm_mpi_open(NULL, &mpi) != HM_OK) {
    fprintf(stderr, "bench_data_parallel: %s\n", n_w < 2 ? "WIDTHS needs two or more numbers" : hm_last_error());
    return 1;
  }
  inner = mpi;
  hm_collectives timed = *mpi;
  timed.allreduce_sum_f32 = timed_allreduce;
  timed.broadcast = pass_broadcast;
  timed.barrier = pass_barrier;

  char text[1024];
  int at = snprintf(text, sizeof text, "producer x {%zu}; producer y {%zu};", widths[0], widths[n_w - 1]);
  for (size_t i = 1; i < n_w; i++) at += snprintf(text + at, sizeof text - at, " layer l%zu {%zu};", i, widths[i]);
  at += snprintf(text + at, sizeof text - at, " cycle { x");
  for (size_t i = 1; i < n_w; i++) at += snprintf(text + at, sizeof text - at, " %s l%zu", i + 1 < n_w ? "-(relu)->" : "->", i);
  snprintf(text + at, sizeof text - at, "; l%zu <-(cross_entropy)- y; }", n_w - 1);

  float *x = malloc(samples * widths[0] * sizeof *x);
  int32_t *y = malloc(samples * sizeof *y);
  unsigned long long z = 42;
  for (size_t i = 0; x && i < samples * widths[0]; i++) {
    z = z * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = (float)((z >> 40) & 0xffff) / 65536.0f;
  }
  for (size_t i = 0; y && i < samples; i++) y[i] = (int32_t)(i % widths[n_w - 1]);
  hm_graph *g = NULL;
  hm_producer *px = NULL, *py = NULL;
  hm_cycle_state *st = NULL;
  hm_fit_options o = hm_fit_options_default();
  o.batch_size = 1024;
  o.threads = threads;
  o.optimizer = HM_OPTIMIZER_ADAM;
  o.learning_rate = 0.001f;
  o.collectives = &timed;
  hm_status s = hm_graph_parse(text, strlen(text), "bench.hmx", &g);
  if (s == HM_OK) s = hm_producer_from_floats(x, samples, widths[0], &px);
  if (s == HM_OK) s = hm_producer_from_labels(y, samples, widths[n_w - 1], &py);
  if (s == HM_OK) s = hm_graph_bind_producer(g, "x", px);
  if (s == HM_OK) s = hm_graph_bind_producer(g, "y", py);
  double t0 = now();
  if (s == HM_OK) s = hm_graph_fit(g, epochs, NULL, &o, &st);
  double wall = now() - t0;
  if (s != HM_OK) fprintf(stderr, "rank %d: %s\n", mpi->rank, hm_last_error());
  else if (mpi->rank == 0)
    printf("%-18s ranks %d threads %u: %8.0f samples/s, %zu updates, all-reduce %.2f ms per update (%.1f%% of the time)\n",
           argv[1], mpi->size, threads, (double)(samples * epochs) / wall, hm_cycle_state_step(st),
           1e3 * reduce_seconds / (double)(reduces ? reduces : 1), 100.0 * reduce_seconds / wall);
  hm_cycle_state_free(st);
  hm_graph_free(g);
  hm_producer_free(px);
  hm_producer_free(py);
  free(x);
  free(y);
  hm_mpi_close(mpi);
  return s == HM_OK ? 0 : 1;
}
