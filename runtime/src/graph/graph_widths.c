/*
 * Width resolution (DESIGN.md §3): explicit widths, bound data, ratios
 * (integer division), a layer fed directly by a producer takes its width, a
 * consumer takes its source's, and a layer carrying a loss tap takes the
 * width its target needs — overriding a disagreeing ratio with a warning
 * (the seed's MNIST example treats ratios as suggestions) but never an
 * explicit {n}.
 */
#include <stdio.h>
#include <string.h>

#include "graph/graph.h"

/* The width a producer's data gives it in the graph: class indices count as
 * one value per class (the one-hot width). */
static size_t data_width(const hm_producer_info *info) {
  return info->dtype == HM_ABI_DTYPE_I32 ? info->num_classes : info->width;
}

static hm_status producer_width(hm_graph *g, hm_node *n) {
  char where[300];
  hm__graph_where(g, n->line, n->col, where, sizeof where);
  hm_producer *sources[2] = {n->train, n->eval};
  const char *what[2] = {"training", "evaluation"};
  size_t seen = 0;
  for (int i = 0; i < 2; i++) {
    if (!sources[i]) continue;
    hm_producer_info info;
    hm_status st = hm_producer_info_get(sources[i], &info);
    if (st != HM_OK) {
      hm__error_prefix("producer '%s' (%s data): ", n->name, what[i]);
      return st;
    }
    size_t dw = data_width(&info);
    if (dw == 0 || dw > HM_MAX_WIDTH)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "producer '%s': its %s data has an invalid width %zu", n->name,
                      what[i], dw);
    /* Class indices are one value per sample, so the original system's
     * examples declare them {1}: the same as {number of classes}. */
    size_t declared = info.dtype == HM_ABI_DTYPE_I32 && n->declared_width == 1 ? 0 : n->declared_width;
    if (declared && dw != declared) {
      if (info.dtype == HM_ABI_DTYPE_I32)
        return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                        "%sproducer '%s' is declared {%zu} but its %s data are class indices of %zu classes (declare "
                        "{%zu} or {1})",
                        where, n->name, declared, what[i], info.num_classes, info.num_classes);
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sproducer '%s' is declared {%zu} but its %s data has %zu values per sample",
                      where, n->name, declared, what[i], dw);
    }
    if (seen && dw != seen)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "producer '%s': training and evaluation data differ in width (%zu vs %zu)",
                      n->name, seen, dw);
    seen = dw;
    /* Images whose data says so ({1x28x28} from an IDX file) unless the
     * model declared a shape of its own. */
    if (n->declared_rank != 3 && info.shape[0] && info.dtype != HM_ABI_DTYPE_I32) {
      n->rank = 3;
      for (int k = 0; k < 3; k++) n->shape[k] = (uint32_t)info.shape[k];
    }
  }
  n->width = seen ? seen : n->declared_width;
  return HM_OK;
}

/* The shape a convolution, pooling or dropout connection gives its layer
 * from its source's resolved shape; INVALID_ARGUMENT when it cannot. */
static hm_status edge_output(const hm_graph *g, const hm_edge *e, uint32_t out[3], int *rank) {
  const hm_node *s = &g->nodes[e->src];
  const hm_connection_spec *c = &e->spec;
  char where[300], shape[64];
  hm__graph_where(g, e->line, e->col, where, sizeof where);
  hm__node_shape_text(s, shape, sizeof shape);
  const char *kind = hm__connection_kind_name(c->kind);
  if (c->kind == HM_CONNECTION_DROPOUT || c->kind == HM_CONNECTION_BATCH_NORM || c->kind == HM_CONNECTION_LAYER_NORM) {
    *rank = s->rank;
    memcpy(out, s->shape, sizeof s->shape);
    return HM_OK;
  }
  if (s->rank != 3)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                    "%s%s %s -> %s reads images {channels x height x width} but '%s' is %s: declare its shape (e.g. "
                    "%s %s {1x28x28};)",
                    where, kind, s->name, g->nodes[e->dst].name, s->name, shape,
                    s->kind == HM_NODE_PRODUCER ? "producer" : "layer", s->name);
  if (c->kind == HM_CONNECTION_CONV2D && s->shape[0] % c->groups)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sconv %s -> %s: groups %u does not divide the %u input channels of %s",
                    where, s->name, g->nodes[e->dst].name, c->groups, s->shape[0], shape);
  for (int i = 0; i < 2; i++) {
    uint64_t in = (uint64_t)s->shape[1 + i] + 2ull * c->padding[i];
    uint64_t span = (uint64_t)c->dilation[i] * (c->kernel[i] - 1) + 1;
    if (span > in)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                      "%s%s %s -> %s: the %ux%u window%s does not fit %s with padding %ux%u", where, kind, s->name,
                      g->nodes[e->dst].name, c->kernel[0], c->kernel[1], c->dilation[0] > 1 || c->dilation[1] > 1 ? " (dilated)" : "",
                      shape, c->padding[0], c->padding[1]);
    out[1 + i] = (uint32_t)((in - span) / c->stride[i] + 1);
  }
  out[0] = c->kind == HM_CONNECTION_CONV2D ? c->out_channels : s->shape[0];
  *rank = 3;
  if ((uint64_t)out[0] * out[1] * out[2] > HM_MAX_WIDTH)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s%s %s -> %s gives {%ux%ux%u}, more than %zu values", where, kind,
                    s->name, g->nodes[e->dst].name, out[0], out[1], out[2], HM_MAX_WIDTH);
  return HM_OK;
}

/* Gives |d| the shape edge |e| computes, or checks the one it has. */
static hm_status apply_edge_shape(hm_graph *g, const hm_edge *e, int *progress) {
  hm_node *d = &g->nodes[e->dst];
  uint32_t shape[3] = {0, 0, 0};
  int rank = 1;
  HM_RETURN_IF_ERROR(edge_output(g, e, shape, &rank));
  size_t width = rank == 3 ? (size_t)shape[0] * shape[1] * shape[2] : g->nodes[e->src].width;
  if (d->width == width && (d->rank == 3 || rank != 3)) {
    if (rank == 3 && memcmp(d->shape, shape, sizeof shape) != 0) goto mismatch;
    return HM_OK;
  }
  if (d->width && d->width != width) goto mismatch;
  d->width = width;
  d->rank = rank;
  memcpy(d->shape, shape, sizeof shape);
  *progress = 1;
  return HM_OK;
mismatch:;
  char where[300], have[64], gives[64];
  hm__graph_where(g, e->line, e->col, where, sizeof where);
  hm__node_shape_text(d, have, sizeof have);
  hm_node tmp = *d;
  tmp.rank = rank;
  tmp.width = width;
  memcpy(tmp.shape, shape, sizeof shape);
  hm__node_shape_text(&tmp, gives, sizeof gives);
  return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s%s %s -> %s gives %s but '%s' is %s", where,
                  hm__connection_kind_name(e->spec.kind), g->nodes[e->src].name, d->name, gives, d->name, have);
}

hm_status hm_graph_resolve(hm_graph *g) {
  if (!g) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "NULL graph");
  hm__sb_free(&g->warnings);
  hm__sb_init(&g->warnings);
  for (size_t i = 0; i < g->n_nodes; i++) {
    hm_node *n = &g->nodes[i];
    n->width = 0;
    n->rank = n->declared_rank == 3 ? 3 : 1;
    memcpy(n->shape, n->declared_shape, sizeof n->shape);
    if (n->kind == HM_NODE_PRODUCER) HM_RETURN_IF_ERROR(producer_width(g, n));
    else n->width = n->declared_width;
  }
  /* Loss targets decide tapped layers first, so a ratio is only a suggestion. */
  for (size_t t = 0; t < g->n_taps; t++) {
    hm_node *l = &g->nodes[g->taps[t].layer], *target = &g->nodes[g->taps[t].target];
    if (!target->width) continue;
    if (l->declared_width && l->declared_width != target->width) {
      char where[300];
      hm__graph_where(g, g->taps[t].line, g->taps[t].col, where, sizeof where);
      return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                      "%slayer '%s' is declared {%zu} but its loss target '%s' needs width %zu", where, l->name,
                      l->declared_width, target->name, target->width);
    }
    if (l->width && l->width != target->width)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "layer '%s' has loss targets of different widths (%zu and %zu)",
                      l->name, l->width, target->width);
    l->width = target->width;
  }
  for (int progress = 1; progress;) {
    progress = 0;
    for (size_t i = 0; i < g->n_nodes; i++) {
      hm_node *n = &g->nodes[i];
      if (!n->has_ratio) continue;
      long ref = hm__graph_find(g, n->ratio_ref);
      if (ref < 0) return hm__fail(HM_STATUS_NOT_FOUND, "the ratio of '%s' refers to unknown node '%s'", n->name, n->ratio_ref);
      size_t rw = g->nodes[ref].width;
      if (!rw) continue;
      size_t w = rw * (size_t)n->ratio_num / (size_t)n->ratio_den;
      if (n->width && n->width != w) {
        if (n->kind == HM_NODE_LAYER) {
          /* Overridden by a loss target above: say so once. */
          if (!strstr(g->warnings.data ? g->warnings.data : "", n->name))
            hm__sb_printf(&g->warnings, "layer '%s': ratio %d/%d %s gives %zu but its loss target needs %zu; using %zu\n",
                          n->name, n->ratio_num, n->ratio_den, n->ratio_ref, w, n->width, n->width);
        }
        continue;
      }
      if (n->width) continue;
      if (w == 0 || w > HM_MAX_WIDTH)
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "the ratio %d/%d of %s gives '%s' the width %zu", n->ratio_num,
                        n->ratio_den, n->ratio_ref, n->name, w);
      if (n->kind == HM_NODE_PRODUCER && n->declared_width && n->declared_width != w) continue;
      n->width = w;
      progress = 1;
    }
    for (size_t e = 0; e < g->n_edges; e++) {
      hm_node *s = &g->nodes[g->edges[e].src], *d = &g->nodes[g->edges[e].dst];
      if (g->edges[e].spec.kind != HM_CONNECTION_DENSE) {
        if (s->width && !d->has_ratio) HM_RETURN_IF_ERROR(apply_edge_shape(g, &g->edges[e], &progress));
        continue;
      }
      if (d->width || d->has_ratio || !s->width) continue;
      /* A layer fed directly by a producer, or a consumer, takes the source's width. */
      if ((d->kind == HM_NODE_LAYER && s->kind == HM_NODE_PRODUCER) || d->kind == HM_NODE_CONSUMER) {
        d->width = s->width;
        progress = 1;
      }
    }
  }
  for (size_t i = 0; i < g->n_nodes; i++) {
    hm_node *n = &g->nodes[i];
    if (n->width) continue;
    int used = 0;
    for (size_t e = 0; e < g->n_edges; e++) used |= g->edges[e].src == i || g->edges[e].dst == i;
    for (size_t t = 0; t < g->n_taps; t++) used |= g->taps[t].layer == i || g->taps[t].target == i;
    if (!used && n->kind != HM_NODE_LAYER) continue;
    char where[300];
    hm__graph_where(g, n->line, n->col, where, sizeof where);
    if (n->kind == HM_NODE_PRODUCER)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%sthe width of producer '%s' is unknown: declare {n} or bind data to it",
                      where, n->name);
    return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                    "%sthe width of %s '%s' is unknown: give it {n} or a ratio, feed it from a producer, or attach a loss",
                    where, n->kind == HM_NODE_LAYER ? "layer" : "consumer", n->name);
  }
  for (size_t e = 0; e < g->n_edges; e++) {
    int unused = 0;
    if (g->edges[e].spec.kind != HM_CONNECTION_DENSE) HM_RETURN_IF_ERROR(apply_edge_shape(g, &g->edges[e], &unused));
  }
  for (size_t e = 0; e < g->n_edges; e++) {
    const hm_node *s = &g->nodes[g->edges[e].src], *d = &g->nodes[g->edges[e].dst];
    if (d->kind == HM_NODE_CONSUMER && s->width != d->width)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "consumer '%s' is declared {%zu} but '%s' sends it %zu values", d->name,
                      d->width, s->name, s->width);
  }
  for (size_t t = 0; t < g->n_taps; t++) {
    const hm_node *l = &g->nodes[g->taps[t].layer], *target = &g->nodes[g->taps[t].target];
    if (l->width != target->width)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "layer '%s' has width %zu but its loss target '%s' has width %zu",
                      l->name, l->width, target->name, target->width);
  }
  return HM_OK;
}
