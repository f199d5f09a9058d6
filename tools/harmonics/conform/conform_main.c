/*
 * harmonics conform PLUGIN.so: runs the suite group by group, each group in
 * a child process with a per-test timeout, and reports per group and per
 * test, as text and as JSON. Exit status 0 only when conformant (no FAIL,
 * CRASH or TIMEOUT).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../cli.h"
#include "conform.h"

#define DEFAULT_SEED 20261128u

const char *conform_status_name(conform_status s) {
  static const char *names[] = {"PASS", "FAIL", "NOT_SUPPORTED", "CRASH", "TIMEOUT"};
  return s < CONFORM_STATUS_COUNT ? names[s] : "?";
}

void conform_add(conform_suite *s, const char *group, conform_fn fn, const void *arg, int needs_device,
                 const char *fmt, ...) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 256;
    conform_test *t = realloc(s->tests, cap * sizeof *t);
    if (!t) return;
    s->tests = t;
    s->cap = cap;
  }
  conform_test *t = &s->tests[s->n++];
  memset(t, 0, sizeof *t);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->name, sizeof t->name, fmt, ap);
  va_end(ap);
  t->group = group;
  t->fn = fn;
  t->arg = arg;
  t->needs_device = needs_device;
}

void conform_build_tests(conform_suite *s) {
  conform_add_abi_tests(s);
  conform_add_kernel_tests(s);
  conform_add_window_tests(s);
  conform_add_program_tests(s);
  conform_add_robustness_tests(s);
  /* Keep each group contiguous (in order of first appearance): one child per group. */
  conform_test *sorted = malloc(s->n * sizeof *sorted);
  size_t k = 0;
  for (size_t i = 0; sorted && i < s->n; i++) {
    int seen = 0;
    for (size_t j = 0; j < i && !seen; j++) seen = !strcmp(s->tests[j].group, s->tests[i].group);
    if (seen) continue;
    for (size_t j = i; j < s->n; j++)
      if (!strcmp(s->tests[j].group, s->tests[i].group)) sorted[k++] = s->tests[j];
  }
  if (sorted) {
    memcpy(s->tests, sorted, s->n * sizeof *sorted);
    free(sorted);
  }
}

void conform_fail(conform_result *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->detail, sizeof r->detail, fmt, ap);
  va_end(ap);
  r->status = CONFORM_FAIL;
}

void conform_not_supported(conform_result *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->detail, sizeof r->detail, fmt, ap);
  va_end(ap);
  r->status = CONFORM_NOT_SUPPORTED;
}

/* ===== The child ===== */

static void emit(int fd, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
  for (char *p = buf; p < buf + n - 1; p++)
    if (*p == '\n') *p = ' '; /* one line per message */
  ssize_t off = 0;
  while (off < n) {
    ssize_t w = write(fd, buf + off, (size_t)(n - off));
    if (w <= 0) return;
    off += w;
  }
}

static int open_device(conform_ctx *c, char *err, size_t cap) {
  hm_status st = hm_plugin_open(c->path, NULL, &c->plugin);
  if (st != HM_OK) {
    snprintf(err, cap, "the plugin did not load: %s", hm_last_error());
    return 1;
  }
  c->t = hm_loaded_plugin_table(c->plugin);
  c->pctx = hm_loaded_plugin_context(c->plugin);
  uint32_t n = c->t->device_count(c->pctx);
  if (c->device_index >= n) {
    snprintf(err, cap, "the plugin has %u device(s); --device %u does not exist", n, c->device_index);
    return 1;
  }
  memset(&c->desc, 0, sizeof c->desc);
  c->desc.struct_size = sizeof c->desc;
  if (c->t->device_describe(c->pctx, c->device_index, &c->desc) != HM_ABI_OK) {
    snprintf(err, cap, "device_describe(%u) failed: %s", c->device_index, hm_plugin_last_message());
    return 1;
  }
  if (c->t->device_open(c->pctx, c->device_index, c->options, c->n_options, &c->dev) != HM_ABI_OK || !c->dev) {
    snprintf(err, cap, "device_open(%u) failed: %s", c->device_index, hm_plugin_last_message());
    return 1;
  }
  return 0;
}

static void child_main(conform_ctx base, const conform_suite *s, size_t start, size_t end, int fd) {
  int needs = 0;
  for (size_t i = start; i < end; i++) needs |= s->tests[i].needs_device;
  conform_ctx c = base;
  char err[600] = "";
  int broken = needs && open_device(&c, err, sizeof err);
  for (size_t i = start; i < end; i++) {
    const conform_test *t = &s->tests[i];
    emit(fd, "S %zu\n", i);
    conform_result r;
    memset(&r, 0, sizeof r);
    if (t->needs_device && broken) conform_fail(&r, "%s", err);
    else t->fn(&c, t->arg, &r);
    emit(fd, "R %zu %d %s\n", i, (int)r.status, r.detail);
  }
  if (c.dev) c.t->device_close(c.dev);
  hm_plugin_close(c.plugin);
  _exit(0);
}

/* ===== The parent ===== */

typedef struct outcome {
  conform_status status;
  char *detail;
} outcome;

static void record(outcome *o, conform_status st, const char *detail) {
  free(o->detail);
  o->status = st;
  o->detail = strdup(detail ? detail : "");
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Runs tests [start, end) of one group, restarting the child after a crash or
 * a timeout so every test gets its own result. */
static void run_group(conform_ctx base, const conform_suite *s, const char *selected, size_t start, size_t end,
                      double timeout, outcome *out) {
  size_t next = start;
  while (next < end) {
    if (selected && !selected[next]) {
      next++;
      continue;
    }
    size_t stop = next;
    while (stop < end && (!selected || selected[stop])) stop++;
    int fds[2];
    if (pipe(fds) != 0) return;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
      close(fds[0]);
      child_main(base, s, next, stop, fds[1]);
    }
    close(fds[1]);
    char buf[8192];
    size_t len = 0;
    long current = -1;
    double started = now_s();
    int timed_out = 0, eof = 0;
    while (!eof) {
      struct pollfd p = {fds[0], POLLIN, 0};
      double left = timeout - (now_s() - started);
      if (left <= 0) {
        timed_out = 1;
        break;
      }
      int pr = poll(&p, 1, (int)(left * 1000) + 1);
      if (pr < 0 && errno == EINTR) continue;
      if (pr == 0) continue;
      ssize_t got = read(fds[0], buf + len, sizeof buf - 1 - len);
      if (got <= 0) {
        eof = 1;
        break;
      }
      len += (size_t)got;
      buf[len] = '\0';
      char *line;
      while ((line = memchr(buf, '\n', len)) != NULL) {
        *line = '\0';
        size_t idx;
        int st;
        int consumed = 0;
        if (sscanf(buf, "S %zu", &idx) == 1) {
          current = (long)idx;
          started = now_s();
        } else if (sscanf(buf, "R %zu %d %n", &idx, &st, &consumed) == 2 && idx < end) {
          record(&out[idx], (conform_status)st, buf + consumed);
          current = -1;
          next = idx + 1;
        }
        size_t used = (size_t)(line - buf) + 1;
        memmove(buf, buf + used, len - used);
        len -= used;
      }
    }
    close(fds[0]);
    int wst = 0;
    if (timed_out) kill(pid, SIGKILL);
    waitpid(pid, &wst, 0);
    char why[160];
    if (timed_out) {
      snprintf(why, sizeof why, "no result within %.0f s (killed)", timeout);
      if (current < 0) {
        /* Hung while loading the plugin: every remaining test of the run. */
        char msg[220];
        snprintf(msg, sizeof msg, "hung while loading the plugin: %s", why);
        for (size_t i = next; i < stop; i++) record(&out[i], CONFORM_TIMEOUT, msg);
        next = stop;
      } else {
        record(&out[current], CONFORM_TIMEOUT, why);
        next = (size_t)current + 1;
      }
    } else if (next < stop) {
      /* The child died without a result for |current| (or before starting). */
      if (WIFSIGNALED(wst)) snprintf(why, sizeof why, "the process died with signal %d (%s)", WTERMSIG(wst), strsignal(WTERMSIG(wst)));
      else snprintf(why, sizeof why, "the process exited with status %d", WEXITSTATUS(wst));
      if (current < 0) {
        /* Crashed while loading the plugin: every remaining test of the group. */
        char msg[220];
        snprintf(msg, sizeof msg, "crashed while loading the plugin: %s", why);
        for (size_t i = next; i < stop; i++) record(&out[i], CONFORM_CRASH, msg);
        next = stop;
      } else {
        record(&out[current], CONFORM_CRASH, why);
        next = (size_t)current + 1;
      }
    }
  }
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: harmonics conform PLUGIN.so [options]\n"
          "  --list            list the tests and exit\n"
          "  --test NAME       run only this test (repeatable); a trailing '*' matches a prefix\n"
          "  --device N        the device to test (default 0)\n"
          "  --device-option KEY=VALUE\n"
          "                    a device option every device_open gets (repeatable, up to 8), e.g.\n"
          "                    memory=staging or operands=storage for the Vulkan plugin\n"
          "  --seed N          the seed of every random input (default %u; printed in the report)\n"
          "  --timeout S       seconds a test may take before it counts as TIMEOUT (default 60)\n"
          "  --json            a JSON report on stdout\n"
          "exit status: 0 conformant, 1 not conformant, 2 usage\n",
          DEFAULT_SEED);
}

static int matches(const char *pattern, const char *name) {
  size_t n = strlen(pattern);
  if (n && pattern[n - 1] == '*') return strncmp(pattern, name, n - 1) == 0;
  return strcmp(pattern, name) == 0;
}

/* The command line. */
typedef struct conform_args {
  const char *path, *tests[64];
  size_t n_tests, device, seed;
  char option_text[8][128];
  hm_abi_option options[8];
  uint32_t n_options;
  int json, list;
  double timeout;
} conform_args;

/* The plugin's identity, for the report, read without running its init. */
typedef struct plugin_identity {
  char name[64], vendor[96], version[64], build[160], abi[16], load_error[600];
} plugin_identity;

/* CLI_OK, CLI_USAGE after a message; *done when --help was answered. */
static int parse_args(int argc, char **argv, conform_args *c, int *done) {
  memset(c, 0, sizeof *c);
  c->seed = DEFAULT_SEED;
  c->timeout = 60;
  *done = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int value = !strcmp(a, "--test") || !strcmp(a, "--device") || !strcmp(a, "--seed") || !strcmp(a, "--timeout") ||
                !strcmp(a, "--device-option");
    if (value && !v) {
      fprintf(stderr, "harmonics conform: %s needs a value\n", a);
      return CLI_USAGE;
    }
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      *done = 1;
      return CLI_OK;
    } else if (!strcmp(a, "--json")) c->json = 1;
    else if (!strcmp(a, "--list")) c->list = 1;
    else if (!strcmp(a, "--test")) {
      if (c->n_tests < 64) c->tests[c->n_tests++] = argv[++i];
    } else if (!strcmp(a, "--device")) {
      if (cli_parse_size(a, argv[++i], &c->device)) return CLI_USAGE;
    } else if (!strcmp(a, "--device-option")) {
      const char *eq = strchr(v, '=');
      if (!eq || eq == v || strlen(v) >= sizeof c->option_text[0] || c->n_options == 8) {
        fprintf(stderr, "harmonics conform: --device-option wants KEY=VALUE (at most 8, under 128 characters): '%s'\n",
                v);
        return CLI_USAGE;
      }
      char *t = c->option_text[c->n_options];
      memcpy(t, v, strlen(v) + 1);
      t[eq - v] = '\0';
      c->options[c->n_options++] = (hm_abi_option){t, t + (eq - v) + 1};
      i++;
    } else if (!strcmp(a, "--seed")) {
      if (cli_parse_size(a, argv[++i], &c->seed)) return CLI_USAGE;
    } else if (!strcmp(a, "--timeout")) {
      float t;
      if (cli_parse_float(a, argv[++i], &t) || !(t > 0)) return CLI_USAGE;
      c->timeout = t;
    } else if (a[0] == '-') {
      fprintf(stderr, "harmonics conform: unknown option '%s'\n", a);
      usage(stderr);
      return CLI_USAGE;
    } else if (!c->path) c->path = a;
    else {
      fprintf(stderr, "harmonics conform: unexpected argument '%s'\n", a);
      return CLI_USAGE;
    }
  }
  return CLI_OK;
}

/* The tests --test selects (NULL: all); CLI_USAGE when none matches. */
static int select_tests(const conform_args *c, const conform_suite *s, char **selected) {
  *selected = NULL;
  if (!c->n_tests) return CLI_OK;
  char *sel = calloc(s->n, 1);
  if (!sel) return CLI_FAILED;
  size_t hits = 0;
  for (size_t i = 0; i < s->n; i++)
    for (size_t k = 0; k < c->n_tests; k++)
      if (matches(c->tests[k], s->tests[i].name)) {
        sel[i] = 1;
        hits++;
        break;
      }
  if (!hits) {
    fprintf(stderr, "harmonics conform: no test matches (see --list)\n");
    free(sel);
    return CLI_USAGE;
  }
  *selected = sel;
  return CLI_OK;
}

static void read_identity(const char *path, plugin_identity *id) {
  memset(id, 0, sizeof *id);
  snprintf(id->name, sizeof id->name, "?");
  snprintf(id->vendor, sizeof id->vendor, "?");
  snprintf(id->version, sizeof id->version, "?");
  snprintf(id->build, sizeof id->build, "?");
  snprintf(id->abi, sizeof id->abi, "?");
  hm_plugin_open_options po = hm_plugin_open_options_default();
  po.skip_init = 1;
  hm_loaded_plugin *probe = NULL;
  if (hm_plugin_open(path, &po, &probe) != HM_OK) {
    snprintf(id->load_error, sizeof id->load_error, "%s", hm_last_error());
    return;
  }
  const hm_abi_plugin *t = hm_loaded_plugin_table(probe);
  snprintf(id->name, sizeof id->name, "%s", t->name);
  snprintf(id->vendor, sizeof id->vendor, "%s", t->vendor);
  snprintf(id->version, sizeof id->version, "%s", t->version);
  snprintf(id->build, sizeof id->build, "%s", t->build_id);
  snprintf(id->abi, sizeof id->abi, "%u.%u", HM_ABI_VERSION_GET_MAJOR(t->abi_version),
           HM_ABI_VERSION_GET_MINOR(t->abi_version));
  hm_plugin_close(probe);
}

/* The per-group table and the failures; returns whether the plugin conforms. */
static int print_summary(FILE *human, const char *path, const conform_suite *s, const outcome *out,
                         size_t totals[CONFORM_STATUS_COUNT]) {
  fprintf(human, "\n%-22s %6s %6s %14s %6s %8s\n", "group", "PASS", "FAIL", "NOT_SUPPORTED", "CRASH", "TIMEOUT");
  for (size_t i = 0; i < s->n;) {
    size_t j = i, cnt[CONFORM_STATUS_COUNT] = {0}, ran = 0;
    while (j < s->n && !strcmp(s->tests[j].group, s->tests[i].group)) {
      if (out[j].status < CONFORM_STATUS_COUNT) {
        cnt[out[j].status]++;
        totals[out[j].status]++;
        ran++;
      }
      j++;
    }
    if (ran)
      fprintf(human, "%-22s %6zu %6zu %14zu %6zu %8zu\n", s->tests[i].group, cnt[0], cnt[1], cnt[2], cnt[3], cnt[4]);
    i = j;
  }
  fprintf(human, "%-22s %6zu %6zu %14zu %6zu %8zu\n", "total", totals[0], totals[1], totals[2], totals[3], totals[4]);
  int conformant = totals[CONFORM_FAIL] == 0 && totals[CONFORM_CRASH] == 0 && totals[CONFORM_TIMEOUT] == 0 &&
                   totals[CONFORM_PASS] > 0;
  for (size_t i = 0; i < s->n; i++) {
    if (out[i].status != CONFORM_FAIL && out[i].status != CONFORM_CRASH && out[i].status != CONFORM_TIMEOUT) continue;
    fprintf(human, "%s %s: %s\n", conform_status_name(out[i].status), s->tests[i].name, out[i].detail);
  }
  fprintf(human, "\n%s: %s is %s\n", conformant ? "CONFORMANT" : "NOT CONFORMANT", path,
          conformant ? "conformant to the Harmonics plugin ABI" : "not conformant (see the failures above)");
  return conformant;
}

static void print_json(const conform_args *c, const plugin_identity *id, const conform_suite *s, const outcome *out,
                       const size_t totals[CONFORM_STATUS_COUNT], int conformant) {
  printf("{\"tool\":\"harmonics conform\",\"tool_version\":");
  json_string(stdout, hm_version());
  printf(",\"host_abi\":\"%d.%d\",\"seed\":%zu,\"plugin\":{\"path\":", HM_ABI_VERSION_MAJOR, HM_ABI_VERSION_MINOR, c->seed);
  json_string(stdout, c->path);
  printf(",\"name\":");
  json_string(stdout, id->name);
  printf(",\"vendor\":");
  json_string(stdout, id->vendor);
  printf(",\"version\":");
  json_string(stdout, id->version);
  printf(",\"build_id\":");
  json_string(stdout, id->build);
  printf(",\"abi_version\":");
  json_string(stdout, id->abi);
  printf("},\"device\":%zu,\"device_options\":{", c->device);
  for (uint32_t i = 0; i < c->n_options; i++) {
    printf(i ? "," : "");
    json_string(stdout, c->options[i].key);
    printf(":");
    json_string(stdout, c->options[i].value);
  }
  printf("},\"conformant\":%s,\"totals\":{", conformant ? "true" : "false");
  for (int k = 0; k < CONFORM_STATUS_COUNT; k++)
    printf("%s\"%s\":%zu", k ? "," : "", conform_status_name((conform_status)k), totals[k]);
  printf("},\"results\":[");
  int first = 1;
  for (size_t i = 0; i < s->n; i++) {
    if (out[i].status >= CONFORM_STATUS_COUNT) continue;
    printf("%s{\"name\":", first ? "" : ",");
    json_string(stdout, s->tests[i].name);
    printf(",\"group\":");
    json_string(stdout, s->tests[i].group);
    printf(",\"status\":\"%s\",\"detail\":", conform_status_name(out[i].status));
    json_string(stdout, out[i].detail);
    printf("}");
    first = 0;
  }
  printf("]}\n");
}

int cmd_conform(int argc, char **argv) {
  conform_args c;
  int done = 0;
  int rc = parse_args(argc, argv, &c, &done);
  if (rc != CLI_OK || done) return rc;
  conform_suite s = {0};
  conform_build_tests(&s);
  if (c.list) {
    for (size_t i = 0; i < s.n; i++) printf("%s\n", s.tests[i].name);
    free(s.tests);
    return CLI_OK;
  }
  char *selected = NULL;
  if (!c.path) {
    usage(stderr);
    rc = CLI_USAGE;
  } else {
    rc = select_tests(&c, &s, &selected);
  }
  outcome *out = rc == CLI_OK ? calloc(s.n, sizeof *out) : NULL;
  if (rc != CLI_OK || !out) {
    free(selected);
    free(s.tests);
    return rc != CLI_OK ? rc : CLI_FAILED;
  }
  plugin_identity id;
  read_identity(c.path, &id);
  conform_ctx base;
  memset(&base, 0, sizeof base);
  base.path = c.path;
  base.device_index = (uint32_t)c.device;
  base.options = c.options;
  base.n_options = c.n_options;
  base.seed = c.seed;
  for (size_t i = 0; i < s.n; i++) out[i].status = CONFORM_STATUS_COUNT; /* not run */
  FILE *human = c.json ? stderr : stdout;
  fprintf(human, "harmonics conform %s (ABI %d.%d): %s\nplugin %s %s (vendor %s, ABI %s, build %s), device %zu, seed %zu\n",
          hm_version(), HM_ABI_VERSION_MAJOR, HM_ABI_VERSION_MINOR, c.path, id.name, id.version, id.vendor, id.abi,
          id.build, c.device, c.seed);
  for (uint32_t i = 0; i < c.n_options; i++)
    fprintf(human, "device option %s=%s\n", c.options[i].key, c.options[i].value);
  if (id.load_error[0]) fprintf(human, "the plugin does not load: %s\n", id.load_error);
  for (size_t i = 0; i < s.n;) {
    size_t j = i;
    while (j < s.n && !strcmp(s.tests[j].group, s.tests[i].group)) j++;
    run_group(base, &s, selected, i, j, c.timeout, out);
    i = j;
  }
  size_t totals[CONFORM_STATUS_COUNT] = {0};
  int conformant = print_summary(human, c.path, &s, out, totals);
  if (c.json) print_json(&c, &id, &s, out, totals, conformant);
  for (size_t i = 0; i < s.n; i++) free(out[i].detail);
  free(out);
  free(selected);
  free(s.tests);
  return conformant ? CLI_OK : CLI_FAILED;
}
