/* IDX files (MNIST's format), gzip-compressed through zlib or plain. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if HM_HAVE_ZLIB
#include <zlib.h>
#endif

#include "data/data.h"
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
    if (st == HM_OK && (hm__mul_size(count, width, &total) || total > HM_MAX_DATASET_BYTES))
      st = hm__fail(HM_STATUS_DATA_LOSS, "%s: %zu samples of %zu bytes exceed the %zu-byte limit", path, count, width,
                    HM_MAX_DATASET_BYTES);
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
        unsigned char *nb = hm__realloc(bytes, ncap);
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
    hm__free(bytes);
    return st;
  }
  if (ndims == 1) {
    /* Labels: class indices, classes = largest label + 1. */
    int32_t *labels = hm__malloc(count * sizeof *labels);
    if (!labels) {
      hm__free(bytes);
      return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    }
    size_t classes = 0;
    for (size_t i = 0; i < count; i++) {
      labels[i] = bytes[i];
      if ((size_t)bytes[i] + 1 > classes) classes = (size_t)bytes[i] + 1;
    }
    hm__free(bytes);
    hm_producer_info info = {1, count, HM_ABI_DTYPE_I32, 1.0f, classes, {0, 0, 0}};
    return hm__producer_from_memory(info, labels, out);
  }
  /* [count, H, W] is a set of one-channel images. */
  hm_producer_info info = {width, count, HM_ABI_DTYPE_U8, 1.0f / 255.0f, 0, {0, 0, 0}};
  if (ndims == 3) {
    info.shape[0] = 1;
    info.shape[1] = dims[1];
    info.shape[2] = dims[2];
  }
  return hm__producer_from_memory(info, bytes, out);
}
