/*
 * hm_myvendor: the smallest complete Harmonics backend plugin, for vendors to
 * copy. It runs on the host CPU with plain loops and declares a small
 * capability set; replace the kernels with your device's and keep the
 * structure: negotiation, descriptors, validation, errors.
 *
 * Search for "VENDOR:" for the places to change.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harmonics_abi.h"

/* VENDOR: your backend name ([a-z0-9_]{1,31}), vendor and version. */
#define BACKEND "myvendor"
#define VENDOR "Example Vendor"
#define VERSION "1.0.0"

/* ===== Objects ===== */

struct hm_abi_context {
  hm_abi_host host; /* report() goes here */
};

struct hm_abi_device {
  hm_abi_context *ctx;
};

#define BUFFER_MAGIC 0x4d594246u
struct hm_abi_buffer {
  uint32_t magic; /* rejects pointers that are not our buffers */
  hm_abi_device *dev;
  uint64_t size;
  unsigned char *data; /* VENDOR: a device allocation */
};

struct hm_abi_program {
  hm_abi_device *dev;
  uint32_t n_ops, n_scalars;
  hm_abi_op *ops; /* copied: the host's array is only valid during program_create */
};

/* Reports |status| with a message through the host (HM-PLUGIN-6). */
static int32_t fail(const hm_abi_context *ctx, int32_t status, const char *fmt, ...) {
  char msg[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (ctx) ctx->host.report(ctx->host.host_ctx, HM_ABI_LOG_ERROR, status, msg);
  return status;
}

/* ===== Capabilities (data: the runtime decides from this table) ===== */

#define F32 HM_ABI_DTYPE_F32
#define ACTS ((1ull << HM_ABI_ACT_IDENTITY) | (1ull << HM_ABI_ACT_RELU))
static const hm_abi_capability caps[] = {
    {HM_ABI_OP_GEMM, F32, F32, F32, HM_ABI_NUMERICS_F32, 0, 0, 0.0f, {0, 0, 0}},
    {HM_ABI_OP_BIAS_ADD, F32, F32, F32, HM_ABI_NUMERICS_F32, 0, 0, 0.0f, {0, 0, 0}},
    {HM_ABI_OP_ACT_FORWARD, F32, F32, F32, HM_ABI_NUMERICS_EXACT, 0, ACTS, 0.0f, {0, 0, 0}},
    {HM_ABI_OP_ACT_BACKWARD, F32, F32, F32, HM_ABI_NUMERICS_F32, 0, ACTS, 0.0f, {0, 0, 0}},
    {HM_ABI_OP_FILL, F32, F32, F32, HM_ABI_NUMERICS_EXACT, 0, 0, 0.0f, {0, 0, 0}},
    {HM_ABI_OP_SCALE, F32, F32, F32, HM_ABI_NUMERICS_F32, 0, 0, 0.0f, {0, 0, 0}},
    {HM_ABI_OP_AXPY, F32, F32, F32, HM_ABI_NUMERICS_F32, 0, 0, 0.0f, {0, 0, 0}},
    {HM_ABI_OP_SGD, F32, F32, F32, HM_ABI_NUMERICS_F32, 0, 0, 0.0f, {0, 0, 0}},
};
#define N_CAPS (sizeof caps / sizeof caps[0])

static int declared(const hm_abi_op *op) {
  uint32_t din = op->dtype_in ? op->dtype_in : F32, dout = op->dtype_out ? op->dtype_out : F32;
  if (op->code == HM_ABI_OP_FILL) din = dout;
  for (size_t i = 0; i < N_CAPS; i++) {
    if (caps[i].op != op->code || caps[i].dtype_in != din || caps[i].dtype_out != dout) continue;
    if (caps[i].variants && (op->variant >= 64 || !(caps[i].variants & (1ull << op->variant)))) return 0;
    return 1;
  }
  return 0;
}

/* ===== Lifetime and devices ===== */

static int32_t my_init(const hm_abi_init_args *args, hm_abi_context **out) {
  if (!args || !args->host || !args->host->report || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  hm_abi_context *c = calloc(1, sizeof *c);
  if (!c) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  c->host = *args->host;
  for (uint32_t i = 0; i < args->n_options; i++) {
    /* VENDOR: accept your options here; refuse the rest by name. */
    int32_t st = fail(c, HM_ABI_STATUS_INVALID_ARGUMENT, BACKEND ": unknown option '%s'",
                      args->options[i].key ? args->options[i].key : "");
    free(c);
    return st;
  }
  /* VENDOR: find your devices; with none, return HM_ABI_STATUS_UNAVAILABLE
   * and say why ("no device", "driver too old"). */
  *out = c;
  return HM_ABI_OK;
}

static void my_shutdown(hm_abi_context *c) { free(c); }
static uint32_t my_device_count(hm_abi_context *c) { return c ? 1 : 0; }

static int32_t my_device_describe(hm_abi_context *c, uint32_t index, hm_abi_device_desc *out) {
  if (!c || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (index != 0) return fail(c, HM_ABI_STATUS_NOT_FOUND, BACKEND ": no device %u", index);
  if (out->struct_size < offsetof(hm_abi_device_desc, reserved))
    return fail(c, HM_ABI_STATUS_INVALID_ARGUMENT, BACKEND ": descriptor too small");
  hm_abi_device_desc d;
  memset(&d, 0, sizeof d);
  d.struct_size = out->struct_size;
  d.abi_version = HM_ABI_VERSION;
  snprintf(d.name, sizeof d.name, "%s", BACKEND " reference device");
  snprintf(d.vendor, sizeof d.vendor, "%s", VENDOR);
  d.kind = HM_ABI_DEVICE_ACCELERATOR;
  d.compute_units = 1;
  d.memory_bytes = (uint64_t)1 << 30;
  d.max_buffer_bytes = (uint64_t)1 << 30;
  snprintf(d.features, sizeof d.features, "example=1");
  d.caps = caps;
  d.n_caps = (uint32_t)N_CAPS;
  memcpy(out, &d, out->struct_size < sizeof d ? out->struct_size : sizeof d);
  return HM_ABI_OK;
}

static int32_t my_device_open(hm_abi_context *c, uint32_t index, const hm_abi_option *o, uint32_t n,
                              hm_abi_device **out) {
  if (!c || !out || (n && !o)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (index != 0) return fail(c, HM_ABI_STATUS_NOT_FOUND, BACKEND ": no device %u", index);
  if (n) return fail(c, HM_ABI_STATUS_INVALID_ARGUMENT, BACKEND ": unknown device option '%s'", o[0].key ? o[0].key : "");
  hm_abi_device *d = calloc(1, sizeof *d);
  if (!d) return fail(c, HM_ABI_STATUS_RESOURCE_EXHAUSTED, BACKEND ": out of memory");
  d->ctx = c;
  *out = d;
  return HM_ABI_OK;
}

static void my_device_close(hm_abi_device *d) { free(d); }

/* ===== Buffers ===== */

static int valid(const hm_abi_buffer *b) { return b && b->magic == BUFFER_MAGIC; }
static int in_range(const hm_abi_buffer *b, uint64_t off, uint64_t n) { return off <= b->size && n <= b->size - off; }

static int32_t my_buffer_alloc(hm_abi_device *d, uint64_t size, hm_abi_buffer **out) {
  if (!d || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (size == 0) return fail(d->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, BACKEND ": buffer size 0");
  if (size > ((uint64_t)1 << 30))
    return fail(d->ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, BACKEND ": %llu bytes exceed device memory",
                (unsigned long long)size);
  hm_abi_buffer *b = calloc(1, sizeof *b);
  unsigned char *data = b ? calloc(1, (size_t)size) : NULL;
  if (!data) {
    free(b);
    return fail(d->ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, BACKEND ": out of memory");
  }
  b->magic = BUFFER_MAGIC;
  b->dev = d;
  b->size = size;
  b->data = data;
  *out = b;
  return HM_ABI_OK;
}

static void my_buffer_free(hm_abi_buffer *b) {
  if (!valid(b)) return;
  b->magic = 0;
  free(b->data);
  free(b);
}

static int32_t my_buffer_write(hm_abi_buffer *b, uint64_t off, const void *src, uint64_t n) {
  if (!valid(b) || (n && !src)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (!in_range(b, off, n)) return fail(b->dev->ctx, HM_ABI_STATUS_OUT_OF_RANGE, BACKEND ": write out of range");
  memcpy(b->data + off, src, (size_t)n);
  return HM_ABI_OK;
}

static int32_t my_buffer_read(hm_abi_buffer *b, uint64_t off, void *dst, uint64_t n) {
  if (!valid(b) || (n && !dst)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (!in_range(b, off, n)) return fail(b->dev->ctx, HM_ABI_STATUS_OUT_OF_RANGE, BACKEND ": read out of range");
  memcpy(dst, b->data + off, (size_t)n);
  return HM_ABI_OK;
}

static int32_t my_buffer_copy(hm_abi_buffer *d, uint64_t doff, hm_abi_buffer *s, uint64_t soff, uint64_t n) {
  if (!valid(d) || !valid(s)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (!in_range(d, doff, n) || !in_range(s, soff, n))
    return fail(d->dev->ctx, HM_ABI_STATUS_OUT_OF_RANGE, BACKEND ": copy out of range");
  memmove(d->data + doff, s->data + soff, (size_t)n);
  return HM_ABI_OK;
}

/* ===== Programs ===== */

/* Bytes operand |slot| of |op| needs (0: unused). Overflow-checked. */
static int operand_bytes(const hm_abi_op *op, int out, int slot, uint64_t *bytes, int *required) {
  uint64_t d0 = op->dims[0], d1 = op->dims[1], d2 = op->dims[2], a = 0, b = 1;
  *required = 1;
  switch (op->code) {
    case HM_ABI_OP_GEMM:
      if (!out && slot == 0) a = d0, b = d2;
      else if (!out && slot == 1) a = d2, b = d1;
      else if (out && slot == 0) a = d0, b = d1;
      break;
    case HM_ABI_OP_BIAS_ADD:
      if (!out && slot == 0) a = d1;
      else if (out && slot == 0) a = d0, b = d1;
      break;
    case HM_ABI_OP_ACT_FORWARD:
      if (slot == 0) a = d0, b = d1;
      break;
    case HM_ABI_OP_ACT_BACKWARD:
      if (!out && slot == 0) a = d0, b = d1, *required = op->variant == HM_ABI_ACT_RELU;
      else if (!out && slot == 1) a = d0, b = d1, *required = 0;
      else if ((!out && slot == 2) || (out && slot == 0)) a = d0, b = d1;
      break;
    case HM_ABI_OP_FILL:
      if (out && slot == 0) a = d0;
      break;
    case HM_ABI_OP_SCALE:
      if (slot == 0) a = d0, *required = out;
      break;
    case HM_ABI_OP_AXPY:
      if (slot == 0) a = d0;
      break;
    case HM_ABI_OP_SGD:
      if (slot == 0) a = d0;
      else if (out && slot == 1) a = d0, *required = op->params[1] != 0.0f || op->dyn[1] != HM_ABI_DYN_NONE;
      break;
    default: break;
  }
  if (a == 0) {
    *required = 0;
    *bytes = 0;
    return 0;
  }
  return __builtin_mul_overflow(a, b, bytes) || __builtin_mul_overflow(*bytes, 4, bytes);
}

static int32_t my_program_create(hm_abi_device *d, const hm_abi_program_desc *desc, hm_abi_program **out) {
  if (!d || !desc || !out || (desc->n_ops && !desc->ops)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  hm_abi_context *c = d->ctx;
  if (desc->n_ops > 100000) return fail(c, HM_ABI_STATUS_OUT_OF_RANGE, BACKEND ": too many ops");
  for (uint32_t i = 0; i < desc->n_ops; i++) {
    const hm_abi_op *op = &desc->ops[i];
    if (op->struct_size != sizeof *op) return fail(c, HM_ABI_STATUS_INVALID_ARGUMENT, BACKEND ": op %u: struct_size", i);
    if (!declared(op)) return fail(c, HM_ABI_STATUS_UNIMPLEMENTED, BACKEND ": op %u (code %u) is not declared", i, op->code);
    for (int k = 0; k < HM_ABI_MAX_DYN; k++)
      if (op->dyn[k] != HM_ABI_DYN_NONE && (op->dyn[k] < 0 || (uint32_t)op->dyn[k] >= desc->n_scalars))
        return fail(c, HM_ABI_STATUS_OUT_OF_RANGE, BACKEND ": op %u: dyn[%d] beyond the scalars", i, k);
    for (int side = 0; side < 2; side++)
      for (int k = 0; k < HM_ABI_MAX_OPERANDS; k++) {
        const hm_abi_operand *o = side ? &op->out[k] : &op->in[k];
        uint64_t bytes;
        int required;
        if (operand_bytes(op, side, k, &bytes, &required))
          return fail(c, HM_ABI_STATUS_OUT_OF_RANGE, BACKEND ": op %u: operand size overflows", i);
        if (!o->buffer) {
          if (required) return fail(c, HM_ABI_STATUS_INVALID_ARGUMENT, BACKEND ": op %u: operand missing", i);
          continue;
        }
        if (!bytes) continue;
        if (!valid(o->buffer) || o->buffer->dev != d)
          return fail(c, HM_ABI_STATUS_INVALID_ARGUMENT, BACKEND ": op %u: not a buffer of this device", i);
        if (!in_range(o->buffer, o->offset, bytes))
          return fail(c, HM_ABI_STATUS_OUT_OF_RANGE, BACKEND ": op %u: operand outside its buffer", i);
      }
  }
  hm_abi_program *p = calloc(1, sizeof *p);
  hm_abi_op *ops = malloc((desc->n_ops ? desc->n_ops : 1) * sizeof *ops);
  if (!p || !ops) {
    free(p);
    free(ops);
    return fail(c, HM_ABI_STATUS_RESOURCE_EXHAUSTED, BACKEND ": out of memory");
  }
  memcpy(ops, desc->ops, desc->n_ops * sizeof *ops);
  p->dev = d;
  p->ops = ops;
  p->n_ops = desc->n_ops;
  p->n_scalars = desc->n_scalars;
  *out = p;
  return HM_ABI_OK;
}

static void my_program_free(hm_abi_program *p) {
  if (!p) return;
  free(p->ops);
  free(p);
}

#define PTR(o) ((float *)((o).buffer->data + (o).offset))

static float param(const hm_abi_op *op, int i, const double *s) { return op->dyn[i] >= 0 ? (float)s[op->dyn[i]] : op->params[i]; }

/* VENDOR: the kernels. Plain loops here; launches on your device. */
static void run_op(const hm_abi_op *op, const double *s) {
  size_t d0 = (size_t)op->dims[0], d1 = (size_t)op->dims[1], d2 = (size_t)op->dims[2];
  switch (op->code) {
    case HM_ABI_OP_GEMM: {
      const float *a = PTR(op->in[0]), *b = PTR(op->in[1]);
      float *c = PTR(op->out[0]), alpha = param(op, 0, s), beta = param(op, 1, s);
      int ta = (op->flags & HM_ABI_OP_FLAG_TRANS_A) != 0, tb = (op->flags & HM_ABI_OP_FLAG_TRANS_B) != 0;
      for (size_t i = 0; i < d0; i++)
        for (size_t j = 0; j < d1; j++) {
          double acc = 0;
          for (size_t k = 0; k < d2; k++) acc += (double)(ta ? a[k * d0 + i] : a[i * d2 + k]) * (tb ? b[j * d2 + k] : b[k * d1 + j]);
          c[i * d1 + j] = (float)(alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * c[i * d1 + j]));
        }
      break;
    }
    case HM_ABI_OP_BIAS_ADD: {
      const float *b = PTR(op->in[0]);
      float *y = PTR(op->out[0]);
      for (size_t r = 0; r < d0; r++)
        for (size_t c = 0; c < d1; c++) y[r * d1 + c] += b[c];
      break;
    }
    case HM_ABI_OP_ACT_FORWARD: {
      const float *x = PTR(op->in[0]);
      float *y = PTR(op->out[0]);
      for (size_t i = 0; i < d0 * d1; i++) y[i] = op->variant == HM_ABI_ACT_RELU ? (x[i] > 0 ? x[i] : 0.0f) : x[i];
      break;
    }
    case HM_ABI_OP_ACT_BACKWARD: {
      const float *x = op->in[0].buffer ? PTR(op->in[0]) : NULL, *dy = PTR(op->in[2]);
      float *dx = PTR(op->out[0]), beta = param(op, 1, s);
      for (size_t i = 0; i < d0 * d1; i++) {
        float g = op->variant == HM_ABI_ACT_RELU ? (x[i] > 0 ? dy[i] : 0.0f) : dy[i];
        dx[i] = beta == 0.0f ? g : g + beta * dx[i];
      }
      break;
    }
    case HM_ABI_OP_FILL: {
      float *x = PTR(op->out[0]), v = param(op, 0, s);
      for (size_t i = 0; i < d0; i++) x[i] = v;
      break;
    }
    case HM_ABI_OP_SCALE: {
      float *y = PTR(op->out[0]), a = param(op, 0, s);
      const float *x = op->in[0].buffer ? PTR(op->in[0]) : y;
      for (size_t i = 0; i < d0; i++) y[i] = a * x[i];
      break;
    }
    case HM_ABI_OP_AXPY: {
      const float *x = PTR(op->in[0]);
      float *y = PTR(op->out[0]), a = param(op, 0, s);
      for (size_t i = 0; i < d0; i++) y[i] = (float)((double)a * x[i] + y[i]);
      break;
    }
    case HM_ABI_OP_SGD: {
      const float *g = PTR(op->in[0]);
      float *p = PTR(op->out[0]), lr = param(op, 0, s), mu = param(op, 1, s);
      float *v = op->out[1].buffer ? PTR(op->out[1]) : NULL;
      for (size_t i = 0; i < d0; i++) {
        float step = g[i];
        if (mu != 0.0f && v) step = v[i] = mu * v[i] + g[i];
        p[i] = (float)((double)p[i] - (double)lr * step);
      }
      break;
    }
    default: break;
  }
  (void)d2;
}

static int32_t my_program_run(hm_abi_program *p, const double *scalars, uint32_t n) {
  if (!p) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (n != p->n_scalars || (n && !scalars))
    return fail(p->dev->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, BACKEND ": program_run got %u scalars, expected %u", n,
                p->n_scalars);
  for (uint32_t i = 0; i < p->n_ops; i++) run_op(&p->ops[i], scalars);
  return HM_ABI_OK;
}

/* ===== The one exported symbol ===== */

HM_ABI_EXPORT int32_t hm_plugin_query(const hm_abi_query *q, hm_abi_plugin *out) {
  if (!q || !out || out->struct_size < offsetof(hm_abi_plugin, reserved)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  const uint32_t pmin = HM_ABI_MAKE_VERSION(1, 0), pmax = HM_ABI_VERSION;
  uint32_t hi = q->host_max_abi < pmax ? q->host_max_abi : pmax, lo = q->host_min_abi > pmin ? q->host_min_abi : pmin;
  if (HM_ABI_VERSION_GET_MAJOR(hi) != HM_ABI_VERSION_MAJOR || hi < lo) return HM_ABI_STATUS_INCOMPATIBLE;
  hm_abi_plugin p;
  memset(&p, 0, sizeof p);
  p.struct_size = out->struct_size;
  p.abi_version = hi;
  p.plugin_min_abi = pmin;
  p.plugin_max_abi = pmax;
  p.name = BACKEND;
  p.vendor = VENDOR;
  p.version = VERSION;
  p.build_id = "example";
  p.init = my_init;
  p.shutdown = my_shutdown;
  p.device_count = my_device_count;
  p.device_describe = my_device_describe;
  p.device_open = my_device_open;
  p.device_close = my_device_close;
  p.buffer_alloc = my_buffer_alloc;
  p.buffer_free = my_buffer_free;
  p.buffer_write = my_buffer_write;
  p.buffer_read = my_buffer_read;
  p.buffer_copy = my_buffer_copy;
  p.program_create = my_program_create;
  p.program_free = my_program_free;
  p.program_run = my_program_run;
  memcpy(out, &p, out->struct_size < sizeof p ? out->struct_size : sizeof p);
  return HM_ABI_OK;
}
