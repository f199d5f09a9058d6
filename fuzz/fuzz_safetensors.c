/* Safetensors files (and through them the JSON parser). */
#include "fuzz_util.h"
#include "harmonics/harmonics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FILE *f = fuzz_stream(data, size);
  if (!f) return 0;
  hm_weights *w = NULL;
  if (hm_weights_read_safetensors(f, &w) == HM_OK) hm_weights_free(w);
  fclose(f);
  return 0;
}
