/*
 * A graph's parameters: deterministic initialisation and checked
 * replacement. Each connection into a layer has "a->b.weight"
 * [width(b), width(a)] (PyTorch nn.Linear layout) and "a->b.bias" [width(b)].
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "base/rng.h"
#include "weights/weights.h"

const hm_weights *hm_graph_weights(const hm_graph *g) { return g ? g->weights : NULL; }

/* He-uniform for relu-like activations, Xavier-uniform for the rest. */
static double init_bound(uint32_t act, size_t fan_in, size_t fan_out) {
  switch (act) {
    case HM_ABI_ACT_RELU:
    case HM_ABI_ACT_LEAKY_RELU:
    case HM_ABI_ACT_GELU:
    case HM_ABI_ACT_SILU:
    case HM_ABI_ACT_ELU:
    case HM_ABI_ACT_SELU: return sqrt(6.0 / (double)fan_in);
    default: return sqrt(6.0 / (double)(fan_in + fan_out));
  }
}

hm_status hm__graph_init_edge(const hm_graph *g, size_t edge, uint64_t seed, hm_weights *w, const char *weight_name,
                              const char *bias_name) {
  const hm_edge *e = &g->edges[edge];
  size_t in = g->nodes[e->src].width, out = g->nodes[e->dst].width;
  char wn[600];
  hm__edge_weight_name(g, e, wn, sizeof wn);
  uint64_t shape[2] = {out, in};
  HM_RETURN_IF_ERROR(hm_weights_set(w, weight_name, HM_ABI_DTYPE_F32, 2, shape, NULL));
  HM_RETURN_IF_ERROR(hm_weights_set(w, bias_name, HM_ABI_DTYPE_F32, 1, shape, NULL));
  float *data = hm__weights_f32(w, weight_name);
  hm_rng rng;
  hm__rng_seed_named(&rng, seed, wn); /* the edge's own name: stages draw the whole graph's values */
  double b = init_bound(e->activation, in, out);
  for (size_t k = 0; k < in * out; k++) data[k] = (float)((2.0 * hm__rng_uniform(&rng) - 1.0) * b);
  return HM_OK;
}

hm_status hm_graph_init_weights(hm_graph *g, uint64_t seed) {
  if (!g) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "NULL graph");
  HM_RETURN_IF_ERROR(hm_graph_resolve(g));
  hm_weights *w = NULL;
  HM_RETURN_IF_ERROR(hm_weights_create(&w));
  hm_status st = HM_OK;
  for (size_t i = 0; i < g->n_edges && st == HM_OK; i++) {
    const hm_edge *e = &g->edges[i];
    if (!hm__edge_has_weights(g, e)) continue;
    char wn[600], bn[600];
    hm__edge_weight_name(g, e, wn, sizeof wn);
    hm__edge_bias_name(g, e, bn, sizeof bn);
    st = hm__graph_init_edge(g, i, seed, w, wn, bn);
  }
  if (st != HM_OK) {
    hm_weights_free(w);
    return st;
  }
  hm_weights_free(g->weights);
  g->weights = w;
  return HM_OK;
}

hm_status hm__graph_check_weights(const hm_graph *g, const hm_weights *w, const char *source) {
  size_t expected = 0;
  for (size_t i = 0; i < g->n_edges; i++) {
    const hm_edge *e = &g->edges[i];
    if (!hm__edge_has_weights(g, e)) continue;
    size_t in = g->nodes[e->src].width, out = g->nodes[e->dst].width;
    char names[2][600];
    hm__edge_weight_name(g, e, names[0], sizeof names[0]);
    hm__edge_bias_name(g, e, names[1], sizeof names[1]);
    for (int k = 0; k < 2; k++) {
      hm_tensor t;
      if (hm_weights_find(w, names[k], &t) != HM_OK)
        return hm__fail(HM_STATUS_NOT_FOUND, "%s: tensor '%s' is missing", source, names[k]);
      int ok = t.dtype == HM_ABI_DTYPE_F32 &&
               (k == 0 ? (t.rank == 2 && t.shape[0] == out && t.shape[1] == in) : (t.rank == 1 && t.shape[0] == out));
      if (t.dtype != HM_ABI_DTYPE_F32)
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: tensor '%s' has dtype %s, expected f32", source, names[k],
                        t.dtype == HM_ABI_DTYPE_F16 ? "f16" : t.dtype == HM_ABI_DTYPE_BF16 ? "bf16" : "other than f32");
      if (!ok) {
        char got[96] = "";
        size_t len = 0;
        for (uint32_t d = 0; d < t.rank && len < sizeof got - 24; d++)
          len += (size_t)snprintf(got + len, sizeof got - len, "%s%llu", d ? ", " : "", (unsigned long long)t.shape[d]);
        if (k == 0)
          return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: tensor '%s' has shape [%s], expected [%zu, %zu]", source,
                          names[k], got, out, in);
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: tensor '%s' has shape [%s], expected [%zu]", source, names[k],
                        got, out);
      }
      expected++;
    }
  }
  if (hm_weights_count(w) != expected) {
    for (size_t i = 0; i < hm_weights_count(w); i++) {
      hm_tensor t;
      if (hm_weights_at(w, i, &t) != HM_OK) continue;
      int known = 0;
      for (size_t k = 0; k < g->n_edges && !known; k++) {
        char wn[600], bn[600];
        hm__edge_weight_name(g, &g->edges[k], wn, sizeof wn);
        hm__edge_bias_name(g, &g->edges[k], bn, sizeof bn);
        known = strcmp(t.name, wn) == 0 || strcmp(t.name, bn) == 0;
      }
      if (!known)
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: tensor '%s' does not belong to graph '%s'", source, t.name,
                        g->name);
    }
  }
  return HM_OK;
}

hm_status hm_graph_set_weights(hm_graph *g, const hm_weights *w) {
  if (!g || !w) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_graph_set_weights: NULL argument");
  HM_RETURN_IF_ERROR(hm_graph_resolve(g));
  HM_RETURN_IF_ERROR(hm__graph_check_weights(g, w, "weights"));
  hm_weights *copy = NULL;
  HM_RETURN_IF_ERROR(hm_weights_clone(w, &copy));
  hm_weights_free(g->weights);
  g->weights = copy;
  return HM_OK;
}
