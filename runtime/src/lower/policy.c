/*
 * Precision policies as plain values, and their text form for the CLI
 * ("hardware", "auto", "bits:N", "layers:a,b,..."). What a policy means on a
 * device is decided by the precision plan (precision.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harmonics/policy.h"
#include "base/base.h"

static hm_policy base(hm_policy_kind kind) {
  hm_policy p;
  memset(&p, 0, sizeof p);
  p.struct_size = sizeof p;
  p.kind = kind;
  return p;
}

hm_policy hm_make_hardware_policy(void) { return base(HM_POLICY_HARDWARE); }
hm_policy hm_make_auto_policy(void) { return base(HM_POLICY_AUTO); }

hm_policy hm_make_max_bits_policy(int bits) {
  hm_policy p = base(HM_POLICY_MAX_BITS);
  p.bits = bits;
  return p;
}

hm_policy hm_make_layer_bits_policy(const int *bits, size_t n) {
  hm_policy p = base(HM_POLICY_LAYER_BITS);
  if (n > HM_POLICY_MAX_LAYERS) n = HM_POLICY_MAX_LAYERS;
  for (size_t i = 0; bits && i < n; i++) p.layer_bits[i] = bits[i];
  p.n_layer_bits = bits ? n : 0;
  return p;
}

static int parse_bits(const char *s, char **end) {
  errno = 0;
  long v = strtol(s, end, 10);
  if (errno || *end == s || v < 1 || v > 64) return -1;
  return (int)v;
}

hm_status hm_policy_parse(const char *text, hm_policy *out) {
  if (!text || !out) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_policy_parse: NULL argument");
  if (strcmp(text, "hardware") == 0) {
    *out = hm_make_hardware_policy();
    return HM_OK;
  }
  if (strcmp(text, "auto") == 0) {
    *out = hm_make_auto_policy();
    return HM_OK;
  }
  char *end;
  if (strncmp(text, "bits:", 5) == 0) {
    int b = parse_bits(text + 5, &end);
    if (b < 0 || *end) return hm__fail(HM_STATUS_PARSE_ERROR, "policy '%s': expected bits:N", text);
    *out = hm_make_max_bits_policy(b);
    return HM_OK;
  }
  if (strncmp(text, "layers:", 7) == 0) {
    int bits[HM_POLICY_MAX_LAYERS];
    size_t n = 0;
    const char *p = text + 7;
    for (;;) {
      if (n == HM_POLICY_MAX_LAYERS)
        return hm__fail(HM_STATUS_PARSE_ERROR, "policy '%s': more than %d layers", text, HM_POLICY_MAX_LAYERS);
      int b = parse_bits(p, &end);
      if (b < 0) return hm__fail(HM_STATUS_PARSE_ERROR, "policy '%s': expected layers:B,B,...", text);
      bits[n++] = b;
      if (*end == '\0') break;
      if (*end != ',') return hm__fail(HM_STATUS_PARSE_ERROR, "policy '%s': expected ',' between bit widths", text);
      p = end + 1;
    }
    *out = hm_make_layer_bits_policy(bits, n);
    return HM_OK;
  }
  return hm__fail(HM_STATUS_PARSE_ERROR, "unknown policy '%s' (hardware, auto, bits:8|4|3, layers:8,4,3)", text);
}

void hm_policy_format(const hm_policy *p, char *buf, size_t cap) {
  if (!p || !cap) return;
  switch (p->kind) {
    case HM_POLICY_HARDWARE: snprintf(buf, cap, "hardware"); return;
    case HM_POLICY_AUTO: snprintf(buf, cap, "auto"); return;
    case HM_POLICY_MAX_BITS: snprintf(buf, cap, "bits:%d", p->bits); return;
    case HM_POLICY_LAYER_BITS: {
      size_t len = (size_t)snprintf(buf, cap, "layers:");
      for (size_t i = 0; i < p->n_layer_bits && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%d", i ? "," : "", p->layer_bits[i]);
      return;
    }
  }
  snprintf(buf, cap, "?");
}
