/* Open-addressing hash index with linear probing (hash_index.h). */
#include "base/hash_index.h"

#include <stdlib.h>
#include <string.h>

#include "base/base.h"

uint64_t hm__hash_bytes(const void *data, size_t n) {
  const unsigned char *p = data;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h ? h : 1;
}

uint64_t hm__hash_str(const char *s) { return hm__hash_bytes(s, strlen(s)); }

size_t hm__hash_find(const hm_hash_index *ix, uint64_t hash, int (*same)(const void *ctx, size_t position),
                     const void *ctx) {
  if (!ix->cap) return HM_HASH_NONE;
  for (size_t i = hash & (ix->cap - 1);; i = (i + 1) & (ix->cap - 1)) {
    if (!ix->hashes[i]) return HM_HASH_NONE;
    if (ix->hashes[i] == hash && same(ctx, ix->positions[i])) return ix->positions[i];
  }
}

static void put(uint64_t *hashes, size_t *positions, size_t cap, uint64_t hash, size_t position) {
  size_t i = hash & (cap - 1);
  while (hashes[i]) i = (i + 1) & (cap - 1);
  hashes[i] = hash;
  positions[i] = position;
}

hm_status hm__hash_add(hm_hash_index *ix, uint64_t hash, size_t position) {
  if ((ix->len + 1) * 2 > ix->cap) {
    size_t cap = ix->cap ? ix->cap * 2 : 64;
    uint64_t *hashes = hm__calloc(cap, sizeof *hashes);
    size_t *positions = hm__malloc(cap * sizeof *positions);
    if (!hashes || !positions) {
      hm__free(hashes);
      hm__free(positions);
      return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory for an index of %zu entries", ix->len + 1);
    }
    for (size_t i = 0; i < ix->cap; i++)
      if (ix->hashes[i]) put(hashes, positions, cap, ix->hashes[i], ix->positions[i]);
    hm__free(ix->hashes);
    hm__free(ix->positions);
    ix->hashes = hashes;
    ix->positions = positions;
    ix->cap = cap;
  }
  put(ix->hashes, ix->positions, ix->cap, hash, position);
  ix->len++;
  return HM_OK;
}

void hm__hash_free(hm_hash_index *ix) {
  hm__free(ix->hashes);
  hm__free(ix->positions);
  memset(ix, 0, sizeof *ix);
}
