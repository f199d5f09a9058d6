/*
 * The .hmx lexer: identifiers [A-Za-z_][A-Za-z0-9_]*, decimal integers,
 * keywords, punctuation with "->" and "<-" matched before "-" (maximal
 * munch), and "//" or "#" comments to the end of the line. Lines and
 * columns count from 1; a tab counts as one column.
 */
#include "graph/dsl_lexer.h"

#include <string.h>

#include "base/base.h"

void hm__lexer_init(hm_lexer *lx, const char *src, size_t len, const char *filename) {
  lx->src = src;
  lx->len = len;
  lx->pos = 0;
  lx->line = 1;
  lx->col = 1;
  lx->filename = filename ? filename : "<input>";
}

static void advance(hm_lexer *lx) {
  if (lx->src[lx->pos] == '\n') {
    lx->line++;
    lx->col = 1;
  } else {
    lx->col++;
  }
  lx->pos++;
}

static int is_ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_ident(char c) { return is_ident_start(c) || (c >= '0' && c <= '9'); }

static const struct {
  const char *word;
  hm_tok_kind kind;
} keywords[] = {{"harmonic", TOK_HARMONIC}, {"producer", TOK_PRODUCER}, {"consumer", TOK_CONSUMER},
                {"layer", TOK_LAYER},       {"cycle", TOK_CYCLE},       {"if", TOK_IF},
                {"else", TOK_ELSE}};

const char *hm__tok_name(hm_tok_kind k) {
  switch (k) {
    case TOK_END: return "end of input";
    case TOK_IDENT: return "a name";
    case TOK_NUMBER: return "a number";
    case TOK_HARMONIC: return "'harmonic'";
    case TOK_PRODUCER: return "'producer'";
    case TOK_CONSUMER: return "'consumer'";
    case TOK_LAYER: return "'layer'";
    case TOK_CYCLE: return "'cycle'";
    case TOK_IF: return "'if'";
    case TOK_ELSE: return "'else'";
    case TOK_LBRACE: return "'{'";
    case TOK_RBRACE: return "'}'";
    case TOK_LPAREN: return "'('";
    case TOK_RPAREN: return "')'";
    case TOK_SEMI: return "';'";
    case TOK_SLASH: return "'/'";
    case TOK_PIPE: return "'|'";
    case TOK_COMMA: return "','";
    case TOK_HYPHEN: return "'-'";
    case TOK_ARROW: return "'->'";
    case TOK_BACK: return "'<-'";
    case TOK_LBRACKET: return "'['";
    case TOK_RBRACKET: return "']'";
  }
  return "?";
}

hm_status hm__lexer_next(hm_lexer *lx, hm_token *out) {
  for (;;) {
    while (lx->pos < lx->len && (lx->src[lx->pos] == ' ' || lx->src[lx->pos] == '\t' || lx->src[lx->pos] == '\n' ||
                                 lx->src[lx->pos] == '\r'))
      advance(lx);
    if (lx->pos < lx->len &&
        (lx->src[lx->pos] == '#' || (lx->src[lx->pos] == '/' && lx->pos + 1 < lx->len && lx->src[lx->pos + 1] == '/'))) {
      while (lx->pos < lx->len && lx->src[lx->pos] != '\n') advance(lx);
      continue;
    }
    break;
  }
  out->line = lx->line;
  out->col = lx->col;
  out->text = lx->src + lx->pos;
  out->len = 0;
  if (lx->pos >= lx->len) {
    out->kind = TOK_END;
    return HM_OK;
  }
  char c = lx->src[lx->pos];
  if (is_ident_start(c)) {
    size_t start = lx->pos;
    while (lx->pos < lx->len && is_ident(lx->src[lx->pos])) advance(lx);
    out->len = lx->pos - start;
    out->kind = TOK_IDENT;
    for (size_t i = 0; i < sizeof keywords / sizeof keywords[0]; i++)
      if (strlen(keywords[i].word) == out->len && memcmp(keywords[i].word, out->text, out->len) == 0)
        out->kind = keywords[i].kind;
    return HM_OK;
  }
  if (c >= '0' && c <= '9') {
    size_t start = lx->pos;
    while (lx->pos < lx->len && lx->src[lx->pos] >= '0' && lx->src[lx->pos] <= '9') advance(lx);
    if (lx->pos + 1 < lx->len && lx->src[lx->pos] == '.' && lx->src[lx->pos + 1] >= '0' && lx->src[lx->pos + 1] <= '9') {
      advance(lx); /* a decimal fraction (dropout rates) */
      while (lx->pos < lx->len && lx->src[lx->pos] >= '0' && lx->src[lx->pos] <= '9') advance(lx);
    }
    out->len = lx->pos - start;
    out->kind = TOK_NUMBER;
    return HM_OK;
  }
  char next = lx->pos + 1 < lx->len ? lx->src[lx->pos + 1] : '\0';
  if (c == '-' && next == '>') {
    advance(lx);
    advance(lx);
    out->kind = TOK_ARROW;
    out->len = 2;
    return HM_OK;
  }
  if (c == '<' && next == '-') {
    advance(lx);
    advance(lx);
    out->kind = TOK_BACK;
    out->len = 2;
    return HM_OK;
  }
  hm_tok_kind k;
  switch (c) {
    case '{': k = TOK_LBRACE; break;
    case '}': k = TOK_RBRACE; break;
    case '(': k = TOK_LPAREN; break;
    case ')': k = TOK_RPAREN; break;
    case ';': k = TOK_SEMI; break;
    case '/': k = TOK_SLASH; break;
    case '|': k = TOK_PIPE; break;
    case ',': k = TOK_COMMA; break;
    case '[': k = TOK_LBRACKET; break;
    case ']': k = TOK_RBRACKET; break;
    case '-': k = TOK_HYPHEN; break;
    default: {
      unsigned char uc = (unsigned char)c;
      if (uc >= 0x20 && uc < 0x7f)
        return hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d:%d: unexpected character '%c'", lx->filename, lx->line, lx->col, c);
      return hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d:%d: unexpected byte 0x%02x", lx->filename, lx->line, lx->col, uc);
    }
  }
  advance(lx);
  out->kind = k;
  out->len = 1;
  return HM_OK;
}
