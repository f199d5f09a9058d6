/*
 * The plan of a graph on a device: everything the session (which allocates
 * buffers) and the lowering (which emits ops) both need to know, computed
 * once — layer order, each node's inputs, which producers are read, which
 * layers need gradients, the accuracy tap and each connection's precision.
 */
#ifndef HM_LOWER_PLAN_H_
#define HM_LOWER_PLAN_H_

#include "graph/graph.h"
#include "harmonics/policy.h"
#include "lower/precision.h"

typedef struct hm_plan_node {
  size_t width;      /* resolved */
  size_t n_inputs;   /* connections into the node */
  long single_input; /* a layer's only connection in, or -1 (several: their sum) */
  int needs_grad;    /* a layer that influences a loss */
  int feeds;         /* a producer that a connection reads */
  int is_target;     /* a producer that a loss tap reads */
  /* Pipeline stages (train/pipeline.c): a boundary producer's values come
   * from the host each batch and its gradient goes back to the host; a
   * boundary consumer's source layer takes its gradient from the host. */
  int boundary_in, boundary_out;
  int grad_from_host; /* a layer that feeds a boundary consumer (when training) */
} hm_plan_node;

typedef struct hm_plan_edge {
  int into_layer;         /* computes into a layer (has its own activations) */
  int has_weights;        /* dense or convolution into a layer */
  int backprop;           /* training, into a layer that needs gradients */
  int trainable;          /* backprop, and it has weights */
  hm_edge_precision prec; /* the matmul's precision */
} hm_plan_edge;

typedef struct hm_plan {
  const hm_graph *g;
  int training;
  size_t *order; /* layers in topological order */
  size_t n_order;
  hm_plan_node *nodes;
  hm_plan_edge *edges;
  long accuracy_tap; /* a cross-entropy tap to score accuracy, or -1 */
} hm_plan;

/* A pipeline stage's boundary nodes: per graph node, nonzero for a boundary
 * producer (|in|) or consumer (|out|). */
typedef struct hm_plan_boundaries {
  const char *in, *out;
} hm_plan_boundaries;

/* Plans |g| (resolved) for |dev| under |policy|; |training| also plans the
 * backward pass; |bounds| (NULL for a whole graph) marks a stage's
 * boundaries. INVALID_ARGUMENT names a layer with no input or on a cycle. */
hm_status hm__plan_create(const hm_graph *g, const hm_policy *policy, hm_device *dev, int training,
                          const hm_plan_boundaries *bounds, hm_plan **out);
void hm__plan_free(hm_plan *p);
/* Whether the producer |node| is read at all (by a connection or a tap). */
static inline int hm__plan_producer_used(const hm_plan *p, size_t node) {
  return p->nodes[node].feeds || p->nodes[node].is_target;
}
/* Whether the producer |node| reads bound data (a boundary's comes from the host). */
static inline int hm__plan_reads_data(const hm_plan *p, size_t node) {
  return hm__plan_producer_used(p, node) && !p->nodes[node].boundary_in;
}

#endif /* HM_LOWER_PLAN_H_ */
