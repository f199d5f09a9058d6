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
  hm_param_desc p[2];
  size_t n = hm__edge_params(g, edge, p);
  if (n == 0) return HM_OK;
  HM_RETURN_IF_ERROR(hm_weights_set(w, weight_name, HM_ABI_DTYPE_F32, p[0].rank, p[0].shape, NULL));
  if (n == 2) HM_RETURN_IF_ERROR(hm_weights_set(w, bias_name, HM_ABI_DTYPE_F32, p[1].rank, p[1].shape, NULL));
  float *data = hm__weights_f32(w, weight_name);
  if (e->spec.kind == HM_CONNECTION_BATCH_NORM || e->spec.kind == HM_CONNECTION_LAYER_NORM) {
    /* gamma 1, beta 0; running mean 0, running variance 1 (as PyTorch) */
    for (size_t k = 0; k < p[0].count; k++) data[k] = 1.0f;
    hm_param_desc st[2];
    size_t ns = hm__edge_state(g, edge, st);
    for (size_t k = 0; k < ns; k++) {
      HM_RETURN_IF_ERROR(hm_weights_set(w, st[k].name, HM_ABI_DTYPE_F32, st[k].rank, st[k].shape, NULL));
      float *v = hm__weights_f32(w, st[k].name);
      for (size_t i = 0; i < st[k].count; i++) v[i] = k == 0 ? 0.0f : 1.0f;
    }
    return HM_OK;
  }
  hm_rng rng;
  hm__rng_seed_named(&rng, seed, p[0].name); /* the edge's own name: stages draw the whole graph's values */
  /* Fans as PyTorch counts them: a convolution's receptive field times its
   * channels (per group). */
  size_t fan_in = p[0].rank == 4 ? (size_t)(p[0].shape[1] * p[0].shape[2] * p[0].shape[3]) : g->nodes[e->src].width;
  size_t fan_out = p[0].rank == 4 ? (size_t)(p[0].shape[0] * p[0].shape[2] * p[0].shape[3]) : g->nodes[e->dst].width;
  double b = init_bound(e->activation, fan_in, fan_out);
  for (size_t k = 0; k < p[0].count; k++) data[k] = (float)((2.0 * hm__rng_uniform(&rng) - 1.0) * b);
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

static void shape_text(uint32_t rank, const uint64_t *shape, char *buf, size_t cap) {
  size_t len = 0;
  buf[0] = '\0';
  for (uint32_t d = 0; d < rank && len + 24 < cap; d++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%llu", d ? ", " : "", (unsigned long long)shape[d]);
}

hm_status hm__graph_check_weights(const hm_graph *g, const hm_weights *w, const char *source) {
  size_t expected = 0;
  for (size_t i = 0; i < g->n_edges; i++) {
    hm_param_desc p[4];
    size_t n = hm__edge_tensors(g, i, p);
    for (size_t k = 0; k < n; k++) {
      hm_tensor t;
      if (hm_weights_find(w, p[k].name, &t) != HM_OK)
        return hm__fail(HM_STATUS_NOT_FOUND, "%s: tensor '%s' is missing", source, p[k].name);
      if (t.dtype != HM_ABI_DTYPE_F32)
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: tensor '%s' has dtype %s, expected f32", source, p[k].name,
                        t.dtype == HM_ABI_DTYPE_F16 ? "f16" : t.dtype == HM_ABI_DTYPE_BF16 ? "bf16" : "other than f32");
      int ok = t.rank == p[k].rank;
      for (uint32_t d = 0; ok && d < t.rank; d++) ok = t.shape[d] == p[k].shape[d];
      if (!ok) {
        char got[96], want[96];
        shape_text(t.rank, t.shape, got, sizeof got);
        shape_text(p[k].rank, p[k].shape, want, sizeof want);
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "%s: tensor '%s' has shape [%s], expected [%s]", source, p[k].name,
                        got, want);
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
        hm_param_desc p[4];
        size_t n = hm__edge_tensors(g, k, p);
        for (size_t j = 0; j < n; j++) known |= strcmp(t.name, p[j].name) == 0;
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
