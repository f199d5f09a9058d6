/*
 * The trainer API (harmonics/trainer.h): a loop of compute + apply over
 * fit's epoch order gives fit's weights bit for bit (with accumulation and
 * a partial last group too, for every optimizer); gradients come out and go
 * back as named tensors; scaling them equals setting scaled copies; bad
 * calls name what is wrong.
 */
#include <string.h>
#include <unistd.h>

#include "harmonics/harmonics.h"
#include "hm_test.h"

#define N 23 /* samples: batches of 5 leave a partial last batch of 3 */
static float xs[N * 3];
static float ys[N];

static const char text[] = "producer x {3}; producer y {1}; layer h {6}; layer o {1}; "
                           "cycle { x -(tanh)-> h -> o; o <-(mse)- y; }";

typedef struct fixture {
  hm_graph *g;
  hm_producer *x, *y;
} fixture;

static fixture make(void) {
  for (int i = 0; i < N * 3; i++) xs[i] = (float)((i * 37) % 17) / 17.0f - 0.5f;
  for (int i = 0; i < N; i++) ys[i] = xs[3 * i] - 2.0f * xs[3 * i + 2];
  fixture f = {NULL, NULL, NULL};
  if (hm_graph_parse(text, strlen(text), "t.hmx", &f.g) || hm_producer_from_floats(xs, N, 3, &f.x) ||
      hm_producer_from_floats(ys, N, 1, &f.y) || hm_graph_bind_producer(f.g, "x", f.x) ||
      hm_graph_bind_producer(f.g, "y", f.y))
    fprintf(stderr, "  fixture: %s\n", hm_last_error());
  return f;
}

static void unmake(fixture *f) {
  hm_graph_free(f->g);
  hm_producer_free(f->x);
  hm_producer_free(f->y);
}

static hm_fit_options opts(hm_optimizer opt, size_t accumulate) {
  hm_fit_options o = hm_fit_options_default();
  o.optimizer = opt;
  o.batch_size = 5;
  o.accumulate_steps = accumulate;
  o.seed = 11;
  o.threads = 1;
  o.grad_clip = 0.5f;
  o.lr_schedule_fp = hm_exponential_decay_schedule(0.02f, 0.9f, 4, 0.0f);
  if (opt == HM_OPTIMIZER_ADAMW || opt == HM_OPTIMIZER_LAMB) o.weight_decay = 0.01f;
  return o;
}

static int same_weights(const hm_weights *a, const hm_weights *b) {
  if (!a || !b || hm_weights_count(a) != hm_weights_count(b)) return 0;
  for (size_t i = 0; i < hm_weights_count(a); i++) {
    hm_tensor x, y;
    if (hm_weights_at(a, i, &x) || hm_weights_find(b, x.name, &y) || x.bytes != y.bytes ||
        memcmp(x.data, y.data, x.bytes) != 0)
      return 0;
  }
  return 1;
}

/* fit's loop, written with the trainer. */
static void manual_fit(fixture *f, const hm_fit_options *o, size_t epochs) {
  hm_trainer *t = NULL;
  HM_CHECK_OK(hm_trainer_open(f->g, NULL, o, &t));
  if (!t) return;
  size_t n = hm_trainer_sample_count(t);
  HM_CHECK_EQ(n, N);
  int32_t order[N];
  for (size_t e = 0; e < epochs; e++) {
    HM_CHECK_OK(hm_trainer_epoch_order(t, e, order, n));
    size_t in_group = 0;
    for (size_t pos = 0; pos < n; pos += o->batch_size) {
      size_t b = n - pos < o->batch_size ? n - pos : o->batch_size;
      HM_CHECK_OK(hm_trainer_compute_gradients(t, order + pos, b, NULL));
      if (++in_group == o->accumulate_steps) {
        HM_CHECK_OK(hm_trainer_apply(t, NULL));
        in_group = 0;
      }
    }
    if (in_group) HM_CHECK_OK(hm_trainer_apply(t, NULL)); /* fit applies an epoch's partial group */
  }
  hm_trainer_close(t);
}

static void a_manual_loop_gives_fits_weights_bit_for_bit(void) {
  static const hm_optimizer all[] = {HM_OPTIMIZER_SGD, HM_OPTIMIZER_ADAM, HM_OPTIMIZER_RMSPROP, HM_OPTIMIZER_ADAMW,
                                     HM_OPTIMIZER_LAMB};
  for (size_t i = 0; i < 5; i++)
    for (size_t acc = 1; acc <= 2; acc++) {
      hm_fit_options o = opts(all[i], acc);
      fixture a = make(), b = make();
      hm_cycle_state *s = NULL;
      HM_CHECK_OK(hm_graph_fit(a.g, 3, NULL, &o, &s));
      manual_fit(&b, &o, 3);
      HM_CHECK_MSG(same_weights(hm_graph_weights(a.g), hm_graph_weights(b.g)), "%s, accumulate %zu: weights differ",
                   hm_optimizer_name(all[i]), acc);
      hm_cycle_state_free(s);
      unmake(&a);
      unmake(&b);
    }
}

static void gradients_are_named_tensors_that_go_back(void) {
  fixture f = make(), g = make();
  hm_fit_options o = opts(HM_OPTIMIZER_ADAM, 1);
  hm_trainer *t = NULL, *u = NULL;
  HM_CHECK_OK(hm_trainer_open(f.g, NULL, &o, &t));
  HM_CHECK_OK(hm_trainer_open(g.g, NULL, &o, &u));
  if (!t || !u) return;
  int32_t idx[5] = {0, 1, 2, 3, 4};
  float loss = 0;
  HM_CHECK_OK(hm_trainer_compute_gradients(t, idx, 5, &loss));
  HM_CHECK(loss > 0);
  HM_CHECK_OK(hm_trainer_compute_gradients(u, idx, 5, NULL));
  hm_weights *grads = NULL;
  HM_CHECK_OK(hm_trainer_gradients(t, &grads));
  HM_CHECK_EQ(hm_weights_count(grads), 4);
  hm_tensor w;
  HM_CHECK_OK(hm_weights_find(grads, "x->h.weight", &w));
  HM_CHECK(w.rank == 2 && w.shape[0] == 6 && w.shape[1] == 3);
  /* Doubling through scale, and through a copy set back: the same update. */
  for (size_t i = 0; i < hm_weights_count(grads); i++) {
    hm_tensor v;
    HM_CHECK_OK(hm_weights_at(grads, i, &v));
    for (size_t k = 0; k < v.bytes / sizeof(float); k++) ((float *)v.data)[k] *= 2.0f;
  }
  HM_CHECK_OK(hm_trainer_set_gradients(t, grads));
  HM_CHECK_OK(hm_trainer_scale_gradients(u, 2.0f));
  float n1 = 0, n2 = 0;
  HM_CHECK_OK(hm_trainer_apply(t, &n1));
  HM_CHECK_OK(hm_trainer_apply(u, &n2));
  HM_CHECK(n1 == n2 && n1 > 0);
  HM_CHECK_EQ(hm_trainer_step(t), 1);
  hm_weights *wt = NULL, *wu = NULL;
  HM_CHECK_OK(hm_trainer_weights(t, &wt));
  HM_CHECK_OK(hm_trainer_weights(u, &wu));
  HM_CHECK(same_weights(wt, wu));
  /* Weights go in as the graph checks them, and come back out. */
  HM_CHECK_OK(hm_trainer_set_weights(u, wt));
  hm_weights_free(wu);
  HM_CHECK_OK(hm_trainer_weights(u, &wu));
  HM_CHECK(same_weights(wt, wu));
  hm_weights_free(grads);
  hm_weights_free(wt);
  hm_weights_free(wu);
  hm_trainer_close(t);
  hm_trainer_close(u);
  unmake(&f);
  unmake(&g);
}

static void bad_calls_say_what_is_wrong(void) {
  fixture f = make();
  hm_fit_options o = opts(HM_OPTIMIZER_SGD, 1);
  hm_trainer *t = NULL;
  HM_CHECK_OK(hm_trainer_open(f.g, NULL, &o, &t));
  if (!t) return;
  int32_t idx[6] = {0, 1, 2, 3, 4, 5}, bad[1] = {N};
  HM_CHECK_EQ(hm_trainer_apply(t, NULL), HM_STATUS_FAILED_PRECONDITION);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "no batch computed");
  HM_CHECK_EQ(hm_trainer_compute_gradients(t, idx, 6, NULL), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "a batch holds 1 to 5");
  HM_CHECK_EQ(hm_trainer_compute_gradients(t, bad, 1, NULL), HM_STATUS_OUT_OF_RANGE);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "index 23");
  hm_weights *w = NULL;
  HM_CHECK_OK(hm_weights_create(&w));
  HM_CHECK_EQ(hm_trainer_set_gradients(t, w), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "no gradient for 'x->h.weight'");
  int32_t order[3];
  HM_CHECK_EQ(hm_trainer_epoch_order(t, 0, order, 3), HM_STATUS_INVALID_ARGUMENT);
  hm_weights_free(w);
  hm_trainer_close(t);
  o.batch_size = 0;
  HM_CHECK_EQ(hm_trainer_open(f.g, NULL, &o, &t), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "batch_size");
  unmake(&f);
}

/* A parameter server's trainer: no data bound, it applies the gradients it
 * is given exactly as the trainer that computed them would. */
static void a_trainer_without_data_applies_given_gradients(void) {
  fixture f = make();
  hm_fit_options o = opts(HM_OPTIMIZER_ADAM, 1);
  hm_graph *bare = NULL;
  HM_CHECK_OK(hm_graph_parse(text, strlen(text), "t.hmx", &bare));
  hm_trainer *worker = NULL, *server = NULL;
  HM_CHECK_OK(hm_trainer_open(f.g, NULL, &o, &worker));
  HM_CHECK_OK(hm_trainer_open(bare, NULL, &o, &server));
  if (!worker || !server) return;
  HM_CHECK_EQ(hm_trainer_sample_count(server), 0);
  int32_t idx[5] = {3, 1, 4, 1, 5};
  HM_CHECK_EQ(hm_trainer_compute_gradients(server, idx, 5, NULL), HM_STATUS_FAILED_PRECONDITION);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "has no training data bound (this trainer applies the gradients it is given)");
  for (int step = 0; step < 4; step++) {
    hm_weights *g = NULL, *a = NULL, *b = NULL;
    HM_CHECK_OK(hm_trainer_compute_gradients(worker, idx, 5, NULL));
    HM_CHECK_OK(hm_trainer_gradients(worker, &g));
    HM_CHECK_OK(hm_trainer_set_gradients(server, g));
    HM_CHECK_OK(hm_trainer_apply(worker, NULL));
    HM_CHECK_OK(hm_trainer_apply(server, NULL));
    HM_CHECK_OK(hm_trainer_weights(worker, &a));
    HM_CHECK_OK(hm_trainer_weights(server, &b));
    HM_CHECK_MSG(same_weights(a, b), "update %d: the server's weights differ from the worker's", step + 1);
    hm_weights_free(g);
    hm_weights_free(a);
    hm_weights_free(b);
  }
  /* A worker that hands its gradients on clears them: the next batch starts a new sum. */
  hm_weights *once = NULL, *again = NULL;
  HM_CHECK_OK(hm_trainer_compute_gradients(worker, idx, 5, NULL));
  HM_CHECK_OK(hm_trainer_gradients(worker, &once));
  hm_trainer_clear_gradients(worker);
  HM_CHECK_EQ(hm_trainer_apply(worker, NULL), HM_STATUS_FAILED_PRECONDITION);
  HM_CHECK_OK(hm_trainer_compute_gradients(worker, idx, 5, NULL));
  HM_CHECK_OK(hm_trainer_gradients(worker, &again));
  HM_CHECK_MSG(same_weights(once, again), "a cleared trainer's next gradients are not the batch's alone");
  hm_weights_free(once);
  hm_weights_free(again);
  hm_trainer_close(worker);
  hm_trainer_close(server);
  hm_graph_free(bare);
  unmake(&f);
}

/* A trainer's checkpoint resumes a trainer bit-identically; a resume with
 * other options is refused as fit refuses it. */
static void trainer_checkpoints_resume(void) {
  char path[] = "/tmp/hm_trainer_XXXXXX";
  int fd = mkstemp(path);
  HM_CHECK(fd >= 0);
  if (fd < 0) return;
  close(fd);
  fixture a = make(), b = make();
  hm_fit_options o = opts(HM_OPTIMIZER_LAMB, 1);
  int32_t batches[3][5] = {{0, 1, 2, 3, 4}, {9, 8, 7, 6, 5}, {10, 12, 14, 16, 18}};
  hm_trainer *straight = NULL, *first = NULL, *second = NULL;
  HM_CHECK_OK(hm_trainer_open(a.g, NULL, &o, &straight));
  HM_CHECK_OK(hm_trainer_open(b.g, NULL, &o, &first));
  if (!straight || !first) return;
  for (int i = 0; i < 3; i++) {
    HM_CHECK_OK(hm_trainer_compute_gradients(straight, batches[i], 5, NULL));
    HM_CHECK_OK(hm_trainer_apply(straight, NULL));
  }
  HM_CHECK_OK(hm_trainer_compute_gradients(first, batches[0], 5, NULL));
  HM_CHECK_OK(hm_trainer_apply(first, NULL));
  HM_CHECK_OK(hm_trainer_save_checkpoint(first, path));
  hm_trainer_close(first);
  hm_cycle_state *saved = NULL;
  HM_CHECK_OK(hm_cycle_state_load(path, &saved));
  HM_CHECK_EQ(hm_cycle_state_step(saved), 1);
  hm_fit_options r = o;
  r.resume = saved;
  HM_CHECK_OK(hm_trainer_open(b.g, NULL, &r, &second));
  HM_CHECK_EQ(hm_trainer_step(second), 1);
  for (int i = 1; i < 3 && second; i++) {
    HM_CHECK_OK(hm_trainer_compute_gradients(second, batches[i], 5, NULL));
    HM_CHECK_OK(hm_trainer_apply(second, NULL));
  }
  hm_weights *x = NULL, *y = NULL;
  HM_CHECK_OK(hm_trainer_weights(straight, &x));
  if (second) HM_CHECK_OK(hm_trainer_weights(second, &y));
  HM_CHECK_MSG(same_weights(x, y), "the resumed trainer's weights differ from the uninterrupted one's");
  r.learning_rate *= 2;
  hm_trainer *refused = NULL;
  HM_CHECK_EQ(hm_trainer_open(b.g, NULL, &r, &refused), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "learning_rate");
  hm_weights_free(x);
  hm_weights_free(y);
  hm_trainer_close(straight);
  hm_trainer_close(second);
  hm_cycle_state_free(saved);
  unlink(path);
  unmake(&a);
  unmake(&b);
}

static const hm_test_case cases[] = {
    HM_TEST_CASE(a_trainer_without_data_applies_given_gradients),
    HM_TEST_CASE(trainer_checkpoints_resume),
    HM_TEST_CASE(a_manual_loop_gives_fits_weights_bit_for_bit),
    HM_TEST_CASE(gradients_are_named_tensors_that_go_back),
    HM_TEST_CASE(bad_calls_say_what_is_wrong),
};

HM_TEST_MAIN(cases)
