/*
 * Precision policies as plain values, and their text form for the CLI
 * ("hardware", "auto", "bits:N", "connections:a,b,..."). What a policy means on a
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

hm_policy hm_make_connection_bits_policy(const int *bits, size_t n) {
  hm_policy p = base(HM_POLICY_CONNECTION_BITS);
  /* Keeps the count as given so that the policy check can refuse too many
   * entries instead of dropping them. */
  for (size_t i = 0; bits && i < n && i < HM_POLICY_MAX_CONNECTIONS; i++) p.connection_bits[i] = bits[i];
  p.n_connection_bits = bits ? n : 0;
  return p;
}

hm_policy hm_make_layer_bits_policy(const int *bits, size_t n) { return hm_make_connection_bits_policy(bits, n); }

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
  size_t prefix = strncmp(text, "connections:", 12) == 0 ? 12 : strncmp(text, "layers:", 7) == 0 ? 7 : 0;
  if (prefix) {
    int bits[HM_POLICY_MAX_CONNECTIONS];
    size_t n = 0;
    const char *p = text + prefix;
    for (;;) {
      if (n == HM_POLICY_MAX_CONNECTIONS)
        return hm__fail(HM_STATUS_PARSE_ERROR, "policy '%s': more than %d connections", text,
                        HM_POLICY_MAX_CONNECTIONS);
      int b = parse_bits(p, &end);
      if (b < 0) return hm__fail(HM_STATUS_PARSE_ERROR, "policy '%s': expected connections:B,B,...", text);
      bits[n++] = b;
      if (*end == '\0') break;
      if (*end != ',') return hm__fail(HM_STATUS_PARSE_ERROR, "policy '%s': expected ',' between bit widths", text);
      p = end + 1;
    }
    *out = hm_make_connection_bits_policy(bits, n);
    return HM_OK;
  }
  return hm__fail(HM_STATUS_PARSE_ERROR, "unknown policy '%s' (hardware, auto, bits:8|4|3, connections:8,4,3)", text);
}

void hm_policy_format(const hm_policy *p, char *buf, size_t cap) {
  if (!p || !cap) return;
  switch (p->kind) {
    case HM_POLICY_HARDWARE: snprintf(buf, cap, "hardware"); return;
    case HM_POLICY_AUTO: snprintf(buf, cap, "auto"); return;
    case HM_POLICY_MAX_BITS: snprintf(buf, cap, "bits:%d", p->bits); return;
    case HM_POLICY_CONNECTION_BITS: {
      size_t len = (size_t)snprintf(buf, cap, "connections:");
      for (size_t i = 0; i < p->n_connection_bits && i < HM_POLICY_MAX_CONNECTIONS && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%d", i ? "," : "", p->connection_bits[i]);
      return;
    }
  }
  snprintf(buf, cap, "?");
}
