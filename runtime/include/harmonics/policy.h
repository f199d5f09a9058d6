/*
 * Precision policies: which precision and kernel each layer's matmuls use,
 * chosen from the capabilities the selected device declares (DESIGN.md §5).
 * Policies are plain values; no cleanup is needed.
 */
#ifndef HARMONICS_POLICY_H_
#define HARMONICS_POLICY_H_

#include <stddef.h>

#include "harmonics/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HM_POLICY_MAX_LAYERS 64

typedef enum hm_policy_kind {
  HM_POLICY_HARDWARE = 0,   /* the device's native f32 */
  HM_POLICY_AUTO = 1,       /* mixed precision where the device declares fast 16-bit math */
  HM_POLICY_MAX_BITS = 2,   /* every matmul at |bits| (8, 4 or 3) */
  HM_POLICY_LAYER_BITS = 3  /* per-layer bits */
} hm_policy_kind;

typedef struct hm_policy {
  size_t struct_size;
  hm_policy_kind kind;
  int bits;                             /* MAX_BITS */
  int layer_bits[HM_POLICY_MAX_LAYERS]; /* LAYER_BITS: one per connection, in graph order */
  size_t n_layer_bits;                  /* the last entry repeats for further layers */
} hm_policy;

HM_API hm_policy hm_make_hardware_policy(void);
HM_API hm_policy hm_make_auto_policy(void);
HM_API hm_policy hm_make_max_bits_policy(int bits);
/* At most HM_POLICY_MAX_LAYERS entries are kept. */
HM_API hm_policy hm_make_layer_bits_policy(const int *bits, size_t n);
/* Parses "hardware", "auto", "bits:8", "layers:8,4,3". PARSE_ERROR otherwise. */
HM_API HM_MUST_USE hm_status hm_policy_parse(const char *text, hm_policy *out);
/* Writes the canonical text of |p| ("bits:3") into |buf|. */
HM_API void hm_policy_format(const hm_policy *p, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_POLICY_H_ */
