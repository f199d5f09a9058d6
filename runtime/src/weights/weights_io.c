/*
 * .hnwt: named weights in the binary envelope (container.h). Payload,
 * version 1:
 *   u32 count
 *   per tensor: str name (1-1024 bytes), u32 dtype (hm_abi_dtype), u32 rank
 *   (0-4), u64 dims[rank], u64 nbytes (= product(dims) * element size), data
 * The same encoding holds the weights and optimizer state of checkpoints.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/container.h"
#include "base/fileio.h"
#include "harmonics/serialization.h"
#include "weights/weights.h"

static const char WEIGHTS_MAGIC[8] = {'H', 'M', 'W', 'E', 'I', 'G', 'H', 'T'};
#define MAX_WEIGHTS_FILE ((size_t)16 << 30)
#define MAX_TENSORS (1u << 20)

void hm__weights_encode(const hm_weights *w, hm_bytes *b) {
  size_t n = hm_weights_count(w);
  hm__bytes_u32(b, (uint32_t)n);
  for (size_t i = 0; i < n; i++) {
    hm_tensor t;
    if (hm_weights_at(w, i, &t) != HM_OK) break;
    hm__bytes_str(b, t.name);
    hm__bytes_u32(b, t.dtype);
    hm__bytes_u32(b, t.rank);
    for (uint32_t d = 0; d < t.rank; d++) hm__bytes_u64(b, t.shape[d]);
    hm__bytes_u64(b, t.bytes);
    hm__bytes_raw(b, t.data, t.bytes);
  }
}

hm_status hm__weights_decode_part(hm_reader *r, hm_weights **out) {
  hm_weights *w = NULL;
  HM_RETURN_IF_ERROR(hm_weights_create(&w));
  /* A record is at least name length + 1 byte + dtype + rank + nbytes. */
  size_t n = hm__read_count(r, 21, MAX_TENSORS, "tensor count");
  for (size_t i = 0; i < n && r->status == HM_OK; i++) {
    char *name = hm__read_str(r, 1024, "tensor name");
    uint32_t dtype = hm__read_u32(r, "dtype"), rank = hm__read_u32(r, "rank");
    uint64_t dims[HM_TENSOR_MAX_RANK] = {0};
    if (r->status == HM_OK && (!name || !*name)) hm__reader_fail(r, "tensor %zu has an empty name", i);
    if (r->status == HM_OK && rank > HM_TENSOR_MAX_RANK)
      hm__reader_fail(r, "tensor '%s' has rank %u (at most %d)", name, rank, HM_TENSOR_MAX_RANK);
    for (uint32_t d = 0; d < rank && r->status == HM_OK; d++) dims[d] = hm__read_u64(r, "dimension");
    uint64_t nbytes = hm__read_u64(r, "byte count");
    size_t expect = 0;
    if (r->status == HM_OK && !hm__dtype_size(dtype)) hm__reader_fail(r, "tensor '%s' has unknown dtype %u", name, dtype);
    if (r->status == HM_OK && (hm__tensor_bytes(dtype, rank, dims, &expect) != HM_OK || expect != nbytes))
      hm__reader_fail(r, "tensor '%s': %llu data bytes do not match its shape and dtype (%zu expected)", name,
                      (unsigned long long)nbytes, expect);
    const unsigned char *data = r->status == HM_OK ? hm__read_raw(r, (size_t)nbytes, "tensor data") : NULL;
    if (r->status == HM_OK) {
      /* Allocation is bounded by the bytes just checked to exist. */
      size_t before = hm_weights_count(w);
      hm_status set = hm_weights_set(w, name, dtype, rank, dims, data);
      if (set != HM_OK) hm__reader_fail_from(r, set, "tensor '%s': %s", name, hm_last_error());
      else if (hm_weights_count(w) == before) hm__reader_fail(r, "tensor '%s' appears twice", name);
    }
    hm__free(name);
  }
  if (r->status != HM_OK) {
    hm_weights_free(w);
    return r->status;
  }
  *out = w;
  return HM_OK;
}

hm_status hm__weights_decode(hm_reader *r, hm_weights **out) {
  HM_RETURN_IF_ERROR(hm__weights_decode_part(r, out));
  if (hm__reader_finish(r) != HM_OK) {
    hm_weights_free(*out);
    *out = NULL;
    return r->status;
  }
  return HM_OK;
}

hm_status hm_save_weights(const hm_weights *w, FILE *f) {
  if (!w || !f) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_save_weights: NULL argument");
  hm_bytes b = {0};
  hm__weights_encode(w, &b);
  hm_status st = hm__container_write(f, WEIGHTS_MAGIC, HM_WEIGHTS_FORMAT_VERSION, &b, "weights stream");
  hm__bytes_free(&b);
  return st;
}

static hm_status load_weights(FILE *f, const char *what, hm_weights **out) {
  unsigned char *buf = NULL;
  hm_reader r;
  HM_RETURN_IF_ERROR(hm__container_read(f, WEIGHTS_MAGIC, HM_WEIGHTS_FORMAT_VERSION, MAX_WEIGHTS_FILE, what, &buf, &r, NULL));
  hm_status st = hm__weights_decode(&r, out);
  hm__free(buf);
  return st;
}

hm_status hm_load_weights(FILE *f, hm_weights **out) {
  if (!f || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_load_weights: NULL argument");
  return load_weights(f, "weights stream", out);
}

typedef struct weights_save {
  const hm_weights *w;
  const char *path;
} weights_save;

static hm_status write_weights(FILE *f, void *arg) {
  weights_save *s = arg;
  hm_bytes b = {0};
  hm__weights_encode(s->w, &b);
  hm_status st = hm__container_write(f, WEIGHTS_MAGIC, HM_WEIGHTS_FORMAT_VERSION, &b, s->path);
  hm__bytes_free(&b);
  return st;
}

hm_status hm_save_weights_file(const hm_weights *w, const char *path) {
  if (!w || !path) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_save_weights_file: NULL argument");
  weights_save s = {w, path};
  return hm__atomic_write(path, write_weights, &s);
}

hm_status hm_load_weights_file(const char *path, hm_weights **out) {
  if (!path || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_load_weights_file: NULL argument");
  FILE *f = fopen(path, "rb");
  if (!f)
    return hm__fail(errno == ENOENT ? HM_STATUS_NOT_FOUND : HM_STATUS_IO_ERROR, "cannot open %s: %s", path, strerror(errno));
  hm_status st = load_weights(f, path, out);
  fclose(f);
  return st;
}
