/*
 * Op rules shared by Harmonics' own plugins (not part of the ABI): the bytes
 * each operand of an op covers (SPEC.md §7, QUANT.md) and capability lookup,
 * so every backend validates programs the same way.
 */
#ifndef HM_PLUGIN_OP_RULES_H_
#define HM_PLUGIN_OP_RULES_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every capability the portable kernels have beyond f32 GEMM, as
 * X(op, dtype_in, dtype_acc, dtype_out, numerics, variants): the CPU plugin
 * and the GPU plugins (dispatch.c) declare these rows from this one list. */
#define HM_ABI_ALL_ACTS ((1ull << HM_ABI_ACT_COUNT) - 1)
#define HM_ABI_ALL_LOSSES ((1ull << HM_ABI_LOSS_COUNT) - 1)
#define HM_PORTABLE_CAPS(X) \
  X(HM_ABI_OP_BIAS_ADD, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_ACT_FORWARD, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, HM_ABI_ALL_ACTS) \
  X(HM_ABI_OP_ACT_BACKWARD, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, HM_ABI_ALL_ACTS) \
  X(HM_ABI_OP_LOSS, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, HM_ABI_ALL_LOSSES) \
  X(HM_ABI_OP_REDUCE_ROWS, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_REDUCE_COLS, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_SUM_SQUARES, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_CLIP, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_SCALE, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_AXPY, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_GATHER_ROWS, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_GATHER_ROWS, HM_ABI_DTYPE_U8, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_GATHER_ROWS, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_I32, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_FILL, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_FILL, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_I32, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_COPY, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_COPY, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_I32, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_COPY, HM_ABI_DTYPE_U8, HM_ABI_DTYPE_U8, HM_ABI_DTYPE_U8, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_SGD, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_ADAM, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_RMSPROP, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_ADAMW, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_LAMB, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_QUANTIZE, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_Q8, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_QUANTIZE, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_Q4, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_QUANTIZE, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_Q3, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_DEQUANTIZE, HM_ABI_DTYPE_Q8, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_DEQUANTIZE, HM_ABI_DTYPE_Q4, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_DEQUANTIZE, HM_ABI_DTYPE_Q3, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_GEMM_Q8, HM_ABI_DTYPE_Q8, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_GEMM_Q4, HM_ABI_DTYPE_Q4, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_GEMM_Q3, HM_ABI_DTYPE_Q3, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_EXACT, 0)

/* The window ops, dropout and the normalizations (ABI 1.1). */
#define HM_ABI_ALL_POOLS ((1ull << HM_ABI_POOL_COUNT) - 1)
#define HM_WINDOW_CAPS(X) \
  X(HM_ABI_OP_CONV2D, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_CONV2D_BWD_DATA, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_CONV2D_BWD_FILTER, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_POOL2D, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, HM_ABI_ALL_POOLS) \
  X(HM_ABI_OP_POOL2D_BWD, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, HM_ABI_ALL_POOLS) \
  X(HM_ABI_OP_DROPOUT, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_IM2COL, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_EXACT, 0) \
  X(HM_ABI_OP_BATCH_NORM, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, (1ull << HM_ABI_NORM_COUNT) - 1) \
  X(HM_ABI_OP_BATCH_NORM_BWD, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_LAYER_NORM, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0) \
  X(HM_ABI_OP_LAYER_NORM_BWD, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_NUMERICS_F32, 0)


typedef struct hm_operand_req {
  int required;   /* 1 = must be set, 0 = optional */
  uint64_t bytes; /* extent from the offset; UINT64_MAX when it overflows */
} hm_operand_req;

/* NONE means F32. */
uint32_t hm_dtype_or_f32(uint32_t d);
/* a*b*c*es, or UINT64_MAX on overflow. */
uint64_t hm_extent(uint64_t a, uint64_t b, uint64_t c, uint64_t es);
/* Bytes of one packed block (QUANT.md Q1), 0 for other dtypes. */
uint64_t hm_q_block_bytes(int dtype);
/* The operand extents of |op|. Nonzero for an op code it does not know. */
int hm_op_requirements(const hm_abi_op *op, hm_operand_req in[4], hm_operand_req out[4]);
/* Nonzero when (op, dtype_in, dtype_out, variant) is in |caps|; variant < 0
 * for ops without variants. */
int hm_caps_declares(const hm_abi_capability *caps, uint32_t n, uint32_t op, uint32_t din, uint32_t dout,
                     int variant);
/* Nonzero for ops with a variant (activations, losses, pools). */
int hm_op_has_variant(uint32_t code);
/* Nonzero for CONV2D* and POOL2D* (their geometry: hm_abi_window_decode). */
int hm_op_is_window(uint32_t code);

/* Checks a program descriptor (SPEC.md HM-ABI-9): its struct_size, the op
 * array, at most |max_ops| ops, and one op stride — the first op's
 * struct_size, at least sizeof(hm_abi_op) and the same for every op. Writes
 * the stride; returns HM_ABI_OK or a status with a message in |msg|. */
int32_t hm_check_program_desc(const hm_abi_program_desc *desc, uint32_t max_ops, size_t *stride, char *msg, size_t cap);
/* Op |i| of a checked descriptor. */
static inline const hm_abi_op *hm_program_op(const hm_abi_program_desc *desc, size_t stride, uint32_t i) {
  return (const hm_abi_op *)((const char *)desc->ops + (size_t)i * stride);
}

/* What a backend tells hm_check_op about a buffer handle: its size, or
 * nonzero when it is not a live buffer of this device. */
typedef int (*hm_buffer_size_fn)(void *self, const hm_abi_buffer *buffer, uint64_t *size);

/* Validates op |index| of a program: known op, declared in |caps|, variant
 * and dynamic slots in range, every operand present as required, on this
 * device, inside its buffer and at an offset that is a multiple of |align|;
 * outputs of GEMM-like ops do not overlap inputs. Returns HM_ABI_OK or a
 * status with a message in |msg|. */
int32_t hm_check_op(const hm_abi_op *op, uint32_t index, uint32_t n_scalars, const hm_abi_capability *caps,
                    uint32_t n_caps, hm_buffer_size_fn size_of, void *self, uint32_t align, char *msg, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* HM_PLUGIN_OP_RULES_H_ */
