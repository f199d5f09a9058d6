/* IDX dataset files, raw or gzip'ed (the loader takes a path). */
#include "fuzz_util.h"
#include "harmonics/harmonics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_file(data, size, ".idx");
  if (!path) return 0;
  hm_producer *p = NULL;
  if (hm_producer_open_idx(path, &p) == HM_OK) hm_producer_free(p);
  unlink(path);
  return 0;
}
