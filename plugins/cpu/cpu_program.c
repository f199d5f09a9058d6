/*
 * Programs: program_create validates every op once (declared capability,
 * operands present, inside their buffers, on this device, dynamic slots in
 * range) and resolves operands to host pointers; program_run then only
 * dispatches. Nothing is validated per step.
 */
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"
#include "op_rules.h"
#include "plugin_util.h"

/* hm_check_op's view of a buffer: its size, when it is one of this device's. */
static int buffer_size(void *self, const hm_abi_buffer *buffer, uint64_t *size) {
  const cpu_buffer *b = buffer;
  if (!hm_plugin_buffer_ok(b, CPU_BUFFER_MAGIC) || b->device != self) return 1;
  *size = b->h.size;
  return 0;
}

/* Checks op |index| with the shared rules (op_rules.h), then resolves its
 * operands to host pointers. */
static int32_t validate_op(cpu_device *dev, uint32_t index, const hm_abi_op *op, uint32_t n_scalars,
                           cpu_op *out) {
  cpu_context *ctx = dev->ctx;
  uint32_t n_caps = 0;
  const hm_abi_capability *caps = cpu_caps_table(&n_caps);
  char msg[512];
  int32_t st = hm_check_op(op, index, n_scalars, caps, n_caps, buffer_size, dev, 1, msg, sizeof msg);
  if (st) return cpu_fail(ctx, st, "cpu: %s", msg);
  if ((op->dims[0] > INT32_MAX || op->dims[1] > INT32_MAX || op->dims[2] > INT32_MAX) && op->code == HM_ABI_OP_GEMM)
    return cpu_fail(ctx, HM_ABI_STATUS_OUT_OF_RANGE, "cpu: op %u: GEMM dimension above 2^31-1", index);
  hm_operand_req in[4], outr[4];
  (void)hm_op_requirements(op, in, outr); /* known: hm_check_op passed */
  memset(out, 0, sizeof *out);
  out->op = *op;
  for (int i = 0; i < HM_ABI_MAX_OPERANDS; i++) {
    const hm_abi_operand *o[2] = {&op->in[i], &op->out[i]};
    const hm_operand_req *req[2] = {&in[i], &outr[i]};
    void **dst[2] = {&out->in[i], &out->out[i]};
    for (int k = 0; k < 2; k++) {
      if (!o[k]->buffer || (req[k]->required == 0 && req[k]->bytes == 0)) continue; /* absent, or unused */
      *dst[k] = ((const cpu_buffer *)o[k]->buffer)->data + o[k]->offset;
      (k == 0 ? out->in_bytes : out->out_bytes)[i] = req[k]->bytes;
    }
  }
  return HM_ABI_OK;
}

int32_t cpu_program_create(hm_abi_device *dev, const hm_abi_program_desc *desc, hm_abi_program **out) {
  if (!dev || !desc || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  cpu_context *ctx = dev->ctx;
  size_t stride = 0;
  char msg[256];
  int32_t dst = hm_check_program_desc(desc, HM_PLUGIN_MAX_PROGRAM_OPS, &stride, msg, sizeof msg);
  if (dst) return cpu_fail(ctx, dst, "cpu: program: %s", msg);
  cpu_program *p = calloc(1, sizeof *p);
  cpu_op *ops = desc->n_ops ? calloc(desc->n_ops, sizeof *ops) : NULL;
  if (!p || (desc->n_ops && !ops)) {
    free(p);
    free(ops);
    return cpu_fail(ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "cpu: out of memory for a program of %u ops",
                    desc->n_ops);
  }
  for (uint32_t i = 0; i < desc->n_ops; i++) {
    const hm_abi_op *op = hm_program_op(desc, stride, i);
    int32_t st = validate_op(dev, i, op, desc->n_scalars, &ops[i]);
    if (st) {
      free(ops);
      free(p);
      return st;
    }
  }
  uint64_t scratch = 0;
  for (uint32_t i = 0; i < desc->n_ops; i++) {
    uint64_t need = cpu_quant_scratch_bytes(dev, &ops[i].op) + cpu_gemm_scratch_bytes(&ops[i].op) +
                    cpu_window_scratch_bytes(dev, &ops[i].op) + cpu_norm_scratch_bytes(&ops[i].op);
    scratch = need > scratch ? need : scratch;
  }
  if (scratch) {
    p->scratch = scratch < SIZE_MAX - 64 ? aligned_alloc(64, (size_t)(scratch + 63) / 64 * 64) : NULL;
    if (!p->scratch) {
      free(ops);
      free(p);
      return cpu_fail(ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "cpu: out of memory for %llu bytes of matmul scratch",
                      (unsigned long long)scratch);
    }
  }
  p->device = dev;
  p->n_ops = desc->n_ops;
  p->n_scalars = desc->n_scalars;
  p->ops = ops;
  int32_t lst = cpu_window_link(p);
  if (lst) {
    free(p->scratch);
    free(ops);
    free(p);
    return lst;
  }
  atomic_fetch_add(&dev->live_programs, 1);
  *out = p;
  return HM_ABI_OK;
}

void cpu_program_free(hm_abi_program *p) {
  if (!p) return;
  atomic_fetch_sub(&p->device->live_programs, 1);
  free(p->ops);
  free(p->scratch);
  free(p->patches);
  free(p);
}

float cpu_param(const cpu_exec *ex, const cpu_op *op, int i) {
  if (i < HM_ABI_MAX_DYN && op->op.dyn[i] >= 0) return (float)ex->scalars[op->op.dyn[i]];
  return op->op.params[i];
}

int32_t cpu_program_run(hm_abi_program *p, const double *scalars, uint32_t n_scalars) {
  if (!p) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (n_scalars != p->n_scalars || (n_scalars && !scalars))
    return cpu_fail(p->device->ctx, HM_ABI_STATUS_INVALID_ARGUMENT,
                    "cpu: program_run got %u scalars, the program was created with %u", n_scalars,
                    p->n_scalars);
  cpu_exec ex = {p->device, scalars, n_scalars, p->scratch};
  unsigned fp = cpu_fp_enter();
  for (uint32_t i = 0; i < p->n_ops; i++) {
    const cpu_op *op = &p->ops[i];
    if (op->fused) continue; /* done by the op before it */
    switch (op->op.code) {
      case HM_ABI_OP_GEMM: cpu_kernel_gemm(&ex, op); break;
      case HM_ABI_OP_BIAS_ADD: cpu_kernel_bias_add(&ex, op); break;
      case HM_ABI_OP_ACT_FORWARD: cpu_kernel_act_forward(&ex, op); break;
      case HM_ABI_OP_ACT_BACKWARD: cpu_kernel_act_backward(&ex, op); break;
      case HM_ABI_OP_LOSS: cpu_kernel_loss(&ex, op); break;
      case HM_ABI_OP_REDUCE_ROWS: cpu_kernel_reduce_rows(&ex, op); break;
      case HM_ABI_OP_REDUCE_COLS: cpu_kernel_reduce_cols(&ex, op); break;
      case HM_ABI_OP_SUM_SQUARES: cpu_kernel_sum_squares(&ex, op); break;
      case HM_ABI_OP_CLIP: cpu_kernel_clip(&ex, op); break;
      case HM_ABI_OP_SCALE: cpu_kernel_scale(&ex, op); break;
      case HM_ABI_OP_AXPY: cpu_kernel_axpy(&ex, op); break;
      case HM_ABI_OP_GATHER_ROWS: cpu_kernel_gather_rows(&ex, op); break;
      case HM_ABI_OP_FILL: cpu_kernel_fill(&ex, op); break;
      case HM_ABI_OP_COPY: cpu_kernel_copy(&ex, op); break;
      case HM_ABI_OP_QUANTIZE:
      case HM_ABI_OP_DEQUANTIZE: cpu_kernel_quantize(&ex, op); break;
      case HM_ABI_OP_GEMM_Q8:
      case HM_ABI_OP_GEMM_Q4:
      case HM_ABI_OP_GEMM_Q3: cpu_kernel_gemm_q(&ex, op); break;
      case HM_ABI_OP_CONV2D:
      case HM_ABI_OP_CONV2D_BWD_DATA:
      case HM_ABI_OP_CONV2D_BWD_FILTER: cpu_kernel_conv2d(&ex, op); break;
      case HM_ABI_OP_POOL2D:
      case HM_ABI_OP_POOL2D_BWD: cpu_kernel_pool2d(&ex, op); break;
      case HM_ABI_OP_DROPOUT: cpu_kernel_dropout(&ex, op); break;
      case HM_ABI_OP_IM2COL: cpu_kernel_im2col(&ex, op); break;
      case HM_ABI_OP_BATCH_NORM:
      case HM_ABI_OP_BATCH_NORM_BWD:
      case HM_ABI_OP_LAYER_NORM:
      case HM_ABI_OP_LAYER_NORM_BWD: cpu_kernel_norm(&ex, op); break;
      default: cpu_kernel_optimizer(&ex, op); break;
    }
  }
  cpu_fp_leave(fp);
  return HM_ABI_OK;
}
