/*
 * harmonics.conf: backend preference, plugin paths, debug categories and
 * per-backend device options (docs/plugins.md).
 */
#ifndef HM_BACKEND_CONFIG_H_
#define HM_BACKEND_CONFIG_H_

#include "base/base.h"

/* "<backend>.<key> = <value>": kept as three strings, never re-joined. */
typedef struct hm_config_option {
  char *backend, *key, *value;
} hm_config_option;

typedef struct hm_config {
  char *backend;            /* preference list */
  char *debug;              /* debug categories */
  hm_ptrvec plugin_paths;   /* char*: files or directories */
  hm_config_option *device_options;
  size_t n_device_options;
} hm_config;

/* Parses a harmonics.conf. PARSE_ERROR names file:line. */
hm_status hm__config_load(const char *path, hm_config *cfg);
void hm__config_free(hm_config *cfg);

#endif /* HM_BACKEND_CONFIG_H_ */
