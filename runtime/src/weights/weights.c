/*
 * Named tensor sets: insertion-ordered, names unique, data owned.
 */
#include <stdlib.h>
#include <string.h>

#include "harmonics/weights.h"
#include "base/base.h"
#include "base/hash_index.h"
#include "weights/weights.h"

struct hm_weights {
  hm_tensor *items;
  size_t len, cap;
  size_t refs;        /* owners beyond the first (hm__weights_share) */
  hm_hash_index by_name; /* O(1) lookups: a file of n tensors loads in O(n) */
};

size_t hm__dtype_size(uint32_t dtype) {
  switch (dtype) {
    case HM_ABI_DTYPE_F32:
    case HM_ABI_DTYPE_I32: return 4;
    case HM_ABI_DTYPE_F16:
    case HM_ABI_DTYPE_BF16: return 2;
    case HM_ABI_DTYPE_F64:
    case HM_ABI_DTYPE_I64: return 8;
    case HM_ABI_DTYPE_I8:
    case HM_ABI_DTYPE_U8: return 1;
    default: return 0;
  }
}

hm_status hm__tensor_bytes(uint32_t dtype, uint32_t rank, const uint64_t *shape, size_t *out) {
  size_t es = hm__dtype_size(dtype);
  if (!es) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "unsupported tensor dtype %u", dtype);
  if (rank > HM_TENSOR_MAX_RANK)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "tensor rank %u exceeds %d", rank, HM_TENSOR_MAX_RANK);
  size_t n = es;
  for (uint32_t i = 0; i < rank; i++) {
    if (shape[i] > ((uint64_t)1 << 40) || hm__mul_size(n, (size_t)shape[i], &n))
      return hm__fail(HM_STATUS_OUT_OF_RANGE, "tensor shape too large");
  }
  if (n > ((size_t)1 << 40)) return hm__fail(HM_STATUS_OUT_OF_RANGE, "tensor of %zu bytes is too large", n);
  *out = n;
  return HM_OK;
}

hm_status hm_weights_create(hm_weights **out) {
  if (!out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_weights_create: NULL output");
  hm_weights *w = hm__calloc(1, sizeof *w);
  if (!w) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  *out = w;
  return HM_OK;
}

hm_weights *hm__weights_share(hm_weights *w) {
  if (w) __atomic_add_fetch(&w->refs, 1, __ATOMIC_RELAXED);
  return w;
}

void hm_weights_free(hm_weights *w) {
  if (!w) return;
  if (__atomic_fetch_sub(&w->refs, 1, __ATOMIC_ACQ_REL) > 0) return; /* other owners remain */
  for (size_t i = 0; i < w->len; i++) {
    hm__free((char *)w->items[i].name);
    hm__free(w->items[i].data);
  }
  hm__free(w->items);
  hm__hash_free(&w->by_name);
  hm__free(w);
}

typedef struct name_key {
  const hm_weights *w;
  const char *name;
} name_key;

static int same_name(const void *ctx, size_t i) {
  const name_key *k = ctx;
  return strcmp(k->w->items[i].name, k->name) == 0;
}

static long find_index(const hm_weights *w, const char *name) {
  name_key k = {w, name};
  size_t i = hm__hash_find(&w->by_name, hm__hash_str(name), same_name, &k);
  return i == HM_HASH_NONE ? -1 : (long)i;
}

hm_status hm_weights_set(hm_weights *w, const char *name, uint32_t dtype, uint32_t rank, const uint64_t *shape,
                         const void *data) {
  if (!w || !name || (rank && !shape)) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_weights_set: NULL argument");
  size_t nlen = strlen(name);
  if (nlen == 0 || nlen > 1024) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "tensor name must have 1-1024 characters");
  size_t bytes;
  HM_RETURN_IF_ERROR(hm__tensor_bytes(dtype, rank, shape, &bytes));
  void *copy = hm__malloc(bytes ? bytes : 1);
  char *ncopy = hm__strdup(name);
  if (!copy || !ncopy) {
    hm__free(copy);
    hm__free(ncopy);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory for tensor '%s' (%zu bytes)", name, bytes);
  }
  if (data) memcpy(copy, data, bytes);
  else memset(copy, 0, bytes);
  long at = find_index(w, name);
  if (at < 0) {
    if (w->len == w->cap) {
      size_t cap = w->cap ? w->cap * 2 : 16;
      hm_tensor *items = hm__realloc(w->items, cap * sizeof *items);
      if (!items) {
        hm__free(copy);
        hm__free(ncopy);
        return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      }
      w->items = items;
      w->cap = cap;
    }
    if (hm__hash_add(&w->by_name, hm__hash_str(name), w->len) != HM_OK) {
      hm__free(copy);
      hm__free(ncopy);
      return HM_STATUS_RESOURCE_EXHAUSTED;
    }
    at = (long)w->len++;
  } else {
    hm__free((char *)w->items[at].name);
    hm__free(w->items[at].data);
  }
  hm_tensor *t = &w->items[at];
  memset(t, 0, sizeof *t);
  t->name = ncopy;
  t->dtype = dtype;
  t->rank = rank;
  for (uint32_t i = 0; i < rank; i++) t->shape[i] = shape[i];
  t->data = copy;
  t->bytes = bytes;
  return HM_OK;
}

size_t hm_weights_count(const hm_weights *w) { return w ? w->len : 0; }

hm_status hm_weights_at(const hm_weights *w, size_t index, hm_tensor *out) {
  if (!w || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_weights_at: NULL argument");
  if (index >= w->len) return hm__fail(HM_STATUS_OUT_OF_RANGE, "tensor index %zu of %zu", index, w->len);
  *out = w->items[index];
  return HM_OK;
}

hm_status hm_weights_find(const hm_weights *w, const char *name, hm_tensor *out) {
  if (!w || !name || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_weights_find: NULL argument");
  long i = find_index(w, name);
  if (i < 0) return hm__fail(HM_STATUS_NOT_FOUND, "no tensor named '%s'", name);
  *out = w->items[i];
  return HM_OK;
}

hm_status hm_weights_clone(const hm_weights *w, hm_weights **out) {
  if (!w || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_weights_clone: NULL argument");
  hm_weights *c = NULL;
  HM_RETURN_IF_ERROR(hm_weights_create(&c));
  for (size_t i = 0; i < w->len; i++) {
    const hm_tensor *t = &w->items[i];
    hm_status st = hm_weights_set(c, t->name, t->dtype, t->rank, t->shape, t->data);
    if (st != HM_OK) {
      hm_weights_free(c);
      return st;
    }
  }
  *out = c;
  return HM_OK;
}

float *hm__weights_f32(const hm_weights *w, const char *name) {
  long i = w ? find_index(w, name) : -1;
  if (i < 0 || w->items[i].dtype != HM_ABI_DTYPE_F32) return NULL;
  return w->items[i].data;
}
