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

static int is_gemm_q(uint32_t code) {
  return code == HM_ABI_OP_GEMM_Q8 || code == HM_ABI_OP_GEMM_Q4 || code == HM_ABI_OP_GEMM_Q3;
}


static int32_t resolve_operand(cpu_device *dev, uint32_t index, const char *role, int slot,
                               const hm_abi_operand *o, const hm_operand_req *req, void **out) {
  cpu_context *ctx = dev->ctx;
  *out = NULL;
  if (!o->buffer) {
    if (req->required == 1)
      return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: op %u: operand %s[%d] is required", index,
                      role, slot);
    return HM_ABI_OK;
  }
  if (req->required == 0 && req->bytes == 0) return HM_ABI_OK; /* a slot the op does not use */
  const cpu_buffer *b = o->buffer;
  if (b->magic != CPU_BUFFER_MAGIC)
    return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: op %u: operand %s[%d] is not a cpu buffer",
                    index, role, slot);
  if (b->device != dev)
    return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT,
                    "cpu: op %u: operand %s[%d] belongs to another device", index, role, slot);
  if (req->bytes == UINT64_MAX || o->offset > b->size || req->bytes > b->size - o->offset)
    return cpu_fail(ctx, HM_ABI_STATUS_OUT_OF_RANGE,
                    "cpu: op %u: operand %s[%d] needs %llu bytes at offset %llu but the buffer has %llu",
                    index, role, slot, (unsigned long long)req->bytes, (unsigned long long)o->offset,
                    (unsigned long long)b->size);
  *out = b->data + o->offset;
  return HM_ABI_OK;
}

static int overlaps(const hm_abi_operand *a, uint64_t abytes, const hm_abi_operand *b, uint64_t bbytes) {
  if (!a->buffer || a->buffer != b->buffer || !abytes || !bbytes) return 0;
  return a->offset < b->offset + bbytes && b->offset < a->offset + abytes;
}

static int32_t validate_op(cpu_device *dev, uint32_t index, const hm_abi_op *op, uint32_t n_scalars,
                           cpu_op *out) {
  cpu_context *ctx = dev->ctx;
  hm_operand_req in[4], outr[4];
  if (hm_op_requirements(op, in, outr))
    return cpu_fail(ctx, HM_ABI_STATUS_UNIMPLEMENTED, "cpu: op %u: op code %u is not supported", index,
                    op->code);
  uint32_t din = hm_dtype_or_f32(op->dtype_in), dout = hm_dtype_or_f32(op->dtype_out);
  if (op->code == HM_ABI_OP_FILL) din = dout;  /* FILL has no input (SPEC.md §7) */
  if (op->code == HM_ABI_OP_COPY) dout = din;  /* COPY keeps its type */
  if (hm_op_has_variant(op->code)) {
    uint32_t limit = op->code == HM_ABI_OP_LOSS ? HM_ABI_LOSS_COUNT : HM_ABI_ACT_COUNT;
    if (op->variant >= limit)
      return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: op %u: variant %u out of range", index,
                      op->variant);
  }
  if (!cpu_caps_supports(op->code, din, dout, hm_op_has_variant(op->code) ? op->variant : 0))
    return cpu_fail(ctx, HM_ABI_STATUS_UNIMPLEMENTED,
                    "cpu: op %u: op %u with dtype_in %u dtype_out %u variant %u is not declared", index,
                    op->code, din, dout, op->variant);
  for (int i = 0; i < HM_ABI_MAX_DYN; i++) {
    if (op->dyn[i] != HM_ABI_DYN_NONE && (op->dyn[i] < 0 || (uint32_t)op->dyn[i] >= n_scalars))
      return cpu_fail(ctx, HM_ABI_STATUS_OUT_OF_RANGE,
                      "cpu: op %u: dynamic slot dyn[%d]=%d outside the %u program scalars", index, i,
                      op->dyn[i], n_scalars);
  }
  memset(out, 0, sizeof *out);
  out->op = *op;
  for (int i = 0; i < HM_ABI_MAX_OPERANDS; i++) {
    int32_t st = resolve_operand(dev, index, "in", i, &op->in[i], &in[i], &out->in[i]);
    if (st) return st;
    st = resolve_operand(dev, index, "out", i, &op->out[i], &outr[i], &out->out[i]);
    if (st) return st;
  }
  if (op->code == HM_ABI_OP_LOSS && !out->out[0] && !out->out[1])
    return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: op %u: loss writes neither loss nor gradient",
                    index);
  if ((op->code == HM_ABI_OP_GEMM || is_gemm_q(op->code) || op->code == HM_ABI_OP_QUANTIZE ||
       op->code == HM_ABI_OP_DEQUANTIZE) &&
      (overlaps(&op->out[0], outr[0].bytes, &op->in[0], in[0].bytes) ||
       overlaps(&op->out[0], outr[0].bytes, &op->in[1], in[1].bytes)))
    return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: op %u: output overlaps an input", index);
  if (op->code == HM_ABI_OP_GATHER_ROWS && din == HM_ABI_DTYPE_I32 && dout != HM_ABI_DTYPE_I32)
    return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: op %u: gather of I32 must write I32", index);
  if ((op->dims[0] > INT32_MAX || op->dims[1] > INT32_MAX || op->dims[2] > INT32_MAX) &&
      op->code == HM_ABI_OP_GEMM)
    return cpu_fail(ctx, HM_ABI_STATUS_OUT_OF_RANGE, "cpu: op %u: GEMM dimension above 2^31-1", index);
  return HM_ABI_OK;
}

int32_t cpu_program_create(hm_abi_device *dev, const hm_abi_program_desc *desc, hm_abi_program **out) {
  if (!dev || !desc || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  cpu_context *ctx = dev->ctx;
  if (desc->struct_size < sizeof(hm_abi_program_desc))
    return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: program descriptor struct_size %u too small",
                    desc->struct_size);
  if (desc->n_ops && !desc->ops)
    return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: program has %u ops but no op array", desc->n_ops);
  if (desc->n_ops > (1u << 24))
    return cpu_fail(ctx, HM_ABI_STATUS_OUT_OF_RANGE, "cpu: program has too many ops (%u)", desc->n_ops);
  /* The op array's stride is the first op's struct_size (SPEC.md HM-ABI-9). */
  size_t stride = desc->n_ops ? desc->ops[0].struct_size : sizeof(hm_abi_op);
  if (stride < sizeof(hm_abi_op))
    return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: op struct_size %zu is smaller than %zu",
                    stride, sizeof(hm_abi_op));
  cpu_program *p = calloc(1, sizeof *p);
  cpu_op *ops = desc->n_ops ? calloc(desc->n_ops, sizeof *ops) : NULL;
  if (!p || (desc->n_ops && !ops)) {
    free(p);
    free(ops);
    return cpu_fail(ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "cpu: out of memory for a program of %u ops",
                    desc->n_ops);
  }
  for (uint32_t i = 0; i < desc->n_ops; i++) {
    const hm_abi_op *op = (const hm_abi_op *)((const char *)desc->ops + (size_t)i * stride);
    if (op->struct_size != stride) {
      free(ops);
      free(p);
      return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: op %u: struct_size %u differs from op 0's %zu",
                      i, op->struct_size, stride);
    }
    int32_t st = validate_op(dev, i, op, desc->n_scalars, &ops[i]);
    if (st) {
      free(ops);
      free(p);
      return st;
    }
  }
  uint64_t scratch = 0;
  for (uint32_t i = 0; i < desc->n_ops; i++) {
    uint64_t need = cpu_quant_scratch_bytes(dev, &ops[i].op) + cpu_gemm_scratch_bytes(&ops[i].op);
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
  atomic_fetch_add(&dev->live_programs, 1);
  *out = p;
  return HM_ABI_OK;
}

void cpu_program_free(hm_abi_program *p) {
  if (!p) return;
  atomic_fetch_sub(&p->device->live_programs, 1);
  free(p->ops);
  free(p->scratch);
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
      default: cpu_kernel_optimizer(&ex, op); break;
    }
  }
  cpu_fp_leave(fp);
  return HM_ABI_OK;
}
