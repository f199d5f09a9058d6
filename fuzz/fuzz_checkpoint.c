/* .hck checkpoints, as given and with repaired checksums. */
#include "fuzz_util.h"
#include "harmonics/harmonics.h"

static void one(const uint8_t *data, size_t size) {
  FILE *f = fuzz_stream(data, size);
  if (!f) return;
  hm_cycle_state *s = NULL;
  if (hm_cycle_state_read(f, &s) == HM_OK) {
    hm_fit_options o;
    hm_policy p;
    hm_status st = hm_cycle_state_fit_options(s, &o, &p);
    (void)st;
    hm_cycle_state_free(s);
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
