/*
 * An open-addressing hash index from keys to item positions, for the lists
 * that loaders fill from files (graph nodes and connections, tensor names):
 * lookups stay O(1) however many items a hostile file declares, so every
 * loader is linear in its input. The index stores only (hash, position);
 * the caller's |same| callback compares the key with the item at a position.
 */
#ifndef HM_BASE_HASH_INDEX_H_
#define HM_BASE_HASH_INDEX_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics/status.h"

typedef struct hm_hash_index {
  uint64_t *hashes; /* 0 = empty slot (hashes are never 0) */
  size_t *positions;
  size_t cap, len;  /* cap is 0 or a power of two, len <= cap / 2 */
} hm_hash_index;

#define HM_HASH_NONE ((size_t)-1)

/* FNV-1a over |n| bytes (never 0). */
uint64_t hm__hash_bytes(const void *data, size_t n);
uint64_t hm__hash_str(const char *s);

/* The position of the item with |hash| for which same(ctx, position) is
 * nonzero, or HM_HASH_NONE. */
size_t hm__hash_find(const hm_hash_index *ix, uint64_t hash, int (*same)(const void *ctx, size_t position),
                     const void *ctx);
/* Records |position| under |hash| (the caller has checked it is new). */
hm_status hm__hash_add(hm_hash_index *ix, uint64_t hash, size_t position);
void hm__hash_free(hm_hash_index *ix);

#endif /* HM_BASE_HASH_INDEX_H_ */
