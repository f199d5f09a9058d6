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
 * checks the query, negotiates min(host max, plugin max), fills the version
 * fields of |table| (whose entries and strings the plugin set) and copies as
 * much of it as fits |out->struct_size|. INCOMPATIBLE leaves |out| untouched. */
int32_t hm_plugin_answer_query(const hm_abi_query *query, hm_abi_plugin *out, hm_abi_plugin *table,
                               uint32_t plugin_min);

/* Copies |src| into |dst| (capacity |cap|), truncating, always terminated. */
void hm_copy_text(char *dst, size_t cap, const char *src);

#ifdef __cplusplus
}
#endif
#endif /* HM_PLUGIN_UTIL_H_ */
