/*
 * backend/: plugin loading, the registry, configuration files and opened
 * devices. This header is the internal view of a loaded plugin, shared by
 * plugin_loader.c, registry.c and device.c. Depends on base/ only.
 */
#ifndef HM_BACKEND_BACKEND_H_
#define HM_BACKEND_BACKEND_H_

#include "harmonics/plugin_loader.h"
#include "harmonics/plugins.h"
#include "base/base.h"

struct hm_loaded_plugin {
  char *path;
  char *name;
  void *handle;
  hm_abi_plugin table; /* host-sized copy filled by the plugin's query */
  hm_abi_host host;    /* host services handed to init; host_ctx = this */
  hm_abi_context *ctx;
};

#endif /* HM_BACKEND_BACKEND_H_ */
