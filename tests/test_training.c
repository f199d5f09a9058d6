/*
 * Training semantics (DESIGN.md §4): the worked examples of
 * reference/original-behaviour.md §3.3-§3.7 adapted to real gradients, every
 * FitOptions field's effect, whole-graph gradients against central
 * differences of a float64 reference forward, determinism, and bad inputs.
 *
 * The "bias graph" makes the gradient constant: producer x = [0] feeds layer
 * l {1}; an MAE loss against t = [100] gives dLoss/dl = -1 while l < 100, so
 * the bias sees g = -1 every step and the weight sees 0.
 */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "harmonics/harmonics.h"
#include "hm_test.h"
#include "solo_collectives.h"

static hm_device *dev;

static hm_graph *parse(const char *text) {
  hm_graph *g = NULL;
  if (hm_graph_parse(text, strlen(text), "t.hmx", &g) != HM_OK) fprintf(stderr, "  parse: %s\n", hm_last_error());
  return g;
}

typedef struct bias_fixture {
  hm_graph *g;
  hm_producer *x, *t;
} bias_fixture;

/* The weights of the one connection x->l: weight [1, 1] and bias [1]. */
static hm_weights *scalar_weights(float weight, float bias) {
  hm_weights *w = NULL;
  uint64_t s2[2] = {1, 1}, s1[1] = {1};
  if (hm_weights_create(&w) || hm_weights_set(w, "x->l.weight", HM_ABI_DTYPE_F32, 2, s2, &weight) ||
      hm_weights_set(w, "x->l.bias", HM_ABI_DTYPE_F32, 1, s1, &bias))
    fprintf(stderr, "  fixture weights: %s\n", hm_last_error());
  return w;
}

/* x = [x0] -> l {1}, |loss| against t = [100], weights (w0, b0). */
static bias_fixture bias_graph_with(const char *loss, float x0, float w0, float b0) {
  char text[160];
  snprintf(text, sizeof text, "producer x {1}; producer t {1}; layer l {1}; cycle { x -> l; l <-(%s)- t; }", loss);
  bias_fixture f = {parse(text), NULL, NULL};
  float target = 100.0f;
  if (hm_producer_from_floats(&x0, 1, 1, &f.x) || hm_producer_from_floats(&target, 1, 1, &f.t) ||
      hm_graph_bind_producer(f.g, "x", f.x) || hm_graph_bind_producer(f.g, "t", f.t))
    fprintf(stderr, "  fixture: %s\n", hm_last_error());
  hm_weights *w = scalar_weights(w0, b0);
  if (hm_graph_set_weights(f.g, w)) fprintf(stderr, "  fixture weights: %s\n", hm_last_error());
  hm_weights_free(w);
  return f;
}

static bias_fixture bias_graph(void) { return bias_graph_with("mae", 0.0f, 0.5f, 0.0f); }

static void bias_free(bias_fixture *f) {
  hm_graph_free(f->g);
  hm_producer_free(f->x);
  hm_producer_free(f->t);
}

static float bias_of(const hm_graph *g) {
  hm_tensor t;
  if (hm_weights_find(hm_graph_weights(g), "x->l.bias", &t) != HM_OK) return NAN;
  return ((float *)t.data)[0];
}

static hm_fit_options base_opts(hm_optimizer o, float lr) {
  hm_fit_options opts = hm_fit_options_default();
  opts.optimizer = o;
  opts.learning_rate = lr;
  opts.batch_size = 1;
  opts.device = dev;
  return opts;
}

typedef struct progress_log {
  size_t n;
  size_t steps[64];
  float norms[64], losses[64], lrs[64];
} progress_log;

static void record(void *user, size_t step, float norm, float loss, float lr) {
  progress_log *p = user;
  if (p->n < 64) {
    p->steps[p->n] = step;
    p->norms[p->n] = norm;
    p->losses[p->n] = loss;
    p->lrs[p->n] = lr;
  }
  p->n++;
}

static float run_bias(hm_optimizer o, float lr, size_t epochs, hm_fit_options *override, size_t *steps) {
  bias_fixture f = bias_graph();
  hm_fit_options opts = override ? *override : base_opts(o, lr);
  hm_cycle_state *st = NULL;
  float b = NAN;
  hm_status s = hm_graph_fit(f.g, epochs, NULL, &opts, &st);
  HM_CHECK_OK(s);
  if (s == HM_OK) {
    b = bias_of(f.g);
    if (steps) *steps = hm_cycle_state_step(st);
  }
  hm_cycle_state_free(st);
  bias_free(&f);
  return b;
}

/* LAMB with nonzero parameters, where trust = ||p||/||u|| != 1. Bias fixture
 * with b0 = 3, w0 = 0.5, lr 0.1, wd 0.1. Every step has m_hat = g, v_hat = g^2
 * for a constant g, so for the bias (g = -1): u = -1 + 0.1 b, trust = b/|u|,
 * b -= 0.1 * trust * u = b + 0.1 b: b = 3, 3.3, 3.63 (trust 4.286, then
 * 4.925). For the weight (g = 0): u = 0.1 w, trust = 10, w -= 0.1 w:
 * w = 0.5, 0.45, 0.405. A trust of 1 would give b = 3.07, 3.137. */
static void lamb_scales_the_step_by_trust(void) {
  bias_fixture f = bias_graph_with("mae", 0.0f, 0.5f, 3.0f);
  hm_fit_options o = base_opts(HM_OPTIMIZER_LAMB, 0.1f);
  o.weight_decay = 0.1f;
  hm_cycle_state *st = NULL;
  HM_CHECK_OK(hm_graph_fit(f.g, 2, NULL, &o, &st));
  HM_CHECK_NEAR(bias_of(f.g), 3.63, 2e-6);
  hm_tensor t;
  HM_CHECK_OK(hm_weights_find(hm_graph_weights(f.g), "x->l.weight", &t));
  HM_CHECK_NEAR(((float *)t.data)[0], 0.405, 1e-6);
  hm_cycle_state_free(st);
  bias_free(&f);
}

static void optimizers_follow_the_worked_examples(void) {
  HM_CHECK_NEAR(run_bias(HM_OPTIMIZER_SGD, 0.1f, 3, NULL, NULL), 0.3, 1e-6);
  HM_CHECK_NEAR(run_bias(HM_OPTIMIZER_ADAM, 0.001f, 5, NULL, NULL), 0.005, 1e-7);
  HM_CHECK_NEAR(run_bias(HM_OPTIMIZER_RMSPROP, 0.01f, 3, NULL, NULL), 0.0316228 + 0.0229416 + 0.0192095, 1e-6);
  hm_fit_options o = base_opts(HM_OPTIMIZER_ADAMW, 0.1f);
  o.weight_decay = 0.5f;
  HM_CHECK_NEAR(run_bias(HM_OPTIMIZER_ADAMW, 0.1f, 2, &o, NULL), 0.195, 1e-6);
  HM_CHECK_NEAR(run_bias(HM_OPTIMIZER_LAMB, 0.1f, 1, NULL, NULL), 0.1, 1e-6);
  lamb_scales_the_step_by_trust();
  o = base_opts(HM_OPTIMIZER_SGD, 0.1f);
  o.momentum = 0.9f; /* v: 1, 1.9, 2.71 -> b = 0.1 * 5.61 */
  HM_CHECK_NEAR(run_bias(HM_OPTIMIZER_SGD, 0.1f, 3, &o, NULL), 0.561, 1e-6);
}

static void grad_clip_clamps_elements(void) {
  hm_fit_options o = base_opts(HM_OPTIMIZER_SGD, 0.1f);
  o.grad_clip = 0.5f;
  HM_CHECK_NEAR(run_bias(HM_OPTIMIZER_SGD, 0.1f, 1, &o, NULL), 0.05, 1e-7);
  o.grad_clip = 0.0f; /* off */
  HM_CHECK_NEAR(run_bias(HM_OPTIMIZER_SGD, 0.1f, 1, &o, NULL), 0.1, 1e-7);
}

static void schedule_and_progress(void) {
  progress_log log = {0};
  hm_fit_options o = base_opts(HM_OPTIMIZER_SGD, 0.1f);
  o.lr_schedule_fp = hm_exponential_decay_schedule(0.1f, 0.5f, 1, 0.0f);
  o.progress.fn = record;
  o.progress.user = &log;
  HM_CHECK_NEAR(run_bias(HM_OPTIMIZER_SGD, 0.1f, 3, &o, NULL), 0.175, 1e-6);
  HM_CHECK_EQ(log.n, 3);
  for (size_t i = 0; i < 3; i++) {
    HM_CHECK_EQ(log.steps[i], i + 1);
    HM_CHECK_NEAR(log.norms[i], 1.0, 1e-6);  /* |dL/db| = 1, dL/dW = 0 */
    HM_CHECK_NEAR(log.losses[i], 100.0 - 0.1 * (i ? (i == 1 ? 1 : 1.5) : 0), 1e-4);
  }
  HM_CHECK_NEAR(log.lrs[0], 0.1, 1e-7);
  HM_CHECK_NEAR(log.lrs[1], 0.05, 1e-7);
  HM_CHECK_NEAR(log.lrs[2], 0.025, 1e-7);
  /* The schedule itself: {0.1, 0.5, 2, 0.01}. */
  hm_lr_schedule s = hm_exponential_decay_schedule(0.1f, 0.5f, 2, 0.01f);
  HM_CHECK_NEAR(s.fn(0, &s), 0.1, 1e-8);
  HM_CHECK_NEAR(s.fn(1, &s), 0.1, 1e-8);
  HM_CHECK_NEAR(s.fn(2, &s), 0.05, 1e-8);
  HM_CHECK_NEAR(s.fn(4, &s), 0.025, 1e-8);
  HM_CHECK_NEAR(s.fn(6, &s), 0.0125, 1e-8);
  HM_CHECK_NEAR(s.fn(8, &s), 0.01, 1e-8); /* 0.00625 clamped */
  hm_lr_schedule c = hm_exponential_decay_schedule(0.3f, 0.5f, 0, 0.5f);
  HM_CHECK_NEAR(c.fn(100, &c), 0.3, 1e-7); /* decay_steps 0: constant, no clamp */
  hm_lr_schedule seed_example = hm_exponential_decay_schedule(0.001f, 0.9f, 10, 0.0f);
  HM_CHECK_NEAR(seed_example.fn(9, &seed_example), 0.001, 1e-9);
  HM_CHECK_NEAR(seed_example.fn(10, &seed_example), 0.0009, 1e-9);
}

/* An epoch here is one micro-batch: a group never spans epochs, so each
 * epoch's partial group is applied at its end (averaged over its own
 * micro-batches), whatever k is. */
static void accumulation_averages_and_flushes(void) {
  progress_log log = {0};
  hm_fit_options o = base_opts(HM_OPTIMIZER_SGD, 0.01f);
  o.accumulate_steps = 2;
  o.progress.fn = record;
  o.progress.user = &log;
  size_t steps = 0;
  HM_CHECK_NEAR(run_bias(HM_OPTIMIZER_SGD, 0.01f, 4, &o, &steps), 0.04, 1e-7);
  HM_CHECK_EQ(steps, 4);
  HM_CHECK_EQ(log.n, 4);
  HM_CHECK_EQ(log.steps[0], 1);
  HM_CHECK_EQ(log.steps[3], 4);
  HM_CHECK_NEAR(log.norms[0], 1.0, 1e-6); /* the averaged gradient's norm */
  memset(&log, 0, sizeof log);
  o.accumulate_steps = 3;
  HM_CHECK_NEAR(run_bias(HM_OPTIMIZER_SGD, 0.01f, 4, &o, &steps), 0.04, 1e-7);
  HM_CHECK_EQ(steps, 4);
}

static float negative_rate(size_t step, const hm_lr_schedule *self) {
  (void)step, (void)self;
  return -0.5f;
}
static float nan_at_3(size_t step, const hm_lr_schedule *self) {
  (void)self;
  return step == 3 ? NAN : 0.01f;
}

/* Every rate a schedule returns must be finite and >= 0; the run stops
 * naming the update. */
static void schedule_output_is_checked(void) {
  float (*fns[2])(size_t, const hm_lr_schedule *) = {negative_rate, nan_at_3};
  const char *expect[2] = {"returned -0.5 for update 0", "returned nan for update 3"};
  for (int i = 0; i < 2; i++) {
    bias_fixture f = bias_graph();
    hm_fit_options o = base_opts(HM_OPTIMIZER_SGD, 0.01f);
    o.lr_schedule_fp.fn = fns[i];
    hm_cycle_state *st = NULL;
    HM_CHECK_EQ(hm_graph_fit(f.g, 10, NULL, &o, &st), HM_STATUS_INVALID_ARGUMENT);
    HM_CHECK_STR_CONTAINS(hm_last_error(), expect[i]);
    HM_CHECK(st == NULL);
    bias_free(&f);
  }
}

/* An option the chosen optimizer does not read is refused, naming it; the
 * optimizers that read it accept it. */
static void options_unused_by_the_optimizer_are_refused(void) {
  struct {
    const char *field;
    size_t offset;
    float value;
    unsigned users; /* bit per hm_optimizer */
  } cases[] = {
      {"momentum", offsetof(hm_fit_options, momentum), 0.9f, 1u << HM_OPTIMIZER_SGD},
      {"weight_decay", offsetof(hm_fit_options, weight_decay), 0.5f, 1u << HM_OPTIMIZER_ADAMW | 1u << HM_OPTIMIZER_LAMB},
      {"beta1", offsetof(hm_fit_options, beta1), 0.8f, 1u << HM_OPTIMIZER_ADAM | 1u << HM_OPTIMIZER_ADAMW | 1u << HM_OPTIMIZER_LAMB},
      {"beta2", offsetof(hm_fit_options, beta2), 0.99f, 1u << HM_OPTIMIZER_ADAM | 1u << HM_OPTIMIZER_ADAMW | 1u << HM_OPTIMIZER_LAMB},
      {"epsilon", offsetof(hm_fit_options, epsilon), 1e-6f, 0x1fu & ~(1u << HM_OPTIMIZER_SGD)},
      {"rho", offsetof(hm_fit_options, rho), 0.5f, 1u << HM_OPTIMIZER_RMSPROP},
  };
  size_t refused = 0;
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    for (int opt = 0; opt < HM_OPTIMIZER_COUNT; opt++) {
      bias_fixture f = bias_graph();
      hm_fit_options o = base_opts((hm_optimizer)opt, 0.01f);
      memcpy((char *)&o + cases[c].offset, &cases[c].value, sizeof(float));
      hm_cycle_state *st = NULL;
      hm_status s = hm_graph_fit(f.g, 1, NULL, &o, &st);
      if (cases[c].users & (1u << opt)) {
        HM_CHECK_MSG(s == HM_OK, "%s with %s: %s", cases[c].field, hm_optimizer_name((uint32_t)opt), hm_last_error());
      } else {
        char expect[160];
        snprintf(expect, sizeof expect, "hm_fit_options.%s is %g but optimizer %s does not use it", cases[c].field,
                 (double)cases[c].value, hm_optimizer_name((uint32_t)opt));
        HM_CHECK_EQ(s, HM_STATUS_INVALID_ARGUMENT);
        HM_CHECK_STR_CONTAINS(hm_last_error(), expect);
        refused++;
      }
      hm_cycle_state_free(st);
      bias_free(&f);
    }
  }
  HM_CHECK_EQ(refused, 4 + 3 + 2 + 2 + 1 + 4);
}

/* Buffers are sized per use: training at batch 4 on 8 samples without
 * evaluation data holds 4-row activations and gradients, not
 * eval_batch_size (1000) rows. The bytes, counted by hand:
 *   data x 8x3 + t 8x2 floats: 96 + 64; batch index 4 + stats 4 floats: 16 + 16;
 *   batches x 4x3, t 4x2: 48 + 32; gradients h 4x4, o 4x2: 64 + 32;
 *   x->h: z 64, tanh(z) 64, dz 64;  h->o: z 32 (identity: a = z; dz = o's gradient);
 *   the parameter arena (SGD without momentum: parameters and gradients),
 *   each tensor padded to 16 floats: W 12 -> 16, b 4 -> 16, W 8 -> 16,
 *   b 2 -> 16 floats, 256 bytes each for the parameters and the gradients.
 * With 6 evaluation samples, activations take 6 rows (eval_batch_size capped
 * by the data) while gradients keep 4. */
static void buffers_are_sized_per_use(void) {
  const char *text = "producer x {3}; producer t {2}; layer h {4}; layer o;"
                     " cycle { x -(tanh)-> h -> o; o <-(mse)- t; }";
  float x[8 * 3] = {0}, t[8 * 2] = {0};
  for (int with_eval = 0; with_eval < 2; with_eval++) {
    hm_graph *g = parse(text);
    hm_producer *px = NULL, *pt = NULL, *ex = NULL, *et = NULL;
    HM_CHECK_OK(hm_producer_from_floats(x, 8, 3, &px));
    HM_CHECK_OK(hm_producer_from_floats(t, 8, 2, &pt));
    HM_CHECK_OK(hm_graph_bind_producer(g, "x", px));
    HM_CHECK_OK(hm_graph_bind_producer(g, "t", pt));
    if (with_eval) {
      HM_CHECK_OK(hm_producer_from_floats(x, 6, 3, &ex));
      HM_CHECK_OK(hm_producer_from_floats(t, 6, 2, &et));
      HM_CHECK_OK(hm_graph_bind_eval(g, "x", ex));
      HM_CHECK_OK(hm_graph_bind_eval(g, "t", et));
    }
    hm_fit_options o = base_opts(HM_OPTIMIZER_SGD, 0.01f);
    o.batch_size = 4;
    hm_cycle_state *st = NULL;
    HM_CHECK_OK(hm_graph_fit(g, 1, NULL, &o, &st));
    size_t train_only = 96 + 64 + 16 + 16 + 48 + 32 + 64 + 32 + (64 + 64 + 64) + 32 + 2 * 256;
    /* Evaluation: its data (6x3 + 6x2 floats), and 6 rows instead of 4 for the
     * batch index, the two producer batches, z and tanh(z) of x->h, z of h->o. */
    size_t eval_extra = 72 + 48 + 2 * 4 + 2 * (12 + 8) + 2 * (16 + 16) + 2 * 8;
    HM_CHECK_EQ(hm_cycle_state_device_bytes(st), with_eval ? train_only + eval_extra : train_only);
    hm_cycle_state_free(st);
    hm_graph_free(g);
    hm_producer_free(px);
    hm_producer_free(pt);
    hm_producer_free(ex);
    hm_producer_free(et);
  }
}

/* Accumulating 2 micro-batches of 4 equals one batch of 8. */
static void accumulation_equals_one_big_batch(void) {
  const char *text = "producer x {3}; producer t {2}; layer h {4}; layer o;"
                     " cycle { x -(tanh)-> h -> o; o <-(mse)- t; }";
  float x[8 * 3], t[8 * 2];
  unsigned long long seed = 5;
  for (int i = 0; i < 24; i++) x[i] = hm_test_uniform(&seed, -1, 1);
  for (int i = 0; i < 16; i++) t[i] = hm_test_uniform(&seed, -1, 1);
  hm_weights *results[2] = {NULL, NULL};
  for (int run = 0; run < 2; run++) {
    hm_graph *g = parse(text);
    hm_producer *px = NULL, *pt = NULL;
    HM_CHECK_OK(hm_producer_from_floats(x, 8, 3, &px));
    HM_CHECK_OK(hm_producer_from_floats(t, 8, 2, &pt));
    HM_CHECK_OK(hm_graph_bind_producer(g, "x", px));
    HM_CHECK_OK(hm_graph_bind_producer(g, "t", pt));
    hm_fit_options o = base_opts(HM_OPTIMIZER_ADAM, 0.01f);
    o.shuffle = 0;
    o.seed = 3;
    o.batch_size = run ? 4 : 8;
    o.accumulate_steps = run ? 2 : 1;
    hm_cycle_state *st = NULL;
    HM_CHECK_OK(hm_graph_fit(g, 5, NULL, &o, &st));
    HM_CHECK_EQ(hm_cycle_state_step(st), 5);
    HM_CHECK_OK(hm_weights_clone(hm_graph_weights(g), &results[run]));
    hm_cycle_state_free(st);
    hm_graph_free(g);
    hm_producer_free(px);
    hm_producer_free(pt);
  }
  for (size_t i = 0; results[0] && results[1] && i < hm_weights_count(results[0]); i++) {
    hm_tensor a, b;
    HM_CHECK_OK(hm_weights_at(results[0], i, &a));
    HM_CHECK_OK(hm_weights_find(results[1], a.name, &b));
    for (size_t k = 0; k < a.bytes / 4; k++)
      HM_CHECK_MSG(fabsf(((float *)a.data)[k] - ((float *)b.data)[k]) <= 1e-5f, "%s[%zu]: %.8g vs %.8g", a.name, k,
                   ((float *)a.data)[k], ((float *)b.data)[k]);
  }
  hm_weights_free(results[0]);
  hm_weights_free(results[1]);
}

static void early_stop_counts_non_improving_updates(void) {
  hm_fit_options o = base_opts(HM_OPTIMIZER_SGD, 0.01f);
  o.early_stop_patience = 2;
  size_t steps = 0;
  bias_fixture f = bias_graph();
  hm_cycle_state *st = NULL;
  HM_CHECK_OK(hm_graph_fit(f.g, 10, NULL, &o, &st));
  steps = hm_cycle_state_step(st);
  HM_CHECK_EQ(steps, 3); /* constant norm: 1 improvement, then 2 stalls */
  HM_CHECK(strcmp(hm_cycle_state_stop_reason(st), "early_stop") == 0);
  hm_cycle_state_free(st);
  bias_free(&f);
  /* A delta larger than any change also stops; patience 0 never does. */
  o.early_stop_patience = 1;
  o.early_stop_delta = 0.1f;
  run_bias(HM_OPTIMIZER_SGD, 0.01f, 10, &o, &steps);
  HM_CHECK_EQ(steps, 2);
  o.early_stop_patience = 0;
  run_bias(HM_OPTIMIZER_SGD, 0.01f, 10, &o, &steps);
  HM_CHECK_EQ(steps, 10);
}

static void data_parallel_on_one_rank_is_a_plain_fit(void) {
  static const char text[] = "producer x {2}; producer y {1}; layer h {4}; layer o {1}; "
                             "cycle { x -(relu)-> h -> o; o <-(mse)- y; }";
  float x[14] = {0, 1, 1, 0, 1, 1, 2, 1, 1, 2, 0, 2, 2, 2}, y[7] = {2, 1, 3, 4, 5, 4, 6};
  hm_producer *px = NULL, *py = NULL;
  HM_CHECK_OK(hm_producer_from_floats(x, 7, 2, &px));
  HM_CHECK_OK(hm_producer_from_floats(y, 7, 1, &py));
  solo_ranks ranks = {0, 0};
  hm_collectives solo = solo_collectives(&ranks);
  hm_weights *w[2] = {NULL, NULL};
  for (int k = 0; k < 2; k++) {
    hm_graph *g = parse(text);
    HM_CHECK_OK(hm_graph_bind_producer(g, "x", px));
    HM_CHECK_OK(hm_graph_bind_producer(g, "y", py));
    hm_fit_options o = base_opts(HM_OPTIMIZER_ADAM, 0.01f);
    o.batch_size = 3;
    o.accumulate_steps = 2;
    o.collectives = k ? &solo : NULL;
    hm_cycle_state *st = NULL;
    HM_CHECK_OK(hm_graph_fit(g, 3, NULL, &o, &st));
    HM_CHECK_OK(hm_weights_clone(hm_graph_weights(g), &w[k]));
    hm_cycle_state_free(st);
    hm_graph_free(g);
  }
  HM_CHECK(ranks.reduces > 6); /* the start check, then one per update */
  for (size_t i = 0; w[0] && w[1] && i < hm_weights_count(w[0]); i++) {
    hm_tensor a, b;
    HM_CHECK_OK(hm_weights_at(w[0], i, &a));
    HM_CHECK_OK(hm_weights_find(w[1], a.name, &b));
    HM_CHECK_MSG(a.bytes == b.bytes && memcmp(a.data, b.data, a.bytes) == 0, "%s differs", a.name);
  }
  /* A collective that fails ends the fit with its message. */
  hm_graph *g = parse(text);
  HM_CHECK_OK(hm_graph_bind_producer(g, "x", px));
  HM_CHECK_OK(hm_graph_bind_producer(g, "y", py));
  ranks.reduces = 0;
  ranks.fail_after = 3;
  hm_fit_options o = base_opts(HM_OPTIMIZER_SGD, 0.01f);
  o.collectives = &solo;
  hm_cycle_state *st = NULL;
  HM_CHECK_EQ(hm_graph_fit(g, 3, NULL, &o, &st), HM_STATUS_UNAVAILABLE);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "data parallel: summing the gradients: rank 1 is gone");
  HM_CHECK(st == NULL);
  hm_graph_free(g);
  hm_weights_free(w[0]);
  hm_weights_free(w[1]);
  hm_producer_free(px);
  hm_producer_free(py);
}

static int cancel_on_fourth_call(void *user) { return ++*(int *)user == 4; }

static void cancel_stops_after_the_update_it_follows(void) {
  hm_fit_options o = base_opts(HM_OPTIMIZER_SGD, 0.01f);
  int calls = 0;
  o.cancel = cancel_on_fourth_call;
  o.cancel_user = &calls;
  bias_fixture f = bias_graph();
  hm_cycle_state *st = NULL;
  HM_CHECK_OK(hm_graph_fit(f.g, 10, NULL, &o, &st));
  HM_CHECK_EQ(calls, 4);
  HM_CHECK_EQ(hm_cycle_state_step(st), 4);
  HM_CHECK_EQ(hm_cycle_state_stop(st), HM_STOP_CANCELLED);
  HM_CHECK(strcmp(hm_cycle_state_stop_reason(st), "cancelled") == 0);
  hm_tensor t;
  HM_CHECK_OK(hm_weights_find(hm_graph_weights(f.g), "x->l.bias", &t));
  HM_CHECK_NEAR(((float *)t.data)[0], 0.04f, 1e-6); /* four updates of lr * 1 */
  hm_cycle_state_free(st);
  bias_free(&f);
}

typedef struct until_ctx {
  size_t calls;
  float last_bias;
} until_ctx;

static int stop_at_five(const hm_cycle_state *st, void *user) {
  until_ctx *c = user;
  c->calls++;
  hm_tensor t;
  const hm_weights *w = hm_cycle_state_weights(st);
  if (w && hm_weights_find(w, "x->l.bias", &t) == HM_OK) c->last_bias = ((float *)t.data)[0];
  return hm_cycle_state_step(st) >= 5;
}

static void fit_until_and_fit_for(void) {
  bias_fixture f = bias_graph();
  hm_fit_options o = base_opts(HM_OPTIMIZER_SGD, 0.1f);
  until_ctx c = {0, 0};
  hm_cycle_state *st = NULL;
  HM_CHECK_OK(hm_graph_fit_until(f.g, stop_at_five, &c, NULL, &o, &st));
  HM_CHECK_EQ(hm_cycle_state_step(st), 5);
  HM_CHECK_EQ(c.calls, 5);                 /* after every update */
  HM_CHECK_NEAR(c.last_bias, 0.5, 1e-6);   /* the predicate sees current weights */
  HM_CHECK(strcmp(hm_cycle_state_stop_reason(st), "predicate") == 0);
  hm_cycle_state_free(st);
  st = NULL;
  HM_CHECK_OK(hm_graph_fit_for(f.g, 0.0, NULL, &o, &st));
  HM_CHECK_EQ(hm_cycle_state_step(st), 1); /* at least one update */
  HM_CHECK(strcmp(hm_cycle_state_stop_reason(st), "time") == 0);
  HM_CHECK_NEAR(bias_of(f.g), 0.6, 1e-6);  /* fit continues from the graph's weights */
  hm_cycle_state_free(st);
  HM_CHECK_EQ(hm_graph_fit_for(f.g, -1.0, NULL, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_EQ(hm_graph_fit_until(f.g, NULL, NULL, NULL, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  bias_free(&f);
}

/* ===== A diverging run stops ===== */

typedef struct linear_fixture {
  hm_graph *g;
  hm_producer *x, *t;
} linear_fixture;

/* The audit's reproduction: a linear model, MSE, 8 samples of 4 inputs. */
static linear_fixture linear_graph(void) {
  linear_fixture f = {parse("producer x {4}; producer t {1}; layer o {1}; cycle { x -> o; o <-(mse)- t; }"), NULL,
                      NULL};
  float x[8 * 4], t[8];
  unsigned long long seed = 11;
  for (int i = 0; i < 32; i++) x[i] = hm_test_uniform(&seed, -2, 2);
  for (int i = 0; i < 8; i++) t[i] = hm_test_uniform(&seed, -1, 1);
  HM_CHECK_OK(hm_producer_from_floats(x, 8, 4, &f.x));
  HM_CHECK_OK(hm_producer_from_floats(t, 8, 1, &f.t));
  HM_CHECK_OK(hm_graph_bind_producer(f.g, "x", f.x));
  HM_CHECK_OK(hm_graph_bind_producer(f.g, "t", f.t));
  return f;
}

static void linear_free(linear_fixture *f) {
  hm_graph_free(f->g);
  hm_producer_free(f->x);
  hm_producer_free(f->t);
}

static int all_finite(const hm_weights *w) {
  for (size_t i = 0; w && i < hm_weights_count(w); i++) {
    hm_tensor t;
    if (hm_weights_at(w, i, &t) != HM_OK) return 0;
    for (size_t k = 0; k < t.bytes / 4; k++)
      if (!isfinite(((float *)t.data)[k])) return 0;
  }
  return w != NULL;
}

static int same_weights(const hm_weights *a, const hm_weights *b) {
  if (!a || !b || hm_weights_count(a) != hm_weights_count(b)) return 0;
  for (size_t i = 0; i < hm_weights_count(a); i++) {
    hm_tensor x, y;
    if (hm_weights_at(a, i, &x) != HM_OK || hm_weights_find(b, x.name, &y) != HM_OK || x.bytes != y.bytes ||
        memcmp(x.data, y.data, x.bytes) != 0)
      return 0;
  }
  return 1;
}

static int stop_at_step(const hm_cycle_state *st, void *user) {
  return hm_cycle_state_step(st) >= *(size_t *)user;
}

/* lr 10 on MSE diverges within a few epochs; fit returns DIVERGED naming the
 * step, the loss and the rate, never reports the bad update, and leaves the
 * graph (and the checkpoint) with the weights after the last finite step,
 * bit-identical to a run stopped there. */
static void divergence_stops_with_the_last_finite_weights(void) {
  const char *ck = "test_training_diverged.hck";
  for (int variant = 0; variant < 3; variant++) {
    linear_fixture f = linear_graph();
    hm_fit_options o = base_opts(variant == 2 ? HM_OPTIMIZER_ADAM : HM_OPTIMIZER_SGD, variant == 2 ? 1e30f : 10.0f);
    o.seed = 4;
    o.accumulate_steps = variant == 1 ? 3 : 1; /* groups of 3, 3, 2 per epoch */
    o.early_stop_patience = 1000;               /* NaN norms must not read as "no improvement" */
    o.checkpoint_path = ck;
    progress_log log = {0};
    o.progress.fn = record;
    o.progress.user = &log;
    hm_cycle_state *st = NULL;
    remove(ck);
    HM_CHECK_EQ(hm_graph_fit(f.g, 60, NULL, &o, &st), HM_STATUS_DIVERGED);
    HM_CHECK(st == NULL);
    const char *msg = hm_last_error();
    HM_CHECK_STR_CONTAINS(msg, "training diverged at step ");
    size_t bad = 0, kept = 0;
    const char *at = strstr(msg, "at step ");
    if (at) bad = strtoull(at + 8, NULL, 10);
    const char *after = strstr(msg, "weights after step ");
    if (after) kept = strtoull(after + 19, NULL, 10);
    fprintf(stderr, "  variant %d: %s\n", variant, msg);
    HM_CHECK_MSG((variant == 2 || bad > 8) && bad < 480, "diverged at step %zu: expected after the first epoch", bad);
    HM_CHECK(kept >= 1 && kept < bad);
    HM_CHECK_STR_CONTAINS(msg, variant == 2 ? "learning rate 1e+30" : "learning rate 10");
    HM_CHECK_EQ(log.n, bad - 1); /* the sink saw every finite update and not the bad one */
    HM_CHECK(all_finite(hm_graph_weights(f.g)));
    /* The checkpoint holds the same state. */
    hm_cycle_state *saved = NULL;
    HM_CHECK_OK(hm_cycle_state_load(ck, &saved));
    if (saved) {
      HM_CHECK_EQ(hm_cycle_state_step(saved), kept);
      HM_CHECK(same_weights(hm_cycle_state_weights(saved), hm_graph_weights(f.g)));
    }
    hm_cycle_state_free(saved);
    /* A run stopped at |kept| reaches exactly these weights. */
    linear_fixture r = linear_graph();
    o.progress.fn = NULL;
    o.checkpoint_path = NULL;
    HM_CHECK_OK(hm_graph_fit_until(r.g, stop_at_step, &kept, NULL, &o, &st));
    HM_CHECK_EQ(hm_cycle_state_step(st), kept);
    HM_CHECK(same_weights(hm_graph_weights(r.g), hm_graph_weights(f.g)));
    hm_cycle_state_free(st);
    linear_free(&r);
    linear_free(&f);
  }
  remove(ck);
  /* A finite update can still overflow a weight: x = [1], MSE against 100
   * gives g = -200 and lr 1e37 makes the first update's weights inf while
   * its loss (1e4) and norm are finite. The graph keeps the initial weights. */
  bias_fixture f = bias_graph_with("mse", 1.0f, 0.5f, 0.0f);
  hm_weights *w = scalar_weights(0.5f, 0.0f);
  hm_fit_options o = base_opts(HM_OPTIMIZER_SGD, 1e37f);
  hm_cycle_state *st = NULL;
  HM_CHECK_EQ(hm_graph_fit(f.g, 5, NULL, &o, &st), HM_STATUS_DIVERGED);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "diverged at step 2 (epoch 1): loss inf");
  HM_CHECK_STR_CONTAINS(hm_last_error(), "keeps the weights after step 0");
  HM_CHECK(same_weights(hm_graph_weights(f.g), w));
  hm_weights_free(w);
  bias_free(&f);
}

/* ===== Gradients of whole graphs against a float64 reference ===== */

typedef struct grad_case {
  const char *text;
  size_t n, xw, tw;
  int labels; /* targets are class indices in [0, tw) */
  float tlo, thi;
} grad_case;

/* ===== A float64 reference of the forward pass (DESIGN.md §3) =====
 * Written from the document, not from the library: a layer sums f(W·a + b)
 * over its inbound connections; the loss is the sum over taps of each tap's
 * mean. Central differences of it in double (h = 1e-6) are exact to ~1e-9,
 * so they check backprop to 1e-5, where a float32 difference of the
 * library's own forward could not see an error of 1e-3. */

#define REF_MAX_NODES 8
#define REF_ROWS 8
#define REF_WIDTH 8

typedef struct ref_data {
  const char *name;
  const float *values; /* rows x width, or NULL for class labels */
  const int32_t *labels;
} ref_data;

static double ref_act(const char *a, double x) {
  if (!strcmp(a, "relu")) return x > 0 ? x : 0;
  if (!strcmp(a, "leaky_relu")) return x > 0 ? x : 0.01 * x;
  if (!strcmp(a, "sigmoid")) return 1 / (1 + exp(-x));
  if (!strcmp(a, "tanh")) return tanh(x);
  if (!strcmp(a, "gelu")) return 0.5 * x * (1 + erf(x / sqrt(2.0)));
  if (!strcmp(a, "silu")) return x / (1 + exp(-x));
  if (!strcmp(a, "elu")) return x > 0 ? x : exp(x) - 1;
  if (!strcmp(a, "selu")) return 1.0507009873554805 * (x > 0 ? x : 1.6732632423543772 * (exp(x) - 1));
  return x; /* id, identity */
}

static double ref_tensor(const hm_weights *w, const char *name, size_t k) {
  hm_tensor t;
  if (hm_weights_find(w, name, &t) != HM_OK) return NAN;
  return ((const float *)t.data)[k];
}

/* The mean loss of |g| with weights |w|, one element (|pname|[pk]) moved by |dp|. */
static double ref_loss(const hm_graph *g, const hm_weights *w, const ref_data *data, size_t n_data, size_t rows,
                       const char *pname, size_t pk, double dp) {
  size_t nn = hm_graph_node_count(g);
  const char *names[REF_MAX_NODES];
  size_t widths[REF_MAX_NODES];
  int done[REF_MAX_NODES] = {0};
  static double v[REF_MAX_NODES][REF_ROWS][REF_WIDTH];
  if (nn > REF_MAX_NODES || rows > REF_ROWS) return NAN;
  for (size_t i = 0; i < nn; i++) {
    hm_node_kind kind;
    if (hm_graph_node(g, i, &names[i], &kind, &widths[i]) != HM_OK || widths[i] > REF_WIDTH) return NAN;
    for (size_t d = 0; d < n_data; d++)
      if (!strcmp(names[i], data[d].name) && data[d].values) {
        for (size_t r = 0; r < rows; r++)
          for (size_t c = 0; c < widths[i]; c++) v[i][r][c] = data[d].values[r * widths[i] + c];
        done[i] = 1;
      }
  }
#define NODE_INDEX(var, nm)                                 \
  size_t var = nn;                                          \
  for (size_t q = 0; q < nn; q++)                           \
    if (!strcmp(names[q], nm)) var = q;
  size_t ne = hm_graph_connection_count(g);
  for (int progress = 1; progress;) { /* evaluate layers whose inputs are all known */
    progress = 0;
    for (size_t i = 0; i < nn; i++) {
      if (done[i]) continue;
      int ready = 1;
      for (size_t e = 0; e < ne; e++) {
        const char *from, *to, *act;
        if (hm_graph_connection(g, e, &from, &to, &act) != HM_OK) return NAN;
        NODE_INDEX(src, from);
        if (!strcmp(to, names[i]) && (src == nn || !done[src])) ready = 0;
      }
      if (!ready) continue;
      memset(v[i], 0, sizeof v[i]);
      for (size_t e = 0; e < ne; e++) {
        const char *from, *to, *act;
        if (hm_graph_connection(g, e, &from, &to, &act) != HM_OK) return NAN;
        if (strcmp(to, names[i])) continue;
        NODE_INDEX(src, from);
        char wn[128], bn[128];
        snprintf(wn, sizeof wn, "%s->%s.weight", from, to);
        snprintf(bn, sizeof bn, "%s->%s.bias", from, to);
        for (size_t r = 0; r < rows; r++) {
          double z[REF_WIDTH];
          for (size_t o = 0; o < widths[i]; o++) {
            double acc = ref_tensor(w, bn, o) + (!strcmp(pname, bn) && pk == o ? dp : 0);
            for (size_t k = 0; k < widths[src]; k++) {
              size_t at = o * widths[src] + k;
              acc += (ref_tensor(w, wn, at) + (!strcmp(pname, wn) && pk == at ? dp : 0)) * v[src][r][k];
            }
            z[o] = acc;
          }
          if (!strcmp(act, "softmax")) {
            double m = z[0], sum = 0;
            for (size_t o = 1; o < widths[i]; o++) m = z[o] > m ? z[o] : m;
            for (size_t o = 0; o < widths[i]; o++) sum += exp(z[o] - m);
            for (size_t o = 0; o < widths[i]; o++) v[i][r][o] += exp(z[o] - m) / sum;
          } else {
            for (size_t o = 0; o < widths[i]; o++) v[i][r][o] += ref_act(act, z[o]);
          }
        }
      }
      done[i] = progress = 1;
    }
  }
  double total = 0;
  for (size_t l = 0; l < hm_graph_loss_count(g); l++) {
    const char *layer, *loss, *target;
    if (hm_graph_loss(g, l, &layer, &loss, &target) != HM_OK) return NAN;
    NODE_INDEX(li, layer);
    const ref_data *t = NULL;
    for (size_t d = 0; d < n_data; d++)
      if (!strcmp(data[d].name, target)) t = &data[d];
    if (li == nn || !done[li] || !t) return NAN;
    size_t cols = widths[li];
    double sum = 0;
    for (size_t r = 0; r < rows; r++) {
      const double *p = v[li][r];
      if (!strcmp(loss, "cross_entropy")) {
        double m = p[0], z = 0;
        for (size_t c = 1; c < cols; c++) m = p[c] > m ? p[c] : m;
        for (size_t c = 0; c < cols; c++) z += exp(p[c] - m);
        for (size_t c = 0; c < cols; c++) {
          double tc = t->labels ? (double)(t->labels[r] == (int32_t)c) : t->values[r * cols + c];
          sum -= tc * (p[c] - m - log(z));
        }
        continue;
      }
      for (size_t c = 0; c < cols; c++) {
        double x = p[c], tv = t->values[r * cols + c], e = x - tv;
        if (!strcmp(loss, "mse")) sum += e * e;
        else if (!strcmp(loss, "mae")) sum += fabs(e);
        else if (!strcmp(loss, "bce")) sum += (x > 0 ? x : 0) - x * tv + log1p(exp(-fabs(x)));
        else if (!strcmp(loss, "huber")) sum += fabs(e) <= 1 ? 0.5 * e * e : fabs(e) - 0.5;
        else return NAN;
      }
    }
    total += strcmp(loss, "cross_entropy") ? sum / (double)(rows * cols) : sum / (double)rows;
  }
#undef NODE_INDEX
  return total;
}

static void check_gradients(const grad_case *gc) {
  hm_graph *g = parse(gc->text);
  HM_CHECK(g != NULL);
  if (!g) return;
  unsigned long long seed = 11;
  float x[64], t[64];
  int32_t lab[16];
  for (size_t i = 0; i < gc->n * gc->xw; i++) x[i] = hm_test_uniform(&seed, -1.5f, 1.5f);
  for (size_t i = 0; i < gc->n * gc->tw; i++) t[i] = hm_test_uniform(&seed, gc->tlo, gc->thi);
  for (size_t i = 0; i < gc->n; i++) lab[i] = (int32_t)(hm_test_rand_u64(&seed) % gc->tw);
  hm_producer *px = NULL, *pt = NULL, *pt2 = NULL;
  HM_CHECK_OK(hm_producer_from_floats(x, gc->n, gc->xw, &px));
  if (gc->labels) HM_CHECK_OK(hm_producer_from_labels(lab, gc->n, gc->tw, &pt));
  else HM_CHECK_OK(hm_producer_from_floats(t, gc->n, gc->tw, &pt));
  HM_CHECK_OK(hm_graph_bind_producer(g, "x", px));
  HM_CHECK_OK(hm_graph_bind_producer(g, "t", pt));
  if (strstr(gc->text, "t2")) {
    HM_CHECK_OK(hm_producer_from_floats(t, gc->n, 2, &pt2));
    HM_CHECK_OK(hm_graph_bind_producer(g, "t2", pt2));
  }
  HM_CHECK_OK(hm_graph_init_weights(g, 21));
  /* Perturb biases away from zero so every path carries a gradient. */
  hm_weights *w0 = NULL;
  HM_CHECK_OK(hm_weights_clone(hm_graph_weights(g), &w0));
  for (size_t i = 0; i < hm_weights_count(w0); i++) {
    hm_tensor tt;
    if (hm_weights_at(w0, i, &tt) != HM_OK) continue;
    for (size_t k = 0; k < tt.bytes / 4; k++) ((float *)tt.data)[k] += hm_test_uniform(&seed, -0.2f, 0.2f);
  }
  HM_CHECK_OK(hm_graph_set_weights(g, w0));
  ref_data data[3] = {{"x", x, NULL}, {"t", gc->labels ? NULL : t, gc->labels ? lab : NULL}, {"t2", t, NULL}};
  /* One SGD step with lr 1 over the whole set: g = p_before - p_after. */
  hm_fit_options o = base_opts(HM_OPTIMIZER_SGD, 1.0f);
  o.batch_size = gc->n;
  o.shuffle = 0;
  hm_cycle_state *st = NULL;
  HM_CHECK_OK(hm_graph_fit(g, 1, NULL, &o, &st));
  hm_weights *w1 = NULL;
  HM_CHECK_OK(hm_weights_clone(hm_graph_weights(g), &w1));
  hm_cycle_state_free(st);
  size_t checked = 0, bad = 0;
  for (size_t i = 0; w1 && i < hm_weights_count(w0); i++) {
    hm_tensor before, after;
    HM_CHECK_OK(hm_weights_at(w0, i, &before));
    HM_CHECK_OK(hm_weights_find(w1, before.name, &after));
    for (size_t k = 0; k < before.bytes / 4; k++) {
      double an = (double)((float *)before.data)[k] - ((float *)after.data)[k];
      const double h = 1e-6;
      double fd = (ref_loss(g, w0, data, 3, gc->n, before.name, k, h) - ref_loss(g, w0, data, 3, gc->n, before.name, k, -h)) /
                  (2 * h);
      checked++;
      /* float32 backprop and the float32 step p - 1·g carry ~1e-7 of rounding. */
      if (!(fabs(fd - an) <= 1e-5 + 1e-4 * fabs(fd))) {
        bad++;
        fprintf(stderr, "  %s: %s[%zu]: backprop %.8g, float64 reference %.8g\n", gc->text, before.name, k, an, fd);
      }
    }
  }
  HM_CHECK_MSG(bad == 0, "%zu of %zu gradient elements disagree", bad, checked);
  HM_CHECK(checked > 10);
  hm_weights_free(w0);
  hm_weights_free(w1);
  hm_graph_free(g);
  hm_producer_free(px);
  hm_producer_free(pt);
  hm_producer_free(pt2);
}

static void gradients_of_every_activation(void) {
  static const char *acts[] = {"id", "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "softmax", "elu", "selu"};
  char text[256];
  for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
    snprintf(text, sizeof text,
             "producer x {3}; producer t {2}; layer h {4}; layer o; cycle { x -(%s)-> h -> o; o <-(mse)- t; }", acts[i]);
    grad_case gc = {text, 5, 3, 2, 0, -1, 1};
    check_gradients(&gc);
  }
}

static void gradients_of_every_loss(void) {
  static const struct {
    const char *loss;
    int labels;
    float lo, hi;
  } losses[] = {{"cross_entropy", 1, 0, 0}, {"cross_entropy", 0, 0, 1}, {"mse", 0, -1, 1},
                {"mae", 0, -3, 3},          {"bce", 0, 0, 1},            {"huber", 0, -3, 3}};
  char text[256];
  for (size_t i = 0; i < sizeof losses / sizeof losses[0]; i++) {
    snprintf(text, sizeof text,
             "producer x {3}; producer t {3}; layer h {4}; layer o; cycle { x -(tanh)-> h -> o; o <-(%s)- t; }",
             losses[i].loss);
    grad_case gc = {text, 6, 3, 3, losses[i].labels, losses[i].lo, losses[i].hi};
    check_gradients(&gc);
  }
}

/* Sums into a layer, fan-out, a layer feeding two losses through two paths. */
static void gradients_of_a_branching_graph(void) {
  grad_case gc = {"producer x {3}; producer t {3}; producer t2 {2}; layer a {4}; layer b {4}; layer c; layer d;"
                  " cycle { x -(relu)-> a -> c; x -(sigmoid)-> b -(tanh)-> c; a -(tanh)-> d;"
                  " c <-(mse)- t; d <-(huber)- t2; }",
                  5, 3, 3, 0, -1, 1};
  check_gradients(&gc);
}

/* ===== Determinism, a real run, bad input ===== */

static void same_seed_gives_identical_weights(void) {
  const char *text = "producer x {20}; producer t {4}; layer h {16}; layer o;"
                     " cycle { x -(relu)-> h -> o; o <-(cross_entropy)- t; }";
  float x[200 * 20];
  int32_t lab[200];
  unsigned long long seed = 9;
  for (int i = 0; i < 200 * 20; i++) x[i] = hm_test_uniform(&seed, 0, 1);
  for (int i = 0; i < 200; i++) lab[i] = (int32_t)(hm_test_rand_u64(&seed) % 4);
  hm_weights *w[3] = {NULL, NULL, NULL};
  for (int run = 0; run < 3; run++) {
    hm_graph *g = parse(text);
    hm_producer *px = NULL, *pt = NULL;
    HM_CHECK_OK(hm_producer_from_floats(x, 200, 20, &px));
    HM_CHECK_OK(hm_producer_from_labels(lab, 200, 4, &pt));
    HM_CHECK_OK(hm_graph_bind_producer(g, "x", px));
    HM_CHECK_OK(hm_graph_bind_producer(g, "t", pt));
    hm_fit_options o = base_opts(HM_OPTIMIZER_ADAM, 0.01f);
    o.batch_size = 16;
    o.seed = run == 2 ? 43 : 42;
    hm_cycle_state *st = NULL;
    HM_CHECK_OK(hm_graph_fit(g, 3, NULL, &o, &st));
    HM_CHECK_OK(hm_weights_clone(hm_graph_weights(g), &w[run]));
    hm_cycle_state_free(st);
    hm_graph_free(g);
    hm_producer_free(px);
    hm_producer_free(pt);
  }
  int same01 = 1, same02 = 1;
  for (size_t i = 0; w[0] && w[1] && w[2] && i < hm_weights_count(w[0]); i++) {
    hm_tensor a, b, c;
    HM_CHECK_OK(hm_weights_at(w[0], i, &a));
    HM_CHECK_OK(hm_weights_find(w[1], a.name, &b));
    HM_CHECK_OK(hm_weights_find(w[2], a.name, &c));
    same01 &= memcmp(a.data, b.data, a.bytes) == 0;
    same02 &= memcmp(a.data, c.data, a.bytes) == 0;
  }
  HM_CHECK_MSG(same01, "same seed gave different weights");
  HM_CHECK_MSG(!same02, "different seeds gave the same weights");
  for (int i = 0; i < 3; i++) hm_weights_free(w[i]);
}

/* A separable problem is learned, evaluated on held-out data, and the state
 * reports it. */
static void learns_a_separable_problem_and_evaluates(void) {
  hm_graph *g = parse("producer x {2}; producer t {2}; consumer y; layer h {8}; layer o;"
                      " cycle { x -(tanh)-> h -> o; o <-(cross_entropy)- t; o -(softmax)-> y; }");
  float x[400 * 2];
  int32_t lab[400];
  unsigned long long seed = 1;
  for (int i = 0; i < 400; i++) {
    x[2 * i] = hm_test_uniform(&seed, -1, 1);
    x[2 * i + 1] = hm_test_uniform(&seed, -1, 1);
    lab[i] = x[2 * i] + x[2 * i + 1] > 0;
  }
  hm_producer *px = NULL, *pt = NULL, *ex = NULL, *et = NULL;
  HM_CHECK_OK(hm_producer_from_floats(x, 300, 2, &px));
  HM_CHECK_OK(hm_producer_from_labels(lab, 300, 2, &pt));
  HM_CHECK_OK(hm_producer_from_floats(x + 600, 100, 2, &ex));
  HM_CHECK_OK(hm_producer_from_labels(lab + 300, 100, 2, &et));
  HM_CHECK_OK(hm_graph_bind_producer(g, "x", px));
  HM_CHECK_OK(hm_graph_bind_producer(g, "t", pt));
  HM_CHECK_OK(hm_graph_bind_eval(g, "x", ex));
  HM_CHECK_OK(hm_graph_bind_eval(g, "t", et));
  hm_fit_options o = base_opts(HM_OPTIMIZER_ADAM, 0.05f);
  o.batch_size = 32;
  hm_cycle_state *st = NULL;
  HM_CHECK_OK(hm_graph_fit(g, 20, NULL, &o, &st));
  HM_CHECK_EQ(hm_cycle_state_epoch(st), 20);
  HM_CHECK_EQ(hm_cycle_state_step(st), 20 * 10);
  HM_CHECK_EQ(hm_cycle_state_samples(st), 20 * 300);
  HM_CHECK_MSG(hm_cycle_state_eval_accuracy(st) >= 0.95f, "accuracy %.3f", hm_cycle_state_eval_accuracy(st));
  HM_CHECK(hm_cycle_state_eval_loss(st) < 0.3f);
  HM_CHECK(strcmp(hm_cycle_state_backend(st), "cpu:0") == 0);
  HM_CHECK_EQ(hm_cycle_state_layer_count(st), 2);
  const char *layer, *prec, *kernel;
  HM_CHECK_OK(hm_cycle_state_layer_precision(st, 0, &layer, &prec, &kernel));
  HM_CHECK(strcmp(layer, "x->h") == 0 && strcmp(prec, "f32") == 0);
  const hm_weights *opt = hm_cycle_state_optimizer_state(st);
  hm_tensor m;
  HM_CHECK(opt && hm_weights_find(opt, "x->h.weight.m", &m) == HM_OK && hm_weights_find(opt, "h->o.bias.v", &m) == HM_OK);
  hm_cycle_state_free(st);
  /* Inference pushes the consumer's softmax and scores the held-out set. */
  hm_consumer *c = NULL;
  HM_CHECK_OK(hm_consumer_create_array(&c));
  HM_CHECK_OK(hm_graph_bind_consumer(g, "y", c));
  hm_eval_result r;
  o.eval_batch_size = 32;
  HM_CHECK_OK(hm_graph_inference(g, NULL, &o, 1, &r));
  HM_CHECK_EQ(r.samples, 100);
  HM_CHECK(r.accuracy >= 0.95f);
  const float *vals;
  size_t rows, width;
  HM_CHECK_OK(hm_consumer_array_values(c, &vals, &rows, &width));
  HM_CHECK_EQ(rows, 100);
  HM_CHECK_EQ(width, 2);
  if (rows == 100) HM_CHECK_NEAR(vals[10] + vals[11], 1.0, 1e-5);
  hm_graph_free(g);
  hm_consumer_free(c);
  hm_producer_free(px);
  hm_producer_free(pt);
  hm_producer_free(ex);
  hm_producer_free(et);
}

static void bad_inputs_give_clear_errors(void) {
  hm_cycle_state *st = NULL;
  hm_fit_options o = base_opts(HM_OPTIMIZER_SGD, 0.1f);
  /* Unbound producer. */
  hm_graph *g = parse("producer x {1}; producer t {1}; layer l {1}; cycle { x -> l; l <-(mse)- t; }");
  HM_CHECK_EQ(hm_graph_fit(g, 1, NULL, &o, &st), HM_STATUS_FAILED_PRECONDITION);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "t.hmx:1:10: producer 'x' is not bound to training data");
  HM_CHECK(st == NULL);
  /* Width mismatch between declaration and data. */
  float five[5] = {0};
  hm_producer *p5 = NULL, *p1 = NULL, *p2 = NULL;
  HM_CHECK_OK(hm_producer_from_floats(five, 1, 5, &p5));
  HM_CHECK_OK(hm_graph_bind_producer(g, "x", p5));
  HM_CHECK_OK(hm_graph_bind_producer(g, "t", p5));
  HM_CHECK_EQ(hm_graph_fit(g, 1, NULL, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "producer 'x' is declared {1} but its training data has 5 values per sample");
  /* Producers with different sample counts. */
  HM_CHECK_OK(hm_producer_from_floats(five, 5, 1, &p1));
  HM_CHECK_OK(hm_producer_from_floats(five, 4, 1, &p2));
  HM_CHECK_OK(hm_graph_bind_producer(g, "x", p1));
  HM_CHECK_OK(hm_graph_bind_producer(g, "t", p2));
  HM_CHECK_EQ(hm_graph_fit(g, 1, NULL, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "must have the same number of samples");
  /* Options are checked field by field. */
  HM_CHECK_OK(hm_graph_bind_producer(g, "t", p1));
  o.batch_size = 0;
  HM_CHECK_EQ(hm_graph_fit(g, 1, NULL, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "batch_size");
  o = base_opts(HM_OPTIMIZER_SGD, -1.0f);
  HM_CHECK_EQ(hm_graph_fit(g, 1, NULL, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "learning_rate");
  o = base_opts(HM_OPTIMIZER_SGD, 0.1f);
  o.struct_size = 8;
  HM_CHECK_EQ(hm_graph_fit(g, 1, NULL, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  /* Widths without kernels are refused, not faked (test_precision has more). */
  o = base_opts(HM_OPTIMIZER_SGD, 0.1f);
  hm_policy p6 = hm_make_max_bits_policy(6);
  HM_CHECK_EQ(hm_graph_fit(g, 1, &p6, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "bits:6");
  /* An unknown backend. */
  o.device = NULL;
  o.backend = "nosuchbackend";
  HM_CHECK_EQ(hm_graph_fit(g, 1, NULL, &o, &st), HM_STATUS_NOT_FOUND);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "backend 'nosuchbackend' is not available");
  hm_graph_free(g);
  /* No loss tap: inference only. A cycle of connections. */
  g = parse("producer x {1}; layer l {1}; cycle { x -> l; }");
  o = base_opts(HM_OPTIMIZER_SGD, 0.1f);
  HM_CHECK_OK(hm_graph_bind_producer(g, "x", p1));
  HM_CHECK_EQ(hm_graph_fit(g, 1, NULL, &o, &st), HM_STATUS_FAILED_PRECONDITION);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "it can only run inference");
  hm_graph_free(g);
  g = parse("producer x {1}; producer t {1}; layer a {1}; layer b {1}; cycle { x -> a -> b -> a; b <-(mse)- t; }");
  HM_CHECK_OK(hm_graph_bind_producer(g, "x", p1));
  HM_CHECK_OK(hm_graph_bind_producer(g, "t", p1));
  HM_CHECK_EQ(hm_graph_fit(g, 1, NULL, &o, &st), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "is on a cycle of connections");
  hm_graph_free(g);
  /* Weights that do not fit the graph. */
  g = parse("producer x {2}; producer t {1}; layer l {1}; cycle { x -> l; l <-(mse)- t; }");
  hm_weights *w = NULL;
  HM_CHECK_OK(hm_weights_create(&w));
  uint64_t wrong[2] = {1, 3}, one[1] = {1};
  HM_CHECK_OK(hm_weights_set(w, "x->l.weight", HM_ABI_DTYPE_F32, 2, wrong, NULL));
  HM_CHECK_OK(hm_weights_set(w, "x->l.bias", HM_ABI_DTYPE_F32, 1, one, NULL));
  HM_CHECK_EQ(hm_graph_set_weights(g, w), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "tensor 'x->l.weight' has shape [1, 3], expected [1, 2]");
  hm_weights_free(w);
  HM_CHECK_OK(hm_weights_create(&w));
  HM_CHECK_OK(hm_weights_set(w, "x->l.bias", HM_ABI_DTYPE_F32, 1, one, NULL));
  HM_CHECK_EQ(hm_graph_set_weights(g, w), HM_STATUS_NOT_FOUND);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "tensor 'x->l.weight' is missing");
  uint64_t right[2] = {1, 2};
  HM_CHECK_OK(hm_weights_set(w, "x->l.weight", HM_ABI_DTYPE_I32, 2, right, NULL));
  HM_CHECK_EQ(hm_graph_set_weights(g, w), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "expected f32");
  HM_CHECK_OK(hm_weights_set(w, "x->l.weight", HM_ABI_DTYPE_F32, 2, right, NULL));
  HM_CHECK_OK(hm_weights_set(w, "extra", HM_ABI_DTYPE_F32, 1, one, NULL));
  HM_CHECK_EQ(hm_graph_set_weights(g, w), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "tensor 'extra' does not belong");
  hm_weights_free(w);
  hm_graph_free(g);
  hm_producer_free(p5);
  hm_producer_free(p1);
  hm_producer_free(p2);
}

static void setup(void) {
  hm_device_options o = hm_device_options_default();
  o.threads = 2;
  if (hm_device_open("cpu", &o, &dev) != HM_OK) fprintf(stderr, "cannot open cpu: %s\n", hm_last_error());
}

static void with_device(void (*fn)(void)) {
  if (!dev) setup();
  fn();
}

#define CASE(name) \
  static void run_##name(void) { with_device(name); }
CASE(optimizers_follow_the_worked_examples)
CASE(grad_clip_clamps_elements)
CASE(schedule_and_progress)
CASE(accumulation_averages_and_flushes)
CASE(schedule_output_is_checked)
CASE(options_unused_by_the_optimizer_are_refused)
CASE(accumulation_equals_one_big_batch)
CASE(buffers_are_sized_per_use)
CASE(early_stop_counts_non_improving_updates)
CASE(cancel_stops_after_the_update_it_follows)
CASE(data_parallel_on_one_rank_is_a_plain_fit)
CASE(fit_until_and_fit_for)
CASE(divergence_stops_with_the_last_finite_weights)
CASE(gradients_of_every_activation)
CASE(gradients_of_every_loss)
CASE(gradients_of_a_branching_graph)
CASE(same_seed_gives_identical_weights)
CASE(learns_a_separable_problem_and_evaluates)
CASE(bad_inputs_give_clear_errors)

static const hm_test_case cases[] = {
    HM_TEST_CASE_P(run_, optimizers_follow_the_worked_examples),
    HM_TEST_CASE_P(run_, grad_clip_clamps_elements),
    HM_TEST_CASE_P(run_, schedule_and_progress),
    HM_TEST_CASE_P(run_, accumulation_averages_and_flushes),
    HM_TEST_CASE_P(run_, schedule_output_is_checked),
    HM_TEST_CASE_P(run_, options_unused_by_the_optimizer_are_refused),
    HM_TEST_CASE_P(run_, accumulation_equals_one_big_batch),
    HM_TEST_CASE_P(run_, buffers_are_sized_per_use),
    HM_TEST_CASE_P(run_, early_stop_counts_non_improving_updates),
    HM_TEST_CASE_P(run_, cancel_stops_after_the_update_it_follows),
    HM_TEST_CASE_P(run_, data_parallel_on_one_rank_is_a_plain_fit),
    HM_TEST_CASE_P(run_, fit_until_and_fit_for),
    HM_TEST_CASE_P(run_, divergence_stops_with_the_last_finite_weights),
    HM_TEST_CASE_P(run_, gradients_of_every_activation),
    HM_TEST_CASE_P(run_, gradients_of_every_loss),
    HM_TEST_CASE_P(run_, gradients_of_a_branching_graph),
    HM_TEST_CASE_P(run_, same_seed_gives_identical_weights),
    HM_TEST_CASE_P(run_, learns_a_separable_problem_and_evaluates),
    HM_TEST_CASE_P(run_, bad_inputs_give_clear_errors),
};

int main(int argc, char **argv) {
  int rc = hm_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
  hm_device_close(dev);
  return rc;
}
