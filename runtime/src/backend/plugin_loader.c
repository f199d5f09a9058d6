/*
 * Loading one plugin file: dlopen, negotiate, verify, init (SPEC.md §3-§4).
 * Rules the loader enforces are tagged with their SPEC.md number.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harmonics/plugin_loader.h"
#include "base/base.h"
#include "backend/backend.h"

#define HOST_MIN_ABI HM_ABI_MAKE_VERSION(1, 0)
#define HOST_MAX_ABI HM_ABI_VERSION

static _Thread_local char plugin_message[1024];

const char *hm_plugin_last_message(void) { return plugin_message; }
void hm_plugin_clear_last_message(void) { plugin_message[0] = '\0'; }

static void host_report(void *host_ctx, int32_t level, int32_t status, const char *message) {
  const hm_loaded_plugin *p = host_ctx;
  const char *name = p && p->name ? p->name : "plugin";
  if (level == HM_ABI_LOG_ERROR || status != HM_ABI_OK)
    snprintf(plugin_message, sizeof plugin_message, "%s", message ? message : "");
  hm__log(HM_LOG_PLUGIN, "%s: %s", name, message ? message : "");
}

hm_plugin_open_options hm_plugin_open_options_default(void) {
  hm_plugin_open_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  return o;
}

static const char *abi_status_name(int32_t s) {
  if (s >= 0 && s <= HM_STATUS_NOT_FOUND) return hm_status_name((hm_status)s);
  return "UNKNOWN";
}

static hm_status map_abi_status(int32_t s) {
  if (s >= 0 && s <= HM_STATUS_NOT_FOUND) return (hm_status)s;
  return HM_STATUS_INTERNAL;
}

hm_status hm_plugin_status(const hm_loaded_plugin *p, int32_t abi_status, const char *what) {
  if (abi_status == HM_ABI_OK) return HM_OK;
  const char *msg = plugin_message[0] ? plugin_message : "(the plugin reported no message)";
  hm_status st = hm__fail(map_abi_status(abi_status), "%s%s%s: %s: %s", p && p->name ? p->name : "",
                          p && p->name ? ": " : "", what, abi_status_name(abi_status), msg);
  plugin_message[0] = '\0';
  return st;
}

static int valid_backend_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 31) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return 0;
  }
  return 1;
}

static void version_text(uint32_t v, char *buf, size_t cap) {
  snprintf(buf, cap, "%u.%u", HM_ABI_VERSION_GET_MAJOR(v), HM_ABI_VERSION_GET_MINOR(v));
}

/* The entries every plugin must provide (SPEC.md HM-PLUGIN-5). */
static const char *missing_required_entry(const hm_abi_plugin *t) {
#define REQ(f) \
  if (!t->f) return #f;
  REQ(init)
  REQ(shutdown)
  REQ(device_count)
  REQ(device_describe)
  REQ(device_open)
  REQ(device_close)
  REQ(buffer_alloc)
  REQ(buffer_free)
  REQ(buffer_write)
  REQ(buffer_read)
  REQ(buffer_copy)
  REQ(program_create)
  REQ(program_free)
  REQ(program_run)
#undef REQ
  return NULL;
}

static hm_status verify_descriptor(const char *path, hm_loaded_plugin *p, uint32_t host_min, uint32_t host_max) {
  const hm_abi_plugin *t = &p->table;
  char a[16], b[16], c[16];
  /* HM-ABI-4: the negotiated version lies in both ranges. */
  if (t->abi_version < host_min || t->abi_version > host_max ||
      HM_ABI_VERSION_GET_MAJOR(t->abi_version) != HM_ABI_VERSION_GET_MAJOR(host_max)) {
    version_text(t->abi_version, a, sizeof a);
    version_text(host_min, b, sizeof b);
    version_text(host_max, c, sizeof c);
    return hm__fail(HM_STATUS_INCOMPATIBLE, "%s: the plugin negotiated ABI %s, outside the host's range %s-%s",
                    path, a, b, c);
  }
  if (t->plugin_min_abi > t->plugin_max_abi || t->abi_version < t->plugin_min_abi ||
      t->abi_version > t->plugin_max_abi) {
    version_text(t->abi_version, a, sizeof a);
    version_text(t->plugin_min_abi, b, sizeof b);
    version_text(t->plugin_max_abi, c, sizeof c);
    return hm__fail(HM_STATUS_INCOMPATIBLE,
                    "%s: the plugin negotiated ABI %s outside its own declared range %s-%s", path, a, b, c);
  }
  /* HM-PLUGIN-4: identity strings. */
  if (!t->name || !valid_backend_name(t->name))
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: the plugin name %s%s%s is not [a-z0-9_]{1,31}", path,
                    t->name ? "'" : "", t->name ? t->name : "(NULL)", t->name ? "'" : "");
  if (!t->vendor || !t->version || !t->build_id)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: the plugin '%s' leaves vendor, version or build_id NULL",
                    path, t->name);
  /* HM-PLUGIN-5: required entries. */
  const char *missing = missing_required_entry(t);
  if (missing)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: the plugin '%s' leaves the required entry '%s' NULL",
                    path, t->name, missing);
  /* HM-ABI-3: reserved fields are zero. */
  for (size_t i = 0; i < sizeof t->reserved / sizeof t->reserved[0]; i++)
    if (t->reserved[i])
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: the plugin '%s' sets reserved[%zu] (must be zero)",
                      path, t->name, i);
  return HM_OK;
}

hm_status hm_plugin_open(const char *path, const hm_plugin_open_options *options, hm_loaded_plugin **out) {
  if (!path || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_plugin_open: NULL path or output");
  hm_plugin_open_options o = options ? *options : hm_plugin_open_options_default();
  uint32_t host_min = o.host_min_abi ? o.host_min_abi : HOST_MIN_ABI;
  uint32_t host_max = o.host_max_abi ? o.host_max_abi : HOST_MAX_ABI;

  hm_loaded_plugin *p = hm__calloc(1, sizeof *p);
  if (!p) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory", path);
  p->path = hm__strdup(path);
  dlerror();
  /* HM-LOADER-1: RTLD_NOW surfaces unresolved symbols now; RTLD_LOCAL keeps
   * the plugin's dependencies out of the global namespace. */
  p->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!p->handle) {
    const char *e = dlerror();
    hm_status st = hm__fail(HM_STATUS_UNAVAILABLE, "%s: dlopen failed: %s", path, e ? e : "unknown error");
    hm_plugin_close(p);
    return st;
  }
  void *sym = dlsym(p->handle, HM_PLUGIN_QUERY_SYMBOL);
  hm_plugin_query_fn query = NULL;
  memcpy(&query, &sym, sizeof query); /* POSIX: dlsym results convert to function pointers */
  if (!query) {
    hm_status st = hm__fail(HM_STATUS_NOT_FOUND,
                            "%s: no '%s' symbol (not a Harmonics plugin, or built without exporting it)", path,
                            HM_PLUGIN_QUERY_SYMBOL);
    hm_plugin_close(p);
    return st;
  }
  hm_abi_query q;
  memset(&q, 0, sizeof q);
  q.struct_size = sizeof q;
  q.abi_version = HOST_MAX_ABI;
  q.host_min_abi = host_min;
  q.host_max_abi = host_max;
  memset(&p->table, 0, sizeof p->table);
  p->table.struct_size = sizeof p->table;
  int32_t qs = query(&q, &p->table);
  if (qs != HM_ABI_OK) {
    char b[16], c[16];
    version_text(host_min, b, sizeof b);
    version_text(host_max, c, sizeof c);
    hm_status st = qs == HM_ABI_STATUS_INCOMPATIBLE
                       ? hm__fail(HM_STATUS_INCOMPATIBLE,
                                  "%s: ABI version mismatch: the plugin declined the host's ABI range %s-%s", path,
                                  b, c)
                       : hm__fail(map_abi_status(qs), "%s: hm_plugin_query failed with %s", path,
                                  abi_status_name(qs));
    hm_plugin_close(p);
    return st;
  }
  if (p->table.struct_size != sizeof p->table) {
    hm_status st = hm__fail(HM_STATUS_INVALID_ARGUMENT,
                            "%s: hm_plugin_query changed the descriptor's struct_size (HM-ABI-2)", path);
    hm_plugin_close(p);
    return st;
  }
  hm_status vs = verify_descriptor(path, p, host_min, host_max);
  if (vs != HM_OK) {
    hm_plugin_close(p);
    return vs;
  }
  p->name = hm__strdup(p->table.name);
  hm__log(HM_LOG_LOADER, "%s: plugin '%s' %s (vendor %s), ABI %u.%u", path, p->name, p->table.version,
          p->table.vendor, HM_ABI_VERSION_GET_MAJOR(p->table.abi_version),
          HM_ABI_VERSION_GET_MINOR(p->table.abi_version));
  if (!o.skip_init) {
    memset(&p->host, 0, sizeof p->host);
    p->host.struct_size = sizeof p->host;
    p->host.abi_version = p->table.abi_version;
    p->host.host_ctx = p;
    p->host.report = host_report;
    hm_abi_init_args args;
    memset(&args, 0, sizeof args);
    args.struct_size = sizeof args;
    args.abi_version = p->table.abi_version;
    args.host = &p->host;
    args.options = o.init_options;
    args.n_options = o.n_init_options;
    plugin_message[0] = '\0';
    hm_abi_context *ctx = NULL;
    int32_t is = p->table.init(&args, &ctx);
    if (is != HM_ABI_OK || !ctx) {
      const char *msg = plugin_message[0] ? plugin_message : "(the plugin reported no message)";
      hm_status st = hm__fail(is == HM_ABI_OK ? HM_STATUS_INTERNAL : map_abi_status(is),
                              "%s: init failed: %s: %s", path, is == HM_ABI_OK ? "NULL context" : abi_status_name(is),
                              msg);
      plugin_message[0] = '\0';
      hm_plugin_close(p);
      return st;
    }
    p->ctx = ctx;
  }
  *out = p;
  return HM_OK;
}

void hm_plugin_close(hm_loaded_plugin *p) {
  if (!p) return;
  if (p->ctx) p->table.shutdown(p->ctx);
  if (p->handle) dlclose(p->handle);
  hm__free(p->name);
  hm__free(p->path);
  hm__free(p);
}

const hm_abi_plugin *hm_loaded_plugin_table(const hm_loaded_plugin *p) { return p ? &p->table : NULL; }
hm_abi_context *hm_loaded_plugin_context(const hm_loaded_plugin *p) { return p ? p->ctx : NULL; }
const char *hm_loaded_plugin_path(const hm_loaded_plugin *p) { return p ? p->path : NULL; }
void *hm_loaded_plugin_handle(const hm_loaded_plugin *p) { return p ? p->handle : NULL; }
