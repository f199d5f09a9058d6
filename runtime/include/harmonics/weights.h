/*
 * Named tensors: a model's weights ("a->b.weight", "a->b.bias") and an
 * optimizer's state, with safetensors import and export.
 */
#ifndef HARMONICS_WEIGHTS_H_
#define HARMONICS_WEIGHTS_H_

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "harmonics/harmonics_abi.h"
#include "harmonics/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HM_TENSOR_MAX_RANK 4

/* A view of one tensor. Pointers are borrowed from the owning hm_weights and
 * stay valid until it is modified or freed. */
typedef struct hm_tensor {
  const char *name;
  uint32_t dtype; /* hm_abi_dtype: F32, F16, BF16, F64, I32, I64, I8, U8 */
  uint32_t rank;
  uint64_t shape[HM_TENSOR_MAX_RANK];
  void *data;
  size_t bytes;
} hm_tensor;

typedef struct hm_weights hm_weights;

/* An empty set. Caller frees with hm_weights_free. */
HM_API HM_MUST_USE hm_status hm_weights_create(hm_weights **out);
HM_API void hm_weights_free(hm_weights *w);
/* A deep copy. */
HM_API HM_MUST_USE hm_status hm_weights_clone(const hm_weights *w, hm_weights **out);
/* Adds (or replaces) a tensor, copying |data| (may be NULL: zero-filled).
 * INVALID_ARGUMENT for a bad name, dtype or shape. */
HM_API HM_MUST_USE hm_status hm_weights_set(hm_weights *w, const char *name, uint32_t dtype, uint32_t rank,
                                            const uint64_t *shape, const void *data);
HM_API size_t hm_weights_count(const hm_weights *w);
/* Tensor |index| in insertion order. */
HM_API HM_MUST_USE hm_status hm_weights_at(const hm_weights *w, size_t index, hm_tensor *out);
/* NOT_FOUND when absent. */
HM_API HM_MUST_USE hm_status hm_weights_find(const hm_weights *w, const char *name, hm_tensor *out);

/* Safetensors (https://github.com/huggingface/safetensors): an 8-byte
 * little-endian header length, a JSON header {name: {dtype, shape,
 * data_offsets}, "__metadata__": {...}}, then the raw little-endian data.
 * Saving writes a temporary file and renames it over |path|. */
HM_API HM_MUST_USE hm_status hm_weights_save_safetensors(const hm_weights *w, const char *path);
/* Loading validates the header, every offset and every shape against the
 * file's size before allocating; DATA_LOSS names the file and the tensor. */
HM_API HM_MUST_USE hm_status hm_weights_load_safetensors(const char *path, hm_weights **out);
/* The same from a seekable stream (a file, fmemopen). */
HM_API HM_MUST_USE hm_status hm_weights_read_safetensors(FILE *f, hm_weights **out);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_WEIGHTS_H_ */
