/*
 * The CPU plugin's capability table: what it declares, as data (SPEC.md §6).
 * program_create refuses anything not listed here.
 */
#include "cpu_internal.h"
#include "op_rules.h"

#define F32 HM_ABI_DTYPE_F32
#define CAP(op, din, dacc, dout, num, variants) {op, din, dacc, dout, num, 0, variants, 0.0f, {0, 0, 0}}

static const hm_abi_capability caps[] = {
    /* Speed hints are relative to f32 GEMM. BF16 rounds its inputs and then
     * runs sgemm, so it is slower (bench_lowbit: 0.46-0.58x at batch 64), and the auto
     * policy keeps f32 here. */
    {HM_ABI_OP_GEMM, F32, F32, F32, HM_ABI_NUMERICS_F32, 0, 0, 1.0f, {0, 0, 0}},
    {HM_ABI_OP_GEMM, HM_ABI_DTYPE_BF16, F32, F32, HM_ABI_NUMERICS_BF16, 0, 0, 0.5f, {0, 0, 0}},
#define ROW(...) CAP(__VA_ARGS__),
    HM_PORTABLE_CAPS(ROW)
    HM_WINDOW_CAPS(ROW)
#undef ROW
};

const hm_abi_capability *cpu_caps_table(uint32_t *count) {
  *count = (uint32_t)(sizeof caps / sizeof caps[0]);
  return caps;
}
