/*
 * ABI tier: the plugin loads through the production loader, exports only
 * hm_plugin_query, negotiates correctly with older, equal and newer hosts,
 * fills its descriptors within the host's struct_size with reserved fields
 * zero, reports errors, and survives load/unload cycles without leaking.
 */
#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conform.h"

#define V(a, b) HM_ABI_MAKE_VERSION(a, b)

static void vtext(uint32_t v, char *buf, size_t cap) {
  snprintf(buf, cap, "%u.%u", HM_ABI_VERSION_GET_MAJOR(v), HM_ABI_VERSION_GET_MINOR(v));
}

static void test_load(conform_ctx *c, const void *arg, conform_result *r) {
  (void)arg;
  hm_loaded_plugin *p = NULL;
  if (hm_plugin_open(c->path, NULL, &p) != HM_OK) {
    conform_fail(r, "%s", hm_last_error());
    return;
  }
  hm_plugin_close(p);
}

static void test_exports(conform_ctx *c, const void *arg, conform_result *r) {
  (void)arg;
  char **names = NULL, err[256];
  long n = conform_elf_exports(c->path, &names, err, sizeof err);
  if (n < 0) {
    conform_fail(r, "%s", err);
    return;
  }
  int query = 0;
  char extra[400] = "";
  size_t len = 0;
  for (long i = 0; i < n; i++) {
    if (!strcmp(names[i], HM_PLUGIN_QUERY_SYMBOL)) query = 1;
    else if (len < sizeof extra - 80)
      len += (size_t)snprintf(extra + len, sizeof extra - len, "%s%s", len ? ", " : "", names[i]);
    free(names[i]);
  }
  free(names);
  if (!query) conform_fail(r, "hm_plugin_query is not exported (HM-PLUGIN-2)");
  else if (extra[0]) conform_fail(r, "exports more than hm_plugin_query: %s (HM-PLUGIN-2; link with abi/plugin.map)", extra);
}

/* The plugin's query function, through the production loader's handle. */
static hm_plugin_query_fn query_of(conform_ctx *c, hm_loaded_plugin **keep, conform_result *r) {
  hm_plugin_open_options o = hm_plugin_open_options_default();
  o.skip_init = 1;
  if (hm_plugin_open(c->path, &o, keep) != HM_OK) {
    conform_fail(r, "the plugin does not load: %s", hm_last_error());
    return NULL;
  }
  void *sym = dlsym(hm_loaded_plugin_handle(*keep), HM_PLUGIN_QUERY_SYMBOL);
  hm_plugin_query_fn fn = NULL;
  memcpy(&fn, &sym, sizeof fn);
  return fn;
}

typedef struct negotiation {
  uint32_t lo, hi;
  int expect_accept; /* 1 accept, 0 decline, -1 depends on the plugin's range */
} negotiation;

static const negotiation neg_equal = {V(1, 0), V(1, 0), 1};
static const negotiation neg_newer_host = {V(1, 0), V(1, 9), 1};
static const negotiation neg_older_major = {V(0, 1), V(0, 9), 0};
static const negotiation neg_newer_major = {V(2, 0), V(2, 5), 0};
static const negotiation neg_newer_floor = {V(1, 1), V(1, 9), -1};

static void test_negotiate(conform_ctx *c, const void *arg, conform_result *r) {
  const negotiation *n = arg;
  hm_loaded_plugin *keep = NULL;
  hm_plugin_query_fn q = query_of(c, &keep, r);
  if (!q) return;
  const hm_abi_plugin *self = hm_loaded_plugin_table(keep);
  uint32_t pmin = self->plugin_min_abi, pmax = self->plugin_max_abi;
  struct {
    hm_abi_plugin p;
    unsigned char guard[128];
  } out;
  memset(&out, 0x5a, sizeof out);
  memset(&out.p, 0, sizeof out.p);
  out.p.struct_size = sizeof out.p;
  hm_abi_plugin before = out.p;
  hm_abi_query query;
  memset(&query, 0, sizeof query);
  query.struct_size = sizeof query;
  query.abi_version = n->hi;
  query.host_min_abi = n->lo;
  query.host_max_abi = n->hi;
  int32_t st = q(&query, &out.p);
  uint32_t hi = n->hi < pmax ? n->hi : pmax, lo = n->lo > pmin ? n->lo : pmin;
  int should = n->expect_accept >= 0 ? n->expect_accept
                                     : (HM_ABI_VERSION_GET_MAJOR(hi) == HM_ABI_VERSION_GET_MAJOR(pmax) && hi >= lo);
  char a[16], b[16], pa[16], pb[16], got[16];
  vtext(n->lo, a, sizeof a);
  vtext(n->hi, b, sizeof b);
  vtext(pmin, pa, sizeof pa);
  vtext(pmax, pb, sizeof pb);
  for (size_t i = 0; i < sizeof out.guard; i++)
    if (out.guard[i] != 0x5a) {
      conform_fail(r, "host range %s-%s: the query wrote past the host's struct_size (HM-ABI-2)", a, b);
      hm_plugin_close(keep);
      return;
    }
  if (should) {
    vtext(out.p.abi_version, got, sizeof got);
    if (st != HM_ABI_OK) conform_fail(r, "host range %s-%s, plugin %s-%s: declined (status %d) but should accept", a, b, pa, pb, st);
    else if (out.p.abi_version != (n->hi < pmax ? n->hi : pmax))
      conform_fail(r, "host range %s-%s, plugin %s-%s: negotiated %s, expected min(host max, plugin max) (HM-ABI-4)", a, b,
                   pa, pb, got);
    else if (out.p.struct_size != sizeof out.p)
      conform_fail(r, "the query changed struct_size (HM-ABI-2)");
  } else {
    if (st != HM_ABI_STATUS_INCOMPATIBLE)
      conform_fail(r, "host range %s-%s, plugin %s-%s: status %d, expected INCOMPATIBLE (HM-ABI-4)", a, b, pa, pb, st);
    else if (memcmp(&before, &out.p, sizeof before) != 0)
      conform_fail(r, "host range %s-%s: declined but wrote into the descriptor (outputs must be untouched)", a, b);
  }
  hm_plugin_close(keep);
}

static int valid_name(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > 31) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_')) return 0;
  return 1;
}

static void test_descriptor(conform_ctx *c, const void *arg, conform_result *r) {
  (void)arg;
  hm_loaded_plugin *keep = NULL;
  hm_plugin_query_fn q = query_of(c, &keep, r);
  if (!q) return;
  hm_abi_query query;
  memset(&query, 0, sizeof query);
  query.struct_size = sizeof query;
  query.abi_version = HM_ABI_VERSION;
  query.host_min_abi = V(1, 0);
  query.host_max_abi = HM_ABI_VERSION;
  hm_abi_plugin a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  a.struct_size = b.struct_size = sizeof a;
  int32_t s1 = q(&query, &a), s2 = q(&query, &b);
  if (s1 != HM_ABI_OK || s2 != HM_ABI_OK) conform_fail(r, "the query failed (%d, %d)", s1, s2);
  else if (memcmp(&a, &b, sizeof a) != 0) conform_fail(r, "two queries gave different descriptors (HM-PLUGIN-3: the query must be pure)");
  else if (!valid_name(a.name)) conform_fail(r, "name '%s' is not [a-z0-9_]{1,31} (HM-PLUGIN-4)", a.name ? a.name : "(NULL)");
  else if (!a.vendor || !a.vendor[0] || !a.version || !a.version[0] || !a.build_id)
    conform_fail(r, "vendor, version or build_id missing (HM-PLUGIN-4)");
  else if (a.plugin_min_abi > a.plugin_max_abi || a.abi_version < a.plugin_min_abi || a.abi_version > a.plugin_max_abi)
    conform_fail(r, "the negotiated version lies outside the plugin's own range (HM-ABI-4)");
  else {
    for (size_t i = 0; i < sizeof a.reserved / sizeof a.reserved[0]; i++)
      if (a.reserved[i]) {
        conform_fail(r, "reserved[%zu] is not zero (HM-ABI-3)", i);
        break;
      }
  }
  if (r->status == CONFORM_PASS) {
    const char *missing = !a.init ? "init" : !a.shutdown ? "shutdown" : !a.device_count ? "device_count"
                        : !a.device_describe ? "device_describe" : !a.device_open ? "device_open"
                        : !a.device_close ? "device_close" : !a.buffer_alloc ? "buffer_alloc"
                        : !a.buffer_free ? "buffer_free" : !a.buffer_write ? "buffer_write"
                        : !a.buffer_read ? "buffer_read" : !a.buffer_copy ? "buffer_copy"
                        : !a.program_create ? "program_create" : !a.program_free ? "program_free"
                        : !a.program_run ? "program_run" : NULL;
    if (missing) conform_fail(r, "required entry '%s' is NULL (HM-PLUGIN-5)", missing);
  }
  /* A host that knows less than the plugin: nothing past its struct_size. */
  if (r->status == CONFORM_PASS) {
    struct {
      hm_abi_plugin p;
      unsigned char guard[64];
    } small;
    memset(&small, 0x5a, sizeof small);
    size_t cut = offsetof(hm_abi_plugin, reserved);
    memset(&small.p, 0, cut);
    small.p.struct_size = (uint32_t)cut;
    int32_t st = q(&query, &small.p);
    const unsigned char *tail = (const unsigned char *)&small.p + cut;
    for (size_t i = 0; st == HM_ABI_OK && i < sizeof small - cut; i++)
      if (tail[i] != 0x5a) {
        conform_fail(r, "with struct_size %zu the query wrote byte %zu beyond it (HM-ABI-2)", cut, i);
        break;
      }
  }
  hm_plugin_close(keep);
}

static int known_op(uint32_t op) {
  return (op >= HM_ABI_OP_GEMM && op <= HM_ABI_OP_COPY) || (op >= HM_ABI_OP_SGD && op <= HM_ABI_OP_LAMB) ||
         (op >= HM_ABI_OP_QUANTIZE && op <= HM_ABI_OP_GEMM_Q3) || (op >= HM_ABI_OP_CONV2D && op <= HM_ABI_OP_IM2COL);
}

static void test_devices(conform_ctx *c, const void *arg, conform_result *r) {
  (void)arg;
  hm_loaded_plugin *p = NULL;
  if (hm_plugin_open(c->path, NULL, &p) != HM_OK) {
    conform_fail(r, "%s", hm_last_error());
    return;
  }
  const hm_abi_plugin *t = hm_loaded_plugin_table(p);
  hm_abi_context *ctx = hm_loaded_plugin_context(p);
  uint32_t n = t->device_count(ctx);
  if (n == 0) conform_fail(r, "the plugin initialised but declares no device (fail init with UNAVAILABLE instead)");
  for (uint32_t d = 0; d < n && r->status == CONFORM_PASS; d++) {
    struct {
      hm_abi_device_desc desc;
      unsigned char guard[64];
    } out;
    memset(&out, 0x5a, sizeof out);
    memset(&out.desc, 0, sizeof out.desc);
    out.desc.struct_size = sizeof out.desc;
    int32_t st = t->device_describe(ctx, d, &out.desc);
    const hm_abi_device_desc *x = &out.desc;
    if (st != HM_ABI_OK) {
      conform_fail(r, "device_describe(%u): status %d: %s", d, st, hm_plugin_last_message());
      break;
    }
    for (size_t i = 0; i < sizeof out.guard; i++)
      if (out.guard[i] != 0x5a) {
        conform_fail(r, "device_describe(%u) wrote past struct_size (HM-ABI-2)", d);
        break;
      }
    if (r->status != CONFORM_PASS) break;
    if (!memchr(x->name, 0, sizeof x->name) || !x->name[0] || !memchr(x->vendor, 0, sizeof x->vendor) ||
        !memchr(x->features, 0, sizeof x->features))
      conform_fail(r, "device %u: name, vendor or features empty or unterminated (HM-PLUGIN-7)", d);
    else if (x->kind > HM_ABI_DEVICE_ACCELERATOR) conform_fail(r, "device %u: unknown kind %u", d, x->kind);
    else if (x->n_caps > 4096 || (x->n_caps && !x->caps)) conform_fail(r, "device %u: capability table invalid", d);
    for (uint32_t k = 0; k < x->n_caps && r->status == CONFORM_PASS; k++) {
      const hm_abi_capability *cap = &x->caps[k];
      if (!known_op(cap->op) || cap->dtype_in > HM_ABI_DTYPE_I64 || cap->dtype_out > HM_ABI_DTYPE_I64 ||
          cap->numerics > HM_ABI_NUMERICS_BF16 || cap->flags || cap->reserved[0] || cap->reserved[1] || cap->reserved[2])
        conform_fail(r, "device %u capability %u: unknown op/dtype/numerics or non-zero reserved field", d, k);
    }
    for (size_t i = 0; r->status == CONFORM_PASS && i < sizeof x->reserved / sizeof x->reserved[0]; i++)
      if (x->reserved[i] || x->reserved0) conform_fail(r, "device %u: reserved field set (HM-ABI-3)", d);
  }
  /* A device that does not exist: an error with a message, output untouched. */
  if (r->status == CONFORM_PASS) {
    hm_abi_device_desc out;
    memset(&out, 0x33, sizeof out);
    out.struct_size = sizeof out;
    hm_abi_device_desc copy = out;
    char before[1024];
    snprintf(before, sizeof before, "%s", hm_plugin_last_message());
    int32_t st = t->device_describe(ctx, n, &out);
    if (st == HM_ABI_OK) conform_fail(r, "device_describe(%u) of a missing device returned OK", n);
    else if (memcmp(&copy, &out, sizeof out) != 0) conform_fail(r, "a failed device_describe wrote its output");
    else if (!hm_plugin_last_message()[0]) conform_fail(r, "a failed device_describe reported no message (HM-PLUGIN-6)");
  }
  hm_plugin_close(p);
}

static size_t heap_in_use(void) {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

static void test_cycles(conform_ctx *c, const void *arg, conform_result *r) {
  (void)arg;
  size_t base = 0;
  for (int i = 0; i < 12 && r->status == CONFORM_PASS; i++) {
    hm_loaded_plugin *p = NULL;
    if (hm_plugin_open(c->path, NULL, &p) != HM_OK) {
      conform_fail(r, "cycle %d: %s", i, hm_last_error());
      break;
    }
    const hm_abi_plugin *t = hm_loaded_plugin_table(p);
    hm_abi_context *ctx = hm_loaded_plugin_context(p);
    hm_abi_device *d = NULL;
    hm_abi_buffer *b = NULL;
    if (t->device_count(ctx) && t->device_open(ctx, 0, NULL, 0, &d) == HM_ABI_OK) {
      if (t->buffer_alloc(d, 4096, &b) == HM_ABI_OK) t->buffer_free(b);
      t->device_close(d);
    }
    hm_plugin_close(p);
    if (i == 1) base = heap_in_use(); /* after the first cycles' one-time costs */
  }
  size_t now = heap_in_use();
  if (r->status == CONFORM_PASS && now > base + (256u << 10))
    conform_fail(r, "10 load/init/shutdown/unload cycles grew the heap by %zu bytes", now - base);
}

void conform_add_abi_tests(conform_suite *s) {
  conform_add(s, "abi", test_load, NULL, 0, "abi.load");
  conform_add(s, "abi", test_exports, NULL, 0, "abi.exports");
  conform_add(s, "abi", test_negotiate, &neg_equal, 0, "abi.negotiate.equal_host");
  conform_add(s, "abi", test_negotiate, &neg_newer_host, 0, "abi.negotiate.newer_host_minor");
  conform_add(s, "abi", test_negotiate, &neg_newer_floor, 0, "abi.negotiate.host_floor_above_1.0");
  conform_add(s, "abi", test_negotiate, &neg_older_major, 0, "abi.negotiate.older_host_major");
  conform_add(s, "abi", test_negotiate, &neg_newer_major, 0, "abi.negotiate.newer_host_major");
  conform_add(s, "abi", test_descriptor, NULL, 0, "abi.descriptor");
  conform_add(s, "abi", test_devices, NULL, 0, "abi.device_descriptors");
  conform_add(s, "abi", test_cycles, NULL, 0, "abi.load_unload_cycles");
}
