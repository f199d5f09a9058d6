/* .hgr graph files (and the partition they declare), as given and with repaired checksums. */
#include "fuzz_util.h"
#include "harmonics/harmonics.h"

static void one(const uint8_t *data, size_t size) {
  FILE *f = fuzz_stream(data, size);
  if (!f) return;
  hm_graph *g = NULL;
  if (hm_load_graph(f, &g) == HM_OK) {
    hm_partition *p = NULL;
    if (hm_graph_resolve(g) == HM_OK && hm_graph_partition_count(g) &&
        hm_graph_partition_by_layer(g, NULL, 0, &p) == HM_OK)
      hm_partition_free(p);
    hm_graph_free(g);
  }
  fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  one(data, size);
  /* Again with consistent checksums, to reach the payload decoder. */
  uint8_t *sealed = fuzz_resealed(data, size);
  if (sealed) {
    one(sealed, size);
    free(sealed);
  }
  return 0;
}
