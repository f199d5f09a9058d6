/* The harness's runner. */
#include "hm_test.h"

int hm_test_failures;
int hm_test_skipped;

int hm_test_main(int argc, char **argv, const hm_test_case *cases, size_t n) {
  int failed = 0, passed = 0, skipped = 0, ran = 0;
  for (size_t i = 0; i < n; i++) {
    if (argc > 1) {
      int wanted = 0;
      for (int a = 1; a < argc; a++)
        if (strcmp(argv[a], cases[i].name) == 0) wanted = 1;
      if (!wanted) continue;
    }
    ran++;
    hm_test_failures = 0;
    hm_test_skipped = 0;
    fprintf(stderr, "[ RUN  ] %s\n", cases[i].name);
    cases[i].fn();
    if (hm_test_failures) {
      fprintf(stderr, "[ FAIL ] %s (%d check%s)\n", cases[i].name, hm_test_failures, hm_test_failures == 1 ? "" : "s");
      failed++;
    } else if (hm_test_skipped) {
      fprintf(stderr, "[ SKIP ] %s\n", cases[i].name);
      skipped++;
    } else {
      fprintf(stderr, "[  OK  ] %s\n", cases[i].name);
      passed++;
    }
  }
  if (ran == 0) {
    fprintf(stderr, "no test case matched\n");
    return 1;
  }
  fprintf(stderr, "%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  if (failed) return 1;
  if (skipped && !passed) return 77;
  return 0;
}
