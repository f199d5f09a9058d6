/*
 * harmonics_abi.h — the Harmonics backend plugin ABI, version 1.
 *
 * This is a standalone header. It includes nothing but <stdint.h> and
 * <stddef.h>, compiles as C99/C11 and C++, and is the only thing a backend
 * plugin sees of Harmonics. The rules it follows are numbered in abi/SPEC.md;
 * the layout is pinned by static_asserts at the bottom of this file.
 *
 * Every change to a layout or meaning here bumps the version:
 *   - HM_ABI_VERSION_MAJOR on any incompatible change,
 *   - HM_ABI_VERSION_MINOR when something is appended (a field at the end of a
 *     struct, a new enum value, a new op code).
 * Enum values are fixed forever: never reused, never reordered.
 *
 * Threading contract (SPEC.md §5):
 *   - hm_plugin_query, init and shutdown are called by one thread at a time.
 *   - device_count and device_describe are thread-safe.
 *   - Calls on different hm_abi_device objects are independent.
 *   - On one device, buffer_* and program_* calls may come from any thread but
 *     are externally synchronized by the host (never two at once on the same
 *     device), and no buffer is freed or written while a program using it runs.
 *   - A plugin reports errors through the host's report callback from the
 *     thread of the failing call, before that call returns.
 */
#ifndef HARMONICS_ABI_H_
#define HARMONICS_ABI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ===== Versions ===== */

#define HM_ABI_VERSION_MAJOR 1
#define HM_ABI_VERSION_MINOR 1
#define HM_ABI_MAKE_VERSION(major, minor) ((((uint32_t)(major)) << 16) | ((uint32_t)(minor) & 0xffffu))
#define HM_ABI_VERSION HM_ABI_MAKE_VERSION(HM_ABI_VERSION_MAJOR, HM_ABI_VERSION_MINOR)
#define HM_ABI_VERSION_GET_MAJOR(v) ((uint32_t)(v) >> 16)
#define HM_ABI_VERSION_GET_MINOR(v) ((uint32_t)(v) & 0xffffu)

/* The one symbol a plugin exports. */
#define HM_PLUGIN_QUERY_SYMBOL "hm_plugin_query"

#if defined(_WIN32)
#define HM_ABI_EXPORT __declspec(dllexport)
#else
#define HM_ABI_EXPORT __attribute__((visibility("default")))
#endif

/* ===== Status codes ===== */

/* Every fallible entry returns one of these. Unknown values are treated by the
 * host as HM_ABI_STATUS_INTERNAL. The detail goes to hm_abi_host.report. */
typedef enum hm_abi_status {
  HM_ABI_OK = 0,
  /* The arguments are wrong; the same call will fail again. */
  HM_ABI_STATUS_INVALID_ARGUMENT = 1,
  /* An offset, size or index is outside its valid range. */
  HM_ABI_STATUS_OUT_OF_RANGE = 2,
  /* The object is not in a state that allows the call. */
  HM_ABI_STATUS_FAILED_PRECONDITION = 3,
  /* A device, driver or runtime is absent or went away; retrying may help. */
  HM_ABI_STATUS_UNAVAILABLE = 4,
  /* The op, precision or entry is not implemented by this plugin. */
  HM_ABI_STATUS_UNIMPLEMENTED = 5,
  /* Memory (host or device) is exhausted. */
  HM_ABI_STATUS_RESOURCE_EXHAUSTED = 6,
  /* Data is corrupt. */
  HM_ABI_STATUS_DATA_LOSS = 7,
  /* ABI or format versions do not agree. */
  HM_ABI_STATUS_INCOMPATIBLE = 8,
  /* A bug or an unexpected failure inside the plugin or its driver. */
  HM_ABI_STATUS_INTERNAL = 9,
  /* A named thing (device index, option) does not exist. */
  HM_ABI_STATUS_NOT_FOUND = 10,
  HM_ABI_STATUS_MAX_ENUM = 0x7fffffff
} hm_abi_status;

typedef enum hm_abi_log_level {
  HM_ABI_LOG_ERROR = 0,
  HM_ABI_LOG_WARNING = 1,
  HM_ABI_LOG_INFO = 2,
  HM_ABI_LOG_DEBUG = 3,
  HM_ABI_LOG_MAX_ENUM = 0x7fffffff
} hm_abi_log_level;

/* ===== Data types ===== */

typedef enum hm_abi_dtype {
  HM_ABI_DTYPE_NONE = 0,
  HM_ABI_DTYPE_F32 = 1,
  HM_ABI_DTYPE_F16 = 2,
  HM_ABI_DTYPE_BF16 = 3,
  HM_ABI_DTYPE_F64 = 4,
  HM_ABI_DTYPE_I32 = 5,
  HM_ABI_DTYPE_I8 = 6,
  HM_ABI_DTYPE_U8 = 7,
  /* Block-quantized signed integers with per-block scales; layouts in
   * abi/QUANT.md. Used as storage dtypes and as GEMM input precisions. */
  HM_ABI_DTYPE_Q8 = 8,
  HM_ABI_DTYPE_Q4 = 9,
  HM_ABI_DTYPE_Q3 = 10,
  /* A compute precision only: f32 storage, inputs rounded to a 10-bit mantissa. */
  HM_ABI_DTYPE_TF32 = 11,
  HM_ABI_DTYPE_I64 = 12,
  HM_ABI_DTYPE_MAX_ENUM = 0x7fffffff
} hm_abi_dtype;

/* ===== Ops =====
 * Operand roles, dims and params of each op are specified in SPEC.md §7.
 * All tensors are dense and row-major; a 2-D operand with dims (rows, cols)
 * occupies rows*cols elements starting at its byte offset. */
typedef enum hm_abi_op_code {
  HM_ABI_OP_NONE = 0,
  HM_ABI_OP_GEMM = 1,          /* C = alpha*op(A)*op(B) + beta*C */
  HM_ABI_OP_BIAS_ADD = 2,      /* Y[r][c] += b[c] */
  HM_ABI_OP_ACT_FORWARD = 3,   /* Y = f(X) (variant = hm_abi_activation) */
  HM_ABI_OP_ACT_BACKWARD = 4,  /* dX = dY * f'(X) (+beta*dX) */
  HM_ABI_OP_LOSS = 5,          /* mean loss over rows, and its gradient */
  HM_ABI_OP_REDUCE_ROWS = 6,   /* y[c] = beta*y[c] + alpha*sum_r X[r][c] */
  HM_ABI_OP_REDUCE_COLS = 7,   /* y[r] = beta*y[r] + alpha*sum_c X[r][c] */
  HM_ABI_OP_SUM_SQUARES = 8,   /* y[0] = beta*y[0] + sum x^2 (for L2 norms) */
  HM_ABI_OP_CLIP = 9,          /* x = clamp(x, -c, c) */
  HM_ABI_OP_SCALE = 10,        /* x = a*x */
  HM_ABI_OP_AXPY = 11,         /* y = a*x + y */
  HM_ABI_OP_GATHER_ROWS = 12,  /* Y[i] = scale*X[idx[i]] (dtype conversion) */
  HM_ABI_OP_FILL = 13,         /* x = v */
  HM_ABI_OP_COPY = 14,         /* y = x */
  HM_ABI_OP_SQRT_SCALAR = 15,  /* y[0] = sqrt(x[0]) */
  HM_ABI_OP_SGD = 20,
  HM_ABI_OP_ADAM = 21,
  HM_ABI_OP_RMSPROP = 22,
  HM_ABI_OP_ADAMW = 23,
  HM_ABI_OP_LAMB = 24,
  HM_ABI_OP_QUANTIZE = 30,     /* f32 -> Q8/Q4/Q3 blocks */
  HM_ABI_OP_DEQUANTIZE = 31,   /* Q8/Q4/Q3 blocks -> f32 */
  HM_ABI_OP_GEMM_Q8 = 32,      /* int8_matmul */
  HM_ABI_OP_GEMM_Q4 = 33,      /* int4_matmul */
  HM_ABI_OP_GEMM_Q3 = 34,      /* int3_matmul */
  /* 1.1: window ops over [batch, C, H, W] tensors (SPEC.md §7.5). */
  HM_ABI_OP_CONV2D = 40,        /* Y = conv(X, W) + bias */
  HM_ABI_OP_CONV2D_BWD_DATA = 41,   /* dX (+)= conv_transpose(dY, W) */
  HM_ABI_OP_CONV2D_BWD_FILTER = 42, /* dW (+)= corr(X, dY), db (+)= sum dY */
  HM_ABI_OP_POOL2D = 43,        /* Y = max/avg pool(X) (variant = hm_abi_pool) */
  HM_ABI_OP_POOL2D_BWD = 44,    /* dX (+)= pool'(dY) */
  HM_ABI_OP_DROPOUT = 45,       /* Y = keep(seed, step, i) ? X / (1 - rate) : 0 */
  HM_ABI_OP_BATCH_NORM = 46,    /* per-channel normalization (variant = hm_abi_norm_mode) */
  HM_ABI_OP_BATCH_NORM_BWD = 47,
  HM_ABI_OP_LAYER_NORM = 48,    /* per-row normalization */
  HM_ABI_OP_LAYER_NORM_BWD = 49,
  HM_ABI_OP_IM2COL = 50,        /* patches [N*Ho*Wo, C_in*KH*KW] of X (packed convolutions) */
  HM_ABI_OP_MAX_ENUM = 0x7fffffff
} hm_abi_op_code;

/* Op flags. */
#define HM_ABI_OP_FLAG_TRANS_A 0x1u /* GEMM: use A^T */
#define HM_ABI_OP_FLAG_TRANS_B 0x2u /* GEMM: use B^T */
/* LOSS: the target operand holds class indices (I32), else dense targets. */
#define HM_ABI_OP_FLAG_CLASS_INDEX 0x4u
/* 1.1, CONV2D_BWD_* and POOL2D_BWD: add to the outputs instead of
 * overwriting them (their params hold geometry, so no beta). */
#define HM_ABI_OP_FLAG_ACCUMULATE 0x8u

/* 1.1: two 32-bit sizes in one dims[] word of a window op (SPEC.md §7.5):
 * dims[1] = HM_ABI_PACK2(C_in, C_out), dims[2] = HM_ABI_PACK2(H, W). */
#define HM_ABI_PACK2(hi, lo) ((((uint64_t)(uint32_t)(hi)) << 32) | (uint64_t)(uint32_t)(lo))
#define HM_ABI_PACK2_HI(v) ((uint32_t)((uint64_t)(v) >> 32))
#define HM_ABI_PACK2_LO(v) ((uint32_t)((uint64_t)(v) & 0xffffffffu))

/* BATCH_NORM variants: batch statistics (and the running ones updated), or
 * the running statistics (evaluation and inference). */
typedef enum hm_abi_norm_mode {
  HM_ABI_NORM_TRAIN = 0,
  HM_ABI_NORM_EVAL = 1,
  HM_ABI_NORM_COUNT = 2,
  HM_ABI_NORM_MAX_ENUM = 0x7fffffff
} hm_abi_norm_mode;

/* POOL2D variants. Average pooling divides by the whole window, padding
 * included (PyTorch's count_include_pad=True). */
typedef enum hm_abi_pool {
  HM_ABI_POOL_MAX = 0,
  HM_ABI_POOL_AVG = 1,
  HM_ABI_POOL_COUNT = 2,
  HM_ABI_POOL_MAX_ENUM = 0x7fffffff
} hm_abi_pool;

/* The activations and losses, one line each: X(NAME, value, "name",
 * "meaning"). The enums below, the runtime's names (harmonics/names.h) and the
 * constants the shared GPU kernels test come from these lists. Values are
 * fixed and never reused. */
#define HM_ABI_ACTIVATIONS(X)                                                   \
  X(IDENTITY, 0, "identity", "x")                                               \
  X(RELU, 1, "relu", "max(x, 0)")                                               \
  X(LEAKY_RELU, 2, "leaky_relu", "params[0] = negative slope (default 0.01)")   \
  X(SIGMOID, 3, "sigmoid", "1 / (1 + exp(-x))")                                 \
  X(TANH, 4, "tanh", "tanh(x)")                                                 \
  X(GELU, 5, "gelu", "exact: 0.5 x (1 + erf(x / sqrt 2))")                      \
  X(SILU, 6, "silu", "x sigmoid(x)")                                            \
  X(SOFTMAX, 7, "softmax", "along each row")                                    \
  X(ELU, 8, "elu", "params[0] = alpha (default 1)")                             \
  X(SELU, 9, "selu", "scaled ELU")

#define HM_ABI_LOSSES(X)                                                        \
  X(CROSS_ENTROPY, 0, "cross_entropy", "softmax + NLL over each row")          \
  X(MSE, 1, "mse", "mean squared error")                                        \
  X(MAE, 2, "mae", "mean absolute error")                                       \
  X(BCE, 3, "bce", "binary cross-entropy on logits")                            \
  X(HUBER, 4, "huber", "params[0] = delta (default 1)")

#define HM_ABI_ENUM_ACT_(name, value, text, meaning) HM_ABI_ACT_##name = value,
#define HM_ABI_ENUM_LOSS_(name, value, text, meaning) HM_ABI_LOSS_##name = value,

typedef enum hm_abi_activation {
  HM_ABI_ACTIVATIONS(HM_ABI_ENUM_ACT_)
  HM_ABI_ACT_COUNT = 10,
  HM_ABI_ACT_MAX_ENUM = 0x7fffffff
} hm_abi_activation;

typedef enum hm_abi_loss {
  HM_ABI_LOSSES(HM_ABI_ENUM_LOSS_)
  HM_ABI_LOSS_COUNT = 5,
  HM_ABI_LOSS_MAX_ENUM = 0x7fffffff
} hm_abi_loss;

#undef HM_ABI_ENUM_ACT_
#undef HM_ABI_ENUM_LOSS_

/* Bytes of one 64-value block of each packed dtype (abi/QUANT.md Q1): an f16
 * scale and 64 codes of 8, 4 or 3 bits (int3: 8 values per 24-bit group). */
#define HM_ABI_QUANT_BLOCK_VALUES 64u
#define HM_ABI_Q8_BLOCK_BYTES 66u /* 2 + 64 */
#define HM_ABI_Q4_BLOCK_BYTES 34u /* 2 + 32 */
#define HM_ABI_Q3_BLOCK_BYTES 26u /* 2 + 24 */

/* ===== Capabilities (data, SPEC.md §6) ===== */

typedef enum hm_abi_numerics {
  /* Bit-identical to the scalar reference in abi/. Integer and packed paths. */
  HM_ABI_NUMERICS_EXACT = 0,
  /* f32 arithmetic in any order, correctly rounded library functions within a
   * few ulp: NMSE <= 1e-9 against a double reference. */
  HM_ABI_NUMERICS_F32 = 1,
  /* f32 storage, TF32 products, f32 accumulation: NMSE <= 1e-5. */
  HM_ABI_NUMERICS_TF32 = 2,
  /* f16 inputs or products, f32 accumulation: NMSE <= 1e-5. */
  HM_ABI_NUMERICS_F16 = 3,
  /* bf16 inputs or products, f32 accumulation: NMSE <= 1e-4. */
  HM_ABI_NUMERICS_BF16 = 4,
  HM_ABI_NUMERICS_MAX_ENUM = 0x7fffffff
} hm_abi_numerics;

/* One row of a device's capability table: the device runs |op| with inputs
 * at |dtype_in| (for GEMM, TF32/F16/BF16 mean f32 buffers rounded to that
 * precision), accumulating in |dtype_acc| and writing |dtype_out|,
 * with the stated numerics. For ACT_* ops |variants| has bit (1 << activation)
 * set for each activation supported; for LOSS bit (1 << loss). */
typedef struct hm_abi_capability {
  uint32_t op;        /* hm_abi_op_code */
  uint32_t dtype_in;  /* hm_abi_dtype */
  uint32_t dtype_acc; /* hm_abi_dtype */
  uint32_t dtype_out; /* hm_abi_dtype */
  uint32_t numerics;  /* hm_abi_numerics */
  uint32_t flags;     /* reserved, zero */
  uint64_t variants;  /* bit set of variants, see above; 0 for ops without */
  float speed_hint;   /* relative throughput, e.g. GFLOP/s; 0 = unknown */
  uint32_t reserved[3];
} hm_abi_capability;

typedef enum hm_abi_device_kind {
  HM_ABI_DEVICE_CPU = 0,
  HM_ABI_DEVICE_GPU = 1,
  HM_ABI_DEVICE_ACCELERATOR = 2,
  HM_ABI_DEVICE_MAX_ENUM = 0x7fffffff
} hm_abi_device_kind;

/* Filled by device_describe. The host sets struct_size; the plugin writes only
 * fields that fit in it. Strings are NUL-terminated within their arrays. */
typedef struct hm_abi_device_desc {
  uint32_t struct_size;
  uint32_t abi_version;
  char name[64];
  char vendor[64];
  uint32_t kind; /* hm_abi_device_kind */
  uint32_t compute_units; /* 0: the device's API does not say (Vulkan) */
  uint64_t memory_bytes;
  uint64_t max_buffer_bytes;
  /* Space-separated facts, "key=value" or flags, for people and policies
   * (e.g. "gemm=openblas-0.3.21/SkylakeX threads=2 avx512f"). */
  char features[512];
  /* The capability table; valid until the plugin context is shut down. */
  const hm_abi_capability *caps;
  uint32_t n_caps;
  uint32_t reserved0;
  uint64_t reserved[8];
} hm_abi_device_desc;

/* ===== Objects (opaque, owned by the plugin) ===== */

typedef struct hm_abi_context hm_abi_context; /* one per loaded plugin */
typedef struct hm_abi_device hm_abi_device;   /* an opened device */
typedef struct hm_abi_buffer hm_abi_buffer;   /* device memory */
typedef struct hm_abi_program hm_abi_program; /* a recorded list of ops */

/* ===== Host services ===== */

typedef struct hm_abi_host {
  uint32_t struct_size;
  uint32_t abi_version;
  void *host_ctx;
  /* Reports a failure or a note. The host copies |message| before returning.
   * |status| is HM_ABI_OK for plain log lines. Never NULL. */
  void (*report)(void *host_ctx, int32_t level, int32_t status, const char *message);
  uint64_t reserved[8];
} hm_abi_host;

/* A key/value configuration item (e.g. "threads" = "2"). Valid during the call. */
typedef struct hm_abi_option {
  const char *key;
  const char *value;
} hm_abi_option;

typedef struct hm_abi_init_args {
  uint32_t struct_size;
  uint32_t abi_version; /* the negotiated version */
  const hm_abi_host *host;
  const hm_abi_option *options;
  uint32_t n_options;
  uint32_t reserved0;
  uint64_t reserved[8];
} hm_abi_init_args;

/* ===== Programs ===== */

/* A tensor operand: a byte offset into a buffer. NULL buffer = unused. */
typedef struct hm_abi_operand {
  hm_abi_buffer *buffer;
  uint64_t offset;
} hm_abi_operand;

#define HM_ABI_MAX_OPERANDS 4
#define HM_ABI_MAX_PARAMS 8
#define HM_ABI_MAX_DYN 4
/* A dynamic-scalar slot that is not used. */
#define HM_ABI_DYN_NONE (-1)

typedef struct hm_abi_op {
  uint32_t struct_size;
  uint32_t abi_version;
  uint32_t code;      /* hm_abi_op_code */
  uint32_t variant;   /* activation, loss, ... per op */
  uint32_t dtype_in;  /* hm_abi_dtype; NONE means F32 */
  uint32_t dtype_acc; /* hm_abi_dtype; NONE means F32 */
  uint32_t dtype_out; /* hm_abi_dtype; NONE means F32 */
  uint32_t flags;     /* HM_ABI_OP_FLAG_* */
  uint64_t dims[4];   /* sizes, meaning per op */
  hm_abi_operand in[HM_ABI_MAX_OPERANDS];
  hm_abi_operand out[HM_ABI_MAX_OPERANDS];
  float params[HM_ABI_MAX_PARAMS]; /* static scalars, meaning per op */
  /* Indices into the scalars array given to program_run, or HM_ABI_DYN_NONE.
   * A used slot overrides the static parameter it stands for (SPEC.md §7). */
  int32_t dyn[HM_ABI_MAX_DYN];
  uint64_t reserved[4];
} hm_abi_op;

typedef struct hm_abi_program_desc {
  uint32_t struct_size;
  uint32_t abi_version;
  const hm_abi_op *ops; /* valid during program_create only: copy it */
  uint32_t n_ops;
  uint32_t n_scalars;   /* length of the scalars array program_run receives */
  uint64_t reserved[4];
} hm_abi_program_desc;

/* ===== Window ops (1.1, SPEC.md §7.5) =====
 * The geometry of CONV2D* and POOL2D*: dims[0] = batch, dims[1] =
 * HM_ABI_PACK2(C_in, C_out) for convolutions and C for pooling, dims[2] =
 * HM_ABI_PACK2(H, W), dims[3] = groups (convolutions; 0 for pooling);
 * params 0-7 = kernel h, kernel w, stride h, stride w, padding h, padding w,
 * dilation h, dilation w (convolutions; pooling has no dilation), each an
 * integer held exactly in a float. hm_abi_window_decode checks and unpacks
 * it, so every plugin reads the geometry the same way. */
typedef struct hm_abi_window {
  uint32_t n, c_in, c_out, h, w;  /* pooling: c_in == c_out == C */
  uint32_t kh, kw, sh, sw, ph, pw, dh, dw, groups;
  uint32_t ho, wo;                /* the output plane */
} hm_abi_window;

#define HM_ABI_WINDOW_MAX 65535u /* largest kernel, stride, padding or dilation */

static inline int hm_abi_window_param_(float f, uint32_t lo, uint32_t *out) {
  if (!(f >= (float)lo && f <= (float)HM_ABI_WINDOW_MAX) || (float)(uint32_t)f != f) return 1;
  *out = (uint32_t)f;
  return 0;
}

/* Fills |g| from a CONV2D* or POOL2D* op; returns 0, or 1 when the geometry
 * is invalid (a zero size, a non-integer or out-of-range parameter, groups
 * not dividing both channel counts, pooling padding above half the window,
 * or an empty output). */
static inline int hm_abi_window_decode(const hm_abi_op *op, hm_abi_window *g) {
  int pool = op->code == HM_ABI_OP_POOL2D || op->code == HM_ABI_OP_POOL2D_BWD;
  uint64_t ohw;
  if (op->dims[0] == 0 || op->dims[0] > 0xffffffffu) return 1;
  g->n = (uint32_t)op->dims[0];
  if (pool) {
    if (op->dims[1] == 0 || op->dims[1] > 0xffffffffu || op->dims[3] != 0) return 1;
    g->c_in = g->c_out = (uint32_t)op->dims[1];
    g->groups = 1;
  } else {
    g->c_in = HM_ABI_PACK2_HI(op->dims[1]);
    g->c_out = HM_ABI_PACK2_LO(op->dims[1]);
    if (op->dims[3] == 0 || op->dims[3] > 0xffffffffu) return 1;
    g->groups = (uint32_t)op->dims[3];
    if (g->c_in == 0 || g->c_out == 0 || g->c_in % g->groups || g->c_out % g->groups) return 1;
  }
  g->h = HM_ABI_PACK2_HI(op->dims[2]);
  g->w = HM_ABI_PACK2_LO(op->dims[2]);
  if (g->h == 0 || g->w == 0) return 1;
  if (hm_abi_window_param_(op->params[0], 1, &g->kh) || hm_abi_window_param_(op->params[1], 1, &g->kw) ||
      hm_abi_window_param_(op->params[2], 1, &g->sh) || hm_abi_window_param_(op->params[3], 1, &g->sw) ||
      hm_abi_window_param_(op->params[4], 0, &g->ph) || hm_abi_window_param_(op->params[5], 0, &g->pw))
    return 1;
  if (pool) {
    g->dh = g->dw = 1;
    if (2 * g->ph > g->kh || 2 * g->pw > g->kw) return 1;
  } else if (hm_abi_window_param_(op->params[6], 1, &g->dh) || hm_abi_window_param_(op->params[7], 1, &g->dw)) {
    return 1;
  }
  uint64_t eh = (uint64_t)g->dh * (g->kh - 1) + 1, ew = (uint64_t)g->dw * (g->kw - 1) + 1;
  uint64_t ih = (uint64_t)g->h + 2ull * g->ph, iw = (uint64_t)g->w + 2ull * g->pw;
  if (eh > ih || ew > iw) return 1;
  g->ho = (uint32_t)((ih - eh) / g->sh + 1);
  g->wo = (uint32_t)((iw - ew) / g->sw + 1);
  ohw = (uint64_t)g->ho * g->wo;
  return ohw == 0;
}

/* DROPOUT's step: params[1], or the dynamic scalar dyn[1] names, an
 * integer taken modulo 2^24 — every such integer is exact in a float, the
 * form GPU plugins pass scalars in (hosts pass it reduced). */
#define HM_ABI_DROPOUT_STEP_MASK 0xffffffu
static inline uint32_t hm_abi_dropout_step(const hm_abi_op *op, const double *scalars, uint32_t n_scalars) {
  double v = op->params[1];
  if (op->dyn[1] >= 0 && (uint32_t)op->dyn[1] < n_scalars && scalars) v = scalars[op->dyn[1]];
  if (!(v >= 0.0) || v >= 9007199254740992.0) return 0;
  return (uint32_t)((uint64_t)v & HM_ABI_DROPOUT_STEP_MASK);
}

/* ===== The plugin descriptor ===== */

/* Filled by hm_plugin_query into memory the host owns. The host sets
 * struct_size (its own sizeof) and zeroes the rest; the plugin writes only the
 * fields that fit in struct_size and leaves reserved fields zero.
 * Entries marked (required) must be non-NULL; the loader checks them. */
typedef struct hm_abi_plugin {
  uint32_t struct_size;
  uint32_t abi_version;     /* the negotiated version, written by the plugin */
  uint32_t plugin_min_abi;  /* oldest ABI the plugin can serve */
  uint32_t plugin_max_abi;  /* newest ABI the plugin can serve */
  /* Static strings, valid while the library stays loaded. Required. */
  const char *name;         /* backend name, [a-z0-9_]+, e.g. "cpu" */
  const char *vendor;
  const char *version;      /* the plugin's own version, e.g. "1.0.0" */
  const char *build_id;     /* toolchain and source revision */

  /* (required) Creates the plugin context. Called once after negotiation. */
  int32_t (*init)(const hm_abi_init_args *args, hm_abi_context **out_ctx);
  /* (required) Releases the context and everything created from it. */
  void (*shutdown)(hm_abi_context *ctx);

  /* (required) Number of devices. Thread-safe. */
  uint32_t (*device_count)(hm_abi_context *ctx);
  /* (required) Describes device |index|. Thread-safe. */
  int32_t (*device_describe)(hm_abi_context *ctx, uint32_t index, hm_abi_device_desc *out);
  /* (required) Opens device |index| with options (e.g. threads). */
  int32_t (*device_open)(hm_abi_context *ctx, uint32_t index, const hm_abi_option *options,
                         uint32_t n_options, hm_abi_device **out_device);
  /* (required) Closes a device; its buffers and programs must be freed first. */
  void (*device_close)(hm_abi_device *device);

  /* (required) Allocates |size| bytes (> 0) of device memory. */
  int32_t (*buffer_alloc)(hm_abi_device *device, uint64_t size, hm_abi_buffer **out_buffer);
  /* (required) Frees a buffer; NULL is a no-op. */
  void (*buffer_free)(hm_abi_buffer *buffer);
  /* (required) Copies host memory into the buffer. Ordered after every
   * earlier program_run on the device; complete when it returns. */
  int32_t (*buffer_write)(hm_abi_buffer *buffer, uint64_t offset, const void *src, uint64_t size);
  /* (required) Copies buffer contents to host memory; waits for earlier work. */
  int32_t (*buffer_read)(hm_abi_buffer *buffer, uint64_t offset, void *dst, uint64_t size);
  /* (required) Copies between two buffers of the same device. */
  int32_t (*buffer_copy)(hm_abi_buffer *dst, uint64_t dst_offset, hm_abi_buffer *src,
                         uint64_t src_offset, uint64_t size);

  /* (required) Validates and records a program. Every operand must lie inside
   * its buffer and belong to |device|. An op or precision the device does not
   * declare yields HM_ABI_STATUS_UNIMPLEMENTED. */
  int32_t (*program_create)(hm_abi_device *device, const hm_abi_program_desc *desc,
                            hm_abi_program **out_program);
  /* (required) Frees a program; NULL is a no-op. */
  void (*program_free)(hm_abi_program *program);
  /* (required) Runs every op in order with the given dynamic scalars
   * (n_scalars must equal the program's). May return before the device
   * finishes; buffer_read and device_synchronize wait. */
  int32_t (*program_run)(hm_abi_program *program, const double *scalars, uint32_t n_scalars);
  /* (optional) Waits until all submitted work on the device has finished. */
  int32_t (*device_synchronize)(hm_abi_device *device);

  uint64_t reserved[16];
} hm_abi_plugin;

/* Input of hm_plugin_query: the host's ABI range. */
typedef struct hm_abi_query {
  uint32_t struct_size;
  uint32_t abi_version;      /* the host's own (newest) version */
  uint32_t host_min_abi;     /* oldest version the host accepts */
  uint32_t host_max_abi;     /* newest version the host understands */
  uint64_t reserved[4];
} hm_abi_query;

/* The only symbol a plugin exports. Pure: no side effects, callable many
 * times. Returns HM_ABI_OK after filling |out| with
 * abi_version = min(host_max, plugin_max) when that is at least
 * max(host_min, plugin_min) and the majors agree; otherwise
 * HM_ABI_STATUS_INCOMPATIBLE and |out| untouched. */
typedef int32_t (*hm_plugin_query_fn)(const hm_abi_query *query, hm_abi_plugin *out);

#ifdef HM_ABI_BUILDING_PLUGIN
HM_ABI_EXPORT int32_t hm_plugin_query(const hm_abi_query *query, hm_abi_plugin *out);
#endif

/* ===== Layout pins (SPEC.md HM-ABI-3) ===== */

#if defined(__cplusplus)
#define HM_ABI_STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define HM_ABI_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

/* Each list's COUNT is one past its largest value, and values are dense. */
#define HM_ABI_ONE_(name, value, text, meaning) +1
HM_ABI_STATIC_ASSERT(0 HM_ABI_ACTIVATIONS(HM_ABI_ONE_) == HM_ABI_ACT_COUNT, "HM_ABI_ACT_COUNT");
HM_ABI_STATIC_ASSERT(0 HM_ABI_LOSSES(HM_ABI_ONE_) == HM_ABI_LOSS_COUNT, "HM_ABI_LOSS_COUNT");
#undef HM_ABI_ONE_

#if UINTPTR_MAX == 0xffffffffffffffffu
HM_ABI_STATIC_ASSERT(sizeof(hm_abi_capability) == 48, "hm_abi_capability layout");
HM_ABI_STATIC_ASSERT(offsetof(hm_abi_capability, variants) == 24, "hm_abi_capability.variants");
HM_ABI_STATIC_ASSERT(offsetof(hm_abi_capability, speed_hint) == 32, "hm_abi_capability.speed_hint");
HM_ABI_STATIC_ASSERT(sizeof(hm_abi_device_desc) == 752, "hm_abi_device_desc layout");
HM_ABI_STATIC_ASSERT(offsetof(hm_abi_device_desc, features) == 160, "hm_abi_device_desc.features");
HM_ABI_STATIC_ASSERT(offsetof(hm_abi_device_desc, caps) == 672, "hm_abi_device_desc.caps");
HM_ABI_STATIC_ASSERT(sizeof(hm_abi_host) == 88, "hm_abi_host layout");
HM_ABI_STATIC_ASSERT(sizeof(hm_abi_init_args) == 96, "hm_abi_init_args layout");
HM_ABI_STATIC_ASSERT(sizeof(hm_abi_operand) == 16, "hm_abi_operand layout");
HM_ABI_STATIC_ASSERT(sizeof(hm_abi_op) == 272, "hm_abi_op layout");
HM_ABI_STATIC_ASSERT(offsetof(hm_abi_op, dims) == 32, "hm_abi_op.dims");
HM_ABI_STATIC_ASSERT(offsetof(hm_abi_op, in) == 64, "hm_abi_op.in");
HM_ABI_STATIC_ASSERT(offsetof(hm_abi_op, out) == 128, "hm_abi_op.out");
HM_ABI_STATIC_ASSERT(offsetof(hm_abi_op, params) == 192, "hm_abi_op.params");
HM_ABI_STATIC_ASSERT(offsetof(hm_abi_op, dyn) == 224, "hm_abi_op.dyn");
HM_ABI_STATIC_ASSERT(sizeof(hm_abi_program_desc) == 56, "hm_abi_program_desc layout");
HM_ABI_STATIC_ASSERT(sizeof(hm_abi_query) == 48, "hm_abi_query layout");
HM_ABI_STATIC_ASSERT(offsetof(hm_abi_plugin, name) == 16, "hm_abi_plugin.name");
HM_ABI_STATIC_ASSERT(offsetof(hm_abi_plugin, init) == 48, "hm_abi_plugin.init");
HM_ABI_STATIC_ASSERT(offsetof(hm_abi_plugin, device_synchronize) == 160, "hm_abi_plugin.device_synchronize");
HM_ABI_STATIC_ASSERT(sizeof(hm_abi_plugin) == 296, "hm_abi_plugin layout");
#endif
HM_ABI_STATIC_ASSERT(sizeof(hm_abi_status) == 4, "enums are 32-bit");
HM_ABI_STATIC_ASSERT(sizeof(hm_abi_op_code) == 4, "enums are 32-bit");

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HARMONICS_ABI_H_ */
