/*
 * harmonics dashboard [--port 8080] [--host ADDR] [--history FRAMES]: serves
 * the training dashboard page and relays trainer frames to browsers, like
 * examples/training_dashboard/server.js but without Node.js. Runs until
 * interrupted (Ctrl-C or SIGTERM).
 */
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
          "usage: harmonics dashboard [--port N (8080)] [--host ADDR (all)] [--history FRAMES (1000000)]\n"
          "  serves the live training page at http://HOST:PORT/; train with\n"
          "  harmonics train ... --dashboard ws://HOST:PORT/trainer\n");
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
  dash_server_options o = {NULL, 8080, 1000000};
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
  dash_server *s = dash_server_start(&o, err, sizeof err);
  if (!s) {
    fprintf(stderr, "harmonics dashboard: %s\n", err);
    return CLI_FAILED;
  }
  printf("dashboard: http://%s:%d/ (trainers send to ws://HOST:%d/trainer)\n", o.host ? o.host : "localhost", o.port,
         o.port);
  fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  dash_server_stats st;
  dash_server_stats_get(s, &st);
  dash_server_stop(s);
  printf("dashboard: stopped after %llu frames\n", (unsigned long long)st.frames);
  return CLI_OK;
}
