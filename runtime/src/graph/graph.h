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
  size_t declared_width; /* {n} (or the product of {CxHxW}), 0 if none */
  uint32_t declared_shape[3]; /* {C x H x W} when declared_rank == 3 */
  int declared_rank;     /* 0: none, 1: {n}, 3: {C x H x W} */
  int has_ratio;
  int ratio_num, ratio_den;
  char *ratio_ref;
  size_t width;          /* resolved; 0 while unknown */
  uint32_t shape[3];     /* resolved {C x H x W} when rank == 3 */
  int rank;              /* 1 or 3 once resolved */
  int line, col;         /* where it was declared (0 for the builder) */
  hm_producer *train;    /* bindings (borrowed) */
  hm_producer *eval;
  hm_consumer *consumer;
  size_t fed_by;         /* consumers: 1 + the connection feeding it; 0 while none */
} hm_node;

/* src -(activation)-> dst, through spec (dense unless said otherwise) */
typedef struct hm_edge {
  size_t src, dst;
  uint32_t activation;
  int line, col;
  hm_connection_spec spec; /* defaults filled in (hm__edge_spec_normalize) */
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
/* Checks |spec| for a connection into node |dst| and writes it with its
 * defaults filled in (messages start with |where|). */
hm_status hm__edge_spec_check(const hm_graph *g, size_t dst, const hm_connection_spec *spec, hm_connection_spec *out,
                              const char *where);
/* Declares node |i|'s shape {c x h x w}. */
hm_status hm__graph_set_node_shape(hm_graph *g, size_t i, size_t c, size_t h, size_t w, const char *where);
/* The DSL and message name of a connection kind ("conv", "max_pool", ...). */
const char *hm__connection_kind_name(hm_connection_kind k);
/* "{1x28x28}" or "{784}" for node |i| (resolved shape). */
void hm__node_shape_text(const hm_node *n, char *buf, size_t cap);
hm_status hm__graph_add_tap(hm_graph *g, size_t layer, size_t target, uint32_t loss, int line, int col);
/* "file:line:col: " or "" for built graphs. */
void hm__graph_where(const hm_graph *g, int line, int col, char *buf, size_t cap);

/* Layers in an order where every layer comes after the layers feeding it.
 * INVALID_ARGUMENT naming a layer on a cycle. Caller frees *out. */
hm_status hm__graph_topo_layers(const hm_graph *g, size_t **out, size_t *n);

/* The names of an edge's tensors. */
void hm__edge_weight_name(const hm_graph *g, const hm_edge *e, char *buf, size_t cap);
void hm__edge_bias_name(const hm_graph *g, const hm_edge *e, char *buf, size_t cap);
/* Whether an edge carries weights (dense and convolution into a layer). */
int hm__edge_has_weights(const hm_graph *g, const hm_edge *e);
/* Whether an edge computes into a layer (has its own activations): every
 * edge into a layer, with or without weights. */
int hm__edge_into_layer(const hm_graph *g, const hm_edge *e);

/* A parameter tensor of a connection, named and shaped (resolved graph). */
typedef struct hm_param_desc {
  char name[600];
  uint32_t rank;
  uint64_t shape[4];
  size_t count;
} hm_param_desc;
/* Edge |e|'s parameter tensors: the weight ([out, in] dense, [C_out,
 * C_in/groups, KH, KW] convolution), then the bias when it has one.
 * Returns how many (0, 1 or 2). */
size_t hm__edge_params(const hm_graph *g, size_t e, hm_param_desc out[2]);
/* Edge |e|'s tensors that are kept but not trained: a batch norm's
 * running_mean and running_var ([C] each). Returns how many (0 or 2). */
size_t hm__edge_state(const hm_graph *g, size_t e, hm_param_desc out[2]);
/* Every tensor of edge |e| a weights file holds: its parameters, then its
 * state. Returns how many (0 to 4). */
size_t hm__edge_tensors(const hm_graph *g, size_t e, hm_param_desc out[4]);
/* Whether edge |e| multiplies by a weight matrix (dense or convolution):
 * what precision policies quantize. */
int hm__edge_is_matmul(const hm_graph *g, const hm_edge *e);
/* The weight matrix of a matmul edge as the multiplication sees it: |rows|
 * outputs (dense: the destination's width; convolution: C_out) of |k|
 * inputs each (the source's width; C_in/groups * KH * KW), applied at
 * |positions| places per sample (1; a convolution's Ho * Wo). */
void hm__edge_matrix(const hm_graph *g, size_t e, size_t *rows, size_t *k, size_t *positions);
/* The channel count a batch norm normalizes over: C of {C x H x W}, or the
 * width of a flat source. */
size_t hm__norm_channels(const hm_node *src);

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
