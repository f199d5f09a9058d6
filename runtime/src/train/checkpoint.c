/*
 * .hck checkpoints: a cycle state in the binary envelope (container.h).
 * Payload, version 2 (docs/formats.md; version 1 lacks the epoch-loss fields):
 *   u32 graph fingerprint
 *   u64 step, epoch, position (samples consumed in the current epoch), samples
 *   f64 train_seconds, elapsed
 *   f32 loss, grad_norm, lr, eval_loss, eval_accuracy
 *   f32 best_norm, u64 stall                              (early stopping)
 *   version 2: f32 epoch_loss, f64 epoch_loss_sum, u64 epoch_loss_rows
 *     (the last epoch's mean training loss, the current epoch's running sum)
 *   options: HM_TRAJECTORY_FIELDS in order (trajectory.h): f32 learning_rate,
 *     u32 optimizer, f32 grad_clip, u64 early_stop_patience, f32 early_stop_delta,
 *     f32 weight_decay, u64 accumulate_steps, u32 schedule kind (0 none,
 *     1 exponential decay, 2 user callback), f32 schedule params[4], u64
 *     schedule decay steps, u64 batch_size, u64 seed, u32 shuffle, f32
 *     momentum, beta1, beta2, epsilon, rho, u64 eval_batch_size
 *   policy: u32 kind, i32 bits, u32 n, i32 layer_bits[n] (n <= 64)
 *   str backend
 *   weights (the .hnwt payload encoding), optimizer state (the same)
 * Shuffling needs no stored generator state: the order of epoch e is drawn
 * from (seed, e), so (seed, epoch, position) restore it exactly.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/container.h"
#include "base/fileio.h"
#include "harmonics/serialization.h"
#include "train/cycle_state.h"
#include "train/trajectory.h"
#include "weights/weights.h"

static const char CHECKPOINT_MAGIC[8] = {'H', 'M', 'C', 'H', 'K', 'P', 'T', '1'};
#define MAX_CHECKPOINT_FILE ((size_t)32 << 30)

static void encode(const hm_cycle_state *s, hm_bytes *b) {
  const hm_fit_options *o = &s->opts;
  hm__bytes_u32(b, s->graph_fingerprint);
  hm__bytes_u64(b, s->step);
  hm__bytes_u64(b, s->epoch);
  hm__bytes_u64(b, s->position);
  hm__bytes_u64(b, s->samples);
  hm__bytes_f64(b, s->train_seconds);
  hm__bytes_f64(b, s->elapsed);
  hm__bytes_f32(b, s->loss);
  hm__bytes_f32(b, s->grad_norm);
  hm__bytes_f32(b, s->lr);
  hm__bytes_f32(b, s->eval_loss);
  hm__bytes_f32(b, s->eval_accuracy);
  hm__bytes_f32(b, s->best_norm);
  hm__bytes_u64(b, s->stall);
  hm__bytes_f32(b, s->epoch_loss);
  hm__bytes_f64(b, s->epoch_loss_sum);
  hm__bytes_u64(b, s->epoch_loss_rows);
  hm__trajectory_encode(o, s->schedule_kind, b);
  hm__bytes_u32(b, (uint32_t)s->policy.kind);
  hm__bytes_i32(b, s->policy.bits);
  hm__bytes_u32(b, (uint32_t)s->policy.n_connection_bits);
  for (size_t i = 0; i < s->policy.n_connection_bits; i++) hm__bytes_i32(b, s->policy.connection_bits[i]);
  hm__bytes_str(b, s->backend);
  hm__weights_encode(s->weights, b);
  hm__weights_encode(s->opt_state, b);
}

typedef struct ckpt_save {
  const hm_cycle_state *s;
  const char *path;
} ckpt_save;

static hm_status write_checkpoint(FILE *f, void *arg) {
  ckpt_save *c = arg;
  hm_bytes b = {0};
  encode(c->s, &b);
  hm_status st = hm__container_write(f, CHECKPOINT_MAGIC, HM_CHECKPOINT_FORMAT_VERSION, &b, c->path);
  hm__bytes_free(&b);
  return st;
}

hm_status hm_cycle_state_save(const hm_cycle_state *s, const char *path) {
  if (!s || !path) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_cycle_state_save: NULL argument");
  if (!s->has_options) return hm__fail(HM_STATUS_FAILED_PRECONDITION, "this cycle state did not come from fit: nothing to checkpoint");
  /* During fit the device may hold newer weights than the state's copy. */
  if (s->fetch) HM_RETURN_IF_ERROR(hm__cycle_state_sync((hm_cycle_state *)s));
  if (!s->weights || !s->opt_state) return hm__fail(HM_STATUS_FAILED_PRECONDITION, "the cycle state holds no weights");
  ckpt_save c = {s, path};
  return hm__atomic_write(path, write_checkpoint, &c);
}

/* Validates a decoded float field. */
static void need(hm_reader *r, int ok, const char *field) {
  if (r->status == HM_OK && !ok) hm__reader_fail(r, "%s has an impossible value", field);
}

static hm_status decode(hm_reader *r, uint32_t version, hm_cycle_state *s) {
  hm_fit_options *o = &s->opts;
  *o = hm_fit_options_default();
  s->graph_fingerprint = hm__read_u32(r, "graph fingerprint");
  s->step = (size_t)hm__read_u64(r, "step");
  s->epoch = (size_t)hm__read_u64(r, "epoch");
  s->position = (size_t)hm__read_u64(r, "position");
  s->samples = (size_t)hm__read_u64(r, "samples");
  s->train_seconds = hm__read_f64(r, "train_seconds");
  s->elapsed = hm__read_f64(r, "elapsed");
  s->loss = hm__read_f32(r, "loss");
  s->grad_norm = hm__read_f32(r, "grad_norm");
  s->lr = hm__read_f32(r, "lr");
  s->eval_loss = hm__read_f32(r, "eval_loss");
  s->eval_accuracy = hm__read_f32(r, "eval_accuracy");
  s->best_norm = hm__read_f32(r, "best_norm");
  s->stall = (size_t)hm__read_u64(r, "stall");
  if (version >= 2) {
    s->epoch_loss = hm__read_f32(r, "epoch_loss");
    s->epoch_loss_sum = hm__read_f64(r, "epoch_loss_sum");
    s->epoch_loss_rows = (size_t)hm__read_u64(r, "epoch_loss_rows");
    need(r, isfinite(s->epoch_loss_sum), "epoch_loss_sum");
    need(r, s->epoch_loss_rows <= ((size_t)1 << 40), "epoch_loss_rows");
  }
  HM_RETURN_IF_ERROR(hm__trajectory_decode(r, o, &s->schedule_kind));
  uint32_t kind = hm__read_u32(r, "policy kind");
  int32_t bits = hm__read_i32(r, "policy bits");
  size_t n_bits = hm__read_count(r, 4, HM_POLICY_MAX_CONNECTIONS, "policy connection count");
  int connection_bits[HM_POLICY_MAX_CONNECTIONS];
  for (size_t i = 0; i < n_bits && r->status == HM_OK; i++) connection_bits[i] = hm__read_i32(r, "policy connection bits");
  need(r, kind <= HM_POLICY_CONNECTION_BITS, "policy kind");
  need(r, s->position <= ((size_t)1 << 40), "position");
  if (r->status != HM_OK) return r->status;
  s->policy = kind == HM_POLICY_CONNECTION_BITS ? hm_make_connection_bits_policy(connection_bits, n_bits)
              : kind == HM_POLICY_MAX_BITS ? hm_make_max_bits_policy(bits)
              : kind == HM_POLICY_AUTO     ? hm_make_auto_policy()
                                           : hm_make_hardware_policy();
  char *backend = hm__read_str(r, sizeof s->backend - 1, "backend");
  if (backend) {
    snprintf(s->backend, sizeof s->backend, "%s", backend);
    hm__free(backend);
  }
  if (r->status != HM_OK) return r->status;
  HM_RETURN_IF_ERROR(hm__weights_decode_part(r, &s->weights));
  HM_RETURN_IF_ERROR(hm__weights_decode_part(r, &s->opt_state));
  s->has_options = 1;
  return hm__reader_finish(r);
}

hm_status hm__cycle_state_decode(const unsigned char *data, size_t len, const char *what, hm_cycle_state **out) {
  hm_reader r;
  uint32_t version = 0;
  HM_RETURN_IF_ERROR(hm__container_open(data, len, CHECKPOINT_MAGIC, HM_CHECKPOINT_FORMAT_VERSION, what, &r, &version));
  hm_cycle_state *s = NULL;
  HM_RETURN_IF_ERROR(hm__cycle_state_create(&s));
  hm_status st = decode(&r, version, s);
  if (st != HM_OK) {
    hm_cycle_state_free(s);
    return st;
  }
  s->stop_reason = HM_STOP_CHECKPOINT;
  *out = s;
  return HM_OK;
}

static hm_status read_stream(FILE *f, const char *what, hm_cycle_state **out) {
  unsigned char *buf = NULL;
  hm_reader r;
  HM_RETURN_IF_ERROR(
      hm__container_read(f, CHECKPOINT_MAGIC, HM_CHECKPOINT_FORMAT_VERSION, MAX_CHECKPOINT_FILE, what, &buf, &r, NULL));
  hm_status st = hm__cycle_state_decode(buf, r.len + HM_CONTAINER_HEADER, what, out);
  hm__free(buf);
  return st;
}

hm_status hm_cycle_state_load(const char *path, hm_cycle_state **out) {
  if (!path || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_cycle_state_load: NULL argument");
  FILE *f = fopen(path, "rb");
  if (!f)
    return hm__fail(errno == ENOENT ? HM_STATUS_NOT_FOUND : HM_STATUS_IO_ERROR, "cannot open %s: %s", path, strerror(errno));
  hm_status st = read_stream(f, path, out);
  fclose(f);
  return st;
}

hm_status hm_cycle_state_read(FILE *f, hm_cycle_state **out) {
  if (!f || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_cycle_state_read: NULL argument");
  return read_stream(f, "checkpoint stream", out);
}

hm_status hm_cycle_state_fit_options(const hm_cycle_state *s, hm_fit_options *opts, hm_policy *policy) {
  if (!s || !opts) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_cycle_state_fit_options: NULL argument");
  if (!s->has_options) return hm__fail(HM_STATUS_FAILED_PRECONDITION, "this cycle state holds no fit options");
  *opts = s->opts;
  if (policy) *policy = s->policy;
  return HM_OK;
}
