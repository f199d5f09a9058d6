/* The consumer interface and the array consumer. */
#include <stdlib.h>
#include <string.h>

#include "data/data.h"

struct hm_consumer {
  const hm_consumer_vtable *vt;
  void *self;
};
/* ===== Consumers ===== */

hm_status hm_consumer_create(const hm_consumer_vtable *vt, void *self, hm_consumer **out) {
  if (!vt || !out || vt->struct_size < sizeof *vt || !vt->push)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_consumer_create: vtable needs struct_size and push");
  hm_consumer *c = hm__calloc(1, sizeof *c);
  if (!c) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  c->vt = vt;
  c->self = self;
  *out = c;
  return HM_OK;
}

void hm_consumer_free(hm_consumer *c) {
  if (!c) return;
  if (c->vt->destroy) c->vt->destroy(c->self);
  hm__free(c);
}

hm_status hm_consumer_push(hm_consumer *c, const float *values, size_t rows, size_t width) {
  if (!c || (rows && !values)) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "NULL consumer argument");
  return c->vt->push(c->self, values, rows, width);
}

typedef struct array_consumer {
  float *values;
  size_t rows, width, cap;
} array_consumer;

static hm_status array_push(void *self, const float *values, size_t rows, size_t width) {
  array_consumer *a = self;
  if (a->rows && width != a->width)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "array consumer: width %zu after %zu", width, a->width);
  size_t need = (a->rows + rows) * width;
  if (need > a->cap) {
    size_t cap = a->cap ? a->cap : 1024;
    while (cap < need) cap *= 2;
    float *nv = hm__realloc(a->values, cap * sizeof *nv);
    if (!nv) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    a->values = nv;
    a->cap = cap;
  }
  memcpy(a->values + a->rows * width, values, rows * width * sizeof(float));
  a->rows += rows;
  a->width = width;
  return HM_OK;
}

static void array_destroy(void *self) {
  array_consumer *a = self;
  if (!a) return;
  hm__free(a->values);
  hm__free(a);
}

static const hm_consumer_vtable array_vtable = {sizeof(hm_consumer_vtable), array_push, array_destroy};

hm_status hm_consumer_create_array(hm_consumer **out) {
  array_consumer *a = hm__calloc(1, sizeof *a);
  if (!a) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  hm_status st = hm_consumer_create(&array_vtable, a, out);
  if (st != HM_OK) hm__free(a);
  return st;
}

hm_status hm_consumer_array_values(const hm_consumer *c, const float **values, size_t *rows, size_t *width) {
  if (!c || c->vt != &array_vtable) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "not an array consumer");
  const array_consumer *a = c->self;
  if (values) *values = a->values;
  if (rows) *rows = a->rows;
  if (width) *width = a->width;
  return HM_OK;
}
