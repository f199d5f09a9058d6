/* Helpers shared by Harmonics' own plugins (plugin_util.h). */
#include "plugin_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int32_t hm_plugin_answer_query(const hm_abi_query *query, hm_abi_plugin *out, const hm_abi_plugin *table,
                               uint32_t plugin_min) {
  if (!query || !out || query->struct_size < sizeof(hm_abi_query) || out->struct_size < offsetof(hm_abi_plugin, reserved))
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  uint32_t plugin_max = HM_ABI_VERSION;
  uint32_t hi = query->host_max_abi < plugin_max ? query->host_max_abi : plugin_max;
  uint32_t lo = query->host_min_abi > plugin_min ? query->host_min_abi : plugin_min;
  if (HM_ABI_VERSION_GET_MAJOR(hi) != HM_ABI_VERSION_MAJOR || hi < lo) return HM_ABI_STATUS_INCOMPATIBLE;
  hm_abi_plugin answer = *table;
  answer.struct_size = out->struct_size;
  answer.abi_version = hi;
  answer.plugin_min_abi = plugin_min;
  answer.plugin_max_abi = plugin_max;
  memcpy(out, &answer, out->struct_size < sizeof answer ? out->struct_size : sizeof answer);
  return HM_ABI_OK;
}

void hm_copy_text(char *dst, size_t cap, const char *src) {
  if (!cap) return;
  size_t n = strlen(src);
  if (n >= cap) n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

int32_t hm_plugin_fail(const hm_abi_host *host, int32_t status, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (host && host->report) host->report(host->host_ctx, HM_ABI_LOG_ERROR, status, msg);
  return status;
}
