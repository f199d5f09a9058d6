/*
 * Safetensors import and export (docs/formats.md §safetensors).
 *
 * Layout: u64 little-endian header length N; N bytes of UTF-8 JSON
 * {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [..],
 * "data_offsets": [begin, end]}, ...}; then the data area. Offsets are
 * relative to the data area, which the tensors cover without holes or
 * overlaps. We write the header padded with spaces to a multiple of 8.
 *
 * Reading checks, before allocating anything the file cannot back: N within
 * the file and at most 100 MB; every dtype known; every shape's byte size
 * equal to its offsets' span; every span inside the data area; spans
 * contiguous and non-overlapping.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "harmonics/weights.h"
#include "base/base.h"
#include "base/json.h"
#include "weights/weights.h"

#define MAX_HEADER (100u * 1024u * 1024u)
#define MAX_TENSORS 65536u

static const struct {
  const char *name;
  uint32_t dtype;
} dtype_names[] = {
    {"F32", HM_ABI_DTYPE_F32}, {"F16", HM_ABI_DTYPE_F16}, {"BF16", HM_ABI_DTYPE_BF16}, {"F64", HM_ABI_DTYPE_F64},
    {"I32", HM_ABI_DTYPE_I32}, {"I64", HM_ABI_DTYPE_I64}, {"I8", HM_ABI_DTYPE_I8},     {"U8", HM_ABI_DTYPE_U8},
};

static const char *dtype_to_name(uint32_t d) {
  for (size_t i = 0; i < sizeof dtype_names / sizeof dtype_names[0]; i++)
    if (dtype_names[i].dtype == d) return dtype_names[i].name;
  return NULL;
}

static int name_to_dtype(const char *s, uint32_t *out) {
  for (size_t i = 0; i < sizeof dtype_names / sizeof dtype_names[0]; i++)
    if (strcmp(dtype_names[i].name, s) == 0) {
      *out = dtype_names[i].dtype;
      return 1;
    }
  return 0;
}

/* ===== Writing ===== */

typedef struct save_ctx {
  const hm_weights *w;
  const char *path;
} save_ctx;

static hm_status write_safetensors(FILE *f, void *arg) {
  save_ctx *c = arg;
  size_t n = hm_weights_count(c->w);
  hm_strbuf h;
  hm__sb_init(&h);
  hm__sb_append(&h, "{\"__metadata__\":{\"format\":\"pt\",\"producer\":\"harmonics\"}");
  size_t offset = 0;
  for (size_t i = 0; i < n; i++) {
    hm_tensor t;
    if (hm_weights_at(c->w, i, &t) != HM_OK) break;
    const char *dn = dtype_to_name(t.dtype);
    if (!dn) {
      hm__sb_free(&h);
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: tensor '%s' has a dtype safetensors cannot hold", c->path,
                      t.name);
    }
    hm__sb_append(&h, ",");
    hm__sb_json_string(&h, t.name);
    hm__sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dn);
    for (uint32_t d = 0; d < t.rank; d++) hm__sb_printf(&h, "%s%llu", d ? "," : "", (unsigned long long)t.shape[d]);
    hm__sb_printf(&h, "],\"data_offsets\":[%zu,%zu]}", offset, offset + t.bytes);
    offset += t.bytes;
  }
  hm__sb_append(&h, "}");
  while (!h.failed && h.len % 8) hm__sb_append(&h, " ");
  if (h.failed) {
    hm__sb_free(&h);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory writing %s", c->path);
  }
  unsigned char len8[8];
  uint64_t hl = h.len;
  for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hl >> (8 * i));
  hm_status st = hm__fwrite_all(f, len8, 8, c->path);
  if (st == HM_OK) st = hm__fwrite_all(f, h.data, h.len, c->path);
  hm__sb_free(&h);
  for (size_t i = 0; i < n && st == HM_OK; i++) {
    hm_tensor t;
    if (hm_weights_at(c->w, i, &t) != HM_OK) break;
    /* Data is little-endian on every platform we build for. */
    st = hm__fwrite_all(f, t.data, t.bytes, c->path);
  }
  return st;
}

hm_status hm_weights_save_safetensors(const hm_weights *w, const char *path) {
  if (!w || !path) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_weights_save_safetensors: NULL argument");
  save_ctx c = {w, path};
  return hm__atomic_write(path, write_safetensors, &c);
}

/* ===== Reading ===== */

typedef struct span {
  uint64_t begin, end;
  size_t index; /* position in the header */
  uint32_t dtype, rank;
  uint64_t dims[HM_TENSOR_MAX_RANK];
} span;

static int cmp_span(const void *a, const void *b) {
  const span *x = a, *y = b;
  return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static int cmp_index(const void *a, const void *b) {
  const span *x = a, *y = b;
  return x->index < y->index ? -1 : x->index > y->index;
}

static hm_status corrupt(const char *path, const char *fmt, const char *detail) {
  char msg[512];
  snprintf(msg, sizeof msg, fmt, detail);
  return hm__fail(HM_STATUS_DATA_LOSS, "%s: %s", path, msg);
}

/* Reads from a seekable stream; |path| names it in messages. */
static hm_status load_stream(FILE *f, const char *path, hm_weights **out) {
  if (fseek(f, 0, SEEK_END) != 0) return hm__fail(HM_STATUS_IO_ERROR, "%s: the stream is not seekable", path);
  long end = ftell(f);
  if (end < 0 || fseek(f, 0, SEEK_SET) != 0) return hm__fail(HM_STATUS_IO_ERROR, "%s: the stream is not seekable", path);
  uint64_t file_size = (uint64_t)end;
  unsigned char len8[8];
  if (file_size < 8 || fread(len8, 1, 8, f) != 8) {
    return hm__fail(HM_STATUS_DATA_LOSS, "%s: truncated: %llu bytes, a safetensors file starts with an 8-byte header length",
                    path, (unsigned long long)file_size);
  }
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = (hl << 8) | len8[i];
  if (hl > file_size - 8 || hl > MAX_HEADER || hl < 2) {
    return hm__fail(HM_STATUS_DATA_LOSS,
                    "%s: header length %llu at offset 0 is impossible for a file of %llu bytes (limit %u)", path,
                    (unsigned long long)hl, (unsigned long long)file_size, MAX_HEADER);
  }
  char *header = hm__malloc((size_t)hl);
  if (!header)
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory for the %llu-byte header", path,
                    (unsigned long long)hl);
  if (fread(header, 1, (size_t)hl, f) != hl) {
    hm__free(header);
    return hm__fail(HM_STATUS_DATA_LOSS, "%s: cannot read the %llu-byte header", path, (unsigned long long)hl);
  }
  uint64_t data_size = file_size - 8 - hl;
  hm_json *root = NULL;
  char err[160];
  hm_status st = hm__json_parse(header, (size_t)hl, &root, err, sizeof err);
  hm__free(header);
  if (st == HM_STATUS_RESOURCE_EXHAUSTED) return hm__fail(st, "%s: out of memory reading the header", path);
  if (st != HM_OK) {
    return hm__fail(HM_STATUS_DATA_LOSS, "%s: header is not valid JSON (%s, counted from byte 8)", path, err);
  }
  span *spans = NULL;
  hm_weights *w = NULL;
  if (root->type != HM_JSON_OBJECT) {
    st = corrupt(path, "header is not a JSON object%s", "");
    goto done;
  }
  if (root->count > MAX_TENSORS + 1) {
    st = hm__fail(HM_STATUS_DATA_LOSS, "%s: the header lists %zu entries (limit %u tensors)", path, root->count,
                  MAX_TENSORS);
    goto done;
  }
  spans = hm__calloc(root->count ? root->count : 1, sizeof *spans);
  st = spans ? hm_weights_create(&w) : hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  size_t n_spans = 0;
  for (size_t i = 0; i < root->count && st == HM_OK; i++) {
    const char *name = root->keys[i];
    const hm_json *t = &root->items[i];
    if (strcmp(name, "__metadata__") == 0) {
      if (t->type != HM_JSON_OBJECT) st = corrupt(path, "__metadata__ is not an object%s", "");
      for (size_t k = 0; st == HM_OK && k < t->count; k++)
        if (t->items[k].type != HM_JSON_STRING) st = corrupt(path, "__metadata__ value '%s' is not a string", t->keys[k]);
      continue;
    }
    const hm_json *dt = hm__json_get(t, "dtype"), *shape = hm__json_get(t, "shape"),
                  *offs = hm__json_get(t, "data_offsets");
    uint32_t dtype;
    if (t->type != HM_JSON_OBJECT || !dt || dt->type != HM_JSON_STRING || !shape || shape->type != HM_JSON_ARRAY ||
        !offs || offs->type != HM_JSON_ARRAY || offs->count != 2) {
      st = corrupt(path, "tensor '%s' needs dtype, shape and data_offsets [begin, end]", name);
      break;
    }
    if (!name_to_dtype(dt->string, &dtype)) {
      char detail[160];
      snprintf(detail, sizeof detail, "%.60s' has dtype '%.40s", name, dt->string);
      st = corrupt(path, "tensor '%s' (supported: F32 F16 BF16 F64 I32 I64 I8 U8)", detail);
      break;
    }
    if (shape->count > HM_TENSOR_MAX_RANK) {
      st = corrupt(path, "tensor '%s' has more than 4 dimensions", name);
      break;
    }
    uint64_t dims[HM_TENSOR_MAX_RANK] = {0};
    for (size_t d = 0; d < shape->count && st == HM_OK; d++) {
      if (!shape->items[d].is_uint || shape->items[d].uint > ((uint64_t)1 << 40))
        st = corrupt(path, "tensor '%s' has an invalid dimension", name);
      dims[d] = shape->items[d].uint;
    }
    if (st != HM_OK) break;
    if (!offs->items[0].is_uint || !offs->items[1].is_uint || offs->items[0].uint > offs->items[1].uint ||
        offs->items[1].uint > data_size) {
      char detail[200];
      snprintf(detail, sizeof detail, "%.80s' data_offsets lie outside the %llu-byte data area",
               name, (unsigned long long)data_size);
      st = corrupt(path, "tensor '%s (file truncated or corrupt)", detail);
      break;
    }
    size_t bytes;
    if (hm__tensor_bytes(dtype, (uint32_t)shape->count, dims, &bytes) != HM_OK ||
        bytes != offs->items[1].uint - offs->items[0].uint) {
      st = corrupt(path, "tensor '%s': shape and dtype do not match the size of its data_offsets", name);
      break;
    }
    span *sp = &spans[n_spans++];
    sp->begin = offs->items[0].uint;
    sp->end = offs->items[1].uint;
    sp->index = i;
    sp->dtype = dtype;
    sp->rank = (uint32_t)shape->count;
    memcpy(sp->dims, dims, sizeof dims);
  }
  if (st == HM_OK && n_spans) {
    qsort(spans, n_spans, sizeof *spans, cmp_span);
    uint64_t expect = 0;
    for (size_t k = 0; k < n_spans && st == HM_OK; k++) {
      if (spans[k].begin != expect) st = corrupt(path, "tensor '%s' overlaps another or leaves a hole in the data area",
                                                 root->keys[spans[k].index]);
      expect = spans[k].end;
    }
    if (st == HM_OK && expect != data_size)
      st = hm__fail(HM_STATUS_DATA_LOSS, "%s: %llu bytes after the last tensor are not described by the header", path,
                    (unsigned long long)(data_size - expect));
  }
  /* The layout is sound: allocation is now bounded by the file's size. Keep
   * the header's order. */
  if (st == HM_OK) qsort(spans, n_spans, sizeof *spans, cmp_index);
  for (size_t k = 0; k < n_spans && st == HM_OK; k++)
    st = hm_weights_set(w, root->keys[spans[k].index], spans[k].dtype, spans[k].rank, spans[k].dims, NULL);
  if (st == HM_OK && hm_weights_count(w) != n_spans)
    st = hm__fail(HM_STATUS_DATA_LOSS, "%s: the header names a tensor twice", path);
  for (size_t k = 0; k < n_spans && st == HM_OK; k++) {
    hm_tensor t;
    const char *name = root->keys[spans[k].index];
    if (hm_weights_find(w, name, &t) != HM_OK) continue;
    if (fseek(f, (long)(8 + hl + spans[k].begin), SEEK_SET) != 0 || (t.bytes && fread(t.data, 1, t.bytes, f) != t.bytes))
      st = corrupt(path, "cannot read the data of tensor '%s'", name);
  }
done:
  hm__free(spans);
  hm__json_free(root);
  if (st != HM_OK) {
    hm_weights_free(w);
    return st;
  }
  *out = w;
  return HM_OK;
}

hm_status hm_weights_load_safetensors(const char *path, hm_weights **out) {
  if (!path || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_weights_load_safetensors: NULL argument");
  FILE *f = fopen(path, "rb");
  if (!f)
    return hm__fail(errno == ENOENT ? HM_STATUS_NOT_FOUND : HM_STATUS_IO_ERROR, "cannot open %s: %s", path,
                    strerror(errno));
  hm_status st = load_stream(f, path, out);
  fclose(f);
  return st;
}

hm_status hm_weights_read_safetensors(FILE *f, hm_weights **out) {
  if (!f || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_weights_read_safetensors: NULL argument");
  return load_stream(f, "safetensors stream", out);
}
