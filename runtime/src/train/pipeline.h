/*
 * One stage of a pipeline fit (harmonics/pipeline.h; docs/distributed.md
 * "Pipelines"): the GPipe schedule of an update over the stage's session,
 * the messages it exchanges with the other stages, and the agreement on
 * metrics, stops and evaluation. The fit loop (training.c) calls these when
 * hm_fit_options.pipeline is set; the last stage is its root.
 */
#ifndef HM_TRAIN_PIPELINE_H_
#define HM_TRAIN_PIPELINE_H_

#include "graph/partition.h"
#include "train/session.h"

typedef struct hm_pipe hm_pipe;

/* Checks |ps| and the options for stage ps->stage's graph |g|. */
hm_status hm__pipe_check(const hm_pipeline_stage *ps, const hm_graph *g, const hm_fit_options *o);
/* Gives the stage graph its share of the whole graph's initial weights
 * (drawn from |seed|) when it has none. */
hm_status hm__pipe_init_weights(const hm_pipeline_stage *ps, hm_graph *g, uint64_t seed);
/* The stage's session: its boundaries marked, one activation slot per
 * micro-batch on stages before the last. */
hm_status hm__pipe_open_session(const hm_pipeline_stage *ps, hm_graph *g, const hm_fit_options *o,
                                const hm_policy *policy, int eval, hm_session **out);
hm_status hm__pipe_create(const hm_pipeline_stage *ps, hm_session *s, hm_pipe **out);
void hm__pipe_free(hm_pipe *p);
/* The last stage computes the loss and decides. */
int hm__pipe_is_root(const hm_pipe *p);

/* Stage 0 tells the others what it runs (partition, options, policy, the
 * sample counts, the resume position); a stage that runs something else
 * fails saying what differs. A stage without data takes stage 0's counts. */
hm_status hm__pipe_check_start(hm_pipe *p, const hm_policy *policy, const hm_fit_options *o, int schedule_kind,
                               const hm_cycle_state *progress);

/* One update's forward and backward passes over |n| micro-batches
 * (|idx[m]|, |rows[m]|) as GPipe schedules them; the stage's gradients then
 * hold the update's sum. On the last stage *loss_sum is the sum of the
 * micro-batches' mean losses and *loss_rows the sum of loss x rows (0
 * elsewhere). */
hm_status hm__pipe_update(hm_pipe *p, size_t step, const int32_t *const *idx, const size_t *rows, size_t n,
                          double *loss_sum, double *loss_rows);

/* After the update's apply: the global sum of squared gradients on the
 * last stage (every stage sends it its own); |*sumsq| is this stage's on
 * entry. */
hm_status hm__pipe_sum_squares(hm_pipe *p, size_t step, float *sumsq);

/* What the last stage decided after an update or an epoch. */
typedef struct hm_pipe_decision {
  double loss;      /* the update's mean loss */
  double sumsq;     /* its global sum of squared gradients */
  double loss_rows; /* its loss x rows, for the epoch's mean loss */
  int32_t stop;
  int32_t reason;   /* hm_stop_reason */
} hm_pipe_decision;
/* The last stage sends |d|; the others receive it into |d|. */
hm_status hm__pipe_decide(hm_pipe *p, size_t step, hm_pipe_decision *d);

/* An evaluation of the bound evaluation data through every stage; every
 * stage gets the last stage's loss and accuracy. */
hm_status hm__pipe_evaluate(hm_pipe *p, size_t step, float *loss, float *accuracy);

/* Seconds this stage has spent waiting in the transport's receive. */
double hm__pipe_waited(const hm_pipe *p);

/* This stage failed with |message|: tells the others through the transport. */
void hm__pipe_fail(const hm_pipeline_stage *ps, const char *message);

#endif /* HM_TRAIN_PIPELINE_H_ */
