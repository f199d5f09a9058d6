/*
 * A minimal test harness: each test executable lists its cases (each name
 * written once: HM_TEST_CASE(fn)); every case runs in its own child process
 * with a time limit (hm_test.c), every check prints both values on failure
 * and the case continues to the next check.
 * Exit status: 0 all passed, 1 a failure (or a crash or timeout), 77 every
 * case skipped.
 *   ./test_x            run all cases
 *   ./test_x name ...   run the named cases
 */
#ifndef HM_TEST_H_
#define HM_TEST_H_

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hm_test_case {
  const char *name;
  void (*fn)(void);
} hm_test_case;

/* A case named after its function. */
#define HM_TEST_CASE(fn) {#fn, fn}
/* A case named |name| whose function is prefix##name (run_x, test_x). */
#define HM_TEST_CASE_P(prefix, name) {#name, prefix##name}

extern int hm_test_failures;
extern int hm_test_skipped;
/* Called at the end of each case's process (e.g. to remove its temporary
 * files), and once at the end when cases do not fork. */
extern void (*hm_test_cleanup)(void);

#define HM_CHECK(cond)                                                         \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      hm_test_failures++;                                                      \
    }                                                                          \
  } while (0)

#define HM_CHECK_MSG(cond, ...)                                              \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                          \
      fprintf(stderr, "\n");                                                 \
      hm_test_failures++;                                                    \
    }                                                                        \
  } while (0)

#define HM_CHECK_EQ(a, b)                                                                        \
  do {                                                                                           \
    long long hm_a = (long long)(a), hm_b = (long long)(b);                                      \
    if (hm_a != hm_b) {                                                                          \
      fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b, hm_a, hm_b); \
      hm_test_failures++;                                                                        \
    }                                                                                            \
  } while (0)

#define HM_CHECK_NEAR(a, b, tol)                                                                   \
  do {                                                                                             \
    double hm_a = (double)(a), hm_b = (double)(b);                                                 \
    if (!(fabs(hm_a - hm_b) <= (tol))) {                                                           \
      fprintf(stderr, "  %s:%d: |%s - %s| <= %g failed: %.9g vs %.9g\n", __FILE__, __LINE__, #a, #b, \
              (double)(tol), hm_a, hm_b);                                                          \
      hm_test_failures++;                                                                          \
    }                                                                                              \
  } while (0)

#define HM_CHECK_STR_CONTAINS(hay, needle)                                                          \
  do {                                                                                              \
    const char *hm_h = (hay), *hm_n = (needle);                                                     \
    if (!hm_h || !strstr(hm_h, hm_n)) {                                                             \
      fprintf(stderr, "  %s:%d: expected \"%s\" in \"%s\"\n", __FILE__, __LINE__, hm_n, hm_h ? hm_h : "(NULL)"); \
      hm_test_failures++;                                                                           \
    }                                                                                               \
  } while (0)

/* Checks a status is HM_OK, printing hm_last_error() otherwise. */
#define HM_CHECK_OK(expr)                                                                        \
  do {                                                                                           \
    int hm_s = (int)(expr);                                                                      \
    if (hm_s != 0) {                                                                             \
      fprintf(stderr, "  %s:%d: %s returned %d: %s\n", __FILE__, __LINE__, #expr, hm_s, hm_last_error()); \
      hm_test_failures++;                                                                        \
    }                                                                                            \
  } while (0)

/* Marks the current case skipped (e.g. no GPU) and returns from it. */
#define HM_SKIP(...)                     \
  do {                                   \
    fprintf(stderr, "  skipped: ");      \
    fprintf(stderr, __VA_ARGS__);        \
    fprintf(stderr, "\n");               \
    hm_test_skipped = 1;                 \
    return;                              \
  } while (0)

int hm_test_main(int argc, char **argv, const hm_test_case *cases, size_t n);

#ifdef __cplusplus
}
#endif

#define HM_TEST_MAIN(cases) \
  int main(int argc, char **argv) { return hm_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]); }

/* Deterministic pseudo-random numbers for tests (splitmix64). */
static inline unsigned long long hm_test_rand_u64(unsigned long long *state) {
  unsigned long long z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
/* Uniform in [lo, hi). */
static inline float hm_test_uniform(unsigned long long *state, float lo, float hi) {
  return lo + (hi - lo) * (float)((hm_test_rand_u64(state) >> 40) * (1.0 / 16777216.0));
}

#endif /* HM_TEST_H_ */
