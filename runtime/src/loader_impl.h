/*
 * Internal view of a loaded plugin, shared by plugin_loader.c, registry.c and
 * device.c.
 */
#ifndef HM_LOADER_IMPL_H_
#define HM_LOADER_IMPL_H_

#include "harmonics/plugin_loader.h"
#include "harmonics/plugins.h"
#include "internal.h"

struct hm_loaded_plugin {
  char *path;
  char *name;
  void *handle;
  hm_abi_plugin table; /* host-sized copy filled by the plugin's query */
  hm_abi_host host;    /* host services handed to init; host_ctx = this */
  hm_abi_context *ctx;
};

/* ===== Configuration files (config.c) ===== */

typedef struct hm_config {
  char *backend;            /* preference list */
  char *debug;              /* debug categories */
  hm_ptrvec plugin_paths;   /* char*: files or directories */
  hm_ptrvec device_options; /* char*: "backend.key=value" */
} hm_config;

/* Parses a harmonics.conf. PARSE_ERROR names file:line. */
hm_status hm__config_load(const char *path, hm_config *cfg);
void hm__config_free(hm_config *cfg);

#endif /* HM_LOADER_IMPL_H_ */
