/*
 * Precision policies: which precision and kernel the matmul of each
 * connection with weights uses, chosen from the capabilities the selected
 * device declares (DESIGN.md §5). Policies are plain values; no cleanup is
 * needed.
 */
#ifndef HARMONICS_POLICY_H_
#define HARMONICS_POLICY_H_

#include <stddef.h>

#include "harmonics/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HM_POLICY_MAX_CONNECTIONS 64

typedef enum hm_policy_kind {
  HM_POLICY_HARDWARE = 0,        /* the device's native f32 */
  HM_POLICY_AUTO = 1,            /* mixed precision where the device declares fast 16-bit math */
  HM_POLICY_MAX_BITS = 2,        /* every matmul at |bits| (8, 4 or 3) */
  HM_POLICY_CONNECTION_BITS = 3, /* one width per connection with weights */
  HM_POLICY_LAYER_BITS = HM_POLICY_CONNECTION_BITS /* DESIGN.md's name for it */
} hm_policy_kind;

typedef struct hm_policy {
  size_t struct_size;
  hm_policy_kind kind;
  int bits; /* MAX_BITS */
  /* CONNECTION_BITS: exactly one width (32 = f32, 8, 4, 3) per connection
   * with weights, in graph order (hm_graph_connection order, skipping
   * connections without weights); a different count is an error when the
   * policy meets the graph (fit, inference). */
  int connection_bits[HM_POLICY_MAX_CONNECTIONS];
  size_t n_connection_bits;
} hm_policy;

HM_API hm_policy hm_make_hardware_policy(void);
HM_API hm_policy hm_make_auto_policy(void);
HM_API hm_policy hm_make_max_bits_policy(int bits);
/* One width per connection with weights, in graph order. More than
 * HM_POLICY_MAX_CONNECTIONS entries make a policy that fit and inference
 * refuse (as does a count that does not match the graph). */
HM_API hm_policy hm_make_connection_bits_policy(const int *bits, size_t n);
/* The same policy under the name DESIGN.md gives it ("per-layer bit widths":
 * a layer's width is set by the connection that feeds it). */
HM_API hm_policy hm_make_layer_bits_policy(const int *bits, size_t n);

/* Device bytes of the weight matrix of a connection with |inputs| inputs and
 * |outputs| outputs stored at |bits|: 32 is f32 (4 bytes a weight); 8, 4 and 3
 * are abi/QUANT.md blocks, each row padded to whole 64-value blocks with one
 * f16 scale a block (66, 34 and 26 bytes a block). So a packed weight costs
 * (8 * block bytes / 64) * (64 * ceil(inputs / 64) / inputs) bits: 8.25, 4.25
 * and 3.25 bits times the padding factor. 0 for any other width. */
HM_API size_t hm_policy_matrix_bytes(int bits, size_t outputs, size_t inputs);

/* Parses "hardware", "auto", "bits:8", "connections:8,4,3" (also spelled
 * "layers:8,4,3"). PARSE_ERROR otherwise. */
HM_API HM_MUST_USE hm_status hm_policy_parse(const char *text, hm_policy *out);
/* Writes the canonical text of |p| ("bits:3") into |buf|. */
HM_API void hm_policy_format(const hm_policy *p, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_POLICY_H_ */
