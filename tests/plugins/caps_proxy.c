/*
 * Plugins that declare different capabilities, for the precision-policy
 * tests. Each is a proxy in front of the real CPU plugin (HM_CPU_PLUGIN_PATH)
 * whose capability table is edited at build time:
 *   CP_NO_Q3         no int3 at all (QUANTIZE/DEQUANTIZE to Q3, GEMM_Q3)
 *   CP_NO_PACKED     no packed integer op at all
 *   CP_NO_DEQUANT_Q3 int3 QUANTIZE and GEMM_Q3 but no DEQUANTIZE from Q3
 *                    (inference can run int3, training cannot)
 *   CP_FAST_BF16     BF16 GEMM declared four times faster than f32
 *   CP_NO_LAYER_NORM_BWD  no LAYER_NORM_BWD (layer norm runs, trains not)
 *   CP_RECORD        every capability; writes each program's ops (code,
 *                    dims[0], out[0]'s offset, one line each) to the file
 *                    $CP_RECORD_PATH, so a test can check what the lowering emits
 * program_create refuses any op the edited table does not declare, so a test
 * passes only if the runtime never emits an undeclared op.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harmonics_abi.h"

#ifndef CP_NAME
#define CP_NAME "caps"
#endif

static void *cpu_lib;
static hm_abi_plugin cpu;
static hm_abi_capability caps[128];
static uint32_t n_caps;

static int load_cpu(void) {
  if (cpu.init) return 0;
  cpu_lib = dlopen(HM_CPU_PLUGIN_PATH, RTLD_NOW | RTLD_LOCAL);
  if (!cpu_lib) return 1;
  void *sym = dlsym(cpu_lib, HM_PLUGIN_QUERY_SYMBOL);
  hm_plugin_query_fn q;
  memcpy(&q, &sym, sizeof q);
  hm_abi_query query;
  memset(&query, 0, sizeof query);
  query.struct_size = sizeof query;
  query.abi_version = HM_ABI_VERSION;
  query.host_min_abi = HM_ABI_VERSION;
  query.host_max_abi = HM_ABI_VERSION;
  memset(&cpu, 0, sizeof cpu);
  cpu.struct_size = sizeof cpu;
  return !q || q(&query, &cpu) != HM_ABI_OK;
}

static int keep(const hm_abi_capability *c) {
  (void)c;
#ifdef CP_NO_Q3
  if (c->dtype_in == HM_ABI_DTYPE_Q3 || c->dtype_out == HM_ABI_DTYPE_Q3) return 0;
#endif
#ifdef CP_NO_PACKED
  if (c->op >= HM_ABI_OP_QUANTIZE && c->op <= HM_ABI_OP_GEMM_Q3) return 0;
#endif
#ifdef CP_NO_DEQUANT_Q3
  if (c->op == HM_ABI_OP_DEQUANTIZE && c->dtype_in == HM_ABI_DTYPE_Q3) return 0;
#endif
#ifdef CP_NO_LAYER_NORM_BWD
  if (c->op == HM_ABI_OP_LAYER_NORM_BWD) return 0;
#endif
  return 1;
}

static void edit_caps(const hm_abi_capability *src, uint32_t n) {
  n_caps = 0;
  for (uint32_t i = 0; i < n && n_caps < sizeof caps / sizeof caps[0]; i++) {
    if (!keep(&src[i])) continue;
    caps[n_caps] = src[i];
#ifdef CP_FAST_BF16
    if (src[i].op == HM_ABI_OP_GEMM && src[i].dtype_in == HM_ABI_DTYPE_BF16) caps[n_caps].speed_hint = 4.0f;
#endif
    n_caps++;
  }
}

static int32_t cp_device_describe(hm_abi_context *ctx, uint32_t index, hm_abi_device_desc *out) {
  int32_t st = cpu.device_describe(ctx, index, out);
  if (st != HM_ABI_OK || out->struct_size < sizeof *out) return st;
  edit_caps(out->caps, out->n_caps);
  out->caps = caps;
  out->n_caps = n_caps;
  return HM_ABI_OK;
}

static int declared(const hm_abi_op *op) {
  uint32_t din = op->dtype_in ? op->dtype_in : HM_ABI_DTYPE_F32, dout = op->dtype_out ? op->dtype_out : HM_ABI_DTYPE_F32;
  for (uint32_t i = 0; i < n_caps; i++)
    if (caps[i].op == op->code && caps[i].dtype_in == din &&
        (caps[i].dtype_out == dout || op->code == HM_ABI_OP_COPY || op->code == HM_ABI_OP_GATHER_ROWS ||
         op->code == HM_ABI_OP_FILL))
      return 1;
  return 0;
}

#ifdef CP_RECORD
static void record(const hm_abi_program_desc *desc) {
  const char *path = getenv("CP_RECORD_PATH");
  FILE *f = path ? fopen(path, "a") : NULL;
  if (!f) return;
  fprintf(f, "program %u\n", desc->n_ops);
  for (uint32_t i = 0; i < desc->n_ops; i++)
    fprintf(f, "%u %llu %llu\n", desc->ops[i].code, (unsigned long long)desc->ops[i].dims[0],
            (unsigned long long)desc->ops[i].out[0].offset);
  fclose(f);
}
#endif

static int32_t cp_program_create(hm_abi_device *d, const hm_abi_program_desc *desc, hm_abi_program **out) {
  for (uint32_t i = 0; desc && i < desc->n_ops; i++)
    if (!declared(&desc->ops[i])) return HM_ABI_STATUS_UNIMPLEMENTED;
#ifdef CP_RECORD
  if (desc) record(desc);
#endif
  return cpu.program_create(d, desc, out);
}

HM_ABI_EXPORT int32_t hm_plugin_query(const hm_abi_query *q, hm_abi_plugin *out) {
  if (!q || !out || load_cpu()) return HM_ABI_STATUS_UNAVAILABLE;
  if (q->host_max_abi < HM_ABI_VERSION || q->host_min_abi > HM_ABI_VERSION) return HM_ABI_STATUS_INCOMPATIBLE;
  hm_abi_plugin p = cpu;
  p.struct_size = out->struct_size;
  p.name = CP_NAME;
  p.vendor = "Harmonics tests (edited capabilities)";
  p.device_describe = cp_device_describe;
  p.program_create = cp_program_create;
  memcpy(out, &p, out->struct_size < sizeof p ? out->struct_size : sizeof p);
  return HM_ABI_OK;
}
