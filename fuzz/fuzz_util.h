/* Helpers shared by the fuzz harnesses. */
#ifndef HM_FUZZ_UTIL_H_
#define HM_FUZZ_UTIL_H_

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/container.h" /* hm__crc32c */

/* A read-only stream over the input (an empty input reads as /dev/null). */
static inline FILE *fuzz_stream(const uint8_t *data, size_t size) {
  if (size == 0) return fopen("/dev/null", "rb");
  return fmemopen((void *)data, size, "rb");
}

/* Writes the input to a per-process temporary file for path-based loaders. */
static inline const char *fuzz_file(const uint8_t *data, size_t size, const char *suffix) {
  static char path[128];
  snprintf(path, sizeof path, "/tmp/hm_fuzz_%d%s", (int)getpid(), suffix);
  FILE *f = fopen(path, "wb");
  if (!f) return NULL;
  if (size) fwrite(data, 1, size, f);
  fclose(f);
  return path;
}

/* A copy of a container file (container.h) with its length and both
 * checksums made consistent, so mutations reach the payload decoders instead
 * of stopping at the checksum. Caller frees; NULL when too short. */
static inline uint8_t *fuzz_resealed(const uint8_t *data, size_t size) {
  if (size < 32) return NULL;
  uint8_t *d = malloc(size);
  if (!d) return NULL;
  memcpy(d, data, size);
  uint64_t plen = size - 32;
  for (int i = 0; i < 8; i++) d[16 + i] = (uint8_t)(plen >> (8 * i));
  uint32_t pc = hm__crc32c(0, d + 32, size - 32);
  for (int i = 0; i < 4; i++) d[28 + i] = (uint8_t)(pc >> (8 * i));
  uint32_t hc = hm__crc32c(0, d, 24);
  for (int i = 0; i < 4; i++) d[24 + i] = (uint8_t)(hc >> (8 * i));
  return d;
}

#endif /* HM_FUZZ_UTIL_H_ */
