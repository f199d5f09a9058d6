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

#include "cli.h"

static void train_usage(FILE *f) {
  fprintf(f,
          "usage: harmonics train MODEL.hmx [options]\n"
          "data:\n"
          "  --dataset fashion-mnist     pixels -> first input producer, labels -> first loss target;\n"
          "                              evaluates on the 10k test split after each epoch\n"
          "  --data NAME=SPEC            training data of producer NAME; SPEC = idx:PATH | csv:PATH | labels:PATH\n"
          "  --eval-data NAME=SPEC       held-out evaluation data of producer NAME\n"
          "  --limit-train N             use the first N training samples\n"
          "  --limit-eval N              use the first N evaluation samples\n"
          "training:\n"
          "  --epochs N (1)  --batch N (32)  --seed N (0)  --no-shuffle\n"
          "  --optimizer sgd|adam|rmsprop|adamw|lamb (sgd)  --lr X (0.01)\n"
          "  --momentum X  --weight-decay X  --grad-clip X  --accumulate N\n"
          "  --early-stop N  --early-stop-delta X  --lr-decay RATE:STEPS[:MIN]\n"
          "  --policy P                  hardware (f32, default) | auto | bits:8 | bits:4 | bits:3 |\n"
          "                              layers:B,B,... (per connection in graph order; 32, 8, 4, 3;\n"
          "                              the last repeats). Packed widths train quantization-aware.\n"
          "weights and checkpoints:\n"
          "  --init-weights FILE.safetensors   start from these weights\n"
          "  --save-weights FILE.safetensors   write the trained weights\n"
          "  --checkpoint FILE.hck             write a checkpoint after every epoch and at the end\n"
          "  --checkpoint-every N              ... and every N updates\n"
          "  --resume FILE.hck                 continue a checkpoint bit-identically (its options and\n"
          "                                    policy apply; --epochs is the total to reach)\n"
          "where:\n"
          "  --backend NAME[:N]  --threads N  --config FILE\n"
          "  --dashboard ws://HOST:PORT/trainer   stream every update to a dashboard\n"
          "                                       (harmonics dashboard, or examples/training_dashboard)\n"
          "output:\n"
          "  --json              a last line of JSON with the results\n");
}

typedef struct progress_ui {
  int tty;
  hm_progress_sink dashboard; /* --dashboard: every update also goes here */
  size_t epochs, steps_per_epoch, batch, total_samples;
  double start, last_draw;
  const hm_cycle_state *state;
  size_t step_in_run;
} progress_ui;

static void fmt_duration(double s, char *buf, size_t cap) {
  if (!(s >= 0) || s > 1e7) {
    snprintf(buf, cap, "--:--");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Progress sink: redraws the bar at most 10 times a second. */
static void on_progress(void *user, size_t step, float grad_norm, float loss, float lr) {
  progress_ui *ui = user;
  if (ui->dashboard.fn) ui->dashboard.fn(ui->dashboard.user, step, grad_norm, loss, lr);
  if (!ui->tty) return;
  double t = now_s();
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

static int on_epoch(void *user, const hm_cycle_state *st) {
  progress_ui *ui = user;
  ui->state = st;
  double sps = hm_cycle_state_train_seconds(st) > 0
                   ? (double)hm_cycle_state_samples(st) / hm_cycle_state_train_seconds(st)
                   : 0;
  float acc = hm_cycle_state_eval_accuracy(st), eloss = hm_cycle_state_eval_loss(st);
  if (ui->tty) fprintf(stderr, "\n");
  FILE *out = ui->tty ? stderr : stdout;
  fprintf(out, "epoch %zu/%zu: loss %.4f", hm_cycle_state_epoch(st), ui->epochs, (double)hm_cycle_state_loss(st));
  if (!isnan(eloss)) fprintf(out, ", test loss %.4f", (double)eloss);
  if (!isnan(acc)) fprintf(out, ", test accuracy %.2f%%", 100.0 * acc);
  fprintf(out, ", %.0f samples/s\n", sps);
  fflush(out);
  return 0;
}

static const char *optimizer_names[] = {"sgd", "adam", "rmsprop", "adamw", "lamb"};

int cmd_train(int argc, char **argv) {
  const char *model = NULL, *dataset = NULL, *config = NULL, *init_weights = NULL, *save_weights = NULL;
  const char *checkpoint = NULL, *resume = NULL, *dashboard = NULL;
  size_t checkpoint_every = 0;
  const char *data_specs[16], *eval_specs[16];
  size_t n_data = 0, n_eval = 0, epochs = 1, limit_train = 0, limit_eval = 0, threads = 0;
  int json = 0;
  hm_fit_options o = hm_fit_options_default();
  hm_policy policy = hm_make_hardware_policy();
  char policy_text[64] = "hardware";
  float decay_rate = 0, decay_min = 0;
  size_t decay_steps = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE                                                       \
  if (!v) {                                                              \
    fprintf(stderr, "harmonics train: %s needs a value\n", a);          \
    return CLI_USAGE;                                                    \
  }                                                                      \
  i++
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      train_usage(stdout);
      return CLI_OK;
    } else if (strcmp(a, "--json") == 0) {
      json = 1;
    } else if (strcmp(a, "--no-shuffle") == 0) {
      o.shuffle = 0;
    } else if (strcmp(a, "--dataset") == 0) {
      NEED_VALUE;
      dataset = v;
    } else if (strcmp(a, "--data") == 0 || strcmp(a, "--eval-data") == 0) {
      NEED_VALUE;
      if ((a[2] == 'd' ? n_data : n_eval) >= 16) return CLI_USAGE;
      if (a[2] == 'd') data_specs[n_data++] = v;
      else eval_specs[n_eval++] = v;
    } else if (strcmp(a, "--epochs") == 0) {
      NEED_VALUE;
      if (cli_parse_size(a, v, &epochs)) return CLI_USAGE;
    } else if (strcmp(a, "--batch") == 0) {
      NEED_VALUE;
      if (cli_parse_size(a, v, &o.batch_size)) return CLI_USAGE;
    } else if (strcmp(a, "--seed") == 0) {
      NEED_VALUE;
      size_t seed;
      if (cli_parse_size(a, v, &seed)) return CLI_USAGE;
      o.seed = seed;
    } else if (strcmp(a, "--limit-train") == 0) {
      NEED_VALUE;
      if (cli_parse_size(a, v, &limit_train)) return CLI_USAGE;
    } else if (strcmp(a, "--limit-eval") == 0) {
      NEED_VALUE;
      if (cli_parse_size(a, v, &limit_eval)) return CLI_USAGE;
    } else if (strcmp(a, "--threads") == 0) {
      NEED_VALUE;
      if (cli_parse_size(a, v, &threads)) return CLI_USAGE;
    } else if (strcmp(a, "--accumulate") == 0) {
      NEED_VALUE;
      if (cli_parse_size(a, v, &o.accumulate_steps)) return CLI_USAGE;
    } else if (strcmp(a, "--early-stop") == 0) {
      NEED_VALUE;
      if (cli_parse_size(a, v, &o.early_stop_patience)) return CLI_USAGE;
    } else if (strcmp(a, "--lr") == 0) {
      NEED_VALUE;
      if (cli_parse_float(a, v, &o.learning_rate)) return CLI_USAGE;
    } else if (strcmp(a, "--momentum") == 0) {
      NEED_VALUE;
      if (cli_parse_float(a, v, &o.momentum)) return CLI_USAGE;
    } else if (strcmp(a, "--weight-decay") == 0) {
      NEED_VALUE;
      if (cli_parse_float(a, v, &o.weight_decay)) return CLI_USAGE;
    } else if (strcmp(a, "--grad-clip") == 0) {
      NEED_VALUE;
      if (cli_parse_float(a, v, &o.grad_clip)) return CLI_USAGE;
    } else if (strcmp(a, "--early-stop-delta") == 0) {
      NEED_VALUE;
      if (cli_parse_float(a, v, &o.early_stop_delta)) return CLI_USAGE;
    } else if (strcmp(a, "--lr-decay") == 0) {
      NEED_VALUE;
      char *end = NULL;
      decay_rate = strtof(v, &end);
      if (!end || *end != ':' || !(decay_rate > 0)) {
        fprintf(stderr, "harmonics train: --lr-decay expects RATE:STEPS[:MIN]\n");
        return CLI_USAGE;
      }
      decay_steps = strtoul(end + 1, &end, 10);
      if (*end == ':') decay_min = strtof(end + 1, &end);
      if (*end) {
        fprintf(stderr, "harmonics train: --lr-decay expects RATE:STEPS[:MIN]\n");
        return CLI_USAGE;
      }
    } else if (strcmp(a, "--optimizer") == 0) {
      NEED_VALUE;
      int found = -1;
      for (int k = 0; k < 5; k++)
        if (strcmp(v, optimizer_names[k]) == 0) found = k;
      if (found < 0) {
        fprintf(stderr, "harmonics train: unknown optimizer '%s' (sgd, adam, rmsprop, adamw, lamb)\n", v);
        return CLI_USAGE;
      }
      o.optimizer = (hm_optimizer)found;
    } else if (strcmp(a, "--policy") == 0) {
      NEED_VALUE;
      if (hm_policy_parse(v, &policy) != HM_OK) return cli_fail("--policy");
      hm_policy_format(&policy, policy_text, sizeof policy_text);
    } else if (strcmp(a, "--dashboard") == 0) {
      NEED_VALUE;
      dashboard = v;
    } else if (strcmp(a, "--backend") == 0) {
      NEED_VALUE;
      o.backend = v;
    } else if (strcmp(a, "--config") == 0) {
      NEED_VALUE;
      config = v;
    } else if (strcmp(a, "--init-weights") == 0) {
      NEED_VALUE;
      init_weights = v;
    } else if (strcmp(a, "--save-weights") == 0) {
      NEED_VALUE;
      save_weights = v;
    } else if (strcmp(a, "--checkpoint") == 0) {
      NEED_VALUE;
      checkpoint = v;
    } else if (strcmp(a, "--checkpoint-every") == 0) {
      NEED_VALUE;
      if (cli_parse_size(a, v, &checkpoint_every)) return CLI_USAGE;
    } else if (strcmp(a, "--resume") == 0) {
      NEED_VALUE;
      resume = v;
    } else if (a[0] == '-') {
      fprintf(stderr, "harmonics train: unknown option '%s'\n", a);
      train_usage(stderr);
      return CLI_USAGE;
    } else if (!model) {
      model = a;
    } else {
      fprintf(stderr, "harmonics train: unexpected argument '%s'\n", a);
      return CLI_USAGE;
    }
#undef NEED_VALUE
  }
  if (!model) {
    train_usage(stderr);
    return CLI_USAGE;
  }
  if (epochs == 0) {
    fprintf(stderr, "harmonics train: --epochs must be at least 1\n");
    return CLI_USAGE;
  }
  if (decay_rate > 0) o.lr_schedule_fp = hm_exponential_decay_schedule(o.learning_rate, decay_rate, decay_steps, decay_min);
  o.threads = (unsigned)threads;
  if (cli_registry_init(config, NULL) != CLI_OK) return CLI_FAILED;

  hm_graph *g = NULL;
  if (hm_graph_load_dsl(model, &g) != HM_OK) return cli_fail(NULL);
  cli_sources src = {{0}, 0, 0};
  int rc = CLI_OK;
  if (dataset) rc = cli_bind_dataset(g, dataset, limit_train, limit_eval, &src);
  for (size_t i = 0; i < n_data && rc == CLI_OK; i++) rc = cli_bind_spec(g, data_specs[i], 0, limit_train, &src);
  for (size_t i = 0; i < n_eval && rc == CLI_OK; i++) rc = cli_bind_spec(g, eval_specs[i], 1, limit_eval, &src);
  if (rc == CLI_OK && hm_graph_resolve(g) != HM_OK) rc = cli_fail(model);
  if (rc == CLI_OK && hm_graph_warnings(g)[0]) fprintf(stderr, "harmonics: warning: %s", hm_graph_warnings(g));
  hm_cycle_state *resume_state = NULL;
  if (rc == CLI_OK && resume) {
    if (hm_cycle_state_load(resume, &resume_state) != HM_OK) rc = cli_fail("--resume");
    hm_fit_options saved;
    if (rc == CLI_OK && hm_cycle_state_fit_options(resume_state, &saved, &policy) != HM_OK) rc = cli_fail("--resume");
    if (rc == CLI_OK) {
      /* The checkpoint decides everything that shapes the trajectory. */
      saved.backend = o.backend;
      saved.threads = o.threads;
      o = saved;
      o.resume = resume_state;
      hm_policy_format(&policy, policy_text, sizeof policy_text);
      fprintf(stderr, "harmonics: resuming %s at epoch %zu, step %zu\n", resume, hm_cycle_state_epoch(resume_state),
              hm_cycle_state_step(resume_state));
    }
  }
  o.checkpoint_path = checkpoint;
  o.checkpoint_every = checkpoint_every;
  if (rc == CLI_OK && init_weights && resume) {
    fprintf(stderr, "harmonics train: --init-weights and --resume exclude each other\n");
    rc = CLI_USAGE;
  }
  if (rc == CLI_OK && init_weights) {
    hm_weights *w = NULL;
    if (hm_weights_load_safetensors(init_weights, &w) != HM_OK || hm_graph_set_weights(g, w) != HM_OK)
      rc = cli_fail("--init-weights");
    hm_weights_free(w);
  }
  progress_ui ui;
  memset(&ui, 0, sizeof ui);
  ui.tty = isatty(2) && !json;
  ui.epochs = epochs;
  ui.batch = o.batch_size;
  ui.start = now_s();
  hm_visualizer_options vopts = hm_visualizer_options_default();
  vopts.flush_seconds = 0; /* flushed explicitly below, once */
  if (rc == CLI_OK && dashboard && hm_websocket_visualizer_open_url(dashboard, &vopts, &ui.dashboard) != HM_OK)
    rc = cli_fail("--dashboard");
  if (rc == CLI_OK) {
    o.progress.fn = on_progress;
    o.progress.user = &ui;
    o.on_epoch = on_epoch;
    o.on_epoch_user = &ui;
    size_t per_step = o.batch_size * o.accumulate_steps;
    ui.steps_per_epoch = (src.train_samples + per_step - 1) / per_step;
  }
  hm_cycle_state *st = NULL;
  if (rc == CLI_OK) rc = hm_graph_fit(g, epochs, &policy, &o, &st) == HM_OK ? CLI_OK : cli_fail("training failed");
  hm_visualizer_stats vstats;
  memset(&vstats, 0, sizeof vstats);
  if (ui.dashboard.fn) {
    /* Give queued frames a moment to go out; training is already done. */
    if (hm_websocket_visualizer_flush(&ui.dashboard, 2.0) != HM_OK) fprintf(stderr, "harmonics: %s\n", hm_last_error());
    hm_websocket_visualizer_stats(&ui.dashboard, &vstats);
    hm_websocket_visualizer_free(&ui.dashboard);
    fprintf(stderr, "dashboard: %llu updates, %llu sent, %llu dropped, %llu not delivered, %llu connection(s)\n",
            (unsigned long long)vstats.queued, (unsigned long long)vstats.sent, (unsigned long long)vstats.dropped,
            (unsigned long long)vstats.pending, (unsigned long long)vstats.connects);
  }
  if (rc == CLI_OK && save_weights && hm_weights_save_safetensors(hm_graph_weights(g), save_weights) != HM_OK)
    rc = cli_fail("--save-weights");
  if (rc == CLI_OK) {
    double sps = hm_cycle_state_train_seconds(st) > 0
                     ? (double)hm_cycle_state_samples(st) / hm_cycle_state_train_seconds(st)
                     : 0;
    float acc = hm_cycle_state_eval_accuracy(st);
    for (size_t i = 0; i < hm_cycle_state_layer_count(st); i++) {
      const char *layer, *prec, *kernel, *note = hm_cycle_state_layer_note(st, i);
      if (hm_cycle_state_layer_precision(st, i, &layer, &prec, &kernel) != HM_OK) continue;
      printf("layer %s: %s (%s)%s%s\n", layer, prec, kernel, note[0] ? ": " : "", note);
    }
    if (!isnan(acc)) printf("test accuracy: %.2f%%\n", 100.0 * acc);
    else printf("final loss: %.6f\n", (double)hm_cycle_state_loss(st));
    if (json) {
      printf("{\"model\":");
      json_string(stdout, model);
      printf(",\"test_accuracy\":");
      json_number(stdout, acc);
      printf(",\"test_loss\":");
      json_number(stdout, hm_cycle_state_eval_loss(st));
      printf(",\"final_loss\":");
      json_number(stdout, hm_cycle_state_loss(st));
      printf(",\"epochs\":%zu,\"steps\":%zu,\"samples\":%zu,\"train_samples_per_s\":", hm_cycle_state_epoch(st),
             hm_cycle_state_step(st), hm_cycle_state_samples(st));
      json_number(stdout, sps);
      printf(",\"train_seconds\":");
      json_number(stdout, hm_cycle_state_train_seconds(st));
      printf(",\"elapsed_seconds\":");
      json_number(stdout, hm_cycle_state_elapsed(st));
      printf(",\"backend\":");
      json_string(stdout, hm_cycle_state_backend(st));
      printf(",\"policy\":");
      json_string(stdout, policy_text);
      printf(",\"optimizer\":\"%s\",\"lr\":", optimizer_names[o.optimizer]);
      json_number(stdout, o.learning_rate);
      printf(",\"batch\":%zu,\"seed\":%llu,\"threads\":%zu,\"stop_reason\":", o.batch_size, (unsigned long long)o.seed,
             threads);
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
        printf("}");
      }
      printf("]}\n");
    }
  }
  hm_cycle_state_free(st);
  hm_cycle_state_free(resume_state);
  hm_graph_free(g);
  cli_sources_free(&src);
  return rc;
}
