/* Validation, checkpoint coding and resume comparison of the trajectory
 * fields, all expanded from HM_TRAJECTORY_FIELDS (trajectory.h). */
#include "train/trajectory.h"

#include "base/rng.h"
#include "harmonics/names.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ===== Per codec: write, read, print, equal ===== */

static void put_f32(hm_bytes *b, const float *v, int kind) { (void)kind, hm__bytes_f32(b, *v); }
static void put_size(hm_bytes *b, const size_t *v, int kind) { (void)kind, hm__bytes_u64(b, *v); }
static void put_u64(hm_bytes *b, const uint64_t *v, int kind) { (void)kind, hm__bytes_u64(b, *v); }
static void put_optimizer(hm_bytes *b, const hm_optimizer *v, int kind) { (void)kind, hm__bytes_u32(b, (uint32_t)*v); }
static void put_flag(hm_bytes *b, const int *v, int kind) { (void)kind, hm__bytes_u32(b, (uint32_t)*v); }
/* u32 kind, f32 params[4], u64 decay steps. */
static void put_schedule(hm_bytes *b, const hm_lr_schedule *v, int kind) {
  hm__bytes_u32(b, (uint32_t)kind);
  for (int i = 0; i < 4; i++) hm__bytes_f32(b, v->params[i]);
  hm__bytes_u64(b, v->iparams[0]);
}

static void get_f32(hm_reader *r, const char *f, float *v, int *kind) { (void)kind, *v = hm__read_f32(r, f); }
static void get_size(hm_reader *r, const char *f, size_t *v, int *kind) { (void)kind, *v = (size_t)hm__read_u64(r, f); }
static void get_u64(hm_reader *r, const char *f, uint64_t *v, int *kind) { (void)kind, *v = hm__read_u64(r, f); }
static void get_optimizer(hm_reader *r, const char *f, hm_optimizer *v, int *kind) {
  (void)kind, *v = (hm_optimizer)hm__read_u32(r, f);
}
static void get_flag(hm_reader *r, const char *f, int *v, int *kind) {
  uint32_t x = hm__read_u32(r, f);
  (void)kind, *v = x > 1 ? 2 : (int)x; /* 2 fails the check */
}
static void get_schedule(hm_reader *r, const char *f, hm_lr_schedule *v, int *kind) {
  uint32_t k = hm__read_u32(r, "schedule kind");
  float p[4];
  for (int i = 0; i < 4; i++) p[i] = hm__read_f32(r, f);
  uint64_t decay_steps = hm__read_u64(r, "schedule decay steps");
  if (r->status == HM_OK && k > 2) hm__reader_fail(r, "schedule kind %u is not 0, 1 or 2", k);
  *kind = (int)k;
  if (k == 1) {
    *v = hm_exponential_decay_schedule(p[0], p[1], (size_t)decay_steps, p[3]);
  } else {
    memset(v, 0, sizeof *v);
    memcpy(v->params, p, sizeof p);
    v->iparams[0] = decay_steps;
  }
}

static void show_f32(char *buf, size_t cap, const float *v, int kind) { (void)kind, snprintf(buf, cap, "%g", (double)*v); }
static void show_size(char *buf, size_t cap, const size_t *v, int kind) { (void)kind, snprintf(buf, cap, "%zu", *v); }
static void show_u64(char *buf, size_t cap, const uint64_t *v, int kind) {
  (void)kind, snprintf(buf, cap, "%llu", (unsigned long long)*v);
}
static void show_optimizer(char *buf, size_t cap, const hm_optimizer *v, int kind) {
  (void)kind, snprintf(buf, cap, "%d", (int)*v);
}
static void show_flag(char *buf, size_t cap, const int *v, int kind) { (void)kind, snprintf(buf, cap, "%d", *v); }
static void show_schedule(char *buf, size_t cap, const hm_lr_schedule *v, int kind) {
  if (kind == 1)
    snprintf(buf, cap, "exponential decay (%g, %g, %llu, %g)", (double)v->params[0], (double)v->params[1],
             (unsigned long long)v->iparams[0], (double)v->params[3]);
  else
    snprintf(buf, cap, "%s", kind == 0 ? "none" : "a user callback");
}

#define SAME_SCALAR(T)                                                      \
  static int same_##T(const T *a, int ka, const T *b, int kb) {            \
    (void)ka, (void)kb;                                                     \
    return *a == *b;                                                        \
  }
typedef float f32;
typedef size_t size;
typedef uint64_t u64;
typedef hm_optimizer optimizer;
typedef int flag;
SAME_SCALAR(f32)
SAME_SCALAR(size)
SAME_SCALAR(u64)
SAME_SCALAR(optimizer)
SAME_SCALAR(flag)
/* A user callback cannot be compared: the kind must match. */
static int same_schedule(const hm_lr_schedule *a, int ka, const hm_lr_schedule *b, int kb) {
  if (ka != kb) return 0;
  return ka != 1 || (memcmp(a->params, b->params, sizeof a->params) == 0 && a->iparams[0] == b->iparams[0]);
}

/* ===== Options and per-update scalars ===== */

/* Names the field that is out of range. */
hm_status hm__fit_options_check(const hm_fit_options *o) {
  if (o->struct_size != sizeof *o)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_fit_options.struct_size is %zu, expected %zu (use hm_fit_options_default)",
                    o->struct_size, sizeof *o);
  HM_RETURN_IF_ERROR(hm__trajectory_check(o));
  return hm__trajectory_check_optimizer_fields(o);
}

static float lr_for(const hm_fit_options *o, size_t update) {
  return o->lr_schedule_fp.fn ? o->lr_schedule_fp.fn(update, &o->lr_schedule_fp) : o->learning_rate;
}

hm_status hm__step_scalars(const hm_fit_options *o, size_t update, double count, double *scalars) {
  double t = (double)update + 1.0;
  float lr = lr_for(o, update);
  /* A negative rate would ascend the loss, a NaN would poison the weights. */
  if (!(lr >= 0.0f) || !isfinite(lr))
    return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                    "the learning-rate schedule returned %g for update %zu: a rate must be finite and >= 0",
                    (double)lr, update);
  scalars[SLOT_LR] = lr;
  scalars[SLOT_BC1] = 1.0 - pow((double)o->beta1, t);
  scalars[SLOT_BC2] = 1.0 - pow((double)o->beta2, t);
  scalars[SLOT_GRAD_SCALE] = 1.0 / count;
  scalars[SLOT_LOSS_SCALE] = 1.0;
  /* Dropout's step of the update's first micro-batch, modulo 2^24 (SPEC.md
   * 7.5); hm__dropout_step gives the others'. */
  scalars[SLOT_STEP] = fmod((double)update * (double)o->accumulate_steps, 16777216.0);
  return HM_OK;
}

/* ===== The order of the samples ===== */

void hm__epoch_order(const hm_fit_options *o, size_t epoch, int32_t *order, size_t n) {
  if (o->shuffle) {
    hm_rng rng;
    /* The order of epoch e depends only on (seed, e): resumable. */
    hm__rng_seed(&rng, o->seed ^ (0x5bd1e9955bd1e995ull * (epoch + 1)));
    hm__rng_permutation(&rng, order, n);
  } else {
    for (size_t i = 0; i < n; i++) order[i] = (int32_t)i;
  }
}

/* ===== The schedule ===== */

static float exp_decay(size_t step, const hm_lr_schedule *self) {
  float initial = self->params[0], rate = self->params[1], min_lr = self->params[3];
  uint64_t decay_steps = self->iparams[0];
  if (decay_steps == 0) return initial;
  float lr = initial * powf(rate, (float)(step / decay_steps));
  return lr > min_lr ? lr : min_lr;
}

hm_lr_schedule hm_exponential_decay_schedule(float initial, float rate, size_t decay_steps, float min_lr) {
  hm_lr_schedule s;
  memset(&s, 0, sizeof s);
  s.fn = exp_decay;
  s.params[0] = initial;
  s.params[1] = rate;
  s.iparams[0] = decay_steps;
  s.params[3] = min_lr;
  return s;
}

int hm__schedule_kind(const hm_lr_schedule *s) { return !s->fn ? 0 : s->fn == exp_decay ? 1 : 2; }

int hm__schedule_valid(const hm_lr_schedule *s) {
  for (int i = 0; i < 4; i++)
    if (!isfinite(s->params[i])) return 0;
  return 1;
}

/* ===== The table, expanded ===== */

hm_status hm__trajectory_check(const hm_fit_options *o) {
#define CHECK(field, codec, valid, rule, compared)                                                            \
  {                                                                                                           \
    __typeof__(o->field) v = o->field;                                                                        \
    if (!(valid)) {                                                                                           \
      char shown[96];                                                                                         \
      show_##codec(shown, sizeof shown, &v, hm__schedule_kind(&o->lr_schedule_fp));                           \
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_fit_options." #field " " rule " (got %s)", shown);      \
    }                                                                                                         \
  }
  HM_TRAJECTORY_FIELDS(CHECK)
#undef CHECK
  return HM_OK;
}

/* Which optimizers read each optimizer-specific field (abi/SPEC.md §7). A
 * value other than the default for an optimizer that ignores it would pass
 * silently, so it is refused. */
#define USERS(o) (1u << HM_OPTIMIZER_##o)
static const struct {
  const char *field;
  size_t offset;
  unsigned users;
  const char *who;
} optimizer_fields[] = {
    {"momentum", offsetof(hm_fit_options, momentum), USERS(SGD), "SGD"},
    {"weight_decay", offsetof(hm_fit_options, weight_decay), USERS(ADAMW) | USERS(LAMB), "AdamW and LAMB"},
    {"beta1", offsetof(hm_fit_options, beta1), USERS(ADAM) | USERS(ADAMW) | USERS(LAMB), "Adam, AdamW and LAMB"},
    {"beta2", offsetof(hm_fit_options, beta2), USERS(ADAM) | USERS(ADAMW) | USERS(LAMB), "Adam, AdamW and LAMB"},
    {"epsilon", offsetof(hm_fit_options, epsilon), USERS(ADAM) | USERS(RMSPROP) | USERS(ADAMW) | USERS(LAMB),
     "Adam, RMSProp, AdamW and LAMB"},
    {"rho", offsetof(hm_fit_options, rho), USERS(RMSPROP), "RMSProp"},
};
#undef USERS

hm_status hm__trajectory_check_optimizer_fields(const hm_fit_options *o) {
  hm_fit_options d = hm_fit_options_default();
  for (size_t i = 0; i < sizeof optimizer_fields / sizeof optimizer_fields[0]; i++) {
    if (optimizer_fields[i].users & (1u << o->optimizer)) continue;
    float v, dv;
    memcpy(&v, (const char *)o + optimizer_fields[i].offset, sizeof v);
    memcpy(&dv, (const char *)&d + optimizer_fields[i].offset, sizeof dv);
    if (v != dv)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                      "hm_fit_options.%s is %g but optimizer %s does not use it (%s is for %s; leave it at %g)",
                      optimizer_fields[i].field, (double)v, hm_optimizer_name(o->optimizer), optimizer_fields[i].field,
                      optimizer_fields[i].who, (double)dv);
  }
  return HM_OK;
}

void hm__trajectory_encode(const hm_fit_options *o, int schedule_kind, hm_bytes *b) {
#define ENCODE(field, codec, valid, rule, compared) put_##codec(b, &o->field, schedule_kind);
  HM_TRAJECTORY_FIELDS(ENCODE)
#undef ENCODE
}

hm_status hm__trajectory_decode(hm_reader *r, hm_fit_options *o, int *schedule_kind) {
  int kind = 0;
#define DECODE(field, codec, valid, rule, compared) get_##codec(r, #field, &o->field, &kind);
  HM_TRAJECTORY_FIELDS(DECODE)
#undef DECODE
  if (r->status != HM_OK) return r->status;
  if (hm__trajectory_check(o) != HM_OK) {
    char why[300];
    snprintf(why, sizeof why, "%s", hm_last_error());
    return hm__reader_fail(r, "%s", why);
  }
  *schedule_kind = kind;
  return HM_OK;
}

int hm__trajectory_difference(const hm_fit_options *o, int kind, const hm_fit_options *other, int other_kind,
                               const char **field, char *mine, char *theirs, size_t cap) {
#define COMPARE(f, codec, valid, rule, compared)                       \
  if ((compared) && !same_##codec(&o->f, kind, &other->f, other_kind)) { \
    *field = #f;                                                       \
    show_##codec(mine, cap, &o->f, kind);                              \
    show_##codec(theirs, cap, &other->f, other_kind);                  \
    return 1;                                                          \
  }
  HM_TRAJECTORY_FIELDS(COMPARE)
#undef COMPARE
  return 0;
}

hm_status hm__trajectory_compare(const hm_fit_options *o, int kind, const hm_fit_options *saved, int saved_kind) {
  const char *field = NULL;
  char now[96], then[96];
  if (!hm__trajectory_difference(o, kind, saved, saved_kind, &field, now, then, sizeof now)) return HM_OK;
  return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                  "resume: %s is %s but the checkpoint was trained with %s (use hm_cycle_state_fit_options)", field, now,
                  then);
}
