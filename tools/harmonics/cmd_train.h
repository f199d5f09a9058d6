/*
 * harmonics train: what cmd_train.c (one process, data parallel) and
 * cmd_train_pipeline.c (a pipeline over a layer partition) share — the
 * command line, the progress display and the results.
 */
#ifndef HM_CMD_TRAIN_H_
#define HM_CMD_TRAIN_H_

#include "cli.h"

/* Everything the command line says. */
typedef struct train_args {
  const char *model, *dataset, *config, *init_weights, *save_weights, *checkpoint, *resume, *dashboard, *distributed;
  size_t checkpoint_every;
  const char *data_specs[16], *eval_specs[16];
  size_t n_data, n_eval, epochs, limit_train, limit_eval, threads;
  int json;
  hm_fit_options o;
  hm_policy policy;
  char policy_text[64];
  float decay_rate, decay_min;
  size_t decay_steps;
  /* --pipeline CUTS --micro-batches M --stage-backend K=NAME,...: a pipeline
   * of |stages| stages (set once the model is cut), each update of
   * o.batch_size * M rows in M micro-batches. */
  const char *pipeline, *stage_backends; /* pipeline "": the model's declared partition */
  size_t micro_batches, stages;
  int no_pipeline; /* --pipeline none: the whole model here, whatever it declares */
} train_args;

/* The progress bar (on a terminal) and the per-epoch lines. */
typedef struct progress_ui {
  int tty;
  hm_progress_sink dashboard; /* --dashboard: every update also goes here */
  size_t epochs, steps_per_epoch, batch, total_samples;
  double start, last_draw;
  const hm_cycle_state *state;
  size_t step_in_run;
} progress_ui;

double train_now(void);
/* hm_fit_options.progress and .on_epoch over a progress_ui. */
void train_on_progress(void *user, size_t step, float grad_norm, float loss, float lr);
int train_on_epoch(void *user, const hm_cycle_state *st);
/* The progress display (and --dashboard) of |t| on the process that
 * reports (|root|), hooked into t->o. CLI_OK or CLI_FAILED after a message. */
int train_open_progress(train_args *t, progress_ui *ui, int root, size_t train_samples);
/* --save-weights after a run that ended with |rc| (OK or diverged: the last
 * finite weights); returns the new exit status. */
int train_save_weights(const train_args *t, const hm_weights *w, int rc);
/* Flushes and closes the dashboard sink, with its counts. */
void train_close_dashboard(progress_ui *ui);
/* "backend: ...", a line per layer and the test accuracy. */
void train_print_results(const hm_cycle_state *st);
/* The last line of --json; |ranks| processes. */
void train_print_json(const train_args *t, const hm_cycle_state *st, int ranks);
/* Loads the model and binds its data. */
int train_load_model(const train_args *t, hm_graph **g, cli_sources *src);
/* --resume (the checkpoint's options replace t->o) and --init-weights. */
int train_apply_start(hm_graph *g, train_args *t, const hm_collectives *dist, hm_cycle_state **resume_state);
/* Reads a checkpoint; under data parallel rank 0 reads it and broadcasts it. */
hm_status train_load_checkpoint(const char *path, const hm_collectives *dist, hm_cycle_state **out);

/* A pipeline run (cmd_train_pipeline.c): stages on threads, or one stage
 * per rank when |mpi| (the collectives of the MPI job) is given. */
int train_pipeline(train_args *t, hm_collectives *mpi);

#endif /* HM_CMD_TRAIN_H_ */
