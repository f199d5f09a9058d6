/*
 * Opened devices and the buffer/program wrappers used by the training code.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/device.h"
#include "base/base.h"

hm_status hm__device_desc_check(const char *backend, uint32_t index, const hm_abi_device_desc *d) {
  if (memchr(d->name, '\0', sizeof d->name) == NULL || d->name[0] == '\0')
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: device %u has an empty or unterminated name", backend, index);
  if (memchr(d->vendor, '\0', sizeof d->vendor) == NULL || memchr(d->features, '\0', sizeof d->features) == NULL)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: device %u has an unterminated vendor or features string",
                    backend, index);
  if (d->kind > HM_ABI_DEVICE_ACCELERATOR)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: device %u has unknown kind %u", backend, index, d->kind);
  if (d->n_caps > 4096 || (d->n_caps && !d->caps))
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: device %u declares %u capabilities%s", backend, index,
                    d->n_caps, d->caps ? " (more than 4096)" : " but no table");
  for (size_t i = 0; i < sizeof d->reserved / sizeof d->reserved[0]; i++)
    if (d->reserved[i] || d->reserved0)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: device %u sets a reserved field", backend, index);
  return HM_OK;
}

hm_status hm__device_create(hm_loaded_plugin *plugin, const char *backend, uint32_t index,
                            const hm_abi_device_desc *desc, const hm_abi_option *options, uint32_t n_options,
                            hm_device **out) {
  hm_device *d = hm__calloc(1, sizeof *d);
  if (!d) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  d->plugin = plugin;
  d->table = hm_loaded_plugin_table(plugin);
  snprintf(d->backend, sizeof d->backend, "%s", backend);
  d->index = index;
  d->desc = *desc;
  int32_t s = d->table->device_open(hm_loaded_plugin_context(plugin), index, options, n_options, &d->dev);
  char what[64];
  snprintf(what, sizeof what, "device_open(%u)", index);
  hm_status st = hm_plugin_status(plugin, s, what);
  if (st == HM_OK && !d->dev) st = hm__fail(HM_STATUS_INTERNAL, "%s: device_open returned no device", backend);
  if (st != HM_OK) {
    hm__free(d);
    return st;
  }
  hm__log(HM_LOG_LOADER, "opened %s:%u (%s)", backend, index, d->desc.name);
  *out = d;
  return HM_OK;
}

void hm__device_destroy(hm_device *d) {
  if (!d) return;
  d->table->device_close(d->dev);
  hm__free(d);
}

const char *hm_device_backend(const hm_device *d) { return d ? d->backend : NULL; }
uint32_t hm_device_index(const hm_device *d) { return d ? d->index : 0; }
const hm_abi_device_desc *hm_device_desc(const hm_device *d) { return d ? &d->desc : NULL; }

int hm_device_supports(const hm_device *d, uint32_t op, uint32_t dtype_in, uint32_t dtype_out, uint32_t variant) {
  if (!d) return 0;
  for (uint32_t i = 0; i < d->desc.n_caps; i++) {
    const hm_abi_capability *c = &d->desc.caps[i];
    if (c->op != op || c->dtype_in != dtype_in || c->dtype_out != dtype_out) continue;
    if (c->variants && (variant >= 64 || !(c->variants & (1ull << variant)))) continue;
    return 1;
  }
  return 0;
}

#define CHECK_DEVICE(d, what)                                                      \
  do {                                                                             \
    if (!(d)) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: NULL device", what); \
  } while (0)

hm_status hm_device_buffer_alloc(hm_device *d, uint64_t size, hm_abi_buffer **out) {
  CHECK_DEVICE(d, "hm_device_buffer_alloc");
  if (!out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_device_buffer_alloc: NULL output");
  hm_abi_buffer *b = NULL;
  int32_t s = d->table->buffer_alloc(d->dev, size, &b);
  hm_status st = hm_plugin_status(d->plugin, s, "buffer_alloc");
  if (st == HM_OK && !b) st = hm__fail(HM_STATUS_INTERNAL, "%s: buffer_alloc returned no buffer", d->backend);
  if (st == HM_OK) *out = b;
  return st;
}

void hm_device_buffer_free(hm_device *d, hm_abi_buffer *b) {
  if (d && b) d->table->buffer_free(b);
}

hm_status hm_device_buffer_write(hm_device *d, hm_abi_buffer *b, uint64_t offset, const void *src, uint64_t size) {
  CHECK_DEVICE(d, "hm_device_buffer_write");
  if (!b) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_device_buffer_write: NULL buffer");
  return hm_plugin_status(d->plugin, d->table->buffer_write(b, offset, src, size), "buffer_write");
}

hm_status hm_device_buffer_read(hm_device *d, hm_abi_buffer *b, uint64_t offset, void *dst, uint64_t size) {
  CHECK_DEVICE(d, "hm_device_buffer_read");
  if (!b) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_device_buffer_read: NULL buffer");
  return hm_plugin_status(d->plugin, d->table->buffer_read(b, offset, dst, size), "buffer_read");
}

hm_status hm_device_program_create(hm_device *d, const hm_abi_op *ops, uint32_t n_ops, uint32_t n_scalars,
                                   hm_abi_program **out) {
  CHECK_DEVICE(d, "hm_device_program_create");
  if (!out || (n_ops && !ops)) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_device_program_create: NULL ops or output");
  hm_abi_program_desc desc;
  memset(&desc, 0, sizeof desc);
  desc.struct_size = sizeof desc;
  desc.abi_version = HM_ABI_VERSION;
  desc.ops = ops;
  desc.n_ops = n_ops;
  desc.n_scalars = n_scalars;
  hm_abi_program *p = NULL;
  hm_status st = hm_plugin_status(d->plugin, d->table->program_create(d->dev, &desc, &p), "program_create");
  if (st == HM_OK && !p) st = hm__fail(HM_STATUS_INTERNAL, "%s: program_create returned no program", d->backend);
  if (st == HM_OK) *out = p;
  return st;
}

void hm_device_program_free(hm_device *d, hm_abi_program *p) {
  if (d && p) d->table->program_free(p);
}

hm_status hm_device_program_run(hm_device *d, hm_abi_program *p, const double *scalars, uint32_t n_scalars) {
  CHECK_DEVICE(d, "hm_device_program_run");
  if (!p) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_device_program_run: NULL program");
  return hm_plugin_status(d->plugin, d->table->program_run(p, scalars, n_scalars), "program_run");
}

hm_abi_op hm_op_init(uint32_t code) {
  hm_abi_op op;
  memset(&op, 0, sizeof op);
  op.struct_size = sizeof op;
  op.abi_version = HM_ABI_VERSION;
  op.code = code;
  for (int i = 0; i < HM_ABI_MAX_DYN; i++) op.dyn[i] = HM_ABI_DYN_NONE;
  return op;
}
