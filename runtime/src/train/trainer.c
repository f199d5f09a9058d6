/*
 * The trainer (harmonics/trainer.h): fit's steps one at a time over a
 * session. A batch runs the micro-batch program (the first after an update
 * overwrites the gradients, later ones add to them); an update runs the
 * apply program with fit's scalars (hm__step_scalars), so a loop of
 * compute + apply computes exactly what fit's fused step does. A trainer on
 * a graph without training data applies gradients it is given (a parameter
 * server); its checkpoints are fit's (.hck), and it resumes from them.
 */
#include <math.h>
#include <string.h>

#include "harmonics/serialization.h"
#include "harmonics/trainer.h"
#include "lower/precision.h"
#include "train/cycle_state.h"
#include "train/session.h"
#include "train/trajectory.h"

struct hm_trainer {
  hm_graph *g;
  hm_session *s;
  hm_fit_options o;
  hm_policy policy;
  int no_data; /* no training data bound: gradients come from hm_trainer_set_gradients */
  size_t step;
  size_t pending; /* gradient batches since the last update */
  float *arena;   /* hm__session_grad_count floats */
};

hm_status hm_trainer_open(hm_graph *g, const hm_policy *policy, const hm_fit_options *opts, hm_trainer **out) {
  if (!g || !opts || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_open: NULL argument");
  hm_fit_options o = *opts;
  HM_RETURN_IF_ERROR(hm__fit_options_check(&o));
  HM_RETURN_IF_ERROR(hm__policy_check(policy));
  if (o.pipeline)
    return hm__fail(HM_STATUS_UNIMPLEMENTED, "hm_trainer_open: the trainer runs one process's loop; a pipeline "
                                             "stage trains with hm_graph_fit and hm_fit_options.pipeline");
  if (!hm_graph_has_training_taps(g))
    return hm__fail(HM_STATUS_FAILED_PRECONDITION, "graph '%s' has no loss tap: it cannot be trained", g->name);
  HM_RETURN_IF_ERROR(hm_graph_resolve(g));
  if (o.resume) HM_RETURN_IF_ERROR(hm__cycle_state_resume_into(o.resume, g, &o, policy));
  int bound = 0;
  for (size_t i = 0; i < g->n_nodes; i++) bound |= g->nodes[i].train != NULL;
  hm_trainer *t = hm__calloc(1, sizeof *t);
  if (!t) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  t->g = g;
  t->o = o;
  t->policy = policy ? *policy : hm_make_hardware_policy();
  t->no_data = !bound;
  hm_session_spec spec = {1, 0, NULL, 1, t->no_data};
  hm_status st = hm__session_open(g, &o, policy, &spec, &t->s);
  if (st == HM_OK) st = hm__session_upload_weights(t->s);
  if (st == HM_OK && o.resume) {
    st = hm__session_upload_opt_state(t->s, o.resume->opt_state);
    t->step = o.resume->step;
  }
  size_t n = st == HM_OK ? hm__session_grad_count(t->s) : 0;
  if (st == HM_OK && !(t->arena = hm__malloc((n ? n : 1) * sizeof *t->arena)))
    st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu gradient values", n);
  if (st != HM_OK) {
    hm__session_free(t->s);
    hm__free(t);
    return st;
  }
  *out = t;
  return HM_OK;
}

void hm_trainer_close(hm_trainer *t) {
  if (!t) return;
  hm_weights *w = NULL;
  if (hm__session_download(t->s, &w, NULL) == HM_OK) { /* the graph keeps the trained weights */
    hm_weights_free(t->g->weights);
    t->g->weights = w;
  }
  hm__session_free(t->s);
  hm__free(t->arena);
  hm__free(t);
}

size_t hm_trainer_sample_count(const hm_trainer *t) { return t ? t->s->train_count : 0; }
size_t hm_trainer_step(const hm_trainer *t) { return t ? t->step : 0; }

hm_status hm_trainer_epoch_order(const hm_trainer *t, size_t epoch, int32_t *order, size_t n) {
  if (!t || !order) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_epoch_order: NULL argument");
  if (n != t->s->train_count)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_epoch_order: n is %zu, the training data has %zu samples", n,
                    t->s->train_count);
  hm__epoch_order(&t->o, epoch, order, n);
  return HM_OK;
}

hm_status hm_trainer_compute_gradients(hm_trainer *t, const int32_t *indices, size_t n, float *loss) {
  if (!t || !indices) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_compute_gradients: NULL argument");
  if (t->no_data)
    return hm__fail(HM_STATUS_FAILED_PRECONDITION, "hm_trainer_compute_gradients: graph '%s' has no training data "
                                                   "bound (this trainer applies the gradients it is given)",
                    t->g->name);
  if (n == 0 || n > t->s->train_rows)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_compute_gradients: %zu samples; a batch holds 1 to %zu", n,
                    t->s->train_rows);
  for (size_t i = 0; i < n; i++)
    if (indices[i] < 0 || (size_t)indices[i] >= t->s->train_count)
      return hm__fail(HM_STATUS_OUT_OF_RANGE, "hm_trainer_compute_gradients: index %d at %zu is outside the %zu samples",
                      indices[i], i, t->s->train_count);
  double scalars[N_SLOTS];
  HM_RETURN_IF_ERROR(hm__step_scalars(&t->o, t->step, 1.0, scalars));
  scalars[SLOT_STEP] = hm__dropout_step(scalars[SLOT_STEP], t->pending);
  float l = 0;
  HM_RETURN_IF_ERROR(
      hm__session_step(t->s, t->pending ? PROG_MICRO_ACC : PROG_MICRO_FIRST, indices, n, scalars, &l, NULL));
  t->pending++;
  if (loss) *loss = l;
  return HM_OK;
}

hm_status hm_trainer_gradients(hm_trainer *t, hm_weights **out) {
  if (!t || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_gradients: NULL argument");
  if (!t->pending) return hm__fail(HM_STATUS_FAILED_PRECONDITION, "hm_trainer_gradients: no batch computed since the last update");
  HM_RETURN_IF_ERROR(hm__session_grads_read(t->s, t->arena));
  hm_weights *w = NULL;
  HM_RETURN_IF_ERROR(hm_weights_create(&w));
  const float *at = t->arena;
  hm_status st = HM_OK;
  for (size_t e = 0; e < t->g->n_edges && st == HM_OK; e++) {
    if (!t->s->plan->edges[e].trainable) continue;
    hm_param_desc pd[2]; /* the session's arena order: each connection's weight, then its bias */
    size_t n = hm__edge_params(t->g, e, pd);
    for (size_t k = 0; k < n && st == HM_OK; k++) {
      st = hm_weights_set(w, pd[k].name, HM_ABI_DTYPE_F32, pd[k].rank, pd[k].shape, at);
      at += pd[k].count;
    }
  }
  if (st != HM_OK) {
    hm_weights_free(w);
    return st;
  }
  *out = w;
  return HM_OK;
}

hm_status hm_trainer_set_gradients(hm_trainer *t, const hm_weights *gradients) {
  if (!t || !gradients) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_set_gradients: NULL argument");
  float *at = t->arena;
  size_t expected = 0;
  for (size_t e = 0; e < t->g->n_edges; e++) {
    if (!t->s->plan->edges[e].trainable) continue;
    hm_param_desc pd[2];
    size_t n = hm__edge_params(t->g, e, pd);
    for (size_t k = 0; k < n; k++) {
      hm_tensor v;
      if (hm_weights_find(gradients, pd[k].name, &v) != HM_OK)
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_set_gradients: no gradient for '%s'", pd[k].name);
      int same = v.dtype == HM_ABI_DTYPE_F32 && v.rank == pd[k].rank;
      for (uint32_t d = 0; same && d < v.rank; d++) same = v.shape[d] == pd[k].shape[d];
      if (!same) {
        char want[96] = "";
        size_t len = 0;
        for (uint32_t d = 0; d < pd[k].rank; d++)
          len += (size_t)snprintf(want + len, sizeof want - len, "%s%llu", d ? ", " : "", (unsigned long long)pd[k].shape[d]);
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_set_gradients: '%s' must be f32 of shape [%s]",
                        pd[k].name, want);
      }
      memcpy(at, v.data, pd[k].count * sizeof *at);
      at += pd[k].count;
      expected++;
    }
  }
  if (hm_weights_count(gradients) != expected)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_set_gradients: %zu tensors given, the graph has %zu parameters",
                    hm_weights_count(gradients), expected);
  HM_RETURN_IF_ERROR(hm__session_grads_write(t->s, t->arena));
  t->pending = 1;
  return HM_OK;
}

void hm_trainer_clear_gradients(hm_trainer *t) {
  if (t) t->pending = 0;
}

hm_status hm_trainer_scale_gradients(hm_trainer *t, float factor) {
  if (!t) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_scale_gradients: NULL trainer");
  if (!isfinite(factor)) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_scale_gradients: factor %g", (double)factor);
  if (!t->pending) return hm__fail(HM_STATUS_FAILED_PRECONDITION, "hm_trainer_scale_gradients: no batch computed since the last update");
  HM_RETURN_IF_ERROR(hm__session_grads_read(t->s, t->arena));
  size_t n = hm__session_grad_count(t->s);
  for (size_t i = 0; i < n; i++) t->arena[i] *= factor;
  return hm__session_grads_write(t->s, t->arena);
}

hm_status hm_trainer_apply(hm_trainer *t, float *grad_norm) {
  if (!t) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_apply: NULL trainer");
  if (!t->pending) return hm__fail(HM_STATUS_FAILED_PRECONDITION, "hm_trainer_apply: no batch computed since the last update");
  double scalars[N_SLOTS];
  HM_RETURN_IF_ERROR(hm__step_scalars(&t->o, t->step, (double)t->pending, scalars));
  float sumsq = 0;
  HM_RETURN_IF_ERROR(hm__session_step(t->s, PROG_APPLY, NULL, 0, scalars, NULL, &sumsq));
  t->pending = 0;
  t->step++;
  float norm = sqrtf(sumsq);
  if (grad_norm) *grad_norm = norm;
  if (!isfinite(norm))
    return hm__fail(HM_STATUS_DIVERGED, "update %zu: the gradient norm is %g (the update was applied)", t->step,
                    (double)norm);
  return HM_OK;
}

hm_status hm_trainer_weights(hm_trainer *t, hm_weights **out) {
  if (!t || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_weights: NULL argument");
  return hm__session_download(t->s, out, NULL);
}

hm_status hm_trainer_set_weights(hm_trainer *t, const hm_weights *w) {
  if (!t || !w) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_set_weights: NULL argument");
  HM_RETURN_IF_ERROR(hm_graph_set_weights(t->g, w)); /* checks names, shapes and dtypes */
  return hm__session_write_weights(t->s, w);
}

hm_status hm_trainer_save_checkpoint(hm_trainer *t, const char *path) {
  if (!t || !path) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_trainer_save_checkpoint: NULL argument");
  hm_cycle_state *st = NULL;
  HM_RETURN_IF_ERROR(hm__cycle_state_create(&st));
  hm__cycle_state_set_options(st, &t->o, &t->policy, hm__schedule_kind(&t->o.lr_schedule_fp));
  st->step = t->step;
  st->stop_reason = HM_STOP_CHECKPOINT;
  hm_status rc = hm__graph_fingerprint(t->g, &st->graph_fingerprint);
  if (rc == HM_OK) rc = hm__cycle_state_describe(st, t->s->plan, t->s->dev);
  if (rc == HM_OK) rc = hm__session_download(t->s, &st->weights, &st->opt_state);
  if (rc == HM_OK) rc = hm_cycle_state_save(st, path);
  hm_cycle_state_free(st);
  return rc;
}
