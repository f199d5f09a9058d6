/*
 * The CUDA backend: the CUDA runtime API and cuBLAS (never the driver
 * library: without an NVIDIA driver the plugin still loads and reports why it
 * has no device). GEMM goes through cuBLAS — f32, and with f32 buffers
 * rounded to TF32, bf16 or f16 on tensor cores (cublasGemmEx compute types
 * 32F_FAST_*), declared with their numerics classes; every other op is a
 * kernel of plugins/common/kernels/hm_ops.kern (dialect_cuda.h), the packed
 * int8/int4/int3 ones bit-exact (this file is built with -fmad=false).
 *
 * A program (a whole training step) is captured once into a CUDA graph and
 * replayed by program_run after the dynamic scalars are copied to the
 * device; alpha and beta of the GEMMs are read from device memory, so the
 * graph never changes. Device option graphs=off launches op by op instead.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <atomic>
#include <new>

extern "C" {
#include "dispatch.h"
#include "harmonics_abi.h"
#include "op_rules.h"
#include "plugin_util.h"
}

#include "hm_abi_constants.h"
#include "dialect_cuda.h"
#define K_ALL
#include "hm_ops.kern"

#define PLUGIN_MIN_ABI HM_ABI_MAKE_VERSION(1, 0)
#define MAX_DEVICES 16
#define MAX_CAPS 48
#define BUFFER_MAGIC 0x43554446u /* "CUDF" */
#define MAX_GROUPS 4096u
#define WORKSPACE_BYTES (32u << 20)

/* GEMM_Qb with one warp per output: lanes take consecutive blocks, so a
 * weight row streams through the warp with coalesced reads. A block's bytes
 * come in as 32-bit words (blocks start on even bytes, so the byte shift is
 * 0 or 2, a template parameter: every index below is a constant and the
 * words stay in registers) and are multiplied four at a time with __dp4a on
 * offset (unsigned) values:
 *   sum a*b = sum ua*ub - o*sum ua - o*sum ub + 64*o*o,  u = q + o,
 * with o = 4 (int3) or 8 (int4); int8 multiplies signed bytes directly. int3
 * fields are spread to bytes through a table in shared memory. The block
 * terms are then added in block order by every lane (shuffles), exactly as
 * QUANT.md Q7 orders them. */
template <int NW>
__device__ __forceinline__ void load_words(const uint *base, uint byte_off, uint (&w)[NW]) {
  const uint *q = base + (byte_off >> 2);
#pragma unroll
  for (int k = 0; k < NW; k++) w[k] = q[k];
}

/* Four bytes starting at byte |B| of the words (B a constant). */
template <int B, int NW>
__device__ __forceinline__ uint win(const uint (&w)[NW]) {
  if ((B & 3) == 0) return w[B >> 2];
  return __funnelshift_r(w[B >> 2], w[(B >> 2) + 1], (B & 3) * 8);
}

/* Four 3-bit fields (the low 12 bits) to four bytes. */
__device__ __forceinline__ uint spread3(uint x) {
  return (x & 7u) | ((x << 5) & 0x700u) | ((x << 10) & 0x70000u) | ((x << 15) & 0x7000000u);
}

/* Decodes one block into 16 words of byte values (u form for int3/int4,
 * signed bytes for int8), its scale bits and the sum of its u values. */
template <int DT, int SH>
struct block_decoder {
  static __device__ __forceinline__ void run(const uint *base, uint off, uint (&v)[16], uint &d16, uint &sum) {
    constexpr int NW = DT == 10 ? 8 : DT == 9 ? 10 : 18;
    uint w[NW];
    load_words<NW>(base, off, w);
    d16 = win<SH, NW>(w) & 0xffffu;
    sum = 0u;
    if (DT == 10) {
#pragma unroll
      for (int g = 0; g < 8; g++) {
        uint u = 0;
        switch (g) { /* constant byte offsets for each group */
          case 0: u = win<SH + 2, NW>(w); break;
          case 1: u = win<SH + 5, NW>(w); break;
          case 2: u = win<SH + 8, NW>(w); break;
          case 3: u = win<SH + 11, NW>(w); break;
          case 4: u = win<SH + 14, NW>(w); break;
          case 5: u = win<SH + 17, NW>(w); break;
          case 6: u = win<SH + 20, NW>(w); break;
          default: u = win<SH + 23, NW>(w); break;
        }
        u = (u & 0xffffffu) ^ 0x924924u;
        v[2 * g] = spread3(u);
        v[2 * g + 1] = spread3(u >> 12);
        sum = __dp4a(v[2 * g], 0x01010101u, __dp4a(v[2 * g + 1], 0x01010101u, sum));
      }
    } else if (DT == 9) {
#pragma unroll
      for (int t = 0; t < 8; t++) {
        uint u = 0;
        switch (t) {
          case 0: u = win<SH + 2, NW>(w); break;
          case 1: u = win<SH + 6, NW>(w); break;
          case 2: u = win<SH + 10, NW>(w); break;
          case 3: u = win<SH + 14, NW>(w); break;
          case 4: u = win<SH + 18, NW>(w); break;
          case 5: u = win<SH + 22, NW>(w); break;
          case 6: u = win<SH + 26, NW>(w); break;
          default: u = win<SH + 30, NW>(w); break;
        }
        u ^= 0x88888888u;
        v[2 * t] = u & 0x0f0f0f0fu;
        v[2 * t + 1] = (u >> 4) & 0x0f0f0f0fu;
        sum = __dp4a(v[2 * t], 0x01010101u, __dp4a(v[2 * t + 1], 0x01010101u, sum));
      }
    } else {
#pragma unroll
      for (int t = 0; t < 16; t++) {
        uint u = 0;
        switch (t) {
          case 0: u = win<SH + 2, NW>(w); break;
          case 1: u = win<SH + 6, NW>(w); break;
          case 2: u = win<SH + 10, NW>(w); break;
          case 3: u = win<SH + 14, NW>(w); break;
          case 4: u = win<SH + 18, NW>(w); break;
          case 5: u = win<SH + 22, NW>(w); break;
          case 6: u = win<SH + 26, NW>(w); break;
          case 7: u = win<SH + 30, NW>(w); break;
          case 8: u = win<SH + 34, NW>(w); break;
          case 9: u = win<SH + 38, NW>(w); break;
          case 10: u = win<SH + 42, NW>(w); break;
          case 11: u = win<SH + 46, NW>(w); break;
          case 12: u = win<SH + 50, NW>(w); break;
          case 13: u = win<SH + 54, NW>(w); break;
          case 14: u = win<SH + 58, NW>(w); break;
          default: u = win<SH + 62, NW>(w); break;
        }
        v[t] = u;
      }
    }
  }
};

template <int DT>
__device__ __forceinline__ void decode_block(const uint *base, uint off, uint (&v)[16], uint &d16, uint &sum) {
  if (off & 2u) block_decoder<DT, 2>::run(base, off, v, d16, sum);
  else block_decoder<DT, 0>::run(base, off, v, d16, sum);
}

/* CACHE_A (one activation row, as in a GEMV): every CTA decodes that row
 * once into shared memory, so lanes decode only weights. */
template <int DT, bool CACHE_A>
__global__ void __launch_bounds__(256) gemm_q_warp(const uint *hm_b0_, const uint *hm_b1_, uint *hm_b3_, const kp_t p) {
  extern __shared__ uint cache[]; /* CACHE_A: nb x 16 value words, nb sums, nb scales */
  const uint *A = hm_b0_ + p.off[0], *B = hm_b1_ + p.off[1];
  uint m = p.dim[0], n = p.dim[1], k = p.dim[2], bb = hm_q_block_bytes((uint)DT), nb = (k + 63u) / 64u;
  if (CACHE_A) {
    for (uint b = threadIdx.x; b < nb; b += blockDim.x) {
      uint v[16], d16, sum;
      decode_block<DT>(A, b * bb, v, d16, sum);
#pragma unroll
      for (int t = 0; t < 16; t++) cache[(uint)t * nb + b] = v[t]; /* by block: no bank conflicts */
      cache[nb * 16u + b] = sum;
      cache[nb * 17u + b] = d16;
    }
    __syncthreads();
  }
  uint lane = threadIdx.x & 31u, warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, nwarps = (gridDim.x * blockDim.x) >> 5;
  for (uint o = warp; o < m * n; o += nwarps) {
    uint i = o / n, j = o - i * n;
    float acc = 0.0f;
    for (uint b0 = 0; b0 < nb; b0 += 32u) {
      uint b = b0 + lane;
      float term = 0.0f;
      if (b < nb) {
        uint va[16], vb[16], da16, db16, suma, sumb;
        if (CACHE_A) {
#pragma unroll
          for (int t = 0; t < 16; t++) va[t] = cache[(uint)t * nb + b];
          suma = cache[nb * 16u + b];
          da16 = cache[nb * 17u + b];
        } else {
          decode_block<DT>(A, (i * nb + b) * bb, va, da16, suma);
        }
        decode_block<DT>(B, (j * nb + b) * bb, vb, db16, sumb);
        int s;
        if (DT == 8) {
          s = 0;
#pragma unroll
          for (int t = 0; t < 16; t++) s = __dp4a((int)va[t], (int)vb[t], s);
        } else {
          uint dot = 0u;
#pragma unroll
          for (int t = 0; t < 16; t++) dot = __dp4a(va[t], vb[t], dot);
          const int o4 = DT == 10 ? 4 : 8;
          s = (int)dot - o4 * (int)suma - o4 * (int)sumb + 64 * o4 * o4;
        }
        float da = hm_f16_to_f32(da16), db = hm_f16_to_f32(db16);
        term = __fmul_rn(__fmul_rn(da, db), (float)s);
      }
      uint count = nb - b0 < 32u ? nb - b0 : 32u;
      for (uint l = 0; l < count; l++) acc = __fadd_rn(acc, __shfl_sync(0xffffffffu, term, (int)l));
    }
    if (lane == 0) hm_b3_[p.off[3] + o] = AS_U(acc);
  }
}

/* SUM_SQUARES over many blocks (the portable kernel uses one work-group):
 * per-block partial sums into b5 (scratch), then one block adds them in a
 * fixed order, so the result does not depend on scheduling. */
extern "C" __global__ void __launch_bounds__(256) hm_k_sumsq_partial(uint *hm_b0_, uint *hm_b1_, uint *hm_b2_, uint *hm_b3_,
                                                                     uint *hm_b4_, uint *hm_b5_, const float *hm_sc_,
                                                                     const kp_t p) {
  __shared__ float red[256];
  uint n = p.dim[0];
  float acc = 0.0f;
  for (uint i = GID; i < n; i += GSTRIDE) {
    float v = LDF(W0(i));
    acc += v * v;
  }
  red[LID] = acc;
  __syncthreads();
  for (uint s = 128u; s > 0u; s >>= 1) {
    if (LID < s) red[LID] += red[LID + s];
    __syncthreads();
  }
  if (LID == 0) hm_b5_[GROUP] = AS_U(red[0]);
}

extern "C" __global__ void __launch_bounds__(256) hm_k_sumsq_final(uint *hm_b0_, uint *hm_b1_, uint *hm_b2_, uint *hm_b3_,
                                                                   uint *hm_b4_, uint *hm_b5_, const float *hm_sc_,
                                                                   const kp_t p) {
  __shared__ float red[256];
  uint parts = p.aux1;
  float alpha = PARAM(0), beta = PARAM(1), acc = 0.0f;
  for (uint i = LID; i < parts; i += 256u) acc += AS_F(hm_b5_[i]);
  red[LID] = acc;
  __syncthreads();
  for (uint s = 128u; s > 0u; s >>= 1) {
    if (LID < s) red[LID] += red[LID + s];
    __syncthreads();
  }
  if (LID == 0) {
    float prev = beta == 0.0f ? 0.0f : beta * LDF(W3(0u));
    W3(0u) = AS_U(alpha * red[0] + prev);
  }
}

typedef void (*kernel_fn)(uint *, uint *, uint *, uint *, uint *, uint *, const float *, const kp_t);
/* In hm_kernel_id order; the size check catches a kernel added to the
 * shared source but not here (it would launch a null function). */
static const kernel_fn kernels[] = {
    hm_k_gemm, hm_k_bias_add, hm_k_act_fwd, hm_k_softmax_fwd, hm_k_act_bwd, hm_k_softmax_bwd, hm_k_loss,
    hm_k_reduce_rows, hm_k_reduce_cols, hm_k_sum_squares, hm_k_clip, hm_k_scale, hm_k_axpy, hm_k_gather,
    hm_k_fill, hm_k_copy, hm_k_sgd, hm_k_adam, hm_k_rmsprop, hm_k_lamb, hm_k_quantize, hm_k_dequantize,
    hm_k_gemm_q, hm_k_conv2d, hm_k_conv2d_bwd_data, hm_k_conv2d_bwd_filter, hm_k_pool2d, hm_k_pool2d_bwd,
    hm_k_dropout, hm_k_batch_norm, hm_k_batch_norm_bwd, hm_k_layer_norm, hm_k_layer_norm_bwd, hm_k_im2col, hm_k_gemm_reg, hm_k_gemm_x4, hm_k_gemm_x8,
    hm_k_bias_act, hm_k_gemm_qx4, hm_k_gemm_dot, hm_k_gemm_sg};
static_assert(sizeof kernels / sizeof kernels[0] == HK_COUNT, "one CUDA kernel per hm_kernel_id");

struct cu_device_info {
  int ordinal;
  hm_abi_device_desc desc;
  hm_abi_capability caps[MAX_CAPS];
  uint32_t n_caps;
};

struct hm_abi_context {
  hm_abi_host host;
  uint32_t n_devices;
  cu_device_info devices[MAX_DEVICES];
};
typedef hm_abi_context cu_context;

struct hm_abi_device {
  cu_context *ctx;
  const cu_device_info *info;
  cudaStream_t stream;
  cublasHandle_t blas;
  void *workspace;
  uint32_t *dummy;
  int use_graphs;
  std::atomic<long> live_buffers, live_programs;
};
typedef hm_abi_device cu_device;

struct hm_abi_buffer {
  hm_plugin_buffer_header h; /* first: magic and size */
  cu_device *dev;
  uint32_t *ptr;
};
typedef hm_abi_buffer cu_buffer;

/* One step of a program: a kernel launch, or a cuBLAS GEMM. */
struct cu_step {
  int is_gemm;
  int warp_gemv; /* GEMM_Qb: gemm_q_warp<dtype> */
  uint32_t sumsq_blocks; /* SUM_SQUARES: partial blocks, scratch in args[5] */
  hm_dispatch d;
  uint32_t *args[6];
  /* GEMM */
  cublasOperation_t ta, tb;
  int m, n, k, lda, ldb;
  const float *a, *b;
  float *c;
  const float *alpha, *beta; /* device pointers */
  cublasComputeType_t compute;
};

struct hm_abi_program {
  cu_device *dev;
  uint32_t n_steps, n_scalars;
  cu_step *steps;
  float *scalars_dev;  /* dynamic scalars, then 2 constants per GEMM (alpha, beta) */
  float *scalars_host; /* pinned: the constants, then RING slots of dynamic scalars */
  size_t n_floats;
  cudaEvent_t slot_done[8]; /* a slot may be rewritten once its copy has run */
  uint32_t slot;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
};
typedef hm_abi_program cu_program;

/* Reports through the host (plugin_util.h). */
#define fail(ctx, status, ...) hm_plugin_fail((ctx) ? &(ctx)->host : NULL, (status), __VA_ARGS__)

static int32_t status_of(cudaError_t e) {
  return e == cudaErrorMemoryAllocation ? HM_ABI_STATUS_RESOURCE_EXHAUSTED
         : e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaErrorDevicesUnavailable
             ? HM_ABI_STATUS_UNAVAILABLE
             : HM_ABI_STATUS_INTERNAL;
}

#define CUDA_TRY(ctx, call, what)                                                                             \
  do {                                                                                                       \
    cudaError_t e_ = (call);                                                                                 \
    if (e_ != cudaSuccess) return fail(ctx, status_of(e_), "cuda: %s: %s (%d)", what, cudaGetErrorString(e_), (int)e_); \
  } while (0)

/* ===== Context ===== */

static void describe(cu_device_info *di, const cudaDeviceProp &p) {
  hm_abi_device_desc *d = &di->desc;
  memset(d, 0, sizeof *d);
  d->struct_size = sizeof *d;
  d->abi_version = HM_ABI_VERSION;
  hm_copy_text(d->name, sizeof d->name, p.name);
  hm_copy_text(d->vendor, sizeof d->vendor, "NVIDIA");
  d->kind = HM_ABI_DEVICE_GPU;
  d->compute_units = (uint32_t)p.multiProcessorCount;
  d->memory_bytes = p.totalGlobalMem;
  d->max_buffer_bytes = p.totalGlobalMem;
  int cc = p.major * 10 + p.minor;
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  snprintf(d->features, sizeof d->features,
           "cc=%d.%d sm=%d mem=%lluMiB l2=%dKiB runtime=%d driver=%d tf32=%s bf16=%s fp16=%s int8_tc=%s graphs=yes "
           "gemm=cublas packed=q8,q4,q3",
           p.major, p.minor, p.multiProcessorCount, (unsigned long long)(p.totalGlobalMem >> 20), p.l2CacheSize >> 10, rt,
           drv, cc >= 80 ? "yes" : "no", cc >= 80 ? "yes" : "no", cc >= 70 ? "yes" : "no", cc >= 75 ? "yes" : "no");
  uint32_t n = 0;
  const hm_abi_capability *base = hm_kernel_caps(&n);
  di->n_caps = 0;
  for (uint32_t i = 0; i < n && di->n_caps < MAX_CAPS; i++) {
    di->caps[di->n_caps] = base[i];
    if (base[i].op == HM_ABI_OP_GEMM) di->caps[di->n_caps].speed_hint = 1.0f;
    di->n_caps++;
  }
  /* Tensor-core GEMM on f32 buffers rounded to a narrower input type. The
   * hints are the dense peak ratios to f32 on the card's generation. */
  struct { uint32_t din, num; float hint; int min_cc; } tc[] = {
      {HM_ABI_DTYPE_TF32, HM_ABI_NUMERICS_TF32, 8.0f, 80},
      {HM_ABI_DTYPE_BF16, HM_ABI_NUMERICS_BF16, 16.0f, 80},
      {HM_ABI_DTYPE_F16, HM_ABI_NUMERICS_F16, 16.0f, 70},
  };
  for (auto &t : tc)
    if (cc >= t.min_cc && di->n_caps < MAX_CAPS)
      di->caps[di->n_caps++] = hm_abi_capability{HM_ABI_OP_GEMM, t.din, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, t.num, 0, 0,
                                                 t.hint, {0, 0, 0}};
  d->caps = di->caps;
  d->n_caps = di->n_caps;
}

static int32_t cu_init(const hm_abi_init_args *args, hm_abi_context **out) {
  if (!args || !out || !args->host || !args->host->report) return HM_ABI_STATUS_INVALID_ARGUMENT;
  cu_context *ctx = (cu_context *)calloc(1, sizeof *ctx);
  if (!ctx) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  ctx->host = *args->host;
  for (uint32_t i = 0; i < args->n_options; i++) {
    int32_t st = fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cuda: unknown option '%s' (none are known)",
                      args->options[i].key ? args->options[i].key : "");
    free(ctx);
    return st;
  }
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count <= 0) {
    int drv = 0;
    cudaDriverGetVersion(&drv);
    int32_t st = fail(ctx, HM_ABI_STATUS_UNAVAILABLE,
                      "cuda: no usable GPU: %s (%d, driver version %d)%s", e == cudaSuccess ? "no device" : cudaGetErrorString(e),
                      (int)e, drv, drv == 0 ? ": no NVIDIA driver is installed" : "");
    free(ctx);
    return st;
  }
  for (int i = 0; i < count && ctx->n_devices < MAX_DEVICES; i++) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    cu_device_info *di = &ctx->devices[ctx->n_devices++];
    di->ordinal = i;
    describe(di, p);
  }
  *out = ctx;
  return HM_ABI_OK;
}

static void cu_shutdown(hm_abi_context *ctx) { free(ctx); }

static uint32_t cu_device_count(hm_abi_context *ctx) { return ctx ? ctx->n_devices : 0; }

static int32_t cu_device_describe(hm_abi_context *ctx, uint32_t index, hm_abi_device_desc *out) {
  if (!ctx || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (index >= ctx->n_devices) return fail(ctx, HM_ABI_STATUS_NOT_FOUND, "cuda: no device %u (%u devices)", index, ctx->n_devices);
  if (out->struct_size < offsetof(hm_abi_device_desc, reserved))
    return fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cuda: device descriptor too small (%u bytes)", out->struct_size);
  hm_abi_device_desc d = ctx->devices[index].desc;
  d.struct_size = out->struct_size;
  memcpy(out, &d, out->struct_size < sizeof d ? out->struct_size : sizeof d);
  return HM_ABI_OK;
}

/* ===== Devices ===== */

static void cu_device_close(hm_abi_device *dev) {
  if (!dev) return;
  cudaSetDevice(dev->info->ordinal);
  if (dev->stream) cudaStreamSynchronize(dev->stream);
  if (dev->blas) cublasDestroy(dev->blas);
  if (dev->workspace) cudaFree(dev->workspace);
  if (dev->dummy) cudaFree(dev->dummy);
  if (dev->stream) cudaStreamDestroy(dev->stream);
  dev->~hm_abi_device();
  free(dev);
}

static int32_t cu_device_open(hm_abi_context *ctx, uint32_t index, const hm_abi_option *options, uint32_t n_options,
                              hm_abi_device **out) {
  if (!ctx || !out || (n_options && !options)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (index >= ctx->n_devices) return fail(ctx, HM_ABI_STATUS_NOT_FOUND, "cuda: no device %u", index);
  int graphs = 1;
  for (uint32_t i = 0; i < n_options; i++) {
    const char *k = options[i].key ? options[i].key : "", *v = options[i].value ? options[i].value : "";
    if (!strcmp(k, "threads")) continue; /* offered to every device; not used here */
    if (!strcmp(k, "graphs") && (!strcmp(v, "on") || !strcmp(v, "off"))) {
      graphs = !strcmp(v, "on");
      continue;
    }
    return fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cuda: bad device option %s='%s' (known: graphs=on|off)", k, v);
  }
  void *mem = calloc(1, sizeof(cu_device));
  if (!mem) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  cu_device *dev = new (mem) cu_device();
  dev->ctx = ctx;
  dev->info = &ctx->devices[index];
  dev->use_graphs = graphs;
  cudaError_t e = cudaSetDevice(dev->info->ordinal);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&dev->stream, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaMalloc(&dev->workspace, WORKSPACE_BYTES);
  if (e == cudaSuccess) e = cudaMalloc((void **)&dev->dummy, 256);
  if (e == cudaSuccess) e = cudaMemset(dev->dummy, 0, 256);
  cublasStatus_t b = CUBLAS_STATUS_SUCCESS;
  if (e == cudaSuccess) b = cublasCreate(&dev->blas);
  if (e == cudaSuccess && b == CUBLAS_STATUS_SUCCESS) b = cublasSetStream(dev->blas, dev->stream);
  /* A fixed workspace keeps cuBLAS from allocating inside a graph capture. */
  if (e == cudaSuccess && b == CUBLAS_STATUS_SUCCESS) b = cublasSetWorkspace(dev->blas, dev->workspace, WORKSPACE_BYTES);
  if (e == cudaSuccess && b == CUBLAS_STATUS_SUCCESS) b = cublasSetPointerMode(dev->blas, CUBLAS_POINTER_MODE_DEVICE);
  if (e != cudaSuccess || b != CUBLAS_STATUS_SUCCESS) {
    int32_t st = e != cudaSuccess ? fail(ctx, status_of(e), "cuda: cannot open '%s': %s", dev->info->desc.name, cudaGetErrorString(e))
                                  : fail(ctx, HM_ABI_STATUS_UNAVAILABLE, "cuda: cuBLAS failed on '%s' (status %d)", dev->info->desc.name, (int)b);
    cu_device_close(dev);
    return st;
  }
  *out = dev;
  return HM_ABI_OK;
}

/* ===== Buffers ===== */

static int check_buffer(const cu_buffer *b) { return !hm_plugin_buffer_ok(b, BUFFER_MAGIC); }

static int32_t cu_buffer_alloc(hm_abi_device *dev, uint64_t size, hm_abi_buffer **out) {
  if (!dev || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (size == 0) return fail(dev->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cuda: buffer size must be > 0");
  if (size > dev->info->desc.memory_bytes)
    return fail(dev->ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "cuda: buffer of %llu bytes exceeds the device's %llu bytes",
                (unsigned long long)size, (unsigned long long)dev->info->desc.memory_bytes);
  CUDA_TRY(dev->ctx, cudaSetDevice(dev->info->ordinal), "cudaSetDevice");
  cu_buffer *b = (cu_buffer *)calloc(1, sizeof *b);
  if (!b) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  /* Kernels address 32-bit words, and the packed matmul reads whole words
   * a little past a block's last byte: keep 64 bytes of slack. */
  uint64_t alloc = ((size + 3) & ~(uint64_t)3) + 64;
  cudaError_t e = cudaMalloc((void **)&b->ptr, (size_t)alloc);
  if (e != cudaSuccess) {
    free(b);
    return fail(dev->ctx, status_of(e), "cuda: cannot allocate %llu bytes: %s", (unsigned long long)size, cudaGetErrorString(e));
  }
  b->h.magic = BUFFER_MAGIC;
  b->dev = dev;
  b->h.size = size;
  dev->live_buffers++;
  *out = b;
  return HM_ABI_OK;
}

static void cu_buffer_free(hm_abi_buffer *b) {
  if (check_buffer(b)) return;
  cudaSetDevice(b->dev->info->ordinal);
  cudaStreamSynchronize(b->dev->stream);
  b->dev->live_buffers--;
  b->h.magic = 0;
  cudaFree(b->ptr);
  free(b);
}


static int32_t cu_buffer_write(hm_abi_buffer *b, uint64_t offset, const void *src, uint64_t size) {
  if (check_buffer(b) || (!src && size)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (!hm_plugin_range_ok(b, offset, size))
    return fail(b->dev->ctx, HM_ABI_STATUS_OUT_OF_RANGE, "cuda: write of %llu bytes at offset %llu exceeds buffer size %llu",
                (unsigned long long)size, (unsigned long long)offset, (unsigned long long)b->h.size);
  if (!size) return HM_ABI_OK;
  cu_context *ctx = b->dev->ctx;
  CUDA_TRY(ctx, cudaSetDevice(b->dev->info->ordinal), "cudaSetDevice");
  /* From pageable memory the call returns once |src| has been staged, so the
   * caller may reuse it; the stream orders the copy before later work. */
  CUDA_TRY(ctx, cudaMemcpyAsync((char *)b->ptr + offset, src, (size_t)size, cudaMemcpyHostToDevice, b->dev->stream), "write");
  return HM_ABI_OK;
}

static int32_t cu_buffer_read(hm_abi_buffer *b, uint64_t offset, void *dst, uint64_t size) {
  if (check_buffer(b) || (!dst && size)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (!hm_plugin_range_ok(b, offset, size))
    return fail(b->dev->ctx, HM_ABI_STATUS_OUT_OF_RANGE, "cuda: read of %llu bytes at offset %llu exceeds buffer size %llu",
                (unsigned long long)size, (unsigned long long)offset, (unsigned long long)b->h.size);
  if (!size) return HM_ABI_OK;
  cu_context *ctx = b->dev->ctx;
  CUDA_TRY(ctx, cudaSetDevice(b->dev->info->ordinal), "cudaSetDevice");
  CUDA_TRY(ctx, cudaMemcpyAsync(dst, (const char *)b->ptr + offset, (size_t)size, cudaMemcpyDeviceToHost, b->dev->stream), "read");
  CUDA_TRY(ctx, cudaStreamSynchronize(b->dev->stream), "read (a kernel may have failed)");
  return HM_ABI_OK;
}

static int32_t cu_buffer_copy(hm_abi_buffer *dst, uint64_t dst_offset, hm_abi_buffer *src, uint64_t src_offset, uint64_t size) {
  if (check_buffer(dst) || check_buffer(src)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (dst->dev != src->dev) return fail(dst->dev->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cuda: copy between different devices");
  if (!hm_plugin_range_ok(dst, dst_offset, size) || !hm_plugin_range_ok(src, src_offset, size))
    return fail(dst->dev->ctx, HM_ABI_STATUS_OUT_OF_RANGE, "cuda: copy of %llu bytes out of range", (unsigned long long)size);
  if (!size) return HM_ABI_OK;
  cu_context *ctx = dst->dev->ctx;
  CUDA_TRY(ctx, cudaSetDevice(dst->dev->info->ordinal), "cudaSetDevice");
  if (dst->ptr == src->ptr && dst_offset < src_offset + size && src_offset < dst_offset + size) {
    /* cudaMemcpy does not allow overlap: go through a temporary. */
    void *tmp = NULL;
    CUDA_TRY(ctx, cudaMalloc(&tmp, (size_t)size), "copy");
    cudaError_t e = cudaMemcpyAsync(tmp, (const char *)src->ptr + src_offset, (size_t)size, cudaMemcpyDeviceToDevice, dst->dev->stream);
    if (e == cudaSuccess)
      e = cudaMemcpyAsync((char *)dst->ptr + dst_offset, tmp, (size_t)size, cudaMemcpyDeviceToDevice, dst->dev->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(dst->dev->stream);
    cudaFree(tmp);
    CUDA_TRY(ctx, e, "copy");
    return HM_ABI_OK;
  }
  CUDA_TRY(ctx, cudaMemcpyAsync((char *)dst->ptr + dst_offset, (const char *)src->ptr + src_offset, (size_t)size,
                                cudaMemcpyDeviceToDevice, dst->dev->stream), "copy");
  CUDA_TRY(ctx, cudaStreamSynchronize(dst->dev->stream), "copy");
  return HM_ABI_OK;
}

/* ===== Programs ===== */

static int buffer_size_of(void *self, const hm_abi_buffer *b, uint64_t *size) {
  const cu_buffer *cb = (const cu_buffer *)b;
  if (check_buffer(cb) || cb->dev != self) return 1;
  *size = cb->h.size;
  return 0;
}

static void cu_program_free(hm_abi_program *p) {
  if (!p) return;
  cudaSetDevice(p->dev->info->ordinal);
  cudaStreamSynchronize(p->dev->stream);
  if (p->exec) cudaGraphExecDestroy(p->exec);
  if (p->graph) cudaGraphDestroy(p->graph);
  if (p->scalars_dev) cudaFree(p->scalars_dev);
  if (p->scalars_host) cudaFreeHost(p->scalars_host);
  for (int i = 0; i < 8; i++)
    if (p->slot_done[i]) cudaEventDestroy(p->slot_done[i]);
  for (uint32_t i = 0; p->steps && i < p->n_steps; i++)
    if (p->steps[i].sumsq_blocks && p->steps[i].args[5]) cudaFree(p->steps[i].args[5]);
  p->dev->live_programs--;
  free(p->steps);
  free(p);
}

/* Enqueues every step on the device's stream (also used while capturing). */
static int32_t enqueue(cu_program *p, int *failed_step) {
  cu_device *dev = p->dev;
  for (uint32_t i = 0; i < p->n_steps; i++) {
    cu_step *s = &p->steps[i];
    *failed_step = (int)i;
    if (s->is_gemm) {
      if (s->m == 0 || s->n == 0) continue;
      cublasStatus_t b = cublasGemmEx(dev->blas, s->tb, s->ta, s->n, s->m, s->k, s->alpha, s->b, CUDA_R_32F, s->ldb, s->a,
                                      CUDA_R_32F, s->lda, s->beta, s->c, CUDA_R_32F, s->n, s->compute, CUBLAS_GEMM_DEFAULT);
      if (b != CUBLAS_STATUS_SUCCESS) return fail(dev->ctx, HM_ABI_STATUS_INTERNAL, "cuda: op %u: cuBLAS GEMM failed (status %d)", i, (int)b);
      continue;
    }
    void *args[8] = {&s->args[0], &s->args[1], &s->args[2], &s->args[3], &s->args[4], &s->args[5], &p->scalars_dev, &s->d.p};
    cudaError_t e;
    if (s->sumsq_blocks) {
      e = cudaLaunchKernel((const void *)hm_k_sumsq_partial, dim3(s->sumsq_blocks), dim3(256), args, 0, dev->stream);
      if (e == cudaSuccess) e = cudaLaunchKernel((const void *)hm_k_sumsq_final, dim3(1), dim3(256), args, 0, dev->stream);
    } else {
      if (s->warp_gemv) {
        void *wargs[4] = {&s->args[0], &s->args[1], &s->args[3], &s->d.p};
        uint32_t dt = s->d.p.aux0, nb = (s->d.p.dim[2] + 63) / 64;
        size_t cache = (size_t)nb * 18 * 4;
        int cached = s->d.p.dim[0] == 1 && cache <= 48 * 1024;
        const void *fn = dt == HM_ABI_DTYPE_Q8   ? (cached ? (const void *)gemm_q_warp<8, true> : (const void *)gemm_q_warp<8, false>)
                         : dt == HM_ABI_DTYPE_Q4 ? (cached ? (const void *)gemm_q_warp<9, true> : (const void *)gemm_q_warp<9, false>)
                                                 : (cached ? (const void *)gemm_q_warp<10, true> : (const void *)gemm_q_warp<10, false>);
        e = cudaLaunchKernel(fn, dim3(s->d.groups), dim3(s->d.local_size), wargs, cached ? cache : 0, dev->stream);
      } else {
        e = cudaLaunchKernel((const void *)kernels[s->d.kernel], dim3(s->d.groups), dim3(s->d.local_size), args, 0,
                             dev->stream);
      }
    }
    if (e != cudaSuccess)
      return fail(dev->ctx, status_of(e), "cuda: op %u: kernel %s: %s (%d)", i, hm_kernel_name(s->d.kernel), cudaGetErrorString(e), (int)e);
  }
  return HM_ABI_OK;
}

static cublasComputeType_t compute_of(uint32_t din) {
  switch (din) {
    case HM_ABI_DTYPE_TF32: return CUBLAS_COMPUTE_32F_FAST_TF32;
    case HM_ABI_DTYPE_BF16: return CUBLAS_COMPUTE_32F_FAST_16BF;
    case HM_ABI_DTYPE_F16: return CUBLAS_COMPUTE_32F_FAST_16F;
    default: return CUBLAS_COMPUTE_32F;
  }
}

static int32_t cu_program_create(hm_abi_device *dev, const hm_abi_program_desc *desc, hm_abi_program **out) {
  if (!dev || !desc || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  cu_context *ctx = dev->ctx;
  size_t stride = 0;
  char pmsg[256];
  int32_t pst = hm_check_program_desc(desc, HM_PLUGIN_MAX_PROGRAM_OPS, &stride, pmsg, sizeof pmsg);
  if (pst) return fail(ctx, pst, "cuda: %s", pmsg);
  CUDA_TRY(ctx, cudaSetDevice(dev->info->ordinal), "cudaSetDevice");
  char msg[512];
  cu_program *p = (cu_program *)calloc(1, sizeof *p);
  if (!p) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  p->dev = dev;
  dev->live_programs++;
  p->n_scalars = desc->n_scalars;
  p->steps = (cu_step *)calloc(desc->n_ops ? desc->n_ops : 1, sizeof *p->steps);
  /* Device floats: the dynamic scalars, then alpha and beta of each GEMM. */
  size_t n_floats = desc->n_scalars + 2u * desc->n_ops + 1;
  int32_t st = p->steps ? HM_ABI_OK : HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  p->n_floats = n_floats;
  if (st == HM_ABI_OK && (cudaMalloc((void **)&p->scalars_dev, n_floats * sizeof(float)) != cudaSuccess ||
                          cudaMallocHost((void **)&p->scalars_host, (n_floats + 8u * (desc->n_scalars + 1)) * sizeof(float)) != cudaSuccess))
    st = fail(ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "cuda: out of memory for a program");
  for (int r = 0; r < 8 && st == HM_ABI_OK; r++)
    if (cudaEventCreateWithFlags(&p->slot_done[r], cudaEventDisableTiming) != cudaSuccess)
      st = fail(ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "cuda: cannot create events");
  if (st == HM_ABI_OK) memset(p->scalars_host, 0, n_floats * sizeof(float));
  for (uint32_t i = 0; i < desc->n_ops && st == HM_ABI_OK; i++) {
    const hm_abi_op *op = hm_program_op(desc, stride, i);
    if ((st = hm_check_op(op, i, desc->n_scalars, dev->info->caps, dev->info->n_caps, buffer_size_of, dev, 4, msg, sizeof msg))) {
      st = fail(ctx, st, "cuda: %s", msg);
      break;
    }
    cu_step *s = &p->steps[i];
    if (op->code == HM_ABI_OP_GEMM) {
      if (op->dims[0] > INT32_MAX || op->dims[1] > INT32_MAX || op->dims[2] > INT32_MAX) {
        st = fail(ctx, HM_ABI_STATUS_OUT_OF_RANGE, "cuda: op %u: GEMM dimension above 2^31-1", i);
        break;
      }
      s->is_gemm = 1;
      int ta = !!(op->flags & HM_ABI_OP_FLAG_TRANS_A), tb = !!(op->flags & HM_ABI_OP_FLAG_TRANS_B);
      s->m = (int)op->dims[0];
      s->n = (int)op->dims[1];
      s->k = (int)op->dims[2];
      s->ta = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
      s->tb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
      s->lda = ta ? (s->m ? s->m : 1) : (s->k ? s->k : 1);
      s->ldb = tb ? (s->k ? s->k : 1) : (s->n ? s->n : 1);
      s->a = (const float *)((const char *)((cu_buffer *)op->in[0].buffer)->ptr + op->in[0].offset);
      s->b = (const float *)((const char *)((cu_buffer *)op->in[1].buffer)->ptr + op->in[1].offset);
      s->c = (float *)((char *)((cu_buffer *)op->out[0].buffer)->ptr + op->out[0].offset);
      s->compute = compute_of(hm_dtype_or_f32(op->dtype_in));
      /* alpha and beta: a dynamic slot, or this GEMM's constant. */
      size_t konst = desc->n_scalars + 2u * i;
      p->scalars_host[konst] = op->params[0];
      p->scalars_host[konst + 1] = op->params[1];
      s->alpha = p->scalars_dev + (op->dyn[0] >= 0 ? (size_t)op->dyn[0] : konst);
      s->beta = p->scalars_dev + (op->dyn[1] >= 0 ? (size_t)op->dyn[1] : konst + 1);
      continue;
    }
    if (hm_plan_dispatch(op, MAX_GROUPS, &s->d, msg, sizeof msg)) {
      st = fail(ctx, HM_ABI_STATUS_OUT_OF_RANGE, "cuda: op %u: %s", i, msg);
      break;
    }
    if (s->d.kernel == HK_GEMM_Q) {
      uint64_t warps = op->dims[0] * op->dims[1], blocks = (warps * 32 + 255) / 256;
      s->warp_gemv = 1;
      s->d.local_size = 256;
      s->d.groups = (uint32_t)(blocks < 65535 ? (blocks ? blocks : 1) : 65535);
    }
    for (int k = 0; k < 6; k++) {
      const hm_abi_operand *o = k < 3 ? &op->in[k] : &op->out[k - 3];
      s->args[k] = o->buffer ? ((cu_buffer *)o->buffer)->ptr : dev->dummy;
      s->d.p.off[k] = o->buffer ? (uint32_t)(o->offset / 4) : 0;
    }
    if (s->d.kernel == HK_SUM_SQUARES && op->dims[0] > 8192) {
      uint64_t blocks = (op->dims[0] + 255) / 256;
      s->sumsq_blocks = (uint32_t)(blocks < 1 ? 1 : blocks > 1024 ? 1024 : blocks);
      s->d.p.aux1 = s->sumsq_blocks;
      if (cudaMalloc((void **)&s->args[5], s->sumsq_blocks * sizeof(float)) != cudaSuccess) {
        s->args[5] = NULL;
        st = fail(ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "cuda: op %u: no scratch for a reduction", i);
        break;
      }
      s->d.p.off[5] = 0;
    }
  }
  p->n_steps = desc->n_ops;
  if (st == HM_ABI_OK)
    if (cudaMemcpy(p->scalars_dev, p->scalars_host, n_floats * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess)
      st = fail(ctx, HM_ABI_STATUS_INTERNAL, "cuda: cannot upload program constants");
  if (st == HM_ABI_OK && dev->use_graphs && desc->n_ops) {
    /* Capture the whole program once; program_run replays it. */
    int failed = -1;
    cudaError_t e = cudaStreamBeginCapture(dev->stream, cudaStreamCaptureModeThreadLocal);
    if (e == cudaSuccess) {
      st = enqueue(p, &failed);
      cudaError_t e2 = cudaStreamEndCapture(dev->stream, &p->graph);
      if (st == HM_ABI_OK && e2 != cudaSuccess) e = e2;
    }
    if (st == HM_ABI_OK && e == cudaSuccess) e = cudaGraphInstantiate(&p->exec, p->graph, 0);
    if (st == HM_ABI_OK && e != cudaSuccess)
      st = fail(ctx, status_of(e), "cuda: capturing the program into a CUDA graph failed: %s (%d); device option graphs=off runs op by op",
                cudaGetErrorString(e), (int)e);
  }
  if (st != HM_ABI_OK) {
    cu_program_free(p);
    return st;
  }
  *out = p;
  return HM_ABI_OK;
}

static int32_t cu_program_run(hm_abi_program *p, const double *scalars, uint32_t n_scalars) {
  if (!p) return HM_ABI_STATUS_INVALID_ARGUMENT;
  cu_device *dev = p->dev;
  if (n_scalars != p->n_scalars || (n_scalars && !scalars))
    return fail(dev->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cuda: program_run got %u scalars, the program was created with %u",
                n_scalars, p->n_scalars);
  CUDA_TRY(dev->ctx, cudaSetDevice(dev->info->ordinal), "cudaSetDevice");
  if (n_scalars) {
    /* A ring of pinned slots: a slot is rewritten only after its last copy ran. */
    uint32_t r = p->slot++ % 8u;
    float *slot = p->scalars_host + p->n_floats + (size_t)r * (p->n_scalars + 1);
    CUDA_TRY(dev->ctx, cudaEventSynchronize(p->slot_done[r]), "program_run");
    for (uint32_t i = 0; i < n_scalars; i++) slot[i] = (float)scalars[i];
    CUDA_TRY(dev->ctx, cudaMemcpyAsync(p->scalars_dev, slot, n_scalars * sizeof(float), cudaMemcpyHostToDevice, dev->stream),
             "scalars");
    CUDA_TRY(dev->ctx, cudaEventRecord(p->slot_done[r], dev->stream), "program_run");
  }
  if (p->exec) {
    CUDA_TRY(dev->ctx, cudaGraphLaunch(p->exec, dev->stream), "cudaGraphLaunch");
    return HM_ABI_OK;
  }
  int failed = -1;
  return enqueue(p, &failed);
}

static int32_t cu_device_synchronize(hm_abi_device *dev) {
  if (!dev) return HM_ABI_STATUS_INVALID_ARGUMENT;
  CUDA_TRY(dev->ctx, cudaSetDevice(dev->info->ordinal), "cudaSetDevice");
  CUDA_TRY(dev->ctx, cudaStreamSynchronize(dev->stream), "synchronize");
  return HM_ABI_OK;
}

/* ===== Query ===== */

/* The plugin's entries: the versions are filled in by hm_plugin_answer_query. */
static const hm_abi_plugin plugin_table = HM_PLUGIN_TABLE(cu, "cuda", HM_PLUGIN_VERSION, HM_BUILD_ID);

extern "C" HM_ABI_EXPORT int32_t hm_plugin_query(const hm_abi_query *query, hm_abi_plugin *out) {
  return hm_plugin_answer_query(query, out, &plugin_table, PLUGIN_MIN_ABI);
}
