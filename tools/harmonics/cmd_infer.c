/*
 * harmonics infer MODEL.hmx --weights FILE [--dataset fashion-mnist | --data ...]:
 * runs a trained model over the evaluation (or given) data and prints its
 * loss and accuracy.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void infer_usage(FILE *f) {
  fprintf(f,
          "usage: harmonics infer MODEL.hmx --weights FILE.safetensors [options]\n"
          "  --dataset fashion-mnist   evaluate on the 10k test split (from $HARMONICS_FASHION_MNIST_DIR,\n"
          "                            else /usr/share/datasets/fashion-mnist)\n"
          "  --data NAME=SPEC          input (and target) data; SPEC = idx:PATH | csv:PATH | labels:PATH\n"
          "  --limit N                 use the first N samples\n"
          "  --batch N (1000)  --backend NAME[:N]  --threads N  --config FILE  --json\n"
          "  --policy hardware|auto|bits:8|bits:4|bits:3|connections:B,...   packed widths run from\n"
          "                            weights packed once on the device; the output gives each\n"
          "                            connection's bytes and bits per weight\n");
}

static double bits_per_weight(size_t bytes, size_t weights) {
  return weights ? 8.0 * (double)bytes / (double)weights : 0.0;
}

int cmd_infer(int argc, char **argv) {
  const char *model = NULL, *weights = NULL, *dataset = NULL, *config = NULL;
  const char *data_specs[16];
  size_t n_data = 0, limit = 0, threads = 0;
  int json = 0;
  hm_fit_options o = hm_fit_options_default();
  hm_policy policy = hm_make_hardware_policy();
  char policy_text[64] = "hardware";
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int takes = strcmp(a, "--weights") == 0 || strcmp(a, "--dataset") == 0 || strcmp(a, "--data") == 0 ||
                strcmp(a, "--limit") == 0 || strcmp(a, "--batch") == 0 || strcmp(a, "--backend") == 0 ||
                strcmp(a, "--threads") == 0 || strcmp(a, "--policy") == 0 || strcmp(a, "--config") == 0;
    if (takes && !v) {
      fprintf(stderr, "harmonics infer: %s needs a value\n", a);
      return CLI_USAGE;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      infer_usage(stdout);
      return CLI_OK;
    } else if (strcmp(a, "--json") == 0) json = 1;
    else if (strcmp(a, "--weights") == 0) weights = argv[++i];
    else if (strcmp(a, "--dataset") == 0) dataset = argv[++i];
    else if (strcmp(a, "--data") == 0) {
      if (n_data == 16) return CLI_USAGE;
      data_specs[n_data++] = argv[++i];
    } else if (strcmp(a, "--limit") == 0) {
      if (cli_parse_size(a, argv[++i], &limit)) return CLI_USAGE;
    } else if (strcmp(a, "--batch") == 0) {
      if (cli_parse_size(a, argv[++i], &o.eval_batch_size)) return CLI_USAGE;
    } else if (strcmp(a, "--threads") == 0) {
      if (cli_parse_size(a, argv[++i], &threads)) return CLI_USAGE;
    } else if (strcmp(a, "--backend") == 0) o.backend = argv[++i];
    else if (strcmp(a, "--config") == 0) config = argv[++i];
    else if (strcmp(a, "--policy") == 0) {
      if (hm_policy_parse(argv[++i], &policy) != HM_OK) return cli_fail("--policy");
      hm_policy_format(&policy, policy_text, sizeof policy_text);
    } else if (a[0] == '-') {
      fprintf(stderr, "harmonics infer: unknown option '%s'\n", a);
      infer_usage(stderr);
      return CLI_USAGE;
    } else if (!model) model = a;
    else {
      fprintf(stderr, "harmonics infer: unexpected argument '%s'\n", a);
      return CLI_USAGE;
    }
  }
  if (!model || !weights || (!dataset && !n_data)) {
    fprintf(stderr, "harmonics infer: %s\n",
            !model     ? "no model given (MODEL.hmx or MODEL.hgr)"
            : !weights ? "--weights FILE is missing (the trained weights: .safetensors, .hnwt or .hck)"
                       : "no data: give --dataset fashion-mnist or --data NAME=SPEC");
    infer_usage(stderr);
    return CLI_USAGE;
  }
  o.threads = (unsigned)threads;
  if (cli_registry_init(config, o.backend) != CLI_OK) return CLI_FAILED;
  hm_graph *g = NULL;
  if (cli_load_model(model, &g) != CLI_OK) return CLI_FAILED;
  cli_sources src = {{0}, 0, 0};
  int rc = CLI_OK, use_eval = dataset != NULL;
  if (dataset) rc = cli_bind_dataset(g, dataset, 1, limit, &src);
  for (size_t i = 0; i < n_data && rc == CLI_OK; i++) rc = cli_bind_spec(g, data_specs[i], 0, limit, &src);
  hm_weights *w = NULL;
  if (rc == CLI_OK) rc = cli_load_weights(weights, &w);
  if (rc == CLI_OK && hm_graph_set_weights(g, w) != HM_OK) rc = cli_fail("--weights");
  hm_weights_free(w);
  hm_eval_result r;
  if (rc == CLI_OK && hm_graph_inference(g, &policy, &o, use_eval, &r) != HM_OK) rc = cli_fail("inference failed");
  if (rc == CLI_OK) {
    if (!isnan(r.accuracy)) printf("accuracy: %.2f%% (%zu samples)\n", 100.0 * r.accuracy, r.samples);
    if (!isnan(r.loss)) printf("loss: %.6f\n", (double)r.loss);
    printf("backend: %s\n", r.backend);
    printf("precision: %s\n", r.precision);
    for (size_t i = 0; i < r.n_connections && i < HM_POLICY_MAX_CONNECTIONS; i++) {
      const hm_connection_cost *c = &r.connections[i];
      const char *from = "?", *to = "?";
      if (hm_graph_connection(g, c->connection, &from, &to, NULL) != HM_OK) continue;
      size_t padded = (c->inputs + 63) / 64 * 64;
      printf("connection %s->%s: %s, %zu bytes for %zu weights = %.3f bits per weight", from, to, c->precision,
             c->weight_bytes, c->weights, bits_per_weight(c->weight_bytes, c->weights));
      if (strncmp(c->precision, "int", 3) == 0 && padded != c->inputs)
        printf(" (%zu inputs padded to %zu)", c->inputs, padded);
      printf("\n");
    }
    printf("weights: %zu bytes for %zu matrix weights (%.3f bits each) + %zu bytes of f32 biases\n", r.weight_bytes,
           r.weight_count, bits_per_weight(r.weight_bytes, r.weight_count), r.bias_bytes);
    if (json) {
      printf("{\"model\":");
      json_string(stdout, model);
      printf(",\"samples\":%zu,\"accuracy\":", r.samples);
      json_number(stdout, r.accuracy);
      printf(",\"loss\":");
      json_number(stdout, r.loss);
      printf(",\"backend\":");
      json_string(stdout, r.backend);
      printf(",\"policy\":");
      json_string(stdout, policy_text);
      printf(",\"precision\":");
      json_string(stdout, r.precision);
      printf(",\"weight_bytes\":%zu,\"weight_count\":%zu,\"bits_per_weight\":", r.weight_bytes, r.weight_count);
      json_number(stdout, bits_per_weight(r.weight_bytes, r.weight_count));
      printf(",\"bias_bytes\":%zu,\"connections\":[", r.bias_bytes);
      for (size_t i = 0; i < r.n_connections && i < HM_POLICY_MAX_CONNECTIONS; i++) {
        const hm_connection_cost *c = &r.connections[i];
        const char *from = "?", *to = "?";
        if (hm_graph_connection(g, c->connection, &from, &to, NULL) != HM_OK) continue;
        char name[520];
        snprintf(name, sizeof name, "%s->%s", from, to);
        printf("%s{\"connection\":", i ? "," : "");
        json_string(stdout, name);
        printf(",\"precision\":");
        json_string(stdout, c->precision);
        printf(",\"inputs\":%zu,\"outputs\":%zu,\"weight_bytes\":%zu,\"bits_per_weight\":", c->inputs, c->outputs,
               c->weight_bytes);
        json_number(stdout, bits_per_weight(c->weight_bytes, c->weights));
        printf("}");
      }
      printf("]}\n");
    }
  }
  hm_graph_free(g);
  cli_sources_free(&src);
  return rc;
}
