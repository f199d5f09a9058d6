/*
 * Opened devices (the struct behind hm_device). The buffer and program
 * wrappers are public, in plugins.h.
 */
#ifndef HM_DEVICE_IMPL_H_
#define HM_DEVICE_IMPL_H_

#include "harmonics/plugins.h"
#include "backend/backend.h"

struct hm_device {
  hm_loaded_plugin *plugin;
  const hm_abi_plugin *table;
  char backend[32];
  uint32_t index;
  hm_abi_device_desc desc;
  hm_abi_device *dev;
};

/* Checks a descriptor a plugin filled (SPEC.md HM-PLUGIN-7). */
hm_status hm__device_desc_check(const char *backend, uint32_t index, const hm_abi_device_desc *d);
hm_status hm__device_create(hm_loaded_plugin *plugin, const char *backend, uint32_t index,
                            const hm_abi_device_desc *desc, const hm_abi_option *options, uint32_t n_options,
                            hm_device **out);
void hm__device_destroy(hm_device *device);

#endif /* HM_DEVICE_IMPL_H_ */
