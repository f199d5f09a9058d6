/*
 * The CPU plugin's capability table: what it declares, as data (SPEC.md §6).
 * program_create refuses anything not listed here.
 */
#include "cpu_internal.h"

#define F32 HM_ABI_DTYPE_F32
#define ALL_ACTS ((1ull << HM_ABI_ACT_COUNT) - 1)
#define ALL_LOSSES ((1ull << HM_ABI_LOSS_COUNT) - 1)
#define CAP(op, din, dacc, dout, num, variants) {op, din, dacc, dout, num, 0, variants, 0.0f, {0, 0, 0}}

static const hm_abi_capability caps[] = {
    /* Speed hints are relative to f32 GEMM. BF16 rounds its inputs and then
     * runs sgemm, so it is slower (bench_lowbit: 0.46-0.58x at batch 64), and the auto
     * policy keeps f32 here. */
    {HM_ABI_OP_GEMM, F32, F32, F32, HM_ABI_NUMERICS_F32, 0, 0, 1.0f, {0, 0, 0}},
    {HM_ABI_OP_GEMM, HM_ABI_DTYPE_BF16, F32, F32, HM_ABI_NUMERICS_BF16, 0, 0, 0.5f, {0, 0, 0}},
    CAP(HM_ABI_OP_BIAS_ADD, F32, F32, F32, HM_ABI_NUMERICS_F32, 0),
    CAP(HM_ABI_OP_ACT_FORWARD, F32, F32, F32, HM_ABI_NUMERICS_F32, ALL_ACTS),
    CAP(HM_ABI_OP_ACT_BACKWARD, F32, F32, F32, HM_ABI_NUMERICS_F32, ALL_ACTS),
    CAP(HM_ABI_OP_LOSS, F32, F32, F32, HM_ABI_NUMERICS_F32, ALL_LOSSES),
    CAP(HM_ABI_OP_REDUCE_ROWS, F32, F32, F32, HM_ABI_NUMERICS_F32, 0),
    CAP(HM_ABI_OP_REDUCE_COLS, F32, F32, F32, HM_ABI_NUMERICS_F32, 0),
    CAP(HM_ABI_OP_SUM_SQUARES, F32, F32, F32, HM_ABI_NUMERICS_F32, 0),
    CAP(HM_ABI_OP_CLIP, F32, F32, F32, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_SCALE, F32, F32, F32, HM_ABI_NUMERICS_F32, 0),
    CAP(HM_ABI_OP_AXPY, F32, F32, F32, HM_ABI_NUMERICS_F32, 0),
    CAP(HM_ABI_OP_GATHER_ROWS, F32, F32, F32, HM_ABI_NUMERICS_F32, 0),
    CAP(HM_ABI_OP_GATHER_ROWS, HM_ABI_DTYPE_U8, F32, F32, HM_ABI_NUMERICS_F32, 0),
    CAP(HM_ABI_OP_GATHER_ROWS, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_I32, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_FILL, F32, F32, F32, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_FILL, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_I32, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_COPY, F32, F32, F32, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_COPY, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_I32, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_COPY, HM_ABI_DTYPE_U8, HM_ABI_DTYPE_U8, HM_ABI_DTYPE_U8, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_SGD, F32, F32, F32, HM_ABI_NUMERICS_F32, 0),
    CAP(HM_ABI_OP_ADAM, F32, F32, F32, HM_ABI_NUMERICS_F32, 0),
    CAP(HM_ABI_OP_RMSPROP, F32, F32, F32, HM_ABI_NUMERICS_F32, 0),
    CAP(HM_ABI_OP_ADAMW, F32, F32, F32, HM_ABI_NUMERICS_F32, 0),
    CAP(HM_ABI_OP_LAMB, F32, F32, F32, HM_ABI_NUMERICS_F32, 0),
    /* Packed integers (abi/QUANT.md): exact on every ISA level. */
    CAP(HM_ABI_OP_QUANTIZE, F32, F32, HM_ABI_DTYPE_Q8, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_QUANTIZE, F32, F32, HM_ABI_DTYPE_Q4, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_QUANTIZE, F32, F32, HM_ABI_DTYPE_Q3, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_DEQUANTIZE, HM_ABI_DTYPE_Q8, F32, F32, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_DEQUANTIZE, HM_ABI_DTYPE_Q4, F32, F32, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_DEQUANTIZE, HM_ABI_DTYPE_Q3, F32, F32, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_GEMM_Q8, HM_ABI_DTYPE_Q8, HM_ABI_DTYPE_I32, F32, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_GEMM_Q4, HM_ABI_DTYPE_Q4, HM_ABI_DTYPE_I32, F32, HM_ABI_NUMERICS_EXACT, 0),
    CAP(HM_ABI_OP_GEMM_Q3, HM_ABI_DTYPE_Q3, HM_ABI_DTYPE_I32, F32, HM_ABI_NUMERICS_EXACT, 0),
};

const hm_abi_capability *cpu_caps_table(uint32_t *count) {
  *count = (uint32_t)(sizeof caps / sizeof caps[0]);
  return caps;
}

int cpu_caps_supports(uint32_t op, uint32_t dtype_in, uint32_t dtype_out, uint32_t variant) {
  for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
    if (caps[i].op != op || caps[i].dtype_in != dtype_in || caps[i].dtype_out != dtype_out) continue;
    if (caps[i].variants && (variant >= 64 || !(caps[i].variants & (1ull << variant)))) continue;
    return 1;
  }
  return 0;
}
