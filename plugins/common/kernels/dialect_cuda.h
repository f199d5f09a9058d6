// The kernel dialect for CUDA C++ (nvcc). See hm_ops.kern. Build the file
// that includes this with -fmad=false: the packed formats are bit-exact and
// no multiply-add may be fused (QUANT.md Q7).
typedef unsigned int uint;
#define FN static __device__ __forceinline__
#define kp_t hm_kparams
#define KERNEL(name, wg) extern "C" __global__ void __launch_bounds__(wg) hm_k_##name( \
    uint *hm_b0_, uint *hm_b1_, uint *hm_b2_, uint *hm_b3_, uint *hm_b4_, uint *hm_b5_, const float *hm_sc_, const kp_t p)
#define W0(i) hm_b0_[p.off[0] + (i)]
#define W1(i) hm_b1_[p.off[1] + (i)]
#define W2(i) hm_b2_[p.off[2] + (i)]
#define W3(i) hm_b3_[p.off[3] + (i)]
#define W4(i) hm_b4_[p.off[4] + (i)]
#define W5(i) hm_b5_[p.off[5] + (i)]
#define ST3X4(i, a, b, c, d) { W3(i) = (a); W3((i) + 1u) = (b); W3((i) + 2u) = (c); W3((i) + 3u) = (d); }
#define ST4X4(i, a, b, c, d) { W4(i) = (a); W4((i) + 1u) = (b); W4((i) + 2u) = (c); W4((i) + 3u) = (d); }
#define ST5X4(i, a, b, c, d) { W5(i) = (a); W5((i) + 1u) = (b); W5((i) + 2u) = (c); W5((i) + 3u) = (d); }
#define R3X4(i) make_uint4(W3(i), W3((i) + 1u), W3((i) + 2u), W3((i) + 3u))
#define R4X4(i) make_uint4(W4(i), W4((i) + 1u), W4((i) + 2u), W4((i) + 3u))
#define R5X4(i) make_uint4(W5(i), W5((i) + 1u), W5((i) + 2u), W5((i) + 3u))
#define R3(i) W3(i)
#define R4(i) W4(i)
#define R5(i) W5(i)
#define SCAL(k) hm_sc_[k]
#define W0X4(i) make_uint4(W0(i), W0((i) + 1u), W0((i) + 2u), W0((i) + 3u))
#define W1X4(i) make_uint4(W1(i), W1((i) + 1u), W1((i) + 2u), W1((i) + 3u))
#define U4 uint4
#define U4_ZERO make_uint4(0u, 0u, 0u, 0u)
// A warp as the subgroup (gemm_sg); every lane of it takes part.
#define SG_READ(v, lane) __shfl_sync(0xffffffffu, v, lane)
#define SG_LANE (threadIdx.x & 31u)
#define SG_SIZE 32u
#define SG_INDEX (GID >> 5)
#define SG_COUNT (GSTRIDE >> 5)
#define GEMM_FLAGS p.flags /* a GEMM's transposes (a specialization constant in GLSL) */
#define VARIANT p.variant  /* the op's variant (a specialization constant in GLSL) */
#define AS_F(u) __uint_as_float(u)
#define AS_U(x) __float_as_uint(x)
#define AS_I(u) ((int)(u)) /* two's complement */
#define TOF(x) ((float)(x))
#define TOI(x) ((int)(x))
#define TOU(x) ((uint)(x))
#define GID (blockIdx.x * blockDim.x + threadIdx.x)
#define GSTRIDE (gridDim.x * blockDim.x)
#define LID threadIdx.x
#define LSIZE blockDim.x
#define GROUP blockIdx.x
#define NGROUPS gridDim.x
#define BARRIER() __syncthreads()
#define SHARED_G(t, n, c)
#define SHARED_L(t, n, c) __shared__ t n[c];
#define PRECISE
#define EXPF(x) expf(x)
#define LOGF(x) logf(x)
#define SQRTF(x) sqrtf(x)
#define FABSF(x) fabsf(x)
#define FMAF(a, b, c) __fmaf_rn(a, b, c)
#define FLOORF(x) floorf(x)
