// The kernel dialect for Vulkan GLSL (glslc). See hm_ops.kern.
#ifdef K_gemm_sg // subgroup shuffles; the plugin runs this shader only on devices that have them
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
// A lane's value in every lane. A shuffle, not subgroupBroadcast: lavapipe
// made gemm_sg's forward GEMM (tiles of 4 rows then) 0.65-0.70 ms with
// shuffles, 1.24-1.33 with broadcasts (gemm_x4: 0.90-0.99).
#define SG_READ(v, lane) subgroupShuffle(v, lane)
#define SG_LANE gl_SubgroupInvocationID
#define SG_SIZE gl_SubgroupSize
#define SG_INDEX (gl_WorkGroupID.x * gl_NumSubgroups + gl_SubgroupID) /* this subgroup in the grid */
#define SG_COUNT (gl_NumWorkGroups.x * gl_NumSubgroups)
#endif
#define FN
#define KERNEL(name, wg) layout(local_size_x = wg) in; void main()
layout(std430, binding = 0) buffer B0_ { uint d[]; } b0_;
layout(std430, binding = 1) buffer B1_ { uint d[]; } b1_;
layout(std430, binding = 2) buffer B2_ { uint d[]; } b2_;
layout(std430, binding = 3) buffer B3_ { uint d[]; } b3_;
layout(std430, binding = 4) buffer B4_ { uint d[]; } b4_;
layout(std430, binding = 5) buffer B5_ { uint d[]; } b5_;
layout(std430, binding = 6) readonly buffer S_ { float d[]; } s_;
// uvec4 views of the outputs, for four-word stores (ST3X4..) and, without
// texel operands, four-word reads (R3X4..).
layout(std430, binding = 3) buffer B3V_ { uvec4 d[]; } b3v_;
layout(std430, binding = 4) buffer B4V_ { uvec4 d[]; } b4v_;
layout(std430, binding = 5) buffer B5V_ { uvec4 d[]; } b5v_;
// Built with HM_TEXEL_OPERANDS, a kernel reads its inputs b0..b2 through
// uniform texel buffers: R32_UINT views for W0..W2 (bindings 9..11) and
// R32G32B32A32_UINT views of b0 and b1 for the four-word loads (bindings 7
// and 8; the word index must be a multiple of 4); R3..R5, an in-place
// update's read of its own output element, read R32_UINT views of b3..b5
// (bindings 12..14; each element is read before, and by the one invocation
// that, writes it, so no texel read sees a write of the same dispatch). Mesa's lavapipe turns a
// texel read into vector loads (and a transpose), where every storage-buffer
// load inside a loop is a per-lane loop with branches; GPUs read them
// through the texture cache. Outputs b3..b5 stay storage buffers (kernels
// never write b0..b2). Otherwise every read is from the storage buffers.
#ifdef HM_TEXEL_OPERANDS
layout(binding = 7) uniform usamplerBuffer t0_;
layout(binding = 8) uniform usamplerBuffer t1_;
layout(binding = 9) uniform usamplerBuffer r0_;
layout(binding = 10) uniform usamplerBuffer r1_;
layout(binding = 11) uniform usamplerBuffer r2_;
layout(binding = 12) uniform usamplerBuffer r3_;
layout(binding = 13) uniform usamplerBuffer r4_;
layout(binding = 14) uniform usamplerBuffer r5_;
#define W0(i) texelFetch(r0_, int(p.off[0] + (i))).x
#define W1(i) texelFetch(r1_, int(p.off[1] + (i))).x
#define W2(i) texelFetch(r2_, int(p.off[2] + (i))).x
#define R3(i) texelFetch(r3_, int(p.off[3] + (i))).x
#define R4(i) texelFetch(r4_, int(p.off[4] + (i))).x
#define R5(i) texelFetch(r5_, int(p.off[5] + (i))).x
#define W0X4(i) texelFetch(t0_, int((p.off[0] + (i)) >> 2))
#define W1X4(i) texelFetch(t1_, int((p.off[1] + (i)) >> 2))
layout(binding = 15) uniform usamplerBuffer t3_;
layout(binding = 16) uniform usamplerBuffer t4_;
layout(binding = 17) uniform usamplerBuffer t5_;
#define R3X4(i) texelFetch(t3_, int((p.off[3] + (i)) >> 2))
#define R4X4(i) texelFetch(t4_, int((p.off[4] + (i)) >> 2))
#define R5X4(i) texelFetch(t5_, int((p.off[5] + (i)) >> 2))
#else
layout(std430, binding = 0) buffer B0V_ { uvec4 d[]; } b0v_;
layout(std430, binding = 1) buffer B1V_ { uvec4 d[]; } b1v_;
#define W0(i) b0_.d[p.off[0] + (i)]
#define W1(i) b1_.d[p.off[1] + (i)]
#define W2(i) b2_.d[p.off[2] + (i)]
#define R3(i) W3(i)
#define R4(i) W4(i)
#define R5(i) W5(i)
#define W0X4(i) b0v_.d[(p.off[0] + (i)) >> 2]
#define W1X4(i) b1v_.d[(p.off[1] + (i)) >> 2]
#define R3X4(i) b3v_.d[(p.off[3] + (i)) >> 2]
#define R4X4(i) b4v_.d[(p.off[4] + (i)) >> 2]
#define R5X4(i) b5v_.d[(p.off[5] + (i)) >> 2]
#endif
// A GEMM's transposes (flags bits 0 and 1) and every op's variant
// (activation, pooling kind, bias or not, ...) as specialization constants:
// the plugin creates one pipeline per value a program uses, so each runs
// straight-line code (lavapipe executes both sides of every branch, masked).
layout(constant_id = 0) const uint hm_spec_gemm_flags = 0u;
layout(constant_id = 1) const uint hm_spec_variant = 0u;
#define GEMM_FLAGS hm_spec_gemm_flags
#define VARIANT hm_spec_variant
layout(push_constant) uniform P_ {
  uint off[8]; uint dim[4]; uint flags; uint variant; uint aux0; uint aux1; float f[8]; int dyn[4];
} p;
#define W3(i) b3_.d[p.off[3] + (i)]
#define W4(i) b4_.d[p.off[4] + (i)]
#define W5(i) b5_.d[p.off[5] + (i)]
// Four-word stores (word index a multiple of 4) through uvec4 views of the
// same bindings: lavapipe stores lane by lane, all of a vector's words in
// one pass over the lanes instead of one pass per word.
#define ST3X4(i, x0, x1, x2, x3) b3v_.d[(p.off[3] + (i)) >> 2] = uvec4(x0, x1, x2, x3)
#define ST4X4(i, x0, x1, x2, x3) b4v_.d[(p.off[4] + (i)) >> 2] = uvec4(x0, x1, x2, x3)
#define ST5X4(i, x0, x1, x2, x3) b5v_.d[(p.off[5] + (i)) >> 2] = uvec4(x0, x1, x2, x3)
#define SCAL(k) s_.d[k]
#define U4 uvec4
#define U4_ZERO uvec4(0u)
#define AS_F(u) uintBitsToFloat(u)
#define AS_U(x) floatBitsToUint(x)
#define AS_I(u) int(u) /* bit-preserving */
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
