/*
 * A tiny plugin for the loader tests, built in several variants that are
 * broken on purpose (one -D flag each):
 *   TP_NO_QUERY       exports no hm_plugin_query
 *   TP_WRONG_MAJOR    serves ABI 2.0 only
 *   TP_NEWER_MINOR    serves ABI 1.0-1.7 (a newer minor: must be accepted at 1.0)
 *   TP_NULL_ENTRY     leaves the required entry program_run NULL
 *   TP_INIT_FAIL      init reports UNAVAILABLE with a message
 *   TP_RESERVED       sets a reserved descriptor field
 *   TP_MISSING_DEP    needs a shared library that is not on the search path
 *   TP_QUERY_CRASH    dereferences NULL in hm_plugin_query
 *   TP_INIT_HANG      never returns from init
 * Without a flag it is a working one-device plugin named TP_NAME whose only
 * op is FILL.
 */
#include <stdlib.h>
#include <string.h>
#ifdef TP_INIT_HANG
#include <unistd.h>
#endif

#include "harmonics_abi.h"

#ifndef TP_NAME
#define TP_NAME "loadertest"
#endif

#ifdef TP_MISSING_DEP
int hm_test_missing_dependency_function(void);
#endif

struct hm_abi_context {
  hm_abi_host host;
};
struct hm_abi_device {
  int unused;
};
struct hm_abi_buffer {
  uint64_t size;
  unsigned char *data;
};
struct hm_abi_program {
  hm_abi_op op;
  uint32_t n_ops;
};

static const hm_abi_capability caps[] = {
    {HM_ABI_OP_FILL, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_EXACT, 0, 0, 0.0f, {0, 0, 0}},
};

static int32_t tp_init(const hm_abi_init_args *args, hm_abi_context **out) {
#ifdef TP_INIT_HANG
  for (;;) pause();
#endif
#ifdef TP_INIT_FAIL
  args->host->report(args->host->host_ctx, HM_ABI_LOG_ERROR, HM_ABI_STATUS_UNAVAILABLE,
                     TP_NAME ": simulated device failure (no hardware)");
  (void)out;
  return HM_ABI_STATUS_UNAVAILABLE;
#else
#ifdef TP_MISSING_DEP
  if (hm_test_missing_dependency_function() != 42) return HM_ABI_STATUS_INTERNAL;
#endif
  hm_abi_context *c = calloc(1, sizeof *c);
  if (!c) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  c->host = *args->host;
  *out = c;
  return HM_ABI_OK;
#endif
}
static void tp_shutdown(hm_abi_context *c) { free(c); }
static uint32_t tp_device_count(hm_abi_context *c) { return c ? 1 : 0; }
static int32_t tp_describe(hm_abi_context *c, uint32_t i, hm_abi_device_desc *d) {
  (void)c;
  if (i != 0) return HM_ABI_STATUS_NOT_FOUND;
  uint32_t size = d->struct_size;
  memset(d, 0, size);
  d->struct_size = size;
  d->abi_version = HM_ABI_VERSION;
  strcpy(d->name, TP_NAME);
  strcpy(d->vendor, "Harmonics tests");
  d->kind = HM_ABI_DEVICE_ACCELERATOR;
  d->memory_bytes = 1u << 20;
  d->max_buffer_bytes = 1u << 20;
  d->caps = caps;
  d->n_caps = 1;
  return HM_ABI_OK;
}
static int32_t tp_open(hm_abi_context *c, uint32_t i, const hm_abi_option *o, uint32_t n, hm_abi_device **out) {
  (void)c;
  (void)o;
  (void)n;
  if (i != 0) return HM_ABI_STATUS_NOT_FOUND;
  *out = calloc(1, sizeof **out);
  return *out ? HM_ABI_OK : HM_ABI_STATUS_RESOURCE_EXHAUSTED;
}
static void tp_close(hm_abi_device *d) { free(d); }
static int32_t tp_alloc(hm_abi_device *d, uint64_t size, hm_abi_buffer **out) {
  (void)d;
  if (!size || size > (1u << 20)) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  hm_abi_buffer *b = calloc(1, sizeof *b);
  if (!b) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  b->data = calloc(1, size);
  b->size = size;
  *out = b;
  return b->data ? HM_ABI_OK : HM_ABI_STATUS_RESOURCE_EXHAUSTED;
}
static void tp_free(hm_abi_buffer *b) {
  if (b) free(b->data);
  free(b);
}
static int32_t tp_write(hm_abi_buffer *b, uint64_t off, const void *src, uint64_t n) {
  if (off > b->size || n > b->size - off) return HM_ABI_STATUS_OUT_OF_RANGE;
  memcpy(b->data + off, src, n);
  return HM_ABI_OK;
}
static int32_t tp_read(hm_abi_buffer *b, uint64_t off, void *dst, uint64_t n) {
  if (off > b->size || n > b->size - off) return HM_ABI_STATUS_OUT_OF_RANGE;
  memcpy(dst, b->data + off, n);
  return HM_ABI_OK;
}
static int32_t tp_copy(hm_abi_buffer *d, uint64_t doff, hm_abi_buffer *s, uint64_t soff, uint64_t n) {
  if (doff > d->size || n > d->size - doff || soff > s->size || n > s->size - soff) return HM_ABI_STATUS_OUT_OF_RANGE;
  memmove(d->data + doff, s->data + soff, n);
  return HM_ABI_OK;
}
static int32_t tp_program_create(hm_abi_device *d, const hm_abi_program_desc *desc, hm_abi_program **out) {
  (void)d;
  if (desc->n_ops != 1 || desc->ops[0].code != HM_ABI_OP_FILL) return HM_ABI_STATUS_UNIMPLEMENTED;
  const hm_abi_op *op = &desc->ops[0];
  if (!op->out[0].buffer || op->out[0].offset > op->out[0].buffer->size ||
      op->dims[0] * 4 > op->out[0].buffer->size - op->out[0].offset)
    return HM_ABI_STATUS_OUT_OF_RANGE;
  hm_abi_program *p = calloc(1, sizeof *p);
  if (!p) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  p->op = *op;
  p->n_ops = 1;
  *out = p;
  return HM_ABI_OK;
}
static void tp_program_free(hm_abi_program *p) { free(p); }
static int32_t tp_program_run(hm_abi_program *p, const double *s, uint32_t n) {
  (void)s;
  (void)n;
  float *x = (float *)(p->op.out[0].buffer->data + p->op.out[0].offset);
  for (uint64_t i = 0; i < p->op.dims[0]; i++) x[i] = p->op.params[0];
  return HM_ABI_OK;
}

#ifdef TP_NO_QUERY
HM_ABI_EXPORT int32_t hm_plugin_query_misspelled(const hm_abi_query *q, hm_abi_plugin *out);
HM_ABI_EXPORT int32_t hm_plugin_query_misspelled(const hm_abi_query *q, hm_abi_plugin *out) {
#else
HM_ABI_EXPORT int32_t hm_plugin_query(const hm_abi_query *q, hm_abi_plugin *out) {
#endif
#if defined(TP_WRONG_MAJOR)
  uint32_t pmin = HM_ABI_MAKE_VERSION(2, 0), pmax = HM_ABI_MAKE_VERSION(2, 0);
#elif defined(TP_NEWER_MINOR)
  uint32_t pmin = HM_ABI_MAKE_VERSION(1, 0), pmax = HM_ABI_MAKE_VERSION(1, 7);
#else
  uint32_t pmin = HM_ABI_MAKE_VERSION(1, 0), pmax = HM_ABI_VERSION;
#endif
#ifdef TP_QUERY_CRASH
  volatile int *nowhere = NULL;
  *nowhere = 1;
#endif
  uint32_t hi = q->host_max_abi < pmax ? q->host_max_abi : pmax;
  uint32_t lo = q->host_min_abi > pmin ? q->host_min_abi : pmin;
  if (HM_ABI_VERSION_GET_MAJOR(hi) != HM_ABI_VERSION_GET_MAJOR(pmax) || hi < lo) return HM_ABI_STATUS_INCOMPATIBLE;
  uint32_t size = out->struct_size;
  hm_abi_plugin p;
  memset(&p, 0, sizeof p);
  p.struct_size = size;
  p.abi_version = hi;
  p.plugin_min_abi = pmin;
  p.plugin_max_abi = pmax;
  p.name = TP_NAME;
  p.vendor = "Harmonics tests";
  p.version = "1.0.0";
  p.build_id = "test";
  p.init = tp_init;
  p.shutdown = tp_shutdown;
  p.device_count = tp_device_count;
  p.device_describe = tp_describe;
  p.device_open = tp_open;
  p.device_close = tp_close;
  p.buffer_alloc = tp_alloc;
  p.buffer_free = tp_free;
  p.buffer_write = tp_write;
  p.buffer_read = tp_read;
  p.buffer_copy = tp_copy;
  p.program_create = tp_program_create;
  p.program_free = tp_program_free;
#ifndef TP_NULL_ENTRY
  p.program_run = tp_program_run;
#else
  (void)tp_program_run;
#endif
#ifdef TP_RESERVED
  p.reserved[3] = 0xdead;
#endif
  memcpy(out, &p, size < sizeof p ? size : sizeof p);
  return HM_ABI_OK;
}
