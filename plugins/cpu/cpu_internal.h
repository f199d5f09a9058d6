/*
 * Internal interfaces of the CPU plugin. Nothing here crosses the ABI.
 */
#ifndef HM_CPU_INTERNAL_H_
#define HM_CPU_INTERNAL_H_

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu_quant.h"
#include "cpu_vec.h"
#include "harmonics_abi.h"
#include "plugin_util.h"

/* ===== CPU features (cpu_features.c) ===== */

typedef struct cpu_features {
  int avx, avx2, fma, f16c;
  int avx512f, avx512bw, avx512vl, avx512dq;
  int avx512_vnni, avx512_bf16, avx512_vbmi, avx_vnni;
  int amx_int8, amx_bf16;
} cpu_features;

void cpu_features_detect(cpu_features *out);
/* Appends the ISA flags to |buf| as space-separated words. */
void cpu_features_describe(const cpu_features *f, char *buf, size_t cap);

/* ISA levels of the inner loops; a device may be forced to a lower one
 * (device option isa=...) to test or compare the paths. */
typedef enum cpu_isa { CPU_ISA_GENERIC = 0, CPU_ISA_AVX2, CPU_ISA_AVXVNNI, CPU_ISA_AVX512 } cpu_isa;

/* The best level this CPU runs, and its name ("avx512"). */
cpu_isa cpu_isa_best(const cpu_features *f);
const char *cpu_isa_name(cpu_isa isa);
/* The inner-loop tables for a level (at most cpu_isa_best). */
const cpu_vec_ops *cpu_vec_for(cpu_isa isa);
const cpu_quant_ops *cpu_quant_for(cpu_isa isa);

/* ===== BLAS (cpu_blas.c) ===== */

typedef void (*cpu_sgemm_fn)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                             const float *a, int lda, const float *b, int ldb, float beta, float *c,
                             int ldc);

typedef void (*cpu_sgemv_fn)(int order, int trans, int m, int n, float alpha, const float *a, int lda,
                             const float *x, int incx, float beta, float *y, int incy);

typedef struct cpu_blas {
  void *handle;           /* dlopen handle, NULL for the built-in reference GEMM */
  cpu_sgemm_fn sgemm;     /* cblas_sgemm */
  cpu_sgemv_fn sgemv;     /* cblas_sgemv: sgemm with one row runs 4x slower in OpenBLAS 0.3.21 */
  char description[160];  /* e.g. "openblas 0.3.21 core=SkylakeX (chosen: avx512)" */
} cpu_blas;

/* Loads OpenBLAS from |library| (NULL = the default soname) with the core
 * type |forced_core|, or when NULL one chosen from |features|. On failure
 * writes a reason into |err| and returns nonzero. */
int cpu_blas_load(cpu_blas *blas, const char *library, const char *forced_core,
                  const cpu_features *features, char *err, size_t err_cap);
void cpu_blas_unload(cpu_blas *blas);

/* ===== Thread pool (cpu_pool.c) ===== */

typedef void (*cpu_task_fn)(void *ctx, size_t task);

typedef struct cpu_pool cpu_pool;

/* Starts |threads|-1 workers; the calling thread is the last worker. Workers
 * run with subnormals flushed (FTZ+DAZ). Returns NULL on failure. */
cpu_pool *cpu_pool_create(unsigned threads);
void cpu_pool_free(cpu_pool *pool);
unsigned cpu_pool_threads(const cpu_pool *pool);
/* Runs fn(ctx, t) for t in [0, n_tasks) across the pool and waits. Tasks must
 * write disjoint memory; which thread runs a task does not matter. */
void cpu_pool_run(cpu_pool *pool, size_t n_tasks, cpu_task_fn fn, void *ctx);

/* Sets FTZ+DAZ on the calling thread and returns the previous MXCSR. */
unsigned cpu_fp_enter(void);
void cpu_fp_leave(unsigned saved);

/* ===== Objects ===== */

typedef struct hm_abi_context {
  hm_abi_host host;
  cpu_features features;
  int use_reference_gemm; /* option gemm=reference */
  cpu_blas blas;
  unsigned default_threads;
  uint64_t memory_bytes;
  char features_text[512];
} cpu_context;

typedef struct hm_abi_device {
  cpu_context *ctx;
  cpu_pool *pool;
  unsigned threads;
  cpu_isa isa;
  const cpu_vec_ops *vec;     /* inner loops for |isa| */
  const cpu_quant_ops *quant; /* packed integer loops for |isa| */
  atomic_long live_buffers;
  atomic_long live_programs;
} cpu_device;

#define CPU_BUFFER_MAGIC 0x48424646u /* "HBFF" */

typedef struct hm_abi_buffer {
  hm_plugin_buffer_header h; /* first: magic and size (plugin_util.h) */
  cpu_device *device;
  unsigned char *data;
} cpu_buffer;

typedef struct cpu_op cpu_op;

typedef struct hm_abi_program {
  cpu_device *device;
  uint32_t n_ops;
  uint32_t n_scalars;
  cpu_op *ops;
  uint8_t *scratch; /* working memory of the integer matmuls, sized at create */
  float *patches;   /* convolution patches kept from forward to filter gradient (cpu_window_link) */
} cpu_program;

/* ===== Errors ===== */

/* Reports |status| with a formatted message through the host and returns it. */
#define cpu_fail(ctx, status, ...) hm_plugin_fail((ctx) ? &(ctx)->host : NULL, (status), __VA_ARGS__)

/* ===== Capabilities (cpu_caps.c) ===== */

const hm_abi_capability *cpu_caps_table(uint32_t *count);

/* ===== Programs (cpu_program.c) and kernels (cpu_kernels_*.c) ===== */

int32_t cpu_program_create(hm_abi_device *device, const hm_abi_program_desc *desc,
                           hm_abi_program **out);
void cpu_program_free(hm_abi_program *program);
int32_t cpu_program_run(hm_abi_program *program, const double *scalars, uint32_t n_scalars);

/* A validated op with operands resolved to host pointers. */
struct cpu_op {
  hm_abi_op op;           /* the op as given (copied) */
  void *in[HM_ABI_MAX_OPERANDS];
  void *out[HM_ABI_MAX_OPERANDS];
  uint64_t in_bytes[HM_ABI_MAX_OPERANDS];  /* each operand's extent (0: absent) */
  uint64_t out_bytes[HM_ABI_MAX_OPERANDS];
  /* CONV2D: where to keep its patches for a later filter gradient;
   * CONV2D_BWD_FILTER: where to read them instead of recomputing. NULL: the
   * op's own scratch. */
  float *patches;
  /* CONV2D: the ACT_FORWARD after it, applied to each output plane while it
   * is in cache; POOL2D_BWD: the ACT_BACKWARD after it, applied to each plane.
   * That op is then |fused| and skipped. */
  const cpu_op *act;
  int fused;
};

typedef struct cpu_exec {
  cpu_device *device;
  const double *scalars;
  uint32_t n_scalars;
  uint8_t *scratch;
} cpu_exec;

/* Parameter |i| of |op| after applying dyn[i] when it is used. */
float cpu_param(const cpu_exec *ex, const cpu_op *op, int i);

/* Splits [0, n) into contiguous chunks across the device's threads (when n is
 * at least |min_parallel|) and runs fn(ctx, begin, end, chunk_index). The
 * split depends only on n and the thread count, so results are deterministic
 * for a fixed thread count. Returns the number of chunks used. */
typedef void (*cpu_range_fn)(void *ctx, size_t begin, size_t end, size_t chunk);
size_t cpu_parallel_range(cpu_device *dev, size_t n, size_t min_parallel, cpu_range_fn fn, void *ctx);
/* The number of chunks cpu_parallel_range will use for n. */
size_t cpu_parallel_chunks(const cpu_device *dev, size_t n, size_t min_parallel);

void cpu_kernel_gemm(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_bias_add(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_act_forward(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_act_backward(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_loss(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_reduce_rows(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_reduce_cols(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_sum_squares(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_clip(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_scale(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_axpy(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_gather_rows(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_fill(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_copy(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_optimizer(const cpu_exec *ex, const cpu_op *op);
/* QUANTIZE and DEQUANTIZE; GEMM_Q8/Q4/Q3 (cpu_kernels_quant.c). */
void cpu_kernel_quantize(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_gemm_q(const cpu_exec *ex, const cpu_op *op);
/* CONV2D*, POOL2D* and DROPOUT (cpu_kernels_window.c). */
void cpu_kernel_conv2d(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_im2col(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_pool2d(const cpu_exec *ex, const cpu_op *op);
void cpu_kernel_dropout(const cpu_exec *ex, const cpu_op *op);
/* BATCH_NORM*, LAYER_NORM* (cpu_kernels_norm.c). */
void cpu_kernel_norm(const cpu_exec *ex, const cpu_op *op);
uint64_t cpu_norm_scratch_bytes(const hm_abi_op *op);
uint64_t cpu_window_scratch_bytes(const cpu_device *dev, const hm_abi_op *op);
/* Links a program's window ops to their neighbours: each CONV2D applies the
 * activation that follows it and shares a patch buffer (p->patches) with the
 * CONV2D_BWD_FILTER of the same input and geometry later in |p|; each
 * POOL2D_BWD applies the activation gradient that follows it. Fails only
 * when that memory cannot be had. */
int32_t cpu_window_link(cpu_program *p);
/* One single-threaded row-major sgemm through OpenBLAS or, with
 * gemm=reference, the plain loop (dimensions below 2^31). */
void cpu_sgemm(const cpu_context *ctx, int trans_a, int trans_b, size_t m, size_t n, size_t k, float alpha,
               const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc);
/* Scratch bytes an op needs at run time (0 for most). */
uint64_t cpu_quant_scratch_bytes(const cpu_device *dev, const hm_abi_op *op);
uint64_t cpu_gemm_scratch_bytes(const hm_abi_op *op);

#endif /* HM_CPU_INTERNAL_H_ */
