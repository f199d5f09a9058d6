/* The .hmx parser, width resolution and a declared partition on arbitrary text. */
#include "harmonics/harmonics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hm_graph *g = NULL;
  if (hm_graph_parse((const char *)data, size, "fuzz.hmx", &g) == HM_OK) {
    if (hm_graph_resolve(g) == HM_OK) {
      hm_status st = hm_graph_init_weights(g, 1);
      (void)st;
      hm_partition *p = NULL;
      if (hm_graph_partition_count(g) && hm_graph_partition_by_layer(g, NULL, 0, &p) == HM_OK) hm_partition_free(p);
    }
    hm_graph_free(g);
  }
  return 0;
}
