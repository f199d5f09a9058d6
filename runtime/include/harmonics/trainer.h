/*
 * The trainer: the steps of fit, one at a time, for a training loop of your
 * own (DESIGN.md §11; docs/training.md "A loop of your own"). A trainer is a
 * graph lowered onto a device with fit options: it computes the gradients
 * of a batch without applying them, hands them out and takes them back as
 * named tensors, applies one update the way fit does (gradient averaging,
 * norm, clipping, the schedule, the optimizer), and gets and sets weights.
 *
 *   hm_trainer *t;  hm_trainer_open(g, &policy, &opts, &t);
 *   for each epoch e: hm_trainer_epoch_order(t, e, order, n);
 *     for each batch:  hm_trainer_compute_gradients(t, order + pos, b, &loss);
 *                      hm_trainer_apply(t, &grad_norm);
 *   hm_trainer_close(t);     (the graph now holds the trained weights)
 *
 * With the options fit uses, such a loop gives fit's weights bit for bit
 * (tests/test_trainer.c). The trainer reads the graph's bound training data;
 * like fit it initialises the weights from opts.seed when the graph has
 * none.
 */
#ifndef HARMONICS_TRAINER_H_
#define HARMONICS_TRAINER_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics/training.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hm_trainer hm_trainer;

/* Lowers |g| onto a device chosen as fit chooses (opts.device,
 * opts.backend, the registry). NULL policy = hardware. The options'
 * callbacks (progress, on_epoch, checkpoints, collectives) are not used: the
 * loop is the caller's. With opts.resume (a checkpoint of fit or of
 * hm_trainer_save_checkpoint) it continues from its weights, optimizer state
 * and update count, after the same checks as fit's resume. A graph with no
 * training data bound gives a trainer that applies the gradients it is
 * given (hm_trainer_set_gradients), as a parameter server does; computing
 * gradients on it is FAILED_PRECONDITION. Caller closes. */
HM_API HM_MUST_USE hm_status hm_trainer_open(hm_graph *g, const hm_policy *policy, const hm_fit_options *opts,
                                             hm_trainer **out);
/* Writes the current weights into the graph and frees the trainer. */
HM_API void hm_trainer_close(hm_trainer *t);

/* Samples in the bound training data, and the updates applied so far. */
HM_API size_t hm_trainer_sample_count(const hm_trainer *t);
HM_API size_t hm_trainer_step(const hm_trainer *t);
/* The order fit visits the samples in during epoch |epoch| (0-based): a
 * permutation from (opts.seed, epoch), or 0..n-1 without shuffling. |n| must
 * be hm_trainer_sample_count. */
HM_API HM_MUST_USE hm_status hm_trainer_epoch_order(const hm_trainer *t, size_t epoch, int32_t *order, size_t n);

/* Forward and backward over the |n| samples |indices| (1 <= n <= the
 * options' batch_size): the gradients of their mean loss are added to the
 * trainer's gradients (the first batch after an apply replaces them), and
 * *loss (may be NULL) is that mean loss. */
HM_API HM_MUST_USE hm_status hm_trainer_compute_gradients(hm_trainer *t, const int32_t *indices, size_t n,
                                                          float *loss);
/* The gradients as named tensors, one per parameter and under its name
 * ("a->b.weight", "a->b.bias"). Caller frees. FAILED_PRECONDITION before
 * any batch was computed. */
HM_API HM_MUST_USE hm_status hm_trainer_gradients(hm_trainer *t, hm_weights **out);
/* Replaces the gradients: every parameter's tensor, f32, with its shape.
 * They then count as one batch for hm_trainer_apply's average. */
HM_API HM_MUST_USE hm_status hm_trainer_set_gradients(hm_trainer *t, const hm_weights *gradients);
/* Discards the gradients computed since the last update: the next batch
 * starts a new sum (a worker that hands its gradients to a parameter
 * server instead of applying them). */
HM_API void hm_trainer_clear_gradients(hm_trainer *t);
/* Multiplies the gradients by |factor|. */
HM_API HM_MUST_USE hm_status hm_trainer_scale_gradients(hm_trainer *t, float factor);
/* One update as fit makes it: the gradients averaged over the batches
 * computed since the last update, their L2 norm (*grad_norm, may be NULL;
 * before clipping), clipping, the learning rate of this update (the
 * schedule), the optimizer. DIVERGED when the norm is not finite: the
 * update was applied as fit's fused step applies it, so the weights may
 * now hold non-finite values (hm_trainer_set_weights puts good ones back). */
HM_API HM_MUST_USE hm_status hm_trainer_apply(hm_trainer *t, float *grad_norm);

/* Writes a checkpoint (atomically; the .hck format fit writes): the weights,
 * the optimizer state, the update count, the options and the policy. A
 * trainer opened with it as opts.resume continues bit-identically. */
HM_API HM_MUST_USE hm_status hm_trainer_save_checkpoint(hm_trainer *t, const char *path);

/* The current weights (a copy; caller frees), and new ones (checked as
 * hm_graph_set_weights checks them). */
HM_API HM_MUST_USE hm_status hm_trainer_weights(hm_trainer *t, hm_weights **out);
HM_API HM_MUST_USE hm_status hm_trainer_set_weights(hm_trainer *t, const hm_weights *w);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_TRAINER_H_ */
