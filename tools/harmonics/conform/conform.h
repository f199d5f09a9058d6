/*
 * harmonics conform: the ABI conformance suite (DESIGN.md §8). Tests are
 * listed statically (so --list needs no plugin) and grouped; each group runs
 * in a child process that loads the plugin through the production loader,
 * so a crash or a hang is a CRASH or TIMEOUT result, not a dead tool.
 */
#ifndef HM_CONFORM_H_
#define HM_CONFORM_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics/harmonics.h"
#include "harmonics/plugin_loader.h"

typedef enum conform_status {
  CONFORM_PASS = 0,
  CONFORM_FAIL = 1,
  CONFORM_NOT_SUPPORTED = 2,
  CONFORM_CRASH = 3,
  CONFORM_TIMEOUT = 4,
  CONFORM_STATUS_COUNT = 5
} conform_status;

const char *conform_status_name(conform_status s);

/* What a test sees: the plugin under test (initialised) and an open device. */
typedef struct conform_ctx {
  const char *path;
  hm_loaded_plugin *plugin;
  const hm_abi_plugin *t;
  hm_abi_context *pctx;
  uint32_t device_index;
  const hm_abi_option *options; /* --device-option KEY=VALUE, for every device_open */
  uint32_t n_options;
  hm_abi_device *dev;
  hm_abi_device_desc desc;
  uint64_t seed;
} conform_ctx;

typedef struct conform_result {
  conform_status status;
  char detail[512]; /* shape, seed and error figure for failures; reason for NOT_SUPPORTED */
} conform_result;

typedef void (*conform_fn)(conform_ctx *ctx, const void *arg, conform_result *r);

typedef struct conform_test {
  char name[96];
  const char *group;
  conform_fn fn;
  const void *arg;  /* test-specific parameters (static storage) */
  int needs_device; /* 0: the test loads the plugin itself (ABI tier) */
} conform_test;

/* The registry of tests, built once by conform_build_tests. */
typedef struct conform_suite {
  conform_test *tests;
  size_t n, cap;
} conform_suite;

void conform_add(conform_suite *s, const char *group, conform_fn fn, const void *arg, int needs_device,
                 const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void conform_build_tests(conform_suite *s);

/* Test constructors per tier. */
void conform_add_abi_tests(conform_suite *s);
void conform_add_kernel_tests(conform_suite *s);
void conform_add_window_tests(conform_suite *s);
void conform_add_program_tests(conform_suite *s);
void conform_add_robustness_tests(conform_suite *s);

/* Sets |r| to FAIL/NOT_SUPPORTED with a formatted detail. */
void conform_fail(conform_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void conform_not_supported(conform_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Whether the device declares (op, dtype_in, dtype_out[, variant]). */
int conform_declares(const conform_ctx *c, uint32_t op, uint32_t din, uint32_t dout, int variant);
/* The numerics class declared for (op, din, dout), or -1. */
int conform_numerics(const conform_ctx *c, uint32_t op, uint32_t din, uint32_t dout);
/* The tolerance of a numerics class (0 = bitwise). */
double conform_tolerance(int numerics);

/* ELF: every defined, exported dynamic symbol of |path| (conform_elf.c).
 * Returns the count, or -1 with |err| set. Caller frees names and the array. */
long conform_elf_exports(const char *path, char ***names, char *err, size_t err_cap);

/* ===== One op on the device and on the reference (conform_run.c) ===== */

typedef struct conform_operand {
  void *data;   /* host values (in, and initial out); NULL = unused */
  size_t bytes;
} conform_operand;

typedef struct conform_op_case {
  hm_abi_op op; /* operand buffers are set by conform_run_op */
  conform_operand in[HM_ABI_MAX_OPERANDS];
  conform_operand out[HM_ABI_MAX_OPERANDS];
  const double *scalars;
  uint32_t n_scalars;
} conform_op_case;

#define CONFORM_GUARD 256 /* bytes before and after every operand */

/* Runs the op on the plugin (operands surrounded by guard bytes) and on the
 * reference. dev_out/ref_out receive malloc'ed output copies. Returns 0, or
 * fills |r| (FAIL with the plugin's status and message, or a guard
 * violation) and returns nonzero. */
int conform_run_op(conform_ctx *c, const conform_op_case *k, void *dev_out[4], void *ref_out[4], conform_result *r);
void conform_free_outputs(void *out[4]);
/* NMSE of got vs ref (NaN/Inf must match: INFINITY otherwise). */
double conform_nmse(const float *ref, const float *got, size_t n);
/* Deterministic uniform floats in [lo, hi). */
void conform_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed);

#endif /* HM_CONFORM_H_ */
