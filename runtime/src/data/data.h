/*
 * data/: producers (in-memory arrays, IDX, CSV, limits) and consumers behind
 * the public interfaces of harmonics/data.h. Depends on base/ and weights/.
 */
#ifndef HM_DATA_DATA_H_
#define HM_DATA_DATA_H_

#include "base/base.h"
#include "harmonics/data.h"

/* Datasets are read whole; no producer may describe more than this. */
#define HM_MAX_DATASET_BYTES ((size_t)4 << 30)

/* The data a producer contributes (from its training binding, or eval). */
typedef struct hm_bound_data {
  hm_producer_info info;
  void *values; /* count * width elements of info.dtype */
} hm_bound_data;

/* Reads every sample of |p| into memory (caller frees data->values);
 * |node_name| names the graph node in messages. */
hm_status hm__producer_read_all(hm_producer *p, const char *node_name, hm_bound_data *data);

/* A producer over values it takes ownership of (data_array.c). */
hm_status hm__producer_from_memory(hm_producer_info info, void *values, hm_producer **out);

#endif /* HM_DATA_DATA_H_ */
