/*
 * The Vulkan backend: every ABI op as a GLSL compute shader
 * (plugins/common/kernels/hm_ops.kern with dialect_glsl.h), compiled to
 * SPIR-V at build time and embedded here. Pipelines are created on first use
 * and cached per device. A program is recorded once into a command buffer
 * (bind, push constants, dispatch, barrier per op); program_run writes the
 * dynamic scalars into a small host-visible buffer that every dispatch reads
 * and resubmits the same command buffer.
 *
 * The shaders use only 32-bit integers and floats (packed formats are decoded
 * with shifts), so they need no optional device feature and one variant runs
 * everywhere; the descriptor reports the optional features the device has.
 * Memory: buffers live in device-local memory; when that memory is also host
 * visible (integrated GPUs, lavapipe) reads and writes are direct, otherwise
 * they go through a staging buffer (device option memory=staging forces the
 * staging path, to test it anywhere). Device option profile=on puts timestamp
 * queries around every dispatch and prints the times when the program is
 * freed.
 *
 * Kernels read their inputs through uniform texel buffers (R32_UINT and
 * R32G32B32A32_UINT views of every buffer) where the device supports them
 * for the buffer's size (device option operands=storage reads storage
 * buffers instead), and each pipeline is specialized for its op's variant
 * and a GEMM's transposes (specialization constants). On lavapipe texel reads make GEMM 8-10x faster
 * (docs/plugins.md).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <vulkan/vulkan.h>

#include "dispatch.h"
#include "harmonics_abi.h"
#include "op_rules.h"
#include "plugin_util.h"

#define PLUGIN_MIN_ABI HM_ABI_MAKE_VERSION(1, 0)
#define MAX_DEVICES 16
#define BUFFER_MAGIC 0x564b4246u /* "VKBF" */
#define N_BINDINGS 18 /* b0..b5, the scalars, texel views: 4-word of b0, b1; 1-word of b0..b5; 4-word of b3..b5 */
#define N_STORAGE_BINDINGS 7     /* bindings 0..6 are storage buffers */
#define N_PIPE_VARIANTS 32       /* pipelines per kernel: texel or not x GEMM transposes x op variant */
#define MAX_GROUPS 1024u
#define CPU_GROUPS 64u /* hm_dispatch_limits.spread_groups for a CPU device */
/* Mesa's llvmpipe (lavapipe) ends any shader loop after 65535 iterations
 * (gallivm's loop limiter): long window ops are split below that. */
#define MAX_LOOP 20000u /* by our count; the limiter counts more (a conv stopped at 47k of ours) */

/* The SPIR-V of each kernel (vk_shaders.c, generated). */
extern const uint32_t *const hm_vk_spirv[HK_COUNT];
extern const size_t hm_vk_spirv_size[HK_COUNT];
extern const uint32_t *const hm_vk_spirv_texel[HK_COUNT]; /* the HM_TEXEL_OPERANDS builds */
extern const size_t hm_vk_spirv_texel_size[HK_COUNT];

typedef struct vk_device_info {
  VkPhysicalDevice phys;
  hm_abi_device_desc desc;
  uint32_t queue_family;
  VkDeviceSize max_range; /* maxStorageBufferRange */
  /* Texel views of up to this many elements (0: the device cannot read
   * R32_UINT and R32G32B32A32_UINT uniform texel buffers). */
  uint64_t texel_elements;
  /* The subgroup size where compute shaders have subgroupShuffle (8 or
   * more; hm_dispatch_limits.subgroup), else 0. */
  uint32_t subgroup;
} vk_device_info;

typedef struct hm_abi_context {
  hm_abi_host host;
  VkInstance instance;
  uint32_t n_devices;
  vk_device_info devices[MAX_DEVICES];
} vk_context;

typedef struct hm_abi_device {
  vk_context *ctx;
  const vk_device_info *info;
  VkDevice dev;
  VkQueue queue;
  VkCommandPool pool;
  VkFence fence;
  int pending; /* a submission may still run */
  VkDescriptorSetLayout set_layout;
  VkPipelineLayout layout;
  VkPipelineCache cache;
  VkShaderModule modules[HK_COUNT][2]; /* [texel operands] */
  /* Pipelines per kernel, by specialization (key: texel << 20 | GEMM flags << 8 | variant, plus 1). */
  uint32_t pipe_keys[HK_COUNT][N_PIPE_VARIANTS];
  VkPipeline pipes[HK_COUNT][N_PIPE_VARIANTS];
  int texel_operands; /* texel views are made and read (not operands=storage) */
  int profile;        /* device option profile=on: time every dispatch (below) */
  uint32_t subgroup;  /* hm_dispatch_limits.subgroup: the device's, or 0 with subgroups=off */
  double tick_ns;     /* timestampPeriod */
  VkPhysicalDeviceMemoryProperties mem;
  int force_staging;
  /* A buffer bound to unused operand slots, and the staging buffer. */
  VkBuffer dummy;
  VkDeviceMemory dummy_mem;
  VkBufferView dummy_views[2]; /* [words, texels] */
  VkBuffer staging;
  VkDeviceMemory staging_mem;
  void *staging_map;
  VkDeviceSize staging_size;
  VkCommandBuffer transfer;
  atomic_long live_buffers, live_programs;
} vk_device;

typedef struct hm_abi_buffer {
  hm_plugin_buffer_header h; /* first: magic and size */
  vk_device *dev;
  VkBuffer buf;
  VkDeviceMemory mem;
  void *map; /* non-NULL when host visible */
  /* Views for kernels' reads of inputs: R32_UINT and R32G32B32A32_UINT
   * (both null when the buffer is past the device's texel limit). */
  VkBufferView words, texels;
} vk_buffer;

typedef struct hm_abi_program {
  vk_device *dev;
  uint32_t n_scalars;
  VkDescriptorPool dpool;
  VkCommandBuffer cmd;
  VkBuffer scalars;
  VkDeviceMemory scalars_mem;
  float *scalars_map;
  /* Partial results of the program's split reductions (hm_dispatch.scratch_words), or null. */
  VkBuffer scratch;
  VkDeviceMemory scratch_mem;
  /* profile=on: a timestamp before and after each dispatch, and what each
   * dispatch is and took (hm_launch_time). */
  VkQueryPool queries;
  uint32_t n_dispatches, runs;
  hm_launch_time *times;
  double span_ms; /* first timestamp to last, summed like times[].ms */
  uint32_t barriers; /* recorded between dispatches */
} vk_program;

/* Reports through the host (plugin_util.h). */
#define fail(ctx, status, ...) hm_plugin_fail((ctx) ? &(ctx)->host : NULL, (status), __VA_ARGS__)

static int32_t status_of(VkResult r) {
  return r == VK_ERROR_OUT_OF_HOST_MEMORY || r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_TOO_MANY_OBJECTS
             ? HM_ABI_STATUS_RESOURCE_EXHAUSTED
         : r == VK_ERROR_DEVICE_LOST ? HM_ABI_STATUS_UNAVAILABLE
                                     : HM_ABI_STATUS_INTERNAL;
}

/* ===== Context ===== */

/* PCI vendor IDs, and the Khronos IDs (VkVendorId) of vendors without one. */
static const char *vendor_name(uint32_t id) {
  switch (id) {
    case 0x1002: return "AMD";
    case 0x10DE: return "NVIDIA";
    case 0x8086: return "Intel";
    case 0x13B5: return "ARM";
    case 0x5143: return "Qualcomm";
    case 0x1010: return "Imagination";
    case 0x106B: return "Apple";
    case 0x1AE0: return "Google";
    case 0x10001: return "Vivante";
    case 0x10002: return "VeriSilicon";
    case 0x10003: return "Kazan";
    case 0x10004: return "Codeplay";
    case 0x10005: return "Mesa";
    case 0x10006: return "PoCL";
    case 0x10007: return "Mobileye";
    default: return "vendor";
  }
}

static void describe(vk_device_info *di) {
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(di->phys, &props);
  VkPhysicalDeviceVulkan12Features f12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  VkPhysicalDeviceVulkan11Features f11 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, .pNext = &f12};
  VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f11};
  VkPhysicalDeviceSubgroupProperties sub = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sub};
  int v11 = props.apiVersion >= VK_API_VERSION_1_2;
  if (v11) vkGetPhysicalDeviceFeatures2(di->phys, &f2);
  vkGetPhysicalDeviceProperties2(di->phys, &p2); /* core in 1.1, which every device used has */
  const VkSubgroupFeatureFlags shuffle = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
  const uint32_t sg = sub.subgroupSize;
  int sg_ok = (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) && (sub.supportedOperations & shuffle) == shuffle;
  di->subgroup = sg_ok && sg >= 8 && sg <= 64 && !(sg & (sg - 1)) ? sg : 0;
  uint32_t n_ext = 0;
  vkEnumerateDeviceExtensionProperties(di->phys, NULL, &n_ext, NULL);
  VkExtensionProperties *ext = calloc(n_ext ? n_ext : 1, sizeof *ext);
  int coop = 0, dot = 0;
  if (ext && vkEnumerateDeviceExtensionProperties(di->phys, NULL, &n_ext, ext) == VK_SUCCESS)
    for (uint32_t i = 0; i < n_ext; i++) {
      if (!strcmp(ext[i].extensionName, "VK_KHR_cooperative_matrix") || !strcmp(ext[i].extensionName, "VK_NV_cooperative_matrix")) coop = 1;
      if (!strcmp(ext[i].extensionName, "VK_KHR_shader_integer_dot_product")) dot = 1;
    }
  free(ext);
  VkPhysicalDeviceMemoryProperties mem;
  vkGetPhysicalDeviceMemoryProperties(di->phys, &mem);
  uint64_t local = 0;
  for (uint32_t i = 0; i < mem.memoryHeapCount; i++)
    if (mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) local += mem.memoryHeaps[i].size;
  hm_abi_device_desc *d = &di->desc;
  memset(d, 0, sizeof *d);
  d->struct_size = sizeof *d;
  d->abi_version = HM_ABI_VERSION;
  hm_copy_text(d->name, sizeof d->name, props.deviceName);
  snprintf(d->vendor, sizeof d->vendor, "%s (0x%04x)", vendor_name(props.vendorID), props.vendorID);
  d->kind = props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU ? HM_ABI_DEVICE_CPU : HM_ABI_DEVICE_GPU;
  d->compute_units = 0;
  d->memory_bytes = local;
  di->max_range = props.limits.maxStorageBufferRange;
  VkFormatProperties f1, f4;
  vkGetPhysicalDeviceFormatProperties(di->phys, VK_FORMAT_R32_UINT, &f1);
  vkGetPhysicalDeviceFormatProperties(di->phys, VK_FORMAT_R32G32B32A32_UINT, &f4);
  di->texel_elements = (f1.bufferFeatures & f4.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT)
                           ? props.limits.maxTexelBufferElements : 0;
  d->max_buffer_bytes = props.limits.maxStorageBufferRange;
  static const char *types[] = {"other", "integrated-gpu", "discrete-gpu", "virtual-gpu", "cpu"};
  snprintf(d->features, sizeof d->features,
           "vulkan=%u.%u.%u type=%s driver=0x%x fp16=%s int8=%s storage8=%s storage16=%s int_dot=%s subgroup=%u "
           "coopmat=%s max_binding=%llu max_texel_elements=%llu max_wg=%u shaders=spirv-f32 packed=q8,q4,q3",
           VK_API_VERSION_MAJOR(props.apiVersion), VK_API_VERSION_MINOR(props.apiVersion),
           VK_API_VERSION_PATCH(props.apiVersion), props.deviceType <= 4 ? types[props.deviceType] : "?",
           props.driverVersion, v11 && f12.shaderFloat16 ? "yes" : "no", v11 && f12.shaderInt8 ? "yes" : "no",
           v11 && f12.storageBuffer8BitAccess ? "yes" : "no", v11 && f11.storageBuffer16BitAccess ? "yes" : "no",
           dot ? "yes" : "no", sub.subgroupSize, coop ? "yes" : "no",
           (unsigned long long)props.limits.maxStorageBufferRange, (unsigned long long)di->texel_elements,
           props.limits.maxComputeWorkGroupInvocations);
  uint32_t n_caps = 0;
  d->caps = hm_kernel_caps(&n_caps);
  d->n_caps = n_caps;
}

static int32_t vk_init(const hm_abi_init_args *args, hm_abi_context **out) {
  if (!args || !out || !args->host || !args->host->report) return HM_ABI_STATUS_INVALID_ARGUMENT;
  vk_context *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  ctx->host = *args->host;
  for (uint32_t i = 0; i < args->n_options; i++) {
    int32_t st = fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "vulkan: unknown option '%s' (none are known)",
                      args->options[i].key ? args->options[i].key : "");
    free(ctx);
    return st;
  }
  VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "harmonics",
                           .pEngineName = "harmonics", .apiVersion = VK_API_VERSION_1_2};
  VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &app};
  VkResult r = vkCreateInstance(&ici, NULL, &ctx->instance);
  if (r != VK_SUCCESS) {
    int32_t st = fail(ctx, HM_ABI_STATUS_UNAVAILABLE,
                      "vulkan: no Vulkan driver (vkCreateInstance returned %d%s): install a Vulkan ICD such as "
                      "mesa-vulkan-drivers or a GPU vendor's driver",
                      (int)r, r == VK_ERROR_INCOMPATIBLE_DRIVER ? ", VK_ERROR_INCOMPATIBLE_DRIVER" : "");
    free(ctx);
    return st;
  }
  uint32_t n = 0;
  vkEnumeratePhysicalDevices(ctx->instance, &n, NULL);
  VkPhysicalDevice phys[MAX_DEVICES];
  if (n > MAX_DEVICES) n = MAX_DEVICES;
  if (n) vkEnumeratePhysicalDevices(ctx->instance, &n, phys);
  for (uint32_t i = 0; i < n; i++) {
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(phys[i], &nq, NULL);
    VkQueueFamilyProperties qf[16];
    if (nq > 16) nq = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(phys[i], &nq, qf);
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(phys[i], &props);
    int family = -1;
    for (uint32_t q = 0; q < nq && family < 0; q++)
      if (qf[q].queueFlags & VK_QUEUE_COMPUTE_BIT) family = (int)q;
    /* The kernels need 128 invocations per group and a 112-byte parameter block. */
    if (family < 0 || props.limits.maxComputeWorkGroupInvocations < 128 || props.limits.maxPushConstantsSize < 112 ||
        props.apiVersion < VK_API_VERSION_1_1)
      continue;
    vk_device_info *di = &ctx->devices[ctx->n_devices++];
    di->phys = phys[i];
    di->queue_family = (uint32_t)family;
    describe(di);
  }
  if (ctx->n_devices == 0) {
    vkDestroyInstance(ctx->instance, NULL);
    int32_t st = fail(ctx, HM_ABI_STATUS_UNAVAILABLE, "vulkan: %u physical device(s), none with a usable compute queue", n);
    free(ctx);
    return st;
  }
  *out = ctx;
  return HM_ABI_OK;
}

static void vk_shutdown(hm_abi_context *ctx) {
  if (!ctx) return;
  vkDestroyInstance(ctx->instance, NULL);
  free(ctx);
}

static uint32_t vk_device_count(hm_abi_context *ctx) { return ctx ? ctx->n_devices : 0; }

static int32_t vk_device_describe(hm_abi_context *ctx, uint32_t index, hm_abi_device_desc *out) {
  if (!ctx || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (index >= ctx->n_devices) return fail(ctx, HM_ABI_STATUS_NOT_FOUND, "vulkan: no device %u (%u devices)", index, ctx->n_devices);
  if (out->struct_size < offsetof(hm_abi_device_desc, reserved))
    return fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "vulkan: device descriptor too small (%u bytes)", out->struct_size);
  hm_abi_device_desc d = ctx->devices[index].desc;
  d.struct_size = out->struct_size;
  memcpy(out, &d, out->struct_size < sizeof d ? out->struct_size : sizeof d);
  return HM_ABI_OK;
}

/* ===== Memory ===== */

static int find_memory(const vk_device *dev, uint32_t type_bits, VkMemoryPropertyFlags want) {
  for (uint32_t i = 0; i < dev->mem.memoryTypeCount; i++)
    if ((type_bits & (1u << i)) && (dev->mem.memoryTypes[i].propertyFlags & want) == want) return (int)i;
  return -1;
}

/* A buffer with memory: device local (and host visible if possible and
 * allowed), or host visible only when |host| is set. */
static VkResult make_buffer(vk_device *dev, VkDeviceSize size, int host, VkBuffer *buf, VkDeviceMemory *mem, void **map) {
  VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size,
                           .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                    VK_BUFFER_USAGE_TRANSFER_DST_BIT |
                                    (dev->texel_operands ? VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT : 0),
                           .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
  VkResult r = vkCreateBuffer(dev->dev, &bi, NULL, buf);
  if (r != VK_SUCCESS) return r;
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(dev->dev, *buf, &req);
  const VkMemoryPropertyFlags hv = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  int type = -1;
  if (host) type = find_memory(dev, req.memoryTypeBits, hv);
  else {
    if (!dev->force_staging) type = find_memory(dev, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | hv);
    if (type < 0) {
      type = find_memory(dev, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
      /* Forced staging must not map even if the type happens to be visible. */
    }
    if (type < 0) type = find_memory(dev, req.memoryTypeBits, 0);
  }
  if (type < 0) {
    vkDestroyBuffer(dev->dev, *buf, NULL);
    return VK_ERROR_OUT_OF_DEVICE_MEMORY;
  }
  VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size,
                             .memoryTypeIndex = (uint32_t)type};
  r = vkAllocateMemory(dev->dev, &ai, NULL, mem);
  if (r == VK_SUCCESS) r = vkBindBufferMemory(dev->dev, *buf, *mem, 0);
  *map = NULL;
  int visible = (dev->mem.memoryTypes[type].propertyFlags & hv) == hv;
  if (r == VK_SUCCESS && visible && (host || !dev->force_staging)) r = vkMapMemory(dev->dev, *mem, 0, VK_WHOLE_SIZE, 0, map);
  if (r != VK_SUCCESS) {
    vkDestroyBuffer(dev->dev, *buf, NULL);
    if (*mem) vkFreeMemory(dev->dev, *mem, NULL);
    *mem = VK_NULL_HANDLE;
  }
  return r;
}

/* The R32_UINT and R32G32B32A32_UINT views of a whole buffer that kernels
 * built with HM_TEXEL_OPERANDS read their inputs through. */
static VkResult make_texel_views(vk_device *dev, VkBuffer buf, VkBufferView *words, VkBufferView *texels) {
  VkBufferViewCreateInfo vi = {.sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO, .buffer = buf,
                               .format = VK_FORMAT_R32_UINT, .range = VK_WHOLE_SIZE};
  VkResult r = vkCreateBufferView(dev->dev, &vi, NULL, words);
  if (r != VK_SUCCESS) return r;
  vi.format = VK_FORMAT_R32G32B32A32_UINT;
  r = vkCreateBufferView(dev->dev, &vi, NULL, texels);
  if (r != VK_SUCCESS) {
    vkDestroyBufferView(dev->dev, *words, NULL);
    *words = VK_NULL_HANDLE;
  }
  return r;
}

/* Waits for the last submission of the device. */
static int32_t wait_idle(vk_device *dev) {
  if (!dev->pending) return HM_ABI_OK;
  VkResult r = vkWaitForFences(dev->dev, 1, &dev->fence, VK_TRUE, UINT64_MAX);
  dev->pending = 0;
  if (r != VK_SUCCESS) return fail(dev->ctx, status_of(r), "vulkan: waiting for the device failed (%d)", (int)r);
  return HM_ABI_OK;
}

static int32_t submit(vk_device *dev, VkCommandBuffer cmd, int wait) {
  int32_t st = wait_idle(dev);
  if (st) return st;
  vkResetFences(dev->dev, 1, &dev->fence);
  VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cmd};
  VkResult r = vkQueueSubmit(dev->queue, 1, &si, dev->fence);
  if (r != VK_SUCCESS) return fail(dev->ctx, status_of(r), "vulkan: vkQueueSubmit failed (%d)", (int)r);
  dev->pending = 1;
  return wait ? wait_idle(dev) : HM_ABI_OK;
}

static int32_t ensure_staging(vk_device *dev, VkDeviceSize size) {
  if (dev->staging_size >= size) return HM_ABI_OK;
  if (dev->staging) {
    vkDestroyBuffer(dev->dev, dev->staging, NULL);
    vkFreeMemory(dev->dev, dev->staging_mem, NULL);
    dev->staging = VK_NULL_HANDLE;
    dev->staging_size = 0;
  }
  VkDeviceSize want = size < (1u << 20) ? (1u << 20) : size;
  VkResult r = make_buffer(dev, want, 1, &dev->staging, &dev->staging_mem, &dev->staging_map);
  if (r != VK_SUCCESS) return fail(dev->ctx, status_of(r), "vulkan: no staging memory for %llu bytes (%d)", (unsigned long long)size, (int)r);
  dev->staging_size = want;
  return HM_ABI_OK;
}

/* One-shot transfer: copy |size| bytes between two buffers and wait. */
static int32_t copy_now(vk_device *dev, VkBuffer src, VkDeviceSize so, VkBuffer dst, VkDeviceSize doff, VkDeviceSize size) {
  int32_t st = wait_idle(dev);
  if (st) return st;
  VkCommandBuffer c = dev->transfer;
  vkResetCommandBuffer(c, 0);
  VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                 .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
  vkBeginCommandBuffer(c, &bi);
  VkBufferCopy region = {so, doff, size};
  vkCmdCopyBuffer(c, src, dst, 1, &region);
  vkEndCommandBuffer(c);
  return submit(dev, c, 1);
}

/* ===== Devices ===== */

static void vk_device_close(hm_abi_device *dev) {
  if (!dev) return;
  if (dev->dev) {
    vkDeviceWaitIdle(dev->dev);
    for (int k = 0; k < HK_COUNT; k++) {
      for (int v = 0; v < N_PIPE_VARIANTS; v++)
        if (dev->pipes[k][v]) vkDestroyPipeline(dev->dev, dev->pipes[k][v], NULL);
      for (int t = 0; t < 2; t++)
        if (dev->modules[k][t]) vkDestroyShaderModule(dev->dev, dev->modules[k][t], NULL);
    }
    if (dev->staging) vkDestroyBuffer(dev->dev, dev->staging, NULL);
    if (dev->staging_mem) vkFreeMemory(dev->dev, dev->staging_mem, NULL);
    for (int v = 0; v < 2; v++)
      if (dev->dummy_views[v]) vkDestroyBufferView(dev->dev, dev->dummy_views[v], NULL);
    if (dev->dummy) vkDestroyBuffer(dev->dev, dev->dummy, NULL);
    if (dev->dummy_mem) vkFreeMemory(dev->dev, dev->dummy_mem, NULL);
    if (dev->cache) vkDestroyPipelineCache(dev->dev, dev->cache, NULL);
    if (dev->layout) vkDestroyPipelineLayout(dev->dev, dev->layout, NULL);
    if (dev->set_layout) vkDestroyDescriptorSetLayout(dev->dev, dev->set_layout, NULL);
    if (dev->fence) vkDestroyFence(dev->dev, dev->fence, NULL);
    if (dev->pool) vkDestroyCommandPool(dev->dev, dev->pool, NULL);
    vkDestroyDevice(dev->dev, NULL);
  }
  free(dev);
}

static int32_t vk_device_open(hm_abi_context *ctx, uint32_t index, const hm_abi_option *options, uint32_t n_options,
                              hm_abi_device **out) {
  if (!ctx || !out || (n_options && !options)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (index >= ctx->n_devices) return fail(ctx, HM_ABI_STATUS_NOT_FOUND, "vulkan: no device %u", index);
  int force_staging = 0, storage_operands = 0, profile = 0, no_subgroups = 0;
  for (uint32_t i = 0; i < n_options; i++) {
    const char *k = options[i].key ? options[i].key : "", *v = options[i].value ? options[i].value : "";
    if (!strcmp(k, "threads")) continue; /* offered to every device; not used here */
    if (!strcmp(k, "memory") && (!strcmp(v, "auto") || !strcmp(v, "staging"))) {
      force_staging = !strcmp(v, "staging");
      continue;
    }
    if (!strcmp(k, "operands") && (!strcmp(v, "auto") || !strcmp(v, "storage"))) {
      storage_operands = !strcmp(v, "storage");
      continue;
    }
    if (!strcmp(k, "profile") && (!strcmp(v, "off") || !strcmp(v, "on"))) {
      profile = !strcmp(v, "on");
      continue;
    }
    if (!strcmp(k, "subgroups") && (!strcmp(v, "auto") || !strcmp(v, "off"))) {
      no_subgroups = !strcmp(v, "off");
      continue;
    }
    return fail(ctx, HM_ABI_STATUS_INVALID_ARGUMENT,
                "vulkan: bad device option %s='%s' (known: memory=auto|staging, operands=auto|storage, profile=off|on, "
                "subgroups=auto|off)",
                k, v);
  }
  const vk_device_info *info = &ctx->devices[index];
  if (profile) { /* timestamps need a queue family that writes them */
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(info->phys, &nq, NULL);
    VkQueueFamilyProperties *qf = calloc(nq ? nq : 1, sizeof *qf);
    if (!qf) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
    vkGetPhysicalDeviceQueueFamilyProperties(info->phys, &nq, qf);
    uint32_t bits = info->queue_family < nq ? qf[info->queue_family].timestampValidBits : 0;
    free(qf);
    if (!bits)
      return fail(ctx, HM_ABI_STATUS_UNIMPLEMENTED,
                  "vulkan: profile=on: '%s' writes no timestamps on its compute queue", info->desc.name);
  }
  vk_device *dev = calloc(1, sizeof *dev);
  if (!dev) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  dev->ctx = ctx;
  dev->info = &ctx->devices[index];
  dev->force_staging = force_staging;
  dev->texel_operands = !storage_operands && dev->info->texel_elements > 0;
  dev->profile = profile;
  dev->subgroup = no_subgroups ? 0 : dev->info->subgroup;
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(dev->info->phys, &props);
  dev->tick_ns = props.limits.timestampPeriod;
  vkGetPhysicalDeviceMemoryProperties(dev->info->phys, &dev->mem);
  float prio = 1.0f;
  VkDeviceQueueCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = dev->info->queue_family,
                                .queueCount = 1, .pQueuePriorities = &prio};
  VkDeviceCreateInfo di = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .queueCreateInfoCount = 1, .pQueueCreateInfos = &qi};
  VkResult r = vkCreateDevice(dev->info->phys, &di, NULL, &dev->dev);
  if (r == VK_SUCCESS) {
    vkGetDeviceQueue(dev->dev, dev->info->queue_family, 0, &dev->queue);
    VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                  .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                  .queueFamilyIndex = dev->info->queue_family};
    r = vkCreateCommandPool(dev->dev, &pi, NULL, &dev->pool);
  }
  if (r == VK_SUCCESS) {
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    r = vkCreateFence(dev->dev, &fi, NULL, &dev->fence);
  }
  if (r == VK_SUCCESS) {
    VkDescriptorSetLayoutBinding b[N_BINDINGS];
    for (uint32_t i = 0; i < N_BINDINGS; i++)
      b[i] = (VkDescriptorSetLayoutBinding){i, i < N_STORAGE_BINDINGS ? VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
                                                                       : VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER,
                                            1, VK_SHADER_STAGE_COMPUTE_BIT, NULL};
    VkDescriptorSetLayoutCreateInfo li = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                          .bindingCount = dev->texel_operands ? N_BINDINGS : N_STORAGE_BINDINGS,
                                          .pBindings = b};
    r = vkCreateDescriptorSetLayout(dev->dev, &li, NULL, &dev->set_layout);
  }
  if (r == VK_SUCCESS) {
    VkPushConstantRange pc = {VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(hm_kparams)};
    VkPipelineLayoutCreateInfo pli = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, .setLayoutCount = 1,
                                      .pSetLayouts = &dev->set_layout, .pushConstantRangeCount = 1, .pPushConstantRanges = &pc};
    r = vkCreatePipelineLayout(dev->dev, &pli, NULL, &dev->layout);
  }
  if (r == VK_SUCCESS) {
    VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
    r = vkCreatePipelineCache(dev->dev, &ci, NULL, &dev->cache);
  }
  if (r == VK_SUCCESS) {
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = dev->pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1};
    r = vkAllocateCommandBuffers(dev->dev, &ai, &dev->transfer);
  }
  if (r == VK_SUCCESS) r = make_buffer(dev, 256, 0, &dev->dummy, &dev->dummy_mem, &(void *){NULL});
  if (r == VK_SUCCESS && dev->texel_operands)
    r = make_texel_views(dev, dev->dummy, &dev->dummy_views[0], &dev->dummy_views[1]);
  if (r != VK_SUCCESS) {
    int32_t st = fail(ctx, status_of(r), "vulkan: cannot open '%s' (%d)", dev->info->desc.name, (int)r);
    vk_device_close(dev);
    return st;
  }
  *out = dev;
  return HM_ABI_OK;
}

/* One pipeline to create: its create info (specialization included) and
 * where it goes. */
typedef struct pipe_job {
  uint32_t values[2];
  VkSpecializationMapEntry entries[2];
  VkSpecializationInfo spec;
  VkComputePipelineCreateInfo ci;
  hm_kernel_id kernel;
  int slot;
  uint32_t key;
  VkPipeline pipe;
  VkResult result;
} pipe_job;

/* A GEMM's flags as its specialization constant: the transposes and HM_KFLAG_C_X4. */
static uint32_t spec_gemm_flags(uint32_t flags) { return flags & (3u | HM_KFLAG_C_X4); }

/* The slot and cache key of a pipeline (see pipeline()): *slot is -1 when
 * the kernel's N_PIPE_VARIANTS slots are taken by others. */
static uint32_t pipe_slot(const vk_device *dev, hm_kernel_id k, int texel, uint32_t gemm_flags, uint32_t variant,
                          int *slot) {
  uint32_t key = ((texel ? 1u : 0u) << 20 | spec_gemm_flags(gemm_flags) << 8 | variant) + 1u;
  *slot = -1;
  for (int i = 0; i < N_PIPE_VARIANTS && *slot < 0; i++)
    if (dev->pipe_keys[k][i] == key || !dev->pipe_keys[k][i]) *slot = i;
  return key;
}

/* Fills |j| for kernel |k|'s pipeline, creating its shader module first. */
static VkResult pipe_job_init(vk_device *dev, hm_kernel_id k, int texel, uint32_t gemm_flags, uint32_t variant,
                              pipe_job *j) {
  VkShaderModule *module = &dev->modules[k][texel ? 1 : 0];
  if (!*module) {
    VkShaderModuleCreateInfo mi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                   .codeSize = texel ? hm_vk_spirv_texel_size[k] : hm_vk_spirv_size[k],
                                   .pCode = texel ? hm_vk_spirv_texel[k] : hm_vk_spirv[k]};
    VkResult r = vkCreateShaderModule(dev->dev, &mi, NULL, module);
    if (r != VK_SUCCESS) return r;
  }
  j->values[0] = spec_gemm_flags(gemm_flags);
  j->values[1] = variant;
  j->entries[0] = (VkSpecializationMapEntry){0, 0, sizeof(uint32_t)};
  j->entries[1] = (VkSpecializationMapEntry){1, sizeof(uint32_t), sizeof(uint32_t)};
  j->spec = (VkSpecializationInfo){2, j->entries, sizeof j->values, j->values};
  j->ci = (VkComputePipelineCreateInfo){
      .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
      .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                .module = *module, .pName = "main", .pSpecializationInfo = &j->spec},
      .layout = dev->layout};
  j->kernel = k;
  j->pipe = VK_NULL_HANDLE;
  j->result = VK_SUCCESS;
  return VK_SUCCESS;
}

/* The pipeline of kernel |k| specialized for GEMM flags |gemm_flags| (the
 * transposes; 0 for other kernels) and op variant |variant| (dialect_glsl.h),
 * built with texel operands or not; created on first use (or ahead, several
 * at once, by create_pipelines). */
static int32_t pipeline(vk_device *dev, hm_kernel_id k, int texel, uint32_t gemm_flags, uint32_t variant,
                        VkPipeline *out) {
  if (variant > 255u)
    return fail(dev->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "vulkan: variant %u of '%s' out of range", variant,
                hm_kernel_name(k));
  int slot;
  uint32_t key = pipe_slot(dev, k, texel, gemm_flags, variant, &slot);
  if (slot < 0)
    return fail(dev->ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED, "vulkan: more than %d pipelines of '%s'", N_PIPE_VARIANTS,
                hm_kernel_name(k));
  VkPipeline *pipe = &dev->pipes[k][slot];
  if (*pipe) {
    *out = *pipe;
    return HM_ABI_OK;
  }
  pipe_job j;
  VkResult r = pipe_job_init(dev, k, texel, gemm_flags, variant, &j);
  if (r == VK_SUCCESS) r = vkCreateComputePipelines(dev->dev, dev->cache, 1, &j.ci, NULL, pipe);
  if (r != VK_SUCCESS) return fail(dev->ctx, status_of(r), "vulkan: pipeline '%s' failed (%d)", hm_kernel_name(k), (int)r);
  dev->pipe_keys[k][slot] = key;
  *out = *pipe;
  return HM_ABI_OK;
}

typedef struct pipe_jobs {
  vk_device *dev;
  pipe_job *job;
  const uint32_t *order; /* the jobs, dearest first */
  uint32_t n;
  atomic_uint next;
} pipe_jobs;

static void *pipe_worker(void *arg) {
  pipe_jobs *js = arg;
  for (uint32_t i; (i = atomic_fetch_add(&js->next, 1u)) < js->n;) {
    pipe_job *j = &js->job[js->order[i]];
    j->result = vkCreateComputePipelines(js->dev->dev, js->dev->cache, 1, &j->ci, NULL, &j->pipe);
  }
  return NULL;
}

/* How dear a kernel's pipeline is to create, 0..3 (lavapipe: 11-16 ms for
 * gemm_sg, 6-8 for gemm_x4, 4-6 for gemm_reg and the loss, 1-2.5 for the
 * others). */
static int pipe_cost_rank(hm_kernel_id k) {
  if (k == HK_GEMM_SG || k == HK_GEMM_X8 || k == HK_GEMM_DOT) return 3;
  if (k == HK_GEMM_X4 || k == HK_GEMM_QX4) return 2;
  if (hm_kernel_is_gemm(k) || k == HK_LOSS) return 1;
  return 0;
}

/* Creates the pipelines a program's launches need and the device lacks,
 * on up to one thread per CPU: a driver compiles each pipeline on the
 * calling thread (lavapipe: 4-12 ms for a GEMM, 1-5 for the others, about
 * 50-60 ms for the example's training program one after another), and
 * Vulkan lets pipelines be created concurrently. Does nothing it cannot
 * do: a pipeline that fails here is created again, and its error
 * reported, when the program is recorded. The dearest (pipe_cost_rank)
 * start first, so no thread is left with a GEMM at the end while the
 * others wait: the example's 12 took 22.8-26.1 ms, 24.1-37.6 in op order. */
static void create_pipelines(vk_device *dev, pipe_job *job, uint32_t n) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  uint32_t threads = cpus < 1 ? 1u : cpus > 8 ? 8u : (uint32_t)cpus;
  if (threads > n) threads = n;
  uint32_t *order = malloc(n * sizeof *order);
  if (!order) { /* none created: recording creates them one by one */
    for (uint32_t i = 0; i < n; i++) dev->pipe_keys[job[i].kernel][job[i].slot] = 0u;
    return;
  }
  uint32_t no = 0;
  for (int rank = 3; rank >= 0; rank--)
    for (uint32_t i = 0; i < n; i++)
      if (pipe_cost_rank(job[i].kernel) == rank) order[no++] = i;
  pipe_jobs js = {dev, job, order, n, 0};
  pthread_t tid[8];
  uint32_t started = 0;
  while (started + 1 < threads && pthread_create(&tid[started], NULL, pipe_worker, &js) == 0) started++;
  pipe_worker(&js);
  for (uint32_t t = 0; t < started; t++) pthread_join(tid[t], NULL);
  free(order);
  for (uint32_t i = 0; i < n; i++)
    if (job[i].result == VK_SUCCESS) {
      dev->pipes[job[i].kernel][job[i].slot] = job[i].pipe;
      dev->pipe_keys[job[i].kernel][job[i].slot] = job[i].key;
    } else {
      if (job[i].pipe) vkDestroyPipeline(dev->dev, job[i].pipe, NULL);
      dev->pipe_keys[job[i].kernel][job[i].slot] = 0u;
    }
}

/* ===== Buffers ===== */

static int check_buffer(const vk_buffer *b) { return !hm_plugin_buffer_ok(b, BUFFER_MAGIC); }

static int32_t vk_buffer_alloc(hm_abi_device *dev, uint64_t size, hm_abi_buffer **out) {
  if (!dev || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (size == 0) return fail(dev->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "vulkan: buffer size must be > 0");
  /* Shaders address 32-bit words, texel views 16-byte elements. */
  uint64_t alloc = (size + 15) & ~(uint64_t)15;
  if (size > UINT64_MAX - 16 || alloc > dev->info->max_range)
    return fail(dev->ctx, HM_ABI_STATUS_RESOURCE_EXHAUSTED,
                "vulkan: buffer of %llu bytes exceeds the device's storage-buffer range (%llu bytes)",
                (unsigned long long)size, (unsigned long long)dev->info->max_range);
  vk_buffer *b = calloc(1, sizeof *b);
  if (!b) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  VkResult r = make_buffer(dev, alloc, 0, &b->buf, &b->mem, &b->map);
  /* A buffer past the device's texel-view limit is read as storage. */
  if (r == VK_SUCCESS && dev->texel_operands && alloc / 4 <= dev->info->texel_elements &&
      (r = make_texel_views(dev, b->buf, &b->words, &b->texels)) != VK_SUCCESS) {
    vkDestroyBuffer(dev->dev, b->buf, NULL);
    vkFreeMemory(dev->dev, b->mem, NULL);
  }
  if (r != VK_SUCCESS) {
    free(b);
    return fail(dev->ctx, status_of(r), "vulkan: cannot allocate %llu bytes (%d)", (unsigned long long)size, (int)r);
  }
  b->h.magic = BUFFER_MAGIC;
  b->dev = dev;
  b->h.size = size;
  atomic_fetch_add(&dev->live_buffers, 1);
  *out = b;
  return HM_ABI_OK;
}

static void vk_buffer_free(hm_abi_buffer *b) {
  if (check_buffer(b)) return;
  vk_device *dev = b->dev;
  (void)wait_idle(dev);
  atomic_fetch_sub(&dev->live_buffers, 1);
  b->h.magic = 0;
  if (b->texels) vkDestroyBufferView(dev->dev, b->texels, NULL);
  if (b->words) vkDestroyBufferView(dev->dev, b->words, NULL);
  vkDestroyBuffer(dev->dev, b->buf, NULL);
  vkFreeMemory(dev->dev, b->mem, NULL);
  free(b);
}


static int32_t vk_buffer_write(hm_abi_buffer *b, uint64_t offset, const void *src, uint64_t size) {
  if (check_buffer(b) || (!src && size)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (!hm_plugin_range_ok(b, offset, size))
    return fail(b->dev->ctx, HM_ABI_STATUS_OUT_OF_RANGE, "vulkan: write of %llu bytes at offset %llu exceeds buffer size %llu",
                (unsigned long long)size, (unsigned long long)offset, (unsigned long long)b->h.size);
  if (!size) return HM_ABI_OK;
  vk_device *dev = b->dev;
  int32_t st = wait_idle(dev);
  if (st) return st;
  if (b->map) {
    memcpy((char *)b->map + offset, src, (size_t)size);
    return HM_ABI_OK;
  }
  if ((st = ensure_staging(dev, size))) return st;
  memcpy(dev->staging_map, src, (size_t)size);
  return copy_now(dev, dev->staging, 0, b->buf, offset, size);
}

static int32_t vk_buffer_read(hm_abi_buffer *b, uint64_t offset, void *dst, uint64_t size) {
  if (check_buffer(b) || (!dst && size)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (!hm_plugin_range_ok(b, offset, size))
    return fail(b->dev->ctx, HM_ABI_STATUS_OUT_OF_RANGE, "vulkan: read of %llu bytes at offset %llu exceeds buffer size %llu",
                (unsigned long long)size, (unsigned long long)offset, (unsigned long long)b->h.size);
  if (!size) return HM_ABI_OK;
  vk_device *dev = b->dev;
  int32_t st = wait_idle(dev);
  if (st) return st;
  if (b->map) {
    memcpy(dst, (const char *)b->map + offset, (size_t)size);
    return HM_ABI_OK;
  }
  if ((st = ensure_staging(dev, size)) || (st = copy_now(dev, b->buf, offset, dev->staging, 0, size))) return st;
  memcpy(dst, dev->staging_map, (size_t)size);
  return HM_ABI_OK;
}

static int32_t vk_buffer_copy(hm_abi_buffer *dst, uint64_t dst_offset, hm_abi_buffer *src, uint64_t src_offset, uint64_t size) {
  if (check_buffer(dst) || check_buffer(src)) return HM_ABI_STATUS_INVALID_ARGUMENT;
  if (dst->dev != src->dev) return fail(dst->dev->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "vulkan: copy between different devices");
  if (!hm_plugin_range_ok(dst, dst_offset, size) || !hm_plugin_range_ok(src, src_offset, size))
    return fail(dst->dev->ctx, HM_ABI_STATUS_OUT_OF_RANGE, "vulkan: copy of %llu bytes out of range", (unsigned long long)size);
  if (!size) return HM_ABI_OK;
  if (dst->buf == src->buf && dst_offset < src_offset + size && src_offset < dst_offset + size) {
    /* Overlapping regions of one buffer: vkCmdCopyBuffer forbids it. */
    void *tmp = malloc((size_t)size);
    if (!tmp) return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
    int32_t st = vk_buffer_read(src, src_offset, tmp, size);
    if (st == HM_ABI_OK) st = vk_buffer_write(dst, dst_offset, tmp, size);
    free(tmp);
    return st;
  }
  return copy_now(dst->dev, src->buf, src_offset, dst->buf, dst_offset, size);
}

/* ===== Programs ===== */

static int buffer_size_of(void *self, const hm_abi_buffer *b, uint64_t *size) {
  const vk_buffer *vb = (const vk_buffer *)b;
  if (check_buffer(vb) || vb->dev != self) return 1;
  *size = vb->h.size;
  return 0;
}

/* Makes the writes of the dispatches before visible to the ones after. */
static void record_barrier(VkCommandBuffer cmd) {
  VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT};
  vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &mb, 0, NULL,
                       0, NULL);
}

static void vk_program_free(hm_abi_program *p) {
  if (!p) return;
  vk_device *dev = p->dev;
  (void)wait_idle(dev);
  hm_print_launch_profile("vulkan", dev->info->desc.name, p->times, p->n_dispatches, p->runs, p->span_ms,
                          (int)p->barriers);
  if (p->queries) vkDestroyQueryPool(dev->dev, p->queries, NULL);
  free(p->times);
  if (p->cmd) vkFreeCommandBuffers(dev->dev, dev->pool, 1, &p->cmd);
  if (p->dpool) vkDestroyDescriptorPool(dev->dev, p->dpool, NULL);
  if (p->scalars) vkDestroyBuffer(dev->dev, p->scalars, NULL);
  if (p->scalars_mem) vkFreeMemory(dev->dev, p->scalars_mem, NULL);
  if (p->scratch) vkDestroyBuffer(dev->dev, p->scratch, NULL);
  if (p->scratch_mem) vkFreeMemory(dev->dev, p->scratch_mem, NULL);
  atomic_fetch_sub(&dev->live_programs, 1);
  free(p);
}

/* Whether a launch binds the texel build: when every operand has views
 * (unused slots read the dummy's); its operands' buffers into opd. */
static int launch_texel(const vk_device *dev, const hm_abi_op *op, const vk_buffer *opd[6]) {
  int texel = dev->texel_operands;
  for (int s = 0; s < 6; s++) {
    opd[s] = (const vk_buffer *)(s < 3 ? op->in[s].buffer : op->out[s - 3].buffer);
    if (opd[s] && !opd[s]->words) texel = 0;
  }
  return texel;
}

/* The pipelines a program's launches (plan, bind) need that the device has
 * not created yet, created together (create_pipelines). */
static void create_program_pipelines(vk_device *dev, const hm_dispatch *plan, const hm_abi_op *bind, uint32_t n_ops) {
  uint32_t cap = 0, n = 0;
  for (uint32_t i = 0; i < n_ops; i++) cap += plan[i].slices;
  pipe_job *job = cap ? calloc(cap, sizeof *job) : NULL;
  if (!job) return;
  for (uint32_t i = 0; i < n_ops; i++)
    for (uint32_t sl = 0; sl < plan[i].slices; sl++) {
      hm_kparams kp;
      uint32_t groups;
      const vk_buffer *opd[6];
      hm_kernel_id k = plan[i].kernel;
      int texel = launch_texel(dev, &bind[i], opd), slot;
      hm_dispatch_slice(&plan[i], sl, &kp, &groups);
      if (kp.variant > 255u) continue;
      uint32_t key = pipe_slot(dev, k, texel, hm_kernel_is_gemm(k) ? kp.flags : 0u, kp.variant, &slot);
      if (slot < 0 || dev->pipes[k][slot]) continue;
      int queued = 0;
      for (uint32_t j = 0; j < n && !queued; j++) queued = job[j].kernel == k && job[j].slot == slot;
      if (queued) continue;
      if (pipe_job_init(dev, k, texel, hm_kernel_is_gemm(k) ? kp.flags : 0u, kp.variant, &job[n]) != VK_SUCCESS)
        continue;
      job[n].slot = slot;
      job[n].key = key;
      dev->pipe_keys[k][slot] = key; /* reserved; create_pipelines clears it on failure */
      n++;
    }
  if (n) create_pipelines(dev, job, n);
  free(job);
}

static int32_t vk_program_create(hm_abi_device *dev, const hm_abi_program_desc *desc, hm_abi_program **out) {
  if (!dev || !desc || !out) return HM_ABI_STATUS_INVALID_ARGUMENT;
  vk_context *ctx = dev->ctx;
  size_t stride = 0;
  char pmsg[256];
  int32_t pst = hm_check_program_desc(desc, HM_PLUGIN_MAX_PROGRAM_OPS, &stride, pmsg, sizeof pmsg);
  if (pst) return fail(ctx, pst, "vulkan: %s", pmsg);
  uint32_t n_caps = 0;
  const hm_abi_capability *caps = hm_kernel_caps(&n_caps);
  char msg[512];
  hm_dispatch *plan = calloc(desc->n_ops ? desc->n_ops : 1, sizeof *plan);
  /* With texel operands, loads are cheap enough that 4x4 GEMM blocks win.
   * On a CPU (lavapipe) each work-group costs a call of the compiled
   * shader: a grid of a few dozen groups, each invocation looping over more
   * elements, made the training step's Adam over 100k parameters 1.81-2.13
   * -> 1.22-1.35 ms (docs/plugins.md). */
  const hm_dispatch_limits limits = {.max_groups = MAX_GROUPS, .max_loop = MAX_LOOP,
                                     .gemm_block = dev->texel_operands ? 4 : 8,
                                     .spread_groups = dev->info->desc.kind == HM_ABI_DEVICE_CPU ? CPU_GROUPS : 0,
                                     .subgroup = dev->subgroup};
  /* The op each launch binds: the program's own, or a fused pair's. */
  hm_abi_op *bind = calloc(desc->n_ops ? desc->n_ops : 1, sizeof *bind);
  if (!plan || !bind) {
    free(plan);
    free(bind);
    return HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  }
  int32_t st = HM_ABI_OK;
  for (uint32_t i = 0; i < desc->n_ops && st == HM_ABI_OK; i++) {
    const hm_abi_op *op = hm_program_op(desc, stride, i);
    if ((st = hm_check_op(op, i, desc->n_scalars, caps, n_caps, buffer_size_of, dev, 4, msg, sizeof msg)))
      st = fail(ctx, st, "vulkan: %s", msg);
    else if (hm_plan_dispatch_for(op, &limits, &plan[i], msg, sizeof msg))
      st = fail(ctx, HM_ABI_STATUS_OUT_OF_RANGE, "vulkan: op %u: %s", i, msg);
    bind[i] = *op;
  }
  /* A GEMM takes the bias (and activation) after it into its store, or a
   * bias and the activation after it run as one launch; the ops absorbed
   * keep an empty plan (no slices). */
  for (uint32_t i = 0; i + 1 < desc->n_ops && st == HM_ABI_OK; i++) {
    hm_abi_op fused;
    int absorbed = hm_plan_fusion(&bind[i], &bind[i + 1], i + 2 < desc->n_ops ? &bind[i + 2] : NULL, MAX_GROUPS,
                                  &plan[i], &fused);
    if (!absorbed) continue;
    bind[i] = fused;
    for (int j = 0; j < absorbed; j++) plan[++i].slices = 0;
  }
  for (uint32_t i = 0; i < desc->n_ops && st == HM_ABI_OK; i++)
    for (int s = 0; s < 6; s++) {
      const hm_abi_operand *o = s < 3 ? &bind[i].in[s] : &bind[i].out[s - 3];
      plan[i].p.off[s] = o->buffer ? (uint32_t)(o->offset / 4) : 0;
    }
  if (st == HM_ABI_OK) create_program_pipelines(dev, plan, bind, desc->n_ops);
  vk_program *p = st == HM_ABI_OK ? calloc(1, sizeof *p) : NULL;
  if (st == HM_ABI_OK && !p) st = HM_ABI_STATUS_RESOURCE_EXHAUSTED;
  if (st != HM_ABI_OK) {
    free(plan);
    free(bind);
    return st;
  }
  p->dev = dev;
  p->n_scalars = desc->n_scalars;
  atomic_fetch_add(&dev->live_programs, 1);
  VkResult r = make_buffer(dev, sizeof(float) * (desc->n_scalars ? desc->n_scalars : 1), 1, &p->scalars, &p->scalars_mem,
                           (void **)&p->scalars_map);
  uint32_t n_sets = desc->n_ops ? desc->n_ops : 1;
  if (r == VK_SUCCESS) {
    VkDescriptorPoolSize ps[2] = {{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, n_sets * N_STORAGE_BINDINGS},
                                  {VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, n_sets * (N_BINDINGS - N_STORAGE_BINDINGS)}};
    VkDescriptorPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = n_sets,
                                     .poolSizeCount = dev->texel_operands ? 2 : 1, .pPoolSizes = ps};
    r = vkCreateDescriptorPool(dev->dev, &pi, NULL, &p->dpool);
  }
  if (r == VK_SUCCESS) {
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = dev->pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1};
    r = vkAllocateCommandBuffers(dev->dev, &ai, &p->cmd);
  }
  uint32_t scratch_words = 0;
  for (uint32_t i = 0; i < desc->n_ops; i++)
    if (plan[i].scratch_words > scratch_words) scratch_words = plan[i].scratch_words;
  if (r == VK_SUCCESS && scratch_words)
    r = make_buffer(dev, (VkDeviceSize)scratch_words * 4, 0, &p->scratch, &p->scratch_mem, &(void *){NULL});
  for (uint32_t i = 0; i < desc->n_ops; i++) p->n_dispatches += plan[i].slices;
  if (r == VK_SUCCESS && dev->profile && p->n_dispatches) {
    p->times = calloc(p->n_dispatches, sizeof *p->times);
    VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO, .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                .queryCount = 2 * p->n_dispatches};
    r = p->times ? vkCreateQueryPool(dev->dev, &qi, NULL, &p->queries) : VK_ERROR_OUT_OF_HOST_MEMORY;
  }
  if (r == VK_SUCCESS) {
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    r = vkBeginCommandBuffer(p->cmd, &bi);
  }
  if (r == VK_SUCCESS && p->queries) vkCmdResetQueryPool(p->cmd, p->queries, 0, 2 * p->n_dispatches);
  uint32_t dispatch = 0;
  if (r != VK_SUCCESS) st = fail(ctx, status_of(r), "vulkan: cannot record a program (%d)", (int)r);
  /* Record: per op one descriptor set, the parameter block and the
   * dispatch, after a barrier where the launch touches what one since the
   * last barrier wrote, or writes what one read (hm_hazards; lavapipe
   * spends about 0.1 ms on each barrier), and between the slices of an op. */
  hm_hazards hazards = {0};
  for (uint32_t i = 0; i < desc->n_ops && st == HM_ABI_OK; i++) {
    if (!plan[i].slices) continue; /* fused into the op before */
    hm_abi_op covered[3]; /* the program's ops this launch runs */
    uint32_t n_covered = 0;
    do covered[n_covered] = *hm_program_op(desc, stride, i + n_covered);
    while (++n_covered < 3 && i + n_covered < desc->n_ops && !plan[i + n_covered].slices);
    if (hm_hazards_launch(&hazards, covered, n_covered, plan[i].scratch_words ? (const void *)p : NULL) && dispatch) {
      record_barrier(p->cmd);
      p->barriers++;
    }
    const hm_abi_op *op = &bind[i];
    hm_kernel_id k = plan[i].kernel;
    int gemm = hm_kernel_is_gemm(k);
    const vk_buffer *opd[6];
    int texel = launch_texel(dev, op, opd);
    VkPipeline pipe = VK_NULL_HANDLE;
    VkDescriptorSet set;
    VkDescriptorSetAllocateInfo sa = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO, .descriptorPool = p->dpool,
                                      .descriptorSetCount = 1, .pSetLayouts = &dev->set_layout};
    r = vkAllocateDescriptorSets(dev->dev, &sa, &set);
    if (r != VK_SUCCESS) {
      st = fail(ctx, status_of(r), "vulkan: descriptor set (%d)", (int)r);
      break;
    }
    VkDescriptorBufferInfo infos[N_BINDINGS];
    VkWriteDescriptorSet writes[N_BINDINGS];
    /* Bindings 7, 8: four-word views of b0, b1; 9..14: one-word views of
     * b0..b5; 15..17: four-word views of b3..b5. */
    VkBufferView views[N_BINDINGS - N_STORAGE_BINDINGS];
    for (int v = 0; v < N_BINDINGS - N_STORAGE_BINDINGS; v++) {
      int four = v < 2 || v >= 8;
      const vk_buffer *b = texel ? opd[v < 2 ? v : v < 8 ? v - 2 : v - 5] : NULL;
      views[v] = b ? (four ? b->texels : b->words) : dev->dummy_views[four ? 1 : 0];
    }
    for (uint32_t s = N_STORAGE_BINDINGS; s < N_BINDINGS; s++)
      writes[s] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = set, .dstBinding = s,
                                         .descriptorCount = 1, .descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER,
                                         .pTexelBufferView = &views[s - N_STORAGE_BINDINGS]};
    for (uint32_t s = 0; s < N_STORAGE_BINDINGS; s++) {
      VkBuffer buf = dev->dummy;
      if (s < 6) {
        const hm_abi_operand *o = s < 3 ? &op->in[s] : &op->out[s - 3];
        if (o->buffer) buf = ((vk_buffer *)o->buffer)->buf;
        else if (s == 5 && plan[i].scratch_words) buf = p->scratch;
      } else {
        buf = p->scalars;
      }
      infos[s] = (VkDescriptorBufferInfo){buf, 0, VK_WHOLE_SIZE};
      writes[s] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = set, .dstBinding = s,
                                         .descriptorCount = 1, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                         .pBufferInfo = &infos[s]};
    }
    vkUpdateDescriptorSets(dev->dev, dev->texel_operands ? N_BINDINGS : N_STORAGE_BINDINGS, writes, 0, NULL);
    vkCmdBindDescriptorSets(p->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, dev->layout, 0, 1, &set, 0, NULL);
    for (uint32_t sl = 0; sl < plan[i].slices; sl++) {
      hm_kparams kp;
      uint32_t groups;
      hm_dispatch_slice(&plan[i], sl, &kp, &groups);
      if (sl > 0) { /* a slice may read what the one before wrote (a split reduction's partial sums) */
        record_barrier(p->cmd);
        p->barriers++;
      }
      VkPipeline slice_pipe = VK_NULL_HANDLE; /* the variant may change per slice */
      if ((st = pipeline(dev, k, texel, gemm ? kp.flags : 0u, kp.variant, &slice_pipe))) break;
      if (slice_pipe != pipe) vkCmdBindPipeline(p->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe = slice_pipe);
      vkCmdPushConstants(p->cmd, dev->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(hm_kparams), &kp);
      /* A compute-stage timestamp is written once every earlier dispatch has finished. */
      if (p->queries) {
        p->times[dispatch] = (hm_launch_time){i, op->code, kp.variant, k, 0.0};
        vkCmdWriteTimestamp(p->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, p->queries, 2 * dispatch);
      }
      vkCmdDispatch(p->cmd, groups, 1, 1);
      if (p->queries) vkCmdWriteTimestamp(p->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, p->queries, 2 * dispatch + 1);
      dispatch++;
    }
  }
  hm_hazards_free(&hazards);
  if (st == HM_ABI_OK) {
    /* Make the results visible to transfers and host reads that follow. */
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_HOST_READ_BIT};
    vkCmdPipelineBarrier(p->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                         VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    r = vkEndCommandBuffer(p->cmd);
    if (r != VK_SUCCESS) st = fail(ctx, status_of(r), "vulkan: recording failed (%d)", (int)r);
  }
  free(plan);
  free(bind);
  if (st != HM_ABI_OK) {
    vk_program_free(p);
    return st;
  }
  *out = p;
  return HM_ABI_OK;
}

static int32_t vk_program_run(hm_abi_program *p, const double *scalars, uint32_t n_scalars) {
  if (!p) return HM_ABI_STATUS_INVALID_ARGUMENT;
  vk_device *dev = p->dev;
  if (n_scalars != p->n_scalars || (n_scalars && !scalars))
    return fail(dev->ctx, HM_ABI_STATUS_INVALID_ARGUMENT, "vulkan: program_run got %u scalars, the program was created with %u",
                n_scalars, p->n_scalars);
  int32_t st = wait_idle(dev); /* the scalars buffer and command buffer may be in use */
  if (st) return st;
  for (uint32_t i = 0; i < n_scalars; i++) p->scalars_map[i] = (float)scalars[i];
  if (!p->queries) return submit(dev, p->cmd, 0);
  /* Profiling waits for each run, to read its timestamps. */
  if ((st = submit(dev, p->cmd, 1))) return st;
  uint64_t *ticks = calloc(2 * (size_t)p->n_dispatches, sizeof *ticks);
  VkResult r = ticks ? vkGetQueryPoolResults(dev->dev, p->queries, 0, 2 * p->n_dispatches,
                                             2 * (size_t)p->n_dispatches * sizeof *ticks, ticks, sizeof *ticks,
                                             VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT)
                     : VK_ERROR_OUT_OF_HOST_MEMORY;
  if (r == VK_SUCCESS && p->runs++ > 0) {
    for (uint32_t d = 0; d < p->n_dispatches; d++)
      p->times[d].ms += (double)(ticks[2 * d + 1] - ticks[2 * d]) * dev->tick_ns * 1e-6;
    p->span_ms += (double)(ticks[2 * p->n_dispatches - 1] - ticks[0]) * dev->tick_ns * 1e-6;
  }
  free(ticks);
  return r == VK_SUCCESS ? HM_ABI_OK : fail(dev->ctx, status_of(r), "vulkan: reading the profile failed (%d)", (int)r);
}

static int32_t vk_device_synchronize(hm_abi_device *dev) { return dev ? wait_idle(dev) : HM_ABI_STATUS_INVALID_ARGUMENT; }

/* ===== Query ===== */

/* The plugin's entries: the versions are filled in by hm_plugin_answer_query. */
static const hm_abi_plugin plugin_table = HM_PLUGIN_TABLE(vk, "vulkan", HM_PLUGIN_VERSION, HM_BUILD_ID);

HM_ABI_EXPORT int32_t hm_plugin_query(const hm_abi_query *query, hm_abi_plugin *out) {
  return hm_plugin_answer_query(query, out, &plugin_table, PLUGIN_MIN_ABI);
}
