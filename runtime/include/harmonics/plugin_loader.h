/*
 * The production plugin loader, for tools that work on one plugin file
 * (`harmonics conform`, tests). Applications use plugins.h instead.
 *
 * hm_plugin_open performs, in order: dlopen(RTLD_NOW|RTLD_LOCAL), lookup of
 * hm_plugin_query, version negotiation against the host's ABI range, checks
 * of the descriptor (required entries non-NULL, reserved fields zero, names
 * well formed), then init. Each failure returns a status and leaves a
 * sentence in hm_last_error() naming the file and the exact reason.
 */
#ifndef HARMONICS_PLUGIN_LOADER_H_
#define HARMONICS_PLUGIN_LOADER_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics/harmonics_abi.h"
#include "harmonics/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hm_plugin_open_options {
  size_t struct_size;
  /* The host ABI range offered in the query; 0 = the host's own
   * [HM_ABI_MAKE_VERSION(1, 0), HM_ABI_VERSION]. */
  uint32_t host_min_abi;
  uint32_t host_max_abi;
  const hm_abi_option *init_options;
  uint32_t n_init_options;
  /* Negotiate and verify only; do not call init. */
  int skip_init;
  void *reserved[4];
} hm_plugin_open_options;

typedef struct hm_loaded_plugin hm_loaded_plugin;

HM_API hm_plugin_open_options hm_plugin_open_options_default(void);
HM_API HM_MUST_USE hm_status hm_plugin_open(const char *path, const hm_plugin_open_options *options,
                                            hm_loaded_plugin **out_plugin);
/* Shuts the plugin down (if initialised) and unloads it. NULL is a no-op. */
HM_API void hm_plugin_close(hm_loaded_plugin *plugin);
/* The negotiated descriptor and the plugin's context (NULL with skip_init). */
HM_API const hm_abi_plugin *hm_loaded_plugin_table(const hm_loaded_plugin *plugin);
HM_API hm_abi_context *hm_loaded_plugin_context(const hm_loaded_plugin *plugin);
HM_API const char *hm_loaded_plugin_path(const hm_loaded_plugin *plugin);
/* The dlopen handle (for symbol inspection by conformance tools). */
HM_API void *hm_loaded_plugin_handle(const hm_loaded_plugin *plugin);
/* The last message the calling thread received from any plugin's report
 * callback ("" if none). */
HM_API const char *hm_plugin_last_message(void);
/* Clears the calling thread's last plugin message. */
HM_API void hm_plugin_clear_last_message(void);
/* Turns a plugin status into an hm_status with hm_last_error() set to
 * "<what>: <plugin message>". Returns HM_OK for HM_ABI_OK. */
HM_API hm_status hm_plugin_status(const hm_loaded_plugin *plugin, int32_t abi_status, const char *what);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_PLUGIN_LOADER_H_ */
