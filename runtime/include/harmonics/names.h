/*
 * Names of the ABI's enumerations, for messages, the DSL and tools.
 */
#ifndef HARMONICS_NAMES_H_
#define HARMONICS_NAMES_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics/harmonics_abi.h"
#include "harmonics/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Lower-case names ("gemm", "f32", "relu", "cross_entropy", "cpu"); "?" for
 * unknown values. Static storage. */
HM_API const char *hm_op_name(uint32_t op);
HM_API const char *hm_dtype_name(uint32_t dtype);
HM_API const char *hm_activation_name(uint32_t activation);
HM_API const char *hm_loss_name(uint32_t loss);
HM_API const char *hm_numerics_name(uint32_t numerics);
HM_API const char *hm_device_kind_name(uint32_t kind);

/* Looks up an activation by DSL name ("id" and "identity" both work).
 * Returns 0 and sets *out, or -1 when unknown. */
HM_API int hm_activation_from_name(const char *name, uint32_t *out);
HM_API int hm_loss_from_name(const char *name, uint32_t *out);

/* The optimizers (hm_optimizer) and stop reasons (hm_stop_reason) of
 * harmonics/training.h: "sgd", ..., "lamb"; "epochs", ..., "checkpoint". */
HM_API const char *hm_optimizer_name(uint32_t optimizer);
HM_API const char *hm_stop_reason_name(uint32_t reason);
HM_API int hm_optimizer_from_name(const char *name, uint32_t *out);
/* Every optimizer's, activation's or loss's name joined by |sep|
 * ("sgd|adam|..."), truncated to |cap| (the DSL also accepts "id"). */
HM_API void hm_optimizer_names(char *buf, size_t cap, const char *sep);
HM_API void hm_activation_names(char *buf, size_t cap, const char *sep);
HM_API void hm_loss_names(char *buf, size_t cap, const char *sep);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_NAMES_H_ */
