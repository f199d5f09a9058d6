/* The cycle state returned by fit and seen by fit_until's predicate. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/cycle_state.h"

#include "base/base.h"
#include "harmonics/names.h"
#include "lower/precision.h"
#include "train/trajectory.h"

hm_status hm__cycle_state_create(hm_cycle_state **out) {
  hm_cycle_state *st = hm__calloc(1, sizeof *st);
  if (!st) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  st->eval_loss = NAN;
  st->eval_accuracy = NAN;
  st->loss = NAN;
  st->grad_norm = NAN;
  st->stop_reason = HM_STOP_EPOCHS;
  st->best_norm = INFINITY;
  st->epoch_loss = NAN;
  *out = st;
  return HM_OK;
}

void hm_cycle_state_free(hm_cycle_state *st) {
  if (!st) return;
  hm_weights_free(st->weights);
  hm_weights_free(st->opt_state);
  for (size_t i = 0; i < st->n_layers; i++) {
    hm__free(st->layer_names[i]);
    hm__free(st->precisions[i]);
    hm__free(st->kernels[i]);
    hm__free(st->notes[i]);
  }
  hm__free(st->notes);
  hm__free(st->layer_names);
  hm__free(st->precisions);
  hm__free(st->kernels);
  hm__free(st->matrix_bytes);
  hm__free(st->matrix_weights);
  hm__free(st);
}

hm_status hm__cycle_state_describe(hm_cycle_state *st, const hm_plan *plan, hm_device *dev) {
  const hm_graph *g = plan->g;
  snprintf(st->backend, sizeof st->backend, "%s:%u", hm_device_backend(dev), hm_device_index(dev));
  size_t n = 0;
  for (size_t e = 0; e < g->n_edges; e++) n += plan->edges[e].has_weights;
  st->layer_names = hm__calloc(n ? n : 1, sizeof(char *));
  st->precisions = hm__calloc(n ? n : 1, sizeof(char *));
  st->kernels = hm__calloc(n ? n : 1, sizeof(char *));
  st->notes = hm__calloc(n ? n : 1, sizeof(char *));
  st->matrix_bytes = hm__calloc(n ? n : 1, sizeof(size_t));
  st->matrix_weights = hm__calloc(n ? n : 1, sizeof(size_t));
  if (!st->layer_names || !st->precisions || !st->kernels || !st->notes || !st->matrix_bytes || !st->matrix_weights)
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  for (size_t e = 0; e < g->n_edges; e++) {
    if (!plan->edges[e].has_weights) continue;
    const hm_edge_precision *p = &plan->edges[e].prec;
    size_t i = st->n_layers++;
    st->layer_names[i] = hm__asprintf("%s->%s", g->nodes[g->edges[e].src].name, g->nodes[g->edges[e].dst].name);
    st->precisions[i] = hm__strdup(hm__precision_name(p->dtype));
    int packed_conv = g->edges[e].spec.kind == HM_CONNECTION_CONV2D && hm__precision_is_packed(p->dtype);
    st->kernels[i] = hm__strdup(g->edges[e].spec.kind == HM_CONNECTION_DENSE || packed_conv
                                    ? hm__precision_kernel(p->dtype)
                                    : hm__connection_kind_name(g->edges[e].spec.kind));
    st->notes[i] = hm__strdup(p->note);
    hm_param_desc pd[2];
    (void)hm__edge_params(g, e, pd);
    size_t in, out, pos;
    hm__edge_matrix(g, e, &out, &in, &pos);
    st->matrix_bytes[i] = p->matmul ? hm__matrix_bytes(p->dtype, out, in) : pd[0].count * 4; /* norms: f32 */
    st->matrix_weights[i] = pd[0].count;
    if (!st->layer_names[i] || !st->precisions[i] || !st->kernels[i] || !st->notes[i])
      return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  return HM_OK;
}

void hm__cycle_state_go_live(hm_cycle_state *st, hm_weights_fetch_fn fetch, void *ctx) {
  st->fetch = fetch;
  st->fetch_ctx = ctx;
}

void hm__cycle_state_set_options(hm_cycle_state *st, const hm_fit_options *o, const hm_policy *p, int schedule_kind) {
  st->has_options = 1;
  st->opts = *o;
  st->opts.device = NULL;
  st->opts.backend = NULL;
  st->opts.progress.fn = NULL;
  st->opts.progress.user = NULL;
  st->opts.on_epoch = NULL;
  st->opts.on_epoch_user = NULL;
  st->opts.resume = NULL;
  st->opts.checkpoint_path = NULL;
  st->opts.cancel = NULL;
  st->opts.cancel_user = NULL;
  st->opts.collectives = NULL;
  st->opts.pipeline = NULL;
  st->opts.lr_schedule_fp.user = NULL;
  if (schedule_kind != 1) st->opts.lr_schedule_fp.fn = NULL;
  st->schedule_kind = schedule_kind;
  st->policy = p ? *p : hm_make_hardware_policy();
}

hm_status hm__cycle_state_sync(hm_cycle_state *st) {
  if (!st->fetch || (!st->weights_stale && st->weights)) return HM_OK;
  hm_weights *p = NULL, *o = NULL;
  HM_RETURN_IF_ERROR(st->fetch(st->fetch_ctx, &p, &o));
  hm_weights_free(st->weights);
  hm_weights_free(st->opt_state);
  st->weights = p;
  st->opt_state = o;
  st->weights_stale = 0;
  return HM_OK;
}

size_t hm_cycle_state_step(const hm_cycle_state *s) { return s ? s->step : 0; }
size_t hm_cycle_state_epoch(const hm_cycle_state *s) { return s ? s->epoch : 0; }
float hm_cycle_state_loss(const hm_cycle_state *s) { return s ? s->loss : NAN; }
float hm_cycle_state_epoch_loss(const hm_cycle_state *s) { return s ? s->epoch_loss : NAN; }
float hm_cycle_state_grad_norm(const hm_cycle_state *s) { return s ? s->grad_norm : NAN; }
float hm_cycle_state_learning_rate(const hm_cycle_state *s) { return s ? s->lr : NAN; }
double hm_cycle_state_elapsed(const hm_cycle_state *s) { return s ? s->elapsed : 0; }
double hm_cycle_state_train_seconds(const hm_cycle_state *s) { return s ? s->train_seconds : 0; }
double hm_cycle_state_wait_seconds(const hm_cycle_state *s) { return s ? s->wait_seconds : 0; }
size_t hm_cycle_state_samples(const hm_cycle_state *s) { return s ? s->samples : 0; }
float hm_cycle_state_eval_loss(const hm_cycle_state *s) { return s ? s->eval_loss : NAN; }
float hm_cycle_state_eval_accuracy(const hm_cycle_state *s) { return s ? s->eval_accuracy : NAN; }
hm_stop_reason hm_cycle_state_stop(const hm_cycle_state *s) { return s ? s->stop_reason : HM_STOP_EPOCHS; }
const char *hm_cycle_state_stop_reason(const hm_cycle_state *s) { return s ? hm_stop_reason_name(s->stop_reason) : NULL; }
const char *hm_cycle_state_backend(const hm_cycle_state *s) { return s ? s->backend : NULL; }
size_t hm_cycle_state_device_bytes(const hm_cycle_state *s) { return s ? s->device_bytes : 0; }
size_t hm_cycle_state_layer_count(const hm_cycle_state *s) { return s ? s->n_layers : 0; }

const hm_weights *hm_cycle_state_weights(const hm_cycle_state *s) {
  if (!s) return NULL;
  /* During fit_until's predicate the device may hold newer weights: fetch
   * them once per update on demand. The state is logically const. */
  if (s->fetch && hm__cycle_state_sync((hm_cycle_state *)s) != HM_OK) return NULL;
  return s->weights;
}

const hm_weights *hm_cycle_state_optimizer_state(const hm_cycle_state *s) {
  if (!s) return NULL;
  if (s->fetch && hm__cycle_state_sync((hm_cycle_state *)s) != HM_OK) return NULL;
  return s->opt_state;
}

const char *hm_cycle_state_layer_note(const hm_cycle_state *s, size_t i) {
  return s && i < s->n_layers && s->notes && s->notes[i] ? s->notes[i] : "";
}

hm_status hm_cycle_state_layer_weight_bytes(const hm_cycle_state *s, size_t i, size_t *bytes, size_t *count) {
  if (!s || i >= s->n_layers) return hm__fail(HM_STATUS_OUT_OF_RANGE, "layer index %zu out of range", i);
  if (bytes) *bytes = s->matrix_bytes[i];
  if (count) *count = s->matrix_weights[i];
  return HM_OK;
}

hm_status hm_cycle_state_layer_precision(const hm_cycle_state *s, size_t i, const char **layer, const char **precision,
                                         const char **kernel) {
  if (!s || i >= s->n_layers) return hm__fail(HM_STATUS_OUT_OF_RANGE, "layer index %zu out of range", i);
  if (layer) *layer = s->layer_names[i];
  if (precision) *precision = s->precisions[i];
  if (kernel) *kernel = s->kernels[i];
  return HM_OK;
}

hm_status hm__cycle_state_resume_into(const hm_cycle_state *r, hm_graph *g, const hm_fit_options *o,
                                      const hm_policy *policy) {
  /* The options that shape a training trajectory must match when resuming. */
  if (!r->has_options)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                    "resume: the state holds no fit options (it did not come from fit or a checkpoint)");
  HM_RETURN_IF_ERROR(hm__trajectory_compare(o, hm__schedule_kind(&o->lr_schedule_fp), &r->opts, r->schedule_kind));
  /* The precision policy shapes the trajectory too (quantization-aware steps). */
  hm_policy now = policy ? *policy : hm_make_hardware_policy();
  if (!hm__policy_same(&now, &r->policy)) {
    char a[160], b[160];
    hm_policy_format(&now, a, sizeof a);
    hm_policy_format(&r->policy, b, sizeof b);
    return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                    "resume: the policy is %s but the checkpoint was trained with %s (use hm_cycle_state_fit_options)",
                    a, b);
  }
  uint32_t fingerprint = 0;
  HM_RETURN_IF_ERROR(hm__graph_fingerprint(g, &fingerprint));
  if (r->graph_fingerprint != fingerprint)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "resume: the checkpoint was written for a different graph than '%s'",
                    g->name);
  if (!r->weights || !r->opt_state)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "resume: the state holds no weights or optimizer state");
  hm_status ws = hm_graph_set_weights(g, r->weights);
  if (ws != HM_OK) hm__error_prefix("resume: ");
  return ws;
}
