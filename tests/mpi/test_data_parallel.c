/*
 * Data-parallel training under mpirun (-np 2 and -np 3 in CTest): for every
 * optimizer, with and without accumulate_steps 2, on 53 samples in global
 * batches of 10 (uneven shares, a partial last batch of 3), the weights
 * after 20+ updates follow a single-process fit of the same global batch
 * within 1e-5 relative, and are bit-identical on every rank; the sharded
 * evaluation equals the single-process one; rank 0's fit_until predicate
 * stops every rank at its step; a rank with different options makes every
 * rank fail at start, naming the field.
 * Exit 0 on every rank when all checks pass.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harmonics/harmonics.h"
#include "harmonics/mpi.h"
#include "mpi_check.h"


#define N 53
static float xs[N * 4];
static int32_t ys[N];

static const char text[] =
    "producer x {4}; producer y {3}; layer h {16}; layer out; cycle { x -(relu)-> h -> out; out <-(cross_entropy)- y; }";

typedef struct run {
  hm_graph *g;
  hm_producer *x, *y;
} run;

static run make_run(void) {
  run r = {NULL, NULL, NULL};
  if (hm_graph_parse(text, strlen(text), "dp.hmx", &r.g) || hm_producer_from_floats(xs, N, 4, &r.x) ||
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

static hm_fit_options options(hm_optimizer opt, size_t accumulate) {
  hm_fit_options o = hm_fit_options_default();
  o.optimizer = opt;
  o.learning_rate = opt == HM_OPTIMIZER_SGD ? 0.1f : 0.01f;
  if (opt == HM_OPTIMIZER_SGD) o.momentum = 0.9f;
  if (opt == HM_OPTIMIZER_ADAMW || opt == HM_OPTIMIZER_LAMB) o.weight_decay = 0.01f;
  o.batch_size = 10;
  o.accumulate_steps = accumulate;
  o.seed = 7;
  o.threads = 1;
  return o;
}

/* Every value of |w| as one array (graph order), and its size. */
static float *flatten(const hm_weights *w, size_t *n) {
  size_t total = 0;
  for (size_t i = 0; i < hm_weights_count(w); i++) {
    hm_tensor t;
    if (hm_weights_at(w, i, &t) == HM_OK) total += t.bytes / sizeof(float);
  }
  float *v = malloc(total * sizeof *v + 1), *at = v;
  for (size_t i = 0; v && i < hm_weights_count(w); i++) {
    hm_tensor t;
    if (hm_weights_at(w, i, &t) != HM_OK) continue;
    memcpy(at, t.data, t.bytes);
    at += t.bytes / sizeof(float);
  }
  *n = total;
  return v;
}

static void same_on_every_rank(const hm_collectives *c, const float *v, size_t n, const char *what) {
  float *root = malloc(n * sizeof *root + 1);
  memcpy(root, v, n * sizeof *root);
  CHECK(c->broadcast(c->self, root, n * sizeof *root, 0) == HM_OK, "%s", hm_last_error());
  CHECK(memcmp(root, v, n * sizeof *root) == 0, "%s: the weights differ from rank 0's", what);
  free(root);
}

static void follows_one_process(const hm_collectives *c, hm_optimizer opt, size_t accumulate) {
  char what[64];
  snprintf(what, sizeof what, "%s, accumulate %zu", hm_optimizer_name(opt), accumulate);
  size_t epochs = accumulate == 1 ? 4 : 7; /* 24 and 21 updates */
  hm_policy p = hm_make_hardware_policy();
  run one = make_run(), dp = make_run();
  hm_fit_options o = options(opt, accumulate);
  hm_cycle_state *s1 = NULL, *s2 = NULL;
  CHECK(hm_graph_fit(one.g, epochs, &p, &o, &s1) == HM_OK, "%s: %s", what, hm_last_error());
  o.collectives = c;
  CHECK(hm_graph_fit(dp.g, epochs, &p, &o, &s2) == HM_OK, "%s: %s", what, hm_last_error());
  if (s1 && s2) {
    CHECK(hm_cycle_state_step(s1) == hm_cycle_state_step(s2) && hm_cycle_state_step(s1) >= 20, "%s: steps %zu and %zu",
          what, hm_cycle_state_step(s1), hm_cycle_state_step(s2));
    size_t n1, n2;
    float *a = flatten(hm_cycle_state_weights(s1), &n1), *b = flatten(hm_cycle_state_weights(s2), &n2);
    CHECK(n1 == n2 && n1 > 0, "%s: %zu and %zu weights", what, n1, n2);
    double worst = 0;
    for (size_t i = 0; i < n1 && i < n2; i++) {
      double d = fabs((double)a[i] - (double)b[i]) / fmax(fabs((double)a[i]), 1e-2);
      if (d > worst) worst = d;
    }
    CHECK(worst <= 1e-5, "%s: weights differ from one process by %g relative", what, worst);
    if (c->rank == 0) printf("%s: %zu updates, largest relative difference %.3g\n", what, hm_cycle_state_step(s2), worst);
    same_on_every_rank(c, b, n2, what);
    CHECK(fabs(hm_cycle_state_eval_accuracy(s1) - hm_cycle_state_eval_accuracy(s2)) <= 1e-6 &&
              fabs(hm_cycle_state_eval_loss(s1) - hm_cycle_state_eval_loss(s2)) <= 1e-5,
          "%s: evaluation %g/%g vs %g/%g", what, (double)hm_cycle_state_eval_accuracy(s1),
          (double)hm_cycle_state_eval_loss(s1), (double)hm_cycle_state_eval_accuracy(s2),
          (double)hm_cycle_state_eval_loss(s2));
    free(a);
    free(b);
  }
  hm_cycle_state_free(s1);
  hm_cycle_state_free(s2);
  free_run(&one);
  free_run(&dp);
}

static int stop_at_seven(const hm_cycle_state *s, void *user) {
  (void)user;
  return hm_cycle_state_step(s) == 7;
}

static void rank0_decides_the_stop(const hm_collectives *c) {
  run r = make_run();
  hm_fit_options o = options(HM_OPTIMIZER_ADAM, 1);
  o.collectives = c;
  hm_cycle_state *s = NULL;
  /* Only rank 0's predicate is asked; the others' would never stop. */
  hm_status st = c->rank == 0 ? hm_graph_fit_until(r.g, stop_at_seven, NULL, NULL, &o, &s)
                              : hm_graph_fit_until(r.g, (hm_stop_predicate)stop_at_seven, NULL, NULL, &o, &s);
  CHECK(st == HM_OK, "%s", hm_last_error());
  if (s) {
    CHECK(hm_cycle_state_step(s) == 7, "stopped at %zu", hm_cycle_state_step(s));
    CHECK(strcmp(hm_cycle_state_stop_reason(s), "predicate") == 0, "%s", hm_cycle_state_stop_reason(s));
  }
  hm_cycle_state_free(s);
  free_run(&r);
}

static void a_mismatch_fails_every_rank(const hm_collectives *c) {
  run r = make_run();
  hm_fit_options o = options(HM_OPTIMIZER_ADAM, 1);
  o.collectives = c;
  if (c->rank == 1) o.learning_rate = 0.02f;
  hm_cycle_state *s = NULL;
  hm_status st = hm_graph_fit(r.g, 1, NULL, &o, &s);
  CHECK(st == HM_STATUS_INVALID_ARGUMENT, "status %s", hm_status_name(st));
  if (c->rank == 1)
    CHECK(strstr(hm_last_error(), "learning_rate is 0.02 here but 0.01 on rank 0"), "%s", hm_last_error());
  else
    CHECK(strstr(hm_last_error(), "rank 1 runs a different"), "%s", hm_last_error());
  if (c->rank == 0) printf("a mismatch: rank 0 says: %s\n", hm_last_error());
  hm_cycle_state_free(s);
  free_run(&r);
}

int main(void) {
  hm_collectives *c = NULL;
  if (hm_mpi_open(NULL, &c) != HM_OK) {
    fprintf(stderr, "hm_mpi_open: %s\n", hm_last_error());
    return 1;
  }
  rank_ = c->rank;
  unsigned long long z = 12345;
  for (int i = 0; i < N * 4; i++) {
    z = z * 6364136223846793005ull + 1442695040888963407ull;
    xs[i] = (float)((z >> 40) & 0xffff) / 65536.0f;
  }
  for (int i = 0; i < N; i++) ys[i] = (int32_t)(xs[4 * i] * 3.0f) % 3;
  static const hm_optimizer opts[] = {HM_OPTIMIZER_SGD, HM_OPTIMIZER_ADAM, HM_OPTIMIZER_RMSPROP, HM_OPTIMIZER_ADAMW,
                                      HM_OPTIMIZER_LAMB};
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
    for (size_t acc = 1; acc <= 2; acc++) follows_one_process(c, opts[i], acc);
  rank0_decides_the_stop(c);
  if (c->size >= 2) a_mismatch_fails_every_rank(c);
  /* Every rank's verdict: the job passes only when all do. */
  float bad = (float)failures;
  if (c->allreduce_sum_f32(c->self, &bad, 1) != HM_OK) bad = 1;
  if (c->rank == 0) printf("%s on %d ranks\n", bad == 0 ? "passed" : "FAILED", c->size);
  hm_mpi_close(c);
  return bad == 0 ? 0 : 1;
}
