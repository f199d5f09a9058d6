/*
 * Saving and loading graphs (.hgr), named weights (.hnwt) and checkpoints
 * (.hck). Formats: docs/formats.md. Every loader checks magic, version and
 * checksums and validates every count and length against the file before
 * allocating; a bad file is DATA_LOSS (INCOMPATIBLE for a newer format
 * version) with a message naming the file, the offset or tensor, and what
 * was expected. The _file variants save atomically: a temporary file in the
 * same directory, flushed, fsync'ed and renamed over the target, so a crash
 * mid-save leaves the previous file intact.
 */
#ifndef HARMONICS_SERIALIZATION_H_
#define HARMONICS_SERIALIZATION_H_

#include <stdio.h>

#include "harmonics/graph.h"
#include "harmonics/status.h"
#include "harmonics/training.h"
#include "harmonics/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HM_GRAPH_FORMAT_VERSION 3 /* 3: shapes and window connections; 2: the declared partition; 1 and 2 still load */
#define HM_WEIGHTS_FORMAT_VERSION 1
#define HM_CHECKPOINT_FORMAT_VERSION 2

/* The graph with declared and resolved widths, activations, losses,
 * producers and consumers; bindings and weights are not stored. */
HM_API HM_MUST_USE hm_status hm_save_graph(const hm_graph *g, FILE *f);
HM_API HM_MUST_USE hm_status hm_load_graph(FILE *f, hm_graph **out);
HM_API HM_MUST_USE hm_status hm_save_graph_file(const hm_graph *g, const char *path);
HM_API HM_MUST_USE hm_status hm_load_graph_file(const char *path, hm_graph **out);

/* Named tensors with dtype and shape. */
HM_API HM_MUST_USE hm_status hm_save_weights(const hm_weights *w, FILE *f);
HM_API HM_MUST_USE hm_status hm_load_weights(FILE *f, hm_weights **out);
HM_API HM_MUST_USE hm_status hm_save_weights_file(const hm_weights *w, const char *path);
HM_API HM_MUST_USE hm_status hm_load_weights_file(const char *path, hm_weights **out);

/* Checkpoints: a cycle state with everything needed to resume training
 * bit-identically — weights, optimizer state, step, epoch and position in the
 * epoch, the shuffling seed, early-stop state, fit options and policy, and a
 * fingerprint of the graph. Resume with hm_fit_options.resume. */
HM_API HM_MUST_USE hm_status hm_cycle_state_save(const hm_cycle_state *s, const char *path);
HM_API HM_MUST_USE hm_status hm_cycle_state_load(const char *path, hm_cycle_state **out);
HM_API HM_MUST_USE hm_status hm_cycle_state_read(FILE *f, hm_cycle_state **out);
/* The options and policy a checkpoint was trained with. */
HM_API HM_MUST_USE hm_status hm_cycle_state_fit_options(const hm_cycle_state *s, hm_fit_options *opts,
                                                        hm_policy *policy);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_SERIALIZATION_H_ */
