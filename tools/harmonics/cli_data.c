/*
 * Data sources for the command line: --data NAME=idx:PATH|csv:PATH|labels:PATH
 * and --dataset fashion-mnist.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

/* A CSV of integer class indices (one per line). */
/* labels:PATH — a one-column CSV of class indices. Prints what is wrong
 * (its own message, or the library's) and returns CLI_FAILED. */
static int open_labels_csv(const char *path, hm_producer **out) {
  hm_producer *csv = NULL;
  if (hm_producer_open_csv(path, &csv) != HM_OK) return cli_fail(NULL);
  hm_producer_info info;
  float *values = NULL;
  int32_t *labels = NULL;
  int rc = hm_producer_info_get(csv, &info) == HM_OK ? CLI_OK : cli_fail(NULL);
  if (rc == CLI_OK && info.width != 1) {
    fprintf(stderr, "harmonics: %s: a labels file has one column, this one has %zu\n", path, info.width);
    rc = CLI_FAILED;
  }
  if (rc == CLI_OK) {
    values = malloc(info.count * sizeof *values);
    labels = malloc(info.count * sizeof *labels);
    size_t rows = 0;
    if (!values || !labels) {
      fprintf(stderr, "harmonics: %s: out of memory for %zu labels\n", path, info.count);
      rc = CLI_FAILED;
    } else if (hm_producer_next_batch(csv, info.count, values, &rows) != HM_OK) {
      rc = cli_fail(NULL);
    }
  }
  size_t classes = 0;
  for (size_t i = 0; rc == CLI_OK && i < info.count; i++) {
    float v = values[i];
    if (v < 0 || v != floorf(v) || v > 1e6f) {
      fprintf(stderr, "harmonics: %s: row %zu holds %g, not a class index\n", path, i + 1, (double)v);
      rc = CLI_FAILED;
      break;
    }
    labels[i] = (int32_t)v;
    if ((size_t)v + 1 > classes) classes = (size_t)v + 1;
  }
  if (rc == CLI_OK && hm_producer_from_labels(labels, info.count, classes, out) != HM_OK) rc = cli_fail(NULL);
  free(values);
  free(labels);
  hm_producer_free(csv);
  return rc;
}

int cli_open_source(const char *spec, hm_producer **out) {
  hm_status st;
  if (strncmp(spec, "labels:", 7) == 0) return open_labels_csv(spec + 7, out);
  if (strncmp(spec, "idx:", 4) == 0) st = hm_producer_open_idx(spec + 4, out);
  else if (strncmp(spec, "csv:", 4) == 0) st = hm_producer_open_csv(spec + 4, out);
  else {
    /* Our own message: there is no library error to print after it. */
    fprintf(stderr, "harmonics: data source '%s' must be idx:PATH, csv:PATH or labels:PATH\n", spec);
    return CLI_USAGE;
  }
  return st == HM_OK ? CLI_OK : cli_fail(NULL);
}

static void note_train(cli_sources *src, hm_producer *p) {
  hm_producer_info info;
  if (hm_producer_info_get(p, &info) == HM_OK && info.count > src->train_samples) src->train_samples = info.count;
}

/* The first producer that feeds a connection, and the first loss target. */
static const char *first_input(const hm_graph *g) {
  for (size_t i = 0; i < hm_graph_connection_count(g); i++) {
    const char *from;
    if (hm_graph_connection(g, i, &from, NULL, NULL) != HM_OK) continue;
    for (size_t n = 0; n < hm_graph_node_count(g); n++) {
      const char *name;
      hm_node_kind kind;
      if (hm_graph_node(g, n, &name, &kind, NULL) == HM_OK && kind == HM_NODE_PRODUCER && strcmp(name, from) == 0)
        return from;
    }
  }
  return NULL;
}

int cli_bind_dataset(hm_graph *g, const char *dataset, size_t limit_train, size_t limit_eval, cli_sources *src) {
  if (strcmp(dataset, "fashion-mnist") != 0) {
    fprintf(stderr, "harmonics: unknown dataset '%s' (known: fashion-mnist)\n", dataset);
    return CLI_USAGE;
  }
  const char *input = first_input(g), *target = NULL;
  if (!input) {
    fprintf(stderr, "harmonics: --dataset: the graph has no producer feeding a connection\n");
    return CLI_FAILED;
  }
  if (hm_graph_loss_count(g) > 0 && hm_graph_loss(g, 0, NULL, NULL, &target) != HM_OK) target = NULL;
  const char *dir = getenv("HARMONICS_FASHION_MNIST_DIR");
  if (!dir || !*dir) dir = FASHION_DIR;
  const char *files[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                          "t10k-labels-idx1-ubyte.gz"};
  for (int i = 0; i < 4; i++) {
    if (!target && (i == 1 || i == 3)) continue;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    /* Decompressed copies (the same names without .gz) work too; when
     * neither is there, the error names the .gz file. */
    FILE *exists = fopen(path, "rb");
    if (exists) {
      fclose(exists);
    } else {
      char plain[1024];
      snprintf(plain, sizeof plain, "%s/%.*s", dir, (int)(strlen(files[i]) - 3), files[i]);
      if ((exists = fopen(plain, "rb"))) {
        fclose(exists);
        memcpy(path, plain, sizeof path);
      }
    }
    hm_producer *p = NULL;
    if (hm_producer_open_idx(path, &p) != HM_OK) {
      fprintf(stderr, "harmonics: %s\n(install Debian's dataset-fashion-mnist: scripts/install-deps)\n", hm_last_error());
      return CLI_FAILED;
    }
    cli_sources_keep(src, p);
    size_t limit = i < 2 ? limit_train : limit_eval;
    if (limit) {
      hm_producer *lim = NULL;
      if (hm_producer_limit(p, limit, &lim) != HM_OK) return cli_fail("--limit");
      cli_sources_keep(src, lim);
      p = lim;
    }
    const char *node = (i == 0 || i == 2) ? input : target;
    if (i < 2) note_train(src, p);
    hm_status st = i < 2 ? hm_graph_bind_producer(g, node, p) : hm_graph_bind_eval(g, node, p);
    if (st != HM_OK) return cli_fail("--dataset");
  }
  return CLI_OK;
}

int cli_bind_spec(hm_graph *g, const char *spec, int eval, size_t limit, cli_sources *src) {
  const char *eq = strchr(spec, '=');
  if (!eq || eq == spec) {
    fprintf(stderr, "harmonics: --data expects NAME=idx:PATH|csv:PATH|labels:PATH, got '%s'\n", spec);
    return CLI_USAGE;
  }
  char name[256];
  snprintf(name, sizeof name, "%.*s", (int)(eq - spec), spec);
  hm_producer *p = NULL;
  int rc = cli_open_source(eq + 1, &p);
  if (rc != CLI_OK) return rc;
  cli_sources_keep(src, p);
  if (limit) {
    hm_producer *lim = NULL;
    if (hm_producer_limit(p, limit, &lim) != HM_OK) return cli_fail("--limit");
    cli_sources_keep(src, lim);
    p = lim;
  }
  if (!eval) note_train(src, p);
  if ((eval ? hm_graph_bind_eval(g, name, p) : hm_graph_bind_producer(g, name, p)) != HM_OK) return cli_fail(NULL);
  return CLI_OK;
}

void cli_sources_keep(cli_sources *s, hm_producer *p) {
  if (s->n < sizeof s->items / sizeof s->items[0]) s->items[s->n++] = p;
}

void cli_sources_free(cli_sources *s) {
  /* Limits wrap their base: free in reverse order of creation. */
  while (s->n) hm_producer_free(s->items[--s->n]);
}
