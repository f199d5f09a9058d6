/*
 * The plugin registry: discovery (DESIGN.md §7), the record of every plugin
 * considered with its outcome, and device selection. This is the only global
 * mutable state of the library; a mutex guards it.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/device.h"
#include "base/base.h"
#include "backend/backend.h"
#include "backend/config.h"

#ifndef HM_INSTALL_PLUGIN_DIR
#define HM_INSTALL_PLUGIN_DIR ""
#endif

typedef struct plugin_record {
  char *path;
  hm_loaded_plugin *plugin; /* NULL when skipped */
  hm_status status;
  char *reason;
  /* Identity from the query when it got that far (copied). */
  char *name, *vendor, *version, *build_id;
  uint32_t abi_version, min_abi, max_abi;
  uint32_t n_devices;
  hm_abi_device_desc *devices;
} plugin_record;

static struct {
  pthread_mutex_t lock;
  int initialized;
  hm_ptrvec records; /* plugin_record* */
  hm_config config;  /* backend preference, device options */
  char *search_path; /* for messages */
  int open_devices;
  int allow_insecure; /* load what other users could have written */
} reg = {PTHREAD_MUTEX_INITIALIZER, 0, {0}, {0}, NULL, 0, 0};

hm_registry_options hm_registry_options_default(void) {
  hm_registry_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.use_environment = 1;
  o.search_default_dir = 1;
  return o;
}

static void record_free(plugin_record *r) {
  if (!r) return;
  hm_plugin_close(r->plugin);
  hm__free(r->path);
  hm__free(r->reason);
  hm__free(r->name);
  hm__free(r->vendor);
  hm__free(r->version);
  hm__free(r->build_id);
  hm__free(r->devices);
  hm__free(r);
}

static plugin_record *find_loaded(const char *name) {
  for (size_t i = 0; i < reg.records.len; i++) {
    plugin_record *r = reg.records.items[i];
    if (r->plugin && r->name && strcmp(r->name, name) == 0) return r;
  }
  return NULL;
}

static int already_considered(const char *real) {
  for (size_t i = 0; i < reg.records.len; i++) {
    plugin_record *r = reg.records.items[i];
    char buf[PATH_MAX];
    if (realpath(r->path, buf) && strcmp(buf, real) == 0) return 1;
  }
  return 0;
}

static void skip(plugin_record *r, hm_status status, const char *reason) {
  r->status = status;
  hm__free(r->reason);
  r->reason = hm__strdup(reason);
  hm__log(HM_LOG_LOADER, "skipped %s: %s", r->path, reason);
}

/* Whether backend |name| is in the configured selection (a name, name:N, a
 * preference list of them, or none/"auto": every backend). Only selected
 * backends are initialised, so a run on the CPU never starts CUDA. */
static int selected(const char *name) {
  const char *sel = reg.config.backend;
  if (!sel || !*sel) return 1;
  for (const char *p = sel; *p;) {
    while (*p == ' ' || *p == ',') p++;
    size_t n = strcspn(p, ":,");
    if ((n == 4 && !strncmp(p, "auto", 4)) || (n == strlen(name) && !strncmp(p, name, n))) return 1;
    p += strcspn(p, ",");
  }
  return 0;
}

/* Why another user could have written |path| (a file or a directory, as
 * ssh judges key files), or NULL when only root and we could. */
static const char *insecure_reason(const struct stat *st, int is_dir) {
  if (st->st_uid != 0 && st->st_uid != (uid_t)geteuid()) return "it is owned by another user";
  if ((st->st_mode & S_IWOTH) && !(is_dir && (st->st_mode & S_ISVTX))) return "it is writable by every user";
  return NULL;
}

/* A new record for |path| that is skipped with |status| and |reason|. */
static void record_skipped(const char *path, hm_status status, const char *reason) {
  plugin_record *r = hm__calloc(1, sizeof *r);
  if (!r) return;
  r->path = hm__strdup(path);
  if (!r->path || hm__ptrvec_push(&reg.records, r)) {
    record_free(r);
    return;
  }
  skip(r, status, reason);
}

/* Refuses |path| (and the directory holding it) when another user could
 * have written it; records why. Returns nonzero when refused. */
static int refuse_insecure(const char *path, int is_dir) {
  if (reg.allow_insecure) return 0;
  struct stat st;
  if (stat(path, &st) != 0) return 0; /* the load reports it */
  const char *why = insecure_reason(&st, is_dir);
  char dir[PATH_MAX];
  if (!why && !is_dir) {
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    struct stat ds;
    if (stat(dir[0] ? dir : "/", &ds) == 0 && (why = insecure_reason(&ds, 1)) != NULL) {
      char msg[PATH_MAX * 2 + 200];
      snprintf(msg, sizeof msg,
               "%s: not loaded: its directory %s: %s, so anyone could replace the plugin "
               "(fix the permissions, or set HARMONICS_ALLOW_INSECURE_PLUGINS=1)",
               path, dir, why);
      record_skipped(path, HM_STATUS_FAILED_PRECONDITION, msg);
      return 1;
    }
  }
  if (!why) return 0;
  char msg[PATH_MAX + 300];
  snprintf(msg, sizeof msg, "%s: not %s: %s (fix the permissions, or set HARMONICS_ALLOW_INSECURE_PLUGINS=1)", path,
           is_dir ? "searched" : "loaded", why);
  record_skipped(path, HM_STATUS_FAILED_PRECONDITION, msg);
  return 1;
}

/* Runs what discovery will run — the query, and for a selected backend its
 * init and device enumeration — in a child process first, so a plugin that
 * crashes or hangs there is skipped with the signal instead of taking the
 * program down. Fills |why| and returns nonzero when the child did not
 * finish cleanly. (A failure the plugin reports is not judged here: the
 * real load reports it.) */
/* ===== The probe's verdict cache =====
 * One line per verdict, appended (one write, so concurrent processes do not
 * interleave): "<dev> <ino> <size> <mtime_ns> <selection> <ok|bad> <reason>".
 * A file whose identity, size or time changed is probed again, and so is
 * one under another backend selection (which decides what the child
 * initialises). */
static char *cache_path(void) {
  const char *dir = getenv("HARMONICS_CACHE_DIR"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  char *d = dir && *dir   ? hm__strdup(dir)
            : xdg && *xdg ? hm__asprintf("%s/harmonics", xdg)
            : home && *home ? hm__asprintf("%s/.cache/harmonics", home)
                            : NULL;
  if (!d) return NULL;
  if (mkdir(d, 0700) != 0 && errno != EEXIST) {
    hm__log(HM_LOG_LOADER, "no probe cache: %s: %s", d, strerror(errno));
    hm__free(d);
    return NULL;
  }
  char *p = hm__asprintf("%s/plugin-probes", d);
  hm__free(d);
  return p;
}

static void file_key(const struct stat *st, char *key, size_t cap) {
  char sel[96];
  snprintf(sel, sizeof sel, "%s", reg.config.backend && *reg.config.backend ? reg.config.backend : "*");
  for (char *c = sel; *c; c++)
    if (*c == ' ' || *c == '\n' || *c == '\t') *c = '_';
  snprintf(key, cap, "%llu %llu %lld %lld%09ld %s", (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
           (long long)st->st_size, (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec, sel);
}

/* The cached verdict for |key|: 1 ok, -1 bad (reason in |why|), 0 none. */
static int cache_lookup(const char *cache, const char *key, char *why, size_t cap) {
  FILE *f = cache ? fopen(cache, "r") : NULL;
  if (!f) return 0;
  char line[PATH_MAX + 512];
  size_t klen = strlen(key);
  int verdict = 0;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, klen) != 0 || line[klen] != ' ') continue;
    line[strcspn(line, "\n")] = '\0';
    if (!strncmp(line + klen + 1, "ok", 2)) verdict = 1;
    else if (!strncmp(line + klen + 1, "bad ", 4)) {
      verdict = -1;
      snprintf(why, cap, "%s (a cached verdict: the file has not changed since)", line + klen + 5);
    }
  }
  fclose(f);
  return verdict;
}

static void cache_store(const char *cache, const char *key, const char *why) {
  if (!cache) return;
  int fd = open(cache, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return;
  char line[PATH_MAX + 512];
  int n = snprintf(line, sizeof line, "%s %s%s\n", key, why ? "bad " : "ok", why ? why : "");
  if (n > 0 && (size_t)n < sizeof line && write(fd, line, (size_t)n) != n)
    hm__log(HM_LOG_LOADER, "probe cache %s: write failed", cache);
  close(fd);
}

static int probe_in_child(const char *path, char *why, size_t cap);

/* The probe, through the cache: a plugin is run in a child only the first
 * time it is seen (per file, size and modification time, and selection), so
 * start-up stays fast. */
static int probe_fails(const char *path, char *why, size_t cap) {
  struct stat st;
  if (stat(path, &st) != 0) return 0; /* the load reports it */
  char key[256];
  file_key(&st, key, sizeof key);
  char *cache = cache_path();
  int verdict = cache_lookup(cache, key, why, cap);
  if (verdict == 0) {
    verdict = probe_in_child(path, why, cap) ? -1 : 1;
    cache_store(cache, key, verdict < 0 ? why : NULL);
  }
  hm__free(cache);
  return verdict < 0;
}

static int probe_in_child(const char *path, char *why, size_t cap) {
  double timeout = 10.0;
  const char *t = getenv("HARMONICS_PROBE_TIMEOUT");
  if (t && atof(t) > 0) timeout = atof(t);
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    hm__log(HM_LOG_LOADER, "%s: cannot fork to probe it (%s); loading it directly", path, strerror(errno));
    return 0;
  }
  if (pid == 0) {
    /* A crash must end the child with its signal, not in a handler the
     * application (or a sanitizer) installed. */
    const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) signal(fatal[i], SIG_DFL);
    hm_plugin_open_options o = hm_plugin_open_options_default();
    o.skip_init = 1;
    hm_loaded_plugin *p = NULL;
    if (hm_plugin_open(path, &o, &p) != HM_OK) _exit(0);
    int init = selected(hm_loaded_plugin_table(p)->name);
    hm_plugin_close(p);
    if (init && hm_plugin_open(path, NULL, &p) == HM_OK) {
      const hm_abi_plugin *pt = hm_loaded_plugin_table(p);
      uint32_t n = pt->device_count(hm_loaded_plugin_context(p));
      for (uint32_t i = 0; i < n && i < 1024; i++) {
        hm_abi_device_desc d;
        memset(&d, 0, sizeof d);
        d.struct_size = sizeof d;
        (void)pt->device_describe(hm_loaded_plugin_context(p), i, &d);
      }
    }
    _exit(0); /* no destructors, no shutdown: the parent does it for real */
  }
  int status = 0;
  double waited = 0;
  pid_t done = 0;
  while ((done = waitpid(pid, &status, WNOHANG)) == 0 && waited < timeout) {
    usleep(5000);
    waited += 0.005;
  }
  if (done == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    snprintf(why, cap, "%s: hung for more than %.0f s during discovery (probed in a child process; not loaded)", path,
             timeout);
    return 1;
  }
  if (done < 0) return 0;
  if (WIFSIGNALED(status)) {
    snprintf(why, cap, "%s: crashed with signal %d (%s) during discovery (probed in a child process; not loaded)",
             path, WTERMSIG(status), strsignal(WTERMSIG(status)));
    return 1;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    snprintf(why, cap, "%s: exited the process with status %d during discovery (probed in a child; not loaded)",
             path, WEXITSTATUS(status));
    return 1;
  }
  return 0;
}

/* Loads one file and records the outcome. */
static void consider_file(const char *path) {
  char real[PATH_MAX];
  if (!realpath(path, real)) snprintf(real, sizeof real, "%s", path);
  if (already_considered(real)) return;
  if (refuse_insecure(path, 0)) return;
  char crashed[PATH_MAX + 300];
  if (probe_fails(path, crashed, sizeof crashed)) {
    record_skipped(path, HM_STATUS_UNAVAILABLE, crashed);
    return;
  }
  plugin_record *r = hm__calloc(1, sizeof *r);
  if (!r) return;
  r->path = hm__strdup(path);
  if (hm__ptrvec_push(&reg.records, r)) {
    record_free(r);
    return;
  }
  hm__log(HM_LOG_LOADER, "considering %s", path);
  /* Negotiate without init first, so a shadowed backend is never initialised. */
  hm_plugin_open_options o = hm_plugin_open_options_default();
  o.skip_init = 1;
  hm_loaded_plugin *probe = NULL;
  hm_status st = hm_plugin_open(path, &o, &probe);
  if (st != HM_OK) {
    skip(r, st, hm_last_error());
    return;
  }
  const hm_abi_plugin *t = hm_loaded_plugin_table(probe);
  r->name = hm__strdup(t->name);
  r->vendor = hm__strdup(t->vendor);
  r->version = hm__strdup(t->version);
  r->build_id = hm__strdup(t->build_id);
  r->abi_version = t->abi_version;
  r->min_abi = t->plugin_min_abi;
  r->max_abi = t->plugin_max_abi;
  hm_plugin_close(probe);
  plugin_record *prev = find_loaded(r->name);
  if (prev) {
    char msg[PATH_MAX + 128];
    snprintf(msg, sizeof msg, "shadowed: backend '%s' is already loaded from %s", r->name, prev->path);
    skip(r, HM_STATUS_FAILED_PRECONDITION, msg);
    return;
  }
  if (!selected(r->name)) {
    char msg[PATH_MAX + 300];
    snprintf(msg, sizeof msg, "%s: not initialised: the backend selection is '%s'", path, reg.config.backend);
    skip(r, HM_STATUS_UNAVAILABLE, msg);
    return;
  }
  hm_loaded_plugin *p = NULL;
  st = hm_plugin_open(path, NULL, &p);
  if (st != HM_OK) {
    skip(r, st, hm_last_error());
    return;
  }
  const hm_abi_plugin *pt = hm_loaded_plugin_table(p);
  hm_abi_context *ctx = hm_loaded_plugin_context(p);
  uint32_t n = pt->device_count(ctx);
  if (n > 1024) {
    char msg[128];
    snprintf(msg, sizeof msg, "device_count returned %u (more than 1024)", n);
    hm_plugin_close(p);
    skip(r, HM_STATUS_INVALID_ARGUMENT, msg);
    return;
  }
  r->devices = n ? hm__calloc(n, sizeof *r->devices) : NULL;
  if (n && !r->devices) {
    hm_plugin_close(p);
    skip(r, HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  for (uint32_t i = 0; i < n; i++) {
    hm_abi_device_desc *d = &r->devices[i];
    d->struct_size = sizeof *d;
    int32_t ds = pt->device_describe(ctx, i, d);
    hm_status s2 = hm_plugin_status(p, ds, "device_describe");
    if (s2 == HM_OK) s2 = hm__device_desc_check(r->name, i, d);
    if (s2 != HM_OK) {
      char msg[1200];
      snprintf(msg, sizeof msg, "device %u: %s", i, hm_last_error());
      hm_plugin_close(p);
      hm__free(r->devices);
      r->devices = NULL;
      skip(r, s2, msg);
      return;
    }
  }
  r->n_devices = n;
  r->plugin = p;
  r->status = HM_OK;
  hm__log(HM_LOG_LOADER, "loaded %s: backend '%s', %u device(s)", path, r->name, n);
}

static int has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Considers |path|: a plugin file, or a directory whose *.so files are
 * considered in name order (not recursively). */
/* |named|: the path was given explicitly (options, configuration,
 * HARMONICS_PLUGIN_PATH), so its absence is reported, not just logged. */
static void consider_path(const char *path, hm_strbuf *searched, const char *named) {
  struct stat stbuf;
  if (searched->len) hm__sb_append(searched, ":");
  hm__sb_append(searched, path);
  if (stat(path, &stbuf) != 0) {
    hm__log(HM_LOG_LOADER, "%s: %s", path, strerror(errno));
    if (named) {
      char msg[PATH_MAX + 200];
      snprintf(msg, sizeof msg, "%s: %s (named in %s)", path, strerror(errno), named);
      record_skipped(path, errno == ENOENT ? HM_STATUS_NOT_FOUND : HM_STATUS_IO_ERROR, msg);
    }
    return;
  }
  if (!S_ISDIR(stbuf.st_mode)) {
    consider_file(path);
    return;
  }
  if (refuse_insecure(path, 1)) return;
  DIR *d = opendir(path);
  if (!d) return;
  hm_ptrvec names = {0};
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || !has_suffix(e->d_name, ".so")) continue;
    char *full = hm__asprintf("%s/%s", path, e->d_name);
    if (full && hm__ptrvec_push(&names, full)) hm__free(full);
  }
  closedir(d);
  if (names.len) qsort(names.items, names.len, sizeof(void *), cmp_str);
  for (size_t i = 0; i < names.len; i++) {
    consider_file(names.items[i]);
    hm__free(names.items[i]);
  }
  hm__ptrvec_free(&names);
}

/* <libdir>/harmonics/plugins, where libdir holds this library. */
static const char library_anchor = 0; /* any object inside libharmonics */

static char *default_plugin_dir(void) {
  Dl_info info;
  if (!dladdr(&library_anchor, &info) || !info.dli_fname) return NULL;
  char real[PATH_MAX];
  if (!realpath(info.dli_fname, real)) return NULL;
  char *slash = strrchr(real, '/');
  if (!slash) return NULL;
  *slash = '\0';
  return hm__asprintf("%s/harmonics/plugins", real);
}

static hm_status registry_init_locked(const hm_registry_options *opts) {
  hm_registry_options o = opts ? *opts : hm_registry_options_default();
  memset(&reg.config, 0, sizeof reg.config);
  const char *cfg_path = o.config_file;
  if (!cfg_path && o.use_environment) cfg_path = getenv("HARMONICS_CONFIG");
  if (cfg_path && *cfg_path) HM_RETURN_IF_ERROR(hm__config_load(cfg_path, &reg.config));

  const char *debug = o.debug;
  if (!debug && o.use_environment) debug = getenv("HARMONICS_DEBUG");
  if (!debug) debug = reg.config.debug;
  if (debug) hm__log_set_mask(hm__log_parse_mask(debug));

  const char *backend = o.backend;
  if (!backend && o.use_environment) backend = getenv("HARMONICS_BACKEND");
  if (backend && *backend) {
    hm__free(reg.config.backend);
    reg.config.backend = hm__strdup(backend);
  }

  const char *insecure = o.use_environment ? getenv("HARMONICS_ALLOW_INSECURE_PLUGINS") : NULL;
  reg.allow_insecure = o.allow_insecure_plugins || (insecure && strcmp(insecure, "1") == 0);
  hm_strbuf searched;
  hm__sb_init(&searched);
  for (size_t i = 0; i < o.n_plugin_paths; i++)
    if (o.plugin_paths[i] && *o.plugin_paths[i]) consider_path(o.plugin_paths[i], &searched, "the registry options");
  for (size_t i = 0; i < reg.config.plugin_paths.len; i++)
    consider_path(reg.config.plugin_paths.items[i], &searched, cfg_path);
  const char *env_path = o.use_environment ? getenv("HARMONICS_PLUGIN_PATH") : NULL;
  if (env_path && *env_path) {
    char *copy = hm__strdup(env_path);
    for (char *tok = copy ? strtok(copy, ":") : NULL; tok; tok = strtok(NULL, ":"))
      if (*tok) consider_path(tok, &searched, "HARMONICS_PLUGIN_PATH");
    hm__free(copy);
  }
  if (o.search_default_dir) {
    char *dir = default_plugin_dir();
    if (dir) consider_path(dir, &searched, NULL);
    if (HM_INSTALL_PLUGIN_DIR[0] && (!dir || strcmp(dir, HM_INSTALL_PLUGIN_DIR) != 0))
      consider_path(HM_INSTALL_PLUGIN_DIR, &searched, NULL);
    hm__free(dir);
  }
  reg.search_path = hm__sb_take(&searched);
  reg.initialized = 1;
  return HM_OK;
}

static void registry_clear_locked(void) {
  for (size_t i = 0; i < reg.records.len; i++) record_free(reg.records.items[i]);
  hm__ptrvec_free(&reg.records);
  hm__config_free(&reg.config);
  hm__free(reg.search_path);
  reg.search_path = NULL;
  reg.initialized = 0;
}

hm_status hm_registry_init(const hm_registry_options *opts) {
  if (opts && opts->struct_size != sizeof *opts)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_registry_init: options.struct_size %zu, expected %zu",
                    opts->struct_size, sizeof *opts);
  pthread_mutex_lock(&reg.lock);
  hm_status st;
  if (reg.initialized) {
    st = hm__fail(HM_STATUS_FAILED_PRECONDITION,
                  "hm_registry_init: the registry is already initialised (call hm_registry_shutdown first)");
  } else {
    st = registry_init_locked(opts);
    if (st != HM_OK) registry_clear_locked();
  }
  pthread_mutex_unlock(&reg.lock);
  return st;
}

hm_status hm_registry_shutdown(void) {
  pthread_mutex_lock(&reg.lock);
  hm_status st = HM_OK;
  if (reg.open_devices > 0)
    st = hm__fail(HM_STATUS_FAILED_PRECONDITION, "hm_registry_shutdown: %d device(s) still open",
                  reg.open_devices);
  else
    registry_clear_locked();
  pthread_mutex_unlock(&reg.lock);
  return st;
}

/* Initialises with defaults on first use. Call with the lock held. */
static hm_status ensure_locked(void) {
  if (reg.initialized) return HM_OK;
  hm_status st = registry_init_locked(NULL);
  if (st != HM_OK) registry_clear_locked();
  return st;
}

size_t hm_plugin_count(void) {
  pthread_mutex_lock(&reg.lock);
  size_t n = ensure_locked() == HM_OK ? reg.records.len : 0;
  pthread_mutex_unlock(&reg.lock);
  return n;
}

const char *hm_plugin_search_path(void) {
  pthread_mutex_lock(&reg.lock);
  const char *s = ensure_locked() == HM_OK && reg.search_path ? reg.search_path : "";
  pthread_mutex_unlock(&reg.lock);
  return s;
}

hm_status hm_plugin_describe(size_t index, hm_plugin_report *out) {
  if (!out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_plugin_describe: NULL output");
  pthread_mutex_lock(&reg.lock);
  hm_status st = ensure_locked();
  if (st == HM_OK && index >= reg.records.len)
    st = hm__fail(HM_STATUS_OUT_OF_RANGE, "hm_plugin_describe: index %zu, %zu plugin(s) considered", index,
                  reg.records.len);
  if (st == HM_OK) {
    const plugin_record *r = reg.records.items[index];
    memset(out, 0, sizeof *out);
    out->path = r->path;
    out->loaded = r->plugin != NULL;
    out->status = r->status;
    out->reason = r->reason;
    out->name = r->name;
    out->vendor = r->vendor;
    out->version = r->version;
    out->build_id = r->build_id;
    out->abi_version = r->abi_version;
    out->plugin_min_abi = r->min_abi;
    out->plugin_max_abi = r->max_abi;
    out->device_count = r->n_devices;
  }
  pthread_mutex_unlock(&reg.lock);
  return st;
}

hm_status hm_plugin_device_describe(size_t index, size_t device, hm_abi_device_desc *out) {
  if (!out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_plugin_device_describe: NULL output");
  pthread_mutex_lock(&reg.lock);
  hm_status st = ensure_locked();
  if (st == HM_OK && index >= reg.records.len)
    st = hm__fail(HM_STATUS_OUT_OF_RANGE, "plugin index %zu out of range", index);
  if (st == HM_OK) {
    const plugin_record *r = reg.records.items[index];
    if (device >= r->n_devices)
      st = hm__fail(HM_STATUS_OUT_OF_RANGE, "plugin '%s' has %u device(s); %zu does not exist",
                    r->name ? r->name : r->path, r->n_devices, device);
    else
      *out = r->devices[device];
  }
  pthread_mutex_unlock(&reg.lock);
  return st;
}

/* ===== Selection ===== */

/* Why backend |name| cannot be used, as a status + message. */
static hm_status unavailable(const char *name) {
  for (size_t i = 0; i < reg.records.len; i++) {
    const plugin_record *r = reg.records.items[i];
    if (r->name && strcmp(r->name, name) == 0 && !r->plugin)
      return hm__fail(r->status == HM_STATUS_NOT_FOUND ? HM_STATUS_UNAVAILABLE : r->status,
                      "backend '%s' is not available: %s", name, r->reason ? r->reason : "skipped");
  }
  /* A file named hm_<name>.so that failed before its name was known. */
  char fname[96];
  snprintf(fname, sizeof fname, "hm_%s.so", name);
  for (size_t i = 0; i < reg.records.len; i++) {
    const plugin_record *r = reg.records.items[i];
    const char *base = strrchr(r->path, '/');
    base = base ? base + 1 : r->path;
    if (!r->plugin && strcmp(base, fname) == 0)
      return hm__fail(HM_STATUS_UNAVAILABLE, "backend '%s' is not available: %s", name,
                      r->reason ? r->reason : "skipped");
  }
  /* Say what there is, so a typo or a missing driver is plain. */
  char found[512] = "";
  size_t fl = 0;
  for (size_t i = 0; i < reg.records.len; i++) {
    const plugin_record *r = reg.records.items[i];
    if (r->name && fl < sizeof found)
      fl += (size_t)snprintf(found + fl, sizeof found - fl, "%s%s", fl ? ", " : "", r->name);
  }
  return hm__fail(HM_STATUS_NOT_FOUND,
                  "backend '%s' is not available: no plugin named '%s' was found; the plugins found are %s%s "
                  "(searched: %s)",
                  name, name, fl ? found : "none", fl ? " (harmonics plugins shows their state)" : "",
                  reg.search_path ? reg.search_path : "");
}

static hm_status parse_spec(const char *spec, char *name, size_t cap, long *index) {
  const char *colon = strchr(spec, ':');
  size_t n = colon ? (size_t)(colon - spec) : strlen(spec);
  if (n == 0 || n >= cap) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "invalid backend '%s'", spec);
  memcpy(name, spec, n);
  name[n] = '\0';
  *index = -1;
  if (colon) {
    char *end = NULL;
    errno = 0;
    long v = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || v < 0)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "invalid device index in backend '%s' (expected name:N)", spec);
    *index = v;
  }
  return HM_OK;
}

static int kind_rank(uint32_t kind) {
  return kind == HM_ABI_DEVICE_GPU ? 0 : kind == HM_ABI_DEVICE_ACCELERATOR ? 1 : 2;
}

/* Picks (record, device) for |spec|; the lock is held. */
static hm_status select_device(const char *spec, plugin_record **out_r, uint32_t *out_i) {
  if (spec && *spec && strcmp(spec, "auto") != 0) {
    char name[64];
    long index;
    HM_RETURN_IF_ERROR(parse_spec(spec, name, sizeof name, &index));
    plugin_record *r = find_loaded(name);
    if (!r) return unavailable(name);
    if (r->n_devices == 0)
      return hm__fail(HM_STATUS_UNAVAILABLE, "backend '%s' is not available: its plugin found no devices", name);
    if (index >= (long)r->n_devices)
      return hm__fail(HM_STATUS_NOT_FOUND, "backend '%s' has %u device(s); device %ld does not exist", name,
                      r->n_devices, index);
    *out_r = r;
    *out_i = index < 0 ? 0 : (uint32_t)index;
    return HM_OK;
  }
  if (reg.config.backend && *reg.config.backend) {
    /* The preference list: the first entry that works, else every reason. */
    char *copy = hm__strdup(reg.config.backend);
    if (!copy) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    hm_strbuf why;
    hm__sb_init(&why);
    hm_status last = HM_STATUS_UNAVAILABLE;
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
      while (*tok == ' ') tok++;
      if (!*tok) continue;
      hm_status st = select_device(tok, out_r, out_i);
      if (st == HM_OK) {
        hm__free(copy);
        hm__sb_free(&why);
        return HM_OK;
      }
      last = st;
      hm__sb_printf(&why, "%s%s", why.len ? "; " : "", hm_last_error());
    }
    hm_status st = hm__fail(last, "no backend of the preference list '%s' is available: %s", reg.config.backend,
                            why.data ? why.data : "");
    hm__free(copy);
    hm__sb_free(&why);
    return st;
  }
  plugin_record *best = NULL;
  uint32_t best_i = 0;
  for (size_t i = 0; i < reg.records.len; i++) {
    plugin_record *r = reg.records.items[i];
    if (!r->plugin) continue;
    for (uint32_t d = 0; d < r->n_devices; d++)
      if (!best || kind_rank(r->devices[d].kind) < kind_rank(best->devices[best_i].kind)) {
        best = r;
        best_i = d;
      }
  }
  if (!best)
    return hm__fail(HM_STATUS_UNAVAILABLE, "no backend is available: no plugin with a device was loaded (searched: %s)",
                    reg.search_path ? reg.search_path : "");
  *out_r = best;
  *out_i = best_i;
  return HM_OK;
}

hm_device_options hm_device_options_default(void) {
  hm_device_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  return o;
}

hm_status hm_device_open(const char *spec, const hm_device_options *options, hm_device **out) {
  if (!out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_device_open: NULL output");
  if (options && options->struct_size != sizeof *options)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_device_open: options.struct_size %zu, expected %zu",
                    options->struct_size, sizeof *options);
  hm_device_options o = options ? *options : hm_device_options_default();
  pthread_mutex_lock(&reg.lock);
  hm_status st = ensure_locked();
  plugin_record *r = NULL;
  uint32_t index = 0;
  if (st == HM_OK) st = select_device(spec, &r, &index);
  /* Options: the configuration's "<backend>.key = value" lines, then the
   * caller's "key=value" strings, then threads. */
  hm_abi_option *kv = NULL;
  char **owned = NULL; /* the caller's strings, split */
  uint32_t n = 0, n_owned = 0;
  char threads[24];
  if (st == HM_OK) {
    size_t cap = reg.config.n_device_options + o.n_options + 1;
    kv = hm__calloc(cap, sizeof *kv);
    owned = hm__calloc(o.n_options ? o.n_options : 1, sizeof *owned);
    if (!kv || !owned) st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  for (size_t i = 0; st == HM_OK && i < reg.config.n_device_options; i++) {
    const hm_config_option *c = &reg.config.device_options[i];
    if (strcmp(c->backend, r->name) == 0) kv[n++] = (hm_abi_option){c->key, c->value};
  }
  for (size_t i = 0; st == HM_OK && i < o.n_options; i++) {
    const char *item = o.options[i];
    const char *eq = item ? strchr(item, '=') : NULL;
    if (!eq) {
      st = hm__fail(HM_STATUS_INVALID_ARGUMENT, "device option '%s' is not key=value", item ? item : "(NULL)");
      break;
    }
    char *copy = hm__strdup(item);
    if (!copy) {
      st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      break;
    }
    copy[eq - item] = '\0';
    owned[n_owned++] = copy;
    kv[n++] = (hm_abi_option){copy, copy + (eq - item) + 1};
  }
  if (st == HM_OK && o.threads) {
    snprintf(threads, sizeof threads, "%u", o.threads);
    kv[n++] = (hm_abi_option){"threads", threads};
  }
  if (st == HM_OK) {
    st = hm__device_create(r->plugin, r->name, index, &r->devices[index], kv, n, out);
    if (st == HM_OK) reg.open_devices++;
  }
  for (uint32_t i = 0; i < n_owned; i++) hm__free(owned[i]);
  hm__free(owned);
  hm__free(kv);
  pthread_mutex_unlock(&reg.lock);
  return st;
}

void hm_device_close(hm_device *device) {
  if (!device) return;
  hm__device_destroy(device);
  pthread_mutex_lock(&reg.lock);
  reg.open_devices--;
  pthread_mutex_unlock(&reg.lock);
}
