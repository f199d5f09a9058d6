/*
 * From an ABI op to a kernel launch of kernels/hm_ops.kern, shared by the
 * Vulkan, OpenCL and CUDA plugins: which kernel, its parameter block and
 * how many work-groups. Operand slots are fixed: in[0..2] bind to b0..b2 and
 * out[0..2] to b3..b5; the backend fills the word offsets (off[]) of the
 * buffers it binds.
 */
#ifndef HM_PLUGIN_DISPATCH_H_
#define HM_PLUGIN_DISPATCH_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum hm_kernel_id {
  HK_GEMM, HK_BIAS_ADD, HK_ACT_FWD, HK_SOFTMAX_FWD, HK_ACT_BWD, HK_SOFTMAX_BWD, HK_LOSS, HK_REDUCE_ROWS,
  HK_REDUCE_COLS, HK_SUM_SQUARES, HK_CLIP, HK_SCALE, HK_AXPY, HK_GATHER, HK_FILL, HK_COPY, HK_SGD, HK_ADAM,
  HK_RMSPROP, HK_LAMB, HK_QUANTIZE, HK_DEQUANTIZE, HK_GEMM_Q, HK_CONV2D, HK_CONV2D_BWD_DATA, HK_CONV2D_BWD_FILTER,
  HK_POOL2D, HK_POOL2D_BWD, HK_DROPOUT, HK_BATCH_NORM, HK_BATCH_NORM_BWD, HK_LAYER_NORM, HK_LAYER_NORM_BWD, HK_IM2COL,
  HK_GEMM_REG, HK_GEMM_X4, HK_GEMM_X8, HK_BIAS_ACT, HK_GEMM_QX4, HK_GEMM_DOT, HK_GEMM_SG, HK_COUNT
} hm_kernel_id;

/* The kernel's name in hm_ops.kern ("gemm", "softmax_fwd", ...). */
const char *hm_kernel_name(hm_kernel_id k);
/* Planner-owned GEMM flags above the ABI's (kernels read them in GEMM_FLAGS).
 * C's rows are four-word aligned (n % 4 == 0 and a 16-byte offset), so
 * gemm_x4 and gemm_sg store a row of their block in one four-word store: */
#define HM_KFLAG_C_X4 0x100u
/* gemm_x8's float8 path (vec8), A as is and B stored [k][n]: an invocation
 * takes two 8x8 blocks side by side (m % 8 == 0, n % 16 == 0). */
#define HM_KFLAG_N16 0x200u

/* Whether |k| is one of the f32 GEMM kernels (gemm, gemm_reg, gemm_x4, gemm_x8, gemm_dot, gemm_sg). */
int hm_kernel_is_gemm(hm_kernel_id k);

/* The parameter block every kernel takes (push constants in Vulkan, a
 * by-value struct in OpenCL and CUDA): 112 bytes. */
typedef struct hm_kparams {
  uint32_t off[8]; /* word offsets of b0..b5 */
  uint32_t dim[4];
  uint32_t flags, variant, aux0, aux1;
  float f[8];
  int32_t dyn[4];
} hm_kparams;

typedef struct hm_dispatch {
  hm_kernel_id kernel;
  hm_kparams p;
  uint32_t local_size; /* invocations per work-group (the kernel's fixed size) */
  uint32_t groups;     /* work-groups to launch */
  /* A window op split into |slices| launches of |slice_images| images each
   * (hm_dispatch_slice), so no invocation loops longer than a device allows;
   * 1 when not split. slice_words[k]: how far binding k moves per image. */
  uint32_t slices, slice_images, slice_words[6];
  /* A reduction over many work-groups (SUM_SQUARES of more than
   * HM_REDUCE_SPLIT elements) is two launches, as slices 0 and 1: |groups|
   * groups write partial results (one per invocation) to |scratch_words|
   * words the backend binds at b5 (offset 0), then one group combines them
   * in a fixed order, so the result does not depend on scheduling. 0 = no
   * scratch. */
  uint32_t scratch_words;
} hm_dispatch;

/* SUM_SQUARES above this many elements is reduced by several work-groups. */
#define HM_REDUCE_SPLIT 16384u

/* What a device's launches must respect and what suits it. */
typedef struct hm_dispatch_limits {
  uint32_t max_groups; /* caps the grid (kernels loop over the rest) */
  /* A device that stops any invocation after about this many loop
   * iterations (Mesa's llvmpipe/lavapipe: 65535): window ops are split by
   * images so each launch stays below it; an op that cannot (one image is
   * already too much, a GEMM with too long a k) is refused with the reason.
   * 0 = no limit. */
  uint32_t max_loop;
  /* The largest GEMM register block's side, 8 or 4 (where 8x8 sums spill
   * and loads are cheap enough that 4x4 blocks win: lavapipe reading texel
   * buffers). */
  uint32_t gemm_block;
  /* Where each work-group costs its own start-up (a CPU emulation: lavapipe
   * calls its compiled shader once per group), the grid of a grid-stride
   * kernel (GEMMs, element-wise ops, optimizers) is capped here instead of
   * at max_groups, so each invocation loops over more elements — but never
   * past max_loop: the grid grows back toward max_groups first. Window and
   * normalization ops keep max_groups. 0 = max_groups. */
  uint32_t spread_groups;
  /* Nonzero where the kernels' eight-wide vector paths compile (OpenCL's
   * float8): C = A Bᵀ (both operands contiguous along k) runs as gemm_dot,
   * each output a dot product of two rows summed in 8 lanes of k (PoCL
   * gains: no transposes in registers, 6 vector loads per 8 vector
   * multiply-adds), and a GEMM with B stored [k][n] whose 8x8 blocks all lie
   * inside C runs as gemm_x8 whatever its k and offsets (the float8 path
   * reads A's words one at a time, where four-word loads need multiples of
   * 4). Only plugins that measured it ask. */
  uint32_t vec8;
  /* The subgroup size (8 or more) where the kernels' subgroup shuffles
   * compile and run (Vulkan's subgroupShuffle): a GEMM that gemm_x4 would
   * run, with at least 8 rows and 4 x subgroup columns, goes to gemm_sg,
   * whose lanes share A's values by shuffles instead of each loading them.
   * 0 = none. */
  uint32_t subgroup;
} hm_dispatch_limits;

/* Which launches of a program must wait for the launches before them (a
 * Vulkan pipeline barrier): those that read or write bytes a launch since
 * the last barrier wrote, or write bytes one read. A launch's accesses are
 * its ops' operand extents (abi op rules; outputs count as read and written,
 * an operand without an extent as the rest of its buffer) and, when not
 * NULL, all of |scratch|. */
typedef struct hm_access {
  const void *buffer;
  uint64_t begin, end;
  int write;
} hm_access;
typedef struct hm_hazards {
  hm_access *pending; /* accessed since the last barrier */
  size_t n, cap;
  int always; /* out of memory once: every launch waits */
} hm_hazards;
/* Records the launch of ops[0..n_ops) (one op, or the ops a fused launch
 * covers) and returns 1 if it must wait for the launches recorded since the
 * last barrier — the caller then records one, and the pending set restarts
 * with this launch — else 0. */
int hm_hazards_launch(hm_hazards *h, const hm_abi_op *ops, size_t n_ops, const void *scratch);
void hm_hazards_free(hm_hazards *h);

/* Device option profile=on (Vulkan, OpenCL): each launch's op (index in
 * the program, and its code), kernel and variant, and its device time summed
 * over the runs after the first (which may include the driver's first-use
 * compilation). */
typedef struct hm_launch_time {
  uint32_t op, code, variant;
  hm_kernel_id kernel;
  double ms;
} hm_launch_time;
/* Prints the mean time of each of the |n| launches over runs 2..|runs|,
 * their sum, and |span_ms| (the time from the first launch's start to the
 * last one's end, summed over the same runs: the launches and the gaps
 * between them) to stderr, every line starting "PLUGIN profile:"; nothing
 * before a second run. |barriers|: how many the program records between
 * its launches (< 0: the plugin has none to count). */
void hm_print_launch_profile(const char *plugin, const char *device, const hm_launch_time *t, uint32_t n,
                             uint32_t runs, double span_ms, int barriers);

/* Plans |op| (already validated against the op rules and the plugin's
 * capabilities) for a device with |lim|. Returns 0, or nonzero with a
 * reason in |err| (sizes beyond 32-bit indexing, loops past max_loop). */
int hm_plan_dispatch_for(const hm_abi_op *op, const hm_dispatch_limits *lim, hm_dispatch *out, char *err, size_t cap);
/* The same with |max_groups| and the defaults: no loop limit, 8x8 GEMM
 * blocks. */
int hm_plan_dispatch(const hm_abi_op *op, uint32_t max_groups, hm_dispatch *out, char *err, size_t cap);
/* The parameter block and work-group count of slice |s| of |d|, whose
 * p.off[] the backend has filled for the whole op (p.variant may differ per
 * slice: a backend that specializes on it picks the kernel per slice). */
void hm_dispatch_slice(const hm_dispatch *d, uint32_t s, hm_kparams *p, uint32_t *groups);

/* Whether BIAS_ADD |bias| and the ACT_FORWARD |act| after it can run as one
 * bias_act launch: the activation reads exactly the sum the bias wrote, is
 * not softmax, and writes where neither the sum nor the bias lies. If so,
 * fills |d| and |fused|, an op whose operands are what the launch binds
 * (in[0] the bias, out[0] the sum, out[1] the activation), and returns 1. */
int hm_plan_bias_act(const hm_abi_op *bias, const hm_abi_op *act, uint32_t max_groups, hm_abi_op *fused,
                     hm_dispatch *d);

/* Whether the GEMM |gemm|, already planned in |d|, can also do the BIAS_ADD
 * |bias| after it (C += bias by column) and then the ACT_FORWARD |act| of
 * that sum (|act| may be NULL or any other op) in its store: the bias adds
 * to exactly C, the activation reads exactly C and writes where none of A,
 * B, C and the bias lies, nothing is softmax. Returns how many of the ops
 * after the GEMM it absorbs (0, 1 or 2), with |d| (VARIANT 1 + activation,
 * PARAM(2) its parameter) and |fused| (the GEMM with in[2] the bias and
 * out[1] the activation) updated. */
int hm_plan_gemm_epilogue(const hm_abi_op *gemm, const hm_abi_op *bias, const hm_abi_op *act, hm_dispatch *d,
                          hm_abi_op *fused);

/* GEMM VARIANT of a GEMM that also applies the activation gradient of
 * activation a to its result (HM_GEMM_ACT_BWD + a; hm_ops.kern). */
#define HM_GEMM_ACT_BWD 32u

/* Whether the GEMM |gemm|, already planned in |d|, can also do the
 * ACT_BACKWARD |act| after it in its store: the activation's gradient input
 * is exactly C, the activation needs only z (not relu's output: not sigmoid,
 * tanh, softmax or identity), its beta is 0, and its output dz lies apart
 * from A, B, C and z. Then C is still written, dz = C * f'(z) too: |d| gets
 * VARIANT HM_GEMM_ACT_BWD + activation and |fused| z at in[2], dz at out[1].
 * Returns 1 if so. */
int hm_plan_gemm_act_backward(const hm_abi_op *gemm, const hm_abi_op *act, hm_dispatch *d, hm_abi_op *fused);

/* The fusions above for op |op| (planned in |d|) and the ops after it
 * (|next|, |after|: NULL past the program's end), the GEMM epilogue first:
 * how many ops after |op| its launch absorbs (0, 1 or 2), with |d| and
 * |fused| (the op whose operands the launch binds) updated. */
int hm_plan_fusion(const hm_abi_op *op, const hm_abi_op *next, const hm_abi_op *after, uint32_t max_groups,
                   hm_dispatch *d, hm_abi_op *fused);

/* The capability table of the kernels in hm_ops.kern (every op at f32, the
 * packed formats exactly). */
const hm_abi_capability *hm_kernel_caps(uint32_t *n);

#ifdef __cplusplus
}
#endif
#endif /* HM_PLUGIN_DISPATCH_H_ */
