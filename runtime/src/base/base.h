/*
 * base/: errors, logging, memory and string helpers shared by every layer of
 * the runtime. Depends on nothing but the public status header. Not installed.
 */
#ifndef HM_BASE_BASE_H_
#define HM_BASE_BASE_H_

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "harmonics/status.h"

/* ===== Limits shared by the layers ===== */

/* The widest sample or layer a graph or a producer may have. */
#define HM_MAX_WIDTH ((size_t)1 << 24)

/* ===== Errors ===== */

/* Records |fmt| as the thread's last error and returns |status|. */
hm_status hm__fail(hm_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prepends context to the thread's last error ("file.hmx: " + old). */
void hm__error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define HM_RETURN_IF_ERROR(expr)    \
  do {                              \
    hm_status hm__s = (expr);       \
    if (hm__s != HM_OK) return hm__s; \
  } while (0)

/* ===== Logging (HARMONICS_DEBUG) ===== */

enum {
  HM_LOG_LOADER = 1u << 0,
  HM_LOG_PLUGIN = 1u << 1,
  HM_LOG_POLICY = 1u << 2,
  HM_LOG_TRAIN = 1u << 3,
  HM_LOG_ALL = 0xffffu
};

/* Parses "1", "all", or a comma list of loader,plugin,policy,train. */
unsigned hm__log_parse_mask(const char *text);
void hm__log_set_mask(unsigned mask);
unsigned hm__log_mask(void);
/* Writes "harmonics[<category>]: <message>" to stderr when enabled. */
void hm__log(unsigned category, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ===== Memory and strings ===== */

/* The runtime's heap (base/alloc.c): malloc/calloc/realloc/free, except that
 * a size of 0 asks for 1 byte (NULL always means out of memory). Runtime
 * sources call only these (the build refuses raw malloc there). */
void *hm__malloc(size_t n);
void *hm__calloc(size_t count, size_t size);
void *hm__realloc(void *p, size_t n);
void hm__free(void *p);

#ifdef HM_ALLOC_FAILURE_HOOK
/* Test builds only (the hm_runtime_failing_alloc library): from the |nth|
 * allocation on (counting from the arm, 1-based; 0 = never) every one fails. */
void hm__alloc_hook_arm(long nth);
long hm__alloc_hook_attempts(void); /* since the last arm */
long hm__alloc_hook_failures(void); /* refused since the last arm */
long hm__alloc_hook_live(void);     /* blocks not yet freed */
#endif

/* Checked arithmetic: nonzero on overflow. */
static inline int hm__mul_size(size_t a, size_t b, size_t *out) { return __builtin_mul_overflow(a, b, out); }
static inline int hm__add_size(size_t a, size_t b, size_t *out) { return __builtin_add_overflow(a, b, out); }

char *hm__strdup(const char *s);
char *hm__strndup(const char *s, size_t n);
/* malloc'ed printf. NULL on failure. */
char *hm__asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A growable string. */
typedef struct hm_strbuf {
  char *data;
  size_t len, cap;
  int failed; /* set once an allocation failed */
} hm_strbuf;

void hm__sb_init(hm_strbuf *sb);
void hm__sb_free(hm_strbuf *sb);
void hm__sb_append(hm_strbuf *sb, const char *s);
void hm__sb_appendn(hm_strbuf *sb, const char *s, size_t n);
void hm__sb_printf(hm_strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends |s| as a JSON string literal with quotes and escapes. */
void hm__sb_json_string(hm_strbuf *sb, const char *s);
/* Returns the string (caller frees) and resets the builder; NULL if failed. */
char *hm__sb_take(hm_strbuf *sb);

/* A growable array of pointers. */
typedef struct hm_ptrvec {
  void **items;
  size_t len, cap;
} hm_ptrvec;

int hm__ptrvec_push(hm_ptrvec *v, void *item);
void hm__ptrvec_free(hm_ptrvec *v);

/* Monotonic clock in seconds. */
double hm__now(void);

#endif /* HM_BASE_BASE_H_ */
