/*
 * The .hmx parser (grammar in docs/dsl.md). Declarations are collected
 * first and flow lines resolved against them afterwards, so a flow may name
 * a node declared further down. Every error is "file:line:column: message".
 *
 * Flow lines: `a -(f)-> b -> c;` is a chain (a->b, then b->c);
 * `a -> b | -> c;` fans out from the line's source; a line that starts with
 * an arrow continues from the previous line's source; `b <-(loss)- t` (or
 * `<-(loss)->`) is a training tap on the current node.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/dsl_lexer.h"
#include "base/fileio.h"
#include "graph/graph.h"
#include "harmonics/names.h"

#define MAX_DSL_BYTES (16u * 1024u * 1024u)

typedef struct pending_arrow {
  char *src, *dst, *func;
  int backward;
  int line, col;
  hm_connection_spec spec; /* -[conv 32 3x3]-> ; dense when none */
} pending_arrow;

typedef struct parser {
  hm_lexer lx;
  hm_token tok;
  hm_graph *g;
  pending_arrow *arrows;
  size_t n_arrows, cap_arrows;
  /* ratio references are checked after all declarations */
  size_t *ratio_nodes;
  size_t n_ratio;
  /* `partition by layer a, b;`, checked after all declarations */
  char *cuts[63];
  int cut_line[63], cut_col[63];
  size_t n_cuts;
  int partition_line, partition_col;
} parser;

static hm_status next(parser *p) { return hm__lexer_next(&p->lx, &p->tok); }

static hm_status error_at(parser *p, const hm_token *t, const char *fmt, const char *detail) {
  char msg[256];
  snprintf(msg, sizeof msg, fmt, detail);
  return hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d:%d: %s", p->lx.filename, t->line, t->col, msg);
}

static hm_status expected(parser *p, const char *what) {
  char got[64];
  if (p->tok.kind == TOK_IDENT || p->tok.kind == TOK_NUMBER)
    snprintf(got, sizeof got, "'%.*s'", (int)(p->tok.len > 40 ? 40 : p->tok.len), p->tok.text);
  else
    snprintf(got, sizeof got, "%s", hm__tok_name(p->tok.kind));
  return hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d:%d: expected %s, got %s", p->lx.filename, p->tok.line, p->tok.col,
                  what, got);
}

static hm_status expect(parser *p, hm_tok_kind k) {
  if (p->tok.kind != k) return expected(p, hm__tok_name(k));
  return next(p);
}

static hm_status take_ident(parser *p, char **out, int *line, int *col) {
  if (p->tok.kind != TOK_IDENT) return expected(p, "a name");
  if (p->tok.len > 256) return error_at(p, &p->tok, "name longer than 256 characters%s", "");
  *out = hm__strndup(p->tok.text, p->tok.len);
  if (!*out) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  if (line) *line = p->tok.line;
  if (col) *col = p->tok.col;
  hm_status st = next(p);
  if (st != HM_OK) {
    hm__free(*out);
    *out = NULL;
  }
  return st;
}

static int is_decimal(const hm_token *t) { return memchr(t->text, '.', t->len) != NULL; }

static hm_status take_number(parser *p, size_t max, size_t *out) {
  if (p->tok.kind != TOK_NUMBER) return expected(p, "a number");
  if (is_decimal(&p->tok)) return error_at(p, &p->tok, "expected a whole number%s", "");
  size_t v = 0;
  for (size_t i = 0; i < p->tok.len; i++) {
    v = v * 10 + (size_t)(p->tok.text[i] - '0');
    if (v > max) {
      char lim[32];
      snprintf(lim, sizeof lim, "%zu", max);
      return error_at(p, &p->tok, "number larger than %s", lim);
    }
  }
  *out = v;
  return next(p);
}

/* NUMBER ('x' NUMBER)* — "3x3" lexes as NUMBER 3 and IDENT "x3", "1x28x28"
 * as NUMBER 1 and IDENT "x28x28". Up to |max| sizes, each at most |limit|. */
static hm_status take_sizes(parser *p, size_t max, size_t limit, size_t *out, size_t *count) {
  *count = 0;
  HM_RETURN_IF_ERROR(take_number(p, limit, &out[(*count)++]));
  while (p->tok.kind == TOK_IDENT && p->tok.text[0] == 'x') {
    hm_token t = p->tok;
    size_t i = 1;
    if (t.len == 1) { /* "3 x 3" */
      HM_RETURN_IF_ERROR(next(p));
      if (*count == max) return error_at(p, &t, "too many sizes (at most %s)", max == 3 ? "3" : "2");
      HM_RETURN_IF_ERROR(take_number(p, limit, &out[(*count)++]));
      continue;
    }
    while (i < t.len) {
      if (t.text[i] != 'x' && i > 1) return error_at(p, &t, "expected sizes like 3x3 or 1x28x28%s", "");
      if (t.text[i] == 'x') i++;
      size_t v = 0, digits = 0;
      for (; i < t.len && t.text[i] >= '0' && t.text[i] <= '9'; i++, digits++) {
        v = v * 10 + (size_t)(t.text[i] - '0');
        if (v > limit) return error_at(p, &t, "size too large%s", "");
      }
      if (!digits) return error_at(p, &t, "expected sizes like 3x3 or 1x28x28%s", "");
      if (*count == max) return error_at(p, &t, "too many sizes (at most %s)", max == 3 ? "3" : "2");
      out[(*count)++] = v;
    }
    HM_RETURN_IF_ERROR(next(p));
  }
  return HM_OK;
}

/* '{' NUMBER '}' or '{' C 'x' H 'x' W '}' */
static hm_status parse_shape(parser *p, hm_node *n, size_t index) {
  hm_token at = p->tok;
  HM_RETURN_IF_ERROR(expect(p, TOK_LBRACE));
  size_t sizes[3], count;
  HM_RETURN_IF_ERROR(take_sizes(p, 3, HM_MAX_WIDTH, sizes, &count));
  for (size_t i = 0; i < count; i++)
    if (sizes[i] == 0) return error_at(p, &at, "a width must be at least 1%s", "");
  if (count == 2) return error_at(p, &at, "a shape is {n} or {channels x height x width}%s", "");
  if (count == 3) {
    char where[300];
    snprintf(where, sizeof where, "%s:%d:%d: ", p->lx.filename, at.line, at.col);
    HM_RETURN_IF_ERROR(hm__graph_set_node_shape(p->g, index, sizes[0], sizes[1], sizes[2], where));
  } else {
    n->declared_width = sizes[0];
    n->declared_rank = 1;
  }
  return expect(p, TOK_RBRACE);
}

/* NUMBER '/' NUMBER IDENT */
static hm_status parse_ratio(parser *p, hm_node *n) {
  hm_token at = p->tok;
  size_t num, den;
  HM_RETURN_IF_ERROR(take_number(p, 1u << 20, &num));
  HM_RETURN_IF_ERROR(expect(p, TOK_SLASH));
  HM_RETURN_IF_ERROR(take_number(p, 1u << 20, &den));
  if (num == 0 || den == 0) return error_at(p, &at, "a ratio needs a non-zero numerator and denominator%s", "");
  n->has_ratio = 1;
  n->ratio_num = (int)num;
  n->ratio_den = (int)den;
  return take_ident(p, &n->ratio_ref, NULL, NULL);
}

static hm_status parse_declaration(parser *p) {
  hm_tok_kind kind = p->tok.kind;
  hm_token at = p->tok;
  HM_RETURN_IF_ERROR(next(p));
  char *name = NULL;
  int line, col;
  HM_RETURN_IF_ERROR(take_ident(p, &name, &line, &col));
  hm_node_kind nk = kind == TOK_PRODUCER ? HM_NODE_PRODUCER : kind == TOK_CONSUMER ? HM_NODE_CONSUMER : HM_NODE_LAYER;
  hm_status st = hm__graph_add_node(p->g, name, nk, 0, line, col);
  hm__free(name);
  if (st != HM_OK) {
    if (st == HM_STATUS_INVALID_ARGUMENT) hm__error_prefix("%s:%d:%d: ", p->lx.filename, line, col);
    return st;
  }
  hm_node *n = &p->g->nodes[p->g->n_nodes - 1];
  if (p->tok.kind == TOK_LBRACE) HM_RETURN_IF_ERROR(parse_shape(p, n, p->g->n_nodes - 1));
  if (p->tok.kind == TOK_NUMBER) {
    if (kind == TOK_CONSUMER) return error_at(p, &p->tok, "a consumer cannot have a ratio%s", "");
    if (kind == TOK_LAYER && n->declared_width)
      return error_at(p, &p->tok, "a layer has either a width {n} or a ratio, not both%s", "");
    HM_RETURN_IF_ERROR(parse_ratio(p, n));
    size_t *r = hm__realloc(p->ratio_nodes, (p->n_ratio + 1) * sizeof *r);
    if (!r) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    p->ratio_nodes = r;
    r[p->n_ratio++] = p->g->n_nodes - 1;
  }
  (void)at;
  return expect(p, TOK_SEMI);
}

static hm_status add_arrow(parser *p, const char *src, const char *dst, const char *func, int backward, int line,
                           int col, const hm_connection_spec *spec) {
  if (p->n_arrows == p->cap_arrows) {
    size_t cap = p->cap_arrows ? p->cap_arrows * 2 : 16;
    pending_arrow *a = hm__realloc(p->arrows, cap * sizeof *a);
    if (!a) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    p->arrows = a;
    p->cap_arrows = cap;
  }
  pending_arrow *a = &p->arrows[p->n_arrows];
  a->src = hm__strdup(src);
  a->dst = hm__strdup(dst);
  a->func = func ? hm__strdup(func) : NULL;
  a->backward = backward;
  a->line = line;
  a->col = col;
  a->spec = *spec;
  if (!a->src || !a->dst || (func && !a->func)) {
    hm__free(a->src);
    hm__free(a->dst);
    hm__free(a->func);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  p->n_arrows++;
  return HM_OK;
}

static int ident_is(const hm_token *t, const char *word) {
  return t->kind == TOK_IDENT && strlen(word) == t->len && memcmp(t->text, word, t->len) == 0;
}

/* One or two sizes (N or NxM) into out[2]: N means NxN. */
static hm_status take_pair(parser *p, size_t lo, uint32_t out[2]) {
  size_t v[2], count;
  hm_token at = p->tok;
  HM_RETURN_IF_ERROR(take_sizes(p, 2, 65535, v, &count));
  if (count == 1) v[1] = v[0];
  if (v[0] < lo || v[1] < lo) return error_at(p, &at, "expected sizes of at least %s", lo ? "1" : "0");
  out[0] = (uint32_t)v[0];
  out[1] = (uint32_t)v[1];
  return HM_OK;
}

/* A decimal number (0.25, 1, 0.00001). */
static hm_status take_decimal(parser *p, const char *what, double *out) {
  if (p->tok.kind != TOK_NUMBER) return expected(p, what);
  char text[40];
  if (p->tok.len >= sizeof text) return error_at(p, &p->tok, "number too long%s", "");
  snprintf(text, sizeof text, "%.*s", (int)p->tok.len, p->tok.text);
  *out = strtod(text, NULL);
  return next(p);
}

/* '[' KIND arguments ']' (docs/dsl.md):
 *   conv OUT KxK [stride S] [padding P] [dilation D] [groups G] [bias off]
 *   max_pool KxK [stride S] [padding P]      avg_pool (the same)
 *   dropout RATE                             dense
 *   norm | batch_norm [momentum M] [eps E]   layer_norm [eps E] */
static hm_status parse_spec(parser *p, hm_connection_spec *c) {
  memset(c, 0, sizeof *c);
  HM_RETURN_IF_ERROR(expect(p, TOK_LBRACKET));
  hm_token kind = p->tok;
  if (ident_is(&kind, "conv")) c->kind = HM_CONNECTION_CONV2D;
  else if (ident_is(&kind, "max_pool")) c->kind = HM_CONNECTION_MAX_POOL;
  else if (ident_is(&kind, "avg_pool")) c->kind = HM_CONNECTION_AVG_POOL;
  else if (ident_is(&kind, "dropout")) c->kind = HM_CONNECTION_DROPOUT;
  else if (ident_is(&kind, "dense")) c->kind = HM_CONNECTION_DENSE;
  else if (ident_is(&kind, "norm") || ident_is(&kind, "batch_norm")) c->kind = HM_CONNECTION_BATCH_NORM;
  else if (ident_is(&kind, "layer_norm")) c->kind = HM_CONNECTION_LAYER_NORM;
  else if (ident_is(&kind, "attention")) {
    char word[32];
    snprintf(word, sizeof word, "%.*s", (int)kind.len, kind.text);
    return error_at(p, &kind,
                    "'%s' is not supported yet (supported: conv, max_pool, avg_pool, dropout, norm, batch_norm, "
                    "layer_norm, dense)",
                    word);
  }
  else return expected(p, "a connection kind (conv, max_pool, avg_pool, dropout, norm, batch_norm, layer_norm or dense)");
  HM_RETURN_IF_ERROR(next(p));
  if (c->kind == HM_CONNECTION_CONV2D) {
    size_t out;
    HM_RETURN_IF_ERROR(take_number(p, 1u << 20, &out));
    c->out_channels = (uint32_t)out;
    if (!out) return error_at(p, &kind, "conv needs at least 1 output channel%s", "");
  }
  if (c->kind == HM_CONNECTION_CONV2D || c->kind == HM_CONNECTION_MAX_POOL || c->kind == HM_CONNECTION_AVG_POOL)
    HM_RETURN_IF_ERROR(take_pair(p, 1, c->kernel));
  if (c->kind == HM_CONNECTION_DROPOUT) {
    double r = 0.0;
    hm_token at = p->tok;
    HM_RETURN_IF_ERROR(take_decimal(p, "a dropout rate such as 0.25", &r));
    if (!(r >= 0.0 && r < 1.0)) return error_at(p, &at, "a dropout rate is at least 0 and below 1%s", "");
    c->rate = (float)r;
  }
  while (p->tok.kind == TOK_IDENT) {
    hm_token opt = p->tok;
    int window = c->kind == HM_CONNECTION_CONV2D || c->kind == HM_CONNECTION_MAX_POOL || c->kind == HM_CONNECTION_AVG_POOL;
    HM_RETURN_IF_ERROR(next(p));
    if (window && ident_is(&opt, "stride")) HM_RETURN_IF_ERROR(take_pair(p, 1, c->stride));
    else if (window && ident_is(&opt, "padding")) HM_RETURN_IF_ERROR(take_pair(p, 0, c->padding));
    else if (c->kind == HM_CONNECTION_CONV2D && ident_is(&opt, "dilation")) HM_RETURN_IF_ERROR(take_pair(p, 1, c->dilation));
    else if (c->kind == HM_CONNECTION_CONV2D && ident_is(&opt, "groups")) {
      size_t g;
      HM_RETURN_IF_ERROR(take_number(p, 1u << 20, &g));
      if (!g) return error_at(p, &opt, "groups must be at least 1%s", "");
      c->groups = (uint32_t)g;
    } else if ((c->kind == HM_CONNECTION_BATCH_NORM && ident_is(&opt, "momentum")) ||
               ((c->kind == HM_CONNECTION_BATCH_NORM || c->kind == HM_CONNECTION_LAYER_NORM) && ident_is(&opt, "eps"))) {
      double v = 0.0;
      hm_token at = p->tok;
      HM_RETURN_IF_ERROR(take_decimal(p, "a decimal number such as 0.1", &v));
      if (!(v > 0.0 && v <= 1.0)) return error_at(p, &at, "expected a value above 0 and at most 1%s", "");
      if (ident_is(&opt, "eps")) c->eps = (float)v;
      else c->momentum = (float)v;
    } else if (c->kind == HM_CONNECTION_CONV2D && ident_is(&opt, "bias")) {
      if (!ident_is(&p->tok, "off") && !ident_is(&p->tok, "on")) return expected(p, "'on' or 'off' after 'bias'");
      c->no_bias = ident_is(&p->tok, "off");
      HM_RETURN_IF_ERROR(next(p));
    } else {
      char msg[160];
      snprintf(msg, sizeof msg, "%s has no option '%.*s'", hm__connection_kind_name(c->kind), (int)(opt.len > 40 ? 40 : opt.len),
               opt.text);
      return error_at(p, &opt, "%s", msg);
    }
  }
  if (p->tok.kind != TOK_RBRACKET) return expected(p, "']' to close the connection");
  return next(p);
}

static int is_arrow_start(hm_tok_kind k) { return k == TOK_ARROW || k == TOK_HYPHEN || k == TOK_BACK; }

/* One arrow and its target; |func| is set (caller frees) for -(f)-> and
 * <-(f)-, |spec| for -[kind ...]-> and -[kind ...](f)->. */
static hm_status parse_arrow(parser *p, int *backward, char **func, char **target, int *line, int *col,
                             hm_connection_spec *spec) {
  *func = NULL;
  *line = p->tok.line;
  *col = p->tok.col;
  memset(spec, 0, sizeof *spec);
  if (p->tok.kind == TOK_ARROW) {
    *backward = 0;
    HM_RETURN_IF_ERROR(next(p));
  } else if (p->tok.kind == TOK_HYPHEN) {
    *backward = 0;
    HM_RETURN_IF_ERROR(next(p));
    if (p->tok.kind == TOK_LBRACKET) {
      HM_RETURN_IF_ERROR(parse_spec(p, spec));
      if (p->tok.kind == TOK_ARROW) {
        HM_RETURN_IF_ERROR(next(p));
        return take_ident(p, target, NULL, NULL);
      }
    }
    HM_RETURN_IF_ERROR(expect(p, TOK_LPAREN));
    HM_RETURN_IF_ERROR(take_ident(p, func, NULL, NULL));
    HM_RETURN_IF_ERROR(expect(p, TOK_RPAREN));
    if (p->tok.kind != TOK_ARROW) return expected(p, "'->' to close '-(function)->'");
    HM_RETURN_IF_ERROR(next(p));
  } else if (p->tok.kind == TOK_BACK) {
    *backward = 1;
    hm_token at = p->tok;
    HM_RETURN_IF_ERROR(next(p));
    if (p->tok.kind != TOK_LPAREN)
      return error_at(p, &at, "a training tap needs a loss function: write 'layer <-(mse)- target'%s", "");
    HM_RETURN_IF_ERROR(next(p));
    HM_RETURN_IF_ERROR(take_ident(p, func, NULL, NULL));
    HM_RETURN_IF_ERROR(expect(p, TOK_RPAREN));
    if (p->tok.kind != TOK_HYPHEN && p->tok.kind != TOK_ARROW) return expected(p, "'-' to close '<-(loss)-'");
    HM_RETURN_IF_ERROR(next(p));
  } else {
    return expected(p, "an arrow ('->', '-(f)->' or '<-(loss)-')");
  }
  return take_ident(p, target, NULL, NULL);
}

static hm_status parse_flow_line(parser *p, char **last_src) {
  char *source = NULL;
  if (p->tok.kind == TOK_IDENT) {
    HM_RETURN_IF_ERROR(take_ident(p, &source, NULL, NULL));
    hm__free(*last_src);
    *last_src = hm__strdup(source);
  } else if (is_arrow_start(p->tok.kind)) {
    if (!*last_src) return error_at(p, &p->tok, "this flow line has no source node%s", "");
    source = hm__strdup(*last_src);
  } else {
    return expected(p, "a flow line (e.g. 'a -(relu)-> b;')");
  }
  if (!source) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  char *current = hm__strdup(source);
  hm_status st = HM_OK;
  int arrows = 0;
  for (;;) {
    if (!is_arrow_start(p->tok.kind)) {
      if (arrows == 0) st = expected(p, "an arrow after the source");
      else if (p->tok.kind != TOK_SEMI) st = expected(p, "';', '|' or another arrow");
      else st = next(p);
      break;
    }
    int backward, line, col;
    char *func = NULL, *target = NULL;
    hm_connection_spec spec;
    st = parse_arrow(p, &backward, &func, &target, &line, &col, &spec);
    if (st == HM_OK) st = add_arrow(p, current, target, func, backward, line, col, &spec);
    arrows++;
    if (st == HM_OK && !backward) {
      hm__free(current);
      current = target;
      target = NULL;
    }
    hm__free(func);
    hm__free(target);
    if (st != HM_OK) break;
    if (p->tok.kind == TOK_PIPE) {
      st = next(p);
      if (st != HM_OK) break;
      if (!is_arrow_start(p->tok.kind)) {
        st = expected(p, "an arrow after '|'");
        break;
      }
      hm__free(current);
      current = hm__strdup(source);
    }
  }
  hm__free(current);
  hm__free(source);
  return st;
}

static hm_status parse_cycle(parser *p) {
  HM_RETURN_IF_ERROR(next(p)); /* 'cycle' */
  HM_RETURN_IF_ERROR(expect(p, TOK_LBRACE));
  char *last_src = NULL;
  hm_status st = HM_OK;
  while (st == HM_OK && p->tok.kind != TOK_RBRACE) {
    if (p->tok.kind == TOK_END) {
      st = expected(p, "'}' to close the cycle");
      break;
    }
    if (p->tok.kind == TOK_IF || p->tok.kind == TOK_ELSE) {
      st = error_at(p, &p->tok, "conditionals ('if'/'else') are not supported%s", "");
      break;
    }
    st = parse_flow_line(p, &last_src);
  }
  hm__free(last_src);
  if (st != HM_OK) return st;
  return next(p); /* '}' */
}

/* partition by layer NAME (',' NAME)* ';' — where a pipeline cuts the graph. */
static hm_status parse_partition(parser *p) {
  hm_token at = p->tok;
  if (p->partition_line)
    return hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d:%d: the graph is already partitioned (line %d)", p->lx.filename,
                    at.line, at.col, p->partition_line);
  p->partition_line = at.line;
  p->partition_col = at.col;
  HM_RETURN_IF_ERROR(next(p)); /* 'partition' */
  if (p->tok.kind != TOK_IDENT || p->tok.len != 2 || memcmp(p->tok.text, "by", 2) != 0)
    return expected(p, "'by layer' after 'partition'");
  HM_RETURN_IF_ERROR(next(p));
  HM_RETURN_IF_ERROR(expect(p, TOK_LAYER));
  for (;;) {
    if (p->n_cuts == sizeof p->cuts / sizeof p->cuts[0]) return error_at(p, &p->tok, "more than 63 cuts%s", "");
    size_t i = p->n_cuts;
    HM_RETURN_IF_ERROR(take_ident(p, &p->cuts[i], &p->cut_line[i], &p->cut_col[i]));
    p->n_cuts++;
    if (p->tok.kind != TOK_COMMA) break;
    HM_RETURN_IF_ERROR(next(p));
  }
  return expect(p, TOK_SEMI);
}

/* The partition's names are layers; the graph records it. */
static hm_status resolve_partition(parser *p) {
  for (size_t i = 0; i < p->n_cuts; i++) {
    long node = hm__graph_find(p->g, p->cuts[i]);
    if (node < 0)
      return hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d:%d: partition: no layer named '%s'", p->lx.filename,
                      p->cut_line[i], p->cut_col[i], p->cuts[i]);
    if (p->g->nodes[node].kind != HM_NODE_LAYER)
      return hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d:%d: partition: '%s' is a %s; a cut names a layer", p->lx.filename,
                      p->cut_line[i], p->cut_col[i], p->cuts[i],
                      p->g->nodes[node].kind == HM_NODE_PRODUCER ? "producer" : "consumer");
  }
  return p->n_cuts ? hm__graph_set_cuts(p->g, (const char *const *)p->cuts, p->n_cuts, p->partition_line,
                                        p->partition_col)
                   : HM_OK;
}

static hm_status parse_body(parser *p, hm_tok_kind stop) {
  for (;;) {
    switch (p->tok.kind) {
      case TOK_PRODUCER:
      case TOK_CONSUMER:
      case TOK_LAYER: HM_RETURN_IF_ERROR(parse_declaration(p)); break;
      case TOK_CYCLE: HM_RETURN_IF_ERROR(parse_cycle(p)); break;
      case TOK_IF:
      case TOK_ELSE: return error_at(p, &p->tok, "conditionals ('if'/'else') are not supported%s", "");
      case TOK_IDENT:
        if (p->tok.len != 9 || memcmp(p->tok.text, "partition", 9) != 0)
          return error_at(p, &p->tok, "flow lines belong inside 'cycle { ... }'%s", "");
        HM_RETURN_IF_ERROR(parse_partition(p));
        break;
      case TOK_ARROW:
      case TOK_HYPHEN:
      case TOK_BACK: return error_at(p, &p->tok, "flow lines belong inside 'cycle { ... }'%s", "");
      default:
        if (p->tok.kind == stop) return HM_OK;
        return expected(p, "a declaration (producer, consumer, layer, cycle or partition)");
    }
  }
}

static hm_status arrow_error(parser *p, const pending_arrow *a, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static hm_status arrow_error(parser *p, const pending_arrow *a, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d:%d: %s", p->lx.filename, a->line, a->col, msg);
}

/* Turns pending arrows into edges and taps now that every node is known. */
static hm_status resolve_arrows(parser *p) {
  hm_graph *g = p->g;
  for (size_t r = 0; r < p->n_ratio; r++) {
    hm_node *n = &g->nodes[p->ratio_nodes[r]];
    if (hm__graph_find(g, n->ratio_ref) < 0)
      return hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d:%d: the ratio of '%s' refers to unknown node '%s'", p->lx.filename,
                      n->line, n->col, n->name, n->ratio_ref);
  }
  for (size_t i = 0; i < p->n_arrows; i++) {
    const pending_arrow *a = &p->arrows[i];
    long s = hm__graph_find(g, a->src), d = hm__graph_find(g, a->dst);
    if (s < 0) return arrow_error(p, a, "unknown node '%s'", a->src);
    if (d < 0) return arrow_error(p, a, "unknown node '%s'", a->dst);
    hm_status st;
    if (a->backward) {
      uint32_t loss;
      if (hm_loss_from_name(a->func, &loss) != 0) {
        char known[256];
        hm_loss_names(known, sizeof known, " ");
        return arrow_error(p, a, "unknown loss '%s' (known: %s)", a->func, known);
      }
      st = hm__graph_add_tap(g, (size_t)s, (size_t)d, loss, a->line, a->col);
    } else {
      uint32_t act = HM_ABI_ACT_IDENTITY;
      if (a->func && hm_activation_from_name(a->func, &act) != 0) {
        char known[256];
        hm_activation_names(known, sizeof known, " ");
        return arrow_error(p, a, "unknown activation '%s' (known: id %s)", a->func, known);
      }
      char where[300];
      snprintf(where, sizeof where, "%s:%d:%d: ", p->lx.filename, a->line, a->col);
      hm_connection_spec spec;
      st = hm__edge_spec_check(g, (size_t)d, &a->spec, &spec, where);
      if (st == HM_OK) st = hm__graph_add_edge(g, (size_t)s, (size_t)d, act, a->line, a->col);
      if (st == HM_OK) g->edges[g->n_edges - 1].spec = spec;
    }
    if (st != HM_OK) return st;
  }
  return HM_OK;
}

hm_status hm_graph_parse(const char *text, size_t length, const char *filename, hm_graph **out) {
  if (!text || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_graph_parse: NULL argument");
  if (length > MAX_DSL_BYTES)
    return hm__fail(HM_STATUS_OUT_OF_RANGE, "%s: %zu bytes is larger than the %u-byte limit for a DSL file",
                    filename ? filename : "<input>", length, MAX_DSL_BYTES);
  parser p;
  memset(&p, 0, sizeof p);
  hm__lexer_init(&p.lx, text, length, filename);
  hm_status st = hm_graph_create(NULL, &p.g);
  if (st != HM_OK) return st;
  p.g->filename = hm__strdup(p.lx.filename);
  st = next(&p);
  if (st == HM_OK && p.tok.kind == TOK_HARMONIC) {
    st = next(&p);
    char *name = NULL;
    if (st == HM_OK) st = take_ident(&p, &name, NULL, NULL);
    if (st == HM_OK) {
      hm__free(p.g->name);
      p.g->name = name;
      st = expect(&p, TOK_LBRACE);
    }
    if (st == HM_OK) st = parse_body(&p, TOK_RBRACE);
    if (st == HM_OK) st = next(&p);
    if (st == HM_OK && p.tok.kind != TOK_END) st = expected(&p, "end of input after the closing '}'");
  } else if (st == HM_OK) {
    st = parse_body(&p, TOK_END);
  }
  if (st == HM_OK) st = resolve_arrows(&p);
  if (st == HM_OK) st = resolve_partition(&p);
  for (size_t i = 0; i < p.n_cuts; i++) hm__free(p.cuts[i]);
  for (size_t i = 0; i < p.n_arrows; i++) {
    hm__free(p.arrows[i].src);
    hm__free(p.arrows[i].dst);
    hm__free(p.arrows[i].func);
  }
  hm__free(p.arrows);
  hm__free(p.ratio_nodes);
  if (st != HM_OK) {
    hm_graph_free(p.g);
    return st;
  }
  *out = p.g;
  return HM_OK;
}

hm_status hm_graph_load_dsl(const char *path, hm_graph **out) {
  if (!path || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_graph_load_dsl: NULL argument");
  char *text = NULL;
  size_t len = 0;
  HM_RETURN_IF_ERROR(hm__read_file(path, MAX_DSL_BYTES, &text, &len));
  hm_status st = hm_graph_parse(text, len, path, out);
  hm__free(text);
  return st;
}
