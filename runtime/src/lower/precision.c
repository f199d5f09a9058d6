/*
 * Precision plans from policies and declared capabilities (precision.h).
 */
#include "lower/precision.h"

#include <stdio.h>
#include <string.h>

#include "base/base.h"

int hm__precision_is_packed(uint32_t d) {
  return d == HM_ABI_DTYPE_Q8 || d == HM_ABI_DTYPE_Q4 || d == HM_ABI_DTYPE_Q3;
}

const char *hm__precision_name(uint32_t d) {
  switch (d) {
    case HM_ABI_DTYPE_Q8: return "int8";
    case HM_ABI_DTYPE_Q4: return "int4";
    case HM_ABI_DTYPE_Q3: return "int3";
    case HM_ABI_DTYPE_BF16: return "bf16";
    case HM_ABI_DTYPE_F16: return "f16";
    default: return "f32";
  }
}

const char *hm__precision_kernel(uint32_t d) {
  switch (d) {
    case HM_ABI_DTYPE_Q8: return "int8_matmul";
    case HM_ABI_DTYPE_Q4: return "int4_matmul";
    case HM_ABI_DTYPE_Q3: return "int3_matmul";
    case HM_ABI_DTYPE_BF16: return "gemm_bf16";
    case HM_ABI_DTYPE_F16: return "gemm_f16";
    default: return "gemm";
  }
}

static uint32_t dtype_of_bits(int bits) {
  return bits == 8 ? HM_ABI_DTYPE_Q8 : bits == 4 ? HM_ABI_DTYPE_Q4 : bits == 3 ? HM_ABI_DTYPE_Q3 : HM_ABI_DTYPE_F32;
}

uint32_t hm__precision_gemm_op(uint32_t d) {
  return d == HM_ABI_DTYPE_Q8 ? HM_ABI_OP_GEMM_Q8 : d == HM_ABI_DTYPE_Q4 ? HM_ABI_OP_GEMM_Q4 : HM_ABI_OP_GEMM_Q3;
}

size_t hm__matrix_bytes(uint32_t d, size_t rows, size_t k) {
  return hm__precision_is_packed(d) ? hm__packed_bytes(d, rows, k) : rows * k * 4;
}

size_t hm_policy_matrix_bytes(int bits, size_t outputs, size_t inputs) {
  if (bits != 32 && bits != 8 && bits != 4 && bits != 3) return 0;
  return hm__matrix_bytes(dtype_of_bits(bits), outputs, inputs);
}

size_t hm__packed_bytes(uint32_t d, size_t rows, size_t k) {
  size_t bb = d == HM_ABI_DTYPE_Q8 ? HM_ABI_Q8_BLOCK_BYTES : d == HM_ABI_DTYPE_Q4 ? HM_ABI_Q4_BLOCK_BYTES : HM_ABI_Q3_BLOCK_BYTES;
  return rows * ((k + HM_ABI_QUANT_BLOCK_VALUES - 1) / HM_ABI_QUANT_BLOCK_VALUES) * bb;
}

size_t hm__packed_stride(uint32_t d, size_t rows, size_t k) { return (hm__packed_bytes(d, rows, k) + 3) / 4 * 4; }

int hm__policy_same(const hm_policy *a, const hm_policy *b) {
  return a->kind == b->kind && (a->kind != HM_POLICY_MAX_BITS || a->bits == b->bits) &&
         (a->kind != HM_POLICY_CONNECTION_BITS ||
          (a->n_connection_bits == b->n_connection_bits && a->n_connection_bits <= HM_POLICY_MAX_CONNECTIONS &&
           memcmp(a->connection_bits, b->connection_bits, a->n_connection_bits * sizeof a->connection_bits[0]) == 0));
}

hm_status hm__policy_check(const hm_policy *p) {
  if (!p) return HM_OK;
  switch (p->kind) {
    case HM_POLICY_HARDWARE:
    case HM_POLICY_AUTO: return HM_OK;
    case HM_POLICY_MAX_BITS:
      if (p->bits != 8 && p->bits != 4 && p->bits != 3)
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "policy bits:%d: the packed widths are 8, 4 and 3 bits", p->bits);
      return HM_OK;
    case HM_POLICY_CONNECTION_BITS:
      if (p->n_connection_bits == 0 || p->n_connection_bits > HM_POLICY_MAX_CONNECTIONS)
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "connection-bits policy: %zu bit widths; give 1 to %d",
                        p->n_connection_bits, HM_POLICY_MAX_CONNECTIONS);
      for (size_t i = 0; i < p->n_connection_bits; i++) {
        int b = p->connection_bits[i];
        if (b != 32 && b != 8 && b != 4 && b != 3)
          return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                          "connection-bits policy: entry %zu is %d bits; use 32 (f32), 8, 4 or 3", i + 1, b);
      }
      return HM_OK;
  }
  return hm__fail(HM_STATUS_INVALID_ARGUMENT, "unknown policy kind %d", (int)p->kind);
}

/* The device runs packed width |d|: quantize, the matmul, for training the
 * dequantize the backward pass uses, and for a convolution IM2COL. */
static int runs_packed(const hm_device *dev, uint32_t d, int training, int conv, char *missing, size_t cap) {
  const char *what = NULL;
  if (conv && !hm_device_supports(dev, HM_ABI_OP_IM2COL, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, 0)) what = "IM2COL";
  else if (!hm_device_supports(dev, HM_ABI_OP_QUANTIZE, HM_ABI_DTYPE_F32, d, 0)) what = "QUANTIZE";
  else if (!hm_device_supports(dev, hm__precision_gemm_op(d), d, HM_ABI_DTYPE_F32, 0)) what = hm__precision_kernel(d);
  else if (training && !hm_device_supports(dev, HM_ABI_OP_DEQUANTIZE, d, HM_ABI_DTYPE_F32, 0)) what = "DEQUANTIZE";
  if (what) snprintf(missing, cap, "%s", what);
  return what == NULL;
}

/* The declared speed of GEMM at |din| (0 when not declared or unknown). */
static float gemm_speed(const hm_device *dev, uint32_t din) {
  const hm_abi_device_desc *d = hm_device_desc(dev);
  float best = 0.0f;
  int found = 0;
  for (uint32_t i = 0; i < d->n_caps; i++) {
    const hm_abi_capability *c = &d->caps[i];
    if (c->op != HM_ABI_OP_GEMM || c->dtype_in != din || c->dtype_out != HM_ABI_DTYPE_F32) continue;
    found = 1;
    if (c->speed_hint > best) best = c->speed_hint;
  }
  return found ? best : -1.0f;
}

static void plan_auto(hm_device *dev, hm_edge_precision *e) {
  float f32 = gemm_speed(dev, HM_ABI_DTYPE_F32);
  uint32_t pick = HM_ABI_DTYPE_F32;
  float best = f32;
  const uint32_t halves[2] = {HM_ABI_DTYPE_BF16, HM_ABI_DTYPE_F16};
  for (int i = 0; i < 2; i++) {
    float s = gemm_speed(dev, halves[i]);
    if (s > 0.0f && f32 > 0.0f && s > best) {
      best = s;
      pick = halves[i];
    }
  }
  e->dtype = pick;
  if (pick == HM_ABI_DTYPE_F32)
    snprintf(e->note, sizeof e->note, "auto: %s declares no 16-bit GEMM faster than f32", hm_device_backend(dev));
  else
    snprintf(e->note, sizeof e->note, "auto: %s declares %s GEMM at %.3g vs f32 %.3g", hm_device_backend(dev),
             hm__precision_name(pick), (double)best, (double)f32);
}

/* A connection-bits policy gives exactly one width per connection with
 * weights: a shorter list would leave connections to a guess, a longer one
 * would hide a model/policy mismatch. */
static hm_status check_connection_count(const hm_policy *p, const hm_graph *g) {
  size_t n = 0;
  for (size_t e = 0; e < g->n_edges; e++) n += hm__edge_is_matmul(g, &g->edges[e]) != 0;
  if (n == p->n_connection_bits) return HM_OK;
  char names[400] = "";
  size_t len = 0;
  for (size_t e = 0; e < g->n_edges && len < sizeof names; e++) {
    const hm_edge *ed = &g->edges[e];
    if (!hm__edge_is_matmul(g, ed)) continue;
    len += (size_t)snprintf(names + len, sizeof names - len, "%s%s->%s", len ? ", " : "", g->nodes[ed->src].name,
                            g->nodes[ed->dst].name);
  }
  char text[300];
  hm_policy_format(p, text, sizeof text);
  return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                  "policy %s gives %zu bit width%s but graph '%s' has %zu connection%s with weights (%s); give "
                  "one width per connection, in this order",
                  text, p->n_connection_bits, p->n_connection_bits == 1 ? "" : "s", g->name, n, n == 1 ? "" : "s",
                  names);
}

hm_status hm__precision_plan(const hm_policy *p, hm_device *dev, const hm_graph *g, int training, hm_edge_precision *out) {
  HM_RETURN_IF_ERROR(hm__policy_check(p));
  if (p && p->kind == HM_POLICY_CONNECTION_BITS) HM_RETURN_IF_ERROR(check_connection_count(p, g));
  size_t connection = 0;
  for (size_t e = 0; e < g->n_edges; e++) {
    hm_edge_precision *ep = &out[e];
    memset(ep, 0, sizeof *ep);
    ep->dtype = HM_ABI_DTYPE_F32;
    ep->matmul = hm__edge_is_matmul(g, &g->edges[e]);
    int conv = g->edges[e].spec.kind == HM_CONNECTION_CONV2D;
    if (ep->matmul && conv && p && p->kind == HM_POLICY_AUTO) {
      /* 16-bit GEMMs serve dense connections; a convolution is its own op, at f32. */
      snprintf(ep->note, sizeof ep->note, "auto: convolutions run f32");
      continue;
    }
    if (!ep->matmul || !p || p->kind == HM_POLICY_HARDWARE) continue;
    if (p->kind == HM_POLICY_AUTO) {
      plan_auto(dev, ep);
      continue;
    }
    int bits = p->kind == HM_POLICY_MAX_BITS ? p->bits : p->connection_bits[connection++];
    if (bits == 32) continue;
    if (conv && g->edges[e].spec.groups != 1)
      return hm__fail(HM_STATUS_UNIMPLEMENTED,
                      "connection %s -> %s is a grouped convolution (groups %u): packed widths serve convolutions with "
                      "one group only; give it 32 bits (a connection-bits policy) or use the hardware or auto policy",
                      g->nodes[g->edges[e].src].name, g->nodes[g->edges[e].dst].name, g->edges[e].spec.groups);
    /* The requested width, or the nearest wider one the device runs. */
    static const int widths[] = {3, 4, 8};
    char missing[64] = "", first_missing[64] = "";
    int chosen = 32;
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
      if (widths[w] < bits) continue;
      if (runs_packed(dev, dtype_of_bits(widths[w]), training, conv, missing, sizeof missing)) {
        chosen = widths[w];
        break;
      }
      if (!first_missing[0]) snprintf(first_missing, sizeof first_missing, "%s", missing);
    }
    ep->dtype = dtype_of_bits(chosen);
    if (chosen != bits)
      snprintf(ep->note, sizeof ep->note, "%s declares no %s for %d-bit; using %s", hm_device_backend(dev),
               first_missing, bits, hm__precision_name(ep->dtype));
  }
  return HM_OK;
}
