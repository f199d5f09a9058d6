/*
 * The GPU plugins' op-to-kernel planning (plugins/common/dispatch.c): which
 * GEMM kernel a shape gets, what a loop-limited device (lavapipe) refuses,
 * the split of long reductions, which bias/activation ops fuse, and the
 * work-groups of the normalization and im2col ops.
 */
#include <string.h>

#include "dispatch.h"
#include "hm_test.h"

static hm_abi_op gemm(uint64_t m, uint64_t n, uint64_t k, uint32_t flags, uint64_t off_a) {
  hm_abi_op op;
  memset(&op, 0, sizeof op);
  op.code = HM_ABI_OP_GEMM;
  op.flags = flags;
  op.dims[0] = m, op.dims[1] = n, op.dims[2] = k;
  op.params[0] = 1.0f;
  op.in[0].offset = off_a;
  for (int i = 0; i < HM_ABI_MAX_DYN; i++) op.dyn[i] = HM_ABI_DYN_NONE;
  return op;
}

/* A plan for a device with a loop limit and a GEMM block side (1024 groups). */
static int plan_limited(const hm_abi_op *op, uint32_t max_loop, uint32_t gemm_block, hm_dispatch *d, char *err,
                        size_t cap) {
  const hm_dispatch_limits lim = {.max_groups = 1024, .max_loop = max_loop, .gemm_block = gemm_block};
  return hm_plan_dispatch_for(op, &lim, d, err, cap);
}

static const char *kernel_of(hm_abi_op op) {
  hm_dispatch d;
  static char err[256];
  return hm_plan_dispatch(&op, 1024, &d, err, sizeof err) ? err : hm_kernel_name(d.kernel);
}

#define CHECK_KERNEL(op, name)                                            \
  do {                                                                    \
    const char *k_ = kernel_of(op);                                       \
    HM_CHECK_MSG(strcmp(k_, name) == 0, "%s, expected %s", k_, name);     \
  } while (0)

/* Four-word loads need the contiguous sizes (k; m when A is transposed; n
 * unless B is) and the offsets to be multiples of 4 words. */
static void gemm_kernels_follow_shape_and_alignment(void) {
  CHECK_KERNEL(gemm(64, 128, 784, HM_ABI_OP_FLAG_TRANS_B, 0), "gemm_x8"); /* vec8 not asked for */
  CHECK_KERNEL(gemm(128, 784, 64, HM_ABI_OP_FLAG_TRANS_A, 0), "gemm_x8");
  CHECK_KERNEL(gemm(4, 12, 8, 0, 0), "gemm_x4");
  CHECK_KERNEL(gemm(64, 128, 10, 0, 0), "gemm_reg");        /* k % 4 */
  CHECK_KERNEL(gemm(10, 128, 64, HM_ABI_OP_FLAG_TRANS_A, 0), "gemm_reg"); /* m % 4, A^T */
  CHECK_KERNEL(gemm(64, 10, 64, 0, 0), "gemm_reg");         /* n % 4, B as is */
  CHECK_KERNEL(gemm(64, 10, 64, HM_ABI_OP_FLAG_TRANS_B, 0), "gemm_x8");
  CHECK_KERNEL(gemm(64, 128, 784, 0, 8), "gemm_reg");       /* A 8 bytes in */
  CHECK_KERNEL(gemm(129, 3, 65, 0, 0), "gemm");
  hm_dispatch d;
  char err[256];
  hm_abi_op op = gemm(2080, 2080, 4, 0, 0);
  HM_CHECK_EQ(hm_plan_dispatch(&op, 1024, &d, err, sizeof err), 0);
  /* gemm_x8 runs in groups of 8 (docs/plugins.md): 260 x 260 blocks over at
   * most 1024 x 8 invocations, each takes 9, so 939 groups do. */
  HM_CHECK_EQ(d.local_size, 8u);
  HM_CHECK_EQ(d.groups, 939);
  /* A device that asks for vec8 (PoCL) runs C = A Bᵀ as gemm_dot: a
   * group of 8 per 8x8 block, 8 x 16 of them for a 64 x 128 C. */
  const hm_dispatch_limits dot = {.max_groups = 1024, .gemm_block = 8, .vec8 = 1};
  op = gemm(64, 128, 784, HM_ABI_OP_FLAG_TRANS_B, 0);
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &dot, &d, err, sizeof err), 0);
  HM_CHECK_STR_CONTAINS(hm_kernel_name(d.kernel), "gemm_dot");
  HM_CHECK_EQ(d.local_size, 8u);
  HM_CHECK_EQ(d.groups, 8 * 16);
  op = gemm(64, 128, 4, HM_ABI_OP_FLAG_TRANS_B, 0); /* one four-word step of k */
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &dot, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_DOT);
  op = gemm(64, 128, 784, HM_ABI_OP_FLAG_TRANS_A | HM_ABI_OP_FLAG_TRANS_B, 0); /* A along m: no dot products */
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &dot, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_X8);
  /* And gemm_x8's float8 path takes B stored [k][n] at any k and offset
   * where every 8x8 block lies inside C (gemm_reg without vec8, above). */
  op = gemm(64, 120, 10, 0, 0);
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &dot, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_X8);
  HM_CHECK_EQ(d.local_size, 8u);
  HM_CHECK_EQ(d.groups, 8 * 15 / 8); /* a block per invocation */
  HM_CHECK_EQ(d.p.flags, 0u);
  /* Where B's rows are 16 words (n % 16 == 0) and A is as is, two blocks
   * side by side per invocation (HM_KFLAG_N16): half the invocations. */
  op = gemm(64, 128, 10, 0, 0);
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &dot, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_X8);
  HM_CHECK_EQ(d.p.flags, HM_KFLAG_N16);
  HM_CHECK_EQ(d.groups, 8 * 8 / 8);
  op = gemm(1024, 1024, 1024, 0, 0);
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &dot, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_X8);
  HM_CHECK_EQ(d.p.flags, HM_KFLAG_N16);
  op = gemm(128, 784, 64, HM_ABI_OP_FLAG_TRANS_A, 0); /* A transposed: one block, four rows at a time */
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &dot, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_X8);
  HM_CHECK_EQ(d.p.flags, HM_ABI_OP_FLAG_TRANS_A);
  op = gemm(64, 128, 784, 0, 8); /* A 8 bytes in */
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &dot, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_X8);
  op = gemm(10, 128, 64, HM_ABI_OP_FLAG_TRANS_A, 0); /* blocks past C's edge: the array form's four-word loads */
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &dot, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_REG);
  op = gemm(64, 128, 10, HM_ABI_OP_FLAG_TRANS_B, 0); /* B stored [n][k], k % 4: one-word loads */
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &dot, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_REG);
  /* A device whose 8x8 sums spill (lavapipe with texel operands) takes 4x4
   * four-word blocks: 16 x 32 of them for a 64 x 128 C. */
  op = gemm(64, 128, 784, HM_ABI_OP_FLAG_TRANS_B, 0);
  HM_CHECK_EQ(plan_limited(&op, 20000, 4, &d, err, sizeof err), 0);
  HM_CHECK_STR_CONTAINS(hm_kernel_name(d.kernel), "gemm_x4");
  HM_CHECK_EQ(d.groups, 16 * 32 / 64);
  HM_CHECK_EQ(d.p.flags, HM_ABI_OP_FLAG_TRANS_B | HM_KFLAG_C_X4); /* rows of C four-word aligned */
  op.out[0].offset = 8; /* C 8 bytes in: one-word stores */
  HM_CHECK_EQ(plan_limited(&op, 20000, 4, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.p.flags, HM_ABI_OP_FLAG_TRANS_B);
}

/* A device with subgroup shuffles of 8 lanes (lavapipe) runs gemm_x4's
 * GEMMs as gemm_sg where C has 8 rows and 32 columns: a subgroup per 8 x 32
 * tile. */
static void subgroup_gemm(void) {
  const hm_dispatch_limits sg = {.max_groups = 1024, .max_loop = 20000, .gemm_block = 4, .subgroup = 8};
  hm_dispatch d;
  char err[256];
  hm_abi_op op = gemm(64, 128, 784, HM_ABI_OP_FLAG_TRANS_B, 0);
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &sg, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_SG);
  HM_CHECK_EQ(d.local_size, 64u);
  HM_CHECK_EQ(d.groups, 8 * 4 * 8 / 64); /* 8 x 4 tiles of 8 lanes */
  HM_CHECK_EQ(d.p.flags, HM_ABI_OP_FLAG_TRANS_B | HM_KFLAG_C_X4);
  op = gemm(784, 128, 64, HM_ABI_OP_FLAG_TRANS_A, 0); /* the weight gradient */
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &sg, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_SG);
  HM_CHECK_EQ(d.groups, 98 * 4 * 8 / 64);
  HM_CHECK_EQ(d.p.flags, HM_ABI_OP_FLAG_TRANS_A | HM_KFLAG_C_X4);
  op = gemm(64, 28, 784, HM_ABI_OP_FLAG_TRANS_B, 0); /* narrower than a tile */
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &sg, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_X4);
  op = gemm(4, 128, 784, HM_ABI_OP_FLAG_TRANS_B, 0); /* shorter than a tile */
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &sg, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_X4);
  op = gemm(64, 128, 10, 0, 0); /* no four-word loads: as without subgroups */
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &sg, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_REG);
  /* Where 8x8 blocks win (storage operands), subgroups do not change them. */
  const hm_dispatch_limits sg8 = {.max_groups = 1024, .gemm_block = 8, .subgroup = 8};
  op = gemm(64, 128, 784, HM_ABI_OP_FLAG_TRANS_B, 0);
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &sg8, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.kernel, HK_GEMM_X8);
  /* Its loops count against a loop-limited device: a tile of k = 100,000 is
   * 25,000 steps of 4, past a limit of 10,000. */
  op = gemm(80, 32, 100000, HM_ABI_OP_FLAG_TRANS_B, 0);
  const hm_dispatch_limits short_loop = {.max_groups = 1, .max_loop = 10000, .gemm_block = 4, .subgroup = 8};
  HM_CHECK(hm_plan_dispatch_for(&op, &short_loop, &d, err, sizeof err) != 0);
  HM_CHECK_STR_CONTAINS(err, "GEMM");
}

/* Packed matmuls: 4x4 blocks (gemm_qx4, the dtype as the variant) where C
 * has 4 rows and columns, else one output per invocation (gemm_q, the dtype
 * in aux0); both count their loops against a loop-limited device. */
static void packed_gemm_kernels(void) {
  const uint32_t code[3] = {HM_ABI_OP_GEMM_Q8, HM_ABI_OP_GEMM_Q4, HM_ABI_OP_GEMM_Q3};
  const uint32_t dtype[3] = {HM_ABI_DTYPE_Q8, HM_ABI_DTYPE_Q4, HM_ABI_DTYPE_Q3};
  hm_dispatch d;
  char err[256] = "";
  for (int q = 0; q < 3; q++) {
    hm_abi_op op = gemm(64, 128, 784, 0, 0);
    op.code = code[q];
    op.dtype_in = dtype[q];
    op.dtype_out = HM_ABI_DTYPE_F32;
    CHECK_KERNEL(op, "gemm_qx4");
    HM_CHECK_EQ(hm_plan_dispatch(&op, 1024, &d, err, sizeof err), 0);
    HM_CHECK_EQ(d.p.variant, dtype[q]);
    HM_CHECK_EQ(d.groups, 16 * 32 / 64);
    op.dims[0] = 3; /* a GEMV-like C */
    CHECK_KERNEL(op, "gemm_q");
    HM_CHECK_EQ(hm_plan_dispatch(&op, 1024, &d, err, sizeof err), 0);
    HM_CHECK_EQ(d.p.aux0, dtype[q]);
    HM_CHECK_EQ(d.p.variant, 0);
    /* 3000 blocks of 64 along k: (16 or 8) + 1 loop iterations each per 4x4 block. */
    op.dims[0] = 8, op.dims[1] = 8, op.dims[2] = 64 * 3000;
    HM_CHECK(plan_limited(&op, 20000, 4, &d, err, sizeof err) != 0);
    HM_CHECK_STR_CONTAINS(err, q == 0 ? "needs 51000 loop" : "needs 27000 loop");
  }
}

/* Element-wise launches that read and store four words at a time (VARIANT
 * 3 of gather, 1 of Adam) where lengths and word offsets allow. */
static void four_word_launches(void) {
  hm_dispatch d;
  char err[256] = "";
  hm_dispatch_limits lim = {.max_groups = 1024, .max_loop = 20000, .gemm_block = 4, .spread_groups = 64};
  /* The parameter arena's 101,904 (16-float aligned) elements: 25,476 items,
   * 7 per invocation in 57 groups; not with an operand off a four-word
   * boundary, nor for a length that is not a multiple of 4. */
  hm_abi_op op = gemm(101904, 0, 0, 0, 0);
  op.code = HM_ABI_OP_ADAMW;
  op.dims[1] = op.dims[2] = 0;
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &lim, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.p.variant, 1);
  HM_CHECK_EQ(d.p.aux0, 1); /* AdamW */
  HM_CHECK_EQ(d.groups, 57);
  op.out[2].offset = 8;
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &lim, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.p.variant, 0);
  op.out[2].offset = 0, op.dims[0] = 101906;
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &lim, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.p.variant, 0);
  /* Gathering 64 rows of 784 bytes: 12,544 four-byte items; 3-byte rows one at a time. */
  op = gemm(64, 784, 60000, 0, 0);
  op.code = HM_ABI_OP_GATHER_ROWS;
  op.dtype_in = HM_ABI_DTYPE_U8;
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &lim, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.p.variant, 3);
  HM_CHECK_EQ(d.groups, 49); /* 12,544 items: 4 per invocation */
  op.dims[1] = 3;
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &lim, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.p.variant, 1);
}

/* A launch waits (a barrier before it) only for what launches since the
 * last barrier wrote (read after write, write after write) or read (write
 * after read), by byte range; a scratch buffer counts as written. */
static void launches_wait_only_on_hazards(void) {
  static char buf_x, buf_y, buf_g;
  hm_abi_buffer *x = (hm_abi_buffer *)&buf_x, *y = (hm_abi_buffer *)&buf_y, *g = (hm_abi_buffer *)&buf_g;
  hm_hazards h = {0};
  hm_abi_op s = gemm(100, 0, 0, 0, 0); /* SCALE of 100 floats in place */
  s.code = HM_ABI_OP_SCALE, s.dims[1] = s.dims[2] = 0, s.out[0] = (hm_abi_operand){x, 0};
  HM_CHECK_EQ(hm_hazards_launch(&h, &s, 1, NULL), 0); /* the first */
  s.out[0] = (hm_abi_operand){x, 400};                /* the next 100 floats of x */
  HM_CHECK_EQ(hm_hazards_launch(&h, &s, 1, NULL), 0);
  s.out[0] = (hm_abi_operand){y, 0};
  HM_CHECK_EQ(hm_hazards_launch(&h, &s, 1, NULL), 0);
  hm_abi_op gm = gemm(10, 10, 10, 0, 0); /* reads x[0..100), y[0..100); writes g */
  gm.in[0] = (hm_abi_operand){x, 0}, gm.in[1] = (hm_abi_operand){y, 0}, gm.out[0] = (hm_abi_operand){g, 0};
  HM_CHECK_EQ(hm_hazards_launch(&h, &gm, 1, NULL), 1); /* read after write: a barrier, then only gm pends */
  s.out[0] = (hm_abi_operand){x, 400};
  HM_CHECK_EQ(hm_hazards_launch(&h, &s, 1, NULL), 0); /* x[100..200) was not read */
  s.out[0] = (hm_abi_operand){x, 396};
  HM_CHECK_EQ(hm_hazards_launch(&h, &s, 1, NULL), 1); /* x[99] was read by gm: write after read */
  s.out[0] = (hm_abi_operand){x, 396};
  HM_CHECK_EQ(hm_hazards_launch(&h, &s, 1, NULL), 1); /* write after write */
  s.out[0] = (hm_abi_operand){y, 4000};
  HM_CHECK_EQ(hm_hazards_launch(&h, &s, 1, &h), 0);
  HM_CHECK_EQ(hm_hazards_launch(&h, &s, 0, &h), 1); /* the same scratch twice */
  hm_hazards_free(&h);
  HM_CHECK(h.pending == NULL && h.n == 0);
}

/* A CPU device's grid-stride launches spread over spread_groups groups with
 * equal shares — unless the shares would pass the loop limit. */
static void cpu_devices_take_few_groups(void) {
  hm_dispatch d;
  char err[256] = "";
  hm_abi_op op = gemm(101906, 0, 0, 0, 0); /* not a multiple of 4: one element an iteration */
  op.code = HM_ABI_OP_ADAM;
  op.dims[1] = op.dims[2] = 0;
  hm_dispatch_limits lim = {.max_groups = 1024, .max_loop = 20000, .gemm_block = 4, .spread_groups = 64};
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &lim, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.p.variant, 0);
  HM_CHECK_EQ(d.groups, 64); /* 25 elements per invocation */
  lim.spread_groups = 0;
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &lim, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.groups, 797); /* 1593 would take one each: 2 each in 797 */

  /* 64 x 128 x 784 forward GEMM: 512 4x4 blocks, 8 groups either way;
   * the 128 x 784 x 64 weight gradient: 6272 blocks, 2 per invocation in 49 groups. */
  op = gemm(64, 128, 784, HM_ABI_OP_FLAG_TRANS_B, 0);
  lim.spread_groups = 64;
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &lim, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.groups, 8);
  op = gemm(128, 784, 64, HM_ABI_OP_FLAG_TRANS_A, 0);
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &lim, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.groups, 49);
  /* 400 M elements: 64 groups would loop 97,657 times each; 313 groups loop 19,969. */
  op = gemm(400000000, 0, 0, 0, 0);
  op.code = HM_ABI_OP_SCALE;
  op.dims[1] = op.dims[2] = 0;
  HM_CHECK_EQ(hm_plan_dispatch_for(&op, &lim, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.groups, 313);
  lim.max_groups = 256; /* not enough: refused, not cut short */
  HM_CHECK(hm_plan_dispatch_for(&op, &lim, &d, err, sizeof err) != 0);
  HM_CHECK_STR_CONTAINS(err, "a 400000000x0x0 launch needs 24415 loop iterations per invocation");
}

/* lavapipe ends loops after 65535 iterations in all: a GEMM whose
 * invocations would loop longer is refused, naming the counts. */
static void loop_limited_devices_refuse_long_gemms(void) {
  hm_dispatch d;
  char err[256] = "";
  hm_abi_op op = gemm(16, 16, 8192, 0, 0);
  HM_CHECK_EQ(plan_limited(&op, 20000, 8, &d, err, sizeof err), 0); /* 2049 iterations */
  op = gemm(16, 16, 90000, 0, 0);
  HM_CHECK(plan_limited(&op, 20000, 8, &d, err, sizeof err) != 0);
  HM_CHECK_STR_CONTAINS(err, "a 16x16x90000 GEMM needs 22501 loop iterations per invocation, more than this device "
                             "runs (20000)");
  op = gemm(16, 16, 90000, 0, 0);
  HM_CHECK_EQ(hm_plan_dispatch(&op, 1024, &d, err, sizeof err), 0); /* no limit elsewhere */
}

/* SUM_SQUARES past HM_REDUCE_SPLIT: partial sums on many groups into b5
 * scratch, one per invocation (variant 1), then one group sums them
 * (variant 2). */
static void long_reductions_split_over_work_groups(void) {
  hm_abi_op op;
  memset(&op, 0, sizeof op);
  for (int i = 0; i < HM_ABI_MAX_DYN; i++) op.dyn[i] = HM_ABI_DYN_NONE;
  op.code = HM_ABI_OP_SUM_SQUARES;
  op.dims[0] = HM_REDUCE_SPLIT;
  hm_dispatch d;
  char err[256];
  HM_CHECK_EQ(hm_plan_dispatch(&op, 1024, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.slices, 1);
  HM_CHECK_EQ(d.groups, 1);
  HM_CHECK_EQ(d.scratch_words, 0);
  op.dims[0] = 100352; /* 784 x 128 */
  HM_CHECK_EQ(hm_plan_dispatch(&op, 1024, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.slices, 2);
  HM_CHECK_EQ(d.scratch_words, 25 * 128); /* 4096 elements or more a group of 128 */
  hm_kparams kp;
  uint32_t groups;
  hm_dispatch_slice(&d, 0, &kp, &groups);
  HM_CHECK_EQ(kp.variant, 3); /* a multiple of 4 at offset 0: four words a read */
  op.in[0].offset = 8;
  HM_CHECK_EQ(hm_plan_dispatch(&op, 1024, &d, err, sizeof err), 0);
  hm_dispatch_slice(&d, 0, &kp, &groups);
  HM_CHECK_EQ(kp.variant, 1);
  HM_CHECK_EQ(groups, 25);
  HM_CHECK_EQ(kp.aux1, 25 * 128);
  hm_dispatch_slice(&d, 1, &kp, &groups);
  HM_CHECK_EQ(kp.variant, 2);
  HM_CHECK_EQ(groups, 1);
  op.dims[0] = (uint64_t)1 << 30; /* capped at max_groups */
  HM_CHECK_EQ(plan_limited(&op, 20000, 8, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.groups, 1024);
  HM_CHECK_EQ(d.scratch_words, 1024 * 128);
}

/* A BIAS_ADD and the ACT_FORWARD of its sum fuse into one bias_act launch;
 * pairs that are not exactly that do not. */
static void bias_and_activation_fuse(void) {
  /* Two distinct fake buffers: the planner compares handles, never reads them. */
  static char buf_z, buf_y;
  hm_abi_buffer *z = (hm_abi_buffer *)&buf_z, *y = (hm_abi_buffer *)&buf_y;
  hm_abi_op bias, act, fused;
  memset(&bias, 0, sizeof bias);
  for (int i = 0; i < HM_ABI_MAX_DYN; i++) bias.dyn[i] = HM_ABI_DYN_NONE;
  act = bias;
  bias.code = HM_ABI_OP_BIAS_ADD, bias.dims[0] = 64, bias.dims[1] = 128;
  bias.in[0] = (hm_abi_operand){y, 4096}, bias.out[0] = (hm_abi_operand){z, 256};
  act.code = HM_ABI_OP_ACT_FORWARD, act.variant = HM_ABI_ACT_LEAKY_RELU, act.dims[0] = 64, act.dims[1] = 128;
  act.params[0] = 0.25f, act.dyn[0] = 3;
  act.in[0] = bias.out[0], act.out[0] = (hm_abi_operand){y, 8192};
  hm_dispatch d;
  HM_CHECK_EQ(hm_plan_bias_act(&bias, &act, 1024, &fused, &d), 1);
  HM_CHECK_STR_CONTAINS(hm_kernel_name(d.kernel), "bias_act");
  HM_CHECK_EQ(d.p.variant, HM_ABI_ACT_LEAKY_RELU);
  HM_CHECK_EQ(d.p.dyn[0], 3);
  HM_CHECK(d.p.f[0] == 0.25f);
  HM_CHECK_EQ(d.groups, 64 * 128 / 64);
  HM_CHECK(fused.in[0].buffer == y && fused.in[0].offset == 4096 && fused.out[0].buffer == z &&
           fused.out[1].offset == 8192);
  hm_abi_op other = act;
  other.variant = HM_ABI_ACT_SOFTMAX; /* a row operation */
  HM_CHECK_EQ(hm_plan_bias_act(&bias, &other, 1024, &fused, &d), 0);
  other = act;
  other.in[0].offset += 4; /* not the sum the bias wrote */
  HM_CHECK_EQ(hm_plan_bias_act(&bias, &other, 1024, &fused, &d), 0);
  other = act;
  other.dims[1] = 64;
  HM_CHECK_EQ(hm_plan_bias_act(&bias, &other, 1024, &fused, &d), 0);
  other = act;
  other.out[0] = (hm_abi_operand){z, 256 + 64 * 128 * 4 - 4}; /* its last word is the sum's */
  HM_CHECK_EQ(hm_plan_bias_act(&bias, &other, 1024, &fused, &d), 0);
  other.out[0] = (hm_abi_operand){y, 4096 + 127 * 4}; /* its first word is the bias's last */
  HM_CHECK_EQ(hm_plan_bias_act(&bias, &other, 1024, &fused, &d), 0);
  other.out[0] = (hm_abi_operand){y, 4096 + 128 * 4}; /* just past the bias */
  HM_CHECK_EQ(hm_plan_bias_act(&bias, &other, 1024, &fused, &d), 1);
  HM_CHECK_EQ(hm_plan_bias_act(&act, &bias, 1024, &fused, &d), 0); /* the wrong order */
}

/* The backward GEMM into a hidden layer (dA = dZ2 . W2) takes the relu
 * gradient after it (dz = dA f'(z)) into its store; an activation that
 * needs its output (tanh), a gradient that accumulates, one that reads
 * another C, or a dz over C do not fuse. */
static void gemm_takes_the_activation_gradient(void) {
  static char buf_a, buf_c, buf_z;
  hm_abi_buffer *a = (hm_abi_buffer *)&buf_a, *c = (hm_abi_buffer *)&buf_c, *z = (hm_abi_buffer *)&buf_z;
  hm_abi_op g = gemm(64, 128, 10, 0, 0), act, other, fused;
  g.in[0].buffer = a, g.in[1] = (hm_abi_operand){a, 64 * 10 * 4}, g.out[0] = (hm_abi_operand){c, 0};
  memset(&act, 0, sizeof act);
  for (int i = 0; i < HM_ABI_MAX_DYN; i++) act.dyn[i] = HM_ABI_DYN_NONE;
  act.code = HM_ABI_OP_ACT_BACKWARD, act.variant = HM_ABI_ACT_RELU, act.dims[0] = 64, act.dims[1] = 128;
  act.in[0] = (hm_abi_operand){z, 0}, act.in[1] = (hm_abi_operand){z, 64 * 128 * 4}, act.in[2] = g.out[0];
  act.out[0] = (hm_abi_operand){c, 64 * 128 * 4};
  hm_dispatch d;
  char err[256];
  HM_CHECK_EQ(hm_plan_dispatch(&g, 1024, &d, err, sizeof err), 0);
  HM_CHECK_EQ(hm_plan_fusion(&g, &act, NULL, 1024, &d, &fused), 1);
  HM_CHECK_EQ(d.p.variant, HM_GEMM_ACT_BWD + HM_ABI_ACT_RELU);
  HM_CHECK(fused.in[2].buffer == z && fused.in[2].offset == 0 && fused.out[1].buffer == c &&
           fused.out[1].offset == 64 * 128 * 4 && fused.out[0].buffer == c && fused.out[0].offset == 0);
  const int refused = 4;
  for (int r = 0; r < refused; r++) {
    other = act;
    if (r == 0) other.variant = HM_ABI_ACT_TANH;
    if (r == 1) other.params[1] = 1.0f; /* dz += */
    if (r == 2) other.in[2].offset = 4;
    if (r == 3) other.out[0].offset = 64 * 128 * 4 - 4;
    HM_CHECK_EQ(hm_plan_dispatch(&g, 1024, &d, err, sizeof err), 0);
    HM_CHECK_EQ(hm_plan_gemm_act_backward(&g, &other, &d, &fused), 0);
    HM_CHECK_EQ(d.p.variant, 0);
  }
}

/* A GEMM takes the BIAS_ADD of its C, and the ACT_FORWARD of that sum,
 * into its store when nothing it reads or writes meets the activation's
 * output. */
static void gemm_epilogue_takes_bias_and_activation(void) {
  static char buf_a, buf_c, buf_y;
  hm_abi_buffer *a = (hm_abi_buffer *)&buf_a, *c = (hm_abi_buffer *)&buf_c, *y = (hm_abi_buffer *)&buf_y;
  hm_abi_op g = gemm(64, 128, 784, HM_ABI_OP_FLAG_TRANS_B, 0), bias, act, fused;
  g.in[0].buffer = a, g.in[1] = (hm_abi_operand){a, 64 * 784 * 4}, g.out[0] = (hm_abi_operand){c, 0};
  memset(&bias, 0, sizeof bias);
  for (int i = 0; i < HM_ABI_MAX_DYN; i++) bias.dyn[i] = HM_ABI_DYN_NONE;
  act = bias;
  bias.code = HM_ABI_OP_BIAS_ADD, bias.dims[0] = 64, bias.dims[1] = 128;
  bias.in[0] = (hm_abi_operand){y, 0}, bias.out[0] = g.out[0];
  act.code = HM_ABI_OP_ACT_FORWARD, act.variant = HM_ABI_ACT_RELU, act.dims[0] = 64, act.dims[1] = 128;
  act.in[0] = g.out[0], act.out[0] = (hm_abi_operand){y, 512};
  hm_dispatch d;
  char err[256];
  HM_CHECK_EQ(hm_plan_dispatch(&g, 1024, &d, err, sizeof err), 0);
  HM_CHECK_EQ(hm_plan_gemm_epilogue(&g, &bias, &act, &d, &fused), 2);
  HM_CHECK_EQ(d.p.variant, 2 + HM_ABI_ACT_RELU);
  HM_CHECK(fused.in[2].buffer == y && fused.in[2].offset == 0 && fused.out[1].buffer == y &&
           fused.out[1].offset == 512);
  /* Without a following activation (the logits before the loss): the bias only. */
  HM_CHECK_EQ(hm_plan_dispatch(&g, 1024, &d, err, sizeof err), 0);
  HM_CHECK_EQ(hm_plan_gemm_epilogue(&g, &bias, NULL, &d, &fused), 1);
  HM_CHECK_EQ(d.p.variant, 1);
  HM_CHECK(fused.out[1].buffer == NULL);
  /* An activation writing over A (read by other invocations meanwhile): the bias only. */
  hm_abi_op other = act;
  other.out[0] = (hm_abi_operand){a, 64 * 784 * 4 - 4};
  HM_CHECK_EQ(hm_plan_dispatch(&g, 1024, &d, err, sizeof err), 0);
  HM_CHECK_EQ(hm_plan_gemm_epilogue(&g, &bias, &other, &d, &fused), 1);
  /* A bias that adds elsewhere, or lies inside C: nothing. */
  other = bias;
  other.out[0].offset = 4;
  HM_CHECK_EQ(hm_plan_dispatch(&g, 1024, &d, err, sizeof err), 0);
  HM_CHECK_EQ(hm_plan_gemm_epilogue(&g, &other, &act, &d, &fused), 0);
  HM_CHECK_EQ(d.p.variant, 0);
  other = bias;
  other.in[0] = (hm_abi_operand){c, 64 * 128 * 4 - 8};
  HM_CHECK_EQ(hm_plan_gemm_epilogue(&g, &other, &act, &d, &fused), 0);
}

static void norm_and_im2col_plans(void) {
  hm_abi_op op;
  memset(&op, 0, sizeof op);
  for (int i = 0; i < HM_ABI_MAX_DYN; i++) op.dyn[i] = HM_ABI_DYN_NONE;
  hm_dispatch d;
  char err[256];
  /* Layer norm's backward: a work-group per row and one for the parameters. */
  op.code = HM_ABI_OP_LAYER_NORM_BWD;
  op.dims[0] = 1, op.dims[1] = 7;
  HM_CHECK_EQ(hm_plan_dispatch(&op, 1024, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.groups, 2);
  op.dims[0] = 5000;
  HM_CHECK_EQ(hm_plan_dispatch(&op, 1024, &d, err, sizeof err), 0);
  HM_CHECK_EQ(d.groups, 1024);
  HM_CHECK(plan_limited(&op, 4000, 8, &d, err, sizeof err) != 0);
  /* IM2COL: one element per invocation of [N*Ho*Wo, C*KH*KW]. */
  memset(&op, 0, sizeof op);
  for (int i = 0; i < HM_ABI_MAX_DYN; i++) op.dyn[i] = HM_ABI_DYN_NONE;
  op.code = HM_ABI_OP_IM2COL;
  op.dims[0] = 2, op.dims[1] = HM_ABI_PACK2(3, 1), op.dims[2] = HM_ABI_PACK2(5, 5), op.dims[3] = 1;
  float g[8] = {3, 3, 1, 1, 0, 0, 1, 1};
  memcpy(op.params, g, sizeof g);
  HM_CHECK_EQ(plan_limited(&op, 20000, 8, &d, err, sizeof err), 0);
  HM_CHECK_STR_CONTAINS(hm_kernel_name(d.kernel), "im2col");
  HM_CHECK_EQ(d.groups, (2 * 9 * 27 + 63) / 64);
  HM_CHECK_EQ(d.slices, 1);
}

int main(int argc, char **argv) {
  static const hm_test_case cases[] = {
      HM_TEST_CASE(gemm_kernels_follow_shape_and_alignment),
      HM_TEST_CASE(subgroup_gemm),
      HM_TEST_CASE(packed_gemm_kernels),
      HM_TEST_CASE(launches_wait_only_on_hazards),
      HM_TEST_CASE(cpu_devices_take_few_groups),
      HM_TEST_CASE(four_word_launches),
      HM_TEST_CASE(loop_limited_devices_refuse_long_gemms),
      HM_TEST_CASE(long_reductions_split_over_work_groups),
      HM_TEST_CASE(bias_and_activation_fuse),
      HM_TEST_CASE(gemm_epilogue_takes_bias_and_activation),
      HM_TEST_CASE(gemm_takes_the_activation_gradient),
      HM_TEST_CASE(norm_and_im2col_plans),
  };
  return hm_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
}
