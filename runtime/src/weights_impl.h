/* Internal helpers for tensors and weight sets. */
#ifndef HM_WEIGHTS_IMPL_H_
#define HM_WEIGHTS_IMPL_H_

#include "harmonics/weights.h"

/* Bytes per element of a plain dtype; 0 for others. */
size_t hm__dtype_size(uint32_t dtype);
/* Checked byte size of a tensor. */
hm_status hm__tensor_bytes(uint32_t dtype, uint32_t rank, const uint64_t *shape, size_t *out);
/* The data of an F32 tensor, or NULL when absent or not F32. */
float *hm__weights_f32(const hm_weights *w, const char *name);

#endif /* HM_WEIGHTS_IMPL_H_ */
