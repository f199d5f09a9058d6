/*
 * .hgr: a graph in the binary envelope (container.h). Payload, version 1:
 *   str name
 *   u32 n_nodes, then per node:
 *     u8 kind (0 producer, 1 consumer, 2 layer), str name,
 *     u64 declared width (0: none), u64 resolved width (0: unknown),
 *     u8 has_ratio [i32 num, i32 den, str ref]
 *   u32 n_edges, then per edge: u32 src, u32 dst, u32 activation
 *   u32 n_taps, then per tap: u32 layer, u32 target, u32 loss
 * Version 2 adds the declared partition (`partition by layer a, b;`):
 *   u32 n_cuts, then per cut: str layer name
 * Version 3 adds shapes and connections beyond dense (docs/formats.md):
 *   u32 n_shaped, then per node declared {C x H x W}: u32 node, u32 C, H, W
 *   u32 n_special, then per non-dense connection: u32 connection, u32 kind,
 *     u32 out_channels, kernel h, w, stride h, w, padding h, w, dilation h, w,
 *     groups, u32 no_bias, f32 rate, f32 momentum, f32 eps
 * Decoding rebuilds the graph through the same checks as the builder (names,
 * kinds, indices, duplicates), so a hostile file cannot produce a graph the
 * DSL could not.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/container.h"
#include "base/fileio.h"
#include "graph/graph.h"
#include "harmonics/serialization.h"

static const char GRAPH_MAGIC[8] = {'H', 'M', 'G', 'R', 'A', 'P', 'H', '1'};
#define MAX_GRAPH_FILE ((size_t)64 << 20)

/* Version 3's shapes and connection kinds; |always| writes empty lists too. */
static void encode_windows(const hm_graph *g, hm_bytes *b, int always) {
  uint32_t shaped = 0, special = 0;
  for (size_t i = 0; i < g->n_nodes; i++) shaped += g->nodes[i].declared_rank == 3;
  for (size_t i = 0; i < g->n_edges; i++) special += g->edges[i].spec.kind != HM_CONNECTION_DENSE;
  if (!always && !shaped && !special) return; /* a dense graph's fingerprint is what it was before version 3 */
  hm__bytes_u32(b, shaped);
  for (size_t i = 0; i < g->n_nodes; i++) {
    const hm_node *n = &g->nodes[i];
    if (n->declared_rank != 3) continue;
    hm__bytes_u32(b, (uint32_t)i);
    for (int k = 0; k < 3; k++) hm__bytes_u32(b, n->declared_shape[k]);
  }
  hm__bytes_u32(b, special);
  for (size_t i = 0; i < g->n_edges; i++) {
    const hm_connection_spec *c = &g->edges[i].spec;
    if (c->kind == HM_CONNECTION_DENSE) continue;
    uint32_t v[13] = {(uint32_t)i, (uint32_t)c->kind, c->out_channels, c->kernel[0], c->kernel[1], c->stride[0],
                      c->stride[1], c->padding[0], c->padding[1], c->dilation[0], c->dilation[1], c->groups,
                      (uint32_t)c->no_bias};
    for (int k = 0; k < 13; k++) hm__bytes_u32(b, v[k]);
    hm__bytes_f32(b, c->rate);
    hm__bytes_f32(b, c->momentum);
    hm__bytes_f32(b, c->eps);
  }
}

static void decode_windows(hm_reader *r, hm_graph *g) {
  size_t shaped = hm__read_count(r, 16, g->n_nodes, "shaped node count");
  for (size_t i = 0; i < shaped && r->status == HM_OK; i++) {
    uint32_t node = hm__read_u32(r, "shaped node"), c = hm__read_u32(r, "channels"), h = hm__read_u32(r, "height"),
             w = hm__read_u32(r, "width");
    if (r->status != HM_OK) break;
    if (node >= g->n_nodes) {
      hm__reader_fail(r, "shape %zu refers to node %u of %zu", i, node, g->n_nodes);
      break;
    }
    hm_status st = hm__graph_set_node_shape(g, node, c, h, w, "");
    if (st != HM_OK) hm__reader_fail_from(r, st, "node %u: %s", node, hm_last_error());
  }
  size_t special = hm__read_count(r, 64, g->n_edges, "window connection count");
  for (size_t i = 0; i < special && r->status == HM_OK; i++) {
    uint32_t v[13];
    for (int k = 0; k < 13; k++) v[k] = hm__read_u32(r, "connection parameter");
    float rate = hm__read_f32(r, "dropout rate"), momentum = hm__read_f32(r, "momentum"), eps = hm__read_f32(r, "eps");
    if (r->status != HM_OK) break;
    if (v[0] >= g->n_edges || v[1] == HM_CONNECTION_DENSE || v[1] > HM_CONNECTION_LAYER_NORM || v[12] > 1) {
      hm__reader_fail(r, "window connection %zu: connection %u of %zu, kind %u, bias flag %u", i, v[0], g->n_edges,
                      v[1], v[12]);
      break;
    }
    hm_connection_spec c = {(hm_connection_kind)v[1], v[2], {v[3], v[4]}, {v[5], v[6]}, {v[7], v[8]},
                            {v[9], v[10]}, v[11], (int)v[12], rate, momentum, eps};
    hm_edge *e = &g->edges[v[0]];
    hm_status st = hm__edge_spec_check(g, e->dst, &c, &e->spec, "");
    if (st != HM_OK) hm__reader_fail_from(r, st, "connection %u: %s", v[0], hm_last_error());
  }
}

void hm__graph_encode(const hm_graph *g, hm_bytes *b, int with_name) {
  hm__bytes_str(b, with_name ? g->name : "");
  hm__bytes_u32(b, (uint32_t)g->n_nodes);
  for (size_t i = 0; i < g->n_nodes; i++) {
    const hm_node *n = &g->nodes[i];
    hm__bytes_u8(b, (uint8_t)n->kind);
    hm__bytes_str(b, n->name);
    hm__bytes_u64(b, n->declared_width);
    hm__bytes_u64(b, with_name ? n->width : 0);
    hm__bytes_u8(b, (uint8_t)n->has_ratio);
    if (n->has_ratio) {
      hm__bytes_i32(b, n->ratio_num);
      hm__bytes_i32(b, n->ratio_den);
      hm__bytes_str(b, n->ratio_ref);
    }
  }
  hm__bytes_u32(b, (uint32_t)g->n_edges);
  for (size_t i = 0; i < g->n_edges; i++) {
    hm__bytes_u32(b, (uint32_t)g->edges[i].src);
    hm__bytes_u32(b, (uint32_t)g->edges[i].dst);
    hm__bytes_u32(b, g->edges[i].activation);
  }
  hm__bytes_u32(b, (uint32_t)g->n_taps);
  for (size_t i = 0; i < g->n_taps; i++) {
    hm__bytes_u32(b, (uint32_t)g->taps[i].layer);
    hm__bytes_u32(b, (uint32_t)g->taps[i].target);
    hm__bytes_u32(b, g->taps[i].loss);
  }
  if (!with_name) { /* the fingerprint: where a pipeline cuts is not what the graph computes */
    encode_windows(g, b, 0);
    return;
  }
  hm__bytes_u32(b, (uint32_t)g->n_cuts);
  for (size_t i = 0; i < g->n_cuts; i++) hm__bytes_str(b, g->cuts[i]);
  encode_windows(g, b, 1);
}

hm_status hm__graph_fingerprint(const hm_graph *g, uint32_t *out) {
  hm_bytes b = {0};
  hm__graph_encode(g, &b, 0);
  int failed = b.failed;
  if (!failed) *out = hm__crc32c(0, b.data, b.len);
  hm__bytes_free(&b);
  return failed ? hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory") : HM_OK;
}

/* Version 2's declared partition: layer names, at most 63. */
static void decode_cuts(hm_reader *r, hm_graph *g) {
  size_t n = hm__read_count(r, 4, 63, "partition cut count");
  char *cuts[63];
  size_t got = 0;
  for (; got < n && r->status == HM_OK; got++) {
    cuts[got] = hm__read_str(r, 256, "partition cut");
    if (r->status != HM_OK) {
      hm__free(cuts[got]);
      break;
    }
  }
  if (r->status == HM_OK) {
    hm_status st = hm_graph_set_partition(g, (const char *const *)cuts, n);
    if (st != HM_OK) hm__reader_fail_from(r, st, "%s", hm_last_error());
  }
  for (size_t i = 0; i < got; i++) hm__free(cuts[i]);
}

hm_status hm__graph_decode(hm_reader *r, uint32_t version, hm_graph **out) {
  char *name = hm__read_str(r, 4096, "graph name");
  if (r->status != HM_OK) return r->status;
  hm_graph *g = NULL;
  hm_status st = hm_graph_create(name && *name ? name : "graph", &g);
  hm__free(name);
  if (st != HM_OK) return st;
  size_t n = hm__read_count(r, 22, HM_MAX_NODES, "node count");
  for (size_t i = 0; i < n && r->status == HM_OK; i++) {
    uint8_t kind = hm__read_u8(r, "node kind");
    char *nm = hm__read_str(r, 256, "node name");
    uint64_t declared = hm__read_u64(r, "declared width"), resolved = hm__read_u64(r, "resolved width");
    uint8_t has_ratio = hm__read_u8(r, "ratio flag");
    int32_t num = 0, den = 0;
    char *ref = NULL;
    if (has_ratio == 1) {
      num = hm__read_i32(r, "ratio numerator");
      den = hm__read_i32(r, "ratio denominator");
      ref = hm__read_str(r, 256, "ratio reference");
    }
    if (r->status == HM_OK) {
      if (kind > HM_NODE_LAYER) hm__reader_fail(r, "node %zu has unknown kind %u", i, kind);
      else if (has_ratio > 1) hm__reader_fail(r, "node %zu: ratio flag %u", i, has_ratio);
      else if (declared > HM_MAX_WIDTH || resolved > HM_MAX_WIDTH)
        hm__reader_fail(r, "node '%s' has width %llu, more than %zu", nm, (unsigned long long)(declared > resolved ? declared : resolved),
                        HM_MAX_WIDTH);
      else if (has_ratio && (num <= 0 || den <= 0 || num > (1 << 20) || den > (1 << 20)))
        hm__reader_fail(r, "node '%s' has an invalid ratio %d/%d", nm, num, den);
    }
    if (r->status == HM_OK) {
      hm_status added = hm__graph_add_node(g, nm, (hm_node_kind)kind, declared, 0, 0);
      if (added != HM_OK)
        hm__reader_fail_from(r, added, "node %zu: %s", i, hm_last_error());
      else {
        hm_node *node = &g->nodes[g->n_nodes - 1];
        node->width = (size_t)resolved;
        node->has_ratio = has_ratio;
        node->ratio_num = num;
        node->ratio_den = den;
        node->ratio_ref = ref;
        ref = NULL;
      }
    }
    hm__free(nm);
    hm__free(ref);
  }
  for (size_t i = 0; i < g->n_nodes && r->status == HM_OK; i++)
    if (g->nodes[i].has_ratio && hm__graph_find(g, g->nodes[i].ratio_ref) < 0)
      hm__reader_fail(r, "the ratio of '%s' refers to unknown node '%s'", g->nodes[i].name, g->nodes[i].ratio_ref);
  size_t ne = hm__read_count(r, 12, HM_MAX_EDGES, "connection count");
  for (size_t i = 0; i < ne && r->status == HM_OK; i++) {
    uint32_t s = hm__read_u32(r, "connection source"), d = hm__read_u32(r, "connection target"),
             a = hm__read_u32(r, "activation");
    if (r->status != HM_OK) break;
    if (s >= g->n_nodes || d >= g->n_nodes) hm__reader_fail(r, "connection %zu refers to node %u of %zu", i, s >= g->n_nodes ? s : d, g->n_nodes);
    else {
      hm_status added = hm__graph_add_edge(g, s, d, a, 0, 0);
      if (added != HM_OK) hm__reader_fail_from(r, added, "connection %zu: %s", i, hm_last_error());
    }
  }
  size_t nt = hm__read_count(r, 12, HM_MAX_NODES, "loss count");
  for (size_t i = 0; i < nt && r->status == HM_OK; i++) {
    uint32_t l = hm__read_u32(r, "loss layer"), t = hm__read_u32(r, "loss target"), k = hm__read_u32(r, "loss kind");
    if (r->status != HM_OK) break;
    if (l >= g->n_nodes || t >= g->n_nodes) hm__reader_fail(r, "loss %zu refers to node %u of %zu", i, l >= g->n_nodes ? l : t, g->n_nodes);
    else {
      hm_status added = hm__graph_add_tap(g, l, t, k, 0, 0);
      if (added != HM_OK) hm__reader_fail_from(r, added, "loss %zu: %s", i, hm_last_error());
    }
  }
  if (version >= 2 && r->status == HM_OK) decode_cuts(r, g);
  if (version >= 3 && r->status == HM_OK) decode_windows(r, g);
  hm__reader_finish(r);
  if (r->status != HM_OK) {
    hm_graph_free(g);
    return r->status;
  }
  *out = g;
  return HM_OK;
}

hm_status hm_save_graph(const hm_graph *g, FILE *f) {
  if (!g || !f) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_save_graph: NULL argument");
  hm_bytes b = {0};
  hm__graph_encode(g, &b, 1);
  hm_status st = hm__container_write(f, GRAPH_MAGIC, HM_GRAPH_FORMAT_VERSION, &b, "graph stream");
  hm__bytes_free(&b);
  return st;
}

static hm_status load_graph(FILE *f, const char *what, hm_graph **out) {
  unsigned char *buf = NULL;
  hm_reader r;
  uint32_t version = 0;
  HM_RETURN_IF_ERROR(hm__container_read(f, GRAPH_MAGIC, HM_GRAPH_FORMAT_VERSION, MAX_GRAPH_FILE, what, &buf, &r, &version));
  hm_status st = hm__graph_decode(&r, version, out);
  hm__free(buf);
  return st;
}

hm_status hm_load_graph(FILE *f, hm_graph **out) {
  if (!f || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_load_graph: NULL argument");
  return load_graph(f, "graph stream", out);
}

typedef struct graph_save {
  const hm_graph *g;
  const char *path;
} graph_save;

static hm_status write_graph(FILE *f, void *arg) {
  graph_save *s = arg;
  hm_bytes b = {0};
  hm__graph_encode(s->g, &b, 1);
  hm_status st = hm__container_write(f, GRAPH_MAGIC, HM_GRAPH_FORMAT_VERSION, &b, s->path);
  hm__bytes_free(&b);
  return st;
}

hm_status hm_save_graph_file(const hm_graph *g, const char *path) {
  if (!g || !path) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_save_graph_file: NULL argument");
  graph_save s = {g, path};
  return hm__atomic_write(path, write_graph, &s);
}

hm_status hm_load_graph_file(const char *path, hm_graph **out) {
  if (!path || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_load_graph_file: NULL argument");
  FILE *f = fopen(path, "rb");
  if (!f)
    return hm__fail(errno == ENOENT ? HM_STATUS_NOT_FOUND : HM_STATUS_IO_ERROR, "cannot open %s: %s", path, strerror(errno));
  hm_status st = load_graph(f, path, out);
  fclose(f);
  return st;
}
