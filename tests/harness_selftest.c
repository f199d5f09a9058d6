/*
 * The harness's own cases, run by cli/test_harness.sh: a crash and a hang
 * must be reported by name while the cases after them still run.
 */
#include <signal.h>
#include <unistd.h>

#include "hm_test.h"

static void passes(void) { HM_CHECK_EQ(1 + 1, 2); }
static void fails(void) { HM_CHECK_EQ(1 + 1, 3); }
static void crashes(void) {
  fflush(NULL);
  raise(SIGSEGV);
}
static void hangs(void) {
  for (;;) pause();
}
static void skips(void) { HM_SKIP("on purpose"); }
static void passes_after(void) { HM_CHECK(1); }

static const hm_test_case cases[] = {
    HM_TEST_CASE(passes), HM_TEST_CASE(fails),  HM_TEST_CASE(crashes),
    HM_TEST_CASE(hangs),  HM_TEST_CASE(skips), HM_TEST_CASE(passes_after),
};
HM_TEST_MAIN(cases)
