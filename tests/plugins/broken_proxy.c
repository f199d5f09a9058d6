/*
 * Plugins that are wrong on purpose, for the conformance tests. Each is a
 * proxy in front of the real CPU plugin (loaded with dlopen from
 * HM_CPU_PLUGIN_PATH) that injects one fault, selected at build time:
 *   BP_GEMM_ODD      GEMM is wrong at exactly one odd shape (7 x 13)
 *   BP_ADAM_NAN      Adam writes NaN once the bias correction drops below 0.5
 *   BP_OOB_WRITE     FILL writes one element past its output
 *   BP_CRASH_RUN     program_run crashes on a program with REDUCE_COLS
 *   BP_HANG          program_run never returns on a program with CLIP
 *   BP_BAD_VERSION   answers a newer host with the host's version, beyond
 *                    what the plugin declares it serves
 *   BP_Q3_ULP        int3_matmul is one ulp off in its first output (the
 *                    packed formats are exact: this must fail)
 * Everything else is the CPU plugin's behaviour, so only the injected fault
 * may be reported.
 */
#include <dlfcn.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harmonics_abi.h"

#ifndef BP_NAME
#define BP_NAME "broken"
#endif

static void *cpu_lib;
static hm_abi_plugin cpu;

struct hm_abi_program {
  hm_abi_program *real;
  hm_abi_op *ops;
  uint32_t n_ops;
};

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

static int32_t bp_program_create(hm_abi_device *d, const hm_abi_program_desc *desc, hm_abi_program **out) {
  if (!out) return cpu.program_create(d, desc, out);
  hm_abi_program *p = calloc(1, sizeof *p);
  if (!p) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  int32_t st = cpu.program_create(d, desc, &p->real);
  if (st != HM_ABI_OK) {
    free(p);
    return st;
  }
  p->ops = malloc(desc->n_ops * sizeof *p->ops + 1);
  memcpy(p->ops, desc->ops, desc->n_ops * sizeof *p->ops);
  p->n_ops = desc->n_ops;
  *out = p;
  return HM_ABI_OK;
}

static void bp_program_free(hm_abi_program *p) {
  if (!p) return;
  cpu.program_free(p->real);
  free(p->ops);
  free(p);
}

static int32_t bp_program_run(hm_abi_program *p, const double *scalars, uint32_t n) {
  if (!p) return cpu.program_run(NULL, scalars, n);
#ifdef BP_CRASH_RUN
  for (uint32_t i = 0; i < p->n_ops; i++)
    if (p->ops[i].code == HM_ABI_OP_REDUCE_COLS) raise(SIGSEGV);
#endif
#ifdef BP_HANG
  for (uint32_t i = 0; i < p->n_ops; i++)
    if (p->ops[i].code == HM_ABI_OP_CLIP)
      for (;;) pause();
#endif
  int32_t st = cpu.program_run(p->real, scalars, n);
  if (st != HM_ABI_OK) return st;
  for (uint32_t i = 0; i < p->n_ops; i++) {
    const hm_abi_op *op = &p->ops[i];
    (void)op;
#ifdef BP_GEMM_ODD
    if (op->code == HM_ABI_OP_GEMM && (op->dtype_in == 0 || op->dtype_in == HM_ABI_DTYPE_F32) && op->dims[0] == 7 &&
        op->dims[1] == 13) {
      float c0;
      cpu.buffer_read(op->out[0].buffer, op->out[0].offset, &c0, 4);
      c0 += 0.5f;
      cpu.buffer_write(op->out[0].buffer, op->out[0].offset, &c0, 4);
    }
#endif
#ifdef BP_ADAM_NAN
    if (op->code == HM_ABI_OP_ADAM) {
      double bc1 = op->dyn[1] >= 0 && (uint32_t)op->dyn[1] < n ? scalars[op->dyn[1]] : op->params[1];
      if (bc1 > 0.5) {
        float nan = NAN;
        cpu.buffer_write(op->out[0].buffer, op->out[0].offset, &nan, 4);
      }
    }
#endif
#ifdef BP_Q3_ULP
    if (op->code == HM_ABI_OP_GEMM_Q3) {
      float c0;
      cpu.buffer_read(op->out[0].buffer, op->out[0].offset, &c0, 4);
      c0 = nextafterf(c0, INFINITY);
      cpu.buffer_write(op->out[0].buffer, op->out[0].offset, &c0, 4);
    }
#endif
#ifdef BP_OOB_WRITE
    if (op->code == HM_ABI_OP_FILL) {
      float v = op->params[0];
      cpu.buffer_write(op->out[0].buffer, op->out[0].offset + op->dims[0] * 4, &v, 4);
    }
#endif
  }
  return HM_ABI_OK;
}

HM_ABI_EXPORT int32_t hm_plugin_query(const hm_abi_query *q, hm_abi_plugin *out) {
  if (!q || !out || load_cpu()) return HM_ABI_STATUS_UNAVAILABLE;
  uint32_t pmax = HM_ABI_VERSION, pmin = HM_ABI_MAKE_VERSION(1, 0);
  uint32_t hi = q->host_max_abi < pmax ? q->host_max_abi : pmax, lo = q->host_min_abi > pmin ? q->host_min_abi : pmin;
  if (HM_ABI_VERSION_GET_MAJOR(hi) != HM_ABI_VERSION_MAJOR || hi < lo) return HM_ABI_STATUS_INCOMPATIBLE;
  hm_abi_plugin p = cpu;
  p.struct_size = out->struct_size;
  p.abi_version = hi;
#ifdef BP_BAD_VERSION
  p.abi_version = q->host_max_abi; /* claims whatever the host speaks */
#endif
  p.plugin_min_abi = pmin;
  p.plugin_max_abi = pmax;
  p.name = BP_NAME;
  p.vendor = "Harmonics tests (broken on purpose)";
  p.program_create = bp_program_create;
  p.program_free = bp_program_free;
  p.program_run = bp_program_run;
  memcpy(out, &p, out->struct_size < sizeof p ? out->struct_size : sizeof p);
  return HM_ABI_OK;
}
