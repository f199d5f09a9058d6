/*
 * The OpenCL backend: every ABI op as an OpenCL C 1.2 kernel
 * (plugins/common/kernels/hm_ops.kern with dialect_opencl.h, embedded as
 * source), built per device when the device opens, with a binary cache keyed
 * by device, driver and source. A program is a recorded list of kernel
 * launches, each with its arguments set once; program_run writes the dynamic
 * scalars into a small buffer and enqueues the list on an in-order queue.
 *
 * Devices: every device of every platform (GPU, CPU, accelerator). Nothing
 * assumes a CPU device. Options (plugin): build_cache=DIR|off; (device):
 * profile=on times each launch (event profiling) and prints the times when
 * the program is freed.
 */
#include <CL/cl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dispatch.h"
#include "harmonics_abi.h"
#include "op_rules.h"
#include "plugin_util.h"

extern const unsigned char hm_ocl_source[];
extern const unsigned long hm_ocl_source_len;

#define PLUGIN_MIN_ABI HM_ABI_MAKE_VERSION(1, 0)
#define MAX_DEVICES 16
#define BUFFER_MAGIC 0x4f434c42u /* "OCLB" */
#define MAX_GROUPS 1024u

typedef struct ocl_device_info {
  cl_platform_id platform;
  cl_device_id id;
  hm_abi_device_desc desc;
  char key[1024]; /* what identifies a built binary: platform, device, driver */
} ocl_device_info;

typedef struct hm_abi_context {
  hm_abi_host host;
  uint32_t n_devices;
  ocl_device_info devices[MAX_DEVICES];
  char cache_dir[512]; /* "" = no cache */
} ocl_context;

typedef struct hm_abi_device {
  ocl_context *ctx;
  const ocl_device_info *info;
  cl_context cl;
  cl_command_queue queue;
  cl_program program;
  cl_mem dummy; /* bound to unused operand slots */
  atomic_long live_buffers, live_programs;
  char build_note[64]; /* "built", "cached" */
  int profile; /* device option profile=on: each launch timed (hm_launch_time) */
} ocl_device;

typedef struct hm_abi_buffer {
  hm_plugin_buffer_header h; /* first: magic and size */
  ocl_device *dev;
  cl_mem mem;
} ocl_buffer;

typedef struct launch {
  cl_kernel kernel;
  size_t global, local;
  cl_mem scratch; /* a split reduction's partial results (one reference per launch), or null */
} launch;

typedef struct hm_abi_program {
  ocl_device *dev;
  uint32_t n_launches, n_scalars;
  launch *launches;
  cl_mem scalars;
  float *scalars_host;
  cl_event scalars_written; /* the last run's write of scalars_host, until a later run has waited for it */
  /* profile=on: per launch what it is and its time, and runs so far. */
  hm_launch_time *times;
  cl_event *events;
  uint32_t runs;
  double span_ms; /* first launch's start to the last one's end, summed like times[].ms */
} ocl_program;

/* Reports through the host (plugin_util.h). */
#define fail(ctx, status, ...) hm_plugin_fail((ctx) ? &(ctx)->host : NULL, (status), __VA_ARGS__)

static const char *cl_error_name(cl_int e) {
  switch (e) {
    case CL_DEVICE_NOT_FOUND: return "CL_DEVICE_NOT_FOUND";
    case CL_DEVICE_NOT_AVAILABLE: return "CL_DEVICE_NOT_AVAILABLE";
    case CL_MEM_OBJECT_ALLOCATION_FAILURE: return "CL_MEM_OBJECT_ALLOCATION_FAILURE";
    case CL_OUT_OF_RESOURCES: return "CL_OUT_OF_RESOURCES";
    case CL_OUT_OF_HOST_MEMORY: return "CL_OUT_OF_HOST_MEMORY";
    case CL_BUILD_PROGRAM_FAILURE: return "CL_BUILD_PROGRAM_FAILURE";
    case CL_INVALID_VALUE: return "CL_INVALID_VALUE";
    case CL_INVALID_BUFFER_SIZE: return "CL_INVALID_BUFFER_SIZE";
    case CL_INVALID_KERNEL_ARGS: return "CL_INVALID_KERNEL_ARGS";
    case CL_INVALID_WORK_GROUP_SIZE: return "CL_INVALID_WORK_GROUP_SIZE";
    case -1001: return "CL_PLATFORM_NOT_FOUND_KHR";
    default: return "OpenCL error";
  }
}

static int32_t status_of(cl_int e) {
  return e == CL_MEM_OBJECT_ALLOCATION_FAILURE || e == CL_OUT_OF_RESOURCES || e == CL_OUT_OF_HOST_MEMORY ||
                 e == CL_INVALID_BUFFER_SIZE
             ? HM_ABI_STATUS_RESOURCE_EXHAUSTED
             : HM_ABI_STATUS_INTERNAL;
}

/* ===== Context ===== */

static void device_text(cl_device_id d, cl_device_info what, char *out, size_t cap) {
  out[0] = '\0';
  size_t got = 0;
  if (clGetDeviceInfo(d, what, cap, out, &got) != CL_SUCCESS) out[0] = '\0';
  out[cap - 1] = '\0';
}

static void describe_device(ocl_device_info *di) {
  hm_abi_device_desc *d = &di->desc;
  memset(d, 0, sizeof *d);
  d->struct_size = sizeof *d;
  d->abi_version = HM_ABI_VERSION;
  char name[256], vendor[256], version[256], driver[256], cversion[256], ext[4096], pversion[256];
  device_text(di->id, CL_DEVICE_NAME, name, sizeof name);
  device_text(di->id, CL_DEVICE_VENDOR, vendor, sizeof vendor);
  device_text(di->id, CL_DEVICE_VERSION, version, sizeof version);
  device_text(di->id, CL_DRIVER_VERSION, driver, sizeof driver);
  device_text(di->id, CL_DEVICE_OPENCL_C_VERSION, cversion, sizeof cversion);
  device_text(di->id, CL_DEVICE_EXTENSIONS, ext, sizeof ext);
  pversion[0] = '\0';
  clGetPlatformInfo(di->platform, CL_PLATFORM_VERSION, sizeof pversion, pversion, NULL);
  pversion[sizeof pversion - 1] = '\0';
  hm_copy_text(d->name, sizeof d->name, name);
  hm_copy_text(d->vendor, sizeof d->vendor, vendor);
  cl_device_type type = 0;
  clGetDeviceInfo(di->id, CL_DEVICE_TYPE, sizeof type, &type, NULL);
  d->kind = type & CL_DEVICE_TYPE_GPU ? HM_ABI_DEVICE_GPU : type & CL_DEVICE_TYPE_CPU ? HM_ABI_DEVICE_CPU : HM_ABI_DEVICE_ACCELERATOR;
  cl_uint cu = 0;
  clGetDeviceInfo(di->id, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof cu, &cu, NULL);
  d->compute_units = cu;
  cl_ulong mem = 0, alloc = 0;
  clGetDeviceInfo(di->id, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof mem, &mem, NULL);
  clGetDeviceInfo(di->id, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof alloc, &alloc, NULL);
  d->memory_bytes = mem;
  d->max_buffer_bytes = alloc;
  size_t wg = 0;
  clGetDeviceInfo(di->id, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof wg, &wg, NULL);
  snprintf(d->features, sizeof d->features,
           "opencl=\"%.100s\" c=\"%.60s\" driver=%.60s type=%s cu=%u max_wg=%zu fp16=%s fp64=%s int_dot=%s "
           "kernels=portable-f32 packed=q8,q4,q3",
           version, cversion, driver, d->kind == HM_ABI_DEVICE_GPU ? "gpu" : d->kind == HM_ABI_DEVICE_CPU ? "cpu" : "accelerator",
           cu, wg, strstr(ext, "cl_khr_fp16") ? "yes" : "no", strstr(ext, "cl_khr_fp64") ? "yes" : "no",
           strstr(ext, "cl_khr_integer_dot_product") ? "yes" : "no");
  uint32_t n_caps = 0;
  d->caps = hm_kernel_caps(&n_caps);
  d->n_caps = n_caps;
  snprintf(di->key, sizeof di->key, "%.200s|%.200s|%.200s|%.200s|%.200s", pversion, vendor, name, version, driver);
}

static const char *find_option(const hm_abi_option *opts, uint32_t n, const char *key) {
  for (uint32_t i = 0; i < n; i++)
    if (opts[i].key && strcmp(opts[i].key, key) == 0) return opts[i].value ? opts[i].value : "";
  return NULL;
}

static int32_t ocl_init(const hm_abi_init_args *args, hm_abi_context **out) {
  if (!args || !out || !args->host || !args->host->report) return HM_ABI_STATUS_INVALID_ARGUMENT;
  ocl_context *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  ctx->host = *args->host;
  for (uint32_t i = 0; i < args->n_options; i++) {
    const char *k = args->options[i].key ? args->options[i].key : "";
    if (strcmp(k, "build_cache") != 0) {
      int32_t st = fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "opencl: unknown option '%s' (known: build_cache)", k);
      free(ctx);
      return st;
    }
  }
  const char *cache = find_option(args->options, args->n_options, "build_cache");
  if (cache && strcmp(cache, "off") != 0) {
    hm_copy_text(ctx->cache_dir, sizeof ctx->cache_dir, cache);
  } else if (!cache) {
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg) snprintf(ctx->cache_dir, sizeof ctx->cache_dir, "%s/harmonics/opencl", xdg);
    else if (home && *home) snprintf(ctx->cache_dir, sizeof ctx->cache_dir, "%s/.cache/harmonics/opencl", home);
  }
  cl_platform_id plats[8];
  cl_uint np = 0;
  cl_int e = clGetPlatformIDs(8, plats, &np);
  if (e != CL_SUCCESS || np == 0) {
    int32_t st = fail(ctx, HM_ABI_STATUS_UNAVAILABLE,
                      "opencl: no OpenCL platform (%s, %d): install an OpenCL driver such as pocl-opencl-icd or a GPU "
                      "vendor's ICD",
                      cl_error_name(e), (int)e);
    free(ctx);
    return st;
  }
  for (cl_uint p = 0; p < np && p < 8; p++) {
    cl_device_id ids[MAX_DEVICES];
    cl_uint nd = 0;
    if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, MAX_DEVICES, ids, &nd) != CL_SUCCESS) continue;
    for (cl_uint i = 0; i < nd && ctx->n_devices < MAX_DEVICES; i++) {
      ocl_device_info *di = &ctx->devices[ctx->n_devices++];
      di->platform = plats[p];
      di->id = ids[i];
      describe_device(di);
    }
  }
  if (ctx->n_devices == 0) {
    int32_t st = fail(ctx, HM_ABI_STATUS_UNAVAILABLE, "opencl: %u platform(s) but no device", np);
    free(ctx);
    return st;
  }
  *out = ctx;
  return HM_ABI_OK;
}

static void ocl_shutdown(hm_abi_context *ctx) { free(ctx); }

static uint32_t ocl_device_count(hm_abi_context *ctx) { return ctx ? ctx->n_devices : 0; }

static int32_t ocl_device_describe(hm_abi_context *ctx, uint32_t index, hm_abi_device_desc *out) {
  if (!ctx || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (index >= ctx->n_devices)
    return fail(ctx, HM_ABI_STATUS_NOT_FOUND, "opencl: no device %u (%u devices)", index, ctx->n_devices);
  if (out->struct_size < offsetof(hm_abi_device_desc, reserved))
    return fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "opencl: device descriptor too small (%u bytes)", out->struct_size);
  hm_abi_device_desc d = ctx->devices[index].desc;
  d.struct_size = out->struct_size;
  memcpy(out, &d, out->struct_size < sizeof d ? out->struct_size : sizeof d);
  return HM_ABI_OK;
}

/* ===== Building, with a binary cache ===== */

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

static void cache_path(const ocl_device *dev, char *out, size_t cap) {
  uint64_t h = fnv1a(0xcbf29ce484222325ull, dev->info->key, strlen(dev->info->key));
  h = fnv1a(h, hm_ocl_source, hm_ocl_source_len);
  snprintf(out, cap, "%s/%016llx.bin", dev->ctx->cache_dir, (unsigned long long)h);
}

static void mkdirs(const char *path) {
  char tmp[512];
  hm_copy_text(tmp, sizeof tmp, path);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = '\0';
      mkdir(tmp, 0755);
      *p = '/';
    }
  mkdir(tmp, 0755);
}

static const char *kBuildOptions = "-cl-std=CL1.2 -DK_ALL";

static cl_program load_cached(ocl_device *dev, const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  unsigned char *bin = NULL;
  long n = 0;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && n < (64l << 20) && fseek(f, 0, SEEK_SET) == 0 &&
      (bin = malloc((size_t)n)) && fread(bin, 1, (size_t)n, f) != (size_t)n) {
    free(bin);
    bin = NULL;
  }
  fclose(f);
  if (!bin) return NULL;
  size_t len = (size_t)n;
  const unsigned char *bins[1] = {bin};
  cl_int st = 0, e = 0;
  cl_program p = clCreateProgramWithBinary(dev->cl, 1, &dev->info->id, &len, bins, &st, &e);
  free(bin);
  if (!p) return NULL;
  if (e != CL_SUCCESS || st != CL_SUCCESS || clBuildProgram(p, 1, &dev->info->id, kBuildOptions, NULL, NULL) != CL_SUCCESS) {
    clReleaseProgram(p); /* a stale or foreign binary: build from source */
    return NULL;
  }
  return p;
}

static void save_cached(ocl_device *dev, cl_program p, const char *path) {
  size_t len = 0;
  if (clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof len, &len, NULL) != CL_SUCCESS || len == 0) return;
  unsigned char *bin = malloc(len);
  if (!bin) return;
  unsigned char *bins[1] = {bin};
  if (clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) == CL_SUCCESS) {
    mkdirs(dev->ctx->cache_dir);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    int ok = f && fwrite(bin, 1, len, f) == len;
    if (f && fclose(f) != 0) ok = 0;
    if (ok) ok = rename(tmp, path) == 0;
    if (!ok) unlink(tmp); /* a cache that cannot be written is not an error */
  }
  free(bin);
}

static int32_t build(ocl_device *dev) {
  char path[600] = "";
  if (dev->ctx->cache_dir[0]) {
    cache_path(dev, path, sizeof path);
    dev->program = load_cached(dev, path);
    if (dev->program) {
      hm_copy_text(dev->build_note, sizeof dev->build_note, "cached");
      return HM_ABI_OK;
    }
  }
  const char *src = (const char *)hm_ocl_source;
  size_t len = hm_ocl_source_len;
  cl_int e = 0;
  dev->program = clCreateProgramWithSource(dev->cl, 1, &src, &len, &e);
  if (!dev->program) return fail(dev->ctx, status_of(e), "opencl: clCreateProgramWithSource: %s (%d)", cl_error_name(e), (int)e);
  e = clBuildProgram(dev->program, 1, &dev->info->id, kBuildOptions, NULL, NULL);
  if (e != CL_SUCCESS) {
    char log[2048] = "";
    clGetProgramBuildInfo(dev->program, dev->info->id, CL_PROGRAM_BUILD_LOG, sizeof log, log, NULL);
    log[sizeof log - 1] = '\0';
    return fail(dev->ctx, HM_ABI_STATUS_UNAVAILABLE, "opencl: the kernels do not build on '%s': %s (%d): %.1500s",
                dev->info->desc.name, cl_error_name(e), (int)e, log);
  }
  hm_copy_text(dev->build_note, sizeof dev->build_note, "built");
  if (path[0]) save_cached(dev, dev->program, path);
  return HM_ABI_OK;
}

/* ===== Devices ===== */

static void ocl_device_close(hm_abi_device *dev) {
  if (!dev) return;
  if (dev->queue) clFinish(dev->queue);
  if (dev->dummy) clReleaseMemObject(dev->dummy);
  if (dev->program) clReleaseProgram(dev->program);
  if (dev->queue) clReleaseCommandQueue(dev->queue);
  if (dev->cl) clReleaseContext(dev->cl);
  free(dev);
}

static int32_t ocl_device_open(hm_abi_context *ctx, uint32_t index, const hm_abi_option *options, uint32_t n_options,
                               hm_abi_device **out) {
  if (!ctx || !out || (n_options && !options)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (index >= ctx->n_devices) return fail(ctx, HM_ABI_STATUS_NOT_FOUND, "opencl: no device %u", index);
  int profile = 0;
  for (uint32_t i = 0; i < n_options; i++) {
    const char *k = options[i].key ? options[i].key : "", *v = options[i].value ? options[i].value : "";
    /* "threads" is what every device is offered; it does not apply here. */
    if (!strcmp(k, "threads")) continue;
    if (!strcmp(k, "profile") && (!strcmp(v, "off") || !strcmp(v, "on"))) {
      profile = !strcmp(v, "on");
      continue;
    }
    return fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "opencl: bad device option %s='%s' (known: profile=off|on)", k, v);
  }
  ocl_device *dev = calloc(1, sizeof *dev);
  if (!dev) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  dev->ctx = ctx;
  dev->info = &ctx->devices[index];
  dev->profile = profile;
  cl_int e = 0;
  cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)dev->info->platform, 0};
  dev->cl = clCreateContext(props, 1, &dev->info->id, NULL, NULL, &e);
  if (dev->cl) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    cl_command_queue_properties qp = profile ? CL_QUEUE_PROFILING_ENABLE : 0;
    dev->queue = clCreateCommandQueue(dev->cl, dev->info->id, qp, &e); /* in order */
#pragma GCC diagnostic pop
  }
  if (dev->queue) dev->dummy = clCreateBuffer(dev->cl, CL_MEM_READ_WRITE, 64, NULL, &e);
  if (!dev->dummy) {
    int32_t st = fail(ctx, HM_ABI_STATUS_UNAVAILABLE, "opencl: cannot open '%s': %s (%d)", dev->info->desc.name,
                      cl_error_name(e), (int)e);
    ocl_device_close(dev);
    return st;
  }
  int32_t st = build(dev);
  if (st != HM_ABI_OK) {
    ocl_device_close(dev);
    return st;
  }
  *out = dev;
  return HM_ABI_OK;
}

/* ===== Buffers ===== */

static int check_buffer(const ocl_buffer *b) { return !hm_plugin_buffer_ok(b, BUFFER_MAGIC); }

static int32_t ocl_buffer_alloc(hm_abi_device *dev, uint64_t size, hm_abi_buffer **out) {
  if (!dev || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (size == 0) return fail(dev->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "opencl: buffer size must be > 0");
  /* Kernels address 32-bit words: round up so the last word is ours. */
  uint64_t alloc = (size + 3) & ~(uint64_t)3;
  if (size > UINT64_MAX - 4 || alloc > dev->info->desc.max_buffer_bytes)
    return fail(dev->ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED,
                "opencl: buffer of %llu bytes exceeds the device's largest allocation (%llu bytes)",
                (unsigned long long)size, (unsigned long long)dev->info->desc.max_buffer_bytes);
  ocl_buffer *b = calloc(1, sizeof *b);
  if (!b) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  cl_int e = 0;
  b->mem = clCreateBuffer(dev->cl, CL_MEM_READ_WRITE, (size_t)alloc, NULL, &e);
  if (!b->mem) {
    free(b);
    return fail(dev->ctx, status_of(e), "opencl: cannot allocate %llu bytes: %s (%d)", (unsigned long long)size,
                cl_error_name(e), (int)e);
  }
  b->h.magic = BUFFER_MAGIC;
  b->dev = dev;
  b->h.size = size;
  atomic_fetch_add(&dev->live_buffers, 1);
  *out = b;
  return HM_ABI_OK;
}

static void ocl_buffer_free(hm_abi_buffer *b) {
  if (check_buffer(b)) return;
  clFinish(b->dev->queue); /* programs may still use it */
  atomic_fetch_sub(&b->dev->live_buffers, 1);
  b->h.magic = 0;
  clReleaseMemObject(b->mem);
  free(b);
}


static int32_t ocl_buffer_write(hm_abi_buffer *b, uint64_t offset, const void *src, uint64_t size) {
  if (check_buffer(b) || (!src && size)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (!hm_plugin_range_ok(b, offset, size))
    return fail(b->dev->ctx, HM_ABI_STATUS_OUT_OF_RANGE, "opencl: write of %llu bytes at offset %llu exceeds buffer size %llu",
                (unsigned long long)size, (unsigned long long)offset, (unsigned long long)b->h.size);
  if (!size) return HM_ABI_OK;
  cl_int e = clEnqueueWriteBuffer(b->dev->queue, b->mem, CL_TRUE, (size_t)offset, (size_t)size, src, 0, NULL, NULL);
  return e == CL_SUCCESS ? HM_ABI_OK : fail(b->dev->ctx, status_of(e), "opencl: write: %s (%d)", cl_error_name(e), (int)e);
}

static int32_t ocl_buffer_read(hm_abi_buffer *b, uint64_t offset, void *dst, uint64_t size) {
  if (check_buffer(b) || (!dst && size)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (!hm_plugin_range_ok(b, offset, size))
    return fail(b->dev->ctx, HM_ABI_STATUS_OUT_OF_RANGE, "opencl: read of %llu bytes at offset %llu exceeds buffer size %llu",
                (unsigned long long)size, (unsigned long long)offset, (unsigned long long)b->h.size);
  if (!size) return HM_ABI_OK;
  cl_int e = clEnqueueReadBuffer(b->dev->queue, b->mem, CL_TRUE, (size_t)offset, (size_t)size, dst, 0, NULL, NULL);
  return e == CL_SUCCESS ? HM_ABI_OK : fail(b->dev->ctx, status_of(e), "opencl: read: %s (%d)", cl_error_name(e), (int)e);
}

static int32_t ocl_buffer_copy(hm_abi_buffer *dst, uint64_t dst_offset, hm_abi_buffer *src, uint64_t src_offset,
                               uint64_t size) {
  if (check_buffer(dst) || check_buffer(src)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (dst->dev != src->dev) return fail(dst->dev->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "opencl: copy between different devices");
  if (!hm_plugin_range_ok(dst, dst_offset, size) || !hm_plugin_range_ok(src, src_offset, size))
    return fail(dst->dev->ctx, HM_ABI_STATUS_OUT_OF_RANGE, "opencl: copy of %llu bytes out of range", (unsigned long long)size);
  if (!size) return HM_ABI_OK;
  if (dst->mem == src->mem && dst_offset < src_offset + size && src_offset < dst_offset + size) {
    /* OpenCL forbids overlapping copies within one buffer: go through the host. */
    void *tmp = malloc((size_t)size);
    if (!tmp) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
    int32_t st = ocl_buffer_read(src, src_offset, tmp, size);
    if (st == HM_ABI_OK) st = ocl_buffer_write(dst, dst_offset, tmp, size);
    free(tmp);
    return st;
  }
  cl_int e = clEnqueueCopyBuffer(dst->dev->queue, src->mem, dst->mem, (size_t)src_offset, (size_t)dst_offset, (size_t)size,
                                 0, NULL, NULL);
  if (e == CL_SUCCESS) e = clFinish(dst->dev->queue);
  return e == CL_SUCCESS ? HM_ABI_OK : fail(dst->dev->ctx, status_of(e), "opencl: copy: %s (%d)", cl_error_name(e), (int)e);
}

/* ===== Programs ===== */

static int buffer_size_of(void *self, const hm_abi_buffer *b, uint64_t *size) {
  const ocl_buffer *ob = (const ocl_buffer *)b;
  if (check_buffer(ob) || ob->dev != self) return 1;
  *size = ob->h.size;
  return 0;
}

static void ocl_program_free(hm_abi_program *p) {
  if (!p) return;
  for (uint32_t i = 0; i < p->n_launches; i++) {
    if (p->launches[i].kernel) clReleaseKernel(p->launches[i].kernel);
    if (p->launches[i].scratch) clReleaseMemObject(p->launches[i].scratch);
  }
  if (p->scalars_written) { /* scalars_host is read until the write is done */
    clWaitForEvents(1, &p->scalars_written);
    clReleaseEvent(p->scalars_written);
  }
  if (p->scalars) clReleaseMemObject(p->scalars);
  hm_print_launch_profile("opencl", p->dev->info->desc.name, p->times, p->n_launches, p->runs, p->span_ms, -1);
  free(p->times);
  free(p->events);
  atomic_fetch_sub(&p->dev->live_programs, 1);
  free(p->launches);
  free(p->scalars_host);
  free(p);
}

static int32_t ocl_program_create(hm_abi_device *dev, const hm_abi_program_desc *desc, hm_abi_program **out) {
  if (!dev || !desc || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  ocl_context *ctx = dev->ctx;
  size_t stride = 0;
  char pmsg[256];
  int32_t pst = hm_check_program_desc(desc, HM_PLUGIN_MAX_PROGRAM_OPS, &stride, pmsg, sizeof pmsg);
  if (pst) return fail(ctx, pst, "opencl: %s", pmsg);
  uint32_t n_caps = 0;
  const hm_abi_capability *caps = hm_kernel_caps(&n_caps);
  char msg[512];
  for (uint32_t i = 0; i < desc->n_ops; i++) {
    const hm_abi_op *op = hm_program_op(desc, stride, i);
    int32_t st = hm_check_op(op, i, desc->n_scalars, caps, n_caps, buffer_size_of, dev, 4, msg, sizeof msg);
    if (st) return fail(ctx, st, "opencl: %s", msg);
  }
  ocl_program *p = calloc(1, sizeof *p);
  if (!p) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  p->dev = dev;
  atomic_fetch_add(&dev->live_programs, 1);
  p->n_scalars = desc->n_scalars;
  p->launches = calloc(desc->n_ops ? desc->n_ops : 1, sizeof *p->launches);
  p->scalars_host = calloc(desc->n_scalars ? desc->n_scalars : 1, sizeof(float));
  cl_int e = 0;
  p->scalars = clCreateBuffer(dev->cl, CL_MEM_READ_ONLY, sizeof(float) * (desc->n_scalars ? desc->n_scalars : 1), NULL, &e);
  int32_t st = p->launches && p->scalars_host && p->scalars ? HM_ABI_OK : fail(ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "opencl: out of memory");
  uint32_t cap = desc->n_ops ? desc->n_ops : 1; /* launches: one per op, two for a split reduction */
  /* Not spread over few groups as on lavapipe: PoCL vectorizes a kernel
   * across its work-items only when each takes about one element (Adam over
   * 100k parameters: 0.30 ms with 797 groups, 0.67-0.79 ms with 64). */
  const hm_dispatch_limits limits = {.max_groups = MAX_GROUPS, .gemm_block = 8, .vec8 = 1};
  for (uint32_t i = 0; i < desc->n_ops && st == HM_ABI_OK; i++) {
    const hm_abi_op *op = hm_program_op(desc, stride, i);
    hm_dispatch d;
    if (hm_plan_dispatch_for(op, &limits, &d, msg, sizeof msg)) {
      st = fail(ctx, HM_ABI_STATUS_OUT_OF_RANGE, "opencl: op %u: %s", i, msg);
      break;
    }
    /* A GEMM with the bias (and activation) after it, or a bias and its activation, as one launch. */
    hm_abi_op fused;
    const hm_abi_op *next = i + 1 < desc->n_ops ? hm_program_op(desc, stride, i + 1) : NULL;
    const hm_abi_op *after = i + 2 < desc->n_ops ? hm_program_op(desc, stride, i + 2) : NULL;
    int absorbed = hm_plan_fusion(op, next, after, MAX_GROUPS, &d, &fused);
    if (absorbed) op = &fused;
    i += (uint32_t)absorbed;
    cl_mem bufs[6];
    for (int s = 0; s < 6 && st == HM_ABI_OK; s++) {
      const hm_abi_operand *o = s < 3 ? &op->in[s] : &op->out[s - 3];
      bufs[s] = o->buffer ? ((ocl_buffer *)o->buffer)->mem : dev->dummy;
      d.p.off[s] = o->buffer ? (uint32_t)(o->offset / 4) : 0;
      if (o->buffer && o->offset / 4 > UINT32_MAX) st = fail(ctx, HM_ABI_STATUS_OUT_OF_RANGE, "opencl: op %u: offset too large", i);
    }
    cl_mem scratch = NULL;
    if (st == HM_ABI_OK && d.scratch_words) {
      scratch = clCreateBuffer(dev->cl, CL_MEM_READ_WRITE, (size_t)d.scratch_words * 4, NULL, &e);
      if (!scratch)
        st = fail(ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "opencl: op %u: no scratch for a reduction (%d)", i, (int)e);
      bufs[5] = scratch;
    }
    for (uint32_t sl = 0; sl < d.slices && st == HM_ABI_OK; sl++) {
      if (p->n_launches == cap) {
        launch *grown = realloc(p->launches, 2 * cap * sizeof *grown);
        if (!grown) {
          st = fail(ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "opencl: out of memory");
          break;
        }
        memset(grown + cap, 0, cap * sizeof *grown);
        p->launches = grown;
        cap *= 2;
      }
      hm_kparams kp;
      uint32_t groups;
      hm_dispatch_slice(&d, sl, &kp, &groups);
      if (dev->profile) {
        hm_launch_time *grown = realloc(p->times, cap * sizeof *grown);
        if (!grown) {
          st = fail(ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "opencl: out of memory");
          break;
        }
        p->times = grown;
        p->times[p->n_launches] = (hm_launch_time){i - (uint32_t)absorbed, op->code, kp.variant, d.kernel, 0.0};
      }
      launch *l = &p->launches[p->n_launches];
      l->kernel = clCreateKernel(dev->program, hm_kernel_name(d.kernel), &e);
      if (!l->kernel) {
        st = fail(ctx, HM_ABI_STATUS_INTERNAL, "opencl: kernel '%s': %s (%d)", hm_kernel_name(d.kernel), cl_error_name(e),
                  (int)e);
        break;
      }
      p->n_launches++;
      if (scratch && clRetainMemObject(scratch) == CL_SUCCESS) l->scratch = scratch;
      for (int s = 0; s < 6 && e == CL_SUCCESS; s++)
        e = clSetKernelArg(l->kernel, (cl_uint)s, sizeof bufs[s], &bufs[s]);
      if (e == CL_SUCCESS) e = clSetKernelArg(l->kernel, 6, sizeof p->scalars, &p->scalars);
      if (e == CL_SUCCESS) e = clSetKernelArg(l->kernel, 7, sizeof kp, &kp);
      if (e != CL_SUCCESS)
        st = fail(ctx, HM_ABI_STATUS_INTERNAL, "opencl: op %u: arguments: %s (%d)", i, cl_error_name(e), (int)e);
      l->local = d.local_size;
      l->global = (size_t)groups * d.local_size;
    }
    if (scratch) clReleaseMemObject(scratch); /* the launches hold their references */
  }
  if (st == HM_ABI_OK && dev->profile && !(p->events = calloc(p->n_launches ? p->n_launches : 1, sizeof *p->events)))
    st = fail(ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "opencl: out of memory");
  if (st != HM_ABI_OK) {
    ocl_program_free(p);
    return st;
  }
  *out = p;
  return HM_ABI_OK;
}

/* profile=on: waits for the run and adds each launch's time (but not the
 * first run's), releasing the events. */
static cl_int add_profile(ocl_program *p) {
  cl_int e = clFinish(p->dev->queue);
  cl_ulong first = 0;
  for (uint32_t i = 0; i < p->n_launches; i++) {
    cl_ulong t0 = 0, t1 = 0;
    if (e == CL_SUCCESS)
      e = clGetEventProfilingInfo(p->events[i], CL_PROFILING_COMMAND_START, sizeof t0, &t0, NULL);
    if (e == CL_SUCCESS) e = clGetEventProfilingInfo(p->events[i], CL_PROFILING_COMMAND_END, sizeof t1, &t1, NULL);
    if (i == 0) first = t0;
    if (e == CL_SUCCESS && p->runs > 0) p->times[i].ms += (double)(t1 - t0) * 1e-6;
    if (e == CL_SUCCESS && p->runs > 0 && i + 1 == p->n_launches) p->span_ms += (double)(t1 - first) * 1e-6;
    if (p->events[i]) clReleaseEvent(p->events[i]);
    p->events[i] = NULL;
  }
  p->runs++;
  return e;
}

static int32_t ocl_program_run(hm_abi_program *p, const double *scalars, uint32_t n_scalars) {
  if (!p) return HM_ABI_STATUS_INVALID_ARGUMENT;
  ocl_device *dev = p->dev;
  if (n_scalars != p->n_scalars || (n_scalars && !scalars))
    return fail(dev->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "opencl: program_run got %u scalars, the program was created with %u",
                n_scalars, p->n_scalars);
  cl_int e = CL_SUCCESS;
  if (n_scalars) {
    /* Not waited for: the launches after it in the in-order queue see it
     * (a blocking write cost PoCL 0.07 ms a training step, a round trip to
     * its worker thread). scalars_host stays as it is until the write is
     * done, so the next run waits for that (long past, normally) first. */
    if (p->scalars_written) {
      e = clWaitForEvents(1, &p->scalars_written);
      clReleaseEvent(p->scalars_written);
      p->scalars_written = NULL;
    }
    for (uint32_t i = 0; i < n_scalars && e == CL_SUCCESS; i++) p->scalars_host[i] = (float)scalars[i];
    if (e == CL_SUCCESS)
      e = clEnqueueWriteBuffer(dev->queue, p->scalars, CL_FALSE, 0, n_scalars * sizeof(float), p->scalars_host, 0, NULL,
                               &p->scalars_written);
  }
  for (uint32_t i = 0; i < p->n_launches && e == CL_SUCCESS; i++)
    e = clEnqueueNDRangeKernel(dev->queue, p->launches[i].kernel, 1, NULL, &p->launches[i].global, &p->launches[i].local, 0,
                               NULL, p->events ? &p->events[i] : NULL);
  if (e == CL_SUCCESS) e = p->events ? add_profile(p) : clFlush(dev->queue);
  for (uint32_t i = 0; e != CL_SUCCESS && p->events && i < p->n_launches; i++)
    if (p->events[i]) { /* a failed run's profile is dropped */
      clReleaseEvent(p->events[i]);
      p->events[i] = NULL;
    }
  return e == CL_SUCCESS ? HM_ABI_OK : fail(dev->ctx, status_of(e), "opencl: program_run: %s (%d)", cl_error_name(e), (int)e);
}

static int32_t ocl_device_synchronize(hm_abi_device *dev) {
  if (!dev) return HM_ABI_STATUS_INVALID_ARGUMENT;
  cl_int e = clFinish(dev->queue);
  return e == CL_SUCCESS ? HM_ABI_OK : fail(dev->ctx, status_of(e), "opencl: finish: %s (%d)", cl_error_name(e), (int)e);
}

/* ===== Query ===== */

/* The plugin's entries: the versions are filled in by hm_plugin_answer_query. */
static const hm_abi_plugin plugin_table = HM_PLUGIN_TABLE(ocl, "opencl", HM_PLUGIN_VERSION, HM_BUILD_ID);

HM_ABI_EXPORT int32_t hm_plugin_query(const hm_abi_query *query, hm_abi_plugin *out) {
  return hm_plugin_answer_query(query, out, &plugin_table, PLUGIN_MIN_ABI);
}
