/*
 * Pipelines over a layer partition (harmonics/pipeline.h): the partition's
 * stages and boundaries and its errors; the invariant — K stages with M
 * micro-batches train bit for bit as one process with accumulate_steps M —
 * for K = 2 and 3, M = 1 and 4, every optimizer, a partial last group, a
 * layer read by two later stages, evaluation, checkpoints and resume; the
 * header on the wire; and failures: a corrupted header, a stage that stops
 * answering, a stage that fails, stages that disagree at start.
 * Everything runs in process (threads); tests/mpi/ runs the same over MPI.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harmonics/harmonics.h"
#include "hm_test.h"

#define N 29 /* samples: micro-batches of 3 leave a partial one, groups of 4 a partial group */

static float xs[N * 6];
static int32_t ys[N];

/* Three layers, so a cut can leave one, two or three stages. */
static const char chain[] = "producer x {6}; producer y {3}; layer h1 {8}; layer h2 {7}; layer o;"
                            "cycle { x -(tanh)-> h1 -(relu)-> h2 -> o; o <-(cross_entropy)- y; }";
/* h1 is read by h2 and by o: cut after h1 and h2, it crosses to two stages. */
static const char skip[] = "producer x {6}; producer y {3}; layer h1 {8}; layer h2 {7}; layer o;"
                           "cycle { x -(tanh)-> h1 -(relu)-> h2 -> o; h1 -(sigmoid)-> o; o <-(cross_entropy)- y; }";

typedef struct fixture {
  hm_graph *g;
  hm_producer *x, *y, *ex, *ey;
} fixture;

static fixture make(const char *text) {
  unsigned long long seed = 5;
  for (int i = 0; i < N * 6; i++) xs[i] = hm_test_uniform(&seed, -1.0f, 1.0f);
  for (int i = 0; i < N; i++) ys[i] = (xs[6 * i] + xs[6 * i + 1] > 0.3f) + (xs[6 * i + 2] > 0.0f);
  fixture f = {NULL, NULL, NULL, NULL, NULL};
  if (hm_graph_parse(text, strlen(text), "pipe.hmx", &f.g) || hm_producer_from_floats(xs, N, 6, &f.x) ||
      hm_producer_from_labels(ys, N, 3, &f.y) || hm_producer_from_floats(xs, 20, 6, &f.ex) ||
      hm_producer_from_labels(ys, 20, 3, &f.ey) || hm_graph_bind_producer(f.g, "x", f.x) ||
      hm_graph_bind_producer(f.g, "y", f.y))
    fprintf(stderr, "  fixture: %s\n", hm_last_error());
  return f;
}

static void bind_eval(fixture *f) {
  if (hm_graph_bind_eval(f->g, "x", f->ex) || hm_graph_bind_eval(f->g, "y", f->ey))
    fprintf(stderr, "  fixture: %s\n", hm_last_error());
}

static void unmake(fixture *f) {
  hm_graph_free(f->g);
  hm_producer_free(f->x);
  hm_producer_free(f->y);
  hm_producer_free(f->ex);
  hm_producer_free(f->ey);
}

static hm_fit_options opts(hm_optimizer opt, size_t micro_batches) {
  hm_fit_options o = hm_fit_options_default();
  o.optimizer = opt;
  o.batch_size = 3;
  o.accumulate_steps = micro_batches;
  o.seed = 7;
  o.threads = 1;
  o.learning_rate = 0.05f;
  o.grad_clip = 0.5f;
  o.lr_schedule_fp = hm_exponential_decay_schedule(0.05f, 0.9f, 3, 0.0f);
  if (opt == HM_OPTIMIZER_ADAMW || opt == HM_OPTIMIZER_LAMB) o.weight_decay = 0.01f;
  if (opt == HM_OPTIMIZER_SGD) o.momentum = 0.9f;
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

static hm_partition *cut(hm_graph *g, const char *a, const char *b) {
  const char *cuts[2] = {a, b};
  hm_partition *p = NULL;
  if (hm_graph_partition_by_layer(g, cuts, b ? 2 : 1, &p) != HM_OK) fprintf(stderr, "  partition: %s\n", hm_last_error());
  return p;
}

static void free_states(hm_cycle_state **s, size_t n) {
  for (size_t k = 0; k < n; k++) hm_cycle_state_free(s[k]);
}

/* ===== The partition ===== */

static void stages_and_boundaries_follow_the_cuts(void) {
  fixture f = make(skip);
  hm_partition *p = cut(f.g, "h1", "h2");
  if (!p) return;
  HM_CHECK_EQ(hm_partition_stage_count(p), 3);
  HM_CHECK(hm_partition_graph(p) == f.g);
  /* h1 crosses to stage 1 (for h2) and to stage 2 (for o); h2 to stage 2. */
  HM_CHECK_EQ(hm_partition_boundary_count(p), 3);
  const char *layers[3] = {"h1", "h1", "h2"};
  size_t from[3] = {0, 0, 1}, to[3] = {1, 2, 2}, width[3] = {8, 8, 7};
  for (size_t i = 0; i < 3; i++) {
    hm_boundary_info b;
    HM_CHECK_OK(hm_partition_boundary(p, i, &b));
    char name[16];
    snprintf(name, sizeof name, "boundary%zu", i);
    HM_CHECK_STR_CONTAINS(b.name, name);
    HM_CHECK_STR_CONTAINS(b.layer, layers[i]);
    HM_CHECK_EQ(b.from_stage, from[i]);
    HM_CHECK_EQ(b.to_stage, to[i]);
    HM_CHECK_EQ(b.width, width[i]);
  }
  /* Stage 2: producers y, boundary1, boundary2; layer o; o's two connections
   * keep their activations; the loss is here. */
  hm_graph *s2 = hm_partition_stage(p, 2);
  HM_CHECK_STR_CONTAINS(hm_graph_name(s2), "graph.stage2");
  HM_CHECK_EQ(hm_graph_node_count(s2), 4);
  HM_CHECK_EQ(hm_graph_connection_count(s2), 2);
  HM_CHECK_EQ(hm_graph_loss_count(s2), 1);
  const char *src, *dst, *act;
  HM_CHECK_OK(hm_graph_connection(s2, 0, &src, &dst, &act));
  HM_CHECK(strcmp(src, "boundary2") == 0 && strcmp(dst, "o") == 0 && strcmp(act, "identity") == 0);
  HM_CHECK_OK(hm_graph_connection(s2, 1, &src, &dst, &act));
  HM_CHECK(strcmp(src, "boundary1") == 0 && strcmp(dst, "o") == 0 && strcmp(act, "sigmoid") == 0);
  size_t whole = 0;
  HM_CHECK_OK(hm_partition_connection_origin(p, 2, 1, &whole));
  HM_CHECK_EQ(whole, 3); /* h1 -(sigmoid)-> o */
  /* Stage 0: x -> h1 and h1 into its two boundary consumers (no weights). */
  hm_graph *s0 = hm_partition_stage(p, 0);
  HM_CHECK_EQ(hm_graph_connection_count(s0), 3);
  HM_CHECK_EQ(hm_graph_loss_count(s0), 0);
  HM_CHECK_EQ(hm_partition_connection_origin(p, 0, 1, &whole), HM_STATUS_NOT_FOUND);
  /* Weights go to the stages under their names and come back whole. */
  HM_CHECK_OK(hm_graph_init_weights(f.g, 3));
  hm_weights *parts[3] = {NULL, NULL, NULL}, *merged = NULL;
  for (size_t k = 0; k < 3; k++) HM_CHECK_OK(hm_partition_stage_weights(p, k, hm_graph_weights(f.g), &parts[k]));
  hm_tensor t;
  HM_CHECK_OK(hm_weights_find(parts[2], "boundary1->o.weight", &t));
  HM_CHECK_EQ(hm_weights_count(parts[0]) + hm_weights_count(parts[1]) + hm_weights_count(parts[2]), 8);
  HM_CHECK_OK(hm_partition_merge_weights(p, (const hm_weights *const *)parts, &merged));
  HM_CHECK(same_weights(merged, hm_graph_weights(f.g)));
  for (size_t k = 0; k < 3; k++) hm_weights_free(parts[k]);
  hm_weights_free(merged);
  hm_partition_free(p);
  unmake(&f);
}

static void bad_cuts_say_what_is_wrong(void) {
  fixture f = make(chain);
  hm_partition *p = NULL;
  const char *unknown[] = {"h9"}, *producer[] = {"x"}, *twice[] = {"h1", "h1"}, *backward[] = {"h2", "h1"},
             *last[] = {"o"};
  HM_CHECK_EQ(hm_graph_partition_by_layer(f.g, unknown, 1, &p), HM_STATUS_NOT_FOUND);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "cut 'h9': graph 'graph' has no layer of that name");
  HM_CHECK_EQ(hm_graph_partition_by_layer(f.g, producer, 1, &p), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "cut 'x' is a producer");
  HM_CHECK_EQ(hm_graph_partition_by_layer(f.g, twice, 2, &p), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "cut 'h1' appears twice");
  HM_CHECK_EQ(hm_graph_partition_by_layer(f.g, backward, 2, &p), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "cut 'h1' (cut 2) is already in stage 0, upstream of an earlier cut");
  HM_CHECK_EQ(hm_graph_partition_by_layer(f.g, last, 1, &p), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "no layer follows the last cut 'o'");
  HM_CHECK_EQ(hm_graph_partition_by_layer(f.g, last, 0, &p), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "no cut given");
  HM_CHECK(p == NULL);
  unmake(&f);
  /* A loss on a layer before the last stage. */
  static const char aux[] = "producer x {6}; producer y {3}; producer z {8}; layer h1 {8}; layer o;"
                            "cycle { x -> h1 -> o; o <-(cross_entropy)- y;\n h1 <-(mse)- z; }";
  fixture a = make(aux);
  float zeros[N * 8] = {0};
  hm_producer *z = NULL;
  HM_CHECK_OK(hm_producer_from_floats(zeros, N, 8, &z));
  HM_CHECK_OK(hm_graph_bind_producer(a.g, "z", z));
  const char *h1[] = {"h1"};
  HM_CHECK_EQ(hm_graph_partition_by_layer(a.g, h1, 1, &p), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "pipe.hmx:2:5: partition: the loss h1 <-(mse)- z is on layer 'h1' of stage "
                                         "0, but every loss belongs to the last stage (1)");
  hm_producer_free(z);
  unmake(&a);
}

/* ===== The invariant ===== */

/* K stages, M micro-batches against one process with accumulate_steps M. */
static void check_bit_identical(const char *text, const char *c1, const char *c2, hm_optimizer opt, size_t m,
                                size_t epochs) {
  fixture one = make(text), many = make(text);
  hm_fit_options o = opts(opt, m);
  hm_cycle_state *single = NULL;
  HM_CHECK_OK(hm_graph_fit(one.g, epochs, NULL, &o, &single));
  hm_partition *p = cut(many.g, c1, c2);
  if (!p || !single) {
    hm_cycle_state_free(single);
    unmake(&one);
    unmake(&many);
    return;
  }
  size_t K = hm_partition_stage_count(p);
  hm_cycle_state *states[3] = {NULL, NULL, NULL};
  HM_CHECK_OK(hm_partition_fit(p, epochs, NULL, &o, NULL, states));
  HM_CHECK_MSG(same_weights(hm_graph_weights(one.g), hm_graph_weights(many.g)), "%s, %zu stages, %zu micro-batches",
               hm_optimizer_name(opt), K, m);
  for (size_t k = 0; k < K && states[k]; k++) {
    HM_CHECK_EQ(hm_cycle_state_step(states[k]), hm_cycle_state_step(single));
    HM_CHECK_EQ(hm_cycle_state_samples(states[k]), hm_cycle_state_samples(single));
    HM_CHECK(hm_cycle_state_loss(states[k]) == hm_cycle_state_loss(single));
    HM_CHECK(hm_cycle_state_epoch_loss(states[k]) == hm_cycle_state_epoch_loss(single));
  }
  /* The norm sums the stages' squares: equal up to the order of the sum. */
  if (states[K - 1])
    HM_CHECK_NEAR(hm_cycle_state_grad_norm(states[K - 1]), hm_cycle_state_grad_norm(single),
                  1e-5 * hm_cycle_state_grad_norm(single));
  free_states(states, K);
  hm_partition_free(p);
  hm_cycle_state_free(single);
  unmake(&one);
  unmake(&many);
}

static void two_stages_every_optimizer_are_bit_identical(void) {
  static const hm_optimizer all[] = {HM_OPTIMIZER_SGD, HM_OPTIMIZER_ADAM, HM_OPTIMIZER_RMSPROP, HM_OPTIMIZER_ADAMW,
                                     HM_OPTIMIZER_LAMB};
  for (size_t i = 0; i < 5; i++) {
    check_bit_identical(chain, "h1", NULL, all[i], 1, 2);
    check_bit_identical(chain, "h2", NULL, all[i], 4, 2);
  }
}

static void three_stages_every_optimizer_are_bit_identical(void) {
  static const hm_optimizer all[] = {HM_OPTIMIZER_SGD, HM_OPTIMIZER_ADAM, HM_OPTIMIZER_RMSPROP, HM_OPTIMIZER_ADAMW,
                                     HM_OPTIMIZER_LAMB};
  for (size_t i = 0; i < 5; i++) {
    check_bit_identical(chain, "h1", "h2", all[i], 1, 2);
    check_bit_identical(chain, "h1", "h2", all[i], 4, 2);
  }
}

static void a_layer_read_by_two_stages_is_bit_identical(void) {
  check_bit_identical(skip, "h1", "h2", HM_OPTIMIZER_ADAM, 4, 3);
  check_bit_identical(skip, "h1", NULL, HM_OPTIMIZER_SGD, 2, 3);
}

static void quantized_stages_are_bit_identical(void) {
  fixture one = make(chain), many = make(chain);
  hm_fit_options o = opts(HM_OPTIMIZER_ADAM, 4);
  hm_policy q = hm_make_max_bits_policy(3);
  hm_cycle_state *single = NULL, *states[2] = {NULL, NULL};
  HM_CHECK_OK(hm_graph_fit(one.g, 2, &q, &o, &single));
  hm_partition *p = cut(many.g, "h1", NULL);
  HM_CHECK_OK(hm_partition_fit(p, 2, &q, &o, NULL, states));
  HM_CHECK(same_weights(hm_graph_weights(one.g), hm_graph_weights(many.g)));
  const char *layer, *prec, *kernel;
  HM_CHECK_OK(hm_cycle_state_layer_precision(states[1], 0, &layer, &prec, &kernel));
  HM_CHECK_STR_CONTAINS(kernel, "int3_matmul");
  free_states(states, 2);
  hm_cycle_state_free(single);
  hm_partition_free(p);
  unmake(&one);
  unmake(&many);
}

/* Evaluation flows through the stages; every stage reports the last one's. */
static void evaluation_runs_through_the_stages(void) {
  fixture one = make(chain), many = make(chain);
  bind_eval(&one);
  bind_eval(&many);
  hm_fit_options o = opts(HM_OPTIMIZER_ADAM, 2);
  o.eval_batch_size = 7; /* 20 samples: batches of 7, 7 and 6 */
  hm_cycle_state *single = NULL, *states[3] = {NULL, NULL, NULL};
  HM_CHECK_OK(hm_graph_fit(one.g, 3, NULL, &o, &single));
  hm_partition *p = cut(many.g, "h1", "h2");
  HM_CHECK_OK(hm_partition_fit(p, 3, NULL, &o, NULL, states));
  for (size_t k = 0; k < 3 && states[k] && single; k++) {
    HM_CHECK(!isnan(hm_cycle_state_eval_accuracy(single)));
    HM_CHECK(hm_cycle_state_eval_accuracy(states[k]) == hm_cycle_state_eval_accuracy(single));
    HM_CHECK(hm_cycle_state_eval_loss(states[k]) == hm_cycle_state_eval_loss(single));
  }
  free_states(states, 3);
  hm_cycle_state_free(single);
  hm_partition_free(p);
  unmake(&one);
  unmake(&many);
}

typedef struct counter {
  size_t calls, last_step;
  pthread_t thread;
} counter;

static void count_progress(void *user, size_t step, float norm, float loss, float lr) {
  counter *c = user;
  (void)norm, (void)loss, (void)lr;
  c->calls++;
  c->last_step = step;
  c->thread = pthread_self();
}

/* Progress runs once per update, on the last stage; early stopping decided
 * there stops every stage at the same update. */
static void the_last_stage_reports_and_decides(void) {
  fixture one = make(chain), many = make(chain);
  hm_fit_options o = opts(HM_OPTIMIZER_SGD, 2);
  o.early_stop_patience = 2;
  o.early_stop_delta = 100.0f; /* no update improves: stop after the third */
  counter c1 = {0, 0, pthread_self()}, c2 = {0, 0, pthread_self()};
  o.progress.fn = count_progress;
  o.progress.user = &c1;
  hm_cycle_state *single = NULL, *states[2] = {NULL, NULL};
  HM_CHECK_OK(hm_graph_fit(one.g, 5, NULL, &o, &single));
  o.progress.user = &c2;
  hm_partition *p = cut(many.g, "h2", NULL);
  HM_CHECK_OK(hm_partition_fit(p, 5, NULL, &o, NULL, states));
  HM_CHECK_EQ(c1.calls, 3);
  HM_CHECK_EQ(c2.calls, 3);
  HM_CHECK_EQ(c2.last_step, 3);
  HM_CHECK(!pthread_equal(c2.thread, pthread_self()));
  for (size_t k = 0; k < 2 && states[k]; k++) {
    HM_CHECK_EQ(hm_cycle_state_step(states[k]), 3);
    HM_CHECK_STR_CONTAINS(hm_cycle_state_stop_reason(states[k]), "early_stop");
  }
  HM_CHECK(same_weights(hm_graph_weights(one.g), hm_graph_weights(many.g)));
  free_states(states, 2);
  hm_cycle_state_free(single);
  hm_partition_free(p);
  unmake(&one);
  unmake(&many);
}

/* Each stage checkpoints its own weights; resuming every stage from them
 * continues as if nothing had stopped. */
static void stage_checkpoints_resume_bit_identically(void) {
  char dir[] = "/tmp/hm_pipe_XXXXXX";
  if (!mkdtemp(dir)) HM_SKIP("mkdtemp failed");
  char path[256], stage_path[300];
  snprintf(path, sizeof path, "%s/run.hck", dir);
  fixture whole = make(chain), first = make(chain), second = make(chain);
  hm_fit_options o = opts(HM_OPTIMIZER_ADAMW, 4);
  hm_cycle_state *straight[3] = {NULL, NULL, NULL}, *part1[3] = {NULL, NULL, NULL}, *part2[3] = {NULL, NULL, NULL};
  hm_partition *p0 = cut(whole.g, "h1", "h2"), *p1 = cut(first.g, "h1", "h2"), *p2 = cut(second.g, "h1", "h2");
  HM_CHECK_OK(hm_partition_fit(p0, 4, NULL, &o, NULL, straight));
  o.checkpoint_path = path;
  HM_CHECK_OK(hm_partition_fit(p1, 2, NULL, &o, NULL, part1));
  o.checkpoint_path = NULL;
  hm_cycle_state *resume[3] = {NULL, NULL, NULL};
  for (size_t k = 0; k < 3; k++) {
    hm_pipeline_checkpoint_path(path, k, stage_path, sizeof stage_path);
    HM_CHECK(access(stage_path, F_OK) == 0);
    HM_CHECK_OK(hm_cycle_state_load(stage_path, &resume[k]));
  }
  hm_partition_run_options run = hm_partition_run_options_default();
  run.resume = (const hm_cycle_state *const *)resume;
  HM_CHECK_OK(hm_partition_fit(p2, 4, NULL, &o, &run, part2));
  HM_CHECK(same_weights(hm_graph_weights(whole.g), hm_graph_weights(second.g)));
  HM_CHECK(part2[2] && hm_cycle_state_step(part2[2]) == hm_cycle_state_step(straight[2]));
  /* Resuming stages from different points is refused. */
  hm_cycle_state *mixed[3] = {resume[0], straight[1], resume[2]}, *bad[3] = {NULL, NULL, NULL};
  run.resume = (const hm_cycle_state *const *)mixed;
  HM_CHECK(hm_partition_fit(p2, 6, NULL, &o, &run, bad) != HM_OK);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "pipeline stage 1: it starts at step");
  for (size_t k = 0; k < 3; k++) {
    hm_pipeline_checkpoint_path(path, k, stage_path, sizeof stage_path);
    unlink(stage_path);
    hm_cycle_state_free(resume[k]);
  }
  rmdir(dir);
  free_states(straight, 3);
  free_states(part1, 3);
  free_states(part2, 3);
  hm_partition_free(p0);
  hm_partition_free(p1);
  hm_partition_free(p2);
  unmake(&whole);
  unmake(&first);
  unmake(&second);
}

/* ===== Stages on threads of the test's own ===== */

typedef struct faulty {
  hm_pipeline_transport t;
  const hm_pipeline_transport *inner;
  int corrupt_step;   /* add 7 to the step of the first forward message sent */
  int silent_after;   /* after this many sends, fail without telling anyone */
  int sends;
} faulty;

static hm_status faulty_send(void *self, size_t to, const hm_boundary_header *h, const void *payload, double timeout) {
  faulty *f = self;
  if (f->silent_after && ++f->sends > f->silent_after)
    return hm_set_error(HM_STATUS_UNAVAILABLE, "the test pulled the plug");
  hm_boundary_header copy = *h;
  if (f->corrupt_step && h->kind == HM_PIPE_FORWARD) {
    copy.step += 7;
    f->corrupt_step = 0;
  }
  return f->inner->send(f->inner->self, to, &copy, payload, timeout);
}

static hm_status faulty_recv(void *self, size_t from, hm_boundary_header *h, void *payload, size_t cap, double timeout) {
  faulty *f = self;
  return f->inner->recv(f->inner->self, from, h, payload, cap, timeout);
}

static void faulty_fail(void *self, const char *message) {
  faulty *f = self;
  if (!f->silent_after) f->inner->fail(f->inner->self, message); /* a dead stage says nothing */
}

typedef struct stage_thread {
  hm_graph *g;
  hm_fit_options o;
  hm_pipeline_stage ps;
  hm_cycle_state *state;
  hm_weights *whole;
  hm_status status, gather;
  char error[1024];
} stage_thread;

static void *run_stage(void *arg) {
  stage_thread *t = arg;
  t->status = hm_graph_fit(t->g, 2, NULL, &t->o, &t->state);
  if (t->status != HM_OK) snprintf(t->error, sizeof t->error, "%s", hm_last_error());
  else t->gather = hm_pipeline_gather_weights(&t->ps, hm_cycle_state_weights(t->state), &t->whole);
  if (t->status == HM_OK && t->gather != HM_OK) snprintf(t->error, sizeof t->error, "%s", hm_last_error());
  return NULL;
}

/* Runs the stages of |p| on threads; stage |wrapped| talks through |f|.
 * Stage |absent| is not started at all. */
static void run_stages(hm_partition *p, stage_thread *t, const hm_fit_options *o, faulty *f, size_t wrapped,
                       double timeout, long absent) {
  size_t K = hm_partition_stage_count(p);
  hm_pipeline_local *l = NULL;
  HM_CHECK_OK(hm_pipeline_local_open(K, &l));
  if (!l) return;
  (void)hm_plugin_count(); /* plugins initialise here, as hm_partition_fit has them do */
  pthread_t th[3];
  for (size_t k = 0; k < K; k++) {
    memset(&t[k], 0, sizeof t[k]);
    t[k].g = hm_partition_stage(p, k);
    t[k].o = *o;
    t[k].ps = hm_pipeline_stage_default();
    t[k].ps.partition = p;
    t[k].ps.stage = k;
    t[k].ps.transport = hm_pipeline_local_transport(l, k);
    t[k].ps.timeout_seconds = timeout;
    if (f && k == wrapped) {
      f->inner = t[k].ps.transport;
      f->t = (hm_pipeline_transport){sizeof f->t, f, faulty_send, faulty_recv, faulty_fail};
      t[k].ps.transport = &f->t;
    }
    t[k].o.pipeline = &t[k].ps;
  }
  for (size_t k = 0; k < K; k++)
    if ((long)k != absent) pthread_create(&th[k], NULL, run_stage, &t[k]);
  for (size_t k = 0; k < K; k++)
    if ((long)k != absent) pthread_join(th[k], NULL);
  hm_pipeline_local_close(l);
}

static void free_stage_threads(stage_thread *t, size_t n) {
  for (size_t k = 0; k < n; k++) {
    hm_cycle_state_free(t[k].state);
    hm_weights_free(t[k].whole);
  }
}

static void the_last_stage_gathers_the_whole_weights(void) {
  fixture a = make(chain), b = make(chain);
  hm_fit_options o = opts(HM_OPTIMIZER_ADAM, 2);
  hm_partition *pa = cut(a.g, "h1", "h2"), *pb = cut(b.g, "h1", "h2");
  hm_cycle_state *states[3] = {NULL, NULL, NULL};
  HM_CHECK_OK(hm_partition_fit(pa, 2, NULL, &o, NULL, states));
  stage_thread t[3];
  run_stages(pb, t, &o, NULL, 0, 30, -1);
  for (size_t k = 0; k < 3; k++) {
    HM_CHECK_MSG(t[k].status == HM_OK && t[k].gather == HM_OK, "stage %zu: %s", k, t[k].error);
    HM_CHECK(k == 2 ? t[k].whole != NULL : t[k].whole == NULL);
  }
  HM_CHECK(same_weights(t[2].whole, hm_graph_weights(a.g)));
  free_stage_threads(t, 3);
  free_states(states, 3);
  hm_partition_free(pa);
  hm_partition_free(pb);
  unmake(&a);
  unmake(&b);
}

static void a_corrupted_header_is_refused(void) {
  fixture a = make(chain);
  hm_fit_options o = opts(HM_OPTIMIZER_ADAM, 2);
  hm_partition *p = cut(a.g, "h1", NULL);
  faulty f;
  memset(&f, 0, sizeof f);
  f.corrupt_step = 1;
  stage_thread t[2];
  run_stages(p, t, &o, &f, 0, 30, -1);
  HM_CHECK_EQ(t[1].status, HM_STATUS_DATA_LOSS);
  HM_CHECK_STR_CONTAINS(t[1].error, "pipeline stage 1: from stage 0 expected boundary0 forward, step 0, micro-batch 0, "
                                    "3x8 f32 but received boundary0 forward, step 7, micro-batch 0, 3x8 f32");
  HM_CHECK_EQ(t[0].status, HM_STATUS_UNAVAILABLE);
  HM_CHECK_STR_CONTAINS(t[0].error, "pipeline stage 0: ");
  HM_CHECK_STR_CONTAINS(t[0].error, "stage 1 failed: pipeline stage 1: from stage 0 expected");
  free_stage_threads(t, 2);
  hm_partition_free(p);
  unmake(&a);
}

/* A stage that dies without a word: the others give up at their timeout
 * and name it. */
static void a_silent_stage_times_out_by_name(void) {
  fixture a = make(chain);
  hm_fit_options o = opts(HM_OPTIMIZER_SGD, 2);
  hm_partition *p = cut(a.g, "h1", "h2");
  faulty f;
  memset(&f, 0, sizeof f);
  f.silent_after = 9; /* a few updates in */
  stage_thread t[3];
  double t0 = (double)time(NULL);
  run_stages(p, t, &o, &f, 2, 1.0, -1);
  HM_CHECK(time(NULL) - t0 < 20);
  HM_CHECK_EQ(t[2].status, HM_STATUS_UNAVAILABLE);
  HM_CHECK_STR_CONTAINS(t[2].error, "the test pulled the plug");
  HM_CHECK_EQ(t[1].status, HM_STATUS_UNAVAILABLE);
  HM_CHECK_STR_CONTAINS(t[1].error, "from stage 2: no message from stage 2 within 1 s");
  HM_CHECK_EQ(t[0].status, HM_STATUS_UNAVAILABLE);
  HM_CHECK_STR_CONTAINS(t[0].error, "pipeline stage 0: ");
  free_stage_threads(t, 3);
  /* A stage never started: stage 0 sends ahead, then waits for its
   * gradients; stage 2 waits for its inputs. Whichever gives up first names
   * stage 1, and the other hears of it. */
  run_stages(p, t, &o, NULL, 0, 0.5, 1);
  HM_CHECK_EQ(t[0].status, HM_STATUS_UNAVAILABLE);
  HM_CHECK_STR_CONTAINS(t[0].error, "pipeline stage 0: waiting for boundary0 backward, step 0, micro-batch 0, 3x8 f32 "
                                    "from stage 1: ");
  HM_CHECK_STR_CONTAINS(t[0].error, "no message from stage 1 within 0.5 s");
  HM_CHECK_EQ(t[2].status, HM_STATUS_UNAVAILABLE);
  HM_CHECK_STR_CONTAINS(t[2].error, "no message from stage 1 within 0.5 s");
  free_stage_threads(t, 3);
  hm_partition_free(p);
  unmake(&a);
}

static void stages_that_disagree_stop_at_start(void) {
  fixture a = make(chain);
  hm_fit_options o = opts(HM_OPTIMIZER_ADAM, 2);
  hm_partition *p = cut(a.g, "h1", NULL);
  stage_thread t[2];
  hm_pipeline_local *l = NULL;
  HM_CHECK_OK(hm_pipeline_local_open(2, &l));
  (void)hm_plugin_count();
  pthread_t th[2];
  for (size_t k = 0; k < 2; k++) {
    memset(&t[k], 0, sizeof t[k]);
    t[k].g = hm_partition_stage(p, k);
    t[k].o = o;
    t[k].ps = hm_pipeline_stage_default();
    t[k].ps.partition = p;
    t[k].ps.stage = k;
    t[k].ps.transport = hm_pipeline_local_transport(l, k);
    t[k].ps.timeout_seconds = 30;
    t[k].o.pipeline = &t[k].ps;
  }
  t[1].o.learning_rate = 0.02f;
  t[1].o.lr_schedule_fp.fn = NULL;
  t[0].o.lr_schedule_fp.fn = NULL;
  for (size_t k = 0; k < 2; k++) pthread_create(&th[k], NULL, run_stage, &t[k]);
  for (size_t k = 0; k < 2; k++) pthread_join(th[k], NULL);
  HM_CHECK_EQ(t[1].status, HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(t[1].error, "pipeline stage 1: learning_rate is 0.02 here but 0.05 on stage 0");
  HM_CHECK_EQ(t[0].status, HM_STATUS_UNAVAILABLE);
  HM_CHECK_STR_CONTAINS(t[0].error, "stage 1 failed: pipeline stage 1: learning_rate");
  free_stage_threads(t, 2);
  hm_pipeline_local_close(l);
  /* Misuse is named. */
  hm_cycle_state *s = NULL;
  hm_pipeline_stage ps = hm_pipeline_stage_default();
  ps.partition = p;
  ps.stage = 1;
  ps.transport = NULL;
  hm_fit_options bad = o;
  bad.pipeline = &ps;
  HM_CHECK_EQ(hm_graph_fit(hm_partition_stage(p, 1), 1, NULL, &bad, &s), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "the transport needs struct_size, send and recv");
  ps.transport = hm_pipeline_local_transport(NULL, 0);
  HM_CHECK(ps.transport == NULL);
  HM_CHECK_OK(hm_pipeline_local_open(2, &l));
  ps.transport = hm_pipeline_local_transport(l, 1);
  HM_CHECK_EQ(hm_graph_fit(a.g, 1, NULL, &bad, &s), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "fit trains stage 1's graph (hm_partition_stage(p, 1)), not graph 'graph'");
  hm_trainer *tr = NULL;
  HM_CHECK_EQ(hm_trainer_open(hm_partition_stage(p, 1), NULL, &bad, &tr), HM_STATUS_UNIMPLEMENTED);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "a pipeline stage trains with hm_graph_fit");
  hm_eval_result r;
  HM_CHECK_EQ(hm_graph_inference(hm_partition_stage(p, 1), NULL, &bad, 0, &r), HM_STATUS_UNIMPLEMENTED);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "hm_partition_graph holds the trained weights");
  hm_pipeline_local_close(l);
  hm_partition_free(p);
  unmake(&a);
}

/* A stage that fails (here: its backend does not exist) stops the others
 * at once, and hm_partition_fit names it. */
static void a_failing_stage_is_named(void) {
  fixture a = make(chain);
  hm_fit_options o = opts(HM_OPTIMIZER_ADAM, 2);
  hm_partition *p = cut(a.g, "h1", NULL);
  hm_partition_run_options run = hm_partition_run_options_default();
  const char *backends[2] = {NULL, "nosuchbackend"};
  run.stage_backends = backends;
  hm_cycle_state *states[2] = {NULL, NULL};
  HM_CHECK(hm_partition_fit(p, 1, NULL, &o, &run, states) != HM_OK);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "pipeline stage 1: ");
  HM_CHECK_STR_CONTAINS(hm_last_error(), "nosuchbackend");
  HM_CHECK(states[0] == NULL && states[1] == NULL);
  hm_partition_free(p);
  unmake(&a);
}

/* ===== The header on the wire ===== */

static void the_header_round_trips_and_refuses_damage(void) {
  hm_boundary_header h = {HM_PIPE_BACKWARD, 3, 1234567890123ull, 5, HM_ABI_DTYPE_F32, 64, 1024, 64 * 1024 * 4}, back;
  unsigned char wire[HM_BOUNDARY_HEADER_BYTES];
  hm_boundary_header_encode(&h, wire);
  HM_CHECK(memcmp(wire, "HMPB", 4) == 0);
  HM_CHECK_OK(hm_boundary_header_decode(wire, &back));
  HM_CHECK(memcmp(&h, &back, sizeof h) == 0);
  char text[160];
  hm_boundary_header_format(&h, text, sizeof text);
  HM_CHECK_STR_CONTAINS(text, "boundary3 backward, step 1234567890123, micro-batch 5, 64x1024 f32");
  wire[20] ^= 1;
  HM_CHECK_EQ(hm_boundary_header_decode(wire, &back), HM_STATUS_DATA_LOSS);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "header checksum");
  wire[20] ^= 1;
  wire[4] = 2;
  HM_CHECK_EQ(hm_boundary_header_decode(wire, &back), HM_STATUS_INCOMPATIBLE);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "header version 2");
  wire[0] = 'X';
  HM_CHECK_EQ(hm_boundary_header_decode(wire, &back), HM_STATUS_DATA_LOSS);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "not a Harmonics header");
}

static const hm_test_case cases[] = {
    HM_TEST_CASE(stages_and_boundaries_follow_the_cuts),
    HM_TEST_CASE(bad_cuts_say_what_is_wrong),
    HM_TEST_CASE(two_stages_every_optimizer_are_bit_identical),
    HM_TEST_CASE(three_stages_every_optimizer_are_bit_identical),
    HM_TEST_CASE(a_layer_read_by_two_stages_is_bit_identical),
    HM_TEST_CASE(quantized_stages_are_bit_identical),
    HM_TEST_CASE(evaluation_runs_through_the_stages),
    HM_TEST_CASE(the_last_stage_reports_and_decides),
    HM_TEST_CASE(stage_checkpoints_resume_bit_identically),
    HM_TEST_CASE(the_last_stage_gathers_the_whole_weights),
    HM_TEST_CASE(a_corrupted_header_is_refused),
    HM_TEST_CASE(a_silent_stage_times_out_by_name),
    HM_TEST_CASE(stages_that_disagree_stop_at_start),
    HM_TEST_CASE(a_failing_stage_is_named),
    HM_TEST_CASE(the_header_round_trips_and_refuses_damage),
};

int main(int argc, char **argv) {
  /* The CPU plugin alone: these cases are about the runtime, and other
   * plugins' libraries (Mesa, PoCL) loaded into a process whose threads come
   * and go trip LeakSanitizer's thread walk at exit. */
  setenv("HARMONICS_BACKEND", "cpu", 1);
  return hm_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
