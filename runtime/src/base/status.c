/*
 * The thread-local last error. hm__fail records a sentence at the fault site;
 * callers up the stack may prefix context with hm__error_prefix.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "harmonics/harmonics_abi.h"

/* A plugin's status crosses into hm_status unchanged: the codes 0-10 agree. */
#define SAME_CODE(h, a) _Static_assert((int)HM_##h == (int)HM_ABI_##a, "hm_status " #h " differs from the ABI")
SAME_CODE(OK, OK);
SAME_CODE(STATUS_INVALID_ARGUMENT, STATUS_INVALID_ARGUMENT);
SAME_CODE(STATUS_OUT_OF_RANGE, STATUS_OUT_OF_RANGE);
SAME_CODE(STATUS_FAILED_PRECONDITION, STATUS_FAILED_PRECONDITION);
SAME_CODE(STATUS_UNAVAILABLE, STATUS_UNAVAILABLE);
SAME_CODE(STATUS_UNIMPLEMENTED, STATUS_UNIMPLEMENTED);
SAME_CODE(STATUS_RESOURCE_EXHAUSTED, STATUS_RESOURCE_EXHAUSTED);
SAME_CODE(STATUS_DATA_LOSS, STATUS_DATA_LOSS);
SAME_CODE(STATUS_INCOMPATIBLE, STATUS_INCOMPATIBLE);
SAME_CODE(STATUS_INTERNAL, STATUS_INTERNAL);
SAME_CODE(STATUS_NOT_FOUND, STATUS_NOT_FOUND);

#define ERROR_CAP 1024

static _Thread_local char last_error[ERROR_CAP];

const char *hm_last_error(void) { return last_error; }

void hm_clear_error(void) { last_error[0] = '\0'; }

const char *hm_status_name(hm_status s) {
  switch (s) {
    case HM_OK: return "OK";
    case HM_STATUS_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case HM_STATUS_OUT_OF_RANGE: return "OUT_OF_RANGE";
    case HM_STATUS_FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case HM_STATUS_UNAVAILABLE: return "UNAVAILABLE";
    case HM_STATUS_UNIMPLEMENTED: return "UNIMPLEMENTED";
    case HM_STATUS_RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case HM_STATUS_DATA_LOSS: return "DATA_LOSS";
    case HM_STATUS_INCOMPATIBLE: return "INCOMPATIBLE";
    case HM_STATUS_INTERNAL: return "INTERNAL";
    case HM_STATUS_NOT_FOUND: return "NOT_FOUND";
    case HM_STATUS_IO_ERROR: return "IO_ERROR";
    case HM_STATUS_PARSE_ERROR: return "PARSE_ERROR";
    case HM_STATUS_CANCELLED: return "CANCELLED";
    case HM_STATUS_DIVERGED: return "DIVERGED";
  }
  return "UNKNOWN";
}

/* Through a copy: an argument may be hm_last_error() itself. */
__attribute__((format(printf, 1, 0))) static void record(const char *fmt, va_list ap) {
  char message[ERROR_CAP];
  vsnprintf(message, sizeof message, fmt, ap);
  memcpy(last_error, message, strlen(message) + 1);
}

hm_status hm__fail(hm_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  record(fmt, ap);
  va_end(ap);
  return status;
}

/* The public twin of hm__fail, for implementations of our interfaces. */
hm_status hm_set_error(hm_status status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  record(fmt, ap);
  va_end(ap);
  return status;
}

void hm__error_prefix(const char *fmt, ...) {
  char prefix[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  size_t p = strlen(prefix), old = strlen(last_error);
  if (p + old >= ERROR_CAP) old = ERROR_CAP - 1 - p;
  memmove(last_error + p, last_error, old);
  memcpy(last_error, prefix, p);
  last_error[p + old] = '\0';
}
