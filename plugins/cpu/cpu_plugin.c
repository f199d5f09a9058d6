/*
 * The CPU backend plugin: hm_plugin_query, the context, devices and buffers.
 * One device ("cpu:0") covers the whole machine; its `threads` option sets
 * the size of its thread pool (default: the number of online cores).
 */
#include <errno.h>
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_internal.h"
#include "plugin_util.h"

#ifndef HM_CPU_PLUGIN_VERSION
#define HM_CPU_PLUGIN_VERSION "0.1.0"
#endif
#ifndef HM_BUILD_ID
#define HM_BUILD_ID "unknown"
#endif

#define PLUGIN_MIN_ABI HM_ABI_MAKE_VERSION(1, 0)
#define MAX_THREADS 256


static const cpu_vec_ops *cpu_vec_select(const cpu_features *f) {
  if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq) return cpu_vec_avx512();
  if (f->avx2 && f->fma) return cpu_vec_avx2();
  return cpu_vec_generic();
}

static const char *find_option(const hm_abi_option *opts, uint32_t n, const char *key) {
  for (uint32_t i = 0; i < n; i++)
    if (opts[i].key && strcmp(opts[i].key, key) == 0) return opts[i].value ? opts[i].value : "";
  return NULL;
}

static int parse_threads(const char *text, unsigned *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno || end == text || *end || v < 1 || v > MAX_THREADS) return 1;
  *out = (unsigned)v;
  return 0;
}

static int32_t cpu_init(const hm_abi_init_args *args, hm_abi_context **out_ctx) {
  if (!args || !out_ctx || !args->host || !args->host->report) return HM_ABI_STATUS_INVALID_ARGUMENT;
  cpu_context *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  ctx->host = *args->host;
  cpu_features_detect(&ctx->features);
  /* The cores this process may run on (mpirun binds a rank to one, taskset
   * to a few), not every core online: more threads than those only queue. */
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) > 0) cores = CPU_COUNT(&allowed);
  ctx->default_threads = cores > 0 ? (unsigned)(cores > MAX_THREADS ? MAX_THREADS : cores) : 1;
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  ctx->memory_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;

  const hm_abi_option *opts = args->options;
  uint32_t n = args->n_options;
  for (uint32_t i = 0; i < n; i++) {
    const char *k = opts[i].key ? opts[i].key : "";
    if (strcmp(k, "threads") && strcmp(k, "gemm") && strcmp(k, "blas_library") && strcmp(k, "openblas_core")) {
      int32_t st = cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT,
                            "cpu: unknown option '%s' (known: threads, gemm, blas_library, openblas_core)", k);
      free(ctx);
      return st;
    }
  }
  const char *threads = find_option(opts, n, "threads");
  if (threads && parse_threads(threads, &ctx->default_threads)) {
    int32_t st = cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT,
                          "cpu: option threads='%s' is not an integer in [1, %d]", threads, MAX_THREADS);
    free(ctx);
    return st;
  }
  const char *gemm = find_option(opts, n, "gemm");
  if (gemm && strcmp(gemm, "openblas") && strcmp(gemm, "reference")) {
    int32_t st = cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT,
                          "cpu: option gemm='%s' must be 'openblas' or 'reference'", gemm);
    free(ctx);
    return st;
  }
  ctx->use_reference_gemm = gemm && strcmp(gemm, "reference") == 0;
  if (!ctx->use_reference_gemm) {
    char err[384];
    if (cpu_blas_load(&ctx->blas, find_option(opts, n, "blas_library"), find_option(opts, n, "openblas_core"),
                      &ctx->features, err, sizeof err)) {
      int32_t st = cpu_fail(ctx, HM_ABI_STATUS_UNAVAILABLE,
                            "cpu: %s; install libopenblas0 or set the plugin option gemm=reference", err);
      free(ctx);
      return st;
    }
  }
  const cpu_vec_ops *vec = cpu_vec_select(&ctx->features);
  snprintf(ctx->features_text, sizeof ctx->features_text, "gemm=%s kernels=%s quant=%s ftz=on threads=%u isa=",
           ctx->use_reference_gemm ? "reference" : ctx->blas.description, vec->name,
           cpu_quant_for(cpu_isa_best(&ctx->features))->name, ctx->default_threads);
  cpu_features_describe(&ctx->features, ctx->features_text, sizeof ctx->features_text);
  *out_ctx = ctx;
  return HM_ABI_OK;
}

static void cpu_shutdown(hm_abi_context *ctx) {
  if (!ctx) return;
  cpu_blas_unload(&ctx->blas);
  free(ctx);
}

static uint32_t cpu_device_count(hm_abi_context *ctx) { return ctx ? 1u : 0u; }

static int32_t cpu_device_describe(hm_abi_context *ctx, uint32_t index, hm_abi_device_desc *out) {
  if (!ctx || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (index != 0) return cpu_fail(ctx, HM_ABI_STATUS_NOT_FOUND, "cpu: no device %u (only 0)", index);
  if (out->struct_size < offsetof(hm_abi_device_desc, reserved))
    return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: device descriptor too small (%u bytes)",
                    out->struct_size);
  hm_abi_device_desc d;
  memset(&d, 0, sizeof d);
  d.struct_size = out->struct_size;
  d.abi_version = HM_ABI_VERSION;
  hm_copy_text(d.name, sizeof d.name, "cpu");
  hm_copy_text(d.vendor, sizeof d.vendor, "Harmonics");
  d.kind = HM_ABI_DEVICE_CPU;
  d.compute_units = ctx->default_threads;
  d.memory_bytes = ctx->memory_bytes;
  d.max_buffer_bytes = ctx->memory_bytes;
  hm_copy_text(d.features, sizeof d.features, ctx->features_text);
  d.caps = cpu_caps_table(&d.n_caps);
  size_t n = out->struct_size < sizeof d ? out->struct_size : sizeof d;
  memcpy(out, &d, n);
  return HM_ABI_OK;
}

static int32_t cpu_device_open(hm_abi_context *ctx, uint32_t index, const hm_abi_option *options,
                               uint32_t n_options, hm_abi_device **out_device) {
  if (!ctx || !out_device || (n_options && !options)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (index != 0) return cpu_fail(ctx, HM_ABI_STATUS_NOT_FOUND, "cpu: no device %u (only 0)", index);
  unsigned threads = ctx->default_threads;
  cpu_isa best = cpu_isa_best(&ctx->features), isa = best;
  int forced = 0;
  for (uint32_t i = 0; i < n_options; i++) {
    const char *k = options[i].key ? options[i].key : "", *v = options[i].value ? options[i].value : "";
    if (strcmp(k, "threads") == 0) {
      if (parse_threads(v, &threads))
        return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT,
                        "cpu: device option threads='%s' is not an integer in [1, %d]", v, MAX_THREADS);
    } else if (strcmp(k, "isa") == 0) {
      int found = 0;
      for (int l = CPU_ISA_GENERIC; l <= CPU_ISA_AVX512; l++)
        if (strcmp(v, cpu_isa_name((cpu_isa)l)) == 0) {
          isa = (cpu_isa)l;
          found = 1;
        }
      if (!found)
        return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT,
                        "cpu: device option isa='%s' is not one of generic, avx2, avxvnni, avx512", v);
      if (isa > best)
        return cpu_fail(ctx, HM_ABI_STATUS_UNAVAILABLE, "cpu: device option isa=%s: this CPU runs at most %s", v,
                        cpu_isa_name(best));
      forced = 1;
    } else {
      return cpu_fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: unknown device option '%s' (known: threads, isa)",
                      k);
    }
  }
  cpu_device *dev = calloc(1, sizeof *dev);
  if (!dev) return cpu_fail(ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "cpu: out of memory");
  dev->ctx = ctx;
  dev->threads = threads;
  dev->isa = isa;
  dev->vec = forced ? cpu_vec_for(isa) : cpu_vec_select(&ctx->features);
  dev->quant = cpu_quant_for(isa);
  dev->pool = cpu_pool_create(threads);
  if (!dev->pool) {
    free(dev);
    return cpu_fail(ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "cpu: cannot start %u threads", threads);
  }
  *out_device = dev;
  return HM_ABI_OK;
}

static void cpu_device_close(hm_abi_device *dev) {
  if (!dev) return;
  cpu_pool_free(dev->pool);
  free(dev);
}

/* ===== Buffers ===== */

static int check_buffer(const cpu_buffer *b) { return !hm_plugin_buffer_ok(b, CPU_BUFFER_MAGIC); }

static int32_t cpu_buffer_alloc(hm_abi_device *dev, uint64_t size, hm_abi_buffer **out) {
  if (!dev || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (size == 0) return cpu_fail(dev->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: buffer size must be > 0");
  if (dev->ctx->memory_bytes && size > dev->ctx->memory_bytes)
    return cpu_fail(dev->ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED,
                    "cpu: buffer of %llu bytes exceeds physical memory (%llu bytes)",
                    (unsigned long long)size, (unsigned long long)dev->ctx->memory_bytes);
  cpu_buffer *b = calloc(1, sizeof *b);
  uint64_t rounded = (size + 63u) & ~(uint64_t)63u;
  void *data = b ? aligned_alloc(64, (size_t)rounded) : NULL;
  if (!data) {
    free(b);
    return cpu_fail(dev->ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "cpu: cannot allocate %llu bytes",
                    (unsigned long long)size);
  }
  b->h.magic = CPU_BUFFER_MAGIC;
  b->device = dev;
  b->h.size = size;
  b->data = data;
  atomic_fetch_add(&dev->live_buffers, 1);
  *out = b;
  return HM_ABI_OK;
}

static void cpu_buffer_free(hm_abi_buffer *b) {
  if (!b || b->h.magic != CPU_BUFFER_MAGIC) return;
  atomic_fetch_sub(&b->device->live_buffers, 1);
  b->h.magic = 0;
  free(b->data);
  free(b);
}

static int32_t cpu_buffer_write(hm_abi_buffer *b, uint64_t offset, const void *src, uint64_t size) {
  if (check_buffer(b) || (!src && size)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (!hm_plugin_range_ok(b, offset, size))
    return cpu_fail(b->device->ctx, HM_ABI_STATUS_OUT_OF_RANGE,
                    "cpu: write of %llu bytes at offset %llu exceeds buffer size %llu",
                    (unsigned long long)size, (unsigned long long)offset, (unsigned long long)b->h.size);
  if (size) memcpy(b->data + offset, src, (size_t)size);
  return HM_ABI_OK;
}

static int32_t cpu_buffer_read(hm_abi_buffer *b, uint64_t offset, void *dst, uint64_t size) {
  if (check_buffer(b) || (!dst && size)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (!hm_plugin_range_ok(b, offset, size))
    return cpu_fail(b->device->ctx, HM_ABI_STATUS_OUT_OF_RANGE,
                    "cpu: read of %llu bytes at offset %llu exceeds buffer size %llu",
                    (unsigned long long)size, (unsigned long long)offset, (unsigned long long)b->h.size);
  if (size) memcpy(dst, b->data + offset, (size_t)size);
  return HM_ABI_OK;
}

static int32_t cpu_buffer_copy(hm_abi_buffer *dst, uint64_t dst_offset, hm_abi_buffer *src,
                               uint64_t src_offset, uint64_t size) {
  if (check_buffer(dst) || check_buffer(src)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (dst->device != src->device)
    return cpu_fail(dst->device->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "cpu: copy between different devices");
  if (!hm_plugin_range_ok(dst, dst_offset, size) || !hm_plugin_range_ok(src, src_offset, size))
    return cpu_fail(dst->device->ctx, HM_ABI_STATUS_OUT_OF_RANGE, "cpu: copy of %llu bytes out of range",
                    (unsigned long long)size);
  if (size) memmove(dst->data + dst_offset, src->data + src_offset, (size_t)size);
  return HM_ABI_OK;
}

static int32_t cpu_device_synchronize(hm_abi_device *dev) {
  return dev ? HM_ABI_OK : HM_ABI_STATUS_INVALID_ARGUMENT;
}

/* ===== Query ===== */

/* The plugin's entries: the versions are filled in by hm_plugin_answer_query. */
static const hm_abi_plugin plugin_table = HM_PLUGIN_TABLE(cpu, "cpu", HM_CPU_PLUGIN_VERSION, HM_BUILD_ID);

HM_ABI_EXPORT int32_t hm_plugin_query(const hm_abi_query *query, hm_abi_plugin *out) {
  return hm_plugin_answer_query(query, out, &plugin_table, PLUGIN_MIN_ABI);
}
