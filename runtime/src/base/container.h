/*
 * The envelope shared by Harmonics' binary files (.hgr graphs, .hnwt
 * weights, .hck checkpoints), documented byte by byte in docs/formats.md:
 *
 *   0  magic[8]          "HMGRAPH1", "HMWEIGHT", "HMCHKPT1"
 *   8  u32 version       format version (this build writes and reads <= 1)
 *  12  u32 flags         0
 *  16  u64 payload_len   bytes after the 32-byte header; file = 32 + this
 *  24  u32 header_crc    CRC32C of bytes 0..23
 *  28  u32 payload_crc   CRC32C of the payload
 *  32  payload
 *
 * All integers little-endian. Readers check the size, magic, version and
 * both checksums before decoding anything, and decode through a cursor that
 * refuses to read past the payload, so a count can never make us allocate
 * more than the file's remaining bytes could describe.
 */
#ifndef HM_CONTAINER_H_
#define HM_CONTAINER_H_

#include <stdint.h>
#include <stdio.h>

#include "base/base.h"
#include "harmonics/status.h"

#define HM_CONTAINER_HEADER 32

uint32_t hm__crc32c(uint32_t crc, const void *data, size_t n);

/* ===== Writing: build the payload in memory, then emit ===== */

typedef struct hm_bytes {
  unsigned char *data;
  size_t len, cap;
  int failed;
} hm_bytes;

void hm__bytes_u8(hm_bytes *b, uint8_t v);
void hm__bytes_u32(hm_bytes *b, uint32_t v);
void hm__bytes_i32(hm_bytes *b, int32_t v);
void hm__bytes_u64(hm_bytes *b, uint64_t v);
void hm__bytes_f32(hm_bytes *b, float v);
void hm__bytes_f64(hm_bytes *b, double v);
void hm__bytes_raw(hm_bytes *b, const void *data, size_t n);
/* u32 length + bytes (no terminator). */
void hm__bytes_str(hm_bytes *b, const char *s);
void hm__bytes_free(hm_bytes *b);

/* Writes header + payload to |f|. |what| names the destination in errors. */
hm_status hm__container_write(FILE *f, const char magic[8], uint32_t version, const hm_bytes *payload, const char *what);

/* ===== Reading ===== */

typedef struct hm_reader {
  const unsigned char *data;
  size_t len, pos;
  size_t base;       /* file offset of data[0], for messages */
  const char *what;  /* the file's name, for messages */
  hm_status status;  /* first error; reads after an error return zeros */
} hm_reader;

/* Reads all of |f| (at most |max_bytes|, growing the buffer only as data
 * arrives), validates the envelope and sets |r| over the payload. The caller
 * frees *owned. INCOMPATIBLE for a newer version, DATA_LOSS otherwise. */
hm_status hm__container_read(FILE *f, const char magic[8], uint32_t max_version, size_t max_bytes, const char *what,
                             unsigned char **owned, hm_reader *r, uint32_t *version);
/* The same from memory (fuzzers). */
hm_status hm__container_open(const unsigned char *data, size_t len, const char magic[8], uint32_t max_version,
                             const char *what, hm_reader *r, uint32_t *version);

uint8_t hm__read_u8(hm_reader *r, const char *field);
uint32_t hm__read_u32(hm_reader *r, const char *field);
int32_t hm__read_i32(hm_reader *r, const char *field);
uint64_t hm__read_u64(hm_reader *r, const char *field);
float hm__read_f32(hm_reader *r, const char *field);
double hm__read_f64(hm_reader *r, const char *field);
/* Pointer to |n| bytes inside the payload (NULL on error). */
const unsigned char *hm__read_raw(hm_reader *r, size_t n, const char *field);
/* A malloc'ed string of at most |max_len| bytes, without NULs. */
char *hm__read_str(hm_reader *r, size_t max_len, const char *field);
/* A count that must satisfy count * min_item_bytes <= remaining and <= limit. */
size_t hm__read_count(hm_reader *r, size_t min_item_bytes, size_t limit, const char *field);
/* Records a DATA_LOSS at the current offset ("file: offset N: <message>"). */
hm_status hm__reader_fail(hm_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same for a step that failed with |inner| (its hm_last_error() is
 * usually in the message): out of memory stays RESOURCE_EXHAUSTED, since
 * the file is not at fault; anything else is DATA_LOSS. */
hm_status hm__reader_fail_from(hm_reader *r, hm_status inner, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Fails unless the whole payload was consumed. */
hm_status hm__reader_finish(hm_reader *r);

#endif /* HM_CONTAINER_H_ */
