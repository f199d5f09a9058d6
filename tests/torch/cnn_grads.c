/*
 * Gradients of tests/torch/cnn_grads.hmx for test_cnn_grads.py: one batch
 * of deterministic inputs through the trainer, written as safetensors —
 * the inputs and labels ("x", "y"), the initial weights, the gradients and
 * the weights after the batch (batch norm's running statistics moved) —
 * plus the loss and each dropout connection's mask seed on stdout.
 *   cnn_grads MODEL.hmx OUT_DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harmonics/harmonics.h"

#define N 6

static int check(hm_status st, const char *what) {
  if (st == HM_OK) return 0;
  fprintf(stderr, "cnn_grads: %s: %s\n", what, hm_last_error());
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: cnn_grads MODEL.hmx OUT_DIR\n");
    return 2;
  }
  hm_graph *g = NULL;
  if (check(hm_graph_load_dsl(argv[1], &g), "load")) return 1;
  size_t width = 2 * 9 * 9;
  float *x = malloc(N * width * sizeof *x);
  int32_t y[N];
  uint64_t s = 12345;
  for (size_t i = 0; i < N * width; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = (float)((double)(s >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
  }
  for (int i = 0; i < N; i++) y[i] = (i * 3 + 1) % 5;
  hm_producer *px = NULL, *py = NULL;
  if (check(hm_producer_from_floats(x, N, width, &px), "inputs") || check(hm_producer_from_labels(y, N, 5, &py), "labels") ||
      check(hm_graph_bind_producer(g, "x", px), "bind x") || check(hm_graph_bind_producer(g, "y", py), "bind y"))
    return 1;
  hm_fit_options o = hm_fit_options_default();
  o.batch_size = N;
  o.seed = 7;
  o.backend = "cpu";
  if (check(hm_graph_init_weights(g, o.seed), "init")) return 1;
  char path[4096];
  snprintf(path, sizeof path, "%s/weights.safetensors", argv[2]);
  if (check(hm_weights_save_safetensors(hm_graph_weights(g), path), "save weights")) return 1;
  hm_weights *data = NULL;
  uint64_t xs[4] = {N, 2, 9, 9}, ys[1] = {N};
  if (check(hm_weights_create(&data), "data") || check(hm_weights_set(data, "x", HM_ABI_DTYPE_F32, 4, xs, x), "x") ||
      check(hm_weights_set(data, "y", HM_ABI_DTYPE_I32, 1, ys, y), "y"))
    return 1;
  snprintf(path, sizeof path, "%s/data.safetensors", argv[2]);
  if (check(hm_weights_save_safetensors(data, path), "save data")) return 1;
  hm_trainer *t = NULL;
  if (check(hm_trainer_open(g, NULL, &o, &t), "trainer")) return 1;
  int32_t idx[N];
  for (int i = 0; i < N; i++) idx[i] = i;
  float loss = 0;
  hm_weights *grads = NULL;
  if (check(hm_trainer_compute_gradients(t, idx, N, &loss), "gradients") || check(hm_trainer_gradients(t, &grads), "read"))
    return 1;
  snprintf(path, sizeof path, "%s/grads.safetensors", argv[2]);
  if (check(hm_weights_save_safetensors(grads, path), "save gradients")) return 1;
  hm_weights *after = NULL;
  snprintf(path, sizeof path, "%s/after.safetensors", argv[2]);
  if (check(hm_trainer_weights(t, &after), "weights") || check(hm_weights_save_safetensors(after, path), "save after"))
    return 1;
  hm_weights_free(after);
  printf("loss %.9g\n", (double)loss);
  /* The lowering's mask seed of each dropout connection (lower.c dropout_op). */
  for (size_t e = 0; e < hm_graph_connection_count(g); e++) {
    hm_connection_spec c;
    const char *from, *to, *act;
    if (check(hm_graph_connection_spec(g, e, &c), "spec") || check(hm_graph_connection(g, e, &from, &to, &act), "edge"))
      return 1;
    if (c.kind == HM_CONNECTION_DROPOUT)
      printf("dropout %s->%s seed %llu step 0\n", from, to,
             (unsigned long long)(o.seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(e + 1))));
  }
  hm_weights_free(grads);
  hm_weights_free(data);
  hm_trainer_close(t);
  hm_graph_free(g);
  hm_producer_free(px);
  hm_producer_free(py);
  free(x);
  return 0;
}
