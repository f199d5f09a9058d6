/*
 * The fit options that shape a training trajectory, listed once. From this
 * table come their validation, their encoding in checkpoints (in this order:
 * docs/formats.md) and the comparison that refuses a resume with different
 * options. A field added to hm_fit_options that changes what training
 * computes belongs here.
 */
#ifndef HM_TRAIN_TRAJECTORY_H_
#define HM_TRAIN_TRAJECTORY_H_

#include "base/container.h"
#include "harmonics/training.h"
#include "lower/lower.h"

#define HM_MAX_BATCH ((size_t)1 << 20)

/* X(field, codec, valid(v), rule, compared on resume)
 * codec: f32, size (u64), u64, optimizer (u32), flag (u32 0/1), schedule. */
#define HM_TRAJECTORY_FIELDS(X)                                                                              \
  X(learning_rate, f32, v > 0.0f && isfinite(v), "must be positive and finite", 1)                           \
  X(optimizer, optimizer, (unsigned)v < HM_OPTIMIZER_COUNT, "must be one of SGD, Adam, RMSProp, AdamW, LAMB", 1) \
  X(grad_clip, f32, isfinite(v), "must be finite", 1)                                                        \
  X(early_stop_patience, size, 1, "", 1)                                                                     \
  X(early_stop_delta, f32, v >= 0.0f && isfinite(v), "must be >= 0 and finite", 1)                          \
  X(weight_decay, f32, v >= 0.0f && isfinite(v), "must be >= 0 and finite", 1)                              \
  X(accumulate_steps, size, v >= 1, "must be at least 1", 1)                                                 \
  X(lr_schedule_fp, schedule, hm__schedule_valid(&v), "must be finite numbers", 1)                           \
  X(batch_size, size, v >= 1 && v <= HM_MAX_BATCH, "must be in [1, 1048576]", 1)                             \
  X(seed, u64, 1, "", 1)                                                                                     \
  X(shuffle, flag, v == 0 || v == 1, "must be 0 or 1", 1)                                                    \
  X(momentum, f32, v >= 0.0f && v < 1.0f, "must be in [0, 1)", 1)                                            \
  X(beta1, f32, v >= 0.0f && v < 1.0f, "must be in [0, 1)", 1)                                               \
  X(beta2, f32, v >= 0.0f && v < 1.0f, "must be in [0, 1)", 1)                                               \
  X(epsilon, f32, v > 0.0f && isfinite(v), "must be positive and finite", 1)                                 \
  X(rho, f32, v >= 0.0f && v < 1.0f, "must be in [0, 1)", 1)                                                 \
  X(eval_batch_size, size, v >= 1 && v <= HM_MAX_BATCH, "must be in [1, 1048576]", 0)

/* What a schedule is, as stored: 0 none, 1 exponential decay, 2 a user
 * callback (which a checkpoint cannot hold: the resuming caller passes it). */
int hm__schedule_kind(const hm_lr_schedule *s);
int hm__schedule_valid(const hm_lr_schedule *s);

/* INVALID_ARGUMENT naming the first field outside its rule. */
hm_status hm__trajectory_check(const hm_fit_options *o);
/* INVALID_ARGUMENT naming an optimizer-specific field (momentum,
 * weight_decay, beta1, beta2, epsilon, rho) set away from its default for
 * an optimizer that does not read it. */
hm_status hm__trajectory_check_optimizer_fields(const hm_fit_options *o);
void hm__trajectory_encode(const hm_fit_options *o, int schedule_kind, hm_bytes *b);
/* Reads every field into |o| (a default-initialised struct), then checks
 * them; a bad value is a reader failure naming the field. */
hm_status hm__trajectory_decode(hm_reader *r, hm_fit_options *o, int *schedule_kind);
/* INVALID_ARGUMENT naming the first compared field where |o| differs from
 * the checkpoint's |saved|. */
hm_status hm__trajectory_compare(const hm_fit_options *o, int kind, const hm_fit_options *saved, int saved_kind);
/* Checks every field of fit options (struct_size, ranges, optimizer-specific
 * fields); the message names the field. */
hm_status hm__fit_options_check(const hm_fit_options *o);
/* The dynamic scalars of update |update| (0-based) over |count| gradient
 * batches: the learning rate (the schedule's, checked), Adam's bias
 * corrections, the average 1/count, and a loss scale of 1. */
hm_status hm__step_scalars(const hm_fit_options *o, size_t update, double count, double *scalars);
/* The order of the |n| training samples in epoch |epoch| (0-based): a
 * permutation drawn from (seed, epoch) when shuffling, else 0 .. n-1. */
void hm__epoch_order(const hm_fit_options *o, size_t epoch, int32_t *order, size_t n);
/* 1 when a compared field differs: its name, and both values as text. */
int hm__trajectory_difference(const hm_fit_options *o, int kind, const hm_fit_options *other, int other_kind,
                              const char **field, char *mine, char *theirs, size_t cap);

#endif /* HM_TRAIN_TRAJECTORY_H_ */
