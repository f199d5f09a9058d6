/*
 * Backends: the plugin registry, device selection and opened devices.
 *
 * The registry is the one piece of global state in Harmonics. It is
 * initialised once per process, explicitly with hm_registry_init or lazily
 * with default options by the first call that needs it, and is thread-safe.
 * Discovery and selection follow DESIGN.md §7 and docs/plugins.md:
 *   1. explicit plugin files/directories (options, then `plugin =` lines of the
 *      configuration file),
 *   2. HARMONICS_PLUGIN_PATH (colon-separated directories),
 *   3. <libdir>/harmonics/plugins next to libharmonics (the build tree has the
 *      same layout, so it works without installing).
 * Every plugin considered is kept with its outcome; a plugin that fails to
 * load is skipped with its exact reason and never stops the others.
 */
#ifndef HARMONICS_PLUGINS_H_
#define HARMONICS_PLUGINS_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics/harmonics_abi.h"
#include "harmonics/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ===== Registry ===== */

typedef struct hm_registry_options {
  size_t struct_size;
  /* Plugin files or directories searched before anything else. */
  const char *const *plugin_paths;
  size_t n_plugin_paths;
  /* Read HARMONICS_PLUGIN_PATH, HARMONICS_BACKEND, HARMONICS_CONFIG and
   * HARMONICS_DEBUG (default 1). */
  int use_environment;
  /* Search <libdir>/harmonics/plugins (default 1). */
  int search_default_dir;
  /* A harmonics.conf to read (NULL: $HARMONICS_CONFIG when use_environment). */
  const char *config_file;
  /* Backend preference list such as "cuda,vulkan,cpu"; overrides the
   * environment and the configuration file. NULL: not set here. */
  const char *backend;
  /* Debug categories ("1", "all", "loader,plugin,policy,train"); overrides
   * HARMONICS_DEBUG. NULL: not set here. */
  const char *debug;
  /* Load plugin files (and search directories) that other users could have
   * written: world-writable, in a world-writable directory without the
   * sticky bit, or owned by another user than root or us. Default 0: they
   * are skipped with the reason (HARMONICS_ALLOW_INSECURE_PLUGINS=1 also
   * allows them when use_environment). */
  int allow_insecure_plugins;
  void *reserved[8];
} hm_registry_options;

HM_API hm_registry_options hm_registry_options_default(void);

/* Loads every plugin found. FAILED_PRECONDITION if already initialised (call
 * hm_registry_shutdown first). Individual plugin failures are not errors; they
 * are recorded and reported by hm_plugin_describe. PARSE_ERROR for a
 * malformed configuration file. */
HM_API HM_MUST_USE hm_status hm_registry_init(const hm_registry_options *options);
/* Unloads every plugin. FAILED_PRECONDITION while devices are open. */
HM_API hm_status hm_registry_shutdown(void);

/* ===== Plugins considered ===== */

typedef struct hm_plugin_report {
  const char *path;        /* the file considered */
  int loaded;              /* 1 when usable */
  hm_status status;        /* why not, when not loaded */
  const char *reason;      /* the exact reason, NULL when loaded */
  /* When the plugin answered the query (NULL/0 otherwise): */
  const char *name;
  const char *vendor;
  const char *version;
  const char *build_id;
  uint32_t abi_version;    /* negotiated */
  uint32_t plugin_min_abi, plugin_max_abi;
  size_t device_count;
} hm_plugin_report;

/* Number of plugins considered (loaded or skipped). Initialises the registry
 * with default options if needed. */
HM_API size_t hm_plugin_count(void);
/* Fills |out|; strings stay valid until hm_registry_shutdown. */
HM_API HM_MUST_USE hm_status hm_plugin_describe(size_t index, hm_plugin_report *out);
/* Describes device |device| of plugin |index| (a copy of the plugin's own
 * descriptor; caps stay valid until hm_registry_shutdown). */
HM_API HM_MUST_USE hm_status hm_plugin_device_describe(size_t index, size_t device, hm_abi_device_desc *out);
/* The directories searched, in order, separated by ':' (for messages). */
HM_API const char *hm_plugin_search_path(void);

/* ===== Devices ===== */

typedef struct hm_device hm_device;

typedef struct hm_device_options {
  size_t struct_size;
  /* CPU threads; 0 = the backend's default (all cores). */
  unsigned threads;
  /* Extra "key=value" device options passed to the plugin. */
  const char *const *options;
  size_t n_options;
  void *reserved[4];
} hm_device_options;

HM_API hm_device_options hm_device_options_default(void);

/* Opens a device. |spec| is "backend" or "backend:index" (e.g. "cuda:1"), or
 * NULL/"" /"auto" to select one: the first available entry of the preference
 * list (options, HARMONICS_BACKEND, configuration) or, without a list, the
 * best declared device with the CPU last. An unavailable backend is an error
 * that says why (UNAVAILABLE or NOT_FOUND); there is no silent fallback.
 * Caller frees with hm_device_close. */
HM_API HM_MUST_USE hm_status hm_device_open(const char *spec, const hm_device_options *options,
                                            hm_device **out_device);
HM_API void hm_device_close(hm_device *device);

/* The backend name ("cpu"), device index and descriptor of an open device.
 * Pointers stay valid while the device is open. */
HM_API const char *hm_device_backend(const hm_device *device);
HM_API uint32_t hm_device_index(const hm_device *device);
HM_API const hm_abi_device_desc *hm_device_desc(const hm_device *device);
/* Nonzero when the device declares |op| at (dtype_in, dtype_out); for ops
 * with variants, |variant| must be among them. */
HM_API int hm_device_supports(const hm_device *device, uint32_t op, uint32_t dtype_in, uint32_t dtype_out,
                              uint32_t variant);

/* ===== Raw device access (advanced) =====
 * Buffers and ABI programs on an open device, for tools and for code that
 * builds its own programs (SPEC.md §7 defines the ops). The training API
 * does all of this for you. A plugin failure becomes an hm_status with a
 * message naming the backend and the call. */

HM_API HM_MUST_USE hm_status hm_device_buffer_alloc(hm_device *device, uint64_t size, hm_abi_buffer **out_buffer);
HM_API void hm_device_buffer_free(hm_device *device, hm_abi_buffer *buffer);
HM_API HM_MUST_USE hm_status hm_device_buffer_write(hm_device *device, hm_abi_buffer *buffer, uint64_t offset,
                                                    const void *src, uint64_t size);
HM_API HM_MUST_USE hm_status hm_device_buffer_read(hm_device *device, hm_abi_buffer *buffer, uint64_t offset,
                                                   void *dst, uint64_t size);
/* Creates a program from |n_ops| ops (copied). */
HM_API HM_MUST_USE hm_status hm_device_program_create(hm_device *device, const hm_abi_op *ops, uint32_t n_ops,
                                                      uint32_t n_scalars, hm_abi_program **out_program);
HM_API void hm_device_program_free(hm_device *device, hm_abi_program *program);
HM_API HM_MUST_USE hm_status hm_device_program_run(hm_device *device, hm_abi_program *program,
                                                   const double *scalars, uint32_t n_scalars);
/* An op with struct_size, abi_version and |code| set, every dynamic slot
 * unused and everything else zero. */
HM_API hm_abi_op hm_op_init(uint32_t code);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_PLUGINS_H_ */
