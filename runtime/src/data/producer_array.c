/* In-memory producers: over copies of caller arrays, and the base of the IDX and
 * CSV producers. */
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "weights/weights.h"
/* ===== In-memory producer (also the base of IDX and CSV) ===== */

typedef struct mem_producer {
  hm_producer_info info;
  unsigned char *values;
  size_t pos;
} mem_producer;

static hm_status mem_info(void *self, hm_producer_info *out) {
  *out = ((mem_producer *)self)->info;
  return HM_OK;
}

static hm_status mem_next(void *self, size_t max_rows, void *out, size_t *rows) {
  mem_producer *m = self;
  size_t n = m->info.count - m->pos;
  if (n > max_rows) n = max_rows;
  size_t row_bytes = m->info.width * hm__dtype_size(m->info.dtype);
  memcpy(out, m->values + m->pos * row_bytes, n * row_bytes);
  m->pos += n;
  *rows = n;
  return HM_OK;
}

static hm_status mem_reset(void *self) {
  ((mem_producer *)self)->pos = 0;
  return HM_OK;
}

static void mem_destroy(void *self) {
  mem_producer *m = self;
  if (!m) return;
  hm__free(m->values);
  hm__free(m);
}

static const hm_producer_vtable mem_vtable = {sizeof(hm_producer_vtable), mem_info, mem_next, mem_reset, mem_destroy};

/* Takes ownership of |values| (freed on failure too). */
hm_status hm__producer_from_memory(hm_producer_info info, void *values, hm_producer **out) {
  mem_producer *m = hm__calloc(1, sizeof *m);
  if (!m) {
    hm__free(values);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  m->info = info;
  m->values = values;
  hm_status st = hm_producer_create(&mem_vtable, m, out);
  if (st != HM_OK) mem_destroy(m);
  return st;
}

hm_status hm_producer_from_floats(const float *data, size_t rows, size_t width, hm_producer **out) {
  if (!data || !out || rows == 0 || width == 0 || width > HM_MAX_WIDTH)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_producer_from_floats: need data, rows > 0 and 0 < width <= %zu",
                    HM_MAX_WIDTH);
  size_t n;
  if (hm__mul_size(rows, width, &n) || hm__mul_size(n, 4, &n) || n > HM_MAX_DATASET_BYTES)
    return hm__fail(HM_STATUS_OUT_OF_RANGE, "hm_producer_from_floats: too large");
  void *copy = hm__malloc(n);
  if (!copy) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  memcpy(copy, data, n);
  hm_producer_info info = {width, rows, HM_ABI_DTYPE_F32, 1.0f, 0, {0, 0, 0}};
  return hm__producer_from_memory(info, copy, out);
}

hm_status hm_producer_from_labels(const int32_t *labels, size_t count, size_t num_classes, hm_producer **out) {
  if (!labels || !out || count == 0 || num_classes == 0 || num_classes > HM_MAX_WIDTH)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_producer_from_labels: need labels, count > 0 and num_classes > 0");
  for (size_t i = 0; i < count; i++)
    if (labels[i] < 0 || (size_t)labels[i] >= num_classes)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "label %zu is %d, outside [0, %zu)", i, labels[i], num_classes);
  if (count > HM_MAX_DATASET_BYTES / 4) return hm__fail(HM_STATUS_OUT_OF_RANGE, "too many labels");
  void *copy = hm__malloc(count * 4);
  if (!copy) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  memcpy(copy, labels, count * 4);
  hm_producer_info info = {1, count, HM_ABI_DTYPE_I32, 1.0f, num_classes, {0, 0, 0}};
  return hm__producer_from_memory(info, copy, out);
}
