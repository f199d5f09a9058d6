/*
 * Tokens of the .hmx DSL (docs/dsl.md).
 */
#ifndef HM_DSL_LEXER_H_
#define HM_DSL_LEXER_H_

#include <stddef.h>

#include "harmonics/status.h"

typedef enum hm_tok_kind {
  TOK_END,
  TOK_IDENT,
  TOK_NUMBER,  /* digits, or digits '.' digits */
  TOK_HARMONIC,
  TOK_PRODUCER,
  TOK_CONSUMER,
  TOK_LAYER,
  TOK_CYCLE,
  TOK_IF,
  TOK_ELSE,
  TOK_LBRACE,
  TOK_RBRACE,
  TOK_LPAREN,
  TOK_RPAREN,
  TOK_SEMI,
  TOK_SLASH,
  TOK_PIPE,
  TOK_COMMA,
  TOK_HYPHEN,  /* - */
  TOK_ARROW,   /* -> */
  TOK_BACK,    /* <- */
  TOK_LBRACKET,
  TOK_RBRACKET
} hm_tok_kind;

typedef struct hm_token {
  hm_tok_kind kind;
  const char *text; /* points into the source */
  size_t len;
  int line, col;
} hm_token;

typedef struct hm_lexer {
  const char *src;
  size_t len, pos;
  int line, col;
  const char *filename;
} hm_lexer;

void hm__lexer_init(hm_lexer *lx, const char *src, size_t len, const char *filename);
/* Next token; PARSE_ERROR "file:line:col: unexpected character" on bad input. */
hm_status hm__lexer_next(hm_lexer *lx, hm_token *out);
const char *hm__tok_name(hm_tok_kind k);

#endif /* HM_DSL_LEXER_H_ */
