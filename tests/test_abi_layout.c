/*
 * The ABI header compiles on its own under -Wpedantic and its layout pins
 * hold (the static_asserts fire at compile time; this checks the runtime
 * values the asserts cannot: enum numbers are fixed forever).
 */
#include "harmonics/harmonics_abi.h"
#include "hm_test.h"

static void abi_enum_values_are_pinned(void) {
  HM_CHECK_EQ(HM_ABI_OP_GEMM, 1);
  HM_CHECK_EQ(HM_ABI_OP_LOSS, 5);
  HM_CHECK_EQ(HM_ABI_OP_GATHER_ROWS, 12);
  HM_CHECK_EQ(HM_ABI_OP_SGD, 20);
  HM_CHECK_EQ(HM_ABI_OP_LAMB, 24);
  HM_CHECK_EQ(HM_ABI_OP_GEMM_Q3, 34);
  HM_CHECK_EQ(HM_ABI_DTYPE_F32, 1);
  HM_CHECK_EQ(HM_ABI_DTYPE_Q3, 10);
  HM_CHECK_EQ(HM_ABI_ACT_SELU, 9);
  HM_CHECK_EQ(HM_ABI_LOSS_HUBER, 4);
  HM_CHECK_EQ(HM_ABI_STATUS_INCOMPATIBLE, 8);
  HM_CHECK_EQ(HM_ABI_OP_CONV2D, 40);
  HM_CHECK_EQ(HM_ABI_OP_CONV2D_BWD_DATA, 41);
  HM_CHECK_EQ(HM_ABI_OP_CONV2D_BWD_FILTER, 42);
  HM_CHECK_EQ(HM_ABI_OP_POOL2D, 43);
  HM_CHECK_EQ(HM_ABI_OP_POOL2D_BWD, 44);
  HM_CHECK_EQ(HM_ABI_OP_DROPOUT, 45);
  HM_CHECK_EQ(HM_ABI_POOL_AVG, 1);
  HM_CHECK_EQ(HM_ABI_OP_FLAG_ACCUMULATE, 8);
  HM_CHECK_EQ(HM_ABI_VERSION, 0x10001);
}

static void abi_struct_sizes(void) {
  HM_CHECK_EQ(sizeof(hm_abi_op), 272);
  HM_CHECK_EQ(sizeof(hm_abi_plugin), 296);
  HM_CHECK_EQ(sizeof(hm_abi_device_desc), 752);
  HM_CHECK_EQ(sizeof(hm_abi_capability), 48);
}

static const hm_test_case cases[] = {
    HM_TEST_CASE(abi_enum_values_are_pinned),
    HM_TEST_CASE(abi_struct_sizes),
};
HM_TEST_MAIN(cases)
