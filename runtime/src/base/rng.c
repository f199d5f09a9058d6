/* xoshiro256** seeded by splitmix64 (public-domain algorithms by Vigna). */
#include "base/rng.h"

static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void hm__rng_seed(hm_rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++) r->s[i] = splitmix(&seed);
}

void hm__rng_seed_named(hm_rng *r, uint64_t seed, const char *name) {
  uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
  hm__rng_seed(r, seed ^ h);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t hm__rng_next(hm_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double hm__rng_uniform(hm_rng *r) { return (double)(hm__rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }

uint64_t hm__rng_below(hm_rng *r, uint64_t n) {
  if (n <= 1) return 0;
  uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t v;
  do v = hm__rng_next(r);
  while (v >= limit);
  return v % n;
}

void hm__rng_permutation(hm_rng *r, int32_t *out, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = (int32_t)i;
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)hm__rng_below(r, i);
    int32_t t = out[i - 1];
    out[i - 1] = out[j];
    out[j] = t;
  }
}
