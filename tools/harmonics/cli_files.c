/*
 * Models and weights as the CLI accepts them: whatever the file's first
 * bytes say it is (a name's extension is only a hint a user can get wrong),
 * so every command reads every format the others write.
 */
#include <string.h>

#include "cli.h"

cli_file_kind cli_file_kind_of(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return CLI_FILE_UNREADABLE;
  unsigned char head[9];
  size_t n = fread(head, 1, sizeof head, f);
  fclose(f);
  if (n >= 8 && memcmp(head, "HMGRAPH1", 8) == 0) return CLI_FILE_GRAPH;
  if (n >= 8 && memcmp(head, "HMWEIGHT", 8) == 0) return CLI_FILE_WEIGHTS;
  if (n >= 8 && memcmp(head, "HMCHKPT1", 8) == 0) return CLI_FILE_CHECKPOINT;
  /* safetensors: a little-endian u64 header length, then a JSON object. */
  if (n == 9 && head[8] == '{' && head[7] == 0 && head[6] == 0 && head[5] == 0) return CLI_FILE_SAFETENSORS;
  return CLI_FILE_TEXT;
}

const char *cli_file_kind_name(cli_file_kind k) {
  switch (k) {
    case CLI_FILE_GRAPH: return "a binary graph (.hgr)";
    case CLI_FILE_WEIGHTS: return "a weights file (.hnwt)";
    case CLI_FILE_CHECKPOINT: return "a checkpoint (.hck)";
    case CLI_FILE_SAFETENSORS: return "a safetensors file";
    case CLI_FILE_TEXT: return "text";
    case CLI_FILE_UNREADABLE: break;
  }
  return "unreadable";
}

int cli_load_model(const char *path, hm_graph **out) {
  cli_file_kind k = cli_file_kind_of(path);
  hm_status st;
  switch (k) {
    case CLI_FILE_GRAPH: st = hm_load_graph_file(path, out); break;
    case CLI_FILE_TEXT:
    case CLI_FILE_UNREADABLE: st = hm_graph_load_dsl(path, out); break; /* says why it cannot be read */
    default:
      fprintf(stderr, "harmonics: %s is %s, not a model: give a .hmx model or a .hgr graph\n", path,
              cli_file_kind_name(k));
      return CLI_FAILED;
  }
  /* The library's message already names the file. */
  return st == HM_OK ? CLI_OK : cli_fail(NULL);
}

int cli_load_weights(const char *path, hm_weights **out) {
  cli_file_kind k = cli_file_kind_of(path);
  hm_status st = HM_OK;
  switch (k) {
    case CLI_FILE_SAFETENSORS: st = hm_weights_load_safetensors(path, out); break;
    case CLI_FILE_WEIGHTS: st = hm_load_weights_file(path, out); break;
    case CLI_FILE_CHECKPOINT: {
      hm_cycle_state *s = NULL;
      st = hm_cycle_state_load(path, &s);
      if (st == HM_OK) st = hm_weights_clone(hm_cycle_state_weights(s), out);
      hm_cycle_state_free(s);
      break;
    }
    case CLI_FILE_UNREADABLE: st = hm_weights_load_safetensors(path, out); break; /* says why */
    default:
      fprintf(stderr,
              "harmonics: %s is %s, not weights: give a .safetensors, .hnwt or .hck file (harmonics convert "
              "converts)\n",
              path, cli_file_kind_name(k));
      return CLI_FAILED;
  }
  return st == HM_OK ? CLI_OK : cli_fail(NULL);
}
