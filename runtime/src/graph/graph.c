/*
 * Graph construction (the C builder, shared with the DSL parser),
 * introspection, bindings and topological order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "harmonics/names.h"

void hm__graph_where(const hm_graph *g, int line, int col, char *buf, size_t cap) {
  if (g->filename && line > 0) snprintf(buf, cap, "%s:%d:%d: ", g->filename, line, col);
  else buf[0] = '\0';
}

hm_status hm_graph_create(const char *name, hm_graph **out) {
  if (!out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_graph_create: NULL output");
  hm_graph *g = hm__calloc(1, sizeof *g);
  if (!g) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  g->name = hm__strdup(name ? name : "graph");
  hm__sb_init(&g->warnings);
  *out = g;
  return HM_OK;
}

void hm_graph_free(hm_graph *g) {
  if (!g) return;
  for (size_t i = 0; i < g->n_nodes; i++) {
    hm__free(g->nodes[i].name);
    hm__free(g->nodes[i].ratio_ref);
  }
  hm__free(g->nodes);
  hm__free(g->edges);
  hm__hash_free(&g->node_index);
  hm__hash_free(&g->edge_index);
  hm__free(g->taps);
  hm__graph_set_cuts(g, NULL, 0, 0, 0);
  hm_weights_free(g->weights);
  hm__sb_free(&g->warnings);
  hm__free(g->name);
  hm__free(g->filename);
  hm__free(g);
}

typedef struct name_key {
  const hm_graph *g;
  const char *name;
} name_key;

static int same_node(const void *ctx, size_t i) {
  const name_key *k = ctx;
  return strcmp(k->g->nodes[i].name, k->name) == 0;
}

long hm__graph_find(const hm_graph *g, const char *name) {
  name_key k = {g, name};
  size_t i = hm__hash_find(&g->node_index, hm__hash_str(name), same_node, &k);
  return i == HM_HASH_NONE ? -1 : (long)i;
}

typedef struct edge_key {
  const hm_graph *g;
  size_t src, dst;
} edge_key;

static uint64_t edge_hash(size_t src, size_t dst) {
  size_t k[2] = {src, dst};
  return hm__hash_bytes(k, sizeof k);
}

static int same_edge(const void *ctx, size_t i) {
  const edge_key *k = ctx;
  return k->g->edges[i].src == k->src && k->g->edges[i].dst == k->dst;
}

static int valid_name(const char *s) {
  if (!s || !*s || strlen(s) > 256) return 0;
  if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_')) return 0;
  for (const char *c = s; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_')) return 0;
  return 1;
}

static const char *kind_name(hm_node_kind k) {
  return k == HM_NODE_PRODUCER ? "producer" : k == HM_NODE_CONSUMER ? "consumer" : "layer";
}

static void *grow(void *items, size_t *cap, size_t len, size_t size) {
  if (len < *cap) return items;
  size_t ncap = *cap ? *cap * 2 : 8;
  void *n = hm__realloc(items, ncap * size);
  if (n) *cap = ncap;
  return n;
}

hm_status hm__graph_add_node(hm_graph *g, const char *name, hm_node_kind kind, size_t width, int line, int col) {
  if (!valid_name(name))
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "invalid node name '%s' (letters, digits and '_', not first a digit)",
                    name ? name : "(NULL)");
  long prev = hm__graph_find(g, name);
  if (prev >= 0) {
    const hm_node *p = &g->nodes[prev];
    if (p->line > 0)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "duplicate name '%s' (already a %s, declared at line %d)", name,
                      kind_name(p->kind), p->line);
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "duplicate name '%s' (already a %s)", name, kind_name(p->kind));
  }
  if (g->n_nodes >= HM_MAX_NODES) return hm__fail(HM_STATUS_OUT_OF_RANGE, "more than %d nodes", HM_MAX_NODES);
  if (width > HM_MAX_WIDTH)
    return hm__fail(HM_STATUS_OUT_OF_RANGE, "width %zu of '%s' exceeds %zu", width, name, HM_MAX_WIDTH);
  hm_node *nodes = grow(g->nodes, &g->cap_nodes, g->n_nodes, sizeof *nodes);
  if (!nodes) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  g->nodes = nodes;
  hm_node *n = &nodes[g->n_nodes];
  memset(n, 0, sizeof *n);
  n->name = hm__strdup(name);
  if (!n->name) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  n->kind = kind;
  n->declared_width = width;
  n->line = line;
  n->col = col;
  if (hm__hash_add(&g->node_index, hm__hash_str(name), g->n_nodes) != HM_OK) {
    hm__free(n->name);
    return HM_STATUS_RESOURCE_EXHAUSTED;
  }
  g->n_nodes++;
  hm_weights_free(g->weights); /* the parameter set no longer fits */
  g->weights = NULL;
  return HM_OK;
}

hm_status hm__graph_add_edge(hm_graph *g, size_t src, size_t dst, uint32_t activation, int line, int col) {
  char where[300];
  hm__graph_where(g, line, col, where, sizeof where);
  const hm_node *s = &g->nodes[src], *d = &g->nodes[dst];
  if (s->kind == HM_NODE_CONSUMER)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s'%s' is a consumer: it receives values but feeds nothing", where,
                    s->name);
  if (d->kind == HM_NODE_PRODUCER)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s'%s' is a producer: only layers and consumers receive connections",
                    where, d->name);
  if (src == dst) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s'%s' cannot feed itself", where, s->name);
  edge_key k = {g, src, dst};
  uint64_t h = edge_hash(src, dst);
  if (hm__hash_find(&g->edge_index, h, same_edge, &k) != HM_HASH_NONE)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sthe connection %s -> %s appears twice", where, s->name, d->name);
  if (d->kind == HM_NODE_CONSUMER && d->fed_by)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sconsumer '%s' is already fed by '%s'", where, d->name,
                    g->nodes[g->edges[d->fed_by - 1].src].name);
  if (g->n_edges >= HM_MAX_EDGES)
    return hm__fail(HM_STATUS_OUT_OF_RANGE, "%smore than %d connections", where, HM_MAX_EDGES);
  if (activation >= HM_ABI_ACT_COUNT) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sunknown activation %u", where, activation);
  hm_edge *edges = grow(g->edges, &g->cap_edges, g->n_edges, sizeof *edges);
  if (!edges) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  g->edges = edges;
  HM_RETURN_IF_ERROR(hm__hash_add(&g->edge_index, h, g->n_edges));
  if (d->kind == HM_NODE_CONSUMER) g->nodes[dst].fed_by = g->n_edges + 1;
  edges[g->n_edges++] = (hm_edge){src, dst, activation, line, col, {0}};
  hm_weights_free(g->weights);
  g->weights = NULL;
  return HM_OK;
}

hm_status hm__graph_add_tap(hm_graph *g, size_t layer, size_t target, uint32_t loss, int line, int col) {
  char where[300];
  hm__graph_where(g, line, col, where, sizeof where);
  const hm_node *l = &g->nodes[layer], *t = &g->nodes[target];
  if (l->kind != HM_NODE_LAYER)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sa loss is attached to a layer; '%s' is a %s", where, l->name,
                    kind_name(l->kind));
  if (t->kind != HM_NODE_PRODUCER)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sthe target of a loss must be a producer; '%s' is a %s", where,
                    t->name, kind_name(t->kind));
  for (size_t i = 0; i < g->n_taps; i++)
    if (g->taps[i].layer == layer && g->taps[i].target == target)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sthe loss %s <- %s appears twice", where, l->name, t->name);
  if (loss >= HM_ABI_LOSS_COUNT) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sunknown loss %u", where, loss);
  /* At most one loss per layer and target pair, and (with the cap) a
   * bounded duplicate check. */
  if (g->n_taps >= HM_MAX_NODES) return hm__fail(HM_STATUS_OUT_OF_RANGE, "%smore than %d losses", where, HM_MAX_NODES);
  hm_tap *taps = grow(g->taps, &g->cap_taps, g->n_taps, sizeof *taps);
  if (!taps) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  g->taps = taps;
  taps[g->n_taps++] = (hm_tap){layer, target, loss, line, col};
  return HM_OK;
}

/* ===== Builder ===== */

#define CHECK_GRAPH(g) \
  if (!(g)) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "NULL graph")

hm_status hm_graph_add_producer(hm_graph *g, const char *name, size_t width) {
  CHECK_GRAPH(g);
  hm_status st = hm__graph_add_node(g, name, HM_NODE_PRODUCER, 0, 0, 0);
  if (st == HM_OK) g->nodes[g->n_nodes - 1].declared_width = width;
  return st;
}

hm_status hm_graph_add_consumer(hm_graph *g, const char *name, size_t width) {
  CHECK_GRAPH(g);
  if (width > HM_MAX_WIDTH) return hm__fail(HM_STATUS_OUT_OF_RANGE, "width %zu exceeds %zu", width, HM_MAX_WIDTH);
  hm_status st = hm__graph_add_node(g, name, HM_NODE_CONSUMER, 0, 0, 0);
  if (st == HM_OK) g->nodes[g->n_nodes - 1].declared_width = width;
  return st;
}

hm_status hm_graph_add_layer(hm_graph *g, const char *name, size_t width) {
  CHECK_GRAPH(g);
  if (width > HM_MAX_WIDTH) return hm__fail(HM_STATUS_OUT_OF_RANGE, "width %zu exceeds %zu", width, HM_MAX_WIDTH);
  hm_status st = hm__graph_add_node(g, name, HM_NODE_LAYER, 0, 0, 0);
  if (st == HM_OK) g->nodes[g->n_nodes - 1].declared_width = width;
  return st;
}

hm_status hm_graph_add_layer_ratio(hm_graph *g, const char *name, int num, int den, const char *ref) {
  CHECK_GRAPH(g);
  if (num <= 0 || den <= 0)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "layer '%s': a ratio needs a positive numerator and denominator",
                    name ? name : "");
  if (!ref || hm__graph_find(g, ref) < 0)
    return hm__fail(HM_STATUS_NOT_FOUND, "layer '%s': the ratio refers to unknown node '%s'", name ? name : "",
                    ref ? ref : "(NULL)");
  HM_RETURN_IF_ERROR(hm__graph_add_node(g, name, HM_NODE_LAYER, 0, 0, 0));
  hm_node *n = &g->nodes[g->n_nodes - 1];
  n->has_ratio = 1;
  n->ratio_num = num;
  n->ratio_den = den;
  n->ratio_ref = hm__strdup(ref);
  return n->ratio_ref ? HM_OK : hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

hm_status hm_graph_connect(hm_graph *g, const char *from, const char *to, const char *activation) {
  CHECK_GRAPH(g);
  long s = from ? hm__graph_find(g, from) : -1, d = to ? hm__graph_find(g, to) : -1;
  if (s < 0) return hm__fail(HM_STATUS_NOT_FOUND, "unknown node '%s'", from ? from : "(NULL)");
  if (d < 0) return hm__fail(HM_STATUS_NOT_FOUND, "unknown node '%s'", to ? to : "(NULL)");
  uint32_t act = HM_ABI_ACT_IDENTITY;
  if (activation && hm_activation_from_name(activation, &act) != 0)
    return hm__fail(HM_STATUS_NOT_FOUND, "unknown activation '%s'", activation);
  return hm__graph_add_edge(g, (size_t)s, (size_t)d, act, 0, 0);
}

hm_status hm_graph_connect_spec(hm_graph *g, const char *from, const char *to, const char *activation,
                                const hm_connection_spec *spec) {
  CHECK_GRAPH(g);
  long d = to ? hm__graph_find(g, to) : -1;
  hm_connection_spec c = {0};
  if (spec && d >= 0) {
    char where[600];
    snprintf(where, sizeof where, "%s -> %s: ", from ? from : "(NULL)", to);
    HM_RETURN_IF_ERROR(hm__edge_spec_check(g, (size_t)d, spec, &c, where));
  }
  HM_RETURN_IF_ERROR(hm_graph_connect(g, from, to, activation));
  g->edges[g->n_edges - 1].spec = c;
  return HM_OK;
}

static hm_status add_shaped(hm_graph *g, const char *name, hm_node_kind kind, size_t c, size_t h, size_t w) {
  CHECK_GRAPH(g);
  if (c == 0 || h == 0 || w == 0 || c > HM_MAX_WIDTH || h > HM_MAX_WIDTH || w > HM_MAX_WIDTH ||
      c * h > HM_MAX_WIDTH || c * h * w > HM_MAX_WIDTH)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "'%s': shape {%zux%zux%zu} must have sizes of at least 1 and at most %zu values",
                    name ? name : "(NULL)", c, h, w, HM_MAX_WIDTH);
  HM_RETURN_IF_ERROR(hm__graph_add_node(g, name, kind, 0, 0, 0));
  return hm__graph_set_node_shape(g, g->n_nodes - 1, c, h, w, ""); /* checked above: cannot fail */
}

hm_status hm_graph_add_producer_shape(hm_graph *g, const char *name, size_t c, size_t h, size_t w) {
  return add_shaped(g, name, HM_NODE_PRODUCER, c, h, w);
}

hm_status hm_graph_add_layer_shape(hm_graph *g, const char *name, size_t c, size_t h, size_t w) {
  return add_shaped(g, name, HM_NODE_LAYER, c, h, w);
}

hm_status hm_graph_add_loss(hm_graph *g, const char *layer, const char *loss, const char *target) {
  CHECK_GRAPH(g);
  long l = layer ? hm__graph_find(g, layer) : -1, t = target ? hm__graph_find(g, target) : -1;
  if (l < 0) return hm__fail(HM_STATUS_NOT_FOUND, "unknown node '%s'", layer ? layer : "(NULL)");
  if (t < 0) return hm__fail(HM_STATUS_NOT_FOUND, "unknown node '%s'", target ? target : "(NULL)");
  uint32_t lv;
  if (!loss || hm_loss_from_name(loss, &lv) != 0)
    return hm__fail(HM_STATUS_NOT_FOUND, "unknown loss '%s'", loss ? loss : "(NULL)");
  return hm__graph_add_tap(g, (size_t)l, (size_t)t, lv, 0, 0);
}

/* ===== Introspection ===== */

const char *hm_graph_name(const hm_graph *g) { return g ? g->name : NULL; }
size_t hm_graph_node_count(const hm_graph *g) { return g ? g->n_nodes : 0; }

hm_status hm_graph_node(const hm_graph *g, size_t i, const char **name, hm_node_kind *kind, size_t *width) {
  if (!g || i >= g->n_nodes) return hm__fail(HM_STATUS_OUT_OF_RANGE, "node index %zu out of range", i);
  if (name) *name = g->nodes[i].name;
  if (kind) *kind = g->nodes[i].kind;
  if (width) *width = g->nodes[i].width ? g->nodes[i].width : g->nodes[i].declared_width;
  return HM_OK;
}

size_t hm_graph_connection_count(const hm_graph *g) { return g ? g->n_edges : 0; }

hm_status hm_graph_connection_spec(const hm_graph *g, size_t i, hm_connection_spec *out) {
  if (!g || !out || i >= g->n_edges) return hm__fail(HM_STATUS_OUT_OF_RANGE, "connection index out of range");
  *out = g->edges[i].spec;
  return HM_OK;
}

hm_status hm_graph_node_shape(const hm_graph *g, size_t i, size_t shape[3], int *rank) {
  if (!g || !shape || !rank || i >= g->n_nodes) return hm__fail(HM_STATUS_OUT_OF_RANGE, "node index out of range");
  const hm_node *n = &g->nodes[i];
  if (!n->width) return hm__fail(HM_STATUS_FAILED_PRECONDITION, "node '%s' has no resolved shape (resolve the graph first)", n->name);
  *rank = n->rank == 3 ? 3 : 1;
  shape[0] = n->rank == 3 ? n->shape[0] : n->width;
  shape[1] = n->rank == 3 ? n->shape[1] : 1;
  shape[2] = n->rank == 3 ? n->shape[2] : 1;
  return HM_OK;
}

hm_status hm_graph_connection(const hm_graph *g, size_t i, const char **from, const char **to, const char **activation) {
  if (!g || i >= g->n_edges) return hm__fail(HM_STATUS_OUT_OF_RANGE, "connection index %zu out of range", i);
  if (from) *from = g->nodes[g->edges[i].src].name;
  if (to) *to = g->nodes[g->edges[i].dst].name;
  if (activation) *activation = hm_activation_name(g->edges[i].activation);
  return HM_OK;
}

size_t hm_graph_loss_count(const hm_graph *g) { return g ? g->n_taps : 0; }

hm_status hm_graph_loss(const hm_graph *g, size_t i, const char **layer, const char **loss, const char **target) {
  if (!g || i >= g->n_taps) return hm__fail(HM_STATUS_OUT_OF_RANGE, "loss index %zu out of range", i);
  if (layer) *layer = g->nodes[g->taps[i].layer].name;
  if (loss) *loss = hm_loss_name(g->taps[i].loss);
  if (target) *target = g->nodes[g->taps[i].target].name;
  return HM_OK;
}

int hm_graph_has_training_taps(const hm_graph *g) { return g && g->n_taps > 0; }

size_t hm_graph_partition_count(const hm_graph *g) { return g ? g->n_cuts : 0; }
const char *hm_graph_partition_cut(const hm_graph *g, size_t i) { return g && i < g->n_cuts ? g->cuts[i] : NULL; }

hm_status hm__graph_set_cuts(hm_graph *g, const char *const *cuts, size_t n, int line, int col) {
  char **copy = n ? hm__calloc(n, sizeof *copy) : NULL;
  if (n && !copy) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  for (size_t i = 0; i < n; i++)
    if (!(copy[i] = hm__strdup(cuts[i]))) {
      for (size_t j = 0; j < i; j++) hm__free(copy[j]);
      hm__free(copy);
      return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    }
  for (size_t i = 0; i < g->n_cuts; i++) hm__free(g->cuts[i]);
  hm__free(g->cuts);
  g->cuts = copy;
  g->n_cuts = n;
  g->cuts_line = line;
  g->cuts_col = col;
  return HM_OK;
}

hm_status hm_graph_set_partition(hm_graph *g, const char *const *cuts, size_t n) {
  CHECK_GRAPH(g);
  if (n && !cuts) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_graph_set_partition: NULL cuts");
  if (n >= 64) return hm__fail(HM_STATUS_OUT_OF_RANGE, "a partition of %zu cuts (at most 63)", n);
  for (size_t i = 0; i < n; i++) {
    long node = cuts[i] ? hm__graph_find(g, cuts[i]) : -1;
    if (node < 0) return hm__fail(HM_STATUS_NOT_FOUND, "partition: no layer named '%s'", cuts[i] ? cuts[i] : "(NULL)");
    if (g->nodes[node].kind != HM_NODE_LAYER)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "partition: '%s' is a %s; a cut names a layer", cuts[i],
                      kind_name(g->nodes[node].kind));
  }
  return hm__graph_set_cuts(g, cuts, n, 0, 0);
}
const char *hm_graph_warnings(const hm_graph *g) { return g && g->warnings.data ? g->warnings.data : ""; }

/* ===== Bindings ===== */

static hm_status find_kind(hm_graph *g, const char *name, hm_node_kind kind, hm_node **out) {
  if (!g || !name) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "NULL graph or name");
  long i = hm__graph_find(g, name);
  if (i < 0) return hm__fail(HM_STATUS_NOT_FOUND, "graph '%s' has no node named '%s'", g->name, name);
  if (g->nodes[i].kind != kind)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "'%s' is a %s, not a %s", name, kind_name(g->nodes[i].kind),
                    kind_name(kind));
  *out = &g->nodes[i];
  return HM_OK;
}

hm_status hm_graph_bind_producer(hm_graph *g, const char *name, hm_producer *p) {
  hm_node *n = NULL;
  HM_RETURN_IF_ERROR(find_kind(g, name, HM_NODE_PRODUCER, &n));
  n->train = p;
  return HM_OK;
}

hm_status hm_graph_bind_eval(hm_graph *g, const char *name, hm_producer *p) {
  hm_node *n = NULL;
  HM_RETURN_IF_ERROR(find_kind(g, name, HM_NODE_PRODUCER, &n));
  n->eval = p;
  return HM_OK;
}

hm_status hm_graph_bind_consumer(hm_graph *g, const char *name, hm_consumer *c) {
  hm_node *n = NULL;
  HM_RETURN_IF_ERROR(find_kind(g, name, HM_NODE_CONSUMER, &n));
  n->consumer = c;
  return HM_OK;
}

/* ===== Order ===== */

hm_status hm__graph_topo_layers(const hm_graph *g, size_t **out, size_t *n_out) {
  size_t n = g->n_nodes;
  size_t *indeg = hm__calloc(n ? n : 1, sizeof *indeg), *order = hm__calloc(n ? n : 1, sizeof *order);
  if (!indeg || !order) {
    hm__free(indeg);
    hm__free(order);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  for (size_t e = 0; e < g->n_edges; e++)
    if (g->nodes[g->edges[e].src].kind == HM_NODE_LAYER && g->nodes[g->edges[e].dst].kind == HM_NODE_LAYER)
      indeg[g->edges[e].dst]++;
  size_t count = 0, layers = 0;
  /* Kahn's algorithm, taking ready layers in declaration order. */
  for (size_t i = 0; i < n; i++) layers += g->nodes[i].kind == HM_NODE_LAYER;
  int progress = 1;
  char *done = hm__calloc(n ? n : 1, 1);
  if (!done) {
    hm__free(indeg);
    hm__free(order);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  while (progress && count < layers) {
    progress = 0;
    for (size_t i = 0; i < n; i++) {
      if (g->nodes[i].kind != HM_NODE_LAYER || done[i] || indeg[i]) continue;
      done[i] = 1;
      order[count++] = i;
      progress = 1;
      for (size_t e = 0; e < g->n_edges; e++)
        if (g->edges[e].src == i && g->nodes[g->edges[e].dst].kind == HM_NODE_LAYER) indeg[g->edges[e].dst]--;
    }
  }
  hm_status st = HM_OK;
  if (count < layers) {
    for (size_t i = 0; i < n; i++)
      if (g->nodes[i].kind == HM_NODE_LAYER && !done[i]) {
        char where[300];
        hm__graph_where(g, g->nodes[i].line, g->nodes[i].col, where, sizeof where);
        st = hm__fail(HM_STATUS_INVALID_ARGUMENT,
                      "%slayer '%s' is on a cycle of connections; a graph must not feed a layer back into itself",
                      where, g->nodes[i].name);
        break;
      }
  }
  hm__free(indeg);
  hm__free(done);
  if (st != HM_OK) {
    hm__free(order);
    return st;
  }
  *out = order;
  *n_out = count;
  return HM_OK;
}

void hm__edge_weight_name(const hm_graph *g, const hm_edge *e, char *buf, size_t cap) {
  snprintf(buf, cap, "%s->%s.weight", g->nodes[e->src].name, g->nodes[e->dst].name);
}

void hm__edge_bias_name(const hm_graph *g, const hm_edge *e, char *buf, size_t cap) {
  snprintf(buf, cap, "%s->%s.bias", g->nodes[e->src].name, g->nodes[e->dst].name);
}

int hm__edge_into_layer(const hm_graph *g, const hm_edge *e) { return g->nodes[e->dst].kind == HM_NODE_LAYER; }

int hm__edge_is_matmul(const hm_graph *g, const hm_edge *e) {
  return hm__edge_into_layer(g, e) && (e->spec.kind == HM_CONNECTION_DENSE || e->spec.kind == HM_CONNECTION_CONV2D);
}

int hm__edge_has_weights(const hm_graph *g, const hm_edge *e) {
  return hm__edge_is_matmul(g, e) || (hm__edge_into_layer(g, e) && (e->spec.kind == HM_CONNECTION_BATCH_NORM ||
                                                                     e->spec.kind == HM_CONNECTION_LAYER_NORM));
}

size_t hm__edge_tensors(const hm_graph *g, size_t e, hm_param_desc out[4]) {
  size_t n = hm__edge_params(g, e, out);
  return n + hm__edge_state(g, e, out + n);
}

void hm__edge_matrix(const hm_graph *g, size_t e, size_t *rows, size_t *k, size_t *positions) {
  const hm_edge *ed = &g->edges[e];
  const hm_node *src = &g->nodes[ed->src], *dst = &g->nodes[ed->dst];
  if (ed->spec.kind != HM_CONNECTION_CONV2D) {
    *rows = dst->width, *k = src->width, *positions = 1;
    return;
  }
  const hm_connection_spec *c = &ed->spec;
  *rows = c->out_channels;
  *k = (size_t)(src->rank == 3 ? src->shape[0] / c->groups : 0) * c->kernel[0] * c->kernel[1];
  *positions = c->out_channels ? dst->width / c->out_channels : 0;
}

size_t hm__norm_channels(const hm_node *src) { return src->rank == 3 ? src->shape[0] : src->width; }

size_t hm__edge_state(const hm_graph *g, size_t e, hm_param_desc out[2]) {
  const hm_edge *ed = &g->edges[e];
  if (ed->spec.kind != HM_CONNECTION_BATCH_NORM || !hm__edge_into_layer(g, ed)) return 0;
  memset(out, 0, 2 * sizeof *out);
  const char *suffix[2] = {"running_mean", "running_var"};
  size_t c = hm__norm_channels(&g->nodes[ed->src]);
  for (int k = 0; k < 2; k++) {
    snprintf(out[k].name, sizeof out[k].name, "%s->%s.%s", g->nodes[ed->src].name, g->nodes[ed->dst].name, suffix[k]);
    out[k].rank = 1;
    out[k].shape[0] = c;
    out[k].count = c;
  }
  return 2;
}

size_t hm__edge_params(const hm_graph *g, size_t e, hm_param_desc out[2]) {
  const hm_edge *ed = &g->edges[e];
  if (!hm__edge_has_weights(g, ed)) return 0;
  memset(out, 0, 2 * sizeof *out);
  hm__edge_weight_name(g, ed, out[0].name, sizeof out[0].name);
  hm__edge_bias_name(g, ed, out[1].name, sizeof out[1].name);
  const hm_node *src = &g->nodes[ed->src], *dst = &g->nodes[ed->dst];
  if (ed->spec.kind == HM_CONNECTION_BATCH_NORM || ed->spec.kind == HM_CONNECTION_LAYER_NORM) {
    /* gamma and beta: per channel (batch norm), or the source's shape (layer norm, PyTorch's LayerNorm(shape)) */
    int layer = ed->spec.kind == HM_CONNECTION_LAYER_NORM;
    for (int k = 0; k < 2; k++) {
      if (layer && src->rank == 3) {
        out[k].rank = 3;
        for (int d = 0; d < 3; d++) out[k].shape[d] = src->shape[d];
        out[k].count = src->width;
      } else {
        out[k].rank = 1;
        out[k].shape[0] = layer ? src->width : hm__norm_channels(src);
        out[k].count = (size_t)out[k].shape[0];
      }
    }
    return 2;
  }
  if (ed->spec.kind == HM_CONNECTION_CONV2D) {
    const hm_connection_spec *c = &ed->spec;
    uint32_t cin = src->rank == 3 ? src->shape[0] : 0;
    out[0].rank = 4;
    out[0].shape[0] = c->out_channels;
    out[0].shape[1] = cin / c->groups;
    out[0].shape[2] = c->kernel[0];
    out[0].shape[3] = c->kernel[1];
    out[0].count = (size_t)c->out_channels * (cin / c->groups) * c->kernel[0] * c->kernel[1];
    if (c->no_bias) return 1;
    out[1].rank = 1;
    out[1].shape[0] = c->out_channels;
    out[1].count = c->out_channels;
    return 2;
  }
  out[0].rank = 2;
  out[0].shape[0] = dst->width;
  out[0].shape[1] = src->width;
  out[0].count = dst->width * src->width;
  out[1].rank = 1;
  out[1].shape[0] = dst->width;
  out[1].count = dst->width;
  return 2;
}

const char *hm__connection_kind_name(hm_connection_kind k) {
  switch (k) {
    case HM_CONNECTION_DENSE: return "dense";
    case HM_CONNECTION_CONV2D: return "conv";
    case HM_CONNECTION_MAX_POOL: return "max_pool";
    case HM_CONNECTION_AVG_POOL: return "avg_pool";
    case HM_CONNECTION_DROPOUT: return "dropout";
    case HM_CONNECTION_BATCH_NORM: return "batch_norm";
    case HM_CONNECTION_LAYER_NORM: return "layer_norm";
  }
  return "?";
}

void hm__node_shape_text(const hm_node *n, char *buf, size_t cap) {
  if (n->rank == 3) snprintf(buf, cap, "{%ux%ux%u}", n->shape[0], n->shape[1], n->shape[2]);
  else snprintf(buf, cap, "{%zu}", n->width);
}

#define WINDOW_MAX 65535u

hm_status hm__edge_spec_check(const hm_graph *g, size_t dst, const hm_connection_spec *spec, hm_connection_spec *out,
                              const char *where) {
  hm_connection_spec c = *spec;
  const char *kind = hm__connection_kind_name(c.kind);
  if ((unsigned)c.kind > HM_CONNECTION_LAYER_NORM)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sunknown connection kind %u", where, (unsigned)c.kind);
  int window = c.kind == HM_CONNECTION_CONV2D || c.kind == HM_CONNECTION_MAX_POOL || c.kind == HM_CONNECTION_AVG_POOL;
  if (c.kind != HM_CONNECTION_DENSE && g->nodes[dst].kind != HM_NODE_LAYER)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sa %s connection feeds a layer, not %s '%s'", where, kind,
                    g->nodes[dst].kind == HM_NODE_CONSUMER ? "consumer" : "producer", g->nodes[dst].name);
  if (window) {
    int pool = c.kind != HM_CONNECTION_CONV2D;
    for (int i = 0; i < 2; i++) {
      if (c.stride[i] == 0) c.stride[i] = pool ? c.kernel[i] : 1;
      if (c.dilation[i] == 0) c.dilation[i] = 1;
      if (c.kernel[i] == 0 || c.kernel[i] > WINDOW_MAX || c.stride[i] > WINDOW_MAX || c.padding[i] > WINDOW_MAX ||
          c.dilation[i] > WINDOW_MAX)
        return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                        "%s%s: kernel, stride and dilation must be 1 to %u and padding 0 to %u (got kernel %ux%u, "
                        "stride %ux%u, padding %ux%u, dilation %ux%u)",
                        where, kind, WINDOW_MAX, WINDOW_MAX, c.kernel[0], c.kernel[1], c.stride[0], c.stride[1],
                        c.padding[0], c.padding[1], c.dilation[0], c.dilation[1]);
      if (pool && c.dilation[i] != 1)
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s%s has no dilation", where, kind);
      if (pool && 2 * c.padding[i] > c.kernel[i])
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s%s: padding %u is more than half the %u-wide window", where, kind,
                        c.padding[i], c.kernel[i]);
    }
  } else if (c.kernel[0] || c.kernel[1] || c.stride[0] || c.stride[1] || c.padding[0] || c.padding[1] ||
             c.dilation[0] || c.dilation[1]) {
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sa %s connection has no kernel, stride, padding or dilation", where,
                    kind);
  }
  if (c.kind == HM_CONNECTION_CONV2D) {
    if (c.groups == 0) c.groups = 1;
    if (c.out_channels == 0 || c.out_channels > (1u << 20))
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sconv: the output channel count must be 1 to %u (got %u)", where,
                      1u << 20, c.out_channels);
    if (c.out_channels % c.groups)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sconv: groups %u does not divide the %u output channels", where,
                      c.groups, c.out_channels);
  } else if (c.out_channels || c.groups || c.no_bias) {
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sa %s connection has no channels, groups or bias", where, kind);
  }
  int norm = c.kind == HM_CONNECTION_BATCH_NORM || c.kind == HM_CONNECTION_LAYER_NORM;
  if (norm) {
    if (c.eps == 0.0f) c.eps = 1e-5f;
    if (c.kind == HM_CONNECTION_BATCH_NORM && c.momentum == 0.0f) c.momentum = 0.1f;
    if (!(c.eps > 0.0f && c.eps < 1.0f))
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s%s: eps must be above 0 and below 1 (got %g)", where, kind,
                      (double)c.eps);
    if (c.kind == HM_CONNECTION_BATCH_NORM && !(c.momentum > 0.0f && c.momentum <= 1.0f))
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sbatch_norm: momentum must be above 0 and at most 1 (got %g)",
                      where, (double)c.momentum);
    if (c.kind == HM_CONNECTION_LAYER_NORM && c.momentum != 0.0f)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%slayer_norm has no momentum (it keeps no running statistics)",
                      where);
  } else if (c.momentum != 0.0f || c.eps != 0.0f) {
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sa %s connection has no momentum or eps", where, kind);
  }
  if (c.kind == HM_CONNECTION_DROPOUT) {
    if (!(c.rate >= 0.0f && c.rate < 1.0f))
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sdropout: the rate must be at least 0 and below 1 (got %g)", where,
                      (double)c.rate);
  } else if (c.rate != 0.0f) {
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sa %s connection has no rate", where, kind);
  }
  *out = c;
  return HM_OK;
}

hm_status hm__graph_set_node_shape(hm_graph *g, size_t i, size_t c, size_t h, size_t w, const char *where) {
  hm_node *n = &g->nodes[i];
  if (n->kind == HM_NODE_CONSUMER)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sconsumer '%s': a consumer has a width {n}, not a shape", where, n->name);
  if (c == 0 || h == 0 || w == 0 || c > HM_MAX_WIDTH || h > HM_MAX_WIDTH || w > HM_MAX_WIDTH ||
      c * h > HM_MAX_WIDTH || c * h * w > HM_MAX_WIDTH)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s'%s': shape {%zux%zux%zu} must have sizes of at least 1 and at most %zu values",
                    where, n->name, c, h, w, HM_MAX_WIDTH);
  n->declared_rank = 3;
  n->declared_shape[0] = (uint32_t)c;
  n->declared_shape[1] = (uint32_t)h;
  n->declared_shape[2] = (uint32_t)w;
  n->declared_width = c * h * w;
  hm_weights_free(g->weights);
  g->weights = NULL;
  return HM_OK;
}
