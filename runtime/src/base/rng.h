/*
 * Deterministic random numbers (splitmix64 seeding a xoshiro256**), the same
 * on every platform: weight initialisation and shuffling depend only on the
 * seed, never on the library or thread count.
 */
#ifndef HM_RNG_H_
#define HM_RNG_H_

#include <stddef.h>
#include <stdint.h>

typedef struct hm_rng {
  uint64_t s[4];
} hm_rng;

void hm__rng_seed(hm_rng *r, uint64_t seed);
/* Seeds from (seed, name) so each tensor's stream is independent of order. */
void hm__rng_seed_named(hm_rng *r, uint64_t seed, const char *name);
uint64_t hm__rng_next(hm_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double hm__rng_uniform(hm_rng *r);
/* Uniform integer in [0, n) without modulo bias. */
uint64_t hm__rng_below(hm_rng *r, uint64_t n);
/* Fisher-Yates permutation of 0..n-1 into |out|. */
void hm__rng_permutation(hm_rng *r, int32_t *out, size_t n);

#endif /* HM_RNG_H_ */
