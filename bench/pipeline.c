/*
 * Pipeline efficiency (docs/distributed.md "Pipelines"): the wide MLP
 * 784-1024-1024-10 trained on synthetic data at updates of 1024 rows, in
 * one process on 1 and 2 threads, and as a 2-stage pipeline (cut after h1,
 * one thread per stage, in one process) with M = 1, 4, 8, 16 micro-batches.
 * Prints samples/s (the best of 3 rounds, each round running every
 * configuration once, so the machine's drift touches them alike), the
 * ratio to one process on one thread, each stage's share of time spent
 * waiting (the measured bubble) next to GPipe's (K-1)/(M+K-1), and the
 * one-process run with the pipeline's exact arithmetic (batch 1024/M,
 * accumulate M) for reference.
 *   bench_pipeline [--samples N] [--epochs E] [--runs R] [--cut LAYER] [--stage-threads A,B]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harmonics/harmonics.h"

static const char model[] = "producer x {784}; producer y {10}; layer h1 {1024}; layer h2 {1024}; layer out;"
                            "cycle { x -(relu)-> h1 -(relu)-> h2 -> out; out <-(cross_entropy)- y; }";

typedef struct result {
  double samples_per_s;
  double wait[8]; /* per stage: waiting / training time */
  size_t stages;
} result;

static size_t n_samples = 8192, epochs = 2, runs = 3;
static const char *cut_after = "h1";
static unsigned stage_threads[2] = {1, 1};
static float *xs;
static int32_t *ys;

static void die(const char *what) {
  fprintf(stderr, "bench_pipeline: %s: %s\n", what, hm_last_error());
  exit(1);
}

static hm_graph *graph(hm_producer **x, hm_producer **y) {
  hm_graph *g = NULL;
  if (hm_graph_parse(model, strlen(model), "bench.hmx", &g) || hm_producer_from_floats(xs, n_samples, 784, x) ||
      hm_producer_from_labels(ys, n_samples, 10, y) || hm_graph_bind_producer(g, "x", *x) ||
      hm_graph_bind_producer(g, "y", *y))
    die("setting up");
  return g;
}

static hm_fit_options options(size_t micro, unsigned threads) {
  hm_fit_options o = hm_fit_options_default();
  o.optimizer = HM_OPTIMIZER_ADAM;
  o.learning_rate = 0.001f;
  o.batch_size = 1024 / micro;
  o.accumulate_steps = micro;
  o.seed = 1;
  o.threads = threads;
  o.backend = "cpu";
  return o;
}

/* One process: |threads| threads, updates of 1024 rows in |micro| micro-batches. */
/* Keeps the faster of |best| and |r|. */
static void keep_best(result *best, result r) {
  if (r.samples_per_s > best->samples_per_s) *best = r;
}

static result run_single(unsigned threads, size_t micro) {
  result best = {0, {0}, 1};
  {
    hm_producer *x, *y;
    hm_graph *g = graph(&x, &y);
    hm_fit_options o = options(micro, threads);
    hm_cycle_state *st = NULL;
    if (hm_graph_fit(g, epochs, NULL, &o, &st)) die("fit");
    double sps = (double)hm_cycle_state_samples(st) / hm_cycle_state_train_seconds(st);
    if (sps > best.samples_per_s) best.samples_per_s = sps;
    hm_cycle_state_free(st);
    hm_graph_free(g);
    hm_producer_free(x);
    hm_producer_free(y);
  }
  return best;
}

/* Two stages on threads, one CPU thread each. */
static result run_pipeline(size_t micro) {
  result best = {0, {0}, 2};
  {
    hm_producer *x, *y;
    hm_graph *g = graph(&x, &y);
    hm_partition *p = NULL;
    const char *cuts[1] = {cut_after};
    if (hm_graph_partition_by_layer(g, cuts, 1, &p)) die("partition");
    hm_fit_options o = options(micro, 1);
    hm_cycle_state *states[2] = {NULL, NULL};
    hm_partition_run_options run = hm_partition_run_options_default();
    run.stage_threads = stage_threads;
    if (hm_partition_fit(p, epochs, NULL, &o, &run, states)) die("pipeline fit");
    double slowest = 0;
    for (size_t k = 0; k < 2; k++)
      if (hm_cycle_state_train_seconds(states[k]) > slowest) slowest = hm_cycle_state_train_seconds(states[k]);
    double sps = (double)hm_cycle_state_samples(states[1]) / slowest;
    if (sps > best.samples_per_s) {
      best.samples_per_s = sps;
      for (size_t k = 0; k < 2; k++)
        best.wait[k] = hm_cycle_state_wait_seconds(states[k]) / hm_cycle_state_train_seconds(states[k]);
    }
    for (size_t k = 0; k < 2; k++) hm_cycle_state_free(states[k]);
    hm_partition_free(p);
    hm_graph_free(g);
    hm_producer_free(x);
    hm_producer_free(y);
  }
  return best;
}

int main(int argc, char **argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--samples")) n_samples = (size_t)atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--epochs")) epochs = (size_t)atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--runs")) runs = (size_t)atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--cut")) cut_after = argv[i + 1];
    else if (!strcmp(argv[i], "--stage-threads") && sscanf(argv[i + 1], "%u,%u", &stage_threads[0], &stage_threads[1]) == 2) {
    }
    else {
      fprintf(stderr, "usage: bench_pipeline [--samples N] [--epochs E] [--runs R] [--cut LAYER] [--stage-threads A,B]\n");
      return 2;
    }
  }
  if (n_samples < 1024 || !epochs || !runs) {
    fprintf(stderr, "bench_pipeline: at least 1024 samples, 1 epoch and 1 run\n");
    return 2;
  }
  xs = malloc(n_samples * 784 * sizeof *xs);
  ys = malloc(n_samples * sizeof *ys);
  if (!xs || !ys) return 1;
  unsigned long long s = 42;
  for (size_t i = 0; i < n_samples * 784; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    xs[i] = (float)((s >> 40) & 0xffff) / 65536.0f;
  }
  for (size_t i = 0; i < n_samples; i++) ys[i] = (int32_t)((i * 7 + (size_t)(xs[i * 784] * 10)) % 10);
  printf("784-1024-1024-10, updates of 1024 rows, Adam, %zu samples x %zu epochs, best of %zu rounds\n", n_samples,
         epochs, runs);
  /* Every configuration once per round, rounds repeated: the machine's
   * drift then touches them all alike; each keeps its best round. */
  static const size_t ms[] = {1, 4, 8, 16};
  enum { NM = sizeof ms / sizeof ms[0] };
  result one = {0, {0}, 1}, two = {0, {0}, 1}, refs[NM], pipes[NM];
  memset(refs, 0, sizeof refs);
  memset(pipes, 0, sizeof pipes);
  for (size_t r = 0; r < runs; r++) {
    keep_best(&one, run_single(1, 1));
    keep_best(&two, run_single(2, 1));
    for (size_t i = 0; i < NM; i++) {
      keep_best(&refs[i], run_single(1, ms[i]));
      keep_best(&pipes[i], run_pipeline(ms[i]));
    }
  }
  printf("%-44s %10.0f samples/s\n", "one process, 1 thread", one.samples_per_s);
  printf("%-44s %10.0f samples/s  %.2fx\n", "one process, 2 threads", two.samples_per_s,
         two.samples_per_s / one.samples_per_s);
  for (size_t i = 0; i < NM; i++) {
    size_t m = ms[i];
    result ref = refs[i], pipe = pipes[i];
    char label[96];
    snprintf(label, sizeof label, "one process, 1 thread, %zu x %zu rows", m, 1024 / m);
    printf("%-44s %10.0f samples/s  %.2fx\n", label, ref.samples_per_s, ref.samples_per_s / one.samples_per_s);
    snprintf(label, sizeof label, "2 stages (after %s), %u+%u threads, M = %zu", cut_after, stage_threads[0],
             stage_threads[1], m);
    double gpipe = 1.0 / (double)(m + 1);
    printf("%-44s %10.0f samples/s  %.2fx  waiting: stage 0 %.0f%%, stage 1 %.0f%% (GPipe bubble %.0f%%)\n", label,
           pipe.samples_per_s, pipe.samples_per_s / one.samples_per_s, 100 * pipe.wait[0], 100 * pipe.wait[1],
           100 * gpipe);
  }
  free(xs);
  free(ys);
  return 0;
}
