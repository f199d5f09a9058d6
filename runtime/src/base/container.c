/*
 * The binary envelope (see container.h): CRC32C, a little-endian byte
 * builder, and a bounded reader.
 */
#include "base/container.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "harmonics/version.h"

/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven. */
static uint32_t crc_table[256];
static int crc_ready;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[i] = c;
  }
  crc_ready = 1;
}

uint32_t hm__crc32c(uint32_t crc, const void *data, size_t n) {
  if (!crc_ready) crc_init(); /* idempotent: racing threads write the same values */
  const unsigned char *p = data;
  crc = ~crc;
  for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

/* ===== Builder ===== */

static int reserve(hm_bytes *b, size_t n) {
  if (b->failed) return 0;
  if (b->len + n < b->len) {
    b->failed = 1;
    return 0;
  }
  if (b->len + n <= b->cap) return 1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + n) cap *= 2;
  unsigned char *d = hm__realloc(b->data, cap);
  if (!d) {
    b->failed = 1;
    return 0;
  }
  b->data = d;
  b->cap = cap;
  return 1;
}

void hm__bytes_raw(hm_bytes *b, const void *data, size_t n) {
  if (!n || !reserve(b, n)) return;
  memcpy(b->data + b->len, data, n);
  b->len += n;
}

static void put_le(hm_bytes *b, uint64_t v, int n) {
  unsigned char buf[8];
  for (int i = 0; i < n; i++) buf[i] = (unsigned char)(v >> (8 * i));
  hm__bytes_raw(b, buf, (size_t)n);
}

void hm__bytes_u8(hm_bytes *b, uint8_t v) { put_le(b, v, 1); }
void hm__bytes_u32(hm_bytes *b, uint32_t v) { put_le(b, v, 4); }
void hm__bytes_i32(hm_bytes *b, int32_t v) { put_le(b, (uint32_t)v, 4); }
void hm__bytes_u64(hm_bytes *b, uint64_t v) { put_le(b, v, 8); }

void hm__bytes_f32(hm_bytes *b, float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  put_le(b, u, 4);
}

void hm__bytes_f64(hm_bytes *b, double v) {
  uint64_t u;
  memcpy(&u, &v, 8);
  put_le(b, u, 8);
}

void hm__bytes_str(hm_bytes *b, const char *s) {
  size_t n = s ? strlen(s) : 0;
  hm__bytes_u32(b, (uint32_t)n);
  hm__bytes_raw(b, s, n);
}

void hm__bytes_free(hm_bytes *b) {
  hm__free(b->data);
  memset(b, 0, sizeof *b);
}

hm_status hm__container_write(FILE *f, const char magic[8], uint32_t version, const hm_bytes *payload, const char *what) {
  if (payload->failed) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory while encoding", what);
  hm_bytes h = {0};
  hm__bytes_raw(&h, magic, 8);
  hm__bytes_u32(&h, version);
  hm__bytes_u32(&h, 0);
  hm__bytes_u64(&h, payload->len);
  if (!h.failed) hm__bytes_u32(&h, hm__crc32c(0, h.data, 24));
  if (!h.failed) hm__bytes_u32(&h, hm__crc32c(0, payload->data, payload->len));
  hm_status st = h.failed ? hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory while encoding", what) : HM_OK;
  if (st == HM_OK && fwrite(h.data, 1, h.len, f) != h.len)
    st = hm__fail(HM_STATUS_IO_ERROR, "%s: write failed: %s", what, strerror(errno));
  if (st == HM_OK && payload->len && fwrite(payload->data, 1, payload->len, f) != payload->len)
    st = hm__fail(HM_STATUS_IO_ERROR, "%s: write failed: %s", what, strerror(errno));
  hm__bytes_free(&h);
  return st;
}

/* ===== Reader ===== */

static uint64_t get_le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static hm_status reader_vfail(hm_reader *r, hm_status status, const char *fmt, va_list ap) {
  if (r->status != HM_OK) return r->status;
  char msg[400];
  vsnprintf(msg, sizeof msg, fmt, ap);
  r->status = hm__fail(status, "%s: offset %zu: %s", r->what, r->base + r->pos, msg);
  return r->status;
}

hm_status hm__reader_fail(hm_reader *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  hm_status st = reader_vfail(r, HM_STATUS_DATA_LOSS, fmt, ap);
  va_end(ap);
  return st;
}

hm_status hm__reader_fail_from(hm_reader *r, hm_status inner, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  hm_status st =
      reader_vfail(r, inner == HM_STATUS_RESOURCE_EXHAUSTED ? HM_STATUS_RESOURCE_EXHAUSTED : HM_STATUS_DATA_LOSS, fmt, ap);
  va_end(ap);
  return st;
}

static const unsigned char *take(hm_reader *r, size_t n, const char *field) {
  if (r->status != HM_OK) return NULL;
  if (n > r->len - r->pos) {
    hm__reader_fail(r, "truncated: %s needs %zu bytes, %zu remain", field, n, r->len - r->pos);
    return NULL;
  }
  const unsigned char *p = r->data + r->pos;
  r->pos += n;
  return p;
}

uint8_t hm__read_u8(hm_reader *r, const char *field) {
  const unsigned char *p = take(r, 1, field);
  return p ? p[0] : 0;
}

uint32_t hm__read_u32(hm_reader *r, const char *field) {
  const unsigned char *p = take(r, 4, field);
  return p ? (uint32_t)get_le(p, 4) : 0;
}

int32_t hm__read_i32(hm_reader *r, const char *field) { return (int32_t)hm__read_u32(r, field); }

uint64_t hm__read_u64(hm_reader *r, const char *field) {
  const unsigned char *p = take(r, 8, field);
  return p ? get_le(p, 8) : 0;
}

float hm__read_f32(hm_reader *r, const char *field) {
  uint32_t u = hm__read_u32(r, field);
  float v;
  memcpy(&v, &u, 4);
  return v;
}

double hm__read_f64(hm_reader *r, const char *field) {
  uint64_t u = hm__read_u64(r, field);
  double v;
  memcpy(&v, &u, 8);
  return v;
}

const unsigned char *hm__read_raw(hm_reader *r, size_t n, const char *field) { return take(r, n, field); }

char *hm__read_str(hm_reader *r, size_t max_len, const char *field) {
  size_t at = r->pos;
  uint32_t n = hm__read_u32(r, field);
  if (r->status != HM_OK) return NULL;
  if (n > max_len) {
    r->pos = at;
    hm__reader_fail(r, "%s has length %u, more than %zu", field, n, max_len);
    return NULL;
  }
  const unsigned char *p = take(r, n, field);
  if (!p) return NULL;
  if (memchr(p, 0, n)) {
    hm__reader_fail(r, "%s contains a NUL byte", field);
    return NULL;
  }
  char *s = hm__strndup((const char *)p, n);
  if (!s) r->status = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  return s;
}

size_t hm__read_count(hm_reader *r, size_t min_item_bytes, size_t limit, const char *field) {
  size_t at = r->pos;
  uint32_t n = hm__read_u32(r, field);
  if (r->status != HM_OK) return 0;
  size_t need;
  if (n > limit || hm__mul_size(n, min_item_bytes, &need) || need > r->len - r->pos) {
    r->pos = at;
    hm__reader_fail(r, "%s is %u: more than %s", field, n,
                    n > limit ? "the format allows" : "the rest of the file can hold");
    return 0;
  }
  return n;
}

hm_status hm__reader_finish(hm_reader *r) {
  if (r->status == HM_OK && r->pos != r->len)
    hm__reader_fail(r, "%zu unexpected bytes after the last field", r->len - r->pos);
  return r->status;
}

hm_status hm__container_open(const unsigned char *data, size_t len, const char magic[8], uint32_t max_version,
                             const char *what, hm_reader *r, uint32_t *version) {
  memset(r, 0, sizeof *r);
  r->what = what;
  if (len < HM_CONTAINER_HEADER)
    return hm__fail(HM_STATUS_DATA_LOSS, "%s: truncated: %zu bytes, the header alone is %d", what, len, HM_CONTAINER_HEADER);
  if (memcmp(data, magic, 8) != 0) {
    char got[9];
    for (int i = 0; i < 8; i++) got[i] = data[i] >= 0x20 && data[i] < 0x7f ? (char)data[i] : '?';
    got[8] = '\0';
    return hm__fail(HM_STATUS_DATA_LOSS, "%s: offset 0: wrong magic \"%s\", expected \"%.8s\" (not this kind of file)",
                    what, got, magic);
  }
  uint32_t ver = (uint32_t)get_le(data + 8, 4);
  uint32_t crc = (uint32_t)get_le(data + 24, 4);
  if (hm__crc32c(0, data, 24) != crc)
    return hm__fail(HM_STATUS_DATA_LOSS, "%s: offset 24: header checksum mismatch (the header is corrupt)", what);
  if (ver == 0) return hm__fail(HM_STATUS_DATA_LOSS, "%s: offset 8: format version 0 is invalid", what);
  if (ver > max_version)
    return hm__fail(HM_STATUS_INCOMPATIBLE, "%s: format version %u is newer than this build of Harmonics (%s) reads (up to %u)",
                    what, ver, hm_version(), max_version);
  if (get_le(data + 12, 4) != 0) return hm__fail(HM_STATUS_DATA_LOSS, "%s: offset 12: unknown flags", what);
  uint64_t plen = get_le(data + 16, 8);
  if (plen != len - HM_CONTAINER_HEADER)
    return hm__fail(HM_STATUS_DATA_LOSS, "%s: offset 16: the header promises %llu payload bytes, the file has %zu (%s)",
                    what, (unsigned long long)plen, len - HM_CONTAINER_HEADER,
                    plen > len - HM_CONTAINER_HEADER ? "truncated" : "trailing data");
  if (hm__crc32c(0, data + HM_CONTAINER_HEADER, (size_t)plen) != (uint32_t)get_le(data + 28, 4))
    return hm__fail(HM_STATUS_DATA_LOSS, "%s: payload checksum mismatch (the file is corrupt)", what);
  r->data = data + HM_CONTAINER_HEADER;
  r->len = (size_t)plen;
  r->base = HM_CONTAINER_HEADER;
  r->status = HM_OK;
  if (version) *version = ver;
  return HM_OK;
}

hm_status hm__container_read(FILE *f, const char magic[8], uint32_t max_version, size_t max_bytes, const char *what,
                             unsigned char **owned, hm_reader *r, uint32_t *version) {
  /* Read in growing chunks: memory follows the bytes that actually exist. */
  unsigned char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      if (cap >= max_bytes) {
        hm__free(buf);
        return hm__fail(HM_STATUS_OUT_OF_RANGE, "%s: larger than the %zu-byte limit", what, max_bytes);
      }
      size_t ncap = cap ? cap * 2 : 65536;
      if (ncap > max_bytes) ncap = max_bytes;
      unsigned char *nb = hm__realloc(buf, ncap + 1);
      if (!nb) {
        hm__free(buf);
        return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory", what);
      }
      buf = nb;
      cap = ncap;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  if (ferror(f)) {
    hm__free(buf);
    return hm__fail(HM_STATUS_IO_ERROR, "%s: read error", what);
  }
  hm_status st = hm__container_open(buf, len, magic, max_version, what, r, version);
  if (st != HM_OK) {
    hm__free(buf);
    return st;
  }
  *owned = buf;
  return HM_OK;
}
