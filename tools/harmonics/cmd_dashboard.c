/*
 * harmonics dashboard [--port 8080] [--host ADDR|NAME] [--history FRAMES]
 * [--token T]: serves the training dashboard page and relays trainer frames
 * to browsers, like examples/training_dashboard/server.js but without
 * Node.js. Loopback only unless --host says otherwise; then trainers need the
 * token it prints. Runs until interrupted (Ctrl-C or SIGTERM).
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dashboard/dashboard_server.h"

static void dashboard_usage(FILE *f) {
  fprintf(f,
          "usage: harmonics dashboard [--port N (8080)] [--host ADDR|NAME (127.0.0.1)] [--history FRAMES (1000000)]\n"
          "                           [--token T]\n"
          "  serves the live training page at http://HOST:PORT/; train with\n"
          "  harmonics train ... --dashboard ws://HOST:PORT/trainer (or /metrics)\n"
          "  It listens on loopback unless --host names another address (0.0.0.0 = every\n"
          "  interface); then trainers must add the ?token=... it prints (--token sets it,\n"
          "  and makes it required on loopback too). Pages may connect only from its own origin.\n");
}

/* 32 hex digits from /dev/urandom. */
static int random_token(char *out, size_t cap) {
  unsigned char b[16];
  FILE *f = fopen("/dev/urandom", "rb");
  size_t n = f ? fread(b, 1, sizeof b, f) : 0;
  if (f) fclose(f);
  if (n != sizeof b || cap < 33) return 1;
  for (size_t i = 0; i < sizeof b; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
  return 0;
}

static int parse_count(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return 1;
  *out = v;
  return 0;
}

int cmd_dashboard(int argc, char **argv) {
  dash_server_options o = {"127.0.0.1", 8080, 1000000, NULL};
  char token[40] = "";
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    long n;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      dashboard_usage(stdout);
      return CLI_OK;
    }
    if (!v) {
      fprintf(stderr, "harmonics dashboard: unknown option or missing value: %s\n", a);
      dashboard_usage(stderr);
      return CLI_USAGE;
    }
    if (!strcmp(a, "--port")) {
      if (parse_count(v, 1, 65535, &n)) {
        fprintf(stderr, "harmonics dashboard: --port '%s' is not in [1, 65535]\n", v);
        return CLI_USAGE;
      }
      o.port = (int)n;
    } else if (!strcmp(a, "--host")) {
      o.host = v;
    } else if (!strcmp(a, "--token")) {
      size_t len = strlen(v), ok = len >= 8 && len < sizeof token;
      for (size_t k = 0; ok && k < len; k++) ok = isalnum((unsigned char)v[k]) || v[k] == '-' || v[k] == '_';
      if (!ok) {
        fprintf(stderr, "harmonics dashboard: --token must be 8 to %zu letters, digits, '-' or '_'\n",
                sizeof token - 1);
        return CLI_USAGE;
      }
      snprintf(token, sizeof token, "%s", v);
    } else if (!strcmp(a, "--history")) {
      if (parse_count(v, 1, 100000000, &n)) {
        fprintf(stderr, "harmonics dashboard: --history '%s' is not in [1, 100000000]\n", v);
        return CLI_USAGE;
      }
      o.history_frames = (size_t)n;
    } else {
      fprintf(stderr, "harmonics dashboard: unknown option %s\n", a);
      dashboard_usage(stderr);
      return CLI_USAGE;
    }
    i++;
  }
  /* Block the signals first so the server thread inherits the mask and
   * sigwait below receives them. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  char err[256];
  if (!token[0] && strcmp(o.host, "127.0.0.1") && strcmp(o.host, "::1") && strcmp(o.host, "localhost") &&
      random_token(token, sizeof token)) {
    fprintf(stderr, "harmonics dashboard: cannot make a trainer token: /dev/urandom unreadable\n");
    return CLI_FAILED;
  }
  o.token = token[0] ? token : NULL;
  dash_server *s = dash_server_start(&o, err, sizeof err);
  if (!s) {
    fprintf(stderr, "harmonics dashboard: %s\n", err);
    return CLI_FAILED;
  }
  const char *addr = dash_server_address(s);
  const char *open = strchr(addr, ':') ? "[" : "", *close = strchr(addr, ':') ? "]" : "";
  printf("dashboard: http://%s%s%s:%d/ (listening on %s%s%s:%d; trainers send to ws://%s%s%s:%d/trainer%s%s)\n", open,
         addr, close, o.port, open, addr, close, o.port, open, addr, close, o.port, o.token ? "?token=" : "",
         o.token ? o.token : "");
  fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  dash_server_stats st;
  dash_server_stats_get(s, &st);
  dash_server_stop(s);
  printf("dashboard: stopped after %llu frames\n", (unsigned long long)st.frames);
  return CLI_OK;
}
