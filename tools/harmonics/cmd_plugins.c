/*
 * harmonics plugins [--json] [--config FILE]: every plugin considered, with
 * path, negotiated ABI, devices, capabilities and GEMM path — or the exact
 * reason it was skipped.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void abi_text(uint32_t v, char *buf, size_t cap) {
  snprintf(buf, cap, "%u.%u", HM_ABI_VERSION_GET_MAJOR(v), HM_ABI_VERSION_GET_MINOR(v));
}

static void print_caps_text(const hm_abi_device_desc *d) {
  printf("    capabilities (%u):\n", d->n_caps);
  for (uint32_t i = 0; i < d->n_caps; i++) {
    const hm_abi_capability *c = &d->caps[i];
    printf("      %-13s %-4s -> %-4s acc %-4s numerics %-5s", hm_op_name(c->op), hm_dtype_name(c->dtype_in),
           hm_dtype_name(c->dtype_out), hm_dtype_name(c->dtype_acc), hm_numerics_name(c->numerics));
    if (c->variants) {
      printf(" [");
      int first = 1;
      for (uint32_t v = 0; v < 64; v++) {
        if (!(c->variants & (1ull << v))) continue;
        printf("%s%s", first ? "" : " ", c->op == HM_ABI_OP_LOSS ? hm_loss_name(v) : hm_activation_name(v));
        first = 0;
      }
      printf("]");
    }
    printf("\n");
  }
}

static void print_text(void) {
  size_t n = hm_plugin_count();
  printf("plugin search path: %s\n", hm_plugin_search_path());
  if (n == 0) printf("no plugins found\n");
  for (size_t i = 0; i < n; i++) {
    hm_plugin_report r;
    if (hm_plugin_describe(i, &r) != HM_OK) continue;
    printf("\n%s  %s  [%s]\n", r.name ? r.name : "?", r.path, r.loaded ? "loaded" : "skipped");
    if (r.name) {
      char a[16], lo[16], hi[16];
      abi_text(r.abi_version, a, sizeof a);
      abi_text(r.plugin_min_abi, lo, sizeof lo);
      abi_text(r.plugin_max_abi, hi, sizeof hi);
      printf("  version %s, vendor %s, build %s\n  ABI %s negotiated (plugin serves %s-%s)\n", r.version, r.vendor,
             r.build_id, a, lo, hi);
    }
    if (!r.loaded) {
      printf("  reason: %s: %s\n", hm_status_name(r.status), r.reason ? r.reason : "");
      continue;
    }
    for (size_t d = 0; d < r.device_count; d++) {
      hm_abi_device_desc desc;
      if (hm_plugin_device_describe(i, d, &desc) != HM_OK) continue;
      char units[32] = "compute units not reported";
      if (desc.compute_units) snprintf(units, sizeof units, "%u compute units", desc.compute_units);
      printf("  device %s:%zu: %s (%s, vendor %s), %s, %.1f GiB\n", r.name, d, desc.name,
             hm_device_kind_name(desc.kind), desc.vendor, units, (double)desc.memory_bytes / (1024.0 * 1024.0 * 1024.0));
      printf("    features: %s\n", desc.features);
      print_caps_text(&desc);
    }
  }
}

static void print_json(void) {
  size_t n = hm_plugin_count();
  printf("{\"harmonics_version\":");
  json_string(stdout, hm_version());
  printf(",\"host_abi\":\"%d.%d\",\"search_path\":", HM_ABI_VERSION_MAJOR, HM_ABI_VERSION_MINOR);
  json_string(stdout, hm_plugin_search_path());
  printf(",\"plugins\":[");
  for (size_t i = 0; i < n; i++) {
    hm_plugin_report r;
    if (hm_plugin_describe(i, &r) != HM_OK) continue;
    printf("%s{\"path\":", i ? "," : "");
    json_string(stdout, r.path);
    printf(",\"loaded\":%s", r.loaded ? "true" : "false");
    if (r.name) {
      char a[16];
      abi_text(r.abi_version, a, sizeof a);
      printf(",\"name\":");
      json_string(stdout, r.name);
      printf(",\"vendor\":");
      json_string(stdout, r.vendor);
      printf(",\"version\":");
      json_string(stdout, r.version);
      printf(",\"build_id\":");
      json_string(stdout, r.build_id);
      printf(",\"abi_version\":\"%s\"", a);
    }
    if (!r.loaded) {
      printf(",\"status\":\"%s\",\"reason\":", hm_status_name(r.status));
      json_string(stdout, r.reason);
      printf("}");
      continue;
    }
    printf(",\"devices\":[");
    for (size_t d = 0; d < r.device_count; d++) {
      hm_abi_device_desc desc;
      if (hm_plugin_device_describe(i, d, &desc) != HM_OK) continue;
      printf("%s{\"index\":%zu,\"name\":", d ? "," : "", d);
      json_string(stdout, desc.name);
      printf(",\"vendor\":");
      json_string(stdout, desc.vendor);
      printf(",\"kind\":\"%s\",\"compute_units\":%u,\"memory_bytes\":%llu,\"features\":",
             hm_device_kind_name(desc.kind), desc.compute_units, (unsigned long long)desc.memory_bytes);
      json_string(stdout, desc.features);
      printf(",\"capabilities\":[");
      for (uint32_t c = 0; c < desc.n_caps; c++) {
        const hm_abi_capability *cap = &desc.caps[c];
        printf("%s{\"op\":\"%s\",\"dtype_in\":\"%s\",\"dtype_acc\":\"%s\",\"dtype_out\":\"%s\",\"numerics\":\"%s\"",
               c ? "," : "", hm_op_name(cap->op), hm_dtype_name(cap->dtype_in), hm_dtype_name(cap->dtype_acc),
               hm_dtype_name(cap->dtype_out), hm_numerics_name(cap->numerics));
        if (cap->variants) {
          printf(",\"variants\":[");
          int first = 1;
          for (uint32_t v = 0; v < 64; v++) {
            if (!(cap->variants & (1ull << v))) continue;
            printf("%s\"%s\"", first ? "" : ",",
                   cap->op == HM_ABI_OP_LOSS ? hm_loss_name(v) : hm_activation_name(v));
            first = 0;
          }
          printf("]");
        }
        printf("}");
      }
      printf("]}");
    }
    printf("]}");
  }
  printf("]}\n");
}

int cmd_plugins(int argc, char **argv) {
  int json = 0;
  const char *config = NULL;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) json = 1;
    else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) config = argv[++i];
    else {
      fprintf(stderr, "harmonics plugins: unknown option '%s'\nusage: harmonics plugins [--json] [--config FILE]\n",
              argv[i]);
      return CLI_USAGE;
    }
  }
  if (cli_registry_init(config, NULL) != CLI_OK) return CLI_FAILED;
  if (json) print_json();
  else print_text();
  return CLI_OK;
}
