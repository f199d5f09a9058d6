/*
 * HarmonicGraph: producers, consumers and layers joined by dense connections
 * and loss taps, written in the .hmx DSL (docs/dsl.md) or built from C.
 *
 *   harmonic fashion {
 *     producer pixels {784};
 *     producer label {10};
 *     layer hidden {128};
 *     layer logits;
 *     cycle {
 *       pixels -(relu)-> hidden -> logits;
 *       logits <-(cross_entropy)- label;
 *     }
 *   }
 *
 * `a -(f)-> b` is a dense connection b += f(W·a + bias) with its own weight
 * "a->b.weight" [width(b), width(a)] and bias "a->b.bias" [width(b)].
 * `b <-(loss)- t` trains layer b towards producer t.
 */
#ifndef HARMONICS_GRAPH_H_
#define HARMONICS_GRAPH_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics/data.h"
#include "harmonics/status.h"
#include "harmonics/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hm_graph hm_graph;

typedef enum hm_node_kind { HM_NODE_PRODUCER = 0, HM_NODE_CONSUMER = 1, HM_NODE_LAYER = 2 } hm_node_kind;

/* ===== Creating graphs ===== */

/* Parses DSL text. |filename| is used in messages ("model.hmx:3:14: ...").
 * PARSE_ERROR with file:line:column on malformed input. Caller frees. */
HM_API HM_MUST_USE hm_status hm_graph_parse(const char *text, size_t length, const char *filename, hm_graph **out);
/* Reads and parses a .hmx file. */
HM_API HM_MUST_USE hm_status hm_graph_load_dsl(const char *path, hm_graph **out);
HM_API void hm_graph_free(hm_graph *g);

/* The C builder: the same graph without text. Widths of 0 mean "unknown". */
HM_API HM_MUST_USE hm_status hm_graph_create(const char *name, hm_graph **out);
HM_API HM_MUST_USE hm_status hm_graph_add_producer(hm_graph *g, const char *name, size_t width);
HM_API HM_MUST_USE hm_status hm_graph_add_consumer(hm_graph *g, const char *name, size_t width);
HM_API HM_MUST_USE hm_status hm_graph_add_layer(hm_graph *g, const char *name, size_t width);
/* A layer whose width is width(ref) * num / den (integer division). */
HM_API HM_MUST_USE hm_status hm_graph_add_layer_ratio(hm_graph *g, const char *name, int num, int den, const char *ref);
/* from -(activation)-> to; activation names as in the DSL ("relu", "id"). */
HM_API HM_MUST_USE hm_status hm_graph_connect(hm_graph *g, const char *from, const char *to, const char *activation);
/* Connections beyond dense (docs/dsl.md, DESIGN.md §12). A connection reads
 * its source as [C, H, W] images (a convolution or pooling needs a shaped
 * source) or as a flat vector (dense: a shaped source is flattened). */
typedef enum hm_connection_kind {
  HM_CONNECTION_DENSE = 0,    /* b += f(W·a + bias) */
  HM_CONNECTION_CONV2D = 1,   /* b += f(conv(a, W) + bias) */
  HM_CONNECTION_MAX_POOL = 2, /* b += f(max_pool(a)) */
  HM_CONNECTION_AVG_POOL = 3, /* b += f(avg_pool(a)) */
  HM_CONNECTION_DROPOUT = 4,   /* b += f(dropout(a)) while training; f(a) in evaluation and inference */
  HM_CONNECTION_BATCH_NORM = 5, /* b += f(batch_norm(a)): per channel ({C x H x W}) or per feature ({n}) */
  HM_CONNECTION_LAYER_NORM = 6  /* b += f(layer_norm(a)): over each sample's values */
} hm_connection_kind;

typedef struct hm_connection_spec {
  hm_connection_kind kind;
  uint32_t out_channels; /* convolution */
  uint32_t kernel[2];    /* convolution and pooling: height, width */
  uint32_t stride[2];    /* 0: 1 for a convolution, the kernel for pooling */
  uint32_t padding[2];   /* zeros around the image */
  uint32_t dilation[2];  /* convolution; 0: 1 */
  uint32_t groups;       /* convolution; 0: 1 */
  int no_bias;           /* convolution: no bias tensor */
  float rate;            /* dropout: the probability of dropping, [0, 1) */
  float momentum;        /* batch norm: the running statistics' momentum, (0, 1]; 0: 0.1 */
  float eps;             /* batch and layer norm: added to the variance, > 0; 0: 1e-5 */
} hm_connection_spec;

/* from -(activation)-> to through |spec| (NULL: dense). INVALID_ARGUMENT
 * for a bad parameter, naming it. */
HM_API HM_MUST_USE hm_status hm_graph_connect_spec(hm_graph *g, const char *from, const char *to, const char *activation,
                                                   const hm_connection_spec *spec);
/* A producer or layer of shape {channels x height x width}. */
HM_API HM_MUST_USE hm_status hm_graph_add_producer_shape(hm_graph *g, const char *name, size_t channels, size_t height,
                                                         size_t width);
HM_API HM_MUST_USE hm_status hm_graph_add_layer_shape(hm_graph *g, const char *name, size_t channels, size_t height,
                                                      size_t width);
/* layer <-(loss)- target. */
HM_API HM_MUST_USE hm_status hm_graph_add_loss(hm_graph *g, const char *layer, const char *loss, const char *target);

/* Declares where a pipeline cuts the graph by default (`partition by layer
 * a, b;` in the DSL): after each of the |n| named layers, as
 * hm_graph_partition_by_layer with no cuts of its own uses them. n = 0
 * clears it. NOT_FOUND / INVALID_ARGUMENT for a name that is not a layer. */
HM_API HM_MUST_USE hm_status hm_graph_set_partition(hm_graph *g, const char *const *cuts, size_t n);

/* ===== Introspection ===== */

HM_API const char *hm_graph_name(const hm_graph *g);
HM_API size_t hm_graph_node_count(const hm_graph *g);
/* Node |i|: name, kind and width (0 while unresolved). */
HM_API HM_MUST_USE hm_status hm_graph_node(const hm_graph *g, size_t i, const char **name, hm_node_kind *kind,
                                           size_t *width);
/* Node |i|'s resolved shape: rank 3 ({C x H x W}) or 1 ({width});
 * FAILED_PRECONDITION before hm_graph_resolve succeeded. */
HM_API HM_MUST_USE hm_status hm_graph_node_shape(const hm_graph *g, size_t i, size_t shape[3], int *rank);
HM_API size_t hm_graph_connection_count(const hm_graph *g);
/* Connection |i|'s kind and parameters, defaults filled in. */
HM_API HM_MUST_USE hm_status hm_graph_connection_spec(const hm_graph *g, size_t i, hm_connection_spec *out);
HM_API HM_MUST_USE hm_status hm_graph_connection(const hm_graph *g, size_t i, const char **from, const char **to,
                                                 const char **activation);
HM_API size_t hm_graph_loss_count(const hm_graph *g);
HM_API HM_MUST_USE hm_status hm_graph_loss(const hm_graph *g, size_t i, const char **layer, const char **loss,
                                           const char **target);
/* The declared partition: how many cuts, and cut |i| (NULL out of range). */
HM_API size_t hm_graph_partition_count(const hm_graph *g);
HM_API const char *hm_graph_partition_cut(const hm_graph *g, size_t i);
/* Nonzero when the graph has a loss tap (and so can be trained). */
HM_API int hm_graph_has_training_taps(const hm_graph *g);
/* Warnings from width resolution (e.g. a ratio overridden by a loss), one
 * per line; "" when none. */
HM_API const char *hm_graph_warnings(const hm_graph *g);

/* ===== Data ===== */

/* Binds a producer to training data (borrowed: it must outlive every fit).
 * NULL unbinds. NOT_FOUND / INVALID_ARGUMENT for a bad name. */
HM_API HM_MUST_USE hm_status hm_graph_bind_producer(hm_graph *g, const char *name, hm_producer *p);
/* Binds the held-out evaluation data of a producer (borrowed). */
HM_API HM_MUST_USE hm_status hm_graph_bind_eval(hm_graph *g, const char *name, hm_producer *p);
/* Binds a consumer that receives inference output (borrowed). */
HM_API HM_MUST_USE hm_status hm_graph_bind_consumer(hm_graph *g, const char *name, hm_consumer *c);

/* Resolves every width from declarations, ratios, bound data and loss
 * targets. Called by fit and inference; callable directly to check a graph.
 * INVALID_ARGUMENT names the node whose width is unknown or inconsistent. */
HM_API HM_MUST_USE hm_status hm_graph_resolve(hm_graph *g);

/* ===== Weights ===== */

/* The graph's current parameters, or NULL before the first fit or
 * initialisation (borrowed; valid until the next fit or set). */
HM_API const hm_weights *hm_graph_weights(const hm_graph *g);
/* Replaces the parameters with a copy of |w| after checking that every
 * tensor the graph needs is present with its shape and dtype f32 (and no
 * other tensor is). Resolves widths first. */
HM_API HM_MUST_USE hm_status hm_graph_set_weights(hm_graph *g, const hm_weights *w);
/* Initialises parameters from |seed| (He-uniform weights for relu-like
 * activations, Xavier-uniform otherwise, zero biases). Deterministic. */
HM_API HM_MUST_USE hm_status hm_graph_init_weights(hm_graph *g, uint64_t seed);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_GRAPH_H_ */
