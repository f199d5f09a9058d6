/*
 * A graph cut by layer into pipeline stages (harmonics/pipeline.h): the
 * stage graphs and what ties them to the whole graph and to each other, for
 * the pipeline runtime (train/pipeline.c).
 */
#ifndef HM_GRAPH_PARTITION_H_
#define HM_GRAPH_PARTITION_H_

#include "graph/graph.h"
#include "harmonics/pipeline.h"

/* At most this many stages: a stage is a thread or a process. */
#define HM_MAX_STAGES 64

#define HM_NO_INDEX ((size_t)-1)

/* A layer's value crossing from one stage to a later one. */
typedef struct hm_boundary {
  char name[24];   /* "boundary<k>" */
  size_t layer;    /* the whole graph's node */
  size_t from, to; /* stages */
  size_t out_node; /* the consumer on stage |from| */
  size_t in_node;  /* the producer on stage |to| */
  size_t width;
} hm_boundary;

struct hm_partition {
  hm_graph *whole;
  size_t n_stages;
  hm_graph **stages;
  size_t *stage_of;      /* per whole node: its stage (a producer: HM_NO_INDEX, it may be on several) */
  hm_boundary *bounds;
  size_t n_bounds;
  size_t **edge_origin;  /* per stage, per connection: the whole graph's, or HM_NO_INDEX */
  uint32_t fingerprint;  /* of the whole graph's structure and the cuts */
};

/* Stage |stage|'s initial weights for |seed|: the values hm_graph_init_weights
 * gives the whole graph, under the stage's names. Caller frees. */
hm_status hm__partition_init_stage_weights(const hm_partition *p, size_t stage, uint64_t seed, hm_weights **out);

#endif /* HM_GRAPH_PARTITION_H_ */
