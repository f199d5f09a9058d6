/*
 * Robustness tier: bad arguments (NULL, zero sizes, out-of-range offsets,
 * operands outside their buffers, size overflow, exhausted memory, unknown
 * ops and precisions, wrong scalar counts) return a status with a message and
 * leave outputs untouched (HM-PLUGIN-1, -6, -9); concurrent calls where the
 * threading contract allows them give correct results.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conform.h"

#define SENTINEL ((void *)(uintptr_t)0x5e5e5e5e)

/* Expects a failure with a reported message. */
static int expect_error(conform_result *r, int32_t st, const char *what) {
  if (r->status != CONFORM_PASS) return 1;
  if (st == HM_ABI_OK) {
    conform_fail(r, "%s returned OK", what);
    return 1;
  }
  if (!hm_plugin_last_message()[0]) {
    conform_fail(r, "%s failed (status %d) without reporting a message (HM-PLUGIN-6)", what, st);
    return 1;
  }
  hm_plugin_clear_last_message();
  return 0;
}

static void test_null_arguments(conform_ctx *c, const void *arg, conform_result *r) {
  (void)arg;
  const hm_abi_plugin *t = c->t;
  hm_abi_buffer *b = NULL;
  if (t->buffer_alloc(c->dev, 64, &b) != HM_ABI_OK) {
    conform_fail(r, "buffer_alloc(64): %s", hm_plugin_last_message());
    return;
  }
  char tmp[64] = {0};
  hm_plugin_clear_last_message();
  int32_t st;
  st = t->buffer_alloc(c->dev, 64, NULL);
  if (st == HM_ABI_OK) conform_fail(r, "buffer_alloc with a NULL output returned OK");
  st = t->buffer_write(NULL, 0, tmp, 4);
  if (st == HM_ABI_OK && r->status == CONFORM_PASS) conform_fail(r, "buffer_write(NULL buffer) returned OK");
  st = t->buffer_read(NULL, 0, tmp, 4);
  if (st == HM_ABI_OK && r->status == CONFORM_PASS) conform_fail(r, "buffer_read(NULL buffer) returned OK");
  st = t->buffer_write(b, 0, NULL, 4);
  if (st == HM_ABI_OK && r->status == CONFORM_PASS) conform_fail(r, "buffer_write(NULL source) returned OK");
  hm_abi_program *p = SENTINEL;
  st = t->program_create(c->dev, NULL, &p);
  if (r->status == CONFORM_PASS && (st == HM_ABI_OK || p != SENTINEL))
    conform_fail(r, "program_create(NULL description) returned OK or wrote its output");
  st = t->program_run(NULL, NULL, 0);
  if (st == HM_ABI_OK && r->status == CONFORM_PASS) conform_fail(r, "program_run(NULL) returned OK");
  st = t->device_describe(c->pctx, 0, NULL);
  if (st == HM_ABI_OK && r->status == CONFORM_PASS) conform_fail(r, "device_describe(NULL output) returned OK");
  t->buffer_free(NULL);  /* must be a no-op */
  t->program_free(NULL);
  t->buffer_free(b);
}

static void test_sizes_and_ranges(conform_ctx *c, const void *arg, conform_result *r) {
  (void)arg;
  const hm_abi_plugin *t = c->t;
  hm_abi_buffer *b = SENTINEL;
  hm_plugin_clear_last_message();
  if (expect_error(r, t->buffer_alloc(c->dev, 0, &b), "buffer_alloc(0)")) return;
  if (b != SENTINEL) conform_fail(r, "a failed buffer_alloc(0) wrote its output");
  if (r->status != CONFORM_PASS ||
      expect_error(r, t->buffer_alloc(c->dev, (uint64_t)1 << 62, &b), "buffer_alloc(2^62 bytes)"))
    return;
  if (b != SENTINEL) {
    conform_fail(r, "a failed buffer_alloc(2^62) wrote its output");
    return;
  }
  if (t->buffer_alloc(c->dev, 16, &b) != HM_ABI_OK) {
    conform_fail(r, "buffer_alloc(16): %s", hm_plugin_last_message());
    return;
  }
  char tmp[64] = {0};
  /* expect_error does nothing once a check has failed, so the first failure is kept. */
  expect_error(r, t->buffer_write(b, 8, tmp, 16), "buffer_write past the end");
  expect_error(r, t->buffer_read(b, 0, tmp, 17), "buffer_read past the end");
  expect_error(r, t->buffer_write(b, UINT64_MAX, tmp, 2), "buffer_write at offset 2^64-1");
  expect_error(r, t->buffer_read(b, 4, tmp, UINT64_MAX - 2), "buffer_read of 2^64-3 bytes");
  t->buffer_free(b);
}

static int32_t create(conform_ctx *c, const hm_abi_op *op, uint32_t n_scalars, hm_abi_program **out) {
  hm_abi_program_desc d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.abi_version = HM_ABI_VERSION;
  d.ops = op;
  d.n_ops = 1;
  d.n_scalars = n_scalars;
  return c->t->program_create(c->dev, &d, out);
}

static void test_bad_programs(conform_ctx *c, const void *arg, conform_result *r) {
  (void)arg;
  const hm_abi_plugin *t = c->t;
  hm_abi_buffer *big = NULL, *small = NULL;
  if (t->buffer_alloc(c->dev, 4096, &big) != HM_ABI_OK || t->buffer_alloc(c->dev, 16, &small) != HM_ABI_OK) {
    conform_fail(r, "buffer_alloc: %s", hm_plugin_last_message());
    if (big) t->buffer_free(big);
    return;
  }
  hm_plugin_clear_last_message();
  hm_abi_program *p = SENTINEL;
  /* Unknown op and an undeclared precision: UNIMPLEMENTED. */
  hm_abi_op op = hm_op_init(0x7777);
  int32_t st = create(c, &op, 0, &p);
  if (st != HM_ABI_STATUS_UNIMPLEMENTED && r->status == CONFORM_PASS)
    conform_fail(r, "program_create of op code 0x7777: status %d, expected UNIMPLEMENTED", st);
  hm_plugin_clear_last_message();
  op = hm_op_init(HM_ABI_OP_GEMM);
  op.dims[0] = op.dims[1] = op.dims[2] = 2;
  op.dtype_in = 0x7777; /* no such dtype */
  op.in[0] = (hm_abi_operand){big, 0};
  op.in[1] = (hm_abi_operand){big, 64};
  op.out[0] = (hm_abi_operand){big, 256};
  st = create(c, &op, 0, &p);
  if (r->status == CONFORM_PASS && st == HM_ABI_OK) conform_fail(r, "program_create accepted dtype 0x7777");
  hm_plugin_clear_last_message();
  /* The rest uses FILL when declared, else GEMM. */
  int fill = conform_declares(c, HM_ABI_OP_FILL, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, -1);
  int gemm = conform_declares(c, HM_ABI_OP_GEMM, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, -1);
  if (!fill && !gemm) {
    if (r->status == CONFORM_PASS) conform_not_supported(r, "needs FILL or GEMM at f32 for operand checks");
  } else if (r->status == CONFORM_PASS) {
    hm_abi_op base = hm_op_init(fill ? HM_ABI_OP_FILL : HM_ABI_OP_GEMM);
    if (fill) {
      base.dims[0] = 4;
      base.out[0] = (hm_abi_operand){small, 0};
    } else {
      base.dims[0] = base.dims[1] = base.dims[2] = 2;
      base.params[0] = 1;
      base.in[0] = (hm_abi_operand){big, 0};
      base.in[1] = (hm_abi_operand){big, 64};
      base.out[0] = (hm_abi_operand){small, 0};
    }
    op = base;
    op.out[0].offset = 8;
    if (!expect_error(r, create(c, &op, 0, &p), "an operand past the end of its buffer")) {
      op = base;
      op.dims[0] = UINT64_MAX / 2;
      expect_error(r, create(c, &op, 0, &p), "an operand whose size overflows");
    }
    if (r->status == CONFORM_PASS) {
      op = base;
      op.out[0].buffer = NULL;
      expect_error(r, create(c, &op, 0, &p), "a missing output operand");
    }
    if (r->status == CONFORM_PASS) {
      op = base;
      op.dyn[0] = 3;
      expect_error(r, create(c, &op, 2, &p), "a dynamic slot beyond n_scalars");
    }
    if (r->status == CONFORM_PASS) {
      op = base;
      op.struct_size = 16;
      expect_error(r, create(c, &op, 0, &p), "an op with struct_size 16");
    }
    if (r->status == CONFORM_PASS && p != SENTINEL) conform_fail(r, "a failed program_create wrote its output");
    if (r->status == CONFORM_PASS) {
      op = base;
      op.dyn[0] = 0;
      p = NULL;
      if (create(c, &op, 1, &p) != HM_ABI_OK) conform_fail(r, "a valid program failed: %s", hm_plugin_last_message());
      else {
        double s[2] = {1, 2};
        expect_error(r, t->program_run(p, s, 2), "program_run with 2 scalars for a 1-scalar program");
        if (r->status == CONFORM_PASS && t->program_run(p, s, 1) != HM_ABI_OK)
          conform_fail(r, "the valid program failed to run: %s", hm_plugin_last_message());
        t->program_free(p);
      }
    }
  }
  t->buffer_free(big);
  t->buffer_free(small);
}

/* Two devices used from two threads at once (SPEC.md §5 allows it). */
typedef struct worker {
  conform_ctx *c;
  hm_abi_device *dev;
  int ok;
  char err[256];
} worker;

static void *worker_main(void *arg) {
  worker *w = arg;
  const hm_abi_plugin *t = w->c->t;
  enum { n = 48 };
  float a[n * n], b[n * n], out[n * n];
  for (int i = 0; i < n * n; i++) a[i] = (float)(i % 7) - 3, b[i] = (float)(i % 5) - 2;
  hm_abi_buffer *ba = NULL, *bb = NULL, *bc = NULL;
  hm_abi_program *p = NULL;
  w->ok = 0;
  if (t->buffer_alloc(w->dev, sizeof a, &ba) || t->buffer_alloc(w->dev, sizeof b, &bb) ||
      t->buffer_alloc(w->dev, sizeof out, &bc) || t->buffer_write(ba, 0, a, sizeof a) ||
      t->buffer_write(bb, 0, b, sizeof b)) {
    snprintf(w->err, sizeof w->err, "buffers: %s", hm_plugin_last_message());
    goto done;
  }
  hm_abi_op op = hm_op_init(HM_ABI_OP_GEMM);
  op.dims[0] = op.dims[1] = op.dims[2] = n;
  op.params[0] = 1;
  op.in[0] = (hm_abi_operand){ba, 0};
  op.in[1] = (hm_abi_operand){bb, 0};
  op.out[0] = (hm_abi_operand){bc, 0};
  hm_abi_program_desc d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.abi_version = HM_ABI_VERSION;
  d.ops = &op;
  d.n_ops = 1;
  if (t->program_create(w->dev, &d, &p) != HM_ABI_OK) {
    snprintf(w->err, sizeof w->err, "program_create: %s", hm_plugin_last_message());
    goto done;
  }
  for (int it = 0; it < 50; it++) {
    if (t->program_run(p, NULL, 0) != HM_ABI_OK || t->buffer_read(bc, 0, out, sizeof out) != HM_ABI_OK) {
      snprintf(w->err, sizeof w->err, "run %d: %s", it, hm_plugin_last_message());
      goto done;
    }
    /* Small integers: the product is exact in f32. */
    for (int i = 0; i < n; i += 7)
      for (int j = 0; j < n; j += 5) {
        float ref = 0;
        for (int k = 0; k < n; k++) ref += a[i * n + k] * b[k * n + j];
        if (out[i * n + j] != ref) {
          snprintf(w->err, sizeof w->err, "run %d: C[%d][%d] = %g, expected %g", it, i, j, (double)out[i * n + j], (double)ref);
          goto done;
        }
      }
  }
  w->ok = 1;
done:
  if (p) t->program_free(p);
  if (ba) t->buffer_free(ba);
  if (bb) t->buffer_free(bb);
  if (bc) t->buffer_free(bc);
  return NULL;
}

static void test_concurrent_devices(conform_ctx *c, const void *arg, conform_result *r) {
  (void)arg;
  if (!conform_declares(c, HM_ABI_OP_GEMM, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, -1)) {
    conform_not_supported(r, "needs GEMM at f32");
    return;
  }
  worker w[2];
  memset(w, 0, sizeof w);
  w[0].c = w[1].c = c;
  w[0].dev = c->dev;
  if (c->t->device_open(c->pctx, c->device_index, c->options, c->n_options, &w[1].dev) != HM_ABI_OK) {
    conform_fail(r, "a second device_open(%u) failed: %s", c->device_index, hm_plugin_last_message());
    return;
  }
  pthread_t th[2];
  for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, worker_main, &w[i]);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  c->t->device_close(w[1].dev);
  for (int i = 0; i < 2; i++)
    if (!w[i].ok && r->status == CONFORM_PASS) conform_fail(r, "thread %d: %s", i, w[i].err);
}

typedef struct describer {
  conform_ctx *c;
  int ok;
} describer;

static void *describe_main(void *arg) {
  describer *d = arg;
  d->ok = 1;
  for (int i = 0; i < 500 && d->ok; i++) {
    hm_abi_device_desc desc;
    memset(&desc, 0, sizeof desc);
    desc.struct_size = sizeof desc;
    if (d->c->t->device_describe(d->c->pctx, d->c->device_index, &desc) != HM_ABI_OK ||
        strcmp(desc.name, d->c->desc.name) != 0 || desc.n_caps != d->c->desc.n_caps)
      d->ok = 0;
  }
  return NULL;
}

static void test_concurrent_describe(conform_ctx *c, const void *arg, conform_result *r) {
  (void)arg;
  describer d[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    d[i].c = c;
    pthread_create(&th[i], NULL, describe_main, &d[i]);
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < 4; i++)
    if (!d[i].ok && r->status == CONFORM_PASS)
      conform_fail(r, "device_describe from 4 threads at once gave an error or an inconsistent descriptor");
}

void conform_add_robustness_tests(conform_suite *s) {
  conform_add(s, "robustness", test_null_arguments, NULL, 1, "robustness.null_arguments");
  conform_add(s, "robustness", test_sizes_and_ranges, NULL, 1, "robustness.sizes_and_ranges");
  conform_add(s, "robustness", test_bad_programs, NULL, 1, "robustness.bad_programs");
  conform_add(s, "robustness", test_concurrent_devices, NULL, 1, "robustness.concurrent_devices");
  conform_add(s, "robustness", test_concurrent_describe, NULL, 1, "robustness.concurrent_describe");
}
