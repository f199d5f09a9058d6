/*
 * Small helpers: strings, growable buffers, the clock, debug logging.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"

char *hm__strdup(const char *s) { return s ? hm__strndup(s, strlen(s)) : NULL; }

char *hm__strndup(const char *s, size_t n) {
  char *d = hm__malloc(n + 1);
  if (!d) return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *hm__asprintf(const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *out = n >= 0 ? hm__malloc((size_t)n + 1) : NULL;
  if (out) vsnprintf(out, (size_t)n + 1, fmt, ap2);
  va_end(ap2);
  return out;
}

void hm__sb_init(hm_strbuf *sb) { memset(sb, 0, sizeof *sb); }

void hm__sb_free(hm_strbuf *sb) {
  hm__free(sb->data);
  memset(sb, 0, sizeof *sb);
}

static int sb_reserve(hm_strbuf *sb, size_t extra) {
  if (sb->failed) return 0;
  size_t need;
  if (hm__add_size(sb->len, extra + 1, &need)) {
    sb->failed = 1;
    return 0;
  }
  if (need <= sb->cap) return 1;
  size_t cap = sb->cap ? sb->cap : 64;
  while (cap < need) cap *= 2;
  char *d = hm__realloc(sb->data, cap);
  if (!d) {
    sb->failed = 1;
    return 0;
  }
  sb->data = d;
  sb->cap = cap;
  return 1;
}

void hm__sb_appendn(hm_strbuf *sb, const char *s, size_t n) {
  if (!sb_reserve(sb, n)) return;
  memcpy(sb->data + sb->len, s, n);
  sb->len += n;
  sb->data[sb->len] = '\0';
}

void hm__sb_append(hm_strbuf *sb, const char *s) { hm__sb_appendn(sb, s, strlen(s)); }

void hm__sb_printf(hm_strbuf *sb, const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n > 0 && sb_reserve(sb, (size_t)n)) {
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap2);
    sb->len += (size_t)n;
  }
  va_end(ap2);
}

void hm__sb_json_string(hm_strbuf *sb, const char *s) {
  hm__sb_append(sb, "\"");
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    switch (*p) {
      case '"': hm__sb_append(sb, "\\\""); break;
      case '\\': hm__sb_append(sb, "\\\\"); break;
      case '\n': hm__sb_append(sb, "\\n"); break;
      case '\r': hm__sb_append(sb, "\\r"); break;
      case '\t': hm__sb_append(sb, "\\t"); break;
      default:
        if (*p < 0x20) hm__sb_printf(sb, "\\u%04x", *p);
        else hm__sb_appendn(sb, (const char *)p, 1);
    }
  }
  hm__sb_append(sb, "\"");
}

char *hm__sb_take(hm_strbuf *sb) {
  if (sb->failed) {
    hm__sb_free(sb);
    return NULL;
  }
  char *d = sb->data ? sb->data : hm__strdup("");
  memset(sb, 0, sizeof *sb);
  return d;
}

int hm__ptrvec_push(hm_ptrvec *v, void *item) {
  if (v->len == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 8;
    void **items = hm__realloc(v->items, cap * sizeof *items);
    if (!items) return 1;
    v->items = items;
    v->cap = cap;
  }
  v->items[v->len++] = item;
  return 0;
}

void hm__ptrvec_free(hm_ptrvec *v) {
  hm__free(v->items);
  memset(v, 0, sizeof *v);
}

double hm__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ===== Logging ===== */

#include <stdatomic.h>

static atomic_uint log_mask;

void hm__log_set_mask(unsigned mask) { atomic_store(&log_mask, mask); }
unsigned hm__log_mask(void) { return atomic_load(&log_mask); }

unsigned hm__log_parse_mask(const char *text) {
  if (!text || !*text || strcmp(text, "0") == 0) return 0;
  if (strcmp(text, "1") == 0 || strcmp(text, "all") == 0) return HM_LOG_ALL;
  unsigned mask = 0;
  const char *p = text;
  while (*p) {
    size_t n = strcspn(p, ",");
    if (n == 6 && strncmp(p, "loader", 6) == 0) mask |= HM_LOG_LOADER;
    else if (n == 6 && strncmp(p, "plugin", 6) == 0) mask |= HM_LOG_PLUGIN;
    else if (n == 6 && strncmp(p, "policy", 6) == 0) mask |= HM_LOG_POLICY;
    else if (n == 5 && strncmp(p, "train", 5) == 0) mask |= HM_LOG_TRAIN;
    p += n;
    if (*p == ',') p++;
  }
  return mask;
}

void hm__log(unsigned category, const char *fmt, ...) {
  if (!(atomic_load(&log_mask) & category)) return;
  const char *name = category == HM_LOG_LOADER   ? "loader"
                     : category == HM_LOG_PLUGIN ? "plugin"
                     : category == HM_LOG_POLICY ? "policy"
                                                 : "train";
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "harmonics[%s]: %s\n", name, msg);
}
