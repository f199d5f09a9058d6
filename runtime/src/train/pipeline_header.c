/*
 * The pipeline's message header as bytes (harmonics/pipeline.h,
 * docs/formats.md): the only thing Harmonics itself puts on a wire. 64
 * bytes, little-endian:
 *   0 magic "HMPB"   4 u16 version (1)   6 u16 kind   8 u32 boundary
 *   12 u32 micro_batch   16 u64 step   24 u32 dtype   28 u32 reserved (0)
 *   32 u64 rows   40 u64 width   48 u64 bytes   56 u32 reserved (0)
 *   60 u32 CRC32C of bytes 0..59
 */
#include <stdio.h>
#include <string.h>

#include "harmonics/names.h"
#include "harmonics/pipeline.h"
#include "base/container.h"

#define HEADER_VERSION 1

static void put32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint64_t get64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

void hm_boundary_header_encode(const hm_boundary_header *h, unsigned char out[HM_BOUNDARY_HEADER_BYTES]) {
  memset(out, 0, HM_BOUNDARY_HEADER_BYTES);
  memcpy(out, "HMPB", 4);
  out[4] = HEADER_VERSION;
  out[6] = (unsigned char)h->kind;
  out[7] = (unsigned char)(h->kind >> 8);
  put32(out + 8, h->boundary);
  put32(out + 12, h->micro_batch);
  put64(out + 16, h->step);
  put32(out + 24, h->dtype);
  put64(out + 32, h->rows);
  put64(out + 40, h->width);
  put64(out + 48, h->bytes);
  put32(out + 60, hm__crc32c(0, out, 60));
}

hm_status hm_boundary_header_decode(const unsigned char in[HM_BOUNDARY_HEADER_BYTES], hm_boundary_header *h) {
  if (!in || !h) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_boundary_header_decode: NULL argument");
  if (memcmp(in, "HMPB", 4) != 0)
    return hm__fail(HM_STATUS_DATA_LOSS, "pipeline message: not a Harmonics header (magic %02x %02x %02x %02x)", in[0],
                    in[1], in[2], in[3]);
  uint32_t version = (uint32_t)in[4] | (uint32_t)in[5] << 8;
  if (version != HEADER_VERSION)
    return hm__fail(HM_STATUS_INCOMPATIBLE, "pipeline message: header version %u, this build reads %d", version,
                    HEADER_VERSION);
  uint32_t crc = hm__crc32c(0, in, 60);
  if (crc != get32(in + 60))
    return hm__fail(HM_STATUS_DATA_LOSS, "pipeline message: header checksum %08x, expected %08x (corrupted in transit)",
                    get32(in + 60), crc);
  h->kind = (uint32_t)in[6] | (uint32_t)in[7] << 8;
  h->boundary = get32(in + 8);
  h->micro_batch = get32(in + 12);
  h->step = get64(in + 16);
  h->dtype = get32(in + 24);
  h->rows = get64(in + 32);
  h->width = get64(in + 40);
  h->bytes = get64(in + 48);
  return HM_OK;
}

static const char *kind_name(uint32_t kind) {
  static const char *const names[HM_PIPE_KIND_COUNT] = {"forward", "backward", "evaluation", "control", "weights"};
  return kind < HM_PIPE_KIND_COUNT ? names[kind] : "unknown-kind";
}

void hm_boundary_header_format(const hm_boundary_header *h, char *buf, size_t cap) {
  const char *dt = h->dtype == HM_ABI_DTYPE_F32 ? "f32" : h->dtype == HM_ABI_DTYPE_U8 ? "u8" : "other-dtype";
  if (h->kind == HM_PIPE_CONTROL)
    snprintf(buf, cap, "control message %u, step %llu, %llu bytes", h->boundary, (unsigned long long)h->step,
             (unsigned long long)h->bytes);
  else if (h->kind == HM_PIPE_WEIGHTS)
    snprintf(buf, cap, "weights tensor %u, %llux%llu %s", h->boundary, (unsigned long long)h->rows,
             (unsigned long long)h->width, dt);
  else
    snprintf(buf, cap, "boundary%u %s, step %llu, %s %u, %llux%llu %s", h->boundary, kind_name(h->kind),
             (unsigned long long)h->step, h->kind == HM_PIPE_EVAL ? "evaluation batch" : "micro-batch", h->micro_batch,
             (unsigned long long)h->rows, (unsigned long long)h->width, dt);
}
