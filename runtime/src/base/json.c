/*
 * Strict recursive-descent JSON parser with limits: depth 64, and every
 * allocation bounded by the input length (a hostile header cannot make us
 * allocate more than a small multiple of its own size).
 */
#include "base/json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"

#define MAX_DEPTH 64

typedef struct parser {
  const char *s;
  size_t len, pos;
  char *err;
  size_t err_cap;
  int failed;
  int out_of_memory; /* the failure is ours, not the text's */
} parser;

static void fail(parser *p, const char *what) {
  if (!p->failed) snprintf(p->err, p->err_cap, "offset %zu: %s", p->pos, what);
  p->failed = 1;
}

static void fail_out_of_memory(parser *p) {
  if (!p->failed) p->out_of_memory = 1;
  fail(p, "out of memory");
}

static void skip_ws(parser *p) {
  while (p->pos < p->len) {
    char c = p->s[p->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    p->pos++;
  }
}

static int parse_value(parser *p, hm_json *out, int depth);

static int hex4(parser *p, unsigned *out) {
  if (p->len - p->pos < 4) return 0;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p->s[p->pos + (size_t)i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return 0;
  }
  p->pos += 4;
  *out = v;
  return 1;
}

static void put_utf8(char *buf, size_t *n, unsigned cp) {
  if (cp < 0x80) buf[(*n)++] = (char)cp;
  else if (cp < 0x800) {
    buf[(*n)++] = (char)(0xc0 | (cp >> 6));
    buf[(*n)++] = (char)(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    buf[(*n)++] = (char)(0xe0 | (cp >> 12));
    buf[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
    buf[(*n)++] = (char)(0x80 | (cp & 0x3f));
  } else {
    buf[(*n)++] = (char)(0xf0 | (cp >> 18));
    buf[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
    buf[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
    buf[(*n)++] = (char)(0x80 | (cp & 0x3f));
  }
}

static char *parse_string(parser *p) {
  if (p->pos >= p->len || p->s[p->pos] != '"') {
    fail(p, "expected a string");
    return NULL;
  }
  p->pos++;
  size_t start = p->pos;
  /* The decoded string is never longer than its source. */
  size_t end = start;
  while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
  if (end >= p->len) {
    fail(p, "unterminated string");
    return NULL;
  }
  char *buf = hm__malloc(end - start + 1);
  if (!buf) {
    fail_out_of_memory(p);
    return NULL;
  }
  size_t n = 0;
  while (p->pos < p->len && p->s[p->pos] != '"') {
    unsigned char c = (unsigned char)p->s[p->pos];
    if (c < 0x20) {
      fail(p, "control character in string");
      hm__free(buf);
      return NULL;
    }
    if (c != '\\') {
      buf[n++] = (char)c;
      p->pos++;
      continue;
    }
    p->pos++;
    if (p->pos >= p->len) break;
    char e = p->s[p->pos++];
    switch (e) {
      case '"': buf[n++] = '"'; break;
      case '\\': buf[n++] = '\\'; break;
      case '/': buf[n++] = '/'; break;
      case 'b': buf[n++] = '\b'; break;
      case 'f': buf[n++] = '\f'; break;
      case 'n': buf[n++] = '\n'; break;
      case 'r': buf[n++] = '\r'; break;
      case 't': buf[n++] = '\t'; break;
      case 'u': {
        unsigned cp;
        if (!hex4(p, &cp)) {
          fail(p, "bad \\u escape");
          hm__free(buf);
          return NULL;
        }
        if (cp >= 0xd800 && cp < 0xdc00 && p->len - p->pos >= 6 && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u') {
          unsigned lo;
          p->pos += 2;
          if (!hex4(p, &lo) || lo < 0xdc00 || lo > 0xdfff) {
            fail(p, "bad surrogate pair");
            hm__free(buf);
            return NULL;
          }
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        if (cp == 0) {
          fail(p, "NUL character in string");
          hm__free(buf);
          return NULL;
        }
        put_utf8(buf, &n, cp);
        break;
      }
      default:
        fail(p, "bad escape");
        hm__free(buf);
        return NULL;
    }
  }
  if (p->pos >= p->len) {
    fail(p, "unterminated string");
    hm__free(buf);
    return NULL;
  }
  p->pos++; /* closing quote */
  buf[n] = '\0';
  return buf;
}

static int parse_number(parser *p, hm_json *out) {
  size_t start = p->pos;
  if (p->pos < p->len && p->s[p->pos] == '-') p->pos++;
  if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') {
    fail(p, "invalid number");
    return 0;
  }
  if (p->s[p->pos] == '0') p->pos++;
  else
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
  int integer = 1;
  if (p->pos < p->len && p->s[p->pos] == '.') {
    integer = 0;
    p->pos++;
    if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') {
      fail(p, "invalid number");
      return 0;
    }
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
  }
  if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
    integer = 0;
    p->pos++;
    if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
    if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') {
      fail(p, "invalid number");
      return 0;
    }
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
  }
  char tmp[64];
  size_t n = p->pos - start;
  if (n >= sizeof tmp) {
    fail(p, "number too long");
    return 0;
  }
  memcpy(tmp, p->s + start, n);
  tmp[n] = '\0';
  out->type = HM_JSON_NUMBER;
  out->number = strtod(tmp, NULL);
  if (integer && tmp[0] != '-') {
    errno = 0;
    unsigned long long u = strtoull(tmp, NULL, 10);
    if (errno == 0) {
      out->is_uint = 1;
      out->uint = u;
    }
  }
  return 1;
}

static int parse_literal(parser *p, const char *word) {
  size_t n = strlen(word);
  if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) {
    fail(p, "invalid literal");
    return 0;
  }
  p->pos += n;
  return 1;
}

/* Appends one zeroed slot to a growing item array. */
static hm_json *grow(parser *p, hm_json *arr, size_t *cap, char ***keys) {
  if (arr->count == *cap) {
    size_t ncap = *cap ? *cap * 2 : 4;
    /* Every item needs at least 2 input bytes: cap growth is bounded by input. */
    if (ncap > p->len + 4) ncap = p->len + 4;
    if (ncap <= arr->count) {
      fail(p, "too many items");
      return NULL;
    }
    hm_json *items = hm__realloc(arr->items, ncap * sizeof *items);
    if (!items) {
      fail_out_of_memory(p);
      return NULL;
    }
    arr->items = items;
    if (keys) {
      char **k = hm__realloc(*keys, ncap * sizeof *k);
      if (!k) {
        fail_out_of_memory(p);
        return NULL;
      }
      *keys = k;
    }
    *cap = ncap;
  }
  hm_json *slot = &arr->items[arr->count];
  memset(slot, 0, sizeof *slot);
  return slot;
}

static int parse_container(parser *p, hm_json *out, int depth, int object) {
  out->type = object ? HM_JSON_OBJECT : HM_JSON_ARRAY;
  p->pos++; /* [ or { */
  size_t cap = 0;
  skip_ws(p);
  char close = object ? '}' : ']';
  if (p->pos < p->len && p->s[p->pos] == close) {
    p->pos++;
    return 1;
  }
  for (;;) {
    skip_ws(p);
    char *key = NULL;
    if (object) {
      key = parse_string(p);
      if (!key) return 0;
      skip_ws(p);
      if (p->pos >= p->len || p->s[p->pos] != ':') {
        hm__free(key);
        fail(p, "expected ':'");
        return 0;
      }
      p->pos++;
    }
    hm_json *slot = grow(p, out, &cap, object ? &out->keys : NULL);
    if (!slot) {
      hm__free(key);
      return 0;
    }
    if (object) out->keys[out->count] = key;
    out->count++;
    if (!parse_value(p, slot, depth + 1)) return 0;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == ',') {
      p->pos++;
      continue;
    }
    if (p->pos < p->len && p->s[p->pos] == close) {
      p->pos++;
      return 1;
    }
    fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    return 0;
  }
}

static int parse_value(parser *p, hm_json *out, int depth) {
  if (depth > MAX_DEPTH) {
    fail(p, "nesting too deep");
    return 0;
  }
  skip_ws(p);
  if (p->pos >= p->len) {
    fail(p, "unexpected end of input");
    return 0;
  }
  char c = p->s[p->pos];
  switch (c) {
    case '{': return parse_container(p, out, depth, 1);
    case '[': return parse_container(p, out, depth, 0);
    case '"':
      out->type = HM_JSON_STRING;
      out->string = parse_string(p);
      return out->string != NULL;
    case 't':
      out->type = HM_JSON_BOOL;
      out->boolean = 1;
      return parse_literal(p, "true");
    case 'f':
      out->type = HM_JSON_BOOL;
      return parse_literal(p, "false");
    case 'n':
      out->type = HM_JSON_NULL;
      return parse_literal(p, "null");
    default: return parse_number(p, out);
  }
}

static void json_clear(hm_json *j) {
  if (!j) return;
  hm__free(j->string);
  for (size_t i = 0; i < j->count; i++) {
    json_clear(&j->items[i]);
    if (j->keys) hm__free(j->keys[i]);
  }
  hm__free(j->items);
  hm__free(j->keys);
}

void hm__json_free(hm_json *j) {
  json_clear(j);
  hm__free(j);
}

hm_status hm__json_parse(const char *text, size_t len, hm_json **out, char *err, size_t err_cap) {
  parser p = {text, len, 0, err, err_cap, 0, 0};
  hm_json *root = hm__calloc(1, sizeof *root);
  if (!root) {
    snprintf(err, err_cap, "out of memory");
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  if (parse_value(&p, root, 0)) {
    skip_ws(&p);
    if (p.pos != p.len) fail(&p, "trailing characters after the value");
  }
  if (p.failed) {
    hm__json_free(root);
    return p.out_of_memory ? HM_STATUS_RESOURCE_EXHAUSTED : HM_STATUS_PARSE_ERROR;
  }
  *out = root;
  return HM_OK;
}

const hm_json *hm__json_get(const hm_json *obj, const char *key) {
  if (!obj || obj->type != HM_JSON_OBJECT) return NULL;
  for (size_t i = 0; i < obj->count; i++)
    if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
  return NULL;
}
