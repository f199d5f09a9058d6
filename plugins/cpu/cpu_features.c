/*
 * CPU feature detection with CPUID and XGETBV: an ISA counts only when the OS
 * also saves its register state (so AVX-512 under a kernel that disables it is
 * reported absent).
 */
#include <stdio.h>
#include <string.h>

#include "cpu_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static unsigned long long read_xcr0(void) {
  unsigned eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return ((unsigned long long)edx << 32) | eax;
}

void cpu_features_detect(cpu_features *out) {
  memset(out, 0, sizeof *out);
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return;
  int osxsave = (c >> 27) & 1;
  unsigned long long xcr0 = osxsave ? read_xcr0() : 0;
  int ymm_ok = (xcr0 & 0x6) == 0x6;
  int zmm_ok = ymm_ok && (xcr0 & 0xe0) == 0xe0;
  int amx_ok = (xcr0 & 0x60000) == 0x60000;
  out->avx = ymm_ok && ((c >> 28) & 1);
  out->fma = ymm_ok && ((c >> 12) & 1);
  out->f16c = ymm_ok && ((c >> 29) & 1);
  unsigned max_leaf = __get_cpuid_max(0, NULL);
  if (max_leaf < 7) return;
  __cpuid_count(7, 0, a, b, c, d);
  out->avx2 = ymm_ok && ((b >> 5) & 1);
  out->avx512f = zmm_ok && ((b >> 16) & 1);
  out->avx512dq = zmm_ok && ((b >> 17) & 1);
  out->avx512bw = zmm_ok && ((b >> 30) & 1);
  out->avx512vl = zmm_ok && ((b >> 31) & 1);
  out->avx512_vnni = zmm_ok && ((c >> 11) & 1);
  out->avx512_vbmi = zmm_ok && ((c >> 1) & 1);
  out->amx_bf16 = amx_ok && ((d >> 22) & 1);
  out->amx_int8 = amx_ok && ((d >> 25) & 1);
  unsigned eax1 = 0, ebx1, ecx1, edx1;
  __cpuid_count(7, 1, eax1, ebx1, ecx1, edx1);
  (void)ebx1;
  (void)ecx1;
  (void)edx1;
  out->avx_vnni = ymm_ok && ((eax1 >> 4) & 1);
  out->avx512_bf16 = zmm_ok && ((eax1 >> 5) & 1);
}
#else
void cpu_features_detect(cpu_features *out) { memset(out, 0, sizeof *out); }
#endif

void cpu_features_describe(const cpu_features *f, char *buf, size_t cap) {
  struct {
    int on;
    const char *name;
  } flags[] = {
      {f->avx2, "avx2"},           {f->fma, "fma"},         {f->f16c, "f16c"},
      {f->avx512f, "avx512f"},     {f->avx512bw, "avx512bw"}, {f->avx512vl, "avx512vl"},
      {f->avx512_vnni, "avx512vnni"}, {f->avx512_vbmi, "avx512vbmi"}, {f->avx512_bf16, "avx512bf16"}, {f->avx_vnni, "avxvnni"},
      {f->amx_int8, "amx-int8"},   {f->amx_bf16, "amx-bf16"},
  };
  size_t len = strlen(buf), start = len;
  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
    if (!flags[i].on) continue;
    int n = snprintf(buf + len, cap > len ? cap - len : 0, "%s%s", len > start ? "," : "", flags[i].name);
    if (n < 0 || (size_t)n >= cap - len) break;
    len += (size_t)n;
  }
}

cpu_isa cpu_isa_best(const cpu_features *f) {
  if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->avx512_vnni && f->avx512_vbmi && f->f16c)
    return CPU_ISA_AVX512;
  if (f->avx2 && f->fma && f->f16c && f->avx_vnni) return CPU_ISA_AVXVNNI;
  if (f->avx2 && f->fma && f->f16c) return CPU_ISA_AVX2;
  return CPU_ISA_GENERIC;
}

const char *cpu_isa_name(cpu_isa isa) {
  static const char *names[] = {"generic", "avx2", "avxvnni", "avx512"};
  return names[isa];
}

const cpu_vec_ops *cpu_vec_for(cpu_isa isa) {
  switch (isa) {
    case CPU_ISA_AVX512: return cpu_vec_avx512();
    case CPU_ISA_AVXVNNI:
    case CPU_ISA_AVX2: return cpu_vec_avx2();
    default: return cpu_vec_generic();
  }
}

const cpu_quant_ops *cpu_quant_for(cpu_isa isa) {
  switch (isa) {
    case CPU_ISA_AVX512: return cpu_quant_avx512();
    case CPU_ISA_AVXVNNI: return cpu_quant_avxvnni();
    case CPU_ISA_AVX2: return cpu_quant_avx2();
    default: return cpu_quant_generic();
  }
}
