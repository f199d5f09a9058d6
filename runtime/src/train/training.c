/*
 * fit, fit_for, fit_until and inference (DESIGN.md §4).
 *
 * An epoch is one pass over the training data in mini-batches of
 * batch_size, in a fresh order per epoch drawn from (seed, epoch). A step is
 * one optimizer update: with accumulate_steps k, the gradients of k
 * micro-batches are averaged first (a partial group at the end of an epoch
 * is applied then, averaged over its own micro-batches). Per update u (0-based) the learning rate is
 * lr_schedule_fp(u) or learning_rate, and Adam's bias corrections use t = u+1.
 * The progress sink, early stopping (norm + delta < best improves; stop after
 * `patience` updates without improvement) and fit_until's predicate run
 * after each update, in that order.
 *
 * An update whose loss or gradient norm is not finite ends fit with
 * HM_STATUS_DIVERGED. By then the fused step has already written it into
 * the weights, so the loop keeps the state of the latest epoch start whose
 * weights are finite and replays from there to the last finite update
 * (training is deterministic): the graph and the final checkpoint hold those
 * weights, and the fast path pays one download per epoch for it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harmonics/serialization.h"
#include "harmonics/training.h"
#include "train/cycle_state.h"
#include "train/data_parallel.h"
#include "train/pipeline.h"
#include "train/session.h"
#include "train/trajectory.h"

hm_fit_options hm_fit_options_default(void) {
  hm_fit_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.learning_rate = 0.01f;
  o.optimizer = HM_OPTIMIZER_SGD;
  o.accumulate_steps = 1;
  o.batch_size = 32;
  o.shuffle = 1;
  o.beta1 = 0.9f;
  o.beta2 = 0.999f;
  o.epsilon = 1e-8f;
  o.rho = 0.9f;
  o.eval_batch_size = 1000;
  return o;
}

typedef enum fit_mode { MODE_EPOCHS, MODE_SECONDS, MODE_UNTIL } fit_mode;

typedef struct fit_limits {
  fit_mode mode;
  size_t epochs;
  double seconds;
  hm_stop_predicate pred;
  void *user;
} fit_limits;

/* The loop's counters at the start of an epoch, with the device's weights. */
typedef struct snapshot {
  hm_weights *params, *opt_state;
  hm_cycle_state at; /* only the fields copy_progress copies */
} snapshot;

/* Where a run stands: what a resume or a replay restores. */
static void copy_progress(hm_cycle_state *dst, const hm_cycle_state *src) {
  dst->step = src->step;
  dst->epoch = src->epoch;
  dst->position = src->position;
  dst->samples = src->samples;
  dst->train_seconds = src->train_seconds;
  dst->loss = src->loss;
  dst->epoch_loss = src->epoch_loss;
  dst->epoch_loss_sum = src->epoch_loss_sum;
  dst->epoch_loss_rows = src->epoch_loss_rows;
  dst->grad_norm = src->grad_norm;
  dst->lr = src->lr;
  dst->eval_loss = src->eval_loss;
  dst->eval_accuracy = src->eval_accuracy;
  dst->best_norm = src->best_norm;
  dst->stall = src->stall;
}

/* The first update that was not finite. */
typedef struct divergence {
  int found;
  size_t step; /* 1-based, as the progress sink numbers steps */
  size_t epoch;
  float loss, grad_norm;
  double lr;
} divergence;

typedef struct loop {
  hm_session *s;
  hm_cycle_state *st;
  const hm_fit_options *o;
  const fit_limits *lim;
  size_t micro;      /* micro-batches in the current accumulation group */
  double loss_sum;   /* their losses */
  float best_norm;
  size_t stall;
  int stop;
  size_t replaying;  /* re-running updates after a divergence up to this step: no callbacks */
  snapshot snap;
  divergence bad;
  hm_dp *dp;          /* data parallel: this rank's part (NULL: one process) */
  size_t group_rows;  /* data parallel and pipeline: rows of the current group */
  hm_pipe *pipe;      /* pipeline: this stage's part (NULL: the whole graph here) */
  const int32_t **group_idx; /* pipeline: the current group's micro-batches */
  size_t *group_n;
  const char *checkpoint_path;
} loop;

/* Whether this process decides stops and runs the callbacks: rank 0 of a
 * data-parallel fit, the last stage of a pipeline. */
static int is_root(const loop *L) { return hm__dp_is_root(L->dp) && hm__pipe_is_root(L->pipe); }


static hm_status checkpoint(loop *L) {
  /* Rank 0 writes; every pipeline stage writes its own. */
  if (!L->checkpoint_path || !hm__dp_is_root(L->dp)) return HM_OK;
  L->st->best_norm = L->best_norm;
  L->st->stall = L->stall;
  L->st->elapsed = hm__now() - L->st->start_time;
  hm_status st = hm_cycle_state_save(L->st, L->checkpoint_path);
  if (st != HM_OK) hm__error_prefix("checkpoint: ");
  return st;
}

/* A checkpoint_every checkpoint, after a finite update outside a replay. */
static hm_status checkpoint_due(loop *L) {
  if (L->bad.found || L->replaying || !L->o->checkpoint_every || L->st->step % L->o->checkpoint_every) return HM_OK;
  return checkpoint(L);
}

/* After an update: bookkeeping, progress, early stop, predicate. */
static void after_update(loop *L, float loss, float sumsq, double lr) {
  hm_cycle_state *st = L->st;
  const hm_fit_options *o = L->o;
  float norm = sqrtf(sumsq);
  if (!isfinite(loss) || !isfinite(norm)) {
    if (!L->replaying) L->bad = (divergence){1, st->step + 1, st->epoch, loss, norm, lr};
    L->stop = 1;
    return;
  }
  st->step++;
  st->loss = loss;
  st->grad_norm = norm;
  st->lr = (float)lr;
  st->weights_stale = 1;
  st->elapsed = hm__now() - st->start_time;
  if (L->replaying) { /* the updates are known; early stopping's counters are replayed too */
    if (o->early_stop_patience > 0 && norm + o->early_stop_delta < L->best_norm) {
      L->best_norm = norm;
      L->stall = 0;
    } else if (o->early_stop_patience > 0) {
      L->stall++;
    }
    L->stop = st->step >= L->replaying;
    return;
  }
  if (!is_root(L)) return; /* rank 0 or the last stage decides; the others follow */
  if (o->progress.fn) o->progress.fn(o->progress.user, st->step, norm, loss, (float)lr);
  if (o->cancel && o->cancel(o->cancel_user)) {
    st->stop_reason = HM_STOP_CANCELLED;
    L->stop = 1;
    return;
  }
  if (o->early_stop_patience > 0) {
    if (norm + o->early_stop_delta < L->best_norm) {
      L->best_norm = norm;
      L->stall = 0;
    } else if (++L->stall >= o->early_stop_patience) {
      st->stop_reason = HM_STOP_EARLY_STOP;
      L->stop = 1;
      return;
    }
  }
  if (L->lim->mode == MODE_UNTIL && L->lim->pred(st, L->lim->user)) {
    st->stop_reason = HM_STOP_PREDICATE;
    L->stop = 1;
  }
  if (L->lim->mode == MODE_SECONDS && st->elapsed >= L->lim->seconds) {
    st->stop_reason = HM_STOP_TIME;
    L->stop = 1;
  }
}

/* Data parallel: the summed gradients of a group of micro-batches become
 * one update on every rank, and rank 0's stop decision everyone's. */
static hm_status apply_group(loop *L) {
  double scalars[N_SLOTS], loss_mean = 0, loss_rows = 0;
  float sumsq = 0;
  double t0 = hm__now();
  HM_RETURN_IF_ERROR(hm__dp_reduce_group(L->dp, L->s, &loss_mean, &loss_rows));
  HM_RETURN_IF_ERROR(hm__step_scalars(L->o, L->st->step, (double)L->micro, scalars));
  HM_RETURN_IF_ERROR(hm__session_step(L->s, PROG_APPLY, NULL, 0, scalars, NULL, &sumsq));
  L->st->train_seconds += hm__now() - t0;
  L->st->epoch_loss_sum += loss_rows;
  L->st->epoch_loss_rows += L->group_rows;
  float mean_loss = (float)(loss_mean / (double)L->micro);
  L->micro = 0;
  L->group_rows = 0;
  after_update(L, mean_loss, sumsq, scalars[SLOT_LR]);
  int stop = L->stop;
  hm_stop_reason reason = L->st->stop_reason;
  HM_RETURN_IF_ERROR(hm__dp_agree_stop(L->dp, &stop, &reason));
  L->stop = stop;
  L->st->stop_reason = reason;
  return checkpoint_due(L);
}

/* Pipeline: a group's micro-batches through every stage, then the update,
 * the global gradient norm and the last stage's decision on every stage. */
static hm_status apply_group_pipe(loop *L) {
  hm_cycle_state *st = L->st;
  double scalars[N_SLOTS], loss_sum = 0, loss_rows = 0;
  float sumsq = 0;
  double t0 = hm__now(), w0 = hm__pipe_waited(L->pipe);
  HM_RETURN_IF_ERROR(hm__pipe_update(L->pipe, st->step, L->group_idx, L->group_n, L->micro, &loss_sum, &loss_rows));
  HM_RETURN_IF_ERROR(hm__step_scalars(L->o, st->step, (double)L->micro, scalars));
  HM_RETURN_IF_ERROR(hm__session_step(L->s, PROG_APPLY, NULL, 0, scalars, NULL, &sumsq));
  HM_RETURN_IF_ERROR(hm__pipe_sum_squares(L->pipe, st->step, &sumsq));
  st->train_seconds += hm__now() - t0;
  hm_pipe_decision d = {0, 0, 0, 0, 0};
  size_t step = st->step;
  if (is_root(L)) {
    d.loss = (float)(loss_sum / (double)L->micro);
    d.sumsq = sumsq;
    d.loss_rows = loss_rows;
    after_update(L, (float)d.loss, sumsq, scalars[SLOT_LR]);
    d.stop = L->stop;
    d.reason = (int32_t)st->stop_reason;
  }
  double t1 = hm__now();
  HM_RETURN_IF_ERROR(hm__pipe_decide(L->pipe, step, &d));
  st->train_seconds += hm__now() - t1; /* waiting for the decision is pipeline time too */
  st->wait_seconds += hm__pipe_waited(L->pipe) - w0;
  if (!is_root(L)) {
    after_update(L, (float)d.loss, (float)d.sumsq, scalars[SLOT_LR]);
    L->stop = d.stop;
    st->stop_reason = (hm_stop_reason)d.reason;
  }
  st->epoch_loss_sum += d.loss_rows;
  st->epoch_loss_rows += L->group_rows;
  L->micro = 0;
  L->group_rows = 0;
  return checkpoint_due(L);
}

/* Pipeline: one micro-batch joins the group; a full group is an update. */
static hm_status run_batch_pipe(loop *L, const int32_t *idx, size_t b) {
  L->group_idx[L->micro] = idx;
  L->group_n[L->micro] = b;
  L->micro++;
  L->group_rows += b;
  L->st->samples += b;
  L->st->position += b;
  if (L->micro < L->o->accumulate_steps) return HM_OK;
  return apply_group_pipe(L);
}

/* Data parallel: this rank's share of one global (micro-)batch. */
static hm_status run_batch_dp(loop *L, const int32_t *idx, size_t b) {
  hm_dp *dp = L->dp;
  size_t begin, rows;
  hm__dp_share(dp, b, &begin, &rows);
  double scalars[N_SLOTS];
  double t0 = hm__now();
  if (rows) {
    float loss = 0;
    HM_RETURN_IF_ERROR(hm__step_scalars(L->o, L->st->step, 1.0, scalars));
    scalars[SLOT_LOSS_SCALE] = (double)rows / (double)b;
    scalars[SLOT_STEP] = hm__dropout_step(scalars[SLOT_STEP], L->micro);
    HM_RETURN_IF_ERROR(hm__session_step(L->s, dp->grads_live ? PROG_MICRO_ACC : PROG_MICRO_FIRST, idx + begin, rows,
                                        scalars, &loss, NULL));
    dp->grads_live = 1;
    dp->loss_mean += (double)loss * (double)rows / (double)b;
    dp->loss_rows += (double)loss * (double)rows;
  }
  L->st->train_seconds += hm__now() - t0;
  L->micro++;
  L->group_rows += b;
  L->st->samples += b;
  L->st->position += b;
  if (L->micro < L->o->accumulate_steps) return HM_OK;
  return apply_group(L);
}

/* One mini-batch: a whole step, or one micro-batch of a group. */
static hm_status run_batch(loop *L, const int32_t *idx, size_t b) {
  hm_session *s = L->s;
  const hm_fit_options *o = L->o;
  double scalars[N_SLOTS];
  float loss = 0, sumsq = 0;
  double t0 = hm__now();
  if (L->dp) return run_batch_dp(L, idx, b);
  if (L->pipe) return run_batch_pipe(L, idx, b);
  if (o->accumulate_steps == 1) {
    HM_RETURN_IF_ERROR(hm__step_scalars(o, L->st->step, 1.0, scalars));
    HM_RETURN_IF_ERROR(hm__session_step(s, PROG_TRAIN, idx, b, scalars, &loss, &sumsq));
    L->st->train_seconds += hm__now() - t0;
    L->st->samples += b;
    L->st->position += b;
    L->st->epoch_loss_sum += (double)loss * (double)b;
    L->st->epoch_loss_rows += b;
    after_update(L, loss, sumsq, scalars[SLOT_LR]);
    return checkpoint_due(L);
  }
  HM_RETURN_IF_ERROR(hm__step_scalars(o, L->st->step, 1.0, scalars));
  scalars[SLOT_STEP] = hm__dropout_step(scalars[SLOT_STEP], L->micro);
  HM_RETURN_IF_ERROR(
      hm__session_step(s, L->micro == 0 ? PROG_MICRO_FIRST : PROG_MICRO_ACC, idx, b, scalars, &loss, NULL));
  L->micro++;
  L->loss_sum += loss;
  L->st->samples += b;
  L->st->position += b;
  L->st->epoch_loss_sum += (double)loss * (double)b;
  L->st->epoch_loss_rows += b;
  if (L->micro < o->accumulate_steps) {
    L->st->train_seconds += hm__now() - t0;
    return HM_OK;
  }
  HM_RETURN_IF_ERROR(hm__step_scalars(o, L->st->step, (double)L->micro, scalars));
  HM_RETURN_IF_ERROR(hm__session_step(s, PROG_APPLY, NULL, 0, scalars, NULL, &sumsq));
  L->st->train_seconds += hm__now() - t0;
  float mean_loss = (float)(L->loss_sum / (double)L->micro);
  L->micro = 0;
  L->loss_sum = 0;
  after_update(L, mean_loss, sumsq, scalars[SLOT_LR]);
  return checkpoint_due(L);
}

/* The partial accumulation group at the end of an epoch: one update,
 * averaged over its own micro-batches. */
static hm_status flush(loop *L) {
  if (L->micro == 0) return HM_OK;
  if (L->dp) return apply_group(L);
  if (L->pipe) return apply_group_pipe(L);
  double scalars[N_SLOTS];
  float sumsq = 0;
  double t0 = hm__now();
  HM_RETURN_IF_ERROR(hm__step_scalars(L->o, L->st->step, (double)L->micro, scalars));
  HM_RETURN_IF_ERROR(hm__session_step(L->s, PROG_APPLY, NULL, 0, scalars, NULL, &sumsq));
  L->st->train_seconds += hm__now() - t0;
  float mean_loss = (float)(L->loss_sum / (double)L->micro);
  L->micro = 0;
  L->loss_sum = 0;
  after_update(L, mean_loss, sumsq, scalars[SLOT_LR]);
  return checkpoint_due(L);
}

static void epoch_order(loop *L, int32_t *order) { hm__epoch_order(L->o, L->st->epoch, order, L->s->train_count); }

/* The batches of the epoch from the current position. */
static hm_status run_batches(loop *L, const int32_t *order) {
  size_t n = L->s->train_count, bs = L->o->batch_size;
  /* A resumed epoch starts where the checkpoint stopped. */
  for (size_t pos = L->st->position; pos < n && !L->stop; pos += bs) {
    size_t b = n - pos < bs ? n - pos : bs;
    HM_RETURN_IF_ERROR(run_batch(L, order + pos, b));
  }
  return HM_OK;
}

static void snapshot_clear(snapshot *p) {
  hm_weights_free(p->params);
  hm_weights_free(p->opt_state);
  p->params = p->opt_state = NULL;
}

static int weights_finite(const hm_weights *w) {
  for (size_t i = 0; i < hm_weights_count(w); i++) {
    hm_tensor t;
    if (hm_weights_at(w, i, &t) != HM_OK) return 0;
    const float *v = t.data;
    for (size_t k = 0; k < t.bytes / sizeof *v; k++)
      if (!isfinite(v[k])) return 0;
  }
  return 1;
}

/* The state at the start of an epoch, for a replay after a divergence. A
 * finite update can still overflow a weight; such a state is not kept (the
 * previous one stays), and the next update diverges. */
static hm_status snapshot_take(loop *L) {
  const hm_cycle_state *st = L->st;
  snapshot p = {0};
  HM_RETURN_IF_ERROR(hm__session_download(L->s, &p.params, &p.opt_state));
  if (!weights_finite(p.params)) {
    snapshot_clear(&p);
    return HM_OK;
  }
  snapshot_clear(&L->snap);
  copy_progress(&p.at, st);
  p.at.best_norm = L->best_norm; /* the loop holds the live early-stop counters */
  p.at.stall = L->stall;
  L->snap = p;
  return HM_OK;
}

static void snapshot_restore(loop *L) {
  copy_progress(L->st, &L->snap.at);
  L->stall = L->snap.at.stall;
  L->best_norm = L->snap.at.best_norm;
  L->micro = 0;
  L->loss_sum = 0;
  L->stop = 0;
}

/* Epochs until a limit, a stop or a divergence. Outside a replay each epoch
 * starts with a snapshot and ends with a checkpoint and on_epoch. */
static hm_status run_epochs(loop *L, int32_t *order) {
  hm_session *s = L->s;
  hm_cycle_state *st = L->st;
  const hm_fit_options *o = L->o;
  while (!L->stop) {
    if (L->lim->mode == MODE_EPOCHS && st->epoch >= L->lim->epochs) {
      st->stop_reason = HM_STOP_EPOCHS;
      break;
    }
    epoch_order(L, order);
    if (!L->replaying) HM_RETURN_IF_ERROR(snapshot_take(L));
    HM_RETURN_IF_ERROR(run_batches(L, order));
    if (L->stop) break; /* a stop comes after an update: no group is pending */
    /* A partial accumulation group is applied at the end of its epoch, so a
     * group never spans epochs and every checkpoint falls between updates:
     * resuming from any of them continues exactly. */
    HM_RETURN_IF_ERROR(flush(L));
    if (L->bad.found && !L->replaying) break;
    st->epoch++;
    st->position = 0;
    st->epoch_loss = st->epoch_loss_rows ? (float)(st->epoch_loss_sum / (double)st->epoch_loss_rows) : NAN;
    st->epoch_loss_sum = 0;
    st->epoch_loss_rows = 0;
    if (s->eval_count && L->dp) {
      HM_RETURN_IF_ERROR(hm__dp_evaluate(L->dp, s, &st->eval_loss, &st->eval_accuracy));
    } else if (s->eval_count && L->pipe) {
      HM_RETURN_IF_ERROR(hm__pipe_evaluate(L->pipe, st->step, &st->eval_loss, &st->eval_accuracy));
    } else if (s->eval_count) {
      hm_eval_result r;
      HM_RETURN_IF_ERROR(hm__session_evaluate(s, 1, 0, &r));
      st->eval_loss = r.loss;
      st->eval_accuracy = r.accuracy;
    }
    if (L->replaying) continue;
    if (!o->checkpoint_every) HM_RETURN_IF_ERROR(checkpoint(L));
    int stop = o->on_epoch && is_root(L) && o->on_epoch(o->on_epoch_user, st);
    if (L->dp) {
      hm_stop_reason reason = HM_STOP_EPOCH_CALLBACK;
      HM_RETURN_IF_ERROR(hm__dp_agree_stop(L->dp, &stop, &reason));
    }
    if (L->pipe) {
      hm_pipe_decision d = {0, 0, 0, stop, HM_STOP_EPOCH_CALLBACK};
      HM_RETURN_IF_ERROR(hm__pipe_decide(L->pipe, st->step, &d));
      stop = d.stop;
    }
    if (stop) {
      st->stop_reason = HM_STOP_EPOCH_CALLBACK;
      break;
    }
  }
  return HM_OK;
}

/* Back to the last finite update: restore the latest finite epoch-start
 * snapshot and replay to step bad.step - 1; if that update left a
 * non-finite weight, to the one before. */
static hm_status replay_to_last_finite(loop *L, int32_t *order) {
  hm_cycle_state *st = L->st;
  for (size_t target = L->bad.step - 1;; target--) {
    snapshot_restore(L);
    HM_RETURN_IF_ERROR(hm__session_write_weights(L->s, L->snap.params));
    HM_RETURN_IF_ERROR(hm__session_upload_opt_state(L->s, L->snap.opt_state));
    L->replaying = target;
    hm_status rc = target > L->snap.at.step ? run_epochs(L, order) : HM_OK;
    L->replaying = 0;
    HM_RETURN_IF_ERROR(rc);
    if (st->step != target)
      return hm__fail(HM_STATUS_INTERNAL, "replay after a divergence reached step %zu, not %zu", st->step, target);
    st->weights_stale = 1;
    HM_RETURN_IF_ERROR(hm__cycle_state_sync(st));
    if (target == L->snap.at.step || weights_finite(st->weights)) return HM_OK;
  }
}

/* The cycle state's view of the device while fit runs (cycle_state.h). */
static hm_status fetch_weights(void *session, hm_weights **params, hm_weights **opt_state) {
  return hm__session_download(session, params, opt_state);
}

/* A pipeline stage that fails names itself and tells the others. */
static void stage_failed(const hm_pipeline_stage *ps, hm_status rc) {
  if (ps->struct_size != sizeof *ps) return;
  char prefix[48];
  snprintf(prefix, sizeof prefix, "pipeline stage %zu: ", ps->stage);
  if (strncmp(hm_last_error(), prefix, strlen(prefix)) != 0) hm__error_prefix("%s", prefix);
  if (rc != HM_STATUS_DIVERGED) hm__pipe_fail(ps, hm_last_error());
}

static hm_status fit_run(hm_graph *g, const fit_limits *lim, const hm_policy *policy, const hm_fit_options *opts,
                         hm_cycle_state **out) {
  if (!g || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "fit: NULL graph or output");
  hm_fit_options o = opts ? *opts : hm_fit_options_default();
  HM_RETURN_IF_ERROR(hm__fit_options_check(&o));
  HM_RETURN_IF_ERROR(hm__policy_check(policy));
  const hm_pipeline_stage *ps = o.pipeline;
  if (ps) {
    hm_status pst = hm__pipe_check(ps, g, &o);
    if (pst != HM_OK) return pst;
  } else if (!hm_graph_has_training_taps(g)) {
    return hm__fail(HM_STATUS_FAILED_PRECONDITION,
                    "graph '%s' has no loss tap ('layer <-(loss)- target'): it can only run inference", g->name);
  }
  HM_RETURN_IF_ERROR(hm_graph_resolve(g));
  const hm_cycle_state *resume = o.resume;
  if (resume) HM_RETURN_IF_ERROR(hm__cycle_state_resume_into(resume, g, &o, policy));
  /* A stage starts from its share of the whole graph's initial weights. */
  if (ps) HM_RETURN_IF_ERROR(hm__pipe_init_weights(ps, g, o.seed));
  hm_cycle_state *st = NULL;
  HM_RETURN_IF_ERROR(hm__cycle_state_create(&st));
  hm__cycle_state_set_options(st, &o, policy, hm__schedule_kind(&o.lr_schedule_fp));
  int eval = 0;
  for (size_t i = 0; i < g->n_nodes; i++) eval |= g->nodes[i].eval != NULL;
  hm_session *s = NULL;
  hm_status rc = hm__graph_fingerprint(g, &st->graph_fingerprint);
  if (rc == HM_OK)
    rc = ps ? hm__pipe_open_session(ps, g, &o, policy, eval, &s) : hm__session_create(g, &o, policy, 1, eval, &s);
  if (rc == HM_OK) rc = hm__session_upload_weights(s);
  if (rc == HM_OK && resume) rc = hm__session_upload_opt_state(s, resume->opt_state);
  if (rc == HM_OK) rc = hm__cycle_state_describe(st, s->plan, s->dev);
  loop L = {s, st, &o, lim, 0, 0.0, INFINITY, 0, 0, 0, {0}, {0}, NULL, 0, NULL, NULL, NULL, o.checkpoint_path};
  char stage_checkpoint[4096];
  if (rc == HM_OK && o.collectives) {
    rc = hm__dp_create(o.collectives, s, &L.dp);
    if (rc == HM_OK) rc = hm__dp_check_start(L.dp, g, policy, &o, hm__schedule_kind(&o.lr_schedule_fp));
  }
  if (resume) {
    copy_progress(st, resume);
    L.best_norm = resume->best_norm;
    L.stall = resume->stall;
  }
  if (rc == HM_OK && ps) {
    rc = hm__pipe_create(ps, s, &L.pipe);
    if (rc == HM_OK) rc = hm__pipe_check_start(L.pipe, policy, &o, hm__schedule_kind(&o.lr_schedule_fp), st);
    L.group_idx = hm__calloc(o.accumulate_steps, sizeof *L.group_idx);
    L.group_n = hm__calloc(o.accumulate_steps, sizeof *L.group_n);
    if (rc == HM_OK && (!L.group_idx || !L.group_n)) rc = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    if (o.checkpoint_path) {
      hm_pipeline_checkpoint_path(o.checkpoint_path, ps->stage, stage_checkpoint, sizeof stage_checkpoint);
      L.checkpoint_path = stage_checkpoint;
    }
  }
  if (rc == HM_OK && resume && st->position > s->train_count)
    rc = hm__fail(HM_STATUS_INVALID_ARGUMENT, "resume: position %zu beyond the %zu training samples", st->position,
                  s->train_count);
  int32_t *order = NULL;
  if (rc == HM_OK && !(order = hm__malloc(s->train_count * sizeof *order)))
    rc = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  hm__cycle_state_go_live(st, fetch_weights, s);
  st->start_time = hm__now();
  if (rc == HM_OK) rc = run_epochs(&L, order);
  if (rc == HM_OK && L.bad.found) rc = replay_to_last_finite(&L, order);
  snapshot_clear(&L.snap);
  if (rc == HM_OK) rc = checkpoint(&L);
  st->elapsed = hm__now() - st->start_time;
  st->best_norm = L.best_norm;
  st->stall = L.stall;
  if (rc == HM_OK) rc = hm__cycle_state_sync(st);
  hm__cycle_state_go_live(st, NULL, NULL);
  if (rc == HM_OK) { /* the graph holds the trained weights: the state's, shared */
    hm_weights_free(g->weights);
    g->weights = hm__weights_share(st->weights);
  }
  if (s) st->device_bytes = s->peak_device_bytes;
  hm__free(order);
  hm__dp_free(L.dp);
  hm__pipe_free(L.pipe);
  hm__free(L.group_idx);
  hm__free(L.group_n);
  hm__session_free(s);
  if (rc == HM_OK && L.bad.found) {
    size_t kept = st->step;
    hm_cycle_state_free(st);
    return hm__fail(HM_STATUS_DIVERGED,
                    "training diverged at step %zu (epoch %zu): loss %g, gradient norm %g, learning rate %g; "
                    "the graph keeps the weights after step %zu, the last finite ones",
                    L.bad.step, L.bad.epoch, (double)L.bad.loss, (double)L.bad.grad_norm, L.bad.lr, kept);
  }
  if (rc != HM_OK) {
    hm_cycle_state_free(st);
    return rc;
  }
  *out = st;
  return HM_OK;
}

static hm_status fit_impl(hm_graph *g, const fit_limits *lim, const hm_policy *policy, const hm_fit_options *opts,
                          hm_cycle_state **out) {
  hm_status rc = fit_run(g, lim, policy, opts, out);
  const hm_pipeline_stage *ps = opts && opts->struct_size == sizeof *opts ? opts->pipeline : NULL;
  if (rc != HM_OK && ps) stage_failed(ps, rc);
  return rc;
}

hm_status hm_graph_fit(hm_graph *g, size_t epochs, const hm_policy *policy, const hm_fit_options *opts,
                       hm_cycle_state **out) {
  fit_limits lim = {MODE_EPOCHS, epochs, 0, NULL, NULL};
  return fit_impl(g, &lim, policy, opts, out);
}

hm_status hm_graph_fit_for(hm_graph *g, double seconds, const hm_policy *policy, const hm_fit_options *opts,
                           hm_cycle_state **out) {
  if (!(seconds >= 0.0) || !isfinite(seconds))
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "fit_for: seconds must be finite and >= 0");
  fit_limits lim = {MODE_SECONDS, 0, seconds, NULL, NULL};
  return fit_impl(g, &lim, policy, opts, out);
}

hm_status hm_graph_fit_until(hm_graph *g, hm_stop_predicate pred, void *user, const hm_policy *policy,
                             const hm_fit_options *opts, hm_cycle_state **out) {
  if (!pred) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "fit_until: NULL predicate");
  fit_limits lim = {MODE_UNTIL, 0, 0, pred, user};
  return fit_impl(g, &lim, policy, opts, out);
}

hm_status hm_graph_inference(hm_graph *g, const hm_policy *policy, const hm_fit_options *opts, int use_eval_data,
                             hm_eval_result *out) {
  if (!g || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "inference: NULL graph or output");
  hm_fit_options o = opts ? *opts : hm_fit_options_default();
  HM_RETURN_IF_ERROR(hm__fit_options_check(&o));
  HM_RETURN_IF_ERROR(hm__policy_check(policy));
  if (o.pipeline)
    return hm__fail(HM_STATUS_UNIMPLEMENTED, "inference: a pipeline evaluates while it trains; run the whole graph "
                                             "(hm_partition_graph holds the trained weights)");
  HM_RETURN_IF_ERROR(hm_graph_resolve(g));
  o.batch_size = o.eval_batch_size;
  hm_session *s = NULL;
  HM_RETURN_IF_ERROR(hm__session_create(g, &o, policy, 0, use_eval_data, &s));
  hm_status rc = hm__session_upload_weights(s);
  if (rc == HM_OK) rc = hm__session_pack_weights(s);
  if (rc == HM_OK) rc = hm__session_evaluate(s, use_eval_data, 1, out);
  if (rc == HM_OK) {
    hm__session_weight_costs(s, out);
    hm__session_precision_summary(s, out->precision, sizeof out->precision);
    snprintf(out->backend, sizeof out->backend, "%s:%u", hm_device_backend(s->dev), hm_device_index(s->dev));
  }
  hm__session_free(s);
  return rc;
}
