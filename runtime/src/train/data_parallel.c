/*
 * Data-parallel training (data_parallel.h). Every rank holds the whole data
 * set and the same weights; per update each rank runs the micro-batch
 * program over its share of every global batch with the loss gradient
 * scaled by share/B (SLOT_LOSS_SCALE), so the ranks' gradient arenas sum to
 * the global batch mean. The sum is one all-reduce over one contiguous host
 * arena; the apply program then runs identically everywhere.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/container.h"
#include "lower/precision.h"
#include "train/data_parallel.h"
#include "train/trajectory.h"

hm_status hm__dp_create(const hm_collectives *c, hm_session *s, hm_dp **out) {
  if (c->struct_size != sizeof *c)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_collectives.struct_size is %zu, expected %zu", c->struct_size,
                    sizeof *c);
  if (c->size < 1 || c->rank < 0 || c->rank >= c->size || !c->allreduce_sum_f32 || !c->broadcast || !c->barrier)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "collectives: rank %d of %d, or a missing function", c->rank, c->size);
  hm_dp *dp = hm__calloc(1, sizeof *dp);
  if (!dp) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  dp->c = c;
  dp->n_grads = hm__session_grad_count(s);
  size_t bytes;
  if (hm__mul_size(dp->n_grads + 2, sizeof *dp->arena, &bytes) || !(dp->arena = hm__malloc(bytes))) {
    size_t n = dp->n_grads;
    hm__free(dp);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory for a gradient arena of %zu floats", n);
  }
  *out = dp;
  return HM_OK;
}

void hm__dp_free(hm_dp *dp) {
  if (!dp) return;
  hm__free(dp->arena);
  hm__free(dp);
}

void hm__dp_share(const hm_dp *dp, size_t b, size_t *begin, size_t *rows) {
  size_t r = (size_t)dp->c->rank, n = (size_t)dp->c->size;
  size_t lo = b * r / n, hi = b * (r + 1) / n;
  *begin = lo;
  *rows = hi - lo;
}

/* A collective call that failed: the implementation's message, prefixed. */
static hm_status collective(hm_status st, const char *what) {
  if (st != HM_OK) hm__error_prefix("data parallel: %s: ", what);
  return st;
}

/* What rank 0 sends at start; every rank compares its own with it. */
typedef struct start_fingerprint {
  uint32_t graph;
  uint32_t weights;
  int32_t schedule_kind;
  hm_policy policy;
  hm_fit_options opts; /* only the value fields are compared */
} start_fingerprint;

static uint32_t weights_crc(const hm_weights *w) {
  uint32_t crc = 0;
  for (size_t i = 0; w && i < hm_weights_count(w); i++) {
    hm_tensor t;
    if (hm_weights_at(w, i, &t) != HM_OK) break;
    crc = hm__crc32c(crc, t.name, strlen(t.name));
    crc = hm__crc32c(crc, t.data, t.bytes);
  }
  return crc;
}

hm_status hm__dp_check_start(hm_dp *dp, const hm_graph *g, const hm_policy *policy, const hm_fit_options *o,
                             int schedule_kind) {
  const hm_collectives *c = dp->c;
  start_fingerprint mine, root;
  memset(&mine, 0, sizeof mine);
  HM_RETURN_IF_ERROR(hm__graph_fingerprint(g, &mine.graph));
  mine.weights = weights_crc(g->weights);
  mine.schedule_kind = schedule_kind;
  mine.policy = policy ? *policy : hm_make_hardware_policy();
  mine.opts = *o;
  root = mine;
  HM_RETURN_IF_ERROR(collective(c->broadcast(c->self, &root, sizeof root, 0), "comparing the ranks at start"));
  /* This rank's verdict, then everyone's: a mismatch fails every rank. */
  char why[512] = "";
  const char *field = NULL;
  char here[96], there[96];
  if (mine.graph != root.graph)
    snprintf(why, sizeof why, "the graph '%s' differs from rank 0's (fingerprint %08x, rank 0 has %08x)", g->name,
             mine.graph, root.graph);
  else if (!hm__policy_same(&mine.policy, &root.policy)) {
    hm_policy_format(&mine.policy, here, sizeof here);
    hm_policy_format(&root.policy, there, sizeof there);
    snprintf(why, sizeof why, "the policy is %s here but %s on rank 0", here, there);
  } else if (hm__trajectory_difference(&mine.opts, mine.schedule_kind, &root.opts, root.schedule_kind, &field, here,
                                       there, sizeof here))
    snprintf(why, sizeof why, "%s is %s here but %s on rank 0", field, here, there);
  else if (mine.weights != root.weights)
    snprintf(why, sizeof why, "the initial weights differ from rank 0's (checksum %08x, rank 0 has %08x)", mine.weights,
             root.weights);
  float *bad = hm__calloc((size_t)c->size, sizeof *bad);
  if (!bad) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  bad[c->rank] = why[0] ? 1.0f : 0.0f;
  hm_status st = collective(c->allreduce_sum_f32(c->self, bad, (size_t)c->size), "comparing the ranks at start");
  int first = -1;
  for (int r = 0; st == HM_OK && r < c->size && first < 0; r++)
    if (bad[r] != 0.0f) first = r;
  hm__free(bad);
  if (st != HM_OK) return st;
  if (why[0]) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "data parallel: rank %d of %d: %s", c->rank, c->size, why);
  if (first >= 0)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                    "data parallel: rank %d runs a different graph, policy, options or weights than rank 0 (its own "
                    "message says which); every rank stops",
                    first);
  return HM_OK;
}

hm_status hm__dp_reduce_group(hm_dp *dp, hm_session *s, double *loss_mean, double *loss_rows) {
  const hm_collectives *c = dp->c;
  float *a = dp->arena;
  if (dp->grads_live) HM_RETURN_IF_ERROR(hm__session_grads_read(s, a));
  else memset(a, 0, dp->n_grads * sizeof *a);
  a[dp->n_grads] = (float)dp->loss_mean;
  a[dp->n_grads + 1] = (float)dp->loss_rows;
  HM_RETURN_IF_ERROR(collective(c->allreduce_sum_f32(c->self, a, dp->n_grads + 2), "summing the gradients"));
  HM_RETURN_IF_ERROR(hm__session_grads_write(s, a));
  *loss_mean = a[dp->n_grads];
  *loss_rows = a[dp->n_grads + 1];
  dp->grads_live = 0;
  dp->loss_mean = 0;
  dp->loss_rows = 0;
  return HM_OK;
}

hm_status hm__dp_agree_stop(hm_dp *dp, int *stop, hm_stop_reason *reason) {
  int32_t msg[2] = {*stop, (int32_t)*reason};
  HM_RETURN_IF_ERROR(collective(dp->c->broadcast(dp->c->self, msg, sizeof msg, 0), "agreeing on the stop"));
  *stop = msg[0];
  *reason = (hm_stop_reason)msg[1];
  return HM_OK;
}

hm_status hm__dp_evaluate(hm_dp *dp, hm_session *s, float *loss, float *accuracy) {
  size_t count = s->eval_count, begin, rows;
  hm__dp_share(dp, count, &begin, &rows);
  hm_eval_sums sums = {0, 0, 0.0, 0};
  if (rows) HM_RETURN_IF_ERROR(hm__session_evaluate_range(s, 1, 0, begin, begin + rows, &sums));
  /* loss sum, correct predictions, and whether the rank had loss/accuracy */
  float r[4] = {(float)sums.loss_sum, (float)sums.correct, rows ? (float)sums.has_loss : 0.0f,
                rows ? (float)sums.has_accuracy : 0.0f};
  HM_RETURN_IF_ERROR(collective(dp->c->allreduce_sum_f32(dp->c->self, r, 4), "reducing the evaluation"));
  *loss = r[2] > 0 ? (float)((double)r[0] / (double)count) : NAN;
  *accuracy = r[3] > 0 ? (float)((double)r[1] / (double)count) : NAN;
  return HM_OK;
}
