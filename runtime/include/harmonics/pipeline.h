/*
 * Pipelines: a graph cut by layer into stages that train together, each on
 * its own thread, process or machine, with activations flowing forward and
 * their gradients back across the cuts (DESIGN.md §11; docs/distributed.md
 * "Pipelines").
 *
 *   const char *cuts[] = {"hidden"};
 *   hm_partition *p;  hm_graph_partition_by_layer(g, cuts, 1, &p);
 *   stage 0 = hm_partition_stage(p, 0): pixels -> hidden -> consumer boundary0
 *   stage 1 = hm_partition_stage(p, 1): producer boundary0 -> logits <- label
 *
 * Each stage is an ordinary graph (save it, inspect it, bind it) that trains
 * with hm_graph_fit and hm_fit_options.pipeline naming the partition, the
 * stage and a transport. The schedule is GPipe: an update's
 * accumulate_steps micro-batches of batch_size rows flow forward through all
 * stages, then backward; each stage applies its update after the last. So a
 * pipeline is bit-identical to one process training the whole graph with
 * the same batch_size and accumulate_steps, on the same plugin and thread
 * count (docs/distributed.md says when association can differ).
 *
 * Transports move one tagged tensor at a time; Harmonics ships an
 * in-process one (stages on threads: hm_partition_fit does it all) and one
 * over MPI (<harmonics/mpi.h>); a user's is a struct of callbacks
 * (examples/pipeline_tcp_transport.c).
 */
#ifndef HARMONICS_PIPELINE_H_
#define HARMONICS_PIPELINE_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics/graph.h"
#include "harmonics/status.h"
#include "harmonics/training.h"
#include "harmonics/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ===== Partitions ===== */

typedef struct hm_partition hm_partition;

/* Cuts |g| after each of the |n_cuts| named layers into n_cuts + 1 stages.
 * Stage k holds cut k's layer and every layer it depends on that no earlier
 * stage holds; the last stage holds the other layers and every loss. A
 * layer whose value a later stage reads becomes a consumer boundary<k> on
 * its stage and a producer boundary<k> on the reading stage (k unique over
 * the partition); the connections (weights and activation) stay on the
 * reading side, so each activation is applied once. Producers go to every
 * stage that reads them, with their bindings; consumers to the stage of
 * their source. |g| is resolved first and must outlive the partition.
 * INVALID_ARGUMENT names a cut that is not a layer, an empty stage (cuts out
 * of order, a repeated cut, nothing after the last cut) or a loss on an
 * earlier stage. Caller frees. */
HM_API HM_MUST_USE hm_status hm_graph_partition_by_layer(hm_graph *g, const char *const *cuts, size_t n_cuts,
                                                         hm_partition **out);
HM_API void hm_partition_free(hm_partition *p);

HM_API size_t hm_partition_stage_count(const hm_partition *p);
/* Stage |stage|'s graph (owned by the partition), named "<graph>.stage<k>".
 * Its weights are those of |g| when |g| had weights, else unset: a
 * pipeline fit starts every stage from the whole graph's initialisation. */
HM_API hm_graph *hm_partition_stage(const hm_partition *p, size_t stage);
/* The graph that was cut (borrowed). */
HM_API hm_graph *hm_partition_graph(const hm_partition *p);

typedef struct hm_boundary_info {
  const char *name;  /* "boundary0" */
  const char *layer; /* the layer of the whole graph whose value crosses */
  size_t from_stage, to_stage;
  size_t width;
} hm_boundary_info;

HM_API size_t hm_partition_boundary_count(const hm_partition *p);
HM_API HM_MUST_USE hm_status hm_partition_boundary(const hm_partition *p, size_t index, hm_boundary_info *out);
/* The whole graph's connection behind connection |connection| of stage
 * |stage| (boundary0 -> logits comes from hidden -> logits). NOT_FOUND for
 * a connection into a boundary consumer, which the whole graph lacks. */
HM_API HM_MUST_USE hm_status hm_partition_connection_origin(const hm_partition *p, size_t stage, size_t connection,
                                                            size_t *whole_connection);
/* Stage |stage|'s share of the whole graph's weights |whole|, under the
 * stage's tensor names. Caller frees. */
HM_API HM_MUST_USE hm_status hm_partition_stage_weights(const hm_partition *p, size_t stage, const hm_weights *whole,
                                                        hm_weights **out);
/* The whole graph's weights from every stage's (|stages| holds one set per
 * stage, in order). Caller frees. */
HM_API HM_MUST_USE hm_status hm_partition_merge_weights(const hm_partition *p, const hm_weights *const *stages,
                                                        hm_weights **out);

/* ===== Messages between stages ===== */

typedef enum hm_pipe_kind {
  HM_PIPE_FORWARD = 0,  /* a boundary's activations of one micro-batch */
  HM_PIPE_BACKWARD = 1, /* their gradients */
  HM_PIPE_EVAL = 2,     /* a boundary's activations of one evaluation batch */
  HM_PIPE_CONTROL = 3,  /* the runtime's own numbers: start check, metrics, stop decisions */
  HM_PIPE_WEIGHTS = 4,  /* one tensor of hm_pipeline_gather_weights */
  HM_PIPE_KIND_COUNT = 5
} hm_pipe_kind;

/* What travels in front of every tensor. The runtime fills it and checks
 * every field of every header it receives against what it expects. */
typedef struct hm_boundary_header {
  uint32_t kind;        /* hm_pipe_kind */
  uint32_t boundary;    /* k of boundary<k> (the subject of a control message) */
  uint64_t step;        /* the update the tensor belongs to (0-based) */
  uint32_t micro_batch; /* its micro-batch within the update (an evaluation batch's index) */
  uint32_t dtype;       /* HM_ABI_DTYPE_F32 */
  uint64_t rows, width; /* its shape */
  uint64_t bytes;       /* of the payload: rows * width * 4 */
} hm_boundary_header;

/* The header as bytes, for transports that move bytes: "HMPB", format
 * version 1, the fields little-endian, a CRC32C over them
 * (docs/formats.md). decode refuses another magic, version or checksum
 * (DATA_LOSS, INCOMPATIBLE). */
#define HM_BOUNDARY_HEADER_BYTES 64
HM_API void hm_boundary_header_encode(const hm_boundary_header *h, unsigned char out[HM_BOUNDARY_HEADER_BYTES]);
HM_API HM_MUST_USE hm_status hm_boundary_header_decode(const unsigned char in[HM_BOUNDARY_HEADER_BYTES],
                                                       hm_boundary_header *h);
/* "boundary0 forward, step 3, micro-batch 1, 16x128 f32" */
HM_API void hm_boundary_header_format(const hm_boundary_header *h, char *buf, size_t cap);

/* A stage's end of the message transport. Messages from one stage to
 * another arrive in the order they were sent. Every call returns a status
 * and none waits past its timeout: UNAVAILABLE with a sentence naming the
 * peer stage (hm_set_error) when a peer died or stopped answering. */
typedef struct hm_pipeline_transport {
  size_t struct_size;
  void *self;
  /* Sends |h| and its h->bytes of |payload| to stage |to|. May return
   * before the peer receives it (it must, while the peer is busy: stages
   * send ahead), but |payload| may be reused once it returns. */
  hm_status (*send)(void *self, size_t to, const hm_boundary_header *h, const void *payload, double timeout_seconds);
  /* Receives the next message from stage |from|: its header in *h and its
   * payload in |payload| (|capacity| bytes; a larger one is an error). */
  hm_status (*recv)(void *self, size_t from, hm_boundary_header *h, void *payload, size_t capacity,
                    double timeout_seconds);
  /* (optional) This stage failed with |message|: tell the others, so they
   * fail now rather than at their timeout. */
  void (*fail)(void *self, const char *message);
} hm_pipeline_transport;

/* What hm_fit_options.pipeline carries: which stage of which partition this
 * fit trains, and how it reaches the others. */
typedef struct hm_pipeline_stage {
  size_t struct_size;
  const hm_partition *partition; /* every stage's process builds the same one */
  size_t stage;
  const hm_pipeline_transport *transport;
  double timeout_seconds; /* 60: the longest wait for a message */
  void *reserved[2];
} hm_pipeline_stage;

HM_API hm_pipeline_stage hm_pipeline_stage_default(void);

/* After every stage's fit returned OK: each stage calls this with its
 * state's weights; the last stage receives the others' and gets the whole
 * graph's weights in *whole (the other stages get NULL). */
HM_API HM_MUST_USE hm_status hm_pipeline_gather_weights(const hm_pipeline_stage *ps, const hm_weights *stage_weights,
                                                        hm_weights **whole);

/* "<path>.stage<k>": where stage k of a pipeline fit writes the checkpoint
 * hm_fit_options.checkpoint_path names, and where a resume reads it. */
HM_API void hm_pipeline_checkpoint_path(const char *path, size_t stage, char *buf, size_t cap);

/* ===== Stages on threads of one process ===== */

/* The in-process transport: a queue per pair of stages. */
typedef struct hm_pipeline_local hm_pipeline_local;
HM_API HM_MUST_USE hm_status hm_pipeline_local_open(size_t n_stages, hm_pipeline_local **out);
/* Stage |stage|'s end (borrowed; valid until close). */
HM_API const hm_pipeline_transport *hm_pipeline_local_transport(hm_pipeline_local *l, size_t stage);
HM_API void hm_pipeline_local_close(hm_pipeline_local *l);

typedef struct hm_partition_run_options {
  size_t struct_size;
  /* Per stage (NULL, or n_stages entries, an entry NULL/0 for the fit
   * options' own): the backend ("cpu", "opencl:0") and CPU threads. Threads
   * default to the cores this process may use divided among the stages. */
  const char *const *stage_backends;
  const unsigned *stage_threads;
  /* Per stage: the state to resume from (NULL, or n_stages states). */
  const hm_cycle_state *const *resume;
  double timeout_seconds; /* 60 */
  void *reserved[2];
} hm_partition_run_options;

HM_API hm_partition_run_options hm_partition_run_options_default(void);

/* Trains every stage of |p| on its own thread over the in-process
 * transport for |epochs| epochs: opts as for hm_graph_fit (its progress,
 * on_epoch, predicate and cancel run on the last stage's thread). On
 * success states[k] holds stage k's state (caller frees each) and the whole
 * graph (hm_partition_graph) holds the trained weights. On failure the
 * message names the stage that failed first. */
HM_API HM_MUST_USE hm_status hm_partition_fit(hm_partition *p, size_t epochs, const hm_policy *policy,
                                              const hm_fit_options *opts, const hm_partition_run_options *run,
                                              hm_cycle_state **states);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_PIPELINE_H_ */
