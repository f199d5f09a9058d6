/*
 * Running one op on the plugin under test and on the scalar reference with
 * the same inputs. Every operand lives in its own buffer between guard
 * regions of a known pattern; afterwards the guards and every input must be
 * unchanged (HM-PLUGIN-9).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conform.h"
#include "hm_reference.h"

#define PATTERN 0xA5

int conform_declares(const conform_ctx *c, uint32_t op, uint32_t din, uint32_t dout, int variant) {
  for (uint32_t i = 0; i < c->desc.n_caps; i++) {
    const hm_abi_capability *k = &c->desc.caps[i];
    if (k->op != op || k->dtype_in != din || k->dtype_out != dout) continue;
    if (variant >= 0 && k->variants && (variant >= 64 || !(k->variants & (1ull << variant)))) continue;
    return 1;
  }
  return 0;
}

int conform_numerics(const conform_ctx *c, uint32_t op, uint32_t din, uint32_t dout) {
  for (uint32_t i = 0; i < c->desc.n_caps; i++) {
    const hm_abi_capability *k = &c->desc.caps[i];
    if (k->op == op && k->dtype_in == din && k->dtype_out == dout) return (int)k->numerics;
  }
  return -1;
}

double conform_tolerance(int numerics) {
  switch (numerics) {
    case HM_ABI_NUMERICS_EXACT: return 0.0;
    case HM_ABI_NUMERICS_F32: return 1e-9;
    case HM_ABI_NUMERICS_TF32:
    case HM_ABI_NUMERICS_F16: return 1e-5;
    case HM_ABI_NUMERICS_BF16: return 1e-4;
    default: return 0.0;
  }
}

double conform_nmse(const float *ref, const float *got, size_t n) {
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

void conform_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; i++) {
    z += 0x9e3779b97f4a7c15ull;
    uint64_t v = z;
    v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ull;
    v = (v ^ (v >> 27)) * 0x94d049bb133111ebull;
    v ^= v >> 31;
    x[i] = lo + (hi - lo) * (float)((v >> 40) * (1.0 / 16777216.0));
  }
}

void conform_free_outputs(void *out[4]) {
  for (int i = 0; i < 4; i++) {
    free(out[i]);
    out[i] = NULL;
  }
}

typedef struct ref_ctx {
  const hm_abi_op *op;
  void *in[4], *out[4];
} ref_ctx;

static void *resolve(void *ctx, const hm_abi_operand *o) {
  ref_ctx *h = ctx;
  for (int i = 0; i < 4; i++) {
    if (o == &h->op->in[i]) return h->in[i];
    if (o == &h->op->out[i]) return h->out[i];
  }
  return NULL;
}

static const char *status_text(int32_t s) { return s >= 0 && s <= 10 ? hm_status_name((hm_status)s) : "UNKNOWN"; }

int conform_run_op(conform_ctx *c, const conform_op_case *k, void *dev_out[4], void *ref_out[4], conform_result *r) {
  const hm_abi_plugin *t = c->t;
  hm_abi_op op = k->op;
  hm_abi_buffer *bufs[2][4] = {{0}};
  unsigned char *staging = NULL;
  int failed = 0;
  for (int i = 0; i < 4; i++) dev_out[i] = ref_out[i] = NULL;
  for (int side = 0; side < 2 && !failed; side++)
    for (int i = 0; i < 4 && !failed; i++) {
      const conform_operand *o = side ? &k->out[i] : &k->in[i];
      if (!o->data) continue;
      size_t total = o->bytes + 2 * CONFORM_GUARD;
      unsigned char *img = malloc(total);
      memset(img, PATTERN, total);
      memcpy(img + CONFORM_GUARD, o->data, o->bytes);
      int32_t st = t->buffer_alloc(c->dev, total, &bufs[side][i]);
      if (st == HM_ABI_OK) st = t->buffer_write(bufs[side][i], 0, img, total);
      free(img);
      if (st != HM_ABI_OK) {
        conform_fail(r, "buffer_alloc/write of %zu bytes: %s: %s", total, status_text(st), hm_plugin_last_message());
        failed = 1;
        break;
      }
      hm_abi_operand *dst = side ? &op.out[i] : &op.in[i];
      dst->buffer = bufs[side][i];
      dst->offset = CONFORM_GUARD;
    }
  hm_abi_program_desc d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.abi_version = HM_ABI_VERSION;
  d.ops = &op;
  d.n_ops = 1;
  d.n_scalars = k->n_scalars;
  hm_abi_program *p = NULL;
  if (!failed) {
    int32_t st = t->program_create(c->dev, &d, &p);
    if (st != HM_ABI_OK) {
      conform_fail(r, "program_create: %s: %s", status_text(st), hm_plugin_last_message());
      failed = 1;
    }
  }
  if (!failed) {
    int32_t st = t->program_run(p, k->scalars, k->n_scalars);
    if (st == HM_ABI_OK && t->device_synchronize) st = t->device_synchronize(c->dev);
    if (st != HM_ABI_OK) {
      conform_fail(r, "program_run: %s: %s", status_text(st), hm_plugin_last_message());
      failed = 1;
    }
  }
  /* Read every buffer back whole: guards and inputs must be intact. */
  for (int side = 0; side < 2 && !failed; side++)
    for (int i = 0; i < 4 && !failed; i++) {
      const conform_operand *o = side ? &k->out[i] : &k->in[i];
      if (!o->data) continue;
      size_t total = o->bytes + 2 * CONFORM_GUARD;
      staging = realloc(staging, total);
      if (t->buffer_read(bufs[side][i], 0, staging, total) != HM_ABI_OK) {
        conform_fail(r, "buffer_read: %s", hm_plugin_last_message());
        failed = 1;
        break;
      }
      for (size_t b = 0; b < total && !failed; b++) {
        if (b >= CONFORM_GUARD && b < CONFORM_GUARD + o->bytes) continue;
        if (staging[b] != PATTERN) {
          long off = b < CONFORM_GUARD ? (long)b - CONFORM_GUARD : (long)(b - CONFORM_GUARD - o->bytes);
          conform_fail(r, "%s %s[%d] was written %s its extent (byte %+ld)", side ? "output" : "input",
                       side ? "out" : "in", i, off < 0 ? "before" : "past", off < 0 ? off : off + 1);
          failed = 1;
        }
      }
      if (!failed && !side) {
        /* An input may be an output's alias only where SPEC.md allows; here
         * every operand has its own buffer, so inputs must not change. */
        if (memcmp(staging + CONFORM_GUARD, o->data, o->bytes) != 0) {
          conform_fail(r, "input in[%d] was modified", i);
          failed = 1;
        }
      }
      if (!failed && side) {
        dev_out[i] = malloc(o->bytes ? o->bytes : 1);
        memcpy(dev_out[i], staging + CONFORM_GUARD, o->bytes);
      }
    }
  free(staging);
  if (p) t->program_free(p);
  for (int side = 0; side < 2; side++)
    for (int i = 0; i < 4; i++)
      if (bufs[side][i]) t->buffer_free(bufs[side][i]);
  if (failed) {
    conform_free_outputs(dev_out);
    return 1;
  }
  ref_ctx h;
  memset(&h, 0, sizeof h);
  h.op = &op;
  for (int i = 0; i < 4; i++) {
    if (k->in[i].data) {
      h.in[i] = malloc(k->in[i].bytes ? k->in[i].bytes : 1);
      memcpy(h.in[i], k->in[i].data, k->in[i].bytes);
    }
    if (k->out[i].data) {
      ref_out[i] = malloc(k->out[i].bytes ? k->out[i].bytes : 1);
      memcpy(ref_out[i], k->out[i].data, k->out[i].bytes);
      h.out[i] = ref_out[i];
    }
  }
  int32_t rs = hm_ref_execute(&op, resolve, &h, k->scalars, k->n_scalars);
  for (int i = 0; i < 4; i++) free(h.in[i]);
  if (rs != HM_ABI_OK) {
    conform_fail(r, "the reference cannot run this op (%s)", status_text(rs));
    conform_free_outputs(dev_out);
    conform_free_outputs(ref_out);
    return 1;
  }
  return 0;
}
