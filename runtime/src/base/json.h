/*
 * A small strict JSON parser (RFC 8259) for file headers such as
 * safetensors'. Bounded: nesting depth, string and total sizes.
 */
#ifndef HM_JSON_H_
#define HM_JSON_H_

#include <stddef.h>
#include <stdint.h>

#include "harmonics/status.h"

typedef enum hm_json_type {
  HM_JSON_NULL,
  HM_JSON_BOOL,
  HM_JSON_NUMBER,
  HM_JSON_STRING,
  HM_JSON_ARRAY,
  HM_JSON_OBJECT
} hm_json_type;

typedef struct hm_json {
  hm_json_type type;
  int boolean;
  double number;
  int is_uint;    /* the number is a non-negative integer that fits in |uint| */
  uint64_t uint;
  char *string;   /* STRING: NUL-terminated (embedded NULs rejected) */
  size_t count;   /* ARRAY/OBJECT: number of items */
  struct hm_json *items;
  char **keys;    /* OBJECT: one key per item */
} hm_json;

/* Parses |len| bytes. On error returns PARSE_ERROR (RESOURCE_EXHAUSTED when
 * memory ran out) and writes "offset N: reason" into |err|. Caller frees
 * with hm__json_free. */
hm_status hm__json_parse(const char *text, size_t len, hm_json **out, char *err, size_t err_cap);
void hm__json_free(hm_json *j);
/* The member |key| of an object, or NULL. */
const hm_json *hm__json_get(const hm_json *obj, const char *key);

#endif /* HM_JSON_H_ */
