/*
 * Trains the Fashion-MNIST classifier from C, start to finish: builds the
 * graph with the C builder (the same model as fashion_mnist.hmx), binds the
 * IDX files, fits with a progress callback and per-epoch evaluation,
 * evaluates on the test split, and saves the weights. Every call's status
 * is checked; on failure hm_last_error() says what and where.
 *
 *   train_fashion_mnist [--epochs N] [--limit N] [--save FILE.safetensors]
 *
 * The data comes from $HARMONICS_FASHION_MNIST_DIR, else Debian's
 * dataset-fashion-mnist (/usr/share/datasets/fashion-mnist). --limit uses
 * the first N training samples (and at most N test samples).
 *
 * Build it against an installed Harmonics with either route:
 *   cc train_fashion_mnist.c $(pkg-config --cflags --libs harmonics)
 *   find_package(Harmonics) + target_link_libraries(app Harmonics::harmonics)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <harmonics/harmonics.h>

/* Returns from the enclosing function with 1 when |call| fails. */
#define CHECK(call)                                                             \
  do {                                                                          \
    hm_status check_status_ = (call);                                           \
    if (check_status_ != HM_OK) {                                               \
      fprintf(stderr, "train_fashion_mnist: %s: %s\n", #call, hm_last_error()); \
      return 1;                                                                 \
    }                                                                           \
  } while (0)

typedef struct data {
  hm_producer *files[4];  /* train images, train labels, test images, test labels */
  hm_producer *limited[4];
} data;

static void data_free(data *d) {
  for (int i = 0; i < 4; i++) {
    hm_producer_free(d->limited[i]);
    hm_producer_free(d->files[i]);
  }
}

/* Opens the four IDX files; with |limit| > 0 only their first samples. */
static int data_open(data *d, size_t limit) {
  static const char *names[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
  const char *dir = getenv("HARMONICS_FASHION_MNIST_DIR");
  if (!dir || !dir[0]) dir = "/usr/share/datasets/fashion-mnist";
  for (int i = 0; i < 4; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    CHECK(hm_producer_open_idx(path, &d->files[i]));
    if (limit) CHECK(hm_producer_limit(d->files[i], limit, &d->limited[i]));
  }
  return 0;
}

static hm_producer *use(const data *d, int i) { return d->limited[i] ? d->limited[i] : d->files[i]; }

/* pixels -(relu)-> hidden {128} -> logits; logits <-(cross_entropy)- label */
static int build_graph(hm_graph **out) {
  hm_graph *g = NULL;
  CHECK(hm_graph_create("fashion_mnist", &g));
  *out = g;
  CHECK(hm_graph_add_producer(g, "pixels", 784));
  CHECK(hm_graph_add_producer(g, "label", 10));
  CHECK(hm_graph_add_layer(g, "hidden", 128));
  CHECK(hm_graph_add_layer(g, "logits", 0)); /* width 10, from the loss target */
  CHECK(hm_graph_connect(g, "pixels", "hidden", "relu"));
  CHECK(hm_graph_connect(g, "hidden", "logits", "id"));
  CHECK(hm_graph_add_loss(g, "logits", "cross_entropy", "label"));
  return 0;
}

/* Called after every update: a line every 200 steps. */
static void on_update(void *user, size_t step, float grad_norm, float loss, float lr) {
  (void)user;
  if (step % 200 == 0) printf("step %zu: loss %.4f, gradient norm %.3f, lr %g\n", step, loss, grad_norm, lr);
}

/* Called after every epoch and its evaluation; nonzero would stop. */
static int on_epoch(void *user, const hm_cycle_state *s) {
  (void)user;
  printf("epoch %zu: test accuracy %.2f%%\n", hm_cycle_state_epoch(s), 100.0 * hm_cycle_state_eval_accuracy(s));
  return 0;
}

static int train(size_t epochs, size_t limit, const char *save) {
  data d;
  memset(&d, 0, sizeof d);
  hm_graph *g = NULL;
  hm_cycle_state *state = NULL;
  int rc = data_open(&d, limit);
  if (rc == 0) rc = build_graph(&g);
  if (rc == 0) {
    rc = 1;
    hm_fit_options opt = hm_fit_options_default();
    opt.optimizer = HM_OPTIMIZER_ADAM;
    opt.learning_rate = 0.001f;
    opt.batch_size = 64;
    opt.seed = 0;
    opt.progress.fn = on_update;
    opt.on_epoch = on_epoch;
    hm_policy policy = hm_make_hardware_policy();
    hm_eval_result r;
    if (hm_graph_bind_producer(g, "pixels", use(&d, 0)) != HM_OK ||
        hm_graph_bind_producer(g, "label", use(&d, 1)) != HM_OK ||
        hm_graph_bind_eval(g, "pixels", use(&d, 2)) != HM_OK || hm_graph_bind_eval(g, "label", use(&d, 3)) != HM_OK)
      fprintf(stderr, "train_fashion_mnist: binding the data: %s\n", hm_last_error());
    else if (hm_graph_fit(g, epochs, &policy, &opt, &state) != HM_OK)
      fprintf(stderr, "train_fashion_mnist: fit: %s\n", hm_last_error());
    else if (hm_graph_inference(g, &policy, &opt, 1, &r) != HM_OK)
      fprintf(stderr, "train_fashion_mnist: evaluation: %s\n", hm_last_error());
    else if (save && hm_weights_save_safetensors(hm_graph_weights(g), save) != HM_OK)
      fprintf(stderr, "train_fashion_mnist: saving %s: %s\n", save, hm_last_error());
    else {
      printf("trained %zu steps on %s; test accuracy %.2f%% over %zu samples, loss %.4f\n", hm_cycle_state_step(state),
             hm_cycle_state_backend(state), 100.0 * r.accuracy, r.samples, r.loss);
      if (save) printf("saved the weights to %s\n", save);
      rc = 0;
    }
  }
  hm_cycle_state_free(state);
  hm_graph_free(g);
  data_free(&d);
  return rc;
}

static int parse_size(const char *flag, const char *text, size_t *out) {
  char *end = NULL;
  unsigned long long v = text ? strtoull(text, &end, 10) : 0;
  if (!text || !text[0] || *end || text[0] == '-') {
    fprintf(stderr, "train_fashion_mnist: %s needs a whole number, got '%s'\n", flag, text ? text : "");
    return 1;
  }
  *out = (size_t)v;
  return 0;
}

int main(int argc, char **argv) {
  size_t epochs = 5, limit = 0;
  const char *save = NULL;
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(argv[i], "--epochs") == 0 && v) {
      if (parse_size("--epochs", argv[++i], &epochs)) return 2;
    } else if (strcmp(argv[i], "--limit") == 0 && v) {
      if (parse_size("--limit", argv[++i], &limit)) return 2;
    } else if (strcmp(argv[i], "--save") == 0 && v) {
      save = argv[++i];
    } else {
      fprintf(stderr, "usage: train_fashion_mnist [--epochs N] [--limit N] [--save FILE.safetensors]\n");
      return 2;
    }
  }
  return train(epochs, limit, save);
}
