/*
 * graph/: the graph's internal representation, shared by the DSL parser, the
 * builder, width resolution, weight initialisation and serialization.
 * Depends on base/ and weights/; producers and consumers are bound as public
 * handles only.
 */
#ifndef HM_GRAPH_GRAPH_H_
#define HM_GRAPH_GRAPH_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics/graph.h"
#include "base/base.h"
#include "base/container.h"
#include "base/hash_index.h"
#include "weights/weights.h"

#define HM_MAX_NODES 4096
/* Connections: far beyond real models (each is a weight matrix), small
 * enough that a hostile file loads in well under a second. */
#define HM_MAX_EDGES 262144

typedef struct hm_node {
  char *name;
  hm_node_kind kind;
  size_t declared_width; /* {n}, 0 if none */
  int has_ratio;
  int ratio_num, ratio_den;
  char *ratio_ref;
  size_t width;          /* resolved; 0 while unknown */
  int line, col;         /* where it was declared (0 for the builder) */
  hm_producer *train;    /* bindings (borrowed) */
  hm_producer *eval;
  hm_consumer *consumer;
  size_t fed_by;         /* consumers: 1 + the connection feeding it; 0 while none */
} hm_node;

/* src -(activation)-> dst */
typedef struct hm_edge {
  size_t src, dst;
  uint32_t activation;
  int line, col;
} hm_edge;

/* layer <-(loss)- target */
typedef struct hm_tap {
  size_t layer, target;
  uint32_t loss;
  int line, col;
} hm_tap;

struct hm_graph {
  char *name;
  char *filename; /* for messages; NULL for built graphs */
  hm_node *nodes;
  size_t n_nodes, cap_nodes;
  hm_edge *edges;
  size_t n_edges, cap_edges;
  hm_tap *taps;
  size_t n_taps, cap_taps;
  hm_weights *weights;
  hm_strbuf warnings;
  /* Lookups by name and by (src, dst), so building a graph of n
   * connections costs O(n), whatever a file declares. */
  hm_hash_index node_index, edge_index;
  /* `partition by layer a, b;`: where a pipeline cuts the graph by default. */
  char **cuts;
  size_t n_cuts;
  int cuts_line, cuts_col;
};

/* Index of the node named |name|, or -1. */
long hm__graph_find(const hm_graph *g, const char *name);
hm_status hm__graph_add_node(hm_graph *g, const char *name, hm_node_kind kind, size_t width, int line, int col);
hm_status hm__graph_add_edge(hm_graph *g, size_t src, size_t dst, uint32_t activation, int line, int col);
hm_status hm__graph_add_tap(hm_graph *g, size_t layer, size_t target, uint32_t loss, int line, int col);
/* "file:line:col: " or "" for built graphs. */
void hm__graph_where(const hm_graph *g, int line, int col, char *buf, size_t cap);

/* Layers in an order where every layer comes after the layers feeding it.
 * INVALID_ARGUMENT naming a layer on a cycle. Caller frees *out. */
hm_status hm__graph_topo_layers(const hm_graph *g, size_t **out, size_t *n);

/* The names of an edge's tensors. */
void hm__edge_weight_name(const hm_graph *g, const hm_edge *e, char *buf, size_t cap);
void hm__edge_bias_name(const hm_graph *g, const hm_edge *e, char *buf, size_t cap);
/* Whether an edge carries weights (edges into consumers do not). */
int hm__edge_has_weights(const hm_graph *g, const hm_edge *e);

/* Adds edge |edge|'s initial parameters for |seed| to |w| under the given
 * names, drawn as hm_graph_init_weights draws them (so a pipeline stage
 * starts from the whole graph's values). */
hm_status hm__graph_init_edge(const hm_graph *g, size_t edge, uint64_t seed, hm_weights *w, const char *weight_name,
                              const char *bias_name);

/* Checks that |w| holds exactly the graph's parameters with their shapes;
 * |source| names the origin in messages (a file name). */
hm_status hm__graph_check_weights(const hm_graph *g, const hm_weights *w, const char *source);

/* Records the graph's declared partition (|n| layer names; 0 clears it);
 * |line|/|col| locate it in messages. */
hm_status hm__graph_set_cuts(hm_graph *g, const char *const *cuts, size_t n, int line, int col);

/* The structure's binary encoding (graph_io.c), shared by .hgr files and
 * checkpoints. |with_name| encodes a file: the name, the resolved widths and
 * (format 2) the declared partition; without it, what the fingerprint covers. */
void hm__graph_encode(const hm_graph *g, hm_bytes *b, int with_name);
hm_status hm__graph_decode(hm_reader *r, uint32_t version, hm_graph **out);
/* CRC32C of the graph's structure (no name, no resolved widths, no
 * declared partition). RESOURCE_EXHAUSTED when the encoding's buffer
 * cannot be had: a fingerprint of part of the graph would compare unequal. */
hm_status hm__graph_fingerprint(const hm_graph *g, uint32_t *out);

#endif /* HM_GRAPH_GRAPH_H_ */
