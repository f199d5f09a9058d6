/*
 * Producers (where samples come from) and consumers (where inference
 * results go), as C interfaces with built-in implementations: IDX files
 * (MNIST layout, gzip or raw), CSV files and in-memory arrays.
 *
 * A producer yields samples of a fixed width in one storage type:
 *   F32 — floats;
 *   U8  — bytes, multiplied by |scale| when gathered (pixels: 1/255);
 *   I32 — class indices (width 1), with |num_classes| classes.
 * The training loop reads every sample of a producer once (reset, then
 * next_batch until it returns 0 rows), keeps them on the device and draws
 * shuffled mini-batches from them.
 */
#ifndef HARMONICS_DATA_H_
#define HARMONICS_DATA_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics/harmonics_abi.h"
#include "harmonics/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hm_producer_info {
  size_t width;       /* values per sample (1 for class indices) */
  size_t count;       /* samples */
  uint32_t dtype;     /* HM_ABI_DTYPE_F32, U8 or I32 */
  float scale;        /* U8: multiplier applied when gathered; else 1 */
  size_t num_classes; /* I32: number of classes (indices lie in [0, num_classes)) */
  /* Each sample's image shape {C, H, W} when the data has one (IDX files of
   * [count, H, W] give {1, H, W}), so a producer with no declared shape can
   * feed a convolution; all zero otherwise. C * H * W must equal width. */
  size_t shape[3];
} hm_producer_info;

typedef struct hm_producer_vtable {
  size_t struct_size;
  /* (required) Describes the samples. */
  hm_status (*info)(void *self, hm_producer_info *out);
  /* (required) Copies up to |max_rows| samples in the storage type into
   * |out| and sets *rows (0 at the end). */
  hm_status (*next_batch)(void *self, size_t max_rows, void *out, size_t *rows);
  /* (required) Starts again from the first sample. */
  hm_status (*reset)(void *self);
  /* (optional) Frees |self| when the producer is freed. */
  void (*destroy)(void *self);
} hm_producer_vtable;

typedef struct hm_producer hm_producer;

/* Wraps a user implementation; |vtable| must outlive the producer. */
HM_API HM_MUST_USE hm_status hm_producer_create(const hm_producer_vtable *vtable, void *self, hm_producer **out);
HM_API void hm_producer_free(hm_producer *p);
HM_API HM_MUST_USE hm_status hm_producer_info_get(hm_producer *p, hm_producer_info *out);
HM_API HM_MUST_USE hm_status hm_producer_next_batch(hm_producer *p, size_t max_rows, void *out, size_t *rows);
HM_API HM_MUST_USE hm_status hm_producer_reset(hm_producer *p);

/* IDX file (MNIST/Fashion-MNIST layout; gzip'ed or raw): unsigned-byte data
 * only. Images (3+ dims) become U8 samples of width = product of the inner
 * dims with scale 1/255; labels (1 dim) become I32 class indices. */
HM_API HM_MUST_USE hm_status hm_producer_open_idx(const char *path, hm_producer **out);
/* CSV of numbers, one sample per line; a first line that is not numeric is a
 * header. Every line has the same number of fields. */
HM_API HM_MUST_USE hm_status hm_producer_open_csv(const char *path, hm_producer **out);
/* |rows| x |width| floats (copied). */
HM_API HM_MUST_USE hm_status hm_producer_from_floats(const float *data, size_t rows, size_t width, hm_producer **out);
/* Class indices in [0, num_classes) (copied). */
HM_API HM_MUST_USE hm_status hm_producer_from_labels(const int32_t *labels, size_t count, size_t num_classes,
                                                     hm_producer **out);
/* The first |limit| samples of |base| (borrowed; must outlive the result). */
HM_API HM_MUST_USE hm_status hm_producer_limit(hm_producer *base, size_t limit, hm_producer **out);

/* ===== Consumers ===== */

typedef struct hm_consumer_vtable {
  size_t struct_size;
  /* (required) Receives |rows| x |width| floats of inference output. */
  hm_status (*push)(void *self, const float *values, size_t rows, size_t width);
  void (*destroy)(void *self);
} hm_consumer_vtable;

typedef struct hm_consumer hm_consumer;

HM_API HM_MUST_USE hm_status hm_consumer_create(const hm_consumer_vtable *vtable, void *self, hm_consumer **out);
/* A consumer that keeps everything pushed to it in memory. */
HM_API HM_MUST_USE hm_status hm_consumer_create_array(hm_consumer **out);
/* The values an array consumer holds (borrowed until the next push/free). */
HM_API HM_MUST_USE hm_status hm_consumer_array_values(const hm_consumer *c, const float **values, size_t *rows,
                                                      size_t *width);
HM_API void hm_consumer_free(hm_consumer *c);
HM_API HM_MUST_USE hm_status hm_consumer_push(hm_consumer *c, const float *values, size_t rows, size_t width);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_DATA_H_ */
