/*
 * harmonics compile MODEL [-o MODEL.hgr]: parses, resolves what it can and
 * writes the binary graph.
 * harmonics convert IN OUT: weights from any format the CLI reads
 * (safetensors, .hnwt, a checkpoint's weights; recognised by content) to
 * safetensors or .hnwt (chosen by OUT's extension).
 */
#include <string.h>

#include "cli.h"

static int has_ext(const char *path, const char *ext) {
  size_t n = strlen(path), m = strlen(ext);
  return n >= m && strcmp(path + n - m, ext) == 0;
}

static int is_help(const char *a) { return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0; }

static void compile_usage(FILE *f) {
  fprintf(f,
          "usage: harmonics compile MODEL.hmx [-o MODEL.hgr]\n"
          "  Parses the model, resolves the widths it can without data, and writes the\n"
          "  binary graph (default graph.hgr). train and infer read .hgr as well as .hmx.\n");
}

static void convert_usage(FILE *f) {
  fprintf(f,
          "usage: harmonics convert IN OUT\n"
          "  IN: weights as .safetensors, .hnwt or a .hck checkpoint (recognised by content)\n"
          "  OUT: .safetensors or .hnwt, chosen by its extension\n");
}

int cmd_compile(int argc, char **argv) {
  const char *in = NULL, *out = "graph.hgr";
  for (int i = 0; i < argc; i++) {
    if (is_help(argv[i])) {
      compile_usage(stdout);
      return CLI_OK;
    }
    if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) out = argv[++i];
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
