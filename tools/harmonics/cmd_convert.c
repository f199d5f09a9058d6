/*
 * harmonics compile MODEL.hmx [-o MODEL.hgr]: parses, resolves what it can
 * and writes the binary graph.
 * harmonics convert IN OUT: weights between safetensors (.safetensors) and
 * Harmonics' named weights (.hnwt), chosen by file extension.
 */
#include <string.h>

#include "cli.h"

static int has_ext(const char *path, const char *ext) {
  size_t n = strlen(path), m = strlen(ext);
  return n >= m && strcmp(path + n - m, ext) == 0;
}

int cmd_compile(int argc, char **argv) {
  const char *in = NULL, *out = "graph.hgr";
  for (int i = 0; i < argc; i++) {
    if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) out = argv[++i];
    else if (argv[i][0] == '-' || in) {
      fprintf(stderr, "usage: harmonics compile MODEL.hmx [-o MODEL.hgr]\n");
      return CLI_USAGE;
    } else in = argv[i];
  }
  if (!in) {
    fprintf(stderr, "usage: harmonics compile MODEL.hmx [-o MODEL.hgr]\n");
    return CLI_USAGE;
  }
  hm_graph *g = NULL;
  if (hm_graph_load_dsl(in, &g) != HM_OK) return cli_fail(NULL);
  /* Widths that need data stay unresolved; that is not an error here. */
  hm_status st = hm_graph_resolve(g);
  if (st != HM_OK) fprintf(stderr, "harmonics: note: %s\n", hm_last_error());
  int rc = hm_save_graph_file(g, out) == HM_OK ? CLI_OK : cli_fail(NULL);
  hm_graph_free(g);
  if (rc == CLI_OK) printf("wrote %s\n", out);
  return rc;
}

int cmd_convert(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: harmonics convert IN OUT   (.safetensors <-> .hnwt, by extension)\n");
    return CLI_USAGE;
  }
  hm_weights *w = NULL;
  hm_status st;
  if (has_ext(argv[0], ".safetensors")) st = hm_weights_load_safetensors(argv[0], &w);
  else if (has_ext(argv[0], ".hnwt")) st = hm_load_weights_file(argv[0], &w);
  else {
    fprintf(stderr, "harmonics convert: %s: unknown extension (.safetensors or .hnwt)\n", argv[0]);
    return CLI_USAGE;
  }
  if (st != HM_OK) return cli_fail(NULL);
  if (has_ext(argv[1], ".safetensors")) st = hm_weights_save_safetensors(w, argv[1]);
  else if (has_ext(argv[1], ".hnwt")) st = hm_save_weights_file(w, argv[1]);
  else {
    hm_weights_free(w);
    fprintf(stderr, "harmonics convert: %s: unknown extension (.safetensors or .hnwt)\n", argv[1]);
    return CLI_USAGE;
  }
  hm_weights_free(w);
  if (st != HM_OK) return cli_fail(NULL);
  printf("wrote %s\n", argv[1]);
  return CLI_OK;
}
