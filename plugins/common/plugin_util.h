/*
 * Helpers every Harmonics plugin needs (not part of the ABI): the version
 * negotiation of hm_plugin_query (SPEC.md HM-ABI-4) and bounded string copies
 * into descriptor arrays.
 */
#ifndef HM_PLUGIN_UTIL_H_
#define HM_PLUGIN_UTIL_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Answers hm_plugin_query for a plugin serving ABI [plugin_min, ABI_VERSION]:
 * checks the query, negotiates min(host max, plugin max), and copies the
 * plugin's constant |table| (its strings and entries; a static const with
 * designated initializers) with the version fields filled, as much as fits
 * |out->struct_size|. INCOMPATIBLE leaves |out| untouched. */
int32_t hm_plugin_answer_query(const hm_abi_query *query, hm_abi_plugin *out, const hm_abi_plugin *table,
                               uint32_t plugin_min);

/* The entry table of a plugin whose entry points are named PREFIX_init,
 * PREFIX_shutdown, ..., PREFIX_device_synchronize (the versions are filled in
 * by hm_plugin_answer_query):
 *   static const hm_abi_plugin plugin_table = HM_PLUGIN_TABLE(cpu, "cpu", "1.0", HM_BUILD_ID); */
#define HM_PLUGIN_TABLE(prefix, backend, plugin_version, build)                              \
  {                                                                                          \
    .name = (backend), .vendor = "Harmonics", .version = (plugin_version), .build_id = (build), \
    .init = prefix##_init, .shutdown = prefix##_shutdown, .device_count = prefix##_device_count, \
    .device_describe = prefix##_device_describe, .device_open = prefix##_device_open,          \
    .device_close = prefix##_device_close, .buffer_alloc = prefix##_buffer_alloc,              \
    .buffer_free = prefix##_buffer_free, .buffer_write = prefix##_buffer_write,                \
    .buffer_read = prefix##_buffer_read, .buffer_copy = prefix##_buffer_copy,                  \
    .program_create = prefix##_program_create, .program_free = prefix##_program_free,          \
    .program_run = prefix##_program_run, .device_synchronize = prefix##_device_synchronize,    \
  }

/* Copies |src| into |dst| (capacity |cap|), truncating, always terminated. */
void hm_copy_text(char *dst, size_t cap, const char *src);

/* Formats a message, hands it to the host's report callback (when |host| has
 * one) and returns |status|: every plugin's way of failing (SPEC.md §5). */
int32_t hm_plugin_fail(const hm_abi_host *host, int32_t status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The first member of every buffer our plugins hand out: a magic number
 * naming the plugin that made it, and its size. One check serves all. */
typedef struct hm_plugin_buffer_header {
  uint32_t magic;
  uint64_t size;
} hm_plugin_buffer_header;

/* Whether |buffer| (whose struct begins with the header) is non-NULL and
 * carries |magic|. */
static inline int hm_plugin_buffer_ok(const void *buffer, uint32_t magic) {
  return buffer && ((const hm_plugin_buffer_header *)buffer)->magic == magic;
}
/* Whether [offset, offset + size) lies inside the buffer. */
static inline int hm_plugin_range_ok(const void *buffer, uint64_t offset, uint64_t size) {
  uint64_t have = ((const hm_plugin_buffer_header *)buffer)->size;
  return offset <= have && size <= have - offset;
}

/* The most ops one program may hold in any of our plugins: a plugin copies
 * and plans every op (about 300 bytes each), so a million ops bound that
 * copy to a few hundred MB; the runtime lowers far fewer (tens per
 * connection). */
#define HM_PLUGIN_MAX_PROGRAM_OPS (1u << 20)

#ifdef __cplusplus
}
#endif
#endif /* HM_PLUGIN_UTIL_H_ */
