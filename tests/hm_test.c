/*
 * The harness's runner. Every case runs in a forked child with a time limit
 * (libuv's habit), so a crash or a hang is reported under the case's name
 * and the later cases still run:
 *   [ CRASH ] name (signal 11: Segmentation fault)
 *   [ TIME  ] name (over 300 s)
 * HM_TEST_TIMEOUT sets the limit in seconds; HM_TEST_NO_FORK=1 runs the
 * cases in this process (for a debugger).
 * Under the sanitizers each child's own report (a leak, a bad access) is
 * printed under its case.
 */
#define _GNU_SOURCE 1 /* strsignal, clock_gettime, kill */
#include "hm_test.h"

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int hm_test_failures;
int hm_test_skipped;
void (*hm_test_cleanup)(void);

enum { CASE_PASS = 0, CASE_FAIL = 1, CASE_SKIP = 77 };

static int case_result(void) { return hm_test_failures ? CASE_FAIL : hm_test_skipped ? CASE_SKIP : CASE_PASS; }

static void run_in_child(const hm_test_case *c) {
  hm_test_failures = 0;
  hm_test_skipped = 0;
  c->fn();
  int rc = case_result();
  if (hm_test_cleanup) hm_test_cleanup();
  fflush(NULL);
  exit(rc); /* exit, not _exit: sanitizers report at exit */
}

/* Runs |c| in a child and waits at most |limit| seconds. Returns a CASE_*
 * code, or -1 after printing how the child ended abnormally. */
static int run_forked(const hm_test_case *c, double limit) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return CASE_FAIL;
  }
  if (pid == 0) run_in_child(c);
  struct timespec start, now, nap = {0, 2 * 1000 * 1000};
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    int status = 0;
    pid_t got = waitpid(pid, &status, WNOHANG);
    if (got == pid) {
      if (WIFEXITED(status)) {
        int code = WEXITSTATUS(status);
        if (code == CASE_PASS || code == CASE_FAIL || code == CASE_SKIP) return code;
        fprintf(stderr, "[ CRASH ] %s (exited with status %d)\n", c->name, code);
        return -1;
      }
      int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
      fprintf(stderr, "[ CRASH ] %s (signal %d: %s)\n", c->name, sig, strsignal(sig));
      return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    double elapsed = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) * 1e-9;
    if (elapsed > limit) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      fprintf(stderr, "[ TIME  ] %s (over %.0f s)\n", c->name, limit);
      return -1;
    }
    nanosleep(&nap, NULL);
  }
}

int hm_test_main(int argc, char **argv, const hm_test_case *cases, size_t n) {
  int failed = 0, passed = 0, skipped = 0, ran = 0;
  const char *limit_text = getenv("HM_TEST_TIMEOUT"), *no_fork = getenv("HM_TEST_NO_FORK");
  double limit = limit_text && atof(limit_text) > 0 ? atof(limit_text) : 300.0;
  int fork_cases = !(no_fork && strcmp(no_fork, "1") == 0);
  for (size_t i = 0; i < n; i++) {
    if (argc > 1) {
      int wanted = 0;
      for (int a = 1; a < argc; a++)
        if (strcmp(argv[a], cases[i].name) == 0) wanted = 1;
      if (!wanted) continue;
    }
    ran++;
    fprintf(stderr, "[ RUN  ] %s\n", cases[i].name);
    int rc;
    if (fork_cases) {
      rc = run_forked(&cases[i], limit);
    } else {
      hm_test_failures = 0;
      hm_test_skipped = 0;
      cases[i].fn();
      rc = case_result();
    }
    if (rc == -1) {
      failed++;
    } else if (rc == CASE_FAIL) {
      fprintf(stderr, "[ FAIL ] %s\n", cases[i].name);
      failed++;
    } else if (rc == CASE_SKIP) {
      fprintf(stderr, "[ SKIP ] %s\n", cases[i].name);
      skipped++;
    } else {
      fprintf(stderr, "[  OK  ] %s\n", cases[i].name);
      passed++;
    }
  }
  if (!fork_cases && hm_test_cleanup) hm_test_cleanup();
  if (ran == 0) {
    fprintf(stderr, "no test case matched\n");
    return 1;
  }
  fprintf(stderr, "%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  if (failed) return 1;
  if (skipped && !passed) return 77;
  return 0;
}
