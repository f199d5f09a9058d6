/*
 * The MPI tests' one assertion: a failed check prints the rank, the place
 * and a message, and counts; main() exits 1 when any failed.
 */
#ifndef HM_TESTS_MPI_CHECK_H_
#define HM_TESTS_MPI_CHECK_H_

#include <stdio.h>

static int failures, rank_ = -1;

#define CHECK(cond, ...)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "rank %d: %s:%d: %s: ", rank_, __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                       \
      fprintf(stderr, "\n");                                              \
      failures++;                                                         \
    }                                                                     \
  } while (0)

#endif /* HM_TESTS_MPI_CHECK_H_ */
