// The kernel dialect for Vulkan GLSL (glslc). See hm_ops.kern.
#define FN
#define KERNEL(name, wg) layout(local_size_x = wg) in; void main()
layout(std430, binding = 0) buffer B0_ { uint d[]; } b0_;
layout(std430, binding = 1) buffer B1_ { uint d[]; } b1_;
layout(std430, binding = 2) buffer B2_ { uint d[]; } b2_;
layout(std430, binding = 3) buffer B3_ { uint d[]; } b3_;
layout(std430, binding = 4) buffer B4_ { uint d[]; } b4_;
layout(std430, binding = 5) buffer B5_ { uint d[]; } b5_;
layout(std430, binding = 6) readonly buffer S_ { float d[]; } s_;
// Four-word loads of b0 and b1 for kernels that load 4 words at once (the
// word index must be a multiple of 4). Built with HM_TEXEL_OPERANDS they
// read uniform texel buffers (bindings 7 and 8: R32G32B32A32_UINT views of
// b0 and b1), which Mesa's lavapipe turns into vector loads and a shuffle,
// where every storage-buffer load in a loop is a per-lane loop with
// branches; GPUs read them through the texture cache. Otherwise they read
// four-word views of the storage buffers themselves.
#ifdef HM_TEXEL_OPERANDS
layout(binding = 7) uniform usamplerBuffer t0_;
layout(binding = 8) uniform usamplerBuffer t1_;
#define W0X4(i) texelFetch(t0_, int((p.off[0] + (i)) >> 2))
#define W1X4(i) texelFetch(t1_, int((p.off[1] + (i)) >> 2))
#else
layout(std430, binding = 0) buffer B0V_ { uvec4 d[]; } b0v_;
layout(std430, binding = 1) buffer B1V_ { uvec4 d[]; } b1v_;
#define W0X4(i) b0v_.d[(p.off[0] + (i)) >> 2]
#define W1X4(i) b1v_.d[(p.off[1] + (i)) >> 2]
#endif
// A GEMM's transposes (flags bits 0 and 1) as a specialization constant:
// the plugin creates one pipeline per pair, so each runs straight-line
// code (lavapipe executes both sides of every branch, masked).
layout(constant_id = 0) const uint hm_spec_gemm_flags = 0u;
#define GEMM_FLAGS hm_spec_gemm_flags
layout(push_constant) uniform P_ {
  uint off[8]; uint dim[4]; uint flags; uint variant; uint aux0; uint aux1; float f[8]; int dyn[4];
} p;
#define W0(i) b0_.d[p.off[0] + (i)]
#define W1(i) b1_.d[p.off[1] + (i)]
#define W2(i) b2_.d[p.off[2] + (i)]
#define W3(i) b3_.d[p.off[3] + (i)]
#define W4(i) b4_.d[p.off[4] + (i)]
#define W5(i) b5_.d[p.off[5] + (i)]
#define SCAL(k) s_.d[k]
#define U4 uvec4
#define AS_F(u) uintBitsToFloat(u)
#define AS_U(x) floatBitsToUint(x)
#define TOF(x) float(x)
#define TOI(x) int(x)
#define TOU(x) uint(x)
#define GID gl_GlobalInvocationID.x
#define GSTRIDE (gl_NumWorkGroups.x * gl_WorkGroupSize.x)
#define LID gl_LocalInvocationID.x
#define LSIZE gl_WorkGroupSize.x
#define GROUP gl_WorkGroupID.x
#define NGROUPS gl_NumWorkGroups.x
#define BARRIER() memoryBarrierShared(); barrier()
#define SHARED_G(t, n, c) shared t n[c];
#define SHARED_L(t, n, c)
#define PRECISE precise
#define EXPF(x) exp(x)
#define LOGF(x) log(x)
#define SQRTF(x) sqrt(x)
#define FABSF(x) abs(x)
#define FMAF(a, b, c) ((a) * (b) + (c))
#define FLOORF(x) floor(x)
