/*
 * The .hmx parser: declarations, flow lines (chains, fan-out, continuation,
 * taps), the C builder producing the same graph, width resolution, and every
 * error path with its file:line:column message.
 */
#include <stdlib.h>
#include <string.h>

#include "harmonics/harmonics.h"
#include "hm_test.h"

static hm_graph *parse(const char *text) {
  hm_graph *g = NULL;
  hm_status st = hm_graph_parse(text, strlen(text), "t.hmx", &g);
  if (st != HM_OK) fprintf(stderr, "  parse failed: %s\n", hm_last_error());
  return g;
}

static void expect_error(const char *text, hm_status status, const char *needle) {
  hm_graph *g = NULL;
  hm_status st = hm_graph_parse(text, strlen(text), "t.hmx", &g);
  HM_CHECK_MSG(st == status, "'%s': status %s, expected %s (%s)", text, hm_status_name(st), hm_status_name(status),
               hm_last_error());
  HM_CHECK(g == NULL);
  HM_CHECK_STR_CONTAINS(hm_last_error(), needle);
  hm_graph_free(g);
}

static int has_edge(const hm_graph *g, const char *from, const char *to, const char *act) {
  for (size_t i = 0; i < hm_graph_connection_count(g); i++) {
    const char *f, *t, *a;
    if (hm_graph_connection(g, i, &f, &t, &a) == HM_OK && !strcmp(f, from) && !strcmp(t, to) && !strcmp(a, act))
      return 1;
  }
  return 0;
}

static void parses_declarations_and_flows(void) {
  hm_graph *g = parse(
      "// leading comment\n"
      "harmonic net {\n"
      "  producer x {4};   # pixels\n"
      "  producer y;\n"
      "  consumer out;\n"
      "  layer a {8};\n"
      "  layer b 1/2 a;\n"
      "  layer c;\n"
      "  layer d;\n"
      "  cycle {\n"
      "    x -(relu)-> a -(tanh)-> b -> c;\n"
      "    x -> b | -(sigmoid)-> c;\n"
      "      -(gelu)-> d;\n"
      "    c <-(mse)-> y;\n"
      "    c -(softmax)-> out;\n"
      "  }\n"
      "}\n");
  HM_CHECK(g != NULL);
  if (!g) return;
  HM_CHECK(strcmp(hm_graph_name(g), "net") == 0);
  HM_CHECK_EQ(hm_graph_node_count(g), 7);
  HM_CHECK_EQ(hm_graph_connection_count(g), 7);
  HM_CHECK(has_edge(g, "x", "a", "relu"));
  HM_CHECK(has_edge(g, "a", "b", "tanh"));  /* a chain continues from the last target */
  HM_CHECK(has_edge(g, "b", "c", "identity"));
  HM_CHECK(has_edge(g, "x", "b", "identity"));
  HM_CHECK(has_edge(g, "x", "c", "sigmoid")); /* '|' fans out from the line's source */
  HM_CHECK(has_edge(g, "x", "d", "gelu")); /* a line starting with an arrow reuses the last source */
  HM_CHECK(has_edge(g, "c", "out", "softmax"));
  HM_CHECK_EQ(hm_graph_loss_count(g), 1);
  const char *l, *loss, *t;
  HM_CHECK_OK(hm_graph_loss(g, 0, &l, &loss, &t));
  HM_CHECK(!strcmp(l, "c") && !strcmp(loss, "mse") && !strcmp(t, "y"));
  HM_CHECK(hm_graph_has_training_taps(g));
  hm_graph_free(g);
}

static void continuation_line_uses_previous_source(void) {
  hm_graph *g = parse("producer a {2}; layer b; layer c; cycle { a -> b;\n -(id)-> c; }");
  HM_CHECK(g != NULL);
  if (!g) return;
  HM_CHECK(has_edge(g, "a", "b", "identity"));
  HM_CHECK(has_edge(g, "a", "c", "identity"));
  HM_CHECK(!hm_graph_has_training_taps(g));
  hm_graph_free(g);
}

static void builder_makes_the_same_graph(void) {
  hm_graph *p = parse("producer x {3}; producer t {2}; layer h {5}; layer o; "
                      "cycle { x -(relu)-> h -> o; o <-(cross_entropy)- t; }");
  hm_graph *b = NULL;
  HM_CHECK_OK(hm_graph_create("built", &b));
  HM_CHECK_OK(hm_graph_add_producer(b, "x", 3));
  HM_CHECK_OK(hm_graph_add_producer(b, "t", 2));
  HM_CHECK_OK(hm_graph_add_layer(b, "h", 5));
  HM_CHECK_OK(hm_graph_add_layer(b, "o", 0));
  HM_CHECK_OK(hm_graph_connect(b, "x", "h", "relu"));
  HM_CHECK_OK(hm_graph_connect(b, "h", "o", NULL));
  HM_CHECK_OK(hm_graph_add_loss(b, "o", "cross_entropy", "t"));
  HM_CHECK_OK(hm_graph_resolve(p));
  HM_CHECK_OK(hm_graph_resolve(b));
  HM_CHECK_EQ(hm_graph_node_count(p), hm_graph_node_count(b));
  for (size_t i = 0; i < hm_graph_node_count(p); i++) {
    const char *n1, *n2;
    size_t w1, w2;
    HM_CHECK_OK(hm_graph_node(p, i, &n1, NULL, &w1));
    HM_CHECK_OK(hm_graph_node(b, i, &n2, NULL, &w2));
    HM_CHECK(strcmp(n1, n2) == 0);
    HM_CHECK_EQ(w1, w2);
  }
  HM_CHECK(has_edge(b, "x", "h", "relu") && has_edge(b, "h", "o", "identity"));
  /* Same seed, same parameters. */
  HM_CHECK_OK(hm_graph_init_weights(p, 7));
  HM_CHECK_OK(hm_graph_init_weights(b, 7));
  hm_tensor t1, t2;
  HM_CHECK_OK(hm_weights_find(hm_graph_weights(p), "x->h.weight", &t1));
  HM_CHECK_OK(hm_weights_find(hm_graph_weights(b), "x->h.weight", &t2));
  HM_CHECK(t1.bytes == t2.bytes && memcmp(t1.data, t2.data, t1.bytes) == 0);
  HM_CHECK_EQ(t1.shape[0], 5);
  HM_CHECK_EQ(t1.shape[1], 3);
  /* Builder errors. */
  HM_CHECK_EQ(hm_graph_connect(b, "x", "nosuch", NULL), HM_STATUS_NOT_FOUND);
  HM_CHECK_EQ(hm_graph_connect(b, "x", "h", "swish"), HM_STATUS_NOT_FOUND);
  HM_CHECK_EQ(hm_graph_add_layer(b, "h", 1), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_EQ(hm_graph_add_layer(b, "9bad", 1), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_EQ(hm_graph_add_layer_ratio(b, "r", 1, 0, "h"), HM_STATUS_INVALID_ARGUMENT);
  hm_graph_free(p);
  hm_graph_free(b);
}

static size_t width_of(hm_graph *g, const char *name) {
  for (size_t i = 0; i < hm_graph_node_count(g); i++) {
    const char *n;
    size_t w;
    if (hm_graph_node(g, i, &n, NULL, &w) == HM_OK && strcmp(n, name) == 0) return w;
  }
  return (size_t)-1;
}

static void widths_resolve(void) {
  hm_graph *g = parse("producer input {4}; layer hidden 1/2 input; cycle { input -> hidden; }");
  HM_CHECK_OK(hm_graph_resolve(g));
  HM_CHECK_EQ(width_of(g, "hidden"), 2);
  hm_graph_free(g);
  g = parse("producer a {8}; layer b 1/2 a; layer c 1/2 b; cycle { a -> b -> c; }");
  HM_CHECK_OK(hm_graph_resolve(g));
  HM_CHECK_EQ(width_of(g, "b"), 4);
  HM_CHECK_EQ(width_of(g, "c"), 2);
  hm_graph_free(g);
  /* A layer fed directly by a producer takes its width; a consumer its source's. */
  g = parse("producer a {6}; layer b; consumer c; cycle { a -> b -> c; }");
  HM_CHECK_OK(hm_graph_resolve(g));
  HM_CHECK_EQ(width_of(g, "b"), 6);
  HM_CHECK_EQ(width_of(g, "c"), 6);
  hm_graph_free(g);
  /* A loss target overrides a ratio, with a warning. */
  g = parse("producer img {784}; producer lbl {10}; layer h 1/4 img; layer out 1/2 h;"
            " cycle { img -> h -> out; out <-(cross_entropy)- lbl; }");
  HM_CHECK_OK(hm_graph_resolve(g));
  HM_CHECK_EQ(width_of(g, "h"), 196);
  HM_CHECK_EQ(width_of(g, "out"), 10);
  HM_CHECK_STR_CONTAINS(hm_graph_warnings(g), "layer 'out': ratio 1/2 h gives 98");
  hm_graph_free(g);
  /* Unresolvable and contradictory widths are errors naming the node. */
  g = parse("producer a; layer b 1/2 a; cycle { a -> b; }");
  HM_CHECK_EQ(hm_graph_resolve(g), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "t.hmx:1:10: the width of producer 'a' is unknown");
  hm_graph_free(g);
  g = parse("producer a {3}; producer t {5}; layer b {4}; cycle { a -> b; b <-(mse)- t; }");
  HM_CHECK_EQ(hm_graph_resolve(g), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "layer 'b' is declared {4} but its loss target 't' needs width 5");
  hm_graph_free(g);
  g = parse("producer a {3}; layer b; layer c; cycle { a -> c; b -> c; }");
  HM_CHECK_EQ(hm_graph_resolve(g), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "the width of layer 'b' is unknown");
  hm_graph_free(g);
  g = parse("producer a {3}; consumer c {2}; cycle { a -> c; }");
  HM_CHECK_EQ(hm_graph_resolve(g), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "consumer 'c' is declared {2} but 'a' sends it 3 values");
  hm_graph_free(g);
  /* Data binding gives widths and checks declared ones. */
  g = parse("producer a; producer t {3}; layer b; cycle { a -> b; b <-(cross_entropy)- t; }");
  float x[8] = {0};
  int32_t labels[2] = {0, 2};
  hm_producer *px = NULL, *pt = NULL, *bad = NULL;
  HM_CHECK_OK(hm_producer_from_floats(x, 2, 4, &px));
  HM_CHECK_OK(hm_producer_from_labels(labels, 2, 3, &pt));
  HM_CHECK_OK(hm_producer_from_labels(labels, 2, 7, &bad));
  HM_CHECK_OK(hm_graph_bind_producer(g, "a", px));
  HM_CHECK_OK(hm_graph_bind_producer(g, "t", pt));
  HM_CHECK_OK(hm_graph_resolve(g));
  HM_CHECK_EQ(width_of(g, "a"), 4);
  HM_CHECK_EQ(width_of(g, "b"), 3);
  HM_CHECK_OK(hm_graph_bind_producer(g, "t", bad));
  HM_CHECK_EQ(hm_graph_resolve(g), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "producer 't' is declared {3} but its training data are class indices of 7 classes");
  HM_CHECK_EQ(hm_graph_bind_producer(g, "b", px), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_EQ(hm_graph_bind_producer(g, "zz", px), HM_STATUS_NOT_FOUND);
  hm_graph_free(g);
  /* Class-index labels declared {1} (one index per sample, as in the
   * original system's examples) take the number of classes; {1} for float
   * data and another width for indices are still refused. */
  g = parse("producer a {4}; producer t {1}; layer b; cycle { a -> b; b <-(cross_entropy)- t; }");
  HM_CHECK_OK(hm_graph_bind_producer(g, "a", px));
  HM_CHECK_OK(hm_graph_bind_producer(g, "t", pt));
  HM_CHECK_OK(hm_graph_bind_eval(g, "t", pt));
  HM_CHECK_OK(hm_graph_resolve(g));
  HM_CHECK_EQ(width_of(g, "t"), 3);
  HM_CHECK_EQ(width_of(g, "b"), 3);
  HM_CHECK_OK(hm_graph_bind_eval(g, "t", bad));
  HM_CHECK_EQ(hm_graph_resolve(g), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "producer 't': training and evaluation data differ in width (3 vs 7)");
  hm_graph_free(g);
  g = parse("producer a {1}; layer b {2}; cycle { a -> b; }");
  HM_CHECK_OK(hm_graph_bind_producer(g, "a", px));
  HM_CHECK_EQ(hm_graph_resolve(g), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "producer 'a' is declared {1} but its training data has 4 values per sample");
  hm_graph_free(g);
  hm_producer_free(px);
  hm_producer_free(pt);
  hm_producer_free(bad);
}

static void every_error_path_names_the_place(void) {
  expect_error("producer x {4}\nlayer y;", HM_STATUS_PARSE_ERROR, "t.hmx:2:1: expected ';', got 'layer'");
  expect_error("producer x {0};", HM_STATUS_PARSE_ERROR, "t.hmx:1:12: a width must be at least 1");
  expect_error("producer x {99999999999};", HM_STATUS_PARSE_ERROR, "number larger than");
  expect_error("layer x 1/0 y;", HM_STATUS_PARSE_ERROR, "non-zero numerator and denominator");
  expect_error("layer x {3} 1/2 y;", HM_STATUS_PARSE_ERROR, "either a width {n} or a ratio");
  expect_error("consumer c 1/2 x;", HM_STATUS_PARSE_ERROR, "a consumer cannot have a ratio");
  expect_error("producer a; producer a;", HM_STATUS_INVALID_ARGUMENT, "t.hmx:1:22: duplicate name 'a'");
  expect_error("producer a @;", HM_STATUS_PARSE_ERROR, "t.hmx:1:12: unexpected character '@'");
  expect_error("producer a \xc3\xa9;", HM_STATUS_PARSE_ERROR, "unexpected byte 0xc3");
  expect_error("a -> b;", HM_STATUS_PARSE_ERROR, "t.hmx:1:1: flow lines belong inside 'cycle { ... }'");
  expect_error("producer a; cycle { if c { a -> a; } }", HM_STATUS_PARSE_ERROR, "conditionals ('if'/'else') are not supported");
  expect_error("producer a; layer b; cycle { a -(swish)-> b; }", HM_STATUS_PARSE_ERROR,
               "t.hmx:1:32: unknown activation 'swish'");
  expect_error("producer a; layer b; cycle { b <-(l1)- a; }", HM_STATUS_PARSE_ERROR, "unknown loss 'l1'");
  expect_error("producer a; layer b; cycle { a -> c; }", HM_STATUS_PARSE_ERROR, "t.hmx:1:32: unknown node 'c'");
  expect_error("producer a; layer b; cycle { b <- a; }", HM_STATUS_PARSE_ERROR, "a training tap needs a loss function");
  expect_error("producer a; layer b; cycle { a -(relu) b; }", HM_STATUS_PARSE_ERROR, "expected '->' to close");
  expect_error("producer a; layer b; cycle { -> b; }", HM_STATUS_PARSE_ERROR, "this flow line has no source node");
  expect_error("producer a; layer b; cycle { a -> b", HM_STATUS_PARSE_ERROR, "expected ';', '|' or another arrow");
  expect_error("producer a; layer b; cycle { a; }", HM_STATUS_PARSE_ERROR, "expected an arrow after the source");
  expect_error("producer a; layer b; cycle { a -> b | ; }", HM_STATUS_PARSE_ERROR, "expected an arrow after '|'");
  expect_error("producer a; layer b; cycle { b -> a; }", HM_STATUS_INVALID_ARGUMENT, "'a' is a producer");
  expect_error("producer a; consumer c; layer b; cycle { c -> b; }", HM_STATUS_INVALID_ARGUMENT, "'c' is a consumer");
  expect_error("producer a; layer b; cycle { a -> b; a -> b; }", HM_STATUS_INVALID_ARGUMENT, "appears twice");
  expect_error("producer a; layer b; cycle { a <-(mse)- b; }", HM_STATUS_INVALID_ARGUMENT, "a loss is attached to a layer");
  expect_error("producer a; layer b; layer c; cycle { a -> b; b <-(mse)- c; }", HM_STATUS_INVALID_ARGUMENT,
               "the target of a loss must be a producer");
  expect_error("harmonic n { producer a; } extra", HM_STATUS_PARSE_ERROR, "expected end of input after the closing '}'");
  expect_error("harmonic n { producer a;", HM_STATUS_PARSE_ERROR, "expected a declaration");
  expect_error("layer b 1/2 nothere;", HM_STATUS_PARSE_ERROR, "the ratio of 'b' refers to unknown node 'nothere'");
  expect_error("producer a; layer b; cycle { a -> b; ", HM_STATUS_PARSE_ERROR, "expected '}' to close the cycle");
  /* A cycle of connections is found when the graph is lowered. */
  hm_graph *g = parse("producer a {2}; layer b {2}; layer c {2}; cycle { a -> b -> c -> b; }");
  HM_CHECK(g != NULL);
  hm_graph_free(g);
}

/* Large graphs: every layer of 600 feeds every later one (179,700
 * connections, the audit's hostile file). Lookups are hashed, so the
 * duplicate and consumer checks still hold at this size; past the cap of
 * connections the builder refuses with a clear message. */
static void large_graphs_and_the_connection_cap(void) {
  size_t layers = 600, cap = 64 + layers * 24 + layers * layers * 20, n = 0;
  char *t = malloc(cap);
  HM_CHECK(t != NULL);
  if (!t) return;
  n += (size_t)snprintf(t + n, cap - n, "producer x {4}; consumer y;");
  for (size_t i = 0; i < layers; i++) n += (size_t)snprintf(t + n, cap - n, " layer l%zu {4};", i);
  n += (size_t)snprintf(t + n, cap - n, " cycle { x -> l0; l0 -> y;");
  for (size_t i = 0; i < layers; i++)
    for (size_t j = i + 1; j < layers; j++) n += (size_t)snprintf(t + n, cap - n, " l%zu -> l%zu;", i, j);
  size_t body = n;
  n += (size_t)snprintf(t + n, cap - n, " }");
  hm_graph *g = NULL;
  HM_CHECK_OK(hm_graph_parse(t, n, "big.hmx", &g));
  HM_CHECK_EQ(hm_graph_connection_count(g), 2 + layers * (layers - 1) / 2);
  hm_graph_free(g);
  g = NULL;
  n = body + (size_t)snprintf(t + body, cap - body, " l17 -> l400; }");
  HM_CHECK_EQ(hm_graph_parse(t, n, "big.hmx", &g), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "the connection l17 -> l400 appears twice");
  n = body + (size_t)snprintf(t + body, cap - body, " l599 -> y; }");
  HM_CHECK_EQ(hm_graph_parse(t, n, "big.hmx", &g), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "consumer 'y' is already fed by 'l0'");
  free(t);
  /* 725 layers all feeding each other exceed 262,144 connections. */
  HM_CHECK_OK(hm_graph_create("cap", &g));
  char a[16], b[16];
  for (int i = 0; i < 725; i++) {
    snprintf(a, sizeof a, "l%d", i);
    HM_CHECK_OK(hm_graph_add_layer(g, a, 2));
  }
  hm_status st = HM_OK;
  for (int i = 0; i < 725 && st == HM_OK; i++)
    for (int j = i + 1; j < 725 && st == HM_OK; j++) {
      snprintf(a, sizeof a, "l%d", i);
      snprintf(b, sizeof b, "l%d", j);
      st = hm_graph_connect(g, a, b, "id");
    }
  HM_CHECK_EQ(st, HM_STATUS_OUT_OF_RANGE);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "more than 262144 connections");
  HM_CHECK_EQ(hm_graph_connection_count(g), 262144);
  hm_graph_free(g);
}

static void load_dsl_file_errors(void) {
  hm_graph *g = NULL;
  HM_CHECK_EQ(hm_graph_load_dsl("/nonexistent/model.hmx", &g), HM_STATUS_NOT_FOUND);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "/nonexistent/model.hmx");
  HM_CHECK_OK(hm_graph_load_dsl(HM_SOURCE_DIR "/examples/fashion_mnist.hmx", &g));
  if (g) {
    HM_CHECK(strcmp(hm_graph_name(g), "fashion_mnist") == 0);
    HM_CHECK(has_edge(g, "pixels", "hidden", "relu"));
    HM_CHECK(has_edge(g, "hidden", "logits", "identity"));
    HM_CHECK_OK(hm_graph_resolve(g));
    HM_CHECK_EQ(width_of(g, "logits"), 10);
  }
  hm_graph_free(g);
}

/* `partition by layer a, b;` declares where a pipeline cuts the graph; it
 * survives .hgr (format 2); errors name the place. */
static void a_partition_is_declared_and_kept(void) {
  static const char text[] = "producer x {3}; producer y {2}; layer a {4}; layer b {4}; layer o;\n"
                             "partition by layer a, b;\n"
                             "cycle { x -> a -(relu)-> b -> o; o <-(mse)- y; }";
  hm_graph *g = parse(text);
  if (!g) return;
  HM_CHECK_EQ(hm_graph_partition_count(g), 2);
  HM_CHECK(strcmp(hm_graph_partition_cut(g, 0), "a") == 0 && strcmp(hm_graph_partition_cut(g, 1), "b") == 0);
  HM_CHECK(hm_graph_partition_cut(g, 2) == NULL);
  hm_partition *p = NULL;
  HM_CHECK_OK(hm_graph_partition_by_layer(g, NULL, 0, &p));
  HM_CHECK_EQ(hm_partition_stage_count(p), 3);
  hm_partition_free(p);
  /* The binary graph keeps it. */
  FILE *f = tmpfile();
  HM_CHECK(f != NULL);
  hm_graph *back = NULL;
  if (f) {
    HM_CHECK_OK(hm_save_graph(g, f));
    rewind(f);
    HM_CHECK_OK(hm_load_graph(f, &back));
    fclose(f);
  }
  HM_CHECK_EQ(hm_graph_partition_count(back), 2);
  HM_CHECK(back && strcmp(hm_graph_partition_cut(back, 1), "b") == 0);
  hm_graph_free(back);
  /* The builder declares the same; a cut that is not a layer is refused. */
  hm_graph *plain = parse("producer x {3}; producer y {2}; layer a {4}; layer b {4}; layer o;"
                          "cycle { x -> a -(relu)-> b -> o; o <-(mse)- y; }");
  const char *cuts[2] = {"a", "b"}, *bad[1] = {"x"};
  HM_CHECK_OK(hm_graph_set_partition(plain, cuts, 2));
  HM_CHECK_EQ(hm_graph_partition_count(plain), 2);
  HM_CHECK_EQ(hm_graph_set_partition(plain, bad, 1), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "partition: 'x' is a producer; a cut names a layer");
  HM_CHECK_EQ(hm_graph_partition_count(plain), 2);
  HM_CHECK_OK(hm_graph_set_partition(plain, NULL, 0));
  HM_CHECK_EQ(hm_graph_partition_count(plain), 0);
  hm_graph_free(plain);
  hm_graph_free(g);
  /* Errors name the place. */
  expect_error("layer a {2};\npartition by layer q;", HM_STATUS_PARSE_ERROR, "t.hmx:2:20: partition: no layer named 'q'");
  expect_error("producer x {2};\n partition by layer x;", HM_STATUS_PARSE_ERROR,
               "t.hmx:2:21: partition: 'x' is a producer; a cut names a layer");
  expect_error("layer a {2}; partition a;", HM_STATUS_PARSE_ERROR, "t.hmx:1:24: expected 'by layer' after 'partition'");
  expect_error("layer a {2}; partition by layer a,;", HM_STATUS_PARSE_ERROR, "t.hmx:1:35: expected a name");
  expect_error("layer a {2}; partition by layer a; partition by layer a;", HM_STATUS_PARSE_ERROR,
               "t.hmx:1:36: the graph is already partitioned (line 1)");
  expect_error("layer a {2}; partition by layer a", HM_STATUS_PARSE_ERROR, "expected ';'");
  /* A partition the graph cannot take is reported where it was declared. */
  hm_graph *late = parse("producer x {3}; producer y {2}; layer a {4}; layer o;\n"
                         "cycle { x -> a -> o; o <-(mse)- y; }\n  partition by layer o;");
  HM_CHECK_EQ(hm_graph_partition_by_layer(late, NULL, 0, &p), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "t.hmx:3:3: partition: no layer follows the last cut 'o'");
  hm_graph_free(late);
}

/* A graph that parses, and whose resolution fails with |needle|. */
static void expect_resolve_error(const char *text, const char *needle) {
  hm_graph *g = parse(text);
  HM_CHECK(g != NULL);
  if (!g) return;
  HM_CHECK_EQ(hm_graph_resolve(g), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), needle);
  hm_graph_free(g);
}

static void node_shape(const hm_graph *g, const char *name, size_t c, size_t h, size_t w, int rank) {
  for (size_t i = 0; i < hm_graph_node_count(g); i++) {
    const char *n;
    hm_node_kind k;
    size_t width;
    if (hm_graph_node(g, i, &n, &k, &width) != HM_OK || strcmp(n, name)) continue;
    size_t shape[3];
    int r = 0;
    HM_CHECK_OK(hm_graph_node_shape(g, i, shape, &r));
    HM_CHECK_MSG(r == rank && shape[0] == c && shape[1] == h && shape[2] == w, "%s: rank %d {%zux%zux%zu}, expected %d {%zux%zux%zu}",
                 name, r, shape[0], shape[1], shape[2], rank, c, h, w);
    return;
  }
  HM_CHECK_MSG(0, "no node %s", name);
}

static void shapes_flow_through_window_connections(void) {
  hm_graph *g = parse("producer x {3x32x30}; producer y {10};\n"
                      "layer a; layer b; layer c; layer d; layer e; layer f; layer o;\n"
                      "cycle {\n"
                      "  x -[conv 16 5x3 stride 2 padding 2x1 dilation 1x2](relu)-> a;\n" /* {16x16x14} */
                      "  a -[conv 8 1 groups 8 bias off]-> b;\n"                         /* pointwise, {8x16x14} */
                      "  b -[max_pool 3 stride 2 padding 1]-> c;\n"                      /* {8x8x7} */
                      "  c -[avg_pool 2x3 stride 1]-> d;\n"                              /* {8x7x5} */
                      "  d -[dropout 0.5]-> e -[norm momentum 0.3 eps 0.001]-> f -[layer_norm](gelu)-> o;\n"
                      "  o <-(mse)- y;\n"
                      "}");
  HM_CHECK(g != NULL);
  if (!g) return;
  /* o is the loss's width 10 only through a dense connection: make one. */
  hm_graph_free(g);
  g = parse("producer x {3x32x30}; producer y {10};\n"
            "layer a; layer b; layer c; layer d; layer e; layer f; layer n; layer o;\n"
            "cycle {\n"
            "  x -[conv 16 5x3 stride 2 padding 2x1 dilation 1x2](relu)-> a;\n"
            "  a -[conv 8 1 groups 8 bias off]-> b;\n"
            "  b -[max_pool 3 stride 2 padding 1]-> c;\n"
            "  c -[avg_pool 2x3 stride 1]-> d;\n"
            "  d -[dropout 0.5]-> e -[norm momentum 0.3 eps 0.001]-> f -[layer_norm](gelu)-> n -> o;\n"
            "  o <-(mse)- y;\n"
            "}");
  HM_CHECK(g != NULL);
  if (!g) return;
  HM_CHECK_OK(hm_graph_resolve(g));
  node_shape(g, "x", 3, 32, 30, 3);
  node_shape(g, "a", 16, 16, 14, 3);
  node_shape(g, "b", 8, 16, 14, 3);
  node_shape(g, "c", 8, 8, 7, 3);
  node_shape(g, "d", 8, 7, 5, 3);
  node_shape(g, "e", 8, 7, 5, 3);
  node_shape(g, "n", 8, 7, 5, 3);
  node_shape(g, "o", 10, 1, 1, 1);
  hm_connection_spec c;
  HM_CHECK_OK(hm_graph_connection_spec(g, 0, &c));
  HM_CHECK(c.kind == HM_CONNECTION_CONV2D && c.out_channels == 16 && c.kernel[0] == 5 && c.kernel[1] == 3 &&
           c.stride[0] == 2 && c.stride[1] == 2 && c.padding[0] == 2 && c.padding[1] == 1 && c.dilation[0] == 1 &&
           c.dilation[1] == 2 && c.groups == 1 && !c.no_bias);
  HM_CHECK_OK(hm_graph_connection_spec(g, 2, &c));
  HM_CHECK(c.kind == HM_CONNECTION_MAX_POOL && c.stride[0] == 2 && c.padding[0] == 1);
  HM_CHECK_OK(hm_graph_connection_spec(g, 3, &c));
  HM_CHECK(c.kind == HM_CONNECTION_AVG_POOL && c.kernel[0] == 2 && c.kernel[1] == 3 && c.stride[0] == 1);
  HM_CHECK_OK(hm_graph_connection_spec(g, 5, &c));
  HM_CHECK(c.kind == HM_CONNECTION_BATCH_NORM && c.momentum == 0.3f && c.eps == 0.001f);
  /* Parameters in PyTorch's layouts, and batch norm's running statistics. */
  HM_CHECK_OK(hm_graph_init_weights(g, 1));
  const hm_weights *w = hm_graph_weights(g);
  hm_tensor t;
  HM_CHECK_OK(hm_weights_find(w, "x->a.weight", &t));
  HM_CHECK(t.rank == 4 && t.shape[0] == 16 && t.shape[1] == 3 && t.shape[2] == 5 && t.shape[3] == 3);
  HM_CHECK_OK(hm_weights_find(w, "a->b.weight", &t));
  HM_CHECK(t.rank == 4 && t.shape[0] == 8 && t.shape[1] == 2 && t.shape[2] == 1 && t.shape[3] == 1);
  HM_CHECK_EQ(hm_weights_find(w, "a->b.bias", &t), HM_STATUS_NOT_FOUND);
  HM_CHECK_OK(hm_weights_find(w, "e->f.running_var", &t));
  HM_CHECK(t.rank == 1 && t.shape[0] == 8 && ((const float *)t.data)[7] == 1.0f);
  HM_CHECK_OK(hm_weights_find(w, "e->f.weight", &t));
  HM_CHECK(t.rank == 1 && t.shape[0] == 8 && ((const float *)t.data)[0] == 1.0f);
  HM_CHECK_OK(hm_weights_find(w, "f->n.weight", &t));
  HM_CHECK(t.rank == 3 && t.shape[0] == 8 && t.shape[1] == 7 && t.shape[2] == 5);
  HM_CHECK_OK(hm_weights_find(w, "n->o.weight", &t));
  HM_CHECK(t.rank == 2 && t.shape[0] == 10 && t.shape[1] == 280); /* dense flattens {8x7x5} */
  HM_CHECK_EQ(hm_weights_count(w), 11); /* 2 + 1 (no bias) + 4 (with the running statistics) + 2 + 2 */

  /* The builder makes the same graph. */
  hm_graph *b = NULL;
  HM_CHECK_OK(hm_graph_create("b", &b));
  HM_CHECK_OK(hm_graph_add_producer_shape(b, "x", 1, 8, 8));
  HM_CHECK_OK(hm_graph_add_layer(b, "a", 0));
  HM_CHECK_OK(hm_graph_add_layer_shape(b, "p", 4, 4, 4));
  hm_connection_spec conv = {HM_CONNECTION_CONV2D, 4, {3, 3}, {0, 0}, {1, 1}, {0, 0}, 0, 0, 0.0f, 0.0f, 0.0f};
  hm_connection_spec pool = {HM_CONNECTION_MAX_POOL, 0, {2, 2}, {0, 0}, {0, 0}, {0, 0}, 0, 0, 0.0f, 0.0f, 0.0f};
  HM_CHECK_OK(hm_graph_connect_spec(b, "x", "a", "relu", &conv));
  HM_CHECK_OK(hm_graph_connect_spec(b, "a", "p", NULL, &pool));
  HM_CHECK_OK(hm_graph_resolve(b));
  node_shape(b, "a", 4, 8, 8, 3);
  hm_connection_spec bad = conv;
  bad.groups = 3;
  HM_CHECK_EQ(hm_graph_connect_spec(b, "a", "p", NULL, &bad), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "a -> p: conv: groups 3 does not divide the 4 output channels");
  HM_CHECK_EQ(hm_graph_connection_count(b), 2); /* refused before it was added */
  bad = pool;
  bad.rate = 0.5f;
  HM_CHECK_EQ(hm_graph_connect_spec(b, "p", "a", NULL, &bad), HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(hm_last_error(), "a max_pool connection has no rate");
  hm_graph_free(b);
  hm_graph_free(g);
}

static void window_errors_name_the_place(void) {
  const char *decl = "producer x {1x28x28}; producer y {10}; layer a; layer b {128};\n";
  char text[512];
#define WITH(flow) (snprintf(text, sizeof text, "%scycle {\n" flow "\n}", decl), text)
  expect_error(WITH("x -[conv 32]-> a;"), HM_STATUS_PARSE_ERROR, "t.hmx:3:12: expected a number");
  expect_error(WITH("x -[conv 32 3x3 stride 0]-> a;"), HM_STATUS_PARSE_ERROR, "t.hmx:3:24: expected sizes of at least 1");
  expect_error(WITH("x -[conv 32 3x3x3]-> a;"), HM_STATUS_PARSE_ERROR, "too many sizes (at most 2)");
  expect_error(WITH("x -[conv 32 3x3 bias maybe]-> a;"), HM_STATUS_PARSE_ERROR, "expected 'on' or 'off' after 'bias'");
  expect_error(WITH("x -[max_pool 2 dilation 2]-> a;"), HM_STATUS_PARSE_ERROR, "t.hmx:3:16: max_pool has no option 'dilation'");
  expect_error(WITH("x -[max_pool 2 padding 2]-> a;"), HM_STATUS_INVALID_ARGUMENT,
               "t.hmx:3:3: max_pool: padding 2 is more than half the 2-wide window");
  expect_error(WITH("x -[dropout 1.0]-> a;"), HM_STATUS_PARSE_ERROR, "t.hmx:3:13: a dropout rate is at least 0 and below 1");
  expect_error(WITH("x -[attention]-> a;"), HM_STATUS_PARSE_ERROR, "t.hmx:3:5: 'attention' is not supported yet");
  expect_error(WITH("x -[pool 2]-> a;"), HM_STATUS_PARSE_ERROR, "expected a connection kind");
  expect_error(WITH("x -[conv 8 3] a;"), HM_STATUS_PARSE_ERROR, "t.hmx:3:15: expected '(', got 'a'");
  expect_error(WITH("x -[conv 8 3 groups 3]-> a;"), HM_STATUS_INVALID_ARGUMENT,
               "t.hmx:3:3: conv: groups 3 does not divide the 8 output channels");
  expect_error(WITH("x -[norm momentum 0]-> a;"), HM_STATUS_PARSE_ERROR, "expected a value above 0 and at most 1");
  expect_error(WITH("x -[layer_norm momentum 0.1]-> a;"), HM_STATUS_PARSE_ERROR, "layer_norm has no option 'momentum'");
  expect_error("producer x {1x28}; layer a;", HM_STATUS_PARSE_ERROR, "a shape is {n} or {channels x height x width}");
  expect_error("producer x {1x0x28}; layer a;", HM_STATUS_PARSE_ERROR, "a width must be at least 1");
  expect_error("producer x {4096x4096x4096}; layer a;", HM_STATUS_INVALID_ARGUMENT, "at most 16777216 values");
  expect_error("producer x {2}; consumer c; cycle { x -[max_pool 2]-> c; }", HM_STATUS_INVALID_ARGUMENT,
               "a max_pool connection feeds a layer, not consumer 'c'");
  /* Shapes that do not fit: named at the connection, with both shapes. */
  expect_resolve_error(WITH("x -[conv 8 3x3]-> a;\nb -[conv 4 3]-> a;\nx -> b;"),
                       "t.hmx:4:3: conv b -> a reads images {channels x height x width} but 'b' is {128}: declare its "
                       "shape (e.g. layer b {1x28x28};)");
  expect_resolve_error("producer x {1x28x28}; layer a; layer c {1x28x28};\n"
                       "cycle { x -[conv 8 3x3]-> a;\n x -> c;\n c -[conv 8 5x5]-> a; }",
                       "t.hmx:4:4: conv c -> a gives {8x24x24} but 'a' is {8x26x26}");
  expect_resolve_error(WITH("x -[max_pool 29 padding 0]-> a;"), "t.hmx:3:3: max_pool x -> a: the 29x29 window does not fit {1x28x28} with padding 0x0");
  expect_resolve_error("producer x {784}; layer a; cycle { x -[conv 2 3]-> a; }",
                       "conv x -> a reads images {channels x height x width} but 'x' is {784}: declare its shape");
  expect_resolve_error("producer x {2x8x8}; layer a {100}; cycle { x -[conv 2 3 groups 2]-> a; }",
                       "conv x -> a gives {2x6x6} but 'a' is {100}");
  expect_resolve_error("producer x {3x8x8}; layer a; cycle { x -[conv 2 3 groups 2]-> a; }",
                       "groups 2 does not divide the 3 input channels of {3x8x8}");
#undef WITH
}

static const hm_test_case cases[] = {
    HM_TEST_CASE(shapes_flow_through_window_connections),
    HM_TEST_CASE(window_errors_name_the_place),
    HM_TEST_CASE(a_partition_is_declared_and_kept),
    HM_TEST_CASE(parses_declarations_and_flows),
    HM_TEST_CASE(continuation_line_uses_previous_source),
    HM_TEST_CASE(builder_makes_the_same_graph),
    HM_TEST_CASE(widths_resolve),
    HM_TEST_CASE(every_error_path_names_the_place),
    HM_TEST_CASE(large_graphs_and_the_connection_cap),
    HM_TEST_CASE(load_dsl_file_errors),
};
HM_TEST_MAIN(cases)
