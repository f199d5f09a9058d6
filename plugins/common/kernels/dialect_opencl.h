// The kernel dialect for OpenCL C 1.2. See hm_ops.kern.
#pragma OPENCL FP_CONTRACT OFF
#define FN
typedef struct kp_t {
  uint off[8]; uint dim[4]; uint flags; uint variant; uint aux0; uint aux1; float f[8]; int dyn[4];
} kp_t;
#define KERNEL(name, wg) __kernel __attribute__((reqd_work_group_size(wg, 1, 1))) void name( \
    __global uint *hm_b0_, __global uint *hm_b1_, __global uint *hm_b2_, __global uint *hm_b3_, __global uint *hm_b4_, \
    __global uint *hm_b5_, __global const float *hm_sc_, const kp_t p)
#define W0(i) hm_b0_[p.off[0] + (i)]
#define W1(i) hm_b1_[p.off[1] + (i)]
#define W2(i) hm_b2_[p.off[2] + (i)]
#define W3(i) hm_b3_[p.off[3] + (i)]
#define W4(i) hm_b4_[p.off[4] + (i)]
#define W5(i) hm_b5_[p.off[5] + (i)]
#define ST3X4(i, a, b, c, d) vstore4((uint4)(a, b, c, d), 0, hm_b3_ + p.off[3] + (i))
#define ST4X4(i, a, b, c, d) vstore4((uint4)(a, b, c, d), 0, hm_b4_ + p.off[4] + (i))
#define ST5X4(i, a, b, c, d) vstore4((uint4)(a, b, c, d), 0, hm_b5_ + p.off[5] + (i))
#define R3X4(i) vload4(0, hm_b3_ + p.off[3] + (i))
#define R4X4(i) vload4(0, hm_b4_ + p.off[4] + (i))
#define R5X4(i) vload4(0, hm_b5_ + p.off[5] + (i))
#define R3(i) W3(i)
#define R4(i) W4(i)
#define R5(i) W5(i)
#define SCAL(k) hm_sc_[k]
#define W0X4(i) vload4(0, hm_b0_ + p.off[0] + (i))
#define W1X4(i) vload4(0, hm_b1_ + p.off[1] + (i))
#define U4 uint4
#define U4_ZERO ((uint4)(0u))
#define GEMM_FLAGS p.flags /* a GEMM's transposes (a specialization constant in GLSL) */
#define VARIANT p.variant  /* the op's variant (a specialization constant in GLSL) */
#define AS_F(u) as_float(u)
#define AS_U(x) as_uint(x)
#define AS_I(u) as_int(u)
#define TOF(x) ((float)(x))
#define TOI(x) ((int)(x))
#define TOU(x) ((uint)(x))
#define GID ((uint)get_global_id(0))
#define GSTRIDE ((uint)get_global_size(0))
#define LID ((uint)get_local_id(0))
#define LSIZE ((uint)get_local_size(0))
#define GROUP ((uint)get_group_id(0))
#define NGROUPS ((uint)get_num_groups(0))
#define BARRIER() barrier(CLK_LOCAL_MEM_FENCE | CLK_GLOBAL_MEM_FENCE)
#define SHARED_G(t, n, c)
#define SHARED_L(t, n, c) __local t n[c];
#define PRECISE
#define EXPF(x) exp(x)
#define LOGF(x) log(x)
#define SQRTF(x) sqrt(x)
#define FABSF(x) fabs(x)
#define FMAF(a, b, c) fma(a, b, c)
#define FLOORF(x) floor(x)
