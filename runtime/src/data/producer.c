/*
 * The producer interface (harmonics/data.h) and reading a producer whole
 * into memory for upload. Built-in producers read their whole file at open,
 * validating it, so a bad file fails early with its name and offset.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "weights/weights.h"

struct hm_producer {
  const hm_producer_vtable *vt;
  void *self;
};

hm_status hm_producer_create(const hm_producer_vtable *vt, void *self, hm_producer **out) {
  if (!vt || !out || vt->struct_size < sizeof *vt || !vt->info || !vt->next_batch || !vt->reset)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_producer_create: vtable needs struct_size, info, next_batch, reset");
  hm_producer *p = hm__calloc(1, sizeof *p);
  if (!p) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  p->vt = vt;
  p->self = self;
  *out = p;
  return HM_OK;
}

void hm_producer_free(hm_producer *p) {
  if (!p) return;
  if (p->vt->destroy) p->vt->destroy(p->self);
  hm__free(p);
}

hm_status hm_producer_info_get(hm_producer *p, hm_producer_info *out) {
  if (!p || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "NULL producer");
  hm_producer_info info;
  memset(&info, 0, sizeof info);
  info.scale = 1.0f;
  HM_RETURN_IF_ERROR(p->vt->info(p->self, &info));
  if (info.dtype != HM_ABI_DTYPE_F32 && info.dtype != HM_ABI_DTYPE_U8 && info.dtype != HM_ABI_DTYPE_I32)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "producer reports dtype %u (F32, U8 or I32 expected)", info.dtype);
  if (info.dtype == HM_ABI_DTYPE_I32 && (info.width != 1 || info.num_classes == 0))
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "a class-index producer needs width 1 and num_classes > 0");
  int shaped = info.shape[0] || info.shape[1] || info.shape[2];
  if (shaped && (!info.shape[0] || !info.shape[1] || !info.shape[2] || info.shape[0] > info.width ||
                 info.shape[1] > info.width || info.shape[2] > info.width ||
                 info.shape[0] * info.shape[1] * info.shape[2] != info.width))
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "producer reports the shape {%zux%zux%zu} for %zu values per sample",
                    info.shape[0], info.shape[1], info.shape[2], info.width);
  *out = info;
  return HM_OK;
}

hm_status hm_producer_next_batch(hm_producer *p, size_t max_rows, void *out, size_t *rows) {
  if (!p || !rows || (max_rows && !out)) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "NULL producer argument");
  return p->vt->next_batch(p->self, max_rows, out, rows);
}

hm_status hm_producer_reset(hm_producer *p) {
  if (!p) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "NULL producer");
  return p->vt->reset(p->self);
}

hm_status hm__producer_read_all(hm_producer *p, const char *node_name, hm_bound_data *data) {
  hm_producer_info info;
  HM_RETURN_IF_ERROR(hm_producer_info_get(p, &info));
  size_t es = hm__dtype_size(info.dtype), bytes;
  if (info.count == 0) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "producer '%s' has no samples", node_name);
  if (hm__mul_size(info.count, info.width, &bytes) || hm__mul_size(bytes, es, &bytes) || bytes > HM_MAX_DATASET_BYTES)
    return hm__fail(HM_STATUS_OUT_OF_RANGE, "producer '%s': %zu samples of width %zu exceed %zu bytes", node_name,
                    info.count, info.width, HM_MAX_DATASET_BYTES);
  unsigned char *values = hm__malloc(bytes);
  if (!values) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of '%s'", bytes, node_name);
  hm_status st = hm_producer_reset(p);
  size_t got = 0;
  while (st == HM_OK && got < info.count) {
    size_t rows = 0;
    st = hm_producer_next_batch(p, info.count - got, values + got * info.width * es, &rows);
    if (st == HM_OK && rows == 0) break;
    if (st == HM_OK && rows > info.count - got)
      st = hm__fail(HM_STATUS_INTERNAL, "producer '%s' returned more rows than asked", node_name);
    got += rows;
  }
  if (st == HM_OK && got != info.count)
    st = hm__fail(HM_STATUS_DATA_LOSS, "producer '%s' promised %zu samples but gave %zu", node_name, info.count, got);
  if (st == HM_OK && info.dtype == HM_ABI_DTYPE_I32) {
    const int32_t *l = (const int32_t *)values;
    for (size_t i = 0; i < info.count && st == HM_OK; i++)
      if (l[i] < 0 || (size_t)l[i] >= info.num_classes)
        st = hm__fail(HM_STATUS_INVALID_ARGUMENT, "producer '%s': sample %zu has class %d outside [0, %zu)", node_name,
                      i, l[i], info.num_classes);
  }
  if (st == HM_OK && info.dtype == HM_ABI_DTYPE_F32) {
    const float *f = (const float *)values;
    for (size_t i = 0; i < info.count * info.width && st == HM_OK; i++)
      if (!isfinite(f[i]))
        st = hm__fail(HM_STATUS_INVALID_ARGUMENT, "producer '%s': sample %zu holds a non-finite value", node_name,
                      i / info.width);
  }
  if (st != HM_OK) {
    hm__free(values);
    return st;
  }
  data->info = info;
  data->values = values;
  return HM_OK;
}

/* ===== Limit ===== */

typedef struct limit_producer {
  hm_producer *base;
  size_t limit, pos;
} limit_producer;

static hm_status limit_info(void *self, hm_producer_info *out) {
  limit_producer *l = self;
  HM_RETURN_IF_ERROR(hm_producer_info_get(l->base, out));
  if (out->count > l->limit) out->count = l->limit;
  return HM_OK;
}

static hm_status limit_next(void *self, size_t max_rows, void *out, size_t *rows) {
  limit_producer *l = self;
  size_t left = l->limit - l->pos;
  if (max_rows > left) max_rows = left;
  *rows = 0;
  if (max_rows == 0) return HM_OK;
  HM_RETURN_IF_ERROR(hm_producer_next_batch(l->base, max_rows, out, rows));
  l->pos += *rows;
  return HM_OK;
}

static hm_status limit_reset(void *self) {
  limit_producer *l = self;
  l->pos = 0;
  return hm_producer_reset(l->base);
}

static const hm_producer_vtable limit_vtable = {sizeof(hm_producer_vtable), limit_info, limit_next, limit_reset, hm__free};

hm_status hm_producer_limit(hm_producer *base, size_t limit, hm_producer **out) {
  if (!base || !out || limit == 0) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_producer_limit: need a base and limit > 0");
  limit_producer *l = hm__calloc(1, sizeof *l);
  if (!l) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  l->base = base;
  l->limit = limit;
  hm_status st = hm_producer_create(&limit_vtable, l, out);
  if (st != HM_OK) hm__free(l);
  return st;
}
