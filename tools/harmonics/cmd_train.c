/*
 * harmonics train MODEL.hmx [options]: trains a model on bound data and
 * reports test accuracy. On a terminal a progress bar shows loss, accuracy,
 * samples/s and ETA; otherwise one line per epoch. --json adds a last line
 * of JSON.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd_train.h"
#if HM_HAVE_MPI
#include "harmonics/mpi.h"
#endif

static void train_usage(FILE *f) {
  char optimizers[96];
  hm_optimizer_names(optimizers, sizeof optimizers, "|");
  fprintf(f,
          "usage: harmonics train MODEL.hmx [options]\n"
          "data:\n"
          "  --dataset fashion-mnist     pixels -> first input producer, labels -> first loss target;\n"
          "                              evaluates on the 10k test split after each epoch; the files\n"
          "                              come from $HARMONICS_FASHION_MNIST_DIR, else\n"
          "                              /usr/share/datasets/fashion-mnist\n"
          "  --data NAME=SPEC            training data of producer NAME; SPEC = idx:PATH | csv:PATH | labels:PATH\n"
          "  --eval-data NAME=SPEC       held-out evaluation data of producer NAME\n"
          "  --limit-train N             use the first N training samples\n"
          "  --limit-eval N              use the first N evaluation samples\n"
          "training:\n"
          "  --epochs N (1)  --batch N (32)  --seed N (0)  --no-shuffle\n"
          "  --optimizer %s (sgd)  --lr X (0.01)\n"
          "  --momentum X  --weight-decay X  --grad-clip X  --accumulate N\n"
          "  --early-stop N  --early-stop-delta X  --lr-decay RATE:STEPS[:MIN]\n"
          "  --policy P                  hardware (f32, default) | auto | bits:8 | bits:4 | bits:3 |\n"
          "                              connections:B,B,... (one width per connection with weights,\n"
          "                              in graph order: 32, 8, 4 or 3; a different count is an error;\n"
          "                              also spelled layers:). Packed widths train quantization-aware.\n"
          "weights and checkpoints:\n"
          "  --init-weights FILE.safetensors   start from these weights\n"
          "  --save-weights FILE.safetensors   write the trained weights\n"
          "  --checkpoint FILE.hck             write a checkpoint after every epoch and at the end\n"
          "  --checkpoint-every N              ... and every N updates\n"
          "  --resume FILE.hck                 continue a checkpoint bit-identically (its options and\n"
          "                                    policy apply; --epochs is the total to reach)\n"
          "where:\n"
          "  --backend NAME[:N]  --threads N  --config FILE\n"
          "  --distributed mpi|none   data parallel over MPI; the default is mpi when started by\n"
          "                           mpirun (mpirun -np N harmonics train ...), else none.\n"
          "                           --batch is the global batch; rank 0 prints and saves\n"
          "  --pipeline LAYER[,LAYER...]  cut the model after these layers into stages that train\n"
          "                           together (GPipe): stages on threads, or one stage per rank\n"
          "                           under mpirun (-np = stages); bit-identical to one process with\n"
          "                           --batch B/M --accumulate M. A model that declares\n"
          "                           `partition by layer ...;` is cut there; --pipeline none trains it whole\n"
          "  --micro-batches M        (with --pipeline, 1) each update's --batch in M micro-batches\n"
          "  --stage-backend K=NAME[,K=NAME...]   the backend of stage K (else --backend)\n"
          "  --dashboard ws://HOST:PORT/trainer   stream every update to a dashboard\n"
          "                                       (harmonics dashboard, or examples/training_dashboard)\n"
          "output:\n"
          "  --json              a last line of JSON with the results\n"
          "exit status: 0 trained, 1 failed, 2 bad usage, 3 diverged (a loss or gradient norm\n"
          "  was not finite: the run stops there; --save-weights and --checkpoint keep the\n"
          "  weights after the last finite step)\n",
          optimizers);
}


static void fmt_duration(double s, char *buf, size_t cap) {
  if (!(s >= 0) || s > 1e7) {
    snprintf(buf, cap, "--:--");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

double train_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Progress sink: redraws the bar at most 10 times a second. */
void train_on_progress(void *user, size_t step, float grad_norm, float loss, float lr) {
  progress_ui *ui = user;
  if (ui->dashboard.fn) ui->dashboard.fn(ui->dashboard.user, step, grad_norm, loss, lr);
  if (!ui->tty) return;
  double t = train_now();
  size_t total_steps = ui->epochs * ui->steps_per_epoch;
  if (t - ui->last_draw < 0.1 && step != total_steps) return;
  ui->last_draw = t;
  size_t epoch = ui->steps_per_epoch ? (step - 1) / ui->steps_per_epoch + 1 : 1;
  double frac = total_steps ? (double)step / (double)total_steps : 0;
  if (frac > 1) frac = 1;
  int width = 28, filled = (int)(frac * width);
  char bar[64];
  for (int i = 0; i < width; i++) bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
  bar[width] = '\0';
  double elapsed = t - ui->start;
  double sps = elapsed > 0 ? (double)(step * ui->batch) / elapsed : 0;
  char eta[32];
  fmt_duration(frac > 0 ? elapsed * (1 - frac) / frac : -1, eta, sizeof eta);
  float acc = hm_cycle_state_eval_accuracy(ui->state);
  char accs[32] = "";
  if (!isnan(acc)) snprintf(accs, sizeof accs, " acc %.2f%%", 100.0 * acc);
  fprintf(stderr, "\repoch %zu/%zu [%s] %3.0f%% loss %.4f%s %.0f samples/s ETA %s   ", epoch > ui->epochs ? ui->epochs : epoch,
          ui->epochs, bar, 100 * frac, (double)loss, accs, sps, eta);
  fflush(stderr);
}

static double samples_per_second(const hm_cycle_state *st) {
  return hm_cycle_state_train_seconds(st) > 0 ? (double)hm_cycle_state_samples(st) / hm_cycle_state_train_seconds(st)
                                              : 0;
}

int train_on_epoch(void *user, const hm_cycle_state *st) {
  progress_ui *ui = user;
  ui->state = st;
  double sps = samples_per_second(st);
  float acc = hm_cycle_state_eval_accuracy(st), eloss = hm_cycle_state_eval_loss(st);
  if (ui->tty) fprintf(stderr, "\n");
  FILE *out = ui->tty ? stderr : stdout;
  /* The epoch's mean training loss: one batch's loss jumps around. */
  fprintf(out, "epoch %zu/%zu: mean loss %.4f", hm_cycle_state_epoch(st), ui->epochs,
          (double)hm_cycle_state_epoch_loss(st));
  if (!isnan(eloss)) fprintf(out, ", test loss %.4f", (double)eloss);
  if (!isnan(acc)) fprintf(out, ", test accuracy %.2f%%", 100.0 * acc);
  fprintf(out, ", %.0f samples/s\n", sps);
  fflush(out);
  return 0;
}


static int parse_lr_decay(const char *v, train_args *t) {
  char *end = NULL;
  t->decay_rate = strtof(v, &end);
  if (end && *end == ':' && t->decay_rate > 0) {
    t->decay_steps = strtoul(end + 1, &end, 10);
    if (*end == ':') t->decay_min = strtof(end + 1, &end);
    if (!*end) return CLI_OK;
  }
  fprintf(stderr, "harmonics train: --lr-decay expects RATE:STEPS[:MIN]\n");
  return CLI_USAGE;
}

/* One option that takes a value (|v|, NULL when the command line ended):
 * CLI_OK, CLI_USAGE, or -1 when |a| is not such an option. */
static int parse_valued(const char *a, const char *v, train_args *t) {
  hm_fit_options *o = &t->o;
  int missing = 0;
  /* Matches option |name| that has its value; notes a known one without. */
#define OPT(name) (strcmp(a, name) == 0 && (v || (missing = 1, 0)))
  if (OPT("--dataset")) t->dataset = v;
  else if (OPT("--data") || OPT("--eval-data")) {
    size_t *n = a[2] == 'd' ? &t->n_data : &t->n_eval;
    if (*n >= 16) {
      fprintf(stderr, "harmonics train: at most 16 %s options\n", a);
      return CLI_USAGE;
    }
    (a[2] == 'd' ? t->data_specs : t->eval_specs)[(*n)++] = v;
  } else if (OPT("--epochs")) return cli_parse_size(a, v, &t->epochs) ? CLI_USAGE : CLI_OK;
  else if (OPT("--batch")) return cli_parse_size(a, v, &o->batch_size) ? CLI_USAGE : CLI_OK;
  else if (OPT("--seed")) {
    size_t seed;
    if (cli_parse_size(a, v, &seed)) return CLI_USAGE;
    o->seed = seed;
  } else if (OPT("--limit-train")) return cli_parse_size(a, v, &t->limit_train) ? CLI_USAGE : CLI_OK;
  else if (OPT("--limit-eval")) return cli_parse_size(a, v, &t->limit_eval) ? CLI_USAGE : CLI_OK;
  else if (OPT("--threads")) return cli_parse_size(a, v, &t->threads) ? CLI_USAGE : CLI_OK;
  else if (OPT("--accumulate")) return cli_parse_size(a, v, &o->accumulate_steps) ? CLI_USAGE : CLI_OK;
  else if (OPT("--micro-batches")) return cli_parse_size(a, v, &t->micro_batches) ? CLI_USAGE : CLI_OK;
  else if (OPT("--pipeline")) {
    t->pipeline = strcmp(v, "none") ? v : NULL;
    t->no_pipeline = !t->pipeline;
  }
  else if (OPT("--stage-backend")) t->stage_backends = v;
  else if (OPT("--early-stop")) return cli_parse_size(a, v, &o->early_stop_patience) ? CLI_USAGE : CLI_OK;
  else if (OPT("--lr")) return cli_parse_float(a, v, &o->learning_rate) ? CLI_USAGE : CLI_OK;
  else if (OPT("--momentum")) return cli_parse_float(a, v, &o->momentum) ? CLI_USAGE : CLI_OK;
  else if (OPT("--weight-decay")) return cli_parse_float(a, v, &o->weight_decay) ? CLI_USAGE : CLI_OK;
  else if (OPT("--grad-clip")) return cli_parse_float(a, v, &o->grad_clip) ? CLI_USAGE : CLI_OK;
  else if (OPT("--early-stop-delta")) return cli_parse_float(a, v, &o->early_stop_delta) ? CLI_USAGE : CLI_OK;
  else if (OPT("--lr-decay")) return parse_lr_decay(v, t);
  else if (OPT("--optimizer")) {
    uint32_t found;
    if (hm_optimizer_from_name(v, &found) != 0) {
      char names[96];
      hm_optimizer_names(names, sizeof names, ", ");
      fprintf(stderr, "harmonics train: unknown optimizer '%s' (%s)\n", v, names);
      return CLI_USAGE;
    }
    o->optimizer = (hm_optimizer)found;
  } else if (OPT("--policy")) {
    if (hm_policy_parse(v, &t->policy) != HM_OK) return cli_fail("--policy");
    hm_policy_format(&t->policy, t->policy_text, sizeof t->policy_text);
  } else if (OPT("--dashboard")) t->dashboard = v;
  else if (OPT("--backend")) o->backend = v;
  else if (OPT("--config")) t->config = v;
  else if (OPT("--init-weights")) t->init_weights = v;
  else if (OPT("--save-weights")) t->save_weights = v;
  else if (OPT("--checkpoint")) t->checkpoint = v;
  else if (OPT("--checkpoint-every")) return cli_parse_size(a, v, &t->checkpoint_every) ? CLI_USAGE : CLI_OK;
  else if (OPT("--resume")) t->resume = v;
  else if (OPT("--distributed")) {
    if (strcmp(v, "mpi") != 0 && strcmp(v, "none") != 0) {
      fprintf(stderr, "harmonics train: --distributed is mpi or none, not '%s'\n", v);
      return CLI_USAGE;
    }
    t->distributed = v;
  }
  else if (missing) {
    fprintf(stderr, "harmonics train: %s needs a value\n", a);
    return CLI_USAGE;
  } else
    return -1;
#undef OPT
  return CLI_OK;
}

/* CLI_OK, or CLI_USAGE after a message; *done when --help was answered. */
static int parse_args(int argc, char **argv, train_args *t, int *done) {
  memset(t, 0, sizeof *t);
  t->epochs = 1;
  t->o = hm_fit_options_default();
  t->policy = hm_make_hardware_policy();
  snprintf(t->policy_text, sizeof t->policy_text, "hardware");
  *done = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      train_usage(stdout);
      *done = 1;
      return CLI_OK;
    } else if (strcmp(a, "--json") == 0) {
      t->json = 1;
    } else if (strcmp(a, "--no-shuffle") == 0) {
      t->o.shuffle = 0;
    } else if (a[0] == '-') {
      int rc = parse_valued(a, i + 1 < argc ? argv[i + 1] : NULL, t);
      if (rc == -1) {
        fprintf(stderr, "harmonics train: unknown option '%s'\n", a);
        train_usage(stderr);
        return CLI_USAGE;
      }
      if (rc != CLI_OK) return rc;
      i++;
    } else if (!t->model) {
      t->model = a;
    } else {
      fprintf(stderr, "harmonics train: unexpected argument '%s'\n", a);
      return CLI_USAGE;
    }
  }
  if (!t->model) {
    train_usage(stderr);
    return CLI_USAGE;
  }
  if (t->epochs == 0) {
    fprintf(stderr, "harmonics train: --epochs must be at least 1\n");
    return CLI_USAGE;
  }
  if (t->decay_rate > 0)
    t->o.lr_schedule_fp = hm_exponential_decay_schedule(t->o.learning_rate, t->decay_rate, t->decay_steps, t->decay_min);
  t->o.threads = (unsigned)t->threads;
  return CLI_OK;
}

/* Reads a checkpoint; under data parallel rank 0 reads the file and
 * broadcasts its bytes, so the other ranks need not see it. */
hm_status train_load_checkpoint(const char *path, const hm_collectives *dist, hm_cycle_state **out) {
  if (!dist) return hm_cycle_state_load(path, out);
  unsigned char *bytes = NULL;
  uint64_t size = 0;
  hm_status st = HM_OK;
  if (dist->rank == 0) {
    FILE *f = fopen(path, "rb");
    long n = -1;
    if (f && fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (f && n > 0 && fseek(f, 0, SEEK_SET) == 0 && (bytes = malloc((size_t)n)) && fread(bytes, 1, (size_t)n, f) == (size_t)n)
      size = (uint64_t)n;
    if (f) fclose(f);
  }
  st = dist->broadcast(dist->self, &size, sizeof size, 0);
  if (st == HM_OK && size == 0) {
    free(bytes);
    /* Rank 0 could not read it: let it say why, from the file itself. */
    if (dist->rank == 0) return hm_cycle_state_load(path, out);
    return hm_set_error(HM_STATUS_IO_ERROR, "%s: rank 0 could not read the checkpoint", path);
  }
  if (st == HM_OK && dist->rank != 0 && !(bytes = malloc((size_t)size)))
    st = hm_set_error(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory for a %llu-byte checkpoint", (unsigned long long)size);
  if (st == HM_OK) st = dist->broadcast(dist->self, bytes, (size_t)size, 0);
  FILE *m = st == HM_OK ? fmemopen(bytes, (size_t)size, "rb") : NULL;
  if (st == HM_OK && !m) st = hm_set_error(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (m) {
    st = hm_cycle_state_read(m, out);
    fclose(m);
  }
  free(bytes);
  return st;
}

/* --resume: the checkpoint decides everything that shapes the trajectory;
 * --init-weights: the starting weights. */
int train_apply_start(hm_graph *g, train_args *t, const hm_collectives *dist, hm_cycle_state **resume_state) {
  if (t->init_weights && t->resume) {
    fprintf(stderr, "harmonics train: --init-weights and --resume exclude each other\n");
    return CLI_USAGE;
  }
  if (t->resume) {
    hm_fit_options saved;
    if (train_load_checkpoint(t->resume, dist, resume_state) != HM_OK ||
        hm_cycle_state_fit_options(*resume_state, &saved, &t->policy) != HM_OK)
      return cli_fail("--resume");
    saved.backend = t->o.backend;
    saved.threads = t->o.threads;
    t->o = saved;
    t->o.resume = *resume_state;
    hm_policy_format(&t->policy, t->policy_text, sizeof t->policy_text);
    if (!dist || dist->rank == 0)
      fprintf(stderr, "harmonics: resuming %s at epoch %zu, step %zu\n", t->resume,
              hm_cycle_state_epoch(*resume_state), hm_cycle_state_step(*resume_state));
  }
  if (t->init_weights) {
    hm_weights *w = NULL;
    int rc = cli_load_weights(t->init_weights, &w);
    if (rc == CLI_OK && hm_graph_set_weights(g, w) != HM_OK) rc = cli_fail("--init-weights");
    hm_weights_free(w);
    if (rc != CLI_OK) return rc;
  }
  t->o.checkpoint_path = t->checkpoint;
  t->o.checkpoint_every = t->checkpoint_every;
  return CLI_OK;
}

int train_open_progress(train_args *t, progress_ui *ui, int root, size_t train_samples) {
  memset(ui, 0, sizeof *ui);
  ui->tty = isatty(2) && !t->json && root;
  ui->epochs = t->epochs;
  ui->batch = t->o.batch_size * t->o.accumulate_steps;
  ui->start = train_now();
  if (!root) return CLI_OK;
  hm_visualizer_options vopts = hm_visualizer_options_default();
  vopts.flush_seconds = 0; /* flushed explicitly at the end, once */
  if (t->dashboard && hm_websocket_visualizer_open_url(t->dashboard, &vopts, &ui->dashboard) != HM_OK)
    return cli_fail("--dashboard");
  t->o.progress.fn = train_on_progress;
  t->o.progress.user = ui;
  t->o.on_epoch = train_on_epoch;
  t->o.on_epoch_user = ui;
  ui->steps_per_epoch = (train_samples + ui->batch - 1) / ui->batch;
  return CLI_OK;
}

int train_save_weights(const train_args *t, const hm_weights *w, int rc) {
  if ((rc != CLI_OK && rc != CLI_DIVERGED) || !t->save_weights) return rc;
  /* A diverged run still saves: it holds the last finite weights. */
  if (!w || hm_weights_save_safetensors(w, t->save_weights) != HM_OK) return cli_fail("--save-weights");
  if (rc == CLI_DIVERGED) fprintf(stderr, "harmonics: saved the last finite weights to %s\n", t->save_weights);
  return rc;
}

/* Flushes and closes the dashboard sink, with its counts. */
void train_close_dashboard(progress_ui *ui) {
  if (!ui->dashboard.fn) return;
  hm_visualizer_stats vstats;
  memset(&vstats, 0, sizeof vstats);
  /* Give queued frames a moment to go out; training is already done. */
  if (hm_websocket_visualizer_flush(&ui->dashboard, 2.0) != HM_OK) fprintf(stderr, "harmonics: %s\n", hm_last_error());
  hm_websocket_visualizer_stats(&ui->dashboard, &vstats);
  hm_websocket_visualizer_free(&ui->dashboard);
  fprintf(stderr,
          "dashboard: %llu updates, %llu written to the socket (delivery is not acknowledged), %llu dropped, %llu "
          "not written, %llu connection(s)\n",
          (unsigned long long)vstats.queued, (unsigned long long)vstats.written, (unsigned long long)vstats.dropped,
          (unsigned long long)vstats.pending, (unsigned long long)vstats.connects);
}

void train_print_results(const hm_cycle_state *st) {
  float acc = hm_cycle_state_eval_accuracy(st);
  printf("backend: %s\n", hm_cycle_state_backend(st));
  for (size_t i = 0; i < hm_cycle_state_layer_count(st); i++) {
    const char *layer, *prec, *kernel, *note = hm_cycle_state_layer_note(st, i);
    if (hm_cycle_state_layer_precision(st, i, &layer, &prec, &kernel) != HM_OK) continue;
    size_t bytes = 0, count = 0;
    if (hm_cycle_state_layer_weight_bytes(st, i, &bytes, &count) != HM_OK || !count) continue;
    printf("layer %s: %s (%s), %.3f bits per weight%s%s\n", layer, prec, kernel, 8.0 * (double)bytes / (double)count,
           note[0] ? ": " : "", note);
  }
  if (!isnan(acc)) printf("test accuracy: %.2f%%\n", 100.0 * acc);
  else
    printf("mean loss of the last epoch: %.6f (last update: %.6f)\n", (double)hm_cycle_state_epoch_loss(st),
           (double)hm_cycle_state_loss(st));
}

void train_print_json(const train_args *t, const hm_cycle_state *st, int ranks) {
  printf("{\"model\":");
  json_string(stdout, t->model);
  printf(",\"test_accuracy\":");
  json_number(stdout, hm_cycle_state_eval_accuracy(st));
  printf(",\"test_loss\":");
  json_number(stdout, hm_cycle_state_eval_loss(st));
  printf(",\"train_loss\":"); /* mean over the last epoch's samples */
  json_number(stdout, hm_cycle_state_epoch_loss(st));
  printf(",\"final_loss\":"); /* the last update's mini-batch */
  json_number(stdout, hm_cycle_state_loss(st));
  printf(",\"epochs\":%zu,\"steps\":%zu,\"samples\":%zu,\"train_samples_per_s\":", hm_cycle_state_epoch(st),
         hm_cycle_state_step(st), hm_cycle_state_samples(st));
  json_number(stdout, samples_per_second(st));
  printf(",\"train_seconds\":");
  json_number(stdout, hm_cycle_state_train_seconds(st));
  printf(",\"elapsed_seconds\":");
  json_number(stdout, hm_cycle_state_elapsed(st));
  printf(",\"backend\":");
  json_string(stdout, hm_cycle_state_backend(st));
  printf(",\"peak_device_bytes\":%zu,\"ranks\":%d", hm_cycle_state_device_bytes(st), ranks);
  if (t->stages) {
    printf(",\"pipeline\":");
    json_string(stdout, t->pipeline);
    printf(",\"stages\":%zu,\"micro_batches\":%zu", t->stages, t->micro_batches);
  }
  printf(",\"policy\":");
  json_string(stdout, t->policy_text);
  printf(",\"optimizer\":\"%s\",\"lr\":", hm_optimizer_name(t->o.optimizer));
  json_number(stdout, t->o.learning_rate);
  printf(",\"batch\":%zu,\"seed\":%llu,\"threads\":%zu,\"stop_reason\":",
         t->o.batch_size * (t->stages ? t->micro_batches : 1),
         (unsigned long long)t->o.seed, t->threads);
  json_string(stdout, hm_cycle_state_stop_reason(st));
  printf(",\"layers\":[");
  for (size_t i = 0; i < hm_cycle_state_layer_count(st); i++) {
    const char *layer, *prec, *kernel;
    if (hm_cycle_state_layer_precision(st, i, &layer, &prec, &kernel) != HM_OK) continue;
    printf("%s{\"layer\":", i ? "," : "");
    json_string(stdout, layer);
    printf(",\"precision\":");
    json_string(stdout, prec);
    printf(",\"kernel\":");
    json_string(stdout, kernel);
    printf(",\"note\":");
    json_string(stdout, hm_cycle_state_layer_note(st, i));
    size_t bytes = 0, count = 0;
    if (hm_cycle_state_layer_weight_bytes(st, i, &bytes, &count) == HM_OK && count) {
      printf(",\"weight_bytes\":%zu,\"weight_count\":%zu,\"bits_per_weight\":", bytes, count);
      json_number(stdout, 8.0 * (double)bytes / (double)count);
    }
    printf("}");
  }
  printf("]}\n");
}

/* Loads the model and binds its data. */
int train_load_model(const train_args *t, hm_graph **g, cli_sources *src) {
  if (cli_load_model(t->model, g) != CLI_OK) return CLI_FAILED;
  int rc = CLI_OK;
  if (t->dataset) rc = cli_bind_dataset(*g, t->dataset, t->limit_train, t->limit_eval, src);
  for (size_t i = 0; i < t->n_data && rc == CLI_OK; i++) rc = cli_bind_spec(*g, t->data_specs[i], 0, t->limit_train, src);
  for (size_t i = 0; i < t->n_eval && rc == CLI_OK; i++) rc = cli_bind_spec(*g, t->eval_specs[i], 1, t->limit_eval, src);
  if (rc == CLI_OK && hm_graph_resolve(*g) != HM_OK) rc = cli_fail(NULL); /* the message names the file */
  if (rc == CLI_OK && hm_graph_warnings(*g)[0]) fprintf(stderr, "harmonics: warning: %s", hm_graph_warnings(*g));
  return rc;
}

/* --distributed: MPI when asked, or when an MPI launcher started us. */
static int open_distributed(const train_args *t, hm_collectives **out) {
  *out = NULL;
#if HM_HAVE_MPI
  int want = t->distributed ? strcmp(t->distributed, "mpi") == 0 : hm_mpi_launched();
  if (!want) return CLI_OK;
  if (hm_mpi_open(NULL, out) != HM_OK) return cli_fail("--distributed mpi");
  return CLI_OK;
#else
  if (t->distributed && strcmp(t->distributed, "mpi") == 0) {
    fprintf(stderr, "harmonics train: --distributed mpi: this build has no MPI (install libopenmpi-dev and rebuild)\n");
    return CLI_USAGE;
  }
  return CLI_OK;
#endif
}

static void close_distributed(hm_collectives *c) {
#if HM_HAVE_MPI
  hm_mpi_close(c);
#else
  (void)c;
#endif
}

static int train_run(train_args *t, const hm_collectives *dist);

/* Whether the model declares `partition by layer ...;` (then it trains as a
 * pipeline unless --pipeline none). A model that does not load says so later. */
static int declares_partition(const char *model) {
  hm_graph *g = NULL;
  hm_status st = cli_file_kind_of(model) == CLI_FILE_GRAPH ? hm_load_graph_file(model, &g) : hm_graph_load_dsl(model, &g);
  int yes = st == HM_OK && hm_graph_partition_count(g) > 0;
  hm_graph_free(g);
  hm_clear_error();
  return yes;
}

/* The pipeline options go together. */
static int check_pipeline_args(train_args *t) {
  if (!t->pipeline && !t->no_pipeline && declares_partition(t->model)) t->pipeline = ""; /* the model's own cuts */
  if (!t->pipeline && (t->micro_batches || t->stage_backends)) {
    fprintf(stderr, "harmonics train: %s needs --pipeline (or a model that declares `partition by layer ...;`)\n",
            t->micro_batches ? "--micro-batches" : "--stage-backend");
    return CLI_USAGE;
  }
  if (t->pipeline && t->o.accumulate_steps != 1) {
    fprintf(stderr, "harmonics train: a pipeline accumulates over its micro-batches: use --micro-batches, not "
                    "--accumulate\n");
    return CLI_USAGE;
  }
  if (t->pipeline && !t->micro_batches) t->micro_batches = 1;
  return CLI_OK;
}

int cmd_train(int argc, char **argv) {
  train_args t;
  int done = 0;
  int rc = parse_args(argc, argv, &t, &done);
  if (rc != CLI_OK || done) return rc;
  rc = check_pipeline_args(&t);
  if (rc != CLI_OK) return rc;
  hm_collectives *dist = NULL;
  rc = open_distributed(&t, &dist);
  if (rc != CLI_OK) return rc;
  rc = t.pipeline ? train_pipeline(&t, dist) : train_run(&t, dist);
  close_distributed(dist);
  return rc;
}

/* One rank's run (or the only one's): rank 0 prints, saves and streams. */
static int train_run(train_args *t_in, const hm_collectives *dist) {
  train_args t = *t_in;
  int rc = CLI_OK;
  int root = !dist || dist->rank == 0;
  if (!root) {
    t.dashboard = NULL;
    t.save_weights = NULL;
    t.json = 0;
  }
  /* The chosen backend alone is initialised (no CUDA start-up for a CPU run). */
  if (cli_registry_init(t.config, t.o.backend) != CLI_OK) return CLI_FAILED;
  hm_graph *g = NULL;
  cli_sources src = {{0}, 0, 0};
  hm_cycle_state *resume_state = NULL, *st = NULL;
  rc = train_load_model(&t, &g, &src);
  if (rc == CLI_OK) rc = train_apply_start(g, &t, dist, &resume_state);
  progress_ui ui;
  memset(&ui, 0, sizeof ui);
  if (rc == CLI_OK) rc = train_open_progress(&t, &ui, root, src.train_samples);
  if (rc == CLI_OK) {
    t.o.collectives = dist; /* after --resume replaced the options */
    hm_status fs = hm_graph_fit(g, t.epochs, &t.policy, &t.o, &st);
    if (fs == HM_STATUS_DIVERGED) {
      cli_fail(NULL);
      rc = CLI_DIVERGED;
    } else if (fs != HM_OK) {
      rc = cli_fail("training failed");
    }
  }
  train_close_dashboard(&ui);
  rc = train_save_weights(&t, hm_graph_weights(g), rc);
  if (rc == CLI_OK && root) train_print_results(st);
  if (rc == CLI_OK && t.json) train_print_json(&t, st, dist ? dist->size : 1);
  hm_cycle_state_free(st);
  hm_cycle_state_free(resume_state);
  hm_graph_free(g);
  cli_sources_free(&src);
  return rc;
}
