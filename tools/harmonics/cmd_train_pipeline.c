/*
 * harmonics train MODEL --pipeline LAYER[,LAYER...] [--micro-batches M]
 * [--stage-backend K=NAME,...]: the model is cut after the named layers
 * into stages that train together under GPipe (docs/distributed.md
 * "Pipelines"). In one process every stage runs on its own thread; under
 * mpirun (-np = the number of stages) rank k runs stage k. --batch is the
 * update's batch, split into M micro-batches, so the run is bit-identical
 * to one process with --batch B/M --accumulate M. The last stage prints,
 * streams to the dashboard and saves the whole model's weights.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd_train.h"
#if HM_HAVE_MPI
#include "harmonics/mpi.h"
#endif

#define MAX_STAGES 64

typedef struct pipeline_setup {
  char cut_text[1024];
  const char *cuts[MAX_STAGES];
  size_t n_cuts;
  char backend_text[1024];
  const char *backends[MAX_STAGES]; /* per stage; NULL: --backend */
  char registry_backends[1200];     /* what the registry initialises */
} pipeline_setup;

/* "a,b" -> {"a", "b"}: the layers to cut after ("" : the model's own). */
static int split_cuts(const char *text, pipeline_setup *ps) {
  ps->n_cuts = 0;
  if (!*text) return CLI_OK;
  if (strlen(text) >= sizeof ps->cut_text) {
    fprintf(stderr, "harmonics train: --pipeline: the list is too long\n");
    return CLI_USAGE;
  }
  snprintf(ps->cut_text, sizeof ps->cut_text, "%s", text);
  ps->n_cuts = 0;
  for (char *at = ps->cut_text;;) {
    char *comma = strchr(at, ',');
    if (comma) *comma = '\0';
    if (!*at) {
      fprintf(stderr, "harmonics train: --pipeline '%s': an empty layer name (give LAYER[,LAYER...])\n", text);
      return CLI_USAGE;
    }
    if (ps->n_cuts + 1 >= MAX_STAGES) {
      fprintf(stderr, "harmonics train: --pipeline: more than %d cuts\n", MAX_STAGES - 1);
      return CLI_USAGE;
    }
    ps->cuts[ps->n_cuts++] = at;
    if (!comma) break;
    at = comma + 1;
  }
  return CLI_OK;
}

/* "0=cpu,1=opencl" -> per-stage backends, checked against |stages|. */
static int parse_stage_backends(const char *text, size_t stages, pipeline_setup *ps) {
  for (size_t k = 0; k < MAX_STAGES; k++) ps->backends[k] = NULL;
  if (!text) return CLI_OK;
  if (strlen(text) >= sizeof ps->backend_text) {
    fprintf(stderr, "harmonics train: --stage-backend: the list is too long\n");
    return CLI_USAGE;
  }
  snprintf(ps->backend_text, sizeof ps->backend_text, "%s", text);
  for (char *at = ps->backend_text;;) {
    char *comma = strchr(at, ',');
    if (comma) *comma = '\0';
    char *eq = strchr(at, '='), *end = NULL;
    unsigned long k = eq ? strtoul(at, &end, 10) : 0;
    if (!eq || end != eq || eq == at || !eq[1]) {
      fprintf(stderr, "harmonics train: --stage-backend: '%s' is not STAGE=BACKEND (e.g. 0=cpu,1=opencl)\n", at);
      return CLI_USAGE;
    }
    if (k >= stages) {
      fprintf(stderr, "harmonics train: --stage-backend: stage %lu, but the pipeline has %zu stages (0 to %zu)\n", k,
              stages, stages - 1);
      return CLI_USAGE;
    }
    if (ps->backends[k]) {
      fprintf(stderr, "harmonics train: --stage-backend: stage %lu is given twice\n", k);
      return CLI_USAGE;
    }
    ps->backends[k] = eq + 1;
    if (!comma) break;
    at = comma + 1;
  }
  return CLI_OK;
}

/* The registry initialises only the backends the stages use: --backend and
 * every --stage-backend; NULL (the registry's own choice) when a stage
 * takes the default and --backend is not given. */
static const char *registry_selection(const train_args *t, size_t stages, pipeline_setup *ps) {
  size_t len = 0;
  ps->registry_backends[0] = '\0';
  for (size_t k = 0; k < stages; k++)
    if (!ps->backends[k] && !t->o.backend) return NULL;
  const char *first = t->o.backend;
  if (first) len += (size_t)snprintf(ps->registry_backends, sizeof ps->registry_backends, "%s", first);
  for (size_t k = 0; k < stages && len < sizeof ps->registry_backends; k++) {
    if (!ps->backends[k]) continue;
    len += (size_t)snprintf(ps->registry_backends + len, sizeof ps->registry_backends - len, "%s%s", len ? "," : "",
                            ps->backends[k]);
  }
  return ps->registry_backends;
}

/* The model with its data, cut into stages. */
static int cut_model(train_args *t, pipeline_setup *ps, hm_graph **g, cli_sources *src, hm_partition **p) {
  int rc = split_cuts(t->pipeline, ps);
  if (rc == CLI_OK) rc = train_load_model(t, g, src);
  if (rc == CLI_OK && t->init_weights) {
    hm_weights *w = NULL;
    rc = cli_load_weights(t->init_weights, &w);
    if (rc == CLI_OK && hm_graph_set_weights(*g, w) != HM_OK) rc = cli_fail("--init-weights");
    hm_weights_free(w);
  }
  if (rc == CLI_OK && hm_graph_partition_by_layer(*g, ps->cuts, ps->n_cuts, p) != HM_OK)
    rc = cli_fail(ps->n_cuts ? "--pipeline" : NULL);
  if (rc == CLI_OK) t->stages = hm_partition_stage_count(*p);
  if (rc == CLI_OK && !ps->n_cuts) { /* the model's partition: name it as --pipeline would */
    size_t len = 0;
    for (size_t i = 0; i < hm_graph_partition_count(*g) && len < sizeof ps->cut_text; i++)
      len += (size_t)snprintf(ps->cut_text + len, sizeof ps->cut_text - len, "%s%s", i ? "," : "",
                              hm_graph_partition_cut(*g, i));
    t->pipeline = ps->cut_text;
  }
  return rc;
}

/* --resume PATH: stage k continues from PATH.stage<k> (every stage, or only
 * |only| when it is not SIZE_MAX); the checkpoint's options and policy
 * replace the command line's. */
static int load_resume(train_args *t, size_t stages, size_t only, hm_cycle_state **states) {
  for (size_t k = 0; k < stages; k++) {
    if (only != (size_t)-1 && k != only) continue;
    char path[4096];
    hm_pipeline_checkpoint_path(t->resume, k, path, sizeof path);
    if (hm_cycle_state_load(path, &states[k]) != HM_OK) return cli_fail("--resume");
  }
  hm_fit_options saved;
  const hm_cycle_state *any = states[only == (size_t)-1 ? 0 : only];
  if (hm_cycle_state_fit_options(any, &saved, &t->policy) != HM_OK) return cli_fail("--resume");
  saved.backend = t->o.backend;
  saved.threads = t->o.threads;
  t->o = saved;
  t->micro_batches = saved.accumulate_steps;
  hm_policy_format(&t->policy, t->policy_text, sizeof t->policy_text);
  return CLI_OK;
}

/* The stages' layers under the whole model's names: "layer a->b: f32 (gemm), 32.000 bits per weight (stage k)". */
static void print_stage_layers(const hm_partition *p, size_t stage, const hm_cycle_state *st) {
  const hm_graph *whole = hm_partition_graph(p), *sg = hm_partition_stage(p, stage);
  size_t layer = 0;
  for (size_t c = 0; c < hm_graph_connection_count(sg); c++) {
    size_t from_whole = 0;
    if (hm_partition_connection_origin(p, stage, c, &from_whole) != HM_OK) continue; /* into a boundary: no weights */
    const char *from, *to, *act, *name, *prec, *kernel, *note = hm_cycle_state_layer_note(st, layer);
    hm_node_kind kind = HM_NODE_LAYER;
    if (hm_graph_connection(whole, from_whole, &from, &to, &act) != HM_OK) continue;
    for (size_t n = 0; n < hm_graph_node_count(whole); n++) {
      const char *nn;
      hm_node_kind k;
      if (hm_graph_node(whole, n, &nn, &k, NULL) == HM_OK && strcmp(nn, to) == 0) kind = k;
    }
    if (kind != HM_NODE_LAYER) continue;
    size_t bytes = 0, count = 0;
    if (hm_cycle_state_layer_precision(st, layer, &name, &prec, &kernel) == HM_OK &&
        hm_cycle_state_layer_weight_bytes(st, layer, &bytes, &count) == HM_OK && count)
      printf("layer %s->%s: %s (%s), %.3f bits per weight (stage %zu)%s%s\n", from, to, prec, kernel,
             8.0 * (double)bytes / (double)count, stage, note[0] ? ": " : "", note);
    layer++;
  }
}

static void print_results(const hm_partition *p, hm_cycle_state *const *states, size_t K) {
  printf("backend:");
  for (size_t k = 0; k < K; k++)
    if (states[k]) printf("%s stage %zu %s", k && states[k - 1] ? "," : "", k, hm_cycle_state_backend(states[k]));
  printf("\n");
  for (size_t k = 0; k < K; k++)
    if (states[k]) print_stage_layers(p, k, states[k]);
  const hm_cycle_state *root = states[K - 1];
  float acc = hm_cycle_state_eval_accuracy(root);
  if (!isnan(acc)) printf("test accuracy: %.2f%%\n", 100.0 * acc);
  else
    printf("mean loss of the last epoch: %.6f (last update: %.6f)\n", (double)hm_cycle_state_epoch_loss(root),
           (double)hm_cycle_state_loss(root));
}

/* One stage per rank over MPI; the last rank gathers the weights. */
static hm_status fit_on_ranks(train_args *t, hm_collectives *mpi, hm_partition *p, const pipeline_setup *ps,
                              hm_cycle_state **states, hm_weights **whole) {
#if HM_HAVE_MPI
  size_t K = hm_partition_stage_count(p), rank = (size_t)mpi->rank;
  if ((size_t)mpi->size != K)
    return hm_set_error(HM_STATUS_INVALID_ARGUMENT,
                        "mpirun started %d processes but --pipeline %s makes %zu stages: run one process per stage "
                        "(mpirun -np %zu)",
                        mpi->size, t->pipeline, K, K);
  const hm_pipeline_transport *transport = NULL;
  hm_status st = hm_mpi_pipeline_transport(mpi, &transport);
  if (st != HM_OK) return st;
  hm_pipeline_stage stage = hm_pipeline_stage_default();
  stage.partition = p;
  stage.stage = rank;
  stage.transport = transport;
  stage.timeout_seconds = 1e9; /* HARMONICS_MPI_TIMEOUT bounds every wait of the transport */
  hm_fit_options o = t->o;
  o.pipeline = &stage;
  if (ps->backends[rank]) o.backend = ps->backends[rank];
  hm_graph *sg = hm_partition_stage(p, rank);
  hm_status fs = hm_graph_fit(sg, t->epochs, &t->policy, &o, &states[rank]);
  if (fs != HM_OK && fs != HM_STATUS_DIVERGED) return fs;
  /* A diverged run keeps the last finite weights: the stage graph's. */
  char why[1024];
  snprintf(why, sizeof why, "%s", hm_last_error());
  const hm_weights *mine = fs == HM_OK ? hm_cycle_state_weights(states[rank]) : hm_graph_weights(sg);
  st = hm_pipeline_gather_weights(&stage, mine, whole);
  if (st != HM_OK) return st;
  return fs == HM_OK ? HM_OK : hm_set_error(fs, "%s", why);
#else
  (void)t, (void)mpi, (void)p, (void)ps, (void)states, (void)whole;
  return hm_set_error(HM_STATUS_UNIMPLEMENTED, "this build has no MPI");
#endif
}

int train_pipeline(train_args *t_in, hm_collectives *mpi) {
  train_args t = *t_in;
  pipeline_setup ps;
  memset(&ps, 0, sizeof ps);
  hm_graph *g = NULL;
  hm_partition *p = NULL;
  cli_sources src = {{0}, 0, 0};
  hm_cycle_state *states[MAX_STAGES] = {NULL}, *resume[MAX_STAGES] = {NULL};
  hm_weights *gathered = NULL;
  /* Only the backends the stages use are initialised (no CUDA start-up for a CPU run). */
  int rc = cut_model(&t, &ps, &g, &src, &p);
  size_t K = t.stages;
  if (rc == CLI_OK) rc = parse_stage_backends(t.stage_backends, K, &ps);
  if (rc == CLI_OK && cli_registry_init(t.config, registry_selection(&t, K, &ps)) != CLI_OK) rc = CLI_FAILED;
  size_t rank = mpi ? (size_t)mpi->rank : (size_t)-1;
  int root = !mpi || rank == K - 1;
  if (rc == CLI_OK && t.resume) rc = load_resume(&t, K, mpi ? rank : (size_t)-1, resume);
  if (rc == CLI_OK && !t.resume) {
    size_t B = t.o.batch_size, M = t.micro_batches;
    if (M == 0 || B % M) {
      fprintf(stderr, "harmonics train: --batch %zu does not split into %zu equal micro-batches\n", B, M);
      rc = CLI_USAGE;
    } else {
      t.o.batch_size = B / M;
      t.o.accumulate_steps = M;
    }
  }
  t.o.checkpoint_path = t.checkpoint;
  t.o.checkpoint_every = t.checkpoint_every;
  progress_ui ui;
  memset(&ui, 0, sizeof ui);
  if (rc == CLI_OK) rc = train_open_progress(&t, &ui, root, src.train_samples);
  if (rc == CLI_OK && root && t.resume)
    fprintf(stderr, "harmonics: resuming %s.stage* at epoch %zu, step %zu\n", t.resume,
            hm_cycle_state_epoch(resume[mpi ? rank : 0]), hm_cycle_state_step(resume[mpi ? rank : 0]));
  hm_status fs = HM_OK;
  if (rc == CLI_OK && mpi) {
    fs = fit_on_ranks(&t, mpi, p, &ps, states, &gathered);
  } else if (rc == CLI_OK) {
    hm_partition_run_options run = hm_partition_run_options_default();
    run.stage_backends = ps.backends;
    if (t.resume) run.resume = (const hm_cycle_state *const *)resume;
    fs = hm_partition_fit(p, t.epochs, &t.policy, &t.o, &run, states);
  }
  if (rc == CLI_OK && fs == HM_STATUS_DIVERGED) {
    cli_fail(NULL);
    rc = CLI_DIVERGED;
  } else if (rc == CLI_OK && fs != HM_OK) {
    rc = cli_fail("training failed");
  }
  train_close_dashboard(&ui);
  if (root) rc = train_save_weights(&t, mpi ? gathered : hm_graph_weights(g), rc);
  if (rc == CLI_OK && root) print_results(p, states, K);
  if (rc == CLI_OK && root && t.json) train_print_json(&t, states[K - 1], mpi ? mpi->size : 1);
  for (size_t k = 0; k < MAX_STAGES; k++) {
    hm_cycle_state_free(states[k]);
    hm_cycle_state_free(resume[k]);
  }
  hm_weights_free(gathered);
  hm_partition_free(p);
  hm_graph_free(g);
  cli_sources_free(&src);
  return rc;
}
