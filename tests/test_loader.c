/*
 * The plugin loader and registry: every broken plugin is skipped with its
 * exact reason while the CPU plugin keeps working in the same process;
 * negotiation across host versions; selection errors; configuration files.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harmonics/harmonics.h"
#include "harmonics/plugin_loader.h"
#include "hm_test.h"

static const char *tp_dir = HM_TEST_PLUGIN_DIR;

static hm_status init_with_test_plugins(const char *backend) {
  const char *paths[] = {tp_dir};
  hm_registry_options o = hm_registry_options_default();
  o.plugin_paths = paths;
  o.n_plugin_paths = 1;
  o.use_environment = 0;
  o.backend = backend;
  return hm_registry_init(&o);
}

static int find_report(const char *file, hm_plugin_report *out) {
  size_t n = hm_plugin_count();
  for (size_t i = 0; i < n; i++) {
    if (hm_plugin_describe(i, out) != HM_OK) continue;
    const char *base = strrchr(out->path, '/');
    if (base && strcmp(base + 1, file) == 0) return 1;
  }
  return 0;
}

static void expect_skipped(const char *file, hm_status status, const char *needle) {
  hm_plugin_report r;
  int found = find_report(file, &r);
  HM_CHECK_MSG(found, "%s was not considered", file);
  if (!found) return;
  HM_CHECK_MSG(!r.loaded, "%s loaded but should have been skipped", file);
  HM_CHECK_MSG(r.status == status, "%s: status %s, expected %s", file, hm_status_name(r.status), hm_status_name(status));
  HM_CHECK_STR_CONTAINS(r.reason, needle);
  HM_CHECK_STR_CONTAINS(r.reason, file); /* the reason names the file */
}

/* Fills 8 floats with 2.5 on |dev| through a one-op program and reads them. */
static void check_device_runs_fill(hm_device *dev) {
  hm_abi_buffer *b = NULL;
  HM_CHECK_OK(hm_device_buffer_alloc(dev, 32, &b));
  hm_abi_op op = hm_op_init(HM_ABI_OP_FILL);
  op.dims[0] = 8;
  op.out[0].buffer = b;
  op.params[0] = 2.5f;
  hm_abi_program *p = NULL;
  HM_CHECK_OK(hm_device_program_create(dev, &op, 1, 0, &p));
  HM_CHECK_OK(hm_device_program_run(dev, p, NULL, 0));
  float out[8] = {0};
  HM_CHECK_OK(hm_device_buffer_read(dev, b, 0, out, sizeof out));
  for (int i = 0; i < 8; i++) HM_CHECK_NEAR(out[i], 2.5, 0.0);
  hm_device_program_free(dev, p);
  hm_device_buffer_free(dev, b);
}

static void loader_skips_each_broken_plugin_with_reason(void) {
  HM_CHECK_OK(init_with_test_plugins(NULL));
  expect_skipped("hm_tp_noquery.so", HM_STATUS_NOT_FOUND, "no 'hm_plugin_query' symbol");
  expect_skipped("hm_tp_wrong_major.so", HM_STATUS_INCOMPATIBLE, "ABI version mismatch");
  expect_skipped("hm_tp_null_entry.so", HM_STATUS_INVALID_ARGUMENT, "required entry 'program_run' NULL");
  expect_skipped("hm_tp_init_fail.so", HM_STATUS_UNAVAILABLE, "init failed: UNAVAILABLE");
  expect_skipped("hm_tp_init_fail.so", HM_STATUS_UNAVAILABLE, "simulated device failure");
  expect_skipped("hm_tp_reserved.so", HM_STATUS_INVALID_ARGUMENT, "reserved[3]");
  expect_skipped("hm_tp_missing_dep.so", HM_STATUS_UNAVAILABLE, "dlopen failed");
  expect_skipped("hm_tp_missing_dep.so", HM_STATUS_UNAVAILABLE, "libhm_test_missing_dep.so");

  hm_plugin_report r;
  HM_CHECK(find_report("hm_tp_newer_minor.so", &r));
  HM_CHECK(r.loaded);
  HM_CHECK_EQ(r.abi_version, HM_ABI_MAKE_VERSION(1, 1)); /* min(host 1.1, plugin 1.7) */
  HM_CHECK_EQ(r.plugin_max_abi, HM_ABI_MAKE_VERSION(1, 7));

  HM_CHECK(find_report("hm_cpu.so", &r));
  HM_CHECK(r.loaded);
  HM_CHECK_EQ(r.device_count, 1);
  HM_CHECK(r.name && strcmp(r.name, "cpu") == 0);

  /* The CPU plugin keeps working in the same process. */
  hm_device *dev = NULL;
  HM_CHECK_OK(hm_device_open("cpu", NULL, &dev));
  if (dev) {
    HM_CHECK(strcmp(hm_device_backend(dev), "cpu") == 0);
    check_device_runs_fill(dev);
    hm_device_close(dev);
  }
  /* So does the working test plugin. */
  HM_CHECK_OK(hm_device_open("tp_newer_minor", NULL, &dev));
  if (dev) {
    check_device_runs_fill(dev);
    hm_device_close(dev);
  }
  HM_CHECK_OK(hm_registry_shutdown());
}

static void selection_errors_name_the_reason(void) {
  HM_CHECK_OK(init_with_test_plugins(NULL));
  hm_device *dev = NULL;
  HM_CHECK_EQ(hm_device_open("vulkan_nonexistent", NULL, &dev), HM_STATUS_NOT_FOUND);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "no plugin named 'vulkan_nonexistent'");
  HM_CHECK(dev == NULL);
  HM_CHECK_EQ(hm_device_open("tp_init_fail", NULL, &dev), HM_STATUS_UNAVAILABLE);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "simulated device failure");
  HM_CHECK_EQ(hm_device_open("tp_missing_dep", NULL, &dev), HM_STATUS_UNAVAILABLE);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "libhm_test_missing_dep.so");
  HM_CHECK_EQ(hm_device_open("cpu:3", NULL, &dev), HM_STATUS_NOT_FOUND);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "device 3 does not exist");
  HM_CHECK_EQ(hm_device_open("cpu:x", NULL, &dev), HM_STATUS_INVALID_ARGUMENT);
  /* Default selection prefers the accelerator over the CPU. */
  HM_CHECK_OK(hm_device_open(NULL, NULL, &dev));
  if (dev) {
    HM_CHECK_MSG(strcmp(hm_device_backend(dev), "cpu") != 0, "picked %s", hm_device_backend(dev));
    hm_device_close(dev);
  }
  HM_CHECK_OK(hm_registry_shutdown());
}

static void preference_list_picks_first_available(void) {
  HM_CHECK_OK(init_with_test_plugins("nosuch, tp_init_fail ,cpu"));
  hm_device *dev = NULL;
  HM_CHECK_OK(hm_device_open(NULL, NULL, &dev));
  if (dev) {
    HM_CHECK(strcmp(hm_device_backend(dev), "cpu") == 0);
    hm_device_close(dev);
  }
  HM_CHECK_OK(hm_registry_shutdown());

  HM_CHECK_OK(init_with_test_plugins("nosuch,tp_init_fail"));
  HM_CHECK(hm_device_open("auto", NULL, &dev) != HM_OK);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "no backend of the preference list");
  HM_CHECK_STR_CONTAINS(hm_last_error(), "nosuch");
  HM_CHECK_STR_CONTAINS(hm_last_error(), "simulated device failure");
  HM_CHECK_OK(hm_registry_shutdown());
}

/* Only the selected backends are initialised: a CPU run never starts the
 * others (tp_init_fail's init would fail; it is not called at all). */
static void only_selected_backends_are_initialised(void) {
  HM_CHECK_OK(init_with_test_plugins("cpu"));
  expect_skipped("hm_tp_init_fail.so", HM_STATUS_UNAVAILABLE, "not initialised: the backend selection is 'cpu'");
  expect_skipped("hm_tp_ok.so", HM_STATUS_UNAVAILABLE, "not initialised: the backend selection is 'cpu'");
  hm_device *dev = NULL;
  HM_CHECK_OK(hm_device_open(NULL, NULL, &dev));
  if (dev) {
    HM_CHECK(strcmp(hm_device_backend(dev), "cpu") == 0);
    hm_device_close(dev);
  }
  HM_CHECK_EQ(hm_device_open("tp_ok", NULL, &dev), HM_STATUS_UNAVAILABLE);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "backend 'tp_ok' is not available: ");
  HM_CHECK_STR_CONTAINS(hm_last_error(), "hm_tp_ok.so: not initialised: the backend selection is 'cpu'");
  HM_CHECK_OK(hm_registry_shutdown());
  /* A preference list initialises each of its entries. */
  HM_CHECK_OK(init_with_test_plugins("tp_ok:0, cpu"));
  hm_plugin_report r;
  HM_CHECK(find_report("hm_tp_ok.so", &r) && r.loaded);
  expect_skipped("hm_tp_init_fail.so", HM_STATUS_UNAVAILABLE, "not initialised");
  HM_CHECK_OK(hm_registry_shutdown());
}

/* A plugin that crashes in its query or hangs in its init is probed in a
 * child process: the program survives, the plugin is skipped with the
 * signal or the timeout, the others load, and the verdict is cached per
 * file (the second start does not run the plugin at all). */
#if defined(__SANITIZE_ADDRESS__)
/* AddressSanitizer catches the SIGSEGV in the child and exits it with 1. */
#define CRASH_REASON "exited the process with status 1 during discovery"
#else
#define CRASH_REASON "crashed with signal 11 (Segmentation fault) during discovery"
#endif

static void crashing_and_hanging_plugins_are_skipped(void) {
  char cache[] = "/tmp/hm_test_probe_XXXXXX";
  HM_CHECK(mkdtemp(cache) != NULL);
  const char *saved = getenv("HARMONICS_CACHE_DIR");
  char *old = saved ? strdup(saved) : NULL;
  setenv("HARMONICS_CACHE_DIR", cache, 1);
  setenv("HARMONICS_PROBE_TIMEOUT", "1", 1);
  for (int round = 0; round < 2; round++) {
    HM_CHECK_OK(init_with_test_plugins(NULL));
    expect_skipped("hm_tp_query_crash.so", HM_STATUS_UNAVAILABLE, CRASH_REASON);
    expect_skipped("hm_tp_init_hang.so", HM_STATUS_UNAVAILABLE, "hung for more than 1 s during discovery");
    hm_plugin_report r;
    HM_CHECK(find_report("hm_tp_ok.so", &r) && r.loaded);
    if (round == 1) {
      HM_CHECK(find_report("hm_tp_query_crash.so", &r));
      HM_CHECK_STR_CONTAINS(r.reason, "a cached verdict");
    }
    HM_CHECK_OK(hm_registry_shutdown());
  }
  /* Selecting the CPU: the crashing query is still caught (queries always run). */
  HM_CHECK_OK(init_with_test_plugins("cpu"));
  expect_skipped("hm_tp_query_crash.so", HM_STATUS_UNAVAILABLE, CRASH_REASON);
  hm_device *dev = NULL;
  HM_CHECK_OK(hm_device_open(NULL, NULL, &dev));
  if (dev) hm_device_close(dev);
  HM_CHECK_OK(hm_registry_shutdown());
  if (old) setenv("HARMONICS_CACHE_DIR", old, 1);
  else unsetenv("HARMONICS_CACHE_DIR");
  free(old);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", cache);
  HM_CHECK_EQ(system(cmd), 0);
}

static void negotiation_across_host_versions(void) {
  hm_plugin_open_options o = hm_plugin_open_options_default();
  hm_loaded_plugin *p = NULL;
  /* A newer host (1.0-1.5) gets 1.1 from a 1.1 plugin. */
  o.host_min_abi = HM_ABI_MAKE_VERSION(1, 0);
  o.host_max_abi = HM_ABI_MAKE_VERSION(1, 5);
  HM_CHECK_OK(hm_plugin_open(HM_CPU_PLUGIN, &o, &p));
  if (p) HM_CHECK_EQ(hm_loaded_plugin_table(p)->abi_version, HM_ABI_MAKE_VERSION(1, 1));
  hm_plugin_close(p);
  p = NULL;
  /* An older host (1.0 only) gets 1.0 from it. */
  o.host_max_abi = HM_ABI_MAKE_VERSION(1, 0);
  HM_CHECK_OK(hm_plugin_open(HM_CPU_PLUGIN, &o, &p));
  if (p) HM_CHECK_EQ(hm_loaded_plugin_table(p)->abi_version, HM_ABI_MAKE_VERSION(1, 0));
  hm_plugin_close(p);
  p = NULL;
  o.host_max_abi = HM_ABI_MAKE_VERSION(1, 5);
  /* A host that requires at least 1.2 is declined by a 1.1 plugin. */
  o.host_min_abi = HM_ABI_MAKE_VERSION(1, 2);
  HM_CHECK_EQ(hm_plugin_open(HM_CPU_PLUGIN, &o, &p), HM_STATUS_INCOMPATIBLE);
  HM_CHECK(p == NULL);
  /* Another major is declined. */
  o.host_min_abi = HM_ABI_MAKE_VERSION(2, 0);
  o.host_max_abi = HM_ABI_MAKE_VERSION(2, 3);
  HM_CHECK_EQ(hm_plugin_open(HM_CPU_PLUGIN, &o, &p), HM_STATUS_INCOMPATIBLE);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "2.0-2.3");
  /* A plugin with a newer minor serves whatever the host understands. */
  char path[1024];
  snprintf(path, sizeof path, "%s/hm_tp_newer_minor.so", tp_dir);
  o.host_min_abi = HM_ABI_MAKE_VERSION(1, 0);
  o.host_max_abi = HM_ABI_MAKE_VERSION(1, 5);
  o.skip_init = 1;
  HM_CHECK_OK(hm_plugin_open(path, &o, &p));
  if (p) HM_CHECK_EQ(hm_loaded_plugin_table(p)->abi_version, HM_ABI_MAKE_VERSION(1, 5));
  hm_plugin_close(p);
}

static void unknown_plugin_option_is_an_error(void) {
  hm_plugin_open_options o = hm_plugin_open_options_default();
  hm_abi_option bad = {"thraeds", "2"};
  o.init_options = &bad;
  o.n_init_options = 1;
  hm_loaded_plugin *p = NULL;
  HM_CHECK_EQ(hm_plugin_open(HM_CPU_PLUGIN, &o, &p), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "unknown option 'thraeds'");
  hm_abi_option zero = {"threads", "0"};
  o.init_options = &zero;
  HM_CHECK_EQ(hm_plugin_open(HM_CPU_PLUGIN, &o, &p), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK(p == NULL);
}

static char *write_temp(const char *text) {
  char *path = strdup("/tmp/hm_test_conf_XXXXXX");
  int fd = mkstemp(path);
  if (fd < 0) return path;
  FILE *f = fdopen(fd, "w");
  fputs(text, f);
  fclose(f);
  return path;
}

/* Registry over exactly |path| (a file or a directory). */
static hm_status init_with_path(const char *path, const char *config, int allow_insecure) {
  const char *paths[] = {path};
  hm_registry_options o = hm_registry_options_default();
  o.plugin_paths = path ? paths : NULL;
  o.n_plugin_paths = path ? 1 : 0;
  o.use_environment = 0;
  o.search_default_dir = 0;
  o.config_file = config;
  o.allow_insecure_plugins = allow_insecure;
  return hm_registry_init(&o);
}

static int copy_file(const char *from, const char *to) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
  return system(cmd);
}

/* Plugins another user could have written are refused with the reason
 * (as ssh refuses such key files) unless allowed; a plugin the
 * configuration names that does not exist is reported. */
static void insecure_and_missing_plugins_are_reported(void) {
  char dir[] = "/tmp/hm_test_perm_XXXXXX";
  HM_CHECK(mkdtemp(dir) != NULL);
  chmod(dir, 0755);
  char src[1024], dst[1100];
  snprintf(src, sizeof src, "%s/hm_tp_ok.so", tp_dir);
  snprintf(dst, sizeof dst, "%s/hm_tp_ok.so", dir);
  HM_CHECK_EQ(copy_file(src, dst), 0);
  chmod(dst, 0757);
  HM_CHECK_OK(init_with_path(dst, NULL, 0));
  expect_skipped("hm_tp_ok.so", HM_STATUS_FAILED_PRECONDITION, "not loaded: it is writable by every user");
  HM_CHECK_OK(hm_registry_shutdown());
  HM_CHECK_OK(init_with_path(dst, NULL, 1));
  hm_plugin_report r;
  HM_CHECK(find_report("hm_tp_ok.so", &r) && r.loaded);
  HM_CHECK_OK(hm_registry_shutdown());
  /* A safe file in a directory anyone can write (no sticky bit). */
  chmod(dst, 0755);
  chmod(dir, 0777);
  HM_CHECK_OK(init_with_path(dst, NULL, 0));
  expect_skipped("hm_tp_ok.so", HM_STATUS_FAILED_PRECONDITION, "its directory");
  HM_CHECK_OK(hm_registry_shutdown());
  HM_CHECK_OK(init_with_path(dir, NULL, 0)); /* ... and as a search directory */
  HM_CHECK_EQ(hm_plugin_count(), 1);
  HM_CHECK(hm_plugin_describe(0, &r) == HM_OK && !r.loaded);
  HM_CHECK_STR_CONTAINS(r.reason, "not searched: it is writable by every user");
  HM_CHECK_OK(hm_registry_shutdown());
  chmod(dir, 0755);
  if (geteuid() == 0) { /* a file owned by another user */
    HM_CHECK_EQ(chown(dst, 65534, 65534), 0);
    HM_CHECK_OK(init_with_path(dst, NULL, 0));
    expect_skipped("hm_tp_ok.so", HM_STATUS_FAILED_PRECONDITION, "it is owned by another user");
    HM_CHECK_OK(hm_registry_shutdown());
  }
  /* plugin = PATH in the configuration, and the file is not there. */
  char *conf = write_temp("plugin = /nonexistent/hm_vendor.so\n");
  HM_CHECK_OK(init_with_path(NULL, conf, 0));
  HM_CHECK(find_report("hm_vendor.so", &r) && !r.loaded);
  HM_CHECK_EQ(r.status, HM_STATUS_NOT_FOUND);
  HM_CHECK_STR_CONTAINS(r.reason, "/nonexistent/hm_vendor.so: No such file or directory (named in ");
  HM_CHECK_OK(hm_registry_shutdown());
  unlink(conf);
  free(conf);
  unlink(dst);
  rmdir(dir);
}

static void config_file_is_read_and_validated(void) {
  char *good = write_temp("# comment\nbackend = nosuch,cpu   # trailing comment\ncpu.threads = 1\n");
  hm_registry_options o = hm_registry_options_default();
  o.use_environment = 0;
  o.config_file = good;
  HM_CHECK_OK(hm_registry_init(&o));
  hm_device *dev = NULL;
  HM_CHECK_OK(hm_device_open(NULL, NULL, &dev));
  if (dev) {
    HM_CHECK(strcmp(hm_device_backend(dev), "cpu") == 0);
    hm_device_close(dev);
  }
  HM_CHECK_OK(hm_registry_shutdown());
  unlink(good);
  free(good);

  char *bad = write_temp("backend = cpu\nbakcend = cuda\n");
  o.config_file = bad;
  HM_CHECK_EQ(hm_registry_init(&o), HM_STATUS_PARSE_ERROR);
  HM_CHECK_STR_CONTAINS(hm_last_error(), ":2: unknown key 'bakcend'");
  unlink(bad);
  free(bad);

  char *badopt = write_temp("cpu.threds = 2\n");
  o.config_file = badopt;
  HM_CHECK_OK(hm_registry_init(&o));
  HM_CHECK_EQ(hm_device_open("cpu", NULL, &dev), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "unknown device option 'threds'");
  HM_CHECK_OK(hm_registry_shutdown());
  unlink(badopt);
  free(badopt);

  o.config_file = "/nonexistent/harmonics.conf";
  HM_CHECK_EQ(hm_registry_init(&o), HM_STATUS_NOT_FOUND);
}

static void registry_load_unload_cycles(void) {
  for (int i = 0; i < 20; i++) {
    HM_CHECK_OK(init_with_test_plugins(NULL));
    HM_CHECK(hm_plugin_count() >= 9);
    HM_CHECK_OK(hm_registry_shutdown());
  }
  HM_CHECK_OK(init_with_test_plugins(NULL));
  HM_CHECK_EQ(init_with_test_plugins(NULL), HM_STATUS_FAILED_PRECONDITION);
  hm_device *dev = NULL;
  HM_CHECK_OK(hm_device_open("cpu", NULL, &dev));
  HM_CHECK_EQ(hm_registry_shutdown(), HM_STATUS_FAILED_PRECONDITION);
  hm_device_close(dev);
  HM_CHECK_OK(hm_registry_shutdown());
}

static const hm_test_case cases[] = {
    HM_TEST_CASE(loader_skips_each_broken_plugin_with_reason),
    HM_TEST_CASE(selection_errors_name_the_reason),
    HM_TEST_CASE(preference_list_picks_first_available),
    HM_TEST_CASE(only_selected_backends_are_initialised),
    HM_TEST_CASE(insecure_and_missing_plugins_are_reported),
    HM_TEST_CASE(crashing_and_hanging_plugins_are_skipped),
    HM_TEST_CASE(negotiation_across_host_versions),
    HM_TEST_CASE(unknown_plugin_option_is_an_error),
    HM_TEST_CASE(config_file_is_read_and_validated),
    HM_TEST_CASE(registry_load_unload_cycles),
};
HM_TEST_MAIN(cases)
