/* Names of the ABI's enumerations. */
#include <stdio.h>
#include <string.h>

#include "harmonics/names.h"
#include "harmonics/training.h"

const char *hm_op_name(uint32_t op) {
  switch (op) {
    case HM_ABI_OP_GEMM: return "gemm";
    case HM_ABI_OP_BIAS_ADD: return "bias_add";
    case HM_ABI_OP_ACT_FORWARD: return "act_forward";
    case HM_ABI_OP_ACT_BACKWARD: return "act_backward";
    case HM_ABI_OP_LOSS: return "loss";
    case HM_ABI_OP_REDUCE_ROWS: return "reduce_rows";
    case HM_ABI_OP_REDUCE_COLS: return "reduce_cols";
    case HM_ABI_OP_SUM_SQUARES: return "sum_squares";
    case HM_ABI_OP_CLIP: return "clip";
    case HM_ABI_OP_SCALE: return "scale";
    case HM_ABI_OP_AXPY: return "axpy";
    case HM_ABI_OP_GATHER_ROWS: return "gather_rows";
    case HM_ABI_OP_FILL: return "fill";
    case HM_ABI_OP_COPY: return "copy";
    case HM_ABI_OP_SGD: return "sgd";
    case HM_ABI_OP_ADAM: return "adam";
    case HM_ABI_OP_RMSPROP: return "rmsprop";
    case HM_ABI_OP_ADAMW: return "adamw";
    case HM_ABI_OP_LAMB: return "lamb";
    case HM_ABI_OP_QUANTIZE: return "quantize";
    case HM_ABI_OP_DEQUANTIZE: return "dequantize";
    case HM_ABI_OP_GEMM_Q8: return "int8_matmul";
    case HM_ABI_OP_GEMM_Q4: return "int4_matmul";
    case HM_ABI_OP_GEMM_Q3: return "int3_matmul";
    case HM_ABI_OP_CONV2D: return "conv2d";
    case HM_ABI_OP_CONV2D_BWD_DATA: return "conv2d_backward_data";
    case HM_ABI_OP_CONV2D_BWD_FILTER: return "conv2d_backward_filter";
    case HM_ABI_OP_POOL2D: return "pool2d";
    case HM_ABI_OP_POOL2D_BWD: return "pool2d_backward";
    case HM_ABI_OP_DROPOUT: return "dropout";
    case HM_ABI_OP_BATCH_NORM: return "batch_norm";
    case HM_ABI_OP_BATCH_NORM_BWD: return "batch_norm_backward";
    case HM_ABI_OP_LAYER_NORM: return "layer_norm";
    case HM_ABI_OP_LAYER_NORM_BWD: return "layer_norm_backward";
    case HM_ABI_OP_IM2COL: return "im2col";
    default: return "?";
  }
}

const char *hm_dtype_name(uint32_t d) {
  switch (d) {
    case HM_ABI_DTYPE_NONE: return "none";
    case HM_ABI_DTYPE_F32: return "f32";
    case HM_ABI_DTYPE_F16: return "f16";
    case HM_ABI_DTYPE_BF16: return "bf16";
    case HM_ABI_DTYPE_F64: return "f64";
    case HM_ABI_DTYPE_I32: return "i32";
    case HM_ABI_DTYPE_I8: return "i8";
    case HM_ABI_DTYPE_U8: return "u8";
    case HM_ABI_DTYPE_Q8: return "q8";
    case HM_ABI_DTYPE_Q4: return "q4";
    case HM_ABI_DTYPE_Q3: return "q3";
    case HM_ABI_DTYPE_TF32: return "tf32";
    case HM_ABI_DTYPE_I64: return "i64";
    default: return "?";
  }
}

#define NAME_AT_VALUE(name, value, text, meaning) [value] = text,
static const char *const activation_names[HM_ABI_ACT_COUNT] = {HM_ABI_ACTIVATIONS(NAME_AT_VALUE)};
static const char *const loss_names[HM_ABI_LOSS_COUNT] = {HM_ABI_LOSSES(NAME_AT_VALUE)};
#define OPTIMIZER_NAME(name, value, text) [value] = text,
static const char *const optimizer_names[HM_OPTIMIZER_COUNT] = {HM_OPTIMIZERS(OPTIMIZER_NAME)};
#define STOP_NAME(name, value, text) [value] = text,
static const char *const stop_names[HM_STOP_COUNT] = {HM_STOP_REASONS(STOP_NAME)};

const char *hm_activation_name(uint32_t a) { return a < HM_ABI_ACT_COUNT ? activation_names[a] : "?"; }
const char *hm_loss_name(uint32_t l) { return l < HM_ABI_LOSS_COUNT ? loss_names[l] : "?"; }

const char *hm_numerics_name(uint32_t n) {
  switch (n) {
    case HM_ABI_NUMERICS_EXACT: return "exact";
    case HM_ABI_NUMERICS_F32: return "f32";
    case HM_ABI_NUMERICS_TF32: return "tf32";
    case HM_ABI_NUMERICS_F16: return "f16";
    case HM_ABI_NUMERICS_BF16: return "bf16";
    default: return "?";
  }
}

const char *hm_device_kind_name(uint32_t k) {
  switch (k) {
    case HM_ABI_DEVICE_CPU: return "cpu";
    case HM_ABI_DEVICE_GPU: return "gpu";
    case HM_ABI_DEVICE_ACCELERATOR: return "accelerator";
    default: return "?";
  }
}

int hm_activation_from_name(const char *name, uint32_t *out) {
  if (!name) return -1;
  if (strcmp(name, "id") == 0) {
    *out = HM_ABI_ACT_IDENTITY;
    return 0;
  }
  for (uint32_t i = 0; i < HM_ABI_ACT_COUNT; i++)
    if (strcmp(name, activation_names[i]) == 0) {
      *out = i;
      return 0;
    }
  return -1;
}

const char *hm_optimizer_name(uint32_t o) { return o < HM_OPTIMIZER_COUNT ? optimizer_names[o] : "?"; }
const char *hm_stop_reason_name(uint32_t r) { return r < HM_STOP_COUNT ? stop_names[r] : "?"; }

int hm_optimizer_from_name(const char *name, uint32_t *out) {
  if (!name) return -1;
  for (uint32_t i = 0; i < HM_OPTIMIZER_COUNT; i++)
    if (strcmp(name, optimizer_names[i]) == 0) {
      *out = i;
      return 0;
    }
  return -1;
}

/* |names| joined by |sep| into |buf|, truncated to |cap|. */
static void join(const char *const *names, uint32_t count, char *buf, size_t cap, const char *sep) {
  size_t used = 0;
  if (cap) buf[0] = '\0';
  for (uint32_t i = 0; i < count && used < cap; i++) {
    int n = snprintf(buf + used, cap - used, "%s%s", i ? sep : "", names[i]);
    if (n < 0) break;
    used += (size_t)n;
  }
}

void hm_optimizer_names(char *buf, size_t cap, const char *sep) { join(optimizer_names, HM_OPTIMIZER_COUNT, buf, cap, sep); }
void hm_activation_names(char *buf, size_t cap, const char *sep) { join(activation_names, HM_ABI_ACT_COUNT, buf, cap, sep); }
void hm_loss_names(char *buf, size_t cap, const char *sep) { join(loss_names, HM_ABI_LOSS_COUNT, buf, cap, sep); }

int hm_loss_from_name(const char *name, uint32_t *out) {
  if (!name) return -1;
  for (uint32_t i = 0; i < HM_ABI_LOSS_COUNT; i++)
    if (strcmp(name, loss_names[i]) == 0) {
      *out = i;
      return 0;
    }
  return -1;
}
