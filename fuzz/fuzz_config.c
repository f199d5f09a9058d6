/* harmonics.conf configuration files (an internal loader). */
#include <string.h>

#include "fuzz_util.h"
#include "backend/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_file(data, size, ".conf");
  if (!path) return 0;
  hm_config cfg;
  memset(&cfg, 0, sizeof cfg);
  (void)hm__config_load(path, &cfg);
  hm__config_free(&cfg);
  unlink(path);
  return 0;
}
