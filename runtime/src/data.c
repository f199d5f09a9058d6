/*
 * Producers and consumers: the interface wrappers and the in-memory, IDX,
 * CSV and limiting producers. Built-in producers read their whole file at
 * open, validating it, so a bad file fails early with its name and offset.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if HM_HAVE_ZLIB
#include <zlib.h>
#endif

#include "fileio.h"
#include "graph_impl.h"
#include "harmonics/data.h"
#include "weights_impl.h"

#define MAX_DATASET_BYTES ((size_t)4 << 30)

struct hm_producer {
  const hm_producer_vtable *vt;
  void *self;
};

struct hm_consumer {
  const hm_consumer_vtable *vt;
  void *self;
};

hm_status hm_producer_create(const hm_producer_vtable *vt, void *self, hm_producer **out) {
  if (!vt || !out || vt->struct_size < sizeof *vt || !vt->info || !vt->next_batch || !vt->reset)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_producer_create: vtable needs struct_size, info, next_batch, reset");
  hm_producer *p = calloc(1, sizeof *p);
  if (!p) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  p->vt = vt;
  p->self = self;
  *out = p;
  return HM_OK;
}

void hm_producer_free(hm_producer *p) {
  if (!p) return;
  if (p->vt->destroy) p->vt->destroy(p->self);
  free(p);
}

hm_status hm_producer_info_get(hm_producer *p, hm_producer_info *out) {
  if (!p || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "NULL producer");
  hm_producer_info info;
  memset(&info, 0, sizeof info);
  info.scale = 1.0f;
  HM_RETURN_IF_ERROR(p->vt->info(p->self, &info));
  if (info.dtype != HM_ABI_DTYPE_F32 && info.dtype != HM_ABI_DTYPE_U8 && info.dtype != HM_ABI_DTYPE_I32)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "producer reports dtype %u (F32, U8 or I32 expected)", info.dtype);
  if (info.dtype == HM_ABI_DTYPE_I32 && (info.width != 1 || info.num_classes == 0))
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "a class-index producer needs width 1 and num_classes > 0");
  *out = info;
  return HM_OK;
}

hm_status hm_producer_next_batch(hm_producer *p, size_t max_rows, void *out, size_t *rows) {
  if (!p || !rows || (max_rows && !out)) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "NULL producer argument");
  return p->vt->next_batch(p->self, max_rows, out, rows);
}

hm_status hm_producer_reset(hm_producer *p) {
  if (!p) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "NULL producer");
  return p->vt->reset(p->self);
}

hm_status hm__producer_read_all(hm_producer *p, const char *node_name, hm_bound_data *data) {
  hm_producer_info info;
  HM_RETURN_IF_ERROR(hm_producer_info_get(p, &info));
  size_t es = hm__dtype_size(info.dtype), bytes;
  if (info.count == 0) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "producer '%s' has no samples", node_name);
  if (hm__mul_size(info.count, info.width, &bytes) || hm__mul_size(bytes, es, &bytes) || bytes > MAX_DATASET_BYTES)
    return hm__fail(HM_STATUS_OUT_OF_RANGE, "producer '%s': %zu samples of width %zu exceed %zu bytes", node_name,
                    info.count, info.width, MAX_DATASET_BYTES);
  unsigned char *values = malloc(bytes);
  if (!values) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of '%s'", bytes, node_name);
  hm_status st = hm_producer_reset(p);
  size_t got = 0;
  while (st == HM_OK && got < info.count) {
    size_t rows = 0;
    st = hm_producer_next_batch(p, info.count - got, values + got * info.width * es, &rows);
    if (st == HM_OK && rows == 0) break;
    if (st == HM_OK && rows > info.count - got)
      st = hm__fail(HM_STATUS_INTERNAL, "producer '%s' returned more rows than asked", node_name);
    got += rows;
  }
  if (st == HM_OK && got != info.count)
    st = hm__fail(HM_STATUS_DATA_LOSS, "producer '%s' promised %zu samples but gave %zu", node_name, info.count, got);
  if (st == HM_OK && info.dtype == HM_ABI_DTYPE_I32) {
    const int32_t *l = (const int32_t *)values;
    for (size_t i = 0; i < info.count && st == HM_OK; i++)
      if (l[i] < 0 || (size_t)l[i] >= info.num_classes)
        st = hm__fail(HM_STATUS_INVALID_ARGUMENT, "producer '%s': sample %zu has class %d outside [0, %zu)", node_name,
                      i, l[i], info.num_classes);
  }
  if (st == HM_OK && info.dtype == HM_ABI_DTYPE_F32) {
    const float *f = (const float *)values;
    for (size_t i = 0; i < info.count * info.width && st == HM_OK; i++)
      if (!isfinite(f[i]))
        st = hm__fail(HM_STATUS_INVALID_ARGUMENT, "producer '%s': sample %zu holds a non-finite value", node_name,
                      i / info.width);
  }
  if (st != HM_OK) {
    free(values);
    return st;
  }
  data->info = info;
  data->values = values;
  return HM_OK;
}

/* ===== In-memory producer (also the base of IDX and CSV) ===== */

typedef struct mem_producer {
  hm_producer_info info;
  unsigned char *values;
  size_t pos;
} mem_producer;

static hm_status mem_info(void *self, hm_producer_info *out) {
  *out = ((mem_producer *)self)->info;
  return HM_OK;
}

static hm_status mem_next(void *self, size_t max_rows, void *out, size_t *rows) {
  mem_producer *m = self;
  size_t n = m->info.count - m->pos;
  if (n > max_rows) n = max_rows;
  size_t row_bytes = m->info.width * hm__dtype_size(m->info.dtype);
  memcpy(out, m->values + m->pos * row_bytes, n * row_bytes);
  m->pos += n;
  *rows = n;
  return HM_OK;
}

static hm_status mem_reset(void *self) {
  ((mem_producer *)self)->pos = 0;
  return HM_OK;
}

static void mem_destroy(void *self) {
  mem_producer *m = self;
  if (!m) return;
  free(m->values);
  free(m);
}

static const hm_producer_vtable mem_vtable = {sizeof(hm_producer_vtable), mem_info, mem_next, mem_reset, mem_destroy};

/* Takes ownership of |values| (freed on failure too). */
static hm_status mem_producer_create(hm_producer_info info, void *values, hm_producer **out) {
  mem_producer *m = calloc(1, sizeof *m);
  if (!m) {
    free(values);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  m->info = info;
  m->values = values;
  hm_status st = hm_producer_create(&mem_vtable, m, out);
  if (st != HM_OK) mem_destroy(m);
  return st;
}

hm_status hm_producer_from_floats(const float *data, size_t rows, size_t width, hm_producer **out) {
  if (!data || !out || rows == 0 || width == 0 || width > HM_MAX_WIDTH)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_producer_from_floats: need data, rows > 0 and 0 < width <= %zu",
                    HM_MAX_WIDTH);
  size_t n;
  if (hm__mul_size(rows, width, &n) || hm__mul_size(n, 4, &n) || n > MAX_DATASET_BYTES)
    return hm__fail(HM_STATUS_OUT_OF_RANGE, "hm_producer_from_floats: too large");
  void *copy = malloc(n);
  if (!copy) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  memcpy(copy, data, n);
  hm_producer_info info = {width, rows, HM_ABI_DTYPE_F32, 1.0f, 0};
  return mem_producer_create(info, copy, out);
}

hm_status hm_producer_from_labels(const int32_t *labels, size_t count, size_t num_classes, hm_producer **out) {
  if (!labels || !out || count == 0 || num_classes == 0 || num_classes > HM_MAX_WIDTH)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_producer_from_labels: need labels, count > 0 and num_classes > 0");
  for (size_t i = 0; i < count; i++)
    if (labels[i] < 0 || (size_t)labels[i] >= num_classes)
      return hm__fail(HM_STATUS_INVALID_ARGUMENT, "label %zu is %d, outside [0, %zu)", i, labels[i], num_classes);
  if (count > MAX_DATASET_BYTES / 4) return hm__fail(HM_STATUS_OUT_OF_RANGE, "too many labels");
  void *copy = malloc(count * 4);
  if (!copy) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  memcpy(copy, labels, count * 4);
  hm_producer_info info = {1, count, HM_ABI_DTYPE_I32, 1.0f, num_classes};
  return mem_producer_create(info, copy, out);
}

/* ===== IDX files ===== */

/* An IDX file, gzip-compressed (through zlib) or plain. */
typedef struct idx_stream {
#if HM_HAVE_ZLIB
  gzFile gz;
#endif
  FILE *plain;
} idx_stream;

/* Reads up to n bytes; returns the count, or -1 with a message in |err|. */
static long stream_read(idx_stream *s, void *buf, unsigned n, const char **err) {
#if HM_HAVE_ZLIB
  if (s->gz) {
    int r = gzread(s->gz, buf, n);
    if (r < 0) {
      int e;
      *err = gzerror(s->gz, &e);
    }
    return r;
  }
#endif
  size_t r = fread(buf, 1, n, s->plain);
  if (r < n && ferror(s->plain)) {
    *err = strerror(errno);
    return -1;
  }
  return (long)r;
}

static hm_status gz_read_exact(idx_stream *f, void *buf, size_t n, const char *path, const char *what, size_t offset) {
  size_t got = 0;
  while (got < n) {
    unsigned chunk = n - got > (1u << 30) ? (1u << 30) : (unsigned)(n - got);
    const char *msg = "read error";
    long r = stream_read(f, (char *)buf + got, chunk, &msg);
    if (r < 0) return hm__fail(HM_STATUS_DATA_LOSS, "%s: %s at byte %zu: %s", path, what, offset + got, msg);
    if (r == 0)
      return hm__fail(HM_STATUS_DATA_LOSS, "%s: truncated: %s needs %zu bytes at offset %zu, the file ends after %zu",
                      path, what, n, offset, got);
    got += (size_t)r;
  }
  return HM_OK;
}

static hm_status stream_open(const char *path, idx_stream *s) {
  memset(s, 0, sizeof *s);
  FILE *probe = fopen(path, "rb");
  if (!probe)
    return hm__fail(errno == ENOENT ? HM_STATUS_NOT_FOUND : HM_STATUS_IO_ERROR, "cannot open %s: %s", path,
                    strerror(errno));
#if HM_HAVE_ZLIB
  fclose(probe);
  s->gz = gzopen(path, "rb");
  if (!s->gz) return hm__fail(HM_STATUS_IO_ERROR, "cannot open %s", path);
#else
  unsigned char m[2] = {0, 0};
  size_t r = fread(m, 1, 2, probe);
  if (r == 2 && m[0] == 0x1f && m[1] == 0x8b) {
    fclose(probe);
    return hm__fail(HM_STATUS_UNIMPLEMENTED,
                    "%s is gzip-compressed and this build of Harmonics has no zlib: decompress it (gunzip -k) or rebuild "
                    "with zlib1g-dev",
                    path);
  }
  rewind(probe);
  s->plain = probe;
#endif
  return HM_OK;
}

static void stream_close(idx_stream *s) {
#if HM_HAVE_ZLIB
  if (s->gz) gzclose(s->gz);
#endif
  if (s->plain) fclose(s->plain);
}

hm_status hm_producer_open_idx(const char *path, hm_producer **out) {
  if (!path || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_producer_open_idx: NULL argument");
  idx_stream stream, *f = &stream;
  HM_RETURN_IF_ERROR(stream_open(path, f));
  unsigned char magic[4];
  hm_status st = gz_read_exact(f, magic, 4, path, "the magic number", 0);
  if (st == HM_OK && (magic[0] || magic[1]))
    st = hm__fail(HM_STATUS_DATA_LOSS, "%s: not an IDX file (the magic number must start with two zero bytes)", path);
  if (st == HM_OK && magic[2] != 0x08)
    st = hm__fail(HM_STATUS_UNIMPLEMENTED, "%s: IDX element type 0x%02x is not supported (only 0x08, unsigned byte)",
                  path, magic[2]);
  unsigned ndims = magic[3];
  if (st == HM_OK && (ndims < 1 || ndims > 4))
    st = hm__fail(HM_STATUS_DATA_LOSS, "%s: %u dimensions (1 to 4 supported)", path, ndims);
  size_t dims[4] = {0}, count = 0, width = 1, total = 0;
  for (unsigned d = 0; d < ndims && st == HM_OK; d++) {
    unsigned char b[4];
    st = gz_read_exact(f, b, 4, path, "a dimension", 4 + 4 * d);
    dims[d] = ((size_t)b[0] << 24) | ((size_t)b[1] << 16) | ((size_t)b[2] << 8) | b[3];
    if (st == HM_OK && dims[d] == 0) st = hm__fail(HM_STATUS_DATA_LOSS, "%s: dimension %u is zero", path, d);
  }
  if (st == HM_OK) {
    count = dims[0];
    for (unsigned d = 1; d < ndims; d++)
      if (hm__mul_size(width, dims[d], &width) || width > HM_MAX_WIDTH)
        st = hm__fail(HM_STATUS_DATA_LOSS, "%s: a sample of more than %zu values", path, HM_MAX_WIDTH);
    if (st == HM_OK && (hm__mul_size(count, width, &total) || total > MAX_DATASET_BYTES))
      st = hm__fail(HM_STATUS_DATA_LOSS, "%s: %zu samples of %zu bytes exceed the %zu-byte limit", path, count, width,
                    MAX_DATASET_BYTES);
  }
  unsigned char *bytes = NULL;
  size_t header = 4 + 4 * (size_t)ndims;
  if (st == HM_OK) {
    /* Grow as data arrives, so a lying header cannot make us allocate more
     * than the file actually holds (plus one chunk). */
    size_t cap = 0, got = 0;
    while (st == HM_OK && got < total) {
      size_t want = total - got > (8u << 20) ? (8u << 20) : total - got;
      if (got + want > cap) {
        size_t ncap = cap ? cap * 2 : (8u << 20);
        if (ncap > total) ncap = total;
        if (ncap < got + want) ncap = got + want;
        unsigned char *nb = realloc(bytes, ncap);
        if (!nb) {
          st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory reading %s", path);
          break;
        }
        bytes = nb;
        cap = ncap;
      }
      st = gz_read_exact(f, bytes + got, want, path, "sample data", header + got);
      got += want;
    }
    unsigned char extra;
    const char *ignored = NULL;
    if (st == HM_OK && stream_read(f, &extra, 1, &ignored) > 0)
      st = hm__fail(HM_STATUS_DATA_LOSS, "%s: %zu bytes of data expected after the header, but the file has more", path,
                    total);
  }
  stream_close(f);
  if (st != HM_OK) {
    free(bytes);
    return st;
  }
  if (ndims == 1) {
    /* Labels: class indices, classes = largest label + 1. */
    int32_t *labels = malloc(count * sizeof *labels);
    if (!labels) {
      free(bytes);
      return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    }
    size_t classes = 0;
    for (size_t i = 0; i < count; i++) {
      labels[i] = bytes[i];
      if ((size_t)bytes[i] + 1 > classes) classes = (size_t)bytes[i] + 1;
    }
    free(bytes);
    hm_producer_info info = {1, count, HM_ABI_DTYPE_I32, 1.0f, classes};
    return mem_producer_create(info, labels, out);
  }
  hm_producer_info info = {width, count, HM_ABI_DTYPE_U8, 1.0f / 255.0f, 0};
  return mem_producer_create(info, bytes, out);
}

/* ===== CSV ===== */

static int parse_field(const char *s, size_t n, float *out) {
  while (n && isspace((unsigned char)*s)) s++, n--;
  while (n && isspace((unsigned char)s[n - 1])) n--;
  if (n == 0 || n > 63) return 0;
  char tmp[64];
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  char *end;
  errno = 0;
  double v = strtod(tmp, &end);
  if (*end || errno == ERANGE || !isfinite(v) || fabs(v) > 3.4e38) return 0;
  *out = (float)v;
  return 1;
}

hm_status hm_producer_open_csv(const char *path, hm_producer **out) {
  if (!path || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_producer_open_csv: NULL argument");
  char *text = NULL;
  size_t len = 0;
  HM_RETURN_IF_ERROR(hm__read_file(path, MAX_DATASET_BYTES, &text, &len));
  float *values = NULL;
  size_t n_values = 0, cap = 0, width = 0, rows = 0;
  hm_status st = HM_OK;
  int line = 0;
  for (size_t pos = 0; pos < len && st == HM_OK;) {
    size_t end = pos;
    while (end < len && text[end] != '\n') end++;
    line++;
    size_t lend = end;
    if (lend > pos && text[lend - 1] == '\r') lend--;
    size_t k = pos;
    while (k < lend && isspace((unsigned char)text[k])) k++;
    if (k < lend) {
      /* Split the line. */
      size_t fields = 0, start = pos;
      int numeric = 1;
      size_t mark = n_values;
      for (size_t i = pos; i <= lend && st == HM_OK; i++) {
        if (i < lend && text[i] != ',') continue;
        float v;
        if (!parse_field(text + start, i - start, &v)) numeric = 0;
        else {
          if (n_values == cap) {
            size_t ncap = cap ? cap * 2 : 1024;
            float *nv = realloc(values, ncap * sizeof *nv);
            if (!nv) st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory reading %s", path);
            else {
              values = nv;
              cap = ncap;
            }
          }
          if (st == HM_OK) values[n_values++] = v;
        }
        fields++;
        start = i + 1;
      }
      if (st != HM_OK) break;
      if (!numeric) {
        n_values = mark;
        if (rows == 0 && width == 0) {
          width = fields; /* a header line fixes the width too */
        } else {
          st = hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d: a field is not a finite number", path, line);
          break;
        }
      } else {
        if (width && fields != width) {
          st = hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d: expected %zu fields, got %zu", path, line, width, fields);
          break;
        }
        width = fields;
        rows++;
      }
    }
    pos = end + 1;
  }
  free(text);
  if (st == HM_OK && rows == 0) st = hm__fail(HM_STATUS_PARSE_ERROR, "%s: no data rows", path);
  if (st == HM_OK && width > HM_MAX_WIDTH) st = hm__fail(HM_STATUS_OUT_OF_RANGE, "%s: %zu fields per row", path, width);
  if (st != HM_OK) {
    free(values);
    return st;
  }
  hm_producer_info info = {width, rows, HM_ABI_DTYPE_F32, 1.0f, 0};
  return mem_producer_create(info, values, out);
}

/* ===== Limit ===== */

typedef struct limit_producer {
  hm_producer *base;
  size_t limit, pos;
} limit_producer;

static hm_status limit_info(void *self, hm_producer_info *out) {
  limit_producer *l = self;
  HM_RETURN_IF_ERROR(hm_producer_info_get(l->base, out));
  if (out->count > l->limit) out->count = l->limit;
  return HM_OK;
}

static hm_status limit_next(void *self, size_t max_rows, void *out, size_t *rows) {
  limit_producer *l = self;
  size_t left = l->limit - l->pos;
  if (max_rows > left) max_rows = left;
  *rows = 0;
  if (max_rows == 0) return HM_OK;
  HM_RETURN_IF_ERROR(hm_producer_next_batch(l->base, max_rows, out, rows));
  l->pos += *rows;
  return HM_OK;
}

static hm_status limit_reset(void *self) {
  limit_producer *l = self;
  l->pos = 0;
  return hm_producer_reset(l->base);
}

static const hm_producer_vtable limit_vtable = {sizeof(hm_producer_vtable), limit_info, limit_next, limit_reset, free};

hm_status hm_producer_limit(hm_producer *base, size_t limit, hm_producer **out) {
  if (!base || !out || limit == 0) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_producer_limit: need a base and limit > 0");
  limit_producer *l = calloc(1, sizeof *l);
  if (!l) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  l->base = base;
  l->limit = limit;
  hm_status st = hm_producer_create(&limit_vtable, l, out);
  if (st != HM_OK) free(l);
  return st;
}

/* ===== Consumers ===== */

hm_status hm_consumer_create(const hm_consumer_vtable *vt, void *self, hm_consumer **out) {
  if (!vt || !out || vt->struct_size < sizeof *vt || !vt->push)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_consumer_create: vtable needs struct_size and push");
  hm_consumer *c = calloc(1, sizeof *c);
  if (!c) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  c->vt = vt;
  c->self = self;
  *out = c;
  return HM_OK;
}

void hm_consumer_free(hm_consumer *c) {
  if (!c) return;
  if (c->vt->destroy) c->vt->destroy(c->self);
  free(c);
}

hm_status hm_consumer_push(hm_consumer *c, const float *values, size_t rows, size_t width) {
  if (!c || (rows && !values)) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "NULL consumer argument");
  return c->vt->push(c->self, values, rows, width);
}

typedef struct array_consumer {
  float *values;
  size_t rows, width, cap;
} array_consumer;

static hm_status array_push(void *self, const float *values, size_t rows, size_t width) {
  array_consumer *a = self;
  if (a->rows && width != a->width)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "array consumer: width %zu after %zu", width, a->width);
  size_t need = (a->rows + rows) * width;
  if (need > a->cap) {
    size_t cap = a->cap ? a->cap : 1024;
    while (cap < need) cap *= 2;
    float *nv = realloc(a->values, cap * sizeof *nv);
    if (!nv) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    a->values = nv;
    a->cap = cap;
  }
  memcpy(a->values + a->rows * width, values, rows * width * sizeof(float));
  a->rows += rows;
  a->width = width;
  return HM_OK;
}

static void array_destroy(void *self) {
  array_consumer *a = self;
  if (!a) return;
  free(a->values);
  free(a);
}

static const hm_consumer_vtable array_vtable = {sizeof(hm_consumer_vtable), array_push, array_destroy};

hm_status hm_consumer_create_array(hm_consumer **out) {
  array_consumer *a = calloc(1, sizeof *a);
  if (!a) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  hm_status st = hm_consumer_create(&array_vtable, a, out);
  if (st != HM_OK) free(a);
  return st;
}

hm_status hm_consumer_array_values(const hm_consumer *c, const float **values, size_t *rows, size_t *width) {
  if (!c || c->vt != &array_vtable) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "not an array consumer");
  const array_consumer *a = c->self;
  if (values) *values = a->values;
  if (rows) *rows = a->rows;
  if (width) *width = a->width;
  return HM_OK;
}
