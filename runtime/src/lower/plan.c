/* The plan (plan.h): computed once per session, read by the session and the lowering. */
#include "lower/plan.h"

#include <stdlib.h>

#include "harmonics/names.h"
#include "harmonics/plugins.h"

/* The ops a non-dense connection needs on |dev|: UNIMPLEMENTED naming the
 * first the device does not declare (an older or smaller plugin). */
static hm_status check_window_ops(const hm_graph *g, const hm_plan *p, hm_device *dev) {
  for (size_t e = 0; e < g->n_edges; e++) {
    const hm_edge *ed = &g->edges[e];
    if (ed->spec.kind == HM_CONNECTION_DENSE || !p->edges[e].into_layer) continue;
    uint32_t ops[3] = {0, 0, 0}, variant = 0;
    switch (ed->spec.kind) {
      case HM_CONNECTION_CONV2D:
        ops[0] = HM_ABI_OP_CONV2D;
        if (p->edges[e].backprop) ops[1] = HM_ABI_OP_CONV2D_BWD_FILTER, ops[2] = HM_ABI_OP_CONV2D_BWD_DATA;
        break;
      case HM_CONNECTION_MAX_POOL:
      case HM_CONNECTION_AVG_POOL:
        variant = ed->spec.kind == HM_CONNECTION_MAX_POOL ? HM_ABI_POOL_MAX : HM_ABI_POOL_AVG;
        ops[0] = HM_ABI_OP_POOL2D;
        if (p->edges[e].backprop) ops[1] = HM_ABI_OP_POOL2D_BWD;
        break;
      case HM_CONNECTION_BATCH_NORM:
        ops[0] = HM_ABI_OP_BATCH_NORM;
        variant = p->training ? HM_ABI_NORM_TRAIN : HM_ABI_NORM_EVAL;
        if (p->edges[e].backprop) ops[1] = HM_ABI_OP_BATCH_NORM_BWD;
        break;
      case HM_CONNECTION_LAYER_NORM:
        ops[0] = HM_ABI_OP_LAYER_NORM;
        if (p->edges[e].backprop) ops[1] = HM_ABI_OP_LAYER_NORM_BWD;
        break;
      default:
        if (p->training) ops[0] = HM_ABI_OP_DROPOUT;
        break;
    }
    for (int i = 0; i < 3; i++) {
      if (!ops[i] || hm_device_supports(dev, ops[i], HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, variant)) continue;
      char where[300];
      hm__graph_where(g, ed->line, ed->col, where, sizeof where);
      return hm__fail(HM_STATUS_UNIMPLEMENTED,
                      "%sbackend '%s' does not declare %s (ABI 1.1), which the %s connection %s -> %s needs; choose "
                      "another backend",
                      where, hm_device_backend(dev), hm_op_name(ops[i]), hm__connection_kind_name(ed->spec.kind),
                      g->nodes[ed->src].name, g->nodes[ed->dst].name);
    }
  }
  return HM_OK;
}

hm_status hm__plan_create(const hm_graph *g, const hm_policy *policy, hm_device *dev, int training,
                          const hm_plan_boundaries *bounds, hm_plan **out) {
  hm_plan *p = hm__calloc(1, sizeof *p);
  if (!p) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  p->g = g;
  p->training = training;
  p->accuracy_tap = -1;
  hm_status st = hm__graph_topo_layers(g, &p->order, &p->n_order);
  if (st == HM_OK) {
    p->nodes = hm__calloc(g->n_nodes ? g->n_nodes : 1, sizeof *p->nodes);
    p->edges = hm__calloc(g->n_edges ? g->n_edges : 1, sizeof *p->edges);
    if (!p->nodes || !p->edges) st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  if (st != HM_OK) {
    hm__plan_free(p);
    return st;
  }
  for (size_t i = 0; i < g->n_nodes; i++) {
    p->nodes[i].width = g->nodes[i].width;
    p->nodes[i].single_input = -1;
  }
  for (size_t e = 0; e < g->n_edges; e++) {
    const hm_edge *ed = &g->edges[e];
    p->nodes[ed->src].feeds = 1;
    p->nodes[ed->dst].n_inputs++;
    p->nodes[ed->dst].single_input = (long)e;
    p->edges[e].has_weights = hm__edge_has_weights(g, ed);
    p->edges[e].into_layer = hm__edge_into_layer(g, ed);
  }
  for (size_t t = 0; t < g->n_taps; t++) {
    p->nodes[g->taps[t].target].is_target = 1;
    p->nodes[g->taps[t].layer].needs_grad = 1;
  }
  /* A stage's boundary consumer brings its source layer a gradient from the
   * later stages, as a loss would. */
  for (size_t i = 0; bounds && i < g->n_nodes; i++) {
    p->nodes[i].boundary_in = bounds->in && bounds->in[i];
    p->nodes[i].boundary_out = bounds->out && bounds->out[i];
  }
  for (size_t e = 0; bounds && training && e < g->n_edges; e++)
    if (p->nodes[g->edges[e].dst].boundary_out && g->nodes[g->edges[e].src].kind == HM_NODE_LAYER)
      p->nodes[g->edges[e].src].needs_grad = p->nodes[g->edges[e].src].grad_from_host = 1;
  for (size_t i = 0; i < g->n_nodes && st == HM_OK; i++) {
    if (g->nodes[i].kind != HM_NODE_LAYER) continue;
    if (p->nodes[i].n_inputs > 1) p->nodes[i].single_input = -1;
    if (p->nodes[i].n_inputs == 0) {
      char where[300];
      hm__graph_where(g, g->nodes[i].line, g->nodes[i].col, where, sizeof where);
      st = hm__fail(HM_STATUS_INVALID_ARGUMENT, "%slayer '%s' has no input: connect something to it", where,
                    g->nodes[i].name);
    }
  }
  /* Which layers influence a loss: reverse topological order. */
  for (size_t k = p->n_order; k-- > 0;) {
    size_t l = p->order[k];
    for (size_t e = 0; e < g->n_edges; e++)
      if (g->edges[e].src == l && g->nodes[g->edges[e].dst].kind == HM_NODE_LAYER && p->nodes[g->edges[e].dst].needs_grad)
        p->nodes[l].needs_grad = 1;
  }
  /* A boundary producer hands its gradient back to the stage it came from. */
  for (size_t e = 0; e < g->n_edges; e++)
    if (p->nodes[g->edges[e].src].boundary_in && g->nodes[g->edges[e].dst].kind == HM_NODE_LAYER &&
        p->nodes[g->edges[e].dst].needs_grad)
      p->nodes[g->edges[e].src].needs_grad = training;
  for (size_t e = 0; e < g->n_edges; e++) {
    p->edges[e].backprop = training && p->edges[e].into_layer && p->nodes[g->edges[e].dst].needs_grad;
    p->edges[e].trainable = p->edges[e].backprop && p->edges[e].has_weights;
  }
  if (st == HM_OK && dev) st = check_window_ops(g, p, dev);
  for (size_t t = 0; t < g->n_taps && p->accuracy_tap < 0; t++)
    if (g->taps[t].loss == HM_ABI_LOSS_CROSS_ENTROPY) p->accuracy_tap = (long)t;
  if (st == HM_OK) {
    hm_edge_precision *prec = hm__calloc(g->n_edges ? g->n_edges : 1, sizeof *prec);
    if (!prec) st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    if (st == HM_OK) st = hm__precision_plan(policy, dev, g, training, prec);
    for (size_t e = 0; st == HM_OK && e < g->n_edges; e++) p->edges[e].prec = prec[e];
    hm__free(prec);
  }
  if (st != HM_OK) {
    hm__plan_free(p);
    return st;
  }
  *out = p;
  return HM_OK;
}

void hm__plan_free(hm_plan *p) {
  if (!p) return;
  hm__free(p->order);
  hm__free(p->nodes);
  hm__free(p->edges);
  hm__free(p);
}
