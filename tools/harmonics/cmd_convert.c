/*
 * harmonics compile MODEL [-o MODEL.hgr] [--pipeline LAYER,... | --stages]:
 * parses, resolves what it can and writes the binary graph, or the graph of
 * each pipeline stage (OUT.stage<k>.hgr) with what crosses between them.
 * harmonics convert IN OUT: weights from any format the CLI reads
 * (safetensors, .hnwt, a checkpoint's weights; recognised by content) to
 * safetensors or .hnwt (chosen by OUT's extension).
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int has_ext(const char *path, const char *ext) {
  size_t n = strlen(path), m = strlen(ext);
  return n >= m && strcmp(path + n - m, ext) == 0;
}

static int is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }

static void compile_usage(FILE *f) {
  fprintf(f,
          "usage: harmonics compile MODEL.hmx [-o MODEL.hgr] [--pipeline LAYER[,LAYER...] | --stages]\n"
          "  Parses the model, resolves the widths it can without data, and writes the\n"
          "  binary graph (default graph.hgr). train and infer read .hgr as well as .hmx.\n"
          "  --pipeline cuts the model after the named layers (--stages: where the model's\n"
          "  `partition by layer ...;` cuts it) and writes each stage's graph to\n"
          "  OUT.stage<k>.hgr, printing what each stage holds and what crosses between them.\n");
}

static void convert_usage(FILE *f) {
  fprintf(f,
          "usage: harmonics convert IN OUT\n"
          "  IN: weights as .safetensors, .hnwt or a .hck checkpoint (recognised by content)\n"
          "  OUT: .safetensors or .hnwt, chosen by its extension\n");
}

/* "graph.hgr" -> "graph.stage1.hgr" */
static void stage_path(const char *out, size_t k, char *buf, size_t cap) {
  size_t n = strlen(out);
  int ext = has_ext(out, ".hgr");
  snprintf(buf, cap, "%.*s.stage%zu%s", (int)(ext ? n - 4 : n), out, k, ext ? ".hgr" : "");
}

/* Writes every stage of |g| cut at |cuts| (the model's own when NULL). */
static int compile_stages(hm_graph *g, const char *cuts, const char *out) {
  char text[1024], *names[64];
  size_t n = 0;
  if (cuts) {
    snprintf(text, sizeof text, "%s", cuts);
    for (char *tok = strtok(text, ","); tok && n < 64; tok = strtok(NULL, ",")) names[n++] = tok;
  }
  hm_partition *p = NULL;
  if (hm_graph_partition_by_layer(g, (const char *const *)names, n, &p) != HM_OK) return cli_fail(NULL);
  int rc = CLI_OK;
  for (size_t k = 0; k < hm_partition_stage_count(p) && rc == CLI_OK; k++) {
    hm_graph *sg = hm_partition_stage(p, k);
    char path[4096];
    stage_path(out, k, path, sizeof path);
    if (hm_save_graph_file(sg, path) != HM_OK) {
      rc = cli_fail(NULL);
      break;
    }
    printf("stage %zu -> %s: layers", k, path);
    for (size_t i = 0; i < hm_graph_node_count(sg); i++) {
      const char *name;
      hm_node_kind kind;
      if (hm_graph_node(sg, i, &name, &kind, NULL) == HM_OK && kind == HM_NODE_LAYER) printf(" %s", name);
    }
    printf("%s\n", hm_graph_loss_count(sg) ? "; the loss" : "");
    for (size_t b = 0; b < hm_partition_boundary_count(p); b++) {
      hm_boundary_info bi;
      if (hm_partition_boundary(p, b, &bi) == HM_OK && bi.from_stage == k)
        printf("  %s: %s (%zu values) to stage %zu\n", bi.name, bi.layer, bi.width, bi.to_stage);
    }
  }
  hm_partition_free(p);
  return rc;
}

int cmd_compile(int argc, char **argv) {
  const char *in = NULL, *out = "graph.hgr", *cuts = NULL;
  int stages = 0;
  for (int i = 0; i < argc; i++) {
    if (is_help(argv[i])) {
      compile_usage(stdout);
      return CLI_OK;
    }
    if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) out = argv[++i];
    else if (!strcmp(argv[i], "--pipeline") && i + 1 < argc) cuts = argv[++i], stages = 1;
    else if (!strcmp(argv[i], "--stages")) stages = 1;
    else if (argv[i][0] == '-') {
      fprintf(stderr, "harmonics compile: unknown option '%s'\n", argv[i]);
      compile_usage(stderr);
      return CLI_USAGE;
    } else if (in) {
      fprintf(stderr, "harmonics compile: unexpected argument '%s' (one model at a time)\n", argv[i]);
      return CLI_USAGE;
    } else in = argv[i];
  }
  if (!in) {
    fprintf(stderr, "harmonics compile: no model given\n");
    compile_usage(stderr);
    return CLI_USAGE;
  }
  hm_graph *g = NULL;
  if (cli_load_model(in, &g) != CLI_OK) return CLI_FAILED;
  /* Widths that need data stay unresolved; that is not an error here. */
  if (stages) { /* stages need every width: a failure to resolve is the answer */
    int rc = compile_stages(g, cuts, out);
    hm_graph_free(g);
    return rc;
  }
  hm_status st = hm_graph_resolve(g);
  if (st != HM_OK) fprintf(stderr, "harmonics: note: %s\n", hm_last_error());
  int rc = hm_save_graph_file(g, out) == HM_OK ? CLI_OK : cli_fail(NULL);
  hm_graph_free(g);
  if (rc == CLI_OK) printf("wrote %s\n", out);
  return rc;
}

int cmd_convert(int argc, char **argv) {
  if (argc >= 1 && is_help(argv[0])) {
    convert_usage(stdout);
    return CLI_OK;
  }
  if (argc != 2) {
    fprintf(stderr, "harmonics convert: expected IN and OUT, got %d argument%s\n", argc, argc == 1 ? "" : "s");
    convert_usage(stderr);
    return CLI_USAGE;
  }
  int to_safetensors = has_ext(argv[1], ".safetensors");
  if (!to_safetensors && !has_ext(argv[1], ".hnwt")) {
    fprintf(stderr, "harmonics convert: %s: unknown extension for the output (.safetensors or .hnwt)\n", argv[1]);
    return CLI_USAGE;
  }
  hm_weights *w = NULL;
  if (cli_load_weights(argv[0], &w) != CLI_OK) return CLI_FAILED;
  hm_status st = to_safetensors ? hm_weights_save_safetensors(w, argv[1]) : hm_save_weights_file(w, argv[1]);
  hm_weights_free(w);
  if (st != HM_OK) return cli_fail(NULL);
  printf("wrote %s\n", argv[1]);
  return CLI_OK;
}
