/* Helpers for kernel tests: one op on a device and on the reference. */
#include "test_op_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hm_test.h"

typedef struct host_ctx {
  void *in[HM_ABI_MAX_OPERANDS];
  void *out[HM_ABI_MAX_OPERANDS];
  hm_abi_op *op;
} host_ctx;

static void *resolve(void *ctx, const hm_abi_operand *o) {
  host_ctx *h = ctx;
  for (int i = 0; i < HM_ABI_MAX_OPERANDS; i++) {
    if (o == &h->op->in[i]) return h->in[i];
    if (o == &h->op->out[i]) return h->out[i];
  }
  return NULL;
}

void top_free_outputs(void *out[HM_ABI_MAX_OPERANDS]) {
  for (int i = 0; i < HM_ABI_MAX_OPERANDS; i++) {
    free(out[i]);
    out[i] = NULL;
  }
}

hm_status top_run(hm_device *dev, const top_case *c, void *dev_out[HM_ABI_MAX_OPERANDS],
                  void *ref_out[HM_ABI_MAX_OPERANDS]) {
  hm_abi_op op = c->op;
  hm_abi_buffer *bin[HM_ABI_MAX_OPERANDS] = {0}, *bout[HM_ABI_MAX_OPERANDS] = {0};
  hm_status st = HM_OK;
  for (int i = 0; i < HM_ABI_MAX_OPERANDS && st == HM_OK; i++) {
    dev_out[i] = ref_out[i] = NULL;
    if (c->in[i].data) {
      st = hm_device_buffer_alloc(dev, c->in[i].bytes, &bin[i]);
      if (st == HM_OK) st = hm_device_buffer_write(dev, bin[i], 0, c->in[i].data, c->in[i].bytes);
      op.in[i].buffer = bin[i];
      op.in[i].offset = 0;
    }
    if (c->out[i].data && st == HM_OK) {
      st = hm_device_buffer_alloc(dev, c->out[i].bytes, &bout[i]);
      if (st == HM_OK) st = hm_device_buffer_write(dev, bout[i], 0, c->out[i].data, c->out[i].bytes);
      op.out[i].buffer = bout[i];
      op.out[i].offset = 0;
    }
  }
  hm_abi_program *p = NULL;
  if (st == HM_OK) st = hm_device_program_create(dev, &op, 1, c->n_scalars, &p);
  if (st == HM_OK) st = hm_device_program_run(dev, p, c->scalars, c->n_scalars);
  for (int i = 0; i < HM_ABI_MAX_OPERANDS && st == HM_OK; i++) {
    if (!c->out[i].data) continue;
    dev_out[i] = malloc(c->out[i].bytes);
    st = hm_device_buffer_read(dev, bout[i], 0, dev_out[i], c->out[i].bytes);
  }
  hm_device_program_free(dev, p);
  for (int i = 0; i < HM_ABI_MAX_OPERANDS; i++) {
    hm_device_buffer_free(dev, bin[i]);
    hm_device_buffer_free(dev, bout[i]);
  }
  if (st != HM_OK) {
    top_free_outputs(dev_out);
    return st;
  }
  /* The reference works on host copies: inputs may be aliased by nothing. */
  host_ctx h;
  memset(&h, 0, sizeof h);
  h.op = &op;
  for (int i = 0; i < HM_ABI_MAX_OPERANDS; i++) {
    if (c->in[i].data) {
      h.in[i] = malloc(c->in[i].bytes);
      memcpy(h.in[i], c->in[i].data, c->in[i].bytes);
    }
    if (c->out[i].data) {
      ref_out[i] = malloc(c->out[i].bytes);
      memcpy(ref_out[i], c->out[i].data, c->out[i].bytes);
      h.out[i] = ref_out[i];
    }
  }
  int32_t rs = hm_ref_execute(&op, resolve, &h, c->scalars, c->n_scalars);
  for (int i = 0; i < HM_ABI_MAX_OPERANDS; i++) free(h.in[i]);
  if (rs != HM_ABI_OK) {
    top_free_outputs(dev_out);
    top_free_outputs(ref_out);
    return HM_STATUS_INTERNAL;
  }
  return HM_OK;
}

double top_nmse(const float *ref, const float *got, size_t n) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < n; i++) {
    if (isnan(ref[i]) || isnan(got[i])) {
      if (!(isnan(ref[i]) && isnan(got[i]))) return INFINITY;
      continue;
    }
    if (isinf(ref[i]) || isinf(got[i])) {
      if (ref[i] != got[i]) return INFINITY;
      continue;
    }
    double d = (double)ref[i] - got[i];
    num += d * d;
    den += (double)ref[i] * ref[i];
  }
  return den > 0 ? num / den : num;
}

hm_device *top_open_cpu(unsigned threads) {
  hm_device_options o = hm_device_options_default();
  o.threads = threads;
  hm_device *dev = NULL;
  if (hm_device_open("cpu", &o, &dev) != HM_OK) {
    fprintf(stderr, "cannot open cpu: %s\n", hm_last_error());
    return NULL;
  }
  return dev;
}

float *top_random(size_t n, float lo, float hi, unsigned long long seed) {
  float *x = malloc((n ? n : 1) * sizeof *x);
  for (size_t i = 0; i < n; i++) x[i] = hm_test_uniform(&seed, lo, hi);
  return x;
}
