/*
 * Cutting a graph by layer into pipeline stages (harmonics/pipeline.h,
 * DESIGN.md §11). Stage k holds cut k's layer and everything it depends on
 * that no earlier stage holds, so connections only ever run forward from a
 * stage to a later one. A layer read by a later stage gets one boundary per
 * reading stage: a consumer on its own stage and a producer on the reader,
 * both named boundary<k>. The connection itself (weights, bias, activation)
 * stays on the reading side, so the boundary carries the layer's value and
 * every activation is applied exactly once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/partition.h"
#include "harmonics/names.h"

static hm_status oom(void) { return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory"); }

void hm_partition_free(hm_partition *p) {
  if (!p) return;
  for (size_t k = 0; p->stages && k < p->n_stages; k++) hm_graph_free(p->stages[k]);
  for (size_t k = 0; p->edge_origin && k < p->n_stages; k++) hm__free(p->edge_origin[k]);
  hm__free(p->stages);
  hm__free(p->edge_origin);
  hm__free(p->stage_of);
  hm__free(p->bounds);
  hm__free(p);
}

static const char *kind_word(hm_node_kind k) {
  return k == HM_NODE_PRODUCER ? "a producer" : k == HM_NODE_CONSUMER ? "a consumer" : "a layer";
}

/* Gives stage |stage| to |root| and every layer it depends on that has no
 * stage yet; *taken counts them. |stack| holds n_nodes entries. */
static void take_ancestors(const hm_graph *g, size_t root, size_t stage, size_t *stage_of, size_t *stack,
                           size_t *taken) {
  size_t top = 0;
  *taken = 0;
  if (stage_of[root] != HM_NO_INDEX) return;
  stage_of[root] = stage;
  stack[top++] = root;
  (*taken)++;
  while (top) {
    size_t n = stack[--top];
    for (size_t e = 0; e < g->n_edges; e++) {
      size_t s = g->edges[e].src;
      if (g->edges[e].dst != n || g->nodes[s].kind != HM_NODE_LAYER || stage_of[s] != HM_NO_INDEX) continue;
      stage_of[s] = stage;
      stack[top++] = s;
      (*taken)++;
    }
  }
}

/* Every layer's stage from the cuts; consumers follow their source. */
static hm_status assign_stages(hm_partition *p, const char *const *cuts, size_t n_cuts) {
  hm_graph *g = p->whole;
  size_t *stack = hm__malloc(g->n_nodes * sizeof *stack);
  if (!stack) return oom();
  for (size_t i = 0; i < g->n_nodes; i++) p->stage_of[i] = HM_NO_INDEX;
  hm_status st = HM_OK;
  for (size_t c = 0; c < n_cuts && st == HM_OK; c++) {
    long node = cuts[c] ? hm__graph_find(g, cuts[c]) : -1;
    if (node < 0) {
      st = hm__fail(HM_STATUS_NOT_FOUND, "partition: cut '%s': graph '%s' has no layer of that name",
                    cuts[c] ? cuts[c] : "(NULL)", g->name);
      break;
    }
    const hm_node *n = &g->nodes[node];
    if (n->kind != HM_NODE_LAYER) {
      st = hm__fail(HM_STATUS_INVALID_ARGUMENT, "partition: cut '%s' is %s; a cut names the layer a stage ends with",
                    cuts[c], kind_word(n->kind));
      break;
    }
    for (size_t d = 0; d < c && st == HM_OK; d++)
      if (strcmp(cuts[d], cuts[c]) == 0)
        st = hm__fail(HM_STATUS_INVALID_ARGUMENT, "partition: cut '%s' appears twice", cuts[c]);
    if (st != HM_OK) break;
    size_t taken = 0;
    size_t before = p->stage_of[node];
    take_ancestors(g, (size_t)node, c, p->stage_of, stack, &taken);
    if (!taken)
      st = hm__fail(HM_STATUS_INVALID_ARGUMENT,
                    "partition: cut '%s' (cut %zu) is already in stage %zu, upstream of an earlier cut: stage %zu would "
                    "be empty and run before the stage it feeds; list the cuts in the order the layers run",
                    cuts[c], c + 1, before, c);
  }
  size_t last = n_cuts, rest = 0;
  for (size_t i = 0; i < g->n_nodes && st == HM_OK; i++)
    if (g->nodes[i].kind == HM_NODE_LAYER && p->stage_of[i] == HM_NO_INDEX) {
      p->stage_of[i] = last;
      rest++;
    }
  if (st == HM_OK && !rest)
    st = hm__fail(HM_STATUS_INVALID_ARGUMENT,
                  "partition: no layer follows the last cut '%s': the last stage would be empty", cuts[n_cuts - 1]);
  hm__free(stack);
  if (st != HM_OK) return st;
  for (size_t e = 0; e < g->n_edges; e++) {
    const hm_edge *ed = &g->edges[e];
    if (g->nodes[ed->dst].kind != HM_NODE_CONSUMER) continue;
    size_t from = g->nodes[ed->src].kind == HM_NODE_LAYER ? p->stage_of[ed->src] : 0;
    p->stage_of[ed->dst] = from;
  }
  for (size_t i = 0; i < g->n_nodes; i++)
    if (g->nodes[i].kind == HM_NODE_CONSUMER && p->stage_of[i] == HM_NO_INDEX) p->stage_of[i] = 0; /* unfed */
  /* A layer never reads a later stage (the ancestor rule guarantees it; the
   * check keeps a future rule honest). */
  for (size_t e = 0; e < g->n_edges; e++) {
    const hm_edge *ed = &g->edges[e];
    if (g->nodes[ed->src].kind != HM_NODE_LAYER || p->stage_of[ed->src] <= p->stage_of[ed->dst]) continue;
    char where[300];
    hm__graph_where(g, ed->line, ed->col, where, sizeof where);
    return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                    "%spartition: the connection %s -> %s would run backward from stage %zu to stage %zu", where,
                    g->nodes[ed->src].name, g->nodes[ed->dst].name, p->stage_of[ed->src], p->stage_of[ed->dst]);
  }
  for (size_t t = 0; t < g->n_taps; t++) {
    const hm_tap *tap = &g->taps[t];
    if (p->stage_of[tap->layer] == last) continue;
    char where[300];
    hm__graph_where(g, tap->line, tap->col, where, sizeof where);
    return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                    "%spartition: the loss %s <-(%s)- %s is on layer '%s' of stage %zu, but every loss belongs to "
                    "the last stage (%zu): cut after a later layer",
                    where, g->nodes[tap->layer].name, hm_loss_name(tap->loss), g->nodes[tap->target].name,
                    g->nodes[tap->layer].name, p->stage_of[tap->layer], last);
  }
  return HM_OK;
}

/* One boundary per layer and later stage that reads it, in node order. */
static hm_status find_boundaries(hm_partition *p) {
  const hm_graph *g = p->whole;
  size_t K = p->n_stages;
  char *reads = hm__calloc(g->n_nodes * K, 1);
  if (!reads) return oom();
  size_t n = 0;
  for (size_t e = 0; e < g->n_edges; e++) {
    const hm_edge *ed = &g->edges[e];
    if (g->nodes[ed->src].kind != HM_NODE_LAYER || p->stage_of[ed->dst] == p->stage_of[ed->src]) continue;
    char *r = &reads[ed->src * K + p->stage_of[ed->dst]];
    n += !*r;
    *r = 1;
  }
  p->bounds = hm__calloc(n ? n : 1, sizeof *p->bounds);
  if (!p->bounds) {
    hm__free(reads);
    return oom();
  }
  for (size_t l = 0; l < g->n_nodes; l++)
    for (size_t t = 0; t < K; t++) {
      if (!reads[l * K + t]) continue;
      hm_boundary *b = &p->bounds[p->n_bounds];
      snprintf(b->name, sizeof b->name, "boundary%zu", p->n_bounds);
      b->layer = l;
      b->from = p->stage_of[l];
      b->to = t;
      b->width = g->nodes[l].width;
      b->in_node = b->out_node = HM_NO_INDEX;
      p->n_bounds++;
    }
  hm__free(reads);
  return HM_OK;
}

static const hm_boundary *boundary_into(const hm_partition *p, size_t layer, size_t to) {
  for (size_t i = 0; i < p->n_bounds; i++)
    if (p->bounds[i].layer == layer && p->bounds[i].to == to) return &p->bounds[i];
  return NULL;
}

/* Adds whole node |i| to stage graph |sg| as |kind| (its resolved width
 * declared, its place in the file kept for messages). */
static hm_status add_copy(hm_graph *sg, const hm_node *n, const char *name, hm_node_kind kind, size_t width,
                          size_t *local) {
  hm_status st = hm__graph_add_node(sg, name, kind, width, n->line, n->col);
  if (st != HM_OK) {
    hm__error_prefix("partition: stage '%s': ", sg->name);
    return st;
  }
  *local = sg->n_nodes - 1;
  if (n->rank == 3 && kind != HM_NODE_CONSUMER) /* images keep their shape across stages */
    return hm__graph_set_node_shape(sg, *local, n->shape[0], n->shape[1], n->shape[2], "");
  return HM_OK;
}

static int producer_on_stage(const hm_partition *p, size_t node, size_t k) {
  const hm_graph *g = p->whole;
  for (size_t e = 0; e < g->n_edges; e++)
    if (g->edges[e].src == node && p->stage_of[g->edges[e].dst] == k) return 1;
  for (size_t t = 0; t < g->n_taps; t++)
    if (g->taps[t].target == node && p->stage_of[g->taps[t].layer] == k) return 1;
  return 0;
}

static hm_status build_stage(hm_partition *p, size_t k, size_t *local) {
  const hm_graph *g = p->whole;
  char name[300];
  snprintf(name, sizeof name, "%s.stage%zu", g->name, k);
  hm_graph *sg = NULL;
  HM_RETURN_IF_ERROR(hm_graph_create(name, &sg));
  p->stages[k] = sg;
  if (g->filename && !(sg->filename = hm__strdup(g->filename))) return oom();
  for (size_t i = 0; i < g->n_nodes; i++) local[i] = HM_NO_INDEX;
  /* Producers the stage reads, then boundaries in, its layers, its consumers, boundaries out. */
  for (size_t i = 0; i < g->n_nodes; i++) {
    const hm_node *n = &g->nodes[i];
    if (n->kind != HM_NODE_PRODUCER || !producer_on_stage(p, i, k)) continue;
    HM_RETURN_IF_ERROR(add_copy(sg, n, n->name, HM_NODE_PRODUCER, n->declared_width, &local[i]));
    sg->nodes[local[i]].train = n->train;
    sg->nodes[local[i]].eval = n->eval;
  }
  for (size_t b = 0; b < p->n_bounds; b++) {
    hm_boundary *bd = &p->bounds[b];
    if (bd->to == k)
      HM_RETURN_IF_ERROR(add_copy(sg, &g->nodes[bd->layer], bd->name, HM_NODE_PRODUCER, bd->width, &bd->in_node));
  }
  for (size_t i = 0; i < g->n_nodes; i++) {
    const hm_node *n = &g->nodes[i];
    if (n->kind != HM_NODE_LAYER || p->stage_of[i] != k) continue;
    HM_RETURN_IF_ERROR(add_copy(sg, n, n->name, HM_NODE_LAYER, n->width, &local[i]));
  }
  for (size_t i = 0; i < g->n_nodes; i++) {
    const hm_node *n = &g->nodes[i];
    if (n->kind != HM_NODE_CONSUMER || p->stage_of[i] != k) continue;
    HM_RETURN_IF_ERROR(add_copy(sg, n, n->name, HM_NODE_CONSUMER, n->width, &local[i]));
    sg->nodes[local[i]].consumer = n->consumer;
  }
  for (size_t b = 0; b < p->n_bounds; b++) {
    hm_boundary *bd = &p->bounds[b];
    if (bd->from == k)
      HM_RETURN_IF_ERROR(add_copy(sg, &g->nodes[bd->layer], bd->name, HM_NODE_CONSUMER, bd->width, &bd->out_node));
  }
  /* Connections in the whole graph's order (so sums keep their order), then
   * each layer into its boundary consumers. */
  size_t *origin = hm__malloc((g->n_edges + p->n_bounds + 1) * sizeof *origin);
  if (!origin) return oom();
  p->edge_origin[k] = origin;
  for (size_t e = 0; e < g->n_edges; e++) {
    const hm_edge *ed = &g->edges[e];
    if (p->stage_of[ed->dst] != k) continue;
    size_t src = local[ed->src];
    if (src == HM_NO_INDEX) src = boundary_into(p, ed->src, k)->in_node;
    hm_status st = hm__graph_add_edge(sg, src, local[ed->dst], ed->activation, ed->line, ed->col);
    if (st != HM_OK) return st;
    sg->edges[sg->n_edges - 1].spec = ed->spec;
    origin[sg->n_edges - 1] = e;
  }
  for (size_t b = 0; b < p->n_bounds; b++) {
    const hm_boundary *bd = &p->bounds[b];
    if (bd->from != k) continue;
    const hm_node *l = &g->nodes[bd->layer];
    HM_RETURN_IF_ERROR(hm__graph_add_edge(sg, local[bd->layer], bd->out_node, HM_ABI_ACT_IDENTITY, l->line, l->col));
    origin[sg->n_edges - 1] = HM_NO_INDEX;
  }
  for (size_t t = 0; t < g->n_taps; t++) {
    const hm_tap *tap = &g->taps[t];
    if (p->stage_of[tap->layer] != k) continue;
    HM_RETURN_IF_ERROR(hm__graph_add_tap(sg, local[tap->layer], local[tap->target], tap->loss, tap->line, tap->col));
  }
  hm_status st = hm_graph_resolve(sg);
  if (st != HM_OK) {
    hm__error_prefix("partition: stage %zu: ", k);
    return st;
  }
  if (!g->weights) return HM_OK;
  hm_weights *w = NULL;
  st = hm_partition_stage_weights(p, k, g->weights, &w);
  if (st == HM_OK) st = hm_graph_set_weights(sg, w);
  hm_weights_free(w);
  return st;
}

static hm_status partition(hm_graph *g, const char *const *cuts, size_t n_cuts, hm_partition **out);

hm_status hm_graph_partition_by_layer(hm_graph *g, const char *const *cuts, size_t n_cuts, hm_partition **out) {
  if (!g || !out || (n_cuts && !cuts))
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_graph_partition_by_layer: NULL graph, cuts or output");
  if (n_cuts) return partition(g, cuts, n_cuts, out);
  if (!g->n_cuts)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                    "partition: no cut given (name the layer each stage ends with, or declare `partition by layer "
                    "a, b;` in the model)");
  /* The model's own `partition by layer ...;`: errors point at it. */
  hm_status st = partition(g, (const char *const *)g->cuts, g->n_cuts, out);
  if (st != HM_OK && g->filename && g->cuts_line > 0 && strncmp(hm_last_error(), g->filename, strlen(g->filename)))
    hm__error_prefix("%s:%d:%d: ", g->filename, g->cuts_line, g->cuts_col);
  return st;
}

static hm_status partition(hm_graph *g, const char *const *cuts, size_t n_cuts, hm_partition **out) {
  if (n_cuts + 1 > HM_MAX_STAGES)
    return hm__fail(HM_STATUS_OUT_OF_RANGE, "partition: %zu cuts make more than %d stages", n_cuts, HM_MAX_STAGES);
  HM_RETURN_IF_ERROR(hm_graph_resolve(g));
  hm_partition *p = hm__calloc(1, sizeof *p);
  if (!p) return oom();
  p->whole = g;
  p->n_stages = n_cuts + 1;
  p->stages = hm__calloc(p->n_stages, sizeof *p->stages);
  p->edge_origin = hm__calloc(p->n_stages, sizeof *p->edge_origin);
  p->stage_of = hm__calloc(g->n_nodes ? g->n_nodes : 1, sizeof *p->stage_of);
  size_t *local = hm__calloc(g->n_nodes ? g->n_nodes : 1, sizeof *local);
  hm_status st = p->stages && p->edge_origin && p->stage_of && local ? HM_OK : oom();
  if (st == HM_OK) st = assign_stages(p, cuts, n_cuts);
  if (st == HM_OK) st = find_boundaries(p);
  for (size_t k = 0; k < p->n_stages && st == HM_OK; k++) st = build_stage(p, k, local);
  hm__free(local);
  if (st != HM_OK) {
    hm_partition_free(p);
    return st;
  }
  uint32_t crc = 0;
  st = hm__graph_fingerprint(g, &crc);
  if (st != HM_OK) {
    hm_partition_free(p);
    return st;
  }
  for (size_t c = 0; c < n_cuts; c++) crc = hm__crc32c(crc, cuts[c], strlen(cuts[c]) + 1);
  p->fingerprint = crc;
  *out = p;
  return HM_OK;
}

size_t hm_partition_stage_count(const hm_partition *p) { return p ? p->n_stages : 0; }
hm_graph *hm_partition_stage(const hm_partition *p, size_t stage) {
  return p && stage < p->n_stages ? p->stages[stage] : NULL;
}
hm_graph *hm_partition_graph(const hm_partition *p) { return p ? p->whole : NULL; }
size_t hm_partition_boundary_count(const hm_partition *p) { return p ? p->n_bounds : 0; }

hm_status hm_partition_boundary(const hm_partition *p, size_t index, hm_boundary_info *out) {
  if (!p || !out || index >= p->n_bounds)
    return hm__fail(HM_STATUS_OUT_OF_RANGE, "partition: boundary %zu out of range", index);
  const hm_boundary *b = &p->bounds[index];
  out->name = b->name;
  out->layer = p->whole->nodes[b->layer].name;
  out->from_stage = b->from;
  out->to_stage = b->to;
  out->width = b->width;
  return HM_OK;
}

hm_status hm_partition_connection_origin(const hm_partition *p, size_t stage, size_t connection,
                                         size_t *whole_connection) {
  if (!p || !whole_connection || stage >= p->n_stages || connection >= p->stages[stage]->n_edges)
    return hm__fail(HM_STATUS_OUT_OF_RANGE, "partition: stage %zu connection %zu out of range", stage, connection);
  size_t e = p->edge_origin[stage][connection];
  if (e == HM_NO_INDEX)
    return hm__fail(HM_STATUS_NOT_FOUND, "partition: stage %zu connection %zu feeds a boundary; the whole graph lacks it",
                    stage, connection);
  *whole_connection = e;
  return HM_OK;
}

/* Copies each weighted connection's tensors (parameters and state) between
 * the names of stage |k| and those of the whole graph (|to_whole| picks the
 * way). */
static hm_status copy_stage_tensors(const hm_partition *p, size_t k, const hm_weights *from, hm_weights *to,
                                    int to_whole) {
  const hm_graph *sg = p->stages[k], *g = p->whole;
  for (size_t e = 0; e < sg->n_edges; e++) {
    if (!hm__edge_has_weights(sg, &sg->edges[e])) continue;
    hm_param_desc names[2][4];
    size_t n = hm__edge_tensors(sg, e, names[0]);
    (void)hm__edge_tensors(g, p->edge_origin[k][e], names[1]);
    for (size_t i = 0; i < n; i++) {
      const char *src = names[to_whole ? 0 : 1][i].name, *dst = names[to_whole ? 1 : 0][i].name;
      hm_tensor t;
      if (hm_weights_find(from, src, &t) != HM_OK)
        return hm__fail(HM_STATUS_NOT_FOUND, "partition: %s has no tensor '%s'",
                        to_whole ? "a stage's weights" : "the whole graph's weights", src);
      HM_RETURN_IF_ERROR(hm_weights_set(to, dst, t.dtype, t.rank, t.shape, t.data));
    }
  }
  return HM_OK;
}

hm_status hm_partition_stage_weights(const hm_partition *p, size_t stage, const hm_weights *whole, hm_weights **out) {
  if (!p || !whole || !out || stage >= p->n_stages)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_partition_stage_weights: NULL argument or stage %zu out of range",
                    stage);
  hm_weights *w = NULL;
  HM_RETURN_IF_ERROR(hm_weights_create(&w));
  hm_status st = copy_stage_tensors(p, stage, whole, w, 0);
  if (st != HM_OK) {
    hm_weights_free(w);
    return st;
  }
  *out = w;
  return HM_OK;
}

hm_status hm_partition_merge_weights(const hm_partition *p, const hm_weights *const *stages, hm_weights **out) {
  if (!p || !stages || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_partition_merge_weights: NULL argument");
  for (size_t k = 0; k < p->n_stages; k++)
    if (!stages[k]) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "partition: no weights for stage %zu", k);
  /* Gathered per stage, then written in the whole graph's own order, so the
   * set (and a file saved from it) is the one a single process produces. */
  hm_weights *renamed = NULL, *w = NULL;
  hm_status st = hm_weights_create(&renamed);
  if (st == HM_OK) st = hm_weights_create(&w);
  for (size_t k = 0; k < p->n_stages && st == HM_OK; k++) st = copy_stage_tensors(p, k, stages[k], renamed, 1);
  const hm_graph *g = p->whole;
  for (size_t e = 0; e < g->n_edges && st == HM_OK; e++) {
    hm_param_desc pd[4];
    size_t n = hm__edge_tensors(g, e, pd);
    for (size_t i = 0; i < n && st == HM_OK; i++) {
      hm_tensor t;
      st = hm_weights_find(renamed, pd[i].name, &t);
      if (st == HM_OK) st = hm_weights_set(w, pd[i].name, t.dtype, t.rank, t.shape, t.data);
    }
  }
  hm_weights_free(renamed);
  if (st != HM_OK) {
    hm_weights_free(w);
    return st;
  }
  *out = w;
  return HM_OK;
}

hm_status hm__partition_init_stage_weights(const hm_partition *p, size_t stage, uint64_t seed, hm_weights **out) {
  const hm_graph *sg = p->stages[stage];
  hm_weights *w = NULL;
  HM_RETURN_IF_ERROR(hm_weights_create(&w));
  hm_status st = HM_OK;
  for (size_t e = 0; e < sg->n_edges && st == HM_OK; e++) {
    if (!hm__edge_has_weights(sg, &sg->edges[e])) continue;
    char wn[600], bn[600];
    hm__edge_weight_name(sg, &sg->edges[e], wn, sizeof wn);
    hm__edge_bias_name(sg, &sg->edges[e], bn, sizeof bn);
    st = hm__graph_init_edge(p->whole, p->edge_origin[stage][e], seed, w, wn, bn);
  }
  if (st != HM_OK) {
    hm_weights_free(w);
    return st;
  }
  *out = w;
  return HM_OK;
}
