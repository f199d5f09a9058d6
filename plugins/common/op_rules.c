/* Op rules shared by Harmonics' own plugins (op_rules.h). */
#include "op_rules.h"

#include <stdio.h>
#include <string.h>

uint64_t hm_q_block_bytes(int dtype) {
  return dtype == HM_ABI_DTYPE_Q8   ? HM_ABI_Q8_BLOCK_BYTES
         : dtype == HM_ABI_DTYPE_Q4 ? HM_ABI_Q4_BLOCK_BYTES
         : dtype == HM_ABI_DTYPE_Q3 ? HM_ABI_Q3_BLOCK_BYTES
                                    : 0;
}

uint32_t hm_dtype_or_f32(uint32_t d) { return d ? d : HM_ABI_DTYPE_F32; }

static size_t dtype_size(uint32_t d) {
  switch (d) {
    case HM_ABI_DTYPE_F32:
    case HM_ABI_DTYPE_I32: return 4;
    case HM_ABI_DTYPE_U8:
    case HM_ABI_DTYPE_I8: return 1;
    case HM_ABI_DTYPE_F16:
    case HM_ABI_DTYPE_BF16: return 2;
    default: return 0;
  }
}

/* bytes = a*b*c*es, or UINT64_MAX on overflow. */
uint64_t hm_extent(uint64_t a, uint64_t b, uint64_t c, uint64_t es) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r) || __builtin_mul_overflow(r, c, &r) ||
      __builtin_mul_overflow(r, es, &r))
    return UINT64_MAX;
  return r;
}

/* Fills the operand requirements of |op|. Returns nonzero for an unknown op. */
int hm_op_requirements(const hm_abi_op *op, hm_operand_req in[4], hm_operand_req out[4]) {
  memset(in, 0, sizeof(hm_operand_req) * 4);
  memset(out, 0, sizeof(hm_operand_req) * 4);
  uint64_t d0 = op->dims[0], d1 = op->dims[1], d2 = op->dims[2];
  uint32_t din = hm_dtype_or_f32(op->dtype_in), dout = hm_dtype_or_f32(op->dtype_out);
  switch (op->code) {
    case HM_ABI_OP_GEMM:
      in[0] = (hm_operand_req){1, hm_extent(d0, d2, 1, 4)};
      in[1] = (hm_operand_req){1, hm_extent(d2, d1, 1, 4)};
      out[0] = (hm_operand_req){1, hm_extent(d0, d1, 1, 4)};
      return 0;
    case HM_ABI_OP_BIAS_ADD:
      in[0] = (hm_operand_req){1, hm_extent(d1, 1, 1, 4)};
      out[0] = (hm_operand_req){1, hm_extent(d0, d1, 1, 4)};
      return 0;
    case HM_ABI_OP_ACT_FORWARD:
      in[0] = (hm_operand_req){1, hm_extent(d0, d1, 1, 4)};
      out[0] = (hm_operand_req){1, hm_extent(d0, d1, 1, 4)};
      return 0;
    case HM_ABI_OP_ACT_BACKWARD: {
      int uses_y = op->variant == HM_ABI_ACT_SOFTMAX || op->variant == HM_ABI_ACT_SIGMOID ||
                   op->variant == HM_ABI_ACT_TANH;
      int uses_x = !uses_y && op->variant != HM_ABI_ACT_IDENTITY;
      in[0] = (hm_operand_req){uses_x, hm_extent(d0, d1, 1, 4)};
      in[1] = (hm_operand_req){uses_y, hm_extent(d0, d1, 1, 4)};
      in[2] = (hm_operand_req){1, hm_extent(d0, d1, 1, 4)};
      out[0] = (hm_operand_req){1, hm_extent(d0, d1, 1, 4)};
      return 0;
    }
    case HM_ABI_OP_LOSS: {
      int ci = (op->flags & HM_ABI_OP_FLAG_CLASS_INDEX) != 0;
      in[0] = (hm_operand_req){1, hm_extent(d0, d1, 1, 4)};
      in[1] = (hm_operand_req){1, ci ? hm_extent(d0, 1, 1, 4) : hm_extent(d0, d1, 1, 4)};
      out[0] = (hm_operand_req){0, 4};
      out[1] = (hm_operand_req){0, hm_extent(d0, d1, 1, 4)};
      return 0;
    }
    case HM_ABI_OP_REDUCE_ROWS:
      in[0] = (hm_operand_req){1, hm_extent(d0, d1, 1, 4)};
      out[0] = (hm_operand_req){1, hm_extent(d1, 1, 1, 4)};
      return 0;
    case HM_ABI_OP_REDUCE_COLS:
      in[0] = (hm_operand_req){1, hm_extent(d0, d1, 1, 4)};
      out[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      return 0;
    case HM_ABI_OP_SUM_SQUARES:
      in[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      out[0] = (hm_operand_req){1, 4};
      return 0;
    case HM_ABI_OP_CLIP:
      out[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      return 0;
    case HM_ABI_OP_SCALE:
      in[0] = (hm_operand_req){0, hm_extent(d0, 1, 1, 4)};
      out[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      return 0;
    case HM_ABI_OP_AXPY:
      in[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      out[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      return 0;
    case HM_ABI_OP_GATHER_ROWS:
      in[0] = (hm_operand_req){1, hm_extent(d2, d1, 1, dtype_size(din))};
      in[1] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      out[0] = (hm_operand_req){1, hm_extent(d0, d1, 1, dtype_size(dout))};
      return 0;
    case HM_ABI_OP_FILL:
      out[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, dtype_size(dout))};
      return 0;
    case HM_ABI_OP_COPY:
      in[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, dtype_size(din))};
      out[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, dtype_size(din))};
      return 0;
    case HM_ABI_OP_SGD: {
      int momentum = op->params[1] != 0.0f || op->dyn[1] != HM_ABI_DYN_NONE;
      in[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      out[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      out[1] = (hm_operand_req){momentum, hm_extent(d0, 1, 1, 4)};
      return 0;
    }
    case HM_ABI_OP_RMSPROP:
      in[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      out[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      out[1] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      return 0;
    case HM_ABI_OP_ADAM:
    case HM_ABI_OP_ADAMW:
    case HM_ABI_OP_LAMB:
      in[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      out[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      out[1] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      out[2] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      return 0;
    case HM_ABI_OP_QUANTIZE:
    case HM_ABI_OP_DEQUANTIZE: {
      uint32_t q = op->code == HM_ABI_OP_QUANTIZE ? dout : din;
      uint64_t row = hm_extent(d1 / 64 + (d1 % 64 != 0), hm_q_block_bytes((int)q), 1, 1);
      hm_operand_req f = {1, hm_extent(d0, d1, 1, 4)}, packed = {1, hm_extent(d0, row, 1, 1)};
      in[0] = op->code == HM_ABI_OP_QUANTIZE ? f : packed;
      out[0] = op->code == HM_ABI_OP_QUANTIZE ? packed : f;
      return 0;
    }
    case HM_ABI_OP_GEMM_Q8:
    case HM_ABI_OP_GEMM_Q4:
    case HM_ABI_OP_GEMM_Q3: {
      uint64_t row = hm_extent(d2 / 64 + (d2 % 64 != 0), hm_q_block_bytes((int)din), 1, 1);
      in[0] = (hm_operand_req){1, hm_extent(d0, row, 1, 1)};
      in[1] = (hm_operand_req){1, hm_extent(d1, row, 1, 1)};
      out[0] = (hm_operand_req){1, hm_extent(d0, d1, 1, 4)};
      return 0;
    }
    case HM_ABI_OP_CONV2D:
    case HM_ABI_OP_CONV2D_BWD_DATA:
    case HM_ABI_OP_CONV2D_BWD_FILTER:
    case HM_ABI_OP_POOL2D:
    case HM_ABI_OP_POOL2D_BWD:
    case HM_ABI_OP_IM2COL: {
      hm_abi_window g;
      if (hm_abi_window_decode(op, &g)) return 0; /* hm_check_op refuses the geometry; no extents */
      hm_operand_req x = {1, hm_extent(g.n, g.c_in, (uint64_t)g.h * g.w, 4)};
      hm_operand_req y = {1, hm_extent(g.n, g.c_out, (uint64_t)g.ho * g.wo, 4)};
      hm_operand_req w = {1, hm_extent(g.c_out, g.c_in / g.groups, (uint64_t)g.kh * g.kw, 4)};
      hm_operand_req b = {0, hm_extent(g.c_out, 1, 1, 4)};
      int max = op->variant == HM_ABI_POOL_MAX;
      switch (op->code) {
        case HM_ABI_OP_CONV2D: in[0] = x, in[1] = w, in[2] = b, out[0] = y; break;
        case HM_ABI_OP_CONV2D_BWD_DATA: in[0] = y, in[1] = w, out[0] = x; break;
        case HM_ABI_OP_CONV2D_BWD_FILTER: in[0] = x, in[1] = y, out[0] = w, out[1] = b; break;
        case HM_ABI_OP_IM2COL:
          in[0] = x;
          out[0] = (hm_operand_req){1, hm_extent(g.n, (uint64_t)g.ho * g.wo, hm_extent(g.c_in, g.kh, g.kw, 4), 1)};
          break;
        case HM_ABI_OP_POOL2D:
          in[0] = x, out[0] = y;
          if (max) out[1] = (hm_operand_req){0, y.bytes};
          break;
        default:
          in[0] = y, out[0] = x;
          if (max) in[1] = (hm_operand_req){1, y.bytes};
          break;
      }
      return 0;
    }
    case HM_ABI_OP_BATCH_NORM:
    case HM_ABI_OP_BATCH_NORM_BWD:
    case HM_ABI_OP_LAYER_NORM:
    case HM_ABI_OP_LAYER_NORM_BWD: {
      int bn = op->code <= HM_ABI_OP_BATCH_NORM_BWD, fwd = op->code == HM_ABI_OP_BATCH_NORM || op->code == HM_ABI_OP_LAYER_NORM;
      hm_operand_req x = {1, bn ? hm_extent(d0, d1, d2, 4) : hm_extent(d0, d1, 1, 4)}, pr = {1, hm_extent(d1, 1, 1, 4)};
      if (fwd) {
        in[0] = x, in[1] = pr, in[2] = pr, out[0] = x;
        /* batch norm's running statistics: read in evaluation, updated (if given) in training */
        if (bn) out[1] = (hm_operand_req){op->variant == HM_ABI_NORM_EVAL, hm_extent(d1, 2, 1, 4)};
      } else {
        in[0] = x, in[1] = x, in[2] = pr;
        out[0] = (hm_operand_req){0, x.bytes};
        out[1] = (hm_operand_req){0, pr.bytes};
        out[2] = (hm_operand_req){0, pr.bytes};
      }
      return 0;
    }
    case HM_ABI_OP_DROPOUT:
      in[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      out[0] = (hm_operand_req){1, hm_extent(d0, 1, 1, 4)};
      return 0;
    default: return 1;
  }
}

int hm_op_is_window(uint32_t code) {
  return code == HM_ABI_OP_CONV2D || code == HM_ABI_OP_CONV2D_BWD_DATA || code == HM_ABI_OP_CONV2D_BWD_FILTER ||
         code == HM_ABI_OP_POOL2D || code == HM_ABI_OP_POOL2D_BWD || code == HM_ABI_OP_IM2COL;
}


int hm_op_has_variant(uint32_t code) {
  return code == HM_ABI_OP_ACT_FORWARD || code == HM_ABI_OP_ACT_BACKWARD || code == HM_ABI_OP_LOSS ||
         code == HM_ABI_OP_POOL2D || code == HM_ABI_OP_POOL2D_BWD || code == HM_ABI_OP_BATCH_NORM;
}

static uint32_t variant_count(uint32_t code) {
  if (code == HM_ABI_OP_LOSS) return HM_ABI_LOSS_COUNT;
  if (code == HM_ABI_OP_POOL2D || code == HM_ABI_OP_POOL2D_BWD) return HM_ABI_POOL_COUNT;
  if (code == HM_ABI_OP_BATCH_NORM) return HM_ABI_NORM_COUNT;
  return HM_ABI_ACT_COUNT;
}

int hm_caps_declares(const hm_abi_capability *caps, uint32_t n, uint32_t op, uint32_t din, uint32_t dout,
                     int variant) {
  for (uint32_t i = 0; i < n; i++) {
    if (caps[i].op != op || caps[i].dtype_in != din || caps[i].dtype_out != dout) continue;
    if (variant >= 0 && caps[i].variants && (variant >= 64 || !(caps[i].variants & (1ull << variant)))) continue;
    return 1;
  }
  return 0;
}

static int overlaps(const hm_abi_operand *a, uint64_t abytes, const hm_abi_operand *b, uint64_t bbytes) {
  if (!a->buffer || a->buffer != b->buffer || !abytes || !bbytes) return 0;
  return a->offset < b->offset + bbytes && b->offset < a->offset + abytes;
}

static int32_t check_operand(const hm_abi_operand *o, const hm_operand_req *req, uint32_t index, const char *role,
                             int slot, hm_buffer_size_fn size_of, void *self, uint32_t align, char *msg, size_t cap) {
  if (!o->buffer) {
    if (req->required == 1) {
      snprintf(msg, cap, "op %u: operand %s[%d] is required", index, role, slot);
      return HM_ABI_STATUS_INVALID_ARGUMENT;
    }
    return HM_ABI_OK;
  }
  if (req->required == 0 && req->bytes == 0) return HM_ABI_OK; /* a slot the op does not use */
  uint64_t size = 0;
  if (size_of(self, o->buffer, &size)) {
    snprintf(msg, cap, "op %u: operand %s[%d] is not a buffer of this device", index, role, slot);
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  }
  if (req->bytes == UINT64_MAX || o->offset > size || req->bytes > size - o->offset) {
    snprintf(msg, cap, "op %u: operand %s[%d] needs %llu bytes at offset %llu but the buffer has %llu", index, role,
             slot, (unsigned long long)req->bytes, (unsigned long long)o->offset, (unsigned long long)size);
    return HM_ABI_STATUS_OUT_OF_RANGE;
  }
  if (align > 1 && o->offset % align) {
    snprintf(msg, cap, "op %u: operand %s[%d] offset %llu is not a multiple of %u bytes", index, role, slot,
             (unsigned long long)o->offset, align);
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  }
  return HM_ABI_OK;
}

int32_t hm_check_op(const hm_abi_op *op, uint32_t index, uint32_t n_scalars, const hm_abi_capability *caps,
                    uint32_t n_caps, hm_buffer_size_fn size_of, void *self, uint32_t align, char *msg, size_t cap) {
  hm_operand_req in[4], out[4];
  if (hm_op_requirements(op, in, out)) {
    snprintf(msg, cap, "op %u: op code %u is not supported", index, op->code);
    return HM_ABI_STATUS_UNIMPLEMENTED;
  }
  uint32_t din = hm_dtype_or_f32(op->dtype_in), dout = hm_dtype_or_f32(op->dtype_out);
  if (op->code == HM_ABI_OP_FILL) din = dout;
  if (op->code == HM_ABI_OP_COPY) dout = din;
  int variant = hm_op_has_variant(op->code) ? (int)op->variant : -1;
  if (variant >= 0 && (uint32_t)variant >= variant_count(op->code)) {
    snprintf(msg, cap, "op %u: variant %u out of range", index, op->variant);
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  }
  if (!hm_caps_declares(caps, n_caps, op->code, din, dout, variant)) {
    snprintf(msg, cap, "op %u: op %u with dtype_in %u dtype_out %u variant %u is not declared", index, op->code, din,
             dout, op->variant);
    return HM_ABI_STATUS_UNIMPLEMENTED;
  }
  hm_abi_window geometry;
  if (hm_op_is_window(op->code) && (hm_abi_window_decode(op, &geometry) ||
                                     (op->code == HM_ABI_OP_IM2COL && geometry.groups != 1))) {
    snprintf(msg, cap, "op %u: invalid window geometry (SPEC.md 7.5)", index);
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  }
  int norm = op->code >= HM_ABI_OP_BATCH_NORM && op->code <= HM_ABI_OP_LAYER_NORM_BWD;
  if (norm && (op->dims[0] == 0 || op->dims[1] == 0 || (op->code <= HM_ABI_OP_BATCH_NORM_BWD && op->dims[2] == 0) ||
               op->dims[0] > UINT32_MAX || op->dims[1] > UINT32_MAX || op->dims[2] > UINT32_MAX)) {
    snprintf(msg, cap, "op %u: normalization needs sizes of 1 to 2^32-1", index);
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  }
  int eps_at = op->code == HM_ABI_OP_BATCH_NORM || op->code == HM_ABI_OP_LAYER_NORM ? 0 : 2;
  if (norm && !(op->params[eps_at] > 0.0f)) {
    snprintf(msg, cap, "op %u: normalization needs eps > 0", index);
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  }
  if (op->code == HM_ABI_OP_DROPOUT && (!(op->params[0] >= 0.0f && op->params[0] < 1.0f) || op->dims[0] > UINT32_MAX)) {
    snprintf(msg, cap, "op %u: dropout needs 0 <= rate < 1 and at most 2^32 elements", index);
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  }
  for (int i = 0; i < HM_ABI_MAX_DYN; i++)
    if (op->dyn[i] != HM_ABI_DYN_NONE && (op->dyn[i] < 0 || (uint32_t)op->dyn[i] >= n_scalars)) {
      snprintf(msg, cap, "op %u: dynamic slot dyn[%d]=%d outside the %u program scalars", index, i, op->dyn[i],
               n_scalars);
      return HM_ABI_STATUS_OUT_OF_RANGE;
    }
  for (int i = 0; i < HM_ABI_MAX_OPERANDS; i++) {
    int32_t st = check_operand(&op->in[i], &in[i], index, "in", i, size_of, self, align, msg, cap);
    if (st) return st;
    st = check_operand(&op->out[i], &out[i], index, "out", i, size_of, self, align, msg, cap);
    if (st) return st;
  }
  if (op->code == HM_ABI_OP_LOSS && !op->out[0].buffer && !op->out[1].buffer) {
    snprintf(msg, cap, "op %u: loss writes neither loss nor gradient", index);
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  }
  int matmul = op->code == HM_ABI_OP_GEMM || op->code == HM_ABI_OP_QUANTIZE || op->code == HM_ABI_OP_DEQUANTIZE ||
               op->code == HM_ABI_OP_GEMM_Q8 || op->code == HM_ABI_OP_GEMM_Q4 || op->code == HM_ABI_OP_GEMM_Q3 ||
               hm_op_is_window(op->code) || norm;
  if (matmul && (overlaps(&op->out[0], out[0].bytes, &op->in[0], in[0].bytes) ||
                 overlaps(&op->out[0], out[0].bytes, &op->in[1], in[1].bytes))) {
    snprintf(msg, cap, "op %u: output overlaps an input", index);
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  }
  if (op->code == HM_ABI_OP_GATHER_ROWS && din == HM_ABI_DTYPE_I32 && dout != HM_ABI_DTYPE_I32) {
    snprintf(msg, cap, "op %u: gather of I32 must write I32", index);
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  }
  return HM_ABI_OK;
}

int32_t hm_check_program_desc(const hm_abi_program_desc *desc, uint32_t max_ops, size_t *stride, char *msg, size_t cap) {
  if (desc->struct_size < sizeof(hm_abi_program_desc)) {
    snprintf(msg, cap, "program descriptor struct_size %u too small", desc->struct_size);
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  }
  if (desc->n_ops && !desc->ops) {
    snprintf(msg, cap, "%u ops but no op array", desc->n_ops);
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  }
  if (desc->n_ops > max_ops) {
    snprintf(msg, cap, "too many ops (%u; at most %u)", desc->n_ops, max_ops);
    return HM_ABI_STATUS_OUT_OF_RANGE;
  }
  *stride = desc->n_ops ? desc->ops[0].struct_size : sizeof(hm_abi_op);
  if (*stride < sizeof(hm_abi_op)) {
    snprintf(msg, cap, "op struct_size %zu is smaller than %zu", *stride, sizeof(hm_abi_op));
    return HM_ABI_STATUS_INVALID_ARGUMENT;
  }
  for (uint32_t i = 1; i < desc->n_ops; i++) {
    const hm_abi_op *op = hm_program_op(desc, *stride, i);
    if (op->struct_size != *stride) {
      snprintf(msg, cap, "op %u: struct_size %u differs from op 0's %zu", i, op->struct_size, *stride);
      return HM_ABI_STATUS_INVALID_ARGUMENT;
    }
  }
  return HM_ABI_OK;
}
