/*
 * Runs one ABI op on a device and on the scalar reference with the same
 * inputs, for kernel tests. Each operand gets its own buffer.
 */
#ifndef HM_TEST_OP_UTIL_H_
#define HM_TEST_OP_UTIL_H_

#include <stddef.h>

#include "harmonics/harmonics.h"
#include "hm_reference.h"

typedef struct top_operand {
  void *data;   /* host values (inputs, and initial values of outputs); NULL = unused */
  size_t bytes;
} top_operand;

typedef struct top_case {
  hm_abi_op op; /* operand buffers are filled in by top_run */
  top_operand in[HM_ABI_MAX_OPERANDS];
  top_operand out[HM_ABI_MAX_OPERANDS];
  const double *scalars;
  uint32_t n_scalars;
} top_case;

/* Runs |c| on |dev| and on the reference. dev_out[i] and ref_out[i] receive
 * malloc'ed copies of output i (NULL for unused); free with top_free_outputs. */
hm_status top_run(hm_device *dev, const top_case *c, void *dev_out[HM_ABI_MAX_OPERANDS],
                  void *ref_out[HM_ABI_MAX_OPERANDS]);
void top_free_outputs(void *out[HM_ABI_MAX_OPERANDS]);

/* sum (a-b)^2 / sum a^2 (absolute when sum a^2 == 0); NaN/Inf must match exactly. */
double top_nmse(const float *ref, const float *got, size_t n);

/* Opens the CPU device with |threads| threads (0 = default). */
hm_device *top_open_cpu(unsigned threads);

float *top_random(size_t n, float lo, float hi, unsigned long long seed);

#endif /* HM_TEST_OP_UTIL_H_ */
