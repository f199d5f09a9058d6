/*
 * The precision plan: which precision and kernel each connection's matmuls
 * use, chosen from a policy and the capabilities the device declares
 * (DESIGN.md §5). A width the device cannot run is replaced by the nearest
 * wider one it can, and the plan says so in |note|; nothing runs at a
 * precision that is not in the plan.
 */
#ifndef HM_LOWER_PRECISION_H_
#define HM_LOWER_PRECISION_H_

#include "graph/graph.h"
#include "harmonics/plugins.h"
#include "harmonics/policy.h"

typedef struct hm_edge_precision {
  int matmul;          /* the connection has a weight matrix */
  uint32_t dtype;      /* F32, BF16/F16 (GEMM inputs rounded), or Q8/Q4/Q3 */
  char note[200];      /* why the precision differs from the request; "" when it does not */
} hm_edge_precision;

/* Validates |p| (NULL = hardware) without a device or graph: bit widths 8,
 * 4, 3 (and 32 in per-connection lists), 1 to 64 entries. The plan checks
 * that a per-connection list has one entry per connection with weights. */
hm_status hm__policy_check(const hm_policy *p);
/* Nonzero when |a| and |b| ask for the same precisions (fields a kind does
 * not use are ignored). */
int hm__policy_same(const hm_policy *a, const hm_policy *b);

/* Fills out[e] for every edge of |g|. |training| also requires what the
 * backward pass needs (DEQUANTIZE). */
hm_status hm__precision_plan(const hm_policy *p, hm_device *dev, const hm_graph *g, int training,
                             hm_edge_precision *out);

/* "f32", "bf16", "int8", ... and the kernel that runs it ("gemm", "int3_matmul"). */
const char *hm__precision_name(uint32_t dtype);
const char *hm__precision_kernel(uint32_t dtype);
/* The GEMM op code of a packed dtype. */
uint32_t hm__precision_gemm_op(uint32_t dtype);
int hm__precision_is_packed(uint32_t dtype);
/* Bytes of |rows| packed rows of |k| values (QUANT.md Q1). */
size_t hm__packed_bytes(uint32_t dtype, size_t rows, size_t k);
/* hm__packed_bytes rounded up to 4: where the next image's rows start in a
 * packed convolution's patches (GPU plugins need 4-byte operand offsets). */
size_t hm__packed_stride(uint32_t dtype, size_t rows, size_t k);
/* Bytes of a rows x k weight matrix as the matmul at |dtype| reads it: the
 * packed blocks, or f32 (16-bit GEMMs round f32 master weights per call). */
size_t hm__matrix_bytes(uint32_t dtype, size_t rows, size_t k);

#endif /* HM_LOWER_PRECISION_H_ */
