/*
 * Graphs (.hgr), weights (.hnwt) and checkpoints (.hck): round trips, exact
 * resume in the middle of an epoch, every bad-input class (truncated,
 * bit-flipped, oversized counts, wrong magic, newer version, wrong checksum,
 * weights that do not fit the graph), and a writer killed at random points
 * that never destroys the previous file.
 */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harmonics/harmonics.h"
#include "harmonics/names.h"
#include "hm_test.h"

static char dir[256];

static const char *tmp(const char *name) {
  static char buf[4][512];
  static int k;
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
  return buf[k];
}

/* The file's bytes (NULL and *len = 0 when it cannot be read). */
static unsigned char *slurp(const char *path, size_t *len) {
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *d = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (d) *len = fread(d, 1, (size_t)n, f);
  fclose(f);
  HM_CHECK_MSG(d != NULL, "cannot read %s", path);
  return d;
}

static void spit(const char *path, const void *d, size_t n) {
  FILE *f = fopen(path, "wb");
  HM_CHECK_MSG(f != NULL, "cannot write %s", path);
  if (!f) return;
  HM_CHECK_EQ(fwrite(d, 1, n, f), n);
  fclose(f);
}

/* CRC32C, independently of the library, to forge consistent bad files. */
static uint32_t crc32c(const unsigned char *p, size_t n) {
  uint32_t c = ~0u;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

static void put32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Recomputes both checksums after an edit. */
static void reseal(unsigned char *d, size_t n) {
  put32(d + 28, crc32c(d + 32, n - 32));
  put32(d + 24, crc32c(d, 24));
}

static hm_graph *parse(const char *text) {
  hm_graph *g = NULL;
  if (hm_graph_parse(text, strlen(text), "t.hmx", &g) != HM_OK) fprintf(stderr, "  parse: %s\n", hm_last_error());
  return g;
}

static const char *MODEL = "harmonic m { producer x {6}; producer t {3}; consumer y; layer h 2/1 x; layer o;"
                           " cycle { x -(tanh)-> h -> o; x -> o; o <-(cross_entropy)- t; o -(softmax)-> y; } }";

static void graph_round_trip(void) {
  hm_graph *g = parse(MODEL);
  HM_CHECK_OK(hm_graph_resolve(g));
  HM_CHECK_OK(hm_save_graph_file(g, tmp("g.hgr")));
  hm_graph *r = NULL;
  HM_CHECK_OK(hm_load_graph_file(tmp("g.hgr"), &r));
  if (!r) {
    hm_graph_free(g);
    return;
  }
  HM_CHECK(strcmp(hm_graph_name(r), "m") == 0);
  HM_CHECK_EQ(hm_graph_node_count(r), hm_graph_node_count(g));
  for (size_t i = 0; i < hm_graph_node_count(g); i++) {
    const char *a, *b;
    hm_node_kind ka, kb;
    size_t wa, wb;
    HM_CHECK_OK(hm_graph_node(g, i, &a, &ka, &wa));
    HM_CHECK_OK(hm_graph_node(r, i, &b, &kb, &wb));
    HM_CHECK(strcmp(a, b) == 0 && ka == kb && wa == wb);
  }
  size_t w;
  HM_CHECK_OK(hm_graph_node(r, 3, NULL, NULL, &w));
  HM_CHECK_EQ(w, 12); /* the resolved width of h (2/1 x) is stored */
  HM_CHECK_EQ(hm_graph_connection_count(r), 4);
  const char *from, *to, *act;
  HM_CHECK_OK(hm_graph_connection(r, 0, &from, &to, &act));
  HM_CHECK(!strcmp(from, "x") && !strcmp(to, "h") && !strcmp(act, "tanh"));
  const char *l, *loss, *t;
  HM_CHECK_OK(hm_graph_loss(r, 0, &l, &loss, &t));
  HM_CHECK(!strcmp(l, "o") && !strcmp(loss, "cross_entropy") && !strcmp(t, "t"));
  HM_CHECK_OK(hm_graph_resolve(r)); /* the ratio survives too */
  /* FILE* variants: the same bytes. */
  FILE *f = tmpfile();
  HM_CHECK_OK(hm_save_graph(g, f));
  rewind(f);
  hm_graph *r2 = NULL;
  HM_CHECK_OK(hm_load_graph(f, &r2));
  fclose(f);
  HM_CHECK(r2 && hm_graph_connection_count(r2) == 4);
  hm_graph_free(r2);
  hm_graph_free(r);
  hm_graph_free(g);
}

static hm_weights *sample_weights(void) {
  hm_weights *w = NULL;
  if (hm_weights_create(&w) != HM_OK) return NULL;
  uint64_t s2[2] = {3, 4}, s1[1] = {5}, s0[1] = {0};
  float a[12];
  int32_t b[5] = {1, -2, 3, -4, 5};
  for (int i = 0; i < 12; i++) a[i] = (float)i / 7.0f - 0.5f;
  if (hm_weights_set(w, "a->b.weight", HM_ABI_DTYPE_F32, 2, s2, a) || hm_weights_set(w, "ints", HM_ABI_DTYPE_I32, 1, s1, b) ||
      hm_weights_set(w, "empty", HM_ABI_DTYPE_F32, 1, s0, NULL) || hm_weights_set(w, "scalar", HM_ABI_DTYPE_F64, 0, NULL, NULL))
    fprintf(stderr, "  sample_weights: %s\n", hm_last_error());
  return w;
}

static int weights_equal(const hm_weights *a, const hm_weights *b) {
  if (hm_weights_count(a) != hm_weights_count(b)) return 0;
  for (size_t i = 0; i < hm_weights_count(a); i++) {
    hm_tensor x, y;
    if (hm_weights_at(a, i, &x) || hm_weights_at(b, i, &y)) return 0;
    if (strcmp(x.name, y.name) || x.dtype != y.dtype || x.rank != y.rank || x.bytes != y.bytes ||
        memcmp(x.shape, y.shape, sizeof x.shape) || memcmp(x.data, y.data, x.bytes))
      return 0;
  }
  return 1;
}

static void weights_round_trip(void) {
  hm_weights *w = sample_weights(), *r = NULL;
  HM_CHECK_OK(hm_save_weights_file(w, tmp("w.hnwt")));
  HM_CHECK_OK(hm_load_weights_file(tmp("w.hnwt"), &r));
  HM_CHECK(r && weights_equal(w, r));
  hm_weights_free(r);
  r = NULL;
  FILE *f = tmpfile();
  HM_CHECK_OK(hm_save_weights(w, f));
  rewind(f);
  HM_CHECK_OK(hm_load_weights(f, &r));
  fclose(f);
  HM_CHECK(r && weights_equal(w, r));
  hm_weights_free(r);
  hm_weights_free(w);
}

/* ===== Training fixtures ===== */

typedef struct fixture {
  hm_graph *g;
  hm_producer *x, *t;
} fixture;

static fixture make_fixture(void) {
  fixture f = {parse(MODEL), NULL, NULL};
  static float x[150 * 6];
  static int32_t lab[150];
  unsigned long long seed = 3;
  for (int i = 0; i < 150 * 6; i++) x[i] = hm_test_uniform(&seed, -1, 1);
  for (int i = 0; i < 150; i++) lab[i] = (x[6 * i] + x[6 * i + 1] > 0) + (x[6 * i + 2] > 0.5f);
  if (hm_producer_from_floats(x, 150, 6, &f.x) || hm_producer_from_labels(lab, 150, 3, &f.t) ||
      hm_graph_bind_producer(f.g, "x", f.x) || hm_graph_bind_producer(f.g, "t", f.t))
    fprintf(stderr, "  fixture: %s\n", hm_last_error());
  return f;
}

static void free_fixture(fixture *f) {
  hm_graph_free(f->g);
  hm_producer_free(f->x);
  hm_producer_free(f->t);
}

static hm_fit_options train_opts(void) {
  hm_fit_options o = hm_fit_options_default();
  o.optimizer = HM_OPTIMIZER_ADAM;
  o.learning_rate = 0.01f;
  o.batch_size = 16;
  o.seed = 11;
  o.threads = 2;
  o.early_stop_patience = 1000;
  o.lr_schedule_fp = hm_exponential_decay_schedule(0.01f, 0.9f, 7, 0.001f);
  return o;
}

static int stop_at_23(const hm_cycle_state *s, void *user) {
  (void)user;
  return hm_cycle_state_step(s) >= 23;
}

/* Uninterrupted vs stopped mid-epoch (step 23 of 10 per epoch), checkpointed,
 * reloaded into a fresh graph and resumed: bit-identical weights. */
static void resume_is_bit_identical(void) {
  for (int accumulate = 1; accumulate <= 2; accumulate++) {
    fixture a = make_fixture(), b = make_fixture(), c = make_fixture();
    hm_fit_options o = train_opts();
    o.accumulate_steps = (size_t)accumulate;
    hm_cycle_state *sa = NULL, *sb = NULL, *loaded = NULL, *sc = NULL;
    HM_CHECK_OK(hm_graph_fit(a.g, 6, NULL, &o, &sa));
    hm_fit_options ob = o;
    ob.checkpoint_path = tmp("r.hck");
    ob.checkpoint_every = 5;
    HM_CHECK_OK(hm_graph_fit_until(b.g, stop_at_23, NULL, NULL, &ob, &sb));
    HM_CHECK_EQ(hm_cycle_state_step(sb), 23);
    HM_CHECK_OK(hm_cycle_state_load(tmp("r.hck"), &loaded));
    if (!loaded) break;
    HM_CHECK_EQ(hm_cycle_state_step(loaded), 23);
    HM_CHECK_EQ(hm_cycle_state_epoch(loaded), accumulate == 1 ? 2 : 4);
    hm_fit_options oc;
    hm_policy pc;
    HM_CHECK_OK(hm_cycle_state_fit_options(loaded, &oc, &pc));
    HM_CHECK(oc.batch_size == 16 && oc.optimizer == HM_OPTIMIZER_ADAM && oc.lr_schedule_fp.fn != NULL);
    HM_CHECK(pc.kind == HM_POLICY_HARDWARE);
    oc.threads = 2;
    oc.resume = loaded;
    HM_CHECK_OK(hm_graph_fit(c.g, 6, NULL, &oc, &sc));
    if (sa && sc) {
      HM_CHECK_EQ(hm_cycle_state_step(sc), hm_cycle_state_step(sa));
      HM_CHECK_EQ(hm_cycle_state_samples(sc), hm_cycle_state_samples(sa));
      HM_CHECK_MSG(weights_equal(hm_graph_weights(a.g), hm_graph_weights(c.g)),
                   "accumulate %d: resumed weights differ from uninterrupted training", accumulate);
      HM_CHECK(weights_equal(hm_cycle_state_optimizer_state(sa), hm_cycle_state_optimizer_state(sc)));
      HM_CHECK(hm_cycle_state_loss(sa) == hm_cycle_state_loss(sc));
      /* The epoch's running loss sum is in the checkpoint too. */
      HM_CHECK(hm_cycle_state_epoch_loss(sa) == hm_cycle_state_epoch_loss(sc));
    }
    hm_cycle_state_free(sa);
    hm_cycle_state_free(sb);
    hm_cycle_state_free(sc);
    /* Resuming with other options or another graph is refused. */
    fixture d = make_fixture();
    hm_fit_options bad = oc;
    bad.batch_size = 32;
    hm_cycle_state *sd = NULL;
    HM_CHECK_EQ(hm_graph_fit(d.g, 6, NULL, &bad, &sd), HM_STATUS_INVALID_ARGUMENT);
    HM_CHECK_STR_CONTAINS(hm_last_error(), "resume: batch_size is 32 but the checkpoint was trained with 16");
    /* ... and so is another policy (a hardware checkpoint resumed at bits:3). */
    hm_policy bits3 = hm_make_max_bits_policy(3);
    HM_CHECK_EQ(hm_graph_fit(d.g, 6, &bits3, &oc, &sd), HM_STATUS_INVALID_ARGUMENT);
    HM_CHECK_STR_CONTAINS(hm_last_error(), "resume: the policy is bits:3 but the checkpoint was trained with hardware");
    hm_graph *other = parse("producer x {6}; producer t {3}; layer o; cycle { x -> o; o <-(cross_entropy)- t; }");
    HM_CHECK_OK(hm_graph_bind_producer(other, "x", d.x));
    HM_CHECK_OK(hm_graph_bind_producer(other, "t", d.t));
    HM_CHECK_EQ(hm_graph_fit(other, 6, NULL, &oc, &sd), HM_STATUS_INVALID_ARGUMENT);
    HM_CHECK_STR_CONTAINS(hm_last_error(), "written for a different graph");
    hm_graph_free(other);
    free_fixture(&d);
    hm_cycle_state_free(loaded);
    free_fixture(&a);
    free_fixture(&b);
    free_fixture(&c);
  }
}

typedef struct loss_log {
  float step_loss[64];
  size_t steps;
  float epoch_loss[8];
  size_t epochs;
} loss_log;

static void log_step(void *user, size_t step, float grad_norm, float loss, float lr) {
  loss_log *l = user;
  (void)grad_norm;
  (void)lr;
  if (step <= 64) l->step_loss[step - 1] = loss;
  l->steps = step;
}

static int log_epoch(void *user, const hm_cycle_state *s) {
  loss_log *l = user;
  if (l->epochs < 8) l->epoch_loss[l->epochs++] = hm_cycle_state_epoch_loss(s);
  return 0;
}

/* The epoch loss is the mean over the epoch's samples: each batch's loss
 * weighted by its rows (9 batches of 16 and one of 6 per epoch). */
static void epoch_loss_is_the_mean_over_the_epoch(void) {
  fixture f = make_fixture();
  hm_fit_options o = train_opts();
  loss_log log;
  memset(&log, 0, sizeof log);
  o.progress.fn = log_step;
  o.progress.user = &log;
  o.on_epoch = log_epoch;
  o.on_epoch_user = &log;
  hm_cycle_state *st = NULL;
  HM_CHECK(isnan(hm_cycle_state_epoch_loss(NULL)));
  HM_CHECK_OK(hm_graph_fit(f.g, 2, NULL, &o, &st));
  HM_CHECK_EQ(log.steps, 20);
  HM_CHECK_EQ(log.epochs, 2);
  for (size_t e = 0; e < 2; e++) {
    double sum = 0;
    for (size_t k = 0; k < 10; k++) sum += (double)log.step_loss[10 * e + k] * (k < 9 ? 16 : 6);
    HM_CHECK_NEAR(log.epoch_loss[e], sum / 150.0, 1e-6 * fabs(sum / 150.0));
  }
  HM_CHECK(hm_cycle_state_epoch_loss(st) == log.epoch_loss[1]);
  /* Not the last batch's loss, which is what the epoch line printed before. */
  HM_CHECK(hm_cycle_state_epoch_loss(st) != hm_cycle_state_loss(st));
  hm_cycle_state_free(st);
  free_fixture(&f);
}

/* A version 1 checkpoint (no epoch-loss fields) still loads: the fields
 * after early stopping's counters are what version 2 added. */
static void version_1_checkpoints_still_load(void) {
  fixture f = make_fixture();
  hm_fit_options o = train_opts();
  o.checkpoint_path = tmp("v2.hck");
  hm_cycle_state *st = NULL;
  HM_CHECK_OK(hm_graph_fit(f.g, 1, NULL, &o, &st));
  hm_cycle_state_free(st);
  size_t n;
  unsigned char *d = slurp(tmp("v2.hck"), &n);
  /* Payload: fingerprint 4, u64 x 4, f64 x 2, f32 x 5, f32 + u64; then
   * f32 epoch_loss, f64 sum, u64 rows (20 bytes) to drop. */
  size_t at = 32 + 4 + 32 + 16 + 20 + 12, cut = 20;
  if (d && n > at + cut) {
    memmove(d + at, d + at + cut, n - at - cut);
    n -= cut;
    put32(d + 8, 1);
    put32(d + 16, (uint32_t)(n - 32));
    put32(d + 20, 0);
    reseal(d, n);
    spit(tmp("v1.hck"), d, n);
    hm_cycle_state *v1 = NULL;
    HM_CHECK_OK(hm_cycle_state_load(tmp("v1.hck"), &v1));
    HM_CHECK_EQ(hm_cycle_state_step(v1), 10);
    HM_CHECK(isnan(hm_cycle_state_epoch_loss(v1)));
    hm_cycle_state *v2 = NULL;
    HM_CHECK_OK(hm_cycle_state_load(tmp("v2.hck"), &v2));
    HM_CHECK(!isnan(hm_cycle_state_epoch_loss(v2)));
    HM_CHECK(weights_equal(hm_cycle_state_weights(v1), hm_cycle_state_weights(v2)));
    hm_cycle_state_free(v1);
    hm_cycle_state_free(v2);
  }
  free(d);
  free_fixture(&f);
}

static int stop_at_step(const hm_cycle_state *s, void *user) { return hm_cycle_state_step(s) >= *(const size_t *)user; }

/* Trains |f| from checkpoint |path| to |epochs| epochs; NULL on failure. */
static hm_cycle_state *resume_from(fixture *f, const char *path, size_t epochs) {
  hm_cycle_state *loaded = NULL, *st = NULL;
  hm_fit_options o;
  hm_policy p;
  HM_CHECK_OK(hm_cycle_state_load(path, &loaded));
  if (loaded && hm_cycle_state_fit_options(loaded, &o, &p) == HM_OK) {
    o.threads = 2;
    o.resume = loaded;
    HM_CHECK_OK(hm_graph_fit(f->g, epochs, &p, &o, &st));
  }
  hm_cycle_state_free(loaded);
  return st;
}

/* Every combination of accumulation (1, 3: partial groups at each epoch's
 * end), a partial last batch (150 samples in batches of 16), a schedule,
 * early-stopping counters and every optimizer resumes bit-identically, from
 * an epoch checkpoint and from a checkpoint_every checkpoint mid-epoch. */
static void resume_matrix(void) {
  const hm_optimizer optimizers[] = {HM_OPTIMIZER_SGD, HM_OPTIMIZER_ADAM, HM_OPTIMIZER_RMSPROP, HM_OPTIMIZER_ADAMW,
                                     HM_OPTIMIZER_LAMB};
  int combos = 0;
  for (int acc = 1; acc <= 3; acc += 2)
    for (int sched = 0; sched < 2; sched++)
      for (int early = 0; early < 2; early++)
        for (size_t k = 0; k < 5; k++)
          for (int from = 0; from < 2; from++) {
            hm_fit_options o = train_opts();
            o.optimizer = optimizers[k];
            o.learning_rate = optimizers[k] == HM_OPTIMIZER_SGD ? 0.1f : 0.01f;
            o.momentum = optimizers[k] == HM_OPTIMIZER_SGD ? 0.5f : 0.0f;
            o.weight_decay = optimizers[k] == HM_OPTIMIZER_ADAMW || optimizers[k] == HM_OPTIMIZER_LAMB ? 0.01f : 0.0f;
            o.accumulate_steps = (size_t)acc;
            if (!sched) memset(&o.lr_schedule_fp, 0, sizeof o.lr_schedule_fp);
            o.early_stop_patience = early ? 1000 : 0;
            o.early_stop_delta = early ? 1e-3f : 0.0f;
            fixture a = make_fixture(), b = make_fixture(), c = make_fixture();
            hm_cycle_state *sa = NULL, *sb = NULL, *sc = NULL;
            HM_CHECK_OK(hm_graph_fit(a.g, 4, NULL, &o, &sa));
            hm_fit_options ob = o;
            ob.checkpoint_path = tmp("m.hck");
            size_t stop = 7; /* mid-epoch 1 (acc 1) or 2 (acc 3) */
            if (from == 0) {
              HM_CHECK_OK(hm_graph_fit(b.g, 2, NULL, &ob, &sb));
            } else {
              ob.checkpoint_every = stop;
              HM_CHECK_OK(hm_graph_fit_until(b.g, stop_at_step, &stop, NULL, &ob, &sb));
            }
            sc = resume_from(&c, tmp("m.hck"), 4);
            if (sa && sc) {
              HM_CHECK_MSG(hm_cycle_state_step(sa) == hm_cycle_state_step(sc) &&
                               weights_equal(hm_graph_weights(a.g), hm_graph_weights(c.g)) &&
                               weights_equal(hm_cycle_state_optimizer_state(sa), hm_cycle_state_optimizer_state(sc)),
                           "accumulate %d, schedule %d, early stop %d, %s, from %s: resumed run differs (%zu vs %zu updates)",
                           acc, sched, early, hm_optimizer_name(optimizers[k]), from ? "checkpoint_every" : "epoch",
                           hm_cycle_state_step(sa), hm_cycle_state_step(sc));
              combos++;
            }
            hm_cycle_state_free(sa);
            hm_cycle_state_free(sb);
            hm_cycle_state_free(sc);
            free_fixture(&a);
            free_fixture(&b);
            free_fixture(&c);
          }
  HM_CHECK_EQ(combos, 80);
}

/* ===== Bad files ===== */

static hm_status load_any(int kind, const char *path) {
  hm_graph *g = NULL;
  hm_weights *w = NULL;
  hm_cycle_state *s = NULL;
  hm_status st = kind == 0 ? hm_load_graph_file(path, &g) : kind == 1 ? hm_load_weights_file(path, &w) : hm_cycle_state_load(path, &s);
  hm_graph_free(g);
  hm_weights_free(w);
  hm_cycle_state_free(s);
  return st;
}

static void every_bad_input_class_is_refused(void) {
  /* Make one file of each kind. */
  fixture f = make_fixture();
  hm_fit_options o = train_opts();
  o.checkpoint_path = tmp("k.hck");
  hm_cycle_state *st = NULL;
  HM_CHECK_OK(hm_graph_fit(f.g, 1, NULL, &o, &st));
  hm_cycle_state_free(st);
  HM_CHECK_OK(hm_save_graph_file(f.g, tmp("k.hgr")));
  HM_CHECK_OK(hm_save_weights_file(hm_graph_weights(f.g), tmp("k.hnwt")));
  free_fixture(&f);
  const char *files[3] = {"k.hgr", "k.hnwt", "k.hck"};
  for (int kind = 0; kind < 3; kind++) {
    size_t n;
    unsigned char *good = slurp(tmp(files[kind]), &n), *d = malloc(n + 64);
    HM_CHECK_EQ(load_any(kind, tmp(files[kind])), HM_OK);
    /* Truncated at every length: DATA_LOSS, never a crash. */
    for (size_t cut = 0; cut < n; cut += (n > 4000 ? 97 : 1)) {
      spit(tmp("bad"), good, cut);
      hm_status s = load_any(kind, tmp("bad"));
      HM_CHECK_MSG(s == HM_STATUS_DATA_LOSS, "%s truncated to %zu: %s", files[kind], cut, hm_status_name(s));
    }
    spit(tmp("bad"), good, n / 2);
    load_any(kind, tmp("bad"));
    HM_CHECK_STR_CONTAINS(hm_last_error(), "bad");
    /* Every single bit flip is caught (header or payload checksum). */
    for (size_t i = 0; i < n; i += (n > 2000 ? 13 : 1)) {
      memcpy(d, good, n);
      d[i] ^= (unsigned char)(1u << (i % 8));
      spit(tmp("bad"), d, n);
      hm_status s = load_any(kind, tmp("bad"));
      HM_CHECK_MSG(s == HM_STATUS_DATA_LOSS, "%s with byte %zu flipped: %s", files[kind], i, hm_status_name(s));
    }
    memcpy(d, good, n);
    d[n - 1] ^= 1;
    spit(tmp("bad"), d, n);
    load_any(kind, tmp("bad"));
    HM_CHECK_STR_CONTAINS(hm_last_error(), "payload checksum mismatch");
    /* Wrong magic. */
    memcpy(d, good, n);
    memcpy(d, "NOTOURS!", 8);
    spit(tmp("bad"), d, n);
    HM_CHECK_EQ(load_any(kind, tmp("bad")), HM_STATUS_DATA_LOSS);
    HM_CHECK_STR_CONTAINS(hm_last_error(), "wrong magic \"NOTOURS!\"");
    /* A newer format version: refused, naming both versions. */
    memcpy(d, good, n);
    put32(d + 8, 7);
    reseal(d, n);
    spit(tmp("bad"), d, n);
    HM_CHECK_EQ(load_any(kind, tmp("bad")), HM_STATUS_INCOMPATIBLE);
    HM_CHECK_STR_CONTAINS(hm_last_error(), "format version 7 is newer");
    const int newest[3] = {HM_GRAPH_FORMAT_VERSION, HM_WEIGHTS_FORMAT_VERSION, HM_CHECKPOINT_FORMAT_VERSION};
    char up_to[32];
    snprintf(up_to, sizeof up_to, "(up to %d)", newest[kind]); /* graphs and checkpoints are at 2, weights at 1 */
    HM_CHECK_STR_CONTAINS(hm_last_error(), up_to);
    /* Trailing bytes. */
    memcpy(d, good, n);
    d[n] = 0;
    spit(tmp("bad"), d, n + 1);
    HM_CHECK_EQ(load_any(kind, tmp("bad")), HM_STATUS_DATA_LOSS);
    free(good);
    free(d);
  }
  /* An oversized count with valid checksums: refused before allocating. */
  unsigned char forged[32 + 8];
  memset(forged, 0, sizeof forged);
  memcpy(forged, "HMWEIGHT", 8);
  forged[8] = 1;
  forged[16] = 8;                /* payload of 8 bytes */
  put32(forged + 32, 0xfffffff); /* 268 million tensors */
  reseal(forged, sizeof forged);
  spit(tmp("bad"), forged, sizeof forged);
  HM_CHECK_EQ(load_any(1, tmp("bad")), HM_STATUS_DATA_LOSS);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "offset 32: tensor count is 268435455: more than the format allows");
  put32(forged + 32, 1000);
  reseal(forged, sizeof forged);
  spit(tmp("bad"), forged, sizeof forged);
  HM_CHECK_EQ(load_any(1, tmp("bad")), HM_STATUS_DATA_LOSS);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "more than the rest of the file can hold");
  /* A tensor whose byte count lies about its shape. */
  hm_weights *w = sample_weights();
  HM_CHECK_OK(hm_save_weights_file(w, tmp("w2.hnwt")));
  hm_weights_free(w);
  size_t n;
  unsigned char *d = slurp(tmp("w2.hnwt"), &n);
  /* First tensor: u32 count, str "a->b.weight" (4+11), dtype, rank, 2 dims, nbytes at 32+4+15+4+4+16. */
  size_t at = 32 + 4 + 15 + 4 + 4 + 16;
  put32(d + at, 4096);
  reseal(d, n);
  spit(tmp("bad"), d, n);
  HM_CHECK_EQ(load_any(1, tmp("bad")), HM_STATUS_DATA_LOSS);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "tensor 'a->b.weight': 4096 data bytes do not match its shape");
  free(d);
  HM_CHECK_EQ(load_any(0, "/nonexistent/g.hgr"), HM_STATUS_NOT_FOUND);
}

static void weights_that_do_not_fit_the_graph(void) {
  hm_graph *g = parse(MODEL);
  HM_CHECK_OK(hm_graph_init_weights(g, 1));
  hm_weights *w = NULL;
  HM_CHECK_OK(hm_weights_clone(hm_graph_weights(g), &w));
  uint64_t wrong[2] = {3, 5};
  HM_CHECK_OK(hm_weights_set(w, "h->o.weight", HM_ABI_DTYPE_F32, 2, wrong, NULL));
  HM_CHECK_OK(hm_save_weights_file(w, tmp("misfit.hnwt")));
  hm_weights *r = NULL;
  HM_CHECK_OK(hm_load_weights_file(tmp("misfit.hnwt"), &r));
  HM_CHECK_EQ(hm_graph_set_weights(g, r), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "tensor 'h->o.weight' has shape [3, 5], expected [3, 12]");
  hm_weights_free(r);
  hm_weights_free(w);
  hm_graph_free(g);
}

/* A process saving in a loop is killed at random moments; the target file
 * must always load and hold one of the two versions written. */
static void killed_save_leaves_previous_file(void) {
  hm_weights *w[2] = {NULL, NULL};
  uint64_t shape[1] = {2u << 20}; /* 8 MiB each: a save takes a while */
  for (int k = 0; k < 2; k++) {
    HM_CHECK_OK(hm_weights_create(&w[k]));
    float *v = malloc(shape[0] * 4);
    for (uint64_t i = 0; i < shape[0]; i++) v[i] = (float)(k + 1);
    HM_CHECK_OK(hm_weights_set(w[k], "big", HM_ABI_DTYPE_F32, 1, shape, v));
    free(v);
  }
  const char *target = tmp("victim.hnwt");
  HM_CHECK_OK(hm_save_weights_file(w[0], target));
  srand((unsigned)time(NULL));
  int kills = 0;
  for (int round = 0; round < 15; round++) {
    pid_t pid = fork();
    if (pid == 0) {
      for (int i = 0;; i++)
        if (hm_save_weights_file(w[i % 2], target) != HM_OK) _exit(3);
    }
    usleep((useconds_t)(5000 + rand() % 60000));
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    kills += WIFSIGNALED(status);
    hm_weights *r = NULL;
    hm_status st = hm_load_weights_file(target, &r);
    HM_CHECK_MSG(st == HM_OK, "round %d: the file does not load after kill -9: %s", round, hm_last_error());
    if (r) {
      HM_CHECK(weights_equal(r, w[0]) || weights_equal(r, w[1]));
      hm_weights_free(r);
    }
  }
  HM_CHECK_EQ(kills, 15);
  /* A killed writer leaves nothing behind that the next save does not
   * clean: plant the debris of a dead writer (its pid no longer exists)
   * next to a live process's, save, and only the live one's remains. */
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  waitpid(dead, NULL, 0);
  char stale[600], live[600];
  snprintf(stale, sizeof stale, "%s.tmp.%ld.0", target, (long)dead);
  snprintf(live, sizeof live, "%s.tmp.%ld.99", target, (long)getppid());
  spit(stale, "x", 1);
  spit(live, "x", 1);
  mode_t old_mask = umask(027);
  HM_CHECK_OK(hm_save_weights_file(w[0], target));
  umask(old_mask);
  HM_CHECK_MSG(access(stale, F_OK) != 0, "a dead writer's temporary %s survived the next save", stale);
  HM_CHECK_MSG(access(live, F_OK) == 0, "a live process's temporary was removed");
  unlink(live);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "ls %s.tmp.* 2>/dev/null | grep -q .", target);
  HM_CHECK_MSG(system(cmd) != 0, "temporary files of %s remain after the kills and a clean save", target);
  /* The saved file has the umask's permissions (0666 & ~027), set when it is created. */
  struct stat sb;
  HM_CHECK(stat(target, &sb) == 0 && (sb.st_mode & 0777) == 0640);
  hm_weights_free(w[0]);
  hm_weights_free(w[1]);
}

static void setup(void) {
  if (dir[0]) return;
  snprintf(dir, sizeof dir, "/tmp/hm_test_persist_XXXXXX");
  if (!mkdtemp(dir)) perror("mkdtemp");
}

#define WRAP(name) \
  static void run_##name(void) { setup(); name(); }
WRAP(graph_round_trip)
WRAP(weights_round_trip)
WRAP(resume_is_bit_identical)
WRAP(resume_matrix)
WRAP(epoch_loss_is_the_mean_over_the_epoch)
WRAP(version_1_checkpoints_still_load)
WRAP(every_bad_input_class_is_refused)
WRAP(weights_that_do_not_fit_the_graph)
WRAP(killed_save_leaves_previous_file)

/* Format 1 graphs (before the declared partition) still load, with none. */
static void a_version_1_graph_still_loads(void) {
  hm_graph *g = NULL;
  HM_CHECK_OK(hm_load_graph_file(HM_TEST_DATA_DIR "/graph_v1.hgr", &g));
  HM_CHECK_EQ(hm_graph_node_count(g), 4);
  HM_CHECK_EQ(hm_graph_connection_count(g), 2);
  HM_CHECK_EQ(hm_graph_partition_count(g), 0);
  hm_graph_free(g);
}

static const hm_test_case cases[] = {
    HM_TEST_CASE(a_version_1_graph_still_loads),
    HM_TEST_CASE_P(run_, graph_round_trip),
    HM_TEST_CASE_P(run_, weights_round_trip),
    HM_TEST_CASE_P(run_, resume_is_bit_identical),
    HM_TEST_CASE_P(run_, resume_matrix),
    HM_TEST_CASE_P(run_, epoch_loss_is_the_mean_over_the_epoch),
    HM_TEST_CASE_P(run_, version_1_checkpoints_still_load),
    HM_TEST_CASE_P(run_, every_bad_input_class_is_refused),
    HM_TEST_CASE_P(run_, weights_that_do_not_fit_the_graph),
    HM_TEST_CASE_P(run_, killed_save_leaves_previous_file),
};

/* Each case's process removes the directory it made. */
static void remove_dir(void) {
  if (!dir[0]) return;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  dir[0] = '\0';
}

int main(int argc, char **argv) {
  hm_test_cleanup = remove_dir;
  return hm_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
