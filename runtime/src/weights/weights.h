/*
 * weights/: tensors and named weight sets, their .hnwt and safetensors files.
 * Depends on base/ only.
 */
#ifndef HM_WEIGHTS_WEIGHTS_H_
#define HM_WEIGHTS_WEIGHTS_H_

#include "base/container.h"
#include "harmonics/weights.h"

/* Bytes per element of a plain dtype; 0 for others. */
size_t hm__dtype_size(uint32_t dtype);
/* Checked byte size of a tensor. */
hm_status hm__tensor_bytes(uint32_t dtype, uint32_t rank, const uint64_t *shape, size_t *out);
/* The data of an F32 tensor, or NULL when absent or not F32. */
float *hm__weights_f32(const hm_weights *w, const char *name);

/* Another owner of |w| (returned): hm_weights_free releases one owner and
 * frees the set with the last. A shared set must not be modified. */
hm_weights *hm__weights_share(hm_weights *w);

/* The weights block shared by .hnwt files and checkpoints (weights_io.c). */
void hm__weights_encode(const hm_weights *w, hm_bytes *b);
/* Decodes a weights block and requires the payload to end there. */
hm_status hm__weights_decode(hm_reader *r, hm_weights **out);
/* Decodes a weights block followed by more fields. */
hm_status hm__weights_decode_part(hm_reader *r, hm_weights **out);

#endif /* HM_WEIGHTS_WEIGHTS_H_ */
