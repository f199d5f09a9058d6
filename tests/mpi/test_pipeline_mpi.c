/*
 * Pipelines over MPI (-np 2 and -np 3 in CTest): rank k trains stage k of
 * the same partition over hm_mpi_pipeline_transport; for every optimizer,
 * with 1 and 4 micro-batches, the last rank gathers the whole graph's
 * weights and finds them bit-identical to its own single-process fit with
 * the same batch_size and accumulate_steps; every stage reports the same
 * evaluation as that fit. Exit 0 on every rank when all checks pass.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harmonics/harmonics.h"
#include "harmonics/mpi.h"
#include "mpi_check.h"


#define N 41
static float xs[N * 5];
static int32_t ys[N];

static const char text[] = "producer x {5}; producer y {3}; layer h1 {12}; layer h2 {9}; layer out;"
                           "cycle { x -(tanh)-> h1 -(relu)-> h2 -> out; out <-(cross_entropy)- y; }";

typedef struct run {
  hm_graph *g;
  hm_producer *x, *y;
} run;

static run make_run(void) {
  run r = {NULL, NULL, NULL};
  if (hm_graph_parse(text, strlen(text), "pipe.hmx", &r.g) || hm_producer_from_floats(xs, N, 5, &r.x) ||
      hm_producer_from_labels(ys, N, 3, &r.y) || hm_graph_bind_producer(r.g, "x", r.x) ||
      hm_graph_bind_producer(r.g, "y", r.y) || hm_graph_bind_eval(r.g, "x", r.x) || hm_graph_bind_eval(r.g, "y", r.y))
    fprintf(stderr, "rank %d: setup: %s\n", rank_, hm_last_error());
  return r;
}

static void free_run(run *r) {
  hm_graph_free(r->g);
  hm_producer_free(r->x);
  hm_producer_free(r->y);
}

static hm_fit_options options(hm_optimizer opt, size_t micro_batches) {
  hm_fit_options o = hm_fit_options_default();
  o.optimizer = opt;
  o.learning_rate = opt == HM_OPTIMIZER_SGD ? 0.1f : 0.01f;
  if (opt == HM_OPTIMIZER_SGD) o.momentum = 0.9f;
  if (opt == HM_OPTIMIZER_ADAMW || opt == HM_OPTIMIZER_LAMB) o.weight_decay = 0.01f;
  o.batch_size = 4;
  o.accumulate_steps = micro_batches;
  o.eval_batch_size = 16;
  o.seed = 9;
  o.threads = 1;
  return o;
}

static int same_weights(const hm_weights *a, const hm_weights *b) {
  if (!a || !b || hm_weights_count(a) != hm_weights_count(b)) return 0;
  for (size_t i = 0; i < hm_weights_count(a); i++) {
    hm_tensor x, y;
    if (hm_weights_at(a, i, &x) || hm_weights_at(b, i, &y) || strcmp(x.name, y.name) || x.bytes != y.bytes ||
        memcmp(x.data, y.data, x.bytes) != 0)
      return 0;
  }
  return 1;
}

static void check_stage(hm_collectives *mpi, const hm_pipeline_transport *t, hm_optimizer opt, size_t m) {
  const char *cuts2[] = {"h2"}, *cuts3[] = {"h1", "h2"};
  run r = make_run();
  hm_partition *p = NULL;
  hm_status st = hm_graph_partition_by_layer(r.g, mpi->size == 2 ? cuts2 : cuts3, (size_t)mpi->size - 1, &p);
  CHECK(st == HM_OK, "partition: %s", hm_last_error());
  if (st != HM_OK) {
    free_run(&r);
    return;
  }
  hm_pipeline_stage ps = hm_pipeline_stage_default();
  ps.partition = p;
  ps.stage = (size_t)mpi->rank;
  ps.transport = t;
  ps.timeout_seconds = 60;
  hm_fit_options o = options(opt, m);
  o.pipeline = &ps;
  hm_cycle_state *state = NULL;
  st = hm_graph_fit(hm_partition_stage(p, ps.stage), 3, NULL, &o, &state);
  CHECK(st == HM_OK, "%s, %zu micro-batches: fit: %s", hm_optimizer_name(opt), m, hm_last_error());
  hm_weights *whole = NULL;
  if (st == HM_OK) {
    st = hm_pipeline_gather_weights(&ps, hm_cycle_state_weights(state), &whole);
    CHECK(st == HM_OK, "gather: %s", hm_last_error());
  }
  /* The single process, run by the last rank, is the reference. */
  if (st == HM_OK && mpi->rank == mpi->size - 1) {
    run one = make_run();
    hm_fit_options so = options(opt, m);
    hm_cycle_state *single = NULL;
    st = hm_graph_fit(one.g, 3, NULL, &so, &single);
    CHECK(st == HM_OK, "single fit: %s", hm_last_error());
    CHECK(same_weights(whole, hm_graph_weights(one.g)), "%s, %zu micro-batches, %d stages: the weights differ",
          hm_optimizer_name(opt), m, mpi->size);
    CHECK(single && hm_cycle_state_step(state) == hm_cycle_state_step(single), "steps differ");
    CHECK(single && hm_cycle_state_eval_accuracy(state) == hm_cycle_state_eval_accuracy(single),
          "evaluation differs: %g vs %g", (double)hm_cycle_state_eval_accuracy(state),
          (double)hm_cycle_state_eval_accuracy(single));
    hm_cycle_state_free(single);
    free_run(&one);
  } else if (st == HM_OK) {
    CHECK(whole == NULL, "only the last stage gets the whole weights");
  }
  hm_weights_free(whole);
  hm_cycle_state_free(state);
  hm_partition_free(p);
  free_run(&r);
}

int main(void) {
  hm_collectives *mpi = NULL;
  if (hm_mpi_open(NULL, &mpi) != HM_OK) {
    fprintf(stderr, "hm_mpi_open: %s\n", hm_last_error());
    return 1;
  }
  rank_ = mpi->rank;
  unsigned long long s = 3;
  for (int i = 0; i < N * 5; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    xs[i] = (float)((s >> 40) & 0xffff) / 32768.0f - 1.0f;
  }
  for (int i = 0; i < N; i++) ys[i] = (xs[5 * i] > 0) + (xs[5 * i + 1] + xs[5 * i + 2] > 0.5f);
  const hm_pipeline_transport *t = NULL;
  if (hm_mpi_pipeline_transport(mpi, &t) != HM_OK) {
    fprintf(stderr, "transport: %s\n", hm_last_error());
    return 1;
  }
  static const hm_optimizer all[] = {HM_OPTIMIZER_SGD, HM_OPTIMIZER_ADAM, HM_OPTIMIZER_RMSPROP, HM_OPTIMIZER_ADAMW,
                                     HM_OPTIMIZER_LAMB};
  for (size_t i = 0; i < 5; i++) {
    check_stage(mpi, t, all[i], 1);
    check_stage(mpi, t, all[i], 4);
  }
  if (rank_ == mpi->size - 1 && !failures) printf("%d stages: every optimizer, 1 and 4 micro-batches: bit-identical\n", mpi->size);
  hm_mpi_close(mpi);
  return failures ? 1 : 0;
}
